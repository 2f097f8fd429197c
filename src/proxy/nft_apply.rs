//! Loads the nftables rendering with `nft -f -` (one transaction per sync) and removes our table.
//! Acts in the calling thread's network namespace.

use std::io::{self, Write};
use std::process::{Command, Stdio};

use std::collections::{BTreeSet, HashMap};
use std::net::Ipv4Addr;

use super::apply::{ProxyError, SyncStats};
use super::conntrack;
use super::nft::{self, NftRuleSet};
use super::render::EndpointIndex;
use super::types::{ProxyConfig, Service, ServiceEndpoints};

/// Errors from running `nft`.
#[derive(Debug, thiserror::Error)]
pub enum NftError {
    #[error("run nft: {0}")]
    Spawn(#[source] io::Error),
    #[error("nft {step}: {message}")]
    Failed { step: &'static str, message: String },
}

/// Runs `nft` with `args`, feeding `input` on stdin; returns stdout.
fn run(args: &[&str], input: Option<&str>, step: &'static str) -> Result<String, NftError> {
    let mut child = Command::new("nft")
        .args(args)
        .stdin(if input.is_some() { Stdio::piped() } else { Stdio::null() })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(NftError::Spawn)?;
    if let (Some(text), Some(mut pipe)) = (input, child.stdin.take()) {
        pipe.write_all(text.as_bytes()).map_err(NftError::Spawn)?;
    }
    let output = child.wait_with_output().map_err(NftError::Spawn)?;
    if output.status.success() {
        return Ok(String::from_utf8_lossy(&output.stdout).into_owned());
    }
    // nft prints "<cmdline>:N:C-C: Error: …" followed by the offending line: keep both short.
    let stderr = String::from_utf8_lossy(&output.stderr);
    let mut lines = stderr.lines().filter(|l| !l.trim().is_empty());
    let first = lines.next().unwrap_or("failed").trim().to_string();
    let message = match lines.next() {
        Some(line) => format!("{first} (in: {})", line.trim()),
        None => first,
    };
    Err(NftError::Failed { step, message })
}

/// Loads `transaction` atomically (`nft -f -`).
pub fn load(transaction: &str) -> Result<(), NftError> {
    if transaction.is_empty() {
        return Ok(());
    }
    run(&["-f", "-"], Some(transaction), "load rules").map(drop)
}

/// Whether our table exists (`nft list tables`, cheap whatever the table's size).
pub fn table_exists(config: &ProxyConfig) -> Result<bool, NftError> {
    let out = run(&["list", "tables", "ip"], None, "list tables")?;
    Ok(parse_tables(&out).iter().any(|t| *t == nft::table_name(config)))
}

/// What our table holds (`nft -j list chains ip`, `nft -j list sets ip`: a fraction of a second
/// at 10,000 Services, where listing the table takes seconds); `None` when it does not exist.
pub fn existing(config: &ProxyConfig) -> Result<Option<nft::Existing>, NftError> {
    let chains = run(&["-j", "list", "chains", "ip"], None, "list chains")?;
    let sets = run(&["-j", "list", "sets", "ip"], None, "list sets")?;
    Ok(parse_existing(&chains, &sets, &nft::table_name(config)))
}

/// [`existing`] from nft's JSON listings (pure): the chains and sets of `table`.
pub fn parse_existing(chains: &str, sets: &str, table: &str) -> Option<nft::Existing> {
    let objects = |text: &str, kind: &str| -> Vec<serde_json::Value> {
        let listed: serde_json::Value = serde_json::from_str(text).unwrap_or_default();
        let items = listed.get("nftables").and_then(|v| v.as_array()).cloned().unwrap_or_default();
        items
            .into_iter()
            .filter_map(|item| item.get(kind).cloned())
            .filter(|o| o.get("table").and_then(|t| t.as_str()) == Some(table))
            .collect()
    };
    let name = |o: &serde_json::Value| o.get("name").and_then(|n| n.as_str()).map(str::to_string);
    let chains: BTreeSet<String> = objects(chains, "chain").iter().filter_map(name).collect();
    if chains.is_empty() {
        return None;
    }
    let sets = objects(sets, "set")
        .iter()
        .filter_map(|o| {
            let timeout = o.get("timeout").and_then(|t| t.as_u64()).and_then(|t| u32::try_from(t).ok());
            Some((name(o)?, timeout))
        })
        .collect();
    Some(nft::Existing { chains, sets })
}

/// Table names from `nft list tables` output (`table ip rkube-proxy` lines).
pub fn parse_tables(out: &str) -> Vec<&str> {
    out.lines().filter_map(|l| l.trim().strip_prefix("table ip ")).map(str::trim).collect()
}

/// Removes our table (and with it every rule, map and set of the nftables backend). Idempotent.
pub fn flush(config: &ProxyConfig) -> Result<(), NftError> {
    // `add` first so that the delete never fails on a missing table: one transaction.
    let t = nft::table_name(config);
    match load(&format!("add table ip {t}\n{}", nft::delete_table(config))) {
        // Without nft no table of ours can have been made: nothing to remove.
        Err(NftError::Spawn(e)) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        other => other,
    }
}

/// One Service's input to the last sync: the Service, its endpoint lists, its ports' block names.
type ServiceInput = (Service, Vec<ServiceEndpoints>, Vec<String>);

/// What was programmed: the rules, and per Service (namespace, name) the input they came from.
#[derive(Debug, Clone, Default)]
struct State {
    rules: NftRuleSet,
    /// The Service, its endpoint lists and the names of its ports' blocks.
    inputs: HashMap<(String, String), ServiceInput>,
}

/// A planned sync: the transaction, and the state to keep once it loaded.
#[derive(Debug)]
pub struct Pending {
    /// The `nft -f` input.
    pub text: String,
    pub stats: SyncStats,
    state: State,
    stale_udp: BTreeSet<Ipv4Addr>,
}

/// kube-proxy's nftables sync: the first sync (and any after a failure, or when the table
/// vanished) replaces the whole table in one transaction; later ones touch only what changed.
/// Only Services whose Service or endpoints changed since the last sync are rendered again.
#[derive(Debug, Clone)]
pub struct NftProxier {
    config: ProxyConfig,
    programmed: Option<State>,
    /// Our table as listed before a full sync: the full sync then keeps its affinity entries.
    existing: Option<nft::Existing>,
}

impl NftProxier {
    /// A syncer whose first sync is a full one.
    pub fn new(config: ProxyConfig) -> Self {
        Self { config, programmed: None, existing: None }
    }

    /// Makes the next sync a full one.
    pub fn request_full_sync(&mut self) {
        self.programmed = None;
    }

    /// Plans the transaction moving from what was programmed to `services` (pure). Until
    /// [`Self::commit`], the syncer counts as having nothing programmed (a failed load means a
    /// full sync next).
    pub fn plan(&mut self, services: &[Service], endpoints: &[ServiceEndpoints]) -> Pending {
        let old = self.programmed.take();
        let full = old.is_none();
        let State { rules: mut old_rules, inputs: mut old_inputs } = old.unwrap_or_default();
        let mut by_service: HashMap<(&str, &str), Vec<&ServiceEndpoints>> =
            HashMap::with_capacity(services.len());
        for e in endpoints {
            by_service.entry((e.namespace.as_str(), e.service.as_str())).or_default().push(e);
        }
        let mut state = State { inputs: HashMap::with_capacity(services.len()), ..State::default() };
        let mut dirty = BTreeSet::new();
        for svc in services {
            let eps = by_service.remove(&(svc.namespace.as_str(), svc.name.as_str())).unwrap_or_default();
            let key = (svc.namespace.clone(), svc.name.clone());
            let same = old_inputs.get(&key).is_some_and(|(s, e, _)| {
                s == svc && e.len() == eps.len() && e.iter().zip(&eps).all(|(a, b)| a == *b)
            });
            if same && let Some(input) = old_inputs.remove(&key) {
                for spn in &input.2 {
                    if let Some((spn, block)) = old_rules.services.remove_entry(spn) {
                        state.rules.services.insert(spn, block);
                    }
                }
                state.inputs.insert(key, input);
                continue;
            }
            let mut spns = Vec::new();
            for (spn, block) in
                nft::service_blocks(svc, &EndpointIndex::new(eps.iter().copied()), &self.config)
            {
                dirty.insert(spn.clone());
                spns.push(spn.clone());
                state.rules.services.insert(spn, block);
            }
            state.inputs.insert(key, (svc.clone(), eps.into_iter().cloned().collect(), spns));
        }
        // What is left of the old rules: ports of changed or deleted Services.
        dirty.extend(old_rules.services.keys().cloned());
        let changed: BTreeSet<String> =
            dirty.into_iter().filter(|k| old_rules.services.get(k) != state.rules.services.get(k)).collect();
        let (text, stats) = if full {
            let written = state.rules.services.len();
            (
                match self.existing.take() {
                    Some(existing) => nft::full_keeping(&state.rules, &self.config, &existing),
                    None => nft::full(&state.rules, &self.config),
                },
                SyncStats { full, services_written: written, conntrack_cleared: 0 },
            )
        } else {
            let written = changed.iter().filter(|k| state.rules.services.contains_key(*k)).count();
            (
                nft::partial_of(&old_rules, &state.rules, &changed, &self.config),
                SyncStats { full, services_written: written, conntrack_cleared: 0 },
            )
        };
        let stale_udp = nft::stale_udp_destinations(&old_rules, &state.rules);
        Pending { text, stats, state, stale_udp }
    }

    /// Records `pending` as programmed (after loading it, or without: dry runs, benchmarks).
    pub fn commit(&mut self, pending: Pending) {
        self.programmed = Some(pending.state);
    }

    /// Programs `services` in the calling thread's network namespace. A partial sync starts with a
    /// no-op on our table, so it fails when the table vanished (someone flushed the ruleset; listing
    /// a large table to check would cost seconds): then, and after any other failed partial sync, a
    /// full sync follows at once.
    pub fn sync(
        &mut self,
        services: &[Service],
        endpoints: &[ServiceEndpoints],
    ) -> Result<SyncStats, ProxyError> {
        if self.programmed.is_none() {
            // A restart, or after a failure: start from what the kernel holds.
            self.existing = existing(&self.config).unwrap_or_else(|e| {
                tracing::info!("listing nftables objects failed ({e}); replacing the table");
                None
            });
        }
        let keeping = self.existing.is_some();
        let mut pending = self.plan(services, endpoints);
        let loaded = if pending.stats.full {
            match load(&pending.text) {
                // Kept objects that no longer fit (e.g. a base chain an older version defined
                // otherwise): replace the table instead.
                Err(e) if keeping => {
                    tracing::info!("full nftables sync over the existing table failed ({e}); replacing it");
                    load(&nft::full(&pending.state.rules, &self.config))
                }
                other => other,
            }
        } else {
            let canary = format!("add chain ip {} services\n", nft::table_name(&self.config));
            load(&(canary + &pending.text)).or_else(|e| {
                tracing::info!("partial nftables sync failed ({e}); syncing everything");
                pending.stats = SyncStats {
                    full: true,
                    services_written: pending.state.rules.services.len(),
                    conntrack_cleared: 0,
                };
                // The endpoints this change removed still get their UDP flows flushed.
                load(&nft::full(&pending.state.rules, &self.config))
            })
        };
        loaded?;
        let (stats, stale) = (pending.stats, std::mem::take(&mut pending.stale_udp));
        self.commit(pending);
        for ip in &stale {
            conntrack::delete_udp_to(*ip)?;
        }
        Ok(SyncStats { conntrack_cleared: stale.len(), ..stats })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_table_list() {
        let out = "table ip filter\ntable ip rkube-proxy\ntable ip nat\n";
        assert_eq!(parse_tables(out), vec!["filter", "rkube-proxy", "nat"]);
        assert!(parse_tables("").is_empty());
    }

    #[test]
    fn parses_our_tables_chains_and_sets_from_json() {
        let chains = r#"{"nftables": [{"metainfo": {"version": "1.0.6"}},
            {"chain": {"family": "ip", "table": "rkube-proxy", "name": "services", "handle": 9}},
            {"chain": {"family": "ip", "table": "other", "name": "input", "handle": 1}},
            {"chain": {"family": "ip", "table": "rkube-proxy", "name": "endpoint-X", "handle": 12}}]}"#;
        let sets = r#"{"nftables": [{"metainfo": {}},
            {"set": {"family": "ip", "name": "affinity-X", "table": "rkube-proxy", "type": "ipv4_addr",
                     "flags": ["timeout"], "timeout": 10800, "elem": [{"elem": {"val": "1.2.3.4"}}]}},
            {"set": {"family": "ip", "name": "s", "table": "other", "type": "ipv4_addr"}}]}"#;
        let found = parse_existing(chains, sets, "rkube-proxy").unwrap();
        assert_eq!(found.chains.iter().collect::<Vec<_>>(), ["endpoint-X", "services"]);
        assert_eq!(found.sets.into_iter().collect::<Vec<_>>(), [("affinity-X".to_string(), Some(10800))]);
        // No chain of ours: no table of ours.
        assert_eq!(parse_existing(r#"{"nftables": []}"#, sets, "rkube-proxy"), None);
        assert_eq!(parse_existing("", "", "rkube-proxy"), None);
    }

    #[test]
    fn plan_is_full_first_then_renders_only_changed_services() {
        use crate::proxy::types::{Endpoint, Protocol, ServicePort};
        let config = ProxyConfig::default();
        let svc = |name: &str, ip: [u8; 4]| Service {
            namespace: "ns".into(),
            name: name.into(),
            cluster_ip: Some(ip.into()),
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
        let eps = |name: &str, ip: [u8; 4]| ServiceEndpoints {
            namespace: "ns".into(),
            service: name.into(),
            port_name: "p".into(),
            endpoints: vec![Endpoint { ip: ip.into(), port: 80, ready: true, local: true }],
        };
        let svcs = [svc("a", [10, 96, 0, 1]), svc("b", [10, 96, 0, 2])];
        let mut proxier = NftProxier::new(config.clone());
        let first = proxier.plan(&svcs, &[eps("a", [10, 1, 0, 1]), eps("b", [10, 1, 0, 2])]);
        assert!(first.stats.full && first.stats.services_written == 2);
        assert!(first.text.contains("delete table ip rkube-proxy"));
        // The same input, pure: the rendering equals build()'s.
        let built = nft::build(&svcs, &[eps("a", [10, 1, 0, 1]), eps("b", [10, 1, 0, 2])], &config);
        assert_eq!(first.state.rules, built);
        proxier.commit(first);

        let same = proxier.plan(&svcs, &[eps("b", [10, 1, 0, 2]), eps("a", [10, 1, 0, 1])]);
        assert!(
            !same.stats.full && same.stats.services_written == 0 && same.text.is_empty(),
            "{}",
            same.text
        );
        proxier.commit(same);

        // b's endpoint moves: only b is in the transaction.
        let moved = proxier.plan(&svcs, &[eps("a", [10, 1, 0, 1]), eps("b", [10, 1, 0, 9])]);
        assert_eq!(moved.stats.services_written, 1);
        assert!(moved.text.contains("/b/") && !moved.text.contains("/a/"), "{}", moved.text);
        // Not committed (the load failed): the next plan is a full one.
        let again = proxier.plan(&svcs, &[eps("a", [10, 1, 0, 1]), eps("b", [10, 1, 0, 9])]);
        assert!(again.stats.full);
        proxier.commit(again);

        // a deleted: its elements and chains go.
        let gone = proxier.plan(&svcs[1..], &[eps("b", [10, 1, 0, 9])]);
        assert_eq!(gone.stats.services_written, 0);
        assert!(
            gone.text.contains("delete element") && gone.text.contains("/a/") && !gone.text.contains("add ")
        );
        proxier.request_full_sync();
        assert!(proxier.plan(&svcs, &[]).stats.full);
    }
}
