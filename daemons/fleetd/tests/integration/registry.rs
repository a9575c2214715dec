//! Registry queries, neighbours, topology, group trees, device edits, alerts and
//! the audit log.

use serde_json::{Value, json};

use crate::support::Fleet;

fn ids(v: &Value) -> Vec<String> {
    v["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["id"].as_str().unwrap().to_owned())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queries_pagination_neighbours_and_topology() {
    let f = Fleet::start().await;
    let admin = f.admin().to_owned();
    f.post("/api/v1/groups", &admin, json!({"id": "lab"})).await;
    f.post(
        "/api/v1/groups",
        &admin,
        json!({"id": "rack1", "parent": "lab"}),
    )
    .await;
    for (id, rack, shelf) in [
        ("pi-a", "r1", "1"),
        ("pi-b", "r1", "1"),
        ("pi-c", "r1", "2"),
        ("pi-d", "r2", "1"),
    ] {
        f.enroll(id, json!({"site": "lab", "rack": rack, "shelf": shelf}))
            .await;
    }
    f.enroll("pi-e", json!({})).await;
    let op = f.user_token("op", "operator").await;
    let r = f
        .patch(
            "/api/v1/devices/pi-a",
            &op,
            json!({"group": "rack1", "labels": {"role": "cam"}}),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    let r = f
        .patch("/api/v1/devices/pi-d", &op, json!({"group": "lab"}))
        .await;
    assert_eq!(r.status, 200);
    let r = f
        .patch("/api/v1/devices/pi-e", &op, json!({"group": "nope"}))
        .await;
    assert_eq!(
        (r.status, r.body["error"]["field"].clone()),
        (400, json!("group")),
        "{}",
        r.body
    );

    assert_eq!(
        ids(&f.get("/api/v1/devices?group=lab", &admin).await),
        ["pi-a", "pi-d"],
        "group includes subgroups"
    );
    assert_eq!(
        ids(&f.get("/api/v1/devices?group=rack1", &admin).await),
        ["pi-a"]
    );
    assert_eq!(
        ids(&f.get("/api/v1/devices?label=role%3Dcam", &admin).await),
        ["pi-a"]
    );
    assert_eq!(
        ids(&f.get("/api/v1/devices?rack=r1&shelf=1", &admin).await),
        ["pi-a", "pi-b"]
    );
    assert_eq!(
        ids(&f
            .get(
                "/api/v1/devices?model=pi4b&status=never&health=unknown",
                &admin
            )
            .await)
        .len(),
        5
    );
    assert_eq!(
        ids(&f.get("/api/v1/devices?model=pi5", &admin).await).len(),
        0
    );

    let mut seen = Vec::new();
    let mut path = "/api/v1/devices?limit=2".to_owned();
    loop {
        let page = f.get(&path, &admin).await;
        seen.extend(ids(&page));
        match page["next_cursor"].as_str() {
            Some(c) => path = format!("/api/v1/devices?limit=2&cursor={c}"),
            None => break,
        }
    }
    assert_eq!(seen, ["pi-a", "pi-b", "pi-c", "pi-d", "pi-e"]);

    for bad in [
        "limit=0",
        "limit=501",
        "status=up",
        "colour=red",
        "label=novalue",
        "group=Bad",
    ] {
        let r = f
            .call("GET", &format!("/api/v1/devices?{bad}"), Some(&admin), None)
            .await;
        assert_eq!(
            (r.status, r.code()),
            (400, "invalid_query"),
            "{bad}: {}",
            r.body
        );
        assert_eq!(
            r.body["error"]["param"],
            bad.split('=').next().unwrap(),
            "{bad}"
        );
    }

    let n = f.get("/api/v1/devices/pi-a/neighbours", &admin).await;
    assert_eq!(n["same_shelf"], json!(["pi-b"]));
    assert_eq!(n["same_rack"], json!(["pi-b", "pi-c"]));
    assert_eq!(
        f.call(
            "GET",
            "/api/v1/devices/ghost/neighbours",
            Some(&admin),
            None
        )
        .await
        .status,
        404
    );

    let t = f.get("/api/v1/topology", &admin).await;
    assert_eq!(t["sites"][0]["name"], "lab");
    assert_eq!(t["sites"][0]["racks"][0]["name"], "r1");
    assert_eq!(
        t["sites"][0]["racks"][0]["shelves"][0]["devices"],
        json!(["pi-a", "pi-b"])
    );
    assert_eq!(t["unplaced"], json!(["pi-e"]));

    // Device edits are audited with the actor.
    let audit = f
        .get("/api/v1/audit?target=device%3Api-a&action=device.", &admin)
        .await;
    assert!(
        audit["items"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["action"] == "device.update" && e["actor"] == "token:op-token@op"),
        "{audit}"
    );

    // Delete (admin): gone from the list.
    assert_eq!(
        f.call("DELETE", "/api/v1/devices/pi-e", Some(&admin), None)
            .await
            .status,
        204
    );
    assert_eq!(
        f.call("GET", "/api/v1/devices/pi-e", Some(&admin), None)
            .await
            .status,
        404
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn group_tree_refuses_cycles() {
    let f = Fleet::start().await;
    let a = f.admin().to_owned();
    f.post("/api/v1/groups", &a, json!({"id": "a"})).await;
    f.post("/api/v1/groups", &a, json!({"id": "b", "parent": "a"}))
        .await;
    f.post("/api/v1/groups", &a, json!({"id": "c", "parent": "b"}))
        .await;
    let r = f
        .patch("/api/v1/groups/a", &a, json!({"parent": "c"}))
        .await;
    assert_eq!((r.status, r.code()), (409, "conflict"), "{}", r.body);
    assert!(
        r.body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("cycle")
    );
    let r = f
        .patch("/api/v1/groups/a", &a, json!({"parent": "a"}))
        .await;
    assert_eq!(r.status, 409);
    let r = f
        .call(
            "POST",
            "/api/v1/groups",
            Some(&a),
            Some(&json!({"id": "d", "parent": "zz"}).to_string()),
        )
        .await;
    assert_eq!(
        (r.status, r.body["error"]["field"].clone()),
        (400, json!("parent"))
    );
    let dup = f
        .call(
            "POST",
            "/api/v1/groups",
            Some(&a),
            Some(&json!({"id": "a"}).to_string()),
        )
        .await;
    assert_eq!(dup.status, 409);
    // The tree is unchanged; re-parenting to a root works.
    let g = f.get("/api/v1/groups/c", &a).await;
    assert_eq!(g["ancestors"], json!(["b", "a"]));
    assert_eq!(
        f.patch("/api/v1/groups/c", &a, json!({"parent": null}))
            .await
            .body["parent"],
        Value::Null
    );
    // A group with children is not deleted.
    assert_eq!(
        f.call("DELETE", "/api/v1/groups/a", Some(&a), None)
            .await
            .status,
        409
    );
    assert_eq!(
        f.call("DELETE", "/api/v1/groups/b", Some(&a), None)
            .await
            .status,
        204
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn alerts_raise_ack_clear_with_filters() {
    let f = Fleet::start().await;
    let a = f.admin().to_owned();
    f.enroll("pi-1", json!({})).await;
    let op = f.user_token("op", "operator").await;
    let raised = f.call("POST", "/api/v1/alerts", Some(&op), Some(&json!({"device": "pi-1", "code": "fan_stall", "severity": "warning", "message": "fan 0 stalled"}).to_string())).await;
    assert_eq!(raised.status, 201, "{}", raised.body);
    let id = raised.body["id"].as_i64().unwrap();
    let dup = f.call("POST", "/api/v1/alerts", Some(&op), Some(&json!({"device": "pi-1", "code": "fan_stall", "severity": "warning", "message": "again"}).to_string())).await;
    assert_eq!(
        (dup.status, dup.body["id"].as_i64()),
        (200, Some(id)),
        "de-duplicated"
    );
    f.post(
        "/api/v1/alerts",
        &op,
        json!({"code": "fleet_note", "severity": "info", "message": "m"}),
    )
    .await;
    assert_eq!(
        f.get("/api/v1/alerts?device=pi-1", &a).await["items"]
            .as_array()
            .unwrap()
            .len(),
        1
    );
    assert_eq!(
        f.get("/api/v1/alerts?severity=info", &a).await["items"]
            .as_array()
            .unwrap()
            .len(),
        1
    );
    let acked = f
        .post(&format!("/api/v1/alerts/{id}/ack"), &op, json!(null))
        .await;
    assert_eq!(acked["state"], "acked");
    assert_eq!(acked["acked_by"], "token:op-token@op");
    assert_eq!(
        f.get("/api/v1/alerts?state=acked", &a).await["items"]
            .as_array()
            .unwrap()
            .len(),
        1
    );
    let cleared = f
        .post(&format!("/api/v1/alerts/{id}/clear"), &op, json!(null))
        .await;
    assert_eq!(cleared["state"], "cleared");
    assert!(cleared["cleared_at"].is_string());
    let again = f
        .call("POST", &format!("/api/v1/alerts/{id}/ack"), Some(&op), None)
        .await;
    assert_eq!(again.status, 409);
    assert_eq!(
        f.get("/api/v1/alerts?state=active", &a).await["items"]
            .as_array()
            .unwrap()
            .len(),
        1
    );
    assert_eq!(
        f.call("GET", "/api/v1/alerts?state=bogus", Some(&a), None)
            .await
            .code(),
        "invalid_query"
    );
    assert_eq!(
        f.call("POST", "/api/v1/alerts/999/ack", Some(&op), None)
            .await
            .status,
        404
    );
    let audit = f.get("/api/v1/audit?action=alert.", &a).await;
    assert_eq!(audit["items"].as_array().unwrap().len(), 4, "{audit}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn audit_is_append_only_and_paginated() {
    let f = Fleet::start().await;
    let a = f.admin().to_owned();
    for i in 0..5 {
        f.post("/api/v1/groups", &a, json!({"id": format!("g{i}")}))
            .await;
    }
    let first = f.get("/api/v1/audit?action=group.create&limit=3", &a).await;
    assert_eq!(first["items"].as_array().unwrap().len(), 3);
    let before = first["next_before"].as_i64().unwrap();
    let rest = f
        .get(
            &format!("/api/v1/audit?action=group.create&limit=3&before={before}"),
            &a,
        )
        .await;
    assert_eq!(rest["items"].as_array().unwrap().len(), 2);
    let e = &first["items"][0];
    assert_eq!(e["target"], "group:g4");
    assert_eq!(e["verdict"], "allowed");
    assert!(e["time"].as_str().unwrap().ends_with('Z'));
    let since = f
        .get(
            "/api/v1/audit?since=2000-01-01T00:00:00Z&until=2000-01-02T00:00:00Z",
            &a,
        )
        .await;
    assert_eq!(since["items"].as_array().unwrap().len(), 0);
    assert_eq!(
        f.call("GET", "/api/v1/audit?since=yesterday", Some(&a), None)
            .await
            .body["error"]["param"],
        "since"
    );

    // Through SQL, on the live file: UPDATE and DELETE are refused by the store.
    let db = rusqlite::Connection::open(f.data_dir.join("fleet.db")).unwrap();
    let err = db
        .execute("UPDATE audit SET actor = 'someone else'", [])
        .unwrap_err();
    assert!(err.to_string().contains("append-only"), "{err}");
    let err = db
        .execute("DELETE FROM audit WHERE seq = 1", [])
        .unwrap_err();
    assert!(err.to_string().contains("append-only"), "{err}");
    let count: i64 = db
        .query_row("SELECT COUNT(*) FROM audit", [], |r| r.get(0))
        .unwrap();
    assert!(count >= 6);
}
