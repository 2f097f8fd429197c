//! The resources the server serves: names, kinds, scope, short names and subresources.

/// One REST resource of one group/version.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ResourceInfo {
    pub group: &'static str,
    pub version: &'static str,
    pub plural: &'static str,
    pub singular: &'static str,
    pub kind: &'static str,
    pub namespaced: bool,
    pub short_names: &'static [&'static str],
    pub categories: &'static [&'static str],
    /// Subresources besides the main one (`status`, `scale`, `binding`).
    pub subresources: &'static [&'static str],
}

impl ResourceInfo {
    /// `apps/v1` or `v1`.
    pub fn api_version(&self) -> String {
        if self.group.is_empty() {
            self.version.to_string()
        } else {
            format!("{}/{}", self.group, self.version)
        }
    }

    /// `deployments.apps` or `pods`, as used in messages.
    pub fn qualified_plural(&self) -> String {
        if self.group.is_empty() {
            self.plural.to_string()
        } else {
            format!("{}.{}", self.plural, self.group)
        }
    }

    /// `Deployment.apps` or `Pod`, as used in Invalid messages.
    pub fn qualified_kind(&self) -> String {
        if self.group.is_empty() { self.kind.to_string() } else { format!("{}.{}", self.kind, self.group) }
    }

    /// True when `status` is only writable through the status subresource.
    pub fn has_status(&self) -> bool {
        self.subresources.contains(&"status")
    }

    /// The stored form: extensions/v1beta1 Deployments are stored as apps/v1.
    pub fn storage(&self) -> &ResourceInfo {
        if self.group == "extensions" { find("apps", "v1", self.plural).unwrap_or(self) } else { self }
    }

    /// Store key prefix for one namespace (or all / cluster-scoped when `ns` is None).
    pub fn prefix(&self, ns: Option<&str>) -> String {
        match ns {
            Some(ns) if self.namespaced => format!("/registry/{}/{ns}/", self.storage().plural),
            _ => format!("/registry/{}/", self.storage().plural),
        }
    }

    /// Store key of one object.
    pub fn key(&self, ns: &str, name: &str) -> String {
        if self.namespaced {
            format!("/registry/{}/{ns}/{name}", self.storage().plural)
        } else {
            format!("/registry/{}/{name}", self.storage().plural)
        }
    }
}

const VERBS_ALL: &[&str] =
    &["create", "delete", "deletecollection", "get", "list", "patch", "update", "watch"];

/// The verbs of a main resource.
pub fn verbs() -> &'static [&'static str] {
    VERBS_ALL
}

macro_rules! res {
    ($g:expr, $v:expr, $p:expr, $s:expr, $k:expr, $ns:expr, $short:expr, $cat:expr, $sub:expr) => {
        ResourceInfo {
            group: $g,
            version: $v,
            plural: $p,
            singular: $s,
            kind: $k,
            namespaced: $ns,
            short_names: $short,
            categories: $cat,
            subresources: $sub,
        }
    };
}

/// Subresources of pods (`log`, `exec` and `portforward` are relayed to the pod's node).
const POD_SUBRESOURCES: &[&str] = &["status", "binding", "log", "exec", "portforward"];

/// Every served resource.
pub static RESOURCES: &[ResourceInfo] = &[
    res!("", "v1", "pods", "pod", "Pod", true, &["po"], &["all"], POD_SUBRESOURCES),
    res!("", "v1", "services", "service", "Service", true, &["svc"], &["all"], &["status"]),
    res!("", "v1", "configmaps", "configmap", "ConfigMap", true, &["cm"], &[], &[]),
    res!("", "v1", "secrets", "secret", "Secret", true, &[], &[], &[]),
    res!("", "v1", "nodes", "node", "Node", false, &["no"], &[], &["status"]),
    res!("", "v1", "namespaces", "namespace", "Namespace", false, &["ns"], &[], &["status", "finalize"]),
    res!("", "v1", "events", "event", "Event", true, &["ev"], &[], &[]),
    res!("", "v1", "endpoints", "endpoints", "Endpoints", true, &["ep"], &[], &[]),
    res!("", "v1", "serviceaccounts", "serviceaccount", "ServiceAccount", true, &["sa"], &[], &["token"]),
    res!(
        "apps",
        "v1",
        "deployments",
        "deployment",
        "Deployment",
        true,
        &["deploy"],
        &["all"],
        &["status", "scale"]
    ),
    res!(
        "apps",
        "v1",
        "replicasets",
        "replicaset",
        "ReplicaSet",
        true,
        &["rs"],
        &["all"],
        &["status", "scale"]
    ),
    res!("coordination.k8s.io", "v1", "leases", "lease", "Lease", true, &[], &[], &[]),
    res!("discovery.k8s.io", "v1", "endpointslices", "endpointslice", "EndpointSlice", true, &[], &[], &[]),
    res!("rbac.authorization.k8s.io", "v1", "roles", "role", "Role", true, &[], &[], &[]),
    res!(
        "rbac.authorization.k8s.io",
        "v1",
        "rolebindings",
        "rolebinding",
        "RoleBinding",
        true,
        &[],
        &[],
        &[]
    ),
    res!(
        "rbac.authorization.k8s.io",
        "v1",
        "clusterroles",
        "clusterrole",
        "ClusterRole",
        false,
        &[],
        &[],
        &[]
    ),
    res!(
        "rbac.authorization.k8s.io",
        "v1",
        "clusterrolebindings",
        "clusterrolebinding",
        "ClusterRoleBinding",
        false,
        &[],
        &[],
        &[]
    ),
    res!(
        "extensions",
        "v1beta1",
        "deployments",
        "deployment",
        "Deployment",
        true,
        &[],
        &[],
        &["status", "scale"]
    ),
];

/// Looks up a resource by group, version and plural.
pub fn find(group: &str, version: &str, plural: &str) -> Option<&'static ResourceInfo> {
    RESOURCES.iter().find(|r| r.group == group && r.version == version && r.plural == plural)
}

/// Looks up the storage resource for an apiVersion + kind (for in-process clients).
pub fn for_kind(api_version: &str, kind: &str) -> Option<&'static ResourceInfo> {
    RESOURCES.iter().find(|r| r.api_version() == api_version && r.kind == kind)
}

/// The served group/versions, core first.
pub fn group_versions() -> Vec<(&'static str, &'static str)> {
    let mut out: Vec<(&str, &str)> = Vec::new();
    for r in RESOURCES {
        if !out.contains(&(r.group, r.version)) {
            out.push((r.group, r.version));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lookups_and_keys() {
        let d = find("extensions", "v1beta1", "deployments").unwrap();
        assert_eq!(d.storage().group, "apps");
        assert_eq!(d.key("default", "x"), "/registry/deployments/default/x");
        let n = find("", "v1", "nodes").unwrap();
        assert_eq!(n.key("", "n1"), "/registry/nodes/n1");
        assert_eq!(n.prefix(Some("x")), "/registry/nodes/");
        assert_eq!(find("", "v1", "pods").unwrap().prefix(Some("default")), "/registry/pods/default/");
        assert_eq!(for_kind("apps/v1", "ReplicaSet").unwrap().plural, "replicasets");
        assert_eq!(find("apps", "v1", "deployments").unwrap().qualified_kind(), "Deployment.apps");
        assert_eq!(group_versions()[0], ("", "v1"));
    }
}
