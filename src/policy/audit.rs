//! The `[audit]` section of `patrol.toml`: which rules run, with what severity and parameters, which
//! response each severity gets, the evidence gate for revoking previous PATs, and who is told.
//!
//! The rotation policy embeds [`AuditPolicy`] as its optional `audit` table; every field has a default, so
//! an absent section means "all rules on, alert on everything, rotate on critical".
//!
//! ```toml
//! [audit]
//! allowed_cidrs = ["10.20.0.0/16", "2001:db8::/32"]   # empty: the outside_cidr rule never fires
//! notify = ["email:security@contoso.com"]
//! dry_run = false
//! allowed_hours = { start = "06:00", end = "20:00", utc_offset = "+01:00", days = ["mon", "tue", "wed", "thu", "fri"] }
//! response = { info = "alert", warning = "alert", critical = "rotate" }
//! revocation = { mode = "evidence", quiet_hours = 24, deadline_hours = 168 }   # mode "grace" is the default
//! stale = { days = 30, response = "alert", notice_days = 14, dry_run = true, keep = ["break-glass"] }
//! [audit.rules.burst]
//! severity = "critical"
//! max_actions = 100
//! window_minutes = 5
//! [audit.rules.outside_hours]
//! enabled = false
//! ```

use crate::notify::{Severity, Target};
use ipnet::IpNet;
use serde::{Deserialize, Deserializer, Serialize};
use std::collections::BTreeMap;
use time::{Time, UtcOffset, Weekday};

/// Every rule patrol evaluates; the snake_case name is the key under `[audit.rules]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RuleId {
    /// A managed PAT used from an address outside `allowed_cidrs`.
    OutsideCidr,
    /// A managed PAT used outside `allowed_hours`.
    OutsideHours,
    /// A managed PAT used with a web browser's user agent.
    BrowserUserAgent,
    /// A PAT used after patrol rotated it and its grace period ended.
    ConsumerLag,
    /// A PAT with no audited use for `days` suddenly active.
    DormantActive,
    /// More than `max_actions` audited actions by one PAT within `window_minutes`.
    Burst,
    /// A PAT created, changed or revoked on a managed owner's account by someone other than patrol.
    ForeignLifecycle,
    /// `Token.PatPublicDiscoveryEvent` / `Token.PatSystemRevokeEvent`.
    Leak,
    /// A full-scope (`app_token`) or all-organization PAT was created or widened.
    BroadPat,
    /// `OrganizationPolicy.*` changed.
    PolicyChange,
    /// The audit stream was disabled or deleted, or auditing was turned off.
    AuditTampering,
}

impl RuleId {
    pub const ALL: [RuleId; 11] = [
        Self::OutsideCidr,
        Self::OutsideHours,
        Self::BrowserUserAgent,
        Self::ConsumerLag,
        Self::DormantActive,
        Self::Burst,
        Self::ForeignLifecycle,
        Self::Leak,
        Self::BroadPat,
        Self::PolicyChange,
        Self::AuditTampering,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::OutsideCidr => "outside_cidr",
            Self::OutsideHours => "outside_hours",
            Self::BrowserUserAgent => "browser_user_agent",
            Self::ConsumerLag => "consumer_lag",
            Self::DormantActive => "dormant_active",
            Self::Burst => "burst",
            Self::ForeignLifecycle => "foreign_lifecycle",
            Self::Leak => "leak",
            Self::BroadPat => "broad_pat",
            Self::PolicyChange => "policy_change",
            Self::AuditTampering => "audit_tampering",
        }
    }

    /// The severity a rule has unless the policy says otherwise.
    pub fn default_severity(self) -> Severity {
        match self {
            Self::Leak | Self::AuditTampering | Self::ConsumerLag | Self::OutsideCidr => Severity::Critical,
            Self::OutsideHours | Self::DormantActive => Severity::Warning,
            Self::BrowserUserAgent | Self::Burst | Self::ForeignLifecycle | Self::BroadPat | Self::PolicyChange => {
                Severity::Warning
            }
        }
    }
}

impl std::fmt::Display for RuleId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What patrol does about a finding of a given severity.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Action {
    /// Tell the configured recipients, with the evidence.
    Alert,
    /// Alert, then rotate the managed PAT now: new PAT, stored, the suspect one revoked at once.
    Rotate,
    /// Alert, then revoke the suspect PAT without a replacement.
    Revoke,
}

/// Response per severity.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Responses {
    pub info: Action,
    pub warning: Action,
    pub critical: Action,
}

impl Default for Responses {
    fn default() -> Self {
        Self { info: Action::Alert, warning: Action::Alert, critical: Action::Rotate }
    }
}

impl Responses {
    pub fn for_severity(&self, s: Severity) -> Action {
        match s {
            Severity::Info => self.info,
            Severity::Warning => self.warning,
            Severity::Critical => self.critical,
        }
    }
}

/// How the rotation engine revokes a rotated-away PAT once its grace period has ended.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RevocationMode {
    /// As soon as the grace period ends (no audit evidence consulted).
    #[default]
    Grace,
    /// Only when the audit log has shown no use for `quiet_hours`, or at `deadline_hours` after the
    /// rotation with an alert naming the last caller. No fresh evidence means wait (fail closed).
    Evidence,
}

/// The evidence gate for revoking a rotated-away PAT (instead of revoking blindly when its grace ends).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RevocationGate {
    /// `grace` (default: today's blind revocation when the grace period ends) or `evidence`.
    pub mode: RevocationMode,
    /// Revoke once the audit log has shown no use of the previous PAT for this many hours.
    pub quiet_hours: u32,
    /// Revoke anyway this many hours after the rotation, alerting with the last caller's IP and user agent.
    pub deadline_hours: u32,
}

impl Default for RevocationGate {
    fn default() -> Self {
        Self { mode: RevocationMode::Grace, quiet_hours: 24, deadline_hours: 168 }
    }
}

/// Allowed working hours for managed PAT use, in a fixed UTC offset. `start > end` wraps midnight.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AllowedHours {
    #[serde(deserialize_with = "de_time", serialize_with = "ser_time")]
    pub start: Time,
    #[serde(deserialize_with = "de_time", serialize_with = "ser_time")]
    pub end: Time,
    #[serde(default = "utc", deserialize_with = "de_offset", serialize_with = "ser_offset")]
    pub utc_offset: UtcOffset,
    /// Days on which use is allowed (`mon` … `sun`); empty means every day.
    #[serde(default, deserialize_with = "de_days", serialize_with = "ser_days")]
    pub days: Vec<Weekday>,
}

fn utc() -> UtcOffset {
    UtcOffset::UTC
}

impl AllowedHours {
    /// Whether `at` falls inside the allowed window.
    pub fn allows(&self, at: time::OffsetDateTime) -> bool {
        let local = at.to_offset(self.utc_offset);
        if !self.days.is_empty() && !self.days.contains(&local.weekday()) {
            return false;
        }
        let t = local.time();
        if self.start <= self.end { t >= self.start && t < self.end } else { t >= self.start || t < self.end }
    }

    pub fn describe(&self) -> String {
        let days = if self.days.is_empty() {
            "every day".to_owned()
        } else {
            self.days.iter().map(|d| day_name(*d)).collect::<Vec<_>>().join(",")
        };
        format!("{}–{} UTC{} on {days}", hm(self.start), hm(self.end), offset_str(self.utc_offset))
    }
}

/// Per-rule overrides under `[audit.rules.<rule>]`; parameters are only accepted by the rules they belong to.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RuleOverride {
    pub enabled: Option<bool>,
    #[serde(default, deserialize_with = "de_severity_opt")]
    pub severity: Option<Severity>,
    /// `dormant_active`: days without audited use after which a PAT counts as dormant.
    pub days: Option<u32>,
    /// `burst`: how many audited actions of one PAT are allowed within the window.
    pub max_actions: Option<u32>,
    /// `burst`: the sliding window.
    pub window_minutes: Option<u32>,
    /// `foreign_lifecycle`: how far apart an audit event and patrol's own action may be to match.
    pub tolerance_minutes: Option<u32>,
    /// Usage rules (`outside_cidr`, `outside_hours`, `browser_user_agent`, `burst`): also watch PATs patrol
    /// does not manage.
    pub include_unmanaged: Option<bool>,
}

/// The raw `[audit]` section as written; [`AuditPolicy::resolve`] validates it into [`AuditSettings`].
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AuditPolicy {
    pub allowed_cidrs: Vec<IpNet>,
    pub allowed_hours: Option<AllowedHours>,
    pub notify: Vec<Target>,
    pub dry_run: bool,
    pub response: Responses,
    pub revocation: RevocationGate,
    pub rules: BTreeMap<RuleId, RuleOverride>,
    /// `[audit.stale]`: PATs without audited use (issue 21).
    pub stale: StalePolicy,
}

/// One rule's effective settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct RuleSettings {
    pub enabled: bool,
    pub severity: Severity,
    pub include_unmanaged: bool,
}

/// The validated, defaulted audit configuration the evaluator and responder use.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AuditSettings {
    pub allowed_cidrs: Vec<IpNet>,
    pub allowed_hours: Option<AllowedHours>,
    pub notify: Vec<Target>,
    pub dry_run: bool,
    pub response: Responses,
    pub revocation: RevocationGate,
    pub rules: BTreeMap<RuleId, RuleSettings>,
    pub dormant_days: u32,
    pub burst_max_actions: u32,
    pub burst_window_minutes: u32,
    pub lifecycle_tolerance_minutes: u32,
    pub stale: StalePolicy,
}

impl Default for AuditSettings {
    fn default() -> Self {
        // The default policy is valid by construction.
        AuditPolicy::default().resolve().unwrap_or_else(|_| unreachable_default())
    }
}

#[cold]
fn unreachable_default() -> AuditSettings {
    AuditSettings {
        allowed_cidrs: Vec::new(),
        allowed_hours: None,
        notify: Vec::new(),
        dry_run: true,
        response: Responses::default(),
        revocation: RevocationGate::default(),
        rules: BTreeMap::new(),
        dormant_days: 30,
        burst_max_actions: 60,
        burst_window_minutes: 10,
        lifecycle_tolerance_minutes: 15,
        stale: StalePolicy::default(),
    }
}

impl AuditSettings {
    pub fn rule(&self, id: RuleId) -> Option<RuleSettings> {
        self.rules.get(&id).copied().filter(|r| r.enabled)
    }
}

/// Why an `[audit]` section was refused: the field path and the problem.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("audit.{field}: {problem}")]
pub struct AuditPolicyError {
    pub field: String,
    pub problem: String,
}

impl AuditPolicy {
    /// The settings, or the first problem (see [`AuditPolicy::resolve_all`] for every one).
    pub fn resolve(&self) -> Result<AuditSettings, AuditPolicyError> {
        self.resolve_all().map_err(|mut e| e.remove(0))
    }

    /// The settings, or every problem at once (never an empty list).
    pub fn resolve_all(&self) -> Result<AuditSettings, Vec<AuditPolicyError>> {
        let mut errors = Vec::new();
        let mut err =
            |field: String, problem: &str| errors.push(AuditPolicyError { field, problem: problem.to_owned() });
        let mut rules = BTreeMap::new();
        for id in RuleId::ALL {
            let o = self.rules.get(&id).cloned().unwrap_or_default();
            let f = |p: &str| format!("rules.{id}.{p}");
            let is = |set: &[RuleId]| set.contains(&id);
            if o.days.is_some() && !is(&[RuleId::DormantActive]) {
                err(f("days"), "only applies to dormant_active");
            }
            if (o.max_actions.is_some() || o.window_minutes.is_some()) && !is(&[RuleId::Burst]) {
                err(f("max_actions/window_minutes"), "only apply to burst");
            }
            if o.tolerance_minutes.is_some() && !is(&[RuleId::ForeignLifecycle]) {
                err(f("tolerance_minutes"), "only applies to foreign_lifecycle");
            }
            let usage = [RuleId::OutsideCidr, RuleId::OutsideHours, RuleId::BrowserUserAgent, RuleId::Burst];
            if o.include_unmanaged.is_some() && !is(&usage) {
                err(
                    f("include_unmanaged"),
                    "only applies to outside_cidr, outside_hours, browser_user_agent and burst",
                );
            }
            rules.insert(
                id,
                RuleSettings {
                    enabled: o.enabled.unwrap_or(true),
                    severity: o.severity.unwrap_or(id.default_severity()),
                    include_unmanaged: o.include_unmanaged.unwrap_or(false),
                },
            );
        }
        let get = |id: RuleId| self.rules.get(&id).cloned().unwrap_or_default();
        let dormant_days = get(RuleId::DormantActive).days.unwrap_or(30);
        if !(1..=90).contains(&dormant_days) {
            err("rules.dormant_active.days".into(), "must be 1 to 90 (the audit log keeps 90 days)");
        }
        let burst = get(RuleId::Burst);
        let burst_max_actions = burst.max_actions.unwrap_or(60);
        let burst_window_minutes = burst.window_minutes.unwrap_or(10);
        if !(1..=100_000).contains(&burst_max_actions) {
            err("rules.burst.max_actions".into(), "must be 1 to 100000");
        }
        if !(1..=1440).contains(&burst_window_minutes) {
            err("rules.burst.window_minutes".into(), "must be 1 to 1440");
        }
        let lifecycle_tolerance_minutes = get(RuleId::ForeignLifecycle).tolerance_minutes.unwrap_or(15);
        if !(1..=1440).contains(&lifecycle_tolerance_minutes) {
            err("rules.foreign_lifecycle.tolerance_minutes".into(), "must be 1 to 1440");
        }
        let g = self.revocation;
        if g.quiet_hours == 0 || g.quiet_hours > 24 * 90 {
            err("revocation.quiet_hours".into(), "must be 1 to 2160 hours");
        }
        if g.deadline_hours < g.quiet_hours || g.deadline_hours > 24 * 365 {
            err("revocation.deadline_hours".into(), "must be at least quiet_hours and at most 8760 hours (one year)");
        }
        if let Some(h) = &self.allowed_hours
            && h.start == h.end
        {
            err("allowed_hours".into(), "start and end are equal: the window would be empty");
        }
        for (field, problem) in self.stale.problems() {
            errors.push(AuditPolicyError { field, problem });
        }
        if !errors.is_empty() {
            return Err(errors);
        }
        Ok(AuditSettings {
            allowed_cidrs: self.allowed_cidrs.iter().map(|n| n.trunc()).collect(),
            allowed_hours: self.allowed_hours.clone(),
            notify: self.notify.clone(),
            dry_run: self.dry_run,
            response: self.response,
            revocation: self.revocation,
            rules,
            dormant_days,
            burst_max_actions,
            burst_window_minutes,
            lifecycle_tolerance_minutes,
            stale: self.stale.clone(),
        })
    }
}

pub(crate) fn parse_severity(s: &str) -> Option<Severity> {
    match s.trim().to_ascii_lowercase().as_str() {
        "info" => Some(Severity::Info),
        "warning" | "warn" => Some(Severity::Warning),
        "critical" => Some(Severity::Critical),
        _ => None,
    }
}

fn de_severity_opt<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Severity>, D::Error> {
    let s = String::deserialize(d)?;
    parse_severity(&s)
        .map(Some)
        .ok_or_else(|| serde::de::Error::custom(format!("severity {s:?} must be info, warning or critical")))
}

fn hm(t: Time) -> String {
    format!("{:02}:{:02}", t.hour(), t.minute())
}

fn offset_str(o: UtcOffset) -> String {
    let (h, m, _) = o.as_hms();
    let sign = if o.is_negative() { '-' } else { '+' };
    format!("{sign}{:02}:{:02}", h.unsigned_abs(), m.unsigned_abs())
}

fn de_time<'de, D: Deserializer<'de>>(d: D) -> Result<Time, D::Error> {
    let s = String::deserialize(d)?;
    let bad = || serde::de::Error::custom(format!("time {s:?} must be HH:MM (24-hour)"));
    let (h, m) = s.trim().split_once(':').ok_or_else(bad)?;
    let (h, m): (u8, u8) = (h.parse().map_err(|_| bad())?, m.parse().map_err(|_| bad())?);
    if h == 24 && m == 0 {
        return Time::from_hms(23, 59, 59).map_err(|_| bad());
    }
    Time::from_hms(h, m, 0).map_err(|_| bad())
}

fn ser_time<S: serde::Serializer>(t: &Time, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&hm(*t))
}

fn de_offset<'de, D: Deserializer<'de>>(d: D) -> Result<UtcOffset, D::Error> {
    let s = String::deserialize(d)?;
    let bad = || serde::de::Error::custom(format!("utc_offset {s:?} must look like +01:00 or -05:30"));
    let t = s.trim();
    if t.eq_ignore_ascii_case("z") || t.eq_ignore_ascii_case("utc") {
        return Ok(UtcOffset::UTC);
    }
    let (sign, rest) = match t.as_bytes().first() {
        Some(b'+') => (1i8, &t[1..]),
        Some(b'-') => (-1i8, &t[1..]),
        _ => return Err(bad()),
    };
    let (h, m) = rest.split_once(':').ok_or_else(bad)?;
    let (h, m): (i8, i8) = (h.parse().map_err(|_| bad())?, m.parse().map_err(|_| bad())?);
    if !(0..=14).contains(&h) || !(0..60).contains(&m) {
        return Err(bad());
    }
    UtcOffset::from_hms(sign * h, sign * m, 0).map_err(|_| bad())
}

fn ser_offset<S: serde::Serializer>(o: &UtcOffset, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&offset_str(*o))
}

fn day_name(d: Weekday) -> &'static str {
    match d {
        Weekday::Monday => "mon",
        Weekday::Tuesday => "tue",
        Weekday::Wednesday => "wed",
        Weekday::Thursday => "thu",
        Weekday::Friday => "fri",
        Weekday::Saturday => "sat",
        Weekday::Sunday => "sun",
    }
}

fn de_days<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<Weekday>, D::Error> {
    let v = Vec::<String>::deserialize(d)?;
    v.iter()
        .map(|s| {
            let k = s.trim().to_ascii_lowercase();
            let day = match k.get(..3) {
                Some("mon") => Weekday::Monday,
                Some("tue") => Weekday::Tuesday,
                Some("wed") => Weekday::Wednesday,
                Some("thu") => Weekday::Thursday,
                Some("fri") => Weekday::Friday,
                Some("sat") => Weekday::Saturday,
                Some("sun") => Weekday::Sunday,
                _ => return Err(serde::de::Error::custom(format!("day {s:?} must be one of mon … sun"))),
            };
            Ok(day)
        })
        .collect()
}

fn ser_days<S: serde::Serializer>(v: &[Weekday], s: S) -> Result<S::Ok, S::Error> {
    s.collect_seq(v.iter().map(|d| day_name(*d)))
}

/// The `[audit]` table of a policy file's text (other tables are the rotation policy's business); an
/// absent table is the default policy.
pub fn from_policy_text(text: &str) -> Result<AuditPolicy, String> {
    let doc: toml::Table = toml::from_str(text).map_err(|e| format!("policy file: {}", e.message()))?;
    match doc.get("audit") {
        None => Ok(AuditPolicy::default()),
        Some(v) => v.clone().try_into().map_err(|e: toml::de::Error| format!("[audit]: {}", e.message())),
    }
}

/// `[audit.stale]` of the policy.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StalePolicy {
    /// Days without an audited use after which a PAT is reported — once the log has been watched that long.
    pub days: u32,
    /// `alert` (default): report and tell the owner. `revoke`: also revoke unmanaged stale PATs after an
    /// announced notice period.
    pub response: StaleResponse,
    /// Days between the announcement to the owner and the revocation.
    pub notice_days: u32,
    /// Announce and plan, never revoke. On by default: run dry first, then turn it off.
    pub dry_run: bool,
    /// PATs never revoked for staleness: display names or authorization ids (case-insensitive).
    pub keep: Vec<String>,
}

impl Default for StalePolicy {
    fn default() -> Self {
        Self { days: 30, response: StaleResponse::Alert, notice_days: 14, dry_run: true, keep: Vec::new() }
    }
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StaleResponse {
    #[default]
    Alert,
    Revoke,
}

impl StalePolicy {
    /// Every problem, as (field under `stale.`, problem).
    pub fn problems(&self) -> Vec<(String, String)> {
        let mut out = Vec::new();
        if !(1..=365).contains(&self.days) {
            out.push(("stale.days".into(), "must be 1 to 365".into()));
        }
        if !(1..=90).contains(&self.notice_days) {
            out.push(("stale.notice_days".into(), "must be 1 to 90".into()));
        }
        for (i, k) in self.keep.iter().enumerate() {
            if k.trim().is_empty() {
                out.push((format!("stale.keep[{i}]"), "is empty: name a display name or authorization id".into()));
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::macros::datetime;

    #[derive(Deserialize)]
    struct File {
        audit: AuditPolicy,
    }

    fn parse(text: &str) -> Result<AuditSettings, String> {
        let f: File = toml::from_str(text).map_err(|e| e.to_string())?;
        f.audit.resolve().map_err(|e| e.to_string())
    }

    #[test]
    fn defaults_enable_every_rule() {
        let s = AuditSettings::default();
        assert_eq!(s.rules.len(), RuleId::ALL.len());
        assert!(RuleId::ALL.iter().all(|r| s.rule(*r).is_some()));
        assert_eq!(s.response.for_severity(Severity::Critical), Action::Rotate);
        assert!(!s.dry_run);
    }

    #[test]
    fn full_section_parses() {
        let s = parse(
            r#"
            [audit]
            allowed_cidrs = ["10.20.0.5/16", "2001:db8::/32"]
            notify = ["email:Sec@contoso.com"]
            dry_run = true
            allowed_hours = { start = "22:00", end = "06:00", utc_offset = "+01:00", days = ["Mon", "tuesday"] }
            response = { critical = "revoke" }
            revocation = { mode = "evidence", quiet_hours = 12, deadline_hours = 48 }
            [audit.rules.burst]
            severity = "critical"
            max_actions = 5
            window_minutes = 1
            include_unmanaged = true
            [audit.rules.outside_hours]
            enabled = false
            [audit.rules.dormant_active]
            days = 7
            "#,
        )
        .unwrap();
        assert_eq!(s.allowed_cidrs[0].to_string(), "10.20.0.0/16");
        assert!(s.dry_run);
        assert_eq!(s.response.critical, Action::Revoke);
        assert_eq!(s.revocation.mode, RevocationMode::Evidence);
        assert_eq!(AuditSettings::default().revocation.mode, RevocationMode::Grace, "off unless asked for");
        assert_eq!(s.response.warning, Action::Alert);
        assert_eq!(s.rule(RuleId::Burst).unwrap().severity, Severity::Critical);
        assert!(s.rule(RuleId::Burst).unwrap().include_unmanaged);
        assert!(s.rule(RuleId::OutsideHours).is_none());
        assert_eq!((s.burst_max_actions, s.burst_window_minutes, s.dormant_days), (5, 1, 7));
        let h = s.allowed_hours.unwrap();
        // 23:30 +01:00 on a Monday is inside a window wrapping midnight.
        assert!(h.allows(datetime!(2026-03-02 22:30 UTC)));
        assert!(!h.allows(datetime!(2026-03-02 12:00 UTC)));
        // Wednesday is not allowed.
        assert!(!h.allows(datetime!(2026-03-04 22:30 UTC)));
        assert!(h.describe().contains("22:00–06:00 UTC+01:00"), "{}", h.describe());
    }

    #[test]
    fn mistakes_are_named() {
        let e = parse("[audit.rules.leak]\ndays = 3").unwrap_err();
        assert!(e.contains("rules.leak.days"), "{e}");
        let e = parse("[audit.rules.nope]\nenabled = true").unwrap_err();
        assert!(e.contains("nope"), "{e}");
        let e = parse("[audit]\nrevocation = { quiet_hours = 48, deadline_hours = 24 }").unwrap_err();
        assert!(e.contains("deadline_hours"), "{e}");
        let e = parse("[audit]\nrevocation = { mode = \"audit\" }").unwrap_err();
        assert!(e.contains("audit") && e.contains("evidence"), "{e}");
        let e = parse("[audit]\nallowed_cidrs = [\"10.0.0.0/99\"]").unwrap_err();
        assert!(e.contains("allowed_cidrs") || e.contains("invalid"), "{e}");
        let e = parse("[audit.rules.burst]\nseverity = \"urgent\"").unwrap_err();
        assert!(e.contains("urgent"), "{e}");
        let e = parse("[audit]\nallowed_hours = { start = \"25:00\", end = \"06:00\" }").unwrap_err();
        assert!(e.contains("HH:MM"), "{e}");
        let e = parse("[audit]\nresponse = { critical = \"nuke\" }").unwrap_err();
        assert!(e.contains("nuke"), "{e}");
        let e = parse("[audit]\nunknown = 1").unwrap_err();
        assert!(e.contains("unknown"), "{e}");
    }
}
