//! Per-environment fleet settings against the AWS emulator: `scalingPolicy.minScaleDownDelayMinutes`
//! keeps an environment's instances that have run a job past the server's idle timeout, while an
//! environment without it scales in; `placementGroup` is in the launch template every instance
//! launches from; both are checked, and refused on a LOCAL environment.

mod common;

use aws_sdk_batch::types::*;
use common::aws::*;
use common::emulator::Emulator;
use common::*;
use serde_json::json;
use std::time::{Duration, Instant};

fn in_env(instances: &[serde_json::Value], env: &str) -> usize {
    let prefix = format!("flotilla-{env}-");
    instances
        .iter()
        .filter(|i| {
            i["ecsCluster"]
                .as_str()
                .is_some_and(|c| c.starts_with(&prefix))
        })
        .count()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_scale_down_delay_keeps_worked_instances_that_the_server_default_retires() {
    let emu = Emulator::start();
    // The server's own idle timeout: 2 s.
    let server = start(&emu, 2, &[]);
    let c = server.client();
    let plain = create_managed_ce(&c, &emu, "plain", CrType::Ec2, 0, 8).await;
    let kept = create_managed_ce(&c, &emu, "kept", CrType::Ec2, 0, 8).await;
    c.update_compute_environment()
        .compute_environment(&kept)
        .compute_resources(
            ComputeResourceUpdate::builder()
                .scaling_policy(
                    ComputeScalingPolicy::builder()
                        .min_scale_down_delay_minutes(20)
                        .build(),
                )
                .build(),
        )
        .send()
        .await
        .expect("update with a scaling policy");
    wait_valid(&c, "kept").await;
    let d = describe_ce(&c, "kept").await;
    assert_eq!(
        d.compute_resources()
            .and_then(|r| r.scaling_policy())
            .and_then(|p| p.min_scale_down_delay_minutes()),
        Some(20)
    );
    create_queue(&c, "plain-q", &plain).await;
    create_queue(&c, "kept-q", &kept).await;
    register_def(&c, "d").await;
    let ids = vec![
        common::aws::submit(&c, "plain-q", "d", "p", 1, 1).await,
        common::aws::submit(&c, "kept-q", "d", "k", 1, 1).await,
    ];
    let jobs = drive(&c, &emu, &ids, 16, 120, |_, _| Some(0)).await;
    assert!(jobs.iter().all(|j| j.status == Some(JobStatus::Succeeded)));

    // Both instances ran a job and are idle now: the plain one goes after 2 s.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let live = live_instances(&emu.state().await);
        if in_env(&live, "plain") == 0 {
            assert_eq!(in_env(&live, "kept"), 1, "{live:?}");
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the plain environment never scaled in"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // Well past the server's 2 s, the kept one stays for its 20 minutes.
    tokio::time::sleep(Duration::from_secs(6)).await;
    let live = live_instances(&emu.state().await);
    assert_eq!(in_env(&live, "kept"), 1, "{live:?}");

    // 0 unsets the delay (AWS's convention): the kept instance goes too.
    c.update_compute_environment()
        .compute_environment(&kept)
        .compute_resources(
            ComputeResourceUpdate::builder()
                .scaling_policy(
                    ComputeScalingPolicy::builder()
                        .min_scale_down_delay_minutes(0)
                        .build(),
                )
                .build(),
        )
        .send()
        .await
        .expect("unset the delay");
    wait_drained(&c, &emu, "kept", 60).await;
}

/// The emulator (moto) implements neither placement groups nor CreateFleet's placement, so the
/// group is checked where Flotilla puts it: the launch template version its fleets launch from.
#[tokio::test(flavor = "multi_thread")]
async fn instances_launch_from_a_template_that_names_the_placement_group() {
    let emu = Emulator::start();
    let server = start(&emu, 60, &[]);
    let c = server.client();
    let mut cr = ComputeResource::builder()
        .r#type(CrType::Ec2)
        .minv_cpus(2)
        .maxv_cpus(8)
        .subnets(default_subnet(&emu).await)
        .instance_role("ecsInstanceRole")
        .placement_group("tight")
        .allocation_strategy(CrAllocationStrategy::BestFitProgressive);
    for t in TYPES {
        cr = cr.instance_types(*t);
    }
    c.create_compute_environment()
        .compute_environment_name("placed")
        .r#type(CeType::Managed)
        .compute_resources(cr.build())
        .send()
        .await
        .expect("create");
    wait_valid(&c, "placed").await;
    // minvCpus 2 launches an instance with nothing to run, from the template.
    let deadline = Instant::now() + Duration::from_secs(60);
    while in_env(&live_instances(&emu.state().await), "placed") == 0 {
        assert!(Instant::now() < deadline, "no instance launched");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let ec2 = ec2_client(&emu).await;
    let templates = ec2
        .describe_launch_templates()
        .send()
        .await
        .expect("describe launch templates");
    let template = templates
        .launch_templates()
        .iter()
        .find(|t| {
            t.launch_template_name()
                .is_some_and(|n| n.starts_with("flotilla-placed-"))
        })
        .expect("the environment's launch template");
    let versions = ec2
        .describe_launch_template_versions()
        .launch_template_id(template.launch_template_id().unwrap_or_default())
        .versions("$Latest")
        .send()
        .await
        .expect("describe launch template versions");
    let data = versions.launch_template_versions()[0]
        .launch_template_data()
        .expect("template data");
    assert_eq!(
        data.placement().and_then(|p| p.group_name()),
        Some("tight"),
        "{data:?}"
    );

    // Moving the environment to another group makes a new version that names it.
    let arn = describe_ce(&c, "placed")
        .await
        .compute_environment_arn()
        .unwrap_or_default()
        .to_string();
    c.update_compute_environment()
        .compute_environment(arn)
        .compute_resources(
            ComputeResourceUpdate::builder()
                .placement_group("spread")
                .build(),
        )
        .send()
        .await
        .expect("update the placement group");
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let versions = ec2
            .describe_launch_template_versions()
            .launch_template_id(template.launch_template_id().unwrap_or_default())
            .versions("$Latest")
            .send()
            .await
            .expect("describe launch template versions");
        let group = versions.launch_template_versions()[0]
            .launch_template_data()
            .and_then(|d| d.placement())
            .and_then(|p| p.group_name())
            .map(str::to_string);
        if group.as_deref() == Some("spread") {
            break;
        }
        assert!(Instant::now() < deadline, "still {group:?}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn bad_or_misplaced_fleet_settings_are_refused_by_name() {
    let emu = Emulator::start();
    let server = start(&emu, 60, &[]);
    let raw = server.raw();
    let subnet = default_subnet(&emu).await;
    for (cr, field) in [
        (
            json!({"type": "EC2", "maxvCpus": 8, "instanceTypes": ["c5.large"], "subnets": [subnet],
                   "instanceRole": "ecsInstanceRole", "scalingPolicy": {"minScaleDownDelayMinutes": 5}}),
            "computeResources.scalingPolicy.minScaleDownDelayMinutes",
        ),
        (
            json!({"type": "LOCAL", "scalingPolicy": {"minScaleDownDelayMinutes": 30}}),
            "computeResources.scalingPolicy",
        ),
        (
            json!({"type": "LOCAL", "placementGroup": "tight"}),
            "computeResources.placementGroup",
        ),
    ] {
        let r = raw
            .post(
                "CreateComputeEnvironment",
                &json!({"computeEnvironmentName": "bad", "type": "MANAGED", "computeResources": cr}),
            )
            .await;
        r.assert_client_error(field);
    }
}
