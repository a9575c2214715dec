//! Secrets, passwords and the authenticated [`Principal`].
//!
//! Bearer secrets are a kind prefix (`wrs_` session, `wrt_` API token, `wrd_`
//! device credential, `wre_` enrollment token) plus 64 hex digits (256 bits from
//! the OS). Only their SHA-256 is stored. Passwords are hashed with argon2id.

use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use sha2::{Digest, Sha256};
use wrale_core::DeviceId;
use wrale_core::fleet::access::{self, Action, Denied, PrincipalKind, Role};

use crate::error::ApiError;

/// Prefix of login session tokens.
pub const SESSION_PREFIX: &str = "wrs_";
/// Prefix of API tokens.
pub const TOKEN_PREFIX: &str = "wrt_";
/// Prefix of device credentials.
pub const DEVICE_PREFIX: &str = "wrd_";
/// Prefix of enrollment tokens.
pub const ENROLL_PREFIX: &str = "wre_";

fn random_hex(bytes: usize) -> String {
    let mut buf = vec![0u8; bytes];
    // The OS random source failing is not recoverable for a server handing out
    // credentials; say so loudly rather than hand out a weak secret.
    if let Err(e) = getrandom::fill(&mut buf) {
        panic!("no randomness from the OS: {e}");
    }
    buf.iter().map(|b| format!("{b:02x}")).collect()
}

/// A new secret with the given prefix (`wrs_`, `wrt_`, `wrd_`, `wre_`).
pub fn new_secret(prefix: &str) -> String {
    format!("{prefix}{}", random_hex(32))
}

/// A new public id (`tok-3f9a...`, `enr-...`).
pub fn new_id(prefix: &str) -> String {
    format!("{prefix}-{}", random_hex(6))
}

/// A new random password for a generated admin (24 hex digits, 96 bits).
pub fn new_password() -> String {
    random_hex(12)
}

/// The stored form of a secret: lower-case hex SHA-256.
pub fn secret_hash(secret: &str) -> String {
    Sha256::digest(secret.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Hashes a password with argon2id (default parameters, random salt), in PHC form.
pub fn hash_password(password: &str) -> anyhow::Result<String> {
    let mut salt = [0u8; 16];
    getrandom::fill(&mut salt).map_err(|e| anyhow::anyhow!("no randomness from the OS: {e}"))?;
    let salt = SaltString::encode_b64(&salt).map_err(|e| anyhow::anyhow!("salt: {e}"))?;
    let hash = argon2::Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .map_err(|e| anyhow::anyhow!("argon2: {e}"))?;
    Ok(hash.to_string())
}

/// Whether `password` matches a PHC hash from [`hash_password`].
pub fn verify_password(password: &str, hash: &str) -> bool {
    PasswordHash::new(hash).is_ok_and(|parsed| {
        argon2::Argon2::default()
            .verify_password(password.as_bytes(), &parsed)
            .is_ok()
    })
}

/// A user name: 1-64 characters of `a-z`, `0-9`, `.`, `_`, `-`.
pub fn validate_user_name(name: &str) -> Result<(), String> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && name.bytes().all(|b| {
            b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'.' | b'_' | b'-')
        });
    if ok {
        Ok(())
    } else {
        Err(format!(
            "invalid user name {name:?}: use 1-64 characters of a-z, 0-9, '.', '_' and '-'"
        ))
    }
}

/// Who made a request, as authenticated by the router's guard.
///
/// Handlers take it as an extractor; it is present on every route but the public
/// ones (health, metrics when public, login, enroll), where extracting it answers
/// 401.
#[derive(Debug, Clone, PartialEq)]
pub struct Principal {
    /// User session, API token or device.
    pub kind: PrincipalKind,
    /// User name, token name or device id.
    pub name: String,
    /// The user acting (the session's user, or the token's owner); `None` for devices.
    pub user: Option<String>,
    /// Effective role; `None` for devices.
    pub role: Option<Role>,
    /// The device, for a device principal.
    pub device: Option<DeviceId>,
    /// The API token id, for a token principal.
    pub token_id: Option<String>,
    /// SHA-256 of the presented secret (logout ends exactly this session).
    pub secret_hash: String,
}

impl Principal {
    /// The audit log's actor string: `user:alice`, `token:ci@alice`, `device:pi-1`.
    pub fn actor(&self) -> String {
        match self.kind {
            PrincipalKind::User => format!("user:{}", self.name),
            PrincipalKind::Token => format!(
                "token:{}@{}",
                self.name,
                self.user.as_deref().unwrap_or("?")
            ),
            PrincipalKind::Device => format!("device:{}", self.name),
        }
    }

    /// Whether this principal is the device `id`.
    pub fn is_device(&self, id: &DeviceId) -> bool {
        self.device.as_ref() == Some(id)
    }

    /// Checks `action` (with no device target) against the permission matrix.
    pub fn require(&self, action: Action) -> Result<(), ApiError> {
        self.check(action, None)
    }

    /// Checks `action` on device `target` (device principals pass only for their own).
    pub fn require_for_device(&self, action: Action, target: &DeviceId) -> Result<(), ApiError> {
        self.check(action, Some(target))
    }

    fn check(&self, action: Action, target: Option<&DeviceId>) -> Result<(), ApiError> {
        let self_target = target.map(|t| self.is_device(t));
        access::authorize(self.kind, self.role, action, self_target).map_err(denied)
    }
}

/// A refusal from the matrix as a 403.
pub fn denied(d: Denied) -> ApiError {
    let e = ApiError::forbidden(d.to_string());
    match d.required_role() {
        Some(r) => e.with_detail("required_role", r.as_str()),
        None => e,
    }
}

impl<S: Send + Sync> FromRequestParts<S> for Principal {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, ApiError> {
        parts
            .extensions
            .get::<Principal>()
            .cloned()
            .ok_or_else(|| ApiError::unauthorized("missing `Authorization: Bearer <token>` header"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_are_prefixed_random_and_hash_stably() {
        let a = new_secret(TOKEN_PREFIX);
        let b = new_secret(TOKEN_PREFIX);
        assert_ne!(a, b);
        assert!(a.starts_with("wrt_") && a.len() == 4 + 64);
        assert_eq!(
            secret_hash("secret"),
            "2bb80d537b1da3e38bd30361aa855686bde0eacd7162fef6a25fe97bf527a25b"
        );
    }

    #[test]
    fn passwords_verify_only_with_the_right_password() {
        let h = hash_password("correct horse").unwrap();
        assert!(h.starts_with("$argon2id$"), "{h}");
        assert!(verify_password("correct horse", &h));
        assert!(!verify_password("wrong", &h));
        assert!(!verify_password("correct horse", "not a hash"));
    }

    #[test]
    fn user_names() {
        assert!(validate_user_name("alice.b-2_x").is_ok());
        for bad in ["", "Alice", "a b", &"a".repeat(65)] {
            assert!(validate_user_name(bad).is_err(), "{bad}");
        }
    }
}
