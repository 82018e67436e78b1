//! CloudWatch Logs on the Batch endpoint: awsJson1.1, `POST /` with
//! `X-Amz-Target: Logs_20140328.<Operation>`, for the operations tools use to read job output:
//! `GetLogEvents`, `FilterLogEvents`, `DescribeLogStreams`, `DescribeLogGroups`.
//!
//! Shapes follow botocore's `logs/2014-03-28/service-2.json`. Errors are
//! `{"__type": "<Code>", "message": "..."}` with HTTP 400 (503 for `ServiceUnavailableException`).
//! SigV4 (signing name `logs`) is checked by the caller before anything here runs.

use super::AppState;
use crate::batch::ArnKind;
use crate::logs::{self, LogError, LogStore};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::{Value, json};
use std::sync::Arc;

const TARGET_PREFIX: &str = "Logs_20140328.";
const CONTENT_TYPE: &str = "application/x-amz-json-1.1";

/// The operation a request is, when it is a CloudWatch Logs request at all: `POST /` with an
/// `X-Amz-Target` of this service. Unknown operations of the service come back as
/// `Some("Unknown")` so they get an awsJson error rather than a Batch 404.
pub fn operation(method: &Method, path: &str, headers: &HeaderMap) -> Option<&'static str> {
    if *method != Method::POST || path != "/" {
        return None;
    }
    let target = headers.get("x-amz-target")?.to_str().ok()?;
    let op = target.strip_prefix(TARGET_PREFIX)?;
    Some(
        [
            "GetLogEvents",
            "FilterLogEvents",
            "DescribeLogStreams",
            "DescribeLogGroups",
        ]
        .into_iter()
        .find(|known| *known == op)
        .unwrap_or("Unknown"),
    )
}

/// An error in awsJson1.1 form.
#[derive(Debug)]
pub struct LogsApiError {
    status: StatusCode,
    code: &'static str,
    message: String,
}

impl LogsApiError {
    fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        LogsApiError {
            status,
            code,
            message: message.into(),
        }
    }

    fn invalid(message: impl Into<String>) -> Self {
        Self::new(
            StatusCode::BAD_REQUEST,
            "InvalidParameterException",
            message,
        )
    }
}

impl From<LogError> for LogsApiError {
    fn from(e: LogError) -> Self {
        let status = match e {
            LogError::Io(_) => {
                tracing::warn!(error = %e, "log store failed");
                StatusCode::SERVICE_UNAVAILABLE
            }
            _ => StatusCode::BAD_REQUEST,
        };
        LogsApiError::new(status, e.error_type(), e.to_string())
    }
}

/// Runs one CloudWatch Logs operation and answers it, with the request id header and metrics.
pub async fn respond(
    state: &AppState,
    op: &'static str,
    request_id: &str,
    body: &[u8],
) -> Response {
    let region = state.batch.region();
    // The account is not exposed on its own; every Batch ARN carries it in field 5.
    let batch_arn = state.batch.arn(ArnKind::Job, "x");
    let account = batch_arn.split(':').nth(4).unwrap_or_default();
    let result = match state.logs.clone() {
        None => Err(LogsApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "ServiceUnavailableException",
            "this server keeps no job logs",
        )),
        Some(store) => {
            let local = dispatch(store, region.to_string(), account.to_string(), op, body).await;
            match (&local, &state.aws) {
                // A stream this server did not write: a job that ran on ECS, whose awslogs
                // driver wrote to CloudWatch Logs.
                (Err(e), Some(aws))
                    if op == "GetLogEvents" && e.code == "ResourceNotFoundException" =>
                {
                    match cloudwatch_get_log_events(aws, body).await {
                        Ok(v) => Ok(v),
                        Err(_) => local,
                    }
                }
                _ => local,
            }
        }
    };
    let mut resp = match result {
        Ok(v) => (
            StatusCode::OK,
            [("content-type", CONTENT_TYPE)],
            v.to_string(),
        )
            .into_response(),
        Err(e) => {
            tracing::debug!(status = e.status.as_u16(), code = e.code, message = %e.message, "logs request refused");
            let body = json!({ "__type": e.code, "message": e.message });
            (
                e.status,
                [("content-type", CONTENT_TYPE), ("x-amzn-errortype", e.code)],
                body.to_string(),
            )
                .into_response()
        }
    };
    crate::metrics::api_call(op, resp.status().as_u16());
    if let Ok(v) = HeaderValue::from_str(request_id) {
        resp.headers_mut().insert("x-amzn-requestid", v);
    }
    resp
}

async fn dispatch(
    store: Arc<LogStore>,
    region: String,
    account: String,
    op: &'static str,
    body: &[u8],
) -> Result<Value, LogsApiError> {
    let arn = move |group: &str| format!("arn:aws:logs:{region}:{account}:log-group:{group}");
    // Reads can touch a megabyte or more of files: keep them off the async workers.
    let run = |f: Box<dyn FnOnce() -> Result<Value, LogsApiError> + Send>| async move {
        tokio::task::spawn_blocking(f).await.map_err(|e| {
            LogsApiError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "ServiceUnavailableException",
                format!("log read failed: {e}"),
            )
        })?
    };
    match op {
        "GetLogEvents" => {
            let r: GetLogEventsRequest = parse(body)?;
            let group = group_of(r.log_group_name, r.log_group_identifier)?;
            run(Box::new(move || {
                let page = store.get_log_events(
                    &group,
                    &r.log_stream_name,
                    &logs::GetLogEvents {
                        start_time: r.start_time,
                        end_time: r.end_time,
                        next_token: r.next_token,
                        limit: r.limit,
                        start_from_head: r.start_from_head,
                    },
                )?;
                Ok(json!({
                    "events": page.events.iter().map(|e| json!({
                        "timestamp": e.timestamp,
                        "message": e.message,
                        "ingestionTime": e.ingestion_time,
                    })).collect::<Vec<_>>(),
                    "nextForwardToken": page.next_forward_token,
                    "nextBackwardToken": page.next_backward_token,
                }))
            }))
            .await
        }
        "FilterLogEvents" => {
            let r: FilterLogEventsRequest = parse(body)?;
            let group = group_of(r.log_group_name, r.log_group_identifier)?;
            if r.filter_pattern.as_ref().is_some_and(|p| p.len() > 1024) {
                return Err(LogsApiError::invalid(
                    "filterPattern: at most 1024 characters",
                ));
            }
            run(Box::new(move || {
                let page = store.filter_log_events(
                    &group,
                    &logs::FilterLogEvents {
                        stream_names: r.log_stream_names,
                        stream_prefix: r.log_stream_name_prefix,
                        start_time: r.start_time,
                        end_time: r.end_time,
                        filter_pattern: r.filter_pattern,
                        next_token: r.next_token,
                        limit: r.limit,
                    },
                )?;
                let mut out = json!({
                    "events": page.events.iter().map(|e| json!({
                        "logStreamName": e.log_stream_name,
                        "timestamp": e.timestamp,
                        "message": e.message,
                        "ingestionTime": e.ingestion_time,
                        "eventId": e.event_id,
                    })).collect::<Vec<_>>(),
                    "searchedLogStreams": page.searched_log_streams.iter().map(|s| json!({
                        "logStreamName": s.log_stream_name,
                        "searchedCompletely": s.searched_completely,
                    })).collect::<Vec<_>>(),
                });
                if let Some(t) = page.next_token {
                    out["nextToken"] = json!(t);
                }
                Ok(out)
            }))
            .await
        }
        "DescribeLogStreams" => {
            let r: DescribeLogStreamsRequest = parse(body)?;
            let group = group_of(r.log_group_name, r.log_group_identifier)?;
            let order_by = match r.order_by.as_deref() {
                None | Some("LogStreamName") => logs::StreamOrder::Name,
                Some("LastEventTime") => logs::StreamOrder::LastEventTime,
                Some(other) => {
                    return Err(LogsApiError::invalid(format!(
                        "orderBy: expected LogStreamName or LastEventTime, got {other:?}"
                    )));
                }
            };
            run(Box::new(move || {
                let page = store.describe_log_streams(
                    &group,
                    &logs::DescribeStreams {
                        prefix: r.log_stream_name_prefix,
                        order_by,
                        descending: r.descending.unwrap_or(false),
                        next_token: r.next_token,
                        limit: r.limit,
                    },
                )?;
                let group_arn = arn(&group);
                let streams: Vec<Value> = page
                    .items
                    .iter()
                    .map(|s| {
                        let mut v = json!({
                            "logStreamName": s.name,
                            "creationTime": s.creation_time,
                            "arn": format!("{group_arn}:log-stream:{}", s.name),
                            "storedBytes": 0,
                        });
                        for (k, val) in [
                            ("firstEventTimestamp", s.first_event_timestamp),
                            ("lastEventTimestamp", s.last_event_timestamp),
                            ("lastIngestionTime", s.last_ingestion_time),
                        ] {
                            if let Some(val) = val {
                                v[k] = json!(val);
                            }
                        }
                        v
                    })
                    .collect();
                let mut out = json!({ "logStreams": streams });
                if let Some(t) = page.next_token {
                    out["nextToken"] = json!(t);
                }
                Ok(out)
            }))
            .await
        }
        "DescribeLogGroups" => {
            let r: DescribeLogGroupsRequest = parse(body)?;
            run(Box::new(move || {
                let page = store.describe_log_groups(&logs::DescribeGroups {
                    prefix: r.log_group_name_prefix,
                    next_token: r.next_token,
                    limit: r.limit,
                })?;
                let groups: Vec<Value> = page
                    .items
                    .iter()
                    .map(|g| {
                        let a = arn(&g.name);
                        json!({
                            "logGroupName": g.name,
                            "creationTime": g.creation_time,
                            "metricFilterCount": 0,
                            "arn": format!("{a}:*"),
                            "logGroupArn": a,
                            "storedBytes": g.stored_bytes,
                            "logGroupClass": "STANDARD",
                        })
                    })
                    .collect();
                let mut out = json!({ "logGroups": groups });
                if let Some(t) = page.next_token {
                    out["nextToken"] = json!(t);
                }
                Ok(out)
            }))
            .await
        }
        _ => Err(LogsApiError::new(
            StatusCode::BAD_REQUEST,
            "UnknownOperationException",
            "Flotilla answers GetLogEvents, FilterLogEvents, DescribeLogStreams and \
             DescribeLogGroups of CloudWatch Logs",
        )),
    }
}

/// GetLogEvents answered from CloudWatch Logs, within its per-account rate limit (the driver's
/// client-side bucket) and with its own paging tokens passed through.
pub(crate) async fn cloudwatch_get_log_events(
    aws: &crate::compute::aws::AwsDriver,
    body: &[u8],
) -> Result<Value, LogsApiError> {
    let r: GetLogEventsRequest = parse(body)?;
    let api = aws.api();
    let out = api
        .call(
            "logs",
            "GetLogEvents",
            api.logs
                .get_log_events()
                .set_log_group_name(r.log_group_name)
                .set_log_group_identifier(r.log_group_identifier)
                .log_stream_name(r.log_stream_name)
                .set_start_time(r.start_time)
                .set_end_time(r.end_time)
                .set_next_token(r.next_token)
                .set_limit(r.limit.map(|l| l.clamp(1, 10_000) as i32))
                .set_start_from_head(r.start_from_head)
                .send(),
        )
        .await
        .map_err(|e| {
            LogsApiError::new(
                if e.retryable {
                    StatusCode::SERVICE_UNAVAILABLE
                } else {
                    StatusCode::BAD_REQUEST
                },
                if e.retryable {
                    "ServiceUnavailableException"
                } else {
                    "ResourceNotFoundException"
                },
                e.to_string(),
            )
        })?;
    Ok(json!({
        "events": out.events().iter().map(|e| json!({
            "timestamp": e.timestamp(),
            "message": e.message(),
            "ingestionTime": e.ingestion_time(),
        })).collect::<Vec<_>>(),
        "nextForwardToken": out.next_forward_token(),
        "nextBackwardToken": out.next_backward_token(),
    }))
}

/// `logGroupName` or `logGroupIdentifier` (a name or a log group ARN), exactly one.
fn group_of(name: Option<String>, identifier: Option<String>) -> Result<String, LogsApiError> {
    match (name, identifier) {
        (Some(_), Some(_)) => Err(LogsApiError::invalid(
            "LogGroupName and LogGroupIdentifier are mutually exclusive",
        )),
        (None, None) => Err(LogsApiError::invalid(
            "Either LogGroupName or LogGroupIdentifier must be specified",
        )),
        (Some(n), None) => Ok(n),
        (None, Some(id)) => match id.split_once(":log-group:") {
            Some((_, rest)) if id.starts_with("arn:") => {
                Ok(rest.strip_suffix(":*").unwrap_or(rest).to_string())
            }
            _ => Ok(id),
        },
    }
}

fn parse<T: serde::de::DeserializeOwned>(body: &[u8]) -> Result<T, LogsApiError> {
    super::parse_body(body).map_err(|e| match e {
        super::BodyError::Syntax(m) => {
            LogsApiError::new(StatusCode::BAD_REQUEST, "SerializationException", m)
        }
        super::BodyError::Shape(m) => LogsApiError::invalid(m),
    })
}

// Fields of the model not listed (`unmask`, `interleaved`, …) are accepted and ignored: serde
// skips unknown fields.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct GetLogEventsRequest {
    log_group_name: Option<String>,
    log_group_identifier: Option<String>,
    log_stream_name: String,
    start_time: Option<i64>,
    end_time: Option<i64>,
    next_token: Option<String>,
    limit: Option<i64>,
    start_from_head: Option<bool>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct FilterLogEventsRequest {
    log_group_name: Option<String>,
    log_group_identifier: Option<String>,
    log_stream_names: Option<Vec<String>>,
    log_stream_name_prefix: Option<String>,
    start_time: Option<i64>,
    end_time: Option<i64>,
    filter_pattern: Option<String>,
    next_token: Option<String>,
    limit: Option<i64>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct DescribeLogStreamsRequest {
    log_group_name: Option<String>,
    log_group_identifier: Option<String>,
    log_stream_name_prefix: Option<String>,
    order_by: Option<String>,
    descending: Option<bool>,
    next_token: Option<String>,
    limit: Option<i64>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct DescribeLogGroupsRequest {
    log_group_name_prefix: Option<String>,
    next_token: Option<String>,
    limit: Option<i64>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets_select_the_logs_service() {
        let mut h = HeaderMap::new();
        h.insert(
            "x-amz-target",
            HeaderValue::from_static("Logs_20140328.GetLogEvents"),
        );
        assert_eq!(operation(&Method::POST, "/", &h), Some("GetLogEvents"));
        assert_eq!(operation(&Method::GET, "/", &h), None);
        assert_eq!(operation(&Method::POST, "/v1/submitjob", &h), None);
        h.insert(
            "x-amz-target",
            HeaderValue::from_static("Logs_20140328.PutLogEvents"),
        );
        assert_eq!(operation(&Method::POST, "/", &h), Some("Unknown"));
        h.insert(
            "x-amz-target",
            HeaderValue::from_static("AWSBatch.SubmitJob"),
        );
        assert_eq!(operation(&Method::POST, "/", &h), None);
    }

    #[test]
    fn group_identifiers() {
        assert_eq!(
            group_of(
                None,
                Some("arn:aws:logs:us-east-1:0:log-group:/aws/batch/job:*".into())
            )
            .expect("arn"),
            "/aws/batch/job"
        );
        assert_eq!(group_of(Some("/g".into()), None).expect("name"), "/g");
        assert!(group_of(None, None).is_err());
        assert!(group_of(Some("a".into()), Some("b".into())).is_err());
    }
}
