//! ReplicaSet controller: claim pods (adopt matching orphans, release non-matching), create or delete
//! pods to reach `spec.replicas`, and report status.

use std::borrow::Borrow;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::apps::v1::{ReplicaSet, ReplicaSetStatus};
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};

use super::events::{EventRecorder, EventType};
use super::owner::{controller_of, controller_ref};
use super::runner::{Trigger, run_loop, semantically_equal};
use crate::api::selectors::LabelSelector;
use crate::master::client::{ApiError, ClusterApi, DeleteParams, memory::now_time};

/// Most pods created or deleted in one sync.
pub const BURST_REPLICAS: usize = 500;

/// Why a ReplicaSet sync failed.
#[derive(Debug, thiserror::Error)]
pub enum ReplicaSetError {
    #[error("replicaset controller: listing {what}: {source}")]
    List { what: &'static str, source: ApiError },
    #[error("replicaset {rs}: {step}: {source}")]
    Action { rs: String, step: String, source: ApiError },
}

/// One change the controller wants made.
#[derive(Debug, Clone, PartialEq)]
pub enum RsAction {
    /// Set this RS as controller owner of the orphan pod.
    Adopt(String),
    /// Remove this RS's ownerReference from a pod that no longer matches.
    Release(String),
    /// Create `n` pods from the template.
    Create(usize),
    /// Delete these pods.
    Delete(Vec<String>),
    /// Write this status.
    Status(ReplicaSetStatus),
}

/// Whether a pod is Ready.
pub fn pod_ready(pod: &Pod) -> bool {
    pod_ready_since(pod).is_some()
}

/// When a pod became Ready, if it is.
pub fn pod_ready_since(pod: &Pod) -> Option<Option<&Time>> {
    pod.status
        .as_ref()?
        .conditions
        .as_ref()?
        .iter()
        .find(|c| c.type_ == "Ready" && c.status == "True")
        .map(|c| c.last_transition_time.as_ref())
}

/// Whether a pod has been Ready for `min_ready_seconds` at `now`.
pub fn pod_available(pod: &Pod, min_ready_seconds: i32, now: &Time) -> bool {
    match pod_ready_since(pod) {
        None => false,
        Some(_) if min_ready_seconds <= 0 => true,
        Some(None) => false,
        Some(Some(since)) => (now.0 - since.0).num_seconds() >= i64::from(min_ready_seconds),
    }
}

/// Whether a pod counts toward replicas: not terminating, not finished.
pub fn pod_active(pod: &Pod) -> bool {
    pod.metadata.deletion_timestamp.is_none()
        && !matches!(pod.status.as_ref().and_then(|s| s.phase.as_deref()), Some("Succeeded" | "Failed"))
}

/// kube-controller-manager's deletion preference: lower sorts first (deleted first).
fn deletion_rank(pod: &Pod) -> (u8, u8, u8, std::cmp::Reverse<Option<Time>>) {
    let assigned = pod.spec.as_ref().and_then(|s| s.node_name.as_deref()).is_some_and(|n| !n.is_empty());
    let phase = match pod.status.as_ref().and_then(|s| s.phase.as_deref()) {
        Some("Pending") | None => 0,
        Some("Running") => 2,
        _ => 1,
    };
    (
        u8::from(assigned),
        phase,
        u8::from(pod_ready(pod)),
        std::cmp::Reverse(pod.metadata.creation_timestamp.clone()),
    )
}

/// Decide what to do for one ReplicaSet given the pods of its namespace.
pub fn reconcile<P: Borrow<Pod>>(rs: &ReplicaSet, pods: &[P], now: &Time) -> Vec<RsAction> {
    let mut actions = Vec::new();
    let uid = rs.metadata.uid.as_deref().unwrap_or("");
    let spec = rs.spec.clone().unwrap_or_default();
    let terminating = rs.metadata.deletion_timestamp.is_some();
    let selector = LabelSelector::from_k8s(&spec.selector).ok();
    let mut claimed: Vec<&Pod> = Vec::new();
    for pod in pods {
        let pod: &Pod = pod.borrow();
        let matches = selector.as_ref().is_some_and(|s| s.selects(pod.metadata.labels.as_ref()));
        match controller_of(&pod.metadata) {
            Some(owner) if owner.uid == uid => {
                if matches {
                    claimed.push(pod);
                } else if !terminating {
                    actions.push(RsAction::Release(pod.metadata.name.clone().unwrap_or_default()));
                }
            }
            Some(_) => {}
            None => {
                if matches && !terminating && pod.metadata.deletion_timestamp.is_none() {
                    actions.push(RsAction::Adopt(pod.metadata.name.clone().unwrap_or_default()));
                    claimed.push(pod);
                }
            }
        }
    }
    let mut active: Vec<&Pod> = claimed.iter().copied().filter(|p| pod_active(p)).collect();
    let want = spec.replicas.unwrap_or(1).max(0) as usize;
    if !terminating {
        if active.len() < want {
            actions.push(RsAction::Create((want - active.len()).min(BURST_REPLICAS)));
        } else if active.len() > want {
            active.sort_by_key(|p| deletion_rank(p));
            let doomed = active[..(active.len() - want).min(BURST_REPLICAS)]
                .iter()
                .map(|p| p.metadata.name.clone().unwrap_or_default())
                .collect();
            actions.push(RsAction::Delete(doomed));
        }
    }
    let min_ready = spec.min_ready_seconds.unwrap_or(0);
    let template_labels =
        spec.template.as_ref().and_then(|t| t.metadata.as_ref()).and_then(|m| m.labels.clone());
    let active: Vec<&Pod> = claimed.iter().copied().filter(|p| pod_active(p)).collect();
    let status = ReplicaSetStatus {
        replicas: active.len() as i32,
        fully_labeled_replicas: Some(
            active
                .iter()
                .filter(|p| {
                    template_labels
                        .iter()
                        .flatten()
                        .all(|(k, v)| p.metadata.labels.as_ref().and_then(|l| l.get(k)) == Some(v))
                })
                .count() as i32,
        ),
        ready_replicas: Some(active.iter().filter(|p| pod_ready(p)).count() as i32),
        available_replicas: Some(active.iter().filter(|p| pod_available(p, min_ready, now)).count() as i32),
        observed_generation: rs.metadata.generation,
        conditions: rs.status.as_ref().and_then(|s| s.conditions.clone()),
    };
    if !semantically_equal(&rs.status.clone().unwrap_or_default(), &status) {
        actions.push(RsAction::Status(status));
    }
    actions
}

/// The pod a ReplicaSet creates from its template.
pub fn pod_from_template(rs: &ReplicaSet) -> Pod {
    let template = rs.spec.as_ref().and_then(|s| s.template.clone()).unwrap_or_default();
    let tmeta = template.metadata.unwrap_or_default();
    Pod {
        metadata: ObjectMeta {
            generate_name: Some(format!("{}-", rs.metadata.name.as_deref().unwrap_or("pod"))),
            namespace: rs.metadata.namespace.clone(),
            labels: tmeta.labels,
            annotations: tmeta.annotations,
            finalizers: tmeta.finalizers,
            owner_references: Some(vec![controller_ref(rs)]),
            ..Default::default()
        },
        spec: template.spec,
        status: None,
    }
}

/// Apply the actions of one ReplicaSet.
pub async fn execute<C: ClusterApi, P: Borrow<Pod>>(
    client: &C,
    events: &EventRecorder<C>,
    rs: &ReplicaSet,
    pods: &[P],
    actions: Vec<RsAction>,
) -> Result<(), ReplicaSetError> {
    let name = rs.metadata.name.clone().unwrap_or_default();
    let ns = rs.metadata.namespace.as_deref();
    let fail = |step: String| {
        let rs = name.clone();
        move |source| ReplicaSetError::Action { rs, step, source }
    };
    let find = |pod: &str| {
        pods.iter().map(Borrow::borrow).find(|p: &&Pod| p.metadata.name.as_deref() == Some(pod)).cloned()
    };
    for action in actions {
        match action {
            RsAction::Adopt(pod) | RsAction::Release(pod) if find(&pod).is_none() => continue,
            RsAction::Adopt(pod) => {
                // CanAdopt: confirm with a fresh read that the RS still exists and is not being deleted.
                let fresh: ReplicaSet = client
                    .get(ns, rs.metadata.name.as_deref().unwrap_or(""))
                    .await
                    .map_err(fail("re-reading before adoption".into()))?;
                if fresh.metadata.uid != rs.metadata.uid || fresh.metadata.deletion_timestamp.is_some() {
                    return Ok(());
                }
                let mut p = find(&pod).unwrap_or_default();
                p.metadata.owner_references.get_or_insert_default().push(controller_ref(rs));
                client.update(&p).await.map_err(fail(format!("adopting pod {pod}")))?;
            }
            RsAction::Release(pod) => {
                let mut p = find(&pod).unwrap_or_default();
                if let Some(refs) = p.metadata.owner_references.as_mut() {
                    refs.retain(|r| Some(&r.uid) != rs.metadata.uid.as_ref());
                }
                client.update(&p).await.map_err(fail(format!("releasing pod {pod}")))?;
            }
            RsAction::Create(n) => {
                // Slow start: batches of 1, 2, 4, ... stopping at the first error.
                let template = pod_from_template(rs);
                let mut created = 0;
                let mut batch = 1;
                while created < n {
                    let size = batch.min(n - created);
                    for _ in 0..size {
                        match client.create(&template).await {
                            Ok(p) => {
                                let msg =
                                    format!("Created pod: {}", p.metadata.name.as_deref().unwrap_or(""));
                                events.record(rs, EventType::Normal, "SuccessfulCreate", &msg).await;
                            }
                            Err(e) => {
                                events.record(rs, EventType::Warning, "FailedCreate", &e.to_string()).await;
                                return Err(fail("creating pods".into())(e));
                            }
                        }
                    }
                    created += size;
                    batch *= 2;
                }
            }
            RsAction::Delete(names) => {
                for pod in names {
                    match client.delete::<Pod>(ns, &pod, &DeleteParams::default()).await {
                        Ok(_) => {
                            let msg = format!("Deleted pod: {pod}");
                            events.record(rs, EventType::Normal, "SuccessfulDelete", &msg).await;
                        }
                        Err(e) if e.is_not_found() => {}
                        Err(e) => return Err(fail(format!("deleting pod {pod}"))(e)),
                    }
                }
            }
            RsAction::Status(status) => {
                let mut updated = rs.clone();
                updated.status = Some(status);
                match client.update_status(&updated).await {
                    Err(e) if e.is_conflict() || e.is_not_found() => {}
                    other => {
                        other.map_err(fail("updating status".into()))?;
                    }
                }
            }
        }
    }
    Ok(())
}

/// One pass over every ReplicaSet. Each sees the pods it controls and the namespace's orphans (the only
/// pods it can act on), so a pass costs the number of pods, not pods times ReplicaSets.
pub async fn sync_all<C: ClusterApi>(client: &C, events: &EventRecorder<C>) -> Result<(), ReplicaSetError> {
    let rses = client
        .snapshot::<ReplicaSet>()
        .await
        .map_err(|source| ReplicaSetError::List { what: "replicasets", source })?;
    let pods =
        client.snapshot::<Pod>().await.map_err(|source| ReplicaSetError::List { what: "pods", source })?;
    let mut owned: HashMap<&str, Vec<&Pod>> = HashMap::new();
    let mut orphans: HashMap<&str, Vec<&Pod>> = HashMap::new();
    for p in &pods {
        match controller_of(&p.metadata) {
            Some(owner) => owned.entry(owner.uid.as_str()).or_default().push(p),
            None => orphans.entry(p.metadata.namespace.as_deref().unwrap_or("")).or_default().push(p),
        }
    }
    let now = now_time();
    let mut first_error = None;
    for rs in &rses {
        let mut pods = owned.get(rs.metadata.uid.as_deref().unwrap_or("")).cloned().unwrap_or_default();
        pods.extend(orphans.get(rs.metadata.namespace.as_deref().unwrap_or("")).into_iter().flatten());
        let actions = reconcile(rs, &pods, &now);
        if let Err(e) = execute(client, events, rs, &pods, actions).await {
            first_error.get_or_insert(e);
        }
    }
    first_error.map_or(Ok(()), Err)
}

/// Run the ReplicaSet controller forever.
pub async fn run<C: ClusterApi>(client: Arc<C>) {
    let events = EventRecorder::new(client.clone(), "replicaset-controller");
    // A pass looks at every pod: let a burst of pod changes gather briefly.
    let trigger = Trigger::default()
        .paced(Duration::from_millis(50))
        .watch::<ReplicaSet, C>(&client)
        .await
        .watch::<Pod, C>(&client)
        .await;
    run_loop("replicaset", trigger, Duration::from_secs(5), || sync_all(&*client, &events)).await;
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::apps::v1::ReplicaSetSpec;
    use k8s_openapi::api::core::v1::{PodCondition, PodSpec, PodStatus, PodTemplateSpec};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
    use std::collections::BTreeMap;

    fn labels(app: &str) -> Option<BTreeMap<String, String>> {
        Some([("app".to_string(), app.to_string())].into())
    }

    fn rs(replicas: i32) -> ReplicaSet {
        ReplicaSet {
            metadata: ObjectMeta {
                name: Some("frontend".into()),
                namespace: Some("default".into()),
                uid: Some("rs-uid".into()),
                generation: Some(2),
                ..Default::default()
            },
            spec: Some(ReplicaSetSpec {
                replicas: Some(replicas),
                selector: LabelSelector { match_labels: labels("web"), ..Default::default() },
                template: Some(PodTemplateSpec {
                    metadata: Some(ObjectMeta { labels: labels("web"), ..Default::default() }),
                    spec: Some(PodSpec::default()),
                }),
                ..Default::default()
            }),
            status: None,
        }
    }

    fn pod(name: &str, app: &str, owner: Option<&str>, ready: bool) -> Pod {
        let mut owner_refs = None;
        if let Some(uid) = owner {
            let mut r = controller_ref(&rs(1));
            r.uid = uid.into();
            owner_refs = Some(vec![r]);
        }
        Pod {
            metadata: ObjectMeta {
                name: Some(name.into()),
                labels: labels(app),
                owner_references: owner_refs,
                ..Default::default()
            },
            spec: Some(PodSpec { node_name: Some("n1".into()), ..Default::default() }),
            status: Some(PodStatus {
                phase: Some(if ready { "Running" } else { "Pending" }.into()),
                conditions: ready.then(|| {
                    vec![PodCondition { type_: "Ready".into(), status: "True".into(), ..Default::default() }]
                }),
                ..Default::default()
            }),
        }
    }

    #[test]
    fn creates_missing_pods() {
        let actions = reconcile::<Pod>(&rs(3), &[], &now_time());
        assert_eq!(actions[0], RsAction::Create(3));
        let RsAction::Status(s) = &actions[1] else { panic!("{actions:?}") };
        assert_eq!((s.replicas, s.observed_generation), (0, Some(2)));
    }

    #[test]
    fn adopts_orphans_so_replicas_4_adds_exactly_one() {
        let pods = [pod("a", "web", None, true), pod("b", "web", None, true), pod("c", "web", None, true)];
        let actions = reconcile(&rs(4), &pods, &now_time());
        assert_eq!(
            &actions[..4],
            &[
                RsAction::Adopt("a".into()),
                RsAction::Adopt("b".into()),
                RsAction::Adopt("c".into()),
                RsAction::Create(1)
            ]
        );
    }

    #[test]
    fn releases_non_matching_and_ignores_foreign_pods() {
        let pods = [pod("mine", "db", Some("rs-uid"), true), pod("theirs", "web", Some("other"), true)];
        let actions = reconcile(&rs(0), &pods, &now_time());
        assert_eq!(actions[0], RsAction::Release("mine".into()));
        assert!(!actions.iter().any(|a| matches!(a, RsAction::Delete(_) | RsAction::Create(_))));
    }

    #[test]
    fn deletes_unready_pods_first_and_reports_status() {
        let pods = [pod("ready", "web", Some("rs-uid"), true), pod("unready", "web", Some("rs-uid"), false)];
        let actions = reconcile(&rs(1), &pods, &now_time());
        assert_eq!(actions[0], RsAction::Delete(vec!["unready".into()]));
        let RsAction::Status(s) = &actions[1] else { panic!() };
        assert_eq!((s.replicas, s.ready_replicas, s.available_replicas), (2, Some(1), Some(1)));
    }

    #[test]
    fn terminating_pods_do_not_count() {
        let mut gone = pod("old", "web", Some("rs-uid"), true);
        gone.metadata.deletion_timestamp = Some(now_time());
        let actions = reconcile(&rs(1), &[gone], &now_time());
        assert_eq!(actions[0], RsAction::Create(1));
    }

    #[test]
    fn template_pods_are_owned_and_generated() {
        let p = pod_from_template(&rs(1));
        assert_eq!(p.metadata.generate_name.as_deref(), Some("frontend-"));
        assert_eq!(p.metadata.owner_references.unwrap()[0].uid, "rs-uid");
        assert_eq!(p.metadata.labels, labels("web"));
    }
}
