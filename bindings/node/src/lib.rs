//! The Wrale node binding.
//!
//! Placeholder in the workspace foundation: the binding is built by the bindings
//! issue (#8). It is a workspace member outside `default-members`, so a plain
//! `cargo test` at the root never needs a foreign toolchain.
