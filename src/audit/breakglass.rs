//! Break glass: revoke one PAT, every PAT of one owner, or everything in an organization — now.
//!
//! Two paths, chosen per token: the owner's own PAT Lifecycle API (`PatApi`, through a [`Connector`]) for
//! owners patrol holds a sign-in for, and **Token Admin** (an organization administrator listing a user's
//! PATs by subject descriptor and revoking in batches) for everyone else. Organization-wide, a Token Admin
//! **revocation rule** can additionally refuse every PAT created before the break glass, including tokens
//! of users patrol cannot list.
//!
//! Managed tokens can get **pre-staged replacements** (created and stored through a [`Replacer`] — the
//! rotation engine's journaled state machine, reason `compromised` — before the old PAT is revoked), so the
//! emergency is not an outage. A replacement that fails never stops the revocation: security first, and
//! the report says which consumers will now fail. A rerun of an interrupted break glass finds its own
//! replacements among the candidates and keeps them ([`KEPT`]); the run record is `audit::resume`.
//!
//! [`survey`] finds what would be revoked (read-only; that is also the dry run and what the confirmation
//! shows); [`execute`] acts on a survey and returns a [`BreakGlassReport`] (JSON or [`BreakGlassReport::table`]).

use super::context::{Lifecycle, PatrolAction};
use super::managed::ManagedPat;
use super::replace::{ReplaceReason, Replacement, Replacer};
use crate::devops::tokenadmin::{SessionToken, TokenAdminClient};
use crate::devops::{Connector, DevOpsError, DisplayFilter, Pat};
use crate::domain::{AuthorizationId, OrgName, OwnerId, SecretName};
use async_trait::async_trait;
use serde::Serialize;
use std::collections::BTreeMap;
use time::{Duration, OffsetDateTime};

/// What to revoke.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", content = "value", rename_all = "snake_case")]
pub enum Scope {
    /// One PAT by authorization id.
    Pat(AuthorizationId),
    /// Every PAT of an owner patrol holds a sign-in for.
    Owner(OwnerId),
    /// Every PAT of a user, by Graph subject descriptor (Token Admin).
    User(String),
    /// Everything in the organization patrol can reach.
    Organization,
}

impl std::fmt::Display for Scope {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Pat(id) => write!(f, "PAT {id}"),
            Self::Owner(o) => write!(f, "every PAT of {o}"),
            Self::User(d) => write!(f, "every PAT of user {d}"),
            Self::Organization => f.write_str("every PAT in the organization"),
        }
    }
}

/// A break-glass request.
#[derive(Debug, Clone)]
pub struct Request {
    pub organization: OrgName,
    pub scope: Scope,
    /// Subject descriptors of further users whose PATs Token Admin should list (with [`Scope::Pat`] and
    /// [`Scope::Organization`]).
    pub descriptors: Vec<String>,
    /// The owners the policy manages tokens for in this organization: with [`Scope::Pat`] and
    /// [`Scope::Organization`] each of them is listed too (besides the owners the vault's tags name), so an
    /// owner patrol cannot list makes the survey incomplete instead of silently absent.
    pub policy_owners: Vec<OwnerId>,
    /// Every owner the policy names in any organization: the owners `patrol login --owner` signs in (an owner
    /// outside the policy cannot sign in, so the advice for one who has not differs).
    pub signable_owners: Vec<OwnerId>,
    /// Create and store replacements for managed PATs before revoking them.
    pub prestage: bool,
    /// Organization-wide only: also create a Token Admin revocation rule over every scope for PATs created
    /// before the break glass.
    pub revocation_rule: bool,
}

/// Which API revokes a token.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Via {
    OwnerApi,
    TokenAdmin,
}

/// A PAT that break glass will revoke.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Candidate {
    pub authorization_id: AuthorizationId,
    pub display_name: String,
    /// The owner's UPN (owner API) or subject descriptor (Token Admin).
    pub owner: String,
    pub via: Via,
    pub scope: String,
    pub global: bool,
    #[serde(with = "time::serde::rfc3339::option")]
    pub valid_to: Option<OffsetDateTime>,
    /// The managing secret when this is a managed PAT's current value.
    pub secret: Option<SecretName>,
}

/// An owner, a user or an organization break glass could not list: its PATs are not among the candidates,
/// so the survey is incomplete (fail closed: never "nothing to revoke" when patrol could not look).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Unlisted {
    /// The owner's UPN, the user's subject descriptor, or the organization.
    pub who: String,
    /// Why, and what to do about it (the exact command).
    pub message: String,
    /// `never-signed-in` or `sign-in-expired` when signing the owner in fixes it (exit 3), else `None`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sign_in: Option<&'static str>,
}

impl Unlisted {
    /// Why `owner`'s PATs in `org` could not be listed, with the command that fixes it.
    pub fn owner(owner: &OwnerId, org: &OrgName, e: &DevOpsError, signable: bool) -> Self {
        let (message, sign_in) = match e {
            DevOpsError::SignInRequired { reason, .. }
                if !signable && reason == crate::auth::session::NEVER_SIGNED_IN =>
            {
                (
                    format!(
                        "{owner} has not signed in and no token of the policy names them, so patrol cannot list \
                         their PATs in {org} (`patrol login` signs in only owners the policy names): list them \
                         through Token Admin with `--user <their subject descriptor> --admin <administrator>`"
                    ),
                    None,
                )
            }
            DevOpsError::SignInRequired { reason, .. } if reason == crate::auth::session::NEVER_SIGNED_IN => (
                format!(
                    "{owner} has not signed in, so their PATs in {org} could not be listed: sign in with \
                     `patrol login --owner {owner}`"
                ),
                Some("never-signed-in"),
            ),
            DevOpsError::SignInRequired { reason, .. } => (
                format!(
                    "{owner}'s sign-in expired or was revoked ({reason}), so their PATs in {org} could not be \
                     listed: sign in again with `patrol login --owner {owner}`"
                ),
                Some("sign-in-expired"),
            ),
            other => (format!("listing the PATs of {owner} in {org} failed: {other}"), None),
        };
        Self { who: owner.to_string(), message, sign_in }
    }
}

/// What [`survey`] found: the confirmation screen and the dry run.
#[derive(Debug, Clone, Serialize)]
pub struct Survey {
    /// False when some owner, user or the organization could not be listed ([`Survey::unlisted`]).
    pub complete: bool,
    /// What could not be listed: those PATs are NOT in `candidates`.
    pub unlisted: Vec<Unlisted>,
    pub organization: OrgName,
    pub scope: Scope,
    pub candidates: Vec<Candidate>,
    /// The scopes of the revocation rule that will be created, if any.
    pub revocation_rule: Option<String>,
    /// Owners or users that could not be listed: their PATs are NOT in `candidates`.
    pub errors: Vec<String>,
    #[serde(skip)]
    managed: Vec<ManagedPat>,
    #[serde(skip)]
    prestage: bool,
}

impl Survey {
    /// The question the operator confirms.
    pub fn confirmation(&self) -> String {
        let managed = self.candidates.iter().filter(|c| c.secret.is_some()).count();
        let mut s = String::new();
        if !self.complete {
            s.push_str(&format!(
                "THE SURVEY IS INCOMPLETE ({} could not be listed; their PATs are not included). ",
                self.unlisted.iter().map(|u| u.who.as_str()).collect::<Vec<_>>().join(", ")
            ));
        }
        s.push_str(&format!(
            "Revoke {} PAT(s) in organization {} ({}), {managed} of them managed by patrol{}",
            self.candidates.len(),
            self.organization,
            self.scope,
            if self.prestage && managed > 0 { " (replacements are stored first)" } else { "" }
        ));
        if let Some(r) = &self.revocation_rule {
            s.push_str(&format!(
                ", and refuse every PAT created before now with any of {} scopes",
                r.split(' ').count()
            ));
        }
        s.push('?');
        s
    }
}

/// Token Admin as break glass uses it (implemented by [`TokenAdminClient`]).
#[async_trait]
pub trait AdminApi: Send + Sync {
    async fn list_user(&self, descriptor: &str) -> Result<Vec<SessionToken>, DevOpsError>;
    async fn revoke(&self, ids: &[AuthorizationId]) -> Result<usize, DevOpsError>;
    async fn revocation_rule(&self, scopes: &str, created_before: Option<OffsetDateTime>) -> Result<(), DevOpsError>;
}

#[async_trait]
impl AdminApi for TokenAdminClient {
    async fn list_user(&self, descriptor: &str) -> Result<Vec<SessionToken>, DevOpsError> {
        self.list_all(descriptor).await
    }
    async fn revoke(&self, ids: &[AuthorizationId]) -> Result<usize, DevOpsError> {
        TokenAdminClient::revoke(self, ids).await
    }
    async fn revocation_rule(&self, scopes: &str, created_before: Option<OffsetDateTime>) -> Result<(), DevOpsError> {
        self.create_revocation_rule(scopes, created_before).await
    }
}

#[derive(Debug, thiserror::Error)]
pub enum BreakGlassError {
    #[error("{0}")]
    Invalid(String),
}

/// Every scope a PAT can carry: a rule over all of them refuses every PAT created before it.
pub fn all_scopes() -> String {
    crate::domain::KNOWN_SCOPES.join(" ")
}

/// Finds what break glass would revoke. Read-only.
pub async fn survey(
    req: &Request,
    managed: &[ManagedPat],
    connector: &dyn Connector,
    admin: Option<&dyn AdminApi>,
    now: OffsetDateTime,
) -> Result<Survey, BreakGlassError> {
    let org = &req.organization;
    let managed: Vec<ManagedPat> = managed.iter().filter(|m| m.in_organization(org)).cloned().collect();
    let mut owners: Vec<OwnerId> = Vec::new();
    let mut descriptors: Vec<String> = req.descriptors.clone();
    match &req.scope {
        Scope::Owner(o) => owners.push(o.clone()),
        Scope::User(d) => descriptors.insert(0, d.clone()),
        Scope::Pat(_) | Scope::Organization => {
            for o in req.policy_owners.iter().chain(managed.iter().map(|m| &m.owner)) {
                if !owners.contains(o) {
                    owners.push(o.clone());
                }
            }
        }
    }
    if (req.revocation_rule) && req.scope != Scope::Organization {
        return Err(BreakGlassError::Invalid(
            "a revocation rule is only made for organization-wide break glass".into(),
        ));
    }
    if admin.is_none() && !descriptors.is_empty() {
        return Err(BreakGlassError::Invalid(
            "listing other users' PATs needs Token Admin: name an organization administrator".into(),
        ));
    }
    if req.revocation_rule && admin.is_none() {
        return Err(BreakGlassError::Invalid(
            "a revocation rule needs Token Admin: name an organization administrator".into(),
        ));
    }
    let wanted = |id: &AuthorizationId| match &req.scope {
        Scope::Pat(p) => p == id,
        _ => true,
    };
    let secret_of = |id: &AuthorizationId| managed.iter().find(|m| &m.authorization_id == id).map(|m| m.secret.clone());
    let mut found: BTreeMap<AuthorizationId, Candidate> = BTreeMap::new();
    let mut errors = Vec::new();
    let mut unlisted: Vec<Unlisted> = Vec::new();
    if owners.is_empty() && descriptors.is_empty() {
        unlisted.push(Unlisted {
            who: org.to_string(),
            message: format!(
                "patrol knows no owner or user to list in {org} (the policy manages no token there and no vault \
                 secret names one): name an owner with --owner, or users with --descriptor and --admin"
            ),
            sign_in: None,
        });
    }
    for owner in &owners {
        match connector.pats(owner, org).list(DisplayFilter::Active).await {
            Ok(pats) => {
                for p in pats.into_iter().filter(|p| wanted(&p.authorization_id) && p.valid_to > now) {
                    let c = from_pat(&p, owner, secret_of(&p.authorization_id));
                    found.entry(c.authorization_id).or_insert(c);
                }
            }
            Err(e) => unlisted.push(Unlisted::owner(owner, org, &e, req.signable_owners.contains(owner))),
        }
    }
    if let Some(admin) = admin {
        for d in &descriptors {
            match admin.list_user(d).await {
                Ok(tokens) => {
                    let live = tokens.into_iter().filter(|t| {
                        t.is_valid != Some(false) && t.valid_to.is_none_or(|v| v > now) && wanted(&t.authorization_id)
                    });
                    for t in live {
                        let secret = secret_of(&t.authorization_id);
                        found.entry(t.authorization_id).or_insert_with(|| Candidate {
                            authorization_id: t.authorization_id,
                            display_name: t.display_name.clone().unwrap_or_default(),
                            owner: d.clone(),
                            via: Via::TokenAdmin,
                            scope: t.scope.clone(),
                            global: t.target_accounts.is_none(),
                            valid_to: t.valid_to,
                            secret,
                        });
                    }
                }
                Err(e) => unlisted.push(Unlisted {
                    who: d.clone(),
                    message: format!("Token Admin could not list the PATs of user {d} in {org}: {e}"),
                    sign_in: None,
                }),
            }
        }
    }
    if let Scope::Pat(id) = &req.scope
        && found.is_empty()
        && unlisted.is_empty()
    {
        errors.push(format!(
            "PAT {id} is not an active PAT of any owner or user patrol could list in {org} (already revoked or \
             expired, or its owner is not signed in: name its user's descriptor with Token Admin)"
        ));
    }
    let mut candidates: Vec<Candidate> = found.into_values().collect();
    candidates.sort_by(|a, b| (a.via, &a.owner, &a.display_name).cmp(&(b.via, &b.owner, &b.display_name)));
    Ok(Survey {
        complete: unlisted.is_empty(),
        unlisted,
        organization: org.clone(),
        scope: req.scope.clone(),
        candidates,
        revocation_rule: req.revocation_rule.then(all_scopes),
        errors,
        managed,
        prestage: req.prestage,
    })
}

fn from_pat(p: &Pat, owner: &OwnerId, secret: Option<SecretName>) -> Candidate {
    Candidate {
        authorization_id: p.authorization_id,
        display_name: p.display_name.clone(),
        owner: owner.to_string(),
        via: Via::OwnerApi,
        scope: p.scope.clone(),
        global: p.is_global(),
        valid_to: Some(p.valid_to),
        secret,
    }
}

/// The outcome of a candidate that is a replacement this break glass stored (found again by a rerun).
pub const KEPT: &str = "kept: the replacement this break glass stored";

/// What happened to one PAT.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Row {
    #[serde(flatten)]
    pub candidate: Candidate,
    /// `revoked`, `would revoke` (dry run), [`KEPT`] or `failed: …`.
    pub outcome: String,
    pub replacement: Option<Replacement>,
    /// Why no replacement is in place, when one was wanted.
    pub replacement_error: Option<String>,
}

/// The report of a break glass: what was revoked, replaced, and what could not be done.
#[derive(Debug, Clone, Serialize)]
pub struct BreakGlassReport {
    /// False when the survey could not list everything it should have: the rows are NOT every PAT in scope.
    pub complete: bool,
    /// What could not be listed (owners, users, the organization), each with the command that fixes it.
    pub unlisted: Vec<Unlisted>,
    pub organization: OrgName,
    pub scope: Scope,
    pub dry_run: bool,
    #[serde(with = "time::serde::rfc3339")]
    pub at: OffsetDateTime,
    pub rows: Vec<Row>,
    /// `created (…)`, `would create (…)` or `failed: …`.
    pub revocation_rule: Option<String>,
    pub errors: Vec<String>,
    /// Lifecycle actions patrol performed (feed them to the audit context so they are not "foreign").
    #[serde(skip)]
    pub actions: Vec<PatrolAction>,
}

impl BreakGlassReport {
    pub fn revoked(&self) -> usize {
        self.rows.iter().filter(|r| r.outcome == "revoked").count()
    }

    /// The PATs this break glass revoked, for the lifecycle log (the weekly report). Replacements are
    /// logged by the rotation engine that made them.
    pub fn lifecycle_events(&self) -> Vec<crate::rotation::history::Event> {
        use crate::rotation::history::{Event, Kind};
        self.rows
            .iter()
            .filter(|r| r.outcome == "revoked")
            .map(|r| Event {
                at: self.at,
                kind: Kind::Revoked,
                secret: r.candidate.secret.as_ref().map(ToString::to_string),
                owner: match r.candidate.via {
                    Via::OwnerApi => OwnerId::parse(&r.candidate.owner).ok(),
                    Via::TokenAdmin => None,
                },
                organization: self.organization.clone(),
                authorization_id: r.candidate.authorization_id,
                display_name: r.candidate.display_name.clone(),
                scope: r.candidate.scope.clone(),
                valid_to: r.candidate.valid_to,
                replaced: None,
                by: crate::trigger::trigger().or_else(|| Some("break glass".into())),
                detail: format!("break glass: {}", self.scope),
            })
            .collect()
    }

    /// Whether signing owners in is all that is wrong: the survey missed only owners who must sign in, and
    /// nothing else failed (`patrol revoke` exits 3 then, 1 for any other failure).
    pub fn only_sign_in_missing(&self) -> bool {
        let other_failure = !self.errors.is_empty()
            || self.rows.iter().any(|r| r.outcome.starts_with("failed"))
            || self.revocation_rule.as_deref().is_some_and(|r| r.starts_with("failed"));
        !other_failure && !self.unlisted.is_empty() && self.unlisted.iter().all(|u| u.sign_in.is_some())
    }

    /// The survey's gaps, said first: what could not be listed and how to fix it (empty when complete).
    pub fn incomplete_text(&self) -> String {
        incomplete_text(&self.unlisted)
    }

    pub fn failed(&self) -> bool {
        !self.unlisted.is_empty()
            || !self.errors.is_empty()
            || self.rows.iter().any(|r| r.outcome.starts_with("failed"))
            || self.revocation_rule.as_deref().is_some_and(|r| r.starts_with("failed"))
    }

    /// A plain-text table (one row per PAT), then the rule and any errors.
    pub fn table(&self) -> String {
        let head = ["AUTHORIZATION ID", "DISPLAY NAME", "OWNER", "VIA", "SECRET", "OUTCOME", "REPLACEMENT"];
        let rows: Vec<[String; 7]> = self
            .rows
            .iter()
            .map(|r| {
                let c = &r.candidate;
                [
                    c.authorization_id.to_string(),
                    c.display_name.clone(),
                    c.owner.clone(),
                    match c.via {
                        Via::OwnerApi => "owner".into(),
                        Via::TokenAdmin => "token-admin".into(),
                    },
                    c.secret.as_ref().map(ToString::to_string).unwrap_or_else(|| "-".into()),
                    r.outcome.clone(),
                    match (&r.replacement, &r.replacement_error) {
                        (Some(p), _) => format!("{} (version {})", p.authorization_id, p.version),
                        (None, Some(e)) => format!("NONE: {e}"),
                        (None, None) => "-".into(),
                    },
                ]
            })
            .collect();
        let mut out = self.incomplete_text();
        out.push_str(&format!(
            "{}break glass in {} ({}) at {}\n",
            if self.dry_run { "DRY RUN — " } else { "" },
            self.organization,
            self.scope,
            super::finding::rfc3339(self.at)
        ));
        out.push_str(&render_table(&head, &rows));
        if let Some(r) = &self.revocation_rule {
            out.push_str(&format!("revocation rule: {r}\n"));
        }
        for e in &self.errors {
            out.push_str(&format!("error: {e}\n"));
        }
        let n = if self.dry_run { self.rows.len() } else { self.revoked() };
        let verb = if self.dry_run { "would be revoked" } else { "revoked" };
        if self.complete {
            out.push_str(&format!("{n} PAT(s) {verb}\n"));
        } else {
            // Never a bare count when patrol could not look everywhere: the count is of what it could list.
            out.push_str(&format!(
                "INCOMPLETE — of the PATs patrol could list, {n} {}; {} could not be listed (see the top)\n",
                if self.dry_run { "would be revoked" } else { "were revoked" },
                self.unlisted.iter().map(|u| u.who.as_str()).collect::<Vec<_>>().join(", ")
            ));
        }
        out
    }
}

/// The lines that open every break-glass output when the survey is incomplete (empty when it is complete).
pub fn incomplete_text(unlisted: &[Unlisted]) -> String {
    if unlisted.is_empty() {
        return String::new();
    }
    let mut out = format!(
        "INCOMPLETE SURVEY: {} owner(s), user(s) or organization(s) could not be listed; their PATs are NOT in \
         what follows:\n",
        unlisted.len()
    );
    for u in unlisted {
        out.push_str(&format!("  - {}\n", u.message));
    }
    out
}

pub(crate) fn render_table<const N: usize>(head: &[&str; N], rows: &[[String; N]]) -> String {
    let mut width: Vec<usize> = head.iter().map(|h| h.chars().count()).collect();
    for r in rows {
        for (w, c) in width.iter_mut().zip(r.iter()) {
            *w = (*w).max(c.chars().count());
        }
    }
    let line = |cells: Vec<&str>| {
        let mut s = String::new();
        for (i, (c, w)) in cells.iter().zip(&width).enumerate() {
            if i + 1 == N {
                s.push_str(c);
            } else {
                s.push_str(&format!("{c:<w$}  "));
            }
        }
        s.trim_end().to_owned() + "\n"
    };
    let mut out = line(head.to_vec());
    for r in rows {
        out.push_str(&line(r.iter().map(String::as_str).collect()));
    }
    out
}

/// Acts on a survey: pre-stages replacements (when asked), revokes, creates the revocation rule. With
/// `dry_run` nothing changes and the report says what would have been done.
pub async fn execute(
    survey: &Survey,
    connector: &dyn Connector,
    admin: Option<&dyn AdminApi>,
    replacer: Option<&dyn Replacer>,
    dry_run: bool,
    now: OffsetDateTime,
) -> BreakGlassReport {
    let org = &survey.organization;
    let mut errors = survey.errors.clone();
    let mut rows: Vec<Row> = survey
        .candidates
        .iter()
        .map(|c| Row {
            candidate: c.clone(),
            outcome: if dry_run { "would revoke".into() } else { String::new() },
            replacement: None,
            replacement_error: None,
        })
        .collect();
    let mut actions = Vec::new();
    if dry_run {
        for r in rows.iter_mut().filter(|r| r.candidate.secret.is_some() && survey.prestage) {
            r.replacement_error = Some("dry run: a replacement would be created and stored first".into());
        }
        let rule = survey.revocation_rule.as_ref().map(|s| format!("would create (scopes: {s})"));
        return BreakGlassReport {
            complete: survey.complete,
            unlisted: survey.unlisted.clone(),
            organization: org.clone(),
            scope: survey.scope.clone(),
            dry_run,
            at: now,
            rows,
            revocation_rule: rule,
            errors,
            actions,
        };
    }

    // 1. Replacements first, so consumers can switch before the old value stops working.
    let mut earliest_replacement: Option<OffsetDateTime> = None;
    if survey.prestage {
        for r in rows.iter_mut() {
            let Some(secret) = &r.candidate.secret else { continue };
            let Some(m) = survey.managed.iter().find(|m| &m.secret == secret) else { continue };
            match replacer {
                None => r.replacement_error = Some("no replacer configured".into()),
                Some(rep) => match rep.replace(m, ReplaceReason::Compromised).await {
                    Ok(p) => {
                        earliest_replacement = Some(earliest_replacement.map_or(p.valid_from, |e| e.min(p.valid_from)));
                        actions.push(PatrolAction {
                            kind: Lifecycle::Create,
                            organization: org.clone(),
                            owner: m.owner.clone(),
                            display_name: p.display_name.clone(),
                            authorization_id: Some(p.authorization_id),
                            at: now,
                        });
                        r.replacement = Some(p);
                    }
                    Err(e) => {
                        r.replacement_error = Some(format!("{e}; revoking anyway — its consumers will fail"));
                    }
                },
            }
        }
    }

    // A rerun of an interrupted break glass finds its own replacements among the candidates (they are
    // current values now): they are kept, and the PATs they replaced show them.
    let replacements: Vec<Replacement> = rows.iter().filter_map(|r| r.replacement.clone()).collect();
    for r in rows.iter_mut() {
        let id = r.candidate.authorization_id;
        if replacements.iter().any(|p| p.authorization_id == id) {
            r.outcome = KEPT.into();
        } else if r.replacement.is_none()
            && let Some(p) = replacements.iter().find(|p| p.replaces == id)
        {
            r.replacement = Some(p.clone());
        }
    }

    // 2. Revoke: owner API one by one, Token Admin in batches.
    let mut admin_ids = Vec::new();
    for r in rows.iter_mut().filter(|r| r.outcome != KEPT) {
        let c = &r.candidate;
        match c.via {
            Via::TokenAdmin => admin_ids.push(c.authorization_id),
            Via::OwnerApi => {
                let Ok(owner) = OwnerId::parse(&c.owner) else {
                    r.outcome = format!("failed: {:?} is not an owner", c.owner);
                    continue;
                };
                r.outcome = match connector.pats(&owner, org).revoke(c.authorization_id).await {
                    Ok(()) => {
                        actions.push(revoke_action(org, &owner, c, now));
                        "revoked".into()
                    }
                    Err(e) => format!("failed: {e}"),
                };
            }
        }
    }
    if !admin_ids.is_empty() {
        let outcome = match admin {
            None => "failed: Token Admin is not available".to_owned(),
            Some(a) => match a.revoke(&admin_ids).await {
                Ok(_) => "revoked".to_owned(),
                Err(e) => format!("failed: {e}"),
            },
        };
        for r in rows.iter_mut().filter(|r| r.candidate.via == Via::TokenAdmin) {
            r.outcome = outcome.clone();
        }
    }

    // 3. The rule: PATs created before the first replacement (by the service's clock) are refused.
    let rule = match (&survey.revocation_rule, admin) {
        (None, _) => None,
        (Some(_), None) => Some("failed: Token Admin is not available".to_owned()),
        (Some(scopes), Some(a)) => {
            let before = earliest_replacement.map(|t| t - Duration::seconds(1));
            Some(match a.revocation_rule(scopes, before).await {
                Ok(()) => format!(
                    "created: PATs created before {} with any scope are refused",
                    before.map(super::finding::rfc3339).unwrap_or_else(|| "now (the service's clock)".into())
                ),
                Err(e) => {
                    errors.push(format!("the revocation rule was not created: {e}"));
                    format!("failed: {e}")
                }
            })
        }
    };
    for r in &rows {
        if r.outcome.starts_with("failed") {
            tracing::error!(pat = %r.candidate.authorization_id, outcome = %r.outcome, "break glass could not revoke a PAT");
        }
    }
    BreakGlassReport {
        complete: survey.complete,
        unlisted: survey.unlisted.clone(),
        organization: org.clone(),
        scope: survey.scope.clone(),
        dry_run,
        at: now,
        rows,
        revocation_rule: rule,
        errors,
        actions,
    }
}

fn revoke_action(org: &OrgName, owner: &OwnerId, c: &Candidate, now: OffsetDateTime) -> PatrolAction {
    PatrolAction {
        kind: Lifecycle::Revoke,
        organization: org.clone(),
        owner: owner.clone(),
        display_name: c.display_name.clone(),
        authorization_id: Some(c.authorization_id),
        at: now,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_aligns_and_rule_covers_every_scope() {
        let t = render_table(&["A", "BB"], &[["xxx".into(), "y".into()], ["z".into(), "w".into()]]);
        assert_eq!(t, "A    BB\nxxx  y\nz    w\n");
        let all = all_scopes();
        assert!(all.split(' ').any(|s| s == "app_token") && all.split(' ').any(|s| s == "vso.code"), "{all}");
    }
}
