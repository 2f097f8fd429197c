//! Pod status with the kubelet's semantics (cluster.md §3.2), computed purely from the pod's
//! on-disk state, what the runtime says is running, and the status last reported (so condition
//! transition times move only when a condition flips, and an unchanged pod sends nothing).

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use k8s_openapi::api::core::v1::{
    ContainerState, ContainerStateRunning, ContainerStateTerminated, ContainerStateWaiting, ContainerStatus,
    HostIP, Pod, PodCondition, PodIP, PodStatus,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::chrono::{DateTime, Utc};

use crate::kubelet::state::{ContainerRecord, Phase, PodState};

/// What the shell observed for one pod besides its state file.
pub struct Observed<'a> {
    /// Whether the runtime container with this id is running.
    pub running: &'a dyn Fn(&str) -> bool,
    pub host_ip: &'a str,
    pub now: SystemTime,
}

fn time(unix_secs: u64) -> Time {
    Time(DateTime::<Utc>::from(UNIX_EPOCH + Duration::from_secs(unix_secs)))
}

fn now_time(now: SystemTime) -> Time {
    Time(DateTime::<Utc>::from(now))
}

/// `imageID` as the kubelet reports it: the repository and the manifest digest the container was
/// created from (empty for records made before digests were kept).
fn image_id(r: &ContainerRecord) -> String {
    match crate::image::reference::Reference::parse(&r.image) {
        Ok(reference) if !r.image_digest.is_empty() => format!("{}@{}", reference.name(), r.image_digest),
        _ => String::new(),
    }
}

/// `containerID` as the kubelet reports it.
pub fn container_id(id: &str) -> String {
    format!("rkube://{id}")
}

fn terminated(exit: &crate::kubelet::state::Exit, started_at: u64, id: &str) -> ContainerStateTerminated {
    let reason = if exit.oom_killed {
        "OOMKilled"
    } else if exit.code == 0 {
        "Completed"
    } else {
        "Error"
    };
    ContainerStateTerminated {
        exit_code: exit.code,
        reason: Some(reason.into()),
        started_at: (started_at != 0).then(|| time(started_at)),
        finished_at: Some(time(exit.at)),
        container_id: Some(container_id(id)),
        ..Default::default()
    }
}

fn container_status(
    pod: &PodState,
    r: &ContainerRecord,
    init_pending: bool,
    seen: &Observed<'_>,
) -> ContainerStatus {
    let running = r.started_at != 0 && !r.done && (seen.running)(&r.id);
    let now_ms = seen.now.duration_since(UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or_default();
    let waiting = |reason: &str, message: Option<String>| ContainerState {
        waiting: Some(ContainerStateWaiting { reason: Some(reason.into()), message }),
        ..Default::default()
    };
    let state = if running {
        ContainerState {
            running: Some(ContainerStateRunning { started_at: Some(time(r.started_at)) }),
            ..Default::default()
        }
    } else if let Some(at) = r.restart_at_ms.filter(|_| !r.done) {
        let left = Duration::from_millis(at.saturating_sub(now_ms));
        let delay = r.backoff.delay_ms.map(Duration::from_millis).unwrap_or(left);
        let meta = &pod.pod.metadata;
        waiting(
            "CrashLoopBackOff",
            Some(format!(
                "back-off {}s restarting failed container={} pod={}_{}({})",
                delay.as_secs(),
                r.name,
                meta.name.as_deref().unwrap_or_default(),
                meta.namespace.as_deref().unwrap_or("default"),
                meta.uid.as_deref().unwrap_or_default()
            )),
        )
    } else if let Some(exit) = r.last_exit.as_ref().filter(|_| r.done || r.started_at != 0) {
        ContainerState { terminated: Some(terminated(exit, r.started_at, &r.id)), ..Default::default() }
    } else if init_pending {
        waiting("PodInitializing", None)
    } else {
        waiting("ContainerCreating", None)
    };
    // The previous run, once the container has restarted.
    let last_state = match (&r.last_exit, state.terminated.is_some()) {
        (Some(exit), false) if r.restarts > 0 => {
            Some(ContainerState { terminated: Some(terminated(exit, 0, &r.id)), ..Default::default() })
        }
        _ => None,
    };
    ContainerStatus {
        name: r.name.clone(),
        image: r.image.clone(),
        image_id: image_id(r),
        container_id: (r.started_at != 0).then(|| container_id(&r.id)),
        ready: running && r.ready,
        restart_count: r.restarts as i32,
        started: Some(running),
        state: Some(state),
        last_state,
        ..Default::default()
    }
}

/// The status of a pod the node runs.
pub fn pod_status(pod: &PodState, prev: Option<&PodStatus>, seen: &Observed<'_>) -> PodStatus {
    let init_pending = pod.init_containers.iter().any(|c| !c.done || c.last_exit.is_none_or(|e| e.code != 0));
    let init_statuses: Vec<ContainerStatus> =
        pod.init_containers.iter().map(|r| container_status(pod, r, false, seen)).collect();
    let statuses: Vec<ContainerStatus> =
        pod.containers.iter().map(|r| container_status(pod, r, init_pending, seen)).collect();
    let terminal = matches!(pod.phase, Phase::Succeeded | Phase::Failed);
    let unready: Vec<&str> = statuses.iter().filter(|s| !s.ready).map(|s| s.name.as_str()).collect();
    let ready_reason = if terminal {
        Some(("PodCompleted", None))
    } else if unready.is_empty() {
        None
    } else {
        Some(("ContainersNotReady", Some(format!("containers with unready status: [{}]", unready.join(" ")))))
    };
    let init_reason = init_pending.then(|| {
        let names: Vec<&str> =
            pod.init_containers.iter().filter(|c| !c.done).map(|c| c.name.as_str()).collect();
        (
            "ContainersNotInitialized",
            Some(format!("containers with incomplete status: [{}]", names.join(" "))),
        )
    });
    let cond = |type_: &str, reason: Option<(&str, Option<String>)>| {
        let status = if reason.is_none() { "True" } else { "False" };
        let (reason, message) = match reason {
            Some((r, m)) => (Some(r.to_string()), m),
            None => (None, None),
        };
        PodCondition { type_: type_.into(), status: status.into(), reason, message, ..Default::default() }
    };
    let sandbox = if pod.ip.is_some() && !terminal { None } else { Some(("", None)) };
    let mut conditions = vec![
        cond("PodReadyToStartContainers", sandbox),
        cond("Initialized", if terminal && init_reason.is_none() { None } else { init_reason }),
        cond("Ready", ready_reason.clone()),
        cond("ContainersReady", ready_reason),
    ];
    for c in &mut conditions {
        if c.reason.as_deref() == Some("") {
            c.reason = None;
        }
        let previous = prev
            .and_then(|p| p.conditions.as_ref())
            .and_then(|cs| cs.iter().find(|o| o.type_ == c.type_ && o.status == c.status));
        c.last_transition_time =
            previous.and_then(|p| p.last_transition_time.clone()).or_else(|| Some(now_time(seen.now)));
    }
    // PodScheduled belongs to the scheduler; a strategic merge keeps it (merge key `type`).
    if let Some(scheduled) =
        prev.and_then(|p| p.conditions.as_ref()).and_then(|cs| cs.iter().find(|c| c.type_ == "PodScheduled"))
    {
        conditions.insert(1, scheduled.clone());
    }
    let phase = match pod.phase {
        Phase::Pending => "Pending",
        Phase::Running => "Running",
        Phase::Succeeded => "Succeeded",
        Phase::Failed => "Failed",
    };
    let ip = pod.ip.map(|ip| ip.to_string());
    PodStatus {
        phase: Some(phase.into()),
        conditions: Some(conditions),
        host_ip: Some(seen.host_ip.to_string()),
        host_ips: Some(vec![HostIP { ip: seen.host_ip.to_string() }]),
        pod_ip: ip.clone(),
        pod_ips: ip.map(|ip| vec![PodIP { ip }]),
        start_time: Some(time(pod.created)),
        container_statuses: Some(statuses),
        init_container_statuses: (!init_statuses.is_empty()).then_some(init_statuses),
        qos_class: prev.and_then(|p| p.qos_class.clone()),
        ..Default::default()
    }
}

/// The status of a pod the node has not started (yet): Pending, every container waiting with
/// `reason` (`ContainerCreating`, `ErrImagePull`, `ImagePullBackOff`,
/// `CreateContainerConfigError`).
pub fn waiting_status(
    pod: &Pod,
    reason: &str,
    message: Option<&str>,
    host_ip: &str,
    now: SystemTime,
) -> PodStatus {
    let prev = pod.status.as_ref();
    let spec = pod.spec.as_ref();
    let waiting = |name: &str, image: &Option<String>| ContainerStatus {
        name: name.into(),
        image: image.clone().unwrap_or_default(),
        ready: false,
        restart_count: 0,
        started: Some(false),
        state: Some(ContainerState {
            waiting: Some(ContainerStateWaiting {
                reason: Some(reason.into()),
                message: message.map(Into::into),
            }),
            ..Default::default()
        }),
        ..Default::default()
    };
    let statuses = spec.map(|s| s.containers.iter().map(|c| waiting(&c.name, &c.image)).collect());
    let names: Vec<&str> =
        spec.map(|s| s.containers.iter().map(|c| c.name.as_str()).collect()).unwrap_or_default();
    let mut conditions: Vec<PodCondition> = prev
        .and_then(|p| p.conditions.as_ref())
        .map(|cs| cs.iter().filter(|c| c.type_ == "PodScheduled").cloned().collect())
        .unwrap_or_default();
    for type_ in ["Ready", "ContainersReady"] {
        conditions.push(PodCondition {
            type_: type_.into(),
            status: "False".into(),
            reason: Some("ContainersNotReady".into()),
            message: Some(format!("containers with unready status: [{}]", names.join(" "))),
            last_transition_time: Some(now_time(now)),
            ..Default::default()
        });
    }
    PodStatus {
        phase: Some("Pending".into()),
        conditions: Some(conditions),
        host_ip: Some(host_ip.to_string()),
        host_ips: Some(vec![HostIP { ip: host_ip.to_string() }]),
        start_time: prev.and_then(|p| p.start_time.clone()).or_else(|| Some(now_time(now))),
        container_statuses: statuses,
        qos_class: prev.and_then(|p| p.qos_class.clone()),
        ..Default::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kubelet::state::Exit;

    fn record(name: &str) -> ContainerRecord {
        ContainerRecord {
            name: name.into(),
            id: format!("p_{name}"),
            image: "busybox".into(),
            layers: vec![],
            restarts: 0,
            started_at: 100,
            last_exit: None,
            done: false,
            ready: true,
            backoff: Default::default(),
            restart_at_ms: None,
            image_digest: "sha256:00".into(),
            probe_failure: None,
        }
    }

    fn state(containers: Vec<ContainerRecord>) -> PodState {
        let mut pod = Pod::default();
        pod.metadata.name = Some("web".into());
        pod.metadata.namespace = Some("default".into());
        pod.metadata.uid = Some("u1".into());
        PodState {
            pod,
            uid: "u1".into(),
            created: 90,
            phase: Phase::Running,
            ip: Some("10.244.1.5".parse().unwrap()),
            containers,
            init_containers: vec![],
            pause: None,
            stopping: false,
        }
    }

    fn observed<'a>(running: &'a dyn Fn(&str) -> bool, now: SystemTime) -> Observed<'a> {
        Observed { running, host_ip: "10.0.0.2", now }
    }

    fn cond<'a>(s: &'a PodStatus, t: &str) -> &'a PodCondition {
        s.conditions.as_ref().unwrap().iter().find(|c| c.type_ == t).unwrap()
    }

    #[test]
    fn running_and_ready() {
        let st = state(vec![record("a"), record("b")]);
        let now = UNIX_EPOCH + Duration::from_secs(200);
        let s = pod_status(&st, None, &observed(&|_| true, now));
        assert_eq!(s.phase.as_deref(), Some("Running"));
        assert_eq!(s.pod_ip.as_deref(), Some("10.244.1.5"));
        assert_eq!(s.host_ip.as_deref(), Some("10.0.0.2"));
        assert_eq!(cond(&s, "Ready").status, "True");
        let c = &s.container_statuses.as_ref().unwrap()[0];
        assert!(c.ready);
        assert_eq!(c.container_id.as_deref(), Some("rkube://p_a"));
        assert_eq!(c.image_id, "docker.io/library/busybox@sha256:00");
        assert!(c.state.as_ref().unwrap().running.is_some());
        // Nothing changed: the same report, transition times kept.
        let later = pod_status(&st, Some(&s), &observed(&|_| true, now + Duration::from_secs(30)));
        assert_eq!(s, later, "an unchanged pod reports the same status");
    }

    #[test]
    fn crash_loop_and_not_ready() {
        let mut b = record("b");
        b.restarts = 2;
        b.last_exit = Some(Exit { code: 1, oom_killed: false, at: 150 });
        b.restart_at_ms = Some(210_000);
        b.backoff.delay_ms = Some(20_000);
        let st = state(vec![record("a"), b]);
        let now = UNIX_EPOCH + Duration::from_secs(200);
        let running = |id: &str| id == "p_a";
        let s = pod_status(&st, None, &observed(&running, now));
        let ready = cond(&s, "Ready");
        assert_eq!(ready.status, "False");
        assert_eq!(ready.message.as_deref(), Some("containers with unready status: [b]"));
        let b = &s.container_statuses.as_ref().unwrap()[1];
        let waiting = b.state.as_ref().unwrap().waiting.as_ref().unwrap();
        assert_eq!(waiting.reason.as_deref(), Some("CrashLoopBackOff"));
        assert!(
            waiting
                .message
                .as_deref()
                .unwrap()
                .starts_with("back-off 20s restarting failed container=b pod=web_default(u1)")
        );
        assert_eq!(b.restart_count, 2);
        let last = b.last_state.as_ref().unwrap().terminated.as_ref().unwrap();
        assert_eq!((last.exit_code, last.reason.as_deref()), (1, Some("Error")));
    }

    #[test]
    fn completed_pod() {
        let mut a = record("a");
        a.done = true;
        a.last_exit = Some(Exit { code: 0, oom_killed: false, at: 150 });
        let mut st = state(vec![a]);
        st.phase = Phase::Succeeded;
        let s = pod_status(&st, None, &observed(&|_| false, SystemTime::now()));
        assert_eq!(s.phase.as_deref(), Some("Succeeded"));
        assert_eq!(cond(&s, "Ready").reason.as_deref(), Some("PodCompleted"));
        let t = s.container_statuses.as_ref().unwrap()[0].state.as_ref().unwrap().terminated.clone().unwrap();
        assert_eq!(t.reason.as_deref(), Some("Completed"));
    }

    #[test]
    fn waiting_pods_keep_the_scheduler_condition() {
        let pod = Pod {
            spec: Some(k8s_openapi::api::core::v1::PodSpec {
                containers: vec![k8s_openapi::api::core::v1::Container {
                    name: "web".into(),
                    image: Some("nginx".into()),
                    ..Default::default()
                }],
                ..Default::default()
            }),
            status: Some(PodStatus {
                conditions: Some(vec![PodCondition {
                    type_: "PodScheduled".into(),
                    status: "True".into(),
                    ..Default::default()
                }]),
                ..Default::default()
            }),
            ..Default::default()
        };
        let s = waiting_status(&pod, "ErrImagePull", Some("not found"), "10.0.0.2", SystemTime::now());
        assert_eq!(s.phase.as_deref(), Some("Pending"));
        assert_eq!(cond(&s, "PodScheduled").status, "True");
        let w = s.container_statuses.unwrap()[0].state.clone().unwrap().waiting.unwrap();
        assert_eq!(w.reason.as_deref(), Some("ErrImagePull"));
    }
}
