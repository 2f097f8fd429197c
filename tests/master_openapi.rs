//! `kubectl explain` (kubectl 1.32 reads OpenAPI v3) against a real rkube-master: the schemas the
//! server generates from k8s-openapi's types, with descriptions and nested references.

#[path = "support/master.rs"]
mod master;

use master::{Backend, Master};

#[test]
fn kubectl_explain_reads_the_generated_openapi() {
    let m = Master::start(Backend::embedded(), &[]);
    let out = m.ok(&["explain", "deployment.spec.strategy"]);
    for want in [
        "KIND:       Deployment",
        "VERSION:    v1",
        "FIELD: strategy <DeploymentStrategy>",
        "DeploymentStrategy describes how to replace existing pods with new ones.",
        "rollingUpdate\t<RollingUpdateDeployment>",
        "type\t<string>",
    ] {
        assert!(out.contains(want), "missing {want:?} in:\n{out}");
    }
    let out = m.ok(&["explain", "pods.spec.containers.ports"]);
    assert!(out.contains("containerPort\t<integer>"), "{out}");
    let err = m.fails(&["explain", "deployment.spec.nosuchfield"]);
    assert!(err.contains("nosuchfield"), "{err}");
}
