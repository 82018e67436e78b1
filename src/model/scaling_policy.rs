//! `computeResources.scalingPolicy`: how long an instance that has run a job is kept once idle.

use serde_json::Value;

const FIELD: &str = "computeResources.scalingPolicy.minScaleDownDelayMinutes";

/// The scale-down delay in minutes `policy` sets: `None` when it sets none (absent, or 0, which
/// AWS Batch takes as "unset"), or why it is invalid (AWS's range is 20 to 10,080 minutes).
pub fn scale_down_delay_minutes(policy: &Value) -> Result<Option<u32>, String> {
    let Some(obj) = policy.as_object() else {
        return Err("computeResources.scalingPolicy: must be an object".into());
    };
    if let Some(k) = obj.keys().find(|k| *k != "minScaleDownDelayMinutes") {
        return Err(format!(
            "computeResources.scalingPolicy.{k}: not a member of ComputeScalingPolicy"
        ));
    }
    match obj.get("minScaleDownDelayMinutes") {
        None | Some(Value::Null) => Ok(None),
        Some(v) => match v.as_i64() {
            Some(0) => Ok(None),
            Some(m @ 20..=10_080) => Ok(Some(m as u32)),
            Some(m) => Err(format!(
                "{FIELD}: {m} is outside 20 to 10080 (0 unsets the delay)"
            )),
            None => Err(format!("{FIELD}: must be an integer")),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn delays_are_read_and_checked_as_aws_batch_does() {
        let d = |v: Value| scale_down_delay_minutes(&v);
        assert_eq!(d(json!({"minScaleDownDelayMinutes": 20})), Ok(Some(20)));
        assert_eq!(
            d(json!({"minScaleDownDelayMinutes": 10080})),
            Ok(Some(10080))
        );
        assert_eq!(d(json!({"minScaleDownDelayMinutes": 0})), Ok(None));
        assert_eq!(d(json!({})), Ok(None));
        for bad in [
            json!({"minScaleDownDelayMinutes": 19}),
            json!({"minScaleDownDelayMinutes": 10081}),
            json!({"minScaleDownDelayMinutes": -1}),
            json!({"minScaleDownDelayMinutes": "20"}),
        ] {
            assert!(d(bad.clone()).unwrap_err().contains(FIELD), "{bad}");
        }
        assert!(
            d(json!({"other": 1}))
                .unwrap_err()
                .contains("scalingPolicy.other")
        );
        assert!(d(json!(20)).is_err());
    }
}
