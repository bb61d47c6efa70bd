//! `patrol adopt SECRET [--pat ID | --display-name NAME] [--value-stdin | --value-file PATH | --value-env VAR]`:
//! onboard an existing PAT as a managed token's current value (`crate::rotation::adopt`): no second PAT, no
//! "changed outside patrol" alarm. The value never comes from the command line (it would be in the shell's
//! history and the process list).

use super::CliError;
use super::output::{OutputArgs, Table, render, write_stdout};
use super::runtime::Local;
use crate::domain::{AuthorizationId, SecretName};
use crate::rotation::adopt::{AdoptContext, AdoptError, Pick, adopt};
use secrecy::SecretString;

pub const AFTER_HELP: &str = "\
Examples:
  patrol adopt ci-build-pat --pat 3f1c2d4e-… --value-stdin < ci-build.pat
  patrol adopt ci-build-pat --display-name \"CI build agent\" --value-env CI_BUILD_PAT
  patrol adopt ci-build-pat --pat 3f1c2d4e-…        # the value is already the secret's current version

The PAT must be an active PAT of the token's owner in its organization (`patrol inventory` lists them);
without --pat and --display-name, the PAT named like the token's display_name in patrol.toml is taken.
The value is tested against Azure DevOps before anything is written. patrol journals the adoption, then
writes the vault version tagged as adopted (`adopted-at`); the next run treats the PAT as current and
rotates it on schedule. JSON: {\"secret\", \"authorization_id\", \"display_name\", \"scope\", \"valid_to\",
\"vault_version\", \"already\", \"notes\"}. Exit 0 adopted (or already adopted), 1 it could not be done (the
PAT is not found or the value does not authenticate; nothing written), 2 bad input or configuration, 3 the
owner must sign in first.";

#[derive(Debug, clap::Args)]
#[command(group(clap::ArgGroup::new("value").args(["value_stdin", "value_file", "value_env"])))]
#[command(group(clap::ArgGroup::new("which").args(["pat", "display_name"])))]
pub struct AdoptArgs {
    /// The managed secret (a `[[token]]` of patrol.toml) that will hold the PAT.
    pub secret: String,
    /// The PAT's authorization id.
    #[arg(long)]
    pub pat: Option<String>,
    /// The PAT's display name (exactly one active PAT of the owner must carry it; default: the token's
    /// display_name in patrol.toml).
    #[arg(long)]
    pub display_name: Option<String>,
    /// Read the PAT's value from standard input.
    #[arg(long)]
    pub value_stdin: bool,
    /// Read the PAT's value from this file.
    #[arg(long)]
    pub value_file: Option<std::path::PathBuf>,
    /// Read the PAT's value from this environment variable.
    #[arg(long)]
    pub value_env: Option<String>,
    #[command(flatten)]
    pub output: OutputArgs,
}

/// The value, from where the operator said (never argv); `None`: use what the vault already holds.
fn read_value(args: &AdoptArgs) -> Result<Option<SecretString>, CliError> {
    let raw = if args.value_stdin {
        let mut s = String::new();
        std::io::Read::read_to_string(&mut std::io::stdin(), &mut s)
            .map_err(|e| CliError::usage(format!("--value-stdin: cannot read standard input: {e}")))?;
        Some((s, "--value-stdin: standard input"))
    } else if let Some(p) = &args.value_file {
        let s = std::fs::read_to_string(p)
            .map_err(|e| CliError::usage(format!("--value-file {}: cannot read it: {e}", p.display())))?;
        Some((s, "--value-file"))
    } else if let Some(name) = &args.value_env {
        let s = std::env::var(name).map_err(|_| CliError::usage(format!("--value-env {name}: not set")))?;
        Some((s, "--value-env"))
    } else {
        None
    };
    match raw {
        None => Ok(None),
        Some((s, from)) => {
            let v = s.trim();
            if v.is_empty() || v.contains(char::is_whitespace) {
                return Err(CliError::usage(format!("{from}: expected one PAT value (no spaces), got nothing usable")));
            }
            Ok(Some(SecretString::from(v.to_owned())))
        }
    }
}

pub async fn run(args: &AdoptArgs) -> Result<(), CliError> {
    let secret = SecretName::parse(&args.secret).map_err(|e| CliError::usage(format!("SECRET: {e}")))?;
    let pick_arg = match (&args.pat, &args.display_name) {
        (Some(p), _) => {
            Some(Pick::Id(AuthorizationId::parse(p).map_err(|e| CliError::usage(format!("--pat {p:?}: {e}")))?))
        }
        (None, Some(n)) => Some(Pick::DisplayName(n.clone())),
        (None, None) => None,
    };
    let value = read_value(args)?;
    let local = Local::from_env()?;
    super::rotate::refuse_unshared_writer(&local.settings)?;
    let token = local.policy.token(&secret).ok_or_else(|| {
        CliError::usage(format!(
            "{secret} is not managed: add a [[token]] with secret = \"{secret}\" to {} first",
            local.settings.policy_file.display()
        ))
    })?;
    let pick = pick_arg.unwrap_or_else(|| Pick::DisplayName(token.display_name.to_string()));
    let connector = local.connector()?;
    let cx = AdoptContext {
        token,
        connector: connector.as_ref(),
        store: local.store.as_ref(),
        state: local.state.as_ref(),
        leases: local.leases.as_ref(),
        now: local.clock.now(),
    };
    let adopted = adopt(&cx, &pick, value).await.map_err(|e| match e {
        AdoptError::SignIn(m) => CliError::sign_in(format!("adopt: {m}")),
        AdoptError::Usage(m) => CliError::usage(format!("adopt: {m}")),
        AdoptError::Failed(m) => CliError::failed(format!("adopt: {m}")),
    })?;
    let mut t = Table::new(&["SECRET", "PAT", "DISPLAY NAME", "VALID TO", "VAULT VERSION", "OUTCOME"]);
    t.push(vec![
        adopted.secret.clone(),
        adopted.authorization_id.to_string(),
        adopted.display_name.clone(),
        adopted.valid_to.date().to_string(),
        adopted.vault_version.clone(),
        if adopted.already { "already adopted".into() } else { "adopted".into() },
    ]);
    let notes: String = adopted.notes.iter().map(|n| format!("note: {n}\n")).collect();
    write_stdout(&render(
        args.output.format,
        &adopted,
        || format!("{}{notes}", t.to_text()),
        || format!("{}{notes}", t.to_markdown()),
    )?)
}
