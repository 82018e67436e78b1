//! Consumable resources end to end: the six operations through the AWS SDK for Rust, jobs that
//! really run (LOCAL process runtime) and share a licence across queues and compute
//! environments, exact counts across a SIGKILL of the server, and bad input answered with a
//! ClientException naming the field.

mod common;

use aws_sdk_batch::types::*;
use common::*;
use serde_json::json;
use std::time::{Duration, Instant};

/// A server that runs jobs as host processes, with a short kill grace, on SQLite or on
/// PostgreSQL database `pg`.
fn process_server(pg: Option<&PgDatabase>) -> Server {
    Server::start_with(ServerOptions {
        database_url: pg.map(|db| db.url.clone()),
        extra_args: vec![
            "--local-runtime".into(),
            "process".into(),
            "--kill-grace-seconds".into(),
            "2".into(),
        ],
        dispatch: true,
        ..Default::default()
    })
}

fn needs(resource: &str, quantity: i64) -> ConsumableResourceProperties {
    ConsumableResourceProperties::builder()
        .consumable_resource_list(
            ConsumableResourceRequirement::builder()
                .consumable_resource(resource)
                .quantity(quantity)
                .build(),
        )
        .build()
}

/// Registers `name`: `command`, a quarter vCPU (so CPU never limits the tests' concurrency),
/// three attempts, and `quantity` of `resource`.
async fn register(
    client: &aws_sdk_batch::Client,
    name: &str,
    command: &[&str],
    resource: &str,
    quantity: i64,
) {
    client
        .register_job_definition()
        .job_definition_name(name)
        .r#type(JobDefinitionType::Container)
        .container_properties(
            ContainerProperties::builder()
                .image("flotilla-test/busybox:latest")
                .set_command(Some(command.iter().map(|s| s.to_string()).collect()))
                .resource_requirements(
                    ResourceRequirement::builder()
                        .r#type(ResourceType::Vcpu)
                        .value("0.25")
                        .build(),
                )
                .resource_requirements(
                    ResourceRequirement::builder()
                        .r#type(ResourceType::Memory)
                        .value("16")
                        .build(),
                )
                .build(),
        )
        // Attempts killed with the server end as lost hosts; the retry runs them again.
        .retry_strategy(RetryStrategy::builder().attempts(3).build())
        .consumable_resource_properties(needs(resource, quantity))
        .send()
        .await
        .expect("register");
}

/// (total, in use, available) from DescribeConsumableResource.
async fn counts(client: &aws_sdk_batch::Client, name: &str) -> (i64, i64, i64) {
    let d = client
        .describe_consumable_resource()
        .consumable_resource(name)
        .send()
        .await
        .expect("describe consumable resource");
    (
        d.total_quantity().expect("totalQuantity"),
        d.in_use_quantity().expect("inUseQuantity"),
        d.available_quantity().expect("availableQuantity"),
    )
}

/// Every job needing `resource` (ListJobsByConsumableResource, paged by 40), with `status`.
async fn jobs_needing(
    client: &aws_sdk_batch::Client,
    resource: &str,
    status: Option<&str>,
) -> Vec<ListJobsByConsumableResourceSummary> {
    let mut out = Vec::new();
    let mut token = None;
    loop {
        let mut req = client
            .list_jobs_by_consumable_resource()
            .consumable_resource(resource)
            .max_results(40)
            .set_next_token(token);
        if let Some(s) = status {
            req = req.filters(
                KeyValuesPair::builder()
                    .name("JOB_STATUS")
                    .values(s)
                    .build(),
            );
        }
        let page = req.send().await.expect("list jobs by consumable resource");
        out.extend(page.jobs().iter().cloned());
        token = page.next_token().map(str::to_string);
        if token.is_none() {
            return out;
        }
    }
}

/// The most attempts that ran at once, from every attempt's [startedAt, stoppedAt].
fn most_at_once(jobs: &[JobDetail]) -> usize {
    let mut edges: Vec<(i64, i32)> = Vec::new();
    for j in jobs {
        for a in j.attempts() {
            if let (Some(start), Some(stop)) = (a.started_at(), a.stopped_at()) {
                edges.push((start, 1));
                edges.push((stop, -1));
            }
        }
    }
    // An end sorts before a start at the same millisecond: that licence was already back.
    edges.sort();
    let (mut now, mut most) = (0i32, 0i32);
    for (_, d) in edges {
        now += d;
        most = most.max(now);
    }
    most as usize
}

async fn describe_all(client: &aws_sdk_batch::Client, ids: &[String]) -> Vec<JobDetail> {
    let mut out = Vec::new();
    for chunk in ids.chunks(100) {
        let d = client
            .describe_jobs()
            .set_jobs(Some(chunk.to_vec()))
            .send()
            .await
            .expect("describe jobs");
        out.extend(d.jobs().iter().cloned());
    }
    out
}

#[tokio::test(flavor = "multi_thread")]
async fn a_licence_of_three_runs_a_hundred_jobs_three_at_a_time_across_a_sigkill_sqlite() {
    hundred_jobs_three_at_a_time(process_server(None)).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_licence_of_three_runs_a_hundred_jobs_three_at_a_time_across_a_sigkill_postgres() {
    let db = PgDatabase::create();
    hundred_jobs_three_at_a_time(process_server(Some(&db))).await;
}

async fn hundred_jobs_three_at_a_time(mut server: Server) {
    let client = server.client();
    client
        .create_consumable_resource()
        .consumable_resource_name("licence")
        .total_quantity(3)
        .send()
        .await
        .expect("create consumable resource");
    // Two queues on two environments with room for 16 jobs each: only the licence limits them.
    let ce_a = create_local_ce_in_state(&client, "ce-a", None).await;
    let ce_b = create_local_ce_in_state(&client, "ce-b", None).await;
    create_queue(&client, "qa", &ce_a).await;
    create_queue(&client, "qb", &ce_b).await;
    register(&client, "licensed", &["sleep", "0.2"], "licence", 1).await;
    let mut ids = Vec::new();
    for i in 0..100 {
        let queue = if i % 2 == 0 { "qa" } else { "qb" };
        ids.push(common::submit(&client, &format!("j{i}"), queue, "licensed").await);
    }

    let deadline = Instant::now() + Duration::from_secs(300);
    let mut killed = false;
    let mut client = client;
    loop {
        let (total, in_use, available) = counts(&client, "licence").await;
        assert_eq!(total, 3);
        assert!(in_use <= 3, "{in_use} licences in use");
        assert_eq!(
            in_use + available,
            3,
            "in use {in_use}, available {available}"
        );
        let done = jobs_needing(&client, "licence", Some("SUCCEEDED"))
            .await
            .len();
        if done == 100 {
            break;
        }
        if !killed && done >= 30 && in_use > 0 {
            // Mid-run, with licences held by running jobs.
            server.kill();
            server.restart();
            client = server.client();
            killed = true;
            continue;
        }
        assert!(
            Instant::now() < deadline,
            "only {done} of 100 jobs succeeded within 300 s"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(killed);
    let jobs = describe_all(&client, &ids).await;
    assert_eq!(jobs.len(), 100);
    for j in &jobs {
        assert_eq!(j.status(), Some(&JobStatus::Succeeded), "{j:?}");
        let props = j.consumable_resource_properties().expect("properties");
        assert_eq!(props.consumable_resource_list()[0].quantity(), Some(1));
    }
    let most = most_at_once(&jobs);
    assert!(most <= 3, "{most} jobs ran at once with 3 licences");
    assert!(most >= 2, "the licence was never shared ({most} at once)");
    // Settled: the last end may still be on its way into the counts.
    let settle = Instant::now() + Duration::from_secs(10);
    while counts(&client, "licence").await != (3, 0, 3) && Instant::now() < settle {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(counts(&client, "licence").await, (3, 0, 3));
    // And after one more restart.
    server.kill();
    server.restart();
    let client = server.client();
    assert_eq!(counts(&client, "licence").await, (3, 0, 3));
    let listed = jobs_needing(&client, "licence", None).await;
    assert_eq!(listed.len(), 100);
    assert!(listed.iter().all(|j| j.quantity() == Some(1)
        && j.job_status() == Some("SUCCEEDED")
        && j.consumable_resource_properties().is_some()));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_non_replenishable_resource_is_used_up_and_stays_used_up_after_a_sigkill_sqlite() {
    non_replenishable_across_a_sigkill(process_server(None)).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_non_replenishable_resource_is_used_up_and_stays_used_up_after_a_sigkill_postgres() {
    let db = PgDatabase::create();
    non_replenishable_across_a_sigkill(process_server(Some(&db))).await;
}

async fn non_replenishable_across_a_sigkill(mut server: Server) {
    let client = server.client();
    let created = client
        .create_consumable_resource()
        .consumable_resource_name("tokens")
        .total_quantity(5)
        .resource_type("NON_REPLENISHABLE")
        .tags("team", "a")
        .send()
        .await
        .expect("create");
    let arn = created.consumable_resource_arn().unwrap().to_string();
    assert!(
        arn.ends_with(":consumable-resource/tokens") && arn.starts_with("arn:aws:batch:"),
        "{arn}"
    );
    let ce = create_local_ce_in_state(&client, "ce", None).await;
    create_queue(&client, "q", &ce).await;
    register(&client, "spend", &["true"], &arn, 2).await;
    for i in 0..2 {
        let id = common::submit(&client, &format!("s{i}"), "q", "spend").await;
        let j = wait_final(&client, &id, 60).await;
        assert_eq!(j.status(), Some(&JobStatus::Succeeded));
    }
    let settle = Instant::now() + Duration::from_secs(10);
    while counts(&client, "tokens").await.0 != 1 && Instant::now() < settle {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(counts(&client, "tokens").await, (1, 0, 1));
    // One token left: the next job, needing two, waits and says for what.
    let waiting = common::submit(&client, "s2", "q", "spend").await;
    let reason_deadline = Instant::now() + Duration::from_secs(20);
    let reason = loop {
        let j = describe_job(&client, &waiting).await;
        assert_eq!(j.status(), Some(&JobStatus::Runnable));
        // Until the job's own reason is written, DescribeJobs explains the wait from its queue's
        // head.
        if let Some(r) = j.status_reason().filter(|r| r.starts_with("RESOURCE:")) {
            break r.to_string();
        }
        assert!(Instant::now() < reason_deadline, "no reason: {j:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert!(
        reason.starts_with("RESOURCE:WAITING_FOR_CONSUMABLE_RESOURCE"),
        "{reason}"
    );

    server.kill();
    server.restart();
    let client = server.client();
    assert_eq!(counts(&client, "tokens").await, (1, 0, 1));
    let d = client
        .describe_consumable_resource()
        .consumable_resource(&arn)
        .send()
        .await
        .unwrap();
    assert_eq!(d.resource_type(), Some("NON_REPLENISHABLE"));
    assert_eq!(d.tags().unwrap().get("team").map(String::as_str), Some("a"));
    let updated = client
        .update_consumable_resource()
        .consumable_resource("tokens")
        .operation("ADD")
        .quantity(1)
        .client_token("top-up-1")
        .send()
        .await
        .expect("update");
    assert_eq!(updated.total_quantity(), Some(2));
    // The same request again (same clientToken) is not applied twice: the final total below
    // would be 1. (Its answer is the current total, which the job may have consumed already.)
    client
        .update_consumable_resource()
        .consumable_resource("tokens")
        .operation("ADD")
        .quantity(1)
        .client_token("top-up-1")
        .send()
        .await
        .expect("update again");
    let j = wait_final(&client, &waiting, 60).await;
    assert_eq!(j.status(), Some(&JobStatus::Succeeded));
    let settle = Instant::now() + Duration::from_secs(10);
    while counts(&client, "tokens").await != (0, 0, 0) && Instant::now() < settle {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(counts(&client, "tokens").await, (0, 0, 0));
}

#[tokio::test]
async fn resources_are_listed_tagged_updated_and_deleted() {
    let server = Server::start();
    let client = server.client();
    for (name, total) in [("licence-a", 1), ("licence-b", 2), ("other", 3)] {
        client
            .create_consumable_resource()
            .consumable_resource_name(name)
            .total_quantity(total)
            .send()
            .await
            .expect("create");
    }
    let listed = client
        .list_consumable_resources()
        .filters(
            KeyValuesPair::builder()
                .name("CONSUMABLE_RESOURCE_NAME")
                .values("LICENCE*")
                .build(),
        )
        .max_results(1)
        .send()
        .await
        .expect("list");
    assert_eq!(listed.consumable_resources().len(), 1);
    assert_eq!(
        listed.consumable_resources()[0].consumable_resource_name(),
        Some("licence-a")
    );
    let rest = client
        .list_consumable_resources()
        .filters(
            KeyValuesPair::builder()
                .name("CONSUMABLE_RESOURCE_NAME")
                .values("LICENCE*")
                .build(),
        )
        .next_token(listed.next_token().expect("nextToken"))
        .send()
        .await
        .expect("list page 2");
    let names: Vec<_> = rest
        .consumable_resources()
        .iter()
        .filter_map(|r| r.consumable_resource_name())
        .collect();
    assert_eq!(names, ["licence-b"]);
    assert_eq!(rest.consumable_resources()[0].total_quantity(), Some(2));
    assert_eq!(rest.consumable_resources()[0].in_use_quantity(), Some(0));
    assert_eq!(
        rest.consumable_resources()[0].resource_type(),
        Some("REPLENISHABLE")
    );

    let arn = client
        .describe_consumable_resource()
        .consumable_resource("other")
        .send()
        .await
        .unwrap()
        .consumable_resource_arn()
        .unwrap()
        .to_string();
    client
        .tag_resource()
        .resource_arn(&arn)
        .tags("k", "v")
        .send()
        .await
        .expect("tag");
    let tags = client
        .list_tags_for_resource()
        .resource_arn(&arn)
        .send()
        .await
        .expect("list tags");
    assert_eq!(tags.tags().unwrap().get("k").map(String::as_str), Some("v"));

    for (op, q, total) in [("SET", 10, 10), ("REMOVE", 4, 6), ("ADD", 1, 7)] {
        let u = client
            .update_consumable_resource()
            .consumable_resource(&arn)
            .operation(op)
            .quantity(q)
            .send()
            .await
            .expect("update");
        assert_eq!(u.total_quantity(), Some(total), "{op}");
    }
    assert_eq!(counts(&client, "other").await, (7, 0, 7));

    // The definition keeps its resources and DescribeJobDefinitions returns them.
    client
        .register_job_definition()
        .job_definition_name("licensed")
        .r#type(JobDefinitionType::Container)
        .container_properties(
            ContainerProperties::builder()
                .image("busybox")
                .resource_requirements(
                    ResourceRequirement::builder()
                        .r#type(ResourceType::Vcpu)
                        .value("1")
                        .build(),
                )
                .build(),
        )
        .consumable_resource_properties(needs("licence-a", 1))
        .send()
        .await
        .expect("register");
    let defs = client
        .describe_job_definitions()
        .job_definition_name("licensed")
        .send()
        .await
        .unwrap();
    let props = defs.job_definitions()[0]
        .consumable_resource_properties()
        .expect("consumableResourceProperties");
    assert_eq!(
        props.consumable_resource_list()[0].consumable_resource(),
        Some("licence-a")
    );

    client
        .delete_consumable_resource()
        .consumable_resource("other")
        .send()
        .await
        .expect("delete");
    let (code, message) = service_error(
        client
            .describe_consumable_resource()
            .consumable_resource("other")
            .send()
            .await,
    );
    assert_eq!(code, "ClientException");
    assert!(message.starts_with("consumableResource:"), "{message}");
}

#[tokio::test]
async fn bad_input_is_a_client_exception_naming_the_field() {
    let server = Server::start();
    let raw = server.raw();
    let ok = raw
        .post(
            "CreateConsumableResource",
            &json!({"consumableResourceName": "licence", "totalQuantity": 2}),
        )
        .await;
    assert_eq!(ok.status, 200, "{ok:?}");
    let def = |props: serde_json::Value| {
        json!({"jobDefinitionName": "d", "type": "container",
               "containerProperties": {"image": "busybox", "vcpus": 1, "memory": 16},
               "consumableResourceProperties": props})
    };
    let cases = [
        (
            "CreateConsumableResource",
            json!({"consumableResourceName": "licence", "totalQuantity": 1}),
            "consumableResourceName",
        ),
        (
            "CreateConsumableResource",
            json!({"consumableResourceName": "neg", "totalQuantity": -1}),
            "totalQuantity",
        ),
        (
            "CreateConsumableResource",
            json!({"consumableResourceName": "t", "resourceType": "SOMETIMES"}),
            "resourceType",
        ),
        (
            "CreateConsumableResource",
            json!({"consumableResourceName": "bad/name"}),
            "consumableResourceName",
        ),
        (
            "CreateConsumableResource",
            json!({"consumableResourceName": "x", "totalQuantity": "many"}),
            "totalQuantity",
        ),
        (
            "UpdateConsumableResource",
            json!({"consumableResource": "licence", "operation": "MULTIPLY", "quantity": 2}),
            "operation",
        ),
        (
            "UpdateConsumableResource",
            json!({"consumableResource": "licence", "operation": "REMOVE", "quantity": 3}),
            "quantity",
        ),
        (
            "UpdateConsumableResource",
            json!({"consumableResource": "licence", "operation": "SET", "quantity": -1}),
            "quantity",
        ),
        (
            "UpdateConsumableResource",
            json!({"consumableResource": "nope", "operation": "SET", "quantity": 1}),
            "consumableResource",
        ),
        (
            "DescribeConsumableResource",
            json!({"consumableResource": "nope"}),
            "consumableResource",
        ),
        ("DeleteConsumableResource", json!({}), "consumableResource"),
        (
            "ListConsumableResources",
            json!({"filters": [{"name": "JOB_NAME", "values": ["x"]}]}),
            "filters[0].name",
        ),
        (
            "ListConsumableResources",
            json!({"maxResults": 0}),
            "maxResults",
        ),
        (
            "ListJobsByConsumableResource",
            json!({"consumableResource": "licence",
                   "filters": [{"name": "JOB_STATUS", "values": ["DONE"]}]}),
            "filters[0].values[0]",
        ),
        (
            "RegisterJobDefinition",
            def(json!({"consumableResourceList": [{"consumableResource": "nope", "quantity": 1}]})),
            "consumableResourceProperties.consumableResourceList[0].consumableResource",
        ),
        (
            "RegisterJobDefinition",
            def(
                json!({"consumableResourceList": [{"consumableResource": "licence", "quantity": 0}]}),
            ),
            "consumableResourceProperties.consumableResourceList[0].quantity",
        ),
        (
            "RegisterJobDefinition",
            def(json!({"consumableResourceList": [
                {"consumableResource": "licence", "quantity": 1},
                {"consumableResource": "licence", "quantity": 1}
            ]})),
            "consumableResourceProperties.consumableResourceList[1].consumableResource",
        ),
        (
            "SubmitJob",
            json!({"jobName": "j", "jobQueue": "default", "jobDefinition": "d",
                   "consumableResourcePropertiesOverride": {"consumableResourceList": [
                       {"consumableResource": "licence", "quantity": -2}]}}),
            "consumableResourcePropertiesOverride.consumableResourceList[0].quantity",
        ),
    ];
    let ok = raw.post("RegisterJobDefinition", &def(json!({}))).await;
    assert_eq!(ok.status, 200, "{ok:?}");
    for (op, body, field) in cases {
        let r = raw.post(op, &body).await;
        r.assert_client_error(field);
    }
}
