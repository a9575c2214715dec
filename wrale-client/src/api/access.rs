//! Auth, users, API tokens, enrollment tokens and enrollment.

use reqwest::Method;

use crate::client::Client;
use crate::error::Result;
use crate::models::{
    ApiToken, CreatedEnrollmentToken, CreatedToken, EnrollRequest, Enrolled, EnrollmentToken,
    NewEnrollmentToken, NewToken, NewUser, Session, User, UserPatch, Whoami,
};

/// Lists may come bare (`[...]`) or wrapped (`{"items": [...]}`); accept both.
#[derive(serde::Deserialize)]
#[serde(untagged)]
pub(crate) enum ListOf<T> {
    Bare(Vec<T>),
    Wrapped { items: Vec<T> },
}

impl<T> ListOf<T> {
    pub(crate) fn into_vec(self) -> Vec<T> {
        match self {
            ListOf::Bare(v) | ListOf::Wrapped { items: v } => v,
        }
    }
}

impl Client {
    /// `GET /health/ready`: `Ok(())` when fleetd is up and ready.
    pub async fn ready(&self) -> Result<()> {
        self.get_root("/health/ready").await.map(|_| ())
    }

    /// `POST /auth/login`: logs in with a password and, on success, makes the
    /// session token this client's (and its clones') bearer token.
    pub async fn login(&self, username: &str, password: &str) -> Result<Session> {
        let body = serde_json::json!({ "username": username, "password": password });
        let session: Session = self
            .call(Method::POST, &["auth", "login"], &[], Some(&body))
            .await?;
        self.set_token(Some(session.token.clone()));
        Ok(session)
    }

    /// `POST /auth/logout`: revokes the session token in use and forgets it.
    pub async fn logout(&self) -> Result<()> {
        self.call_empty::<()>(Method::POST, &["auth", "logout"], None)
            .await?;
        self.set_token(None);
        Ok(())
    }

    /// `GET /auth/whoami`: who the token in use belongs to.
    pub async fn whoami(&self) -> Result<Whoami> {
        self.get(&["auth", "whoami"], &[]).await
    }

    /// `GET /users` (admin).
    pub async fn list_users(&self) -> Result<Vec<User>> {
        let l: ListOf<User> = self.get(&["users"], &[]).await?;
        Ok(l.into_vec())
    }

    /// `GET /users/{name}` (admin).
    pub async fn get_user(&self, name: &str) -> Result<User> {
        self.get(&["users", name], &[]).await
    }

    /// `POST /users` (admin).
    pub async fn create_user(&self, user: &NewUser) -> Result<User> {
        self.call(Method::POST, &["users"], &[], Some(user)).await
    }

    /// `PATCH /users/{name}` (admin).
    pub async fn update_user(&self, name: &str, patch: &UserPatch) -> Result<User> {
        self.call(Method::PATCH, &["users", name], &[], Some(patch))
            .await
    }

    /// `DELETE /users/{name}` (admin).
    pub async fn delete_user(&self, name: &str) -> Result<()> {
        self.call_empty::<()>(Method::DELETE, &["users", name], None)
            .await
    }

    /// `GET /tokens`: the caller's API tokens (every token for an admin).
    pub async fn list_tokens(&self) -> Result<Vec<ApiToken>> {
        let l: ListOf<ApiToken> = self.get(&["tokens"], &[]).await?;
        Ok(l.into_vec())
    }

    /// `POST /tokens`: a new API token; the secret is in the answer only.
    pub async fn create_token(&self, token: &NewToken) -> Result<CreatedToken> {
        self.call(Method::POST, &["tokens"], &[], Some(token)).await
    }

    /// `DELETE /tokens/{id}`: revokes an API token.
    pub async fn revoke_token(&self, id: &str) -> Result<()> {
        self.call_empty::<()>(Method::DELETE, &["tokens", id], None)
            .await
    }

    /// `GET /enrollment-tokens` (admin).
    pub async fn list_enrollment_tokens(&self) -> Result<Vec<EnrollmentToken>> {
        let l: ListOf<EnrollmentToken> = self.get(&["enrollment-tokens"], &[]).await?;
        Ok(l.into_vec())
    }

    /// `POST /enrollment-tokens` (admin); the secret is in the answer only.
    pub async fn create_enrollment_token(
        &self,
        token: &NewEnrollmentToken,
    ) -> Result<CreatedEnrollmentToken> {
        self.call(Method::POST, &["enrollment-tokens"], &[], Some(token))
            .await
    }

    /// `DELETE /enrollment-tokens/{id}` (admin).
    pub async fn delete_enrollment_token(&self, id: &str) -> Result<()> {
        self.call_empty::<()>(Method::DELETE, &["enrollment-tokens", id], None)
            .await
    }

    /// `POST /enroll`: exchanges an enrollment token for a device credential
    /// (what metald does at first start; needs no bearer token).
    pub async fn enroll(&self, request: &EnrollRequest) -> Result<Enrolled> {
        self.call(Method::POST, &["enroll"], &[], Some(request))
            .await
    }
}
