//! The words of each [`Notice`]: a headline, the facts, and what a person should do — shared by every
//! channel so email, Teams, Slack and the generic webhook say the same thing.
//!
//! Pure functions. Every string that leaves here has passed the [`Redactor`]; critical notices always
//! carry an action.

use super::redact::Redactor;
use super::{Notice, PatRef, Severity};
use time::OffsetDateTime;

/// One notice in words.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Rendered {
    pub severity: Severity,
    /// `expiry_warning`, `rotation_failed`, … (the notice kind, stable for machine consumers).
    pub kind: &'static str,
    pub title: String,
    /// Label → value, in display order.
    pub facts: Vec<(String, String)>,
    /// What a person should do (always present for warnings and critical notices).
    pub action: Option<String>,
}

/// A time as people read it: `2027-01-07 15:00 UTC`.
pub fn human_time(t: OffsetDateTime) -> String {
    let t = t.to_offset(time::UtcOffset::UTC);
    format!("{:04}-{:02}-{:02} {:02}:{:02} UTC", t.year(), u8::from(t.month()), t.day(), t.hour(), t.minute())
}

fn days(n: i64) -> String {
    match n {
        i64::MIN..=0 => "less than a day".to_owned(),
        1 => "1 day".to_owned(),
        n => format!("{n} days"),
    }
}

fn pat_facts(pat: &PatRef) -> Vec<(String, String)> {
    let mut f = vec![
        ("Organization".to_owned(), pat.organization.clone()),
        ("Owner".to_owned(), pat.owner.to_string()),
        ("Expires".to_owned(), human_time(pat.valid_to)),
        ("Authorization id".to_owned(), pat.authorization_id.to_string()),
    ];
    f.push((
        "Managed by patrol".to_owned(),
        match &pat.secret {
            Some(s) => format!("yes, secret {s}"),
            None => "no".to_owned(),
        },
    ));
    f
}

/// The words of `notice`, cleaned by `redactor`.
pub fn render(notice: &Notice, redactor: &Redactor) -> Rendered {
    let severity = notice.severity();
    let (kind, title, facts, action): (&'static str, String, Vec<(String, String)>, Option<String>) = match notice {
        Notice::ExpiryWarning { pat, threshold_days, days_left } => {
            let title = format!(
                "PAT \"{}\" in {} expires in {} ({}-day warning)",
                pat.display_name,
                pat.organization,
                days(*days_left),
                threshold_days
            );
            let urgency = if severity == Severity::Critical { "Act today: " } else { "" };
            let action = match &pat.secret {
                Some(secret) => format!(
                    "{urgency}patrol manages this PAT through secret {secret} and rotates it before it expires. \
                     If no rotation report follows before {}, run `patrol rotate {secret}` or trigger RotateHttp, \
                     and check the run summary for the reason.",
                    human_time(pat.valid_to)
                ),
                None => format!(
                    "{urgency}patrol does not manage this PAT. Its owner ({}) should create a replacement and update \
                     whatever uses it before {} — or declare it in patrol.toml so patrol rotates it — then revoke \
                     the old PAT.",
                    pat.owner,
                    human_time(pat.valid_to)
                ),
            };
            ("expiry_warning", title, pat_facts(pat), Some(action))
        }
        Notice::PatExpired { pat } => {
            let title = format!("PAT \"{}\" in {} has expired", pat.display_name, pat.organization);
            let action = match &pat.secret {
                Some(secret) => format!(
                    "Anything still using this PAT now fails to authenticate. Rotate secret {secret} now \
                     (`patrol rotate {secret}` or RotateHttp) and check the run summary for why it was not rotated \
                     in time; consumers reading the secret pick up the new version."
                ),
                None => format!(
                    "Anything still using this PAT now fails to authenticate. Its owner ({}) must create a \
                     replacement and update its consumers; consider declaring it in patrol.toml so patrol \
                     rotates it from now on.",
                    pat.owner
                ),
            };
            ("pat_expired", title, pat_facts(pat), Some(action))
        }
        Notice::RotationSucceeded { secret, old_display_name, new_display_name, new_valid_to, stored_at } => {
            let mut facts = Vec::new();
            if let Some(old) = old_display_name {
                facts.push(("Previous PAT".to_owned(), old.clone()));
            }
            facts.push(("New PAT".to_owned(), new_display_name.clone()));
            facts.push(("New expiry".to_owned(), human_time(*new_valid_to)));
            facts.push(("Stored at".to_owned(), stored_at.clone()));
            (
                "rotation_succeeded",
                format!("Rotated {secret}: new PAT valid until {}", human_time(*new_valid_to)),
                facts,
                Some(
                    "Nothing to do: consumers that read the secret get the new version; the previous PAT is revoked \
                     after the grace period."
                        .to_owned(),
                ),
            )
        }
        Notice::RotationFailed { secret, step, error, next } => (
            "rotation_failed",
            format!("Rotation of {secret} failed at step {step}"),
            vec![
                ("Secret".to_owned(), secret.to_string()),
                ("Step".to_owned(), step.clone()),
                ("Error".to_owned(), error.clone()),
            ],
            Some(format!(
                "The current PAT stays in place. Next: {next}. If the same failure is reported again, fix the cause \
                 named in the error before the PAT expires."
            )),
        ),
        Notice::SignInRequired { owner, reason } if reason.contains(crate::devops::NOT_SIGNED_IN_YET) => (
            "sign_in_required",
            format!("{owner} has not signed in to patrol yet"),
            vec![("Owner".to_owned(), owner.to_string()), ("Reason".to_owned(), reason.clone())],
            Some(format!(
                "patrol cannot act for {owner} until they sign in (`patrol login --owner {owner}`, device-code \
                 sign-in): their PATs are neither rotated nor revoked and will expire."
            )),
        ),
        Notice::SignInRequired { owner, reason } => (
            "sign_in_required",
            format!("{owner} must sign in to patrol again"),
            vec![("Owner".to_owned(), owner.to_string()), ("Reason".to_owned(), reason.clone())],
            Some(format!(
                "patrol can no longer act for {owner}: until they sign in again (`patrol login --owner {owner}`, device-code \
                 sign-in) their PATs are neither rotated nor revoked and will expire."
            )),
        ),
        Notice::OutOfBandChange { secret, description } => (
            "out_of_band_change",
            format!("{secret} was changed outside patrol"),
            vec![("Secret".to_owned(), secret.to_string()), ("Change".to_owned(), description.clone())],
            Some(
                "Confirm who made this change. If nobody on your team did, treat the PAT as compromised: revoke it \
                 and rotate the secret with patrol now. If it was intended, no action is needed; patrol \
                 reconciles on its next run."
                    .to_owned(),
            ),
        ),
        Notice::PolicyRefusal { secret, error, explanation } => (
            "policy_refusal",
            format!("Azure DevOps refused the new PAT for {secret} ({error})"),
            vec![("Secret".to_owned(), secret.to_string()), ("Azure DevOps error".to_owned(), error.clone())],
            Some(format!(
                "{explanation} The current PAT stays in place until it expires; patrol retries on its next run."
            )),
        ),
        Notice::Finding { rule, severity: _, summary, evidence, action } => {
            let facts = evidence.iter().enumerate().map(|(i, e)| (format!("Evidence {}", i + 1), e.clone())).collect();
            ("finding", format!("{rule}: {summary}"), facts, Some(action.clone()))
        }
    };
    let allowed = identifiers(notice);
    let allowed: Vec<&str> = allowed.iter().map(String::as_str).collect();
    let clean = |s: &str| redactor.clean_allowing(s, &allowed);
    Rendered {
        severity,
        kind,
        title: clean(&title),
        facts: facts.into_iter().map(|(k, v)| (k, clean(&v))).collect(),
        action: action.map(|a| clean(&a)),
    }
}

/// The validated names a notice refers to: they may be long, but they are not secrets.
fn identifiers(notice: &Notice) -> Vec<String> {
    let pat_ids = |p: &PatRef| {
        let mut v = vec![p.display_name.clone(), p.organization.clone(), p.owner.to_string()];
        v.extend(p.secret.as_ref().map(ToString::to_string));
        v
    };
    match notice {
        Notice::ExpiryWarning { pat, .. } | Notice::PatExpired { pat } => pat_ids(pat),
        Notice::RotationSucceeded { secret, old_display_name, new_display_name, .. } => {
            let mut v = vec![secret.to_string(), new_display_name.clone()];
            v.extend(old_display_name.clone());
            v
        }
        Notice::RotationFailed { secret, .. }
        | Notice::OutOfBandChange { secret, .. }
        | Notice::PolicyRefusal { secret, .. } => vec![secret.to_string()],
        Notice::SignInRequired { owner, .. } => vec![owner.to_string()],
        Notice::Finding { .. } => Vec::new(),
    }
}

/// Escapes text for HTML element content and attribute values.
pub fn escape_html(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::{AuthorizationId, OwnerId, SecretName};
    use time::macros::datetime;

    fn pat(secret: Option<&str>) -> PatRef {
        PatRef {
            display_name: "build-agent".into(),
            authorization_id: AuthorizationId::parse("3f2504e0-4f89-11d3-9a0c-0305e82c3301").unwrap(),
            organization: "contoso".into(),
            owner: OwnerId::parse("alice@contoso.com").unwrap(),
            valid_to: datetime!(2027-01-07 15:00 UTC),
            secret: secret.map(|s| SecretName::parse(s).unwrap()),
        }
    }

    #[test]
    fn critical_notices_say_what_to_do() {
        let r = Redactor::new();
        let owner = OwnerId::parse("alice@contoso.com").unwrap();
        let secret = SecretName::parse("ado-build").unwrap();
        let critical = [
            Notice::PatExpired { pat: pat(None) },
            Notice::PatExpired { pat: pat(Some("ado-build")) },
            Notice::SignInRequired { owner, reason: "invalid_grant (AADSTS700082)".into() },
            Notice::OutOfBandChange { secret: secret.clone(), description: "new version without patrol tag".into() },
            Notice::PolicyRefusal {
                secret,
                error: "globalPatsNotAllowed".into(),
                explanation: "Your organization's policy allows no global PATs; scope it to one organization.".into(),
            },
            Notice::ExpiryWarning { pat: pat(None), threshold_days: 1, days_left: 0 },
        ];
        for n in &critical {
            let out = render(n, &r);
            assert_eq!(out.severity, Severity::Critical, "{n:?}");
            let action = out.action.unwrap();
            assert!(action.len() > 40, "{action}");
        }
        let refusal = render(&critical[4], &r);
        assert!(refusal.action.unwrap().starts_with("Your organization's policy allows no global PATs"));
        let unmanaged = render(&critical[0], &r);
        assert!(unmanaged.action.unwrap().contains("alice@contoso.com"));
    }

    #[test]
    fn an_owner_who_never_signed_in_is_asked_to_sign_in_not_to_sign_in_again() {
        let owner = OwnerId::parse("alice@contoso.com").unwrap();
        let never = crate::devops::DevOpsError::SignInRequired {
            owner: owner.clone(),
            reason: crate::devops::NEVER_SIGNED_IN.into(),
        };
        let out = render(&Notice::SignInRequired { owner: owner.clone(), reason: never.to_string() }, &Redactor::new());
        assert_eq!(out.title, "alice@contoso.com has not signed in to patrol yet");
        let action = out.action.unwrap();
        assert!(action.contains("`patrol login --owner alice@contoso.com`") && !action.contains("again"), "{action}");
        let expired =
            render(&Notice::SignInRequired { owner, reason: "invalid_grant (AADSTS700082)".into() }, &Redactor::new());
        assert_eq!(expired.title, "alice@contoso.com must sign in to patrol again");
    }

    #[test]
    fn expiry_wording() {
        let out = render(
            &Notice::ExpiryWarning { pat: pat(Some("ado-build")), threshold_days: 7, days_left: 6 },
            &Redactor::new(),
        );
        assert_eq!(out.title, "PAT \"build-agent\" in contoso expires in 6 days (7-day warning)");
        assert!(out.facts.iter().any(|(k, v)| k == "Expires" && v == "2027-01-07 15:00 UTC"));
        assert!(out.action.unwrap().contains("patrol rotate ado-build"));
    }

    #[test]
    fn free_text_is_redacted() {
        let secret = SecretName::parse("ado-build").unwrap();
        let leaked = "x".repeat(52);
        let out = render(
            &Notice::RotationFailed {
                secret,
                step: "store".into(),
                error: format!("server echoed {leaked}"),
                next: "retry tomorrow".into(),
            },
            &Redactor::new(),
        );
        assert!(!format!("{out:?}").contains(&leaked));
    }

    #[test]
    fn html_escape() {
        assert_eq!(escape_html("<a href=\"x\">&'"), "&lt;a href=&quot;x&quot;&gt;&amp;&#39;");
    }
}
