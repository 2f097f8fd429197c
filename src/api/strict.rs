//! Strict decoding of Kubernetes objects: typed values plus the list of fields the type does not
//! know (the API server's `fieldValidation=Strict`, and `rkubelet run`'s manifest check).
//!
//! k8s-openapi types ignore unknown fields, so the check round-trips: decode, encode again, and
//! report every key of the input that did not survive. Nulls and empty collections are not
//! reported: they carry no information the type could have dropped.

use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value;

/// Why an object could not be decoded.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum DecodeError {
    /// A field has the wrong type or value; `field` is a dotted path like `spec.replicas`.
    #[error("{field}: {message}")]
    Invalid { field: String, message: String },
    /// Fields the type does not have.
    #[error("unknown field{} {}", if .0.len() == 1 { "" } else { "s" }, quoted(.0))]
    Unknown(Vec<String>),
}

fn quoted(fields: &[String]) -> String {
    fields.iter().map(|f| format!("\"{f}\"")).collect::<Vec<_>>().join(", ")
}

/// Decodes `value` as `T` and lists the fields `T` does not know.
pub fn decode<T: DeserializeOwned + Serialize>(value: &Value) -> Result<(T, Vec<String>), DecodeError> {
    let typed: T = serde_path_to_error::deserialize(value).map_err(|e| DecodeError::Invalid {
        field: field_path(&e.path().to_string()),
        message: e.inner().to_string(),
    })?;
    let round_trip = serde_json::to_value(&typed)
        .map_err(|e| DecodeError::Invalid { field: String::new(), message: e.to_string() })?;
    let mut unknown = Vec::new();
    dropped_fields(value, &round_trip, &mut String::new(), &mut unknown);
    Ok((typed, unknown))
}

/// Decodes `value` as `T`, failing on any unknown field.
pub fn decode_strict<T: DeserializeOwned + Serialize>(value: &Value) -> Result<T, DecodeError> {
    let (typed, unknown) = decode(value)?;
    if unknown.is_empty() { Ok(typed) } else { Err(DecodeError::Unknown(unknown)) }
}

/// serde_path_to_error writes `.` for the root and `a.b[0].c` otherwise.
fn field_path(path: &str) -> String {
    if path == "." { String::new() } else { path.to_string() }
}

fn dropped_fields(input: &Value, kept: &Value, path: &mut String, out: &mut Vec<String>) {
    match (input, kept) {
        (Value::Object(input), Value::Object(kept)) => {
            for (key, value) in input {
                let len = path.len();
                if !path.is_empty() {
                    path.push('.');
                }
                path.push_str(key);
                match kept.get(key) {
                    Some(kept_value) => dropped_fields(value, kept_value, path, out),
                    None if carries_information(value) => out.push(path.clone()),
                    None => {}
                }
                path.truncate(len);
            }
        }
        (Value::Array(input), Value::Array(kept)) => {
            for (i, (value, kept_value)) in input.iter().zip(kept).enumerate() {
                let len = path.len();
                path.push_str(&format!("[{i}]"));
                dropped_fields(value, kept_value, path, out);
                path.truncate(len);
            }
        }
        _ => {}
    }
}

fn carries_information(value: &Value) -> bool {
    match value {
        Value::Null => false,
        Value::Array(a) => !a.is_empty(),
        Value::Object(o) => !o.is_empty(),
        _ => true,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::apps::v1::ReplicaSet;
    use k8s_openapi::api::core::v1::Pod;
    use serde_json::json;

    #[test]
    fn reports_unknown_fields_with_paths() {
        let pod = json!({
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": "p", "labels": {}, "creationTimestamp": null, "colour": "blue"},
            "spec": {"containers": [
                {"name": "a", "image": "nginx", "args": []},
                {"name": "b", "image": "nginx", "imagePullPolicyy": "Always", "ports": [{"containerPort": 80, "nmae": "x"}]}
            ]}
        });
        let (_, unknown) = decode::<Pod>(&pod).unwrap();
        assert_eq!(
            unknown,
            ["metadata.colour", "spec.containers[1].imagePullPolicyy", "spec.containers[1].ports[0].nmae"]
        );
        let err = decode_strict::<Pod>(&pod).unwrap_err();
        assert!(err.to_string().starts_with("unknown fields \"metadata.colour\""), "{err}");
    }

    #[test]
    fn accepts_the_seed_replicaset() {
        let rs = json!({
            "apiVersion": "apps/v1", "kind": "ReplicaSet",
            "metadata": {"name": "replicaset-nginx"},
            "spec": {"replicas": 3, "selector": {"matchLabels": {"app": "my-nginx-pods-label"}},
                "template": {"metadata": {"name": "my-nginx-pod", "labels": {"app": "my-nginx-pods-label"}},
                    "spec": {"containers": [{"name": "nginx", "image": "nginx:latest", "ports": [{"containerPort": 80}]}]}}}
        });
        let rs: ReplicaSet = decode_strict(&rs).unwrap();
        assert_eq!(rs.spec.unwrap().replicas, Some(3));
    }

    #[test]
    fn wrong_types_name_the_field() {
        let rs = json!({"metadata": {"name": "x"}, "spec": {"replicas": "three", "selector": {}}});
        let err = decode::<ReplicaSet>(&rs).unwrap_err();
        match err {
            DecodeError::Invalid { field, .. } => assert_eq!(field, "spec.replicas"),
            other => panic!("{other:?}"),
        }
    }
}
