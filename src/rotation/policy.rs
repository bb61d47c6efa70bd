//! `patrol.toml`: the policy that declares every managed token — defaults at the top, then one
//! `[[token]]` table per token. Parsing validates everything (names, scopes, day counts, targets, the
//! full-access and all-organization refusals) and every error names the file, the line and the field.
//! The documented table of fields is `docs/policy.md`.

use crate::domain::{DisplayName, OrgName, OwnerId, Scopes, SecretName};
use crate::notify::Target;
use serde::{Deserialize, Serialize};
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use toml::Spanned;

/// The longest validity Azure DevOps grants a PAT.
pub const MAX_VALIDITY_DAYS: u32 = 365;
/// Expiry warning thresholds when a policy names none.
pub const DEFAULT_THRESHOLDS: [u32; 4] = [30, 14, 7, 1];
/// The most `expiry_thresholds` a token may have: each is a warning to people, and a list longer than
/// this is a mistake (a generated file, a unit confusion), not a notification plan.
pub const MAX_THRESHOLDS: usize = 10;

/// Why a policy file was refused: where, and what was wrong.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{file}:{line}: {field}: {problem}")]
pub struct PolicyError {
    pub file: String,
    /// 1-based; 0 when the problem has no position (e.g. the file could not be read).
    pub line: usize,
    pub field: String,
    pub problem: String,
}

/// One managed token, with the defaults applied.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ManagedToken {
    /// The Key Vault secret holding the current PAT; the token's identity in patrol.
    pub secret: SecretName,
    /// The PAT display name (patrol appends ` (patrol:<operation>)` when it creates one).
    pub display_name: DisplayName,
    pub organization: OrgName,
    pub owner: OwnerId,
    pub scopes: Scopes,
    pub validity_days: u32,
    pub rotate_before_days: u32,
    pub grace_days: u32,
    pub notify: Vec<Target>,
    /// Descending, distinct.
    pub expiry_thresholds: Vec<u32>,
    /// Create an all-organization PAT (only with `allow_all_orgs`; refused by Azure DevOps from 2026-12-01).
    pub all_orgs: bool,
    pub allow_full_access: bool,
    pub allow_all_orgs: bool,
    /// The consumer vault the PAT is stored in, by name (`PATROL_CONSUMER_KEYVAULTS`); `None`: the default
    /// consumer vault (`PATROL_KEYVAULT_URL`).
    pub vault: Option<String>,
    /// The line of the `[[token]]` table in the policy file (for messages).
    #[serde(skip)]
    pub line: usize,
    /// Where the PAT is delivered besides its own secret (`[[token.consumer]]`, see `crate::consumers`).
    pub consumers: crate::consumers::Consumers,
}

/// The whole policy.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Policy {
    pub file: PathBuf,
    pub tokens: Vec<ManagedToken>,
    /// Evidence-gated revocation of previous PATs (`[audit] revocation = { mode = "evidence", … }`);
    /// `None`: a previous PAT is revoked when its grace period ends.
    pub gate: Option<super::evidence::EvidenceGate>,
    /// The `[audit]` table, validated and resolved with the policy (`None`: the policy has none, and the
    /// timer does not poll the audit log).
    #[serde(skip)]
    pub audit: Option<crate::audit::AuditSettings>,
}

impl Policy {
    pub fn token(&self, secret: &SecretName) -> Option<&ManagedToken> {
        self.tokens.iter().find(|t| &t.secret == secret)
    }

    /// The thresholds the reports mark on the expiry timeline: every threshold any token uses, longest
    /// first (the defaults when no token is managed).
    pub fn timeline_thresholds(&self) -> Vec<u32> {
        let mut t: Vec<u32> = self.tokens.iter().flat_map(|t| t.expiry_thresholds.iter().copied()).collect();
        if t.is_empty() {
            t = DEFAULT_THRESHOLDS.to_vec();
        }
        t.sort_unstable_by(|a, b| b.cmp(a));
        t.dedup();
        t
    }

    /// Reads and validates a policy file.
    pub fn load(path: &Path) -> Result<Self, PolicyError> {
        let text = std::fs::read_to_string(path).map_err(|e| PolicyError {
            file: path.display().to_string(),
            line: 0,
            field: "(file)".into(),
            problem: format!("cannot read: {e}"),
        })?;
        Self::parse(path, &text)
    }

    /// Validates policy text; `path` only names the file in errors.
    pub fn parse(path: &Path, text: &str) -> Result<Self, PolicyError> {
        let file = path.display().to_string();
        let ctx = Ctx::new(&file, text);
        let raw: RawPolicy = toml::from_str(text).map_err(|e| {
            let line = e.span().map(|s| ctx.line_of(s.start)).unwrap_or(0);
            PolicyError { file: file.clone(), line, field: "(syntax)".into(), problem: e.message().to_owned() }
        })?;
        let mut gate = None;
        let mut audit = None;
        if let Some(a) = &raw.audit {
            let settings = a.get_ref().resolve().map_err(|e| {
                let line = ctx.line_of(field_offset(text, a.span(), &e.field));
                ctx.err(line, &format!("audit.{}", e.field), &e.problem)
            })?;
            if settings.revocation.mode == crate::audit::policy::RevocationMode::Evidence {
                gate =
                    Some(super::evidence::EvidenceGate { gate: settings.revocation, notify: settings.notify.clone() });
            }
            audit = Some(settings);
        }
        if raw.token.is_empty() && raw.audit.is_none() {
            // An empty file, or only [defaults]: nothing to manage, nothing to watch. Refused rather than
            // run as a no-op that looks healthy (a truncated or mis-pointed policy file).
            let line = text.lines().position(|l| l.trim_start().starts_with("[defaults]")).map_or(1, |i| i + 1);
            return Err(ctx.err(
                line,
                "token",
                if text.trim().is_empty() {
                    "the policy is empty: declare at least one [[token]] table (see docs/policy.md)"
                } else {
                    "the policy declares no [[token]] table: there is nothing for patrol to manage (defaults alone mean nothing)"
                },
            ));
        }
        let defaults = raw.defaults.unwrap_or_default();
        let line_of = |o: usize| ctx.line_of(o);
        let lines = crate::consumers::policy::Lines { file: &file, line_of: &line_of };
        let mut consumer_errors = Vec::new();
        let consumer_settings =
            crate::consumers::policy::settings(raw.consumers.as_ref(), &lines, &mut consumer_errors);
        let settings_line = raw.consumers.as_ref().map(|c| ctx.line_of(c.span().start)).unwrap_or(0);
        let mut tokens = Vec::with_capacity(raw.token.len());
        let mut seen_secrets = BTreeSet::new();
        let mut seen_names = BTreeSet::new();
        for (i, mut t) in raw.token.into_iter().enumerate() {
            let raw_consumers = std::mem::take(&mut t.get_mut().consumer);
            let mut token = ctx.token(i, t, &defaults)?;
            let tc = crate::consumers::policy::TokenContext {
                prefix: format!("token[{i}]"),
                line: token.line,
                secret: &token.secret,
                organization: Some(&token.organization),
                grace_days: Some(token.grace_days),
            };
            let list = crate::consumers::policy::token_consumers(
                raw_consumers,
                &tc,
                &consumer_settings,
                settings_line,
                &lines,
                &mut consumer_errors,
            );
            token.consumers = crate::consumers::Consumers { list, settings: consumer_settings.clone() };
            if !seen_secrets.insert(token.secret.clone()) {
                return Err(ctx.err(
                    token.line,
                    &format!("token[{i}].secret"),
                    "names a secret another token already manages",
                ));
            }
            let key =
                (token.owner.clone(), token.organization.clone(), token.display_name.as_str().to_ascii_lowercase());
            if !seen_names.insert(key) {
                return Err(ctx.err(
                    token.line,
                    &format!("token[{i}].display_name"),
                    "is used by another token of the same owner and organization",
                ));
            }
            if let (Some(g), Some(a)) = (&gate, &raw.audit)
                && u64::from(token.grace_days) * 24 > u64::from(g.gate.deadline_hours)
            {
                // The hard deadline would fall inside the grace period: every gated revocation would
                // become a deadline revocation with an alert the moment the grace ends.
                let line = ctx.line_of(field_offset(text, a.span(), "revocation.deadline_hours"));
                return Err(ctx.err(
                    line,
                    "audit.revocation.deadline_hours",
                    format!(
                        "{} hours is shorter than the grace period of token[{i}] ({} days = {} hours); the deadline \
                         counts from the rotation and must be at least the longest grace",
                        g.gate.deadline_hours,
                        token.grace_days,
                        token.grace_days * 24
                    ),
                ));
            }
            tokens.push(token);
        }
        if let Some(e) = crate::consumers::policy::combine(consumer_errors) {
            return Err(e);
        }
        Ok(Self { file: path.to_path_buf(), tokens, gate, audit })
    }
}

/// Where a field of the `[audit]` tables is written: the first line from the table's start (up to the
/// next table that is not `[audit…]`) that sets its last path segment (`quiet_hours` of
/// `revocation.quiet_hours`); else the table's start.
fn field_offset(text: &str, span: std::ops::Range<usize>, field: &str) -> usize {
    let key = field.rsplit('.').next().unwrap_or(field).split('/').next().unwrap_or(field);
    let mut offset = span.start;
    for (n, line) in text.get(span.start..).unwrap_or_default().split_inclusive('\n').enumerate() {
        let t = line.trim_start();
        if n > 0 && t.starts_with('[') && !t.starts_with("[audit") {
            break;
        }
        let mut rest = line;
        while let Some(i) = rest.find(key) {
            let before = rest[..i].chars().next_back();
            let after = rest[i + key.len()..].trim_start();
            if before.is_none_or(|c| !(c.is_alphanumeric() || c == '_')) && after.starts_with('=') {
                return offset + (line.len() - rest.len()) + i;
            }
            rest = &rest[i + key.len()..];
        }
        offset += line.len();
    }
    span.start
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPolicy {
    defaults: Option<RawDefaults>,
    #[serde(default)]
    token: Vec<Spanned<RawToken>>,
    /// `[audit]`: validated here so a mistake is refused with the policy; used by `crate::audit`.
    audit: Option<Spanned<crate::audit::AuditPolicy>>,
    /// `[consumers]`: what the consumers of every token share (`crate::consumers::policy`).
    consumers: Option<Spanned<crate::consumers::policy::RawSettings>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawDefaults {
    organization: Option<Spanned<String>>,
    owner: Option<Spanned<String>>,
    scopes: Option<Spanned<String>>,
    validity_days: Option<Spanned<i64>>,
    rotate_before_days: Option<Spanned<i64>>,
    grace_days: Option<Spanned<i64>>,
    notify: Option<Spanned<Vec<String>>>,
    expiry_thresholds: Option<Spanned<Vec<i64>>>,
    allow_full_access: Option<Spanned<bool>>,
    allow_all_orgs: Option<Spanned<bool>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawToken {
    secret: Option<Spanned<String>>,
    display_name: Option<Spanned<String>>,
    organization: Option<Spanned<String>>,
    owner: Option<Spanned<String>>,
    scopes: Option<Spanned<String>>,
    validity_days: Option<Spanned<i64>>,
    rotate_before_days: Option<Spanned<i64>>,
    grace_days: Option<Spanned<i64>>,
    notify: Option<Spanned<Vec<String>>>,
    expiry_thresholds: Option<Spanned<Vec<i64>>>,
    all_orgs: Option<Spanned<bool>>,
    allow_full_access: Option<Spanned<bool>>,
    allow_all_orgs: Option<Spanned<bool>>,
    vault: Option<Spanned<String>>,
    /// `[[token.consumer]]` tables, validated by `crate::consumers::policy`.
    #[serde(default)]
    consumer: Vec<Spanned<crate::consumers::policy::RawConsumer>>,
}

struct Ctx<'a> {
    file: &'a str,
    /// Byte offsets of every line start, for span → line.
    line_starts: Vec<usize>,
    _text: std::marker::PhantomData<&'a str>,
}

impl<'a> Ctx<'a> {
    fn new(file: &'a str, text: &'a str) -> Self {
        let mut line_starts = vec![0];
        line_starts.extend(text.bytes().enumerate().filter(|(_, b)| *b == b'\n').map(|(i, _)| i + 1));
        Self { file, line_starts, _text: std::marker::PhantomData }
    }

    fn line_of(&self, offset: usize) -> usize {
        self.line_starts.partition_point(|s| *s <= offset)
    }

    fn err(&self, line: usize, field: &str, problem: impl Into<String>) -> PolicyError {
        PolicyError { file: self.file.to_owned(), line, field: field.to_owned(), problem: problem.into() }
    }

    fn at<T>(&self, s: &Spanned<T>, field: &str, problem: impl Into<String>) -> PolicyError {
        self.err(self.line_of(s.span().start), field, problem)
    }

    /// The token's value, else the default's, else an error naming the field as missing.
    fn pick<'v, T>(
        &self,
        own: &'v Option<Spanned<T>>,
        default: &'v Option<Spanned<T>>,
        field: &str,
        token_line: usize,
    ) -> Result<&'v Spanned<T>, PolicyError> {
        own.as_ref()
            .or(default.as_ref())
            .ok_or_else(|| self.err(token_line, field, "is required (set it on the token or in [defaults])"))
    }

    fn days(&self, v: &Spanned<i64>, field: &str, min: i64, max: i64) -> Result<u32, PolicyError> {
        let d = *v.get_ref();
        if d < min || d > max {
            return Err(self.at(v, field, format!("{d} is outside {min}..={max} days")));
        }
        Ok(d as u32)
    }

    fn token(&self, i: usize, raw: Spanned<RawToken>, d: &RawDefaults) -> Result<ManagedToken, PolicyError> {
        let line = self.line_of(raw.span().start);
        let t = raw.into_inner();
        let f = |name: &str| format!("token[{i}].{name}");

        let secret_raw = t.secret.as_ref().ok_or_else(|| self.err(line, &f("secret"), "is required"))?;
        let secret =
            SecretName::parse(secret_raw.get_ref()).map_err(|e| self.at(secret_raw, &f("secret"), e.to_string()))?;
        if secret.as_str().to_ascii_lowercase().starts_with(crate::store::routed::REFRESH_TOKEN_PREFIX) {
            return Err(self.at(
                secret_raw,
                &f("secret"),
                "must not start with \"patrol-owner-\": patrol keeps owners' refresh tokens under such names",
            ));
        }
        let dn_raw = t.display_name.as_ref().ok_or_else(|| self.err(line, &f("display_name"), "is required"))?;
        let display_name =
            DisplayName::parse(dn_raw.get_ref()).map_err(|e| self.at(dn_raw, &f("display_name"), e.to_string()))?;
        if dn_raw.get_ref().contains("(patrol:") {
            return Err(self.at(
                dn_raw,
                &f("display_name"),
                "must not contain \"(patrol:\": patrol adds that marker itself",
            ));
        }
        // Leave room for the " (patrol:<12 hex>)" marker.
        if dn_raw.get_ref().chars().count() + 22 > DisplayName::MAX_LEN {
            return Err(self.at(
                dn_raw,
                &f("display_name"),
                "must be at most 234 characters (patrol appends a 22-character marker)",
            ));
        }

        let org_raw = self.pick(&t.organization, &d.organization, &f("organization"), line)?;
        let organization =
            OrgName::parse(org_raw.get_ref()).map_err(|e| self.at(org_raw, &f("organization"), e.to_string()))?;
        let owner_raw = self.pick(&t.owner, &d.owner, &f("owner"), line)?;
        let owner = OwnerId::parse(owner_raw.get_ref()).map_err(|e| self.at(owner_raw, &f("owner"), e.to_string()))?;
        let scopes_raw = self.pick(&t.scopes, &d.scopes, &f("scopes"), line)?;
        let scopes =
            Scopes::parse(scopes_raw.get_ref()).map_err(|e| self.at(scopes_raw, &f("scopes"), e.to_string()))?;

        let allow_full_access =
            t.allow_full_access.as_ref().or(d.allow_full_access.as_ref()).is_some_and(|v| *v.get_ref());
        let allow_all_orgs = t.allow_all_orgs.as_ref().or(d.allow_all_orgs.as_ref()).is_some_and(|v| *v.get_ref());
        if scopes.is_full_access() && !allow_full_access {
            return Err(self.at(
                scopes_raw,
                &f("scopes"),
                "app_token (full access) is refused; name explicit vso.* scopes, or set allow_full_access = true on this token",
            ));
        }
        let all_orgs = t.all_orgs.as_ref().is_some_and(|v| *v.get_ref());
        if all_orgs && !allow_all_orgs {
            let at = t.all_orgs.as_ref().map(|v| self.line_of(v.span().start)).unwrap_or(line);
            return Err(self.err(
                at,
                &f("all_orgs"),
                "all-organization PATs are refused (they stop working on 2026-12-01); set allow_all_orgs = true to override",
            ));
        }

        let validity_raw = self.pick(&t.validity_days, &d.validity_days, &f("validity_days"), line)?;
        let validity_days = self.days(validity_raw, &f("validity_days"), 1, MAX_VALIDITY_DAYS as i64)?;
        let rb_raw = self.pick(&t.rotate_before_days, &d.rotate_before_days, &f("rotate_before_days"), line)?;
        let rotate_before_days = self.days(rb_raw, &f("rotate_before_days"), 1, MAX_VALIDITY_DAYS as i64)?;
        if rotate_before_days >= validity_days {
            return Err(self.at(
                rb_raw,
                &f("rotate_before_days"),
                format!("{rotate_before_days} must be less than validity_days ({validity_days})"),
            ));
        }
        let grace_raw = self.pick(&t.grace_days, &d.grace_days, &f("grace_days"), line)?;
        let grace_days = self.days(grace_raw, &f("grace_days"), 0, MAX_VALIDITY_DAYS as i64)?;
        if grace_days > rotate_before_days {
            return Err(self.at(
                grace_raw,
                &f("grace_days"),
                format!("{grace_days} must be at most rotate_before_days ({rotate_before_days}): the previous PAT expires then anyway"),
            ));
        }
        if grace_days >= validity_days - rotate_before_days {
            return Err(self.at(
                grace_raw,
                &f("grace_days"),
                format!(
                    "{grace_days} must be less than validity_days - rotate_before_days ({}), so one grace period ends before the next rotation",
                    validity_days - rotate_before_days
                ),
            ));
        }

        let notify = match t.notify.as_ref().or(d.notify.as_ref()) {
            None => Vec::new(),
            Some(v) => {
                let mut out = Vec::new();
                for s in v.get_ref() {
                    let target = Target::parse(s).map_err(|e| self.at(v, &f("notify"), e.to_string()))?;
                    if !out.contains(&target) {
                        out.push(target);
                    }
                }
                out
            }
        };
        let thresholds_field =
            if t.expiry_thresholds.is_some() { f("expiry_thresholds") } else { "defaults.expiry_thresholds".into() };
        let expiry_thresholds = match t.expiry_thresholds.as_ref().or(d.expiry_thresholds.as_ref()) {
            None => DEFAULT_THRESHOLDS.to_vec(),
            Some(v) if v.get_ref().len() > MAX_THRESHOLDS => {
                return Err(self.at(
                    v,
                    &thresholds_field,
                    format!(
                        "has {} entries; at most {MAX_THRESHOLDS} warning thresholds are allowed (e.g. [30, 14, 7, 1])",
                        v.get_ref().len()
                    ),
                ));
            }
            Some(v) => {
                let mut set = BTreeSet::new();
                for n in v.get_ref() {
                    if !(1..=MAX_VALIDITY_DAYS as i64).contains(n) {
                        return Err(self.at(v, &thresholds_field, format!("{n} is outside 1..=365 days")));
                    }
                    set.insert(*n as u32);
                }
                if set.is_empty() {
                    return Err(self.at(v, &thresholds_field, "must name at least one threshold"));
                }
                set.into_iter().rev().collect()
            }
        };

        let vault = match &t.vault {
            None => None,
            Some(v) => {
                let name = v.get_ref().trim().to_ascii_lowercase();
                let ok = (3..=24).contains(&name.len())
                    && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
                    && name.bytes().next().is_some_and(|b| b.is_ascii_alphabetic());
                if !ok {
                    return Err(self.at(
                        v,
                        &f("vault"),
                        format!("{:?} is not a Key Vault name (3-24 letters, digits, '-')", v.get_ref()),
                    ));
                }
                Some(name)
            }
        };

        Ok(ManagedToken {
            secret,
            display_name,
            organization,
            owner,
            scopes,
            validity_days,
            rotate_before_days,
            grace_days,
            notify,
            expiry_thresholds,
            all_orgs,
            allow_full_access,
            allow_all_orgs,
            vault,
            line,
            consumers: Default::default(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"
[defaults]
organization = "fabrikam"
owner = "svc-ci@contoso.com"
validity_days = 30
rotate_before_days = 7
grace_days = 2
notify = ["email:ops@contoso.com"]

[[token]]
secret = "ci-build-pat"
display_name = "CI build"
scopes = "vso.build_execute vso.code"

[[token]]
secret = "pkg-feed-pat"
display_name = "Package feed"
scopes = "vso.packaging"
validity_days = 90
rotate_before_days = 14
expiry_thresholds = [7, 30, 1]
notify = ["teams", "email:pkg@contoso.com"]
"#;

    fn parse(text: &str) -> Result<Policy, PolicyError> {
        Policy::parse(Path::new("patrol.toml"), text)
    }

    #[test]
    fn defaults_apply_and_overrides_win() {
        let p = parse(GOOD).unwrap();
        assert_eq!(p.tokens.len(), 2);
        let a = &p.tokens[0];
        assert_eq!(a.secret.as_str(), "ci-build-pat");
        assert_eq!(a.validity_days, 30);
        assert_eq!(a.expiry_thresholds, vec![30, 14, 7, 1]);
        assert_eq!(a.notify, vec![Target::Email("ops@contoso.com".into())]);
        assert_eq!(a.line, 10);
        let b = &p.tokens[1];
        assert_eq!(b.validity_days, 90);
        assert_eq!(b.expiry_thresholds, vec![30, 7, 1]);
        assert_eq!(b.notify.len(), 2);
        assert_eq!(b.scopes.as_str(), "vso.packaging");
    }

    fn err_of(text: &str) -> PolicyError {
        parse(text).unwrap_err()
    }

    #[test]
    fn audit_section_is_accepted_and_validated() {
        let ok = format!("{GOOD}\n[audit]\nallowed_cidrs = [\"10.0.0.0/8\"]\n[audit.rules.burst]\nmax_actions = 50\n");
        assert_eq!(parse(&ok).unwrap().tokens.len(), 2);
        // Resolved once, with the policy: what `crate::audit` reading the table itself would get.
        let resolved = crate::audit::policy::from_policy_text(&ok).unwrap().resolve().unwrap();
        assert_eq!(parse(&ok).unwrap().audit, Some(resolved));
        let e = err_of(&format!("{GOOD}\n[audit]\nallowed_cidr = []\n"));
        assert!(e.problem.contains("allowed_cidr"), "{e}");
        let e = err_of(&format!("{GOOD}\n[audit.rules.burst]\ndays = 3\n"));
        assert!(e.field.starts_with("audit"), "{e}");
    }

    #[test]
    fn evidence_gated_revocation_is_opt_in_and_validated_with_its_line() {
        assert_eq!(parse(GOOD).unwrap().gate, None, "no [audit]: revoke when the grace ends");
        assert_eq!(parse(GOOD).unwrap().audit, None, "no [audit]: the audit log is not watched");
        let grace = format!("{GOOD}\n[audit]\nrevocation = {{ quiet_hours = 12 }}\n");
        assert_eq!(parse(&grace).unwrap().gate, None, "mode defaults to grace");
        let on = format!(
            "{GOOD}\n[audit]\nnotify = [\"email:sec@contoso.com\"]\n\
             revocation = {{ mode = \"evidence\", quiet_hours = 12, deadline_hours = 48 }}\n"
        );
        let g = parse(&on).unwrap().gate.unwrap();
        assert_eq!((g.gate.quiet_hours, g.gate.deadline_hours), (12, 48));
        assert_eq!(g.notify, vec![Target::Email("sec@contoso.com".into())]);
        let lines = GOOD.lines().count();
        let bad =
            format!("{GOOD}\n[audit]\ndry_run = false\n\nrevocation = {{ mode = \"evidence\", quiet_hours = 0 }}\n");
        let e = err_of(&bad);
        assert_eq!(e.field, "audit.revocation.quiet_hours", "{e}");
        assert_eq!(e.line, lines + 5, "the line that sets it: {e}");
        // A deadline inside a token's grace period is refused, naming the deadline's line and the token.
        let short =
            format!("{GOOD}\n[audit]\nrevocation = {{ mode = \"evidence\", quiet_hours = 1, deadline_hours = 2 }}\n");
        let e = parse(&short).unwrap_err();
        assert_eq!(e.field, "audit.revocation.deadline_hours", "{e}");
        assert!(e.problem.contains("grace period of token[0]"), "{e}");
        assert_eq!(e.line, short.lines().position(|l| l.contains("deadline_hours")).unwrap() + 1, "{e}");
        let e = err_of(&format!("{GOOD}\n[audit]\nrevocation = {{ mode = \"blind\" }}\n"));
        assert!(e.problem.contains("blind") && e.line == lines + 3, "{e}");
    }

    #[test]
    fn errors_name_file_line_and_field() {
        let e = err_of(&GOOD.replace("vso.packaging", "vso.packaging vso.bogus"));
        assert_eq!(e.field, "token[1].scopes");
        assert_eq!(e.line, 18);
        assert!(e.to_string().starts_with("patrol.toml:18: token[1].scopes:"), "{e}");
        assert!(e.problem.contains("vso.bogus"));

        let e = err_of(&GOOD.replace("validity_days = 90", "validity_days = 400"));
        assert_eq!((e.field.as_str(), e.line), ("token[1].validity_days", 19));

        let e = err_of(&GOOD.replace("secret = \"ci-build-pat\"", "secret = \"ci/build\""));
        assert_eq!((e.field.as_str(), e.line), ("token[0].secret", 11));

        let e = err_of(&GOOD.replace("owner = \"svc-ci@contoso.com\"", "owner = \"nobody\""));
        assert_eq!((e.field.as_str(), e.line), ("token[0].owner", 4));

        let e = err_of(&GOOD.replace("grace_days = 2", "grace_days = 8"));
        assert_eq!(e.field, "token[0].grace_days");

        let e = err_of(&GOOD.replace("validity_days = 30\n", "validity_days = \"thirty\"\n"));
        assert_eq!(e.field, "(syntax)");
        assert_eq!(e.line, 5);

        let e = err_of(&format!(
            "{GOOD}\n[[token]]\nsecret = \"x\"\ndisplay_name = \"X\"\nscopes = \"vso.code\"\ncolour = \"blue\"\n"
        ));
        assert_eq!(e.field, "(syntax)");
        assert!(e.problem.contains("colour"), "{e}");
    }

    #[test]
    fn policies_that_cannot_mean_anything_are_refused_with_file_line_and_field() {
        for empty in ["", "\n\n", "# nothing yet\n"] {
            let e = err_of(empty);
            assert_eq!((e.field.as_str(), e.line), ("token", 1), "{e}");
            assert!(e.to_string().starts_with("patrol.toml:1: token:"), "{e}");
        }
        assert!(err_of("").problem.contains("empty"));
        // Only [defaults]: the line of [defaults].
        let defaults_only = GOOD.split("[[token]]").next().unwrap();
        let e = err_of(defaults_only);
        assert_eq!((e.field.as_str(), e.line), ("token", 2), "{e}");
        assert!(e.problem.contains("no [[token]]"), "{e}");
        // [audit] alone does something (the audit log is watched), so it is accepted.
        assert!(parse("[audit]\nallowed_cidrs = [\"10.0.0.0/8\"]\n").unwrap().tokens.is_empty());

        // 100,000 thresholds on a token: refused at its line, before looking at any of them.
        let many = (0..100_000).map(|i| (i % 365 + 1).to_string()).collect::<Vec<_>>().join(", ");
        let text = GOOD.replace("expiry_thresholds = [7, 30, 1]", &format!("expiry_thresholds = [{many}]"));
        let e = err_of(&text);
        assert_eq!((e.field.as_str(), e.line), ("token[1].expiry_thresholds", 21), "{}", e.problem);
        assert!(e.problem.contains("100000 entries") && e.problem.contains("at most 10"), "{}", e.problem);
        // In [defaults] (used by token[0]): named as the default's field, at its line.
        let text = GOOD.replace("grace_days = 2\n", "grace_days = 2\nexpiry_thresholds = [1,2,3,4,5,6,7,8,9,10,11]\n");
        let e = err_of(&text);
        assert_eq!((e.field.as_str(), e.line), ("defaults.expiry_thresholds", 8), "{e}");
        // Ten is fine.
        let text = GOOD.replace("grace_days = 2\n", "grace_days = 2\nexpiry_thresholds = [1,2,3,4,5,6,7,8,9,10]\n");
        assert_eq!(parse(&text).unwrap().tokens[0].expiry_thresholds.len(), 10);
    }

    #[test]
    fn missing_required_fields_are_named() {
        let e = err_of("[[token]]\nsecret = \"a\"\ndisplay_name = \"A\"\nscopes = \"vso.code\"\n");
        assert_eq!((e.field.as_str(), e.line), ("token[0].organization", 1));
        assert!(e.problem.contains("required"));
    }

    #[test]
    fn full_access_and_all_orgs_need_explicit_permission() {
        let e = err_of(&GOOD.replace("vso.build_execute vso.code", "app_token"));
        assert_eq!(e.field, "token[0].scopes");
        assert!(e.problem.contains("allow_full_access"));
        let ok = GOOD.replace("vso.build_execute vso.code\"", "app_token\"\nallow_full_access = true");
        assert!(parse(&ok).unwrap().tokens[0].scopes.is_full_access());

        let e = err_of(&GOOD.replace("scopes = \"vso.packaging\"", "scopes = \"vso.packaging\"\nall_orgs = true"));
        assert_eq!((e.field.as_str(), e.line), ("token[1].all_orgs", 19));
        let ok = GOOD.replace(
            "scopes = \"vso.packaging\"",
            "scopes = \"vso.packaging\"\nall_orgs = true\nallow_all_orgs = true",
        );
        assert!(parse(&ok).unwrap().tokens[1].all_orgs);
    }

    #[test]
    fn a_token_may_name_its_consumer_vault() {
        let p = parse(&GOOD.replace("scopes = \"vso.packaging\"", "scopes = \"vso.packaging\"\nvault = \"Team-KV\""))
            .unwrap();
        assert_eq!((p.tokens[0].vault.as_deref(), p.tokens[1].vault.as_deref()), (None, Some("team-kv")));
        let e = err_of(&GOOD.replace("pkg-feed-pat", "Patrol-Owner-x"));
        assert!(e.problem.contains("refresh tokens"), "{e}");
        let e = err_of(&GOOD.replace("scopes = \"vso.packaging\"", "scopes = \"vso.packaging\"\nvault = \"no/such\""));
        assert_eq!((e.field.as_str(), e.line), ("token[1].vault", 19));
    }

    #[test]
    fn duplicates_are_refused() {
        let dup = GOOD.replace("pkg-feed-pat", "ci-build-pat");
        assert!(err_of(&dup).problem.contains("already manages"));
        let dup = GOOD.replace("Package feed", "ci BUILD");
        assert!(err_of(&dup).problem.contains("same owner"));
        let marker = GOOD.replace("Package feed", "x (patrol:abc)");
        assert!(err_of(&marker).problem.contains("marker"));
    }

    #[test]
    fn shipped_example_is_valid() {
        let text = include_str!("../../patrol.toml");
        let p = parse(text).unwrap();
        assert!(!p.tokens.is_empty());
    }
}
