//! Root integration test: `rkubelet run` pulls a missing image from a real registry (Basic auth)
//! with the pod's imagePullSecrets; without them the start fails with one line and leaves nothing.

#[path = "support/network.rs"]
mod network;
#[path = "support/pod.rs"]
mod pod;
#[path = "support/registry.rs"]
mod registry;

use base64::Engine as _;
use pod::{IMAGE, PodNode};
use registry::{BASIC_PASSWORD, BASIC_USER, Mode, TestRegistry};

#[test]
fn pulls_missing_images_with_image_pull_secrets() {
    let reg = TestRegistry::start(Mode::Basic);
    let node = PodNode::new(50);
    let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s);
    let auths = format!(
        r#"{{"auths":{{"{}":{{"auth":"{}"}}}}}}"#,
        reg.host(),
        b64(&format!("{BASIC_USER}:{BASIC_PASSWORD}"))
    );
    // Push the node's busybox image to the registry with docker-style credentials.
    let docker = node.dir.path().join("docker");
    std::fs::create_dir_all(&docker).unwrap();
    std::fs::write(docker.join("config.json"), &auths).unwrap();
    let target = format!("{}/lib/busybox:v1", reg.host());
    let push = std::process::Command::new(env!("CARGO_BIN_EXE_rkubelet"))
        .args(["image", "push", "--root"])
        .arg(node.root())
        .args([IMAGE, &target])
        .env("DOCKER_CONFIG", &docker)
        .output()
        .unwrap();
    assert!(push.status.success(), "push: {}", String::from_utf8_lossy(&push.stderr));

    let pod = |secrets: &str| {
        format!(
            r#"apiVersion: v1
kind: Secret
metadata: {{name: regcred}}
type: kubernetes.io/dockerconfigjson
data: {{.dockerconfigjson: {}}}
---
apiVersion: v1
kind: Pod
metadata: {{name: pulled}}
spec:
  terminationGracePeriodSeconds: 0
{secrets}  containers:
  - {{name: c, image: "{target}", imagePullPolicy: Always, command: [sleep, "3600"]}}
"#,
            b64(&auths)
        )
    };
    let out = node.run_yaml("nosecret", &pod(""), false);
    assert!(!out.status.success(), "pulled without credentials");
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    assert!(err.contains(&target) || err.contains("lib/busybox"), "{err}");
    node.assert_pod_gone("pulled");

    let out = node.run_yaml("secret", &pod("  imagePullSecrets: [{name: regcred}]\n"), false);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(node.exec("pulled", "c", &["echo", "pulled-ok"]).trim(), "pulled-ok");
    node.ok("rm", &["pulled"], &[]);
    node.assert_pod_gone("pulled");
}
