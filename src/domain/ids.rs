//! Identifiers: a PAT's authorization id and patrol's own operation ids.

use super::{DomainError, string_domain_type};

/// The `authorizationId` Azure DevOps gives every PAT: the only handle for Get, Update and Revoke.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct AuthorizationId(uuid::Uuid);

impl AuthorizationId {
    pub fn parse(s: &str) -> Result<Self, DomainError> {
        uuid::Uuid::parse_str(s.trim()).map(Self).map_err(|_| DomainError::new("authorization id", s, "must be a GUID"))
    }

    pub fn from_uuid(u: uuid::Uuid) -> Self {
        Self(u)
    }

    pub fn uuid(&self) -> uuid::Uuid {
        self.0
    }
}

impl std::fmt::Display for AuthorizationId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.hyphenated().fmt(f)
    }
}
impl std::str::FromStr for AuthorizationId {
    type Err = DomainError;
    fn from_str(s: &str) -> Result<Self, DomainError> {
        Self::parse(s)
    }
}
impl serde::Serialize for AuthorizationId {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}
impl<'de> serde::Deserialize<'de> for AuthorizationId {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Self::parse(&s).map_err(serde::de::Error::custom)
    }
}

/// One rotation (or other journaled operation) of patrol: 12 lower-case hex characters.
///
/// It is written into the journal before any effect, embedded in the new PAT's display name (so a crash
/// between Create and store can be reconciled by listing) and into the Key Vault version's tags (so
/// patrol recognises its own `SecretNewVersionCreated` events).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct OperationId(String);

impl OperationId {
    pub const LEN: usize = 12;

    pub fn new_random() -> Self {
        let u = uuid::Uuid::new_v4();
        Self(hex::encode(&u.as_bytes()[..Self::LEN / 2]))
    }

    pub fn parse(s: &str) -> Result<Self, DomainError> {
        if s.len() == Self::LEN && s.chars().all(|c| c.is_ascii_digit() || ('a'..='f').contains(&c)) {
            Ok(Self(s.to_owned()))
        } else {
            Err(DomainError::new("operation id", s, "must be 12 lower-case hex characters"))
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}
string_domain_type!(OperationId);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn operation_ids_round_trip() {
        let op = OperationId::new_random();
        assert_eq!(OperationId::parse(op.as_str()).unwrap(), op);
        assert!(OperationId::parse("XYZ").is_err());
    }

    #[test]
    fn authorization_id_parses_guid() {
        let a = AuthorizationId::parse("4ab5764f-4193-4f1d-b995-64144880b7d7").unwrap();
        assert_eq!(a.to_string(), "4ab5764f-4193-4f1d-b995-64144880b7d7");
        assert!(AuthorizationId::parse("nope").is_err());
    }
}
