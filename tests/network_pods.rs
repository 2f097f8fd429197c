//! Pod networking on the real kernel (root): pods on a bridge reach each other, hostPort DNAT
//! from a separate namespace, teardown leaves nothing, restart survival, cleanup on failure.
//! Each test simulates its own node in its own network namespaces.

#[path = "support/network.rs"]
mod network;

use std::net::{Ipv4Addr, SocketAddrV4};

use network::{Server, TestNode, request};
use rkube::network::link;
use rkube::network::{HostPort, PodNetwork, PodNetworkError, Protocol};

fn tcp_host_port(host_port: u16, container_port: u16) -> HostPort {
    HostPort { host_port, container_port, protocol: Protocol::Tcp, host_ip: None }
}

fn assert_node_clean(node: &TestNode, pods: &[&str]) {
    for pod in pods {
        let veth = rkube::network::pod::veth_name("rkv", pod);
        assert!(!node.link_exists(&veth), "veth {veth} of {pod} left behind");
        assert!(!node.net.netns_path(pod).unwrap().exists(), "netns pin of {pod} left behind");
    }
    assert!(node.net.ipam().allocations().unwrap().is_empty(), "IP allocations left behind");
    assert!(node.chains("RKUBE").is_empty(), "chains left: {:?}", node.chains("RKUBE"));
    assert!(!node.saved_rules().contains("RKUBE"), "rules left:\n{}", node.saved_rules());
}

#[test]
fn pods_reach_each_other_and_hostport_and_teardown_leaves_nothing() {
    let node = TestNode::new(11);
    let p1 = node.net.setup("uid-p1", "p1", &[tcp_host_port(18080, 8080)]).expect("setup p1");
    let p2 = node.net.setup("uid-p2", "p2", &[]).expect("setup p2");
    assert_eq!(p1.gateway, Ipv4Addr::new(10, 77, 11, 1));
    assert_eq!((p1.ip, p2.ip), (Ipv4Addr::new(10, 77, 11, 2), Ipv4Addr::new(10, 77, 11, 3)));
    assert!(node.link_exists(&p1.veth) && node.link_exists("rkt11"));

    let _server = Server::start(&p1.netns_path, 8080, "p1");
    // Pod to pod by IP, source address preserved.
    let answer = request(&p2.netns_path, SocketAddrV4::new(p1.ip, 8080)).expect("p2 -> p1");
    assert_eq!(answer, format!("p1 {}", p2.ip));
    // A client in a separate namespace reaches the hostPort on the node address.
    let answer =
        request(&node.ext_ns, SocketAddrV4::new(node.lan_node_ip(), 18080)).expect("ext -> hostPort");
    assert_eq!(answer, format!("p1 {}", node.lan_ext_ip()));
    // Hairpin: the pod reaches its own hostPort; the reply comes back via the bridge (SNAT to the gateway).
    let answer =
        request(&p1.netns_path, SocketAddrV4::new(node.lan_node_ip(), 18080)).expect("p1 -> own hostPort");
    assert_eq!(answer, format!("p1 {}", p1.gateway));
    // Setting a pod up again is idempotent and keeps its address.
    let again = node.net.setup("uid-p1", "p1", &[tcp_host_port(18080, 8080)]).expect("setup p1 again");
    assert_eq!(again, p1);
    let answer = request(&p2.netns_path, SocketAddrV4::new(p1.ip, 8080)).expect("p2 -> p1 after re-setup");
    assert_eq!(answer, format!("p1 {}", p2.ip));

    // A hostPort clash is refused before anything is created.
    let err = node.net.setup("uid-p3", "p3", &[tcp_host_port(18080, 80)]).unwrap_err();
    assert!(matches!(err, PodNetworkError::HostPort { .. }), "{err}");
    assert!(err.to_string().contains("18080"), "{err}");
    assert!(!node.net.netns_path("uid-p3").unwrap().exists());
    assert_eq!(node.net.ipam().lookup("uid-p3").unwrap(), None);

    drop(_server);
    node.net.teardown("uid-p1").expect("teardown p1");
    // p1's hostPort rule is gone while p2 keeps masquerade.
    assert!(!node.saved_rules().contains("18080"));
    node.net.teardown("uid-p2").expect("teardown p2");
    node.net.teardown("uid-p2").expect("teardown is idempotent");
    assert_node_clean(&node, &["uid-p1", "uid-p2"]);
}

#[test]
fn state_survives_a_restart_of_the_manager() {
    let node = TestNode::new(12);
    let p1 = node.net.setup("uid-a", "a", &[tcp_host_port(18081, 80)]).expect("setup");
    let restarted = PodNetwork::new(node.config.clone()).expect("reopen");
    let records = restarted.records().unwrap();
    assert_eq!(records.len(), 1);
    assert_eq!(records[0].info, p1);
    assert_eq!(restarted.ipam().lookup("uid-a").unwrap(), Some(p1.ip));
    // The next pod does not get the same address.
    let p2 = restarted.setup("uid-b", "b", &[]).expect("setup after restart");
    assert_ne!(p2.ip, p1.ip);
    restarted.teardown("uid-a").unwrap();
    restarted.teardown("uid-b").unwrap();
    assert_node_clean(&node, &["uid-a", "uid-b"]);
}

#[test]
fn failed_setup_removes_what_it_created() {
    let node = TestNode::new(13);
    // Occupy the bridge name with a non-bridge link so attaching the pod veth fails.
    let ext = std::fs::File::open(&node.ext_ns).unwrap();
    link::with_netlink(Some(&node.node_ns), |h| async move {
        use std::os::fd::AsRawFd;
        link::create_veth_into(&h, "rkt13", "blocker", ext.as_raw_fd(), 1500).await.map(drop)
    })
    .unwrap();
    let err = node.net.setup("uid-x", "x", &[tcp_host_port(18082, 80)]).unwrap_err();
    assert!(matches!(err, PodNetworkError::Link { .. }), "{err}");
    assert!(err.to_string().contains("uid-x"), "{err}");
    assert!(node.net.records().unwrap().is_empty());
    assert_node_clean(&node, &["uid-x"]);
}
