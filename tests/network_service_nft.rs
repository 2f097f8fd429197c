//! The nftables Service backend on the real kernel (root): kube-proxy's nftables layout loaded
//! with `nft -f` into a simulated node namespace; ClusterIP, NodePort and LB IP balance across pod
//! namespaces, hairpin, reject without endpoints, ClientIP affinity, Local policies, incremental
//! syncs, switching modes and flushing. Traffic stays inside namespaces the test creates.

#[path = "support/network.rs"]
mod network;

use std::collections::BTreeMap;
use std::net::{Ipv4Addr, SocketAddrV4};
use std::path::Path;

use network::{Server, TestNode, UdpServer, request, udp_ask, udp_client};
use rkube::network::Protocol;
use rkube::network::netns::run_in_netns;
use rkube::proxy::{
    self, Backend, Endpoint, NftProxier, ProxyConfig, ProxyMode, Service, ServiceEndpoints, ServicePort,
    nft_apply,
};

const CLUSTER_IP: Ipv4Addr = Ipv4Addr::new(10, 96, 25, 10);
/// A LoadBalancer ingress IP; the external namespace's default route points at the node.
const LB_IP: Ipv4Addr = Ipv4Addr::new(10, 79, 25, 200);

fn service(name: &str, ip: Ipv4Addr) -> Service {
    Service {
        namespace: "default".into(),
        name: name.into(),
        cluster_ip: Some(ip),
        ports: vec![ServicePort {
            name: "http".into(),
            protocol: Protocol::Tcp,
            port: 80,
            target_port: 8080,
            node_port: None,
        }],
        load_balancer_ips: vec![],
        session_affinity_seconds: None,
        external_traffic_local: false,
        internal_traffic_local: false,
    }
}

fn endpoints(name: &str, ips: &[Ipv4Addr]) -> ServiceEndpoints {
    ServiceEndpoints {
        namespace: "default".into(),
        service: name.into(),
        port_name: "http".into(),
        endpoints: ips.iter().map(|ip| Endpoint { ip: *ip, port: 8080, ready: true, local: true }).collect(),
    }
}

/// Sends `count` requests and tallies which backend answered.
fn tally(from: &Path, to: SocketAddrV4, count: usize) -> BTreeMap<String, usize> {
    let mut hits = BTreeMap::new();
    for i in 0..count {
        let answer = request(from, to).unwrap_or_else(|e| panic!("request {i} to {to}: {e}"));
        let backend = answer.split_whitespace().next().unwrap_or_default().to_string();
        *hits.entry(backend).or_insert(0) += 1;
    }
    hits
}

/// `nft list table ip rkube-proxy` in the node (empty when the table does not exist).
fn table(node: &TestNode) -> String {
    run_in_netns(Some(&node.node_ns), || {
        let out = std::process::Command::new("nft").args(["list", "table", "ip", "rkube-proxy"]).output();
        String::from_utf8_lossy(&out.expect("run nft").stdout).into_owned()
    })
    .unwrap()
}

fn table_exists(node: &TestNode, config: &ProxyConfig) -> bool {
    run_in_netns(Some(&node.node_ns), || nft_apply::table_exists(config)).unwrap().expect("list tables")
}

#[test]
fn nft_clusterip_nodeport_lb_hairpin_affinity_reject_and_flush() {
    let node = TestNode::new(25);
    let p1 = node.net.setup("uid-n1", "n1", &[]).expect("setup n1");
    let p2 = node.net.setup("uid-n2", "n2", &[]).expect("setup n2");
    let client = node.net.setup("uid-nc", "nc", &[]).expect("setup client");
    let _s1 = Server::start(&p1.netns_path, 8080, "n1");
    let _s2 = Server::start(&p2.netns_path, 8080, "n2");
    let config = ProxyConfig { cluster_cidr: Some(node.config.pod_cidr), ..ProxyConfig::default() };
    let mut web = service("web", CLUSTER_IP);
    web.ports[0].node_port = Some(30080);
    web.load_balancer_ips = vec![LB_IP];
    let mut proxier = NftProxier::new(config.clone());
    let mut sync = |svcs: &[Service], eps: &[ServiceEndpoints]| {
        run_in_netns(Some(&node.node_ns), || proxier.sync(svcs, eps)).unwrap().expect("nft sync")
    };
    let stats = sync(std::slice::from_ref(&web), &[endpoints("web", &[p1.ip, p2.ip])]);
    assert!(stats.full && stats.services_written == 1, "{stats:?}");
    let listed = table(&node);
    assert!(listed.contains("map service-ips"), "{listed}");
    assert!(listed.contains("10.96.25.10 . tcp . 80 : goto service-"), "{listed}");
    // The iptables backend is not involved.
    assert!(!node.saved_rules().contains("RKUBE-SERVICES"));

    // ClusterIP from a pod: every request succeeds and both endpoints are used.
    let vip = SocketAddrV4::new(CLUSTER_IP, 80);
    let hits = tally(&client.netns_path, vip, 30);
    assert_eq!(hits.values().sum::<usize>(), 30);
    assert!(hits.get("n1").copied().unwrap_or(0) > 0 && hits.get("n2").copied().unwrap_or(0) > 0, "{hits:?}");

    // Hairpin: a backend reaching its own Service, including when it picks itself.
    let hits = tally(&p1.netns_path, vip, 20);
    assert_eq!(hits.values().sum::<usize>(), 20, "{hits:?}");

    // NodePort from the external namespace: both endpoints, masqueraded to a node address.
    let nodeport = SocketAddrV4::new(node.lan_node_ip(), 30080);
    let hits = tally(&node.ext_ns, nodeport, 20);
    assert_eq!(hits.len(), 2, "NodePort should balance: {hits:?}");
    let answer = request(&node.ext_ns, nodeport).expect("NodePort");
    assert!(!answer.ends_with(&node.lan_ext_ip().to_string()), "Cluster policy masquerades: {answer}");

    // LoadBalancer ingress IP from the external namespace (routed to this node).
    assert_eq!(tally(&node.ext_ns, SocketAddrV4::new(LB_IP, 80), 10).values().sum::<usize>(), 10);

    // sessionAffinity ClientIP: every request of one client lands on the same endpoint.
    let sticky = Service { session_affinity_seconds: Some(60), ..web.clone() };
    let stats = sync(std::slice::from_ref(&sticky), &[endpoints("web", &[p1.ip, p2.ip])]);
    assert!(!stats.full && stats.services_written == 1, "{stats:?}");
    let hits = tally(&client.netns_path, vip, 12);
    assert_eq!(hits.len(), 1, "affinity not honoured: {hits:?}");
    assert!(table(&node).contains("flags dynamic,timeout"));

    // One endpoint left: its chain goes, all traffic to the remaining one.
    let stats = sync(std::slice::from_ref(&web), &[endpoints("web", &[p1.ip])]);
    assert!(!stats.full, "{stats:?}");
    let listed = table(&node);
    assert!(!listed.contains(&format!("__{}/8080", p2.ip)), "stale endpoint chain kept:\n{listed}");
    assert!(!listed.contains("affinity-"), "affinity sets kept:\n{listed}");
    assert_eq!(tally(&client.netns_path, vip, 10).get("n1"), Some(&10));

    // No endpoints: ClusterIP, NodePort and LB IP connections are refused, not left hanging.
    sync(std::slice::from_ref(&web), &[]);
    for (from, to) in
        [(&client.netns_path, vip), (&node.ext_ns, nodeport), (&node.ext_ns, SocketAddrV4::new(LB_IP, 80))]
    {
        let err = request(from, to).unwrap_err();
        assert_eq!(err.kind(), std::io::ErrorKind::ConnectionRefused, "{to}: {err}");
    }
    let listed = table(&node);
    assert!(!listed.contains("/web/tcp/http {"), "chains kept without endpoints:\n{listed}");

    // Flush removes the table; a second flush is fine; the pod network's iptables rules stay.
    run_in_netns(Some(&node.node_ns), || nft_apply::flush(&config)).unwrap().expect("flush");
    run_in_netns(Some(&node.node_ns), || nft_apply::flush(&config)).unwrap().expect("flush is idempotent");
    assert!(!table_exists(&node, &config));
    assert!(node.saved_rules().contains("RKUBE-POD-MASQ"));

    drop((_s1, _s2));
    for pod in ["uid-n1", "uid-n2", "uid-nc"] {
        node.net.teardown(pod).expect("teardown");
    }
}

#[test]
fn nft_incremental_sync_updates_changed_services_and_recovers_a_lost_table() {
    let node = TestNode::new(26);
    let p1 = node.net.setup("uid-r1", "r1", &[]).expect("setup r1");
    let p2 = node.net.setup("uid-r2", "r2", &[]).expect("setup r2");
    let client = node.net.setup("uid-rc", "rc", &[]).expect("setup client");
    let _s1 = Server::start(&p1.netns_path, 8080, "r1");
    let _s2 = Server::start(&p2.netns_path, 8080, "r2");
    let (vip_a, vip_b) = (Ipv4Addr::new(10, 96, 26, 1), Ipv4Addr::new(10, 96, 26, 2));
    let config = ProxyConfig::default();
    let mut proxier = NftProxier::new(config.clone());
    let mut sync = |svcs: &[Service], eps: &[ServiceEndpoints]| {
        run_in_netns(Some(&node.node_ns), || proxier.sync(svcs, eps)).unwrap().expect("sync")
    };
    let svcs = [service("a", vip_a), service("b", vip_b)];
    let stats = sync(&svcs, &[endpoints("a", &[p1.ip]), endpoints("b", &[p1.ip])]);
    assert!(stats.full && stats.services_written == 2, "{stats:?}");
    assert_eq!(tally(&client.netns_path, SocketAddrV4::new(vip_b, 80), 3).get("r1"), Some(&3));

    // An established connection to a keeps working across the syncs below (conntrack).
    let held = run_in_netns(Some(&client.netns_path), || {
        std::net::TcpStream::connect_timeout(
            &SocketAddrV4::new(vip_a, 80).into(),
            std::time::Duration::from_secs(3),
        )
    })
    .unwrap()
    .expect("connect to a");

    // Only b changes: one service written; a's chain is the same object as before.
    let a_chain_before: String =
        table(&node).lines().find(|l| l.contains("chain service-") && l.contains("/a/")).unwrap().to_string();
    let stats = sync(&svcs, &[endpoints("a", &[p1.ip]), endpoints("b", &[p2.ip])]);
    assert!(!stats.full && stats.services_written == 1, "{stats:?}");
    assert_eq!(tally(&client.netns_path, SocketAddrV4::new(vip_a, 80), 3).get("r1"), Some(&3));
    assert_eq!(tally(&client.netns_path, SocketAddrV4::new(vip_b, 80), 3).get("r2"), Some(&3));
    assert!(table(&node).contains(&a_chain_before));

    // Service a deleted: its elements and chains go, b is untouched.
    let stats = sync(&svcs[1..], &[endpoints("b", &[p2.ip])]);
    assert_eq!(stats.services_written, 0, "{stats:?}");
    let listed = table(&node);
    assert!(!listed.contains("/a/") && !listed.contains("10.96.26.1 "), "{listed}");
    assert_eq!(tally(&client.netns_path, SocketAddrV4::new(vip_b, 80), 3).get("r2"), Some(&3));

    // b gets ClientIP affinity over both pods, and a comes back; the client sticks to one pod.
    let sticky_b = Service { session_affinity_seconds: Some(600), ..svcs[1].clone() };
    let both = [endpoints("b", &[p1.ip, p2.ip])];
    sync(&[svcs[0].clone(), sticky_b.clone()], &[endpoints("a", &[p1.ip]), both[0].clone()]);
    let stuck = tally(&client.netns_path, SocketAddrV4::new(vip_b, 80), 6);
    assert_eq!(stuck.len(), 1, "{stuck:?}");
    let pod = stuck.keys().next().unwrap().clone();

    // A restart (a new syncer) rewrites the table in one transaction while a was deleted: b never
    // stops answering, a's objects go, and the affinity entries survive (the client's address is
    // still in its pod's set before it sends anything, so it goes back to the same pod).
    let mut restarted = NftProxier::new(config.clone());
    let stats =
        run_in_netns(Some(&node.node_ns), || restarted.sync(std::slice::from_ref(&sticky_b), &both)).unwrap();
    assert!(stats.expect("restart sync").full);
    let listed = table(&node);
    assert!(!listed.contains("/a/") && !listed.contains("10.96.26.1 "), "{listed}");
    let client_ip = format!("{{ {} ", client.ip);
    let sets = listed
        .split("set affinity-")
        .skip(1)
        .filter(|set| set.split_inclusive('}').next().is_some_and(|s| s.contains(&client_ip)))
        .count();
    assert_eq!(sets, 1, "the client's affinity entry is lost:\n{listed}");
    assert_eq!(tally(&client.netns_path, SocketAddrV4::new(vip_b, 80), 6).get(&pod), Some(&6));

    // Someone deletes our table behind the proxy's back: the next sync notices and writes all.
    run_in_netns(Some(&node.node_ns), || nft_apply::flush(&config)).unwrap().expect("flush");
    assert!(request(&client.netns_path, SocketAddrV4::new(vip_b, 80)).is_err());
    let stats = sync(&svcs[1..], &[endpoints("b", &[p2.ip])]);
    assert!(stats.full, "{stats:?}");
    assert_eq!(tally(&client.netns_path, SocketAddrV4::new(vip_b, 80), 3).get("r2"), Some(&3));
    drop(held);

    run_in_netns(Some(&node.node_ns), || nft_apply::flush(&config)).unwrap().expect("flush");
    drop((_s1, _s2));
    for pod in ["uid-r1", "uid-r2", "uid-rc"] {
        node.net.teardown(pod).expect("teardown");
    }
}

#[test]
fn nft_external_traffic_policy_local_preserves_client_ip_and_udp_flows_move() {
    let node = TestNode::new(27);
    let p1 = node.net.setup("uid-t1", "t1", &[]).expect("setup t1");
    let p2 = node.net.setup("uid-t2", "t2", &[]).expect("setup t2");
    let client = node.net.setup("uid-tc", "tc", &[]).expect("setup client");
    let _s1 = Server::start(&p1.netns_path, 8080, "t1");
    let _s2 = Server::start(&p2.netns_path, 8080, "t2");
    let _u1 = UdpServer::start(&p1.netns_path, 5353, "t1");
    let _u2 = UdpServer::start(&p2.netns_path, 5353, "t2");
    let config = ProxyConfig { cluster_cidr: Some(node.config.pod_cidr), ..ProxyConfig::default() };
    let mut web = service("web", Ipv4Addr::new(10, 96, 27, 10));
    web.ports[0].node_port = Some(30080);
    web.external_traffic_local = true;
    // t2 is declared remote (as if it ran on another node): external traffic must never reach it.
    let mut eps = endpoints("web", &[p1.ip, p2.ip]);
    eps.endpoints[1].local = false;
    let dns_ip = Ipv4Addr::new(10, 96, 27, 53);
    let dns = Service {
        ports: vec![ServicePort {
            name: "dns".into(),
            protocol: Protocol::Udp,
            port: 53,
            target_port: 5353,
            node_port: None,
        }],
        ..service("dns", dns_ip)
    };
    let dns_eps = |ip| ServiceEndpoints {
        port_name: "dns".into(),
        endpoints: vec![Endpoint { ip, port: 5353, ready: true, local: true }],
        ..endpoints("dns", &[])
    };
    let mut proxier = NftProxier::new(config.clone());
    let mut sync = |eps: &[ServiceEndpoints]| {
        run_in_netns(Some(&node.node_ns), || proxier.sync(&[web.clone(), dns.clone()], eps))
            .unwrap()
            .expect("sync")
    };
    sync(&[eps.clone(), dns_eps(p1.ip)]);

    let nodeport = SocketAddrV4::new(node.lan_node_ip(), 30080);
    for _ in 0..10 {
        let answer = request(&node.ext_ns, nodeport).expect("ext -> NodePort");
        assert_eq!(answer, format!("t1 {}", node.lan_ext_ip()), "client IP must be preserved");
    }
    // Pods still reach every endpoint through the NodePort.
    let hits = tally(&client.netns_path, nodeport, 20);
    assert_eq!(hits.len(), 2, "{hits:?}");

    // A UDP flow follows its endpoint when it moves (stale conntrack entries are deleted).
    let flow = udp_client(&client.netns_path);
    let to = SocketAddrV4::new(dns_ip, 53);
    assert_eq!(udp_ask(&flow, to).expect("first answer"), "t1");
    let stats = sync(&[eps.clone(), dns_eps(p2.ip)]);
    assert_eq!((stats.full, stats.conntrack_cleared), (false, 1), "{stats:?}");
    assert_eq!(udp_ask(&flow, to).expect("answer after the move"), "t2");

    // No local endpoint any more: external clients are dropped (no answer), pods still served.
    eps.endpoints[0].local = false;
    sync(&[eps, dns_eps(p2.ip)]);
    assert!(request(&node.ext_ns, nodeport).is_err());
    assert_eq!(tally(&client.netns_path, nodeport, 4).values().sum::<usize>(), 4);

    run_in_netns(Some(&node.node_ns), || nft_apply::flush(&config)).unwrap().expect("flush");
    drop((_s1, _s2, _u1, _u2));
    for pod in ["uid-t1", "uid-t2", "uid-tc"] {
        node.net.teardown(pod).expect("teardown");
    }
}

#[test]
fn switching_proxy_mode_removes_the_other_backends_rules() {
    let node = TestNode::new(28);
    let p1 = node.net.setup("uid-w1", "w1", &[]).expect("setup w1");
    let client = node.net.setup("uid-wc", "wc", &[]).expect("setup client");
    let _s1 = Server::start(&p1.netns_path, 8080, "w1");
    let config = ProxyConfig::default();
    let vip = SocketAddrV4::new(Ipv4Addr::new(10, 96, 28, 1), 80);
    let svcs = [service("a", *vip.ip())];
    let eps = [endpoints("a", &[p1.ip])];
    let run = |mode| {
        let mut backend = Backend::new(mode, config.clone());
        run_in_netns(Some(&node.node_ns), || backend.sync(&svcs, &eps)).unwrap().expect("sync");
        assert_eq!(tally(&client.netns_path, vip, 3).get("w1"), Some(&3), "{mode}");
    };
    run(ProxyMode::Iptables);
    assert!(node.saved_rules().contains("RKUBE-SERVICES"));
    run(ProxyMode::Nftables);
    assert!(!node.saved_rules().contains("RKUBE-SERVICES"), "iptables rules left after switching");
    assert!(table_exists(&node, &config));
    run(ProxyMode::Iptables);
    assert!(!table_exists(&node, &config), "nft table left after switching back");

    run(ProxyMode::Nftables);
    run_in_netns(Some(&node.node_ns), || proxy::backend::flush_all(&config)).unwrap().expect("flush all");
    assert!(!table_exists(&node, &config));
    assert!(!node.saved_rules().contains("RKUBE-SERVICES"));
    drop(_s1);
    for pod in ["uid-w1", "uid-wc"] {
        node.net.teardown(pod).expect("teardown");
    }
}
