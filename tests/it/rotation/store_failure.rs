//! The secret store refuses the write of a new version (its directory is made read-only — and immutable
//! when the test runs as root, who ignores permission bits). The new PAT must be revoked at once, the old
//! one stays current and authenticates, a failure notice names the step, and the next run after the store
//! recovers rotates normally.

use super::world::{ORG, OWNER, World, seed};
use patrol::devops::DisplayFilter;
use patrol::notify::Notice;
use patrol::rotation::engine::RunOptions;
use std::path::{Path, PathBuf};
use std::process::Command;

/// Makes a directory refuse new files until dropped.
pub(super) struct Frozen(PathBuf, bool);

impl Frozen {
    pub(super) fn new(dir: &Path) -> Frozen {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o500)).unwrap();
        let probe = dir.join("probe");
        if std::fs::write(&probe, b"x").is_err() {
            return Frozen(dir.to_owned(), false);
        }
        std::fs::remove_file(&probe).unwrap();
        // Root: permission bits do not stop it; the immutable attribute does.
        let ok = Command::new("chattr").arg("+i").arg(dir).status().map(|s| s.success()).unwrap_or(false);
        assert!(ok && std::fs::write(&probe, b"x").is_err(), "cannot make {} refuse writes", dir.display());
        Frozen(dir.to_owned(), true)
    }
}

impl Drop for Frozen {
    fn drop(&mut self) {
        use std::os::unix::fs::PermissionsExt;
        if self.1 {
            let _ = Command::new("chattr").arg("-i").arg(&self.0).status();
        }
        let _ = std::fs::set_permissions(&self.0, std::fs::Permissions::from_mode(0o700));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_store_write_revokes_the_new_pat_at_once_and_keeps_the_old_one() {
    let policy = format!(
        "[defaults]\norganization = \"{ORG}\"\nowner = \"{OWNER}\"\nscopes = \"vso.code\"\n\
         [[token]]\nsecret = \"store-fails\"\ndisplay_name = \"Store fails\"\nvalidity_days = 30\n\
         rotate_before_days = 7\ngrace_days = 2\n"
    );
    let w = World::start(seed(), &policy).await;
    let engine = w.local.engine().unwrap();
    let first = engine.run(RunOptions::default()).await.unwrap();
    assert_eq!((first.rotated, first.failed), (1, 0), "{}", first.line());
    let (old, old_value) = w.current("store-fails").await.unwrap();

    let frozen = Frozen::new(&w.dir.path().join("state/secrets/store-fails"));
    let failed = engine.rotate_one("store-fails", true, false, None).await.unwrap();
    assert_eq!((failed.rotated, failed.failed), (0, 1), "{}", failed.line());
    let report = &failed.reports[0];
    assert_eq!(report.revoked.len(), 1, "{report:?}");
    let new = report.revoked[0];
    assert_ne!(new, old);
    // A failure notice names the step.
    let notice = failed.notices.iter().find_map(|a| match &a.notice {
        Notice::RotationFailed { step, next, .. } => Some((step.clone(), next.clone())),
        _ => None,
    });
    let (step, next) = notice.expect("a RotationFailed notice");
    assert_eq!(step, "store");
    assert!(next.contains("revoked"), "{next}");
    // The new PAT is revoked (not merely left to expire); the old one is current, live and works.
    let revoked = w.pats(DisplayFilter::Revoked).await;
    assert!(revoked.iter().any(|p| p.authorization_id == new), "the new PAT was revoked at once");
    let active: Vec<_> = w
        .pats(DisplayFilter::Active)
        .await
        .into_iter()
        .filter(|p| p.display_name.starts_with("Store fails (patrol:"))
        .map(|p| p.authorization_id)
        .collect();
    assert_eq!(active, vec![old]);
    assert_eq!(w.current("store-fails").await.unwrap(), (old, old_value.clone()));
    assert!(w.authenticates(&old_value).await);

    // The store recovers: the next forced run rotates, and the old PAT starts its grace.
    drop(frozen);
    let retry = engine.rotate_one("store-fails", true, false, None).await.unwrap();
    assert_eq!((retry.rotated, retry.failed), (1, 0), "{}", retry.line());
    let (cur, value) = w.current("store-fails").await.unwrap();
    assert!(cur != old && cur != new);
    assert!(w.authenticates(&value).await && w.authenticates(&old_value).await);
}
