//! The shared runtime of one emulator instance: virtual clock, token issuer, the world state behind one
//! lock (with the expiry sweep that runs before every access), settings that the control API can
//! change, faults, rate limiter, minted-secret record and request statistics.

use crate::audit_log::{self, Actor};
use crate::clock::VirtualClock;
use crate::faults::Faults;
use crate::ratelimit::RateLimiter;
use crate::secrets::MintedSecrets;
use crate::state::State;
use crate::tokens::TokenIssuer;
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard, RwLock};
use time::{Duration, OffsetDateTime};
use tokio::sync::Notify;

/// Lifetimes of what Entra issues; the control API can change them.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, rename_all = "camelCase", deny_unknown_fields)]
pub struct Lifetimes {
    pub access_token_secs: u64,
    /// Refresh tokens expire after this much inactivity (Entra: 90 days).
    pub refresh_token_secs: u64,
    pub device_code_secs: u64,
}

impl Default for Lifetimes {
    fn default() -> Self {
        Self { access_token_secs: 3600, refresh_token_secs: 90 * 86_400, device_code_secs: 900 }
    }
}

impl Lifetimes {
    pub fn validate(&self) -> Result<(), String> {
        if self.access_token_secs < 60 || self.access_token_secs > 86_400 {
            return Err("accessTokenSecs must be between 60 and 86400".into());
        }
        if self.refresh_token_secs < 60 || self.device_code_secs < 10 {
            return Err("refreshTokenSecs must be at least 60 and deviceCodeSecs at least 10".into());
        }
        Ok(())
    }
}

/// A pending device-code sign-in.
#[derive(Debug, Clone)]
pub struct DeviceCode {
    pub user_code: String,
    pub client_id: String,
    pub resource: String,
    pub scopes: Vec<String>,
    pub offline: bool,
    /// `openid` was requested: the tokens carry an `id_token`.
    pub openid: bool,
    pub expires_at: OffsetDateTime,
    pub status: DeviceStatus,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DeviceStatus {
    Pending,
    Approved(uuid::Uuid),
    Denied,
    Redeemed,
}

#[derive(Debug, Default)]
pub struct Stats {
    pub devops: AtomicU64,
    pub audit: AtomicU64,
    pub entra: AtomicU64,
    pub control: AtomicU64,
    pub github: AtomicU64,
    pub faults_injected: AtomicU64,
    pub responses_lost: AtomicU64,
    pub throttled: AtomicU64,
    pub delayed: AtomicU64,
}

impl Stats {
    pub fn bump(c: &AtomicU64) {
        c.fetch_add(1, Ordering::Relaxed);
    }

    pub fn snapshot(&self) -> serde_json::Value {
        let g = |c: &AtomicU64| c.load(Ordering::Relaxed);
        serde_json::json!({
            "requests": { "devops": g(&self.devops), "audit": g(&self.audit), "entra": g(&self.entra), "control": g(&self.control), "github": g(&self.github) },
            "faultsInjected": g(&self.faults_injected),
            "responsesLost": g(&self.responses_lost),
            "throttled": g(&self.throttled),
            "delayed": g(&self.delayed),
        })
    }
}

pub struct Ctx {
    pub clock: VirtualClock,
    pub tokens: TokenIssuer,
    state: Mutex<State>,
    pub lifetimes: RwLock<Lifetimes>,
    pub faults: Faults,
    pub limiter: RateLimiter,
    pub secrets: MintedSecrets,
    pub stats: Stats,
    /// Keyed by device code.
    pub device_codes: Mutex<HashMap<String, DeviceCode>>,
    /// Notified after each change so the persister saves.
    pub dirty: Notify,
    issued: AtomicU64,
}

impl Ctx {
    pub fn new(
        clock: VirtualClock,
        tokens: TokenIssuer,
        state: State,
        lifetimes: Lifetimes,
        faults: Faults,
        limiter: RateLimiter,
        secrets: MintedSecrets,
    ) -> Self {
        Self {
            clock,
            tokens,
            state: Mutex::new(state),
            lifetimes: RwLock::new(lifetimes),
            faults,
            limiter,
            secrets,
            stats: Stats::default(),
            device_codes: Mutex::default(),
            dirty: Notify::new(),
            issued: AtomicU64::new(0),
        }
    }

    pub fn now(&self) -> OffsetDateTime {
        self.clock.now()
    }

    pub fn lifetimes(&self) -> Lifetimes {
        self.lifetimes.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Locks the state after recording the expiry of PATs whose `validTo` has passed.
    pub fn state(&self) -> MutexGuard<'_, State> {
        let mut s = self.state.lock().unwrap_or_else(|p| p.into_inner());
        let now = self.clock.now();
        let expired = s.take_newly_expired(now);
        if !expired.is_empty() {
            for id in expired {
                record_expiry(&mut s, id, now);
            }
            self.dirty.notify_one();
        }
        s
    }

    /// Counts an issued access token; every 1024th issue forgets expired grants (bounded memory).
    pub fn note_issued(&self) {
        if self.issued.fetch_add(1, Ordering::Relaxed) % 1024 == 1023 {
            self.tokens.sweep();
        }
    }

    /// Marks the state changed (the persister will save it).
    pub fn changed(&self) {
        self.dirty.notify_one();
    }
}

fn record_expiry(s: &mut State, id: uuid::Uuid, now: OffsetDateTime) {
    let Some(pat) = s.pats.get(&id).cloned() else { return };
    let Some(owner) = s.users.get(&pat.owner).cloned() else { return };
    let Some(org_key) = s.org_by_id(pat.org).map(|o| o.name.to_lowercase()) else { return };
    let ev = audit_log::pat_event("Token.PatExpiredEvent", &pat, &owner, pat.valid_to);
    audit_log::record(s, &org_key, &Actor::system(), ev, now);
}

/// Seconds as a `time::Duration`.
pub fn secs(n: u64) -> Duration {
    Duration::seconds(n.min(i64::MAX as u64) as i64)
}
