//! The plan: a pure, deterministic function of (inventory, policy, now, requests). It decides per
//! managed token what to do — resume an in-flight operation, reconcile orphans, adopt an out-of-band
//! version, revoke drained previous PATs, rotate (with a reason) — and lists the PATs nobody manages.
//! It never performs an effect; the dry run of every entry point stops here. Printable as JSON
//! (`serde`) and as a human table ([`Plan::table`]).

use super::inventory::{Inventory, OwnerPats, TokenState};
use super::journal::{Drain, PatVersion, Reason, parse_marker};
use super::policy::{ManagedToken, Policy};
use crate::devops::Pat;
use crate::domain::{AuthorizationId, OperationId, OrgName, OwnerId, SecretName};
use crate::evidence::GateDecision;
use crate::notify::Notice;
use crate::store::tags;
use serde::Serialize;
use std::borrow::Cow;
use std::collections::{BTreeMap, HashMap, HashSet};
use time::{Duration, OffsetDateTime};

/// One thing to do for a token, in the order they are listed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "action", rename_all = "kebab-case")]
pub enum Action {
    /// A PAT carrying patrol's marker for this token that nothing references: its value is lost, revoke it.
    ReconcileOrphan {
        authorization_id: AuthorizationId,
        display_name: String,
    },
    /// Finish the rotation the journal says is in flight.
    Resume {
        op: OperationId,
        step: String,
    },
    /// The current version was written out of band and names a PAT: take it over (and drain the PAT it replaced).
    Adopt {
        authorization_id: AuthorizationId,
        vault_version: String,
    },
    /// A previous PAT whose grace has ended: revoke it and disable its vault version. With evidence-gated
    /// revocation, `evidence` says why the gate allows it, and `alert` is the deadline alert (the PAT was
    /// still in use, or there was no evidence) to send once it is revoked.
    RevokePrevious {
        authorization_id: AuthorizationId,
        #[serde(with = "time::serde::rfc3339")]
        revoke_after: OffsetDateTime,
        #[serde(skip_serializing_if = "Option::is_none")]
        evidence: Option<String>,
        #[serde(skip_serializing_if = "Option::is_none")]
        alert: Option<Notice>,
    },
    /// A previous PAT whose grace has ended but which the evidence gate keeps for now: nothing is done;
    /// it is examined again by every run, and decided at `until` at the latest (quiet time or deadline).
    WaitPrevious {
        authorization_id: AuthorizationId,
        #[serde(with = "time::serde::rfc3339")]
        revoke_after: OffsetDateTime,
        #[serde(with = "time::serde::rfc3339")]
        until: OffsetDateTime,
        reason: String,
    },
    Rotate {
        reason: Reason,
    },
    /// Deliver the current PAT to these consumers (a write owed), or look for their evidence of use while
    /// a previous PAT waits for them (`crate::consumers`).
    Deliver {
        consumers: Vec<String>,
    },
    /// Nothing can be done this run (the owner must sign in, the store is unreadable, …).
    Blocked {
        why: String,
    },
    /// The token was retired (`patrol retire`): patrol never creates, rotates or delivers a PAT for it again,
    /// whatever the rest of the state says. `finished = false`: the retirement was interrupted (its intent is
    /// journaled, some PAT or version may still be live) and `patrol retire` run again finishes it. `message`
    /// tells the operator what to do (delete the `[[token]]` block).
    Retired {
        #[serde(with = "time::serde::rfc3339")]
        at: OffsetDateTime,
        finished: bool,
        message: String,
    },
}

impl Action {
    pub fn label(&self) -> String {
        match self {
            Self::ReconcileOrphan { authorization_id, .. } => format!("reconcile orphan {authorization_id}"),
            Self::Resume { op, step } => format!("resume {op} from {step}"),
            Self::Adopt { authorization_id, .. } => format!("adopt {authorization_id}"),
            Self::RevokePrevious { authorization_id, evidence: None, .. } => {
                format!("revoke previous {authorization_id}")
            }
            Self::RevokePrevious { authorization_id, evidence: Some(why), alert, .. } => format!(
                "revoke previous {authorization_id}{} ({why})",
                if alert.is_some() { " at the deadline" } else { "" }
            ),
            Self::WaitPrevious { authorization_id, until, reason, .. } => format!(
                "wait: previous {authorization_id} kept until {} at the latest ({reason})",
                crate::timestamp::rfc3339(*until)
            ),
            Self::Rotate { reason } => format!("rotate ({})", reason.as_str()),
            Self::Deliver { consumers } => format!("deliver/check consumers: {}", consumers.join(", ")),
            Self::Blocked { why } => format!("blocked: {why}"),
            Self::Retired { message, .. } => message.clone(),
        }
    }
}

/// The current PAT as the plan sees it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CurrentView {
    pub authorization_id: Option<AuthorizationId>,
    pub vault_version: String,
    #[serde(with = "time::serde::rfc3339::option")]
    pub valid_to: Option<OffsetDateTime>,
    pub days_left: Option<i64>,
    /// The tightest expiry threshold reached, if any (the notify layer sends each one once).
    pub warning_threshold: Option<u32>,
}

/// The plan for one managed token.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Entry {
    pub secret: SecretName,
    pub owner: OwnerId,
    pub organization: OrgName,
    pub current: Option<CurrentView>,
    pub actions: Vec<Action>,
    pub notes: Vec<String>,
    /// Each declared consumer and where its delivery of the current PAT stands (`crate::consumers::view`).
    pub consumers: Vec<crate::consumers::view::ConsumerView>,
}

impl Entry {
    pub fn rotation(&self) -> Option<Reason> {
        self.actions.iter().find_map(|a| match a {
            Action::Rotate { reason } => Some(*reason),
            _ => None,
        })
    }

    /// Nothing to apply: no actions, or only previous PATs the evidence gate keeps for now, or a retired token.
    pub fn is_noop(&self) -> bool {
        self.actions.iter().all(|a| matches!(a, Action::WaitPrevious { .. } | Action::Retired { .. }))
    }

    /// The retirement, when the token was retired.
    pub fn retired(&self) -> Option<&Action> {
        self.actions.iter().find(|a| matches!(a, Action::Retired { .. }))
    }
}

/// A PAT nobody manages: shown and alerted on, never touched.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Unmanaged {
    pub owner: OwnerId,
    pub organization: OrgName,
    pub pat: Pat,
    /// It carries patrol's marker but matches no managed token (e.g. removed from the policy).
    pub made_by_patrol: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Plan {
    #[serde(with = "time::serde::rfc3339")]
    pub at: OffsetDateTime,
    pub entries: Vec<Entry>,
    pub unmanaged: Vec<Unmanaged>,
}

/// What callers asked for beyond the schedule.
#[derive(Debug, Clone, Default)]
pub struct Requests {
    /// Rotate these now whatever their state (`Forced` or `Compromised`).
    pub rotate: BTreeMap<SecretName, Reason>,
}

fn days_left(valid_to: OffsetDateTime, now: OffsetDateTime) -> i64 {
    // Whole days, rounded down; negative once expired.
    (valid_to - now).whole_seconds().div_euclid(86_400)
}

/// The owners' listings, indexed once per plan: (owner, organization) → listing and its PATs by id.
struct Listings<'a> {
    /// owner → organization → listing.
    by_pair: HashMap<&'a str, HashMap<&'a str, Listing<'a>>>,
}

type Listing<'a> = (&'a OwnerPats, HashMap<AuthorizationId, &'a Pat>);

impl<'a> Listings<'a> {
    fn new(inv: &'a Inventory) -> Self {
        let mut by_pair: HashMap<&'a str, HashMap<&'a str, Listing<'a>>> = HashMap::new();
        for o in &inv.owners {
            // The first listing of a pair wins, as `Inventory::owner_pats` would find it.
            by_pair
                .entry(o.owner.as_str())
                .or_default()
                .entry(o.organization.as_str())
                .or_insert_with(|| (o, o.pats.iter().map(|p| (p.authorization_id, p)).collect()));
        }
        Self { by_pair }
    }

    fn get(&self, owner: &OwnerId, org: &OrgName) -> Option<&Listing<'a>> {
        self.by_pair.get(owner.as_str())?.get(org.as_str())
    }
}

/// `s` in ASCII lower case, borrowed when it already is (display names are matched case-insensitively).
fn lower(s: &str) -> Cow<'_, str> {
    if s.bytes().any(|b| b.is_ascii_uppercase()) { Cow::Owned(s.to_ascii_lowercase()) } else { Cow::Borrowed(s) }
}

/// Plans every token of the inventory.
///
/// Linear in tokens + listed PATs: every lookup goes through a hash index built once here, keyed by
/// borrowed strings, so planning allocates little beyond the plan itself (`cargo bench --bench plan`).
pub fn plan(inv: &Inventory, policy: &Policy, now: OffsetDateTime, requests: &Requests) -> Plan {
    let planner = Planner::new(inv, policy, now, requests);
    let mut entries = Vec::with_capacity(inv.tokens.len());
    entries.extend(planner.entries());
    Plan { at: now, entries, unmanaged: planner.unmanaged }
}

/// [`plan`] one token at a time: what planning a token needs from the whole inventory (the policy's tokens
/// by secret, the owners' listings, the orphans, the unmanaged PATs), indexed once; each token's [`Entry`]
/// is made when it is asked for. It serializes as the [`Plan`] it would build, without building it: `patrol
/// plan --format json` writes each entry as it is made, so 10,000 entries are never in memory beside the
/// inventory they come from.
pub struct Planner<'a> {
    inv: &'a Inventory,
    now: OffsetDateTime,
    requests: &'a Requests,
    by_secret: HashMap<&'a SecretName, &'a ManagedToken>,
    orphans: HashMap<&'a SecretName, Vec<&'a Pat>>,
    listings: Listings<'a>,
    /// The PATs nobody manages, sorted by owner, organization and id.
    pub unmanaged: Vec<Unmanaged>,
}

impl<'a> Planner<'a> {
    pub fn new(inv: &'a Inventory, policy: &'a Policy, now: OffsetDateTime, requests: &'a Requests) -> Self {
        // owner → org → lower-case base display name → token, for marker matching.
        let mut by_name: HashMap<&str, HashMap<&str, HashMap<Cow<'_, str>, &ManagedToken>>> = HashMap::new();
        for t in &policy.tokens {
            by_name
                .entry(t.owner.as_str())
                .or_default()
                .entry(t.organization.as_str())
                .or_default()
                .insert(lower(t.display_name.as_str()), t);
        }
        // Every PAT some token references (never an orphan, never "unmanaged").
        let mut referenced: HashSet<AuthorizationId> = HashSet::with_capacity(inv.tokens.len() * 2);
        for ts in inv.tokens.values() {
            referenced.extend(references(ts));
        }

        // Orphans and unmanaged PATs, per owner listing.
        let mut orphans: HashMap<&SecretName, Vec<&Pat>> = HashMap::new();
        let mut unmanaged = Vec::new();
        let mut base_lower = String::new();
        for o in &inv.owners {
            let names = by_name.get(o.owner.as_str()).and_then(|m| m.get(o.organization.as_str()));
            for pat in &o.pats {
                if referenced.contains(&pat.authorization_id) {
                    continue;
                }
                let marker = parse_marker(&pat.display_name);
                let token = match (&marker, names) {
                    (Some((base, _)), Some(names)) => {
                        base_lower.clear();
                        base_lower.push_str(base);
                        base_lower.make_ascii_lowercase();
                        names.get(base_lower.as_str()).copied()
                    }
                    _ => None,
                };
                match (token, marker) {
                    (Some(t), Some((_, op))) if inv.tokens.contains_key(&t.secret) => {
                        let ts = &inv.tokens[&t.secret];
                        let in_flight = ts.journal.operation.as_ref().is_some_and(|x| x.op == op);
                        if !in_flight {
                            orphans.entry(&t.secret).or_default().push(pat);
                        }
                    }
                    (Some(_), Some(_)) => {} // a token outside this inventory's selection: not ours to judge now
                    (_, marker) => unmanaged.push(Unmanaged {
                        owner: o.owner.clone(),
                        organization: o.organization.clone(),
                        pat: pat.clone(),
                        made_by_patrol: marker.is_some(),
                    }),
                }
            }
        }
        unmanaged.sort_by(|a, b| {
            (&a.owner, &a.organization, a.pat.authorization_id).cmp(&(
                &b.owner,
                &b.organization,
                b.pat.authorization_id,
            ))
        });
        Self {
            inv,
            now,
            requests,
            by_secret: policy.tokens.iter().map(|t| (&t.secret, t)).collect(),
            orphans,
            listings: Listings::new(inv),
            unmanaged,
        }
    }

    /// Each managed token's entry, in the inventory's order (by secret name).
    pub fn entries(&self) -> impl Iterator<Item = Entry> + '_ {
        self.inv.tokens.iter().filter_map(|(secret, ts)| self.entry(secret, ts))
    }

    fn entry(&self, secret: &SecretName, ts: &TokenState) -> Option<Entry> {
        let token = self.by_secret.get(secret).copied()?;
        let requested = self.requests.rotate.get(secret).copied();
        let mut e = plan_token(&self.listings, token, ts, self.inv.evidence.as_ref(), self.now, requested);
        if let Some(list) = self.orphans.get(secret) {
            let mut list = list.clone();
            list.sort_by_key(|p| p.authorization_id);
            let mut orphan_actions: Vec<Action> = list
                .into_iter()
                .map(|p| Action::ReconcileOrphan {
                    authorization_id: p.authorization_id,
                    display_name: p.display_name.clone(),
                })
                .collect();
            if !e.actions.iter().any(|a| matches!(a, Action::Blocked { .. })) {
                orphan_actions.append(&mut e.actions);
                e.actions = orphan_actions;
            }
        }
        Some(e)
    }
}

impl Serialize for Planner<'_> {
    /// Exactly what the [`Plan`] it would build serializes to, entry by entry.
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeStruct;
        struct At(OffsetDateTime);
        impl Serialize for At {
            fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
                time::serde::rfc3339::serialize(&self.0, serializer)
            }
        }
        struct Entries<'p, 'a>(&'p Planner<'a>);
        impl Serialize for Entries<'_, '_> {
            fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
                serializer.collect_seq(self.0.entries())
            }
        }
        let mut plan = serializer.serialize_struct("Plan", 3)?;
        plan.serialize_field("at", &At(self.now))?;
        plan.serialize_field("entries", &Entries(self))?;
        plan.serialize_field("unmanaged", &self.unmanaged)?;
        plan.end()
    }
}

/// Every PAT a token's journal or current version refers to.
pub fn references(ts: &TokenState) -> Vec<AuthorizationId> {
    let mut out = ts.journal.referenced();
    out.extend(ts.current_authorization_id());
    out.extend(ts.tag(tags::PREVIOUS_AUTHORIZATION_ID).and_then(|s| AuthorizationId::parse(s).ok()));
    out
}

/// The drains of a token: the journal's, plus the current version's `previous-*` tags when the journal
/// does not know them (it was lost or the version was adopted).
///
/// When the journal finished the very operation that wrote the current version, it is authoritative:
/// it recorded that drain when the rotation finished and drops it only once the PAT is revoked and its
/// version disabled, so the tags (which stay on the current version) must not bring it back — otherwise
/// every run until the next rotation would revoke the same PAT again.
pub fn drains(token: &ManagedToken, ts: &TokenState) -> Vec<Drain> {
    let mut out = ts.journal.drains.clone();
    let journal_wrote_current = ts
        .current_operation()
        .is_some_and(|op| ts.journal.last.as_ref().is_some_and(|l| l.op == op) && ts.journal.operation.is_none());
    if journal_wrote_current {
        return out;
    }
    if let (Some(prev), Some(after)) = (
        ts.tag(tags::PREVIOUS_AUTHORIZATION_ID).and_then(|s| AuthorizationId::parse(s).ok()),
        ts.tag_time(tags::PREVIOUS_REVOKE_AFTER),
    ) && !out.iter().any(|d| d.pat.authorization_id == prev)
        && ts.journal.current.as_ref().is_none_or(|c| c.authorization_id != prev)
    {
        let replaced_by = ts.current_operation();
        out.push(Drain {
            pat: PatVersion {
                authorization_id: prev,
                owner: token.owner.clone(),
                organization: token.organization.clone(),
                vault_version: None,
            },
            revoke_after: after,
            replaced_by,
        });
    }
    out
}

/// The plan's word for a retired token (pure).
pub fn retired_action(token: &ManagedToken, r: &super::journal::Retirement) -> Action {
    let when = crate::timestamp::rfc3339(r.at);
    let message = if r.done {
        format!(
            "retired on {when} ({}): patrol no longer creates, rotates or delivers it; delete its [[token]] block \
             (secret = \"{}\") from the policy",
            r.reason, token.secret
        )
    } else {
        format!(
            "retirement started on {when} was interrupted: run `patrol retire {} --yes` again to finish it (patrol \
             creates and rotates nothing for it meanwhile)",
            token.secret
        )
    };
    Action::Retired { at: r.at, finished: r.done, message }
}

fn plan_token(
    listings: &Listings<'_>,
    token: &ManagedToken,
    ts: &TokenState,
    evidence: Option<&crate::evidence::Evidence>,
    now: OffsetDateTime,
    requested: Option<Reason>,
) -> Entry {
    let mut e = Entry {
        secret: token.secret.clone(),
        owner: token.owner.clone(),
        organization: token.organization.clone(),
        current: None,
        actions: Vec::new(),
        notes: Vec::new(),
        consumers: if token.consumers.is_empty() {
            Vec::new()
        } else {
            let current = ts.current_authorization_id().or(ts.journal.current.as_ref().map(|c| c.authorization_id));
            crate::consumers::view::token_view(token, &ts.journal, current, now)
        },
    };
    // A retired token is never planned again: no rotation (its PAT is revoked, so it would look missing), no
    // delivery, no adoption — the operator deletes its `[[token]]` block.
    if let Some(r) = &ts.journal.retired {
        e.actions.push(retired_action(token, r));
        return e;
    }
    if let Some(err) = &ts.error {
        e.actions.push(Action::Blocked { why: err.clone() });
        return e;
    }
    let by_id = match listings.get(&token.owner, &token.organization) {
        Some((l, by_id)) if l.error.is_none() => by_id,
        Some((l, _)) => {
            e.actions.push(Action::Blocked { why: l.error.clone().unwrap_or_default() });
            return e;
        }
        None => {
            e.actions.push(Action::Blocked { why: "the owner's PATs were not listed".into() });
            return e;
        }
    };
    let current_id = ts.current_authorization_id();
    let current_pat = current_id.and_then(|id| by_id.get(&id).copied());
    if let Some(cur) = &ts.current {
        let valid_to = current_pat.map(|p| p.valid_to).or_else(|| ts.tag_time(tags::VALID_TO)).or(cur.expires);
        let dl = valid_to.map(|v| days_left(v, now));
        let warning_threshold =
            dl.and_then(|d| token.expiry_thresholds.iter().copied().filter(|t| d <= *t as i64).min());
        e.current = Some(CurrentView {
            authorization_id: current_id,
            vault_version: cur.version.clone(),
            valid_to,
            days_left: dl,
            warning_threshold,
        });
    }

    // An in-flight operation is finished before anything else is decided.
    if let Some(op) = &ts.journal.operation {
        e.actions.push(Action::Resume { op: op.op.clone(), step: op.step.name().to_owned() });
        return e;
    }

    // Out-of-band version naming a PAT: adopt.
    if let (Some(cur), Some(id)) = (&ts.current, current_id) {
        let known = ts.journal.current.as_ref().is_some_and(|c| c.authorization_id == id);
        let ours = ts.current_operation().is_some_and(|op| ts.journal.last.as_ref().is_some_and(|l| l.op == op));
        if !known && !ours {
            e.actions.push(Action::Adopt { authorization_id: id, vault_version: cur.version.clone() });
            e.notes.push(format!("version {} was written outside patrol; it names PAT {id}", cur.version));
        }
    }

    // Consumers owed the current PAT, or whose evidence of use a waiting previous PAT needs.
    let all_drains = drains(token, ts);
    let waiting = all_drains.iter().any(|d| Some(d.pat.authorization_id) != current_id);
    let due = crate::consumers::gate::due(token, &ts.journal, current_id, waiting, now);
    if !due.is_empty() {
        e.actions.push(Action::Deliver { consumers: due });
    }

    // Drained previous PATs.
    for d in all_drains {
        if Some(d.pat.authorization_id) == current_id {
            e.notes.push(format!("previous PAT {} is the current one; it is never revoked", d.pat.authorization_id));
            continue;
        }
        if d.revoke_after > now {
            continue;
        }
        let (authorization_id, revoke_after) = (d.pat.authorization_id, d.revoke_after);
        // Consumers first: the previous PAT stays until every consumer moved (or their deadline).
        match crate::consumers::gate::for_drain(token, &ts.journal, &d, current_id, now) {
            None | Some(crate::consumers::gate::ConsumerGate::Ready(_)) => {}
            Some(crate::consumers::gate::ConsumerGate::Wait { until, reason }) => {
                e.actions.push(Action::WaitPrevious { authorization_id, revoke_after, until, reason });
                continue;
            }
            Some(crate::consumers::gate::ConsumerGate::Deadline { alert, reason }) => {
                e.actions.push(Action::RevokePrevious {
                    authorization_id,
                    revoke_after,
                    evidence: Some(reason),
                    alert: Some(alert),
                });
                continue;
            }
        }
        let Some(ev) = evidence else {
            e.actions.push(Action::RevokePrevious { authorization_id, revoke_after, evidence: None, alert: None });
            continue;
        };
        match super::evidence::decide(ev, token, ts, &d, now) {
            GateDecision::NotDue => {}
            GateDecision::Revoke { reason } => e.actions.push(Action::RevokePrevious {
                authorization_id,
                revoke_after,
                evidence: Some(reason),
                alert: None,
            }),
            GateDecision::RevokeAtDeadline { alert } => e.actions.push(Action::RevokePrevious {
                authorization_id,
                revoke_after,
                evidence: Some(format!("hard deadline: {} hours after the rotation", ev.gate.gate.deadline_hours)),
                alert: Some(alert),
            }),
            GateDecision::Wait { until, reason } => {
                e.actions.push(Action::WaitPrevious { authorization_id, revoke_after, until, reason })
            }
        }
    }

    // Rotation.
    let rotate_before = Duration::days(token.rotate_before_days as i64);
    let reason = if let Some(r) = requested {
        Some(r)
    } else if ts.current.is_none() {
        Some(Reason::Missing)
    } else if current_id.is_none() {
        e.notes.push("the current version names no PAT (no authorization-id tag)".into());
        Some(Reason::Missing)
    } else if let Some(pat) = current_pat {
        if pat.valid_to <= now {
            Some(Reason::Expired)
        } else if pat.is_global() && !token.allow_all_orgs {
            Some(Reason::GlobalMigration)
        } else if pat.scope != token.scopes.as_str() && !token.scopes.matches_wire(&pat.scope) {
            e.notes.push(format!("scopes are {:?}, the policy says {:?}", pat.scope, token.scopes.as_str()));
            Some(Reason::Drift)
        } else if pat.valid_to - now <= rotate_before {
            Some(Reason::Due)
        } else {
            None
        }
    } else {
        match ts.tag_time(tags::VALID_TO) {
            Some(v) if v <= now => Some(Reason::Expired),
            _ => {
                e.notes.push("the current PAT is not among the owner's active PATs (revoked?)".into());
                Some(Reason::Missing)
            }
        }
    };
    if let Some(reason) = reason {
        e.actions.push(Action::Rotate { reason });
    }
    e
}

impl Plan {
    pub fn to_json(&self) -> serde_json::Value {
        serde_json::to_value(self).unwrap_or(serde_json::Value::Null)
    }

    /// A fixed-width table for people.
    pub fn table(&self) -> String {
        let mut rows: Vec<[String; 4]> = vec![["SECRET".into(), "VALID TO".into(), "DAYS".into(), "ACTIONS".into()]];
        for e in &self.entries {
            let (vt, dl) = match &e.current {
                Some(c) => (
                    c.valid_to.map(|v| v.date().to_string()).unwrap_or_else(|| "?".into()),
                    c.days_left.map(|d| d.to_string()).unwrap_or_else(|| "?".into()),
                ),
                None => ("-".into(), "-".into()),
            };
            let actions = if e.actions.is_empty() {
                "nothing".to_owned()
            } else {
                e.actions.iter().map(Action::label).collect::<Vec<_>>().join("; ")
            };
            rows.push([e.secret.to_string(), vt, dl, actions]);
        }
        let w: Vec<usize> = (0..3).map(|i| rows.iter().map(|r| r[i].chars().count()).max().unwrap_or(0)).collect();
        let mut out = String::new();
        for r in &rows {
            out.push_str(&format!(
                "{:<w0$}  {:<w1$}  {:>w2$}  {}\n",
                r[0],
                r[1],
                r[2],
                r[3],
                w0 = w[0],
                w1 = w[1],
                w2 = w[2]
            ));
        }
        if !self.unmanaged.is_empty() {
            out.push_str(&format!("\n{} PAT(s) not managed by patrol (never touched):\n", self.unmanaged.len()));
            for u in &self.unmanaged {
                out.push_str(&format!(
                    "  {} / {}: {:?} valid to {}{}\n",
                    u.owner,
                    u.organization,
                    u.pat.display_name,
                    u.pat.valid_to.date(),
                    if u.made_by_patrol { " (made by patrol, no longer in the policy)" } else { "" }
                ));
            }
        }
        out
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::rotation::inventory::OwnerPats;
    use crate::rotation::journal::{Completed, Journal, Operation, Step, marked_display_name};
    use crate::store::VersionProperties;
    use std::path::Path;
    use time::macros::datetime;

    pub(crate) const NOW: OffsetDateTime = datetime!(2027-03-01 03:00 UTC);

    pub(crate) fn policy_of(n: usize) -> Policy {
        let mut text = String::from(
            "[defaults]\norganization = \"fabrikam\"\nowner = \"svc@contoso.com\"\nvalidity_days = 30\nrotate_before_days = 7\ngrace_days = 2\nscopes = \"vso.code\"\n",
        );
        for i in 0..n {
            text.push_str(&format!("[[token]]\nsecret = \"tok-{i}\"\ndisplay_name = \"Token {i}\"\n"));
        }
        Policy::parse(Path::new("t.toml"), &text).unwrap()
    }

    pub(crate) fn id(n: u128) -> AuthorizationId {
        AuthorizationId::from_uuid(uuid::Uuid::from_u128(n))
    }

    pub(crate) fn pat(n: u128, name: &str, valid_to: OffsetDateTime) -> Pat {
        Pat {
            authorization_id: id(n),
            display_name: name.into(),
            scope: "vso.code".into(),
            target_accounts: Some(vec![uuid::Uuid::nil()]),
            valid_from: valid_to - Duration::days(30),
            valid_to,
        }
    }

    pub(crate) fn version(
        secret: &SecretName,
        auth: Option<AuthorizationId>,
        op: Option<&OperationId>,
    ) -> VersionProperties {
        let mut tags = BTreeMap::new();
        if let Some(a) = auth {
            tags.insert(tags::AUTHORIZATION_ID.to_owned(), a.to_string());
        }
        if let Some(op) = op {
            tags.insert(tags::OPERATION_ID.to_owned(), op.to_string());
        }
        VersionProperties {
            name: secret.clone(),
            version: format!("{:032x}", auth.map(|a| a.uuid().as_u128()).unwrap_or(7)),
            enabled: true,
            expires: None,
            created: None,
            updated: None,
            content_type: None,
            tags,
        }
    }

    /// A token that patrol rotated itself: current version tagged with `op`, journal agrees.
    pub(crate) fn managed(secret: &str, auth: AuthorizationId, valid_to: OffsetDateTime) -> TokenState {
        let secret = SecretName::parse(secret).unwrap();
        let op = OperationId::new_random();
        let mut j = Journal::new(secret.clone());
        j.current = Some(PatVersion {
            authorization_id: auth,
            owner: OwnerId::parse("svc@contoso.com").unwrap(),
            organization: OrgName::parse("fabrikam").unwrap(),
            vault_version: None,
        });
        j.last = Some(Completed {
            op: op.clone(),
            reason: Reason::Due,
            authorization_id: auth,
            vault_version: "v".into(),
            valid_to,
            finished: NOW,
            drift: vec![],
        });
        TokenState {
            current: Some(version(&secret, Some(auth), Some(&op))),
            secret,
            journal: j,
            journal_etag: None,
            error: None,
            kept_tags: Default::default(),
        }
    }

    pub(crate) fn inventory(tokens: Vec<TokenState>, pats: Vec<Pat>) -> Inventory {
        Inventory {
            taken_at: NOW,
            tokens: tokens.into_iter().map(|t| (t.secret.clone(), Box::new(t))).collect(),
            owners: vec![OwnerPats {
                owner: OwnerId::parse("svc@contoso.com").unwrap(),
                organization: OrgName::parse("fabrikam").unwrap(),
                pats,
                error: None,
                sign_in_required: false,
            }],
            evidence: None,
        }
    }

    fn actions(p: &Plan, secret: &str) -> Vec<Action> {
        p.entries.iter().find(|e| e.secret.as_str() == secret).unwrap().actions.clone()
    }

    /// `patrol plan --format json` streams the [`Planner`]; it must write what the [`Plan`] serializes to,
    /// byte for byte: orphans merged into their token's actions, unmanaged PATs (with and without a marker)
    /// sorted, a token outside the policy left out, a requested rotation, a missing secret.
    #[test]
    fn the_streamed_plan_is_the_plan() {
        let policy = policy_of(3);
        let mut inv = inventory(
            vec![
                managed("tok-0", id(1), NOW + Duration::days(20)),
                managed("tok-1", id(2), NOW + Duration::days(7)),
                managed("tok-9", id(9), NOW + Duration::days(20)),
            ],
            vec![
                pat(1, "Token 0 (patrol:aaaaaaaaaaaa)", NOW + Duration::days(20)),
                pat(2, "Token 1 (patrol:aaaaaaaaaaab)", NOW + Duration::days(7)),
                pat(5, "Token 0 (patrol:bbbbbbbbbbbb)", NOW + Duration::days(25)),
                pat(7, "someone's own PAT", NOW + Duration::days(3)),
                pat(6, "Gone token (patrol:cccccccccccc)", NOW + Duration::days(9)),
            ],
        );
        inv.owners[0].pats.reverse();
        let mut requests = Requests::default();
        requests.rotate.insert(SecretName::parse("tok-0").unwrap(), Reason::Forced);
        let whole = plan(&inv, &policy, NOW, &requests);
        assert_eq!(whole.entries.len(), 2, "tok-2 has no state here, tok-9 is not in the policy");
        assert!(actions(&whole, "tok-0").iter().any(|a| matches!(a, Action::ReconcileOrphan { .. })));
        assert_eq!(whole.unmanaged.len(), 2);
        let streamed = Planner::new(&inv, &policy, NOW, &requests);
        assert_eq!(serde_json::to_string(&streamed).unwrap(), serde_json::to_string(&whole).unwrap());
        assert_eq!(serde_json::to_string_pretty(&streamed).unwrap(), serde_json::to_string_pretty(&whole).unwrap());
    }

    #[test]
    fn due_not_due_expired_missing() {
        let policy = policy_of(4);
        let inv = inventory(
            vec![
                managed("tok-0", id(1), NOW + Duration::days(20)),
                managed("tok-1", id(2), NOW + Duration::days(7)),
                managed("tok-2", id(3), NOW + Duration::days(3)),
                TokenState {
                    secret: SecretName::parse("tok-3").unwrap(),
                    current: None,
                    journal: Journal::new(SecretName::parse("tok-3").unwrap()),
                    journal_etag: None,
                    error: None,
                    kept_tags: Default::default(),
                },
            ],
            vec![
                pat(1, "Token 0 (patrol:aaaaaaaaaaaa)", NOW + Duration::days(20)),
                pat(2, "Token 1 (patrol:aaaaaaaaaaab)", NOW + Duration::days(7)),
                // tok-2's PAT is not listed: revoked out of band.
            ],
        );
        let p = plan(&inv, &policy, NOW, &Requests::default());
        assert_eq!(actions(&p, "tok-0"), vec![]);
        assert_eq!(actions(&p, "tok-1"), vec![Action::Rotate { reason: Reason::Due }]);
        assert_eq!(actions(&p, "tok-2"), vec![Action::Rotate { reason: Reason::Missing }]);
        assert_eq!(actions(&p, "tok-3"), vec![Action::Rotate { reason: Reason::Missing }]);
        let e0 = &p.entries[0];
        assert_eq!(e0.current.as_ref().unwrap().days_left, Some(20));
        assert_eq!(e0.current.as_ref().unwrap().warning_threshold, Some(30));
        assert_eq!(p.entries[1].current.as_ref().unwrap().warning_threshold, Some(7));
        // Deterministic, and both renderings carry the decisions.
        assert_eq!(plan(&inv, &policy, NOW, &Requests::default()), p);
        let table = p.table();
        assert!(table.contains("tok-1") && table.contains("rotate (due)"), "{table}");
        assert_eq!(p.to_json()["entries"][1]["actions"][0]["reason"], "due");
    }

    #[test]
    fn a_retired_token_is_never_rotated_recreated_or_worked_on_even_when_forced() {
        use crate::rotation::journal::Retirement;
        let policy = policy_of(2);
        // tok-0: retired, its PAT revoked (not listed) and its secret disabled (no readable current version).
        let mut gone = managed("tok-0", id(1), NOW + Duration::days(2));
        gone.current = None;
        gone.journal.retired = Some(Box::new(Retirement {
            at: NOW - Duration::days(1),
            by: Some("patrol retire".into()),
            reason: "unused".into(),
            pats: Vec::new(),
            current: Some(id(1)),
            done: true,
            recorded: true,
        }));
        // tok-1: retirement interrupted after the revocation: the current version still names the revoked PAT.
        let mut half = managed("tok-1", id(2), NOW + Duration::days(2));
        half.journal.retired =
            Some(Box::new(Retirement { done: false, recorded: false, ..*gone.journal.retired.clone().unwrap() }));
        let inv = inventory(vec![gone, half], vec![]);
        let mut requests = Requests::default();
        requests.rotate.insert(SecretName::parse("tok-0").unwrap(), Reason::Forced);
        let p = plan(&inv, &policy, NOW, &requests);
        for e in &p.entries {
            assert!(matches!(&e.actions[..], [Action::Retired { .. }]), "{e:?}");
            assert!(e.is_noop() && e.rotation().is_none(), "{e:?}");
        }
        assert!(p.entries[0].actions[0].label().contains("delete its [[token]] block"), "{}", p.table());
        assert!(p.entries[1].actions[0].label().contains("patrol retire tok-1 --yes"), "{}", p.table());
        assert!(matches!(p.entries[1].actions[0], Action::Retired { finished: false, .. }));
    }

    #[test]
    fn expired_drift_global_forced_compromised() {
        let policy = policy_of(4);
        let mut global = pat(3, "Token 2 (patrol:aaaaaaaaaaac)", NOW + Duration::days(20));
        global.target_accounts = None;
        let mut drifted = pat(2, "Token 1 (patrol:aaaaaaaaaaab)", NOW + Duration::days(20));
        drifted.scope = "vso.code vso.build".into();
        let mut inv = inventory(
            vec![
                managed("tok-0", id(1), NOW - Duration::days(1)),
                managed("tok-1", id(2), NOW + Duration::days(20)),
                managed("tok-2", id(3), NOW + Duration::days(20)),
                managed("tok-3", id(4), NOW + Duration::days(20)),
            ],
            vec![drifted, global, pat(4, "Token 3 (patrol:aaaaaaaaaaad)", NOW + Duration::days(20))],
        );
        inv.tokens
            .get_mut(&SecretName::parse("tok-0").unwrap())
            .unwrap()
            .current
            .as_mut()
            .unwrap()
            .tags
            .insert(tags::VALID_TO.into(), "2027-02-28T03:00:00Z".into());
        let mut req = Requests::default();
        req.rotate.insert(SecretName::parse("tok-3").unwrap(), Reason::Compromised);
        let p = plan(&inv, &policy, NOW, &req);
        assert_eq!(actions(&p, "tok-0"), vec![Action::Rotate { reason: Reason::Expired }]);
        assert_eq!(actions(&p, "tok-1"), vec![Action::Rotate { reason: Reason::Drift }]);
        assert_eq!(actions(&p, "tok-2"), vec![Action::Rotate { reason: Reason::GlobalMigration }]);
        assert_eq!(actions(&p, "tok-3"), vec![Action::Rotate { reason: Reason::Compromised }]);
    }

    #[test]
    fn orphans_unmanaged_and_never_the_current() {
        let policy = policy_of(1);
        let cur = managed("tok-0", id(1), NOW + Duration::days(20));
        let inv = inventory(
            vec![cur],
            vec![
                pat(1, "Token 0 (patrol:aaaaaaaaaaaa)", NOW + Duration::days(20)),
                pat(9, "Token 0 (patrol:bbbbbbbbbbbb)", NOW + Duration::days(29)), // orphan
                pat(10, "someone's laptop", NOW + Duration::days(100)),
                pat(11, "Retired token (patrol:cccccccccccc)", NOW + Duration::days(5)),
            ],
        );
        let p = plan(&inv, &policy, NOW, &Requests::default());
        assert_eq!(
            actions(&p, "tok-0"),
            vec![Action::ReconcileOrphan {
                authorization_id: id(9),
                display_name: "Token 0 (patrol:bbbbbbbbbbbb)".into()
            }]
        );
        assert_eq!(p.unmanaged.len(), 2);
        assert!(!p.unmanaged[0].made_by_patrol);
        assert!(p.unmanaged[1].made_by_patrol);
        // Nothing ever targets the current PAT.
        assert!(p.entries[0].actions.iter().all(|a| !matches!(a,
            Action::ReconcileOrphan { authorization_id, .. } | Action::RevokePrevious { authorization_id, .. }
            if *authorization_id == id(1))));
    }

    #[test]
    fn resume_drain_and_adopt() {
        let policy = policy_of(3);
        let owner = OwnerId::parse("svc@contoso.com").unwrap();
        let org = OrgName::parse("fabrikam").unwrap();
        // tok-0: a rotation in flight at Intent; its marker PAT is not an orphan.
        let mut t0 = managed("tok-0", id(1), NOW + Duration::days(3));
        let op = OperationId::parse("dddddddddddd").unwrap();
        t0.journal.operation = Some(Box::new(Operation {
            op: op.clone(),
            reason: Reason::Due,
            started: NOW,
            display_name: marked_display_name("Token 0", &op),
            scopes: "vso.code".into(),
            requested_valid_to: NOW + Duration::days(30),
            all_orgs: false,
            previous: None,
            grace_days: 2,
            attempt: 0,
            step: Step::Intent,
        }));
        // tok-1: previous PAT 5 drained (grace over), previous PAT 6 still in grace.
        let mut t1 = managed("tok-1", id(2), NOW + Duration::days(29));
        for (n, after) in [(5, NOW - Duration::hours(1)), (6, NOW + Duration::days(1))] {
            t1.journal.drains.push(Drain {
                pat: PatVersion {
                    authorization_id: id(n),
                    owner: owner.clone(),
                    organization: org.clone(),
                    vault_version: None,
                },
                revoke_after: after,
                replaced_by: None,
            });
        }
        // tok-2: a version written out of band naming PAT 7.
        let mut t2 = managed("tok-2", id(3), NOW + Duration::days(20));
        t2.current = Some(version(&t2.secret, Some(id(7)), None));
        let inv = inventory(
            vec![t0, t1, t2],
            vec![
                pat(1, "Token 0 (patrol:aaaaaaaaaaaa)", NOW + Duration::days(3)),
                pat(8, "Token 0 (patrol:dddddddddddd)", NOW + Duration::days(30)),
                pat(2, "Token 1 (patrol:aaaaaaaaaaab)", NOW + Duration::days(29)),
                pat(5, "Token 1 (patrol:aaaaaaaaaaa5)", NOW + Duration::days(2)),
                pat(6, "Token 1 (patrol:aaaaaaaaaaa6)", NOW + Duration::days(3)),
                pat(3, "Token 2 (patrol:aaaaaaaaaaa3)", NOW + Duration::days(20)),
                pat(7, "Token 2 by hand", NOW + Duration::days(60)),
            ],
        );
        let p = plan(&inv, &policy, NOW, &Requests::default());
        assert_eq!(actions(&p, "tok-0"), vec![Action::Resume { op, step: "intent".into() }]);
        assert_eq!(
            actions(&p, "tok-1"),
            vec![Action::RevokePrevious {
                authorization_id: id(5),
                revoke_after: NOW - Duration::hours(1),
                evidence: None,
                alert: None
            }]
        );
        // PAT 3 (what patrol last stored) is not an orphan: adopting drains it with grace.
        let a2 = actions(&p, "tok-2");
        assert!(matches!(&a2[..], [Action::Adopt { authorization_id, .. }] if *authorization_id == id(7)), "{a2:?}");
    }

    #[test]
    fn a_revoked_previous_is_not_revoked_again_from_the_tags() {
        let policy = policy_of(1);
        let mut t0 = managed("tok-0", id(1), NOW + Duration::days(20));
        let cur = t0.current.as_mut().unwrap();
        cur.tags.insert(tags::PREVIOUS_AUTHORIZATION_ID.into(), id(5).to_string());
        cur.tags.insert(tags::PREVIOUS_REVOKE_AFTER.into(), "2027-02-27T03:00:00Z".into());
        let pats = vec![pat(1, "Token 0 (patrol:aaaaaaaaaaaa)", NOW + Duration::days(20))];
        // The journal finished the rotation that wrote the current version and has no drain left:
        // PAT 5 was revoked and its version disabled already.
        let p = plan(&inventory(vec![t0.clone()], pats.clone()), &policy, NOW, &Requests::default());
        assert_eq!(actions(&p, "tok-0"), vec![]);
        // The journal was lost: the tags are all that is left, so the drain comes back from them.
        t0.journal = Journal::new(t0.secret.clone());
        let p = plan(&inventory(vec![t0], pats), &policy, NOW, &Requests::default());
        assert!(
            matches!(&actions(&p, "tok-0")[..], [Action::Adopt { .. }, Action::RevokePrevious { authorization_id, .. }]
                if *authorization_id == id(5)),
            "{:?}",
            actions(&p, "tok-0")
        );
    }

    #[test]
    fn blocked_when_the_owner_cannot_be_listed() {
        let policy = policy_of(1);
        let mut inv = inventory(vec![managed("tok-0", id(1), NOW + Duration::days(3))], vec![]);
        inv.owners[0].error = Some("owner svc@contoso.com must sign in again".into());
        inv.owners[0].sign_in_required = true;
        let p = plan(&inv, &policy, NOW, &Requests::default());
        assert!(matches!(&actions(&p, "tok-0")[..], [Action::Blocked { why }] if why.contains("sign in")));
    }
}
