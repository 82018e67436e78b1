//! What the engine and the AWS driver tell each other, without either waiting on the other:
//! the driver publishes each environment's registered container instances (the engine schedules
//! onto them), the engine publishes the RUNNABLE demand per environment and what it has placed on
//! each container instance (the driver provisions for the first and retires what the second
//! leaves idle).

use crate::scheduler::Resources;
use std::collections::HashMap;
use std::sync::RwLock;
use tokio::sync::Notify;

/// A registered, ACTIVE container instance that may take new tasks.
#[derive(Debug, Clone, PartialEq)]
pub struct FleetInstance {
    pub container_instance_arn: String,
    pub instance_id: String,
    /// What the ECS agent registered: CPU units / 1024 as vCPUs, memory in MiB.
    pub registered: Resources,
    /// What it costs, for the attempts placed on it: `None` on UNMANAGED environments (the
    /// user's own instances, which Flotilla neither launched nor bills).
    pub price: Option<InstancePrice>,
}

/// An instance's type, purchase option and the hourly price Flotilla charges its time at.
#[derive(Debug, Clone, PartialEq)]
pub struct InstancePrice {
    pub instance_type: String,
    pub spot: bool,
    pub per_hour: f64,
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct EnvFleet {
    pub cluster: String,
    /// ACTIVE container instances, in registration order.
    pub instances: Vec<FleetInstance>,
    /// The largest instance the environment may ever launch (per dimension): what a job may ask
    /// for and still fit one day. For UNMANAGED environments, the largest registered instance.
    pub largest: Resources,
}

/// Distinct needs and how many waiting jobs have each, in a fixed order (vCPUs, memory, GPUs).
pub type NeedCounts = Vec<(Resources, u64)>;

#[derive(Debug, Clone, Default)]
pub struct Demand {
    /// Environment name → what the RUNNABLE jobs routed to it need, counted: a backlog of
    /// 100,000 jobs from a few job definitions is a few entries, so publishing, comparing and
    /// copying it costs next to nothing.
    pub by_env: HashMap<String, NeedCounts>,
    /// Container instance ARN → resources of the attempts the engine placed there.
    pub used_by_instance: HashMap<String, Resources>,
}

#[derive(Debug, Default)]
pub struct FleetView {
    envs: RwLock<HashMap<String, EnvFleet>>,
    demand: RwLock<Demand>,
    /// Woken when the engine publishes new demand, so a launch follows within one round trip.
    pub changed: Notify,
}

impl FleetView {
    pub fn env(&self, name: &str) -> Option<EnvFleet> {
        self.envs.read().ok()?.get(name).cloned()
    }

    pub fn set_env(&self, name: &str, fleet: Option<EnvFleet>) {
        if let Ok(mut envs) = self.envs.write() {
            match fleet {
                Some(f) => {
                    envs.insert(name.to_string(), f);
                }
                None => {
                    envs.remove(name);
                }
            }
        }
    }

    pub fn demand(&self) -> Demand {
        self.demand.read().map(|d| d.clone()).unwrap_or_default()
    }

    /// Publishes the engine's view; wakes the driver only when the demand changed.
    pub fn publish(&self, demand: Demand) {
        let changed = match self.demand.write() {
            Ok(mut d) => {
                let changed = d.by_env != demand.by_env;
                *d = demand;
                changed
            }
            Err(_) => false,
        };
        if changed {
            self.changed.notify_one();
        }
    }
}
