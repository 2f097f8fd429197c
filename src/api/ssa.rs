//! Server-side apply and field ownership (kube-apiserver's field manager, structured-merge-diff's
//! updater) over JSON objects: the list and map types of the built-in kinds, the structured
//! merge of an applied configuration into the live object, the comparison of two objects, and the
//! `metadata.managedFields` entries kept on every write — apply managers own what their last
//! configuration set; update managers own what they changed. No IO.

use crate::api::fieldpath::{FieldPathError, FieldSet, Path, PathElement, path_string};
use serde_json::{Map, Value, json};

/// How a list merges and which path elements its items get.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ListType {
    /// Replaced as a whole; one leaf.
    Atomic,
    /// Scalars merged as a set (`v:` elements).
    Set,
    /// Objects merged by key fields (`k:` elements); a key field may have a default.
    Map(&'static [(&'static str, Option<&'static str>)]),
}

const NAME: &[(&str, Option<&str>)] = &[("name", None)];
const CONTAINER_PORT: &[(&str, Option<&str>)] = &[("containerPort", None), ("protocol", Some("TCP"))];
const SERVICE_PORT: &[(&str, Option<&str>)] = &[("port", None), ("protocol", Some("TCP"))];

fn fields(path: &[PathElement]) -> impl Iterator<Item = &str> {
    path.iter().filter_map(|pe| match pe {
        PathElement::Field(n) => Some(n.as_str()),
        _ => None,
    })
}

/// The list type of the list at `path` (which ends with its field), from the `listType`,
/// `listMapKey` and `patchMergeKey` markers of the Kubernetes 1.32 types.
pub fn list_type(path: &[PathElement]) -> ListType {
    let Some(PathElement::Field(field)) = path.last() else { return ListType::Atomic };
    let parent: Vec<&str> = fields(&path[..path.len() - 1]).collect();
    let under = |names: &[&str]| parent.iter().any(|p| names.contains(p));
    ListType::Map(match field.as_str() {
        "containers"
        | "initContainers"
        | "ephemeralContainers"
        | "volumes"
        | "env"
        | "imagePullSecrets"
        | "resourceClaims"
        | "schedulingGates" => NAME,
        "volumeMounts" => &[("mountPath", None)],
        "volumeDevices" => &[("devicePath", None)],
        "ports" if under(&["containers", "initContainers", "ephemeralContainers"]) => CONTAINER_PORT,
        "ports" if parent == ["spec"] => SERVICE_PORT,
        "ownerReferences" => &[("uid", None)],
        "conditions" => &[("type", None)],
        "hostAliases" => &[("ip", None)],
        "podIPs" | "hostIPs" => &[("ip", None)],
        "topologySpreadConstraints" => &[("topologyKey", None), ("whenUnsatisfiable", None)],
        "addresses" if under(&["endpoints"]) => return ListType::Set,
        "addresses" => &[("type", None)],
        "finalizers" if parent == ["metadata"] => return ListType::Set,
        _ => return ListType::Atomic,
    })
}

/// Structs and maps replaced as a whole (`+structType=atomic`, `+mapType=atomic`).
fn map_is_atomic(path: &[PathElement]) -> bool {
    matches!(
        path.last(),
        Some(PathElement::Field(f)) if matches!(f.as_str(),
            "selector" | "roleRef" | "configMapKeyRef" | "secretKeyRef" | "fieldRef" | "resourceFieldRef"
            | "targetRef" | "configMapRef" | "secretRef" | "labelSelector" | "namespaceSelector"
            | "requiredDuringSchedulingIgnoredDuringExecution")
    )
}

/// Maps with free keys (`map[string]…`), whose entries are owned one by one.
fn is_free_map(path: &[PathElement]) -> bool {
    matches!(
        path.last(),
        Some(PathElement::Field(f)) if matches!(f.as_str(),
            "labels" | "annotations" | "data" | "binaryData" | "stringData" | "nodeSelector" | "limits"
            | "requests" | "capacity" | "allocatable" | "hard" | "used" | "overhead" | "matchLabels")
    )
}

/// The path element of item `i` of a list of type `lt`.
fn item_element(lt: ListType, i: usize, item: &Value) -> PathElement {
    match lt {
        ListType::Map(keys) => match item.as_object() {
            Some(o) => {
                let mut key = Map::new();
                for (k, default) in keys {
                    match (o.get(*k), default) {
                        (Some(v), _) if !v.is_null() => {
                            key.insert((*k).to_string(), v.clone());
                        }
                        (_, Some(d)) => {
                            key.insert((*k).to_string(), json!(d));
                        }
                        _ => {}
                    }
                }
                PathElement::Key(Value::Object(key).to_string())
            }
            None => PathElement::Index(i),
        },
        ListType::Set => PathElement::Value(item.to_string()),
        ListType::Atomic => PathElement::Index(i),
    }
}

/// How a node is walked.
enum Node<'a> {
    Leaf,
    Object(&'a Map<String, Value>),
    List(ListType, &'a [Value]),
}

fn node<'a>(path: &[PathElement], v: &'a Value) -> Node<'a> {
    match v {
        Value::Object(m) if !map_is_atomic(path) => Node::Object(m),
        Value::Array(items) => match list_type(path) {
            ListType::Atomic => Node::Leaf,
            lt => Node::List(lt, items),
        },
        _ => Node::Leaf,
    }
}

/// The children of an object or non-atomic list, with their path elements.
fn children<'a>(n: &Node<'a>) -> Vec<(PathElement, &'a Value)> {
    match n {
        Node::Leaf => Vec::new(),
        Node::Object(m) => m.iter().map(|(k, v)| (PathElement::Field(k.clone()), v)).collect(),
        Node::List(lt, items) => {
            items.iter().enumerate().map(|(i, v)| (item_element(*lt, i, v), v)).collect()
        }
    }
}

/// The set of fields an applied configuration specifies (structured-merge-diff's ToFieldSet):
/// every leaf, every list item and every free-map entry; struct fields only when empty or null.
pub fn config_set(config: &Value) -> FieldSet {
    fn walk(path: &mut Path, v: &Value, out: &mut FieldSet) {
        let n = node(path, v);
        let free = matches!(n, Node::Object(_)) && is_free_map(path);
        if matches!(n, Node::Leaf) && !path.is_empty() {
            out.insert(path.clone());
            return;
        }
        let is_list = matches!(n, Node::List(..));
        for (pe, child) in children(&n) {
            path.push(pe);
            walk(path, child, out);
            // An empty struct is owned as such, except the top-level ones every object has.
            let empty = (child.is_null() || child.as_object().is_some_and(Map::is_empty)) && path.len() > 1;
            if is_list || free || empty {
                out.insert(path.clone());
            }
            path.pop();
        }
    }
    let mut out = FieldSet::new();
    walk(&mut Vec::new(), config, &mut out);
    out
}

/// Merges an applied configuration into the live object: objects field by field, associative
/// lists item by item (live order, then new items), everything else replaced.
pub fn merge(live: &Value, config: &Value) -> Value {
    fn walk(path: &mut Path, live: &Value, config: &Value) -> Value {
        match (node(path, live), node(path, config)) {
            (Node::Object(l), Node::Object(c)) => {
                let mut out = l.clone();
                for (k, cv) in c {
                    if cv.is_null() {
                        out.remove(k);
                        continue;
                    }
                    path.push(PathElement::Field(k.clone()));
                    let merged = match l.get(k) {
                        Some(lv) => walk(path, lv, cv),
                        None => cv.clone(),
                    };
                    path.pop();
                    out.insert(k.clone(), merged);
                }
                Value::Object(out)
            }
            (ln @ Node::List(..), cn @ Node::List(..)) => {
                let lc = children(&ln);
                let cc = children(&cn);
                let mut out = Vec::with_capacity(lc.len().max(cc.len()));
                for (pe, lv) in &lc {
                    match cc.iter().find(|(p, _)| p == pe) {
                        Some((_, cv)) => {
                            path.push(pe.clone());
                            out.push(walk(path, lv, cv));
                            path.pop();
                        }
                        None => out.push((*lv).clone()),
                    }
                }
                for (pe, cv) in &cc {
                    if !lc.iter().any(|(p, _)| p == pe) {
                        out.push((*cv).clone());
                    }
                }
                Value::Array(out)
            }
            _ => config.clone(),
        }
    }
    walk(&mut Vec::new(), live, config)
}

/// What changed between two objects (structured-merge-diff's Compare): leaves and nodes only
/// in `new` are added, only in `old` removed, leaves with different values modified.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Comparison {
    pub added: FieldSet,
    pub modified: FieldSet,
    pub removed: FieldSet,
}

impl Comparison {
    pub fn is_same(&self) -> bool {
        self.added.is_empty() && self.modified.is_empty() && self.removed.is_empty()
    }
}

/// Top-level structs are never tracked themselves (they always exist in a typed object).
fn tracked_node(path: &[PathElement]) -> bool {
    !matches!(path, [PathElement::Field(f)] if matches!(f.as_str(), "metadata" | "spec" | "status"))
}

pub fn compare(old: &Value, new: &Value) -> Comparison {
    fn walk(path: &mut Path, old: Option<&Value>, new: Option<&Value>, out: &mut Comparison) {
        let on = old.map(|v| node(path, v));
        let nn = new.map(|v| node(path, v));
        let leaf = |n: &Option<Node>| matches!(n, Some(Node::Leaf));
        let kinds_differ = match (&on, &nn) {
            (Some(a), Some(b)) => std::mem::discriminant(a) != std::mem::discriminant(b),
            _ => false,
        };
        if leaf(&on) || leaf(&nn) || kinds_differ {
            match (old, new) {
                (None, Some(_)) => out.added.insert(path.clone()),
                (Some(_), None) => out.removed.insert(path.clone()),
                (Some(a), Some(b)) if a != b => {
                    if leaf(&on) && leaf(&nn) {
                        out.modified.insert(path.clone())
                    } else {
                        // A leaf became a node or back: the old goes, the new comes.
                        walk(path, old, None, out);
                        walk(path, None, new, out);
                    }
                }
                _ => {}
            }
            return;
        }
        if !path.is_empty() && tracked_node(path) {
            match (old, new) {
                (None, Some(_)) => out.added.insert(path.clone()),
                (Some(_), None) => out.removed.insert(path.clone()),
                _ => {}
            }
        }
        let oc = on.as_ref().map(children).unwrap_or_default();
        let nc = nn.as_ref().map(children).unwrap_or_default();
        for (pe, ov) in &oc {
            let nv = nc.iter().find(|(p, _)| p == pe).map(|(_, v)| *v);
            path.push(pe.clone());
            walk(path, Some(ov), nv, out);
            path.pop();
        }
        for (pe, nv) in &nc {
            if !oc.iter().any(|(p, _)| p == pe) {
                path.push(pe.clone());
                walk(path, None, Some(nv), out);
                path.pop();
            }
        }
    }
    let mut out = Comparison::default();
    walk(&mut Vec::new(), Some(old), Some(new), &mut out);
    out
}

/// The value at `path`, if present.
pub fn get_path<'a>(obj: &'a Value, path: &[PathElement]) -> Option<&'a Value> {
    let mut cur = obj;
    let mut at: Path = Vec::new();
    for pe in path {
        let n = node(&at, cur);
        cur = children(&n).into_iter().find(|(p, _)| p == pe).map(|(_, v)| v)?;
        at.push(pe.clone());
    }
    Some(cur)
}

/// Removes the field, map entry or list item at `path`, if present.
pub fn remove_path(obj: &mut Value, path: &[PathElement]) {
    let Some((last, parent_path)) = path.split_last() else { return };
    let mut cur = obj;
    let mut at: Path = Vec::new();
    for pe in parent_path {
        let idx = match (&*cur, pe) {
            (Value::Object(_), PathElement::Field(_)) => None,
            (Value::Array(items), _) => {
                let lt = list_type(&at);
                match items.iter().enumerate().position(|(i, v)| &item_element(lt, i, v) == pe) {
                    Some(i) => Some(i),
                    None => return,
                }
            }
            _ => return,
        };
        cur = match (cur, pe, idx) {
            (Value::Object(m), PathElement::Field(f), _) => match m.get_mut(f) {
                Some(v) => v,
                None => return,
            },
            (Value::Array(items), _, Some(i)) => &mut items[i],
            _ => return,
        };
        at.push(pe.clone());
    }
    match (cur, last) {
        (Value::Object(m), PathElement::Field(f)) => {
            m.remove(f);
        }
        (Value::Array(items), pe) => {
            let lt = list_type(&at);
            let mut i = 0;
            items.retain(|v| {
                let keep = &item_element(lt, i, v) != pe;
                i += 1;
                keep
            });
        }
        _ => {}
    }
}

/// Keeps in `config` only what `reference` (the same data after a typed decode dropped unknown
/// fields) still has.
pub fn retain_known(config: &Value, reference: &Value) -> Value {
    fn walk(path: &mut Path, c: &Value, r: &Value) -> Value {
        match (node(path, c), node(path, r)) {
            (Node::Object(cm), Node::Object(rm)) => {
                let mut out = Map::new();
                for (k, cv) in cm {
                    if let Some(rv) = rm.get(k) {
                        path.push(PathElement::Field(k.clone()));
                        out.insert(k.clone(), walk(path, cv, rv));
                        path.pop();
                    } else if cv.is_null() {
                        out.insert(k.clone(), Value::Null);
                    }
                }
                Value::Object(out)
            }
            (cn @ Node::List(..), rn @ Node::List(..)) => {
                let rc = children(&rn);
                let items = children(&cn)
                    .into_iter()
                    .map(|(pe, cv)| match rc.iter().find(|(p, _)| *p == pe) {
                        Some((_, rv)) => {
                            path.push(pe);
                            let v = walk(path, cv, rv);
                            path.pop();
                            v
                        }
                        None => cv.clone(),
                    })
                    .collect();
                Value::Array(items)
            }
            _ => c.clone(),
        }
    }
    walk(&mut Vec::new(), config, reference)
}

/// `Apply` or `Update`; apply entries sort first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Operation {
    Apply,
    Update,
}

/// Who writes: a manager with its operation, the API version it used and the subresource
/// (empty for the main resource).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ManagerId {
    pub manager: String,
    pub operation: Operation,
    pub api_version: String,
    pub subresource: String,
}

impl ManagerId {
    /// Apply managers are one entry per name whatever the API version.
    fn same(&self, e: &Entry) -> bool {
        self.manager == e.id.manager
            && self.operation == e.id.operation
            && self.subresource == e.id.subresource
            && (self.operation == Operation::Apply || self.api_version == e.id.api_version)
    }

    /// How conflict messages name this manager.
    pub fn describe(&self) -> String {
        let mut s = format!("{:?}", self.manager);
        if !self.subresource.is_empty() {
            s.push_str(&format!(" with subresource {:?}", self.subresource));
        }
        if self.operation == Operation::Update {
            s.push_str(&format!(" using {}", self.api_version));
        }
        s
    }
}

/// One `metadata.managedFields` entry.
#[derive(Debug, Clone, PartialEq)]
pub struct Entry {
    pub id: ManagerId,
    pub time: Option<String>,
    pub fields: FieldSet,
}

/// Bad `metadata.managedFields`.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum ManagedFieldsError {
    #[error("metadata.managedFields[{index}]: {message}")]
    Entry { index: usize, message: String },
    #[error("metadata.managedFields[{index}].fieldsV1: {source}")]
    Fields {
        index: usize,
        #[source]
        source: FieldPathError,
    },
}

/// Decodes `metadata.managedFields` (a missing list is empty).
pub fn decode_managed(obj: &Value) -> Result<Vec<Entry>, ManagedFieldsError> {
    let Some(list) = obj.pointer("/metadata/managedFields").and_then(Value::as_array) else {
        return Ok(Vec::new());
    };
    let mut out = Vec::with_capacity(list.len());
    for (index, e) in list.iter().enumerate() {
        let s = |k: &str| e.get(k).and_then(Value::as_str).unwrap_or("").to_string();
        let operation = match s("operation").as_str() {
            "Apply" => Operation::Apply,
            "Update" => Operation::Update,
            other => {
                return Err(ManagedFieldsError::Entry {
                    index,
                    message: format!("operation: Unsupported value: {other:?}"),
                });
            }
        };
        let fields = match e.get("fieldsV1") {
            Some(v) => {
                FieldSet::from_fields_v1(v).map_err(|source| ManagedFieldsError::Fields { index, source })?
            }
            None => FieldSet::new(),
        };
        let manager = match s("manager") {
            m if m.is_empty() => "unknown".to_string(),
            m => m,
        };
        out.push(Entry {
            id: ManagerId { manager, operation, api_version: s("apiVersion"), subresource: s("subresource") },
            time: e.get("time").and_then(Value::as_str).map(String::from),
            fields,
        });
    }
    Ok(out)
}

/// Encodes entries as `metadata.managedFields`, apply entries first, then by time and name.
pub fn encode_managed(entries: &[Entry]) -> Value {
    let mut sorted: Vec<&Entry> = entries.iter().collect();
    sorted.sort_by(|a, b| {
        (a.id.operation, &a.time, &a.id.manager, &a.id.api_version, &a.id.subresource).cmp(&(
            b.id.operation,
            &b.time,
            &b.id.manager,
            &b.id.api_version,
            &b.id.subresource,
        ))
    });
    Value::Array(
        sorted
            .into_iter()
            .map(|e| {
                let mut m = json!({
                    "manager": e.id.manager,
                    "operation": match e.id.operation { Operation::Apply => "Apply", Operation::Update => "Update" },
                    "apiVersion": e.id.api_version,
                    "fieldsType": "FieldsV1",
                    "fieldsV1": e.fields.to_fields_v1(),
                });
                if let Some(t) = &e.time {
                    m["time"] = json!(t);
                }
                if !e.id.subresource.is_empty() {
                    m["subresource"] = json!(e.id.subresource);
                }
                m
            })
            .collect(),
    )
}

/// Which part of an object an endpoint writes, for the fields it never tracks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    /// The main resource: `status` belongs to the status subresource.
    Main { has_status: bool },
    /// The `status` subresource: only `status`.
    Status,
}

/// Metadata the server sets, which no manager owns.
pub const UNTRACKED_METADATA: &[&str] = &[
    "name",
    "namespace",
    "creationTimestamp",
    "selfLink",
    "uid",
    "clusterName",
    "generation",
    "managedFields",
    "resourceVersion",
    "deletionTimestamp",
    "deletionGracePeriodSeconds",
];

/// The object without what ownership never covers: apiVersion, kind, server-set metadata and the
/// part of the object other endpoints own.
pub fn tracked_part(obj: &Value, scope: Scope) -> Value {
    let mut o = obj.clone();
    let Some(m) = o.as_object_mut() else { return o };
    m.remove("apiVersion");
    m.remove("kind");
    match scope {
        Scope::Main { has_status } => {
            if has_status {
                m.remove("status");
            }
            if let Some(md) = m.get_mut("metadata").and_then(Value::as_object_mut) {
                for f in UNTRACKED_METADATA {
                    md.remove(*f);
                }
            }
        }
        Scope::Status => m.retain(|k, _| k == "status"),
    }
    o
}

/// Update managers kept before older ones fold into `ancient-changes`.
const MAX_UPDATE_MANAGERS: usize = 10;

/// Records a non-apply write from `old` to `new` by `id` (both [`tracked_part`]s): what it changed
/// leaves every other manager and joins its entry. Updates never conflict.
pub fn update(old: &Value, new: &Value, mut entries: Vec<Entry>, id: &ManagerId, now: &str) -> Vec<Entry> {
    let cmp = compare(old, new);
    let changed = cmp.added.union(&cmp.modified);
    for e in entries.iter_mut().filter(|e| !id.same(e)) {
        e.fields = e.fields.difference(&changed).difference(&cmp.removed);
    }
    let pos = entries.iter().position(|e| id.same(e));
    let prev = pos.map(|i| entries[i].fields.clone()).unwrap_or_default();
    let set = prev.difference(&cmp.removed).union(&changed);
    if set != prev || pos.is_none() {
        let entry = Entry { id: id.clone(), time: Some(now.to_string()), fields: set };
        match pos {
            Some(i) => entries[i] = entry,
            None => entries.push(entry),
        }
    }
    entries.retain(|e| !e.fields.is_empty());
    cap_update_managers(entries)
}

fn cap_update_managers(mut entries: Vec<Entry>) -> Vec<Entry> {
    let updates = entries.iter().filter(|e| e.id.operation == Operation::Update).count();
    if updates <= MAX_UPDATE_MANAGERS {
        return entries;
    }
    entries.sort_by(|a, b| (a.id.operation, &a.time).cmp(&(b.id.operation, &b.time)));
    let mut ancient = FieldSet::new();
    let mut excess = updates - MAX_UPDATE_MANAGERS + 1;
    let mut api_version = String::new();
    entries.retain(|e| {
        if excess > 0 && e.id.operation == Operation::Update && e.id.manager != "ancient-changes" {
            excess -= 1;
            ancient = ancient.union(&e.fields);
            api_version = e.id.api_version.clone();
            false
        } else {
            true
        }
    });
    let id = ManagerId {
        manager: "ancient-changes".into(),
        operation: Operation::Update,
        api_version,
        subresource: String::new(),
    };
    match entries.iter_mut().find(|e| id.same(e)) {
        Some(e) => e.fields = e.fields.union(&ancient),
        None => entries.push(Entry { id, time: None, fields: ancient }),
    }
    entries
}

/// One field another manager owns that an apply would change.
#[derive(Debug, Clone, PartialEq)]
pub struct Conflict {
    pub manager: ManagerId,
    pub path: Path,
}

/// An apply refused because of other managers' fields.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{}", conflict_message(.0))]
pub struct Conflicts(pub Vec<Conflict>);

/// kube-apiserver's message for an apply conflict.
pub fn conflict_message(conflicts: &[Conflict]) -> String {
    if let [c] = conflicts {
        return format!(
            "Apply failed with 1 conflict: conflict with {}: {}",
            c.manager.describe(),
            path_string(&c.path)
        );
    }
    let mut managers: Vec<String> = conflicts.iter().map(|c| c.manager.describe()).collect();
    managers.sort();
    managers.dedup();
    let mut lines = Vec::new();
    for m in managers {
        lines.push(format!("conflicts with {m}:"));
        for c in conflicts.iter().filter(|c| c.manager.describe() == m) {
            lines.push(format!("- {}", path_string(&c.path)));
        }
    }
    format!("Apply failed with {} conflicts: {}", conflicts.len(), lines.join("\n"))
}

/// The result of an apply.
#[derive(Debug, Clone, PartialEq)]
pub struct Applied {
    /// The merged tracked part (prune included).
    pub object: Value,
    pub entries: Vec<Entry>,
}

/// Applies `config` (a [`tracked_part`]) as `id` to `live` (a [`tracked_part`], `{}` when
/// creating): merge, prune what the manager applied last time and no longer does (unless someone
/// else owns it), refuse changes to other managers' fields unless `force` (which takes them over).
pub fn apply(
    live: &Value,
    config: &Value,
    mut entries: Vec<Entry>,
    id: &ManagerId,
    force: bool,
    now: &str,
) -> Result<Applied, Conflicts> {
    let mut merged = merge(live, config);
    let set = config_set(config);
    let pos = entries.iter().position(|e| id.same(e));
    let last = pos.map(|i| entries[i].fields.clone()).unwrap_or_default();
    let others: FieldSet =
        entries.iter().filter(|e| !id.same(e)).fold(FieldSet::new(), |a, e| a.union(&e.fields));
    for dropped in last.difference(&set).iter() {
        if !others.has_at_or_under(dropped) && !set.has_at_or_under(dropped) {
            remove_path(&mut merged, dropped);
            // A map or list left empty by the prune goes too, unless someone owns it.
            for len in (2..dropped.len()).rev() {
                let parent = &dropped[..len];
                let empty = get_path(&merged, parent).is_some_and(|v| {
                    v.as_object().is_some_and(Map::is_empty) || v.as_array().is_some_and(Vec::is_empty)
                });
                if !empty || others.has_at_or_under(parent) || set.has_at_or_under(parent) {
                    break;
                }
                remove_path(&mut merged, parent);
            }
        }
    }
    let cmp = compare(live, &merged);
    let changed = cmp.added.union(&cmp.modified);
    let mut conflicts = Vec::new();
    for e in entries.iter().filter(|e| !id.same(e)) {
        for p in e.fields.intersection(&changed).iter() {
            conflicts.push(Conflict { manager: e.id.clone(), path: p.clone() });
        }
    }
    if !conflicts.is_empty() && !force {
        return Err(Conflicts(conflicts));
    }
    for e in entries.iter_mut().filter(|e| !id.same(e)) {
        e.fields = e.fields.difference(&changed).difference(&cmp.removed);
    }
    if pos.is_none() || last != set || !cmp.is_same() {
        let entry = Entry { id: id.clone(), time: Some(now.to_string()), fields: set };
        match pos {
            Some(i) => entries[i] = entry,
            None => entries.push(entry),
        }
    }
    entries.retain(|e| !e.fields.is_empty());
    Ok(Applied { object: merged, entries })
}

/// kubectl's upgrade from client-side apply: conflicts of manager `kubectl` are forgiven when each
/// conflicting field is in the `last-applied-configuration` with the live value.
pub fn forgiven_by_last_applied(live: &Value, last_applied: &Value, conflicts: &[Conflict]) -> bool {
    let la_set = config_set(last_applied);
    conflicts.iter().all(|c| {
        la_set.contains(&c.path)
            && get_path(live, &c.path).is_some()
            && get_path(live, &c.path) == get_path(last_applied, &c.path)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn id(m: &str, op: Operation) -> ManagerId {
        ManagerId {
            manager: m.into(),
            operation: op,
            api_version: "apps/v1".into(),
            subresource: String::new(),
        }
    }

    fn deployment(replicas: i64, image: &str) -> Value {
        json!({"metadata": {"labels": {"app": "web"}}, "spec": {"replicas": replicas,
            "selector": {"matchLabels": {"app": "web"}},
            "template": {"metadata": {"labels": {"app": "web"}}, "spec": {"containers": [
                {"name": "nginx", "image": image, "ports": [{"containerPort": 80}]}]}}}})
    }

    #[test]
    fn list_types_follow_the_markers() {
        let f = |s: &str| PathElement::Field(s.into());
        assert_eq!(list_type(&[f("spec"), f("ports")]), ListType::Map(SERVICE_PORT));
        let cport = [f("spec"), f("containers"), PathElement::Key("{}".into()), f("ports")];
        assert_eq!(list_type(&cport), ListType::Map(CONTAINER_PORT));
        assert_eq!(list_type(&[f("ports")]), ListType::Atomic, "EndpointSlice ports are atomic");
        assert_eq!(list_type(&[f("metadata"), f("finalizers")]), ListType::Set);
        assert_eq!(list_type(&[f("spec"), f("finalizers")]), ListType::Atomic);
        assert_eq!(list_type(&[f("spec"), f("tolerations")]), ListType::Atomic);
    }

    #[test]
    fn config_set_matches_kube_encoding() {
        let set = config_set(&deployment(2, "nginx:1"));
        let v1 = set.to_fields_v1();
        let c = &v1["f:spec"]["f:template"]["f:spec"]["f:containers"]["k:{\"name\":\"nginx\"}"];
        assert_eq!(c["."], json!({}));
        assert_eq!(c["f:image"], json!({}));
        assert_eq!(
            c["f:ports"]["k:{\"containerPort\":80,\"protocol\":\"TCP\"}"]["f:containerPort"],
            json!({})
        );
        assert_eq!(v1["f:spec"]["f:selector"], json!({}), "selectors are atomic");
        assert_eq!(v1["f:metadata"]["f:labels"]["f:app"], json!({}));
        assert!(v1["f:spec"].get(".").is_none());
    }

    #[test]
    fn apply_conflicts_force_and_prune() {
        let now = "2026-01-01T00:00:00Z";
        let a = id("alice", Operation::Apply);
        let b = id("bob", Operation::Apply);
        let r1 = apply(&json!({}), &deployment(2, "nginx:1"), vec![], &a, false, now).unwrap();
        assert_eq!(r1.object, deployment(2, "nginx:1"));
        // Bob sets the same value: shared ownership, no conflict.
        let cfg_b = json!({"spec": {"replicas": 2}});
        let r2 = apply(&r1.object, &cfg_b, r1.entries.clone(), &b, false, now).unwrap();
        assert_eq!(r2.entries.len(), 2);
        // Bob changes a field Alice owns: conflict naming Alice and the path.
        let err = apply(&r2.object, &json!({"spec": {"replicas": 5}}), r2.entries.clone(), &b, false, now)
            .unwrap_err();
        assert_eq!(err.to_string(), "Apply failed with 1 conflict: conflict with \"alice\": .spec.replicas");
        // Forced, Bob takes it over.
        let r3 =
            apply(&r2.object, &json!({"spec": {"replicas": 5}}), r2.entries.clone(), &b, true, now).unwrap();
        assert_eq!(r3.object["spec"]["replicas"], 5);
        let alice = r3.entries.iter().find(|e| e.id == a).unwrap();
        let replicas = vec![PathElement::Field("spec".into()), PathElement::Field("replicas".into())];
        assert!(!alice.fields.contains(&replicas));
        // Alice drops the label she alone owned and the replicas she no longer owns: the label goes,
        // replicas (Bob's) stays.
        let mut cfg_a = deployment(2, "nginx:1");
        cfg_a["metadata"] = json!({});
        cfg_a["spec"].as_object_mut().unwrap().remove("replicas");
        let r4 = apply(&r3.object, &cfg_a, r3.entries.clone(), &a, false, now).unwrap();
        assert!(r4.object["metadata"].get("labels").is_none(), "{}", r4.object);
        assert_eq!(r4.object["spec"]["replicas"], 5);
        // A no-op apply changes nothing, not even the time.
        let r5 = apply(&r4.object, &cfg_a, r4.entries.clone(), &a, false, "later").unwrap();
        assert_eq!(r5, r4);
    }

    #[test]
    fn conflicts_list_every_manager_and_field() {
        let now = "t";
        let up = id("kubectl-client-side-apply", Operation::Update);
        let entries = update(&json!({}), &deployment(2, "nginx:1"), vec![], &up, now);
        let err = apply(
            &deployment(2, "nginx:1"),
            &deployment(3, "nginx:2"),
            entries,
            &id("x", Operation::Apply),
            false,
            now,
        )
        .unwrap_err();
        assert_eq!(
            err.to_string(),
            "Apply failed with 2 conflicts: conflicts with \"kubectl-client-side-apply\" using apps/v1:\n- .spec.replicas\n- .spec.template.spec.containers[name=\"nginx\"].image"
        );
    }

    #[test]
    fn update_takes_changed_fields_and_removes_dropped_ones() {
        let now = "t";
        let a = id("creator", Operation::Update);
        let e = update(&json!({}), &deployment(2, "nginx:1"), vec![], &a, now);
        let v1 = e[0].fields.to_fields_v1();
        assert_eq!(v1["f:metadata"]["f:labels"]["."], json!({}), "new maps are owned themselves");
        let b = id("scaler", Operation::Update);
        let e = update(&deployment(2, "nginx:1"), &deployment(4, "nginx:1"), e, &b, now);
        assert_eq!(e.len(), 2);
        let replicas = vec![PathElement::Field("spec".into()), PathElement::Field("replicas".into())];
        assert!(e[1].fields.contains(&replicas) && !e[0].fields.contains(&replicas));
        let mut gone = deployment(4, "nginx:1");
        gone["spec"].as_object_mut().unwrap().remove("replicas");
        let e = update(&deployment(4, "nginx:1"), &gone, e, &a, now);
        assert_eq!(e.len(), 1, "the scaler's only field is gone, and so is its entry");
        let decoded = decode_managed(&json!({"metadata": {"managedFields": encode_managed(&e)}})).unwrap();
        assert_eq!(decoded, e);
    }

    #[test]
    fn merge_lists_by_key() {
        let live = json!({"spec": {"ports": [{"port": 80, "protocol": "TCP", "targetPort": 8080}], "x": [1, 2]},
            "metadata": {"finalizers": ["a"]}});
        let cfg = json!({"spec": {"ports": [{"port": 80, "name": "http"}, {"port": 81}], "x": [3]},
            "metadata": {"finalizers": ["b"]}});
        let m = merge(&live, &cfg);
        assert_eq!(
            m["spec"]["ports"],
            json!([{"port": 80, "protocol": "TCP", "targetPort": 8080, "name": "http"}, {"port": 81}])
        );
        assert_eq!(m["spec"]["x"], json!([3]));
        assert_eq!(m["metadata"]["finalizers"], json!(["a", "b"]));
        let mut pruned = m.clone();
        let key = PathElement::Key(r#"{"port":81,"protocol":"TCP"}"#.into());
        remove_path(
            &mut pruned,
            &[PathElement::Field("spec".into()), PathElement::Field("ports".into()), key],
        );
        assert_eq!(pruned["spec"]["ports"].as_array().unwrap().len(), 1);
    }

    #[test]
    fn last_applied_forgives_unchanged_fields() {
        let live = deployment(2, "nginx:1");
        let c = Conflict {
            manager: id("kubectl-client-side-apply", Operation::Update),
            path: vec![PathElement::Field("spec".into()), PathElement::Field("replicas".into())],
        };
        assert!(forgiven_by_last_applied(&live, &deployment(2, "old"), std::slice::from_ref(&c)));
        assert!(!forgiven_by_last_applied(&live, &deployment(3, "nginx:1"), &[c]));
    }

    #[test]
    fn retain_known_drops_unknown_fields() {
        let cfg = json!({"spec": {"replicas": 1, "bogus": 2, "template": {"spec": {"containers": [{"name": "a", "oops": 1}]}}}});
        let reference = json!({"spec": {"replicas": 1, "template": {"spec": {"containers": [{"name": "a", "image": "x"}]}}}});
        assert_eq!(
            retain_known(&cfg, &reference),
            json!({"spec": {"replicas": 1, "template": {"spec": {"containers": [{"name": "a"}]}}}})
        );
    }
}
