//! Strategic merge patch for the built-in kinds: lists of structs merge by key, directives
//! (`$patch`, `$setElementOrder/…`, `$retainKeys`, `$deleteFromPrimitiveList/…`) are interpreted
//! and never stored.

use serde_json::{Map, Value};

/// The patch is malformed.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum StrategicError {
    #[error("invalid $patch directive {0:?}")]
    BadDirective(String),
}

/// The merge key of a list field, or None when the list is replaced atomically.
fn merge_key(field: &str, items: &[Value]) -> Option<&'static str> {
    Some(match field {
        "containers" | "initContainers" | "ephemeralContainers" | "volumes" | "env" | "imagePullSecrets" => {
            "name"
        }
        "volumeMounts" => "mountPath",
        "volumeDevices" => "devicePath",
        "ownerReferences" => "uid",
        "conditions" => "type",
        "hostAliases" => "ip",
        "topologySpreadConstraints" => "topologyKey",
        "addresses" => "type",
        "ports" => {
            let container_like = items.iter().any(|i| i.get("containerPort").is_some());
            if container_like { "containerPort" } else { "port" }
        }
        _ => return None,
    })
}

/// Primitive lists that merge as sets.
fn merges_as_set(field: &str) -> bool {
    matches!(field, "finalizers")
}

/// Applies a strategic merge patch to `target`.
pub fn apply(target: &Value, patch: &Value) -> Result<Value, StrategicError> {
    merge_value(target, patch, "")
}

fn merge_value(target: &Value, patch: &Value, field: &str) -> Result<Value, StrategicError> {
    match (target, patch) {
        (Value::Object(t), Value::Object(p)) => merge_map(t, p).map(Value::Object),
        (Value::Array(t), Value::Array(p)) => merge_list(t, p, field),
        (_, Value::Object(p)) => merge_map(&Map::new(), p).map(Value::Object),
        (_, Value::Array(p)) => merge_list(&[], p, field),
        (_, p) => Ok(p.clone()),
    }
}

fn merge_map(
    target: &Map<String, Value>,
    patch: &Map<String, Value>,
) -> Result<Map<String, Value>, StrategicError> {
    match patch.get("$patch").and_then(Value::as_str) {
        Some("replace") => return Ok(strip_directives(patch)),
        Some("delete") => return Ok(Map::new()),
        Some("merge") | None => {}
        Some(other) => return Err(StrategicError::BadDirective(other.into())),
    }
    let mut out = target.clone();
    for (k, v) in patch {
        if k == "$patch" || k.starts_with("$setElementOrder/") || k == "$retainKeys" {
            continue;
        }
        if let Some(field) = k.strip_prefix("$deleteFromPrimitiveList/") {
            if let (Some(Value::Array(list)), Some(del)) = (out.get_mut(field), v.as_array()) {
                list.retain(|x| !del.contains(x));
            }
            continue;
        }
        if v.is_null() {
            out.remove(k);
            continue;
        }
        let merged = match out.get(k) {
            Some(existing) => merge_value(existing, v, k)?,
            None => merge_value(&Value::Null, v, k)?,
        };
        out.insert(k.clone(), merged);
    }
    if let Some(Value::Array(keep)) = patch.get("$retainKeys") {
        let keep: Vec<&str> = keep.iter().filter_map(Value::as_str).collect();
        out.retain(|k, _| keep.contains(&k.as_str()));
    }
    // Order lists as requested by `$setElementOrder/<field>`.
    for (k, order) in patch {
        let Some(field) = k.strip_prefix("$setElementOrder/") else { continue };
        let (Some(Value::Array(list)), Some(order)) = (out.get_mut(field), order.as_array()) else {
            continue;
        };
        if let Some(key) = merge_key(field, order) {
            let pos = |v: &Value| order.iter().position(|o| o.get(key) == v.get(key)).unwrap_or(usize::MAX);
            list.sort_by_key(pos);
        }
    }
    Ok(out)
}

fn strip_directives(m: &Map<String, Value>) -> Map<String, Value> {
    m.iter().filter(|(k, _)| !k.starts_with('$')).map(|(k, v)| (k.clone(), v.clone())).collect()
}

fn merge_list(target: &[Value], patch: &[Value], field: &str) -> Result<Value, StrategicError> {
    // A `{"$patch":"replace"}` element replaces the whole list with the other elements.
    if patch.iter().any(|p| p.get("$patch").and_then(Value::as_str) == Some("replace")) {
        let items = patch.iter().filter(|p| p.get("$patch").is_none()).cloned().collect();
        return Ok(Value::Array(items));
    }
    if merges_as_set(field) {
        let mut out = target.to_vec();
        for p in patch {
            if !out.contains(p) {
                out.push(p.clone());
            }
        }
        return Ok(Value::Array(out));
    }
    let Some(key) = merge_key(field, patch).filter(|_| patch.iter().all(Value::is_object)) else {
        return Ok(Value::Array(
            patch.iter().map(|p| merge_value(&Value::Null, p, "")).collect::<Result<_, _>>()?,
        ));
    };
    let mut out: Vec<Value> = target.to_vec();
    for p in patch {
        let id = p.get(key);
        let idx = out.iter().position(|t| t.get(key) == id && id.is_some());
        let delete = p.get("$patch").and_then(Value::as_str) == Some("delete");
        match (idx, delete) {
            (Some(i), true) => {
                out.remove(i);
            }
            (None, true) => {}
            (Some(i), false) => out[i] = merge_value(&out[i], p, "")?,
            (None, false) => out.push(merge_value(&Value::Null, p, "")?),
        }
    }
    Ok(Value::Array(out))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn set_image_keeps_ports() {
        let d = json!({"metadata":{"annotations":{"a":"1"}},"spec":{"template":{"spec":{"containers":[
            {"name":"nginx","image":"nginx:1.10","ports":[{"containerPort":80}]},
            {"name":"side","image":"busybox"}]}}}});
        let p = json!({"metadata":{"annotations":{"kubernetes.io/change-cause":"x"}},
            "spec":{"template":{"spec":{"$setElementOrder/containers":[{"name":"side"},{"name":"nginx"}],
            "containers":[{"image":"nginx:1.11","name":"nginx"}]}}}});
        let r = apply(&d, &p).unwrap();
        let cs = r["spec"]["template"]["spec"]["containers"].as_array().unwrap();
        assert_eq!(cs[1]["image"], "nginx:1.11");
        assert_eq!(cs[1]["ports"][0]["containerPort"], 80);
        assert_eq!(cs[0]["name"], "side");
        assert_eq!(r["metadata"]["annotations"]["a"], "1");
        assert!(r.to_string().find('$').is_none());
    }

    #[test]
    fn directives() {
        let t = json!({"spec":{"ports":[{"port":80,"name":"a"},{"port":81,"name":"b"}],"x":{"y":1,"z":2}},
            "metadata":{"finalizers":["f1"]}});
        let p = json!({"spec":{"ports":[{"port":81,"$patch":"delete"}],"x":{"$patch":"replace","q":3}},
            "metadata":{"finalizers":["f2"],"$deleteFromPrimitiveList/finalizers":["f1"]}});
        let r = apply(&t, &p).unwrap();
        assert_eq!(r["spec"]["ports"].as_array().unwrap().len(), 1);
        assert_eq!(r["spec"]["x"], json!({"q":3}));
        assert_eq!(r["metadata"]["finalizers"], json!(["f2"]));
        let r2 = apply(&t, &json!({"spec":{"x":null}})).unwrap();
        assert!(r2["spec"].get("x").is_none());
        assert!(apply(&t, &json!({"$patch":"bogus"})).is_err());
        let r3 = apply(&json!({"args":["a","b"]}), &json!({"args":["c"]})).unwrap();
        assert_eq!(r3["args"], json!(["c"]));
    }
}
