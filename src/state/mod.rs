//! Durable documents patrol keeps between runs: the rotation journal, which expiry warnings were sent,
//! audit-log checkpoints, run history.
//!
//! A [`StateStore`] maps a key (`journal/<secret>`, `notify/sent`, …) to a JSON document with an ETag, and
//! writes are compare-and-swap on that ETag, so two Functions instances can never silently overwrite each
//! other. Two implementations: [`FileStateStore`] (local directory, two checksummed slots per document
//! overwritten in place, `0600`; see `file`) and a blob implementation in the Function App's own storage
//! account (`blob`).

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

    /// [`StateStore::load`] of each of `keys`, in the same order: what the inventory reads for every
    /// managed token. The default loads them `concurrency` at a time; a local store reads many per blocking
    /// task instead of handing each file read to a thread of its own.
    async fn load_many(&self, keys: &[String], concurrency: usize) -> Vec<Result<Option<(Vec<u8>, ETag)>, StateError>> {
        use futures::StreamExt;
        let loads: Vec<_> = keys.iter().map(|k| self.load(k)).collect();
        futures::stream::iter(loads).buffered(concurrency.max(1)).collect().await
    }

    /// Where the documents live, for people ("directory /var/lib/patrol/state", "blob container … in …"):
    /// named when state is missing and by `patrol status`. Never holds a credential.
    fn location(&self) -> String {
        "the configured state store".to_owned()
    }
}

/// Runs `f` on each of `items` on tokio's blocking pool, in a few tasks — one per core, each taking a
/// contiguous share — rather than one thread hand-off per item (for 10,000 small file reads the hand-offs,
/// not the reads, were the cost). Results come in the order of `items`; each item of a task that panicked
/// gets `failed(message)`.
pub(crate) async fn map_blocking<T, R, F>(items: Vec<T>, f: F, failed: fn(String) -> R) -> Vec<R>
where
    T: Send + 'static,
    R: Send + 'static,
    F: Fn(T) -> R + Send + Sync + 'static,
{
    /// Fewer items than this per task are not worth another thread.
    const MIN_PER_TASK: usize = 64;
    let n = items.len();
    if n == 0 {
        return Vec::new();
    }
    let cores = std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get);
    let tasks = cores.min(n.div_ceil(MIN_PER_TASK)).max(1);
    let per_task = n.div_ceil(tasks);
    let f = std::sync::Arc::new(f);
    let mut items = items.into_iter();
    let mut handles = Vec::with_capacity(tasks);
    loop {
        let chunk: Vec<T> = items.by_ref().take(per_task).collect();
        if chunk.is_empty() {
            break;
        }
        let (f, len) = (f.clone(), chunk.len());
        handles.push((len, tokio::task::spawn_blocking(move || chunk.into_iter().map(|t| f(t)).collect::<Vec<R>>())));
    }
    let mut out = Vec::with_capacity(n);
    for (len, h) in handles {
        match h.await {
            Ok(rs) => out.extend(rs),
            Err(e) => out.extend((0..len).map(|_| failed(e.to_string()))),
        }
    }
    out
}

/// Test builds only (`test-hooks`): exits the process with status 86 when `PATROL_TEST_CRASH_AFTER` names
/// `step` — how the kill tests stop a command between two journaled steps. A no-op in other builds.
pub fn crash_point(step: &str) {
    #[cfg(feature = "test-hooks")]
    if std::env::var("PATROL_TEST_CRASH_AFTER").is_ok_and(|v| v == step) {
        std::process::exit(86);
    }
    #[cfg(not(feature = "test-hooks"))]
    let _ = step;
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

/// An OS lock on a file (`flock` on Unix, `LockFileEx` on Windows, through `std::fs::File::lock`): it
/// excludes other processes — and other open handles in this process — until it is dropped, and the
/// operating system releases it when the process dies, however it dies (SIGKILL included), so a crash
/// never leaves a stale lock behind. Advisory: only code that takes the same lock is excluded.
#[derive(Debug)]
pub struct FileLock {
    _file: std::fs::File,
}

/// Opens (creating it and its directories, `0600`) the lock file at `path`.
fn open_lock_file(path: &Path) -> std::io::Result<std::fs::File> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let mut opts = std::fs::OpenOptions::new();
    opts.read(true).write(true).create(true).truncate(false);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        opts.mode(0o600);
    }
    opts.open(path)
}

/// Waits for the exclusive lock on `path` (created if missing). Blocking: call it off the async runtime.
pub fn lock_file(path: &Path) -> std::io::Result<FileLock> {
    let file = open_lock_file(path)?;
    file.lock()?;
    Ok(FileLock { _file: file })
}

/// The exclusive lock on `path` (created if missing) if nobody holds it, else `None`. Does not wait.
pub fn try_lock_file(path: &Path) -> std::io::Result<Option<FileLock>> {
    let file = open_lock_file(path)?;
    match file.try_lock() {
        Ok(()) => Ok(Some(FileLock { _file: file })),
        Err(std::fs::TryLockError::WouldBlock) => Ok(None),
        Err(std::fs::TryLockError::Error(e)) => Err(e),
    }
}

/// The whole of a small file, or `None` when it does not exist: one `open`, `read`s until the end, no
/// `stat` for a size hint (what `std::fs::read` adds).
pub fn read_small(path: &Path) -> std::io::Result<Option<Vec<u8>>> {
    let mut buf = Vec::new();
    Ok(read_into(path, &mut buf)?.then_some(buf))
}

/// Reads the whole of a small file into `buf` (cleared first, its capacity kept): `false` when the file does
/// not exist. The inventory reads three files per token into buffers each thread reuses, rather than
/// allocating a buffer per file — which, beside the small objects that stay (a token's state), fragments
/// the heap into memory the process keeps.
pub fn read_into(path: &Path, buf: &mut Vec<u8>) -> std::io::Result<bool> {
    match open_if_exists(path)? {
        Some(f) => read_file_until(f, buf, |_| false).map(|()| true),
        None => Ok(false),
    }
}

/// `path` opened for reading; `None` when it does not exist.
fn open_if_exists(path: &Path) -> std::io::Result<Option<std::fs::File>> {
    match std::fs::File::open(path) {
        Ok(f) => Ok(Some(f)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e),
    }
}

/// Reads an open file into `buf` (cleared first, its capacity kept), stopping at its end or as soon as
/// `complete` says the bytes read so far are all the caller needs (a state slot whose header gives its
/// document's length: the padding after it, and the `read` that would find the end of the file, are
/// skipped). `read`s of up to 8 KiB; no `stat`.
pub fn read_file_until(
    mut f: std::fs::File,
    buf: &mut Vec<u8>,
    complete: impl Fn(&[u8]) -> bool,
) -> std::io::Result<()> {
    use std::io::Read;
    const CHUNK: usize = 8192;
    buf.clear();
    let mut filled = 0;
    loop {
        if buf.len() - filled < CHUNK / 2 {
            buf.resize(filled + CHUNK, 0);
        }
        match f.read(&mut buf[filled..]) {
            Ok(0) => break,
            Ok(n) => {
                filled += n;
                if complete(&buf[..filled]) {
                    break;
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => {
                buf.truncate(filled);
                return Err(e);
            }
        }
    }
    buf.truncate(filled);
    Ok(())
}

/// A directory whose files are opened by relative name. On Unix through one handle (`openat`,
/// `readlinkat`), so the kernel walks only the relative part of each name — not the whole path again for
/// each of the 30,000 files a `patrol plan` of 10,000 tokens reads; elsewhere, and when the directory could
/// not be opened, by joined paths (which then report their own errors).
#[derive(Debug)]
pub struct Dir {
    path: PathBuf,
    #[cfg(unix)]
    handle: Option<std::os::fd::OwnedFd>,
}

impl Dir {
    /// A handle on `path`, for many files in it.
    pub fn open(path: &Path) -> Self {
        #[cfg(unix)]
        {
            use rustix::fs::{Mode, OFlags};
            let flags = OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC;
            Self { path: path.to_path_buf(), handle: rustix::fs::open(path, flags, Mode::empty()).ok() }
        }
        #[cfg(not(unix))]
        Self { path: path.to_path_buf() }
    }

    /// No handle: names are joined to `path` (one file or two are read; opening the directory would cost more).
    pub fn unopened(path: &Path) -> Self {
        Self {
            path: path.to_path_buf(),
            #[cfg(unix)]
            handle: None,
        }
    }

    /// The directory's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The path of `name` in this directory (for messages, and the joined-path fallback).
    pub fn join(&self, name: &str) -> PathBuf {
        self.path.join(name)
    }

    /// `name` opened for reading; `None` when it does not exist.
    pub fn open_file(&self, name: &str) -> std::io::Result<Option<std::fs::File>> {
        #[cfg(unix)]
        if let Some(handle) = &self.handle {
            use rustix::fs::{Mode, OFlags};
            return match rustix::fs::openat(handle, name, OFlags::RDONLY | OFlags::CLOEXEC, Mode::empty()) {
                Ok(fd) => Ok(Some(std::fs::File::from(fd))),
                Err(rustix::io::Errno::NOENT) => Ok(None),
                Err(e) => Err(e.into()),
            };
        }
        open_if_exists(&self.join(name))
    }

    /// `name` in this directory read into `buf` ([`read_file_until`]); `false` when it does not exist.
    pub fn read_until(&self, name: &str, buf: &mut Vec<u8>, complete: impl Fn(&[u8]) -> bool) -> std::io::Result<bool> {
        match self.open_file(name)? {
            Some(f) => read_file_until(f, buf, complete).map(|()| true),
            None => Ok(false),
        }
    }

    /// What the symbolic link `name` points to; `None` when it does not exist, is not a link, or cannot
    /// be read (the caller then finds out the long way).
    pub fn read_link(&self, name: &str) -> Option<PathBuf> {
        #[cfg(unix)]
        if let Some(handle) = &self.handle {
            use std::os::unix::ffi::OsStringExt;
            let target = rustix::fs::readlinkat(handle, name, Vec::new()).ok()?;
            return Some(PathBuf::from(std::ffi::OsString::from_vec(target.into_bytes())));
        }
        std::fs::read_link(self.join(name)).ok()
    }
}

/// A shared lock on `path` when the file exists (`None` when it does not: nothing is created, so readers
/// write nothing). Waits while someone holds the exclusive lock. Blocking.
pub fn lock_file_shared_if_exists(path: &Path) -> std::io::Result<Option<FileLock>> {
    let Some(file) = open_if_exists(path)? else { return Ok(None) };
    file.lock_shared()?;
    Ok(Some(FileLock { _file: file }))
}

pub mod blob;
pub mod deliveries;
mod file;
pub mod history;
pub mod journal;
pub use file::FileStateStore;
