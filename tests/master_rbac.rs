//! Authentication and authorization with the real kubectl: anonymous requests, RBAC kinds and
//! bootstrap roles, ServiceAccounts, TokenRequest (`kubectl create token`), `kubectl auth can-i`
//! (and `--list`), and ServiceAccount tokens refused for a wrong audience, an expiry, or a
//! deleted ServiceAccount. On both store backends.

#[path = "support/master.rs"]
mod master;

use master::{Backend, Master};
use rkube::master::apiserver::satoken::{ObjectRef, TokenIssuer, TokenSpec, unix_now};

fn curl_code(url: &str, token: Option<&str>) -> String {
    let mut cmd = std::process::Command::new("curl");
    cmd.args(["-sk", "-o", "/dev/null", "-w", "%{http_code}"]);
    if let Some(t) = token {
        cmd.args(["-H", &format!("Authorization: Bearer {t}")]);
    }
    let out = cmd.arg(url).output().unwrap();
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// kubectl as the holder of `token` (the kubeconfig's admin token is overridden).
fn as_token(m: &Master, token: &str, args: &[&str]) -> std::process::Output {
    let mut all = vec!["--token", token];
    all.extend_from_slice(args);
    m.kubectl(&all)
}

fn stderr(o: &std::process::Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn stdout(o: &std::process::Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn anonymous_requests(m: &Master) {
    let base = m.url();
    for path in ["/healthz", "/livez", "/readyz", "/version", "/cacerts"] {
        assert_eq!(curl_code(&format!("{base}{path}"), None), "200", "{path}");
    }
    for path in [
        "/api",
        "/apis",
        "/openapi/v3",
        "/api/v1/namespaces",
        "/apis/rbac.authorization.k8s.io/v1/clusterroles",
    ] {
        assert_eq!(curl_code(&format!("{base}{path}"), None), "401", "{path}");
    }
}

fn service_account_limited_by_a_role(backend: Backend) {
    let m = Master::start(backend, &[]);
    anonymous_requests(&m);
    // The admin is in system:masters, bound to cluster-admin.
    assert_eq!(m.ok(&["auth", "can-i", "create", "pods"]).trim(), "yes");
    assert!(m.ok(&["auth", "can-i", "--list"]).contains("*.*"));
    assert!(m.ok(&["auth", "whoami"]).contains("system:masters"));
    let roles = m.ok(&["get", "clusterroles"]);
    for r in ["cluster-admin", "admin", "edit", "view"] {
        assert!(roles.lines().any(|l| l.starts_with(&format!("{r} "))), "{roles}");
    }
    assert!(m.ok(&["get", "clusterrolebinding", "cluster-admin", "-o", "yaml"]).contains("system:masters"));

    m.ok(&["create", "namespace", "team"]);
    m.ok(&["create", "namespace", "other"]);
    m.ok(&["create", "serviceaccount", "bot", "-n", "team"]);
    pod_service_accounts(&m);
    m.ok(&["create", "configmap", "settings", "-n", "team", "--from-literal=a=1"]);
    m.ok(&["create", "configmap", "settings", "-n", "other", "--from-literal=a=2"]);
    m.ok(&["create", "role", "cm-reader", "-n", "team", "--verb=get,list,watch", "--resource=configmaps"]);
    m.ok(&[
        "create",
        "rolebinding",
        "bot-reads",
        "-n",
        "team",
        "--role=cm-reader",
        "--serviceaccount=team:bot",
    ]);
    // A binding to a role that does not exist is accepted and grants nothing.
    m.ok(&["create", "rolebinding", "dangling", "-n", "team", "--role=missing", "--serviceaccount=team:bot"]);

    let token = m.ok(&["create", "token", "bot", "-n", "team"]).trim().to_string();
    assert_eq!(token.split('.').count(), 3, "{token}");
    let who = stdout(&as_token(&m, &token, &["auth", "whoami"]));
    assert!(
        who.contains("system:serviceaccount:team:bot") && who.contains("system:serviceaccounts:team"),
        "{who}"
    );
    // Allowed in its namespace, 403 elsewhere and for other verbs or kinds.
    let got = as_token(&m, &token, &["get", "configmaps", "-n", "team"]);
    assert!(got.status.success() && stdout(&got).contains("settings"), "{}", stderr(&got));
    let refused = as_token(&m, &token, &["get", "configmaps", "-n", "other"]);
    assert!(!refused.status.success());
    assert!(
        stderr(&refused).contains(
            "configmaps is forbidden: User \"system:serviceaccount:team:bot\" cannot list resource \"configmaps\" in API group \"\" in the namespace \"other\""
        ),
        "{}",
        stderr(&refused)
    );
    let write = as_token(&m, &token, &["create", "configmap", "x", "-n", "team"]);
    assert!(stderr(&write).contains("forbidden"), "{}", stderr(&write));
    assert!(!as_token(&m, &token, &["get", "secrets", "-n", "team"]).status.success());
    let yes = as_token(&m, &token, &["auth", "can-i", "list", "configmaps", "-n", "team"]);
    assert_eq!((yes.status.code(), stdout(&yes).trim()), (Some(0), "yes"));
    let no = as_token(&m, &token, &["auth", "can-i", "list", "configmaps", "-n", "other"]);
    assert_eq!((no.status.code(), stdout(&no).trim()), (Some(1), "no"));
    let list = stdout(&as_token(&m, &token, &["auth", "can-i", "--list", "-n", "team"]));
    assert!(list.lines().any(|l| l.starts_with("configmaps ") && l.contains("[get list watch]")), "{list}");
    assert!(!list.contains("*.*"), "{list}");

    // Bad tokens are 401 and change nothing: another audience, an expired one, a deleted account.
    let foreign = m.ok(&["create", "token", "bot", "-n", "team", "--audience", "https://vault.example"]);
    let out = as_token(&m, foreign.trim(), &["delete", "configmap", "settings", "-n", "team"]);
    assert!(stderr(&out).contains("Unauthorized"), "{}", stderr(&out));
    let key = std::fs::read_to_string(m.pki().join("sa.key")).unwrap();
    let issuer = TokenIssuer::from_pem(&key).unwrap();
    let uid = m.ok(&["get", "sa", "bot", "-n", "team", "-o", "jsonpath={.metadata.uid}"]);
    let spec = TokenSpec {
        namespace: "team".into(),
        service_account: ObjectRef { name: "bot".into(), uid },
        expiration_seconds: 600,
        ..Default::default()
    };
    let (expired, _) = issuer.issue(&spec, unix_now() - 3600).unwrap();
    let out = as_token(&m, &expired, &["delete", "configmap", "settings", "-n", "team"]);
    assert!(stderr(&out).contains("Unauthorized"), "{}", stderr(&out));
    // The same claims, fresh, pass authentication (so the refusal above was the expiry).
    let (fresh, _) = issuer.issue(&spec, unix_now()).unwrap();
    assert!(as_token(&m, &fresh, &["get", "configmaps", "-n", "team"]).status.success());
    assert!(m.ok(&["get", "configmaps", "-n", "team"]).contains("settings"));
    // Too short a lifetime is refused as kube-apiserver does.
    let short = m.fails(&["create", "token", "bot", "-n", "team", "--duration=60s"]);
    assert!(
        short.contains(
            "spec.expirationSeconds: Invalid value: 60: may not specify a duration less than 10 minutes"
        ),
        "{short}"
    );
    // No privilege escalation: bot may now write RoleBindings in team, but cannot grant more than it
    // holds (cluster-admin, edit), only what it has (its own cm-reader role).
    m.ok(&[
        "create",
        "role",
        "binder",
        "-n",
        "team",
        "--verb=create,update,patch",
        "--resource=rolebindings",
    ]);
    m.ok(&["create", "rolebinding", "bot-binds", "-n", "team", "--role=binder", "--serviceaccount=team:bot"]);
    let grab = as_token(
        &m,
        &token,
        &[
            "create",
            "rolebinding",
            "grab",
            "-n",
            "team",
            "--clusterrole=cluster-admin",
            "--serviceaccount=team:bot",
        ],
    );
    assert!(
        stderr(&grab).contains("rolebindings.rbac.authorization.k8s.io \"grab\" is forbidden: user \"system:serviceaccount:team:bot\"")
            && stderr(&grab).contains("is attempting to grant RBAC permissions not currently held"),
        "{}",
        stderr(&grab)
    );
    assert!(
        !as_token(
            &m,
            &token,
            &["create", "rolebinding", "grab", "-n", "team", "--clusterrole=edit", "--user=eve"]
        )
        .status
        .success()
    );
    assert!(m.fails(&["get", "rolebinding", "grab", "-n", "team"]).contains("NotFound"));
    let share = as_token(
        &m,
        &token,
        &["create", "rolebinding", "share", "-n", "team", "--role=cm-reader", "--user=eve"],
    );
    assert!(share.status.success(), "{}", stderr(&share));
    // A binding's roleRef cannot change.
    let patch = r#"{"roleRef":{"apiGroup":"rbac.authorization.k8s.io","kind":"ClusterRole","name":"admin"}}"#;
    let err = m.fails(&["patch", "rolebinding", "bot-reads", "-n", "team", "--type=merge", "-p", patch]);
    assert!(err.contains("cannot change roleRef"), "{err}");
    // Deleting the ServiceAccount invalidates its tokens.
    m.ok(&["delete", "serviceaccount", "bot", "-n", "team"]);
    let out = as_token(&m, &token, &["get", "configmaps", "-n", "team"]);
    assert!(stderr(&out).contains("Unauthorized"), "{}", stderr(&out));
    assert_eq!(curl_code(&format!("{}/api/v1/namespaces/team/configmaps", m.url()), Some(&token)), "401");
}

/// ServiceAccount admission: a `default` account in every namespace, the projected token volume
/// in every container unless automounting is off, 403 for a missing account; the CA ConfigMap.
fn pod_service_accounts(m: &Master) {
    assert_eq!(m.ok(&["get", "sa", "default", "-n", "team", "-o", "name"]).trim(), "serviceaccount/default");
    m.eventually(
        &["get", "configmap", "kube-root-ca.crt", "-n", "team", "-o", "jsonpath={.data.ca\\.crt}"],
        std::time::Duration::from_secs(10),
        |s| s.contains("BEGIN CERTIFICATE"),
    );
    let pod = |name: &str, extra: &str| {
        format!(
            "apiVersion: v1\nkind: Pod\nmetadata: {{name: {name}, namespace: team}}\nspec:\n{extra}  containers: [{{name: c, image: busybox}}]\n  initContainers: [{{name: i, image: busybox}}]\n"
        )
    };
    m.ok(&["create", "-f", &m.write("p1.yaml", &pod("p1", ""))]);
    let mounts = m.ok(&["get", "pod", "p1", "-n", "team", "-o", "jsonpath={.spec.serviceAccountName} {.spec.volumes[0].name} {.spec.containers[0].volumeMounts[0].mountPath} {.spec.initContainers[0].volumeMounts[0].readOnly}"]);
    let parts: Vec<&str> = mounts.split(' ').collect();
    assert_eq!(parts[0], "default", "{mounts}");
    assert!(
        parts[1].starts_with("kube-api-access-") && parts[1].len() == "kube-api-access-".len() + 5,
        "{mounts}"
    );
    assert_eq!(&parts[2..], ["/var/run/secrets/kubernetes.io/serviceaccount", "true"], "{mounts}");
    let sources =
        m.ok(&["get", "pod", "p1", "-n", "team", "-o", "jsonpath={.spec.volumes[0].projected.sources}"]);
    assert!(
        sources.contains("\"expirationSeconds\":3607")
            && sources.contains("kube-root-ca.crt")
            && sources.contains("metadata.namespace"),
        "{sources}"
    );
    m.ok(&["create", "-f", &m.write("p2.yaml", &pod("p2", "  automountServiceAccountToken: false\n"))]);
    assert_eq!(m.ok(&["get", "pod", "p2", "-n", "team", "-o", "jsonpath={.spec.volumes}"]).trim(), "");
    let err = m.fails(&["create", "-f", &m.write("p3.yaml", &pod("p3", "  serviceAccountName: ghost\n"))]);
    assert!(err.contains("pods \"p3\" is forbidden: error looking up service account team/ghost: serviceaccount \"ghost\" not found"), "{err}");
    m.ok(&["delete", "pod", "p1", "p2", "-n", "team", "--grace-period=0"]);
}

mod embedded {
    #[test]
    fn service_account_limited_by_a_role() {
        super::service_account_limited_by_a_role(super::Backend::embedded())
    }
}

mod etcd {
    #[test]
    fn service_account_limited_by_a_role() {
        super::service_account_limited_by_a_role(super::Backend::etcd())
    }
}
