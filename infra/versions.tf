terraform {
  required_version = ">= 1.5.0"

  required_providers {
    aws = {
      source = "hashicorp/aws"
      # >= 5.8 for aws_ssm_parameter.insecure_value (public AMI IDs are not secrets).
      version = "~> 5.8"
    }
    # The RDS CA bundle (data "http" "rds_ca_bundle").
    http = {
      source  = "hashicorp/http"
      version = "~> 3.4"
    }
    random = {
      source  = "hashicorp/random"
      version = "~> 3.6"
    }
  }
}

provider "aws" {
  region = var.region

  # Every resource this module creates carries these tags. Never a `flotilla:` key: Flotilla's
  # orphan sweep terminates any instance tagged `flotilla:managed-by=flotilla` that does not
  # belong to one of its compute environments, so that prefix is reserved for the driver.
  default_tags {
    tags = merge(var.tags, {
      "Project"            = "flotilla"
      "FlotillaDeployment" = var.name
      "ManagedBy"          = "terraform"
    })
  }
}
