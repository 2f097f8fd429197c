//! Watch-list (streaming lists) and bookmarks against a real rkube-master: kube-rs's watcher with
//! `streaming_lists()` gets the initial objects, the end-of-initial-events bookmark and then live
//! events; raw watches get periodic BOOKMARKs with `allowWatchBookmarks`, and a bad combination of
//! options is refused with kube-apiserver's 422.
//! A kube-rs reflector converges over create, update and delete on both store backends.

#[path = "support/master.rs"]
mod master;

use futures_util::StreamExt;
use k8s_openapi::api::core::v1::ConfigMap;
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::runtime::watcher::{self, Event};
use kube::{Api, Client, Config};
use master::{Backend, Master};
use std::time::Duration;

async fn client(m: &Master) -> Client {
    let kc = Kubeconfig::read_from(m.kubeconfig()).unwrap();
    let config = Config::from_custom_kubeconfig(kc, &KubeConfigOptions::default()).await.unwrap();
    Client::try_from(config).unwrap()
}

fn curl(m: &Master, path: &str, max_time: &str) -> String {
    let out = std::process::Command::new("curl")
        .args(["-sk", "--max-time", max_time, "-H", &format!("Authorization: Bearer {}", m.admin_token())])
        .arg(format!("{}{path}", m.url()))
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn name(cm: &ConfigMap) -> String {
    cm.metadata.name.clone().unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streaming_lists_and_bookmarks() {
    let m = Master::start(Backend::embedded(), &["--watch-bookmark-interval", "1s"]);
    m.ok(&["create", "namespace", "wl"]);
    for n in ["b-second", "a-first"] {
        m.ok(&["create", "configmap", n, "-n", "wl", "--from-literal=k=v"]);
    }
    let api: Api<ConfigMap> = Api::namespaced(client(&m).await, "wl");
    let mut events = watcher::watcher(api, watcher::Config::default().streaming_lists()).boxed();
    let mut initial = Vec::new();
    let deadline = Duration::from_secs(10);
    loop {
        let ev = tokio::time::timeout(deadline, events.next()).await.expect("an event within 10 s");
        match ev.expect("stream open").expect("no watch error") {
            Event::Init => {}
            Event::InitApply(cm) => initial.push(name(&cm)),
            Event::InitDone => break,
            other => panic!("unexpected before InitDone: {other:?}"),
        }
    }
    assert_eq!(initial, ["a-first", "b-second", "kube-root-ca.crt"], "sorted by name");
    m.ok(&["create", "configmap", "c-live", "-n", "wl"]);
    loop {
        let ev = tokio::time::timeout(deadline, events.next()).await.expect("the live event");
        if let Event::Apply(cm) = ev.unwrap().unwrap() {
            assert_eq!(name(&cm), "c-live");
            break;
        }
    }

    // The raw stream: ADDED..., the annotated bookmark, then periodic bookmarks.
    let raw = curl(
        &m,
        "/api/v1/namespaces/wl/configmaps?watch=true&sendInitialEvents=true&resourceVersionMatch=NotOlderThan&allowWatchBookmarks=true&timeoutSeconds=3",
        "6",
    );
    let lines: Vec<serde_json::Value> = raw.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    let types: Vec<&str> = lines.iter().map(|l| l["type"].as_str().unwrap()).collect();
    assert_eq!(&types[..5], ["ADDED", "ADDED", "ADDED", "ADDED", "BOOKMARK"], "{raw}");
    assert_eq!(lines[4]["object"]["metadata"]["annotations"]["k8s.io/initial-events-end"], "true");
    assert_eq!(lines[4]["object"]["kind"], "ConfigMap");
    assert!(types[5..].iter().all(|t| *t == "BOOKMARK") && types.len() >= 6, "{raw}");
    let rv: i64 = lines[5]["object"]["metadata"]["resourceVersion"].as_str().unwrap().parse().unwrap();
    assert!(rv > 0);
    // An ordinary watch gets periodic bookmarks too, only when it allows them.
    let rv = lines[4]["object"]["metadata"]["resourceVersion"].as_str().unwrap();
    let plain = curl(
        &m,
        &format!(
            "/api/v1/namespaces/wl/configmaps?watch=true&resourceVersion={rv}&allowWatchBookmarks=true&timeoutSeconds=2"
        ),
        "5",
    );
    assert!(
        plain.contains(&format!("\"resourceVersion\":\"{rv}\"")) && plain.contains("BOOKMARK"),
        "{plain}"
    );
    let none = curl(
        &m,
        &format!("/api/v1/namespaces/wl/configmaps?watch=true&resourceVersion={rv}&timeoutSeconds=2"),
        "5",
    );
    assert!(!none.contains("BOOKMARK"), "{none}");
    // sendInitialEvents needs resourceVersionMatch=NotOlderThan.
    let bad = curl(&m, "/api/v1/namespaces/wl/configmaps?watch=true&sendInitialEvents=true", "5");
    assert!(
        bad.contains("sendInitialEvents requires setting resourceVersionMatch to NotOlderThan")
            && bad.contains("\"code\":422"),
        "{bad}"
    );
}

/// The reflector's store (kube-rs's cache behind controllers) follows creates, updates and
/// deletes, from a plain list-then-watch and from a streaming list.
async fn reflector_converges(backend: Backend, streaming: bool) {
    use kube::api::{DeleteParams, Patch, PatchParams, PostParams};
    use kube::runtime::{WatchStreamExt, reflector};
    let m = Master::start(backend, &[]);
    m.ok(&["create", "namespace", "rf"]);
    m.ok(&["create", "configmap", "before", "-n", "rf", "--from-literal=k=0"]);
    let api: Api<ConfigMap> = Api::namespaced(client(&m).await, "rf");
    let config =
        if streaming { watcher::Config::default().streaming_lists() } else { watcher::Config::default() };
    let (store, writer) = reflector::store();
    let stream = watcher::watcher(api.clone(), config).reflect(writer).applied_objects();
    let driver = tokio::spawn(stream.for_each(|_| async {}));
    // The store as (name, data k) pairs, sorted, once it equals `want` (within 10 s).
    let converged = |want: &'static [(&'static str, &'static str)]| {
        let store = store.clone();
        async move {
            let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
            loop {
                let mut seen: Vec<(String, String)> = store
                    .state()
                    .iter()
                    .filter(|cm| name(cm) != "kube-root-ca.crt")
                    .map(|cm| {
                        let k = cm.data.as_ref().and_then(|d| d.get("k")).cloned().unwrap_or_default();
                        (name(cm), k)
                    })
                    .collect();
                seen.sort();
                let wanted: Vec<(String, String)> =
                    want.iter().map(|(n, k)| (n.to_string(), k.to_string())).collect();
                if seen == wanted {
                    return;
                }
                assert!(tokio::time::Instant::now() < deadline, "store {seen:?}, want {wanted:?}");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    };
    converged(&[("before", "0")]).await;
    let cm = |n: &str, k: &str| -> ConfigMap {
        serde_json::from_value(serde_json::json!({"metadata": {"name": n}, "data": {"k": k}})).unwrap()
    };
    api.create(&PostParams::default(), &cm("added", "1")).await.unwrap();
    converged(&[("added", "1"), ("before", "0")]).await;
    api.patch("before", &PatchParams::default(), &Patch::Merge(serde_json::json!({"data": {"k": "2"}})))
        .await
        .unwrap();
    converged(&[("added", "1"), ("before", "2")]).await;
    api.delete("added", &DeleteParams::default()).await.unwrap();
    converged(&[("before", "2")]).await;
    driver.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reflector_converges_embedded() {
    reflector_converges(Backend::embedded(), false).await;
    reflector_converges(Backend::embedded(), true).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reflector_converges_etcd() {
    reflector_converges(Backend::etcd(), false).await;
    reflector_converges(Backend::etcd(), true).await;
}
