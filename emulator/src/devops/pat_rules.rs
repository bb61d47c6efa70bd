//! The business rules of PAT Create and Update, as pure functions over the state: input validation
//! (`displayNameRequired`, `invalidDisplayName`, `invalidScope`, `invalidValidTo`), tenant and
//! organization policies (restrict PAT creation, restrict global, restrict full-scoped, global creation
//! blocked, maximum lifespan which *clamps* `validTo`), and the update preconditions (not revoked, not
//! expired). Refusals become HTTP 200 with `patTokenError` in `pats`.

use super::scopes;
use crate::state::{Org, PatRecord, PatStatus, State, User};
use crate::wire::parse_time;
use serde::Deserialize;
use time::{Duration, OffsetDateTime};

/// The longest a PAT may live without a lifespan policy (Azure DevOps: one year).
pub const MAX_LIFETIME: Duration = Duration::days(366);
pub const MAX_DISPLAY_NAME: usize = 256;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    pub error: &'static str,
    pub message: String,
}

fn refuse(error: &'static str, message: impl Into<String>) -> Refusal {
    Refusal { error, message: message.into() }
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CreateRequest {
    pub display_name: Option<String>,
    pub scope: Option<String>,
    pub valid_to: Option<String>,
    pub all_orgs: Option<bool>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct UpdateRequest {
    pub authorization_id: Option<String>,
    pub display_name: Option<String>,
    pub scope: Option<String>,
    pub valid_to: Option<String>,
    pub all_orgs: Option<bool>,
}

/// A validated Create.
#[derive(Debug, Clone, PartialEq)]
pub struct NewPat {
    pub display_name: String,
    pub scope: String,
    pub valid_to: OffsetDateTime,
    pub global: bool,
}

/// Validated changes of an Update.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Changes {
    pub display_name: Option<String>,
    pub scope: Option<String>,
    pub valid_to: Option<OffsetDateTime>,
    pub global: Option<bool>,
}

fn on_list(list: &[String], upn: &str) -> bool {
    list.iter().any(|a| a.eq_ignore_ascii_case(upn))
}

fn display_name(raw: Option<&str>) -> Result<String, Refusal> {
    let name = raw.map(str::trim).unwrap_or_default();
    if name.is_empty() {
        return Err(refuse("displayNameRequired", "A display name is required."));
    }
    if name.chars().count() > MAX_DISPLAY_NAME || name.chars().any(char::is_control) {
        return Err(refuse(
            "invalidDisplayName",
            format!("The display name must be at most {MAX_DISPLAY_NAME} characters without control characters."),
        ));
    }
    Ok(name.to_string())
}

fn scope(raw: Option<&str>) -> Result<String, Refusal> {
    let parts: Vec<&str> = raw.unwrap_or_default().split_whitespace().collect();
    if parts.is_empty() {
        return Err(refuse("invalidScope", "At least one scope is required."));
    }
    if let Some(bad) = parts.iter().find(|s| !scopes::is_known(s)) {
        return Err(refuse("invalidScope", format!("The scope '{bad}' is not valid.")));
    }
    if parts.contains(&"app_token") && parts.len() > 1 {
        return Err(refuse("invalidScope", "The full access scope 'app_token' can't be combined with other scopes."));
    }
    let mut out: Vec<&str> = Vec::new();
    for p in parts {
        if !out.contains(&p) {
            out.push(p);
        }
    }
    Ok(out.join(" "))
}

fn valid_to(raw: Option<&str>, now: OffsetDateTime) -> Result<OffsetDateTime, Refusal> {
    let Some(raw) = raw else { return Err(refuse("invalidValidTo", "An expiration date (validTo) is required.")) };
    let t = parse_time(raw)
        .ok_or_else(|| refuse("invalidValidTo", format!("The expiration date '{raw}' is not a valid date.")))?;
    if t <= now {
        return Err(refuse("invalidValidTo", "The expiration date must be in the future."));
    }
    Ok(t)
}

/// Organization and tenant policies on who may create what.
fn creation_policies(state: &State, user: &User, org: &Org, scope: &str, global: bool) -> Result<(), Refusal> {
    let tenant = &state.tenant_policy;
    if tenant.fail_reads {
        return Err(refuse("failedToReadTenantPolicy", "The tenant policy could not be read. Try again later."));
    }
    if org.policy.fail_reads {
        return Err(refuse("failedToReadOrgPolicy", "The organization policy could not be read. Try again later."));
    }
    if org.policy.restrict_pat_creation && !on_list(&org.policy.allowlist, &user.upn) {
        let packaging_only = scope.split_whitespace().all(scopes::is_packaging);
        if !(org.policy.allow_packaging_only && packaging_only && !global) {
            return Err(refuse(
                "disablePatCreationPolicyViolation",
                "Your organization's policy restricts personal access token creation.",
            ));
        }
    }
    let exempt = on_list(&tenant.allowlist, &user.upn);
    if global {
        if tenant.global_creation_blocked {
            return Err(refuse("globalPATCreationBlocked", "Creation of global personal access tokens is blocked."));
        }
        if tenant.restrict_global && !exempt {
            return Err(refuse(
                "globalPatPolicyViolation",
                "Your tenant's policy restricts creation of global personal access tokens.",
            ));
        }
    }
    if tenant.restrict_full_scoped && !exempt && scope.split_whitespace().any(|s| s == "app_token") {
        return Err(refuse(
            "fullScopePatPolicyViolation",
            "Your tenant's policy restricts creation of full-scoped personal access tokens.",
        ));
    }
    Ok(())
}

/// `validTo` after the lifespan rules: clamped to `base` + the policy's maximum lifespan, refused past
/// one year without a policy.
fn lifespan(
    state: &State,
    user: &User,
    requested: OffsetDateTime,
    base: OffsetDateTime,
) -> Result<OffsetDateTime, Refusal> {
    let tenant = &state.tenant_policy;
    if let Some(days) = tenant.max_lifespan_days
        && !on_list(&tenant.allowlist, &user.upn)
    {
        let max = base + Duration::days(i64::from(days));
        return Ok(requested.min(max));
    }
    if requested > base + MAX_LIFETIME {
        return Err(refuse("invalidValidTo", "The expiration date can be at most one year away."));
    }
    Ok(requested)
}

pub fn check_create(
    state: &State,
    user: &User,
    org: &Org,
    req: &CreateRequest,
    now: OffsetDateTime,
) -> Result<NewPat, Refusal> {
    let name = display_name(req.display_name.as_deref())?;
    let scope = scope(req.scope.as_deref())?;
    let requested = valid_to(req.valid_to.as_deref(), now)?;
    let global = req.all_orgs.unwrap_or(false);
    creation_policies(state, user, org, &scope, global)?;
    let valid_to = lifespan(state, user, requested, now)?;
    Ok(NewPat { display_name: name, scope, valid_to, global })
}

pub fn check_update(
    state: &State,
    user: &User,
    org: &Org,
    pat: &PatRecord,
    req: &UpdateRequest,
    now: OffsetDateTime,
) -> Result<Changes, Refusal> {
    match pat.status(now) {
        PatStatus::Revoked => {
            return Err(refuse("invalidToken", "The personal access token has been revoked and can't be updated."));
        }
        PatStatus::Expired => {
            return Err(refuse(
                "expiredPatCannotBeExtended",
                "The personal access token has expired and can't be updated or extended; create a new one.",
            ));
        }
        PatStatus::Active => {}
    }
    let mut c = Changes::default();
    if req.display_name.is_some() {
        c.display_name = Some(display_name(req.display_name.as_deref())?);
    }
    if req.scope.is_some() {
        c.scope = Some(scope(req.scope.as_deref())?);
    }
    c.global = req.all_orgs;
    let eff_scope = c.scope.clone().unwrap_or_else(|| pat.scope.clone());
    let eff_global = c.global.unwrap_or(pat.target_accounts.is_none());
    let becomes_global = eff_global && pat.target_accounts.is_some();
    if c.scope.is_some() || becomes_global {
        creation_policies(state, user, org, &eff_scope, becomes_global)?;
    }
    if req.valid_to.is_some() {
        let requested = valid_to(req.valid_to.as_deref(), now)?;
        c.valid_to = Some(lifespan(state, user, requested, pat.valid_from)?);
    }
    Ok(c)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::OrgPolicy;

    fn world() -> (State, User, Org) {
        let mut s = State::default();
        s.add_org("fab", None, OrgPolicy::default()).unwrap();
        let u = s.add_user("a@x.test", None, &["fab".into()], &[], None).unwrap().clone();
        let o = s.org("fab").unwrap().clone();
        (s, u, o)
    }

    fn req(name: &str, scope: &str, valid_to: &str) -> CreateRequest {
        CreateRequest {
            display_name: Some(name.into()),
            scope: Some(scope.into()),
            valid_to: Some(valid_to.into()),
            all_orgs: Some(false),
        }
    }

    const NOW: OffsetDateTime = time::macros::datetime!(2026-06-01 00:00 UTC);

    #[test]
    fn validates_inputs() {
        let (s, u, o) = world();
        let ok = check_create(&s, &u, &o, &req("n", "vso.code  vso.code", "2026-07-01T00:00:00Z"), NOW).unwrap();
        assert_eq!(ok.scope, "vso.code");
        let err = |r: CreateRequest| check_create(&s, &u, &o, &r, NOW).unwrap_err().error;
        assert_eq!(err(req("", "vso.code", "2026-07-01T00:00:00Z")), "displayNameRequired");
        assert_eq!(err(req("a\u{7}", "vso.code", "2026-07-01T00:00:00Z")), "invalidDisplayName");
        assert_eq!(err(req("n", "vso.nope", "2026-07-01T00:00:00Z")), "invalidScope");
        assert_eq!(err(req("n", "", "2026-07-01T00:00:00Z")), "invalidScope");
        assert_eq!(err(req("n", "vso.code", "2026-05-01T00:00:00Z")), "invalidValidTo");
        assert_eq!(err(req("n", "vso.code", "2028-05-01T00:00:00Z")), "invalidValidTo");
        assert_eq!(err(req("n", "vso.code", "soon")), "invalidValidTo");
    }

    #[test]
    fn policies_refuse_or_clamp() {
        let (mut s, u, mut o) = world();
        s.tenant_policy.max_lifespan_days = Some(7);
        let ok = check_create(&s, &u, &o, &req("n", "vso.code", "2026-12-01T00:00:00Z"), NOW).unwrap();
        assert_eq!(ok.valid_to, NOW + Duration::days(7));
        s.tenant_policy.restrict_full_scoped = true;
        assert_eq!(
            check_create(&s, &u, &o, &req("n", "app_token", "2026-06-02T00:00:00Z"), NOW).unwrap_err().error,
            "fullScopePatPolicyViolation"
        );
        let mut g = req("n", "vso.code", "2026-06-02T00:00:00Z");
        g.all_orgs = Some(true);
        s.tenant_policy.restrict_global = true;
        assert_eq!(check_create(&s, &u, &o, &g, NOW).unwrap_err().error, "globalPatPolicyViolation");
        s.tenant_policy.global_creation_blocked = true;
        assert_eq!(check_create(&s, &u, &o, &g, NOW).unwrap_err().error, "globalPATCreationBlocked");
        o.policy.restrict_pat_creation = true;
        assert_eq!(
            check_create(&s, &u, &o, &req("n", "vso.code", "2026-06-02T00:00:00Z"), NOW).unwrap_err().error,
            "disablePatCreationPolicyViolation"
        );
        o.policy.allow_packaging_only = true;
        assert!(check_create(&s, &u, &o, &req("n", "vso.packaging", "2026-06-02T00:00:00Z"), NOW).is_ok());
        o.policy.allowlist.push("A@X.test".into());
        assert!(check_create(&s, &u, &o, &req("n", "vso.code", "2026-06-02T00:00:00Z"), NOW).is_ok());
    }

    #[test]
    fn update_clamps_from_creation_and_refuses_expired_or_revoked() {
        let (mut s, u, o) = world();
        s.tenant_policy.max_lifespan_days = Some(30);
        let mut pat = PatRecord {
            id: uuid::Uuid::new_v4(),
            owner: u.id,
            org: o.id,
            display_name: "p".into(),
            scope: "vso.code".into(),
            target_accounts: Some(vec![o.id]),
            valid_from: NOW - Duration::days(20),
            valid_to: NOW + Duration::days(1),
            revoked_at: None,
            revoked_by: None,
            hash: String::new(),
            expired_recorded: false,
        };
        let upd = UpdateRequest { valid_to: Some("2026-12-01T00:00:00Z".into()), ..Default::default() };
        let c = check_update(&s, &u, &o, &pat, &upd, NOW).unwrap();
        assert_eq!(c.valid_to, Some(NOW + Duration::days(10)));
        assert_eq!(
            check_update(&s, &u, &o, &pat, &upd, NOW + Duration::days(2)).unwrap_err().error,
            "expiredPatCannotBeExtended"
        );
        pat.revoked_at = Some(NOW);
        assert_eq!(check_update(&s, &u, &o, &pat, &upd, NOW).unwrap_err().error, "invalidToken");
    }
}
