//! One shared SDK configuration for EC2, ECS, SSM and CloudWatch Logs, with the discipline every call
//! goes through: a client-side rate limit per operation, the SDK's jittered exponential retries
//! on throttling and 5xx, a timeout, and a metric per call and outcome.

use aws_config::BehaviorVersion;
use aws_config::retry::RetryConfig;
use aws_config::timeout::TimeoutConfig;
use aws_sdk_ec2::error::{ProvideErrorMetadata, SdkError};
use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Error codes AWS uses for throttling; the SDK retries these, and so do our loops.
const THROTTLING: &[&str] = &[
    "Throttling",
    "ThrottlingException",
    "RequestLimitExceeded",
    "TooManyRequestsException",
    "RequestThrottled",
    "ProvisionedThroughputExceededException",
];
/// Server-side failures worth another try.
const TRANSIENT: &[&str] = &[
    "InternalError",
    "InternalFailure",
    "ServerException",
    "ServiceUnavailable",
    "ServiceUnavailableException",
    "Unavailable",
];

/// An AWS call that failed after the SDK's own retries.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{service}:{operation}: {code}: {message}")]
pub struct AwsError {
    pub service: &'static str,
    pub operation: &'static str,
    /// AWS's error code, or `Timeout` / `Dispatch` / `Response` when none came back.
    pub code: String,
    pub message: String,
    /// Throttling, a 5xx, a timeout or a lost connection: trying again later may succeed, and a
    /// mutating call may or may not have been applied.
    pub retryable: bool,
}

/// Where AWS is and how to reach it.
#[derive(Debug, Clone)]
pub struct ApiOptions {
    /// `--aws-endpoint-url`: an emulator; otherwise AWS's own endpoints.
    pub endpoint_url: Option<String>,
    pub region: String,
    /// Bound on one call including the SDK's retries.
    pub call_timeout: Duration,
    /// Attempts per call, first included.
    pub max_attempts: u32,
    /// Checked before every call that changes something in AWS: only the leader replica may.
    pub fence: Arc<crate::util::fence::Fence>,
    /// `--aws-rate-limit`: an account's raised quotas, replacing [`default_limit`]'s per
    /// operation.
    pub limits: Vec<RateLimit>,
}

/// A client-side limit of one AWS operation: sustained requests per second and burst.
#[derive(Debug, Clone, PartialEq)]
pub struct RateLimit {
    pub operation: &'static str,
    pub rate: f64,
    pub burst: f64,
}

/// Every operation the driver calls, as AWS names it (what `--aws-rate-limit` may name).
pub const OPERATIONS: &[&str] = &[
    "CreateFleet",
    "TerminateInstances",
    "CreateLaunchTemplate",
    "CreateLaunchTemplateVersion",
    "DeleteLaunchTemplate",
    "DescribeInstances",
    "DescribeInstanceTypes",
    "DescribeLaunchTemplates",
    "DescribeLaunchTemplateVersions",
    "DescribeSpotPriceHistory",
    "CreateCluster",
    "DescribeClusters",
    "DeleteCluster",
    "RegisterTaskDefinition",
    "StartTask",
    "StopTask",
    "DescribeTasks",
    "ListTasks",
    "ListContainerInstances",
    "DescribeContainerInstances",
    "UpdateContainerInstancesState",
    "DeregisterContainerInstance",
    "GetParameters",
    "GetLogEvents",
    "PutMetricData",
];

impl std::str::FromStr for RateLimit {
    type Err = String;

    /// `Operation=RATE` or `Operation=RATE:BURST` (burst defaults to the operation's own).
    fn from_str(s: &str) -> Result<RateLimit, String> {
        let (op, value) = s
            .split_once('=')
            .ok_or_else(|| format!("{s:?}: expected OPERATION=RATE[:BURST]"))?;
        let operation = OPERATIONS
            .iter()
            .copied()
            .find(|o| *o == op)
            .ok_or_else(|| {
                format!(
                    "{op:?} is not an operation Flotilla calls (one of {})",
                    OPERATIONS.join(", ")
                )
            })?;
        let (rate, burst) = match value.split_once(':') {
            Some((r, b)) => (r, Some(b)),
            None => (value, None),
        };
        let number = |v: &str, what: &str| {
            v.parse::<f64>()
                .ok()
                .filter(|n| n.is_finite() && *n > 0.0 && *n <= 100_000.0)
                .ok_or_else(|| format!("{op}: {what} {v:?} is not a number in (0, 100000]"))
        };
        let rate = number(rate, "rate")?;
        let burst = match burst {
            Some(b) => number(b, "burst")?.max(1.0),
            None => default_limit(operation).1.max(rate),
        };
        Ok(RateLimit {
            operation,
            rate,
            burst,
        })
    }
}

struct Bucket {
    rate: f64,
    burst: f64,
    tokens: f64,
    at: Instant,
}

/// AWS-side clients and the per-operation token buckets in front of them.
pub struct Api {
    pub ec2: aws_sdk_ec2::Client,
    pub ecs: aws_sdk_ecs::Client,
    pub logs: aws_sdk_cloudwatchlogs::Client,
    /// The public parameters naming the ECS-optimized AMIs.
    pub ssm: aws_sdk_ssm::Client,
    buckets: Mutex<HashMap<&'static str, Bucket>>,
    limits: Vec<RateLimit>,
    fence: Arc<crate::util::fence::Fence>,
}

/// Client-side limits at AWS's documented defaults (requests per second, burst), so that a
/// backlog of 100,000 jobs cannot turn into a throttling storm against the account.
pub fn default_limit(operation: &str) -> (f64, f64) {
    match operation {
        // EC2 mutating actions: 5/s refill.
        "CreateFleet"
        | "TerminateInstances"
        | "CreateLaunchTemplate"
        | "CreateLaunchTemplateVersion"
        | "DeleteLaunchTemplate" => (5.0, 50.0),
        // EC2 non-mutating actions: 20/s refill, burst 100.
        "DescribeInstances"
        | "DescribeLaunchTemplates"
        | "DescribeLaunchTemplateVersions"
        | "DescribeSpotPriceHistory" => (20.0, 100.0),
        // ECS: most APIs 20/s sustained, burst 50–100.
        "StartTask" | "StopTask" => (20.0, 100.0),
        "DescribeTasks" | "ListTasks" | "ListContainerInstances" | "DescribeContainerInstances" => {
            (20.0, 50.0)
        }
        // CloudWatch Logs GetLogEvents: 25 per second per account.
        "GetLogEvents" => (25.0, 25.0),
        _ => (10.0, 20.0),
    }
}

impl Api {
    pub async fn connect(opts: &ApiOptions) -> Api {
        let mut loader = aws_config::defaults(BehaviorVersion::latest())
            .region(aws_config::Region::new(opts.region.clone()))
            .retry_config(
                RetryConfig::standard()
                    .with_max_attempts(opts.max_attempts.max(1))
                    .with_initial_backoff(Duration::from_millis(100))
                    .with_max_backoff(Duration::from_secs(5)),
            )
            .timeout_config(
                TimeoutConfig::builder()
                    .operation_timeout(opts.call_timeout)
                    .operation_attempt_timeout(opts.call_timeout / 2)
                    .connect_timeout(Duration::from_secs(5))
                    .build(),
            );
        if let Some(url) = &opts.endpoint_url {
            loader = loader.endpoint_url(url);
        }
        let shared = loader.load().await;
        Api {
            ec2: aws_sdk_ec2::Client::new(&shared),
            ecs: aws_sdk_ecs::Client::new(&shared),
            logs: aws_sdk_cloudwatchlogs::Client::new(&shared),
            ssm: aws_sdk_ssm::Client::new(&shared),
            buckets: Mutex::new(HashMap::new()),
            limits: opts.limits.clone(),
            fence: opts.fence.clone(),
        }
    }

    /// Waits for the operation's token bucket, then runs the call.
    pub async fn call<T, E, R>(
        &self,
        service: &'static str,
        operation: &'static str,
        fut: impl Future<Output = Result<T, SdkError<E, R>>>,
    ) -> Result<T, AwsError>
    where
        E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
        R: std::fmt::Debug,
    {
        self.acquire(operation).await;
        // After the wait for the bucket, right before the request leaves: a leader paused past
        // its lease in between must not launch or terminate anything. Reads stay allowed.
        let reads = ["Describe", "List", "Get", "Filter"];
        if !reads.iter().any(|p| operation.starts_with(p))
            && let Err(e) = self.fence.check()
        {
            crate::metrics::aws_call(service, operation, "fenced");
            return Err(AwsError {
                service,
                operation,
                code: "Fenced".into(),
                message: e.to_string(),
                retryable: false,
            });
        }
        let out = fut.await;
        match out {
            Ok(v) => {
                crate::metrics::aws_call(service, operation, "ok");
                Ok(v)
            }
            Err(e) => {
                let err = classify(service, operation, &e);
                let outcome = if THROTTLING.contains(&err.code.as_str()) {
                    "throttled"
                } else {
                    "error"
                };
                crate::metrics::aws_call(service, operation, outcome);
                tracing::debug!(service, operation, code = %err.code, message = %err.message, "aws call failed");
                Err(err)
            }
        }
    }

    /// The operation's limit: the configured one, else AWS's default.
    pub fn limit(&self, operation: &str) -> (f64, f64) {
        self.limits
            .iter()
            .find(|l| l.operation == operation)
            .map_or_else(|| default_limit(operation), |l| (l.rate, l.burst))
    }

    /// Takes the operation's next token, waiting for it when the bucket is empty. A caller
    /// reserves its token at once (the balance may go below zero) and sleeps exactly until it
    /// is due: 600 StartTasks queued behind a 20/s limit sleep once each, in arrival order,
    /// instead of all waking at every refill to race for one token.
    async fn acquire(&self, operation: &'static str) {
        let wait = {
            let Ok(mut buckets) = self.buckets.lock() else {
                return;
            };
            let b = buckets.entry(operation).or_insert_with(|| {
                let (rate, burst) = self.limit(operation);
                Bucket {
                    rate,
                    burst,
                    tokens: burst,
                    at: Instant::now(),
                }
            });
            reserve(b, Instant::now())
        };
        if let Some(wait) = wait {
            crate::metrics::aws_rate_wait(operation, wait);
            tokio::time::sleep(wait).await;
        }
    }
}

/// Refills the bucket up to now and takes one token; how long the caller must wait for it.
fn reserve(b: &mut Bucket, now: Instant) -> Option<Duration> {
    b.tokens = (b.tokens + now.duration_since(b.at).as_secs_f64() * b.rate).min(b.burst);
    b.at = now;
    b.tokens -= 1.0;
    (b.tokens < 0.0).then(|| Duration::from_secs_f64(-b.tokens / b.rate))
}

fn classify<E, R>(service: &'static str, operation: &'static str, e: &SdkError<E, R>) -> AwsError
where
    E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
    R: std::fmt::Debug,
{
    let (code, message, retryable) = match e {
        SdkError::TimeoutError(_) => (
            "Timeout".to_string(),
            "the call timed out".to_string(),
            true,
        ),
        SdkError::DispatchFailure(d) => ("Dispatch".to_string(), format!("{d:?}"), true),
        SdkError::ResponseError(r) => ("Response".to_string(), format!("{r:?}"), true),
        SdkError::ServiceError(s) => {
            let err = s.err();
            let code = err.code().unwrap_or("Unknown").to_string();
            // No code at all (an HTML 500 from a proxy) is a server fault, not a bad request.
            let retryable = code == "Unknown"
                || THROTTLING.contains(&code.as_str())
                || TRANSIENT.contains(&code.as_str());
            (
                code,
                err.message().unwrap_or_default().to_string(),
                retryable,
            )
        }
        other => ("Unknown".to_string(), format!("{other:?}"), true),
    };
    AwsError {
        service,
        operation,
        code,
        message,
        retryable,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_rate_limit_names_a_known_operation_and_positive_numbers() {
        let l: RateLimit = "StartTask=100:200".parse().unwrap();
        assert_eq!((l.operation, l.rate, l.burst), ("StartTask", 100.0, 200.0));
        // Without a burst: the default one, but never below the rate.
        let l: RateLimit = "StartTask=40".parse().unwrap();
        assert_eq!((l.rate, l.burst), (40.0, 100.0));
        let l: RateLimit = "StartTask=400".parse().unwrap();
        assert_eq!(l.burst, 400.0);
        for bad in [
            "StartTask",
            "Starttask=5",
            "RunTask=5",
            "StartTask=0",
            "StartTask=-1",
            "StartTask=x",
            "StartTask=5:nan",
            "StartTask=inf",
        ] {
            assert!(bad.parse::<RateLimit>().is_err(), "{bad}");
        }
        assert!(
            "RunTask=5"
                .parse::<RateLimit>()
                .unwrap_err()
                .contains("StartTask")
        );
    }

    #[test]
    fn the_bucket_serves_its_burst_then_one_caller_per_interval_in_order() {
        let t0 = Instant::now();
        let mut b = Bucket {
            rate: 20.0,
            burst: 3.0,
            tokens: 3.0,
            at: t0,
        };
        for _ in 0..3 {
            assert_eq!(reserve(&mut b, t0), None);
        }
        // Queued callers are due 50 ms apart: the 4th at 50 ms, the 5th at 100 ms.
        let waits: Vec<u64> = (0..3)
            .map(|_| (reserve(&mut b, t0).unwrap().as_secs_f64() * 1e3).round() as u64)
            .collect();
        assert_eq!(waits, [50, 100, 150]);
        // A second later the debt is paid and the bucket refilled to its burst, no further.
        let later = t0 + Duration::from_secs(10);
        for _ in 0..3 {
            assert_eq!(reserve(&mut b, later), None);
        }
        assert!(reserve(&mut b, later).is_some());
    }

    #[test]
    fn every_operation_the_driver_calls_can_be_limited() {
        // Each `api.call("service", "Operation", …)` in the driver names one of OPERATIONS, so
        // that `--aws-rate-limit` can reach it.
        let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/src/compute/aws");
        for entry in std::fs::read_dir(dir).unwrap() {
            let text = std::fs::read_to_string(entry.unwrap().path()).unwrap();
            let words: Vec<&str> = text
                .split(|c: char| !c.is_ascii_alphanumeric() && c != '"')
                .filter(|w| !w.is_empty())
                .collect();
            for pair in words.windows(2) {
                let service = [
                    "\"ec2\"",
                    "\"ecs\"",
                    "\"ssm\"",
                    "\"logs\"",
                    "\"cloudwatch\"",
                ];
                if service.contains(&pair[0]) && pair[1].starts_with('"') {
                    let op = pair[1].trim_matches('"');
                    if op.chars().next().is_some_and(|c| c.is_ascii_uppercase()) {
                        assert!(OPERATIONS.contains(&op), "{op} is missing from OPERATIONS");
                    }
                }
            }
        }
    }
}
