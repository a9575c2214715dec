//! fleetd: the Wrale fleet brain.
//!
//! Placeholder in the workspace foundation: the daemon (registry, twin hub, telemetry
//! store, user API) is built by the fleetd issue (#6).

fn main() {
    eprintln!("fleetd is not built yet: see issue #6 (fleetd and the wrale CLI)");
    std::process::exit(2);
}
