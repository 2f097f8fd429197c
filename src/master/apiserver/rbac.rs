//! RBAC (`rbac.authorization.k8s.io/v1`) as kube-apiserver evaluates it: ClusterRoleBindings
//! first, then the RoleBindings of the request's namespace (which may reference a ClusterRole and
//! then grant only in that namespace); any matching rule allows, nothing denies. A binding whose
//! role is missing grants nothing. No aggregation: the bootstrap `admin`, `edit` and `view` roles
//! are shipped with their aggregated rules flattened.
//!
//! The objects come through [`RbacSource`] (the registry in the server, a fixed set in unit
//! tests), so evaluation is pure.

use super::authz::{RequestAttributes, ResourceAttributes, UserInfo};
use k8s_openapi::api::rbac::v1::{
    ClusterRole, ClusterRoleBinding, PolicyRule, Role, RoleBinding, RoleRef, Subject,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use std::collections::BTreeMap;
use std::future::Future;

/// The API group of RBAC.
pub const GROUP: &str = "rbac.authorization.k8s.io";
/// Every authenticated user is in this group.
pub const AUTHENTICATED: &str = "system:authenticated";
/// Anonymous requests are in this group.
pub const UNAUTHENTICATED: &str = "system:unauthenticated";

/// Reads the RBAC objects. Errors are messages (`RBAC: …` reasons).
pub trait RbacSource: Send + Sync {
    fn cluster_role_bindings(&self) -> impl Future<Output = Result<Vec<ClusterRoleBinding>, String>> + Send;
    fn role_bindings(&self, namespace: &str)
    -> impl Future<Output = Result<Vec<RoleBinding>, String>> + Send;
    fn cluster_role(&self, name: &str) -> impl Future<Output = Result<Option<ClusterRole>, String>> + Send;
    fn role(&self, namespace: &str, name: &str) -> impl Future<Output = Result<Option<Role>, String>> + Send;
}

/// Whether a binding subject names this user (a ServiceAccount subject without a namespace takes
/// the binding's).
pub fn subject_matches(s: &Subject, binding_ns: &str, user: &UserInfo) -> bool {
    match s.kind.as_str() {
        "User" => s.name == user.name,
        "Group" => user.in_group(&s.name),
        "ServiceAccount" => {
            let ns = s.namespace.as_deref().filter(|n| !n.is_empty()).unwrap_or(binding_ns);
            user.name == format!("system:serviceaccount:{ns}:{}", s.name)
        }
        _ => false,
    }
}

fn has(list: &[String], v: &str) -> bool {
    list.iter().any(|x| x == "*" || x == v)
}

/// Whether one rule allows the request (kube's RuleAllows).
pub fn rule_allows(rule: &PolicyRule, attrs: &RequestAttributes) -> bool {
    if !has(&rule.verbs, &attrs.verb) {
        return false;
    }
    match &attrs.resource {
        Some(r) => {
            let groups = rule.api_groups.as_deref().unwrap_or(&[]);
            if !has(groups, &r.group) {
                return false;
            }
            let resources = rule.resources.as_deref().unwrap_or(&[]);
            let combined = if r.subresource.is_empty() {
                r.resource.clone()
            } else {
                format!("{}/{}", r.resource, r.subresource)
            };
            let resource_ok = resources.iter().any(|x| {
                x == "*"
                    || *x == combined
                    || (!r.subresource.is_empty() && *x == format!("*/{}", r.subresource))
            });
            if !resource_ok {
                return false;
            }
            let names = rule.resource_names.as_deref().unwrap_or(&[]);
            names.is_empty() || names.contains(&r.name)
        }
        None => {
            let urls = rule.non_resource_urls.as_deref().unwrap_or(&[]);
            urls.iter().any(|u| {
                u == "*"
                    || *u == attrs.path
                    || u.strip_suffix('*').is_some_and(|prefix| attrs.path.starts_with(prefix))
            })
        }
    }
}

/// The outcome of RBAC for one request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RbacDecision {
    /// Allowed; the reason names the binding and role.
    Allow(String),
    /// No rule allows; the errors met on the way (missing roles are not errors).
    NoOpinion(Vec<String>),
}

async fn role_rules<S: RbacSource>(
    src: &S,
    r: &RoleRef,
    binding_ns: &str,
) -> Result<Vec<PolicyRule>, String> {
    match r.kind.as_str() {
        "ClusterRole" => Ok(src.cluster_role(&r.name).await?.and_then(|c| c.rules).unwrap_or_default()),
        "Role" if !binding_ns.is_empty() => {
            Ok(src.role(binding_ns, &r.name).await?.and_then(|c| c.rules).unwrap_or_default())
        }
        _ => Ok(Vec::new()),
    }
}

/// Visits the rules granted to `user` in `namespace` ("" = cluster scope only) until `visit`
/// returns true; returns the binding description that stopped the walk, and the errors met.
async fn visit_rules<S: RbacSource>(
    user: &UserInfo,
    namespace: &str,
    src: &S,
    mut visit: impl FnMut(&PolicyRule) -> bool,
) -> (Option<String>, Vec<String>) {
    let mut errors = Vec::new();
    match src.cluster_role_bindings().await {
        Ok(crbs) => {
            for b in crbs {
                let subjects = b.subjects.as_deref().unwrap_or(&[]);
                if !subjects.iter().any(|s| subject_matches(s, "", user)) {
                    continue;
                }
                match role_rules(src, &b.role_ref, "").await {
                    Ok(rules) => {
                        if rules.iter().any(&mut visit) {
                            let name = b.metadata.name.unwrap_or_default();
                            let why =
                                format!("ClusterRoleBinding {name:?} of ClusterRole {:?}", b.role_ref.name);
                            return (Some(why), errors);
                        }
                    }
                    Err(e) => errors.push(e),
                }
            }
        }
        Err(e) => errors.push(e),
    }
    if namespace.is_empty() {
        return (None, errors);
    }
    match src.role_bindings(namespace).await {
        Ok(rbs) => {
            for b in rbs {
                let subjects = b.subjects.as_deref().unwrap_or(&[]);
                if !subjects.iter().any(|s| subject_matches(s, namespace, user)) {
                    continue;
                }
                match role_rules(src, &b.role_ref, namespace).await {
                    Ok(rules) => {
                        if rules.iter().any(&mut visit) {
                            let name = b.metadata.name.unwrap_or_default();
                            let why = format!(
                                "RoleBinding \"{name}/{namespace}\" of {} {:?} to the user",
                                b.role_ref.kind, b.role_ref.name
                            );
                            return (Some(why), errors);
                        }
                    }
                    Err(e) => errors.push(e),
                }
            }
        }
        Err(e) => errors.push(e),
    }
    (None, errors)
}

/// Decides one request with RBAC.
pub async fn authorize<S: RbacSource>(user: &UserInfo, attrs: &RequestAttributes, src: &S) -> RbacDecision {
    let ns = attrs.resource.as_ref().map(|r| r.namespace.as_str()).unwrap_or("");
    match visit_rules(user, ns, src, |rule| rule_allows(rule, attrs)).await {
        (Some(why), _) => RbacDecision::Allow(format!("RBAC: allowed by {why}")),
        (None, errors) => RbacDecision::NoOpinion(errors),
    }
}

/// Every rule granted to `user` in `namespace` (SelfSubjectRulesReview), with the errors met.
pub async fn rules_for<S: RbacSource>(
    user: &UserInfo,
    namespace: &str,
    src: &S,
) -> (Vec<PolicyRule>, Vec<String>) {
    let mut all = Vec::new();
    let (_, errors) = visit_rules(user, namespace, src, |rule| {
        all.push(rule.clone());
        false
    })
    .await;
    (all, errors)
}

/// The single permissions a rule grants: one verb on one group/resource(/name), or on one URL.
fn subrules(rule: &PolicyRule) -> Vec<PolicyRule> {
    let one = |v: &String| vec![v.clone()];
    let mut out = Vec::new();
    for verb in &rule.verbs {
        for url in rule.non_resource_urls.iter().flatten() {
            out.push(PolicyRule {
                verbs: one(verb),
                non_resource_urls: Some(one(url)),
                ..Default::default()
            });
        }
        for group in rule.api_groups.iter().flatten() {
            for resource in rule.resources.iter().flatten() {
                let names: Vec<Option<&String>> = match rule.resource_names.as_deref() {
                    Some(names) if !names.is_empty() => names.iter().map(Some).collect(),
                    _ => vec![None],
                };
                for name in names {
                    out.push(PolicyRule {
                        verbs: one(verb),
                        api_groups: Some(one(group)),
                        resources: Some(one(resource)),
                        resource_names: name.map(one),
                        ..Default::default()
                    });
                }
            }
        }
    }
    out
}

/// Whether `owner` grants the single permission `sub` (kube's ruleCovers): a wildcard is covered
/// only by a wildcard, a resource-name restriction by none or the same name.
fn covers_one(owner: &PolicyRule, sub: &PolicyRule) -> bool {
    let first = |v: &Option<Vec<String>>| v.as_ref().and_then(|v| v.first().cloned());
    if !has(&owner.verbs, &sub.verbs[0]) {
        return false;
    }
    if let Some(url) = first(&sub.non_resource_urls) {
        return owner.non_resource_urls.iter().flatten().any(|u| {
            *u == "*" || *u == url || u.strip_suffix('*').is_some_and(|prefix| url.starts_with(prefix))
        });
    }
    let (Some(group), Some(resource)) = (first(&sub.api_groups), first(&sub.resources)) else { return false };
    if !has(owner.api_groups.as_deref().unwrap_or(&[]), &group) {
        return false;
    }
    let resources = owner.resources.as_deref().unwrap_or(&[]);
    let resource_ok = resources.iter().any(|x| {
        x == "*"
            || *x == resource
            || resource.split_once('/').is_some_and(|(_, sub)| *x == format!("*/{sub}"))
    });
    let names = owner.resource_names.as_deref().unwrap_or(&[]);
    resource_ok && (names.is_empty() || first(&sub.resource_names).is_some_and(|n| names.contains(&n)))
}

/// The permissions of `wanted` that `held` does not grant (empty: `held` covers `wanted`).
pub fn not_covered(held: &[PolicyRule], wanted: &[PolicyRule]) -> Vec<PolicyRule> {
    wanted.iter().flat_map(subrules).filter(|sub| !held.iter().any(|h| covers_one(h, sub))).collect()
}

fn describe(rule: &PolicyRule) -> String {
    let list =
        |v: &Option<Vec<String>>| v.iter().flatten().map(|s| format!("{s:?}")).collect::<Vec<_>>().join(" ");
    if rule.non_resource_urls.is_some() {
        return format!(
            "{{NonResourceURLs:[{}], Verbs:[{}]}}",
            list(&rule.non_resource_urls),
            list(&Some(rule.verbs.clone()))
        );
    }
    let names = if rule.resource_names.is_some() {
        format!(", ResourceNames:[{}]", list(&rule.resource_names))
    } else {
        String::new()
    };
    format!(
        "{{APIGroups:[{}], Resources:[{}]{names}, Verbs:[{}]}}",
        list(&rule.api_groups),
        list(&rule.resources),
        list(&Some(rule.verbs.clone()))
    )
}

/// kube-apiserver's privilege-escalation prevention for writes of RBAC objects by `user`: a Role or
/// ClusterRole may only hold permissions its writer holds (or the writer may `escalate`), and a
/// binding may only grant a role whose permissions its writer holds (or the writer may `bind` that
/// role). `obj` is the object as it will be stored, `ns` its namespace ("" for cluster scope).
/// Returns the reason of a refusal.
pub async fn check_escalation<S: RbacSource>(
    user: &UserInfo,
    kind: &str,
    ns: &str,
    obj: &serde_json::Value,
    src: &S,
) -> Result<(), String> {
    let name = obj.pointer("/metadata/name").and_then(serde_json::Value::as_str).unwrap_or("");
    let (verb, target_resource, target_name, wanted) = match kind {
        "Role" | "ClusterRole" => {
            let rules: Vec<PolicyRule> =
                serde_json::from_value(obj.get("rules").cloned().unwrap_or_default()).unwrap_or_default();
            let resource = if kind == "Role" { "roles" } else { "clusterroles" };
            ("escalate", resource, name.to_string(), rules)
        }
        "RoleBinding" | "ClusterRoleBinding" => {
            let role_ref: RoleRef = serde_json::from_value(obj.get("roleRef").cloned().unwrap_or_default())
                .map_err(|e| format!("roleRef: {e}"))?;
            let rules = role_rules(src, &role_ref, ns).await?;
            let resource = if role_ref.kind == "Role" { "roles" } else { "clusterroles" };
            ("bind", resource, role_ref.name.clone(), rules)
        }
        _ => return Ok(()),
    };
    let attrs = RequestAttributes {
        verb: verb.into(),
        resource: Some(ResourceAttributes {
            group: GROUP.into(),
            resource: target_resource.into(),
            // The object's own namespace: a RoleBinding may be allowed to bind a ClusterRole there.
            namespace: ns.into(),
            name: target_name,
            ..Default::default()
        }),
        path: String::new(),
    };
    if matches!(authorize(user, &attrs, src).await, RbacDecision::Allow(_)) {
        return Ok(());
    }
    let (held, _) = rules_for(user, ns, src).await;
    let missing = not_covered(&held, &wanted);
    if missing.is_empty() {
        return Ok(());
    }
    let shown: Vec<String> = missing.iter().take(10).map(describe).collect();
    let more = if missing.len() > 10 { format!(" and {} more", missing.len() - 10) } else { String::new() };
    Err(format!(
        "user {:?} (groups={:?}) is attempting to grant RBAC permissions not currently held:\n{}{more}",
        user.name,
        user.groups,
        shown.join("\n")
    ))
}

fn rule(groups: &[&str], resources: &[&str], verbs: &[&str]) -> PolicyRule {
    let strings = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
    PolicyRule {
        api_groups: Some(strings(groups)),
        resources: Some(strings(resources)),
        verbs: strings(verbs),
        ..Default::default()
    }
}

fn url_rule(urls: &[&str], verbs: &[&str]) -> PolicyRule {
    let strings = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
    PolicyRule { non_resource_urls: Some(strings(urls)), verbs: strings(verbs), ..Default::default() }
}

const READ: &[&str] = &["get", "list", "watch"];
const WRITE: &[&str] = &["create", "delete", "deletecollection", "patch", "update"];

/// `view`: reads of most namespaced objects, no Secrets and no roles (upstream's
/// `system:aggregate-to-view`).
fn view_rules() -> Vec<PolicyRule> {
    vec![
        rule(
            &[""],
            &[
                "configmaps",
                "endpoints",
                "persistentvolumeclaims",
                "persistentvolumeclaims/status",
                "pods",
                "replicationcontrollers",
                "replicationcontrollers/scale",
                "serviceaccounts",
                "services",
                "services/status",
            ],
            READ,
        ),
        rule(
            &[""],
            &[
                "bindings",
                "events",
                "limitranges",
                "namespaces/status",
                "pods/log",
                "pods/status",
                "replicationcontrollers/status",
                "resourcequotas",
                "resourcequotas/status",
            ],
            READ,
        ),
        rule(&[""], &["namespaces"], READ),
        rule(&["discovery.k8s.io"], &["endpointslices"], READ),
        // metrics-server's `system:aggregated-metrics-reader` aggregates into view, edit and admin.
        rule(&["metrics.k8s.io"], &["pods", "nodes"], READ),
        rule(
            &["apps"],
            &[
                "controllerrevisions",
                "daemonsets",
                "daemonsets/status",
                "deployments",
                "deployments/scale",
                "deployments/status",
                "replicasets",
                "replicasets/scale",
                "replicasets/status",
                "statefulsets",
                "statefulsets/scale",
                "statefulsets/status",
            ],
            READ,
        ),
        rule(&["autoscaling"], &["horizontalpodautoscalers", "horizontalpodautoscalers/status"], READ),
        rule(&["batch"], &["cronjobs", "cronjobs/status", "jobs", "jobs/status"], READ),
        rule(
            &["extensions"],
            &[
                "daemonsets",
                "daemonsets/status",
                "deployments",
                "deployments/scale",
                "deployments/status",
                "ingresses",
                "ingresses/status",
                "networkpolicies",
                "replicasets",
                "replicasets/scale",
                "replicasets/status",
                "replicationcontrollers/scale",
            ],
            READ,
        ),
        rule(&["policy"], &["poddisruptionbudgets", "poddisruptionbudgets/status"], READ),
        rule(&["networking.k8s.io"], &["ingresses", "ingresses/status", "networkpolicies"], READ),
    ]
}

/// `edit`: `view` plus writes of workloads, Secrets, ServiceAccounts and their tokens, exec and
/// port-forward (upstream's `system:aggregate-to-edit`).
fn edit_rules() -> Vec<PolicyRule> {
    let mut rules = view_rules();
    rules.extend([
        rule(
            &[""],
            &["pods/attach", "pods/exec", "pods/portforward", "pods/proxy", "secrets", "services/proxy"],
            READ,
        ),
        rule(&[""], &["serviceaccounts"], &["impersonate"]),
        rule(&[""], &["pods", "pods/attach", "pods/exec", "pods/portforward", "pods/proxy"], WRITE),
        rule(&[""], &["pods/eviction"], &["create"]),
        rule(
            &[""],
            &[
                "configmaps",
                "events",
                "persistentvolumeclaims",
                "replicationcontrollers",
                "replicationcontrollers/scale",
                "secrets",
                "serviceaccounts",
                "services",
                "services/proxy",
            ],
            WRITE,
        ),
        rule(&[""], &["serviceaccounts/token"], &["create"]),
        rule(
            &["apps"],
            &[
                "daemonsets",
                "deployments",
                "deployments/rollback",
                "deployments/scale",
                "replicasets",
                "replicasets/scale",
                "statefulsets",
                "statefulsets/scale",
            ],
            WRITE,
        ),
        rule(&["autoscaling"], &["horizontalpodautoscalers"], WRITE),
        rule(&["batch"], &["cronjobs", "jobs"], WRITE),
        rule(
            &["extensions"],
            &[
                "daemonsets",
                "deployments",
                "deployments/rollback",
                "deployments/scale",
                "ingresses",
                "networkpolicies",
                "replicasets",
                "replicasets/scale",
                "replicationcontrollers/scale",
            ],
            WRITE,
        ),
        rule(&["policy"], &["poddisruptionbudgets"], WRITE),
        rule(&["networking.k8s.io"], &["ingresses", "networkpolicies"], WRITE),
        rule(
            &["coordination.k8s.io"],
            &["leases"],
            &["create", "delete", "deletecollection", "get", "list", "patch", "update", "watch"],
        ),
    ]);
    rules
}

/// `admin`: `edit` plus Roles and RoleBindings in the namespace.
fn admin_rules() -> Vec<PolicyRule> {
    let mut rules = edit_rules();
    rules.extend([
        rule(
            &[GROUP],
            &["rolebindings", "roles"],
            &["create", "delete", "deletecollection", "get", "list", "patch", "update", "watch"],
        ),
        rule(&["authorization.k8s.io"], &["localsubjectaccessreviews"], &["create"]),
    ]);
    rules
}

fn bootstrap_meta(name: &str) -> ObjectMeta {
    ObjectMeta {
        name: Some(name.into()),
        labels: Some(BTreeMap::from([("kubernetes.io/bootstrapping".into(), "rbac-defaults".into())])),
        annotations: Some(BTreeMap::from([(
            "rbac.authorization.kubernetes.io/autoupdate".into(),
            "true".into(),
        )])),
        ..Default::default()
    }
}

fn cluster_role(name: &str, rules: Vec<PolicyRule>) -> ClusterRole {
    ClusterRole { metadata: bootstrap_meta(name), rules: Some(rules), ..Default::default() }
}

fn binding(name: &str, role: &str, groups: &[&str]) -> ClusterRoleBinding {
    ClusterRoleBinding {
        metadata: bootstrap_meta(name),
        role_ref: RoleRef { api_group: GROUP.into(), kind: "ClusterRole".into(), name: role.into() },
        subjects: Some(
            groups
                .iter()
                .map(|g| Subject {
                    api_group: Some(GROUP.into()),
                    kind: "Group".into(),
                    name: g.to_string(),
                    namespace: None,
                })
                .collect(),
        ),
    }
}

/// The annotation that, set to `"false"`, keeps a bootstrap role or binding as the user left it.
pub const AUTOUPDATE: &str = "rbac.authorization.kubernetes.io/autoupdate";

/// `current` (a stored bootstrap ClusterRole or ClusterRoleBinding, JSON) with what the default
/// `wanted` has and it lacks: rules not covered, subjects missing. `None` when nothing is missing
/// or the object opted out (`autoupdate: "false"`). Pure.
pub fn reconcile_bootstrap(
    current: &serde_json::Value,
    wanted: &serde_json::Value,
) -> Option<serde_json::Value> {
    let opted_out = current.pointer("/metadata/annotations").and_then(|a| a.get(AUTOUPDATE))
        == Some(&serde_json::Value::from("false"));
    if opted_out {
        return None;
    }
    let list =
        |v: &serde_json::Value, field: &str| v.get(field).cloned().unwrap_or_else(|| serde_json::json!([]));
    let mut out = current.clone();
    if let Some(wanted_rules) = wanted.get("rules") {
        let held: Vec<PolicyRule> = serde_json::from_value(list(current, "rules")).ok()?;
        let default: Vec<PolicyRule> = serde_json::from_value(wanted_rules.clone()).ok()?;
        // Default rules not wholly covered are added whole, as kube's reconciler does.
        let missing: Vec<&PolicyRule> =
            default.iter().filter(|r| !not_covered(&held, &[(*r).clone()]).is_empty()).collect();
        if missing.is_empty() {
            return None;
        }
        let mut rules = held.clone();
        rules.extend(missing.into_iter().cloned());
        out["rules"] = serde_json::to_value(rules).ok()?;
        return Some(out);
    }
    let held: Vec<Subject> = serde_json::from_value(list(current, "subjects")).ok()?;
    let default: Vec<Subject> = serde_json::from_value(list(wanted, "subjects")).ok()?;
    let missing: Vec<Subject> = default.into_iter().filter(|s| !held.contains(s)).collect();
    if missing.is_empty() {
        return None;
    }
    let mut subjects = held;
    subjects.extend(missing);
    out["subjects"] = serde_json::to_value(subjects).ok()?;
    Some(out)
}

/// The default roles and bindings created on the first start (kube-apiserver's bootstrap policy,
/// reduced to what rkube serves).
pub fn bootstrap_policy() -> (Vec<ClusterRole>, Vec<ClusterRoleBinding>) {
    let health = ["/healthz", "/livez", "/readyz", "/version", "/version/"];
    let mut discovery: Vec<&str> = health.to_vec();
    discovery.extend(["/api", "/api/*", "/apis", "/apis/*", "/openapi", "/openapi/*"]);
    let roles = vec![
        cluster_role("cluster-admin", vec![rule(&["*"], &["*"], &["*"]), url_rule(&["*"], &["*"])]),
        cluster_role("admin", admin_rules()),
        cluster_role("edit", edit_rules()),
        cluster_role("view", view_rules()),
        cluster_role("system:discovery", vec![url_rule(&discovery, &["get"])]),
        cluster_role("system:public-info-viewer", vec![url_rule(&health, &["get"])]),
        cluster_role(
            "system:monitoring",
            vec![url_rule(
                &[
                    "/healthz",
                    "/healthz/*",
                    "/livez",
                    "/livez/*",
                    "/metrics",
                    "/metrics/slis",
                    "/readyz",
                    "/readyz/*",
                ],
                &["get"],
            )],
        ),
        cluster_role(
            "system:basic-user",
            vec![
                rule(
                    &["authorization.k8s.io"],
                    &["selfsubjectaccessreviews", "selfsubjectrulesreviews"],
                    &["create"],
                ),
                rule(&["authentication.k8s.io"], &["selfsubjectreviews"], &["create"]),
            ],
        ),
    ];
    let bindings = vec![
        binding("cluster-admin", "cluster-admin", &[super::authz::MASTERS]),
        binding("system:discovery", "system:discovery", &[AUTHENTICATED]),
        binding("system:basic-user", "system:basic-user", &[AUTHENTICATED]),
        binding("system:monitoring", "system:monitoring", &["system:monitoring"]),
        binding("system:public-info-viewer", "system:public-info-viewer", &[AUTHENTICATED, UNAUTHENTICATED]),
    ];
    (roles, bindings)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::master::apiserver::authz::request_attributes;

    #[derive(Default)]
    struct Fixed {
        crbs: Vec<ClusterRoleBinding>,
        rbs: Vec<RoleBinding>,
        crs: Vec<ClusterRole>,
        roles: Vec<Role>,
    }

    impl RbacSource for Fixed {
        async fn cluster_role_bindings(&self) -> Result<Vec<ClusterRoleBinding>, String> {
            Ok(self.crbs.clone())
        }
        async fn role_bindings(&self, ns: &str) -> Result<Vec<RoleBinding>, String> {
            Ok(self.rbs.iter().filter(|b| b.metadata.namespace.as_deref() == Some(ns)).cloned().collect())
        }
        async fn cluster_role(&self, name: &str) -> Result<Option<ClusterRole>, String> {
            Ok(self.crs.iter().find(|c| c.metadata.name.as_deref() == Some(name)).cloned())
        }
        async fn role(&self, ns: &str, name: &str) -> Result<Option<Role>, String> {
            Ok(self
                .roles
                .iter()
                .find(|c| {
                    c.metadata.namespace.as_deref() == Some(ns) && c.metadata.name.as_deref() == Some(name)
                })
                .cloned())
        }
    }

    fn attrs(method: &str, path: &str) -> RequestAttributes {
        request_attributes(method, path, "", false).unwrap()
    }

    fn sa(ns: &str, name: &str) -> UserInfo {
        UserInfo::new(
            &format!("system:serviceaccount:{ns}:{name}"),
            &["system:serviceaccounts", &format!("system:serviceaccounts:{ns}"), AUTHENTICATED],
        )
    }

    fn role_binding(ns: &str, name: &str, kind: &str, role: &str, subject: Subject) -> RoleBinding {
        RoleBinding {
            metadata: ObjectMeta {
                name: Some(name.into()),
                namespace: Some(ns.into()),
                ..Default::default()
            },
            role_ref: RoleRef { api_group: GROUP.into(), kind: kind.into(), name: role.into() },
            subjects: Some(vec![subject]),
        }
    }

    fn sa_subject(name: &str) -> Subject {
        Subject { kind: "ServiceAccount".into(), name: name.into(), ..Default::default() }
    }

    #[tokio::test]
    async fn bindings_roles_and_scopes() {
        let (crs, crbs) = bootstrap_policy();
        let mut src = Fixed { crs, crbs, ..Default::default() };
        src.roles.push(Role {
            metadata: ObjectMeta {
                name: Some("cm-reader".into()),
                namespace: Some("team".into()),
                ..Default::default()
            },
            rules: Some(vec![rule(&[""], &["configmaps"], READ)]),
        });
        src.rbs.push(role_binding("team", "read", "Role", "cm-reader", sa_subject("bot")));
        src.rbs.push(role_binding(
            "team",
            "viewers",
            "ClusterRole",
            "view",
            Subject { kind: "Group".into(), name: "viewers".into(), ..Default::default() },
        ));
        src.rbs.push(role_binding("team", "dangling", "Role", "missing", sa_subject("bot")));
        let bot = sa("team", "bot");
        let ok = |d: RbacDecision| matches!(d, RbacDecision::Allow(_));
        assert!(ok(authorize(&bot, &attrs("GET", "/api/v1/namespaces/team/configmaps"), &src).await));
        assert!(ok(authorize(&bot, &attrs("GET", "/api/v1/namespaces/team/configmaps/x"), &src).await));
        assert!(!ok(authorize(&bot, &attrs("GET", "/api/v1/namespaces/other/configmaps"), &src).await));
        assert!(!ok(authorize(&bot, &attrs("DELETE", "/api/v1/namespaces/team/configmaps/x"), &src).await));
        assert!(!ok(authorize(&bot, &attrs("GET", "/api/v1/namespaces/team/secrets"), &src).await));
        // The same name in another namespace is another service account.
        assert!(!ok(authorize(
            &sa("other", "bot"),
            &attrs("GET", "/api/v1/namespaces/team/configmaps"),
            &src
        )
        .await));
        // A RoleBinding to a ClusterRole grants only in its namespace; `view` has no Secrets.
        let viewer = UserInfo::new("jane", &["viewers", AUTHENTICATED]);
        assert!(ok(
            authorize(&viewer, &attrs("GET", "/apis/apps/v1/namespaces/team/deployments"), &src).await
        ));
        assert!(!ok(authorize(&viewer, &attrs("GET", "/apis/apps/v1/namespaces/x/deployments"), &src).await));
        assert!(!ok(authorize(&viewer, &attrs("GET", "/api/v1/namespaces/team/secrets/s"), &src).await));
        // `pods` does not cover `pods/exec`.
        assert!(ok(authorize(&viewer, &attrs("GET", "/api/v1/namespaces/team/pods/p/log"), &src).await));
        // `kubectl top pods` for viewers, only in their namespace.
        assert!(ok(authorize(
            &viewer,
            &attrs("GET", "/apis/metrics.k8s.io/v1beta1/namespaces/team/pods"),
            &src
        )
        .await));
        assert!(!ok(authorize(
            &viewer,
            &attrs("GET", "/apis/metrics.k8s.io/v1beta1/namespaces/x/pods"),
            &src
        )
        .await));
        // Scrapers in system:monitoring read /metrics and the health checks.
        let scraper = UserInfo::new("prom", &["system:monitoring", AUTHENTICATED]);
        assert!(ok(authorize(&scraper, &attrs("GET", "/metrics"), &src).await));
        assert!(ok(authorize(&scraper, &attrs("GET", "/readyz/etcd"), &src).await));
        assert!(!ok(authorize(&scraper, &attrs("GET", "/api/v1/namespaces/team/pods"), &src).await));
        assert!(!ok(authorize(&viewer, &attrs("POST", "/api/v1/namespaces/team/pods/p/exec"), &src).await));
        // Masters get everything through cluster-admin; everyone authenticated gets discovery.
        let admin = UserInfo::new("admin", &[super::super::authz::MASTERS, AUTHENTICATED]);
        assert!(ok(authorize(&admin, &attrs("DELETE", "/api/v1/nodes/n1"), &src).await));
        assert!(ok(authorize(&admin, &attrs("GET", "/metrics"), &src).await));
        assert!(ok(authorize(&bot, &attrs("GET", "/apis/apps/v1"), &src).await));
        assert!(!ok(authorize(&bot, &attrs("GET", "/metrics"), &src).await));
        let (rules, errs) = rules_for(&bot, "team", &src).await;
        assert!(errs.is_empty());
        assert!(rules.iter().any(|r| r.resources.as_deref() == Some(&["configmaps".to_string()][..])));
        assert!(rules.iter().any(|r| r.non_resource_urls.is_some()));
    }

    #[tokio::test]
    async fn writers_cannot_grant_what_they_do_not_hold() {
        let (crs, crbs) = bootstrap_policy();
        let mut src = Fixed { crs, crbs, ..Default::default() };
        // bot may manage RoleBindings and Roles in "team", and read ConfigMaps there.
        src.roles.push(Role {
            metadata: ObjectMeta {
                name: Some("rbac-manager".into()),
                namespace: Some("team".into()),
                ..Default::default()
            },
            rules: Some(vec![
                rule(&[GROUP], &["roles", "rolebindings"], &["create", "update", "patch"]),
                rule(&[""], &["configmaps"], READ),
            ]),
        });
        src.roles.push(Role {
            metadata: ObjectMeta {
                name: Some("cm-reader".into()),
                namespace: Some("team".into()),
                ..Default::default()
            },
            rules: Some(vec![rule(&[""], &["configmaps"], &["get"])]),
        });
        src.rbs.push(role_binding("team", "mgr", "Role", "rbac-manager", sa_subject("bot")));
        let bot = sa("team", "bot");
        let binding = |kind: &str, role: &str| {
            serde_json::json!({"metadata": {"name": "b"}, "roleRef": {"apiGroup": GROUP, "kind": kind, "name": role},
                "subjects": [{"kind": "User", "name": "eve"}]})
        };
        // Binding a role whose permissions bot holds: fine. Binding cluster-admin or edit: refused,
        // naming what bot lacks.
        assert_eq!(
            check_escalation(&bot, "RoleBinding", "team", &binding("Role", "cm-reader"), &src).await,
            Ok(())
        );
        let e = check_escalation(&bot, "RoleBinding", "team", &binding("ClusterRole", "cluster-admin"), &src)
            .await
            .unwrap_err();
        assert!(
            e.contains("attempting to grant RBAC permissions not currently held")
                && e.contains("Verbs:[\"*\"]"),
            "{e}"
        );
        assert!(
            check_escalation(&bot, "RoleBinding", "team", &binding("ClusterRole", "edit"), &src)
                .await
                .is_err()
        );
        // A Role with more than bot holds is refused; one within its permissions is fine.
        let role = |rules: Vec<PolicyRule>| serde_json::json!({"metadata": {"name": "r"}, "rules": rules});
        assert!(
            check_escalation(&bot, "Role", "team", &role(vec![rule(&[""], &["secrets"], &["get"])]), &src)
                .await
                .is_err()
        );
        assert_eq!(
            check_escalation(
                &bot,
                "Role",
                "team",
                &role(vec![rule(&[""], &["configmaps"], &["list"])]),
                &src
            )
            .await,
            Ok(())
        );
        // The `bind` and `escalate` verbs let a writer grant what it does not hold.
        src.roles.push(Role {
            metadata: ObjectMeta {
                name: Some("binder".into()),
                namespace: Some("team".into()),
                ..Default::default()
            },
            rules: Some(vec![PolicyRule {
                resource_names: Some(vec!["edit".into()]),
                ..rule(&[GROUP], &["clusterroles"], &["bind"])
            }]),
        });
        src.rbs.push(role_binding("team", "binder", "Role", "binder", sa_subject("bot")));
        assert_eq!(
            check_escalation(&bot, "RoleBinding", "team", &binding("ClusterRole", "edit"), &src).await,
            Ok(())
        );
        assert!(
            check_escalation(&bot, "RoleBinding", "team", &binding("ClusterRole", "admin"), &src)
                .await
                .is_err()
        );
        // Masters hold everything.
        let admin = UserInfo::new("admin", &[super::super::authz::MASTERS, AUTHENTICATED]);
        assert_eq!(
            check_escalation(
                &admin,
                "ClusterRoleBinding",
                "",
                &binding("ClusterRole", "cluster-admin"),
                &src
            )
            .await,
            Ok(())
        );
    }

    #[test]
    fn bootstrap_objects_get_back_their_default_rules_and_subjects() {
        let (roles, bindings) = bootstrap_policy();
        let view = roles.iter().find(|r| r.metadata.name.as_deref() == Some("view")).unwrap();
        let wanted = serde_json::to_value(view).unwrap();
        assert_eq!(reconcile_bootstrap(&wanted, &wanted), None, "nothing missing");
        // A user cut the role down and added a rule of their own: the defaults come back, theirs stays.
        let mut cut = wanted.clone();
        let own = rule(&["example.com"], &["widgets"], &["get"]);
        cut["rules"] = serde_json::to_value([own.clone()]).unwrap();
        let fixed = reconcile_bootstrap(&cut, &wanted).expect("rules added");
        let rules: Vec<PolicyRule> = serde_json::from_value(fixed["rules"].clone()).unwrap();
        assert_eq!(rules[0], own);
        assert!(not_covered(&rules, view.rules.as_deref().unwrap()).is_empty());
        assert_eq!(reconcile_bootstrap(&fixed, &wanted), None);
        // Opted out: left alone.
        cut["metadata"]["annotations"][AUTOUPDATE] = "false".into();
        assert_eq!(reconcile_bootstrap(&cut, &wanted), None);

        let binding = serde_json::to_value(&bindings[0]).unwrap();
        let mut emptied = binding.clone();
        emptied["subjects"] = serde_json::json!([{"kind": "User", "name": "ann", "apiGroup": GROUP}]);
        let fixed = reconcile_bootstrap(&emptied, &binding).expect("subjects added");
        let subjects = fixed["subjects"].as_array().unwrap();
        assert_eq!(subjects[0]["name"], "ann");
        assert_eq!(subjects.len(), 1 + binding["subjects"].as_array().unwrap().len());
    }

    #[test]
    fn coverage_treats_wildcards_and_names_as_kube_does() {
        let held = [rule(&[""], &["pods", "*/status"], &["get", "list"])];
        assert!(not_covered(&held, &[rule(&[""], &["pods"], &["get"])]).is_empty());
        assert!(
            not_covered(&held, &[rule(&[""], &["pods/status", "services/status"], &["list"])]).is_empty()
        );
        assert_eq!(
            not_covered(&held, &[rule(&[""], &["pods"], &["*"])]).len(),
            1,
            "a wildcard needs a wildcard"
        );
        assert_eq!(not_covered(&held, &[rule(&["apps"], &["pods"], &["get"])]).len(), 1);
        let named =
            [PolicyRule { resource_names: Some(vec!["a".into()]), ..rule(&[""], &["configmaps"], &["get"]) }];
        let want_a =
            PolicyRule { resource_names: Some(vec!["a".into()]), ..rule(&[""], &["configmaps"], &["get"]) };
        assert!(not_covered(&named, std::slice::from_ref(&want_a)).is_empty());
        assert_eq!(
            not_covered(&named, &[rule(&[""], &["configmaps"], &["get"])]).len(),
            1,
            "all names need no restriction"
        );
        let urls = [url_rule(&["/healthz", "/api/*"], &["get"])];
        assert!(not_covered(&urls, &[url_rule(&["/api/v1"], &["get"])]).is_empty());
        assert_eq!(not_covered(&urls, &[url_rule(&["/metrics"], &["get"])]).len(), 1);
    }

    #[test]
    fn rule_matching() {
        let r = PolicyRule {
            resource_names: Some(vec!["only".into()]),
            ..rule(&["apps"], &["deployments", "*/scale"], &["get", "update"])
        };
        assert!(rule_allows(&r, &attrs("GET", "/apis/apps/v1/namespaces/a/deployments/only")));
        assert!(!rule_allows(&r, &attrs("GET", "/apis/apps/v1/namespaces/a/deployments/other")));
        assert!(!rule_allows(&r, &attrs("GET", "/apis/apps/v1/namespaces/a/deployments")));
        assert!(rule_allows(&r, &attrs("PUT", "/apis/apps/v1/namespaces/a/replicasets/only/scale")));
        assert!(!rule_allows(&r, &attrs("GET", "/api/v1/namespaces/a/pods/only")));
        let u = url_rule(&["/healthz", "/apis/*"], &["get"]);
        assert!(rule_allows(&u, &attrs("GET", "/healthz")));
        assert!(rule_allows(&u, &attrs("GET", "/apis/apps")));
        assert!(!rule_allows(&u, &attrs("GET", "/healthz/etcd")));
        assert!(!rule_allows(&u, &attrs("POST", "/healthz")));
    }
}
