//! An in-memory [`ClusterApi`] for tests and benchmarks, faithful to the API semantics documented in
//! [`super`]: one global revision, CAS conflicts, generation, finalizers, graceful pod deletion, watch
//! replay from a revision and 410 Expired after compaction.

use std::any::TypeId;
use std::collections::{BTreeMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{SystemTime, UNIX_EPOCH};

use futures_util::StreamExt;
use k8s_openapi::ClusterResourceScope;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::chrono::{DateTime, Utc};
use serde_json::{Value, json};
use tokio::sync::mpsc;

use super::{
    ApiError, ClusterApi, DeleteParams, Deleted, Object, ObjectList, PropagationPolicy, WatchStream,
};

/// Alphabet Kubernetes uses for generated name suffixes and hashes.
pub const SAFE_ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";

/// Kinds whose `status` is only written through `update_status`.
const KINDS_WITH_STATUS: &[&str] = &["Pod", "Node", "Service", "ReplicaSet", "Deployment", "Namespace"];

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum EventType {
    Added,
    Modified,
    Deleted,
}

type Key = (String, String, String);

#[derive(Debug)]
struct LogEntry {
    rev: u64,
    type_key: String,
    namespace: String,
    event: EventType,
    value: Arc<Value>,
}

struct Watcher {
    type_key: String,
    namespace: Option<String>,
    tx: mpsc::UnboundedSender<(EventType, Arc<Value>)>,
}

#[derive(Default)]
struct State {
    rev: u64,
    compacted: u64,
    objects: BTreeMap<Key, Arc<Value>>,
    log: VecDeque<LogEntry>,
    watchers: Vec<Watcher>,
}

/// The in-memory cluster. Cheap to share behind an `Arc`.
#[derive(Default)]
pub struct MemoryCluster {
    state: Mutex<State>,
}

impl std::fmt::Debug for MemoryCluster {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MemoryCluster").field("revision", &self.revision()).finish()
    }
}

/// Current wall-clock time as a Kubernetes `Time`.
pub fn now_time() -> Time {
    let d = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default();
    Time(DateTime::<Utc>::from_timestamp(d.as_secs() as i64, d.subsec_nanos()).unwrap_or_default())
}

fn type_key<K: Object>() -> String {
    format!("{}/{}", K::API_VERSION, K::KIND)
}

fn is_cluster_scoped<K: Object>() -> bool {
    TypeId::of::<K::Scope>() == TypeId::of::<ClusterResourceScope>()
}

fn random_suffix(len: usize) -> String {
    (0..len).map(|_| SAFE_ALPHABET[rand::random_range(0..SAFE_ALPHABET.len())] as char).collect()
}

fn internal(e: impl std::fmt::Display) -> ApiError {
    ApiError::Internal { message: e.to_string() }
}

fn meta_str<'a>(v: &'a Value, field: &str) -> Option<&'a str> {
    v.get("metadata").and_then(|m| m.get(field)).and_then(Value::as_str)
}

fn set_meta(v: &mut Value, field: &str, value: Value) {
    if let Some(m) = v.get_mut("metadata").and_then(Value::as_object_mut) {
        if value.is_null() {
            m.remove(field);
        } else {
            m.insert(field.to_string(), value);
        }
    }
}

/// Everything outside metadata and status: a change here bumps `generation`.
fn spec_part(v: &Value) -> Value {
    let mut v = v.clone();
    if let Some(o) = v.as_object_mut() {
        o.remove("metadata");
        o.remove("status");
    }
    v
}

fn finalizers(v: &Value) -> Vec<String> {
    v.get("metadata")
        .and_then(|m| m.get("finalizers"))
        .and_then(Value::as_array)
        .map(|a| a.iter().filter_map(|f| f.as_str().map(str::to_string)).collect())
        .unwrap_or_default()
}

impl MemoryCluster {
    /// An empty cluster at revision 0.
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The current global revision.
    pub fn revision(&self) -> u64 {
        self.lock().rev
    }

    /// Forget history up to `revision`: watches from older revisions fail with Expired.
    pub fn compact(&self, revision: u64) {
        let mut st = self.lock();
        let revision = revision.min(st.rev);
        while st.log.front().is_some_and(|e| e.rev <= revision) {
            st.log.pop_front();
        }
        st.compacted = st.compacted.max(revision);
    }

    /// Number of stored objects of a kind (all namespaces).
    pub fn count<K: Object>(&self) -> usize {
        let tk = type_key::<K>();
        self.lock().objects.keys().filter(|(t, _, _)| *t == tk).count()
    }

    fn key_of<K: Object>(namespace: Option<&str>, name: &str) -> Key {
        let ns = if is_cluster_scoped::<K>() { "" } else { namespace.unwrap_or("default") };
        (type_key::<K>(), ns.to_string(), name.to_string())
    }

    fn not_found<K: Object>(name: &str) -> ApiError {
        ApiError::NotFound { kind: K::URL_PATH_SEGMENT.to_string(), name: name.to_string() }
    }

    fn conflict<K: Object>(name: &str, message: &str) -> ApiError {
        ApiError::Conflict {
            kind: K::URL_PATH_SEGMENT.to_string(),
            name: name.to_string(),
            message: message.to_string(),
        }
    }

    fn decode<K: Object>(v: &Value) -> Result<K, ApiError> {
        serde_json::from_value(v.clone()).map_err(internal)
    }

    /// Record a change: bump the revision, stamp it, store or remove, log and fan out.
    fn commit(st: &mut State, key: Key, mut value: Value, event: EventType) -> Arc<Value> {
        st.rev += 1;
        let rev = st.rev;
        set_meta(&mut value, "resourceVersion", json!(rev.to_string()));
        let value = Arc::new(value);
        match event {
            EventType::Deleted => {
                st.objects.remove(&key);
            }
            _ => {
                st.objects.insert(key.clone(), value.clone());
            }
        }
        let (type_key, namespace, _) = key;
        st.watchers.retain(|w| {
            if w.type_key != type_key || w.namespace.as_ref().is_some_and(|n| *n != namespace) {
                return !w.tx.is_closed();
            }
            w.tx.send((event, value.clone())).is_ok()
        });
        st.log.push_back(LogEntry { rev, type_key, namespace, event, value: value.clone() });
        value
    }

    fn check_cas(stored: &Value, new: &Value) -> Result<(), String> {
        match meta_str(new, "resourceVersion") {
            Some(rv) if !rv.is_empty() && Some(rv) != meta_str(stored, "resourceVersion") => Err(format!(
                "the object has been modified; please apply your changes to the latest version and try again \
                 (have {rv}, stored {})",
                meta_str(stored, "resourceVersion").unwrap_or("")
            )),
            _ => Ok(()),
        }
    }

    /// Whether a terminating object can now be removed for good.
    fn ready_to_remove(v: &Value) -> bool {
        let terminating =
            v.get("metadata").and_then(|m| m.get("deletionTimestamp")).is_some_and(|t| !t.is_null());
        let grace =
            v.get("metadata").and_then(|m| m.get("deletionGracePeriodSeconds")).and_then(Value::as_i64);
        terminating && finalizers(v).is_empty() && grace.unwrap_or(0) == 0
    }

    fn do_create<K: Object>(&self, object: &K) -> Result<K, ApiError> {
        let mut value = serde_json::to_value(object).map_err(internal)?;
        let mut st = self.lock();
        let ns = object.metadata().namespace.clone();
        let name = match object.metadata().name.as_deref() {
            Some(n) if !n.is_empty() => n.to_string(),
            _ => match object.metadata().generate_name.as_deref() {
                Some(prefix) if !prefix.is_empty() => loop {
                    let candidate = format!("{prefix}{}", random_suffix(5));
                    if !st.objects.contains_key(&Self::key_of::<K>(ns.as_deref(), &candidate)) {
                        break candidate;
                    }
                },
                _ => {
                    return Err(ApiError::Invalid {
                        kind: K::URL_PATH_SEGMENT.to_string(),
                        name: String::new(),
                        message: "metadata.name: Required value: name or generateName is required".into(),
                    });
                }
            },
        };
        let key = Self::key_of::<K>(ns.as_deref(), &name);
        if st.objects.contains_key(&key) {
            return Err(ApiError::AlreadyExists { kind: K::URL_PATH_SEGMENT.to_string(), name });
        }
        if value.get("metadata").is_none() {
            value["metadata"] = json!({});
        }
        set_meta(&mut value, "name", json!(name));
        if !is_cluster_scoped::<K>() {
            set_meta(&mut value, "namespace", json!(key.1));
        }
        set_meta(&mut value, "uid", json!(uuid::Uuid::new_v4().to_string()));
        set_meta(&mut value, "creationTimestamp", serde_json::to_value(now_time()).map_err(internal)?);
        set_meta(&mut value, "generation", json!(1));
        set_meta(&mut value, "deletionTimestamp", Value::Null);
        let stored = Self::commit(&mut st, key, value, EventType::Added);
        Self::decode(&stored)
    }

    fn do_update<K: Object>(&self, object: &K, status_only: bool) -> Result<K, ApiError> {
        let name = object.metadata().name.clone().unwrap_or_default();
        let key = Self::key_of::<K>(object.metadata().namespace.as_deref(), &name);
        let new = serde_json::to_value(object).map_err(internal)?;
        let mut st = self.lock();
        let stored = st.objects.get(&key).cloned().ok_or_else(|| Self::not_found::<K>(&name))?;
        Self::check_cas(&stored, &new).map_err(|m| Self::conflict::<K>(&name, &m))?;
        let has_status = KINDS_WITH_STATUS.contains(&K::KIND);
        let mut merged;
        if status_only {
            merged = (*stored).clone();
            match new.get("status") {
                Some(s) => merged["status"] = s.clone(),
                None => {
                    if let Some(o) = merged.as_object_mut() {
                        o.remove("status");
                    }
                }
            }
        } else {
            merged = new.clone();
            for field in
                ["uid", "creationTimestamp", "generation", "deletionTimestamp", "deletionGracePeriodSeconds"]
            {
                let v = stored.get("metadata").and_then(|m| m.get(field)).cloned().unwrap_or(Value::Null);
                set_meta(&mut merged, field, v);
            }
            if !is_cluster_scoped::<K>() {
                set_meta(&mut merged, "namespace", json!(key.1));
            }
            if has_status {
                match stored.get("status") {
                    Some(s) => merged["status"] = s.clone(),
                    None => {
                        if let Some(o) = merged.as_object_mut() {
                            o.remove("status");
                        }
                    }
                }
            }
            if spec_part(&stored) != spec_part(&merged) {
                let generation = stored["metadata"]["generation"].as_i64().unwrap_or(1) + 1;
                set_meta(&mut merged, "generation", json!(generation));
            }
        }
        let event = if Self::ready_to_remove(&merged) { EventType::Deleted } else { EventType::Modified };
        let out = Self::commit(&mut st, key, merged, event);
        Self::decode(&out)
    }

    fn do_delete<K: Object>(
        &self,
        namespace: Option<&str>,
        name: &str,
        params: &DeleteParams,
    ) -> Result<Deleted<K>, ApiError> {
        let key = Self::key_of::<K>(namespace, name);
        let mut st = self.lock();
        let stored = st.objects.get(&key).cloned().ok_or_else(|| Self::not_found::<K>(name))?;
        if let Some(uid) = &params.precondition_uid
            && meta_str(&stored, "uid") != Some(uid.as_str())
        {
            return Err(Self::conflict::<K>(name, "precondition failed: uid mismatch"));
        }
        let mut value = (*stored).clone();
        let mut fins = finalizers(&value);
        match params.propagation_policy {
            PropagationPolicy::Foreground => {
                if !fins.iter().any(|f| f == "foregroundDeletion") {
                    fins.push("foregroundDeletion".into());
                }
            }
            PropagationPolicy::Orphan => {
                if !fins.iter().any(|f| f == "orphan") {
                    fins.push("orphan".into());
                }
            }
            PropagationPolicy::Background => {}
        }
        let grace = if K::KIND == "Pod" {
            let bound =
                value.pointer("/spec/nodeName").and_then(Value::as_str).is_some_and(|n| !n.is_empty());
            let phase = value.pointer("/status/phase").and_then(Value::as_str).unwrap_or("");
            let default =
                value.pointer("/spec/terminationGracePeriodSeconds").and_then(Value::as_i64).unwrap_or(30);
            if bound && phase != "Succeeded" && phase != "Failed" {
                params.grace_period_seconds.unwrap_or(default).max(0)
            } else {
                0
            }
        } else {
            0
        };
        let already = value.pointer("/metadata/deletionTimestamp").is_some_and(|t| !t.is_null());
        if fins.is_empty() && (grace == 0) {
            let out = Self::commit(&mut st, key, value, EventType::Deleted);
            return Ok(Deleted::Gone(Self::decode(&out)?));
        }
        if !already {
            set_meta(&mut value, "deletionTimestamp", serde_json::to_value(now_time()).map_err(internal)?);
        }
        set_meta(&mut value, "deletionGracePeriodSeconds", json!(grace));
        set_meta(&mut value, "finalizers", if fins.is_empty() { Value::Null } else { json!(fins) });
        let out = Self::commit(&mut st, key, value, EventType::Modified);
        Ok(Deleted::Pending(Self::decode(&out)?))
    }

    fn do_bind(&self, namespace: &str, pod: &str, node: &str) -> Result<(), ApiError> {
        use k8s_openapi::api::core::v1::Pod;
        let key = Self::key_of::<Pod>(Some(namespace), pod);
        let mut st = self.lock();
        let stored = st.objects.get(&key).cloned().ok_or_else(|| Self::not_found::<Pod>(pod))?;
        if stored.pointer("/spec/nodeName").and_then(Value::as_str).is_some_and(|n| !n.is_empty()) {
            return Err(Self::conflict::<Pod>(pod, "pod is already assigned to a node"));
        }
        if stored.pointer("/metadata/deletionTimestamp").is_some_and(|t| !t.is_null()) {
            return Err(Self::conflict::<Pod>(pod, "pod is being deleted"));
        }
        let mut value = (*stored).clone();
        value["spec"]["nodeName"] = json!(node);
        let now = serde_json::to_value(now_time()).map_err(internal)?;
        let cond = json!({"type": "PodScheduled", "status": "True", "lastTransitionTime": now});
        if !value.get("status").is_some_and(Value::is_object) {
            value["status"] = json!({});
        }
        let status = &mut value["status"];
        if !status.get("phase").is_some_and(|p| p.is_string()) {
            status["phase"] = json!("Pending");
        }
        match status.get_mut("conditions").and_then(Value::as_array_mut) {
            Some(conds) => {
                conds.retain(|c| c.get("type").and_then(Value::as_str) != Some("PodScheduled"));
                conds.push(cond);
            }
            None => status["conditions"] = json!([cond]),
        }
        Self::commit(&mut st, key, value, EventType::Modified);
        Ok(())
    }

    fn do_list<K: Object>(&self, namespace: Option<&str>) -> Result<ObjectList<K>, ApiError> {
        let tk = type_key::<K>();
        let st = self.lock();
        let items = st
            .objects
            .iter()
            .filter(|((t, ns, _), _)| {
                *t == tk && namespace.is_none_or(|n| is_cluster_scoped::<K>() || n == ns)
            })
            .map(|(_, v)| Self::decode(v))
            .collect::<Result<Vec<K>, _>>()?;
        Ok(ObjectList { items, resource_version: st.rev.to_string() })
    }

    fn do_watch<K: Object>(
        &self,
        namespace: Option<&str>,
        resource_version: &str,
    ) -> Result<WatchStream<K>, ApiError> {
        let tk = type_key::<K>();
        let namespace = if is_cluster_scoped::<K>() { None } else { namespace.map(str::to_string) };
        let (tx, rx) = mpsc::unbounded_channel();
        let mut st = self.lock();
        if !resource_version.is_empty() {
            let from: u64 = resource_version.parse().map_err(|_| ApiError::BadRequest {
                message: format!("invalid resourceVersion {resource_version:?}"),
            })?;
            if from < st.compacted {
                return Err(ApiError::Expired {
                    message: format!("too old resource version: {from} ({})", st.compacted),
                });
            }
            for e in st.log.iter().filter(|e| e.rev > from && e.type_key == tk) {
                if namespace.as_ref().is_none_or(|n| *n == e.namespace) {
                    let _ = tx.send((e.event, e.value.clone()));
                }
            }
        }
        st.watchers.push(Watcher { type_key: tk, namespace, tx });
        drop(st);
        let stream =
            futures_util::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|e| (e, rx)) }).map(
                |(event, value)| {
                    let obj: K = Self::decode(&value)?;
                    Ok(match event {
                        EventType::Added => super::WatchEvent::Added(obj),
                        EventType::Modified => super::WatchEvent::Modified(obj),
                        EventType::Deleted => super::WatchEvent::Deleted(obj),
                    })
                },
            );
        Ok(stream.boxed())
    }
}

impl ClusterApi for MemoryCluster {
    async fn get<K: Object>(&self, namespace: Option<&str>, name: &str) -> Result<K, ApiError> {
        let key = Self::key_of::<K>(namespace, name);
        let value = self.lock().objects.get(&key).cloned().ok_or_else(|| Self::not_found::<K>(name))?;
        Self::decode(&value)
    }

    async fn list<K: Object>(&self, namespace: Option<&str>) -> Result<ObjectList<K>, ApiError> {
        self.do_list(namespace)
    }

    async fn watch<K: Object>(
        &self,
        namespace: Option<&str>,
        resource_version: &str,
    ) -> Result<WatchStream<K>, ApiError> {
        self.do_watch(namespace, resource_version)
    }

    async fn create<K: Object>(&self, object: &K) -> Result<K, ApiError> {
        self.do_create(object)
    }

    async fn update<K: Object>(&self, object: &K) -> Result<K, ApiError> {
        self.do_update(object, false)
    }

    async fn update_status<K: Object>(&self, object: &K) -> Result<K, ApiError> {
        self.do_update(object, true)
    }

    async fn delete<K: Object>(
        &self,
        namespace: Option<&str>,
        name: &str,
        params: &DeleteParams,
    ) -> Result<Deleted<K>, ApiError> {
        self.do_delete(namespace, name, params)
    }

    async fn bind(&self, namespace: &str, pod: &str, node: &str) -> Result<(), ApiError> {
        self.do_bind(namespace, pod, node)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::master::client::WatchEvent;
    use k8s_openapi::api::apps::v1::{ReplicaSet, ReplicaSetSpec};
    use k8s_openapi::api::core::v1::{Node, Pod, PodSpec};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

    fn pod(name: &str) -> Pod {
        Pod {
            metadata: ObjectMeta {
                name: Some(name.into()),
                namespace: Some("default".into()),
                ..Default::default()
            },
            spec: Some(PodSpec::default()),
            ..Default::default()
        }
    }

    #[tokio::test]
    async fn create_stamps_metadata_and_rejects_duplicates() {
        let c = MemoryCluster::new();
        let p = c.create(&pod("a")).await.unwrap();
        assert_eq!(p.metadata.resource_version.as_deref(), Some("1"));
        assert!(p.metadata.uid.is_some() && p.metadata.creation_timestamp.is_some());
        assert_eq!(p.metadata.generation, Some(1));
        assert!(c.create(&pod("a")).await.unwrap_err().is_already_exists());
        let mut g = pod("");
        g.metadata.name = None;
        g.metadata.generate_name = Some("web-".into());
        let made = c.create(&g).await.unwrap();
        let name = made.metadata.name.unwrap();
        assert!(name.starts_with("web-") && name.len() == 9, "{name}");
    }

    #[tokio::test]
    async fn stale_update_conflicts_and_generation_tracks_spec() {
        let c = MemoryCluster::new();
        let rs = ReplicaSet {
            metadata: ObjectMeta {
                name: Some("rs".into()),
                namespace: Some("default".into()),
                ..Default::default()
            },
            spec: Some(ReplicaSetSpec { replicas: Some(1), ..Default::default() }),
            ..Default::default()
        };
        let v1 = c.create(&rs).await.unwrap();
        let mut v2 = v1.clone();
        v2.spec.as_mut().unwrap().replicas = Some(2);
        let v2 = c.update(&v2).await.unwrap();
        assert_eq!(v2.metadata.generation, Some(2));
        let mut stale = v1.clone();
        stale.spec.as_mut().unwrap().replicas = Some(5);
        assert!(c.update(&stale).await.unwrap_err().is_conflict());
        let mut labels_only = v2.clone();
        labels_only.metadata.labels = Some([("a".to_string(), "b".to_string())].into());
        let v3 = c.update(&labels_only).await.unwrap();
        assert_eq!(v3.metadata.generation, Some(2));
        let mut st = v3.clone();
        st.status = Some(Default::default());
        st.status.as_mut().unwrap().replicas = 2;
        st.spec.as_mut().unwrap().replicas = Some(9);
        let v4 = c.update_status(&st).await.unwrap();
        assert_eq!(v4.status.unwrap().replicas, 2);
        assert_eq!(v4.spec.unwrap().replicas, Some(2), "status update must not touch spec");
    }

    #[tokio::test]
    async fn watch_replays_from_revision_and_follows() {
        let c = MemoryCluster::new();
        c.create(&pod("a")).await.unwrap();
        let list = c.list::<Pod>(Some("default")).await.unwrap();
        c.create(&pod("b")).await.unwrap();
        let mut w = c.watch::<Pod>(None, &list.resource_version).await.unwrap();
        c.delete::<Pod>(Some("default"), "a", &DeleteParams::default()).await.unwrap();
        let e1 = w.next().await.unwrap().unwrap();
        assert!(matches!(&e1, WatchEvent::Added(p) if p.metadata.name.as_deref() == Some("b")));
        let e2 = w.next().await.unwrap().unwrap();
        assert!(matches!(&e2, WatchEvent::Deleted(p) if p.metadata.name.as_deref() == Some("a")));
        c.compact(c.revision());
        assert!(matches!(c.watch::<Pod>(None, "1").await.err(), Some(ApiError::Expired { .. })));
        // Other kinds do not leak into the stream.
        let mut nodes = c.watch::<Node>(None, "").await.unwrap();
        c.create(&pod("c")).await.unwrap();
        let n = Node {
            metadata: ObjectMeta { name: Some("n1".into()), ..Default::default() },
            ..Default::default()
        };
        c.create(&n).await.unwrap();
        assert!(
            matches!(nodes.next().await.unwrap().unwrap(), WatchEvent::Added(n) if n.metadata.name.as_deref() == Some("n1"))
        );
    }

    #[tokio::test]
    async fn bound_pods_delete_gracefully_and_finalizers_hold_objects() {
        let c = MemoryCluster::new();
        c.create(&pod("a")).await.unwrap();
        c.bind("default", "a", "node1").await.unwrap();
        assert!(c.bind("default", "a", "node2").await.unwrap_err().is_conflict());
        let bound: Pod = c.get(Some("default"), "a").await.unwrap();
        assert_eq!(bound.spec.as_ref().unwrap().node_name.as_deref(), Some("node1"));
        assert!(matches!(
            c.delete::<Pod>(Some("default"), "a", &DeleteParams::default()).await.unwrap(),
            Deleted::Pending(_)
        ));
        assert!(matches!(
            c.delete::<Pod>(Some("default"), "a", &DeleteParams::now()).await.unwrap(),
            Deleted::Gone(_)
        ));
        assert!(c.get::<Pod>(Some("default"), "a").await.unwrap_err().is_not_found());

        let rs = ReplicaSet {
            metadata: ObjectMeta {
                name: Some("rs".into()),
                namespace: Some("default".into()),
                ..Default::default()
            },
            ..Default::default()
        };
        c.create(&rs).await.unwrap();
        let params = DeleteParams::with_policy(PropagationPolicy::Foreground);
        let Deleted::Pending(mut held) =
            c.delete::<ReplicaSet>(Some("default"), "rs", &params).await.unwrap()
        else {
            panic!("foreground delete must wait for dependents");
        };
        assert_eq!(held.metadata.finalizers.as_deref(), Some(&["foregroundDeletion".to_string()][..]));
        held.metadata.finalizers = None;
        c.update(&held).await.unwrap();
        assert!(c.get::<ReplicaSet>(Some("default"), "rs").await.unwrap_err().is_not_found());
    }
}
