//! A simulated year of daily `RotateTimer`-style runs for 50 tokens with mixed policies, on the emulator's
//! virtual clock, checked every day: every token has a current secret whose value authenticates, each
//! rotation leaves exactly one new PAT, previous PATs are revoked after their grace and not before, and the
//! owner's unmanaged PATs are never touched.

use super::world::{ORG, OWNER, World, seed};
use patrol::devops::DisplayFilter;
use patrol::domain::AuthorizationId;
use patrol::rotation::engine::RunOptions;
use serde_json::json;
use std::collections::{BTreeMap, BTreeSet};
use time::{Duration, OffsetDateTime};

const TOKENS: usize = 50;
/// (validity, rotate_before, grace) days — every combination the policy rules allow, mixed.
const POLICIES: [(u32, u32, u32); 8] =
    [(7, 2, 1), (14, 3, 2), (30, 7, 3), (45, 10, 0), (90, 14, 7), (60, 5, 5), (20, 4, 0), (10, 3, 3)];
const SCOPES: [&str; 5] = ["vso.code", "vso.build_execute", "vso.packaging", "vso.code vso.build", "vso.work"];

fn policy() -> String {
    let mut p = format!("[defaults]\norganization = \"{ORG}\"\nowner = \"{OWNER}\"\n");
    for i in 0..TOKENS {
        let (v, r, g) = POLICIES[i % POLICIES.len()];
        p.push_str(&format!(
            "[[token]]\nsecret = \"year-{i:02}\"\ndisplay_name = \"Year {i:02}\"\nscopes = \"{}\"\n\
             validity_days = {v}\nrotate_before_days = {r}\ngrace_days = {g}\n",
            SCOPES[i % SCOPES.len()]
        ));
    }
    p
}

struct Superseded {
    secret: String,
    id: AuthorizationId,
    value: String,
    revoke_after: OffsetDateTime,
}

// Its final count (revocations reported == drained PATs) caught plan re-revoking drained PATs from the
// current version's tags every run; fixed in `plan` (the journal is authoritative for what it wrote).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_year_of_daily_runs_for_fifty_tokens_keeps_every_secret_valid() {
    let mut s = seed();
    let now = OffsetDateTime::now_utc();
    let fmt = |t: OffsetDateTime| t.format(&time::format_description::well_known::Rfc3339).unwrap();
    // PATs nobody manages: the owner's own, one named like a managed token but without patrol's marker.
    s["pats"] = json!([
        { "owner": OWNER, "organization": ORG, "displayName": "hand-made build", "scope": "vso.build",
          "validFrom": fmt(now - Duration::days(1)), "validTo": fmt(now + Duration::days(200)) },
        { "owner": OWNER, "organization": ORG, "displayName": "Year 03", "scope": "vso.code",
          "validFrom": fmt(now - Duration::days(1)), "validTo": fmt(now + Duration::days(300)) },
        { "owner": OWNER, "organization": ORG, "displayName": "nightly", "scope": "vso.packaging",
          "validFrom": fmt(now - Duration::days(1)), "validTo": fmt(now + Duration::days(30)) }
    ]);
    let w = World::start_in_memory(s, &policy()).await;
    let unmanaged: BTreeMap<AuthorizationId, (String, String, OffsetDateTime)> = w
        .pats(DisplayFilter::All)
        .await
        .into_iter()
        .map(|p| (p.authorization_id, (p.display_name, p.scope, p.valid_to)))
        .collect();
    assert_eq!(unmanaged.len(), 3);
    let engine = w.local.engine().unwrap();
    let secrets: Vec<String> = (0..TOKENS).map(|i| format!("year-{i:02}")).collect();
    let grace: BTreeMap<&str, u32> =
        secrets.iter().enumerate().map(|(i, s)| (s.as_str(), POLICIES[i % POLICIES.len()].2)).collect();

    let mut current: BTreeMap<String, AuthorizationId> = BTreeMap::new();
    let mut draining: Vec<Superseded> = Vec::new();
    let mut revoked: BTreeSet<AuthorizationId> = BTreeSet::new();
    let (mut rotations, mut revocations) = (0usize, 0usize);
    let started = std::time::Instant::now();

    for day in 0..=365 {
        if day > 0 {
            w.advance(Duration::days(1)).await;
        }
        if day % 10 == 0 {
            eprintln!("year: day {day} after {:?}", started.elapsed());
        }
        let t0 = std::time::Instant::now();
        let summary = engine.run(RunOptions::default()).await.unwrap();
        if day % 10 == 0 {
            eprintln!("  run {:?}", t0.elapsed());
        }
        assert_eq!(summary.failed, 0, "day {day}: {}", summary.line());
        assert!(summary.busy.is_empty() && summary.deferred.is_empty(), "day {day}: {}", summary.line());
        let at = w.local.clock.now();
        let active = w.pats(DisplayFilter::Active).await;
        let active_ids: BTreeSet<AuthorizationId> = active.iter().map(|p| p.authorization_id).collect();

        // Rotations of this run: the old PAT starts draining, the new one is the current one.
        for r in &summary.reports {
            if let Some(done) = &r.rotated {
                rotations += 1;
                if let Some(old) = current.insert(r.secret.clone(), done.authorization_id) {
                    assert_ne!(old, done.authorization_id, "day {day}: {} rotated to a new PAT", r.secret);
                    let g = i64::from(grace[r.secret.as_str()]);
                    draining.push(Superseded {
                        secret: r.secret.clone(),
                        id: old,
                        value: String::new(),
                        revoke_after: done.finished + Duration::days(g),
                    });
                }
            }
            revocations += r.revoked.len();
            for id in &r.revoked {
                assert!(!current.values().any(|c| c == id), "day {day}: a current PAT was revoked");
            }
        }

        for secret in &secrets {
            let (id, value) = w.current(secret).await.unwrap_or_else(|| panic!("day {day}: {secret} has no secret"));
            assert_eq!(Some(&id), current.get(secret), "day {day}: {secret}: vault names the rotated PAT");
            assert!(w.authenticates(&value).await, "day {day}: {secret}: the current value authenticates");
            // Remember the value of the current PAT so its drain can be checked by use later.
            for d in draining.iter_mut().filter(|d| d.id == id) {
                d.value = value.clone();
            }
            // Exactly the current PAT and the ones still in grace are live for this token.
            let prefix = format!("Year {} (patrol:", &secret[5..]);
            let live: BTreeSet<AuthorizationId> =
                active.iter().filter(|p| p.display_name.starts_with(&prefix)).map(|p| p.authorization_id).collect();
            let ours: Vec<&Superseded> = draining.iter().filter(|d| &d.secret == secret).collect();
            let required: BTreeSet<AuthorizationId> =
                std::iter::once(id).chain(ours.iter().filter(|d| at < d.revoke_after).map(|d| d.id)).collect();
            let allowed: BTreeSet<AuthorizationId> = std::iter::once(id).chain(ours.iter().map(|d| d.id)).collect();
            assert!(
                required.is_subset(&live) && live.is_subset(&allowed),
                "day {day}: {secret}: live PATs are the current one and those in grace: {live:?} vs {required:?}"
            );
        }

        // Grace: a previous PAT is live until its grace ends, and revoked by the first run after that.
        let mut still = Vec::new();
        for d in draining.drain(..) {
            let live = active_ids.contains(&d.id);
            if at < d.revoke_after {
                assert!(live, "day {day}: {}: previous PAT revoked before its grace ended", d.secret);
                still.push(d);
            } else if live {
                assert!(
                    at < d.revoke_after + Duration::days(1),
                    "day {day}: {}: previous PAT still live a day after its grace",
                    d.secret
                );
                still.push(d);
            } else {
                if !d.value.is_empty() {
                    assert!(!w.authenticates(&d.value).await, "day {day}: {}: revoked value still works", d.secret);
                }
                revoked.insert(d.id);
            }
        }
        draining = still;
        // Each previous PAT was revoked once (and any seen as gone here was counted in a report).
        assert!(revoked.len() <= revocations, "day {day}");

        if day % 10 == 0 {
            eprintln!("  checks {:?}", t0.elapsed());
        }
        // Unmanaged PATs: never revoked, never changed.
        for (id, (name, scope, valid_to)) in &unmanaged {
            assert!(active_ids.contains(id) || *valid_to <= at, "day {day}: unmanaged {name} was revoked");
            if let Some(p) = active.iter().find(|p| p.authorization_id == *id) {
                assert_eq!((&p.display_name, &p.scope, &p.valid_to), (name, scope, valid_to), "day {day}");
            }
        }
    }
    let revoked_list = w.pats(DisplayFilter::Revoked).await;
    for id in unmanaged.keys() {
        assert!(!revoked_list.iter().any(|p| p.authorization_id == *id), "an unmanaged PAT was revoked");
    }
    // Every rotation beyond the first of each token superseded a PAT that was revoked (or is still in grace).
    assert_eq!(rotations, TOKENS + revoked.len() + draining.len());
    assert_eq!(revocations, revoked.len());
    assert!(rotations > 12 * TOKENS, "a year rotates often: {rotations}");
    eprintln!("year: {rotations} rotations, {revocations} revocations in {:?}", started.elapsed());
}
