"""Each test run starts its own emulator (`python3 -m flotilla_emulator --port 0`) on free
127.0.0.1 ports and stops it at the end; no test depends on one already running."""

import json
import os
import select
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

import boto3
import pytest
from botocore.config import Config

HARNESS = Path(__file__).resolve().parents[1] / "harness"

# Dummy credentials, no shared config, no instance metadata: nothing here may reach AWS.
os.environ.update(AWS_ACCESS_KEY_ID="testing", AWS_SECRET_ACCESS_KEY="testing",
                  AWS_DEFAULT_REGION="us-east-1", AWS_EC2_METADATA_DISABLED="true",
                  AWS_CONFIG_FILE=os.devnull, AWS_SHARED_CREDENTIALS_FILE=os.devnull)
for var in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_ENDPOINT_URL"):
    os.environ.pop(var, None)

# One attempt per call, so that an injected error reaches the test instead of a retry.
NO_RETRY = Config(retries={"total_max_attempts": 1, "mode": "standard"})


class Harness:
    def __init__(self, endpoint: str):
        self.endpoint = endpoint
        assert endpoint.startswith("http://127.0.0.1:"), endpoint

    def client(self, service: str, config: Config = NO_RETRY):
        return boto3.client(service, endpoint_url=self.endpoint, region_name="us-east-1", config=config)

    def control(self, method: str, path: str, body=None) -> tuple[int, dict]:
        data = json.dumps(body).encode() if body is not None else None
        req = urllib.request.Request(self.endpoint + "/_flotilla/" + path, data=data, method=method,
                                     headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(req, timeout=30) as resp:
                return resp.status, json.load(resp)
        except urllib.error.HTTPError as err:
            return err.code, json.load(err)

    def ok(self, method: str, path: str, body=None) -> dict:
        status, payload = self.control(method, path, body)
        assert status == 200, (status, payload)
        return payload


@pytest.fixture(scope="session")
def harness():
    log = tempfile.NamedTemporaryFile(prefix="flotilla-emulator-", suffix=".log", delete=False)
    env = dict(os.environ, PYTHONPATH=str(HARNESS))
    proc = subprocess.Popen([sys.executable, "-m", "flotilla_emulator", "--port", "0", "--moto-port", "0"],
                            stdout=subprocess.PIPE, stderr=log, env=env, text=True)
    try:
        ready, _, _ = select.select([proc.stdout], [], [], 120)
        line = proc.stdout.readline() if ready else ""
        if not line:
            raise RuntimeError(f"emulator did not start; log: {Path(log.name).read_text()[-3000:]}")
        info = json.loads(line)
        yield Harness(info["endpoint"])
    finally:
        proc.terminate()  # this one process only
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        print(f"\nemulator log: {log.name}")


@pytest.fixture(autouse=True)
def fresh(harness):
    """Every test starts from an empty AWS, with no fault rules."""
    harness.ok("POST", "reset")
    yield


def wait_for(predicate, timeout=10.0, interval=0.05):
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError("timed out waiting")
        time.sleep(interval)
