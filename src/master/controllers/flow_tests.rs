//! Executor tests: the whole control plane (scheduler, controllers, fake nodes) over the in-memory cluster.

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use k8s_openapi::api::apps::v1::{Deployment, DeploymentSpec, ReplicaSet, ReplicaSetSpec};
use k8s_openapi::api::core::v1::{Container, Event, Pod, PodSpec, ResourceRequirements};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta, Time};

use super::deployment_util::nginx_template as template;
use super::deployment_util::{CHANGE_CAUSE, POD_TEMPLATE_HASH, REVISION, REVISION_HISTORY, revision_of};
use super::manager::{ControlPlane, ManagerConfig, spawn_all};
use crate::master::client::memory::{MemoryCluster, now_time};
use crate::master::client::{ClusterApi, DeleteParams};
use crate::master::fakenodes::FakeNodeConfig;

fn start() -> (Arc<MemoryCluster>, ControlPlane) {
    let cluster = Arc::new(MemoryCluster::new());
    let config = ManagerConfig { fake_nodes: Some(FakeNodeConfig::default()), ..Default::default() };
    let plane = spawn_all(cluster.clone(), config);
    (cluster, plane)
}

/// Poll `check` until it returns Some or the deadline passes.
async fn eventually<T, F, Fut>(what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Some(v) = check().await {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn labels() -> Option<std::collections::BTreeMap<String, String>> {
    Some([("app".to_string(), "nginx".to_string())].into())
}

async fn running_pods(c: &MemoryCluster) -> Vec<Pod> {
    let pods = c.list::<Pod>(Some("default")).await.unwrap().items;
    pods.into_iter()
        .filter(|p| {
            p.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Running")
                && p.metadata.deletion_timestamp.is_none()
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicaset_apply_3_then_4_adds_exactly_one_pod() {
    let (c, _plane) = start();
    let mut rs = ReplicaSet {
        metadata: ObjectMeta {
            name: Some("frontend".into()),
            namespace: Some("default".into()),
            ..Default::default()
        },
        spec: Some(ReplicaSetSpec {
            replicas: Some(3),
            selector: LabelSelector { match_labels: labels(), ..Default::default() },
            template: Some(template("nginx:1.10")),
            ..Default::default()
        }),
        status: None,
    };
    rs = c.create(&rs).await.unwrap();
    let first = eventually("3 running pods", || async {
        let pods = running_pods(&c).await;
        (pods.len() == 3).then_some(pods)
    })
    .await;
    for p in &first {
        let name = p.metadata.name.as_deref().unwrap();
        assert!(name.starts_with("frontend-") && name.len() == "frontend-".len() + 5, "{name}");
        assert!(p.status.as_ref().unwrap().pod_ip.is_some());
    }
    rs.spec.as_mut().unwrap().replicas = Some(4);
    rs.metadata.resource_version = None;
    c.update(&rs).await.unwrap();
    let after = eventually("4 running pods", || async {
        let pods = running_pods(&c).await;
        (pods.len() == 4).then_some(pods)
    })
    .await;
    for p in &first {
        assert!(after.iter().any(|q| q.metadata.name == p.metadata.name), "original pods are kept");
    }
    eventually("rs status", || async {
        let rs: ReplicaSet = c.get(Some("default"), "frontend").await.unwrap();
        let s = rs.status?;
        (s.replicas == 4 && s.ready_replicas == Some(4) && s.observed_generation == rs.metadata.generation)
            .then_some(())
    })
    .await;
    assert_eq!(c.list::<Pod>(Some("default")).await.unwrap().items.len(), 4);
    let events = c.list::<Event>(Some("default")).await.unwrap().items;
    let reasons = |r: &str| events.iter().filter(|e| e.reason.as_deref() == Some(r)).count();
    assert_eq!(reasons("Scheduled"), 4, "the scheduler records every assignment");
    assert_eq!(reasons("SuccessfulCreate"), 4, "the ReplicaSet controller records every pod it creates");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn orphans_are_adopted_not_duplicated() {
    let (c, _plane) = start();
    for i in 0..3 {
        let pod = Pod {
            metadata: ObjectMeta {
                name: Some(format!("orphan-{i}")),
                namespace: Some("default".into()),
                labels: labels(),
                ..Default::default()
            },
            spec: template("nginx:1.10").spec,
            status: None,
        };
        c.create(&pod).await.unwrap();
    }
    let rs = ReplicaSet {
        metadata: ObjectMeta {
            name: Some("web".into()),
            namespace: Some("default".into()),
            ..Default::default()
        },
        spec: Some(ReplicaSetSpec {
            replicas: Some(4),
            selector: LabelSelector { match_labels: labels(), ..Default::default() },
            template: Some(template("nginx:1.10")),
            ..Default::default()
        }),
        status: None,
    };
    c.create(&rs).await.unwrap();
    let pods = eventually("4 running pods", || async {
        let pods = running_pods(&c).await;
        (pods.len() == 4 && pods.iter().all(|p| p.metadata.owner_references.is_some())).then_some(pods)
    })
    .await;
    assert_eq!(pods.iter().filter(|p| p.metadata.name.as_deref().unwrap().starts_with("orphan-")).count(), 3);
}

async fn deployment_done(c: &MemoryCluster, image: &str, replicas: i32) -> Deployment {
    eventually(&format!("rollout of {image}"), || async {
        let d: Deployment = c.get(Some("default"), "nginx").await.unwrap();
        let s = d.status.clone()?;
        let done = s.observed_generation >= d.metadata.generation
            && s.updated_replicas == Some(replicas)
            && s.replicas == Some(replicas)
            && s.available_replicas == Some(replicas);
        let pods = running_pods(c).await;
        let images_ok = pods.len() == replicas as usize
            && pods.iter().all(|p| p.spec.as_ref().unwrap().containers[0].image.as_deref() == Some(image));
        (done && images_ok).then_some(d)
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deployment_rollout_history_undo_and_cascading_delete() {
    let (c, _plane) = start();
    let mut d = Deployment {
        metadata: ObjectMeta {
            name: Some("nginx".into()),
            namespace: Some("default".into()),
            annotations: Some([(CHANGE_CAUSE.to_string(), "kubectl apply --record=true".to_string())].into()),
            ..Default::default()
        },
        spec: Some(DeploymentSpec {
            replicas: Some(3),
            selector: LabelSelector { match_labels: labels(), ..Default::default() },
            template: template("nginx:1.10"),
            ..Default::default()
        }),
        status: None,
    };
    c.create(&d).await.unwrap();
    d = deployment_done(&c, "nginx:1.10", 3).await;
    assert_eq!(d.metadata.annotations.as_ref().unwrap()[REVISION], "1");

    // kubectl set image --record
    d.spec.as_mut().unwrap().template = template("nginx:1.11");
    d.metadata
        .annotations
        .as_mut()
        .unwrap()
        .insert(CHANGE_CAUSE.into(), "kubectl set image nginx=nginx:1.11".into());
    d.metadata.resource_version = None;
    c.update(&d).await.unwrap();
    d = deployment_done(&c, "nginx:1.11", 3).await;
    assert_eq!(d.metadata.annotations.as_ref().unwrap()[REVISION], "2");
    let rses = c.list::<ReplicaSet>(Some("default")).await.unwrap().items;
    assert_eq!(rses.len(), 2);
    let rs1 = rses.iter().find(|r| revision_of(r) == 1).unwrap().clone();
    let rs2 = rses.iter().find(|r| revision_of(r) == 2).unwrap();
    assert_eq!(rs1.metadata.annotations.as_ref().unwrap()[CHANGE_CAUSE], "kubectl apply --record=true");
    assert_eq!(
        rs2.metadata.annotations.as_ref().unwrap()[CHANGE_CAUSE],
        "kubectl set image nginx=nginx:1.11"
    );

    // kubectl rollout undo --to-revision=1: template of rs1 minus the hash (with the empty fields kubectl sends).
    let mut back = rs1.spec.as_ref().unwrap().template.clone().unwrap();
    back.metadata.as_mut().unwrap().labels.as_mut().unwrap().remove(POD_TEMPLATE_HASH);
    back.spec.as_mut().unwrap().containers[0].resources = Some(ResourceRequirements::default());
    d.spec.as_mut().unwrap().template = back;
    d.metadata.resource_version = None;
    c.update(&d).await.unwrap();
    d = deployment_done(&c, "nginx:1.10", 3).await;
    let rses = c.list::<ReplicaSet>(Some("default")).await.unwrap().items;
    assert_eq!(rses.len(), 2, "undo reuses the first ReplicaSet");
    let reused = rses.iter().find(|r| r.metadata.uid == rs1.metadata.uid).unwrap();
    assert_eq!(revision_of(reused), 3);
    assert_eq!(reused.metadata.annotations.as_ref().unwrap()[REVISION_HISTORY], "1");
    assert_eq!(d.metadata.annotations.as_ref().unwrap()[REVISION], "3");

    // kubectl delete deployment (background propagation): RS and pods follow.
    c.delete::<Deployment>(Some("default"), "nginx", &DeleteParams::default()).await.unwrap();
    eventually("cascading delete", || async {
        let rs_left = c.list::<ReplicaSet>(Some("default")).await.unwrap().items.len();
        let pods_left = c.list::<Pod>(Some("default")).await.unwrap().items.len();
        (rs_left == 0 && pods_left == 0).then_some(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pods_that_fit_nowhere_stay_pending_with_a_reason() {
    let (c, _plane) = start();
    let pod = Pod {
        metadata: ObjectMeta {
            name: Some("huge".into()),
            namespace: Some("default".into()),
            ..Default::default()
        },
        spec: Some(PodSpec {
            containers: vec![Container {
                name: "c".into(),
                image: Some("busybox".into()),
                resources: Some(ResourceRequirements {
                    requests: Some([("cpu".to_string(), Quantity("1000".into()))].into()),
                    ..Default::default()
                }),
                ..Default::default()
            }],
            ..Default::default()
        }),
        status: None,
    };
    c.create(&pod).await.unwrap();
    let message = eventually("PodScheduled=False", || async {
        let p: Pod = c.get(Some("default"), "huge").await.unwrap();
        let cond = p.status?.conditions?.into_iter().find(|c| c.type_ == "PodScheduled")?;
        (cond.status == "False" && cond.message.as_deref().is_some_and(|m| m.contains("3 Insufficient cpu")))
            .then_some(cond.message?)
    })
    .await;
    assert_eq!(message, "0/3 nodes are available: 3 Insufficient cpu.");
    let events = c.list::<Event>(Some("default")).await.unwrap().items;
    assert!(events.iter().any(|e| e.reason.as_deref() == Some("FailedScheduling")
        && e.involved_object.name.as_deref() == Some("huge")));
    let p: Pod = c.get(Some("default"), "huge").await.unwrap();
    assert!(p.spec.unwrap().node_name.is_none());
}

#[tokio::test]
async fn silent_nodes_become_unknown_tainted_and_lose_their_pods() {
    use super::nodelifecycle::{NodeLifecycleConfig, TAINT_UNREACHABLE, sync_at};
    use crate::master::fakenodes::fake_node;
    use k8s_openapi::api::core::v1::Node;
    let c = MemoryCluster::new();
    c.create(&fake_node(&FakeNodeConfig::default(), 0)).await.unwrap();
    let pod = Pod {
        metadata: ObjectMeta {
            name: Some("p".into()),
            namespace: Some("default".into()),
            ..Default::default()
        },
        spec: Some(PodSpec { node_name: Some("fake-node-0".into()), ..Default::default() }),
        status: None,
    };
    c.create(&pod).await.unwrap();
    // No Lease, and the node's last heartbeat is 10 minutes old in the controller's clock.
    let config = NodeLifecycleConfig::default();
    let later = Time(now_time().0 + k8s_openapi::chrono::Duration::minutes(10));
    sync_at(&c, &config, &later).await.unwrap();
    let node: Node = c.get(None, "fake-node-0").await.unwrap();
    let ready = node.status.unwrap().conditions.unwrap().into_iter().find(|c| c.type_ == "Ready").unwrap();
    assert_eq!(ready.status, "Unknown");
    let taints = node.spec.unwrap().taints.unwrap();
    assert!(taints.iter().any(|t| t.key == TAINT_UNREACHABLE && t.effect == "NoExecute"));
    // Ten more minutes: past the 300 s default toleration of the NoExecute taint.
    let much_later = Time(later.0 + k8s_openapi::chrono::Duration::minutes(10));
    sync_at(&c, &config, &much_later).await.unwrap();
    let evicted: Pod = c.get(Some("default"), "p").await.unwrap();
    assert!(evicted.metadata.deletion_timestamp.is_some(), "pod on the lost node is being evicted");
}

#[tokio::test]
async fn orphan_and_foreground_deletion_through_the_collector() {
    use super::gc::sync_all;
    use super::owner::controller_ref;
    use crate::master::client::{Deleted, PropagationPolicy};
    let c = MemoryCluster::new();
    let rs = ReplicaSet {
        metadata: ObjectMeta {
            name: Some("rs".into()),
            namespace: Some("default".into()),
            ..Default::default()
        },
        ..Default::default()
    };
    let rs = c.create(&rs).await.unwrap();
    for name in ["a", "b"] {
        let pod = Pod {
            metadata: ObjectMeta {
                name: Some(name.into()),
                namespace: Some("default".into()),
                owner_references: Some(vec![controller_ref(&rs)]),
                ..Default::default()
            },
            ..Default::default()
        };
        c.create(&pod).await.unwrap();
    }
    // Orphan: the pods stay, without the owner reference; the owner goes.
    let orphan = DeleteParams::with_policy(PropagationPolicy::Orphan);
    assert!(matches!(
        c.delete::<ReplicaSet>(Some("default"), "rs", &orphan).await.unwrap(),
        Deleted::Pending(_)
    ));
    sync_all(&c).await.unwrap();
    sync_all(&c).await.unwrap();
    assert!(c.get::<ReplicaSet>(Some("default"), "rs").await.unwrap_err().is_not_found());
    let pods = c.list::<Pod>(Some("default")).await.unwrap().items;
    assert_eq!(pods.len(), 2);
    assert!(pods.iter().all(|p| p.metadata.owner_references.as_ref().is_none_or(|r| r.is_empty())));

    // Foreground: dependents first, then the owner.
    let rs = c
        .create(&ReplicaSet {
            metadata: ObjectMeta { resource_version: None, uid: None, ..rs.metadata.clone() },
            ..Default::default()
        })
        .await
        .unwrap();
    for mut p in pods {
        p.metadata.owner_references = Some(vec![controller_ref(&rs)]);
        c.update(&p).await.unwrap();
    }
    let foreground = DeleteParams::with_policy(PropagationPolicy::Foreground);
    c.delete::<ReplicaSet>(Some("default"), "rs", &foreground).await.unwrap();
    // Each pass moves the cascade one step; the owner must outlive every dependent.
    for _ in 0..5 {
        sync_all(&c).await.unwrap();
        let pods_left = c.list::<Pod>(Some("default")).await.unwrap().items.len();
        let owner_left = c.get::<ReplicaSet>(Some("default"), "rs").await.is_ok();
        assert!(owner_left || pods_left == 0, "owner deleted before its dependents");
        if !owner_left {
            return;
        }
    }
    panic!("foreground deletion did not finish in 5 passes");
}
