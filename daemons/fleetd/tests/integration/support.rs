//! A client around `fleetd::testing::TestServer`.

use std::ops::Deref;

use fleetd::testing::TestServer;
use serde_json::{Value, json};

pub struct Fleet {
    pub server: TestServer,
    pub http: reqwest::Client,
}

impl Deref for Fleet {
    type Target = TestServer;
    fn deref(&self) -> &TestServer {
        &self.server
    }
}

pub struct Resp {
    pub status: u16,
    pub body: Value,
}

impl Resp {
    pub fn code(&self) -> &str {
        self.body["error"]["code"].as_str().unwrap_or("<none>")
    }
}

impl Fleet {
    pub async fn start() -> Fleet {
        Self::start_with("").await
    }

    pub async fn start_with(body: &str) -> Fleet {
        Fleet {
            server: TestServer::start_with(body).await,
            http: reqwest::Client::new(),
        }
    }

    pub async fn restart(self) -> Fleet {
        Fleet {
            server: self.server.restart().await,
            http: self.http,
        }
    }

    pub fn admin(&self) -> &str {
        &self.server.admin_token
    }

    pub async fn call(
        &self,
        method: &str,
        path: &str,
        token: Option<&str>,
        body: Option<&str>,
    ) -> Resp {
        let method = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
        let mut req = self.http.request(method, self.url(path));
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        if let Some(b) = body {
            req = req
                .header("content-type", "application/json")
                .body(b.to_owned());
        }
        let resp = req.send().await.unwrap();
        let status = resp.status().as_u16();
        let text = resp.text().await.unwrap();
        let body = serde_json::from_str(&text).unwrap_or(Value::String(text));
        Resp { status, body }
    }

    pub async fn get(&self, path: &str, token: &str) -> Value {
        let r = self.call("GET", path, Some(token), None).await;
        assert_eq!(r.status, 200, "GET {path}: {}", r.body);
        r.body
    }

    pub async fn post(&self, path: &str, token: &str, body: Value) -> Value {
        let r = self
            .call("POST", path, Some(token), Some(&body.to_string()))
            .await;
        assert!(
            (200..300).contains(&r.status),
            "POST {path}: {} {}",
            r.status,
            r.body
        );
        r.body
    }

    pub async fn patch(&self, path: &str, token: &str, body: Value) -> Resp {
        self.call("PATCH", path, Some(token), Some(&body.to_string()))
            .await
    }

    /// Creates a user with `role` and returns an API token acting for them.
    pub async fn user_token(&self, name: &str, role: &str) -> String {
        self.post(
            "/api/v1/users",
            self.admin(),
            json!({"name": name, "password": format!("{name}-password"), "role": role}),
        )
        .await;
        let session = self.login(name, &format!("{name}-password")).await;
        let t = self
            .post(
                "/api/v1/tokens",
                &session,
                json!({"name": format!("{name}-token")}),
            )
            .await;
        t["token"].as_str().unwrap().to_owned()
    }

    pub async fn login(&self, user: &str, password: &str) -> String {
        let r = self
            .post(
                "/api/v1/auth/login",
                "",
                json!({"username": user, "password": password}),
            )
            .await;
        r["token"].as_str().unwrap().to_owned()
    }

    /// An enrollment token (`uses`, `group`).
    pub async fn enrollment_token(&self, body: Value) -> String {
        let r = self
            .post("/api/v1/enrollment-tokens", self.admin(), body)
            .await;
        r["token"].as_str().unwrap().to_owned()
    }

    /// Enrolls a device and returns its credential.
    pub async fn enroll(&self, id: &str, location: Value) -> String {
        let token = self.enrollment_token(json!({})).await;
        let r = self
            .call("POST", "/api/v1/enroll", None, Some(&json!({"token": token, "device_id": id, "model": "pi4b", "location": location}).to_string()))
            .await;
        assert_eq!(r.status, 201, "{}", r.body);
        r.body["credential"].as_str().unwrap().to_owned()
    }
}
