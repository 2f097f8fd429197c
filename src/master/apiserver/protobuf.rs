//! Protobuf request bodies (`application/vnd.kubernetes.protobuf`): kubectl's typed calls
//! (`create serviceaccount|role|rolebinding|configmap|secret|namespace|token|service|deployment`,
//! `auth can-i`)
//! send their objects this way. The envelope is kube's `k8s\0` magic followed by a
//! `runtime.Unknown` naming the kind; the object is decoded with k8s-pb's generated messages and
//! turned into the JSON the registry handles. Kinds not listed here answer 415 as before.

use super::status::ApiStatus;
use base64::Engine;
use k8s_pb::api::{
    apps::v1 as apps, authentication::v1 as authn, authorization::v1 as authz, core::v1 as core,
    rbac::v1 as rbac,
};
use k8s_pb::apimachinery::pkg::api::resource::Quantity;
use k8s_pb::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta};
use k8s_pb::apimachinery::pkg::runtime::Unknown;
use k8s_pb::apimachinery::pkg::util::intstr::IntOrString;
use prost::Message;
use serde_json::{Map, Value, json};

const MAGIC: &[u8] = b"k8s\0";

fn bad(e: impl std::fmt::Display) -> ApiStatus {
    ApiStatus::bad_request(format!("invalid protobuf body: {e}"))
}

fn put<T: serde::Serialize>(m: &mut Map<String, Value>, key: &str, v: Option<T>) {
    if let Some(v) = v {
        m.insert(key.into(), json!(v));
    }
}

/// Go's zero values: kube's protobuf encodes non-pointer fields even when zero, where JSON omits
/// them (`omitempty`).
trait Zero {
    fn is_zero(&self) -> bool;
}

impl Zero for String {
    fn is_zero(&self) -> bool {
        self.is_empty()
    }
}

impl Zero for i32 {
    fn is_zero(&self) -> bool {
        *self == 0
    }
}

impl Zero for bool {
    fn is_zero(&self) -> bool {
        !*self
    }
}

/// Like [`put`] for an `omitempty` field that is not a pointer in Go: its zero value means unset.
fn put_nz<T: serde::Serialize + Zero>(m: &mut Map<String, Value>, key: &str, v: Option<T>) {
    put(m, key, v.filter(|v| !v.is_zero()));
}

fn put_list<T: serde::Serialize>(m: &mut Map<String, Value>, key: &str, v: Vec<T>) {
    if !v.is_empty() {
        m.insert(key.into(), json!(v));
    }
}

fn meta(md: Option<ObjectMeta>) -> Value {
    let md = md.unwrap_or_default();
    let mut m = Map::new();
    put_nz(&mut m, "name", md.name);
    put_nz(&mut m, "generateName", md.generate_name);
    put_nz(&mut m, "namespace", md.namespace);
    put_nz(&mut m, "resourceVersion", md.resource_version);
    put_nz(&mut m, "uid", md.uid);
    if !md.labels.is_empty() {
        m.insert("labels".into(), json!(md.labels));
    }
    if !md.annotations.is_empty() {
        m.insert("annotations".into(), json!(md.annotations));
    }
    put_list(&mut m, "finalizers", md.finalizers);
    Value::Object(m)
}

fn rules(rs: Vec<rbac::PolicyRule>) -> Value {
    Value::Array(
        rs.into_iter()
            .map(|r| {
                let mut m = Map::new();
                m.insert("verbs".into(), json!(r.verbs));
                put_list(&mut m, "apiGroups", r.api_groups);
                put_list(&mut m, "resources", r.resources);
                put_list(&mut m, "resourceNames", r.resource_names);
                put_list(&mut m, "nonResourceURLs", r.non_resource_ur_ls);
                Value::Object(m)
            })
            .collect(),
    )
}

fn binding(subjects: Vec<rbac::Subject>, role_ref: Option<rbac::RoleRef>) -> (Value, Value) {
    let subjects = subjects
        .into_iter()
        .map(|s| {
            let mut m = Map::new();
            put(&mut m, "kind", s.kind);
            put(&mut m, "apiGroup", s.api_group);
            put(&mut m, "name", s.name);
            put(&mut m, "namespace", s.namespace);
            Value::Object(m)
        })
        .collect();
    let rr = role_ref.unwrap_or_default();
    let role_ref = json!({"apiGroup": rr.api_group.unwrap_or_default(), "kind": rr.kind.unwrap_or_default(),
        "name": rr.name.unwrap_or_default()});
    (Value::Array(subjects), role_ref)
}

fn int_or_string(v: Option<IntOrString>) -> Option<Value> {
    v.map(|v| match (v.r#type, v.int_val, v.str_val) {
        (Some(1), _, Some(s)) => json!(s),
        (_, i, _) => json!(i.unwrap_or(0)),
    })
}

fn selector(sel: Option<LabelSelector>) -> Option<Value> {
    sel.map(|sel| {
        let mut m = Map::new();
        if !sel.match_labels.is_empty() {
            m.insert("matchLabels".into(), json!(sel.match_labels));
        }
        let exprs: Vec<Value> = sel
            .match_expressions
            .into_iter()
            .map(|e| json!({"key": e.key, "operator": e.operator, "values": e.values}))
            .collect();
        put_list(&mut m, "matchExpressions", exprs);
        Value::Object(m)
    })
}

fn service_spec(spec: core::ServiceSpec) -> Value {
    let mut m = Map::new();
    let ports: Vec<Value> = spec
        .ports
        .into_iter()
        .map(|p| {
            let mut pm = Map::new();
            put_nz(&mut pm, "name", p.name);
            put_nz(&mut pm, "protocol", p.protocol);
            put(&mut pm, "appProtocol", p.app_protocol);
            put(&mut pm, "port", p.port);
            // `omitempty`: a zero IntOrString is unset.
            put(
                &mut pm,
                "targetPort",
                int_or_string(p.target_port).filter(|v| v != &json!(0) && v != &json!("")),
            );
            put_nz(&mut pm, "nodePort", p.node_port);
            Value::Object(pm)
        })
        .collect();
    put_list(&mut m, "ports", ports);
    if !spec.selector.is_empty() {
        m.insert("selector".into(), json!(spec.selector));
    }
    put_nz(&mut m, "clusterIP", spec.cluster_ip);
    put_list(&mut m, "clusterIPs", spec.cluster_ips);
    put_nz(&mut m, "type", spec.r#type);
    put_list(&mut m, "externalIPs", spec.external_ips);
    put_nz(&mut m, "sessionAffinity", spec.session_affinity);
    put_nz(&mut m, "loadBalancerIP", spec.load_balancer_ip);
    put_list(&mut m, "loadBalancerSourceRanges", spec.load_balancer_source_ranges);
    put_nz(&mut m, "externalName", spec.external_name);
    put_nz(&mut m, "externalTrafficPolicy", spec.external_traffic_policy);
    put_nz(&mut m, "healthCheckNodePort", spec.health_check_node_port);
    put_nz(&mut m, "publishNotReadyAddresses", spec.publish_not_ready_addresses);
    if let Some(c) = spec.session_affinity_config {
        let timeout = c.client_ip.and_then(|c| c.timeout_seconds);
        m.insert("sessionAffinityConfig".into(), json!({"clientIP": {"timeoutSeconds": timeout}}));
    }
    put_list(&mut m, "ipFamilies", spec.ip_families);
    put(&mut m, "ipFamilyPolicy", spec.ip_family_policy);
    put(&mut m, "allocateLoadBalancerNodePorts", spec.allocate_load_balancer_node_ports);
    put(&mut m, "loadBalancerClass", spec.load_balancer_class);
    put(&mut m, "internalTrafficPolicy", spec.internal_traffic_policy);
    put(&mut m, "trafficDistribution", spec.traffic_distribution);
    Value::Object(m)
}

fn quantities(q: std::collections::BTreeMap<String, Quantity>) -> Value {
    Value::Object(q.into_iter().map(|(k, v)| (k, json!(v.string.unwrap_or_default()))).collect())
}

/// A container's fields this decoder maps, with the JSON they stand for.
fn container(c: &core::Container) -> (core::Container, Value) {
    let env: Vec<core::EnvVar> = c
        .env
        .iter()
        .map(|e| core::EnvVar { name: e.name.clone(), value: e.value.clone(), value_from: None })
        .collect();
    let resources = c.resources.as_ref().map(|r| core::ResourceRequirements {
        limits: r.limits.clone(),
        requests: r.requests.clone(),
        claims: vec![],
    });
    let covered = core::Container {
        name: c.name.clone(),
        image: c.image.clone(),
        command: c.command.clone(),
        args: c.args.clone(),
        working_dir: c.working_dir.clone(),
        ports: c.ports.clone(),
        env,
        resources,
        image_pull_policy: c.image_pull_policy.clone(),
        termination_message_path: c.termination_message_path.clone(),
        termination_message_policy: c.termination_message_policy.clone(),
        stdin: c.stdin,
        stdin_once: c.stdin_once,
        tty: c.tty,
        ..Default::default()
    };
    let mut m = Map::new();
    let c = covered.clone();
    put_nz(&mut m, "name", c.name);
    put_nz(&mut m, "image", c.image);
    put_list(&mut m, "command", c.command);
    put_list(&mut m, "args", c.args);
    put_nz(&mut m, "workingDir", c.working_dir);
    let ports: Vec<Value> = c
        .ports
        .into_iter()
        .map(|p| {
            let mut pm = Map::new();
            put_nz(&mut pm, "name", p.name);
            put_nz(&mut pm, "hostPort", p.host_port);
            put(&mut pm, "containerPort", p.container_port);
            put_nz(&mut pm, "protocol", p.protocol);
            put_nz(&mut pm, "hostIP", p.host_ip);
            Value::Object(pm)
        })
        .collect();
    put_list(&mut m, "ports", ports);
    let env: Vec<Value> = c.env.into_iter().map(|e| json!({"name": e.name, "value": e.value})).collect();
    put_list(&mut m, "env", env);
    if let Some(r) = c.resources {
        let mut rm = Map::new();
        if !r.limits.is_empty() {
            rm.insert("limits".into(), quantities(r.limits));
        }
        if !r.requests.is_empty() {
            rm.insert("requests".into(), quantities(r.requests));
        }
        m.insert("resources".into(), Value::Object(rm));
    }
    put_nz(&mut m, "imagePullPolicy", c.image_pull_policy);
    put_nz(&mut m, "terminationMessagePath", c.termination_message_path);
    put_nz(&mut m, "terminationMessagePolicy", c.termination_message_policy);
    put_nz(&mut m, "stdin", c.stdin);
    put_nz(&mut m, "stdinOnce", c.stdin_once);
    put_nz(&mut m, "tty", c.tty);
    (covered, Value::Object(m))
}

/// A pod template as JSON; the template must set only fields this decoder maps (what `kubectl
/// create deployment` writes and the common scalars), anything else is refused with 415 so the
/// client can send JSON rather than lose a field.
fn pod_template(t: Option<core::PodTemplateSpec>, path: &str) -> Result<Value, ApiStatus> {
    let t = t.unwrap_or_default();
    let spec = t.spec.unwrap_or_default();
    let (containers, json_containers): (Vec<_>, Vec<_>) = spec.containers.iter().map(container).unzip();
    let covered = core::PodSpec {
        containers,
        restart_policy: spec.restart_policy.clone(),
        termination_grace_period_seconds: spec.termination_grace_period_seconds,
        active_deadline_seconds: spec.active_deadline_seconds,
        dns_policy: spec.dns_policy.clone(),
        node_selector: spec.node_selector.clone(),
        service_account_name: spec.service_account_name.clone(),
        service_account: spec.service_account.clone(),
        automount_service_account_token: spec.automount_service_account_token,
        node_name: spec.node_name.clone(),
        host_network: spec.host_network,
        host_pid: spec.host_pid,
        host_ipc: spec.host_ipc,
        share_process_namespace: spec.share_process_namespace,
        priority_class_name: spec.priority_class_name.clone(),
        priority: spec.priority,
        hostname: spec.hostname.clone(),
        subdomain: spec.subdomain.clone(),
        scheduler_name: spec.scheduler_name.clone(),
        enable_service_links: spec.enable_service_links,
        ..Default::default()
    };
    if covered != spec {
        return Err(ApiStatus::unsupported_body(format!(
            "{path}: this protobuf body sets pod fields rkube-master reads only from JSON; send the object as application/json"
        )));
    }
    let mut m = Map::new();
    m.insert("containers".into(), Value::Array(json_containers));
    put_nz(&mut m, "restartPolicy", spec.restart_policy);
    put(&mut m, "terminationGracePeriodSeconds", spec.termination_grace_period_seconds);
    put(&mut m, "activeDeadlineSeconds", spec.active_deadline_seconds);
    put_nz(&mut m, "dnsPolicy", spec.dns_policy);
    if !spec.node_selector.is_empty() {
        m.insert("nodeSelector".into(), json!(spec.node_selector));
    }
    put_nz(&mut m, "serviceAccountName", spec.service_account_name);
    put_nz(&mut m, "serviceAccount", spec.service_account);
    put(&mut m, "automountServiceAccountToken", spec.automount_service_account_token);
    put_nz(&mut m, "nodeName", spec.node_name);
    put_nz(&mut m, "hostNetwork", spec.host_network);
    put_nz(&mut m, "hostPID", spec.host_pid);
    put_nz(&mut m, "hostIPC", spec.host_ipc);
    put(&mut m, "shareProcessNamespace", spec.share_process_namespace);
    put_nz(&mut m, "priorityClassName", spec.priority_class_name);
    put(&mut m, "priority", spec.priority);
    put_nz(&mut m, "hostname", spec.hostname);
    put_nz(&mut m, "subdomain", spec.subdomain);
    put_nz(&mut m, "schedulerName", spec.scheduler_name);
    put(&mut m, "enableServiceLinks", spec.enable_service_links);
    Ok(json!({"metadata": meta(t.metadata), "spec": m}))
}

fn deployment_spec(spec: apps::DeploymentSpec) -> Result<Value, ApiStatus> {
    let mut m = Map::new();
    put(&mut m, "replicas", spec.replicas);
    put(&mut m, "selector", selector(spec.selector));
    m.insert("template".into(), pod_template(spec.template, "spec.template.spec")?);
    if let Some(st) = spec.strategy {
        let mut sm = Map::new();
        put_nz(&mut sm, "type", st.r#type);
        if let Some(ru) = st.rolling_update {
            let mut rm = Map::new();
            put(&mut rm, "maxUnavailable", int_or_string(ru.max_unavailable));
            put(&mut rm, "maxSurge", int_or_string(ru.max_surge));
            sm.insert("rollingUpdate".into(), Value::Object(rm));
        }
        m.insert("strategy".into(), Value::Object(sm));
    }
    put_nz(&mut m, "minReadySeconds", spec.min_ready_seconds);
    put(&mut m, "revisionHistoryLimit", spec.revision_history_limit);
    put_nz(&mut m, "paused", spec.paused);
    put(&mut m, "progressDeadlineSeconds", spec.progress_deadline_seconds);
    Ok(Value::Object(m))
}

fn decode_as<M: Message + Default>(raw: &[u8]) -> Result<M, ApiStatus> {
    M::decode(raw).map_err(bad)
}

/// Decodes a protobuf body into the JSON object it stands for.
pub fn decode(body: &[u8]) -> Result<Value, ApiStatus> {
    let rest = body.strip_prefix(MAGIC).ok_or_else(|| bad("missing the k8s protobuf prefix"))?;
    let unknown = Unknown::decode(rest).map_err(bad)?;
    let tm = unknown.type_meta.unwrap_or_default();
    let (api_version, kind) = (tm.api_version.unwrap_or_default(), tm.kind.unwrap_or_default());
    let raw = unknown.raw.unwrap_or_default();
    let b64 = |v: &Vec<u8>| base64::engine::general_purpose::STANDARD.encode(v);
    let mut obj = match (api_version.as_str(), kind.as_str()) {
        ("v1", "ServiceAccount") => {
            let o: core::ServiceAccount = decode_as(&raw)?;
            let mut m = Map::new();
            m.insert("metadata".into(), meta(o.metadata));
            put(&mut m, "automountServiceAccountToken", o.automount_service_account_token);
            let pulls: Vec<Value> =
                o.image_pull_secrets.into_iter().map(|r| json!({"name": r.name})).collect();
            put_list(&mut m, "imagePullSecrets", pulls);
            let secrets: Vec<Value> =
                o.secrets.into_iter().map(|r| json!({"name": r.name, "namespace": r.namespace})).collect();
            put_list(&mut m, "secrets", secrets);
            Value::Object(m)
        }
        ("v1", "ConfigMap") => {
            let o: core::ConfigMap = decode_as(&raw)?;
            let mut m = Map::new();
            m.insert("metadata".into(), meta(o.metadata));
            put(&mut m, "immutable", o.immutable);
            if !o.data.is_empty() {
                m.insert("data".into(), json!(o.data));
            }
            if !o.binary_data.is_empty() {
                let bd: Map<String, Value> =
                    o.binary_data.iter().map(|(k, v)| (k.clone(), json!(b64(v)))).collect();
                m.insert("binaryData".into(), Value::Object(bd));
            }
            Value::Object(m)
        }
        ("v1", "Secret") => {
            let o: core::Secret = decode_as(&raw)?;
            let mut m = Map::new();
            m.insert("metadata".into(), meta(o.metadata));
            put(&mut m, "immutable", o.immutable);
            put(&mut m, "type", o.r#type);
            if !o.data.is_empty() {
                let d: Map<String, Value> = o.data.iter().map(|(k, v)| (k.clone(), json!(b64(v)))).collect();
                m.insert("data".into(), Value::Object(d));
            }
            if !o.string_data.is_empty() {
                m.insert("stringData".into(), json!(o.string_data));
            }
            Value::Object(m)
        }
        ("v1", "Namespace") => {
            let o: core::Namespace = decode_as(&raw)?;
            let fin = o.spec.map(|s| s.finalizers).unwrap_or_default();
            json!({"metadata": meta(o.metadata), "spec": if fin.is_empty() { json!({}) } else { json!({"finalizers": fin}) }})
        }
        ("v1", "Service") => {
            let o: core::Service = decode_as(&raw)?;
            json!({"metadata": meta(o.metadata), "spec": service_spec(o.spec.unwrap_or_default())})
        }
        ("apps/v1", "Deployment") => {
            let o: apps::Deployment = decode_as(&raw)?;
            json!({"metadata": meta(o.metadata), "spec": deployment_spec(o.spec.unwrap_or_default())?})
        }
        ("rbac.authorization.k8s.io/v1", "Role") => {
            let o: rbac::Role = decode_as(&raw)?;
            json!({"metadata": meta(o.metadata), "rules": rules(o.rules)})
        }
        ("rbac.authorization.k8s.io/v1", "ClusterRole") => {
            let o: rbac::ClusterRole = decode_as(&raw)?;
            json!({"metadata": meta(o.metadata), "rules": rules(o.rules)})
        }
        ("rbac.authorization.k8s.io/v1", "RoleBinding") => {
            let o: rbac::RoleBinding = decode_as(&raw)?;
            let (subjects, role_ref) = binding(o.subjects, o.role_ref);
            json!({"metadata": meta(o.metadata), "subjects": subjects, "roleRef": role_ref})
        }
        ("rbac.authorization.k8s.io/v1", "ClusterRoleBinding") => {
            let o: rbac::ClusterRoleBinding = decode_as(&raw)?;
            let (subjects, role_ref) = binding(o.subjects, o.role_ref);
            json!({"metadata": meta(o.metadata), "subjects": subjects, "roleRef": role_ref})
        }
        ("authentication.k8s.io/v1", "TokenRequest") => {
            let o: authn::TokenRequest = decode_as(&raw)?;
            let spec = o.spec.unwrap_or_default();
            let mut s = Map::new();
            s.insert("audiences".into(), json!(spec.audiences));
            put(&mut s, "expirationSeconds", spec.expiration_seconds);
            if let Some(b) = spec.bound_object_ref {
                s.insert(
                    "boundObjectRef".into(),
                    json!({"kind": b.kind, "apiVersion": b.api_version, "name": b.name, "uid": b.u_id}),
                );
            }
            json!({"metadata": meta(o.metadata), "spec": s})
        }
        ("authentication.k8s.io/v1", "SelfSubjectReview") => json!({"metadata": {}}),
        ("authorization.k8s.io/v1", "SelfSubjectAccessReview") => {
            let o: authz::SelfSubjectAccessReview = decode_as(&raw)?;
            let spec = o.spec.unwrap_or_default();
            let mut s = Map::new();
            if let Some(ra) = spec.resource_attributes {
                let mut m = Map::new();
                put(&mut m, "namespace", ra.namespace);
                put(&mut m, "verb", ra.verb);
                put(&mut m, "group", ra.group);
                put(&mut m, "version", ra.version);
                put(&mut m, "resource", ra.resource);
                put(&mut m, "subresource", ra.subresource);
                put(&mut m, "name", ra.name);
                s.insert("resourceAttributes".into(), Value::Object(m));
            }
            if let Some(nra) = spec.non_resource_attributes {
                s.insert("nonResourceAttributes".into(), json!({"path": nra.path, "verb": nra.verb}));
            }
            json!({"metadata": meta(o.metadata), "spec": s})
        }
        ("authorization.k8s.io/v1", "SelfSubjectRulesReview") => {
            let o: authz::SelfSubjectRulesReview = decode_as(&raw)?;
            json!({"metadata": meta(o.metadata), "spec": {"namespace": o.spec.and_then(|s| s.namespace)}})
        }
        _ => {
            return Err(ApiStatus::unsupported_body(format!(
                "rkube-master does not decode {api_version} {kind} from protobuf; send it as application/json"
            )));
        }
    };
    obj["apiVersion"] = json!(api_version);
    obj["kind"] = json!(kind);
    Ok(obj)
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_pb::apimachinery::pkg::runtime::TypeMeta;

    fn envelope<M: Message>(api_version: &str, kind: &str, m: &M) -> Vec<u8> {
        let u = Unknown {
            type_meta: Some(TypeMeta { api_version: Some(api_version.into()), kind: Some(kind.into()) }),
            raw: Some(m.encode_to_vec()),
            content_encoding: Some(String::new()),
            content_type: Some(String::new()),
        };
        [MAGIC, &u.encode_to_vec()].concat()
    }

    #[test]
    fn decodes_typed_bodies() {
        let rb = rbac::RoleBinding {
            metadata: Some(ObjectMeta { name: Some("rb".into()), ..Default::default() }),
            subjects: vec![rbac::Subject {
                kind: Some("ServiceAccount".into()),
                name: Some("bot".into()),
                namespace: Some("team".into()),
                api_group: Some(String::new()),
            }],
            role_ref: Some(rbac::RoleRef {
                api_group: Some("rbac.authorization.k8s.io".into()),
                kind: Some("ClusterRole".into()),
                name: Some("view".into()),
            }),
        };
        let v = decode(&envelope("rbac.authorization.k8s.io/v1", "RoleBinding", &rb)).unwrap();
        assert_eq!(v["roleRef"]["name"], "view");
        assert_eq!(v["subjects"][0]["namespace"], "team");
        assert_eq!(v["metadata"]["name"], "rb");
        let tr = authn::TokenRequest {
            spec: Some(authn::TokenRequestSpec {
                audiences: vec!["a".into()],
                expiration_seconds: Some(700),
                bound_object_ref: None,
            }),
            ..Default::default()
        };
        let v = decode(&envelope("authentication.k8s.io/v1", "TokenRequest", &tr)).unwrap();
        assert_eq!(v["spec"], json!({"audiences": ["a"], "expirationSeconds": 700}));
        let pod = core::Pod::default();
        assert_eq!(decode(&envelope("v1", "Pod", &pod)).unwrap_err().code, 415);
        assert_eq!(decode(b"{}").unwrap_err().code, 400);
    }
}
