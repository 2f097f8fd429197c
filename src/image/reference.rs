//! Image references (`[host[:port]/]path[:tag][@digest]`) parsed and normalised exactly as docker and
//! containerd do: `docker.io` is the default registry, single-component Docker Hub names get `library/`,
//! `index.docker.io` is folded into `docker.io`, and `latest` is implied when neither tag nor digest is given.

use crate::image::digest::Digest;
use std::fmt;
use std::str::FromStr;

/// The registry used when a reference names none.
pub const DEFAULT_REGISTRY: &str = "docker.io";
/// The host that actually serves the Docker Hub API.
pub const DOCKER_HUB_API_HOST: &str = "registry-1.docker.io";
const MAX_NAME_LEN: usize = 255;
const MAX_TAG_LEN: usize = 128;

/// A fully normalised image reference.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct Reference {
    registry: String,
    repository: String,
    tag: Option<String>,
    digest: Option<Digest>,
}

/// Why an image reference was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ReferenceError {
    #[error("invalid reference format: {0:?} is empty")]
    Empty(String),
    #[error("invalid reference format: repository name in {0:?} must be lowercase")]
    Uppercase(String),
    #[error("invalid reference format: {0:?}")]
    Format(String),
    #[error("invalid reference format: repository name in {0:?} is longer than 255 characters")]
    NameTooLong(String),
    #[error("invalid tag {tag:?} in {reference:?}")]
    Tag { reference: String, tag: String },
    #[error("invalid digest in {reference:?}: {source}")]
    Digest { reference: String, source: crate::image::digest::DigestError },
    #[error("invalid repository name {0:?}: cannot specify 64-byte hexadecimal strings")]
    HexName(String),
}

impl Reference {
    /// Parses and normalises `s` as `docker pull` would.
    pub fn parse(s: &str) -> Result<Reference, ReferenceError> {
        if s.is_empty() {
            return Err(ReferenceError::Empty(s.into()));
        }
        let (rest, digest) = match s.split_once('@') {
            Some((rest, d)) => {
                let digest = d
                    .parse::<Digest>()
                    .map_err(|source| ReferenceError::Digest { reference: s.into(), source })?;
                (rest, Some(digest))
            }
            None => (s, None),
        };
        // A tag is the part after the last ':' provided no '/' follows it (else the ':' is a port).
        let (name, tag) = match rest.rfind(':') {
            Some(i) if !rest[i + 1..].contains('/') => (&rest[..i], Some(&rest[i + 1..])),
            _ => (rest, None),
        };
        if let Some(tag) = tag
            && !valid_tag(tag)
        {
            return Err(ReferenceError::Tag { reference: s.into(), tag: tag.into() });
        }
        if name.is_empty() {
            return Err(ReferenceError::Format(s.into()));
        }
        if is_hex64(name) {
            return Err(ReferenceError::HexName(s.into()));
        }
        let (registry, path) = split_domain(name);
        if !valid_domain(&registry) {
            return Err(ReferenceError::Format(s.into()));
        }
        if path.chars().any(|c| c.is_ascii_uppercase()) {
            return Err(ReferenceError::Uppercase(s.into()));
        }
        if path.is_empty() || !path.split('/').all(valid_path_component) {
            return Err(ReferenceError::Format(s.into()));
        }
        let repository = if registry == DEFAULT_REGISTRY && !path.contains('/') {
            format!("library/{path}")
        } else {
            path.to_string()
        };
        if registry.len() + 1 + repository.len() > MAX_NAME_LEN {
            return Err(ReferenceError::NameTooLong(s.into()));
        }
        let tag = match (tag, &digest) {
            (Some(t), _) => Some(t.to_string()),
            (None, None) => Some("latest".to_string()),
            (None, Some(_)) => None,
        };
        Ok(Reference { registry, repository, tag, digest })
    }

    /// Builds a reference from parts already known to be valid (e.g. a repository plus a pulled digest).
    pub fn with_digest(&self, digest: Digest) -> Reference {
        Reference { digest: Some(digest), ..self.clone() }
    }

    /// The registry name as written (`docker.io`, `gcr.io`, `127.0.0.1:5000`).
    pub fn registry(&self) -> &str {
        &self.registry
    }

    /// The host:port the Distribution API is served from (`registry-1.docker.io` for Docker Hub).
    pub fn api_host(&self) -> &str {
        if self.registry == DEFAULT_REGISTRY { DOCKER_HUB_API_HOST } else { &self.registry }
    }

    /// The repository path inside the registry (`library/nginx`).
    pub fn repository(&self) -> &str {
        &self.repository
    }

    /// The tag, if any (`latest` is filled in when neither tag nor digest was given).
    pub fn tag(&self) -> Option<&str> {
        self.tag.as_deref()
    }

    /// The digest, if the reference pins one.
    pub fn digest(&self) -> Option<&Digest> {
        self.digest.as_ref()
    }

    /// What to ask the registry's manifest endpoint for: the digest if pinned, else the tag.
    pub fn manifest_reference(&self) -> String {
        match (&self.digest, &self.tag) {
            (Some(d), _) => d.to_string(),
            (None, Some(t)) => t.clone(),
            (None, None) => "latest".into(),
        }
    }

    /// `registry/repository` without tag or digest.
    pub fn name(&self) -> String {
        format!("{}/{}", self.registry, self.repository)
    }

    /// The short form docker prints (`nginx:1.10`, `gcr.io/x/y:1`).
    pub fn familiar(&self) -> String {
        let name = if self.registry == DEFAULT_REGISTRY {
            self.repository.strip_prefix("library/").unwrap_or(&self.repository).to_string()
        } else {
            self.name()
        };
        suffixed(name, self.tag.as_deref(), self.digest.as_ref())
    }
}

fn suffixed(mut name: String, tag: Option<&str>, digest: Option<&Digest>) -> String {
    if let Some(t) = tag {
        name.push(':');
        name.push_str(t);
    }
    if let Some(d) = digest {
        name.push('@');
        name.push_str(&d.to_string());
    }
    name
}

impl fmt::Display for Reference {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&suffixed(self.name(), self.tag.as_deref(), self.digest.as_ref()))
    }
}

impl fmt::Debug for Reference {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl FromStr for Reference {
    type Err = ReferenceError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Reference::parse(s)
    }
}

/// Splits `name` into (registry, path) with docker's rule: the first component is a registry when it
/// contains `.` or `:`, is `localhost`, or has uppercase letters.
fn split_domain(name: &str) -> (String, &str) {
    match name.split_once('/') {
        Some((first, rest))
            if first.contains(['.', ':'])
                || first == "localhost"
                || first.chars().any(|c| c.is_ascii_uppercase()) =>
        {
            let registry = if first == "index.docker.io" { DEFAULT_REGISTRY } else { first };
            (registry.to_string(), rest)
        }
        _ => (DEFAULT_REGISTRY.to_string(), name),
    }
}

fn valid_tag(tag: &str) -> bool {
    let word = |c: char| c.is_ascii_alphanumeric() || c == '_';
    let mut chars = tag.chars();
    matches!(chars.next(), Some(c) if word(c))
        && chars.all(|c| word(c) || c == '.' || c == '-')
        && tag.len() <= MAX_TAG_LEN
}

fn is_hex64(s: &str) -> bool {
    s.len() == 64 && s.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// `[a-z0-9]+((\.|_|__|-+)[a-z0-9]+)*`
fn valid_path_component(c: &str) -> bool {
    let b = c.as_bytes();
    if b.is_empty() || !is_alnum(b[0]) || !is_alnum(b[b.len() - 1]) {
        return false;
    }
    let mut i = 0;
    while i < b.len() {
        if is_alnum(b[i]) {
            i += 1;
            continue;
        }
        let start = i;
        while i < b.len() && !is_alnum(b[i]) {
            i += 1;
        }
        let sep = &c[start..i];
        let ok = sep == "." || sep == "_" || sep == "__" || sep.bytes().all(|x| x == b'-');
        if !ok {
            return false;
        }
    }
    true
}

fn is_alnum(b: u8) -> bool {
    b.is_ascii_lowercase() || b.is_ascii_digit()
}

/// `host[:port]` where host is dotted DNS labels or a bracketed IPv6 address.
fn valid_domain(d: &str) -> bool {
    let (host, port) = if let Some(rest) = d.strip_prefix('[') {
        match rest.split_once(']') {
            Some((ip6, tail)) => {
                if ip6.parse::<std::net::Ipv6Addr>().is_err() {
                    return false;
                }
                match tail {
                    "" => return true,
                    t => match t.strip_prefix(':') {
                        Some(p) => ("", Some(p)),
                        None => return false,
                    },
                }
            }
            None => return false,
        }
    } else {
        match d.rsplit_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (d, None),
        }
    };
    if let Some(p) = port
        && (p.is_empty() || !p.bytes().all(|b| b.is_ascii_digit()))
    {
        return false;
    }
    if host.is_empty() {
        return d.starts_with('[');
    }
    host.split('.').all(|label| {
        let b = label.as_bytes();
        !b.is_empty()
            && b[0].is_ascii_alphanumeric()
            && b[b.len() - 1].is_ascii_alphanumeric()
            && b.iter().all(|x| x.is_ascii_alphanumeric() || *x == b'-')
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const D: &str = "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

    #[test]
    fn normalises_like_docker() {
        let cases: &[(&str, &str)] = &[
            ("nginx", "docker.io/library/nginx:latest"),
            ("nginx:1.10", "docker.io/library/nginx:1.10"),
            ("library/nginx", "docker.io/library/nginx:latest"),
            ("docker.io/nginx", "docker.io/library/nginx:latest"),
            ("index.docker.io/nginx", "docker.io/library/nginx:latest"),
            ("docker.io/library/nginx:1.11", "docker.io/library/nginx:1.11"),
            ("rapa-phm/imageview:blue", "docker.io/rapa-phm/imageview:blue"),
            ("gcr.io/project/app:v1", "gcr.io/project/app:v1"),
            ("localhost/foo", "localhost/foo:latest"),
            ("localhost:5000/foo/bar:tag", "localhost:5000/foo/bar:tag"),
            ("127.0.0.1:5000/test/busybox:base", "127.0.0.1:5000/test/busybox:base"),
            ("[::1]:5000/foo", "[::1]:5000/foo:latest"),
            ("Foo/bar", "Foo/bar:latest"),
            ("a.b-c.d/e__f/g-h.i_j---k:T_a.g-1", "a.b-c.d/e__f/g-h.i_j---k:T_a.g-1"),
            ("us-central1-docker.pkg.dev/p/r/img:1", "us-central1-docker.pkg.dev/p/r/img:1"),
        ];
        for (input, want) in cases {
            let r = Reference::parse(input).unwrap_or_else(|e| panic!("{input}: {e}"));
            assert_eq!(r.to_string(), *want, "{input}");
        }
    }

    #[test]
    fn digests_and_tags() {
        let r = Reference::parse(&format!("nginx@{D}")).unwrap();
        assert_eq!(r.tag(), None);
        assert_eq!(r.digest().unwrap().to_string(), D);
        assert_eq!(r.manifest_reference(), D);
        assert_eq!(r.familiar(), format!("nginx@{D}"));
        let r = Reference::parse(&format!("localhost:5000/a:t@{D}")).unwrap();
        assert_eq!(r.tag(), Some("t"));
        assert_eq!(r.manifest_reference(), D);
        assert_eq!(r.registry(), "localhost:5000");
        let r = Reference::parse("nginx:1.10").unwrap();
        assert_eq!(
            (r.registry(), r.api_host(), r.repository()),
            ("docker.io", "registry-1.docker.io", "library/nginx")
        );
        assert_eq!(r.familiar(), "nginx:1.10");
        assert_eq!(Reference::parse("gcr.io/a/b").unwrap().familiar(), "gcr.io/a/b:latest");
    }

    #[test]
    fn rejects_invalid() {
        let bad = [
            "",
            ":tag",
            "@",
            "nginx:",
            "nginx:-x",
            "NGINX",
            "docker.io/Library/nginx",
            "a//b",
            "a/",
            "/a",
            "-a",
            "a-",
            "a..b",
            "a___b",
            "host:port:/a",
            "nginx@sha256:abc",
            "nginx@md5:0",
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
            "a:b c",
            "[::1/foo",
            "[zz]:80/foo",
            "host:99a/foo",
            "-host.io/foo",
        ];
        for b in bad {
            assert!(Reference::parse(b).is_err(), "{b:?} should fail");
        }
        let long_tag = format!("a:{}", "t".repeat(129));
        assert!(Reference::parse(&long_tag).is_err());
        let long_name = format!("a/{}", "b".repeat(260));
        assert!(matches!(Reference::parse(&long_name), Err(ReferenceError::NameTooLong(_))));
        assert!(matches!(Reference::parse("Foo"), Err(ReferenceError::Uppercase(_))));
    }
}
