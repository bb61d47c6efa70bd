//! One lease per managed token, so the timer, a manual run and Event Grid events never work on the same
//! token at once — even on different Functions instances. [`Leases`] hands out [`LeaseGuard`]s; the
//! blob implementation (a blob lease in the Function App's storage account, renewed while held) lives
//! in `blob.rs`; [`FileLeases`] (the default without storage, and `PATROL_LEASE=local`) and the
//! in-process [`LocalLeases`] (tests) here.
//!
//! [`FileLeases`] exclude across processes: a lease is an exclusive OS lock on
//! `<state dir>/leases/<key>.lock` ([`crate::state::FileLock`]), so two `patrol rotate` runs, or
//! `patrol serve` beside the CLI, on one state directory never work on the same token at once. The
//! operating system releases the lock when its process dies (SIGKILL included): no stale lease to wait
//! out, and no lease that can be lost while its holder lives. Limits: the processes must share one
//! kernel's view of the directory (one machine, or containers bind-mounting it); network file systems
//! (NFS, SMB) may not honour the lock, so a state directory shared between machines is not excluded —
//! use blob leases (`AzureWebJobsStorage`) there.

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

/// Cross-process leases: an exclusive OS file lock per key under a directory (see the module doc), and
/// an in-process set in front of it (so this process never relies on lock semantics between its own
/// handles).
#[derive(Debug, Clone)]
pub struct FileLeases {
    dir: std::path::PathBuf,
    local: LocalLeases,
}

impl FileLeases {
    /// Leases whose lock files live under `dir` (`<state dir>/leases`).
    pub fn new(dir: impl Into<std::path::PathBuf>) -> Self {
        Self { dir: dir.into(), local: LocalLeases::default() }
    }

    fn path_of(&self, key: &str) -> Result<std::path::PathBuf, LeaseError> {
        crate::state::validate_key(key)
            .map_err(|e| LeaseError::Storage { key: key.to_owned(), message: e.to_string() })?;
        Ok(self.dir.join(format!("{key}.lock")))
    }
}

#[async_trait]
impl Leases for FileLeases {
    async fn try_acquire(&self, key: &str) -> Result<Option<LeaseGuard>, LeaseError> {
        let path = self.path_of(key)?;
        let Some(local) = self.local.try_acquire(key).await? else { return Ok(None) };
        let locked = tokio::task::spawn_blocking(move || {
            let r = crate::state::try_lock_file(&path);
            (path, r)
        })
        .await
        .map_err(|e| LeaseError::Storage { key: key.to_owned(), message: e.to_string() })?;
        match locked {
            (_, Ok(Some(lock))) => Ok(Some(LeaseGuard::new(
                key.to_owned(),
                Box::new(move || {
                    // The OS lock first, then this process's claim.
                    drop(lock);
                    drop(local);
                }),
                Arc::default(),
            ))),
            (_, Ok(None)) => Ok(None),
            (path, Err(e)) => {
                Err(LeaseError::Storage { key: key.to_owned(), message: format!("{}: {e}", path.display()) })
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn file_leases_exclude_other_holders_of_the_directory_and_release() {
        let dir = tempfile::tempdir().unwrap();
        // Two providers on one directory stand for two processes (an OS lock is per open file).
        let (a, b) = (FileLeases::new(dir.path()), FileLeases::new(dir.path()));
        let held = a.try_acquire("token/tok").await.unwrap().unwrap();
        assert!(a.try_acquire("token/tok").await.unwrap().is_none(), "held in this process");
        assert!(b.try_acquire("token/tok").await.unwrap().is_none(), "held by the other process");
        let other = b.try_acquire("token/other").await.unwrap().unwrap();
        assert!(dir.path().join("token/tok.lock").exists());
        drop(held);
        let again = b.try_acquire("token/tok").await.unwrap().expect("released");
        assert!(a.try_acquire("token/tok").await.unwrap().is_none());
        drop((again, other));
        assert!(a.try_acquire("token/tok").await.unwrap().is_some());
        assert!(a.try_acquire("../escape").await.is_err(), "keys are validated");
    }

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

/// Per-token blob leases on `leases/<key>` in the Function App's storage account
/// ([`crate::state::blob::BlobAccount`]), renewed in the background while held.
#[derive(Debug, Clone)]
pub struct BlobLeases {
    account: crate::state::blob::BlobAccount,
}

impl BlobLeases {
    pub fn new(account: crate::state::blob::BlobAccount) -> Self {
        Self { account }
    }
}

#[async_trait]
impl Leases for BlobLeases {
    async fn try_acquire(&self, key: &str) -> Result<Option<LeaseGuard>, LeaseError> {
        use crate::state::blob::{LEASE_SECONDS, LeaseOutcome};
        use std::sync::atomic::{AtomicBool, Ordering};
        use std::time::Duration;
        let err = |message: String| LeaseError::Storage { key: key.to_owned(), message };
        crate::state::validate_key(key).map_err(|e| err(e.to_string()))?;
        let acc = &self.account;
        let blob = format!("leases/{key}");
        // The blob must exist to be leased; create it once (an existing one is fine).
        acc.create_lease_blob(&blob).await.map_err(|e| err(format!("creating the lease blob: {e}")))?;
        let id = uuid::Uuid::new_v4().to_string();
        if acc.acquire_lease(&blob, &id).await.map_err(err)? == LeaseOutcome::Held {
            return Ok(None);
        }
        let lost = Arc::new(AtomicBool::new(false));
        let stop = Arc::new(tokio::sync::Notify::new());
        let renew = {
            let (acc, blob, id, lost, stop) = (acc.clone(), blob.clone(), id.clone(), lost.clone(), stop.clone());
            tokio::spawn(async move {
                loop {
                    tokio::select! {
                        _ = stop.notified() => break,
                        _ = tokio::time::sleep(Duration::from_secs(LEASE_SECONDS / 3)) => {}
                    }
                    // Retries included, a renewal must be done well before the lease would expire (the
                    // last renewal was LEASE_SECONDS / 3 ago): else the lease counts as lost.
                    let renew = acc.renew_lease(&blob, &id);
                    let ok = tokio::time::timeout(Duration::from_secs(LEASE_SECONDS / 3), renew)
                        .await
                        .is_ok_and(|r| r.is_ok());
                    if !ok {
                        lost.store(true, Ordering::SeqCst);
                        tracing::warn!(lease = %blob, "could not renew a blob lease; stopping work under it");
                        break;
                    }
                }
                // Release (best effort; an unreleased lease expires after LEASE_SECONDS).
                let _ = acc.release_lease(&blob, &id).await;
            })
        };
        drop(renew); // detached: it stops and releases when the guard is dropped
        Ok(Some(LeaseGuard::new(key.to_owned(), Box::new(move || stop.notify_one()), lost)))
    }
}
