//! The operator's command line: `serve`, `plan`, `rotate`, `inventory`, `status`, `login`, `report`,
//! `demo`, `audit`, `revoke`, `migrate-global`, shell completions, exit codes.
pub mod audit_cmds;
