//! Namespace lifecycle as kube-apiserver and the namespace controller run it: a namespace is
//! created Active with the `kubernetes` finalizer; DELETE only marks it Terminating (phase and
//! deletionTimestamp); creating inside a terminating namespace is refused (403
//! `NamespaceTerminating`); [`run`] deletes every namespaced object in it and, once nothing is
//! left, finalizes it (removes `kubernetes` from `spec.finalizers`, which deletes it). The
//! built-in namespaces cannot be deleted.
//!
//! The deleter works on the registry directly rather than through `ClusterApi`: it must reach
//! every namespaced kind the server serves ([`super::resources::RESOURCES`]), as upstream's walks
//! discovery, so a new kind is covered without a list kept beside it.

use super::registry::{DeleteOptions, Registry, Selectors};
use super::resources::{self, ResourceInfo};
use super::status::ApiStatus;
use crate::api::{meta, time};
use futures_util::StreamExt;
use serde_json::{Value, json};
use std::sync::Arc;
use std::time::Duration;

/// The finalizer the namespace controller owns.
pub const FINALIZER: &str = "kubernetes";
/// Namespaces that always exist.
pub const BUILT_IN: [&str; 4] = ["default", "kube-system", "kube-public", "kube-node-lease"];

/// 403 for a create inside terminating namespace `ns`.
pub fn terminating(r: &ResourceInfo, name: &str, ns: &str) -> ApiStatus {
    let mut s = ApiStatus::forbidden(
        r,
        name,
        &format!("unable to create new content in namespace {ns} because it is being terminated"),
    );
    if let Some(d) = s.details.as_mut() {
        d["causes"] = json!([{"reason": "NamespaceTerminating",
            "message": format!("namespace {ns} is being terminated"), "field": "metadata.namespace"}]);
    }
    s
}

/// Refuses deleting a built-in namespace.
pub fn check_deletable(r: &ResourceInfo, name: &str) -> Result<(), ApiStatus> {
    if BUILT_IN.contains(&name) {
        return Err(ApiStatus::forbidden(r, name, "this namespace may not be deleted"));
    }
    Ok(())
}

/// Marks a namespace that still has `spec.finalizers` Terminating (deletionTimestamp, phase);
/// false when it has none and can go at once.
pub fn mark_terminating(ns: &mut Value) -> bool {
    let has = ns.pointer("/spec/finalizers").and_then(Value::as_array).is_some_and(|f| !f.is_empty());
    if !has {
        return false;
    }
    if ns.pointer("/metadata/deletionTimestamp").is_none_or(Value::is_null) {
        meta::metadata_mut(ns).insert("deletionTimestamp".into(), json!(time::now_rfc3339()));
        meta::metadata_mut(ns).insert("deletionGracePeriodSeconds".into(), json!(0));
    }
    ns["status"]["phase"] = json!("Terminating");
    true
}

/// The kinds the deleter empties: every namespaced resource once (not the legacy
/// extensions/v1beta1 view of Deployments, stored as apps/v1).
fn namespaced_kinds() -> impl Iterator<Item = &'static ResourceInfo> {
    resources::RESOURCES.iter().filter(|r| r.namespaced && r.storage() == *r)
}

/// One pass over one terminating namespace: deletes what is left in it (pods gracefully, as the
/// controller does) and finalizes it when nothing remains. Returns whether it is still there.
pub async fn delete_contents(reg: &Registry, ns: &str) -> Result<bool, ApiStatus> {
    let mut remaining = 0usize;
    let opts = DeleteOptions { propagation: Some("Background".into()), ..Default::default() };
    for r in namespaced_kinds() {
        let (items, _) = reg.list(r, Some(ns), &Selectors::default()).await?;
        remaining += items.len();
        for o in items {
            match reg.delete(r, ns, meta::name(&o), &opts).await {
                Ok(_) => {}
                Err(e) if e.code == 404 || e.code == 409 => {}
                Err(e) => {
                    tracing::warn!(namespace = ns, kind = r.kind, error = %e, "deleting namespace content")
                }
            }
        }
    }
    if remaining > 0 {
        return Ok(true);
    }
    let nsr = resources::find("", "v1", "namespaces").expect("namespaces");
    let current = reg.get(nsr, "", ns).await?;
    let finalizers: Vec<Value> = current
        .pointer("/spec/finalizers")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter(|f| f.as_str() != Some(FINALIZER))
        .cloned()
        .collect();
    let body = json!({"metadata": {"resourceVersion": meta::resource_version(&current)}, "spec": {"finalizers": finalizers}});
    let after = reg.finalize_namespace(ns, &body).await?;
    Ok(!finalizers_empty(&after))
}

fn finalizers_empty(ns: &Value) -> bool {
    ns.pointer("/spec/finalizers").and_then(Value::as_array).is_none_or(Vec::is_empty)
}

/// One pass over every terminating namespace; true when some are left to finish.
async fn pass(reg: &Registry) -> bool {
    let nsr = resources::find("", "v1", "namespaces").expect("namespaces");
    let Ok((all, _)) = reg.list(nsr, None, &Selectors::default()).await else { return true };
    let mut left = false;
    for ns in all.iter().filter(|n| n.pointer("/metadata/deletionTimestamp").is_some_and(|v| !v.is_null())) {
        let name = meta::name(ns);
        match delete_contents(reg, name).await {
            Ok(still) => left |= still,
            Err(e) if e.code == 404 => {}
            Err(e) => {
                tracing::warn!(namespace = name, error = %e, "namespace deletion pass failed");
                left = true;
            }
        }
    }
    left
}

/// Deletes terminating namespaces' contents and finalizes them; woken by namespace changes, and
/// every second while a namespace is still emptying (pods take their grace period).
pub async fn run(reg: Arc<Registry>) {
    let nsr = resources::find("", "v1", "namespaces").expect("namespaces");
    let mut events = None;
    loop {
        if events.is_none() {
            // From the current revision: existing namespaces are seen by the pass itself.
            if let Ok((_, rev)) = reg.list(nsr, None, &Selectors::default()).await {
                events = reg.watch(nsr, None, &rev.to_string(), Selectors::default()).await.ok();
            }
        }
        let left = pass(&reg).await;
        let wait = if left { Duration::from_secs(1) } else { Duration::from_secs(30) };
        match events.as_mut() {
            Some(stream) => match tokio::time::timeout(wait, stream.next()).await {
                Ok(Some(Ok(_))) | Err(_) => {}
                Ok(_) => events = None,
            },
            None => tokio::time::sleep(wait).await,
        }
    }
}
