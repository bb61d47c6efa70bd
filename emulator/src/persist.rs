//! `--state FILE`: loads the world at start and saves it after changes (debounced) and at shutdown,
//! with atomic writes (temporary file in the same directory, fsync, rename).

use crate::context::Ctx;
use crate::state::State;
use anyhow::Context as _;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

/// Reads a state file; `Ok(None)` when it does not exist yet.
pub fn load(path: &Path) -> anyhow::Result<Option<State>> {
    let bytes = match std::fs::read(path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e).with_context(|| format!("reading state file {}", path.display())),
    };
    let mut s: State = serde_json::from_slice(&bytes)
        .with_context(|| format!("state file {} is not valid emulator state", path.display()))?;
    s.rebuild_index();
    Ok(Some(s))
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

pub fn save(ctx: &Ctx, path: &Path) -> anyhow::Result<()> {
    let bytes = ctx.snapshot_json().context("serializing emulator state")?;
    write_atomic(path, &bytes)
}

/// Saves after each burst of changes (at most every 50 ms).
pub fn spawn_writer(ctx: Arc<Ctx>, path: PathBuf) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        loop {
            ctx.dirty.notified().await;
            tokio::time::sleep(Duration::from_millis(50)).await;
            let c = ctx.clone();
            let p = path.clone();
            match tokio::task::spawn_blocking(move || save(&c, &p)).await {
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
