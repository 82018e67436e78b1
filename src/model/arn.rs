//! Names inside ARNs, and the log names AWS Batch derives from them.

/// The CloudWatch Logs group of job output when the definition names no other (AWS Batch's).
pub const JOB_LOG_GROUP: &str = "/aws/batch/job";

/// The part of an ARN after its last `/` (a task ID, a cluster name); the input if it has none.
pub fn name_of_arn(arn: &str) -> &str {
    arn.rsplit_once('/').map_or(arn, |(_, n)| n)
}

/// `NAME` from `...:job-definition/NAME:REV`.
pub fn definition_name(arn: &str) -> &str {
    let n = name_of_arn(arn);
    n.rsplit_once(':').map_or(n, |(n, _)| n)
}

/// AWS Batch's log stream of an attempt: `<definition name>/default/<task ID>`. `task` may be
/// an ECS task ARN; its ID is the last segment.
pub fn stream_name(definition_arn: &str, task: &str) -> String {
    format!(
        "{}/default/{}",
        definition_name(definition_arn),
        name_of_arn(task)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_come_out_of_arns() {
        let def = "arn:aws:batch:us-east-1:000000000000:job-definition/step:3";
        assert_eq!(definition_name(def), "step");
        assert_eq!(name_of_arn("arn:aws:ecs:us-east-1:1:task/c/abc"), "abc");
        assert_eq!(name_of_arn("plain"), "plain");
        assert_eq!(
            stream_name(def, "arn:aws:ecs:us-east-1:1:task/c/abc"),
            "step/default/abc"
        );
    }
}
