"""The fleet client's calls against a real fleetd: users and API tokens,
enrollment tokens, device records (update, revoke, delete, neighbours,
topology), groups, alerts (raise, ack, clear), silences and analysis,
workloads, placements and recommendations, rollout operations, and the
asyncio client's parity with the blocking one."""

from __future__ import annotations

import asyncio
import inspect
import json

import pytest

import wrale
from conftest import FleetServer


def _admin(fleetd: FleetServer) -> wrale.Fleet:
    return wrale.Fleet(fleetd.url, fleetd.token)


def test_users_sessions_and_api_tokens(fleetd: FleetServer) -> None:
    admin = _admin(fleetd)
    user = admin.create_user("py-vera", "first password 1", role="viewer")
    assert (user["name"], user["role"]) == ("py-vera", "viewer")
    assert "py-vera" in [u["name"] for u in admin.users()]
    assert admin.user("py-vera")["role"] == "viewer"
    with pytest.raises(wrale.ConflictError):
        admin.create_user("py-vera", "first password 1")
    with pytest.raises(wrale.InvalidInput):
        admin.create_user("py-bad", "first password 1", role="emperor")

    # A viewer reads but may not write.
    vera = wrale.Fleet(fleetd.url)
    vera.login("py-vera", "first password 1")
    who = vera.whoami()
    assert (who["kind"], who["name"], who["role"]) == ("user", "py-vera", "viewer")
    with pytest.raises(wrale.AuthError) as forbidden:
        vera.create_group("py-vera-group")
    assert forbidden.value.code == "forbidden"
    # Nor list users (admin only).
    with pytest.raises(wrale.AuthError):
        vera.users()

    # Promoted, with a new password: the old one stops working.
    assert admin.update_user("py-vera", role="operator")["role"] == "operator"
    admin.update_user("py-vera", password="second password 2")
    with pytest.raises(wrale.AuthError):
        wrale.Fleet(fleetd.url).login("py-vera", "first password 1")
    vera = wrale.Fleet(fleetd.url)
    vera.login("py-vera", "second password 2")
    assert vera.whoami()["role"] == "operator"
    vera.create_group("py-vera-group")

    # An API token acting for her, listed without its secret, then revoked.
    created = vera.create_token("py-ci", role="viewer", expires_in="1h")
    assert created["token"].startswith("wrt_")
    assert (created["owner"], created["role"]) == ("py-vera", "viewer")
    assert created["expires_at"] is not None
    ci = wrale.Fleet(fleetd.url, created["token"])
    assert ci.whoami()["kind"] == "token"
    mine = [t for t in vera.tokens() if t["id"] == created["id"]]
    assert mine and "token" not in mine[0]
    assert created["id"] in [t["id"] for t in admin.tokens()], "an admin sees every token"
    with pytest.raises(wrale.AuthError):
        ci.create_token("py-escalate", role="admin")
    vera.revoke_token(created["id"])
    with pytest.raises(wrale.AuthError) as revoked:
        ci.whoami()
    assert revoked.value.code == "unauthorized"
    assert created["id"] not in [t["id"] for t in vera.tokens()]

    # Logging out revokes the session token and forgets it.
    session = vera.token
    assert session is not None and session.startswith("wrs_")
    vera.logout()
    assert vera.token is None
    with pytest.raises(wrale.AuthError):
        wrale.Fleet(fleetd.url, session).whoami()

    admin.delete_user("py-vera")
    with pytest.raises(wrale.NotFound):
        admin.user("py-vera")
    assert "py-vera" not in [u["name"] for u in admin.users()]


def test_enrollment_tokens_listed_and_deleted(fleetd: FleetServer) -> None:
    admin = _admin(fleetd)
    created = admin.create_enrollment_token(uses=2, expires_in="1h", labels={"batch": "py"})
    assert created["token"].startswith("wre_")
    listed = [t for t in admin.enrollment_tokens() if t["id"] == created["id"]]
    assert listed and listed[0]["uses"] == 2 and listed[0]["used"] == 0
    assert listed[0]["labels"] == {"batch": "py"} and "token" not in listed[0]
    admin.delete_enrollment_token(created["id"])
    assert created["id"] not in [t["id"] for t in admin.enrollment_tokens()]
    with pytest.raises(wrale.WraleError) as refused:
        admin.enroll(created["token"], "py-never", "pi4b")
    assert refused.value.category in ("auth", "invalid_input")
    with pytest.raises(wrale.NotFound):
        admin.device("py-never")


def test_device_records_groups_and_topology(fleetd: FleetServer) -> None:
    admin = _admin(fleetd)
    token = admin.create_enrollment_token(uses=3, expires_in="1h")["token"]
    for device_id, shelf in (("py-n1", "s1"), ("py-n2", "s1"), ("py-n3", "s2")):
        enrolled = admin.enroll(token, device_id, "pi4b", location={"site": "py-site", "rack": "py-r1", "shelf": shelf})
        assert enrolled["credential"].startswith("wrd_")
    # Enrolled, never connected: status never, health unknown.
    on_shelf = admin.devices(site="py-site", rack="py-r1", shelf="s1", model="pi4b",
                             status="never", health="unknown")
    assert sorted(d["id"] for d in on_shelf) == ["py-n1", "py-n2"]
    assert admin.devices(site="py-site", model="pi5") == []
    assert admin.devices(site="py-site", status="online") == []
    assert admin.devices(site="py-site", health="critical") == []
    near = admin.neighbours("py-n1")
    assert near["same_shelf"] == ["py-n2"]
    assert sorted(near["same_rack"]) in (["py-n2", "py-n3"], ["py-n3"])
    sites = {s["name"]: s for s in admin.topology()["sites"]}
    assert "py-site" in sites, sites
    assert "py-n3" in json.dumps(sites["py-site"])

    # Groups: a tree without cycles, renamed, deleted.
    admin.create_group("py-parent")
    admin.create_group("py-child", parent="py-parent")
    assert admin.update_group("py-child", name="Child")["name"] == "Child"
    assert admin.group("py-child")["parent"] == "py-parent"
    with pytest.raises(wrale.ConflictError):
        admin.update_group("py-parent", parent="py-child")
    admin.create_group("py-other")
    assert admin.update_group("py-other", parent="py-parent")["parent"] == "py-parent"
    assert admin.update_group("py-other", parent=None)["parent"] is None
    admin.delete_group("py-other")

    # A device's labels, location and group change; an unknown group is refused.
    updated = admin.update_device("py-n1", labels={"role": "cam"}, group="py-child")
    assert updated["labels"] == {"role": "cam"} and updated["group"] == "py-child"
    assert [d["id"] for d in admin.devices(labels={"role": "cam"})] == ["py-n1"]
    assert [d["id"] for d in admin.devices(group="py-parent")] == ["py-n1"], "subgroups count"
    with pytest.raises(wrale.InvalidInput) as bad_group:
        admin.update_device("py-n1", group="py-no-such-group")
    assert "group" in bad_group.value.message
    assert admin.device("py-n1")["group"] == "py-child"
    with pytest.raises(wrale.InvalidInput) as typo:
        admin.update_device("py-n1", lables={"role": "x"})
    assert "lables" in typo.value.message
    with pytest.raises(wrale.InvalidInput):
        admin.update_group("py-parent", colour="red")
    admin.update_device("py-n1", group=None)
    assert admin.device("py-n1")["group"] is None
    admin.delete_group("py-child")
    with pytest.raises(wrale.NotFound):
        admin.group("py-child")

    # Revoked: the record stays, its credential is gone; deleted: the record is gone.
    revoked = admin.revoke_device("py-n2")
    assert revoked["id"] == "py-n2" and revoked["status"] == "revoked", revoked
    admin.delete_device("py-n3")
    with pytest.raises(wrale.NotFound):
        admin.device("py-n3")
    with pytest.raises(wrale.NotFound):
        admin.delete_device("py-n3")


def test_alerts_raise_ack_clear(fleetd: FleetServer) -> None:
    admin = _admin(fleetd)
    alert = admin.raise_alert("py_overheat", "warning", "the cabinet is warm", key="py/cabinet")
    assert alert["state"] == "raised" and alert["severity"] == "warning"
    again = admin.raise_alert("py_overheat", "warning", "still warm", key="py/cabinet")
    assert again["id"] == alert["id"], "one active alert per key"
    assert alert["id"] in [a["id"] for a in admin.alerts(state="active", severity="warning")]
    with pytest.raises(wrale.InvalidInput):
        admin.raise_alert("py_bad", "apocalyptic", "no such severity")

    acked = admin.ack_alert(alert["id"])
    assert acked["state"] == "acked", acked
    assert alert["id"] in [a["id"] for a in admin.alerts(state="acked")]
    cleared = admin.clear_alert(alert["id"])
    assert cleared["state"] == "cleared", cleared
    assert alert["id"] not in [a["id"] for a in admin.alerts(state="active")]
    assert alert["id"] in [a["id"] for a in admin.alerts(state="cleared")]
    # A new alert of the same key once the old one is cleared.
    fresh = admin.raise_alert("py_overheat", "critical", "hot again", key="py/cabinet")
    assert fresh["id"] != alert["id"]
    admin.clear_alert(fresh["id"])
    with pytest.raises(wrale.NotFound):
        admin.ack_alert(999_999_999)
    actions = [a["action"] for a in admin.audit(action="alert.")]
    assert {"alert.ack", "alert.clear"} <= set(actions), actions
    actor = admin.audit(action="alert.ack")[0]["actor"]
    by_actor = admin.audit(actor=actor)
    assert by_actor and {a["actor"] for a in by_actor} == {actor}
    assert admin.audit(actor="user:nobody-at-all") == []
    # An alert about a device is found by the device filter.
    admin.enroll(admin.create_enrollment_token()["token"], "py-al", "pi4b")
    about = admin.raise_alert("py_door", "info", "door open", device="py-al")
    assert [a["id"] for a in admin.alerts(device="py-al")] == [about["id"]]
    assert about["id"] not in [a["id"] for a in admin.alerts(severity="critical")]


def test_silences_and_analysis(fleetd: FleetServer) -> None:
    admin = _admin(fleetd)
    silence = admin.create_silence(rule="py_rule", duration="1h", comment="maintenance")
    assert silence["comment"] == "maintenance"
    assert silence["id"] in [s["id"] for s in admin.silences()]
    with pytest.raises(wrale.InvalidInput):
        admin.create_silence(duration="1h")  # matches nothing: refused
    admin.delete_silence(silence["id"])
    assert silence["id"] not in [s["id"] for s in admin.silences()]
    with pytest.raises(wrale.NotFound):
        admin.delete_silence(silence["id"])

    analysis = admin.fleet_analysis()
    assert isinstance(analysis["devices"], list) and isinstance(analysis["groups"], list)
    assert isinstance(admin.hot_spots()["items"], list)
    assert isinstance(admin.fleet_alerts(), list)
    with pytest.raises(wrale.NotFound):
        admin.device_analysis("py-no-such-device")
    assert admin.dead_letters() == []
    with pytest.raises(wrale.NotFound):
        admin.delete_dead_letter(424242)


def test_workloads_placements_and_recommendations(fleetd: FleetServer) -> None:
    admin = _admin(fleetd)
    created = admin.create_workload("py-cam", cpu_pct=20.0, power_w=2.0, command="cam.service",
                                    constraints={"models": ["pi5"]})
    assert created["workload"]["name"] == "py-cam"
    assert created["workload"]["command"] == "cam.service"
    # No pi5 in this fleet: the replica is pending, with the scheduler's reason.
    assert created["placements"] == []
    assert [p["workload"] for p in created["pending"]] == ["py-cam"]
    assert created["pending"][0]["action"]["kind"] == "unplaceable"
    assert created["pending"][0]["reason"]
    assert "py-cam" in [w["name"] for w in admin.workloads()]
    one = admin.workload("py-cam")
    assert one["workload"]["cpu_pct"] == 20.0 and one["placements"] == []
    placements = admin.placements(workload="py-cam")
    assert placements["items"] == [] and "py-cam" in [p["workload"] for p in placements["pending"]]
    assert admin.placements(device="py-no-such-device")["items"] == []
    with pytest.raises(wrale.ConflictError):
        admin.create_workload("py-cam", cpu_pct=20.0, power_w=2.0)
    with pytest.raises(wrale.InvalidInput) as bad:
        admin.create_workload("Py Cam!", cpu_pct=20.0, power_w=2.0)
    assert bad.value.details is not None and bad.value.details.get("field") == "name"
    deleted = admin.delete_workload("py-cam")
    assert "deleted" in deleted
    with pytest.raises(wrale.NotFound):
        admin.workload("py-cam")
    assert "py-cam" not in [w["name"] for w in admin.workloads()]

    plan = admin.recommendations()
    assert isinstance(plan["items"], list) and "peak_temp_before_c" in plan["expected"]
    with pytest.raises(wrale.NotFound) as gone:
        admin.accept_recommendation("py-no-such-recommendation")
    assert gone.value.code == "not_found"


def test_rollout_operations(fleetd: FleetServer) -> None:
    admin = _admin(fleetd)
    token = admin.create_enrollment_token(uses=2, expires_in="1h")["token"]
    for device_id in ("py-r1", "py-r2"):
        admin.enroll(token, device_id, "pi4b")
    # The devices are offline: the canary never reports, so the rollout waits.
    spec = {
        "change": {"fan_profile": "cool"},
        "devices": ["py-r1", "py-r2"],
        "canary": {"kind": "devices", "devices": ["py-r1"]},
        "soak": "10m",
        "gates": {"apply_timeout": "10m"},
    }
    ro = admin.create_rollout({**spec, "id": "py-ops"})
    assert ro["status"] == "running"
    assert admin.twin("py-r1")["desired"]["fan_profile"] == "cool", "canary written at once"
    assert admin.pause_rollout("py-ops")["status"] == "paused"
    assert "py-ops" in [r["id"] for r in admin.rollouts(status="paused")]
    with pytest.raises(wrale.ConflictError):
        admin.pause_rollout("py-ops")
    assert admin.resume_rollout("py-ops")["status"] == "running"
    assert admin.abort_rollout("py-ops")["status"] == "aborted"
    with pytest.raises(wrale.ConflictError):
        admin.resume_rollout("py-ops")

    back = admin.create_rollout({**spec, "id": "py-back", "change": {"fan_profile": "max"}})
    assert back["status"] == "running"
    assert admin.twin("py-r1")["desired"]["fan_profile"] == "max"
    rolled = admin.rollback_rollout("py-back")
    assert rolled["status"] == "rolled_back", rolled
    assert admin.twin("py-r1")["desired"]["fan_profile"] == "cool", "the canary got its old value back"
    assert admin.rollout("py-back")["status"] == "rolled_back"


def test_fleet_side_twin_calls(fleetd: FleetServer) -> None:
    admin = _admin(fleetd)
    token = admin.create_enrollment_token(uses=1, expires_in="1h")["token"]
    admin.enroll(token, "py-t1", "pi4b")
    admin.set_config({"warn_c": 66.0}, "device", "py-t1")
    history = admin.twin_history("py-t1")
    before = history[0]["version"]
    admin.set_config({"warn_c": 61.0}, "device", "py-t1")
    assert admin.twin("py-t1")["desired"]["warn_c"] == 61.0
    newest = admin.twin_history("py-t1")
    assert len(newest) == len(history) + 1 and newest[0]["author"] == "user:admin"
    admin.rollback_twin("py-t1", before)
    assert admin.twin("py-t1")["desired"]["warn_c"] == 66.0
    with pytest.raises(wrale.InvalidInput):
        admin.rollback_twin("py-t1", ["00" * 32])
    # The effective config names each field's layer; replacing a layer drops the rest.
    effective = admin.effective_config("py-t1")
    assert effective["device"] == "py-t1"
    assert effective["fields"]["warn_c"] == {"value": 61.0, "layer": "device:py-t1"}, effective
    admin.replace_config({"fan_profile": "quiet"}, "device", "py-t1")
    assert admin.config("device", "py-t1")["fields"] == {"fan_profile": "quiet"}
    # No device wrote concurrently: nothing to resolve.
    assert admin.twin_conflicts("py-t1") == []
    with pytest.raises(wrale.ConflictError) as none_open:
        admin.resolve_conflict("py-t1", "desired.policy_overrides", "")
    assert "no open conflict" in none_open.value.message
    with pytest.raises(wrale.InvalidInput):
        admin.resolve_conflict("py-t1", "desired.colour", "red")


def test_async_fleet_mirrors_fleet(fleetd: FleetServer) -> None:
    public = {n for n, v in vars(wrale.Fleet).items() if not n.startswith("_") and callable(v)}
    mirrored = {n for n, v in vars(wrale.AsyncFleet).items() if not n.startswith("_") and inspect.iscoroutinefunction(v)}
    assert public == mirrored, (public - mirrored, mirrored - public)
    for name in public:
        sync_params = list(inspect.signature(getattr(wrale.Fleet, name)).parameters.values())
        async_params = list(inspect.signature(getattr(wrale.AsyncFleet, name)).parameters.values())
        assert [(p.name, p.kind, p.default) for p in sync_params] == [(p.name, p.kind, p.default) for p in async_params], name

    # Each awaitable hands its arguments to the blocking call of the same name
    # (run here on a recorder in place of the blocking client).
    class Recorder:
        def __init__(self) -> None:
            self.calls: list[tuple[str, tuple[object, ...], dict[str, object]]] = []

        def __getattr__(self, name: str) -> object:
            def call(*args: object, **kwargs: object) -> object:
                self.calls.append((name, args, kwargs))
                return name
            return call

    async def delegation() -> None:
        recorder = Recorder()
        fleet = wrale.AsyncFleet(fleetd.url)
        fleet.sync = recorder  # type: ignore[assignment]
        for name in sorted(public):
            params = list(inspect.signature(getattr(wrale.Fleet, name)).parameters.values())[1:]
            args = tuple(f"arg-{p.name}" for p in params if p.kind == p.POSITIONAL_OR_KEYWORD)
            kwargs = {p.name: f"kw-{p.name}" for p in params if p.kind == p.KEYWORD_ONLY}
            result = await getattr(fleet, name)(*args, **kwargs)
            called, got_args, got_kwargs = recorder.calls[-1]
            assert (called, got_args, got_kwargs) == (name, args, kwargs), name
            if name == "events":
                assert isinstance(result, wrale.AsyncEventStream)
            elif inspect.signature(getattr(wrale.Fleet, name)).return_annotation not in ("None", None):
                assert result == name, name

    asyncio.run(delegation())

    async def main() -> None:
        fleet = wrale.AsyncFleet(fleetd.url, fleetd.token)
        user = await fleet.create_user("py-async-user", "async password 1", role="viewer")
        assert user["name"] == "py-async-user"
        created, workloads = await asyncio.gather(fleet.create_token("py-async"), fleet.workloads())
        assert isinstance(workloads, list)
        assert created["id"] in [t["id"] for t in await fleet.tokens()]
        await fleet.revoke_token(created["id"])
        alert = await fleet.raise_alert("py_async", "info", "from asyncio")
        assert (await fleet.ack_alert(alert["id"]))["state"] == "acked"
        assert (await fleet.clear_alert(alert["id"]))["state"] == "cleared"
        await fleet.delete_user("py-async-user")
        with pytest.raises(wrale.NotFound):
            await fleet.user("py-async-user")

    asyncio.run(main())
