"""The emulator: moto's server in this process, fronted by a thin proxy that injects faults,
serves the control API under /_flotilla/, and runs the ECS agent loop.

Clients talk to the proxy only. Every request forwarded to moto, every agent pass and every
control call holds one lock, so moto (which is not thread-safe) never sees two at once.
"""

from __future__ import annotations

import http.client
import json
import logging
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import unquote

import moto

from . import agent, cloudwatch, patches
from .faults import Faults, classify, error_response

HOST = "127.0.0.1"  # never anything else: the emulator is for this machine only
# Pin ecs::task so DescribeTasks never advances a task; tasks end through the control API or
# StopTask. ("times": -1 would not pin: moto advances once its tick count >= times.)
PIN_ECS_TASK = {"model_name": "ecs::task", "transition": {"progression": "manual", "times": 2**62}}
HOP_BY_HOP = {"connection", "keep-alive", "proxy-authenticate", "proxy-authorization", "te",
              "trailer", "trailers", "transfer-encoding", "upgrade", "content-length",
              "expect"}  # answered by this proxy; moto gets the whole body at once


def log(msg: str) -> None:
    print(f"flotilla_emulator: {msg}", file=sys.stderr, flush=True)


class Emulator:
    def __init__(self, port: int = 4566, moto_port: int = 0, agent_interval: float = 0.2,
                 verbose: bool = False):
        self.port, self.moto_port = port, moto_port
        self.agent_interval, self.verbose = agent_interval, verbose
        self.lock = threading.RLock()
        self.faults = Faults()
        self._stop = threading.Event()
        self._moto = self._proxy = self._agent = None

    @property
    def endpoint(self) -> str:
        return f"http://{HOST}:{self.port}"

    def start(self) -> "Emulator":
        patches.apply()
        if not self.verbose:  # moto's werkzeug server logs every request otherwise
            logging.getLogger("werkzeug").setLevel(logging.ERROR)
        from moto.server import ThreadedMotoServer  # after the patches, before any request

        self._moto = ThreadedMotoServer(ip_address=HOST, port=self.moto_port, verbose=False)
        self._moto.start()
        self.moto_port = self._moto.get_host_and_port()[1]
        self._pin_tasks()
        self._proxy = ThreadingHTTPServer((HOST, self.port), _Handler)
        self._proxy.daemon_threads = True
        self._proxy.emulator = self
        self.port = self._proxy.server_address[1]
        threading.Thread(target=self._proxy.serve_forever, name="proxy", daemon=True).start()
        self._agent = threading.Thread(target=self._agent_loop, name="ecs-agent", daemon=True)
        self._agent.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._proxy:
            self._proxy.shutdown()
            self._proxy.server_close()
        if self._agent:
            self._agent.join(5)
        if self._moto:
            self._moto.stop()

    def _pin_tasks(self) -> None:
        # Through moto's own state-manager API, the same call a user would make.
        status, _, body = self._moto_request("POST", "/moto-api/state-manager/set-transition",
                                             {"Content-Type": "application/json"},
                                             json.dumps(PIN_ECS_TASK).encode())
        if status >= 300:
            raise RuntimeError(f"moto refused the ecs::task transition: {status} {body[:200]!r}")

    def reset(self) -> None:
        """Forget everything: moto's state, fault rules, capacity rules, the agent's memory."""
        with self.lock:
            self._moto_request("POST", "/moto-api/reset", {}, b"")
            self._pin_tasks()
            self.faults.clear()
            patches.clear_capacity()
            agent.reset()

    def _moto_request(self, method, path, headers, body):
        conn = http.client.HTTPConnection(HOST, self.moto_port, timeout=60)
        try:
            conn.request(method, path, body=body, headers=headers)
            resp = conn.getresponse()
            return resp.status, resp.getheaders(), resp.read()
        finally:
            conn.close()

    def _agent_loop(self) -> None:
        while not self._stop.wait(self.agent_interval):
            try:
                with self.lock:
                    done = agent.sync()
                for item in done["registered"]:
                    log(f"agent: registered {item['instanceId']} as {item['containerInstanceArn']}")
                for arn in done["deregistered"]:
                    log(f"agent: host gone, {arn} INACTIVE")
            except Exception as exc:  # keep the agent alive; moto state may be mid-reset
                log(f"agent: pass failed: {exc!r}")


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, as the SDKs expect
    disable_nagle_algorithm = True  # headers and body go out in two writes: no 40 ms stalls
    server_version = "flotilla-emulator"

    def log_message(self, fmt, *args):
        if self.server.emulator.verbose:
            log(fmt % args)

    def do_GET(self):
        self._handle()

    do_POST = do_PUT = do_DELETE = do_HEAD = do_PATCH = do_GET

    def _read_body(self) -> bytes:
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            chunks = []
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass  # trailers
                    return b"".join(chunks)
                chunks.append(self.rfile.read(size))
                self.rfile.readline()
        return self.rfile.read(int(self.headers.get("Content-Length") or 0))

    def _send(self, status: int, headers, body: bytes) -> None:
        self.send_response(status)
        for name, value in headers:
            if name.lower() not in HOP_BY_HOP:
                self.send_header(name, value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _handle(self) -> None:
        emu = self.server.emulator
        body = self._read_body()
        path, _, query = self.path.partition("?")
        if path.startswith("/_flotilla/"):
            status, payload = self._control(emu, path, body)
            self._send(status, [("Content-Type", "application/json")], json.dumps(payload).encode())
            return
        if cloudwatch.handles(self.headers, path):
            with emu.lock:
                status, headers, out = cloudwatch.answer(self.headers, path, body)
            self._send(status, headers, out)
            return
        service, operation, protocol = classify(self.headers, path, query, body)
        fault = emu.faults.decide(service, operation) if service and operation else None
        if fault:
            kind, status = fault
            status, headers, out = error_response(service, protocol, kind, status,
                                                  self.headers.get("Content-Type", ""))
            log(f"fault: {service}:{operation} -> {status} {kind}")
            self._send(status, list(headers.items()), out)
            return
        headers = {k: v for k, v in self.headers.items() if k.lower() not in HOP_BY_HOP}
        try:
            with emu.lock:
                status, resp_headers, out = emu._moto_request(self.command, self.path, headers, body)
        except OSError as exc:  # moto gone or stuck: say so rather than drop the connection
            log(f"proxy: moto did not answer {service}:{operation}: {exc!r}")
            status, resp_headers, out = 502, [("Content-Type", "text/plain")], f"moto: {exc}".encode()
        self._send(status, resp_headers, out)

    def _control(self, emu: Emulator, path: str, body: bytes):
        method, parts = self.command, path[len("/_flotilla/"):].strip("/")
        try:
            args = json.loads(body) if body.strip() else {}
            if not isinstance(args, dict):
                raise ValueError("the body must be a JSON object")
            if parts == "health":
                return 200, {"ok": True, "moto": moto.__version__, "motoTested": patches.MOTO_TESTED,
                             "endpoint": emu.endpoint}
            if parts == "state" and method == "GET":
                with emu.lock:
                    return 200, {**agent.state(), "faults": emu.faults.list(),
                                 "capacity": patches.list_capacity()}
            if parts == "faults":
                if method == "GET":
                    return 200, {"faults": emu.faults.list()}
                if method == "DELETE":
                    emu.faults.clear()
                    return 200, {"faults": []}
                if method == "POST":
                    return 200, emu.faults.set(args)
            if parts == "capacity":
                if method == "GET":
                    return 200, {"capacity": patches.list_capacity()}
                if method == "DELETE":
                    patches.clear_capacity()
                    return 200, {"capacity": []}
                if method == "POST":
                    return 200, patches.set_capacity(args)
            if parts == "workload":
                with emu.lock:
                    if method == "GET":
                        return 200, {"workload": patches.workload()}
                    if method == "DELETE":
                        patches.clear_workload()
                        return 200, {"workload": {}}
                    if method == "POST":
                        return 200, patches.set_workload(args)
            if parts == "cloudwatch" and method == "GET":
                with emu.lock:
                    return 200, {"metrics": cloudwatch.metrics()}
            if parts == "agent/sync" and method == "POST":
                with emu.lock:
                    return 200, agent.sync()
            if parts == "reset" and method == "POST":
                emu.reset()
                return 200, {"reset": True}
            if parts.startswith("tasks/") and parts.endswith("/complete") and method == "POST":
                task = unquote(parts[len("tasks/"):-len("/complete")])
                exit_code = args.get("exitCode", 0)
                if exit_code is not None and not isinstance(exit_code, int):
                    raise ValueError("'exitCode' is an integer or null")
                default_reason = "Essential container in task exited"
                with emu.lock:
                    return 200, agent.complete_task(
                        task, exit_code, args.get("reason") or default_reason,
                        args.get("stopCode") or "EssentialContainerExited", args.get("containerReason"))
            if parts.startswith("instances/") and parts.endswith("/interrupt") and method == "POST":
                instance_id = unquote(parts[len("instances/"):-len("/interrupt")])
                with emu.lock:
                    return 200, agent.interrupt_instance(instance_id)
            return 404, {"error": f"no control endpoint {method} {path}"}
        except agent.NotFound as exc:
            return 404, {"error": str(exc)}
        except agent.Conflict as exc:
            return 409, {"error": str(exc)}
        except (ValueError, TypeError) as exc:
            return 400, {"error": str(exc)}
        except Exception as exc:  # a harness bug: report it to the caller, keep serving
            log(f"control: {method} {path} failed: {exc!r}")
            return 500, {"error": repr(exc)}


def main(argv=None) -> None:
    import argparse
    import os
    import signal

    p = argparse.ArgumentParser(prog="python3 -m flotilla_emulator",
                                description="AWS emulator for Flotilla: moto + ECS agent + faults, on 127.0.0.1")
    p.add_argument("--port", type=int, default=int(os.environ.get("FLOTILLA_EMULATOR_PORT", 4566)),
                   help="proxy port, the endpoint clients use (default 4566; 0 = any free)")
    p.add_argument("--moto-port", type=int, default=int(os.environ.get("FLOTILLA_EMULATOR_MOTO_PORT", 0)),
                   help="moto's own port (default 0 = any free)")
    p.add_argument("--agent-interval", type=float, default=0.2, help="seconds between ECS agent passes")
    p.add_argument("--verbose", action="store_true", help="log every request")
    a = p.parse_args(argv)
    emu = Emulator(a.port, a.moto_port, a.agent_interval, a.verbose).start()
    done = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: done.set())
    signal.signal(signal.SIGINT, lambda *_: done.set())
    # One line on stdout that a launcher can wait for and parse.
    print(json.dumps({"ready": True, "endpoint": emu.endpoint, "port": emu.port,
                      "motoPort": emu.moto_port, "pid": os.getpid()}), flush=True)
    while not done.wait(0.2):
        pass
    emu.stop()
