//! Creating admins: at first start (no user yet) and with `fleetd admin create`.

use std::sync::Arc;

use anyhow::Context as _;
use wrale_core::fleet::access::Role;

use crate::auth::{
    TOKEN_PREFIX, hash_password, new_id, new_password, new_secret, secret_hash, validate_user_name,
};
use crate::state::now;
use crate::store::{ApiToken, FleetStore, SqliteStore};

/// A created admin: the password (when generated) and an API token, shown once.
#[derive(Debug, Clone)]
pub struct CreatedAdmin {
    /// User name.
    pub name: String,
    /// The password, if it was generated.
    pub generated_password: Option<String>,
    /// An admin API token (`wrt_...`) for scripts.
    pub token: String,
}

/// Opens the store of `config` (creating the data directory).
pub fn open_store(config: &crate::Config) -> anyhow::Result<Arc<SqliteStore>> {
    std::fs::create_dir_all(&config.data.dir).with_context(|| {
        format!(
            "cannot create the data directory {} (data.dir)",
            config.data.dir.display()
        )
    })?;
    let store = SqliteStore::open(&config.db_path()).map_err(|e| anyhow::anyhow!("{e}"))?;
    Ok(Arc::new(store))
}

/// Creates admin `name` with `password` (generated when `None`) and an admin API
/// token named `bootstrap`.
pub fn create_admin(
    store: &dyn FleetStore,
    name: &str,
    password: Option<&str>,
) -> anyhow::Result<CreatedAdmin> {
    validate_user_name(name).map_err(anyhow::Error::msg)?;
    let generated = password.is_none().then(new_password);
    let password = password
        .map(str::to_owned)
        .or_else(|| generated.clone())
        .unwrap_or_default();
    let hash = hash_password(&password)?;
    let t = now();
    store
        .create_user(name, Role::Admin, &hash, t)
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    let token = new_secret(TOKEN_PREFIX);
    let info = ApiToken {
        id: new_id("tok"),
        name: "bootstrap".into(),
        owner: name.to_owned(),
        role: Role::Admin,
        created_at: t,
        expires_at: None,
    };
    store
        .create_api_token(&info, &secret_hash(&token))
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    store
        .append_audit(&crate::store::NewAudit {
            time: t,
            actor: "system".into(),
            action: "user.create".into(),
            target: format!("user:{name}"),
            verdict: "allowed".into(),
            result: serde_json::json!({"role": "admin", "via": "bootstrap"}),
        })
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    Ok(CreatedAdmin {
        name: name.to_owned(),
        generated_password: generated,
        token,
    })
}

/// At first start (no user at all): creates `auth.first_admin` with a random
/// password and prints it once on standard error.
pub fn ensure_first_admin(
    store: &dyn FleetStore,
    config: &crate::Config,
) -> anyhow::Result<Option<CreatedAdmin>> {
    if store.user_count().map_err(|e| anyhow::anyhow!("{e}"))? > 0 {
        return Ok(None);
    }
    let created = create_admin(store, &config.auth.first_admin, None)?;
    eprintln!(
        "fleetd: first start: created admin user {:?}\n  password: {}\n  API token: {}\nBoth are shown only now. Log in with POST /api/v1/auth/login and change the password with PATCH /api/v1/users/{}.",
        created.name,
        created.generated_password.as_deref().unwrap_or(""),
        created.token,
        created.name
    );
    Ok(Some(created))
}
