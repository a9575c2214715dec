//! Shared helpers for Wrale's criterion benchmarks (see `benches/`) and the
//! fleet-scale load harness (added by the fleetd issue).
