//! `patrol consumers --check`: each consumer checked **without writing** — can patrol reach it, may it
//! write it (where the API can say so without a write), is it what the policy says. Each kind's client
//! fills a [`Probe`] as far as it gets; the first problem ends the check of that consumer.
//!
//! | kind | reachable | writable | right type |
//! | --- | --- | --- | --- |
//! | service connection | `GET …/endpoints/{id}` (by name: the list) | `GET …/endpoints/{id}?actionFilter=manage` answers it | type/scheme as declared, the PAT parameter present |
//! | variable group | `GET …/variablegroups/{id}` (by name: the list) | `GET …/variablegroups?groupName=…&actionFilter=manage` lists it | a plain group whose variable is secret (or Key Vault-linked as declared) |
//! | GitHub secret | `GET …/secrets/public-key` | not checkable without a write (GitHub says nothing about Secrets: write) | a 32-byte X25519 public key to seal with |
//! | Key Vault copy | list the secret's versions (properties only) | not checkable without a write | not another managed token's secret |
//! | webhook | its host resolves (nothing is sent) | — | URL and signing key in patrol's store; https, or http to loopback only |
//! | reference | nothing to reach | — | — |

use super::ConsumerError;
use serde::Serialize;

/// How far one consumer's check got. `None`: not checked (not applicable, or an earlier step failed).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Probe {
    pub reachable: Option<bool>,
    pub writable: Option<bool>,
    pub right_type: Option<bool>,
    /// What was found, in words (never a secret value or a webhook URL).
    pub findings: Vec<String>,
}

impl Probe {
    pub fn note(&mut self, s: impl Into<String>) {
        self.findings.push(s.into());
    }

    /// Records what a failure says about the three questions (answers already given stay).
    pub fn failed(&mut self, e: &ConsumerError) {
        match e {
            ConsumerError::NotFound(_) | ConsumerError::Transient(_) => {
                self.reachable.get_or_insert(false);
            }
            ConsumerError::Forbidden(_) => {
                self.reachable.get_or_insert(false);
                self.writable.get_or_insert(false);
            }
            ConsumerError::Refused(_) => {
                self.right_type.get_or_insert(false);
            }
            ConsumerError::Conflict(_) | ConsumerError::NotConfigured(_) => {}
        }
    }
}

/// The outcome word of a check.
pub fn outcome(result: &Result<(), ConsumerError>) -> &'static str {
    match result {
        Ok(()) => "ok",
        Err(ConsumerError::NotConfigured(_)) => "not-configured",
        Err(ConsumerError::NotFound(_)) => "not-found",
        Err(ConsumerError::Forbidden(_)) => "forbidden",
        Err(ConsumerError::Refused(_)) => "wrong-type",
        Err(ConsumerError::Transient(_)) => "unreachable",
        Err(ConsumerError::Conflict(_)) => "conflict",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_failure_answers_only_what_is_still_open() {
        let mut p = Probe { reachable: Some(true), ..Default::default() };
        p.failed(&ConsumerError::Forbidden("403".into()));
        assert_eq!((p.reachable, p.writable, p.right_type), (Some(true), Some(false), None));
        let mut p = Probe::default();
        p.failed(&ConsumerError::NotFound("404".into()));
        assert_eq!((p.reachable, p.writable), (Some(false), None));
        let mut p = Probe::default();
        p.failed(&ConsumerError::Refused("type".into()));
        assert_eq!(p.right_type, Some(false));
        assert_eq!(outcome(&Err(ConsumerError::Refused("x".into()))), "wrong-type");
        assert_eq!(outcome(&Ok(())), "ok");
    }
}
