//! The control plane: AWS Batch operations over the durable store.
//!
//! Compute environments, queues, job definitions, scheduling policies and consumable resources
//! are few; they live in an in-memory [`Catalog`] that is loaded at start and written through
//! to the store (the store write happens first, under the catalog's write lock, so memory never
//! shows what is not durable). Jobs
//! live in the store; every accepted `SubmitJob` is committed (group commit) before it returns.

mod consumable_resources;
mod control_plane;
pub mod cost;
pub mod dispatch;
mod job_definitions;
mod job_queues;
mod jobs;
mod resources;
mod scheduling_policies;
mod tags;
mod token;

pub use crate::model::Catalog;
pub use consumable_resources::{ConsumableUse, consumable_quantities};

use crate::error::{BatchError, BatchResult};
use crate::model::*;
use crate::store::{JobRow, ResourceKind, ResourceRow, Store};
use crate::util::time::now_ms;
use dispatch::Dispatch;
use std::collections::BTreeMap;
use std::sync::Arc;
use tokio::sync::RwLock;

pub struct Batch {
    region: String,
    account_id: String,
    store: Arc<dyn Store>,
    /// Copy on write: readers that outlive the lock (the engine's passes) share a snapshot
    /// instead of copying every definition and queue per pass.
    catalog: RwLock<Arc<Catalog>>,
    /// Default `maxvCpus` of a LOCAL compute environment.
    host_cpus: i32,
    /// What runs the jobs (the engine). Without one (a control plane alone), jobs are only
    /// stored.
    dispatch: Option<Arc<dyn Dispatch>>,
    /// See [`BatchOptions::aws_driver`].
    aws_driver: bool,
    /// The container properties last submitted per job definition ARN, so that jobs submitted
    /// with the same effective properties share one copy (see `ContainerDetail::properties`).
    shared_properties:
        std::sync::Mutex<std::collections::HashMap<String, Arc<ContainerProperties>>>,
    /// Array parents accepted whose children are still being written, so that a read about
    /// them waits instead of seeing a partial family (see `SubmitJob` of an array job).
    materialising:
        std::sync::Mutex<std::collections::HashMap<String, tokio::sync::watch::Sender<bool>>>,
    /// What the engine's attempts hold of each consumable resource, as it last published
    /// (see [`ConsumableUse`]).
    consumable_use: std::sync::Mutex<std::collections::HashMap<String, ConsumableUse>>,
    /// The store's catalog version the catalog was loaded at (replicas; see `refresh_catalog`).
    catalog_version: std::sync::atomic::AtomicI64,
    /// One reload at a time.
    refreshing: tokio::sync::Mutex<()>,
    /// Set when the store says the catalog changed (replicas; see `with_hot_catalog`).
    catalog_stale: Arc<std::sync::atomic::AtomicBool>,
    /// Replicas: the latest consumable use for the store, once this replica's engine
    /// publishes one (see `publish_consumable_use`).
    consumable_publisher: std::sync::OnceLock<tokio::sync::watch::Sender<String>>,
}

/// What the control plane must know of how the server runs, given when it is built.
#[derive(Debug, Clone, Copy, Default)]
pub struct BatchOptions {
    /// The server runs the AWS compute driver: MANAGED EC2/SPOT and UNMANAGED environments then
    /// start CREATING (the driver takes them from there) instead of INVALID.
    pub aws_driver: bool,
}

/// The ARN resource types of AWS Batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ArnKind {
    ComputeEnvironment,
    JobQueue,
    JobDefinition,
    SchedulingPolicy,
    ConsumableResource,
    Job,
}

impl ArnKind {
    fn segment(self) -> &'static str {
        match self {
            ArnKind::ComputeEnvironment => "compute-environment",
            ArnKind::JobQueue => "job-queue",
            ArnKind::JobDefinition => "job-definition",
            ArnKind::SchedulingPolicy => "scheduling-policy",
            ArnKind::ConsumableResource => "consumable-resource",
            ArnKind::Job => "job",
        }
    }
}

fn to_json<T: serde::Serialize>(v: &T) -> BatchResult<String> {
    serde_json::to_string(v).map_err(|e| BatchError::Internal(format!("encoding document: {e}")))
}

fn from_json<T: serde::de::DeserializeOwned>(what: &str, s: &str) -> BatchResult<T> {
    serde_json::from_str(s)
        .map_err(|e| BatchError::Internal(format!("stored {what} is unreadable: {e}")))
}

impl Batch {
    /// Loads the catalog from the store.
    pub async fn open(
        store: Arc<dyn Store>,
        region: String,
        account_id: String,
        opts: BatchOptions,
        dispatch: Option<Arc<dyn Dispatch>>,
    ) -> BatchResult<Self> {
        let version = match store.replication() {
            Some(r) => r.catalog_version().await?,
            None => 0,
        };
        let stale = Arc::new(std::sync::atomic::AtomicBool::new(false));
        if let Some(r) = store.replication() {
            let flag = stale.clone();
            // The engine (on the leader) plans again with the new catalog.
            let wake = dispatch.clone();
            r.watch_catalog(move || {
                flag.store(true, std::sync::atomic::Ordering::SeqCst);
                if let Some(d) = &wake {
                    d.wake();
                }
            });
        }
        let catalog = load_catalog(store.as_ref(), true).await?;
        let host_cpus = std::thread::available_parallelism()
            .map(|n| n.get() as i32)
            .unwrap_or(1);
        Ok(Batch {
            region,
            account_id,
            store,
            catalog: RwLock::new(Arc::new(catalog)),
            host_cpus,
            dispatch,
            aws_driver: opts.aws_driver,
            shared_properties: std::sync::Mutex::default(),
            materialising: std::sync::Mutex::default(),
            consumable_use: std::sync::Mutex::default(),
            catalog_version: std::sync::atomic::AtomicI64::new(version),
            refreshing: tokio::sync::Mutex::new(()),
            catalog_stale: stale,
            consumable_publisher: std::sync::OnceLock::new(),
        })
    }

    /// The catalog for the hot paths (SubmitJob, ListJobs by queue), which must not pay a
    /// database round trip each for a catalog that rarely changes: reloaded only after a change
    /// notification, and, when `f` fails with a client error (a queue or definition not found,
    /// a queue DISABLED), checked against the store and `f` tried again, so that a resource
    /// created or changed through another replica is usable here at once.
    pub(crate) async fn with_hot_catalog<T>(
        &self,
        f: impl Fn(&Catalog) -> BatchResult<T>,
    ) -> BatchResult<T> {
        self.refresh_if_announced().await;
        let first = f(&self.catalog.read().await.clone());
        match first {
            Err(BatchError::Client(_)) if self.store.replication().is_some() => {
                // Tried again even when this call did not reload: a concurrent request may
                // have reloaded the catalog meanwhile.
                match self.refresh_catalog().await {
                    Ok(_) => f(&self.catalog.read().await.clone()),
                    Err(_) => first,
                }
            }
            r => r,
        }
    }

    /// On a store replicas share: reloads the catalog if another replica (or this one) changed
    /// it since it was loaded, so that a resource created through any replica is visible and
    /// usable through this one at once. Returns whether it reloaded.
    pub async fn refresh_catalog(&self) -> BatchResult<bool> {
        use std::sync::atomic::Ordering;
        let Some(repl) = self.store.replication() else {
            return Ok(false);
        };
        if repl.catalog_version().await? == self.catalog_version.load(Ordering::SeqCst) {
            return Ok(false);
        }
        let _one = self.refreshing.lock().await;
        // Read before the resources: a change landing in between is seen by the next check.
        let version = repl.catalog_version().await?;
        if version == self.catalog_version.load(Ordering::SeqCst) {
            return Ok(false);
        }
        let fresh = load_catalog(self.store.as_ref(), false).await?;
        // Bounded: a caller that already holds the catalog (a nested read) must not wait on
        // itself; it answers from the loaded catalog and the next request reloads.
        let Ok(mut guard) =
            tokio::time::timeout(std::time::Duration::from_millis(50), self.catalog.write()).await
        else {
            return Ok(false);
        };
        *guard = Arc::new(fresh);
        self.catalog_version.store(version, Ordering::SeqCst);
        tracing::debug!(version, "catalog reloaded");
        Ok(true)
    }

    /// The catalog for a request: fresh from the store when replicas share it.
    async fn cat(&self) -> tokio::sync::RwLockReadGuard<'_, Arc<Catalog>> {
        if let Err(e) = self.refresh_catalog().await {
            tracing::warn!(error = %e, "catalog refresh failed; answering from the loaded one");
        }
        self.catalog.read().await
    }

    /// The catalog to change, fresh from the store when replicas share it.
    async fn cat_mut(&self) -> tokio::sync::RwLockWriteGuard<'_, Arc<Catalog>> {
        if let Err(e) = self.refresh_catalog().await {
            tracing::warn!(error = %e, "catalog refresh failed; changing the loaded one");
        }
        self.catalog.write().await
    }

    /// `props`, or an equal copy already held by other jobs of the same definition.
    pub(crate) fn share_properties(
        &self,
        definition_arn: &str,
        props: Arc<ContainerProperties>,
    ) -> Arc<ContainerProperties> {
        let Ok(mut shared) = self.shared_properties.lock() else {
            return props;
        };
        if let Some(p) = shared.get(definition_arn)
            && **p == *props
        {
            return p.clone();
        }
        shared.insert(definition_arn.to_string(), props.clone());
        props
    }

    /// Changes what the compute driver owns of an environment (status, reason, ECS cluster,
    /// desiredvCpus) and persists it. Returns false when the environment is gone or `f` changed
    /// nothing.
    async fn update_ce_runtime(
        &self,
        name: &str,
        f: impl FnOnce(&mut ComputeEnvironmentDetail),
    ) -> BatchResult<bool> {
        let mut guard = self.cat_mut().await;
        let Some(ce) = guard.compute_environments.get(name) else {
            return Ok(false);
        };
        let mut next = ce.clone();
        f(&mut next);
        if &next == ce {
            return Ok(false);
        }
        self.persist(
            ResourceKind::ComputeEnvironment,
            &next.compute_environment_arn,
            &next.compute_environment_name,
            to_json(&next)?,
        )
        .await?;
        Arc::make_mut(&mut *guard)
            .compute_environments
            .insert(name.to_string(), next);
        Ok(true)
    }

    pub(crate) fn engine(&self) -> Option<&dyn Dispatch> {
        self.dispatch.as_deref()
    }

    /// Tells the engine that queues, environments or policies changed.
    pub(crate) fn wake_engine(&self) {
        if let Some(e) = &self.dispatch {
            e.wake();
        }
    }

    pub fn store(&self) -> &Arc<dyn Store> {
        &self.store
    }

    pub fn region(&self) -> &str {
        &self.region
    }

    pub fn account_id(&self) -> &str {
        &self.account_id
    }

    /// A consistent snapshot of the resource catalog, for planners and metrics.
    /// Replicas: reloaded first if the store announced a change since.
    pub async fn catalog(&self) -> Arc<Catalog> {
        self.refresh_if_announced().await;
        self.catalog.read().await.clone()
    }

    /// Reloads the catalog if the store announced a change since the last reload; a failed
    /// reload leaves the announcement for the next caller.
    async fn refresh_if_announced(&self) {
        use std::sync::atomic::Ordering;
        if self.catalog_stale.swap(false, Ordering::SeqCst)
            && let Err(e) = self.refresh_catalog().await
        {
            self.catalog_stale.store(true, Ordering::SeqCst);
            tracing::warn!(error = %e, "catalog refresh failed; using the loaded one");
        }
    }

    pub fn arn(&self, kind: ArnKind, name: &str) -> String {
        format!(
            "arn:aws:batch:{}:{}:{}/{}",
            self.region,
            self.account_id,
            kind.segment(),
            name
        )
    }

    /// The resource name in `value`, which is either a plain name or this server's ARN of `kind`.
    /// `None` when it is an ARN of another kind, region or account.
    pub fn name_of<'a>(&self, kind: ArnKind, value: &'a str) -> Option<&'a str> {
        if value.starts_with("arn:") {
            let prefix = format!(
                "arn:aws:batch:{}:{}:{}/",
                self.region,
                self.account_id,
                kind.segment()
            );
            value.strip_prefix(prefix.as_str())
        } else {
            Some(value)
        }
    }

    /// Which kind of resource an ARN of this server names, and its resource part.
    pub fn parse_arn<'a>(&self, arn: &'a str) -> Option<(ArnKind, &'a str)> {
        let prefix = format!("arn:aws:batch:{}:{}:", self.region, self.account_id);
        let rest = arn.strip_prefix(prefix.as_str())?;
        let (seg, name) = rest.split_once('/')?;
        let kind = [
            ArnKind::ComputeEnvironment,
            ArnKind::JobQueue,
            ArnKind::JobDefinition,
            ArnKind::SchedulingPolicy,
            ArnKind::ConsumableResource,
            ArnKind::Job,
        ]
        .into_iter()
        .find(|k| k.segment() == seg)?;
        (!name.is_empty()).then_some((kind, name))
    }

    async fn persist(
        &self,
        kind: ResourceKind,
        arn: &str,
        name: &str,
        doc: String,
    ) -> BatchResult<()> {
        self.store
            .put_resource(&ResourceRow {
                kind,
                arn: arn.to_string(),
                name: name.to_string(),
                doc,
            })
            .await?;
        self.wake_engine();
        Ok(())
    }
}

/// Every resource in the store, parsed. At start (`quarantine`) an unreadable document is moved
/// to the quarantine table; on a reload it is only left out (the replica that started first
/// has quarantined it, or will at its next start).
async fn load_catalog(store: &dyn Store, quarantine: bool) -> BatchResult<Catalog> {
    let mut catalog = Catalog::default();
    for row in store.load_resources().await? {
        // One unreadable document costs its resource, not the start: it is moved to the
        // store's quarantine table and the server starts with the rest.
        let mut add = || -> BatchResult<()> {
            match row.kind {
                ResourceKind::ComputeEnvironment => {
                    let ce: ComputeEnvironmentDetail = from_json("compute environment", &row.doc)?;
                    catalog
                        .compute_environments
                        .insert(ce.compute_environment_name.clone(), ce);
                }
                ResourceKind::JobQueue => {
                    let q: JobQueueDetail = from_json("job queue", &row.doc)?;
                    catalog.queues.insert(q.job_queue_name.clone(), q);
                }
                ResourceKind::JobDefinition => {
                    let jd: JobDefinition = from_json("job definition", &row.doc)?;
                    catalog
                        .job_definitions
                        .entry(jd.job_definition_name.clone())
                        .or_default()
                        .insert(jd.revision, jd);
                }
                ResourceKind::SchedulingPolicy => {
                    let p: SchedulingPolicyDetail = from_json("scheduling policy", &row.doc)?;
                    catalog.scheduling_policies.insert(p.name.clone(), p);
                }
                ResourceKind::ConsumableResource => {
                    let r: ConsumableResourceDetail = from_json("consumable resource", &row.doc)?;
                    catalog
                        .consumable_resources
                        .insert(r.consumable_resource_name.clone(), r);
                }
            }
            Ok(())
        };
        if let Err(e) = add() {
            if quarantine {
                store.quarantine_resource(&row, &e.to_string()).await?;
            } else {
                tracing::warn!(arn = %row.arn, error = %e, "unreadable resource left out");
            }
        }
    }
    Ok(catalog)
}

pub(crate) fn job_row(job: &JobDetail, parent: Option<(&str, i32)>) -> BatchResult<JobRow> {
    Ok(JobRow {
        job_id: job.job_id.clone(),
        job_queue: job.job_queue.clone(),
        status: job.status.as_str().to_string(),
        job_name: job.job_name.clone(),
        job_definition: job.job_definition.clone(),
        array_parent: parent.map(|(p, _)| p.to_string()),
        array_index: parent.map(|(_, i)| i),
        created_at: job.created_at,
        doc: to_json(job)?,
    })
}
