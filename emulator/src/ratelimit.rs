//! Azure DevOps rate limiting per identity: a TSTU budget over a sliding window (5 minutes by default)
//! on the virtual clock. Under the limit requests pass with `X-RateLimit-*` headers (and `Retry-After`
//! once usage nears the limit, even on a 200); past it they are delayed (a few ms per TSTU over, at
//! most 30 s, `X-RateLimit-Delay`); past the blocking threshold they get 429 with `Retry-After`.

use serde::{Deserialize, Serialize};
use std::collections::{HashMap, VecDeque};
use std::sync::{Mutex, RwLock};
use std::time::Duration as StdDuration;
use time::{Duration, OffsetDateTime};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, rename_all = "camelCase", deny_unknown_fields)]
pub struct RateLimitSettings {
    pub enabled: bool,
    /// TSTUs allowed per window before delays start (Azure DevOps: 200).
    pub limit_tstu: f64,
    /// Usage at which requests are blocked with 429.
    pub block_tstu: f64,
    pub window_secs: u64,
    /// Cost of one request.
    pub tstu_per_request: f64,
    /// Delay per TSTU over the limit, in milliseconds.
    pub delay_ms_per_tstu: u64,
    pub max_delay_ms: u64,
    /// Fraction of the limit from which `Retry-After` is sent on successful responses.
    pub warn_fraction: f64,
}

impl Default for RateLimitSettings {
    fn default() -> Self {
        Self {
            enabled: false,
            limit_tstu: 200.0,
            block_tstu: 300.0,
            window_secs: 300,
            tstu_per_request: 1.0,
            delay_ms_per_tstu: 100,
            max_delay_ms: 30_000,
            warn_fraction: 0.8,
        }
    }
}

impl RateLimitSettings {
    pub fn validate(&self) -> Result<(), String> {
        let finite = [self.limit_tstu, self.block_tstu, self.tstu_per_request, self.warn_fraction];
        if finite.iter().any(|v| !v.is_finite() || *v < 0.0) {
            return Err("TSTU figures must be finite and not negative".into());
        }
        if self.limit_tstu <= 0.0 || self.block_tstu < self.limit_tstu {
            return Err("limitTstu must be positive and blockTstu at least limitTstu".into());
        }
        if self.window_secs == 0 || self.window_secs > 86_400 {
            return Err("windowSecs must be between 1 and 86400".into());
        }
        if self.warn_fraction > 1.0 {
            return Err("warnFraction must be at most 1".into());
        }
        Ok(())
    }
}

/// Headers and outcome for one request.
#[derive(Debug, Clone, PartialEq)]
pub struct Verdict {
    /// Block with 429 when set.
    pub blocked: bool,
    /// Delay before processing.
    pub delay: StdDuration,
    pub headers: Vec<(&'static str, String)>,
}

#[derive(Debug, Default)]
pub struct RateLimiter {
    settings: RwLock<RateLimitSettings>,
    usage: Mutex<HashMap<String, VecDeque<(OffsetDateTime, f64)>>>,
}

impl RateLimiter {
    pub fn new(settings: RateLimitSettings) -> Self {
        Self { settings: RwLock::new(settings), usage: Mutex::default() }
    }

    pub fn settings(&self) -> RateLimitSettings {
        self.settings.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    pub fn set(&self, s: RateLimitSettings) {
        *self.settings.write().unwrap_or_else(|p| p.into_inner()) = s;
        self.usage.lock().unwrap_or_else(|p| p.into_inner()).clear();
    }

    /// Charges one request to `identity` at `now`; `None` when rate limiting is off.
    /// Whether rate limiting is on (callers skip working out the identity when it is off).
    pub fn enabled(&self) -> bool {
        self.settings.read().unwrap_or_else(|p| p.into_inner()).enabled
    }

    pub fn check(&self, identity: &str, now: OffsetDateTime) -> Option<Verdict> {
        let s = self.settings.read().unwrap_or_else(|p| p.into_inner()).clone();
        if !s.enabled {
            return None;
        }
        let window = Duration::seconds(s.window_secs as i64);
        let mut all = self.usage.lock().unwrap_or_else(|p| p.into_inner());
        let events = all.entry(identity.to_string()).or_default();
        while events.front().is_some_and(|(t, _)| *t <= now - window) {
            events.pop_front();
        }
        let used: f64 = events.iter().map(|(_, c)| c).sum();
        let after = used + s.tstu_per_request;
        let mut headers =
            vec![("X-RateLimit-Resource", "Core".to_string()), ("X-RateLimit-Limit", fmt_tstu(s.limit_tstu))];
        if after > s.block_tstu {
            // Seconds until enough usage leaves the window to fall back under the limit.
            let mut remaining = used;
            let mut until = now;
            for (t, c) in events.iter() {
                if remaining + s.tstu_per_request <= s.limit_tstu {
                    break;
                }
                remaining -= c;
                until = *t + window;
            }
            let retry = ((until - now).whole_seconds()).max(1);
            headers.push(("X-RateLimit-Remaining", "0".into()));
            headers.push(("X-RateLimit-Reset", reset(events, window).to_string()));
            headers.push(("Retry-After", retry.to_string()));
            return Some(Verdict { blocked: true, delay: StdDuration::ZERO, headers });
        }
        events.push_back((now, s.tstu_per_request));
        let reset_at = reset(events, window);
        if after > s.limit_tstu {
            let over = after - s.limit_tstu;
            let ms = ((over * s.delay_ms_per_tstu as f64) as u64).min(s.max_delay_ms);
            let delay = StdDuration::from_millis(ms);
            headers.push(("X-RateLimit-Remaining", "0".into()));
            headers.push(("X-RateLimit-Reset", reset_at.to_string()));
            headers.push(("X-RateLimit-Delay", format!("{:.3}", delay.as_secs_f64())));
            headers.push(("Retry-After", retry_after(events, window, now).to_string()));
            return Some(Verdict { blocked: false, delay, headers });
        }
        headers.push(("X-RateLimit-Remaining", fmt_tstu(s.limit_tstu - after)));
        headers.push(("X-RateLimit-Reset", reset_at.to_string()));
        if after >= s.warn_fraction * s.limit_tstu {
            headers.push(("Retry-After", retry_after(events, window, now).to_string()));
        }
        Some(Verdict { blocked: false, delay: StdDuration::ZERO, headers })
    }
}

fn fmt_tstu(v: f64) -> String {
    if v.fract() == 0.0 { format!("{}", v as i64) } else { format!("{v:.2}") }
}

/// Unix time at which usage returns to zero if activity stops.
fn reset(events: &VecDeque<(OffsetDateTime, f64)>, window: Duration) -> i64 {
    events.back().map(|(t, _)| (*t + window).unix_timestamp()).unwrap_or(0)
}

/// Seconds until the oldest charged request leaves the window.
fn retry_after(events: &VecDeque<(OffsetDateTime, f64)>, window: Duration, now: OffsetDateTime) -> i64 {
    events.front().map(|(t, _)| (*t + window - now).whole_seconds().max(1)).unwrap_or(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limiter() -> RateLimiter {
        RateLimiter::new(RateLimitSettings {
            enabled: true,
            limit_tstu: 10.0,
            block_tstu: 12.0,
            delay_ms_per_tstu: 5,
            ..Default::default()
        })
    }

    fn header<'a>(v: &'a Verdict, name: &str) -> Option<&'a str> {
        v.headers.iter().find(|(k, _)| *k == name).map(|(_, v)| v.as_str())
    }

    #[test]
    fn passes_then_warns_then_delays_then_blocks_then_recovers() {
        let l = limiter();
        let t0 = time::macros::datetime!(2026-01-01 00:00 UTC);
        let first = l.check("u", t0).unwrap();
        assert_eq!(header(&first, "X-RateLimit-Remaining"), Some("9"));
        assert!(header(&first, "Retry-After").is_none());
        for _ in 0..7 {
            l.check("u", t0).unwrap();
        }
        let warn = l.check("u", t0).unwrap(); // 9 of 10
        assert!(!warn.blocked);
        assert!(header(&warn, "Retry-After").is_some());
        l.check("u", t0).unwrap(); // 10
        let delayed = l.check("u", t0).unwrap(); // 11
        assert_eq!(delayed.delay, StdDuration::from_millis(5));
        assert_eq!(header(&delayed, "X-RateLimit-Delay"), Some("0.005"));
        l.check("u", t0).unwrap(); // 12
        let blocked = l.check("u", t0).unwrap();
        assert!(blocked.blocked);
        assert_eq!(header(&blocked, "Retry-After"), Some("300"));
        // Another identity is unaffected; after the window the first recovers.
        assert!(!l.check("v", t0).unwrap().blocked);
        assert!(!l.check("u", t0 + Duration::seconds(301)).unwrap().blocked);
    }

    #[test]
    fn disabled_by_default() {
        assert!(RateLimiter::default().check("u", OffsetDateTime::now_utc()).is_none());
    }
}
