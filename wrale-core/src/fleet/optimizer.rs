//! Fleet: `optimizer` (being built).
