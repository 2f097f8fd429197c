//! Namespace lifecycle with the real kubectl, on both store backends: deleting a namespace removes
//! every object in it and then the namespace; while something holds it (a finalizer), it stays
//! Terminating and refuses new content with kube-apiserver's 403; the built-in namespaces cannot
//! be deleted; a re-created namespace starts empty.

#[path = "support/master.rs"]
mod master;

use master::{Backend, Master};
use std::time::Duration;

fn deleting_a_namespace_removes_its_objects(backend: Backend) {
    let m = Master::start(backend, &[]);
    for ns in ["default", "kube-system", "kube-public", "kube-node-lease"] {
        let err = m.fails(&["delete", "namespace", ns]);
        assert!(
            err.contains(&format!("namespaces \"{ns}\" is forbidden: this namespace may not be deleted")),
            "{err}"
        );
    }
    m.ok(&["create", "namespace", "shop"]);
    let ns = m.ok(&["get", "namespace", "shop", "-o", "jsonpath={.status.phase} {.spec.finalizers}"]);
    assert_eq!(ns, "Active [\"kubernetes\"]");
    m.ok(&["create", "-f", "configmap.yaml", "-n", "shop"]);
    m.ok(&["create", "-f", "secret.yaml", "-n", "shop"]);
    m.ok(&["apply", "-f", "deployment-blue.yaml", "-n", "shop"]);
    m.ok(&["create", "role", "r", "-n", "shop", "--verb=get", "--resource=pods"]);
    m.eventually(&["get", "pods", "-n", "shop", "-o", "name"], Duration::from_secs(20), |s| {
        !s.trim().is_empty()
    });
    // A ConfigMap with a finalizer of its own holds the namespace in Terminating.
    let held = "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: held, finalizers: [example.com/hold]}\ndata: {a: b}\n";
    m.ok(&["create", "-n", "shop", "-f", &m.write("held.yaml", held)]);
    m.ok(&["delete", "namespace", "shop", "--wait=false"]);
    m.eventually(
        &["get", "all,cm,secret,sa,roles", "-n", "shop", "-o", "name"],
        Duration::from_secs(30),
        |s| s.trim() == "configmap/held",
    );
    assert_eq!(m.ok(&["get", "namespace", "shop", "-o", "jsonpath={.status.phase}"]), "Terminating");
    let err = m.fails(&["create", "configmap", "late", "-n", "shop"]);
    assert!(
        err.contains("configmaps \"late\" is forbidden: unable to create new content in namespace shop because it is being terminated"),
        "{err}"
    );
    let err = m.fails(&["create", "-f", "configmap.yaml", "-n", "shop"]);
    assert!(err.contains("because it is being terminated"), "{err}");
    // Releasing the finalizer lets the namespace go; a new one of the same name is empty.
    m.ok(&[
        "patch",
        "configmap",
        "held",
        "-n",
        "shop",
        "--type=merge",
        "-p",
        r#"{"metadata":{"finalizers":null}}"#,
    ]);
    m.eventually(&["get", "namespaces", "-o", "name"], Duration::from_secs(30), |s| {
        !s.contains("namespace/shop")
    });
    m.ok(&["create", "namespace", "shop"]);
    m.ok(&["create", "-f", "configmap.yaml", "-n", "shop"]);
    let left = m.ok(&["get", "deployments,replicasets,pods,secrets", "-n", "shop", "-o", "name"]);
    assert_eq!(left.trim(), "", "{left}");
}

mod embedded {
    #[test]
    fn deleting_a_namespace_removes_its_objects() {
        super::deleting_a_namespace_removes_its_objects(super::Backend::embedded())
    }
}

mod etcd {
    #[test]
    fn deleting_a_namespace_removes_its_objects() {
        super::deleting_a_namespace_removes_its_objects(super::Backend::etcd())
    }
}
