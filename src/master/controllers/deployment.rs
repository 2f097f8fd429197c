//! Deployment controller: one ReplicaSet per pod template (named `<deployment>-<pod-template-hash>`),
//! rolling update with maxSurge/maxUnavailable (or Recreate), revisions and change-causes on ReplicaSets,
//! rollback by reusing the matching old ReplicaSet, revisionHistoryLimit cleanup, status and conditions.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::apps::v1::{
    Deployment, DeploymentCondition, DeploymentStatus, ReplicaSet, ReplicaSetSpec,
};
use k8s_openapi::api::core::v1::PodTemplateSpec;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta, Time};

use super::deployment_util::*;
use super::events::{EventRecorder, EventType};
use super::owner::{controller_of, controller_ref};
use super::runner::{Trigger, run_loop, semantically_equal};
use crate::api::selectors;
use crate::master::client::{ApiError, ClusterApi, DeleteParams, memory::now_time};

/// Why a Deployment sync failed.
#[derive(Debug, thiserror::Error)]
pub enum DeploymentError {
    #[error("deployment controller: listing {what}: {source}")]
    List { what: &'static str, source: ApiError },
    #[error("deployment {deployment}: {step}: {source}")]
    Action { deployment: String, step: String, source: ApiError },
}

/// One change the controller wants made.
#[derive(Debug, Clone, PartialEq)]
pub enum DeployAction {
    /// Take ownership of an orphan ReplicaSet matching the selector.
    AdoptReplicaSet(String),
    CreateReplicaSet(Box<ReplicaSet>),
    /// Replace a ReplicaSet (replicas and/or annotations changed).
    UpdateReplicaSet(Box<ReplicaSet>),
    DeleteReplicaSet(String),
    /// Set the Deployment's revision annotation.
    SetRevision(String),
    /// Bump `status.collisionCount` (hash collision with a foreign ReplicaSet).
    Collision(i32),
    Status(Box<DeploymentStatus>),
}

fn rs_replicas(rs: &ReplicaSet) -> i32 {
    rs.spec.as_ref().and_then(|s| s.replicas).unwrap_or(0)
}

fn rs_status(rs: &ReplicaSet) -> (i32, i32, i32) {
    rs.status
        .as_ref()
        .map_or((0, 0, 0), |s| (s.replicas, s.ready_replicas.unwrap_or(0), s.available_replicas.unwrap_or(0)))
}

/// The ReplicaSet for the Deployment's current template (`getNewReplicaSet` for a fresh one).
pub fn new_replica_set(d: &Deployment, revision: i64, replicas: i32) -> ReplicaSet {
    let spec = d.spec.clone().unwrap_or_default();
    let collision = d.status.as_ref().and_then(|s| s.collision_count);
    let hash = compute_hash(&spec.template, collision);
    let mut template: PodTemplateSpec = spec.template.clone();
    let tmeta = template.metadata.get_or_insert_default();
    tmeta.labels.get_or_insert_default().insert(POD_TEMPLATE_HASH.into(), hash.clone());
    let labels = tmeta.labels.clone();
    let mut selector: LabelSelector = spec.selector.clone();
    selector.match_labels.get_or_insert_default().insert(POD_TEMPLATE_HASH.into(), hash.clone());
    let mut annotations = copied_annotations(d);
    let (surge, _) = resolve_fenceposts(d);
    annotations.insert(REVISION.into(), revision.to_string());
    annotations.insert(DESIRED_REPLICAS.into(), desired_replicas(d).to_string());
    annotations.insert(MAX_REPLICAS.into(), (desired_replicas(d) + surge).to_string());
    ReplicaSet {
        metadata: ObjectMeta {
            name: Some(format!("{}-{hash}", d.metadata.name.as_deref().unwrap_or(""))),
            namespace: d.metadata.namespace.clone(),
            labels,
            annotations: Some(annotations),
            owner_references: Some(vec![controller_ref(d)]),
            ..Default::default()
        },
        spec: Some(ReplicaSetSpec {
            replicas: Some(replicas),
            min_ready_seconds: spec.min_ready_seconds,
            selector,
            template: Some(template),
        }),
        status: None,
    }
}

/// `NewRSNewReplicas` for RollingUpdate: how far the new ReplicaSet may grow now.
pub fn rolling_new_replicas(d: &Deployment, all_spec_replicas: i32, new_replicas: i32) -> i32 {
    let replicas = desired_replicas(d);
    let (surge, _) = resolve_fenceposts(d);
    let max_total = replicas + surge;
    if all_spec_replicas >= max_total {
        return new_replicas;
    }
    new_replicas + (max_total - all_spec_replicas).min(replicas - new_replicas).max(0)
}

/// Scale-down plan for old ReplicaSets (`reconcileOldReplicaSets`): new replica counts by RS name.
pub fn scale_down_old(d: &Deployment, new_rs: &ReplicaSet, old: &[&ReplicaSet]) -> BTreeMap<String, i32> {
    let mut plan = BTreeMap::new();
    let old_total: i32 = old.iter().map(|r| rs_replicas(r)).sum();
    if old_total == 0 {
        return plan;
    }
    let replicas = desired_replicas(d);
    let (_, max_unavailable) = resolve_fenceposts(d);
    let min_available = replicas - max_unavailable;
    let new_unavailable = rs_replicas(new_rs) - rs_status(new_rs).2;
    let all_pods = old_total + rs_replicas(new_rs);
    let mut budget = all_pods - min_available - new_unavailable;
    if budget <= 0 {
        return plan;
    }
    let mut sorted: Vec<&ReplicaSet> = old.to_vec();
    sorted.sort_by_key(|r| (revision_of(r), r.metadata.creation_timestamp.clone()));
    let mut current: BTreeMap<String, i32> =
        sorted.iter().map(|r| (r.metadata.name.clone().unwrap_or_default(), rs_replicas(r))).collect();
    // First drop unhealthy old replicas (those not available), which never hurts availability.
    for r in &sorted {
        let name = r.metadata.name.clone().unwrap_or_default();
        let unhealthy = (rs_replicas(r) - rs_status(r).2).max(0).min(budget);
        if unhealthy > 0 {
            *current.get_mut(&name).unwrap_or(&mut 0) -= unhealthy;
            budget -= unhealthy;
            plan.insert(name, current[&r.metadata.name.clone().unwrap_or_default()]);
        }
    }
    // Then scale down by what availability allows.
    let total_available: i32 = old.iter().map(|r| rs_status(r).2).sum::<i32>() + rs_status(new_rs).2;
    let mut can_remove = (total_available - min_available).min(budget);
    for r in &sorted {
        if can_remove <= 0 {
            break;
        }
        let name = r.metadata.name.clone().unwrap_or_default();
        let now = current[&name];
        let cut = now.min(can_remove);
        if cut > 0 {
            plan.insert(name.clone(), now - cut);
            can_remove -= cut;
        }
    }
    plan
}

fn condition(type_: &str, status: bool, reason: &str, message: String, now: &Time) -> DeploymentCondition {
    DeploymentCondition {
        type_: type_.into(),
        status: if status { "True" } else { "False" }.into(),
        reason: Some(reason.into()),
        message: Some(message),
        last_update_time: Some(now.clone()),
        last_transition_time: Some(now.clone()),
    }
}

/// Keep timestamps of conditions whose status/reason/message did not change.
fn merge_conditions(
    old: Option<&Vec<DeploymentCondition>>,
    new: Vec<DeploymentCondition>,
) -> Vec<DeploymentCondition> {
    new.into_iter()
        .map(|mut c| {
            if let Some(prev) = old.into_iter().flatten().find(|p| p.type_ == c.type_)
                && prev.status == c.status
            {
                c.last_transition_time = prev.last_transition_time.clone();
                if prev.reason == c.reason && prev.message == c.message {
                    c.last_update_time = prev.last_update_time.clone();
                }
            }
            c
        })
        .collect()
}

/// Status and conditions from the observed ReplicaSets.
pub fn compute_status(
    d: &Deployment,
    new_rs: Option<&ReplicaSet>,
    all: &[&ReplicaSet],
    created_new: bool,
    now: &Time,
) -> DeploymentStatus {
    let replicas: i32 = all.iter().map(|r| rs_status(r).0).sum();
    let ready: i32 = all.iter().map(|r| rs_status(r).1).sum();
    let available: i32 = all.iter().map(|r| rs_status(r).2).sum();
    let updated = new_rs.map_or(0, |r| rs_status(r).0);
    let desired = desired_replicas(d);
    let (_, max_unavailable) = resolve_fenceposts(d);
    let new_name = new_rs.and_then(|r| r.metadata.name.clone()).unwrap_or_default();
    let complete = new_rs.is_some()
        && updated == desired
        && available == desired
        && replicas == desired
        && new_rs.is_some_and(|r| rs_replicas(r) == desired);
    let progressing = if complete {
        condition(
            "Progressing",
            true,
            "NewReplicaSetAvailable",
            format!("ReplicaSet \"{new_name}\" has successfully progressed."),
            now,
        )
    } else if created_new {
        condition(
            "Progressing",
            true,
            "NewReplicaSetCreated",
            format!("Created new replica set \"{new_name}\""),
            now,
        )
    } else {
        condition(
            "Progressing",
            true,
            "ReplicaSetUpdated",
            format!("ReplicaSet \"{new_name}\" is progressing."),
            now,
        )
    };
    let available_cond = if available >= desired - max_unavailable {
        condition(
            "Available",
            true,
            "MinimumReplicasAvailable",
            "Deployment has minimum availability.".into(),
            now,
        )
    } else {
        condition(
            "Available",
            false,
            "MinimumReplicasUnavailable",
            "Deployment does not have minimum availability.".into(),
            now,
        )
    };
    let old = d.status.as_ref();
    let mut conditions =
        merge_conditions(old.and_then(|s| s.conditions.as_ref()), vec![available_cond, progressing]);
    let counts = (replicas, updated, ready, available);
    let old_counts = old.map(|s| {
        (
            s.replicas.unwrap_or(0),
            s.updated_replicas.unwrap_or(0),
            s.ready_replicas.unwrap_or(0),
            s.available_replicas.unwrap_or(0),
        )
    });
    let deadline = d.spec.as_ref().and_then(|s| s.progress_deadline_seconds).unwrap_or(600);
    apply_progress_deadline(&mut conditions, old, old_counts != Some(counts), deadline, now);
    DeploymentStatus {
        observed_generation: d.metadata.generation,
        replicas: Some(replicas),
        updated_replicas: Some(updated),
        ready_replicas: Some(ready),
        available_replicas: Some(available),
        unavailable_replicas: Some((desired - available).max(0)),
        collision_count: old.and_then(|s| s.collision_count),
        conditions: Some(conditions),
    }
}

/// `progressDeadlineSeconds`: a rollout in progress refreshes Progressing's lastUpdateTime whenever replica
/// counts move; without movement for longer than the deadline it becomes False/ProgressDeadlineExceeded
/// (and stays so until progress resumes).
fn apply_progress_deadline(
    conditions: &mut [DeploymentCondition],
    old: Option<&DeploymentStatus>,
    progressed: bool,
    deadline_seconds: i32,
    now: &Time,
) {
    let Some(cond) = conditions.iter_mut().find(|c| c.type_ == "Progressing") else { return };
    if cond.reason.as_deref() != Some("ReplicaSetUpdated") {
        return;
    }
    if progressed {
        cond.last_update_time = Some(now.clone());
        return;
    }
    let prev =
        old.and_then(|s| s.conditions.as_ref()).and_then(|cs| cs.iter().find(|c| c.type_ == "Progressing"));
    if let Some(prev) = prev.filter(|p| p.reason.as_deref() == Some(TIMED_OUT)) {
        *cond = prev.clone();
        return;
    }
    let stale = cond
        .last_update_time
        .as_ref()
        .is_some_and(|t| (now.0 - t.0).num_seconds() > i64::from(deadline_seconds));
    if stale {
        let name = cond.message.as_deref().and_then(|m| m.split('"').nth(1)).unwrap_or("").to_string();
        cond.status = "False".into();
        cond.reason = Some(TIMED_OUT.into());
        cond.message = Some(format!("ReplicaSet \"{name}\" has timed out progressing."));
        cond.last_update_time = Some(now.clone());
        cond.last_transition_time = Some(now.clone());
    }
}

/// Progressing reason when a rollout made no progress within the deadline.
pub const TIMED_OUT: &str = "ProgressDeadlineExceeded";

fn with_replicas(rs: &ReplicaSet, replicas: i32) -> ReplicaSet {
    let mut rs = rs.clone();
    rs.spec.get_or_insert_default().replicas = Some(replicas);
    rs
}

/// An old ReplicaSet scaled to `replicas`, with the sizes annotations of the Deployment (`scaleReplicaSet`).
fn scaled_old(d: &Deployment, rs: &ReplicaSet, replicas: i32) -> ReplicaSet {
    let mut rs = with_replicas(rs, replicas);
    let (surge, _) = resolve_fenceposts(d);
    let annotations = rs.metadata.annotations.get_or_insert_default();
    annotations.insert(DESIRED_REPLICAS.into(), desired_replicas(d).to_string());
    annotations.insert(MAX_REPLICAS.into(), (desired_replicas(d) + surge).to_string());
    rs
}

fn annotation_int(rs: &ReplicaSet, key: &str) -> Option<i32> {
    rs.metadata.annotations.as_ref()?.get(key)?.parse().ok()
}

/// Proportional scaling (`scale()`): when `spec.replicas` changes while several ReplicaSets are active,
/// spread the difference over them by their share of the previous maximum. New sizes by RS name.
pub fn proportional_scale(
    d: &Deployment,
    new_rs: &ReplicaSet,
    old: &[&ReplicaSet],
) -> Option<BTreeMap<String, i32>> {
    let desired = desired_replicas(d);
    let mut active: Vec<&ReplicaSet> =
        old.iter().copied().chain(std::iter::once(new_rs)).filter(|r| rs_replicas(r) > 0).collect();
    if active.len() < 2 || active.iter().all(|r| annotation_int(r, DESIRED_REPLICAS) == Some(desired)) {
        return None;
    }
    let (surge, _) = resolve_fenceposts(d);
    let allowed = desired + surge;
    let total: i32 = active.iter().map(|r| rs_replicas(r)).sum();
    let to_add = allowed - total;
    if to_add == 0 {
        return None;
    }
    // Largest first; newer first when growing, older first when shrinking.
    active.sort_by(|a, b| {
        rs_replicas(b).cmp(&rs_replicas(a)).then_with(|| {
            let by_age = a.metadata.creation_timestamp.cmp(&b.metadata.creation_timestamp);
            if to_add > 0 { by_age.reverse() } else { by_age }
        })
    });
    let mut plan = BTreeMap::new();
    let mut added = 0;
    for rs in &active {
        let size = rs_replicas(rs);
        let max = annotation_int(rs, MAX_REPLICAS).filter(|m| *m > 0).unwrap_or(total);
        let target = (f64::from(size) * f64::from(allowed) / f64::from(max)).round() as i32;
        let remaining = to_add - added;
        let step = if to_add > 0 {
            (target - size).clamp(0, remaining)
        } else {
            (target - size).clamp(remaining, 0)
        };
        plan.insert(rs.metadata.name.clone().unwrap_or_default(), size + step);
        added += step;
    }
    if let Some(first) = active.first().and_then(|r| r.metadata.name.clone()) {
        let entry = plan.entry(first).or_default();
        *entry = (*entry + to_add - added).max(0);
    }
    Some(plan)
}

/// Decide what to do for one Deployment given the ReplicaSets of its namespace.
pub fn reconcile(d: &Deployment, rses: &[ReplicaSet], now: &Time) -> Vec<DeployAction> {
    let mut actions = Vec::new();
    if d.metadata.deletion_timestamp.is_some() {
        return actions;
    }
    let spec = d.spec.clone().unwrap_or_default();
    let uid = d.metadata.uid.clone().unwrap_or_default();
    let selector = selectors::LabelSelector::from_k8s(&spec.selector).ok();
    let mut owned: Vec<&ReplicaSet> = Vec::new();
    for rs in rses {
        match controller_of(&rs.metadata) {
            Some(o) if o.uid == uid => owned.push(rs),
            Some(_) => {}
            None => {
                if rs.metadata.deletion_timestamp.is_none()
                    && selector.as_ref().is_some_and(|s| s.selects(rs.metadata.labels.as_ref()))
                {
                    actions.push(DeployAction::AdoptReplicaSet(rs.metadata.name.clone().unwrap_or_default()));
                    owned.push(rs);
                }
            }
        }
    }
    let new_rs: Option<&ReplicaSet> = owned
        .iter()
        .copied()
        .filter(|rs| {
            rs.spec
                .as_ref()
                .and_then(|s| s.template.as_ref())
                .is_some_and(|t| templates_equal(t, &spec.template))
        })
        .min_by_key(|rs| rs.metadata.creation_timestamp.clone());
    let new_name = new_rs.and_then(|r| r.metadata.name.clone());
    let old: Vec<&ReplicaSet> = owned.iter().copied().filter(|r| r.metadata.name != new_name).collect();
    let max_old_revision = old.iter().map(|r| revision_of(r)).max().unwrap_or(0);
    let desired = desired_replicas(d);
    let paused = spec.paused.unwrap_or(false);

    let Some(new_rs) = new_rs else {
        if paused {
            actions.push(DeployAction::Status(Box::new(compute_status(d, None, &owned, false, now))));
            return actions;
        }
        let old_total: i32 = old.iter().map(|r| rs_replicas(r)).sum();
        let old_pods: i32 = old.iter().map(|r| rs_status(r).0).sum();
        let initial = if is_recreate(d) {
            if old_total == 0 && old_pods == 0 { desired } else { 0 }
        } else {
            rolling_new_replicas(d, old_total, 0)
        };
        let candidate = new_replica_set(d, max_old_revision + 1, initial);
        if rses.iter().any(|r| r.metadata.name == candidate.metadata.name) {
            let count = d.status.as_ref().and_then(|s| s.collision_count).unwrap_or(0) + 1;
            actions.push(DeployAction::Collision(count));
            return actions;
        }
        let revision = (max_old_revision + 1).to_string();
        actions.push(DeployAction::CreateReplicaSet(Box::new(candidate.clone())));
        actions.push(DeployAction::SetRevision(revision));
        let mut all = owned.clone();
        all.push(&candidate);
        actions.push(DeployAction::Status(Box::new(compute_status(d, Some(&candidate), &all, true, now))));
        return actions;
    };

    // Annotations of the new ReplicaSet: revision (bumped on rollback), copied annotations, sizes.
    let mut target = new_rs.clone();
    let annotations = target.metadata.annotations.get_or_insert_default();
    let current_revision = revision_of(new_rs);
    let revision = if current_revision <= max_old_revision { max_old_revision + 1 } else { current_revision };
    if revision != current_revision && current_revision > 0 {
        let mut history: Vec<String> = annotations
            .get(REVISION_HISTORY)
            .map(|h| h.split(',').map(str::to_string).collect())
            .unwrap_or_default();
        history.push(current_revision.to_string());
        annotations.insert(REVISION_HISTORY.into(), history.join(","));
    }
    annotations.insert(REVISION.into(), revision.to_string());
    for (k, v) in copied_annotations(d) {
        annotations.insert(k, v);
    }
    let (surge, _) = resolve_fenceposts(d);
    if !paused {
        annotations.insert(DESIRED_REPLICAS.into(), desired.to_string());
        annotations.insert(MAX_REPLICAS.into(), (desired + surge).to_string());
    }

    // Replica counts.
    let mut old_plan: BTreeMap<String, i32> = BTreeMap::new();
    let old_spec_total: i32 = old.iter().map(|r| rs_replicas(r)).sum();
    let new_replicas = rs_replicas(new_rs);
    let mut next_new = new_replicas;
    if paused || old_spec_total == 0 {
        if old_spec_total == 0 {
            next_new = desired;
        }
    } else if let Some(plan) = (!is_recreate(d)).then(|| proportional_scale(d, new_rs, &old)).flatten() {
        let new_name = new_rs.metadata.name.clone().unwrap_or_default();
        next_new = plan.get(&new_name).copied().unwrap_or(new_replicas);
        old_plan = plan.into_iter().filter(|(name, _)| *name != new_name).collect();
    } else if is_recreate(d) {
        for r in &old {
            if rs_replicas(r) > 0 {
                old_plan.insert(r.metadata.name.clone().unwrap_or_default(), 0);
            }
        }
        let old_pods: i32 = old.iter().map(|r| rs_status(r).0).sum();
        if old_pods == 0 && old_plan.is_empty() {
            next_new = desired;
        }
    } else {
        next_new = rolling_new_replicas(d, old_spec_total + new_replicas, new_replicas)
            .min(desired.max(new_replicas));
        if next_new > desired {
            next_new = desired;
        }
        if next_new == new_replicas {
            old_plan = scale_down_old(d, new_rs, &old);
        }
    }
    target = with_replicas(&target, next_new);
    if &target != new_rs {
        actions.push(DeployAction::UpdateReplicaSet(Box::new(target.clone())));
    }
    for r in &old {
        let name = r.metadata.name.clone().unwrap_or_default();
        if let Some(&n) = old_plan.get(&name)
            && n != rs_replicas(r)
        {
            actions.push(DeployAction::UpdateReplicaSet(Box::new(scaled_old(d, r, n))));
        }
    }

    // revisionHistoryLimit: delete the oldest fully scaled-down old ReplicaSets beyond the limit.
    let limit = spec.revision_history_limit.unwrap_or(10).max(0) as usize;
    let mut idle: Vec<&&ReplicaSet> = old
        .iter()
        .filter(|r| {
            rs_replicas(r) == 0
                && rs_status(r).0 == 0
                && r.metadata.deletion_timestamp.is_none()
                && r.status.as_ref().and_then(|s| s.observed_generation) >= r.metadata.generation
        })
        .collect();
    if idle.len() > limit {
        idle.sort_by_key(|r| revision_of(r));
        for r in &idle[..idle.len() - limit] {
            actions.push(DeployAction::DeleteReplicaSet(r.metadata.name.clone().unwrap_or_default()));
        }
    }

    let revision_annotation = d.metadata.annotations.as_ref().and_then(|a| a.get(REVISION));
    if revision_annotation != Some(&revision.to_string()) {
        actions.push(DeployAction::SetRevision(revision.to_string()));
    }
    let status = compute_status(d, Some(new_rs), &owned, false, now);
    if !semantically_equal(&d.status.clone().unwrap_or_default(), &status) {
        actions.push(DeployAction::Status(Box::new(status)));
    }
    actions
}

/// Apply the actions of one Deployment.
pub async fn execute<C: ClusterApi>(
    client: &C,
    events: &EventRecorder<C>,
    d: &Deployment,
    rses: &[ReplicaSet],
    actions: Vec<DeployAction>,
) -> Result<(), DeploymentError> {
    let name = d.metadata.name.clone().unwrap_or_default();
    let ns = d.metadata.namespace.as_deref();
    let fail = |step: String| {
        let name = name.clone();
        move |source| DeploymentError::Action { deployment: name, step, source }
    };
    let mut current = d.clone();
    for action in actions {
        let result = match action {
            DeployAction::AdoptReplicaSet(rs_name) => {
                let Some(mut rs) =
                    rses.iter().find(|r| r.metadata.name.as_deref() == Some(&rs_name)).cloned()
                else {
                    continue;
                };
                rs.metadata.owner_references.get_or_insert_default().push(controller_ref(d));
                client.update(&rs).await.map(drop).map_err(fail(format!("adopting replicaset {rs_name}")))
            }
            DeployAction::CreateReplicaSet(rs) => match client.create(&*rs).await {
                Ok(created) => {
                    let msg = format!(
                        "Scaled up replica set {} from 0 to {}",
                        created.metadata.name.as_deref().unwrap_or(""),
                        rs_replicas(&created)
                    );
                    events.record(d, EventType::Normal, "ScalingReplicaSet", &msg).await;
                    Ok(())
                }
                Err(e) => Err(fail("creating replicaset".into())(e)),
            },
            DeployAction::UpdateReplicaSet(rs) => {
                let before = rses.iter().find(|r| r.metadata.name == rs.metadata.name).map_or(0, rs_replicas);
                match client.update(&*rs).await {
                    Ok(_) => {
                        let after = rs_replicas(&rs);
                        if before != after {
                            let verb = if after > before { "up" } else { "down" };
                            let msg = format!(
                                "Scaled {verb} replica set {} from {before} to {after}",
                                rs.metadata.name.as_deref().unwrap_or("")
                            );
                            events.record(d, EventType::Normal, "ScalingReplicaSet", &msg).await;
                        }
                        Ok(())
                    }
                    Err(e) if e.is_conflict() => return Ok(()),
                    Err(e) => Err(fail("updating replicaset".into())(e)),
                }
            }
            DeployAction::DeleteReplicaSet(rs_name) => {
                match client.delete::<ReplicaSet>(ns, &rs_name, &DeleteParams::default()).await {
                    Ok(_) => Ok(()),
                    Err(e) if e.is_not_found() => Ok(()),
                    Err(e) => Err(fail(format!("deleting old replicaset {rs_name}"))(e)),
                }
            }
            DeployAction::SetRevision(revision) => {
                current.metadata.annotations.get_or_insert_default().insert(REVISION.into(), revision);
                match client.update(&current).await {
                    Ok(updated) => {
                        current = updated;
                        Ok(())
                    }
                    Err(e) if e.is_conflict() => return Ok(()),
                    Err(e) => Err(fail("setting revision".into())(e)),
                }
            }
            DeployAction::Collision(count) => {
                current.status.get_or_insert_default().collision_count = Some(count);
                client
                    .update_status(&current)
                    .await
                    .map(drop)
                    .map_err(fail("recording hash collision".into()))
            }
            DeployAction::Status(status) => {
                current.status = Some(*status);
                match client.update_status(&current).await {
                    Err(e) if e.is_conflict() || e.is_not_found() => Ok(()),
                    other => other.map(drop).map_err(fail("updating status".into())),
                }
            }
        };
        result?;
    }
    Ok(())
}

/// One pass over every Deployment.
pub async fn sync_all<C: ClusterApi>(client: &C, events: &EventRecorder<C>) -> Result<(), DeploymentError> {
    let deployments = client
        .list::<Deployment>(None)
        .await
        .map_err(|source| DeploymentError::List { what: "deployments", source })?;
    let rses = client
        .list::<ReplicaSet>(None)
        .await
        .map_err(|source| DeploymentError::List { what: "replicasets", source })?;
    let mut by_ns: BTreeMap<String, Vec<ReplicaSet>> = BTreeMap::new();
    for rs in rses.items {
        by_ns.entry(rs.metadata.namespace.clone().unwrap_or_default()).or_default().push(rs);
    }
    let now = now_time();
    let mut first_error = None;
    for d in &deployments.items {
        let rses = by_ns.get(d.metadata.namespace.as_deref().unwrap_or("")).map(Vec::as_slice).unwrap_or(&[]);
        let actions = reconcile(d, rses, &now);
        if let Err(e) = execute(client, events, d, rses, actions).await {
            first_error.get_or_insert(e);
        }
    }
    first_error.map_or(Ok(()), Err)
}

/// Run the Deployment controller forever.
pub async fn run<C: ClusterApi>(client: Arc<C>) {
    let events = EventRecorder::new(client.clone(), "deployment-controller");
    let trigger =
        Trigger::default().watch::<Deployment, C>(&client).await.watch::<ReplicaSet, C>(&client).await;
    run_loop("deployment", trigger, Duration::from_secs(5), || sync_all(&*client, &events)).await;
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::master::controllers::deployment_util::nginx_template as template;
    use k8s_openapi::api::apps::v1::{DeploymentSpec, ReplicaSetStatus};

    fn deployment(image: &str, replicas: i32) -> Deployment {
        Deployment {
            metadata: ObjectMeta {
                name: Some("web".into()),
                namespace: Some("default".into()),
                uid: Some("d-uid".into()),
                generation: Some(1),
                annotations: Some([(CHANGE_CAUSE.to_string(), format!("set {image}"))].into()),
                ..Default::default()
            },
            spec: Some(DeploymentSpec {
                replicas: Some(replicas),
                selector: LabelSelector {
                    match_labels: Some([("app".to_string(), "nginx".to_string())].into()),
                    ..Default::default()
                },
                template: template(image),
                ..Default::default()
            }),
            status: None,
        }
    }

    /// The RS as the API would hold it after creation, with `available` ready pods.
    fn stored(mut rs: ReplicaSet, replicas: i32, available: i32) -> ReplicaSet {
        rs.metadata.uid = Some(format!("{}-uid", rs.metadata.name.as_deref().unwrap()));
        rs.spec.as_mut().unwrap().replicas = Some(replicas);
        rs.status = Some(ReplicaSetStatus {
            replicas: available,
            ready_replicas: Some(available),
            available_replicas: Some(available),
            ..Default::default()
        });
        rs
    }

    fn created(actions: &[DeployAction]) -> ReplicaSet {
        actions
            .iter()
            .find_map(|a| match a {
                DeployAction::CreateReplicaSet(rs) => Some((**rs).clone()),
                _ => None,
            })
            .expect("a ReplicaSet is created")
    }

    #[test]
    fn first_sync_creates_hashed_replicaset_with_revision_1() {
        let d = deployment("nginx:1.10", 3);
        let actions = reconcile(&d, &[], &now_time());
        let rs = created(&actions);
        let hash = compute_hash(&d.spec.as_ref().unwrap().template, None);
        assert_eq!(rs.metadata.name.as_deref(), Some(format!("web-{hash}").as_str()));
        let ann = rs.metadata.annotations.as_ref().unwrap();
        assert_eq!(ann[REVISION], "1");
        assert_eq!(ann[CHANGE_CAUSE], "set nginx:1.10");
        assert_eq!(rs.spec.as_ref().unwrap().replicas, Some(3));
        assert_eq!(
            rs.spec.as_ref().unwrap().selector.match_labels.as_ref().unwrap()[POD_TEMPLATE_HASH],
            hash
        );
        assert_eq!(rs.metadata.owner_references.as_ref().unwrap()[0].kind, "Deployment");
        assert!(actions.contains(&DeployAction::SetRevision("1".into())));
    }

    #[test]
    fn rolling_update_respects_surge_and_unavailability() {
        let v1 = deployment("nginx:1.10", 4);
        let rs1 = stored(created(&reconcile(&v1, &[], &now_time())), 4, 4);
        let v2 = deployment("nginx:1.11", 4);
        // New RS created with maxSurge = 1 pod.
        let rs2 = created(&reconcile(&v2, std::slice::from_ref(&rs1), &now_time()));
        assert_eq!(rs2.spec.as_ref().unwrap().replicas, Some(1));
        assert_eq!(revision_of(&rs2), 2);
        // With the new pod not yet available, old may drop by maxUnavailable = 1.
        let rs2 = stored(rs2, 1, 0);
        let actions = reconcile(&v2, &[rs1.clone(), rs2.clone()], &now_time());
        let old_update = actions.iter().find_map(|a| match a {
            DeployAction::UpdateReplicaSet(r) if r.metadata.name == rs1.metadata.name => Some(rs_replicas(r)),
            _ => None,
        });
        assert_eq!(old_update, Some(3));
        // Finished: all on the new RS, old at zero; status reports completion.
        let done = [stored(rs1.clone(), 0, 0), stored(rs2.clone(), 4, 4)];
        let actions = reconcile(&v2, &done, &now_time());
        let status = actions.iter().find_map(|a| match a {
            DeployAction::Status(s) => Some(s.clone()),
            _ => None,
        });
        let status = status.unwrap();
        assert_eq!(
            (status.replicas, status.updated_replicas, status.available_replicas),
            (Some(4), Some(4), Some(4))
        );
        let progressing = status.conditions.unwrap().into_iter().find(|c| c.type_ == "Progressing").unwrap();
        assert_eq!(progressing.reason.as_deref(), Some("NewReplicaSetAvailable"));
    }

    #[test]
    fn rollback_reuses_the_old_replicaset_and_bumps_its_revision() {
        let v1 = deployment("nginx:1.10", 2);
        let rs1 = stored(created(&reconcile(&v1, &[], &now_time())), 0, 0);
        let v2 = deployment("nginx:1.11", 2);
        let rs2 = stored(created(&reconcile(&v2, std::slice::from_ref(&rs1), &now_time())), 2, 2);
        // kubectl rollout undo patches the template back (with empty fields the API keeps).
        let mut undo = deployment("nginx:1.10", 2);
        undo.spec.as_mut().unwrap().template.spec.as_mut().unwrap().containers[0].resources =
            Some(Default::default());
        let actions = reconcile(&undo, &[rs1.clone(), rs2], &now_time());
        assert!(!actions.iter().any(|a| matches!(a, DeployAction::CreateReplicaSet(_))), "{actions:?}");
        let reused = actions
            .iter()
            .find_map(|a| match a {
                DeployAction::UpdateReplicaSet(r) if r.metadata.name == rs1.metadata.name => Some(r.clone()),
                _ => None,
            })
            .unwrap();
        let ann = reused.metadata.annotations.unwrap();
        assert_eq!(ann[REVISION], "3");
        assert_eq!(ann[REVISION_HISTORY], "1");
        assert!(actions.contains(&DeployAction::SetRevision("3".into())));
    }

    #[test]
    fn scaling_without_template_change_resizes_the_current_replicaset() {
        let v1 = deployment("nginx:1.10", 3);
        let rs1 = stored(created(&reconcile(&v1, &[], &now_time())), 3, 3);
        let actions = reconcile(&deployment("nginx:1.10", 5), &[rs1], &now_time());
        assert!(
            actions.iter().any(|a| matches!(a, DeployAction::UpdateReplicaSet(r) if rs_replicas(r) == 5))
        );
        assert!(!actions.iter().any(|a| matches!(a, DeployAction::CreateReplicaSet(_))));
    }

    #[test]
    fn recreate_scales_old_to_zero_before_starting_new_pods() {
        let with_recreate = |image: &str| {
            let mut d = deployment(image, 2);
            d.spec.as_mut().unwrap().strategy = Some(k8s_openapi::api::apps::v1::DeploymentStrategy {
                type_: Some("Recreate".into()),
                rolling_update: None,
            });
            d
        };
        let rs1 = stored(created(&reconcile(&with_recreate("nginx:1.10"), &[], &now_time())), 2, 2);
        let v2 = with_recreate("nginx:1.11");
        let rs2 = created(&reconcile(&v2, std::slice::from_ref(&rs1), &now_time()));
        assert_eq!(rs_replicas(&rs2), 0, "no new pods while old ones run");
        let rs2 = stored(rs2, 0, 0);
        let actions = reconcile(&v2, &[rs1.clone(), rs2.clone()], &now_time());
        assert!(actions.iter().any(|a| matches!(a, DeployAction::UpdateReplicaSet(r) if r.metadata.name == rs1.metadata.name && rs_replicas(r) == 0)));
        assert!(!actions.iter().any(|a| matches!(a, DeployAction::UpdateReplicaSet(r) if r.metadata.name == rs2.metadata.name && rs_replicas(r) > 0)));
        // Old pods gone: the new RS scales up to the full count.
        let actions = reconcile(&v2, &[stored(rs1, 0, 0), rs2.clone()], &now_time());
        assert!(actions.iter().any(|a| matches!(a, DeployAction::UpdateReplicaSet(r) if r.metadata.name == rs2.metadata.name && rs_replicas(r) == 2)));
    }

    #[test]
    fn paused_deployments_do_not_roll_out() {
        let v1 = deployment("nginx:1.10", 2);
        let rs1 = stored(created(&reconcile(&v1, &[], &now_time())), 2, 2);
        let mut v2 = deployment("nginx:1.11", 2);
        v2.spec.as_mut().unwrap().paused = Some(true);
        let actions = reconcile(&v2, &[rs1], &now_time());
        assert!(
            !actions
                .iter()
                .any(|a| matches!(a, DeployAction::CreateReplicaSet(_) | DeployAction::UpdateReplicaSet(_)))
        );
    }

    #[test]
    fn stuck_rollouts_exceed_the_progress_deadline() {
        let v1 = deployment("nginx:1.10", 2);
        let rs1 = stored(created(&reconcile(&v1, &[], &now_time())), 2, 2);
        let mut v2 = deployment("nginx:1.11", 2);
        let rs2 = stored(created(&reconcile(&v2, std::slice::from_ref(&rs1), &now_time())), 1, 0);
        let status_of = |actions: Vec<DeployAction>| {
            actions.into_iter().find_map(|a| match a {
                DeployAction::Status(s) => Some(*s),
                _ => None,
            })
        };
        let t0 = now_time();
        let s0 = status_of(reconcile(&v2, &[rs1.clone(), rs2.clone()], &t0)).unwrap();
        v2.status = Some(s0);
        let later = Time(t0.0 + k8s_openapi::chrono::Duration::seconds(601));
        let s1 = status_of(reconcile(&v2, &[rs1.clone(), rs2.clone()], &later)).unwrap();
        let progressing =
            s1.conditions.as_ref().unwrap().iter().find(|c| c.type_ == "Progressing").unwrap().clone();
        assert_eq!((progressing.status.as_str(), progressing.reason.as_deref()), ("False", Some(TIMED_OUT)));
        // It stays timed out while nothing moves.
        v2.status = Some(s1);
        let even_later = Time(later.0 + k8s_openapi::chrono::Duration::seconds(700));
        let kept = reconcile(&v2, &[rs1, rs2], &even_later);
        assert!(
            status_of(kept).is_none_or(|s| s
                .conditions
                .unwrap()
                .iter()
                .any(|c| c.reason.as_deref() == Some(TIMED_OUT)))
        );
    }

    #[test]
    fn scaling_mid_rollout_is_proportional() {
        let v1 = deployment("nginx:1.10", 10);
        let rs1 = stored(created(&reconcile(&v1, &[], &now_time())), 8, 8);
        let v2 = deployment("nginx:1.11", 10);
        let rs2 = stored(created(&reconcile(&v2, std::slice::from_ref(&rs1), &now_time())), 5, 0);
        // Both RSes carry desired 10 / max 13; the user scales to 20 (max 25): +12 spread 7 / 5.
        let scaled = deployment("nginx:1.11", 20);
        let plan = proportional_scale(&scaled, &rs2, &[&rs1]).unwrap();
        assert_eq!(plan[rs1.metadata.name.as_ref().unwrap()], 15);
        assert_eq!(plan[rs2.metadata.name.as_ref().unwrap()], 10);
        assert!(proportional_scale(&v2, &rs2, &[&rs1]).is_none(), "no scaling event without a size change");
    }

    #[test]
    fn history_limit_deletes_oldest_idle_replicasets() {
        let mut d = deployment("nginx:v9", 1);
        d.spec.as_mut().unwrap().revision_history_limit = Some(1);
        let mut rses = Vec::new();
        for (i, image) in ["nginx:v1", "nginx:v2", "nginx:v3"].iter().enumerate() {
            let rs = new_replica_set(&deployment(image, 1), i as i64 + 1, 0);
            rses.push(stored(rs, 0, 0));
        }
        rses.push(stored(new_replica_set(&d, 4, 1), 1, 1));
        let actions = reconcile(&d, &rses, &now_time());
        let deleted: Vec<&String> = actions
            .iter()
            .filter_map(|a| match a {
                DeployAction::DeleteReplicaSet(n) => Some(n),
                _ => None,
            })
            .collect();
        assert_eq!(deleted.len(), 2);
        assert!(deleted.contains(&rses[0].metadata.name.as_ref().unwrap()));
        assert!(deleted.contains(&rses[1].metadata.name.as_ref().unwrap()));
    }
}
