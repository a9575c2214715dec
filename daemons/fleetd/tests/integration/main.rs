//! fleetd integration tests: the real server on 127.0.0.1:0 with a SQLite store in
//! a temporary directory, driven over HTTP and WebSocket.

mod access;
mod alerts_audit;
mod backup;
mod bad_input;
mod e2e_fleet;
mod enroll;
mod events;
mod intel;
mod matrix;
mod orchestrate;
mod registry;
mod restart;
mod support;
mod telemetry;
mod twins;
mod webhook_reload;
