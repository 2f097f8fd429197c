//! Thin wrappers over the `iptables` / `iptables-restore` / `iptables-save` binaries.
//!
//! Everything acts in the network namespace of the calling thread (the child process inherits
//! it), so callers wrap these in [`super::netns::run_in_netns`] to target another namespace.

use std::io::{self, Write};
use std::process::{Command, Stdio};

/// Errors from running the iptables tools.
#[derive(Debug, thiserror::Error)]
pub enum IptablesError {
    #[error("run {binary}: {source}")]
    Spawn { binary: &'static str, source: io::Error },
    #[error("{binary} {step}: {message}")]
    Failed { binary: &'static str, step: String, message: String },
}

fn run(
    binary: &'static str,
    args: &[&str],
    stdin: Option<&str>,
    step: &str,
) -> Result<String, IptablesError> {
    let mut child = Command::new(binary)
        .args(args)
        .stdin(if stdin.is_some() { Stdio::piped() } else { Stdio::null() })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|source| IptablesError::Spawn { binary, source })?;
    if let (Some(input), Some(mut pipe)) = (stdin, child.stdin.take()) {
        pipe.write_all(input.as_bytes()).map_err(|source| IptablesError::Spawn { binary, source })?;
    }
    let output = child.wait_with_output().map_err(|source| IptablesError::Spawn { binary, source })?;
    if output.status.success() {
        return Ok(String::from_utf8_lossy(&output.stdout).into_owned());
    }
    let stderr = String::from_utf8_lossy(&output.stderr);
    let mut message = stderr.lines().next().unwrap_or("failed").trim().to_string();
    if let (Some(input), Some(n)) = (stdin, failing_line(&stderr))
        && let Some(line) = input.lines().nth(n.saturating_sub(1))
    {
        message = format!("{message} (input line {n}: {line})");
    }
    Err(IptablesError::Failed { binary, step: step.to_string(), message })
}

/// The line number from an `iptables-restore` error such as "line 7 failed".
fn failing_line(stderr: &str) -> Option<usize> {
    let at = stderr.find("line ")?;
    stderr[at + 5..].split(|c: char| !c.is_ascii_digit()).next()?.parse().ok()
}

/// Loads `input` with `iptables-restore --noflush`: chains named in `:CHAIN` lines are rewritten
/// atomically, every other chain is left alone.
pub fn restore(input: &str) -> Result<(), IptablesError> {
    run("iptables-restore", &["--noflush", "-w"], Some(input), "load rules").map(drop)
}

/// The whole ruleset of every table as `iptables-save` prints it (one process).
pub fn save_all() -> Result<String, IptablesError> {
    run("iptables-save", &[], None, "read rules")
}

/// The lines of `table`'s section (`*table` up to its `COMMIT`) in `iptables-save` output.
pub fn table_section<'a>(saved: &'a str, table: &str) -> Vec<&'a str> {
    let header = format!("*{table}");
    saved
        .lines()
        .skip_while(|l| l.trim_end() != header)
        .skip(1)
        .take_while(|l| l.trim_end() != "COMMIT")
        .collect()
}

/// How many copies of `-A <chain> <spec…>` the `table` section of `saved` holds.
pub fn count_rule(saved: &str, table: &str, chain: &str, spec: &[&str]) -> usize {
    let line = format!("-A {chain} {}", spec.join(" "));
    table_section(saved, table).iter().filter(|l| l.trim_end() == line).count()
}

/// True if the rule `spec` exists in `table`/`chain`.
pub fn rule_exists(table: &str, chain: &str, spec: &[&str]) -> Result<bool, IptablesError> {
    let mut args = vec!["-w", "-t", table, "-C", chain];
    args.extend_from_slice(spec);
    match Command::new("iptables").args(&args).stdout(Stdio::null()).stderr(Stdio::null()).status() {
        Ok(status) => Ok(status.success()),
        Err(source) => Err(IptablesError::Spawn { binary: "iptables", source }),
    }
}

/// Inserts `spec` at the top of `table`/`chain` unless it is already there (check, then insert).
pub fn ensure_rule(table: &str, chain: &str, spec: &[&str]) -> Result<(), IptablesError> {
    if rule_exists(table, chain, spec)? {
        return Ok(());
    }
    let mut args = vec!["-w", "-t", table, "-I", chain];
    args.extend_from_slice(spec);
    run("iptables", &args, None, &format!("insert into {table}/{chain}")).map(drop)
}

/// Deletes every copy of `spec` from `table`/`chain`; succeeds if there is none.
pub fn delete_rule(table: &str, chain: &str, spec: &[&str]) -> Result<(), IptablesError> {
    // Bounded: a rule can only be present a finite number of times, each pass removes one.
    for _ in 0..64 {
        if !rule_exists(table, chain, spec)? {
            return Ok(());
        }
        let mut args = vec!["-w", "-t", table, "-D", chain];
        args.extend_from_slice(spec);
        run("iptables", &args, None, &format!("delete from {table}/{chain}"))?;
    }
    Ok(())
}

/// True if `chain` exists in `table`.
pub fn chain_exists(table: &str, chain: &str) -> Result<bool, IptablesError> {
    match Command::new("iptables")
        .args(["-w", "-t", table, "-n", "-L", chain])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
    {
        Ok(status) => Ok(status.success()),
        Err(source) => Err(IptablesError::Spawn { binary: "iptables", source }),
    }
}

/// Names of the chains in `table` that start with `prefix`.
pub fn chains_with_prefix(table: &str, prefix: &str) -> Result<Vec<String>, IptablesError> {
    let saved = run("iptables-save", &["-t", table], None, &format!("read table {table}"))?;
    Ok(parse_chain_names(&saved, prefix))
}

/// Chain names declared (`:NAME policy [counters]`) in `iptables-save` output.
pub fn parse_chain_names(saved: &str, prefix: &str) -> Vec<String> {
    saved
        .lines()
        .filter_map(|l| l.strip_prefix(':'))
        .filter_map(|l| l.split_whitespace().next())
        .filter(|name| name.starts_with(prefix))
        .map(str::to_string)
        .collect()
}

/// Restore input that flushes and deletes `chains` in `table` (empty if there are none).
pub fn render_delete_chains(table: &str, chains: &[String]) -> String {
    if chains.is_empty() {
        return String::new();
    }
    let mut out = format!("*{table}\n");
    for chain in chains {
        out.push_str(&format!(":{chain} - [0:0]\n"));
    }
    for chain in chains {
        out.push_str(&format!("-X {chain}\n"));
    }
    out.push_str("COMMIT\n");
    out
}

/// Flushes and deletes every chain starting with `prefix` in each of `tables`.
pub fn delete_chains_with_prefix(tables: &[&str], prefix: &str) -> Result<(), IptablesError> {
    let mut input = String::new();
    for table in tables {
        input.push_str(&render_delete_chains(table, &chains_with_prefix(table, prefix)?));
    }
    if input.is_empty() { Ok(()) } else { restore(&input) }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_chain_names_by_prefix() {
        let saved = "*nat\n:PREROUTING ACCEPT [0:0]\n:RKUBE-SVC-AB - [0:0]\n:RKUBE-SEP-CD - [3:4]\n-A RKUBE-SVC-AB -j RKUBE-SEP-CD\nCOMMIT\n";
        assert_eq!(parse_chain_names(saved, "RKUBE-"), vec!["RKUBE-SVC-AB", "RKUBE-SEP-CD"]);
        assert_eq!(parse_chain_names(saved, "RKUBE-SEP-"), vec!["RKUBE-SEP-CD"]);
    }

    #[test]
    fn delete_input_flushes_before_deleting() {
        let text = render_delete_chains("nat", &["A".into(), "B".into()]);
        assert_eq!(text, "*nat\n:A - [0:0]\n:B - [0:0]\n-X A\n-X B\nCOMMIT\n");
        assert_eq!(render_delete_chains("nat", &[]), "");
    }

    #[test]
    fn finds_rules_per_table() {
        let saved = "# Generated\n*filter\n:FORWARD ACCEPT [0:0]\n-A FORWARD -j RKUBE-POD-FORWARD\nCOMMIT\n*nat\n:POSTROUTING ACCEPT [0:0]\n-A POSTROUTING -s 10.1.0.0/24 -j RKUBE-POD-MASQ\n-A POSTROUTING -s 10.1.0.0/24 -j RKUBE-POD-MASQ\nCOMMIT\n";
        assert_eq!(count_rule(saved, "filter", "FORWARD", &["-j", "RKUBE-POD-FORWARD"]), 1);
        assert_eq!(count_rule(saved, "nat", "FORWARD", &["-j", "RKUBE-POD-FORWARD"]), 0);
        assert_eq!(
            count_rule(saved, "nat", "POSTROUTING", &["-s", "10.1.0.0/24", "-j", "RKUBE-POD-MASQ"]),
            2
        );
        assert_eq!(table_section(saved, "nat").len(), 3);
        assert!(table_section(saved, "mangle").is_empty());
    }

    #[test]
    fn finds_failing_line() {
        assert_eq!(failing_line("iptables-restore: line 7 failed"), Some(7));
        assert_eq!(failing_line("whatever"), None);
    }
}
