# --- where ----------------------------------------------------------------------------------

variable "region" {
  description = "AWS region to deploy into. Flotilla also uses it as the region of its ARNs (--region) and of its EC2/ECS/CloudWatch Logs calls (--aws-region)."
  type        = string
}

variable "name" {
  description = "Name prefix of every resource (IAM roles, security groups, bucket, secrets, database). One deployment per account and region: Flotilla's orphan sweep terminates tagged instances that are not its own."
  type        = string
  default     = "flotilla"

  validation {
    condition     = length(var.name) <= 20 && can(regex("^[a-z]([a-z0-9]|-[a-z0-9])*$", var.name))
    error_message = "name: 1 to 20 characters, lowercase letters, digits and single '-', starting with a letter, not ending with '-'."
  }
}

variable "tags" {
  description = "Extra tags for every resource (provider default_tags). Keys starting with 'flotilla:' are reserved for the driver."
  type        = map(string)
  default     = {}

  validation {
    condition     = alltrue([for k in keys(var.tags) : !startswith(k, "flotilla:")])
    error_message = "tags: keys starting with 'flotilla:' are reserved for Flotilla's driver (its orphan sweep terminates instances tagged flotilla:managed-by)."
  }
}

variable "subnet_id" {
  description = "Subnet of the control-plane instance. Its VPC is where the security groups are created. It needs a route to the AWS APIs (NAT gateway, VPC endpoints or a public IP)."
  type        = string
}

variable "allowed_cidrs" {
  description = "CIDR blocks allowed to reach the API port (and SSH when key_name is set), e.g. your VPN or office range. 0.0.0.0/0 and ::/0 are refused."
  type        = list(string)

  validation {
    condition     = length(var.allowed_cidrs) > 0
    error_message = "allowed_cidrs: at least one CIDR block."
  }
  validation {
    condition     = alltrue([for c in var.allowed_cidrs : can(cidrhost(c, 0)) && can(regex("^[0-9.]+/[0-9]+$", c))])
    error_message = "allowed_cidrs: IPv4 CIDR blocks such as 10.0.0.0/16."
  }
  validation {
    condition     = alltrue([for c in var.allowed_cidrs : !contains(["0.0.0.0/0", "::/0"], c) && !endswith(c, "/0")])
    error_message = "allowed_cidrs: 0.0.0.0/0 would expose the Batch API to the internet; list the networks of your users."
  }
}

# --- control plane ------------------------------------------------------------------------

variable "flotilla_binary_path" {
  description = "Local path of the Linux `flotilla` binary to deploy (cargo build --release). It must match architecture and run on Amazon Linux 2023 (glibc 2.34). Uploaded to the module's bucket; a new binary restarts the instance at the next apply."
  type        = string

  validation {
    condition     = fileexists(var.flotilla_binary_path)
    error_message = "flotilla_binary_path: no such file."
  }
}

variable "architecture" {
  description = "CPU architecture of the control-plane instance and of the binary: x86_64 or arm64. Pick a matching instance_type (t3.* vs t4g.*)."
  type        = string
  default     = "x86_64"

  validation {
    condition     = contains(["x86_64", "arm64"], var.architecture)
    error_message = "architecture: x86_64 or arm64."
  }
}

variable "instance_type" {
  description = "EC2 instance type of the control plane."
  type        = string
  default     = "t3.small"
}

variable "root_volume_size_gb" {
  description = "Size in GiB of the control plane's encrypted gp3 root volume, which holds the data directory (/var/lib/flotilla: SQLite database and locally written logs)."
  type        = number
  default     = 30

  validation {
    condition     = var.root_volume_size_gb >= 8
    error_message = "root_volume_size_gb: at least 8 (the Amazon Linux 2023 image)."
  }
}

variable "api_port" {
  description = "TCP port of the AWS Batch / CloudWatch Logs API (--listen 0.0.0.0:PORT)."
  type        = number
  default     = 8080

  validation {
    condition     = var.api_port >= 1 && var.api_port <= 65535 && floor(var.api_port) == var.api_port
    error_message = "api_port: an integer between 1 and 65535."
  }
}

variable "key_name" {
  description = "Optional EC2 key pair for SSH to the control plane (port 22 opened to allowed_cidrs). Leave null and use SSM Session Manager instead."
  type        = string
  default     = null
}

variable "enable_ssm_session_manager" {
  description = "Attach AmazonSSMManagedInstanceCore to the control plane so that `aws ssm start-session` (shell and port forwarding to the API) works without SSH or open ports."
  type        = bool
  default     = true
}

# --- state --------------------------------------------------------------------------------

variable "database" {
  description = "Where Flotilla keeps its state: \"sqlite\" (on the root volume) or \"postgres\" (an RDS PostgreSQL instance created here)."
  type        = string
  default     = "sqlite"

  validation {
    condition     = contains(["sqlite", "postgres"], var.database)
    error_message = "database: \"sqlite\" or \"postgres\"."
  }
}

variable "database_subnet_ids" {
  description = "With database = \"postgres\": private subnets for the RDS subnet group, in at least two availability zones of the control plane's VPC."
  type        = list(string)
  default     = []
}

variable "db_instance_class" {
  description = "With database = \"postgres\": RDS instance class."
  type        = string
  default     = "db.t4g.micro"
}

variable "db_allocated_storage_gb" {
  description = "With database = \"postgres\": allocated storage in GiB (gp3, encrypted)."
  type        = number
  default     = 20

  validation {
    condition     = var.db_allocated_storage_gb >= 20
    error_message = "db_allocated_storage_gb: RDS gp3 storage starts at 20 GiB."
  }
}

variable "postgres_engine_version" {
  description = "With database = \"postgres\": PostgreSQL engine version; its major version picks the parameter group family."
  type        = string
  default     = "16"
}

variable "db_backup_retention_days" {
  description = "With database = \"postgres\": days of automated backups (0 disables them)."
  type        = number
  default     = 7
}

variable "db_deletion_protection" {
  description = "With database = \"postgres\": RDS deletion protection. Set false before `terraform destroy`."
  type        = bool
  default     = true
}

# --- jobs ---------------------------------------------------------------------------------

variable "job_ami_id" {
  description = "AMI of every job instance whose compute environment names none (--aws-ami). Default: none; the server resolves each instance type's ECS-optimized AMI (AL2023, GPU, arm64) from SSM, as AWS Batch does."
  type        = string
  default     = null
}

variable "job_subnet_ids" {
  description = "Subnets for job instances, used only in the example command of the output create_compute_environment_example. Default: the control plane's subnet."
  type        = list(string)
  default     = []
}

variable "aws_idle_seconds" {
  description = "Seconds a job instance stays idle before Flotilla drains and terminates it (--aws-idle-seconds)."
  type        = number
  default     = 300
}

variable "spot_max_interruptions" {
  description = "Spot interruptions of one job retried without spending its attempts; then it skips SPOT environments (--spot-max-interruptions)."
  type        = number
  default     = 3
}

variable "events_bus_name" {
  description = "Put every job-state event on this EventBridge bus of the same account and region (--events-bus; source flotilla.batch, see docs/events.md), and let the control plane PutEvents to it. Empty: no bus."
  type        = string
  default     = ""
  validation {
    condition     = var.events_bus_name == "" || can(regex("^[A-Za-z0-9._/-]{1,256}$", var.events_bus_name))
    error_message = "events_bus_name is an EventBridge bus name (letters, digits, . _ - /), or empty."
  }
}

variable "cloudwatch_namespace" {
  description = "Publish Flotilla's queue, fleet and job figures to CloudWatch in this namespace (--cloudwatch-namespace, see docs/aws.md), and let the control plane PutMetricData in it alone. Empty: none."
  type        = string
  default     = ""
  validation {
    condition     = var.cloudwatch_namespace == "" || (length(var.cloudwatch_namespace) <= 255 && !startswith(var.cloudwatch_namespace, "AWS/") && !startswith(var.cloudwatch_namespace, ":"))
    error_message = "cloudwatch_namespace: at most 255 characters, not starting with AWS/ or ':', or empty."
  }
}

variable "create_log_group" {
  description = "Create the CloudWatch log group /aws/batch/job that job containers write to. Set false if it already exists in the account (e.g. AWS Batch is used there too)."
  type        = bool
  default     = true
}

variable "log_retention_days" {
  description = "Retention in days of the /aws/batch/job log group (0 = never expire)."
  type        = number
  default     = 30

  validation {
    condition     = contains([0, 1, 3, 5, 7, 14, 30, 60, 90, 120, 150, 180, 365, 400, 545, 731, 1096, 1827, 2192, 2557, 2922, 3288, 3653], var.log_retention_days)
    error_message = "log_retention_days: one of CloudWatch Logs' values (0, 1, 3, 5, 7, 14, 30, 60, 90, 120, 150, 180, 365, ...)."
  }
}

variable "create_service_linked_roles" {
  description = "Create the service-linked roles AWSServiceRoleForEC2Spot and AWSServiceRoleForECS. Needed once per account if neither Spot nor ECS was ever used there; fails if they exist."
  type        = bool
  default     = false
}
