//! How results reach the terminal: aligned tables and key/value blocks for people, pretty
//! JSON of the exact API objects for scripts (`-o json`), and time formatting.

use std::fmt::Write as _;
use std::io::Write as _;

use diego_model::clock::NANOS_PER_SEC;
use diego_model::Timestamp;
use serde::Serialize;

/// `-o/--output`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum OutputFormat {
    /// Aligned columns for people.
    #[default]
    Table,
    /// The API objects as pretty JSON.
    Json,
}

/// Writes `text` and a newline to stdout. A closed pipe (`diego events | head`) ends the
/// process quietly instead of panicking the way `println!` does.
pub fn emit(text: &str) {
    let mut out = std::io::stdout().lock();
    let res = out
        .write_all(text.as_bytes())
        .and_then(|()| out.write_all(b"\n"))
        .and_then(|()| out.flush());
    if let Err(e) = res {
        if e.kind() == std::io::ErrorKind::BrokenPipe {
            std::process::exit(0);
        }
        eprintln!("error: writing to stdout: {e}");
        std::process::exit(1);
    }
}

/// Prints `value` as pretty JSON.
pub fn emit_json<T: Serialize + ?Sized>(value: &T) -> anyhow::Result<()> {
    emit(&serde_json::to_string_pretty(value)?);
    Ok(())
}

/// A table with a header row; columns are as wide as their widest cell.
#[derive(Debug, Clone, Default)]
pub struct Table {
    header: Vec<String>,
    rows: Vec<Vec<String>>,
}

/// Space between columns.
const GAP: &str = "   ";

impl Table {
    pub fn new<I, S>(header: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        Self {
            header: header.into_iter().map(Into::into).collect(),
            rows: Vec::new(),
        }
    }

    pub fn row<I, S>(&mut self, cells: I)
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.rows.push(cells.into_iter().map(Into::into).collect());
    }

    pub fn is_empty(&self) -> bool {
        self.rows.is_empty()
    }

    /// The rendered table, lines joined with `\n`, no trailing newline or trailing spaces.
    pub fn render(&self) -> String {
        let cols = std::iter::once(&self.header)
            .chain(&self.rows)
            .map(Vec::len)
            .max()
            .unwrap_or(0);
        let mut widths = vec![0; cols];
        for row in std::iter::once(&self.header).chain(&self.rows) {
            for (i, cell) in row.iter().enumerate() {
                widths[i] = widths[i].max(cell.chars().count());
            }
        }
        let mut out = String::new();
        for (n, row) in std::iter::once(&self.header).chain(&self.rows).enumerate() {
            if n > 0 {
                out.push('\n');
            }
            let mut line = String::new();
            for (i, width) in widths.iter().enumerate() {
                let cell = row.get(i).map(String::as_str).unwrap_or("");
                if i > 0 {
                    line.push_str(GAP);
                }
                line.push_str(cell);
                line.extend(std::iter::repeat_n(' ', width - cell.chars().count()));
            }
            out.push_str(line.trim_end());
        }
        out
    }
}

/// Renders `label: value` lines with the values aligned.
pub fn key_values(pairs: &[(&str, String)]) -> String {
    let width = pairs.iter().map(|(k, _)| k.len() + 1).max().unwrap_or(0);
    let mut out = String::new();
    for (i, (k, v)) in pairs.iter().enumerate() {
        if i > 0 {
            out.push('\n');
        }
        let label = format!("{k}:");
        let _ = write!(out, "{label:<width$}  {v}");
    }
    out
}

/// `-` for an empty value, so table columns never look shifted.
pub fn dash(s: &str) -> String {
    if s.is_empty() {
        "-".to_string()
    } else {
        s.to_string()
    }
}

/// Truncates to `max` characters, marking the cut with `…`.
pub fn ellipsize(s: &str, max: usize) -> String {
    let s = s.lines().next().unwrap_or("");
    if s.chars().count() <= max {
        return s.to_string();
    }
    let mut out: String = s.chars().take(max.saturating_sub(1)).collect();
    out.push('…');
    out
}

/// Now, as Unix ns.
pub fn now() -> Timestamp {
    use diego_model::Clock;
    diego_model::SystemClock.now()
}

/// A compact duration: `45s`, `3m12s`, `2h5m`, `4d3h`.
pub fn human_duration(nanos: i64) -> String {
    let secs = nanos.max(0) / NANOS_PER_SEC;
    let (d, h, m, s) = (secs / 86_400, secs / 3600 % 24, secs / 60 % 60, secs % 60);
    if d > 0 {
        format!("{d}d{h}h")
    } else if h > 0 {
        format!("{h}h{m}m")
    } else if m > 0 {
        format!("{m}m{s}s")
    } else {
        format!("{s}s")
    }
}

/// How long ago `t` was, relative to `now`; `-` when unset.
pub fn age(t: Timestamp, now: Timestamp) -> String {
    if t <= 0 {
        "-".to_string()
    } else {
        human_duration(now - t)
    }
}

/// When `t` lapses, relative to `now`: `in 25s`, `expired 3s ago`, or `never` for 0.
pub fn expiry(t: Timestamp, now: Timestamp) -> String {
    if t <= 0 {
        "never".to_string()
    } else if t >= now {
        format!("in {}", human_duration(t - now))
    } else {
        format!("expired {} ago", human_duration(now - t))
    }
}

/// `2024-05-01T12:00:03Z (5m ago)`; `-` when unset.
pub fn timestamp(t: Timestamp, now: Timestamp) -> String {
    if t <= 0 {
        return "-".to_string();
    }
    format!("{} ({} ago)", rfc3339(t), human_duration(now - t))
}

/// UTC, second precision, without a date library.
pub fn rfc3339(t: Timestamp) -> String {
    let secs = t.div_euclid(NANOS_PER_SEC);
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    let (y, mo, d) = civil_from_days(days);
    format!(
        "{y:04}-{mo:02}-{d:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem / 60 % 60,
        rem % 60
    )
}

/// UTC with milliseconds: `2026-12-07T00:35:11.123Z`.
pub fn rfc3339_millis(t: Timestamp) -> String {
    let seconds = rfc3339(t);
    let millis = t.rem_euclid(NANOS_PER_SEC) / 1_000_000;
    format!("{}.{millis:03}Z", seconds.trim_end_matches('Z'))
}

/// Days since 1970-01-01 → (year, month, day) in the proleptic Gregorian calendar
/// (Howard Hinnant's algorithm).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tables_align_columns_and_trim_trailing_space() {
        let mut t = Table::new(["GUID", "STATE", "CELL"]);
        t.row(["a", "PENDING", "-"]);
        t.row(["long-guid", "RUNNING", "cell-1"]);
        assert_eq!(
            t.render(),
            "GUID        STATE     CELL\n\
             a           PENDING   -\n\
             long-guid   RUNNING   cell-1"
        );
    }

    #[test]
    fn tables_count_characters_not_bytes_and_tolerate_short_rows() {
        let mut t = Table::new(["K", "V"]);
        t.row(["é", "1"]);
        t.row(["xy"]);
        assert_eq!(t.render(), "K    V\né    1\nxy");
    }

    #[test]
    fn key_values_align() {
        let s = key_values(&[("guid", "t1".into()), ("state", "PENDING".into())]);
        assert_eq!(s, "guid:   t1\nstate:  PENDING");
    }

    #[test]
    fn durations() {
        assert_eq!(human_duration(0), "0s");
        assert_eq!(human_duration(45 * NANOS_PER_SEC), "45s");
        assert_eq!(human_duration(192 * NANOS_PER_SEC), "3m12s");
        assert_eq!(human_duration((2 * 3600 + 5 * 60) * NANOS_PER_SEC), "2h5m");
        assert_eq!(human_duration((4 * 86_400 + 3 * 3600) * NANOS_PER_SEC), "4d3h");
        assert_eq!(expiry(0, 5), "never");
        assert_eq!(expiry(30 * NANOS_PER_SEC, 5 * NANOS_PER_SEC), "in 25s");
        assert_eq!(expiry(NANOS_PER_SEC, 4 * NANOS_PER_SEC), "expired 3s ago");
        assert_eq!(age(0, 5), "-");
    }

    #[test]
    fn formats_utc_timestamps() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(951_782_400 * NANOS_PER_SEC), "2000-02-29T00:00:00Z");
        assert_eq!(
            rfc3339(1_714_564_803 * NANOS_PER_SEC + 999),
            "2024-05-01T12:00:03Z"
        );
    }

    #[test]
    fn ellipsize_cuts_long_and_multi_line_text() {
        assert_eq!(ellipsize("short", 10), "short");
        assert_eq!(ellipsize("abcdefghijk", 5), "abcd…");
        assert_eq!(ellipsize("line one\nline two", 20), "line one");
    }
}
