//! The figures a bench run produces, and their two renderings: one table, or JSON.

use serde::Serialize;

use crate::cli::Table;

/// Whether a figure meets the target.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum Met {
    #[serde(rename = "yes")]
    Yes,
    #[serde(rename = "no")]
    No,
    /// No target, the figure was not measured, or the run was smaller than the size the target
    /// is stated for.
    #[serde(rename = "n.a.")]
    NotApplicable,
}

impl Met {
    fn as_str(self) -> &'static str {
        match self {
            Met::Yes => "yes",
            Met::No => "no",
            Met::NotApplicable => "n.a.",
        }
    }
}

/// A target from the issue: its text, the test, and the size it is stated for.
#[derive(Clone, Copy)]
pub struct Target {
    pub text: &'static str,
    pub check: fn(f64) -> bool,
    /// The run's size must be at least this for the comparison to mean anything.
    pub at_size: usize,
}

#[derive(Debug, Clone, Serialize)]
pub struct Figure {
    pub scenario: &'static str,
    pub metric: String,
    /// `None` when not measured (the scenario failed).
    pub value: Option<f64>,
    pub unit: &'static str,
    pub target: Option<&'static str>,
    pub met: Met,
    /// What bounds the figure, where known.
    pub bound: Option<String>,
}

impl Figure {
    pub fn new(
        scenario: &'static str,
        metric: impl Into<String>,
        value: f64,
        unit: &'static str,
    ) -> Self {
        Figure {
            scenario,
            metric: metric.into(),
            value: Some(value),
            unit,
            target: None,
            met: Met::NotApplicable,
            bound: None,
        }
    }

    /// Compares against `target` when the run was at least the size the target is stated for.
    pub fn target(mut self, target: Target, size: usize) -> Self {
        self.target = Some(target.text);
        self.met = match self.value {
            Some(v) if size >= target.at_size => {
                if (target.check)(v) {
                    Met::Yes
                } else {
                    Met::No
                }
            }
            _ => Met::NotApplicable,
        };
        self
    }

    pub fn bound(mut self, bound: impl Into<String>) -> Self {
        self.bound = Some(bound.into());
        self
    }
}

/// How a scenario ended.
#[derive(Debug, Clone, Serialize)]
pub struct ScenarioOutcome {
    pub name: &'static str,
    /// `ok` or `failed`.
    pub status: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    pub seconds: f64,
}

#[derive(Debug, Clone, Serialize)]
pub struct Machine {
    pub cores: usize,
    pub cpu: String,
    pub memory_mib: u64,
    pub kernel: String,
}

impl Machine {
    pub fn probe() -> Machine {
        let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
        let cpu = cpuinfo
            .lines()
            .find(|l| l.starts_with("model name"))
            .and_then(|l| l.split_once(':'))
            .map(|(_, v)| v.trim().to_string())
            .unwrap_or_else(|| "unknown".into());
        let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease")
            .map(|s| s.trim().to_string())
            .unwrap_or_else(|_| "unknown".into());
        Machine {
            cores: super::cores(),
            cpu,
            memory_mib: crate::engine::host_memory_mib(),
            kernel,
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub flotilla_version: &'static str,
    pub machine: Machine,
    pub config: serde_json::Value,
    pub scenarios: Vec<ScenarioOutcome>,
    pub figures: Vec<Figure>,
}

/// `1234567.8` → `1,234,568`.
fn thousands(v: f64) -> String {
    let n = v.round() as i64;
    let digits = n.abs().to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    if n < 0 { format!("-{out}") } else { out }
}

/// A value with its unit, with as many decimals as its size calls for.
pub fn format_value(v: Option<f64>, unit: &str) -> String {
    let Some(v) = v else {
        return "-".into();
    };
    let number = if v.abs() >= 1000.0 {
        thousands(v)
    } else if v.abs() >= 100.0 || v == v.trunc() {
        format!("{v:.0}")
    } else if v.abs() >= 10.0 {
        format!("{v:.1}")
    } else {
        format!("{v:.2}")
    };
    if unit.is_empty() {
        number
    } else {
        format!("{number} {unit}")
    }
}

impl Report {
    pub fn table(&self) -> String {
        let mut t = Table::new(["SCENARIO", "METRIC", "VALUE", "TARGET", "MET", "BOUND"]);
        for f in &self.figures {
            t.push([
                f.scenario.to_string(),
                f.metric.clone(),
                format_value(f.value, f.unit),
                f.target.unwrap_or("-").to_string(),
                f.met.as_str().to_string(),
                f.bound.clone().unwrap_or_else(|| "-".into()),
            ]);
        }
        let mut out = format!(
            "flotilla bench {} on {} cores ({}), {} MiB, Linux {}\n",
            self.flotilla_version,
            self.machine.cores,
            self.machine.cpu,
            self.machine.memory_mib,
            self.machine.kernel
        );
        out.push_str(&t.render());
        for s in self.scenarios.iter().filter(|s| s.status == "failed") {
            out.push_str(&format!(
                "{} failed: {}\n",
                s.name,
                s.error.as_deref().unwrap_or("")
            ));
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_are_formatted_for_people() {
        assert_eq!(format_value(Some(12345.6), "jobs/s"), "12,346 jobs/s");
        assert_eq!(format_value(Some(1_000_000.0), ""), "1,000,000");
        assert_eq!(format_value(Some(4.256), "ms"), "4.26 ms");
        assert_eq!(format_value(Some(42.25), "ms"), "42.2 ms");
        assert_eq!(format_value(Some(7.0), "KiB"), "7 KiB");
        assert_eq!(format_value(None, "ms"), "-");
    }

    #[test]
    fn targets_apply_only_at_their_size() {
        let t = Target {
            text: ">= 10",
            check: |v| v >= 10.0,
            at_size: 100,
        };
        let f = Figure::new("s", "m", 12.0, "");
        assert_eq!(f.clone().target(t, 100).met, Met::Yes);
        assert_eq!(f.clone().target(t, 99).met, Met::NotApplicable);
        assert_eq!(Figure::new("s", "m", 5.0, "").target(t, 100).met, Met::No);
    }
}
