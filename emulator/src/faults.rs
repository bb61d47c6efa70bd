//! Injected faults: latency (fixed + jitter), a random 5xx rate, and one-shot faults queued through the
//! control API — a status (e.g. 500/503), a 429 burst with `Retry-After`, or "committed but the response
//! is lost" (the operation is performed, then the connection is dropped without a response).

use rand::Rng;
use serde::{Deserialize, Serialize};
use std::sync::{Mutex, RwLock};
use std::time::Duration;

/// The emulated services faults can target.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Service {
    Devops,
    Audit,
    Entra,
    /// The emulated GitHub Actions secrets API.
    Github,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, rename_all = "camelCase", deny_unknown_fields)]
pub struct FaultSettings {
    pub latency_ms: u64,
    pub jitter_ms: u64,
    /// Probability (0..=1) that a request fails with `fail_status` before it is processed.
    pub fail_rate: f64,
    pub fail_status: u16,
    /// Services the latency and fail rate apply to (all when empty).
    pub services: Vec<Service>,
}

impl Default for FaultSettings {
    fn default() -> Self {
        Self { latency_ms: 0, jitter_ms: 0, fail_rate: 0.0, fail_status: 503, services: Vec::new() }
    }
}

impl FaultSettings {
    pub fn validate(&self) -> Result<(), String> {
        if !(0.0..=1.0).contains(&self.fail_rate) || self.fail_rate.is_nan() {
            return Err(format!("failRate must be between 0 and 1, got {}", self.fail_rate));
        }
        if !(500..=599).contains(&self.fail_status) {
            return Err(format!("failStatus must be a 5xx status, got {}", self.fail_status));
        }
        if self.latency_ms > 600_000 || self.jitter_ms > 600_000 {
            return Err("latencyMs and jitterMs must be at most 600000".into());
        }
        Ok(())
    }

    fn applies(&self, s: Service) -> bool {
        self.services.is_empty() || self.services.contains(&s)
    }
}

/// What a one-shot fault does.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "camelCase")]
pub enum FaultKind {
    /// Answer with this status before processing.
    #[serde(rename_all = "camelCase")]
    Status { status: u16 },
    /// Answer 429 with `Retry-After` before processing.
    #[serde(rename_all = "camelCase")]
    Throttle { retry_after_secs: u64 },
    /// Process the request, then drop the connection without a response.
    LoseResponse,
}

/// A queued one-shot fault: applies to the next `count` matching requests. (`deny_unknown_fields` does
/// not work together with the flattened `kind`.)
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct OnceFault {
    #[serde(flatten)]
    pub kind: FaultKind,
    #[serde(default = "one")]
    pub count: u32,
    #[serde(default)]
    pub service: Option<Service>,
    /// HTTP method to match (any when absent).
    #[serde(default)]
    pub method: Option<String>,
    /// Substring of the path to match, case-insensitive (any when absent).
    #[serde(default)]
    pub path_contains: Option<String>,
}

fn one() -> u32 {
    1
}

impl OnceFault {
    pub fn validate(&self) -> Result<(), String> {
        if let FaultKind::Status { status } = self.kind
            && !(400..=599).contains(&status)
        {
            return Err(format!("status must be 4xx or 5xx, got {status}"));
        }
        if self.count == 0 || self.count > 100_000 {
            return Err("count must be between 1 and 100000".into());
        }
        Ok(())
    }

    fn matches(&self, service: Service, method: &str, path: &str) -> bool {
        self.service.is_none_or(|s| s == service)
            && self.method.as_deref().is_none_or(|m| m.eq_ignore_ascii_case(method))
            && self.path_contains.as_deref().is_none_or(|p| path.to_lowercase().contains(&p.to_lowercase()))
    }
}

#[derive(Debug, Default)]
pub struct Faults {
    settings: RwLock<FaultSettings>,
    queue: Mutex<Vec<OnceFault>>,
}

impl Faults {
    pub fn new(settings: FaultSettings) -> Self {
        Self { settings: RwLock::new(settings), queue: Mutex::default() }
    }

    pub fn settings(&self) -> FaultSettings {
        self.settings.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    pub fn set(&self, s: FaultSettings) {
        *self.settings.write().unwrap_or_else(|p| p.into_inner()) = s;
    }

    pub fn push(&self, f: OnceFault) {
        self.queue.lock().unwrap_or_else(|p| p.into_inner()).push(f);
    }

    pub fn clear(&self) {
        self.queue.lock().unwrap_or_else(|p| p.into_inner()).clear();
        self.set(FaultSettings::default());
    }

    pub fn pending(&self) -> Vec<OnceFault> {
        self.queue.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// The first queued fault matching this request, consuming one of its count.
    pub fn take(&self, service: Service, method: &str, path: &str) -> Option<FaultKind> {
        let mut q = self.queue.lock().unwrap_or_else(|p| p.into_inner());
        let i = q.iter().position(|f| f.matches(service, method, path))?;
        let kind = q[i].kind.clone();
        q[i].count -= 1;
        if q[i].count == 0 {
            q.remove(i);
        }
        Some(kind)
    }

    /// The latency to inject before this request (fixed + uniform jitter).
    pub fn latency(&self, service: Service) -> Duration {
        let s = self.settings.read().unwrap_or_else(|p| p.into_inner());
        if !s.applies(service) || (s.latency_ms == 0 && s.jitter_ms == 0) {
            return Duration::ZERO;
        }
        let jitter = if s.jitter_ms > 0 { rand::rng().random_range(0..=s.jitter_ms) } else { 0 };
        Duration::from_millis(s.latency_ms + jitter)
    }

    /// Whether this request randomly fails, and with which status.
    pub fn roll_failure(&self, service: Service) -> Option<u16> {
        let s = self.settings.read().unwrap_or_else(|p| p.into_inner());
        (s.applies(service) && s.fail_rate > 0.0 && rand::rng().random_bool(s.fail_rate)).then_some(s.fail_status)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn once_faults_match_and_are_consumed() {
        let f = Faults::default();
        f.push(OnceFault {
            kind: FaultKind::LoseResponse,
            count: 2,
            service: Some(Service::Devops),
            method: Some("POST".into()),
            path_contains: Some("/tokens/pats".into()),
        });
        assert_eq!(f.take(Service::Devops, "GET", "/o/_apis/tokens/pats"), None);
        assert_eq!(f.take(Service::Audit, "POST", "/o/_apis/tokens/pats"), None);
        assert_eq!(f.take(Service::Devops, "post", "/o/_apis/Tokens/Pats"), Some(FaultKind::LoseResponse));
        assert_eq!(f.take(Service::Devops, "POST", "/o/_apis/tokens/pats"), Some(FaultKind::LoseResponse));
        assert_eq!(f.take(Service::Devops, "POST", "/o/_apis/tokens/pats"), None);
    }

    #[test]
    fn fail_rate_bounds_and_extremes() {
        assert!(FaultSettings { fail_rate: 1.5, ..Default::default() }.validate().is_err());
        assert!(FaultSettings { fail_status: 404, ..Default::default() }.validate().is_err());
        let f = Faults::new(FaultSettings { fail_rate: 1.0, ..Default::default() });
        assert_eq!(f.roll_failure(Service::Devops), Some(503));
        let f = Faults::new(FaultSettings { fail_rate: 1.0, services: vec![Service::Audit], ..Default::default() });
        assert_eq!(f.roll_failure(Service::Devops), None);
        assert_eq!(Faults::default().latency(Service::Entra), Duration::ZERO);
    }
}
