//! `ClusterApi`: the one door through which the scheduler, the controllers and the fake nodes read and
//! write the cluster, with Kubernetes API semantics.
//!
//! Semantics every implementation keeps (the in-memory one in [`memory`] is the executable spec):
//! - every write bumps one global revision; an object's `metadata.resourceVersion` is the revision of its
//!   last write, a list's `resource_version` the revision it was read at;
//! - `watch(ns, rv)` yields every change with a revision greater than `rv`, in order; an empty `rv` means
//!   "from now"; a compacted `rv` fails with [`ApiError::Expired`];
//! - `create` stamps uid, creationTimestamp, generation 1 and honours `metadata.generateName`;
//! - `update` is compare-and-swap when `metadata.resourceVersion` is set ([`ApiError::Conflict`] if stale),
//!   keeps the stored status, bumps `generation` when anything outside metadata/status changed, and removes
//!   an object whose deletionTimestamp is set once its finalizers are empty;
//! - `update_status` replaces only `status` (CAS as above);
//! - `delete` follows the propagation policy: Background deletes now (the garbage collector removes
//!   dependents later), Foreground adds the `foregroundDeletion` finalizer, Orphan the `orphan` finalizer;
//!   objects with finalizers, and pods bound to a node with a grace period, only get a deletionTimestamp;
//! - `bind` sets `spec.nodeName` of an unbound pod and its `PodScheduled=True` condition.

pub mod cached;
pub mod memory;

use std::fmt::Debug;
use std::future::Future;
use std::sync::Arc;

use futures_util::StreamExt;
use futures_util::stream::BoxStream;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use k8s_openapi::{Metadata, Resource};
use serde::Serialize;
use serde::de::DeserializeOwned;

/// A typed Kubernetes object the cluster stores (Pod, Node, ReplicaSet, Deployment, Service, Endpoints,
/// Lease, Event, ...).
pub trait Object:
    Resource + Metadata<Ty = ObjectMeta> + Serialize + DeserializeOwned + Clone + Debug + Send + Sync + 'static
{
}

impl<T> Object for T where
    T: Resource
        + Metadata<Ty = ObjectMeta>
        + Serialize
        + DeserializeOwned
        + Clone
        + Debug
        + Send
        + Sync
        + 'static
{
}

/// Why an API call failed, named like the Kubernetes `Status` reasons.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ApiError {
    #[error("{kind} \"{name}\" not found")]
    NotFound { kind: String, name: String },
    #[error("{kind} \"{name}\" already exists")]
    AlreadyExists { kind: String, name: String },
    #[error("conflict on {kind} \"{name}\": {message}")]
    Conflict { kind: String, name: String, message: String },
    #[error("{kind} \"{name}\" is invalid: {message}")]
    Invalid { kind: String, name: String, message: String },
    /// Refused by admission (403), e.g. Pod Security; the message is the server's whole line.
    #[error("{message}")]
    Forbidden { kind: String, name: String, message: String },
    #[error("watch expired: {message}")]
    Expired { message: String },
    #[error("bad request: {message}")]
    BadRequest { message: String },
    #[error("internal error: {message}")]
    Internal { message: String },
}

impl ApiError {
    /// True for a stale resourceVersion (retry after a fresh read).
    pub fn is_conflict(&self) -> bool {
        matches!(self, ApiError::Conflict { .. })
    }

    /// True when the object does not exist.
    pub fn is_not_found(&self) -> bool {
        matches!(self, ApiError::NotFound { .. })
    }

    /// True when the object already exists.
    pub fn is_already_exists(&self) -> bool {
        matches!(self, ApiError::AlreadyExists { .. })
    }
}

/// Result of a list: the items and the revision they were read at (start a watch from it).
#[derive(Debug, Clone)]
pub struct ObjectList<K> {
    pub items: Vec<K>,
    pub resource_version: String,
}

/// One change seen by a watch.
#[derive(Debug, Clone, PartialEq)]
pub enum WatchEvent<K> {
    Added(K),
    Modified(K),
    Deleted(K),
}

impl<K> WatchEvent<K> {
    /// The object the event carries.
    pub fn object(&self) -> &K {
        match self {
            WatchEvent::Added(o) | WatchEvent::Modified(o) | WatchEvent::Deleted(o) => o,
        }
    }

    /// The object the event carries, by value.
    pub fn into_object(self) -> K {
        match self {
            WatchEvent::Added(o) | WatchEvent::Modified(o) | WatchEvent::Deleted(o) => o,
        }
    }
}

/// A stream of watch events; it ends when the server closes it (reopen from the last seen revision).
pub type WatchStream<K> = BoxStream<'static, Result<WatchEvent<K>, ApiError>>;

/// What happens to dependents when an owner is deleted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum PropagationPolicy {
    /// Delete the owner now; the garbage collector deletes dependents afterwards (kubectl's default).
    #[default]
    Background,
    /// Delete dependents first; the owner keeps the `foregroundDeletion` finalizer until then.
    Foreground,
    /// Keep dependents and remove their ownerReferences to the owner.
    Orphan,
}

/// Options of a delete call.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DeleteParams {
    pub propagation_policy: PropagationPolicy,
    /// `None`: the object's default (pods: `terminationGracePeriodSeconds`, else 30); `Some(0)`: now.
    pub grace_period_seconds: Option<i64>,
    /// Delete only if the stored object still has this uid.
    pub precondition_uid: Option<String>,
}

impl DeleteParams {
    /// Delete immediately with background propagation.
    pub fn now() -> Self {
        DeleteParams { grace_period_seconds: Some(0), ..Default::default() }
    }

    /// Delete with the given propagation policy.
    pub fn with_policy(policy: PropagationPolicy) -> Self {
        DeleteParams { propagation_policy: policy, ..Default::default() }
    }
}

/// Result of a delete call.
#[derive(Debug, Clone, PartialEq)]
pub enum Deleted<K> {
    /// The object is gone; this is its last state.
    Gone(K),
    /// The object now has a deletionTimestamp and waits for finalizers or a graceful shutdown.
    Pending(K),
}

/// The cluster as the control loops see it. Implemented in memory ([`memory::MemoryCluster`]) and by the
/// API server (same validation and admission path as HTTP, no network round trip).
///
/// `namespace` is `None` for cluster-scoped kinds and for "all namespaces" in list/watch.
pub trait ClusterApi: Send + Sync + 'static {
    /// Read one object.
    fn get<K: Object>(
        &self,
        namespace: Option<&str>,
        name: &str,
    ) -> impl Future<Output = Result<K, ApiError>> + Send;

    /// List all objects of a kind (in one namespace, or all), with the revision of the read.
    fn list<K: Object>(
        &self,
        namespace: Option<&str>,
    ) -> impl Future<Output = Result<ObjectList<K>, ApiError>> + Send;

    /// Watch changes with a revision greater than `resource_version` ("" = from now).
    fn watch<K: Object>(
        &self,
        namespace: Option<&str>,
        resource_version: &str,
    ) -> impl Future<Output = Result<WatchStream<K>, ApiError>> + Send;

    /// Create an object (namespace from `metadata.namespace`).
    fn create<K: Object>(&self, object: &K) -> impl Future<Output = Result<K, ApiError>> + Send;

    /// Replace an object's metadata and spec (CAS on `metadata.resourceVersion` when set).
    fn update<K: Object>(&self, object: &K) -> impl Future<Output = Result<K, ApiError>> + Send;

    /// Replace an object's status (CAS on `metadata.resourceVersion` when set).
    fn update_status<K: Object>(&self, object: &K) -> impl Future<Output = Result<K, ApiError>> + Send;

    /// Delete an object following `params`.
    fn delete<K: Object>(
        &self,
        namespace: Option<&str>,
        name: &str,
        params: &DeleteParams,
    ) -> impl Future<Output = Result<Deleted<K>, ApiError>> + Send;

    /// Bind a pod to a node (`POST pods/<name>/binding`).
    fn bind(
        &self,
        namespace: &str,
        pod: &str,
        node: &str,
    ) -> impl Future<Output = Result<(), ApiError>> + Send;

    /// Every object of a kind, shared rather than copied where the implementation caches them
    /// ([`cached::CachedCluster`]).
    fn snapshot<K: Object>(&self) -> impl Future<Output = Result<Vec<Arc<K>>, ApiError>> + Send {
        async move { Ok(self.list::<K>(None).await?.items.into_iter().map(Arc::new).collect()) }
    }

    /// Yields once per change of a kind (all namespaces). Ends when the underlying watch fails, to be
    /// opened again.
    fn changes<K: Object>(&self) -> impl Future<Output = Result<BoxStream<'static, ()>, ApiError>> + Send {
        async move {
            let events = self.watch::<K>(None, "").await?;
            Ok(events.take_while(|e| std::future::ready(e.is_ok())).map(|_| ()).boxed())
        }
    }
}

/// `namespace/name` (or `name`) of an object, for messages and keys.
pub fn object_key(meta: &ObjectMeta) -> String {
    match &meta.namespace {
        Some(ns) if !ns.is_empty() => format!("{ns}/{}", meta.name.as_deref().unwrap_or("")),
        _ => meta.name.clone().unwrap_or_default(),
    }
}

/// Whether the object is being deleted.
pub fn is_terminating(meta: &ObjectMeta) -> bool {
    meta.deletion_timestamp.is_some()
}
