//! The wire vocabularies the engine and the control plane branch on, as enums: a typo is a
//! compile error, not a job stuck in a state nobody handles. Each serialises exactly as on the
//! wire (and in stored documents), so old documents read back unchanged.

use serde::{Deserialize, Serialize};
use std::fmt;
use std::str::FromStr;

/// Defines a unit enum whose variants serialise exactly as `$wire`, with `as_str`, `ALL`,
/// `Display` and `FromStr` (exact wire spelling); each variant is named once.
macro_rules! wire_enum {
    (
        $(#[$meta:meta])*
        pub enum $name:ident { $($(#[$vmeta:meta])* $variant:ident = $wire:literal),+ $(,)? }
    ) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
        pub enum $name {
            $($(#[$vmeta])* #[serde(rename = $wire)] $variant),+
        }

        impl $name {
            /// Every value, in declaration order.
            pub const ALL: &'static [$name] = &[$($name::$variant),+];

            /// The wire spelling.
            pub const fn as_str(self) -> &'static str {
                match self {
                    $($name::$variant => $wire),+
                }
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl FromStr for $name {
            type Err = UnknownValue;

            fn from_str(s: &str) -> Result<Self, UnknownValue> {
                match s {
                    $($wire => Ok($name::$variant),)+
                    _ => Err(UnknownValue {
                        value: s.to_string(),
                        allowed: &[$($wire),+],
                    }),
                }
            }
        }
    };
}

/// A string that is none of an enum's wire values.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{value:?} is not one of {}", allowed.join(", "))]
pub struct UnknownValue {
    pub value: String,
    pub allowed: &'static [&'static str],
}

wire_enum! {
    /// AWS Batch job states, in lifecycle order.
    #[derive(PartialOrd, Ord, Default)]
    pub enum JobStatus {
        #[default]
        Submitted = "SUBMITTED",
        Pending = "PENDING",
        Runnable = "RUNNABLE",
        Starting = "STARTING",
        Running = "RUNNING",
        Succeeded = "SUCCEEDED",
        Failed = "FAILED",
    }
}

impl JobStatus {
    /// SUCCEEDED or FAILED: the job never changes again.
    pub const fn is_final(self) -> bool {
        matches!(self, JobStatus::Succeeded | JobStatus::Failed)
    }

    /// STARTING or RUNNING: an attempt holds capacity.
    pub const fn is_active(self) -> bool {
        matches!(self, JobStatus::Starting | JobStatus::Running)
    }

    /// SUBMITTED, PENDING or RUNNABLE: no attempt has been placed.
    pub const fn is_waiting(self) -> bool {
        matches!(
            self,
            JobStatus::Submitted | JobStatus::Pending | JobStatus::Runnable
        )
    }

    /// Every status that is not final.
    pub const UNFINISHED: [JobStatus; 5] = [
        JobStatus::Submitted,
        JobStatus::Pending,
        JobStatus::Runnable,
        JobStatus::Starting,
        JobStatus::Running,
    ];
}

wire_enum! {
    /// `status` of a job definition revision: INACTIVE once deregistered.
    #[derive(Default)]
    pub enum DefinitionStatus {
        #[default]
        Active = "ACTIVE",
        Inactive = "INACTIVE",
    }
}

wire_enum! {
    /// `dependsOn[].type` of an array job's dependency.
    pub enum DependencyType {
        NToN = "N_TO_N",
        Sequential = "SEQUENTIAL",
    }
}

wire_enum! {
    /// `state` of a compute environment or a job queue: whether it takes new work.
    #[derive(Default)]
    pub enum ResourceState {
        #[default]
        Enabled = "ENABLED",
        Disabled = "DISABLED",
    }
}

wire_enum! {
    /// `status` of a compute environment or a job queue: where its own lifecycle stands.
    #[derive(Default)]
    pub enum ResourceStatus {
        #[default]
        Creating = "CREATING",
        Updating = "UPDATING",
        Deleting = "DELETING",
        Deleted = "DELETED",
        Valid = "VALID",
        Invalid = "INVALID",
    }
}

wire_enum! {
    /// `resourceType` of a consumable resource: whether a job gives back what it held.
    #[derive(Default)]
    pub enum ConsumableResourceType {
        #[default]
        Replenishable = "REPLENISHABLE",
        NonReplenishable = "NON_REPLENISHABLE",
    }
}

wire_enum! {
    /// `operation` of UpdateConsumableResource.
    pub enum QuantityOperation {
        Set = "SET",
        Add = "ADD",
        Remove = "REMOVE",
    }
}

/// `retryStrategy.evaluateOnExit[].action`. AWS matches it without regard to case.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RetryAction {
    Retry,
    Exit,
}

impl RetryAction {
    /// `RETRY` or `EXIT` in any case; `None` otherwise.
    pub fn parse(s: &str) -> Option<RetryAction> {
        if s.eq_ignore_ascii_case("RETRY") {
            Some(RetryAction::Retry)
        } else if s.eq_ignore_ascii_case("EXIT") {
            Some(RetryAction::Exit)
        } else {
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_read_and_write_their_wire_spelling() {
        for s in JobStatus::ALL {
            let json = serde_json::to_string(s).unwrap();
            assert_eq!(json, format!("\"{}\"", s.as_str()));
            assert_eq!(serde_json::from_str::<JobStatus>(&json).unwrap(), *s);
            assert_eq!(s.as_str().parse::<JobStatus>().unwrap(), *s);
        }
        assert_eq!(
            serde_json::to_string(&DependencyType::NToN).unwrap(),
            "\"N_TO_N\""
        );
        let e = "RUNNING ".parse::<JobStatus>().unwrap_err();
        assert!(e.to_string().contains("SUBMITTED, PENDING"), "{e}");
    }

    #[test]
    fn only_succeeded_and_failed_are_final() {
        let finals: Vec<_> = JobStatus::ALL.iter().filter(|s| s.is_final()).collect();
        assert_eq!(finals, [&JobStatus::Succeeded, &JobStatus::Failed]);
        assert!(JobStatus::UNFINISHED.iter().all(|s| !s.is_final()));
    }

    #[test]
    fn retry_actions_ignore_case() {
        assert_eq!(RetryAction::parse("retry"), Some(RetryAction::Retry));
        assert_eq!(RetryAction::parse("Exit"), Some(RetryAction::Exit));
        assert_eq!(RetryAction::parse("stop"), None);
    }
}
