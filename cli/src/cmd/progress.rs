//! Progress on stderr, drawn by `indicatif`: only when stderr is a terminal, or when forced.

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use std::borrow::Cow;
use std::io::IsTerminal;
use std::time::Duration;

/// How often the bar redraws on its own (spinner, rate, ETA) and at most on updates.
const TICK: Duration = Duration::from_millis(250);
const HZ: u8 = 4;

/// A bar on stderr: with `force`, drawn even when stderr is not a terminal (a log file).
fn bar(force: bool) -> Option<ProgressBar> {
    let target = if std::io::stderr().is_terminal() {
        ProgressDrawTarget::stderr_with_hz(HZ)
    } else if force {
        // indicatif hides a non-terminal stderr; draw through the terminal writer anyway.
        ProgressDrawTarget::term_like_with_hz(Box::new(console::Term::stderr()), HZ)
    } else {
        return None;
    };
    Some(ProgressBar::with_draw_target(None, target))
}

fn style(template: &str) -> ProgressStyle {
    // The templates are constants; a typo is caught by the first run of any command.
    ProgressStyle::with_template(template).unwrap_or_else(|_| ProgressStyle::default_spinner())
}

/// Progress of a pipeline: bytes, commands and rate; with a known total a bar, percent and
/// ETA, otherwise a spinner. Cleared on [`Progress::finish`] and on drop.
pub struct Progress {
    bar: Option<ProgressBar>,
}

impl Progress {
    /// A progress display labelled `label`; `total` is the input size when known (a file).
    #[must_use]
    pub fn new(label: &'static str, total: Option<u64>, force: bool) -> Progress {
        let bar = bar(force).map(|b| {
            let b = match total.filter(|&t| t > 0) {
                Some(t) => {
                    b.set_length(t);
                    b.with_style(style(
                        "{prefix} [{wide_bar}] {binary_bytes}/{binary_total_bytes} \
                         {binary_bytes_per_sec} ETA {eta} {msg}",
                    ))
                }
                None => b.with_style(style(
                    "{spinner} {prefix} {binary_bytes} {binary_bytes_per_sec} {msg}",
                )),
            }
            .with_prefix(label);
            b.enable_steady_tick(TICK);
            b
        });
        Progress { bar }
    }

    /// Updates the counts (drawn at most [`HZ`] times a second).
    pub fn update(&mut self, bytes: u64, commands: u64) {
        if let Some(b) = &self.bar {
            b.set_position(bytes);
            b.set_message(Cow::Owned(format!("{commands} commands")));
        }
    }

    /// Updates the counts from a pipeline's totals (the [`subvol::pipeline::Hook`] callback).
    pub fn totals(&mut self, t: &subvol::pipeline::Totals) {
        self.update(t.bytes, t.commands);
    }

    /// Clears the display.
    pub fn finish(&mut self) {
        if let Some(b) = self.bar.take() {
            b.finish_and_clear();
        }
    }
}

impl Drop for Progress {
    fn drop(&mut self) {
        self.finish();
    }
}

/// A status line (a spinner and a message) for steps that have no byte count: publish and
/// pull. Cleared by [`Status::clear`] (before printing a line of its own) and on drop.
pub struct Status {
    force: bool,
    bar: Option<ProgressBar>,
}

impl Status {
    /// A status line, drawn when stderr is a terminal or with `force`.
    #[must_use]
    pub fn new(force: bool) -> Status {
        Status { force, bar: None }
    }

    /// Shows `text()` (computed only when a line is drawn).
    pub fn show(&mut self, text: impl FnOnce() -> String) {
        if self.bar.is_none() {
            self.bar = bar(self.force).map(|b| {
                let b = b.with_style(style("{spinner} {msg}"));
                b.enable_steady_tick(TICK);
                b
            });
        }
        if let Some(b) = &self.bar {
            b.set_message(text());
        }
    }

    /// Removes the line (the next [`Status::show`] draws a new one).
    pub fn clear(&mut self) {
        if let Some(b) = self.bar.take() {
            b.finish_and_clear();
        }
    }
}

impl Drop for Status {
    fn drop(&mut self) {
        self.clear();
    }
}
