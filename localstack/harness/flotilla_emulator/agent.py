"""The parts of AWS that moto does not play: the ECS agent on each instance, containers that
exit, and Spot interruptions. All of it works on moto's backend objects in this process;
callers hold the emulator's lock, so no AWS request is served half-way through a change."""

from __future__ import annotations

from moto.core.utils import utcnow
from moto.ec2.models import ec2_backends
from moto.ec2.models.instances import StateReason
from moto.ecs.models import ecs_backends

import time

from . import patches
from .patches import ecs_config, find_task, finish_task, instance_resources

GONE = ("shutting-down", "terminated")


def _backends():
    """(ec2 backend, ecs backend) of every account and region that has EC2 state."""
    for account_id, regions in list(ec2_backends.items()):
        for region, ec2 in list(regions.items()):
            yield ec2, ecs_backends[account_id][region]


def _all_instances(ec2):
    return list(ec2.all_instances())


# Instances the agent has registered once. A real agent registers once per boot, so an
# instance deregistered through the API is not registered again.
_seen: set[str] = set()
# When the agent first saw each instance running (the workload's boot delay runs from then).
_first_running: dict[str, float] = {}


def reset() -> None:
    _seen.clear()
    _first_running.clear()
    patches.clear_workload(forget_tasks=True)


class NotFound(Exception):
    pass


class Conflict(Exception):
    pass


def sync() -> dict:
    """One pass of the ECS agent on every instance: register instances whose user data names
    an existing cluster, and deregister (INACTIVE) those whose instance is gone, stopping their
    tasks as ECS does when a host dies. Returns what it did."""
    done = {"registered": [], "deregistered": [], "completed": 0}
    now = time.monotonic()
    work = patches.workload()
    boot = work.get("bootSeconds", 0.0)
    backends = list(_backends())
    for task in patches.due_tasks(now):
        for _, ecs in backends:
            if ecs.tasks.get(task.cluster_name, {}).get(task.task_arn) is task:
                if finish_task(ecs, task, reason="Essential container in task exited",
                               exit_code=work.get("exitCode", 0), stop_code="EssentialContainerExited"):
                    done["completed"] += 1
                break
    for ec2, ecs in backends:
        registered = {ci.ec2_instance_id for cis in ecs.container_instances.values() for ci in cis.values()}
        for instance in _all_instances(ec2):
            if instance.id in registered or instance.id in _seen or instance.state != "running":
                continue
            if boot and now - _first_running.setdefault(instance.id, now) < boot:
                continue
            cluster = ecs_config(instance.user_data).get("ECS_CLUSTER")
            # Like the real agent, keep retrying until the cluster exists (and is not deleted).
            if cluster and cluster in ecs.clusters and ecs.clusters[cluster].status == "ACTIVE":
                ci = ecs.register_container_instance(cluster, instance.id)
                _seen.add(instance.id)
                done["registered"].append({"instanceId": instance.id,
                                           "containerInstanceArn": ci.container_instance_arn})
        for cluster, cis in list(ecs.container_instances.items()):
            for ci in list(cis.values()):
                if ci.status == "INACTIVE":
                    continue
                instance = ec2.get_instance_by_id(ci.ec2_instance_id)
                if instance is None or instance.state in GONE:
                    _host_gone(ecs, cluster, ci)
                    done["deregistered"].append(ci.container_instance_arn)
    return done


def _host_gone(ecs, cluster: str, ci) -> None:
    reason = f"Host EC2 (instance {ci.ec2_instance_id}) terminated."
    for task in patches.running_tasks():
        if task.cluster_name == cluster and task.container_instance_arn == ci.container_instance_arn:
            # No exit code: the containers never exited, the machine went away.
            finish_task(ecs, task, reason=reason, exit_code=None, stop_code=None)
    ci.status = "INACTIVE"
    ci.agent_connected = False
    if cluster in ecs.clusters:
        ecs.clusters[cluster].registered_container_instances_count -= 1


def complete_task(task_arn: str, exit_code: int, reason: str, stop_code: str,
                  container_reason: str | None) -> dict:
    for _, ecs in _backends():
        task = find_task(ecs, task_arn)
        if task is None:
            continue
        if not finish_task(ecs, task, reason=reason, exit_code=exit_code, stop_code=stop_code,
                           container_reason=container_reason):
            raise Conflict(f"task {task_arn} is already STOPPED")
        return task_view(task)
    raise NotFound(f"no task {task_arn}")


def interrupt_instance(instance_id: str) -> dict:
    """A Spot interruption: EC2 terminates the instance, then the agent's host is gone."""
    for ec2, _ in _backends():
        instance = ec2.get_instance_by_id(instance_id)
        if instance is None:
            continue
        if instance.state in GONE:
            raise Conflict(f"instance {instance_id} is already {instance.state}")
        ec2.terminate_instances([instance_id])  # moto also releases fleet capacity
        instance._reason = f"Service initiated ({utcnow().strftime('%Y-%m-%d %H:%M:%S GMT')})"
        instance.state_reason = StateReason(
            "Server.SpotInstanceTermination: Spot instance termination",
            "Server.SpotInstanceTermination")
        sync()
        return instance_view(instance)
    raise NotFound(f"no instance {instance_id}")


def _ts(value):
    return value.isoformat() if value is not None else None


def instance_view(i) -> dict:
    return {"instanceId": i.id, "instanceType": i.instance_type, "state": i.state,
            "lifecycle": i.lifecycle or "on-demand",
            "stateReason": {"code": i.state_reason.code, "message": i.state_reason.message},
            "ecsCluster": ecs_config(i.user_data).get("ECS_CLUSTER"),
            "resources": dict(zip(("cpu", "memory"), instance_resources(i) or (None, None)))}


def container_instance_view(ci) -> dict:
    res = {}
    for key, resources in (("registered", ci.registered_resources), ("remaining", ci.remaining_resources)):
        res[key] = {r["name"].lower(): r.get("integerValue") for r in resources if r["name"] in ("CPU", "MEMORY")}
    return {"containerInstanceArn": ci.container_instance_arn, "cluster": ci.cluster_name,
            "instanceId": ci.ec2_instance_id, "status": ci.status, "agentConnected": ci.agent_connected,
            "runningTasksCount": ci.running_tasks_count, **res}


def task_view(t) -> dict:
    return {"taskArn": t.task_arn, "cluster": t.cluster_name,
            "containerInstanceArn": t.container_instance_arn,
            "taskDefinitionArn": t.task_definition_arn, "lastStatus": t.last_status,
            "desiredStatus": t.desired_status, "stoppedReason": t.stopped_reason,
            "startedBy": getattr(t, "started_by", None) or None,
            "stopCode": getattr(t, "stop_code", None), "startedAt": _ts(getattr(t, "started_at", None)),
            "stoppedAt": _ts(getattr(t, "stopped_at", None)),
            "containers": [{"name": c.name, "lastStatus": c.last_status, "exitCode": c.exitCode,
                            "reason": getattr(c, "reason", None)} for c in t.containers]}


def state() -> dict:
    out = {"instances": [], "containerInstances": [], "tasks": []}
    for ec2, ecs in _backends():
        out["instances"] += [instance_view(i) for i in _all_instances(ec2)]
        out["containerInstances"] += [container_instance_view(ci) for cis in ecs.container_instances.values()
                                      for ci in cis.values()]
        out["tasks"] += [task_view(t) for ts in ecs.tasks.values() for t in ts.values()]
    return out
