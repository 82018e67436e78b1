//! Where Flotilla matches AWS Batch exactly in what it answers: `Ref::` substitution inside
//! arguments, the bulk CancelJobs/TerminateJobs, floats returned as sent, the empty collections
//! AWS returns, what AWS accepts, and the operations Flotilla refuses by name.

mod common;

use aws_sdk_batch::types::*;
use common::*;
use serde_json::json;

fn res(t: ResourceType, v: &str) -> ResourceRequirement {
    ResourceRequirement::builder().r#type(t).value(v).build()
}

#[tokio::test]
async fn ref_parameters_are_substituted_inside_arguments() {
    let server = Server::start();
    let client = server.client();
    client
        .register_job_definition()
        .job_definition_name("refs")
        .r#type(JobDefinitionType::Container)
        .parameters("who", "world")
        .parameters("input", "s3://bucket/key")
        .container_properties(
            ContainerProperties::builder()
                .image("busybox")
                .command("sh")
                .command("-c")
                .command("echo hello Ref::who")
                .command("--input=Ref::input")
                .command("Ref::unknown stays")
                .resource_requirements(res(ResourceType::Vcpu, "1"))
                .resource_requirements(res(ResourceType::Memory, "32"))
                .build(),
        )
        .send()
        .await
        .expect("register");
    let id = client
        .submit_job()
        .job_name("refs")
        .job_queue("default")
        .job_definition("refs")
        .parameters("who", "Flotilla")
        .send()
        .await
        .expect("submit")
        .job_id
        .unwrap();
    let job = describe_job(&client, &id).await;
    assert_eq!(
        job.container.unwrap().command.unwrap(),
        [
            "sh",
            "-c",
            "echo hello Flotilla",
            "--input=s3://bucket/key",
            "Ref::unknown stays"
        ]
    );
}

#[tokio::test]
async fn bulk_cancel_and_terminate_report_each_job() {
    let server = Server::start_with(ServerOptions {
        extra_args: vec![
            "--local-runtime".into(),
            "process".into(),
            "--kill-grace-seconds".into(),
            "2".into(),
        ],
        dispatch: true,
        ..Default::default()
    });
    let client = server.client();
    client
        .register_job_definition()
        .job_definition_name("sleeper")
        .r#type(JobDefinitionType::Container)
        .container_properties(
            ContainerProperties::builder()
                .image("busybox")
                .command("sleep")
                .command("600")
                .resource_requirements(res(ResourceType::Vcpu, "1"))
                .resource_requirements(res(ResourceType::Memory, "16"))
                .build(),
        )
        .send()
        .await
        .expect("register");
    let submit = |name: &'static str, deps: Vec<String>| {
        let client = client.clone();
        async move {
            client
                .submit_job()
                .job_name(name)
                .job_queue("default")
                .job_definition("sleeper")
                .set_depends_on(Some(
                    deps.iter()
                        .map(|d| JobDependency::builder().job_id(d).build())
                        .collect(),
                ))
                .send()
                .await
                .expect("submit")
                .job_id
                .unwrap()
        }
    };
    let running = submit("running", vec![]).await;
    wait_for(&client, &running, &[JobStatus::Running], 60).await;
    let pending = submit("pending", vec![running.clone()]).await;
    let unknown = "00000000-0000-0000-0000-000000000000".to_string();

    // CancelJobs: the PENDING job is cancelled, the RUNNING one is left running (as CancelJob
    // does), an unknown ID counts as successful (as AWS documents), an empty one is an error.
    let out = client
        .cancel_jobs()
        .jobs(&pending)
        .jobs(&running)
        .jobs(&unknown)
        .jobs("")
        .reason("bulk cancel")
        .send()
        .await
        .expect("cancel jobs");
    assert_eq!(
        out.successful(),
        [pending.clone(), running.clone(), unknown.clone()]
    );
    let errors = out.errors();
    assert_eq!(errors.len(), 1, "{errors:?}");
    assert_eq!(errors[0].job(), Some(""));
    assert_eq!(errors[0].code(), Some("ValidationException"));
    let p = describe_job(&client, &pending).await;
    assert_eq!(p.status, Some(JobStatus::Failed));
    assert_eq!(p.status_reason.as_deref(), Some("bulk cancel"));
    assert_eq!(p.is_cancelled, Some(true));
    assert_eq!(
        describe_job(&client, &running).await.status,
        Some(JobStatus::Running)
    );

    // TerminateJobs stops the RUNNING one.
    let out = client
        .terminate_jobs()
        .jobs(&running)
        .jobs(&unknown)
        .reason("bulk terminate")
        .send()
        .await
        .expect("terminate jobs");
    assert_eq!(out.successful(), [running.clone(), unknown]);
    assert!(out.errors().is_empty());
    let r = wait_for(&client, &running, &[JobStatus::Failed], 60).await;
    assert_eq!(r.status_reason.as_deref(), Some("bulk terminate"));
    assert_eq!(r.is_terminated, Some(true));

    // The request itself: 1 to 50 IDs and a reason of at most 1,024 characters.
    let too_many: Vec<String> = (0..51).map(|i| format!("job-{i}")).collect();
    let (code, msg) = service_error(
        client
            .cancel_jobs()
            .set_jobs(Some(too_many))
            .reason("r")
            .send()
            .await,
    );
    assert_eq!(code, "ClientException");
    assert!(msg.starts_with("jobs:"), "{msg}");
    let (code, msg) = service_error(
        client
            .terminate_jobs()
            .jobs(&pending)
            .reason("x".repeat(1025))
            .send()
            .await,
    );
    assert_eq!(code, "ClientException");
    assert!(msg.starts_with("reason:"), "{msg}");
}

#[tokio::test]
async fn floats_come_back_exactly_as_sent() {
    let server = Server::start();
    let raw = server.raw();
    let r = raw
        .post(
            "CreateSchedulingPolicy",
            &json!({"name": "fs", "fairsharePolicy": {"shareDistribution": [
                {"shareIdentifier": "a", "weightFactor": 0.1},
                {"shareIdentifier": "b", "weightFactor": 0.3333}
            ]}}),
        )
        .await;
    assert_eq!(r.status, 200, "{r:?}");
    let arn = r.json()["arn"].as_str().unwrap().to_string();
    let r = raw
        .post("DescribeSchedulingPolicies", &json!({"arns": [arn]}))
        .await;
    assert_eq!(r.status, 200, "{r:?}");
    // On the wire, not after a parse that would round 0.10000000149011612 back to 0.1.
    assert!(r.text.contains(r#""weightFactor":0.1}"#), "{}", r.text);
    assert!(r.text.contains(r#""weightFactor":0.3333}"#), "{}", r.text);
}

#[tokio::test]
async fn empty_collections_are_returned_as_aws_returns_them() {
    let server = Server::start();
    let raw = server.raw();
    let client = server.client();
    register_simple(&client, "plain").await;
    let d = raw
        .post(
            "DescribeJobDefinitions",
            &json!({"jobDefinitionName": "plain"}),
        )
        .await
        .json();
    let d = &d["jobDefinitions"][0];
    assert_eq!(d["parameters"], json!({}));
    assert_eq!(d["tags"], json!({}));
    for key in ["environment", "mountPoints", "ulimits", "volumes"] {
        assert_eq!(d["containerProperties"][key], json!([]), "{key}");
    }
    let id = client
        .submit_job()
        .job_name("plain")
        .job_queue("default")
        .job_definition("plain")
        .send()
        .await
        .expect("submit")
        .job_id
        .unwrap();
    let j = raw
        .post("DescribeJobs", &json!({"jobs": [id]}))
        .await
        .json();
    let j = &j["jobs"][0];
    assert_eq!(j["parameters"], json!({}));
    assert_eq!(j["dependsOn"], json!([]));
    assert_eq!(j["tags"], json!({}));
    assert_eq!(j["container"]["command"], json!(["true"]));
    assert_eq!(j["container"]["environment"], json!([]));
    let q = raw
        .post("DescribeJobQueues", &json!({"jobQueues": ["default"]}))
        .await
        .json();
    assert_eq!(q["jobQueues"][0]["tags"], json!({}));
}

#[tokio::test]
async fn what_aws_accepts_is_accepted() {
    let server = Server::start();
    let client = server.client();
    // A bid percentage on an EC2 environment: AWS accepts it and it has no effect there.
    client
        .create_compute_environment()
        .compute_environment_name("ec2-with-bid")
        .r#type(CeType::Managed)
        .compute_resources(
            ComputeResource::builder()
                .r#type(CrType::Ec2)
                .maxv_cpus(4)
                .bid_percentage(60)
                .subnets("subnet-1")
                .instance_types("optimal")
                .build(),
        )
        .send()
        .await
        .expect("an EC2 environment with a bid percentage");
}

#[tokio::test]
async fn operations_flotilla_does_not_implement_are_refused_by_name() {
    let server = Server::start();
    let raw = server.raw();
    for (op, what) in [
        ("CreateQuotaShare", "quota shares"),
        ("SubmitServiceJob", "service jobs"),
        ("DescribeServiceEnvironments", "service environments"),
    ] {
        let r = raw.post(op, &json!({})).await;
        assert_eq!(r.status, 400, "{op}: {r:?}");
        assert_eq!(r.error_type.as_deref(), Some("ClientException"), "{op}");
        assert!(r.message().starts_with(op), "{op}: {}", r.message());
        assert!(r.message().contains(what), "{op}: {}", r.message());
    }
}

/// An environment setting Flotilla does not apply is refused by its path, and nothing of the
/// request is applied.
#[tokio::test]
async fn environment_settings_flotilla_lacks_are_refused_by_path_and_change_nothing() {
    let server = Server::start();
    let raw = server.raw();
    let r = raw
        .post(
            "CreateComputeEnvironment",
            &json!({"computeEnvironmentName": "ce", "type": "MANAGED", "computeResources": {
                "type": "EC2", "maxvCpus": 4, "subnets": ["subnet-1"], "instanceTypes": ["optimal"]}}),
        )
        .await;
    assert_eq!(r.status, 200, "{r:?}");
    let r = raw
        .post(
            "UpdateComputeEnvironment",
            &json!({"computeEnvironment": "ce", "computeResources": {"maxvCpus": 8},
                    "ecsSettings": {"containerInsights": "enabled"}}),
        )
        .await;
    assert_eq!(r.status, 400, "{r:?}");
    assert!(r.message().starts_with("ecsSettings:"), "{}", r.message());
    let r = raw
        .post(
            "DescribeComputeEnvironments",
            &json!({"computeEnvironments": ["ce"]}),
        )
        .await;
    assert_eq!(
        r.json()["computeEnvironments"][0]["computeResources"]["maxvCpus"],
        4,
        "nothing of a refused update is applied"
    );
}
