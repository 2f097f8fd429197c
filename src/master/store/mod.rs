//! The `Store` trait: a revisioned key-value store with compare-and-swap writes, watch from a
//! revision and compaction (kine-like semantics), with an embedded (redb) and an etcd backend.

pub mod embedded;
pub mod etcd;

use futures_util::stream::BoxStream;
use std::future::Future;
use std::pin::Pin;

/// A global store revision (= Kubernetes resourceVersion).
pub type Revision = i64;

/// Why a store call failed.
#[derive(Debug, Clone, thiserror::Error, PartialEq)]
pub enum StoreError {
    #[error("key {key} not found")]
    NotFound { key: String },
    #[error("key {key} already exists")]
    AlreadyExists { key: String },
    #[error("key {key} was modified: expected revision {expected}, found {actual}")]
    Conflict { key: String, expected: Revision, actual: Revision },
    #[error("too old resource version: {requested} ({compacted})")]
    Compacted { requested: Revision, compacted: Revision },
    #[error("store {op} failed: {message}")]
    Backend { op: &'static str, message: String },
}

impl StoreError {
    /// A backend failure during `op`.
    pub fn backend(op: &'static str, e: impl std::fmt::Display) -> Self {
        StoreError::Backend { op, message: e.to_string() }
    }
}

/// A stored value with its revisions.
#[derive(Debug, Clone, PartialEq)]
pub struct KeyValue {
    pub key: String,
    pub value: Vec<u8>,
    pub create_revision: Revision,
    pub mod_revision: Revision,
}

/// What changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventKind {
    Created,
    Updated,
    Deleted,
}

/// One change; for a delete `value` is the last value before deletion.
#[derive(Debug, Clone, PartialEq)]
pub struct Event {
    pub kind: EventKind,
    pub key: String,
    pub value: Vec<u8>,
    pub prev_value: Option<Vec<u8>>,
    pub revision: Revision,
}

/// A consistent list: the items and the revision they were read at.
#[derive(Debug, Clone, Default)]
pub struct ListResult {
    pub items: Vec<KeyValue>,
    pub revision: Revision,
}

/// Events from a revision on; the stream ends with `Compacted` if the watcher falls too far behind.
pub type EventStream = BoxStream<'static, Result<Event, StoreError>>;

/// Ends a watch stream after its first error (the watcher must re-list), keeping the error itself.
pub fn stop_after_first_error<S>(events: S) -> EventStream
where
    S: futures_util::Stream<Item = Result<Event, StoreError>> + Send + 'static,
{
    use futures_util::StreamExt;
    events
        .scan(false, |failed, item| {
            let out = if *failed { None } else { Some(item) };
            if matches!(out, Some(Err(_))) {
                *failed = true;
            }
            futures_util::future::ready(out)
        })
        .boxed()
}

/// Boxed future returned by the dyn-compatible [`Store`] methods.
pub type StoreFuture<'a, T> = Pin<Box<dyn Future<Output = Result<T, StoreError>> + Send + 'a>>;

/// A revisioned key-value store (dyn-compatible).
pub trait Store: Send + Sync + 'static {
    /// Reads one key.
    fn get<'a>(&'a self, key: &'a str) -> StoreFuture<'a, Option<KeyValue>>;
    /// Lists every key under `prefix` with the current revision.
    fn list<'a>(&'a self, prefix: &'a str) -> StoreFuture<'a, ListResult>;
    /// Lists every key under `prefix` as it was at `revision` (a past list's snapshot, for the
    /// pages after its first); Compacted once that history is gone.
    fn list_at<'a>(&'a self, prefix: &'a str, revision: Revision) -> StoreFuture<'a, ListResult>;
    /// Creates `key`; fails with AlreadyExists. Returns the new revision.
    fn create<'a>(&'a self, key: &'a str, value: Vec<u8>) -> StoreFuture<'a, Revision>;
    /// Replaces `key` if its mod revision is `expected`; fails with Conflict or NotFound.
    fn update<'a>(&'a self, key: &'a str, value: Vec<u8>, expected: Revision) -> StoreFuture<'a, Revision>;
    /// Deletes `key` (if its mod revision is `expected`, when given). Returns the deletion revision
    /// and the last value.
    fn delete<'a>(
        &'a self,
        key: &'a str,
        expected: Option<Revision>,
    ) -> StoreFuture<'a, (Revision, KeyValue)>;
    /// Streams changes under `prefix` with revision > `after`.
    fn watch<'a>(&'a self, prefix: &'a str, after: Revision) -> StoreFuture<'a, EventStream>;
    /// The current revision.
    fn current_revision(&self) -> StoreFuture<'_, Revision>;
    /// Forgets history at or below `revision`; watches from there fail with Compacted.
    fn compact(&self, revision: Revision) -> StoreFuture<'_, ()>;
}

#[cfg(test)]
pub(crate) mod conformance;
