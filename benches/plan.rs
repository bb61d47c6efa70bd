//! Planning 10,000 managed tokens (target ≤ 50 ms): builds a policy and an inventory in memory (one
//! owner listing with every token's current PAT, a tenth of them due), then times `plan` with std.
//! Run: `cargo bench --bench plan`.

use patrol::devops::Pat;
use patrol::domain::{AuthorizationId, OrgName, OwnerId, SecretName};
use patrol::rotation::inventory::{Inventory, OwnerPats, TokenState};
use patrol::rotation::journal::{Journal, PatVersion};
use patrol::rotation::plan::{Requests, plan};
use patrol::rotation::policy::Policy;
use patrol::store::{VersionProperties, tags};
use std::collections::BTreeMap;
use std::time::Instant;
use time::{Duration, OffsetDateTime};

const N: usize = 10_000;

fn main() {
    let now = OffsetDateTime::now_utc();
    let mut text = String::from(
        "[defaults]\norganization = \"fabrikam\"\nowner = \"svc@contoso.com\"\nscopes = \"vso.code\"\nvalidity_days = 30\nrotate_before_days = 7\ngrace_days = 2\n",
    );
    for i in 0..N {
        text.push_str(&format!("[[token]]\nsecret = \"tok-{i}\"\ndisplay_name = \"Token {i}\"\n"));
    }
    let t0 = Instant::now();
    let policy = Policy::parse(std::path::Path::new("bench.toml"), &text).expect("policy");
    let parse_ms = t0.elapsed().as_secs_f64() * 1e3;
    let mut tokens = BTreeMap::new();
    let mut pats = Vec::with_capacity(N);
    for i in 0..N {
        let secret = SecretName::parse(&format!("tok-{i}")).expect("name");
        let id = AuthorizationId::from_uuid(uuid::Uuid::from_u128(i as u128 + 1));
        let valid_to = now + Duration::days(if i % 10 == 0 { 3 } else { 20 });
        let tagset = BTreeMap::from([
            (tags::AUTHORIZATION_ID.to_owned(), id.to_string()),
            (tags::OPERATION_ID.to_owned(), "0123456789ab".to_owned()),
        ]);
        let current = VersionProperties {
            name: secret.clone(),
            version: format!("{:032x}", i),
            enabled: true,
            expires: Some(valid_to),
            created: None,
            updated: None,
            content_type: None,
            tags: tagset,
        };
        pats.push(Pat {
            authorization_id: id,
            display_name: format!("Token {i} (patrol:0123456789ab)"),
            scope: "vso.code".into(),
            target_accounts: Some(vec![uuid::Uuid::nil()]),
            valid_from: valid_to - Duration::days(30),
            valid_to,
        });
        // patrol knows this PAT as current (no adoption): the steady state.
        let mut journal = Journal::new(secret.clone());
        journal.current = Some(PatVersion {
            authorization_id: id,
            owner: OwnerId::parse("svc@contoso.com").expect("owner"),
            organization: OrgName::parse("fabrikam").expect("org"),
            vault_version: Some(format!("{:032x}", i)),
        });
        tokens.insert(
            secret.clone(),
            TokenState { secret, current: Some(current), journal, journal_etag: None, error: None },
        );
    }
    let inv = Inventory {
        taken_at: now,
        tokens,
        owners: vec![OwnerPats {
            owner: OwnerId::parse("svc@contoso.com").expect("owner"),
            organization: OrgName::parse("fabrikam").expect("org"),
            pats,
            error: None,
            sign_in_required: false,
        }],
    };
    let req = Requests::default();
    let mut best = f64::MAX;
    let mut rotations = 0;
    for _ in 0..10 {
        let t = Instant::now();
        let p = plan(&inv, &policy, now, &req);
        best = best.min(t.elapsed().as_secs_f64() * 1e3);
        rotations = p.entries.iter().filter(|e| e.rotation().is_some()).count();
    }
    println!("plan: {N} tokens, {rotations} due, best of 10: {best:.1} ms (policy parse {parse_ms:.1} ms)");
    assert!(best <= 50.0, "plan took {best:.1} ms > 50 ms");
}
