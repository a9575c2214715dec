//! Printing: aligned tables and key/value blocks for people, JSON for scripts.

use std::fmt::Write as _;

use serde::Serialize;
use serde_json::Value;

use crate::error::{CliError, CliResult};

/// A table with a header row; columns are padded to their widest cell.
#[derive(Debug, Clone, Default)]
pub(crate) struct Table {
    headers: Vec<&'static str>,
    rows: Vec<Vec<String>>,
}

impl Table {
    pub(crate) fn new(headers: &[&'static str]) -> Self {
        Self {
            headers: headers.to_vec(),
            rows: Vec::new(),
        }
    }

    pub(crate) fn row(&mut self, cells: Vec<String>) {
        self.rows.push(cells);
    }

    /// The table as text (one line per row, `\n`-terminated); `empty` alone when
    /// there are no rows.
    pub(crate) fn render(&self, empty: &str) -> String {
        if self.rows.is_empty() {
            return format!("{empty}\n");
        }
        let n = self.headers.len();
        let mut widths: Vec<usize> = self.headers.iter().map(|h| h.chars().count()).collect();
        for row in &self.rows {
            for (i, cell) in row.iter().enumerate().take(n) {
                widths[i] = widths[i].max(cell.chars().count());
            }
        }
        let mut out = String::new();
        let mut line = |cells: &mut dyn Iterator<Item = &str>| {
            let mut s = String::new();
            for (i, cell) in cells.enumerate().take(n) {
                if i + 1 < n {
                    let pad = widths[i] - cell.chars().count();
                    let _ = write!(s, "{cell}{}  ", " ".repeat(pad));
                } else {
                    s.push_str(cell);
                }
            }
            out.push_str(s.trim_end());
            out.push('\n');
        };
        line(&mut self.headers.iter().copied());
        for row in &self.rows {
            line(&mut row.iter().map(String::as_str));
        }
        out
    }
}

/// `key: value` lines with the values aligned.
pub(crate) fn key_values(pairs: &[(&str, String)]) -> String {
    let w = pairs.iter().map(|(k, _)| k.len()).max().unwrap_or(0);
    let mut out = String::new();
    for (k, v) in pairs {
        let _ = writeln!(out, "{k}:{} {v}", " ".repeat(w - k.len()));
    }
    out
}

/// Pretty JSON of anything serializable, newline-terminated.
pub(crate) fn json<T: Serialize + ?Sized>(value: &T) -> CliResult<String> {
    serde_json::to_string_pretty(value)
        .map(|s| s + "\n")
        .map_err(|e| CliError::failure("internal", format!("cannot encode JSON: {e}")))
}

/// One JSON value on one line (JSON lines).
pub(crate) fn json_line<T: Serialize + ?Sized>(value: &T) -> CliResult<String> {
    serde_json::to_string(value)
        .map(|s| s + "\n")
        .map_err(|e| CliError::failure("internal", format!("cannot encode JSON: {e}")))
}

/// A compact one-line rendering of a JSON value for a table cell (strings bare).
pub(crate) fn cell(value: &Value) -> String {
    match value {
        Value::Null => "-".to_owned(),
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// A time for people: RFC 3339 UTC to the second.
pub(crate) fn time(t: wrale_core::Timestamp) -> String {
    humantime::format_rfc3339_seconds(t.to_system()).to_string()
}

/// [`time`], or `-` for nothing.
pub(crate) fn opt_time(t: Option<wrale_core::Timestamp>) -> String {
    t.map(time).unwrap_or_else(|| "-".to_owned())
}

/// `-` for nothing.
pub(crate) fn opt<T: ToString>(v: Option<T>) -> String {
    v.map(|v| v.to_string()).unwrap_or_else(|| "-".to_owned())
}

/// `k=v,k2=v2` for labels.
pub(crate) fn labels(map: &std::collections::BTreeMap<String, String>) -> String {
    if map.is_empty() {
        return "-".to_owned();
    }
    map.iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(",")
}

/// Writes to stdout; a closed pipe (`wrale ... | head`) is not an error.
pub(crate) fn print(text: &str) {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    let _ = out.write_all(text.as_bytes()).and_then(|()| out.flush());
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tables_align_and_trim() {
        let mut t = Table::new(&["ID", "MODEL", "LABELS"]);
        t.row(vec!["pi-1".into(), "pi4b".into(), "role=cam".into()]);
        t.row(vec!["pi-rack1-07".into(), "pi5".into(), "-".into()]);
        assert_eq!(
            t.render("No devices."),
            "ID           MODEL  LABELS\n\
             pi-1         pi4b   role=cam\n\
             pi-rack1-07  pi5    -\n"
        );
        assert_eq!(Table::new(&["ID"]).render("No devices."), "No devices.\n");
    }

    #[test]
    fn unicode_cells_count_characters() {
        let mut t = Table::new(&["A", "B"]);
        t.row(vec!["72 °C".into(), "x".into()]);
        t.row(vec!["1".into(), "y".into()]);
        assert_eq!(t.render(""), "A      B\n72 °C  x\n1      y\n");
    }

    #[test]
    fn key_values_and_cells() {
        assert_eq!(
            key_values(&[("id", "pi-1".into()), ("group", "-".into())]),
            "id:    pi-1\ngroup: -\n"
        );
        assert_eq!(cell(&serde_json::json!("cool")), "cool");
        assert_eq!(cell(&serde_json::json!(65)), "65");
        assert_eq!(cell(&serde_json::json!(null)), "-");
        assert_eq!(cell(&serde_json::json!([1, 2])), "[1,2]");
        let mut m = std::collections::BTreeMap::new();
        assert_eq!(labels(&m), "-");
        m.insert("b".into(), "2".into());
        m.insert("a".into(), "1".into());
        assert_eq!(labels(&m), "a=1,b=2");
        assert_eq!(
            time(wrale_core::Timestamp::from_millis(1_700_000_000_123)),
            "2023-11-14T22:13:20Z"
        );
        assert_eq!(opt_time(None), "-");
        assert_eq!(
            json_line(&serde_json::json!({"a": 1})).unwrap(),
            "{\"a\":1}\n"
        );
    }
}
