#!/bin/bash
# LocalStack ready hook (mounted at /etc/localstack/init/ready.d by docker-compose.yml): the
# resources Flotilla expects to find in an account, made idempotently so that a restart with
# persisted state does not fail. Runs inside the LocalStack container, where `awslocal` talks
# to LocalStack itself.
set -euo pipefail

cluster=${FLOTILLA_CLUSTER:-flotilla}
region=${AWS_DEFAULT_REGION:-us-east-1}
aws() { awslocal --region "$region" "$@"; }

# The instance role that CreateFleet's launch templates name, as in a real Batch account.
if ! aws iam get-role --role-name ecsInstanceRole >/dev/null 2>&1; then
  aws iam create-role --role-name ecsInstanceRole --assume-role-policy-document \
    '{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Principal":{"Service":"ec2.amazonaws.com"},"Action":"sts:AssumeRole"}]}' \
    >/dev/null
fi
if ! aws iam get-instance-profile --instance-profile-name ecsInstanceRole >/dev/null 2>&1; then
  aws iam create-instance-profile --instance-profile-name ecsInstanceRole >/dev/null
  aws iam add-role-to-instance-profile --instance-profile-name ecsInstanceRole \
    --role-name ecsInstanceRole
fi

# CreateCluster is idempotent in ECS.
aws ecs create-cluster --cluster-name "$cluster" >/dev/null

# Batch's default job log group.
aws logs create-log-group --log-group-name /aws/batch/job 2>/dev/null || true

echo "flotilla: cluster $cluster, instance profile ecsInstanceRole and log group /aws/batch/job ready in $region"
