//! [`CliError`]: what went wrong in a command, and the exit code that says which kind of wrong it was.

use super::exit;
use crate::config::ConfigError;
use crate::rotation::policy::PolicyError;

/// A command's failure: the message printed on stderr (`patrol: …`) and the process exit code.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct CliError {
    pub code: u8,
    pub message: String,
}

impl CliError {
    /// The work failed (exit 1).
    pub fn failed(message: impl Into<String>) -> Self {
        Self { code: exit::FAILED, message: message.into() }
    }

    /// Bad input or configuration (exit 2).
    pub fn usage(message: impl Into<String>) -> Self {
        Self { code: exit::USAGE, message: message.into() }
    }

    /// An owner must sign in first (exit 3).
    pub fn sign_in(message: impl Into<String>) -> Self {
        Self { code: exit::SIGN_IN, message: message.into() }
    }
}

impl From<ConfigError> for CliError {
    fn from(e: ConfigError) -> Self {
        Self::usage(format!("invalid configuration: {e}"))
    }
}

impl From<PolicyError> for CliError {
    fn from(e: PolicyError) -> Self {
        Self::usage(format!("invalid policy: {e}"))
    }
}

impl From<crate::app::StartupError> for CliError {
    /// A configuration mistake (a setting, the policy) is exit 2; a store that cannot be opened is exit 1.
    fn from(e: crate::app::StartupError) -> Self {
        if e.is_configuration() { Self::usage(e.to_string()) } else { Self::failed(e.to_string()) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_are_distinct() {
        let codes = [CliError::failed("a").code, CliError::usage("b").code, CliError::sign_in("c").code];
        assert_eq!(codes, [1, 2, 3]);
        let c: CliError = ConfigError::new("PATROL_X", "bad").into();
        assert_eq!(c.code, exit::USAGE);
        assert!(c.message.contains("PATROL_X"));
        // Startup errors: configuration is exit 2, a store that cannot be opened exit 1.
        let c: CliError = crate::app::StartupError::from(ConfigError::new("PATROL_CLIENT_ID", "not set")).into();
        assert_eq!((c.code, c.message.as_str()), (exit::USAGE, "setting PATROL_CLIENT_ID: not set"));
        let c: CliError = crate::app::StartupError::from(crate::app::SharedError::BlobWithoutStorage).into();
        assert_eq!(c.code, exit::FAILED);
        assert!(c.message.contains("AzureWebJobsStorage"));
    }
}
