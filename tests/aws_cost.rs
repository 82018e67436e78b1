//! Cost per job against the AWS emulator: two jobs sharing one instance are charged the price
//! of the instance × their share of it × how long each ran; the fleet's bill is the instance's
//! hours × its price from launch to termination, and what no job's share covers is idle.

mod common;

use aws_sdk_batch::types::*;
use common::aws::*;
use common::emulator::Emulator;
use common::*;
use serde_json::Value;
use std::time::{Duration, Instant};

const TYPE: &str = "m5.large";

fn close(a: f64, b: f64) -> bool {
    (a - b).abs() <= 1e-9 * a.abs().max(b.abs()).max(1e-9)
}

fn cost_report(server: &Server, from: i64, to: i64) -> Value {
    let (ok, out, err) = cli(
        server,
        &[
            "cost",
            "--from",
            &from.to_string(),
            "--to",
            &to.to_string(),
            "--output",
            "json",
        ],
    );
    assert!(ok, "flotilla cost failed: {err}");
    serde_json::from_str(&out).expect("cost report is JSON")
}

fn f(v: &Value) -> f64 {
    v.as_f64()
        .unwrap_or_else(|| panic!("expected a number: {v}"))
}

#[tokio::test(flavor = "multi_thread")]
async fn two_jobs_sharing_an_instance_are_charged_their_shares_and_the_rest_is_idle() {
    shared_instance(CrType::Ec2).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn spot_jobs_are_charged_the_spot_price_their_instance_was_bought_at() {
    shared_instance(CrType::Spot).await;
}

async fn shared_instance(cr_type: CrType) {
    let spot = cr_type == CrType::Spot;
    let emu = Emulator::start();
    // Idle instances are retired after 2 s, so the instance's bill ends in the test.
    let server = start(&emu, 2, &[]);
    let c = server.client();
    // One instance type of 2 vCPUs and at most 2 vCPUs: both 1-vCPU jobs share one instance.
    let ce = create_ce_of_type(&c, &emu, "ce", cr_type, TYPE, 2).await;
    create_queue(&c, "q", &ce).await;
    register_def(&c, "d").await;
    let a = common::aws::submit(&c, "q", "d", "a", 1, 1).await;
    let b = common::aws::submit(&c, "q", "d", "b", 1, 1).await;
    let running = wait_running(&c, &[a.clone(), b.clone()]).await;
    let state = emu.state().await;
    let placed: Vec<String> = running
        .iter()
        .map(|j| {
            let arn = j.container().and_then(|c| c.task_arn()).expect("task ARN");
            tasks(&state)
                .iter()
                .find(|t| t["taskArn"] == arn)
                .and_then(|t| t["containerInstanceArn"].as_str())
                .expect("the task is on a container instance")
                .to_string()
        })
        .collect();
    assert_eq!(placed[0], placed[1], "both jobs run on the one instance");
    // The console's overview counts the instance by type and purchase option.
    // (The overview's figures may be up to 2 s old.)
    let session = console_session(&server).await;
    let kind = format!("1 × {TYPE} {}", if spot { "Spot" } else { "on-demand" });
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let overview = console_page(&server, &session, "/console").await;
        if overview.contains(&kind) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{kind} not on the overview:\n{overview}"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let ci = state["containerInstances"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|ci| ci["containerInstanceArn"] == placed[0].as_str())
        .expect("the container instance is in the emulator")
        .clone();
    let (cpu, mem) = (f(&ci["registered"]["cpu"]), f(&ci["registered"]["memory"]));
    let instance_id = ci["instanceId"].as_str().expect("instance id").to_string();
    // Each job asks for 1 vCPU (1024 CPU units) and 1024 MiB: its share is the larger fraction.
    let share = (1024.0 / cpu).max(1024.0 / mem);
    let on_demand = flotilla::provisioner::builtin_catalog()
        .get(TYPE)
        .expect("the catalog prices the type")
        .on_demand_price_per_hour;
    // Spot: the price the region reported for the type (the emulator's Spot price history),
    // below on-demand.
    let price = if spot {
        let history = ec2_client(&emu)
            .await
            .describe_spot_price_history()
            .instance_types(aws_sdk_ec2::types::InstanceType::from(TYPE))
            .send()
            .await
            .expect("spot price history");
        let quoted: Vec<f64> = history
            .spot_price_history()
            .iter()
            .filter_map(|p| p.spot_price()?.parse().ok())
            .collect();
        assert!(!quoted.is_empty(), "the emulator quotes {TYPE}");
        quoted
    } else {
        vec![on_demand]
    };

    // a ends first, b later: different durations, the same share.
    let task = |j: &JobDetail| {
        j.container()
            .and_then(|c| c.task_arn())
            .unwrap()
            .to_string()
    };
    let by_name = |n: &str| running.iter().find(|j| j.job_name() == Some(n)).unwrap();
    tokio::time::sleep(Duration::from_millis(700)).await;
    emu.complete(&task(by_name("a")), 0).await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    emu.complete(&task(by_name("b")), 0).await;
    for id in [&a, &b] {
        wait_for(&c, id, &[JobStatus::Succeeded], 30).await;
    }
    wait_drained(&c, &emu, "ce", 60).await;

    // Each attempt's cost, as `flotilla jobs describe` shows it.
    let (ok, out, err) = cli(&server, &["jobs", "describe", &a, &b, "--output", "json"]);
    assert!(ok, "jobs describe: {err}");
    let described: Value = serde_json::from_str(&out).unwrap();
    let mut job_costs = 0.0;
    let mut last_stop = 0;
    let mut hourly: Option<f64> = None;
    for j in described["jobs"].as_array().unwrap() {
        let attempt = &j["attempts"][0];
        let cost = &attempt["flotillaCost"];
        assert_eq!(cost["instanceId"], instance_id.as_str(), "{j}");
        assert_eq!(cost["instanceType"], TYPE);
        assert_eq!(
            cost["purchaseOption"],
            if spot { "SPOT" } else { "ON_DEMAND" }
        );
        let charged = f(&cost["pricePerHour"]);
        assert!(
            price.iter().any(|p| close(*p, charged)),
            "{cost} vs {price:?}"
        );
        assert!(
            !spot || charged < on_demand,
            "{charged} vs on-demand {on_demand}"
        );
        // Both attempts on the instance are charged at its one price.
        let price = *hourly.get_or_insert(charged);
        assert!(close(price, charged));
        assert!(close(f(&cost["share"]), share), "{cost} vs share {share}");
        let ms = attempt["stoppedAt"].as_i64().unwrap() - attempt["startedAt"].as_i64().unwrap();
        assert!(ms > 0);
        let expected = price * share * ms as f64 / 3_600_000.0;
        assert!(close(f(&cost["cost"]), expected), "{cost} vs {expected}");
        job_costs += expected;
        last_stop = last_stop.max(attempt["stoppedAt"].as_i64().unwrap());
    }
    // The console's job page shows the same figures.
    for j in described["jobs"].as_array().unwrap() {
        let id = j["jobId"].as_str().unwrap();
        let page = console_page(&server, &session, &format!("/console/jobs/{id}")).await;
        let shown = format!(
            "${:.4} on {instance_id}",
            f(&j["attempts"][0]["flotillaCost"]["cost"])
        );
        assert!(
            page.contains(&shown),
            "{shown} not on the job page:\n{page}"
        );
    }
    let (ok, table, _) = cli(&server, &["jobs", "describe", &a]);
    assert!(
        ok && table.contains("COST") && table.contains(&instance_id),
        "{table}"
    );

    // The ledger closes the instance at the driver's first observation without it.
    let deadline = Instant::now() + Duration::from_secs(30);
    let (report, to) = loop {
        let to = flotilla::util::time::now_ms();
        let r = cost_report(&server, 0, to);
        // Closed before `to` (the driver may close it while the report is asked for).
        if r["instances"][0]["terminatedAt"]
            .as_i64()
            .is_some_and(|t| t <= to)
        {
            break (r, to);
        }
        assert!(Instant::now() < deadline, "the instance is not closed: {r}");
        tokio::time::sleep(Duration::from_millis(300)).await;
    };
    let instances = report["instances"].as_array().unwrap();
    assert_eq!(instances.len(), 1, "{report}");
    let i = &instances[0];
    assert_eq!(i["instanceId"], instance_id.as_str());
    let launched = i["launchedAt"].as_i64().unwrap();
    let terminated = i["terminatedAt"].as_i64().unwrap();
    // Launch time is EC2's, not when Flotilla first saw the instance.
    let ec2 = ec2_client(&emu)
        .await
        .describe_instances()
        .instance_ids(&instance_id)
        .send()
        .await
        .expect("describe instances");
    let ec2_launch = ec2.reservations()[0].instances()[0]
        .launch_time()
        .and_then(|t| t.to_millis().ok())
        .expect("launch time");
    assert_eq!(launched, ec2_launch);
    assert!(terminated >= last_stop, "billed until after its last job");
    let price = hourly.expect("two priced attempts");
    assert!(
        close(f(&i["pricePerHour"]), price),
        "the instance's price is its jobs'"
    );
    assert_eq!(i["purchaseOption"], if spot { "SPOT" } else { "ON_DEMAND" });
    let bill = price * (terminated - launched) as f64 / 3_600_000.0;
    assert!(close(f(&i["cost"]), bill), "{i} vs {bill}");
    assert!(close(f(&report["fleetCost"]), bill));
    assert!(close(f(&report["jobCost"]), job_costs), "{report}");
    assert!(close(f(&report["jobCost"]) + f(&report["idleCost"]), bill));
    assert!(
        f(&report["idleCost"]) > 0.0,
        "boot time and the free half are idle"
    );
    let groups = report["groups"].as_array().unwrap();
    assert_eq!(groups.len(), 1, "{report}");
    assert_eq!(groups[0]["attempts"], 2);
    assert!(
        groups[0]["jobQueue"]
            .as_str()
            .unwrap()
            .ends_with("job-queue/q")
    );
    let env = &report["environments"][0];
    assert_eq!(env["computeEnvironment"], "ce");
    assert!(close(
        f(&env["fleetCost"]) - f(&env["jobCost"]),
        f(&env["idleCost"])
    ));

    // Ranges add up: the report of two adjacent ranges sums to that of both.
    let mid = (launched + last_stop) / 2;
    let (left, right) = (cost_report(&server, 0, mid), cost_report(&server, mid, to));
    for k in ["jobCost", "fleetCost", "idleCost"] {
        assert!(
            (f(&left[k]) + f(&right[k]) - f(&report[k])).abs() < 1e-12,
            "{k}: {} + {} != {}",
            left[k],
            right[k],
            report[k]
        );
    }

    // The metric counts what the attempts cost.
    let metrics = reqwest::get(format!("{}/metrics", server.endpoint))
        .await
        .expect("GET /metrics")
        .text()
        .await
        .unwrap();
    let counted: f64 = metrics
        .lines()
        .find_map(|l| l.strip_prefix("flotilla_job_cost_dollars_total{queue=\"q\"} "))
        .unwrap_or_else(|| panic!("no job cost metric:\n{metrics}"))
        .parse()
        .unwrap();
    assert!(
        (counted - job_costs).abs() < 1e-9,
        "{counted} vs {job_costs}"
    );

    // A bad range is refused naming the field.
    let (ok, _, err) = cli(&server, &["cost", "--from", "yesterday"]);
    assert!(!ok && err.contains("--from"), "{err}");
    let raw = server
        .raw()
        .send("GET", "/cost?from=x", None, Vec::new())
        .await;
    assert_eq!(raw.status, 400);
    assert!(raw.message().starts_with("from:"), "{}", raw.message());
}
