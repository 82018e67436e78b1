#!/usr/bin/env bash
# Flotilla's AWS emulator (moto + harness, see localstack/README.md) on 127.0.0.1.
#
#   localstack/run-emulator.sh [start]   install requirements if missing, start in the
#                                        background, wait until healthy, print the exports
#   localstack/run-emulator.sh stop      stop it (no-op if it is not running)
#   localstack/run-emulator.sh status    exit 0 if it is running and healthy
#   localstack/run-emulator.sh install   only install localstack/requirements.txt if missing
#
#   eval "$(localstack/run-emulator.sh)"   # start (or find running) and set AWS_* here
#
# Settings: FLOTILLA_EMULATOR_PORT (endpoint, default 4566), FLOTILLA_EMULATOR_MOTO_PORT
# (moto itself, default 0 = any free port; clients never use it), FLOTILLA_EMULATOR_DIR (pid
# file and log, default /tmp/flotilla-emulator-<port>), PYTHON (default python3).
# Start is idempotent: a healthy emulator on the port is reused. Messages go to stderr, the
# exports alone to stdout.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
port=${FLOTILLA_EMULATOR_PORT:-4566}
moto_port=${FLOTILLA_EMULATOR_MOTO_PORT:-0}
dir=${FLOTILLA_EMULATOR_DIR:-/tmp/flotilla-emulator-$port}
python=${PYTHON:-python3}
pidfile=$dir/pid
logfile=$dir/log
endpoint=http://127.0.0.1:$port

say() { printf 'emulator: %s\n' "$*" >&2; }

healthy() {
  "$python" - "$endpoint/_flotilla/health" <<'EOF' >/dev/null 2>&1
import json, sys, urllib.request
with urllib.request.urlopen(sys.argv[1], timeout=2) as r:
    assert json.load(r)["ok"]
EOF
}

# The pid in the pid file, if that process is still our emulator (not a reused pid).
pid() {
  local p
  [[ -f $pidfile ]] || return 1
  p=$(<"$pidfile")
  [[ $p =~ ^[0-9]+$ ]] && kill -0 "$p" 2>/dev/null \
    && tr '\0' ' ' <"/proc/$p/cmdline" 2>/dev/null | grep -q flotilla_emulator \
    && echo "$p"
}

install() {
  local want cbor
  want=$(sed -nE 's/^moto\[server\]==([^ ;]+).*/\1/p' "$here/requirements.txt")
  cbor=$(sed -nE 's/^cbor2==([^ ;]+).*/\1/p' "$here/requirements.txt")
  if "$python" -c 'import sys, moto, moto.server, flask_cors, cbor2
from importlib.metadata import version
sys.exit(moto.__version__ != sys.argv[1] or version("cbor2") != sys.argv[2])' \
      "$want" "$cbor" >/dev/null 2>&1; then
    say "moto $want, its server extras and cbor2 $cbor found"
    return 0
  fi
  say "pip install -r localstack/requirements.txt (moto $want)"
  PIP_ROOT_USER_ACTION=ignore "$python" -m pip install --quiet --disable-pip-version-check \
    -r "$here/requirements.txt" >&2
}

print_env() {
  cat <<EOF
export AWS_ENDPOINT_URL=$endpoint
export AWS_ACCESS_KEY_ID=testing
export AWS_SECRET_ACCESS_KEY=testing
export AWS_REGION=us-east-1
export AWS_DEFAULT_REGION=us-east-1
export AWS_EC2_METADATA_DISABLED=true
EOF
}

start() {
  if p=$(pid) && healthy; then
    say "already running (pid $p) at $endpoint"
    print_env
    return 0
  fi
  if healthy; then
    say "an emulator not started from $dir already answers at $endpoint; using it"
    print_env
    return 0
  fi
  if p=$(pid); then  # ours, but not answering: replace it
    say "pid $p does not answer, restarting it"
    stop
  fi
  install
  mkdir -p "$dir"
  say "starting on $endpoint (log: $logfile)"
  # setsid: the emulator outlives this shell and its terminal.
  PYTHONPATH="$here/harness${PYTHONPATH:+:$PYTHONPATH}" setsid "$python" -m flotilla_emulator \
    --port "$port" --moto-port "$moto_port" >"$logfile" 2>&1 </dev/null &
  echo $! >"$pidfile"
  for _ in $(seq 1 120); do
    if healthy; then
      say "ready (pid $(<"$pidfile"))"
      print_env
      return 0
    fi
    pid >/dev/null || break
    sleep 0.5
  done
  say "did not become healthy; last lines of $logfile:"
  tail -n 30 "$logfile" >&2 || true
  stop
  return 1
}

stop() {
  local p
  if ! p=$(pid); then
    say "not running"
    rm -f "$pidfile"
    return 0
  fi
  kill -TERM "$p"
  for _ in $(seq 1 40); do
    kill -0 "$p" 2>/dev/null || break
    sleep 0.25
  done
  if kill -0 "$p" 2>/dev/null; then
    say "pid $p ignored SIGTERM, sending SIGKILL"
    kill -KILL "$p" || true
  fi
  rm -f "$pidfile"
  say "stopped (pid $p)"
}

status() {
  local p
  if p=$(pid) && healthy; then
    say "running (pid $p) at $endpoint"
    return 0
  fi
  if p=$(pid); then
    say "pid $p is running but does not answer at $endpoint"
  elif healthy; then
    say "something answers at $endpoint, but not an emulator started from $dir"
    return 0
  else
    say "not running"
  fi
  return 1
}

case ${1:-start} in
  start) start ;;
  stop) stop ;;
  status) status ;;
  install) install ;;
  *) echo "usage: $0 [start|stop|status|install]" >&2; exit 2 ;;
esac
