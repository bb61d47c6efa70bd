//! Domain types that validate when they are made.
//!
//! Everything that crosses a module boundary as a name, scope or identifier is one of these types, so an
//! invalid secret name, scope list or organization can never reach a URL, a journal record or an API call.
//! Each type has a `parse` constructor returning [`DomainError`] that names the offending value and the
//! rule it broke; `Display` gives back the canonical form, `serde` goes through `parse`.

mod ids;
mod names;
mod scopes;

pub use ids::{AuthorizationId, OperationId};
pub use names::{DisplayName, OrgName, OwnerId, SecretName};
pub use scopes::{KNOWN_SCOPES, Scope, Scopes};

/// Why a value was refused: which kind of value, what it was (never a secret) and the rule it broke.
/// What `PATROL_AUDIT_READER`, `patrol audit --reader` and `patrol revoke --admin` accept for the Function
/// App's own identity.
pub const APP: &str = "app";

/// The reserved identity the Function App's own identity goes by inside patrol (never a real account:
/// `.invalid` cannot be registered). `auth::app` gives it its token source.
pub fn app_identity() -> OwnerId {
    // A valid OwnerId by construction (see the test in `auth::app`).
    OwnerId::parse("function-app@patrol.invalid").unwrap_or_else(|_| unreachable!("the reserved identity parses"))
}

/// Reads an identity argument: [`APP`] for the Function App's identity, otherwise a UPN.
pub fn parse_identity(s: &str) -> Result<OwnerId, DomainError> {
    if s.trim().eq_ignore_ascii_case(APP) { Ok(app_identity()) } else { OwnerId::parse(s) }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid {kind} {value:?}: {rule}")]
pub struct DomainError {
    pub kind: &'static str,
    pub value: String,
    pub rule: String,
}

impl DomainError {
    pub(crate) fn new(kind: &'static str, value: &str, rule: impl Into<String>) -> Self {
        // Values are identifiers and names, never secrets; still, keep error messages bounded.
        let value: String = value.chars().take(200).collect();
        Self { kind, value, rule: rule.into() }
    }
}

/// Implements `FromStr`, `Display`, `Serialize` and `Deserialize` through `parse`/`as_str`.
macro_rules! string_domain_type {
    ($ty:ident) => {
        impl std::str::FromStr for $ty {
            type Err = $crate::domain::DomainError;
            fn from_str(s: &str) -> Result<Self, Self::Err> {
                Self::parse(s)
            }
        }
        impl std::fmt::Display for $ty {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(self.as_str())
            }
        }
        impl serde::Serialize for $ty {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.serialize_str(self.as_str())
            }
        }
        impl<'de> serde::Deserialize<'de> for $ty {
            fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let s = String::deserialize(d)?;
                Self::parse(&s).map_err(serde::de::Error::custom)
            }
        }
        impl AsRef<str> for $ty {
            fn as_ref(&self) -> &str {
                self.as_str()
            }
        }
    };
}
pub(crate) use string_domain_type;
