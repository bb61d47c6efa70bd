//! The emulator's virtual clock, shared by every emulated service (Azure DevOps, Entra, Key Vault, Event
//! Grid). It runs at real speed from an offset that the control API can move forward, so expiry,
//! retention and refresh-token lifetimes can be tested in seconds.

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use time::{Duration, OffsetDateTime};

#[derive(Debug, Clone, Default)]
pub struct VirtualClock {
    offset_ms: Arc<AtomicI64>,
}

impl VirtualClock {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn now(&self) -> OffsetDateTime {
        OffsetDateTime::now_utc() + Duration::milliseconds(self.offset_ms.load(Ordering::SeqCst))
    }

    /// Moves time forward (never backward: a negative duration is ignored).
    pub fn advance(&self, by: Duration) {
        if by.is_positive() {
            self.offset_ms.fetch_add(by.whole_milliseconds() as i64, Ordering::SeqCst);
        }
    }

    /// Sets the virtual time; refuses to move backward. Returns the new time.
    pub fn set(&self, at: OffsetDateTime) -> OffsetDateTime {
        let now = self.now();
        if at > now {
            // Round up to whole milliseconds so the clock never lands just before `at`.
            let gap = at - now;
            let ms = gap.whole_milliseconds() + i128::from(gap.subsec_nanoseconds() % 1_000_000 != 0);
            self.advance(Duration::milliseconds(ms as i64));
        }
        self.now()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn set_never_lands_before_the_target_and_never_goes_back() {
        let c = VirtualClock::new();
        let target = time::macros::datetime!(2099-01-01 00:00 UTC);
        for _ in 0..50 {
            assert!(c.set(target) >= target);
        }
        let later = c.now();
        c.set(target - Duration::days(1));
        assert!(c.now() >= later);
    }
}
