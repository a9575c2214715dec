//! systemd's notify protocol, written directly: datagrams to the unix socket named
//! by `NOTIFY_SOCKET` (a path, or an abstract name starting with `@`).
//!
//! metald sends `READY=1` once it serves and has a first sample, `WATCHDOG=1` only
//! while the sampling loop's heartbeat is fresh (so systemd restarts a daemon whose
//! loop hangs even if its HTTP side still answers), `RELOADING=1`/`READY=1` around a
//! config reload and `STOPPING=1` on the way out.

use std::io;
use std::os::unix::net::{SocketAddr, UnixDatagram};
use std::time::Duration;

/// A connection to the service manager, if there is one.
#[derive(Debug)]
pub struct Notifier {
    socket: UnixDatagram,
    addr: SocketAddr,
    watchdog: Option<Duration>,
}

impl Notifier {
    /// From `NOTIFY_SOCKET`, `WATCHDOG_USEC` and `WATCHDOG_PID` in the process
    /// environment. `None` when not started by systemd with `Type=notify`.
    pub fn from_env() -> io::Result<Option<Notifier>> {
        let get = |k: &str| std::env::var(k).ok();
        Self::from_vars(
            get("NOTIFY_SOCKET").as_deref(),
            get("WATCHDOG_USEC").as_deref(),
            get("WATCHDOG_PID").as_deref(),
            std::process::id(),
        )
    }

    /// From explicit values (for tests and for [`Notifier::from_env`]).
    pub fn from_vars(
        socket: Option<&str>,
        watchdog_usec: Option<&str>,
        watchdog_pid: Option<&str>,
        my_pid: u32,
    ) -> io::Result<Option<Notifier>> {
        let Some(path) = socket.filter(|s| !s.is_empty()) else {
            return Ok(None);
        };
        let addr = if let Some(name) = path.strip_prefix('@') {
            abstract_addr(name)?
        } else {
            SocketAddr::from_pathname(path)?
        };
        let pid_ok = watchdog_pid
            .map(|p| p.trim().parse::<u32>().is_ok_and(|p| p == my_pid))
            .unwrap_or(true);
        let watchdog = watchdog_usec
            .and_then(|u| u.trim().parse::<u64>().ok())
            .filter(|u| *u > 0 && pid_ok)
            .map(Duration::from_micros);
        Ok(Some(Notifier {
            socket: UnixDatagram::unbound()?,
            addr,
            watchdog,
        }))
    }

    /// The watchdog timeout systemd expects pings within, if enabled.
    pub fn watchdog(&self) -> Option<Duration> {
        self.watchdog
    }

    /// Sends one notification (`READY=1`, `WATCHDOG=1`, ...; several lines allowed).
    pub fn notify(&self, state: &str) -> io::Result<()> {
        self.socket.send_to_addr(state.as_bytes(), &self.addr)?;
        Ok(())
    }
}

#[cfg(target_os = "linux")]
fn abstract_addr(name: &str) -> io::Result<SocketAddr> {
    use std::os::linux::net::SocketAddrExt;
    SocketAddr::from_abstract_name(name.as_bytes())
}

#[cfg(not(target_os = "linux"))]
fn abstract_addr(_name: &str) -> io::Result<SocketAddr> {
    Err(io::Error::new(
        io::ErrorKind::Unsupported,
        "abstract NOTIFY_SOCKET names exist only on Linux",
    ))
}

/// Whether the sampling loop counts as alive: it beat within `max(3 x interval, 2 s)`.
pub fn heartbeat_fresh(age: Option<Duration>, interval: Duration) -> bool {
    let limit = (interval * 3).max(Duration::from_secs(2));
    age.is_some_and(|a| a <= limit)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_socket_means_no_notifier() {
        assert!(Notifier::from_vars(None, None, None, 1).unwrap().is_none());
        assert!(
            Notifier::from_vars(Some(""), None, None, 1)
                .unwrap()
                .is_none()
        );
    }

    #[test]
    fn sends_datagrams_to_a_path_socket() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("notify.sock");
        let server = UnixDatagram::bind(&path).unwrap();
        let n = Notifier::from_vars(path.to_str(), Some("4000000"), None, 7)
            .unwrap()
            .unwrap();
        assert_eq!(n.watchdog(), Some(Duration::from_secs(4)));
        n.notify("READY=1\nSTATUS=sampling").unwrap();
        let mut buf = [0u8; 64];
        let len = server.recv(&mut buf).unwrap();
        assert_eq!(&buf[..len], b"READY=1\nSTATUS=sampling");
    }

    #[test]
    fn sends_datagrams_to_an_abstract_socket() {
        let name = format!("metald-test-{}", std::process::id());
        let server = UnixDatagram::bind_addr(&abstract_addr(&name).unwrap()).unwrap();
        let n = Notifier::from_vars(Some(&format!("@{name}")), None, None, 7)
            .unwrap()
            .unwrap();
        assert_eq!(n.watchdog(), None);
        n.notify("WATCHDOG=1").unwrap();
        let mut buf = [0u8; 16];
        let len = server.recv(&mut buf).unwrap();
        assert_eq!(&buf[..len], b"WATCHDOG=1");
    }

    #[test]
    fn watchdog_is_only_for_the_named_pid() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("n.sock");
        let _server = UnixDatagram::bind(&path).unwrap();
        let other = Notifier::from_vars(path.to_str(), Some("1000"), Some("99"), 7)
            .unwrap()
            .unwrap();
        assert_eq!(other.watchdog(), None);
        let mine = Notifier::from_vars(path.to_str(), Some("1000"), Some("7"), 7)
            .unwrap()
            .unwrap();
        assert_eq!(mine.watchdog(), Some(Duration::from_millis(1)));
    }

    #[test]
    fn heartbeat_freshness() {
        let s = Duration::from_secs(1);
        assert!(!heartbeat_fresh(None, s));
        assert!(heartbeat_fresh(Some(Duration::from_millis(500)), s));
        assert!(heartbeat_fresh(Some(Duration::from_secs(3)), s));
        assert!(!heartbeat_fresh(Some(Duration::from_secs(4)), s));
        assert!(heartbeat_fresh(
            Some(Duration::from_millis(1900)),
            Duration::from_millis(10)
        ));
    }
}
