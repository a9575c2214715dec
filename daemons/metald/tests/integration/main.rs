//! metald integration tests: the real server on 127.0.0.1:0 with the `sim` backend,
//! driven over HTTP and WebSocket; real child processes for workloads; and the
//! real binary for signals, systemd notification and the command line.

mod api;
mod binary;
mod cgroup;
mod commands;
mod enroll;
mod fleet;
mod persist;
mod reload;
mod reported;
mod safemode;
mod safety;
mod sim_clock;
mod sim_reboot;
mod stream;
mod support;
mod workloads;
