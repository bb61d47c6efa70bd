//! `patrol check`: validates the policy (`patrol.toml`) and the settings offline — every error at once — and
//! warns about choices that are legal but risky. Reads the environment and the policy file; opens no store,
//! calls nothing, writes nothing.

use super::CliError;
use super::output::{OutputArgs, Table, render, write_stdout};
use crate::config::{Settings, Source};
use crate::rotation::policy::Policy;
use serde::Serialize;

pub const AFTER_HELP: &str = "\
Examples:
  patrol check
  PATROL_POLICY_FILE=infra/patrol.toml patrol check --format json

JSON (docs/schemas/check.schema.json):
  {policy_file, ok, tokens, errors, warnings}
  errors[], warnings[]: source (policy or settings), location, field,
                        problem

Exit codes: 0 valid (warnings are printed), 2 at least one error.";

#[derive(Debug, clap::Args)]
pub struct CheckArgs {
    #[command(flatten)]
    pub output: OutputArgs,
}

/// One problem: where (`patrol.toml:12` or the setting's name) and what.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Finding {
    /// `policy` or `settings`.
    pub source: &'static str,
    /// `file:line` for the policy (`file` when there is no line), the setting's name for settings.
    pub location: String,
    /// The policy field (`token[1].grace_days`) or the setting (`PATROL_KEYVAULT_URL`).
    pub field: String,
    pub problem: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct CheckView {
    pub policy_file: String,
    pub ok: bool,
    /// Managed tokens the policy declares (0 when it has errors).
    pub tokens: usize,
    pub errors: Vec<Finding>,
    pub warnings: Vec<Finding>,
}

fn setting(name: &str, problem: impl Into<String>) -> Finding {
    Finding { source: "settings", location: name.to_owned(), field: name.to_owned(), problem: problem.into() }
}

fn policy_at(policy: &Policy, line: usize, field: &str, problem: impl Into<String>) -> Finding {
    let file = policy.file.display().to_string();
    Finding {
        source: "policy",
        location: if line == 0 { file } else { format!("{file}:{line}") },
        field: field.to_owned(),
        problem: problem.into(),
    }
}

/// Everything `patrol check` finds, from the environment `src`.
pub fn check(src: &Source) -> CheckView {
    let mut errors = Vec::new();
    let settings = match Settings::from_source_all(src) {
        Ok(s) => Some(s),
        Err(e) => {
            errors.extend(e.0.into_iter().map(|e| setting(&e.setting, e.problem)));
            None
        }
    };
    // The policy file's name even when the settings are broken (PATROL_POLICY_FILE's default).
    let policy_file = settings.as_ref().map(|s| s.policy_file.clone()).unwrap_or_else(|| {
        src.get("PATROL_POLICY_FILE").map(std::path::PathBuf::from).unwrap_or_else(|| "patrol.toml".into())
    });
    let policy = match Policy::load(&policy_file) {
        Ok(p) => Some(p),
        Err(e) => {
            for e in e.all() {
                errors.push(Finding {
                    source: "policy",
                    location: if e.line == 0 { e.file.clone() } else { format!("{}:{}", e.file, e.line) },
                    field: e.field.clone(),
                    problem: e.problem.clone(),
                });
            }
            None
        }
    };
    let mut warnings = Vec::new();
    if let Some(s) = &settings {
        errors.extend(s.environment_errors(src).into_iter().map(|e| setting(&e.setting, e.problem)));
        if s.keyvault.is_some() && s.own_keyvault.is_none() {
            warnings.extend(s.trust_warnings().into_iter().map(|w| setting("PATROL_OWN_KEYVAULT_URL", w)));
        }
    }
    if let Some(p) = &policy {
        warnings.extend(policy_warnings(p));
        if let Some(s) = &settings {
            errors.extend(placement_errors(p, s));
        }
    }
    CheckView {
        policy_file: policy_file.display().to_string(),
        ok: errors.is_empty(),
        tokens: policy.as_ref().map_or(0, |p| p.tokens.len()),
        errors,
        warnings,
    }
}

/// Tokens naming a consumer vault the settings do not configure (refused when the stores open).
pub fn placement_errors(p: &Policy, s: &Settings) -> Vec<Finding> {
    let mut out = Vec::new();
    for (i, t) in p.tokens.iter().enumerate() {
        let Some(v) = &t.vault else { continue };
        let known: Vec<&str> = s.consumer_vaults.iter().map(|c| c.name.as_str()).collect();
        if !known.iter().any(|k| k.eq_ignore_ascii_case(v)) {
            out.push(policy_at(
                p,
                t.line,
                &format!("token[{i}].vault"),
                if known.is_empty() {
                    format!("names the vault {v:?}, but no Key Vault is configured (PATROL_KEYVAULT_URL)")
                } else {
                    format!(
                        "names the vault {v:?}, which is not configured (PATROL_KEYVAULT_URL, \
                         PATROL_CONSUMER_KEYVAULTS name: {})",
                        known.join(", ")
                    )
                },
            ));
        }
    }
    out
}

/// Legal but risky: what will nag people, break later or leave a gap.
pub fn policy_warnings(p: &Policy) -> Vec<Finding> {
    let mut out = Vec::new();
    for (i, t) in p.tokens.iter().enumerate() {
        let f = |name: &str| format!("token[{i}].{name}");
        if let Some(&top) = t.expiry_thresholds.first()
            && top >= t.validity_days
        {
            out.push(policy_at(
                p,
                t.line,
                &f("expiry_thresholds"),
                format!(
                    "a {top}-day warning on a {}-day PAT fires as soon as each new PAT exists; keep thresholds below \
                     validity_days (patrol rotates {} days before expiry)",
                    t.validity_days, t.rotate_before_days
                ),
            ));
        }
        let grace_hours = t.grace_days * 24;
        for c in &t.consumers.list {
            if let Some(lag) = c.lag_hours()
                && lag > grace_hours
            {
                out.push(policy_at(
                    p,
                    t.line,
                    &f("grace_days"),
                    format!(
                        "consumer {} may lag {lag} hours behind the vault, longer than the {}-day grace period: the \
                         previous PAT waits for it (up to consumers.deadline_hours) instead of being revoked when the \
                         grace ends; raise grace_days to at least {} or lower lag_hours",
                        c.id,
                        t.grace_days,
                        lag.div_ceil(24)
                    ),
                ));
            }
        }
        if t.grace_days == 0 {
            out.push(policy_at(
                p,
                t.line,
                &f("grace_days"),
                "0: the previous PAT is revoked at the first run after the rotation; a consumer that has not yet read \
                 the new one fails",
            ));
        }
        if t.all_orgs {
            out.push(policy_at(
                p,
                t.line,
                &f("all_orgs"),
                "all-organization PATs stopped working on 2026-12-01: Azure DevOps refuses to create them and \
                 rejects the ones that exist; remove all_orgs",
            ));
        }
        if t.allow_full_access && t.scopes.is_full_access() {
            out.push(policy_at(
                p,
                t.line,
                &f("scopes"),
                "a full-access PAT (app_token) can do anything its owner can; name the vso.* scopes it needs",
            ));
        }
        if t.notify.is_empty() {
            out.push(policy_at(
                p,
                t.line,
                &f("notify"),
                "no one is notified about this token (failures, expiry, compromise); set notify on the token or in \
                 [defaults]",
            ));
        }
    }
    out
}

impl CheckView {
    fn table(&self) -> Table {
        let mut t = Table::new(&["LEVEL", "WHERE", "FIELD", "PROBLEM"]);
        for (level, list) in [("error", &self.errors), ("warning", &self.warnings)] {
            for f in list {
                t.push(vec![level.into(), f.location.clone(), f.field.clone(), f.problem.clone()]);
            }
        }
        t
    }

    fn verdict(&self) -> String {
        if self.ok {
            format!("{}: valid, {} token(s), {} warning(s)\n", self.policy_file, self.tokens, self.warnings.len())
        } else {
            format!("{}: {} error(s), {} warning(s)\n", self.policy_file, self.errors.len(), self.warnings.len())
        }
    }
}

pub async fn run(args: &CheckArgs) -> Result<(), CliError> {
    let view = check(&Source::from_env());
    let t = view.table();
    write_stdout(&render(
        args.output.format,
        &view,
        || if t.rows.is_empty() { view.verdict() } else { format!("{}\n{}", t.to_text(), view.verdict()) },
        || format!("{}\n{}", t.to_markdown(), view.verdict()),
    )?)?;
    if !view.ok {
        return Err(CliError::usage(format!("{} error(s); nothing was changed", view.errors.len())));
    }
    Ok(())
}
