//! Fleet logic: pure functions and types over fleet data, used by fleetd and the
//! bindings and testable without a server.
//!
//! - [`registry`]: device records, groups as a tree, queries, physical topology.
//! - [`access`]: principals, roles and the permission matrix; enrollment-token rules.
//! - [`telemetry`]: retention tiers and downsampling (rollups) of time series.
//! - [`analyzer`], [`scheduler`], [`optimizer`], [`rollout`], [`alerting`]: fleet
//!   intelligence (issue #7).

pub mod access;
pub mod alerting;
pub mod analyzer;
pub mod optimizer;
pub mod registry;
pub mod rollout;
pub mod scheduler;
pub mod telemetry;
