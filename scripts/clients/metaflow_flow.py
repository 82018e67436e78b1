from metaflow import FlowSpec, step, batch
import os


class HelloFlotilla(FlowSpec):
    """Three steps on AWS Batch (Flotilla): a fan-out of two, then a join."""

    @step
    def start(self):
        self.items = ["a", "b"]
        self.next(self.work, foreach="items")

    @batch(
        image="flotilla-clients/python:latest",
        cpu=1,
        memory=512,
        shared_memory=256,
        host_volumes=["/tmp/flotilla-clients/shared"],
    )
    @step
    def work(self):
        import boto3
        shm = os.statvfs("/dev/shm")
        self.shm_mib = shm.f_blocks * shm.f_frsize // (1024 * 1024)
        self.identity = boto3.client(
            "sts", endpoint_url=os.environ["METAFLOW_S3_ENDPOINT_URL"]
        ).get_caller_identity()["Arn"]
        with open("/tmp/flotilla-clients/shared/%s.txt" % self.input, "w") as f:
            f.write("written by %s\n" % os.environ["AWS_BATCH_JOB_ID"])
        self.env = {k: os.environ.get(k) for k in (
            "AWS_BATCH_JOB_ID", "AWS_EXECUTION_ENV", "AWS_REGION",
            "ECS_CONTAINER_METADATA_URI_V4")}
        self.next(self.join)

    @step
    def join(self, inputs):
        self.results = [(i.input, i.shm_mib, i.identity, i.env) for i in inputs]
        self.next(self.end)

    @step
    def end(self):
        for r in self.results:
            print(r)


if __name__ == "__main__":
    HelloFlotilla()
