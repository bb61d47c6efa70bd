//! `api-version` negotiation for preview resources: `X.Y-preview[.N]` between the first version that
//! had the resource and the newest the emulator implements; 7.2 adds `patTokenErrorMessage`.

use super::errors::VssError;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct ApiVersion {
    pub major: u32,
    pub minor: u32,
}

impl ApiVersion {
    pub const V7_2: Self = Self { major: 7, minor: 2 };

    pub fn at_least_7_2(self) -> bool {
        self >= Self::V7_2
    }
}

/// Checks `api-version` for a preview resource supported from `min` to 7.2.
pub fn negotiate(raw: Option<&str>, min: ApiVersion, resource: &str) -> Result<ApiVersion, VssError> {
    let Some(raw) = raw.map(str::trim).filter(|s| !s.is_empty()) else {
        return Err(VssError::new(
            axum::http::StatusCode::BAD_REQUEST,
            "VssVersionNotSpecifiedException",
            "Microsoft.VisualStudio.Services.WebApi.VssVersionNotSpecifiedException, Microsoft.VisualStudio.Services.WebApi",
            format!(
                "No api-version was supplied for the {resource} request. Supply an api-version such as 7.2-preview.1."
            ),
        ));
    };
    let (num, preview) = match raw.split_once('-') {
        Some((n, rest)) => (n, Some(rest)),
        None => (raw, None),
    };
    let parsed =
        num.split_once('.').and_then(|(a, b)| Some(ApiVersion { major: a.parse().ok()?, minor: b.parse().ok()? }));
    let preview_ok = match preview {
        None => false,
        Some(p) => {
            p.eq_ignore_ascii_case("preview")
                || p.strip_prefix("preview.").is_some_and(|n| n.parse::<u32>().is_ok_and(|n| n >= 1))
        }
    };
    let Some(v) = parsed else {
        return Err(VssError::argument(format!("The api-version '{raw}' is not valid.")));
    };
    if v > ApiVersion::V7_2 {
        return Err(VssError::new(
            axum::http::StatusCode::BAD_REQUEST,
            "VssVersionOutOfRangeException",
            "Microsoft.VisualStudio.Services.WebApi.VssVersionOutOfRangeException, Microsoft.VisualStudio.Services.WebApi",
            format!(
                "The requested REST API version of {}.{} is out of range for this server. The latest REST API version this server supports is 7.2.",
                v.major, v.minor
            ),
        ));
    }
    if v < min {
        return Err(VssError::not_found(
            "ApiResourceNotFoundException",
            format!("API resource location for {resource} is not registered at version {}.{}.", v.major, v.minor),
        ));
    }
    if !preview_ok {
        return Err(VssError::new(
            axum::http::StatusCode::BAD_REQUEST,
            "VssInvalidPreviewVersionException",
            "Microsoft.VisualStudio.Services.WebApi.VssInvalidPreviewVersionException, Microsoft.VisualStudio.Services.WebApi",
            format!(
                "The requested version \"{raw}\" of the resource is under preview. The -preview flag must be supplied in the api-version for such requests. For example: \"{}.{}-preview\"",
                v.major, v.minor
            ),
        ));
    }
    Ok(v)
}

#[cfg(test)]
mod tests {
    use super::*;
    const MIN: ApiVersion = ApiVersion { major: 6, minor: 1 };

    #[test]
    fn accepts_preview_versions_in_range() {
        assert_eq!(negotiate(Some("7.1-preview.1"), MIN, "pats").unwrap(), ApiVersion { major: 7, minor: 1 });
        assert!(negotiate(Some("7.2-preview.1"), MIN, "pats").unwrap().at_least_7_2());
        assert!(negotiate(Some("6.1-preview"), MIN, "pats").is_ok());
    }

    #[test]
    fn refuses_missing_released_and_future_versions() {
        assert_eq!(negotiate(None, MIN, "pats").unwrap_err().type_key, "VssVersionNotSpecifiedException");
        assert_eq!(negotiate(Some("7.1"), MIN, "pats").unwrap_err().type_key, "VssInvalidPreviewVersionException");
        assert_eq!(
            negotiate(Some("9.0-preview.1"), MIN, "pats").unwrap_err().type_key,
            "VssVersionOutOfRangeException"
        );
        assert_eq!(negotiate(Some("5.0-preview.1"), MIN, "pats").unwrap_err().type_key, "ApiResourceNotFoundException");
        assert!(negotiate(Some("x"), MIN, "pats").is_err());
    }
}
