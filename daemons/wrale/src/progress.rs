//! Progress on stderr for long operations, only when stderr is a terminal.

use std::future::Future;
use std::io::{IsTerminal, Write};
use std::time::{Duration, Instant};

/// Runs `fut`, showing `what` with a spinner and the elapsed seconds on stderr
/// while it runs (when stderr is a terminal); the line is erased at the end.
pub(crate) async fn with_progress<F: Future>(what: &str, fut: F) -> F::Output {
    if !std::io::stderr().is_terminal() {
        return fut.await;
    }
    const FRAMES: [char; 4] = ['|', '/', '-', '\\'];
    let start = Instant::now();
    let mut tick = tokio::time::interval(Duration::from_millis(200));
    tokio::pin!(fut);
    let mut i = 0usize;
    let out = loop {
        tokio::select! {
            out = &mut fut => break out,
            _ = tick.tick() => {
                let secs = start.elapsed().as_secs();
                let mut err = std::io::stderr().lock();
                let _ = write!(err, "\r{} {what} ({secs}s)", FRAMES[i % FRAMES.len()]);
                let _ = err.flush();
                i += 1;
            }
        }
    };
    let mut err = std::io::stderr().lock();
    let _ = write!(err, "\r\x1b[2K");
    let _ = err.flush();
    out
}
