//! One store watch per resource, shared by every API watch of it (kube-apiserver's cacher): each change is
//! decoded once, kept in a window of recent changes for watches that start slightly in the past, and
//! handed only to the watches it can concern. Pods are indexed by `spec.nodeName`, so a change to one
//! pod wakes the watch of its node, not the watches of a thousand nodes (kube-apiserver's "indexed
//! triggers").
//!
//! A watch too slow to take its changes (its queue full) is ended with `Expired`, as the cacher ends a
//! blocked watcher; the client re-lists. A watch from before the window falls back to the store's own
//! history.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::StreamExt;
use serde_json::Value;
use tokio::sync::mpsc;

use crate::master::store::{EventKind, EventStream, Revision, Store, StoreError};

/// Changes kept for watches that start in the past (by default; tests shrink it).
pub const WINDOW: usize = 2048;
/// Changes queued for one watch before it is ended as too slow.
const QUEUE: usize = 4096;

/// One change, decoded once.
#[derive(Debug)]
pub struct Change {
    pub kind: EventKind,
    pub key: String,
    pub revision: Revision,
    /// The object with its `resourceVersion` (for a delete, the last state).
    pub object: Value,
    /// The object before the change, when there was one.
    pub prev: Option<Value>,
    /// The index value (e.g. the node name) of `object` and of `prev`.
    index: [Option<String>; 2],
}

/// What a subscriber receives: a change, a bookmark, or the end of the watch because it fell behind.
pub type Delivery = Result<Item, StoreError>;

/// One item of a subscription.
#[derive(Debug, Clone)]
pub enum Item {
    Change(Arc<Change>),
    /// Every change up to this revision that concerns the subscriber was delivered (a watch BOOKMARK).
    Progress(Revision),
}

/// How often subscribers that asked for them get a bookmark: a client resuming from its last
/// bookmark stays inside the window instead of falling back to the store's history.
const BOOKMARK_EVERY: Duration = Duration::from_secs(5);

/// Which field, if any, indexes the watches of the resources under a prefix.
fn index_field(prefix: &str) -> Option<&'static str> {
    (prefix == "/registry/pods/").then_some("spec.nodeName")
}

fn field_str(obj: &Value, field: &str) -> Option<String> {
    let ptr = format!("/{}", field.replace('.', "/"));
    Some(obj.pointer(&ptr).and_then(Value::as_str).unwrap_or("").to_string())
}

struct Subscriber {
    tx: mpsc::Sender<Delivery>,
    bookmarks: bool,
    /// Changes at or below this revision are not sent (the subscriber has them already).
    floor: Revision,
    prefix: String,
    index: Option<String>,
}

#[derive(Default)]
struct HubState {
    window: VecDeque<Arc<Change>>,
    /// Every change with a revision above this one is in `window` or still to come.
    covered_after: Revision,
    subscribers: HashMap<u64, Subscriber>,
    by_index: HashMap<String, HashSet<u64>>,
    unindexed: HashSet<u64>,
    next_id: u64,
    /// The upstream watch ended: no new subscriber may join this hub.
    closed: bool,
    /// The newest revision dispatched (or the revision the hub started at).
    last: Revision,
    /// How many changes `window` keeps.
    capacity: usize,
}

impl HubState {
    fn remove(&mut self, id: u64) {
        if let Some(s) = self.subscribers.remove(&id) {
            match s.index {
                Some(i) => {
                    if let Some(set) = self.by_index.get_mut(&i) {
                        set.remove(&id);
                        if set.is_empty() {
                            self.by_index.remove(&i);
                        }
                    }
                }
                None => {
                    self.unindexed.remove(&id);
                }
            }
        }
    }

    /// Offers `change` to subscriber `id`; false when the subscriber is gone or too slow.
    fn offer(&self, id: u64, change: &Arc<Change>) -> bool {
        let Some(s) = self.subscribers.get(&id) else { return true };
        if change.revision <= s.floor || !change.key.starts_with(&s.prefix) {
            return true;
        }
        if let Some(i) = &s.index
            && !change.index.iter().any(|v| v.as_deref() == Some(i.as_str()))
        {
            return true;
        }
        match s.tx.try_send(Ok(Item::Change(change.clone()))) {
            Ok(()) => true,
            Err(mpsc::error::TrySendError::Full(_)) => {
                tracing::debug!(prefix = %s.prefix, "watch fell behind; ending it");
                false
            }
            Err(mpsc::error::TrySendError::Closed(_)) => false,
        }
    }

    fn dispatch(&mut self, change: Arc<Change>) {
        let mut targets: Vec<u64> = self.unindexed.iter().copied().collect();
        for v in change.index.iter().flatten() {
            if let Some(set) = self.by_index.get(v) {
                targets.extend(set.iter().copied());
            }
        }
        targets.sort_unstable();
        targets.dedup();
        let dropped: Vec<u64> = targets.into_iter().filter(|id| !self.offer(*id, &change)).collect();
        for id in dropped {
            self.end(id);
        }
        while self.window.len() >= self.capacity.max(1)
            && let Some(old) = self.window.pop_front()
        {
            self.covered_after = old.revision;
        }
        self.last = self.last.max(change.revision);
        self.window.push_back(change);
    }

    /// Tells every subscriber that wants bookmarks how far it is (skipped for a full queue).
    fn bookmark(&self) {
        for s in self.subscribers.values().filter(|s| s.bookmarks) {
            let _ = s.tx.try_send(Ok(Item::Progress(self.last.max(s.floor))));
        }
    }

    /// Ends subscriber `id` with an Expired error (it must re-list).
    fn end(&mut self, id: u64) {
        if let Some(s) = self.subscribers.get(&id) {
            let _ = s.tx.try_send(Err(StoreError::Compacted { requested: s.floor, compacted: s.floor }));
        }
        self.remove(id);
    }
}

struct Hub {
    state: Mutex<HubState>,
}

/// Shares store watches between API watches.
pub struct WatchCache {
    store: Arc<dyn Store>,
    hubs: Mutex<HashMap<String, Arc<Hub>>>,
    /// Changes each resource's window keeps.
    window: usize,
}

/// The changes one watch receives; dropping it unsubscribes.
pub struct Subscription {
    hub: Arc<Hub>,
    id: u64,
    rx: mpsc::Receiver<Delivery>,
    ended: bool,
}

impl Drop for Subscription {
    fn drop(&mut self) {
        self.hub.state.lock().unwrap_or_else(|p| p.into_inner()).remove(self.id);
    }
}

impl Subscription {
    /// The next change; after an error the subscription ends. A subscription the hub dropped (too slow,
    /// or the upstream watch ended) ends with an error, never silently.
    pub async fn next(&mut self) -> Option<Delivery> {
        if self.ended {
            return None;
        }
        let next = self.rx.recv().await.unwrap_or(Err(StoreError::Compacted { requested: 0, compacted: 0 }));
        self.ended = next.is_err();
        Some(next)
    }
}

impl WatchCache {
    /// A cache over `store`.
    pub fn new(store: Arc<dyn Store>) -> Self {
        Self::with_window(store, WINDOW)
    }

    /// A cache over `store` keeping `window` changes per resource for watches that start in the
    /// past (older ones are served from the store's history, or are 410 Gone once compacted).
    pub fn with_window(store: Arc<dyn Store>, window: usize) -> Self {
        WatchCache { store, hubs: Mutex::new(HashMap::new()), window }
    }

    /// Changes under `prefix` (a namespace's or all of `resource_prefix`) after `after`, only those whose
    /// indexed field equals `index` when given. `None` when `after` is older than what the cache holds:
    /// the caller watches the store directly.
    pub async fn subscribe(
        &self,
        resource_prefix: &str,
        prefix: &str,
        after: Revision,
        index: Option<&str>,
        bookmarks: bool,
    ) -> Result<Option<Subscription>, StoreError> {
        let index = index.filter(|_| index_field(resource_prefix).is_some()).map(str::to_string);
        let hub = self.hub(resource_prefix).await?;
        let (tx, rx) = mpsc::channel(QUEUE);
        let mut st = hub.state.lock().unwrap_or_else(|p| p.into_inner());
        if st.closed || after < st.covered_after {
            return Ok(None);
        }
        let id = st.next_id;
        st.next_id += 1;
        match &index {
            Some(i) => {
                st.by_index.entry(i.clone()).or_default().insert(id);
            }
            None => {
                st.unindexed.insert(id);
            }
        }
        st.subscribers
            .insert(id, Subscriber { tx, bookmarks, floor: after, prefix: prefix.to_string(), index });
        // Replay what the window holds after `after`, in order, before any new change is dispatched.
        let replay: Vec<Arc<Change>> = st.window.iter().filter(|c| c.revision > after).cloned().collect();
        for c in replay {
            if !st.offer(id, &c) {
                st.end(id);
                break;
            }
        }
        drop(st);
        Ok(Some(Subscription { hub, id, rx, ended: false }))
    }

    /// The hub of `resource_prefix`, started on first use (and again after its upstream watch ended).
    async fn hub(&self, resource_prefix: &str) -> Result<Arc<Hub>, StoreError> {
        {
            let hubs = self.hubs.lock().unwrap_or_else(|p| p.into_inner());
            if let Some(h) = hubs.get(resource_prefix)
                && !h.state.lock().unwrap_or_else(|p| p.into_inner()).closed
            {
                return Ok(h.clone());
            }
        }
        let from = self.store.current_revision().await?;
        let upstream = self.store.watch(resource_prefix, from).await?;
        let mut hubs = self.hubs.lock().unwrap_or_else(|p| p.into_inner());
        // Another caller may have started one meanwhile: keep the first (ours is dropped).
        if let Some(h) = hubs.get(resource_prefix)
            && !h.state.lock().unwrap_or_else(|p| p.into_inner()).closed
        {
            return Ok(h.clone());
        }
        let hub = Arc::new(Hub {
            state: Mutex::new(HubState {
                covered_after: from,
                last: from,
                capacity: self.window,
                ..HubState::default()
            }),
        });
        hubs.insert(resource_prefix.to_string(), hub.clone());
        tokio::spawn(feed(hub.clone(), self.store.clone(), resource_prefix.to_string(), upstream, from));
        let weak = Arc::downgrade(&hub);
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(BOOKMARK_EVERY).await;
                let Some(hub) = weak.upgrade() else { return };
                let st = hub.state.lock().unwrap_or_else(|p| p.into_inner());
                if st.closed {
                    return;
                }
                st.bookmark();
            }
        });
        Ok(hub)
    }
}

/// Decodes each upstream change once and dispatches it. When the upstream watch ends (this task fell
/// behind the store's live feed), it resumes from the last change it saw, which the store replays from
/// its history; only when that fails (history compacted) does every subscriber end, to re-list.
async fn feed(
    hub: Arc<Hub>,
    store: Arc<dyn Store>,
    prefix: String,
    mut upstream: EventStream,
    mut last: Revision,
) {
    let index = index_field(&prefix);
    loop {
        while let Some(ev) = upstream.next().await {
            let Ok(ev) = ev else { break };
            last = ev.revision;
            let Ok(mut object) = serde_json::from_slice::<Value>(&ev.value) else { continue };
            crate::api::meta::set_str(&mut object, "resourceVersion", &ev.revision.to_string());
            let prev = ev.prev_value.as_deref().and_then(|p| serde_json::from_slice::<Value>(p).ok());
            let index = match index {
                Some(f) => [field_str(&object, f), prev.as_ref().and_then(|p| field_str(p, f))],
                None => [None, None],
            };
            let change =
                Arc::new(Change { kind: ev.kind, key: ev.key, revision: ev.revision, object, prev, index });
            hub.state.lock().unwrap_or_else(|p| p.into_inner()).dispatch(change);
        }
        match store.watch(&prefix, last).await {
            Ok(resumed) => {
                tracing::debug!(%prefix, revision = last, "watch cache resumed its store watch");
                upstream = resumed;
            }
            Err(e) => {
                tracing::info!(%prefix, error = %e, "watch cache lost its store watch; watches re-list");
                break;
            }
        }
    }
    let mut st = hub.state.lock().unwrap_or_else(|p| p.into_inner());
    st.closed = true;
    let ids: Vec<u64> = st.subscribers.keys().copied().collect();
    for id in ids {
        st.end(id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::master::store::embedded::EmbeddedStore;
    use serde_json::json;

    fn pod(name: &str, node: &str) -> Vec<u8> {
        serde_json::to_vec(
            &json!({"metadata": {"name": name, "namespace": "default"}, "spec": {"nodeName": node}}),
        )
        .unwrap()
    }

    async fn next_name(sub: &mut Subscription) -> String {
        let c = tokio::time::timeout(Duration::from_secs(5), sub.next()).await.unwrap().unwrap();
        let Ok(Item::Change(c)) = c else { panic!("expected a change, got {c:?}") };
        c.object["metadata"]["name"].as_str().unwrap().to_string()
    }

    #[tokio::test]
    async fn indexed_subscribers_see_only_their_changes_and_replay_from_the_window() {
        let dir = tempfile::tempdir().unwrap();
        let store: Arc<dyn Store> = Arc::new(EmbeddedStore::open(&dir.path().join("db")).unwrap());
        let cache = WatchCache::new(store.clone());
        let p = "/registry/pods/";
        let start = store.current_revision().await.unwrap();
        let mut a = cache.subscribe(p, p, start, Some("a"), false).await.unwrap().unwrap();
        let mut all =
            cache.subscribe(p, "/registry/pods/default/", start, None, false).await.unwrap().unwrap();
        store.create("/registry/pods/default/x", pod("x", "b")).await.unwrap();
        let r = store.create("/registry/pods/default/y", pod("y", "a")).await.unwrap();
        // Moving a pod away from node a still reaches a's watch (as a change of its old value).
        let moved = store.update("/registry/pods/default/y", pod("y", "c"), r).await.unwrap();
        assert_eq!(next_name(&mut a).await, "y");
        assert_eq!(next_name(&mut a).await, "y");
        assert_eq!(next_name(&mut all).await, "x");
        assert_eq!(next_name(&mut all).await, "y");
        // A watch starting at y's creation replays only the later change from the window.
        let mut late = cache.subscribe(p, p, r, None, true).await.unwrap().unwrap();
        let Some(Ok(Item::Change(c))) = late.next().await else { panic!("expected a change") };
        assert_eq!(c.revision, moved);
        // Then, with nothing changing, a bookmark at the newest revision.
        let b = tokio::time::timeout(BOOKMARK_EVERY * 2, late.next()).await.unwrap();
        assert!(matches!(b, Some(Ok(Item::Progress(rev))) if rev == moved), "{b:?}");
        // A watch from before the hub started is not served from the cache.
        assert!(cache.subscribe(p, p, start - 1, None, false).await.unwrap().is_none());
    }

    #[tokio::test]
    async fn a_subscriber_that_never_reads_is_ended_not_waited_for() {
        let dir = tempfile::tempdir().unwrap();
        let store: Arc<dyn Store> = Arc::new(EmbeddedStore::open(&dir.path().join("db")).unwrap());
        let cache = WatchCache::new(store.clone());
        let p = "/registry/configmaps/";
        let start = store.current_revision().await.unwrap();
        let mut slow = cache.subscribe(p, p, start, None, false).await.unwrap().unwrap();
        let mut last = 0;
        for i in 0..QUEUE + 1 {
            last = store.create(&format!("/registry/configmaps/default/c{i}"), b"{}".to_vec()).await.unwrap();
        }
        // Let the hub take every change before the subscriber reads anything.
        let hub = cache.hubs.lock().unwrap().get(p).unwrap().clone();
        while hub.state.lock().unwrap().window.back().map(|c| c.revision) != Some(last) {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let mut n = 0;
        loop {
            match tokio::time::timeout(Duration::from_secs(10), slow.next()).await.unwrap() {
                Some(Ok(_)) => n += 1,
                Some(Err(e)) => {
                    assert!(matches!(e, StoreError::Compacted { .. }));
                    break;
                }
                None => panic!("ended without an error after {n} changes"),
            }
        }
        assert!(n <= QUEUE, "{n}");
    }
}
