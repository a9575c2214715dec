//! The `wrale` CLI: a thin frontend over `wrale-client` (see docs/cli.md).

fn main() -> std::process::ExitCode {
    wrale_cli::main()
}
