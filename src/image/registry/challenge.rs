//! `WWW-Authenticate` challenge parsing (RFC 7235), quote-aware: scopes such as `repository:a:pull,push`
//! contain commas, and one header may carry several challenges.

use std::collections::BTreeMap;

/// One authentication challenge: a scheme and its parameters (names lower-cased).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Challenge {
    pub scheme: String,
    pub params: BTreeMap<String, String>,
}

impl Challenge {
    /// A parameter by (lower-case) name.
    pub fn param(&self, name: &str) -> Option<&str> {
        self.params.get(name).map(String::as_str)
    }

    /// True for the `Bearer` scheme (case-insensitive).
    pub fn is_bearer(&self) -> bool {
        self.scheme.eq_ignore_ascii_case("bearer")
    }

    /// True for the `Basic` scheme (case-insensitive).
    pub fn is_basic(&self) -> bool {
        self.scheme.eq_ignore_ascii_case("basic")
    }
}

/// Parses every challenge in a `WWW-Authenticate` header value. Malformed trailing parts are ignored.
pub fn parse(header: &str) -> Vec<Challenge> {
    let mut out: Vec<Challenge> = Vec::new();
    let mut p = Parser { s: header.as_bytes(), i: 0 };
    loop {
        p.skip_ws_and_commas();
        let Some(token) = p.token() else { break };
        p.skip_ws();
        if p.peek() == Some(b'=') {
            // `name=value` continuing the current challenge.
            p.i += 1;
            p.skip_ws();
            let value = if p.peek() == Some(b'"') { p.quoted() } else { p.token().unwrap_or_default() };
            if let Some(current) = out.last_mut() {
                current.params.insert(token.to_ascii_lowercase(), value);
            }
        } else {
            out.push(Challenge { scheme: token, params: BTreeMap::new() });
        }
    }
    out
}

struct Parser<'a> {
    s: &'a [u8],
    i: usize,
}

impl Parser<'_> {
    fn peek(&self) -> Option<u8> {
        self.s.get(self.i).copied()
    }
    fn skip_ws(&mut self) {
        while matches!(self.peek(), Some(b' ' | b'\t')) {
            self.i += 1;
        }
    }
    fn skip_ws_and_commas(&mut self) {
        while matches!(self.peek(), Some(b' ' | b'\t' | b',')) {
            self.i += 1;
        }
    }
    /// An RFC 7230 token (plus `/` and `=`-free token68 characters).
    fn token(&mut self) -> Option<String> {
        let start = self.i;
        while let Some(c) = self.peek() {
            if c.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~/:".contains(&c) {
                self.i += 1;
            } else {
                break;
            }
        }
        (self.i > start).then(|| String::from_utf8_lossy(&self.s[start..self.i]).into_owned())
    }
    fn quoted(&mut self) -> String {
        self.i += 1; // opening quote
        let mut v = Vec::new();
        while let Some(c) = self.peek() {
            self.i += 1;
            match c {
                b'\\' => {
                    if let Some(n) = self.peek() {
                        v.push(n);
                        self.i += 1;
                    }
                }
                b'"' => break,
                _ => v.push(c),
            }
        }
        String::from_utf8_lossy(&v).into_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gcr_bearer_with_scope_commas() {
        let h = r#"Bearer realm="https://gcr.io/v2/token",service="gcr.io",scope="repository:p/app:pull,push",error="invalid_token""#;
        let c = parse(h);
        assert_eq!(c.len(), 1);
        assert!(c[0].is_bearer());
        assert_eq!(c[0].param("realm"), Some("https://gcr.io/v2/token"));
        assert_eq!(c[0].param("scope"), Some("repository:p/app:pull,push"));
        assert_eq!(c[0].param("error"), Some("invalid_token"));
    }

    #[test]
    fn several_challenges_and_escapes() {
        let c = parse(r#"Basic realm="basic-realm", Bearer Realm="http://x/t?a=b",service=svc, Negotiate"#);
        assert_eq!(c.len(), 3);
        assert!(c[0].is_basic());
        assert_eq!(c[0].param("realm"), Some("basic-realm"));
        assert_eq!(c[1].param("realm"), Some("http://x/t?a=b"));
        assert_eq!(c[1].param("service"), Some("svc"));
        assert_eq!(c[2].scheme, "Negotiate");
        let c = parse(r#"Bearer realm="a\"b""#);
        assert_eq!(c[0].param("realm"), Some("a\"b"));
        assert!(parse("").is_empty());
    }
}
