//! The embedded file store: Key Vault-like versions, encryption at rest, permissions, crash safety.

use patrol::clock::Clock;
use patrol::domain::SecretName;
use patrol::store::{FileSecretStore, NewVersion, PropertiesUpdate, SecretStore, StoreError};
use secrecy::{ExposeSecret, SecretString};
use std::collections::BTreeMap;
use std::path::Path;

fn open(dir: &Path) -> FileSecretStore {
    FileSecretStore::open(dir.join("state/secrets"), &dir.join("store.key"), Clock::system()).unwrap()
}

fn name(s: &str) -> SecretName {
    SecretName::parse(s).unwrap()
}

fn all_files(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(d).unwrap().flatten() {
            if e.path().is_dir() {
                stack.push(e.path());
            } else {
                out.push(e.path());
            }
        }
    }
    out
}

#[tokio::test]
async fn versions_behave_like_key_vault() {
    let dir = tempfile::tempdir().unwrap();
    let s = open(dir.path());
    let n = name("ado-pat-Build");
    assert!(s.get(&n, None).await.unwrap().is_none());
    let tags = BTreeMap::from([("managed-by".to_owned(), "patrol".to_owned())]);
    let exp = time::OffsetDateTime::now_utc() + time::Duration::days(7);
    let v1 = s
        .set(
            &n,
            &SecretString::from("first-pat"),
            NewVersion { tags: tags.clone(), expires: Some(exp), ..Default::default() },
        )
        .await
        .unwrap();
    assert_eq!(v1.version.len(), 32);
    assert!(v1.version.bytes().all(|b| b.is_ascii_hexdigit()));
    assert_eq!(v1.expires.unwrap().unix_timestamp(), exp.unix_timestamp());
    let v2 = s.set(&n, &SecretString::from("second-pat"), NewVersion::default()).await.unwrap();
    assert_ne!(v1.version, v2.version);

    let cur = s.get(&n, None).await.unwrap().unwrap();
    assert_eq!(cur.value.expose_secret(), "second-pat");
    assert_eq!(cur.properties.version, v2.version);
    let old = s.get(&n, Some(&v1.version)).await.unwrap().unwrap();
    assert_eq!(old.value.expose_secret(), "first-pat");
    assert_eq!(old.properties.tags, tags);
    // Names are case-insensitive, as in Key Vault.
    assert_eq!(s.get(&name("ADO-PAT-BUILD"), None).await.unwrap().unwrap().value.expose_secret(), "second-pat");
    assert!(s.get(&n, Some("00000000000000000000000000000000")).await.unwrap().is_none());
    assert!(s.get(&n, Some("../../etc/passwd")).await.unwrap().is_none());

    let versions = s.list_versions(&n).await.unwrap();
    assert_eq!(
        versions.iter().map(|v| v.version.clone()).collect::<Vec<_>>(),
        vec![v1.version.clone(), v2.version.clone()]
    );

    // Disable the old version: reading it is refused, like Key Vault's 403 SecretDisabled.
    let upd = s.update(&n, &v1.version, PropertiesUpdate { enabled: Some(false), ..Default::default() }).await.unwrap();
    assert!(!upd.enabled);
    assert!(matches!(s.get(&n, Some(&v1.version)).await, Err(StoreError::Disabled { .. })));
    assert_eq!(s.get(&n, None).await.unwrap().unwrap().value.expose_secret(), "second-pat");
    assert!(s.update(&n, "ffffffffffffffffffffffffffffffff", PropertiesUpdate::default()).await.is_err());

    s.set(&name("other"), &SecretString::from("x"), NewVersion::default()).await.unwrap();
    let listed = s.list().await.unwrap();
    assert_eq!(listed.iter().map(|x| x.name.as_str()).collect::<Vec<_>>(), vec!["ado-pat-Build", "other"]);

    // Tag limits are enforced before anything is written.
    let too_many: BTreeMap<_, _> = (0..16).map(|i| (format!("t{i}"), "v".to_owned())).collect();
    let e = s.set(&n, &SecretString::from("x"), NewVersion { tags: too_many, ..Default::default() }).await;
    assert!(matches!(e, Err(StoreError::InvalidTag { .. })));
    assert_eq!(s.list_versions(&n).await.unwrap().len(), 2);
}

#[tokio::test]
async fn encrypted_at_rest_and_private() {
    let dir = tempfile::tempdir().unwrap();
    let s = open(dir.path());
    let value = "pat-value-that-must-never-appear-on-disk-7f3a";
    s.set(&name("enc"), &SecretString::from(value), NewVersion::default()).await.unwrap();
    let files = all_files(dir.path());
    assert!(files.len() >= 2, "{files:?}");
    for f in &files {
        let bytes = std::fs::read(f).unwrap();
        assert!(!String::from_utf8_lossy(&bytes).contains(value), "{} holds the value in clear", f.display());
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            assert_eq!(std::fs::metadata(f).unwrap().permissions().mode() & 0o777, 0o600, "{}", f.display());
        }
    }
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let d = dir.path().join("state/secrets/enc");
        assert_eq!(std::fs::metadata(d).unwrap().permissions().mode() & 0o777, 0o700);
    }
    // A different key cannot read the data.
    std::fs::rename(dir.path().join("store.key"), dir.path().join("old.key")).unwrap();
    let other = open(dir.path());
    let e = other.get(&name("enc"), None).await.unwrap_err();
    assert!(e.to_string().contains("failed authentication"), "{e}");
    assert!(!e.to_string().contains(value));
    // Reopening with the right key works (the key persists).
    std::fs::rename(dir.path().join("old.key"), dir.path().join("store.key")).unwrap();
    assert_eq!(open(dir.path()).get(&name("enc"), None).await.unwrap().unwrap().value.expose_secret(), value);
}

#[tokio::test]
async fn interrupted_write_leaves_previous_version_readable() {
    let dir = tempfile::tempdir().unwrap();
    let s = open(dir.path());
    let n = name("crashy");
    let v1 = s.set(&n, &SecretString::from("good-old-pat"), NewVersion::default()).await.unwrap();
    for cut in [0usize, 1, 20, 60] {
        s.simulate_crash_on_next_write(cut);
        assert!(s.set(&n, &SecretString::from("half-written-pat"), NewVersion::default()).await.is_err());
        // A fresh process (new store instance) sees the previous version, whole and current.
        let fresh = open(dir.path());
        let cur = fresh.get(&n, None).await.unwrap().unwrap();
        assert_eq!(cur.value.expose_secret(), "good-old-pat");
        assert_eq!(cur.properties.version, v1.version);
        assert_eq!(fresh.list_versions(&n).await.unwrap().len(), 1);
    }
    // A partial temporary file is on disk, as a kill would leave it.
    let leftovers = all_files(&dir.path().join("state/secrets/crashy"));
    assert!(leftovers.iter().any(|p| p.to_string_lossy().ends_with(".tmp")), "{leftovers:?}");
    // An interrupted property update also leaves the version as it was.
    s.simulate_crash_on_next_write(10);
    assert!(s.update(&n, &v1.version, PropertiesUpdate { enabled: Some(false), ..Default::default() }).await.is_err());
    assert!(s.get(&n, Some(&v1.version)).await.unwrap().unwrap().properties.enabled);
    // The next successful write sweeps the leftovers and becomes current.
    let v2 = s.set(&n, &SecretString::from("new-pat"), NewVersion::default()).await.unwrap();
    assert_eq!(s.get(&n, None).await.unwrap().unwrap().properties.version, v2.version);
    let mut leftovers = all_files(&dir.path().join("state/secrets/crashy"));
    // The writers' lock file (`.lock`, an OS file lock shared by every process) stays; it is not a version.
    leftovers.retain(|p| !p.ends_with(".lock"));
    // Neither is the `current` link, which names the new version (on Unix; elsewhere there is none).
    let link = dir.path().join("state/secrets/crashy/current");
    #[cfg(unix)]
    assert_eq!(std::fs::read_link(&link).unwrap(), std::path::PathBuf::from(format!("{}.pse", v2.version)));
    leftovers.retain(|p| p != &link);
    assert_eq!(leftovers.len(), 2, "{leftovers:?}");
}
