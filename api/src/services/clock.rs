//! The time garbage collection reads: last uses, upload times, pins, cutoffs and the
//! deletion queue's due times. The system clock, which tests move forward (retention is
//! about days; no test waits for them).

use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;

#[derive(Debug, Default)]
pub struct Clock {
    /// Seconds added to the system clock.
    offset: AtomicI64,
}

impl Clock {
    /// Unix seconds.
    pub fn now(&self) -> i64 {
        crate::db::now() + self.offset.load(Ordering::Relaxed)
    }

    /// Moves this server's clock forward (tests of retention and expiry).
    pub fn advance(&self, by: Duration) {
        self.offset.fetch_add(whole_secs(by), Ordering::Relaxed);
    }
}

/// A duration as whole seconds to add to Unix times (saturating: "for ever" stays huge).
pub(crate) fn whole_secs(duration: Duration) -> i64 {
    i64::try_from(duration.as_secs()).unwrap_or(i64::MAX)
}
