//! Authorization: one [`authorize`] decision per request from the authenticated [`UserInfo`] and
//! the request's [`RequestAttributes`].
//!
//! - `system:masters` may do everything (kube-apiserver's privileged-group shortcut, so the
//!   admin's requests never read RBAC objects);
//! - every authenticated user may read discovery, `/openapi`, `/version` and the health paths;
//! - bootstrap tokens (`system:bootstrappers`) may request node certificates;
//! - nodes (`system:node:<n>` in `system:nodes`) get the rules of Kubernetes' node authorizer and
//!   NodeRestriction, reduced to what rkubelet does: their own Node, Lease and pods, the Secrets and
//!   ConfigMaps their pods reference, tokens of their pods' ServiceAccounts, events, and reads of
//!   what the service proxy needs;
//! - then RBAC ([`super::rbac`]) for everyone, as kube-apiserver's `--authorization-mode=Node,RBAC`:
//!   what the node rules refuse RBAC may still allow.
//!
//! Questions about the object graph (is this pod bound to me? does one of my pods reference this
//! Secret?) go through [`NodeGraph`], so the rules are unit-tested without a server.

use super::rbac::{self, RbacDecision, RbacSource};
use super::registry::{Registry, Selectors};
use super::resources;
use super::status::ApiStatus;
use crate::api::selectors::FieldSelector;
use serde_json::Value;
use std::future::Future;

/// Group of cluster administrators.
pub const MASTERS: &str = "system:masters";
/// Group of node identities.
pub const NODES: &str = "system:nodes";
/// Group of bootstrap (join) token users.
pub const BOOTSTRAPPERS: &str = "system:bootstrappers";
/// Prefix of node user names.
pub const NODE_USER_PREFIX: &str = "system:node:";
/// The endpoint where nodes get their certificates.
pub const NODE_CERT_PATH: &str = "/v1-rkube/node-cert";

/// An authenticated caller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserInfo {
    pub name: String,
    pub groups: Vec<String>,
}

impl UserInfo {
    /// A user with groups.
    pub fn new(name: &str, groups: &[&str]) -> Self {
        UserInfo { name: name.into(), groups: groups.iter().map(|g| g.to_string()).collect() }
    }

    /// Whether the user is in `group`.
    pub fn in_group(&self, group: &str) -> bool {
        self.groups.iter().any(|g| g == group)
    }

    /// The node name of a node identity (`system:node:<n>` in `system:nodes`).
    pub fn node_name(&self) -> Option<&str> {
        if !self.in_group(NODES) {
            return None;
        }
        self.name.strip_prefix(NODE_USER_PREFIX).filter(|n| !n.is_empty())
    }
}

/// What a resource request touches.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ResourceAttributes {
    pub group: String,
    pub resource: String,
    pub subresource: String,
    pub namespace: String,
    /// The object's name; for `create`, the name in the body.
    pub name: String,
    pub field_selector: FieldSelector,
}

/// What a request does: Kubernetes' verb, and either a resource or a non-resource path.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RequestAttributes {
    /// `get`, `list`, `watch`, `create`, `update`, `patch`, `delete`, `deletecollection`.
    pub verb: String,
    /// `None` for non-resource paths (discovery, `/openapi`, the node-cert endpoint).
    pub resource: Option<ResourceAttributes>,
    pub path: String,
}

/// Kubernetes' verb for a method on a path naming an object (`has_name`) or a collection.
pub fn verb_of(method: &str, has_name: bool, watch: bool) -> &'static str {
    match method {
        "POST" => "create",
        "PUT" => "update",
        "PATCH" => "patch",
        "DELETE" if has_name => "delete",
        "DELETE" => "deletecollection",
        _ if has_name => "get",
        _ if watch => "watch",
        _ => "list",
    }
}

/// Parses a request like kube-apiserver's RequestInfoFactory: `/api/v1/...` and
/// `/apis/<group>/<version>/...` with at least a resource are resource requests, anything else
/// (discovery, `/openapi`, ...) is a non-resource path.
pub fn request_attributes(
    method: &str,
    path: &str,
    field_selector: &str,
    watch: bool,
) -> Result<RequestAttributes, ApiStatus> {
    let segs: Vec<&str> = path.trim_matches('/').split('/').filter(|s| !s.is_empty()).collect();
    let (group, rest) = match segs.as_slice() {
        ["api", _v, rest @ ..] if !rest.is_empty() => ("", rest),
        ["apis", g, _v, rest @ ..] if !rest.is_empty() => (*g, rest),
        _ => {
            let verb = match method {
                "POST" => "create",
                "PUT" => "update",
                "PATCH" => "patch",
                "DELETE" => "delete",
                _ => "get",
            };
            return Ok(RequestAttributes { verb: verb.into(), resource: None, path: path.into() });
        }
    };
    let mut r = ResourceAttributes { group: group.into(), ..Default::default() };
    let mut parts: &[&str] = rest;
    if parts[0] == "namespaces" && parts.len() > 1 {
        r.namespace = parts[1].into();
        if parts.len() > 2 && !matches!(parts[2], "status" | "finalize") {
            parts = &parts[2..];
        } else {
            r.resource = "namespaces".into();
            r.name = parts[1].into();
            r.namespace.clear();
            r.subresource = parts.get(2).copied().unwrap_or("").into();
            let verb = verb_of(method, true, watch);
            return Ok(RequestAttributes { verb: verb.into(), resource: Some(r), path: path.into() });
        }
    }
    r.resource = parts[0].into();
    r.name = parts.get(1).copied().unwrap_or("").into();
    r.subresource = parts.get(2).copied().unwrap_or("").into();
    r.field_selector =
        FieldSelector::parse(field_selector).map_err(|e| ApiStatus::bad_request(e.to_string()))?;
    let verb = verb_of(method, !r.name.is_empty(), watch);
    Ok(RequestAttributes { verb: verb.into(), resource: Some(r), path: path.into() })
}

/// The decision for one request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    Allow,
    /// Refused; the reason is appended to the Forbidden message.
    Deny(String),
}

/// Objects a node may read when one of its pods references them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Referenced {
    Secret,
    ConfigMap,
}

/// The registry questions the node rules ask.
pub trait NodeGraph: Send + Sync {
    /// The node the pod `namespace/name` is bound to (`None`: no such pod, or unbound).
    fn pod_node(&self, namespace: &str, name: &str) -> impl Future<Output = Option<String>> + Send;

    /// Whether a pod bound to `node` in `namespace` references the Secret or ConfigMap `name`.
    fn node_references(
        &self,
        node: &str,
        kind: Referenced,
        namespace: &str,
        name: &str,
    ) -> impl Future<Output = bool> + Send;

    /// Whether a pod bound to `node` in `namespace` runs as the ServiceAccount `name`.
    fn node_service_account(
        &self,
        node: &str,
        namespace: &str,
        name: &str,
    ) -> impl Future<Output = bool> + Send;
}

/// Whether a pod (JSON) references a Secret or ConfigMap: volumes (projected sources included),
/// `env[].valueFrom`, `envFrom`, and (Secrets) `imagePullSecrets`, in every container list.
pub fn pod_references(pod: &Value, kind: Referenced, name: &str) -> bool {
    // The same rule the node uses to fetch what its pods need (`api::podrefs`).
    let Ok(pod) = serde_json::from_value::<k8s_openapi::api::core::v1::Pod>(pod.clone()) else {
        return false;
    };
    let refs = crate::api::podrefs::references(&pod);
    match kind {
        Referenced::Secret => refs.secrets.contains_key(name),
        Referenced::ConfigMap => refs.config_maps.contains_key(name),
    }
}

fn selects(sel: &FieldSelector, field: &str, value: &str) -> bool {
    sel.terms.iter().any(|(f, eq, v)| *eq && f == field && v == value)
}

fn is_public_path(path: &str) -> bool {
    let segs: Vec<&str> = path.trim_matches('/').split('/').filter(|s| !s.is_empty()).collect();
    matches!(
        segs.as_slice(),
        [] | ["api"]
            | ["api", _]
            | ["apis"]
            | ["apis", _]
            | ["apis", _, _]
            | ["openapi", ..]
            | ["version"]
            | ["healthz" | "livez" | "readyz", ..]
            | ["cacerts"]
    )
}

/// Decides one request: the privileged group, the fixed paths, the node authorizer, then RBAC.
pub async fn authorize<G: NodeGraph + RbacSource>(
    user: &UserInfo,
    attrs: &RequestAttributes,
    graph: &G,
) -> Decision {
    if user.in_group(MASTERS) {
        return Decision::Allow;
    }
    let mut reasons = Vec::new();
    match &attrs.resource {
        None => {
            if is_public_path(&attrs.path) && attrs.verb == "get" {
                return Decision::Allow;
            }
            let cert_request = attrs.path.trim_end_matches('/') == NODE_CERT_PATH && attrs.verb == "create";
            if cert_request && (user.in_group(BOOTSTRAPPERS) || user.node_name().is_some()) {
                return Decision::Allow;
            }
        }
        Some(r) => {
            if let Some(node) = user.node_name() {
                match authorize_node(node, &attrs.verb, r, graph).await {
                    Decision::Allow => return Decision::Allow,
                    Decision::Deny(reason) if !reason.is_empty() => reasons.push(reason),
                    Decision::Deny(_) => {}
                }
            }
        }
    }
    match rbac::authorize(user, attrs, graph).await {
        RbacDecision::Allow(_) => Decision::Allow,
        RbacDecision::NoOpinion(errors) => {
            reasons.extend(errors.into_iter().map(|e| format!("RBAC: {e}")));
            Decision::Deny(reasons.join(", "))
        }
    }
}

async fn authorize_node<G: NodeGraph>(node: &str, verb: &str, r: &ResourceAttributes, graph: &G) -> Decision {
    let deny = |reason: String| Decision::Deny(reason);
    let allow_if = |ok: bool, reason: String| if ok { Decision::Allow } else { Decision::Deny(reason) };
    let sub = r.subresource.as_str();
    match (r.group.as_str(), r.resource.as_str()) {
        ("", "nodes") => match verb {
            // Every Node is readable, as kube-apiserver's Node authorizer allows: the node's service
            // proxy and pod routes need the other nodes' addresses and pod CIDRs.
            "get" | "list" | "watch" if sub.is_empty() || sub == "status" => Decision::Allow,
            "create" if sub.is_empty() => allow_if(
                r.name == node,
                format!("node '{node}' cannot create Node '{}', only its own Node object", r.name),
            ),
            "update" | "patch" if sub.is_empty() || sub == "status" => allow_if(
                r.name == node,
                format!("node '{node}' cannot modify '{}', only its own Node object", r.name),
            ),
            _ => deny(format!("node '{node}' cannot {verb} Node objects")),
        },
        ("", "pods") => match (verb, sub) {
            ("list" | "watch", "") => allow_if(
                selects(&r.field_selector, "spec.nodeName", node),
                format!("node '{node}' can only {verb} pods with fieldSelector spec.nodeName={node}"),
            ),
            ("get", "" | "status") | ("update" | "patch", "status") | ("delete", "") => {
                let bound = graph.pod_node(&r.namespace, &r.name).await;
                allow_if(
                    bound.as_deref() == Some(node),
                    format!("no relationship found between node '{node}' and this object"),
                )
            }
            _ => deny(format!(
                "node '{node}' cannot {verb} pods{}",
                if sub.is_empty() { String::new() } else { format!("/{sub}") }
            )),
        },
        ("", kind @ ("secrets" | "configmaps")) if sub.is_empty() => {
            let what = if kind == "secrets" { Referenced::Secret } else { Referenced::ConfigMap };
            let name = match verb {
                "get" => Some(r.name.clone()),
                "list" | "watch" if !r.namespace.is_empty() => r
                    .field_selector
                    .terms
                    .iter()
                    .find(|(f, eq, _)| *eq && f == "metadata.name")
                    .map(|(_, _, v)| v.clone()),
                _ => None,
            };
            match name {
                Some(name) if graph.node_references(node, what, &r.namespace, &name).await => Decision::Allow,
                _ => deny(format!("no relationship found between node '{node}' and this object")),
            }
        }
        ("", "serviceaccounts") if sub == "token" && verb == "create" => allow_if(
            graph.node_service_account(node, &r.namespace, &r.name).await,
            format!("no relationship found between node '{node}' and this object"),
        ),
        ("coordination.k8s.io", "leases") => allow_if(
            r.namespace == "kube-node-lease"
                && r.name == node
                && sub.is_empty()
                && matches!(verb, "get" | "create" | "update" | "patch"),
            format!("node '{node}' can only access its own Lease in namespace kube-node-lease"),
        ),
        ("" | "events.k8s.io", "events") => allow_if(
            matches!(verb, "create" | "update" | "patch"),
            format!("node '{node}' can only write events"),
        ),
        ("", "services" | "endpoints" | "namespaces") | ("discovery.k8s.io", "endpointslices") => allow_if(
            sub.is_empty() && matches!(verb, "get" | "list" | "watch"),
            format!("node '{node}' can only read {}", r.resource),
        ),
        _ => deny(String::new()),
    }
}

/// The 403 `Status` kube-apiserver sends for a refused request.
pub fn forbidden(user: &UserInfo, attrs: &RequestAttributes, reason: &str) -> ApiStatus {
    let suffix = if reason.is_empty() { String::new() } else { format!(": {reason}") };
    let Some(r) = &attrs.resource else {
        let msg = format!("User {:?} cannot {} path {:?}{suffix}", user.name, attrs.verb, attrs.path);
        return ApiStatus::forbidden_raw(format!("forbidden: {msg}"), None);
    };
    let resource = if r.subresource.is_empty() {
        r.resource.clone()
    } else {
        format!("{}/{}", r.resource, r.subresource)
    };
    let scope = if r.namespace.is_empty() {
        "at the cluster scope".to_string()
    } else {
        format!("in the namespace {:?}", r.namespace)
    };
    let msg = format!(
        "User {:?} cannot {} resource {resource:?} in API group {:?} {scope}{suffix}",
        user.name, attrs.verb, r.group
    );
    let qualified =
        if r.group.is_empty() { r.resource.clone() } else { format!("{}.{}", r.resource, r.group) };
    let message = if r.name.is_empty() {
        format!("{qualified} is forbidden: {msg}")
    } else {
        format!("{qualified} {:?} is forbidden: {msg}", r.name)
    };
    let mut details = serde_json::json!({"name": r.name, "kind": r.resource});
    if !r.group.is_empty() {
        details["group"] = r.group.clone().into();
    }
    ApiStatus::forbidden_raw(message, Some(details))
}

/// [`NodeGraph`] over the registry.
pub struct RegistryGraph<'a>(pub &'a Registry);

impl NodeGraph for RegistryGraph<'_> {
    async fn pod_node(&self, namespace: &str, name: &str) -> Option<String> {
        let pods = resources::find("", "v1", "pods")?;
        let pod = self.0.get(pods, namespace, name).await.ok()?;
        pod.pointer("/spec/nodeName").and_then(Value::as_str).filter(|n| !n.is_empty()).map(String::from)
    }

    async fn node_references(&self, node: &str, kind: Referenced, namespace: &str, name: &str) -> bool {
        let Some(pods) = resources::find("", "v1", "pods") else { return false };
        let sel = Selectors {
            fields: FieldSelector { terms: vec![("spec.nodeName".into(), true, node.into())] },
            ..Default::default()
        };
        match self.0.list(pods, Some(namespace), &sel).await {
            Ok((items, _)) => items.iter().any(|p| pod_references(p, kind, name)),
            Err(_) => false,
        }
    }

    async fn node_service_account(&self, node: &str, namespace: &str, name: &str) -> bool {
        let Some(pods) = resources::find("", "v1", "pods") else { return false };
        let sel = Selectors {
            fields: FieldSelector { terms: vec![("spec.nodeName".into(), true, node.into())] },
            ..Default::default()
        };
        match self.0.list(pods, Some(namespace), &sel).await {
            Ok((items, _)) => items.iter().any(|p| pod_service_account(p) == name),
            Err(_) => false,
        }
    }
}

/// A pod's ServiceAccount (`default` when unset).
pub fn pod_service_account(pod: &Value) -> &str {
    pod.pointer("/spec/serviceAccountName")
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty())
        .unwrap_or("default")
}

fn decode_all<T: serde::de::DeserializeOwned>(items: Vec<Value>) -> Result<Vec<T>, String> {
    items.into_iter().map(|v| serde_json::from_value(v).map_err(|e| e.to_string())).collect()
}

impl RbacSource for RegistryGraph<'_> {
    async fn cluster_role_bindings(
        &self,
    ) -> Result<Vec<k8s_openapi::api::rbac::v1::ClusterRoleBinding>, String> {
        let r = resources::find(rbac::GROUP, "v1", "clusterrolebindings")
            .ok_or("clusterrolebindings are not served")?;
        let (items, _) = self.0.list(r, None, &Selectors::default()).await.map_err(|e| e.message)?;
        decode_all(items)
    }

    async fn role_bindings(
        &self,
        namespace: &str,
    ) -> Result<Vec<k8s_openapi::api::rbac::v1::RoleBinding>, String> {
        let r = resources::find(rbac::GROUP, "v1", "rolebindings").ok_or("rolebindings are not served")?;
        let (items, _) =
            self.0.list(r, Some(namespace), &Selectors::default()).await.map_err(|e| e.message)?;
        decode_all(items)
    }

    async fn cluster_role(
        &self,
        name: &str,
    ) -> Result<Option<k8s_openapi::api::rbac::v1::ClusterRole>, String> {
        let r = resources::find(rbac::GROUP, "v1", "clusterroles").ok_or("clusterroles are not served")?;
        match self.0.get(r, "", name).await {
            Ok(v) => serde_json::from_value(v).map(Some).map_err(|e| e.to_string()),
            Err(e) if e.code == 404 => Ok(None),
            Err(e) => Err(e.message),
        }
    }

    async fn role(
        &self,
        namespace: &str,
        name: &str,
    ) -> Result<Option<k8s_openapi::api::rbac::v1::Role>, String> {
        let r = resources::find(rbac::GROUP, "v1", "roles").ok_or("roles are not served")?;
        match self.0.get(r, namespace, name).await {
            Ok(v) => serde_json::from_value(v).map(Some).map_err(|e| e.to_string()),
            Err(e) if e.code == 404 => Ok(None),
            Err(e) => Err(e.message),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use std::collections::HashMap;

    /// Pods by namespace/name.
    struct Graph(HashMap<(String, String), Value>);

    impl Graph {
        fn new(pods: &[Value]) -> Self {
            Graph(
                pods.iter()
                    .map(|p| {
                        let md = &p["metadata"];
                        let key =
                            (md["namespace"].as_str().unwrap().into(), md["name"].as_str().unwrap().into());
                        (key, p.clone())
                    })
                    .collect(),
            )
        }
    }

    impl NodeGraph for Graph {
        async fn pod_node(&self, namespace: &str, name: &str) -> Option<String> {
            let p = self.0.get(&(namespace.into(), name.into()))?;
            p["spec"]["nodeName"].as_str().map(String::from)
        }
        async fn node_references(&self, node: &str, kind: Referenced, namespace: &str, name: &str) -> bool {
            self.0.values().any(|p| {
                p["metadata"]["namespace"] == namespace
                    && p["spec"]["nodeName"] == node
                    && pod_references(p, kind, name)
            })
        }
        async fn node_service_account(&self, node: &str, namespace: &str, name: &str) -> bool {
            self.0.values().any(|p| {
                p["metadata"]["namespace"] == namespace
                    && p["spec"]["nodeName"] == node
                    && pod_service_account(p) == name
            })
        }
    }

    impl RbacSource for Graph {
        async fn cluster_role_bindings(
            &self,
        ) -> Result<Vec<k8s_openapi::api::rbac::v1::ClusterRoleBinding>, String> {
            Ok(rbac::bootstrap_policy().1)
        }
        async fn role_bindings(
            &self,
            _: &str,
        ) -> Result<Vec<k8s_openapi::api::rbac::v1::RoleBinding>, String> {
            Ok(Vec::new())
        }
        async fn cluster_role(
            &self,
            name: &str,
        ) -> Result<Option<k8s_openapi::api::rbac::v1::ClusterRole>, String> {
            Ok(rbac::bootstrap_policy().0.into_iter().find(|c| c.metadata.name.as_deref() == Some(name)))
        }
        async fn role(&self, _: &str, _: &str) -> Result<Option<k8s_openapi::api::rbac::v1::Role>, String> {
            Ok(None)
        }
    }

    fn pods() -> Graph {
        Graph::new(&[
            json!({"metadata": {"namespace": "default", "name": "mine"},
                "spec": {"nodeName": "n1",
                    "volumes": [{"name": "v", "secret": {"secretName": "vol-secret"}},
                        {"name": "p", "projected": {"sources": [{"configMap": {"name": "proj-cm"}}]}}],
                    "imagePullSecrets": [{"name": "pull"}],
                    "containers": [{"name": "c", "env": [{"name": "E", "valueFrom": {"secretKeyRef": {"name": "env-secret", "key": "k"}}}],
                        "envFrom": [{"configMapRef": {"name": "envfrom-cm"}}]}]}}),
            json!({"metadata": {"namespace": "default", "name": "theirs"},
                "spec": {"nodeName": "n2", "volumes": [{"name": "v", "secret": {"secretName": "other"}}],
                    "containers": [{"name": "c"}]}}),
        ])
    }

    fn node() -> UserInfo {
        UserInfo::new("system:node:n1", &[NODES])
    }

    async fn decide(
        user: &UserInfo,
        method: &str,
        path: &str,
        fs: &str,
        watch: bool,
        body_name: &str,
    ) -> Decision {
        let mut a = request_attributes(method, path, fs, watch).unwrap();
        if let Some(r) = a.resource.as_mut()
            && a.verb == "create"
            && r.name.is_empty()
        {
            r.name = body_name.into();
        }
        authorize(user, &a, &pods()).await
    }

    async fn node_may(method: &str, path: &str, fs: &str) -> bool {
        decide(&node(), method, path, fs, false, "").await == Decision::Allow
    }

    #[test]
    fn parses_request_attributes() {
        let a = request_attributes("GET", "/api/v1/namespaces/default/pods/x/log", "", false).unwrap();
        let r = a.resource.unwrap();
        assert_eq!((a.verb.as_str(), r.resource.as_str(), r.subresource.as_str()), ("get", "pods", "log"));
        assert_eq!((r.namespace.as_str(), r.name.as_str()), ("default", "x"));
        let a = request_attributes("GET", "/api/v1/pods", "spec.nodeName=n1", true).unwrap();
        assert_eq!(a.verb, "watch");
        assert!(selects(&a.resource.unwrap().field_selector, "spec.nodeName", "n1"));
        let a = request_attributes("PUT", "/api/v1/namespaces/ns1/finalize", "", false).unwrap();
        let r = a.resource.unwrap();
        assert_eq!(
            (r.resource.as_str(), r.name.as_str(), r.subresource.as_str()),
            ("namespaces", "ns1", "finalize")
        );
        let a = request_attributes("DELETE", "/apis/apps/v1/namespaces/d/deployments", "", false).unwrap();
        assert_eq!((a.verb.as_str(), a.resource.unwrap().group.as_str()), ("deletecollection", "apps"));
        assert!(request_attributes("GET", "/apis/apps/v1", "", false).unwrap().resource.is_none());
        assert!(request_attributes("GET", "/api/v1/pods", "bogus", false).is_err());
    }

    #[tokio::test]
    async fn masters_may_do_anything_others_only_discovery() {
        let admin = UserInfo::new("admin", &[MASTERS]);
        assert_eq!(decide(&admin, "DELETE", "/api/v1/nodes/n2", "", false, "").await, Decision::Allow);
        let boot = UserInfo::new("system:bootstrap:abc123", &[BOOTSTRAPPERS]);
        assert_ne!(decide(&boot, "GET", "/api/v1/pods", "", false, "").await, Decision::Allow);
        assert_eq!(decide(&boot, "POST", NODE_CERT_PATH, "", false, "").await, Decision::Allow);
        assert_eq!(decide(&boot, "GET", "/apis", "", false, "").await, Decision::Allow);
        assert_eq!(decide(&boot, "GET", "/openapi/v3/apis/apps/v1", "", false, "").await, Decision::Allow);
        let other = UserInfo::new("jane", &["devs"]);
        assert_ne!(decide(&other, "POST", NODE_CERT_PATH, "", false, "").await, Decision::Allow);
        assert_ne!(decide(&other, "GET", "/api/v1/namespaces", "", false, "").await, Decision::Allow);
        // A node name without the nodes group is not a node.
        let fake = UserInfo::new("system:node:n1", &[]);
        assert_ne!(decide(&fake, "GET", "/api/v1/nodes/n1", "", false, "").await, Decision::Allow);
    }

    #[tokio::test]
    async fn node_rules_for_nodes() {
        // Every Node is readable; only its own is writable.
        assert!(node_may("GET", "/api/v1/nodes/n1", "").await);
        assert!(node_may("GET", "/api/v1/nodes/n2", "").await);
        assert!(node_may("GET", "/api/v1/nodes", "").await);
        assert!(node_may("GET", "/api/v1/nodes", "metadata.name=n1").await);
        assert!(!node_may("PUT", "/api/v1/nodes/n2", "").await);
        assert!(node_may("PATCH", "/api/v1/nodes/n1/status", "").await);
        assert!(node_may("PUT", "/api/v1/nodes/n1", "").await);
        assert!(!node_may("PATCH", "/api/v1/nodes/n2/status", "").await);
        assert!(!node_may("DELETE", "/api/v1/nodes/n1", "").await);
        assert_eq!(decide(&node(), "POST", "/api/v1/nodes", "", false, "n1").await, Decision::Allow);
        assert_ne!(decide(&node(), "POST", "/api/v1/nodes", "", false, "n2").await, Decision::Allow);
        assert_eq!(
            decide(&node(), "GET", "/api/v1/nodes", "metadata.name=n1", true, "").await,
            Decision::Allow
        );
    }

    #[tokio::test]
    async fn node_rules_for_pods() {
        assert!(!node_may("GET", "/api/v1/pods", "").await);
        assert!(node_may("GET", "/api/v1/pods", "spec.nodeName=n1").await);
        assert!(
            node_may("GET", "/api/v1/namespaces/default/pods", "spec.nodeName=n1,status.phase!=Failed").await
        );
        assert!(!node_may("GET", "/api/v1/pods", "spec.nodeName=n2").await);
        assert_ne!(decide(&node(), "GET", "/api/v1/pods", "", true, "").await, Decision::Allow);
        assert!(node_may("GET", "/api/v1/namespaces/default/pods/mine", "").await);
        assert!(!node_may("GET", "/api/v1/namespaces/default/pods/theirs", "").await);
        assert!(!node_may("GET", "/api/v1/namespaces/default/pods/missing", "").await);
        assert!(node_may("PATCH", "/api/v1/namespaces/default/pods/mine/status", "").await);
        assert!(!node_may("PATCH", "/api/v1/namespaces/default/pods/mine", "").await);
        assert!(!node_may("PATCH", "/api/v1/namespaces/default/pods/theirs/status", "").await);
        assert!(node_may("DELETE", "/api/v1/namespaces/default/pods/mine", "").await);
        assert!(!node_may("DELETE", "/api/v1/namespaces/default/pods/theirs", "").await);
        assert_ne!(
            decide(&node(), "POST", "/api/v1/namespaces/default/pods", "", false, "x").await,
            Decision::Allow
        );
        for sub in ["log", "exec", "portforward", "binding", "eviction"] {
            let path = format!("/api/v1/namespaces/default/pods/mine/{sub}");
            assert!(!node_may("GET", &path, "").await, "{sub}");
            assert!(!node_may("POST", &path, "").await, "{sub}");
        }
    }

    #[tokio::test]
    async fn node_reads_only_referenced_secrets_and_configmaps() {
        for s in ["vol-secret", "env-secret", "pull"] {
            assert!(node_may("GET", &format!("/api/v1/namespaces/default/secrets/{s}"), "").await, "{s}");
        }
        for c in ["proj-cm", "envfrom-cm"] {
            assert!(node_may("GET", &format!("/api/v1/namespaces/default/configmaps/{c}"), "").await, "{c}");
        }
        assert!(!node_may("GET", "/api/v1/namespaces/default/secrets/other", "").await);
        assert!(!node_may("GET", "/api/v1/namespaces/default/configmaps/vol-secret", "").await);
        assert!(!node_may("GET", "/api/v1/namespaces/kube-system/secrets/vol-secret", "").await);
        assert!(node_may("GET", "/api/v1/namespaces/default/secrets", "metadata.name=vol-secret").await);
        assert!(!node_may("GET", "/api/v1/namespaces/default/secrets", "").await);
        assert!(!node_may("GET", "/api/v1/secrets", "metadata.name=vol-secret").await);
        assert!(!node_may("PUT", "/api/v1/namespaces/default/secrets/vol-secret", "").await);
        // Tokens only for the ServiceAccounts of its pods (`mine` runs as `default`).
        assert!(node_may("POST", "/api/v1/namespaces/default/serviceaccounts/default/token", "").await);
        assert!(!node_may("POST", "/api/v1/namespaces/default/serviceaccounts/admin/token", "").await);
        assert!(!node_may("POST", "/api/v1/namespaces/kube-system/serviceaccounts/default/token", "").await);
        assert!(!node_may("GET", "/api/v1/namespaces/default/serviceaccounts/default", "").await);
    }

    #[tokio::test]
    async fn node_rules_for_leases_events_and_service_data() {
        let lease = "/apis/coordination.k8s.io/v1/namespaces/kube-node-lease/leases";
        assert!(node_may("PUT", &format!("{lease}/n1"), "").await);
        assert!(node_may("GET", &format!("{lease}/n1"), "").await);
        assert!(!node_may("PUT", &format!("{lease}/n2"), "").await);
        assert_eq!(decide(&node(), "POST", lease, "", false, "n1").await, Decision::Allow);
        assert_ne!(decide(&node(), "POST", lease, "", false, "n2").await, Decision::Allow);
        assert!(!node_may("GET", "/apis/coordination.k8s.io/v1/namespaces/default/leases/n1", "").await);
        assert!(node_may("POST", "/api/v1/namespaces/default/events", "").await);
        assert!(node_may("POST", "/apis/events.k8s.io/v1/namespaces/default/events", "").await);
        assert!(!node_may("GET", "/api/v1/namespaces/default/events", "").await);
        assert!(node_may("GET", "/api/v1/services", "").await);
        assert!(node_may("GET", "/api/v1/endpoints", "").await);
        assert!(node_may("GET", "/apis/discovery.k8s.io/v1/endpointslices", "").await);
        assert!(node_may("GET", "/api/v1/namespaces/default", "").await);
        assert!(!node_may("DELETE", "/api/v1/namespaces/default/services/x", "").await);
        assert!(!node_may("DELETE", "/apis/apps/v1/namespaces/default/deployments/x", "").await);
        assert!(!node_may("GET", "/apis/apps/v1/deployments", "").await);
    }

    #[tokio::test]
    async fn forbidden_messages_use_kube_apiserver_wording() {
        let a = request_attributes("PUT", "/api/v1/nodes/n2", "", false).unwrap();
        let Decision::Deny(reason) = authorize(&node(), &a, &pods()).await else { panic!() };
        let s = forbidden(&node(), &a, &reason);
        assert_eq!(s.code, 403);
        assert_eq!(
            s.message,
            "nodes \"n2\" is forbidden: User \"system:node:n1\" cannot update resource \"nodes\" in API group \"\" \
             at the cluster scope: node 'n1' cannot modify 'n2', only its own Node object"
        );
        let a = request_attributes("DELETE", "/apis/apps/v1/namespaces/default/deployments/web", "", false)
            .unwrap();
        let s = forbidden(&node(), &a, "");
        assert_eq!(
            s.message,
            "deployments.apps \"web\" is forbidden: User \"system:node:n1\" cannot delete resource \"deployments\" \
             in API group \"apps\" in the namespace \"default\""
        );
        let a = request_attributes("PATCH", "/api/v1/namespaces/default/pods/x/status", "", false).unwrap();
        assert!(forbidden(&node(), &a, "").message.contains("cannot patch resource \"pods/status\""));
        let a = request_attributes("GET", "/api/v1/pods", "", false).unwrap();
        assert!(forbidden(&node(), &a, "").message.starts_with("pods is forbidden: User"));
        let a = request_attributes("GET", "/logs", "", false).unwrap();
        assert_eq!(
            forbidden(&node(), &a, "").message,
            "forbidden: User \"system:node:n1\" cannot get path \"/logs\""
        );
    }
}
