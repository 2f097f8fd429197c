//! Validation of built-in kinds with field paths, producing the causes of a 422 Invalid Status.

use super::names;
use super::selectors::LabelSelector;
use serde_json::Value;

/// One validation failure, like Kubernetes' `field.Error`.
#[derive(Debug, Clone, PartialEq)]
pub struct FieldError {
    /// `FieldValueRequired`, `FieldValueInvalid`, `FieldValueNotSupported`, `FieldValueDuplicate`.
    pub reason: &'static str,
    /// Field path, e.g. `spec.template.spec.containers[0].image`.
    pub field: String,
    /// Full message, e.g. `spec.replicas: Invalid value: -1: must be greater than or equal to 0`.
    pub message: String,
}

impl FieldError {
    /// A required field is missing.
    pub fn required(field: impl Into<String>) -> Self {
        let field = field.into();
        FieldError { reason: "FieldValueRequired", message: format!("{field}: Required value"), field }
    }

    /// A field has an invalid value.
    pub fn invalid(field: impl Into<String>, value: &Value, detail: &str) -> Self {
        let field = field.into();
        let shown = match value {
            Value::String(s) => format!("{s:?}"),
            other => other.to_string(),
        };
        FieldError {
            reason: "FieldValueInvalid",
            message: format!("{field}: Invalid value: {shown}: {detail}"),
            field,
        }
    }

    /// A value is not one of the supported ones.
    pub fn not_supported(field: impl Into<String>, value: &Value, supported: &[&str]) -> Self {
        let field = field.into();
        let list: Vec<String> = supported.iter().map(|s| format!("{s:?}")).collect();
        FieldError {
            reason: "FieldValueNotSupported",
            message: format!("{field}: Unsupported value: {value}: supported values: {}", list.join(", ")),
            field,
        }
    }
}

/// Which name rule a kind uses.
fn name_rule(kind: &str) -> fn(&str) -> Option<String> {
    match kind {
        "Namespace" | "Service" => names::check_dns1123_label,
        "Role" | "ClusterRole" | "RoleBinding" | "ClusterRoleBinding" => path_segment_name,
        _ => names::check_dns1123_subdomain,
    }
}

/// RBAC names are path segments (`system:discovery` is valid): not `.` or `..`, no `/` or `%`.
fn path_segment_name(name: &str) -> Option<String> {
    if name == "." || name == ".." {
        return Some(format!("may not be '{name}'"));
    }
    ["/", "%"].iter().find(|c| name.contains(**c)).map(|c| format!("may not contain '{c}'"))
}

const RBAC_GROUP: &str = "rbac.authorization.k8s.io";

/// Roles: every rule names verbs; resource rules name apiGroups and resources, or nonResourceURLs
/// (only in ClusterRoles).
fn rbac_role(kind: &str, obj: &Value) -> Vec<FieldError> {
    let mut errs = Vec::new();
    let rules = obj.get("rules").and_then(Value::as_array).cloned().unwrap_or_default();
    for (i, r) in rules.iter().enumerate() {
        let path = format!("rules[{i}]");
        let len = |f: &str| r.get(f).and_then(Value::as_array).map_or(0, Vec::len);
        if len("verbs") == 0 {
            errs.push(FieldError {
                reason: "FieldValueRequired",
                message: format!("{path}.verbs: Required value: verbs must contain at least one value"),
                field: format!("{path}.verbs"),
            });
        }
        if len("nonResourceURLs") > 0 {
            if kind == "Role" {
                errs.push(FieldError::invalid(
                    format!("{path}.nonResourceURLs"),
                    r.get("nonResourceURLs").unwrap_or(&Value::Null),
                    "namespaced rules cannot apply to non-resource URLs",
                ));
            }
            if len("apiGroups") > 0 || len("resources") > 0 {
                errs.push(FieldError::invalid(
                    format!("{path}.nonResourceURLs"),
                    r.get("nonResourceURLs").unwrap_or(&Value::Null),
                    "rules cannot apply to both regular resources and non-resource URLs",
                ));
            }
        } else {
            if len("apiGroups") == 0 {
                errs.push(FieldError {
                    reason: "FieldValueRequired",
                    message: format!(
                        "{path}.apiGroups: Required value: resource rules must supply at least one api group"
                    ),
                    field: format!("{path}.apiGroups"),
                });
            }
            if len("resources") == 0 {
                errs.push(FieldError {
                    reason: "FieldValueRequired",
                    message: format!(
                        "{path}.resources: Required value: resource rules must supply at least one resource"
                    ),
                    field: format!("{path}.resources"),
                });
            }
        }
    }
    errs
}

/// Bindings: a roleRef of the RBAC group naming a Role (RoleBindings only) or ClusterRole, and
/// subjects of kind User, Group or ServiceAccount (namespaced in ClusterRoleBindings).
fn rbac_binding(kind: &str, obj: &Value) -> Vec<FieldError> {
    let mut errs = Vec::new();
    let rr = obj.get("roleRef").unwrap_or(&Value::Null);
    let rr_group = rr.get("apiGroup").cloned().unwrap_or(Value::String(String::new()));
    if rr_group != RBAC_GROUP {
        errs.push(FieldError::not_supported("roleRef.apiGroup", &rr_group, &[RBAC_GROUP]));
    }
    let kinds: &[&str] = if kind == "RoleBinding" { &["Role", "ClusterRole"] } else { &["ClusterRole"] };
    let rr_kind = rr.get("kind").cloned().unwrap_or(Value::String(String::new()));
    if !kinds.iter().any(|k| rr_kind == *k) {
        errs.push(FieldError::not_supported("roleRef.kind", &rr_kind, kinds));
    }
    if rr.get("name").and_then(Value::as_str).unwrap_or("").is_empty() {
        errs.push(FieldError::required("roleRef.name"));
    }
    let subjects = obj.get("subjects").and_then(Value::as_array).cloned().unwrap_or_default();
    for (i, s) in subjects.iter().enumerate() {
        let path = format!("subjects[{i}]");
        let name = s.get("name").and_then(Value::as_str).unwrap_or("");
        if name.is_empty() {
            errs.push(FieldError::required(format!("{path}.name")));
        }
        let k = s.get("kind").cloned().unwrap_or(Value::String(String::new()));
        match k.as_str() {
            Some("ServiceAccount") => {
                let ns = s.get("namespace").and_then(Value::as_str).unwrap_or("");
                if kind == "ClusterRoleBinding" && ns.is_empty() {
                    errs.push(FieldError::required(format!("{path}.namespace")));
                }
            }
            Some("User" | "Group") => {}
            _ => errs.push(FieldError::not_supported(
                format!("{path}.kind"),
                &k,
                &["ServiceAccount", "User", "Group"],
            )),
        }
    }
    errs
}

/// Validates metadata (name, labels) of an object about to be stored.
pub fn metadata(kind: &str, obj: &Value) -> Vec<FieldError> {
    let mut errs = Vec::new();
    let name = obj.pointer("/metadata/name").and_then(Value::as_str).unwrap_or("");
    if name.is_empty() {
        errs.push(FieldError::required("metadata.name"));
    } else if let Some(e) = name_rule(kind)(name) {
        errs.push(FieldError::invalid("metadata.name", &Value::String(name.into()), &e));
    }
    errs.extend(labels("metadata.labels", obj.pointer("/metadata/labels")));
    errs
}

fn labels(path: &str, labels: Option<&Value>) -> Vec<FieldError> {
    let mut errs = Vec::new();
    if let Some(m) = labels.and_then(Value::as_object) {
        for (k, v) in m {
            if let Some(e) = names::check_qualified_name(k) {
                errs.push(FieldError::invalid(path, &Value::String(k.clone()), &e));
            }
            if let Some(e) = names::check_label_value(v.as_str().unwrap_or("")) {
                errs.push(FieldError::invalid(path, v, &e));
            }
        }
    }
    errs
}

/// Validates the spec of `kind`.
pub fn spec(kind: &str, obj: &Value) -> Vec<FieldError> {
    match kind {
        "Pod" => pod_spec("spec", obj.get("spec").unwrap_or(&Value::Null)),
        "ReplicaSet" | "Deployment" => workload(kind, obj),
        "Service" => service(obj),
        "Role" | "ClusterRole" => rbac_role(kind, obj),
        "RoleBinding" | "ClusterRoleBinding" => rbac_binding(kind, obj),
        _ => Vec::new(),
    }
}

fn non_negative(path: &str, v: Option<&Value>) -> Option<FieldError> {
    let v = v?;
    (v.as_i64().is_some_and(|n| n < 0))
        .then(|| FieldError::invalid(path, v, "must be greater than or equal to 0"))
}

/// Validates a PodSpec found at `path`.
pub fn pod_spec(path: &str, spec: &Value) -> Vec<FieldError> {
    let mut errs = Vec::new();
    let containers = spec.get("containers").and_then(Value::as_array);
    match containers {
        None => errs.push(FieldError::required(format!("{path}.containers"))),
        Some(cs) if cs.is_empty() => errs.push(FieldError::required(format!("{path}.containers"))),
        Some(cs) => {
            let mut seen = Vec::new();
            for (i, c) in cs.iter().enumerate() {
                let cp = format!("{path}.containers[{i}]");
                let name = c.get("name").and_then(Value::as_str).unwrap_or("");
                if name.is_empty() {
                    errs.push(FieldError::required(format!("{cp}.name")));
                } else if let Some(e) = names::check_dns1123_label(name) {
                    errs.push(FieldError::invalid(format!("{cp}.name"), &c["name"], &e));
                } else if seen.contains(&name) {
                    errs.push(FieldError {
                        reason: "FieldValueDuplicate",
                        message: format!("{cp}.name: Duplicate value: {name:?}"),
                        field: format!("{cp}.name"),
                    });
                }
                seen.push(name);
                if c.get("image").and_then(Value::as_str).is_none_or(str::is_empty) {
                    errs.push(FieldError::required(format!("{cp}.image")));
                }
                for (j, p) in c.get("ports").and_then(Value::as_array).into_iter().flatten().enumerate() {
                    let pp = format!("{cp}.ports[{j}].containerPort");
                    match p.get("containerPort").and_then(Value::as_i64) {
                        None => errs.push(FieldError::required(pp)),
                        Some(n) if !(1..=65535).contains(&n) => errs.push(FieldError::invalid(
                            pp,
                            &p["containerPort"],
                            "must be between 1 and 65535, inclusive",
                        )),
                        _ => {}
                    }
                }
            }
        }
    }
    if let Some(rp) = spec.get("restartPolicy") {
        let allowed = ["Always", "OnFailure", "Never"];
        if !rp.as_str().is_some_and(|s| allowed.contains(&s)) {
            errs.push(FieldError::not_supported(format!("{path}.restartPolicy"), rp, &allowed));
        }
    }
    errs
}

fn workload(kind: &str, obj: &Value) -> Vec<FieldError> {
    let mut errs = Vec::new();
    let spec = obj.get("spec").unwrap_or(&Value::Null);
    errs.extend(non_negative("spec.replicas", spec.get("replicas")));
    match spec.get("selector") {
        None | Some(Value::Null) => errs.push(FieldError::required("spec.selector")),
        Some(sel) => match LabelSelector::from_object(sel) {
            Err(e) => errs.push(FieldError::invalid("spec.selector", sel, &e.to_string())),
            Ok(s) if s.is_empty() => errs.push(FieldError::invalid(
                "spec.selector",
                sel,
                "empty selector is invalid for deployment",
            )),
            Ok(s) => {
                let tl = spec.pointer("/template/metadata/labels");
                let tmpl = serde_json::json!({"metadata":{"labels": tl.cloned().unwrap_or(Value::Null)}});
                if !s.matches_object(&tmpl) {
                    errs.push(FieldError::invalid(
                        "spec.template.metadata.labels",
                        tl.unwrap_or(&Value::Null),
                        "`selector` does not match template `labels`",
                    ));
                }
            }
        },
    }
    errs.extend(labels("spec.template.metadata.labels", spec.pointer("/template/metadata/labels")));
    errs.extend(pod_spec("spec.template.spec", spec.pointer("/template/spec").unwrap_or(&Value::Null)));
    if let Some(rp) = spec.pointer("/template/spec/restartPolicy")
        && rp.as_str() != Some("Always")
    {
        errs.push(FieldError::not_supported("spec.template.spec.restartPolicy", rp, &["Always"]));
    }
    if kind == "Deployment" {
        errs.extend(non_negative("spec.revisionHistoryLimit", spec.get("revisionHistoryLimit")));
        let ru = spec.pointer("/strategy/rollingUpdate");
        let zero = |v: Option<&Value>| match v {
            Some(Value::Number(n)) => n.as_i64() == Some(0),
            Some(Value::String(s)) => s == "0%" || s == "0",
            _ => false,
        };
        if let Some(ru) = ru
            && zero(ru.get("maxSurge"))
            && zero(ru.get("maxUnavailable"))
        {
            errs.push(FieldError::invalid(
                "spec.strategy.rollingUpdate.maxUnavailable",
                &ru["maxUnavailable"],
                "may not be 0 when `maxSurge` is 0",
            ));
        }
    }
    errs
}

fn service(obj: &Value) -> Vec<FieldError> {
    let mut errs = Vec::new();
    let spec = obj.get("spec").unwrap_or(&Value::Null);
    let ty = spec.get("type").and_then(Value::as_str).unwrap_or("ClusterIP");
    let allowed = ["ClusterIP", "NodePort", "LoadBalancer", "ExternalName"];
    if !allowed.contains(&ty) {
        errs.push(FieldError::not_supported("spec.type", &spec["type"], &allowed));
        return errs;
    }
    if ty == "ExternalName" {
        return errs;
    }
    let ports = spec.get("ports").and_then(Value::as_array);
    // A headless Service (clusterIP None) may have no ports, as in kube-apiserver.
    let headless = spec.get("clusterIP").and_then(Value::as_str) == Some("None");
    if ports.is_none_or(Vec::is_empty) && !headless {
        errs.push(FieldError::required("spec.ports"));
    }
    for (i, p) in ports.into_iter().flatten().enumerate() {
        let pp = format!("spec.ports[{i}]");
        match p.get("port").and_then(Value::as_i64) {
            None => errs.push(FieldError::required(format!("{pp}.port"))),
            Some(n) if !(1..=65535).contains(&n) => errs.push(FieldError::invalid(
                format!("{pp}.port"),
                &p["port"],
                "must be between 1 and 65535, inclusive",
            )),
            _ => {}
        }
        if let Some(proto) = p.get("protocol") {
            let protos = ["TCP", "UDP", "SCTP"];
            if !proto.as_str().is_some_and(|s| protos.contains(&s)) {
                errs.push(FieldError::not_supported(format!("{pp}.protocol"), proto, &protos));
            }
        }
        if p.get("nodePort").is_some_and(|n| !n.is_null()) && ty == "ClusterIP" {
            errs.push(FieldError::invalid(
                format!("{pp}.nodePort"),
                &p["nodePort"],
                "may not be used when `type` is 'ClusterIP'",
            ));
        }
        if ports.is_some_and(|ps| ps.len() > 1)
            && p.get("name").and_then(Value::as_str).is_none_or(str::is_empty)
        {
            errs.push(FieldError::required(format!("{pp}.name")));
        }
    }
    errs
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn names_and_labels() {
        let e = metadata("Pod", &json!({"metadata":{"name":"Bad_Name"}}));
        assert_eq!(e.len(), 1);
        assert_eq!(e[0].field, "metadata.name");
        assert!(e[0].message.starts_with("metadata.name: Invalid value: \"Bad_Name\": a lowercase RFC 1123"));
        assert_eq!(metadata("Pod", &json!({"metadata":{}}))[0].reason, "FieldValueRequired");
        assert!(metadata("Service", &json!({"metadata":{"name":"a.b"}})).len() == 1);
        assert!(metadata("ConfigMap", &json!({"metadata":{"name":"a.b","labels":{"x":"-"}}})).len() == 1);
    }

    #[test]
    fn workloads() {
        let ok = json!({"spec":{"replicas":3,"selector":{"matchLabels":{"app":"a"}},
            "template":{"metadata":{"labels":{"app":"a"}},"spec":{"containers":[{"name":"c","image":"i"}]}}}});
        assert!(spec("ReplicaSet", &ok).is_empty());
        let mut bad = ok.clone();
        bad["spec"]["replicas"] = json!(-1);
        bad["spec"]["template"]["metadata"]["labels"]["app"] = json!("b");
        let e = spec("Deployment", &bad);
        assert_eq!(e.len(), 2);
        assert_eq!(e[0].message, "spec.replicas: Invalid value: -1: must be greater than or equal to 0");
        let nosel = json!({"spec":{"template":{"spec":{"containers":[]}}}});
        let e = spec("ReplicaSet", &nosel);
        assert!(e.iter().any(|e| e.field == "spec.selector"));
        assert!(e.iter().any(|e| e.field == "spec.template.spec.containers"));
    }

    #[test]
    fn services() {
        let s = json!({"spec":{"type":"NodePort","ports":[{"port":80},{"port":70000,"name":"x"}]}});
        let e = spec("Service", &s);
        assert!(e.iter().any(|e| e.field == "spec.ports[0].name"));
        assert!(e.iter().any(|e| e.field == "spec.ports[1].port"));
        assert!(!spec("Service", &json!({"spec":{"type":"Weird"}})).is_empty());
        assert!(!spec("Service", &json!({"spec":{"type":"ClusterIP"}})).is_empty(), "ports are required");
        assert!(spec("Service", &json!({"spec":{"clusterIP":"None"}})).is_empty(), "but not when headless");
    }
}

/// Validates a typed Pod (metadata and spec), for manifests loaded outside the API server.
pub fn validate_pod(pod: &k8s_openapi::api::core::v1::Pod) -> Vec<FieldError> {
    let v = serde_json::to_value(pod).unwrap_or(Value::Null);
    let mut errs = metadata("Pod", &v);
    errs.extend(spec("Pod", &v));
    errs
}

#[cfg(test)]
mod typed_tests {
    use super::*;

    #[test]
    fn typed_pod() {
        let pod: k8s_openapi::api::core::v1::Pod = serde_json::from_value(serde_json::json!({
            "metadata":{"name":"p"},"spec":{"containers":[{"name":"Bad","image":"x"}]}}))
        .unwrap();
        let errs = validate_pod(&pod);
        assert_eq!(errs.len(), 1);
        assert_eq!(errs[0].field, "spec.containers[0].name");
    }
}
