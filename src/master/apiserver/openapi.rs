//! OpenAPI v3 per group/version: the schemas of every served kind, generated from k8s-openapi's
//! `schemars` support (descriptions, types, `$ref`s) with each kind's
//! `x-kubernetes-group-version-kind` (what `kubectl explain` looks up), and one PATCH operation per
//! kind advertising `fieldValidation` (which makes kubectl send `fieldValidation=Strict` and skip
//! client-side validation). Documents are built once and cached.

use super::resources::{self, RESOURCES};
use schemars::generate::{SchemaGenerator, SchemaSettings};
use serde_json::{Map, Value, json};
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::sync::OnceLock;

fn gv_path(group: &str, version: &str) -> String {
    if group.is_empty() { format!("api/{version}") } else { format!("apis/{group}/{version}") }
}

/// Registers the schema of `T` (and everything it refers to) and returns its name.
fn add<T: schemars::JsonSchema>(g: &mut SchemaGenerator) -> String {
    let _ = g.subschema_for::<T>();
    T::schema_name().into_owned()
}

/// The schema name of a served kind, registered in `g`.
fn kind_schema(g: &mut SchemaGenerator, kind: &str) -> Option<String> {
    use k8s_openapi::api::{
        apps::v1 as apps, coordination::v1 as coord, core::v1 as core, discovery::v1 as disc,
        rbac::v1 as rbac,
    };
    Some(match kind {
        "Pod" => add::<core::Pod>(g),
        "Service" => add::<core::Service>(g),
        "ConfigMap" => add::<core::ConfigMap>(g),
        "Secret" => add::<core::Secret>(g),
        "Node" => add::<core::Node>(g),
        "Namespace" => add::<core::Namespace>(g),
        "Event" => add::<core::Event>(g),
        "Endpoints" => add::<core::Endpoints>(g),
        "ServiceAccount" => add::<core::ServiceAccount>(g),
        "Deployment" => add::<apps::Deployment>(g),
        "ReplicaSet" => add::<apps::ReplicaSet>(g),
        "Lease" => add::<coord::Lease>(g),
        "EndpointSlice" => add::<disc::EndpointSlice>(g),
        "Role" => add::<rbac::Role>(g),
        "ClusterRole" => add::<rbac::ClusterRole>(g),
        "RoleBinding" => add::<rbac::RoleBinding>(g),
        "ClusterRoleBinding" => add::<rbac::ClusterRoleBinding>(g),
        _ => return None,
    })
}

fn build(group: &str, version: &str) -> Option<Value> {
    let mut paths = Map::new();
    let mut g = SchemaSettings::openapi3().into_generator();
    let mut kinds = Vec::new();
    for r in RESOURCES.iter().filter(|r| r.group == group && r.version == version) {
        let base = if r.namespaced {
            format!("/{}/namespaces/{{namespace}}/{}/{{name}}", gv_path(group, version), r.plural)
        } else {
            format!("/{}/{}/{{name}}", gv_path(group, version), r.plural)
        };
        let op = json!({"patch": {
            "x-kubernetes-group-version-kind": {"group": group, "version": version, "kind": r.kind},
            "parameters": [{"name": "fieldValidation", "in": "query", "schema": {"type": "string"}}],
            "requestBody": {"content": {"application/merge-patch+json": {"schema": {}}, "application/json-patch+json": {"schema": {}},
                "application/apply-patch+yaml": {"schema": {}}}},
            "responses": {"200": {"description": "OK"}}}});
        paths.insert(base, op);
        if let Some(name) = kind_schema(&mut g, r.kind) {
            kinds.push((name, r.kind));
        }
    }
    if paths.is_empty() {
        return None;
    }
    let mut schemas = g.take_definitions(true);
    for (name, kind) in kinds {
        if let Some(s) = schemas.get_mut(&name).and_then(Value::as_object_mut) {
            s.insert(
                "x-kubernetes-group-version-kind".into(),
                json!([{"group": group, "version": version, "kind": kind}]),
            );
        }
    }
    Some(json!({"openapi": "3.0.0", "info": {"title": "Kubernetes", "version": "v1.32.0"},
        "components": {"schemas": schemas}, "paths": paths}))
}

/// Every document, built on first use: (JSON text, hash) by group/version path.
fn documents() -> &'static HashMap<String, (String, String)> {
    static DOCS: OnceLock<HashMap<String, (String, String)>> = OnceLock::new();
    DOCS.get_or_init(|| {
        resources::group_versions()
            .into_iter()
            .filter_map(|(g, v)| {
                let text = build(g, v)?.to_string();
                let hash = hex::encode(&Sha256::digest(text.as_bytes())[..8]);
                Some((gv_path(g, v), (text, hash)))
            })
            .collect()
    })
}

/// The document for one group/version (JSON text), or None.
pub fn document(group: &str, version: &str) -> Option<&'static str> {
    documents().get(&gv_path(group, version)).map(|(t, _)| t.as_str())
}

/// The root `/openapi/v3` index with content hashes in the URLs.
pub fn index() -> Value {
    let mut paths = Map::new();
    for (p, (_, hash)) in documents() {
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
        let d: Value = serde_json::from_str(document("apps", "v1").unwrap()).unwrap();
        let op = &d["paths"]["/apis/apps/v1/namespaces/{namespace}/deployments/{name}"]["patch"];
        assert_eq!(op["x-kubernetes-group-version-kind"]["kind"], "Deployment");
        let schemas = &d["components"]["schemas"];
        let deploy = &schemas["io.k8s.api.apps.v1.Deployment"];
        assert_eq!(deploy["x-kubernetes-group-version-kind"][0]["kind"], "Deployment");
        let strategy = &schemas["io.k8s.api.apps.v1.DeploymentStrategy"];
        assert!(strategy["description"].as_str().unwrap().contains("how to replace existing pods"));
        assert!(strategy["properties"]["rollingUpdate"].to_string().contains("#/components/schemas/"));
        let core: Value = serde_json::from_str(document("", "v1").unwrap()).unwrap();
        assert!(core["paths"]["/api/v1/nodes/{name}"].is_object());
        assert!(core["components"]["schemas"]["io.k8s.api.core.v1.Pod"].is_object());
        assert!(document("x", "v1").is_none());
    }
}
