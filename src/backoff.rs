//! The one backoff rule every retry loop in patrol uses: exponential growth from a first wait, capped,
//! with an optional random share ("jitter") so that callers failing together do not retry together.
//!
//! Used by the Azure DevOps client (`devops::retry`), notification delivery (`notify::deliver`), the
//! new-PAT test (`devops::probe`), the blob state store (`state::blob`) and consumer deliveries across runs
//! (`consumers::state`). Pure: the random
//! draw is an argument ([`Backoff::delay`]) or taken from the thread RNG ([`Backoff::delay_random`]).

use std::time::Duration;

/// `first × factorⁿ` before retry `n` (0-based), at most `max`; `jitter` of it is random.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Backoff {
    /// The wait before the first retry (before jitter).
    pub first: Duration,
    /// Growth per retry (2: doubling).
    pub factor: u32,
    /// The longest wait.
    pub max: Duration,
    /// The share of each wait that is random, in `[0, 1]`: the wait lies in `[(1 − jitter) × d, d]`
    /// where `d = min(first × factorⁿ, max)`. 0.5 is "equal jitter" (half fixed, half random).
    pub jitter: f64,
}

impl Backoff {
    /// Doubling from `first` up to `max`, with equal jitter (half of each wait random).
    pub const fn exponential(first: Duration, max: Duration) -> Self {
        Self { first, factor: 2, max, jitter: 0.5 }
    }

    /// The same with another growth factor.
    pub const fn with_factor(mut self, factor: u32) -> Self {
        self.factor = factor;
        self
    }

    /// The same with another random share (`0.0`: deterministic waits).
    pub const fn with_jitter(mut self, jitter: f64) -> Self {
        self.jitter = jitter;
        self
    }

    /// The ceiling of the wait before retry `retry` (0-based): `min(first × factor^retry, max)`.
    pub fn ceiling(&self, retry: u32) -> Duration {
        let mut d = self.first;
        for _ in 0..retry {
            if d >= self.max {
                break;
            }
            d = d.saturating_mul(self.factor.max(1));
        }
        d.min(self.max)
    }

    /// The wait before retry `retry` (0-based) for a random draw `random` in `[0, 1]`: 0 gives the
    /// shortest wait `(1 − jitter) × ceiling`, 1 the ceiling.
    pub fn delay(&self, retry: u32, random: f64) -> Duration {
        let ceiling = self.ceiling(retry);
        let jitter = self.jitter.clamp(0.0, 1.0);
        ceiling.mul_f64(1.0 - jitter + jitter * random.clamp(0.0, 1.0))
    }

    /// [`Self::delay`] with a draw from the thread RNG.
    pub fn delay_random(&self, retry: u32) -> Duration {
        if self.jitter <= 0.0 {
            return self.ceiling(retry);
        }
        self.delay(retry, rand::random::<f64>())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grows_by_its_factor_and_stops_at_the_cap() {
        let b = Backoff::exponential(Duration::from_secs(1), Duration::from_secs(30)).with_jitter(0.0);
        let waits: Vec<u64> = (0..7).map(|n| b.delay(n, 0.3).as_secs()).collect();
        assert_eq!(waits, [1, 2, 4, 8, 16, 30, 30]);
        assert_eq!(b.delay(u32::MAX, 0.0), Duration::from_secs(30), "no overflow on huge retry counts");
        let by4 = Backoff::exponential(Duration::from_millis(200), Duration::from_secs(10)).with_factor(4);
        assert_eq!(by4.with_jitter(0.0).delay(1, 0.0), Duration::from_millis(800));
    }

    #[test]
    fn jitter_takes_a_share_of_each_wait_at_random() {
        let b = Backoff::exponential(Duration::from_secs(1), Duration::from_secs(30));
        assert_eq!(b.delay(0, 0.0), Duration::from_millis(500));
        assert_eq!(b.delay(0, 1.0), Duration::from_secs(1));
        assert_eq!(b.delay(3, 0.0), Duration::from_secs(4));
        for n in 0..10 {
            let d = b.delay_random(n);
            assert!(d >= b.delay(n, 0.0) && d <= b.ceiling(n), "{n}: {d:?}");
        }
        let fifth = b.with_jitter(0.2);
        assert_eq!(fifth.delay(1, 0.0), Duration::from_millis(1600));
        let d = fifth.delay_random(40);
        assert!(d >= Duration::from_secs(24) && d <= Duration::from_secs(30), "{d:?}");
    }
}
