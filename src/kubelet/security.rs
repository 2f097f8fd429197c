//! A container's security settings from its Pod, decided before anything is created: the seccomp
//! profile (container over pod over the node's default; privileged containers are unconfined, as
//! in Kubernetes) and the kubelet's runAsNonRoot check. Pure, except [`load_localhost_profile`].

use std::path::{Component, Path, PathBuf};

use std::collections::HashMap;

use k8s_openapi::api::core::v1::{Container, PodSecurityContext, PodSpec, SeccompProfile};
use oci_spec::runtime::LinuxSeccomp;

/// Where a node keeps `Localhost` seccomp profiles, under its root (the kubelet's
/// `<root-dir>/seccomp`): `localhostProfile` is a path relative to it.
pub const PROFILE_DIR: &str = "seccomp";

/// The seccomp filter a container runs under.
#[derive(Debug, Clone, PartialEq)]
pub enum Seccomp {
    /// No filter.
    Unconfined,
    /// The runtime's default profile (Docker's), adjusted to the container's capabilities.
    RuntimeDefault,
    /// A profile loaded from the node's profile directory (`Localhost`).
    Localhost { path: PathBuf, profile: Box<LinuxSeccomp> },
}

/// Why a container's security settings were refused.
#[derive(Debug, thiserror::Error)]
pub enum SecurityError {
    #[error("{field}: {reason}")]
    Invalid { field: String, reason: String },
    #[error("{field}: seccomp profile {path}: {source}")]
    ReadProfile {
        field: String,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{field}: seccomp profile {path}: {reason}")]
    BadProfile { field: String, path: PathBuf, reason: String },
    /// The kubelet's messages, word for word.
    #[error("{0}")]
    NonRoot(String),
}

/// The sysctls the kubelet allows by default (its "safe" set: namespaced, and unable to affect
/// other pods or the node); any other is refused, as with no `--allowed-unsafe-sysctls`.
pub const SAFE_SYSCTLS: &[&str] = &[
    "kernel.shm_rmid_forced",
    "net.ipv4.ip_local_port_range",
    "net.ipv4.ip_local_reserved_ports",
    "net.ipv4.ip_unprivileged_port_start",
    "net.ipv4.ping_group_range",
    "net.ipv4.tcp_fin_timeout",
    "net.ipv4.tcp_keepalive_intvl",
    "net.ipv4.tcp_keepalive_probes",
    "net.ipv4.tcp_keepalive_time",
    "net.ipv4.tcp_rmem",
    "net.ipv4.tcp_syncookies",
    "net.ipv4.tcp_wmem",
];

/// The pod's `securityContext.sysctls`, checked as the kubelet's sysctl admission does: only the
/// safe set, no `net.*` with hostNetwork and no IPC ones with hostIPC (they would change the
/// node's). Names may use `/` as separator.
pub fn pod_sysctls(spec: &PodSpec) -> Result<HashMap<String, String>, SecurityError> {
    let mut out = HashMap::new();
    let list = spec.security_context.as_ref().and_then(|s| s.sysctls.as_ref());
    for (i, sysctl) in list.into_iter().flatten().enumerate() {
        let field = format!("spec.securityContext.sysctls[{i}]");
        let name = sysctl.name.replace('/', ".");
        let forbidden = |why: String| SecurityError::Invalid { field: field.clone(), reason: why };
        if !SAFE_SYSCTLS.contains(&name.as_str()) {
            return Err(forbidden(format!("forbidden sysctl: {name:?} not allowlisted")));
        }
        if name.starts_with("net.") && spec.host_network == Some(true) {
            return Err(forbidden(format!("forbidden sysctl: {name:?} not allowed with host net enabled")));
        }
        if spec.host_users == Some(false) {
            // The pod's network and IPC namespaces belong to the host's user namespace: root of
            // the pod's own cannot write their sysctls.
            return Err(forbidden(format!("forbidden sysctl: {name:?} not supported with hostUsers: false")));
        }
        if name.starts_with("kernel.shm") && spec.host_ipc == Some(true) {
            return Err(forbidden(format!("forbidden sysctl: {name:?} not allowed with host ipc enabled")));
        }
        out.insert(name, sysctl.value.clone());
    }
    Ok(out)
}

/// The rules between a pod's host namespaces, user namespace and /proc that Kubernetes'
/// validation enforces, valid hostAliases addresses (the kubelet writes them to /etc/hosts), and
/// [`check_container`] for every container.
pub fn check_pod_spec(spec: &PodSpec) -> Result<(), SecurityError> {
    let invalid = |field: String, reason: &str| SecurityError::Invalid { field, reason: reason.into() };
    if spec.host_pid == Some(true) && spec.share_process_namespace == Some(true) {
        return Err(invalid(
            "spec.shareProcessNamespace".into(),
            "Invalid value: true: ShareProcessNamespace and HostPID cannot both be enabled",
        ));
    }
    let own_users = spec.host_users == Some(false);
    if own_users {
        for (set, field) in
            [(spec.host_network, "hostNetwork"), (spec.host_pid, "hostPID"), (spec.host_ipc, "hostIPC")]
        {
            if set == Some(true) {
                return Err(invalid(format!("spec.{field}"), "Forbidden: when `hostUsers` is false"));
            }
        }
    }
    let lists = [
        ("initContainers", spec.init_containers.as_deref().unwrap_or_default()),
        ("containers", &spec.containers),
    ];
    for (list, containers) in lists {
        for (i, c) in containers.iter().enumerate() {
            check_container(c, &format!("spec.{list}[{i}]"))?;
            let unmasked =
                c.security_context.as_ref().and_then(|s| s.proc_mount.as_deref()) == Some("Unmasked");
            if unmasked && !own_users {
                return Err(invalid(
                    format!("spec.{list}[{i}].securityContext.procMount"),
                    "Invalid value: \"Unmasked\": `hostUsers` must be false to use `Unmasked`",
                ));
            }
        }
    }
    for (i, alias) in spec.host_aliases.iter().flatten().enumerate() {
        if alias.ip.parse::<std::net::IpAddr>().is_err() {
            return Err(SecurityError::Invalid {
                field: format!("spec.hostAliases[{i}].ip"),
                reason: format!("{:?} is not a valid IP address", alias.ip),
            });
        }
    }
    Ok(())
}

/// What a container names that rkube would otherwise drop without a word: capability names the
/// kernel does not know, and probe hosts that are not IPv4 addresses (names are not resolved).
/// `path` is the container's (`spec.containers[0]`).
pub fn check_container(container: &Container, path: &str) -> Result<(), SecurityError> {
    let caps = container.security_context.as_ref().and_then(|s| s.capabilities.as_ref());
    for (list, names) in
        [("add", caps.and_then(|c| c.add.as_ref())), ("drop", caps.and_then(|c| c.drop.as_ref()))]
    {
        for (i, name) in names.into_iter().flatten().enumerate() {
            let upper = name.to_ascii_uppercase();
            let full = if upper.starts_with("CAP_") { upper } else { format!("CAP_{upper}") };
            if !name.eq_ignore_ascii_case("ALL")
                && <caps::Capability as std::str::FromStr>::from_str(&full).is_err()
            {
                return Err(SecurityError::Invalid {
                    field: format!("{path}.securityContext.capabilities.{list}[{i}]"),
                    reason: format!("unknown capability {name:?}"),
                });
            }
        }
    }
    let probes = [
        ("livenessProbe", container.liveness_probe.as_ref()),
        ("readinessProbe", container.readiness_probe.as_ref()),
        ("startupProbe", container.startup_probe.as_ref()),
    ];
    for (kind, probe) in probes {
        let Some(probe) = probe else { continue };
        let hosts = [
            ("httpGet", probe.http_get.as_ref().and_then(|h| h.host.as_deref())),
            ("tcpSocket", probe.tcp_socket.as_ref().and_then(|t| t.host.as_deref())),
        ];
        for (handler, host) in hosts {
            if let Some(host) = host.filter(|h| !h.is_empty())
                && host.parse::<std::net::Ipv4Addr>().is_err()
            {
                return Err(SecurityError::Invalid {
                    field: format!("{path}.{kind}.{handler}.host"),
                    reason: format!(
                        "{host:?} is not an IPv4 address (rkube does not resolve probe host names)"
                    ),
                });
            }
        }
    }
    Ok(())
}

/// Which profile a container asks for, before a `Localhost` profile is loaded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SeccompChoice {
    Unconfined,
    RuntimeDefault,
    /// `localhostProfile`, relative to the node's profile directory, and the field that named it.
    Localhost {
        path: PathBuf,
        field: String,
    },
}

/// The container's choice: a privileged container is unconfined; otherwise its own
/// `seccompProfile`, else the pod's, else the node's default (`RuntimeDefault` unless the node
/// runs with `--seccomp-default=false`).
pub fn seccomp_choice(
    container: &Container,
    pod: Option<&PodSecurityContext>,
    node_default_runtime: bool,
) -> Result<SeccompChoice, SecurityError> {
    let sc = container.security_context.as_ref();
    if sc.and_then(|s| s.privileged) == Some(true) {
        return Ok(SeccompChoice::Unconfined);
    }
    if let Some(profile) = sc.and_then(|s| s.seccomp_profile.as_ref()) {
        return choice_of(profile, "securityContext.seccompProfile");
    }
    if let Some(profile) = pod.and_then(|s| s.seccomp_profile.as_ref()) {
        return choice_of(profile, "spec.securityContext.seccompProfile");
    }
    Ok(if node_default_runtime { SeccompChoice::RuntimeDefault } else { SeccompChoice::Unconfined })
}

fn choice_of(profile: &SeccompProfile, field: &str) -> Result<SeccompChoice, SecurityError> {
    let invalid =
        |sub: &str, reason: String| SecurityError::Invalid { field: format!("{field}.{sub}"), reason };
    let localhost = profile.localhost_profile.as_deref();
    match profile.type_.as_str() {
        "Localhost" => {
            let path = localhost.filter(|p| !p.is_empty()).ok_or_else(|| {
                invalid("localhostProfile", "must be set when seccomp type is Localhost".into())
            })?;
            let relative = Path::new(path);
            if !relative.components().all(|c| matches!(c, Component::Normal(_))) {
                return Err(invalid(
                    "localhostProfile",
                    format!("{path:?} must be a relative path without '.' or '..' components"),
                ));
            }
            Ok(SeccompChoice::Localhost {
                path: relative.to_path_buf(),
                field: format!("{field}.localhostProfile"),
            })
        }
        other => {
            if localhost.is_some() {
                return Err(invalid(
                    "localhostProfile",
                    "can only be set when seccomp type is Localhost".into(),
                ));
            }
            match other {
                "RuntimeDefault" => Ok(SeccompChoice::RuntimeDefault),
                "Unconfined" => Ok(SeccompChoice::Unconfined),
                _ => Err(invalid(
                    "type",
                    format!(
                        "unsupported value {other:?}: supported values: \"Localhost\", \"RuntimeDefault\", \"Unconfined\""
                    ),
                )),
            }
        }
    }
}

/// Resolves a choice on the node: loads a `Localhost` profile from `<root>/seccomp/<path>` (an
/// OCI/Docker seccomp JSON profile) and checks that it compiles.
pub fn resolve(choice: SeccompChoice, node_root: &Path) -> Result<Seccomp, SecurityError> {
    match choice {
        SeccompChoice::Unconfined => Ok(Seccomp::Unconfined),
        SeccompChoice::RuntimeDefault => Ok(Seccomp::RuntimeDefault),
        SeccompChoice::Localhost { path, field } => {
            let full = node_root.join(PROFILE_DIR).join(&path);
            let profile = load_localhost_profile(&full, &field)?;
            Ok(Seccomp::Localhost { path, profile: Box::new(profile) })
        }
    }
}

/// Reads and checks one profile file.
pub fn load_localhost_profile(path: &Path, field: &str) -> Result<LinuxSeccomp, SecurityError> {
    let bytes = std::fs::read(path).map_err(|source| SecurityError::ReadProfile {
        field: field.into(),
        path: path.into(),
        source,
    })?;
    let bad = |reason: String| SecurityError::BadProfile { field: field.into(), path: path.into(), reason };
    let profile: LinuxSeccomp = serde_json::from_slice(&bytes).map_err(|e| bad(e.to_string()))?;
    crate::runtime::seccomp::from_oci(&profile).map_err(|e| bad(e.to_string()))?;
    Ok(profile)
}

/// The kubelet's runAsNonRoot check (`verifyRunAsNonRoot`): with `runAsNonRoot: true`, an explicit
/// `runAsUser: 0` or an image user that is root (or empty) is refused, and so is a non-numeric image
/// user, which cannot be verified. `pod` is the pod as the kubelet names it (`name_namespace`).
pub fn verify_run_as_non_root(
    container: &Container,
    pod_sc: Option<&PodSecurityContext>,
    image_user: &str,
    pod: &str,
) -> Result<(), SecurityError> {
    let sc = container.security_context.as_ref();
    let non_root = sc.and_then(|s| s.run_as_non_root).or_else(|| pod_sc.and_then(|s| s.run_as_non_root));
    if non_root != Some(true) {
        return Ok(());
    }
    let name = &container.name;
    if let Some(uid) = sc.and_then(|s| s.run_as_user).or_else(|| pod_sc.and_then(|s| s.run_as_user)) {
        if uid == 0 {
            return Err(SecurityError::NonRoot(format!(
                "container's runAsUser breaks non-root policy (pod: {pod:?}, container: {name})"
            )));
        }
        return Ok(());
    }
    let user = image_user.split(':').next().unwrap_or_default();
    match user.parse::<u32>() {
        Ok(0) => Err(SecurityError::NonRoot(format!(
            "container has runAsNonRoot and image will run as root (pod: {pod:?}, container: {name})"
        ))),
        Ok(_) => Ok(()),
        // No USER in the image: the image runs as root.
        Err(_) if user.is_empty() => Err(SecurityError::NonRoot(format!(
            "container has runAsNonRoot and image will run as root (pod: {pod:?}, container: {name})"
        ))),
        Err(_) => Err(SecurityError::NonRoot(format!(
            "container has runAsNonRoot and image has non-numeric user ({user}), cannot verify user is \
             non-root (pod: {pod:?}, container: {name})"
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::SecurityContext;

    fn container(sc: Option<SecurityContext>) -> Container {
        Container { name: "c".into(), security_context: sc, ..Default::default() }
    }

    fn profile(typ: &str, localhost: Option<&str>) -> Option<SeccompProfile> {
        Some(SeccompProfile { type_: typ.into(), localhost_profile: localhost.map(str::to_string) })
    }

    #[test]
    fn runtime_default_unless_the_pod_or_node_says_otherwise() {
        let plain = container(None);
        assert_eq!(seccomp_choice(&plain, None, true).unwrap(), SeccompChoice::RuntimeDefault);
        assert_eq!(seccomp_choice(&plain, None, false).unwrap(), SeccompChoice::Unconfined);
        let pod = PodSecurityContext { seccomp_profile: profile("Unconfined", None), ..Default::default() };
        assert_eq!(seccomp_choice(&plain, Some(&pod), true).unwrap(), SeccompChoice::Unconfined);
        // The container's own profile wins over the pod's.
        let own = container(Some(SecurityContext {
            seccomp_profile: profile("RuntimeDefault", None),
            ..Default::default()
        }));
        assert_eq!(seccomp_choice(&own, Some(&pod), false).unwrap(), SeccompChoice::RuntimeDefault);
        // Privileged containers are unconfined whatever they ask for.
        let privileged = container(Some(SecurityContext {
            privileged: Some(true),
            seccomp_profile: profile("RuntimeDefault", None),
            ..Default::default()
        }));
        assert_eq!(seccomp_choice(&privileged, None, true).unwrap(), SeccompChoice::Unconfined);
    }

    #[test]
    fn localhost_profiles_are_relative_paths_under_the_node_directory() {
        let pod = |p: Option<&str>| PodSecurityContext {
            seccomp_profile: profile("Localhost", p),
            ..Default::default()
        };
        let plain = container(None);
        assert_eq!(
            seccomp_choice(&plain, Some(&pod(Some("profiles/deny-mkdir.json"))), true).unwrap(),
            SeccompChoice::Localhost {
                path: "profiles/deny-mkdir.json".into(),
                field: "spec.securityContext.seccompProfile.localhostProfile".into()
            }
        );
        for bad in
            [None, Some(""), Some("/etc/x.json"), Some("../x.json"), Some("a/../../x.json"), Some("./x")]
        {
            let err = seccomp_choice(&plain, Some(&pod(bad)), true).unwrap_err().to_string();
            assert!(err.starts_with("spec.securityContext.seccompProfile.localhostProfile: "), "{err}");
        }
        let typo = container(Some(SecurityContext {
            seccomp_profile: profile("Default", None),
            ..Default::default()
        }));
        let err = seccomp_choice(&typo, None, true).unwrap_err().to_string();
        assert!(
            err.starts_with("securityContext.seccompProfile.type: unsupported value \"Default\""),
            "{err}"
        );
        let stray = PodSecurityContext {
            seccomp_profile: profile("RuntimeDefault", Some("x.json")),
            ..Default::default()
        };
        assert!(seccomp_choice(&plain, Some(&stray), true).is_err());
    }

    #[test]
    fn a_localhost_profile_is_loaded_and_checked() {
        let dir = tempfile::tempdir().unwrap();
        let profiles = dir.path().join(PROFILE_DIR);
        std::fs::create_dir_all(&profiles).unwrap();
        std::fs::write(
            profiles.join("deny-mkdir.json"),
            r#"{"defaultAction": "SCMP_ACT_ALLOW", "architectures": ["SCMP_ARCH_X86_64"],
                "syscalls": [{"names": ["mkdir", "mkdirat"], "action": "SCMP_ACT_ERRNO", "errnoRet": 1}]}"#,
        )
        .unwrap();
        std::fs::write(profiles.join("broken.json"), "{").unwrap();
        let choice = |p: &str| SeccompChoice::Localhost { path: p.into(), field: "f".into() };
        match resolve(choice("deny-mkdir.json"), dir.path()).unwrap() {
            Seccomp::Localhost { profile, .. } => assert_eq!(profile.syscalls().as_ref().unwrap().len(), 1),
            other => panic!("{other:?}"),
        }
        let missing = resolve(choice("missing.json"), dir.path()).unwrap_err().to_string();
        assert!(missing.starts_with("f: seccomp profile ") && missing.contains("missing.json"), "{missing}");
        assert!(resolve(choice("broken.json"), dir.path()).is_err());
    }

    #[test]
    fn host_namespaces_user_namespaces_and_proc_follow_kubernetes_rules() {
        use k8s_openapi::api::core::v1::HostAlias;
        assert!(check_pod_spec(&PodSpec { host_pid: Some(true), ..Default::default() }).is_ok());
        let both =
            PodSpec { host_pid: Some(true), share_process_namespace: Some(true), ..Default::default() };
        assert!(check_pod_spec(&both).unwrap_err().to_string().contains("cannot both be enabled"));
        let userns_host_net =
            PodSpec { host_users: Some(false), host_network: Some(true), ..Default::default() };
        assert_eq!(
            check_pod_spec(&userns_host_net).unwrap_err().to_string(),
            "spec.hostNetwork: Forbidden: when `hostUsers` is false"
        );
        let unmasked = |host_users| PodSpec {
            host_users,
            containers: vec![container(Some(SecurityContext {
                proc_mount: Some("Unmasked".into()),
                ..Default::default()
            }))],
            ..Default::default()
        };
        assert!(check_pod_spec(&unmasked(Some(false))).is_ok());
        assert!(
            check_pod_spec(&unmasked(None))
                .unwrap_err()
                .to_string()
                .starts_with("spec.containers[0].securityContext.procMount: Invalid value")
        );
        let alias = |ip: &str| PodSpec {
            host_aliases: Some(vec![HostAlias { ip: ip.into(), hostnames: Some(vec!["db".into()]) }]),
            ..Default::default()
        };
        assert!(check_pod_spec(&alias("10.1.2.3")).is_ok());
        assert_eq!(
            check_pod_spec(&alias("db.local")).unwrap_err().to_string(),
            "spec.hostAliases[0].ip: \"db.local\" is not a valid IP address"
        );
    }

    #[test]
    fn unknown_capabilities_and_probe_host_names_are_refused() {
        use k8s_openapi::api::core::v1::{Capabilities, HTTPGetAction, Probe};
        use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
        let caps = |add: &str| {
            container(Some(SecurityContext {
                capabilities: Some(Capabilities {
                    add: Some(vec![add.into()]),
                    drop: Some(vec!["ALL".into()]),
                }),
                ..Default::default()
            }))
        };
        assert!(check_container(&caps("NET_ADMIN"), "spec.containers[0]").is_ok());
        assert!(check_container(&caps("cap_net_raw"), "spec.containers[0]").is_ok());
        assert_eq!(
            check_container(&caps("NET_ADMINN"), "spec.containers[0]").unwrap_err().to_string(),
            "spec.containers[0].securityContext.capabilities.add[0]: unknown capability \"NET_ADMINN\""
        );
        let probe = |host: &str| Container {
            name: "c".into(),
            liveness_probe: Some(Probe {
                http_get: Some(HTTPGetAction {
                    host: Some(host.into()),
                    port: IntOrString::Int(80),
                    ..Default::default()
                }),
                ..Default::default()
            }),
            ..Default::default()
        };
        assert!(check_container(&probe("127.0.0.1"), "spec.containers[0]").is_ok());
        let err = check_container(&probe("db.local"), "spec.containers[0]").unwrap_err().to_string();
        assert!(err.starts_with("spec.containers[0].livenessProbe.httpGet.host: \"db.local\""), "{err}");
    }

    #[test]
    fn only_the_safe_sysctls_and_never_the_nodes() {
        use k8s_openapi::api::core::v1::Sysctl;
        let pod = |names: &[&str], host_network: bool| PodSpec {
            host_network: Some(host_network),
            security_context: Some(PodSecurityContext {
                sysctls: Some(
                    names.iter().map(|n| Sysctl { name: n.to_string(), value: "1".into() }).collect(),
                ),
                ..Default::default()
            }),
            ..Default::default()
        };
        let ok =
            pod_sysctls(&pod(&["net.ipv4.ip_local_port_range", "kernel/shm_rmid_forced"], false)).unwrap();
        assert_eq!(ok.len(), 2);
        assert!(ok.contains_key("kernel.shm_rmid_forced"));
        assert_eq!(
            pod_sysctls(&pod(&["net.ipv4.ip_forward"], false)).unwrap_err().to_string(),
            "spec.securityContext.sysctls[0]: forbidden sysctl: \"net.ipv4.ip_forward\" not allowlisted"
        );
        let err = pod_sysctls(&pod(&["net.ipv4.tcp_syncookies"], true)).unwrap_err().to_string();
        assert!(err.ends_with("not allowed with host net enabled"), "{err}");
        let mut own_users = pod(&["net.ipv4.tcp_syncookies"], false);
        own_users.host_users = Some(false);
        assert!(
            pod_sysctls(&own_users).unwrap_err().to_string().ends_with("not supported with hostUsers: false")
        );
    }

    #[test]
    fn run_as_non_root_gives_the_kubelets_messages() {
        let non_root = |uid: Option<i64>| {
            container(Some(SecurityContext {
                run_as_non_root: Some(true),
                run_as_user: uid,
                ..Default::default()
            }))
        };
        let pod = "web_default";
        assert_eq!(
            verify_run_as_non_root(&non_root(None), None, "", pod).unwrap_err().to_string(),
            "container has runAsNonRoot and image will run as root (pod: \"web_default\", container: c)"
        );
        assert!(verify_run_as_non_root(&non_root(None), None, "0:0", pod).is_err());
        assert!(verify_run_as_non_root(&non_root(None), None, "1000", pod).is_ok());
        assert!(verify_run_as_non_root(&non_root(Some(1000)), None, "", pod).is_ok());
        assert_eq!(
            verify_run_as_non_root(&non_root(Some(0)), None, "1000", pod).unwrap_err().to_string(),
            "container's runAsUser breaks non-root policy (pod: \"web_default\", container: c)"
        );
        assert!(
            verify_run_as_non_root(&non_root(None), None, "nobody", pod)
                .unwrap_err()
                .to_string()
                .contains("image has non-numeric user (nobody), cannot verify user is non-root")
        );
        // Only when asked, at container or pod level.
        assert!(verify_run_as_non_root(&container(None), None, "", pod).is_ok());
        let pod_sc = PodSecurityContext { run_as_non_root: Some(true), ..Default::default() };
        assert!(verify_run_as_non_root(&container(None), Some(&pod_sc), "", pod).is_err());
    }
}
