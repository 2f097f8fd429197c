//! The OCI runtime spec of one pod container (pure): namespaces (the pod's pinned netns and IPC
//! namespace, own pid/mount/uts), hostname = pod name, the pod's `/etc/hosts`, `/etc/resolv.conf`
//! and `/etc/hostname`, volume mounts, resources and securityContext.

use std::collections::{BTreeSet, HashMap};
use std::path::PathBuf;

use k8s_openapi::api::core::v1::{PodSecurityContext, SecurityContext};
use oci_spec::runtime::{
    LinuxCapabilities, LinuxCpu, LinuxMemory, LinuxNamespace, LinuxNamespaceType, LinuxResources, Mount,
    Root, Spec, User,
};

use super::resources::{CPU_PERIOD_US, CgroupLimits};
use super::security::Seccomp;
use crate::runtime::caps::DEFAULT_CAPABILITIES;
use crate::runtime::config::{SECCOMP_ANNOTATION, USER_ANNOTATION};

/// Why a spec could not be built.
#[derive(Debug, thiserror::Error)]
pub enum SpecError {
    #[error("container {container}: {what}")]
    Invalid { container: String, what: String },
}

/// A bind mount of a host path into the container.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BindMount {
    pub source: PathBuf,
    pub destination: String,
    pub read_only: bool,
}

/// Everything a container's spec is built from.
#[derive(Debug, Clone)]
pub struct SpecInput<'a> {
    pub container: &'a str,
    pub pod_name: &'a str,
    pub argv: Vec<String>,
    pub env: Vec<String>,
    pub cwd: String,
    /// The image's `User`, used when no runAsUser is set.
    pub image_user: Option<String>,
    /// The network namespace to join: the pod's, or for a hostNetwork pod the node's (`None`: the
    /// caller's, which is the node's).
    pub netns: Option<PathBuf>,
    /// The pod's IPC namespace (`None`: a new one).
    pub ipc: Option<PathBuf>,
    /// The node namespaces the pod shares (hostNetwork, hostPID, hostIPC).
    pub host: HostNamespaces,
    /// The pod's shared pid namespace (shareProcessNamespace); `None`: the container's own.
    pub pid: Option<PathBuf>,
    pub mounts: Vec<BindMount>,
    pub limits: CgroupLimits,
    pub cgroups_path: String,
    pub security: Option<&'a SecurityContext>,
    pub pod_security: Option<&'a PodSecurityContext>,
    /// The seccomp filter ([`super::security::seccomp_choice`] decides it).
    pub seccomp: Seccomp,
    /// The pod's sysctls ([`super::security::pod_sysctls`] checks them).
    pub sysctls: HashMap<String, String>,
    /// `hostUsers: false`: the first host id of the pod's range; container ids `0..65536` map to it.
    pub userns_base: Option<u32>,
    /// `procMount: Unmasked`: `/proc` without masked or read-only paths (only with a user namespace).
    pub unmasked_proc: bool,
}

/// The node's namespaces a pod shares instead of its own. A hostNetwork pod also shares the
/// node's UTS namespace (its hostname), as with CRI runtimes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct HostNamespaces {
    pub network: bool,
    pub pid: bool,
    pub ipc: bool,
}

impl HostNamespaces {
    /// `hostNetwork`, `hostPID` and `hostIPC` of a pod spec.
    pub fn of(spec: &k8s_openapi::api::core::v1::PodSpec) -> Self {
        HostNamespaces {
            network: spec.host_network == Some(true),
            pid: spec.host_pid == Some(true),
            ipc: spec.host_ipc == Some(true),
        }
    }
}

fn namespace(typ: LinuxNamespaceType, path: Option<PathBuf>) -> LinuxNamespace {
    let mut ns = LinuxNamespace::default();
    ns.set_typ(typ);
    ns.set_path(path);
    ns
}

/// Points a container spec at the pid namespace `path` (a pod's recreated shared namespace).
pub fn set_pid_namespace(spec: &mut Spec, path: PathBuf) {
    let mut linux = spec.linux().clone().unwrap_or_default();
    let mut namespaces = linux.namespaces().clone().unwrap_or_default();
    namespaces.retain(|ns| ns.typ() != LinuxNamespaceType::Pid);
    namespaces.insert(0, namespace(LinuxNamespaceType::Pid, Some(path)));
    linux.set_namespaces(Some(namespaces));
    spec.set_linux(Some(linux));
}

/// Capability names as the kernel spells them (`CAP_NET_ADMIN`).
fn cap_name(name: &str) -> String {
    let upper = name.to_ascii_uppercase();
    if upper.starts_with("CAP_") { upper } else { format!("CAP_{upper}") }
}

/// The capability set: privileged = all; else the default set, minus `drop`, plus `add`.
pub fn capabilities(security: Option<&SecurityContext>) -> BTreeSet<String> {
    if security.and_then(|s| s.privileged) == Some(true) {
        return caps::all().iter().map(|c| c.to_string()).collect();
    }
    let mut set: BTreeSet<String> = DEFAULT_CAPABILITIES.iter().map(|s| s.to_string()).collect();
    if let Some(c) = security.and_then(|s| s.capabilities.as_ref()) {
        for d in c.drop.iter().flatten() {
            if d.eq_ignore_ascii_case("ALL") {
                set.clear();
            } else {
                set.remove(&cap_name(d));
            }
        }
        for a in c.add.iter().flatten() {
            if a.eq_ignore_ascii_case("ALL") {
                set.extend(caps::all().iter().map(|c| c.to_string()));
            } else {
                set.insert(cap_name(a));
            }
        }
    }
    set
}

/// Builds the container's spec.
pub fn build(input: &SpecInput<'_>) -> Result<Spec, SpecError> {
    let invalid = |what: String| SpecError::Invalid { container: input.container.into(), what };
    if input.argv.is_empty() {
        return Err(invalid("no command: neither the pod nor the image names a program".into()));
    }
    let mut spec = Spec::default();
    let security = input.security;
    let privileged = security.and_then(|s| s.privileged) == Some(true);

    let mut root = Root::default();
    root.set_path("rootfs".into());
    root.set_readonly(Some(security.and_then(|s| s.read_only_root_filesystem) == Some(true)));
    spec.set_root(Some(root));
    // In the node's UTS namespace the node's hostname stays.
    spec.set_hostname((!input.host.network).then(|| input.pod_name.to_string()));

    let mut process = spec.process().clone().unwrap_or_default();
    process.set_terminal(Some(false));
    process.set_args(Some(input.argv.clone()));
    process.set_env(Some(input.env.clone()));
    process.set_cwd(PathBuf::from(if input.cwd.is_empty() { "/" } else { &input.cwd }));
    let run_as_user =
        security.and_then(|s| s.run_as_user).or_else(|| input.pod_security.and_then(|s| s.run_as_user));
    let run_as_group =
        security.and_then(|s| s.run_as_group).or_else(|| input.pod_security.and_then(|s| s.run_as_group));
    let mut annotations = HashMap::new();
    let mut user = User::default();
    match (run_as_user, input.image_user.as_deref().filter(|u| !u.is_empty())) {
        (Some(uid), _) => {
            let uid = u32::try_from(uid).map_err(|_| invalid(format!("runAsUser {uid} out of range")))?;
            let gid = run_as_group.and_then(|g| u32::try_from(g).ok()).unwrap_or(0);
            user.set_uid(uid);
            user.set_gid(gid);
            // Kubernetes adds the groups the image's /etc/group lists the user in.
            annotations.insert(USER_ANNOTATION.to_string(), format!("{uid}:{gid}"));
        }
        (None, Some(image_user)) => {
            let spec_user = match run_as_group {
                Some(g) => format!("{}:{g}", image_user.split(':').next().unwrap_or(image_user)),
                None => image_user.to_string(),
            };
            annotations.insert(USER_ANNOTATION.to_string(), spec_user);
        }
        (None, None) => {
            let gid = run_as_group.and_then(|g| u32::try_from(g).ok()).unwrap_or(0);
            user.set_gid(gid);
            annotations.insert(USER_ANNOTATION.to_string(), format!("0:{gid}"));
        }
    }
    let groups: Vec<u32> = input
        .pod_security
        .and_then(|s| s.supplemental_groups.as_ref())
        .into_iter()
        .flatten()
        .filter_map(|g| u32::try_from(*g).ok())
        .collect();
    if !groups.is_empty() {
        user.set_additional_gids(Some(groups));
    }
    process.set_user(user);
    let caps = capabilities(security);
    let mut capabilities = LinuxCapabilities::default();
    let set: oci_spec::runtime::Capabilities = caps
        .iter()
        .filter_map(|c| serde_json::from_value(serde_json::Value::String(c.clone())).ok())
        .collect();
    capabilities.set_bounding(Some(set.clone()));
    capabilities.set_effective(Some(set.clone()));
    capabilities.set_permitted(Some(set));
    capabilities.set_inheritable(None);
    capabilities.set_ambient(None);
    process.set_capabilities(Some(capabilities));
    let no_new_privs = !privileged && security.and_then(|s| s.allow_privilege_escalation) == Some(false);
    process.set_no_new_privileges(Some(no_new_privs));
    spec.set_process(Some(process));

    let mut mounts = spec.mounts().clone().unwrap_or_default();
    if input.userns_base.is_some() {
        // The pod's IPC namespace belongs to the host's user namespace, so container root may not
        // mount its mqueue filesystem; POSIX message queues still work through mq_open.
        mounts.retain(|m| m.typ().as_deref() != Some("mqueue"));
    }
    for m in &input.mounts {
        let mut mount = Mount::default();
        mount.set_destination(PathBuf::from(&m.destination));
        mount.set_typ(Some("bind".into()));
        mount.set_source(Some(m.source.clone()));
        let mut options = vec!["rbind".to_string(), "rprivate".to_string()];
        if m.read_only {
            options.push("ro".into());
        }
        mount.set_options(Some(options));
        mounts.push(mount);
    }
    spec.set_mounts(Some(mounts));

    let mut linux = spec.linux().clone().unwrap_or_default();
    // A namespace left out is the caller's: the node's.
    let mut namespaces = Vec::with_capacity(5);
    if !input.host.pid {
        namespaces.push(namespace(LinuxNamespaceType::Pid, input.pid.clone()));
    }
    if let Some(netns) = &input.netns {
        namespaces.push(namespace(LinuxNamespaceType::Network, Some(netns.clone())));
    }
    if !input.host.ipc {
        namespaces.push(namespace(LinuxNamespaceType::Ipc, input.ipc.clone()));
    }
    if !input.host.network {
        namespaces.push(namespace(LinuxNamespaceType::Uts, None));
    }
    namespaces.push(namespace(LinuxNamespaceType::Mount, None));
    if let Some(base) = input.userns_base {
        namespaces.push(namespace(LinuxNamespaceType::User, None));
        let map = oci_spec::runtime::LinuxIdMappingBuilder::default()
            .container_id(0u32)
            .host_id(base)
            .size(super::userns::RANGE)
            .build()
            .map_err(|e| invalid(format!("user namespace map: {e}")))?;
        linux.set_uid_mappings(Some(vec![map]));
        linux.set_gid_mappings(Some(vec![map]));
    }
    linux.set_namespaces(Some(namespaces));
    let mut resources = LinuxResources::default();
    let mut cpu = LinuxCpu::default();
    cpu.set_shares(Some(input.limits.cpu_shares));
    if let Some(quota) = input.limits.cpu_quota_us {
        cpu.set_quota(Some(quota as i64));
        cpu.set_period(Some(CPU_PERIOD_US));
    }
    resources.set_cpu(Some(cpu));
    if let Some(bytes) = input.limits.memory_bytes {
        let mut memory = LinuxMemory::default();
        memory.set_limit(Some(bytes as i64));
        resources.set_memory(Some(memory));
    }
    linux.set_resources(Some(resources));
    linux.set_cgroups_path(Some(PathBuf::from(&input.cgroups_path)));
    if privileged || input.unmasked_proc {
        linux.set_masked_paths(None);
        linux.set_readonly_paths(None);
    }
    if !input.sysctls.is_empty() {
        linux.set_sysctl(Some(input.sysctls.clone()));
    }
    match &input.seccomp {
        Seccomp::Unconfined => {}
        Seccomp::RuntimeDefault => {
            annotations.insert(SECCOMP_ANNOTATION.to_string(), "runtime/default".to_string());
        }
        Seccomp::Localhost { profile, .. } => {
            linux.set_seccomp(Some((**profile).clone()));
        }
    }
    spec.set_linux(Some(linux));
    if !annotations.is_empty() {
        spec.set_annotations(Some(annotations));
    }
    Ok(spec)
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::Capabilities;

    #[test]
    fn the_pid_namespace_can_be_repointed() {
        let mut spec = build(&input(None)).unwrap();
        set_pid_namespace(&mut spec, "/proc/42/ns/pid".into());
        let namespaces = spec.linux().as_ref().unwrap().namespaces().clone().unwrap();
        let pid: Vec<_> = namespaces.iter().filter(|ns| ns.typ() == LinuxNamespaceType::Pid).collect();
        assert_eq!(pid.len(), 1);
        assert_eq!(pid[0].path().as_deref(), Some(std::path::Path::new("/proc/42/ns/pid")));
        assert_eq!(namespaces.len(), 5, "the other namespaces are kept");
    }

    fn input<'a>(security: Option<&'a SecurityContext>) -> SpecInput<'a> {
        SpecInput {
            container: "c",
            pod_name: "web",
            argv: vec!["/bin/sh".into()],
            env: vec!["A=1".into()],
            cwd: String::new(),
            image_user: None,
            netns: Some("/run/rkube/netns/web".into()),
            ipc: Some("/run/rkube/ipc/web".into()),
            host: HostNamespaces::default(),
            pid: None,
            mounts: vec![BindMount {
                source: "/p/hosts".into(),
                destination: "/etc/hosts".into(),
                read_only: false,
            }],
            limits: CgroupLimits { cpu_shares: 512, cpu_quota_us: Some(50_000), memory_bytes: Some(1 << 20) },
            cgroups_path: "rkube/pod-web/c".into(),
            security,
            pod_security: None,
            seccomp: Seccomp::RuntimeDefault,
            sysctls: HashMap::new(),
            userns_base: None,
            unmasked_proc: false,
        }
    }

    #[test]
    fn host_namespaces_are_left_out_of_the_spec() {
        let kinds = |spec: &Spec| -> Vec<LinuxNamespaceType> {
            spec.linux().as_ref().unwrap().namespaces().as_ref().unwrap().iter().map(|n| n.typ()).collect()
        };
        let mut i = input(None);
        i.host = HostNamespaces { network: true, pid: true, ipc: true };
        i.netns = None;
        let spec = build(&i).unwrap();
        assert_eq!(kinds(&spec), vec![LinuxNamespaceType::Mount]);
        assert_eq!(spec.hostname(), &None, "the node's hostname stays");
        i.host = HostNamespaces { network: true, pid: false, ipc: false };
        i.netns = Some("/run/test/node-ns".into());
        let spec = build(&i).unwrap();
        assert_eq!(
            kinds(&spec),
            vec![
                LinuxNamespaceType::Pid,
                LinuxNamespaceType::Network,
                LinuxNamespaceType::Ipc,
                LinuxNamespaceType::Mount
            ]
        );
    }

    #[test]
    fn seccomp_goes_to_the_runtime_as_annotation_or_profile() {
        let annotation =
            |spec: &Spec| spec.annotations().as_ref().and_then(|a| a.get(SECCOMP_ANNOTATION).cloned());
        let spec = build(&input(None)).unwrap();
        assert_eq!(annotation(&spec).as_deref(), Some("runtime/default"));
        let mut i = input(None);
        i.seccomp = Seccomp::Unconfined;
        let spec = build(&i).unwrap();
        assert_eq!(annotation(&spec), None);
        assert!(spec.linux().as_ref().unwrap().seccomp().is_none());
        let profile: oci_spec::runtime::LinuxSeccomp =
            serde_json::from_str(r#"{"defaultAction": "SCMP_ACT_ALLOW"}"#).unwrap();
        i.seccomp = Seccomp::Localhost { path: "p.json".into(), profile: Box::new(profile.clone()) };
        let spec = build(&i).unwrap();
        assert_eq!(annotation(&spec), None);
        assert_eq!(spec.linux().as_ref().unwrap().seccomp().as_ref(), Some(&profile));
    }

    #[test]
    fn joins_pod_namespaces_and_sets_limits() {
        let spec = build(&input(None)).unwrap();
        assert_eq!(spec.hostname().as_deref(), Some("web"));
        let linux = spec.linux().as_ref().unwrap();
        let ns = linux.namespaces().as_ref().unwrap();
        let net = ns.iter().find(|n| n.typ() == LinuxNamespaceType::Network).unwrap();
        assert_eq!(net.path().as_deref(), Some(std::path::Path::new("/run/rkube/netns/web")));
        let r = linux.resources().as_ref().unwrap();
        assert_eq!(r.memory().unwrap().limit(), Some(1 << 20));
        assert_eq!(r.cpu().as_ref().unwrap().quota(), Some(50_000));
        assert!(
            spec.mounts()
                .as_ref()
                .unwrap()
                .iter()
                .any(|m| m.destination() == std::path::Path::new("/etc/hosts"))
        );
        assert_eq!(spec.process().as_ref().unwrap().cwd(), std::path::Path::new("/"));
    }

    #[test]
    fn security_context_maps_to_user_caps_and_readonly_root() {
        let sc = SecurityContext {
            run_as_user: Some(1000),
            run_as_group: Some(2000),
            read_only_root_filesystem: Some(true),
            allow_privilege_escalation: Some(false),
            capabilities: Some(Capabilities {
                add: Some(vec!["NET_ADMIN".into()]),
                drop: Some(vec!["KILL".into()]),
            }),
            ..Default::default()
        };
        let spec = build(&input(Some(&sc))).unwrap();
        let p = spec.process().as_ref().unwrap();
        assert_eq!((p.user().uid(), p.user().gid()), (1000, 2000));
        assert_eq!(p.no_new_privileges(), Some(true));
        let bounding = p.capabilities().as_ref().unwrap().bounding().as_ref().unwrap();
        assert_eq!(bounding.len(), DEFAULT_CAPABILITIES.len());
        assert_eq!(spec.root().as_ref().unwrap().readonly(), Some(true));
        let caps = capabilities(Some(&sc));
        assert!(caps.contains("CAP_NET_ADMIN") && !caps.contains("CAP_KILL"));
        let all = SecurityContext { privileged: Some(true), ..Default::default() };
        assert!(capabilities(Some(&all)).contains("CAP_SYS_ADMIN"));
    }

    #[test]
    fn image_user_goes_through_the_annotation_and_empty_argv_is_refused() {
        let mut i = input(None);
        i.image_user = Some("nobody".into());
        let spec = build(&i).unwrap();
        assert_eq!(
            spec.annotations().as_ref().unwrap().get(USER_ANNOTATION).map(String::as_str),
            Some("nobody")
        );
        i.argv.clear();
        assert!(build(&i).unwrap_err().to_string().contains("no command"));
    }
}
