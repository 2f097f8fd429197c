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
    // The configured MTU on both ends of the pair.
    let veth = p1.veth.clone();
    let host_mtu =
        link::with_netlink(Some(&node.node_ns), |h| async move { link::link_mtu(&h, &veth).await });
    let pod_mtu =
        link::with_netlink(Some(&p1.netns_path), |h| async move { link::link_mtu(&h, "eth0").await });
    assert_eq!((host_mtu.unwrap(), pod_mtu.unwrap()), (Some(1450), Some(1450)));

    // Sysctls act in the namespace of the thread: the node's LAN link is visible there only.
    let in_node = rkube::network::netns::run_in_netns(Some(&node.node_ns), || {
        (
            rkube::network::sysctl::read("net.ipv4.conf.rktl11.forwarding"),
            rkube::network::sysctl::read("net.ipv4.ip_forward"),
        )
    })
    .unwrap();
    assert_eq!(in_node, (Some("1".to_string()), Some("1".to_string())));
    assert_eq!(rkube::network::sysctl::read("net.ipv4.conf.rktl11.forwarding"), None);
    let arp_notify = rkube::network::netns::run_in_netns(Some(&p1.netns_path), || {
        rkube::network::sysctl::read("net.ipv4.conf.eth0.arp_notify")
    });
    assert_eq!(arp_notify.unwrap().as_deref(), Some("1"));
    let pin_dir = node.pin_dir_mountinfo().expect("pin dir is a mount point");
    assert!(pin_dir.contains(" shared:"), "pin dir not shared: {pin_dir}");

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
    // From the node itself (OUTPUT chain) to its own address.
    let answer =
        request(&node.node_ns, SocketAddrV4::new(node.lan_node_ip(), 18080)).expect("node -> hostPort");
    assert_eq!(answer, format!("p1 {}", node.lan_node_ip()));
    // Setting a pod up again is idempotent and keeps its address.
    let again = node.net.setup("uid-p1", "p1", &[tcp_host_port(18080, 8080)]).expect("setup p1 again");
    assert_eq!(again, p1);
    let answer = request(&p2.netns_path, SocketAddrV4::new(p1.ip, 8080)).expect("p2 -> p1 after re-setup");
    assert_eq!(answer, format!("p1 {}", p2.ip));
    // Every jump into our chains is there exactly once after three setups (one batched restore each).
    let saved = node.saved_rules();
    for jump in [
        "-A FORWARD -j RKUBE-POD-FORWARD",
        "-A POSTROUTING -s 10.77.11.0/24 -j RKUBE-POD-MASQ",
        "-A POSTROUTING -j RKUBE-HP-MASQ",
        "-A PREROUTING -m addrtype --dst-type LOCAL -j RKUBE-HOSTPORTS",
        "-A OUTPUT -m addrtype --dst-type LOCAL -j RKUBE-HOSTPORTS",
    ] {
        assert_eq!(saved.lines().filter(|l| l.trim_end() == jump).count(), 1, "{jump}:\n{saved}");
    }

    // Rules flushed behind our back are loaded again by the next setup (not skipped as unchanged).
    let flushed = rkube::network::netns::run_in_netns(Some(&node.node_ns), || {
        std::process::Command::new("iptables").args(["-w", "-t", "nat", "-F", "RKUBE-HOSTPORTS"]).status()
    });
    assert!(flushed.unwrap().unwrap().success());
    node.net.setup("uid-p1", "p1", &[tcp_host_port(18080, 8080)]).expect("setup p1 after a flush");
    let answer = request(&node.ext_ns, SocketAddrV4::new(node.lan_node_ip(), 18080))
        .expect("ext -> hostPort after reload");
    assert_eq!(answer, format!("p1 {}", node.lan_ext_ip()));

    // A hostPort clash is refused before anything is created.
    assert!(node.net.check_host_ports("uid-p3", &[tcp_host_port(18080, 80)]).is_err());
    assert!(node.net.check_host_ports("uid-p3", &[tcp_host_port(18090, 80)]).is_ok());
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

#[test]
fn garbage_collection_removes_pods_not_kept_and_orphans() {
    let node = TestNode::new(14);
    let keep = node.net.setup("uid-keep", "keep", &[]).expect("setup keep");
    node.net.setup("uid-gone", "gone", &[tcp_host_port(18083, 80)]).expect("setup gone");
    // An orphan left by a crash: a pin and an IP without a record.
    node.net.ipam().allocate("uid-orphan").unwrap();
    rkube::network::netns::NetnsStore::new(&node.config.netns_dir).create("uid-orphan").unwrap();

    let removed = node.net.garbage_collect(&["uid-keep"]).expect("gc");
    assert!(
        removed.contains(&"uid-gone".to_string()) && removed.contains(&"uid-orphan".to_string()),
        "{removed:?}"
    );
    assert!(!removed.contains(&"uid-keep".to_string()));
    let records = node.net.records().unwrap();
    assert_eq!(records.len(), 1);
    assert_eq!(records[0].info, keep);
    assert_eq!(node.net.ipam().allocations().unwrap().len(), 1);
    assert!(!node.saved_rules().contains("18083"));
    assert!(node.link_exists(&keep.veth));

    node.net.teardown("uid-keep").unwrap();
    assert_node_clean(&node, &["uid-keep", "uid-gone", "uid-orphan"]);
}

#[test]
fn pods_on_two_nodes_reach_each_other_over_host_gw_routes() {
    let a = TestNode::in_cluster(15, "10.77.0.0/16");
    let b = TestNode::in_cluster(16, "10.77.0.0/16");
    // Wire the two nodes: a 10.80.15.1 <-> b 10.80.15.2, then host-gw routes to each other's pod CIDR.
    let (a_ip, b_ip) = (Ipv4Addr::new(10, 80, 15, 1), Ipv4Addr::new(10, 80, 15, 2));
    let b_ns = std::fs::File::open(&b.node_ns).unwrap();
    link::with_netlink(Some(&a.node_ns), |h| async move {
        use std::os::fd::AsRawFd;
        link::create_veth_into(&h, "rktn15", "rktn16", b_ns.as_raw_fd(), 1500).await?;
        link::add_address(&h, "rktn15", a_ip, 24).await?;
        link::set_up(&h, "rktn15").await?;
        link::set_route(&h, "10.77.16.0/24".parse().unwrap(), b_ip).await
    })
    .expect("wire node a");
    link::with_netlink(Some(&b.node_ns), |h| async move {
        link::add_address(&h, "rktn16", b_ip, 24).await?;
        link::set_up(&h, "rktn16").await?;
        link::set_route(&h, "10.77.15.0/24".parse().unwrap(), a_ip).await
    })
    .expect("wire node b");

    let pa = a.net.setup("uid-a1", "a1", &[]).expect("setup on a");
    let pb = b.net.setup("uid-b1", "b1", &[]).expect("setup on b");
    let _server = Server::start(&pb.netns_path, 8080, "b1");
    // Cross-node pod traffic keeps the pod source address (no masquerade inside the cluster CIDR).
    let answer = request(&pa.netns_path, SocketAddrV4::new(pb.ip, 8080)).expect("a1 -> b1");
    assert_eq!(answer, format!("b1 {}", pa.ip));

    // Removing the route cuts the path (the test can fail), and deleting it again is fine.
    link::with_netlink(Some(&a.node_ns), |h| async move {
        link::delete_route(&h, "10.77.16.0/24".parse().unwrap(), b_ip).await?;
        link::delete_route(&h, "10.77.16.0/24".parse().unwrap(), b_ip).await
    })
    .expect("delete route");
    assert!(request(&pa.netns_path, SocketAddrV4::new(pb.ip, 8080)).is_err());
}

/// rkube-master refuses, at start and before writing anything, a service CIDR that overlaps a
/// network its host already has (here the node namespace's LAN, 10.78.17.0/24 on `rktl17`).
#[test]
fn master_refuses_a_service_cidr_the_host_uses() {
    let node = TestNode::new(17);
    let data = tempfile::tempdir().unwrap();
    let out = std::process::Command::new("nsenter")
        .arg(format!("--net={}", node.node_ns.display()))
        .arg(env!("CARGO_BIN_EXE_rkube-master"))
        .args(["--service-cidr", "10.78.0.0/16", "--insecure-http", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(data.path().join("master"))
        .output()
        .unwrap();
    assert!(!out.status.success(), "rkube-master started on a taken service CIDR");
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(
        err.trim(),
        "rkube-master: service CIDR 10.78.0.0/16 overlaps 10.78.17.0/24 on rktl17, which this host already \
         uses; choose another with --service-cidr"
    );
    assert!(!data.path().join("master").exists(), "data dir created");
}
