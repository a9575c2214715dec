//! metald: the Wrale device daemon.
//!
//! Placeholder in the workspace foundation: the daemon (hardware sampling, the safety
//! engine, the local API and the edge sync agent) is built by the metald issue (#5).

fn main() {
    eprintln!("metald is not built yet: see issue #5 (metald: the device daemon)");
    std::process::exit(2);
}
