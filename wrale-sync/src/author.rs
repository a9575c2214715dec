//! Who wrote a change: authors, their kinds, and the automerge actor ids that carry them.

use automerge::ActorId;
use serde::{Deserialize, Serialize};
use std::fmt;

/// What kind of writer an author is. The kind decides `fleet-wins` / `device-wins`
/// conflicts, so it travels inside every operation: it is the first byte of the
/// automerge actor id that wrote the value.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AuthorKind {
    /// The deterministic genesis of a twin (section skeleton, no values).
    Genesis,
    /// The device's own agent (metald).
    Device,
    /// A person at the device, through metald's local API.
    LocalOperator,
    /// A user of the fleet (REST API, CLI, dashboard).
    User,
    /// The fleet service itself (fleetd: layering, rollouts, compaction).
    Fleet,
}

impl AuthorKind {
    const ALL: [AuthorKind; 5] = [
        AuthorKind::Genesis,
        AuthorKind::Device,
        AuthorKind::LocalOperator,
        AuthorKind::User,
        AuthorKind::Fleet,
    ];

    fn byte(self) -> u8 {
        match self {
            AuthorKind::Genesis => 0,
            AuthorKind::Device => 1,
            AuthorKind::LocalOperator => 2,
            AuthorKind::User => 3,
            AuthorKind::Fleet => 4,
        }
    }

    /// Whether this kind writes on the fleet's side (users and the fleet service).
    pub fn is_fleet_side(self) -> bool {
        matches!(self, AuthorKind::User | AuthorKind::Fleet)
    }

    /// Whether this kind writes on the device's side (the agent and local operators).
    pub fn is_device_side(self) -> bool {
        matches!(self, AuthorKind::Device | AuthorKind::LocalOperator)
    }

    /// Stable snake_case name.
    pub fn as_str(self) -> &'static str {
        match self {
            AuthorKind::Genesis => "genesis",
            AuthorKind::Device => "device",
            AuthorKind::LocalOperator => "local_operator",
            AuthorKind::User => "user",
            AuthorKind::Fleet => "fleet",
        }
    }

    fn parse(s: &str) -> Option<AuthorKind> {
        AuthorKind::ALL.into_iter().find(|k| k.as_str() == s)
    }

    /// The kind encoded in an actor id written by this crate (`Fleet` for foreign ids:
    /// a writer that does not follow the scheme gets no device-side privilege).
    pub(crate) fn of_actor(actor: &ActorId) -> AuthorKind {
        let b = actor.to_bytes();
        if b.len() == ACTOR_LEN {
            AuthorKind::ALL
                .into_iter()
                .find(|k| k.byte() == b[0])
                .unwrap_or(AuthorKind::Fleet)
        } else {
            AuthorKind::Fleet
        }
    }
}

impl fmt::Display for AuthorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Who made a change: a kind and a name (device id, user name, service name).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Author {
    /// The kind of writer.
    pub kind: AuthorKind,
    /// Its name.
    pub name: String,
}

impl Author {
    /// An author.
    pub fn new(kind: AuthorKind, name: impl Into<String>) -> Self {
        Self {
            kind,
            name: name.into(),
        }
    }

    /// The device's agent.
    pub fn device(id: &wrale_core::DeviceId) -> Self {
        Self::new(AuthorKind::Device, id.as_str())
    }

    /// A fleet user.
    pub fn user(name: impl Into<String>) -> Self {
        Self::new(AuthorKind::User, name)
    }

    /// The fleet service.
    pub fn fleet(name: impl Into<String>) -> Self {
        Self::new(AuthorKind::Fleet, name)
    }

    /// A local operator at the device.
    pub fn local_operator(name: impl Into<String>) -> Self {
        Self::new(AuthorKind::LocalOperator, name)
    }

    /// `kind:name`, the form kept in the twin's actor registry.
    pub(crate) fn encode(&self) -> String {
        format!("{}:{}", self.kind, self.name)
    }

    pub(crate) fn decode(s: &str) -> Option<Author> {
        let (k, n) = s.split_once(':')?;
        Some(Author::new(AuthorKind::parse(k)?, n))
    }
}

impl fmt::Display for Author {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.kind, self.name)
    }
}

/// Error for text that does not name an [`Author`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("author {text:?}: {reason}")]
pub struct InvalidAuthor {
    /// The text that was given.
    pub text: String,
    /// What is wrong with it.
    pub reason: String,
}

impl From<InvalidAuthor> for wrale_core::ErrorReport {
    fn from(e: InvalidAuthor) -> Self {
        wrale_core::ErrorReport::invalid_input("invalid_author", e.to_string())
    }
}

/// Parses `kind:name`: `user:ada`, `device:pi-1`, `local:bob` (or
/// `local_operator:bob`), `fleet:fleetd`. The genesis kind is not accepted: no
/// caller writes as the genesis.
impl std::str::FromStr for Author {
    type Err = InvalidAuthor;
    fn from_str(text: &str) -> Result<Self, InvalidAuthor> {
        let bad = |reason: String| InvalidAuthor {
            text: text.to_owned(),
            reason,
        };
        let (kind, name) = text
            .split_once(':')
            .ok_or_else(|| bad("expected kind:name (user, device, local, fleet)".into()))?;
        let kind = match kind {
            "local" => AuthorKind::LocalOperator,
            k => match AuthorKind::parse(k) {
                Some(AuthorKind::Genesis) | None => {
                    return Err(bad(format!(
                        "kind {k:?}: expected user, device, local or fleet"
                    )));
                }
                Some(k) => k,
            },
        };
        if name.trim().is_empty() {
            return Err(bad("the name is empty".into()));
        }
        Ok(Author::new(kind, name))
    }
}

pub(crate) const ACTOR_LEN: usize = 16;

/// A fresh actor id for `kind`: the kind byte followed by 15 random bytes. Each
/// twin instance uses fresh actors, so two processes never reuse a sequence number.
pub(crate) fn new_actor(kind: AuthorKind) -> ActorId {
    let random = ActorId::random();
    let mut bytes = [0u8; ACTOR_LEN];
    let r = random.to_bytes();
    let n = r.len().min(ACTOR_LEN - 1);
    bytes[1..1 + n].copy_from_slice(&r[..n]);
    bytes[0] = kind.byte();
    ActorId::from(&bytes[..])
}

/// The fixed actor of a twin's genesis change.
pub(crate) fn genesis_actor() -> ActorId {
    let mut bytes = [0u8; ACTOR_LEN];
    bytes[1..].copy_from_slice(b"wrale-genesis-\0");
    ActorId::from(&bytes[..])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn authors_parse_kind_and_name() {
        let a: Author = "fleet:fleetd".parse().unwrap();
        assert_eq!(a, Author::fleet("fleetd"));
        assert_eq!(
            "local:bob".parse::<Author>().unwrap(),
            Author::local_operator("bob")
        );
        assert_eq!(a.encode().parse::<Author>().unwrap(), a);
        for bad in ["ada", "robot:x", "genesis:g", "user:"] {
            let e = bad.parse::<Author>().unwrap_err();
            assert!(e.to_string().contains(bad), "{e}");
        }
        let r = wrale_core::ErrorReport::from("x".parse::<Author>().unwrap_err());
        assert_eq!(r.code, "invalid_author");
    }

    #[test]
    fn kind_travels_in_the_actor_id() {
        for k in AuthorKind::ALL {
            let a = new_actor(k);
            assert_eq!(AuthorKind::of_actor(&a), k);
            assert_ne!(new_actor(k), a, "actors are fresh");
        }
        assert_eq!(
            AuthorKind::of_actor(&ActorId::from(&[9u8; 4][..])),
            AuthorKind::Fleet
        );
        assert_eq!(AuthorKind::of_actor(&genesis_actor()), AuthorKind::Genesis);
    }

    #[test]
    fn author_round_trip() {
        let a = Author::user("alice:admin");
        assert_eq!(Author::decode(&a.encode()), Some(a));
        assert_eq!(Author::decode("nobody"), None);
        assert_eq!(Author::decode("robot:x"), None);
    }
}
