//! wrale-core integration tests: one binary (STYLE.md 2.9), modules per area.

mod engine;
mod fleet_analyzer;
mod fleet_rollout;
mod fleet_scheduler;
mod helpers;
mod properties;
