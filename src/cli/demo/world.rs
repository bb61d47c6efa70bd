//! The demo's world: one organization, one PAT owner, PATs in every interesting state, the policy that
//! manages four of them (onboarded with `patrol adopt`: the existing PATs' values given by the operator).

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

/// The token whose consumers the demo follows.
pub const CONSUMED: &str = "ci-build-pat";
/// The Azure DevOps project of its service connection and variable group.
pub const PROJECT: &str = "web";
pub const CONNECTION: &str = "ci-package-feed";
pub const CONNECTION_ID: &str = "6d1f3b2a-0c4e-4f5a-8b7c-9d0e1f2a3b4c";
pub const GROUP: &str = "ci-secrets";
pub const GROUP_ID: i32 = 12;
pub const VARIABLE: &str = "AZDO_PAT";
pub const REPO: &str = "fabrikam/ci-tools";
/// patrol's own credentials for its consumers, in the vault (the operator puts them there).
pub const GITHUB_CREDENTIAL: &str = "patrol-github";
pub const HOOK_URL: &str = "patrol-hook-ci-cache-url";
pub const HOOK_KEY: &str = "patrol-hook-ci-cache-key";
/// A consumer patrol cannot write: it reads the vault itself, at most this late.
pub const REFERENCE: &str = "AKS build cache";
pub const REFERENCE_LAG_HOURS: u32 = 72;

/// The consumer side of the organization: a project with a service connection and a variable group that
/// hold the CI PAT (a placeholder until patrol writes them), administered by patrol's identity (`app`),
/// and a GitHub repository whose workflows call Azure DevOps; patrol's GitHub credential is minted by the
/// emulator.
pub fn consumer_seed(app: &str, placeholder: &str) -> Result<patrol_emulator::consumers::seed::ConsumerSeed, String> {
    serde_json::from_value(serde_json::json!({
        "projects": [{ "organization": ORG, "name": PROJECT }],
        "appMembers": [{ "organization": ORG, "clientId": app }],
        "serviceEndpoints": [{
            "organization": ORG, "projects": [PROJECT], "id": CONNECTION_ID, "name": CONNECTION,
            "type": "externalnpmregistry", "url": format!("https://pkgs.dev.azure.com/{ORG}/_packaging/ci/npm/registry/"),
            "scheme": "Token", "parameters": { "apitoken": placeholder }, "administrators": [app]
        }],
        "variableGroups": [{
            "organization": ORG, "projects": [PROJECT], "id": GROUP_ID, "name": GROUP,
            "variables": {
                VARIABLE: { "value": placeholder, "isSecret": true },
                "FEED_URL": { "value": format!("https://pkgs.dev.azure.com/{ORG}/_packaging/ci/npm/registry/") }
            },
            "administrators": [app]
        }],
        "github": {
            "tokens": [{ "label": "patrol", "repositories": [REPO] }],
            "repositories": [{ "name": REPO }]
        }
    }))
    .map_err(|e| format!("the demo's consumer seed: {e}"))
}

/// The policy: the four managed tokens, alerts by email; the CI token feeds a service connection, a
/// variable group, a GitHub Actions secret, a webhook consumer and a `reference` consumer that may lag.
pub fn policy(github_api: &str) -> String {
    let mut s = format!(
        "# patrol demo policy (written by `patrol demo`)\n[defaults]\norganization = \"{ORG}\"\nowner = \"{OWNER}\"\n\
         validity_days = 30\nrotate_before_days = 7\ngrace_days = 2\nnotify = [\"email:{ALERTS_TO}\"]\n\
         expiry_thresholds = [14, 7, 1]\n\n[consumers]\ngithub_credential = \"{GITHUB_CREDENTIAL}\"\n\
         github_api = \"{github_api}\"\n"
    );
    for p in PATS.iter().filter(|p| p.secret.is_some()) {
        s.push_str(&format!(
            "\n[[token]]\nsecret = \"{}\"\ndisplay_name = \"{}\"\nscopes = \"{}\"\n",
            p.secret.unwrap_or_default(),
            p.display_name,
            p.scope
        ));
        if p.secret == Some(CONSUMED) {
            s.push_str(&format!(
                "\n[[token.consumer]]\nkind = \"devops-service-connection\"\nproject = \"{PROJECT}\"\n\
                 connection = \"{CONNECTION}\"\ntype = \"externalnpmregistry\"\nscheme = \"Token\"\n\
                 \n[[token.consumer]]\nkind = \"devops-variable-group\"\nproject = \"{PROJECT}\"\n\
                 group = \"{GROUP}\"\nvariable = \"{VARIABLE}\"\n\
                 \n[[token.consumer]]\nkind = \"github-actions-secret\"\nrepository = \"{REPO}\"\n\
                 name = \"{VARIABLE}\"\n\
                 \n[[token.consumer]]\nkind = \"webhook\"\nurl_secret = \"{HOOK_URL}\"\n\
                 signing_secret = \"{HOOK_KEY}\"\nack = true\n\
                 \n[[token.consumer]]\nkind = \"reference\"\ndescription = \"{REFERENCE}\"\n\
                 lag_hours = {REFERENCE_LAG_HOURS}\n"
            ));
        }
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_demo_policy_declares_every_consumer_kind_the_demo_shows() {
        let text = policy("https://127.0.0.1:4443/");
        let p = crate::rotation::policy::Policy::parse(std::path::Path::new("patrol.toml"), &text).unwrap();
        let t = p.tokens.iter().find(|t| t.secret.as_str() == CONSUMED).unwrap();
        let kinds: Vec<&str> = t.consumers.list.iter().map(|c| c.kind_name()).collect();
        assert_eq!(
            kinds,
            ["devops-service-connection", "devops-variable-group", "github-actions-secret", "webhook", "reference"]
        );
        assert_eq!(t.consumers.list[4].lag_hours(), Some(REFERENCE_LAG_HOURS));
        // The lag outlasts the grace (2 days) and ends before day 4, so day 2 shows it holding the revocation.
        assert!(REFERENCE_LAG_HOURS > t.grace_days * 24 && REFERENCE_LAG_HOURS < 4 * 24);
        assert!(p.tokens.iter().filter(|t| t.secret.as_str() != CONSUMED).all(|t| t.consumers.is_empty()));
        let seed = consumer_seed("0d3c8b7a-6e5f-4a4d-9c2b-1a0f9e8d7c6b", "placeholder").unwrap();
        assert_eq!(seed.service_endpoints[0].name, CONNECTION);
        assert_eq!(seed.variable_groups[0].id, Some(GROUP_ID));
    }
}
