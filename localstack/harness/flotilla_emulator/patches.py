"""Patches to moto's ECS backend objects, applied in-process before the server starts.

Every patch here works around one verified gap between moto and real ECS that Flotilla's
driver would trip over. They reach into moto internals, so they are pinned to the moto
version they were written and tested against (MOTO_TESTED); `apply()` warns on any other.

  P1  register_container_instance: moto registers every container instance with a fixed
      4096 CPU / 7482 MiB and ignores `totalResources`. We overwrite registered and
      remaining CPU/MEMORY with the instance type's vCPUs x 1024 and its memory in MiB
      (less ECS_RESERVED_MEMORY when the instance's user data sets it, as the agent does).
  P2  Task creation: moto's task has no createdAt/startedAt and its containers stay PENDING
      while the task is RUNNING. We stamp the times and mark the containers RUNNING.
  P3  StopTask: moto leaves containers PENDING with exitCode 0, sets no stopCode or
      stoppedAt, answers an HTML 500 for an unknown task, and frees the instance's resources
      again on every repeated call. We stop once (exit code 143, as after SIGTERM, stopCode
      UserInitiated), answer InvalidParameterException for an unknown task, and return an
      already stopped task unchanged.
  P4  StartTask: moto places a task whatever its size (remaining CPU/memory go negative) and
      answers an HTML 500 for an unknown container instance. We answer ECS-style `failures`
      instead: RESOURCE:CPU, RESOURCE:MEMORY, or MISSING for an unknown or INACTIVE
      container instance.
  P5  ListContainerInstances without a status filter: moto lists INACTIVE instances too;
      ECS lists every status but INACTIVE.

Not patched: DescribeTasks advancing tasks (pinned through moto's state manager instead, see
server.py), RunTask's silent short placement, and the other HTML 500s (see README).
"""

from __future__ import annotations

import base64
import re
import sys

import moto
from moto.core.utils import utcnow
from moto.ec2.models.instance_types import INSTANCE_TYPES
from moto.ecs import models as ecs_models
from moto.ecs import responses as ecs_responses
from moto.ecs.exceptions import InvalidParameterException

MOTO_TESTED = "5.2.5"

_applied = False


def user_data_text(user_data) -> str:
    """Decoded user data of a moto instance (moto keeps it base64, as EC2 receives it)."""
    if user_data is None:
        return ""
    if hasattr(user_data, "decode") and not isinstance(user_data, bytes):
        try:
            return user_data.decode()  # moto.core.types.Base64EncodedString
        except Exception:
            return ""
    if isinstance(user_data, list):  # older moto kept a list of raw bytes
        user_data = user_data[0] if user_data else b""
    raw = user_data.encode() if isinstance(user_data, str) else bytes(user_data)
    try:
        return base64.b64decode(raw, validate=True).decode(errors="replace")
    except Exception:
        return raw.decode(errors="replace")


def ecs_config(user_data) -> dict[str, str]:
    """The ECS_* settings the user data writes to /etc/ecs/ecs.config.

    Matches `echo ECS_CLUSTER=name >> /etc/ecs/ecs.config`, heredocs and plain lines alike, in
    a shell script or a MIME multi-part document (AWS Batch's launch template format).
    """
    found = {}
    for key, value in re.findall(r"\b(ECS_[A-Z_]+)=[\"']?([A-Za-z0-9_.:/-]+)", user_data_text(user_data)):
        found.setdefault(key, value)
    return found


def instance_resources(instance) -> tuple[int, int] | None:
    """(CPU units, memory MiB) the ECS agent would register for this instance, or None."""
    info = INSTANCE_TYPES.get(instance.instance_type)
    if not info:
        return None
    cpu = int(info["VCpuInfo"]["DefaultVCpus"]) * 1024
    memory = int(info["MemoryInfo"]["SizeInMiB"])
    reserved = ecs_config(instance.user_data).get("ECS_RESERVED_MEMORY", "0")
    memory -= int(reserved) if reserved.isdigit() else 0
    return cpu, memory


def _set_resource(resources: list[dict], name: str, value: int) -> None:
    for resource in resources:
        if resource.get("name") == name:
            resource["integerValue"] = value


def finish_task(backend, task, *, reason: str, exit_code: int | None, stop_code: str | None,
                container_reason: str | None = None) -> bool:
    """Stop a task once: free its container instance's resources as moto's StopTask does, then
    record how it ended. Returns False (and changes nothing) if it was already STOPPED."""
    if task.last_status == "STOPPED":
        return False
    if task.container_instance_arn:
        ci = backend.container_instances.get(task.cluster_name, {}).get(
            task.container_instance_arn.split("/")[-1])
        if ci is not None and task.resource_requirements:
            backend.update_container_instance_resources(ci, task.resource_requirements, removing=True)
        cluster = backend.clusters.get(task.cluster_name)
        if cluster is not None:
            backend.update_cluster_resources(cluster, -1, task_state="RUNNING")
    now = utcnow()
    task.last_status = "STOPPED"
    task.desired_status = "STOPPED"
    task.stopped_reason = reason
    task.stop_code = stop_code
    task.stopping_at = task.execution_stopped_at = task.stopped_at = now
    for container in task.containers:
        container.last_status = "STOPPED"
        container.exitCode = exit_code  # None: no exit code, as when the host died
        container.reason = container_reason
    return True


def find_task(backend, task_str: str, cluster_name: str | None = None):
    task_id = task_str.split("/")[-1]
    for name, tasks in backend.tasks.items():
        if cluster_name and name != cluster_name:
            continue
        for arn, task in tasks.items():
            if arn.split("/")[-1] == task_id:
                return task
    return None


def apply() -> None:
    global _applied
    if _applied:
        return
    _applied = True
    if moto.__version__ != MOTO_TESTED:
        print(f"flotilla_emulator: WARNING: patches were tested with moto {MOTO_TESTED}, "
              f"found {moto.__version__}", file=sys.stderr)

    Backend = ecs_models.EC2ContainerServiceBackend

    # P1: real CPU and memory for every registration, by the agent loop or the API.
    orig_register = Backend.register_container_instance

    def register_container_instance(self, cluster_str, ec2_instance_id):
        ci = orig_register(self, cluster_str, ec2_instance_id)
        instance = ecs_models.ec2_backends[self.account_id][self.region_name].get_instance(ec2_instance_id)
        resources = instance_resources(instance)
        if resources:
            for name, value in zip(("CPU", "MEMORY"), resources):
                _set_resource(ci.registered_resources, name, value)
                _set_resource(ci.remaining_resources, name, value)
        return ci

    Backend.register_container_instance = register_container_instance

    # P2: a started task is RUNNING with RUNNING containers and timestamps.
    orig_task_init = ecs_models.Task.__init__

    def task_init(self, *args, **kwargs):
        orig_task_init(self, *args, **kwargs)
        now = utcnow()
        self.created_at = self.pull_started_at = self.pull_stopped_at = self.started_at = now
        self.stop_code = None
        for container in self.containers:
            container.last_status = "RUNNING"

    ecs_models.Task.__init__ = task_init

    # P3: StopTask stops once, with a SIGTERM exit code and a stop code.
    def stop_task(self, cluster_str, task_str, reason):
        cluster = self._get_cluster(cluster_str)
        task = find_task(self, task_str, cluster.name)
        if task is None:
            raise InvalidParameterException("The referenced task was not found.")
        finish_task(self, task, reason=reason or "Task stopped by user", exit_code=143,
                    stop_code="UserInitiated")
        return task

    Backend.stop_task = stop_task

    # P4: StartTask refuses what does not fit, with ECS's failure reasons.
    def start_task_response(self):
        cluster_str = self._get_param("cluster", "default")
        backend = self.ecs_backend
        cluster = backend._get_cluster(cluster_str)
        task_def = backend.describe_task_definition(self._get_param("taskDefinition"))
        needs = backend._calculate_task_resource_requirements(task_def)
        tasks, failures = [], []
        for ci_str in self._get_param("containerInstances") or []:
            ci = backend.container_instances.get(cluster.name, {}).get(ci_str.split("/")[-1])
            reason = None
            if ci is None or ci.status == "INACTIVE":
                reason = "MISSING"
            else:
                remaining = {r["name"]: r.get("integerValue", 0) for r in ci.remaining_resources}
                if needs["CPU"] > remaining.get("CPU", 0):
                    reason = "RESOURCE:CPU"
                elif (needs["MEMORY"] or 0) > remaining.get("MEMORY", 0):
                    reason = "RESOURCE:MEMORY"
            if reason:
                failures.append({"arn": ci.container_instance_arn if ci else ci_str, "reason": reason})
                continue
            tasks += backend.start_task(
                cluster_str, task_def.arn, [ci_str], self._get_param("overrides"),
                self._get_param("startedBy"), self._get_param("tags"), self._get_param("group"))
        return ecs_responses.ActionResult({"tasks": tasks, "failures": failures})

    ecs_responses.EC2ContainerServiceResponse.start_task = start_task_response

    # P5: no INACTIVE container instances unless asked for by status.
    orig_list_ci = Backend.list_container_instances

    def list_container_instances(self, cluster_str, status=None):
        arns = orig_list_ci(self, cluster_str, status=status)
        if status is not None:
            return arns
        cis = self.container_instances.get(cluster_str.split("/")[-1], {})
        inactive = {ci.container_instance_arn for ci in cis.values() if ci.status == "INACTIVE"}
        return [arn for arn in arns if arn not in inactive]

    Backend.list_container_instances = list_container_instances
