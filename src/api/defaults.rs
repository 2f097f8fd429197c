//! Defaulting of built-in kinds, applied to JSON objects on every write (like the API server's
//! `SetDefaults_*` functions). Only the defaults clients actually observe are applied.

use base64::Engine;
use serde_json::{Map, Value, json};

fn obj_mut<'a>(v: &'a mut Value, key: &str) -> &'a mut Map<String, Value> {
    if !v.is_object() {
        *v = json!({});
    }
    let m = v.as_object_mut().expect("object");
    let e = m.entry(key).or_insert_with(|| json!({}));
    if !e.is_object() {
        *e = json!({});
    }
    e.as_object_mut().expect("object")
}

fn set_default(m: &mut Map<String, Value>, key: &str, value: Value) {
    if m.get(key).is_none_or(Value::is_null) {
        m.insert(key.into(), value);
    }
}

/// Applies the defaults for `kind` (apps/v1 or core/v1 shapes).
pub fn apply(kind: &str, obj: &mut Value) {
    match kind {
        "Pod" => pod(obj),
        "ReplicaSet" => replica_set(obj),
        "Deployment" => deployment(obj),
        "Service" => service(obj),
        "Secret" => secret(obj),
        "Namespace" => {
            set_default(obj_mut(obj, "status"), "phase", json!("Active"));
            set_default(obj_mut(obj, "spec"), "finalizers", json!(["kubernetes"]));
        }
        _ => {}
    }
}

fn image_pull_policy(image: &str) -> &'static str {
    let last = image.rsplit('/').next().unwrap_or(image);
    if image.contains('@') {
        "IfNotPresent"
    } else {
        match last.split_once(':') {
            Some((_, "latest")) | None => "Always",
            Some(_) => "IfNotPresent",
        }
    }
}

fn containers(list: Option<&mut Value>) {
    let Some(Value::Array(cs)) = list else { return };
    for c in cs.iter_mut().filter_map(Value::as_object_mut) {
        let image = c.get("image").and_then(Value::as_str).unwrap_or("").to_string();
        set_default(c, "imagePullPolicy", json!(image_pull_policy(&image)));
        set_default(c, "terminationMessagePath", json!("/dev/termination-log"));
        set_default(c, "terminationMessagePolicy", json!("File"));
        set_default(c, "resources", json!({}));
        if let Some(Value::Array(ports)) = c.get_mut("ports") {
            for p in ports.iter_mut().filter_map(Value::as_object_mut) {
                set_default(p, "protocol", json!("TCP"));
            }
        }
    }
}

/// Defaults for a PodSpec (also used inside templates).
pub fn pod_spec(spec: &mut Map<String, Value>) {
    set_default(spec, "restartPolicy", json!("Always"));
    set_default(spec, "terminationGracePeriodSeconds", json!(30));
    set_default(spec, "dnsPolicy", json!("ClusterFirst"));
    set_default(spec, "securityContext", json!({}));
    set_default(spec, "schedulerName", json!("default-scheduler"));
    containers(spec.get_mut("containers"));
    containers(spec.get_mut("initContainers"));
}

fn pod(obj: &mut Value) {
    pod_spec(obj_mut(obj, "spec"));
    let status = obj_mut(obj, "status");
    set_default(status, "phase", json!("Pending"));
    let qos = qos_class(obj.get("spec").unwrap_or(&Value::Null));
    set_default(obj_mut(obj, "status"), "qosClass", json!(qos));
}

/// The QoS class of a pod spec: Guaranteed, Burstable or BestEffort.
pub fn qos_class(spec: &Value) -> &'static str {
    let cs: Vec<&Value> =
        spec.get("containers").and_then(Value::as_array).map(|a| a.iter().collect()).unwrap_or_default();
    let has = |c: &Value, part: &str| {
        c.pointer(&format!("/resources/{part}")).and_then(Value::as_object).is_some_and(|m| !m.is_empty())
    };
    if cs.iter().all(|c| !has(c, "requests") && !has(c, "limits")) {
        return "BestEffort";
    }
    let guaranteed = cs.iter().all(|c| {
        let l = c.pointer("/resources/limits");
        let r = c.pointer("/resources/requests");
        ["cpu", "memory"].iter().all(|k| {
            l.and_then(|l| l.get(k)).is_some()
                && r.and_then(|r| r.get(k)).is_none_or(|rv| Some(rv) == l.and_then(|l| l.get(k)))
        })
    });
    if guaranteed { "Guaranteed" } else { "Burstable" }
}

fn template(spec: &mut Map<String, Value>) {
    if let Some(t) = spec.get_mut("template") {
        pod_spec(obj_mut(t, "spec"));
    }
}

fn replica_set(obj: &mut Value) {
    let spec = obj_mut(obj, "spec");
    set_default(spec, "replicas", json!(1));
    template(spec);
}

fn deployment(obj: &mut Value) {
    let spec = obj_mut(obj, "spec");
    set_default(spec, "replicas", json!(1));
    set_default(spec, "revisionHistoryLimit", json!(10));
    set_default(spec, "progressDeadlineSeconds", json!(600));
    set_default(spec, "strategy", json!({}));
    if let Some(strategy) = spec.get_mut("strategy").and_then(Value::as_object_mut) {
        set_default(strategy, "type", json!("RollingUpdate"));
        if strategy.get("type").and_then(Value::as_str) == Some("RollingUpdate") {
            set_default(strategy, "rollingUpdate", json!({}));
            if let Some(ru) = strategy.get_mut("rollingUpdate").and_then(Value::as_object_mut) {
                set_default(ru, "maxSurge", json!("25%"));
                set_default(ru, "maxUnavailable", json!("25%"));
            }
        }
    }
    template(spec);
}

/// Converts an `extensions/v1beta1` Deployment to apps/v1: the selector defaults to the template
/// labels and the old rollback/template fields are dropped.
pub fn convert_extensions_deployment(obj: &mut Value) {
    if let Some(m) = obj.as_object_mut() {
        m.insert("apiVersion".into(), json!("apps/v1"));
    }
    let labels = obj.pointer("/spec/template/metadata/labels").cloned();
    let spec = obj_mut(obj, "spec");
    if spec.get("selector").is_none_or(Value::is_null)
        && let Some(labels) = labels
    {
        spec.insert("selector".into(), json!({ "matchLabels": labels }));
    }
    spec.remove("rollbackTo");
    spec.remove("templateGeneration");
}

fn service(obj: &mut Value) {
    let spec = obj_mut(obj, "spec");
    set_default(spec, "type", json!("ClusterIP"));
    let ty = spec.get("type").and_then(Value::as_str).unwrap_or("ClusterIP").to_string();
    if ty == "ExternalName" {
        return;
    }
    set_default(spec, "sessionAffinity", json!("None"));
    set_default(spec, "ipFamilies", json!(["IPv4"]));
    set_default(spec, "ipFamilyPolicy", json!("SingleStack"));
    set_default(spec, "internalTrafficPolicy", json!("Cluster"));
    if ty == "NodePort" || ty == "LoadBalancer" {
        set_default(spec, "externalTrafficPolicy", json!("Cluster"));
    }
    if ty == "LoadBalancer" {
        set_default(spec, "allocateLoadBalancerNodePorts", json!(true));
    }
    if let Some(Value::Array(ports)) = spec.get_mut("ports") {
        for p in ports.iter_mut().filter_map(Value::as_object_mut) {
            set_default(p, "protocol", json!("TCP"));
            if let Some(port) = p.get("port").cloned() {
                set_default(p, "targetPort", port);
            }
        }
    }
    let status = obj_mut(obj, "status");
    set_default(status, "loadBalancer", json!({}));
}

fn secret(obj: &mut Value) {
    let Some(m) = obj.as_object_mut() else { return };
    set_default(m, "type", json!("Opaque"));
    if let Some(Value::Object(sd)) = m.remove("stringData") {
        let data = m.entry("data").or_insert_with(|| json!({}));
        if let Some(data) = data.as_object_mut() {
            for (k, v) in sd {
                let s = v.as_str().unwrap_or("").as_bytes().to_vec();
                data.insert(k, json!(base64::engine::general_purpose::STANDARD.encode(s)));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deployment_defaults() {
        let mut d = json!({"spec":{"template":{"spec":{"containers":[{"name":"n","image":"nginx:1.10","ports":[{"containerPort":80}]}]}}}});
        apply("Deployment", &mut d);
        assert_eq!(d["spec"]["replicas"], 1);
        assert_eq!(d["spec"]["strategy"]["rollingUpdate"]["maxSurge"], "25%");
        let c = &d["spec"]["template"]["spec"]["containers"][0];
        assert_eq!(c["imagePullPolicy"], "IfNotPresent");
        assert_eq!(c["ports"][0]["protocol"], "TCP");
        assert_eq!(d["spec"]["template"]["spec"]["restartPolicy"], "Always");
    }

    #[test]
    fn service_and_secret_defaults() {
        let mut s = json!({"spec":{"type":"NodePort","ports":[{"port":80}]}});
        apply("Service", &mut s);
        assert_eq!(s["spec"]["ports"][0]["targetPort"], 80);
        assert_eq!(s["spec"]["externalTrafficPolicy"], "Cluster");
        let mut sec = json!({"stringData":{"a":"hi"}});
        apply("Secret", &mut sec);
        assert_eq!(sec["data"]["a"], "aGk=");
        assert_eq!(sec["type"], "Opaque");
    }

    #[test]
    fn extensions_conversion_and_qos() {
        let mut d =
            json!({"apiVersion":"extensions/v1beta1","spec":{"template":{"metadata":{"labels":{"a":"b"}}}}});
        convert_extensions_deployment(&mut d);
        assert_eq!(d["apiVersion"], "apps/v1");
        assert_eq!(d["spec"]["selector"]["matchLabels"]["a"], "b");
        assert_eq!(image_pull_policy("nginx"), "Always");
        assert_eq!(qos_class(&json!({"containers":[{}]})), "BestEffort");
        let g = json!({"containers":[{"resources":{"limits":{"cpu":"1","memory":"1Gi"}}}]});
        assert_eq!(qos_class(&g), "Guaranteed");
        let b = json!({"containers":[{"resources":{"requests":{"cpu":"1"}}}]});
        assert_eq!(qos_class(&b), "Burstable");
    }
}

/// Applies the Pod defaults to a typed Pod (for manifests loaded outside the API server).
pub fn default_pod(pod: &mut k8s_openapi::api::core::v1::Pod) {
    let Ok(mut v) = serde_json::to_value(&*pod) else { return };
    apply("Pod", &mut v);
    if let Ok(p) = serde_json::from_value(v) {
        *pod = p;
    }
}

#[cfg(test)]
mod typed_tests {
    use super::*;

    #[test]
    fn typed_pod_defaults() {
        let mut pod: k8s_openapi::api::core::v1::Pod =
            serde_json::from_value(json!({"spec":{"containers":[{"name":"c","image":"busybox"}]}})).unwrap();
        default_pod(&mut pod);
        let spec = pod.spec.unwrap();
        assert_eq!(spec.restart_policy.as_deref(), Some("Always"));
        assert_eq!(spec.containers[0].image_pull_policy.as_deref(), Some("Always"));
    }
}
