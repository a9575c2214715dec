//! # wrale-sync
//!
//! Device twins on automerge, sync sessions, transports and stores.
//!
//! This crate is an empty placeholder in the workspace foundation; the twin, the
//! sync session, transports and stores are filled in by the wrale-sync issue (#4).
