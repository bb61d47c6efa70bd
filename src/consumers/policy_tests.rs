use super::policy::*;
use crate::policy::{Policy, PolicyError};
use std::path::Path;

const BASE: &str = r#"[defaults]
organization = "fabrikam"
owner = "svc-ci@contoso.com"
validity_days = 30
rotate_before_days = 7
grace_days = 2

[consumers]
github_credential = "patrol-github-token"
deadline_hours = 96

[[token]]
secret = "ci-build-pat"
display_name = "CI build"
scopes = "vso.build_execute vso.code"
"#;

const ALL_KINDS: &str = r#"
[[token.consumer]]
kind = "keyvault"
vault = "https://team-a.vault.azure.net"
secret = "team-a-ci-pat"

[[token.consumer]]
kind = "devops-service-connection"
project = "web"
connection = "npm-feed"
type = "externalnpmregistry"
scheme = "Token"

[[token.consumer]]
kind = "devops-service-connection"
organization = "contoso"
project = "web"
connection = "106a0c71-70fe-4d96-ba5c-5b6548708d15"
type = "generic"
scheme = "UsernamePassword"

[[token.consumer]]
kind = "devops-variable-group"
project = "web"
group = 7
variable = "AZDO_PAT"

[[token.consumer]]
kind = "devops-variable-group"
project = "web"
group = "vault-linked"
key_vault_linked = true

[[token.consumer]]
kind = "github-actions-secret"
repository = "octo/app"
environment = "prod"
name = "AZDO_PAT"

[[token.consumer]]
kind = "github-actions-secret"
org = "octo"
visibility = "selected"
selected_repository_ids = [1296269]
name = "AZDO_PAT"

[[token.consumer]]
kind = "webhook"
url_secret = "hook-url-team-a"
signing_secret = "hook-key-team-a"

[[token.consumer]]
kind = "reference"
description = "App Service web-prod Key Vault reference"
lag_hours = 24
"#;

fn parse(text: &str) -> Result<Policy, PolicyError> {
    Policy::parse(Path::new("patrol.toml"), text)
}

fn line_of(text: &str, needle: &str) -> usize {
    text.lines().position(|l| l.contains(needle)).unwrap() + 1
}

#[test]
fn every_kind_is_accepted_with_its_defaults() {
    let p = parse(&format!("{BASE}{ALL_KINDS}")).unwrap();
    let c = &p.tokens[0].consumers;
    assert_eq!(c.list.len(), 9);
    assert_eq!(c.settings.deadline_hours, 96);
    assert_eq!(c.settings.github_credential.as_ref().unwrap().as_str(), "patrol-github-token");
    match &c.list[1].kind {
        ConsumerKind::DevopsServiceConnection { organization, parameter, connection, .. } => {
            assert_eq!(organization.as_str(), "fabrikam", "the token's organization is the default");
            assert_eq!(parameter, "apitoken");
            assert_eq!(connection, &ObjectRef::Name("npm-feed".into()));
        }
        other => panic!("{other:?}"),
    }
    match &c.list[2].kind {
        ConsumerKind::DevopsServiceConnection { parameter, connection, .. } => {
            assert_eq!(parameter, "password");
            assert!(matches!(connection, ObjectRef::Id(_)));
        }
        other => panic!("{other:?}"),
    }
    assert!(c.list[3].is_written());
    assert!(!c.list[4].is_written(), "a Key Vault-linked group is inventory only");
    assert!(!c.list[8].is_written());
    assert_eq!(c.list[8].lag_hours(), Some(24));
    let ids: Vec<&str> = c.list.iter().map(|c| c.id.as_str()).collect();
    assert!(ids.contains(&"variable-group:fabrikam/web/7/AZDO_PAT"), "{ids:?}");
    assert!(ids.contains(&"github:octo/app/environments/prod/AZDO_PAT"), "{ids:?}");
    assert!(ids.contains(&"github:orgs/octo/AZDO_PAT"), "{ids:?}");
    // The lines point at each [[token.consumer]] table.
    assert_eq!(c.list[0].line, BASE.lines().count() + 2);
}

#[test]
fn a_token_without_consumers_has_none() {
    let p = parse(BASE).unwrap();
    assert!(p.tokens[0].consumers.is_empty());
}

#[test]
fn every_consumer_error_is_reported_at_once_with_file_line_and_field() {
    let text = format!(
        "{BASE}
[[token.consumer]]
kind = \"ftp\"

[[token.consumer]]
kind = \"devops-service-connection\"
project = \"web\"
connection = \"azure-prod\"
type = \"azurerm\"
scheme = \"ServicePrincipal\"

[[token.consumer]]
kind = \"devops-variable-group\"
project = \"web\"
group = \"linked\"
key_vault_linked = true
variable = \"X\"

[[token.consumer]]
kind = \"webhook\"
url_secret = \"hook\"
lag_hours = 3
"
    );
    let e = parse(&text).unwrap_err();
    let all = e.to_string();
    let lines: Vec<&str> = all.lines().collect();
    assert_eq!(lines.len(), 5, "{all}");
    assert!(
        all.contains(&format!(
            "patrol.toml:{}: token[0].consumer[0].kind: unknown consumer kind \"ftp\"",
            line_of(&text, "\"ftp\"")
        )),
        "{all}"
    );
    assert!(
        all.contains(&format!("patrol.toml:{}: token[0].consumer[1].scheme:", line_of(&text, "ServicePrincipal"))),
        "{all}"
    );
    assert!(all.contains("does not know which parameter"), "{all}");
    assert!(
        all.contains(&format!("patrol.toml:{}: token[0].consumer[2].variable:", line_of(&text, "variable = \"X\""))),
        "{all}"
    );
    assert!(all.contains("token[0].consumer[3].signing_secret: is required"), "{all}");
    assert!(
        all.contains(&format!(
            "patrol.toml:{}: token[0].consumer[3].lag_hours: does not apply",
            line_of(&text, "lag_hours = 3")
        )),
        "{all}"
    );
    assert_eq!(e.line, line_of(&text, "\"ftp\""), "the first error's position");
}

#[test]
fn a_github_consumer_needs_patrols_github_credential() {
    let text = format!(
        "{}\n[[token.consumer]]\nkind = \"github-actions-secret\"\nrepository = \"octo/app\"\nname = \"PAT\"\n",
        BASE.replace("github_credential = \"patrol-github-token\"\n", "")
    );
    let e = parse(&text).unwrap_err();
    assert_eq!(e.field, "consumers.github_credential", "{e}");
    assert!(e.problem.contains("token[0].consumer[0].kind"), "{e}");
}

#[test]
fn github_targets_are_checked() {
    for (body, field) in [
        ("repository = \"octo\"\nname = \"PAT\"", "repository"),
        ("repository = \"octo/app\"\norg = \"octo\"\nname = \"PAT\"", "org"),
        ("org = \"octo\"\nname = \"PAT\"", "visibility"),
        ("org = \"octo\"\nvisibility = \"selected\"\nname = \"PAT\"", "selected_repository_ids"),
        ("repository = \"octo/app\"\nname = \"GITHUB_TOKEN\"", "name"),
        ("repository = \"octo/app\"\nvisibility = \"all\"\nname = \"PAT\"", "visibility"),
    ] {
        let text = format!("{BASE}\n[[token.consumer]]\nkind = \"github-actions-secret\"\n{body}\n");
        let e = parse(&text).unwrap_err();
        assert_eq!(e.field, format!("token[0].consumer[0].{field}"), "{body}: {e}");
    }
}

#[test]
fn duplicates_own_secret_and_deadline_are_refused() {
    let one =
        "\n[[token.consumer]]\nkind = \"devops-variable-group\"\nproject = \"web\"\ngroup = 7\nvariable = \"PAT\"\n";
    let e = parse(&format!("{BASE}{one}{one}")).unwrap_err();
    assert!(e.problem.contains("twice"), "{e}");
    let own = "\n[[token.consumer]]\nkind = \"keyvault\"\nsecret = \"ci-build-pat\"\n";
    let e = parse(&format!("{BASE}{own}")).unwrap_err();
    assert!(e.problem.contains("own secret"), "{e}");
    let short = BASE.replace("deadline_hours = 96", "deadline_hours = 24");
    let e = parse(&format!("{short}{one}")).unwrap_err();
    assert_eq!(e.field, "consumers.deadline_hours", "{e}");
    assert!(e.problem.contains("grace period of token[0]"), "{e}");
    let lag = "\n[[token.consumer]]\nkind = \"reference\"\ndescription = \"k8s\"\nlag_hours = 200\n";
    let e = parse(&format!("{BASE}{lag}")).unwrap_err();
    assert_eq!(e.field, "token[0].consumer[0].lag_hours", "{e}");
}

#[test]
fn webhook_acknowledgements_are_accepted_and_typed() {
    let text = format!(
        "{BASE}\n[[token.consumer]]\nkind = \"webhook\"\nurl_secret = \"u\"\nsigning_secret = \"k\"\nack = true\n"
    );
    let p = parse(&text).unwrap();
    let c = &p.tokens[0].consumers.list[0];
    assert_eq!(c.id, "webhook:u");
    assert!(matches!(c.kind, ConsumerKind::Webhook { ack: true, .. }), "{c:?}");
    let text = format!(
        "{BASE}\n[[token.consumer]]\nkind = \"webhook\"\nurl_secret = \"u\"\nsigning_secret = \"k\"\nack = \"yes\"\n"
    );
    let e = parse(&text).unwrap_err();
    assert!(e.to_string().contains("token[0].consumer[0].ack: must be true or false"), "{e}");
}

#[test]
fn pat_parameters_per_type_and_scheme() {
    assert_eq!(pat_parameter("generic", "usernamepassword"), Some("password"));
    assert_eq!(pat_parameter("ExternalTfs", "Token"), Some("apitoken"));
    assert_eq!(pat_parameter("github", "PersonalAccessToken"), Some("accessToken"));
    assert_eq!(pat_parameter("azurerm", "ServicePrincipal"), None);
    assert_eq!(pat_parameter("github", "OAuth"), None);
}
