//! Typed methods of [`Client`](crate::Client), one module per route group.

mod access;
pub(crate) mod analysis;
mod config;
mod devices;
mod observe;
mod orchestrate;
