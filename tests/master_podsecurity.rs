//! Pod Security admission driven by the real kubectl against a real rkube-master: namespace labels,
//! enforce (403 with upstream's message), warn (`Warning:` lines on kubectl's stderr), workload
//! templates (warned, never refused) and warnings for existing pods when enforce tightens.

#[path = "support/master.rs"]
mod master;

use master::{Backend, Master};
use std::time::Duration;

const RESTRICTED_OK: &str = "apiVersion: v1
kind: Pod
metadata:
  name: good
spec:
  securityContext:
    runAsNonRoot: true
    runAsUser: 1000
    seccompProfile:
      type: RuntimeDefault
  containers:
  - name: c
    image: busybox
    securityContext:
      allowPrivilegeEscalation: false
      capabilities:
        drop: [ALL]
";

const PLAIN: &str = "apiVersion: v1
kind: Pod
metadata:
  name: plain
spec:
  containers:
  - name: c
    image: busybox
";

const HOST_NETWORK: &str = "apiVersion: v1
kind: Pod
metadata:
  name: hostnet
spec:
  hostNetwork: true
  containers:
  - name: c
    image: busybox
";

const DEPLOYMENT: &str = "apiVersion: apps/v1
kind: Deployment
metadata:
  name: web
spec:
  replicas: 1
  selector:
    matchLabels: {app: web}
  template:
    metadata:
      labels: {app: web}
    spec:
      containers:
      - name: c
        image: busybox
";

const RESTRICTED_DETAIL: &str = "allowPrivilegeEscalation != false (container \"c\" must set \
    securityContext.allowPrivilegeEscalation=false), unrestricted capabilities (container \"c\" must set \
    securityContext.capabilities.drop=[\"ALL\"]), runAsNonRoot != true (pod or container \"c\" must set \
    securityContext.runAsNonRoot=true), seccompProfile (pod or container \"c\" must set \
    securityContext.seccompProfile.type to \"RuntimeDefault\" or \"Localhost\")";

fn namespace(name: &str) -> String {
    format!("apiVersion: v1\nkind: Namespace\nmetadata:\n  name: {name}\n")
}

#[test]
fn pod_security_admission_with_kubectl() {
    let m = Master::start(Backend::embedded(), &[]);

    // enforce=restricted: a plain pod is refused with upstream's message, nothing is stored.
    // (`kubectl create namespace` sends protobuf, which rkube-master does not speak.)
    m.ok(&["apply", "-f", &m.write("strict.yaml", &namespace("strict"))]);
    m.ok(&["label", "namespace", "strict", "pod-security.kubernetes.io/enforce=restricted"]);
    let plain = m.write("plain.yaml", PLAIN);
    let e = m.fails(&["apply", "-n", "strict", "-f", &plain]);
    let want = format!(
        "pods \"plain\" is forbidden: violates PodSecurity \"restricted:latest\": {RESTRICTED_DETAIL}"
    );
    assert!(e.contains("Error from server (Forbidden)") && e.contains(&want), "{e}");
    m.fails(&["get", "pod", "-n", "strict", "plain"]);
    // A compliant pod is accepted without warnings.
    let good = m.write("good.yaml", RESTRICTED_OK);
    let out = m.kubectl(&["apply", "-n", "strict", "-f", &good]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stdout).contains("pod/good created"));
    assert!(
        !String::from_utf8_lossy(&out.stderr).contains("Warning"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // A workload's template is warned about (warn follows enforce), never refused; the pods its
    // ReplicaSet tries to create are refused, which the controller reports as an event.
    let deploy = m.write("deploy.yaml", DEPLOYMENT);
    let out = m.kubectl(&["apply", "-n", "strict", "-f", &deploy]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(
        stderr.contains(&format!(
            "Warning: would violate PodSecurity \"restricted:latest\": {RESTRICTED_DETAIL}"
        )),
        "{stderr}"
    );
    m.eventually(&["get", "events", "-n", "strict"], Duration::from_secs(30), |o| {
        o.contains("FailedCreate") && o.contains("violates PodSecurity")
    });

    // warn=baseline: a hostNetwork pod is created and kubectl prints the warning.
    m.ok(&["apply", "-f", &m.write("soft.yaml", &namespace("soft"))]);
    m.ok(&["label", "namespace", "soft", "pod-security.kubernetes.io/warn=baseline"]);
    let hostnet = m.write("hostnet.yaml", HOST_NETWORK);
    let out = m.kubectl(&["apply", "-n", "soft", "-f", &hostnet]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(String::from_utf8_lossy(&out.stdout).contains("pod/hostnet created"));
    assert!(
        stderr.contains(
            "Warning: would violate PodSecurity \"baseline:latest\": host namespaces (hostNetwork=true)"
        ),
        "{stderr}"
    );
    m.ok(&["get", "pod", "-n", "soft", "hostnet"]);

    // A bad level is refused; tightening enforce warns about the pods already there.
    let e = m.fails(&["label", "namespace", "soft", "pod-security.kubernetes.io/enforce=strict"]);
    assert!(
        e.contains(
            "metadata.labels[pod-security.kubernetes.io/enforce]: Invalid value: \"strict\": must be one of \
             privileged, baseline, restricted"
        ),
        "{e}"
    );
    let out = m.kubectl(&["label", "namespace", "soft", "pod-security.kubernetes.io/enforce=baseline"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(
        stderr.contains(
            "Warning: existing pods in namespace \"soft\" violate the new PodSecurity enforce level \"baseline:latest\""
        ) && stderr.contains("Warning: hostnet: host namespaces"),
        "{stderr}"
    );
    // Now enforced: the same pod under another name is refused.
    let again = m.write("hostnet2.yaml", &HOST_NETWORK.replace("name: hostnet", "name: hostnet2"));
    let e = m.fails(&["apply", "-n", "soft", "-f", &again]);
    assert!(
        e.contains(
            "pods \"hostnet2\" is forbidden: violates PodSecurity \"baseline:latest\": host namespaces (hostNetwork=true)"
        ),
        "{e}"
    );
}
