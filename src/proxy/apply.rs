//! Loads rendered Service rules atomically and removes them again. Acts in the calling thread's
//! network namespace (wrap in `network::netns::run_in_netns` for another one).

use super::chains::{self, FixedChains};
use super::render::render_full;
use super::types::{ProxyConfig, Service, ServiceEndpoints};
use crate::network::iptables::{self, IptablesError};

/// Errors from programming Service rules.
#[derive(Debug, thiserror::Error)]
pub enum ProxyError {
    #[error("service rules: {0}")]
    Iptables(#[from] IptablesError),
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
    let p = &config.prefix;
    let existing: Vec<String> = iptables::chains_with_prefix("nat", p)?
        .into_iter()
        .filter(|c| ["-SVC-", "-EXT-", "-SEP-"].iter().any(|k| c.starts_with(&format!("{p}{k}"))))
        .collect();
    let rendered = render_full(services, endpoints, config, &existing);
    iptables::restore(&rendered.text)?;
    for (table, chain, rule) in jump_rules(config) {
        let rule: Vec<&str> = rule.iter().map(String::as_str).collect();
        iptables::ensure_rule(table, chain, &rule)?;
    }
    Ok(())
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

    #[test]
    fn prefix_length_is_checked() {
        let config = ProxyConfig { prefix: "TOOLONGX".into(), ..ProxyConfig::default() };
        assert!(matches!(apply(&[], &[], &config), Err(ProxyError::BadPrefix { .. })));
    }
}
