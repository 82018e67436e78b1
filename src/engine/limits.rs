//! A queue's `jobStateTimeLimitActions`: what to do with a job that has waited RUNNABLE too long
//! for a reason the queue names.

use crate::model::{JobStateTimeLimitAction, JobStatus};

/// The action that applies to a RUNNABLE job, if any: the first whose `reason` the job's
/// `statusReason` starts with (AWS's reasons are codes such as
/// `CAPACITY:INSUFFICIENT_INSTANCE_CAPACITY`, which Flotilla's reasons begin with) and whose
/// `maxTimeSeconds` has passed since the job became RUNNABLE.
pub fn due<'a>(
    actions: &'a [JobStateTimeLimitAction],
    status_reason: Option<&str>,
    runnable_since_ms: i64,
    now_ms: i64,
) -> Option<&'a JobStateTimeLimitAction> {
    let reason = status_reason?;
    actions.iter().find(|a| {
        a.state == JobStatus::Runnable.as_str()
            && !a.reason.is_empty()
            && reason.starts_with(a.reason.as_str())
            && now_ms - runnable_since_ms >= i64::from(a.max_time_seconds) * 1000
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn action(reason: &str, secs: i32) -> JobStateTimeLimitAction {
        JobStateTimeLimitAction {
            reason: reason.into(),
            state: "RUNNABLE".into(),
            max_time_seconds: secs,
            action: "CANCEL".into(),
        }
    }

    #[test]
    fn applies_only_to_a_matching_reason_after_the_limit() {
        let actions = [
            action("MISCONFIGURATION:JOB_RESOURCE_REQUIREMENT", 600),
            action("CAPACITY:INSUFFICIENT_INSTANCE_CAPACITY", 3600),
        ];
        let never_fits =
            Some("MISCONFIGURATION:JOB_RESOURCE_REQUIREMENT - The job requires 64 vCPU");
        assert!(due(&actions, never_fits, 0, 599_999).is_none());
        assert_eq!(
            due(&actions, never_fits, 0, 600_000).map(|a| a.max_time_seconds),
            Some(600)
        );
        let waiting = Some("CAPACITY:INSUFFICIENT_INSTANCE_CAPACITY - Waiting for 2 vCPU");
        assert!(due(&actions, waiting, 0, 600_000).is_none());
        assert_eq!(
            due(&actions, waiting, 0, 3_600_000).map(|a| a.max_time_seconds),
            Some(3600)
        );
        assert!(due(&actions, None, 0, i64::MAX / 2).is_none());
        assert!(due(&[], never_fits, 0, i64::MAX / 2).is_none());
    }
}
