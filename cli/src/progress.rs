//! What a push shows while it runs: on a terminal, one bar with paths, bytes sent and the
//! rate; otherwise (CI logs, pipes) one plain line per path pushed.

use std::io::IsTerminal;
use std::sync::atomic::{AtomicU64, Ordering};

use indicatif::{HumanBytes, ProgressBar, ProgressStyle};

pub struct Progress {
    /// `None` when stderr is not a terminal.
    bar: Option<ProgressBar>,
    sent: AtomicU64,
}

impl Progress {
    pub fn new(paths: u64) -> Self {
        let bar = std::io::stderr().is_terminal().then(|| {
            let bar = ProgressBar::new(paths);
            bar.set_style(
                ProgressStyle::with_template("{spinner} [{elapsed_precise}] {pos}/{len} paths, {msg}").expect("a valid template"),
            );
            bar.enable_steady_tick(std::time::Duration::from_millis(200));
            bar
        });
        Self { bar, sent: AtomicU64::new(0) }
    }

    fn redraw(&self) {
        if let Some(bar) = &self.bar {
            let sent = self.sent.load(Ordering::Relaxed);
            let rate = sent as f64 / bar.elapsed().as_secs_f64().max(0.001);
            bar.set_message(format!("{} sent, {}/s", HumanBytes(sent), HumanBytes(rate as u64)));
        }
    }

    /// `bytes` more of some NAR reached the server.
    pub fn sent(&self, bytes: u64) {
        self.sent.fetch_add(bytes, Ordering::Relaxed);
        self.redraw();
    }

    /// A path is in the cache.
    pub fn path_done(&self, path: &str) {
        match &self.bar {
            Some(bar) => {
                bar.inc(1);
                self.redraw();
            }
            None => println!("pushed {path}"),
        }
    }

    pub fn finish(&self) {
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
        }
    }
}
