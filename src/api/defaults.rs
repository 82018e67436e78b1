//! The empty collections AWS Batch puts in its Describe answers.
//!
//! Flotilla stores only what was given (100,000 jobs with `"parameters": {}` and five empty
//! container lists each would be a fifth more to write and keep), and AWS answers with those
//! members present and empty; clients and tests written against AWS index them without a check
//! (`job["container"]["environment"]`, `jd["parameters"]`). So the answer gets them here, on the
//! way out. Which members: those AWS's own examples and answers show empty (botocore's
//! `examples-1.json` for DescribeJobs and DescribeJobDefinitions; `tags` on every taggable
//! resource).

use serde_json::{Map, Value};

/// Container members AWS returns as `[]` when the job or definition has none.
const CONTAINER_LISTS: [&str; 5] = [
    "command",
    "environment",
    "mountPoints",
    "ulimits",
    "volumes",
];

fn ensure(obj: &mut Map<String, Value>, key: &str, empty: fn() -> Value) {
    obj.entry(key).or_insert_with(empty);
}

fn list() -> Value {
    Value::Array(Vec::new())
}

fn map() -> Value {
    Value::Object(Map::new())
}

fn container(c: &mut Value) {
    if let Some(c) = c.as_object_mut() {
        for key in CONTAINER_LISTS {
            ensure(c, key, list);
        }
    }
}

fn each(answer: &mut Value, list_key: &str, f: impl Fn(&mut Map<String, Value>)) {
    if let Some(items) = answer.get_mut(list_key).and_then(Value::as_array_mut) {
        for item in items.iter_mut().filter_map(Value::as_object_mut) {
            f(item);
        }
    }
}

/// Fills `answer` (the body of a successful `op`) with the empty collections AWS returns.
pub fn fill(op: &str, answer: &mut Value) {
    match op {
        "DescribeJobs" => each(answer, "jobs", |j| {
            ensure(j, "parameters", map);
            ensure(j, "dependsOn", list);
            ensure(j, "tags", map);
            if let Some(c) = j.get_mut("container") {
                container(c);
            }
        }),
        "DescribeJobDefinitions" => each(answer, "jobDefinitions", |d| {
            ensure(d, "parameters", map);
            ensure(d, "tags", map);
            if let Some(c) = d.get_mut("containerProperties") {
                container(c);
            }
        }),
        "DescribeJobQueues" => each(answer, "jobQueues", |q| ensure(q, "tags", map)),
        "DescribeComputeEnvironments" => {
            each(answer, "computeEnvironments", |c| ensure(c, "tags", map))
        }
        "DescribeSchedulingPolicies" => {
            each(answer, "schedulingPolicies", |p| ensure(p, "tags", map))
        }
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn missing_collections_are_added_and_present_ones_kept() {
        let mut a = json!({"jobs": [
            {"jobId": "a", "container": {"image": "busybox", "command": ["true"]}},
            {"jobId": "b", "parameters": {"k": "v"}, "tags": {"t": "1"}},
        ]});
        fill("DescribeJobs", &mut a);
        assert_eq!(a["jobs"][0]["parameters"], json!({}));
        assert_eq!(a["jobs"][0]["dependsOn"], json!([]));
        assert_eq!(a["jobs"][0]["container"]["command"], json!(["true"]));
        assert_eq!(a["jobs"][0]["container"]["volumes"], json!([]));
        assert_eq!(a["jobs"][1]["parameters"], json!({"k": "v"}));
        assert_eq!(a["jobs"][1]["tags"], json!({"t": "1"}));
        assert!(a["jobs"][1].get("container").is_none());
    }
}
