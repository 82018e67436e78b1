//! CloudWatch Logs on the server's endpoint, through the official AWS SDK for Rust
//! (`aws-sdk-cloudwatchlogs`), signed with the harness credentials.
//!
//! Jobs do not run through the server yet, so each test writes events with the library's
//! [`LogStore`] straight into the running server's `<data-dir>/logs` (the same files the
//! runtimes write; the server reads them on every request).

mod common;

use aws_sdk_cloudwatchlogs::config::{BehaviorVersion, Credentials, Region};
use aws_sdk_cloudwatchlogs::error::ProvideErrorMetadata;
use common::*;
use flotilla::logs::{JOB_LOG_GROUP, LogStore};

fn logs_client(server: &Server) -> aws_sdk_cloudwatchlogs::Client {
    let conf = aws_sdk_cloudwatchlogs::Config::builder()
        .behavior_version(BehaviorVersion::latest())
        .region(Region::new("us-east-1"))
        .endpoint_url(&server.endpoint)
        .credentials_provider(Credentials::new(
            ACCESS_KEY,
            SECRET_KEY,
            None,
            None,
            "flotilla-test",
        ))
        .build();
    aws_sdk_cloudwatchlogs::Client::from_conf(conf)
}

fn store(server: &Server) -> LogStore {
    LogStore::open(server.data_dir.join("logs")).expect("open the server's log store")
}

const STREAM: &str = "hello/default/0f5c3a3e-task";

/// `n` events one millisecond apart starting at 1,000,000: "line 0" … "line n-1".
fn write_lines(store: &LogStore, stream: &str, n: i64) {
    let w = store.writer(JOB_LOG_GROUP, stream).expect("writer");
    let lines: Vec<String> = (0..n).map(|i| format!("line {i}")).collect();
    let batch: Vec<(i64, &str)> = lines
        .iter()
        .enumerate()
        .map(|(i, l)| (1_000_000 + i as i64, l.as_str()))
        .collect();
    w.append_batch(&batch).expect("append");
}

#[tokio::test]
async fn get_log_events_pages_forward_to_the_end() {
    let server = Server::start();
    let logs = store(&server);
    write_lines(&logs, STREAM, 2_500);
    let w = logs.writer(JOB_LOG_GROUP, STREAM).expect("writer");
    w.append_at(2_000_000, "two\nlines ✓").expect("append");
    let client = logs_client(&server);

    let mut token: Option<String> = None;
    let mut seen = Vec::new();
    let mut pages = Vec::new();
    loop {
        let out = client
            .get_log_events()
            .log_group_name(JOB_LOG_GROUP)
            .log_stream_name(STREAM)
            .start_from_head(true)
            .limit(1_000)
            .set_next_token(token.clone())
            .send()
            .await
            .expect("GetLogEvents");
        let events = out.events.unwrap_or_default();
        pages.push(events.len());
        seen.extend(events.into_iter().map(|e| {
            assert!(e.timestamp.is_some() && e.ingestion_time.is_some());
            e.message.unwrap_or_default()
        }));
        let next = out.next_forward_token.expect("nextForwardToken");
        assert!(out.next_backward_token.is_some());
        // The end of the stream: the same forward token comes back.
        if token.as_deref() == Some(next.as_str()) {
            break;
        }
        assert!(pages.len() < 10, "never reached the end: {pages:?}");
        token = Some(next);
    }
    assert_eq!(pages, vec![1_000, 1_000, 501, 0]);
    assert_eq!(seen.len(), 2_501);
    assert_eq!(seen[0], "line 0");
    assert_eq!(seen[2_499], "line 2499");
    assert_eq!(seen[2_500], "two\nlines ✓");

    // Lines written after the end are what the end token reads next.
    w.append_at(2_000_001, "late").expect("append");
    let out = client
        .get_log_events()
        .log_group_name(JOB_LOG_GROUP)
        .log_stream_name(STREAM)
        .set_next_token(token)
        .send()
        .await
        .expect("GetLogEvents after the end");
    let msgs: Vec<_> = out
        .events
        .unwrap_or_default()
        .into_iter()
        .filter_map(|e| e.message)
        .collect();
    assert_eq!(msgs, vec!["late"]);
}

#[tokio::test]
async fn get_log_events_newest_first_and_time_window() {
    let mut server = Server::start();
    write_lines(&store(&server), STREAM, 100);
    // The files are the state: a restarted server serves the same events.
    server.restart();
    let client = logs_client(&server);

    // startFromHead false (the default): the newest page, oldest first within it.
    let out = client
        .get_log_events()
        .log_group_name(JOB_LOG_GROUP)
        .log_stream_name(STREAM)
        .start_from_head(false)
        .limit(10)
        .send()
        .await
        .expect("GetLogEvents");
    let msgs: Vec<_> = out
        .events
        .unwrap_or_default()
        .into_iter()
        .filter_map(|e| e.message)
        .collect();
    let want: Vec<_> = (90..100).map(|i| format!("line {i}")).collect();
    assert_eq!(msgs, want);
    // One page back.
    let back = client
        .get_log_events()
        .log_group_name(JOB_LOG_GROUP)
        .log_stream_name(STREAM)
        .limit(10)
        .set_next_token(out.next_backward_token)
        .send()
        .await
        .expect("GetLogEvents backward");
    let first = back
        .events
        .unwrap_or_default()
        .first()
        .and_then(|e| e.message.clone());
    assert_eq!(first.as_deref(), Some("line 80"));

    // startTime inclusive, endTime exclusive.
    let out = client
        .get_log_events()
        .log_group_name(JOB_LOG_GROUP)
        .log_stream_name(STREAM)
        .start_time(1_000_010)
        .end_time(1_000_013)
        .start_from_head(true)
        .send()
        .await
        .expect("GetLogEvents window");
    let msgs: Vec<_> = out
        .events
        .unwrap_or_default()
        .into_iter()
        .filter_map(|e| e.message)
        .collect();
    assert_eq!(msgs, vec!["line 10", "line 11", "line 12"]);
}

#[tokio::test]
async fn filter_log_events_with_a_pattern() {
    let server = Server::start();
    let logs = store(&server);
    for (stream, lines) in [
        (
            "etl/default/a",
            vec![
                "ERROR disk full on /data",
                "INFO ok",
                "ERROR disk full (ignored)",
            ],
        ),
        (
            "etl/default/b",
            vec!["WARN slow", "ERROR disk full on /tmp"],
        ),
        ("other/default/c", vec!["ERROR disk full elsewhere"]),
    ] {
        let w = logs.writer(JOB_LOG_GROUP, stream).expect("writer");
        for (i, l) in lines.iter().enumerate() {
            w.append_at(5_000 + i as i64, l).expect("append");
        }
    }
    let client = logs_client(&server);
    let mut token: Option<String> = None;
    let mut found = Vec::new();
    let mut ids = std::collections::HashSet::new();
    for _ in 0..10 {
        let out = client
            .filter_log_events()
            .log_group_name(JOB_LOG_GROUP)
            .log_stream_name_prefix("etl/")
            .filter_pattern(r#"ERROR "disk full" -ignored"#)
            .limit(1)
            .set_next_token(token.clone())
            .send()
            .await
            .expect("FilterLogEvents");
        assert!(!out.searched_log_streams.unwrap_or_default().is_empty());
        for e in out.events.unwrap_or_default() {
            assert!(ids.insert(e.event_id.clone().expect("eventId")));
            found.push((
                e.log_stream_name.unwrap_or_default(),
                e.message.unwrap_or_default(),
            ));
        }
        token = out.next_token;
        if token.is_none() {
            break;
        }
    }
    assert!(token.is_none(), "paging never ended");
    assert_eq!(
        found,
        vec![
            (
                "etl/default/a".to_string(),
                "ERROR disk full on /data".to_string()
            ),
            (
                "etl/default/b".to_string(),
                "ERROR disk full on /tmp".to_string()
            ),
        ]
    );

    // Named streams and a time window.
    let out = client
        .filter_log_events()
        .log_group_name(JOB_LOG_GROUP)
        .log_stream_names("etl/default/b")
        .start_time(5_001)
        .send()
        .await
        .expect("FilterLogEvents by name");
    let msgs: Vec<_> = out
        .events
        .unwrap_or_default()
        .into_iter()
        .filter_map(|e| e.message)
        .collect();
    assert_eq!(msgs, vec!["ERROR disk full on /tmp"]);
    let searched = out.searched_log_streams.unwrap_or_default();
    assert_eq!(searched.len(), 1);
    assert_eq!(searched[0].searched_completely, Some(true));
}

#[tokio::test]
async fn describe_streams_and_groups() {
    let server = Server::start();
    let logs = store(&server);
    write_lines(&logs, "jobdef/default/t1", 3);
    write_lines(&logs, "jobdef/default/t2", 1);
    write_lines(&logs, "zzz/default/t3", 1);
    let client = logs_client(&server);
    let out = client
        .describe_log_streams()
        .log_group_name(JOB_LOG_GROUP)
        .log_stream_name_prefix("jobdef/")
        .send()
        .await
        .expect("DescribeLogStreams");
    let streams = out.log_streams.unwrap_or_default();
    let names: Vec<_> = streams
        .iter()
        .filter_map(|s| s.log_stream_name.clone())
        .collect();
    assert_eq!(names, vec!["jobdef/default/t1", "jobdef/default/t2"]);
    assert_eq!(streams[0].first_event_timestamp, Some(1_000_000));
    assert_eq!(streams[0].last_event_timestamp, Some(1_000_002));
    let groups = client
        .describe_log_groups()
        .log_group_name_prefix("/aws/batch")
        .send()
        .await
        .expect("DescribeLogGroups")
        .log_groups
        .unwrap_or_default();
    assert_eq!(groups.len(), 1);
    assert_eq!(groups[0].log_group_name.as_deref(), Some(JOB_LOG_GROUP));
    assert!(
        groups[0]
            .arn
            .as_deref()
            .is_some_and(|a| a.starts_with("arn:aws:logs:us-east-1:")
                && a.ends_with(":log-group:/aws/batch/job:*"))
    );
}

#[tokio::test]
async fn unknown_streams_groups_and_bad_tokens_are_refused() {
    let server = Server::start();
    write_lines(&store(&server), STREAM, 3);
    let client = logs_client(&server);
    let err = client
        .get_log_events()
        .log_group_name(JOB_LOG_GROUP)
        .log_stream_name("hello/default/no-such-task")
        .send()
        .await
        .expect_err("unknown stream");
    assert_eq!(err.code(), Some("ResourceNotFoundException"), "{err:?}");
    assert!(
        err.as_service_error()
            .is_some_and(|e| e.is_resource_not_found_exception())
    );
    let err = client
        .get_log_events()
        .log_group_name("/no/such/group")
        .log_stream_name(STREAM)
        .send()
        .await
        .expect_err("unknown group");
    assert_eq!(err.code(), Some("ResourceNotFoundException"), "{err:?}");
    let err = client
        .filter_log_events()
        .log_group_name("/no/such/group")
        .send()
        .await
        .expect_err("unknown group");
    assert_eq!(err.code(), Some("ResourceNotFoundException"), "{err:?}");
    let err = client
        .get_log_events()
        .log_group_name(JOB_LOG_GROUP)
        .log_stream_name(STREAM)
        .next_token("f/not-a-position")
        .send()
        .await
        .expect_err("bad token");
    assert_eq!(err.code(), Some("InvalidParameterException"), "{err:?}");
    let err = client
        .filter_log_events()
        .log_group_name(JOB_LOG_GROUP)
        .filter_pattern("{ $.level = \"error\" }")
        .send()
        .await
        .expect_err("JSON patterns are not supported");
    assert_eq!(err.code(), Some("InvalidParameterException"), "{err:?}");
}

#[tokio::test]
async fn logs_requests_need_a_valid_signature() {
    let server = Server::start();
    write_lines(&store(&server), STREAM, 1);
    let conf = aws_sdk_cloudwatchlogs::Config::builder()
        .behavior_version(BehaviorVersion::latest())
        .region(Region::new("us-east-1"))
        .endpoint_url(&server.endpoint)
        .credentials_provider(Credentials::new(
            ACCESS_KEY,
            "wrong-secret",
            None,
            None,
            "t",
        ))
        .build();
    let client = aws_sdk_cloudwatchlogs::Client::from_conf(conf);
    let err = client
        .get_log_events()
        .log_group_name(JOB_LOG_GROUP)
        .log_stream_name(STREAM)
        .send()
        .await
        .expect_err("bad signature");
    assert!(err.code().is_some(), "{err:?}");
    assert_ne!(err.code(), Some("ResourceNotFoundException"));
}
