//! What a joined node does next for the Pods bound to it: a pure decision from the pods the API
//! server wants (keyed by uid), the pods on disk, the work in flight and failed starts waiting
//! for their back-off. The shell executes the actions and feeds the results back.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::Pod;

/// A pod from the API server on this node's disk.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LocalPod {
    /// Directory key (`state::pod_key`).
    pub key: String,
    pub uid: String,
}

/// One step for the shell.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Start the pod with this uid (fetch its ConfigMaps/Secrets, pull, run).
    Start { uid: String },
    /// Graceful deletion: stop the pod (preStop, SIGTERM, grace, SIGKILL), remove it from the
    /// node, then delete the object with grace 0 and a uid precondition.
    Terminate { uid: String, key: String, grace: Duration },
    /// The object is being deleted and nothing of it runs here: delete it with grace 0.
    Finalize { uid: String },
    /// A pod on disk the API server no longer has (deleted while the agent was down, or forced):
    /// stop and remove it.
    Orphan { key: String },
}

/// A start that failed, retried after its back-off.
#[derive(Debug, Clone)]
pub struct FailedStart {
    pub retry_at: Instant,
}

/// Inputs of one planning pass.
#[derive(Debug)]
pub struct Inputs<'a> {
    /// Pods bound to this node, by uid.
    pub desired: &'a BTreeMap<String, Pod>,
    /// Whether `desired` holds the API server's full list (after the watcher's initial list):
    /// only then may a pod missing from it be removed.
    pub synced: bool,
    pub local: &'a [LocalPod],
    /// Uids and keys with an action in flight.
    pub busy: &'a BTreeSet<String>,
    pub failed: &'a HashMap<String, FailedStart>,
    pub now: Instant,
}

fn phase(pod: &Pod) -> &str {
    pod.status.as_ref().and_then(|s| s.phase.as_deref()).unwrap_or("Pending")
}

/// Grace of a deletion: `deletionGracePeriodSeconds` as the API server set it.
pub fn deletion_grace(pod: &Pod) -> Duration {
    let secs = pod
        .metadata
        .deletion_grace_period_seconds
        .or_else(|| pod.spec.as_ref().and_then(|s| s.termination_grace_period_seconds))
        .unwrap_or(30);
    Duration::from_secs(secs.max(0) as u64)
}

/// The actions to take now, in a stable order.
pub fn plan(input: &Inputs<'_>) -> Vec<Action> {
    let mut actions = Vec::new();
    let local_by_uid: HashMap<&str, &LocalPod> = input.local.iter().map(|l| (l.uid.as_str(), l)).collect();
    for (uid, pod) in input.desired {
        if input.busy.contains(uid) {
            continue;
        }
        let deleting = pod.metadata.deletion_timestamp.is_some();
        match (local_by_uid.get(uid.as_str()), deleting) {
            (Some(local), true) => {
                if !input.busy.contains(&local.key) {
                    actions.push(Action::Terminate {
                        uid: uid.clone(),
                        key: local.key.clone(),
                        grace: deletion_grace(pod),
                    });
                }
            }
            (Some(_), false) => {}
            (None, true) => actions.push(Action::Finalize { uid: uid.clone() }),
            (None, false) => {
                let terminal = matches!(phase(pod), "Succeeded" | "Failed");
                let backing_off = input.failed.get(uid).is_some_and(|f| f.retry_at > input.now);
                if !terminal && !backing_off {
                    actions.push(Action::Start { uid: uid.clone() });
                }
            }
        }
    }
    if input.synced {
        for local in input.local {
            if !input.desired.contains_key(&local.uid) && !input.busy.contains(&local.key) {
                actions.push(Action::Orphan { key: local.key.clone() });
            }
        }
    }
    actions
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
    use k8s_openapi::chrono::Utc;

    fn pod(uid: &str) -> Pod {
        let mut p = Pod::default();
        p.metadata.uid = Some(uid.into());
        p.metadata.name = Some(format!("p-{uid}"));
        p
    }

    fn local(uid: &str) -> LocalPod {
        LocalPod { key: format!("default_p-{uid}_{uid}"), uid: uid.into() }
    }

    struct World {
        desired: BTreeMap<String, Pod>,
        local: Vec<LocalPod>,
        busy: BTreeSet<String>,
        failed: HashMap<String, FailedStart>,
        synced: bool,
        now: Instant,
    }

    impl World {
        fn new() -> Self {
            World {
                desired: BTreeMap::new(),
                local: vec![],
                busy: BTreeSet::new(),
                failed: HashMap::new(),
                synced: true,
                now: Instant::now(),
            }
        }
        fn plan(&self) -> Vec<Action> {
            plan(&Inputs {
                desired: &self.desired,
                synced: self.synced,
                local: &self.local,
                busy: &self.busy,
                failed: &self.failed,
                now: self.now,
            })
        }
    }

    #[test]
    fn starts_new_pods_once() {
        let mut w = World::new();
        w.desired.insert("a".into(), pod("a"));
        assert_eq!(w.plan(), vec![Action::Start { uid: "a".into() }]);
        w.busy.insert("a".into());
        assert!(w.plan().is_empty(), "in flight");
        w.busy.clear();
        w.local.push(local("a"));
        assert!(w.plan().is_empty(), "running");
    }

    #[test]
    fn failed_starts_wait_for_their_backoff() {
        let mut w = World::new();
        w.desired.insert("a".into(), pod("a"));
        w.failed.insert("a".into(), FailedStart { retry_at: w.now + Duration::from_secs(10) });
        assert!(w.plan().is_empty());
        w.now += Duration::from_secs(11);
        assert_eq!(w.plan(), vec![Action::Start { uid: "a".into() }]);
    }

    #[test]
    fn terminal_pods_are_not_started_again() {
        let mut w = World::new();
        let mut p = pod("a");
        p.status = Some(k8s_openapi::api::core::v1::PodStatus {
            phase: Some("Succeeded".into()),
            ..Default::default()
        });
        w.desired.insert("a".into(), p);
        assert!(w.plan().is_empty());
    }

    #[test]
    fn graceful_deletion() {
        let mut w = World::new();
        let mut p = pod("a");
        p.metadata.deletion_timestamp = Some(Time(Utc::now()));
        p.metadata.deletion_grace_period_seconds = Some(5);
        w.desired.insert("a".into(), p);
        w.local.push(local("a"));
        assert_eq!(
            w.plan(),
            vec![Action::Terminate {
                uid: "a".into(),
                key: "default_p-a_a".into(),
                grace: Duration::from_secs(5)
            }]
        );
        w.local.clear();
        assert_eq!(
            w.plan(),
            vec![Action::Finalize { uid: "a".into() }],
            "nothing here: just delete the object"
        );
    }

    #[test]
    fn pods_gone_from_the_api_are_removed_only_after_a_full_list() {
        let mut w = World::new();
        w.local.push(local("a"));
        w.synced = false;
        assert!(w.plan().is_empty());
        w.synced = true;
        assert_eq!(w.plan(), vec![Action::Orphan { key: "default_p-a_a".into() }]);
        w.busy.insert("default_p-a_a".into());
        assert!(w.plan().is_empty());
    }

    #[test]
    fn same_name_new_uid_is_a_new_pod() {
        let mut w = World::new();
        w.local.push(local("old"));
        let mut p = pod("new");
        p.metadata.name = Some("p-old".into());
        w.desired.insert("new".into(), p);
        assert_eq!(
            w.plan(),
            vec![Action::Start { uid: "new".into() }, Action::Orphan { key: "default_p-old_old".into() }]
        );
    }
}
