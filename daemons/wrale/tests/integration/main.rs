//! End-to-end tests of the real `wrale` binary against a real fleetd
//! (`fleetd::testing::TestServer`: the daemon on 127.0.0.1:0 with a SQLite data
//! directory in a temp dir).

mod access;
mod analysis;
mod devices;
mod events;
mod metald;
mod orchestrate;
mod support;
mod twins;
mod usage;
