#!/usr/bin/env bash
# Run the whole Flotilla test suite on a fresh machine (Debian/Ubuntu):
#
#   scripts/test.sh [extra cargo-nextest args...]
#
# Installs what is missing (PostgreSQL server, awscli, cargo-nextest, the AWS emulator's
# moto and pytest, Chromium and chromedriver for the console's browser tests), starts a throwaway PostgreSQL (scripts/pg.sh), exports
# FLOTILLA_TEST_POSTGRES_URL, then runs: cargo fmt --check, cargo clippy -D warnings,
# the layering check (scripts/layers.sh), cargo nextest run, the AWS emulator's tests
# (pytest localstack/tests), doctests.
# Every check runs even if an earlier one failed; the script exits non-zero if
# any of them failed. An existing CARGO_TARGET_DIR is honoured (cargo reads it).
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."

say() { printf '==> %s\n' "$*"; }
die() { printf '==> ERROR: %s\n' "$*" >&2; exit 1; }

# Root-only actions: run directly as root, through sudo otherwise.
as_root() {
  if [[ $(id -u) -eq 0 ]]; then "$@"
  elif command -v sudo >/dev/null 2>&1; then sudo "$@"
  else die "need root (or sudo) to run: $*"
  fi
}

apt_updated=0
apt_install() {
  command -v apt-get >/dev/null 2>&1 || die "apt-get not found; install $* by hand"
  if [[ $apt_updated -eq 0 ]]; then
    say "apt-get update"
    as_root apt-get update -qq
    apt_updated=1
  fi
  local pkg policy candidate
  for pkg in "$@"; do
    # No `| grep -q` here: with pipefail, grep's early exit SIGPIPEs apt-cache.
    policy=$(apt-cache policy "$pkg")
    candidate=$(sed -nE 's/^ +Candidate: +//p' <<<"$policy")
    if [[ -z $candidate || $candidate == "(none)" ]]; then
      printf '%s\n' "$policy" >&2
      die "apt has no installation candidate for '$pkg'"
    fi
    say "apt-get install $pkg ($candidate)"
  done
  as_root env DEBIAN_FRONTEND=noninteractive \
    apt-get install -y -qq --no-install-recommends "$@" </dev/null
}

# --- 1. prerequisites ---------------------------------------------------------
if compgen -G '/usr/lib/postgresql/*/bin/initdb' >/dev/null; then
  say "postgresql: found $(compgen -G '/usr/lib/postgresql/*/bin/initdb' | sort -V | tail -n1)"
else
  say "postgresql: server binaries missing, installing"
  apt_install postgresql
  compgen -G '/usr/lib/postgresql/*/bin/initdb' >/dev/null \
    || die "postgresql installed but no /usr/lib/postgresql/*/bin/initdb"
fi

# The test PostgreSQL's certificates and the API TLS tests' are made with openssl.
if ! command -v openssl >/dev/null 2>&1; then
  say "openssl: missing, installing"
  apt_install openssl
fi

# The web console's browser tests (tests/console.rs) drive headless Chromium through chromedriver.
if command -v chromium >/dev/null 2>&1 && command -v chromedriver >/dev/null 2>&1; then
  say "chromium: found $(chromium --version 2>/dev/null | head -n1)"
else
  say "chromium: missing, installing chromium and chromium-driver"
  apt_install chromium chromium-driver
fi

if command -v aws >/dev/null 2>&1; then
  say "awscli: found $(aws --version 2>&1 | head -n1)"
else
  say "awscli: missing, pip install awscli"
  if ! PIP_ROOT_USER_ACTION=ignore python3 -m pip install --quiet --disable-pip-version-check awscli; then
    say "pip install failed, falling back to apt"
    apt_install awscli
  fi
  if command -v pyenv >/dev/null 2>&1; then pyenv rehash || true; fi
  hash -r
  command -v aws >/dev/null 2>&1 || die "awscli installed but 'aws' is not on PATH"
  say "awscli: $(aws --version 2>&1 | head -n1)"
fi

if cargo nextest --version >/dev/null 2>&1; then
  say "cargo-nextest: found $(cargo nextest --version 2>/dev/null | head -n1)"
else
  say "cargo-nextest: missing, cargo install cargo-nextest --locked (slow)"
  cargo install cargo-nextest --locked
fi

# The AWS emulator's tests (localstack/tests): moto at the version the harness pins, and pytest.
say "emulator: bash localstack/run-emulator.sh install"
bash localstack/run-emulator.sh install
if python3 -m pytest --version >/dev/null 2>&1; then
  say "pytest: found $(python3 -m pytest --version 2>&1 | head -n1)"
else
  say "pytest: missing, pip install pytest"
  PIP_ROOT_USER_ACTION=ignore python3 -m pip install --quiet --disable-pip-version-check pytest
fi

for comp in fmt clippy; do
  if ! cargo "$comp" --version >/dev/null 2>&1; then
    say "cargo $comp: missing, rustup component add"
    rustup component add "$([[ $comp == fmt ]] && echo rustfmt || echo clippy)"
  fi
done

# --- 2. PostgreSQL ------------------------------------------------------------
say "postgresql: bash scripts/pg.sh start"
bash scripts/pg.sh start
FLOTILLA_TEST_POSTGRES_URL=$(bash scripts/pg.sh url)
export FLOTILLA_TEST_POSTGRES_URL
say "FLOTILLA_TEST_POSTGRES_URL=$FLOTILLA_TEST_POSTGRES_URL"
FLOTILLA_TEST_POSTGRES_CA=$(bash scripts/pg.sh ca)
export FLOTILLA_TEST_POSTGRES_CA
say "CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-<default: ./target>}"

# --- 2b. Docker and the test image -----------------------------------------------
# The LOCAL runtime's Docker tests need a daemon. This kind of machine starts one before a
# session, but a run may find it gone: start it if it does not answer.
if ! docker info >/dev/null 2>&1; then
  say "docker: not answering, starting dockerd"
  command -v dockerd >/dev/null || { say "docker: dockerd is not installed"; exit 1; }
  setsid dockerd >/tmp/flotilla-dockerd.log 2>&1 < /dev/null &
  for _ in $(seq 1 60); do docker info >/dev/null 2>&1 && break; sleep 1; done
  docker info >/dev/null 2>&1 || { say "docker: dockerd did not start"; tail -n 30 /tmp/flotilla-dockerd.log; exit 1; }
fi
say "docker: $(docker version --format '{{.Server.Version}}' 2>/dev/null)"
bash scripts/test-image.sh

# Tests start servers that spawn and signal process groups. As root, run them in their own PID
# namespace, so that no bug can ever signal a process outside the test run.
ns=()
if [[ $(id -u) == 0 ]] && unshare -pf --mount-proc true 2>/dev/null; then
  ns=(unshare -pf --mount-proc)
fi

# --- 3. checks & tests --------------------------------------------------------
failed=()
step() {
  local name=$1; shift
  say "$name: $*"
  local start=$SECONDS
  if "$@"; then
    say "$name: ok ($((SECONDS - start))s)"
  else
    say "$name: FAILED ($((SECONDS - start))s)"
    failed+=("$name")
  fi
}

step fmt     cargo fmt --all -- --check
step clippy  cargo clippy --all-targets --locked -- -D warnings
step layers  bash scripts/layers.sh
# The model the API is held to (src/api/compat/batch-model.json) is the pinned botocore's.
step model   python3 scripts/botocore-model.py --check
step doctest cargo test --doc --locked
# The tests start and stop their own emulator on free 127.0.0.1 ports (localstack/tests/conftest.py).
say "emulator tests: pytest localstack/tests"
step emulator "${ns[@]}" python3 -m pytest -q localstack/tests

# --- infra/: the Terraform module ---------------------------------------------------------------
# Terraform cannot be installed here; infra/tests parses the module with python-hcl2 (pinned in
# infra/tests/requirements.txt) and checks it against src/ and docs/aws.md (docs/infra.md).
hcl2_pin=$(sed -nE 's/^python-hcl2==([^[:space:]]+).*/\1/p' infra/tests/requirements.txt)
if python3 -c "import sys, hcl2, importlib.metadata as m; sys.exit(m.version('python-hcl2') != '$hcl2_pin')" >/dev/null 2>&1; then
  say "python-hcl2: found $hcl2_pin"
else
  say "python-hcl2: missing, pip install -r infra/tests/requirements.txt"
  PIP_ROOT_USER_ACTION=ignore python3 -m pip install --quiet --disable-pip-version-check \
    -r infra/tests/requirements.txt || say "python-hcl2: pip install failed"
fi
step infra python3 -m pytest -q infra/tests
# --- end infra/ ---------------------------------------------------------------------------------

# Last, so that its summary closes the run's output.
step nextest "${ns[@]}" cargo nextest run --all-targets --locked --no-fail-fast "$@"

if (( ${#failed[@]} )); then
  say "FAILED: ${failed[*]}"
  exit 1
fi
say "all checks passed"
