# Flotilla's control plane in your AWS account: one EC2 instance running `flotilla server --aws`
# under systemd, the IAM it needs to drive EC2/ECS/CloudWatch Logs (exactly the calls of
# src/compute/aws, see docs/aws.md), the ECS container-instance role its job instances use, and
# optionally an RDS PostgreSQL for its state. See docs/infra.md.

data "aws_partition" "current" {}
data "aws_caller_identity" "current" {}

data "aws_subnet" "control_plane" {
  id = var.subnet_id
}

# Amazon Linux 2023 for the control plane.
data "aws_ssm_parameter" "al2023" {
  name = "/aws/service/ami-amazon-linux-latest/al2023-ami-kernel-default-${var.architecture}"
}

locals {
  partition    = data.aws_partition.current.partition
  account_id   = data.aws_caller_identity.current.account_id
  vpc_id       = data.aws_subnet.control_plane.vpc_id
  use_postgres = var.database == "postgres"
  # Empty: no --aws-ami, and the driver resolves each instance type's ECS-optimized AMI from SSM.
  job_ami_id   = var.job_ami_id == null ? "" : var.job_ami_id
  binary_key   = "bin/flotilla"
  rds_ca_key   = "tls/rds-ca-bundle.pem"
  endpoint_url = "http://${aws_instance.control_plane.private_ip}:${var.api_port}"

  # Secrets the control plane reads at boot: always the API credentials (Flotilla refuses to
  # listen on a non-loopback address without them), and the database's when postgres is used.
  readable_secret_arns = concat(
    [aws_secretsmanager_secret.api.arn],
    aws_secretsmanager_secret.db[*].arn,
  )
}

# --- artifacts bucket: the flotilla binary ----------------------------------------------------

resource "aws_s3_bucket" "artifacts" {
  bucket_prefix = "${var.name}-artifacts-"
  # It only holds the binary, which `terraform apply` uploads again.
  force_destroy = true
}

resource "aws_s3_bucket_ownership_controls" "artifacts" {
  bucket = aws_s3_bucket.artifacts.id
  rule {
    object_ownership = "BucketOwnerEnforced"
  }
}

resource "aws_s3_bucket_public_access_block" "artifacts" {
  bucket                  = aws_s3_bucket.artifacts.id
  block_public_acls       = true
  block_public_policy     = true
  ignore_public_acls      = true
  restrict_public_buckets = true
}

resource "aws_s3_bucket_versioning" "artifacts" {
  bucket = aws_s3_bucket.artifacts.id
  versioning_configuration {
    status = "Enabled"
  }
}

resource "aws_s3_bucket_server_side_encryption_configuration" "artifacts" {
  bucket = aws_s3_bucket.artifacts.id
  rule {
    apply_server_side_encryption_by_default {
      sse_algorithm = "AES256"
    }
  }
}

data "aws_iam_policy_document" "artifacts_bucket" {
  statement {
    sid       = "DenyInsecureTransport"
    effect    = "Deny"
    actions   = ["s3:*"]
    resources = [aws_s3_bucket.artifacts.arn, "${aws_s3_bucket.artifacts.arn}/*"]
    principals {
      type        = "*"
      identifiers = ["*"]
    }
    condition {
      test     = "Bool"
      variable = "aws:SecureTransport"
      values   = ["false"]
    }
  }
}

resource "aws_s3_bucket_policy" "artifacts" {
  bucket = aws_s3_bucket.artifacts.id
  policy = data.aws_iam_policy_document.artifacts_bucket.json
  # S3 rejects a bucket policy while the public access block is being written.
  depends_on = [aws_s3_bucket_public_access_block.artifacts]
}

resource "aws_s3_object" "flotilla_binary" {
  bucket      = aws_s3_bucket.artifacts.id
  key         = local.binary_key
  source      = var.flotilla_binary_path
  source_hash = filemd5(var.flotilla_binary_path)

  depends_on = [
    aws_s3_bucket_server_side_encryption_configuration.artifacts,
    aws_s3_bucket_versioning.artifacts,
  ]
}

# --- secrets --------------------------------------------------------------------------------

# The key pair every request to the API must be SigV4-signed with (FLOTILLA_ACCESS_KEY_ID /
# FLOTILLA_SECRET_ACCESS_KEY on the server; AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY for clients).
resource "random_string" "api_access_key_id" {
  length  = 16
  upper   = true
  lower   = false
  numeric = true
  special = false
}

resource "random_password" "api_secret_access_key" {
  length  = 40
  special = false
}

resource "aws_secretsmanager_secret" "api" {
  name_prefix             = "${var.name}/api-credentials-"
  description             = "Flotilla API credentials (SigV4 key pair for the AWS CLI and SDKs)"
  recovery_window_in_days = 7
}

resource "aws_secretsmanager_secret_version" "api" {
  secret_id     = aws_secretsmanager_secret.api.id
  secret_string = jsonencode({
    access_key_id     = "FLOT${random_string.api_access_key_id.result}"
    secret_access_key = random_password.api_secret_access_key.result
  })
}

# --- optional PostgreSQL ----------------------------------------------------------------------

resource "random_password" "db" {
  count = local.use_postgres ? 1 : 0
  # Letters and digits only: it goes into a postgres:// URL.
  length  = 40
  special = false
}

resource "random_id" "db_final_snapshot" {
  count       = local.use_postgres ? 1 : 0
  byte_length = 4
}

resource "aws_secretsmanager_secret" "db" {
  count                   = local.use_postgres ? 1 : 0
  name_prefix             = "${var.name}/database-"
  description             = "Flotilla PostgreSQL credentials"
  recovery_window_in_days = 7
}

resource "aws_secretsmanager_secret_version" "db" {
  count         = local.use_postgres ? 1 : 0
  secret_id     = aws_secretsmanager_secret.db[0].id
  secret_string = jsonencode({
    engine   = "postgres"
    host     = aws_db_instance.flotilla[0].address
    port     = aws_db_instance.flotilla[0].port
    dbname   = aws_db_instance.flotilla[0].db_name
    username = aws_db_instance.flotilla[0].username
    password = random_password.db[0].result
  })
}

resource "aws_db_subnet_group" "flotilla" {
  count       = local.use_postgres ? 1 : 0
  name_prefix = "${var.name}-"
  description = "Flotilla PostgreSQL"
  subnet_ids  = var.database_subnet_ids

  lifecycle {
    precondition {
      condition     = length(var.database_subnet_ids) >= 2
      error_message = "database = \"postgres\" needs database_subnet_ids: at least two subnets in different availability zones."
    }
  }
}

# RDS forces TLS (the default from PostgreSQL 15 on; set here for older engines too): Flotilla
# connects with sslmode=verify-full against the RDS CA bundle below.
resource "aws_db_parameter_group" "flotilla" {
  count       = local.use_postgres ? 1 : 0
  name_prefix = "${var.name}-"
  family      = "postgres${split(".", var.postgres_engine_version)[0]}"
  description = "Flotilla: TLS only"

  parameter {
    name         = "rds.force_ssl"
    value        = "1"
    apply_method = "immediate"
  }

  lifecycle {
    create_before_destroy = true
  }
}

# The region's RDS CA bundle, fetched where Terraform runs and handed to the instance through the
# artifacts bucket: the control plane verifies the database's certificate without needing a
# route to the internet (a subnet with only VPC endpoints works).
data "http" "rds_ca_bundle" {
  count = local.use_postgres ? 1 : 0
  url   = "https://truststore.pki.rds.amazonaws.com/${var.region}/${var.region}-bundle.pem"

  lifecycle {
    postcondition {
      condition     = self.status_code == 200 && strcontains(self.response_body, "BEGIN CERTIFICATE")
      error_message = "Could not fetch the RDS CA bundle for ${var.region} from truststore.pki.rds.amazonaws.com."
    }
  }
}

resource "aws_s3_object" "rds_ca_bundle" {
  count   = local.use_postgres ? 1 : 0
  bucket  = aws_s3_bucket.artifacts.id
  key     = local.rds_ca_key
  content = data.http.rds_ca_bundle[0].response_body

  depends_on = [
    aws_s3_bucket_server_side_encryption_configuration.artifacts,
    aws_s3_bucket_versioning.artifacts,
  ]
}

resource "aws_security_group" "db" {
  count       = local.use_postgres ? 1 : 0
  name_prefix = "${var.name}-db-"
  description = "Flotilla PostgreSQL: only from the control plane"
  vpc_id      = local.vpc_id

  lifecycle {
    create_before_destroy = true
  }
}

resource "aws_vpc_security_group_ingress_rule" "db_from_control_plane" {
  count                        = local.use_postgres ? 1 : 0
  security_group_id            = aws_security_group.db[0].id
  description                  = "PostgreSQL from the Flotilla control plane"
  ip_protocol                  = "tcp"
  from_port                    = 5432
  to_port                      = 5432
  referenced_security_group_id = aws_security_group.api.id
}

resource "aws_db_instance" "flotilla" {
  count                      = local.use_postgres ? 1 : 0
  identifier_prefix          = "${var.name}-"
  engine                     = "postgres"
  engine_version             = var.postgres_engine_version
  instance_class             = var.db_instance_class
  allocated_storage          = var.db_allocated_storage_gb
  storage_type               = "gp3"
  storage_encrypted          = true
  db_name                    = "flotilla"
  username                   = "flotilla"
  password                   = random_password.db[0].result
  port                       = 5432
  db_subnet_group_name       = aws_db_subnet_group.flotilla[0].name
  parameter_group_name       = aws_db_parameter_group.flotilla[0].name
  vpc_security_group_ids     = [aws_security_group.db[0].id]
  publicly_accessible        = false
  multi_az                   = false
  backup_retention_period    = var.db_backup_retention_days
  deletion_protection        = var.db_deletion_protection
  auto_minor_version_upgrade = true
  copy_tags_to_snapshot      = true
  skip_final_snapshot        = false
  final_snapshot_identifier  = "${var.name}-final-${random_id.db_final_snapshot[0].hex}"
}

# --- networking -----------------------------------------------------------------------------

# The control plane: the API port from allowed_cidrs only, everything out (AWS APIs).
resource "aws_security_group" "api" {
  name_prefix = "${var.name}-api-"
  description = "Flotilla control plane: Batch API from allowed_cidrs only"
  vpc_id      = local.vpc_id

  lifecycle {
    create_before_destroy = true
  }
}

resource "aws_vpc_security_group_ingress_rule" "api" {
  for_each          = toset(var.allowed_cidrs)
  security_group_id = aws_security_group.api.id
  description       = "Flotilla API"
  ip_protocol       = "tcp"
  from_port         = var.api_port
  to_port           = var.api_port
  cidr_ipv4         = each.value
}

resource "aws_vpc_security_group_ingress_rule" "ssh" {
  for_each          = var.key_name == null ? toset([]) : toset(var.allowed_cidrs)
  security_group_id = aws_security_group.api.id
  description       = "SSH"
  ip_protocol       = "tcp"
  from_port         = 22
  to_port           = 22
  cidr_ipv4         = each.value
}

resource "aws_vpc_security_group_egress_rule" "api_all" {
  security_group_id = aws_security_group.api.id
  description       = "AWS APIs, S3, Secrets Manager, PostgreSQL"
  ip_protocol       = "-1"
  cidr_ipv4         = "0.0.0.0/0"
}

# Job instances (computeResources.securityGroupIds): nothing in, everything out (ECS, ECR,
# CloudWatch Logs, image registries).
resource "aws_security_group" "jobs" {
  name_prefix = "${var.name}-jobs-"
  description = "Flotilla job instances: egress only"
  vpc_id      = local.vpc_id

  lifecycle {
    create_before_destroy = true
  }
}

resource "aws_vpc_security_group_egress_rule" "jobs_all_ipv4" {
  security_group_id = aws_security_group.jobs.id
  description       = "All outbound"
  ip_protocol       = "-1"
  cidr_ipv4         = "0.0.0.0/0"
}

# --- logs -----------------------------------------------------------------------------------

# Job containers write here through the awslogs driver (stream <definition>/default/<task id>);
# Flotilla reads it back with GetLogEvents. The ECS agent does not create the group.
resource "aws_cloudwatch_log_group" "jobs" {
  count             = var.create_log_group ? 1 : 0
  name              = "/aws/batch/job"
  retention_in_days = var.log_retention_days
}

# --- IAM: job instances ---------------------------------------------------------------------

data "aws_iam_policy_document" "ec2_assume" {
  statement {
    actions = ["sts:AssumeRole"]
    principals {
      type        = "Service"
      identifiers = ["ec2.amazonaws.com"]
    }
  }
}

# What any ECS container instance needs; users pass the instance profile as the instanceRole of
# their managed compute environments.
resource "aws_iam_role" "ecs_instance" {
  name_prefix        = "${var.name}-ecs-instance-"
  description        = "Flotilla job instances (ECS container instances)"
  assume_role_policy = data.aws_iam_policy_document.ec2_assume.json
}

resource "aws_iam_role_policy_attachment" "ecs_instance" {
  role       = aws_iam_role.ecs_instance.name
  policy_arn = "arn:${local.partition}:iam::aws:policy/service-role/AmazonEC2ContainerServiceforEC2Role"
}

resource "aws_iam_instance_profile" "ecs_instance" {
  name_prefix = "${var.name}-ecs-instance-"
  role        = aws_iam_role.ecs_instance.name
}

resource "aws_iam_service_linked_role" "spot" {
  count            = var.create_service_linked_roles ? 1 : 0
  aws_service_name = "spot.amazonaws.com"
}

resource "aws_iam_service_linked_role" "ecs" {
  count            = var.create_service_linked_roles ? 1 : 0
  aws_service_name = "ecs.amazonaws.com"
}

# --- IAM: control plane ---------------------------------------------------------------------

# Exactly the calls the driver makes (docs/aws.md "Permissions"; infra/tests checks this list
# against src/compute/aws), plus what the boot script reads.
data "aws_iam_policy_document" "control_plane" {
  statement {
    sid = "FlotillaDriver"
    actions = [
      "ec2:CreateFleet",
      "ec2:RunInstances",
      "ec2:CreateTags",
      "ec2:CreateLaunchTemplate",
      "ec2:CreateLaunchTemplateVersion",
      "ec2:DeleteLaunchTemplate",
      "ec2:DescribeInstances",
      "ec2:DescribeInstanceTypes",
      "ec2:DescribeSpotPriceHistory",
      "ec2:DescribeLaunchTemplateVersions",
      "ecs:CreateCluster",
      "ecs:DeleteCluster",
      "ecs:DescribeClusters",
      "ecs:TagResource",
      "ecs:RegisterTaskDefinition",
      "ecs:StartTask",
      "ecs:StopTask",
      "ecs:DescribeTasks",
      "ecs:ListTasks",
      "ecs:ListContainerInstances",
      "ecs:DescribeContainerInstances",
      "ecs:UpdateContainerInstancesState",
      "ecs:DeregisterContainerInstance",
      "logs:GetLogEvents",
    ]
    resources = ["*"]
  }

  # The ECS-optimized AMIs of managed environments without an imageId: AWS's public parameters.
  statement {
    sid       = "ReadEcsOptimizedAmiParameters"
    actions   = ["ssm:GetParameters", "ssm:GetParameter"]
    resources = ["arn:${local.partition}:ssm:*::parameter/aws/service/ecs/*"]
  }

  # The driver only ever terminates instances it tagged (launches and the orphan sweep).
  statement {
    sid       = "FlotillaTerminateOwnInstances"
    actions   = ["ec2:TerminateInstances"]
    resources = ["*"]
    condition {
      test     = "StringEquals"
      variable = "ec2:ResourceTag/flotilla:managed-by"
      values   = ["flotilla"]
    }
  }

  # Launch templates name the job instances' profile: only that role may be passed, only to EC2.
  statement {
    sid       = "PassEcsInstanceRole"
    actions   = ["iam:PassRole"]
    resources = [aws_iam_role.ecs_instance.arn]
    condition {
      test     = "StringEquals"
      variable = "iam:PassedToService"
      values   = ["ec2.amazonaws.com"]
    }
  }

  statement {
    sid     = "ReadFlotillaBinary"
    actions = ["s3:GetObject"]
    # The binary, and the RDS CA bundle (uploaded only with PostgreSQL).
    resources = [
      "${aws_s3_bucket.artifacts.arn}/${local.binary_key}",
      "${aws_s3_bucket.artifacts.arn}/${local.rds_ca_key}",
    ]
  }

  statement {
    sid       = "ReadFlotillaSecrets"
    actions   = ["secretsmanager:GetSecretValue"]
    resources = local.readable_secret_arns
  }

  # Job-state events on the bus the operator named (--events-bus), and nowhere else.
  dynamic "statement" {
    for_each = var.events_bus_name == "" ? [] : [var.events_bus_name]
    content {
      sid       = "PutJobEventsOnBus"
      actions   = ["events:PutEvents"]
      resources = ["arn:${local.partition}:events:${var.region}:${local.account_id}:event-bus/${statement.value}"]
    }
  }

  # PutMetricData takes no resource; the namespace condition keeps it to Flotilla's own.
  dynamic "statement" {
    for_each = var.cloudwatch_namespace == "" ? [] : [var.cloudwatch_namespace]
    content {
      sid       = "PutFlotillaMetrics"
      actions   = ["cloudwatch:PutMetricData"]
      resources = ["*"]
      condition {
        test     = "StringEquals"
        variable = "cloudwatch:namespace"
        values   = [statement.value]
      }
    }
  }
}

resource "aws_iam_role" "control_plane" {
  name_prefix        = "${var.name}-control-plane-"
  description        = "Flotilla control plane: drives EC2, ECS and CloudWatch Logs"
  assume_role_policy = data.aws_iam_policy_document.ec2_assume.json
}

resource "aws_iam_role_policy" "control_plane" {
  name   = "flotilla-driver"
  role   = aws_iam_role.control_plane.id
  policy = data.aws_iam_policy_document.control_plane.json
}

resource "aws_iam_role_policy_attachment" "control_plane_ssm" {
  count      = var.enable_ssm_session_manager ? 1 : 0
  role       = aws_iam_role.control_plane.name
  policy_arn = "arn:${local.partition}:iam::aws:policy/AmazonSSMManagedInstanceCore"
}

resource "aws_iam_instance_profile" "control_plane" {
  name_prefix = "${var.name}-control-plane-"
  role        = aws_iam_role.control_plane.name
}

# --- the control-plane instance -------------------------------------------------------------

locals {
  service_unit = templatefile("${path.module}/templates/flotilla.service.tftpl", {
    api_port               = var.api_port
    region                 = var.region
    account_id             = local.account_id
    job_ami_id             = local.job_ami_id
    aws_idle_seconds       = var.aws_idle_seconds
    spot_max_interruptions = var.spot_max_interruptions
    events_bus_name        = var.events_bus_name
    cloudwatch_namespace   = var.cloudwatch_namespace
  })

  boot_script = templatefile("${path.module}/templates/user-data.sh.tftpl", {
    region         = var.region
    bucket         = aws_s3_bucket.artifacts.id
    binary_key     = local.binary_key
    binary_sha256  = filesha256(var.flotilla_binary_path)
    api_secret_arn = aws_secretsmanager_secret.api.arn
    database       = var.database
    db_secret_arn  = try(aws_secretsmanager_secret.db[0].arn, "")
    rds_ca_key     = local.rds_ca_key
    service_unit   = local.service_unit
  })

  # MIME multipart so that cloud-init runs the script at every boot, not only the first: a
  # changed binary or flag (user_data) is applied by the stop/start Terraform does for it.
  user_data = templatefile("${path.module}/templates/cloud-init.tftpl", {
    script = local.boot_script
  })
}

resource "aws_instance" "control_plane" {
  ami                         = data.aws_ssm_parameter.al2023.insecure_value
  instance_type               = var.instance_type
  subnet_id                   = var.subnet_id
  vpc_security_group_ids      = [aws_security_group.api.id]
  iam_instance_profile        = aws_iam_instance_profile.control_plane.name
  key_name                    = var.key_name
  user_data                   = local.user_data
  user_data_replace_on_change = false

  metadata_options {
    http_endpoint               = "enabled"
    http_tokens                 = "required"
    http_put_response_hop_limit = 1
  }

  root_block_device {
    volume_type           = "gp3"
    volume_size           = var.root_volume_size_gb
    encrypted             = true
    delete_on_termination = true
  }

  tags = {
    Name = "${var.name}-control-plane"
  }

  # The data directory (SQLite) lives on the root volume: a newer Amazon Linux image must not
  # replace the instance. Changes to user_data stop and start it instead.
  lifecycle {
    ignore_changes = [ami]
  }

  depends_on = [
    aws_s3_object.flotilla_binary,
    aws_s3_object.rds_ca_bundle,
    aws_secretsmanager_secret_version.api,
    aws_secretsmanager_secret_version.db,
    aws_iam_role_policy.control_plane,
    aws_cloudwatch_log_group.jobs,
  ]
}
