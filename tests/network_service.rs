//! Service data plane on the real kernel (root): rendered kube-proxy-style rules applied in a
//! simulated node namespace; ClusterIP load-balances across endpoints in pod namespaces,
//! NodePort is reachable from a separate namespace, hairpin works, updates and flush clean up.

#[path = "support/network.rs"]
mod network;

use std::collections::BTreeMap;
use std::net::{Ipv4Addr, SocketAddrV4};

use network::{Server, TestNode, UdpServer, request, udp_ask, udp_client};
use rkube::network::Protocol;
use rkube::network::netns::run_in_netns;
use rkube::proxy::{self, Endpoint, ProxyConfig, Service, ServiceEndpoints, ServicePort, chains};

const CLUSTER_IP: Ipv4Addr = Ipv4Addr::new(10, 96, 21, 10);
/// A LoadBalancer ingress IP; the external namespace's default route points at the node.
const LB_IP: Ipv4Addr = Ipv4Addr::new(10, 79, 21, 200);

fn service() -> Service {
    Service {
        namespace: "default".into(),
        name: "web".into(),
        cluster_ip: Some(CLUSTER_IP),
        ports: vec![ServicePort {
            name: "http".into(),
            protocol: Protocol::Tcp,
            port: 80,
            target_port: 8080,
            node_port: Some(30080),
        }],
        load_balancer_ips: vec![LB_IP],
        session_affinity_seconds: None,
        external_traffic_local: false,
        internal_traffic_local: false,
    }
}

fn endpoints(ips: &[Ipv4Addr]) -> ServiceEndpoints {
    ServiceEndpoints {
        namespace: "default".into(),
        service: "web".into(),
        port_name: "http".into(),
        endpoints: ips.iter().map(|ip| Endpoint { ip: *ip, port: 8080, ready: true, local: true }).collect(),
    }
}

/// Sends `count` requests and tallies which backend answered.
fn tally(from: &std::path::Path, to: SocketAddrV4, count: usize) -> BTreeMap<String, usize> {
    let mut hits = BTreeMap::new();
    for i in 0..count {
        let answer = request(from, to).unwrap_or_else(|e| panic!("request {i} to {to}: {e}"));
        let backend = answer.split_whitespace().next().unwrap_or_default().to_string();
        *hits.entry(backend).or_insert(0) += 1;
    }
    hits
}

#[test]
fn clusterip_and_nodeport_balance_across_pods_and_flush_cleans_up() {
    let node = TestNode::new(21);
    let p1 = node.net.setup("uid-s1", "s1", &[]).expect("setup s1");
    let p2 = node.net.setup("uid-s2", "s2", &[]).expect("setup s2");
    let client = node.net.setup("uid-c", "c", &[]).expect("setup client");
    let _s1 = Server::start(&p1.netns_path, 8080, "s1");
    let _s2 = Server::start(&p2.netns_path, 8080, "s2");
    let config = ProxyConfig { cluster_cidr: Some(node.config.pod_cidr), ..ProxyConfig::default() };
    let apply = |eps: &[Ipv4Addr]| {
        let (svc, eps) = ([service()], [endpoints(eps)]);
        run_in_netns(Some(&node.node_ns), || proxy::apply(&svc, &eps, &config)).unwrap().expect("apply rules")
    };
    // The pod network prepared the node's sysctls; the proxy's startup check agrees.
    let problems = run_in_netns(Some(&node.node_ns), proxy::checks::check_node).unwrap();
    assert!(problems.is_empty(), "{problems:?}");
    apply(&[p1.ip, p2.ip]);
    apply(&[p1.ip, p2.ip]); // a second full sync is idempotent
    let saved = node.saved_rules();
    assert_eq!(saved.matches("-j RKUBE-SERVICES").count(), 4, "jump rules stay single:\n{saved}");

    // ClusterIP from a pod: every request succeeds and both endpoints are used.
    let vip = SocketAddrV4::new(CLUSTER_IP, 80);
    let hits = tally(&client.netns_path, vip, 30);
    assert_eq!(hits.values().sum::<usize>(), 30);
    assert!(hits.get("s1").copied().unwrap_or(0) > 0 && hits.get("s2").copied().unwrap_or(0) > 0, "{hits:?}");

    // Hairpin: a backend reaching its own Service, including when it picks itself.
    let hits = tally(&p1.netns_path, vip, 20);
    assert_eq!(hits.values().sum::<usize>(), 20, "{hits:?}");

    // NodePort from the external namespace, masqueraded to a node address.
    let nodeport = SocketAddrV4::new(node.lan_node_ip(), 30080);
    let hits = tally(&node.ext_ns, nodeport, 20);
    assert_eq!(hits.values().sum::<usize>(), 20);
    assert!(hits.len() == 2, "NodePort should balance too: {hits:?}");

    // LoadBalancer ingress IP from the external namespace (routed to this node).
    let hits = tally(&node.ext_ns, SocketAddrV4::new(LB_IP, 80), 10);
    assert_eq!(hits.values().sum::<usize>(), 10);

    // sessionAffinity ClientIP: every request of one client lands on the same endpoint.
    let sticky = [Service { session_affinity_seconds: Some(60), ..service() }];
    let eps = [endpoints(&[p1.ip, p2.ip])];
    run_in_netns(Some(&node.node_ns), || proxy::apply(&sticky, &eps, &config))
        .unwrap()
        .expect("apply sticky");
    let hits = tally(&client.netns_path, vip, 10);
    assert_eq!(hits.len(), 1, "affinity not honoured: {hits:?}");

    // Endpoint removed: its chain disappears and all traffic goes to the remaining one.
    let sep_s2 = chains::sep_chain("RKUBE", "default/web:http", Protocol::Tcp, &format!("{}:8080", p2.ip));
    assert!(node.chains("RKUBE-SEP-").contains(&sep_s2));
    apply(&[p1.ip]);
    assert!(!node.chains("RKUBE-SEP-").contains(&sep_s2), "stale endpoint chain kept");
    assert_eq!(tally(&client.netns_path, vip, 10).get("s1"), Some(&10));

    // No endpoints: connections are rejected, not left hanging.
    apply(&[]);
    let err = request(&client.netns_path, vip).unwrap_err();
    assert_eq!(err.kind(), std::io::ErrorKind::ConnectionRefused, "{err}");
    assert!(node.chains("RKUBE-SVC-").is_empty());

    // Flush removes every proxy chain and jump, leaving the pod network's own rules alone.
    run_in_netns(Some(&node.node_ns), || proxy::flush(&config)).unwrap().expect("flush");
    run_in_netns(Some(&node.node_ns), || proxy::flush(&config)).unwrap().expect("flush is idempotent");
    let left: Vec<String> =
        node.chains("RKUBE").into_iter().filter(|c| chains::is_proxy_chain("RKUBE", c)).collect();
    assert!(left.is_empty(), "{left:?}");
    assert!(!node.saved_rules().contains("RKUBE-SERVICES"));
    assert!(node.saved_rules().contains("RKUBE-POD-MASQ"));

    drop((_s1, _s2));
    for pod in ["uid-s1", "uid-s2", "uid-c"] {
        node.net.teardown(pod).expect("teardown");
    }
    assert!(node.chains("RKUBE").is_empty(), "{:?}", node.chains("RKUBE"));
    assert!(!node.saved_rules().contains("RKUBE"));
}

fn named_service(name: &str, ip: Ipv4Addr) -> Service {
    Service { name: name.into(), cluster_ip: Some(ip), load_balancer_ips: vec![], ..service() }
}

fn named_endpoints(name: &str, ip: Ipv4Addr) -> ServiceEndpoints {
    ServiceEndpoints { service: name.into(), ..endpoints(&[ip]) }
}

#[test]
fn partial_sync_updates_changed_services_and_removes_deleted_ones() {
    let node = TestNode::new(22);
    let p1 = node.net.setup("uid-q1", "q1", &[]).expect("setup q1");
    let p2 = node.net.setup("uid-q2", "q2", &[]).expect("setup q2");
    let client = node.net.setup("uid-qc", "qc", &[]).expect("setup client");
    let _s1 = Server::start(&p1.netns_path, 8080, "q1");
    let _s2 = Server::start(&p2.netns_path, 8080, "q2");
    let (vip_a, vip_b) = (Ipv4Addr::new(10, 96, 22, 1), Ipv4Addr::new(10, 96, 22, 2));
    let mut proxier = proxy::Proxier::new(ProxyConfig::default());
    let mut sync = |svcs: &[Service], eps: &[ServiceEndpoints]| {
        run_in_netns(Some(&node.node_ns), || proxier.sync(svcs, eps)).unwrap().expect("sync")
    };

    let svcs = [named_service("a", vip_a), named_service("b", vip_b)];
    let stats = sync(&svcs, &[named_endpoints("a", p1.ip), named_endpoints("b", p1.ip)]);
    assert!(stats.full && stats.services_written == 2, "{stats:?}");
    assert_eq!(tally(&client.netns_path, SocketAddrV4::new(vip_b, 80), 3).get("q1"), Some(&3));

    // Only b changes: a partial sync writes one service, and both keep working.
    let stats = sync(&svcs, &[named_endpoints("a", p1.ip), named_endpoints("b", p2.ip)]);
    assert!(!stats.full && stats.services_written == 1, "{stats:?}");
    assert_eq!(tally(&client.netns_path, SocketAddrV4::new(vip_a, 80), 3).get("q1"), Some(&3));
    assert_eq!(tally(&client.netns_path, SocketAddrV4::new(vip_b, 80), 3).get("q2"), Some(&3));

    // Service a deleted: its chains go away, b is untouched.
    let stats = sync(&svcs[1..], &[named_endpoints("b", p2.ip)]);
    assert_eq!(stats.services_written, 0);
    let a_chain = chains::svc_chain("RKUBE", "default/a:http", Protocol::Tcp);
    assert!(!node.chains("RKUBE-SVC-").contains(&a_chain));
    assert_eq!(node.chains("RKUBE-SVC-").len(), 1);
    assert_eq!(tally(&client.netns_path, SocketAddrV4::new(vip_b, 80), 3).get("q2"), Some(&3));

    // Someone flushes our rules behind the proxy's back: the next sync notices and rewrites all.
    run_in_netns(Some(&node.node_ns), || proxy::flush(&ProxyConfig::default())).unwrap().expect("flush");
    assert!(request(&client.netns_path, SocketAddrV4::new(vip_b, 80)).is_err());
    let stats = sync(&svcs[1..], &[named_endpoints("b", p2.ip)]);
    assert!(stats.full, "{stats:?}");
    assert_eq!(tally(&client.netns_path, SocketAddrV4::new(vip_b, 80), 3).get("q2"), Some(&3));

    run_in_netns(Some(&node.node_ns), || proxy::flush(&ProxyConfig::default())).unwrap().expect("flush");
    drop((_s1, _s2));
    for pod in ["uid-q1", "uid-q2", "uid-qc"] {
        node.net.teardown(pod).expect("teardown");
    }
    assert!(!node.saved_rules().contains("RKUBE"));
}

#[test]
fn external_traffic_policy_local_preserves_client_ip() {
    let node = TestNode::new(23);
    let p1 = node.net.setup("uid-l1", "l1", &[]).expect("setup l1");
    let p2 = node.net.setup("uid-l2", "l2", &[]).expect("setup l2");
    let _s1 = Server::start(&p1.netns_path, 8080, "l1");
    let _s2 = Server::start(&p2.netns_path, 8080, "l2");
    let svc = [Service { external_traffic_local: true, load_balancer_ips: vec![], ..service() }];
    // l2 is declared remote (as if it ran on another node): external traffic must never reach it.
    let mut eps = endpoints(&[p1.ip, p2.ip]);
    eps.endpoints[1].local = false;
    let config = ProxyConfig { cluster_cidr: Some(node.config.pod_cidr), ..ProxyConfig::default() };
    run_in_netns(Some(&node.node_ns), || proxy::apply(&svc, &[eps], &config)).unwrap().expect("apply");

    let nodeport = SocketAddrV4::new(node.lan_node_ip(), 30080);
    for _ in 0..10 {
        let answer = request(&node.ext_ns, nodeport).expect("ext -> NodePort");
        assert_eq!(answer, format!("l1 {}", node.lan_ext_ip()), "client IP must be preserved");
    }

    run_in_netns(Some(&node.node_ns), || proxy::flush(&config)).unwrap().expect("flush");
    drop((_s1, _s2));
    for pod in ["uid-l1", "uid-l2"] {
        node.net.teardown(pod).expect("teardown");
    }
    assert!(!node.saved_rules().contains("RKUBE"));
}

#[test]
fn stale_udp_flows_are_cleared_when_endpoints_change() {
    let node = TestNode::new(24);
    let p1 = node.net.setup("uid-u1", "u1", &[]).expect("setup u1");
    let p2 = node.net.setup("uid-u2", "u2", &[]).expect("setup u2");
    let client = node.net.setup("uid-uc", "uc", &[]).expect("setup client");
    let _s1 = UdpServer::start(&p1.netns_path, 5353, "u1");
    let _s2 = UdpServer::start(&p2.netns_path, 5353, "u2");
    let vip = Ipv4Addr::new(10, 96, 24, 10);
    let svc = [Service {
        name: "dns".into(),
        cluster_ip: Some(vip),
        ports: vec![ServicePort {
            name: "dns".into(),
            protocol: Protocol::Udp,
            port: 53,
            target_port: 5353,
            node_port: None,
        }],
        load_balancer_ips: vec![],
        ..service()
    }];
    let eps = |ip: Ipv4Addr| {
        [ServiceEndpoints {
            service: "dns".into(),
            port_name: "dns".into(),
            endpoints: vec![Endpoint { ip, port: 5353, ready: true, local: true }],
            ..endpoints(&[])
        }]
    };
    let config = ProxyConfig::default();
    let in_node = |f: &(dyn Fn() + Sync)| run_in_netns(Some(&node.node_ns), f).unwrap();

    in_node(&|| proxy::apply(&svc, &eps(p1.ip), &config).expect("apply"));
    let flow = udp_client(&client.netns_path);
    let to = SocketAddrV4::new(vip, 53);
    assert_eq!(udp_ask(&flow, to).expect("first answer"), "u1");

    // The endpoint moves; the existing UDP flow still follows its old conntrack entry...
    in_node(&|| proxy::apply(&svc, &eps(p2.ip), &config).expect("apply"));
    assert_eq!(udp_ask(&flow, to).expect("stale answer"), "u1", "conntrack kept the old endpoint");
    // ...until the stale entries for the Service IP are deleted.
    in_node(&|| proxy::conntrack::delete_udp_to(vip).expect("delete conntrack"));
    assert_eq!(udp_ask(&flow, to).expect("fresh answer"), "u2");

    // The Proxier does the same on its own when a UDP Service loses an endpoint.
    let mut proxier = proxy::Proxier::new(config.clone());
    let mut sync = |ip: Ipv4Addr| run_in_netns(Some(&node.node_ns), || proxier.sync(&svc, &eps(ip))).unwrap();
    sync(p2.ip).expect("full sync");
    assert_eq!(udp_ask(&flow, to).expect("answer"), "u2");
    let stats = sync(p1.ip).expect("partial sync");
    assert_eq!(stats.conntrack_cleared, 1, "{stats:?}");
    assert_eq!(udp_ask(&flow, to).expect("answer after endpoint change"), "u1");

    in_node(&|| proxy::flush(&config).expect("flush"));
    drop((_s1, _s2));
    for pod in ["uid-u1", "uid-u2", "uid-uc"] {
        node.net.teardown(pod).expect("teardown");
    }
    assert!(!node.saved_rules().contains("RKUBE"));
}
