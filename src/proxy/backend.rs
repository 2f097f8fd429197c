//! The proxy mode of a node (iptables or nftables) and a syncer for either.

use std::fmt;
use std::str::FromStr;

use super::apply::{self, Proxier, ProxyError, SyncStats};
use super::nft_apply::{self, NftProxier};
use super::types::{ProxyConfig, Service, ServiceEndpoints};

/// Which data plane programs the Services.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ProxyMode {
    /// kube-proxy's iptables layout through `iptables-restore`.
    #[default]
    Iptables,
    /// kube-proxy's nftables layout through `nft -f` (one table of ours).
    Nftables,
}

impl FromStr for ProxyMode {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "iptables" => Ok(Self::Iptables),
            "nftables" => Ok(Self::Nftables),
            other => Err(format!("proxy mode {other:?}: expected iptables or nftables")),
        }
    }
}

impl fmt::Display for ProxyMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Iptables => "iptables",
            Self::Nftables => "nftables",
        })
    }
}

/// A stateful syncer of either mode. After its first successful sync it removes what the other
/// mode left (a node switching modes), so there is no moment without rules.
#[derive(Debug, Clone)]
pub struct Backend {
    config: ProxyConfig,
    inner: Inner,
    other_removed: bool,
}

#[derive(Debug, Clone)]
enum Inner {
    Iptables(Proxier),
    Nftables(NftProxier),
}

impl Backend {
    pub fn new(mode: ProxyMode, config: ProxyConfig) -> Self {
        let inner = match mode {
            ProxyMode::Iptables => Inner::Iptables(Proxier::new(config.clone())),
            ProxyMode::Nftables => Inner::Nftables(NftProxier::new(config.clone())),
        };
        Self { config, inner, other_removed: false }
    }

    pub fn mode(&self) -> ProxyMode {
        match self.inner {
            Inner::Iptables(_) => ProxyMode::Iptables,
            Inner::Nftables(_) => ProxyMode::Nftables,
        }
    }

    /// Makes the next sync a full one.
    pub fn request_full_sync(&mut self) {
        match &mut self.inner {
            Inner::Iptables(p) => p.request_full_sync(),
            Inner::Nftables(p) => p.request_full_sync(),
        }
    }

    /// Programs `services` in the calling thread's network namespace.
    pub fn sync(
        &mut self,
        services: &[Service],
        endpoints: &[ServiceEndpoints],
    ) -> Result<SyncStats, ProxyError> {
        let stats = match &mut self.inner {
            Inner::Iptables(p) => p.sync(services, endpoints)?,
            Inner::Nftables(p) => p.sync(services, endpoints)?,
        };
        if !self.other_removed {
            // Once: a failure here (e.g. the other mode's tool is not installed) does not undo the
            // sync that just worked.
            self.other_removed = true;
            let removed = match self.inner {
                Inner::Iptables(_) => nft_apply::flush(&self.config).map_err(ProxyError::from),
                Inner::Nftables(_) => apply::flush(&self.config),
            };
            if let Err(e) = removed {
                tracing::warn!("removing the other proxy mode's rules: {e}");
            }
        }
        Ok(stats)
    }
}

/// Removes the rules of both modes (node reset). Idempotent.
pub fn flush_all(config: &ProxyConfig) -> Result<(), ProxyError> {
    apply::flush(config)?;
    nft_apply::flush(config)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn modes_parse_and_print() {
        for mode in [ProxyMode::Iptables, ProxyMode::Nftables] {
            assert_eq!(mode.to_string().parse::<ProxyMode>(), Ok(mode));
        }
        assert!("ipvs".parse::<ProxyMode>().unwrap_err().contains("ipvs"));
        assert_eq!(ProxyMode::default(), ProxyMode::Iptables);
    }
}
