//! Authentication, users, API tokens, enrollment tokens and device enrollment.

use std::collections::BTreeMap;
use std::time::Duration;

use axum::Json;
use axum::extract::{Path, State};
use axum::http::{Method, StatusCode};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use utoipa::ToSchema;
use wrale_core::fleet::access::{Action, PrincipalKind, Role, keeps_an_admin, token_role};
use wrale_core::model::Location;
use wrale_core::{BoardModel, DeviceId, GroupId};

use super::{Access, ApiRoutes};
use crate::auth::{
    DEVICE_PREFIX, ENROLL_PREFIX, Principal, SESSION_PREFIX, TOKEN_PREFIX, denied, hash_password,
    new_id, new_secret, secret_hash, validate_user_name, verify_password,
};
use crate::error::{ApiError, ApiJson};
use crate::state::{AppState, EventKind, now};
use crate::store::{ApiToken, EnrollRefusal, Enrollment, EnrollmentToken, User};

pub(super) fn routes() -> ApiRoutes {
    use Access::{Action as A, Public};
    ApiRoutes::new()
        .route(Method::POST, "/api/v1/auth/login", Public, login)
        .route(
            Method::POST,
            "/api/v1/auth/logout",
            A(Action::Logout),
            logout,
        )
        .route(
            Method::GET,
            "/api/v1/auth/whoami",
            A(Action::Whoami),
            whoami,
        )
        .route(
            Method::GET,
            "/api/v1/users",
            A(Action::ManageUsers),
            list_users,
        )
        .route(
            Method::POST,
            "/api/v1/users",
            A(Action::ManageUsers),
            create_user,
        )
        .route(
            Method::GET,
            "/api/v1/users/{name}",
            A(Action::ManageUsers),
            get_user,
        )
        .route(
            Method::PATCH,
            "/api/v1/users/{name}",
            A(Action::ManageUsers),
            patch_user,
        )
        .route(
            Method::DELETE,
            "/api/v1/users/{name}",
            A(Action::ManageUsers),
            delete_user,
        )
        .route(
            Method::GET,
            "/api/v1/tokens",
            A(Action::ManageOwnTokens),
            list_tokens,
        )
        .route(
            Method::POST,
            "/api/v1/tokens",
            A(Action::ManageOwnTokens),
            create_token,
        )
        .route(
            Method::DELETE,
            "/api/v1/tokens/{id}",
            A(Action::ManageOwnTokens),
            delete_token,
        )
        .route(
            Method::GET,
            "/api/v1/enrollment-tokens",
            A(Action::ManageEnrollment),
            list_enrollment_tokens,
        )
        .route(
            Method::POST,
            "/api/v1/enrollment-tokens",
            A(Action::ManageEnrollment),
            create_enrollment_token,
        )
        .route(
            Method::DELETE,
            "/api/v1/enrollment-tokens/{id}",
            A(Action::ManageEnrollment),
            delete_enrollment_token,
        )
        .route(Method::POST, "/api/v1/enroll", Public, enroll)
}

/// Parses an `expires_in`-style duration, naming the field.
pub(crate) fn parse_duration(field: &str, raw: &str) -> Result<Duration, ApiError> {
    let d = humantime::parse_duration(raw).map_err(|e| {
        ApiError::invalid_body(
            Some(field),
            format!("{field}: invalid duration {raw:?}: {e}"),
        )
    })?;
    if d.is_zero() || d > Duration::from_secs(10 * 366 * 86400) {
        return Err(ApiError::invalid_body(
            Some(field),
            format!("{field}: must be between 1s and 10 years"),
        ));
    }
    Ok(d)
}

/// Body of `POST /api/v1/auth/login`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct LoginRequest {
    /// User name.
    pub username: String,
    /// Password.
    pub password: String,
}

/// A user reference in a login answer.
#[derive(Debug, Serialize, ToSchema)]
pub struct UserRef {
    /// Name.
    pub name: String,
    /// Role.
    #[schema(value_type = String)]
    pub role: Role,
}

/// Answer of `POST /api/v1/auth/login`.
#[derive(Debug, Serialize, ToSchema)]
pub struct LoginResponse {
    /// The session token (`wrs_...`), shown once.
    pub token: String,
    /// When it expires.
    #[schema(value_type = String, format = DateTime)]
    pub expires_at: wrale_core::Timestamp,
    /// Who logged in.
    pub user: UserRef,
}

/// `POST /api/v1/auth/login`: a session token for a user name and password.
#[utoipa::path(post, path = "/api/v1/auth/login", tag = "auth", request_body = LoginRequest,
    responses((status = 200, body = LoginResponse), (status = 401, description = "bad user name or password")))]
pub async fn login(
    State(s): State<AppState>,
    ApiJson(req): ApiJson<LoginRequest>,
) -> Result<Json<LoginResponse>, ApiError> {
    let name = req.username.clone();
    let found = s.store(move |st| st.user_with_hash(&name)).await?;
    let password = req.password;
    let ok_user = match found {
        Some((user, hash)) => {
            let ok = tokio::task::spawn_blocking(move || verify_password(&password, &hash))
                .await
                .map_err(|e| ApiError::internal(format!("password check: {e}")))?;
            ok.then_some(user)
        }
        None => {
            // Spend the same time as a real check, so timing does not reveal names.
            let _ = tokio::task::spawn_blocking(move || {
                verify_password(&password, "$argon2id$v=19$m=19456,t=2,p=1$c2FsdHNhbHRzYWx0$2qnBZfUsoVJSy/3dBQDCVP9vdbHcsyiA3WbRmqMKUEU")
            })
            .await;
            None
        }
    };
    let Some(user) = ok_user else {
        s.metrics
            .login_failures
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        s.audit(
            &format!("user:{}", req.username),
            "auth.login",
            &format!("user:{}", req.username),
            "denied",
            json!({"reason": "bad user name or password"}),
            None,
        )
        .await;
        return Err(ApiError::unauthorized("bad user name or password"));
    };
    let token = new_secret(SESSION_PREFIX);
    let hash = secret_hash(&token);
    let t = now();
    let expires_at = t + s.config().auth.session_ttl;
    let uname = user.name.clone();
    s.store(move |st| st.create_session(&hash, &uname, t, expires_at))
        .await?;
    s.audit(
        &format!("user:{}", user.name),
        "auth.login",
        &format!("user:{}", user.name),
        "allowed",
        json!({"expires_at": expires_at}),
        None,
    )
    .await;
    Ok(Json(LoginResponse {
        token,
        expires_at,
        user: UserRef {
            name: user.name,
            role: user.role,
        },
    }))
}

/// `POST /api/v1/auth/logout`: ends the session whose token is used.
#[utoipa::path(post, path = "/api/v1/auth/logout", tag = "auth", security(("bearer" = [])),
    responses((status = 204, description = "session ended"), (status = 400, description = "not a session token")))]
pub async fn logout(State(s): State<AppState>, p: Principal) -> Result<StatusCode, ApiError> {
    if p.kind != PrincipalKind::User {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            "only a login session can log out; delete an API token with DELETE /api/v1/tokens/{id}",
        ));
    }
    let h = p.secret_hash.clone();
    s.store(move |st| st.delete_session(&h)).await?;
    s.audit_ok(
        &p,
        "auth.logout",
        &format!("user:{}", p.name),
        Value::Null,
        None,
    )
    .await;
    Ok(StatusCode::NO_CONTENT)
}

/// Answer of `GET /api/v1/auth/whoami`.
#[derive(Debug, Serialize, ToSchema)]
pub struct Whoami {
    /// `user`, `token` or `device`.
    #[schema(value_type = String)]
    pub kind: PrincipalKind,
    /// User name, token name or device id.
    pub name: String,
    /// Effective role (absent for devices).
    #[schema(value_type = Option<String>)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub role: Option<Role>,
    /// The user a token acts for.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
}

/// `GET /api/v1/auth/whoami`.
#[utoipa::path(get, path = "/api/v1/auth/whoami", tag = "auth", security(("bearer" = [])),
    responses((status = 200, body = Whoami), (status = 401, description = "no or bad token")))]
pub async fn whoami(p: Principal) -> Json<Whoami> {
    Json(Whoami {
        kind: p.kind,
        name: p.name.clone(),
        role: p.role,
        user: if p.kind == PrincipalKind::Token {
            p.user.clone()
        } else {
            None
        },
    })
}

/// `GET /api/v1/users`.
#[utoipa::path(get, path = "/api/v1/users", tag = "users", security(("bearer" = [])),
    responses((status = 200, body = [User]), (status = 403, description = "not an admin")))]
pub async fn list_users(State(s): State<AppState>) -> Result<Json<Vec<User>>, ApiError> {
    Ok(Json(s.store(|st| st.list_users()).await?))
}

/// Body of `POST /api/v1/users`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewUser {
    /// Login name.
    pub name: String,
    /// Password (at least `auth.min_password_len` characters).
    pub password: String,
    /// Role.
    #[schema(value_type = String)]
    pub role: Role,
}

fn check_password(s: &AppState, password: &str) -> Result<(), ApiError> {
    let min = s.config().auth.min_password_len;
    if password.chars().count() < min {
        return Err(ApiError::invalid_body(
            Some("password"),
            format!("password: must have at least {min} characters"),
        ));
    }
    Ok(())
}

async fn hash_in_pool(password: String) -> Result<String, ApiError> {
    tokio::task::spawn_blocking(move || hash_password(&password))
        .await
        .map_err(|e| ApiError::internal(format!("password hash: {e}")))?
        .map_err(|e| ApiError::internal(e.to_string()))
}

/// `POST /api/v1/users`.
#[utoipa::path(post, path = "/api/v1/users", tag = "users", security(("bearer" = [])), request_body = NewUser,
    responses((status = 201, body = User), (status = 409, description = "name taken")))]
pub async fn create_user(
    State(s): State<AppState>,
    p: Principal,
    ApiJson(req): ApiJson<NewUser>,
) -> Result<(StatusCode, Json<User>), ApiError> {
    validate_user_name(&req.name).map_err(|m| ApiError::invalid_body(Some("name"), m))?;
    check_password(&s, &req.password)?;
    let hash = hash_in_pool(req.password).await?;
    let (name, role, t) = (req.name.clone(), req.role, now());
    let user = s
        .store(move |st| st.create_user(&name, role, &hash, t))
        .await?;
    s.audit_ok(
        &p,
        "user.create",
        &format!("user:{}", user.name),
        json!({"role": user.role}),
        None,
    )
    .await;
    Ok((StatusCode::CREATED, Json(user)))
}

async fn find_user(s: &AppState, name: String) -> Result<User, ApiError> {
    let n = name.clone();
    s.store(move |st| st.user_with_hash(&n))
        .await?
        .map(|(u, _)| u)
        .ok_or_else(|| ApiError::not_found(format!("no user {name:?}")))
}

/// `GET /api/v1/users/{name}`.
#[utoipa::path(get, path = "/api/v1/users/{name}", tag = "users", security(("bearer" = [])),
    params(("name" = String, Path, description = "user name")),
    responses((status = 200, body = User), (status = 404, description = "no such user")))]
pub async fn get_user(
    State(s): State<AppState>,
    Path(name): Path<String>,
) -> Result<Json<User>, ApiError> {
    Ok(Json(find_user(&s, name).await?))
}

/// Body of `PATCH /api/v1/users/{name}`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UserPatch {
    /// New password (ends the user's sessions).
    #[serde(default)]
    pub password: Option<String>,
    /// New role.
    #[serde(default)]
    #[schema(value_type = Option<String>)]
    pub role: Option<Role>,
}

/// Refuses (409) a change that would leave the fleet without an admin.
async fn keep_an_admin(s: &AppState, name: &str, new_role: Option<Role>) -> Result<(), ApiError> {
    let users = s.store(|st| st.list_users()).await?;
    keeps_an_admin(
        users.iter().map(|u| (u.name.as_str(), u.role)),
        name,
        new_role,
    )
    .map_err(|e| ApiError::conflict(e.to_string()))
}

/// `PATCH /api/v1/users/{name}`: role and/or password.
#[utoipa::path(patch, path = "/api/v1/users/{name}", tag = "users", security(("bearer" = [])), request_body = UserPatch,
    params(("name" = String, Path, description = "user name")),
    responses((status = 200, body = User), (status = 404, description = "no such user"), (status = 409, description = "would leave no admin")))]
pub async fn patch_user(
    State(s): State<AppState>,
    p: Principal,
    Path(name): Path<String>,
    ApiJson(req): ApiJson<UserPatch>,
) -> Result<Json<User>, ApiError> {
    find_user(&s, name.clone()).await?;
    if let Some(role) = req.role {
        keep_an_admin(&s, &name, Some(role)).await?;
    }
    let hash = match req.password {
        Some(pw) => {
            check_password(&s, &pw)?;
            Some(hash_in_pool(pw).await?)
        }
        None => None,
    };
    let changed_password = hash.is_some();
    let (n, role) = (name.clone(), req.role);
    let user = s
        .store(move |st| st.update_user(&n, role, hash.as_deref()))
        .await?;
    s.audit_ok(
        &p,
        "user.update",
        &format!("user:{name}"),
        json!({"role": req.role, "password_changed": changed_password}),
        None,
    )
    .await;
    Ok(Json(user))
}

/// `DELETE /api/v1/users/{name}`: with their sessions and tokens.
#[utoipa::path(delete, path = "/api/v1/users/{name}", tag = "users", security(("bearer" = [])),
    params(("name" = String, Path, description = "user name")),
    responses((status = 204, description = "deleted"), (status = 404, description = "no such user"), (status = 409, description = "would leave no admin")))]
pub async fn delete_user(
    State(s): State<AppState>,
    p: Principal,
    Path(name): Path<String>,
) -> Result<StatusCode, ApiError> {
    find_user(&s, name.clone()).await?;
    keep_an_admin(&s, &name, None).await?;
    let n = name.clone();
    s.store(move |st| st.delete_user(&n)).await?;
    s.audit_ok(
        &p,
        "user.delete",
        &format!("user:{name}"),
        Value::Null,
        None,
    )
    .await;
    Ok(StatusCode::NO_CONTENT)
}

fn acting_user(p: &Principal) -> Result<(String, Role), ApiError> {
    match (&p.user, p.role) {
        (Some(u), Some(r)) => Ok((u.clone(), r)),
        _ => Err(ApiError::forbidden(
            "only users and their tokens manage tokens",
        )),
    }
}

/// `GET /api/v1/tokens`: the caller's tokens (an admin sees everyone's).
#[utoipa::path(get, path = "/api/v1/tokens", tag = "tokens", security(("bearer" = [])),
    responses((status = 200, body = [ApiToken])))]
pub async fn list_tokens(
    State(s): State<AppState>,
    p: Principal,
) -> Result<Json<Vec<ApiToken>>, ApiError> {
    let (user, _) = acting_user(&p)?;
    let owner = if p.require(Action::ManageAllTokens).is_ok() {
        None
    } else {
        Some(user)
    };
    Ok(Json(
        s.store(move |st| st.list_api_tokens(owner.as_deref()))
            .await?,
    ))
}

/// Body of `POST /api/v1/tokens`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewToken {
    /// A name for it (`ci`, `grafana`).
    pub name: String,
    /// Its role (default: the creator's; never above it).
    #[serde(default)]
    #[schema(value_type = Option<String>)]
    pub role: Option<Role>,
    /// Lifetime (`30d`); none: no expiry.
    #[serde(default)]
    pub expires_in: Option<String>,
}

/// Answer of `POST /api/v1/tokens`: the secret, shown once.
#[derive(Debug, Serialize, ToSchema)]
pub struct CreatedToken {
    /// The token.
    #[serde(flatten)]
    pub info: ApiToken,
    /// The secret (`wrt_...`).
    pub token: String,
}

/// `POST /api/v1/tokens`: a named API token acting for the caller.
#[utoipa::path(post, path = "/api/v1/tokens", tag = "tokens", security(("bearer" = [])), request_body = NewToken,
    responses((status = 201, body = CreatedToken), (status = 403, description = "role above the creator's")))]
pub async fn create_token(
    State(s): State<AppState>,
    p: Principal,
    ApiJson(req): ApiJson<NewToken>,
) -> Result<(StatusCode, Json<CreatedToken>), ApiError> {
    let (owner, creator_role) = acting_user(&p)?;
    if req.name.trim().is_empty() || req.name.len() > 64 {
        return Err(ApiError::invalid_body(
            Some("name"),
            "name: must be 1-64 characters",
        ));
    }
    let role = token_role(req.role, creator_role).map_err(denied)?;
    let t = now();
    let expires_at = req
        .expires_in
        .as_deref()
        .map(|e| parse_duration("expires_in", e))
        .transpose()?
        .map(|d| t + d);
    let info = ApiToken {
        id: new_id("tok"),
        name: req.name,
        owner,
        role,
        created_at: t,
        expires_at,
    };
    let token = new_secret(TOKEN_PREFIX);
    let (i, h) = (info.clone(), secret_hash(&token));
    s.store(move |st| st.create_api_token(&i, &h)).await?;
    s.audit_ok(
        &p,
        "token.create",
        &format!("token:{}", info.id),
        json!({"name": info.name, "role": info.role}),
        None,
    )
    .await;
    Ok((StatusCode::CREATED, Json(CreatedToken { info, token })))
}

/// `DELETE /api/v1/tokens/{id}`: one's own token, or any for an admin.
#[utoipa::path(delete, path = "/api/v1/tokens/{id}", tag = "tokens", security(("bearer" = [])),
    params(("id" = String, Path, description = "token id")),
    responses((status = 204, description = "deleted"), (status = 404, description = "no such token of yours")))]
pub async fn delete_token(
    State(s): State<AppState>,
    p: Principal,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    let (user, _) = acting_user(&p)?;
    let i = id.clone();
    let token = s.store(move |st| st.get_api_token(&i)).await?;
    let mine = token.as_ref().is_some_and(|t| t.owner == user);
    if token.is_none() || (!mine && p.require(Action::ManageAllTokens).is_err()) {
        return Err(ApiError::not_found(format!("no token {id} of yours")));
    }
    let i = id.clone();
    s.store(move |st| st.delete_api_token(&i)).await?;
    s.audit_ok(
        &p,
        "token.delete",
        &format!("token:{id}"),
        Value::Null,
        None,
    )
    .await;
    Ok(StatusCode::NO_CONTENT)
}

/// `GET /api/v1/enrollment-tokens`.
#[utoipa::path(get, path = "/api/v1/enrollment-tokens", tag = "enrollment", security(("bearer" = [])),
    responses((status = 200, body = [EnrollmentToken])))]
pub async fn list_enrollment_tokens(
    State(s): State<AppState>,
) -> Result<Json<Vec<EnrollmentToken>>, ApiError> {
    Ok(Json(s.store(|st| st.list_enrollment_tokens()).await?))
}

/// Body of `POST /api/v1/enrollment-tokens`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewEnrollmentToken {
    /// Group enrolled devices go into.
    #[serde(default)]
    #[schema(value_type = Option<String>)]
    pub group: Option<GroupId>,
    /// How many devices may use it (default 1).
    #[serde(default)]
    pub uses: Option<u32>,
    /// Lifetime (default `24h`).
    #[serde(default)]
    pub expires_in: Option<String>,
    /// Labels given to enrolled devices.
    #[serde(default)]
    pub labels: Option<BTreeMap<String, String>>,
}

/// Answer of `POST /api/v1/enrollment-tokens`: the secret, shown once.
#[derive(Debug, Serialize, ToSchema)]
pub struct CreatedEnrollmentToken {
    /// The token.
    #[serde(flatten)]
    pub info: EnrollmentToken,
    /// The secret (`wre_...`).
    pub token: String,
}

/// `POST /api/v1/enrollment-tokens`.
#[utoipa::path(post, path = "/api/v1/enrollment-tokens", tag = "enrollment", security(("bearer" = [])), request_body = NewEnrollmentToken,
    responses((status = 201, body = CreatedEnrollmentToken), (status = 400, description = "bad field, or unknown group")))]
pub async fn create_enrollment_token(
    State(s): State<AppState>,
    p: Principal,
    ApiJson(req): ApiJson<NewEnrollmentToken>,
) -> Result<(StatusCode, Json<CreatedEnrollmentToken>), ApiError> {
    let uses = req.uses.unwrap_or(1);
    if uses == 0 || uses > 100_000 {
        return Err(ApiError::invalid_body(
            Some("uses"),
            "uses: must be between 1 and 100000",
        ));
    }
    let ttl = parse_duration("expires_in", req.expires_in.as_deref().unwrap_or("24h"))?;
    let t = now();
    let info = EnrollmentToken {
        id: new_id("enr"),
        group: req.group,
        uses,
        used: 0,
        expires_at: t + ttl,
        labels: req.labels.unwrap_or_default(),
        created_by: p.actor(),
        created_at: t,
    };
    let token = new_secret(ENROLL_PREFIX);
    let (i, h) = (info.clone(), secret_hash(&token));
    s.store(move |st| st.create_enrollment_token(&i, &h))
        .await?;
    s.audit_ok(
        &p,
        "enrollment_token.create",
        &format!("enrollment_token:{}", info.id),
        json!({"uses": uses, "group": info.group, "expires_at": info.expires_at}),
        None,
    )
    .await;
    Ok((
        StatusCode::CREATED,
        Json(CreatedEnrollmentToken { info, token }),
    ))
}

/// `DELETE /api/v1/enrollment-tokens/{id}`.
#[utoipa::path(delete, path = "/api/v1/enrollment-tokens/{id}", tag = "enrollment", security(("bearer" = [])),
    params(("id" = String, Path, description = "enrollment token id")),
    responses((status = 204, description = "deleted"), (status = 404, description = "no such token")))]
pub async fn delete_enrollment_token(
    State(s): State<AppState>,
    p: Principal,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    let i = id.clone();
    if !s.store(move |st| st.delete_enrollment_token(&i)).await? {
        return Err(ApiError::not_found(format!("no enrollment token {id}")));
    }
    s.audit_ok(
        &p,
        "enrollment_token.delete",
        &format!("enrollment_token:{id}"),
        Value::Null,
        None,
    )
    .await;
    Ok(StatusCode::NO_CONTENT)
}

/// Body of `POST /api/v1/enroll`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct EnrollRequest {
    /// The enrollment token (`wre_...`).
    pub token: String,
    /// The device's id.
    #[schema(value_type = String)]
    pub device_id: DeviceId,
    /// Board model (`pi4b`, `pi5`, ...).
    #[schema(value_type = String)]
    pub model: BoardModel,
    /// Hardware serial.
    #[serde(default)]
    pub serial: Option<String>,
    /// Labels (the token's win).
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    /// Location.
    #[serde(default)]
    #[schema(value_type = Object)]
    pub location: Location,
    /// metald version.
    #[serde(default)]
    pub agent_version: Option<String>,
}

/// Answer of `POST /api/v1/enroll`.
#[derive(Debug, Serialize, ToSchema)]
pub struct Enrolled {
    /// The device's id.
    #[schema(value_type = String)]
    pub device_id: DeviceId,
    /// The device credential (`wrd_...`), shown once.
    pub credential: String,
    /// The group it was put into.
    #[schema(value_type = Option<String>)]
    pub group: Option<GroupId>,
    /// Where to open the sync WebSocket.
    pub sync_path: String,
}

/// `POST /api/v1/enroll`: a device trades an enrollment token for its credential.
#[utoipa::path(post, path = "/api/v1/enroll", tag = "enrollment", request_body = EnrollRequest,
    responses((status = 201, body = Enrolled), (status = 401, description = "`enrollment_invalid`: unknown, expired or used-up token"),
              (status = 409, description = "the id is enrolled and not revoked")))]
pub async fn enroll(
    State(s): State<AppState>,
    ApiJson(req): ApiJson<EnrollRequest>,
) -> Result<(StatusCode, Json<Enrolled>), ApiError> {
    let credential = new_secret(DEVICE_PREFIX);
    let enrollment = Enrollment {
        device_id: req.device_id.clone(),
        model: req.model,
        serial: req.serial,
        labels: req.labels,
        location: req.location,
        agent_version: req.agent_version,
    };
    let (th, ch, t) = (secret_hash(&req.token), secret_hash(&credential), now());
    let actor = format!("device:{}", req.device_id);
    let target = actor.clone();
    match s
        .store(move |st| st.enroll(&th, &enrollment, &ch, t))
        .await?
    {
        Ok(device) => {
            s.audit(
                &actor,
                "device.enroll",
                &target,
                "allowed",
                json!({"group": device.group, "model": device.model}),
                Some(device.id.clone()),
            )
            .await;
            s.publish(
                EventKind::Device,
                Some(device.id.clone()),
                json!({"event": "enrolled", "device": device}),
            )
            .await;
            Ok((
                StatusCode::CREATED,
                Json(Enrolled {
                    sync_path: format!("/api/v1/devices/{}/sync", device.id),
                    device_id: device.id,
                    credential,
                    group: device.group,
                }),
            ))
        }
        Err(EnrollRefusal::Invalid(why)) => {
            tracing::info!(device = %req.device_id, "enrollment refused: {why}");
            s.audit(
                &actor,
                "device.enroll",
                &target,
                "denied",
                json!({"reason": why}),
                None,
            )
            .await;
            Err(ApiError::new(
                StatusCode::UNAUTHORIZED,
                "enrollment_invalid",
                "the enrollment token is unknown, expired or used up",
            ))
        }
        Err(EnrollRefusal::AlreadyEnrolled) => {
            s.audit(
                &actor,
                "device.enroll",
                &target,
                "denied",
                json!({"reason": "already enrolled"}),
                None,
            )
            .await;
            Err(ApiError::conflict(format!(
                "device {} is enrolled and not revoked (revoke it first to re-enroll)",
                req.device_id
            )))
        }
    }
}
