//! Registry errors: one variant per kind of failure, each naming the registry and the object, plus
//! turning Distribution error bodies (`{"errors":[{"code","message"}]}`) into one readable line.

use crate::image::digest::Digest;
use reqwest::{Response, StatusCode};

/// Why a registry request failed. Each variant names the registry and the object.
#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    #[error("connecting to {url}: {detail}")]
    Connect { url: String, detail: String },
    #[error("{what} not found in {registry}: {detail}")]
    NotFound { registry: String, what: String, detail: String },
    #[error("{registry} refused access to {what}: {detail}")]
    Unauthorized { registry: String, what: String, detail: String },
    #[error("token service {realm} for {registry}: {detail}")]
    Token { registry: String, realm: String, detail: String },
    #[error("{registry} answered {status} for {what}: {detail}")]
    Status { registry: String, what: String, status: StatusCode, detail: String },
    #[error("reading CA file {path} for {registry}: {detail}")]
    Ca { registry: String, path: String, detail: String },
    /// `what` names the object and the registry it came from.
    #[error("{what}: digest mismatch: expected {expected}, got {actual}")]
    DigestMismatch { what: String, expected: Digest, actual: Digest },
    #[error("{what} from {registry}: {detail}")]
    Protocol { registry: String, what: String, detail: String },
}

impl RegistryError {
    /// True when another endpoint (a mirror's upstream) might do better.
    pub fn is_not_found(&self) -> bool {
        matches!(self, RegistryError::NotFound { .. })
    }
}

/// The error and its causes on one line.
pub fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        let m = c.to_string();
        if !s.contains(&m) {
            s.push_str(": ");
            s.push_str(&m);
        }
        cur = c.source();
    }
    s
}

/// The first `errors[].message` (with code) from a Distribution error body.
pub(crate) fn registry_message(body: &str) -> Option<String> {
    #[derive(serde::Deserialize)]
    struct Body {
        errors: Vec<Item>,
    }
    #[derive(serde::Deserialize)]
    struct Item {
        #[serde(default)]
        code: String,
        #[serde(default)]
        message: String,
    }
    let b: Body = serde_json::from_str(body).ok()?;
    let e = b.errors.into_iter().next()?;
    Some(if e.code.is_empty() { e.message } else { format!("{} ({})", e.message, e.code) })
}

/// Turns an unsuccessful response into an error naming the object.
pub(crate) async fn error_from(resp: Response, registry: &str, what: &str) -> RegistryError {
    let status = resp.status();
    let body = resp.text().await.unwrap_or_default();
    let detail = registry_message(&body).unwrap_or_else(|| {
        let t = body.trim();
        if t.is_empty() || t.len() > 200 { status.to_string() } else { t.replace('\n', " ") }
    });
    match status {
        StatusCode::NOT_FOUND => {
            RegistryError::NotFound { registry: registry.into(), what: what.into(), detail }
        }
        StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN => {
            RegistryError::Unauthorized { registry: registry.into(), what: what.into(), detail }
        }
        _ => RegistryError::Status { registry: registry.into(), what: what.into(), status, detail },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn registry_error_body_is_summarised() {
        let b =
            r#"{"errors":[{"code":"MANIFEST_UNKNOWN","message":"manifest unknown","detail":{"Tag":"x"}}]}"#;
        assert_eq!(registry_message(b).as_deref(), Some("manifest unknown (MANIFEST_UNKNOWN)"));
        assert_eq!(registry_message("<html>"), None);
    }
}
