//! The object registry: decoding, defaulting, validation, admission, metadata stamping, CAS
//! writes, patches, graceful deletion and watches over a [`Store`]. Shared by the HTTP handlers
//! and the in-process `ClusterApi`.

use super::alloc::{self, AllocConfig};
use super::resources::{self, ResourceInfo};
use super::status::ApiStatus;
use super::watchcache::{Item, WatchCache};
use crate::api::podsecurity::{self, ExistingPod, Policy};
use crate::api::selectors::{FieldSelector, LabelSelector};
use crate::api::strict::{self, DecodeError};
use crate::api::{defaults, meta, names, ssa, strategic, time, validation};
use crate::master::store::{EventKind, Revision, Store, StoreError};
use futures_util::StreamExt;
use futures_util::stream::BoxStream;
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::{Value, json};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

tokio::task_local! {
    /// Warnings for the current HTTP request (`Warning:` headers), e.g. unknown fields under
    /// `fieldValidation=Warn`. Absent outside a request scope.
    pub static WARNINGS: std::cell::RefCell<Vec<String>>;
}

/// How unknown fields in a request are treated (`fieldValidation`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum FieldValidation {
    #[default]
    Strict,
    Warn,
    Ignore,
}

impl FieldValidation {
    /// Parses the query parameter (absent = Warn, like the real server; we treat Warn as Ignore).
    pub fn from_query(v: Option<&str>) -> Self {
        match v {
            Some("Strict") => FieldValidation::Strict,
            Some("Ignore") => FieldValidation::Ignore,
            _ => FieldValidation::Warn,
        }
    }
}

/// Options of a write.
#[derive(Debug, Clone, Default)]
pub struct WriteOptions {
    pub dry_run: bool,
    pub validation: FieldValidation,
    /// The write comes through a subresource other than `status` (`scale`): Pod Security
    /// admission skips it, as upstream's does.
    pub subresource: bool,
    /// Who writes, for `metadata.managedFields` (`fieldManager`, else the User-Agent);
    /// `None`: the master itself ([`MASTER_MANAGER`]).
    pub manager: Option<Arc<str>>,
    /// The object's managedFields were computed by a server-side apply: keep them as they are.
    pub applied: bool,
}

/// The field manager of writes the master makes itself (controllers, bootstrap objects).
pub const MASTER_MANAGER: &str = "rkube-master";

/// The `kubectl.kubernetes.io/last-applied-configuration` annotation of client-side apply.
pub const LAST_APPLIED: &str = "kubectl.kubernetes.io/last-applied-configuration";

/// Options of a server-side apply.
#[derive(Debug, Clone, Default)]
pub struct ApplyOptions {
    /// `fieldManager` (required).
    pub manager: String,
    /// `force=true`: take over conflicting fields.
    pub force: bool,
}

/// Where pods find their ServiceAccount token, CA and namespace.
pub const SERVICE_ACCOUNT_MOUNT: &str = "/var/run/secrets/kubernetes.io/serviceaccount";
/// The ConfigMap holding the cluster CA in every namespace (`ca.crt`).
pub const ROOT_CA_CONFIGMAP: &str = "kube-root-ca.crt";

/// The `tracing` target of Pod Security audit-mode violations (`RUST_LOG=podsecurity_audit=info`).
pub const AUDIT_TARGET: &str = "podsecurity_audit";

/// Adds a warning to the current HTTP request (a `Warning: 299` header); a no-op in-process.
fn warn(msg: String) {
    let _ = WARNINGS.try_with(|w| w.borrow_mut().push(msg));
}

/// Options of a delete.
#[derive(Debug, Clone, Default)]
pub struct DeleteOptions {
    pub propagation: Option<String>,
    pub grace_period_seconds: Option<i64>,
    pub precondition_uid: Option<String>,
    pub precondition_rv: Option<String>,
    pub dry_run: bool,
}

/// The patch formats.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PatchType {
    Json,
    Merge,
    Strategic,
}

impl PatchType {
    /// From a Content-Type header.
    pub fn from_content_type(ct: &str) -> Option<Self> {
        let ct = ct.split(';').next().unwrap_or("").trim();
        match ct {
            "application/json-patch+json" => Some(PatchType::Json),
            "application/merge-patch+json" => Some(PatchType::Merge),
            "application/strategic-merge-patch+json" => Some(PatchType::Strategic),
            _ => None,
        }
    }
}

/// Which part of an object a write replaces.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Part {
    Main,
    Status,
}

/// A selector pair for list and watch.
#[derive(Debug, Clone, Default)]
pub struct Selectors {
    pub labels: LabelSelector,
    pub fields: FieldSelector,
}

impl Selectors {
    /// True if the object passes both selectors.
    pub fn matches(&self, obj: &Value) -> bool {
        self.labels.matches_object(obj) && self.fields.matches(obj)
    }
}

/// One watch event for clients.
#[derive(Debug, Clone)]
pub struct WatchItem {
    /// ADDED, MODIFIED or DELETED.
    pub kind: &'static str,
    pub object: Value,
    pub revision: Revision,
}

/// Stream of watch events; ends with an `Err` (Expired) when the watch fell behind.
pub type WatchItems = BoxStream<'static, Result<WatchItem, ApiStatus>>;

/// One page of a list ([`Registry::list_page`]).
#[derive(Debug)]
pub struct ListPage {
    pub items: Vec<Value>,
    /// The revision the whole list (every page) is read at.
    pub revision: Revision,
    /// `metadata.continue`: where the next page starts, when there is one.
    pub continue_token: Option<String>,
    /// `metadata.remainingItemCount`: objects after this page (only for lists without selectors).
    pub remaining: Option<usize>,
}

/// kube-apiserver's answer to a continue token whose revision was compacted.
const CONTINUE_EXPIRED: &str = "The provided continue parameter is too old to display a consistent list result. You can start a new list without the continue parameter.";

/// A continue token as kube-apiserver's: base64url of `{"v":"meta.k8s.io/v1","rv":N,"start":K}`,
/// `start` being the next key relative to the list's prefix.
fn encode_continue(revision: Revision, start: &str) -> String {
    use base64::Engine;
    let token = json!({"v": "meta.k8s.io/v1", "rv": revision, "start": start});
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(token.to_string())
}

/// The revision and start key of a continue token; 400 for anything else.
fn decode_continue(token: &str) -> Result<(Revision, String), ApiStatus> {
    use base64::Engine;
    let invalid = |why: &str| {
        ApiStatus::bad_request(format!("invalid continue token: continue key is not valid: {why}"))
    };
    let engine = &base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let raw = engine.decode(token.trim_end_matches('=')).map_err(|e| invalid(&e.to_string()))?;
    let v: Value = serde_json::from_slice(&raw).map_err(|e| invalid(&e.to_string()))?;
    if v.get("v").and_then(Value::as_str) != Some("meta.k8s.io/v1") {
        return Err(invalid("server does not recognize this encoded key"));
    }
    let rv = v.get("rv").and_then(Value::as_i64).filter(|rv| *rv > 0);
    let start = v.get("start").and_then(Value::as_str).filter(|s| !s.is_empty() && !s.starts_with('/'));
    match (rv, start) {
        (Some(rv), Some(start)) => Ok((rv, start.to_string())),
        (None, _) => Err(invalid("incorrect encoded start resourceVersion (version meta.k8s.io/v1)")),
        (_, None) => Err(invalid("encoded start key must not be empty or absolute")),
    }
}

/// How often a write that does not pin a resourceVersion is redone after losing a race with
/// another write (each lost race means another write succeeded, so this bounds only starvation;
/// kube-apiserver's GuaranteedUpdate has no bound at all). 100 was reached on a loaded machine by
/// one of eight writers racing 20 times each, whose 140 other writes can all win.
const RACE_RETRIES: usize = 1000;

/// The registry.
pub struct Registry {
    store: Arc<dyn Store>,
    alloc_cfg: AllocConfig,
    alloc_lock: tokio::sync::Mutex<()>,
    watch_cache: WatchCache,
}

fn roundtrip<T: DeserializeOwned + Serialize>(v: &Value) -> Result<(Value, Vec<String>), DecodeError> {
    let (typed, unknown) = strict::decode::<T>(v)?;
    let out = serde_json::to_value(&typed)
        .map_err(|e| DecodeError::Invalid { field: String::new(), message: e.to_string() })?;
    Ok((out, unknown))
}

/// Decodes into the typed struct of `kind` and back: prunes unknown fields and lists them.
fn decode_kind(kind: &str, v: &Value) -> Result<(Value, Vec<String>), DecodeError> {
    use k8s_openapi::api::{
        apps::v1 as apps, coordination::v1 as coord, core::v1 as core, discovery::v1 as disc,
        rbac::v1 as rbac,
    };
    match kind {
        "Pod" => roundtrip::<core::Pod>(v),
        "Service" => roundtrip::<core::Service>(v),
        "ConfigMap" => roundtrip::<core::ConfigMap>(v),
        "Secret" => roundtrip::<core::Secret>(v),
        "Node" => roundtrip::<core::Node>(v),
        "Namespace" => roundtrip::<core::Namespace>(v),
        "Event" => roundtrip::<core::Event>(v),
        "Endpoints" => roundtrip::<core::Endpoints>(v),
        "Deployment" => roundtrip::<apps::Deployment>(v),
        "ReplicaSet" => roundtrip::<apps::ReplicaSet>(v),
        "Lease" => roundtrip::<coord::Lease>(v),
        "EndpointSlice" => roundtrip::<disc::EndpointSlice>(v),
        "ServiceAccount" => roundtrip::<core::ServiceAccount>(v),
        "Role" => roundtrip::<rbac::Role>(v),
        "ClusterRole" => roundtrip::<rbac::ClusterRole>(v),
        "RoleBinding" => roundtrip::<rbac::RoleBinding>(v),
        "ClusterRoleBinding" => roundtrip::<rbac::ClusterRoleBinding>(v),
        _ => Ok((v.clone(), Vec::new())),
    }
}

/// Kinds whose `metadata.generation` tracks spec changes.
fn tracks_generation(kind: &str) -> bool {
    matches!(kind, "Pod" | "Service" | "Deployment" | "ReplicaSet")
}

/// Everything except metadata and status, to detect spec changes.
fn spec_part(obj: &Value) -> Value {
    let mut o = obj.clone();
    if let Some(m) = o.as_object_mut() {
        m.remove("metadata");
        m.remove("status");
        m.remove("apiVersion");
        m.remove("kind");
    }
    o
}

fn parse_value(kv_value: &[u8]) -> Result<Value, ApiStatus> {
    serde_json::from_slice(kv_value)
        .map_err(|e| ApiStatus::internal(format!("stored object is not JSON: {e}")))
}

fn with_rv(mut obj: Value, rev: Revision) -> Value {
    meta::set_str(&mut obj, "resourceVersion", &rev.to_string());
    obj
}

fn to_bytes(obj: &Value) -> Vec<u8> {
    let mut o = obj.clone();
    if let Some(m) = o.get_mut("metadata").and_then(Value::as_object_mut) {
        m.remove("resourceVersion");
    }
    serde_json::to_vec(&o).unwrap_or_default()
}

fn parse_rv(rv: &str) -> Result<Revision, ApiStatus> {
    rv.parse()
        .map_err(|_| ApiStatus::bad_request(format!("invalid resourceVersion {rv:?}: must be an integer")))
}

impl Registry {
    /// A registry over `store`.
    pub fn new(store: Arc<dyn Store>, alloc_cfg: AllocConfig) -> Self {
        let watch_cache = WatchCache::new(store.clone());
        Registry { store, alloc_cfg, alloc_lock: tokio::sync::Mutex::new(()), watch_cache }
    }

    /// This registry with a watch cache keeping `window` changes per resource (see
    /// [`WatchCache::with_window`]).
    pub fn with_watch_window(mut self, window: usize) -> Self {
        self.watch_cache = WatchCache::with_window(self.store.clone(), window);
        self
    }

    /// The underlying store.
    pub fn store(&self) -> &Arc<dyn Store> {
        &self.store
    }

    /// Creates the built-in namespaces if missing.
    pub async fn ensure_namespaces(&self) -> Result<(), ApiStatus> {
        let r = resources::find("", "v1", "namespaces").expect("namespaces");
        for ns in ["default", "kube-system", "kube-public", "kube-node-lease"] {
            let obj = json!({"apiVersion":"v1","kind":"Namespace","metadata":{"name": ns}});
            match self.create(r, "", obj, WriteOptions::default()).await {
                Ok(_) => {}
                Err(e) if e.reason == "AlreadyExists" => {}
                Err(e) => return Err(e),
            }
        }
        // Namespaces from before ServiceAccounts existed get their `default` account now, before
        // any controller creates pods in them.
        let (all, _) = self.list(r, None, &Selectors::default()).await?;
        for ns in all {
            if ns.pointer("/metadata/deletionTimestamp").is_none_or(Value::is_null) {
                self.ensure_default_service_account(meta::name(&ns)).await?;
            }
        }
        Ok(())
    }

    /// Creates the default RBAC roles and bindings that are missing (`cluster-admin` bound to
    /// `system:masters`, `admin`, `edit`, `view`, discovery and self-review access for everyone
    /// authenticated), and reconciles existing ones as kube-apiserver does at every start: unless
    /// annotated `rbac.authorization.kubernetes.io/autoupdate: "false"`, a role gets back the
    /// default rules it lacks (a newer version's additions included) and a binding its default
    /// subjects; what users added stays.
    pub async fn ensure_bootstrap_policy(&self) -> Result<(), ApiStatus> {
        let (roles, bindings) = super::rbac::bootstrap_policy();
        let cr = resources::find(super::rbac::GROUP, "v1", "clusterroles").expect("clusterroles");
        let crb =
            resources::find(super::rbac::GROUP, "v1", "clusterrolebindings").expect("clusterrolebindings");
        let objects = roles
            .iter()
            .map(|o| (cr, serde_json::to_value(o)))
            .chain(bindings.iter().map(|o| (crb, serde_json::to_value(o))));
        for (r, obj) in objects {
            let mut obj = obj.map_err(|e| ApiStatus::internal(e.to_string()))?;
            obj["apiVersion"] = json!(r.api_version());
            obj["kind"] = json!(r.kind);
            let name = meta::name(&obj).to_string();
            if let Some(kv) =
                self.store.get(&r.key("", &name)).await.map_err(|e| ApiStatus::internal(e.to_string()))?
            {
                let current = with_rv(parse_value(&kv.value)?, kv.mod_revision);
                if let Some(updated) = super::rbac::reconcile_bootstrap(&current, &obj) {
                    self.update(r, "", &name, updated, Part::Main, WriteOptions::default()).await?;
                    tracing::info!(kind = r.kind, name, "added the default RBAC rules or subjects it lacked");
                }
                continue;
            }
            match self.create(r, "", obj, WriteOptions::default()).await {
                Ok(_) => {}
                Err(e) if e.reason == "AlreadyExists" => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    /// Reads one object (with resourceVersion).
    pub async fn get(&self, r: &ResourceInfo, ns: &str, name: &str) -> Result<Value, ApiStatus> {
        let kv = self
            .store
            .get(&r.key(ns, name))
            .await
            .map_err(|e| ApiStatus::from_store(r, name, e))?
            .ok_or_else(|| ApiStatus::not_found(r, name))?;
        Ok(with_rv(parse_value(&kv.value)?, kv.mod_revision))
    }

    /// Lists objects in `ns` (or all namespaces / cluster-scoped) passing the selectors.
    pub async fn list(
        &self,
        r: &ResourceInfo,
        ns: Option<&str>,
        sel: &Selectors,
    ) -> Result<(Vec<Value>, Revision), ApiStatus> {
        let res = self.store.list(&r.prefix(ns)).await.map_err(|e| ApiStatus::internal(e.to_string()))?;
        let mut items = Vec::with_capacity(res.items.len());
        for kv in res.items {
            let obj = with_rv(parse_value(&kv.value)?, kv.mod_revision);
            if sel.matches(&obj) {
                items.push(obj);
            }
        }
        Ok((items, res.revision))
    }

    /// One page of a list, as kube-apiserver's chunked lists: at most `limit` matching objects in
    /// key order, and a continue token when more follow. A continue token reads on at the first
    /// page's revision (one consistent snapshot); once that revision is compacted it is 410
    /// Expired.
    pub async fn list_page(
        &self,
        r: &ResourceInfo,
        ns: Option<&str>,
        sel: &Selectors,
        limit: Option<usize>,
        continue_token: Option<&str>,
    ) -> Result<ListPage, ApiStatus> {
        let prefix = r.prefix(ns);
        let (res, start) = match continue_token {
            Some(token) => {
                let (rv, start) = decode_continue(token)?;
                let res = self.store.list_at(&prefix, rv).await.map_err(|e| match e {
                    StoreError::Compacted { .. } => ApiStatus::expired(CONTINUE_EXPIRED),
                    other => ApiStatus::internal(other.to_string()),
                })?;
                (res, format!("{prefix}{start}"))
            }
            None => {
                let res = self.store.list(&prefix).await.map_err(|e| ApiStatus::internal(e.to_string()))?;
                (res, prefix.clone())
            }
        };
        let limit = limit.filter(|n| *n > 0).unwrap_or(usize::MAX);
        let mut kvs = res.items.into_iter().filter(|kv| kv.key >= start);
        let mut items = Vec::new();
        let mut last_key = None;
        for kv in kvs.by_ref() {
            let obj = with_rv(parse_value(&kv.value)?, kv.mod_revision);
            if sel.matches(&obj) {
                items.push(obj);
                if items.len() == limit {
                    last_key = Some(kv.key);
                    break;
                }
            }
        }
        let mut page = ListPage { items, revision: res.revision, continue_token: None, remaining: None };
        let Some(last_key) = last_key else { return Ok(page) };
        let rest: Vec<_> = kvs.collect();
        let more = if sel.labels.requirements.is_empty() && sel.fields.terms.is_empty() {
            // Without selectors the count of what follows is known (remainingItemCount).
            page.remaining = Some(rest.len()).filter(|n| *n > 0);
            !rest.is_empty()
        } else {
            let mut more = false;
            for kv in &rest {
                if sel.matches(&with_rv(parse_value(&kv.value)?, kv.mod_revision)) {
                    more = true;
                    break;
                }
            }
            more
        };
        if more {
            let next = format!("{}\u{0}", last_key.strip_prefix(&prefix).unwrap_or(&last_key));
            page.continue_token = Some(encode_continue(res.revision, &next));
        }
        Ok(page)
    }

    /// Checks apiVersion/kind, converts extensions Deployments, decodes strictly and applies defaults.
    fn decode_input(
        &self,
        r: &ResourceInfo,
        mut obj: Value,
        opts: &WriteOptions,
    ) -> Result<Value, ApiStatus> {
        if !obj.is_object() {
            return Err(ApiStatus::bad_request("the request body must be a JSON object"));
        }
        let kind = obj.get("kind").and_then(Value::as_str).unwrap_or(r.kind).to_string();
        if kind != r.kind {
            return Err(ApiStatus::bad_request(format!(
                "the kind {kind:?} in the body does not match the resource {:?} ({})",
                r.plural, r.kind
            )));
        }
        let api_version = obj.get("apiVersion").and_then(Value::as_str).unwrap_or("").to_string();
        if r.group == "extensions" || api_version == "extensions/v1beta1" {
            defaults::convert_extensions_deployment(&mut obj);
        }
        let storage = r.storage();
        obj["apiVersion"] = json!(storage.api_version());
        obj["kind"] = json!(storage.kind);
        let (mut typed, unknown) = decode_kind(storage.kind, &obj).map_err(|e| {
            ApiStatus::bad_request(format!(
                "{} in version {:?} cannot be handled as a {}: {e}",
                storage.kind, storage.version, storage.kind
            ))
        })?;
        if opts.validation == FieldValidation::Warn {
            unknown.iter().for_each(|f| warn(format!("unknown field {f:?}")));
        }
        if opts.validation == FieldValidation::Strict && !unknown.is_empty() {
            let list: Vec<String> = unknown.iter().map(|f| format!("unknown field {f:?}")).collect();
            return Err(ApiStatus::bad_request(format!(
                "{} in version {:?} cannot be handled as a {}: strict decoding error: {}",
                storage.kind,
                storage.version,
                storage.kind,
                list.join(", ")
            )));
        }
        defaults::apply(storage.kind, &mut typed);
        Ok(typed)
    }

    fn validate(&self, r: &ResourceInfo, obj: &Value) -> Result<(), ApiStatus> {
        let mut errs = validation::metadata(r.storage().kind, obj);
        errs.extend(validation::spec(r.storage().kind, obj));
        if errs.is_empty() { Ok(()) } else { Err(ApiStatus::invalid(r.storage(), meta::name(obj), &errs)) }
    }

    async fn other_services(&self, ns_key: &str) -> Result<Vec<Value>, ApiStatus> {
        let svc = resources::find("", "v1", "services").expect("services");
        let (items, _) = self.list(svc, None, &Selectors::default()).await?;
        Ok(items
            .into_iter()
            .filter(|s| format!("{}/{}", meta::namespace(s), meta::name(s)) != ns_key)
            .collect())
    }

    /// Creates an object in namespace `ns` (from the path; "" for cluster-scoped).
    pub async fn create(
        &self,
        r: &ResourceInfo,
        ns: &str,
        obj: Value,
        opts: WriteOptions,
    ) -> Result<Value, ApiStatus> {
        let mut obj = self.decode_input(r, obj, &opts)?;
        let body_ns = meta::namespace(&obj).to_string();
        if r.namespaced {
            if !body_ns.is_empty() && body_ns != ns {
                return Err(ApiStatus::bad_request(
                    "the namespace of the provided object does not match the namespace sent on the request",
                ));
            }
            meta::set_str(&mut obj, "namespace", ns);
            let nsr = resources::find("", "v1", "namespaces").expect("namespaces");
            let Some(kv) =
                self.store.get(&nsr.key("", ns)).await.map_err(|e| ApiStatus::internal(e.to_string()))?
            else {
                return Err(ApiStatus::not_found(nsr, ns));
            };
            if parse_value(&kv.value)?.pointer("/metadata/deletionTimestamp").is_some_and(|v| !v.is_null()) {
                return Err(super::namespaces::terminating(r.storage(), meta::name(&obj), ns));
            }
        } else if let Some(m) = obj.get_mut("metadata").and_then(Value::as_object_mut) {
            m.remove("namespace");
        }
        if meta::name(&obj).is_empty()
            && let Some(prefix) =
                obj.pointer("/metadata/generateName").and_then(Value::as_str).map(String::from)
        {
            meta::set_str(&mut obj, "name", &format!("{prefix}{}", names::random_suffix()));
        }
        {
            let m = meta::metadata_mut(&mut obj);
            m.insert("uid".into(), json!(uuid::Uuid::new_v4().to_string()));
            m.insert("creationTimestamp".into(), json!(time::now_rfc3339()));
            for f in ["resourceVersion", "deletionTimestamp", "deletionGracePeriodSeconds", "selfLink"] {
                m.remove(f);
            }
            if !opts.applied {
                m.remove("managedFields");
            }
            if tracks_generation(r.storage().kind) {
                m.insert("generation".into(), json!(1));
            } else {
                m.remove("generation");
            }
        }
        let kind = r.storage().kind;
        // A new object's status, as kube-apiserver returns it (ReplicaSetStatus.replicas is not
        // omitempty: clients such as the Python client require it).
        match kind {
            "Deployment" => obj["status"] = json!({}),
            "ReplicaSet" => obj["status"] = json!({"replicas": 0}),
            _ => {}
        }
        if kind == "Pod" {
            self.admit_service_account(r, ns, &mut obj).await?;
        }
        self.validate(r, &obj)?;
        self.admit_pod_security(r, ns, &obj, None, &opts).await?;
        if !opts.applied {
            let scope = scope_of(r, Part::Main);
            let id = manager_id(r, &opts, ssa::Operation::Update, Part::Main);
            let entries = ssa::update(
                &json!({}),
                &ssa::tracked_part(&obj, scope),
                Vec::new(),
                &id,
                &time::now_rfc3339(),
            );
            set_managed(&mut obj, &entries);
        }
        let name = meta::name(&obj).to_string();
        let key = r.key(ns, &name);
        if kind == "Service" {
            let _guard = self.alloc_lock.lock().await;
            let others = self.other_services(&format!("{ns}/{name}")).await?;
            alloc::allocate(&mut obj, None, &others, &self.alloc_cfg)
                .map_err(|errs| ApiStatus::invalid(r.storage(), &name, &errs))?;
            if self.store.get(&key).await.map_err(|e| ApiStatus::internal(e.to_string()))?.is_some() {
                return Err(ApiStatus::already_exists(r.storage(), &name));
            }
            return self.put_new(r, &key, &name, obj, &opts).await;
        }
        let created = self.put_new(r, &key, &name, obj, &opts).await?;
        if kind == "Namespace" && !opts.dry_run {
            self.ensure_default_service_account(&name).await?;
        }
        Ok(created)
    }

    /// Creates the `default` ServiceAccount of namespace `ns` if it is missing (the
    /// serviceaccounts controller keeps it afterwards; doing it with the namespace means a pod
    /// created right after its namespace finds it).
    pub async fn ensure_default_service_account(&self, ns: &str) -> Result<(), ApiStatus> {
        let sa = resources::find("", "v1", "serviceaccounts").expect("serviceaccounts");
        let obj = json!({"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": "default", "namespace": ns}});
        match Box::pin(self.create(sa, ns, obj, WriteOptions::default())).await {
            Ok(_) => Ok(()),
            Err(e) if e.reason == "AlreadyExists" => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// kube-apiserver's ServiceAccount admission on pod creation: `serviceAccountName` defaults to
    /// `default` and must exist (403 otherwise); the account's imagePullSecrets are copied when the
    /// pod has none; unless automounting is off (the pod's setting beats the account's), a
    /// projected `kube-api-access-<5>` volume (a bound token, the `kube-root-ca.crt` ConfigMap and
    /// the namespace) is mounted read-only at [`SERVICE_ACCOUNT_MOUNT`] in every container and
    /// init container that has nothing mounted there.
    async fn admit_service_account(
        &self,
        r: &ResourceInfo,
        ns: &str,
        pod: &mut Value,
    ) -> Result<(), ApiStatus> {
        let mirror = pod.pointer("/metadata/annotations/kubernetes.io~1config.mirror").is_some();
        if mirror || !pod.get("spec").is_some_and(Value::is_object) {
            return Ok(());
        }
        let spec_str =
            |pod: &Value, f: &str| pod["spec"].get(f).and_then(Value::as_str).unwrap_or("").to_string();
        let mut sa_name = spec_str(pod, "serviceAccountName");
        if sa_name.is_empty() {
            sa_name = spec_str(pod, "serviceAccount");
        }
        if sa_name.is_empty() {
            sa_name = "default".into();
        }
        pod["spec"]["serviceAccountName"] = json!(sa_name);
        pod["spec"]["serviceAccount"] = json!(sa_name);
        let sar = resources::find("", "v1", "serviceaccounts").expect("serviceaccounts");
        let sa = match self.get(sar, ns, &sa_name).await {
            Ok(sa) => sa,
            Err(e) if e.code == 404 => {
                return Err(ApiStatus::forbidden(
                    r,
                    meta::name(pod),
                    &format!(
                        "error looking up service account {ns}/{sa_name}: serviceaccount \"{sa_name}\" not found"
                    ),
                ));
            }
            Err(e) => return Err(e),
        };
        let pulls =
            pod["spec"].get("imagePullSecrets").and_then(Value::as_array).is_some_and(|a| !a.is_empty());
        if let Some(sa_pulls) = sa.get("imagePullSecrets").filter(|_| !pulls) {
            pod["spec"]["imagePullSecrets"] = sa_pulls.clone();
        }
        let automount = pod["spec"]
            .get("automountServiceAccountToken")
            .and_then(Value::as_bool)
            .or_else(|| sa.get("automountServiceAccountToken").and_then(Value::as_bool))
            .unwrap_or(true);
        if !automount {
            return Ok(());
        }
        let volumes: Vec<Value> =
            pod["spec"].get("volumes").and_then(Value::as_array).cloned().unwrap_or_default();
        let existing = volumes
            .iter()
            .filter_map(|v| v.get("name").and_then(Value::as_str))
            .find(|n| n.starts_with("kube-api-access-"))
            .map(String::from);
        let volume_name =
            existing.clone().unwrap_or_else(|| format!("kube-api-access-{}", names::random_suffix()));
        let mount = json!({"name": volume_name, "readOnly": true, "mountPath": SERVICE_ACCOUNT_MOUNT});
        let mut needed = false;
        for list in ["initContainers", "containers"] {
            let Some(cs) = pod["spec"].get_mut(list).and_then(Value::as_array_mut) else { continue };
            for c in cs {
                let mounts =
                    c.as_object_mut().expect("container").entry("volumeMounts").or_insert_with(|| json!([]));
                let Some(ms) = mounts.as_array_mut() else { continue };
                if !ms
                    .iter()
                    .any(|m| m.get("mountPath").and_then(Value::as_str) == Some(SERVICE_ACCOUNT_MOUNT))
                {
                    ms.push(mount.clone());
                    needed = true;
                }
            }
        }
        if needed && existing.is_none() {
            let volume = json!({"name": volume_name, "projected": {"defaultMode": 420, "sources": [
                {"serviceAccountToken": {"expirationSeconds": 3607, "path": "token"}},
                {"configMap": {"name": ROOT_CA_CONFIGMAP, "items": [{"key": "ca.crt", "path": "ca.crt"}]}},
                {"downwardAPI": {"items": [{"path": "namespace",
                    "fieldRef": {"apiVersion": "v1", "fieldPath": "metadata.namespace"}}]}}]}});
            let mut all = volumes;
            all.push(volume);
            pod["spec"]["volumes"] = Value::Array(all);
        }
        Ok(())
    }

    async fn put_new(
        &self,
        r: &ResourceInfo,
        key: &str,
        name: &str,
        obj: Value,
        opts: &WriteOptions,
    ) -> Result<Value, ApiStatus> {
        if opts.dry_run {
            if self.store.get(key).await.map_err(|e| ApiStatus::internal(e.to_string()))?.is_some() {
                return Err(ApiStatus::already_exists(r.storage(), name));
            }
            return Ok(obj);
        }
        let rev = self
            .store
            .create(key, to_bytes(&obj))
            .await
            .map_err(|e| ApiStatus::from_store(r.storage(), name, e))?;
        Ok(with_rv(obj, rev))
    }

    /// The Pod Security policy of namespace `ns` (its labels; privileged when it has none).
    async fn namespace_policy(&self, ns: &str) -> Result<Policy, ApiStatus> {
        let nsr = resources::find("", "v1", "namespaces").expect("namespaces");
        let kv = self.store.get(&nsr.key("", ns)).await.map_err(|e| ApiStatus::internal(e.to_string()))?;
        let labels = match kv {
            Some(kv) => podsecurity::labels_of(&parse_value(&kv.value)?),
            None => Default::default(),
        };
        Ok(Policy::from_labels(&labels).0)
    }

    /// Pod Security admission of a main-resource write, run after validation as upstream's
    /// validating admission: Pods are enforced (on create, and on updates that change images or
    /// add containers), pod templates of workloads only warned and audited, and namespace labels
    /// validated, with warnings for existing pods when enforce tightens. Audit violations are
    /// logged (rkube has no audit log).
    async fn admit_pod_security(
        &self,
        r: &ResourceInfo,
        ns: &str,
        new: &Value,
        old: Option<&Value>,
        opts: &WriteOptions,
    ) -> Result<(), ApiStatus> {
        let kind = r.storage().kind;
        if opts.subresource {
            return Ok(());
        }
        if kind == "Namespace" {
            return self.admit_namespace_labels(r, new, old).await;
        }
        let (target, enforce) = match (kind, podsecurity::template_pointer(kind)) {
            ("Pod", _) => (Some(new), true),
            (_, Some(ptr)) => (new.pointer(ptr), false),
            _ => return Ok(()),
        };
        let Some(target) = target else { return Ok(()) };
        let policy = self.namespace_policy(ns).await?;
        let modes = [enforce.then_some(policy.enforce), Some(policy.warn), Some(policy.audit)];
        if modes.iter().flatten().all(|lv| lv.level == podsecurity::Level::Privileged) {
            return Ok(());
        }
        let Some((pod_meta, spec)) = podsecurity::pod_parts(target) else { return Ok(()) };
        if let Some((_, old_spec)) = old.filter(|_| kind == "Pod").and_then(podsecurity::pod_parts)
            && !podsecurity::significant_pod_update(&spec, &old_spec)
        {
            return Ok(());
        }
        let name = meta::name(new);
        let decision = podsecurity::evaluate(&policy, &pod_meta, &spec, enforce);
        if let Some(audit) = &decision.audit {
            tracing::info!(target: AUDIT_TARGET, namespace = ns, kind, name, violation = %audit, "pod security audit");
        }
        if let Some(denied) = decision.denied {
            return Err(ApiStatus::forbidden(r.storage(), name, &denied));
        }
        if let Some(w) = decision.warning {
            warn(w);
        }
        Ok(())
    }

    /// Namespace side of Pod Security admission: bad labels are 422 (on update only when they
    /// newly fail); a stricter enforce level warns about the existing pods that violate it.
    async fn admit_namespace_labels(
        &self,
        r: &ResourceInfo,
        new: &Value,
        old: Option<&Value>,
    ) -> Result<(), ApiStatus> {
        let name = meta::name(new);
        let (policy, errs) = Policy::from_labels(&podsecurity::labels_of(new));
        let Some(old) = old else {
            return if errs.is_empty() { Ok(()) } else { Err(ApiStatus::invalid(r.storage(), name, &errs)) };
        };
        let (old_policy, old_errs) = Policy::from_labels(&podsecurity::labels_of(old));
        if !errs.is_empty() && (old_errs.is_empty() || errs != old_errs) {
            return Err(ApiStatus::invalid(r.storage(), name, &errs));
        }
        if !podsecurity::enforce_tightened(&old_policy, &policy) {
            return Ok(());
        }
        let pods_r = resources::find("", "v1", "pods").expect("pods");
        let (items, _) = self.list(pods_r, Some(name), &Selectors::default()).await?;
        let pods: Vec<ExistingPod> = items
            .iter()
            .filter_map(podsecurity::pod_parts)
            .map(|(meta, spec)| ExistingPod { meta, spec })
            .collect();
        podsecurity::existing_pod_warnings(name, policy.enforce, &pods).into_iter().for_each(warn);
        Ok(())
    }

    /// Replaces an object (or its status) with CAS on `metadata.resourceVersion` when given.
    /// Without one the update is unconditional: as kube-apiserver's GuaranteedUpdate, a write
    /// that lands between our read and our compare-and-swap makes us redo the update on the new
    /// state instead of answering 409.
    pub async fn update(
        &self,
        r: &ResourceInfo,
        ns: &str,
        name: &str,
        obj: Value,
        part: Part,
        opts: WriteOptions,
    ) -> Result<Value, ApiStatus> {
        let unconditional = meta::resource_version(&obj).is_empty();
        let mut attempts = 0;
        loop {
            attempts += 1;
            match self.update_once(r, ns, name, obj.clone(), part, opts.clone()).await {
                Err(e) if unconditional && e.reason == "Conflict" && attempts < RACE_RETRIES => {
                    tokio::task::yield_now().await
                }
                other => return other,
            }
        }
    }

    /// One read-modify-CAS round of [`Registry::update`].
    async fn update_once(
        &self,
        r: &ResourceInfo,
        ns: &str,
        name: &str,
        obj: Value,
        part: Part,
        opts: WriteOptions,
    ) -> Result<Value, ApiStatus> {
        let key = r.key(ns, name);
        let kv = self
            .store
            .get(&key)
            .await
            .map_err(|e| ApiStatus::internal(e.to_string()))?
            .ok_or_else(|| ApiStatus::not_found(r.storage(), name))?;
        let current = parse_value(&kv.value)?;
        let request_managed = obj.pointer("/metadata/managedFields").cloned();
        let mut obj = self.decode_input(r, obj, &opts)?;
        let body_name = meta::name(&obj);
        if !body_name.is_empty() && body_name != name {
            return Err(ApiStatus::bad_request(format!(
                "the name of the object ({body_name}) does not match the name on the URL ({name})"
            )));
        }
        let rv = meta::resource_version(&obj).to_string();
        if !rv.is_empty() && parse_rv(&rv)? != kv.mod_revision {
            return Err(ApiStatus::conflict(r.storage(), name));
        }
        let mut new = match part {
            Part::Status => {
                let mut n = current.clone();
                n["status"] = obj.get("status").cloned().unwrap_or(json!({}));
                n
            }
            Part::Main => {
                // Metadata the client cannot change.
                {
                    let m = meta::metadata_mut(&mut obj);
                    let cm = current.get("metadata").cloned().unwrap_or(json!({}));
                    for f in [
                        "uid",
                        "creationTimestamp",
                        "deletionTimestamp",
                        "deletionGracePeriodSeconds",
                        "generation",
                        "namespace",
                    ] {
                        match cm.get(f) {
                            Some(v) => m.insert(f.into(), v.clone()),
                            None => m.remove(f),
                        };
                    }
                    m.insert("name".into(), json!(name));
                }
                if r.storage().kind == "Namespace" {
                    // Only `/finalize` changes a namespace's finalizers.
                    match current.pointer("/spec/finalizers") {
                        Some(f) => obj["spec"]["finalizers"] = f.clone(),
                        None => {
                            if let Some(spec) = obj.get_mut("spec").and_then(Value::as_object_mut) {
                                spec.remove("finalizers");
                            }
                        }
                    }
                }
                if r.storage().has_status() {
                    match current.get("status") {
                        Some(s) => obj["status"] = s.clone(),
                        None => {
                            if let Some(m) = obj.as_object_mut() {
                                m.remove("status");
                            }
                        }
                    }
                }
                if tracks_generation(r.storage().kind) && spec_part(&obj) != spec_part(&current) {
                    let g = meta::int_at(&current, "/metadata/generation").unwrap_or(1) + 1;
                    meta::metadata_mut(&mut obj).insert("generation".into(), json!(g));
                }
                obj
            }
        };
        self.track_update(r, part, &opts, &current, &mut new, request_managed);
        self.validate(r, &new)?;
        // Fields that never change once created.
        let immutable = match r.storage().kind {
            "Deployment" | "ReplicaSet" => Some(("/spec/selector", "spec.selector", "field is immutable")),
            "RoleBinding" | "ClusterRoleBinding" => Some(("/roleRef", "roleRef", "cannot change roleRef")),
            _ => None,
        };
        if let Some((pointer, field, message)) = immutable.filter(|_| part == Part::Main) {
            let now = new.pointer(pointer);
            if current.pointer(pointer) != now {
                let errs = [validation::FieldError::invalid(field, now.unwrap_or(&Value::Null), message)];
                return Err(ApiStatus::invalid(r.storage(), name, &errs));
            }
        }
        if part == Part::Main {
            self.admit_pod_security(r, ns, &new, Some(&current), &opts).await?;
        }
        if r.storage().kind == "Service" && part == Part::Main {
            let _guard = self.alloc_lock.lock().await;
            let others = self.other_services(&format!("{ns}/{name}")).await?;
            alloc::allocate(&mut new, Some(&current), &others, &self.alloc_cfg)
                .map_err(|errs| ApiStatus::invalid(r.storage(), name, &errs))?;
            return self.write_update(r, &key, name, new, kv.mod_revision, &opts).await;
        }
        self.write_update(r, &key, name, new, kv.mod_revision, &opts).await
    }

    async fn write_update(
        &self,
        r: &ResourceInfo,
        key: &str,
        name: &str,
        new: Value,
        expected: Revision,
        opts: &WriteOptions,
    ) -> Result<Value, ApiStatus> {
        if opts.dry_run {
            return Ok(with_rv(new, expected));
        }
        let terminating = new.pointer("/metadata/deletionTimestamp").is_some_and(|v| !v.is_null());
        if terminating && meta::finalizers(&new).is_empty() {
            let (rev, _) = self
                .store
                .delete(key, Some(expected))
                .await
                .map_err(|e| ApiStatus::from_store(r.storage(), name, e))?;
            return Ok(with_rv(new, rev));
        }
        let rev = self
            .store
            .update(key, to_bytes(&new), expected)
            .await
            .map_err(|e| ApiStatus::from_store(r.storage(), name, e))?;
        Ok(with_rv(new, rev))
    }

    /// Applies a patch (retrying on races when the patch does not pin a resourceVersion).
    #[allow(clippy::too_many_arguments)]
    pub async fn patch(
        &self,
        r: &ResourceInfo,
        ns: &str,
        name: &str,
        ptype: PatchType,
        patch: &Value,
        part: Part,
        opts: WriteOptions,
    ) -> Result<Value, ApiStatus> {
        let mut attempts = 0;
        loop {
            attempts += 1;
            let current = self.get(r, ns, name).await?;
            let current_rv = meta::resource_version(&current).to_string();
            let mut patched = apply_patch(&current, ptype, patch)?;
            let pinned = meta::resource_version(&patched) != current_rv;
            if !pinned {
                meta::set_str(&mut patched, "resourceVersion", &current_rv);
            }
            match self.update(r, ns, name, patched, part, opts.clone()).await {
                Err(e) if e.reason == "Conflict" && !pinned && attempts < RACE_RETRIES => continue,
                other => return other,
            }
        }
    }

    /// Keeps `metadata.managedFields` of `new` (replacing `current`) as kube-apiserver's field
    /// manager: a server-side apply brings its own entries; any other write moves the fields it
    /// changed to its manager. The request's list replaces the live one when it has entries (as
    /// kubectl's move from client-side apply does); `[]` or `[{}]` resets tracking; objects
    /// without managedFields stay untracked until an apply.
    fn track_update(
        &self,
        r: &ResourceInfo,
        part: Part,
        opts: &WriteOptions,
        current: &Value,
        new: &mut Value,
        request: Option<Value>,
    ) {
        if opts.applied {
            match request {
                Some(v) => {
                    meta::metadata_mut(new).insert("managedFields".into(), v);
                }
                None => set_managed(new, &[]),
            }
            return;
        }
        let live = ssa::decode_managed(current).unwrap_or_default();
        if live.is_empty() {
            set_managed(new, &[]);
            return;
        }
        let from_request = match request {
            _ if part == Part::Status || opts.subresource => None,
            Some(Value::Array(a))
                if a.is_empty() || (a.len() == 1 && a[0].as_object().is_some_and(|o| o.is_empty())) =>
            {
                Some(Vec::new())
            }
            Some(v) => {
                ssa::decode_managed(&json!({"metadata": {"managedFields": v}})).ok().filter(|e| !e.is_empty())
            }
            None => None,
        };
        let base = from_request.unwrap_or(live);
        let scope = scope_of(r, part);
        let id = manager_id(r, opts, ssa::Operation::Update, part);
        let entries = ssa::update(
            &ssa::tracked_part(current, scope),
            &ssa::tracked_part(new, scope),
            base,
            &id,
            &time::now_rfc3339(),
        );
        set_managed(new, &entries);
    }

    /// Server-side apply (`application/apply-patch+yaml`): merges `config` into the object (or
    /// creates it), prunes what the manager no longer applies, refuses other managers' fields
    /// with kube-apiserver's 409 unless forced, and writes only when something changed. Returns
    /// the object and whether it was created.
    #[allow(clippy::too_many_arguments)]
    pub async fn apply(
        &self,
        r: &ResourceInfo,
        ns: &str,
        name: &str,
        config: Value,
        part: Part,
        ao: &ApplyOptions,
        opts: WriteOptions,
    ) -> Result<(Value, bool), ApiStatus> {
        if !config.is_object() {
            return Err(ApiStatus::bad_request("the apply patch must be an object"));
        }
        let version = config.get("apiVersion").and_then(Value::as_str).unwrap_or("");
        if version != r.api_version() {
            return Err(ApiStatus::bad_request(format!(
                "Incorrect version specified in apply patch. Specified patch version: {version}, expected: {}",
                r.api_version()
            )));
        }
        let kind = config.get("kind").and_then(Value::as_str).unwrap_or("");
        if kind != r.kind {
            return Err(ApiStatus::bad_request(format!(
                "Incorrect kind specified in apply patch. Specified patch kind: {kind}, expected: {}",
                r.kind
            )));
        }
        if config.pointer("/metadata/managedFields").is_some_and(|v| !v.is_null()) {
            return Err(ApiStatus::bad_request("metadata.managedFields must be nil"));
        }
        let body_name = meta::name(&config);
        if body_name != name {
            return Err(ApiStatus::bad_request(format!(
                "the name of the object ({body_name}) does not match the name on the URL ({name})"
            )));
        }
        let mut config = config;
        if r.group == "extensions" {
            defaults::convert_extensions_deployment(&mut config);
        }
        let scope = scope_of(r, part);
        let id = manager_id(
            r,
            &WriteOptions { manager: Some(ao.manager.as_str().into()), ..opts.clone() },
            ssa::Operation::Apply,
            part,
        );
        let opts = WriteOptions { applied: true, manager: Some(ao.manager.as_str().into()), ..opts };
        for _ in 0..8 {
            let current = match self.get(r, ns, name).await {
                Ok(c) => Some(c),
                Err(e) if e.code == 404 && part == Part::Main => None,
                Err(e) => return Err(e),
            };
            let live = current.clone().unwrap_or_else(|| {
                json!({"apiVersion": r.api_version(), "kind": r.kind, "metadata": {"name": name, "namespace": ns}})
            });
            // Unknown fields: refused under Strict, otherwise dropped from what the manager owns.
            let mut config = config.clone();
            let object = format!("{ns}/{name}; {}, Kind={}", r.api_version(), r.kind);
            let (known, unknown) =
                decode_kind(r.storage().kind, &ssa::merge(&live, &config)).map_err(|e| {
                    ApiStatus::bad_request(format!("failed to create typed patch object ({object}): {e}"))
                })?;
            if !unknown.is_empty() {
                match opts.validation {
                    FieldValidation::Strict => {
                        let list: Vec<String> =
                            unknown.iter().map(|f| format!(".{f}: field not declared in schema")).collect();
                        return Err(ApiStatus::bad_request(format!(
                            "failed to create typed patch object ({object}): {}",
                            list.join("\n")
                        )));
                    }
                    FieldValidation::Warn => {
                        unknown.iter().for_each(|f| warn(format!("unknown field {f:?}")))
                    }
                    FieldValidation::Ignore => {}
                }
                config = ssa::retain_known(&config, &known);
            }
            let mut entries = match &current {
                Some(c) => ssa::decode_managed(c).unwrap_or_default(),
                None => Vec::new(),
            };
            if entries.is_empty()
                && let Some(c) = &current
            {
                // Fields set before the first apply belong to a manager of their own.
                let before = ssa::config_set(&ssa::tracked_part(c, scope));
                if !before.is_empty() {
                    entries.push(ssa::Entry {
                        id: ssa::ManagerId {
                            manager: "before-first-apply".into(),
                            operation: ssa::Operation::Update,
                            api_version: r.api_version(),
                            subresource: id.subresource.clone(),
                        },
                        time: Some(time::now_rfc3339()),
                        fields: before,
                    });
                }
            }
            let (live_t, config_t) = (ssa::tracked_part(&live, scope), ssa::tracked_part(&config, scope));
            let now = time::now_rfc3339();
            let applied = match ssa::apply(&live_t, &config_t, entries.clone(), &id, ao.force, &now) {
                Ok(a) => a,
                Err(c) => {
                    let last_applied = meta::annotation(&live, LAST_APPLIED)
                        .and_then(|s| serde_json::from_str::<Value>(s).ok())
                        .map(|v| ssa::tracked_part(&v, scope));
                    match last_applied {
                        Some(la)
                            if ao.manager == "kubectl"
                                && ssa::forgiven_by_last_applied(&live_t, &la, &c.0) =>
                        {
                            ssa::apply(&live_t, &config_t, entries, &id, true, &now)
                                .map_err(|c| apply_conflict(&c))?
                        }
                        _ => return Err(apply_conflict(&c)),
                    }
                }
            };
            // The merged tracked part over the live object's untracked part.
            let mut obj = live.clone();
            match scope {
                ssa::Scope::Status => {
                    obj["status"] = applied.object.get("status").cloned().unwrap_or(json!({}))
                }
                ssa::Scope::Main { has_status } => {
                    let mut merged = applied.object;
                    if !merged.is_object() {
                        merged = json!({});
                    }
                    for k in ["apiVersion", "kind"] {
                        merged[k] = live[k].clone();
                    }
                    if let Some(st) = live.get("status").filter(|_| has_status) {
                        merged["status"] = st.clone();
                    }
                    let md = meta::metadata_mut(&mut merged);
                    for f in ssa::UNTRACKED_METADATA {
                        if let Some(v) = live.get("metadata").and_then(|m| m.get(*f)) {
                            md.insert((*f).to_string(), v.clone());
                        }
                    }
                    obj = merged;
                }
            }
            if ao.manager == "kubectl" && meta::annotation(&live, LAST_APPLIED).is_some() {
                // kube-apiserver keeps an existing client-side apply annotation in step.
                let mut last = config.clone();
                if let Some(a) = last.pointer_mut("/metadata/annotations").and_then(Value::as_object_mut) {
                    a.remove(LAST_APPLIED);
                    if a.is_empty() {
                        last["metadata"].as_object_mut().map(|m| m.remove("annotations"));
                    }
                }
                let text = last.to_string();
                if let Some(a) = obj.pointer_mut("/metadata/annotations").and_then(Value::as_object_mut) {
                    a.insert(LAST_APPLIED.into(), json!(text));
                }
            }
            set_managed(&mut obj, &applied.entries);
            match &current {
                Some(c) if *c == obj => return Ok((obj, false)),
                Some(c) => {
                    let rv = meta::resource_version(c).to_string();
                    meta::set_str(&mut obj, "resourceVersion", &rv);
                    match self.update(r, ns, name, obj, part, opts.clone()).await {
                        Err(e) if e.reason == "Conflict" => continue,
                        other => return other.map(|o| (o, false)),
                    }
                }
                None => match self.create(r, ns, obj, opts.clone()).await {
                    Err(e) if e.reason == "AlreadyExists" => continue,
                    other => return other.map(|o| (o, true)),
                },
            }
        }
        Err(ApiStatus::conflict(r.storage(), name))
    }

    /// Deletes an object: immediately, or by setting deletionTimestamp (finalizers, graceful pods).
    /// Returns the object and whether it is gone.
    pub async fn delete(
        &self,
        r: &ResourceInfo,
        ns: &str,
        name: &str,
        opts: &DeleteOptions,
    ) -> Result<(Value, bool), ApiStatus> {
        let key = r.key(ns, name);
        for _ in 0..8 {
            let current = self.get(r, ns, name).await?;
            let rev = parse_rv(meta::resource_version(&current))?;
            if let Some(uid) = &opts.precondition_uid
                && uid != meta::uid(&current)
            {
                return Err(ApiStatus::conflict_msg(
                    r.storage(),
                    name,
                    &format!(
                        "Precondition failed: UID in precondition: {uid}, UID in object meta: {}",
                        meta::uid(&current)
                    ),
                ));
            }
            if let Some(prv) = &opts.precondition_rv
                && prv != meta::resource_version(&current)
            {
                return Err(ApiStatus::conflict(r.storage(), name));
            }
            let mut obj = current.clone();
            if r.storage().kind == "Namespace" {
                super::namespaces::check_deletable(r.storage(), name)?;
                if super::namespaces::mark_terminating(&mut obj) {
                    if obj == current || opts.dry_run {
                        return Ok((current, false));
                    }
                    match self.store.update(&key, to_bytes(&obj), rev).await {
                        Ok(new_rev) => return Ok((with_rv(obj, new_rev), false)),
                        Err(StoreError::Conflict { .. }) => continue,
                        Err(e) => return Err(ApiStatus::from_store(r.storage(), name, e)),
                    }
                }
            }
            let mut finalizers = meta::finalizers(&obj);
            match opts.propagation.as_deref() {
                Some("Foreground") if !finalizers.iter().any(|f| f == "foregroundDeletion") => {
                    finalizers.push("foregroundDeletion".into())
                }
                Some("Orphan") if !finalizers.iter().any(|f| f == "orphan") => {
                    finalizers.push("orphan".into())
                }
                _ => {}
            }
            let already = obj.pointer("/metadata/deletionTimestamp").is_some_and(|v| !v.is_null());
            let graceful = r.storage().kind == "Pod" && {
                let grace = opts
                    .grace_period_seconds
                    .or_else(|| meta::int_at(&obj, "/spec/terminationGracePeriodSeconds"))
                    .unwrap_or(30);
                let bound = !meta::str_at(&obj, "/spec/nodeName").unwrap_or("").is_empty();
                let finished = matches!(meta::str_at(&obj, "/status/phase"), Some("Succeeded" | "Failed"));
                if grace > 0 && bound && !finished {
                    if !already {
                        let when = SystemTime::now() + Duration::from_secs(grace as u64);
                        let m = meta::metadata_mut(&mut obj);
                        m.insert("deletionTimestamp".into(), json!(time::format_rfc3339(when)));
                        m.insert("deletionGracePeriodSeconds".into(), json!(grace));
                    }
                    true
                } else {
                    false
                }
            };
            if !finalizers.is_empty() || graceful {
                if !already {
                    let m = meta::metadata_mut(&mut obj);
                    m.entry("deletionTimestamp").or_insert_with(|| json!(time::now_rfc3339()));
                    m.entry("deletionGracePeriodSeconds").or_insert(json!(0));
                }
                meta::metadata_mut(&mut obj).insert("finalizers".into(), json!(finalizers));
                if finalizers.is_empty() {
                    meta::metadata_mut(&mut obj).remove("finalizers");
                }
                if obj == current || opts.dry_run {
                    return Ok((current, false));
                }
                match self.store.update(&key, to_bytes(&obj), rev).await {
                    Ok(new_rev) => return Ok((with_rv(obj, new_rev), false)),
                    Err(StoreError::Conflict { .. }) => continue,
                    Err(e) => return Err(ApiStatus::from_store(r.storage(), name, e)),
                }
            }
            if opts.dry_run {
                return Ok((current, true));
            }
            match self.store.delete(&key, Some(rev)).await {
                Ok((del_rev, _)) => {
                    if r.storage().kind == "Node" {
                        self.forget_node_password(name).await;
                    }
                    return Ok((with_rv(current, del_rev), true));
                }
                Err(StoreError::Conflict { .. }) => continue,
                Err(e) => return Err(ApiStatus::from_store(r.storage(), name, e)),
            }
        }
        Err(ApiStatus::conflict(r.storage(), name))
    }

    /// `PUT namespaces/<name>/finalize`: replaces `spec.finalizers` (nothing else); a terminating
    /// namespace left without finalizers is deleted.
    pub async fn finalize_namespace(&self, name: &str, body: &Value) -> Result<Value, ApiStatus> {
        let r = resources::find("", "v1", "namespaces").expect("namespaces");
        let key = r.key("", name);
        for _ in 0..8 {
            let current = self.get(r, "", name).await?;
            let rev = parse_rv(meta::resource_version(&current))?;
            let want_rv = meta::resource_version(body);
            if !want_rv.is_empty() && want_rv != meta::resource_version(&current) {
                return Err(ApiStatus::conflict(r, name));
            }
            let mut obj = current.clone();
            obj["spec"]["finalizers"] = body.pointer("/spec/finalizers").cloned().unwrap_or(json!([]));
            let terminating = obj.pointer("/metadata/deletionTimestamp").is_some_and(|v| !v.is_null());
            let empty = obj["spec"]["finalizers"].as_array().is_none_or(Vec::is_empty);
            let result = if terminating && empty && meta::finalizers(&obj).is_empty() {
                self.store.delete(&key, Some(rev)).await.map(|(rev, _)| rev)
            } else {
                self.store.update(&key, to_bytes(&obj), rev).await
            };
            match result {
                Ok(new_rev) => return Ok(with_rv(obj, new_rev)),
                Err(StoreError::Conflict { .. }) => continue,
                Err(e) => return Err(ApiStatus::from_store(r, name, e)),
            }
        }
        Err(ApiStatus::conflict(r, name))
    }

    /// A deleted Node's join identity (its node-password Secret) goes with it, so the name can
    /// join again with new credentials.
    async fn forget_node_password(&self, node: &str) {
        let secrets = resources::find("", "v1", "secrets").expect("secrets");
        let (ns, name) = super::nodecert::password_secret(node);
        if let Err(e) = self.store.delete(&secrets.key(ns, &name), None).await
            && !matches!(e, StoreError::NotFound { .. })
        {
            tracing::warn!(node, error = %e, "deleting the node's password secret failed");
        }
    }

    /// Binds a pod to a node: sets spec.nodeName and the PodScheduled condition.
    pub async fn bind(&self, ns: &str, pod: &str, node: &str) -> Result<Value, ApiStatus> {
        let r = resources::find("", "v1", "pods").expect("pods");
        for _ in 0..8 {
            let mut obj = self.get(r, ns, pod).await?;
            let rev = parse_rv(meta::resource_version(&obj))?;
            let bound = meta::str_at(&obj, "/spec/nodeName").unwrap_or("");
            if !bound.is_empty() {
                return Err(ApiStatus::conflict_msg(
                    r,
                    pod,
                    &format!("pod {pod} is already assigned to node {bound:?}"),
                ));
            }
            if obj.pointer("/metadata/deletionTimestamp").is_some_and(|v| !v.is_null()) {
                return Err(ApiStatus::conflict_msg(
                    r,
                    pod,
                    "pod is being deleted, cannot be assigned to a host",
                ));
            }
            obj["spec"]["nodeName"] = json!(node);
            let now = time::now_rfc3339();
            let cond =
                json!({"type":"PodScheduled","status":"True","lastProbeTime":null,"lastTransitionTime":now});
            let status = obj.as_object_mut().expect("object").entry("status").or_insert_with(|| json!({}));
            let conds =
                status.as_object_mut().expect("object").entry("conditions").or_insert_with(|| json!([]));
            if let Some(a) = conds.as_array_mut() {
                a.retain(|c| c.get("type").and_then(Value::as_str) != Some("PodScheduled"));
                a.push(cond);
            }
            match self.store.update(&r.key(ns, pod), to_bytes(&obj), rev).await {
                Ok(new_rev) => return Ok(with_rv(obj, new_rev)),
                Err(StoreError::Conflict { .. }) => continue,
                Err(e) => return Err(ApiStatus::from_store(r, pod, e)),
            }
        }
        Err(ApiStatus::conflict(r, pod))
    }

    /// Watches from `rv` ("" or "0": current objects first as ADDED).
    pub async fn watch(
        &self,
        r: &ResourceInfo,
        ns: Option<&str>,
        rv: &str,
        sel: Selectors,
    ) -> Result<WatchItems, ApiStatus> {
        self.watch_with(r, ns, rv, sel, false).await
    }

    /// [`Registry::watch`], with periodic BOOKMARK items when `bookmarks` (`allowWatchBookmarks`).
    pub async fn watch_with(
        &self,
        r: &ResourceInfo,
        ns: Option<&str>,
        rv: &str,
        sel: Selectors,
        bookmarks: bool,
    ) -> Result<WatchItems, ApiStatus> {
        let (initial, from) = if rv.is_empty() || rv == "0" {
            let (items, rev) = self.list(r, ns, &sel).await?;
            (items, rev)
        } else {
            (Vec::new(), parse_rv(rv)?)
        };
        let initial = futures_util::stream::iter(initial.into_iter().map(|o| {
            let revision = parse_rv(meta::resource_version(&o)).unwrap_or(0);
            Ok(WatchItem { kind: "ADDED", object: o, revision })
        }));
        let expired = |e: StoreError| match e {
            StoreError::Compacted { .. } => ApiStatus::expired(e.to_string()),
            other => ApiStatus::internal(other.to_string()),
        };
        let index = sel.fields.pinned("spec.nodeName").map(str::to_string);
        let cached = self
            .watch_cache
            .subscribe(&r.prefix(None), &r.prefix(ns), from, index.as_deref(), bookmarks)
            .await
            .map_err(expired)?;
        if let Some(sub) = cached {
            let (kind, api_version) = (r.kind, r.api_version());
            let live = futures_util::stream::unfold(sub, |mut sub| async move {
                let change = sub.next().await?;
                Some((change, sub))
            })
            .filter_map(move |change| {
                let out = match change {
                    Err(e) => Some(Err(expired(e))),
                    Ok(Item::Change(c)) => classify(c.kind, &c.object, c.prev.as_ref(), &sel)
                        .map(|kind| Ok(WatchItem { kind, object: c.object.clone(), revision: c.revision })),
                    Ok(Item::Progress(revision)) => Some(Ok(WatchItem {
                        kind: "BOOKMARK",
                        object: json!({"kind": kind, "apiVersion": api_version,
                            "metadata": {"resourceVersion": revision.to_string()}}),
                        revision,
                    })),
                };
                futures_util::future::ready(out)
            });
            return Ok(initial.chain(live).boxed());
        }
        let stream = self.store.watch(&r.prefix(ns), from).await.map_err(expired)?;
        let sel = Arc::new(sel);
        let live = stream.filter_map(move |ev| {
            let sel = sel.clone();
            async move {
                let ev = match ev {
                    Ok(ev) => ev,
                    Err(e) => return Some(Err(expired(e))),
                };
                let obj = serde_json::from_slice::<Value>(&ev.value).ok()?;
                let obj = with_rv(obj, ev.revision);
                let prev = ev.prev_value.as_deref().and_then(|p| serde_json::from_slice::<Value>(p).ok());
                let kind = classify(ev.kind, &obj, prev.as_ref(), &sel)?;
                Some(Ok(WatchItem { kind, object: obj, revision: ev.revision }))
            }
        });
        Ok(initial.chain(live).boxed())
    }
}

/// What a change looks like to a watch with `sel`: an object entering the selection is ADDED, one
/// leaving it DELETED; `None` when the watch does not see it.
fn classify(kind: EventKind, obj: &Value, prev: Option<&Value>, sel: &Selectors) -> Option<&'static str> {
    let prev_match = prev.is_some_and(|p| sel.matches(p));
    let now_match = sel.matches(obj);
    match kind {
        EventKind::Deleted if prev_match || now_match => Some("DELETED"),
        EventKind::Created if now_match => Some("ADDED"),
        EventKind::Deleted | EventKind::Created => None,
        EventKind::Updated => match (prev_match, now_match) {
            (true, true) => Some("MODIFIED"),
            (false, true) => Some("ADDED"),
            (true, false) => Some("DELETED"),
            (false, false) => None,
        },
    }
}

/// The part of an object a write through `part` owns.
fn scope_of(r: &ResourceInfo, part: Part) -> ssa::Scope {
    match part {
        Part::Main => ssa::Scope::Main { has_status: r.storage().has_status() },
        Part::Status => ssa::Scope::Status,
    }
}

/// The managedFields identity of a write.
fn manager_id(
    r: &ResourceInfo,
    opts: &WriteOptions,
    operation: ssa::Operation,
    part: Part,
) -> ssa::ManagerId {
    let subresource = match part {
        Part::Status => "status",
        Part::Main if opts.subresource => "scale",
        Part::Main => "",
    };
    ssa::ManagerId {
        manager: opts.manager.as_deref().unwrap_or(MASTER_MANAGER).to_string(),
        operation,
        api_version: r.api_version(),
        subresource: subresource.into(),
    }
}

/// Writes `entries` as `metadata.managedFields` (none: the field is removed).
fn set_managed(obj: &mut Value, entries: &[ssa::Entry]) {
    let md = meta::metadata_mut(obj);
    if entries.is_empty() {
        md.remove("managedFields");
    } else {
        md.insert("managedFields".into(), ssa::encode_managed(entries));
    }
}

/// kube-apiserver's 409 for an apply conflict: one cause per manager and field.
fn apply_conflict(c: &ssa::Conflicts) -> ApiStatus {
    let causes: Vec<Value> = c
        .0
        .iter()
        .map(|c| {
            json!({"reason": "FieldManagerConflict", "message": format!("conflict with {}", c.manager.describe()),
                "field": crate::api::fieldpath::path_string(&c.path)})
        })
        .collect();
    let mut s = ApiStatus::conflict_raw(c.to_string());
    s.details = Some(json!({"causes": causes}));
    s
}

/// Applies a patch of `ptype` to `current`.
pub fn apply_patch(current: &Value, ptype: PatchType, patch: &Value) -> Result<Value, ApiStatus> {
    match ptype {
        PatchType::Merge => {
            let mut out = current.clone();
            json_patch::merge(&mut out, patch);
            Ok(out)
        }
        PatchType::Json => {
            let ops: json_patch::Patch = serde_json::from_value(patch.clone())
                .map_err(|e| ApiStatus::bad_request(format!("invalid JSON patch: {e}")))?;
            let mut out = current.clone();
            json_patch::patch(&mut out, &ops)
                .map_err(|e| ApiStatus::bad_request(format!("the JSON patch could not be applied: {e}")))?;
            Ok(out)
        }
        PatchType::Strategic => {
            strategic::apply(current, patch).map_err(|e| ApiStatus::bad_request(e.to_string()))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::master::store::embedded::EmbeddedStore;

    async fn registry(dir: &tempfile::TempDir) -> Registry {
        let store = EmbeddedStore::open(&dir.path().join("s.redb")).unwrap();
        let reg = Registry::new(Arc::new(store), AllocConfig::default());
        reg.ensure_namespaces().await.unwrap();
        reg
    }

    fn rs(replicas: i64) -> Value {
        json!({"apiVersion":"apps/v1","kind":"ReplicaSet","metadata":{"name":"web"},
            "spec":{"replicas":replicas,"selector":{"matchLabels":{"app":"w"}},
            "template":{"metadata":{"labels":{"app":"w"}},"spec":{"containers":[{"name":"c","image":"nginx:1.10"}]}}}})
    }

    #[tokio::test]
    async fn create_update_patch_delete() {
        let dir = tempfile::tempdir().unwrap();
        let reg = registry(&dir).await;
        let r = resources::find("apps", "v1", "replicasets").unwrap();
        let o = WriteOptions::default();
        let created = reg.create(r, "default", rs(3), o.clone()).await.unwrap();
        assert_eq!(created["metadata"]["generation"], 1);
        assert_eq!(created["metadata"]["namespace"], "default");
        assert_eq!(reg.create(r, "default", rs(3), o.clone()).await.unwrap_err().code, 409);
        let mut bad = rs(3);
        bad["spec"]["bogus"] = json!(1);
        let e = reg.create(r, "default", bad, o.clone()).await.unwrap_err();
        assert_eq!(e.code, 400);
        assert!(e.message.contains("unknown field \"spec.bogus\""), "{}", e.message);
        let e = reg.create(r, "default", rs(-1), o.clone()).await.unwrap_err();
        assert_eq!(e.code, 422);
        // Stale resourceVersion.
        let mut stale = created.clone();
        stale["spec"]["replicas"] = json!(4);
        let updated = reg.update(r, "default", "web", stale.clone(), Part::Main, o.clone()).await.unwrap();
        assert_eq!(updated["metadata"]["generation"], 2);
        assert_eq!(
            reg.update(r, "default", "web", stale, Part::Main, o.clone()).await.unwrap_err().reason,
            "Conflict"
        );
        // Status writes do not bump generation and main writes keep status.
        let mut st = updated.clone();
        st["status"] = json!({"replicas": 4});
        let st = reg.update(r, "default", "web", st, Part::Status, o.clone()).await.unwrap();
        assert_eq!(st["metadata"]["generation"], 2);
        let sel = json!({"spec":{"selector":{"matchLabels":{"app":"x"}},"template":{"metadata":{"labels":{"app":"x"}}}}});
        let e =
            reg.patch(r, "default", "web", PatchType::Merge, &sel, Part::Main, o.clone()).await.unwrap_err();
        assert!(
            e.message.contains("spec.selector") && e.message.contains("field is immutable"),
            "{}",
            e.message
        );
        let p = reg
            .patch(
                r,
                "default",
                "web",
                PatchType::Strategic,
                &json!({"spec":{"replicas":5}}),
                Part::Main,
                o.clone(),
            )
            .await
            .unwrap();
        assert_eq!(p["status"]["replicas"], 4);
        assert_eq!(p["spec"]["replicas"], 5);
        let (_, gone) = reg.delete(r, "default", "web", &DeleteOptions::default()).await.unwrap();
        assert!(gone);
        assert_eq!(reg.get(r, "default", "web").await.unwrap_err().code, 404);
        assert_eq!(reg.create(r, "nope", rs(1), o.clone()).await.unwrap_err().code, 404);
    }

    #[tokio::test]
    async fn pages_of_one_snapshot_and_their_tokens() {
        let dir = tempfile::tempdir().unwrap();
        let reg = registry(&dir).await;
        let r = resources::find("", "v1", "configmaps").unwrap();
        let o = WriteOptions::default();
        for i in 0..7 {
            let cm = json!({"apiVersion":"v1","kind":"ConfigMap","metadata":{"name": format!("c{i}")}});
            reg.create(r, "default", cm, o.clone()).await.unwrap();
        }
        let all = Selectors::default();
        let names = |p: &ListPage| p.items.iter().map(|o| meta::name(o).to_string()).collect::<Vec<_>>();
        let first = reg.list_page(r, Some("default"), &all, Some(3), None).await.unwrap();
        assert_eq!((names(&first), first.remaining), (vec!["c0".into(), "c1".into(), "c2".into()], Some(4)));
        let token = first.continue_token.clone().unwrap();
        assert_eq!(decode_continue(&token).unwrap(), (first.revision, "c2\u{0}".to_string()));
        // Written after the first page, deleted too: the next pages still show the first page's state.
        reg.delete(r, "default", "c4", &DeleteOptions::default()).await.unwrap();
        let late = json!({"apiVersion":"v1","kind":"ConfigMap","metadata":{"name":"c5a"}});
        reg.create(r, "default", late, o.clone()).await.unwrap();
        let second = reg.list_page(r, Some("default"), &all, Some(3), Some(&token)).await.unwrap();
        assert_eq!(names(&second), ["c3", "c4", "c5"]);
        assert_eq!(second.revision, first.revision);
        let last =
            reg.list_page(r, Some("default"), &all, Some(3), second.continue_token.as_deref()).await.unwrap();
        assert_eq!((names(&last), last.continue_token, last.remaining), (vec!["c6".into()], None, None));
        // A compacted snapshot is 410 Expired; a token that is not one is 400.
        reg.store().compact(reg.store().current_revision().await.unwrap()).await.unwrap();
        let e = reg.list_page(r, Some("default"), &all, Some(3), Some(&token)).await.unwrap_err();
        assert_eq!((e.code, e.message.as_str()), (410, CONTINUE_EXPIRED));
        for bad in ["garbage", &encode_continue(0, "x"), &encode_continue(5, "/registry/secrets/")] {
            let e = reg.list_page(r, Some("default"), &all, Some(3), Some(bad)).await.unwrap_err();
            assert_eq!(e.code, 400, "{bad}: {}", e.message);
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn unconditional_updates_retry_lost_races() {
        let dir = tempfile::tempdir().unwrap();
        let reg = Arc::new(registry(&dir).await);
        let r = resources::find("", "v1", "configmaps").unwrap();
        let cm = |v: String| json!({"apiVersion":"v1","kind":"ConfigMap","metadata":{"name":"hot"},"data":{"v": v}});
        let start = reg.create(r, "default", cm("0".into()), WriteOptions::default()).await.unwrap();
        let tasks: Vec<_> = (0..8)
            .map(|w| {
                let reg = reg.clone();
                tokio::spawn(async move {
                    for i in 0..20 {
                        let o = WriteOptions::default();
                        reg.update(r, "default", "hot", cm(format!("{w}-{i}")), Part::Main, o).await.unwrap();
                    }
                })
            })
            .collect();
        for t in tasks {
            t.await.unwrap();
        }
        let now = reg.get(r, "default", "hot").await.unwrap();
        let writes = parse_rv(meta::resource_version(&now)).unwrap()
            - parse_rv(meta::resource_version(&start)).unwrap();
        assert_eq!(writes, 160, "one store write per update");
    }

    #[tokio::test]
    async fn finalizers_graceful_pods_and_watch() {
        let dir = tempfile::tempdir().unwrap();
        let reg = registry(&dir).await;
        let pods = resources::find("", "v1", "pods").unwrap();
        let o = WriteOptions::default();
        let pod = json!({"apiVersion":"v1","kind":"Pod","metadata":{"generateName":"p-","labels":{"a":"b"}},
            "spec":{"containers":[{"name":"c","image":"busybox"}]}});
        let (_, rev0) = reg.list(pods, Some("default"), &Selectors::default()).await.unwrap();
        let mut w = reg
            .watch(
                pods,
                Some("default"),
                &rev0.to_string(),
                Selectors { labels: LabelSelector::parse("a=b").unwrap(), ..Default::default() },
            )
            .await
            .unwrap();
        let p = reg.create(pods, "default", pod, o.clone()).await.unwrap();
        let name = meta::name(&p).to_string();
        assert!(name.starts_with("p-") && name.len() == 7);
        assert_eq!(p["status"]["phase"], "Pending");
        reg.bind("default", &name, "n1").await.unwrap();
        assert_eq!(reg.bind("default", &name, "n2").await.unwrap_err().code, 409);
        let (obj, gone) = reg.delete(pods, "default", &name, &DeleteOptions::default()).await.unwrap();
        assert!(!gone);
        assert!(obj["metadata"]["deletionTimestamp"].is_string());
        let (_, gone) = reg
            .delete(
                pods,
                "default",
                &name,
                &DeleteOptions { grace_period_seconds: Some(0), ..Default::default() },
            )
            .await
            .unwrap();
        assert!(gone);
        let kinds: Vec<&str> = w.by_ref().take(4).map(|i| i.unwrap().kind).collect().await;
        assert_eq!(kinds, vec!["ADDED", "MODIFIED", "MODIFIED", "DELETED"]);
        // A watch from a compacted revision is Expired (410).
        let now = reg.store().current_revision().await.unwrap();
        reg.store().compact(now).await.unwrap();
        let e = reg.watch(pods, None, "1", Selectors::default()).await.err().unwrap();
        assert_eq!((e.code, e.reason), (410, "Expired"));
        // Foreground deletion waits for the finalizer to go.
        let cms = resources::find("", "v1", "configmaps").unwrap();
        reg.create(cms, "default", json!({"metadata":{"name":"c"}}), o.clone()).await.unwrap();
        let fg = DeleteOptions { propagation: Some("Foreground".into()), ..Default::default() };
        let (obj, gone) = reg.delete(cms, "default", "c", &fg).await.unwrap();
        assert!(!gone);
        assert_eq!(obj["metadata"]["finalizers"], json!(["foregroundDeletion"]));
        let mut done = obj.clone();
        done["metadata"]["finalizers"] = json!([]);
        reg.update(cms, "default", "c", done, Part::Main, o.clone()).await.unwrap();
        assert_eq!(reg.get(cms, "default", "c").await.unwrap_err().code, 404);
    }

    /// Runs `f` inside a request scope and returns its result with the warnings it raised.
    async fn with_warnings<T>(f: impl std::future::Future<Output = T>) -> (T, Vec<String>) {
        WARNINGS.scope(Default::default(), async { (f.await, WARNINGS.with(|w| w.take())) }).await
    }

    #[tokio::test]
    async fn pod_security_admission() {
        let dir = tempfile::tempdir().unwrap();
        let reg = registry(&dir).await;
        let (pods, nss) =
            (resources::find("", "v1", "pods").unwrap(), resources::find("", "v1", "namespaces").unwrap());
        let o = WriteOptions::default();
        let ns = |name: &str, labels: Value| json!({"metadata":{"name":name,"labels":labels}});
        let pod = |name: &str, spec: Value| json!({"metadata":{"name":name},"spec":spec});
        let host = json!({"hostNetwork":true,"containers":[{"name":"c","image":"busybox"}]});
        let e = reg
            .create(nss, "", ns("bad", json!({"pod-security.kubernetes.io/enforce":"strict"})), o.clone())
            .await
            .unwrap_err();
        assert_eq!(e.code, 422);
        assert!(
            e.message
                .contains("metadata.labels[pod-security.kubernetes.io/enforce]: Invalid value: \"strict\""),
            "{}",
            e.message
        );

        // enforce: refused with 403 and nothing stored; a compliant pod is accepted.
        reg.create(
            nss,
            "",
            ns("strict", json!({"pod-security.kubernetes.io/enforce":"baseline"})),
            o.clone(),
        )
        .await
        .unwrap();
        let e = reg.create(pods, "strict", pod("h", host.clone()), o.clone()).await.unwrap_err();
        assert_eq!((e.code, e.reason), (403, "Forbidden"));
        assert_eq!(
            e.message,
            "pods \"h\" is forbidden: violates PodSecurity \"baseline:latest\": host namespaces (hostNetwork=true)"
        );
        assert_eq!(reg.get(pods, "strict", "h").await.unwrap_err().code, 404);
        let ok = pod("ok", json!({"containers":[{"name":"c","image":"busybox"}]}));
        let created = reg.create(pods, "strict", ok, o.clone()).await.unwrap();
        // Updates that change no image are not re-checked; a new image is.
        let mut relabel = created.clone();
        relabel["metadata"]["labels"] = json!({"x":"y"});
        let relabelled = reg.update(pods, "strict", "ok", relabel, Part::Main, o.clone()).await.unwrap();
        let mut swap = relabelled.clone();
        swap["spec"]["containers"][0]["image"] = json!("nginx");
        swap["spec"]["hostNetwork"] = json!(true);
        assert_eq!(
            reg.update(pods, "strict", "ok", swap, Part::Main, o.clone()).await.unwrap_err().code,
            403
        );

        // warn: created, with the warning; workloads are warned, never refused.
        reg.create(nss, "", ns("soft", json!({"pod-security.kubernetes.io/warn":"baseline"})), o.clone())
            .await
            .unwrap();
        let (res, w) = with_warnings(reg.create(pods, "soft", pod("h", host.clone()), o.clone())).await;
        res.unwrap();
        assert_eq!(w, ["would violate PodSecurity \"baseline:latest\": host namespaces (hostNetwork=true)"]);
        let rs_r = resources::find("apps", "v1", "replicasets").unwrap();
        let mut bad_rs = rs(1);
        bad_rs["spec"]["template"]["spec"]["hostPID"] = json!(true);
        let (res, w) = with_warnings(reg.create(rs_r, "strict", bad_rs, o.clone())).await;
        let stored = res.unwrap();
        assert_eq!(w, ["would violate PodSecurity \"baseline:latest\": host namespaces (hostPID=true)"]);
        // Scaling goes through the scale subresource: no warning.
        let mut scaled = stored.clone();
        scaled["spec"]["replicas"] = json!(2);
        let scale = WriteOptions { subresource: true, ..o.clone() };
        let (res, w) = with_warnings(reg.update(rs_r, "strict", "web", scaled, Part::Main, scale)).await;
        res.unwrap();
        assert!(w.is_empty(), "{w:?}");

        // Tightening enforce warns about the existing pods that would now be refused.
        let soft = reg.get(nss, "", "soft").await.unwrap();
        let mut tight = soft.clone();
        tight["metadata"]["labels"]["pod-security.kubernetes.io/enforce"] = json!("restricted");
        let (res, w) = with_warnings(reg.update(nss, "", "soft", tight, Part::Main, o.clone())).await;
        res.unwrap();
        assert_eq!(w.len(), 2, "{w:?}");
        assert_eq!(
            w[0],
            "existing pods in namespace \"soft\" violate the new PodSecurity enforce level \"restricted:latest\""
        );
        assert!(w[1].starts_with("h: host namespaces, allowPrivilegeEscalation != false,"), "{}", w[1]);
    }
}
