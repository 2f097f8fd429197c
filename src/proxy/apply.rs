//! Loads rendered Service rules atomically and removes them again. Acts in the calling thread's
//! network namespace (wrap in `network::netns::run_in_netns` for another one).

use std::collections::{BTreeMap, BTreeSet};

use super::chains::{self, FixedChains};
use super::conntrack;
use super::render::{RuleSet, ServiceBlock, build, format, render_full};
use super::types::{ProxyConfig, Service, ServiceEndpoints};
use crate::network::iptables::{self, IptablesError};

/// Errors from programming Service rules.
#[derive(Debug, thiserror::Error)]
pub enum ProxyError {
    #[error("service rules: {0}")]
    Iptables(#[from] IptablesError),
    #[error("service rules: {0}")]
    Nft(#[from] super::nft_apply::NftError),
    #[error("service rules: {0}")]
    Conntrack(#[from] conntrack::ConntrackError),
    #[error("service rules: chain prefix {prefix:?} must be 1..=7 characters")]
    BadPrefix { prefix: String },
}

/// The jump rules from built-in chains into ours: (table, chain, rule).
pub fn jump_rules(config: &ProxyConfig) -> Vec<(&'static str, &'static str, Vec<String>)> {
    let f = FixedChains::new(&config.prefix);
    let rule = |parts: &[&str]| parts.iter().map(|s| s.to_string()).collect::<Vec<_>>();
    let new = ["-m", "conntrack", "--ctstate", "NEW"];
    let portals = ["-m", "comment", "--comment", "rkube service portals", "-j", f.services.as_str()];
    vec![
        ("nat", "PREROUTING", rule(&portals)),
        ("nat", "OUTPUT", rule(&portals)),
        (
            "nat",
            "POSTROUTING",
            rule(&["-m", "comment", "--comment", "rkube postrouting rules", "-j", &f.postrouting]),
        ),
        ("filter", "FORWARD", rule(&[&new[..], &["-j", &f.services]].concat())),
        ("filter", "OUTPUT", rule(&[&new[..], &["-j", &f.services]].concat())),
        ("filter", "FORWARD", rule(&[&new[..], &["-j", &f.external_services]].concat())),
        ("filter", "INPUT", rule(&[&new[..], &["-j", &f.external_services]].concat())),
        ("filter", "FORWARD", rule(&["-j", &f.forward])),
    ]
}

fn check_prefix(config: &ProxyConfig) -> Result<(), ProxyError> {
    if config.prefix.is_empty() || config.prefix.len() > 7 {
        return Err(ProxyError::BadPrefix { prefix: config.prefix.clone() });
    }
    Ok(())
}

/// Full sync: rewrites all our chains in one `iptables-restore --noflush` call (deleting
/// per-service chains no longer wanted), then makes sure the jump rules exist.
pub fn apply(
    services: &[Service],
    endpoints: &[ServiceEndpoints],
    config: &ProxyConfig,
) -> Result<(), ProxyError> {
    check_prefix(config)?;
    let existing = existing_service_chains(&config.prefix)?;
    let rendered = render_full(services, endpoints, config, &existing);
    iptables::restore(&rendered.text)?;
    for (table, chain, rule) in jump_rules(config) {
        let rule: Vec<&str> = rule.iter().map(String::as_str).collect();
        iptables::ensure_rule(table, chain, &rule)?;
    }
    Ok(())
}

/// Per-service chains (SVC/EXT/SEP) under the prefix currently in the nat table.
fn existing_service_chains(prefix: &str) -> Result<Vec<String>, ProxyError> {
    Ok(iptables::chains_with_prefix("nat", prefix)?
        .into_iter()
        .filter(|c| {
            ["-SVC-", "-SVL-", "-EXT-", "-SEP-"].iter().any(|k| c.starts_with(&format!("{prefix}{k}")))
        })
        .collect())
}

/// What one sync did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SyncStats {
    /// Whether every chain was rewritten (first sync, after a failure, or on request).
    pub full: bool,
    /// How many service ports had their chains rewritten.
    pub services_written: usize,
    /// How many UDP Service IPs had stale conntrack entries deleted.
    pub conntrack_cleared: usize,
}

/// A stateful syncer doing kube-proxy's partial sync: the top-level chains are rewritten every
/// time, a service's own chains only when they changed; a full sync first and after any failure.
#[derive(Debug, Clone)]
pub struct Proxier {
    config: ProxyConfig,
    programmed: Option<BTreeMap<String, ServiceBlock>>,
}

impl Proxier {
    /// A syncer whose first sync is a full one.
    pub fn new(config: ProxyConfig) -> Self {
        Self { config, programmed: None }
    }

    /// Makes the next sync a full one (e.g. hourly, or when the canary chain vanished).
    pub fn request_full_sync(&mut self) {
        self.programmed = None;
    }

    /// Records `rules` as programmed without loading them (dry runs, benchmarks).
    pub fn assume_programmed(&mut self, rules: &RuleSet) {
        self.programmed = Some(rules.services.clone());
    }

    /// The restore input for moving from what was programmed to `rules` (pure). `existing` are
    /// the per-service chains present in the kernel, used only for a full sync.
    pub fn plan(&self, rules: &RuleSet, existing: &[String]) -> (String, SyncStats) {
        match &self.programmed {
            None => {
                let text = format(rules, &self.config, None, existing);
                (text, SyncStats { full: true, services_written: rules.services.len(), conntrack_cleared: 0 })
            }
            Some(old) => {
                let changed: BTreeSet<String> = rules
                    .services
                    .iter()
                    .filter(|(k, b)| old.get(*k) != Some(*b))
                    .map(|(k, _)| k.clone())
                    .collect();
                let stale: Vec<String> = old.values().flat_map(|b| b.chains.iter().cloned()).collect();
                let text = format(rules, &self.config, Some(&changed), &stale);
                (text, SyncStats { full: false, services_written: changed.len(), conntrack_cleared: 0 })
            }
        }
    }

    /// Programs `services` in the calling thread's network namespace.
    pub fn sync(
        &mut self,
        services: &[Service],
        endpoints: &[ServiceEndpoints],
    ) -> Result<SyncStats, ProxyError> {
        check_prefix(&self.config)?;
        // Our top-level chain gone (someone flushed the tables): everything must be rewritten.
        if self.programmed.is_some()
            && !iptables::chain_exists("nat", &FixedChains::new(&self.config.prefix).services)?
        {
            self.request_full_sync();
        }
        let rules = build(services, endpoints, &self.config);
        let existing = if self.programmed.is_none() {
            existing_service_chains(&self.config.prefix)?
        } else {
            Vec::new()
        };
        let (text, stats) = self.plan(&rules, &existing);
        let loaded = iptables::restore(&text).and_then(|()| {
            for (table, chain, rule) in jump_rules(&self.config) {
                let rule: Vec<&str> = rule.iter().map(String::as_str).collect();
                iptables::ensure_rule(table, chain, &rule)?;
            }
            Ok(())
        });
        match loaded {
            Ok(()) => {
                let stale = self
                    .programmed
                    .as_ref()
                    .map(|old| stale_udp_destinations(old, &rules))
                    .unwrap_or_default();
                self.programmed = Some(rules.services);
                for ip in &stale {
                    conntrack::delete_udp_to(*ip)?;
                }
                Ok(SyncStats { conntrack_cleared: stale.len(), ..stats })
            }
            Err(e) => {
                self.programmed = None;
                Err(e.into())
            }
        }
    }
}

/// UDP Service IPs that lost an endpoint (or all of them) between `old` and `new` (pure).
pub fn stale_udp_destinations(
    old: &BTreeMap<String, ServiceBlock>,
    new: &RuleSet,
) -> BTreeSet<std::net::Ipv4Addr> {
    let mut out = BTreeSet::new();
    for (name, before) in old.iter().filter(|(_, b)| !b.udp_destinations.is_empty()) {
        let after = new.services.get(name);
        let lost_endpoint = before
            .chains
            .iter()
            .filter(|c| c.contains("-SEP-"))
            .any(|c| after.is_none_or(|a| !a.chains.contains(c)));
        if lost_endpoint {
            out.extend(before.udp_destinations.iter().copied());
        }
    }
    out
}

/// Removes the jump rules and every chain the proxy owns. Idempotent.
pub fn flush(config: &ProxyConfig) -> Result<(), ProxyError> {
    check_prefix(config)?;
    for (table, chain, rule) in jump_rules(config) {
        let rule: Vec<&str> = rule.iter().map(String::as_str).collect();
        iptables::delete_rule(table, chain, &rule)?;
    }
    let mut input = String::new();
    for table in ["filter", "nat"] {
        let mut ours: Vec<String> = iptables::chains_with_prefix(table, &config.prefix)?
            .into_iter()
            .filter(|c| chains::is_proxy_chain(&config.prefix, c))
            .collect();
        // Referencing chains first, endpoint chains last.
        ours.sort_by_key(|c| c.contains("-SEP-"));
        input.push_str(&iptables::render_delete_chains(table, &ours));
    }
    if !input.is_empty() {
        iptables::restore(&input)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jumps_point_at_our_chains() {
        let jumps = jump_rules(&ProxyConfig::default());
        assert_eq!(jumps.len(), 8);
        assert!(jumps.iter().all(|(_, _, r)| r.last().unwrap().starts_with("RKUBE-")));
        assert_eq!(jumps[3].2, vec!["-m", "conntrack", "--ctstate", "NEW", "-j", "RKUBE-SERVICES"]);
    }

    fn service(name: &str, ip: &str, endpoint: &str) -> (Service, ServiceEndpoints) {
        use crate::proxy::types::{Endpoint, Protocol, ServicePort};
        let svc = Service {
            namespace: "ns".into(),
            name: name.into(),
            cluster_ip: Some(ip.parse().unwrap()),
            ports: vec![ServicePort {
                name: "p".into(),
                protocol: Protocol::Tcp,
                port: 80,
                target_port: 80,
                node_port: None,
            }],
            load_balancer_ips: vec![],
            session_affinity_seconds: None,
            external_traffic_local: false,
            internal_traffic_local: false,
        };
        let eps = ServiceEndpoints {
            namespace: "ns".into(),
            service: name.into(),
            port_name: "p".into(),
            endpoints: vec![Endpoint { ip: endpoint.parse().unwrap(), port: 80, ready: true, local: true }],
        };
        (svc, eps)
    }

    #[test]
    fn partial_sync_rewrites_only_changed_services() {
        let config = ProxyConfig::default();
        let (a, a_eps) = service("a", "10.96.0.1", "10.1.0.1");
        let (b, b_eps) = service("b", "10.96.0.2", "10.1.0.2");
        let mut proxier = Proxier::new(config.clone());
        let first = build(&[a.clone(), b.clone()], &[a_eps.clone(), b_eps.clone()], &config);
        let (text, stats) = proxier.plan(&first, &["RKUBE-SVC-LEFTOVER".to_string()]);
        assert_eq!(stats, SyncStats { full: true, services_written: 2, conntrack_cleared: 0 });
        assert!(text.contains("-X RKUBE-SVC-LEFTOVER"));
        proxier.assume_programmed(&first);

        // b moves to another endpoint: only b's chains are written; its old SEP chain is deleted.
        let (_, b_moved) = service("b", "10.96.0.2", "10.1.0.9");
        let second = build(&[a.clone(), b.clone()], &[a_eps.clone(), b_moved], &config);
        let (text, stats) = proxier.plan(&second, &[]);
        assert_eq!(stats, SyncStats { full: false, services_written: 1, conntrack_cleared: 0 });
        let a_svc = chains::svc_chain("RKUBE", "ns/a:p", crate::proxy::types::Protocol::Tcp);
        assert!(!text.contains(&format!(":{a_svc}")), "unchanged service rewritten:\n{text}");
        assert!(text.contains(&format!("-j {a_svc}")), "top-level chain must still jump to a");
        let old_sep = chains::sep_chain("RKUBE", "ns/b:p", crate::proxy::types::Protocol::Tcp, "10.1.0.2:80");
        assert!(text.contains(&format!("-X {old_sep}")));

        // A failed sync forgets the state: the next one is full.
        proxier.request_full_sync();
        assert!(proxier.plan(&second, &[]).1.full);
    }

    #[test]
    fn udp_services_losing_endpoints_need_conntrack_cleanup() {
        use crate::proxy::types::Protocol;
        let config = ProxyConfig::default();
        let (mut a, a_eps) = service("a", "10.96.0.1", "10.1.0.1");
        a.ports[0].protocol = Protocol::Udp;
        let (b, b_eps) = service("b", "10.96.0.2", "10.1.0.2"); // TCP: never cleaned
        let before = build(&[a.clone(), b.clone()], &[a_eps.clone(), b_eps.clone()], &config);
        // Unchanged: nothing to clean.
        assert!(stale_udp_destinations(&before.services, &before).is_empty());
        // a's endpoint replaced, b's endpoint replaced: only a's IP is cleaned.
        let (_, a_moved) = service("a", "10.96.0.1", "10.1.0.9");
        let (_, b_moved) = service("b", "10.96.0.2", "10.1.0.9");
        let after = build(&[a.clone(), b.clone()], &[a_moved, b_moved], &config);
        let stale = stale_udp_destinations(&before.services, &after);
        assert_eq!(
            stale.into_iter().collect::<Vec<_>>(),
            vec!["10.96.0.1".parse::<std::net::Ipv4Addr>().unwrap()]
        );
        // a loses all endpoints (its chains disappear): cleaned too.
        let none = build(&[a, b], &[b_eps], &config);
        assert_eq!(stale_udp_destinations(&before.services, &none).len(), 1);
    }

    #[test]
    fn prefix_length_is_checked() {
        let config = ProxyConfig { prefix: "TOOLONGX".into(), ..ProxyConfig::default() };
        assert!(matches!(apply(&[], &[], &config), Err(ProxyError::BadPrefix { .. })));
    }
}
