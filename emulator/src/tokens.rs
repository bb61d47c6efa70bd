//! Access tokens issued by the emulated Microsoft Entra and checked by the emulated services.
//!
//! Tokens are RS256-signed JWTs with the claims Entra puts in v1.0 access tokens for the Azure DevOps and
//! Key Vault resources (`aud`, `iss`, `tid`, `oid`, `sub`, `appid`, `upn`, `scp` or `idtyp: app`, `iat`,
//! `nbf`, `exp`, `ver`). The signing key is generated when the issuer is created (one per emulator run) and
//! its public half is published at the Entra `jwks_uri` ([`TokenIssuer::jwks`]). Every emulated service
//! validates bearer tokens through [`TokenIssuer::validate`] — the one function that decides what a token
//! grants: signature, `iss`, and `nbf`/`exp` on the virtual clock. Azure DevOps then requires a *delegated
//! user* token for resource `499b84ac-1321-427f-aa17-267ca6975798` with `vso.pats` / `vso.pats_manage`;
//! Key Vault requires a token for `https://vault.azure.net`.

use crate::clock::VirtualClock;
use aws_lc_rs::encoding::AsDer as _;
use aws_lc_rs::signature::KeyPair as _;
use base64::Engine as _;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use rand::Rng;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use std::sync::{Arc, RwLock};
use time::OffsetDateTime;
use uuid::Uuid;

/// The Azure DevOps resource id.
pub const DEVOPS_RESOURCE: &str = "499b84ac-1321-427f-aa17-267ca6975798";
/// The Key Vault resource.
pub const KEYVAULT_RESOURCE: &str = "https://vault.azure.net";
/// What `scp` holds for a delegated `499b84ac-…/.default` token: every permission the emulated client apps
/// are consented for (Entra puts the statically consented scopes there), so `.default` works on every
/// emulated Azure DevOps API.
pub const DEVOPS_DEFAULT_SCOPES: &[&str] = &[
    "user_impersonation",
    "vso.auditlog",
    "vso.pats",
    "vso.pats_manage",
    "vso.project",
    "vso.serviceendpoint_manage",
    "vso.tokenadministration",
    "vso.variablegroups_manage",
];
/// Issuer prefix of v1.0 access tokens (`https://sts.windows.net/{tid}/`), as Entra issues them for the
/// Azure DevOps and Key Vault resources.
pub const V1_ISSUER_PREFIX: &str = "https://sts.windows.net/";

/// Who a token was issued to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Subject {
    /// A signed-in user (delegated flows: device code, refresh token).
    User { upn: String },
    /// An application (client credentials: service principal or managed identity).
    App { client_id: String },
}

#[derive(Debug, Clone)]
pub struct Grant {
    pub subject: Subject,
    /// The resource (audience) the token is for.
    pub resource: String,
    /// Scopes without the resource prefix, e.g. `vso.pats`, `vso.pats_manage`, `.default`.
    pub scopes: Vec<String>,
    pub expires_at: OffsetDateTime,
}

/// What a token says beyond its [`Grant`]: the directory objects behind it.
#[derive(Debug, Clone, Default)]
pub struct Extra {
    /// The user's or service principal's object id (`oid`); derived from the UPN / client id if absent.
    pub oid: Option<Uuid>,
    /// `name` (users).
    pub name: Option<String>,
    /// The client application that asked for a delegated token (`appid`).
    pub client_id: Option<String>,
}

/// The claims of an emulated Entra v1.0 access token.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Claims {
    pub aud: String,
    pub iss: String,
    pub iat: i64,
    pub nbf: i64,
    pub exp: i64,
    pub appid: String,
    /// `0` public client, `1` client secret.
    pub appidacr: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub idtyp: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    pub oid: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scp: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub roles: Option<Vec<String>>,
    pub sub: String,
    pub tid: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub upn: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unique_name: Option<String>,
    pub uti: String,
    pub ver: String,
}

struct Keys {
    kid: String,
    encoding: EncodingKey,
    decoding: DecodingKey,
    /// base64url modulus and exponent (the JWK).
    n: String,
    e: String,
}

/// Issues and validates access tokens against the virtual clock.
#[derive(Clone)]
pub struct TokenIssuer {
    clock: VirtualClock,
    keys: Arc<Keys>,
    tenant: Arc<RwLock<Uuid>>,
    /// The Entra listener's base URL (`https://127.0.0.1:port`), for the v2.0 issuer of ID tokens.
    authority: Arc<RwLock<String>>,
}

impl std::fmt::Debug for TokenIssuer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenIssuer").field("kid", &self.keys.kid).finish_non_exhaustive()
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenProblem {
    #[error("the access token is not known to this tenant")]
    Unknown,
    #[error("the access token has expired")]
    Expired,
}

fn b64url(bytes: &[u8]) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

impl Keys {
    fn generate() -> Self {
        // aws-lc-rs key generation does not fail for a supported size; a failure here is a broken build.
        let pair = match aws_lc_rs::rsa::KeyPair::generate(aws_lc_rs::rsa::KeySize::Rsa2048) {
            Ok(p) => p,
            Err(e) => panic!("generating the emulator's RSA signing key failed: {e}"),
        };
        let pkcs8 = match pair.as_der() {
            Ok(d) => d,
            Err(e) => panic!("encoding the emulator's RSA signing key failed: {e}"),
        };
        let pem = pem::encode(&pem::Pem::new("PRIVATE KEY", pkcs8.as_ref().to_vec()));
        let encoding = match EncodingKey::from_rsa_pem(pem.as_bytes()) {
            Ok(k) => k,
            Err(e) => panic!("loading the emulator's RSA signing key failed: {e}"),
        };
        let public = pair.public_key();
        let n_raw = public.modulus().big_endian_without_leading_zero().to_vec();
        let e_raw = public.exponent().big_endian_without_leading_zero().to_vec();
        let decoding = DecodingKey::from_rsa_raw_components(&n_raw, &e_raw);
        let kid = b64url(&Sha256::digest(&n_raw)[..20]);
        Self { kid, encoding, decoding, n: b64url(&n_raw), e: b64url(&e_raw) }
    }
}

/// A stable object id for a name (when the directory object's id is not at hand).
pub fn derived_oid(name: &str) -> Uuid {
    let h = Sha256::digest(name.to_lowercase().as_bytes());
    let mut b = [0u8; 16];
    b.copy_from_slice(&h[..16]);
    uuid::Builder::from_random_bytes(b).into_uuid()
}

impl TokenIssuer {
    /// A new issuer with a fresh signing key.
    pub fn new(clock: VirtualClock) -> Self {
        Self {
            clock,
            keys: Arc::new(Keys::generate()),
            tenant: Arc::new(RwLock::new(Uuid::nil())),
            authority: Arc::new(RwLock::new("https://login.microsoftonline.com".into())),
        }
    }

    /// The Entra base URL (no trailing slash) the emulator serves.
    pub fn set_authority(&self, url: &str) {
        *self.authority.write().unwrap_or_else(|p| p.into_inner()) = url.trim_end_matches('/').to_owned();
    }

    pub fn authority(&self) -> String {
        self.authority.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    pub fn clock(&self) -> &VirtualClock {
        &self.clock
    }

    /// The tenant id put in `tid` / `iss`.
    pub fn set_tenant(&self, tenant: Uuid) {
        *self.tenant.write().unwrap_or_else(|p| p.into_inner()) = tenant;
    }

    pub fn tenant(&self) -> Uuid {
        *self.tenant.read().unwrap_or_else(|p| p.into_inner())
    }

    /// The key id (`kid`) of the signing key.
    pub fn key_id(&self) -> &str {
        &self.keys.kid
    }

    /// The JSON Web Key Set published at `jwks_uri`.
    pub fn jwks(&self) -> Value {
        json!({ "keys": [{
            "kty": "RSA",
            "use": "sig",
            "alg": "RS256",
            "kid": self.keys.kid,
            "x5t": self.keys.kid,
            "n": self.keys.n,
            "e": self.keys.e,
            "issuer": "https://login.microsoftonline.com/{tenantid}/v2.0",
        }]})
    }

    /// Issues a token; the returned string is the bearer value.
    pub fn issue(&self, grant: Grant) -> String {
        self.issue_with(grant, Extra::default())
    }

    /// Issues a token with the directory ids behind it.
    pub fn issue_with(&self, grant: Grant, extra: Extra) -> String {
        let now = self.clock.now().unix_timestamp();
        let tid = self.tenant().to_string();
        let (app, user) = match &grant.subject {
            Subject::App { client_id } => (Some(client_id.to_lowercase()), None),
            Subject::User { upn } => (None, Some(upn.clone())),
        };
        let oid = extra.oid.unwrap_or_else(|| derived_oid(app.as_deref().or(user.as_deref()).unwrap_or_default()));
        let scp = user.as_ref().map(|_| {
            let mut scp: Vec<&str> = Vec::new();
            for s in &grant.scopes {
                match s.as_str() {
                    ".default" if grant.resource == DEVOPS_RESOURCE => scp.extend(DEVOPS_DEFAULT_SCOPES),
                    ".default" => scp.push("user_impersonation"),
                    other => scp.push(other),
                }
            }
            scp.dedup();
            scp.join(" ")
        });
        let claims = Claims {
            aud: grant.resource.clone(),
            iss: format!("{V1_ISSUER_PREFIX}{tid}/"),
            iat: now,
            nbf: now,
            exp: grant.expires_at.unix_timestamp(),
            appid: app.clone().or(extra.client_id.map(|c| c.to_lowercase())).unwrap_or_default(),
            appidacr: if app.is_some() { "1".into() } else { "0".into() },
            idtyp: app.as_ref().map(|_| "app".to_owned()),
            name: extra.name,
            oid: oid.to_string(),
            scp,
            roles: None,
            sub: b64url(&Sha256::digest(format!("{oid}:{}", grant.resource).as_bytes())[..32]),
            tid,
            upn: user.clone(),
            unique_name: user,
            uti: random_token(22),
            ver: "1.0".into(),
        };
        self.sign(&claims)
    }

    /// Signs any claims with the issuer's key (RS256, `kid` and `x5t` in the header).
    pub fn sign<T: Serialize>(&self, claims: &T) -> String {
        let header = Header {
            typ: Some("JWT".into()),
            kid: Some(self.keys.kid.clone()),
            x5t: Some(self.keys.kid.clone()),
            ..Header::new(Algorithm::RS256)
        };
        match jsonwebtoken::encode(&header, claims, &self.keys.encoding) {
            Ok(t) => t,
            // Serialising plain claims with a valid RSA key cannot fail.
            Err(e) => panic!("signing a token failed: {e}"),
        }
    }

    /// What a bearer token grants: its signature must be this issuer's, its issuer Entra's v1.0 one, and it
    /// must be within `nbf`..`exp` on the virtual clock. The one place every emulated service checks tokens.
    pub fn validate(&self, token: &str) -> Result<Grant, TokenProblem> {
        let claims = self.claims(token)?;
        let now = self.clock.now().unix_timestamp();
        if claims.exp <= now {
            return Err(TokenProblem::Expired);
        }
        // Entra allows a few minutes of clock skew on nbf.
        if claims.nbf > now + 300 {
            return Err(TokenProblem::Unknown);
        }
        let subject = match (claims.idtyp.as_deref(), claims.upn) {
            (Some("app"), _) | (_, None) => Subject::App { client_id: claims.appid },
            (_, Some(upn)) => Subject::User { upn },
        };
        let scopes = match (&subject, claims.scp) {
            (Subject::User { .. }, Some(scp)) => scp.split_whitespace().map(str::to_owned).collect(),
            _ => vec![".default".to_owned()],
        };
        let expires_at = OffsetDateTime::from_unix_timestamp(claims.exp).map_err(|_| TokenProblem::Unknown)?;
        Ok(Grant { subject, resource: claims.aud, scopes, expires_at })
    }

    /// The verified claims of a token (signature and issuer only; times are the caller's business).
    pub fn claims(&self, token: &str) -> Result<Claims, TokenProblem> {
        let mut v = Validation::new(Algorithm::RS256);
        v.validate_exp = false;
        v.validate_nbf = false;
        v.validate_aud = false;
        v.required_spec_claims.clear();
        let data = jsonwebtoken::decode::<Claims>(token, &self.keys.decoding, &v).map_err(|_| TokenProblem::Unknown)?;
        let c = data.claims;
        if !c.iss.starts_with(V1_ISSUER_PREFIX) || c.ver != "1.0" {
            return Err(TokenProblem::Unknown);
        }
        Ok(c)
    }

    /// Kept for callers of the opaque-token issuer: JWTs need no bookkeeping, so nothing is swept.
    pub fn sweep(&self) {}
}

/// URL-safe random characters.
pub fn random_token(len: usize) -> String {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut rng = rand::rng();
    (0..len).map(|_| ALPHABET[rng.random_range(0..ALPHABET.len())] as char).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn grant(subject: Subject, resource: &str, scopes: &[&str], clock: &VirtualClock) -> Grant {
        Grant {
            subject,
            resource: resource.into(),
            scopes: scopes.iter().map(|s| s.to_string()).collect(),
            expires_at: clock.now() + time::Duration::hours(1),
        }
    }

    #[test]
    fn user_tokens_are_signed_jwts_with_entra_claims_and_round_trip() {
        let clock = VirtualClock::new();
        let issuer = TokenIssuer::new(clock.clone());
        let tenant = Uuid::new_v4();
        issuer.set_tenant(tenant);
        let t = issuer.issue(grant(
            Subject::User { upn: "alice@contoso.com".into() },
            DEVOPS_RESOURCE,
            &["vso.pats", "vso.pats_manage"],
            &clock,
        ));
        let c = issuer.claims(&t).unwrap();
        assert_eq!((c.aud.as_str(), c.tid.clone()), (DEVOPS_RESOURCE, tenant.to_string()));
        assert_eq!(c.iss, format!("https://sts.windows.net/{tenant}/"));
        assert_eq!(c.scp.as_deref(), Some("vso.pats vso.pats_manage"));
        assert_eq!(c.upn.as_deref(), Some("alice@contoso.com"));
        assert!(c.nbf <= c.iat && c.iat < c.exp);
        let g = issuer.validate(&t).unwrap();
        assert_eq!(g.subject, Subject::User { upn: "alice@contoso.com".into() });
        assert_eq!(g.scopes, vec!["vso.pats", "vso.pats_manage"]);
        let header = jsonwebtoken::decode_header(&t).unwrap();
        assert_eq!(header.alg, Algorithm::RS256);
        assert_eq!(header.kid.as_deref(), Some(issuer.key_id()));
    }

    #[test]
    fn app_tokens_expiry_and_foreign_or_tampered_tokens() {
        let clock = VirtualClock::new();
        let issuer = TokenIssuer::new(clock.clone());
        let t = issuer.issue(grant(Subject::App { client_id: "ABC".into() }, KEYVAULT_RESOURCE, &[".default"], &clock));
        let g = issuer.validate(&t).unwrap();
        assert_eq!(g.subject, Subject::App { client_id: "abc".into() });
        assert_eq!(issuer.claims(&t).unwrap().idtyp.as_deref(), Some("app"));
        // Another emulator's key, a tampered payload, garbage.
        let other = TokenIssuer::new(clock.clone());
        assert_eq!(other.validate(&t).unwrap_err(), TokenProblem::Unknown);
        let mut parts: Vec<String> = t.split('.').map(str::to_owned).collect();
        parts[1] = b64url(br#"{"aud":"x"}"#);
        assert_eq!(issuer.validate(&parts.join(".")).unwrap_err(), TokenProblem::Unknown);
        assert_eq!(issuer.validate("opaque").unwrap_err(), TokenProblem::Unknown);
        clock.advance(time::Duration::hours(2));
        assert_eq!(issuer.validate(&t).unwrap_err(), TokenProblem::Expired);
        // The JWKS publishes the verifying key.
        let jwks = issuer.jwks();
        let k = &jwks["keys"][0];
        let dk = DecodingKey::from_rsa_components(k["n"].as_str().unwrap(), k["e"].as_str().unwrap()).unwrap();
        let mut v = Validation::new(Algorithm::RS256);
        v.validate_exp = false;
        v.validate_aud = false;
        assert!(jsonwebtoken::decode::<Value>(&t, &dk, &v).is_ok());
    }
}
