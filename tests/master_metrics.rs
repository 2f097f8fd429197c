//! The master's `/metrics` read with the real kubectl (`get --raw /metrics`) and parsed by a
//! Prometheus text-format parser: request counts and latencies move with requests, open watches
//! are counted while open, store calls are timed, scheduler and controller queue figures are
//! there; only authorized users may read it. Health endpoints as kube-apiserver answers them,
//! including a failing store (etcd killed). On both store backends.

#[path = "support/master.rs"]
mod master;

use master::{Backend, Master, wait_for};
use prometheus_parse::{Scrape, Value};
use std::process::{Command, Stdio};
use std::time::Duration;

fn scrape(m: &Master) -> Scrape {
    let text = m.ok(&["get", "--raw", "/metrics"]);
    Scrape::parse(text.lines().map(|l| Ok(l.to_string()))).expect("a Prometheus text document")
}

/// The sum of every sample of `metric` carrying `labels` (a histogram counts its observations).
fn value(s: &Scrape, metric: &str, labels: &[(&str, &str)]) -> f64 {
    s.samples
        .iter()
        .filter(|x| x.metric == metric && labels.iter().all(|(k, v)| x.labels.get(k) == Some(*v)))
        .map(|x| match &x.value {
            Value::Counter(v) | Value::Gauge(v) | Value::Untyped(v) => *v,
            Value::Histogram(buckets) => {
                buckets.iter().find(|b| b.less_than.is_infinite()).map(|b| b.count).unwrap_or(0.0)
            }
            Value::Summary(_) => 0.0,
        })
        .sum()
}

fn has(s: &Scrape, metric: &str) -> bool {
    s.samples.iter().any(|x| x.metric == metric)
}

fn curl(url: &str, token: Option<&str>) -> (String, String) {
    let mut cmd = Command::new("curl");
    cmd.args(["-sk", "-w", "\n%{http_code}"]);
    if let Some(t) = token {
        cmd.args(["-H", &format!("Authorization: Bearer {t}")]);
    }
    let out = cmd.arg(url).output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (body, code) = text.rsplit_once('\n').unwrap_or(("", &text));
    (code.to_string(), body.to_string())
}

fn counters_move_with_requests(m: &Master, backend: &str) {
    let list = [("verb", "LIST"), ("resource", "configmaps"), ("code", "200"), ("scope", "namespace")];
    let create = [("verb", "CREATE"), ("resource", "configmaps"), ("code", "201")];
    let before = scrape(m);
    for i in 0..3 {
        m.ok(&["create", "configmap", &format!("c{i}"), "--from-literal=a=b"]);
        m.ok(&["get", "configmaps"]);
    }
    let conflict = m.fails(&["create", "configmap", "c0", "--from-literal=a=b"]);
    assert!(conflict.contains("already exists"), "{conflict}");
    let after = scrape(m);
    let moved = |metric: &str, labels: &[(&str, &str)]| {
        value(&after, metric, labels) - value(&before, metric, labels)
    };
    assert_eq!(moved("apiserver_request_total", &list), 3.0, "{backend}: LIST configmaps");
    assert_eq!(moved("apiserver_request_total", &create), 3.0, "{backend}: CREATE configmaps");
    assert_eq!(
        moved("apiserver_request_total", &[("verb", "CREATE"), ("resource", "configmaps"), ("code", "409")]),
        1.0,
        "{backend}: the conflict is counted with its code"
    );
    let latency = [("verb", "LIST"), ("resource", "configmaps"), ("component", "apiserver")];
    assert_eq!(moved("apiserver_request_duration_seconds", &latency), 3.0, "{backend}: LIST latencies");
    // Every create reached the store, whichever backend it is.
    assert!(
        moved("etcd_requests_total", &[("operation", "create"), ("type", "configmaps")]) >= 3.0,
        "{backend}"
    );
    assert!(
        moved("etcd_request_duration_seconds", &[("operation", "create"), ("type", "configmaps")]) >= 3.0,
        "{backend}"
    );
    // Scheduler and controller queues are reported.
    for (metric, labels) in [
        ("scheduler_pending_pods", vec![("queue", "active")]),
        ("scheduler_pending_pods", vec![("queue", "unschedulable")]),
        ("workqueue_adds_total", vec![("name", "serviceaccounts")]),
        ("workqueue_depth", vec![("name", "replicaset")]),
        ("workqueue_work_duration_seconds", vec![("name", "replicaset")]),
    ] {
        assert!(
            after
                .samples
                .iter()
                .any(|x| x.metric == metric && labels.iter().all(|(k, v)| x.labels.get(k) == Some(*v))),
            "{backend}: {metric} {labels:?}"
        );
    }
    // A new namespace is a change the serviceaccounts loop is woken by.
    let adds = |s: &Scrape| value(s, "workqueue_adds_total", &[("name", "serviceaccounts")]);
    let queued = adds(&after);
    m.ok(&["create", "namespace", &format!("queued-{backend}")]);
    wait_for("the serviceaccounts queue to count the namespace", Duration::from_secs(20), || {
        (adds(&scrape(m)) > queued).then_some(())
    });
    assert!(has(&after, "apiserver_current_inflight_requests"), "{backend}");
}

fn pods_scheduled_are_counted(m: &Master) {
    let before = scrape(m);
    let pod = "apiVersion: v1\nkind: Pod\nmetadata: {name: nowhere}\nspec:\n  nodeSelector: {none: \"x\"}\n  \
               containers:\n  - {name: c, image: busybox:test}\n";
    m.ok(&["apply", "-f", &m.write("nowhere.yaml", pod)]);
    wait_for("an unschedulable attempt", Duration::from_secs(20), || {
        let s = scrape(m);
        let attempts = [("result", "unschedulable")];
        (value(&s, "scheduler_schedule_attempts_total", &attempts)
            > value(&before, "scheduler_schedule_attempts_total", &attempts)
            && value(&s, "scheduler_pending_pods", &[("queue", "unschedulable")]) >= 1.0
            && value(&s, "scheduler_scheduling_attempt_duration_seconds", &attempts) >= 1.0)
            .then_some(())
    });
    m.ok(&["delete", "pod", "nowhere", "--wait=false"]);
}

fn watches_are_counted_while_open(m: &Master) {
    let watching = [("verb", "WATCH"), ("resource", "configmaps")];
    let base = value(&scrape(m), "apiserver_longrunning_requests", &watching);
    let mut watch = m
        .kubectl_cmd(&["get", "configmaps", "--watch", "-o", "name"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    wait_for("the watch to be counted", Duration::from_secs(20), || {
        (value(&scrape(m), "apiserver_longrunning_requests", &watching) == base + 1.0).then_some(())
    });
    let _ = watch.kill();
    let _ = watch.wait();
    wait_for("the watch to end", Duration::from_secs(20), || {
        (value(&scrape(m), "apiserver_longrunning_requests", &watching) == base).then_some(())
    });
}

fn only_authorized_users_read_metrics(m: &Master) {
    m.ok(&["create", "serviceaccount", "bot"]);
    let token = m.ok(&["create", "token", "bot"]).trim().to_string();
    let err = String::from_utf8_lossy(&m.kubectl(&["--token", &token, "get", "--raw", "/metrics"]).stderr)
        .into_owned();
    assert!(err.contains("Forbidden"), "{err}");
    let (code, body) = curl(&format!("{}/metrics", m.url()), Some(&token));
    assert_eq!(code, "403", "{body}");
    assert!(body.contains(r#"cannot get path \"/metrics\""#), "{body}");
    assert_eq!(curl(&format!("{}/metrics", m.url()), None).0, "401");
    // Bound to system:monitoring's role (through the group binding's role), the bot may scrape.
    m.ok(&[
        "create",
        "clusterrolebinding",
        "bot-scrapes",
        "--clusterrole=system:monitoring",
        "--serviceaccount=default:bot",
    ]);
    let (code, body) = curl(&format!("{}/metrics", m.url()), Some(&token));
    assert_eq!(code, "200", "{body}");
    assert!(body.contains("# TYPE apiserver_request_total counter"), "{body}");
}

fn healthy(m: &Master) {
    let url = m.url();
    for endpoint in ["livez", "readyz", "healthz"] {
        assert_eq!(curl(&format!("{url}/{endpoint}"), None), ("200".into(), "ok".into()), "{endpoint}");
    }
    let (code, body) = curl(&format!("{url}/livez?verbose"), None);
    assert_eq!(code, "200");
    assert_eq!(body, "[+]ping ok\n[+]log ok\n[+]etcd ok\nlivez check passed\n");
    let (code, body) = curl(&format!("{url}/readyz?verbose&exclude=etcd&exclude=nope"), None);
    assert_eq!(code, "200");
    assert!(body.contains("[+]etcd excluded: ok\n[+]etcd-readiness ok\n[+]shutdown ok\n"), "{body}");
    assert!(body.contains("warn: some health checks cannot be excluded: no matches for \"nope\""), "{body}");
    assert!(body.ends_with("readyz check passed\n"), "{body}");
    assert_eq!(m.ok(&["get", "--raw", "/livez/etcd"]), "ok");
    assert_eq!(m.ok(&["get", "--raw", "/readyz/ping"]), "ok");
    let missing = m.fails(&["get", "--raw", "/livez/nope"]);
    assert!(missing.contains("NotFound") || missing.contains("not find"), "{missing}");
}

#[test]
fn metrics_and_health_embedded() {
    let m = Master::start(Backend::embedded(), &[]);
    healthy(&m);
    counters_move_with_requests(&m, "embedded");
    pods_scheduled_are_counted(&m);
    watches_are_counted_while_open(&m);
    only_authorized_users_read_metrics(&m);
}

#[test]
fn metrics_and_health_etcd_and_a_failing_store() {
    let mut m = Master::start(Backend::etcd(), &[]);
    healthy(&m);
    counters_move_with_requests(&m, "etcd");
    let master::Backend::Etcd(etcd) = &mut m.backend else { unreachable!() };
    etcd.stop();
    let url = m.url();
    let (code, body) = curl(&format!("{url}/readyz?verbose"), None);
    assert_eq!(code, "500", "{body}");
    assert!(body.contains("[+]ping ok\n[+]log ok\n[-]etcd failed: reason withheld\n"), "{body}");
    assert!(body.ends_with("readyz check failed\n"), "{body}");
    // Without verbose the failing answer lists the checks all the same.
    let (code, body) = curl(&format!("{url}/livez"), None);
    assert_eq!(code, "500", "{body}");
    assert!(body.contains("[-]etcd failed: reason withheld"), "{body}");
    // Excluding the failing check passes.
    assert_eq!(curl(&format!("{url}/livez?exclude=etcd"), None), ("200".into(), "ok".into()));
    let (code, body) = curl(&format!("{url}/livez/etcd"), Some(&m.admin_token()));
    assert_eq!(code, "500", "{body}");
    assert!(body.starts_with("internal server error: "), "{body}");
}
