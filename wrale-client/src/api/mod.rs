//! Typed methods of [`Client`](crate::Client), one module per route group.

mod access;
mod config;
mod devices;
mod observe;
mod orchestrate;
