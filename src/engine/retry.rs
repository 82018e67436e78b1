//! What happens after an attempt ends: AWS Batch's `retryStrategy` and `evaluateOnExit` rules.

use crate::model::{RetryAction, RetryStrategy};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Succeeded,
    /// Back to RUNNABLE for another attempt.
    Retry,
    Failed,
}

/// AWS's patterns: exact, or a prefix when the pattern ends with `*`.
pub fn glob_match(pattern: &str, value: &str) -> bool {
    match pattern.strip_suffix('*') {
        Some(prefix) => value.starts_with(prefix),
        None => value == pattern,
    }
}

/// How an attempt ended, as the retry rules see it.
#[derive(Debug, Clone, Copy)]
pub struct AttemptEnd<'a> {
    pub exit_code: Option<i32>,
    /// The container reason (`attempts[].container.reason`).
    pub reason: Option<&'a str>,
    /// The attempt's `statusReason`.
    pub status_reason: &'a str,
}

/// Decides the outcome of an attempt that ended on its own (not cancelled, terminated or timed
/// out: those never retry). `attempts_made` includes the attempt that just ended.
pub fn decide(rs: Option<&RetryStrategy>, attempts_made: usize, end: AttemptEnd<'_>) -> Outcome {
    if end.exit_code == Some(0) {
        return Outcome::Succeeded;
    }
    let max = rs.and_then(|r| r.attempts).unwrap_or(1).max(1) as usize;
    let rules = rs
        .and_then(|r| r.evaluate_on_exit.as_deref())
        .unwrap_or(&[]);
    let exit = end.exit_code.map(|c| c.to_string());
    let matched = rules.iter().find(|e| {
        e.on_exit_code
            .as_deref()
            .is_none_or(|p| exit.as_deref().is_some_and(|x| glob_match(p, x)))
            && e.on_reason
                .as_deref()
                .is_none_or(|p| glob_match(p, end.reason.unwrap_or("")))
            && e.on_status_reason
                .as_deref()
                .is_none_or(|p| glob_match(p, end.status_reason))
    });
    // The first matching rule decides; when none matches, AWS Batch retries.
    let wants_retry =
        matched.is_none_or(|e| RetryAction::parse(&e.action) == Some(RetryAction::Retry));
    if wants_retry && attempts_made < max {
        Outcome::Retry
    } else {
        Outcome::Failed
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::EvaluateOnExit;

    fn rs(attempts: i32, rules: Vec<EvaluateOnExit>) -> RetryStrategy {
        RetryStrategy {
            attempts: Some(attempts),
            evaluate_on_exit: (!rules.is_empty()).then_some(rules),
        }
    }

    fn end(code: Option<i32>) -> AttemptEnd<'static> {
        AttemptEnd {
            exit_code: code,
            reason: None,
            status_reason: "Essential container in task exited",
        }
    }

    #[test]
    fn zero_exit_succeeds_and_no_strategy_never_retries() {
        assert_eq!(decide(None, 1, end(Some(0))), Outcome::Succeeded);
        assert_eq!(decide(None, 1, end(Some(1))), Outcome::Failed);
    }

    #[test]
    fn attempts_bound_retries() {
        let r = rs(3, vec![]);
        assert_eq!(decide(Some(&r), 1, end(Some(1))), Outcome::Retry);
        assert_eq!(decide(Some(&r), 2, end(Some(1))), Outcome::Retry);
        assert_eq!(decide(Some(&r), 3, end(Some(1))), Outcome::Failed);
    }

    #[test]
    fn first_matching_rule_decides_and_no_match_retries() {
        let r = rs(
            5,
            vec![
                EvaluateOnExit {
                    on_exit_code: Some("3*".into()),
                    action: "exit".into(),
                    ..Default::default()
                },
                EvaluateOnExit {
                    on_exit_code: Some("3".into()),
                    action: "RETRY".into(),
                    ..Default::default()
                },
            ],
        );
        assert_eq!(decide(Some(&r), 1, end(Some(3))), Outcome::Failed);
        assert_eq!(decide(Some(&r), 1, end(Some(34))), Outcome::Failed);
        assert_eq!(decide(Some(&r), 1, end(Some(4))), Outcome::Retry);
    }

    #[test]
    fn all_conditions_of_a_rule_must_match() {
        let r = rs(
            2,
            vec![EvaluateOnExit {
                on_exit_code: Some("1".into()),
                on_reason: Some("OutOfMemory*".into()),
                action: "EXIT".into(),
                ..Default::default()
            }],
        );
        let oom = AttemptEnd {
            exit_code: Some(1),
            reason: Some("OutOfMemoryError: container killed"),
            status_reason: "x",
        };
        assert_eq!(decide(Some(&r), 1, oom), Outcome::Failed);
        assert_eq!(decide(Some(&r), 1, end(Some(1))), Outcome::Retry);
    }

    #[test]
    fn status_reason_rules_match_host_failures() {
        let r = rs(
            3,
            vec![
                EvaluateOnExit {
                    on_status_reason: Some("Host EC2*".into()),
                    action: "RETRY".into(),
                    ..Default::default()
                },
                EvaluateOnExit {
                    on_reason: Some("*".into()),
                    action: "EXIT".into(),
                    ..Default::default()
                },
            ],
        );
        let host = AttemptEnd {
            exit_code: None,
            reason: None,
            status_reason: "Host EC2 (instance i-1) terminated.",
        };
        assert_eq!(decide(Some(&r), 1, host), Outcome::Retry);
        assert_eq!(decide(Some(&r), 1, end(Some(2))), Outcome::Failed);
        // An exit-code rule cannot match an attempt that has no exit code.
        let code_rule = rs(
            3,
            vec![EvaluateOnExit {
                on_exit_code: Some("*".into()),
                action: "EXIT".into(),
                ..Default::default()
            }],
        );
        assert_eq!(decide(Some(&code_rule), 1, host), Outcome::Retry);
    }
}
