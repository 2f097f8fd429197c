//! Loads the nftables rendering with `nft -f -` (one transaction per sync) and removes our table.
//! Acts in the calling thread's network namespace.

use std::io::{self, Write};
use std::process::{Command, Stdio};

use super::apply::{ProxyError, SyncStats};
use super::conntrack;
use super::nft::{self, NftRuleSet};
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

/// kube-proxy's nftables sync: the first sync (and any after a failure, or when the table
/// vanished) replaces the whole table in one transaction; later ones touch only what changed.
#[derive(Debug, Clone)]
pub struct NftProxier {
    config: ProxyConfig,
    programmed: Option<NftRuleSet>,
}

impl NftProxier {
    /// A syncer whose first sync is a full one.
    pub fn new(config: ProxyConfig) -> Self {
        Self { config, programmed: None }
    }

    /// Makes the next sync a full one.
    pub fn request_full_sync(&mut self) {
        self.programmed = None;
    }

    /// Records `rules` as programmed without loading them (dry runs, benchmarks).
    pub fn assume_programmed(&mut self, rules: NftRuleSet) {
        self.programmed = Some(rules);
    }

    /// The transaction moving from what was programmed to `rules` (pure).
    pub fn plan(&self, rules: &NftRuleSet) -> (String, SyncStats) {
        match &self.programmed {
            None => (
                nft::full(rules, &self.config),
                SyncStats { full: true, services_written: rules.services.len(), conntrack_cleared: 0 },
            ),
            Some(old) => {
                let written =
                    nft::changed(old, rules).iter().filter(|k| rules.services.contains_key(*k)).count();
                (
                    nft::partial(old, rules, &self.config),
                    SyncStats { full: false, services_written: written, conntrack_cleared: 0 },
                )
            }
        }
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
        let rules = nft::build(services, endpoints, &self.config);
        let (text, stats) = self.plan(&rules);
        let loaded = if stats.full {
            load(&text)
        } else {
            let canary = format!("add chain ip {} services\n", nft::table_name(&self.config));
            load(&(canary + &text)).or_else(|e| {
                tracing::info!("partial nftables sync failed ({e}); syncing everything");
                self.request_full_sync();
                load(&nft::full(&rules, &self.config))
            })
        };
        let stats = if self.programmed.is_none() {
            SyncStats { full: true, services_written: rules.services.len(), conntrack_cleared: 0 }
        } else {
            stats
        };
        match loaded {
            Ok(()) => {
                let stale = self
                    .programmed
                    .as_ref()
                    .map(|old| nft::stale_udp_destinations(old, &rules))
                    .unwrap_or_default();
                self.programmed = Some(rules);
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
    fn plan_is_full_first_then_partial() {
        let config = ProxyConfig::default();
        let mut proxier = NftProxier::new(config.clone());
        let (text, stats) = proxier.plan(&NftRuleSet::default());
        assert!(stats.full && text.contains("delete table ip rkube-proxy"));
        proxier.assume_programmed(NftRuleSet::default());
        let (text, stats) = proxier.plan(&NftRuleSet::default());
        assert!(!stats.full && text.is_empty(), "{text}");
        proxier.request_full_sync();
        assert!(proxier.plan(&NftRuleSet::default()).1.full);
    }
}
