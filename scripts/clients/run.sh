#!/usr/bin/env bash
# Runs real AWS Batch clients against Flotilla, unchanged but for their endpoint: a Metaflow
# flow with @batch and a Snakemake workflow with its AWS Batch executor, both keeping their data
# in S3 (moto). What they printed is in docs/clients.md.
#
#   scripts/clients/run.sh [metaflow|snakemake|all]
#
# Needs: Docker, a built `flotilla` (FLOTILLA, default target/debug/flotilla), Python 3.11.
# Makes a venv with the clients (CLIENTS_VENV, default /tmp/flotilla-clients/venv), the image its
# jobs run (scripts/clients/python-image.sh), a moto S3/STS on 169.254.170.2 (the task network's
# gateway, so that both this host and the jobs' containers reach it, and nothing leaves the
# machine), and a Flotilla server on 127.0.0.1:8787 with the LOCAL Docker runtime and AWS access
# to moto (so that job roles are assumed and served to the containers).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."
repo=$PWD
what=${1:-all}
work=/tmp/flotilla-clients
venv=${CLIENTS_VENV:-$work/venv}
flotilla=${FLOTILLA:-$repo/target/debug/flotilla}
moto=http://169.254.170.2:5055
api=http://127.0.0.1:8787
mkdir -p "$work/shared" "$work/data"

if [[ ! -x $venv/bin/snakemake ]]; then
  python3 -m venv "$venv"
  "$venv/bin/pip" install -q metaflow boto3 snakemake snakemake-executor-plugin-aws-batch \
    snakemake-storage-plugin-s3
fi
bash scripts/clients/python-image.sh "$venv" flotilla-clients/python:latest

export AWS_ACCESS_KEY_ID=testing AWS_SECRET_ACCESS_KEY=testing AWS_DEFAULT_REGION=us-east-1
export AWS_EC2_METADATA_DISABLED=true

pids=()
trap 'kill "${pids[@]}" 2>/dev/null || true' EXIT
# The server creates the task network (and so the address moto listens on) at start.
"$flotilla" server --listen 127.0.0.1:8787 --data-dir "$work/data" --local-runtime docker \
  --pull never --aws-endpoint-url "$moto" >"$work/server.log" 2>&1 &
pids+=($!)
for _ in $(seq 1 60); do curl -sf "$api/healthz" >/dev/null && break; sleep 1; done
python3 -m moto.server -H 169.254.170.2 -p 5055 >"$work/moto.log" 2>&1 &
pids+=($!)
for _ in $(seq 1 60); do curl -sf "$moto/" >/dev/null && break; sleep 1; done

# The clients find Flotilla through the SDK's own per-service endpoint variable.
export AWS_ENDPOINT_URL_BATCH=$api

if [[ $what == all || $what == metaflow ]]; then
  aws --endpoint-url "$moto" s3 mb s3://metaflow-demo >/dev/null
  (
    cd "$work"
    export METAFLOW_DEFAULT_DATASTORE=s3 METAFLOW_DATASTORE_SYSROOT_S3=s3://metaflow-demo/metaflow
    export METAFLOW_S3_ENDPOINT_URL=$moto METAFLOW_BATCH_JOB_QUEUE=default
    export METAFLOW_ECS_S3_ACCESS_IAM_ROLE=arn:aws:iam::123456789012:role/metaflow-job
    export METAFLOW_DEFAULT_METADATA=local USERNAME=demo
    "$venv/bin/python" "$repo/scripts/clients/metaflow_flow.py" run
  )
fi

if [[ $what == all || $what == snakemake ]]; then
  aws --endpoint-url "$moto" s3 mb s3://snakemake-demo >/dev/null
  (
    cd "$work" && cp "$repo/scripts/clients/Snakefile" .
    "$venv/bin/python" "$repo/scripts/clients/snakemake_on_this_machine.py" \
      --executor aws-batch --aws-batch-region us-east-1 --aws-batch-job-queue default \
      --aws-batch-job-role arn:aws:iam::123456789012:role/snakemake-job \
      --container-image flotilla-clients/python:latest \
      --default-storage-provider s3 --default-storage-prefix s3://snakemake-demo/run \
      --storage-s3-endpoint-url "$moto" --jobs 2
    aws --endpoint-url "$moto" s3 cp s3://snakemake-demo/run/summary.txt -
  )
fi
