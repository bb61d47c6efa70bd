//! Audit throughput: entries parsed (streaming, from page bytes) and evaluated against every rule, on one
//! core, and the peak memory of the process as the number of entries grows (it must not).
//!
//! `cargo bench --bench audit` — prints entries/s for (a) 1,000-entry pages as Azure DevOps returns them
//! and (b) one single page of 1,000,000 entries streamed through `parse_page_reader`, plus VmHWM.

use patrol::audit::context::{AuditContext, KnownPat, LastUse, PatStatus};
use patrol::audit::entry::{parse_page, parse_page_reader};
use patrol::audit::rules::Evaluator;
use patrol::domain::{AuthorizationId, OrgName, OwnerId, SecretName};
use patrol::policy::audit::AuditPolicy;
use std::io::Read;
use std::time::Instant;
use time::OffsetDateTime;
use time::macros::datetime;

const PATS: usize = 50;
const PAGE: usize = 1_000;

fn pat_id(i: usize) -> AuthorizationId {
    AuthorizationId::from_uuid(uuid::Uuid::from_u128(0x1111_0000_0000_4000_8000_0000_0000_0000 + i as u128))
}

/// One realistic entry (~800 bytes, like the spec's example): 40% PAT-authenticated Git/Build actions,
/// 1% from a browser, a Token event every 500, the rest interactive.
fn write_entry(out: &mut Vec<u8>, n: u64, ts: OffsetDateTime) {
    use std::io::Write;
    let ts = ts.format(&time::format_description::well_known::Rfc3339).unwrap_or_default();
    let (auth, action, ua) = match n % 100 {
        0 => (
            format!("PAT_Unscoped authorizationId: {}", pat_id((n as usize / 100) % PATS)),
            "Git.RefUpdatePoliciesBypassed",
            "Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Firefox/128.0",
        ),
        1..=40 => (
            format!("PAT_Unscoped authorizationId: {}", pat_id(n as usize % PATS)),
            "Git.RefUpdatePoliciesBypassed",
            "git/2.45.1 (pipeline-agent)",
        ),
        41..=60 => {
            ("AAD_Cookie".to_owned(), "Library.ServiceConnectionExecuted", "VSServices/19.250 (NetStandard; Linux)")
        }
        _ if n % 500 == 77 => (
            "AAD".to_owned(),
            "Token.PatCreateEvent",
            "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/128.0 Safari/537.36",
        ),
        _ => (
            "FedAuth".to_owned(),
            "Project.AreaPath.Update",
            "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/128.0 Safari/537.36",
        ),
    };
    let _ = write!(
        out,
        r#"{{"id":"{n};00000064-0000-8888-8000-000000000000;86fbe369-3f5d-4f52-9ab0-3be7db271948","correlationId":"86fbe369-3f5d-4f52-9ab0-3be7db271948","activityId":"033fde68-f713-4984-b24f-8d7a73d1ade6","actorCUID":"a718550e-4777-4058-8298-bff88d0cb524","actorUserId":"d6a98b6c-6932-485c-a986-aea9fc981df0","actorUPN":"user{u}@contoso.com","authenticationMechanism":"{auth}","timestamp":"{ts}","scopeType":"organization","scopeDisplayName":"fabrikam (Organization)","scopeId":"73638cd5-0dda-4128-9fd6-48c16d4e4de3","ipAddress":"10.20.{a}.{b}","userAgent":"{ua}","actionId":"{action}","data":{{"DisplayName":"job {u}","ProjectName":"fabrikam-fiber","RefName":"refs/heads/main"}},"details":"Bypassed policies on refs/heads/main","area":"Git","category":"modify","categoryDisplayName":"Modify","actorDisplayName":"Norman Paulk","actorImageUrl":null}}"#,
        u = n % 37,
        a = (n / 256) % 256,
        b = n % 256,
    );
}

fn context(now: OffsetDateTime) -> AuditContext {
    let mut c = AuditContext::new();
    for i in 0..PATS {
        let id = pat_id(i);
        c.add_pat(KnownPat {
            authorization_id: id,
            display_name: format!("job {i} (patrol:0123456789ab)"),
            owner: OwnerId::parse(&format!("svc{}@contoso.com", i % 5)).expect("owner"),
            organization: OrgName::parse("fabrikam").expect("org"),
            secret: Some(SecretName::parse(&format!("job-{i}")).expect("secret")),
            valid_from: now - time::Duration::days(10),
            valid_to: now + time::Duration::days(20),
            scope: "vso.code_write".into(),
            global: false,
            status: PatStatus::Current,
        });
        c.last_use.insert(
            id,
            LastUse {
                at: now - time::Duration::days(1),
                ip: String::new(),
                user_agent: String::new(),
                action_id: String::new(),
                entry_id: String::new(),
            },
        );
    }
    c
}

fn vm_hwm_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines().find(|l| l.starts_with("VmHWM:")).and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        })
        .unwrap_or(0)
}

/// A single page of `total` entries, generated as it is read (never held in memory).
struct GeneratedPage {
    total: u64,
    next: u64,
    start: OffsetDateTime,
    buf: Vec<u8>,
    pos: usize,
    stage: u8, // 0: prefix, 1: entries, 2: suffix written, 3: done
}

impl GeneratedPage {
    fn refill(&mut self) {
        self.buf.clear();
        self.pos = 0;
        match self.stage {
            0 => {
                self.buf.extend_from_slice(br#"{"decoratedAuditLogEntries":["#);
                self.stage = 1;
            }
            1 if self.next < self.total => {
                for _ in 0..64 {
                    if self.next == self.total {
                        break;
                    }
                    if self.next > 0 {
                        self.buf.push(b',');
                    }
                    let ts = self.start - time::Duration::milliseconds(self.next as i64 * 10);
                    write_entry(&mut self.buf, self.next, ts);
                    self.next += 1;
                }
            }
            1 => {
                self.buf.extend_from_slice(br#"],"continuationToken":null,"hasMore":false}"#);
                self.stage = 2;
            }
            _ => self.stage = 3,
        }
    }
}

impl Read for GeneratedPage {
    fn read(&mut self, out: &mut [u8]) -> std::io::Result<usize> {
        while self.pos == self.buf.len() && self.stage < 3 {
            self.refill();
        }
        let n = out.len().min(self.buf.len() - self.pos);
        out[..n].copy_from_slice(&self.buf[self.pos..self.pos + n]);
        self.pos += n;
        Ok(n)
    }
}

/// Nanoseconds this thread has spent on a CPU (`/proc/thread-self/schedstat`): immune to other processes
/// on a shared machine, unlike wall time.
fn cpu_ns() -> u64 {
    std::fs::read_to_string("/proc/thread-self/schedstat")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}

struct Timing {
    wall: std::time::Duration,
    cpu_ns: u64,
}

fn timed(f: impl FnOnce()) -> Timing {
    let (t, c) = (Instant::now(), cpu_ns());
    f();
    Timing { wall: t.elapsed(), cpu_ns: cpu_ns().saturating_sub(c) }
}

fn report(label: &str, entries: u64, bytes: usize, t: &Timing) {
    let cpu = t.cpu_ns as f64 / 1e9;
    println!(
        "{label:<34} {entries:>9} entries {:>7.1} MB: on-CPU {cpu:.3}s = {:>9.0} entries/s ({:>5.0} MB/s); wall {:.3}s = {:.0} entries/s",
        bytes as f64 / 1e6,
        entries as f64 / cpu,
        bytes as f64 / 1e6 / cpu,
        t.wall.as_secs_f64(),
        entries as f64 / t.wall.as_secs_f64()
    );
}

fn main() {
    let now = datetime!(2026-03-04 12:00 UTC);
    let policy: AuditPolicy = toml::from_str(
        r#"allowed_cidrs = ["10.20.0.0/16"]
           allowed_hours = { start = "00:00", end = "24:00" }
           [rules.burst]
           max_actions = 100000
           window_minutes = 1"#,
    )
    .expect("policy");
    let settings = policy.resolve().expect("settings");
    let ctx = context(now);

    // 20 distinct pages of 1,000 entries as the service returns them, generated up front.
    let pages: Vec<Vec<u8>> = (0..20u64)
        .map(|p| {
            let mut body = Vec::with_capacity(PAGE * 1_000);
            body.extend_from_slice(br#"{"decoratedAuditLogEntries":["#);
            for k in 0..PAGE as u64 {
                if k > 0 {
                    body.push(b',');
                }
                let n = p * PAGE as u64 + k;
                write_entry(&mut body, n, now - time::Duration::milliseconds((n * 10) as i64));
            }
            body.extend_from_slice(br#"],"continuationToken":"x","hasMore":true}"#);
            body
        })
        .collect();
    let page_bytes: usize = pages.iter().map(Vec::len).sum();
    let rounds = std::env::var("AUDIT_BENCH_ROUNDS").ok().and_then(|s| s.parse().ok()).unwrap_or(25u64);
    let entries = rounds * pages.len() as u64 * PAGE as u64;
    let bytes = page_bytes * rounds as usize;
    println!(
        "{} pages, {:.0} bytes per entry, {rounds} rounds",
        pages.len(),
        page_bytes as f64 / (pages.len() * PAGE) as f64
    );

    let t = timed(|| {
        for _ in 0..rounds {
            for p in &pages {
                let v: serde::de::IgnoredAny = serde_json::from_slice(p).expect("json");
                std::hint::black_box(v);
            }
        }
    });
    report("baseline: serde_json skip only", entries, bytes, &t);

    let mut seen = 0u64;
    let t = timed(|| {
        for _ in 0..rounds {
            for p in &pages {
                parse_page(p, |e| {
                    if let Ok(e) = e {
                        seen += std::hint::black_box(&e).id.len() as u64 & 1;
                    }
                })
                .expect("page");
            }
        }
    });
    std::hint::black_box(seen);
    report("parse_page only", entries, bytes, &t);

    let mut findings = 0u64;
    let mut pat_entries = 0;
    let t = timed(|| {
        let mut ev = Evaluator::new(&settings, &ctx, now);
        for _ in 0..rounds {
            for p in &pages {
                parse_page(p, |e| {
                    if let Ok(e) = e {
                        ev.observe(&e, &mut |_| findings += 1);
                    }
                })
                .expect("page");
            }
        }
        pat_entries = ev.finish(&mut |_| findings += 1).stats.pat_entries;
    });
    report("parse_page + every rule", entries, bytes, &t);
    println!("  {findings} findings, {pat_entries} PAT-authenticated entries, VmHWM {} KiB", vm_hwm_kib());

    // One page of 1,000,000 entries read from a generator: memory must not follow the entry count.
    let hwm_before = vm_hwm_kib();
    let total = std::env::var("AUDIT_BENCH_STREAM").ok().and_then(|s| s.parse().ok()).unwrap_or(1_000_000u64);
    let generated = GeneratedPage { total, next: 0, start: now, buf: Vec::new(), pos: 0, stage: 0 };
    let mut ev = Evaluator::new(&settings, &ctx, now);
    let mut findings = 0u64;
    let info = parse_page_reader(std::io::BufReader::with_capacity(64 * 1024, generated), |e| {
        if let Ok(e) = e {
            ev.observe(&e, &mut |_| findings += 1);
        }
    })
    .expect("stream");
    let _ = ev.finish(&mut |_| findings += 1);
    println!(
        "one streamed page of {} entries (generated while read): {findings} findings, VmHWM before {hwm_before} KiB, after {} KiB",
        info.entries,
        vm_hwm_kib()
    );
}
