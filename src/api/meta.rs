//! Accessors for object metadata on JSON objects.

use serde_json::{Map, Value, json};

/// `metadata.name` or "".
pub fn name(obj: &Value) -> &str {
    obj.pointer("/metadata/name").and_then(Value::as_str).unwrap_or("")
}

/// `metadata.namespace` or "".
pub fn namespace(obj: &Value) -> &str {
    obj.pointer("/metadata/namespace").and_then(Value::as_str).unwrap_or("")
}

/// `metadata.uid` or "".
pub fn uid(obj: &Value) -> &str {
    obj.pointer("/metadata/uid").and_then(Value::as_str).unwrap_or("")
}

/// `metadata.resourceVersion` or "".
pub fn resource_version(obj: &Value) -> &str {
    obj.pointer("/metadata/resourceVersion").and_then(Value::as_str).unwrap_or("")
}

/// The `metadata` map, created if missing.
pub fn metadata_mut(obj: &mut Value) -> &mut Map<String, Value> {
    if !obj.is_object() {
        *obj = json!({});
    }
    let root = obj.as_object_mut().expect("object");
    let md = root.entry("metadata").or_insert_with(|| json!({}));
    if !md.is_object() {
        *md = json!({});
    }
    md.as_object_mut().expect("object")
}

/// Sets a metadata string field.
pub fn set_str(obj: &mut Value, field: &str, value: &str) {
    metadata_mut(obj).insert(field.into(), Value::String(value.into()));
}

/// A metadata annotation value.
pub fn annotation<'a>(obj: &'a Value, key: &str) -> Option<&'a str> {
    obj.pointer("/metadata/annotations")?.get(key)?.as_str()
}

/// `metadata.finalizers` as strings.
pub fn finalizers(obj: &Value) -> Vec<String> {
    obj.pointer("/metadata/finalizers")
        .and_then(Value::as_array)
        .map(|a| a.iter().filter_map(|v| v.as_str().map(String::from)).collect())
        .unwrap_or_default()
}

/// The controller owner reference, if any.
pub fn controller_ref(obj: &Value) -> Option<&Value> {
    obj.pointer("/metadata/ownerReferences")?
        .as_array()?
        .iter()
        .find(|r| r.get("controller").and_then(Value::as_bool) == Some(true))
}

/// Reads `path` (JSON pointer) as i64.
pub fn int_at(obj: &Value, path: &str) -> Option<i64> {
    obj.pointer(path).and_then(Value::as_i64)
}

/// Reads `path` (JSON pointer) as &str.
pub fn str_at<'a>(obj: &'a Value, path: &str) -> Option<&'a str> {
    obj.pointer(path).and_then(Value::as_str)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accessors() {
        let mut o = json!({"metadata":{"name":"a","finalizers":["x"],
            "ownerReferences":[{"uid":"1","controller":true}],"annotations":{"k":"v"}}});
        assert_eq!(name(&o), "a");
        assert_eq!(namespace(&o), "");
        assert_eq!(finalizers(&o), vec!["x"]);
        assert_eq!(annotation(&o, "k"), Some("v"));
        assert!(controller_ref(&o).is_some());
        set_str(&mut o, "namespace", "default");
        assert_eq!(namespace(&o), "default");
        let mut empty = json!(null);
        set_str(&mut empty, "name", "b");
        assert_eq!(name(&empty), "b");
    }
}
