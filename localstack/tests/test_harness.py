"""The emulator as Flotilla's driver will use it: boto3 against the proxy on 127.0.0.1 only."""

import base64
import time
import uuid

import pytest
from botocore.config import Config
from botocore.exceptions import ClientError

from conftest import wait_for


# As EC2 passes it: base64 of a script that writes the agent's config.
def ecs_user_data(cluster: str, extra: str = "") -> str:
    script = f"#!/bin/bash\necho ECS_CLUSTER={cluster} >> /etc/ecs/ecs.config\n{extra}"
    return base64.b64encode(script.encode()).decode()


@pytest.fixture(scope="session")
def image(harness):
    # One of moto's built-in AMIs (they survive a reset); listing them takes a second.
    return harness.client("ec2").describe_images(Owners=["amazon"])["Images"][0]["ImageId"]


@pytest.fixture
def aws(harness, image):
    ec2, ecs = harness.client("ec2"), harness.client("ecs")
    cluster = f"flotilla-{uuid.uuid4().hex[:8]}"
    ecs.create_cluster(clusterName=cluster)
    ec2.create_launch_template(LaunchTemplateName=f"{cluster}-lt", LaunchTemplateData={
        "ImageId": image, "InstanceType": "c5.large", "UserData": ecs_user_data(cluster)})
    task_def = ecs.register_task_definition(family="job", containerDefinitions=[
        {"name": "main", "image": "busybox", "cpu": 1024, "memory": 1024, "essential": True}],
    )["taskDefinition"]["taskDefinitionArn"]
    return type("Aws", (), dict(ec2=ec2, ecs=ecs, cluster=cluster, image=image, task_def=task_def,
                                lt=f"{cluster}-lt"))


def create_fleet(aws, spot: int, on_demand: int) -> dict[str, str]:
    """CreateFleet (instant); returns {instanceId: lifecycle}."""
    resp = aws.ec2.create_fleet(
        Type="instant",
        LaunchTemplateConfigs=[{"LaunchTemplateSpecification": {"LaunchTemplateName": aws.lt, "Version": "$Latest"}}],
        TargetCapacitySpecification={"TotalTargetCapacity": spot + on_demand, "SpotTargetCapacity": spot,
                                     "OnDemandTargetCapacity": on_demand, "DefaultTargetCapacityType": "spot"})
    return {i: group["Lifecycle"] for group in resp["Instances"] for i in group["InstanceIds"]}


def container_instances(aws, want: int) -> dict[str, dict]:
    """Wait until the agent has registered `want` instances; {instanceId: container instance}."""
    arns = wait_for(lambda: (a := aws.ecs.list_container_instances(cluster=aws.cluster)["containerInstanceArns"])
                    and len(a) >= want and a)
    described = aws.ecs.describe_container_instances(cluster=aws.cluster, containerInstances=arns)
    return {ci["ec2InstanceId"]: ci for ci in described["containerInstances"]}


def one_instance(aws) -> dict:
    """One on-demand c5.large, registered; its container instance."""
    instance_id = next(iter(create_fleet(aws, spot=0, on_demand=1)))
    return container_instances(aws, 1)[instance_id]


def resources(ci, which="registeredResources") -> tuple[int, int]:
    values = {r["name"]: r["integerValue"] for r in ci[which]}
    return values["CPU"], values["MEMORY"]


def start_task(aws, ci) -> str:
    resp = aws.ecs.start_task(cluster=aws.cluster, taskDefinition=aws.task_def,
                              containerInstances=[ci["containerInstanceArn"]])
    assert resp["failures"] == []
    return resp["tasks"][0]["taskArn"]


def describe_task(aws, arn) -> dict:
    return aws.ecs.describe_tasks(cluster=aws.cluster, tasks=[arn])["tasks"][0]


def test_agent_registers_fleet_and_run_instances_with_real_resources(aws, harness):
    fleet = create_fleet(aws, spot=1, on_demand=1)
    assert sorted(fleet.values()) == ["on-demand", "spot"]
    # RunInstances too, with a bigger type and memory reserved for the OS as the agent allows.
    big = aws.ec2.run_instances(ImageId=aws.image, MinCount=1, MaxCount=1, InstanceType="m5.xlarge",
                                UserData=f"#!/bin/bash\necho ECS_CLUSTER={aws.cluster} >> /etc/ecs/ecs.config\n"
                                         "echo ECS_RESERVED_MEMORY=256 >> /etc/ecs/ecs.config\n")
    big_id = big["Instances"][0]["InstanceId"]
    # An instance without ECS config is no container instance.
    plain = aws.ec2.run_instances(ImageId=aws.image, MinCount=1, MaxCount=1, InstanceType="t3.micro")
    plain_id = plain["Instances"][0]["InstanceId"]

    cis = container_instances(aws, 3)
    assert set(cis) == set(fleet) | {big_id}
    for instance_id in fleet:  # c5.large: 2 vCPUs, 4 GiB
        assert resources(cis[instance_id]) == (2048, 4096)
        assert resources(cis[instance_id], "remainingResources") == (2048, 4096)
        assert cis[instance_id]["status"] == "ACTIVE" and cis[instance_id]["agentConnected"]
    assert resources(cis[big_id]) == (4096, 16384 - 256)  # m5.xlarge: 4 vCPUs, 16 GiB

    state = harness.ok("GET", "state")
    assert {i["instanceId"] for i in state["instances"]} == set(fleet) | {big_id, plain_id}
    assert {c["instanceId"] for c in state["containerInstances"]} == set(fleet) | {big_id}
    lifecycles = {i["instanceId"]: i["lifecycle"] for i in state["instances"]}
    assert all(lifecycles[i] == lc for i, lc in fleet.items())


def test_task_stays_running_until_completed_with_exit_code(aws, harness):
    ci = one_instance(aws)
    arn = start_task(aws, ci)
    for _ in range(6):  # moto alone would walk it to STOPPED in four calls
        task = describe_task(aws, arn)
        assert task["lastStatus"] == "RUNNING" and task["containers"][0]["lastStatus"] == "RUNNING"
    assert "startedAt" in task
    after_start = aws.ecs.describe_container_instances(cluster=aws.cluster, containerInstances=[ci["containerInstanceArn"]])
    assert resources(after_start["containerInstances"][0], "remainingResources") == (1024, 3072)

    done = harness.ok("POST", f"tasks/{arn}/complete", {"exitCode": 3, "reason": "job script failed"})
    assert done["lastStatus"] == "STOPPED" and done["containers"][0]["exitCode"] == 3

    task = describe_task(aws, arn)
    assert task["lastStatus"] == "STOPPED" and task["desiredStatus"] == "STOPPED"
    assert task["containers"][0]["exitCode"] == 3
    assert task["containers"][0]["lastStatus"] == "STOPPED"
    assert task["stoppedReason"] == "job script failed"
    assert task["stopCode"] == "EssentialContainerExited"
    assert "stoppedAt" in task
    freed = aws.ecs.describe_container_instances(cluster=aws.cluster, containerInstances=[ci["containerInstanceArn"]])
    assert resources(freed["containerInstances"][0], "remainingResources") == (2048, 4096)

    # Completing twice is a conflict, an unknown task is not found.
    assert harness.control("POST", f"tasks/{arn}/complete", {"exitCode": 0})[0] == 409
    assert harness.control("POST", "tasks/arn:aws:ecs:us-east-1:123456789012:task/x/nope/complete", {})[0] == 404


def test_workload_stops_tasks_on_their_own_and_boots_instances_late(aws, harness):
    # Before the workload: a task runs until told.
    ci = one_instance(aws)
    before = start_task(aws, ci)
    assert harness.ok("POST", "workload", {"taskSeconds": 0.5, "bootSeconds": 1.5, "exitCode": 0})["workload"] == {
        "taskSeconds": 0.5, "bootSeconds": 1.5, "exitCode": 0}
    started = time.monotonic()
    arn = start_task(aws, ci)
    assert describe_task(aws, arn)["lastStatus"] == "RUNNING"
    task = wait_for(lambda: (t := describe_task(aws, arn))["lastStatus"] == "STOPPED" and t)
    assert time.monotonic() - started >= 0.5
    assert task["containers"][0]["exitCode"] == 0 and task["stopCode"] == "EssentialContainerExited"
    assert describe_task(aws, before)["lastStatus"] == "RUNNING"
    freed = aws.ecs.describe_container_instances(cluster=aws.cluster, containerInstances=[ci["containerInstanceArn"]])
    assert resources(freed["containerInstances"][0], "remainingResources") == (1024, 3072)

    # A new instance registers only once it has booted.
    launched = time.monotonic()
    create_fleet(aws, spot=0, on_demand=1)
    container_instances(aws, 2)
    assert time.monotonic() - launched >= 1.5

    for bad in ({"taskSeconds": -1}, {"taskSeconds": "1"}, {"taskSeconds": 1, "exitCode": 1.5}, {}):
        assert harness.control("POST", "workload", bad)[0] == 400, bad
    assert harness.ok("DELETE", "workload") == {"workload": {}}
    assert describe_task(aws, before)["lastStatus"] == "RUNNING"


def test_start_task_that_does_not_fit_fails_like_ecs(aws):
    ci = one_instance(aws)
    big = aws.ecs.register_task_definition(family="big", containerDefinitions=[
        {"name": "main", "image": "busybox", "cpu": 1024, "memory": 8192}])["taskDefinition"]["taskDefinitionArn"]
    resp = aws.ecs.start_task(cluster=aws.cluster, taskDefinition=big, containerInstances=[ci["containerInstanceArn"]])
    assert resp["tasks"] == []
    assert resp["failures"] == [{"arn": ci["containerInstanceArn"], "reason": "RESOURCE:MEMORY"}]
    start_task(aws, ci)
    start_task(aws, ci)  # 2 x 1024 CPU units fill a c5.large
    resp = aws.ecs.start_task(cluster=aws.cluster, taskDefinition=aws.task_def, containerInstances=[ci["containerInstanceArn"]])
    assert [f["reason"] for f in resp["failures"]] == ["RESOURCE:CPU"]


def test_stop_task_records_sigterm_once(aws):
    ci = one_instance(aws)
    arn = start_task(aws, ci)
    stopped = aws.ecs.stop_task(cluster=aws.cluster, task=arn, reason="terminated by user")["task"]
    assert stopped["lastStatus"] == "STOPPED" and stopped["stopCode"] == "UserInitiated"
    assert stopped["containers"][0]["exitCode"] == 143
    again = aws.ecs.stop_task(cluster=aws.cluster, task=arn, reason="again")["task"]
    assert again["stoppedReason"] == "terminated by user"
    ci_now = aws.ecs.describe_container_instances(cluster=aws.cluster, containerInstances=[ci["containerInstanceArn"]])
    assert resources(ci_now["containerInstances"][0], "remainingResources") == (2048, 4096)  # freed once
    with pytest.raises(ClientError) as err:
        aws.ecs.stop_task(cluster=aws.cluster, task="nope")
    assert err.value.response["Error"]["Code"] == "InvalidParameterException"


def test_spot_interruption_stops_tasks_and_deactivates_container_instance(aws, harness):
    fleet = create_fleet(aws, spot=1, on_demand=1)
    cis = container_instances(aws, 2)
    spot = next(i for i, lc in fleet.items() if lc == "spot")
    on_demand = next(i for i, lc in fleet.items() if lc == "on-demand")
    doomed, survivor = start_task(aws, cis[spot]), start_task(aws, cis[on_demand])

    result = harness.ok("POST", f"instances/{spot}/interrupt")
    assert result["state"] == "terminated"

    task = describe_task(aws, doomed)
    assert task["lastStatus"] == "STOPPED"
    assert task["stoppedReason"] == f"Host EC2 (instance {spot}) terminated."
    assert "exitCode" not in task["containers"][0]  # the container never exited
    assert describe_task(aws, survivor)["lastStatus"] == "RUNNING"

    ci = aws.ecs.describe_container_instances(cluster=aws.cluster, containerInstances=[cis[spot]["containerInstanceArn"]])
    assert ci["containerInstances"][0]["status"] == "INACTIVE"
    assert ci["containerInstances"][0]["agentConnected"] is False
    listed = aws.ecs.list_container_instances(cluster=aws.cluster)["containerInstanceArns"]
    assert listed == [cis[on_demand]["containerInstanceArn"]]

    instance = aws.ec2.describe_instances(InstanceIds=[spot])["Reservations"][0]["Instances"][0]
    assert instance["State"]["Name"] == "terminated"
    assert instance["StateReason"]["Code"] == "Server.SpotInstanceTermination"
    assert harness.control("POST", f"instances/{spot}/interrupt")[0] == 409
    assert harness.control("POST", "instances/i-0123456789abcdef0/interrupt")[0] == 404

    state = harness.ok("GET", "state")
    assert next(t for t in state["tasks"] if t["taskArn"] == doomed)["stoppedReason"].startswith("Host EC2")
    assert next(c for c in state["containerInstances"] if c["instanceId"] == spot)["status"] == "INACTIVE"


def test_terminate_instances_stops_its_tasks_too(aws, harness):
    instance_id = next(iter(create_fleet(aws, 0, 1)))
    ci = container_instances(aws, 1)[instance_id]
    arn = start_task(aws, ci)
    aws.ec2.terminate_instances(InstanceIds=[instance_id])
    harness.ok("POST", "agent/sync")  # the loop would see it within 0.2 s; this is now
    task = describe_task(aws, arn)
    assert task["lastStatus"] == "STOPPED"
    assert task["stoppedReason"] == f"Host EC2 (instance {instance_id}) terminated."


def test_agent_waits_for_the_cluster_and_reads_mime_user_data(aws, harness):
    cluster = aws.cluster + "-later"
    mime = (
        'Content-Type: multipart/mixed; boundary="==B=="\nMIME-Version: 1.0\n\n--==B==\n'
        'Content-Type: text/x-shellscript; charset="us-ascii"\n\n#!/bin/bash\n'
        f"echo ECS_CLUSTER={cluster} >> /etc/ecs/ecs.config\n--==B==--\n")
    instance_id = aws.ec2.run_instances(ImageId=aws.image, MinCount=1, MaxCount=1, InstanceType="c5.xlarge",
                                        UserData=mime)["Instances"][0]["InstanceId"]
    assert harness.ok("POST", "agent/sync")["registered"] == []  # no such cluster yet
    aws.ecs.create_cluster(clusterName=cluster)
    registered = harness.ok("POST", "agent/sync")["registered"]
    if registered:  # else the loop got there first
        assert [r["instanceId"] for r in registered] == [instance_id]
    arns = aws.ecs.list_container_instances(cluster=cluster)["containerInstanceArns"]
    ci = aws.ecs.describe_container_instances(cluster=cluster, containerInstances=arns)["containerInstances"]
    assert [(c["ec2InstanceId"], resources(c)) for c in ci] == [(instance_id, (4096, 8192))]


def test_throttling_one_operation_leaves_others_alone(aws, harness):
    harness.ok("POST", "faults", {"service": "ec2", "operation": "CreateFleet", "throttle": 1.0, "seed": 1})
    harness.ok("POST", "faults", {"service": "ecs", "operation": "ListClusters", "throttle": 1.0})
    with pytest.raises(ClientError) as err:
        create_fleet(aws, 0, 1)
    assert err.value.response["Error"]["Code"] == "RequestLimitExceeded"
    assert err.value.response["ResponseMetadata"]["HTTPStatusCode"] == 503  # as EC2 sends it
    with pytest.raises(ClientError) as err:
        aws.ecs.list_clusters()
    assert err.value.response["Error"]["Code"] == "ThrottlingException"
    assert err.value.response["ResponseMetadata"]["HTTPStatusCode"] == 400
    # Other operations pass.
    assert aws.ec2.describe_instances()["Reservations"] == []
    aws.ecs.describe_clusters(clusters=[aws.cluster])

    faults = {(f["service"], f["operation"]): f for f in harness.ok("GET", "state")["faults"]}
    assert faults[("ec2", "CreateFleet")]["throttled"] == 1
    harness.ok("DELETE", "faults")
    assert create_fleet(aws, 0, 1)


def test_injected_500s(aws, harness):
    harness.ok("POST", "faults", {"service": "ecs", "operation": "DescribeClusters", "error": 1.0})
    harness.ok("POST", "faults", {"service": "ec2", "operation": "DescribeInstances", "error": 1.0})
    with pytest.raises(ClientError) as err:
        aws.ecs.describe_clusters(clusters=[aws.cluster])
    assert err.value.response["ResponseMetadata"]["HTTPStatusCode"] == 500
    assert err.value.response["Error"]["Code"] == "ServerException"
    with pytest.raises(ClientError) as err:
        aws.ec2.describe_instances()
    assert err.value.response["ResponseMetadata"]["HTTPStatusCode"] == 500
    assert err.value.response["Error"]["Code"] == "InternalError"
    aws.ecs.list_clusters()


def test_sdk_retries_through_limited_throttling(aws, harness):
    # Two throttles, then success: an SDK with retries on gets through, as against AWS.
    harness.ok("POST", "faults", {"service": "ecs", "operation": "ListClusters", "throttle": 1.0, "limit": 2})
    retrying = harness.client("ecs", Config(retries={"total_max_attempts": 3, "mode": "standard"}))
    resp = retrying.list_clusters()
    assert resp["ResponseMetadata"]["RetryAttempts"] == 2
    rule = harness.ok("GET", "faults")["faults"][0]
    assert (rule["calls"], rule["throttled"]) == (3, 2)


def test_fractions_are_reproducible_with_a_seed(aws, harness):
    def run():
        harness.ok("POST", "faults", {"service": "ecs", "operation": "ListClusters", "throttle": 0.3,
                                      "error": 0.2, "seed": 7})
        outcomes = []
        for _ in range(40):
            try:
                aws.ecs.list_clusters()
                outcomes.append("ok")
            except ClientError as err:
                outcomes.append(err.response["Error"]["Code"])
        return outcomes

    first, second = run(), run()
    assert first == second
    assert {"ok", "ThrottlingException", "ServerException"} <= set(first)


def test_bad_fault_spec_is_rejected(harness):
    assert harness.control("POST", "faults", {"operation": "CreateFleet", "throttle": 1})[0] == 400
    assert harness.control("POST", "faults", {"service": "ec2", "throttle": 0.8, "error": 0.5})[0] == 400
    assert harness.control("GET", "nothing-here")[0] == 404


def cbor_call(harness, operation: str, payload: dict) -> tuple[int, dict]:
    import urllib.request

    import cbor2

    req = urllib.request.Request(
        harness.endpoint + "/service/GraniteServiceVersion20100801/operation/" + operation,
        data=cbor2.dumps(payload), method="POST",
        headers={"Content-Type": "application/cbor", "smithy-protocol": "rpc-v2-cbor",
                 "Authorization": "AWS4-HMAC-SHA256 Credential=testing/20260101/eu-west-1/monitoring/aws4_request, SignedHeaders=host, Signature=0"})
    try:
        with urllib.request.urlopen(req) as resp:
            return resp.status, cbor2.loads(resp.read())
    except urllib.error.HTTPError as exc:
        return exc.code, cbor2.loads(exc.read())


def test_put_metric_data_in_cbor_is_stored_and_listed(harness):
    from datetime import datetime, timezone

    when = datetime(2026, 12, 5, 12, 0, tzinfo=timezone.utc)
    status, body = cbor_call(harness, "PutMetricData", {"Namespace": "Test/CBOR", "MetricData": [
        {"MetricName": "QueueJobs", "Value": 3.0, "Unit": "Count", "Timestamp": when,
         "Dimensions": [{"Name": "JobQueue", "Value": "q1"}, {"Name": "Status", "Value": "RUNNABLE"}]},
    ]})
    assert (status, body) == (200, {})
    got = [m for m in harness.ok("GET", "cloudwatch")["metrics"] if m["namespace"] == "Test/CBOR"]
    assert got == [{"region": "eu-west-1", "namespace": "Test/CBOR", "name": "QueueJobs", "value": 3.0,
                    "unit": "Count", "dimensions": {"JobQueue": "q1", "Status": "RUNNABLE"},
                    "timestamp": when.isoformat()}]
    # Another operation in CBOR is refused by name, and a malformed request says what is wrong.
    status, body = cbor_call(harness, "GetMetricData", {})
    assert status == 400 and "GetMetricData" in body["message"]
    status, body = cbor_call(harness, "PutMetricData", {"MetricData": []})
    assert status == 400 and "Namespace" in body["message"]
