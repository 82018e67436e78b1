"""Fault injection: which AWS operation a request is, and the error AWS would answer.

Errors are shaped per wire protocol, so that SDKs (botocore, the AWS SDK for Rust) parse
the code and classify the error exactly as they would a real one:
  ec2 query   XML <Response><Errors><Error><Code>..   (EC2)
  awsJson     {"__type": code, "message": ..}          (ECS, CloudWatch Logs)
  query       XML <ErrorResponse><Error><Type>..       (IAM, STS)
"""

from __future__ import annotations

import json
import random
import re
import threading
import uuid
from urllib.parse import parse_qs
from xml.sax.saxutils import escape

# Throttling as each service really answers it. EC2 sends RequestLimitExceeded with HTTP 503;
# the SDKs classify throttling by code, not status.
THROTTLE = {
    "ec2": (503, "RequestLimitExceeded", "Request limit exceeded."),
    "json": (400, "ThrottlingException", "Rate exceeded"),
    "query": (400, "Throttling", "Rate exceeded"),
}
# Server errors: the service's own modelled 500 where it has one (ECS ServerException,
# Logs ServiceUnavailableException), else the generic one of the protocol.
ERROR_500 = {
    "ec2": ("InternalError", "An internal error has occurred."),
    "ecs": ("ServerException", "Server error (injected)."),
    "logs": ("ServiceUnavailableException", "The service cannot complete the request (injected)."),
    "json": ("InternalFailure", "Internal failure (injected)."),
    "query": ("InternalFailure", "Internal failure (injected)."),
}
ERROR_503 = {"ec2": "Unavailable", "json": "ServiceUnavailable", "query": "ServiceUnavailable"}


def classify(headers, path: str, query: str, body: bytes) -> tuple[str, str, str]:
    """(service, operation, protocol) of an AWS request; '' where unknown."""
    service = ""
    m = re.search(r"Credential=[^/]+/[^/]+/[^/]+/([^/]+)/aws4_request", headers.get("Authorization", ""))
    if m:
        service = m.group(1)
    target = headers.get("X-Amz-Target", "")
    if target:
        return service, target.rsplit(".", 1)[-1], "json"
    params = parse_qs(query)
    if "form-urlencoded" in headers.get("Content-Type", ""):
        params.update(parse_qs(body.decode("utf-8", "replace")))
    operation = (params.get("Action") or [""])[0]
    if service == "ec2":
        return service, operation, "ec2"
    if operation:
        return service, operation, "query"
    return service, "", "json"  # rest-json services: best effort


def error_response(service: str, protocol: str, kind: str, status: int | None = None,
                   content_type: str = "") -> tuple[int, dict[str, str], bytes]:
    """(status, headers, body) of an injected `throttle` or `error`."""
    request_id = str(uuid.uuid4())
    if kind == "throttle":
        status, code, message = THROTTLE[protocol]
    elif status == 503:
        code, message = ERROR_503[protocol], "Service unavailable (injected)."
    else:
        status = 500
        code, message = ERROR_500.get(service) or ERROR_500[protocol]
    if protocol == "ec2":
        body = (f'<?xml version="1.0" encoding="UTF-8"?>\n<Response><Errors><Error><Code>{code}</Code>'
                f"<Message>{escape(message)}</Message></Error></Errors>"
                f"<RequestID>{request_id}</RequestID></Response>")
        return status, {"Content-Type": "text/xml;charset=UTF-8"}, body.encode()
    if protocol == "query":
        fault = "Sender" if status < 500 else "Receiver"
        body = (f"<ErrorResponse><Error><Type>{fault}</Type><Code>{code}</Code>"
                f"<Message>{escape(message)}</Message></Error>"
                f"<RequestId>{request_id}</RequestId></ErrorResponse>")
        return status, {"Content-Type": "text/xml", "x-amzn-RequestId": request_id}, body.encode()
    if not content_type.startswith("application/x-amz-json"):
        content_type = "application/x-amz-json-1.1"
    body = json.dumps({"__type": code, "message": message}).encode()
    return status, {"Content-Type": content_type, "x-amzn-RequestId": request_id,
                    "x-amzn-ErrorType": code}, body


class Faults:
    """Fault rules keyed by (service, operation); operation '*' covers the whole service."""

    def __init__(self):
        self._lock = threading.Lock()
        self._rules: dict[tuple[str, str], dict] = {}

    def set(self, spec: dict) -> dict:
        service = str(spec.get("service", "")).lower()
        operation = str(spec.get("operation") or "*")
        if not service:
            raise ValueError("'service' is required (the SigV4 signing name: ec2, ecs, logs, ...)")
        throttle, error = float(spec.get("throttle", 0)), float(spec.get("error", 0))
        if not (0 <= throttle <= 1 and 0 <= error <= 1 and throttle + error <= 1):
            raise ValueError("'throttle' and 'error' are fractions in [0, 1] adding up to at most 1")
        status = int(spec.get("errorStatus", 500))
        if status not in (500, 503):
            raise ValueError("'errorStatus' is 500 or 503")
        limit = spec.get("limit")
        rule = {"service": service, "operation": operation, "throttle": throttle, "error": error,
                "errorStatus": status, "seed": spec.get("seed"),
                "limit": None if limit is None else int(limit),
                "calls": 0, "throttled": 0, "errored": 0}
        rule["_rng"] = random.Random(rule["seed"])
        with self._lock:
            if throttle == 0 and error == 0:
                self._rules.pop((service, operation), None)
            else:
                self._rules[(service, operation)] = rule
        return self._public(rule)

    def clear(self) -> None:
        with self._lock:
            self._rules.clear()

    def list(self) -> list[dict]:
        with self._lock:
            return [self._public(r) for r in self._rules.values()]

    def decide(self, service: str, operation: str) -> tuple[str, int] | None:
        """('throttle'|'error', status) to inject for this call, or None to pass it on."""
        with self._lock:
            rule = self._rules.get((service, operation)) or self._rules.get((service, "*"))
            if rule is None:
                return None
            rule["calls"] += 1
            if rule["limit"] is not None and rule["throttled"] + rule["errored"] >= rule["limit"]:
                return None
            draw = rule["_rng"].random()
            if draw < rule["throttle"]:
                rule["throttled"] += 1
                return "throttle", 0
            if draw < rule["throttle"] + rule["error"]:
                rule["errored"] += 1
                return "error", rule["errorStatus"]
            return None

    @staticmethod
    def _public(rule: dict) -> dict:
        return {k: v for k, v in rule.items() if not k.startswith("_")}
