//! [`CachedCluster`]: a [`ClusterApi`] whose lists come from informers — one list and one watch per kind,
//! kept in memory and shared by every control loop (client-go's shared informers) — instead of decoding
//! every object of a kind on every pass of every loop.
//!
//! Writes go to the API and are written through to the cache (client-go's mutation cache), so a loop's
//! next pass sees its own writes even before their watch events arrive, and a late watch event never
//! rolls an object back (events older than what the cache holds are ignored). Reads of one object
//! (`get`) stay fresh from the API, so read-modify-write keeps its compare-and-swap.

use std::any::{Any, TypeId};
use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, RwLock, Weak};
use std::time::Duration;

use futures_util::StreamExt;
use futures_util::stream::BoxStream;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use super::{
    ApiError, ClusterApi, DeleteParams, Deleted, Object, ObjectList, WatchEvent, WatchStream, object_key,
};

/// Pause before re-watching after a watch ended.
const REWATCH: Duration = Duration::from_millis(200);

fn revision<K: Object>(o: &K) -> i64 {
    o.metadata().resource_version.as_deref().and_then(|v| v.parse().ok()).unwrap_or(0)
}

struct State<K> {
    items: BTreeMap<String, Arc<K>>,
    /// Objects this process deleted, by the revision they had: older events for them are stale.
    tombstones: HashMap<String, i64>,
    /// The newest revision the watch delivered.
    watched: i64,
}

impl<K: Object> State<K> {
    fn new(list: ObjectList<K>) -> Self {
        let watched = list.resource_version.parse().unwrap_or(0);
        let items = list.items.into_iter().map(|o| (object_key(o.metadata()), Arc::new(o))).collect();
        State { items, tombstones: HashMap::new(), watched }
    }

    /// Stores `o` unless the cache already holds a newer state of it (or deleted it).
    fn upsert(&mut self, o: K) {
        let (key, rv) = (object_key(o.metadata()), revision(&o));
        let newer = self.items.get(&key).is_some_and(|cur| revision(&**cur) > rv);
        let deleted = self.tombstones.get(&key).is_some_and(|t| *t >= rv);
        if !newer && !deleted {
            self.items.insert(key, Arc::new(o));
        }
    }

    fn remove(&mut self, o: &K, tombstone: bool) {
        let (key, rv) = (object_key(o.metadata()), revision(o));
        if self.items.get(&key).is_some_and(|cur| revision(&**cur) <= rv) {
            self.items.remove(&key);
        }
        if tombstone {
            self.tombstones.insert(key, rv);
        }
    }

    fn apply(&mut self, event: WatchEvent<K>) {
        let rv = revision(event.object());
        match event {
            WatchEvent::Added(o) | WatchEvent::Modified(o) => self.upsert(o),
            WatchEvent::Deleted(o) => self.remove(&o, false),
        }
        self.watched = self.watched.max(rv);
        // Events arrive in revision order: once the watch is past a tombstone, nothing older can come.
        let watched = self.watched;
        self.tombstones.retain(|_, t| *t > watched);
    }
}

/// One kind's objects, kept current by a watch.
struct Informer<K> {
    state: RwLock<State<K>>,
    wakers: Mutex<Vec<mpsc::UnboundedSender<()>>>,
}

impl<K: Object> Informer<K> {
    fn read(&self) -> std::sync::RwLockReadGuard<'_, State<K>> {
        self.state.read().unwrap_or_else(|p| p.into_inner())
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, State<K>> {
        self.state.write().unwrap_or_else(|p| p.into_inner())
    }

    fn wake(&self) {
        self.wakers.lock().unwrap_or_else(|p| p.into_inner()).retain(|w| w.send(()).is_ok());
    }
}

/// Keeps `informer` current until it is dropped: watch from the list's revision, re-list when the watch
/// expires.
async fn keep_current<K: Object, C: ClusterApi>(client: Arc<C>, informer: Weak<Informer<K>>, mut rv: String) {
    loop {
        if let Ok(mut stream) = client.watch::<K>(None, &rv).await {
            while let Some(event) = stream.next().await {
                let Ok(event) = event else { break };
                let Some(inf) = informer.upgrade() else { return };
                {
                    let mut st = inf.write();
                    st.apply(event);
                    rv = st.watched.to_string();
                }
                inf.wake();
            }
        }
        tokio::time::sleep(REWATCH).await;
        match client.list::<K>(None).await {
            Ok(list) => {
                let Some(inf) = informer.upgrade() else { return };
                rv = list.resource_version.clone();
                *inf.write() = State::new(list);
                inf.wake();
            }
            Err(e) => tracing::debug!(kind = K::KIND, error = %e, "informer re-list failed"),
        }
    }
}

/// A `ClusterApi` that serves lists from shared informers over `C`.
pub struct CachedCluster<C> {
    inner: Arc<C>,
    informers: Mutex<HashMap<TypeId, Arc<dyn Any + Send + Sync>>>,
    starting: tokio::sync::Mutex<()>,
    tasks: Mutex<Vec<JoinHandle<()>>>,
}

impl<C> Drop for CachedCluster<C> {
    fn drop(&mut self) {
        for t in self.tasks.lock().unwrap_or_else(|p| p.into_inner()).iter() {
            t.abort();
        }
    }
}

impl<C: ClusterApi> CachedCluster<C> {
    /// Informers over `inner`, each started on the first read of its kind.
    pub fn new(inner: Arc<C>) -> Self {
        CachedCluster {
            inner,
            informers: Mutex::new(HashMap::new()),
            starting: tokio::sync::Mutex::new(()),
            tasks: Mutex::new(Vec::new()),
        }
    }

    /// The informer of `K` if one is running.
    fn running<K: Object>(&self) -> Option<Arc<Informer<K>>> {
        let map = self.informers.lock().unwrap_or_else(|p| p.into_inner());
        map.get(&TypeId::of::<K>()).cloned().and_then(|a| a.downcast::<Informer<K>>().ok())
    }

    /// The informer of `K`, listing and starting its watch on first use.
    async fn informer<K: Object>(&self) -> Result<Arc<Informer<K>>, ApiError> {
        if let Some(i) = self.running::<K>() {
            return Ok(i);
        }
        let _one_at_a_time = self.starting.lock().await;
        if let Some(i) = self.running::<K>() {
            return Ok(i);
        }
        let list = self.inner.list::<K>(None).await?;
        let rv = list.resource_version.clone();
        let informer =
            Arc::new(Informer { state: RwLock::new(State::new(list)), wakers: Mutex::new(Vec::new()) });
        let task = tokio::spawn(keep_current(self.inner.clone(), Arc::downgrade(&informer), rv));
        self.tasks.lock().unwrap_or_else(|p| p.into_inner()).push(task);
        let erased: Arc<dyn Any + Send + Sync> = informer.clone();
        self.informers.lock().unwrap_or_else(|p| p.into_inner()).insert(TypeId::of::<K>(), erased);
        Ok(informer)
    }

    /// Writes `o` through to the cache of its kind, if that kind is cached.
    fn written<K: Object>(&self, o: &K) {
        if let Some(i) = self.running::<K>() {
            i.write().upsert(o.clone());
        }
    }
}

impl<C: ClusterApi> ClusterApi for CachedCluster<C> {
    async fn get<K: Object>(&self, namespace: Option<&str>, name: &str) -> Result<K, ApiError> {
        self.inner.get(namespace, name).await
    }

    async fn list<K: Object>(&self, namespace: Option<&str>) -> Result<ObjectList<K>, ApiError> {
        let informer = self.informer::<K>().await?;
        let st = informer.read();
        let items = st
            .items
            .values()
            .filter(|o| namespace.is_none_or(|ns| o.metadata().namespace.as_deref() == Some(ns)))
            .map(|o| (**o).clone())
            .collect();
        Ok(ObjectList { items, resource_version: st.watched.to_string() })
    }

    async fn snapshot<K: Object>(&self) -> Result<Vec<Arc<K>>, ApiError> {
        let informer = self.informer::<K>().await?;
        Ok(informer.read().items.values().cloned().collect())
    }

    async fn changes<K: Object>(&self) -> Result<BoxStream<'static, ()>, ApiError> {
        let informer = self.informer::<K>().await?;
        let (tx, rx) = mpsc::unbounded_channel();
        informer.wakers.lock().unwrap_or_else(|p| p.into_inner()).push(tx);
        Ok(futures_util::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|v| (v, rx)) }).boxed())
    }

    async fn watch<K: Object>(
        &self,
        namespace: Option<&str>,
        resource_version: &str,
    ) -> Result<WatchStream<K>, ApiError> {
        self.inner.watch(namespace, resource_version).await
    }

    async fn create<K: Object>(&self, object: &K) -> Result<K, ApiError> {
        let o = self.inner.create(object).await?;
        self.written(&o);
        Ok(o)
    }

    async fn update<K: Object>(&self, object: &K) -> Result<K, ApiError> {
        let o = self.inner.update(object).await?;
        self.written(&o);
        Ok(o)
    }

    async fn update_status<K: Object>(&self, object: &K) -> Result<K, ApiError> {
        let o = self.inner.update_status(object).await?;
        self.written(&o);
        Ok(o)
    }

    async fn delete<K: Object>(
        &self,
        namespace: Option<&str>,
        name: &str,
        params: &DeleteParams,
    ) -> Result<Deleted<K>, ApiError> {
        let d = self.inner.delete::<K>(namespace, name, params).await?;
        match &d {
            Deleted::Pending(o) => self.written(o),
            Deleted::Gone(o) => {
                if let Some(i) = self.running::<K>() {
                    i.write().remove(o, true);
                }
            }
        }
        Ok(d)
    }

    async fn bind(&self, namespace: &str, pod: &str, node: &str) -> Result<(), ApiError> {
        self.inner.bind(namespace, pod, node).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::master::client::memory::MemoryCluster;
    use k8s_openapi::api::core::v1::ConfigMap;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

    fn cm(name: &str, v: &str) -> ConfigMap {
        ConfigMap {
            metadata: ObjectMeta {
                name: Some(name.into()),
                namespace: Some("default".into()),
                ..Default::default()
            },
            data: Some([("k".to_string(), v.to_string())].into()),
            ..Default::default()
        }
    }

    fn value(c: &ConfigMap) -> &str {
        c.data.as_ref().and_then(|d| d.get("k")).map(String::as_str).unwrap_or("")
    }

    async fn eventually(mut f: impl FnMut() -> bool) {
        for _ in 0..500 {
            if f() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!("condition not reached");
    }

    #[tokio::test]
    async fn lists_follow_other_writers_and_see_own_writes_at_once() {
        let api = Arc::new(MemoryCluster::new());
        let cached = CachedCluster::new(api.clone());
        api.create(&cm("a", "1")).await.unwrap();
        assert_eq!(cached.list::<ConfigMap>(None).await.unwrap().items.len(), 1);
        let mut changes = cached.changes::<ConfigMap>().await.unwrap();

        // Another writer: seen after its watch event, which wakes subscribers.
        api.create(&cm("b", "1")).await.unwrap();
        tokio::time::timeout(Duration::from_secs(5), changes.next()).await.unwrap();
        assert_eq!(cached.snapshot::<ConfigMap>().await.unwrap().len(), 2);

        // Own writes: visible immediately, and a late event of the older state does not roll them back.
        let mut a = cached.get::<ConfigMap>(Some("default"), "a").await.unwrap();
        a.data = Some([("k".to_string(), "2".to_string())].into());
        cached.update(&a).await.unwrap();
        let now = cached.list::<ConfigMap>(Some("default")).await.unwrap().items;
        assert_eq!(now.iter().find(|c| c.metadata.name.as_deref() == Some("a")).map(value), Some("2"));
        cached.delete::<ConfigMap>(Some("default"), "b", &DeleteParams::default()).await.unwrap();
        assert_eq!(cached.list::<ConfigMap>(None).await.unwrap().items.len(), 1);
        let informer = cached.running::<ConfigMap>().unwrap();
        let last = api.list::<ConfigMap>(None).await.unwrap().resource_version.parse::<i64>().unwrap();
        eventually(|| informer.read().watched >= last).await;
        let items = cached.snapshot::<ConfigMap>().await.unwrap();
        assert_eq!(items.iter().map(|c| value(c)).collect::<Vec<_>>(), ["2"]);
        assert!(informer.read().tombstones.is_empty());
    }
}
