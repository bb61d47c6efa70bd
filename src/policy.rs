//! `patrol.toml`: the policy that declares every managed token — defaults at the top, then one
//! `[[token]]` table per token. Parsing validates everything (names, scopes, day counts, targets, the
//! full-access and all-organization refusals) and every error names the file, the line and the field.
//! The documented table of fields is `docs/policy.md`.

//!
//! The whole file as types, below every module that reads it (`rotation`, `consumers`, `audit`):
//!
//! - [`audit`] — the `[audit]` section: which rules run with what severity, the response per severity, the
//!   evidence gate for revoking previous PATs (`revocation`, resolved into [`EvidenceGate`]), `[audit.stale]`,
//!   and who is told; run by the `audit` module.
//! - [`consumers`] — `[[token.consumer]]` and `[consumers]`: where a rotated PAT goes besides its secret
//!   (all errors at once); delivered by the `consumers` module.

pub mod audit;
pub mod consumers;

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

/// Why a policy file was refused: where, and what was wrong. A file with several problems reports every
/// one of them at once: the first (in line order) here, the others in [`PolicyError::also`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PolicyError {
    pub file: String,
    /// 1-based; 0 when the problem has no position (e.g. the file could not be read).
    pub line: usize,
    /// The field path (`token[1].validity_days`); empty when the problem is about the whole file.
    pub field: String,
    pub problem: String,
    /// Every further problem of the same file, in line order.
    pub also: Vec<PolicyError>,
}

impl PolicyError {
    pub fn new(file: &str, line: usize, field: &str, problem: impl Into<String>) -> Self {
        Self { file: file.to_owned(), line, field: field.to_owned(), problem: problem.into(), also: Vec::new() }
    }

    /// Folds a list of problems into one error (sorted by line; `None` when there are none).
    pub fn from_list(mut errors: Vec<PolicyError>) -> Option<Self> {
        let mut flat = Vec::new();
        for mut e in errors.drain(..) {
            let also = std::mem::take(&mut e.also);
            flat.push(e);
            flat.extend(also);
        }
        flat.sort_by_key(|e| e.line);
        flat.dedup();
        let mut it = flat.into_iter();
        let mut first = it.next()?;
        first.also = it.collect();
        Some(first)
    }

    /// This problem and every further one, in line order.
    pub fn all(&self) -> impl Iterator<Item = &PolicyError> {
        std::iter::once(self).chain(self.also.iter())
    }

    /// `file:line: field: problem` (`file: problem` when the problem has no position or field).
    pub fn one_line(&self) -> String {
        match (self.line, self.field.is_empty()) {
            (0, true) => format!("{}: {}", self.file, self.problem),
            (0, false) => format!("{}: {}: {}", self.file, self.field, self.problem),
            (l, true) => format!("{}:{l}: {}", self.file, self.problem),
            (l, false) => format!("{}:{l}: {}: {}", self.file, self.field, self.problem),
        }
    }
}

impl std::fmt::Display for PolicyError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let lines: Vec<String> = self.all().map(PolicyError::one_line).collect();
        f.write_str(&lines.join("\n"))
    }
}

impl std::error::Error for PolicyError {}

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
    /// Where the PAT is delivered besides its own secret (`[[token.consumer]]`, see [`consumers`]).
    pub consumers: consumers::Consumers,
}

/// The gate's settings, from the policy's `[audit]` section.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct EvidenceGate {
    pub gate: audit::RevocationGate,
    /// The audit section's recipients: deadline alerts go to them as well as to the token's own.
    pub notify: Vec<Target>,
}

/// The whole policy.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Policy {
    pub file: PathBuf,
    pub tokens: Vec<ManagedToken>,
    /// Evidence-gated revocation of previous PATs (`[audit] revocation = { mode = "evidence", … }`);
    /// `None`: a previous PAT is revoked when its grace period ends.
    pub gate: Option<EvidenceGate>,
    /// The `[audit]` table, validated and resolved with the policy (`None`: the policy has none, and the
    /// timer does not poll the audit log).
    #[serde(skip)]
    pub audit: Option<audit::AuditSettings>,
}

impl Policy {
    /// Where the tokens' secrets are kept (`vault = "…"`), as `crate::store::open` places them.
    pub fn placement(&self) -> crate::store::Placement {
        crate::store::Placement {
            file: self.file.display().to_string(),
            tokens: self
                .tokens
                .iter()
                .enumerate()
                .filter_map(|(index, t)| {
                    t.vault.clone().map(|vault| crate::store::Placed {
                        secret: t.secret.clone(),
                        vault,
                        line: t.line,
                        index,
                    })
                })
                .collect(),
        }
    }

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
        let text = std::fs::read_to_string(path)
            .map_err(|e| PolicyError::new(&path.display().to_string(), 0, "", format!("cannot read: {e}")))?;
        Self::parse(path, &text)
    }

    /// Validates policy text; `path` only names the file in errors. Every problem is reported at once.
    pub fn parse(path: &Path, text: &str) -> Result<Self, PolicyError> {
        let file = path.display().to_string();
        let ctx = Ctx::new(&file, text);
        let mut errors = Vec::new();
        if text.trim().is_empty() || text.lines().all(|l| l.trim().is_empty() || l.trim_start().starts_with('#')) {
            return Err(ctx.err(
                1,
                "token",
                "the policy is empty: declare at least one [[token]] table (see docs/policy.md)",
            ));
        }
        let Some((raw, removed)) = raw_policy(&ctx, text, &mut errors) else {
            return Err(PolicyError::from_list(errors).unwrap_or_else(|| ctx.err(1, "", "cannot be parsed")));
        };
        let mut gate = None;
        let mut audit = None;
        if let Some(a) = &raw.audit {
            match a.get_ref().resolve_all() {
                Ok(settings) => {
                    if settings.revocation.mode == audit::RevocationMode::Evidence {
                        gate = Some(EvidenceGate { gate: settings.revocation, notify: settings.notify.clone() });
                    }
                    audit = Some(settings);
                }
                Err(list) => {
                    for e in list {
                        let line = ctx.line_of(field_offset(text, a.span(), &e.field));
                        errors.push(ctx.err(line, &format!("audit.{}", e.field), &e.problem));
                    }
                }
            }
        }
        if raw.token.is_empty() && raw.audit.is_none() && errors.is_empty() {
            // Only [defaults] (or [consumers]): nothing to manage, nothing to watch. Refused rather than
            // run as a no-op that looks healthy (a truncated or mis-pointed policy file).
            let line = text.lines().position(|l| l.trim_start().starts_with("[defaults]")).map_or(1, |i| i + 1);
            return Err(ctx.err(
                line,
                "token",
                "the policy declares no [[token]] table: there is nothing for patrol to manage (defaults alone mean nothing)",
            ));
        }
        let defaults = raw.defaults.unwrap_or_default();
        let line_of = |o: usize| ctx.line_of(o);
        let lines = consumers::Lines { file: &file, line_of: &line_of };
        let consumer_settings = std::sync::Arc::new(consumers::settings(raw.consumers.as_ref(), &lines, &mut errors));
        let settings_line = raw.consumers.as_ref().map(|c| ctx.line_of(c.span().start)).unwrap_or(0);
        let mut tokens = Vec::with_capacity(raw.token.len());
        // Key Vault secret names are case-insensitive: `CI-Build-PAT` and `ci-build-pat` are one secret.
        let mut seen_secrets: std::collections::HashMap<String, (usize, String)> = Default::default();
        // owner, organization and lower-case display name, one string per token (10,000 tokens: one
        // allocation each instead of three).
        let mut seen_names = std::collections::HashSet::new();
        for (i, mut t) in raw.token.into_iter().enumerate() {
            let raw_consumers = std::mem::take(&mut t.get_mut().consumer);
            let Some(mut token) = ctx.token(i, t, &defaults, &removed, &mut errors) else { continue };
            let tc = consumers::TokenContext {
                index: i,
                line: token.line,
                secret: &token.secret,
                organization: Some(&token.organization),
                grace_days: Some(token.grace_days),
            };
            let list =
                consumers::token_consumers(raw_consumers, &tc, &consumer_settings, settings_line, &lines, &mut errors);
            token.consumers = consumers::Consumers { list, settings: consumer_settings.clone() };
            let lower = token.secret.as_str().to_ascii_lowercase();
            if let Some((j, other)) = seen_secrets.get(&lower) {
                errors.push(ctx.err(
                    token.line,
                    &format!("token[{i}].secret"),
                    if other == token.secret.as_str() {
                        format!("names a secret token[{j}] already manages; each secret belongs to one token")
                    } else {
                        format!(
                            "{:?} differs from token[{j}]'s {other:?} only in case; Key Vault secret names are \
                             case-insensitive, so both would be one secret",
                            token.secret.as_str()
                        )
                    },
                ));
                continue;
            }
            seen_secrets.insert(lower, (i, token.secret.as_str().to_owned()));
            let (owner, org, name) = (token.owner.as_str(), token.organization.as_str(), token.display_name.as_str());
            let mut key = String::with_capacity(owner.len() + org.len() + name.len() + 2);
            key.extend([owner, "\n", org, "\n"]);
            key.extend(name.chars().map(|c| c.to_ascii_lowercase()));
            if !seen_names.insert(key) {
                errors.push(ctx.err(
                    token.line,
                    &format!("token[{i}].display_name"),
                    "is used by another token of the same owner and organization (display names are compared without case)",
                ));
                continue;
            }
            if let (Some(g), Some(a)) = (&gate, &raw.audit)
                && u64::from(token.grace_days) * 24 > u64::from(g.gate.deadline_hours)
            {
                // The hard deadline would fall inside the grace period: every gated revocation would
                // become a deadline revocation with an alert the moment the grace ends.
                let line = ctx.line_of(field_offset(text, a.span(), "revocation.deadline_hours"));
                errors.push(ctx.err(
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
        if let Some(e) = PolicyError::from_list(errors) {
            return Err(e);
        }
        Ok(Self { file: path.to_path_buf(), tokens, gate, audit })
    }
}

/// A path segment inside the TOML document (for naming the field a type error is about).
enum Seg {
    Key(String),
    Index(usize),
}

fn path_name(path: &[Seg]) -> String {
    let mut out = String::new();
    for s in path {
        match s {
            Seg::Key(k) => {
                if !out.is_empty() {
                    out.push('.');
                }
                out.push_str(k);
            }
            Seg::Index(i) => out.push_str(&format!("[{i}]")),
        }
    }
    out
}

/// The path of the deepest key (and array index) whose key or value contains `span`, searching the whole
/// tree (a table's own span may cover only its header).
fn locate(value: &toml::de::DeValue<'_>, span: &std::ops::Range<usize>, path: &mut Vec<Seg>) -> bool {
    let inside = |r: std::ops::Range<usize>| r.start <= span.start && span.end <= r.end.max(r.start + 1);
    match value {
        toml::de::DeValue::Table(t) => {
            for (k, v) in t.iter() {
                path.push(Seg::Key(k.get_ref().to_string()));
                if locate(v.get_ref(), span, path) {
                    return true;
                }
                let leaf = !matches!(v.get_ref(), toml::de::DeValue::Table(_) | toml::de::DeValue::Array(_));
                if inside(k.span()) || (leaf && inside(v.span())) {
                    return true;
                }
                path.pop();
            }
            false
        }
        toml::de::DeValue::Array(a) => {
            for (i, v) in a.iter().enumerate() {
                path.push(Seg::Index(i));
                if locate(v.get_ref(), span, path) {
                    return true;
                }
                path.pop();
            }
            // The array itself (e.g. a wrong element type): the caller's key.
            a.iter().any(|v| inside(v.span()))
        }
        _ => false,
    }
}

/// Removes the value at `path` (its last key) from the document.
fn remove_at(value: &mut toml::de::DeValue<'_>, path: &[Seg]) -> bool {
    match (value, path) {
        (toml::de::DeValue::Table(t), [Seg::Key(k)]) => {
            let key = t.keys().find(|x| x.get_ref() == k).cloned();
            key.is_some_and(|key| t.remove(&key).is_some())
        }
        (toml::de::DeValue::Table(t), [Seg::Key(k), rest @ ..]) => {
            t.iter_mut().find(|(x, _)| x.get_ref() == k).is_some_and(|(_, v)| remove_at(v.get_mut(), rest))
        }
        (toml::de::DeValue::Array(a), [Seg::Index(i), rest @ ..]) if !rest.is_empty() => {
            a.get_mut(*i).is_some_and(|v| remove_at(v.get_mut(), rest))
        }
        _ => false,
    }
}

/// serde's words for what a field must be, in the policy's words.
fn explain(message: &str) -> String {
    let message = message.trim();
    if let Some(rest) = message.strip_prefix("invalid type: ")
        && let Some((found, expected)) = rest.split_once(", expected ")
    {
        let want = match expected.trim() {
            "i64" | "i32" | "u64" | "u32" | "u16" | "u8" | "an integer" => "a whole number".to_owned(),
            "a boolean" => "true or false".to_owned(),
            "a string" => "a string in quotes".to_owned(),
            "a sequence" => "an array, e.g. [\"a\", \"b\"]".to_owned(),
            e if e.starts_with("struct ") || e == "a map" => "a table".to_owned(),
            e => e.to_owned(),
        };
        return format!("must be {want} (found {found})");
    }
    if let Some(rest) = message.strip_prefix("unknown field `")
        && let Some((name, allowed)) = rest.split_once('`')
    {
        let allowed =
            allowed.trim_start_matches(", expected one of ").trim_start_matches(", expected ").replace('`', "");
        return format!("{name:?} is not a field here (allowed: {allowed})");
    }
    message.to_owned()
}

/// Parses the document into [`RawPolicy`], collecting every syntax and type error: a field whose value
/// has the wrong type (or that is unknown) is reported with its path and dropped, and parsing goes on.
/// Returns the fields' leaf names that were dropped, so their absence is not reported a second time.
fn raw_policy(ctx: &Ctx<'_>, text: &str, errors: &mut Vec<PolicyError>) -> Option<(RawPolicy, BTreeSet<String>)> {
    // A document without syntax or type errors (every policy that is in use) in one pass: parsed and
    // deserialized without the copy of the whole document that the error path below keeps per round.
    if let Ok(raw) = toml::from_str::<RawPolicy>(text) {
        return Some((raw, BTreeSet::new()));
    }
    let (root, syntax) = toml::de::DeTable::parse_recoverable(text);
    if !syntax.is_empty() {
        for e in syntax {
            let line = e.span().map(|s| ctx.line_of(s.start)).unwrap_or(0);
            errors.push(ctx.err(line, "(syntax)", format!("not valid TOML: {}", e.message().trim())));
        }
        return None;
    }
    let span = root.span();
    let mut doc = toml::de::DeValue::Table(root.into_inner());
    let mut removed = BTreeSet::new();
    // Each round drops one bad field; a document has fewer fields than bytes.
    for _ in 0..=text.len() {
        let value = toml::Spanned::new(span.clone(), doc.clone());
        match RawPolicy::deserialize(toml::de::ValueDeserializer::from(value)) {
            Ok(raw) => return Some((raw, removed)),
            Err(e) => {
                let at = e.span().unwrap_or(0..0);
                let mut path = Vec::new();
                locate(&doc, &at, &mut path);
                let line = if at.is_empty() && at.start == 0 { 0 } else { ctx.line_of(at.start) };
                let field = if path.is_empty() { "(syntax)".to_owned() } else { path_name(&path) };
                errors.push(ctx.err(line.max(1), &field, explain(e.message())));
                if path.is_empty() || !remove_at(&mut doc, &path) {
                    return None;
                }
                if let Some(Seg::Key(k)) = path.last() {
                    removed.insert(k.clone());
                }
            }
        }
    }
    None
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
    /// `[audit]`: validated here so a mistake is refused with the policy; used by the `audit` module.
    audit: Option<Spanned<audit::AuditPolicy>>,
    /// `[consumers]`: what the consumers of every token share ([`consumers`]).
    consumers: Option<Spanned<consumers::RawSettings>>,
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
    /// `[[token.consumer]]` tables, validated by [`consumers`].
    #[serde(default)]
    consumer: Vec<Spanned<consumers::RawConsumer>>,
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
        PolicyError::new(self.file, line, field, problem)
    }

    fn at<T>(&self, s: &Spanned<T>, field: &str, problem: impl Into<String>) -> PolicyError {
        self.err(self.line_of(s.span().start), field, problem)
    }

    /// The token's value, else the default's, else an error naming the field as missing (unless the
    /// field was dropped for a type error already reported).
    #[allow(clippy::too_many_arguments)]
    fn pick<'v, T>(
        &self,
        own: &'v Option<Spanned<T>>,
        default: &'v Option<Spanned<T>>,
        (name, field): (&str, &dyn Fn(&str) -> String),
        token_line: usize,
        removed: &BTreeSet<String>,
        errors: &mut Vec<PolicyError>,
    ) -> Option<&'v Spanned<T>> {
        let v = own.as_ref().or(default.as_ref());
        if v.is_none() && !removed.contains(name) {
            errors.push(self.err(token_line, &field(name), "is required (set it on the token or in [defaults])"));
        }
        v
    }

    /// `field` names the field in the error; it is made only when there is one (10,000 tokens, nine fields).
    fn days(
        &self,
        v: &Spanned<i64>,
        field: impl FnOnce() -> String,
        min: i64,
        max: i64,
        errors: &mut Vec<PolicyError>,
    ) -> Option<u32> {
        let d = *v.get_ref();
        if d < min || d > max {
            errors.push(self.at(v, &field(), format!("{d} is outside {min}..={max} days")));
            return None;
        }
        Some(d as u32)
    }

    /// One `[[token]]` with the defaults applied; `None` when it has errors (each pushed to `errors`).
    fn token(
        &self,
        i: usize,
        raw: Spanned<RawToken>,
        d: &RawDefaults,
        removed: &BTreeSet<String>,
        errors: &mut Vec<PolicyError>,
    ) -> Option<ManagedToken> {
        let before = errors.len();
        let line = self.line_of(raw.span().start);
        let t = raw.into_inner();
        let f = |name: &str| format!("token[{i}].{name}");
        // A value from [defaults] is named (and reported once) as the default's field.
        let fd = |own: bool, name: &str| if own { f(name) } else { format!("defaults.{name}") };

        let secret = match &t.secret {
            None => {
                if !removed.contains("secret") {
                    errors.push(self.err(line, &f("secret"), "is required (the Key Vault secret that holds the PAT)"));
                }
                None
            }
            Some(raw) => match SecretName::parse(raw.get_ref()) {
                Err(e) => {
                    errors.push(self.at(raw, &f("secret"), e.to_string()));
                    None
                }
                Ok(s) if s.as_str().to_ascii_lowercase().starts_with(crate::store::routed::REFRESH_TOKEN_PREFIX) => {
                    errors.push(self.at(
                        raw,
                        &f("secret"),
                        "must not start with \"patrol-owner-\": patrol keeps owners' refresh tokens under such names",
                    ));
                    None
                }
                Ok(s) => Some(s),
            },
        };
        let display_name = match &t.display_name {
            None => {
                if !removed.contains("display_name") {
                    errors.push(self.err(line, &f("display_name"), "is required (the PAT's name in Azure DevOps)"));
                }
                None
            }
            Some(dn_raw) => match DisplayName::parse(dn_raw.get_ref()) {
                Err(e) => {
                    errors.push(self.at(dn_raw, &f("display_name"), e.to_string()));
                    None
                }
                Ok(_) if dn_raw.get_ref().contains("(patrol:") => {
                    errors.push(self.at(
                        dn_raw,
                        &f("display_name"),
                        "must not contain \"(patrol:\": patrol adds that marker itself",
                    ));
                    None
                }
                // Leave room for the " (patrol:<12 hex>)" marker.
                Ok(_) if dn_raw.get_ref().chars().count() + 22 > DisplayName::MAX_LEN => {
                    errors.push(self.at(
                        dn_raw,
                        &f("display_name"),
                        "must be at most 234 characters (patrol appends a 22-character marker)",
                    ));
                    None
                }
                Ok(n) => Some(n),
            },
        };

        let organization =
            self.pick(&t.organization, &d.organization, ("organization", &f), line, removed, errors).and_then(|o| {
                OrgName::parse(o.get_ref())
                    .map_err(|e| errors.push(self.at(o, &fd(t.organization.is_some(), "organization"), e.to_string())))
                    .ok()
            });
        let owner = self.pick(&t.owner, &d.owner, ("owner", &f), line, removed, errors).and_then(|o| {
            OwnerId::parse(o.get_ref())
                .map_err(|e| errors.push(self.at(o, &fd(t.owner.is_some(), "owner"), e.to_string())))
                .ok()
        });
        let scopes_raw = self.pick(&t.scopes, &d.scopes, ("scopes", &f), line, removed, errors);
        let scopes = scopes_raw.and_then(|s| {
            Scopes::parse(s.get_ref())
                .map_err(|e| errors.push(self.at(s, &fd(t.scopes.is_some(), "scopes"), e.to_string())))
                .ok()
        });

        let allow_full_access =
            t.allow_full_access.as_ref().or(d.allow_full_access.as_ref()).is_some_and(|v| *v.get_ref());
        let allow_all_orgs = t.allow_all_orgs.as_ref().or(d.allow_all_orgs.as_ref()).is_some_and(|v| *v.get_ref());
        if let (Some(scopes), Some(raw)) = (&scopes, scopes_raw)
            && scopes.is_full_access()
            && !allow_full_access
        {
            errors.push(self.at(
                raw,
                &fd(t.scopes.is_some(), "scopes"),
                "app_token (full access) is refused; name explicit vso.* scopes, or set allow_full_access = true on this token",
            ));
        }
        let all_orgs = t.all_orgs.as_ref().is_some_and(|v| *v.get_ref());
        if all_orgs && !allow_all_orgs {
            let at = t.all_orgs.as_ref().map(|v| self.line_of(v.span().start)).unwrap_or(line);
            errors.push(self.err(
                at,
                &f("all_orgs"),
                "all-organization PATs are refused (they stopped working on 2026-12-01); set allow_all_orgs = true to override",
            ));
        }

        let max = MAX_VALIDITY_DAYS as i64;
        let validity_days = self
            .pick(&t.validity_days, &d.validity_days, ("validity_days", &f), line, removed, errors)
            .and_then(|v| self.days(v, || fd(t.validity_days.is_some(), "validity_days"), 1, max, errors));
        let rb_raw =
            self.pick(&t.rotate_before_days, &d.rotate_before_days, ("rotate_before_days", &f), line, removed, errors);
        let rotate_before_days = rb_raw
            .and_then(|v| self.days(v, || fd(t.rotate_before_days.is_some(), "rotate_before_days"), 1, max, errors));
        let grace_raw = self.pick(&t.grace_days, &d.grace_days, ("grace_days", &f), line, removed, errors);
        let grace_days =
            grace_raw.and_then(|v| self.days(v, || fd(t.grace_days.is_some(), "grace_days"), 0, max, errors));
        if let (Some(validity_days), Some(rotate_before_days), Some(rb_raw)) =
            (validity_days, rotate_before_days, rb_raw)
            && rotate_before_days >= validity_days
        {
            errors.push(self.at(
                rb_raw,
                &fd(t.rotate_before_days.is_some(), "rotate_before_days"),
                format!("{rotate_before_days} must be less than validity_days ({validity_days})"),
            ));
        } else if let (Some(validity_days), Some(rotate_before_days), Some(grace_days), Some(grace_raw)) =
            (validity_days, rotate_before_days, grace_days, grace_raw)
        {
            if grace_days > rotate_before_days {
                errors.push(self.at(
                    grace_raw,
                    &fd(t.grace_days.is_some(), "grace_days"),
                    format!("{grace_days} must be at most rotate_before_days ({rotate_before_days}): the previous PAT expires then anyway"),
                ));
            } else if grace_days >= validity_days - rotate_before_days {
                errors.push(self.at(
                    grace_raw,
                    &fd(t.grace_days.is_some(), "grace_days"),
                    format!(
                        "{grace_days} must be less than validity_days - rotate_before_days ({}), so one grace period ends before the next rotation",
                        validity_days - rotate_before_days
                    ),
                ));
            }
        }

        let mut notify = Vec::new();
        if let Some(v) = t.notify.as_ref().or(d.notify.as_ref()) {
            let field = || if t.notify.is_some() { f("notify") } else { "defaults.notify".into() };
            for s in v.get_ref() {
                match Target::parse(s) {
                    Ok(target) if !notify.contains(&target) => notify.push(target),
                    Ok(_) => {}
                    Err(e) => errors.push(self.at(v, &field(), e.to_string())),
                }
            }
        }
        let thresholds_field =
            || if t.expiry_thresholds.is_some() { f("expiry_thresholds") } else { "defaults.expiry_thresholds".into() };
        let expiry_thresholds = match t.expiry_thresholds.as_ref().or(d.expiry_thresholds.as_ref()) {
            None => DEFAULT_THRESHOLDS.to_vec(),
            Some(v) if v.get_ref().len() > MAX_THRESHOLDS => {
                errors.push(self.at(
                    v,
                    &thresholds_field(),
                    format!(
                        "has {} entries; at most {MAX_THRESHOLDS} warning thresholds are allowed (e.g. [30, 14, 7, 1])",
                        v.get_ref().len()
                    ),
                ));
                Vec::new()
            }
            Some(v) => {
                let mut set = BTreeSet::new();
                for n in v.get_ref() {
                    if !(1..=max).contains(n) {
                        errors.push(self.at(v, &thresholds_field(), format!("{n} is outside 1..=365 days")));
                    } else {
                        set.insert(*n as u32);
                    }
                }
                if v.get_ref().is_empty() {
                    errors.push(self.at(
                        v,
                        &thresholds_field(),
                        "must name at least one threshold, e.g. [30, 14, 7, 1]",
                    ));
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
                    errors.push(self.at(
                        v,
                        &f("vault"),
                        format!(
                            "{:?} is not a Key Vault name (3-24 letters, digits, '-', starting with a letter)",
                            v.get_ref()
                        ),
                    ));
                }
                Some(name)
            }
        };

        if errors.len() > before {
            return None;
        }
        Some(ManagedToken {
            secret: secret?,
            display_name: display_name?,
            organization: organization?,
            owner: owner?,
            scopes: scopes?,
            validity_days: validity_days?,
            rotate_before_days: rotate_before_days?,
            grace_days: grace_days?,
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
        let resolved = audit::from_policy_text(&ok).unwrap().resolve().unwrap();
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

        // A bad default is named as the default, once (not once per token that uses it).
        let e = err_of(&GOOD.replace("owner = \"svc-ci@contoso.com\"", "owner = \"nobody\""));
        assert_eq!((e.field.as_str(), e.line), ("defaults.owner", 4));
        assert!(e.also.is_empty(), "{e}");

        let e = err_of(&GOOD.replace("grace_days = 2", "grace_days = 8"));
        assert_eq!(e.field, "defaults.grace_days");

        // A type error names the field and what it must be; the dropped default is not "required" again.
        let e = err_of(&GOOD.replace("validity_days = 30\n", "validity_days = \"thirty\"\n"));
        assert_eq!((e.field.as_str(), e.line), ("defaults.validity_days", 5), "{e}");
        assert!(e.problem.contains("whole number") && e.problem.contains("thirty"), "{e}");
        assert!(e.also.is_empty(), "{e}");

        let e = err_of(&format!(
            "{GOOD}\n[[token]]\nsecret = \"x\"\ndisplay_name = \"X\"\nscopes = \"vso.code\"\ncolour = \"blue\"\n"
        ));
        assert_eq!(e.field, "token[2].colour", "{e}");
        assert!(e.problem.contains("not a field") && e.problem.contains("display_name"), "{e}");
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
    fn every_error_is_reported_at_once_with_file_line_field_and_what_is_allowed() {
        let text = GOOD
            .replace("grace_days = 2\n", "grace_days = \"two\"\n")
            .replace("secret = \"ci-build-pat\"", "secret = \"ci/build\"")
            .replace("vso.packaging", "vso.bogus")
            .replace("expiry_thresholds = [7, 30, 1]", "expiry_thresholds = [7, 400]\nallow_all_orgs = \"yes\"");
        let e = err_of(&text);
        let all: Vec<(usize, &str)> = e.all().map(|e| (e.line, e.field.as_str())).collect();
        assert_eq!(
            all,
            vec![
                (7, "defaults.grace_days"),
                (11, "token[0].secret"),
                (18, "token[1].scopes"),
                (21, "token[1].expiry_thresholds"),
                (22, "token[1].allow_all_orgs"),
            ],
            "{e}"
        );
        let shown = e.to_string();
        assert_eq!(shown.lines().count(), 5, "{shown}");
        assert!(shown.lines().all(|l| l.starts_with("patrol.toml:")), "{shown}");
        assert!(shown.contains("patrol.toml:22: token[1].allow_all_orgs: must be true or false"), "{shown}");
        assert!(shown.contains("400 is outside 1..=365"), "{shown}");
        // Two syntax errors: both reported.
        let e = err_of("[[token]]\nsecret = \nowner = = 3\n");
        assert!(e.all().count() >= 2 && e.all().all(|e| e.field == "(syntax)"), "{e}");
        // Every [audit] problem at once too.
        let e = err_of(&format!("{GOOD}\n[audit.rules.burst]\ndays = 3\nmax_actions = 0\n"));
        let fields: Vec<_> = e.all().map(|e| e.field.as_str()).collect();
        assert!(fields.contains(&"audit.rules.burst.days") && fields.contains(&"audit.rules.burst.max_actions"), "{e}");
    }

    #[test]
    fn an_unreadable_file_is_named_without_a_fake_position() {
        let e = Policy::load(Path::new("/nonexistent/patrol.toml")).unwrap_err();
        assert!(e.to_string().starts_with("/nonexistent/patrol.toml: cannot read: "), "{e}");
    }

    #[test]
    fn secret_names_that_differ_only_in_case_are_one_secret() {
        let e = err_of(&GOOD.replace("pkg-feed-pat", "CI-Build-PAT"));
        assert_eq!((e.field.as_str(), e.line), ("token[1].secret", 15), "{e}");
        assert!(e.problem.contains("only in case") && e.problem.contains("ci-build-pat"), "{e}");
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
        let text = include_str!("../patrol.toml");
        let p = parse(text).unwrap();
        assert!(!p.tokens.is_empty());
    }
}
