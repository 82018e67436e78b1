"""The AWS calls Flotilla's Rust compute driver makes, each checked against what AWS does.

One test (or a few) per call; the moto gaps they cover are patched in
harness/flotilla_emulator/patches.py (P4, P6-P14) and listed in README.md."""

import base64
import uuid

import pytest
from botocore.exceptions import ClientError

from conftest import wait_for

# moto's us-east-1 ECS-optimized Amazon Linux 2023 AMI (also what the SSM parameter
# /aws/service/ecs/optimized-ami/amazon-linux-2023/recommended/image_id returns in moto).
ECS_AMI = "ami-05fb4f257abd42992"
CE_TAG, MANAGED_TAG = "flotilla:compute-environment", "flotilla:managed-by"
JOB_ID = "0b6e2d4c-1111-2222-3333-444455556666"  # startedBy: a 36-character job id


def user_data(cluster: str) -> str:
    script = ("#!/bin/bash\n"
              f"echo ECS_CLUSTER={cluster} >> /etc/ecs/ecs.config\n"
              "echo ECS_ENABLE_SPOT_INSTANCE_DRAINING=true >> /etc/ecs/ecs.config\n")
    return base64.b64encode(script.encode()).decode()


def code(err: pytest.ExceptionInfo) -> str:
    return err.value.response["Error"]["Code"]


class Driver:
    """The calls as the driver makes them, with its parameters."""

    def __init__(self, harness):
        self.harness = harness
        self.ec2, self.ecs = harness.client("ec2"), harness.client("ecs")
        self.cluster = f"flotilla-{uuid.uuid4().hex[:8]}"
        self.ce = f"ce-{uuid.uuid4().hex[:6]}"
        self.lt = f"{self.cluster}-lt"

    def setup(self):
        self.ecs.create_cluster(clusterName=self.cluster, tags=[{"key": MANAGED_TAG, "value": "flotilla"}])
        self.create_launch_template()
        self.task_def = self.ecs.register_task_definition(
            family=f"{self.cluster}-job", requiresCompatibilities=["EC2"], containerDefinitions=[{
                "name": "main", "image": "public.ecr.aws/amazonlinux/amazonlinux:2023", "essential": True,
                "cpu": 512, "memory": 1024, "command": ["true"],
                "logConfiguration": {"logDriver": "awslogs", "options": {
                    "awslogs-group": "/aws/batch/job", "awslogs-region": "us-east-1",
                    "awslogs-stream-prefix": "flotilla"}}}])["taskDefinition"]["taskDefinitionArn"]
        return self

    def create_launch_template(self, **extra):
        return self.ec2.create_launch_template(
            LaunchTemplateName=self.lt,
            LaunchTemplateData={"UserData": user_data(self.cluster), "ImageId": ECS_AMI, **extra},
            TagSpecifications=[{"ResourceType": "launch-template", "Tags": [{"Key": MANAGED_TAG, "Value": "flotilla"}]}],
        )["LaunchTemplate"]

    def create_fleet(self, count=1, capacity_type="spot", types=("c5.large",), subnets=(None,), token=None):
        overrides = [{"InstanceType": t, **({"SubnetId": s} if s else {})} for t in types for s in subnets]
        kwargs = dict(
            Type="instant",
            LaunchTemplateConfigs=[{"LaunchTemplateSpecification": {"LaunchTemplateName": self.lt, "Version": "$Latest"},
                                    "Overrides": overrides}],
            TargetCapacitySpecification={"TotalTargetCapacity": count, "DefaultTargetCapacityType": capacity_type},
            TagSpecifications=[{"ResourceType": "instance", "Tags": [
                {"Key": CE_TAG, "Value": self.ce}, {"Key": MANAGED_TAG, "Value": "flotilla"}]}])
        if token:
            kwargs["ClientToken"] = token
        if capacity_type == "spot":
            kwargs["SpotOptions"] = {"AllocationStrategy": "price-capacity-optimized"}
        else:
            kwargs["OnDemandOptions"] = {"AllocationStrategy": "lowest-price"}
        return self.ec2.create_fleet(**kwargs)

    def instances(self, states=("pending", "running")) -> dict[str, dict]:
        resp = self.ec2.describe_instances(Filters=[{"Name": f"tag:{CE_TAG}", "Values": [self.ce]},
                                                    {"Name": "instance-state-name", "Values": list(states)}])
        return {i["InstanceId"]: i for r in resp["Reservations"] for i in r["Instances"]}

    def container_instances(self, want: int) -> dict[str, dict]:
        """{instanceId: container instance} once the agent has registered `want`."""
        arns = wait_for(lambda: (a := self.ecs.list_container_instances(cluster=self.cluster, status="ACTIVE")
                                 ["containerInstanceArns"]) and len(a) >= want and a)
        described = self.ecs.describe_container_instances(cluster=self.cluster, containerInstances=arns)
        return {ci["ec2InstanceId"]: ci for ci in described["containerInstances"]}

    def start_task(self, ci_arn, started_by=JOB_ID, cpu=None, memory=None):
        override = {"name": "main", "command": ["sh", "-c", "echo hi"],
                    "environment": [{"name": "FLOTILLA_JOB_ID", "value": started_by}]}
        if cpu is not None:
            override["cpu"] = cpu
        if memory is not None:
            override["memory"] = memory
        return self.ecs.start_task(cluster=self.cluster, taskDefinition=self.task_def, containerInstances=[ci_arn],
                                   startedBy=started_by, overrides={"containerOverrides": [override]},
                                   tags=[{"key": MANAGED_TAG, "value": "flotilla"}])

    def describe_task(self, arn) -> dict:
        return self.ecs.describe_tasks(cluster=self.cluster, tasks=[arn])["tasks"][0]

    def describe_ci(self, arn) -> dict:
        return self.ecs.describe_container_instances(cluster=self.cluster, containerInstances=[arn])["containerInstances"][0]


def resources(ci, which="remainingResources") -> tuple[int, int]:
    values = {r["name"]: r.get("integerValue") for r in ci[which]}
    return values["CPU"], values["MEMORY"]


def fleet_ids(resp) -> list[str]:
    return [i for group in resp["Instances"] for i in group["InstanceIds"]]


@pytest.fixture
def driver(harness):
    return Driver(harness).setup()


@pytest.fixture
def one_node(driver):
    """One on-demand c5.large (2048 CPU units, 4096 MiB), registered; its container instance."""
    instance_id = fleet_ids(driver.create_fleet(capacity_type="on-demand"))[0]
    return driver.container_instances(1)[instance_id]


# 1. Launch templates

def test_launch_template_create_describe_not_found_delete(harness):
    d = Driver(harness)
    sg = d.ec2.describe_security_groups()["SecurityGroups"][0]["GroupId"]
    created = d.create_launch_template(IamInstanceProfile={"Name": "ecsInstanceRole"},
                                       SecurityGroupIds=[sg], KeyName="flotilla")
    assert created["LaunchTemplateName"] == d.lt and created["LatestVersionNumber"] == 1
    described = d.ec2.describe_launch_templates(LaunchTemplateNames=[d.lt])["LaunchTemplates"]
    assert [t["LaunchTemplateId"] for t in described] == [created["LaunchTemplateId"]]
    assert described[0]["Tags"] == [{"Key": MANAGED_TAG, "Value": "flotilla"}]
    data = d.ec2.describe_launch_template_versions(LaunchTemplateName=d.lt)["LaunchTemplateVersions"][0]["LaunchTemplateData"]
    assert data["ImageId"] == ECS_AMI and data["UserData"] == user_data(d.cluster)

    # The AMI is one of moto's, and the SSM parameter a driver might read names it.
    image = d.ec2.describe_images(ImageIds=[ECS_AMI])["Images"][0]
    assert image["Name"].startswith("al2023-ami-ecs-hvm-")
    ssm = harness.client("ssm").get_parameter(Name="/aws/service/ecs/optimized-ami/amazon-linux-2023/recommended/image_id")
    assert ssm["Parameter"]["Value"] == ECS_AMI

    with pytest.raises(ClientError) as err:
        d.ec2.describe_launch_templates(LaunchTemplateNames=["flotilla-nope"])
    assert code(err) == "InvalidLaunchTemplateName.NotFoundException"
    with pytest.raises(ClientError) as err:  # an existing name
        d.create_launch_template()
    assert code(err) == "InvalidLaunchTemplateName.AlreadyExistsException"

    deleted = d.ec2.delete_launch_template(LaunchTemplateName=d.lt)["LaunchTemplate"]
    assert deleted["LaunchTemplateId"] == created["LaunchTemplateId"]
    for call in (d.ec2.describe_launch_templates, d.ec2.delete_launch_template):
        with pytest.raises(ClientError) as err:  # P9: moto said MissingParameter on delete
            call(**({"LaunchTemplateNames": [d.lt]} if call == d.ec2.describe_launch_templates
                    else {"LaunchTemplateName": d.lt}))
        assert code(err) == "InvalidLaunchTemplateName.NotFoundException"


# 2. CreateFleet

def test_spot_fleet_launches_tagged_instances_that_join_the_cluster(driver):
    subnets = [s["SubnetId"] for s in driver.ec2.describe_subnets()["Subnets"]][:3]
    resp = driver.create_fleet(count=2, types=("m5.large",), subnets=subnets)
    assert resp["FleetId"].startswith("fleet-")
    assert resp.get("Errors", []) == []
    # One entry per instance here; AWS may group several InstanceIds in one entry.
    assert {(g["Lifecycle"], g["InstanceType"]) for g in resp["Instances"]} == {("spot", "m5.large")}
    ids = fleet_ids(resp)
    assert len(ids) == 2
    assert resp["Instances"][0]["LaunchTemplateAndOverrides"]["Overrides"]["InstanceType"] == "m5.large"

    instances = driver.instances()
    assert set(instances) == set(ids)
    for i in instances.values():
        assert i["InstanceType"] == "m5.large" and i["InstanceLifecycle"] == "spot"
        assert i["ImageId"] == ECS_AMI and i["State"]["Name"] == "running"
        assert {t["Key"]: t["Value"] for t in i["Tags"]} == {CE_TAG: driver.ce, MANAGED_TAG: "flotilla"}
        assert i["SubnetId"] == subnets[0]  # moto fills the target from the first override
        attr = driver.ec2.describe_instance_attribute(InstanceId=i["InstanceId"], Attribute="userData")
        assert attr["UserData"]["Value"] == user_data(driver.cluster)

    cis = driver.container_instances(2)  # the agent read ECS_CLUSTER from the template's user data
    assert set(cis) == set(ids)
    assert all(resources(ci, "registeredResources") == (2048, 8192) for ci in cis.values())  # m5.large


def test_on_demand_fleet(driver):
    resp = driver.create_fleet(count=1, capacity_type="on-demand", types=("c5.xlarge",))
    assert [(g["Lifecycle"], g["InstanceType"]) for g in resp["Instances"]] == [("on-demand", "c5.xlarge")]
    instance = driver.instances()[fleet_ids(resp)[0]]
    assert "InstanceLifecycle" not in instance  # as AWS: only Spot instances carry it


def test_fleet_instances_get_the_templates_block_devices(harness):
    """P15: a template's EBS mappings are the fleet instance's volumes, as on EC2."""
    d = Driver(harness)
    d.ecs.create_cluster(clusterName=d.cluster)
    d.create_launch_template(BlockDeviceMappings=[
        {"DeviceName": "/dev/xvda", "Ebs": {"VolumeSize": 200, "VolumeType": "gp3", "Encrypted": True}}])
    versions = d.ec2.describe_launch_template_versions(LaunchTemplateName=d.lt, Versions=["$Latest"])
    assert versions["LaunchTemplateVersions"][0]["LaunchTemplateData"]["BlockDeviceMappings"][0]["Ebs"]["VolumeSize"] == 200
    instance_id = fleet_ids(d.create_fleet(capacity_type="on-demand"))[0]
    devices = {m["DeviceName"]: m["Ebs"]["VolumeId"] for m in d.instances()[instance_id]["BlockDeviceMappings"]}
    assert "/dev/xvda" in devices, devices
    volume = d.ec2.describe_volumes(VolumeIds=[devices["/dev/xvda"]])["Volumes"][0]
    assert (volume["Size"], volume["VolumeType"], volume["Encrypted"]) == (200, "gp3", True)
    with pytest.raises(ClientError) as err:
        d.ec2.describe_launch_template_versions(LaunchTemplateName="flotilla-nope", Versions=["$Default"])
    assert code(err) == "InvalidLaunchTemplateName.NotFoundException"


def test_gpu_instances_register_their_gpus(driver):
    resp = driver.create_fleet(count=1, capacity_type="on-demand", types=("g4dn.xlarge",))
    ci = driver.container_instances(1)[fleet_ids(resp)[0]]
    assert resources(ci, "registeredResources") == (4096, 16384)
    for which in ("registeredResources", "remainingResources"):  # P1: moto registered no GPU
        gpu = [r for r in ci[which] if r["name"] == "GPU"]
        assert len(gpu) == 1 and gpu[0]["type"] == "STRINGSET" and len(gpu[0]["stringSetValue"]) == 1


def test_create_fleet_is_idempotent_on_client_token(driver):
    token = str(uuid.uuid4())
    first = driver.create_fleet(count=2, token=token)
    again = driver.create_fleet(count=2, token=token)  # P6: moto launched two more
    assert again["FleetId"] == first["FleetId"] and fleet_ids(again) == fleet_ids(first)
    assert set(driver.instances()) == set(fleet_ids(first))

    with pytest.raises(ClientError) as err:  # same token, other parameters
        driver.create_fleet(count=3, token=token)
    assert code(err) == "IdempotentParameterMismatch"
    assert err.value.response["ResponseMetadata"]["HTTPStatusCode"] == 400

    other = driver.create_fleet(count=1, token=str(uuid.uuid4()))
    assert len(driver.instances()) == 3 and fleet_ids(other)[0] in driver.instances()


def test_several_overrides_and_capacity_errors(driver, harness):
    # Without capacity rules moto puts the whole target on the first override.
    resp = driver.create_fleet(count=2, types=("c5.large", "m5.large"))
    assert [g["InstanceType"] for g in resp["Instances"]] == ["c5.large", "c5.large"]

    # P7: c5.large Spot has no capacity: the fleet falls through to m5.large and says why.
    harness.ok("POST", "capacity", {"instanceType": "c5.large", "lifecycle": "spot", "available": 0})
    resp = driver.create_fleet(count=2, types=("c5.large", "m5.large"))
    assert [g["InstanceType"] for g in resp["Instances"]] == ["m5.large", "m5.large"]
    [error] = resp["Errors"]
    assert error["ErrorCode"] == "InsufficientInstanceCapacity" and error["Lifecycle"] == "spot"
    assert error["ErrorMessage"] == "There is no Spot capacity available that matches your request."
    assert error["LaunchTemplateAndOverrides"]["Overrides"] == {"InstanceType": "c5.large"}
    assert error["LaunchTemplateAndOverrides"]["LaunchTemplateSpecification"]["LaunchTemplateName"] == driver.lt

    # One type per call, as the driver sends it: partly or not at all fulfilled, still a 200.
    harness.ok("POST", "capacity", {"instanceType": "r5.large", "available": 1})  # any lifecycle
    resp = driver.create_fleet(count=3, capacity_type="on-demand", types=("r5.large",))
    assert [g["InstanceType"] for g in resp["Instances"]] == ["r5.large"]
    assert [e["ErrorCode"] for e in resp["Errors"]] == ["InsufficientInstanceCapacity"]
    assert resp["Errors"][0]["ErrorMessage"].startswith("We currently do not have sufficient r5.large capacity")
    resp = driver.create_fleet(count=1, types=("r5.large",))
    assert resp["Instances"] == [] and len(resp["Errors"]) == 1
    # The c5.large on-demand pool is untouched by the Spot rule.
    resp = driver.create_fleet(count=1, capacity_type="on-demand", types=("c5.large",))
    assert [g["InstanceType"] for g in resp["Instances"]] == ["c5.large"] and "Errors" not in resp

    rules = harness.ok("GET", "capacity")["capacity"]
    assert {(r["instanceType"], r["lifecycle"], r["available"]) for r in rules} == {
        ("c5.large", "spot", 0), ("r5.large", "*", 0)}
    assert harness.control("POST", "capacity", {"instanceType": "c5.large", "available": -1})[0] == 400
    assert harness.control("POST", "capacity", {"instanceType": "c5.large", "lifecycle": "x", "available": 1})[0] == 400
    harness.ok("POST", "capacity", {"instanceType": "c5.large", "lifecycle": "spot", "available": None})
    assert harness.ok("GET", "capacity")["capacity"] == [{"instanceType": "r5.large", "lifecycle": "*", "available": 0}]
    harness.ok("DELETE", "capacity")
    assert driver.create_fleet(count=1, types=("r5.large",))["Instances"]


# 3, 4. DescribeInstances, TerminateInstances

def test_describe_instances_filters_interruption_and_terminate(driver, harness):
    spot = fleet_ids(driver.create_fleet(count=2))
    other = Driver(harness)  # another compute environment's instance, same template
    other.lt = driver.lt
    theirs = fleet_ids(other.create_fleet(count=1, capacity_type="on-demand"))

    assert set(driver.instances()) == set(spot)
    managed = driver.ec2.describe_instances(Filters=[{"Name": f"tag:{MANAGED_TAG}", "Values": ["flotilla"]}])
    assert {i["InstanceId"] for r in managed["Reservations"] for i in r["Instances"]} == set(spot + theirs)

    harness.ok("POST", f"instances/{spot[0]}/interrupt")
    assert set(driver.instances()) == {spot[1]}
    gone = driver.instances(states=("shutting-down", "terminated"))[spot[0]]
    assert gone["State"]["Name"] == "terminated" and gone["InstanceLifecycle"] == "spot"
    assert gone["StateReason"]["Code"] == "Server.SpotInstanceTermination"

    resp = driver.ec2.terminate_instances(InstanceIds=[spot[1]])["TerminatingInstances"][0]
    assert (resp["PreviousState"]["Name"], resp["CurrentState"]["Name"]) == ("running", "shutting-down")
    assert driver.instances() == {}
    assert driver.instances(states=("terminated",))[spot[1]]["StateReason"]["Code"] == "Client.UserInitiatedShutdown"

    # P8: terminating again (cleanup after an interruption) keeps the interruption's reason.
    resp = driver.ec2.terminate_instances(InstanceIds=[spot[0]])["TerminatingInstances"][0]
    assert (resp["PreviousState"]["Name"], resp["CurrentState"]["Name"]) == ("terminated", "terminated")
    assert driver.instances(states=("terminated",))[spot[0]]["StateReason"]["Code"] == "Server.SpotInstanceTermination"
    with pytest.raises(ClientError) as err:
        driver.ec2.terminate_instances(InstanceIds=["i-0123456789abcdef0"])
    assert code(err) == "InvalidInstanceID.NotFound"


# 5. Clusters

def test_cluster_create_describe_delete(driver, harness):
    ecs = driver.ecs
    again = ecs.create_cluster(clusterName=driver.cluster)["cluster"]  # P10: the same cluster
    assert again["status"] == "ACTIVE"
    described = ecs.describe_clusters(clusters=[driver.cluster, "flotilla-nope"], include=["TAGS"])
    assert described["clusters"][0]["tags"] == [{"key": MANAGED_TAG, "value": "flotilla"}]
    assert described["failures"] == [{"arn": "arn:aws:ecs:us-east-1:123456789012:cluster/flotilla-nope",
                                      "reason": "MISSING"}]

    instance_id = fleet_ids(driver.create_fleet())[0]
    ci = driver.container_instances(1)[instance_id]
    assert ecs.describe_clusters(clusters=[driver.cluster])["clusters"][0]["registeredContainerInstancesCount"] == 1
    with pytest.raises(ClientError) as err:  # P10: moto deleted it
        ecs.delete_cluster(cluster=driver.cluster)
    assert code(err) == "ClusterContainsContainerInstancesException"

    ecs.deregister_container_instance(cluster=driver.cluster, containerInstance=ci["containerInstanceArn"], force=True)
    deleted = ecs.delete_cluster(cluster=driver.cluster)["cluster"]
    assert deleted["status"] == "INACTIVE" and deleted["registeredContainerInstancesCount"] == 0
    assert ecs.describe_clusters(clusters=[driver.cluster])["clusters"][0]["status"] == "INACTIVE"

    # No agent registers with a deleted cluster.
    fleet_ids(driver.create_fleet())
    assert harness.ok("POST", "agent/sync")["registered"] == []


# 6. Task definitions

def test_register_and_describe_task_definition(driver):
    td = driver.ecs.describe_task_definition(taskDefinition=driver.task_def)["taskDefinition"]
    assert td["taskDefinitionArn"] == driver.task_def and td["revision"] == 1
    assert td["requiresCompatibilities"] == ["EC2"] and td["status"] == "ACTIVE"
    [main] = td["containerDefinitions"]
    assert (main["name"], main["cpu"], main["memory"], main["essential"]) == ("main", 512, 1024, True)
    assert main["logConfiguration"] == {"logDriver": "awslogs", "options": {
        "awslogs-group": "/aws/batch/job", "awslogs-region": "us-east-1", "awslogs-stream-prefix": "flotilla"}}
    by_family = driver.ecs.describe_task_definition(taskDefinition=f"{driver.cluster}-job")["taskDefinition"]
    assert by_family["taskDefinitionArn"] == driver.task_def
    with pytest.raises(ClientError) as err:
        driver.ecs.describe_task_definition(taskDefinition="flotilla-nope")
    assert code(err) == "ClientException"


# 7. StartTask

def test_start_task_reserves_override_resources_and_fails_when_full(driver, one_node):
    ci_arn = one_node["containerInstanceArn"]
    resp = driver.start_task(ci_arn, cpu=1024, memory=2048)
    assert resp["failures"] == []
    [task] = resp["tasks"]
    assert task["startedBy"] == JOB_ID and task["containerInstanceArn"] == ci_arn
    assert task["lastStatus"] == "RUNNING" and task["desiredStatus"] == "RUNNING"
    assert task["launchType"] == "EC2" and task["taskDefinitionArn"] == driver.task_def
    assert task["overrides"]["containerOverrides"][0]["command"] == ["sh", "-c", "echo hi"]
    assert "stoppedReason" not in task and "stopCode" not in task  # P14: moto sent ""
    [container] = task["containers"]
    assert container["name"] == "main" and container["lastStatus"] == "RUNNING"
    assert "exitCode" not in container  # P14: moto sent 0 for a running container
    assert container["taskArn"] == task["taskArn"]

    # P4: the overrides' cpu/memory are reserved, not the task definition's 512/1024.
    ci = driver.describe_ci(ci_arn)
    assert resources(ci) == (2048 - 1024, 4096 - 2048) and ci["runningTasksCount"] == 1

    full = driver.start_task(ci_arn, started_by=str(uuid.uuid4()), cpu=512, memory=4096)
    assert full["tasks"] == [] and full["failures"] == [{"arn": ci_arn, "reason": "RESOURCE:MEMORY"}]
    full = driver.start_task(ci_arn, started_by=str(uuid.uuid4()), cpu=2048)
    assert [f["reason"] for f in full["failures"]] == ["RESOURCE:CPU"]
    # Without overrides the task definition's size applies.
    fits = driver.ecs.start_task(cluster=driver.cluster, taskDefinition=driver.task_def, containerInstances=[ci_arn])
    assert fits["failures"] == []
    assert resources(driver.describe_ci(ci_arn)) == (1024 - 512, 2048 - 1024)
    assert driver.ecs.describe_clusters(clusters=[driver.cluster])["clusters"][0]["runningTasksCount"] == 2


# 8, 9, 10. ListTasks, DescribeTasks, StopTask

def test_list_tasks_by_started_by_and_desired_status(driver, harness, one_node):
    ci_arn = one_node["containerInstanceArn"]
    mine = driver.start_task(ci_arn)["tasks"][0]["taskArn"]
    theirs = driver.start_task(ci_arn, started_by=str(uuid.uuid4()))["tasks"][0]["taskArn"]
    # A cluster whose name extends ours: moto listed its tasks too (P13).
    longer = Driver(harness)
    longer.cluster = driver.cluster + "0"
    longer.lt = driver.lt + "0"
    longer.setup()
    longer_id = fleet_ids(longer.create_fleet(capacity_type="on-demand"))[0]
    other_ci = longer.container_instances(1)[longer_id]["containerInstanceArn"]
    longer.start_task(other_ci)

    def listed(**kwargs):
        return driver.ecs.list_tasks(cluster=driver.cluster, **kwargs)["taskArns"]

    assert listed(startedBy=JOB_ID) == [mine]
    assert listed(startedBy=JOB_ID, desiredStatus="RUNNING") == [mine]
    assert listed(startedBy=JOB_ID, desiredStatus="STOPPED") == []
    assert sorted(listed()) == sorted([mine, theirs])

    driver.ecs.stop_task(cluster=driver.cluster, task=mine, reason="Flotilla: job cancelled")
    assert listed(startedBy=JOB_ID) == []  # P13: ECS's default filter is desiredStatus RUNNING
    assert listed(startedBy=JOB_ID, desiredStatus="STOPPED") == [mine]
    assert listed() == [theirs]
    with pytest.raises(ClientError) as err:  # as ECS: startedBy takes no family/launchType with it
        listed(startedBy=JOB_ID, family=f"{driver.cluster}-job")
    assert code(err) == "InvalidParameterException"


def test_describe_tasks_fields_failures_and_stop_reason(driver, harness, one_node):
    ci_arn = one_node["containerInstanceArn"]
    arns = [driver.start_task(ci_arn, started_by=f"job-{n}", cpu=128, memory=128)["tasks"][0]["taskArn"]
            for n in range(3)]
    missing = arns[0].rsplit("/", 1)[0] + "/00000000000000000000000000000000"
    resp = driver.ecs.describe_tasks(cluster=driver.cluster, tasks=arns + [missing])
    assert [t["taskArn"] for t in resp["tasks"]] == arns
    assert resp["failures"] == [{"arn": missing, "reason": "MISSING"}]  # P12: moto said nothing
    assert [t["startedBy"] for t in resp["tasks"]] == ["job-0", "job-1", "job-2"]
    assert all(t["containerInstanceArn"] == ci_arn for t in resp["tasks"])
    # A task id works too.
    assert driver.describe_task(arns[0].rsplit("/", 1)[1])["taskArn"] == arns[0]

    harness.ok("POST", f"tasks/{arns[0]}/complete", {"exitCode": 0})
    harness.ok("POST", f"tasks/{arns[1]}/complete", {"exitCode": 137, "reason": "OutOfMemory",
                                                      "containerReason": "OutOfMemoryError: Container killed due to memory usage"})
    stopped = driver.ecs.stop_task(cluster=driver.cluster, task=arns[2], reason="Flotilla: job cancelled")["task"]
    assert stopped["stoppedReason"] == "Flotilla: job cancelled"

    done = {t["taskArn"]: t for t in driver.ecs.describe_tasks(cluster=driver.cluster, tasks=arns)["tasks"]}
    ok, oom, cancelled = (done[a] for a in arns)
    assert (ok["lastStatus"], ok["desiredStatus"], ok["stopCode"]) == ("STOPPED", "STOPPED", "EssentialContainerExited")
    assert ok["containers"][0]["exitCode"] == 0 and ok["containers"][0]["lastStatus"] == "STOPPED"
    assert oom["containers"][0]["exitCode"] == 137 and oom["stoppedReason"] == "OutOfMemory"
    assert oom["containers"][0]["reason"].startswith("OutOfMemoryError")
    assert cancelled["stoppedReason"] == "Flotilla: job cancelled" and cancelled["stopCode"] == "UserInitiated"
    assert cancelled["containers"][0]["exitCode"] == 143
    assert resources(driver.describe_ci(ci_arn)) == (2048, 4096)


# 11. Container instances

def test_container_instances_list_describe_drain_deregister(driver, harness):
    ids = fleet_ids(driver.create_fleet(count=2))
    cis = driver.container_instances(2)
    a, b = (cis[i]["containerInstanceArn"] for i in ids)
    ci = driver.describe_ci(a)
    assert ci["ec2InstanceId"] == ids[0] and ci["status"] == "ACTIVE" and ci["agentConnected"] is True
    assert resources(ci, "registeredResources") == resources(ci) == (2048, 4096) and ci["runningTasksCount"] == 0
    task = driver.start_task(b)["tasks"][0]["taskArn"]

    drained = driver.ecs.update_container_instances_state(cluster=driver.cluster, containerInstances=[b], status="DRAINING")
    assert [c["status"] for c in drained["containerInstances"]] == ["DRAINING"]
    assert {"name": "ecs.instance-type", "value": "c5.large"} in drained["containerInstances"][0]["attributes"]  # P14
    assert driver.ecs.list_container_instances(cluster=driver.cluster, status="DRAINING")["containerInstanceArns"] == [b]
    assert driver.ecs.list_container_instances(cluster=driver.cluster, status="ACTIVE")["containerInstanceArns"] == [a]

    with pytest.raises(ClientError) as err:  # a task still runs there
        driver.ecs.deregister_container_instance(cluster=driver.cluster, containerInstance=b)
    assert code(err) == "InvalidParameterException"
    gone = driver.ecs.deregister_container_instance(cluster=driver.cluster, containerInstance=b, force=True)
    assert gone["containerInstance"]["status"] == "INACTIVE"  # P11: moto answered DRAINING, then forgot it
    assert {"name": "ecs.instance-type", "value": "c5.large"} in gone["containerInstance"]["attributes"]
    described = driver.describe_ci(b)
    assert described["status"] == "INACTIVE" and described["agentConnected"] is False
    assert driver.ecs.list_container_instances(cluster=driver.cluster)["containerInstanceArns"] == [a]
    assert driver.ecs.list_container_instances(cluster=driver.cluster, status="INACTIVE")["containerInstanceArns"] == [b]
    assert driver.describe_task(task)["lastStatus"] == "RUNNING"  # orphaned, as ECS leaves it
    assert harness.ok("POST", "agent/sync")["registered"] == []  # registered once per boot

    missing = b.rsplit("/", 1)[0] + "/00000000-0000-0000-0000-000000000000"
    failures = driver.ecs.describe_container_instances(cluster=driver.cluster, containerInstances=[a, missing])["failures"]
    assert failures == [{"arn": missing, "reason": "MISSING"}]  # P12: moto dropped the cluster from the ARN
    with pytest.raises(ClientError) as err:  # P11: moto answered an HTML 500
        driver.ecs.deregister_container_instance(cluster=driver.cluster, containerInstance=missing, force=True)
    assert code(err) == "InvalidParameterException"
    assert driver.ecs.describe_clusters(clusters=[driver.cluster])["clusters"][0]["registeredContainerInstancesCount"] == 1


# 12, 13. Spot interruption and task completion through the control API

def test_spot_interruption_end_to_end(driver, harness):
    instance_id = fleet_ids(driver.create_fleet())[0]
    ci_arn = driver.container_instances(1)[instance_id]["containerInstanceArn"]
    task_arn = driver.start_task(ci_arn)["tasks"][0]["taskArn"]

    harness.ok("POST", f"instances/{instance_id}/interrupt")

    task = driver.describe_task(task_arn)
    assert (task["lastStatus"], task["desiredStatus"]) == ("STOPPED", "STOPPED")
    assert task["stoppedReason"] == f"Host EC2 (instance {instance_id}) terminated."
    assert "exitCode" not in task["containers"][0] and "stopCode" not in task
    assert driver.ecs.list_tasks(cluster=driver.cluster, startedBy=JOB_ID, desiredStatus="STOPPED")["taskArns"] == [task_arn]
    ci = driver.describe_ci(ci_arn)
    assert ci["status"] == "INACTIVE" and ci["agentConnected"] is False
    instance = driver.instances(states=("terminated",))[instance_id]
    assert instance["StateReason"]["Code"] == "Server.SpotInstanceTermination"
    assert driver.instances() == {}
