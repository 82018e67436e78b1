//! `computeResources.launchTemplate` against the AWS emulator: the user's template is merged
//! into the one Flotilla launches from, not replaced. The launched instance has the template's
//! 200 GiB root volume and both user-data parts (the user's and Flotilla's, one MIME document),
//! joins the cluster and runs a job; an override template serves the types it targets with its
//! own AMI; a template EC2 does not have, or one with settings Flotilla cannot carry, makes the
//! environment INVALID saying why; bad specifications are refused by name.

mod common;

use aws_sdk_batch::types::*;
use aws_sdk_ec2::types as ec2t;
use base64::Engine as _;
use common::aws::*;
use common::create_queue;
use common::emulator::Emulator;
use serde_json::{Value, json};
use std::time::{Duration, Instant};

const THEIR_PART: &str = "#!/bin/bash\necho formatting the scratch disk > /var/log/theirs\n";

fn b64(s: &str) -> String {
    base64::engine::general_purpose::STANDARD.encode(s)
}

fn unb64(s: &str) -> String {
    String::from_utf8(
        base64::engine::general_purpose::STANDARD
            .decode(s)
            .expect("base64 user data"),
    )
    .expect("UTF-8 user data")
}

/// User data as AWS Batch asks for it: a MIME multi-part document.
fn mime(script: &str) -> String {
    format!(
        "MIME-Version: 1.0\nContent-Type: multipart/mixed; boundary=\"==MYBOUNDARY==\"\n\n\
         --==MYBOUNDARY==\nContent-Type: text/x-shellscript; charset=\"us-ascii\"\n\n{script}\n\
         --==MYBOUNDARY==--\n"
    )
}

/// A managed EC2 environment kept at one instance of `instance_type` by `minvCpus`.
fn env(name: &str, subnet: &str, instance_type: &str, vcpus: i32, lt: Value) -> Value {
    json!({"computeEnvironmentName": name, "type": "MANAGED", "computeResources": {
        "type": "EC2", "minvCpus": vcpus, "maxvCpus": vcpus.max(2), "subnets": [subnet],
        "instanceTypes": [instance_type], "instanceRole": "ecsInstanceRole",
        "allocationStrategy": "BEST_FIT_PROGRESSIVE", "launchTemplate": lt,
        "tags": {"team": "batch"},
    }})
}

/// The first instance launched for environment `name`.
async fn launched(ec2: &aws_sdk_ec2::Client, name: &str) -> ec2t::Instance {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let out = ec2
            .describe_instances()
            .filters(
                ec2t::Filter::builder()
                    .name("tag:flotilla:compute-environment")
                    .values(name)
                    .build(),
            )
            .send()
            .await
            .expect("describe instances");
        if let Some(i) = out.reservations().iter().flat_map(|r| r.instances()).next() {
            return i.clone();
        }
        assert!(
            Instant::now() < deadline,
            "no instance launched for {name} in 60 s"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

async fn instance_user_data(ec2: &aws_sdk_ec2::Client, id: &str) -> String {
    let attr = ec2
        .describe_instance_attribute()
        .instance_id(id)
        .attribute(ec2t::InstanceAttributeName::UserData)
        .send()
        .await
        .expect("describe instance attribute");
    unb64(
        attr.user_data()
            .and_then(|u| u.value())
            .expect("the instance has user data"),
    )
}

/// The latest version of the launch template Flotilla created whose name starts with `prefix`
/// and has exactly `suffix` after the environment's short id (`""` or `-o1`, ...).
async fn flotilla_template(
    ec2: &aws_sdk_ec2::Client,
    env: &str,
    suffix: &str,
) -> (String, ec2t::ResponseLaunchTemplateData) {
    let prefix = format!("flotilla-{env}-");
    let all = ec2
        .describe_launch_templates()
        .send()
        .await
        .expect("describe launch templates");
    let t = all
        .launch_templates()
        .iter()
        .find(|t| {
            t.launch_template_name().is_some_and(|n| {
                n.strip_prefix(&prefix).is_some_and(|rest| {
                    // The short id has no '-'; what follows it is the suffix.
                    rest.split_once('-')
                        .map_or(suffix.is_empty(), |(_, s)| format!("-{s}") == suffix)
                })
            })
        })
        .unwrap_or_else(|| panic!("no template {prefix}*{suffix} among {all:?}"));
    let name = t.launch_template_name().unwrap_or_default().to_string();
    let v = ec2
        .describe_launch_template_versions()
        .launch_template_name(&name)
        .versions("$Latest")
        .send()
        .await
        .expect("describe launch template versions");
    let data = v.launch_template_versions()[0]
        .launch_template_data()
        .expect("template data")
        .clone();
    (name, data)
}

async fn wait_invalid(c: &aws_sdk_batch::Client, name: &str) -> String {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let d = describe_ce(c, name).await;
        match d.status() {
            Some(CeStatus::Invalid) => return d.status_reason().unwrap_or_default().to_string(),
            Some(CeStatus::Valid) => panic!("{name} became VALID: {d:?}"),
            _ if Instant::now() > deadline => panic!("{name} not INVALID in 30 s: {d:?}"),
            _ => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_users_template_is_merged_into_the_one_instances_launch_from() {
    let emu = Emulator::start();
    let server = start(&emu, 300, &[]);
    let c = server.client();
    let raw = server.raw();
    let ec2 = ec2_client(&emu).await;
    let subnet = default_subnet(&emu).await;
    ec2.create_launch_template()
        .launch_template_name("big-disk")
        .launch_template_data(
            ec2t::RequestLaunchTemplateData::builder()
                .block_device_mappings(
                    ec2t::LaunchTemplateBlockDeviceMappingRequest::builder()
                        .device_name("/dev/xvda")
                        .ebs(
                            ec2t::LaunchTemplateEbsBlockDeviceRequest::builder()
                                .volume_size(200)
                                .volume_type(ec2t::VolumeType::Gp3)
                                .build(),
                        )
                        .build(),
                )
                .metadata_options(
                    ec2t::LaunchTemplateInstanceMetadataOptionsRequest::builder()
                        .http_tokens(ec2t::LaunchTemplateHttpTokensState::Required)
                        .http_put_response_hop_limit(2)
                        .build(),
                )
                .key_name("their-key")
                .user_data(b64(&mime(THEIR_PART)))
                .build(),
        )
        .send()
        .await
        .expect("create the user's template");

    let r = raw
        .post(
            "CreateComputeEnvironment",
            &env(
                "lt",
                &subnet,
                "c5.large",
                2,
                json!({"launchTemplateName": "big-disk"}),
            ),
        )
        .await;
    assert_eq!(r.status, 200, "{r:?}");
    wait_valid(&c, "lt").await;
    let shown = describe_ce(&c, "lt").await;
    let spec = shown
        .compute_resources()
        .and_then(|r| r.launch_template())
        .expect("the environment shows its launch template");
    assert_eq!(spec.launch_template_name(), Some("big-disk"));

    // The template Flotilla launches from: the user's disk and metadata options, the
    // environment's settings, both user-data parts.
    let (_, data) = flotilla_template(&ec2, "lt", "").await;
    let root = &data.block_device_mappings()[0];
    assert_eq!(root.device_name(), Some("/dev/xvda"));
    assert_eq!(root.ebs().and_then(|e| e.volume_size()), Some(200));
    assert_eq!(
        data.metadata_options().and_then(|m| m.http_tokens()),
        Some(&ec2t::LaunchTemplateHttpTokensState::Required)
    );
    assert_eq!(
        data.key_name(),
        Some("their-key"),
        "kept: the environment names none"
    );
    assert_eq!(
        data.iam_instance_profile().and_then(|p| p.name()),
        Some("ecsInstanceRole")
    );

    // The launched instance: the 200 GiB volume and both parts of its user data.
    let instance = launched(&ec2, "lt").await;
    let id = instance.instance_id().unwrap_or_default().to_string();
    let volume = instance
        .block_device_mappings()
        .iter()
        .find(|m| m.device_name() == Some("/dev/xvda"))
        .and_then(|m| m.ebs())
        .and_then(|e| e.volume_id())
        .unwrap_or_else(|| panic!("no /dev/xvda on {instance:?}"))
        .to_string();
    let volumes = ec2
        .describe_volumes()
        .volume_ids(&volume)
        .send()
        .await
        .expect("describe volumes");
    assert_eq!(volumes.volumes()[0].size(), Some(200));
    let text = instance_user_data(&ec2, &id).await;
    assert!(
        text.starts_with("MIME-Version: 1.0\nContent-Type: multipart/mixed; boundary="),
        "{text}"
    );
    assert_eq!(
        text.matches("Content-Type: text/x-shellscript").count(),
        2,
        "{text}"
    );
    let theirs = text.find("formatting the scratch disk").expect(&text);
    let ours = text.find("ECS_CLUSTER=flotilla-lt-").expect(&text);
    assert!(theirs < ours, "the user's part runs first: {text}");

    // The instance joined the environment's cluster from that user data: a job runs on it.
    create_queue(
        &c,
        "lt-q",
        shown.compute_environment_arn().unwrap_or_default(),
    )
    .await;
    register_def(&c, "d").await;
    let ids = vec![common::aws::submit(&c, "lt-q", "d", "j", 1, 1).await];
    let jobs = drive(&c, &emu, &ids, 2, 120, |_, _| Some(0)).await;
    assert_eq!(jobs[0].status, Some(JobStatus::Succeeded), "{jobs:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_override_template_serves_the_types_it_targets_with_its_own_ami() {
    let emu = Emulator::start();
    let server = start(&emu, 300, &[]);
    let c = server.client();
    let raw = server.raw();
    let ec2 = ec2_client(&emu).await;
    let subnet = default_subnet(&emu).await;
    let gpu_ami = ssm_value(
        &emu,
        "/aws/service/ecs/optimized-ami/amazon-linux-2023/gpu/recommended/image_id",
    )
    .await;
    for (name, script, image) in [
        ("base", "#!/bin/bash\necho base-template\n", None),
        (
            "compute",
            "#!/bin/bash\necho override-template\n",
            Some(gpu_ami.clone()),
        ),
    ] {
        ec2.create_launch_template()
            .launch_template_name(name)
            .launch_template_data(
                ec2t::RequestLaunchTemplateData::builder()
                    .set_image_id(image)
                    .user_data(b64(script))
                    .build(),
            )
            .send()
            .await
            .expect("create template");
    }
    let r = raw
        .post(
            "CreateComputeEnvironment",
            &env(
                "ov",
                &subnet,
                "c5.large",
                2,
                json!({"launchTemplateName": "base", "version": "$Latest", "overrides": [
                    {"launchTemplateName": "compute", "targetInstanceTypes": ["c5"]}]}),
            ),
        )
        .await;
    assert_eq!(r.status, 200, "{r:?}");
    wait_valid(&c, "ov").await;
    let instance = launched(&ec2, "ov").await;
    assert_eq!(instance.image_id(), Some(gpu_ami.as_str()));
    let text = instance_user_data(&ec2, instance.instance_id().unwrap_or_default()).await;
    assert!(text.contains("override-template"), "{text}");
    assert!(!text.contains("base-template"), "{text}");
    assert!(text.contains("ECS_CLUSTER=flotilla-ov-"), "{text}");
    // Both templates exist, the base one merged from "base".
    let (_, base) = flotilla_template(&ec2, "ov", "").await;
    assert!(unb64(base.user_data().unwrap_or_default()).contains("base-template"));
    let (_, over) = flotilla_template(&ec2, "ov", "-o1").await;
    assert_eq!(over.image_id(), Some(gpu_ami.as_str()));
    // DescribeComputeEnvironments shows the AMI the type launches with.
    let shown = describe_ce(&c, "ov").await;
    let amis: Vec<_> = shown
        .compute_resources()
        .map(|r| r.ec2_configuration())
        .unwrap_or_default()
        .iter()
        .filter_map(|e| e.image_id_override())
        .collect();
    assert_eq!(amis, [gpu_ami.as_str()]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn templates_ec2_refuses_or_flotilla_cannot_carry_make_the_environment_invalid() {
    let emu = Emulator::start();
    let server = start(&emu, 300, &[]);
    let c = server.client();
    let raw = server.raw();
    let ec2 = ec2_client(&emu).await;
    let subnet = default_subnet(&emu).await;
    ec2.create_launch_template()
        .launch_template_name("public-ip")
        .launch_template_data(
            ec2t::RequestLaunchTemplateData::builder()
                .network_interfaces(
                    ec2t::LaunchTemplateInstanceNetworkInterfaceSpecificationRequest::builder()
                        .device_index(0)
                        .associate_public_ip_address(true)
                        .build(),
                )
                .build(),
        )
        .send()
        .await
        .expect("create template");
    ec2.create_launch_template()
        .launch_template_name("not-a-script")
        .launch_template_data(
            ec2t::RequestLaunchTemplateData::builder()
                .user_data(b64("mount /dev/xvdb /scratch\n"))
                .build(),
        )
        .send()
        .await
        .expect("create template");
    for (name, lt, want) in [
        (
            "missing",
            json!({"launchTemplateName": "nope"}),
            "InvalidLaunchTemplateName.NotFoundException",
        ),
        (
            "nic",
            json!({"launchTemplateName": "public-ip"}),
            "sets NetworkInterfaces",
        ),
        (
            "text",
            json!({"launchTemplateName": "not-a-script"}),
            "UserData is neither a MIME multi-part document",
        ),
    ] {
        let r = raw
            .post(
                "CreateComputeEnvironment",
                &env(name, &subnet, "c5.large", 0, lt),
            )
            .await;
        assert_eq!(r.status, 200, "{r:?}");
        let reason = wait_invalid(&c, name).await;
        assert!(
            reason.starts_with("CLIENT_ERROR - computeResources.launchTemplate")
                && reason.contains(want),
            "{name}: {reason}"
        );
    }
    // Nothing was launched for any of them.
    assert!(live_instances(&emu.state().await).is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_launch_template_specifications_are_refused_by_name() {
    let emu = Emulator::start();
    let server = start(&emu, 300, &[]);
    let raw = server.raw();
    let subnet = default_subnet(&emu).await;
    for (lt, field) in [
        (
            json!({"launchTemplateId": "lt-0123", "launchTemplateName": "x"}),
            "computeResources.launchTemplate: give launchTemplateId or launchTemplateName, not both",
        ),
        (
            json!({"version": "$Latest"}),
            "computeResources.launchTemplate: launchTemplateId or launchTemplateName is required",
        ),
        (
            json!({"launchTemplateName": "x", "version": "newest"}),
            "computeResources.launchTemplate.version",
        ),
        (
            json!({"launchTemplateName": "x", "userdataType": "EKS_NODEADM"}),
            "userdataType",
        ),
        (
            json!({"launchTemplateName": "x", "overrides": [
                {"launchTemplateName": "y", "targetInstanceTypes": ["m5.large"]}]}),
            "computeResources.launchTemplate.overrides[0].targetInstanceTypes",
        ),
    ] {
        raw.post(
            "CreateComputeEnvironment",
            &env("bad", &subnet, "c5.large", 0, lt),
        )
        .await
        .assert_client_error(field);
    }
    raw.post(
        "CreateComputeEnvironment",
        &json!({"computeEnvironmentName": "local", "type": "MANAGED", "computeResources": {
            "type": "LOCAL", "launchTemplate": {"launchTemplateName": "x"}}}),
    )
    .await
    .assert_client_error("computeResources.launchTemplate");
}
