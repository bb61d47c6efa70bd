//! Where Microsoft's official specs are, for the tests that check patrol and the emulator against them
//! (OpenAPI files and their `httpExamples`, Event Grid samples). The repository holds no copy of them: they
//! are read at run time from `../shared/specs` beside the checkout, or from `PATROL_SPECS_DIR` when set (a
//! relative value is taken from the repository root). A test that needs them and cannot find them panics
//! with a message that says where to put them: it never passes without having read them.

use std::path::{Path, PathBuf};

/// The setting that overrides where the specs are.
pub const SPECS_DIR_SETTING: &str = "PATROL_SPECS_DIR";

/// The repository root (the workspace this crate is built in).
fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().map(Path::to_path_buf).unwrap_or_else(|| PathBuf::from(".."))
}

/// The specs directory: `PATROL_SPECS_DIR`, else `<repo>/../shared/specs`. Panics, saying where to put
/// them, when it is not a directory.
pub fn specs_dir() -> PathBuf {
    locate(std::env::var_os(SPECS_DIR_SETTING)).unwrap_or_else(|message| panic!("{message}"))
}

/// Where the specs are for a given `PATROL_SPECS_DIR` value, or the message a test fails with.
fn locate(setting: Option<std::ffi::OsString>) -> Result<PathBuf, String> {
    let (dir, from) = match setting.filter(|v| !v.is_empty()) {
        Some(v) => (repo_root().join(v), SPECS_DIR_SETTING),
        None => (repo_root().join("../shared/specs"), "the default"),
    };
    if dir.is_dir() {
        Ok(dir)
    } else {
        Err(format!(
            "the official specs are not at {} ({from}): put Microsoft's spec files (azure-devops/, keyvault/, \
             eventgrid/) in ../shared/specs beside the repository, or set {SPECS_DIR_SETTING} to their directory",
            dir.display()
        ))
    }
}

/// The path of one spec file, e.g. `eventgrid/keyvault/event-grid-schema/secret_new_version_created.json`.
pub fn spec_path(rel: &str) -> PathBuf {
    specs_dir().join(rel)
}

/// The text of one spec file (a leading UTF-8 BOM, as Microsoft's files have, removed). Panics naming the
/// file when it cannot be read.
pub fn read_spec(rel: &str) -> String {
    let path = spec_path(rel);
    match std::fs::read_to_string(&path) {
        Ok(text) => text.trim_start_matches('\u{feff}').to_owned(),
        Err(e) => panic!(
            "cannot read the official spec {} ({e}); the specs directory must hold Microsoft's files as in \
             ../shared/specs (or set {SPECS_DIR_SETTING})",
            path.display()
        ),
    }
}

/// One spec file parsed as JSON. Panics naming the file when it is not JSON.
pub fn spec_json(rel: &str) -> serde_json::Value {
    serde_json::from_str(&read_spec(rel)).unwrap_or_else(|e| panic!("{rel} in the specs directory is not JSON: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_specs_are_found_and_read() {
        let dir = specs_dir();
        assert!(dir.join("azure-devops").is_dir() && dir.join("keyvault").is_dir() && dir.join("eventgrid").is_dir());
        let ev = spec_json("eventgrid/keyvault/event-grid-schema/secret_new_version_created.json");
        assert_eq!(ev["eventType"], "Microsoft.KeyVault.SecretNewVersionCreated");
    }

    #[test]
    fn missing_specs_fail_with_where_to_put_them() {
        let message = locate(Some("/nonexistent/specs".into())).unwrap_err();
        assert!(message.contains("/nonexistent/specs") && message.contains("PATROL_SPECS_DIR"), "{message}");
        assert!(message.contains("../shared/specs"), "{message}");
        // a relative setting is taken from the repository root; an empty one means the default
        assert_eq!(locate(Some("../shared/specs".into())).unwrap(), locate(None).unwrap());
        assert_eq!(locate(Some("".into())).unwrap(), locate(None).unwrap());
    }
}
