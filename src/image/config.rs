//! The node's registries config (YAML, default `/etc/rkube/registries.yaml`):
//!
//! ```yaml
//! mirrors:                      # tried in order before the registry itself (pulls only)
//!   docker.io: ["http://127.0.0.1:5000"]
//!   gcr.io: ["https://mirror.example:5443"]
//! locations:                    # a registry served at another address, for pulls and pushes alike
//!   gcr.io: "http://127.0.0.1:5000"
//! insecure: ["10.0.0.5:5000"]   # plain HTTP (loopback registries are plain HTTP by default)
//! ca:                           # extra CA (PEM) trusted for one registry host
//!   mirror.example:5443: /etc/rkube/certs/mirror.pem
//! ```
//! A missing file means no mirrors and no locations.
//!
//! A location is containers-registries.conf's `location` for a `prefix` that is a whole registry
//! name: `gcr.io/p/app:1` is pulled from and pushed to the location, under the same repository
//! path (`p/app`), after any mirrors for pulls. It is `http://host[:port]`, `https://host[:port]`, or
//! a bare `host[:port]` whose scheme follows `insecure`/`ca` like a registry's own. Credentials
//! and the CA are looked up by the location's `host[:port]` first, then by the registry name as
//! written (`gcr.io`), so a docker `config.json` made for the real registry keeps working.

use serde::Deserialize;
use std::collections::BTreeMap;
use std::net::IpAddr;
use std::path::{Path, PathBuf};

/// Where the node reads its registries config when no `--registries-config` is given.
pub const DEFAULT_REGISTRIES_CONFIG: &str = "/etc/rkube/registries.yaml";

/// Why the registries config could not be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("reading registries config {path}: {source}")]
    Read { path: PathBuf, source: std::io::Error },
    #[error("parsing registries config {path}: {source}")]
    Parse { path: PathBuf, source: serde_yaml_ng::Error },
    #[error(
        "registries config {path}: mirror {mirror:?} for {registry} must be http://host[:port] or https://host[:port]"
    )]
    BadMirror { path: PathBuf, registry: String, mirror: String },
    #[error(
        "registries config {path}: location {location:?} for {registry} must be [http[s]://]host[:port] (no path)"
    )]
    BadLocation { path: PathBuf, registry: String, location: String },
}

/// The parsed registries config.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RegistriesConfig {
    #[serde(default)]
    pub mirrors: BTreeMap<String, Vec<String>>,
    /// Registry name as written → the address that serves it, for pulls and pushes.
    #[serde(default)]
    pub locations: BTreeMap<String, String>,
    #[serde(default)]
    pub insecure: Vec<String>,
    #[serde(default)]
    pub ca: BTreeMap<String, PathBuf>,
}

/// HTTP or HTTPS.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scheme {
    Http,
    Https,
}

/// One place a registry's content can be fetched from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    pub scheme: Scheme,
    /// `host[:port]`, also the key for credentials and CA lookup.
    pub host: String,
    /// True when this is a mirror rather than the registry itself.
    pub mirror: bool,
    /// The registry name as written (`gcr.io`) when this endpoint is its configured location:
    /// credentials and CA not found for `host` are looked up under this name.
    pub alias: Option<String>,
}

impl Endpoint {
    /// `scheme://host` with no trailing slash.
    pub fn base_url(&self) -> String {
        let s = match self.scheme {
            Scheme::Http => "http",
            Scheme::Https => "https",
        };
        format!("{s}://{}", self.host)
    }
}

impl RegistriesConfig {
    /// Loads `path`; a missing file yields the empty config.
    pub fn load(path: &Path) -> Result<RegistriesConfig, ConfigError> {
        let text = match std::fs::read_to_string(path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(RegistriesConfig::default()),
            Err(source) => return Err(ConfigError::Read { path: path.into(), source }),
        };
        let cfg: RegistriesConfig = if text.trim().is_empty() {
            RegistriesConfig::default()
        } else {
            serde_yaml_ng::from_str(&text)
                .map_err(|source| ConfigError::Parse { path: path.into(), source })?
        };
        for (registry, mirrors) in &cfg.mirrors {
            for m in mirrors {
                if parse_mirror(m).is_none() {
                    return Err(ConfigError::BadMirror {
                        path: path.into(),
                        registry: registry.clone(),
                        mirror: m.clone(),
                    });
                }
            }
        }
        for (registry, location) in &cfg.locations {
            if parse_location(location).is_none() {
                return Err(ConfigError::BadLocation {
                    path: path.into(),
                    registry: registry.clone(),
                    location: location.clone(),
                });
            }
        }
        Ok(cfg)
    }

    /// Endpoints to try for `registry` (as written in a reference, e.g. `docker.io`): mirrors first, then
    /// the registry itself: at its configured location if any, else at `api_host`. Pushes use the last.
    pub fn endpoints(&self, registry: &str, api_host: &str) -> Vec<Endpoint> {
        let mut out: Vec<Endpoint> = self
            .mirrors
            .get(registry)
            .into_iter()
            .flatten()
            .filter_map(|m| parse_mirror(m))
            .map(|(scheme, host)| Endpoint { scheme, host, mirror: true, alias: None })
            .collect();
        let own = match self.locations.get(registry).and_then(|l| parse_location(l)) {
            Some((scheme, host)) => {
                let scheme = scheme.unwrap_or_else(|| {
                    if self.ca.contains_key(registry) { Scheme::Https } else { self.default_scheme(&host) }
                });
                Endpoint { scheme, host, mirror: false, alias: Some(registry.to_string()) }
            }
            None => Endpoint {
                scheme: self.default_scheme(api_host),
                host: api_host.to_string(),
                mirror: false,
                alias: None,
            },
        };
        out.push(own);
        out
    }

    /// HTTPS, unless the host is loopback or configured insecure and has no CA configured.
    pub fn default_scheme(&self, host: &str) -> Scheme {
        if self.ca.contains_key(host) {
            return Scheme::Https;
        }
        if is_loopback(host) || self.insecure.iter().any(|h| h == host) {
            Scheme::Http
        } else {
            Scheme::Https
        }
    }

    /// The CA file configured for `host`, if any.
    pub fn ca_file(&self, host: &str) -> Option<&Path> {
        self.ca.get(host).map(PathBuf::as_path)
    }

    /// The CA file for an endpoint: by its host, then (for a location) by the registry name it serves.
    pub fn endpoint_ca_file(&self, ep: &Endpoint) -> Option<&Path> {
        self.ca_file(&ep.host).or_else(|| ep.alias.as_deref().and_then(|a| self.ca_file(a)))
    }
}

/// `http[s]://host[:port][/]` or a bare `host[:port]` → (scheme if given, host).
fn parse_location(l: &str) -> Option<(Option<Scheme>, String)> {
    if l.contains("://") {
        return parse_mirror(l).map(|(s, h)| (Some(s), h));
    }
    let host = l.trim_end_matches('/');
    let ok = !host.is_empty()
        && host.bytes().all(|b| b.is_ascii_alphanumeric() || b".-:[]_".contains(&b))
        && !host.starts_with(['.', '-', ':']);
    ok.then(|| (None, host.to_string()))
}

/// `http[s]://host[:port][/]` → (scheme, host).
fn parse_mirror(m: &str) -> Option<(Scheme, String)> {
    let (scheme, rest) = if let Some(r) = m.strip_prefix("http://") {
        (Scheme::Http, r)
    } else if let Some(r) = m.strip_prefix("https://") {
        (Scheme::Https, r)
    } else {
        return None;
    };
    let host = rest.trim_end_matches('/');
    (!host.is_empty() && !host.contains('/')).then(|| (scheme, host.to_string()))
}

/// True for `localhost`, 127.0.0.0/8 and ::1, with or without a port.
pub fn is_loopback(host: &str) -> bool {
    let bare = if let Some(rest) = host.strip_prefix('[') {
        rest.split(']').next().unwrap_or("")
    } else {
        host.rsplit_once(':').map_or(host, |(h, _)| h)
    };
    bare == "localhost" || bare.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn demo_config_parses_and_orders_mirrors_first() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("r.yaml");
        std::fs::write(
            &p,
            "mirrors:\n  docker.io: [\"http://127.0.0.1:5000\"]\n  gcr.io: [\"http://127.0.0.1:5000/\"]\ninsecure: [\"10.1.2.3:5000\"]\n",
        )
        .unwrap();
        let c = RegistriesConfig::load(&p).unwrap();
        let e = c.endpoints("docker.io", "registry-1.docker.io");
        assert_eq!(e.len(), 2);
        assert_eq!(e[0].base_url(), "http://127.0.0.1:5000");
        assert!(e[0].mirror);
        assert_eq!(e[1].base_url(), "https://registry-1.docker.io");
        assert_eq!(c.default_scheme("10.1.2.3:5000"), Scheme::Http);
        assert_eq!(c.endpoints("quay.io", "quay.io").len(), 1);
    }

    #[test]
    fn missing_file_is_empty_and_bad_mirror_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        assert!(RegistriesConfig::load(&dir.path().join("none")).unwrap().mirrors.is_empty());
        let p = dir.path().join("bad.yaml");
        std::fs::write(&p, "mirrors:\n  docker.io: [\"ftp://x\"]\n").unwrap();
        assert!(matches!(RegistriesConfig::load(&p), Err(ConfigError::BadMirror { .. })));
        std::fs::write(&p, "mirors: {}\n").unwrap();
        assert!(matches!(RegistriesConfig::load(&p), Err(ConfigError::Parse { .. })));
    }

    #[test]
    fn loopback_detection_and_ca_forces_https() {
        for h in ["127.0.0.1:5000", "localhost", "localhost:80", "[::1]:5000", "127.1.2.3"] {
            assert!(is_loopback(h), "{h}");
        }
        for h in ["10.0.0.1:5000", "gcr.io", "localhost.example.com"] {
            assert!(!is_loopback(h), "{h}");
        }
        let mut c = RegistriesConfig::default();
        assert_eq!(c.default_scheme("127.0.0.1:5000"), Scheme::Http);
        c.ca.insert("127.0.0.1:5000".into(), "/x.pem".into());
        assert_eq!(c.default_scheme("127.0.0.1:5000"), Scheme::Https);
    }

    #[test]
    fn a_location_replaces_the_registry_itself_after_the_mirrors() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("r.yaml");
        std::fs::write(
            &p,
            "mirrors:\n  gcr.io: [\"http://10.9.9.9:5000\"]\nlocations:\n  gcr.io: \"https://127.0.0.1:5443/\"\n  \
             docker.io: \"127.0.0.1:5000\"\n  quay.io: \"reg.example:5000\"\n  ghcr.io: reg.internal\n\
             insecure: [\"reg.internal\"]\nca:\n  quay.io: /q.pem\n",
        )
        .unwrap();
        let c = RegistriesConfig::load(&p).unwrap();
        let e = c.endpoints("gcr.io", "gcr.io");
        assert_eq!(e.len(), 2);
        assert!(e[0].mirror && e[0].alias.is_none());
        assert_eq!(e[1].base_url(), "https://127.0.0.1:5443");
        assert!(!e[1].mirror);
        assert_eq!(e[1].alias.as_deref(), Some("gcr.io"));
        // Docker Hub's location replaces its API host; a bare loopback location is plain HTTP.
        let e = c.endpoints("docker.io", "registry-1.docker.io");
        assert_eq!(e.len(), 1);
        assert_eq!(e[0].base_url(), "http://127.0.0.1:5000");
        // A bare location is HTTPS, unless insecure; a CA under the registry's name applies to it.
        assert_eq!(c.endpoints("ghcr.io", "ghcr.io")[0].base_url(), "http://reg.internal");
        let quay = &c.endpoints("quay.io", "quay.io")[0];
        assert_eq!(quay.base_url(), "https://reg.example:5000");
        assert_eq!(c.endpoint_ca_file(quay), Some(Path::new("/q.pem")));
        // A registry without a location is untouched.
        let e = c.endpoints("k8s.io", "k8s.io");
        assert_eq!((e[0].base_url().as_str(), e[0].alias.as_deref()), ("https://k8s.io", None));
    }

    #[test]
    fn a_bad_location_is_one_line_naming_the_registry() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("bad.yaml");
        for bad in ["ftp://x", "http://127.0.0.1:5000/gcr", "127.0.0.1:5000/gcr", "\"\"", "\"a b\""] {
            std::fs::write(&p, format!("locations:\n  gcr.io: {bad}\n")).unwrap();
            let err = RegistriesConfig::load(&p).unwrap_err();
            assert!(matches!(err, ConfigError::BadLocation { .. }), "{bad}: {err}");
            let text = err.to_string();
            assert!(text.contains("gcr.io") && !text.contains('\n'), "{text}");
        }
        std::fs::write(&p, "locations:\n  gcr.io: [\"http://x\"]\n").unwrap();
        assert!(matches!(RegistriesConfig::load(&p), Err(ConfigError::Parse { .. })));
    }
}
