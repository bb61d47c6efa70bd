//! `--state FILE`: loads the world at start and saves it after changes (debounced) and at shutdown,
//! with atomic writes (temporary file in the same directory, fsync, rename).
//!
//! One file holds everything: the Azure DevOps / Entra world at the top level and the emulated Key Vault
//! under `"keyVault"` (see `keyvault::snapshot`). One file means one atomic replace: a refresh token
//! redeemed in Entra and the new one written to the vault are never saved apart. Files written before
//! the vault was saved (no `"keyVault"` key) load with an empty vault.
//!
//! The virtual clock's time at saving (`"virtualTime"`) is saved too, and a restart sets the clock to it
//! (it never moves backward, across restarts either): pending deletes and recoveries, `exp` / `validTo`
//! and the expiry events already raised stay in step with the clock that produced them.

use crate::context::Ctx;
use crate::keyvault::KvState;
use crate::keyvault::snapshot::{SECTION, VaultSnapshot};
use crate::keyvault::vault::Vault;
use crate::state::State;
use anyhow::Context as _;
use serde::Serialize;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use time::OffsetDateTime;

/// What a state file holds.
#[derive(Debug)]
pub struct Loaded {
    pub state: State,
    pub vault: Vault,
    /// The virtual time when the file was written (`None`: a file from before it was saved).
    pub virtual_time: Option<OffsetDateTime>,
}

/// Reads a state file; `Ok(None)` when it does not exist yet.
pub fn load(path: &Path) -> anyhow::Result<Option<Loaded>> {
    let bytes = match std::fs::read(path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e).with_context(|| format!("reading state file {}", path.display())),
    };
    let not_state = || format!("state file {} is not valid emulator state", path.display());
    // Two passes over the bytes: the world (which ignores the vault's key) and the vault's section alone
    // (which skips the rest), so the large world is never built as a `serde_json::Value`.
    let extras: Extras = serde_json::from_slice(&bytes).with_context(not_state)?;
    let vault = match extras.key_vault {
        None => Vault::default(),
        Some(section) => Vault::from_snapshot(section).map_err(|e| {
            anyhow::anyhow!("state file {}: the Key Vault section ({SECTION:?}) is not valid: {e}", path.display())
        })?,
    };
    let mut state: State = serde_json::from_slice(&bytes).with_context(not_state)?;
    state.rebuild_index();
    Ok(Some(Loaded { state, vault, virtual_time: extras.virtual_time }))
}

/// What a file holds besides the world (`None`: a file written before these were saved).
#[derive(serde::Deserialize)]
struct Extras {
    #[serde(rename = "keyVault", default)]
    key_vault: Option<serde_json::Value>,
    #[serde(rename = "virtualTime", default, with = "time::serde::rfc3339::option")]
    virtual_time: Option<OffsetDateTime>,
}

/// The file as written: the world's fields, then the vault's section.
#[derive(Serialize)]
struct FileOut<'a> {
    #[serde(flatten)]
    state: &'a State,
    #[serde(rename = "virtualTime", with = "time::serde::rfc3339")]
    virtual_time: OffsetDateTime,
    #[serde(rename = "keyVault")]
    vault: VaultSnapshot<'a>,
}

/// Writes `bytes` to `path` atomically.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    let dir = path.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
    let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("state");
    let tmp = dir.join(format!(".{name}.{}.tmp", uuid::Uuid::new_v4().simple()));
    let result = (|| -> anyhow::Result<()> {
        let mut opts = std::fs::OpenOptions::new();
        opts.write(true).create_new(true);
        #[cfg(unix)]
        std::os::unix::fs::OpenOptionsExt::mode(&mut opts, 0o600); // owner only
        let mut f = opts.open(&tmp).with_context(|| format!("creating {}", tmp.display()))?;
        f.write_all(bytes).with_context(|| format!("writing {}", tmp.display()))?;
        f.sync_all().with_context(|| format!("syncing {}", tmp.display()))?;
        std::fs::rename(&tmp, path).with_context(|| format!("replacing {}", path.display()))?;
        Ok(())
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

/// The world and the vault, serialized (both locked while serializing, so the file is one moment).
pub fn snapshot_json(ctx: &Ctx, kv: &KvState) -> serde_json::Result<Vec<u8>> {
    let vault = kv.vault.lock().unwrap_or_else(|p| p.into_inner());
    let state = ctx.state();
    serde_json::to_vec(&FileOut { state: &state, virtual_time: ctx.clock.now(), vault: vault.snapshot() })
}

pub fn save(ctx: &Ctx, kv: &KvState, path: &Path) -> anyhow::Result<()> {
    let bytes = snapshot_json(ctx, kv).context("serializing emulator state")?;
    write_atomic(path, &bytes)
}

/// Saves after each burst of changes to the world or the vault (at most every 50 ms).
pub fn spawn_writer(ctx: Arc<Ctx>, kv: Arc<KvState>, path: PathBuf) -> tokio::task::JoinHandle<()> {
    let vault_changes = kv.vault.lock().unwrap_or_else(|p| p.into_inner()).changes();
    tokio::spawn(async move {
        loop {
            tokio::select! {
                _ = ctx.dirty.notified() => {}
                _ = vault_changes.notified() => {}
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
            let c = ctx.clone();
            let k = kv.clone();
            let p = path.clone();
            match tokio::task::spawn_blocking(move || save(&c, &k, &p)).await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => tracing::error!(error = %format!("{e:#}"), "saving emulator state failed"),
                Err(e) => tracing::error!(error = %e, "state writer task failed"),
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_atomically_with_owner_only_permissions() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("state.json");
        write_atomic(&p, b"one").unwrap();
        write_atomic(&p, b"two").unwrap();
        assert_eq!(std::fs::read(&p).unwrap(), b"two");
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            assert_eq!(std::fs::metadata(&p).unwrap().permissions().mode() & 0o777, 0o600);
        }
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1, "no temporary files left behind");
        assert!(load(&dir.path().join("missing.json")).unwrap().is_none());
        std::fs::write(&p, b"{not state").unwrap();
        assert!(load(&p).unwrap_err().to_string().contains("not valid emulator state"));
    }
}
