//! # wrale-client
//!
//! A typed, async client of fleetd's REST and WebSocket API (docs/fleet-api.md).
//! The `wrale` CLI and the Python, Node and uniffi bindings all use it; it holds
//! no CLI or binding concerns.
//!
//! - [`Client`]: base URL plus bearer token; one method per route
//!   ([`login`](Client::login), [`list_devices`](Client::list_devices),
//!   [`put_config`](Client::put_config), [`send_command`](Client::send_command), ...).
//! - [`models`]: the request and response bodies, reusing wrale-core's
//!   [`DeviceId`](models::DeviceId), [`GroupId`](models::GroupId),
//!   [`Location`](models::Location), [`Command`](models::Command) and
//!   [`Timestamp`](models::Timestamp).
//! - [`Error`]: every failure, with a stable snake_case [`code`](Error::code)
//!   (the server's own code for API errors) for bindings to map to exceptions.
//! - [`Client::events`]: the live event stream as a [`futures_util::Stream`]
//!   that stops when dropped.
//!
//! Needs a tokio runtime (the HTTP client's and the event reader's tasks run on
//! it). `https://` and `wss://` use rustls (ring) and trust the system roots, or
//! only a given CA file ([`Client::with_ca_file`], [`ClientOptions::ca_file`]).
//!
//! ```no_run
//! # async fn demo() -> wrale_client::Result<()> {
//! use wrale_client::{Client, models::DeviceFilter};
//!
//! let client = Client::new("http://127.0.0.1:8600", None)?;
//! client.login("admin", "secret").await?;
//! let page = client.list_devices(&DeviceFilter::new().label("role", "cam")).await?;
//! for d in page.items {
//!     println!("{} {}", d.id, d.model);
//! }
//! # Ok(()) }
//! ```

mod api;
mod client;
mod error;
pub mod events;
pub mod models;

pub use client::{Client, ClientOptions};
pub use error::{Error, Result};
pub use events::{Event, EventFilter, EventKind, EventStream};
