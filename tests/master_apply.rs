//! Server-side apply against a real rkube-master, on both store backends: the real kubectl's
//! `apply --server-side` of the seed's YAML, managedFields, a conflict between two field managers
//! (409 naming the manager and the field, nothing changed) and `--force-conflicts`, pruning of
//! fields a manager stops applying, unknown fields refused under Strict, and the move from
//! client-side apply; kube-rs's `Patch::Apply` with and without `force`.

#[path = "support/master.rs"]
mod master;

use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::{Patch, PatchParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Api, Client, Config};
use master::{Backend, Master, fixtures};
use serde_json::{Value, json};

fn rv(m: &Master, what: &str) -> String {
    m.ok(&["get", what, "-o", "jsonpath={.metadata.resourceVersion}"])
}

fn object(m: &Master, what: &str) -> Value {
    serde_json::from_str(&m.ok(&["get", what, "-o", "json", "--show-managed-fields"])).unwrap()
}

/// `manager/operation` of every managedFields entry, in order.
fn managers(obj: &Value) -> Vec<String> {
    obj["metadata"]["managedFields"]
        .as_array()
        .map(|a| {
            a.iter()
                .map(|e| format!("{}/{}", e["manager"].as_str().unwrap(), e["operation"].as_str().unwrap()))
                .collect()
        })
        .unwrap_or_default()
}

/// The FieldsV1 of `manager`'s entry.
fn fields_of<'a>(obj: &'a Value, manager: &str) -> &'a Value {
    obj["metadata"]["managedFields"]
        .as_array()
        .and_then(|a| a.iter().find(|e| e["manager"] == manager))
        .map(|e| &e["fieldsV1"])
        .unwrap_or(&Value::Null)
}

/// PATCHes `{"data":{"k":"v"}}`-style content with curl and returns the response body.
fn curl_patch(m: &Master, path: &str, content_type: &str) -> String {
    let body = r#"{"apiVersion":"v1","kind":"ConfigMap","metadata":{"name":"projectid"},"data":{"k":"v"}}"#;
    let out = std::process::Command::new("curl")
        .args(["-sk", "-X", "PATCH", "--max-time", "10"])
        .args(["-H", &format!("Authorization: Bearer {}", m.admin_token())])
        .args(["-H", &format!("Content-Type: {content_type}"), "--data", body])
        .arg(format!("{}{path}", m.url()))
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// What users changed of an object (its spec, labels and annotations, and every manager's entry
/// but the master's own), which controllers' status writes leave alone.
fn mine_now(m: &Master, what: &str) -> Value {
    let obj = object(m, what);
    let entries: Vec<&Value> = obj["metadata"]["managedFields"]
        .as_array()
        .map(|a| a.iter().filter(|e| e["manager"] != "rkube-master").collect())
        .unwrap_or_default();
    json!({"spec": obj["spec"], "labels": obj["metadata"]["labels"], "generation": obj["metadata"]["generation"],
        "managed": entries})
}

fn seed(name: &str) -> String {
    std::fs::read_to_string(fixtures().join(name)).unwrap()
}

fn server_side_apply(backend: Backend) {
    let m = Master::start(backend, &[]);
    // Every kind of the seed's YAML, server-side (the blue Deployment is extensions/v1beta1).
    for f in [
        "configmap.yaml",
        "secret.yaml",
        "service.yaml",
        "deployment-nginx.yaml",
        "deployment-blue.yaml",
        "replicaset-nginx.yaml",
    ] {
        let out = m.ok(&["apply", "--server-side", "-f", f]);
        assert!(out.contains("serverside-applied"), "{f}: {out}");
    }
    let d = "deployment/my-nginx-deployment";
    let obj = object(&m, d);
    assert_eq!(managers(&obj)[0], "kubectl/Apply", "{:?}", managers(&obj));
    let mine = fields_of(&obj, "kubectl");
    let container = &mine["f:spec"]["f:template"]["f:spec"]["f:containers"]["k:{\"name\":\"nginx\"}"];
    assert_eq!(container["f:image"], json!({}), "{mine}");
    assert!(container["f:ports"]["k:{\"containerPort\":80,\"protocol\":\"TCP\"}"].is_object(), "{mine}");
    assert_eq!(
        obj["spec"]["template"]["spec"]["containers"][0]["imagePullPolicy"], "IfNotPresent",
        "defaults apply"
    );
    let svc = object(&m, "service/webserver");
    assert!(
        fields_of(&svc, "kubectl")["f:spec"]["f:ports"]["k:{\"port\":80,\"protocol\":\"TCP\"}"].is_object()
    );

    // The same file again changes nothing, not even the resourceVersion (a ConfigMap: no
    // controller writes it meanwhile) or the manager's time.
    let before = rv(&m, "configmap/projectid");
    m.ok(&["apply", "--server-side", "-f", "configmap.yaml"]);
    assert_eq!(rv(&m, "configmap/projectid"), before);
    let before = mine_now(&m, d);
    m.ok(&["apply", "--server-side", "-f", "deployment-nginx.yaml"]);
    assert_eq!(mine_now(&m, d), before);

    // A second manager changing a field the first one owns: 409 naming both, nothing changes.
    let five = m.write(
        "nginx-5.yaml",
        "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: my-nginx-deployment\nspec:\n  replicas: 5\n",
    );
    let err = m.fails(&["apply", "--server-side", "--field-manager=ops", "-f", &five]);
    assert!(
        err.contains(r#"Apply failed with 1 conflict: conflict with "kubectl": .spec.replicas"#),
        "{err}"
    );
    assert_eq!(mine_now(&m, d), before, "a refused apply writes nothing");
    // Forced, the second manager takes the field over.
    m.ok(&["apply", "--server-side", "--field-manager=ops", "--force-conflicts", "-f", &five]);
    let obj = object(&m, d);
    assert_eq!(obj["spec"]["replicas"], 5);
    assert!(fields_of(&obj, "kubectl")["f:spec"].get("f:replicas").is_none(), "{obj}");
    assert_eq!(fields_of(&obj, "ops"), &json!({"f:spec": {"f:replicas": {}}}));

    // The first manager drops replicas and the container port from its file: the port (its alone)
    // is pruned, replicas (now owned by ops) stays.
    let trimmed: String = seed("deployment-nginx.yaml")
        .lines()
        .filter(|l| !l.contains("replicas:") && !l.contains("ports:") && !l.contains("containerPort"))
        .map(|l| format!("{l}\n"))
        .collect();
    m.ok(&["apply", "--server-side", "-f", &m.write("trimmed.yaml", &trimmed)]);
    let obj = object(&m, d);
    assert_eq!(obj["spec"]["replicas"], 5);
    assert!(obj["spec"]["template"]["spec"]["containers"][0].get("ports").is_none(), "{obj}");

    // An unknown field under Strict (kubectl's default): 400 naming it, nothing changes or appears.
    let before = mine_now(&m, d);
    let bogus = seed("deployment-nginx.yaml").replace("  replicas: 3\n", "  replicas: 3\n  bogus: 1\n");
    let err = m.fails(&["apply", "--server-side", "--force-conflicts", "-f", &m.write("bogus.yaml", &bogus)]);
    assert!(err.contains(".spec.bogus: field not declared in schema"), "{err}");
    assert_eq!(mine_now(&m, d), before);
    let fresh = bogus.replace("name: my-nginx-deployment", "name: fresh");
    let err = m.fails(&["apply", "--server-side", "-f", &m.write("fresh.yaml", &fresh)]);
    assert!(err.contains(".spec.bogus: field not declared in schema"), "{err}");
    let err = m.fails(&["get", "deployment", "fresh"]);
    assert!(err.contains("NotFound"), "{err}");

    // Without a field manager the server refuses an apply (422), and `force` on other patches.
    let out =
        curl_patch(&m, "/api/v1/namespaces/default/configmaps/projectid", "application/apply-patch+yaml");
    assert!(
        out.contains("fieldManager: Required value: is required for apply patch")
            && out.contains("\"code\":422"),
        "{out}"
    );
    let out = curl_patch(
        &m,
        "/api/v1/namespaces/default/configmaps/projectid?force=true",
        "application/merge-patch+json",
    );
    assert!(out.contains("force: Forbidden: may not be specified for non-apply patch"), "{out}");

    // Moving from client-side apply: the client-side apply's fields become the server-side
    // manager's, so a key dropped from the file is removed by the first server-side apply.
    let two = "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: moving\ndata:\n  a: \"1\"\n  b: \"2\"\n";
    m.ok(&["apply", "-f", &m.write("moving.yaml", two)]);
    assert_eq!(managers(&object(&m, "configmap/moving")), ["kubectl-client-side-apply/Update"]);
    let one = two.replace("  b: \"2\"\n", "");
    let out = m.ok(&["apply", "--server-side", "-f", &m.write("moving.yaml", &one)]);
    assert!(out.contains("serverside-applied"), "{out}");
    let cm = object(&m, "configmap/moving");
    assert_eq!(cm["data"], json!({"a": "1"}), "{cm}");
    assert!(managers(&cm).contains(&"kubectl/Apply".to_string()), "{:?}", managers(&cm));
    assert!(!managers(&cm).contains(&"kubectl-client-side-apply/Update".to_string()), "{:?}", managers(&cm));
}

mod embedded {
    #[test]
    fn server_side_apply() {
        super::server_side_apply(super::Backend::embedded())
    }
}

mod etcd {
    #[test]
    fn server_side_apply() {
        super::server_side_apply(super::Backend::etcd())
    }
}

/// kube-rs's `Patch::Apply`: create, a conflict with another manager (409 with the field), then
/// `force` taking the field over.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kube_rs_apply_with_force() {
    let m = Master::start(Backend::embedded(), &[]);
    let kc = Kubeconfig::read_from(m.kubeconfig()).unwrap();
    let config = Config::from_custom_kubeconfig(kc, &KubeConfigOptions::default()).await.unwrap();
    let api: Api<ConfigMap> = Api::namespaced(Client::try_from(config).unwrap(), "default");
    let cm = |v: &str| -> ConfigMap {
        serde_json::from_value(json!({"apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": "settings"}, "data": {"mode": v}}))
        .unwrap()
    };
    let created =
        api.patch("settings", &PatchParams::apply("operator"), &Patch::Apply(cm("fast"))).await.unwrap();
    assert_eq!(created.data.unwrap()["mode"], "fast");
    let err =
        api.patch("settings", &PatchParams::apply("tuner"), &Patch::Apply(cm("slow"))).await.unwrap_err();
    let kube::Error::Api(status) = err else { panic!("expected an API error, got {err:?}") };
    assert_eq!(status.code, 409, "{status:?}");
    assert_eq!(status.reason, "Conflict");
    assert!(status.message.contains(r#"conflict with "operator": .data.mode"#), "{}", status.message);
    assert_eq!(api.get("settings").await.unwrap().data.unwrap()["mode"], "fast");
    let forced =
        api.patch("settings", &PatchParams::apply("tuner").force(), &Patch::Apply(cm("slow"))).await.unwrap();
    assert_eq!(forced.data.unwrap()["mode"], "slow");
    let owners: Vec<String> = forced
        .metadata
        .managed_fields
        .unwrap()
        .into_iter()
        .filter(|e| e.fields_v1.as_ref().is_some_and(|f| f.0.pointer("/f:data/f:mode").is_some()))
        .map(|e| e.manager.unwrap())
        .collect();
    assert_eq!(owners, ["tuner"]);
}
