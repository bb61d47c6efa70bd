//! One lease per managed token, so the timer, a manual run and Event Grid events never work on the same
//! token at once — even on different Functions instances. [`Leases`] hands out [`LeaseGuard`]s; the
//! blob implementation (a blob lease in the Function App's storage account, renewed while held) lives
//! in `blob.rs`, the in-process one here (the embedded default without storage, `PATROL_LEASE=local`).

use async_trait::async_trait;
use std::collections::HashSet;
use std::sync::{Arc, Mutex};

#[derive(Debug, thiserror::Error)]
pub enum LeaseError {
    #[error("lease storage failure on {key}: {message}")]
    Storage { key: String, message: String },
}

/// Held until dropped (or [`LeaseGuard::release`]d); a blob lease is renewed in the background meanwhile.
pub struct LeaseGuard {
    key: String,
    release: Option<Box<dyn FnOnce() + Send + Sync>>,
    lost: Arc<std::sync::atomic::AtomicBool>,
}

impl LeaseGuard {
    pub fn new(
        key: String,
        release: Box<dyn FnOnce() + Send + Sync>,
        lost: Arc<std::sync::atomic::AtomicBool>,
    ) -> Self {
        Self { key, release: Some(release), lost }
    }

    pub fn key(&self) -> &str {
        &self.key
    }

    /// The lease could not be renewed: another holder may take over; stop before the next effect.
    pub fn is_lost(&self) -> bool {
        self.lost.load(std::sync::atomic::Ordering::SeqCst)
    }

    pub fn release(mut self) {
        if let Some(f) = self.release.take() {
            f();
        }
    }
}

impl Drop for LeaseGuard {
    fn drop(&mut self) {
        if let Some(f) = self.release.take() {
            f();
        }
    }
}

impl std::fmt::Debug for LeaseGuard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LeaseGuard").field("key", &self.key).finish()
    }
}

#[async_trait]
pub trait Leases: Send + Sync + std::fmt::Debug {
    /// Takes the lease on `key` if nobody holds it; `Ok(None)` when someone does.
    async fn try_acquire(&self, key: &str) -> Result<Option<LeaseGuard>, LeaseError>;
}

/// In-process leases: a set of held keys.
#[derive(Debug, Default, Clone)]
pub struct LocalLeases {
    held: Arc<Mutex<HashSet<String>>>,
}

#[async_trait]
impl Leases for LocalLeases {
    async fn try_acquire(&self, key: &str) -> Result<Option<LeaseGuard>, LeaseError> {
        let mut held = self.held.lock().unwrap_or_else(|p| p.into_inner());
        if !held.insert(key.to_owned()) {
            return Ok(None);
        }
        let set = self.held.clone();
        let k = key.to_owned();
        Ok(Some(LeaseGuard::new(
            key.to_owned(),
            Box::new(move || {
                set.lock().unwrap_or_else(|p| p.into_inner()).remove(&k);
            }),
            Arc::default(),
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn local_leases_exclude_and_release() {
        let l = LocalLeases::default();
        let a = l.try_acquire("tok").await.unwrap().unwrap();
        assert!(l.try_acquire("tok").await.unwrap().is_none());
        assert!(l.try_acquire("other").await.unwrap().is_some());
        drop(a);
        assert!(l.try_acquire("tok").await.unwrap().is_some());
    }
}
