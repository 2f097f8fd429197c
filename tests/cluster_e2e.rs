//! A real cluster on this host, end to end: rkube-master, a registry and three `rkubelet join`
//! nodes in network namespaces of their own (`hack/cluster.sh`), driven with the real kubectl.
//! The scenarios share one cluster (it owns fixed names: bridge rkube-cl0, netns rkube-node<I>)
//! and run in order; the one that stops a node runs last.

#[path = "support/cluster.rs"]
mod cluster;

use cluster::Cluster;
use std::io::{BufRead, BufReader, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const T: Duration = Duration::from_secs(120);

#[derive(Debug, Clone)]
struct PodRow {
    name: String,
    ip: String,
    node: String,
    uid: String,
    restarts: String,
    started: String,
}

const ROWS: &str = "jsonpath={range .items[*]}{.metadata.name}|{.status.phase}|{.status.podIP}|{.spec.nodeName}|\
{.metadata.uid}|{.metadata.deletionTimestamp}|{.status.containerStatuses[0].ready}|\
{.status.containerStatuses[0].restartCount}|{.status.containerStatuses[0].state.running.startedAt}{\"\\n\"}{end}";

/// Waits until exactly `n` pods named `prefix…` exist, none terminating, all Running and ready.
fn ready_pods(c: &Cluster, prefix: &str, n: usize) -> Vec<PodRow> {
    let out = c.eventually(&["get", "pods", "-o", ROWS], T, |o| {
        let rows: Vec<&str> = o.lines().filter(|l| l.starts_with(prefix)).collect();
        rows.len() == n
            && rows.iter().all(|r| {
                let f: Vec<&str> = r.split('|').collect();
                f[1] == "Running" && f[5].is_empty() && f[6] == "true"
            })
    });
    out.lines()
        .filter(|l| l.starts_with(prefix))
        .map(|l| {
            let f: Vec<&str> = l.split('|').collect();
            PodRow {
                name: f[0].into(),
                ip: f[2].into(),
                node: f[3].into(),
                uid: f[4].into(),
                restarts: f[7].into(),
                started: f[8].into(),
            }
        })
        .collect()
}

fn pod_key(row: &PodRow) -> String {
    format!(
        "default_{}_{}",
        row.name,
        row.uid.chars().filter(|c| c.is_ascii_alphanumeric()).take(8).collect::<String>()
    )
}

fn node_index(node: &str) -> usize {
    node.trim_start_matches("node").parse().unwrap()
}

fn assert_pages(pods: &[PodRow], want: &str) {
    for p in pods {
        let page = cluster::wait_page(&format!("http://{}/", p.ip), want);
        assert!(page.contains(want), "pod {} at {}: {page}", p.name, p.ip);
    }
}

#[test]
fn cluster_end_to_end() {
    // Nodes renew their Lease every 10 s: a 20 s grace never marks a live node NotReady.
    let c = Cluster::up(3, "--node-monitor-grace-period=20s --pod-eviction-timeout=5s");
    nodes_register(&c);
    replicaset_spreads_and_serves(&c);
    metrics_and_top(&c);
    logs_exec_and_port_forward_through_the_master(&c);
    deployment_rollout_and_undo(&c);
    config_from_the_api_and_container_events(&c);
    services_on_every_node(&c);
    cluster_dns_and_in_cluster_clients(&c);
    delete_pod_is_graceful_and_leaves_nothing(&c);
    file_pods_on_a_joined_node(&c);
    agent_restart_keeps_containers(&c);
    node_credentials_are_confined(&c);
    bad_joins_register_nothing(&c);
    node_down_moves_pods(&c);
}

fn nodes_register(c: &Cluster) {
    let wide = c.ok(&["get", "nodes", "-o", "wide"]);
    for (i, ip) in c.node_ips().iter().enumerate() {
        let row = wide
            .lines()
            .find(|l| l.starts_with(&format!("node{} ", i + 1)))
            .unwrap_or_else(|| panic!("{wide}"));
        assert!(row.contains(" Ready ") && row.contains(ip.as_str()) && row.contains("rkube://"), "{row}");
    }
    let node = c.ok(&["get", "node", "node1", "-o", "json"]);
    let node: serde_json::Value = serde_json::from_str(&node).unwrap();
    let cap = &node["status"]["capacity"];
    assert!(cap["cpu"].as_str().is_some_and(|s| s.parse::<u32>().unwrap() >= 1), "{cap}");
    assert!(cap["memory"].as_str().is_some_and(|s| s.ends_with("Ki")), "{cap}");
    assert_eq!(cap["pods"], "110");
    assert!(cap["ephemeral-storage"].is_string(), "{cap}");
    assert!(node["spec"]["podCIDR"].as_str().is_some_and(|s| s.starts_with("10.244.")), "{node}");
    let lease =
        c.ok(&["get", "lease", "-n", "kube-node-lease", "node1", "-o", "jsonpath={.spec.holderIdentity}"]);
    assert_eq!(lease, "node1");
    let cidrs = c.ok(&["get", "nodes", "-o", "jsonpath={.items[*].spec.podCIDR}"]);
    let mut unique: Vec<&str> = cidrs.split_whitespace().collect();
    unique.dedup();
    assert_eq!(unique.len(), 3, "each node its own pod CIDR: {cidrs}");
}

fn replicaset_spreads_and_serves(c: &Cluster) {
    c.ok(&["apply", "-f", "replicaset-nginx.yaml"]);
    let pods = ready_pods(c, "replicaset-nginx-", 3);
    let mut nodes: Vec<&str> = pods.iter().map(|p| p.node.as_str()).collect();
    nodes.sort();
    nodes.dedup();
    assert!(nodes.len() >= 2, "pods spread over the nodes: {pods:?}");
    assert_pages(&pods, "Welcome to nginx latest");
    c.ok(&["apply", "-f", "replicaset-nginx-4pods.yaml"]);
    let four = ready_pods(c, "replicaset-nginx-", 4);
    assert!(pods.iter().all(|p| four.iter().any(|q| q.uid == p.uid)), "re-apply keeps the first three");
    assert_pages(&four, "Welcome to nginx latest");
    let describe = c.ok(&["describe", "pod", &four[0].name]);
    for event in ["Scheduled", "Pulled", "Created", "Started"] {
        assert!(describe.contains(event), "describe shows {event}: {describe}");
    }
}

/// A node's kubelet API path, read as the master does (its kubelet-client certificate).
fn node_get(c: &Cluster, node: usize, path: &str) -> String {
    let pki = c.cluster_dir().join("master/pki");
    let port = c.ok(&[
        "get",
        "node",
        &format!("node{node}"),
        "-o",
        "jsonpath={.status.daemonEndpoints.kubeletEndpoint.Port}",
    ]);
    let url = format!("https://{}:{port}{path}", c.node_ips()[node - 1]);
    let out = Command::new("curl")
        .args(["-sf", "-m", "10", "--cacert"])
        .arg(pki.join("ca.crt"))
        .arg("--cert")
        .arg(pki.join("kubelet-client.crt"))
        .arg("--key")
        .arg(pki.join("kubelet-client.key"))
        .arg(&url)
        .output()
        .unwrap();
    assert!(out.status.success(), "GET {url}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The sum of the samples of `metric` with `labels` (a histogram: its observation count).
fn prom_sum(text: &str, metric: &str, labels: &[(&str, &str)]) -> f64 {
    let scrape = prometheus_parse::Scrape::parse(text.lines().map(|l| Ok(l.to_string()))).unwrap();
    scrape
        .samples
        .iter()
        .filter(|s| s.metric == metric && labels.iter().all(|(k, v)| s.labels.get(k) == Some(*v)))
        .map(|s| match &s.value {
            prometheus_parse::Value::Counter(v)
            | prometheus_parse::Value::Gauge(v)
            | prometheus_parse::Value::Untyped(v) => *v,
            prometheus_parse::Value::Histogram(b) => {
                b.iter().find(|b| b.less_than.is_infinite()).map(|b| b.count).unwrap_or(0.0)
            }
            prometheus_parse::Value::Summary(_) => 0.0,
        })
        .sum()
}

/// `kubectl top nodes/pods` (metrics.k8s.io from the nodes' stats) and each node's `/metrics`.
fn metrics_and_top(c: &Cluster) {
    let mebibytes = |v: &str| v.strip_suffix("Mi").and_then(|n| n.parse::<u64>().ok());
    let top = c.eventually(&["top", "nodes"], T, |o| {
        (1..=3).all(|i| o.lines().any(|l| l.starts_with(&format!("node{i} ")) && !l.contains("<unknown>")))
    });
    for line in top.lines().skip(1) {
        let f: Vec<&str> = line.split_whitespace().collect();
        assert!(f[1].ends_with('m') && f[2].ends_with('%') && f[4].ends_with('%'), "{top}");
        assert!(mebibytes(f[3]).is_some_and(|m| m > 0), "{top}");
    }
    let top = c.eventually(&["top", "pods"], T, |o| {
        o.lines().filter(|l| l.starts_with("replicaset-nginx-")).count() == 4
    });
    for line in top.lines().filter(|l| l.starts_with("replicaset-nginx-")) {
        let f: Vec<&str> = line.split_whitespace().collect();
        assert!(f[1].ends_with('m') && f[2].ends_with("Mi"), "{top}");
    }
    let containers = c.ok(&["top", "pods", "--containers", "-l", "app=my-nginx-pods-label"]);
    assert!(containers.lines().skip(1).all(|l| l.split_whitespace().nth(1) == Some("nginx")), "{containers}");
    let pod = c.ok(&["get", "--raw", "/apis/metrics.k8s.io/v1beta1/namespaces/default/pods"]);
    let pod: serde_json::Value = serde_json::from_str(&pod).unwrap();
    assert_eq!(pod["kind"], "PodMetricsList");
    assert!(pod["items"][0]["window"].as_str().is_some_and(|w| w.ends_with('s')), "{pod}");
    // The demo web server is small (under a MiB, which `top` rounds to 0Mi), but its cgroup was read.
    for item in pod["items"].as_array().unwrap() {
        let memory = item["containers"][0]["usage"]["memory"].as_str().unwrap_or_default();
        assert!(
            memory.strip_suffix("Ki").and_then(|k| k.parse::<u64>().ok()).is_some_and(|k| k > 0),
            "{pod}"
        );
    }

    // Each node's own metrics: 4 pods started over the three nodes.
    let texts: Vec<String> = (1..=3).map(|i| node_get(c, i, "/metrics")).collect();
    let total = |metric: &str, labels: &[(&str, &str)]| {
        texts.iter().map(|t| prom_sum(t, metric, labels)).sum::<f64>()
    };
    assert!(total("kubelet_pod_start_duration_seconds", &[]) >= 4.0, "{texts:?}");
    assert!(total("kubelet_runtime_operations_total", &[("operation_type", "create_container")]) >= 4.0);
    assert!(total("kubelet_runtime_operations_total", &[("operation_type", "start_container")]) >= 4.0);
    assert!(total("kubelet_runtime_operations_duration_seconds", &[("operation_type", "run_pod")]) >= 4.0);
    assert!(
        total("kubelet_image_pulls_total", &[("result", "success")]) >= 2.0,
        "pods spread: 2+ nodes pulled"
    );
    assert!(total("kubelet_running_pods", &[]) >= 4.0);
    let row = ready_pods(c, "replicaset-nginx-", 4).remove(0);
    let resource = node_get(c, node_index(&row.node), "/metrics/resource");
    assert!(
        prom_sum(&resource, "container_memory_working_set_bytes", &[("pod", &row.name)]) > 0.0,
        "{resource}"
    );
    assert!(prom_sum(&resource, "node_cpu_usage_seconds_total", &[]) > 0.0, "{resource}");
}

fn kubectl_cmd(c: &Cluster, args: &[&str]) -> Command {
    let mut cmd = Command::new("/usr/bin/kubectl");
    cmd.args(args).env("KUBECONFIG", c.kubeconfig()).env("HOME", c.dir.path().join("home"));
    cmd
}

fn logs_exec_and_port_forward_through_the_master(c: &Cluster) {
    let logger = c.dir.path().join("logger.yaml");
    std::fs::write(
        &logger,
        "apiVersion: v1\nkind: Pod\nmetadata: {name: logger}\nspec:\n  terminationGracePeriodSeconds: 1\n  \
         containers:\n  - name: c\n    image: nginx:1.10\n    \
         command: [sh, -c, 'echo hello; while true; do echo tick; sleep 0.2; done']\n",
    )
    .unwrap();
    c.ok(&["apply", "-f", logger.to_str().unwrap()]);
    ready_pods(c, "logger", 1);
    c.eventually(&["logs", "logger"], T, |o| o.starts_with("hello\n"));
    // `logs -f` keeps streaming lines written after it started.
    let mut follow =
        kubectl_cmd(c, &["logs", "-f", "--tail=1", "logger"]).stdout(Stdio::piped()).spawn().unwrap();
    let mut lines = BufReader::new(follow.stdout.take().unwrap()).lines();
    for _ in 0..3 {
        assert_eq!(lines.next().unwrap().unwrap(), "tick");
    }
    let _ = follow.kill();
    let _ = follow.wait();

    let web = &ready_pods(c, "replicaset-nginx-", 4)[0];
    let exit = kubectl_cmd(c, &["exec", &web.name, "--", "sh", "-c", "exit 3"]).status().unwrap();
    assert_eq!(exit.code(), Some(3), "kubectl exec returns the command's exit code");
    // Every pod has its ServiceAccount token, the cluster CA and its namespace (a projected
    // volume the node filled with a TokenRequest bound to the pod); the token authenticates.
    let sa_dir = "/var/run/secrets/kubernetes.io/serviceaccount";
    let read = |f: &str| c.ok(&["exec", &web.name, "--", "cat", &format!("{sa_dir}/{f}")]);
    assert_eq!(read("namespace"), "default");
    assert!(read("ca.crt").starts_with("-----BEGIN CERTIFICATE-----"));
    let token = read("token");
    assert_eq!(token.split('.').count(), 3, "{token}");
    let who = c.ok(&["--token", &token, "auth", "whoami"]);
    assert!(who.contains("system:serviceaccount:default:default"), "{who}");
    let mut cat = kubectl_cmd(c, &["exec", "-i", &web.name, "--", "cat"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    cat.stdin.take().unwrap().write_all(b"through the master\n").unwrap();
    let out = cat.wait_with_output().unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout), "through the master\n");

    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let mut forward = kubectl_cmd(c, &["port-forward", &format!("pod/{}", web.name), &format!("{port}:80")])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut ready = BufReader::new(forward.stdout.take().unwrap()).lines();
    assert!(ready.next().unwrap().unwrap().starts_with("Forwarding from 127.0.0.1"));
    let page = cluster::wait_page(&format!("http://127.0.0.1:{port}/"), "Welcome to nginx latest");
    let _ = forward.kill();
    let _ = forward.wait();
    assert!(page.contains("Welcome to nginx latest"), "{page}");
    c.ok(&["delete", "pod", "logger"]);
}

fn deployment_rollout_and_undo(c: &Cluster) {
    c.ok(&["apply", "-f", "deployment-nginx.yaml", "--record"]);
    c.ok(&["rollout", "status", "deployment", "my-nginx-deployment", "--timeout=120s"]);
    assert_pages(&ready_pods(c, "my-nginx-deployment-", 3), "nginx 1.10");
    c.ok(&["set", "image", "deployment", "my-nginx-deployment", "nginx=nginx:1.11", "--record"]);
    c.ok(&["rollout", "status", "deployment", "my-nginx-deployment", "--timeout=120s"]);
    assert_pages(&ready_pods(c, "my-nginx-deployment-", 3), "nginx 1.11");
    c.ok(&["rollout", "undo", "deployment", "my-nginx-deployment", "--to-revision=1"]);
    c.ok(&["rollout", "status", "deployment", "my-nginx-deployment", "--timeout=120s"]);
    assert_pages(&ready_pods(c, "my-nginx-deployment-", 3), "nginx 1.10");
    c.ok(&["delete", "deployment", "my-nginx-deployment"]);
    c.eventually(&["get", "pods", "-o", "name"], T, |o| !o.contains("my-nginx-deployment"));
}

fn events_of(c: &Cluster, pod: &str) -> String {
    let all = c.ok(&[
        "get",
        "events",
        "-o",
        "jsonpath={range .items[*]}{.involvedObject.name}|{.type}|{.reason}|{.message}{\"\\n\"}{end}",
    ]);
    all.lines().filter(|l| l.starts_with(&format!("{pod}|"))).collect::<Vec<_>>().join("\n")
}

/// The seed's blue Deployment gets its env from a ConfigMap and a Secret fetched from the API; a
/// missing ConfigMap holds a pod in CreateContainerConfigError until it exists; a crashing
/// container and a failing probe give BackOff and Unhealthy events.
fn config_from_the_api_and_container_events(c: &Cluster) {
    for f in ["configmap.yaml", "secret.yaml", "deployment-blue.yaml"] {
        c.ok(&["apply", "-f", f]);
    }
    for p in ready_pods(c, "webserver-blue-", 3) {
        let info = cluster::wait_page(&format!("http://{}/cgi-bin/info", p.ip), "PROJECT_ID=hello-docker");
        assert!(info.contains("PROJECT_ID=hello-docker") && info.contains("SECRET_ID=asa"), "{info}");
    }
    c.ok(&["delete", "deployment", "webserver-blue"]);

    let yaml = c.dir.path().join("events.yaml");
    std::fs::write(
        &yaml,
        "apiVersion: v1\nkind: Pod\nmetadata: {name: needs-config}\nspec:\n  terminationGracePeriodSeconds: 1\n  \
         containers:\n  - name: c\n    image: nginx:1.10\n    \
         env: [{name: X, valueFrom: {configMapKeyRef: {name: later, key: x}}}]\n---\n\
         apiVersion: v1\nkind: Pod\nmetadata: {name: crasher}\nspec:\n  terminationGracePeriodSeconds: 1\n  \
         containers: [{name: c, image: 'nginx:1.10', command: [sh, -c, 'exit 1']}]\n---\n\
         apiVersion: v1\nkind: Pod\nmetadata: {name: unready}\nspec:\n  terminationGracePeriodSeconds: 1\n  \
         containers:\n  - name: c\n    image: nginx:1.10\n    \
         readinessProbe: {exec: {command: ['false']}, periodSeconds: 1}\n",
    )
    .unwrap();
    c.ok(&["apply", "-f", yaml.to_str().unwrap()]);
    let waiting = "jsonpath={.status.containerStatuses[0].state.waiting.reason}";
    c.eventually(&["get", "pod", "needs-config", "-o", waiting], T, |o| o == "CreateContainerConfigError");
    assert!(
        events_of(c, "needs-config").contains("configmap \"later\" not found"),
        "{}",
        events_of(c, "needs-config")
    );
    c.eventually(&["get", "pod", "crasher", "-o", waiting], T, |o| o == "CrashLoopBackOff");
    let backoff = |o: &str| {
        o.contains("|Warning|BackOff|Back-off restarting failed container c in pod crasher_default(")
    };
    cluster::wait_until("a BackOff event", T, || backoff(&events_of(c, "crasher")));
    cluster::wait_until("an Unhealthy event", T, || {
        events_of(c, "unready").contains("|Warning|Unhealthy|Readiness probe failed")
    });
    let ready =
        c.ok(&["get", "pod", "unready", "-o", "jsonpath={.status.conditions[?(@.type==\"Ready\")].status}"]);
    assert_eq!(ready, "False");
    let cm = c.dir.path().join("later.yaml");
    std::fs::write(&cm, "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: later}\ndata: {x: '1'}\n")
        .unwrap();
    c.ok(&["apply", "-f", cm.to_str().unwrap()]);
    ready_pods(c, "needs-config", 1);
    c.ok(&["delete", "pod", "needs-config", "crasher", "unready"]);
    c.ok(&["delete", "configmap", "later"]);
}

/// `kubectl exec POD -- wget -qO- URL` (busybox's wget in the demo image; a static build, so URLs
/// carry their port: it cannot look up the `http` service, and its `-T` crashes).
fn fetch_in(c: &Cluster, pod: &str, url: &str) -> String {
    let out = c.kubectl(&["exec", pod, "--", "wget", "-q", "-O", "-", url]);
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn line_of<'a>(page: &'a str, key: &str) -> &'a str {
    page.lines().find_map(|l| l.strip_prefix(key)).unwrap_or("")
}

/// The seed's LoadBalancer Service on a real cluster: every node programs it, pods on one node reach
/// pods on another by IP without NAT, and switching the selector from green to blue switches what
/// every node serves.
fn services_on_every_node(c: &Cluster) {
    for f in
        ["configmap.yaml", "secret.yaml", "deployment-green.yaml", "deployment-blue.yaml", "service.yaml"]
    {
        c.ok(&["apply", "-f", f]);
    }
    let green = ready_pods(c, "webserver-green-", 3);
    let blue = ready_pods(c, "webserver-blue-", 3);
    let mut node_ips = c.node_ips();
    node_ips.sort();

    // No --lb-pool: the ingress is every Ready node's address (never <pending>).
    let ingress = c.eventually(
        &["get", "svc", "webserver", "-o", "jsonpath={.status.loadBalancer.ingress[*].ip}"],
        T,
        |o| o.split_whitespace().count() == node_ips.len(),
    );
    let mut ingress: Vec<String> = ingress.split_whitespace().map(String::from).collect();
    ingress.sort();
    assert_eq!(ingress, node_ips);
    let wide = c.ok(&["get", "svc", "webserver"]);
    assert!(!wide.contains("<pending>"), "{wide}");
    let node_port = c.ok(&["get", "svc", "webserver", "-o", "jsonpath={.spec.ports[0].nodePort}"]);
    let cluster_ip = c.ok(&["get", "svc", "webserver", "-o", "jsonpath={.spec.clusterIP}"]);

    // The EndpointSlice lists the green pods, ready, with their nodes.
    let mut green_ips: Vec<String> = green.iter().map(|p| p.ip.clone()).collect();
    green_ips.sort();
    let slice = [
        "get",
        "endpointslices",
        "-l",
        "kubernetes.io/service-name=webserver",
        "-o",
        "jsonpath={range .items[*].endpoints[*]}{.addresses[0]}|{.conditions.ready}|{.nodeName}{\"\\n\"}{end}",
    ];
    let rows = c.eventually(&slice, T, |o| {
        let mut ips: Vec<String> = o.lines().map(|l| l.split('|').next().unwrap_or("").to_string()).collect();
        ips.sort();
        ips == green_ips && o.lines().all(|l| l.contains("|true|node"))
    });
    assert_eq!(rows.lines().count(), 3, "{rows}");

    // From outside: the NodePort and the load balancer address of every node serve green, wherever
    // the green pods run.
    for ip in &node_ips {
        for url in [format!("http://{ip}:{node_port}/cgi-bin/info"), format!("http://{ip}/cgi-bin/info")] {
            let page = cluster::wait_page(&url, "color=green");
            assert!(page.contains("color=green"), "{url}: {page}");
        }
    }

    // The nodes program Services in nftables mode (the default): their own table, no iptables chains.
    for i in 1..=node_ips.len() {
        let ns = format!("rkube-node{i}");
        let tables =
            Command::new("ip").args(["netns", "exec", &ns, "nft", "list", "tables"]).output().unwrap();
        assert!(
            String::from_utf8_lossy(&tables.stdout).contains("table ip rkube-proxy"),
            "node{i}: no nft table"
        );
        let saved = Command::new("ip").args(["netns", "exec", &ns, "iptables-save"]).output().unwrap();
        assert!(
            !String::from_utf8_lossy(&saved.stdout).contains("RKUBE-SERVICES"),
            "node{i}: iptables rules"
        );
    }

    // From a pod: the ClusterIP balances over all three green pods, on every node.
    let client = &blue[0];
    let mut seen = std::collections::BTreeSet::new();
    cluster::wait_until("every green pod answering through the ClusterIP", T, || {
        let page = fetch_in(c, &client.name, &format!("http://{cluster_ip}:80/cgi-bin/info"));
        if page.contains("color=green") {
            seen.insert(line_of(&page, "hostname=").to_string());
        }
        seen.len() == 3
    });
    // Pod to pod across nodes: by IP, and the server sees the client pod's own address (no NAT).
    let remote = green.iter().find(|g| g.node != client.node).expect("a green pod on another node");
    let page = fetch_in(c, &client.name, &format!("http://{}:80/cgi-bin/info", remote.ip));
    assert!(
        line_of(&page, "client=").contains(&client.ip),
        "{} on {} from {} on {}: {page}",
        remote.name,
        remote.node,
        client.name,
        client.node
    );

    // Pods see the API server's Service in their environment, and reach the API server through it.
    let env = c.ok(&["exec", &client.name, "--", "env"]);
    assert!(env.lines().any(|l| l == "KUBERNETES_SERVICE_HOST=10.96.0.1"), "{env}");
    assert!(env.lines().any(|l| l == "KUBERNETES_SERVICE_PORT=443"), "{env}");
    let slice = c.ok(&["get", "endpointslice", "kubernetes", "-o", "jsonpath={.endpoints[0].addresses[0]}"]);
    assert_eq!(slice, "10.250.0.2", "the kubernetes Service points at the master");
    let out = c.kubectl(&["exec", &client.name, "--", "sh", "-c", "echo | nc 10.96.0.1 443"]);
    assert!(
        out.status.success(),
        "a pod connects to the API server: {}",
        String::from_utf8_lossy(&out.stderr)
    );

    // The seed's blue/green switch: change the selector, every node serves blue, and a client
    // looping through the load balancer addresses all along sees no failed request.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let looping = {
        let (stop, urls) = (stop.clone(), node_ips.iter().map(|ip| format!("http://{ip}/cgi-bin/info")));
        let urls: Vec<String> = urls.collect();
        std::thread::spawn(move || {
            let (mut pages, mut failed) = (Vec::new(), Vec::new());
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                for url in &urls {
                    match cluster::http_get(url) {
                        Some(page) if page.contains("color=") => {
                            pages.push(line_of(&page, "color=").to_string())
                        }
                        other => failed.push(format!("{url}: {other:?}")),
                    }
                }
            }
            (pages, failed)
        })
    };
    std::thread::sleep(Duration::from_millis(500));
    c.ok(&[
        "patch",
        "svc",
        "webserver",
        "-p",
        r#"{"spec":{"selector":{"type":"webserver","color":"blue"}}}"#,
    ]);
    for ip in &node_ips {
        let url = format!("http://{ip}/cgi-bin/info");
        let page = cluster::wait_page(&url, "color=blue");
        assert!(page.contains("color=blue"), "{url}: {page}");
    }
    std::thread::sleep(Duration::from_millis(500));
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let (pages, failed) = looping.join().unwrap();
    assert!(failed.is_empty(), "requests failed during the switch: {failed:?}");
    let first_blue = pages.iter().position(|p| p.contains("blue")).expect("the loop saw blue");
    assert!(first_blue > 0 && pages[..first_blue].iter().all(|p| p.contains("green")), "{pages:?}");
    endpoint_leaves_rotation_before_it_stops(c, &node_ips, &node_port);
    // A Service that selects nothing is refused at once (REJECT), not left to time out.
    c.ok(&[
        "patch",
        "svc",
        "webserver",
        "-p",
        r#"{"spec":{"selector":{"type":"webserver","color":"none"}}}"#,
    ]);
    let url = format!("http://{}:{node_port}/", node_ips[0]);
    cluster::wait_until("connections to an empty Service refused", T, || {
        let out = Command::new("curl").args(["-s", "-m", "5", &url]).output().unwrap();
        out.status.code() == Some(7)
    });
    c.ok(&["delete", "svc", "webserver"]);
    c.ok(&["delete", "deployment", "webserver-green", "webserver-blue"]);
    c.eventually(&["get", "endpointslices", "-o", "name"], T, |o| !o.contains("webserver"));
}

/// Deleting an endpoint pod takes it out of every node's rules at once, while its container still
/// runs its preStop hook: no new connection reaches a pod that is shutting down.
fn endpoint_leaves_rotation_before_it_stops(c: &Cluster, node_ips: &[String], node_port: &str) {
    let image = c.ok(&[
        "get",
        "deployment",
        "webserver-blue",
        "-o",
        "jsonpath={.spec.template.spec.containers[0].image}",
    ]);
    let manifest = c.dir.path().join("rotation.yaml");
    std::fs::write(
        &manifest,
        format!(
            "apiVersion: v1\nkind: Pod\nmetadata: {{name: rotation, labels: {{type: webserver, color: blue}}}}\n\
             spec:\n  terminationGracePeriodSeconds: 30\n  containers:\n  - name: web\n    image: '{image}'\n    \
             lifecycle: {{preStop: {{exec: {{command: [sleep, '8']}}}}}}\n"
        ),
    )
    .unwrap();
    c.ok(&["apply", "-f", manifest.to_str().unwrap()]);
    let pod = ready_pods(c, "rotation", 1).remove(0);
    // It is in rotation: the NodePort reaches it from outside.
    let urls: Vec<String> =
        node_ips.iter().map(|ip| format!("http://{ip}:{node_port}/cgi-bin/info")).collect();
    cluster::wait_until("the new pod answering through the NodePort", T, || {
        urls.iter()
            .any(|u| cluster::http_get(u).is_some_and(|p| line_of(&p, "hostname=").contains("rotation")))
    });
    let deleted = Instant::now();
    c.ok(&["delete", "pod", "rotation", "--wait=false"]);
    c.eventually(
        &[
            "get",
            "endpointslices",
            "-l",
            "kubernetes.io/service-name=webserver",
            "-o",
            "jsonpath={range .items[*].endpoints[*]}{.addresses[0]}={.conditions.ready}{\"\\n\"}{end}",
        ],
        T,
        |o| o.lines().any(|l| l == format!("{}=false", pod.ip)),
    );
    // The proxies follow within their sync interval; then no request reaches it, on any node.
    std::thread::sleep(Duration::from_millis(1000));
    for _ in 0..5 {
        for url in &urls {
            let page = cluster::http_get(url).unwrap_or_else(|| panic!("{url} failed while a pod stops"));
            assert!(
                !line_of(&page, "hostname=").contains("rotation"),
                "{url} reached the stopping pod: {page}"
            );
        }
    }
    // ... while the pod itself still serves: its preStop hook holds its container running.
    let direct = cluster::http_get(&format!("http://{}/cgi-bin/info", pod.ip));
    assert!(
        direct.is_some_and(|p| line_of(&p, "hostname=").contains("rotation")),
        "the stopping pod still answers directly"
    );
    assert!(
        deleted.elapsed() < Duration::from_secs(8),
        "checked within the preStop hook: {:?}",
        deleted.elapsed()
    );
    c.eventually(&["get", "pods", "-o", "name"], T, |o| !o.contains("pod/rotation"));
}

/// `kubectl exec -n NS POD -- ARGS…` → (success, stdout + stderr).
fn exec_in(c: &Cluster, ns: &str, pod: &str, args: &[&str]) -> (bool, String) {
    let mut all = vec!["exec", "-n", ns, pod, "--"];
    all.extend_from_slice(args);
    let out = c.kubectl(&all);
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    (out.status.success(), text)
}

/// Cluster DNS on every node (names, short names through the search path, headless Services, SRV),
/// the kubelet's resolv.conf, and an in-cluster client (the real kubectl in a pod) that reaches the
/// API server by its Service name with the pod's ServiceAccount token, limited to what its Role gives.
fn cluster_dns_and_in_cluster_clients(c: &Cluster) {
    // The master publishes the DNS Service at the tenth address, one endpoint per node.
    let dns_ip = c.ok(&["get", "svc", "-n", "kube-system", "kube-dns", "-o", "jsonpath={.spec.clusterIP}"]);
    assert_eq!(dns_ip, "10.96.0.10");
    let nodes = c.eventually(
        &[
            "get",
            "endpointslices",
            "-n",
            "kube-system",
            "-l",
            "kubernetes.io/service-name=kube-dns",
            "-o",
            "jsonpath={.items[*].endpoints[*].nodeName}",
        ],
        T,
        |o| o.split_whitespace().count() == 3,
    );
    assert_eq!(nodes.split_whitespace().collect::<std::collections::BTreeSet<_>>().len(), 3, "{nodes}");

    let mut yaml = String::from(
        "apiVersion: v1\nkind: Namespace\nmetadata: {name: dnstest}\n---\n\
         apiVersion: v1\nkind: ServiceAccount\nmetadata: {name: lister, namespace: dnstest}\n---\n\
         apiVersion: rbac.authorization.k8s.io/v1\nkind: Role\nmetadata: {name: pod-reader, namespace: dnstest}\n\
         rules:\n- {apiGroups: [\"\"], resources: [pods], verbs: [get, list]}\n---\n\
         apiVersion: rbac.authorization.k8s.io/v1\nkind: RoleBinding\nmetadata: {name: lister-reads, namespace: dnstest}\n\
         roleRef: {apiGroup: rbac.authorization.k8s.io, kind: Role, name: pod-reader}\n\
         subjects:\n- {kind: ServiceAccount, name: lister, namespace: dnstest}\n---\n\
         apiVersion: v1\nkind: Service\nmetadata: {name: web, namespace: dnstest}\n\
         spec:\n  selector: {app: dnsweb}\n  ports:\n  - {name: http, port: 80}\n---\n\
         apiVersion: v1\nkind: Service\nmetadata: {name: web-headless, namespace: dnstest}\n\
         spec:\n  clusterIP: None\n  selector: {app: dnsweb}\n  ports:\n  - {name: http, port: 80}\n",
    );
    // One pod on each node (bound directly), each serving and asking.
    for i in 1..=3 {
        yaml.push_str(&format!(
            "---\napiVersion: v1\nkind: Pod\nmetadata: {{name: dns{i}, namespace: dnstest, labels: {{app: dnsweb}}}}\n\
             spec:\n  nodeName: node{i}\n  hostname: member{i}\n  subdomain: web-headless\n  \
             serviceAccountName: lister\n  terminationGracePeriodSeconds: 1\n  \
             containers:\n  - name: c\n    image: nginx:1.10\n    volumeMounts:\n    \
             - {{name: kubectl, mountPath: /opt/kubectl, readOnly: true}}\n  \
             volumes:\n  - name: kubectl\n    hostPath: {{path: /usr/bin/kubectl, type: File}}\n"
        ));
    }
    let file = c.dir.path().join("dnstest.yaml");
    std::fs::write(&file, yaml).unwrap();
    c.ok(&["apply", "-f", file.to_str().unwrap()]);
    let rows = c.eventually(
        &[
            "get",
            "pods",
            "-n",
            "dnstest",
            "-o",
            "jsonpath={range .items[*]}{.metadata.name}|{.status.podIP}|{.status.phase}{\"\\n\"}{end}",
        ],
        T,
        |o| o.lines().filter(|l| l.ends_with("|Running")).count() == 3,
    );
    let mut pod_ips: Vec<String> = rows.lines().map(|l| l.split('|').nth(1).unwrap().to_string()).collect();
    pod_ips.sort();
    let web_ip = c.ok(&["get", "svc", "-n", "dnstest", "web", "-o", "jsonpath={.spec.clusterIP}"]);

    for i in 1..=3 {
        let pod = format!("dns{i}");
        // The kubelet's resolv.conf for ClusterFirst.
        let (_, resolv) = exec_in(c, "dnstest", &pod, &["cat", "/etc/resolv.conf"]);
        assert!(
            resolv.contains("search dnstest.svc.cluster.local svc.cluster.local cluster.local")
                && resolv.contains("nameserver 10.96.0.10")
                && resolv.contains("options ndots:5"),
            "{pod}: {resolv}"
        );
        // Full names, through this node's own DNS server.
        let mut answered = String::new();
        cluster::wait_until(&format!("{pod} resolving web.dnstest"), T, || {
            answered = exec_in(c, "dnstest", &pod, &["nslookup", "web.dnstest.svc.cluster.local"]).1;
            answered.contains(&web_ip)
        });
        let (_, k) = exec_in(c, "dnstest", &pod, &["nslookup", "kubernetes.default.svc.cluster.local"]);
        assert!(k.contains("10.96.0.1\n") || k.contains("10.96.0.1 "), "{pod}: {k}");
        // Headless: every ready pod; SRV for the named port; an unknown name fails.
        let mut headless = String::new();
        cluster::wait_until(&format!("{pod} resolving the headless Service"), T, || {
            headless = exec_in(c, "dnstest", &pod, &["nslookup", "web-headless.dnstest.svc.cluster.local"]).1;
            pod_ips.iter().all(|ip| headless.contains(ip.as_str()))
        });
        // A pod named by the headless Service through its hostname and subdomain, and in its own
        // /etc/hosts.
        let member = format!("member{}.web-headless.dnstest.svc.cluster.local", 4 - i);
        let (_, m) = exec_in(c, "dnstest", &pod, &["nslookup", &member]);
        let other = format!("dns{}|", 4 - i);
        let other_ip = rows.lines().find(|l| l.starts_with(&other)).unwrap().split('|').nth(1).unwrap();
        assert!(m.contains(other_ip), "{pod} resolving {member}: {m}");
        let (_, hosts) = exec_in(c, "dnstest", &pod, &["cat", "/etc/hosts"]);
        let own = format!("\tmember{i}.web-headless.dnstest.svc.cluster.local\tmember{i}\n");
        assert!(hosts.contains(&own), "{pod}: {hosts}");
        let (_, srv) = exec_in(
            c,
            "dnstest",
            &pod,
            &["nslookup", "-type=SRV", "_http._tcp.web.dnstest.svc.cluster.local"],
        );
        assert!(srv.contains("web.dnstest.svc.cluster.local") && srv.contains("80"), "{pod}: {srv}");
        let (ok, missing) = exec_in(c, "dnstest", &pod, &["nslookup", "nothing.dnstest.svc.cluster.local"]);
        assert!(!ok || missing.contains("NXDOMAIN"), "{pod}: {missing}");

        // A client in the pod: the real kubectl with the pod's token, by the API server's name
        // (short names through the search path), allowed in its namespace only.
        let sa = "/var/run/secrets/kubernetes.io/serviceaccount";
        let token = format!("--token=$(cat {sa}/token)");
        let script = |what: &str| {
            format!(
                "/opt/kubectl --server=https://kubernetes.default.svc {token} --certificate-authority={sa}/ca.crt {what}"
            )
        };
        let (ok, listed) = exec_in(c, "dnstest", &pod, &["sh", "-c", &script("get pods -n dnstest -o name")]);
        assert!(ok && listed.contains("pod/dns1") && listed.contains("pod/dns3"), "{pod}: {listed}");
        let (ok, denied) = exec_in(c, "dnstest", &pod, &["sh", "-c", &script("get pods -n default")]);
        assert!(
            !ok && denied.contains("forbidden") && denied.contains("system:serviceaccount:dnstest:lister"),
            "{pod}: {denied}"
        );
    }
    eprintln!("cluster DNS answered on all three nodes; in-cluster kubectl listed with its token");
    // The in-cluster configuration client libraries use (KUBERNETES_SERVICE_HOST and the mounted
    // token) works unchanged.
    let (ok, listed) = exec_in(c, "dnstest", "dns1", &["/opt/kubectl", "get", "pods", "-o", "name"]);
    assert!(ok && listed.contains("pod/dns2"), "{listed}");
    c.ok(&["delete", "namespace", "dnstest"]);
}

/// Every trace of pod `key` on node `i`: its dir, runtime state, netns pin, IPAM record, veth,
/// cgroups.
fn traces(c: &Cluster, i: usize, key: &str) -> Vec<String> {
    let mut found = Vec::new();
    let run = Path::new("/run/rkube-cluster").join(format!("node{i}"));
    for dir in
        [c.node_root(i).join("pods"), c.node_root(i).join("network"), run.join("runtime"), run.join("netns")]
    {
        let grep = Command::new("grep").args(["-rl", key]).arg(&dir).output().unwrap();
        found.extend(String::from_utf8_lossy(&grep.stdout).lines().map(str::to_string));
        for e in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
            if e.file_name().to_string_lossy().contains(key) {
                found.push(e.path().display().to_string());
            }
        }
    }
    let veth = rkube::network::pod::veth_name("rkv", key);
    let links =
        Command::new("ip").args(["-n", &format!("rkube-node{i}"), "-o", "link", "show"]).output().unwrap();
    if String::from_utf8_lossy(&links.stdout).contains(&format!(" {veth}@")) {
        found.push(format!("veth {veth}"));
    }
    let cgroups = Command::new("find")
        .args(["/sys/fs/cgroup", "-maxdepth", "4", "-name"])
        .arg(format!("*{key}*"))
        .output()
        .unwrap();
    found.extend(String::from_utf8_lossy(&cgroups.stdout).lines().map(str::to_string));
    found
}

fn delete_pod_is_graceful_and_leaves_nothing(c: &Cluster) {
    let pods = ready_pods(c, "replicaset-nginx-", 4);
    let victim = &pods[0];
    let i = node_index(&victim.node);
    let key = pod_key(victim);
    let before = traces(c, i, &key);
    for what in ["/pods/", "/netns/", "veth ", "/runtime/"] {
        assert!(
            before.iter().any(|t| t.contains(what)),
            "the trace check sees {what} of a running pod: {before:?}"
        );
    }
    let started = Instant::now();
    c.ok(&["delete", "pod", &victim.name]);
    // The image exits on SIGTERM: the kubelet-style stop ends well before the 30 s grace.
    assert!(started.elapsed() < Duration::from_secs(20), "graceful delete took {:?}", started.elapsed());
    let names = c.ok(&["get", "pods", "-o", "name"]);
    assert!(!names.contains(&victim.name), "{names}");
    let left = traces(c, i, &key);
    assert!(left.is_empty(), "pod {key} left traces on node{i}: {left:?}");
    let events = c.ok(&[
        "get",
        "events",
        "-o",
        "jsonpath={range .items[*]}{.involvedObject.name} {.reason}{\"\\n\"}{end}",
    ]);
    assert!(events.lines().any(|l| l == format!("{} Killing", victim.name)), "{events}");
    ready_pods(c, "replicaset-nginx-", 4);
}

/// `rkubelet run` on a joined node: the pod gets an address from the pod CIDR the master
/// assigned (shared IPAM with the API's pods), serves, and leaves the API's pods alone.
fn file_pods_on_a_joined_node(c: &Cluster) {
    let manifest = c.dir.path().join("file-pod.yaml");
    std::fs::write(
        &manifest,
        "apiVersion: v1\nkind: Pod\nmetadata: {name: local}\nspec:\n  terminationGracePeriodSeconds: 1\n  \
         containers: [{name: web, image: 'nginx:1.11'}]\n",
    )
    .unwrap();
    let out = c.rkubelet(2, "run", &[manifest.to_str().unwrap()]);
    assert!(out.status.success(), "rkubelet run on node2: {}", String::from_utf8_lossy(&out.stderr));
    let said = String::from_utf8_lossy(&out.stdout).into_owned();
    let ip = said.split("(IP ").nth(1).and_then(|r| r.split(')').next()).unwrap_or_else(|| panic!("{said}"));
    let cidr = c.ok(&["get", "node", "node2", "-o", "jsonpath={.spec.podCIDR}"]);
    let net: ipnet::Ipv4Net = cidr.parse().unwrap();
    assert!(
        net.contains(&ip.parse::<std::net::Ipv4Addr>().unwrap()),
        "file pod IP {ip} outside node2's {cidr}"
    );
    let page = cluster::wait_page(&format!("http://{ip}/"), "nginx 1.11");
    assert!(page.contains("nginx 1.11"), "{page}");
    let rm = c.rkubelet(2, "rm", &["local"]);
    assert!(rm.status.success(), "rkubelet rm: {}", String::from_utf8_lossy(&rm.stderr));
    ready_pods(c, "replicaset-nginx-", 4);
}

fn agent_restart_keeps_containers(c: &Cluster) {
    let pods = ready_pods(c, "replicaset-nginx-", 4);
    let node = pods[0].node.clone();
    let i = node_index(&node);
    let on_node: Vec<&PodRow> = pods.iter().filter(|p| p.node == node).collect();
    c.node_agent("stop-node", i);
    // Deleted while the agent is down: the master waits for the node.
    let victim = on_node[0];
    c.ok(&["delete", "pod", &victim.name, "--wait=false"]);
    std::thread::sleep(Duration::from_secs(1));
    c.node_agent("start-node", i);
    c.eventually(&["get", "pods", "-o", "name"], T, |o| !o.contains(&victim.name));
    let after = ready_pods(c, "replicaset-nginx-", 4);
    for p in on_node.iter().skip(1) {
        let now = after.iter().find(|q| q.uid == p.uid).expect("pod survives the agent restart");
        assert_eq!(
            (now.restarts.as_str(), now.started.as_str()),
            (p.restarts.as_str(), p.started.as_str()),
            "{} restarted",
            p.name
        );
    }
    let key = pod_key(victim);
    cluster::wait_until("the deleted pod to be gone from the node", T, || traces(c, i, &key).is_empty());
}

fn node_credentials_are_confined(c: &Cluster) {
    let creds = c.node_root(1).join("node");
    for file in ["client.key", "serving.key", "kubeconfig", "password"] {
        let mode = std::fs::metadata(creds.join(file)).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600, "{file}");
    }
    let kc = creds.join("kubeconfig");
    let ok = |args: &[&str]| {
        let out = c.kubectl_as(&kc, args);
        assert!(out.status.success(), "node1 may {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    };
    let forbidden = |args: &[&str]| {
        let out = c.kubectl_as(&kc, args);
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success() && err.contains("forbidden"), "node1 must not {args:?}: {err}");
    };
    ok(&["get", "node", "node1"]);
    // Other Nodes are readable (the node's routes and service proxy need them), not writable.
    ok(&["get", "node", "node2"]);
    forbidden(&["label", "node", "node2", "x=y"]);
    forbidden(&["get", "secrets"]);
    forbidden(&["get", "pods", "-A"]);
    let probe = c.dir.path().join("probe.yaml");
    std::fs::write(
        &probe,
        "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: probe}\nspec:\n  replicas: 0\n  \
         selector: {matchLabels: {app: probe}}\n  template:\n    metadata: {labels: {app: probe}}\n    \
         spec: {containers: [{name: c, image: 'nginx:1.10'}]}\n",
    )
    .unwrap();
    c.ok(&["apply", "-f", probe.to_str().unwrap()]);
    forbidden(&["delete", "deployment", "probe"]);
    c.ok(&["delete", "deployment", "probe"]);
}

fn bad_joins_register_nothing(c: &Cluster) {
    let token = std::fs::read_to_string(c.cluster_dir().join("master/pki/join.token")).unwrap();
    let token = token.trim();
    let (hash, cred) = token.split_once("::").unwrap();
    let wrong_ca = format!("RK1{}::{cred}", "0".repeat(64));
    let wrong_secret = format!("{hash}::{}.0000000000000000", &cred[..6]);
    let root = c.dir.path().join("evil");
    for (token, want) in
        [(wrong_ca.as_str(), "does not match the join token"), (wrong_secret.as_str(), "refused")]
    {
        let out = Command::new(env!("CARGO_BIN_EXE_rkubelet"))
            .args([
                "join",
                "https://10.250.0.2:6443",
                "--token",
                token,
                "--node-name",
                "evil",
                "--node-ip",
                "10.250.0.1",
            ])
            .arg("--root")
            .arg(&root)
            .arg("--run-dir")
            .arg(root.join("run"))
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success() && err.contains(want), "{err}");
        assert_eq!(err.trim().lines().count(), 1, "one line: {err}");
    }
    let out = c.kubectl(&["get", "node", "evil"]);
    assert!(!out.status.success(), "no node registered");
    assert!(!root.join("node/kubeconfig").exists(), "no credentials written");
}

fn node_down_moves_pods(c: &Cluster) {
    let pods = ready_pods(c, "replicaset-nginx-", 4);
    let node = pods.iter().map(|p| p.node.clone()).find(|n| n != "node1").unwrap_or_else(|| "node3".into());
    let i = node_index(&node);
    c.node_agent("stop-node", i);
    c.eventually(&["get", "node", &node], T, |o| o.contains("NotReady"));
    c.eventually(&["get", "pods", "-o", ROWS], T, |o| {
        let rows: Vec<&str> = o.lines().filter(|l| l.starts_with("replicaset-nginx-")).collect();
        rows.iter().filter(|r| r.contains("|Running|") && !r.contains(&format!("|{node}|"))).count() == 4
    });
    c.node_agent("start-node", i);
    c.eventually(&["get", "node", &node], T, |o| o.contains(" Ready "));
    let root = c.node_root(i).join("pods");
    cluster::wait_until("the evicted pods to be removed from the returning node", T, || {
        std::fs::read_dir(&root).map(|d| d.count() == 0).unwrap_or(true)
    });
}
