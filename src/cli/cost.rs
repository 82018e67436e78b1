//! `flotilla cost`: the server's cost report (`GET /cost`) of a time range, summed by queue,
//! share identifier, job definition or environment, with the fleet's bill and its idle part.

use super::client::{Ctx, emit, emit_json};
use super::table::{Table, arn_name};
use super::{CostArgs, CostBy, Output};
use anyhow::{Context, bail};
use serde_json::Value;
use std::collections::BTreeMap;

pub async fn report(ctx: &Ctx, a: &CostArgs) -> anyhow::Result<()> {
    let now = crate::util::time::now_ms();
    let to = match &a.to {
        Some(t) => parse_time(t).with_context(|| format!("--to {t}"))?,
        None => now,
    };
    let from = match &a.from {
        Some(t) => parse_time(t).with_context(|| format!("--from {t}"))?,
        None => to - parse_duration(&a.since).with_context(|| format!("--since {}", a.since))?,
    };
    if from >= to {
        bail!("the range is empty: --from must be before --to");
    }
    let body = super::signed::request(
        ctx,
        http::Method::GET,
        &format!("/cost?from={from}&to={to}"),
        Vec::new(),
    )
    .await?;
    let report: Value = serde_json::from_slice(&body).context("the server's cost report")?;
    match ctx.output {
        Output::Json => emit_json(&report),
        Output::Table => emit(&render(&report, a.by)),
    }
}

fn render(report: &Value, by: CostBy) -> String {
    let f = |v: &Value| v.as_f64().unwrap_or(0.0);
    let mut sums: BTreeMap<String, (i64, f64, f64)> = BTreeMap::new();
    for g in report["groups"].as_array().into_iter().flatten() {
        let s = |k: &str| g[k].as_str().unwrap_or("-").to_string();
        let key = match by {
            CostBy::Queue => arn_name(&s("jobQueue")).to_string(),
            CostBy::Share => s("shareIdentifier"),
            CostBy::Definition => arn_name(&s("jobDefinition")).to_string(),
            CostBy::Environment => s("computeEnvironment"),
        };
        let e = sums.entry(key).or_default();
        e.0 += g["attempts"].as_i64().unwrap_or(0);
        e.1 += f(&g["seconds"]);
        e.2 += f(&g["cost"]);
    }
    let head = match by {
        CostBy::Queue => "QUEUE",
        CostBy::Share => "SHARE",
        CostBy::Definition => "JOB DEFINITION",
        CostBy::Environment => "COMPUTE ENVIRONMENT",
    };
    let mut t = Table::new([head, "ATTEMPTS", "JOB HOURS", "COST"]);
    for (k, (n, secs, cost)) in &sums {
        t.push([
            k.clone(),
            n.to_string(),
            format!("{:.3}", secs / 3600.0),
            dollars(*cost),
        ]);
    }
    let mut out = String::new();
    if !t.is_empty() {
        out.push_str(&t.render());
        out.push('\n');
    }
    let mut envs = Table::new(["COMPUTE ENVIRONMENT", "FLEET", "JOBS", "IDLE"]);
    for e in report["environments"].as_array().into_iter().flatten() {
        envs.push([
            e["computeEnvironment"].as_str().unwrap_or("-").to_string(),
            dollars(f(&e["fleetCost"])),
            dollars(f(&e["jobCost"])),
            dollars(f(&e["idleCost"])),
        ]);
    }
    if !envs.is_empty() {
        out.push_str(&envs.render());
        out.push('\n');
    }
    out.push_str(&format!(
        "jobs {}  idle {}  fleet {}  ({} to {})",
        dollars(f(&report["jobCost"])),
        dollars(f(&report["idleCost"])),
        dollars(f(&report["fleetCost"])),
        super::table::iso8601_millis(report["from"].as_i64()),
        super::table::iso8601_millis(report["to"].as_i64()),
    ));
    out
}

/// Four decimals: a short job on a small instance costs fractions of a cent.
pub fn dollars(v: f64) -> String {
    format!("${v:.4}")
}

/// Epoch milliseconds, or an RFC 3339 time.
fn parse_time(s: &str) -> anyhow::Result<i64> {
    if let Ok(ms) = s.parse::<i64>() {
        return Ok(ms);
    }
    let t = time::OffsetDateTime::parse(s, &time::format_description::well_known::Rfc3339)
        .context("expected RFC 3339 (2026-12-01T00:00:00Z) or epoch milliseconds")?;
    Ok((t.unix_timestamp_nanos() / 1_000_000) as i64)
}

/// `90s`, `15m`, `2h`, `7d` in milliseconds.
fn parse_duration(s: &str) -> anyhow::Result<i64> {
    let s = s.trim();
    let (n, unit) = s.split_at(s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len()));
    let n: i64 = n
        .parse()
        .context("expected a number with s, m, h or d (e.g. 24h)")?;
    let ms = match unit {
        "s" => 1_000,
        "m" => 60_000,
        "h" => 3_600_000,
        "d" => 86_400_000,
        _ => bail!("expected a number with s, m, h or d (e.g. 24h)"),
    };
    n.checked_mul(ms).filter(|v| *v > 0).context("out of range")
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn times_and_durations_parse_as_the_help_says() {
        assert_eq!(parse_time("1000").unwrap(), 1000);
        assert_eq!(
            parse_time("1970-01-01T00:00:02Z").unwrap(),
            2000,
            "RFC 3339"
        );
        assert!(parse_time("yesterday").is_err());
        assert_eq!(parse_duration("2h").unwrap(), 7_200_000);
        assert_eq!(parse_duration("90s").unwrap(), 90_000);
        assert!(parse_duration("2w").is_err());
        assert!(parse_duration("0h").is_err());
    }

    #[test]
    fn the_table_sums_groups_by_the_chosen_key() {
        let report = json!({
            "from": 0, "to": 3_600_000, "jobCost": 0.3, "fleetCost": 1.0, "idleCost": 0.7,
            "groups": [
                {"jobQueue": "arn:aws:batch:r:1:job-queue/q1", "jobDefinition": "arn:aws:batch:r:1:job-definition/d:1",
                 "computeEnvironment": "ce", "attempts": 1, "seconds": 1800.0, "cost": 0.1},
                {"jobQueue": "arn:aws:batch:r:1:job-queue/q1", "jobDefinition": "arn:aws:batch:r:1:job-definition/e:1",
                 "computeEnvironment": "ce", "attempts": 2, "seconds": 1800.0, "cost": 0.2}
            ],
            "environments": [{"computeEnvironment": "ce", "fleetCost": 1.0, "jobCost": 0.3, "idleCost": 0.7}],
        });
        let text = render(&report, CostBy::Queue);
        assert!(
            text.contains("q1     3         1.000      $0.3000"),
            "{text}"
        );
        assert!(
            text.contains("jobs $0.3000  idle $0.7000  fleet $1.0000"),
            "{text}"
        );
        let by_def = render(&report, CostBy::Definition);
        assert!(by_def.contains("d:1") && by_def.contains("e:1"), "{by_def}");
    }
}
