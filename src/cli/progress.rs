//! Progress of long work: an `indicatif` bar on stderr when stdout is a terminal, plain log lines
//! (`tracing` at info, on stderr) otherwise — so scripts and CI logs get lines, people get a bar.

use indicatif::{ProgressBar, ProgressStyle};
use std::io::IsTerminal;

/// One unit of work with `len` steps.
#[derive(Debug)]
pub struct Progress {
    bar: Option<ProgressBar>,
    what: String,
}

impl Progress {
    pub fn new(what: &str, len: u64) -> Self {
        let bar = std::io::stdout().is_terminal().then(|| {
            let bar = ProgressBar::new(len);
            if let Ok(style) = ProgressStyle::with_template("{spinner} {msg} [{bar:30}] {pos}/{len}") {
                bar.set_style(style.progress_chars("=> "));
            }
            bar.set_message(what.to_owned());
            bar
        });
        Self { bar, what: what.to_owned() }
    }

    /// One step done; `item` names it (never a secret value).
    pub fn step(&self, item: &str) {
        match &self.bar {
            Some(bar) => {
                bar.set_message(format!("{}: {item}", self.what));
                bar.inc(1);
            }
            None => tracing::info!("{}: {item}", self.what),
        }
    }

    pub fn finish(self) {
        if let Some(bar) = self.bar {
            bar.finish_and_clear();
        }
    }
}
