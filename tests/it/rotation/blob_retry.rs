//! Storage calls survive connections that fail under them (issue 19 item 3): Azurite behind a small
//! loopback proxy that, on demand, closes a connection as soon as a request arrives (what a keep-alive
//! connection the server had already closed looks like to the client) or forwards the request and then
//! closes the connection before the answer comes back (the write happened, its answer was lost).

use patrol::rotation::lease::{BlobLeases, Leases};
use patrol::state::blob::{BlobAccount, MAX_ATTEMPTS};
use patrol::state::{StateError, StateStore};
use secrecy::SecretString;
use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

#[derive(Debug, Clone, Copy)]
enum Fault {
    /// Close the connection when the request arrives; the server never sees it.
    DropRequest,
    /// Forward the request, let the server act on it, close the connection before its answer.
    LoseResponse,
}

#[derive(Default)]
struct Control {
    faults: Mutex<VecDeque<Fault>>,
    /// Drop every request.
    always_drop: AtomicBool,
    /// Requests that reached the proxy.
    requests: AtomicUsize,
}

struct Proxy {
    port: u16,
    control: Arc<Control>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn starts_request(chunk: &[u8]) -> bool {
    ["GET ", "PUT ", "HEAD ", "DELETE ", "POST "].iter().any(|m| chunk.starts_with(m.as_bytes()))
}

async fn proxy(upstream: u16) -> Proxy {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let control = Arc::new(Control::default());
    let c = control.clone();
    let task = tokio::spawn(async move {
        while let Ok((client, _)) = listener.accept().await {
            tokio::spawn(connection(client, upstream, c.clone()));
        }
    });
    Proxy { port, control, task }
}

async fn connection(client: TcpStream, upstream: u16, control: Arc<Control>) {
    let Ok(server) = TcpStream::connect(("127.0.0.1", upstream)).await else { return };
    let (mut client_r, mut client_w) = client.into_split();
    let (mut server_r, mut server_w) = server.into_split();
    let back = tokio::spawn(async move {
        let _ = tokio::io::copy(&mut server_r, &mut client_w).await;
    });
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = match client_r.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        let chunk = &buf[..n];
        if starts_request(chunk) {
            control.requests.fetch_add(1, Ordering::SeqCst);
            let fault = if control.always_drop.load(Ordering::SeqCst) {
                Some(Fault::DropRequest)
            } else {
                control.faults.lock().unwrap().pop_front()
            };
            match fault {
                Some(Fault::DropRequest) => break,
                Some(Fault::LoseResponse) => {
                    // The whole request (headers and body) reaches the server; its answer does not.
                    back.abort();
                    let _ = server_w.write_all(chunk).await;
                    let mut more = vec![0u8; 64 * 1024];
                    while let Ok(Ok(m)) =
                        tokio::time::timeout(Duration::from_millis(100), client_r.read(&mut more)).await
                    {
                        if m == 0 {
                            break;
                        }
                        let _ = server_w.write_all(&more[..m]).await;
                    }
                    tokio::time::sleep(Duration::from_millis(300)).await;
                    break;
                }
                None => {}
            }
        }
        if server_w.write_all(chunk).await.is_err() {
            break;
        }
    }
    back.abort();
}

fn through(p: &Proxy) -> BlobAccount {
    BlobAccount::from_connection_string(&SecretString::from(format!(
        "UseDevelopmentStorage=true;BlobEndpoint=http://127.0.0.1:{}/devstoreaccount1",
        p.port
    )))
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn storage_calls_are_retried_on_dropped_connections_within_a_bound() {
    let az = super::azurite().expect("azurite");
    let p = proxy(az.port).await;
    let account = through(&p);
    let state = account.state_store();
    let leases = BlobLeases::new(account.clone());
    let fail = |f: Fault| p.control.faults.lock().unwrap().push_back(f);

    // Warm up (creates the container) with no fault.
    let t0 = state.save("journal/retry", b"{\"v\":0}", None).await.unwrap();

    // A connection closed under each kind of call: the call is retried and succeeds.
    fail(Fault::DropRequest);
    let (body, tag) = state.load("journal/retry").await.unwrap().unwrap();
    assert_eq!((body.as_slice(), &tag), (&b"{\"v\":0}"[..], &t0));
    fail(Fault::DropRequest);
    let t1 = state.save("journal/retry", b"{\"v\":1}", Some(&t0)).await.unwrap();
    fail(Fault::DropRequest);
    fail(Fault::DropRequest);
    let held = leases.try_acquire("token/retry").await.unwrap().expect("a free lease, after two dropped connections");
    assert!(BlobLeases::new(account.clone()).try_acquire("token/retry").await.unwrap().is_none(), "really held");
    drop(held);

    // The write landed and its answer was lost: the retry (412) finds the document is its own.
    fail(Fault::LoseResponse);
    let t2 = state.save("journal/retry", b"{\"v\":2}", Some(&t1)).await.unwrap();
    let (body, tag) = state.load("journal/retry").await.unwrap().unwrap();
    assert_eq!((body.as_slice(), &tag), (&b"{\"v\":2}"[..], &t2));
    // …and a create (If-None-Match: *) likewise.
    fail(Fault::LoseResponse);
    state.save("journal/created", b"{\"new\":true}", None).await.unwrap();
    // A real conflict after a retry is still a conflict (the stored document is someone else's).
    fail(Fault::DropRequest);
    assert!(matches!(state.save("journal/retry", b"{\"v\":9}", Some(&t1)).await, Err(StateError::Conflict { .. })));
    assert_eq!(state.load("journal/retry").await.unwrap().unwrap().0, b"{\"v\":2}");

    // Bounded: a server that drops everything fails the call after MAX_ATTEMPTS tries, quickly.
    p.control.always_drop.store(true, Ordering::SeqCst);
    let before = p.control.requests.load(Ordering::SeqCst);
    let started = std::time::Instant::now();
    let e = state.load("journal/retry").await.unwrap_err();
    assert_eq!(p.control.requests.load(Ordering::SeqCst) - before, MAX_ATTEMPTS as usize, "{e}");
    assert!(started.elapsed() < Duration::from_secs(10), "{:?}", started.elapsed());
    assert!(e.to_string().contains(&format!("after {MAX_ATTEMPTS} attempts")), "{e}");
    let before = p.control.requests.load(Ordering::SeqCst);
    let e = leases.try_acquire("token/other").await.unwrap_err();
    assert_eq!(p.control.requests.load(Ordering::SeqCst) - before, MAX_ATTEMPTS as usize, "{e}");
}
