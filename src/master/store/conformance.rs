//! Behaviour every [`Store`] backend must show; run by each backend's tests.

use super::{EventKind, Store, StoreError};
use futures_util::StreamExt;

/// Exercises create/get/list/update CAS/delete/watch/compaction on an empty store.
pub async fn run(store: &dyn Store) {
    let base = store.current_revision().await.unwrap();
    let r1 = store.create("/registry/pods/default/a", b"a1".to_vec()).await.unwrap();
    assert!(r1 > base);
    assert!(matches!(
        store.create("/registry/pods/default/a", b"x".to_vec()).await,
        Err(StoreError::AlreadyExists { .. })
    ));
    let r2 = store.create("/registry/pods/default/b", b"b1".to_vec()).await.unwrap();
    let rs = store.create("/registry/services/default/s", b"s".to_vec()).await.unwrap();
    let kv = store.get("/registry/pods/default/a").await.unwrap().unwrap();
    assert_eq!((kv.create_revision, kv.mod_revision, kv.value.as_slice()), (r1, r1, &b"a1"[..]));
    let list = store.list("/registry/pods/").await.unwrap();
    assert_eq!(list.items.len(), 2);
    assert!(list.revision >= r2);
    let r3 = store.update("/registry/pods/default/a", b"a2".to_vec(), r1).await.unwrap();
    assert!(matches!(
        store.update("/registry/pods/default/a", b"a3".to_vec(), r1).await,
        Err(StoreError::Conflict { .. })
    ));
    assert!(matches!(
        store.update("/registry/pods/default/zz", b"".to_vec(), r1).await,
        Err(StoreError::NotFound { .. })
    ));
    let mut w = store.watch("/registry/pods/", rs).await.unwrap();
    let (r4, last) = store.delete("/registry/pods/default/b", None).await.unwrap();
    assert_eq!(last.value, b"b1");
    assert!(store.get("/registry/pods/default/b").await.unwrap().is_none());
    let e1 = w.next().await.unwrap().unwrap();
    assert_eq!((e1.kind, e1.revision, e1.value.as_slice()), (EventKind::Updated, r3, &b"a2"[..]));
    assert_eq!(e1.prev_value.as_deref(), Some(&b"a1"[..]));
    let e2 = w.next().await.unwrap().unwrap();
    assert_eq!((e2.kind, e2.revision, e2.key.as_str()), (EventKind::Deleted, r4, "/registry/pods/default/b"));
    let r5 = store.create("/registry/pods/default/c", b"c".to_vec()).await.unwrap();
    let e3 =
        tokio::time::timeout(std::time::Duration::from_secs(5), w.next()).await.unwrap().unwrap().unwrap();
    assert_eq!((e3.kind, e3.revision), (EventKind::Created, r5));
    // Past lists: as they were at each revision, with the revisions the values had then.
    let at = |rev| async move {
        let l = store.list_at("/registry/pods/", rev).await.unwrap();
        assert_eq!(l.revision, rev);
        l.items
            .into_iter()
            .map(|kv| (kv.key, kv.value, kv.create_revision, kv.mod_revision))
            .collect::<Vec<_>>()
    };
    let (a, b) = ("/registry/pods/default/a".to_string(), "/registry/pods/default/b".to_string());
    assert_eq!(at(r1).await, [(a.clone(), b"a1".to_vec(), r1, r1)]);
    assert_eq!(at(rs).await, [(a.clone(), b"a1".to_vec(), r1, r1), (b.clone(), b"b1".to_vec(), r2, r2)]);
    assert_eq!(at(r3).await, [(a.clone(), b"a2".to_vec(), r1, r3), (b.clone(), b"b1".to_vec(), r2, r2)]);
    assert_eq!(at(r4).await, [(a.clone(), b"a2".to_vec(), r1, r3)]);
    store.compact(r4).await.unwrap();
    assert!(matches!(store.list_at("/registry/pods/", r3).await, Err(StoreError::Compacted { .. })));
    assert_eq!(store.list_at("/registry/pods/", r5).await.unwrap().items.len(), 2);
    assert!(matches!(store.watch("/registry/pods/", r1).await, Err(StoreError::Compacted { .. })));
    let mut w2 = store.watch("/registry/pods/", r4).await.unwrap();
    assert_eq!(w2.next().await.unwrap().unwrap().revision, r5);
    assert!(matches!(
        store.delete("/registry/pods/default/c", Some(r4)).await,
        Err(StoreError::Conflict { .. })
    ));
    assert!(matches!(
        store.delete("/registry/pods/default/nope", None).await,
        Err(StoreError::NotFound { .. })
    ));
}
