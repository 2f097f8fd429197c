//! A minimal OpenAPI v3: one PATCH operation per kind advertising `fieldValidation`, which makes
//! kubectl send `fieldValidation=Strict` and skip client-side validation.

use super::resources::{self, RESOURCES};
use serde_json::{Map, Value, json};
use sha2::{Digest, Sha256};

fn gv_path(group: &str, version: &str) -> String {
    if group.is_empty() { format!("api/{version}") } else { format!("apis/{group}/{version}") }
}

/// The document for one group/version, or None.
pub fn document(group: &str, version: &str) -> Option<Value> {
    let mut paths = Map::new();
    for r in RESOURCES.iter().filter(|r| r.group == group && r.version == version) {
        let base = if r.namespaced {
            format!("/{}/namespaces/{{namespace}}/{}/{{name}}", gv_path(group, version), r.plural)
        } else {
            format!("/{}/{}/{{name}}", gv_path(group, version), r.plural)
        };
        let op = json!({"patch": {
            "x-kubernetes-group-version-kind": {"group": group, "version": version, "kind": r.kind},
            "parameters": [{"name": "fieldValidation", "in": "query", "schema": {"type": "string"}}],
            "requestBody": {"content": {"application/merge-patch+json": {"schema": {}}, "application/json-patch+json": {"schema": {}}}},
            "responses": {"200": {"description": "OK"}}}});
        paths.insert(base, op);
    }
    if paths.is_empty() {
        return None;
    }
    Some(
        json!({"openapi":"3.0.0","info":{"title":"Kubernetes","version":"v1.32.0"},"components":{"schemas":{}},"paths": paths}),
    )
}

/// The root `/openapi/v3` index with content hashes in the URLs.
pub fn index() -> Value {
    let mut paths = Map::new();
    for (g, v) in resources::group_versions() {
        let doc = document(g, v).unwrap_or(Value::Null);
        let hash = hex::encode(&Sha256::digest(doc.to_string().as_bytes())[..8]);
        let p = gv_path(g, v);
        paths.insert(p.clone(), json!({"serverRelativeURL": format!("/openapi/v3/{p}?hash={hash}")}));
    }
    json!({ "paths": paths })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn index_and_documents() {
        let i = index();
        assert!(
            i["paths"]["apis/apps/v1"]["serverRelativeURL"]
                .as_str()
                .unwrap()
                .starts_with("/openapi/v3/apis/apps/v1?hash=")
        );
        let d = document("apps", "v1").unwrap();
        let op = &d["paths"]["/apis/apps/v1/namespaces/{namespace}/deployments/{name}"]["patch"];
        assert_eq!(op["x-kubernetes-group-version-kind"]["kind"], "Deployment");
        assert!(document("", "v1").unwrap()["paths"]["/api/v1/nodes/{name}"].is_object());
        assert!(document("x", "v1").is_none());
    }
}
