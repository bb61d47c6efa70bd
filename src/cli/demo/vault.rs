//! The demo's secret store: the emulated Azure Key Vault that `Emulator::start` serves over HTTPS (bearer
//! challenge, its own CA), reached exactly as a Function App reaches a real vault — through the official
//! SDK, with a client-secret credential of a service principal seeded into the emulated Entra tenant.
//!
//! Also: the CA bundle patrol trusts (the emulator's CA, plus the operator's `PATROL_CA_CERT` when alerts
//! go to an SMTP server that needs it) and every value the vault holds, for the demo's leak scan.

use patrol_emulator::Emulator;
use patrol_emulator::seed::SeedApp;
use patrol_emulator::state::AppKind;
use secrecy::{ExposeSecret, SecretString};
use std::path::{Path, PathBuf};

/// The emulated vault's name. A vault's name is the first label of its host (`<name>.vault.azure.net`),
/// and patrol ignores events from any other vault; the emulated vault is reached at
/// `https://localhost:<port>/` (a name its certificate carries), so its name is `localhost`.
pub const NAME: &str = "localhost";

/// The service principal patrol's handler and CLI use for the vault (client credentials).
pub const APP_ID: &str = "0d3c8b7a-6e5f-4a4d-9c2b-1a0f9e8d7c6b";

/// The seeded application; the emulator generates its client secret.
pub fn app() -> SeedApp {
    SeedApp {
        client_id: uuid::Uuid::parse_str(APP_ID).ok(),
        display_name: "patrol-demo-keyvault".into(),
        kind: AppKind::ServicePrincipal,
        client_secret: None,
        admin_of: Vec::new(),
        audit_reader_of: Vec::new(),
    }
}

/// The settings that point patrol at the emulated vault. `ca` is the bundle from [`ca_bundle`].
pub fn settings(emu: &Emulator, client_secret: &SecretString, ca: &Path) -> Result<Vec<(String, String)>, String> {
    let url = emu.endpoints().extra.get("keyvault").ok_or("the emulator reported no Key Vault URL")?;
    let mut url = reqwest::Url::parse(url).map_err(|e| format!("the emulator's Key Vault URL {url}: {e}"))?;
    url.set_host(Some(NAME)).map_err(|e| format!("the emulator's Key Vault URL: {e}"))?;
    Ok(vec![
        ("PATROL_KEYVAULT_URL".into(), url.to_string()),
        ("PATROL_KEYVAULT_NAME".into(), NAME.into()),
        ("PATROL_KEYVAULT_CREDENTIAL".into(), "client-secret".into()),
        ("PATROL_KEYVAULT_TENANT_ID".into(), emu.endpoints().tenant.clone()),
        ("PATROL_KEYVAULT_CLIENT_ID".into(), APP_ID.into()),
        ("PATROL_KEYVAULT_CLIENT_SECRET".into(), client_secret.expose_secret().to_owned()),
        ("PATROL_CA_CERT".into(), ca.display().to_string()),
    ])
}

/// The CA file patrol trusts: the emulator's own CA, or — when the operator set `PATROL_CA_CERT` for their
/// SMTP server — a bundle in `dir` with the operator's certificates first (the SMTP client reads the first
/// one) and the emulator's CA after them.
pub fn ca_bundle(emu: &Emulator, dir: &Path, operator_ca: Option<&str>) -> Result<PathBuf, String> {
    let emulator_ca = emu.endpoints().extra.get("ca_cert").ok_or("the emulator reported no CA certificate")?;
    let Some(extra) = operator_ca else {
        return Ok(PathBuf::from(emulator_ca));
    };
    let mut pem = std::fs::read_to_string(extra).map_err(|e| format!("PATROL_CA_CERT {extra}: {e}"))?;
    if !pem.ends_with('\n') {
        pem.push('\n');
    }
    pem.push_str(&std::fs::read_to_string(emulator_ca).map_err(|e| format!("the emulator's CA {emulator_ca}: {e}"))?);
    let path = dir.join("ca-bundle.pem");
    std::fs::write(&path, pem).map_err(|e| format!("cannot write {}: {e}", path.display()))?;
    Ok(path)
}

/// Every value of every version the emulated vault holds (PATs and refresh tokens), for the leak scan.
pub fn values(emu: &Emulator) -> Vec<String> {
    let state = &emu.keyvault().state;
    let now = state.clock.now();
    let mut vault = state.vault.lock().unwrap_or_else(|p| p.into_inner());
    let names: Vec<String> = vault.list(now).into_iter().map(|(name, _)| name).collect();
    let mut out = Vec::new();
    for name in names {
        if let Ok((_, versions)) = vault.versions(&name, now) {
            out.extend(versions.into_iter().map(|v| v.value));
        }
    }
    out
}
