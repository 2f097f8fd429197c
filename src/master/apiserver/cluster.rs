//! `ClusterApi` for in-process controllers: the same registry path as HTTP (decoding, defaults,
//! validation, admission, CAS, graceful deletion), without a network round trip.

use super::registry::{DeleteOptions, FieldValidation, Part, Registry, Selectors, WriteOptions};
use super::resources::{self, ResourceInfo};
use super::status::ApiStatus;
use crate::master::client::{
    ApiError, ClusterApi, DeleteParams, Deleted, Object, ObjectList, PropagationPolicy, WatchEvent,
    WatchStream,
};
use futures_util::StreamExt;
use serde_json::Value;
use std::sync::Arc;

/// The API server's registry seen through `ClusterApi`.
#[derive(Clone)]
pub struct InProcessCluster {
    registry: Arc<Registry>,
}

impl InProcessCluster {
    /// Wraps a registry.
    pub fn new(registry: Arc<Registry>) -> Self {
        InProcessCluster { registry }
    }
}

fn resource<K: Object>() -> Result<&'static ResourceInfo, ApiError> {
    resources::for_kind(K::API_VERSION, K::KIND).ok_or_else(|| ApiError::BadRequest {
        message: format!("kind {}/{} is not served", K::API_VERSION, K::KIND),
    })
}

fn api_error(e: ApiStatus, kind: &str, name: &str) -> ApiError {
    let (kind, name) = (kind.to_string(), name.to_string());
    match e.reason {
        "NotFound" => ApiError::NotFound { kind, name },
        "AlreadyExists" => ApiError::AlreadyExists { kind, name },
        "Conflict" => ApiError::Conflict { kind, name, message: e.message },
        "Invalid" => ApiError::Invalid { kind, name, message: e.message },
        "Forbidden" => ApiError::Forbidden { kind, name, message: e.message },
        "Expired" => ApiError::Expired { message: e.message },
        "BadRequest" => ApiError::BadRequest { message: e.message },
        _ => ApiError::Internal { message: e.message },
    }
}

fn decode<K: Object>(v: Value) -> Result<K, ApiError> {
    serde_json::from_value(v)
        .map_err(|e| ApiError::Internal { message: format!("decoding {}: {e}", K::KIND) })
}

fn encode<K: Object>(o: &K) -> Result<Value, ApiError> {
    serde_json::to_value(o).map_err(|e| ApiError::Internal { message: format!("encoding {}: {e}", K::KIND) })
}

const OPTS: WriteOptions = WriteOptions {
    dry_run: false,
    validation: FieldValidation::Ignore,
    subresource: false,
    manager: None,
    applied: false,
};

impl ClusterApi for InProcessCluster {
    async fn get<K: Object>(&self, namespace: Option<&str>, name: &str) -> Result<K, ApiError> {
        let r = resource::<K>()?;
        let v = self
            .registry
            .get(r, namespace.unwrap_or(""), name)
            .await
            .map_err(|e| api_error(e, K::KIND, name))?;
        decode(v)
    }

    async fn list<K: Object>(&self, namespace: Option<&str>) -> Result<ObjectList<K>, ApiError> {
        let r = resource::<K>()?;
        let (items, rev) = self
            .registry
            .list(r, namespace, &Selectors::default())
            .await
            .map_err(|e| api_error(e, K::KIND, ""))?;
        let items = items.into_iter().map(decode).collect::<Result<Vec<K>, _>>()?;
        Ok(ObjectList { items, resource_version: rev.to_string() })
    }

    async fn watch<K: Object>(
        &self,
        namespace: Option<&str>,
        resource_version: &str,
    ) -> Result<WatchStream<K>, ApiError> {
        let r = resource::<K>()?;
        let from = if resource_version.is_empty() || resource_version == "0" {
            self.registry
                .store()
                .current_revision()
                .await
                .map_err(|e| ApiError::Internal { message: e.to_string() })?
                .to_string()
        } else {
            resource_version.to_string()
        };
        let items = self
            .registry
            .watch(r, namespace, &from, Selectors::default())
            .await
            .map_err(|e| api_error(e, K::KIND, ""))?;
        Ok(items
            .map(|item| {
                let item = item.map_err(|e| api_error(e, K::KIND, ""))?;
                let obj: K = decode(item.object)?;
                Ok(match item.kind {
                    "ADDED" => WatchEvent::Added(obj),
                    "DELETED" => WatchEvent::Deleted(obj),
                    _ => WatchEvent::Modified(obj),
                })
            })
            .boxed())
    }

    async fn create<K: Object>(&self, object: &K) -> Result<K, ApiError> {
        let r = resource::<K>()?;
        let md = object.metadata();
        let name = md.name.clone().or_else(|| md.generate_name.clone()).unwrap_or_default();
        let ns = md.namespace.clone().unwrap_or_default();
        let ns = if r.namespaced && ns.is_empty() { "default".to_string() } else { ns };
        let v = self
            .registry
            .create(r, &ns, encode(object)?, OPTS)
            .await
            .map_err(|e| api_error(e, K::KIND, &name))?;
        decode(v)
    }

    async fn update<K: Object>(&self, object: &K) -> Result<K, ApiError> {
        self.write(object, Part::Main).await
    }

    async fn update_status<K: Object>(&self, object: &K) -> Result<K, ApiError> {
        self.write(object, Part::Status).await
    }

    async fn delete<K: Object>(
        &self,
        namespace: Option<&str>,
        name: &str,
        params: &DeleteParams,
    ) -> Result<Deleted<K>, ApiError> {
        let r = resource::<K>()?;
        let propagation = match params.propagation_policy {
            PropagationPolicy::Background => "Background",
            PropagationPolicy::Foreground => "Foreground",
            PropagationPolicy::Orphan => "Orphan",
        };
        let opts = DeleteOptions {
            propagation: Some(propagation.into()),
            grace_period_seconds: params.grace_period_seconds,
            precondition_uid: params.precondition_uid.clone(),
            ..Default::default()
        };
        let (obj, gone) = self
            .registry
            .delete(r, namespace.unwrap_or(""), name, &opts)
            .await
            .map_err(|e| api_error(e, K::KIND, name))?;
        let obj = decode(obj)?;
        Ok(if gone { Deleted::Gone(obj) } else { Deleted::Pending(obj) })
    }

    async fn bind(&self, namespace: &str, pod: &str, node: &str) -> Result<(), ApiError> {
        self.registry.bind(namespace, pod, node).await.map(|_| ()).map_err(|e| api_error(e, "Pod", pod))
    }
}

impl InProcessCluster {
    async fn write<K: Object>(&self, object: &K, part: Part) -> Result<K, ApiError> {
        let r = resource::<K>()?;
        let md = object.metadata();
        let name = md.name.clone().unwrap_or_default();
        let ns = md.namespace.clone().unwrap_or_default();
        let v = self
            .registry
            .update(r, &ns, &name, encode(object)?, part, OPTS)
            .await
            .map_err(|e| api_error(e, K::KIND, &name))?;
        decode(v)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::master::apiserver::alloc::AllocConfig;
    use crate::master::store::embedded::EmbeddedStore;
    use k8s_openapi::api::core::v1::{ConfigMap, Pod};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

    #[tokio::test]
    async fn typed_round_trip() {
        let dir = tempfile::tempdir().unwrap();
        let store = EmbeddedStore::open(&dir.path().join("s.redb")).unwrap();
        let reg = Arc::new(Registry::new(Arc::new(store), AllocConfig::default()));
        reg.ensure_namespaces().await.unwrap();
        let api = InProcessCluster::new(reg);
        let mut w = api.watch::<ConfigMap>(Some("default"), "").await.unwrap();
        let cm = ConfigMap {
            metadata: ObjectMeta {
                name: Some("a".into()),
                namespace: Some("default".into()),
                ..Default::default()
            },
            ..Default::default()
        };
        let created = api.create(&cm).await.unwrap();
        assert!(created.metadata.uid.is_some());
        assert!(api.create(&cm).await.unwrap_err().is_already_exists());
        let mut stale = created.clone();
        api.update(&created).await.unwrap();
        stale.data = Some([("k".to_string(), "v".to_string())].into());
        assert!(api.update(&stale).await.unwrap_err().is_conflict());
        let l = api.list::<ConfigMap>(None).await.unwrap();
        assert_eq!(l.items.len(), 1);
        assert!(matches!(w.next().await.unwrap().unwrap(), WatchEvent::Added(_)));
        assert!(matches!(w.next().await.unwrap().unwrap(), WatchEvent::Modified(_)));
        let d = api.delete::<ConfigMap>(Some("default"), "a", &DeleteParams::default()).await.unwrap();
        assert!(matches!(d, Deleted::Gone(_)));
        assert!(api.get::<Pod>(Some("default"), "nope").await.unwrap_err().is_not_found());
    }
}
