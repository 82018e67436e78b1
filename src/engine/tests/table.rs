//! The job table alone: every transition keeps the indexes in step with the statuses.

use super::super::job::Job;
use super::super::table::{JobTable, Placement};
use crate::model::{
    ContainerDetail, ContainerProperties, JobDetail, JobStatus, ResourceRequirement,
};
use std::sync::Arc;

fn job(id: &str, status: JobStatus, vcpus: &str) -> Job {
    let props = ContainerProperties {
        resource_requirements: Some(vec![ResourceRequirement {
            rtype: "VCPU".into(),
            value: vcpus.into(),
        }]),
        ..Default::default()
    };
    let d = JobDetail {
        job_id: id.into(),
        job_queue: "arn:q".into(),
        status,
        container: Some(ContainerDetail {
            properties: Arc::new(props),
            ..Default::default()
        }),
        ..Default::default()
    };
    Job::new(d, None)
}

fn place(env: &str, instance: Option<&str>) -> Placement {
    Placement {
        env: env.into(),
        instance: instance.map(str::to_string),
        task_id: "t".into(),
        host: None,
    }
}

#[test]
fn a_job_holds_capacity_from_starting_until_it_leaves_running() {
    let mut t = JobTable::default();
    t.insert(job("a", JobStatus::Runnable, "2"));
    assert_eq!(t.runnable().len(), 1);
    assert!(t.start("a", place("ce", Some("ci-1")), 10));
    t.assert_consistent();
    assert_eq!(t.runnable().len(), 0);
    assert_eq!(t.used_on_env("ce").milli_vcpus, 2000);
    assert_eq!(t.used_on_instance("ci-1").milli_vcpus, 2000);
    assert!(t.transition("a", JobStatus::Running, 20));
    assert_eq!(t.get("a").unwrap().d.started_at, Some(20));
    assert_eq!(t.used_on_env("ce").milli_vcpus, 2000);
    // A retry gives the capacity back and queues the job again.
    assert!(t.transition("a", JobStatus::Runnable, 30));
    t.assert_consistent();
    assert_eq!(t.used_on_env("ce").milli_vcpus, 0);
    assert!(t.on_instance().is_empty());
    assert_eq!(t.runnable().len(), 1);
    let a = t.get("a").unwrap();
    assert_eq!(
        (a.d.started_at, a.d.internal.runnable_since),
        (None, Some(30))
    );
    assert!(a.d.internal.compute_environment.is_none());
}

#[test]
fn a_final_job_leaves_every_index_and_waits_for_its_write() {
    let mut t = JobTable::default();
    t.insert(job("a", JobStatus::Runnable, "1"));
    t.insert(job("b", JobStatus::Pending, "1"));
    t.start("a", place("ce", None), 1);
    t.take_dirty();
    assert!(t.transition("a", JobStatus::Succeeded, 5));
    assert!(t.transition("b", JobStatus::Failed, 5));
    t.assert_consistent();
    assert_eq!(t.len(), 0);
    assert_eq!(t.used_on_env("ce").milli_vcpus, 0);
    // Held until written, then forgotten; a final job never moves again.
    assert_eq!(t.held("a").unwrap().d.stopped_at, Some(5));
    let mut dirty = t.take_dirty();
    dirty.sort();
    assert_eq!(dirty, ["a", "b"]);
    assert!(!t.transition("a", JobStatus::Runnable, 6));
    t.forget_all_finished();
    assert!(t.held("a").is_none());
}

#[test]
fn final_and_duplicate_jobs_are_not_inserted() {
    let mut t = JobTable::default();
    assert!(!t.insert(job("done", JobStatus::Succeeded, "1")));
    assert!(t.insert(job("a", JobStatus::Running, "1")));
    assert!(!t.insert(job("a", JobStatus::Runnable, "1")));
    t.assert_consistent();
    assert_eq!(t.running().count(), 1);
}

#[test]
fn the_runnable_backlog_is_counted_by_need_as_jobs_come_and_go() {
    let mut t = JobTable::default();
    for i in 0..5 {
        t.insert(job(&format!("small-{i}"), JobStatus::Runnable, "1"));
    }
    t.insert(job("big", JobStatus::Runnable, "4"));
    t.insert(job("running", JobStatus::Running, "4"));
    let counts = |t: &JobTable| {
        let mut v: Vec<(u64, bool, u64)> = t
            .runnable()
            .needs
            .get("arn:q")
            .into_iter()
            .flatten()
            .map(|(&(need, avoid), &n)| (need.milli_vcpus, avoid, n))
            .collect();
        v.sort_unstable();
        v
    };
    assert_eq!(counts(&t), vec![(1000, false, 5), (4000, false, 1)]);
    assert!(t.start("small-0", place("ce", None), 10));
    assert!(t.start("big", place("ce", None), 10));
    t.assert_consistent();
    assert_eq!(counts(&t), vec![(1000, false, 4)]);
    // A retry counts again; a job avoiding Spot counts apart.
    assert!(t.transition("big", JobStatus::Running, 11));
    if let Some(j) = t.get_mut("big") {
        j.d.internal.avoid_spot = Some(true);
    }
    assert!(t.transition("big", JobStatus::Runnable, 12));
    t.assert_consistent();
    assert_eq!(counts(&t), vec![(1000, false, 4), (4000, true, 1)]);
    for i in 1..5 {
        assert!(t.transition(&format!("small-{i}"), JobStatus::Failed, 13));
    }
    assert!(t.transition("big", JobStatus::Failed, 13));
    t.assert_consistent();
    assert!(t.runnable().needs.is_empty(), "no empty entries are left");
}
