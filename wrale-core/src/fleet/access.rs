//! Fleet: `access` (being built).
