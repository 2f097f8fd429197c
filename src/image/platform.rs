//! Platforms (`os/arch[/variant]`) and choosing one manifest out of an index, with the variant rules
//! real registries need: exact variant first, `arm64` == `arm64/v8`, attestation (`unknown`) entries skipped.

use crate::image::manifest::Descriptor;
use serde::{Deserialize, Serialize};
use std::fmt;

/// An OCI platform.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Platform {
    pub os: String,
    pub architecture: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub variant: Option<String>,
}

/// Why a platform string was refused.
#[derive(Debug, thiserror::Error)]
#[error("invalid platform {0:?}: expected os/arch[/variant], e.g. linux/amd64")]
pub struct PlatformError(String);

impl Platform {
    /// The platform of this machine, in Go's (OCI's) names.
    pub fn host() -> Platform {
        let (arch, variant) = match std::env::consts::ARCH {
            "x86_64" => ("amd64", None),
            "aarch64" => ("arm64", Some("v8")),
            "arm" => ("arm", Some("v7")),
            "x86" => ("386", None),
            "powerpc64" => ("ppc64le", None),
            "s390x" => ("s390x", None),
            "riscv64" => ("riscv64", None),
            other => (other, None),
        };
        Platform { os: "linux".into(), architecture: arch.into(), variant: variant.map(str::to_string) }
    }

    /// Parses `os/arch[/variant]`.
    pub fn parse(s: &str) -> Result<Platform, PlatformError> {
        let parts: Vec<&str> = s.split('/').collect();
        if parts.iter().any(|p| p.is_empty()) || !(2..=3).contains(&parts.len()) {
            return Err(PlatformError(s.into()));
        }
        Ok(Platform {
            os: parts[0].to_lowercase(),
            architecture: normalise_arch(parts[1]).into(),
            variant: parts.get(2).map(|v| v.to_lowercase()),
        })
    }

    /// The variant with the implied defaults filled in (`arm64` → `v8`).
    fn effective_variant(&self) -> Option<&str> {
        match (self.architecture.as_str(), self.variant.as_deref()) {
            ("arm64", None) => Some("v8"),
            (_, v) => v,
        }
    }
}

impl fmt::Display for Platform {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.os, self.architecture)?;
        if let Some(v) = &self.variant {
            write!(f, "/{v}")?;
        }
        Ok(())
    }
}

fn normalise_arch(a: &str) -> &str {
    match a {
        "x86_64" | "x86-64" => "amd64",
        "aarch64" => "arm64",
        "armhf" => "arm",
        other => other,
    }
}

/// Picks the manifest for `want` from an index. Exact variant matches win; a missing variant on either side
/// matches when the other is the default; entries for os `unknown` (attestations) are never chosen.
pub fn select<'a>(manifests: &'a [Descriptor], want: &Platform) -> Option<&'a Descriptor> {
    let candidates = || {
        manifests.iter().filter_map(|d| d.platform.as_ref().map(|p| (d, p))).filter(|(_, p)| {
            p.os != "unknown"
                && p.os.eq_ignore_ascii_case(&want.os)
                && normalise_arch(&p.architecture) == want.architecture
        })
    };
    let want_variant = want.effective_variant();
    candidates()
        .find(|(_, p)| p.effective_variant() == want_variant)
        .or_else(|| candidates().find(|(_, p)| want_variant.is_none() || p.variant.is_none()))
        .map(|(d, _)| d)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::image::digest::Digest;

    fn desc(n: u8, os: &str, arch: &str, variant: Option<&str>) -> Descriptor {
        Descriptor {
            media_type: crate::image::manifest::OCI_MANIFEST.into(),
            digest: Digest::sha256_of(&[n]),
            size: 1,
            platform: Some(Platform {
                os: os.into(),
                architecture: arch.into(),
                variant: variant.map(Into::into),
            }),
            urls: vec![],
            annotations: Default::default(),
        }
    }

    #[test]
    fn picks_exact_and_skips_attestations() {
        let idx = vec![
            desc(0, "unknown", "unknown", None),
            desc(1, "linux", "arm", Some("v6")),
            desc(2, "linux", "arm", Some("v7")),
            desc(3, "linux", "arm64", Some("v8")),
            desc(4, "linux", "amd64", None),
        ];
        let pick = |p: &str| select(&idx, &Platform::parse(p).unwrap()).map(|d| d.digest.clone());
        assert_eq!(pick("linux/amd64"), Some(Digest::sha256_of(&[4])));
        assert_eq!(pick("linux/arm/v7"), Some(Digest::sha256_of(&[2])));
        assert_eq!(pick("linux/arm/v6"), Some(Digest::sha256_of(&[1])));
        assert_eq!(pick("linux/arm64"), Some(Digest::sha256_of(&[3])));
        assert_eq!(pick("linux/aarch64/v8"), Some(Digest::sha256_of(&[3])));
        assert_eq!(pick("linux/s390x"), None);
        assert_eq!(pick("windows/amd64"), None);
        let only_unknown = vec![desc(0, "unknown", "amd64", None)];
        assert!(select(&only_unknown, &Platform::parse("linux/amd64").unwrap()).is_none());
    }

    #[test]
    fn arm64_without_variant_matches_v8() {
        let idx = vec![desc(5, "linux", "arm64", None)];
        assert!(select(&idx, &Platform::parse("linux/arm64/v8").unwrap()).is_some());
    }

    #[test]
    fn parses_and_displays() {
        assert_eq!(Platform::parse("linux/x86_64").unwrap().to_string(), "linux/amd64");
        assert!(Platform::parse("linux").is_err());
        assert!(Platform::parse("linux//v7").is_err());
        assert_eq!(Platform::host().os, "linux");
    }
}
