//! The engine in-process: a temporary SQLite store, a [`FakeRuntime`] that records what it is
//! asked to start and signal, runtime events the test chooses, and a [`ManualClock`]. No server,
//! no sleeping for timeouts.
//!
//! One file per concern: `retries`, `arrays`, `dependencies`, `timeouts`, `commands`,
//! `fair_share`, `recovery`, `consumables`.

mod arrays;
mod commands;
mod consumables;
mod dependencies;
mod fair_share;
mod job_events;
mod recovery;
mod retries;
mod table;
mod timeouts;

use super::{Engine, EngineConfig, channel};
use crate::batch::{Batch, BatchOptions};
use crate::compute::{
    AttemptSpec, ExpectedAttempt, Runtime, RuntimeError, RuntimeEvent, StopSignal,
};
use crate::model::{JobDetail, JobStatus};
use crate::util::time::ManualClock;
use serde_json::{Value, json};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::{Notify, mpsc, watch};

/// How long a test waits for the engine to get somewhere before it fails. Generous: the
/// machine may be busy; a passing test never waits this long.
const PATIENCE: Duration = Duration::from_secs(20);

/// A runtime that runs nothing: it records each call and lets the test send the events.
#[derive(Default)]
pub(super) struct FakeRuntime {
    pub started: Mutex<Vec<AttemptSpec>>,
    pub signals: Mutex<Vec<(String, u32, StopSignal)>>,
    pub recovered: Mutex<Vec<ExpectedAttempt>>,
    /// Attempts whose end the engine reported stored.
    pub ends_stored: Mutex<Vec<(String, u32)>>,
    changed: Notify,
}

#[async_trait::async_trait]
impl Runtime for FakeRuntime {
    fn name(&self) -> &'static str {
        "fake"
    }

    async fn start(&self, spec: AttemptSpec) -> Result<(), RuntimeError> {
        self.started.lock().unwrap().push(spec);
        self.changed.notify_waiters();
        Ok(())
    }

    async fn stop(
        &self,
        job_id: &str,
        attempt: u32,
        signal: StopSignal,
    ) -> Result<(), RuntimeError> {
        self.signals
            .lock()
            .unwrap()
            .push((job_id.to_string(), attempt, signal));
        self.changed.notify_waiters();
        Ok(())
    }

    async fn recover(&self, expected: Vec<ExpectedAttempt>) -> Result<(), RuntimeError> {
        self.recovered.lock().unwrap().extend(expected);
        Ok(())
    }

    fn end_stored(&self, job_id: &str, attempt: u32) {
        self.ends_stored
            .lock()
            .unwrap()
            .push((job_id.to_string(), attempt));
    }
}

/// An engine over a fresh store in a temporary directory.
pub(super) struct Harness {
    pub dir: tempfile::TempDir,
    pub batch: Arc<Batch>,
    pub rt: Arc<FakeRuntime>,
    pub clock: ManualClock,
    events: mpsc::Sender<RuntimeEvent>,
    stop: watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
}

/// The `local` environment's vCPUs in every harness (not the machine's, so tests do not
/// depend on it).
pub(super) const LOCAL_VCPUS: i32 = 4;

impl Harness {
    /// An engine with a LOCAL environment `local` of [`LOCAL_VCPUS`] vCPUs, a queue `default`
    /// and a job definition `step` (1 vCPU, 64 MiB).
    pub async fn new() -> Harness {
        let dir = tempfile::tempdir().unwrap();
        let h = Harness::open(dir, EngineConfig::default(), ManualClock::new(1_000_000)).await;
        h.call(
            "CreateComputeEnvironment",
            json!({
                "computeEnvironmentName": "local",
                "type": "MANAGED",
                "computeResources": {"type": "LOCAL", "maxvCpus": LOCAL_VCPUS}
            }),
        )
        .await;
        h.call(
            "CreateJobQueue",
            json!({
                "jobQueueName": "default",
                "priority": 1,
                "computeEnvironmentOrder": [{"order": 1, "computeEnvironment": "local"}]
            }),
        )
        .await;
        h.register("step", json!({})).await;
        h
    }

    /// An engine over the store in `dir` (new or left by an earlier harness).
    pub async fn open(dir: tempfile::TempDir, cfg: EngineConfig, clock: ManualClock) -> Harness {
        let url = format!("sqlite://{}", dir.path().join("flotilla.db").display());
        let store = crate::store::open(&url).await.unwrap();
        let (handle, inbox) = channel();
        let batch = Arc::new(
            Batch::open(
                store,
                "us-east-1".into(),
                "000000000000".into(),
                BatchOptions::default(),
                Some(Arc::new(handle)),
            )
            .await
            .unwrap(),
        );
        let rt = Arc::new(FakeRuntime::default());
        let (events, rx) = mpsc::channel(1000);
        let (stop, shutdown) = watch::channel(false);
        let task = Engine::start(
            inbox,
            batch.clone(),
            rt.clone(),
            rx,
            cfg,
            Arc::new(clock.clone()),
            shutdown,
        )
        .await
        .unwrap();
        Harness {
            dir,
            batch,
            rt,
            clock,
            events,
            stop,
            task,
        }
    }

    /// Stops the engine as a clean shutdown does and hands back its directory.
    pub async fn shut_down(self) -> (tempfile::TempDir, ManualClock) {
        let _ = self.stop.send(true);
        self.task.await.unwrap();
        (self.dir, self.clock)
    }

    /// An AWS Batch operation through the control plane, as the API calls it; panics on error.
    pub async fn call(&self, op: &str, body: Value) -> Value {
        self.try_call(op, body)
            .await
            .unwrap_or_else(|e| panic!("{op}: {e}"))
    }

    pub async fn try_call(&self, op: &str, body: Value) -> crate::error::BatchResult<Value> {
        fn v<T: serde::de::DeserializeOwned>(body: Value) -> T {
            serde_json::from_value(body).expect("a request the harness can parse")
        }
        let b = &self.batch;
        match op {
            "CreateComputeEnvironment" => b.create_compute_environment(v(body)).await,
            "CreateJobQueue" => b.create_job_queue(v(body)).await,
            "UpdateJobQueue" => b.update_job_queue(v(body)).await,
            "CreateSchedulingPolicy" => b.create_scheduling_policy(v(body)).await,
            "RegisterJobDefinition" => b.register_job_definition(v(body)).await,
            "SubmitJob" => b.submit_job(v(body)).await,
            "CreateConsumableResource" => b.create_consumable_resource(v(body)).await,
            "UpdateConsumableResource" => b.update_consumable_resource(v(body)).await,
            "DeleteConsumableResource" => {
                b.delete_consumable_resource(body["consumableResource"].as_str().unwrap())
                    .await
            }
            "DescribeConsumableResource" => {
                b.describe_consumable_resource(body["consumableResource"].as_str().unwrap())
                    .await
            }
            "CancelJob" | "TerminateJob" => {
                b.stop_job(
                    body["jobId"].as_str().unwrap(),
                    body["reason"].as_str().unwrap(),
                    op == "TerminateJob",
                )
                .await
            }
            "GetJobQueueSnapshot" => {
                b.job_queue_snapshot(body["jobQueue"].as_str().unwrap())
                    .await
            }
            _ => panic!("no such operation in the harness: {op}"),
        }
    }

    /// Registers container definition `name`: 1 vCPU, 64 MiB, plus the fields in `extra`.
    pub async fn register(&self, name: &str, extra: Value) {
        let mut def = json!({
            "jobDefinitionName": name,
            "type": "container",
            "containerProperties": {
                "image": "busybox",
                "command": ["true"],
                "resourceRequirements": [
                    {"type": "VCPU", "value": "1"},
                    {"type": "MEMORY", "value": "64"}
                ]
            }
        });
        for (k, val) in extra.as_object().unwrap() {
            def[k] = val.clone();
        }
        self.call("RegisterJobDefinition", def).await;
    }

    /// Submits a job of definition `step` to `default` with the fields in `extra`; its ID.
    pub async fn submit(&self, name: &str, extra: Value) -> String {
        let mut req = json!({"jobName": name, "jobQueue": "default", "jobDefinition": "step"});
        for (k, val) in extra.as_object().unwrap() {
            req[k] = val.clone();
        }
        let out = self.call("SubmitJob", req).await;
        out["jobId"].as_str().unwrap().to_string()
    }

    pub async fn describe(&self, id: &str) -> JobDetail {
        let out = self.batch.describe_jobs(&[id.to_string()]).await.unwrap();
        serde_json::from_value(out["jobs"][0].clone())
            .unwrap_or_else(|e| panic!("job {id}: {e}: {out}"))
    }

    /// Waits until job `id` is `status` (the store's view, as DescribeJobs answers).
    pub async fn wait_for(&self, id: &str, status: JobStatus) -> JobDetail {
        let deadline = tokio::time::Instant::now() + PATIENCE;
        loop {
            let d = self.describe(id).await;
            if d.status == status {
                return d;
            }
            if tokio::time::Instant::now() > deadline {
                panic!(
                    "job {id} is {} ({:?}), not {status}",
                    d.status, d.status_reason
                );
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    /// Waits until the runtime was asked to start `n` attempts in all; returns them all.
    pub async fn launches(&self, n: usize) -> Vec<AttemptSpec> {
        self.wait_until(|rt| rt.started.lock().unwrap().len() >= n, "launches")
            .await;
        self.rt.started.lock().unwrap().clone()
    }

    /// The launch of `attempt` of job `id`, once it happened.
    pub async fn launch_of(&self, id: &str, attempt: u32) -> AttemptSpec {
        let find = |rt: &FakeRuntime| {
            rt.started
                .lock()
                .unwrap()
                .iter()
                .find(|s| s.job_id == id && s.attempt == attempt)
                .cloned()
        };
        self.wait_until(|rt| find(rt).is_some(), "a launch").await;
        find(&self.rt).unwrap()
    }

    /// Waits until the runtime was sent `signal` for attempt `attempt` of `id`.
    pub async fn signalled(&self, id: &str, attempt: u32, signal: StopSignal) {
        self.wait_until(
            |rt| {
                rt.signals
                    .lock()
                    .unwrap()
                    .iter()
                    .any(|s| s.0 == id && s.1 == attempt && s.2 == signal)
            },
            "a signal",
        )
        .await;
    }

    async fn wait_until(&self, done: impl Fn(&FakeRuntime) -> bool, what: &str) {
        let deadline = tokio::time::Instant::now() + PATIENCE;
        while !done(&self.rt) {
            let wait = self.rt.changed.notified();
            if done(&self.rt) {
                break;
            }
            if tokio::time::timeout_at(deadline, wait).await.is_err() && !done(&self.rt) {
                panic!("no {what} within {PATIENCE:?}");
            }
        }
    }

    pub async fn event(&self, ev: RuntimeEvent) {
        self.events.send(ev).await.unwrap();
    }

    /// The runtime reports attempt `attempt` of `id` running.
    pub async fn started(&self, id: &str, attempt: u32) {
        self.event(RuntimeEvent::Started {
            job_id: id.to_string(),
            attempt,
            task_id: format!("task-{id}-{attempt}"),
        })
        .await;
    }

    /// The runtime reports attempt `attempt` of `id` exited with `code`.
    pub async fn exited(&self, id: &str, attempt: u32, code: i32) {
        self.event(RuntimeEvent::Exited {
            job_id: id.to_string(),
            attempt,
            exit_code: Some(code),
            reason: None,
        })
        .await;
    }

    /// Runs attempt `attempt` of `id` to exit code `code`: waits for its launch, reports it
    /// started, then exited.
    pub async fn run(&self, id: &str, attempt: u32, code: i32) {
        self.launch_of(id, attempt).await;
        self.started(id, attempt).await;
        self.wait_for(id, JobStatus::Running).await;
        self.exited(id, attempt, code).await;
    }

    /// Moves the clock and makes the engine look at it now.
    pub fn advance(&self, ms: i64) {
        self.clock.advance(ms);
        crate::batch::dispatch::Dispatch::wake(self.handle());
    }

    fn handle(&self) -> &dyn crate::batch::dispatch::Dispatch {
        self.batch
            .engine()
            .expect("the harness always has an engine")
    }
}

// ---------------------------------------------------------------------------------------------
// Helpers shared by the behaviour tests (arrays, commands, dependencies, fair_share, recovery,
// retries, timeouts).
// ---------------------------------------------------------------------------------------------

/// The value of environment variable `name` in a launch.
pub(super) fn env_var(spec: &AttemptSpec, name: &str) -> Option<String> {
    spec.env
        .iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.clone())
}

impl Harness {
    /// Every launch of job `id` so far, in order.
    pub fn launches_of(&self, id: &str) -> Vec<AttemptSpec> {
        let started = self.rt.started.lock().unwrap();
        started.iter().filter(|s| s.job_id == id).cloned().collect()
    }

    /// Every signal job `id` was sent so far, in order: (attempt, signal).
    pub fn signals_of(&self, id: &str) -> Vec<(u32, StopSignal)> {
        let signals = self.rt.signals.lock().unwrap();
        signals
            .iter()
            .filter(|s| s.0 == id)
            .map(|s| (s.1, s.2))
            .collect()
    }

    /// Lets the engine finish what it was given: a command goes through the engine after the
    /// events sent before it, and is answered once the round's writes landed; the launches and
    /// signals that round spawned get a moment to reach the runtime. For asserting that
    /// something did NOT happen.
    pub async fn settle(&self) {
        let _ = self
            .try_call(
                "CancelJob",
                json!({"jobId": "no-such-job", "reason": "barrier"}),
            )
            .await;
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    /// Waits for the launch of `attempt` of `id` and reports it running; the launch.
    pub async fn running(&self, id: &str, attempt: u32) -> AttemptSpec {
        let spec = self.launch_of(id, attempt).await;
        self.started(id, attempt).await;
        self.wait_for(id, JobStatus::Running).await;
        spec
    }

    /// Submits a job of definition `wide`, which takes every vCPU of `local`, and runs it
    /// (RUNNING): later jobs of `default` stay RUNNABLE until it ends. Its ID.
    pub async fn fill_local(&self) -> String {
        self.register(
            "wide",
            json!({"containerProperties": {
                "image": "busybox",
                "command": ["true"],
                "resourceRequirements": [
                    {"type": "VCPU", "value": LOCAL_VCPUS.to_string()},
                    {"type": "MEMORY", "value": "64"}
                ]
            }}),
        )
        .await;
        let id = self.submit("wide", json!({"jobDefinition": "wide"})).await;
        self.running(&id, 1).await;
        id
    }

    /// Waits until the engine told the runtime that the end of `attempt` of `id` is stored.
    pub async fn end_stored(&self, id: &str, attempt: u32) {
        let deadline = tokio::time::Instant::now() + PATIENCE;
        loop {
            let stored = self.rt.ends_stored.lock().unwrap().clone();
            if stored.iter().any(|(j, a)| j == id && *a == attempt) {
                return;
            }
            if tokio::time::Instant::now() > deadline {
                panic!("the end of {id} attempt {attempt} was not stored within {PATIENCE:?}");
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
}
