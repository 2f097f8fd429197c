//! Kubernetes `Status` errors: reason, code, message and details, rendered as JSON responses.

use super::resources::ResourceInfo;
use crate::api::validation::FieldError;
use crate::master::store::StoreError;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

/// A failed API call, rendered as a `Status` object.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{reason}: {message}")]
pub struct ApiStatus {
    pub code: u16,
    pub reason: &'static str,
    pub message: String,
    pub details: Option<Value>,
}

impl ApiStatus {
    fn new(code: u16, reason: &'static str, message: impl Into<String>) -> Self {
        ApiStatus { code, reason, message: message.into(), details: None }
    }

    fn with_details(mut self, r: &ResourceInfo, name: &str) -> Self {
        let mut d = json!({"name": name, "kind": r.plural});
        if !r.group.is_empty() {
            d["group"] = json!(r.group);
        }
        self.details = Some(d);
        self
    }

    /// 404 NotFound for an object.
    pub fn not_found(r: &ResourceInfo, name: &str) -> Self {
        Self::new(404, "NotFound", format!("{} \"{name}\" not found", r.qualified_plural()))
            .with_details(r, name)
    }

    /// 404 for a path that names nothing.
    pub fn no_route() -> Self {
        Self::new(404, "NotFound", "the server could not find the requested resource")
    }

    /// 409 AlreadyExists.
    pub fn already_exists(r: &ResourceInfo, name: &str) -> Self {
        Self::new(409, "AlreadyExists", format!("{} \"{name}\" already exists", r.qualified_plural()))
            .with_details(r, name)
    }

    /// 409 Conflict on a stale resourceVersion.
    pub fn conflict(r: &ResourceInfo, name: &str) -> Self {
        Self::new(
            409,
            "Conflict",
            format!(
                "Operation cannot be fulfilled on {} \"{name}\": the object has been modified; please apply \
                 your changes to the latest version and try again",
                r.qualified_plural()
            ),
        )
        .with_details(r, name)
    }

    /// 409 Conflict with a custom message.
    pub fn conflict_msg(r: &ResourceInfo, name: &str, msg: &str) -> Self {
        Self::new(
            409,
            "Conflict",
            format!("Operation cannot be fulfilled on {} \"{name}\": {msg}", r.qualified_plural()),
        )
        .with_details(r, name)
    }

    /// 422 Invalid with one cause per field error.
    pub fn invalid(r: &ResourceInfo, name: &str, errs: &[FieldError]) -> Self {
        let list = if errs.len() == 1 {
            errs[0].message.clone()
        } else {
            format!("[{}]", errs.iter().map(|e| e.message.as_str()).collect::<Vec<_>>().join(", "))
        };
        let mut s =
            Self::new(422, "Invalid", format!("{} \"{name}\" is invalid: {list}", r.qualified_kind()));
        let causes: Vec<Value> = errs
            .iter()
            .map(|e| {
                let msg = e.message.strip_prefix(&format!("{}: ", e.field)).unwrap_or(&e.message);
                json!({"reason": e.reason, "message": msg, "field": e.field})
            })
            .collect();
        let mut d = json!({"name": name, "kind": r.kind, "causes": causes});
        if !r.group.is_empty() {
            d["group"] = json!(r.group);
        }
        s.details = Some(d);
        s
    }

    /// 403 Forbidden for an object, e.g. refused by Pod Security admission.
    pub fn forbidden(r: &ResourceInfo, name: &str, msg: &str) -> Self {
        Self::new(403, "Forbidden", format!("{} \"{name}\" is forbidden: {msg}", r.qualified_plural()))
            .with_details(r, name)
    }

    /// 403 Forbidden with a whole message (authorization refusals).
    pub fn forbidden_raw(message: String, details: Option<Value>) -> Self {
        ApiStatus { details, ..Self::new(403, "Forbidden", message) }
    }

    /// 409 Conflict with a whole message.
    pub fn conflict_raw(message: impl Into<String>) -> Self {
        Self::new(409, "Conflict", message)
    }

    /// 401 Unauthorized with a message.
    pub fn unauthorized_msg(message: impl Into<String>) -> Self {
        Self::new(401, "Unauthorized", message)
    }

    /// 400 BadRequest.
    pub fn bad_request(msg: impl Into<String>) -> Self {
        Self::new(400, "BadRequest", msg)
    }

    /// 405 MethodNotAllowed.
    pub fn method_not_allowed(what: &str) -> Self {
        Self::new(
            405,
            "MethodNotAllowed",
            format!("the server does not allow this method on the requested resource: {what}"),
        )
    }

    /// 415 UnsupportedMediaType.
    /// 415 UnsupportedMediaType with `msg`.
    pub fn unsupported_body(msg: impl Into<String>) -> Self {
        Self::new(415, "UnsupportedMediaType", msg)
    }

    pub fn unsupported_media(ct: &str) -> Self {
        Self::new(
            415,
            "UnsupportedMediaType",
            format!(
                "the body of the request was in an unknown format - accepted media types include: application/json-patch+json, application/merge-patch+json, application/apply-patch+yaml, application/strategic-merge-patch+json (got {ct:?})"
            ),
        )
    }

    /// 410 Expired.
    pub fn expired(msg: impl Into<String>) -> Self {
        Self::new(410, "Expired", msg)
    }

    /// 401 Unauthorized.
    pub fn unauthorized() -> Self {
        Self::new(401, "Unauthorized", "Unauthorized")
    }

    /// 500 InternalError.
    pub fn internal(msg: impl Into<String>) -> Self {
        Self::new(500, "InternalError", format!("Internal error occurred: {}", msg.into()))
    }

    /// Maps a store failure on object `name` of `r`.
    pub fn from_store(r: &ResourceInfo, name: &str, e: StoreError) -> Self {
        match e {
            StoreError::NotFound { .. } => Self::not_found(r, name),
            StoreError::AlreadyExists { .. } => Self::already_exists(r, name),
            StoreError::Conflict { .. } => Self::conflict(r, name),
            StoreError::Compacted { .. } => Self::expired(e.to_string()),
            StoreError::Backend { .. } => Self::internal(e.to_string()),
        }
    }

    /// The `Status` object.
    pub fn to_json(&self) -> Value {
        let mut v = json!({
            "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
            "message": self.message, "reason": self.reason, "code": self.code,
        });
        if let Some(d) = &self.details {
            v["details"] = d.clone();
        }
        v
    }
}

impl IntoResponse for ApiStatus {
    fn into_response(self) -> Response {
        let code = StatusCode::from_u16(self.code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        (code, [(header::CONTENT_TYPE, "application/json")], self.to_json().to_string()).into_response()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::master::apiserver::resources::find;

    #[test]
    fn shapes() {
        let d = find("apps", "v1", "deployments").unwrap();
        let s = ApiStatus::not_found(d, "x").to_json();
        assert_eq!(s["message"], "deployments.apps \"x\" not found");
        assert_eq!(s["details"]["group"], "apps");
        let errs =
            vec![FieldError::invalid("spec.replicas", &json!(-1), "must be greater than or equal to 0")];
        let inv = ApiStatus::invalid(d, "x", &errs).to_json();
        assert_eq!(inv["code"], 422);
        assert_eq!(inv["details"]["causes"][0]["field"], "spec.replicas");
        assert_eq!(
            inv["message"],
            "Deployment.apps \"x\" is invalid: spec.replicas: Invalid value: -1: must be greater than or equal to 0"
        );
        assert_eq!(
            inv["details"]["causes"][0]["message"],
            "Invalid value: -1: must be greater than or equal to 0"
        );
        let pods = find("", "v1", "pods").unwrap();
        let f =
            ApiStatus::forbidden(pods, "x", "violates PodSecurity \"baseline:latest\": privileged").to_json();
        assert_eq!((f["code"].as_u64(), f["reason"].as_str()), (Some(403), Some("Forbidden")));
        assert_eq!(
            f["message"],
            "pods \"x\" is forbidden: violates PodSecurity \"baseline:latest\": privileged"
        );
        assert_eq!(f["details"]["kind"], "pods");
    }
}
