//! # wrale-client
//!
//! Typed client for fleetd's REST and WebSocket API (docs/fleet-api.md).
//! Being built in issue #6.
