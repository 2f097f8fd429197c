//! etcd v3 backend (`--etcd-servers`): the same key layout and semantics as the embedded store,
//! using etcd's own revisions (create = txn on version 0, update/delete = txn on mod_revision).

use super::{Event, EventKind, EventStream, KeyValue, ListResult, Revision, Store, StoreError, StoreFuture};
use etcd_client::{
    Client, CompactionOptions, Compare, CompareOp, EventType, GetOptions, Txn, TxnOp, TxnOpResponse,
    WatchOptions,
};
use futures_util::StreamExt;

/// The etcd backend.
pub struct EtcdStore {
    client: Client,
}

fn kv_of(kv: &etcd_client::KeyValue) -> KeyValue {
    KeyValue {
        key: String::from_utf8_lossy(kv.key()).into_owned(),
        value: kv.value().to_vec(),
        create_revision: kv.create_revision(),
        mod_revision: kv.mod_revision(),
    }
}

fn be(op: &'static str) -> impl Fn(etcd_client::Error) -> StoreError {
    move |e| StoreError::backend(op, e)
}

fn first_get(resp: &etcd_client::TxnResponse) -> Option<KeyValue> {
    resp.op_responses().into_iter().find_map(|r| match r {
        TxnOpResponse::Get(g) => g.kvs().first().map(kv_of),
        _ => None,
    })
}

impl EtcdStore {
    /// Connects to the given endpoints (`http://127.0.0.1:2379`).
    pub async fn connect(endpoints: &[String]) -> Result<Self, StoreError> {
        let client = Client::connect(endpoints, None).await.map_err(be("connect"))?;
        let store = EtcdStore { client };
        store.current_revision().await?;
        Ok(store)
    }

    fn c(&self) -> Client {
        self.client.clone()
    }
}

impl Store for EtcdStore {
    fn get<'a>(&'a self, key: &'a str) -> StoreFuture<'a, Option<KeyValue>> {
        Box::pin(async move {
            let r = self.c().get(key, None).await.map_err(be("get"))?;
            Ok(r.kvs().first().map(kv_of))
        })
    }

    fn list<'a>(&'a self, prefix: &'a str) -> StoreFuture<'a, ListResult> {
        Box::pin(async move {
            let r = self.c().get(prefix, Some(GetOptions::new().with_prefix())).await.map_err(be("list"))?;
            let revision = r.header().map(|h| h.revision()).unwrap_or(0);
            Ok(ListResult { items: r.kvs().iter().map(kv_of).collect(), revision })
        })
    }

    fn list_at<'a>(&'a self, prefix: &'a str, revision: Revision) -> StoreFuture<'a, ListResult> {
        Box::pin(async move {
            let opts = GetOptions::new().with_prefix().with_revision(revision);
            match self.c().get(prefix, Some(opts)).await {
                Ok(r) => Ok(ListResult { items: r.kvs().iter().map(kv_of).collect(), revision }),
                Err(e) if e.to_string().contains("compacted") => {
                    Err(StoreError::Compacted { requested: revision, compacted: revision })
                }
                Err(e) => Err(be("list")(e)),
            }
        })
    }

    fn create<'a>(&'a self, key: &'a str, value: Vec<u8>) -> StoreFuture<'a, Revision> {
        Box::pin(async move {
            let txn = Txn::new()
                .when([Compare::version(key, CompareOp::Equal, 0)])
                .and_then([TxnOp::put(key, value, None)]);
            let r = self.c().txn(txn).await.map_err(be("create"))?;
            if !r.succeeded() {
                return Err(StoreError::AlreadyExists { key: key.into() });
            }
            Ok(r.header().map(|h| h.revision()).unwrap_or(0))
        })
    }

    fn update<'a>(&'a self, key: &'a str, value: Vec<u8>, expected: Revision) -> StoreFuture<'a, Revision> {
        Box::pin(async move {
            let txn = Txn::new()
                .when([Compare::mod_revision(key, CompareOp::Equal, expected)])
                .and_then([TxnOp::put(key, value, None)])
                .or_else([TxnOp::get(key, None)]);
            let r = self.c().txn(txn).await.map_err(be("update"))?;
            if r.succeeded() {
                return Ok(r.header().map(|h| h.revision()).unwrap_or(0));
            }
            match first_get(&r) {
                None => Err(StoreError::NotFound { key: key.into() }),
                Some(kv) => Err(StoreError::Conflict { key: key.into(), expected, actual: kv.mod_revision }),
            }
        })
    }

    fn delete<'a>(
        &'a self,
        key: &'a str,
        expected: Option<Revision>,
    ) -> StoreFuture<'a, (Revision, KeyValue)> {
        Box::pin(async move {
            let current = self.get(key).await?.ok_or_else(|| StoreError::NotFound { key: key.into() })?;
            let want = expected.unwrap_or(current.mod_revision);
            let txn = Txn::new()
                .when([Compare::mod_revision(key, CompareOp::Equal, want)])
                .and_then([TxnOp::delete(key, None)])
                .or_else([TxnOp::get(key, None)]);
            let r = self.c().txn(txn).await.map_err(be("delete"))?;
            if r.succeeded() {
                return Ok((r.header().map(|h| h.revision()).unwrap_or(0), current));
            }
            match first_get(&r) {
                None => Err(StoreError::NotFound { key: key.into() }),
                Some(kv) => {
                    Err(StoreError::Conflict { key: key.into(), expected: want, actual: kv.mod_revision })
                }
            }
        })
    }

    fn watch<'a>(&'a self, prefix: &'a str, after: Revision) -> StoreFuture<'a, EventStream> {
        Box::pin(async move {
            if after > 0 {
                // Reading at a compacted revision fails: report it before streaming.
                let opts =
                    GetOptions::new().with_prefix().with_revision(after).with_keys_only().with_limit(1);
                if let Err(e) = self.c().get(prefix, Some(opts)).await {
                    let msg = e.to_string();
                    if msg.contains("compacted") {
                        return Err(StoreError::Compacted { requested: after, compacted: after });
                    }
                    if !msg.contains("future revision") {
                        return Err(StoreError::backend("watch", msg));
                    }
                }
            }
            let opts = WatchOptions::new().with_prefix().with_prev_key().with_start_revision(after + 1);
            let stream = self.c().watch(prefix, Some(opts)).await.map_err(be("watch"))?;
            let events = stream.flat_map(move |resp| {
                let items: Vec<Result<Event, StoreError>> = match resp {
                    Err(e) => vec![Err(StoreError::backend("watch", e))],
                    Ok(r) if r.canceled() => {
                        vec![Err(StoreError::Compacted { requested: after, compacted: r.compact_revision() })]
                    }
                    Ok(r) => r
                        .events()
                        .iter()
                        .filter_map(|e| {
                            let kv = e.kv()?;
                            let prev = e.prev_kv().map(|p| p.value().to_vec());
                            let (kind, value) = match e.event_type() {
                                EventType::Put if kv.create_revision() == kv.mod_revision() => {
                                    (EventKind::Created, kv.value().to_vec())
                                }
                                EventType::Put => (EventKind::Updated, kv.value().to_vec()),
                                EventType::Delete => (EventKind::Deleted, prev.clone().unwrap_or_default()),
                            };
                            Some(Ok(Event {
                                kind,
                                key: String::from_utf8_lossy(kv.key()).into_owned(),
                                value,
                                prev_value: prev,
                                revision: kv.mod_revision(),
                            }))
                        })
                        .collect(),
                };
                futures_util::stream::iter(items)
            });
            Ok(super::stop_after_first_error(events))
        })
    }

    fn current_revision(&self) -> StoreFuture<'_, Revision> {
        Box::pin(async move {
            let r = self.c().get("/registry/health", None).await.map_err(be("revision"))?;
            Ok(r.header().map(|h| h.revision()).unwrap_or(0))
        })
    }

    fn compact(&self, revision: Revision) -> StoreFuture<'_, ()> {
        Box::pin(async move {
            self.c()
                .compact(revision, Some(CompactionOptions::new().with_physical()))
                .await
                .map(|_| ())
                .map_err(be("compact"))
        })
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use std::process::{Child, Command, Stdio};
    use std::time::{Duration, Instant};

    /// A throwaway etcd on free loopback ports with a temp data dir; killed by PID on drop.
    pub(crate) struct TestEtcd {
        child: Child,
        _dir: tempfile::TempDir,
        pub endpoint: String,
    }

    fn free_port() -> u16 {
        std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
    }

    impl TestEtcd {
        pub(crate) fn start() -> Self {
            let dir = tempfile::tempdir().unwrap();
            let (client, peer) = (free_port(), free_port());
            let endpoint = format!("http://127.0.0.1:{client}");
            let child = Command::new("etcd")
                .arg("--data-dir")
                .arg(dir.path())
                .args(["--listen-client-urls", &endpoint, "--advertise-client-urls", &endpoint])
                .args(["--listen-peer-urls", &format!("http://127.0.0.1:{peer}")])
                .args(["--initial-advertise-peer-urls", &format!("http://127.0.0.1:{peer}")])
                .args(["--initial-cluster", &format!("default=http://127.0.0.1:{peer}")])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("start etcd");
            TestEtcd { child, _dir: dir, endpoint }
        }

        pub(crate) async fn store(&self) -> EtcdStore {
            let deadline = Instant::now() + Duration::from_secs(20);
            loop {
                match EtcdStore::connect(std::slice::from_ref(&self.endpoint)).await {
                    Ok(s) => return s,
                    Err(e) if Instant::now() > deadline => panic!("etcd did not come up: {e}"),
                    Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
                }
            }
        }
    }

    impl Drop for TestEtcd {
        fn drop(&mut self) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }

    #[tokio::test]
    async fn conformance() {
        let etcd = TestEtcd::start();
        let store = etcd.store().await;
        super::super::conformance::run(&store).await;
    }
}
