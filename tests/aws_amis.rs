//! AMIs as AWS Batch chooses them: a managed environment without `imageId` boots the
//! ECS-optimized AMI that SSM recommends for each instance type (the GPU image on GPU types, the
//! arm64 one on Graviton), `ec2Configuration`'s `imageIdOverride` wins, and EKS settings are
//! refused. Against the emulator, which serves AWS's public SSM parameters.

mod common;

use common::aws::*;
use common::emulator::Emulator;
use serde_json::{Value, json};
use std::time::{Duration, Instant};

const PARAM: &str = "/aws/service/ecs/optimized-ami";

/// A managed EC2 environment over one instance type, kept at one instance by `minvCpus`.
fn env(name: &str, subnet: &str, instance_type: &str, vcpus: i32, ec2: Option<Value>) -> Value {
    let mut cr = json!({
        "type": "EC2", "minvCpus": vcpus, "maxvCpus": vcpus, "subnets": [subnet],
        "instanceTypes": [instance_type], "instanceRole": "ecsInstanceRole",
        "allocationStrategy": "BEST_FIT_PROGRESSIVE",
    });
    if let Some(c) = ec2 {
        cr["ec2Configuration"] = c;
    }
    json!({"computeEnvironmentName": name, "type": "MANAGED", "computeResources": cr})
}

/// (instance type, image ID) of the instances launched for environment `name`.
async fn launched(emu: &Emulator, name: &str) -> Vec<(String, String)> {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let out = ec2_client(emu)
            .await
            .describe_instances()
            .filters(
                aws_sdk_ec2::types::Filter::builder()
                    .name("tag:flotilla:compute-environment")
                    .values(name)
                    .build(),
            )
            .send()
            .await
            .expect("describe instances");
        let found: Vec<(String, String)> = out
            .reservations()
            .iter()
            .flat_map(|r| r.instances())
            .map(|i| {
                (
                    i.instance_type()
                        .map(|t| t.as_str().to_string())
                        .unwrap_or_default(),
                    i.image_id().unwrap_or_default().to_string(),
                )
            })
            .collect();
        if !found.is_empty() {
            return found;
        }
        assert!(
            Instant::now() < deadline,
            "no instance launched for {name} in 60 s"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn environments_without_an_image_boot_the_ami_ssm_recommends_per_instance_type() {
    let emu = Emulator::start();
    let server = start_without_ami(&emu, 300, &[]);
    let client = server.client();
    let raw = server.raw();
    let subnet = default_subnet(&emu).await;
    let al2023 = ssm_value(
        &emu,
        &format!("{PARAM}/amazon-linux-2023/recommended/image_id"),
    )
    .await;
    let gpu = ssm_value(
        &emu,
        &format!("{PARAM}/amazon-linux-2023/gpu/recommended/image_id"),
    )
    .await;
    let arm64 = ssm_value(
        &emu,
        &format!("{PARAM}/amazon-linux-2023/arm64/recommended/image_id"),
    )
    .await;
    let al2_gpu = ssm_value(
        &emu,
        &format!("{PARAM}/amazon-linux-2/gpu/recommended/image_id"),
    )
    .await;
    // Another image the emulator knows, to override with.
    let other = ssm_value(
        &emu,
        &format!("{PARAM}/amazon-linux-2/recommended/image_id"),
    )
    .await;
    assert_eq!(
        [&al2023, &gpu, &arm64, &al2_gpu, &other]
            .into_iter()
            .collect::<std::collections::HashSet<_>>()
            .len(),
        5,
        "the emulator's parameters name distinct AMIs"
    );

    // (environment, its one instance type, vCPUs, ec2Configuration, AMI, image type)
    type Case<'a> = (&'a str, &'a str, i32, Option<Value>, &'a str, &'a str);
    let cases: Vec<Case> = vec![
        ("plain", "c5.large", 2, None, al2023.as_str(), "ECS_AL2023"),
        (
            "gpu",
            "g4dn.xlarge",
            4,
            None,
            gpu.as_str(),
            "ECS_AL2023_NVIDIA",
        ),
        (
            "graviton",
            "m6g.large",
            2,
            None,
            arm64.as_str(),
            "ECS_AL2023",
        ),
        (
            "al2-gpu",
            "g4dn.xlarge",
            4,
            Some(json!([{"imageType": "ECS_AL2"}, {"imageType": "ECS_AL2_NVIDIA"}])),
            al2_gpu.as_str(),
            "ECS_AL2_NVIDIA",
        ),
        (
            "override",
            "c5.large",
            2,
            Some(json!([{"imageType": "ECS_AL2023", "imageIdOverride": other}])),
            other.as_str(),
            "ECS_AL2023",
        ),
    ];
    for (name, itype, vcpus, ec2, _, _) in &cases {
        let r = raw
            .post(
                "CreateComputeEnvironment",
                &env(name, &subnet, itype, *vcpus, ec2.clone()),
            )
            .await;
        assert_eq!(r.status, 200, "{name}: {r:?}");
    }
    for (name, itype, _, _, want, image_type) in &cases {
        wait_valid(&client, name).await;
        let got = launched(&emu, name).await;
        assert!(
            got.iter().all(|(t, ami)| t == itype && ami == want),
            "{name}: launched {got:?}, wanted {itype} from {want}"
        );
        // DescribeComputeEnvironments shows the image type and AMI the type resolved to.
        let d = raw
            .post(
                "DescribeComputeEnvironments",
                &json!({"computeEnvironments": [name]}),
            )
            .await;
        assert_eq!(
            d.json()["computeEnvironments"][0]["computeResources"]["ec2Configuration"],
            json!([{"imageType": image_type, "imageIdOverride": want}]),
            "{name}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn eks_and_unknown_image_settings_are_refused_naming_them() {
    let server = common::Server::start();
    let raw = server.raw();
    for (ec2, field) in [
        (
            json!([{"imageType": "ECS_AL2023", "imageKubernetesVersion": "1.30"}]),
            "imageKubernetesVersion",
        ),
        (json!([{"imageType": "EKS_AL2"}]), "imageType"),
        (json!([{"imageType": "ECS_AL1"}]), "imageType"),
        (
            json!([{"imageType": "ECS_AL2023", "imageIdOverride": "not-an-ami"}]),
            "imageIdOverride",
        ),
    ] {
        let r = raw
            .post(
                "CreateComputeEnvironment",
                &env("refused", "subnet-1", "c5.large", 1, Some(ec2.clone())),
            )
            .await;
        assert_eq!(r.status, 400, "{ec2}: {r:?}");
        assert_eq!(r.error_type.as_deref(), Some("ClientException"), "{ec2}");
        assert!(r.message().contains(field), "{ec2}: {}", r.message());
    }
    let d = raw
        .post(
            "DescribeComputeEnvironments",
            &json!({"computeEnvironments": ["refused"]}),
        )
        .await;
    assert_eq!(d.json()["computeEnvironments"], json!([]));
    // And on update.
    let r = raw
        .post(
            "CreateComputeEnvironment",
            &env("kept", "subnet-1", "c5.large", 1, None),
        )
        .await;
    assert_eq!(r.status, 200, "{r:?}");
    let r = raw
        .post(
            "UpdateComputeEnvironment",
            &json!({"computeEnvironment": "kept", "computeResources": {
                "ec2Configuration": [{"imageType": "ECS_AL2023", "imageKubernetesVersion": "1.30"}]}}),
        )
        .await;
    assert_eq!(r.status, 400, "{r:?}");
    assert!(
        r.message().contains("imageKubernetesVersion"),
        "{}",
        r.message()
    );
}

/// A GPU job end to end: it lands on the GPU instance type (not the cheaper CPU one beside it in
/// the environment), that instance booted the NVIDIA AMI SSM recommends, and the ECS task
/// definition asks ECS for the GPU, so ECS assigns the device. A CPU job of the same environment
/// asks for none.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gpu_job_runs_on_a_gpu_instance_booted_from_the_nvidia_ami_with_the_gpu_requested() {
    let emu = Emulator::start();
    let server = start_without_ami(&emu, 300, &[]);
    let c = server.client();
    let raw = server.raw();
    let subnet = default_subnet(&emu).await;
    let nvidia = ssm_value(
        &emu,
        &format!("{PARAM}/amazon-linux-2023/gpu/recommended/image_id"),
    )
    .await;
    let plain = ssm_value(
        &emu,
        &format!("{PARAM}/amazon-linux-2023/recommended/image_id"),
    )
    .await;
    let r = raw
        .post(
            "CreateComputeEnvironment",
            &json!({"computeEnvironmentName": "mixed", "type": "MANAGED", "computeResources": {
                "type": "EC2", "minvCpus": 0, "maxvCpus": 16, "subnets": [subnet],
                "instanceTypes": ["c5.large", "g4dn.xlarge"], "instanceRole": "ecsInstanceRole",
                "allocationStrategy": "BEST_FIT_PROGRESSIVE"}}),
        )
        .await;
    assert_eq!(r.status, 200, "{r:?}");
    wait_valid(&c, "mixed").await;
    common::create_queue(&c, "mixed-q", "mixed").await;
    for (name, gpus) in [("gpu-def", Some("1")), ("cpu-def", None)] {
        let mut reqs = json!([{"type": "VCPU", "value": "1"}, {"type": "MEMORY", "value": "1024"}]);
        if let Some(g) = gpus {
            reqs.as_array_mut()
                .unwrap()
                .push(json!({"type": "GPU", "value": g}));
        }
        let r = raw
            .post(
                "RegisterJobDefinition",
                &json!({"jobDefinitionName": name, "type": "container", "containerProperties": {
                    "image": "busybox", "command": ["true"], "resourceRequirements": reqs}}),
            )
            .await;
        assert_eq!(r.status, 200, "{r:?}");
    }
    let gpu_job = submit(&c, "mixed-q", "gpu-def", "gpu", 1, 1).await;
    let cpu_job = submit(&c, "mixed-q", "cpu-def", "cpu", 1, 1).await;
    let ids = vec![gpu_job.clone(), cpu_job.clone()];
    let running = wait_running(&c, &ids).await;
    let state = emu.state().await;
    let host = instance_of_container_instance(&state);
    let ec2 = ec2_client(&emu).await;
    let ecs = ecs_client(&emu).await;
    for j in &running {
        let cont = j.container().expect("container");
        let task = cont.task_arn().expect("task arn");
        let t = tasks(&state)
            .into_iter()
            .find(|t| t["taskArn"] == task)
            .expect("the task in the emulator");
        let ci = t["containerInstanceArn"].as_str().unwrap_or_default();
        let instance = host.get(ci).expect("the task's instance");
        let out = ec2
            .describe_instances()
            .instance_ids(instance)
            .send()
            .await
            .expect("describe instances");
        let i = &out.reservations()[0].instances()[0];
        let ty = i
            .instance_type()
            .map(|t| t.as_str().to_string())
            .unwrap_or_default();
        let ami = i.image_id().unwrap_or_default().to_string();
        let td = ecs
            .describe_task_definition()
            .task_definition(t["taskDefinitionArn"].as_str().unwrap_or_default())
            .send()
            .await
            .expect("describe task definition");
        let gpus: Vec<String> = td
            .task_definition()
            .map(|d| d.container_definitions())
            .unwrap_or_default()
            .iter()
            .flat_map(|c| c.resource_requirements())
            .filter(|r| r.r#type().as_str() == "GPU")
            .map(|r| r.value().to_string())
            .collect();
        // Whatever an instance runs, it booted its type's image.
        let want = if ty == "g4dn.xlarge" { &nvidia } else { &plain };
        assert_eq!(&ami, want, "{ty}");
        if j.job_id() == Some(gpu_job.as_str()) {
            assert_eq!(ty, "g4dn.xlarge");
            assert_eq!(gpus, vec!["1".to_string()]);
        } else {
            // A CPU job may share the GPU instance's free vCPUs, as on AWS Batch; it asks ECS
            // for no GPU.
            assert!(gpus.is_empty(), "{gpus:?}");
        }
    }
    let done = drive(&c, &emu, &ids, 16, 120, |_, _| Some(0)).await;
    assert!(
        done.iter()
            .all(|j| j.status == Some(aws_sdk_batch::types::JobStatus::Succeeded))
    );
}
