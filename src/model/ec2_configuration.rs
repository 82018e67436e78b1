//! `computeResources.ec2Configuration`: which ECS-optimized image family each instance type of a
//! managed environment boots, and an AMI that replaces the family's recommended one.

use serde_json::Value;

/// The ECS image types AWS Batch accepts (EKS ones are refused: Flotilla has no EKS).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ImageType {
    Al2023,
    Al2023Nvidia,
    Al2,
    Al2Nvidia,
}

impl ImageType {
    pub const NAMES: [&'static str; 4] = [
        "ECS_AL2023",
        "ECS_AL2023_NVIDIA",
        "ECS_AL2",
        "ECS_AL2_NVIDIA",
    ];

    pub fn parse(s: &str) -> Option<ImageType> {
        Some(match s {
            "ECS_AL2023" => ImageType::Al2023,
            "ECS_AL2023_NVIDIA" => ImageType::Al2023Nvidia,
            "ECS_AL2" => ImageType::Al2,
            "ECS_AL2_NVIDIA" => ImageType::Al2Nvidia,
            _ => return None,
        })
    }

    pub fn name(self) -> &'static str {
        match self {
            ImageType::Al2023 => "ECS_AL2023",
            ImageType::Al2023Nvidia => "ECS_AL2023_NVIDIA",
            ImageType::Al2 => "ECS_AL2",
            ImageType::Al2Nvidia => "ECS_AL2_NVIDIA",
        }
    }

    pub fn nvidia(self) -> bool {
        matches!(self, ImageType::Al2023Nvidia | ImageType::Al2Nvidia)
    }

    /// The same OS generation with or without the NVIDIA driver.
    pub fn with_nvidia(self, nvidia: bool) -> ImageType {
        match (self, nvidia) {
            (ImageType::Al2023 | ImageType::Al2023Nvidia, false) => ImageType::Al2023,
            (ImageType::Al2023 | ImageType::Al2023Nvidia, true) => ImageType::Al2023Nvidia,
            (ImageType::Al2 | ImageType::Al2Nvidia, false) => ImageType::Al2,
            (ImageType::Al2 | ImageType::Al2Nvidia, true) => ImageType::Al2Nvidia,
        }
    }
}

/// One entry of `ec2Configuration`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ec2Configuration {
    pub image_type: ImageType,
    pub image_id_override: Option<String>,
}

/// Parses and checks `ec2Configuration` as AWS Batch does for ECS environments: one or two
/// entries, each with an `imageType` of [`ImageType::NAMES`]; `imageKubernetesVersion` is EKS
/// only. The error names the offending field.
pub fn parse(v: &Value) -> Result<Vec<Ec2Configuration>, String> {
    const F: &str = "computeResources.ec2Configuration";
    let Some(list) = v.as_array() else {
        return Err(format!("{F}: must be a list"));
    };
    if list.len() > 2 {
        return Err(format!(
            "{F}: at most 2 entries (one image type for GPU instance types, one for the rest), got {}",
            list.len()
        ));
    }
    let mut out = Vec::with_capacity(list.len());
    for (i, e) in list.iter().enumerate() {
        let Some(o) = e.as_object() else {
            return Err(format!("{F}[{i}]: must be an object"));
        };
        if o.contains_key("imageKubernetesVersion") {
            return Err(format!(
                "{F}[{i}].imageKubernetesVersion: applies to EKS compute environments only, which Flotilla does not support"
            ));
        }
        let image_type = match o.get("imageType") {
            None | Some(Value::Null) => return Err(format!("{F}[{i}].imageType: is required")),
            Some(Value::String(s)) => ImageType::parse(s).ok_or_else(|| {
                format!(
                    "{F}[{i}].imageType: {s:?} is not an ECS image type Flotilla supports ({})",
                    ImageType::NAMES.join(", ")
                )
            })?,
            Some(_) => return Err(format!("{F}[{i}].imageType: must be a string")),
        };
        let image_id_override = match o.get("imageIdOverride") {
            None | Some(Value::Null) => None,
            Some(Value::String(s)) if is_ami_id(s) => Some(s.clone()),
            Some(other) => {
                return Err(format!(
                    "{F}[{i}].imageIdOverride: {other} is not an AMI ID (ami-…)"
                ));
            }
        };
        if out
            .iter()
            .any(|c: &Ec2Configuration| c.image_type == image_type)
        {
            return Err(format!(
                "{F}[{i}].imageType: {} is listed twice",
                image_type.name()
            ));
        }
        out.push(Ec2Configuration {
            image_type,
            image_id_override,
        });
    }
    Ok(out)
}

fn is_ami_id(s: &str) -> bool {
    s.strip_prefix("ami-")
        .is_some_and(|h| (8..=17).contains(&h.len()) && h.chars().all(|c| c.is_ascii_hexdigit()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn accepts_the_ecs_image_types_with_overrides() {
        let c = parse(&json!([
            {"imageType": "ECS_AL2023"},
            {"imageType": "ECS_AL2023_NVIDIA", "imageIdOverride": "ami-0123456789abcdef0"}
        ]))
        .unwrap();
        assert_eq!(c[0].image_type, ImageType::Al2023);
        assert_eq!(c[0].image_id_override, None);
        assert_eq!(c[1].image_type, ImageType::Al2023Nvidia);
        assert_eq!(
            c[1].image_id_override.as_deref(),
            Some("ami-0123456789abcdef0")
        );
    }

    #[test]
    fn refusals_name_the_field() {
        for (v, field) in [
            (
                json!([{"imageType": "ECS_AL2023", "imageKubernetesVersion": "1.30"}]),
                "ec2Configuration[0].imageKubernetesVersion:",
            ),
            (
                json!([{"imageType": "EKS_AL2"}]),
                "ec2Configuration[0].imageType: \"EKS_AL2\"",
            ),
            (json!([{}]), "ec2Configuration[0].imageType: is required"),
            (
                json!([{"imageType": "ECS_AL2", "imageIdOverride": "img-1"}]),
                "ec2Configuration[0].imageIdOverride:",
            ),
            (
                json!([{"imageType": "ECS_AL2"}, {"imageType": "ECS_AL2"}]),
                "ec2Configuration[1].imageType: ECS_AL2 is listed twice",
            ),
            (
                json!([{"imageType": "ECS_AL2"}, {"imageType": "ECS_AL2_NVIDIA"}, {"imageType": "ECS_AL2023"}]),
                "ec2Configuration: at most 2",
            ),
        ] {
            let e = parse(&v).unwrap_err();
            assert!(e.contains(field), "{v}: {e}");
        }
    }
}
