//! Compute environments, job queues, job definitions, scheduling policies and tags through the
//! official AWS SDK for Rust, with the lifecycle rules AWS Batch enforces.

mod common;

use aws_sdk_batch::types::*;
use common::*;
use std::collections::HashMap;

const ARN_PREFIX: &str = "arn:aws:batch:us-east-1:000000000000:";

async fn ce_names(client: &aws_sdk_batch::Client) -> Vec<String> {
    client
        .describe_compute_environments()
        .send()
        .await
        .expect("describe compute environments")
        .compute_environments
        .unwrap_or_default()
        .into_iter()
        .filter_map(|c| c.compute_environment_name)
        .collect()
}

async fn queue(client: &aws_sdk_batch::Client, name: &str) -> Option<JobQueueDetail> {
    client
        .describe_job_queues()
        .job_queues(name)
        .send()
        .await
        .expect("describe job queues")
        .job_queues
        .unwrap_or_default()
        .into_iter()
        .next()
}

async fn queue_names(client: &aws_sdk_batch::Client) -> Vec<String> {
    client
        .describe_job_queues()
        .send()
        .await
        .expect("describe job queues")
        .job_queues
        .unwrap_or_default()
        .into_iter()
        .filter_map(|q| q.job_queue_name)
        .collect()
}

async fn ce(client: &aws_sdk_batch::Client, name: &str) -> Option<ComputeEnvironmentDetail> {
    client
        .describe_compute_environments()
        .compute_environments(name)
        .send()
        .await
        .expect("describe compute environments")
        .compute_environments
        .unwrap_or_default()
        .into_iter()
        .next()
}

async fn definitions(
    client: &aws_sdk_batch::Client,
    name: &str,
    status: Option<&str>,
) -> Vec<(i32, String)> {
    let mut req = client.describe_job_definitions().job_definition_name(name);
    if let Some(s) = status {
        req = req.status(s);
    }
    let mut out: Vec<(i32, String)> = req
        .send()
        .await
        .expect("describe job definitions")
        .job_definitions
        .unwrap_or_default()
        .into_iter()
        .map(|d| (d.revision.unwrap_or_default(), d.status.unwrap_or_default()))
        .collect();
    out.sort();
    out
}

async fn tags_of(client: &aws_sdk_batch::Client, arn: &str) -> HashMap<String, String> {
    client
        .list_tags_for_resource()
        .resource_arn(arn)
        .send()
        .await
        .expect("list tags")
        .tags
        .unwrap_or_default()
}

#[tokio::test]
async fn compute_environment_lifecycle() {
    let server = Server::start_with(ServerOptions {
        no_defaults: true,
        ..Default::default()
    });
    let client = server.client();
    // No state given: the environment starts ENABLED.
    let arn = create_local_ce_in_state(&client, "ce-a", None).await;
    assert_eq!(arn, format!("{ARN_PREFIX}compute-environment/ce-a"));

    // By name and by ARN.
    for key in ["ce-a", arn.as_str()] {
        let d = ce(&client, key).await.expect("described");
        assert_eq!(d.compute_environment_name.as_deref(), Some("ce-a"));
        assert_eq!(d.compute_environment_arn.as_deref(), Some(arn.as_str()));
        assert_eq!(d.r#type, Some(CeType::Managed));
        assert_eq!(d.state, Some(CeState::Enabled));
        assert_eq!(d.status, Some(CeStatus::Valid));
        let cr = d.compute_resources.expect("computeResources");
        assert_eq!(cr.r#type.as_ref().map(|t| t.as_str()), Some("LOCAL"));
        assert_eq!(cr.maxv_cpus, Some(4));
        assert_eq!(cr.minv_cpus, Some(0));
    }

    // Duplicate names are refused.
    let (code, msg) = service_error(
        client
            .create_compute_environment()
            .compute_environment_name("ce-a")
            .r#type(CeType::Unmanaged)
            .send()
            .await,
    );
    assert_eq!(code, "ClientException");
    assert!(msg.contains("computeEnvironmentName"), "{msg}");
    assert_eq!(
        ce(&client, "ce-a").await.unwrap().r#type,
        Some(CeType::Managed)
    );

    // Update: vCPU bounds and state.
    client
        .update_compute_environment()
        .compute_environment("ce-a")
        .compute_resources(
            ComputeResourceUpdate::builder()
                .maxv_cpus(8)
                .minv_cpus(1)
                .build(),
        )
        .send()
        .await
        .expect("update compute environment");
    let cr = ce(&client, "ce-a")
        .await
        .unwrap()
        .compute_resources
        .unwrap();
    assert_eq!((cr.minv_cpus, cr.maxv_cpus), (Some(1), Some(8)));

    // A queue uses it: it must be DISABLED and unused to be deleted.
    create_queue(&client, "q-a", "ce-a").await;
    let (code, msg) = service_error(
        client
            .delete_compute_environment()
            .compute_environment("ce-a")
            .send()
            .await,
    );
    assert_eq!(code, "ClientException");
    assert!(msg.contains("DISABLED"), "{msg}");
    client
        .update_compute_environment()
        .compute_environment(&arn)
        .state(CeState::Disabled)
        .send()
        .await
        .expect("disable");
    assert_eq!(
        ce(&client, "ce-a").await.unwrap().state,
        Some(CeState::Disabled)
    );
    let (code, msg) = service_error(
        client
            .delete_compute_environment()
            .compute_environment("ce-a")
            .send()
            .await,
    );
    assert_eq!(code, "ClientException");
    assert!(
        msg.contains("q-a"),
        "message names the queue using it: {msg}"
    );
    assert!(ce(&client, "ce-a").await.is_some());

    // Move the queue to another environment; now the delete goes through.
    create_local_ce(&client, "ce-b").await;
    client
        .update_job_queue()
        .job_queue("q-a")
        .compute_environment_order(
            ComputeEnvironmentOrder::builder()
                .order(1)
                .compute_environment("ce-b")
                .build(),
        )
        .send()
        .await
        .expect("re-point the queue");
    client
        .delete_compute_environment()
        .compute_environment("ce-a")
        .send()
        .await
        .expect("delete");
    assert!(ce(&client, "ce-a").await.is_none());
    assert_eq!(ce_names(&client).await, vec!["ce-b"]);
    // The name is free again.
    create_local_ce(&client, "ce-a").await;
}

#[tokio::test]
async fn compute_environments_page_with_next_token() {
    let server = Server::start_with(ServerOptions {
        no_defaults: true,
        ..Default::default()
    });
    let client = server.client();
    for i in 0..5 {
        create_local_ce(&client, &format!("ce-{i}")).await;
    }
    let mut seen = Vec::new();
    let mut token = None;
    let mut pages = 0;
    loop {
        let page = client
            .describe_compute_environments()
            .max_results(2)
            .set_next_token(token)
            .send()
            .await
            .expect("page");
        let names: Vec<String> = page
            .compute_environments
            .unwrap_or_default()
            .into_iter()
            .filter_map(|c| c.compute_environment_name)
            .collect();
        assert!(names.len() <= 2);
        seen.extend(names);
        pages += 1;
        token = page.next_token;
        if token.is_none() {
            break;
        }
    }
    assert_eq!(pages, 3);
    assert_eq!(seen, vec!["ce-0", "ce-1", "ce-2", "ce-3", "ce-4"]);
}

#[tokio::test]
async fn job_queue_lifecycle() {
    let server = Server::start_with(ServerOptions {
        no_defaults: true,
        ..Default::default()
    });
    let client = server.client();
    let ce_arn = create_local_ce(&client, "ce").await;
    let arn = create_queue(&client, "q", "ce").await;
    assert_eq!(arn, format!("{ARN_PREFIX}job-queue/q"));
    register_simple(&client, "jd").await;

    let q = queue(&client, &arn).await.expect("by ARN");
    assert_eq!(q.job_queue_name.as_deref(), Some("q"));
    assert_eq!(q.state, Some(JqState::Enabled));
    assert_eq!(q.status, Some(JqStatus::Valid));
    assert_eq!(q.priority, Some(1));
    let order = q.compute_environment_order.unwrap_or_default();
    assert_eq!(order.len(), 1);
    assert_eq!(
        order[0].compute_environment.as_deref(),
        Some(ce_arn.as_str())
    );

    // Duplicate name.
    let (code, msg) = service_error(
        client
            .create_job_queue()
            .job_queue_name("q")
            .priority(5)
            .compute_environment_order(
                ComputeEnvironmentOrder::builder()
                    .order(1)
                    .compute_environment("ce")
                    .build(),
            )
            .send()
            .await,
    );
    assert_eq!(code, "ClientException");
    assert!(msg.contains("jobQueueName"), "{msg}");
    assert_eq!(queue(&client, "q").await.unwrap().priority, Some(1));

    // Update the priority.
    client
        .update_job_queue()
        .job_queue("q")
        .priority(7)
        .send()
        .await
        .expect("update priority");
    assert_eq!(queue(&client, "q").await.unwrap().priority, Some(7));

    // An ENABLED queue cannot be deleted.
    let (code, msg) = service_error(client.delete_job_queue().job_queue("q").send().await);
    assert_eq!(code, "ClientException");
    assert!(msg.contains("DISABLED"), "{msg}");
    assert!(queue(&client, "q").await.is_some());

    // A DISABLED queue accepts no jobs.
    submit(&client, "before", "q", "jd").await;
    client
        .update_job_queue()
        .job_queue("q")
        .state(JqState::Disabled)
        .send()
        .await
        .expect("disable");
    assert_eq!(
        queue(&client, "q").await.unwrap().state,
        Some(JqState::Disabled)
    );
    let (code, msg) = service_error(
        client
            .submit_job()
            .job_name("after")
            .job_queue("q")
            .job_definition("jd")
            .send()
            .await,
    );
    assert_eq!(code, "ClientException");
    assert!(
        msg.contains("jobQueue") && msg.contains("DISABLED"),
        "{msg}"
    );
    let listed = client
        .list_jobs()
        .job_queue("q")
        .filters(
            KeyValuesPair::builder()
                .name("JOB_NAME")
                .values("after")
                .build(),
        )
        .send()
        .await
        .expect("list")
        .job_summary_list
        .unwrap_or_default();
    assert!(listed.is_empty(), "a refused job was stored: {listed:?}");

    // Re-enabling lets jobs in again; disabling then deleting removes it.
    client
        .update_job_queue()
        .job_queue("q")
        .state(JqState::Enabled)
        .send()
        .await
        .expect("enable");
    submit(&client, "after", "q", "jd").await;
    client
        .update_job_queue()
        .job_queue("q")
        .state(JqState::Disabled)
        .send()
        .await
        .expect("disable");
    client
        .delete_job_queue()
        .job_queue(&arn)
        .send()
        .await
        .expect("delete");
    assert!(queue(&client, "q").await.is_none());
    assert!(queue_names(&client).await.is_empty());
}

#[tokio::test]
async fn job_definition_revisions_and_references() {
    let server = Server::start();
    let client = server.client();
    let arns: Vec<String> = {
        let mut v = Vec::new();
        for _ in 0..3 {
            v.push(register_simple(&client, "jd").await);
        }
        v
    };
    for (i, arn) in arns.iter().enumerate() {
        assert_eq!(arn, &format!("{ARN_PREFIX}job-definition/jd:{}", i + 1));
    }
    // Revisions count per name.
    assert_eq!(
        register_simple(&client, "other").await,
        format!("{ARN_PREFIX}job-definition/other:1")
    );
    assert_eq!(
        definitions(&client, "jd", None).await,
        vec![
            (1, "ACTIVE".into()),
            (2, "ACTIVE".into()),
            (3, "ACTIVE".into())
        ]
    );

    // Every definition, two to a page, in (name, revision) order.
    let mut seen = Vec::new();
    let mut token = None;
    loop {
        let page = client
            .describe_job_definitions()
            .max_results(2)
            .set_next_token(token)
            .send()
            .await
            .expect("page");
        seen.extend(
            page.job_definitions
                .unwrap_or_default()
                .into_iter()
                .filter_map(|d| d.job_definition_arn),
        );
        token = page.next_token;
        if token.is_none() {
            break;
        }
    }
    let mut all = arns.clone();
    all.push(format!("{ARN_PREFIX}job-definition/other:1"));
    assert_eq!(seen, all);

    // Describe by name (every revision), by name:revision and by ARN.
    let by = |refs: Vec<&str>| {
        let client = client.clone();
        let refs: Vec<String> = refs.into_iter().map(String::from).collect();
        async move {
            let mut v: Vec<String> = client
                .describe_job_definitions()
                .set_job_definitions(Some(refs))
                .send()
                .await
                .expect("describe")
                .job_definitions
                .unwrap_or_default()
                .into_iter()
                .filter_map(|d| d.job_definition_arn)
                .collect();
            v.sort();
            v
        }
    };
    assert_eq!(by(vec!["jd"]).await, arns);
    assert_eq!(by(vec!["jd:2"]).await, vec![arns[1].clone()]);
    assert_eq!(by(vec![arns[2].as_str()]).await, vec![arns[2].clone()]);

    // Submitting by name takes the latest ACTIVE revision.
    let id = submit(&client, "j", "default", "jd").await;
    assert_eq!(
        describe_job(&client, &id).await.job_definition.as_deref(),
        Some(arns[2].as_str())
    );

    // Deregister revision 3: INACTIVE, listed under the status filter.
    client
        .deregister_job_definition()
        .job_definition("jd:3")
        .send()
        .await
        .expect("deregister");
    assert_eq!(
        definitions(&client, "jd", None).await,
        vec![
            (1, "ACTIVE".into()),
            (2, "ACTIVE".into()),
            (3, "INACTIVE".into())
        ]
    );
    assert_eq!(
        definitions(&client, "jd", Some("ACTIVE")).await,
        vec![(1, "ACTIVE".into()), (2, "ACTIVE".into())]
    );
    assert_eq!(
        definitions(&client, "jd", Some("INACTIVE")).await,
        vec![(3, "INACTIVE".into())]
    );

    // The INACTIVE revision cannot be submitted, by name:revision or ARN.
    for r in ["jd:3", arns[2].as_str()] {
        let (code, msg) = service_error(
            client
                .submit_job()
                .job_name("j")
                .job_queue("default")
                .job_definition(r)
                .send()
                .await,
        );
        assert_eq!(code, "ClientException");
        assert!(
            msg.contains("jobDefinition") && msg.contains("INACTIVE"),
            "{msg}"
        );
    }
    // The bare name falls back to revision 2; an explicit ACTIVE revision still works.
    let id = submit(&client, "j", "default", "jd").await;
    assert_eq!(
        describe_job(&client, &id).await.job_definition.as_deref(),
        Some(arns[1].as_str())
    );
    let id = submit(&client, "j", "default", "jd:1").await;
    assert_eq!(
        describe_job(&client, &id).await.job_definition.as_deref(),
        Some(arns[0].as_str())
    );

    // Deregister by ARN; when nothing is ACTIVE the name resolves to nothing.
    for r in [arns[0].as_str(), "jd:2"] {
        client
            .deregister_job_definition()
            .job_definition(r)
            .send()
            .await
            .expect("deregister");
    }
    let (code, msg) = service_error(
        client
            .submit_job()
            .job_name("j")
            .job_queue("default")
            .job_definition("jd")
            .send()
            .await,
    );
    assert_eq!(code, "ClientException");
    assert!(msg.contains("jobDefinition"), "{msg}");
    // A new registration continues the numbering.
    assert_eq!(
        register_simple(&client, "jd").await,
        format!("{ARN_PREFIX}job-definition/jd:4")
    );
    // Unknown revisions are ClientExceptions too.
    let (code, msg) = service_error(
        client
            .deregister_job_definition()
            .job_definition("jd:99")
            .send()
            .await,
    );
    assert_eq!(code, "ClientException");
    assert!(msg.contains("jobDefinition"), "{msg}");
}

#[tokio::test]
async fn job_definition_fields_round_trip() {
    let server = Server::start();
    let client = server.client();
    client
        .register_job_definition()
        .job_definition_name("full")
        .r#type(JobDefinitionType::Container)
        .parameters("input", "s3://bucket/key")
        .propagate_tags(true)
        .tags("team", "data")
        .timeout(JobTimeout::builder().attempt_duration_seconds(120).build())
        .retry_strategy(
            RetryStrategy::builder()
                .attempts(3)
                .evaluate_on_exit(
                    EvaluateOnExit::builder()
                        .on_status_reason("Host EC2*")
                        .action(RetryAction::Retry)
                        .build(),
                )
                .build(),
        )
        .container_properties(
            ContainerProperties::builder()
                .image("busybox")
                .command("echo")
                .command("Ref::input")
                .environment(KeyValuePair::builder().name("A").value("1").build())
                .build(),
        )
        .send()
        .await
        .expect("register");
    let jd = client
        .describe_job_definitions()
        .job_definitions("full:1")
        .send()
        .await
        .expect("describe")
        .job_definitions
        .unwrap_or_default()
        .remove(0);
    assert_eq!(jd.status.as_deref(), Some("ACTIVE"));
    assert_eq!(jd.r#type.as_deref(), Some("container"));
    assert_eq!(jd.propagate_tags, Some(true));
    assert_eq!(
        jd.tags.unwrap_or_default().get("team").map(String::as_str),
        Some("data")
    );
    assert_eq!(
        jd.timeout.and_then(|t| t.attempt_duration_seconds),
        Some(120)
    );
    let rs = jd.retry_strategy.expect("retryStrategy");
    assert_eq!(rs.attempts, Some(3));
    assert_eq!(
        rs.evaluate_on_exit.unwrap_or_default()[0]
            .on_status_reason
            .as_deref(),
        Some("Host EC2*")
    );
    let c = jd.container_properties.expect("containerProperties");
    assert_eq!(c.image.as_deref(), Some("busybox"));
    assert_eq!(c.command.unwrap_or_default(), vec!["echo", "Ref::input"]);

    // A job inherits propagateTags and gets its parameters substituted.
    let job = client
        .submit_job()
        .job_name("p")
        .job_queue("default")
        .job_definition("full")
        .parameters("input", "s3://other/key")
        .tags("run", "1")
        .send()
        .await
        .expect("submit")
        .job_id
        .unwrap();
    let d = describe_job(&client, &job).await;
    assert_eq!(d.propagate_tags, Some(true));
    assert_eq!(
        d.container.and_then(|c| c.command).unwrap_or_default(),
        vec!["echo", "s3://other/key"]
    );
    assert_eq!(
        d.tags.unwrap_or_default().get("run").map(String::as_str),
        Some("1")
    );

    // propagateTags on SubmitJob wins over the definition's.
    let job = client
        .submit_job()
        .job_name("p2")
        .job_queue("default")
        .job_definition("full")
        .propagate_tags(false)
        .send()
        .await
        .expect("submit")
        .job_id
        .unwrap();
    assert_eq!(
        describe_job(&client, &job).await.propagate_tags,
        Some(false)
    );
}

#[tokio::test]
async fn scheduling_policy_lifecycle_and_fair_share_queues() {
    let server = Server::start();
    let client = server.client();
    register_simple(&client, "jd").await;
    let policy = |name: &str| {
        client
            .create_scheduling_policy()
            .name(name)
            .fairshare_policy(
                FairsharePolicy::builder()
                    .share_decay_seconds(3600)
                    .compute_reservation(10)
                    .share_distribution(
                        ShareAttributes::builder()
                            .share_identifier("teamA")
                            .weight_factor(0.5)
                            .build(),
                    )
                    .build(),
            )
            .tags("k", "v")
            .send()
    };
    let out = policy("fair").await.expect("create policy");
    let arn = out.arn.expect("arn");
    assert_eq!(arn, format!("{ARN_PREFIX}scheduling-policy/fair"));
    assert_eq!(out.name.as_deref(), Some("fair"));
    let (code, msg) = service_error(policy("fair").await);
    assert_eq!(code, "ClientException");
    assert!(msg.contains("name"), "{msg}");
    for i in 0..3 {
        client
            .create_scheduling_policy()
            .name(format!("p{i}"))
            .send()
            .await
            .expect("create");
    }

    // Describe.
    let d = client
        .describe_scheduling_policies()
        .arns(&arn)
        .arns(format!("{ARN_PREFIX}scheduling-policy/nope"))
        .send()
        .await
        .expect("describe")
        .scheduling_policies
        .unwrap_or_default();
    assert_eq!(d.len(), 1, "unknown ARNs are left out");
    let fp = d[0].fairshare_policy.clone().expect("fairsharePolicy");
    assert_eq!(fp.share_decay_seconds, Some(3600));
    assert_eq!(fp.compute_reservation, Some(10));
    assert_eq!(
        fp.share_distribution.unwrap_or_default()[0]
            .share_identifier
            .as_deref(),
        Some("teamA")
    );
    assert_eq!(
        d[0].tags
            .clone()
            .unwrap_or_default()
            .get("k")
            .map(String::as_str),
        Some("v")
    );

    // Update.
    client
        .update_scheduling_policy()
        .arn(&arn)
        .fairshare_policy(FairsharePolicy::builder().share_decay_seconds(60).build())
        .send()
        .await
        .expect("update");
    let d = client
        .describe_scheduling_policies()
        .arns(&arn)
        .send()
        .await
        .expect("describe")
        .scheduling_policies
        .unwrap_or_default();
    assert_eq!(
        d[0].fairshare_policy
            .as_ref()
            .and_then(|f| f.share_decay_seconds),
        Some(60)
    );

    // List, two to a page.
    let mut seen = Vec::new();
    let mut token = None;
    loop {
        let page = client
            .list_scheduling_policies()
            .max_results(2)
            .set_next_token(token)
            .send()
            .await
            .expect("list");
        seen.extend(
            page.scheduling_policies
                .unwrap_or_default()
                .into_iter()
                .filter_map(|p| p.arn),
        );
        token = page.next_token;
        if token.is_none() {
            break;
        }
    }
    let expect: Vec<String> = ["fair", "p0", "p1", "p2"]
        .iter()
        .map(|n| format!("{ARN_PREFIX}scheduling-policy/{n}"))
        .collect();
    assert_eq!(seen, expect);

    // A fair-share queue requires shareIdentifier; a FIFO queue rejects one.
    client
        .create_job_queue()
        .job_queue_name("fq")
        .priority(1)
        .scheduling_policy_arn(&arn)
        .compute_environment_order(
            ComputeEnvironmentOrder::builder()
                .order(1)
                .compute_environment("local")
                .build(),
        )
        .send()
        .await
        .expect("fair-share queue");
    assert_eq!(
        queue(&client, "fq")
            .await
            .unwrap()
            .scheduling_policy_arn
            .as_deref(),
        Some(arn.as_str())
    );
    let (code, msg) = service_error(
        client
            .submit_job()
            .job_name("j")
            .job_queue("fq")
            .job_definition("jd")
            .send()
            .await,
    );
    assert_eq!(code, "ClientException");
    assert!(msg.contains("shareIdentifier"), "{msg}");
    let id = client
        .submit_job()
        .job_name("j")
        .job_queue("fq")
        .job_definition("jd")
        .share_identifier("teamA")
        .scheduling_priority_override(5)
        .send()
        .await
        .expect("submit with share")
        .job_id
        .unwrap();
    let d = describe_job(&client, &id).await;
    assert_eq!(d.share_identifier.as_deref(), Some("teamA"));
    assert_eq!(d.scheduling_priority, Some(5));
    let (code, msg) = service_error(
        client
            .submit_job()
            .job_name("j")
            .job_queue("default")
            .job_definition("jd")
            .share_identifier("teamA")
            .send()
            .await,
    );
    assert_eq!(code, "ClientException");
    assert!(msg.contains("shareIdentifier"), "{msg}");

    // A FIFO queue cannot be given a scheduling policy later.
    let (code, msg) = service_error(
        client
            .update_job_queue()
            .job_queue("default")
            .scheduling_policy_arn(&arn)
            .send()
            .await,
    );
    assert_eq!(code, "ClientException");
    assert!(msg.contains("schedulingPolicyArn"), "{msg}");
    assert_eq!(
        queue(&client, "default")
            .await
            .unwrap()
            .scheduling_policy_arn,
        None
    );
    // A fair-share queue may switch to another policy.
    let p0 = format!("{ARN_PREFIX}scheduling-policy/p0");
    client
        .update_job_queue()
        .job_queue("fq")
        .scheduling_policy_arn(&p0)
        .send()
        .await
        .expect("switch policy");
    assert_eq!(
        queue(&client, "fq")
            .await
            .unwrap()
            .scheduling_policy_arn
            .as_deref(),
        Some(p0.as_str())
    );

    // A policy in use cannot be deleted; an unused one can.
    let (code, msg) = service_error(client.delete_scheduling_policy().arn(&p0).send().await);
    assert_eq!(code, "ClientException");
    assert!(msg.contains("fq"), "{msg}");
    client
        .delete_scheduling_policy()
        .arn(&arn)
        .send()
        .await
        .expect("delete unused policy");
    let left = client
        .describe_scheduling_policies()
        .arns(&arn)
        .arns(&p0)
        .send()
        .await
        .expect("describe")
        .scheduling_policies
        .unwrap_or_default();
    assert_eq!(left.len(), 1);
    assert_eq!(left[0].arn.as_deref(), Some(p0.as_str()));
}

#[tokio::test]
async fn tags_on_every_taggable_resource() {
    let server = Server::start();
    let client = server.client();
    let ce_arn = create_local_ce(&client, "tagged-ce").await;
    let q_arn = create_queue(&client, "tagged-q", "tagged-ce").await;
    let jd_arn = register_simple(&client, "tagged-jd").await;
    let p_arn = client
        .create_scheduling_policy()
        .name("tagged-p")
        .send()
        .await
        .expect("policy")
        .arn
        .unwrap();
    let job_id = submit(&client, "tagged-job", "tagged-q", "tagged-jd").await;
    let job_arn = describe_job(&client, &job_id).await.job_arn.unwrap();
    assert_eq!(job_arn, format!("{ARN_PREFIX}job/{job_id}"));

    for arn in [&ce_arn, &q_arn, &jd_arn, &p_arn, &job_arn] {
        assert!(
            tags_of(&client, arn).await.is_empty(),
            "{arn} starts untagged"
        );
        client
            .tag_resource()
            .resource_arn(arn)
            .tags("owner", "alice")
            .tags("cost-center", "42")
            .send()
            .await
            .unwrap_or_else(|e| panic!("tag {arn}: {e:?}"));
        let t = tags_of(&client, arn).await;
        assert_eq!(t.len(), 2, "{arn}: {t:?}");
        assert_eq!(t.get("owner").map(String::as_str), Some("alice"));
        // Tagging again overwrites values by key.
        client
            .tag_resource()
            .resource_arn(arn)
            .tags("owner", "bob")
            .send()
            .await
            .expect("retag");
        client
            .untag_resource()
            .resource_arn(arn)
            .tag_keys("cost-center")
            .send()
            .await
            .unwrap_or_else(|e| panic!("untag {arn}: {e:?}"));
        let t = tags_of(&client, arn).await;
        assert_eq!(
            t,
            HashMap::from([("owner".to_string(), "bob".to_string())]),
            "{arn}"
        );
    }

    // Keys that need percent-encoding in the UntagResource query string.
    let odd = ["with space", "a+b", "path/x:y", "ünï=&?"];
    let mut req = client.tag_resource().resource_arn(&q_arn);
    for k in odd {
        req = req.tags(k, "1");
    }
    req.send().await.expect("tag odd keys");
    assert_eq!(tags_of(&client, &q_arn).await.len(), 5);
    client
        .untag_resource()
        .resource_arn(&q_arn)
        .set_tag_keys(Some(odd.iter().map(|k| k.to_string()).collect()))
        .send()
        .await
        .expect("untag odd keys");
    assert_eq!(
        tags_of(&client, &q_arn).await,
        HashMap::from([("owner".to_string(), "bob".to_string())])
    );

    // Tags show up in the resources' own descriptions too.
    let d = ce(&client, "tagged-ce").await.unwrap();
    assert_eq!(
        d.tags.unwrap_or_default().get("owner").map(String::as_str),
        Some("bob")
    );
    let d = queue(&client, "tagged-q").await.unwrap();
    assert_eq!(
        d.tags.unwrap_or_default().get("owner").map(String::as_str),
        Some("bob")
    );
    let d = describe_job(&client, &job_id).await;
    assert_eq!(
        d.tags.unwrap_or_default().get("owner").map(String::as_str),
        Some("bob")
    );

    // Tags survive a restart.
    let mut server = server;
    server.restart();
    let client = server.client();
    for arn in [&ce_arn, &q_arn, &jd_arn, &p_arn, &job_arn] {
        assert_eq!(
            tags_of(&client, arn).await.get("owner").map(String::as_str),
            Some("bob"),
            "{arn} after restart"
        );
    }

    // Unknown resources and reserved keys are ClientExceptions.
    let (code, msg) = service_error(
        client
            .list_tags_for_resource()
            .resource_arn(format!("{ARN_PREFIX}job-queue/nope"))
            .send()
            .await,
    );
    assert_eq!(code, "ClientException");
    assert!(msg.contains("resourceArn"), "{msg}");
    let (code, msg) = service_error(
        client
            .tag_resource()
            .resource_arn(&q_arn)
            .tags("aws:reserved", "x")
            .send()
            .await,
    );
    assert_eq!(code, "ClientException");
    assert!(msg.contains("tags"), "{msg}");
    assert!(!tags_of(&client, &q_arn).await.contains_key("aws:reserved"));
}

#[tokio::test]
async fn defaults_exist_on_first_start_and_are_not_recreated_sqlite() {
    defaults_are_created_once(Server::start()).await;
}

#[tokio::test]
async fn defaults_exist_on_first_start_and_are_not_recreated_postgres() {
    let db = PgDatabase::create();
    let server = Server::start_with(ServerOptions {
        database_url: Some(db.url.clone()),
        ..Default::default()
    });
    defaults_are_created_once(server).await;
}

async fn defaults_are_created_once(mut server: Server) {
    let client = server.client();
    let local = ce(&client, "local")
        .await
        .expect("local compute environment");
    assert_eq!(local.status, Some(CeStatus::Valid));
    assert_eq!(
        local
            .compute_resources
            .and_then(|c| c.r#type)
            .map(|t| t.as_str().to_string())
            .as_deref(),
        Some("LOCAL")
    );
    let default = queue(&client, "default").await.expect("default queue");
    assert_eq!(default.state, Some(JqState::Enabled));
    assert_eq!(
        default.compute_environment_order.unwrap_or_default()[0]
            .compute_environment
            .as_deref(),
        Some(format!("{ARN_PREFIX}compute-environment/local").as_str())
    );

    // A plain second start on the same data dir leaves everything as it was.
    server.restart_with(false);
    let client = server.client();
    assert_eq!(ce_names(&client).await, vec!["local"]);
    assert_eq!(queue_names(&client).await, vec!["default"]);

    // Delete both, then start again as on a first start: they stay deleted.
    client
        .update_job_queue()
        .job_queue("default")
        .state(JqState::Disabled)
        .send()
        .await
        .expect("disable queue");
    client
        .delete_job_queue()
        .job_queue("default")
        .send()
        .await
        .expect("delete queue");
    client
        .update_compute_environment()
        .compute_environment("local")
        .state(CeState::Disabled)
        .send()
        .await
        .expect("disable ce");
    client
        .delete_compute_environment()
        .compute_environment("local")
        .send()
        .await
        .expect("delete ce");
    server.restart_with(false);
    let client = server.client();
    assert!(ce_names(&client).await.is_empty(), "local was recreated");
    assert!(
        queue_names(&client).await.is_empty(),
        "default was recreated"
    );
    server.restart_with(false);
    let client = server.client();
    assert!(ce_names(&client).await.is_empty());
    assert!(queue_names(&client).await.is_empty());
}

#[tokio::test]
async fn no_defaults_starts_empty() {
    let server = Server::start_with(ServerOptions {
        no_defaults: true,
        ..Default::default()
    });
    let client = server.client();
    assert!(ce_names(&client).await.is_empty());
    assert!(queue_names(&client).await.is_empty());
}

#[tokio::test]
async fn resources_survive_a_restart() {
    let mut server = Server::start();
    let client = server.client();
    create_local_ce(&client, "ce").await;
    create_queue(&client, "q", "ce").await;
    register_simple(&client, "jd").await;
    register_simple(&client, "jd").await;
    client
        .deregister_job_definition()
        .job_definition("jd:2")
        .send()
        .await
        .expect("deregister");
    let p = client
        .create_scheduling_policy()
        .name("p")
        .send()
        .await
        .expect("policy")
        .arn
        .unwrap();
    server.restart();
    let client = server.client();
    assert_eq!(ce_names(&client).await, vec!["ce", "local"]);
    assert_eq!(queue_names(&client).await, vec!["default", "q"]);
    assert_eq!(
        definitions(&client, "jd", None).await,
        vec![(1, "ACTIVE".into()), (2, "INACTIVE".into())]
    );
    assert_eq!(
        client
            .describe_scheduling_policies()
            .arns(&p)
            .send()
            .await
            .expect("describe")
            .scheduling_policies
            .unwrap_or_default()
            .len(),
        1
    );
    // Revision numbering continues after the restart.
    assert_eq!(
        register_simple(&client, "jd").await,
        format!("{ARN_PREFIX}job-definition/jd:3")
    );
}
