//! Constraints from botocore's model and the AWS Batch documentation. Every error names the field
//! (with its path, e.g. `retryStrategy.evaluateOnExit[2].onExitCode`) so the caller can fix it.

use super::*;

/// A request that breaks a documented constraint. Permanent: retrying the same request fails again.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct Invalid(pub String);

pub type Check = Result<(), Invalid>;

pub fn fail<T>(msg: impl Into<String>) -> Result<T, Invalid> {
    Err(Invalid(msg.into()))
}

/// Names of compute environments, queues, job definitions, jobs and scheduling policies:
/// 1–128 letters, digits, hyphens and underscores.
pub fn name(field: &str, value: &str) -> Check {
    if value.is_empty() || value.len() > 128 {
        return fail(format!(
            "{field}: must be 1 to 128 characters long, got {}",
            value.len()
        ));
    }
    if let Some(c) = value
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || *c == '-' || *c == '_'))
    {
        return fail(format!(
            "{field}: may contain only letters, digits, hyphens and underscores; found {c:?}"
        ));
    }
    Ok(())
}

pub fn one_of(field: &str, value: &str, allowed: &[&str]) -> Check {
    if allowed.contains(&value) {
        Ok(())
    } else {
        fail(format!(
            "{field}: {value:?} is not one of {}",
            allowed.join(", ")
        ))
    }
}

/// `value` as one of an enum's wire values, with [`one_of`]'s message when it is none.
pub fn wire<T: std::str::FromStr<Err = UnknownValue>>(
    field: &str,
    value: &str,
) -> Result<T, Invalid> {
    value.parse().or_else(|e| fail(format!("{field}: {e}")))
}

pub fn range(field: &str, value: i64, min: i64, max: i64) -> Check {
    if value < min || value > max {
        return fail(format!(
            "{field}: must be between {min} and {max}, got {value}"
        ));
    }
    Ok(())
}

pub fn tags(field: &str, tags: &Tags) -> Check {
    if tags.len() > 50 {
        return fail(format!("{field}: at most 50 tags, got {}", tags.len()));
    }
    for (k, v) in tags {
        if k.is_empty() || k.chars().count() > 128 {
            return fail(format!(
                "{field}: tag key {k:?} must be 1 to 128 characters"
            ));
        }
        if k.to_ascii_lowercase().starts_with("aws:") {
            return fail(format!(
                "{field}: tag key {k:?} uses the reserved prefix \"aws:\""
            ));
        }
        if v.chars().count() > 256 {
            return fail(format!(
                "{field}: value of tag {k:?} exceeds 256 characters"
            ));
        }
    }
    Ok(())
}

/// `onStatusReason` and `onReason`: letters, digits, white space and punctuation, with `*`
/// allowed only as the last character.
fn reason_pattern(field: &str, p: &str) -> Check {
    if p.len() > 512 {
        return fail(format!("{field}: at most 512 characters, got {}", p.len()));
    }
    let body = p.strip_suffix('*').unwrap_or(p);
    if let Some(c) = body.chars().find(|c| {
        *c == '*'
            || !(c.is_ascii_alphanumeric() || c.is_ascii_punctuation() || *c == ' ' || *c == '\t')
    }) {
        return fail(if c == '*' {
            format!("{field}: '*' is allowed only at the end of the pattern")
        } else {
            format!(
                "{field}: may contain only letters, digits, punctuation and spaces; found {c:?}"
            )
        });
    }
    Ok(())
}

/// `onExitCode`: digits, optionally ending with `*`.
fn exit_code_pattern(field: &str, p: &str) -> Check {
    if p.len() > 512 {
        return fail(format!("{field}: at most 512 characters, got {}", p.len()));
    }
    let body = p.strip_suffix('*').unwrap_or(p);
    if (body.is_empty() && p.is_empty()) || !body.chars().all(|c| c.is_ascii_digit()) {
        return fail(format!(
            "{field}: must be digits optionally ending with '*', got {p:?}"
        ));
    }
    Ok(())
}

pub fn retry_strategy(field: &str, rs: &RetryStrategy) -> Check {
    if let Some(a) = rs.attempts {
        range(&format!("{field}.attempts"), a.into(), 1, 10)?;
    }
    if let Some(list) = &rs.evaluate_on_exit {
        if list.len() > 5 {
            return fail(format!(
                "{field}.evaluateOnExit: at most 5 entries, got {}",
                list.len()
            ));
        }
        for (i, e) in list.iter().enumerate() {
            let f = format!("{field}.evaluateOnExit[{i}]");
            if !["RETRY", "EXIT"].contains(&e.action.to_ascii_uppercase().as_str()) {
                return fail(format!(
                    "{f}.action: {:?} is not one of RETRY, EXIT",
                    e.action
                ));
            }
            if let Some(p) = &e.on_status_reason {
                reason_pattern(&format!("{f}.onStatusReason"), p)?;
            }
            if let Some(p) = &e.on_reason {
                reason_pattern(&format!("{f}.onReason"), p)?;
            }
            if let Some(p) = &e.on_exit_code {
                exit_code_pattern(&format!("{f}.onExitCode"), p)?;
            }
        }
    }
    Ok(())
}

pub fn timeout(field: &str, t: &JobTimeout) -> Check {
    if let Some(s) = t.attempt_duration_seconds
        && s < 60
    {
        return fail(format!(
            "{field}.attemptDurationSeconds: must be at least 60, got {s}"
        ));
    }
    Ok(())
}

pub fn resource_requirements(field: &str, reqs: &[ResourceRequirement]) -> Check {
    let mut seen = Vec::new();
    for (i, r) in reqs.iter().enumerate() {
        let f = format!("{field}[{i}]");
        one_of(&format!("{f}.type"), &r.rtype, &["GPU", "VCPU", "MEMORY"])?;
        if seen.contains(&r.rtype.as_str()) {
            return fail(format!("{f}.type: {} is given more than once", r.rtype));
        }
        seen.push(r.rtype.as_str());
        match r.rtype.as_str() {
            "VCPU" => match r.value.parse::<f64>() {
                Ok(v) if v > 0.0 && v.is_finite() => {}
                _ => {
                    return fail(format!(
                        "{f}.value: VCPU must be a positive number, got {:?}",
                        r.value
                    ));
                }
            },
            "MEMORY" => match r.value.parse::<i64>() {
                Ok(v) if v >= 4 => {}
                _ => {
                    return fail(format!(
                        "{f}.value: MEMORY must be a whole number of MiB, at least 4, got {:?}",
                        r.value
                    ));
                }
            },
            _ => match r.value.parse::<i64>() {
                Ok(v) if v >= 0 => {}
                _ => {
                    return fail(format!(
                        "{f}.value: GPU must be a whole number, got {:?}",
                        r.value
                    ));
                }
            },
        }
    }
    Ok(())
}

fn environment(field: &str, env: &[KeyValuePair]) -> Check {
    for (i, kv) in env.iter().enumerate() {
        match &kv.name {
            Some(n) if !n.is_empty() => {
                if n.starts_with("AWS_BATCH") {
                    return fail(format!(
                        "{field}[{i}].name: variables starting with AWS_BATCH are reserved, got {n:?}"
                    ));
                }
            }
            _ => return fail(format!("{field}[{i}].name: is required")),
        }
    }
    Ok(())
}

pub fn container_properties(field: &str, c: &ContainerProperties) -> Check {
    match &c.image {
        Some(i) if !i.trim().is_empty() => {}
        _ => return fail(format!("{field}.image: is required")),
    }
    if let Some(v) = c.vcpus {
        range(&format!("{field}.vcpus"), v.into(), 1, 10_000)?;
    }
    if let Some(m) = c.memory {
        range(&format!("{field}.memory"), m.into(), 4, i32::MAX.into())?;
    }
    if let Some(r) = &c.resource_requirements {
        resource_requirements(&format!("{field}.resourceRequirements"), r)?;
    }
    if let Some(e) = &c.environment {
        environment(&format!("{field}.environment"), e)?;
    }
    super::container::ContainerSettings::of(field, c).map_err(Invalid)?;
    Ok(())
}

pub fn container_overrides(field: &str, c: &ContainerOverrides) -> Check {
    if let Some(v) = c.vcpus {
        range(&format!("{field}.vcpus"), v.into(), 1, 10_000)?;
    }
    if let Some(m) = c.memory {
        range(&format!("{field}.memory"), m.into(), 4, i32::MAX.into())?;
    }
    if let Some(r) = &c.resource_requirements {
        resource_requirements(&format!("{field}.resourceRequirements"), r)?;
    }
    if let Some(e) = &c.environment {
        environment(&format!("{field}.environment"), e)?;
    }
    Ok(())
}

pub fn register_job_definition(r: &RegisterJobDefinitionRequest) -> Check {
    name("jobDefinitionName", &r.job_definition_name)?;
    one_of("type", &r.jd_type, &["container", "multinode"])?;
    if r.jd_type == "multinode" {
        return fail("type: multinode job definitions are not supported by Flotilla yet");
    }
    if r.eks_properties.is_some() || r.ecs_properties.is_some() || r.node_properties.is_some() {
        return fail(
            "containerProperties: Flotilla supports container job definitions; eksProperties, ecsProperties and nodeProperties are not supported",
        );
    }
    match &r.container_properties {
        Some(c) => container_properties("containerProperties", c)?,
        None => return fail("containerProperties: is required for type container"),
    }
    if let Some(rs) = &r.retry_strategy {
        retry_strategy("retryStrategy", rs)?;
    }
    if let Some(t) = &r.timeout {
        timeout("timeout", t)?;
    }
    if let Some(p) = r.scheduling_priority {
        range("schedulingPriority", p.into(), 0, 9999)?;
    }
    if let Some(t) = &r.tags {
        tags("tags", t)?;
    }
    if let Some(pc) = &r.platform_capabilities {
        for (i, p) in pc.iter().enumerate() {
            one_of(
                &format!("platformCapabilities[{i}]"),
                p,
                &["EC2", "FARGATE"],
            )?;
        }
    }
    Ok(())
}

pub fn submit_job(r: &SubmitJobRequest) -> Check {
    name("jobName", &r.job_name)?;
    if r.job_queue.is_empty() {
        return fail("jobQueue: is required");
    }
    if r.job_definition.is_empty() {
        return fail("jobDefinition: is required");
    }
    if r.node_overrides.is_some()
        || r.eks_properties_override.is_some()
        || r.ecs_properties_override.is_some()
    {
        return fail(
            "nodeOverrides: multinode, EKS and ECS-properties overrides are not supported by Flotilla",
        );
    }
    if let Some(ap) = &r.array_properties
        && let Some(size) = ap.size
    {
        range("arrayProperties.size", size.into(), 2, 10_000)?;
    }
    if let Some(deps) = &r.depends_on {
        if deps.len() > 20 {
            return fail(format!("dependsOn: at most 20 entries, got {}", deps.len()));
        }
        for (i, d) in deps.iter().enumerate() {
            if let Some(t) = &d.dep_type {
                one_of(
                    &format!("dependsOn[{i}].type"),
                    t,
                    &["N_TO_N", "SEQUENTIAL"],
                )?;
            }
            let is_sequential = d.dep_type.as_deref() == Some("SEQUENTIAL");
            match &d.job_id {
                Some(id) if id.is_empty() => {
                    return fail(format!("dependsOn[{i}].jobId: must not be empty"));
                }
                Some(_) if is_sequential => {
                    return fail(format!(
                        "dependsOn[{i}].jobId: a SEQUENTIAL dependency names no job (it orders the children of this array)"
                    ));
                }
                None if !is_sequential => {
                    return fail(format!("dependsOn[{i}].jobId: is required"));
                }
                _ => {}
            }
        }
    }
    if let Some(p) = r.scheduling_priority_override {
        range("schedulingPriorityOverride", p.into(), 0, 9999)?;
    }
    if let Some(s) = &r.share_identifier
        && (s.is_empty() || s.len() > 255)
    {
        return fail("shareIdentifier: must be 1 to 255 characters");
    }
    if let Some(c) = &r.container_overrides {
        container_overrides("containerOverrides", c)?;
    }
    if let Some(rs) = &r.retry_strategy {
        retry_strategy("retryStrategy", rs)?;
    }
    if let Some(t) = &r.timeout {
        timeout("timeout", t)?;
    }
    if let Some(t) = &r.tags {
        tags("tags", t)?;
    }
    Ok(())
}

pub fn fairshare_policy(field: &str, p: &FairsharePolicy) -> Check {
    if let Some(d) = p.share_decay_seconds {
        range(&format!("{field}.shareDecaySeconds"), d.into(), 0, 604_800)?;
    }
    if let Some(c) = p.compute_reservation {
        range(&format!("{field}.computeReservation"), c.into(), 0, 99)?;
    }
    if let Some(list) = &p.share_distribution {
        if list.len() > 500 {
            return fail(format!(
                "{field}.shareDistribution: at most 500 entries, got {}",
                list.len()
            ));
        }
        let mut seen = std::collections::HashSet::new();
        for (i, s) in list.iter().enumerate() {
            let f = format!("{field}.shareDistribution[{i}]");
            let id = &s.share_identifier;
            let body = id.strip_suffix('*').unwrap_or(id);
            if id.is_empty()
                || id.len() > 255
                || body
                    .chars()
                    .any(|c| !(c.is_ascii_alphanumeric() || c == '-' || c == '_'))
            {
                return fail(format!(
                    "{f}.shareIdentifier: 1 to 255 letters, digits, '-' or '_', optionally ending with '*'; got {id:?}"
                ));
            }
            if !seen.insert(id.clone()) {
                return fail(format!(
                    "{f}.shareIdentifier: {id:?} appears more than once"
                ));
            }
            if let Some(w) = s.weight_factor
                && !(w > 0.0 && w <= 1000.0)
            {
                return fail(format!(
                    "{f}.weightFactor: must be greater than 0 and at most 1000, got {w}"
                ));
            }
        }
    }
    Ok(())
}

pub fn job_state_time_limit_actions(field: &str, list: &[JobStateTimeLimitAction]) -> Check {
    if list.len() > 5 {
        return fail(format!("{field}: at most 5 entries, got {}", list.len()));
    }
    for (i, a) in list.iter().enumerate() {
        let f = format!("{field}[{i}]");
        if a.reason.is_empty() {
            return fail(format!("{f}.reason: is required"));
        }
        one_of(&format!("{f}.state"), &a.state, &["RUNNABLE"])?;
        one_of(&format!("{f}.action"), &a.action, &["CANCEL", "TERMINATE"])?;
        range(
            &format!("{f}.maxTimeSeconds"),
            a.max_time_seconds.into(),
            600,
            86_400,
        )?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_checked() {
        assert!(name("jobName", "ok-Name_1").is_ok());
        assert!(name("jobName", "").unwrap_err().0.contains("jobName"));
        assert!(name("jobName", &"a".repeat(129)).is_err());
        assert!(name("jobName", "has space").unwrap_err().0.contains("' '"));
    }

    #[test]
    fn retry_patterns_follow_aws_rules() {
        let rs = |e: EvaluateOnExit| RetryStrategy {
            attempts: Some(3),
            evaluate_on_exit: Some(vec![e]),
        };
        let ok = EvaluateOnExit {
            on_status_reason: Some("Host EC2*".into()),
            on_exit_code: Some("13*".into()),
            action: "retry".into(),
            ..Default::default()
        };
        assert!(retry_strategy("retryStrategy", &rs(ok.clone())).is_ok());
        let star_inside = EvaluateOnExit {
            on_reason: Some("a*b".into()),
            ..ok.clone()
        };
        let err = retry_strategy("retryStrategy", &rs(star_inside)).unwrap_err();
        assert!(err.0.contains("evaluateOnExit[0].onReason"), "{err}");
        let bad_code = EvaluateOnExit {
            on_exit_code: Some("1a".into()),
            ..ok.clone()
        };
        assert!(
            retry_strategy("retryStrategy", &rs(bad_code))
                .unwrap_err()
                .0
                .contains("onExitCode")
        );
        let bad_action = EvaluateOnExit {
            action: "MAYBE".into(),
            ..ok
        };
        assert!(retry_strategy("retryStrategy", &rs(bad_action)).is_err());
        let too_many = RetryStrategy {
            attempts: Some(11),
            evaluate_on_exit: None,
        };
        assert!(
            retry_strategy("retryStrategy", &too_many)
                .unwrap_err()
                .0
                .contains("attempts")
        );
    }

    #[test]
    fn resource_requirements_are_numbers() {
        let r = |t: &str, v: &str| ResourceRequirement {
            rtype: t.into(),
            value: v.into(),
        };
        assert!(resource_requirements("rr", &[r("VCPU", "2"), r("MEMORY", "512")]).is_ok());
        assert!(resource_requirements("rr", &[r("VCPU", "-1")]).is_err());
        assert!(resource_requirements("rr", &[r("MEMORY", "1.5")]).is_err());
        assert!(resource_requirements("rr", &[r("DISK", "1")]).is_err());
        assert!(resource_requirements("rr", &[r("VCPU", "1"), r("VCPU", "2")]).is_err());
    }
}
