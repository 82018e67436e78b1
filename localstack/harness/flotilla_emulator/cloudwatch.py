"""CloudWatch's PutMetricData in Smithy RPC v2 CBOR, the protocol moto does not speak.

The AWS SDKs (Rust's since aws-sdk-cloudwatch 1.9x) send CloudWatch requests as
`POST /service/GraniteServiceVersion20100801/operation/<Operation>` with a CBOR body and the
header `smithy-protocol: rpc-v2-cbor`; moto answers only the query protocol. PutMetricData is
decoded here and handed to moto's CloudWatch backend, so what Flotilla publishes is stored where
moto keeps metrics; `metrics()` lists it for the control API (`GET /_flotilla/cloudwatch`).
Other operations in CBOR are answered with an error naming them, never passed on half-understood.
"""
from __future__ import annotations

import re
from datetime import datetime, timezone
from typing import Any

import cbor2
from moto.cloudwatch.models import cloudwatch_backends

PREFIX = "/service/GraniteServiceVersion20100801/operation/"
DEFAULT_ACCOUNT = "123456789012"


def handles(headers, path: str) -> bool:
    return headers.get("smithy-protocol", "").lower() == "rpc-v2-cbor" and path.startswith(PREFIX)


def _region(headers) -> str:
    m = re.search(r"Credential=[^/]+/\d{8}/([^/]+)/", headers.get("Authorization", ""))
    return m.group(1) if m else "us-east-1"


def _reply(status: int, payload: dict) -> tuple[int, list, bytes]:
    headers = [("Content-Type", "application/cbor"), ("smithy-protocol", "rpc-v2-cbor")]
    return status, headers, cbor2.dumps(payload)


def _error(status: int, code: str, message: str) -> tuple[int, list, bytes]:
    return _reply(status, {"__type": f"com.amazonaws.cloudwatch#{code}", "message": message})


def _datum(d: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {"MetricName": d["MetricName"]}
    if "Dimensions" in d:
        out["Dimensions"] = [{"Name": x["Name"], "Value": x["Value"]} for x in d["Dimensions"]]
    ts = d.get("Timestamp")
    if isinstance(ts, (int, float)):
        ts = datetime.fromtimestamp(ts, tz=timezone.utc)
    if ts is not None:
        out["Timestamp"] = ts
    for key in ("Value", "Values", "Counts", "StatisticValues", "Unit", "StorageResolution"):
        if key in d:
            out[key] = d[key]
    return out


def answer(headers, path: str, body: bytes) -> tuple[int, list, bytes]:
    operation = path[len(PREFIX):].strip("/")
    if operation != "PutMetricData":
        return _error(400, "UnsupportedOperation",
                      f"the emulator speaks CloudWatch's CBOR protocol for PutMetricData only, not {operation}")
    try:
        request = cbor2.loads(body) if body else {}
        namespace = request["Namespace"]
        data = [_datum(d) for d in request.get("MetricData", [])]
    except (KeyError, TypeError, ValueError, cbor2.CBORDecodeError) as exc:
        return _error(400, "InvalidParameterValue", f"malformed PutMetricData: {exc!r}")
    if not 1 <= len(data) <= 1000:
        return _error(400, "InvalidParameterValue",
                      f"MetricData: between 1 and 1000 items, got {len(data)}")
    backend = cloudwatch_backends[DEFAULT_ACCOUNT][_region(headers)]
    try:
        backend.put_metric_data(namespace, data)
    except Exception as exc:  # moto's validation errors: the caller's mistake
        return _error(400, "InvalidParameterValue", str(exc))
    return _reply(200, {})


def metrics() -> list[dict[str, Any]]:
    """Every datum put, in the order it arrived."""
    out = []
    for region, backend in cloudwatch_backends[DEFAULT_ACCOUNT].items():
        for m in backend.metric_data:
            out.append({
                "region": region,
                "namespace": m.namespace,
                "name": m.name,
                "value": getattr(m, "value", None),
                "unit": m.unit,
                "dimensions": {d.name: d.value for d in m.dimensions},
                "timestamp": m.timestamp.isoformat() if m.timestamp else None,
            })
    return out
