//! Fleet: `analyzer` (being built).
