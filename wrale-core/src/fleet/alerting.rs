//! Fleet: `alerting` (being built).
