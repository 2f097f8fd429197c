//! Protobuf request bodies (`application/vnd.kubernetes.protobuf`): kubectl's typed calls
//! (`create serviceaccount|role|rolebinding|configmap|secret|namespace|token`, `auth can-i`)
//! send their objects this way. The envelope is kube's `k8s\0` magic followed by a
//! `runtime.Unknown` naming the kind; the object is decoded with k8s-pb's generated messages and
//! turned into the JSON the registry handles. Kinds not listed here answer 415 as before.

use super::status::ApiStatus;
use base64::Engine;
use k8s_pb::api::{
    authentication::v1 as authn, authorization::v1 as authz, core::v1 as core, rbac::v1 as rbac,
};
use k8s_pb::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use k8s_pb::apimachinery::pkg::runtime::Unknown;
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

fn put_list<T: serde::Serialize>(m: &mut Map<String, Value>, key: &str, v: Vec<T>) {
    if !v.is_empty() {
        m.insert(key.into(), json!(v));
    }
}

fn meta(md: Option<ObjectMeta>) -> Value {
    let md = md.unwrap_or_default();
    let mut m = Map::new();
    put(&mut m, "name", md.name);
    put(&mut m, "generateName", md.generate_name);
    put(&mut m, "namespace", md.namespace);
    put(&mut m, "resourceVersion", md.resource_version);
    put(&mut m, "uid", md.uid);
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
        _ => return Err(ApiStatus::unsupported_media("application/vnd.kubernetes.protobuf")),
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
