//! One progress display for long commands: a bar on a terminal, a plain line every 10 s
//! otherwise (logs, CI).

use std::cell::Cell;
use std::io::IsTerminal;
use std::time::{Duration, Instant};

/// Progress of a long loop over `total` items.
pub struct Progress {
    bar: Option<indicatif::ProgressBar>,
    total: Cell<u64>,
    start: Instant,
    last: Cell<Instant>,
}

impl Progress {
    /// A bar only when stderr is a terminal (logs get periodic lines instead).
    pub fn new(total: u64) -> Self {
        let bar = std::io::stderr().is_terminal().then(|| {
            let b = indicatif::ProgressBar::new(total);
            b.set_style(
                indicatif::ProgressStyle::with_template(
                    "{bar:30} {pos}/{len} [{elapsed_precise}<{eta_precise}] {msg}",
                )
                .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
            );
            b
        });
        let now = Instant::now();
        Self {
            bar,
            total: Cell::new(total),
            start: now,
            last: Cell::new(now),
        }
    }

    /// `done` of the total so far, with `msg` (a metric) beside it.
    pub fn update(&self, done: u64, msg: &str) {
        let total = self.total.get();
        match &self.bar {
            Some(b) => {
                b.set_position(done);
                b.set_message(msg.to_string());
            }
            None => {
                if self.last.get().elapsed() >= Duration::from_secs(10) || done == total {
                    self.last.set(Instant::now());
                    let rate = done as f64 / self.start.elapsed().as_secs_f64().max(1e-9);
                    let eta = (total - done.min(total)) as f64 / rate.max(1e-9);
                    eprintln!("{done}/{total}  {msg}  ({rate:.1}/s, ETA {eta:.0}s)");
                }
            }
        }
    }

    /// For loops whose length is known only once they run (training epochs).
    pub fn set_total(&self, total: u64) {
        self.total.set(total);
        if let Some(b) = &self.bar {
            b.set_length(total);
        }
    }

    /// A line above the bar (or on its own without one).
    pub fn println(&self, s: &str) {
        match &self.bar {
            Some(b) => b.println(s),
            None => eprintln!("{s}"),
        }
    }

    /// A warning that does not tear the bar.
    pub fn warn(&self, msg: &str) {
        self.println(&format!("warning: {msg}"));
    }

    /// Clears the bar so the report that follows stands alone.
    pub fn finish(&self) {
        if let Some(b) = &self.bar {
            b.finish_and_clear();
        }
    }
}
