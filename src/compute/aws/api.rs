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
    fence: Arc<crate::util::fence::Fence>,
}

/// Client-side limits at AWS's documented defaults (requests per second, burst), so that a
/// backlog of 100,000 jobs cannot turn into a throttling storm against the account.
fn limit(operation: &str) -> (f64, f64) {
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

    async fn acquire(&self, operation: &'static str) {
        loop {
            let wait = {
                let Ok(mut buckets) = self.buckets.lock() else {
                    return;
                };
                let b = buckets.entry(operation).or_insert_with(|| {
                    let (rate, burst) = limit(operation);
                    Bucket {
                        rate,
                        burst,
                        tokens: burst,
                        at: Instant::now(),
                    }
                });
                let now = Instant::now();
                b.tokens =
                    (b.tokens + now.duration_since(b.at).as_secs_f64() * b.rate).min(b.burst);
                b.at = now;
                if b.tokens >= 1.0 {
                    b.tokens -= 1.0;
                    return;
                }
                Duration::from_secs_f64((1.0 - b.tokens) / b.rate)
            };
            tokio::time::sleep(wait).await;
        }
    }
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
