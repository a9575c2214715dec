//! # wrale-sync
//!
//! Device twins on automerge, sync sessions, transports and stores.
//!
//! A **twin** ([`Twin`]) is one automerge document per device with three sections of
//! flat fields: `meta` (identity, model, labels, location, group), `desired` (the
//! config the fleet, users and local operators want: [`DesiredConfig`]) and
//! `reported` (what the device says: [`Reported`]). Every change records its author
//! ([`Author`]) and time; concurrent writes of one field are resolved by the
//! field's [`FieldPolicy`] the same way on every peer. History is bounded by epoch
//! compaction ([`Twin::compact`], [`Twin::adopt_epoch`]).
//!
//! The sync protocol is sans-I/O ([`SyncSession`]): it turns a twin and a peer's
//! saved sync state into frames ([`Envelope`]) and back, and any [`Transport`]
//! moves the frames. Twins, sync states and archived epochs live in a [`Store`]
//! ([`MemoryStore`], [`SqliteStore`]). Live telemetry does not go into the twin; it
//! takes the [`telemetry`] path.
//!
//! Two drivers run the protocol over real links: the edge agent (`agent`
//! module, feature `agent`: one twin, reconnecting to the fleet; metald) and the
//! hub (`hub` module, feature `hub`: many devices, the fleet side; fleetd). Fleet commands travel on the same link ([`FleetCommand`],
//! [`CommandReply`]).
//!
//! See `docs/sync.md` for the schema, the merge rules per field and the size budget.

#[cfg(feature = "agent")]
pub mod agent;
mod author;
mod command;
mod config;
pub mod credential;
#[cfg(feature = "embedded")]
pub mod embedded;
mod envelope;
mod epoch;
mod error;
#[cfg(feature = "hub")]
pub mod hub;
mod policy_validator;
mod reported;
mod schema;
mod session;
pub mod store;
pub mod telemetry;
pub mod transport;
mod twin;

#[cfg(all(feature = "agent", feature = "ws"))]
pub use agent::WsConnector;
#[cfg(feature = "agent")]
pub use agent::{
    Agent, AgentConfig, AgentHandle, AgentMode, AgentStatus, Backoff, Connector, FnConnector,
    IncomingCommand, TelemetrySource,
};
pub use author::{Author, AuthorKind, InvalidAuthor};
pub use command::{
    CommandReply, CommandStatus, FleetCommand, MAX_COMMAND_ID, decode_command,
    decode_command_result, encode_command, encode_command_result,
};
pub use config::{
    BoardFloorValidator, ConfigValidator, CurvePoint, DesiredConfig, FLEET_LAYER, LayeredConfig,
    PartialConfig, Rejection, apply_changes, effective_config, workloads_to_run,
};
pub use envelope::{
    Envelope, EnvelopeError, FrameKind, decode_telemetry, decode_telemetry_ack, encode_telemetry,
    encode_telemetry_ack,
};
pub use epoch::{Adoption, Compaction, KEPT_CLOCKS};
pub use error::{Error, Result};
#[cfg(feature = "hub")]
pub use hub::{
    ChangeOrigin, DiscardTelemetry, Hub, HubConfig, HubError, HubEvent, HubStatus, SessionEnd,
    TelemetrySink,
};
pub use policy_validator::PolicyValidator;
pub use reported::{ConfigStatus, Health, ReportPolicy, Reported, ReportedUpdate};
pub use schema::{
    Candidate, Conflict, FieldPath, FieldPolicy, FieldValue, SCHEMA_VERSION, Section, policy_for,
    resolve,
};
pub use session::{Received, SessionStats, SyncSession};
#[cfg(feature = "sqlite")]
pub use store::sqlite::SqliteStore;
pub use store::{MemoryStore, Store, StoredTwin};
pub use transport::Transport;
pub use twin::{ConfigVerdict, Twin, Version};

/// The automerge change hash: a twin version is a set of these (the heads).
pub use automerge::ChangeHash;
