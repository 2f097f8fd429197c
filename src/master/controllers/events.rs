//! Kubernetes Events (`core/v1`) the control loops record about objects (FailedScheduling, SuccessfulCreate, ...).

use std::sync::Arc;

use k8s_openapi::api::core::v1::{Event, EventSource, ObjectReference};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use k8s_openapi::{Metadata, Resource};

use crate::master::client::{ClusterApi, memory::now_time};

/// Event severity.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventType {
    Normal,
    Warning,
}

/// A reference to `object` as an Event's involvedObject.
pub fn object_reference<K: Resource + Metadata<Ty = ObjectMeta>>(object: &K) -> ObjectReference {
    let meta = object.metadata();
    ObjectReference {
        api_version: Some(K::API_VERSION.to_string()),
        kind: Some(K::KIND.to_string()),
        name: meta.name.clone(),
        namespace: meta.namespace.clone(),
        uid: meta.uid.clone(),
        resource_version: meta.resource_version.clone(),
        ..Default::default()
    }
}

/// The Event object for one occurrence (pure).
pub fn build_event(
    involved: ObjectReference,
    component: &str,
    kind: EventType,
    reason: &str,
    message: &str,
) -> Event {
    let now = now_time();
    let stamp = now.0.timestamp_nanos_opt().unwrap_or_default();
    let name = format!("{}.{:x}", involved.name.as_deref().unwrap_or("object"), stamp);
    Event {
        metadata: ObjectMeta {
            name: Some(name),
            namespace: Some(involved.namespace.clone().unwrap_or_else(|| "default".into())),
            ..Default::default()
        },
        involved_object: involved,
        reason: Some(reason.into()),
        message: Some(message.into()),
        type_: Some(match kind {
            EventType::Normal => "Normal".into(),
            EventType::Warning => "Warning".into(),
        }),
        source: Some(EventSource { component: Some(component.into()), host: None }),
        reporting_component: Some(component.into()),
        first_timestamp: Some(now.clone()),
        last_timestamp: Some(now),
        count: Some(1),
        ..Default::default()
    }
}

/// Writes Events through the cluster API; failures are logged, never fatal.
pub struct EventRecorder<C> {
    client: Arc<C>,
    component: String,
}

impl<C: ClusterApi> EventRecorder<C> {
    /// A recorder writing as `component` (e.g. `default-scheduler`, `replicaset-controller`).
    pub fn new(client: Arc<C>, component: &str) -> Self {
        EventRecorder { client, component: component.into() }
    }

    /// Record an event about any object.
    pub async fn record<K: Resource + Metadata<Ty = ObjectMeta>>(
        &self,
        object: &K,
        kind: EventType,
        reason: &str,
        message: &str,
    ) {
        let event = build_event(object_reference(object), &self.component, kind, reason, message);
        if let Err(e) = self.client.create(&event).await {
            tracing::debug!(reason, error = %e, "recording event failed");
        }
    }

    /// Record an event about a pod.
    pub async fn pod_event(
        &self,
        pod: &k8s_openapi::api::core::v1::Pod,
        kind: EventType,
        reason: &str,
        message: &str,
    ) {
        self.record(pod, kind, reason, message).await;
    }
}
