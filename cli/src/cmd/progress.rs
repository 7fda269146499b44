//! A one-line progress display on stderr (only when it is a terminal, or when forced).

use std::io::{IsTerminal, Write};
use std::time::{Duration, Instant};

/// Rate-limited progress line: bytes, commands, rate, and with a known total, percent and ETA.
pub struct Progress {
    enabled: bool,
    start: Instant,
    last: Instant,
    total: Option<u64>,
    label: &'static str,
    drawn: bool,
}

fn human(n: f64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = n;
    let mut u = 0;
    while v >= 1024.0 && u + 1 < UNITS.len() {
        v /= 1024.0;
        u += 1;
    }
    format!("{v:.1} {}", UNITS[u])
}

impl Progress {
    /// A progress line labelled `label`; `total` is the input size when known (a file).
    #[must_use]
    pub fn new(label: &'static str, total: Option<u64>, force: bool) -> Progress {
        let now = Instant::now();
        Progress {
            enabled: force || std::io::stderr().is_terminal(),
            start: now,
            last: now,
            total,
            label,
            drawn: false,
        }
    }

    /// Updates the line (at most 4 times a second).
    pub fn update(&mut self, bytes: u64, commands: u64) {
        if !self.enabled || self.last.elapsed() < Duration::from_millis(250) {
            return;
        }
        self.last = Instant::now();
        let secs = self.start.elapsed().as_secs_f64().max(1e-3);
        let rate = bytes as f64 / secs;
        let mut line = format!(
            "\r{}: {} {} commands {}/s",
            self.label,
            human(bytes as f64),
            commands,
            human(rate)
        );
        if let Some(total) = self.total.filter(|&t| t > 0) {
            let pct = (bytes as f64 * 100.0 / total as f64).min(100.0);
            let eta = if rate > 0.0 {
                (total.saturating_sub(bytes)) as f64 / rate
            } else {
                0.0
            };
            line.push_str(&format!(" {pct:.0}% ETA {:.0}s", eta));
        }
        line.push_str("\x1b[K");
        let _ = std::io::stderr().write_all(line.as_bytes());
        self.drawn = true;
    }

    /// Updates the line from a pipeline's totals (the [`subvol::pipeline::Hook`] callback).
    pub fn totals(&mut self, t: &subvol::pipeline::Totals) {
        self.update(t.bytes, t.commands);
    }

    /// Clears the line.
    pub fn finish(&mut self) {
        if self.drawn {
            let _ = std::io::stderr().write_all(b"\r\x1b[K");
            self.drawn = false;
        }
    }
}

impl Drop for Progress {
    fn drop(&mut self) {
        self.finish();
    }
}
