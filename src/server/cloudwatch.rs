//! CloudWatch metrics (`--cloudwatch-namespace`): every period, the figures Prometheus also
//! shows (jobs per queue and status, vCPUs and instances per compute environment, jobs finished)
//! published with PutMetricData, batched within CloudWatch's limits. The leader publishes: the
//! capacity figures are its engine's.

use crate::batch::Batch;
use aws_sdk_cloudwatch::types::{Dimension, MetricDatum, StandardUnit};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;

/// PutMetricData takes at most 1,000 data and 1 MB; 500 of these stay well under the size.
const PER_CALL: usize = 500;

#[derive(Clone, Debug)]
pub struct CloudWatchConfig {
    pub namespace: String,
    pub period: Duration,
}

/// Checks `--cloudwatch-namespace` before anything starts.
pub fn check(cfg: Option<&CloudWatchConfig>, aws_driver: bool) -> Result<(), String> {
    let Some(cfg) = cfg else { return Ok(()) };
    if !aws_driver {
        return Err("--cloudwatch-namespace publishes with the server's AWS access: it needs --aws (or --aws-endpoint-url)".into());
    }
    // CloudWatch: 1-255 characters, no leading colon, not the AWS/ prefix.
    let ns = &cfg.namespace;
    if ns.is_empty() || ns.len() > 255 || ns.starts_with(':') || ns.starts_with("AWS/") {
        return Err(format!(
            "--cloudwatch-namespace {ns:?}: 1 to 255 characters, not starting with ':' or 'AWS/'"
        ));
    }
    if cfg.period < Duration::from_secs(1) {
        return Err("--cloudwatch-period-seconds must be at least 1".into());
    }
    Ok(())
}

pub fn spawn(
    cfg: CloudWatchConfig,
    batch: Arc<Batch>,
    sdk: &aws_config::SdkConfig,
    mut shutdown: watch::Receiver<bool>,
) {
    let client = aws_sdk_cloudwatch::Client::new(sdk);
    tokio::spawn(async move {
        tracing::info!(namespace = %cfg.namespace, period_s = cfg.period.as_secs(), "cloudwatch metrics on");
        loop {
            tokio::select! {
                _ = tokio::time::sleep(cfg.period) => {}
                _ = shutdown.changed() => return,
            }
            let data = match collect(&batch).await {
                Ok(d) => d,
                Err(e) => {
                    tracing::warn!(error = %e, "cloudwatch metrics: cannot read the store; skipping this period");
                    continue;
                }
            };
            for chunk in data.chunks(PER_CALL) {
                let sent = client
                    .put_metric_data()
                    .namespace(&cfg.namespace)
                    .set_metric_data(Some(chunk.to_vec()))
                    .send()
                    .await;
                match sent {
                    Ok(_) => crate::metrics::aws_call("cloudwatch", "PutMetricData", "ok"),
                    Err(e) => {
                        // A period's figures are not worth a backlog: the next period sends
                        // fresh ones (jobs finished meanwhile are lost from the count, and
                        // logged here).
                        crate::metrics::aws_call("cloudwatch", "PutMetricData", "error");
                        tracing::warn!(
                            error = %aws_sdk_cloudwatch::error::DisplayErrorContext(&e),
                            data = chunk.len(),
                            "cloudwatch PutMetricData failed"
                        );
                    }
                }
            }
        }
    });
}

fn datum(name: &str, value: f64, dims: &[(&str, &str)]) -> MetricDatum {
    let mut b = MetricDatum::builder()
        .metric_name(name)
        .value(value)
        .unit(StandardUnit::Count)
        .timestamp(aws_sdk_cloudwatch::primitives::DateTime::from(
            std::time::SystemTime::now(),
        ));
    for (k, v) in dims {
        b = b.dimensions(Dimension::builder().name(*k).value(*v).build());
    }
    b.build()
}

/// This period's data: jobs per queue and status (zeros included, so a graph falls to 0),
/// vCPUs and instances per compute environment in the catalog, jobs finished since the last.
async fn collect(batch: &Batch) -> Result<Vec<MetricDatum>, crate::store::StoreError> {
    let counts = batch.store().count_jobs_by_queue_status().await?;
    let cat = batch.catalog().await;
    let counts: std::collections::HashMap<(&str, &str), i64> = counts
        .iter()
        .map(|(queue, status, n)| ((queue.as_str(), status.as_str()), *n))
        .collect();
    let mut out = Vec::new();
    for q in cat.queues.values() {
        for status in crate::model::JOB_STATUSES {
            let n = counts
                .get(&(q.job_queue_arn.as_str(), status))
                .copied()
                .unwrap_or(0);
            out.push(datum(
                "QueueJobs",
                n as f64,
                &[("JobQueue", q.job_queue_name.as_str()), ("Status", status)],
            ));
        }
    }
    let figures = crate::metrics::figures();
    for name in cat.compute_environments.keys() {
        let dims = [("ComputeEnvironment", name.as_str())];
        if let Some((total, used)) = figures.vcpus.get(name) {
            out.push(datum("FleetVcpus", *total as f64 / 1000.0, &dims));
            out.push(datum("RunningVcpus", *used as f64 / 1000.0, &dims));
        }
        if let Some((spot, on_demand)) = figures.instances.get(name) {
            for (option, n) in [("SPOT", spot), ("ON_DEMAND", on_demand)] {
                out.push(datum(
                    "FleetInstances",
                    *n as f64,
                    &[("ComputeEnvironment", name), ("PurchaseOption", option)],
                ));
            }
        }
    }
    let (succeeded, failed) = crate::metrics::take_finished();
    out.push(datum("JobsSucceeded", succeeded as f64, &[]));
    out.push(datum("JobsFailed", failed as f64, &[]));
    Ok(out)
}
