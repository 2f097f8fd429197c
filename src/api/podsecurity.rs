//! Pod Security admission's pure core: namespace labels → [`Policy`], a pod (or pod template) →
//! the [`Violation`]s of the Pod Security Standards (the checks of Kubernetes 1.32), and the
//! messages the API server returns. No IO: the registry reads namespaces and pods and calls this.
//!
//! Every `-version` label (`latest` or `v1.x`) is accepted and shown in messages, but all versions
//! evaluate the 1.32 (latest) checks.

use super::validation::FieldError;
use k8s_openapi::api::core::v1::{ContainerPort, PodSpec, SecurityContext};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt;
use std::str::FromStr;

/// The prefix of the namespace labels (and of upstream's audit annotations).
pub const LABEL_PREFIX: &str = "pod-security.kubernetes.io/";
pub const ENFORCE_LABEL: &str = "pod-security.kubernetes.io/enforce";
pub const ENFORCE_VERSION_LABEL: &str = "pod-security.kubernetes.io/enforce-version";
pub const AUDIT_LABEL: &str = "pod-security.kubernetes.io/audit";
pub const AUDIT_VERSION_LABEL: &str = "pod-security.kubernetes.io/audit-version";
pub const WARN_LABEL: &str = "pod-security.kubernetes.io/warn";
pub const WARN_VERSION_LABEL: &str = "pod-security.kubernetes.io/warn-version";

/// At most this many existing pods are checked when a namespace's enforce level tightens.
pub const MAX_PODS_CHECKED: usize = 3000;

/// A namespace label value that is not a level or a version.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum LabelError {
    #[error("must be one of privileged, baseline, restricted")]
    Level,
    #[error("must be \"latest\" or \"v1.x\"")]
    Version,
}

/// A Pod Security Standards level, least to most restrictive.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub enum Level {
    #[default]
    Privileged,
    Baseline,
    Restricted,
}

impl Level {
    pub fn as_str(self) -> &'static str {
        match self {
            Level::Privileged => "privileged",
            Level::Baseline => "baseline",
            Level::Restricted => "restricted",
        }
    }
}

impl FromStr for Level {
    type Err = LabelError;
    fn from_str(s: &str) -> Result<Self, LabelError> {
        match s {
            "privileged" => Ok(Level::Privileged),
            "baseline" => Ok(Level::Baseline),
            "restricted" => Ok(Level::Restricted),
            _ => Err(LabelError::Level),
        }
    }
}

impl fmt::Display for Level {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A policy version: `latest` or `v1.<minor>`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Version {
    #[default]
    Latest,
    V1(u32),
}

impl FromStr for Version {
    type Err = LabelError;
    fn from_str(s: &str) -> Result<Self, LabelError> {
        if s == "latest" {
            return Ok(Version::Latest);
        }
        let minor = s.strip_prefix("v1.").ok_or(LabelError::Version)?;
        let digits_only = !minor.is_empty() && minor.bytes().all(|b| b.is_ascii_digit());
        if !digits_only || (minor.len() > 1 && minor.starts_with('0')) {
            return Err(LabelError::Version);
        }
        minor.parse().map(Version::V1).map_err(|_| LabelError::Version)
    }
}

impl fmt::Display for Version {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Version::Latest => f.write_str("latest"),
            Version::V1(minor) => write!(f, "v1.{minor}"),
        }
    }
}

/// A level at a version, shown as `restricted:latest`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct LevelVersion {
    pub level: Level,
    pub version: Version,
}

impl fmt::Display for LevelVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.level, self.version)
    }
}

/// What a namespace asks for in each mode.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Policy {
    pub enforce: LevelVersion,
    pub audit: LevelVersion,
    pub warn: LevelVersion,
}

impl Policy {
    /// The policy of a namespace with these labels, and one error per bad label (a 422 on namespace
    /// writes). No labels means privileged for all three modes. A bad enforce level fails closed
    /// (restricted), bad audit and warn levels fail open (privileged), a bad version is latest. An
    /// unset warn level follows a stricter enforce level.
    pub fn from_labels(labels: &BTreeMap<String, String>) -> (Policy, Vec<FieldError>) {
        let mut p = Policy::default();
        let mut errs = Vec::new();
        if let Some(l) = parse_label(labels, ENFORCE_LABEL, &mut errs) {
            p.enforce.level = l.unwrap_or(Level::Restricted);
        }
        if let Some(v) = parse_label(labels, ENFORCE_VERSION_LABEL, &mut errs) {
            p.enforce.version = v.unwrap_or_default();
        }
        if let Some(l) = parse_label(labels, AUDIT_LABEL, &mut errs) {
            p.audit.level = l.unwrap_or(Level::Privileged);
        }
        if let Some(v) = parse_label(labels, AUDIT_VERSION_LABEL, &mut errs) {
            p.audit.version = v.unwrap_or_default();
        }
        if let Some(l) = parse_label(labels, WARN_LABEL, &mut errs) {
            p.warn.level = l.unwrap_or(Level::Privileged);
        }
        if let Some(v) = parse_label(labels, WARN_VERSION_LABEL, &mut errs) {
            p.warn.version = v.unwrap_or_default();
        }
        let enforce_valid = labels.get(ENFORCE_LABEL).is_some_and(|l| l.parse::<Level>().is_ok());
        if !labels.contains_key(WARN_LABEL) && enforce_valid && p.enforce.level > p.warn.level {
            p.warn.level = p.enforce.level;
            if !labels.contains_key(WARN_VERSION_LABEL) {
                p.warn.version = p.enforce.version;
            }
        }
        (p, errs)
    }

    /// True when no mode checks anything.
    pub fn fully_privileged(&self) -> bool {
        [self.enforce, self.audit, self.warn].iter().all(|lv| lv.level == Level::Privileged)
    }
}

/// The value of `label` parsed: None when absent, `Some(None)` (and an error) when invalid.
fn parse_label<T: FromStr<Err = LabelError>>(
    labels: &BTreeMap<String, String>,
    label: &str,
    errs: &mut Vec<FieldError>,
) -> Option<Option<T>> {
    let value = labels.get(label)?;
    match value.parse() {
        Ok(v) => Some(Some(v)),
        Err(e) => {
            let field = format!("metadata.labels[{label}]");
            errs.push(FieldError::invalid(field, &Value::String(value.clone()), &e.to_string()));
            Some(None)
        }
    }
}

/// The labels of an object (`metadata.labels`) as a map; non-string values are skipped.
pub fn labels_of(obj: &Value) -> BTreeMap<String, String> {
    obj.pointer("/metadata/labels")
        .and_then(Value::as_object)
        .map(|m| m.iter().filter_map(|(k, v)| Some((k.clone(), v.as_str()?.to_string()))).collect())
        .unwrap_or_default()
}

/// One failed check: a short reason, and the detail naming the fields and containers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Violation {
    pub reason: String,
    pub detail: String,
}

fn violation(reason: impl Into<String>, detail: impl Into<String>) -> Option<Violation> {
    Some(Violation { reason: reason.into(), detail: detail.into() })
}

/// `reason (detail), reason (detail)`: the text after `violates PodSecurity "…": `.
pub fn describe(violations: &[Violation]) -> String {
    violations
        .iter()
        .map(|v| if v.detail.is_empty() { v.reason.clone() } else { format!("{} ({})", v.reason, v.detail) })
        .collect::<Vec<_>>()
        .join(", ")
}

/// `reason, reason`: the short form used for existing pods of a namespace.
pub fn reasons(violations: &[Violation]) -> String {
    violations.iter().map(|v| v.reason.as_str()).collect::<Vec<_>>().join(", ")
}

// ---- helpers shared by the checks ----

fn plural<'a>(n: usize, one: &'a str, many: &'a str) -> &'a str {
    if n == 1 { one } else { many }
}

/// `"a", "b"`: items in double quotes, unescaped (as upstream prints them).
fn join_quote<S: AsRef<str>>(items: impl IntoIterator<Item = S>) -> String {
    let items: Vec<String> = items.into_iter().map(|s| format!("\"{}\"", s.as_ref())).collect();
    items.join(", ")
}

/// `container "a"` or `containers "a", "b"`.
fn containers_phrase(names: &[&str]) -> String {
    format!("{} {}", plural(names.len(), "container", "containers"), join_quote(names))
}

/// One container of any kind (init, regular, ephemeral), as the checks see it.
struct Ctr<'a> {
    name: &'a str,
    sc: Option<&'a SecurityContext>,
    ports: &'a [ContainerPort],
}

/// Init containers, then containers, then ephemeral containers.
fn containers(spec: &PodSpec) -> Vec<Ctr<'_>> {
    let mut out = Vec::new();
    for c in spec.init_containers.iter().flatten().chain(&spec.containers) {
        out.push(Ctr {
            name: &c.name,
            sc: c.security_context.as_ref(),
            ports: c.ports.as_deref().unwrap_or(&[]),
        });
    }
    for c in spec.ephemeral_containers.iter().flatten() {
        out.push(Ctr {
            name: &c.name,
            sc: c.security_context.as_ref(),
            ports: c.ports.as_deref().unwrap_or(&[]),
        });
    }
    out
}

/// Names of the containers for which `bad` holds.
fn bad_containers<'a>(spec: &'a PodSpec, mut bad: impl FnMut(&Ctr<'a>) -> bool) -> Vec<&'a str> {
    containers(spec).into_iter().filter(|c| bad(c)).map(|c| c.name).collect()
}

fn is_windows(spec: &PodSpec) -> bool {
    spec.os.as_ref().is_some_and(|os| os.name == "windows")
}

/// `pod and containers "a"`-style list of who set a forbidden value.
fn setters(pod: bool, containers: &[&str]) -> Vec<String> {
    let mut out = Vec::new();
    if pod {
        out.push("pod".to_string());
    }
    if !containers.is_empty() {
        out.push(containers_phrase(containers));
    }
    out
}

// ---- baseline checks ----

const APPARMOR_ANNOTATION_PREFIX: &str = "container.apparmor.security.beta.kubernetes.io/";

/// AppArmor: profile types RuntimeDefault or Localhost; annotations `runtime/default`,
/// `localhost/*` or empty.
fn app_armor(meta: &ObjectMeta, spec: &PodSpec) -> Option<Violation> {
    let allowed = |t: &str| matches!(t, "RuntimeDefault" | "Localhost");
    let mut values = BTreeSet::new();
    let pod_profile = spec.security_context.as_ref().and_then(|s| s.app_armor_profile.as_ref());
    let pod_bad = pod_profile.is_some_and(|p| !allowed(&p.type_));
    if let Some(p) = pod_profile.filter(|_| pod_bad) {
        values.insert(p.type_.clone());
    }
    let bad = bad_containers(spec, |c| match c.sc.and_then(|s| s.app_armor_profile.as_ref()) {
        Some(p) if !allowed(&p.type_) => {
            values.insert(p.type_.clone());
            true
        }
        _ => false,
    });
    let mut who = setters(pod_bad, &bad);
    let mut values: Vec<String> = values.into_iter().collect();
    let mut annotations: Vec<String> = meta
        .annotations
        .iter()
        .flatten()
        .filter(|(k, v)| {
            k.starts_with(APPARMOR_ANNOTATION_PREFIX)
                && !(v.is_empty() || *v == "runtime/default" || v.starts_with("localhost/"))
        })
        .map(|(k, v)| format!("{k}={v:?}"))
        .collect();
    if !annotations.is_empty() {
        annotations.sort();
        who.push(plural(annotations.len(), "annotation", "annotations").to_string());
        values.extend(annotations);
    }
    if who.is_empty() {
        return None;
    }
    violation(
        plural(values.len(), "forbidden AppArmor profile", "forbidden AppArmor profiles"),
        format!("{} must not set AppArmor profile type to {}", who.join(" and "), join_quote(&values)),
    )
}

/// The capabilities a baseline container may add (Docker's default set minus NET_RAW).
const BASELINE_CAPABILITIES: &[&str] = &[
    "AUDIT_WRITE",
    "CHOWN",
    "DAC_OVERRIDE",
    "FOWNER",
    "FSETID",
    "KILL",
    "MKNOD",
    "NET_BIND_SERVICE",
    "SETFCAP",
    "SETGID",
    "SETPCAP",
    "SETUID",
    "SYS_CHROOT",
];

fn added_capabilities<'a>(c: &Ctr<'a>) -> &'a [String] {
    c.sc.and_then(|s| s.capabilities.as_ref()).and_then(|c| c.add.as_deref()).unwrap_or(&[])
}

/// Capabilities: `add` only from the baseline set.
fn capabilities_baseline(_: &ObjectMeta, spec: &PodSpec) -> Option<Violation> {
    let mut caps = BTreeSet::new();
    let bad = bad_containers(spec, |c| {
        let extra: Vec<&String> =
            added_capabilities(c).iter().filter(|a| !BASELINE_CAPABILITIES.contains(&a.as_str())).collect();
        caps.extend(extra.iter().map(|s| s.to_string()));
        !extra.is_empty()
    });
    if bad.is_empty() {
        return None;
    }
    violation(
        "non-default capabilities",
        format!(
            "{} must not include {} in securityContext.capabilities.add",
            containers_phrase(&bad),
            join_quote(&caps)
        ),
    )
}

/// Host namespaces: hostNetwork, hostPID and hostIPC unset or false.
fn host_namespaces(_: &ObjectMeta, spec: &PodSpec) -> Option<Violation> {
    let set: Vec<&str> = [
        (spec.host_network, "hostNetwork=true"),
        (spec.host_pid, "hostPID=true"),
        (spec.host_ipc, "hostIPC=true"),
    ]
    .into_iter()
    .filter(|(v, _)| *v == Some(true))
    .map(|(_, s)| s)
    .collect();
    if set.is_empty() { None } else { violation("host namespaces", set.join(", ")) }
}

/// HostPath volumes: none.
fn host_path_volumes(_: &ObjectMeta, spec: &PodSpec) -> Option<Violation> {
    let names: Vec<&str> =
        spec.volumes.iter().flatten().filter(|v| v.host_path.is_some()).map(|v| v.name.as_str()).collect();
    if names.is_empty() {
        return None;
    }
    violation(
        "hostPath volumes",
        format!("{} {}", plural(names.len(), "volume", "volumes"), join_quote(&names)),
    )
}

/// Host ports: unset or 0.
fn host_ports(_: &ObjectMeta, spec: &PodSpec) -> Option<Violation> {
    let mut ports = BTreeSet::new();
    let bad = bad_containers(spec, |c| {
        let used: Vec<String> =
            c.ports.iter().filter_map(|p| p.host_port).filter(|p| *p != 0).map(|p| p.to_string()).collect();
        let any = !used.is_empty();
        ports.extend(used);
        any
    });
    if bad.is_empty() {
        return None;
    }
    violation(
        "hostPort",
        format!(
            "{} {} {} {}",
            containers_phrase(&bad),
            plural(bad.len(), "uses", "use"),
            plural(ports.len(), "hostPort", "hostPorts"),
            ports.into_iter().collect::<Vec<_>>().join(", ")
        ),
    )
}

/// Privileged containers: none.
fn privileged(_: &ObjectMeta, spec: &PodSpec) -> Option<Violation> {
    let bad = bad_containers(spec, |c| c.sc.and_then(|s| s.privileged) == Some(true));
    if bad.is_empty() {
        return None;
    }
    violation(
        "privileged",
        format!("{} must not set securityContext.privileged=true", containers_phrase(&bad)),
    )
}

/// /proc mount type: unset or Default.
fn proc_mount(_: &ObjectMeta, spec: &PodSpec) -> Option<Violation> {
    let mut types = BTreeSet::new();
    let bad = bad_containers(spec, |c| match c.sc.and_then(|s| s.proc_mount.as_deref()) {
        Some(t) if t != "Default" => {
            types.insert(t.to_string());
            true
        }
        _ => false,
    });
    if bad.is_empty() {
        return None;
    }
    violation(
        "procMount",
        format!(
            "{} must not set securityContext.procMount to {}",
            containers_phrase(&bad),
            join_quote(&types)
        ),
    )
}

const SELINUX_TYPES: &[&str] =
    &["", "container_t", "container_init_t", "container_kvm_t", "container_engine_t"];

/// SELinux: type from the container types, user and role unset.
fn se_linux_options(_: &ObjectMeta, spec: &PodSpec) -> Option<Violation> {
    let (mut types, mut user, mut role) = (BTreeSet::new(), false, false);
    let mut bad_opts = |o: &k8s_openapi::api::core::v1::SELinuxOptions| {
        let t = o.type_.as_deref().unwrap_or("");
        let mut bad = false;
        if !SELINUX_TYPES.contains(&t) {
            types.insert(t.to_string());
            bad = true;
        }
        if o.user.as_deref().is_some_and(|u| !u.is_empty()) {
            (user, bad) = (true, true);
        }
        if o.role.as_deref().is_some_and(|r| !r.is_empty()) {
            (role, bad) = (true, true);
        }
        bad
    };
    let pod_bad =
        spec.security_context.as_ref().and_then(|s| s.se_linux_options.as_ref()).is_some_and(&mut bad_opts);
    let bad =
        bad_containers(spec, |c| c.sc.and_then(|s| s.se_linux_options.as_ref()).is_some_and(&mut bad_opts));
    let who = setters(pod_bad, &bad);
    if who.is_empty() {
        return None;
    }
    let mut data = Vec::new();
    if !types.is_empty() {
        data.push(format!("{} {}", plural(types.len(), "type", "types"), join_quote(&types)));
    }
    if user {
        data.push("user may not be set".to_string());
    }
    if role {
        data.push("role may not be set".to_string());
    }
    violation(
        "seLinuxOptions",
        format!("{} set forbidden securityContext.seLinuxOptions: {}", who.join(" and "), data.join("; ")),
    )
}

fn valid_seccomp(t: &str) -> bool {
    matches!(t, "RuntimeDefault" | "Localhost")
}

/// Seccomp who-set-what for both levels: (pod set a bad type, pod set a good type, containers
/// that set a bad type, containers that set none, the bad types).
struct SeccompUse<'a> {
    pod_bad: bool,
    pod_good: bool,
    bad: Vec<&'a str>,
    unset: Vec<&'a str>,
    values: BTreeSet<String>,
}

fn seccomp_use(spec: &PodSpec) -> SeccompUse<'_> {
    let mut values = BTreeSet::new();
    let pod = spec.security_context.as_ref().and_then(|s| s.seccomp_profile.as_ref());
    let pod_bad = pod.is_some_and(|p| !valid_seccomp(&p.type_));
    if let Some(p) = pod.filter(|_| pod_bad) {
        values.insert(p.type_.clone());
    }
    let (mut bad, mut unset) = (Vec::new(), Vec::new());
    for c in containers(spec) {
        match c.sc.and_then(|s| s.seccomp_profile.as_ref()) {
            Some(p) if !valid_seccomp(&p.type_) => {
                values.insert(p.type_.clone());
                bad.push(c.name);
            }
            Some(_) => {}
            None => unset.push(c.name),
        }
    }
    SeccompUse { pod_bad, pod_good: pod.is_some() && !pod_bad, bad, unset, values }
}

fn seccomp_forbidden_types(u: &SeccompUse<'_>) -> Option<Violation> {
    let who = setters(u.pod_bad, &u.bad);
    if who.is_empty() {
        return None;
    }
    violation(
        "seccompProfile",
        format!(
            "{} must not set securityContext.seccompProfile.type to {}",
            who.join(" and "),
            join_quote(&u.values)
        ),
    )
}

/// Seccomp: type RuntimeDefault, Localhost or unset (Unconfined is forbidden).
fn seccomp_baseline(_: &ObjectMeta, spec: &PodSpec) -> Option<Violation> {
    seccomp_forbidden_types(&seccomp_use(spec))
}

/// The sysctls any pod may set (the 1.32 safe set).
const SAFE_SYSCTLS: &[&str] = &[
    "kernel.shm_rmid_forced",
    "net.ipv4.ip_local_port_range",
    "net.ipv4.tcp_syncookies",
    "net.ipv4.ping_group_range",
    "net.ipv4.ip_unprivileged_port_start",
    "net.ipv4.ip_local_reserved_ports",
    "net.ipv4.tcp_keepalive_time",
    "net.ipv4.tcp_fin_timeout",
    "net.ipv4.tcp_keepalive_intvl",
    "net.ipv4.tcp_keepalive_probes",
    "net.ipv4.tcp_rmem",
    "net.ipv4.tcp_wmem",
];

/// Sysctls: only the safe set.
fn sysctls(_: &ObjectMeta, spec: &PodSpec) -> Option<Violation> {
    let bad: Vec<&str> = spec
        .security_context
        .iter()
        .flat_map(|s| s.sysctls.iter().flatten())
        .map(|s| s.name.as_str())
        .filter(|n| !SAFE_SYSCTLS.contains(n))
        .collect();
    if bad.is_empty() { None } else { violation("forbidden sysctls", bad.join(", ")) }
}

/// Windows HostProcess: never.
fn windows_host_process(_: &ObjectMeta, spec: &PodSpec) -> Option<Violation> {
    let pod =
        spec.security_context.as_ref().and_then(|s| s.windows_options.as_ref()).and_then(|w| w.host_process)
            == Some(true);
    let bad = bad_containers(spec, |c| {
        c.sc.and_then(|s| s.windows_options.as_ref()).and_then(|w| w.host_process) == Some(true)
    });
    let who = setters(pod, &bad);
    if who.is_empty() {
        return None;
    }
    violation(
        "hostProcess",
        format!("{} must not set securityContext.windowsOptions.hostProcess=true", who.join(" and ")),
    )
}

// ---- restricted checks ----

/// Privilege escalation: every container sets allowPrivilegeEscalation=false (not on Windows).
fn allow_privilege_escalation(_: &ObjectMeta, spec: &PodSpec) -> Option<Violation> {
    if is_windows(spec) {
        return None;
    }
    let bad = bad_containers(spec, |c| c.sc.and_then(|s| s.allow_privilege_escalation) != Some(false));
    if bad.is_empty() {
        return None;
    }
    violation(
        "allowPrivilegeEscalation != false",
        format!("{} must set securityContext.allowPrivilegeEscalation=false", containers_phrase(&bad)),
    )
}

/// Capabilities: drop ALL, add at most NET_BIND_SERVICE (not on Windows).
fn capabilities_restricted(_: &ObjectMeta, spec: &PodSpec) -> Option<Violation> {
    if is_windows(spec) {
        return None;
    }
    let no_drop_all = bad_containers(spec, |c| {
        let drop = c.sc.and_then(|s| s.capabilities.as_ref()).and_then(|c| c.drop.as_deref()).unwrap_or(&[]);
        !drop.iter().any(|d| d == "ALL")
    });
    let mut caps = BTreeSet::new();
    let adding = bad_containers(spec, |c| {
        let extra: Vec<&String> = added_capabilities(c).iter().filter(|a| *a != "NET_BIND_SERVICE").collect();
        caps.extend(extra.iter().map(|s| s.to_string()));
        !extra.is_empty()
    });
    let mut details = Vec::new();
    if !no_drop_all.is_empty() {
        details.push(format!(
            "{} must set securityContext.capabilities.drop=[\"ALL\"]",
            containers_phrase(&no_drop_all)
        ));
    }
    if !adding.is_empty() {
        details.push(format!(
            "{} must not include {} in securityContext.capabilities.add",
            containers_phrase(&adding),
            join_quote(&caps)
        ));
    }
    if details.is_empty() { None } else { violation("unrestricted capabilities", details.join("; ")) }
}

/// The restricted type name of a volume, or None for the allowed types.
fn restricted_volume_type(v: &k8s_openapi::api::core::v1::Volume) -> Option<&'static str> {
    let allowed = v.config_map.is_some()
        || v.csi.is_some()
        || v.downward_api.is_some()
        || v.empty_dir.is_some()
        || v.ephemeral.is_some()
        || v.persistent_volume_claim.is_some()
        || v.projected.is_some()
        || v.secret.is_some();
    if allowed {
        return None;
    }
    let named: [(bool, &'static str); 21] = [
        (v.host_path.is_some(), "hostPath"),
        (v.gce_persistent_disk.is_some(), "gcePersistentDisk"),
        (v.aws_elastic_block_store.is_some(), "awsElasticBlockStore"),
        (v.git_repo.is_some(), "gitRepo"),
        (v.nfs.is_some(), "nfs"),
        (v.iscsi.is_some(), "iscsi"),
        (v.glusterfs.is_some(), "glusterfs"),
        (v.rbd.is_some(), "rbd"),
        (v.flex_volume.is_some(), "flexVolume"),
        (v.cinder.is_some(), "cinder"),
        (v.cephfs.is_some(), "cephfs"),
        (v.flocker.is_some(), "flocker"),
        (v.fc.is_some(), "fc"),
        (v.azure_file.is_some(), "azureFile"),
        (v.vsphere_volume.is_some(), "vsphereVolume"),
        (v.quobyte.is_some(), "quobyte"),
        (v.azure_disk.is_some(), "azureDisk"),
        (v.photon_persistent_disk.is_some(), "photonPersistentDisk"),
        (v.portworx_volume.is_some(), "portworxVolume"),
        (v.scale_io.is_some(), "scaleIO"),
        (v.storageos.is_some(), "storageos"),
    ];
    // 1.32 does not yet allow image volumes; like every unlisted type they show as "unknown".
    Some(named.iter().find(|(set, _)| *set).map_or("unknown", |(_, name)| name))
}

/// Volume types: only configMap, csi, downwardAPI, emptyDir, ephemeral, persistentVolumeClaim,
/// projected and secret.
fn restricted_volumes(_: &ObjectMeta, spec: &PodSpec) -> Option<Violation> {
    let mut names = Vec::new();
    let mut types = BTreeSet::new();
    for v in spec.volumes.iter().flatten() {
        if let Some(t) = restricted_volume_type(v) {
            names.push(v.name.as_str());
            types.insert(t);
        }
    }
    if names.is_empty() {
        return None;
    }
    violation(
        "restricted volume types",
        format!(
            "{} {} {} {} {}",
            plural(names.len(), "volume", "volumes"),
            join_quote(&names),
            plural(names.len(), "uses", "use"),
            plural(types.len(), "restricted volume type", "restricted volume types"),
            join_quote(&types)
        ),
    )
}

/// runAsNonRoot: true on the pod or on every container, and false nowhere.
fn run_as_non_root(_: &ObjectMeta, spec: &PodSpec) -> Option<Violation> {
    let pod = spec.security_context.as_ref().and_then(|s| s.run_as_non_root);
    let explicit = bad_containers(spec, |c| c.sc.and_then(|s| s.run_as_non_root) == Some(false));
    let who = setters(pod == Some(false), &explicit);
    if !who.is_empty() {
        return violation(
            "runAsNonRoot != true",
            format!("{} must not set securityContext.runAsNonRoot=false", who.join(" and ")),
        );
    }
    let implicit =
        bad_containers(spec, |c| c.sc.and_then(|s| s.run_as_non_root).is_none() && pod != Some(true));
    if implicit.is_empty() {
        return None;
    }
    violation(
        "runAsNonRoot != true",
        format!("pod or {} must set securityContext.runAsNonRoot=true", containers_phrase(&implicit)),
    )
}

/// runAsUser: never 0.
fn run_as_user(_: &ObjectMeta, spec: &PodSpec) -> Option<Violation> {
    let pod = spec.security_context.as_ref().and_then(|s| s.run_as_user) == Some(0);
    let bad = bad_containers(spec, |c| c.sc.and_then(|s| s.run_as_user) == Some(0));
    let who = setters(pod, &bad);
    if who.is_empty() {
        return None;
    }
    violation("runAsUser=0", format!("{} must not set runAsUser=0", who.join(" and ")))
}

/// Seccomp: RuntimeDefault or Localhost set on the pod or on every container (not on Windows).
fn seccomp_restricted(_: &ObjectMeta, spec: &PodSpec) -> Option<Violation> {
    if is_windows(spec) {
        return None;
    }
    let u = seccomp_use(spec);
    if let Some(v) = seccomp_forbidden_types(&u) {
        return Some(v);
    }
    if u.pod_good || u.unset.is_empty() {
        return None;
    }
    violation(
        "seccompProfile",
        format!(
            "pod or {} must set securityContext.seccompProfile.type to \"RuntimeDefault\" or \"Localhost\"",
            containers_phrase(&u.unset)
        ),
    )
}

type Check = fn(&ObjectMeta, &PodSpec) -> Option<Violation>;

/// Baseline checks in upstream's order (sorted by check id), which fixes the message order.
const BASELINE: &[Check] = &[
    app_armor,
    capabilities_baseline,
    host_namespaces,
    host_path_volumes,
    host_ports,
    privileged,
    proc_mount,
    se_linux_options,
    seccomp_baseline,
    sysctls,
    windows_host_process,
];

/// Restricted: the baseline checks the restricted ones do not replace (capabilities, hostPath
/// volumes, seccomp), then the restricted checks, each group sorted by check id.
const RESTRICTED: &[Check] = &[
    app_armor,
    host_namespaces,
    host_ports,
    privileged,
    proc_mount,
    se_linux_options,
    sysctls,
    windows_host_process,
    allow_privilege_escalation,
    capabilities_restricted,
    restricted_volumes,
    run_as_non_root,
    run_as_user,
    seccomp_restricted,
];

/// Every violation of `level` by a pod (or pod template) with this metadata and spec.
pub fn check_pod(level: Level, meta: &ObjectMeta, spec: &PodSpec) -> Vec<Violation> {
    let checks = match level {
        Level::Privileged => return Vec::new(),
        Level::Baseline => BASELINE,
        Level::Restricted => RESTRICTED,
    };
    checks.iter().filter_map(|check| check(meta, spec)).collect()
}

/// The outcome of admitting one pod or pod template under a namespace's policy.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Decision {
    /// Enforce refused it: `violates PodSecurity "restricted:latest": …`.
    pub denied: Option<String>,
    /// A warning for the client: `would violate PodSecurity "baseline:latest": …` (never set
    /// together with `denied`).
    pub warning: Option<String>,
    /// The audit-mode violation, in the same form as the warning.
    pub audit: Option<String>,
}

/// Evaluates enforce (only when `enforce`: Pods, not templates), audit and warn.
pub fn evaluate(policy: &Policy, meta: &ObjectMeta, spec: &PodSpec, enforce: bool) -> Decision {
    let mut cache: HashMap<Level, Vec<Violation>> = HashMap::new();
    let mut check =
        |lv: LevelVersion| cache.entry(lv.level).or_insert_with(|| check_pod(lv.level, meta, spec)).clone();
    let mut d = Decision::default();
    if enforce {
        let v = check(policy.enforce);
        if !v.is_empty() {
            d.denied = Some(format!("violates PodSecurity \"{}\": {}", policy.enforce, describe(&v)));
        }
    }
    let would = |lv: LevelVersion, v: Vec<Violation>| {
        (!v.is_empty()).then(|| format!("would violate PodSecurity \"{lv}\": {}", describe(&v)))
    };
    d.audit = would(policy.audit, check(policy.audit));
    if d.denied.is_none() {
        d.warning = would(policy.warn, check(policy.warn));
    }
    d
}

/// Where a kind keeps its pod template (a JSON pointer), for the workload kinds upstream checks.
pub fn template_pointer(kind: &str) -> Option<&'static str> {
    match kind {
        "Deployment" | "ReplicaSet" | "DaemonSet" | "StatefulSet" | "Job" | "ReplicationController" => {
            Some("/spec/template")
        }
        "CronJob" => Some("/spec/jobTemplate/spec/template"),
        "PodTemplate" => Some("/template"),
        _ => None,
    }
}

/// The metadata and spec of a Pod or a pod template (`{metadata, spec}`); None when there is no
/// spec or it does not decode.
pub fn pod_parts(obj: &Value) -> Option<(ObjectMeta, PodSpec)> {
    let spec: PodSpec = serde_json::from_value(obj.get("spec")?.clone()).ok()?;
    let meta = match obj.get("metadata") {
        Some(m) => serde_json::from_value(m.clone()).ok()?,
        None => ObjectMeta::default(),
    };
    Some((meta, spec))
}

/// Whether a Pod update must be admitted again: upstream re-checks only when containers are added
/// or removed or an image changes.
pub fn significant_pod_update(new: &PodSpec, old: &PodSpec) -> bool {
    let images = |cs: &[k8s_openapi::api::core::v1::Container]| -> Vec<Option<String>> {
        cs.iter().map(|c| c.image.clone()).collect()
    };
    let (new_init, old_init) =
        (new.init_containers.as_deref().unwrap_or(&[]), old.init_containers.as_deref().unwrap_or(&[]));
    if images(&new.containers) != images(&old.containers) || images(new_init) != images(old_init) {
        return true;
    }
    new.ephemeral_containers
        .iter()
        .flatten()
        .any(|c| !old.ephemeral_containers.iter().flatten().any(|o| o.name == c.name && o.image == c.image))
}

/// Whether a namespace whose policy goes from `old` to `new` must have its existing pods checked:
/// only when enforce changes to a non-privileged level that is stricter or at another version.
pub fn enforce_tightened(old: &Policy, new: &Policy) -> bool {
    let (o, n) = (old.enforce, new.enforce);
    !(n == o || n.level == Level::Privileged || (n.version == o.version && n.level <= o.level))
}

/// An existing pod of a namespace, for [`existing_pod_warnings`].
#[derive(Debug, Clone)]
pub struct ExistingPod {
    pub meta: ObjectMeta,
    pub spec: PodSpec,
}

impl ExistingPod {
    fn controller_uid(&self) -> Option<&str> {
        self.meta
            .owner_references
            .iter()
            .flatten()
            .find(|r| r.controller == Some(true))
            .map(|r| r.uid.as_str())
    }
}

/// The warnings for a namespace update that tightens enforce to `enforce`: a headline naming the
/// namespace and level, then one line per distinct set of reasons, `pod (and N other pods): reasons`.
/// Pods owned by a controller already checked go last; at most [`MAX_PODS_CHECKED`] are checked.
pub fn existing_pod_warnings(namespace: &str, enforce: LevelVersion, pods: &[ExistingPod]) -> Vec<String> {
    let mut first = Vec::new();
    let mut repeats = Vec::new();
    let mut seen = BTreeSet::new();
    for p in pods {
        match p.controller_uid() {
            Some(uid) if !seen.insert(uid) => repeats.push(p),
            _ => first.push(p),
        }
    }
    first.extend(repeats);
    let total = first.len();
    first.truncate(MAX_PODS_CHECKED);
    // reasons -> (alphabetically first pod name, count), in first-seen order.
    let mut order: Vec<String> = Vec::new();
    let mut counts: HashMap<String, (String, usize)> = HashMap::new();
    for p in &first {
        let v = check_pod(enforce.level, &p.meta, &p.spec);
        if v.is_empty() {
            continue;
        }
        let key = reasons(&v);
        let name = p.meta.name.clone().unwrap_or_default();
        match counts.get_mut(&key) {
            Some((n, c)) => {
                *c += 1;
                if name < *n {
                    *n = name;
                }
            }
            None => {
                order.push(key.clone());
                counts.insert(key, (name, 1));
            }
        }
    }
    let mut out = Vec::new();
    if first.len() < total {
        out.push(format!(
            "new PodSecurity enforce level only checked against the first {} of {total} existing pods",
            first.len()
        ));
    }
    if order.is_empty() {
        return out;
    }
    out.push(format!(
        "existing pods in namespace \"{namespace}\" violate the new PodSecurity enforce level \"{enforce}\""
    ));
    let mut lines: Vec<String> = order
        .into_iter()
        .map(|key| {
            let (name, count) = &counts[&key];
            match count {
                1 => format!("{name}: {key}"),
                2 => format!("{name} (and 1 other pod): {key}"),
                n => format!("{name} (and {} other pods): {key}", n - 1),
            }
        })
        .collect();
    lines.sort();
    out.extend(lines);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn pod(v: Value) -> (ObjectMeta, PodSpec) {
        pod_parts(&v).expect("pod decodes")
    }

    /// A pod that passes restricted; tests break one field at a time.
    fn restricted_ok() -> Value {
        json!({"metadata":{"name":"p"},"spec":{
            "securityContext":{"runAsNonRoot":true,"seccompProfile":{"type":"RuntimeDefault"}},
            "containers":[{"name":"c","image":"busybox","securityContext":{
                "allowPrivilegeEscalation":false,"capabilities":{"drop":["ALL"]}}}]}})
    }

    fn with(mut base: Value, pointer: &str, value: Value) -> Value {
        let (parent, key) = pointer.rsplit_once('/').unwrap();
        let mut cur = &mut base;
        for seg in parent.split('/').skip(1) {
            cur = match seg.parse::<usize>() {
                Ok(i) => &mut cur[i],
                Err(_) => {
                    if cur.get(seg).is_none() {
                        cur[seg] = json!({});
                    }
                    &mut cur[seg]
                }
            };
        }
        cur[key] = value;
        base
    }

    /// The violations of `level` as `reason (detail)` text.
    fn run(level: Level, v: Value) -> String {
        let (m, s) = pod(v);
        describe(&check_pod(level, &m, &s))
    }

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    #[test]
    fn compliant_pods_pass() {
        assert_eq!(run(Level::Restricted, restricted_ok()), "");
        let plain = json!({"spec":{"containers":[{"name":"c","image":"nginx"}]}});
        assert_eq!(run(Level::Baseline, plain.clone()), "");
        assert_eq!(run(Level::Privileged, with(plain, "/spec/hostNetwork", json!(true))), "");
    }

    #[test]
    fn restricted_message_matches_upstream() {
        let plain = json!({"spec":{"containers":[{"name":"nginx","image":"nginx"}]}});
        assert_eq!(
            run(Level::Restricted, plain),
            "allowPrivilegeEscalation != false (container \"nginx\" must set securityContext.allowPrivilegeEscalation=false), \
             unrestricted capabilities (container \"nginx\" must set securityContext.capabilities.drop=[\"ALL\"]), \
             runAsNonRoot != true (pod or container \"nginx\" must set securityContext.runAsNonRoot=true), \
             seccompProfile (pod or container \"nginx\" must set securityContext.seccompProfile.type to \"RuntimeDefault\" or \"Localhost\")"
        );
    }

    #[test]
    fn host_process() {
        let v = with(restricted_ok(), "/spec/securityContext/windowsOptions", json!({"hostProcess":true}));
        let v = with(v, "/spec/containers/0/securityContext/windowsOptions", json!({"hostProcess":true}));
        assert_eq!(
            run(Level::Baseline, v),
            "hostProcess (pod and container \"c\" must not set securityContext.windowsOptions.hostProcess=true)"
        );
    }

    #[test]
    fn host_namespaces_listed_in_order() {
        let v = with(restricted_ok(), "/spec/hostIPC", json!(true));
        let v = with(v, "/spec/hostNetwork", json!(true));
        let v = with(v, "/spec/hostPID", json!(false));
        assert_eq!(run(Level::Baseline, v.clone()), "host namespaces (hostNetwork=true, hostIPC=true)");
        assert_eq!(run(Level::Restricted, v), "host namespaces (hostNetwork=true, hostIPC=true)");
    }

    #[test]
    fn privileged_containers_include_init_containers() {
        let v = with(restricted_ok(), "/spec/containers/0/securityContext/privileged", json!(true));
        let v = with(
            v,
            "/spec/initContainers",
            json!([{"name":"i","image":"x","securityContext":{"privileged":true}}]),
        );
        assert!(run(Level::Baseline, v).starts_with(
            "privileged (containers \"i\", \"c\" must not set securityContext.privileged=true)"
        ));
    }

    #[test]
    fn baseline_capabilities() {
        let v = with(
            restricted_ok(),
            "/spec/containers/0/securityContext/capabilities/add",
            json!(["SYS_ADMIN", "CHOWN", "NET_RAW"]),
        );
        assert_eq!(
            run(Level::Baseline, v),
            "non-default capabilities (container \"c\" must not include \"NET_RAW\", \"SYS_ADMIN\" in securityContext.capabilities.add)"
        );
        let ok = with(
            restricted_ok(),
            "/spec/containers/0/securityContext/capabilities/add",
            json!(["CHOWN", "KILL"]),
        );
        assert_eq!(run(Level::Baseline, ok), "");
    }

    #[test]
    fn restricted_capabilities() {
        let v = with(
            restricted_ok(),
            "/spec/containers/0/securityContext/capabilities",
            json!({"add":["CHOWN","NET_BIND_SERVICE"]}),
        );
        assert_eq!(
            run(Level::Restricted, v),
            "unrestricted capabilities (container \"c\" must set securityContext.capabilities.drop=[\"ALL\"]; \
             container \"c\" must not include \"CHOWN\" in securityContext.capabilities.add)"
        );
        let ok = with(
            restricted_ok(),
            "/spec/containers/0/securityContext/capabilities/add",
            json!(["NET_BIND_SERVICE"]),
        );
        assert_eq!(run(Level::Restricted, ok), "");
    }

    #[test]
    fn host_path_volumes_and_restricted_volume_types() {
        let v = with(
            restricted_ok(),
            "/spec/volumes",
            json!([{"name":"h","hostPath":{"path":"/"}},{"name":"e","emptyDir":{}},{"name":"n","nfs":{"server":"s","path":"/"}}]),
        );
        assert_eq!(run(Level::Baseline, v.clone()), "hostPath volumes (volume \"h\")");
        // Restricted replaces the hostPath check with the volume type allowlist.
        assert_eq!(
            run(Level::Restricted, v),
            "restricted volume types (volumes \"h\", \"n\" use restricted volume types \"hostPath\", \"nfs\")"
        );
        let allowed = with(
            restricted_ok(),
            "/spec/volumes",
            json!([{"name":"a","configMap":{"name":"x"}},{"name":"b","secret":{"secretName":"x"}},
                {"name":"c","projected":{"sources":[]}},{"name":"d","downwardAPI":{}},
                {"name":"e","persistentVolumeClaim":{"claimName":"x"}},{"name":"f","csi":{"driver":"d"}}]),
        );
        assert_eq!(run(Level::Restricted, allowed), "");
    }

    #[test]
    fn host_ports() {
        let v = with(
            restricted_ok(),
            "/spec/containers/0/ports",
            json!([{"containerPort":80,"hostPort":8080},{"containerPort":81,"hostPort":0}]),
        );
        assert_eq!(run(Level::Baseline, v), "hostPort (container \"c\" uses hostPort 8080)");
        let v = with(
            restricted_ok(),
            "/spec/containers/0/ports",
            json!([{"containerPort":80,"hostPort":80},{"containerPort":9,"hostPort":9}]),
        );
        let v = with(
            v,
            "/spec/initContainers",
            json!([{"name":"i","image":"x","ports":[{"containerPort":1,"hostPort":1}]}]),
        );
        assert_eq!(run(Level::Baseline, v), "hostPort (containers \"i\", \"c\" use hostPorts 1, 80, 9)");
    }

    #[test]
    fn app_armor() {
        let v = with(restricted_ok(), "/spec/securityContext/appArmorProfile", json!({"type":"Unconfined"}));
        let v = with(
            v,
            "/metadata/annotations",
            json!({
            "container.apparmor.security.beta.kubernetes.io/c": "unconfined",
            "container.apparmor.security.beta.kubernetes.io/d": "localhost/x"}),
        );
        assert_eq!(
            run(Level::Baseline, v),
            "forbidden AppArmor profiles (pod and annotation must not set AppArmor profile type to \
             \"Unconfined\", \"container.apparmor.security.beta.kubernetes.io/c=\"unconfined\"\")"
        );
        let ok = with(
            restricted_ok(),
            "/spec/containers/0/securityContext/appArmorProfile",
            json!({"type":"RuntimeDefault"}),
        );
        assert_eq!(run(Level::Baseline, ok), "");
    }

    #[test]
    fn se_linux() {
        let v =
            with(restricted_ok(), "/spec/securityContext/seLinuxOptions", json!({"type":"spc_t","user":"u"}));
        let v = with(
            v,
            "/spec/containers/0/securityContext/seLinuxOptions",
            json!({"role":"r","type":"container_t"}),
        );
        assert_eq!(
            run(Level::Baseline, v),
            "seLinuxOptions (pod and container \"c\" set forbidden securityContext.seLinuxOptions: \
             type \"spc_t\"; user may not be set; role may not be set)"
        );
        let ok = with(
            restricted_ok(),
            "/spec/securityContext/seLinuxOptions",
            json!({"type":"container_engine_t","level":"s0"}),
        );
        assert_eq!(run(Level::Baseline, ok), "");
    }

    #[test]
    fn proc_mount() {
        let v = with(restricted_ok(), "/spec/containers/0/securityContext/procMount", json!("Unmasked"));
        assert_eq!(
            run(Level::Baseline, v),
            "procMount (container \"c\" must not set securityContext.procMount to \"Unmasked\")"
        );
        let ok = with(restricted_ok(), "/spec/containers/0/securityContext/procMount", json!("Default"));
        assert_eq!(run(Level::Baseline, ok), "");
    }

    #[test]
    fn seccomp() {
        let v = with(
            restricted_ok(),
            "/spec/containers/0/securityContext/seccompProfile",
            json!({"type":"Unconfined"}),
        );
        let want = "seccompProfile (container \"c\" must not set securityContext.seccompProfile.type to \"Unconfined\")";
        assert_eq!(run(Level::Baseline, v.clone()), want);
        assert_eq!(run(Level::Restricted, v), want);
        // Baseline accepts an unset profile; restricted needs one on the pod or every container.
        let unset = json!({"spec":{"securityContext":{"runAsNonRoot":true},"containers":[
            {"name":"a","image":"x","securityContext":{"allowPrivilegeEscalation":false,"capabilities":{"drop":["ALL"]},"seccompProfile":{"type":"Localhost","localhostProfile":"p"}}},
            {"name":"b","image":"x","securityContext":{"allowPrivilegeEscalation":false,"capabilities":{"drop":["ALL"]}}}]}});
        assert_eq!(run(Level::Baseline, unset.clone()), "");
        assert_eq!(
            run(Level::Restricted, unset),
            "seccompProfile (pod or container \"b\" must set securityContext.seccompProfile.type to \"RuntimeDefault\" or \"Localhost\")"
        );
    }

    #[test]
    fn sysctls() {
        let v = with(
            restricted_ok(),
            "/spec/securityContext/sysctls",
            json!([{"name":"net.ipv4.tcp_rmem","value":"1"},{"name":"kernel.msgmax","value":"1"},{"name":"net.core.somaxconn","value":"1"}]),
        );
        assert_eq!(run(Level::Baseline, v), "forbidden sysctls (kernel.msgmax, net.core.somaxconn)");
    }

    #[test]
    fn allow_privilege_escalation() {
        let v =
            with(restricted_ok(), "/spec/containers/0/securityContext/allowPrivilegeEscalation", json!(true));
        assert_eq!(
            run(Level::Restricted, v.clone()),
            "allowPrivilegeEscalation != false (container \"c\" must set securityContext.allowPrivilegeEscalation=false)"
        );
        assert_eq!(run(Level::Baseline, v), "");
    }

    #[test]
    fn run_as_non_root() {
        let v = with(restricted_ok(), "/spec/containers/0/securityContext/runAsNonRoot", json!(false));
        assert_eq!(
            run(Level::Restricted, v),
            "runAsNonRoot != true (container \"c\" must not set securityContext.runAsNonRoot=false)"
        );
        // Set on every container instead of the pod.
        let v = with(restricted_ok(), "/spec/securityContext/runAsNonRoot", json!(null));
        let v = with(v, "/spec/containers/0/securityContext/runAsNonRoot", json!(true));
        assert_eq!(run(Level::Restricted, v), "");
    }

    #[test]
    fn run_as_user() {
        let v = with(restricted_ok(), "/spec/securityContext/runAsUser", json!(0));
        let v = with(v, "/spec/containers/0/securityContext/runAsUser", json!(0));
        assert_eq!(
            run(Level::Restricted, v),
            "runAsUser=0 (pod and container \"c\" must not set runAsUser=0)"
        );
        let ok = with(restricted_ok(), "/spec/securityContext/runAsUser", json!(1000));
        assert_eq!(run(Level::Restricted, ok), "");
    }

    #[test]
    fn windows_pods_skip_linux_only_restricted_checks() {
        let v = json!({"spec":{"os":{"name":"windows"},"securityContext":{"runAsNonRoot":true},
            "containers":[{"name":"c","image":"x"}]}});
        assert_eq!(run(Level::Restricted, v), "");
    }

    #[test]
    fn ephemeral_containers_are_checked() {
        let v = with(
            restricted_ok(),
            "/spec/ephemeralContainers",
            json!([{"name":"dbg","image":"x","securityContext":{"privileged":true}}]),
        );
        assert!(
            run(Level::Baseline, v)
                .contains("container \"dbg\" must not set securityContext.privileged=true")
        );
    }

    #[test]
    fn labels_to_policy() {
        let (p, errs) = Policy::from_labels(&BTreeMap::new());
        assert!(errs.is_empty() && p.fully_privileged());
        let (p, errs) =
            Policy::from_labels(&labels(&[(ENFORCE_LABEL, "restricted"), (ENFORCE_VERSION_LABEL, "v1.30")]));
        assert!(errs.is_empty());
        assert_eq!(p.enforce.to_string(), "restricted:v1.30");
        // Warn follows a stricter enforce when unset.
        assert_eq!(p.warn.to_string(), "restricted:v1.30");
        assert_eq!(p.audit.to_string(), "privileged:latest");
        let (p, _) = Policy::from_labels(&labels(&[(ENFORCE_LABEL, "baseline"), (WARN_LABEL, "privileged")]));
        assert_eq!(p.warn.level, Level::Privileged);
        let (p, errs) = Policy::from_labels(&labels(&[
            (ENFORCE_LABEL, "strict"),
            (WARN_LABEL, "nope"),
            (AUDIT_VERSION_LABEL, "v2.0"),
        ]));
        // A bad enforce level fails closed, a bad warn level open.
        assert_eq!((p.enforce.level, p.warn.level), (Level::Restricted, Level::Privileged));
        let msgs: Vec<&str> = errs.iter().map(|e| e.message.as_str()).collect();
        assert_eq!(
            msgs,
            [
                "metadata.labels[pod-security.kubernetes.io/enforce]: Invalid value: \"strict\": must be one of privileged, baseline, restricted",
                "metadata.labels[pod-security.kubernetes.io/audit-version]: Invalid value: \"v2.0\": must be \"latest\" or \"v1.x\"",
                "metadata.labels[pod-security.kubernetes.io/warn]: Invalid value: \"nope\": must be one of privileged, baseline, restricted",
            ]
        );
    }

    #[test]
    fn versions() {
        assert_eq!("latest".parse(), Ok(Version::Latest));
        assert_eq!("v1.0".parse(), Ok(Version::V1(0)));
        assert_eq!("v1.32".parse(), Ok(Version::V1(32)));
        for bad in ["v1.", "v1.01", "1.2", "v1.x", "v2.1", "v1.-1", "Latest"] {
            assert_eq!(bad.parse::<Version>(), Err(LabelError::Version), "{bad}");
        }
    }

    #[test]
    fn evaluate_modes() {
        let (m, s) = pod(json!({"spec":{"hostNetwork":true,"containers":[{"name":"c","image":"x"}]}}));
        let (p, _) = Policy::from_labels(&labels(&[(WARN_LABEL, "baseline"), (AUDIT_LABEL, "baseline")]));
        let d = evaluate(&p, &m, &s, true);
        let want = "would violate PodSecurity \"baseline:latest\": host namespaces (hostNetwork=true)";
        assert_eq!(d.denied, None);
        assert_eq!(d.warning.as_deref(), Some(want));
        assert_eq!(d.audit.as_deref(), Some(want));
        // Enforce denies and then no warning is given; templates are never denied.
        let (p, _) = Policy::from_labels(&labels(&[(ENFORCE_LABEL, "baseline")]));
        let d = evaluate(&p, &m, &s, true);
        assert_eq!(
            d.denied.as_deref(),
            Some("violates PodSecurity \"baseline:latest\": host namespaces (hostNetwork=true)")
        );
        assert_eq!(d.warning, None);
        let d = evaluate(&p, &m, &s, false);
        assert_eq!((d.denied, d.warning.as_deref()), (None, Some(want)));
    }

    #[test]
    fn templates_and_updates() {
        let d = json!({"spec":{"template":{"metadata":{"labels":{"a":"b"}},"spec":{"containers":[{"name":"c","image":"x"}]}}}});
        let t = d.pointer(template_pointer("Deployment").unwrap()).unwrap();
        let (m, s) = pod_parts(t).unwrap();
        assert_eq!(m.labels.unwrap()["a"], "b");
        assert_eq!(s.containers[0].name, "c");
        assert_eq!(template_pointer("ConfigMap"), None);
        let (_, old) = pod(json!({"spec":{"containers":[{"name":"c","image":"x"}]}}));
        let (_, relabel) = pod(
            json!({"spec":{"containers":[{"name":"c","image":"x","securityContext":{"privileged":true}}]}}),
        );
        let (_, reimage) = pod(json!({"spec":{"containers":[{"name":"c","image":"y"}]}}));
        let (_, debug) = pod(
            json!({"spec":{"containers":[{"name":"c","image":"x"}],"ephemeralContainers":[{"name":"d","image":"x"}]}}),
        );
        assert!(!significant_pod_update(&relabel, &old));
        assert!(significant_pod_update(&reimage, &old));
        assert!(significant_pod_update(&debug, &old));
    }

    #[test]
    fn namespace_tightening() {
        let policy = |pairs: &[(&str, &str)]| Policy::from_labels(&labels(pairs)).0;
        let none = policy(&[]);
        let base = policy(&[(ENFORCE_LABEL, "baseline")]);
        let restricted = policy(&[(ENFORCE_LABEL, "restricted")]);
        assert!(enforce_tightened(&none, &base));
        assert!(enforce_tightened(&base, &restricted));
        assert!(!enforce_tightened(&restricted, &base));
        assert!(!enforce_tightened(&base, &base));
        assert!(!enforce_tightened(&restricted, &none));
        assert!(enforce_tightened(
            &restricted,
            &policy(&[(ENFORCE_LABEL, "baseline"), (ENFORCE_VERSION_LABEL, "v1.30")])
        ));
    }

    #[test]
    fn existing_pods_are_summarised() {
        let p = |name: &str, host: bool, owner: Option<&str>| {
            let mut v = json!({"metadata":{"name":name},"spec":{"hostNetwork":host,"containers":[{"name":"c","image":"x"}]}});
            if let Some(uid) = owner {
                v["metadata"]["ownerReferences"] = json!([{"apiVersion":"apps/v1","kind":"ReplicaSet","name":"rs","uid":uid,"controller":true}]);
            }
            let (meta, spec) = pod(v);
            ExistingPod { meta, spec }
        };
        let pods = [
            p("web-b", true, Some("u1")),
            p("web-a", true, Some("u1")),
            p("ok", false, None),
            p("z", true, None),
            p("solo", true, None),
        ];
        let lv = LevelVersion { level: Level::Baseline, version: Version::Latest };
        assert_eq!(
            existing_pod_warnings("team", lv, &pods),
            [
                "existing pods in namespace \"team\" violate the new PodSecurity enforce level \"baseline:latest\"",
                "solo (and 3 other pods): host namespaces",
            ]
        );
        assert!(existing_pod_warnings("team", lv, &pods[2..3]).is_empty());
        let many: Vec<ExistingPod> =
            (0..MAX_PODS_CHECKED + 2).map(|i| p(&format!("p{i}"), false, None)).collect();
        assert_eq!(
            existing_pod_warnings("team", lv, &many),
            [format!(
                "new PodSecurity enforce level only checked against the first {MAX_PODS_CHECKED} of {} existing pods",
                MAX_PODS_CHECKED + 2
            )]
        );
    }
}
