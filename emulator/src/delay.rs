//! Precise injected latency: a configured latency of 25 ms per call must cost the caller 25 ms, not the
//! 26–28 ms that `tokio::time::sleep` gives (tokio's timer wheel rounds every deadline up to the next
//! whole millisecond, and a parked runtime waits in `epoll_wait`, whose timeout is whole milliseconds
//! too). Over the hundreds of calls in a row that a rotation pass makes per lane, that overshoot alone
//! was 3–10 % of every call.
//!
//! One timer thread keeps the pending deadlines in a heap and waits on a condition variable with a
//! nanosecond timeout (a futex: the kernel's high-resolution timers, ~50 µs slack), waking each waiter
//! through a oneshot channel. Long waits (the rate limiter's multi-second delays) stay on tokio's timer.
//! If the thread cannot be started the wait falls back to tokio's timer.

use std::cmp::{Ordering, Reverse};
use std::collections::BinaryHeap;
use std::sync::{Condvar, Mutex, OnceLock};
use std::time::{Duration, Instant};
use tokio::sync::oneshot;

/// Waits shorter than this (from now) are timed by the precise timer thread.
const PRECISE_UP_TO: Duration = Duration::from_secs(2);

struct Entry {
    at: Instant,
    seq: u64,
    wake: oneshot::Sender<()>,
}

impl PartialEq for Entry {
    fn eq(&self, other: &Self) -> bool {
        (self.at, self.seq) == (other.at, other.seq)
    }
}
impl Eq for Entry {}
impl PartialOrd for Entry {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Entry {
    fn cmp(&self, other: &Self) -> Ordering {
        (self.at, self.seq).cmp(&(other.at, other.seq))
    }
}

#[derive(Default)]
struct Pending {
    heap: BinaryHeap<Reverse<Entry>>,
    seq: u64,
}

struct Timer {
    pending: Mutex<Pending>,
    changed: Condvar,
}

impl Timer {
    fn run(&self) {
        let mut p = self.pending.lock().unwrap_or_else(|e| e.into_inner());
        loop {
            let now = Instant::now();
            while p.heap.peek().is_some_and(|Reverse(e)| e.at <= now) {
                if let Some(Reverse(e)) = p.heap.pop() {
                    // The waiter may have gone (its request was dropped): nothing to do then.
                    let _ = e.wake.send(());
                }
            }
            p = match p.heap.peek().map(|Reverse(e)| e.at - now) {
                None => self.changed.wait(p).unwrap_or_else(|e| e.into_inner()),
                Some(wait) => self.changed.wait_timeout(p, wait).unwrap_or_else(|e| e.into_inner()).0,
            };
        }
    }

    fn add(&self, at: Instant) -> oneshot::Receiver<()> {
        let (tx, rx) = oneshot::channel();
        let mut p = self.pending.lock().unwrap_or_else(|e| e.into_inner());
        p.seq += 1;
        let seq = p.seq;
        let earliest = p.heap.peek().is_none_or(|Reverse(e)| at < e.at);
        p.heap.push(Reverse(Entry { at, seq, wake: tx }));
        drop(p);
        if earliest {
            self.changed.notify_one();
        }
        rx
    }
}

/// The timer thread, started on first use; `None` if it could not be started.
fn timer() -> Option<&'static Timer> {
    static TIMER: OnceLock<Option<&'static Timer>> = OnceLock::new();
    *TIMER.get_or_init(|| {
        let t: &'static Timer =
            Box::leak(Box::new(Timer { pending: Mutex::new(Pending::default()), changed: Condvar::new() }));
        std::thread::Builder::new().name("emulator-latency".into()).spawn(move || t.run()).ok().map(|_| t)
    })
}

/// Waits until `deadline`, to within tens of microseconds for short waits.
pub async fn until(deadline: Instant) {
    let now = Instant::now();
    if deadline <= now {
        return;
    }
    if deadline - now > PRECISE_UP_TO {
        tokio::time::sleep_until(deadline.into()).await;
        return;
    }
    match timer() {
        Some(t) => {
            if t.add(deadline).await.is_err() {
                tokio::time::sleep_until(deadline.into()).await;
            }
        }
        None => tokio::time::sleep_until(deadline.into()).await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn waits_are_never_short_and_rarely_long() {
        // Many overlapping waits, out of order: each ends at or after its deadline.
        let mut tasks = Vec::new();
        for i in 0..64u64 {
            tasks.push(tokio::spawn(async move {
                let deadline = Instant::now() + Duration::from_millis(5 + (i * 7) % 23);
                until(deadline).await;
                let end = Instant::now();
                assert!(end >= deadline, "woke {:?} early", deadline - end);
                end - deadline
            }));
        }
        let mut late = Vec::new();
        for t in tasks {
            late.push(t.await.unwrap());
        }
        late.sort();
        // The median overshoot is far below tokio's millisecond rounding on an idle machine; a loaded one
        // may delay the wake-up of a thread, so only a loose bound is asserted here.
        assert!(late[late.len() / 2] < Duration::from_millis(20), "median overshoot {:?}", late[late.len() / 2]);
    }

    #[tokio::test]
    async fn a_past_deadline_returns_at_once_and_long_waits_use_tokio() {
        let t = Instant::now();
        until(t - Duration::from_millis(1)).await;
        assert!(t.elapsed() < Duration::from_millis(50));
        // A long wait is not put on the precise timer (it would hold a heap slot for seconds).
        let deadline = Instant::now() + PRECISE_UP_TO + Duration::from_millis(10);
        let wait = tokio::time::timeout(Duration::from_millis(20), until(deadline)).await;
        assert!(wait.is_err(), "a long wait ends at its deadline, not early");
    }
}
