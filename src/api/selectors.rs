//! Label selectors (string form and `LabelSelector` objects) and field selectors.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector as K8sLabelSelector;
use serde_json::Value;
use std::collections::BTreeMap;

/// A selector could not be parsed.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum SelectorError {
    #[error("unable to parse requirement {requirement:?}: {reason}")]
    Label { requirement: String, reason: String },
    #[error("invalid field selector {selector:?}: {reason}")]
    Field { selector: String, reason: String },
}

/// One label requirement.
#[derive(Debug, Clone, PartialEq)]
pub enum Requirement {
    Eq(String, String),
    NotEq(String, String),
    In(String, Vec<String>),
    NotIn(String, Vec<String>),
    Exists(String),
    NotExists(String),
}

impl Requirement {
    fn matches(&self, labels: &BTreeMap<String, String>) -> bool {
        match self {
            Requirement::Eq(k, v) => labels.get(k) == Some(v),
            Requirement::NotEq(k, v) => labels.get(k) != Some(v),
            Requirement::In(k, vs) => labels.get(k).is_some_and(|l| vs.contains(l)),
            Requirement::NotIn(k, vs) => labels.get(k).is_none_or(|l| !vs.contains(l)),
            Requirement::Exists(k) => labels.contains_key(k),
            Requirement::NotExists(k) => !labels.contains_key(k),
        }
    }

    fn to_string_form(&self) -> String {
        match self {
            Requirement::Eq(k, v) => format!("{k}={v}"),
            Requirement::NotEq(k, v) => format!("{k}!={v}"),
            Requirement::In(k, vs) => format!("{k} in ({})", vs.join(",")),
            Requirement::NotIn(k, vs) => format!("{k} notin ({})", vs.join(",")),
            Requirement::Exists(k) => k.clone(),
            Requirement::NotExists(k) => format!("!{k}"),
        }
    }
}

/// A conjunction of label requirements; empty matches everything.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct LabelSelector {
    pub requirements: Vec<Requirement>,
}

/// One `matchExpressions` entry as a requirement.
fn expression(key: String, operator: &str, values: Vec<String>) -> Result<Requirement, SelectorError> {
    Ok(match operator {
        "In" => Requirement::In(key, values),
        "NotIn" => Requirement::NotIn(key, values),
        "Exists" => Requirement::Exists(key),
        "DoesNotExist" => Requirement::NotExists(key),
        other => {
            return Err(SelectorError::Label {
                requirement: key,
                reason: format!("{other:?} is not a valid label selector operator"),
            });
        }
    })
}

/// Splits on commas that are not inside parentheses.
fn split_top_level(s: &str) -> Vec<&str> {
    let mut out = Vec::new();
    let (mut depth, mut start) = (0i32, 0usize);
    for (i, c) in s.char_indices() {
        match c {
            '(' => depth += 1,
            ')' => depth -= 1,
            ',' if depth == 0 => {
                out.push(&s[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    out.push(&s[start..]);
    out
}

fn parse_set(req: &str, rest: &str) -> Result<Vec<String>, SelectorError> {
    let inner = rest.trim().strip_prefix('(').and_then(|r| r.strip_suffix(')')).ok_or_else(|| {
        SelectorError::Label {
            requirement: req.into(),
            reason: "expected a parenthesised set of values".into(),
        }
    })?;
    Ok(inner.split(',').map(|v| v.trim().to_string()).filter(|v| !v.is_empty()).collect())
}

impl LabelSelector {
    /// Parses the string form: `a=b,c!=d,e in (x,y),f notin (z),g,!h`.
    pub fn parse(s: &str) -> Result<Self, SelectorError> {
        let mut requirements = Vec::new();
        for raw in split_top_level(s) {
            let req = raw.trim();
            if req.is_empty() {
                continue;
            }
            let bad = |reason: &str| SelectorError::Label { requirement: req.into(), reason: reason.into() };
            let r = if let Some(k) = req.strip_prefix('!') {
                Requirement::NotExists(k.trim().into())
            } else if let Some((k, v)) = req.split_once("!=") {
                Requirement::NotEq(k.trim().into(), v.trim().into())
            } else if let Some((k, v)) = req.split_once("==") {
                Requirement::Eq(k.trim().into(), v.trim().into())
            } else if let Some((k, v)) = req.split_once('=') {
                Requirement::Eq(k.trim().into(), v.trim().into())
            } else if let Some(idx) = req.find(" notin ") {
                Requirement::NotIn(req[..idx].trim().into(), parse_set(req, &req[idx + 7..])?)
            } else if let Some(idx) = req.find(" in ") {
                Requirement::In(req[..idx].trim().into(), parse_set(req, &req[idx + 4..])?)
            } else if req.contains(['(', ')', ' ', '<', '>']) {
                return Err(bad("unknown operator"));
            } else {
                Requirement::Exists(req.into())
            };
            let key = match &r {
                Requirement::Eq(k, _)
                | Requirement::NotEq(k, _)
                | Requirement::In(k, _)
                | Requirement::NotIn(k, _)
                | Requirement::Exists(k)
                | Requirement::NotExists(k) => k,
            };
            if let Some(e) = super::names::check_qualified_name(key) {
                return Err(bad(&format!("invalid label key {key:?}: {e}")));
            }
            requirements.push(r);
        }
        Ok(LabelSelector { requirements })
    }

    /// Builds a selector from a `LabelSelector` object (`matchLabels` + `matchExpressions`).
    pub fn from_object(sel: &Value) -> Result<Self, SelectorError> {
        let mut requirements = Vec::new();
        if let Some(m) = sel.get("matchLabels").and_then(Value::as_object) {
            for (k, v) in m {
                requirements.push(Requirement::Eq(k.clone(), v.as_str().unwrap_or("").into()));
            }
        }
        if let Some(exprs) = sel.get("matchExpressions").and_then(Value::as_array) {
            for e in exprs {
                let key = e.get("key").and_then(Value::as_str).unwrap_or("").to_string();
                let values: Vec<String> = e
                    .get("values")
                    .and_then(Value::as_array)
                    .map(|a| a.iter().filter_map(|v| v.as_str().map(String::from)).collect())
                    .unwrap_or_default();
                let op = e.get("operator").and_then(Value::as_str).unwrap_or("");
                requirements.push(expression(key, op, values)?);
            }
        }
        Ok(LabelSelector { requirements })
    }

    /// Builds a selector from a typed `LabelSelector` (a controller's `spec.selector`).
    pub fn from_k8s(sel: &K8sLabelSelector) -> Result<Self, SelectorError> {
        let mut requirements: Vec<Requirement> =
            sel.match_labels.iter().flatten().map(|(k, v)| Requirement::Eq(k.clone(), v.clone())).collect();
        for e in sel.match_expressions.iter().flatten() {
            let values = e.values.clone().unwrap_or_default();
            requirements.push(expression(e.key.clone(), &e.operator, values)?);
        }
        Ok(LabelSelector { requirements })
    }

    /// Builds an equality selector from plain `key=value` pairs (a Service's `spec.selector`).
    pub fn from_map(pairs: &BTreeMap<String, String>) -> Self {
        let requirements = pairs.iter().map(|(k, v)| Requirement::Eq(k.clone(), v.clone())).collect();
        LabelSelector { requirements }
    }

    /// Whether a controller with this selector picks an object with `labels`: like [`Self::matches`],
    /// except that an empty selector selects nothing.
    pub fn selects(&self, labels: Option<&BTreeMap<String, String>>) -> bool {
        let empty = BTreeMap::new();
        !self.is_empty() && self.matches(labels.unwrap_or(&empty))
    }

    /// True if the selector has no requirements.
    pub fn is_empty(&self) -> bool {
        self.requirements.is_empty()
    }

    /// Matches a label map.
    pub fn matches(&self, labels: &BTreeMap<String, String>) -> bool {
        self.requirements.iter().all(|r| r.matches(labels))
    }

    /// Matches the `metadata.labels` of an object.
    pub fn matches_object(&self, obj: &Value) -> bool {
        self.matches(&labels_of(obj))
    }

    /// The canonical string form (`app=nginx,tier in (a,b)`).
    pub fn to_string_form(&self) -> String {
        self.requirements.iter().map(Requirement::to_string_form).collect::<Vec<_>>().join(",")
    }
}

/// The `metadata.labels` of an object as a map.
pub fn labels_of(obj: &Value) -> BTreeMap<String, String> {
    obj.pointer("/metadata/labels")
        .and_then(Value::as_object)
        .map(|m| m.iter().map(|(k, v)| (k.clone(), v.as_str().unwrap_or("").to_string())).collect())
        .unwrap_or_default()
}

/// A conjunction of `field=value` / `field!=value` terms.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct FieldSelector {
    pub terms: Vec<(String, bool, String)>,
}

/// Fields every kind supports, plus per-kind extras.
fn field_value(obj: &Value, field: &str) -> Option<String> {
    let ptr = format!("/{}", field.replace('.', "/"));
    match obj.pointer(&ptr) {
        Some(Value::String(s)) => Some(s.clone()),
        Some(Value::Bool(b)) => Some(b.to_string()),
        Some(Value::Number(n)) => Some(n.to_string()),
        Some(_) => None,
        None => Some(String::new()),
    }
}

impl FieldSelector {
    /// Parses `metadata.name=x,spec.nodeName!=,status.phase==Running`.
    pub fn parse(s: &str) -> Result<Self, SelectorError> {
        let mut terms = Vec::new();
        for raw in s.split(',') {
            let t = raw.trim();
            if t.is_empty() {
                continue;
            }
            let (k, eq, v) = if let Some((k, v)) = t.split_once("!=") {
                (k, false, v)
            } else if let Some((k, v)) = t.split_once("==") {
                (k, true, v)
            } else if let Some((k, v)) = t.split_once('=') {
                (k, true, v)
            } else {
                return Err(SelectorError::Field {
                    selector: t.into(),
                    reason: "expected field=value or field!=value".into(),
                });
            };
            terms.push((k.trim().to_string(), eq, v.trim().to_string()));
        }
        Ok(FieldSelector { terms })
    }

    /// Rejects fields this kind does not support (like the real API server does).
    pub fn check_supported(&self, allowed: &[&str]) -> Result<(), SelectorError> {
        for (f, _, _) in &self.terms {
            if !allowed.contains(&f.as_str()) && !f.starts_with("metadata.") {
                return Err(SelectorError::Field {
                    selector: f.clone(),
                    reason: format!("field label not supported: {f}"),
                });
            }
        }
        Ok(())
    }

    /// The value of `metadata.name=` if this selector pins one name.
    pub fn pinned_name(&self) -> Option<&str> {
        self.pinned("metadata.name")
    }

    /// The value `field` must equal, if this selector pins one.
    pub fn pinned(&self, field: &str) -> Option<&str> {
        self.terms.iter().find(|(f, eq, _)| f == field && *eq).map(|(_, _, v)| v.as_str())
    }

    /// Matches an object.
    pub fn matches(&self, obj: &Value) -> bool {
        self.terms.iter().all(|(f, eq, v)| {
            let actual = field_value(obj, f);
            (actual.as_deref() == Some(v.as_str())) == *eq
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    #[test]
    fn string_form() {
        let s = LabelSelector::parse("app=nginx,tier in (a, b),!gone,env!=prod").unwrap();
        assert_eq!(s.requirements.len(), 4);
        assert!(s.matches(&labels(&[("app", "nginx"), ("tier", "b")])));
        assert!(!s.matches(&labels(&[("app", "nginx"), ("tier", "c")])));
        assert!(!s.matches(&labels(&[("app", "nginx"), ("tier", "a"), ("gone", "")])));
        assert!(!s.matches(&labels(&[("app", "nginx"), ("tier", "a"), ("env", "prod")])));
        assert!(LabelSelector::parse("a notin (x),b").unwrap().matches(&labels(&[("b", "1")])));
        assert!(LabelSelector::parse("bad key=1").is_err());
        assert!(LabelSelector::parse("").unwrap().is_empty());
    }

    #[test]
    fn objects() {
        let sel = json!({"matchLabels":{"app":"x"},"matchExpressions":[{"key":"t","operator":"Exists"}]});
        let s = LabelSelector::from_object(&sel).unwrap();
        assert!(s.matches(&labels(&[("app", "x"), ("t", "")])));
        assert!(!s.matches(&labels(&[("app", "x")])));
        assert_eq!(s.to_string_form(), "app=x,t");
        let bad = json!({"matchExpressions":[{"key":"t","operator":"Nope"}]});
        assert!(LabelSelector::from_object(&bad).is_err());
    }

    #[test]
    fn typed_selectors_for_controllers() {
        use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelectorRequirement;
        let sel = K8sLabelSelector {
            match_labels: Some(labels(&[("app", "web")])),
            match_expressions: Some(vec![LabelSelectorRequirement {
                key: "tier".into(),
                operator: "In".into(),
                values: Some(vec!["frontend".into()]),
            }]),
        };
        let s = LabelSelector::from_k8s(&sel).unwrap();
        assert!(s.selects(Some(&labels(&[("app", "web"), ("tier", "frontend")]))));
        assert!(!s.selects(Some(&labels(&[("app", "web")]))));
        assert!(!s.selects(None));
        let empty = LabelSelector::from_k8s(&K8sLabelSelector::default()).unwrap();
        assert!(!empty.selects(Some(&labels(&[("app", "web")]))));
        assert_eq!(s.to_string_form(), "app=web,tier in (frontend)");
        let bad = K8sLabelSelector {
            match_expressions: Some(vec![LabelSelectorRequirement {
                key: "t".into(),
                operator: "Nope".into(),
                values: None,
            }]),
            ..Default::default()
        };
        assert!(LabelSelector::from_k8s(&bad).is_err());
        let map = LabelSelector::from_map(&labels(&[("app", "web")]));
        assert!(map.selects(Some(&labels(&[("app", "web"), ("x", "y")]))));
        assert!(!LabelSelector::from_map(&labels(&[])).selects(Some(&labels(&[("app", "web")]))));
    }

    #[test]
    fn fields() {
        let pod = json!({"metadata":{"name":"p","namespace":"default"},"spec":{"nodeName":"n1"},"status":{"phase":"Running"}});
        let f = FieldSelector::parse("metadata.name=p,spec.nodeName=n1,status.phase!=Pending").unwrap();
        assert!(f.matches(&pod));
        assert_eq!(f.pinned_name(), Some("p"));
        assert!(!FieldSelector::parse("spec.nodeName=").unwrap().matches(&pod));
        let unscheduled = json!({"metadata":{"name":"q"},"spec":{}});
        assert!(FieldSelector::parse("spec.nodeName=").unwrap().matches(&unscheduled));
        assert!(FieldSelector::parse("nonsense").is_err());
        assert!(f.check_supported(&["spec.nodeName", "status.phase"]).is_ok());
        assert!(f.check_supported(&[]).is_err());
    }
}
