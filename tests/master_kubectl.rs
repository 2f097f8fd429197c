//! The real kubectl against a real rkube-master on both store backends: discovery, apply/create of
//! the seed's objects, get (Table, wide, -w), patch types, scale, errors, TLS tokens, restarts.

#[path = "support/master.rs"]
mod master;

use master::{Backend, Master};
use std::io::{BufRead, BufReader};
use std::process::Stdio;

fn seed_objects_and_errors(backend: Backend) {
    let m = Master::start(backend, &[]);
    assert!(m.ok(&["version"]).contains("Server Version: v1.32.0-rkube"));
    let ns = m.ok(&["get", "ns"]);
    assert!(ns.contains("default") && ns.contains("Active"), "{ns}");

    // ReplicaSet apply, then the 4-replica re-apply patches the same object.
    assert!(
        m.ok(&["apply", "-f", "replicaset-nginx.yaml"]).contains("replicaset.apps/replicaset-nginx created")
    );
    assert!(m.ok(&["apply", "-f", "replicaset-nginx-4pods.yaml"]).contains("configured"));
    assert!(m.ok(&["apply", "-f", "replicaset-nginx-4pods.yaml"]).contains("unchanged"));
    let wide = m.ok(&["get", "rs", "-o", "wide"]);
    assert!(wide.contains("SELECTOR") && wide.contains("app=my-nginx-pods-label"), "{wide}");
    assert_eq!(m.ok(&["get", "rs", "replicaset-nginx", "-o", "jsonpath={.spec.replicas}"]), "4");

    // ConfigMap / Secret create, duplicate create.
    assert!(m.ok(&["create", "-f", "configmap.yaml"]).contains("configmap/projectid created"));
    assert!(m.ok(&["create", "-f", "secret.yaml"]).contains("secret/apikey created"));
    let dup = m.fails(&["create", "-f", "configmap.yaml"]);
    assert!(
        dup.contains("Error from server (AlreadyExists)")
            && dup.contains("configmaps \"projectid\" already exists"),
        "{dup}"
    );
    assert_eq!(m.ok(&["get", "secret", "apikey", "-o", "jsonpath={.data.key}"]), "YUJjRDEyMw==");

    // The extensions/v1beta1 Deployment is stored as apps/v1 with a selector from the template labels.
    m.ok(&["apply", "-f", "deployment-blue.yaml"]);
    let sel = m.ok(&[
        "get",
        "deploy",
        "webserver-blue",
        "-o",
        "jsonpath={.apiVersion} {.spec.selector.matchLabels.color}",
    ]);
    assert_eq!(sel, "apps/v1 blue");

    // Deployment apply --record, set image --record keeps the ports (strategic merge), scale.
    m.ok(&["apply", "-f", "deployment-nginx.yaml", "--record"]);
    m.ok(&["set", "image", "deployment", "my-nginx-deployment", "nginx=nginx:1.11", "--record"]);
    let c = m.ok(&["get", "deploy", "my-nginx-deployment", "-o", "jsonpath={.spec.template.spec.containers[0].image} {.spec.template.spec.containers[0].ports[0].containerPort} {.metadata.generation}"]);
    assert_eq!(c, "nginx:1.11 80 2");
    let cause = m.ok(&[
        "get",
        "deploy",
        "my-nginx-deployment",
        "-o",
        "jsonpath={.metadata.annotations.kubernetes\\.io/change-cause}",
    ]);
    assert!(cause.contains("kubectl set image deployment my-nginx-deployment nginx=nginx:1.11"), "{cause}");
    assert!(m.ok(&["scale", "deployment", "my-nginx-deployment", "--replicas=5"]).contains("scaled"));
    assert_eq!(m.ok(&["get", "deploy", "my-nginx-deployment", "-o", "jsonpath={.spec.replicas}"]), "5");

    // Services: LoadBalancer gets an IP from the pool, NodePort a port in range.
    m.ok(&["apply", "-f", "service.yaml"]);
    m.ok(&["expose", "deployment", "my-nginx-deployment", "--type=NodePort", "--port=80", "--name=np"]);
    let svc = m.ok(&["get", "svc"]);
    let lb = svc.lines().find(|l| l.starts_with("webserver ")).expect("webserver row");
    assert!(lb.contains("LoadBalancer") && lb.contains("10.200.0.10") && lb.contains("80:3"), "{svc}");
    let np = m.ok(&["get", "svc", "np", "-o", "jsonpath={.spec.ports[0].nodePort}"]);
    let np: u16 = np.parse().unwrap();
    assert!((30000..=32767).contains(&np));

    // Bad requests get the right Status and write nothing.
    let bad_name = m.write("bad.yaml", "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: Bad_Name\n");
    let e = m.fails(&["create", "-f", &bad_name]);
    assert!(
        e.contains("The ConfigMap \"Bad_Name\" is invalid: metadata.name: Invalid value: \"Bad_Name\""),
        "{e}"
    );
    let unknown =
        m.write("unknown.yaml", "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: u\nbogus: 1\n");
    let e = m.fails(&["create", "-f", &unknown]);
    assert!(e.contains("Error from server (BadRequest)") && e.contains("unknown field \"bogus\""), "{e}");
    m.fails(&["get", "cm", "u"]);
    // With --validate=warn the unknown field is dropped and reported as a warning.
    let out = m.kubectl(&["create", "--validate=warn", "-f", &unknown]);
    assert!(out.status.success());
    let warn = String::from_utf8_lossy(&out.stderr);
    assert!(warn.contains("Warning: unknown field \"bogus\""), "{warn}");
    m.ok(&["delete", "cm", "u"]);
    let out_of_range = "apiVersion: v1\nkind: Service\nmetadata:\n  name: np2\nspec:\n  type: NodePort\n  selector: {app: x}\n  ports:\n  - port: 80\n    nodePort: 40000\n";
    let e = m.fails(&["apply", "-f", &m.write("np2.yaml", out_of_range)]);
    assert!(
        e.contains("spec.ports[0].nodePort: Invalid value: 40000: provided port is not in the valid range"),
        "{e}"
    );
    let taken = out_of_range.replace("40000", &np.to_string());
    let e = m.fails(&["apply", "-f", &m.write("np3.yaml", &taken)]);
    assert!(e.contains("provided port is already allocated"), "{e}");
    m.fails(&["get", "svc", "np2"]);
    let stale = m.ok(&["get", "cm", "projectid", "-o", "json"]);
    let stale_path = m.write("stale.json", &stale);
    m.ok(&["replace", "-f", &stale_path]);
    let e = m.fails(&["replace", "-f", &stale_path]);
    assert!(e.contains("Error from server (Conflict)") && e.contains("the object has been modified"), "{e}");
    let e = m.fails(&["get", "pod", "nope"]);
    assert!(e.contains("Error from server (NotFound): pods \"nope\" not found"), "{e}");

    // Patch types.
    m.ok(&[
        "patch",
        "cm",
        "projectid",
        "--type=json",
        "-p",
        r#"[{"op":"add","path":"/data/x","value":"y"}]"#,
    ]);
    m.ok(&["patch", "cm", "projectid", "--type=merge", "-p", r#"{"data":{"z":"1"}}"#]);
    m.ok(&["patch", "cm", "projectid", "-p", r#"{"metadata":{"labels":{"tier":"a"}}}"#]);
    assert_eq!(m.ok(&["get", "cm", "-l", "tier=a", "-o", "name"]).trim(), "configmap/projectid");
    // The only other ConfigMap is the CA every namespace gets (root-ca publisher).
    assert_eq!(m.ok(&["get", "cm", "-l", "tier!=a", "-o", "name"]).trim(), "configmap/kube-root-ca.crt");
    let fsel = m.ok(&[
        "get",
        "cm",
        "--field-selector",
        "metadata.name=projectid",
        "-o",
        "jsonpath={.items[0].data.x}{.items[0].data.z}",
    ]);
    assert_eq!(fsel, "y1");

    // pods/binding through the raw API: the first bind wins, the second is a Conflict.
    let pod = "apiVersion: v1\nkind: Pod\nmetadata:\n  name: solo\nspec:\n  schedulerName: nobody\n  containers:\n  - name: c\n    image: busybox\n";
    m.ok(&["create", "-f", &m.write("solo.yaml", pod)]);
    let binding = r#"{"apiVersion":"v1","kind":"Binding","metadata":{"name":"solo"},"target":{"kind":"Node","name":"n9"}}"#;
    let bpath = m.write("binding.json", binding);
    m.ok(&["create", "--raw", "/api/v1/namespaces/default/pods/solo/binding", "-f", &bpath]);
    let e = m.fails(&["create", "--raw", "/api/v1/namespaces/default/pods/solo/binding", "-f", &bpath]);
    assert!(e.contains("Conflict") || e.contains("already assigned"), "{e}");
    let on_node = m.ok(&["get", "pods", "--field-selector", "spec.nodeName=n9", "-o", "name"]);
    assert_eq!(on_node.trim(), "pod/solo");
    m.ok(&["delete", "pod", "solo", "--grace-period=0", "--force"]);

    // get all / describe / delete.
    let all = m.ok(&["get", "all"]);
    assert!(
        all.contains("deployment.apps/my-nginx-deployment") && all.contains("service/webserver"),
        "{all}"
    );
    assert!(m.ok(&["describe", "svc", "webserver"]).contains("LoadBalancer Ingress:"));
    m.ok(&["delete", "-f", "service.yaml"]);
    m.fails(&["get", "svc", "webserver"]);
}

fn watch_streams_table_rows(backend: Backend) {
    let m = Master::start(backend, &[]);
    let mut child =
        m.kubectl_cmd(&["get", "cm", "-w"]).stdout(Stdio::piped()).stderr(Stdio::null()).spawn().unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    m.ok(&["create", "-f", "configmap.yaml"]);
    let mut seen = Vec::new();
    // The header comes first, then one row per event; the created object must show up.
    for _ in 0..3 {
        let l = lines.next().unwrap().unwrap();
        seen.push(l.clone());
        if l.starts_with("projectid") {
            break;
        }
    }
    let _ = child.kill();
    let _ = child.wait();
    assert!(seen.iter().any(|l| l.starts_with("NAME") && l.contains("DATA")), "{seen:?}");
    let row = seen.iter().find(|l| l.starts_with("projectid")).expect("a row for the new configmap");
    assert!(row.split_whitespace().nth(1) == Some("1"), "{row}");
}

fn restart_keeps_objects(backend: Backend) {
    let mut m = Master::start(backend, &[]);
    m.ok(&["create", "-f", "configmap.yaml"]);
    let rv = m.ok(&["get", "cm", "projectid", "-o", "jsonpath={.metadata.resourceVersion}"]);
    m.restart();
    assert_eq!(m.ok(&["get", "cm", "projectid", "-o", "jsonpath={.metadata.resourceVersion}"]), rv);
    m.ok(&["create", "-f", "secret.yaml"]);
    let rv2: u64 =
        m.ok(&["get", "secret", "apikey", "-o", "jsonpath={.metadata.resourceVersion}"]).parse().unwrap();
    assert!(rv2 > rv.parse::<u64>().unwrap());

    // The bootstrap roles are reconciled at every start: a default rule removed comes back (a rule
    // added stays), unless the role opted out with autoupdate "false".
    let cut = r#"{"rules":[{"apiGroups":["example.com"],"resources":["widgets"],"verbs":["get"]}]}"#;
    for role in ["view", "edit"] {
        m.ok(&["patch", "clusterrole", role, "--type=merge", "-p", cut]);
    }
    m.ok(&[
        "annotate",
        "--overwrite",
        "clusterrole",
        "edit",
        "rbac.authorization.kubernetes.io/autoupdate=false",
    ]);
    let rules =
        |m: &Master, role: &str| m.ok(&["get", "clusterrole", role, "-o", "jsonpath={.rules[*].resources}"]);
    assert_eq!(rules(&m, "view"), r#"["widgets"]"#);
    m.restart();
    let view = rules(&m, "view");
    assert!(view.contains("widgets") && view.contains("pods"), "{view}");
    assert_eq!(rules(&m, "edit"), r#"["widgets"]"#, "edit opted out of reconciling");
}

macro_rules! on_both_backends {
    ($($name:ident),*) => {
        mod embedded {
            $(#[test] fn $name() { super::$name(super::Backend::embedded()) })*
        }
        mod etcd {
            $(#[test] fn $name() { super::$name(super::Backend::etcd()) })*
        }
    };
}

on_both_backends!(seed_objects_and_errors, watch_streams_table_rows, restart_keeps_objects);

#[test]
fn tls_requires_a_token_and_plain_http_needs_loopback() {
    let m = Master::start(Backend::embedded(), &[]);
    let kc = std::fs::read_to_string(m.kubeconfig()).unwrap();
    assert!(kc.contains("certificate-authority-data:") && kc.contains("token:"));
    // No token: 401 Unauthorized.
    let url = format!("https://127.0.0.1:{}/api/v1/namespaces", m.port);
    let out = std::process::Command::new("curl")
        .args(["-sk", "-o", "/dev/null", "-w", "%{http_code}", &url])
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout), "401");
    let out = std::process::Command::new("curl")
        .args(["-sk", "-H", "Authorization: Bearer wrong", &url])
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&out.stdout).contains("\"reason\":\"Unauthorized\""));
    // The join token is no admin credential: whole, it is not a bearer token at all (401); its
    // credential part authenticates a bootstrap user that may only request node certificates (403).
    let join = std::fs::read_to_string(m.dir.path().join("data/pki/join.token")).unwrap();
    let credential = join.trim().split_once("::").unwrap().1.to_string();
    for (token, code) in [(join.trim(), "401"), (credential.as_str(), "403")] {
        let out = std::process::Command::new("curl")
            .args([
                "-sk",
                "-o",
                "/dev/null",
                "-w",
                "%{http_code}",
                "-H",
                &format!("Authorization: Bearer {token}"),
                &url,
            ])
            .output()
            .unwrap();
        assert_eq!(String::from_utf8_lossy(&out.stdout), code, "{token}");
    }
    // Plain HTTP refuses a non-loopback address with one clear line.
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_rkube-master"))
        .args(["--insecure-http", "--listen", "0.0.0.0:0", "--data-dir"])
        .arg(m.dir.path().join("other"))
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("--insecure-http is only allowed on a loopback address"), "{err}");
    assert_eq!(err.lines().count(), 1, "{err}");
}

#[test]
fn plain_http_on_loopback_serves_kubectl_without_credentials() {
    let m = Master::start(Backend::embedded(), &["--insecure-http"]);
    let kc = std::fs::read_to_string(m.kubeconfig()).unwrap();
    assert!(kc.contains("server: http://127.0.0.1:") && !kc.contains("token:"), "{kc}");
    m.ok(&["create", "-f", "configmap.yaml"]);
    assert!(m.ok(&["get", "cm"]).contains("projectid"));
}

/// kubectl's generators (`create deployment`, `create service …`, `expose`) send protobuf bodies;
/// what they write arrives whole, and a protobuf pod template with fields rkube decodes only from
/// JSON is refused with 415 rather than stored without them.
#[test]
fn kubectl_generators_send_protobuf() {
    let m = Master::start(Backend::embedded(), &[]);
    m.ok(&[
        "create",
        "deployment",
        "web",
        "--image=nginx:1.10",
        "--replicas=2",
        "--port=8080",
        "--",
        "httpd",
        "-f",
    ]);
    let spec = m.ok(&["get", "deployment", "web", "-o", "jsonpath={.spec.replicas}|{.spec.selector.matchLabels.app}|{.spec.template.spec.containers[0].image}|{.spec.template.spec.containers[0].ports[0].containerPort}|{.spec.template.spec.containers[0].command}"]);
    assert_eq!(spec, r#"2|web|nginx:1.10|8080|["httpd","-f"]"#);
    m.ok(&["create", "service", "nodeport", "web-np", "--tcp=80:8080", "--node-port=30080"]);
    let svc = m.ok(&["get", "svc", "web-np", "-o", "jsonpath={.spec.type}|{.spec.ports[0].port}|{.spec.ports[0].targetPort}|{.spec.ports[0].nodePort}|{.spec.selector.app}"]);
    assert_eq!(svc, "NodePort|80|8080|30080|web-np");
    m.ok(&["create", "service", "clusterip", "web-headless", "--clusterip=None"]);
    assert_eq!(m.ok(&["get", "svc", "web-headless", "-o", "jsonpath={.spec.clusterIP}"]), "None");
    m.ok(&["expose", "deployment", "web", "--port=80", "--target-port=8080", "--name=web"]);
    assert_eq!(
        m.ok(&["get", "svc", "web", "-o", "jsonpath={.spec.ports[0].targetPort}|{.spec.selector.app}"]),
        "8080|web"
    );
    // A Job is no served kind: 404 from discovery, not a half-created object.
    let e = m.fails(&["create", "job", "once", "--image=nginx"]);
    assert!(e.contains("could not find the requested resource"), "{e}");
}
