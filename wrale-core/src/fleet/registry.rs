//! Fleet: `registry` (being built).
