//! Every validation rule answers HTTP 400 `ClientException` with a message naming the field, and
//! writes nothing. Malformed requests, wrong routes and random bodies never yield a 5xx.

mod common;

use common::*;
use serde_json::{Value, json};

/// RFC 7396 JSON merge patch: `null` removes a key, objects merge, anything else replaces.
fn patch(base: &Value, p: Value) -> Value {
    match (base, p) {
        (Value::Object(b), Value::Object(p)) => {
            let mut out = b.clone();
            for (k, v) in p {
                if v.is_null() {
                    out.remove(&k);
                } else {
                    let merged = patch(out.get(&k).unwrap_or(&Value::Null), v);
                    out.insert(k, merged);
                }
            }
            Value::Object(out)
        }
        (_, p) => p,
    }
}

/// Posts each (patch, field) over `base` to `op` and asserts a ClientException naming `field`.
async fn refuse_all(raw: &Raw, op: &str, base: &Value, cases: Vec<(Value, &str)>) {
    for (p, field) in cases {
        let body = patch(base, p.clone());
        let r = raw.post(op, &body).await;
        assert_eq!(
            r.status, 400,
            "{op} with patch {p} was not refused naming {field:?}: {r:?}"
        );
        r.assert_client_error(field);
    }
}

fn long_name() -> String {
    "a".repeat(129)
}

async fn describe_names(raw: &Raw, op: &str, list_key: &str, name_key: &str) -> Vec<String> {
    let r = raw.post(op, &json!({})).await;
    assert_eq!(r.status, 200, "{r:?}");
    r.json()[list_key]
        .as_array()
        .cloned()
        .unwrap_or_default()
        .iter()
        .map(|v| v[name_key].as_str().unwrap_or_default().to_string())
        .collect()
}

fn evaluate_on_exit(n: usize) -> Value {
    Value::Array(
        (0..n)
            .map(|i| json!({"onExitCode": i.to_string(), "action": "RETRY"}))
            .collect(),
    )
}

#[tokio::test]
async fn compute_environment_rules() {
    let server = Server::start_with(ServerOptions {
        no_defaults: true,
        ..Default::default()
    });
    let raw = server.raw();
    let local = json!({
        "computeEnvironmentName": "ce",
        "type": "MANAGED",
        "computeResources": {"type": "LOCAL", "maxvCpus": 4}
    });
    let ec2 = json!({
        "computeEnvironmentName": "ce",
        "type": "MANAGED",
        "computeResources": {
            "type": "EC2", "maxvCpus": 16, "minvCpus": 0,
            "subnets": ["subnet-1"], "instanceTypes": ["optimal"]
        }
    });
    refuse_all(
        &raw,
        "CreateComputeEnvironment",
        &local,
        vec![
            (
                json!({"computeEnvironmentName": ""}),
                "computeEnvironmentName",
            ),
            (
                json!({"computeEnvironmentName": long_name()}),
                "computeEnvironmentName",
            ),
            (
                json!({"computeEnvironmentName": "bad name"}),
                "computeEnvironmentName",
            ),
            (
                json!({"computeEnvironmentName": "bad.name"}),
                "computeEnvironmentName",
            ),
            (
                json!({"computeEnvironmentName": null}),
                "computeEnvironmentName",
            ),
            (json!({"type": "BOGUS"}), "type"),
            (json!({"type": null}), "type"),
            (json!({"state": "PAUSED"}), "state"),
            (
                json!({"computeResources": {"type": "GPU"}}),
                "computeResources.type",
            ),
            (
                json!({"computeResources": {"type": null}}),
                "computeResources.type",
            ),
            (json!({"computeResources": null}), "computeResources"),
            (
                json!({"computeResources": {"minvCpus": 8}}),
                "computeResources.minvCpus",
            ),
            (
                json!({"computeResources": {"maxvCpus": 0}}),
                "computeResources.maxvCpus",
            ),
        ],
    )
    .await;
    refuse_all(
        &raw,
        "CreateComputeEnvironment",
        &ec2,
        vec![
            (
                json!({"computeResources": {"allocationStrategy": "CHEAPEST"}}),
                "computeResources.allocationStrategy",
            ),
            (
                json!({"computeResources": {"allocationStrategy": "SPOT_CAPACITY_OPTIMIZED"}}),
                "computeResources.allocationStrategy",
            ),
            (
                json!({"computeResources": {"minvCpus": 32}}),
                "computeResources.minvCpus",
            ),
            (
                json!({"computeResources": {"desiredvCpus": 64}}),
                "computeResources.desiredvCpus",
            ),
            (
                json!({"computeResources": {"maxvCpus": null}}),
                "computeResources.maxvCpus",
            ),
            (
                json!({"computeResources": {"subnets": []}}),
                "computeResources.subnets",
            ),
            (
                json!({"computeResources": {"type": "SPOT", "bidPercentage": 101}}),
                "computeResources.bidPercentage",
            ),
        ],
    )
    .await;
    assert!(
        describe_names(
            &raw,
            "DescribeComputeEnvironments",
            "computeEnvironments",
            "computeEnvironmentName"
        )
        .await
        .is_empty(),
        "a refused compute environment was stored"
    );

    // Updates are checked too and leave the environment as it was.
    assert_eq!(
        raw.post("CreateComputeEnvironment", &local).await.status,
        200
    );
    refuse_all(
        &raw,
        "UpdateComputeEnvironment",
        &json!({"computeEnvironment": "ce"}),
        vec![
            (json!({"state": "OFF"}), "state"),
            (
                json!({"computeResources": {"minvCpus": 10}}),
                "computeResources.minvCpus",
            ),
            (
                json!({"computeResources": {"type": "EC2"}}),
                "computeResources.type",
            ),
            (json!({"computeEnvironment": "nope"}), "computeEnvironment"),
            (json!({"computeEnvironment": null}), "computeEnvironment"),
        ],
    )
    .await;
    let r = raw
        .post(
            "DescribeComputeEnvironments",
            &json!({"computeEnvironments": ["ce"]}),
        )
        .await;
    let ce = &r.json()["computeEnvironments"][0];
    assert_eq!(ce["state"], "ENABLED");
    assert_eq!(ce["computeResources"]["minvCpus"], 0);
    assert_eq!(ce["computeResources"]["maxvCpus"], 4);
    assert_eq!(ce["computeResources"]["type"], "LOCAL");
    refuse_all(
        &raw,
        "DeleteComputeEnvironment",
        &json!({"computeEnvironment": "ce"}),
        vec![(json!({"computeEnvironment": "nope"}), "computeEnvironment")],
    )
    .await;
}

#[tokio::test]
async fn compute_environment_rules_through_the_sdk() {
    use aws_sdk_batch::types::*;
    let server = Server::start_with(ServerOptions {
        no_defaults: true,
        ..Default::default()
    });
    let client = server.client();
    let (code, msg) = service_error(
        client
            .create_compute_environment()
            .compute_environment_name("ce")
            .r#type(CeType::Managed)
            .compute_resources(
                ComputeResource::builder()
                    .r#type(CrType::Ec2)
                    .minv_cpus(8)
                    .maxv_cpus(4)
                    .subnets("subnet-1")
                    .instance_types("optimal")
                    .build(),
            )
            .send()
            .await,
    );
    assert_eq!(code, "ClientException");
    assert!(msg.contains("computeResources.minvCpus"), "{msg}");
    let (code, msg) = service_error(
        client
            .create_compute_environment()
            .compute_environment_name("ce")
            .r#type(CeType::from("SERVERLESS"))
            .send()
            .await,
    );
    assert_eq!(code, "ClientException");
    assert!(msg.contains("type"), "{msg}");
    let (code, msg) = service_error(
        client
            .create_compute_environment()
            .compute_environment_name("ce")
            .r#type(CeType::Managed)
            .compute_resources(
                ComputeResource::builder()
                    .r#type(CrType::Ec2)
                    .maxv_cpus(4)
                    .bid_percentage(101)
                    .subnets("subnet-1")
                    .instance_types("optimal")
                    .build(),
            )
            .send()
            .await,
    );
    assert_eq!(code, "ClientException");
    assert!(msg.contains("computeResources.bidPercentage"), "{msg}");
    let listed = client
        .describe_compute_environments()
        .send()
        .await
        .unwrap()
        .compute_environments
        .unwrap_or_default();
    assert!(listed.is_empty(), "{listed:?}");
}

#[tokio::test]
async fn job_queue_rules() {
    let server = Server::start();
    let raw = server.raw();
    let client = server.client();
    for i in 1..=4 {
        create_local_ce(&client, &format!("ce{i}")).await;
    }
    let base = json!({
        "jobQueueName": "q",
        "priority": 1,
        "computeEnvironmentOrder": [{"order": 1, "computeEnvironment": "ce1"}]
    });
    let four: Vec<Value> = (1..=4)
        .map(|i| json!({"order": i, "computeEnvironment": format!("ce{i}")}))
        .collect();
    refuse_all(
        &raw,
        "CreateJobQueue",
        &base,
        vec![
            (json!({"jobQueueName": ""}), "jobQueueName"),
            (json!({"jobQueueName": long_name()}), "jobQueueName"),
            (json!({"jobQueueName": "q!"}), "jobQueueName"),
            (json!({"jobQueueName": null}), "jobQueueName"),
            (json!({"state": "PAUSED"}), "state"),
            (json!({"priority": 1001}), "priority"),
            (json!({"priority": -1}), "priority"),
            (json!({"priority": null}), "priority"),
            (json!({"priority": "high"}), "priority"),
            (json!({"computeEnvironmentOrder": four}), "computeEnvironmentOrder"),
            (json!({"computeEnvironmentOrder": []}), "computeEnvironmentOrder"),
            (json!({"computeEnvironmentOrder": null}), "computeEnvironmentOrder"),
            (
                json!({"computeEnvironmentOrder": [{"order": 1, "computeEnvironment": "nope"}]}),
                "computeEnvironmentOrder[0].computeEnvironment",
            ),
            (
                json!({"computeEnvironmentOrder": [{"order": 1, "computeEnvironment": "ce1"}, {"order": 1, "computeEnvironment": "ce2"}]}),
                "computeEnvironmentOrder[1].order",
            ),
            (
                json!({"schedulingPolicyArn": "arn:aws:batch:us-east-1:000000000000:scheduling-policy/nope"}),
                "schedulingPolicyArn",
            ),
            (
                json!({"jobStateTimeLimitActions": [{"reason": "r", "state": "RUNNABLE", "maxTimeSeconds": 10, "action": "CANCEL"}]}),
                "jobStateTimeLimitActions[0].maxTimeSeconds",
            ),
        ],
    )
    .await;
    assert_eq!(
        describe_names(&raw, "DescribeJobQueues", "jobQueues", "jobQueueName").await,
        vec!["default"],
        "a refused queue was stored"
    );
    refuse_all(
        &raw,
        "UpdateJobQueue",
        &json!({"jobQueue": "default"}),
        vec![
            (json!({"state": "GONE"}), "state"),
            (json!({"priority": 5000}), "priority"),
            (
                json!({"computeEnvironmentOrder": four}),
                "computeEnvironmentOrder",
            ),
            (json!({"jobQueue": "nope"}), "jobQueue"),
        ],
    )
    .await;
    let r = raw
        .post("DescribeJobQueues", &json!({"jobQueues": ["default"]}))
        .await;
    let q = &r.json()["jobQueues"][0];
    assert_eq!(q["state"], "ENABLED");
    assert_eq!(q["priority"], 1);
    assert_eq!(q["computeEnvironmentOrder"].as_array().unwrap().len(), 1);
}

#[tokio::test]
async fn job_definition_rules() {
    let server = Server::start();
    let raw = server.raw();
    let base = json!({
        "jobDefinitionName": "jd",
        "type": "container",
        "containerProperties": {"image": "busybox", "command": ["true"]}
    });
    refuse_all(
        &raw,
        "RegisterJobDefinition",
        &base,
        vec![
            (json!({"jobDefinitionName": ""}), "jobDefinitionName"),
            (json!({"jobDefinitionName": long_name()}), "jobDefinitionName"),
            (json!({"jobDefinitionName": "jd:1"}), "jobDefinitionName"),
            (json!({"jobDefinitionName": null}), "jobDefinitionName"),
            (json!({"type": "lambda"}), "type"),
            (json!({"type": null}), "type"),
            (json!({"containerProperties": {"image": null}}), "containerProperties.image"),
            (json!({"containerProperties": {"image": ""}}), "containerProperties.image"),
            (json!({"containerProperties": null}), "containerProperties"),
            (json!({"retryStrategy": {"attempts": 0}}), "retryStrategy.attempts"),
            (json!({"retryStrategy": {"attempts": 11}}), "retryStrategy.attempts"),
            (json!({"retryStrategy": {"evaluateOnExit": evaluate_on_exit(6)}}), "retryStrategy.evaluateOnExit"),
            (
                json!({"retryStrategy": {"evaluateOnExit": [{"onReason": "Out*OfMemory", "action": "RETRY"}]}}),
                "retryStrategy.evaluateOnExit[0].onReason",
            ),
            (
                json!({"retryStrategy": {"evaluateOnExit": [{"onStatusReason": "a*b*", "action": "EXIT"}]}}),
                "retryStrategy.evaluateOnExit[0].onStatusReason",
            ),
            (
                json!({"retryStrategy": {"evaluateOnExit": [{"onExitCode": "1x", "action": "EXIT"}]}}),
                "retryStrategy.evaluateOnExit[0].onExitCode",
            ),
            (
                json!({"retryStrategy": {"evaluateOnExit": [{"onExitCode": "1", "action": "MAYBE"}]}}),
                "retryStrategy.evaluateOnExit[0].action",
            ),
            (
                json!({"retryStrategy": {"evaluateOnExit": [{"onExitCode": "1"}]}}),
                "action",
            ),
            (json!({"timeout": {"attemptDurationSeconds": 59}}), "timeout.attemptDurationSeconds"),
            (
                json!({"containerProperties": {"resourceRequirements": [{"type": "DISK", "value": "1"}]}}),
                "containerProperties.resourceRequirements[0].type",
            ),
            (
                json!({"containerProperties": {"resourceRequirements": [{"type": "MEMORY", "value": "lots"}]}}),
                "containerProperties.resourceRequirements[0].value",
            ),
            (
                json!({"containerProperties": {"environment": [{"name": "AWS_BATCH_X", "value": "1"}]}}),
                "containerProperties.environment[0].name",
            ),
            (json!({"schedulingPriority": 10000}), "schedulingPriority"),
            (json!({"platformCapabilities": ["LAMBDA"]}), "platformCapabilities[0]"),
            (json!({"tags": {"aws:x": "y"}}), "tags"),
        ],
    )
    .await;
    let r = raw.post("DescribeJobDefinitions", &json!({})).await;
    assert_eq!(
        r.json()["jobDefinitions"],
        json!([]),
        "a refused definition was stored"
    );

    // 24 KiB: just under is accepted, just over is refused.
    let sized = |target: usize| {
        let mut body = patch(
            &base,
            json!({"containerProperties": {"environment": [{"name": "PAD", "value": ""}]}}),
        );
        let len = serde_json::to_vec(&body).unwrap().len();
        body["containerProperties"]["environment"][0]["value"] = json!("x".repeat(target - len));
        assert_eq!(serde_json::to_vec(&body).unwrap().len(), target);
        body
    };
    let r = raw.post("RegisterJobDefinition", &sized(24 * 1024)).await;
    assert_eq!(r.status, 200, "{r:?}");
    let r = raw
        .post("RegisterJobDefinition", &sized(24 * 1024 + 1))
        .await;
    r.assert_client_error("request body");
    assert!(r.message().contains("24576"), "{r:?}");
    let r = raw
        .post(
            "DescribeJobDefinitions",
            &json!({"jobDefinitionName": "jd"}),
        )
        .await;
    assert_eq!(r.json()["jobDefinitions"].as_array().unwrap().len(), 1);
}

#[tokio::test]
async fn job_definition_over_24_kib_through_the_sdk() {
    use aws_sdk_batch::types::*;
    let server = Server::start();
    let client = server.client();
    let mut props = ContainerProperties::builder().image("busybox");
    for i in 0..400 {
        props = props.environment(
            KeyValuePair::builder()
                .name(format!("VAR_{i}"))
                .value("v".repeat(60))
                .build(),
        );
    }
    let (code, msg) = service_error(
        client
            .register_job_definition()
            .job_definition_name("big")
            .r#type(JobDefinitionType::Container)
            .container_properties(props.build())
            .send()
            .await,
    );
    assert_eq!(code, "ClientException");
    assert!(msg.contains("request body"), "{msg}");
    let defs = client
        .describe_job_definitions()
        .job_definition_name("big")
        .send()
        .await
        .unwrap()
        .job_definitions
        .unwrap_or_default();
    assert!(defs.is_empty());
}

#[tokio::test]
async fn submit_job_rules() {
    let server = Server::start();
    let raw = server.raw();
    let client = server.client();
    register_simple(&client, "jd").await;
    let base = json!({"jobName": "j", "jobQueue": "default", "jobDefinition": "jd"});
    let deps21: Vec<Value> = (0..21)
        .map(|i| json!({"jobId": format!("job-{i}")}))
        .collect();
    refuse_all(
        &raw,
        "SubmitJob",
        &base,
        vec![
            (json!({"jobName": ""}), "jobName"),
            (json!({"jobName": long_name()}), "jobName"),
            (json!({"jobName": "my job"}), "jobName"),
            (json!({"jobName": null}), "jobName"),
            (json!({"jobQueue": null}), "jobQueue"),
            (json!({"jobQueue": ""}), "jobQueue"),
            (json!({"jobQueue": "nope"}), "jobQueue"),
            (json!({"jobDefinition": null}), "jobDefinition"),
            (json!({"jobDefinition": "nope"}), "jobDefinition"),
            (json!({"jobDefinition": "jd:7"}), "jobDefinition"),
            (json!({"arrayProperties": {"size": 1}}), "arrayProperties.size"),
            (json!({"arrayProperties": {"size": 10001}}), "arrayProperties.size"),
            (json!({"arrayProperties": {"size": "ten"}}), "arrayProperties.size"),
            (json!({"dependsOn": deps21}), "dependsOn"),
            (json!({"dependsOn": [{"jobId": "x", "type": "ALL"}]}), "dependsOn[0].type"),
            (json!({"dependsOn": [{}]}), "dependsOn[0].jobId"),
            (json!({"timeout": {"attemptDurationSeconds": 59}}), "timeout.attemptDurationSeconds"),
            (json!({"retryStrategy": {"attempts": 0}}), "retryStrategy.attempts"),
            (json!({"retryStrategy": {"attempts": 11}}), "retryStrategy.attempts"),
            (json!({"retryStrategy": {"evaluateOnExit": evaluate_on_exit(6)}}), "retryStrategy.evaluateOnExit"),
            (
                json!({"retryStrategy": {"evaluateOnExit": [{"onReason": "a*b", "action": "RETRY"}]}}),
                "retryStrategy.evaluateOnExit[0].onReason",
            ),
            (
                json!({"retryStrategy": {"evaluateOnExit": [{"onExitCode": "one", "action": "RETRY"}]}}),
                "retryStrategy.evaluateOnExit[0].onExitCode",
            ),
            (
                json!({"retryStrategy": {"evaluateOnExit": [{"onExitCode": "1", "action": "RESTART"}]}}),
                "retryStrategy.evaluateOnExit[0].action",
            ),
            (
                json!({"containerOverrides": {"resourceRequirements": [{"type": "TPU", "value": "1"}]}}),
                "containerOverrides.resourceRequirements[0].type",
            ),
            (json!({"containerOverrides": {"vcpus": 0}}), "containerOverrides.vcpus"),
            (json!({"schedulingPriorityOverride": 10000}), "schedulingPriorityOverride"),
            (json!({"shareIdentifier": "team"}), "shareIdentifier"),
            (json!({"tags": {"aws:owner": "me"}}), "tags"),
        ],
    )
    .await;
    let r = raw
        .post(
            "ListJobs",
            &json!({"jobQueue": "default", "filters": [{"name": "JOB_NAME", "values": ["*"]}]}),
        )
        .await;
    assert_eq!(
        r.json()["jobSummaryList"],
        json!([]),
        "a refused job was stored"
    );

    // 30 KiB: just under is accepted, just over is refused.
    let sized = |target: usize| {
        let mut body = patch(&base, json!({"parameters": {"pad": ""}}));
        let len = serde_json::to_vec(&body).unwrap().len();
        body["parameters"]["pad"] = json!("x".repeat(target - len));
        assert_eq!(serde_json::to_vec(&body).unwrap().len(), target);
        body
    };
    let r = raw.post("SubmitJob", &sized(30 * 1024 + 1)).await;
    r.assert_client_error("request body");
    assert!(r.message().contains("30720"), "{r:?}");
    let r = raw
        .post(
            "ListJobs",
            &json!({"jobQueue": "default", "filters": [{"name": "JOB_NAME", "values": ["*"]}]}),
        )
        .await;
    assert_eq!(r.json()["jobSummaryList"], json!([]));
    let r = raw.post("SubmitJob", &sized(30 * 1024)).await;
    assert_eq!(r.status, 200, "{r:?}");
}

#[tokio::test]
async fn submit_job_over_30_kib_through_the_sdk() {
    let server = Server::start();
    let client = server.client();
    register_simple(&client, "jd").await;
    let (code, msg) = service_error(
        client
            .submit_job()
            .job_name("big")
            .job_queue("default")
            .job_definition("jd")
            .parameters("pad", "p".repeat(31 * 1024))
            .send()
            .await,
    );
    assert_eq!(code, "ClientException");
    assert!(msg.contains("request body"), "{msg}");
    let (code, msg) = service_error(
        client
            .submit_job()
            .job_name("deps")
            .job_queue("default")
            .job_definition("jd")
            .set_depends_on(Some(
                (0..21)
                    .map(|i| {
                        aws_sdk_batch::types::JobDependency::builder()
                            .job_id(format!("j{i}"))
                            .build()
                    })
                    .collect(),
            ))
            .send()
            .await,
    );
    assert_eq!(code, "ClientException");
    assert!(msg.contains("dependsOn"), "{msg}");
}

#[tokio::test]
async fn scheduling_policy_and_tag_rules() {
    let server = Server::start();
    let raw = server.raw();
    refuse_all(
        &raw,
        "CreateSchedulingPolicy",
        &json!({"name": "p"}),
        vec![
            (json!({"name": ""}), "name"),
            (json!({"name": long_name()}), "name"),
            (json!({"name": "p p"}), "name"),
            (json!({"fairsharePolicy": {"shareDecaySeconds": -1}}), "fairsharePolicy.shareDecaySeconds"),
            (json!({"fairsharePolicy": {"computeReservation": 100}}), "fairsharePolicy.computeReservation"),
            (
                json!({"fairsharePolicy": {"shareDistribution": [{"shareIdentifier": "a b"}]}}),
                "fairsharePolicy.shareDistribution[0].shareIdentifier",
            ),
            (
                json!({"fairsharePolicy": {"shareDistribution": [{"shareIdentifier": "a", "weightFactor": 0}]}}),
                "fairsharePolicy.shareDistribution[0].weightFactor",
            ),
        ],
    )
    .await;
    let r = raw.post("ListSchedulingPolicies", &json!({})).await;
    assert_eq!(r.json()["schedulingPolicies"], json!([]));

    // Tag operations: unknown resource types and ARNs of other accounts.
    let q = "arn:aws:batch:us-east-1:000000000000:job-queue/default";
    let enc = |arn: &str| arn.replace(':', "%3A").replace('/', "%2F");
    for arn in [
        "arn:aws:batch:us-east-1:000000000000:widget/x",
        "arn:aws:batch:us-east-1:111111111111:job-queue/default",
        "not-an-arn",
    ] {
        let r = raw
            .send("GET", &format!("/v1/tags/{}", enc(arn)), None, vec![])
            .await;
        r.assert_client_error("resourceArn");
    }
    let r = raw
        .send(
            "POST",
            &format!("/v1/tags/{}", enc(q)),
            Some("application/json"),
            br#"{"tags":{}}"#.to_vec(),
        )
        .await;
    r.assert_client_error("tags");
    let r = raw
        .send("DELETE", &format!("/v1/tags/{}", enc(q)), None, vec![])
        .await;
    r.assert_client_error("tagKeys");
    let many: serde_json::Map<String, Value> =
        (0..51).map(|i| (format!("k{i}"), json!("v"))).collect();
    let r = raw
        .send(
            "POST",
            &format!("/v1/tags/{}", enc(q)),
            Some("application/json"),
            serde_json::to_vec(&json!({ "tags": many })).unwrap(),
        )
        .await;
    r.assert_client_error("tags");
    let r = raw
        .send("GET", &format!("/v1/tags/{}", enc(q)), None, vec![])
        .await;
    assert_eq!(r.status, 200);
    assert_eq!(r.json()["tags"], json!({}));
}

#[tokio::test]
async fn list_and_describe_rules() {
    let server = Server::start();
    let raw = server.raw();
    let client = server.client();
    register_simple(&client, "jd").await;
    refuse_all(
        &raw,
        "ListJobs",
        &json!({"jobQueue": "default"}),
        vec![
            (json!({"jobStatus": "DONE"}), "jobStatus"),
            (
                json!({"filters": [{"name": "JOB_COLOR", "values": ["red"]}]}),
                "filters[0].name",
            ),
            (
                json!({"filters": [{"name": "JOB_NAME", "values": []}]}),
                "filters[0].values",
            ),
            (
                json!({"filters": [{"name": "BEFORE_CREATED_AT", "values": ["yesterday"]}]}),
                "filters[0].values",
            ),
            (json!({"maxResults": 0}), "maxResults"),
            (json!({"maxResults": 1001}), "maxResults"),
            (json!({"nextToken": "not a token"}), "nextToken"),
            (json!({"nextToken": "bm9wZQ"}), "nextToken"),
            (json!({"jobQueue": "nope"}), "jobQueue"),
            (json!({"jobQueue": null}), "jobQueue"),
            (json!({"arrayJobId": "x"}), "jobQueue"),
        ],
    )
    .await;
    let ids: Vec<String> = (0..101).map(|i| format!("id-{i}")).collect();
    refuse_all(
        &raw,
        "DescribeJobs",
        &json!({}),
        vec![
            (json!({ "jobs": ids }), "jobs"),
            (json!({"jobs": null}), "jobs"),
        ],
    )
    .await;
    for op in [
        "DescribeComputeEnvironments",
        "DescribeJobQueues",
        "DescribeJobDefinitions",
        "ListSchedulingPolicies",
    ] {
        refuse_all(
            &raw,
            op,
            &json!({}),
            vec![
                (json!({"maxResults": 0}), "maxResults"),
                (json!({"maxResults": 101}), "maxResults"),
                (json!({"nextToken": "%%%"}), "nextToken"),
            ],
        )
        .await;
    }
    refuse_all(
        &raw,
        "DescribeJobDefinitions",
        &json!({}),
        vec![(json!({"status": "DELETED"}), "status")],
    )
    .await;
    // Through the SDK: an enum value it does not know still reaches the server and is refused.
    let (code, msg) = service_error(
        client
            .list_jobs()
            .job_queue("default")
            .job_status(aws_sdk_batch::types::JobStatus::from("DONE"))
            .send()
            .await,
    );
    assert_eq!(code, "ClientException");
    assert!(msg.contains("jobStatus"), "{msg}");
    let (code, msg) = service_error(
        client
            .describe_jobs()
            .set_jobs(Some((0..101).map(|i| format!("id-{i}")).collect()))
            .send()
            .await,
    );
    assert_eq!(code, "ClientException");
    assert!(msg.contains("jobs"), "{msg}");
    let (code, msg) = service_error(
        client
            .list_jobs()
            .job_queue("default")
            .max_results(0)
            .send()
            .await,
    );
    assert_eq!(code, "ClientException");
    assert!(msg.contains("maxResults"), "{msg}");
}

#[tokio::test]
async fn malformed_requests_and_wrong_routes() {
    let server = Server::start();
    let raw = server.raw();

    for body in [
        &b"{not json"[..],
        b"{\"jobQueues\": [",
        b"[1,2]",
        b"\"text\"",
        b"\xff\xfe",
    ] {
        let r = raw.post_bytes("DescribeJobQueues", body.to_vec()).await;
        assert_eq!(r.status, 400, "{:?}: {r:?}", String::from_utf8_lossy(body));
        assert_eq!(r.error_type.as_deref(), Some("ClientException"), "{r:?}");
        assert_eq!(r.json()["__type"], "ClientException");
    }
    let r = raw.post_bytes("SubmitJob", b"{not json".to_vec()).await;
    r.assert_client_error("JSON");

    // A field of the wrong JSON type is named.
    let r = raw
        .post(
            "CreateJobQueue",
            &json!({"jobQueueName": "q", "priority": "high", "computeEnvironmentOrder": []}),
        )
        .await;
    r.assert_client_error("priority");

    // Wrong Content-Type.
    let r = raw
        .send(
            "POST",
            "/v1/describejobqueues",
            Some("text/plain"),
            b"{}".to_vec(),
        )
        .await;
    assert!((400..500).contains(&r.status), "{r:?}");
    assert_eq!(r.error_type.as_deref(), Some("ClientException"), "{r:?}");

    // Unknown routes and methods.
    for (method, path) in [
        ("POST", "/v1/nosuchoperation"),
        ("POST", "/v2/submitjob"),
        ("POST", "/"),
        ("GET", "/v1/submitjob"),
        ("GET", "/v1/describejobqueues"),
        ("PUT", "/v1/describejobqueues"),
        ("PUT", "/v1/tags/x"),
    ] {
        let r = raw
            .send(method, path, Some("application/json"), b"{}".to_vec())
            .await;
        assert_eq!(r.status, 404, "{method} {path}: {r:?}");
        assert!(
            r.error_type.is_some(),
            "{method} {path}: no x-amzn-errortype: {r:?}"
        );
    }

    // A body larger than anything the API accepts.
    let big = format!("{{\"jobQueues\": [\"{}\"]}}", "q".repeat(2 * 1024 * 1024));
    let r = raw.post_bytes("DescribeJobQueues", big.into_bytes()).await;
    assert!((400..500).contains(&r.status), "{r:?}");
    assert!(r.error_type.is_some(), "no x-amzn-errortype: {r:?}");

    // The server is still fine.
    assert_eq!(raw.health().await, 200);
    assert_eq!(raw.post("DescribeJobQueues", &json!({})).await.status, 200);
}

// ------------------------------------------------------------------ fuzz

/// xorshift64*: deterministic, seeded, no dependency.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
    fn pick<'a, T>(&mut self, v: &'a [T]) -> &'a T {
        &v[self.below(v.len())]
    }
}

fn random_value(rng: &mut Rng, depth: u32) -> Value {
    let strings = [
        "",
        "default",
        "local",
        "jd",
        "jd:1",
        "*",
        "a*",
        "RUNNABLE",
        "MANAGED",
        "LOCAL",
        "EC2",
        "N_TO_N",
        "SEQUENTIAL",
        "JOB_NAME",
        "JOB_DEFINITION",
        "BEFORE_CREATED_AT",
        "\u{0}",
        "nul\u{0}inside",
        "🚀",
        "ünïcødé",
        "' OR 1=1 --",
        "%00",
        "\\",
        "\"",
        "arn:aws:batch:us-east-1:000000000000:job-queue/default",
        "arn:aws:batch:us-east-1:000000000000:job-definition/jd:1",
        "arn:aws:batch:us-east-1:000000000000:job/x",
        "bm9wZQ",
        "Yzo5OTk5OTk5OTk5OTk5OTk5OTk5OTk5OTk6eA",
        "aTotMQ",
    ];
    match rng.below(if depth > 2 { 6 } else { 8 }) {
        0 => Value::Null,
        1 => json!(rng.below(2) == 0),
        2 => json!(*rng.pick(&[
            0i64,
            1,
            -1,
            2,
            59,
            60,
            100,
            101,
            1000,
            1001,
            10_000,
            10_001,
            i32::MAX as i64,
            i32::MIN as i64,
            i64::MAX,
            i64::MIN
        ])),
        3 => json!(*rng.pick(&[0.5f64, -0.0, 1e300, 3.7])),
        4 => json!(*rng.pick(&strings)),
        5 => json!("x".repeat(rng.below(300))),
        6 => Value::Array(
            (0..rng.below(4))
                .map(|_| random_value(rng, depth + 1))
                .collect(),
        ),
        _ => {
            let keys = [
                "jobName",
                "jobQueue",
                "jobDefinition",
                "type",
                "state",
                "name",
                "values",
                "size",
                "jobId",
                "order",
                "computeEnvironment",
                "image",
                "attempts",
                "action",
                "value",
            ];
            Value::Object(
                (0..rng.below(4))
                    .map(|_| (rng.pick(&keys).to_string(), random_value(rng, depth + 1)))
                    .collect(),
            )
        }
    }
}

/// Replaces, removes or adds one field somewhere in `v`.
fn mutate(rng: &mut Rng, v: &mut Value, depth: u32) {
    match v {
        Value::Object(m) if !m.is_empty() && depth < 4 => {
            let keys: Vec<String> = m.keys().cloned().collect();
            let k = rng.pick(&keys).clone();
            match rng.below(4) {
                0 => {
                    m.remove(&k);
                }
                1 => {
                    m.insert(k, random_value(rng, depth));
                }
                _ => mutate(rng, m.get_mut(&k).unwrap(), depth + 1),
            }
        }
        Value::Array(a) if !a.is_empty() && depth < 4 => {
            let i = rng.below(a.len());
            if rng.below(3) == 0 {
                a.push(a[i].clone());
            } else {
                mutate(rng, &mut a[i], depth + 1);
            }
        }
        _ => *v = random_value(rng, depth),
    }
}

/// A valid request body for each operation (tags go through `/v1/tags/…`).
fn valid_bodies(job_id: &str) -> Vec<(&'static str, Value)> {
    let jd = json!({
        "jobDefinitionName": "fz", "type": "container",
        "containerProperties": {"image": "busybox", "command": ["echo", "Ref::x"],
            "resourceRequirements": [{"type": "VCPU", "value": "1"}, {"type": "MEMORY", "value": "64"}],
            "environment": [{"name": "A", "value": "1"}]},
        "retryStrategy": {"attempts": 2, "evaluateOnExit": [{"onExitCode": "1*", "action": "RETRY"}]},
        "timeout": {"attemptDurationSeconds": 60}, "parameters": {"x": "y"}, "tags": {"k": "v"}
    });
    vec![
        (
            "CreateComputeEnvironment",
            json!({"computeEnvironmentName": "fz", "type": "MANAGED",
            "computeResources": {"type": "LOCAL", "maxvCpus": 2, "minvCpus": 0}, "tags": {"k": "v"}}),
        ),
        (
            "UpdateComputeEnvironment",
            json!({"computeEnvironment": "local", "state": "ENABLED",
            "computeResources": {"maxvCpus": 4}}),
        ),
        (
            "DeleteComputeEnvironment",
            json!({"computeEnvironment": "fz"}),
        ),
        (
            "DescribeComputeEnvironments",
            json!({"computeEnvironments": ["local"], "maxResults": 10, "nextToken": "bG9jYWw"}),
        ),
        (
            "CreateJobQueue",
            json!({"jobQueueName": "fzq", "priority": 1, "state": "ENABLED",
            "computeEnvironmentOrder": [{"order": 1, "computeEnvironment": "local"}]}),
        ),
        (
            "UpdateJobQueue",
            json!({"jobQueue": "default", "priority": 2, "state": "ENABLED",
            "computeEnvironmentOrder": [{"order": 1, "computeEnvironment": "local"}]}),
        ),
        ("DeleteJobQueue", json!({"jobQueue": "fzq"})),
        (
            "DescribeJobQueues",
            json!({"jobQueues": ["default"], "maxResults": 5}),
        ),
        ("RegisterJobDefinition", jd),
        ("DeregisterJobDefinition", json!({"jobDefinition": "fz:1"})),
        (
            "DescribeJobDefinitions",
            json!({"jobDefinitionName": "fz", "status": "ACTIVE", "maxResults": 5}),
        ),
        (
            "CreateSchedulingPolicy",
            json!({"name": "fzp", "fairsharePolicy": {"shareDecaySeconds": 60,
            "computeReservation": 5, "shareDistribution": [{"shareIdentifier": "a*", "weightFactor": 1.5}]}}),
        ),
        (
            "UpdateSchedulingPolicy",
            json!({"arn": "arn:aws:batch:us-east-1:000000000000:scheduling-policy/fzp",
            "fairsharePolicy": {"shareDecaySeconds": 10}}),
        ),
        (
            "DeleteSchedulingPolicy",
            json!({"arn": "arn:aws:batch:us-east-1:000000000000:scheduling-policy/fzp"}),
        ),
        (
            "DescribeSchedulingPolicies",
            json!({"arns": ["arn:aws:batch:us-east-1:000000000000:scheduling-policy/fzp"]}),
        ),
        ("ListSchedulingPolicies", json!({"maxResults": 10})),
        (
            "SubmitJob",
            json!({"jobName": "fz", "jobQueue": "default", "jobDefinition": "jd",
            "arrayProperties": {"size": 2}, "dependsOn": [{"jobId": job_id}],
            "parameters": {"x": "z"}, "containerOverrides": {"command": ["a"], "environment": [{"name": "B", "value": "2"}],
            "resourceRequirements": [{"type": "VCPU", "value": "2"}]},
            "retryStrategy": {"attempts": 1}, "timeout": {"attemptDurationSeconds": 100}, "tags": {"a": "b"},
            "propagateTags": true}),
        ),
        (
            "DescribeJobs",
            json!({"jobs": [job_id, format!("{job_id}:0")]}),
        ),
        (
            "ListJobs",
            json!({"jobQueue": "default", "jobStatus": "RUNNABLE", "maxResults": 10,
            "filters": [{"name": "JOB_NAME", "values": ["f*"]}]}),
        ),
        ("CancelJob", json!({"jobId": job_id, "reason": "fuzz"})),
        ("TerminateJob", json!({"jobId": job_id, "reason": "fuzz"})),
        ("GetJobQueueSnapshot", json!({"jobQueue": "default"})),
        ("TagResource", json!({"tags": {"k": "v"}})),
    ]
}

async fn fuzz(server: &Server) {
    let raw = server.raw();
    let client = server.client();
    register_simple(&client, "jd").await;
    let job_id = submit(&client, "seed", "default", "jd").await;
    let mut rng = Rng(0x5eed_f1a7_1a5e_ed01);
    let tag_targets = [
        "arn:aws:batch:us-east-1:000000000000:job-queue/default".to_string(),
        "arn:aws:batch:us-east-1:000000000000:compute-environment/local".to_string(),
        "arn:aws:batch:us-east-1:000000000000:job-definition/jd:1".to_string(),
        format!("arn:aws:batch:us-east-1:000000000000:job/{job_id}"),
        "arn:aws:batch:us-east-1:000000000000:job/nul%00".to_string(),
        "garbage".to_string(),
    ];
    let bodies = valid_bodies(&job_id);
    let mut sent = 0;
    let mut accepted = 0;
    for round in 0..20 {
        for (op, valid) in &bodies {
            let body: Vec<u8> = match rng.below(10) {
                0 => {
                    // Truncated JSON.
                    let b = serde_json::to_vec(valid).unwrap();
                    b[..rng.below(b.len())].to_vec()
                }
                1 => serde_json::to_vec(&random_value(&mut rng, 0)).unwrap(),
                2 if round % 2 == 0 => serde_json::to_vec(valid).unwrap(),
                _ => {
                    let mut v = valid.clone();
                    for _ in 0..=rng.below(3) {
                        mutate(&mut rng, &mut v, 0);
                    }
                    serde_json::to_vec(&v).unwrap()
                }
            };
            let r = if *op == "TagResource" {
                let arn = rng
                    .pick(&tag_targets)
                    .replace(':', "%3A")
                    .replace('/', "%2F");
                let path = format!("/v1/tags/{arn}");
                match rng.below(3) {
                    0 => raw.send("GET", &path, None, vec![]).await,
                    1 => {
                        raw.send("POST", &path, Some("application/json"), body.clone())
                            .await
                    }
                    _ => {
                        let key = rng
                            .pick(&["k", "a%20b", "%00", "", "k&tagKeys=x"])
                            .to_string();
                        raw.send("DELETE", &format!("{path}?tagKeys={key}"), None, vec![])
                            .await
                    }
                }
            } else {
                raw.post_bytes(op, body.clone()).await
            };
            sent += 1;
            if r.status == 200 {
                accepted += 1;
            }
            assert!(
                r.status < 500,
                "{op} answered {} to {}: {r:?}",
                r.status,
                String::from_utf8_lossy(&body)
            );
            if r.status != 200 {
                assert!(
                    r.error_type.is_some(),
                    "{op}: error without x-amzn-errortype: {r:?}"
                );
            }
        }
    }
    assert!(sent >= 400);
    // Enough requests got past parsing and validation to reach the store.
    assert!(
        accepted >= sent / 10,
        "only {accepted} of {sent} requests were accepted"
    );
    assert_eq!(raw.health().await, 200);
    // Still serving real work.
    let id = submit(&client, "after-fuzz", "default", "jd").await;
    assert_eq!(
        describe_job(&client, &id).await.job_name.as_deref(),
        Some("after-fuzz")
    );
}

#[tokio::test]
async fn random_bodies_never_cause_a_server_error_sqlite() {
    let server = Server::start();
    fuzz(&server).await;
}

#[tokio::test]
async fn random_bodies_never_cause_a_server_error_postgres() {
    let db = PgDatabase::create();
    let server = Server::start_with(ServerOptions {
        database_url: Some(db.url.clone()),
        ..Default::default()
    });
    fuzz(&server).await;
    drop(server);
}

/// No job ID contains NUL; PostgreSQL refuses NUL in a text parameter. Lookups by such values must
/// answer "not found", not a 500.
async fn nul_lookups(server: &Server) {
    let raw = server.raw();
    let client = server.client();
    register_simple(&client, "jd").await;
    let id = submit(&client, "j", "default", "jd").await;
    let nul = format!("{id}\u{0}");

    let r = raw.post("DescribeJobs", &json!({"jobs": [nul, id]})).await;
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(r.json()["jobs"].as_array().unwrap().len(), 1);
    for op in ["CancelJob", "TerminateJob"] {
        raw.post(op, &json!({"jobId": nul, "reason": "r"}))
            .await
            .assert_client_error("jobId");
    }
    raw.post(
        "SubmitJob",
        &json!({"jobName": "d", "jobQueue": "default", "jobDefinition": "jd", "dependsOn": [{"jobId": nul}]}),
    )
    .await
    .assert_client_error("dependsOn[0].jobId");
    for body in [
        json!({"arrayJobId": nul, "jobStatus": "RUNNABLE"}),
        json!({"jobQueue": "default", "filters": [{"name": "JOB_NAME", "values": ["j\u{0}"]}]}),
        json!({"jobQueue": "default", "filters": [{"name": "JOB_DEFINITION", "values": ["jd\u{0}"]}]}),
    ] {
        let r = raw.post("ListJobs", &body).await;
        assert_eq!(r.status, 200, "{body}: {r:?}");
        assert_eq!(r.json()["jobSummaryList"], json!([]));
    }
    let arn = format!("arn%3Aaws%3Abatch%3Aus-east-1%3A000000000000%3Ajob%2F{id}%00");
    raw.send("GET", &format!("/v1/tags/{arn}"), None, vec![])
        .await
        .assert_client_error("resourceArn");
    // The real job is untouched.
    assert_eq!(
        describe_job(&client, &id).await.status,
        Some(aws_sdk_batch::types::JobStatus::Runnable)
    );
}

#[tokio::test]
async fn nul_in_job_ids_is_not_found_sqlite() {
    nul_lookups(&Server::start()).await;
}

#[tokio::test]
async fn nul_in_job_ids_is_not_found_postgres() {
    let db = PgDatabase::create();
    let server = Server::start_with(ServerOptions {
        database_url: Some(db.url.clone()),
        ..Default::default()
    });
    nul_lookups(&server).await;
    drop(server);
}
