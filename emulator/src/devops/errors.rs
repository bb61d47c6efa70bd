//! Azure DevOps error responses: the VSS exception envelope (`$id`, `innerException`, `message`,
//! `typeName`, `typeKey`, `errorCode`, `eventId`), and the 203 sign-in page served to unauthenticated
//! requests that did not send `X-TFS-FedAuthRedirect: Suppress`.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::json;

/// A VSS exception as the service serializes it.
#[derive(Debug, Clone)]
pub struct VssError {
    pub status: StatusCode,
    pub type_key: &'static str,
    pub type_name: &'static str,
    pub message: String,
    pub event_id: i32,
}

impl VssError {
    pub fn new(
        status: StatusCode,
        type_key: &'static str,
        type_name: &'static str,
        message: impl Into<String>,
    ) -> Self {
        Self { status, type_key, type_name, message: message.into(), event_id: 3000 }
    }

    /// A request body that is not the JSON the resource expects (TF400898).
    pub fn bad_json(detail: &str) -> Self {
        let activity = uuid::Uuid::new_v4();
        let mut e = Self::new(
            StatusCode::BAD_REQUEST,
            "JsonReaderException",
            "Newtonsoft.Json.JsonReaderException, Newtonsoft.Json",
            format!("TF400898: An Internal Error Occurred. Activity Id: {activity}. {detail}"),
        );
        e.event_id = 0;
        e
    }

    pub fn argument(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "ArgumentException", "System.ArgumentException, mscorlib", message)
    }

    pub fn invalid_access(status: StatusCode, message: impl Into<String>) -> Self {
        Self::new(
            status,
            "InvalidAccessException",
            "Microsoft.TeamFoundation.Framework.Server.InvalidAccessException, Microsoft.TeamFoundation.Framework.Server",
            message,
        )
    }

    pub fn unauthorized(message: impl Into<String>) -> Self {
        Self::new(
            StatusCode::UNAUTHORIZED,
            "UnauthorizedRequestException",
            "Microsoft.TeamFoundation.Framework.Server.UnauthorizedRequestException, Microsoft.TeamFoundation.Framework.Server",
            message,
        )
    }

    pub fn not_found(type_key: &'static str, message: impl Into<String>) -> Self {
        Self::new(
            StatusCode::NOT_FOUND,
            type_key,
            "Microsoft.VisualStudio.Services.Common.VssServiceException, Microsoft.VisualStudio.Services.Common",
            message,
        )
    }

    pub fn unavailable(message: impl Into<String>) -> Self {
        Self::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "ServiceUnavailableException",
            "Microsoft.VisualStudio.Services.Common.VssServiceUnavailableException, Microsoft.VisualStudio.Services.Common",
            message,
        )
    }

    pub fn body(&self) -> serde_json::Value {
        json!({
            "$id": "1",
            "innerException": null,
            "message": self.message,
            "typeName": self.type_name,
            "typeKey": self.type_key,
            "errorCode": 0,
            "eventId": self.event_id,
        })
    }
}

impl IntoResponse for VssError {
    fn into_response(self) -> Response {
        let mut r = (self.status, axum::Json(self.body())).into_response();
        r.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json; charset=utf-8"));
        r
    }
}

/// What an unauthenticated browser-style request gets: 203 with the sign-in HTML.
pub fn sign_in_page(host_realm: &str) -> Response {
    let body = format!(
        "<!DOCTYPE html><html><head><title>Azure DevOps Services | Sign In</title></head>\
         <body><h2>Object moved to <a href=\"https://spsprodweu5.vssps.visualstudio.com/_signin?realm={host_realm}&amp;reply_to=%2F\">here</a>.</h2>\
         <p>Sign in to continue.</p></body></html>"
    );
    let mut r = (StatusCode::NON_AUTHORITATIVE_INFORMATION, body).into_response();
    r.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("text/html; charset=utf-8"));
    r
}
