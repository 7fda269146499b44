//! Progress on stderr, drawn by `indicatif`: only when stderr is a terminal, or when forced.

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use std::borrow::Cow;
use std::io::IsTerminal;
use std::time::{Duration, Instant};

/// How often the bar redraws on its own (spinner, rate, ETA).
const TICK: Duration = Duration::from_millis(250);
/// At most this many draws a second, however often the counts change.
const HZ: u8 = 4;

/// A bar on stderr of length `len` (None: a spinner); with `force`, drawn even when stderr is
/// not a terminal (a log file).
fn bar(force: bool, len: Option<u64>, template: &str, prefix: &str) -> Option<ProgressBar> {
    let target = if std::io::stderr().is_terminal() {
        ProgressDrawTarget::stderr_with_hz(HZ)
    } else if force {
        // indicatif hides a non-terminal stderr; draw through the terminal writer anyway.
        ProgressDrawTarget::term_like_with_hz(Box::new(console::Term::stderr()), HZ)
    } else {
        return None;
    };
    // The style is set before anything is drawn, so the first frame has it too.
    let b = ProgressBar::with_draw_target(len, target)
        .with_style(style(template))
        .with_prefix(prefix.to_string());
    b.enable_steady_tick(TICK);
    Some(b)
}

/// The bar on screen, if any; cleared by [`Shown::clear`] and on drop.
#[derive(Default)]
struct Shown(Option<ProgressBar>);

impl Shown {
    fn clear(&mut self) {
        if let Some(b) = self.0.take() {
            b.finish_and_clear();
        }
    }
}

impl Drop for Shown {
    fn drop(&mut self) {
        self.clear();
    }
}

fn style(template: &str) -> ProgressStyle {
    // The templates are constants; a typo is caught by the first run of any command.
    ProgressStyle::with_template(template).unwrap_or_else(|_| ProgressStyle::default_spinner())
}

/// Progress of a pipeline: bytes, commands and rate; with a known total a bar and ETA,
/// otherwise a spinner. [`Progress::finish`] clears it; a later update draws it again (a
/// receiver clears it to print `At subvol NAME` between streams).
pub struct Progress {
    label: &'static str,
    total: Option<u64>,
    force: bool,
    start: Instant,
    bar: Shown,
}

impl Progress {
    /// A progress display labelled `label`; `total` is the input size when known (a file).
    #[must_use]
    pub fn new(label: &'static str, total: Option<u64>, force: bool) -> Progress {
        let mut p = Progress {
            label,
            total: total.filter(|&t| t > 0),
            force,
            start: Instant::now(),
            bar: Shown::default(),
        };
        p.bar.0 = p.draw(0);
        p
    }

    fn draw(&self, bytes: u64) -> Option<ProgressBar> {
        let template = if self.total.is_some() {
            "{prefix} [{wide_bar}] {binary_bytes}/{binary_total_bytes} {binary_bytes_per_sec} \
             ETA {eta} {msg}"
        } else {
            "{spinner} {prefix} {binary_bytes} {binary_bytes_per_sec} {msg}"
        };
        // Elapsed time and position carry over a redraw after finish, so the rate stays right.
        bar(self.force, self.total, template, self.label)
            .map(|b| b.with_elapsed(self.start.elapsed()).with_position(bytes))
    }

    /// Updates the counts (drawn at most [`HZ`] times a second).
    pub fn update(&mut self, bytes: u64, commands: u64) {
        if self.bar.0.is_none() {
            self.bar.0 = self.draw(bytes);
        }
        if let Some(b) = &self.bar.0 {
            b.set_position(bytes);
            b.set_message(Cow::Owned(format!("{commands} commands")));
        }
    }

    /// Updates the counts from a pipeline's totals (the [`subvol::pipeline::Hook`] callback).
    pub fn totals(&mut self, t: &subvol::pipeline::Totals) {
        self.update(t.bytes, t.commands);
    }

    /// Clears the display (until the next update).
    pub fn finish(&mut self) {
        self.bar.clear();
    }
}

/// A status line (a spinner and a message) for steps that have no byte count: publish and
/// pull. Cleared by [`Status::clear`] (before printing a line of its own) and on drop.
pub struct Status {
    force: bool,
    bar: Shown,
}

impl Status {
    /// A status line, drawn when stderr is a terminal or with `force`.
    #[must_use]
    pub fn new(force: bool) -> Status {
        Status {
            force,
            bar: Shown::default(),
        }
    }

    /// Shows `text()` (computed only when a line is drawn), control characters escaped: the
    /// text carries names from repositories and streams.
    pub fn show(&mut self, text: impl FnOnce() -> String) {
        if self.bar.0.is_none() {
            self.bar.0 = bar(self.force, None, "{spinner} {msg}", "");
        }
        if let Some(b) = &self.bar.0 {
            b.set_message(subvol::util::escape(text().as_bytes()));
        }
    }

    /// Removes the line (the next [`Status::show`] draws a new one).
    pub fn clear(&mut self) {
        self.bar.clear();
    }
}

/// One bar over a whole pull plan: bytes applied of the plan's bytes, with what was fetched
/// (and at what rate), what an earlier pull left in the cache, and an ETA. Cleared by
/// [`PlanBar::clear`] (before a line of its own is printed) and on drop; a later update draws
/// it again.
pub struct PlanBar {
    force: bool,
    bar: Shown,
    /// When the first byte was fetched, and the count then.
    fetch_start: Option<(Instant, u64)>,
}

impl PlanBar {
    /// A bar, drawn when stderr is a terminal or with `force`.
    #[must_use]
    pub fn new(force: bool) -> PlanBar {
        PlanBar {
            force,
            bar: Shown::default(),
            fetch_start: None,
        }
    }

    /// Shows `p`.
    pub fn update(&mut self, p: &subvol::mirror::FlowProgress) {
        use subvol::util::human_size as human;
        let (t0, f0) = *self.fetch_start.get_or_insert((Instant::now(), p.fetched));
        if self.bar.0.is_none() {
            self.bar.0 = bar(
                self.force,
                Some(p.total.max(1)),
                "{prefix} [{bar:24}] {msg}",
                "pull",
            );
        }
        let Some(b) = &self.bar.0 else { return };
        let secs = t0.elapsed().as_secs_f64();
        let rate = if secs > 0.5 {
            p.fetched.saturating_sub(f0) as f64 / secs
        } else {
            0.0
        };
        let to_fetch = p.total.saturating_sub(p.fetched.saturating_add(p.reused));
        let eta = if to_fetch == 0 {
            String::new()
        } else if rate > 0.0 {
            format!(" ETA {:.0}s", to_fetch as f64 / rate)
        } else {
            " ETA ?".to_string()
        };
        let reused = if p.reused > 0 {
            format!(" (+{} reused)", human(p.reused))
        } else {
            String::new()
        };
        // Applied by an interrupted pull and taken up from its checkpoint: not this run's work.
        let resumed = if p.resumed > 0 {
            format!(" ({} of it resumed)", human(p.resumed))
        } else {
            String::new()
        };
        b.set_length(p.total.max(1));
        b.set_position(p.applied.min(p.total));
        b.set_message(format!(
            "{}/{} fetched {}{reused} {}/s, applied {}{resumed} of {}{eta}",
            p.step,
            p.steps,
            human(p.fetched),
            human(rate as u64),
            human(p.applied),
            human(p.total)
        ));
    }

    /// Removes the bar (the next [`PlanBar::update`] draws a new one).
    pub fn clear(&mut self) {
        self.bar.clear();
    }
}
