//! HTTP: the AWS Batch API (restJson1) routes, SigV4 verification, error mapping, `/metrics`,
//! `/healthz`.
//!
//! Every `/v1/...` request goes through one handler that routes on the raw path itself: the raw
//! (still percent-encoded) path and query are what SigV4 signs, and routing by hand keeps them
//! untouched.

mod body;
pub mod compat;
mod cost;
mod defaults;
pub mod events;
pub mod listener;
pub mod logs;
pub mod sigv4;

pub use body::BodyLimits;

use crate::batch::Batch;
use crate::console;
use crate::error::BatchError;
use crate::model::*;
use axum::Router;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::{Value, json};
use std::sync::Arc;
use tracing::Instrument;

pub struct AppState {
    pub batch: Arc<Batch>,
    /// `None`: unauthenticated (allowed only on loopback; the server checks at start).
    pub credentials: Option<sigv4::CredentialStore>,
    /// Job logs, served as CloudWatch Logs (see [`logs`]); `None`: no logs API.
    pub logs: Option<Arc<crate::logs::LogStore>>,
    /// The AWS driver, when the server runs one: logs of jobs that ran on ECS are read from
    /// CloudWatch Logs through it.
    pub aws: Option<Arc<crate::compute::aws::AwsDriver>>,
    /// How request bodies are read: size, time and memory bounds.
    pub body_limits: BodyLimits,
    /// Serve `/metrics` on the API listener (false when it has a listener of its own).
    pub metrics_on_api: bool,
    /// Replicas on PostgreSQL: whether this one leads, for `/healthz`; `None` on SQLite.
    pub role: Option<Arc<crate::server::replica::Role>>,
}

/// Largest request body read at all; per-operation limits are stricter.
const MAX_BODY: usize = 1024 * 1024;
const MAX_SUBMIT_JOB: usize = 30 * 1024;
const MAX_JOB_DEFINITION: usize = 24 * 1024;

/// The largest body `op` accepts.
fn max_body(op: &str) -> usize {
    match op {
        "SubmitJob" => MAX_SUBMIT_JOB,
        "RegisterJobDefinition" => MAX_JOB_DEFINITION,
        _ => MAX_BODY,
    }
}

pub fn router(state: Arc<AppState>) -> Router {
    let router = Router::new()
        .route("/healthz", get(healthz))
        .route("/events", get(events::stream))
        .route("/cost", get(cost::report));
    let router = if state.metrics_on_api {
        router.route("/metrics", get(metrics))
    } else {
        router
    };
    // The web console has its own routes and its own sign-in (a session cookie, not SigV4).
    router
        .fallback(handle)
        .with_state(state.clone())
        .merge(console::router(state))
}

/// 200 `ok`, or 503 `degraded` while the store's writes fail (a full or failing disk): the
/// server still answers reads, but accepts nothing new and moves no job until writes land.
async fn healthz(State(state): State<Arc<AppState>>) -> Response {
    match state.batch.store().write_health().status() {
        None => match &state.role {
            None => "ok".into_response(),
            Some(role) => {
                let (name, epoch) = (
                    if role.is_leader() {
                        "leader"
                    } else {
                        "follower"
                    },
                    role.epoch(),
                );
                let body = if epoch > 0 {
                    format!("ok {name} epoch={epoch}\n")
                } else {
                    format!("ok {name}\n")
                };
                ([("x-flotilla-role", name)], body).into_response()
            }
        },
        Some(d) => (
            StatusCode::SERVICE_UNAVAILABLE,
            format!(
                "degraded: store writes failing for {} s: {}\n",
                d.failing_for.as_secs(),
                d.last_error
            ),
        )
            .into_response(),
    }
}

/// `/metrics` alone, for its own listener (`--metrics-listen`).
pub fn metrics_router(state: Arc<AppState>) -> Router {
    Router::new()
        .route("/metrics", get(metrics))
        .with_state(state)
}

async fn metrics(State(state): State<Arc<AppState>>) -> Response {
    match state.batch.store().count_jobs_by_queue_status().await {
        Ok(depths) => (
            [(
                "content-type",
                "application/openmetrics-text; version=1.0.0; charset=utf-8",
            )],
            crate::metrics::render(&depths),
        )
            .into_response(),
        Err(e) => ApiError::from(BatchError::from(e)).into_response(),
    }
}

/// An error answered in AWS's restJson1 form.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    error_type: &'static str,
    message: String,
}

impl ApiError {
    fn new(status: StatusCode, error_type: &'static str, message: impl Into<String>) -> Self {
        ApiError {
            status,
            error_type,
            message: message.into(),
        }
    }

    fn client(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "ClientException", message)
    }
}

impl From<BatchError> for ApiError {
    fn from(e: BatchError) -> Self {
        match e {
            BatchError::Client(m) => ApiError::client(m),
            BatchError::Unavailable(m) => {
                ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "ServerException", m)
            }
            BatchError::Internal(m) => {
                tracing::error!(error = %m, "internal error");
                ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "ServerException", m)
            }
        }
    }
}

impl From<sigv4::AuthError> for ApiError {
    fn from(e: sigv4::AuthError) -> Self {
        ApiError::new(e.status(), e.error_type(), e.to_string())
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = json!({ "__type": self.error_type, "message": self.message });
        (
            self.status,
            [("x-amzn-errortype", self.error_type)],
            axum::Json(body),
        )
            .into_response()
    }
}

/// The operations of AWS Batch's model that Flotilla implements.
pub const OPERATIONS: &[&str] = &[
    "CancelJob",
    "CancelJobs",
    "CreateComputeEnvironment",
    "CreateConsumableResource",
    "CreateJobQueue",
    "CreateSchedulingPolicy",
    "DeleteComputeEnvironment",
    "DeleteConsumableResource",
    "DeleteJobQueue",
    "DeleteSchedulingPolicy",
    "DeregisterJobDefinition",
    "DescribeComputeEnvironments",
    "DescribeConsumableResource",
    "DescribeJobDefinitions",
    "DescribeJobQueues",
    "DescribeJobs",
    "DescribeSchedulingPolicies",
    "GetJobQueueSnapshot",
    "ListConsumableResources",
    "ListJobs",
    "ListJobsByConsumableResource",
    "ListSchedulingPolicies",
    "RegisterJobDefinition",
    "SubmitJob",
    "TerminateJob",
    "TerminateJobs",
    "UpdateComputeEnvironment",
    "UpdateConsumableResource",
    "UpdateJobQueue",
    "UpdateSchedulingPolicy",
];

/// The tagging operations, routed by method on `/v1/tags/{resourceArn}`.
pub const TAG_OPERATIONS: &[&str] = &["ListTagsForResource", "TagResource", "UntagResource"];

/// Which operation a request is, from its method and raw path.
fn route(method: &Method, path: &str) -> Option<(&'static str, Option<String>)> {
    let rest = path.strip_prefix("/v1/")?;
    if let Some(arn) = rest.strip_prefix("tags/") {
        let arn = percent_encoding::percent_decode_str(arn)
            .decode_utf8()
            .ok()?
            .into_owned();
        let op = match *method {
            Method::GET => "ListTagsForResource",
            Method::POST => "TagResource",
            Method::DELETE => "UntagResource",
            _ => return None,
        };
        return Some((op, Some(arn)));
    }
    if *method != Method::POST {
        return None;
    }
    let rest = rest.strip_suffix('/').unwrap_or(rest);
    OPERATIONS
        .iter()
        .chain(UNSUPPORTED_OPS.iter().map(|(op, _)| op))
        .find(|op| op.eq_ignore_ascii_case(rest))
        .map(|op| (*op, None))
}

/// Operations of AWS Batch's model that Flotilla does not implement, with what they are for:
/// answered with a ClientException naming the operation rather than a 404 a client cannot
/// tell from a wrong endpoint.
pub const UNSUPPORTED_OPS: &[(&str, &str)] = &[
    ("CreateQuotaShare", "quota shares"),
    ("DeleteQuotaShare", "quota shares"),
    ("DescribeQuotaShare", "quota shares"),
    ("ListQuotaShares", "quota shares"),
    ("UpdateQuotaShare", "quota shares"),
    (
        "CreateServiceEnvironment",
        "service environments (SageMaker)",
    ),
    (
        "DeleteServiceEnvironment",
        "service environments (SageMaker)",
    ),
    (
        "DescribeServiceEnvironments",
        "service environments (SageMaker)",
    ),
    (
        "UpdateServiceEnvironment",
        "service environments (SageMaker)",
    ),
    ("DescribeServiceJob", "service jobs (SageMaker)"),
    ("ListServiceJobs", "service jobs (SageMaker)"),
    ("SubmitServiceJob", "service jobs (SageMaker)"),
    ("TerminateServiceJob", "service jobs (SageMaker)"),
    ("TerminateServiceJobs", "service jobs (SageMaker)"),
    ("UpdateServiceJob", "service jobs (SageMaker)"),
];

async fn handle(State(state): State<Arc<AppState>>, request: Request) -> Response {
    let (parts, body) = request.into_parts();
    let (method, uri, mut headers) = (parts.method, parts.uri, parts.headers);
    let request_id = uuid::Uuid::new_v4().to_string();
    // CloudWatch Logs (awsJson1.1) shares the endpoint: `POST /` + `X-Amz-Target: Logs_20140328.*`.
    let logs_op = logs::operation(&method, uri.path(), &headers);
    let Some((op, arn)) = logs_op
        .map(|op| (op, None))
        .or_else(|| route(&method, uri.path()))
    else {
        let err = ApiError::new(
            StatusCode::NOT_FOUND,
            "UnknownOperationException",
            format!("no operation at {method} {}", uri.path()),
        );
        return finish("Unknown", &request_id, Err(err));
    };
    let span = tracing::info_span!("api", operation = op, request_id = %request_id);
    async {
        // The head is checked before a byte of the body is read: a peer without a valid
        // signature (or, when the payload hash is not in a header, without a known access key
        // and a current date) costs no body memory.
        let service = if logs_op.is_some() { "logs" } else { "batch" };
        let pending = match verify_head(&state, &method, &uri, &mut headers, service) {
            Ok(p) => p,
            Err(e) => return refuse(op, &request_id, e),
        };
        let body = match state
            .body_limits
            .read(op, &headers, body, max_body(op))
            .await
        {
            Ok(b) => b,
            Err(e) => return finish(op, &request_id, Err(e.into())),
        };
        if let Some(pending) = pending
            && let Err(e) = pending.finish(&body)
        {
            return refuse(op, &request_id, e);
        }
        if logs_op.is_some() {
            return logs::respond(&state, op, &request_id, &body).await;
        }
        let result = dispatch(&state.batch, op, arn, uri.query(), &headers, &body)
            .await
            .map(|mut answer| {
                defaults::fill(op, &mut answer);
                answer
            });
        finish(op, &request_id, result)
    }
    .instrument(span)
    .await
}

/// The SigV4 check of a request's head when the server has credentials (`None` when it has
/// none): everything but the payload, which the returned check completes.
/// Verifies a bodiless signed request (`GET /events`, `GET /cost`): `Some` is the refusal to
/// answer with.
pub(crate) fn refuse_unsigned_get(
    state: &AppState,
    parts: &mut axum::http::request::Parts,
    what: &str,
) -> Option<Response> {
    verify_head(
        state,
        &parts.method,
        &parts.uri,
        &mut parts.headers,
        "batch",
    )
    .and_then(|p| p.map_or(Ok(()), |p| p.finish(b"").map(drop)))
    .err()
    .map(|e| {
        tracing::info!(error_type = e.error_type(), what, "refused by sigv4");
        ApiError::from(e).into_response()
    })
}

pub(crate) fn verify_head(
    state: &AppState,
    method: &Method,
    uri: &axum::http::Uri,
    headers: &mut HeaderMap,
    service: &str,
) -> Result<Option<sigv4::PendingBody>, sigv4::AuthError> {
    let Some(creds) = &state.credentials else {
        return Ok(None);
    };
    // HTTP/2 carries the host in the URI authority, not in a header.
    if !headers.contains_key("host")
        && let Some(auth) = uri.authority()
        && let Ok(v) = HeaderValue::from_str(auth.as_str())
    {
        headers.insert("host", v);
    }
    sigv4::verify_head(
        method,
        uri.path(),
        uri.query().unwrap_or(""),
        headers,
        creds,
        std::time::SystemTime::now(),
        sigv4::Scope {
            region: state.batch.region(),
            service,
        },
    )
    .map(Some)
}

fn refuse(op: &str, request_id: &str, e: sigv4::AuthError) -> Response {
    tracing::info!(error_type = e.error_type(), "request refused by sigv4");
    finish(op, request_id, Err(e.into()))
}

fn finish(op: &str, request_id: &str, result: Result<Value, ApiError>) -> Response {
    let mut resp = match result {
        Ok(mut v) => {
            if let Value::Object(m) = &mut v {
                m.retain(|_, v| !v.is_null());
            }
            (StatusCode::OK, axum::Json(v)).into_response()
        }
        Err(e) => {
            if e.status.is_server_error() {
                tracing::warn!(status = e.status.as_u16(), message = %e.message, "request failed");
            } else {
                tracing::debug!(status = e.status.as_u16(), message = %e.message, "request refused");
            }
            e.into_response()
        }
    };
    crate::metrics::api_call(op, resp.status().as_u16());
    if let Ok(v) = HeaderValue::from_str(request_id) {
        resp.headers_mut().insert("x-amzn-requestid", v);
    }
    resp
}

/// Why a request body could not be parsed.
pub(crate) enum BodyError {
    /// Not JSON at all.
    Syntax(String),
    /// JSON of the wrong shape; the message names the field (`arrayProperties.size: …`).
    Shape(String),
}

/// Parses a JSON request body (empty means `{}`), naming the offending field on failure.
pub(crate) fn parse_body<T: DeserializeOwned>(body: &[u8]) -> Result<T, BodyError> {
    let body: &[u8] = if body.iter().all(|b| b.is_ascii_whitespace()) {
        b"{}"
    } else {
        body
    };
    let de = &mut serde_json::Deserializer::from_slice(body);
    serde_path_to_error::deserialize(de).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner();
        if inner.is_syntax() || inner.is_eof() {
            BodyError::Syntax(format!("request body is not valid JSON: {inner}"))
        } else if path == "." {
            BodyError::Shape(format!("request body: {inner}"))
        } else {
            BodyError::Shape(format!("{path}: {inner}"))
        }
    })
}

fn parse<T: DeserializeOwned>(body: &[u8]) -> Result<T, ApiError> {
    parse_body(body).map_err(|e| match e {
        BodyError::Syntax(m) | BodyError::Shape(m) => ApiError::client(m),
    })
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct ComputeEnvironmentRef {
    compute_environment: String,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct JobQueueRef {
    job_queue: String,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct JobDefinitionRef {
    job_definition: String,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct ConsumableResourceRef {
    consumable_resource: String,
}

#[derive(Deserialize)]
struct PolicyRef {
    arn: String,
}

#[derive(Deserialize)]
struct PolicyRefs {
    arns: Vec<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Paging {
    max_results: Option<i32>,
    next_token: Option<String>,
}

#[derive(Deserialize)]
struct JobIds {
    jobs: Vec<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct StopJob {
    job_id: String,
    reason: String,
}

#[derive(Deserialize)]
struct StopJobs {
    jobs: Vec<String>,
    reason: String,
}

#[derive(Deserialize)]
struct TagBody {
    tags: Tags,
}

fn check_content_type(headers: &HeaderMap, body: &[u8]) -> Result<(), ApiError> {
    if body.is_empty() {
        return Ok(());
    }
    match headers.get("content-type").map(|v| v.to_str()) {
        None => Ok(()),
        Some(Ok(ct))
            if ct.starts_with("application/json") || ct.starts_with("application/x-amz-json") =>
        {
            Ok(())
        }
        Some(Ok(ct)) => Err(ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "ClientException",
            format!("Content-Type: expected application/json, got {ct:?}"),
        )),
        Some(Err(_)) => Err(ApiError::client("Content-Type: is not valid text")),
    }
}

async fn dispatch(
    batch: &Arc<Batch>,
    op: &str,
    arn: Option<String>,
    query: Option<&str>,
    headers: &HeaderMap,
    body: &[u8],
) -> Result<Value, ApiError> {
    check_content_type(headers, body)?;
    // Members Flotilla refuses are refused by name before the typed parse, which would drop
    // them.
    compat::check(op, body).map_err(ApiError::client)?;
    let out = match op {
        "CreateComputeEnvironment" => batch.create_compute_environment(parse(body)?).await,
        "UpdateComputeEnvironment" => batch.update_compute_environment(parse(body)?).await,
        "DeleteComputeEnvironment" => {
            let r: ComputeEnvironmentRef = parse(body)?;
            batch
                .delete_compute_environment(&r.compute_environment)
                .await
        }
        "DescribeComputeEnvironments" => batch.describe_compute_environments(parse(body)?).await,
        "CreateJobQueue" => batch.create_job_queue(parse(body)?).await,
        "UpdateJobQueue" => batch.update_job_queue(parse(body)?).await,
        "DeleteJobQueue" => {
            let r: JobQueueRef = parse(body)?;
            batch.delete_job_queue(&r.job_queue).await
        }
        "DescribeJobQueues" => batch.describe_job_queues(parse(body)?).await,
        "RegisterJobDefinition" => batch.register_job_definition(parse(body)?).await,
        "DeregisterJobDefinition" => {
            let r: JobDefinitionRef = parse(body)?;
            batch.deregister_job_definition(&r.job_definition).await
        }
        "DescribeJobDefinitions" => batch.describe_job_definitions(parse(body)?).await,
        "CreateSchedulingPolicy" => batch.create_scheduling_policy(parse(body)?).await,
        "UpdateSchedulingPolicy" => batch.update_scheduling_policy(parse(body)?).await,
        "DeleteSchedulingPolicy" => {
            let r: PolicyRef = parse(body)?;
            batch.delete_scheduling_policy(&r.arn).await
        }
        "DescribeSchedulingPolicies" => {
            let r: PolicyRefs = parse(body)?;
            batch.describe_scheduling_policies(&r.arns).await
        }
        "ListSchedulingPolicies" => {
            let r: Paging = parse(body)?;
            batch
                .list_scheduling_policies(r.max_results, r.next_token.as_deref())
                .await
        }
        "CreateConsumableResource" => batch.create_consumable_resource(parse(body)?).await,
        "UpdateConsumableResource" => batch.update_consumable_resource(parse(body)?).await,
        "DeleteConsumableResource" => {
            let r: ConsumableResourceRef = parse(body)?;
            batch
                .delete_consumable_resource(&r.consumable_resource)
                .await
        }
        "DescribeConsumableResource" => {
            let r: ConsumableResourceRef = parse(body)?;
            batch
                .describe_consumable_resource(&r.consumable_resource)
                .await
        }
        "ListConsumableResources" => batch.list_consumable_resources(parse(body)?).await,
        "ListJobsByConsumableResource" => {
            batch.list_jobs_by_consumable_resource(parse(body)?).await
        }
        "SubmitJob" => batch.submit_job(parse(body)?).await,
        "DescribeJobs" => {
            let r: JobIds = parse(body)?;
            batch.describe_jobs(&r.jobs).await
        }
        "ListJobs" => batch.list_jobs(parse(body)?).await,
        "CancelJobs" | "TerminateJobs" => {
            let r: StopJobs = parse(body)?;
            batch
                .stop_jobs(&r.jobs, &r.reason, op == "TerminateJobs")
                .await
        }
        "CancelJob" | "TerminateJob" => {
            let r: StopJob = parse(body)?;
            batch
                .stop_job(&r.job_id, &r.reason, op == "TerminateJob")
                .await
        }
        "GetJobQueueSnapshot" => {
            let r: JobQueueRef = parse(body)?;
            batch.job_queue_snapshot(&r.job_queue).await
        }
        "ListTagsForResource" => batch.list_tags(arn.as_deref().unwrap_or_default()).await,
        "TagResource" => {
            let r: TagBody = parse(body)?;
            batch
                .tag_resource(arn.as_deref().unwrap_or_default(), r.tags)
                .await
        }
        "UntagResource" => {
            let keys: Vec<String> = query
                .unwrap_or("")
                .split('&')
                .filter_map(|kv| kv.split_once('='))
                .filter(|(k, _)| *k == "tagKeys")
                .filter_map(|(_, v)| {
                    percent_encoding::percent_decode_str(&v.replace('+', " "))
                        .decode_utf8()
                        .ok()
                        .map(|s| s.into_owned())
                })
                .collect();
            batch
                .untag_resource(arn.as_deref().unwrap_or_default(), keys)
                .await
        }
        _ => {
            let what = UNSUPPORTED_OPS
                .iter()
                .find(|(o, _)| *o == op)
                .map_or("this operation", |(_, w)| w);
            return Err(ApiError::client(format!(
                "{op}: not supported by Flotilla ({what} are not implemented); see docs/api-compatibility.md"
            )));
        }
    };
    out.map_err(ApiError::from)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes_follow_the_model() {
        assert_eq!(
            route(&Method::POST, "/v1/submitjob").unwrap().0,
            "SubmitJob"
        );
        assert_eq!(
            route(&Method::POST, "/v1/describecomputeenvironments")
                .unwrap()
                .0,
            "DescribeComputeEnvironments"
        );
        assert!(route(&Method::GET, "/v1/submitjob").is_none());
        assert!(route(&Method::POST, "/v1/nosuchthing").is_none());
        let (op, arn) = route(
            &Method::DELETE,
            "/v1/tags/arn%3Aaws%3Abatch%3Aus-east-1%3A0%3Ajob-queue%2Fq",
        )
        .unwrap();
        assert_eq!(op, "UntagResource");
        assert_eq!(arn.unwrap(), "arn:aws:batch:us-east-1:0:job-queue/q");
    }

    #[test]
    fn parse_errors_name_the_field() {
        let e = parse::<SubmitJobRequest>(
            br#"{"jobName":"a","jobQueue":"q","jobDefinition":"d","arrayProperties":{"size":"x"}}"#,
        )
        .unwrap_err();
        assert!(e.message.contains("arrayProperties.size"), "{}", e.message);
        let e = parse::<SubmitJobRequest>(br#"{"jobQueue":"q","jobDefinition":"d"}"#).unwrap_err();
        assert!(e.message.contains("jobName"), "{}", e.message);
        let e = parse::<SubmitJobRequest>(b"{not json").unwrap_err();
        assert!(e.message.contains("not valid JSON"), "{}", e.message);
    }
}
