//! `wrale events`: follows the live stream until Ctrl-C.

use wrale_client::{Event, EventFilter};

use super::Ctx;
use crate::args::EventsArgs;
use crate::error::CliResult;
use crate::output;

/// One human line: `time kind device summary`.
pub(crate) fn event_line(e: &Event) -> String {
    let device = e.device.as_ref().map(|d| d.as_str()).unwrap_or("-");
    let data = match &e.data {
        serde_json::Value::Null => String::new(),
        serde_json::Value::Object(m) if m.is_empty() => String::new(),
        other => other.to_string(),
    };
    format!(
        "{} {:<7} {} {}",
        output::time(e.time),
        e.kind.as_str(),
        device,
        data
    )
    .trim_end()
    .to_owned()
        + "\n"
}

pub(crate) async fn run(ctx: &Ctx, a: EventsArgs) -> CliResult {
    let filter = EventFilter {
        device: a.device,
        group: a.group,
        kinds: a.kinds,
    };
    let mut stream = ctx.client.events(&filter).await?;
    // On stderr, so it never mixes with the (JSON) data on stdout.
    eprintln!(
        "Following events from {} (Ctrl-C to stop).",
        ctx.client.base_url()
    );
    let mut seen = 0u64;
    let ctrl_c = tokio::signal::ctrl_c();
    tokio::pin!(ctrl_c);
    loop {
        if a.count.is_some_and(|n| seen >= n) {
            break;
        }
        let next = tokio::select! {
            _ = &mut ctrl_c => break,
            next = stream.next_event() => next,
        };
        match next {
            None => {
                stream.close().await;
                return Err(crate::error::CliError::failure(
                    "transport",
                    "fleetd closed the event stream",
                ));
            }
            Some(Ok(e)) => {
                seen += 1;
                let text = if ctx.json {
                    output::json_line(&e)?
                } else {
                    event_line(&e)
                };
                output::print(&text);
            }
            Some(Err(e)) if e.code() == "decode" => eprintln!("wrale: skipped {e}"),
            Some(Err(e)) => {
                stream.close().await;
                return Err(e.into());
            }
        }
    }
    stream.close().await;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn event_lines() {
        let e: Event = serde_json::from_str(
            r#"{"kind":"alert","time":"2026-11-22T10:00:00Z","device":"pi-1","data":{"code":"fan_stall"}}"#,
        )
        .unwrap();
        assert_eq!(
            event_line(&e),
            "2026-11-22T10:00:00Z alert   pi-1 {\"code\":\"fan_stall\"}\n"
        );
        let e: Event =
            serde_json::from_str(r#"{"kind":"audit","time":"2026-11-22T10:00:00Z"}"#).unwrap();
        assert_eq!(event_line(&e), "2026-11-22T10:00:00Z audit   -\n");
    }
}
