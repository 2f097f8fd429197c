//! Server-side Table output (`Accept: application/json;as=Table;g=meta.k8s.io;v=v1`): the
//! columns kubectl prints for each kind, with `PartialObjectMetadata` in every row.

use crate::api::selectors::LabelSelector;
use crate::api::{meta, time};
use serde_json::{Value, json};
use std::time::SystemTime;

/// True when the client asked for a Table.
pub fn wants_table(accept: &str) -> bool {
    accept.contains("as=Table")
}

struct Col {
    name: &'static str,
    ty: &'static str,
    priority: u8,
}

const fn c(name: &'static str, ty: &'static str, priority: u8) -> Col {
    Col { name, ty, priority }
}

fn columns(kind: &str) -> Vec<Col> {
    match kind {
        "Pod" => vec![
            c("Name", "string", 0),
            c("Ready", "string", 0),
            c("Status", "string", 0),
            c("Restarts", "string", 0),
            c("Age", "string", 0),
            c("IP", "string", 1),
            c("Node", "string", 1),
            c("Nominated Node", "string", 1),
            c("Readiness Gates", "string", 1),
        ],
        "Deployment" => vec![
            c("Name", "string", 0),
            c("Ready", "string", 0),
            c("Up-to-date", "integer", 0),
            c("Available", "integer", 0),
            c("Age", "string", 0),
            c("Containers", "string", 1),
            c("Images", "string", 1),
            c("Selector", "string", 1),
        ],
        "ReplicaSet" => vec![
            c("Name", "string", 0),
            c("Desired", "integer", 0),
            c("Current", "integer", 0),
            c("Ready", "integer", 0),
            c("Age", "string", 0),
            c("Containers", "string", 1),
            c("Images", "string", 1),
            c("Selector", "string", 1),
        ],
        "Service" => vec![
            c("Name", "string", 0),
            c("Type", "string", 0),
            c("Cluster-IP", "string", 0),
            c("External-IP", "string", 0),
            c("Port(s)", "string", 0),
            c("Age", "string", 0),
            c("Selector", "string", 1),
        ],
        "Node" => vec![
            c("Name", "string", 0),
            c("Status", "string", 0),
            c("Roles", "string", 0),
            c("Age", "string", 0),
            c("Version", "string", 0),
            c("Internal-IP", "string", 1),
            c("External-IP", "string", 1),
            c("OS-Image", "string", 1),
            c("Kernel-Version", "string", 1),
            c("Container-Runtime", "string", 1),
        ],
        "ConfigMap" => vec![c("Name", "string", 0), c("Data", "integer", 0), c("Age", "string", 0)],
        "Secret" => vec![
            c("Name", "string", 0),
            c("Type", "string", 0),
            c("Data", "integer", 0),
            c("Age", "string", 0),
        ],
        "Namespace" => vec![c("Name", "string", 0), c("Status", "string", 0), c("Age", "string", 0)],
        "Event" => vec![
            c("Last Seen", "string", 0),
            c("Type", "string", 0),
            c("Reason", "string", 0),
            c("Object", "string", 0),
            c("Message", "string", 0),
        ],
        "Endpoints" => vec![c("Name", "string", 0), c("Endpoints", "string", 0), c("Age", "string", 0)],
        "EndpointSlice" => vec![
            c("Name", "string", 0),
            c("AddressType", "string", 0),
            c("Ports", "string", 0),
            c("Endpoints", "string", 0),
            c("Age", "string", 0),
        ],
        "Lease" => vec![c("Name", "string", 0), c("Holder", "string", 0), c("Age", "string", 0)],
        _ => vec![c("Name", "string", 0), c("Age", "string", 0)],
    }
}

fn s(v: Option<&Value>) -> String {
    v.and_then(Value::as_str).unwrap_or("").to_string()
}

fn i(v: Option<&Value>) -> i64 {
    v.and_then(Value::as_i64).unwrap_or(0)
}

fn or_none(x: String) -> String {
    if x.is_empty() { "<none>".into() } else { x }
}

fn arr(v: Option<&Value>) -> &[Value] {
    v.and_then(Value::as_array).map(Vec::as_slice).unwrap_or(&[])
}

fn containers_and_images(tmpl_spec: Option<&Value>) -> (String, String) {
    let cs = arr(tmpl_spec.and_then(|s| s.get("containers")));
    let names: Vec<String> = cs.iter().map(|c| s(c.get("name"))).collect();
    let images: Vec<String> = cs.iter().map(|c| s(c.get("image"))).collect();
    (names.join(","), images.join(","))
}

fn selector_string(sel: Option<&Value>) -> String {
    sel.and_then(|s| LabelSelector::from_object(s).ok()).map(|s| s.to_string_form()).unwrap_or_default()
}

fn pod_status(pod: &Value) -> (String, String, String) {
    let total = arr(pod.pointer("/spec/containers")).len();
    let mut reason = s(pod.pointer("/status/phase"));
    if let Some(r) = pod.pointer("/status/reason").and_then(Value::as_str) {
        reason = r.to_string();
    }
    let mut ready = 0;
    let mut restarts = 0;
    for cs in arr(pod.pointer("/status/containerStatuses")).iter().rev() {
        restarts += i(cs.get("restartCount"));
        if let Some(w) = cs.pointer("/state/waiting/reason").and_then(Value::as_str) {
            reason = w.to_string();
        } else if let Some(t) = cs.pointer("/state/terminated") {
            reason = match t.get("reason").and_then(Value::as_str) {
                Some(r) => r.to_string(),
                None => format!("ExitCode:{}", i(t.get("exitCode"))),
            };
        } else if cs.pointer("/state/running").is_some()
            && cs.get("ready").and_then(Value::as_bool) == Some(true)
        {
            ready += 1;
        }
    }
    if pod.pointer("/metadata/deletionTimestamp").is_some_and(|v| !v.is_null()) {
        reason = "Terminating".into();
    }
    (format!("{ready}/{total}"), reason, restarts.to_string())
}

fn service_external(svc: &Value) -> String {
    let ty = s(svc.pointer("/spec/type"));
    let mut ext: Vec<String> = arr(svc.pointer("/spec/externalIPs")).iter().map(|v| s(Some(v))).collect();
    match ty.as_str() {
        "LoadBalancer" => {
            let ing: Vec<String> = arr(svc.pointer("/status/loadBalancer/ingress"))
                .iter()
                .map(|i| {
                    let ip = s(i.get("ip"));
                    if ip.is_empty() { s(i.get("hostname")) } else { ip }
                })
                .collect();
            ext.extend(ing);
            if ext.is_empty() { "<pending>".into() } else { ext.join(",") }
        }
        "ExternalName" => s(svc.pointer("/spec/externalName")),
        _ => or_none(ext.join(",")),
    }
}

fn service_ports(svc: &Value) -> String {
    let ports: Vec<String> = arr(svc.pointer("/spec/ports"))
        .iter()
        .map(|p| {
            let proto = s(p.get("protocol"));
            match p.get("nodePort").and_then(Value::as_i64) {
                Some(np) => format!("{}:{np}/{proto}", i(p.get("port"))),
                None => format!("{}/{proto}", i(p.get("port"))),
            }
        })
        .collect();
    or_none(ports.join(","))
}

fn node_cells(n: &Value) -> Vec<Value> {
    let conds = arr(n.pointer("/status/conditions"));
    // As kubectl's printNode: a Ready condition that is not True (False or Unknown) is NotReady;
    // Unknown only when there is no Ready condition at all.
    let mut status = match conds.iter().find(|c| c.get("type").and_then(Value::as_str) == Some("Ready")) {
        Some(c) if s(c.get("status")) == "True" => "Ready".to_string(),
        Some(_) => "NotReady".to_string(),
        None => "Unknown".to_string(),
    };
    if n.pointer("/spec/unschedulable").and_then(Value::as_bool) == Some(true) {
        status.push_str(",SchedulingDisabled");
    }
    let mut roles: Vec<String> = n
        .pointer("/metadata/labels")
        .and_then(Value::as_object)
        .map(|m| {
            m.keys()
                .filter_map(|k| k.strip_prefix("node-role.kubernetes.io/").map(String::from))
                .filter(|r| !r.is_empty())
                .collect()
        })
        .unwrap_or_default();
    roles.sort();
    let addr = |t: &str| {
        arr(n.pointer("/status/addresses"))
            .iter()
            .find(|a| a.get("type").and_then(Value::as_str) == Some(t))
            .map(|a| s(a.get("address")))
            .unwrap_or_default()
    };
    let info = |f: &str| s(n.pointer(&format!("/status/nodeInfo/{f}")));
    vec![
        json!(status),
        json!(or_none(roles.join(","))),
        json!(""),
        json!(info("kubeletVersion")),
        json!(or_none(addr("InternalIP"))),
        json!(or_none(addr("ExternalIP"))),
        json!(or_none(info("osImage"))),
        json!(or_none(info("kernelVersion"))),
        json!(or_none(info("containerRuntimeVersion"))),
    ]
}

fn cells(kind: &str, o: &Value, now: SystemTime) -> Vec<Value> {
    let name = json!(meta::name(o));
    let age = json!(time::age(o.pointer("/metadata/creationTimestamp").and_then(Value::as_str), now));
    match kind {
        "Pod" => {
            let (ready, status, restarts) = pod_status(o);
            vec![
                name,
                json!(ready),
                json!(status),
                json!(restarts),
                age,
                json!(or_none(s(o.pointer("/status/podIP")))),
                json!(or_none(s(o.pointer("/spec/nodeName")))),
                json!(or_none(s(o.pointer("/status/nominatedNodeName")))),
                json!("<none>"),
            ]
        }
        "Deployment" => {
            let (cs, is) = containers_and_images(o.pointer("/spec/template/spec"));
            vec![
                name,
                json!(format!(
                    "{}/{}",
                    i(o.pointer("/status/readyReplicas")),
                    i(o.pointer("/spec/replicas"))
                )),
                json!(i(o.pointer("/status/updatedReplicas"))),
                json!(i(o.pointer("/status/availableReplicas"))),
                age,
                json!(cs),
                json!(is),
                json!(selector_string(o.pointer("/spec/selector"))),
            ]
        }
        "ReplicaSet" => {
            let (cs, is) = containers_and_images(o.pointer("/spec/template/spec"));
            vec![
                name,
                json!(i(o.pointer("/spec/replicas"))),
                json!(i(o.pointer("/status/replicas"))),
                json!(i(o.pointer("/status/readyReplicas"))),
                age,
                json!(cs),
                json!(is),
                json!(selector_string(o.pointer("/spec/selector"))),
            ]
        }
        "Service" => {
            let sel = o
                .pointer("/spec/selector")
                .and_then(Value::as_object)
                .map(|m| {
                    m.iter()
                        .map(|(k, v)| format!("{k}={}", v.as_str().unwrap_or("")))
                        .collect::<Vec<_>>()
                        .join(",")
                })
                .unwrap_or_default();
            vec![
                name,
                json!(s(o.pointer("/spec/type"))),
                json!(or_none(s(o.pointer("/spec/clusterIP")))),
                json!(service_external(o)),
                json!(service_ports(o)),
                age,
                json!(or_none(sel)),
            ]
        }
        "Node" => {
            let mut v = node_cells(o);
            v[2] = age;
            let mut out = vec![name];
            out.extend(v);
            out
        }
        "ConfigMap" => {
            let n = o.get("data").and_then(Value::as_object).map_or(0, |m| m.len())
                + o.get("binaryData").and_then(Value::as_object).map_or(0, |m| m.len());
            vec![name, json!(n), age]
        }
        "Secret" => {
            let n = o.get("data").and_then(Value::as_object).map_or(0, |m| m.len());
            vec![name, json!(s(o.get("type"))), json!(n), age]
        }
        "Namespace" => vec![name, json!(s(o.pointer("/status/phase"))), age],
        "Event" => {
            let last = o
                .get("lastTimestamp")
                .and_then(Value::as_str)
                .or_else(|| o.get("eventTime").and_then(Value::as_str))
                .or_else(|| o.pointer("/metadata/creationTimestamp").and_then(Value::as_str));
            let obj = format!(
                "{}/{}",
                s(o.pointer("/involvedObject/kind")).to_lowercase(),
                s(o.pointer("/involvedObject/name"))
            );
            vec![
                json!(time::age(last, now)),
                json!(s(o.get("type"))),
                json!(s(o.get("reason"))),
                json!(obj),
                json!(s(o.get("message"))),
            ]
        }
        "Endpoints" => {
            let mut eps = Vec::new();
            for sub in arr(o.get("subsets")) {
                for a in arr(sub.get("addresses")) {
                    for p in arr(sub.get("ports")) {
                        eps.push(format!("{}:{}", s(a.get("ip")), i(p.get("port"))));
                    }
                }
            }
            vec![name, json!(or_none(eps.join(","))), age]
        }
        "Lease" => vec![name, json!(or_none(s(o.pointer("/spec/holderIdentity")))), age],
        "EndpointSlice" => {
            // As kubectl prints them: ports, then at most three addresses and "+ N more...".
            let ports: Vec<String> =
                arr(o.get("ports")).iter().map(|p| i(p.get("port")).to_string()).collect();
            let addrs: Vec<String> = arr(o.get("endpoints"))
                .iter()
                .flat_map(|e| arr(e.get("addresses")).iter().map(|a| s(Some(a))).collect::<Vec<_>>())
                .collect();
            let mut eps = addrs.iter().take(3).cloned().collect::<Vec<_>>().join(",");
            if addrs.len() > 3 {
                eps.push_str(&format!(" + {} more...", addrs.len() - 3));
            }
            vec![
                name,
                json!(s(o.get("addressType"))),
                json!(if ports.is_empty() { "<unset>".to_string() } else { ports.join(",") }),
                json!(if addrs.is_empty() { "<unset>".to_string() } else { eps }),
                age,
            ]
        }
        _ => vec![name, age],
    }
}

fn partial_metadata(o: &Value) -> Value {
    json!({"kind":"PartialObjectMetadata","apiVersion":"meta.k8s.io/v1","metadata": o.get("metadata").cloned().unwrap_or(json!({}))})
}

/// A Table of `items` of `kind`; `with_columns` false omits the column definitions (watch events).
pub fn table(kind: &str, items: &[Value], resource_version: &str, with_columns: bool) -> Value {
    let now = SystemTime::now();
    let cols: Vec<Value> = if with_columns {
        columns(kind)
            .iter()
            .map(|c| {
                let format = if c.name == "Name" { "name" } else { "" };
                json!({"name": c.name, "type": c.ty, "format": format, "description": "", "priority": c.priority})
            })
            .collect()
    } else {
        Vec::new()
    };
    let rows: Vec<Value> =
        items.iter().map(|o| json!({"cells": cells(kind, o, now), "object": partial_metadata(o)})).collect();
    json!({"kind":"Table","apiVersion":"meta.k8s.io/v1","metadata":{"resourceVersion": resource_version},
        "columnDefinitions": cols, "rows": rows})
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pods_and_services() {
        let pod = json!({"metadata":{"name":"p","creationTimestamp":"2020-01-01T00:00:00Z"},
            "spec":{"containers":[{"name":"c"}],"nodeName":"n1"},
            "status":{"phase":"Running","podIP":"10.0.0.5","containerStatuses":[{"ready":true,"restartCount":2,"state":{"running":{}}}]}});
        let t = table("Pod", &[pod], "5", true);
        let row = &t["rows"][0]["cells"];
        assert_eq!(row[1], "1/1");
        assert_eq!(row[2], "Running");
        assert_eq!(row[3], "2");
        assert_eq!(row[5], "10.0.0.5");
        assert_eq!(row[6], "n1");
        assert_eq!(t["columnDefinitions"].as_array().unwrap().len(), 9);
        assert_eq!(t["rows"][0]["object"]["metadata"]["name"], "p");
        let lb = json!({"metadata":{"name":"s"},"spec":{"type":"LoadBalancer","clusterIP":"10.96.0.10",
            "ports":[{"port":80,"nodePort":30080,"protocol":"TCP"}]},"status":{"loadBalancer":{}}});
        let t = table("Service", &[lb], "5", false);
        assert_eq!(t["rows"][0]["cells"][3], "<pending>");
        assert_eq!(t["rows"][0]["cells"][4], "80:30080/TCP");
        assert!(t["columnDefinitions"].as_array().unwrap().is_empty());
        let n = json!({"metadata":{"name":"n","labels":{"node-role.kubernetes.io/control-plane":""}},
            "status":{"conditions":[{"type":"Ready","status":"True"}],"nodeInfo":{"kubeletVersion":"v1.32.0"}}});
        let t = table("Node", &[n], "1", true);
        assert_eq!(t["rows"][0]["cells"][1], "Ready");
        assert_eq!(t["rows"][0]["cells"][2], "control-plane");
        assert_eq!(t["rows"][0]["cells"][4], "v1.32.0");
    }
}
