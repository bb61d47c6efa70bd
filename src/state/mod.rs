//! Durable documents patrol keeps between runs: the rotation journal, which expiry warnings were sent,
//! audit-log checkpoints, run history.
//!
//! A [`StateStore`] maps a key (`journal/<secret>`, `notify/sent`, …) to a JSON document with an ETag, and
//! writes are compare-and-swap on that ETag, so two Functions instances can never silently overwrite each
//! other. Two implementations: [`FileStateStore`] (local directory, two checksummed slots per document
//! overwritten in place, `0600`; see `file`) and a blob implementation in the Function App's own storage
//! account (in `crate::rotation::blob`).

use async_trait::async_trait;
use std::path::Path;

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

mod file;
pub use file::FileStateStore;
