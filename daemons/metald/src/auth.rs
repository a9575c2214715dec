//! Bearer tokens with roles. The config holds only `sha256:<hex>` hashes of the
//! tokens; a presented token is hashed and compared in constant time with every
//! configured hash.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// What a token may do. Ordered: a higher role can do everything a lower one can.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// Reads state, readings, alerts, metrics and the stream.
    Viewer,
    /// Also sends commands to the hardware.
    Operator,
    /// Also manages the daemon (config reload).
    Admin,
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Role::Viewer => "viewer",
            Role::Operator => "operator",
            Role::Admin => "admin",
        })
    }
}

/// The SHA-256 of a token, written `sha256:<64 hex digits>`.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct TokenHash([u8; 32]);

impl fmt::Debug for TokenHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "TokenHash({self})")
    }
}

impl fmt::Display for TokenHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("sha256:")?;
        for b in self.0 {
            write!(f, "{b:02x}")?;
        }
        Ok(())
    }
}

/// Error for a malformed token hash.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("expected \"sha256:\" followed by 64 hex digits (see `metald hash-token`)")]
pub struct BadTokenHash;

impl FromStr for TokenHash {
    type Err = BadTokenHash;
    fn from_str(s: &str) -> Result<Self, BadTokenHash> {
        let hex = s.strip_prefix("sha256:").ok_or(BadTokenHash)?;
        if hex.len() != 64 {
            return Err(BadTokenHash);
        }
        let mut out = [0u8; 32];
        for (i, byte) in out.iter_mut().enumerate() {
            let pair = hex.get(2 * i..2 * i + 2).ok_or(BadTokenHash)?;
            *byte = u8::from_str_radix(pair, 16).map_err(|_| BadTokenHash)?;
        }
        Ok(TokenHash(out))
    }
}

impl Serialize for TokenHash {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for TokenHash {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

impl TokenHash {
    /// Hashes a token.
    pub fn of(token: &str) -> TokenHash {
        TokenHash(Sha256::digest(token.as_bytes()).into())
    }

    /// Compares without an early exit, so timing does not reveal how many leading
    /// bytes matched.
    pub fn ct_eq(&self, other: &TokenHash) -> bool {
        let diff = self
            .0
            .iter()
            .zip(other.0.iter())
            .fold(0u8, |acc, (a, b)| acc | (a ^ b));
        std::hint::black_box(diff) == 0
    }
}

/// `[[api.tokens]]`: one token's name, role and hash.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TokenConfig {
    /// Who or what holds the token (appears in logs and the audit log).
    pub name: String,
    /// What it may do.
    pub role: Role,
    /// `sha256:<hex>` of the token.
    pub hash: TokenHash,
}

/// The identity a request was authenticated as.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    /// Token name.
    pub name: String,
    /// Its role.
    pub role: Role,
}

/// The configured tokens.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Tokens {
    entries: Vec<TokenConfig>,
}

impl Tokens {
    /// From the config.
    pub fn new(entries: Vec<TokenConfig>) -> Self {
        Self { entries }
    }

    /// Whether no token is configured (every authenticated route then answers 401).
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Finds the token's entry. Every entry is compared, whatever matched.
    pub fn authenticate(&self, token: &str) -> Option<Principal> {
        let presented = TokenHash::of(token);
        let mut found = None;
        for e in &self.entries {
            if e.hash.ct_eq(&presented) && found.is_none() {
                found = Some(Principal {
                    name: e.name.clone(),
                    role: e.role,
                });
            }
        }
        found
    }
}

/// A new random token (`wrale_` + 64 hex digits, 256 bits from the OS) and its hash.
pub fn generate_token() -> Result<(String, TokenHash), getrandom::Error> {
    let mut bytes = [0u8; 32];
    getrandom::fill(&mut bytes)?;
    let mut token = String::from("wrale_");
    for b in bytes {
        token.push_str(&format!("{b:02x}"));
    }
    let hash = TokenHash::of(&token);
    Ok((token, hash))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hash_round_trips_and_rejects_garbage() {
        let h = TokenHash::of("secret");
        let s = h.to_string();
        assert!(s.starts_with("sha256:") && s.len() == 7 + 64, "{s}");
        // Known SHA-256 of "secret".
        assert_eq!(
            s,
            "sha256:2bb80d537b1da3e38bd30361aa855686bde0eacd7162fef6a25fe97bf527a25b"
        );
        assert_eq!(s.parse::<TokenHash>().unwrap(), h);
        for bad in [
            "",
            "sha256:",
            "md5:2bb80d537b1da3e38bd30361aa855686bde0eacd7162fef6a25fe97bf527a25b",
            "sha256:2bb80d537b1da3e38bd30361aa855686bde0eacd7162fef6a25fe97bf527a25",
            "sha256:zzb80d537b1da3e38bd30361aa855686bde0eacd7162fef6a25fe97bf527a25b",
            "sha256:2bb80d537b1da3e38bd30361aa855686bde0eacd7162fef6a25fe97bf527a2éb",
        ] {
            assert_eq!(bad.parse::<TokenHash>(), Err(BadTokenHash), "{bad}");
        }
    }

    #[test]
    fn roles_are_ordered() {
        assert!(Role::Viewer < Role::Operator && Role::Operator < Role::Admin);
    }

    #[test]
    fn authenticate_finds_the_right_entry() {
        let tokens = Tokens::new(vec![
            TokenConfig {
                name: "dash".into(),
                role: Role::Viewer,
                hash: TokenHash::of("v"),
            },
            TokenConfig {
                name: "ops".into(),
                role: Role::Operator,
                hash: TokenHash::of("o"),
            },
        ]);
        assert_eq!(tokens.authenticate("o").unwrap().role, Role::Operator);
        assert_eq!(tokens.authenticate("v").unwrap().name, "dash");
        assert!(tokens.authenticate("x").is_none());
        assert!(tokens.authenticate("").is_none());
        assert!(Tokens::default().authenticate("v").is_none());
    }

    #[test]
    fn generated_tokens_are_random_and_match_their_hash() {
        let (t1, h1) = generate_token().unwrap();
        let (t2, _) = generate_token().unwrap();
        assert_ne!(t1, t2);
        assert!(t1.starts_with("wrale_") && t1.len() == 6 + 64);
        assert!(h1.ct_eq(&TokenHash::of(&t1)));
        assert!(!h1.ct_eq(&TokenHash::of(&t2)));
    }
}
