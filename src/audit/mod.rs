//! Audit and compromise response: ingest the Azure DevOps audit log, evaluate misuse rules, respond per
//! severity, gate revocation on evidence, break glass.
