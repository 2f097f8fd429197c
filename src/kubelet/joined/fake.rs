//! An in-memory pod runtime: pods "run" the moment they start, every container ready. It lets
//! the node agent's API side be tested without root, and hollow nodes (many node agents in one
//! process, as kubemark's) load the master as real nodes would.

use std::collections::{BTreeMap, HashMap};
use std::net::Ipv4Addr;
use std::sync::Mutex;
use std::time::{Duration, SystemTime};

use ipnet::Ipv4Net;
use k8s_openapi::api::core::v1::{
    ContainerState, ContainerStateRunning, ContainerStatus, HostIP, Pod, PodCondition, PodIP, PodStatus,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::chrono::{DateTime, Utc};
use serde_json::Value;

use super::plan::LocalPod;
use super::{PodEvent, PodRuntime, StartFailure};

#[derive(Debug, Clone)]
struct FakePod {
    pod: Pod,
    ip: Ipv4Addr,
    started: SystemTime,
}

/// When each pod (by uid) was handed to a fake node, for measurements shared by many nodes.
pub type StartLog = std::sync::Arc<Mutex<HashMap<String, std::time::Instant>>>;

/// Pods kept in memory, with IPs from `cidr`.
#[derive(Debug)]
pub struct FakePods {
    cidr: Ipv4Net,
    pods: Mutex<BTreeMap<String, FakePod>>,
    next_ip: Mutex<u32>,
    /// Where starts are logged, if anywhere.
    pub start_log: Option<StartLog>,
}

impl FakePods {
    /// An empty node whose pods get addresses from `cidr`.
    pub fn new(cidr: Ipv4Net) -> Self {
        FakePods { cidr, pods: Mutex::new(BTreeMap::new()), next_ip: Mutex::new(2), start_log: None }
    }

    fn key(pod: &Pod) -> String {
        let m = &pod.metadata;
        format!(
            "{}_{}_{}",
            m.namespace.as_deref().unwrap_or("default"),
            m.name.as_deref().unwrap_or_default(),
            m.uid.as_deref().unwrap_or_default()
        )
    }
}

impl PodRuntime for FakePods {
    fn local(&self) -> BTreeMap<String, LocalPod> {
        let pods = self.pods.lock().unwrap_or_else(|e| e.into_inner());
        pods.iter()
            .map(|(k, p)| {
                (k.clone(), LocalPod { key: k.clone(), uid: p.pod.metadata.uid.clone().unwrap_or_default() })
            })
            .collect()
    }

    fn start(
        &self,
        pod: &Pod,
        _objects: Vec<Value>,
        event: &dyn Fn(PodEvent),
    ) -> Result<String, StartFailure> {
        let ip = {
            let mut next = self.next_ip.lock().unwrap_or_else(|e| e.into_inner());
            let n = *next;
            *next += 1;
            u32::from(self.cidr.network()).checked_add(n).map(Ipv4Addr::from)
        }
        .filter(|ip| self.cidr.contains(ip))
        .ok_or_else(|| StartFailure {
            reason: "CreateContainerError",
            message: format!("pod CIDR {} is full", self.cidr),
        })?;
        for c in pod.spec.iter().flat_map(|s| s.containers.iter()) {
            event(PodEvent::new(pod, Some(&c.name), "Started", format!("Started container {}", c.name)));
        }
        if let (Some(log), Some(uid)) = (&self.start_log, &pod.metadata.uid) {
            log.lock().unwrap_or_else(|e| e.into_inner()).insert(uid.clone(), std::time::Instant::now());
        }
        let key = Self::key(pod);
        let fake = FakePod { pod: pod.clone(), ip, started: SystemTime::now() };
        self.pods.lock().unwrap_or_else(|e| e.into_inner()).insert(key.clone(), fake);
        Ok(key)
    }

    fn remove(&self, key: &str, _grace: Option<Duration>) -> Result<(), String> {
        self.pods.lock().unwrap_or_else(|e| e.into_inner()).remove(key);
        Ok(())
    }

    fn status(
        &self,
        key: &str,
        _pod: &Pod,
        prev: Option<&PodStatus>,
        host_ip: &str,
        _seen: &mut HashMap<String, u64>,
    ) -> Option<(PodStatus, Vec<PodEvent>)> {
        let fake = self.pods.lock().unwrap_or_else(|e| e.into_inner()).get(key)?.clone();
        let started = Time(DateTime::<Utc>::from(fake.started));
        let statuses = fake
            .pod
            .spec
            .iter()
            .flat_map(|s| s.containers.iter())
            .map(|c| ContainerStatus {
                name: c.name.clone(),
                image: c.image.clone().unwrap_or_default(),
                container_id: Some(format!("fake://{key}_{}", c.name)),
                ready: true,
                started: Some(true),
                state: Some(ContainerState {
                    running: Some(ContainerStateRunning { started_at: Some(started.clone()) }),
                    ..Default::default()
                }),
                ..Default::default()
            })
            .collect();
        let mut conditions: Vec<PodCondition> = prev
            .and_then(|p| p.conditions.as_ref())
            .map(|cs| cs.iter().filter(|c| c.type_ == "PodScheduled").cloned().collect())
            .unwrap_or_default();
        for t in ["Initialized", "Ready", "ContainersReady"] {
            conditions.push(PodCondition {
                type_: t.into(),
                status: "True".into(),
                last_transition_time: Some(started.clone()),
                ..Default::default()
            });
        }
        let status = PodStatus {
            phase: Some("Running".into()),
            conditions: Some(conditions),
            host_ip: Some(host_ip.into()),
            host_ips: Some(vec![HostIP { ip: host_ip.into() }]),
            pod_ip: Some(fake.ip.to_string()),
            pod_ips: Some(vec![PodIP { ip: fake.ip.to_string() }]),
            start_time: Some(started),
            container_statuses: Some(statuses),
            qos_class: prev.and_then(|p| p.qos_class.clone()),
            ..Default::default()
        };
        Some((status, Vec::new()))
    }
}
