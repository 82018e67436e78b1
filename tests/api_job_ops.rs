//! SubmitJob, DescribeJobs, ListJobs, CancelJob, TerminateJob, dependencies and queue snapshots
//! through the official AWS SDK for Rust.

mod common;

use aws_sdk_batch::types::*;
use common::*;
use std::collections::BTreeSet;

const ARN_PREFIX: &str = "arn:aws:batch:us-east-1:000000000000:";

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

fn filter(name: &str, value: &str) -> KeyValuesPair {
    KeyValuesPair::builder().name(name).values(value).build()
}

/// Every page of a ListJobs request, as (job id, status) pairs.
async fn list_all(
    client: &aws_sdk_batch::Client,
    queue: Option<&str>,
    array: Option<&str>,
    status: Option<JobStatus>,
    filters: Vec<KeyValuesPair>,
    page_size: Option<i32>,
) -> Vec<(String, JobStatus)> {
    let mut out = Vec::new();
    let mut token = None;
    loop {
        let page = client
            .list_jobs()
            .set_job_queue(queue.map(String::from))
            .set_array_job_id(array.map(String::from))
            .set_job_status(status.clone())
            .set_filters((!filters.is_empty()).then(|| filters.clone()))
            .set_max_results(page_size)
            .set_next_token(token)
            .send()
            .await
            .expect("list jobs");
        let list = page.job_summary_list.unwrap_or_default();
        if let Some(n) = page_size {
            assert!(list.len() <= n as usize, "page larger than maxResults");
        }
        out.extend(
            list.into_iter()
                .map(|s| (s.job_id.unwrap_or_default(), s.status.unwrap())),
        );
        token = page.next_token;
        if token.is_none() {
            break;
        }
    }
    out
}

fn ids(v: &[(String, JobStatus)]) -> BTreeSet<String> {
    v.iter().map(|(id, _)| id.clone()).collect()
}

fn set(v: &[&String]) -> BTreeSet<String> {
    v.iter().map(|s| (*s).clone()).collect()
}

async fn cancel(client: &aws_sdk_batch::Client, id: &str, reason: &str) {
    client
        .cancel_job()
        .job_id(id)
        .reason(reason)
        .send()
        .await
        .expect("cancel job");
}

#[tokio::test]
async fn submitted_jobs_have_aws_shaped_ids_arns_and_times() {
    let server = Server::start();
    let client = server.client();
    register_simple(&client, "jd").await;
    let before = now_ms();
    let out = client
        .submit_job()
        .job_name("shape")
        .job_queue("default")
        .job_definition("jd")
        .send()
        .await
        .expect("submit");
    let after = now_ms();
    let id = out.job_id.unwrap();
    uuid::Uuid::parse_str(&id).expect("job IDs are UUIDs");
    assert_eq!(
        out.job_arn.as_deref(),
        Some(format!("{ARN_PREFIX}job/{id}").as_str())
    );
    assert_eq!(out.job_name.as_deref(), Some("shape"));
    let d = describe_job(&client, &id).await;
    assert_eq!(
        d.job_queue.as_deref(),
        Some(format!("{ARN_PREFIX}job-queue/default").as_str())
    );
    assert_eq!(
        d.job_definition.as_deref(),
        Some(format!("{ARN_PREFIX}job-definition/jd:1").as_str())
    );
    let created = d.created_at.expect("createdAt");
    assert!(
        (before - 1000..=after + 1000).contains(&created),
        "createdAt {created} is not epoch milliseconds around {before}..{after}"
    );
    assert_eq!(d.status, Some(JobStatus::Runnable));
    // Queue and definition given by ARN work as well.
    let id2 = submit(
        &client,
        "by-arn",
        &format!("{ARN_PREFIX}job-queue/default"),
        &format!("{ARN_PREFIX}job-definition/jd:1"),
    )
    .await;
    assert_eq!(
        describe_job(&client, &id2).await.job_name.as_deref(),
        Some("by-arn")
    );

    // Array children are <parent>:<index> with their index; the parent summarises them.
    let parent = client
        .submit_job()
        .job_name("arr")
        .job_queue("default")
        .job_definition("jd")
        .array_properties(ArrayProperties::builder().size(3).build())
        .send()
        .await
        .expect("array")
        .job_id
        .unwrap();
    let jobs = client
        .describe_jobs()
        .jobs(&parent)
        .jobs(format!("{parent}:0"))
        .jobs(format!("{parent}:2"))
        .jobs(format!("{parent}:3"))
        .jobs("00000000-0000-0000-0000-000000000000")
        .send()
        .await
        .expect("describe")
        .jobs
        .unwrap_or_default();
    assert_eq!(jobs.len(), 3, "unknown IDs are absent");
    assert_eq!(jobs[0].job_id.as_deref(), Some(parent.as_str()));
    assert_eq!(jobs[0].status, Some(JobStatus::Pending));
    let ap = jobs[0].array_properties.clone().unwrap();
    assert_eq!(ap.size, Some(3));
    assert_eq!(
        ap.status_summary.unwrap_or_default().get("RUNNABLE"),
        Some(&3)
    );
    for (job, i) in jobs[1..].iter().zip([0, 2]) {
        assert_eq!(
            job.job_id.as_deref(),
            Some(format!("{parent}:{i}").as_str())
        );
        assert_eq!(
            job.job_arn.as_deref(),
            Some(format!("{ARN_PREFIX}job/{parent}:{i}").as_str())
        );
        assert_eq!(job.array_properties.as_ref().and_then(|a| a.index), Some(i));
        assert_eq!(job.status, Some(JobStatus::Runnable));
    }
}

#[tokio::test]
async fn list_jobs_statuses_and_filters() {
    let server = Server::start();
    let client = server.client();
    register_simple(&client, "alpha").await;
    register_simple(&client, "alpha").await;
    register_simple(&client, "beta").await;
    let q = Some("default");

    let a1 = submit(&client, "train-1", "default", "alpha:1").await;
    let a2 = submit(&client, "train-2", "default", "alpha:2").await;
    let b1 = submit(&client, "eval", "default", "beta").await;
    tokio::time::sleep(std::time::Duration::from_millis(30)).await;
    let mid = now_ms();
    tokio::time::sleep(std::time::Duration::from_millis(30)).await;
    // PENDING: depends on a RUNNABLE job.
    let pending = client
        .submit_job()
        .job_name("train-3")
        .job_queue("default")
        .job_definition("alpha")
        .depends_on(JobDependency::builder().job_id(&a1).build())
        .send()
        .await
        .expect("dependent")
        .job_id
        .unwrap();
    // FAILED: cancelled.
    let failed = submit(&client, "trainer", "default", "beta").await;
    cancel(&client, &failed, "not needed").await;

    // No status and no filter: RUNNING only, of which there are none.
    assert!(
        list_all(&client, q, None, None, vec![], None)
            .await
            .is_empty()
    );
    assert_eq!(
        ids(&list_all(&client, q, None, Some(JobStatus::Runnable), vec![], None).await),
        set(&[&a1, &a2, &b1])
    );
    assert_eq!(
        ids(&list_all(&client, q, None, Some(JobStatus::Pending), vec![], None).await),
        set(&[&pending])
    );
    assert_eq!(
        ids(&list_all(&client, q, None, Some(JobStatus::Failed), vec![], None).await),
        set(&[&failed])
    );
    assert!(
        list_all(&client, q, None, Some(JobStatus::Succeeded), vec![], None)
            .await
            .is_empty()
    );

    // JOB_NAME exact and with a trailing '*'; with a filter every status comes back, and jobStatus
    // is ignored.
    assert_eq!(
        ids(&list_all(
            &client,
            q,
            None,
            None,
            vec![filter("JOB_NAME", "train-1")],
            None
        )
        .await),
        set(&[&a1])
    );
    let train = list_all(
        &client,
        q,
        None,
        None,
        vec![filter("JOB_NAME", "train*")],
        None,
    )
    .await;
    assert_eq!(ids(&train), set(&[&a1, &a2, &pending, &failed]));
    let statuses: BTreeSet<String> = train.iter().map(|(_, s)| s.as_str().to_string()).collect();
    assert_eq!(
        statuses,
        BTreeSet::from(["FAILED".into(), "PENDING".into(), "RUNNABLE".into()])
    );
    assert_eq!(
        ids(&list_all(
            &client,
            q,
            None,
            Some(JobStatus::Succeeded),
            vec![filter("JOB_NAME", "train-*")],
            None
        )
        .await),
        set(&[&a1, &a2, &pending])
    );

    // JOB_DEFINITION: a name matches every revision; name:revision and ARN match one.
    assert_eq!(
        ids(&list_all(
            &client,
            q,
            None,
            None,
            vec![filter("JOB_DEFINITION", "alpha")],
            None
        )
        .await),
        set(&[&a1, &a2, &pending])
    );
    assert_eq!(
        ids(&list_all(
            &client,
            q,
            None,
            None,
            vec![filter("JOB_DEFINITION", "alpha:1")],
            None
        )
        .await),
        set(&[&a1])
    );
    let arn2 = format!("{ARN_PREFIX}job-definition/alpha:2");
    assert_eq!(
        ids(&list_all(
            &client,
            q,
            None,
            None,
            vec![filter("JOB_DEFINITION", &arn2)],
            None
        )
        .await),
        set(&[&a2, &pending])
    );
    assert_eq!(
        ids(&list_all(
            &client,
            q,
            None,
            None,
            vec![filter("JOB_DEFINITION", "beta")],
            None
        )
        .await),
        set(&[&b1, &failed])
    );
    // "alpha" must not match a definition that merely starts with it.
    register_simple(&client, "alphabet").await;
    let other = submit(&client, "x", "default", "alphabet").await;
    let alpha = list_all(
        &client,
        q,
        None,
        None,
        vec![filter("JOB_DEFINITION", "alpha")],
        None,
    )
    .await;
    assert!(
        !ids(&alpha).contains(&other),
        "alpha matched alphabet's job"
    );

    // Creation time.
    assert_eq!(
        ids(&list_all(
            &client,
            q,
            None,
            None,
            vec![filter("BEFORE_CREATED_AT", &mid.to_string())],
            None
        )
        .await),
        set(&[&a1, &a2, &b1])
    );
    assert_eq!(
        ids(&list_all(
            &client,
            q,
            None,
            None,
            vec![filter("AFTER_CREATED_AT", &mid.to_string())],
            None
        )
        .await),
        set(&[&pending, &failed, &other])
    );

    // Another queue's jobs stay out.
    create_queue(&client, "other-q", "local").await;
    let elsewhere = submit(&client, "train-9", "other-q", "alpha").await;
    let train = list_all(
        &client,
        q,
        None,
        None,
        vec![filter("JOB_NAME", "train*")],
        None,
    )
    .await;
    assert!(!ids(&train).contains(&elsewhere));
    assert_eq!(
        ids(&list_all(
            &client,
            Some("other-q"),
            None,
            Some(JobStatus::Runnable),
            vec![],
            None
        )
        .await),
        set(&[&elsewhere])
    );
}

#[tokio::test]
async fn list_jobs_pages_return_each_job_once() {
    let server = Server::start();
    let client = server.client();
    register_simple(&client, "jd").await;
    let mut submitted = BTreeSet::new();
    for i in 0..23 {
        submitted.insert(submit(&client, &format!("p{i}"), "default", "jd").await);
    }
    // Cancel a few so a filtered listing spans statuses.
    for id in submitted.iter().take(4) {
        cancel(&client, id, "r").await;
    }
    for (status, filters) in [
        (Some(JobStatus::Runnable), vec![]),
        (None, vec![filter("JOB_NAME", "p*")]),
    ] {
        let listed = list_all(
            &client,
            Some("default"),
            None,
            status.clone(),
            filters,
            Some(5),
        )
        .await;
        let unique = ids(&listed);
        assert_eq!(unique.len(), listed.len(), "a job was listed twice");
        if status.is_some() {
            assert_eq!(listed.len(), 19);
            assert!(unique.is_subset(&submitted));
        } else {
            assert_eq!(unique, submitted);
        }
    }
    // Newest first.
    let page = client
        .list_jobs()
        .job_queue("default")
        .job_status(JobStatus::Runnable)
        .max_results(100)
        .send()
        .await
        .expect("list")
        .job_summary_list
        .unwrap_or_default();
    let created: Vec<i64> = page.iter().map(|s| s.created_at.unwrap()).collect();
    assert!(created.windows(2).all(|w| w[0] >= w[1]), "{created:?}");

    // Array children by arrayJobId, with a status and with a filter.
    let parent = client
        .submit_job()
        .job_name("arr")
        .job_queue("default")
        .job_definition("jd")
        .array_properties(ArrayProperties::builder().size(12).build())
        .send()
        .await
        .expect("array")
        .job_id
        .unwrap();
    cancel(&client, &format!("{parent}:3"), "skip").await;
    let children = list_all(
        &client,
        None,
        Some(&parent),
        Some(JobStatus::Runnable),
        vec![],
        Some(5),
    )
    .await;
    let expect: Vec<String> = (0..12)
        .filter(|i| *i != 3)
        .map(|i| format!("{parent}:{i}"))
        .collect();
    assert_eq!(
        children
            .iter()
            .map(|(id, _)| id.clone())
            .collect::<Vec<_>>(),
        expect
    );
    let failed = list_all(
        &client,
        None,
        Some(&parent),
        Some(JobStatus::Failed),
        vec![],
        None,
    )
    .await;
    assert_eq!(ids(&failed), BTreeSet::from([format!("{parent}:3")]));
    let all = list_all(
        &client,
        None,
        Some(&parent),
        None,
        vec![filter("JOB_NAME", "arr")],
        Some(7),
    )
    .await;
    assert_eq!(all.len(), 12);
    // Children are not listed in the queue scope; the parent is.
    let in_queue = list_all(
        &client,
        Some("default"),
        None,
        None,
        vec![filter("JOB_NAME", "arr")],
        None,
    )
    .await;
    assert_eq!(ids(&in_queue), BTreeSet::from([parent.clone()]));
}

#[tokio::test]
async fn cancel_and_terminate() {
    let server = Server::start();
    let client = server.client();
    register_simple(&client, "jd").await;

    // RUNNABLE → FAILED with the reason.
    let runnable = submit(&client, "r", "default", "jd").await;
    cancel(&client, &runnable, "changed my mind").await;
    let d = describe_job(&client, &runnable).await;
    assert_eq!(d.status, Some(JobStatus::Failed));
    assert_eq!(d.status_reason.as_deref(), Some("changed my mind"));
    assert_eq!(d.is_cancelled, Some(true));
    assert!(d.stopped_at.is_some());

    // PENDING → FAILED.
    let blocker = submit(&client, "blocker", "default", "jd").await;
    let pending = client
        .submit_job()
        .job_name("p")
        .job_queue("default")
        .job_definition("jd")
        .depends_on(JobDependency::builder().job_id(&blocker).build())
        .send()
        .await
        .expect("submit")
        .job_id
        .unwrap();
    assert_eq!(
        describe_job(&client, &pending).await.status,
        Some(JobStatus::Pending)
    );
    cancel(&client, &pending, "pending no more").await;
    let d = describe_job(&client, &pending).await;
    assert_eq!(d.status, Some(JobStatus::Failed));
    assert_eq!(d.status_reason.as_deref(), Some("pending no more"));
    assert_eq!(d.is_cancelled, Some(true));

    // Cancelling a finished job changes nothing.
    cancel(&client, &runnable, "again").await;
    assert_eq!(
        describe_job(&client, &runnable)
            .await
            .status_reason
            .as_deref(),
        Some("changed my mind")
    );

    // A job depending on a FAILED job fails at once.
    let doomed = client
        .submit_job()
        .job_name("doomed")
        .job_queue("default")
        .job_definition("jd")
        .depends_on(JobDependency::builder().job_id(&runnable).build())
        .send()
        .await
        .expect("submit")
        .job_id
        .unwrap();
    let d = describe_job(&client, &doomed).await;
    assert_eq!(d.status, Some(JobStatus::Failed));
    assert!(d.status_reason.unwrap_or_default().contains(&runnable));

    // TerminateJob on a RUNNABLE job acts like CancelJob, marked terminated.
    let t = submit(&client, "t", "default", "jd").await;
    client
        .terminate_job()
        .job_id(&t)
        .reason("terminated by test")
        .send()
        .await
        .expect("terminate");
    let d = describe_job(&client, &t).await;
    assert_eq!(d.status, Some(JobStatus::Failed));
    assert_eq!(d.status_reason.as_deref(), Some("terminated by test"));
    assert_eq!(d.is_terminated, Some(true));

    // Cancelling an array parent fails every child and the parent.
    let parent = client
        .submit_job()
        .job_name("arr")
        .job_queue("default")
        .job_definition("jd")
        .array_properties(ArrayProperties::builder().size(4).build())
        .send()
        .await
        .expect("array")
        .job_id
        .unwrap();
    cancel(&client, &parent, "whole array").await;
    let d = describe_job(&client, &parent).await;
    assert_eq!(d.status, Some(JobStatus::Failed));
    assert_eq!(d.status_reason.as_deref(), Some("whole array"));
    assert_eq!(d.is_cancelled, Some(true));
    let summary = d
        .array_properties
        .and_then(|a| a.status_summary)
        .unwrap_or_default();
    assert_eq!(summary.get("FAILED"), Some(&4));
    assert_eq!(summary.get("RUNNABLE"), Some(&0));
    for i in 0..4 {
        let c = describe_job(&client, &format!("{parent}:{i}")).await;
        assert_eq!(c.status, Some(JobStatus::Failed), "child {i}");
        assert_eq!(c.status_reason.as_deref(), Some("whole array"));
    }

    // Unknown jobs and a missing reason are ClientExceptions.
    let (code, msg) = service_error(
        client
            .cancel_job()
            .job_id("00000000-0000-0000-0000-000000000000")
            .reason("r")
            .send()
            .await,
    );
    assert_eq!(code, "ClientException");
    assert!(msg.contains("jobId"), "{msg}");
    let (code, msg) = service_error(client.terminate_job().job_id(&t).reason("").send().await);
    assert_eq!(code, "ClientException");
    assert!(msg.contains("reason"), "{msg}");
}

#[tokio::test]
async fn dependencies() {
    let server = Server::start();
    let client = server.client();
    register_simple(&client, "jd").await;
    let array = |size: i32, deps: Vec<JobDependency>| {
        client
            .submit_job()
            .job_name("arr")
            .job_queue("default")
            .job_definition("jd")
            .array_properties(ArrayProperties::builder().size(size).build())
            .set_depends_on((!deps.is_empty()).then_some(deps))
            .send()
    };
    let plain = |deps: Vec<JobDependency>| {
        client
            .submit_job()
            .job_name("plain")
            .job_queue("default")
            .job_definition("jd")
            .set_depends_on(Some(deps))
            .send()
    };
    let dep = |id: &str, t: Option<ArrayJobDependency>| {
        JobDependency::builder().job_id(id).set_type(t).build()
    };

    let first = submit(&client, "first", "default", "jd").await;
    let second = plain(vec![dep(&first, None)])
        .await
        .expect("dependent")
        .job_id
        .unwrap();
    let d = describe_job(&client, &second).await;
    assert_eq!(d.status, Some(JobStatus::Pending));
    assert_eq!(
        d.depends_on.unwrap_or_default()[0].job_id.as_deref(),
        Some(first.as_str())
    );

    // Unknown dependency.
    let (code, msg) =
        service_error(plain(vec![dep("00000000-0000-0000-0000-000000000000", None)]).await);
    assert_eq!(code, "ClientException");
    assert!(msg.contains("dependsOn[0].jobId"), "{msg}");

    // N_TO_N: an array of the same size.
    let a = array(3, vec![]).await.expect("array").job_id.unwrap();
    let (code, msg) = service_error(array(4, vec![dep(&a, Some(ArrayJobDependency::NToN))]).await);
    assert_eq!(code, "ClientException");
    assert!(msg.contains("dependsOn[0]"), "{msg}");
    let (code, msg) =
        service_error(array(3, vec![dep(&first, Some(ArrayJobDependency::NToN))]).await);
    assert_eq!(code, "ClientException");
    assert!(msg.contains("dependsOn[0]"), "{msg}");
    let (code, msg) = service_error(plain(vec![dep(&a, Some(ArrayJobDependency::NToN))]).await);
    assert_eq!(code, "ClientException");
    assert!(msg.contains("dependsOn[0].type"), "{msg}");
    let b = array(3, vec![dep(&a, Some(ArrayJobDependency::NToN))])
        .await
        .expect("N_TO_N")
        .job_id
        .unwrap();
    for i in 0..3 {
        let c = describe_job(&client, &format!("{b}:{i}")).await;
        assert_eq!(c.status, Some(JobStatus::Pending), "child {i}");
        let deps: Vec<String> = c
            .depends_on
            .unwrap_or_default()
            .into_iter()
            .filter_map(|d| d.job_id)
            .collect();
        assert_eq!(deps, vec![format!("{a}:{i}")]);
    }

    // SEQUENTIAL: only on arrays; child N waits for N-1.
    let seq = || {
        JobDependency::builder()
            .r#type(ArrayJobDependency::Sequential)
            .build()
    };
    let (code, msg) = service_error(plain(vec![seq()]).await);
    assert_eq!(code, "ClientException");
    assert!(msg.contains("dependsOn[0].type"), "{msg}");
    let s = array(3, vec![seq()])
        .await
        .expect("sequential")
        .job_id
        .unwrap();
    assert_eq!(
        describe_job(&client, &format!("{s}:0")).await.status,
        Some(JobStatus::Runnable)
    );
    for i in 1..3 {
        let c = describe_job(&client, &format!("{s}:{i}")).await;
        assert_eq!(c.status, Some(JobStatus::Pending));
        let deps: Vec<String> = c
            .depends_on
            .unwrap_or_default()
            .into_iter()
            .filter_map(|d| d.job_id)
            .collect();
        assert_eq!(deps, vec![format!("{s}:{}", i - 1)]);
    }
    // Refused submissions stored nothing.
    let all = list_all(
        &client,
        Some("default"),
        None,
        None,
        vec![filter("JOB_NAME", "*")],
        None,
    )
    .await;
    assert_eq!(ids(&all), set(&[&first, &second, &a, &b, &s]));
}

#[tokio::test]
async fn job_queue_snapshot_shows_the_front_of_the_queue() {
    let server = Server::start();
    let client = server.client();
    register_simple(&client, "jd").await;
    let mut jobs = Vec::new();
    for i in 0..3 {
        jobs.push(submit(&client, &format!("s{i}"), "default", "jd").await);
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
    // A PENDING job is not at the front.
    client
        .submit_job()
        .job_name("waits")
        .job_queue("default")
        .job_definition("jd")
        .depends_on(JobDependency::builder().job_id(&jobs[0]).build())
        .send()
        .await
        .expect("dependent");
    cancel(&client, &jobs[1], "gone").await;
    let snap = client
        .get_job_queue_snapshot()
        .job_queue("default")
        .send()
        .await
        .expect("snapshot");
    let front = snap.front_of_queue.expect("frontOfQueue");
    let arns: Vec<String> = front
        .jobs
        .unwrap_or_default()
        .into_iter()
        .filter_map(|j| j.job_arn)
        .collect();
    assert_eq!(
        arns,
        vec![
            format!("{ARN_PREFIX}job/{}", jobs[0]),
            format!("{ARN_PREFIX}job/{}", jobs[2])
        ]
    );
    assert!(front.last_updated_at.is_some());
    let (code, msg) = service_error(
        client
            .get_job_queue_snapshot()
            .job_queue("nope")
            .send()
            .await,
    );
    assert_eq!(code, "ClientException");
    assert!(msg.contains("jobQueue"), "{msg}");
}

/// A 400 ClientException naming `nextToken`.
#[track_caller]
fn assert_token_refused<T: std::fmt::Debug, E>(
    r: Result<T, aws_sdk_batch::error::SdkError<E, aws_sdk_batch::config::http::HttpResponse>>,
) where
    E: aws_sdk_batch::error::ProvideErrorMetadata + std::fmt::Debug,
{
    let status = r
        .as_ref()
        .err()
        .and_then(|e| e.raw_response())
        .map(|r| r.status().as_u16());
    let (code, msg) = service_error(r);
    assert_eq!(status, Some(400), "{code}: {msg}");
    assert_eq!(code, "ClientException", "{msg}");
    assert!(msg.contains("nextToken"), "{msg}");
}

#[tokio::test]
async fn next_tokens_are_bound_to_their_listing() {
    let server = Server::start();
    let client = server.client();
    register_simple(&client, "jd").await;
    register_simple(&client, "jd2").await;
    register_simple(&client, "jd2").await;
    let ce = create_local_ce(&client, "other-ce").await;
    let other = create_queue(&client, "other", &ce).await;
    for i in 0..3 {
        submit(&client, &format!("d{i}"), "default", "jd").await;
        submit(&client, &format!("o{i}"), "other", "jd").await;
    }
    let parent = client
        .submit_job()
        .job_name("arr")
        .job_queue("default")
        .job_definition("jd")
        .array_properties(ArrayProperties::builder().size(4).build())
        .send()
        .await
        .expect("array")
        .job_id
        .unwrap();
    let first_page = |queue: Option<&str>, array: Option<&str>| {
        client
            .list_jobs()
            .set_job_queue(queue.map(String::from))
            .set_array_job_id(array.map(String::from))
            .job_status(JobStatus::Runnable)
            .max_results(1)
            .send()
    };
    let queue_token = first_page(Some("default"), None)
        .await
        .expect("queue page")
        .next_token
        .expect("more than one job in the queue");
    let array_token = first_page(None, Some(&parent))
        .await
        .expect("array page")
        .next_token
        .expect("more than one child");
    let list = |queue: Option<&str>, array: Option<&str>, token: &str| {
        client
            .list_jobs()
            .set_job_queue(queue.map(String::from))
            .set_array_job_id(array.map(String::from))
            .job_status(JobStatus::Runnable)
            .max_results(1)
            .next_token(token)
            .send()
    };

    // A queue's token on an array job, an array's on a queue, queue A's on queue B.
    assert_token_refused(list(None, Some(&parent), &queue_token).await);
    assert_token_refused(list(Some("default"), None, &array_token).await);
    assert_token_refused(list(Some(&other), None, &queue_token).await);
    // Another array job's token.
    let parent2 = client
        .submit_job()
        .job_name("arr2")
        .job_queue("default")
        .job_definition("jd")
        .array_properties(ArrayProperties::builder().size(2).build())
        .send()
        .await
        .expect("array")
        .job_id
        .unwrap();
    assert_token_refused(list(None, Some(&parent2), &array_token).await);
    // A token that was never issued.
    assert_token_refused(list(Some("default"), None, "bm90LWEtdG9rZW4").await);
    // The queue is the same whether named or given by ARN, and the token continues it.
    let default_arn = format!("{ARN_PREFIX}job-queue/default");
    let next = list(Some(&default_arn), None, &queue_token)
        .await
        .expect("the queue's own token");
    assert_eq!(next.job_summary_list.unwrap_or_default().len(), 1);
    let next = list(None, Some(&parent), &array_token)
        .await
        .expect("the array's own token");
    assert_eq!(
        next.job_summary_list.unwrap_or_default()[0]
            .job_id
            .as_deref(),
        Some(format!("{parent}:1").as_str())
    );

    // The catalog listings: each operation's tokens are its own, and DescribeJobDefinitions'
    // are bound to the name they list.
    let queues_token = client
        .describe_job_queues()
        .max_results(1)
        .send()
        .await
        .expect("queues")
        .next_token
        .expect("two queues");
    assert_token_refused(
        client
            .describe_compute_environments()
            .next_token(&queues_token)
            .send()
            .await,
    );
    assert_token_refused(
        client
            .describe_job_definitions()
            .next_token(&queues_token)
            .send()
            .await,
    );
    assert_token_refused(
        client
            .list_scheduling_policies()
            .next_token(&queues_token)
            .send()
            .await,
    );
    let jd2_token = client
        .describe_job_definitions()
        .job_definition_name("jd2")
        .max_results(1)
        .send()
        .await
        .expect("definitions")
        .next_token
        .expect("two revisions");
    assert_token_refused(
        client
            .describe_job_definitions()
            .job_definition_name("jd")
            .next_token(&jd2_token)
            .send()
            .await,
    );
    let rest = client
        .describe_job_definitions()
        .job_definition_name("jd2")
        .next_token(&jd2_token)
        .send()
        .await
        .expect("the name's own token")
        .job_definitions
        .unwrap_or_default();
    assert_eq!(rest.len(), 1);
    assert_eq!(rest[0].revision, Some(2));
    client
        .describe_job_queues()
        .next_token(&queues_token)
        .send()
        .await
        .expect("the operation's own token");
}
