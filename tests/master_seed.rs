//! The seed workflow end to end: the real kubectl against rkube-master with its controllers,
//! scheduler and fake nodes, on both store backends.

#[path = "support/master.rs"]
mod master;

use master::{Backend, Master};
use std::io::{BufRead, BufReader};
use std::process::Stdio;
use std::time::Duration;

const T: Duration = Duration::from_secs(60);

fn pod_names(m: &Master, prefix: &str) -> Vec<String> {
    m.ok(&["get", "pods", "-o", "name"])
        .lines()
        .filter_map(|l| l.strip_prefix("pod/"))
        .filter(|n| n.starts_with(prefix))
        .map(String::from)
        .collect()
}

/// Waits until exactly `n` pods with `prefix` are Running.
fn running(m: &Master, prefix: &str, n: usize) -> String {
    m.eventually(&["get", "pods", "-o", "wide"], T, |out| {
        let rows: Vec<&str> = out.lines().filter(|l| l.starts_with(prefix)).collect();
        rows.len() == n && rows.iter().all(|l| l.contains("Running") && l.contains("1/1"))
    })
}

fn seed_workflow(backend: Backend) {
    let m = Master::start(backend, &["--fake-nodes", "2"]);
    m.eventually(&["get", "nodes"], T, |o| o.matches(" Ready ").count() == 2);

    // ReplicaSet: 3 pods, then the 4-pod apply adds exactly one.
    m.ok(&["apply", "-f", "replicaset-nginx.yaml"]);
    let wide = running(&m, "replicaset-nginx-", 3);
    assert!(wide.contains("NODE") && wide.contains("fake-node-"), "{wide}");
    let before = pod_names(&m, "replicaset-nginx-");
    m.ok(&["apply", "-f", "replicaset-nginx-4pods.yaml"]);
    running(&m, "replicaset-nginx-", 4);
    let after = pod_names(&m, "replicaset-nginx-");
    assert!(before.iter().all(|p| after.contains(p)), "{before:?} {after:?}");
    let desc = m.ok(&["describe", "pod", &before[0]]);
    assert!(
        desc.contains("Controlled By:  ReplicaSet/replicaset-nginx")
            // The column width follows the longest label (`Service Account:` since pods have one).
            && desc.lines().any(|l| l.starts_with("Status:") && l.trim_end().ends_with(" Running")),
        "{desc}"
    );

    // `get -w` prints a row when something changes.
    let mut watch =
        m.kubectl_cmd(&["get", "pods", "-w"]).stdout(Stdio::piped()).stderr(Stdio::null()).spawn().unwrap();
    let mut lines = BufReader::new(watch.stdout.take().unwrap()).lines();
    assert!(lines.next().unwrap().unwrap().starts_with("NAME"));

    // Deployment: apply --record, set image --record, history, undo, status, scale.
    m.ok(&["apply", "-f", "deployment-nginx.yaml", "--record"]);
    assert!(
        m.ok(&["rollout", "status", "deployment", "my-nginx-deployment", "--timeout=60s"])
            .contains("successfully rolled out")
    );
    running(&m, "my-nginx-deployment-", 3);
    let row = lines.next().unwrap().unwrap();
    assert!(!row.is_empty());
    let _ = watch.kill();
    let _ = watch.wait();
    m.ok(&["set", "image", "deployment", "my-nginx-deployment", "nginx=nginx:1.11", "--record"]);
    m.ok(&["rollout", "status", "deployment", "my-nginx-deployment", "--timeout=60s"]);
    let hist = m.ok(&["rollout", "history", "deployment", "my-nginx-deployment"]);
    assert!(
        hist.contains("1         kubectl apply --filename=deployment-nginx.yaml --record=true"),
        "{hist}"
    );
    assert!(
        hist.contains(
            "2         kubectl set image deployment my-nginx-deployment nginx=nginx:1.11 --record=true"
        ),
        "{hist}"
    );
    let rs_v1 = m.ok(&["get", "rs", "-l", "app=my-nginx", "-o", "jsonpath={range .items[?(@.metadata.annotations.deployment\\.kubernetes\\.io/revision==\"1\")]}{.metadata.name}{end}"]);
    assert!(
        m.ok(&["rollout", "undo", "deployment", "my-nginx-deployment", "--to-revision=1"])
            .contains("rolled back")
    );
    m.ok(&["rollout", "status", "deployment", "my-nginx-deployment", "--timeout=60s"]);
    let hist = m.ok(&["rollout", "history", "deployment", "my-nginx-deployment"]);
    assert!(hist.contains("\n2 ") && hist.contains("\n3 ") && !hist.contains("\n1 "), "{hist}");
    let rs_v3 = m.ok(&["get", "rs", "-l", "app=my-nginx", "-o", "jsonpath={range .items[?(@.metadata.annotations.deployment\\.kubernetes\\.io/revision==\"3\")]}{.metadata.name}{end}"]);
    assert_eq!(rs_v1, rs_v3, "undo must reuse the first ReplicaSet");
    assert_eq!(m.ok(&["get", "rs", "-l", "app=my-nginx", "-o", "name"]).lines().count(), 2);
    let images = running(&m, "my-nginx-deployment-", 3);
    assert!(
        images.lines().filter(|l| l.starts_with("my-nginx-deployment-")).all(|l| l.contains(&rs_v1)),
        "{images}"
    );
    m.ok(&["scale", "deployment", "my-nginx-deployment", "--replicas=5"]);
    m.eventually(&["get", "deploy", "my-nginx-deployment"], T, |o| o.contains("5/5"));

    // ConfigMap, Secret, the blue Deployment (extensions/v1beta1) and Services.
    m.ok(&["create", "-f", "configmap.yaml"]);
    m.ok(&["create", "-f", "secret.yaml"]);
    m.ok(&["apply", "-f", "deployment-blue.yaml"]);
    m.ok(&["apply", "-f", "deployment-green.yaml"]);
    running(&m, "webserver-blue-", 3);
    m.ok(&["apply", "-f", "service.yaml"]);
    m.ok(&[
        "expose",
        "deployment",
        "my-nginx-deployment",
        "--type=NodePort",
        "--port=80",
        "--name=my-nginx-np",
    ]);
    let svc = m.ok(&["get", "svc"]);
    assert!(
        svc.lines().any(|l| l.starts_with("webserver ") && l.contains("10.200.0.") && l.contains("80:3")),
        "{svc}"
    );
    assert!(
        svc.lines().any(|l| l.starts_with("my-nginx-np ") && l.contains("NodePort") && l.contains("80:3")),
        "{svc}"
    );

    // Cascading deletion through ownerReferences.
    m.ok(&["delete", "-f", "deployment-nginx.yaml"]);
    m.eventually(&["get", "rs,pods", "-o", "name"], T, |o| !o.contains("my-nginx-deployment"));
    m.ok(&["delete", "rs", "replicaset-nginx"]);
    m.eventually(&["get", "pods", "-o", "name"], T, |o| !o.contains("replicaset-nginx"));
}

#[test]
fn seed_workflow_embedded() {
    seed_workflow(Backend::embedded());
}

#[test]
fn seed_workflow_etcd() {
    seed_workflow(Backend::etcd());
}
