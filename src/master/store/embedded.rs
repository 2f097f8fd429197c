//! Embedded store: one redb file, a single writer assigning dense revisions, history in a log
//! table for watch replay, and a broadcast channel for live watches.

use super::{Event, EventKind, EventStream, KeyValue, ListResult, Revision, Store, StoreError, StoreFuture};
use futures_util::StreamExt;
use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};
use std::path::Path;
use std::sync::{Arc, Mutex};
use tokio::sync::broadcast;

/// key -> encoded (create_rev, mod_rev, value)
const KV: TableDefinition<&str, &[u8]> = TableDefinition::new("kv");
/// revision -> encoded event
const LOG: TableDefinition<i64, &[u8]> = TableDefinition::new("log");
/// "rev", "compact"
const META: TableDefinition<&str, i64> = TableDefinition::new("meta");

/// Capacity of the live-event channel; a watcher further behind gets Compacted and re-lists.
const LIVE_CAPACITY: usize = 16_384;

/// The embedded backend.
pub struct EmbeddedStore {
    db: Arc<Database>,
    writer: Mutex<()>,
    live: broadcast::Sender<Arc<Event>>,
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
        Ok(EmbeddedStore { db: Arc::new(db), writer: Mutex::new(()), live })
    }

    fn meta(&self, key: &str) -> Result<i64, StoreError> {
        let txn = self.db.begin_read().map_err(|e| StoreError::backend("read", e))?;
        let t = txn.open_table(META).map_err(|e| StoreError::backend("read", e))?;
        Ok(t.get(key).map_err(|e| StoreError::backend("read", e))?.map(|v| v.value()).unwrap_or(0))
    }

    /// Runs one write under the single-writer lock: `f` sees the current value of `key` and
    /// decides the new value (None = delete). Commits kv + log + revision atomically, then
    /// publishes the event.
    fn write(
        &self,
        op: &'static str,
        key: &str,
        f: impl FnOnce(Option<KeyValue>) -> Result<Option<Vec<u8>>, StoreError>,
    ) -> Result<(Revision, Option<KeyValue>), StoreError> {
        let _guard = self.writer.lock().unwrap_or_else(|p| p.into_inner());
        let txn = self.db.begin_write().map_err(|e| be(op)(e.into()))?;
        let (rev, event, prev) = {
            let mut meta = txn.open_table(META).map_err(|e| be(op)(e.into()))?;
            let mut kv = txn.open_table(KV).map_err(|e| be(op)(e.into()))?;
            let mut log = txn.open_table(LOG).map_err(|e| be(op)(e.into()))?;
            let rev = meta.get("rev").map_err(|e| be(op)(e.into()))?.map(|v| v.value()).unwrap_or(0) + 1;
            let prev = kv.get(key).map_err(|e| be(op)(e.into()))?.map(|v| dec_kv(key, v.value()));
            let new = f(prev.clone())?;
            let event = match (&prev, new) {
                (_, Some(value)) => {
                    let create = prev.as_ref().map(|p| p.create_revision).unwrap_or(rev);
                    kv.insert(key, enc_kv(create, rev, &value).as_slice()).map_err(|e| be(op)(e.into()))?;
                    Event {
                        kind: if prev.is_some() { EventKind::Updated } else { EventKind::Created },
                        key: key.into(),
                        value,
                        prev_value: prev.as_ref().map(|p| p.value.clone()),
                        revision: rev,
                    }
                }
                (Some(p), None) => {
                    kv.remove(key).map_err(|e| be(op)(e.into()))?;
                    Event {
                        kind: EventKind::Deleted,
                        key: key.into(),
                        value: p.value.clone(),
                        prev_value: Some(p.value.clone()),
                        revision: rev,
                    }
                }
                (None, None) => return Err(StoreError::NotFound { key: key.into() }),
            };
            log.insert(rev, enc_event(&event).as_slice()).map_err(|e| be(op)(e.into()))?;
            meta.insert("rev", rev).map_err(|e| be(op)(e.into()))?;
            (rev, event, prev)
        };
        txn.commit().map_err(|e| be(op)(e.into()))?;
        let _ = self.live.send(Arc::new(event));
        Ok((rev, prev))
    }

    fn history(&self, prefix: &str, after: Revision, upto: Revision) -> Result<Vec<Event>, StoreError> {
        let txn = self.db.begin_read().map_err(|e| be("watch")(e.into()))?;
        let log = txn.open_table(LOG).map_err(|e| be("watch")(e.into()))?;
        let mut out = Vec::new();
        for entry in log.range(after + 1..=upto).map_err(|e| be("watch")(e.into()))? {
            let (k, v) = entry.map_err(|e| be("watch")(e.into()))?;
            if let Some(ev) = dec_event(k.value(), v.value()) {
                if ev.key.starts_with(prefix) {
                    out.push(ev);
                }
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

    fn create<'a>(&'a self, key: &'a str, value: Vec<u8>) -> StoreFuture<'a, Revision> {
        Box::pin(async move {
            self.write("create", key, |prev| match prev {
                Some(_) => Err(StoreError::AlreadyExists { key: key.into() }),
                None => Ok(Some(value)),
            })
            .map(|(rev, _)| rev)
        })
    }

    fn update<'a>(&'a self, key: &'a str, value: Vec<u8>, expected: Revision) -> StoreFuture<'a, Revision> {
        Box::pin(async move {
            self.write("update", key, |prev| match prev {
                None => Err(StoreError::NotFound { key: key.into() }),
                Some(p) if p.mod_revision != expected => {
                    Err(StoreError::Conflict { key: key.into(), expected, actual: p.mod_revision })
                }
                Some(_) => Ok(Some(value)),
            })
            .map(|(rev, _)| rev)
        })
    }

    fn delete<'a>(
        &'a self,
        key: &'a str,
        expected: Option<Revision>,
    ) -> StoreFuture<'a, (Revision, KeyValue)> {
        Box::pin(async move {
            let (rev, prev) = self.write("delete", key, |prev| match (prev, expected) {
                (None, _) => Err(StoreError::NotFound { key: key.into() }),
                (Some(p), Some(e)) if p.mod_revision != e => {
                    Err(StoreError::Conflict { key: key.into(), expected: e, actual: p.mod_revision })
                }
                (Some(_), _) => Ok(None),
            })?;
            let prev = prev.ok_or_else(|| StoreError::NotFound { key: key.into() })?;
            Ok((rev, prev))
        })
    }

    fn watch<'a>(&'a self, prefix: &'a str, after: Revision) -> StoreFuture<'a, EventStream> {
        Box::pin(async move {
            let (rx, current) = {
                let _guard = self.writer.lock().unwrap_or_else(|p| p.into_inner());
                (self.live.subscribe(), self.meta("rev")?)
            };
            let compacted = self.meta("compact")?;
            if after < compacted && after < current {
                return Err(StoreError::Compacted { requested: after, compacted });
            }
            let replay = self.history(prefix, after, current)?;
            let prefix = prefix.to_string();
            let live = futures_util::stream::unfold(rx, move |mut rx| {
                let prefix = prefix.clone();
                async move {
                    loop {
                        match rx.recv().await {
                            Ok(ev) if ev.revision > current && ev.key.starts_with(&prefix) => {
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
            // Stop after the first error: the watcher must re-list.
            let stream = stream.scan(false, |failed, item| {
                let out = if *failed { None } else { Some(item) };
                if matches!(out, Some(Err(_))) {
                    *failed = true;
                }
                futures_util::future::ready(out)
            });
            Ok(stream.boxed())
        })
    }

    fn current_revision(&self) -> StoreFuture<'_, Revision> {
        Box::pin(async move { self.meta("rev") })
    }

    fn compact(&self, revision: Revision) -> StoreFuture<'_, ()> {
        Box::pin(async move {
            let _guard = self.writer.lock().unwrap_or_else(|p| p.into_inner());
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
