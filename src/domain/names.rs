//! Names: Key Vault secret names, PAT display names, organizations and owners.

use super::{DomainError, string_domain_type};
use sha2::{Digest, Sha256};

/// A Key Vault secret name: 1–127 characters of `[0-9a-zA-Z-]`.
///
/// Key Vault puts the name in the URL path unescaped, so a name is validated before it can reach a URL.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SecretName(String);

impl SecretName {
    pub const MAX_LEN: usize = 127;

    pub fn parse(s: &str) -> Result<Self, DomainError> {
        if s.is_empty() {
            return Err(DomainError::new("secret name", s, "must not be empty"));
        }
        if s.len() > Self::MAX_LEN {
            return Err(DomainError::new(
                "secret name",
                s,
                format!("must be at most {} characters, got {}", Self::MAX_LEN, s.len()),
            ));
        }
        if let Some(c) = s.chars().find(|c| !(c.is_ascii_alphanumeric() || *c == '-')) {
            return Err(DomainError::new(
                "secret name",
                s,
                format!("may contain only letters, digits and '-', found {c:?}"),
            ));
        }
        Ok(Self(s.to_owned()))
    }

    /// Derives a secret name from any text (typically a PAT display name): every run of characters Key
    /// Vault does not allow becomes one `-`, the result is trimmed to leave room, and a short stable hash of
    /// the *original* text is appended so two different inputs never map to the same name
    /// (`"ci/build"` and `"ci build"` both sanitize to `ci-build`, but their suffixes differ).
    pub fn derive(text: &str) -> Self {
        let mut base = String::with_capacity(text.len());
        for c in text.chars() {
            if c.is_ascii_alphanumeric() {
                base.push(c);
            } else if !base.ends_with('-') {
                base.push('-');
            }
        }
        let base = base.trim_matches('-');
        let digest = Sha256::digest(text.as_bytes());
        let suffix = hex::encode(&digest[..4]); // 8 hex characters
        let room = Self::MAX_LEN - suffix.len() - 1;
        let base: String = base.chars().take(room).collect();
        let base = base.trim_end_matches('-');
        let name = if base.is_empty() { format!("pat-{suffix}") } else { format!("{base}-{suffix}") };
        Self(name)
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}
string_domain_type!(SecretName);

/// A PAT display name as Azure DevOps shows it: 1–256 characters, no control characters, not blank.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct DisplayName(String);

impl DisplayName {
    pub const MAX_LEN: usize = 256;

    pub fn parse(s: &str) -> Result<Self, DomainError> {
        if s.trim().is_empty() {
            return Err(DomainError::new("display name", s, "must not be empty or blank"));
        }
        if s.chars().count() > Self::MAX_LEN {
            return Err(DomainError::new("display name", s, format!("must be at most {} characters", Self::MAX_LEN)));
        }
        if s.chars().any(char::is_control) {
            return Err(DomainError::new("display name", s, "must not contain control characters"));
        }
        Ok(Self(s.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}
string_domain_type!(DisplayName);

/// An Azure DevOps organization name: 1–50 characters of letters, digits and `-`, starting and ending with
/// a letter or digit (the rule Azure DevOps applies when an organization is created).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct OrgName(String);

impl OrgName {
    pub fn parse(s: &str) -> Result<Self, DomainError> {
        if s.is_empty() || s.len() > 50 {
            return Err(DomainError::new("organization", s, "must be 1 to 50 characters"));
        }
        if let Some(c) = s.chars().find(|c| !(c.is_ascii_alphanumeric() || *c == '-')) {
            return Err(DomainError::new(
                "organization",
                s,
                format!("may contain only letters, digits and '-', found {c:?}"),
            ));
        }
        if s.starts_with('-') || s.ends_with('-') {
            return Err(DomainError::new("organization", s, "must start and end with a letter or digit"));
        }
        Ok(Self(s.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}
string_domain_type!(OrgName);

/// A PAT owner: the Microsoft Entra user principal name (`user@tenant`) that signs in and owns the PATs.
/// Compared case-insensitively (stored lower-case), as Entra does.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct OwnerId(String);

impl OwnerId {
    pub fn parse(s: &str) -> Result<Self, DomainError> {
        let t = s.trim();
        let Some((local, domain)) = t.split_once('@') else {
            return Err(DomainError::new("owner", s, "must be a user principal name like user@contoso.com"));
        };
        let ok_part = |p: &str| !p.is_empty() && p.chars().all(|c| c.is_ascii_alphanumeric() || "._-+'".contains(c));
        if !ok_part(local) || !ok_part(domain) || !domain.contains('.') || t.len() > 254 {
            return Err(DomainError::new("owner", s, "must be a user principal name like user@contoso.com"));
        }
        Ok(Self(t.to_ascii_lowercase()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// A secret name under which this owner's refresh token is kept (`patrol-owner-<sanitized>-<hash>`).
    pub fn refresh_token_secret(&self) -> SecretName {
        SecretName::derive(&format!("patrol-owner-{}", self.0))
    }
}
string_domain_type!(OwnerId);

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn secret_name_rules() {
        assert!(SecretName::parse("db-password-1").is_ok());
        assert!(SecretName::parse("").is_err());
        let e = SecretName::parse("a/b").unwrap_err();
        assert!(e.to_string().contains("'/'"), "{e}");
        assert!(SecretName::parse(&"a".repeat(127)).is_ok());
        assert!(SecretName::parse(&"a".repeat(128)).is_err());
    }

    #[test]
    fn derived_names_do_not_collide() {
        let a = SecretName::derive("ci/build");
        let b = SecretName::derive("ci build");
        assert_ne!(a, b);
        assert!(a.as_str().starts_with("ci-build-"));
        assert_eq!(SecretName::derive("ci/build"), a, "stable");
        assert!(SecretName::derive("///").as_str().starts_with("pat-"));
    }

    #[test]
    fn owner_is_case_insensitive() {
        assert_eq!(OwnerId::parse("Alice@Contoso.com").unwrap(), OwnerId::parse("alice@contoso.com").unwrap());
        assert!(OwnerId::parse("alice").is_err());
        assert!(OwnerId::parse("alice@localhost").is_err());
    }

    #[test]
    fn org_rules() {
        assert!(OrgName::parse("fabrikam").is_ok());
        assert!(OrgName::parse("-x").is_err());
        assert!(OrgName::parse("a b").is_err());
    }

    proptest! {
        #[test]
        fn derive_always_yields_a_valid_name(s in ".{0,400}") {
            let n = SecretName::derive(&s);
            prop_assert!(SecretName::parse(n.as_str()).is_ok());
        }

        #[test]
        fn parse_never_panics(s in ".{0,300}") {
            let _ = SecretName::parse(&s);
            let _ = DisplayName::parse(&s);
            let _ = OrgName::parse(&s);
            let _ = OwnerId::parse(&s);
        }
    }
}
