//! `updatePolicy` of UpdateComputeEnvironment: what happens to running jobs when an
//! infrastructure update replaces an environment's instances.

use serde_json::Value;

/// AWS Batch's default and bounds of `jobExecutionTimeoutMinutes`.
pub const DEFAULT_TIMEOUT_MINUTES: i64 = 30;
const MAX_TIMEOUT_MINUTES: i64 = 360;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UpdatePolicy {
    /// Stop jobs still running on a replaced instance once `timeout_minutes` have passed.
    pub terminate_jobs_on_update: bool,
    pub timeout_minutes: i64,
}

impl Default for UpdatePolicy {
    fn default() -> Self {
        UpdatePolicy {
            terminate_jobs_on_update: false,
            timeout_minutes: DEFAULT_TIMEOUT_MINUTES,
        }
    }
}

/// Parses and checks `updatePolicy`; the error names the field.
pub fn parse(v: &Value) -> Result<UpdatePolicy, String> {
    const F: &str = "updatePolicy";
    let Some(o) = v.as_object() else {
        return Err(format!("{F}: must be an object"));
    };
    let mut p = UpdatePolicy::default();
    match o.get("terminateJobsOnUpdate") {
        None | Some(Value::Null) => {}
        Some(Value::Bool(b)) => p.terminate_jobs_on_update = *b,
        Some(_) => return Err(format!("{F}.terminateJobsOnUpdate: must be true or false")),
    }
    match o.get("jobExecutionTimeoutMinutes") {
        None | Some(Value::Null) => {}
        Some(n) => match n.as_i64() {
            Some(m) if (1..=MAX_TIMEOUT_MINUTES).contains(&m) => p.timeout_minutes = m,
            _ => {
                return Err(format!(
                    "{F}.jobExecutionTimeoutMinutes: must be a whole number of minutes from 1 to {MAX_TIMEOUT_MINUTES}, got {n}"
                ));
            }
        },
    }
    Ok(p)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn defaults_and_bounds() {
        assert_eq!(parse(&json!({})).unwrap(), UpdatePolicy::default());
        let p = parse(&json!({"terminateJobsOnUpdate": true, "jobExecutionTimeoutMinutes": 5}))
            .unwrap();
        assert!(p.terminate_jobs_on_update);
        assert_eq!(p.timeout_minutes, 5);
        for (bad, field) in [
            (
                json!({"jobExecutionTimeoutMinutes": 0}),
                "jobExecutionTimeoutMinutes",
            ),
            (
                json!({"jobExecutionTimeoutMinutes": 361}),
                "jobExecutionTimeoutMinutes",
            ),
            (
                json!({"terminateJobsOnUpdate": "yes"}),
                "terminateJobsOnUpdate",
            ),
            (json!([]), "updatePolicy"),
        ] {
            assert!(parse(&bad).unwrap_err().contains(field), "{bad}");
        }
    }
}
