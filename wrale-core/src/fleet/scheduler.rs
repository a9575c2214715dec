//! Fleet: `scheduler` (being built).
