//! The master side of nodes joining, against a real rkube-master over HTTPS: the CA pin behind
//! `/cacerts`, certificates from `/v1-rkube/node-cert` for the join credential, node identity
//! (node-password Secrets), the node authorizer seen with an issued client certificate, node IPAM,
//! and node lifecycle eviction of pods from a node whose heartbeats stop.

#[path = "support/master.rs"]
mod master;

use base64::Engine;
use master::{Backend, Master, wait_for};
use rcgen::{CertificateParams, KeyPair};
use reqwest::{Client, Method, StatusCode};
use serde_json::{Value, json};
use sha2::Digest;
use std::time::Duration;

/// `(ca hash, credential)` of a full join token.
fn split_token(token: &str) -> (String, String) {
    let rest = token.strip_prefix("RK1").expect("RK1 prefix");
    let (hash, cred) = rest.split_once("::").expect("::");
    (hash.to_string(), cred.to_string())
}

fn csr() -> (KeyPair, String) {
    let key = KeyPair::generate().unwrap();
    let csr = CertificateParams::new(Vec::<String>::new()).unwrap().serialize_request(&key).unwrap();
    (key, csr.pem().unwrap())
}

fn ca_client(m: &Master) -> reqwest::ClientBuilder {
    let ca = reqwest::Certificate::from_pem(&std::fs::read(m.ca_path()).unwrap()).unwrap();
    Client::builder().use_rustls_tls().tls_built_in_root_certs(false).add_root_certificate(ca)
}

/// A client presenting `cert` (PEM) with `key`.
fn node_client(m: &Master, cert: &str, key: &KeyPair) -> Client {
    let id = reqwest::Identity::from_pem(format!("{cert}{}", key.serialize_pem()).as_bytes()).unwrap();
    ca_client(m).identity(id).build().unwrap()
}

struct Api<'a> {
    m: &'a Master,
    client: Client,
    bearer: Option<String>,
}

impl Api<'_> {
    async fn call(&self, method: Method, path: &str, body: Option<Value>, ct: &str) -> (StatusCode, Value) {
        let mut req = self.client.request(method, format!("{}{path}", self.m.url()));
        if let Some(t) = &self.bearer {
            req = req.bearer_auth(t);
        }
        if let Some(b) = body {
            req = req.header("Content-Type", ct).body(b.to_string());
        }
        let resp = req.send().await.unwrap();
        let code = resp.status();
        let text = resp.text().await.unwrap();
        (code, serde_json::from_str(&text).unwrap_or(Value::String(text)))
    }
    async fn get(&self, path: &str) -> (StatusCode, Value) {
        self.call(Method::GET, path, None, "").await
    }
    async fn post(&self, path: &str, body: Value) -> (StatusCode, Value) {
        self.call(Method::POST, path, Some(body), "application/json").await
    }
    async fn put(&self, path: &str, body: Value) -> (StatusCode, Value) {
        self.call(Method::PUT, path, Some(body), "application/json").await
    }
}

fn join_body(name: &str, password: &str, client_csr: &str, serving_csr: &str) -> Value {
    json!({"nodeName": name, "nodePassword": password, "clientCSR": client_csr, "servingCSR": serving_csr,
        "addresses": ["10.0.0.2"]})
}

/// Joins `name` with the join credential; returns the issued client certificate and its key.
async fn join(m: &Master, name: &str, password: &str) -> (String, KeyPair, Value) {
    let (_, cred) = split_token(&m.join_token());
    let api = Api { m, client: ca_client(m).build().unwrap(), bearer: Some(cred) };
    let (key, client_csr) = csr();
    let (_, serving_csr) = csr();
    let (code, resp) =
        api.post("/v1-rkube/node-cert", join_body(name, password, &client_csr, &serving_csr)).await;
    assert_eq!(code, StatusCode::OK, "{resp}");
    (resp["clientCert"].as_str().unwrap().to_string(), key, resp)
}

fn node_object(name: &str) -> Value {
    json!({"apiVersion": "v1", "kind": "Node", "metadata": {"name": name}})
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nodes_join_and_are_restricted_to_their_own_objects() {
    let m = Master::start(Backend::embedded(), &[]);
    let token = m.join_token();
    let (hash, cred) = split_token(&token);
    assert_eq!(hash.len(), 64);
    let (id, secret) = cred.split_once('.').unwrap();
    assert!(id.len() == 6 && secret.len() == 16, "{cred}");

    // /cacerts without trusting anything yet: the bytes hash to the pin.
    let insecure = Client::builder().use_rustls_tls().danger_accept_invalid_certs(true).build().unwrap();
    let ca = insecure.get(format!("{}/cacerts", m.url())).send().await.unwrap();
    assert_eq!(ca.status(), StatusCode::OK);
    let ca = ca.bytes().await.unwrap();
    assert_eq!(ca.as_ref(), std::fs::read(m.ca_path()).unwrap().as_slice());
    assert_eq!(hex::encode(sha2::Sha256::digest(&ca)), hash);

    let admin = Api { m: &m, client: ca_client(&m).build().unwrap(), bearer: Some(m.admin_token()) };
    let secret_path = "/api/v1/namespaces/kube-system/secrets/n1.node-password.rkube";
    let (client_csr, serving_csr) = (csr().1, csr().1);

    // A wrong token: 401 and nothing stored.
    let wrong =
        Api { m: &m, client: ca_client(&m).build().unwrap(), bearer: Some("abcdef.0123456789abcdef".into()) };
    let (code, body) =
        wrong.post("/v1-rkube/node-cert", join_body("n1", "p1", &client_csr, &serving_csr)).await;
    assert_eq!(code, StatusCode::UNAUTHORIZED, "{body}");
    assert_eq!(body["message"], "invalid join token");
    assert_eq!(admin.get(secret_path).await.0, StatusCode::NOT_FOUND);

    // Bad requests name the field.
    let boot = Api { m: &m, client: ca_client(&m).build().unwrap(), bearer: Some(cred.clone()) };
    let (code, body) =
        boot.post("/v1-rkube/node-cert", join_body("N_1", "p1", &client_csr, &serving_csr)).await;
    assert_eq!(code, StatusCode::BAD_REQUEST);
    assert!(body["message"].as_str().unwrap().starts_with("nodeName: "), "{body}");
    let (code, body) = boot.post("/v1-rkube/node-cert", join_body("n1", "p1", "nope", &serving_csr)).await;
    assert_eq!(code, StatusCode::BAD_REQUEST);
    assert!(body["message"].as_str().unwrap().starts_with("clientCSR: "), "{body}");
    assert_eq!(admin.get(secret_path).await.0, StatusCode::NOT_FOUND);

    // The join credential is good for nothing else.
    let (code, body) = boot.get("/api/v1/pods").await;
    assert_eq!(code, StatusCode::FORBIDDEN, "{body}");
    assert!(body["message"].as_str().unwrap().contains("User \"system:bootstrap:"), "{body}");

    // Join n1.
    let (cert, key, resp) = join(&m, "n1", "p1").await;
    assert_eq!(resp["ca"].as_str().unwrap().as_bytes(), ca.as_ref());
    assert_eq!(resp["kubeletClientCN"], "rkube-apiserver-kubelet-client");
    assert!(resp["servingCert"].as_str().unwrap().starts_with("-----BEGIN CERTIFICATE-----"));
    let (code, stored) = admin.get(secret_path).await;
    assert_eq!(code, StatusCode::OK);
    assert_eq!(stored["type"], "rkube.io/node-password");
    let n1 = Api { m: &m, client: node_client(&m, &cert, &key), bearer: None };

    // Its own Node: read and write; someone else's: read only (the node's proxy and routes need it).
    assert_eq!(admin.post("/api/v1/nodes", node_object("n2")).await.0, StatusCode::CREATED);
    let (code, body) = n1.post("/api/v1/nodes", node_object("n1")).await;
    assert_eq!(code, StatusCode::CREATED, "{body}");
    assert_eq!(n1.get("/api/v1/nodes/n1").await.0, StatusCode::OK);
    let (code, n2) = n1.get("/api/v1/nodes/n2").await;
    assert_eq!(code, StatusCode::OK);
    let (code, body) = n1.put("/api/v1/nodes/n2", n2).await;
    assert_eq!(code, StatusCode::FORBIDDEN);
    assert_eq!(
        body["message"],
        "nodes \"n2\" is forbidden: User \"system:node:n1\" cannot update resource \"nodes\" in API group \"\" at \
         the cluster scope: node 'n1' cannot modify 'n2', only its own Node object"
    );
    assert_eq!(n1.post("/api/v1/nodes", node_object("n3")).await.0, StatusCode::FORBIDDEN);

    // Pods bound to it, and the Secrets they use.
    let pod = |name: &str, node: &str, secret: &str| {
        json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name},
            "spec": {"nodeName": node, "containers": [{"name": "c", "image": "busybox"}],
                "volumes": [{"name": "s", "secret": {"secretName": secret}}]}})
    };
    let secret =
        |name: &str| json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": name}, "data": {}});
    for (path, body) in [
        ("/api/v1/namespaces/default/secrets", secret("used")),
        ("/api/v1/namespaces/default/secrets", secret("unused")),
        ("/api/v1/namespaces/default/pods", pod("mine", "n1", "used")),
        ("/api/v1/namespaces/default/pods", pod("theirs", "n2", "unused")),
    ] {
        let (code, b) = admin.post(path, body).await;
        assert_eq!(code, StatusCode::CREATED, "{b}");
    }
    assert_eq!(n1.get("/api/v1/pods").await.0, StatusCode::FORBIDDEN);
    let (code, list) = n1.get("/api/v1/pods?fieldSelector=spec.nodeName%3Dn1").await;
    assert_eq!(code, StatusCode::OK);
    assert_eq!(list["items"].as_array().unwrap().len(), 1);
    assert_eq!(n1.get("/api/v1/namespaces/default/pods/theirs").await.0, StatusCode::FORBIDDEN);
    assert_eq!(n1.get("/api/v1/namespaces/default/secrets/unused").await.0, StatusCode::FORBIDDEN);
    assert_eq!(n1.get("/api/v1/namespaces/default/secrets/used").await.0, StatusCode::OK);
    let status = json!({"status": {"message": "reported by n1"}});
    let ct = "application/merge-patch+json";
    let (code, body) =
        n1.call(Method::PATCH, "/api/v1/namespaces/default/pods/mine/status", Some(status.clone()), ct).await;
    assert_eq!(code, StatusCode::OK, "{body}");
    assert_eq!(body["status"]["message"], "reported by n1");
    let (code, _) =
        n1.call(Method::PATCH, "/api/v1/namespaces/default/pods/theirs/status", Some(status), ct).await;
    assert_eq!(code, StatusCode::FORBIDDEN);
    let (code, body) =
        n1.call(Method::DELETE, "/apis/apps/v1/namespaces/default/deployments/web", None, "").await;
    assert_eq!(code, StatusCode::FORBIDDEN);
    assert!(
        body["message"]
            .as_str()
            .unwrap()
            .contains("cannot delete resource \"deployments\" in API group \"apps\"")
    );
    assert_eq!(n1.call(Method::DELETE, "/api/v1/nodes/n1", None, "").await.0, StatusCode::FORBIDDEN);
    // ServiceAccount admission gave the pods the `default` account and a projected token volume;
    // the node may request tokens bound to its own pods only, and read the CA ConfigMap they mount.
    let (_, mine) = admin.get("/api/v1/namespaces/default/pods/mine").await;
    assert_eq!(mine["spec"]["serviceAccountName"], "default");
    let projected =
        mine["spec"]["volumes"].as_array().unwrap().iter().find(|v| v["projected"].is_object()).unwrap();
    assert!(projected["name"].as_str().unwrap().starts_with("kube-api-access-"));
    assert_eq!(
        mine["spec"]["containers"][0]["volumeMounts"][0]["mountPath"],
        "/var/run/secrets/kubernetes.io/serviceaccount"
    );
    let uid = |p: &Value| p["metadata"]["uid"].as_str().unwrap().to_string();
    let token_for = |pod: &str, uid: String| {
        json!({"apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest",
            "spec": {"expirationSeconds": 3607, "boundObjectRef": {"kind": "Pod", "apiVersion": "v1", "name": pod, "uid": uid}}})
    };
    let (code, body) = n1
        .post("/api/v1/namespaces/default/serviceaccounts/default/token", token_for("mine", uid(&mine)))
        .await;
    assert_eq!(code, StatusCode::CREATED, "{body}");
    let pod_token = body["status"]["token"].as_str().unwrap().to_string();
    let (_, theirs) = admin.get("/api/v1/namespaces/default/pods/theirs").await;
    let (code, body) = n1
        .post("/api/v1/namespaces/default/serviceaccounts/default/token", token_for("theirs", uid(&theirs)))
        .await;
    assert_eq!(code, StatusCode::FORBIDDEN, "{body}");
    let unbound = json!({"apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest", "spec": {}});
    assert_eq!(
        n1.post("/api/v1/namespaces/default/serviceaccounts/default/token", unbound).await.0,
        StatusCode::FORBIDDEN
    );
    assert_eq!(
        n1.post(
            "/api/v1/namespaces/kube-system/serviceaccounts/default/token",
            token_for("mine", uid(&mine))
        )
        .await
        .0,
        StatusCode::FORBIDDEN
    );
    let ca_cm = "/api/v1/namespaces/default/configmaps/kube-root-ca.crt";
    wait_for("kube-root-ca.crt", Duration::from_secs(10), || {
        let m = &m;
        let kc = m.kubectl(&["get", "configmap", "kube-root-ca.crt", "-o", "jsonpath={.data.ca\\.crt}"]);
        (kc.status.success() && String::from_utf8_lossy(&kc.stdout).contains("BEGIN CERTIFICATE"))
            .then_some(())
    });
    assert_eq!(n1.get(ca_cm).await.0, StatusCode::OK);
    assert_eq!(
        n1.get("/api/v1/namespaces/kube-system/configmaps/kube-root-ca.crt").await.0,
        StatusCode::FORBIDDEN
    );
    // The pod's token authenticates as its ServiceAccount, which may do nothing by default.
    let pod_client = reqwest::Client::builder().danger_accept_invalid_certs(true).build().unwrap();
    let r = pod_client
        .get(format!("{}/api/v1/namespaces/default/pods", m.url()))
        .bearer_auth(&pod_token)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::FORBIDDEN);
    // Discovery is open to every authenticated user (kubectl with a node kubeconfig needs it).
    assert_eq!(n1.get("/apis").await.0, StatusCode::OK);

    // Re-joins: same password re-issues (also when renewing with the node's certificate);
    // another password is refused; a node certificate cannot ask for another name.
    join(&m, "n1", "p1").await;
    let (renew_csr, serving_csr) = (csr().1, csr().1);
    let (code, body) = n1.post("/v1-rkube/node-cert", join_body("n1", "p1", &renew_csr, &serving_csr)).await;
    assert_eq!(code, StatusCode::OK, "{body}");
    let (code, body) = n1.post("/v1-rkube/node-cert", join_body("n2", "p1", &renew_csr, &serving_csr)).await;
    assert_eq!(code, StatusCode::FORBIDDEN, "{body}");
    let (code, body) =
        boot.post("/v1-rkube/node-cert", join_body("n1", "other", &renew_csr, &serving_csr)).await;
    assert_eq!(code, StatusCode::CONFLICT);
    assert_eq!(
        body["message"],
        "node \"n1\" is already joined with other credentials; delete it first with: kubectl delete node n1"
    );
    assert!(body.get("clientCert").is_none());

    // Node IPAM: distinct /24s from the default cluster CIDR.
    let cidrs = wait_for("pod CIDRs on n1 and n2", Duration::from_secs(20), || {
        let out = m.kubectl(&["get", "nodes", "-o", "jsonpath={range .items[*]}{.spec.podCIDR} {end}"]);
        let s = String::from_utf8_lossy(&out.stdout).to_string();
        let v: Vec<String> = s.split_whitespace().map(String::from).collect();
        (v.len() == 2).then_some(v)
    });
    assert_ne!(cidrs[0], cidrs[1]);
    for c in &cidrs {
        assert!(c.starts_with("10.244.") && c.ends_with(".0/24"), "{cidrs:?}");
    }
    assert_eq!(
        m.ok(&["get", "node", "n1", "-o", "jsonpath={.spec.podCIDRs[0]}"]),
        m.ok(&["get", "node", "n1", "-o", "jsonpath={.spec.podCIDR}"])
    );

    // The admin kubeconfig with the real kubectl still works.
    let nodes = m.ok(&["get", "nodes"]);
    assert!(nodes.contains("n1") && nodes.contains("n2"), "{nodes}");
    // kubectl with the node's certificate: its own Node, nothing else.
    let b64 = |s: &[u8]| base64::engine::general_purpose::STANDARD.encode(s);
    let node_kc = format!(
        "apiVersion: v1\nkind: Config\nclusters:\n- name: c\n  cluster:\n    server: {}\n    \
         certificate-authority-data: {}\nusers:\n- name: n1\n  user:\n    client-certificate-data: {}\n    \
         client-key-data: {}\ncontexts:\n- name: n1\n  context: {{cluster: c, user: n1}}\ncurrent-context: n1\n",
        m.url(),
        b64(&ca),
        b64(cert.as_bytes()),
        b64(key.serialize_pem().as_bytes())
    );
    let node_kc = m.write("node.kubeconfig", &node_kc);
    let as_node =
        |args: &[&str]| m.kubectl_cmd(&[&["--kubeconfig", &node_kc], args].concat()).output().unwrap();
    let out = as_node(&["get", "node", "n1", "-o", "name"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "node/n1");
    let out = as_node(&["get", "secrets", "-A"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success()
            && err.contains(
                "Error from server (Forbidden): secrets is forbidden: User \"system:node:n1\" cannot list"
            ),
        "{err}"
    );

    // Deleting the Node forgets its identity: the name may join again with a new password.
    m.ok(&["delete", "node", "n1"]);
    assert_eq!(admin.get(secret_path).await.0, StatusCode::NOT_FOUND);
    join(&m, "n1", "new-password").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pods_leave_a_node_whose_heartbeats_stop() {
    let m = Master::start(
        Backend::embedded(),
        &["--node-monitor-grace-period", "2s", "--pod-eviction-timeout", "2s"],
    );
    let (cert, key, _) = join(&m, "lost", "pw").await;
    let node = Api { m: &m, client: node_client(&m, &cert, &key), bearer: None };
    assert_eq!(node.post("/api/v1/nodes", node_object("lost")).await.0, StatusCode::CREATED);
    let now = || k8s_openapi::chrono::Utc::now();
    let status = || {
        json!({"status": {
            "capacity": {"cpu": "4", "memory": "8Gi", "pods": "110"},
            "allocatable": {"cpu": "4", "memory": "8Gi", "pods": "110"},
            "conditions": [{"type": "Ready", "status": "True", "reason": "KubeletReady",
                "message": "kubelet is posting ready status",
                "lastHeartbeatTime": now().format("%Y-%m-%dT%H:%M:%SZ").to_string(),
                "lastTransitionTime": now().format("%Y-%m-%dT%H:%M:%SZ").to_string()}]}})
    };
    let lease_path = "/apis/coordination.k8s.io/v1/namespaces/kube-node-lease/leases";
    let lease = || {
        json!({"apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
            "metadata": {"name": "lost", "namespace": "kube-node-lease"},
            "spec": {"holderIdentity": "lost", "leaseDurationSeconds": 40,
                "renewTime": now().format("%Y-%m-%dT%H:%M:%S%.6fZ").to_string()}})
    };
    let ct = "application/merge-patch+json";
    let (code, body) = node.call(Method::PATCH, "/api/v1/nodes/lost/status", Some(status()), ct).await;
    assert_eq!(code, StatusCode::OK, "{body}");
    let (code, body) = node.post(lease_path, lease()).await;
    assert_eq!(code, StatusCode::CREATED, "{body}");

    let rs = "apiVersion: apps/v1\nkind: ReplicaSet\nmetadata:\n  name: web\nspec:\n  replicas: 1\n  selector:\n    \
              matchLabels: {app: web}\n  template:\n    metadata:\n      labels: {app: web}\n    spec:\n      \
              terminationGracePeriodSeconds: 1\n      containers:\n      - name: c\n        image: busybox\n";
    m.ok(&["apply", "-f", &m.write("rs.yaml", rs)]);
    // Heartbeat (as the node would) until the pod is bound to it.
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    let first = loop {
        assert!(std::time::Instant::now() < deadline, "the ReplicaSet's pod was never bound to the node");
        let (_, patch_body) = node
            .call(
                Method::PATCH,
                &format!("{lease_path}/lost"),
                Some(json!({"spec": {"renewTime": lease()["spec"]["renewTime"]}})),
                ct,
            )
            .await;
        assert!(patch_body.get("spec").is_some(), "{patch_body}");
        let out = m.ok(&[
            "get",
            "pods",
            "-l",
            "app=web",
            "-o",
            "jsonpath={range .items[*]}{.metadata.name}={.spec.nodeName} {end}",
        ]);
        if let Some(p) = out.split_whitespace().find_map(|p| p.strip_suffix("=lost")) {
            break p.to_string();
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    };

    // Silence: Unknown, unreachable taint, the pod evicted and (its node never confirming) gone.
    m.eventually(
        &["get", "node", "lost", "-o", "jsonpath={.status.conditions[?(@.type==\"Ready\")].status}"],
        Duration::from_secs(20),
        |s| s == "Unknown",
    );
    let reason =
        m.ok(&["get", "node", "lost", "-o", "jsonpath={.status.conditions[?(@.type==\"Ready\")].message}"]);
    assert_eq!(reason, "Kubelet stopped posting node status.");
    let taints = m.ok(&["get", "node", "lost", "-o", "jsonpath={.spec.taints[*].key}"]);
    assert!(taints.contains("node.kubernetes.io/unreachable"), "{taints}");
    m.eventually(&["get", "pods", "-l", "app=web", "-o", "name"], Duration::from_secs(30), |s| {
        !s.contains(&first) && !s.trim().is_empty()
    });
}

/// The join command on stderr names the first `--tls-san`; overlapping pod and service ranges are
/// refused with one line.
#[test]
fn join_command_and_cidr_checks() {
    use std::io::{BufRead, BufReader};
    use std::process::{Command, Stdio};
    let dir = tempfile::tempdir().unwrap();
    let port = master::free_port();
    let mut child = Command::new(env!("CARGO_BIN_EXE_rkube-master"))
        .arg("--data-dir")
        .arg(dir.path().join("data"))
        .args(["--listen", &format!("127.0.0.1:{port}"), "--tls-san", "master.example.test,10.1.2.3"])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = BufReader::new(child.stderr.take().unwrap());
    let line = stderr.lines().map_while(Result::ok).find(|l| l.contains("Join nodes with:"));
    let _ = child.kill();
    let _ = child.wait();
    let line = line.expect("a join line on stderr");
    let token = std::fs::read_to_string(dir.path().join("data/pki/join.token")).unwrap();
    assert_eq!(
        line,
        format!("Join nodes with: rkubelet join https://master.example.test:{port} --token {}", token.trim())
    );

    let out = Command::new(env!("CARGO_BIN_EXE_rkube-master"))
        .arg("--data-dir")
        .arg(dir.path().join("other"))
        .args(["--listen", "127.0.0.1:0", "--cluster-cidr", "10.96.0.0/16"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.contains("--cluster-cidr 10.96.0.0/16 overlaps --service-cidr 10.96.0.0/12"), "{err}");
    assert!(!dir.path().join("other").exists(), "nothing written");
}
