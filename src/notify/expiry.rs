//! Expiry warnings: which threshold is due for a PAT at a given time, and the persisted record of what
//! was already announced, so each threshold reaches each recipient once per PAT.
//!
//! - [`evaluate`] is pure: for a PAT and `now` it yields the most urgent threshold reached (30/14/7/1 days
//!   by default, configurable per policy as [`Thresholds`]), or [`Notice::PatExpired`] once `validTo` has
//!   passed. A run that starts late (patrol was down on day 14 and runs on day 6) announces only the 7-day
//!   threshold, not three stale ones.
//! - [`ExpiryLedger`] keeps, in a [`StateStore`] document (`notify/sent`), which (PAT, threshold) pairs
//!   went to which target. Keys are the PAT's authorization id, so a rotated PAT (a new authorization id)
//!   starts fresh; a PAT whose `validTo` changed (extended by an update) starts fresh too. Claims are
//!   compare-and-swap: two runs at once cannot both claim the same announcement. A claim is taken before
//!   delivery and released if delivery to that target failed, so a failed send is retried by the next run
//!   and a successful one is never repeated (a crash between claim and send loses that one warning rather
//!   than repeating it).

use super::{Notice, PatRef, Target};
use crate::domain::{AuthorizationId, DomainError};
use crate::state::{StateError, StateStore};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use time::{Duration, OffsetDateTime};

/// Days before `validTo` at which a warning is sent: distinct, 1–365, most distant first.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(into = "Vec<u32>")]
pub struct Thresholds(Vec<u32>);

impl Thresholds {
    pub fn new(days: &[u32]) -> Result<Self, DomainError> {
        let shown = format!("{days:?}");
        if days.is_empty() {
            return Err(DomainError::new("expiry thresholds", &shown, "must name at least one number of days"));
        }
        if let Some(d) = days.iter().find(|d| !(1..=365).contains(*d)) {
            return Err(DomainError::new("expiry thresholds", &shown, format!("{d} is outside 1..=365 days")));
        }
        let set: BTreeSet<u32> = days.iter().copied().collect();
        if set.len() != days.len() {
            return Err(DomainError::new("expiry thresholds", &shown, "lists a number of days twice"));
        }
        Ok(Self(set.into_iter().rev().collect()))
    }

    pub fn days(&self) -> &[u32] {
        &self.0
    }
}

impl Default for Thresholds {
    fn default() -> Self {
        Self(vec![30, 14, 7, 1])
    }
}

impl From<Thresholds> for Vec<u32> {
    fn from(t: Thresholds) -> Self {
        t.0
    }
}

impl<'de> Deserialize<'de> for Thresholds {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let v = Vec::<u32>::deserialize(d)?;
        Self::new(&v).map_err(serde::de::Error::custom)
    }
}

/// The notice due for `pat` at `now`: `PatExpired` once `validTo` has passed, else an `ExpiryWarning` at
/// the smallest threshold reached, else nothing.
pub fn evaluate(pat: &PatRef, now: OffsetDateTime, thresholds: &Thresholds) -> Option<Notice> {
    let remaining = pat.valid_to - now;
    if remaining <= Duration::ZERO {
        return Some(Notice::PatExpired { pat: pat.clone() });
    }
    let due = thresholds.days().iter().copied().filter(|t| remaining <= Duration::days(i64::from(*t))).min()?;
    Some(Notice::ExpiryWarning { pat: pat.clone(), threshold_days: due, days_left: remaining.whole_days() })
}

/// What makes a notice once-only: the PAT, its `validTo`, and the announcement (`t30`, `expired`, …).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct OnceKey {
    pub authorization_id: AuthorizationId,
    pub valid_to: OffsetDateTime,
    pub announcement: String,
}

impl OnceKey {
    /// The key of a once-only notice (expiry warnings and expiry), `None` for notices sent every time.
    pub fn of(notice: &Notice) -> Option<Self> {
        let (pat, announcement) = match notice {
            Notice::ExpiryWarning { pat, threshold_days, .. } => (pat, format!("t{threshold_days}")),
            Notice::PatExpired { pat } => (pat, "expired".to_owned()),
            _ => return None,
        };
        Some(Self { authorization_id: pat.authorization_id, valid_to: pat.valid_to, announcement })
    }
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct SentDoc {
    version: u32,
    /// authorization id → what was sent for it.
    pats: BTreeMap<String, SentEntry>,
}

#[derive(Debug, Serialize, Deserialize)]
struct SentEntry {
    #[serde(with = "time::serde::rfc3339")]
    valid_to: OffsetDateTime,
    /// announcement (`t30`, `expired`) → targets it reached.
    sent: BTreeMap<String, BTreeSet<String>>,
}

/// Entries of PATs that expired this long ago are dropped from the document.
const KEEP_AFTER_EXPIRY: Duration = Duration::days(90);
const CAS_ATTEMPTS: usize = 8;

/// The persisted record of announced expiry thresholds.
#[derive(Debug, Clone)]
pub struct ExpiryLedger {
    store: Arc<dyn StateStore>,
    key: String,
}

impl ExpiryLedger {
    /// The state key used by default.
    pub const KEY: &'static str = "notify/sent";

    pub fn new(store: Arc<dyn StateStore>) -> Self {
        Self { store, key: Self::KEY.to_owned() }
    }

    /// Marks each (announcement, target) pair as sent and returns, in order, whether it was newly claimed
    /// (`false`: it was announced before and must not be sent again).
    pub async fn claim(&self, items: &[(OnceKey, Target)], now: OffsetDateTime) -> Result<Vec<bool>, StateError> {
        self.modify(|doc| {
            doc.pats.retain(|_, e| e.valid_to + KEEP_AFTER_EXPIRY > now);
            items
                .iter()
                .map(|(k, target)| {
                    let entry = doc
                        .pats
                        .entry(k.authorization_id.to_string())
                        .or_insert_with(|| SentEntry { valid_to: k.valid_to, sent: BTreeMap::new() });
                    if entry.valid_to != k.valid_to {
                        // validTo changed (the PAT was extended or shortened): its thresholds start over.
                        *entry = SentEntry { valid_to: k.valid_to, sent: BTreeMap::new() };
                    }
                    entry.sent.entry(k.announcement.clone()).or_default().insert(target.to_string())
                })
                .collect()
        })
        .await
    }

    /// Undoes claims whose delivery failed, so the next run sends them.
    pub async fn release(&self, items: &[(OnceKey, Target)]) -> Result<(), StateError> {
        if items.is_empty() {
            return Ok(());
        }
        self.modify(|doc| {
            for (k, target) in items {
                if let Some(entry) = doc.pats.get_mut(&k.authorization_id.to_string())
                    && entry.valid_to == k.valid_to
                    && let Some(targets) = entry.sent.get_mut(&k.announcement)
                {
                    targets.remove(&target.to_string());
                    if targets.is_empty() {
                        entry.sent.remove(&k.announcement);
                    }
                }
            }
        })
        .await
    }

    /// Load, change, compare-and-swap; reloads and reapplies on a conflict.
    async fn modify<T>(&self, mut change: impl FnMut(&mut SentDoc) -> T) -> Result<T, StateError> {
        let mut last = None;
        for _ in 0..CAS_ATTEMPTS {
            let (mut doc, etag) = match self.store.load(&self.key).await? {
                None => (SentDoc { version: 1, pats: BTreeMap::new() }, None),
                Some((body, etag)) => {
                    let body = body.strip_prefix("\u{feff}".as_bytes()).unwrap_or(&body);
                    let doc = serde_json::from_slice(body).map_err(|e| StateError::Io {
                        key: self.key.clone(),
                        message: format!("notification state is not valid JSON: {e}"),
                    })?;
                    (doc, Some(etag))
                }
            };
            let out = change(&mut doc);
            let body = serde_json::to_vec_pretty(&doc)
                .map_err(|e| StateError::Io { key: self.key.clone(), message: e.to_string() })?;
            match self.store.save(&self.key, &body, etag.as_ref()).await {
                Ok(_) => return Ok(out),
                Err(e @ StateError::Conflict { .. }) => last = Some(e),
                Err(e) => return Err(e),
            }
        }
        Err(last.unwrap_or_else(|| StateError::Conflict { key: self.key.clone(), expected: None }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::OwnerId;
    use crate::state::FileStateStore;
    use time::macros::datetime;

    fn pat(id: &str, valid_to: OffsetDateTime) -> PatRef {
        PatRef {
            display_name: "build".into(),
            authorization_id: AuthorizationId::parse(id).unwrap(),
            organization: "contoso".into(),
            owner: OwnerId::parse("alice@contoso.com").unwrap(),
            valid_to,
            secret: None,
        }
    }

    const A: &str = "3f2504e0-4f89-11d3-9a0c-0305e82c3301";
    const B: &str = "7c9e6679-7425-40de-944b-e07fc1f90ae7";

    #[test]
    fn thresholds_validate_and_sort() {
        assert_eq!(Thresholds::new(&[1, 30, 7]).unwrap().days(), &[30, 7, 1]);
        assert!(Thresholds::new(&[]).is_err());
        assert!(Thresholds::new(&[0]).is_err());
        assert!(Thresholds::new(&[7, 7]).is_err());
        assert!(Thresholds::new(&[400]).is_err());
        let t: Thresholds = serde_json::from_str("[14, 3]").unwrap();
        assert_eq!(t.days(), &[14, 3]);
        assert!(serde_json::from_str::<Thresholds>("[0]").is_err());
    }

    #[test]
    fn due_threshold_is_the_most_urgent_reached() {
        let to = datetime!(2027-02-01 12:00 UTC);
        let p = pat(A, to);
        let t = Thresholds::default();
        let at = |d: i64, h: i64| to - Duration::days(d) - Duration::hours(h);
        assert_eq!(evaluate(&p, at(31, 0), &t), None);
        assert_eq!(evaluate(&p, at(30, 1), &t), None);
        let warn = |th, left| Some(Notice::ExpiryWarning { pat: p.clone(), threshold_days: th, days_left: left });
        assert_eq!(evaluate(&p, at(30, 0), &t), warn(30, 30));
        assert_eq!(evaluate(&p, at(20, 0), &t), warn(30, 20));
        assert_eq!(evaluate(&p, at(14, 0), &t), warn(14, 14));
        assert_eq!(evaluate(&p, at(6, 0), &t), warn(7, 6));
        assert_eq!(evaluate(&p, at(0, 3), &t), warn(1, 0));
        assert_eq!(evaluate(&p, to, &t), Some(Notice::PatExpired { pat: p.clone() }));
        assert_eq!(evaluate(&p, to + Duration::days(3), &t), Some(Notice::PatExpired { pat: p.clone() }));
    }

    proptest::proptest! {
        /// Whatever the times: expired ⇔ past validTo; otherwise the threshold is the smallest one not
        /// below the time left, and there is none when more time is left than the largest threshold.
        #[test]
        fn evaluate_picks_the_smallest_reached_threshold(secs_left in -40_000_000i64..40_000_000, pick in 0usize..4) {
            let sets: [&[u32]; 4] = [&[30, 14, 7, 1], &[1], &[90, 60, 30], &[365, 2]];
            let t = Thresholds::new(sets[pick]).unwrap();
            let to = datetime!(2027-06-01 00:00 UTC);
            let now = to - Duration::seconds(secs_left);
            let p = pat(A, to);
            match evaluate(&p, now, &t) {
                Some(Notice::PatExpired { .. }) => proptest::prop_assert!(secs_left <= 0),
                Some(Notice::ExpiryWarning { threshold_days, days_left, .. }) => {
                    proptest::prop_assert!(secs_left > 0);
                    proptest::prop_assert!(secs_left <= i64::from(threshold_days) * 86_400);
                    proptest::prop_assert_eq!(days_left, secs_left / 86_400);
                    for smaller in t.days().iter().filter(|d| **d < threshold_days) {
                        proptest::prop_assert!(secs_left > i64::from(*smaller) * 86_400);
                    }
                }
                None => proptest::prop_assert!(secs_left > i64::from(t.days()[0]) * 86_400),
                Some(other) => proptest::prop_assert!(false, "unexpected {:?}", other),
            }
        }
    }

    #[tokio::test]
    async fn each_announcement_once_per_target_and_pat() {
        let dir = tempfile::tempdir().unwrap();
        let ledger = ExpiryLedger::new(Arc::new(FileStateStore::new(dir.path())));
        let now = datetime!(2027-01-20 03:00 UTC);
        let to = datetime!(2027-02-01 12:00 UTC);
        let key = |id: &str, a: &str, to| OnceKey {
            authorization_id: AuthorizationId::parse(id).unwrap(),
            valid_to: to,
            announcement: a.into(),
        };
        let ops = Target::Email("ops@contoso.com".into());
        let items = vec![(key(A, "t14", to), ops.clone()), (key(A, "t14", to), Target::Teams)];
        assert_eq!(ledger.claim(&items, now).await.unwrap(), vec![true, true]);
        assert_eq!(ledger.claim(&items, now).await.unwrap(), vec![false, false]);
        // Next threshold of the same PAT, and the same threshold of a rotated PAT (new id), are new.
        let more = vec![(key(A, "t7", to), ops.clone()), (key(B, "t14", to), ops.clone())];
        assert_eq!(ledger.claim(&more, now).await.unwrap(), vec![true, true]);
        // Released (delivery failed): claimable again, once.
        ledger.release(&items[1..]).await.unwrap();
        assert_eq!(ledger.claim(&items, now).await.unwrap(), vec![false, true]);
        assert_eq!(ledger.claim(&items, now).await.unwrap(), vec![false, false]);
        // validTo extended: starts fresh.
        let later = to + Duration::days(30);
        assert_eq!(ledger.claim(&[(key(A, "t14", later), ops.clone())], now).await.unwrap(), vec![true]);
        // Entries of long-expired PATs are pruned.
        let much_later = later + Duration::days(200);
        ledger.claim(&[], much_later).await.unwrap();
        let (body, _) = FileStateStore::new(dir.path()).load(ExpiryLedger::KEY).await.unwrap().unwrap();
        let doc: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(doc["pats"].as_object().unwrap().len(), 0, "{doc}");
    }

    #[tokio::test]
    async fn concurrent_claims_never_both_win() {
        let dir = tempfile::tempdir().unwrap();
        let store: Arc<dyn StateStore> = Arc::new(FileStateStore::new(dir.path()));
        let now = datetime!(2027-01-20 03:00 UTC);
        let item = vec![(
            OnceKey {
                authorization_id: AuthorizationId::parse(A).unwrap(),
                valid_to: datetime!(2027-02-01 12:00 UTC),
                announcement: "t14".into(),
            },
            Target::Slack,
        )];
        let mut tasks = Vec::new();
        for _ in 0..6 {
            let ledger = ExpiryLedger::new(store.clone());
            let item = item.clone();
            tasks.push(tokio::spawn(async move { ledger.claim(&item, now).await.unwrap()[0] }));
        }
        let mut wins = 0;
        for t in tasks {
            wins += usize::from(t.await.unwrap());
        }
        assert_eq!(wins, 1);
    }
}
