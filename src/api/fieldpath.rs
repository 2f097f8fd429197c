//! Field paths and sets as server-side apply tracks them: path elements (`f:` fields, `k:` keys of
//! associative list items, `v:` set members, `i:` indices), sets of owned paths, the `FieldsV1`
//! encoding of `metadata.managedFields`, and the path text of conflict messages
//! (`.spec.template.spec.containers[name="nginx"].image`).

use serde_json::{Map, Value};
use std::collections::BTreeSet;

/// One step of a path. The derived order (fields < keys < values < indices) is the order of
/// children in FieldsV1.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum PathElement {
    /// A struct field or map key.
    Field(String),
    /// An item of an associative list: the compact JSON of its key fields, sorted by name.
    Key(String),
    /// A member of a set-like list: its compact JSON.
    Value(String),
    /// An item of a list without keys.
    Index(usize),
}

/// A path from the object's root.
pub type Path = Vec<PathElement>;

/// The FieldsV1 data is malformed.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum FieldPathError {
    #[error("invalid FieldsV1 element {0:?}")]
    Element(String),
    #[error("FieldsV1 must be a JSON object at {0:?}")]
    NotObject(String),
}

impl PathElement {
    /// The element of the FieldsV1 key text `f:name`, `k:{…}`, `v:…` or `i:n`.
    pub fn parse(s: &str) -> Result<PathElement, FieldPathError> {
        let bad = || FieldPathError::Element(s.to_string());
        let canonical = |j: &str| -> Result<String, FieldPathError> {
            serde_json::from_str::<Value>(j).map(|v| v.to_string()).map_err(|_| bad())
        };
        match s.split_at_checked(2) {
            Some(("f:", name)) => Ok(PathElement::Field(name.to_string())),
            Some(("k:", j)) => Ok(PathElement::Key(canonical(j)?)),
            Some(("v:", j)) => Ok(PathElement::Value(canonical(j)?)),
            Some(("i:", n)) => n.parse().map(PathElement::Index).map_err(|_| bad()),
            _ => Err(bad()),
        }
    }

    /// The FieldsV1 key text.
    pub fn encode(&self) -> String {
        match self {
            PathElement::Field(n) => format!("f:{n}"),
            PathElement::Key(k) => format!("k:{k}"),
            PathElement::Value(v) => format!("v:{v}"),
            PathElement::Index(i) => format!("i:{i}"),
        }
    }
}

/// The text of a path in conflict messages, as structured-merge-diff prints it.
pub fn path_string(path: &[PathElement]) -> String {
    let mut s = String::new();
    for pe in path {
        match pe {
            PathElement::Field(n) => {
                s.push('.');
                s.push_str(n);
            }
            PathElement::Key(k) => {
                let fields: Map<String, Value> = serde_json::from_str(k).unwrap_or_default();
                let parts: Vec<String> = fields.iter().map(|(f, v)| format!("{f}={v}")).collect();
                s.push_str(&format!("[{}]", parts.join(",")));
            }
            PathElement::Value(v) => s.push_str(&format!("[={v}]")),
            PathElement::Index(i) => s.push_str(&format!("[{i}]")),
        }
    }
    s
}

/// A set of owned paths (each a member; a member's descendants are separate members).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FieldSet(BTreeSet<Path>);

impl FieldSet {
    pub fn new() -> Self {
        FieldSet::default()
    }

    pub fn insert(&mut self, path: Path) {
        self.0.insert(path);
    }

    pub fn contains(&self, path: &[PathElement]) -> bool {
        self.0.contains(path)
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn iter(&self) -> impl Iterator<Item = &Path> {
        self.0.iter()
    }

    /// True if `path` or anything under it is a member.
    pub fn has_at_or_under(&self, path: &[PathElement]) -> bool {
        self.0.range(path.to_vec()..).next().is_some_and(|p| p.starts_with(path))
    }

    pub fn union(&self, other: &FieldSet) -> FieldSet {
        FieldSet(self.0.union(&other.0).cloned().collect())
    }

    pub fn difference(&self, other: &FieldSet) -> FieldSet {
        FieldSet(self.0.difference(&other.0).cloned().collect())
    }

    pub fn intersection(&self, other: &FieldSet) -> FieldSet {
        FieldSet(self.0.intersection(&other.0).cloned().collect())
    }

    /// Drops every member at or under `prefix`.
    pub fn remove_under(&mut self, prefix: &[PathElement]) {
        self.0.retain(|p| !p.starts_with(prefix));
    }

    /// The FieldsV1 JSON trie: `{}` leaves, `".": {}` on members that also have children.
    pub fn to_fields_v1(&self) -> Value {
        let mut root = Map::new();
        for path in &self.0 {
            let mut node = &mut root;
            for pe in path {
                let child = node.entry(pe.encode()).or_insert_with(|| Value::Object(Map::new()));
                node = child.as_object_mut().expect("trie nodes are objects");
            }
            node.insert(".".into(), Value::Object(Map::new()));
        }
        // Leaves carry no ".": a member without children is written as `{}`.
        fn tidy(node: &mut Map<String, Value>) {
            if node.len() == 1 && node.contains_key(".") {
                node.clear();
                return;
            }
            for (k, v) in node.iter_mut() {
                if k != "."
                    && let Some(m) = v.as_object_mut()
                {
                    tidy(m);
                }
            }
        }
        tidy(&mut root);
        Value::Object(root)
    }

    /// Parses FieldsV1.
    pub fn from_fields_v1(v: &Value) -> Result<FieldSet, FieldPathError> {
        fn walk(node: &Value, path: &mut Path, out: &mut FieldSet) -> Result<(), FieldPathError> {
            let m = node.as_object().ok_or_else(|| FieldPathError::NotObject(path_string(path)))?;
            if m.is_empty() && !path.is_empty() {
                out.insert(path.clone());
            }
            for (k, child) in m {
                if k == "." {
                    out.insert(path.clone());
                    continue;
                }
                path.push(PathElement::parse(k)?);
                walk(child, path, out)?;
                path.pop();
            }
            Ok(())
        }
        let mut out = FieldSet::new();
        walk(v, &mut Vec::new(), &mut out)?;
        Ok(out)
    }
}

impl FromIterator<Path> for FieldSet {
    fn from_iter<I: IntoIterator<Item = Path>>(iter: I) -> Self {
        FieldSet(iter.into_iter().collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn f(n: &str) -> PathElement {
        PathElement::Field(n.into())
    }

    #[test]
    fn fields_v1_round_trip() {
        let v1 = json!({"f:spec":{"f:template":{"f:spec":{"f:containers":{"k:{\"name\":\"nginx\"}":{".":{},
            "f:image":{},"f:name":{},"f:ports":{"i:0":{"f:containerPort":{}}}}}}}}});
        let set = FieldSet::from_fields_v1(&v1).unwrap();
        assert_eq!(set.len(), 4);
        let item = vec![
            f("spec"),
            f("template"),
            f("spec"),
            f("containers"),
            PathElement::Key(r#"{"name":"nginx"}"#.into()),
        ];
        assert!(set.contains(&item));
        assert!(set.has_at_or_under(&[f("spec"), f("template")]));
        assert!(!set.contains(&[f("spec")]));
        assert_eq!(set.to_fields_v1(), v1);
        let mut image = item.clone();
        image.push(f("image"));
        assert_eq!(path_string(&image), r#".spec.template.spec.containers[name="nginx"].image"#);
        let port = PathElement::parse(r#"k:{"protocol":"TCP","containerPort":80}"#).unwrap();
        assert_eq!(path_string(&[f("ports"), port]), r#".ports[containerPort=80,protocol="TCP"]"#);
        assert_eq!(
            path_string(&[f("finalizers"), PathElement::Value("\"x\"".into()), PathElement::Index(0)]),
            r#".finalizers[="x"][0]"#
        );
        assert!(FieldSet::from_fields_v1(&json!({"x:y":{}})).is_err());
        assert!(FieldSet::from_fields_v1(&json!({"f:a":1})).is_err());
    }

    #[test]
    fn set_operations() {
        let a: FieldSet = [vec![f("a")], vec![f("b"), f("c")]].into_iter().collect();
        let b: FieldSet = [vec![f("b"), f("c")], vec![f("d")]].into_iter().collect();
        assert_eq!(a.intersection(&b).len(), 1);
        assert_eq!(a.union(&b).len(), 3);
        assert_eq!(a.difference(&b), [vec![f("a")]].into_iter().collect());
        assert!(a.has_at_or_under(&[f("b")]));
        assert!(!a.has_at_or_under(&[f("bb")]));
        let mut c = a.clone();
        c.remove_under(&[f("b")]);
        assert_eq!(c.len(), 1);
    }
}
