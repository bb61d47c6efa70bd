//! The tags patrol writes on each PAT version, and Key Vault's limits on them (15 tags, 256 characters
//! per name and value). No secret value ever goes into a tag.

use super::StoreError;
use std::collections::BTreeMap;

pub const MAX_TAGS: usize = 15;
pub const MAX_TAG_LEN: usize = 256;

/// `patrol` on every version patrol wrote.
pub const MANAGED_BY: &str = "managed-by";
/// The PAT's authorization id.
pub const AUTHORIZATION_ID: &str = "authorization-id";
/// The PAT's display name as created.
pub const DISPLAY_NAME: &str = "display-name";
/// The organization the PAT is scoped to.
pub const ORGANIZATION: &str = "organization";
/// The owner (UPN) who created it.
pub const OWNER: &str = "owner";
/// The PAT's scopes (space-separated).
pub const SCOPE: &str = "scope";
/// The PAT's `validTo` (RFC 3339).
pub const VALID_TO: &str = "valid-to";
/// The operation id of the rotation that wrote this version (recognises self-caused events).
pub const OPERATION_ID: &str = "operation-id";
/// The authorization id of the PAT this version replaced.
pub const PREVIOUS_AUTHORIZATION_ID: &str = "previous-authorization-id";
/// When the previous PAT may be revoked (end of grace, RFC 3339).
pub const PREVIOUS_REVOKE_AFTER: &str = "previous-revoke-after";
/// When an operator adopted the PAT this version holds (`patrol adopt`, RFC 3339): patrol wrote the version,
/// but did not create the PAT.
pub const ADOPTED_AT: &str = "adopted-at";

pub const MANAGED_BY_VALUE: &str = "patrol";

/// Checks a tag set against Key Vault's limits before it is sent.
pub fn validate(tags: &BTreeMap<String, String>) -> Result<(), StoreError> {
    if tags.len() > MAX_TAGS {
        return Err(StoreError::InvalidTag {
            tag: format!("({} tags)", tags.len()),
            problem: format!("Key Vault allows at most {MAX_TAGS} tags"),
        });
    }
    for (k, v) in tags {
        if k.is_empty() || k.chars().count() > MAX_TAG_LEN {
            return Err(StoreError::InvalidTag {
                tag: k.clone(),
                problem: format!("name must be 1..={MAX_TAG_LEN} characters"),
            });
        }
        if v.chars().count() > MAX_TAG_LEN {
            return Err(StoreError::InvalidTag {
                tag: k.clone(),
                problem: format!("value must be at most {MAX_TAG_LEN} characters"),
            });
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits() {
        let mut t: BTreeMap<String, String> = (0..15).map(|i| (format!("k{i}"), "v".into())).collect();
        assert!(validate(&t).is_ok());
        t.insert("k15".into(), "v".into());
        assert!(validate(&t).is_err());
        let long = BTreeMap::from([("k".to_owned(), "x".repeat(257))]);
        assert!(validate(&long).is_err());
    }
}
