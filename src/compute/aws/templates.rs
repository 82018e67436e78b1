//! The user's launch templates (`computeResources.launchTemplate`) merged into the templates
//! Flotilla launches from, as AWS Batch merges them: Flotilla never launches from the user's
//! template itself but from one of its own that starts from the user's version and adds what the
//! environment needs.
//!
//! - The environment's own settings win over the template's: key pair, security groups,
//!   instance role, placement group; tags are merged with the environment's winning a clash.
//! - What AWS Batch ignores in a template, Flotilla ignores too: instance type (the environment's
//!   `instanceTypes` choose), instance market options (the environment's type chooses Spot or
//!   on-demand), instance requirements.
//! - User data: AWS Batch requires the user's to be a MIME multi-part document and adds its own
//!   part. Flotilla does the same, and also takes a plain script or cloud-config (made one part).
//! - Settings Flotilla cannot carry into its template (network interfaces, elastic GPUs and
//!   inference accelerators, capacity reservations, operator, secondary interfaces, network
//!   performance options) make the environment INVALID naming them rather than be dropped.

use super::AwsDriver;
use super::environments::Setup;
use crate::model::launch_template::TemplateRef;
use aws_sdk_ec2::types as ec2t;

/// The boundary of the MIME document Flotilla writes; a longer one is used if a part contains it.
const BOUNDARY: &str = "==FLOTILLA-BOUNDARY==";

impl AwsDriver {
    /// The data of one version of a user's template. EC2 refusing it (no such template or
    /// version, malformed ID) makes the environment INVALID with EC2's error.
    pub(super) async fn read_user_template(
        &self,
        r: &TemplateRef,
        field: &str,
    ) -> Result<ec2t::ResponseLaunchTemplateData, Setup> {
        let call = self
            .api
            .ec2
            .describe_launch_template_versions()
            .set_launch_template_id(r.id.clone())
            .set_launch_template_name(r.name.clone())
            .versions(&r.version)
            .send();
        match self
            .api
            .call("ec2", "DescribeLaunchTemplateVersions", call)
            .await
        {
            Ok(out) => out
                .launch_template_versions()
                .first()
                .and_then(|v| v.launch_template_data())
                .cloned()
                .ok_or_else(|| {
                    Setup::Invalid(format!(
                        "CLIENT_ERROR - {field}: EC2 has no launch template {}",
                        r.describe()
                    ))
                }),
            Err(e) if e.retryable => Err(Setup::Aws(e)),
            Err(e) => Err(Setup::Invalid(format!(
                "CLIENT_ERROR - {field}: launch template {}: {}: {}",
                r.describe(),
                e.code,
                e.message
            ))),
        }
    }
}

/// What Flotilla adds to (or puts over) a user's template.
pub(super) struct Ours<'a> {
    pub image_id: Option<&'a str>,
    pub user_data: &'a str,
    pub key_name: Option<&'a str>,
    pub security_group_ids: Option<&'a [String]>,
    pub instance_role: Option<&'a str>,
    pub placement_group: Option<&'a str>,
    /// The environment's `computeResources.tags` (already without reserved keys).
    pub tags: &'a [(String, String)],
}

/// The template data Flotilla creates: the user's version (if any) with Flotilla's settings
/// merged in. `Err` names a template setting Flotilla cannot carry.
pub(super) fn merge(
    user: Option<&ec2t::ResponseLaunchTemplateData>,
    ours: &Ours<'_>,
    what: &str,
) -> Result<ec2t::RequestLaunchTemplateData, String> {
    use base64::Engine as _;
    let b64 = base64::engine::general_purpose::STANDARD;
    let mut data = ec2t::RequestLaunchTemplateData::builder();
    let mut user_data = None;
    if let Some(u) = user {
        refuse_uncarried(u, what)?;
        data = carry(data, u);
        if let Some(encoded) = u.user_data() {
            let raw = b64
                .decode(encoded.trim())
                .map_err(|_| format!("{what}: its UserData is not base64"))?;
            user_data = Some(
                String::from_utf8(raw)
                    .map_err(|_| format!("{what}: its UserData is not UTF-8 text"))?,
            );
        }
    }
    let merged = match user_data {
        Some(theirs) => merge_user_data(&theirs, ours.user_data)
            .map_err(|e| format!("{what}: its UserData {e}"))?,
        None => ours.user_data.to_string(),
    };
    data = data
        .user_data(b64.encode(merged))
        .set_image_id(ours.image_id.map(str::to_string));
    if let Some(k) = ours.key_name {
        data = data.key_name(k);
    }
    if let Some(groups) = ours.security_group_ids
        && !groups.is_empty()
    {
        // The environment's groups replace the template's, by ID or by name.
        data = data
            .set_security_group_ids(Some(groups.to_vec()))
            .set_security_groups(None);
    }
    if let Some(role) = ours.instance_role {
        let profile = ec2t::LaunchTemplateIamInstanceProfileSpecificationRequest::builder();
        data = data.iam_instance_profile(if role.starts_with("arn:") {
            profile.arn(role).build()
        } else {
            profile.name(role).build()
        });
    }
    if let Some(group) = ours.placement_group {
        let p = user
            .and_then(|u| u.placement())
            .map(placement)
            .unwrap_or_else(ec2t::LaunchTemplatePlacementRequest::builder);
        data = data.placement(p.group_name(group).set_group_id(None).build());
    }
    if let Some(specs) = user.map(|u| u.tag_specifications()) {
        let ours_keys: std::collections::HashSet<&str> =
            ours.tags.iter().map(|(k, _)| k.as_str()).collect();
        let mut out = Vec::new();
        for s in specs {
            let mut b = ec2t::LaunchTemplateTagSpecificationRequest::builder()
                .set_resource_type(s.resource_type().cloned());
            for t in s.tags() {
                // The environment's tags go on instances with CreateFleet; theirs win a clash.
                let key = t.key().unwrap_or_default();
                if s.resource_type() == Some(&ec2t::ResourceType::Instance)
                    && (ours_keys.contains(key) || key.starts_with("flotilla:"))
                {
                    continue;
                }
                b = b.tags(t.clone());
            }
            out.push(b.build());
        }
        data = data.set_tag_specifications(Some(out));
    }
    Ok(data.build())
}

/// Rejects what cannot be carried from a response into a request faithfully.
fn refuse_uncarried(u: &ec2t::ResponseLaunchTemplateData, what: &str) -> Result<(), String> {
    let set = [
        ("NetworkInterfaces", !u.network_interfaces().is_empty()),
        (
            "ElasticGpuSpecifications",
            !u.elastic_gpu_specifications().is_empty(),
        ),
        (
            "ElasticInferenceAccelerators",
            !u.elastic_inference_accelerators().is_empty(),
        ),
        (
            "CapacityReservationSpecification",
            u.capacity_reservation_specification().is_some(),
        ),
        ("Operator", u.operator().is_some()),
        (
            "NetworkPerformanceOptions",
            u.network_performance_options().is_some(),
        ),
        ("SecondaryInterfaces", !u.secondary_interfaces().is_empty()),
    ];
    match set.iter().find(|(_, on)| *on) {
        Some((name, _)) => Err(format!(
            "{what} sets {name}, which Flotilla cannot carry into the launch template it launches from \
             (the environment's subnets and security groups choose the network); remove it from the template"
        )),
        None => Ok(()),
    }
}

fn placement(
    p: &ec2t::LaunchTemplatePlacement,
) -> ec2t::builders::LaunchTemplatePlacementRequestBuilder {
    ec2t::LaunchTemplatePlacementRequest::builder()
        .set_availability_zone(p.availability_zone().map(str::to_string))
        .set_availability_zone_id(p.availability_zone_id().map(str::to_string))
        .set_affinity(p.affinity().map(str::to_string))
        .set_group_name(p.group_name().map(str::to_string))
        .set_host_id(p.host_id().map(str::to_string))
        .set_tenancy(p.tenancy().cloned())
        .set_spread_domain(p.spread_domain().map(str::to_string))
        .set_host_resource_group_arn(p.host_resource_group_arn().map(str::to_string))
        .set_partition_number(p.partition_number())
        .set_group_id(p.group_id().map(str::to_string))
}

/// The template settings that go across unchanged (converted from EC2's response shapes to its
/// request shapes, which the SDK keeps apart).
fn carry(
    mut d: ec2t::builders::RequestLaunchTemplateDataBuilder,
    u: &ec2t::ResponseLaunchTemplateData,
) -> ec2t::builders::RequestLaunchTemplateDataBuilder {
    d = d
        .set_kernel_id(u.kernel_id().map(str::to_string))
        .set_ram_disk_id(u.ram_disk_id().map(str::to_string))
        .set_ebs_optimized(u.ebs_optimized())
        .set_key_name(u.key_name().map(str::to_string))
        .set_disable_api_termination(u.disable_api_termination())
        .set_disable_api_stop(u.disable_api_stop())
        .set_instance_initiated_shutdown_behavior(u.instance_initiated_shutdown_behavior().cloned())
        .set_credit_specification(u.credit_specification().map(|c| {
            ec2t::CreditSpecificationRequest::builder()
                .set_cpu_credits(c.cpu_credits().map(str::to_string))
                .build()
        }));
    if !u.security_group_ids().is_empty() {
        d = d.set_security_group_ids(Some(u.security_group_ids().to_vec()));
    }
    if !u.security_groups().is_empty() {
        d = d.set_security_groups(Some(u.security_groups().to_vec()));
    }
    if let Some(p) = u.iam_instance_profile() {
        d = d.iam_instance_profile(
            ec2t::LaunchTemplateIamInstanceProfileSpecificationRequest::builder()
                .set_arn(p.arn().map(str::to_string))
                .set_name(p.name().map(str::to_string))
                .build(),
        );
    }
    for m in u.block_device_mappings() {
        let ebs = m.ebs().map(|e| {
            ec2t::LaunchTemplateEbsBlockDeviceRequest::builder()
                .set_encrypted(e.encrypted())
                .set_delete_on_termination(e.delete_on_termination())
                .set_iops(e.iops())
                .set_kms_key_id(e.kms_key_id().map(str::to_string))
                .set_snapshot_id(e.snapshot_id().map(str::to_string))
                .set_volume_size(e.volume_size())
                .set_volume_type(e.volume_type().cloned())
                .set_throughput(e.throughput())
                .set_volume_initialization_rate(e.volume_initialization_rate())
                .set_ebs_card_index(e.ebs_card_index())
                .build()
        });
        d = d.block_device_mappings(
            ec2t::LaunchTemplateBlockDeviceMappingRequest::builder()
                .set_device_name(m.device_name().map(str::to_string))
                .set_virtual_name(m.virtual_name().map(str::to_string))
                .set_ebs(ebs)
                .set_no_device(m.no_device().map(str::to_string))
                .build(),
        );
    }
    if let Some(m) = u.monitoring() {
        d = d.monitoring(
            ec2t::LaunchTemplatesMonitoringRequest::builder()
                .set_enabled(m.enabled())
                .build(),
        );
    }
    if let Some(p) = u.placement() {
        d = d.placement(placement(p).build());
    }
    if let Some(c) = u.cpu_options() {
        d = d.cpu_options(
            ec2t::LaunchTemplateCpuOptionsRequest::builder()
                .set_core_count(c.core_count())
                .set_threads_per_core(c.threads_per_core())
                .set_amd_sev_snp(c.amd_sev_snp().cloned())
                .set_nested_virtualization(c.nested_virtualization().cloned())
                .build(),
        );
    }
    for l in u.license_specifications() {
        d = d.license_specifications(
            ec2t::LaunchTemplateLicenseConfigurationRequest::builder()
                .set_license_configuration_arn(l.license_configuration_arn().map(str::to_string))
                .build(),
        );
    }
    if let Some(h) = u.hibernation_options() {
        d = d.hibernation_options(
            ec2t::LaunchTemplateHibernationOptionsRequest::builder()
                .set_configured(h.configured())
                .build(),
        );
    }
    if let Some(m) = u.metadata_options() {
        d = d.metadata_options(
            ec2t::LaunchTemplateInstanceMetadataOptionsRequest::builder()
                .set_http_tokens(m.http_tokens().cloned())
                .set_http_put_response_hop_limit(m.http_put_response_hop_limit())
                .set_http_endpoint(m.http_endpoint().cloned())
                .set_http_protocol_ipv6(m.http_protocol_ipv6().cloned())
                .set_instance_metadata_tags(m.instance_metadata_tags().cloned())
                .build(),
        );
    }
    if let Some(e) = u.enclave_options() {
        d = d.enclave_options(
            ec2t::LaunchTemplateEnclaveOptionsRequest::builder()
                .set_enabled(e.enabled())
                .build(),
        );
    }
    if let Some(p) = u.private_dns_name_options() {
        d = d.private_dns_name_options(
            ec2t::LaunchTemplatePrivateDnsNameOptionsRequest::builder()
                .set_hostname_type(p.hostname_type().cloned())
                .set_enable_resource_name_dns_a_record(p.enable_resource_name_dns_a_record())
                .set_enable_resource_name_dns_aaaa_record(p.enable_resource_name_dns_aaaa_record())
                .build(),
        );
    }
    if let Some(m) = u.maintenance_options() {
        d = d.maintenance_options(
            ec2t::LaunchTemplateInstanceMaintenanceOptionsRequest::builder()
                .set_auto_recovery(m.auto_recovery().cloned())
                .build(),
        );
    }
    d
}

/// One part of a MIME multi-part document: its headers (as written) and body.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Part {
    headers: String,
    body: String,
}

/// The user's user data and Flotilla's script as one MIME multi-part document: the user's parts
/// first (cloud-init runs them in order), then Flotilla's. `Err` says what is wrong with theirs.
pub(super) fn merge_user_data(theirs: &str, ours: &str) -> Result<String, String> {
    let mut parts = user_parts(theirs)?;
    parts.push(Part {
        headers: "Content-Type: text/x-shellscript; charset=\"us-ascii\"".into(),
        body: ours.to_string(),
    });
    let mut boundary = BOUNDARY.to_string();
    while parts.iter().any(|p| p.body.contains(&boundary)) {
        boundary.insert(2, 'X');
    }
    let mut out =
        format!("MIME-Version: 1.0\nContent-Type: multipart/mixed; boundary=\"{boundary}\"\n\n");
    for p in &parts {
        out.push_str(&format!("--{boundary}\n{}\n\n{}", p.headers, p.body));
        if !p.body.ends_with('\n') {
            out.push('\n');
        }
        out.push('\n');
    }
    out.push_str(&format!("--{boundary}--\n"));
    Ok(out)
}

/// The parts of the user's user data: those of a MIME multi-part document, or a script or
/// cloud-config as one part.
fn user_parts(theirs: &str) -> Result<Vec<Part>, String> {
    let text = theirs.replace("\r\n", "\n");
    let trimmed = text.trim_start();
    if trimmed.starts_with("#!") {
        return Ok(vec![Part {
            headers: "Content-Type: text/x-shellscript; charset=\"us-ascii\"".into(),
            body: trimmed.to_string(),
        }]);
    }
    if trimmed.starts_with("#cloud-config") {
        return Ok(vec![Part {
            headers: "Content-Type: text/cloud-config; charset=\"us-ascii\"".into(),
            body: trimmed.to_string(),
        }]);
    }
    let (head, body) = trimmed
        .split_once("\n\n")
        .ok_or("is neither a MIME multi-part document nor a script (#!) or #cloud-config")?;
    let boundary = content_type_boundary(head)
        .ok_or("is neither a MIME multi-part document (Content-Type: multipart/mixed with a boundary) nor a script (#!) or #cloud-config")?;
    let delimiter = format!("--{boundary}");
    let mut parts = Vec::new();
    let mut closed = false;
    let mut current: Option<Vec<&str>> = None;
    for line in body.split('\n') {
        let l = line.trim_end();
        if l == format!("{delimiter}--") {
            if let Some(lines) = current.take() {
                parts.push(part(&lines)?);
            }
            closed = true;
            break;
        }
        if l == delimiter {
            if let Some(lines) = current.take() {
                parts.push(part(&lines)?);
            }
            current = Some(Vec::new());
            continue;
        }
        if let Some(lines) = current.as_mut() {
            lines.push(line);
        }
    }
    if !closed {
        return Err(format!(
            "is a MIME multi-part document without its closing boundary --{boundary}--"
        ));
    }
    if parts.is_empty() {
        return Err("is a MIME multi-part document with no parts".into());
    }
    Ok(parts)
}

fn part(lines: &[&str]) -> Result<Part, String> {
    let split = lines
        .iter()
        .position(|l| l.trim().is_empty())
        .ok_or("has a part without the blank line after its headers")?;
    let headers = lines[..split].join("\n");
    let mut body = lines[split + 1..].join("\n");
    // The line break before the next delimiter belongs to the delimiter.
    while body.ends_with("\n\n") {
        body.pop();
    }
    Ok(Part { headers, body })
}

/// The boundary of a `multipart/*` Content-Type header among `head`'s headers (which may be
/// folded onto continuation lines).
fn content_type_boundary(head: &str) -> Option<String> {
    let mut unfolded: Vec<String> = Vec::new();
    for line in head.lines() {
        if line.starts_with([' ', '\t']) {
            if let Some(last) = unfolded.last_mut() {
                last.push(' ');
                last.push_str(line.trim());
            }
        } else {
            unfolded.push(line.to_string());
        }
    }
    let ct = unfolded.iter().find_map(|h| {
        let (name, value) = h.split_once(':')?;
        name.trim()
            .eq_ignore_ascii_case("content-type")
            .then(|| value.trim().to_string())
    })?;
    if !ct.to_ascii_lowercase().starts_with("multipart/") {
        return None;
    }
    ct.split(';').skip(1).find_map(|p| {
        let (k, v) = p.split_once('=')?;
        k.trim()
            .eq_ignore_ascii_case("boundary")
            .then(|| v.trim().trim_matches('"').to_string())
            .filter(|b| !b.is_empty())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const OURS: &str = "#!/bin/bash\necho ECS_CLUSTER=c >> /etc/ecs/ecs.config\n";

    fn parts_of(doc: &str) -> Vec<Part> {
        user_parts(doc).expect("a MIME document")
    }

    #[test]
    fn a_mime_document_keeps_its_parts_and_gains_ours_last() {
        let theirs = "MIME-Version: 1.0\nContent-Type: multipart/mixed; boundary=\"==MYBOUNDARY==\"\n\n\
                      --==MYBOUNDARY==\nContent-Type: text/x-shellscript; charset=\"us-ascii\"\n\n\
                      #!/bin/bash\nmkfs -t ext4 /dev/xvdb\n\n\
                      --==MYBOUNDARY==\nContent-Type: text/cloud-config\n\npackages:\n - jq\n\n\
                      --==MYBOUNDARY==--\n";
        let merged = merge_user_data(theirs, OURS).unwrap();
        let parts = parts_of(&merged);
        assert_eq!(parts.len(), 3, "{merged}");
        assert_eq!(parts[0].body, "#!/bin/bash\nmkfs -t ext4 /dev/xvdb\n");
        assert_eq!(parts[1].headers, "Content-Type: text/cloud-config");
        assert_eq!(parts[1].body, "packages:\n - jq\n");
        assert_eq!(parts[2].body, OURS);
        assert!(merged.contains("boundary=\"==FLOTILLA-BOUNDARY==\""));
    }

    #[test]
    fn crlf_and_unquoted_boundaries_and_a_plain_script_are_taken() {
        let theirs = "Content-Type: multipart/mixed;\r\n boundary=b1\r\nMIME-Version: 1.0\r\n\r\n--b1\r\nContent-Type: text/x-shellscript\r\n\r\n#!/bin/sh\r\necho hi\r\n--b1--\r\n";
        let parts = parts_of(&merge_user_data(theirs, OURS).unwrap());
        assert_eq!(parts.len(), 2);
        assert_eq!(parts[0].body, "#!/bin/sh\necho hi\n");
        let parts = parts_of(&merge_user_data("#!/bin/sh\necho one\n", OURS).unwrap());
        assert_eq!(parts[0].body, "#!/bin/sh\necho one\n");
        assert_eq!(parts[1].body, OURS);
    }

    #[test]
    fn a_part_containing_our_boundary_gets_a_longer_one() {
        let theirs = "#!/bin/sh\necho --==FLOTILLA-BOUNDARY==\n";
        let merged = merge_user_data(theirs, OURS).unwrap();
        let parts = parts_of(&merged);
        assert_eq!(parts.len(), 2, "{merged}");
        assert_eq!(parts[0].body, theirs);
    }

    #[test]
    fn user_data_that_is_not_mime_or_a_script_is_refused() {
        for bad in [
            "echo no shebang",
            "Content-Type: text/plain\n\nhello",
            "Content-Type: multipart/mixed; boundary=x\n\n--x\nContent-Type: text/x-shellscript\n\n#!/bin/sh\n",
        ] {
            assert!(merge_user_data(bad, OURS).is_err(), "{bad}");
        }
    }

    fn ours<'a>(tags: &'a [(String, String)]) -> Ours<'a> {
        Ours {
            image_id: None,
            user_data: OURS,
            key_name: Some("env-key"),
            security_group_ids: None,
            instance_role: Some("ecsInstanceRole"),
            placement_group: None,
            tags,
        }
    }

    #[test]
    fn the_template_keeps_its_disks_and_metadata_options_and_the_environment_wins() {
        use base64::Engine as _;
        let b64 = base64::engine::general_purpose::STANDARD;
        let user = ec2t::ResponseLaunchTemplateData::builder()
            .key_name("their-key")
            .security_group_ids("sg-theirs")
            .block_device_mappings(
                ec2t::LaunchTemplateBlockDeviceMapping::builder()
                    .device_name("/dev/xvda")
                    .ebs(
                        ec2t::LaunchTemplateEbsBlockDevice::builder()
                            .volume_size(200)
                            .volume_type(ec2t::VolumeType::Gp3)
                            .encrypted(true)
                            .build(),
                    )
                    .build(),
            )
            .metadata_options(
                ec2t::LaunchTemplateInstanceMetadataOptions::builder()
                    .http_tokens(ec2t::LaunchTemplateHttpTokensState::Required)
                    .http_put_response_hop_limit(2)
                    .build(),
            )
            .instance_type(ec2t::InstanceType::M5Large)
            .user_data(b64.encode("#!/bin/bash\necho theirs\n"))
            .tag_specifications(
                ec2t::LaunchTemplateTagSpecification::builder()
                    .resource_type(ec2t::ResourceType::Instance)
                    .tags(ec2t::Tag::builder().key("team").value("theirs").build())
                    .tags(ec2t::Tag::builder().key("cost").value("c1").build())
                    .build(),
            )
            .build();
        let tags = vec![("team".to_string(), "env".to_string())];
        let d = merge(Some(&user), &ours(&tags), "lt").unwrap();
        let root = &d.block_device_mappings()[0];
        assert_eq!(root.device_name(), Some("/dev/xvda"));
        assert_eq!(root.ebs().and_then(|e| e.volume_size()), Some(200));
        assert_eq!(root.ebs().and_then(|e| e.encrypted()), Some(true));
        assert_eq!(
            d.metadata_options().and_then(|m| m.http_tokens()),
            Some(&ec2t::LaunchTemplateHttpTokensState::Required)
        );
        assert_eq!(d.key_name(), Some("env-key"));
        assert_eq!(d.security_group_ids(), ["sg-theirs"]);
        assert_eq!(d.instance_type(), None, "the environment chooses types");
        assert_eq!(
            d.iam_instance_profile().and_then(|p| p.name()),
            Some("ecsInstanceRole")
        );
        let spec_tags: Vec<_> = d.tag_specifications()[0]
            .tags()
            .iter()
            .filter_map(|t| t.key())
            .collect();
        assert_eq!(spec_tags, ["cost"], "the environment's team tag wins");
        let text = String::from_utf8(b64.decode(d.user_data().unwrap()).unwrap()).unwrap();
        let parts = parts_of(&text);
        assert_eq!(parts[0].body, "#!/bin/bash\necho theirs\n");
        assert_eq!(parts[1].body, OURS);
    }

    #[test]
    fn settings_that_cannot_be_carried_are_named() {
        let user = ec2t::ResponseLaunchTemplateData::builder()
            .network_interfaces(
                ec2t::LaunchTemplateInstanceNetworkInterfaceSpecification::builder()
                    .associate_public_ip_address(true)
                    .build(),
            )
            .build();
        let e = merge(
            Some(&user),
            &ours(&[]),
            "launch template lt-1 version $Default",
        )
        .unwrap_err();
        assert!(e.contains("sets NetworkInterfaces"), "{e}");
    }

    #[test]
    fn without_a_user_template_only_ours_is_there() {
        use base64::Engine as _;
        let d = merge(None, &ours(&[]), "").unwrap();
        let text = base64::engine::general_purpose::STANDARD
            .decode(d.user_data().unwrap())
            .unwrap();
        assert_eq!(text, OURS.as_bytes());
        assert!(d.block_device_mappings().is_empty());
    }
}
