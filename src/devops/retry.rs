//! When to try a request again, and how long to wait first (pure: decisions are functions of the outcome).
//!
//! Rules (after Microsoft's own client stack, which retries 429/502/503/504 with exponential backoff, at most
//! five times, and never when `X-VSS-HostOfflineError` is present):
//! - a request that never left (connection refused, DNS, TLS) is safe to send again, whatever it is;
//! - 429 means the service refused it before doing anything: safe to send again after `Retry-After`;
//! - 5xx, timeouts and lost answers are retried only for **idempotent** calls (List, Get, Update — a PUT of
//!   absolute values — and Revoke). For Create they make the outcome [`Decision::Uncertain`]: the caller
//!   lists and reconciles by display name (see `pats::reconcile_create`) instead of minting a duplicate.

use crate::backoff::Backoff;
use std::time::Duration;

/// Whether sending a request twice has the same effect as sending it once.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Idempotency {
    Idempotent,
    /// Create: a second send can mint a second secret.
    NonIdempotent,
}

/// How the retry loop behaves.
#[derive(Debug, Clone)]
pub struct RetryPolicy {
    /// Retries after the first attempt.
    pub max_retries: u32,
    /// The wait before each retry: doubling from 1 s up to 30 s, half of it random ("equal jitter"), so
    /// bursts spread out.
    pub backoff: Backoff,
    /// Longest `Retry-After` patrol is willing to sit through inside one call; beyond it the call fails
    /// with `Throttled` and the run moves on.
    pub max_retry_after: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            max_retries: 5,
            backoff: Backoff::exponential(Duration::from_secs(1), Duration::from_secs(30)),
            max_retry_after: Duration::from_secs(120),
        }
    }
}

impl RetryPolicy {
    /// Small waits for tests against the emulator.
    pub fn fast() -> Self {
        Self {
            max_retries: 5,
            backoff: Backoff::exponential(Duration::from_millis(10), Duration::from_millis(100)),
            max_retry_after: Duration::from_secs(10),
        }
    }
}

/// What happened to one attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// The request never left this machine (connect/DNS/TLS failure).
    NotSent,
    /// Sent, but no answer came (timeout, connection reset, body cut off).
    Lost,
    /// An HTTP status arrived. `host_offline`: `X-VSS-HostOfflineError` was present.
    Status { status: u16, host_offline: bool },
}

/// What to do next.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// Send it again after waiting (the rate limiter adds any `Retry-After`).
    Retry(Duration),
    /// Stop; the answer (or error) stands.
    Stop,
    /// Stop; a non-idempotent call may or may not have taken effect.
    Uncertain,
}

/// The decision after attempt number `attempt` (0-based) ended in `outcome`.
pub fn decide(policy: &RetryPolicy, idem: Idempotency, attempt: u32, outcome: Outcome, jitter: f64) -> Decision {
    let may_retry = attempt < policy.max_retries;
    let backoff = policy.backoff.delay(attempt, jitter);
    match outcome {
        Outcome::NotSent if may_retry => Decision::Retry(backoff),
        Outcome::NotSent => Decision::Stop,
        Outcome::Lost => match idem {
            Idempotency::NonIdempotent => Decision::Uncertain,
            Idempotency::Idempotent if may_retry => Decision::Retry(backoff),
            Idempotency::Idempotent => Decision::Stop,
        },
        Outcome::Status { host_offline: true, .. } => Decision::Stop,
        // Throttled before anything happened: the limiter supplies Retry-After; backoff covers a bare 429.
        Outcome::Status { status: 429, .. } if may_retry => Decision::Retry(backoff),
        Outcome::Status { status: 429, .. } => Decision::Stop,
        Outcome::Status { status, .. } if status >= 500 => match idem {
            Idempotency::NonIdempotent => Decision::Uncertain,
            Idempotency::Idempotent if may_retry && matches!(status, 500 | 502 | 503 | 504) => Decision::Retry(backoff),
            Idempotency::Idempotent => Decision::Stop,
        },
        Outcome::Status { .. } => Decision::Stop,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use Idempotency::*;

    #[test]
    fn backoff_grows_caps_and_jitters() {
        let p = RetryPolicy::default().backoff;
        assert_eq!(p.delay(0, 0.0), Duration::from_millis(500));
        assert_eq!(p.delay(0, 1.0), Duration::from_secs(1));
        assert_eq!(p.delay(3, 0.0), Duration::from_secs(4));
        assert_eq!(p.delay(30, 1.0), Duration::from_secs(30));
        for a in 0..10 {
            let d = p.delay_random(a);
            assert!(d <= p.max && d >= p.delay(a, 0.0));
        }
    }

    #[test]
    fn create_is_never_blindly_retried() {
        let p = RetryPolicy::default();
        let s = |status| Outcome::Status { status, host_offline: false };
        assert_eq!(decide(&p, NonIdempotent, 0, Outcome::Lost, 0.5), Decision::Uncertain);
        for status in [500, 502, 503, 504] {
            assert_eq!(decide(&p, NonIdempotent, 0, s(status), 0.5), Decision::Uncertain);
            assert!(matches!(decide(&p, Idempotent, 0, s(status), 0.5), Decision::Retry(_)));
        }
        // Not sent, or refused with 429 before anything happened: safe for Create too.
        assert!(matches!(decide(&p, NonIdempotent, 0, Outcome::NotSent, 0.5), Decision::Retry(_)));
        assert!(matches!(decide(&p, NonIdempotent, 0, s(429), 0.5), Decision::Retry(_)));
    }

    #[test]
    fn stops_on_client_errors_offline_hosts_and_exhaustion() {
        let p = RetryPolicy::default();
        for status in [200, 204, 400, 401, 403, 404] {
            assert_eq!(decide(&p, Idempotent, 0, Outcome::Status { status, host_offline: false }, 0.5), Decision::Stop);
        }
        assert_eq!(decide(&p, Idempotent, 0, Outcome::Status { status: 503, host_offline: true }, 0.5), Decision::Stop);
        assert_eq!(
            decide(&p, Idempotent, 5, Outcome::Status { status: 503, host_offline: false }, 0.5),
            Decision::Stop
        );
        assert_eq!(decide(&p, Idempotent, 5, Outcome::Lost, 0.5), Decision::Stop);
        assert_eq!(
            decide(&p, Idempotent, 0, Outcome::Status { status: 501, host_offline: false }, 0.5),
            Decision::Stop
        );
    }
}
