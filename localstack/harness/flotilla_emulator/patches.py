"""Patches to moto's ECS backend objects, applied in-process before the server starts.

Every patch here works around one verified gap between moto and real ECS that Flotilla's
driver would trip over. They reach into moto internals, so they are pinned to the moto
version they were written and tested against (MOTO_TESTED); `apply()` warns on any other.

  P1  register_container_instance: moto registers every container instance with a fixed
      4096 CPU / 7482 MiB and ignores `totalResources`. We overwrite registered and
      remaining CPU/MEMORY with the instance type's vCPUs x 1024 and its memory in MiB
      (less ECS_RESERVED_MEMORY when the instance's user data sets it, as the agent does).
      On a GPU instance type the agent also registers a GPU resource (STRINGSET of GPU IDs,
      one per GPU), which moto leaves out; we add it.
  P2  Task creation: moto's task has no createdAt/startedAt and its containers stay PENDING
      while the task is RUNNING. We stamp the times and mark the containers RUNNING.
  P3  StopTask: moto leaves containers PENDING with exitCode 0, sets no stopCode or
      stoppedAt, answers an HTML 500 for an unknown task, and frees the instance's resources
      again on every repeated call. We stop once (exit code 143, as after SIGTERM, stopCode
      UserInitiated), answer InvalidParameterException for an unknown task, and return an
      already stopped task unchanged.
  P4  StartTask: moto places a task whatever its size (remaining CPU/memory go negative),
      reserves the task definition's CPU/memory even when overrides change them, and answers an
      HTML 500 for an unknown container instance. We reserve what ECS would (container
      overrides' cpu/memory/memoryReservation, task-level cpu/memory when set) and answer
      ECS-style `failures` instead: RESOURCE:CPU, RESOURCE:MEMORY, or MISSING for an unknown
      or INACTIVE container instance.
  P5  ListContainerInstances without a status filter: moto lists INACTIVE instances too;
      ECS lists every status but INACTIVE.

  P6  CreateFleet ClientToken: moto launches again on every call. We answer a repeated token
      with the first call's response (no new instances), and a token reused with other
      parameters with IdempotentParameterMismatch, as EC2 does.
  P7  CreateFleet capacity: moto launches everything from the first (cheapest) override and
      never answers `Errors`. With capacity rules from the control API (`/_flotilla/capacity`),
      an override whose pool has no capacity left is skipped for the next one, and each short
      pool is reported in `Errors` (InsufficientInstanceCapacity), as an instant fleet does.
  P8  TerminateInstances on an already terminated instance: moto terminates it again,
      overwriting its state reason (a Spot interruption's Server.SpotInstanceTermination) and
      releasing fleet capacity twice. We leave it alone and answer terminated -> terminated.
  P9  DeleteLaunchTemplate of an unknown name: moto answers MissingParameter; EC2 answers
      InvalidLaunchTemplateName.NotFoundException.
  P10 DeleteCluster: moto deletes a cluster with ACTIVE or DRAINING container instances; ECS
      refuses with ClusterContainsContainerInstancesException. CreateCluster of an ACTIVE
      cluster returns it unchanged (moto replaced it, resetting its counts); the agent does not
      register instances with a deleted (INACTIVE) cluster.
  P11 DeregisterContainerInstance: moto forgets the instance (DescribeContainerInstances then
      says MISSING), answers it with its old status and an HTML 500 for an unknown one. We keep
      it INACTIVE (agentConnected false), as ECS does; an unknown one is an
      InvalidParameterException. Tasks on a force-deregistered instance are left as they are
      (ECS calls them orphaned).
  P12 DescribeTasks: moto matches task ids as substrings in every cluster and never reports
      failures. We match exactly, in the cluster asked for, and answer `failures`
      (reason MISSING) for the rest. Container-instance failures (DescribeContainerInstances,
      UpdateContainerInstancesState) carry the ARN as asked for, not one without the cluster.
  P13 ListTasks: moto lists every desired status when none is given and matches the cluster by
      substring (cluster "a" also lists "ab"'s tasks). ECS defaults to desiredStatus RUNNING,
      matches exactly, and rejects startedBy together with family, serviceName or launchType.
  P14 Response shapes: UpdateContainerInstancesState and DeregisterContainerInstance gave
      `attributes: [{}, ...]`; a running container had exitCode 0, a running task
      stoppedReason "", launchType "" and containers whose taskArn was the task definition's.

  P16 Task look-ups by ARN: moto scans every task of every cluster (splitting each ARN) for
      each task DescribeTasks or StopTask names, which at 100,000 tasks is seconds per call.
      We look the ARN up directly and keep the unfinished tasks in their own table (the
      workload below and the agent's host-gone sweep walk only those).

The workload (control API `/_flotilla/workload`, off by default): tasks started while it is set
stop on their own `taskSeconds` after StartTask with the given exit code, and the agent
registers an instance `bootSeconds` after it first sees it running, as a real host boots. This
is what `flotilla bench --scenarios aws-scale` runs against.

Not patched: DescribeTasks advancing tasks (pinned through moto's state manager instead, see
server.py), RunTask's silent short placement, and the other HTML 500s (see README).
"""

from __future__ import annotations

import base64
import copy
import heapq
import re
import sys
import threading
import time

import moto
from moto.core.responses import ActionResult
from moto.core.utils import utcnow
from moto.ec2.exceptions import EC2ClientError, InvalidLaunchTemplateNameNotFoundWithNameError
from moto.ec2.models.fleets import Fleet
from moto.ec2.models.instance_types import INSTANCE_TYPES
from moto.ec2.models.instances import Instance
from moto.ec2.models.launch_templates import LaunchTemplateBackend
from moto.ec2.responses.fleets import Fleets
from moto.ec2.responses.instances import InstanceResponse
from moto.ecs import models as ecs_models
from moto.ecs import responses as ecs_responses
from moto.ecs.exceptions import ECSException, EcsClientException, InvalidParameterException

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


def instance_gpus(instance) -> int:
    """GPUs the ECS agent would register for this instance."""
    info = INSTANCE_TYPES.get(instance.instance_type) or {}
    return sum(int(g.get("Count", 0)) for g in info.get("GpuInfo", {}).get("Gpus", []))


def _set_resource(resources: list[dict], name: str, value: int) -> None:
    for resource in resources:
        if resource.get("name") == name:
            resource["integerValue"] = value


# Tasks not yet STOPPED, by ARN (P16), and when each is due to stop under the workload.
_running: dict[str, object] = {}
_due: list[tuple[float, str]] = []
_workload: dict = {}


def set_workload(spec: dict) -> dict:
    task_seconds, boot_seconds = spec.get("taskSeconds"), spec.get("bootSeconds", 0)
    exit_code = spec.get("exitCode", 0)
    for name, value in (("taskSeconds", task_seconds), ("bootSeconds", boot_seconds)):
        if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0:
            raise ValueError(f"'{name}' is a non-negative number of seconds")
    if isinstance(exit_code, bool) or not isinstance(exit_code, int):
        raise ValueError("'exitCode' is an integer")
    _workload.clear()
    _workload.update(taskSeconds=float(task_seconds), bootSeconds=float(boot_seconds), exitCode=exit_code)
    return {"workload": dict(_workload)}


def workload() -> dict:
    return dict(_workload)


def clear_workload(*, forget_tasks: bool = False) -> None:
    """Tasks already started keep running until told; `forget_tasks` (a reset) also drops the
    table of unfinished tasks."""
    _workload.clear()
    _due.clear()
    if forget_tasks:
        _running.clear()


def running_tasks() -> list:
    return list(_running.values())


def due_tasks(now: float) -> list:
    """The unfinished tasks whose workload time is up, taken off the schedule."""
    out = []
    while _due and _due[0][0] <= now:
        _, arn = heapq.heappop(_due)
        task = _running.get(arn)
        if task is not None:
            out.append(task)
    return out


def finish_task(backend, task, *, reason: str, exit_code: int | None, stop_code: str | None,
                container_reason: str | None = None) -> bool:
    """Stop a task once: free its container instance's resources as moto's StopTask does, then
    record how it ended. Returns False (and changes nothing) if it was already STOPPED."""
    if task.last_status == "STOPPED":
        return False
    _running.pop(task.task_arn, None)
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
    if task_str.startswith("arn:"):
        # P16: the common case, a full ARN, is a key of moto's table.
        for name, tasks in backend.tasks.items():
            if cluster_name and name != cluster_name:
                continue
            task = tasks.get(task_str)
            if task is not None:
                return task
    task_id = task_str.split("/")[-1]
    for name, tasks in backend.tasks.items():
        if cluster_name and name != cluster_name:
            continue
        for arn, task in tasks.items():
            if arn.split("/")[-1] == task_id:
                return task
    return None



def task_requirements(task_def, overrides: dict | None) -> dict:
    """The CPU units and MiB of memory ECS reserves on the container instance for a task: per
    container the override's value, else the definition's (memoryReservation before memory,
    since the soft limit is what gets reserved); a task-level cpu/memory (overrides first)
    replaces the sum when it is a plain number."""
    overrides = overrides or {}
    needs = ecs_models.EC2ContainerServiceBackend._calculate_task_resource_requirements(task_def)
    by_name = {o.get("name"): o for o in overrides.get("containerOverrides") or []}
    cpu = memory = 0
    for cdef in task_def.container_definitions:
        o = by_name.get(cdef.get("name")) or {}
        cpu += int(o.get("cpu") if o.get("cpu") is not None else cdef.get("cpu") or 0)
        for value in (o.get("memoryReservation"), cdef.get("memoryReservation"), o.get("memory"), cdef.get("memory")):
            if value:
                memory += int(value)
                break
    task_cpu = overrides.get("cpu") or getattr(task_def, "cpu", None)
    task_memory = overrides.get("memory") or getattr(task_def, "memory", None)
    if task_cpu is not None and str(task_cpu).isdigit():
        cpu = int(task_cpu)
    if task_memory is not None and str(task_memory).isdigit():
        memory = int(task_memory)
    needs["CPU"], needs["MEMORY"] = cpu, memory
    return needs


# Capacity rules for CreateFleet (P7), set through the control API: (instance type, lifecycle or
# "*") -> instances that may still launch. No rule: unlimited.
_capacity: dict[tuple[str, str], int] = {}
_capacity_lock = threading.Lock()
LIFECYCLES = ("spot", "on-demand", "*")


def set_capacity(spec: dict) -> dict:
    instance_type, lifecycle = spec.get("instanceType"), spec.get("lifecycle") or "*"
    available = spec.get("available")
    if not isinstance(instance_type, str) or not instance_type:
        raise ValueError("'instanceType' is required")
    if lifecycle not in LIFECYCLES:
        raise ValueError(f"'lifecycle' is one of {LIFECYCLES}")
    with _capacity_lock:
        if available is None:
            _capacity.pop((instance_type, lifecycle), None)
        elif isinstance(available, int) and not isinstance(available, bool) and available >= 0:
            _capacity[(instance_type, lifecycle)] = available
        else:
            raise ValueError("'available' is a non-negative integer, or null to remove the rule")
    return {"capacity": list_capacity()}


def list_capacity() -> list[dict]:
    with _capacity_lock:
        return [{"instanceType": t, "lifecycle": lc, "available": n} for (t, lc), n in sorted(_capacity.items())]


def clear_capacity() -> None:
    with _capacity_lock:
        _capacity.clear()


def _take_capacity(instance_type: str, lifecycle: str, want: int) -> int:
    with _capacity_lock:
        for key in ((instance_type, lifecycle), (instance_type, "*")):
            if key in _capacity:
                granted = min(want, _capacity[key])
                _capacity[key] -= granted
                return granted
    return want


def _capacity_error(ec2_backend, spec, lifecycle: str) -> dict:
    if lifecycle == "spot":
        message = "There is no Spot capacity available that matches your request."
    else:
        zone = "us-east-1a"
        try:
            if spec.subnet_id:
                zone = ec2_backend.get_subnet(spec.subnet_id).availability_zone
        except Exception:
            pass
        message = (f"We currently do not have sufficient {spec.instance_type} capacity in the "
                   f"Availability Zone you requested ({zone}). Our system will be working on "
                   "provisioning additional capacity.")
    error = {"Lifecycle": lifecycle, "ErrorCode": "InsufficientInstanceCapacity", "ErrorMessage": message}
    if spec.launch_template_spec:
        error["LaunchTemplateAndOverrides"] = {"LaunchTemplateSpecification": spec.launch_template_spec}
        if spec.overrides:
            error["LaunchTemplateAndOverrides"]["Overrides"] = spec.overrides
    return error


class IdempotentParameterMismatch(EC2ClientError):
    def __init__(self) -> None:
        super().__init__("IdempotentParameterMismatch",
                         "Arguments on this idempotent request are inconsistent with arguments "
                         "used in previous request(s).")


def _container_instance(backend, cluster_name: str, ci_str: str):
    return backend.container_instances.get(cluster_name, {}).get(ci_str.split("/")[-1])


def _container_instance_arn(backend, cluster_name: str, ci_str: str) -> str:
    """The ARN a failure names: the one asked for, or the long ARN of a bare id."""
    if ci_str.startswith("arn:"):
        return ci_str
    return (f"arn:aws:ecs:{backend.region_name}:{backend.account_id}:container-instance/"
            f"{cluster_name}/{ci_str}")


def _flag(v) -> bool:
    return v is True or str(v).lower() == "true"


def _template_block_devices(backend, fleet) -> None:
    """P15: the fleet's instances get their launch template's EBS block devices."""
    specs = [s for s in fleet.launch_specs if s.launch_template_spec]
    if not specs:
        return
    ref = specs[0].launch_template_spec
    template = backend.get_launch_template(ref["LaunchTemplateId"])
    data = template.get_version(ref.get("Version", template.default_version_number)).data
    mappings = [m for m in data.get("BlockDeviceMappings") or [] if m.get("Ebs")]
    if not mappings:
        return
    instances = [r["instance"] for r in fleet.on_demand_instances]
    instances += [r.instance for r in fleet.spot_requests if getattr(r, "instance", None)]
    for instance in instances:
        if getattr(instance, "_flotilla_block_devices", False):
            continue
        instance._flotilla_block_devices = True
        for m in mappings:
            device, ebs = m["DeviceName"], m["Ebs"]
            old = instance.block_device_mapping.get(device)
            if old is not None:
                backend.detach_volume(old.volume_id, instance.id, device)
                backend.delete_volume(old.volume_id)
            instance.add_block_device(
                int(ebs.get("VolumeSize") or 8), device, ebs.get("SnapshotId"),
                _flag(ebs.get("Encrypted")), _flag(ebs.get("DeleteOnTermination", True)),
                ebs.get("KmsKeyId"), ebs.get("VolumeType"))


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
        gpus = instance_gpus(instance)
        if gpus:
            ids = [f"GPU-{ec2_instance_id}-{i}" for i in range(gpus)]
            for resources in (ci.registered_resources, ci.remaining_resources):
                resources.append({"name": "GPU", "type": "STRINGSET", "doubleValue": 0.0,
                                  "integerValue": 0, "longValue": 0, "stringSetValue": list(ids)})
        return ci

    Backend.register_container_instance = register_container_instance

    # P2: a started task is RUNNING with RUNNING containers and timestamps.
    orig_task_init = ecs_models.Task.__init__

    def task_init(self, *args, **kwargs):
        orig_task_init(self, *args, **kwargs)
        now = utcnow()
        self.created_at = self.pull_started_at = self.pull_stopped_at = self.started_at = now
        self.stop_code = None
        self.stopped_reason = None  # P14: ECS sends none until the task stops
        if not self.launch_type and self.container_instance_arn:
            self.launch_type = "EC2"  # P14: StartTask's tasks run on EC2
        for container in self.containers:
            container.last_status = "RUNNING"
            container.exitCode = None  # P14: no exit code while it runs
            # P14: the container's task is the task, not its definition.
            container.task_arn = self.task_arn
            container.container_arn = (self.task_arn.replace(":task/", ":container/", 1) + "/"
                                       + container.container_arn.rsplit("/", 1)[-1])

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

    # P4: StartTask reserves what ECS would and refuses what does not fit, with ECS's failure
    # reasons.
    def start_task_response(self):
        cluster_str = self._get_param("cluster", "default")
        backend = self.ecs_backend
        cluster = backend._get_cluster(cluster_str)
        task_def = backend.describe_task_definition(self._get_param("taskDefinition"))
        overrides = self._get_param("overrides") or {}
        needs = task_requirements(task_def, overrides)
        ci_strs = self._get_param("containerInstances") or []
        if not ci_strs:
            raise EcsClientException("Container Instances cannot be empty.")
        group = self._get_param("group") or f"family:{task_def.family}"
        tasks, failures = [], []
        for ci_str in ci_strs:
            ci = _container_instance(backend, cluster.name, ci_str)
            reason = None
            if ci is None or ci.status == "INACTIVE":
                reason = "MISSING"
            else:
                remaining = {r["name"]: r.get("integerValue", 0) for r in ci.remaining_resources}
                if needs["CPU"] > remaining.get("CPU", 0):
                    reason = "RESOURCE:CPU"
                elif needs["MEMORY"] > remaining.get("MEMORY", 0):
                    reason = "RESOURCE:MEMORY"
            if reason:
                failures.append({"arn": ci.container_instance_arn if ci else
                                 _container_instance_arn(backend, cluster.name, ci_str), "reason": reason})
                continue
            task = ecs_models.Task(cluster, task_def, ci.container_instance_arn, copy.deepcopy(needs),
                                   backend=backend, group=group, launch_type="EC2", overrides=overrides,
                                   started_by=self._get_param("startedBy") or "",
                                   tags=self._get_param("tags"))
            backend.update_container_instance_resources(ci, task.resource_requirements)
            backend.update_cluster_resources(cluster, 1)  # finish_task takes it off again
            backend.tasks.setdefault(cluster.name, {})[task.task_arn] = task
            _running[task.task_arn] = task
            if _workload:
                heapq.heappush(_due, (time.monotonic() + _workload["taskSeconds"], task.task_arn))
            tasks.append(task)
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

    # P6 + P7: CreateFleet is idempotent on ClientToken and answers Errors for short pools.
    orig_create_fleet = Fleets.create_fleet

    def create_fleet(self):
        token = self._get_param("ClientToken")
        params = sorted((k, repr(v)) for k, v in self.querystring.items()
                        if k not in ("Action", "Version", "ClientToken"))
        tokens = self.ec2_backend.__dict__.setdefault("_flotilla_fleet_tokens", {})
        if token and token in tokens:
            first_params, first_result = tokens[token]
            if first_params != params:
                raise IdempotentParameterMismatch()
            return ActionResult(copy.deepcopy(first_result))
        response = orig_create_fleet(self)
        result = response.result
        fleet = self.ec2_backend.get_fleet(result["FleetId"])
        _template_block_devices(self.ec2_backend, fleet)
        errors = getattr(fleet, "_flotilla_errors", None)
        if errors and fleet.fleet_type == "instant":
            result["Errors"] = errors
        if token:
            tokens[token] = (params, copy.deepcopy(result))
        return ActionResult(result)

    Fleets.create_fleet = create_fleet

    def _launch(fleet, orig, lifecycle: str, weight_to_add: float):
        specs = fleet.launch_specs
        if (not specs or (fleet.spot_options or {}).get("AllocationStrategy") == "diversified"
                or any(float(s.weighted_capacity or 1) != 1 for s in specs)):
            return orig(fleet, weight_to_add)  # moto's own allocation
        errors = fleet.__dict__.setdefault("_flotilla_errors", [])
        remaining = int(weight_to_add)
        # moto's order: cheapest SpotPrice first, else as listed.
        for spec in sorted(specs, key=lambda s: float(s.spot_price or "+inf")):
            if remaining <= 0:
                break
            granted = _take_capacity(spec.instance_type, lifecycle, remaining)
            if granted:
                fleet.get_launch_spec_counts = lambda _w, spec=spec, n=granted: ({spec: n}, float(n))
                try:
                    orig(fleet, granted)
                finally:
                    del fleet.get_launch_spec_counts
            if granted < remaining:
                errors.append(_capacity_error(fleet.ec2_backend, spec, lifecycle))
            remaining -= granted
        return fleet.spot_requests if lifecycle == "spot" else None

    orig_spot_requests, orig_on_demand = Fleet.create_spot_requests, Fleet.create_on_demand_requests
    Fleet.create_spot_requests = lambda self, w: _launch(self, orig_spot_requests, "spot", w)
    Fleet.create_on_demand_requests = lambda self, w: _launch(self, orig_on_demand, "on-demand", w)

    # P8: terminating a terminated instance changes nothing.
    orig_instance_terminate = Instance.terminate

    def instance_terminate(self):
        if self._state.name == "terminated":
            return copy.copy(self._state)
        return orig_instance_terminate(self)

    Instance.terminate = instance_terminate
    orig_terminate_response = InstanceResponse.terminate_instances

    def terminate_instances_response(self):
        response = orig_terminate_response(self)
        for item in response.result["TerminatingInstances"]:
            if getattr(item["PreviousState"], "name", None) == "terminated":
                item["CurrentState"] = {"Code": 48, "Name": "terminated"}
        return response

    InstanceResponse.terminate_instances = terminate_instances_response

    # P9: deleting an unknown launch template is NotFound.
    orig_delete_lt = LaunchTemplateBackend.delete_launch_template

    def delete_launch_template(self, name, tid):
        if name and name not in self.launch_template_name_to_ids:
            raise InvalidLaunchTemplateNameNotFoundWithNameError(name)
        return orig_delete_lt(self, name, tid)

    LaunchTemplateBackend.delete_launch_template = delete_launch_template

    # P10: a cluster with container instances is not deleted; creating an existing cluster
    # returns it.
    orig_delete_cluster = Backend.delete_cluster

    def delete_cluster(self, cluster_str):
        cluster = self._get_cluster(cluster_str)
        if any(ci.status in ("ACTIVE", "DRAINING") for ci in self.container_instances.get(cluster.name, {}).values()):
            raise ECSException("ClusterContainsContainerInstancesException",
                               "The Cluster cannot be deleted while Container Instances are active or draining.")
        return orig_delete_cluster(self, cluster_str)

    Backend.delete_cluster = delete_cluster
    orig_create_cluster = Backend.create_cluster

    def create_cluster(self, cluster_name, *args, **kwargs):
        existing = self.clusters.get(cluster_name)
        if existing is not None and existing.status == "ACTIVE":
            return existing
        return orig_create_cluster(self, cluster_name, *args, **kwargs)

    Backend.create_cluster = create_cluster

    # P11: a deregistered container instance stays, INACTIVE.
    def deregister_container_instance(self, cluster_str, container_instance_str, force):
        cluster = self._get_cluster(cluster_str)
        ci = _container_instance(self, cluster.name, container_instance_str)
        if ci is None:
            raise InvalidParameterException("The referenced container instance was not found.")
        if ci.status == "INACTIVE":
            return ci
        running = [t for t in self.tasks.get(cluster.name, {}).values()
                   if t.container_instance_arn == ci.container_instance_arn and t.last_status != "STOPPED"]
        if running and not force:
            raise InvalidParameterException("Found running tasks on the instance.")
        ci.status = "INACTIVE"
        ci.agent_connected = False
        cluster.registered_container_instances_count -= 1
        return ci

    Backend.deregister_container_instance = deregister_container_instance

    # P12: DescribeTasks matches exactly and reports what it did not find.
    def describe_tasks_response(self):
        backend = self.ecs_backend
        cluster = backend._get_cluster(self._get_param("cluster", "default"))
        wanted = self._get_param("tasks", [])
        if not wanted:
            raise InvalidParameterException("Tasks cannot be empty.")
        tasks, failures = [], []
        for task_str in wanted:
            task = find_task(backend, task_str, cluster.name)
            if task is None:
                arn = task_str if task_str.startswith("arn:") else (
                    f"arn:aws:ecs:{backend.region_name}:{backend.account_id}:task/{cluster.name}/{task_str}")
                failures.append({"arn": arn, "reason": "MISSING"})
            elif task not in tasks:
                task.advance()
                tasks.append(task)
        if "TAGS" in (self._get_param("include") or []):
            self._include_in_response(ecs_responses.DESCRIBE_TASKS_TAGS)
        else:
            self._exclude_from_response(ecs_responses.DESCRIBE_TASKS_TAGS)
        return ActionResult({"tasks": tasks, "failures": failures})

    ecs_responses.EC2ContainerServiceResponse.describe_tasks = describe_tasks_response

    def _fix_failures(method):
        orig = getattr(Backend, method)

        def wrapper(self, cluster_str, ci_strs, *args):
            found, failures = orig(self, cluster_str, ci_strs, *args)
            name = cluster_str.split("/")[-1]
            by_id = {s.split("/")[-1]: s for s in ci_strs or []}
            for failure in failures:
                asked = by_id.get(failure.arn.split("/")[-1])
                if asked is not None:
                    failure.arn = _container_instance_arn(self, name, asked)
            return found, failures

        setattr(Backend, method, wrapper)

    _fix_failures("describe_container_instances")
    _fix_failures("update_container_instances_state")

    # P13: ListTasks as ECS filters.
    def list_tasks(self, cluster_str=None, container_instance=None, family=None, started_by=None,
                   service_name=None, desiredStatus=None):
        if started_by and (family or service_name):
            raise InvalidParameterException("cannot specify startedBy with other arguments")
        cluster = self._get_cluster(cluster_str or "default")
        desired = desiredStatus or "RUNNING"
        tasks = [t for t in self.tasks.get(cluster.name, {}).values() if t.desired_status == desired]
        if container_instance:
            ci_id = container_instance.split("/")[-1]
            tasks = [t for t in tasks if (t.container_instance_arn or "").split("/")[-1] == ci_id]
        if family:
            arns = set(self.list_task_definitions(family))
            tasks = [t for t in tasks if t.task_definition_arn in arns]
        if started_by:
            tasks = [t for t in tasks if t.started_by == started_by]
        return tasks

    Backend.list_tasks = list_tasks
    orig_list_tasks_response = ecs_responses.EC2ContainerServiceResponse.list_tasks

    def list_tasks_response(self):
        if self._get_param("startedBy") and self._get_param("launchType"):
            raise InvalidParameterException("cannot specify startedBy with other arguments")
        return orig_list_tasks_response(self)

    ecs_responses.EC2ContainerServiceResponse.list_tasks = list_tasks_response

    # P14: container instance attributes in every response that carries them.
    transformers = ecs_responses.EC2ContainerServiceResponse.RESPONSE_KEY_PATH_TO_TRANSFORMER
    transformers["UpdateContainerInstancesStateResponse.containerInstances.ContainerInstance.attributes"] = \
        ecs_responses.format_attributes
    transformers["DeregisterContainerInstanceResponse.containerInstance.attributes"] = \
        ecs_responses.format_attributes
