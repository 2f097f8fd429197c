//! The node's registries config (YAML, default `/etc/rkube/registries.yaml`):
//!
//! ```yaml
//! mirrors:                      # tried in order before the registry itself
//!   docker.io: ["http://127.0.0.1:5000"]
//!   gcr.io: ["https://mirror.example:5443"]
//! insecure: ["10.0.0.5:5000"]   # plain HTTP (loopback registries are plain HTTP by default)
//! ca:                           # extra CA (PEM) trusted for one registry host
//!   mirror.example:5443: /etc/rkube/certs/mirror.pem
//! ```
//! A missing file means no mirrors.

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
}

/// The parsed registries config.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RegistriesConfig {
    #[serde(default)]
    pub mirrors: BTreeMap<String, Vec<String>>,
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
        Ok(cfg)
    }

    /// Endpoints to try for `registry` (as written in a reference, e.g. `docker.io`): mirrors first, then
    /// the registry itself at `api_host`.
    pub fn endpoints(&self, registry: &str, api_host: &str) -> Vec<Endpoint> {
        let mut out: Vec<Endpoint> = self
            .mirrors
            .get(registry)
            .into_iter()
            .flatten()
            .filter_map(|m| parse_mirror(m))
            .map(|(scheme, host)| Endpoint { scheme, host, mirror: true })
            .collect();
        out.push(Endpoint {
            scheme: self.default_scheme(api_host),
            host: api_host.to_string(),
            mirror: false,
        });
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
}
