//! Jobs through the official AWS SDK for Rust against a real server process.

mod common;

use aws_sdk_batch::types::{ArrayProperties, JobStatus};
use common::*;

#[tokio::test]
async fn submitted_job_is_runnable_and_listed() {
    let server = Server::start();
    let client = server.client();
    register_simple(&client, "hello").await;
    let out = client
        .submit_job()
        .job_name("first")
        .job_queue("default")
        .job_definition("hello")
        .send()
        .await
        .expect("submit");
    let job_id = out.job_id.expect("jobId");
    let jobs = client
        .describe_jobs()
        .jobs(&job_id)
        .send()
        .await
        .expect("describe")
        .jobs
        .unwrap_or_default();
    assert_eq!(jobs.len(), 1);
    assert_eq!(jobs[0].status, Some(JobStatus::Runnable));
    assert_eq!(jobs[0].job_name.as_deref(), Some("first"));
    assert!(
        jobs[0]
            .job_definition
            .as_deref()
            .unwrap_or_default()
            .ends_with("job-definition/hello:1")
    );
    let listed = client
        .list_jobs()
        .job_queue("default")
        .job_status(JobStatus::Runnable)
        .send()
        .await
        .expect("list")
        .job_summary_list
        .unwrap_or_default();
    assert!(
        listed
            .iter()
            .any(|s| s.job_id.as_deref() == Some(job_id.as_str()))
    );
}

#[tokio::test]
async fn array_children_are_listed_by_index_across_pages() {
    let server = Server::start();
    let client = server.client();
    register_simple(&client, "arr").await;
    let parent = client
        .submit_job()
        .job_name("arr")
        .job_queue("default")
        .job_definition("arr")
        .array_properties(ArrayProperties::builder().size(250).build())
        .send()
        .await
        .expect("submit array")
        .job_id
        .expect("jobId");
    let mut seen = Vec::new();
    let mut token = None;
    loop {
        let page = client
            .list_jobs()
            .array_job_id(&parent)
            .job_status(JobStatus::Runnable)
            .max_results(100)
            .set_next_token(token)
            .send()
            .await
            .expect("list children");
        seen.extend(
            page.job_summary_list
                .unwrap_or_default()
                .into_iter()
                .filter_map(|s| s.job_id),
        );
        token = page.next_token;
        if token.is_none() {
            break;
        }
    }
    let expected: Vec<String> = (0..250).map(|i| format!("{parent}:{i}")).collect();
    assert_eq!(seen, expected);
    let summary = client
        .describe_jobs()
        .jobs(&parent)
        .send()
        .await
        .expect("describe parent")
        .jobs
        .unwrap_or_default()
        .remove(0)
        .array_properties
        .and_then(|a| a.status_summary)
        .unwrap_or_default();
    assert_eq!(summary.get("RUNNABLE"), Some(&250));
}
