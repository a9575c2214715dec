//! Fleet: `telemetry` (being built).
