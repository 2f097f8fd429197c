//! Startup checks of the node settings the Service data plane depends on.

use crate::network::sysctl;

/// Problems found in the calling thread's network namespace (empty when all is well).
pub fn check_node() -> Vec<String> {
    evaluate(
        sysctl::read("net.ipv4.ip_forward").as_deref(),
        sysctl::read("net.bridge.bridge-nf-call-iptables").as_deref(),
    )
}

/// The pure judgement behind [`check_node`].
pub fn evaluate(ip_forward: Option<&str>, bridge_nf_call_iptables: Option<&str>) -> Vec<String> {
    let mut problems = Vec::new();
    if ip_forward != Some("1") {
        problems.push("net.ipv4.ip_forward is not 1: Service traffic to pods is not forwarded".to_string());
    }
    match bridge_nf_call_iptables {
        Some("1") => {}
        Some(_) => problems.push(
            "net.bridge.bridge-nf-call-iptables is not 1: pod -> Service -> pod on one bridge fails"
                .to_string(),
        ),
        None => problems.push(
            "br_netfilter is not loaded: pod -> Service -> pod on one bridge fails (modprobe br_netfilter)"
                .to_string(),
        ),
    }
    problems
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn judges_settings() {
        assert!(evaluate(Some("1"), Some("1")).is_empty());
        assert_eq!(evaluate(Some("0"), Some("1")).len(), 1);
        assert!(evaluate(Some("1"), None)[0].contains("br_netfilter"));
        assert!(evaluate(Some("1"), Some("0"))[0].contains("bridge-nf-call-iptables"));
    }
}
