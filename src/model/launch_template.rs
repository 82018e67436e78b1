//! `computeResources.launchTemplate`: the user's EC2 launch template that a managed environment's
//! instances start from, and per-instance-type override templates. Checked here as AWS Batch
//! checks them at CreateComputeEnvironment; the AWS driver fetches and merges the templates.

use serde_json::Value;

/// One template reference: by ID or by name (never both), at a version.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TemplateRef {
    pub id: Option<String>,
    pub name: Option<String>,
    /// `$Default` when not given, as AWS Batch resolves it.
    pub version: String,
}

impl TemplateRef {
    /// How the template is named in messages: its ID or its name, and the version.
    pub fn describe(&self) -> String {
        let which = self
            .id
            .as_deref()
            .or(self.name.as_deref())
            .unwrap_or_default();
        format!("{which} version {}", self.version)
    }
}

/// An override template and the instance types (or families) it applies to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Override {
    pub template: TemplateRef,
    pub targets: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LaunchTemplate {
    pub base: TemplateRef,
    pub overrides: Vec<Override>,
}

impl LaunchTemplate {
    /// The override whose targets include `instance_type` (by name, or by family for a target
    /// without a size), if any. Targets never overlap (checked in [`parse`]).
    pub fn override_for(&self, instance_type: &str) -> Option<(usize, &Override)> {
        self.overrides
            .iter()
            .enumerate()
            .find(|(_, o)| o.targets.iter().any(|t| covers(t, instance_type)))
    }
}

/// AWS Batch allows at most ten override templates per environment.
pub const MAX_OVERRIDES: usize = 10;

/// Whether a target (a type such as `c5.xlarge` or a family such as `c5`) covers a type.
pub fn covers(target: &str, instance_type: &str) -> bool {
    target == instance_type
        || (!target.contains('.')
            && instance_type
                .split_once('.')
                .is_some_and(|(family, _)| family == target))
}

fn text(
    o: &serde_json::Map<String, Value>,
    key: &str,
    field: &str,
) -> Result<Option<String>, String> {
    match o.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) if s.is_empty() => Err(format!("{field}.{key}: must not be empty")),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(_) => Err(format!("{field}.{key}: must be a string")),
    }
}

fn template_ref(o: &serde_json::Map<String, Value>, field: &str) -> Result<TemplateRef, String> {
    let id = text(o, "launchTemplateId", field)?;
    let name = text(o, "launchTemplateName", field)?;
    match (&id, &name) {
        (Some(_), Some(_)) => {
            return Err(format!(
                "{field}: give launchTemplateId or launchTemplateName, not both"
            ));
        }
        (None, None) => {
            return Err(format!(
                "{field}: launchTemplateId or launchTemplateName is required"
            ));
        }
        _ => {}
    }
    let version = text(o, "version", field)?.unwrap_or_else(|| "$Default".into());
    if version != "$Default" && version != "$Latest" && version.parse::<u64>().is_err() {
        return Err(format!(
            "{field}.version: {version:?} is not $Default, $Latest or a version number"
        ));
    }
    if o.get("userdataType").is_some_and(|v| !v.is_null()) {
        return Err(format!(
            "{field}.userdataType: applies to EKS compute environments, which Flotilla does not run"
        ));
    }
    Ok(TemplateRef { id, name, version })
}

/// Parses and checks `launchTemplate` against the environment's `instanceTypes`: an override's
/// targets must be among them (by type, or by family for a family entry) and no type may be
/// targeted twice. The error names the offending field.
pub fn parse(v: &Value, instance_types: &[String]) -> Result<LaunchTemplate, String> {
    const F: &str = "computeResources.launchTemplate";
    let Some(o) = v.as_object() else {
        return Err(format!("{F}: must be an object"));
    };
    let base = template_ref(o, F)?;
    let list = match o.get("overrides") {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::Array(a)) => a.clone(),
        Some(_) => return Err(format!("{F}.overrides: must be a list")),
    };
    if list.len() > MAX_OVERRIDES {
        return Err(format!(
            "{F}.overrides: at most {MAX_OVERRIDES} override templates, got {}",
            list.len()
        ));
    }
    // `optimal` and the default_* aliases stand for families Flotilla picks: any target is
    // allowed then, as long as it is not targeted twice.
    let open = instance_types
        .iter()
        .any(|t| t == "optimal" || t.starts_with("default_"));
    let mut overrides: Vec<Override> = Vec::with_capacity(list.len());
    for (i, e) in list.iter().enumerate() {
        let field = format!("{F}.overrides[{i}]");
        let Some(eo) = e.as_object() else {
            return Err(format!("{field}: must be an object"));
        };
        let template = template_ref(eo, &field)?;
        let targets_field = format!("{field}.targetInstanceTypes");
        let targets = match eo.get("targetInstanceTypes") {
            Some(Value::Array(a)) if !a.is_empty() => a
                .iter()
                .map(|t| {
                    t.as_str()
                        .filter(|s| !s.is_empty())
                        .map(str::to_string)
                        .ok_or_else(|| {
                            format!("{targets_field}: entries must be non-empty strings")
                        })
                })
                .collect::<Result<Vec<_>, _>>()?,
            _ => {
                return Err(format!(
                    "{targets_field}: at least one instance type or family is required"
                ));
            }
        };
        for t in &targets {
            let allowed = open
                || instance_types
                    .iter()
                    .any(|it| it == t || covers(it, t) || covers(t, it));
            if !allowed {
                return Err(format!(
                    "{targets_field}: {t:?} is not among computeResources.instanceTypes {instance_types:?}"
                ));
            }
            let clash = overrides.iter().enumerate().find(|(_, o)| {
                o.targets
                    .iter()
                    .any(|x| x == t || covers(x, t) || covers(t, x))
            });
            if let Some((j, _)) = clash {
                return Err(format!(
                    "{targets_field}: {t:?} is already targeted by {F}.overrides[{j}]"
                ));
            }
        }
        overrides.push(Override { template, targets });
    }
    Ok(LaunchTemplate { base, overrides })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn types() -> Vec<String> {
        vec!["c5".into(), "g4dn.xlarge".into()]
    }

    #[test]
    fn a_template_by_name_defaults_to_its_default_version() {
        let lt = parse(&json!({"launchTemplateName": "big-disk"}), &types()).unwrap();
        assert_eq!(lt.base.name.as_deref(), Some("big-disk"));
        assert_eq!(lt.base.version, "$Default");
        assert!(lt.overrides.is_empty());
    }

    #[test]
    fn overrides_match_by_type_or_family() {
        let lt = parse(
            &json!({"launchTemplateId": "lt-0abc", "version": "$Latest", "overrides": [
                {"launchTemplateName": "gpu", "targetInstanceTypes": ["g4dn.xlarge"]},
                {"launchTemplateName": "compute", "version": "3", "targetInstanceTypes": ["c5.2xlarge"]},
            ]}),
            &types(),
        )
        .unwrap();
        assert_eq!(lt.override_for("g4dn.xlarge").map(|(i, _)| i), Some(0));
        assert_eq!(lt.override_for("c5.2xlarge").map(|(i, _)| i), Some(1));
        assert_eq!(lt.override_for("c5.large"), None);
        assert_eq!(lt.overrides[1].template.version, "3");
    }

    #[test]
    fn bad_templates_are_refused_naming_the_field() {
        let cases = [
            (
                json!("lt-1"),
                "computeResources.launchTemplate: must be an object",
            ),
            (
                json!({}),
                "launchTemplateId or launchTemplateName is required",
            ),
            (
                json!({"launchTemplateId": "lt-1", "launchTemplateName": "x"}),
                "not both",
            ),
            (
                json!({"launchTemplateId": "lt-1", "version": "latest"}),
                ".version",
            ),
            (
                json!({"launchTemplateId": "lt-1", "userdataType": "EKS_NODEADM"}),
                ".userdataType",
            ),
            (
                json!({"launchTemplateId": "lt-1", "overrides": [{"launchTemplateId": "lt-2"}]}),
                "overrides[0].targetInstanceTypes",
            ),
            (
                json!({"launchTemplateId": "lt-1", "overrides": [
                    {"launchTemplateId": "lt-2", "targetInstanceTypes": ["m5.large"]}]}),
                "is not among computeResources.instanceTypes",
            ),
            (
                json!({"launchTemplateId": "lt-1", "overrides": [
                    {"launchTemplateId": "lt-2", "targetInstanceTypes": ["c5"]},
                    {"launchTemplateId": "lt-3", "targetInstanceTypes": ["c5.large"]}]}),
                "overrides[1].targetInstanceTypes: \"c5.large\" is already targeted by computeResources.launchTemplate.overrides[0]",
            ),
        ];
        for (v, want) in cases {
            let e = parse(&v, &types()).unwrap_err();
            assert!(e.contains(want), "{v}: {e}");
        }
        let eleven: Vec<Value> = (0..11)
            .map(|i| json!({"launchTemplateId": format!("lt-{i}"), "targetInstanceTypes": ["c5.large"]}))
            .collect();
        let e = parse(
            &json!({"launchTemplateId": "lt-1", "overrides": eleven}),
            &["optimal".to_string()],
        )
        .unwrap_err();
        assert!(e.contains("at most 10"), "{e}");
    }
}
