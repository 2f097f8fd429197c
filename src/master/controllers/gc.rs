//! Garbage collector over ownerReferences (Deployment → ReplicaSet → Pod): deletes dependents whose
//! owners are gone (background), deletes dependents of owners in foreground deletion before releasing
//! them, and orphans dependents of owners deleted with the Orphan policy.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::apps::v1::{Deployment, ReplicaSet};
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};

use super::runner::{Trigger, run_loop};
use crate::master::client::{ApiError, ClusterApi, DeleteParams, Object, PropagationPolicy};

pub const FOREGROUND_FINALIZER: &str = "foregroundDeletion";
pub const ORPHAN_FINALIZER: &str = "orphan";

/// Why a GC pass failed.
#[derive(Debug, thiserror::Error)]
pub enum GcError {
    #[error("garbage collector: listing {what}: {source}")]
    List { what: &'static str, source: ApiError },
    #[error("garbage collector: {step} {kind} {name}: {source}")]
    Action { step: &'static str, kind: &'static str, name: String, source: ApiError },
}

/// Kinds the collector manages.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum GcKind {
    Deployment,
    ReplicaSet,
    Pod,
}

/// One object of the ownership graph.
#[derive(Debug, Clone)]
pub struct GcItem {
    pub kind: GcKind,
    pub namespace: Option<String>,
    pub name: String,
    pub meta: ObjectMeta,
}

/// What the collector wants done.
#[derive(Debug, Clone, PartialEq)]
pub enum GcAction {
    Delete {
        kind: GcKind,
        namespace: Option<String>,
        name: String,
        policy: PropagationPolicy,
    },
    /// Remove ownerReferences to these owner UIDs.
    Orphan {
        kind: GcKind,
        namespace: Option<String>,
        name: String,
        owner_uids: Vec<String>,
    },
    RemoveFinalizer {
        kind: GcKind,
        namespace: Option<String>,
        name: String,
        finalizer: &'static str,
    },
}

fn has_finalizer(meta: &ObjectMeta, f: &str) -> bool {
    meta.finalizers.iter().flatten().any(|x| x == f)
}

/// Whether an ownerReference points at a kind the collector lists (so absence means deleted).
fn managed_owner_kind(r: &OwnerReference) -> bool {
    matches!(
        (r.api_version.as_str(), r.kind.as_str()),
        ("apps/v1", "Deployment" | "ReplicaSet") | ("v1", "Pod")
    )
}

/// Decide the GC actions for the whole graph.
pub fn reconcile(items: &[GcItem]) -> Vec<GcAction> {
    let by_uid: HashMap<&str, &GcItem> =
        items.iter().filter_map(|i| i.meta.uid.as_deref().map(|u| (u, i))).collect();
    let mut dependents: HashMap<&str, Vec<&GcItem>> = HashMap::new();
    for item in items {
        for r in item.meta.owner_references.iter().flatten() {
            dependents.entry(r.uid.as_str()).or_default().push(item);
        }
    }
    let mut actions = Vec::new();
    let mut orphaned: HashSet<(&str, &str)> = HashSet::new();
    for owner in items {
        let Some(uid) = owner.meta.uid.as_deref() else { continue };
        if owner.meta.deletion_timestamp.is_none() {
            continue;
        }
        let deps = dependents.get(uid).map(Vec::as_slice).unwrap_or(&[]);
        let finalizer = if has_finalizer(&owner.meta, ORPHAN_FINALIZER) {
            for d in deps {
                orphaned.insert((d.name.as_str(), uid));
                actions.push(GcAction::Orphan {
                    kind: d.kind,
                    namespace: d.namespace.clone(),
                    name: d.name.clone(),
                    owner_uids: vec![uid.to_string()],
                });
            }
            ORPHAN_FINALIZER
        } else if has_finalizer(&owner.meta, FOREGROUND_FINALIZER) {
            for d in deps.iter().filter(|d| d.meta.deletion_timestamp.is_none()) {
                actions.push(GcAction::Delete {
                    kind: d.kind,
                    namespace: d.namespace.clone(),
                    name: d.name.clone(),
                    policy: PropagationPolicy::Foreground,
                });
            }
            FOREGROUND_FINALIZER
        } else {
            continue;
        };
        // The owner goes once no dependents are left.
        if deps.is_empty() {
            actions.push(GcAction::RemoveFinalizer {
                kind: owner.kind,
                namespace: owner.namespace.clone(),
                name: owner.name.clone(),
                finalizer,
            });
        }
    }
    for item in items {
        let refs = item.meta.owner_references.as_deref().unwrap_or(&[]);
        if refs.is_empty() || item.meta.deletion_timestamp.is_some() {
            continue;
        }
        // Only owners of kinds this collector lists can be known to be gone; others are left alone.
        let gone = |r: &OwnerReference| {
            managed_owner_kind(r)
                && !by_uid.contains_key(r.uid.as_str())
                && !orphaned.contains(&(item.name.as_str(), r.uid.as_str()))
        };
        if refs.iter().all(gone) {
            actions.push(GcAction::Delete {
                kind: item.kind,
                namespace: item.namespace.clone(),
                name: item.name.clone(),
                policy: PropagationPolicy::Background,
            });
        }
    }
    actions
}

async fn list_items<K: Object, C: ClusterApi>(
    client: &C,
    kind: GcKind,
    out: &mut Vec<GcItem>,
) -> Result<(), GcError> {
    let list =
        client.snapshot::<K>().await.map_err(|source| GcError::List { what: K::URL_PATH_SEGMENT, source })?;
    out.extend(list.iter().map(|o| {
        let meta = o.metadata().clone();
        GcItem { kind, namespace: meta.namespace.clone(), name: meta.name.clone().unwrap_or_default(), meta }
    }));
    Ok(())
}

async fn act_on<K: Object, C: ClusterApi>(client: &C, action: &GcAction) -> Result<(), ApiError> {
    match action {
        GcAction::Delete { namespace, name, policy, .. } => {
            let params = DeleteParams { propagation_policy: *policy, ..Default::default() };
            client.delete::<K>(namespace.as_deref(), name, &params).await.map(drop)
        }
        GcAction::Orphan { namespace, name, owner_uids, .. } => {
            let mut obj: K = client.get(namespace.as_deref(), name).await?;
            if let Some(refs) = obj.metadata_mut().owner_references.as_mut() {
                refs.retain(|r| !owner_uids.contains(&r.uid));
            }
            client.update(&obj).await.map(drop)
        }
        GcAction::RemoveFinalizer { namespace, name, finalizer, .. } => {
            let mut obj: K = client.get(namespace.as_deref(), name).await?;
            if let Some(f) = obj.metadata_mut().finalizers.as_mut() {
                f.retain(|x| x != finalizer);
            }
            client.update(&obj).await.map(drop)
        }
    }
}

/// One GC pass.
pub async fn sync_all<C: ClusterApi>(client: &C) -> Result<(), GcError> {
    let mut items = Vec::new();
    // Dependents before owners: an owner created after its dependent's listing is still seen.
    list_items::<Pod, C>(client, GcKind::Pod, &mut items).await?;
    list_items::<ReplicaSet, C>(client, GcKind::ReplicaSet, &mut items).await?;
    list_items::<Deployment, C>(client, GcKind::Deployment, &mut items).await?;
    for action in reconcile(&items) {
        let (kind, name) = match &action {
            GcAction::Delete { kind, name, .. }
            | GcAction::Orphan { kind, name, .. }
            | GcAction::RemoveFinalizer { kind, name, .. } => (*kind, name.clone()),
        };
        let result = match kind {
            GcKind::Pod => act_on::<Pod, C>(client, &action).await,
            GcKind::ReplicaSet => act_on::<ReplicaSet, C>(client, &action).await,
            GcKind::Deployment => act_on::<Deployment, C>(client, &action).await,
        };
        match result {
            Ok(()) => {}
            Err(e) if e.is_not_found() || e.is_conflict() => {}
            Err(source) => {
                let kind = match kind {
                    GcKind::Pod => "pod",
                    GcKind::ReplicaSet => "replicaset",
                    GcKind::Deployment => "deployment",
                };
                return Err(GcError::Action { step: "acting on", kind, name, source });
            }
        }
    }
    Ok(())
}

/// Run the garbage collector forever.
pub async fn run<C: ClusterApi>(client: Arc<C>) {
    // Pods change all the time on a busy cluster, and a pass copies the metadata of every object:
    // collecting garbage within a second is enough.
    let trigger = Trigger::default()
        .paced(Duration::from_secs(1))
        .watch::<Deployment, C>(&client)
        .await
        .watch::<ReplicaSet, C>(&client)
        .await
        .watch::<Pod, C>(&client)
        .await;
    run_loop("garbage-collector", trigger, Duration::from_secs(10), || sync_all(&*client)).await;
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::master::client::memory::now_time;

    fn item(kind: GcKind, name: &str, owner: Option<&str>) -> GcItem {
        GcItem {
            kind,
            namespace: Some("default".into()),
            name: name.into(),
            meta: ObjectMeta {
                uid: Some(format!("{name}-uid")),
                owner_references: owner.map(|o| {
                    vec![OwnerReference {
                        api_version: "apps/v1".into(),
                        kind: "ReplicaSet".into(),
                        uid: format!("{o}-uid"),
                        controller: Some(true),
                        ..Default::default()
                    }]
                }),
                ..Default::default()
            },
        }
    }

    #[test]
    fn dangling_dependents_are_deleted_in_background() {
        let items = [item(GcKind::ReplicaSet, "rs", Some("gone")), item(GcKind::Pod, "p", Some("rs"))];
        let actions = reconcile(&items);
        assert_eq!(
            actions,
            vec![GcAction::Delete {
                kind: GcKind::ReplicaSet,
                namespace: Some("default".into()),
                name: "rs".into(),
                policy: PropagationPolicy::Background
            }]
        );
    }

    #[test]
    fn owners_of_unlisted_kinds_are_not_presumed_gone() {
        let mut job_pod = item(GcKind::Pod, "p", Some("job"));
        job_pod.meta.owner_references.as_mut().unwrap()[0].api_version = "batch/v1".into();
        job_pod.meta.owner_references.as_mut().unwrap()[0].kind = "Job".into();
        assert!(reconcile(&[job_pod]).is_empty());
    }

    #[test]
    fn foreground_deletes_dependents_then_releases_owner() {
        let mut owner = item(GcKind::Deployment, "d", None);
        owner.meta.deletion_timestamp = Some(now_time());
        owner.meta.finalizers = Some(vec![FOREGROUND_FINALIZER.into()]);
        let actions = reconcile(&[owner.clone(), item(GcKind::ReplicaSet, "rs", Some("d"))]);
        assert!(
            matches!(&actions[0], GcAction::Delete { name, policy: PropagationPolicy::Foreground, .. } if name == "rs")
        );
        assert_eq!(actions.len(), 1);
        let actions = reconcile(&[owner]);
        assert!(matches!(&actions[0], GcAction::RemoveFinalizer { finalizer: FOREGROUND_FINALIZER, .. }));
    }

    #[test]
    fn orphan_policy_strips_owner_references() {
        let mut owner = item(GcKind::ReplicaSet, "rs", None);
        owner.meta.deletion_timestamp = Some(now_time());
        owner.meta.finalizers = Some(vec![ORPHAN_FINALIZER.into()]);
        let actions = reconcile(&[owner, item(GcKind::Pod, "p", Some("rs"))]);
        assert_eq!(
            actions,
            vec![GcAction::Orphan {
                kind: GcKind::Pod,
                namespace: Some("default".into()),
                name: "p".into(),
                owner_uids: vec!["rs-uid".into()]
            }]
        );
    }
}
