//! LoadBalancer Services from an address pool on a real cluster (`hack/cluster.sh`, two nodes, the
//! master started with a one-address `--lb-pool` on the cluster's LAN): exactly one node announces
//! the address and a client on the LAN (this host) reaches the Service through it; a second Service
//! finds the pool exhausted; `externalTrafficPolicy: Local` moves the announcement to the node with
//! the endpoint and keeps the client's address; ClientIP affinity pins the client to one pod; a
//! killed node agent leaves the address serving; `rkubelet reset` removes what the node programmed.
//! The nodes' FORWARD policy is DROP throughout, as docker leaves it.

#[path = "support/cluster.rs"]
mod cluster;

use cluster::Cluster;
use std::process::Command;
use std::time::Duration;

const T: Duration = Duration::from_secs(120);
const VIP: &str = "10.250.0.200";

/// The nodes (1-based) whose LAN link holds `VIP` as a /32.
fn holders(nodes: usize) -> Vec<usize> {
    (1..=nodes)
        .filter(|i| {
            let out = Command::new("ip")
                .args(["-n", &format!("rkube-node{i}"), "-4", "-o", "addr", "show", "dev", "eth0"])
                .output()
                .unwrap();
            String::from_utf8_lossy(&out.stdout).contains(&format!("inet {VIP}/32"))
        })
        .collect()
}

fn line_of<'a>(page: &'a str, key: &str) -> &'a str {
    page.lines().find_map(|l| l.strip_prefix(key)).unwrap_or("")
}

fn write(c: &Cluster, name: &str, yaml: &str) -> String {
    let path = c.dir.path().join(name);
    std::fs::write(&path, yaml).unwrap();
    path.display().to_string()
}

fn service(name: &str, extra: &str) -> String {
    format!(
        "apiVersion: v1\nkind: Service\nmetadata:\n  name: {name}\nspec:\n  type: LoadBalancer\n{extra}  ports:\n  \
         - port: 80\n    targetPort: 80\n  selector:\n    type: webserver\n    color: green\n"
    )
}

#[test]
fn load_balancer_pool_on_a_cluster() {
    let c = Cluster::up(2, &format!("--lb-pool={VIP}-{VIP}"));
    // As on a host where docker set the FORWARD policy to DROP: Service traffic to a pod on the
    // other node must still be forwarded.
    for i in 1..=2 {
        let ns = format!("rkube-node{i}");
        let out =
            Command::new("ip").args(["netns", "exec", &ns, "iptables", "-P", "FORWARD", "DROP"]).output();
        assert!(out.is_ok_and(|o| o.status.success()), "FORWARD policy in {ns}");
    }
    for f in ["configmap.yaml", "secret.yaml", "deployment-green.yaml"] {
        c.ok(&["apply", "-f", f]);
    }
    c.ok(&["apply", "-f", &write(&c, "web.yaml", &service("web", ""))]);
    c.eventually(&["get", "svc", "web", "-o", "jsonpath={.status.loadBalancer.ingress[0].ip}"], T, |o| {
        o == VIP
    });
    let url = format!("http://{VIP}/cgi-bin/info");
    c.eventually(
        &["get", "deployment", "webserver-green", "-o", "jsonpath={.status.readyReplicas}"],
        T,
        |o| o == "3",
    );

    // One node holds the address and says so; the LAN reaches the Service through it.
    cluster::wait_until("one node announcing the pool address", T, || holders(2).len() == 1);
    let announcer = holders(2)[0];
    let events = c.eventually(
        &[
            "get",
            "events",
            "--field-selector",
            "involvedObject.name=web",
            "-o",
            "jsonpath={.items[*].message}",
        ],
        T,
        |o| o.contains("announcing"),
    );
    assert!(events.contains(&format!("announcing {VIP} from node \"node{announcer}\"")), "{events}");
    let page = cluster::wait_page(&url, "color=green");
    assert!(page.contains("color=green"), "{url}: {page}");
    // Every request is answered, by pods on both nodes (3 replicas on 2 nodes).
    let mut hosts = std::collections::BTreeSet::new();
    for _ in 0..12 {
        let page = cluster::http_get(&url).unwrap_or_default();
        assert!(page.contains("color=green"), "a request through {VIP} failed: {page:?}\n{}", c.logs());
        hosts.insert(line_of(&page, "hostname=").to_string());
    }
    assert!(hosts.len() > 1, "one pod answered every request: {hosts:?}");

    // The pool has one address: a second Service stays pending, with a Warning saying why.
    c.ok(&["apply", "-f", &write(&c, "web2.yaml", &service("web2", ""))]);
    c.eventually(
        &[
            "get",
            "events",
            "--field-selector",
            "involvedObject.name=web2",
            "-o",
            "jsonpath={.items[*].message}",
        ],
        T,
        |o| o.contains("pool"),
    );
    assert!(c.ok(&["get", "svc", "web2"]).contains("<pending>"));
    c.ok(&["delete", "svc", "web2"]);

    // externalTrafficPolicy Local with one endpoint: the node running it announces, and the pod
    // sees the client's own address.
    c.ok(&["scale", "deployment", "webserver-green", "--replicas=1"]);
    c.ok(&["patch", "svc", "web", "-p", r#"{"spec":{"externalTrafficPolicy":"Local"}}"#]);
    let pod_node = c.eventually(
        &[
            "get",
            "pods",
            "-l",
            "color=green",
            "-o",
            "jsonpath={range .items[*]}{.spec.nodeName}{\"\\n\"}{end}",
        ],
        T,
        |o| o.lines().count() == 1,
    );
    let pod_node: usize = pod_node.trim().trim_start_matches("node").parse().unwrap();
    cluster::wait_until("the endpoint's node announcing", T, || holders(2) == vec![pod_node]);
    // Once the rules have the policy (the announcer may have been that node already), the pod
    // sees the client's own address, printed IPv4-mapped (`[::ffff:10.250.0.1]`), not the node's.
    let mut page = String::new();
    cluster::wait_until("the Service through the new announcer, with the client's own address", T, || {
        page = cluster::http_get(&url).unwrap_or_default();
        page.contains("color=green") && line_of(&page, "client=").contains("10.250.0.1]")
    });

    // ClientIP affinity: every request of this client lands on the same pod.
    c.ok(&[
        "patch",
        "svc",
        "web",
        "-p",
        r#"{"spec":{"externalTrafficPolicy":"Cluster","sessionAffinity":"ClientIP"}}"#,
    ]);
    c.ok(&["scale", "deployment", "webserver-green", "--replicas=3"]);
    c.eventually(
        &[
            "get",
            "endpointslices",
            "-l",
            "kubernetes.io/service-name=web",
            "-o",
            "jsonpath={.items[*].endpoints[*].addresses[0]}",
        ],
        T,
        |o| o.split_whitespace().count() == 3,
    );
    // Every node's rules pin clients to one of the three endpoints before the requests (rules
    // rewritten between two requests would be a new choice, not affinity).
    cluster::wait_until("each node's affinity rules for the 3 endpoints", T, || {
        (1..=2).all(|i| {
            // The nodes' proxies run in nftables mode (the default); `web` is the one Service
            // with affinity: one `ip saddr @affinity-… goto endpoint-…` rule per endpoint.
            let out = Command::new("ip")
                .args(["netns", "exec", &format!("rkube-node{i}"), "nft", "list", "ruleset"])
                .output()
                .unwrap();
            let rules = String::from_utf8_lossy(&out.stdout);
            rules
                .lines()
                .filter(|l| l.contains("ip saddr @affinity-") && l.contains("goto endpoint-"))
                .count()
                == 3
        })
    });
    let hosts: std::collections::BTreeSet<String> =
        (0..12).map(|_| line_of(&cluster::wait_page(&url, "color=green"), "hostname=").to_string()).collect();
    assert_eq!(hosts.len(), 1, "ClientIP affinity: one pod for one client, got {hosts:?}");

    // A killed node agent leaves its announcement (and the rules) serving.
    let announcer = holders(2)[0];
    c.node_agent("stop-node", announcer);
    assert_eq!(holders(2), vec![announcer]);
    assert!(cluster::http_get(&url).is_some_and(|p| p.contains("color=green")));
    c.node_agent("start-node", announcer);

    // `rkubelet reset` removes the address, the service rules and the routes the node programmed.
    let out = c.rkubelet(announcer, "reset", &["--force", "--time", "0"]);
    assert!(out.status.success(), "reset: {}\n{}", String::from_utf8_lossy(&out.stderr), c.logs());
    assert!(!holders(2).contains(&announcer), "the address stays after reset");
    let ns = format!("rkube-node{announcer}");
    let rules = Command::new("ip").args(["netns", "exec", &ns, "iptables-save"]).output().unwrap();
    let rules = String::from_utf8_lossy(&rules.stdout);
    assert!(!rules.contains("RKUBE-SVC") && !rules.contains("RKUBE-SERVICES"), "{rules}");
    let tables = Command::new("ip").args(["netns", "exec", &ns, "nft", "list", "tables"]).output().unwrap();
    let tables = String::from_utf8_lossy(&tables.stdout);
    assert!(!tables.contains("rkube"), "nft tables left after reset: {tables}");
    let routes = Command::new("ip").args(["-n", &ns, "route"]).output().unwrap();
    let routes = String::from_utf8_lossy(&routes.stdout);
    assert!(!routes.contains("10.244."), "pod routes left after reset: {routes}");
}
