//! Consumers in `patrol.toml`: the `[[token.consumer]]` tables of a token and the policy-wide
//! `[consumers]` table, validated with file:line:field errors — every consumer error of the file at once.
//! The documented table of fields is `docs/policy.md` ("Consumers").

use super::PolicyError;
use crate::domain::{OrgName, SecretName};
use serde::{Deserialize, Serialize};
use std::collections::BTreeSet;
use toml::Spanned;

/// Default hard deadline for the revocation of a previous PAT whose consumers did not all move.
pub const DEFAULT_DEADLINE_HOURS: u32 = 168;
/// The GitHub REST API patrol talks to when the policy names none.
pub const DEFAULT_GITHUB_API: &str = "https://api.github.com";

/// A service connection type patrol knows how to write, with the authorization parameter that holds
/// the PAT for each scheme.
pub const SERVICE_CONNECTION_TYPES: &[(&str, &str, &str)] = &[
    ("generic", "UsernamePassword", "password"),
    ("externaltfs", "Token", "apitoken"),
    ("externalnugetfeed", "Token", "apitoken"),
    ("externalnugetfeed", "UsernamePassword", "password"),
    ("externalnpmregistry", "Token", "apitoken"),
    ("externalnpmregistry", "UsernamePassword", "password"),
    ("github", "PersonalAccessToken", "accessToken"),
];

/// The authorization parameter that holds the PAT for a (type, scheme), compared case-insensitively.
pub fn pat_parameter(kind: &str, scheme: &str) -> Option<&'static str> {
    SERVICE_CONNECTION_TYPES
        .iter()
        .find(|(t, s, _)| t.eq_ignore_ascii_case(kind) && s.eq_ignore_ascii_case(scheme))
        .map(|(_, _, p)| *p)
}

/// A service connection or variable group named by id or by name.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case", tag = "by", content = "value")]
pub enum ObjectRef {
    Id(String),
    Name(String),
}

impl std::fmt::Display for ObjectRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Id(i) => write!(f, "#{i}"),
            Self::Name(n) => write!(f, "{n:?}"),
        }
    }
}

/// Where a GitHub Actions secret lives.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case", tag = "level")]
pub enum GithubTarget {
    Repository { repository: String },
    Environment { repository: String, environment: String },
    Organization { org: String, visibility: String, selected_repository_ids: Vec<u64> },
}

/// What a consumer is and where it lives.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case", tag = "kind")]
pub enum ConsumerKind {
    /// Another secret (in the token's vault, or another vault) that must hold the same value.
    Keyvault {
        /// An https Key Vault URL (validated); `None`: the token's own store.
        vault: Option<String>,
        secret: SecretName,
    },
    DevopsServiceConnection {
        organization: OrgName,
        project: String,
        connection: ObjectRef,
        connection_type: String,
        scheme: String,
        /// The authorization parameter written (from [`SERVICE_CONNECTION_TYPES`]).
        parameter: String,
    },
    DevopsVariableGroup {
        organization: OrgName,
        project: String,
        group: ObjectRef,
        /// `None` for a Key Vault-linked group (inventory only).
        variable: Option<String>,
        key_vault_linked: bool,
    },
    GithubActionsSecret {
        target: GithubTarget,
        name: String,
    },
    Webhook {
        url_secret: SecretName,
        signing_secret: SecretName,
        ack: bool,
    },
    Reference {
        description: String,
        lag_hours: u32,
    },
}

/// One declared consumer of a token.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Consumer {
    /// Stable key (journal, reports): `<kind>:<where>`; unique within the token.
    pub id: String,
    #[serde(flatten)]
    pub kind: ConsumerKind,
    /// The line of the `[[token.consumer]]` table.
    #[serde(skip)]
    pub line: usize,
}

impl Consumer {
    /// patrol writes the new value to it (false: inventory only, or it reads the vault itself).
    pub fn is_written(&self) -> bool {
        match &self.kind {
            ConsumerKind::DevopsVariableGroup { key_vault_linked, .. } => !key_vault_linked,
            ConsumerKind::Reference { .. } => false,
            _ => true,
        }
    }

    /// Hours the consumer may lag behind the vault (reference consumers, App Service Key Vault references).
    pub fn lag_hours(&self) -> Option<u32> {
        match &self.kind {
            ConsumerKind::Reference { lag_hours, .. } => Some(*lag_hours),
            _ => None,
        }
    }

    pub fn kind_name(&self) -> &'static str {
        match &self.kind {
            ConsumerKind::Keyvault { .. } => "keyvault",
            ConsumerKind::DevopsServiceConnection { .. } => "devops-service-connection",
            ConsumerKind::DevopsVariableGroup { .. } => "devops-variable-group",
            ConsumerKind::GithubActionsSecret { .. } => "github-actions-secret",
            ConsumerKind::Webhook { .. } => "webhook",
            ConsumerKind::Reference { .. } => "reference",
        }
    }
}

/// The `[consumers]` table: what every consumer shares.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ConsumerSettings {
    /// Secret (in patrol's own store) holding patrol's GitHub credential (an App installation token or a
    /// fine-grained token with "Secrets: write").
    pub github_credential: Option<SecretName>,
    /// The GitHub REST API base URL (validated: https, or http on loopback).
    pub github_api: String,
    /// The previous PAT is revoked at the latest this long after the rotation, whether or not every
    /// consumer moved (with an alert naming those that did not).
    pub deadline_hours: u32,
}

impl Default for ConsumerSettings {
    fn default() -> Self {
        Self {
            github_credential: None,
            github_api: DEFAULT_GITHUB_API.to_owned(),
            deadline_hours: DEFAULT_DEADLINE_HOURS,
        }
    }
}

/// A token's consumers with the settings they share.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Default)]
pub struct Consumers {
    pub list: Vec<Consumer>,
    /// Shared by every token of the policy (one `[consumers]` table), not copied into each.
    pub settings: std::sync::Arc<ConsumerSettings>,
}

impl Consumers {
    pub fn is_empty(&self) -> bool {
        self.list.is_empty()
    }

    pub fn get(&self, id: &str) -> Option<&Consumer> {
        self.list.iter().find(|c| c.id == id)
    }
}

/// `[consumers]` as written.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawSettings {
    github_credential: Option<Spanned<String>>,
    github_api: Option<Spanned<String>>,
    deadline_hours: Option<Spanned<i64>>,
}

/// One `[[token.consumer]]` as written. Fields that do not apply to the kind are refused.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawConsumer {
    kind: Option<Spanned<String>>,
    // keyvault
    vault: Option<Spanned<String>>,
    secret: Option<Spanned<String>>,
    // Azure DevOps
    organization: Option<Spanned<String>>,
    project: Option<Spanned<String>>,
    connection: Option<Spanned<String>>,
    #[serde(rename = "type")]
    connection_type: Option<Spanned<String>>,
    scheme: Option<Spanned<String>>,
    group: Option<Spanned<toml::Value>>,
    variable: Option<Spanned<String>>,
    key_vault_linked: Option<Spanned<bool>>,
    // GitHub
    repository: Option<Spanned<String>>,
    environment: Option<Spanned<String>>,
    org: Option<Spanned<String>>,
    visibility: Option<Spanned<String>>,
    selected_repository_ids: Option<Spanned<Vec<i64>>>,
    name: Option<Spanned<String>>,
    // webhook
    url_secret: Option<Spanned<String>>,
    signing_secret: Option<Spanned<String>>,
    ack: Option<Spanned<bool>>,
    // reference
    description: Option<Spanned<String>>,
    lag_hours: Option<Spanned<i64>>,
}

/// What the validator needs from the policy parser.
pub struct Lines<'a> {
    pub file: &'a str,
    pub line_of: &'a dyn Fn(usize) -> usize,
}

impl Lines<'_> {
    fn err(&self, line: usize, field: &str, problem: impl Into<String>) -> PolicyError {
        PolicyError::new(self.file, line, field, problem)
    }

    fn at<T>(&self, s: &Spanned<T>, field: &str, problem: impl Into<String>) -> PolicyError {
        self.err((self.line_of)(s.span().start), field, problem)
    }
}

/// Validates `[consumers]`.
pub fn settings(raw: Option<&Spanned<RawSettings>>, l: &Lines<'_>, errors: &mut Vec<PolicyError>) -> ConsumerSettings {
    let mut out = ConsumerSettings::default();
    let Some(raw) = raw else { return out };
    let r = raw.get_ref();
    if let Some(g) = &r.github_credential {
        match SecretName::parse(g.get_ref()) {
            Ok(n) => out.github_credential = Some(n),
            Err(e) => errors.push(l.at(g, "consumers.github_credential", e.to_string())),
        }
    }
    if let Some(a) = &r.github_api {
        match url::Url::parse(a.get_ref()) {
            Ok(u) if u.scheme() == "https" || crate::config::is_loopback_url(&u) => out.github_api = u.to_string(),
            Ok(_) => errors.push(l.at(a, "consumers.github_api", "must be https (plain http only on loopback)")),
            Err(e) => errors.push(l.at(a, "consumers.github_api", format!("not a URL: {e}"))),
        }
    }
    if let Some(d) = &r.deadline_hours {
        let v = *d.get_ref();
        if !(1..=24 * 365).contains(&v) {
            errors.push(l.at(d, "consumers.deadline_hours", format!("{v} is outside 1..=8760 hours")));
        } else {
            out.deadline_hours = v as u32;
        }
    }
    out
}

/// The token fields the consumers of a token are checked against.
pub struct TokenContext<'a> {
    /// The token's index: fields are named `token[<index>]…`.
    pub index: usize,
    pub line: usize,
    pub secret: &'a SecretName,
    pub organization: Option<&'a OrgName>,
    pub grace_days: Option<u32>,
}

fn required<'v, T>(
    l: &Lines<'_>,
    v: &'v Option<Spanned<T>>,
    field: &str,
    line: usize,
    kind: &str,
    errors: &mut Vec<PolicyError>,
) -> Option<&'v Spanned<T>> {
    if v.is_none() {
        errors.push(l.err(line, field, format!("is required for kind = {kind:?}")));
    }
    v.as_ref()
}

fn plain_name(s: &str) -> bool {
    !s.trim().is_empty() && s.len() <= 256 && !s.chars().any(|c| c.is_control())
}

/// Validates the consumers of one token; errors go to `errors` (all of them), valid consumers are returned.
pub fn token_consumers(
    raw: Vec<Spanned<RawConsumer>>,
    t: &TokenContext<'_>,
    settings: &ConsumerSettings,
    settings_line: usize,
    l: &Lines<'_>,
    errors: &mut Vec<PolicyError>,
) -> Vec<Consumer> {
    let mut out: Vec<Consumer> = Vec::new();
    let mut ids = BTreeSet::new();
    for (j, rc) in raw.into_iter().enumerate() {
        let line = (l.line_of)(rc.span().start);
        let c = rc.into_inner();
        let p = format!("token[{}].consumer[{j}]", t.index);
        let f = |name: &str| format!("{p}.{name}");
        let before = errors.len();
        let Some(kind) = c.kind.as_ref() else {
            errors.push(l.err(line, &f("kind"), "is required (keyvault, devops-service-connection, devops-variable-group, github-actions-secret, webhook or reference)"));
            continue;
        };
        // Which fields each kind accepts; anything else set is refused.
        let allowed: &[&str] = match kind.get_ref().as_str() {
            "keyvault" => &["vault", "secret"],
            "devops-service-connection" => &["organization", "project", "connection", "type", "scheme"],
            "devops-variable-group" => &["organization", "project", "group", "variable", "key_vault_linked"],
            "github-actions-secret" => {
                &["repository", "environment", "org", "visibility", "selected_repository_ids", "name"]
            }
            "webhook" => &["url_secret", "signing_secret", "ack"],
            "reference" => &["description", "lag_hours"],
            other => {
                errors.push(l.at(
                    kind,
                    &f("kind"),
                    format!("unknown consumer kind {other:?}; known: keyvault, devops-service-connection, devops-variable-group, github-actions-secret, webhook, reference"),
                ));
                continue;
            }
        };
        let present: [(&str, Option<usize>); 21] = [
            ("vault", c.vault.as_ref().map(|s| s.span().start)),
            ("secret", c.secret.as_ref().map(|s| s.span().start)),
            ("organization", c.organization.as_ref().map(|s| s.span().start)),
            ("project", c.project.as_ref().map(|s| s.span().start)),
            ("connection", c.connection.as_ref().map(|s| s.span().start)),
            ("type", c.connection_type.as_ref().map(|s| s.span().start)),
            ("scheme", c.scheme.as_ref().map(|s| s.span().start)),
            ("group", c.group.as_ref().map(|s| s.span().start)),
            ("variable", c.variable.as_ref().map(|s| s.span().start)),
            ("key_vault_linked", c.key_vault_linked.as_ref().map(|s| s.span().start)),
            ("repository", c.repository.as_ref().map(|s| s.span().start)),
            ("environment", c.environment.as_ref().map(|s| s.span().start)),
            ("org", c.org.as_ref().map(|s| s.span().start)),
            ("visibility", c.visibility.as_ref().map(|s| s.span().start)),
            ("selected_repository_ids", c.selected_repository_ids.as_ref().map(|s| s.span().start)),
            ("name", c.name.as_ref().map(|s| s.span().start)),
            ("url_secret", c.url_secret.as_ref().map(|s| s.span().start)),
            ("signing_secret", c.signing_secret.as_ref().map(|s| s.span().start)),
            ("ack", c.ack.as_ref().map(|s| s.span().start)),
            ("description", c.description.as_ref().map(|s| s.span().start)),
            ("lag_hours", c.lag_hours.as_ref().map(|s| s.span().start)),
        ];
        for (name, at) in present {
            if let Some(at) = at
                && !allowed.contains(&name)
            {
                errors.push(l.err(
                    (l.line_of)(at),
                    &f(name),
                    format!("does not apply to kind = {:?} (it takes: {})", kind.get_ref(), allowed.join(", ")),
                ));
            }
        }
        let k = kind.get_ref().as_str();
        let org_of = |errors: &mut Vec<PolicyError>| -> Option<OrgName> {
            match &c.organization {
                Some(o) => match OrgName::parse(o.get_ref()) {
                    Ok(v) => Some(v),
                    Err(e) => {
                        errors.push(l.at(o, &f("organization"), e.to_string()));
                        None
                    }
                },
                None => match t.organization {
                    Some(o) => Some(o.clone()),
                    None => {
                        errors.push(l.err(line, &f("organization"), "is required (the token names none)"));
                        None
                    }
                },
            }
        };
        let text = |v: &Option<Spanned<String>>, name: &str, errors: &mut Vec<PolicyError>| -> Option<String> {
            let s = required(l, v, &f(name), line, k, errors)?;
            if plain_name(s.get_ref()) {
                Some(s.get_ref().trim().to_owned())
            } else {
                errors.push(l.at(s, &f(name), "must be a non-empty name without control characters"));
                None
            }
        };
        let secret_name = |v: &Option<Spanned<String>>, name: &str, errors: &mut Vec<PolicyError>| {
            let s = required(l, v, &f(name), line, k, errors)?;
            match SecretName::parse(s.get_ref()) {
                Ok(n) => Some(n),
                Err(e) => {
                    errors.push(l.at(s, &f(name), e.to_string()));
                    None
                }
            }
        };
        let built: Option<(String, ConsumerKind)> = match k {
            "keyvault" => {
                let vault = match &c.vault {
                    None => None,
                    Some(v) => match url::Url::parse(v.get_ref()) {
                        Ok(u) if u.scheme() == "https" => Some(u.to_string()),
                        Ok(_) => {
                            errors.push(l.at(v, &f("vault"), "must be an https Key Vault URL"));
                            None
                        }
                        Err(e) => {
                            errors.push(l.at(v, &f("vault"), format!("not a URL: {e}")));
                            None
                        }
                    },
                };
                let secret = secret_name(&c.secret, "secret", errors);
                if let Some(s) = &secret
                    && vault.is_none()
                    && s == t.secret
                {
                    errors.push(l.err(
                        line,
                        &f("secret"),
                        "is the token's own secret, which patrol always writes; name another secret or vault",
                    ));
                }
                secret.map(|secret| {
                    let at = vault
                        .as_ref()
                        .and_then(|v| url::Url::parse(v).ok())
                        .and_then(|u| u.host_str().map(str::to_owned))
                        .unwrap_or_default();
                    (format!("keyvault:{at}/{secret}"), ConsumerKind::Keyvault { vault, secret })
                })
            }
            "devops-service-connection" => {
                let organization = org_of(errors);
                let project = text(&c.project, "project", errors);
                let connection = text(&c.connection, "connection", errors).map(|s| match uuid::Uuid::parse_str(&s) {
                    Ok(u) => ObjectRef::Id(u.to_string()),
                    Err(_) => ObjectRef::Name(s),
                });
                let ty = text(&c.connection_type, "type", errors);
                let scheme = text(&c.scheme, "scheme", errors);
                let parameter = match (&ty, &scheme) {
                    (Some(ty), Some(scheme)) => match pat_parameter(ty, scheme) {
                        Some(p) => Some(p.to_owned()),
                        None => {
                            let known: Vec<String> =
                                SERVICE_CONNECTION_TYPES.iter().map(|(t, s, _)| format!("{t}/{s}")).collect();
                            let at = c.scheme.as_ref().or(c.connection_type.as_ref());
                            errors.push(match at {
                                Some(a) => l.at(a, &f("scheme"), format!(
                                    "patrol does not know which parameter of a {ty:?} connection with scheme {scheme:?} holds the PAT; known type/scheme pairs: {}",
                                    known.join(", ")
                                )),
                                None => l.err(line, &f("scheme"), "unknown type/scheme"),
                            });
                            None
                        }
                    },
                    _ => None,
                };
                match (organization, project, connection, ty, scheme, parameter) {
                    (Some(organization), Some(project), Some(connection), Some(ty), Some(scheme), Some(parameter)) => {
                        Some((
                            format!("service-connection:{organization}/{project}/{}", ref_text(&connection)),
                            ConsumerKind::DevopsServiceConnection {
                                organization,
                                project,
                                connection,
                                connection_type: ty.to_ascii_lowercase(),
                                scheme,
                                parameter,
                            },
                        ))
                    }
                    _ => None,
                }
            }
            "devops-variable-group" => {
                let organization = org_of(errors);
                let project = text(&c.project, "project", errors);
                let group = match required(l, &c.group, &f("group"), line, k, errors) {
                    None => None,
                    Some(g) => match g.get_ref() {
                        toml::Value::Integer(n) if *n > 0 => Some(ObjectRef::Id(n.to_string())),
                        toml::Value::String(s) if plain_name(s) => match s.trim().parse::<u64>() {
                            Ok(n) if n > 0 => Some(ObjectRef::Id(n.to_string())),
                            _ => Some(ObjectRef::Name(s.trim().to_owned())),
                        },
                        _ => {
                            errors.push(l.at(g, &f("group"), "must be the group's id (a positive number) or its name"));
                            None
                        }
                    },
                };
                let linked = c.key_vault_linked.as_ref().is_some_and(|v| *v.get_ref());
                let variable = if linked {
                    if let Some(v) = &c.variable {
                        errors.push(l.at(
                            v,
                            &f("variable"),
                            "a Key Vault-linked group reads the vault itself; patrol writes no variable (drop `variable` or key_vault_linked)",
                        ));
                    }
                    None
                } else {
                    text(&c.variable, "variable", errors)
                };
                match (organization, project, group) {
                    (Some(organization), Some(project), Some(group)) if linked || variable.is_some() => Some((
                        format!(
                            "variable-group:{organization}/{project}/{}{}",
                            ref_text(&group),
                            variable.as_ref().map(|v| format!("/{v}")).unwrap_or_default()
                        ),
                        ConsumerKind::DevopsVariableGroup {
                            organization,
                            project,
                            group,
                            variable,
                            key_vault_linked: linked,
                        },
                    )),
                    _ => None,
                }
            }
            "github-actions-secret" => {
                let name = text(&c.name, "name", errors);
                if let (Some(n), Some(raw)) = (&name, &c.name)
                    && (!n.chars().all(|ch| ch.is_ascii_alphanumeric() || ch == '_')
                        || n.starts_with(|ch: char| ch.is_ascii_digit())
                        || n.to_ascii_uppercase().starts_with("GITHUB_"))
                {
                    errors.push(l.at(
                        raw,
                        &f("name"),
                        "GitHub secret names are letters, digits and _, must not start with a digit or GITHUB_",
                    ));
                }
                if settings.github_credential.is_none() {
                    errors.push(l.err(
                        settings_line.max(line),
                        "consumers.github_credential",
                        format!(
                            "is required by {} (kind = \"github-actions-secret\"): name the secret in patrol's store that holds patrol's GitHub credential",
                            f("kind")
                        ),
                    ));
                }
                let target = match (&c.repository, &c.org) {
                    (Some(_), Some(o)) => {
                        errors.push(l.at(
                            o,
                            &f("org"),
                            "set either repository (with an optional environment) or org, not both",
                        ));
                        None
                    }
                    (None, None) => {
                        errors.push(l.err(line, &f("repository"), "is required (or org for an organization secret)"));
                        None
                    }
                    (Some(r), None) => {
                        let repo = r.get_ref().trim();
                        let ok = repo.split_once('/').is_some_and(|(a, b)| gh_name(a) && gh_name(b));
                        if !ok {
                            errors.push(l.at(r, &f("repository"), "must be \"owner/name\""));
                        }
                        for (v, n) in [(&c.visibility, "visibility")] {
                            if let Some(v) = v {
                                errors.push(l.at(v, &f(n), "applies to organization secrets only"));
                            }
                        }
                        if let Some(v) = &c.selected_repository_ids {
                            errors.push(l.at(v, &f("selected_repository_ids"), "applies to organization secrets only"));
                        }
                        match &c.environment {
                            Some(e) if plain_name(e.get_ref()) => ok.then(|| GithubTarget::Environment {
                                repository: repo.to_owned(),
                                environment: e.get_ref().trim().to_owned(),
                            }),
                            Some(e) => {
                                errors.push(l.at(e, &f("environment"), "must be a non-empty name"));
                                None
                            }
                            None => ok.then(|| GithubTarget::Repository { repository: repo.to_owned() }),
                        }
                    }
                    (None, Some(o)) => {
                        if let Some(e) = &c.environment {
                            errors.push(l.at(e, &f("environment"), "applies to repository secrets only"));
                        }
                        let org_ok = gh_name(o.get_ref());
                        if !org_ok {
                            errors.push(l.at(o, &f("org"), "must be a GitHub organization login"));
                        }
                        let visibility = match &c.visibility {
                            None => {
                                errors.push(l.err(
                                    line,
                                    &f("visibility"),
                                    "is required for an organization secret (all, private or selected)",
                                ));
                                None
                            }
                            Some(v) if ["all", "private", "selected"].contains(&v.get_ref().as_str()) => {
                                Some(v.get_ref().clone())
                            }
                            Some(v) => {
                                errors.push(l.at(v, &f("visibility"), "must be all, private or selected"));
                                None
                            }
                        };
                        let ids: Vec<u64> = c
                            .selected_repository_ids
                            .as_ref()
                            .map(|v| v.get_ref().iter().filter(|n| **n > 0).map(|n| *n as u64).collect())
                            .unwrap_or_default();
                        if visibility.as_deref() == Some("selected") && ids.is_empty() {
                            errors.push(l.err(
                                line,
                                &f("selected_repository_ids"),
                                "is required with visibility = \"selected\" (positive repository ids)",
                            ));
                        }
                        if visibility.as_deref().is_some_and(|v| v != "selected")
                            && let Some(s) = &c.selected_repository_ids
                        {
                            errors.push(l.at(
                                s,
                                &f("selected_repository_ids"),
                                "applies only with visibility = \"selected\"",
                            ));
                        }
                        match visibility {
                            Some(visibility) if org_ok => Some(GithubTarget::Organization {
                                org: o.get_ref().trim().to_owned(),
                                visibility,
                                selected_repository_ids: ids,
                            }),
                            _ => None,
                        }
                    }
                };
                match (target, name) {
                    (Some(target), Some(name)) => {
                        let at = match &target {
                            GithubTarget::Repository { repository } => repository.clone(),
                            GithubTarget::Environment { repository, environment } => {
                                format!("{repository}/environments/{environment}")
                            }
                            GithubTarget::Organization { org, .. } => format!("orgs/{org}"),
                        };
                        Some((format!("github:{at}/{name}"), ConsumerKind::GithubActionsSecret { target, name }))
                    }
                    _ => None,
                }
            }
            "webhook" => {
                let url_secret = secret_name(&c.url_secret, "url_secret", errors);
                let signing_secret = secret_name(&c.signing_secret, "signing_secret", errors);
                // With ack = true the consumer's signed acknowledgement to RotateHttp is its evidence of use.
                let ack = c.ack.as_ref().is_some_and(|v| *v.get_ref());
                match (url_secret, signing_secret) {
                    (Some(u), Some(s)) => {
                        Some((format!("webhook:{u}"), ConsumerKind::Webhook { url_secret: u, signing_secret: s, ack }))
                    }
                    _ => None,
                }
            }
            "reference" => {
                let description = text(&c.description, "description", errors);
                let lag = match required(l, &c.lag_hours, &f("lag_hours"), line, k, errors) {
                    None => None,
                    Some(v) => {
                        let h = *v.get_ref();
                        if !(0..=i64::from(settings.deadline_hours)).contains(&h) {
                            errors.push(l.at(
                                v,
                                &f("lag_hours"),
                                format!(
                                    "{h} is outside 0..={} hours (consumers.deadline_hours: the previous PAT is revoked then anyway)",
                                    settings.deadline_hours
                                ),
                            ));
                            None
                        } else {
                            Some(h as u32)
                        }
                    }
                };
                match (description, lag) {
                    (Some(d), Some(lag_hours)) => {
                        let slug: String = d
                            .chars()
                            .map(|ch| if ch.is_alphanumeric() { ch.to_ascii_lowercase() } else { '-' })
                            .take(60)
                            .collect();
                        Some((format!("reference:{slug}"), ConsumerKind::Reference { description: d, lag_hours }))
                    }
                    _ => None,
                }
            }
            _ => None,
        };
        if errors.len() > before {
            continue;
        }
        if let Some((id, kind)) = built {
            if !ids.insert(id.clone()) {
                errors.push(l.err(line, &f("kind"), format!("declares consumer {id} twice for this token")));
                continue;
            }
            out.push(Consumer { id, kind, line });
        }
    }
    if !out.is_empty()
        && let Some(g) = t.grace_days
        && u64::from(g) * 24 > u64::from(settings.deadline_hours)
    {
        errors.push(l.err(
            settings_line.max(t.line),
            "consumers.deadline_hours",
            format!(
                "{} hours is shorter than the grace period of token[{}] ({g} days); the deadline counts from the rotation",
                settings.deadline_hours, t.index
            ),
        ));
    }
    out
}

fn gh_name(s: &str) -> bool {
    !s.is_empty() && s.len() <= 100 && s.chars().all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
}

fn ref_text(r: &ObjectRef) -> String {
    match r {
        ObjectRef::Id(i) => i.clone(),
        ObjectRef::Name(n) => n.clone(),
    }
}

/// Folds many errors into one [`PolicyError`]: the first one in line order, the others in `also`.
pub fn combine(errors: Vec<PolicyError>) -> Option<PolicyError> {
    PolicyError::from_list(errors)
}
