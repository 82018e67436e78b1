//! What Flotilla does with every member of every request AWS Batch's model defines.
//!
//! The model is botocore's (the version pinned in `scripts/botocore-model.py`), embedded as
//! `batch-model.json`. Each member a request can carry is in [`TABLE`], keyed `Shape.member`,
//! with what Flotilla does with it. [`check`] walks each request along the model before it is
//! parsed and refuses the members the table refuses, so a member is never accepted and then
//! dropped; `tests/api_model.rs` walks the whole model and fails on a member the table does not
//! name, so a member AWS adds cannot slip through. `docs/api-compatibility.md`'s field table is
//! written from this one (`flotilla api-compat`, checked by that test).

mod table;

pub use table::TABLE;

use serde::Deserialize;
use serde_json::Value;
use std::collections::{BTreeMap, HashMap};
use std::sync::OnceLock;

/// What Flotilla does with one member.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Support {
    /// Acted on as AWS Batch does; the text says where when that is not obvious.
    Honoured(&'static str),
    /// Refused with a ClientException naming the member; the text says why.
    Rejected(&'static str),
    /// Accepted only with the value given (JSON; AWS's default, which asks for nothing);
    /// any other value is refused with the text.
    OnlyDefault(&'static str, &'static str),
    /// Accepted and without effect, by design; the text says why.
    NoOp(&'static str),
    /// Accepted, stored and returned by the Describe operations, but not yet acted on; the text
    /// names the issue that applies it. A gap, listed so nobody mistakes it for support.
    NotYet(&'static str),
}

impl Support {
    /// Whether the member's own members are walked (a refused or ignored member's are not).
    fn descends(self) -> bool {
        matches!(self, Support::Honoured(_) | Support::NotYet(_))
    }
}

#[derive(Debug, Deserialize)]
pub struct Model {
    pub botocore: String,
    pub operations: BTreeMap<String, String>,
    pub shapes: BTreeMap<String, Shape>,
}

#[derive(Debug, Deserialize)]
pub struct Shape {
    #[serde(rename = "type")]
    pub kind: String,
    #[serde(default)]
    pub members: BTreeMap<String, String>,
    #[serde(default)]
    pub required: Vec<String>,
    pub member: Option<String>,
    pub value: Option<String>,
}

/// botocore's model of the Batch API (only shapes, no documentation).
pub fn model() -> &'static Model {
    static MODEL: OnceLock<Model> = OnceLock::new();
    MODEL.get_or_init(|| {
        serde_json::from_str(include_str!("batch-model.json"))
            .expect("the embedded botocore model is valid JSON (checked by tests)")
    })
}

/// The table by shape, then member: looked up on every request, so without building keys.
fn table() -> &'static HashMap<&'static str, HashMap<&'static str, Support>> {
    static INDEX: OnceLock<HashMap<&'static str, HashMap<&'static str, Support>>> = OnceLock::new();
    INDEX.get_or_init(|| {
        let mut index: HashMap<&str, HashMap<&str, Support>> = HashMap::new();
        for (key, rule) in TABLE {
            if let Some((shape, member)) = key.split_once('.') {
                index.entry(shape).or_default().insert(member, *rule);
            }
        }
        index
    })
}

/// What Flotilla does with `shape.member`, if the table says.
pub fn support(shape: &str, member: &str) -> Option<Support> {
    table().get(shape)?.get(member).copied()
}

/// Per operation, the JSON keys (quoted, as they appear in a body) of the members a request of
/// it can carry that Flotilla refuses in some or all values. A body that holds none of them is
/// let through without being parsed twice: the common case, on the SubmitJob hot path.
fn triggers(op: &str) -> &'static [String] {
    static TRIGGERS: OnceLock<HashMap<String, Vec<String>>> = OnceLock::new();
    TRIGGERS
        .get_or_init(|| {
            model()
                .operations
                .keys()
                .map(|op| {
                    let mut keys: Vec<String> = reachable(&[op.as_str()])
                        .into_iter()
                        .filter(|(_, r)| {
                            matches!(r, Some(Support::Rejected(_) | Support::OnlyDefault(..)))
                        })
                        .filter_map(|(key, _)| Some(format!("\"{}\"", key.split_once('.')?.1)))
                        .collect();
                    keys.sort();
                    keys.dedup();
                    (op.clone(), keys)
                })
                .collect()
        })
        .get(op)
        .map_or(&[], Vec::as_slice)
}

/// Refuses a request of `op` that carries a member Flotilla refuses, naming it by its path
/// (`containerProperties.linuxParameters.devices[0]`). Members outside AWS's model are left to
/// the operation's own parsing, which ignores them as AWS does; so is a body that is not JSON.
pub fn check(op: &str, body: &[u8]) -> Result<(), String> {
    let keys = triggers(op);
    let holds = |needle: &[u8]| body.windows(needle.len()).any(|w| w == needle);
    // A key spelled with \u escapes would slip past the search: such a body is parsed.
    if !keys.iter().any(|k| holds(k.as_bytes())) && !holds(b"\\u") {
        return Ok(());
    }
    match serde_json::from_slice::<Value>(body) {
        Ok(v) => check_value(op, &v),
        Err(_) => Ok(()),
    }
}

/// [`check`] of a parsed body.
pub fn check_value(op: &str, body: &Value) -> Result<(), String> {
    let m = model();
    let Some(input) = m.operations.get(op) else {
        return Ok(());
    };
    walk(m, input, body, &mut String::new())
}

fn walk(m: &Model, shape: &str, v: &Value, path: &mut String) -> Result<(), String> {
    let Some(s) = m.shapes.get(shape) else {
        return Ok(());
    };
    match (s.kind.as_str(), v) {
        ("structure", Value::Object(obj)) => {
            for (name, child) in obj {
                let Some(target) = s.members.get(name) else {
                    continue;
                };
                let len = path.len();
                if !path.is_empty() {
                    path.push('.');
                }
                path.push_str(name);
                let rule = support(shape, name);
                match rule {
                    Some(Support::Rejected(why)) if !child.is_null() => {
                        return Err(format!("{path}: {why}"));
                    }
                    Some(Support::OnlyDefault(default, why)) if !child.is_null() => {
                        let default: Value = serde_json::from_str(default).unwrap_or(Value::Null);
                        if *child != default {
                            return Err(format!("{path}: {why}"));
                        }
                    }
                    Some(r) if r.descends() => walk(m, target, child, path)?,
                    // Not in the table: the model-walking test fails on it; at run time it
                    // goes to the operation's own parsing.
                    None => walk(m, target, child, path)?,
                    _ => {}
                }
                path.truncate(len);
            }
            Ok(())
        }
        ("list", Value::Array(items)) => {
            let target = s.member.as_deref().unwrap_or_default();
            for (i, item) in items.iter().enumerate() {
                let len = path.len();
                path.push_str(&format!("[{i}]"));
                walk(m, target, item, path)?;
                path.truncate(len);
            }
            Ok(())
        }
        ("map", Value::Object(obj)) => {
            let target = s.value.as_deref().unwrap_or_default();
            for (k, item) in obj {
                let len = path.len();
                path.push_str(&format!(".{k}"));
                walk(m, target, item, path)?;
                path.truncate(len);
            }
            Ok(())
        }
        _ => Ok(()),
    }
}

/// The `Shape.member`s `body`, a request of `op`, carries (those the model knows).
pub fn members_in(op: &str, body: &Value) -> std::collections::BTreeSet<String> {
    fn go(m: &Model, shape: &str, v: &Value, out: &mut std::collections::BTreeSet<String>) {
        let Some(s) = m.shapes.get(shape) else { return };
        match (s.kind.as_str(), v) {
            ("structure", Value::Object(obj)) => {
                for (name, child) in obj {
                    if let Some(target) = s.members.get(name) {
                        out.insert(format!("{shape}.{name}"));
                        go(m, target, child, out);
                    }
                }
            }
            ("list", Value::Array(items)) => {
                for item in items {
                    go(m, s.member.as_deref().unwrap_or_default(), item, out);
                }
            }
            ("map", Value::Object(obj)) => {
                for item in obj.values() {
                    go(m, s.value.as_deref().unwrap_or_default(), item, out);
                }
            }
            _ => {}
        }
    }
    let m = model();
    let mut out = std::collections::BTreeSet::new();
    if let Some(input) = m.operations.get(op) {
        go(m, input, body, &mut out);
    }
    out
}

/// Every `Shape.member` a request of one of `ops` can carry, in walk order, with its support
/// (`None`: not in the table). The walk does not enter a member that is refused or ignored.
pub fn reachable(ops: &[&str]) -> Vec<(String, Option<Support>)> {
    let m = model();
    let mut seen = std::collections::HashSet::new();
    let mut out = Vec::new();
    let mut stack: Vec<String> = ops
        .iter()
        .rev()
        .filter_map(|op| m.operations.get(*op).cloned())
        .collect();
    while let Some(shape) = stack.pop() {
        let Some(s) = m.shapes.get(&shape) else {
            continue;
        };
        match s.kind.as_str() {
            "structure" => {
                let mut next = Vec::new();
                for (name, target) in &s.members {
                    let key = format!("{shape}.{name}");
                    if !seen.insert(key.clone()) {
                        continue;
                    }
                    let rule = support(&shape, name);
                    if rule.is_none_or(|r| r.descends()) {
                        next.push(target.clone());
                    }
                    out.push((key, rule));
                }
                stack.extend(next.into_iter().rev());
            }
            "list" => stack.extend(s.member.clone()),
            "map" => stack.extend(s.value.clone()),
            _ => {}
        }
    }
    out
}

impl Support {
    fn label(self) -> &'static str {
        match self {
            Support::Honoured(_) => "honoured",
            Support::Rejected(_) => "rejected",
            Support::OnlyDefault(..) => "default only",
            Support::NoOp(_) => "accepted, no effect",
            Support::NotYet(_) => "stored, not yet applied",
        }
    }

    fn note(self) -> String {
        match self {
            Support::Honoured(t) | Support::Rejected(t) | Support::NoOp(t) | Support::NotYet(t) => {
                t.to_string()
            }
            Support::OnlyDefault(v, t) => format!("`{v}` accepted; otherwise refused: {t}"),
        }
    }
}

/// The field table of `docs/api-compatibility.md`: every member a request of one of `ops` can
/// carry, in the model's order, with what Flotilla does with it.
pub fn markdown(ops: &[&str]) -> String {
    let mut out = format!(
        "Generated from botocore {}'s model by `tests/api_model.rs` (run it with \
         `FLOTILLA_WRITE_DOCS=1` to rewrite this table). A member under one that is refused or \
         ignored is not listed.\n\n| Member | Flotilla | Notes |\n|---|---|---|\n",
        model().botocore
    );
    for (key, rule) in reachable(ops) {
        let (label, note) = rule.map_or(("UNCLASSIFIED", String::new()), |r| (r.label(), r.note()));
        out.push_str(&format!("| `{key}` | {label} | {note} |\n"));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn refused_members_are_named_by_path() {
        let body = json!({
            "jobDefinitionName": "d", "type": "container",
            "containerProperties": {"image": "busybox", "enableExecuteCommand": true}
        });
        let e = check_value("RegisterJobDefinition", &body).unwrap_err();
        assert!(
            e.starts_with("containerProperties.enableExecuteCommand:"),
            "{e}"
        );
        let body = json!({
            "jobDefinitionName": "d", "type": "container",
            "containerProperties": {"image": "busybox", "enableExecuteCommand": false}
        });
        check_value("RegisterJobDefinition", &body).unwrap();
        let body = json!({"jobName": "j", "jobQueue": "q", "jobDefinition": "d",
            "eksPropertiesOverride": {"podProperties": {}}});
        let e = check_value("SubmitJob", &body).unwrap_err();
        assert!(e.starts_with("eksPropertiesOverride:"), "{e}");
    }

    #[test]
    fn bodies_are_parsed_only_when_they_may_hold_a_refused_member() {
        assert!(triggers("SubmitJob").contains(&"\"nodeOverrides\"".to_string()));
        assert!(!triggers("SubmitJob").contains(&"\"jobName\"".to_string()));
        // Not JSON, but no refused key: passed on to the typed parse, which says what is wrong.
        check("SubmitJob", b"{not json").unwrap();
        let e = check("SubmitJob", br#"{"jobName": "j", "nodeOverrides": {}}"#).unwrap_err();
        assert!(e.starts_with("nodeOverrides:"), "{e}");
        let e = check(
            "SubmitJob",
            br#"{"jobName": "j", "node\u004fverrides": {}}"#,
        )
        .unwrap_err();
        assert!(e.starts_with("nodeOverrides:"), "{e}");
    }

    #[test]
    fn unknown_members_and_nulls_pass() {
        let body = json!({"jobName": "j", "jobQueue": "q", "jobDefinition": "d",
            "notInTheModel": 1, "eksPropertiesOverride": null});
        check_value("SubmitJob", &body).unwrap();
    }

    #[test]
    fn every_table_entry_names_a_member_of_the_model() {
        let m = model();
        for (key, _) in TABLE {
            let (shape, member) = key.split_once('.').unwrap();
            assert!(
                m.shapes
                    .get(shape)
                    .is_some_and(|s| s.members.contains_key(member)),
                "{key} is not in botocore {}'s model",
                m.botocore
            );
        }
    }
}
