//! Rotation engine integration tests against real services: Azurite (blob leases and the blob journal).
//! The tests against patrol-emulator's Azure DevOps side are added once that side has landed.

use patrol::rotation::blob::BlobAccount;
use patrol::rotation::lease::Leases;
use patrol::state::{StateError, StateStore};
use secrecy::SecretString;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

struct Azurite {
    child: Child,
    port: u16,
    _dir: tempfile::TempDir,
}

impl Drop for Azurite {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn azurite() -> Option<Azurite> {
    let bin = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tools/node_modules/.bin/azurite-blob");
    if !bin.exists() {
        panic!("azurite-blob is not installed in tools/node_modules (run scripts/setup.sh)");
    }
    let port = std::net::TcpListener::bind("127.0.0.1:0").ok()?.local_addr().ok()?.port();
    let dir = tempfile::tempdir().ok()?;
    let child = Command::new(bin)
        .args([
            "--blobHost",
            "127.0.0.1",
            "--blobPort",
            &port.to_string(),
            "--inMemoryPersistence",
            "--skipApiVersionCheck",
            "--silent",
            "--location",
        ])
        .arg(dir.path())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .ok()?;
    for _ in 0..100 {
        if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return Some(Azurite { child, port, _dir: dir });
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    None
}

fn account(a: &Azurite) -> BlobAccount {
    BlobAccount::from_connection_string(&SecretString::from(format!(
        "UseDevelopmentStorage=true;BlobEndpoint=http://127.0.0.1:{}/devstoreaccount1",
        a.port
    )))
    .unwrap()
}

#[tokio::test]
async fn blob_journal_is_compare_and_swap_on_azurite() {
    let Some(az) = azurite() else { return };
    let s = account(&az).state_store();
    assert!(s.load("journal/tok-a").await.unwrap().is_none());
    let t1 = s.save("journal/tok-a", b"{\"v\":1}", None).await.unwrap();
    assert!(matches!(s.save("journal/tok-a", b"{}", None).await, Err(StateError::Conflict { .. })));
    let t2 = s.save("journal/tok-a", b"{\"v\":2}", Some(&t1)).await.unwrap();
    assert!(matches!(s.save("journal/tok-a", b"{}", Some(&t1)).await, Err(StateError::Conflict { .. })));
    let (body, tag) = s.load("journal/tok-a").await.unwrap().unwrap();
    assert_eq!((body.as_slice(), tag), (&b"{\"v\":2}"[..], t2));
    s.save("journal/tok-b", b"{}", None).await.unwrap();
    s.save("notify/sent", b"{}", None).await.unwrap();
    assert_eq!(s.list("journal/").await.unwrap(), vec!["journal/tok-a".to_owned(), "journal/tok-b".to_owned()]);
    // A wrong key is refused by the blob service (SharedKey is really checked).
    let bad = BlobAccount::from_connection_string(&SecretString::from(format!(
        "AccountName=devstoreaccount1;AccountKey=a2V5a2V5;BlobEndpoint=http://127.0.0.1:{}/devstoreaccount1",
        az.port
    )))
    .unwrap()
    .state_store();
    assert!(matches!(bad.load("journal/tok-a").await, Err(StateError::Io { .. })));
}

#[tokio::test]
async fn blob_leases_exclude_across_accounts_and_release() {
    let Some(az) = azurite() else { return };
    // Two independent clients stand for two Functions instances.
    let (a, b) = (account(&az).leases(), account(&az).leases());
    let held = a.try_acquire("token/tok-a").await.unwrap().expect("free lease");
    assert!(b.try_acquire("token/tok-a").await.unwrap().is_none(), "held by the other instance");
    assert!(b.try_acquire("token/tok-b").await.unwrap().is_some());
    assert!(!held.is_lost());
    drop(held);
    // Release happens in the background; it is quick.
    let mut got = None;
    for _ in 0..50 {
        if let Some(g) = b.try_acquire("token/tok-a").await.unwrap() {
            got = Some(g);
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(got.is_some(), "released lease can be taken");
}
