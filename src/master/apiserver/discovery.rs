//! `/version`, legacy discovery (`/api`, `/apis`, per group/version resource lists) and
//! aggregated discovery (apidiscovery.k8s.io/v2).

use super::resources::{self, RESOURCES, ResourceInfo};
use serde_json::{Value, json};

/// Content type of aggregated discovery answers.
pub const AGGREGATED_CT: &str = "application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList";

/// True when the client accepts aggregated discovery.
pub fn wants_aggregated(accept: &str) -> bool {
    accept.contains("as=APIGroupDiscoveryList") && accept.contains("v=v2;")
}

/// The `/version` document (minor 32: see the kubectl dispatcher trap).
pub fn version() -> Value {
    json!({"major":"1","minor":"32","gitVersion":"v1.32.0-rkube","gitCommit":"rkube","gitTreeState":"clean",
        "buildDate":"2026-01-01T00:00:00Z","goVersion":"go1.23","compiler":"gc","platform":"linux/amd64"})
}

/// `GET /api`.
pub fn api_versions(server_address: &str) -> Value {
    json!({"kind":"APIVersions","versions":["v1"],
        "serverAddressByClientCIDRs":[{"clientCIDR":"0.0.0.0/0","serverAddress": server_address}]})
}

fn named_groups() -> Vec<(&'static str, Vec<&'static str>)> {
    let mut out: Vec<(&str, Vec<&str>)> = Vec::new();
    for (g, v) in resources::group_versions() {
        if g.is_empty() {
            continue;
        }
        match out.iter_mut().find(|(name, _)| *name == g) {
            Some((_, vs)) => vs.push(v),
            None => out.push((g, vec![v])),
        }
    }
    // Served by the API server itself (metrics-server's group, made from node stats).
    out.push((super::metricsapi::GROUP, vec![super::metricsapi::VERSION]));
    out
}

/// `GET /apis`.
pub fn api_group_list() -> Value {
    let groups: Vec<Value> = named_groups()
        .into_iter()
        .map(|(g, vs)| {
            let versions: Vec<Value> =
                vs.iter().map(|v| json!({"groupVersion": format!("{g}/{v}"), "version": v})).collect();
            json!({"name": g, "versions": versions, "preferredVersion": versions[0].clone()})
        })
        .collect();
    json!({"kind":"APIGroupList","apiVersion":"v1","groups": groups})
}

/// `GET /apis/<group>` (a single group).
pub fn api_group(group: &str) -> Option<Value> {
    let (g, vs) = named_groups().into_iter().find(|(g, _)| *g == group)?;
    let versions: Vec<Value> =
        vs.iter().map(|v| json!({"groupVersion": format!("{g}/{v}"), "version": v})).collect();
    Some(
        json!({"kind":"APIGroup","apiVersion":"v1","name": g, "versions": versions, "preferredVersion": versions[0].clone()}),
    )
}

fn sub_kind(r: &ResourceInfo, sub: &str) -> (&'static str, &'static str, &'static str) {
    match sub {
        "scale" => ("autoscaling", "v1", "Scale"),
        "binding" => ("", "v1", "Binding"),
        "exec" => ("", "v1", "PodExecOptions"),
        "portforward" => ("", "v1", "PodPortForwardOptions"),
        _ => ("", "", r.kind),
    }
}

fn sub_verbs(sub: &str) -> Vec<&'static str> {
    match sub {
        "binding" => vec!["create"],
        "log" => vec!["get"],
        "exec" | "portforward" => vec!["create", "get"],
        _ => vec!["get", "patch", "update"],
    }
}

/// `GET /api/v1` or `GET /apis/<group>/<version>`.
pub fn resource_list(group: &str, version: &str) -> Option<Value> {
    if group == super::metricsapi::GROUP && version == super::metricsapi::VERSION {
        return Some(super::metricsapi::resource_list());
    }
    let rs: Vec<&ResourceInfo> =
        RESOURCES.iter().filter(|r| r.group == group && r.version == version).collect();
    if rs.is_empty() {
        return None;
    }
    let mut out = Vec::new();
    for r in &rs {
        out.push(
            json!({"name": r.plural, "singularName": r.singular, "namespaced": r.namespaced, "kind": r.kind,
            "verbs": resources::verbs(), "shortNames": r.short_names, "categories": r.categories}),
        );
        for sub in r.subresources {
            let (g, v, k) = sub_kind(r, sub);
            let mut e = json!({"name": format!("{}/{sub}", r.plural), "singularName": "", "namespaced": r.namespaced,
                "kind": k, "verbs": sub_verbs(sub)});
            if !g.is_empty() {
                e["group"] = json!(g);
                e["version"] = json!(v);
            }
            out.push(e);
        }
    }
    let gv = if group.is_empty() { version.to_string() } else { format!("{group}/{version}") };
    Some(json!({"kind":"APIResourceList","apiVersion":"v1","groupVersion": gv, "resources": out}))
}

fn aggregated_group(group: &str, versions: &[&str]) -> Value {
    let vs: Vec<Value> = versions
        .iter()
        .map(|v| {
            let res: Vec<Value> = RESOURCES
                .iter()
                .filter(|r| r.group == group && r.version == *v)
                .map(|r| {
                    let subs: Vec<Value> = r
                        .subresources
                        .iter()
                        .map(|s| {
                            let (g, sv, k) = sub_kind(r, s);
                            json!({"subresource": s, "responseKind": {"group": g, "version": sv, "kind": k}, "verbs": sub_verbs(s)})
                        })
                        .collect();
                    json!({"resource": r.plural, "responseKind": {"group": "", "version": "", "kind": r.kind},
                        "scope": if r.namespaced { "Namespaced" } else { "Cluster" },
                        "singularResource": r.singular, "shortNames": r.short_names, "categories": r.categories,
                        "verbs": resources::verbs(), "subresources": subs})
                })
                .collect();
            json!({"version": v, "freshness": "Current", "resources": res})
        })
        .collect();
    let metadata = if group.is_empty() { json!({}) } else { json!({"name": group}) };
    json!({"metadata": metadata, "versions": vs})
}

/// Aggregated discovery for `/api` (core) or `/apis` (named groups).
pub fn aggregated(core: bool) -> Value {
    let items: Vec<Value> = if core {
        vec![aggregated_group("", &["v1"])]
    } else {
        named_groups()
            .iter()
            .map(|(g, vs)| {
                if *g == super::metricsapi::GROUP {
                    super::metricsapi::aggregated_group()
                } else {
                    aggregated_group(g, vs)
                }
            })
            .collect()
    };
    json!({"kind":"APIGroupDiscoveryList","apiVersion":"apidiscovery.k8s.io/v2","metadata":{},"items": items})
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn documents() {
        let l = resource_list("apps", "v1").unwrap();
        let names: Vec<&str> =
            l["resources"].as_array().unwrap().iter().map(|r| r["name"].as_str().unwrap()).collect();
        assert!(names.contains(&"deployments/scale"));
        let scale =
            l["resources"].as_array().unwrap().iter().find(|r| r["name"] == "deployments/scale").unwrap();
        assert_eq!(scale["group"], "autoscaling");
        assert!(resource_list("nope", "v1").is_none());
        let groups = api_group_list();
        assert!(groups["groups"].as_array().unwrap().iter().any(|g| g["name"] == "extensions"));
        let agg = aggregated(true);
        assert_eq!(agg["items"][0]["metadata"], json!({}));
        assert!(wants_aggregated(
            "application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList,application/json"
        ));
        assert_eq!(version()["minor"], "32");
        // kubectl top finds metrics.k8s.io in both discovery forms.
        assert!(groups["groups"].as_array().unwrap().iter().any(|g| g["name"] == "metrics.k8s.io"));
        let agg = aggregated(false);
        let m = agg["items"]
            .as_array()
            .unwrap()
            .iter()
            .find(|g| g["metadata"]["name"] == "metrics.k8s.io")
            .unwrap();
        assert_eq!(m["versions"][0]["resources"][1]["resource"], "pods");
        assert_eq!(
            resource_list("metrics.k8s.io", "v1beta1").unwrap()["resources"][0]["kind"],
            "NodeMetrics"
        );
    }
}
