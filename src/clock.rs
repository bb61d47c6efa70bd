//! Time. Everything in patrol that asks "what time is it?" asks a [`Clock`].
//!
//! The Functions host stamps every invocation with `Metadata.sys.UtcNow`; under `patrol-emulator` (tests and
//! `patrol demo`) that is the emulator's *virtual* time. [`Clock::observe`] lets the handler align patrol's
//! clock with the host's, so expiry arithmetic, token refresh and journal timestamps all agree with the
//! world patrol is talking to. In production the two agree to within milliseconds and nothing changes.

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use time::{Duration, OffsetDateTime};

/// A shareable clock: system time plus an offset that can be moved (never by more than asked).
#[derive(Debug, Clone, Default)]
pub struct Clock {
    offset_ms: Arc<AtomicI64>,
}

impl Clock {
    /// The system clock.
    pub fn system() -> Self {
        Self::default()
    }

    /// A clock that reads `at` right now and then runs at real speed.
    pub fn starting_at(at: OffsetDateTime) -> Self {
        let c = Self::default();
        c.set(at);
        c
    }

    pub fn now(&self) -> OffsetDateTime {
        OffsetDateTime::now_utc() + Duration::milliseconds(self.offset_ms.load(Ordering::Relaxed))
    }

    /// Sets the current time to `at` (the offset from system time is kept from now on).
    pub fn set(&self, at: OffsetDateTime) {
        let offset = (at - OffsetDateTime::now_utc()).whole_milliseconds();
        self.offset_ms.store(offset.clamp(i64::MIN as i128, i64::MAX as i128) as i64, Ordering::Relaxed);
    }

    /// Aligns with a time observed from the host (an invocation's `UtcNow`) when it differs by more than
    /// two seconds, which only happens under an emulator's virtual clock. Returns whether it moved.
    pub fn observe(&self, host_now: OffsetDateTime) -> bool {
        if (host_now - self.now()).abs() > Duration::seconds(2) {
            self.set(host_now);
            true
        } else {
            false
        }
    }

    pub fn advance(&self, by: Duration) {
        self.offset_ms.fetch_add(by.whole_milliseconds() as i64, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn set_and_observe() {
        let c = Clock::system();
        let t = time::macros::datetime!(2027-01-01 00:00 UTC);
        assert!(c.observe(t));
        assert!((c.now() - t).abs() < Duration::seconds(1));
        assert!(!c.observe(c.now()));
        c.advance(Duration::days(1));
        assert!((c.now() - t - Duration::days(1)).abs() < Duration::seconds(1));
    }
}
