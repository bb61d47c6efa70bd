//! Durable documents patrol keeps between runs: the rotation journal, which expiry warnings were sent,
//! audit-log checkpoints, run history.
//!
//! A [`StateStore`] maps a key (`journal/<secret>`, `notify/sent`, …) to a JSON document with an ETag, and
//! writes are compare-and-swap on that ETag, so two Functions instances can never silently overwrite each
//! other. Two implementations: [`FileStateStore`] (local directory, atomic rename, `0600`) and a blob
//! implementation in the Function App's own storage account (in `crate::rotation::blob`).

use async_trait::async_trait;
use std::path::{Path, PathBuf};

/// An opaque version of a stored document.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ETag(pub String);

#[derive(Debug, thiserror::Error)]
pub enum StateError {
    #[error("state key {key:?} was changed by someone else (expected version {expected:?})")]
    Conflict { key: String, expected: Option<String> },
    #[error("state key {0:?} is invalid: keys are 1-200 characters of [A-Za-z0-9._/-], no '..' or leading '/'")]
    InvalidKey(String),
    #[error("state store failure on {key:?}: {message}")]
    Io { key: String, message: String },
}

#[async_trait]
pub trait StateStore: Send + Sync + std::fmt::Debug {
    /// The document and its version, or `None`.
    async fn load(&self, key: &str) -> Result<Option<(Vec<u8>, ETag)>, StateError>;

    /// Writes the document if the stored version is still `expected` (`None`: the key must not exist yet).
    async fn save(&self, key: &str, body: &[u8], expected: Option<&ETag>) -> Result<ETag, StateError>;

    /// Keys under a prefix (e.g. `journal/`).
    async fn list(&self, prefix: &str) -> Result<Vec<String>, StateError>;
}

pub fn validate_key(key: &str) -> Result<(), StateError> {
    let ok = !key.is_empty()
        && key.len() <= 200
        && !key.starts_with('/')
        && !key.split('/').any(|p| p.is_empty() || p == "." || p == "..")
        && key.chars().all(|c| c.is_ascii_alphanumeric() || "._/-".contains(c));
    if ok { Ok(()) } else { Err(StateError::InvalidKey(key.chars().take(200).collect())) }
}

/// Documents as files under a directory. Writes go to a temporary file, are fsynced and renamed into
/// place, so a crash leaves either the old or the new document, never half of one. The ETag is a SHA-256
/// of the content. A mutex per key makes compare-and-swap atomic within one process (writes of
/// different keys — different tokens — proceed in parallel, each with its own fsyncs); across processes,
/// patrol holds the token's lease while it writes.
#[derive(Debug)]
pub struct FileStateStore {
    root: PathBuf,
    locks: std::sync::Mutex<std::collections::HashMap<String, std::sync::Arc<tokio::sync::Mutex<()>>>>,
}

impl FileStateStore {
    pub fn new(root: impl Into<PathBuf>) -> Self {
        Self { root: root.into(), locks: std::sync::Mutex::default() }
    }

    fn lock_of(&self, key: &str) -> std::sync::Arc<tokio::sync::Mutex<()>> {
        let mut map = self.locks.lock().unwrap_or_else(|p| p.into_inner());
        map.entry(key.to_owned()).or_default().clone()
    }

    fn path(&self, key: &str) -> Result<PathBuf, StateError> {
        validate_key(key)?;
        Ok(self.root.join(key).with_extension("json"))
    }
}

fn etag_of(body: &[u8]) -> ETag {
    use sha2::{Digest, Sha256};
    ETag(hex::encode(&Sha256::digest(body)[..12]))
}

/// Writes `body` to `path` atomically (temp file in the same directory, fsync, rename, fsync dir), mode 0600.
pub fn write_atomic(path: &Path, body: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    let dir = path.parent().unwrap_or_else(|| Path::new("."));
    std::fs::create_dir_all(dir)?;
    let tmp = dir.join(format!(
        ".{}.{}.tmp",
        path.file_name().and_then(|n| n.to_str()).unwrap_or("state"),
        uuid::Uuid::new_v4().simple()
    ));
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        opts.mode(0o600);
    }
    let result = (|| {
        let mut f = opts.open(&tmp)?;
        f.write_all(body)?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)?;
        if let Ok(d) = std::fs::File::open(dir) {
            let _ = d.sync_all();
        }
        Ok(())
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

#[async_trait]
impl StateStore for FileStateStore {
    async fn load(&self, key: &str) -> Result<Option<(Vec<u8>, ETag)>, StateError> {
        let path = self.path(key)?;
        match tokio::fs::read(&path).await {
            Ok(body) => {
                let tag = etag_of(&body);
                Ok(Some((body, tag)))
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(StateError::Io { key: key.to_owned(), message: format!("{}: {e}", path.display()) }),
        }
    }

    async fn save(&self, key: &str, body: &[u8], expected: Option<&ETag>) -> Result<ETag, StateError> {
        let path = self.path(key)?;
        let lock = self.lock_of(key);
        let _guard = lock.lock().await;
        let current = self.load(key).await?.map(|(_, t)| t);
        if current.as_ref() != expected {
            return Err(StateError::Conflict { key: key.to_owned(), expected: expected.map(|e| e.0.clone()) });
        }
        let body_owned = body.to_vec();
        let p = path.clone();
        tokio::task::spawn_blocking(move || write_atomic(&p, &body_owned))
            .await
            .map_err(|e| StateError::Io { key: key.to_owned(), message: e.to_string() })?
            .map_err(|e| StateError::Io { key: key.to_owned(), message: format!("{}: {e}", path.display()) })?;
        Ok(etag_of(body))
    }

    async fn list(&self, prefix: &str) -> Result<Vec<String>, StateError> {
        let dir = self.root.join(prefix.trim_end_matches('/'));
        let mut out = Vec::new();
        let mut stack = vec![dir];
        while let Some(d) = stack.pop() {
            let rd = match std::fs::read_dir(&d) {
                Ok(rd) => rd,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                Err(e) => return Err(StateError::Io { key: prefix.to_owned(), message: e.to_string() }),
            };
            for entry in rd.flatten() {
                let p = entry.path();
                if p.is_dir() {
                    stack.push(p);
                } else if p.extension().is_some_and(|x| x == "json")
                    && !p.file_name().is_some_and(|n| n.to_string_lossy().starts_with('.'))
                    && let Ok(rel) = p.with_extension("").strip_prefix(&self.root)
                {
                    out.push(rel.to_string_lossy().replace('\\', "/"));
                }
            }
        }
        out.sort();
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn compare_and_swap() {
        let dir = tempfile::tempdir().unwrap();
        let s = FileStateStore::new(dir.path());
        assert!(s.load("journal/a").await.unwrap().is_none());
        let t1 = s.save("journal/a", b"{\"v\":1}", None).await.unwrap();
        assert!(matches!(s.save("journal/a", b"{}", None).await, Err(StateError::Conflict { .. })));
        let t2 = s.save("journal/a", b"{\"v\":2}", Some(&t1)).await.unwrap();
        assert!(matches!(s.save("journal/a", b"{}", Some(&t1)).await, Err(StateError::Conflict { .. })));
        let (body, tag) = s.load("journal/a").await.unwrap().unwrap();
        assert_eq!(body, b"{\"v\":2}");
        assert_eq!(tag, t2);
        assert_eq!(s.list("journal/").await.unwrap(), vec!["journal/a".to_owned()]);
        assert!(matches!(s.save("../x", b"{}", None).await, Err(StateError::InvalidKey(_))));
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(dir.path().join("journal/a.json")).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
    }
    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn racing_writers_of_one_key_exactly_one_wins_and_other_keys_do_not_wait() {
        let dir = tempfile::tempdir().unwrap();
        let s = std::sync::Arc::new(FileStateStore::new(dir.path()));
        let t0 = s.save("journal/race", b"{\"v\":0}", None).await.unwrap();
        let mut tasks = Vec::new();
        for i in 0..8 {
            let (s, t0) = (s.clone(), t0.clone());
            tasks.push(tokio::spawn(async move {
                let same = s.save("journal/race", format!("{{\"v\":{}}}", i + 1).as_bytes(), Some(&t0)).await;
                let other = s.save(&format!("journal/other-{i}"), b"{}", None).await;
                (same.is_ok(), other.is_ok())
            }));
        }
        let mut wins = 0;
        for t in tasks {
            let (same, other) = t.await.unwrap();
            wins += usize::from(same);
            assert!(other, "a write of another key never conflicts");
        }
        assert_eq!(wins, 1, "compare-and-swap on one key admits exactly one writer");
        assert_eq!(s.list("journal/").await.unwrap().len(), 9);
    }
}
