//! wrale-core integration tests: one binary (STYLE.md 2.9), modules per area.

mod engine;
mod helpers;
mod properties;
