//! Bearer tokens from a registry's token service: the response format and a cache per (registry, scope)
//! that honours `expires_in` (60 s when absent, as the Distribution token spec says).

use serde::Deserialize;
use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Lifetime assumed when the token service gives none.
pub const DEFAULT_TOKEN_LIFETIME: Duration = Duration::from_secs(60);
/// A token is treated as expired this long before it really is.
const EXPIRY_MARGIN: Duration = Duration::from_secs(5);

/// The JSON a token endpoint answers with (`token` and/or `access_token`).
#[derive(Debug, Deserialize)]
pub struct TokenResponse {
    #[serde(default)]
    pub token: Option<String>,
    #[serde(default)]
    pub access_token: Option<String>,
    #[serde(default)]
    pub expires_in: Option<u64>,
}

impl TokenResponse {
    /// The token to send (`token` preferred, `access_token` otherwise), if any non-empty one was given.
    pub fn bearer(&self) -> Option<&str> {
        self.token
            .as_deref()
            .filter(|t| !t.is_empty())
            .or(self.access_token.as_deref().filter(|t| !t.is_empty()))
    }

    /// How long the token may be used.
    pub fn lifetime(&self) -> Duration {
        match self.expires_in {
            Some(s) if s > 0 => Duration::from_secs(s),
            _ => DEFAULT_TOKEN_LIFETIME,
        }
    }
}

#[derive(Debug, Clone)]
struct Cached {
    token: String,
    expires_at: Instant,
}

/// Tokens cached per (registry host, scope). Time is passed in so tests can move it.
#[derive(Debug, Default)]
pub struct TokenCache {
    tokens: Mutex<HashMap<(String, String), Cached>>,
}

impl TokenCache {
    /// The cached token for (host, scope) if it is still valid at `now`.
    pub fn get(&self, host: &str, scope: &str, now: Instant) -> Option<String> {
        let tokens = self.tokens.lock().unwrap_or_else(|e| e.into_inner());
        let c = tokens.get(&(host.to_string(), scope.to_string()))?;
        (now + EXPIRY_MARGIN < c.expires_at).then(|| c.token.clone())
    }

    /// Stores a token valid for `lifetime` from `now`.
    pub fn put(&self, host: &str, scope: &str, token: String, lifetime: Duration, now: Instant) {
        let mut tokens = self.tokens.lock().unwrap_or_else(|e| e.into_inner());
        tokens.insert((host.to_string(), scope.to_string()), Cached { token, expires_at: now + lifetime });
    }

    /// Forgets the token for (host, scope), e.g. after the registry rejected it.
    pub fn invalidate(&self, host: &str, scope: &str) {
        let mut tokens = self.tokens.lock().unwrap_or_else(|e| e.into_inner());
        tokens.remove(&(host.to_string(), scope.to_string()));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn response_prefers_token_and_defaults_lifetime() {
        let r: TokenResponse = serde_json::from_str(r#"{"access_token":"a"}"#).unwrap();
        assert_eq!(r.bearer(), Some("a"));
        assert_eq!(r.lifetime(), DEFAULT_TOKEN_LIFETIME);
        let r: TokenResponse =
            serde_json::from_str(r#"{"token":"t","access_token":"a","expires_in":300}"#).unwrap();
        assert_eq!(r.bearer(), Some("t"));
        assert_eq!(r.lifetime(), Duration::from_secs(300));
        let r: TokenResponse = serde_json::from_str(r#"{"token":""}"#).unwrap();
        assert_eq!(r.bearer(), None);
    }

    #[test]
    fn cache_honours_expiry_and_scope() {
        let c = TokenCache::default();
        let t0 = Instant::now();
        c.put("r", "repository:a:pull", "tok".into(), Duration::from_secs(60), t0);
        assert_eq!(c.get("r", "repository:a:pull", t0).as_deref(), Some("tok"));
        assert_eq!(c.get("r", "repository:b:pull", t0), None);
        assert_eq!(c.get("r", "repository:a:pull", t0 + Duration::from_secs(56)), None);
        c.invalidate("r", "repository:a:pull");
        assert_eq!(c.get("r", "repository:a:pull", t0), None);
    }
}
