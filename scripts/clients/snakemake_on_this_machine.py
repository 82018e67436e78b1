"""Runs Snakemake with its AWS Batch executor plugin, changed in two ways for this machine:

- its job definitions always ask for `privileged: true`, which this machine's Docker engine
  cannot start (runc: "unable to apply caps: operation not permitted"): the member is dropped;
- its jobs `pip install` the S3 storage plugin from PyPI before they run, and nothing here may
  reach PyPI from a job: the image already has the plugin, so that step is turned off.
"""
import dataclasses
import sys

import snakemake_executor_plugin_aws_batch as plugin
from snakemake_executor_plugin_aws_batch import batch_client

plugin.common_settings = dataclasses.replace(
    plugin.common_settings, auto_deploy_default_storage_provider=False
)

_register = batch_client.BatchClient.register_job_definition


def register_job_definition(self, **kwargs):
    kwargs["containerProperties"].pop("privileged", None)
    return _register(self, **kwargs)


batch_client.BatchClient.register_job_definition = register_job_definition

from snakemake.cli import main  # noqa: E402

sys.exit(main())
