//! The AMI each instance type of a managed environment boots, chosen as AWS Batch documents it:
//! `ec2Configuration` picks the image type (NVIDIA entries for GPU types, the others for the
//! rest, Graviton always the arm64 image). The AMI: an override launch template's that targets
//! the type, else that entry's `imageIdOverride`, then `computeResources.imageId`, then the
//! environment's launch template's, then the server's `--aws-ami`; otherwise the image type's
//! recommended ECS-optimized AMI from AWS's public SSM parameters, cached per parameter.

use super::AwsDriver;
use super::environments::Setup;
use crate::model::ComputeResource;
use crate::model::ec2_configuration::{self, Ec2Configuration, ImageType};
use crate::provisioner::InstanceType;
use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

/// How long a resolved parameter is reused: an environment set up (or a fleet launched) within
/// it does not ask SSM again, and a newly published AMI is picked up after it.
pub(super) const CACHE_TTL: Duration = Duration::from_secs(600);
/// GetParameters takes at most 10 names.
const GET_PARAMETERS_MAX: usize = 10;

/// Where an instance type's AMI comes from.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub(super) enum Source {
    /// Named by the environment or the server.
    Ami(String),
    /// An SSM parameter of the recommended ECS-optimized AMI.
    Parameter(String),
}

/// AMIs the user's launch templates name: the base template's is chosen after `imageId` and
/// `imageIdOverride`; an override template's before everything, for the types it targets (AWS
/// Batch's AMI selection order).
#[derive(Debug, Clone, Default)]
pub(super) struct TemplateAmis {
    pub base: Option<String>,
    /// (targets, AMI) of each override template that names one.
    pub overrides: Vec<(Vec<String>, String)>,
}

impl TemplateAmis {
    fn override_for(&self, instance_type: &str) -> Option<&str> {
        self.overrides
            .iter()
            .find(|(targets, _)| {
                targets
                    .iter()
                    .any(|t| crate::model::launch_template::covers(t, instance_type))
            })
            .map(|(_, ami)| ami.as_str())
    }
}

/// The image an instance type boots.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Resolved {
    pub image_type: ImageType,
    pub image_id: String,
}

/// Whether a type needs the NVIDIA image: GPUs in the catalog (from DescribeInstanceTypes'
/// GpuInfo), or the p and g accelerated-computing families when the catalog has no count.
/// Inferentia and Trainium (inf, trn) are not GPU types: AWS Batch gives them the plain image.
pub(super) fn is_gpu(t: &InstanceType) -> bool {
    if t.gpus > 0 {
        return true;
    }
    let mut c = t.family.chars();
    matches!(c.next(), Some('p' | 'g')) && c.next().is_some_and(|d| d.is_ascii_digit())
}

/// The image type and AMI source of one instance type.
pub(super) fn choose(
    configs: &[Ec2Configuration],
    cr_image: Option<&str>,
    server_ami: Option<&str>,
    gpu: bool,
    arm64: bool,
) -> (ImageType, Source) {
    let plain = configs.iter().find(|c| !c.image_type.nvidia());
    let nvidia = configs.iter().find(|c| c.image_type.nvidia());
    // NVIDIA images are x86 only; they "can be used for all non-Graviton types", so an x86
    // type without a plain entry takes the NVIDIA one.
    let matched = if arm64 {
        plain
    } else if gpu {
        nvidia
    } else {
        plain.or(nvidia)
    };
    let image_type = match matched {
        Some(c) => c.image_type,
        None => configs
            .first()
            .map_or(ImageType::Al2023, |c| c.image_type)
            .with_nvidia(gpu && !arm64),
    };
    let explicit = matched
        .and_then(|c| c.image_id_override.as_deref())
        .or(cr_image)
        .or(server_ami);
    let source = match explicit {
        Some(ami) => Source::Ami(ami.to_string()),
        None => Source::Parameter(parameter(image_type, arm64)),
    };
    (image_type, source)
}

/// The public SSM parameter of the recommended ECS-optimized AMI of an image type.
pub(super) fn parameter(image_type: ImageType, arm64: bool) -> String {
    let os = match image_type {
        ImageType::Al2023 | ImageType::Al2023Nvidia => "amazon-linux-2023",
        ImageType::Al2 | ImageType::Al2Nvidia => "amazon-linux-2",
    };
    let variant = if arm64 {
        "/arm64"
    } else if image_type.nvidia() {
        "/gpu"
    } else {
        ""
    };
    format!("/aws/service/ecs/optimized-ami/{os}{variant}/recommended/image_id")
}

/// The resolved images as `ec2Configuration` entries, one per (image type, AMI): an image type
/// serving both x86 and Graviton types appears twice, with each AMI.
pub(super) fn as_ec2_configuration(images: &BTreeMap<String, Resolved>) -> serde_json::Value {
    let pairs: BTreeSet<(&str, &str)> = images
        .values()
        .map(|r| (r.image_type.name(), r.image_id.as_str()))
        .collect();
    serde_json::Value::Array(
        pairs
            .into_iter()
            .map(|(t, ami)| serde_json::json!({"imageType": t, "imageIdOverride": ami}))
            .collect(),
    )
}

impl AwsDriver {
    /// The image of every instance type in `types` (the environment's allowed ones), by type
    /// name. A parameter SSM does not have in this region makes the environment INVALID naming
    /// it; SSM unreachable or throttled leaves it to the next pass.
    pub(super) async fn resolve_images(
        &self,
        cr: &ComputeResource,
        types: &[&InstanceType],
        templates: &TemplateAmis,
        fresh: bool,
    ) -> Result<BTreeMap<String, Resolved>, Setup> {
        let configs = match &cr.ec2_configuration {
            Some(v) => ec2_configuration::parse(v)
                .map_err(|e| Setup::Invalid(format!("CLIENT_ERROR - {e}")))?,
            None => Vec::new(),
        };
        let chosen: Vec<(&InstanceType, ImageType, Source)> = types
            .iter()
            .map(|t| {
                let (it, src) = choose(
                    &configs,
                    cr.image_id.as_deref().or(templates.base.as_deref()),
                    self.opts.image_id.as_deref(),
                    is_gpu(t),
                    t.arm64,
                );
                match templates.override_for(&t.name) {
                    Some(ami) => (*t, it, Source::Ami(ami.to_string())),
                    None => (*t, it, src),
                }
            })
            .collect();
        let wanted: BTreeSet<String> = chosen
            .iter()
            .filter_map(|(_, _, s)| match s {
                Source::Parameter(p) => Some(p.clone()),
                Source::Ami(_) => None,
            })
            .collect();
        let values = self.parameters(&wanted, fresh).await?;
        let mut out = BTreeMap::new();
        for (t, image_type, src) in chosen {
            let image_id = match src {
                Source::Ami(a) => a,
                Source::Parameter(p) => match values.get(&p) {
                    Some(v) => v.clone(),
                    None => continue,
                },
            };
            out.insert(
                t.name.clone(),
                Resolved {
                    image_type,
                    image_id,
                },
            );
        }
        Ok(out)
    }

    /// The values of SSM parameters, from the cache when fresh (and not asked for `fresh` ones),
    /// else one GetParameters per 10.
    async fn parameters(
        &self,
        names: &BTreeSet<String>,
        fresh: bool,
    ) -> Result<BTreeMap<String, String>, Setup> {
        let now = Instant::now();
        let mut out = BTreeMap::new();
        let mut missing = Vec::new();
        {
            let cache = self.amis.lock().unwrap_or_else(|e| e.into_inner());
            for n in names {
                match cache.get(n) {
                    Some((v, at)) if !fresh && now.duration_since(*at) < CACHE_TTL => {
                        out.insert(n.clone(), v.clone());
                    }
                    _ => missing.push(n.clone()),
                }
            }
        }
        for chunk in missing.chunks(GET_PARAMETERS_MAX) {
            let r = self
                .api
                .call(
                    "ssm",
                    "GetParameters",
                    self.api
                        .ssm
                        .get_parameters()
                        .set_names(Some(chunk.to_vec()))
                        .send(),
                )
                .await
                .map_err(Setup::Aws)?;
            if let Some(bad) = r.invalid_parameters().first() {
                return Err(Setup::Invalid(format!(
                    "CLIENT_ERROR - computeResources.ec2Configuration: SSM parameter {bad} does not exist in region {} \
                     (no ECS-optimized AMI of that image type and architecture there); set imageIdOverride or imageId",
                    self.opts.api.region
                )));
            }
            let mut cache = self.amis.lock().unwrap_or_else(|e| e.into_inner());
            for p in r.parameters() {
                if let (Some(n), Some(v)) = (p.name(), p.value()) {
                    tracing::info!(parameter = n, image_id = v, "ECS-optimized AMI resolved");
                    cache.insert(n.to_string(), (v.to_string(), Instant::now()));
                    out.insert(n.to_string(), v.to_string());
                }
            }
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(t: ImageType, ov: Option<&str>) -> Ec2Configuration {
        Ec2Configuration {
            image_type: t,
            image_id_override: ov.map(str::to_string),
        }
    }

    fn p(s: &str) -> Source {
        Source::Parameter(format!(
            "/aws/service/ecs/optimized-ami/{s}/recommended/image_id"
        ))
    }

    #[test]
    fn defaults_are_al2023_by_architecture_and_gpu() {
        assert_eq!(
            choose(&[], None, None, false, false),
            (ImageType::Al2023, p("amazon-linux-2023"))
        );
        assert_eq!(
            choose(&[], None, None, true, false),
            (ImageType::Al2023Nvidia, p("amazon-linux-2023/gpu"))
        );
        assert_eq!(
            choose(&[], None, None, false, true),
            (ImageType::Al2023, p("amazon-linux-2023/arm64"))
        );
        // A Graviton GPU type (g5g): there is no arm64 NVIDIA image; arm64 wins.
        assert_eq!(
            choose(&[], None, None, true, true),
            (ImageType::Al2023, p("amazon-linux-2023/arm64"))
        );
    }

    #[test]
    fn ec2_configuration_picks_the_image_type_per_instance_type() {
        let al2 = [cfg(ImageType::Al2, None)];
        assert_eq!(
            choose(&al2, None, None, false, false),
            (ImageType::Al2, p("amazon-linux-2"))
        );
        assert_eq!(
            choose(&al2, None, None, true, false),
            (ImageType::Al2Nvidia, p("amazon-linux-2/gpu"))
        );
        assert_eq!(
            choose(&al2, None, None, false, true),
            (ImageType::Al2, p("amazon-linux-2/arm64"))
        );
        // Only an NVIDIA entry: it serves every x86 type; Graviton gets the plain arm64 image.
        let nv = [cfg(ImageType::Al2Nvidia, Some("ami-0000000000000000a"))];
        assert_eq!(
            choose(&nv, None, None, false, false),
            (
                ImageType::Al2Nvidia,
                Source::Ami("ami-0000000000000000a".into())
            )
        );
        assert_eq!(
            choose(&nv, None, None, false, true),
            (ImageType::Al2, p("amazon-linux-2/arm64"))
        );
    }

    #[test]
    fn image_id_override_beats_image_id_beats_the_server_ami() {
        let both = [
            cfg(ImageType::Al2023, None),
            cfg(ImageType::Al2023Nvidia, Some("ami-0000000000000000b")),
        ];
        assert_eq!(
            choose(&both, Some("ami-c"), Some("ami-d"), true, false).1,
            Source::Ami("ami-0000000000000000b".into())
        );
        assert_eq!(
            choose(&both, Some("ami-c"), Some("ami-d"), false, false).1,
            Source::Ami("ami-c".into())
        );
        assert_eq!(
            choose(&both, None, Some("ami-d"), false, false).1,
            Source::Ami("ami-d".into())
        );
    }
}
