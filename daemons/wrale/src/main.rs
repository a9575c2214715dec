//! The `wrale` CLI. Being built in issue #6.

fn main() {
    eprintln!("wrale: not built yet (issue #6)");
    std::process::exit(2);
}
