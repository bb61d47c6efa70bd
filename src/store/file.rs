//! The embedded secret store: an encrypted local directory with the same behaviour as Key Vault, used by
//! the CLI and `patrol demo` when no vault is configured.
//!
//! Layout: `<root>/<lower-case secret name>/<32-hex version>.pse`, one file per version. Each file is
//! `MAGIC ‖ 12-byte nonce ‖ ChaCha20-Poly1305(JSON record)` with the associated data binding the ciphertext
//! to its place (`MAGIC ‖ name ‖ version`), so a file copied to another secret or version fails to decrypt.
//! The 256-bit key lives in its own file (`Settings.store_key_file`, outside the data directory, created
//! `0600`); directories are `0700`, files `0600`. Every write goes through [`write_atomic`] (temp file,
//! fsync, rename), so an interrupted write leaves the previous versions exactly as they were; leftover
//! temporary files are ignored and swept on the next write. Writers of one secret hold an OS file lock on
//! `<secret>/.lock` (shared by every process on the directory), so version numbering and the sweep are
//! safe across processes too.
//!
//! Versions behave like Key Vault's: every `set` adds a version (32 hex characters), the newest is current,
//! a version's value never changes, only its properties; a disabled version cannot be read.
//!
//! **The `current` hint** (Unix): `<secret>/current` is a symbolic link to the newest version's file name,
//! so reading a secret's current version — 10,000 of them in every `patrol plan` — is one `readlink` and one
//! file read, not a directory listing plus the read. `set` points the link at the new version *before* it
//! writes the version file, and makes the link durable first (rename, then `fsync` of the directory), so at
//! no moment — crash or power loss included — does a version file exist that is newer than the one the link
//! names: the link is either right or names a file that does not exist (yet, or ever: a write that was
//! interrupted), and then the reader lists the directory as before. A directory without a link (written by
//! an earlier patrol) is listed too, until its next `set`. A link whose target is not a version file name
//! of this directory is ignored. Read-only commands never write a link.

use super::{
    NewVersion, PropertiesUpdate, SecretStore, SecretSummary, StoreError, StoredSecret, VersionProperties, tags,
};
use crate::clock::Clock;
use crate::domain::SecretName;
use crate::state::{Dir, write_atomic};
use async_trait::async_trait;
use chacha20poly1305::aead::{Aead, AeadInPlace, KeyInit, Payload};
use chacha20poly1305::{ChaCha20Poly1305, Key, Nonce, Tag};
use rand::RngCore;
use secrecy::{ExposeSecret, SecretBox, SecretString};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use time::OffsetDateTime;
use zeroize::Zeroize;

/// First bytes of every version file (format version 1).
const MAGIC: &[u8; 8] = b"PATROLS1";
const NONCE_LEN: usize = 12;
const KEY_LEN: usize = 32;
const EXT: &str = "pse";
/// The name of the link to the current version's file (see the module documentation).
const HINT: &str = "current";
/// Key Vault's value limit (25k bytes); the file store keeps the same so nothing works locally that would
/// fail in Azure.
pub const MAX_VALUE_BYTES: usize = 25 * 1024;

/// The encrypted file store. Cheap to clone (shared inner state).
#[derive(Clone)]
pub struct FileSecretStore {
    inner: Arc<Inner>,
}

struct Inner {
    root: PathBuf,
    cipher: ChaCha20Poly1305,
    clock: Clock,
    /// Serialises the writers of one secret in this process (version numbering is read-modify-write);
    /// different secrets are written in parallel.
    locks: std::sync::Mutex<std::collections::HashMap<String, Arc<std::sync::Mutex<()>>>>,
    /// Test hook: simulate a crash after this many bytes of the next version file.
    crash_after: std::sync::Mutex<Option<usize>>,
    /// Sequence number of every version file this process has authenticated, by path. A version's
    /// sequence never changes (an update rewrites its properties only) and version ids are random and
    /// never reused, so finding the current version decrypts only the files not seen before plus the
    /// current one, instead of every version the secret ever had.
    sequences: std::sync::Mutex<std::collections::HashMap<PathBuf, u64>>,
}

impl std::fmt::Debug for FileSecretStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FileSecretStore").field("root", &self.inner.root).finish_non_exhaustive()
    }
}

/// What is encrypted in one version file.
#[derive(serde::Serialize, serde::Deserialize)]
struct Record {
    name: String,
    version: String,
    /// Position among the secret's versions; the highest is current.
    sequence: u64,
    value: String,
    enabled: bool,
    expires: Option<i64>,
    not_before: Option<i64>,
    created: i64,
    updated: i64,
    content_type: Option<String>,
    tags: BTreeMap<String, String>,
}

impl Drop for Record {
    fn drop(&mut self) {
        self.value.zeroize();
    }
}

fn other(operation: &'static str, message: impl Into<String>) -> StoreError {
    StoreError::Other { operation, message: message.into() }
}

fn unix(t: Option<OffsetDateTime>) -> Option<i64> {
    t.map(OffsetDateTime::unix_timestamp)
}

fn from_unix(t: i64) -> Option<OffsetDateTime> {
    OffsetDateTime::from_unix_timestamp(t).ok()
}

/// Loads the store key, creating it (`0600`, 32 random bytes as hex) when the file does not exist yet.
/// Refuses a key file that other users can read.
pub fn load_or_create_key(path: &Path) -> Result<SecretBox<[u8; KEY_LEN]>, StoreError> {
    let op = "open store key";
    match std::fs::read_to_string(path) {
        Ok(text) => {
            check_private(path)?;
            let mut text = text;
            let decoded = hex::decode(text.trim());
            text.zeroize();
            let mut bytes = decoded.map_err(|_| {
                other(op, format!("{} is not a patrol store key (expected 64 hex characters)", path.display()))
            })?;
            if bytes.len() != KEY_LEN {
                bytes.zeroize();
                return Err(other(op, format!("{} must hold a 256-bit key (64 hex characters)", path.display())));
            }
            let mut key = [0u8; KEY_LEN];
            key.copy_from_slice(&bytes);
            bytes.zeroize();
            Ok(SecretBox::new(Box::new(key)))
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let mut key = [0u8; KEY_LEN];
            rand::rng().fill_bytes(&mut key);
            let mut text = hex::encode(key);
            text.push('\n');
            if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
                std::fs::create_dir_all(dir).map_err(|e| other(op, format!("{}: {e}", dir.display())))?;
            }
            let created = create_new_private(path, text.as_bytes());
            text.zeroize();
            match created {
                Ok(()) => Ok(SecretBox::new(Box::new(key))),
                // Another process created it first: use theirs.
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                    key.zeroize();
                    load_or_create_key(path)
                }
                Err(e) => Err(other(op, format!("cannot create {}: {e}", path.display()))),
            }
        }
        Err(e) => Err(other(op, format!("{}: {e}", path.display()))),
    }
}

fn create_new_private(path: &Path, body: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        opts.mode(0o600);
    }
    let mut f = opts.open(path)?;
    f.write_all(body)?;
    f.sync_all()
}

#[cfg(unix)]
fn check_private(path: &Path) -> Result<(), StoreError> {
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(path)
        .map_err(|e| other("open store key", format!("{}: {e}", path.display())))?
        .permissions()
        .mode();
    if mode & 0o077 != 0 {
        return Err(other(
            "open store key",
            format!("{} is readable by other users (mode {:o}); run chmod 600 on it", path.display(), mode & 0o777),
        ));
    }
    Ok(())
}

#[cfg(not(unix))]
fn check_private(_path: &Path) -> Result<(), StoreError> {
    Ok(())
}

fn create_private_dir(dir: &Path) -> std::io::Result<()> {
    let mut b = std::fs::DirBuilder::new();
    b.recursive(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::DirBuilderExt;
        b.mode(0o700);
    }
    b.create(dir)
}

impl FileSecretStore {
    /// Opens (or creates) the store at `root` with the key in `key_file`. The key file must not be inside
    /// `root`: the point of a separate key is that copying the data directory does not copy the key.
    pub fn open(root: impl Into<PathBuf>, key_file: &Path, clock: Clock) -> Result<Self, StoreError> {
        let root = root.into();
        create_private_dir(&root).map_err(|e| other("open file store", format!("{}: {e}", root.display())))?;
        let canon_root = root.canonicalize().unwrap_or_else(|_| root.clone());
        let key_dir = key_file
            .parent()
            .filter(|d| !d.as_os_str().is_empty())
            .map(|d| d.canonicalize().unwrap_or_else(|_| d.to_path_buf()))
            .unwrap_or_else(|| std::env::current_dir().unwrap_or_default());
        if key_dir.starts_with(&canon_root) {
            return Err(other(
                "open file store",
                format!(
                    "the store key {} must be kept outside the data directory {}",
                    key_file.display(),
                    root.display()
                ),
            ));
        }
        let key = load_or_create_key(key_file)?;
        let cipher = ChaCha20Poly1305::new(Key::from_slice(key.expose_secret()));
        Ok(Self {
            inner: Arc::new(Inner {
                root,
                cipher,
                clock,
                locks: std::sync::Mutex::default(),
                crash_after: std::sync::Mutex::new(None),
                sequences: std::sync::Mutex::default(),
            }),
        })
    }

    /// The data directory.
    pub fn root(&self) -> &Path {
        &self.inner.root
    }

    /// Test hook: the next version write stops after `bytes` bytes of its temporary file, as if the process
    /// had been killed mid-write, and returns an error.
    #[doc(hidden)]
    pub fn simulate_crash_on_next_write(&self, bytes: usize) {
        *self.inner.crash_after.lock().unwrap_or_else(|p| p.into_inner()) = Some(bytes);
    }

    async fn blocking<T: Send + 'static>(
        &self,
        operation: &'static str,
        f: impl FnOnce(&Inner) -> Result<T, StoreError> + Send + 'static,
    ) -> Result<T, StoreError> {
        let inner = Arc::clone(&self.inner);
        tokio::task::spawn_blocking(move || f(&inner)).await.map_err(|e| other(operation, e.to_string()))?
    }
}

impl Inner {
    fn secret_dir(&self, name: &SecretName) -> PathBuf {
        self.root.join(dir_name(name))
    }

    fn aad(name: &str, version: &str) -> Vec<u8> {
        let mut aad = MAGIC.to_vec();
        aad.extend_from_slice(name.to_ascii_lowercase().as_bytes());
        aad.push(0);
        aad.extend_from_slice(version.as_bytes());
        aad
    }

    fn seal(&self, rec: &Record) -> Result<Vec<u8>, StoreError> {
        let mut plain = serde_json::to_vec(rec).map_err(|e| other("encrypt", e.to_string()))?;
        let mut nonce = [0u8; NONCE_LEN];
        rand::rng().fill_bytes(&mut nonce);
        let aad = Self::aad(&rec.name, &rec.version);
        let sealed = self.cipher.encrypt(Nonce::from_slice(&nonce), Payload { msg: &plain, aad: &aad });
        plain.zeroize();
        let ct = sealed.map_err(|_| other("encrypt", "encryption failed"))?;
        let mut out = Vec::with_capacity(MAGIC.len() + NONCE_LEN + ct.len());
        out.extend_from_slice(MAGIC);
        out.extend_from_slice(&nonce);
        out.extend_from_slice(&ct);
        Ok(out)
    }

    fn open_file(&self, path: &Path, name: &SecretName, version: &str) -> Result<Record, StoreError> {
        self.open_file_if_exists(path, name, version)?.ok_or_else(|| {
            other("read", format!("{}: {}", path.display(), std::io::Error::from(std::io::ErrorKind::NotFound)))
        })
    }

    /// [`Inner::open_file`], `None` when the file does not exist.
    fn open_file_if_exists(&self, path: &Path, name: &SecretName, version: &str) -> Result<Option<Record>, StoreError> {
        self.open_at(&At::Path(path), name, version)
    }

    /// [`Inner::open_file_if_exists`] of a file named by a path or relative to a directory handle.
    fn open_at(&self, at: &At<'_>, name: &SecretName, version: &str) -> Result<Option<Record>, StoreError> {
        thread_local! {
            /// The file's bytes, decrypted in place: a buffer each thread reuses (see
            /// [`crate::state::read_into`]), zeroed after every use.
            static BUF: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
        }
        BUF.with_borrow_mut(|buf| {
            let rec = self.open_into(buf, at, name, version);
            buf.zeroize();
            rec
        })
    }

    fn open_into(
        &self,
        buf: &mut Vec<u8>,
        at: &At<'_>,
        name: &SecretName,
        version: &str,
    ) -> Result<Option<Record>, StoreError> {
        const TAG_LEN: usize = 16;
        let op = "read";
        let found = at.read_into(buf).map_err(|e| other(op, format!("{}: {e}", at.path().display())))?;
        if !found {
            return Ok(None);
        }
        if buf.len() < MAGIC.len() + NONCE_LEN + TAG_LEN || &buf[..MAGIC.len()] != MAGIC {
            return Err(other(op, format!("{} is not a patrol store file (bad header)", at.path().display())));
        }
        let (head, sealed) = buf.split_at_mut(MAGIC.len() + NONCE_LEN);
        let (ct, tag) = sealed.split_at_mut(sealed.len() - TAG_LEN);
        let aad = Self::aad(name.as_str(), version);
        self.cipher
            .decrypt_in_place_detached(Nonce::from_slice(&head[MAGIC.len()..]), &aad, ct, Tag::from_slice(tag))
            .map_err(|_| {
                other(
                    op,
                    format!(
                        "{} failed authentication: it was modified, moved, or written with a different store key",
                        at.path().display()
                    ),
                )
            })?;
        serde_json::from_slice::<Record>(ct)
            .map(Some)
            .map_err(|e| other(op, format!("{}: undecodable record: {e}", at.path().display())))
    }

    /// [`Inner::open_file`], remembering the version's sequence for ranking it later without decrypting it.
    fn open_and_remember(&self, path: &Path, name: &SecretName, version: &str) -> Result<Record, StoreError> {
        let rec = self.open_file(path, name, version)?;
        self.remember(path, rec.sequence);
        Ok(rec)
    }

    fn lock_of(&self, name: &SecretName) -> Arc<std::sync::Mutex<()>> {
        let mut map = self.locks.lock().unwrap_or_else(|p| p.into_inner());
        map.entry(name.as_str().to_ascii_lowercase()).or_default().clone()
    }

    fn remember(&self, path: &Path, sequence: u64) {
        self.sequences.lock().unwrap_or_else(|p| p.into_inner()).insert(path.to_path_buf(), sequence);
    }

    fn known_sequence(&self, path: &Path) -> Option<u64> {
        self.sequences.lock().unwrap_or_else(|p| p.into_inner()).get(path).copied()
    }

    /// The finished version files of a secret: (version, path). Temporary files are skipped.
    fn version_files(&self, name: &SecretName) -> Result<Vec<(String, PathBuf)>, StoreError> {
        let dir = self.secret_dir(name);
        let rd = match std::fs::read_dir(&dir) {
            Ok(rd) => rd,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(other("list versions", format!("{}: {e}", dir.display()))),
        };
        let mut out = Vec::new();
        for entry in rd {
            let entry = entry.map_err(|e| other("list versions", format!("{}: {e}", dir.display())))?;
            // Only names that look like a version file become paths (the `.lock` beside them does not).
            if let Some(version) = version_of(Path::new(&entry.file_name())) {
                out.push((version, entry.path()));
            }
        }
        Ok(out)
    }

    /// Every version record of a secret (decrypted), unordered. Temporary files are skipped.
    fn records(&self, name: &SecretName) -> Result<Vec<Record>, StoreError> {
        self.version_files(name)?.iter().map(|(version, path)| self.open_and_remember(path, name, version)).collect()
    }

    /// The version with the highest sequence, decrypted (and so authenticated). Versions already seen
    /// are ranked by their remembered sequence; only unseen ones and the winner are decrypted. A secret with
    /// one version has nothing to rank: its file is read and nothing is remembered (an inventory of 10,000
    /// such secrets keeps no 10,000 paths in memory).
    fn current(&self, name: &SecretName) -> Result<Option<Record>, StoreError> {
        self.current_in(&Dir::unopened(&self.root), name)
    }

    /// [`Inner::current`], reading the `current` link and the file it names relative to `root` (a handle on
    /// the data directory, for bulk reads).
    fn current_in(&self, root: &Dir, name: &SecretName) -> Result<Option<Record>, StoreError> {
        if let Some(rec) = self.current_by_hint(root, name)? {
            return Ok(Some(rec));
        }
        let files = self.version_files(name)?;
        if let [(version, path)] = files.as_slice() {
            return self.open_file(path, name, version).map(Some);
        }
        // The best so far, with its record when it was decrypted just now (then it need not be read again:
        // a fresh process — every `patrol plan` — reads each current version file once, not twice).
        let mut best: Option<(u64, String, PathBuf, Option<Record>)> = None;
        for (version, path) in files {
            let (sequence, rec) = match self.known_sequence(&path) {
                Some(s) => (s, None),
                None => {
                    let rec = self.open_and_remember(&path, name, &version)?;
                    (rec.sequence, Some(rec))
                }
            };
            if best.as_ref().is_none_or(|(s, ..)| sequence > *s) {
                best = Some((sequence, version, path, rec));
            }
        }
        let Some((sequence, version, path, read)) = best else { return Ok(None) };
        let rec = match read {
            Some(rec) => rec,
            None => self.open_file(&path, name, &version)?,
        };
        if rec.sequence != sequence {
            // Cannot happen through this store; rank from scratch rather than trust the memory.
            return Ok(self.records(name)?.into_iter().max_by_key(|r| r.sequence));
        }
        Ok(Some(rec))
    }

    /// The version the secret's `current` link names (see the module documentation), `None` when there is
    /// no link, it names something other than a version file of this directory, or that file does not exist:
    /// then only a listing can tell.
    fn current_by_hint(&self, root: &Dir, name: &SecretName) -> Result<Option<Record>, StoreError> {
        let dir = dir_name(name);
        let Some(target) = root.read_link(&format!("{dir}/{HINT}")) else { return Ok(None) };
        let Some(version) = target.to_str().and_then(version_of_file_name) else { return Ok(None) };
        self.open_at(&At::In(root, &format!("{dir}/{version}.{EXT}")), name, &version)
    }

    /// Points the secret's `current` link at `version`, durably, before that version's file is written (see
    /// the module documentation). Called with the secret's locks held. Without symbolic links (not Unix),
    /// there is no link and readers list the directory.
    fn point_hint_at(&self, name: &SecretName, version: &str) -> Result<(), StoreError> {
        #[cfg(unix)]
        {
            let dir = self.secret_dir(name);
            let tmp = dir.join(format!(".{HINT}.{}.tmp", uuid::Uuid::new_v4().simple()));
            let linked = std::os::unix::fs::symlink(format!("{version}.{EXT}"), &tmp)
                .and_then(|()| std::fs::rename(&tmp, dir.join(HINT)))
                .and_then(|()| std::fs::File::open(&dir)?.sync_all());
            if let Err(e) = linked {
                let _ = std::fs::remove_file(&tmp);
                return Err(other("set", format!("{}: {e}", dir.join(HINT).display())));
            }
        }
        #[cfg(not(unix))]
        let _ = (name, version);
        Ok(())
    }

    /// The sequence a new version of the secret gets: one above every version's. Versions already seen
    /// are ranked by their remembered sequence (fixed for a version's life), so only unseen files are
    /// decrypted; the current one need not be.
    fn next_sequence(&self, name: &SecretName) -> Result<u64, StoreError> {
        let mut max = 0;
        for (version, path) in self.version_files(name)? {
            let sequence = match self.known_sequence(&path) {
                Some(s) => s,
                None => self.open_and_remember(&path, name, &version)?.sequence,
            };
            max = max.max(sequence);
        }
        Ok(max + 1)
    }

    /// The exclusive OS lock on the secret's `.lock` file: writers of one secret in different processes
    /// (an owner's refresh token is stored by whichever process refreshed it) take turns, so two new
    /// versions never get the same sequence and no process sweeps another's temporary file.
    fn lock_across_processes(
        &self,
        name: &SecretName,
        operation: &'static str,
    ) -> Result<crate::state::FileLock, StoreError> {
        let dir = self.secret_dir(name);
        create_private_dir(&dir).map_err(|e| other(operation, format!("{}: {e}", dir.display())))?;
        let path = dir.join(".lock");
        crate::state::lock_file(&path).map_err(|e| other(operation, format!("{}: {e}", path.display())))
    }

    fn write(&self, rec: &Record) -> Result<(), StoreError> {
        let name = SecretName::parse(&rec.name).map_err(|e| other("write", e.to_string()))?;
        let dir = self.secret_dir(&name);
        create_private_dir(&dir).map_err(|e| other("write", format!("{}: {e}", dir.display())))?;
        let path = dir.join(format!("{}.{EXT}", rec.version));
        let sealed = self.seal(rec)?;
        let crash = self.crash_after.lock().unwrap_or_else(|p| p.into_inner()).take();
        if let Some(n) = crash {
            // What a kill -9 during write_atomic leaves behind: a partial temporary file, no rename.
            let tmp = dir.join(format!(".{}.{EXT}.{}.tmp", rec.version, uuid::Uuid::new_v4().simple()));
            std::fs::write(&tmp, &sealed[..n.min(sealed.len())])
                .map_err(|e| other("write", format!("{}: {e}", tmp.display())))?;
            return Err(other("write", "simulated crash in the middle of a write"));
        }
        sweep_temporaries(&dir);
        write_atomic(&path, &sealed).map_err(|e| other("write", format!("{}: {e}", path.display())))?;
        self.remember(&path, rec.sequence);
        Ok(())
    }
}

/// The directory of a secret's versions, under the data directory. Key Vault names are case-insensitive and
/// case-preserving; the record keeps the casing.
fn dir_name(name: &SecretName) -> String {
    name.as_str().to_ascii_lowercase()
}

/// Where a version file is: a path, or a name relative to a directory handle.
enum At<'a> {
    Path(&'a Path),
    In(&'a Dir, &'a str),
}

impl At<'_> {
    /// The whole file into `buf`; `false` when it does not exist.
    fn read_into(&self, buf: &mut Vec<u8>) -> std::io::Result<bool> {
        match self {
            Self::Path(p) => crate::state::read_into(p, buf),
            Self::In(dir, name) => dir.read_until(name, buf, |_| false),
        }
    }

    /// Its path, for messages.
    fn path(&self) -> PathBuf {
        match self {
            Self::Path(p) => p.to_path_buf(),
            Self::In(dir, name) => dir.join(name),
        }
    }
}

/// The version id of a finished version file, `None` for temporary or foreign files.
fn version_of(path: &Path) -> Option<String> {
    version_of_file_name(path.file_name()?.to_str()?)
}

/// [`version_of`] for a bare file name (no directory part).
fn version_of_file_name(file: &str) -> Option<String> {
    let version = file.strip_suffix(EXT).and_then(|f| f.strip_suffix('.'))?;
    is_version_id(version).then(|| version.to_owned())
}

/// Removes temporary files an interrupted write left behind.
fn sweep_temporaries(dir: &Path) {
    if let Ok(rd) = std::fs::read_dir(dir) {
        for entry in rd.flatten() {
            let n = entry.file_name();
            let n = n.to_string_lossy();
            if n.starts_with('.') && n.ends_with(".tmp") {
                let _ = std::fs::remove_file(entry.path());
            }
        }
    }
}

fn properties(name: &SecretName, r: &Record) -> VersionProperties {
    VersionProperties { tags: r.tags.clone(), ..properties_without_tags(name, r) }
}

fn properties_without_tags(name: &SecretName, r: &Record) -> VersionProperties {
    VersionProperties {
        name: name.clone(),
        version: r.version.clone(),
        enabled: r.enabled,
        expires: r.expires.and_then(from_unix),
        created: from_unix(r.created),
        updated: from_unix(r.updated),
        content_type: r.content_type.clone(),
        tags: BTreeMap::new(),
    }
}

fn is_version_id(v: &str) -> bool {
    v.len() == 32 && v.bytes().all(|b| b.is_ascii_hexdigit())
}

#[async_trait]
impl SecretStore for FileSecretStore {
    async fn set(
        &self,
        name: &SecretName,
        value: &SecretString,
        new: NewVersion,
    ) -> Result<VersionProperties, StoreError> {
        tags::validate(&new.tags)?;
        if value.expose_secret().len() > MAX_VALUE_BYTES {
            return Err(other("set", format!("the value of {name} exceeds Key Vault's {MAX_VALUE_BYTES}-byte limit")));
        }
        if new.content_type.as_ref().is_some_and(|c| c.chars().count() > 255) {
            return Err(other("set", "content type must be at most 255 characters"));
        }
        let name = name.clone();
        let value = value.clone();
        self.blocking("set", move |inner| {
            let lock = inner.lock_of(&name);
            let _guard = lock.lock().unwrap_or_else(|p| p.into_inner());
            let _os_lock = inner.lock_across_processes(&name, "set")?;
            let sequence = inner.next_sequence(&name)?;
            let now = inner.clock.now().unix_timestamp();
            let rec = Record {
                name: name.as_str().to_owned(),
                version: uuid::Uuid::new_v4().simple().to_string(),
                sequence,
                value: value.expose_secret().to_owned(),
                enabled: true,
                expires: unix(new.expires),
                not_before: unix(new.not_before),
                created: now,
                updated: now,
                content_type: new.content_type,
                tags: new.tags,
            };
            inner.point_hint_at(&name, &rec.version)?;
            inner.write(&rec)?;
            Ok(properties(&name, &rec))
        })
        .await
    }

    async fn get(&self, name: &SecretName, version: Option<&str>) -> Result<Option<StoredSecret>, StoreError> {
        let name = name.clone();
        let version = version.map(str::to_owned);
        self.blocking("get", move |inner| {
            let rec = match version {
                None => inner.current(&name)?,
                Some(v) if !is_version_id(&v) => None,
                Some(v) => {
                    let path = inner.secret_dir(&name).join(format!("{}.{EXT}", v.to_ascii_lowercase()));
                    if path.is_file() { Some(inner.open_file(&path, &name, &v.to_ascii_lowercase())?) } else { None }
                }
            };
            let Some(rec) = rec else { return Ok(None) };
            if !rec.enabled {
                return Err(StoreError::Disabled { name, version: rec.version.clone() });
            }
            Ok(Some(StoredSecret { properties: properties(&name, &rec), value: SecretString::from(rec.value.clone()) }))
        })
        .await
    }

    /// Many secrets per blocking task (see [`crate::state::map_blocking`]), not one hand-off each.
    async fn current_properties(
        &self,
        names: &[SecretName],
        _concurrency: usize,
    ) -> Vec<Result<Option<VersionProperties>, StoreError>> {
        let inner = Arc::clone(&self.inner);
        // Each secret's link and version file are opened relative to one handle on the data directory.
        let root = Dir::open(&inner.root);
        crate::state::map_blocking(
            names.to_vec(),
            move |name| {
                let Some(mut rec) = inner.current_in(&root, &name)? else { return Ok(None) };
                if !rec.enabled {
                    return Err(StoreError::Disabled { name, version: rec.version.clone() });
                }
                // The record is dropped here (its value zeroed): its tags move rather than being copied.
                let tags = std::mem::take(&mut rec.tags);
                Ok(Some(VersionProperties { tags, ..properties_without_tags(&name, &rec) }))
            },
            |message| Err(other("get", message)),
        )
        .await
    }

    async fn list(&self) -> Result<Vec<SecretSummary>, StoreError> {
        self.blocking("list", move |inner| {
            let rd =
                std::fs::read_dir(&inner.root).map_err(|e| other("list", format!("{}: {e}", inner.root.display())))?;
            let mut out = Vec::new();
            for entry in rd.flatten() {
                if !entry.path().is_dir() {
                    continue;
                }
                let Ok(name) = SecretName::parse(&entry.file_name().to_string_lossy()) else { continue };
                if let Some(cur) = inner.current(&name)? {
                    let name = SecretName::parse(&cur.name).unwrap_or(name);
                    out.push(SecretSummary {
                        name,
                        enabled: cur.enabled,
                        expires: cur.expires.and_then(from_unix),
                        content_type: cur.content_type.clone(),
                        tags: cur.tags.clone(),
                    });
                }
            }
            out.sort_by(|a, b| a.name.cmp(&b.name));
            Ok(out)
        })
        .await
    }

    async fn list_versions(&self, name: &SecretName) -> Result<Vec<VersionProperties>, StoreError> {
        let name = name.clone();
        self.blocking("list versions", move |inner| {
            let mut recs = inner.records(&name)?;
            recs.sort_by_key(|r| r.sequence);
            Ok(recs.iter().map(|r| properties(&name, r)).collect())
        })
        .await
    }

    async fn update(
        &self,
        name: &SecretName,
        version: &str,
        update: PropertiesUpdate,
    ) -> Result<VersionProperties, StoreError> {
        if let Some(t) = &update.tags {
            tags::validate(t)?;
        }
        let name = name.clone();
        let version = version.to_ascii_lowercase();
        self.blocking("update", move |inner| {
            let lock = inner.lock_of(&name);
            let _guard = lock.lock().unwrap_or_else(|p| p.into_inner());
            let path = inner.secret_dir(&name).join(format!("{version}.{EXT}"));
            let _os_lock = if path.is_file() { Some(inner.lock_across_processes(&name, "update")?) } else { None };
            if !is_version_id(&version) || !path.is_file() {
                return Err(other("update", format!("secret {name} has no version {version:?}")));
            }
            let mut rec = inner.open_file(&path, &name, &version)?;
            if let Some(e) = update.enabled {
                rec.enabled = e;
            }
            if let Some(x) = update.expires {
                rec.expires = Some(x.unix_timestamp());
            }
            if let Some(t) = update.tags {
                rec.tags = t;
            }
            rec.updated = inner.clock.now().unix_timestamp();
            inner.write(&rec)?;
            Ok(properties(&name, &rec))
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn store(dir: &Path) -> FileSecretStore {
        FileSecretStore::open(dir.join("data"), &dir.join("store.key"), Clock::system()).unwrap()
    }

    #[test]
    fn version_file_names() {
        assert_eq!(
            version_of(Path::new("a/0123456789abcdef0123456789abcdef.pse")).as_deref(),
            Some("0123456789abcdef0123456789abcdef")
        );
        assert!(version_of(Path::new("a/.0123456789abcdef0123456789abcdef.pse.x.tmp")).is_none());
        assert!(version_of(Path::new("a/short.pse")).is_none());
    }

    #[tokio::test]
    async fn key_must_live_outside_the_data() {
        let dir = tempfile::tempdir().unwrap();
        let e = FileSecretStore::open(dir.path(), &dir.path().join("k"), Clock::system()).unwrap_err();
        assert!(e.to_string().contains("outside"), "{e}");
    }

    #[cfg(unix)]
    #[tokio::test]
    async fn refuses_a_world_readable_key() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let _ = store(dir.path());
        let key = dir.path().join("store.key");
        assert_eq!(std::fs::metadata(&key).unwrap().permissions().mode() & 0o777, 0o600);
        std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o644)).unwrap();
        let e = FileSecretStore::open(dir.path().join("data"), &key, Clock::system()).unwrap_err();
        assert!(e.to_string().contains("chmod 600"), "{e}");
    }

    #[tokio::test]
    async fn moved_file_fails_authentication() {
        let dir = tempfile::tempdir().unwrap();
        let s = store(dir.path());
        let a = SecretName::parse("a").unwrap();
        let b = SecretName::parse("b").unwrap();
        let pa = s.set(&a, &SecretString::from("va"), NewVersion::default()).await.unwrap();
        let pb = s.set(&b, &SecretString::from("vb"), NewVersion::default()).await.unwrap();
        let from = s.root().join("a").join(format!("{}.pse", pa.version));
        let to = s.root().join("b").join(format!("{}.pse", pb.version));
        std::fs::copy(from, to).unwrap();
        let e = s.get(&b, None).await.unwrap_err();
        assert!(e.to_string().contains("failed authentication"), "{e}");
    }
    #[tokio::test]
    async fn bulk_current_properties_are_what_get_finds() {
        let dir = tempfile::tempdir().unwrap();
        let s = store(dir.path());
        let mut names = Vec::new();
        for i in 0..150 {
            let name = SecretName::parse(&format!("bulk-{i}")).unwrap();
            if i % 3 != 0 {
                s.set(&name, &SecretString::from(format!("v{i}")), NewVersion::default()).await.unwrap();
            }
            if i % 3 == 2 {
                s.set(&name, &SecretString::from(format!("w{i}")), NewVersion::default()).await.unwrap();
            }
            names.push(name);
        }
        let off = s.get(&names[4], None).await.unwrap().unwrap().properties.version;
        s.update(&names[4], &off, PropertiesUpdate { enabled: Some(false), ..Default::default() }).await.unwrap();
        // A fresh instance (another process) reads in bulk exactly what `get` finds, in order.
        let fresh =
            FileSecretStore::open(dir.path().join("data"), &dir.path().join("store.key"), Clock::system()).unwrap();
        let bulk = fresh.current_properties(&names, 8).await;
        assert_eq!(bulk.len(), names.len());
        for (name, got) in names.iter().zip(bulk) {
            match (s.get(name, None).await, got) {
                (Ok(one), Ok(many)) => assert_eq!(one.map(|x| x.properties), many, "{name}"),
                (Err(StoreError::Disabled { .. }), Err(StoreError::Disabled { .. })) => {}
                (one, many) => panic!("{name}: get {one:?}, bulk {many:?}"),
            }
        }
    }

    #[tokio::test]
    async fn current_version_is_the_newest_with_or_without_remembered_sequences() {
        let dir = tempfile::tempdir().unwrap();
        let s = store(dir.path());
        let a = SecretName::parse("a").unwrap();
        let mut versions = Vec::new();
        for i in 0..6 {
            versions
                .push(s.set(&a, &SecretString::from(format!("v{i}")), NewVersion::default()).await.unwrap().version);
        }
        // Updating an old version rewrites its file; it stays old.
        let upd = PropertiesUpdate { enabled: Some(false), ..Default::default() };
        s.update(&a, &versions[1], upd).await.unwrap();
        // Without the `current` link (a directory an earlier patrol wrote), versions are ranked: this
        // instance ranks from memory; a fresh one (another process) must decrypt to rank.
        let _ = std::fs::remove_file(s.root().join("a").join(HINT));
        let fresh =
            FileSecretStore::open(dir.path().join("data"), &dir.path().join("store.key"), Clock::system()).unwrap();
        for st in [&s, &fresh] {
            let cur = st.get(&a, None).await.unwrap().unwrap();
            assert_eq!(cur.properties.version, versions[5]);
            assert_eq!(cur.value.expose_secret(), "v5");
        }
        // A version written by the other instance is seen by this one.
        let v6 = fresh.set(&a, &SecretString::from("v6"), NewVersion::default()).await.unwrap().version;
        assert_eq!(s.get(&a, None).await.unwrap().unwrap().properties.version, v6);
        assert_eq!(s.list_versions(&a).await.unwrap().len(), 7);
    }

    /// The `current` link only ever saves a listing: with it, without it, pointing at a version whose write
    /// was interrupted, or at something that is not a version file here, the current version is the same.
    #[cfg(unix)]
    #[tokio::test]
    async fn the_current_link_is_a_shortcut_never_a_different_answer() {
        let dir = tempfile::tempdir().unwrap();
        let s = store(dir.path());
        let a = SecretName::parse("Linked").unwrap();
        let link = s.root().join("linked").join(HINT);
        let fresh =
            || FileSecretStore::open(dir.path().join("data"), &dir.path().join("store.key"), Clock::system()).unwrap();
        let mut versions = Vec::new();
        for i in 0..3 {
            versions
                .push(s.set(&a, &SecretString::from(format!("v{i}")), NewVersion::default()).await.unwrap().version);
            assert_eq!(std::fs::read_link(&link).unwrap(), Path::new(&format!("{}.pse", versions[i])));
        }
        let current = |st: FileSecretStore| {
            let a = a.clone();
            async move {
                let one = st.get(&a, None).await.unwrap().unwrap();
                let bulk = st.current_properties(std::slice::from_ref(&a), 4).await.remove(0).unwrap().unwrap();
                assert_eq!(one.properties, bulk);
                (one.properties.version, one.value.expose_secret().to_owned())
            }
        };
        assert_eq!(current(fresh()).await, (versions[2].clone(), "v2".to_owned()));

        // Killed after the link moved, before the version file was in place: the link names a file that
        // does not exist, and the newest version that does is current.
        s.simulate_crash_on_next_write(10);
        s.set(&a, &SecretString::from("lost"), NewVersion::default()).await.unwrap_err();
        let dangling = std::fs::read_link(&link).unwrap();
        assert!(!s.root().join("linked").join(&dangling).exists(), "{dangling:?}");
        assert_eq!(current(fresh()).await, (versions[2].clone(), "v2".to_owned()));
        assert_eq!(s.list_versions(&a).await.unwrap().len(), 3);
        // The next write puts things right.
        let v3 = s.set(&a, &SecretString::from("v3"), NewVersion::default()).await.unwrap().version;
        assert_eq!(current(fresh()).await, (v3.clone(), "v3".to_owned()));
        assert!(
            std::fs::read_dir(s.root().join("linked")).unwrap().all(|e| !e
                .unwrap()
                .file_name()
                .to_string_lossy()
                .ends_with(".tmp"))
        );

        // No link (an earlier patrol's directory), or one that names anything but a version file of this
        // directory: the directory is listed.
        let other = SecretName::parse("other").unwrap();
        let elsewhere = s.set(&other, &SecretString::from("not mine"), NewVersion::default()).await.unwrap().version;
        for target in [
            None,
            Some(format!("../other/{elsewhere}.pse")),
            Some("current".into()),
            Some("(a regular file)".into()),
            Some(format!("{}.pse.tmp", versions[0])),
        ] {
            let _ = std::fs::remove_file(&link);
            if let Some(t) = &target {
                std::os::unix::fs::symlink(t, &link).unwrap();
            }
            if target.as_deref() == Some("(a regular file)") {
                // A copy that followed the link: a regular file named `current`.
                std::fs::remove_file(&link).unwrap();
                std::fs::write(&link, b"not a link").unwrap();
            }
            assert_eq!(current(fresh()).await, (v3.clone(), "v3".to_owned()), "{target:?}");
        }
    }
}
