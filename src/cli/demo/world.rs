//! The demo's world: one organization, one PAT owner, PATs in every interesting state, the policy that
//! manages four of them, and the onboarding step an operator does by hand (the existing PATs' values put
//! into the secret store with their `authorization-id` tag, so patrol adopts them).

use patrol_emulator::seed::{Seed, SeedOrg, SeedPat, SeedUser};
use time::{Duration, OffsetDateTime};

pub const ORG: &str = "fabrikam";
pub const OWNER: &str = "svc-rotation@fabrikam.example";
pub const CLIENT_ID: &str = "5e0a6c1b-3f2d-4a8e-9b7c-d1e2f3a4b5c6";
pub const ALERTS_TO: &str = "security@fabrikam.example";

/// One seeded PAT: display name, scope, days until validTo (negative: expired), all organizations, and
/// the managed secret that will hold it (if any).
pub struct DemoPat {
    pub display_name: &'static str,
    pub scope: &'static str,
    pub days: i64,
    pub all_orgs: bool,
    pub secret: Option<&'static str>,
}

pub const PATS: &[DemoPat] = &[
    DemoPat {
        display_name: "CI build agent",
        scope: "vso.build_execute vso.code",
        days: 3,
        all_orgs: false,
        secret: Some("ci-build-pat"),
    },
    DemoPat {
        display_name: "Package feed publisher",
        scope: "vso.packaging_write",
        days: 10,
        all_orgs: false,
        secret: Some("package-feed-pat"),
    },
    DemoPat {
        display_name: "Release bot",
        scope: "vso.release_execute",
        days: 20,
        all_orgs: false,
        secret: Some("release-bot-pat"),
    },
    DemoPat {
        display_name: "Wiki sync",
        scope: "vso.wiki_write",
        days: 40,
        all_orgs: false,
        secret: Some("wiki-sync-pat"),
    },
    DemoPat { display_name: "Old deploy script", scope: "vso.code", days: -5, all_orgs: false, secret: None },
    DemoPat {
        display_name: "Everything everywhere",
        scope: "vso.code vso.work",
        days: 25,
        all_orgs: true,
        secret: None,
    },
    DemoPat { display_name: "Admin full access", scope: "app_token", days: 60, all_orgs: false, secret: None },
    DemoPat { display_name: "Laptop git clone", scope: "vso.code", days: 5, all_orgs: false, secret: None },
];

use crate::timestamp::rfc3339;

/// A seeded PAT's `validTo` (and its vault version's `exp`): `days` from `now`, plus half a day of slack so
/// "expires in 3 days" still reads 3 whole days when the demo looks.
pub fn valid_to(now: OffsetDateTime, days: i64) -> OffsetDateTime {
    now + Duration::days(days) + Duration::hours(12)
}

/// The seed, relative to the emulator's virtual `now`.
pub fn seed(now: OffsetDateTime) -> Seed {
    Seed {
        organizations: vec![SeedOrg { name: ORG.into(), id: None, policy: None }],
        users: vec![SeedUser {
            upn: OWNER.into(),
            id: None,
            display_name: Some("Rotation service account".into()),
            organizations: vec![ORG.into()],
            admin_of: vec![],
        }],
        pats: PATS
            .iter()
            .map(|p| SeedPat {
                authorization_id: None,
                owner: OWNER.into(),
                organization: ORG.into(),
                display_name: p.display_name.into(),
                scope: p.scope.into(),
                valid_from: Some(rfc3339(now - Duration::days(30.max(-p.days + 30)))),
                valid_to: rfc3339(valid_to(now, p.days)),
                all_orgs: p.all_orgs,
                token: None,
                revoked: false,
            })
            .collect(),
        ..Default::default()
    }
}

/// The policy: the four managed tokens, alerts by email.
pub fn policy() -> String {
    let mut s = format!(
        "# patrol demo policy (written by `patrol demo`)\n[defaults]\norganization = \"{ORG}\"\nowner = \"{OWNER}\"\n\
         validity_days = 30\nrotate_before_days = 7\ngrace_days = 2\nnotify = [\"email:{ALERTS_TO}\"]\n\
         expiry_thresholds = [14, 7, 1]\n"
    );
    for p in PATS.iter().filter(|p| p.secret.is_some()) {
        s.push_str(&format!(
            "\n[[token]]\nsecret = \"{}\"\ndisplay_name = \"{}\"\nscopes = \"{}\"\n",
            p.secret.unwrap_or_default(),
            p.display_name,
            p.scope
        ));
    }
    s
}
