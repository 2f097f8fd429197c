//! Embedded store: one redb file, a single writer thread assigning dense revisions (writes that
//! queue up meanwhile are group-committed in one transaction, one fsync), history in a log table
//! for watch replay, and a broadcast channel for live watches.

use super::{Event, EventKind, EventStream, KeyValue, ListResult, Revision, Store, StoreError, StoreFuture};
use futures_util::StreamExt;
use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};
use std::path::Path;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex, mpsc};
use tokio::sync::{broadcast, oneshot};

/// key -> encoded (create_rev, mod_rev, value)
const KV: TableDefinition<&str, &[u8]> = TableDefinition::new("kv");
/// revision -> encoded event
const LOG: TableDefinition<i64, &[u8]> = TableDefinition::new("log");
/// "rev", "compact"
const META: TableDefinition<&str, i64> = TableDefinition::new("meta");

/// Capacity of the live-event channel; a watcher further behind gets Compacted and re-lists.
const LIVE_CAPACITY: usize = 16_384;

/// Most writes committed in one transaction.
const MAX_BATCH: usize = 1024;

/// A queued write.
enum Op {
    Create(Vec<u8>),
    Update(Vec<u8>, Revision),
    Delete(Option<Revision>),
}

type WriteResult = Result<(Revision, Option<KeyValue>), StoreError>;

/// Per-request replies, the events to publish and the batch's last revision.
type BatchOutcome = (Vec<(oneshot::Sender<WriteResult>, WriteResult)>, Vec<Event>, Revision);

struct WriteRequest {
    key: String,
    op: Op,
    reply: oneshot::Sender<WriteResult>,
}

/// State shared between the writer thread and watchers.
struct Shared {
    /// Held while publishing a batch and while a watcher subscribes, so no event is missed.
    publish: Mutex<()>,
    /// Highest revision whose events were published.
    published: AtomicI64,
    live: broadcast::Sender<Arc<Event>>,
}

/// The embedded backend.
pub struct EmbeddedStore {
    db: Arc<Database>,
    shared: Arc<Shared>,
    queue: Option<mpsc::Sender<WriteRequest>>,
    writer: Option<std::thread::JoinHandle<()>>,
}

impl Drop for EmbeddedStore {
    fn drop(&mut self) {
        self.queue.take();
        if let Some(w) = self.writer.take() {
            let _ = w.join();
        }
    }
}

fn enc_kv(create: Revision, modr: Revision, value: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(16 + value.len());
    out.extend_from_slice(&create.to_le_bytes());
    out.extend_from_slice(&modr.to_le_bytes());
    out.extend_from_slice(value);
    out
}

fn dec_kv(key: &str, b: &[u8]) -> KeyValue {
    let create = i64::from_le_bytes(b[0..8].try_into().unwrap_or_default());
    let modr = i64::from_le_bytes(b[8..16].try_into().unwrap_or_default());
    KeyValue { key: key.into(), value: b[16..].to_vec(), create_revision: create, mod_revision: modr }
}

fn enc_event(e: &Event) -> Vec<u8> {
    let mut out = Vec::new();
    out.push(match e.kind {
        EventKind::Created => 0u8,
        EventKind::Updated => 1,
        EventKind::Deleted => 2,
    });
    for part in [e.key.as_bytes(), &e.value, e.prev_value.as_deref().unwrap_or(&[])] {
        out.extend_from_slice(&(part.len() as u32).to_le_bytes());
        out.extend_from_slice(part);
    }
    out.push(u8::from(e.prev_value.is_some()));
    out
}

/// A log entry: the event and, when it replaced or removed a value, that value's create and mod
/// revisions (what [`EmbeddedStore::list_at`] needs to undo it; absent in entries written
/// before they were kept).
fn enc_log(e: &Event, prev: Option<&KeyValue>) -> Vec<u8> {
    let mut out = enc_event(e);
    if let Some(p) = prev {
        out.extend_from_slice(&p.create_revision.to_le_bytes());
        out.extend_from_slice(&p.mod_revision.to_le_bytes());
    }
    out
}

/// The event of a log entry and its previous value's (create, mod) revisions, when recorded.
fn dec_log(rev: Revision, b: &[u8]) -> Option<(Event, Option<(Revision, Revision)>)> {
    let ev = dec_event(rev, b)?;
    let len = 1 + 12 + ev.key.len() + ev.value.len() + ev.prev_value.as_ref().map_or(0, Vec::len) + 1;
    let revs = b.get(len..len + 16).map(|t| {
        let create = i64::from_le_bytes(t[0..8].try_into().unwrap_or_default());
        let modr = i64::from_le_bytes(t[8..16].try_into().unwrap_or_default());
        (create, modr)
    });
    Some((ev, revs))
}

fn dec_event(rev: Revision, b: &[u8]) -> Option<Event> {
    let kind = match b.first()? {
        0 => EventKind::Created,
        1 => EventKind::Updated,
        _ => EventKind::Deleted,
    };
    let mut pos = 1;
    let mut parts = Vec::new();
    for _ in 0..3 {
        let len = u32::from_le_bytes(b.get(pos..pos + 4)?.try_into().ok()?) as usize;
        pos += 4;
        parts.push(b.get(pos..pos + len)?.to_vec());
        pos += len;
    }
    let has_prev = *b.get(pos)? == 1;
    let prev = parts.pop()?;
    let value = parts.pop()?;
    let key = String::from_utf8(parts.pop()?).ok()?;
    Some(Event { kind, key, value, prev_value: has_prev.then_some(prev), revision: rev })
}

fn be(op: &'static str) -> impl Fn(redb::Error) -> StoreError {
    move |e| StoreError::backend(op, e)
}

fn read_meta(db: &Database, key: &str) -> Result<i64, StoreError> {
    let txn = db.begin_read().map_err(|e| StoreError::backend("read", e))?;
    let t = txn.open_table(META).map_err(|e| StoreError::backend("read", e))?;
    Ok(t.get(key).map_err(|e| StoreError::backend("read", e))?.map(|v| v.value()).unwrap_or(0))
}

/// Decides one write against the current value: the new value (None = delete) or an error.
fn decide(key: &str, op: Op, prev: Option<&KeyValue>) -> Result<Option<Vec<u8>>, StoreError> {
    let key = key.to_string();
    match (op, prev) {
        (Op::Create(_), Some(_)) => Err(StoreError::AlreadyExists { key }),
        (Op::Create(v), None) => Ok(Some(v)),
        (Op::Update(..) | Op::Delete(_), None) => Err(StoreError::NotFound { key }),
        (Op::Update(_, e) | Op::Delete(Some(e)), Some(p)) if p.mod_revision != e => {
            Err(StoreError::Conflict { key, expected: e, actual: p.mod_revision })
        }
        (Op::Update(v, _), Some(_)) => Ok(Some(v)),
        (Op::Delete(_), Some(_)) => Ok(None),
    }
}

/// Commits a batch of writes in one transaction; returns per-request results and the events.
fn commit_batch(db: &Database, batch: Vec<WriteRequest>) -> BatchOutcome {
    let op = "write";
    let fail_all = |batch: Vec<WriteRequest>, e: StoreError| {
        let out = batch.into_iter().map(|r| (r.reply, Err(e.clone()))).collect();
        (out, Vec::new(), 0)
    };
    let txn = match db.begin_write() {
        Ok(t) => t,
        Err(e) => return fail_all(batch, be(op)(e.into())),
    };
    let mut results = Vec::with_capacity(batch.len());
    let mut events = Vec::new();
    let applied: Result<Revision, StoreError> = (|| {
        let mut meta = txn.open_table(META).map_err(|e| be(op)(e.into()))?;
        let mut kv = txn.open_table(KV).map_err(|e| be(op)(e.into()))?;
        let mut log = txn.open_table(LOG).map_err(|e| be(op)(e.into()))?;
        let mut rev = meta.get("rev").map_err(|e| be(op)(e.into()))?.map(|v| v.value()).unwrap_or(0);
        for req in batch {
            let prev =
                kv.get(req.key.as_str()).map_err(|e| be(op)(e.into()))?.map(|v| dec_kv(&req.key, v.value()));
            let new = match decide(&req.key, req.op, prev.as_ref()) {
                Ok(n) => n,
                Err(e) => {
                    results.push((req.reply, Err(e)));
                    continue;
                }
            };
            rev += 1;
            let event = match new {
                Some(value) => {
                    let create = prev.as_ref().map(|p| p.create_revision).unwrap_or(rev);
                    kv.insert(req.key.as_str(), enc_kv(create, rev, &value).as_slice())
                        .map_err(|e| be(op)(e.into()))?;
                    Event {
                        kind: if prev.is_some() { EventKind::Updated } else { EventKind::Created },
                        key: req.key.clone(),
                        value,
                        prev_value: prev.as_ref().map(|p| p.value.clone()),
                        revision: rev,
                    }
                }
                None => {
                    kv.remove(req.key.as_str()).map_err(|e| be(op)(e.into()))?;
                    let last = prev.as_ref().map(|p| p.value.clone()).unwrap_or_default();
                    Event {
                        kind: EventKind::Deleted,
                        key: req.key.clone(),
                        value: last.clone(),
                        prev_value: Some(last),
                        revision: rev,
                    }
                }
            };
            log.insert(rev, enc_log(&event, prev.as_ref()).as_slice()).map_err(|e| be(op)(e.into()))?;
            events.push(event);
            results.push((req.reply, Ok((rev, prev))));
        }
        meta.insert("rev", rev).map_err(|e| be(op)(e.into()))?;
        Ok(rev)
    })();
    let committed = applied.and_then(|rev| txn.commit().map(|_| rev).map_err(|e| be(op)(e.into())));
    match committed {
        Ok(rev) => (results, events, rev),
        Err(e) => {
            let failed = results.into_iter().map(|(reply, r)| (reply, r.and(Err(e.clone())))).collect();
            (failed, Vec::new(), 0)
        }
    }
}

/// The single writer: takes queued writes, commits them in batches, publishes the events in
/// revision order, then answers the callers.
fn writer_loop(db: &Database, shared: &Shared, rx: &mpsc::Receiver<WriteRequest>) {
    while let Ok(first) = rx.recv() {
        let mut batch = vec![first];
        while batch.len() < MAX_BATCH {
            match rx.try_recv() {
                Ok(r) => batch.push(r),
                Err(_) => break,
            }
        }
        let (results, events, rev) = commit_batch(db, batch);
        if !events.is_empty() {
            let _guard = shared.publish.lock().unwrap_or_else(|p| p.into_inner());
            for ev in events {
                let _ = shared.live.send(Arc::new(ev));
            }
            shared.published.store(rev, Ordering::SeqCst);
        }
        for (reply, r) in results {
            let _ = reply.send(r);
        }
    }
}

impl EmbeddedStore {
    /// Opens (or creates) the store file.
    pub fn open(path: &Path) -> Result<Self, StoreError> {
        let db = Database::create(path)
            .map_err(|e| StoreError::backend("open", format!("{}: {e}", path.display())))?;
        let txn = db.begin_write().map_err(|e| StoreError::backend("open", e))?;
        {
            txn.open_table(KV).map_err(|e| StoreError::backend("open", e))?;
            txn.open_table(LOG).map_err(|e| StoreError::backend("open", e))?;
            txn.open_table(META).map_err(|e| StoreError::backend("open", e))?;
        }
        txn.commit().map_err(|e| StoreError::backend("open", e))?;
        let (live, _) = broadcast::channel(LIVE_CAPACITY);
        let db = Arc::new(db);
        let shared = Arc::new(Shared { publish: Mutex::new(()), published: AtomicI64::new(0), live });
        let current = read_meta(&db, "rev")?;
        shared.published.store(current, Ordering::SeqCst);
        let (queue, rx) = mpsc::channel();
        let (wdb, wshared) = (db.clone(), shared.clone());
        let writer = std::thread::Builder::new()
            .name("rkube-store-writer".into())
            .spawn(move || writer_loop(&wdb, &wshared, &rx))
            .map_err(|e| StoreError::backend("open", e))?;
        Ok(EmbeddedStore { db, shared, queue: Some(queue), writer: Some(writer) })
    }

    fn meta(&self, key: &str) -> Result<i64, StoreError> {
        read_meta(&self.db, key)
    }

    /// Queues one write for the writer thread and waits for its result.
    async fn write(&self, key: &str, op: Op) -> WriteResult {
        let (reply, rx) = oneshot::channel();
        let queue = self.queue.as_ref().ok_or_else(|| StoreError::backend("write", "store is closed"))?;
        queue
            .send(WriteRequest { key: key.to_string(), op, reply })
            .map_err(|_| StoreError::backend("write", "the writer thread stopped"))?;
        rx.await.map_err(|_| StoreError::backend("write", "the writer thread stopped"))?
    }

    fn history(&self, prefix: &str, after: Revision, upto: Revision) -> Result<Vec<Event>, StoreError> {
        let txn = self.db.begin_read().map_err(|e| be("watch")(e.into()))?;
        let log = txn.open_table(LOG).map_err(|e| be("watch")(e.into()))?;
        let mut out = Vec::new();
        for entry in log.range(after + 1..=upto).map_err(|e| be("watch")(e.into()))? {
            let (k, v) = entry.map_err(|e| be("watch")(e.into()))?;
            if let Some(ev) = dec_event(k.value(), v.value())
                && ev.key.starts_with(prefix)
            {
                out.push(ev);
            }
        }
        Ok(out)
    }
}

impl Store for EmbeddedStore {
    fn get<'a>(&'a self, key: &'a str) -> StoreFuture<'a, Option<KeyValue>> {
        Box::pin(async move {
            let txn = self.db.begin_read().map_err(|e| be("get")(e.into()))?;
            let kv = txn.open_table(KV).map_err(|e| be("get")(e.into()))?;
            Ok(kv.get(key).map_err(|e| be("get")(e.into()))?.map(|v| dec_kv(key, v.value())))
        })
    }

    fn list<'a>(&'a self, prefix: &'a str) -> StoreFuture<'a, ListResult> {
        Box::pin(async move {
            let txn = self.db.begin_read().map_err(|e| be("list")(e.into()))?;
            let kv = txn.open_table(KV).map_err(|e| be("list")(e.into()))?;
            let meta = txn.open_table(META).map_err(|e| be("list")(e.into()))?;
            let revision = meta.get("rev").map_err(|e| be("list")(e.into()))?.map(|v| v.value()).unwrap_or(0);
            let mut items = Vec::new();
            for entry in kv.range(prefix..).map_err(|e| be("list")(e.into()))? {
                let (k, v) = entry.map_err(|e| be("list")(e.into()))?;
                if !k.value().starts_with(prefix) {
                    break;
                }
                items.push(dec_kv(k.value(), v.value()));
            }
            Ok(ListResult { items, revision })
        })
    }

    fn list_at<'a>(&'a self, prefix: &'a str, revision: Revision) -> StoreFuture<'a, ListResult> {
        Box::pin(async move {
            let op = "list";
            let compacted = |compacted| StoreError::Compacted { requested: revision, compacted };
            // One read transaction: the current values, then the log after `revision` undone
            // from the newest entry back.
            let txn = self.db.begin_read().map_err(|e| be(op)(e.into()))?;
            let kv = txn.open_table(KV).map_err(|e| be(op)(e.into()))?;
            let meta = txn.open_table(META).map_err(|e| be(op)(e.into()))?;
            let log = txn.open_table(LOG).map_err(|e| be(op)(e.into()))?;
            let get = |k: &str| -> Result<i64, StoreError> {
                Ok(meta.get(k).map_err(|e| be(op)(e.into()))?.map(|v| v.value()).unwrap_or(0))
            };
            let (current, compact) = (get("rev")?, get("compact")?);
            if revision < compact {
                return Err(compacted(compact));
            }
            if revision > current {
                return Err(StoreError::backend(op, format!("revision {revision} is newer than {current}")));
            }
            let mut items = std::collections::BTreeMap::new();
            for entry in kv.range(prefix..).map_err(|e| be(op)(e.into()))? {
                let (k, v) = entry.map_err(|e| be(op)(e.into()))?;
                if !k.value().starts_with(prefix) {
                    break;
                }
                items.insert(k.value().to_string(), dec_kv(k.value(), v.value()));
            }
            for entry in log.range(revision + 1..=current).map_err(|e| be(op)(e.into()))?.rev() {
                let (k, v) = entry.map_err(|e| be(op)(e.into()))?;
                let Some((ev, prev_revs)) = dec_log(k.value(), v.value()) else {
                    return Err(StoreError::backend(op, format!("undecodable log entry {}", k.value())));
                };
                if !ev.key.starts_with(prefix) {
                    continue;
                }
                match (ev.kind, ev.prev_value, prev_revs) {
                    (EventKind::Created, ..) => {
                        items.remove(&ev.key);
                    }
                    (_, Some(value), Some((create_revision, mod_revision))) => {
                        let key = ev.key.clone();
                        items.insert(key, KeyValue { key: ev.key, value, create_revision, mod_revision });
                    }
                    // Written before previous revisions were logged: that history is not there.
                    _ => return Err(compacted(revision)),
                }
            }
            Ok(ListResult { items: items.into_values().collect(), revision })
        })
    }

    fn create<'a>(&'a self, key: &'a str, value: Vec<u8>) -> StoreFuture<'a, Revision> {
        Box::pin(async move { self.write(key, Op::Create(value)).await.map(|(rev, _)| rev) })
    }

    fn update<'a>(&'a self, key: &'a str, value: Vec<u8>, expected: Revision) -> StoreFuture<'a, Revision> {
        Box::pin(async move { self.write(key, Op::Update(value, expected)).await.map(|(rev, _)| rev) })
    }

    fn delete<'a>(
        &'a self,
        key: &'a str,
        expected: Option<Revision>,
    ) -> StoreFuture<'a, (Revision, KeyValue)> {
        Box::pin(async move {
            let (rev, prev) = self.write(key, Op::Delete(expected)).await?;
            let prev = prev.ok_or_else(|| StoreError::NotFound { key: key.into() })?;
            Ok((rev, prev))
        })
    }

    fn watch<'a>(&'a self, prefix: &'a str, after: Revision) -> StoreFuture<'a, EventStream> {
        Box::pin(async move {
            let (rx, current) = {
                let _guard = self.shared.publish.lock().unwrap_or_else(|p| p.into_inner());
                (self.shared.live.subscribe(), self.shared.published.load(Ordering::SeqCst))
            };
            let compacted = self.meta("compact")?;
            if after < compacted && after < current {
                return Err(StoreError::Compacted { requested: after, compacted });
            }
            let replay = self.history(prefix, after, current)?;
            // Live events start after both what was replayed and what the caller already has.
            let floor = current.max(after);
            let prefix = prefix.to_string();
            let live = futures_util::stream::unfold(rx, move |mut rx| {
                let prefix = prefix.clone();
                async move {
                    loop {
                        match rx.recv().await {
                            Ok(ev) if ev.revision > floor && ev.key.starts_with(&prefix) => {
                                return Some((Ok((*ev).clone()), rx));
                            }
                            Ok(_) => continue,
                            Err(broadcast::error::RecvError::Lagged(_)) => {
                                let err = StoreError::Compacted { requested: current, compacted: current };
                                return Some((Err(err), rx));
                            }
                            Err(broadcast::error::RecvError::Closed) => return None,
                        }
                    }
                }
            });
            let stream = futures_util::stream::iter(replay.into_iter().map(Ok)).chain(live);
            Ok(super::stop_after_first_error(stream))
        })
    }

    fn current_revision(&self) -> StoreFuture<'_, Revision> {
        Box::pin(async move { Ok(self.shared.published.load(Ordering::SeqCst)) })
    }

    fn compact(&self, revision: Revision) -> StoreFuture<'_, ()> {
        Box::pin(async move {
            let txn = self.db.begin_write().map_err(|e| be("compact")(e.into()))?;
            {
                let mut log = txn.open_table(LOG).map_err(|e| be("compact")(e.into()))?;
                let mut meta = txn.open_table(META).map_err(|e| be("compact")(e.into()))?;
                let old =
                    meta.get("compact").map_err(|e| be("compact")(e.into()))?.map(|v| v.value()).unwrap_or(0);
                if revision > old {
                    log.retain_in(..=revision, |_, _| false).map_err(|e| be("compact")(e.into()))?;
                    meta.insert("compact", revision).map_err(|e| be("compact")(e.into()))?;
                }
            }
            txn.commit().map_err(|e| be("compact")(e.into()))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn conformance() {
        let dir = tempfile::tempdir().unwrap();
        let store = EmbeddedStore::open(&dir.path().join("state.redb")).unwrap();
        super::super::conformance::run(&store).await;
    }

    #[tokio::test]
    async fn survives_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.redb");
        {
            let s = EmbeddedStore::open(&path).unwrap();
            s.create("/registry/a", b"1".to_vec()).await.unwrap();
            s.create("/registry/b", b"2".to_vec()).await.unwrap();
        }
        let s = EmbeddedStore::open(&path).unwrap();
        assert_eq!(s.current_revision().await.unwrap(), 2);
        assert_eq!(s.get("/registry/b").await.unwrap().unwrap().value, b"2");
        assert_eq!(s.create("/registry/c", vec![]).await.unwrap(), 3);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_writes_get_dense_revisions_in_watch_order() {
        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(EmbeddedStore::open(&dir.path().join("s.redb")).unwrap());
        let mut w = store.watch("/registry/", 0).await.unwrap();
        let tasks: Vec<_> = (0..200)
            .map(|i| {
                let s = store.clone();
                tokio::spawn(async move { s.create(&format!("/registry/cm/{i}"), vec![]).await.unwrap() })
            })
            .collect();
        let mut revs = Vec::new();
        for t in tasks {
            revs.push(t.await.unwrap());
        }
        revs.sort();
        assert_eq!(revs, (1..=200).collect::<Vec<_>>());
        for want in 1..=200 {
            assert_eq!(w.next().await.unwrap().unwrap().revision, want);
        }
        assert_eq!(store.list("/registry/").await.unwrap().revision, 200);
    }

    #[test]
    fn event_encoding() {
        let e = Event {
            kind: EventKind::Deleted,
            key: "k".into(),
            value: b"v".to_vec(),
            prev_value: Some(vec![]),
            revision: 7,
        };
        assert_eq!(dec_event(7, &enc_event(&e)), Some(e));
    }
}
