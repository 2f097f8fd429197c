//! Test fixtures shared by the iptables and nftables renderers' tests.

use super::types::{Endpoint, Protocol, ProxyConfig, Service, ServiceEndpoints, ServicePort};

pub fn web() -> Service {
    Service {
        namespace: "default".into(),
        name: "web".into(),
        cluster_ip: Some("10.96.0.10".parse().unwrap()),
        ports: vec![ServicePort {
            name: "http".into(),
            protocol: Protocol::Tcp,
            port: 80,
            target_port: 8080,
            node_port: Some(30080),
        }],
        load_balancer_ips: vec!["192.168.77.200".parse().unwrap()],
        session_affinity_seconds: None,
        external_traffic_local: false,
        internal_traffic_local: false,
    }
}

pub fn dns() -> Service {
    Service {
        namespace: "kube-system".into(),
        name: "dns".into(),
        cluster_ip: Some("10.96.0.11".parse().unwrap()),
        ports: vec![ServicePort {
            name: "dns".into(),
            protocol: Protocol::Udp,
            port: 53,
            target_port: 53,
            node_port: None,
        }],
        load_balancer_ips: vec![],
        session_affinity_seconds: None,
        external_traffic_local: false,
        internal_traffic_local: false,
    }
}

pub fn web_endpoints() -> ServiceEndpoints {
    let ep = |ip: &str, port, ready| Endpoint { ip: ip.parse().unwrap(), port, ready, local: true };
    ServiceEndpoints {
        namespace: "default".into(),
        service: "web".into(),
        port_name: "http".into(),
        endpoints: vec![
            ep("10.244.1.4", 8080, true),
            ep("10.244.1.2", 0, true),
            ep("10.244.1.3", 8080, true),
            ep("10.244.1.5", 8080, false),
        ],
    }
}

pub fn config() -> ProxyConfig {
    ProxyConfig { cluster_cidr: Some("10.244.0.0/16".parse().unwrap()), ..ProxyConfig::default() }
}
