//! One rate limiter per identity, fed by Azure DevOps' own signals.
//!
//! Azure DevOps meters each identity in TSTUs over a sliding five-minute window: first it delays
//! requests, then it refuses them with 429. Its headers say so before it happens — `Retry-After` (also on
//! a **200** near the limit), `X-RateLimit-Remaining` / `-Limit` / `-Reset` (Unix seconds) / `-Delay` /
//! `-Resource`. The limiter reads them after every answer ([`RateSignals::from_headers`]) and makes the
//! *next* request of the same identity wait ([`RateLimiter::acquire`]):
//! - `Retry-After` (or, on 429, the longer of it and `X-RateLimit-Delay`): wait that long, whatever the status;
//! - a low `X-RateLimit-Remaining` (under 10 % of the limit): spread what remains until `X-RateLimit-Reset`;
//! - 429 without any header: the retry policy's backoff applies instead.

use http::HeaderMap;
use std::sync::Mutex;
use std::time::Duration;
use time::OffsetDateTime;
use tokio::time::Instant;

/// The longest pause pacing (not `Retry-After`) inserts between two calls.
pub const MAX_PACING: Duration = Duration::from_secs(10);

/// What one answer said about the identity's budget.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RateSignals {
    pub status: u16,
    pub retry_after: Option<Duration>,
    pub delay: Option<Duration>,
    pub limit: Option<f64>,
    pub remaining: Option<f64>,
    /// Unix seconds when usage would be back to zero.
    pub reset: Option<i64>,
    /// Shown to people; not parsed.
    pub resource: Option<String>,
}

impl RateSignals {
    pub fn from_headers(status: u16, headers: &HeaderMap, now: OffsetDateTime) -> Self {
        let text = |name: &str| headers.get(name).and_then(|v| v.to_str().ok()).map(str::trim);
        let secs = |name: &str| text(name).and_then(|s| s.parse::<f64>().ok()).filter(|v| v.is_finite() && *v >= 0.0);
        let retry_after = text("retry-after").and_then(|s| parse_retry_after(s, now));
        Self {
            status,
            retry_after,
            delay: secs("x-ratelimit-delay").map(Duration::from_secs_f64),
            limit: secs("x-ratelimit-limit"),
            remaining: secs("x-ratelimit-remaining"),
            reset: text("x-ratelimit-reset").and_then(|s| s.parse::<f64>().ok()).map(|v| v as i64),
            resource: text("x-ratelimit-resource").map(str::to_owned),
        }
    }

    /// How long the identity should wait before its next call, given these signals (pure).
    pub fn pause(&self, now: OffsetDateTime) -> Option<Duration> {
        let mut wait = self.retry_after;
        if self.status == 429 {
            wait = match (wait, self.delay) {
                (Some(a), Some(b)) => Some(a.max(b)),
                (a, b) => a.or(b),
            };
        }
        if wait.is_some() {
            return wait;
        }
        // Pace when the remaining budget is low: spread it over the time until reset.
        if let (Some(remaining), Some(reset)) = (self.remaining, self.reset) {
            let low = self.limit.map(|l| remaining < l * 0.1).unwrap_or(remaining < 1.0);
            let until_reset = reset - now.unix_timestamp();
            if low && until_reset > 0 {
                let per_call = until_reset as f64 / remaining.max(1.0);
                return Some(Duration::from_secs_f64(per_call).min(MAX_PACING));
            }
        }
        None
    }
}

/// `Retry-After` is delta-seconds (RFC 9110 also allows an HTTP date).
fn parse_retry_after(s: &str, now: OffsetDateTime) -> Option<Duration> {
    if let Ok(secs) = s.parse::<f64>() {
        return (secs.is_finite() && secs >= 0.0).then(|| Duration::from_secs_f64(secs));
    }
    let at = crate::timestamp::parse_http_date(s)?;
    let d = at - now;
    Some(if d.is_positive() { Duration::from_secs_f64(d.as_seconds_f64()) } else { Duration::ZERO })
}

#[derive(Debug, Default)]
struct State {
    not_before: Option<Instant>,
    last: Option<RateSignals>,
    throttled: u64,
    /// Responses observed (every attempt) and time spent waiting in [`RateLimiter::acquire`], for metrics.
    responses: u64,
    waited: Duration,
}

/// The limiter of one identity; shared by every client acting as it.
#[derive(Debug, Default)]
pub struct RateLimiter {
    state: Mutex<State>,
}

impl RateLimiter {
    pub fn new() -> Self {
        Self::default()
    }

    /// Records what an answer said; the next [`RateLimiter::acquire`] honours it.
    pub fn observe(&self, signals: RateSignals, now: OffsetDateTime) {
        let pause = signals.pause(now);
        let mut st = self.state.lock().unwrap_or_else(|p| p.into_inner());
        st.responses += 1;
        if signals.status == 429 {
            st.throttled += 1;
        }
        if let Some(p) = pause {
            let until = Instant::now() + p;
            st.not_before = Some(st.not_before.map_or(until, |nb| nb.max(until)));
            if !p.is_zero() {
                tracing::info!(
                    wait_ms = p.as_millis() as u64,
                    status = signals.status,
                    resource = signals.resource.as_deref().unwrap_or(""),
                    "Azure DevOps asked this identity to slow down"
                );
            }
        }
        st.last = Some(signals);
    }

    /// How long the next call would have to wait right now.
    pub fn wait_time(&self) -> Duration {
        let st = self.state.lock().unwrap_or_else(|p| p.into_inner());
        st.not_before.map(|nb| nb.saturating_duration_since(Instant::now())).unwrap_or_default()
    }

    /// Waits until this identity may call again, but at most `max` in total (a `Retry-After` of minutes on a
    /// 2xx is advice; a run with a time budget goes on and meets a 429 if the advice was real). Returns how
    /// long it waited.
    pub async fn acquire(&self, max: Duration) -> Duration {
        let start = Instant::now();
        loop {
            let left = max.saturating_sub(start.elapsed());
            let wait = self.wait_time().min(left);
            if wait.is_zero() {
                let waited = start.elapsed();
                if !waited.is_zero() {
                    let mut st = self.state.lock().unwrap_or_else(|p| p.into_inner());
                    st.waited += waited;
                }
                return waited;
            }
            tokio::time::sleep(wait).await;
        }
    }

    /// Responses, 429s and time waited so far (`patrol.devops.*` metrics).
    pub fn counters(&self) -> crate::metrics::CallCounters {
        let st = self.state.lock().unwrap_or_else(|p| p.into_inner());
        crate::metrics::CallCounters {
            requests: st.responses,
            throttled: st.throttled,
            waited_seconds: st.waited.as_secs_f64(),
        }
    }

    /// The last signals seen (for status output) and how many 429s this identity got.
    pub fn snapshot(&self) -> (Option<RateSignals>, u64) {
        let st = self.state.lock().unwrap_or_else(|p| p.into_inner());
        (st.last.clone(), st.throttled)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.insert(*k, HeaderValue::from_str(v).unwrap());
        }
        h
    }

    const NOW: OffsetDateTime = time::macros::datetime!(2026-11-01 12:00 UTC);

    #[test]
    fn retry_after_counts_on_200_too() {
        let s = RateSignals::from_headers(200, &headers(&[("Retry-After", "3")]), NOW);
        assert_eq!(s.pause(NOW), Some(Duration::from_secs(3)));
    }

    #[test]
    fn on_429_the_longer_of_retry_after_and_delay() {
        let h = headers(&[("Retry-After", "2"), ("X-RateLimit-Delay", "4.500"), ("X-RateLimit-Resource", "Core")]);
        let s = RateSignals::from_headers(429, &h, NOW);
        assert_eq!(s.pause(NOW), Some(Duration::from_millis(4500)));
        assert_eq!(s.resource.as_deref(), Some("Core"));
        // Without 429 the delay (already served by the server) is not added again.
        let s = RateSignals::from_headers(200, &headers(&[("X-RateLimit-Delay", "4.5")]), NOW);
        assert_eq!(s.pause(NOW), None);
    }

    #[test]
    fn low_remaining_paces_until_reset() {
        let reset = (NOW.unix_timestamp() + 20).to_string();
        let h = headers(&[("X-RateLimit-Limit", "200"), ("X-RateLimit-Remaining", "4"), ("X-RateLimit-Reset", &reset)]);
        let s = RateSignals::from_headers(200, &h, NOW);
        assert_eq!(s.pause(NOW), Some(Duration::from_secs(5)));
        let h =
            headers(&[("X-RateLimit-Limit", "200"), ("X-RateLimit-Remaining", "150"), ("X-RateLimit-Reset", &reset)]);
        assert_eq!(RateSignals::from_headers(200, &h, NOW).pause(NOW), None);
        let far = (NOW.unix_timestamp() + 600).to_string();
        let h = headers(&[("X-RateLimit-Limit", "200"), ("X-RateLimit-Remaining", "0"), ("X-RateLimit-Reset", &far)]);
        assert_eq!(RateSignals::from_headers(200, &h, NOW).pause(NOW), Some(MAX_PACING));
    }

    #[test]
    fn garbage_headers_are_ignored() {
        let h = headers(&[("Retry-After", "soon"), ("X-RateLimit-Remaining", "-3"), ("X-RateLimit-Delay", "NaN")]);
        let s = RateSignals::from_headers(200, &h, NOW);
        assert_eq!(s, RateSignals { status: 200, ..Default::default() });
        let h = headers(&[("Retry-After", "Sun, 01 Nov 2026 12:00:07 +0000")]);
        assert_eq!(RateSignals::from_headers(200, &h, NOW).retry_after, Some(Duration::from_secs(7)));
    }

    #[tokio::test]
    async fn limiter_holds_the_next_call() {
        let l = RateLimiter::new();
        l.observe(
            RateSignals { status: 200, retry_after: Some(Duration::from_millis(300)), ..Default::default() },
            NOW,
        );
        let start = Instant::now();
        l.acquire(Duration::from_secs(5)).await;
        assert!(start.elapsed() >= Duration::from_millis(300));
        let second = Instant::now();
        l.acquire(Duration::from_secs(5)).await;
        assert!(second.elapsed() < Duration::from_millis(100));
        // Long advice is capped.
        l.observe(RateSignals { status: 200, retry_after: Some(Duration::from_secs(300)), ..Default::default() }, NOW);
        let third = Instant::now();
        l.acquire(Duration::from_millis(200)).await;
        assert!(third.elapsed() < Duration::from_secs(2));
        l.observe(RateSignals { status: 429, ..Default::default() }, NOW);
        assert_eq!(l.snapshot().1, 1);
    }
}
