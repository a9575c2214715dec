//! Fleet: `rollout` (being built).
