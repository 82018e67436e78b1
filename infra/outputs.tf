output "endpoint_url" {
  description = "The AWS Batch (and CloudWatch Logs) endpoint: pass it as --endpoint-url. A private address: reach it from allowed_cidrs inside the VPC, or through an SSH/SSM tunnel."
  value       = local.endpoint_url
}

output "region" {
  description = "Region to sign requests for (AWS_REGION / --region of the clients); it must match the server's."
  value       = var.region
}

output "control_plane_instance_id" {
  description = "Instance ID of the control plane (journalctl -u flotilla there; aws ssm start-session --target ...)."
  value       = aws_instance.control_plane.id
}

output "control_plane_private_ip" {
  description = "Private IP address of the control plane."
  value       = aws_instance.control_plane.private_ip
}

output "api_credentials_secret_arn" {
  description = "Secrets Manager secret holding the API key pair ({\"access_key_id\", \"secret_access_key\"}) that clients sign requests with."
  value       = aws_secretsmanager_secret.api.arn
}

output "ecs_instance_profile_arn" {
  description = "Instance profile for job instances: computeResources.instanceRole of managed compute environments (the only role the control plane may pass)."
  value       = aws_iam_instance_profile.ecs_instance.arn
}

output "ecs_instance_role_arn" {
  description = "IAM role inside ecs_instance_profile_arn (AmazonEC2ContainerServiceforEC2Role); attach what your jobs need to it."
  value       = aws_iam_role.ecs_instance.arn
}

output "job_security_group_id" {
  description = "Egress-only security group for job instances: computeResources.securityGroupIds."
  value       = aws_security_group.jobs.id
}

output "artifacts_bucket" {
  description = "S3 bucket holding the flotilla binary."
  value       = aws_s3_bucket.artifacts.id
}

output "database_endpoint" {
  description = "With database = \"postgres\": the RDS endpoint (host:port); null with sqlite."
  value       = try(aws_db_instance.flotilla[0].endpoint, null)
}

output "database_secret_arn" {
  description = "With database = \"postgres\": Secrets Manager secret with the database credentials; null with sqlite."
  value       = try(aws_secretsmanager_secret.db[0].arn, null)
}

output "ssm_port_forward_command" {
  description = "With enable_ssm_session_manager: forwards localhost:<api_port> to the API through SSM Session Manager (needs the session-manager-plugin)."
  value = var.enable_ssm_session_manager ? join(" ", [
    "aws ssm start-session --region ${var.region} --target ${aws_instance.control_plane.id}",
    "--document-name AWS-StartPortForwardingSession",
    "--parameters '${jsonencode({ portNumber = [tostring(var.api_port)], localPortNumber = [tostring(var.api_port)] })}'",
  ]) : null
}

locals {
  example_compute_resources = {
    type               = "SPOT"
    allocationStrategy = "SPOT_PRICE_CAPACITY_OPTIMIZED"
    minvCpus           = 0
    maxvCpus           = 64
    instanceTypes      = ["m6i.large", "m6i.xlarge", "m5.large"]
    subnets            = length(var.job_subnet_ids) > 0 ? var.job_subnet_ids : [var.subnet_id]
    securityGroupIds   = [aws_security_group.jobs.id]
    instanceRole       = aws_iam_instance_profile.ecs_instance.arn
  }
}

output "create_compute_environment_example" {
  description = "Ready-to-paste shell: an AWS CLI profile with the API credentials, a SPOT compute environment on this deployment's job role and security group, and a job queue on it."
  value       = <<-EOT
    # The API key pair into an AWS CLI profile named ${var.name} (python3 reads the secret's JSON).
    aws secretsmanager get-secret-value --region ${var.region} --secret-id ${aws_secretsmanager_secret.api.arn} \
      --query SecretString --output text | python3 -c 'import json, subprocess, sys
    c = json.load(sys.stdin)
    for k, v in (("aws_access_key_id", c["access_key_id"]), ("aws_secret_access_key", c["secret_access_key"]), ("region", "${var.region}")):
        subprocess.run(["aws", "configure", "set", "--profile", "${var.name}", k, v], check=True)'

    aws batch create-compute-environment --profile ${var.name} --endpoint-url ${local.endpoint_url} \
      --compute-environment-name spot --type MANAGED --state ENABLED \
      --compute-resources '${jsonencode(local.example_compute_resources)}'

    aws batch create-job-queue --profile ${var.name} --endpoint-url ${local.endpoint_url} \
      --job-queue-name spot --priority 1 --compute-environment-order order=1,computeEnvironment=spot
  EOT
}
