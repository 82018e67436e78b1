//! The table itself: one line a member. Keep it in the model's shape order, one shape a block.

use super::Support::{self, *};

const NAME: Support = Honoured("");
const PAGING: Support = Honoured("");
/// Applied by LOCAL Docker; refused by name on the process runtime.
const DOCKER: Support = Honoured(
    "ECS and LOCAL Docker apply it; the process runtime ends the attempt with a MISCONFIGURATION reason naming it",
);
/// Applied by ECS, LOCAL Docker and the process runtime.
const LOCAL: Support = Honoured("ECS, LOCAL Docker and the process runtime (setrlimit) apply it");
/// The process runtime switches users only when the server runs as root.
const USER: Support = Honoured(
    "ECS and LOCAL Docker apply it; the process runtime too when the server runs as root (else a MISCONFIGURATION reason naming it)",
);
const EFS: Support = Honoured(
    "ECS mounts it; a LOCAL environment ends the attempt with a MISCONFIGURATION reason naming the EFS volume",
);
const LOGS: Support = Honoured(
    "ECS: as given; LOCAL: awslogs to /aws/batch/job only, any other driver or group ends the attempt with a MISCONFIGURATION reason",
);
/// Injected by ECS; on LOCAL read from AWS or the secrets file.
const SECRETS: Support = Honoured(
    "ECS injects them; LOCAL reads them from SSM Parameter Store / Secrets Manager with the server's AWS access, or from <data-dir>/secrets.json without it, and a secret that cannot be read ends the attempt before it starts with a reason naming it",
);
const REPO_CREDS: Support = Honoured(
    "ECS pulls with them; LOCAL Docker reads the secret as it reads secrets (AWS, or the secrets file) and pulls with it; one that cannot be read ends the attempt with a CannotPullContainerError reason naming it",
);
const ROLE: Support = Honoured(
    "ECS (task role / execution role); LOCAL: a server with AWS access assumes the job role and serves refreshed credentials through the container-credentials endpoint (Docker: at 169.254.170.2 on the task network), one without ends the attempt with a MISCONFIGURATION reason",
);
const EC2_CONFIG: Support = Honoured(
    "the AWS driver launches each instance type with the ECS-optimized AMI of its image type, resolved from AWS's public SSM parameters; DescribeComputeEnvironments shows the AMIs resolved (docs/aws.md)",
);
const LAUNCH_TEMPLATE: Support = Honoured(
    "the AWS driver reads the template version (EC2's error makes the environment INVALID) and launches from a template of its own that merges it: the user's user data and Flotilla's as parts of one MIME multi-part document, the environment's key pair, security groups, instance role, placement group and tags winning over the template's, and an override template for the instance types it targets; refused on LOCAL (docs/aws.md)",
);
const USERDATA_TYPE: Support =
    Rejected("userdataType applies to EKS compute environments, which Flotilla does not run");
const UPDATE_POLICY: Support = Honoured(
    "an infrastructure update (a change of anything in computeResources but the vCPU counts and scalingPolicy) replaces the instances launched before it: they take no new jobs and are terminated once idle; with terminateJobsOnUpdate, jobs still running on them after jobExecutionTimeoutMinutes (1 to 360, default 30) go back to RUNNABLE and run on new instances (docs/aws.md); refused on LOCAL and UNMANAGED",
);
const PLACEMENT: Support = Honoured(
    "the launch template Flotilla creates places every instance in the group (a group EC2 does not know makes launches fail and the environment INVALID with EC2's error); refused on LOCAL",
);
const SCALING: Support = Honoured(
    "minScaleDownDelayMinutes (20 to 10080, 0 unsets) replaces the server's --aws-idle-seconds for instances that have run a job, as AWS Batch applies it; refused on LOCAL",
);
const EKS: Support =
    Rejected("EKS is not supported by Flotilla; use ECS (container) job definitions");
const MULTINODE: Support = Rejected("multi-node parallel jobs are not supported by Flotilla");
const ECS_PROPS: Support = Rejected(
    "ecsProperties (multi-container ECS tasks) are not supported by Flotilla; use containerProperties",
);
const FARGATE: Support =
    Rejected("Fargate is not supported by Flotilla; jobs run on EC2, Spot or LOCAL capacity");
const MANAGED_INSTANCES: Support =
    Rejected("ECS managed instances compute environments are not supported by Flotilla");
const QUOTA_SHARES: Support = Rejected("quota-share scheduling is not supported by Flotilla");
const SERVICE_ENVS: Support =
    Rejected("service environments (SageMaker) are not supported by Flotilla");
const CONSUMABLE: Support =
    Honoured("the scheduler places a job only when every resource it names has the quantity");

pub const TABLE: &[(&str, Support)] = &[
    // ------------------------------------------------------------ jobs: cancel, terminate
    ("CancelJobRequest.jobId", NAME),
    (
        "CancelJobRequest.reason",
        Honoured("becomes the job's statusReason"),
    ),
    (
        "CancelJobsRequest.jobs",
        Honoured("up to 50; unknown IDs count as successful, as AWS documents"),
    ),
    (
        "CancelJobsRequest.reason",
        Honoured("becomes each job's statusReason"),
    ),
    ("TerminateJobRequest.jobId", NAME),
    (
        "TerminateJobRequest.reason",
        Honoured("becomes the job's statusReason"),
    ),
    (
        "TerminateJobsRequest.jobs",
        Honoured("up to 50; unknown IDs count as successful, as AWS documents"),
    ),
    (
        "TerminateJobsRequest.reason",
        Honoured("becomes each job's statusReason"),
    ),
    // ------------------------------------------------------------ compute environments
    (
        "CreateComputeEnvironmentRequest.computeEnvironmentName",
        NAME,
    ),
    (
        "CreateComputeEnvironmentRequest.type",
        Honoured("MANAGED or UNMANAGED"),
    ),
    ("CreateComputeEnvironmentRequest.state", Honoured("")),
    (
        "CreateComputeEnvironmentRequest.unmanagedvCpus",
        Honoured(""),
    ),
    (
        "CreateComputeEnvironmentRequest.computeResources",
        Honoured(""),
    ),
    (
        "CreateComputeEnvironmentRequest.serviceRole",
        NoOp("Flotilla calls AWS with its own credentials; there is no service to hand a role to"),
    ),
    ("CreateComputeEnvironmentRequest.tags", Honoured("")),
    ("CreateComputeEnvironmentRequest.eksConfiguration", EKS),
    (
        "CreateComputeEnvironmentRequest.context",
        Honoured("stored and returned, as AWS does"),
    ),
    (
        "CreateComputeEnvironmentRequest.ecsSettings",
        Rejected("ECS settings (Container Insights) are not supported by Flotilla yet"),
    ),
    (
        "ComputeResource.type",
        Honoured("EC2, SPOT, or Flotilla's LOCAL; FARGATE refused"),
    ),
    (
        "ComputeResource.allocationStrategy",
        Honoured("the provisioner's instance choice"),
    ),
    ("ComputeResource.minvCpus", Honoured("")),
    ("ComputeResource.maxvCpus", Honoured("")),
    ("ComputeResource.desiredvCpus", Honoured("")),
    ("ComputeResource.instanceTypes", Honoured("")),
    (
        "ComputeResource.imageId",
        Honoured(
            "the AMI the AWS driver launches for every instance type, unless an ec2Configuration imageIdOverride names one; without it, the ECS-optimized AMI SSM recommends",
        ),
    ),
    ("ComputeResource.subnets", Honoured("")),
    ("ComputeResource.securityGroupIds", Honoured("")),
    ("ComputeResource.ec2KeyPair", Honoured("")),
    (
        "ComputeResource.instanceRole",
        Honoured("the launched instances' profile"),
    ),
    (
        "ComputeResource.tags",
        Honoured("on the launched instances"),
    ),
    ("ComputeResource.placementGroup", PLACEMENT),
    (
        "ComputeResource.bidPercentage",
        Honoured("the Spot price cap; accepted and without effect on EC2, as in AWS"),
    ),
    (
        "ComputeResource.spotIamFleetRole",
        NoOp(
            "Flotilla launches Spot with EC2 Fleet under its own credentials; no fleet role is needed",
        ),
    ),
    ("ComputeResource.launchTemplate", LAUNCH_TEMPLATE),
    ("ComputeResource.ec2Configuration", EC2_CONFIG),
    ("ComputeResource.scalingPolicy", SCALING),
    (
        "ComputeResource.managedInstancesProvider",
        MANAGED_INSTANCES,
    ),
    (
        "ComputeResource.capacityTags",
        Rejected(
            "capacityTags apply only to ECS managed instances compute environments, which Flotilla does not support",
        ),
    ),
    (
        "LaunchTemplateSpecification.launchTemplateId",
        LAUNCH_TEMPLATE,
    ),
    (
        "LaunchTemplateSpecification.launchTemplateName",
        LAUNCH_TEMPLATE,
    ),
    ("LaunchTemplateSpecification.version", LAUNCH_TEMPLATE),
    ("LaunchTemplateSpecification.overrides", LAUNCH_TEMPLATE),
    ("LaunchTemplateSpecification.userdataType", USERDATA_TYPE),
    (
        "LaunchTemplateSpecificationOverride.launchTemplateId",
        LAUNCH_TEMPLATE,
    ),
    (
        "LaunchTemplateSpecificationOverride.launchTemplateName",
        LAUNCH_TEMPLATE,
    ),
    (
        "LaunchTemplateSpecificationOverride.version",
        LAUNCH_TEMPLATE,
    ),
    (
        "LaunchTemplateSpecificationOverride.targetInstanceTypes",
        LAUNCH_TEMPLATE,
    ),
    (
        "LaunchTemplateSpecificationOverride.userdataType",
        USERDATA_TYPE,
    ),
    (
        "Ec2Configuration.imageType",
        Honoured(
            "ECS_AL2023, ECS_AL2023_NVIDIA, ECS_AL2, ECS_AL2_NVIDIA; NVIDIA entries serve GPU instance types, the others the rest (Graviton always the arm64 image); any other value is refused naming it",
        ),
    ),
    (
        "Ec2Configuration.imageIdOverride",
        Honoured(
            "launched for the instance types of its image type, before computeResources.imageId",
        ),
    ),
    ("Ec2Configuration.imageKubernetesVersion", EKS),
    (
        "Ec2Configuration.batchImageStatus",
        NoOp("an output member AWS fills in; a value sent is ignored"),
    ),
    ("ComputeScalingPolicy.minScaleDownDelayMinutes", SCALING),
    ("UpdateComputeEnvironmentRequest.computeEnvironment", NAME),
    ("UpdateComputeEnvironmentRequest.state", Honoured("")),
    (
        "UpdateComputeEnvironmentRequest.unmanagedvCpus",
        Honoured(""),
    ),
    (
        "UpdateComputeEnvironmentRequest.computeResources",
        Honoured(""),
    ),
    (
        "UpdateComputeEnvironmentRequest.serviceRole",
        NoOp("Flotilla calls AWS with its own credentials; there is no service to hand a role to"),
    ),
    (
        "UpdateComputeEnvironmentRequest.updatePolicy",
        UPDATE_POLICY,
    ),
    ("UpdatePolicy.terminateJobsOnUpdate", UPDATE_POLICY),
    ("UpdatePolicy.jobExecutionTimeoutMinutes", UPDATE_POLICY),
    (
        "UpdateComputeEnvironmentRequest.context",
        Honoured("stored and returned, as AWS does"),
    ),
    (
        "UpdateComputeEnvironmentRequest.ecsSettings",
        Rejected("ECS settings (Container Insights) are not supported by Flotilla yet"),
    ),
    ("UpdateComputeEnvironmentRequest.eksConfiguration", EKS),
    ("ComputeResourceUpdate.minvCpus", Honoured("")),
    ("ComputeResourceUpdate.maxvCpus", Honoured("")),
    ("ComputeResourceUpdate.desiredvCpus", Honoured("")),
    ("ComputeResourceUpdate.subnets", Honoured("")),
    ("ComputeResourceUpdate.securityGroupIds", Honoured("")),
    ("ComputeResourceUpdate.allocationStrategy", Honoured("")),
    ("ComputeResourceUpdate.instanceTypes", Honoured("")),
    ("ComputeResourceUpdate.ec2KeyPair", Honoured("")),
    ("ComputeResourceUpdate.instanceRole", Honoured("")),
    ("ComputeResourceUpdate.tags", Honoured("")),
    ("ComputeResourceUpdate.placementGroup", PLACEMENT),
    ("ComputeResourceUpdate.bidPercentage", Honoured("")),
    ("ComputeResourceUpdate.launchTemplate", LAUNCH_TEMPLATE),
    ("ComputeResourceUpdate.ec2Configuration", EC2_CONFIG),
    (
        "ComputeResourceUpdate.updateToLatestImageVersion",
        Honoured(
            "true: an infrastructure update of its own, with the recommended AMIs resolved from SSM again past the driver's cache; every instance launched before it is replaced (docs/aws.md); false: nothing; refused on LOCAL",
        ),
    ),
    (
        "ComputeResourceUpdate.type",
        Honoured("must equal the environment's type"),
    ),
    ("ComputeResourceUpdate.imageId", Honoured("")),
    ("ComputeResourceUpdate.scalingPolicy", SCALING),
    (
        "ComputeResourceUpdate.managedInstancesProvider",
        MANAGED_INSTANCES,
    ),
    (
        "ComputeResourceUpdate.capacityTags",
        Rejected(
            "capacityTags apply only to ECS managed instances compute environments, which Flotilla does not support",
        ),
    ),
    ("DeleteComputeEnvironmentRequest.computeEnvironment", NAME),
    (
        "DescribeComputeEnvironmentsRequest.computeEnvironments",
        Honoured(""),
    ),
    ("DescribeComputeEnvironmentsRequest.maxResults", PAGING),
    ("DescribeComputeEnvironmentsRequest.nextToken", PAGING),
    // ------------------------------------------------------------ job queues
    ("CreateJobQueueRequest.jobQueueName", NAME),
    ("CreateJobQueueRequest.state", Honoured("")),
    (
        "CreateJobQueueRequest.schedulingPolicyArn",
        Honoured("fair-share scheduling"),
    ),
    ("CreateJobQueueRequest.priority", Honoured("")),
    (
        "CreateJobQueueRequest.computeEnvironmentOrder",
        Honoured(""),
    ),
    (
        "CreateJobQueueRequest.serviceEnvironmentOrder",
        SERVICE_ENVS,
    ),
    (
        "CreateJobQueueRequest.jobQueueType",
        OnlyDefault(
            "\"ECS\"",
            "only ECS job queues are supported by Flotilla (EKS, ECS_FARGATE and SAGEMAKER_TRAINING are not)",
        ),
    ),
    ("CreateJobQueueRequest.tags", Honoured("")),
    (
        "CreateJobQueueRequest.jobStateTimeLimitActions",
        Honoured(""),
    ),
    ("UpdateJobQueueRequest.jobQueue", NAME),
    ("UpdateJobQueueRequest.state", Honoured("")),
    ("UpdateJobQueueRequest.schedulingPolicyArn", Honoured("")),
    ("UpdateJobQueueRequest.priority", Honoured("")),
    (
        "UpdateJobQueueRequest.computeEnvironmentOrder",
        Honoured(""),
    ),
    (
        "UpdateJobQueueRequest.serviceEnvironmentOrder",
        SERVICE_ENVS,
    ),
    (
        "UpdateJobQueueRequest.jobStateTimeLimitActions",
        Honoured(""),
    ),
    ("ComputeEnvironmentOrder.order", Honoured("")),
    ("ComputeEnvironmentOrder.computeEnvironment", Honoured("")),
    ("JobStateTimeLimitAction.reason", Honoured("")),
    ("JobStateTimeLimitAction.state", Honoured("")),
    ("JobStateTimeLimitAction.maxTimeSeconds", Honoured("")),
    ("JobStateTimeLimitAction.action", Honoured("")),
    ("DeleteJobQueueRequest.jobQueue", NAME),
    ("DescribeJobQueuesRequest.jobQueues", Honoured("")),
    ("DescribeJobQueuesRequest.maxResults", PAGING),
    ("DescribeJobQueuesRequest.nextToken", PAGING),
    ("GetJobQueueSnapshotRequest.jobQueue", NAME),
    // ------------------------------------------------------------ scheduling policies
    ("CreateSchedulingPolicyRequest.name", NAME),
    (
        "CreateSchedulingPolicyRequest.quotaSharePolicy",
        QUOTA_SHARES,
    ),
    (
        "CreateSchedulingPolicyRequest.fairsharePolicy",
        Honoured(""),
    ),
    ("CreateSchedulingPolicyRequest.tags", Honoured("")),
    ("UpdateSchedulingPolicyRequest.arn", NAME),
    (
        "UpdateSchedulingPolicyRequest.quotaSharePolicy",
        QUOTA_SHARES,
    ),
    (
        "UpdateSchedulingPolicyRequest.fairsharePolicy",
        Honoured(""),
    ),
    ("FairsharePolicy.shareDecaySeconds", Honoured("")),
    ("FairsharePolicy.computeReservation", Honoured("")),
    ("FairsharePolicy.shareDistribution", Honoured("")),
    ("ShareAttributes.shareIdentifier", Honoured("")),
    (
        "ShareAttributes.weightFactor",
        Honoured("returned exactly as sent"),
    ),
    ("DeleteSchedulingPolicyRequest.arn", NAME),
    ("DescribeSchedulingPoliciesRequest.arns", Honoured("")),
    ("ListSchedulingPoliciesRequest.maxResults", PAGING),
    ("ListSchedulingPoliciesRequest.nextToken", PAGING),
    // ------------------------------------------------------------ job definitions
    ("RegisterJobDefinitionRequest.jobDefinitionName", NAME),
    (
        "RegisterJobDefinitionRequest.type",
        Honoured("container; multinode refused"),
    ),
    (
        "RegisterJobDefinitionRequest.parameters",
        Honoured("Ref:: substitution in the command"),
    ),
    (
        "RegisterJobDefinitionRequest.schedulingPriority",
        Honoured(""),
    ),
    (
        "RegisterJobDefinitionRequest.containerProperties",
        Honoured(""),
    ),
    ("RegisterJobDefinitionRequest.nodeProperties", MULTINODE),
    ("RegisterJobDefinitionRequest.retryStrategy", Honoured("")),
    (
        "RegisterJobDefinitionRequest.propagateTags",
        Honoured("the job's and definition's tags on the ECS task; LOCAL has no task to tag"),
    ),
    ("RegisterJobDefinitionRequest.timeout", Honoured("")),
    ("RegisterJobDefinitionRequest.tags", Honoured("")),
    (
        "RegisterJobDefinitionRequest.platformCapabilities",
        NoOp(
            "stored and returned; every Flotilla capacity is EC2-like, so the job runs the same either way",
        ),
    ),
    ("RegisterJobDefinitionRequest.eksProperties", EKS),
    ("RegisterJobDefinitionRequest.ecsProperties", ECS_PROPS),
    (
        "RegisterJobDefinitionRequest.consumableResourceProperties",
        CONSUMABLE,
    ),
    (
        "ContainerProperties.image",
        Honoured("ECS, Docker; the process runtime runs the command on the host"),
    ),
    (
        "ContainerProperties.vcpus",
        Honoured("placement; the container's CPU share"),
    ),
    (
        "ContainerProperties.memory",
        Honoured("placement; the container's memory limit"),
    ),
    ("ContainerProperties.command", Honoured("")),
    ("ContainerProperties.jobRoleArn", ROLE),
    ("ContainerProperties.executionRoleArn", ROLE),
    ("ContainerProperties.volumes", DOCKER),
    ("ContainerProperties.environment", Honoured("")),
    ("ContainerProperties.mountPoints", DOCKER),
    ("ContainerProperties.readonlyRootFilesystem", DOCKER),
    ("ContainerProperties.privileged", DOCKER),
    ("ContainerProperties.ulimits", LOCAL),
    ("ContainerProperties.user", USER),
    (
        "ContainerProperties.instanceType",
        NoOp("AWS Batch uses it only for multi-node parallel jobs, which Flotilla does not run"),
    ),
    (
        "ContainerProperties.resourceRequirements",
        Honoured(
            "VCPU and MEMORY as vcpus/memory; GPU in placement (not yet handed to ECS or Docker: issue 11)",
        ),
    ),
    ("ContainerProperties.linuxParameters", DOCKER),
    ("ContainerProperties.logConfiguration", LOGS),
    ("ContainerProperties.secrets", SECRETS),
    ("ContainerProperties.networkConfiguration", FARGATE),
    ("ContainerProperties.fargatePlatformConfiguration", FARGATE),
    (
        "ContainerProperties.enableExecuteCommand",
        OnlyDefault("false", "ECS Exec is not supported by Flotilla"),
    ),
    ("ContainerProperties.ephemeralStorage", FARGATE),
    ("ContainerProperties.runtimePlatform", FARGATE),
    ("ContainerProperties.repositoryCredentials", REPO_CREDS),
    ("Volume.host", DOCKER),
    ("Volume.name", DOCKER),
    ("Volume.efsVolumeConfiguration", EFS),
    (
        "Volume.s3filesVolumeConfiguration",
        Rejected("S3 Files volumes are not supported by Flotilla"),
    ),
    ("Host.sourcePath", DOCKER),
    ("EFSVolumeConfiguration.fileSystemId", EFS),
    ("EFSVolumeConfiguration.rootDirectory", EFS),
    ("EFSVolumeConfiguration.transitEncryption", EFS),
    ("EFSVolumeConfiguration.transitEncryptionPort", EFS),
    ("EFSVolumeConfiguration.authorizationConfig", EFS),
    ("EFSAuthorizationConfig.accessPointId", EFS),
    ("EFSAuthorizationConfig.iam", EFS),
    ("KeyValuePair.name", Honoured("")),
    ("KeyValuePair.value", Honoured("")),
    ("MountPoint.containerPath", DOCKER),
    ("MountPoint.readOnly", DOCKER),
    ("MountPoint.sourceVolume", DOCKER),
    ("Ulimit.hardLimit", LOCAL),
    ("Ulimit.name", LOCAL),
    ("Ulimit.softLimit", LOCAL),
    ("ResourceRequirement.value", Honoured("")),
    ("ResourceRequirement.type", Honoured("")),
    ("LinuxParameters.devices", DOCKER),
    ("LinuxParameters.initProcessEnabled", DOCKER),
    ("LinuxParameters.sharedMemorySize", DOCKER),
    ("LinuxParameters.tmpfs", DOCKER),
    ("LinuxParameters.maxSwap", DOCKER),
    ("LinuxParameters.swappiness", DOCKER),
    ("Device.hostPath", DOCKER),
    ("Device.containerPath", DOCKER),
    ("Device.permissions", DOCKER),
    ("Tmpfs.containerPath", DOCKER),
    ("Tmpfs.size", DOCKER),
    ("Tmpfs.mountOptions", DOCKER),
    ("LogConfiguration.logDriver", LOGS),
    ("LogConfiguration.options", LOGS),
    ("LogConfiguration.secretOptions", LOGS),
    ("Secret.name", SECRETS),
    ("Secret.valueFrom", SECRETS),
    ("RepositoryCredentials.credentialsParameter", REPO_CREDS),
    ("RetryStrategy.attempts", Honoured("")),
    ("RetryStrategy.evaluateOnExit", Honoured("")),
    ("EvaluateOnExit.onStatusReason", Honoured("")),
    ("EvaluateOnExit.onReason", Honoured("")),
    ("EvaluateOnExit.onExitCode", Honoured("")),
    ("EvaluateOnExit.action", Honoured("")),
    ("JobTimeout.attemptDurationSeconds", Honoured("")),
    ("DeregisterJobDefinitionRequest.jobDefinition", NAME),
    ("DescribeJobDefinitionsRequest.jobDefinitions", Honoured("")),
    ("DescribeJobDefinitionsRequest.maxResults", PAGING),
    (
        "DescribeJobDefinitionsRequest.jobDefinitionName",
        Honoured(""),
    ),
    ("DescribeJobDefinitionsRequest.status", Honoured("")),
    ("DescribeJobDefinitionsRequest.nextToken", PAGING),
    // ------------------------------------------------------------ jobs
    ("SubmitJobRequest.jobName", NAME),
    ("SubmitJobRequest.jobQueue", NAME),
    (
        "SubmitJobRequest.shareIdentifier",
        Honoured("fair-share scheduling"),
    ),
    ("SubmitJobRequest.schedulingPriorityOverride", Honoured("")),
    ("SubmitJobRequest.arrayProperties", Honoured("")),
    ("SubmitJobRequest.dependsOn", Honoured("")),
    ("SubmitJobRequest.jobDefinition", NAME),
    (
        "SubmitJobRequest.parameters",
        Honoured("Ref:: substitution in the command"),
    ),
    ("SubmitJobRequest.containerOverrides", Honoured("")),
    ("SubmitJobRequest.nodeOverrides", MULTINODE),
    ("SubmitJobRequest.retryStrategy", Honoured("")),
    (
        "SubmitJobRequest.propagateTags",
        Honoured("the job's and definition's tags on the ECS task; LOCAL has no task to tag"),
    ),
    ("SubmitJobRequest.timeout", Honoured("")),
    ("SubmitJobRequest.tags", Honoured("")),
    ("SubmitJobRequest.eksPropertiesOverride", EKS),
    ("SubmitJobRequest.ecsPropertiesOverride", ECS_PROPS),
    (
        "SubmitJobRequest.consumableResourcePropertiesOverride",
        CONSUMABLE,
    ),
    ("ArrayProperties.size", Honoured("")),
    ("JobDependency.jobId", Honoured("")),
    ("JobDependency.type", Honoured("N_TO_N and SEQUENTIAL")),
    ("ContainerOverrides.vcpus", Honoured("")),
    ("ContainerOverrides.memory", Honoured("")),
    ("ContainerOverrides.command", Honoured("")),
    (
        "ContainerOverrides.instanceType",
        NoOp("AWS Batch uses it only for multi-node parallel jobs, which Flotilla does not run"),
    ),
    ("ContainerOverrides.environment", Honoured("")),
    ("ContainerOverrides.resourceRequirements", Honoured("")),
    ("DescribeJobsRequest.jobs", Honoured("")),
    ("ListJobsRequest.jobQueue", Honoured("")),
    ("ListJobsRequest.arrayJobId", Honoured("")),
    (
        "ListJobsRequest.multiNodeJobId",
        Rejected("multi-node parallel jobs are not supported by Flotilla"),
    ),
    ("ListJobsRequest.jobStatus", Honoured("")),
    ("ListJobsRequest.maxResults", PAGING),
    ("ListJobsRequest.nextToken", PAGING),
    ("ListJobsRequest.filters", Honoured("")),
    (
        "KeyValuesPair.name",
        Honoured("JOB_NAME, JOB_DEFINITION, BEFORE_CREATED_AT, AFTER_CREATED_AT"),
    ),
    ("KeyValuesPair.values", Honoured("")),
    // ------------------------------------------------------------ consumable resources
    (
        "ConsumableResourceProperties.consumableResourceList",
        CONSUMABLE,
    ),
    (
        "ConsumableResourceRequirement.consumableResource",
        Honoured(""),
    ),
    ("ConsumableResourceRequirement.quantity", Honoured("")),
    (
        "CreateConsumableResourceRequest.consumableResourceName",
        NAME,
    ),
    (
        "CreateConsumableResourceRequest.resourceType",
        Honoured("REPLENISHABLE or NON_REPLENISHABLE"),
    ),
    ("CreateConsumableResourceRequest.tags", Honoured("")),
    (
        "CreateConsumableResourceRequest.totalQuantity",
        Honoured(""),
    ),
    (
        "UpdateConsumableResourceRequest.clientToken",
        Honoured("a repeated token within 8 hours is applied once"),
    ),
    ("UpdateConsumableResourceRequest.consumableResource", NAME),
    (
        "UpdateConsumableResourceRequest.operation",
        Honoured("SET, ADD or REMOVE"),
    ),
    ("UpdateConsumableResourceRequest.quantity", Honoured("")),
    ("DeleteConsumableResourceRequest.consumableResource", NAME),
    ("DescribeConsumableResourceRequest.consumableResource", NAME),
    ("ListConsumableResourcesRequest.filters", Honoured("")),
    ("ListConsumableResourcesRequest.maxResults", PAGING),
    ("ListConsumableResourcesRequest.nextToken", PAGING),
    (
        "ListJobsByConsumableResourceRequest.consumableResource",
        NAME,
    ),
    ("ListJobsByConsumableResourceRequest.filters", Honoured("")),
    ("ListJobsByConsumableResourceRequest.maxResults", PAGING),
    ("ListJobsByConsumableResourceRequest.nextToken", PAGING),
    // ------------------------------------------------------------ tags
    ("ListTagsForResourceRequest.resourceArn", NAME),
    ("TagResourceRequest.resourceArn", NAME),
    ("TagResourceRequest.tags", Honoured("")),
    ("UntagResourceRequest.resourceArn", NAME),
    ("UntagResourceRequest.tagKeys", Honoured("")),
];
