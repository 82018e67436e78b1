//! The AWS CLI (`aws batch …`) against a real server: botocore's serializers, paginators and
//! SigV4 signer, end to end.
//!
//! Set `FLOTILLA_AWSCLI_TRANSCRIPT=<file>` to write the session (commands and trimmed outputs)
//! as Markdown; `docs/awscli-session.md` was made that way.

mod common;

use common::*;
use serde_json::Value;
use std::process::Command;

struct Cli {
    endpoint: String,
    /// Empty config and credentials files, so nothing from ~/.aws leaks in.
    home: tempfile::TempDir,
    transcript: Vec<(String, String)>,
}

fn quote(a: &str) -> String {
    if !a.is_empty()
        && a.chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_=,.:/@".contains(c))
    {
        a.to_string()
    } else {
        format!("'{}'", a.replace('\'', r"'\''"))
    }
}

fn trim(out: &str) -> String {
    const MAX_LINES: usize = 40;
    let lines: Vec<&str> = out.trim_end().lines().collect();
    if lines.len() <= MAX_LINES {
        lines.join("\n")
    } else {
        format!(
            "{}\n… ({} more lines)",
            lines[..MAX_LINES].join("\n"),
            lines.len() - MAX_LINES
        )
    }
}

impl Cli {
    fn new(server: &Server) -> Cli {
        let home = tempfile::tempdir().unwrap();
        std::fs::write(home.path().join("config"), "").unwrap();
        std::fs::write(home.path().join("credentials"), "").unwrap();
        Cli {
            endpoint: server.endpoint.clone(),
            home,
            transcript: Vec::new(),
        }
    }

    fn command(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new("aws");
        cmd.arg("batch")
            .args(args)
            .args([
                "--endpoint-url",
                &self.endpoint,
                "--region",
                "us-east-1",
                "--output",
                "json",
            ])
            .env("AWS_ACCESS_KEY_ID", ACCESS_KEY)
            .env("AWS_SECRET_ACCESS_KEY", SECRET_KEY)
            .env("AWS_CONFIG_FILE", self.home.path().join("config"))
            .env(
                "AWS_SHARED_CREDENTIALS_FILE",
                self.home.path().join("credentials"),
            )
            .env("AWS_EC2_METADATA_DISABLED", "true")
            .env("AWS_PAGER", "")
            .env("HOME", self.home.path());
        for v in [
            "AWS_PROFILE",
            "AWS_DEFAULT_PROFILE",
            "AWS_SESSION_TOKEN",
            "AWS_SECURITY_TOKEN",
            "AWS_DEFAULT_REGION",
            "AWS_REGION",
            "AWS_ENDPOINT_URL",
            "AWS_ENDPOINT_URL_BATCH",
            "AWS_ROLE_ARN",
            "AWS_WEB_IDENTITY_TOKEN_FILE",
        ] {
            cmd.env_remove(v);
        }
        cmd
    }

    fn record(&mut self, args: &[&str], out: &str) {
        let line = args.iter().map(|a| quote(a)).collect::<Vec<_>>().join(" ");
        self.transcript.push((
            format!(
                "aws batch {line} --endpoint-url {} --region us-east-1 --output json",
                self.endpoint
            ),
            trim(out),
        ));
    }

    /// Runs `aws batch <args>`, asserts success and returns the parsed JSON (`Null` if empty).
    #[track_caller]
    fn ok(&mut self, args: &[&str]) -> Value {
        let out = self
            .command(args)
            .output()
            .expect("run the AWS CLI: `aws` must be on PATH (scripts/test.sh installs it)");
        let stdout = String::from_utf8_lossy(&out.stdout).to_string();
        let stderr = String::from_utf8_lossy(&out.stderr).to_string();
        assert!(
            out.status.success(),
            "aws batch {args:?} failed ({}):\n{stderr}\n{stdout}",
            out.status
        );
        self.record(args, &stdout);
        if stdout.trim().is_empty() {
            Value::Null
        } else {
            serde_json::from_str(&stdout)
                .unwrap_or_else(|e| panic!("aws batch {args:?} printed non-JSON ({e}): {stdout}"))
        }
    }

    /// Runs `aws batch <args>`, asserts failure and returns stderr.
    #[track_caller]
    fn fails(&mut self, args: &[&str]) -> String {
        let out = self.command(args).output().expect("run the AWS CLI");
        let stderr = String::from_utf8_lossy(&out.stderr).to_string();
        assert!(
            !out.status.success(),
            "aws batch {args:?} should have failed"
        );
        self.record(
            args,
            &format!(
                "(exit {})\n{}",
                out.status.code().unwrap_or(-1),
                stderr.trim()
            ),
        );
        stderr
    }

    fn write_transcript(&self) {
        let Ok(path) = std::env::var("FLOTILLA_AWSCLI_TRANSCRIPT") else {
            return;
        };
        let mut md = String::new();
        for (cmd, out) in &self.transcript {
            md.push_str(&format!("```console\n$ {cmd}\n```\n\n"));
            if !out.is_empty() {
                let lang = if out.starts_with("(exit") {
                    "text"
                } else {
                    "json"
                };
                md.push_str(&format!("```{lang}\n{out}\n```\n\n"));
            }
        }
        std::fs::write(&path, md).expect("write transcript");
    }
}

fn str_at<'a>(v: &'a Value, pointer: &str) -> &'a str {
    v.pointer(pointer)
        .and_then(Value::as_str)
        .unwrap_or_else(|| panic!("no string at {pointer} in {v}"))
}

fn job_ids(v: &Value) -> Vec<String> {
    v["jobSummaryList"]
        .as_array()
        .unwrap_or_else(|| panic!("no jobSummaryList in {v}"))
        .iter()
        .map(|s| s["jobId"].as_str().unwrap().to_string())
        .collect()
}

#[test]
fn aws_cli_session() {
    let server = Server::start();
    let mut cli = Cli::new(&server);
    let arn = "arn:aws:batch:us-east-1:000000000000";

    // Compute environment, queue, job definition.
    let out = cli.ok(&[
        "create-compute-environment",
        "--compute-environment-name",
        "cli-ce",
        "--type",
        "MANAGED",
        // DISABLED so the jobs below stay queued while the session inspects them.
        "--state",
        "DISABLED",
        // botocore requires `subnets` in computeResources; a LOCAL environment has none.
        "--compute-resources",
        "type=LOCAL,maxvCpus=2,subnets=[]",
    ]);
    assert_eq!(
        str_at(&out, "/computeEnvironmentArn"),
        format!("{arn}:compute-environment/cli-ce")
    );
    let out = cli.ok(&[
        "describe-compute-environments",
        "--compute-environments",
        "cli-ce",
    ]);
    assert_eq!(str_at(&out, "/computeEnvironments/0/status"), "VALID");
    assert_eq!(str_at(&out, "/computeEnvironments/0/state"), "DISABLED");
    assert_eq!(
        str_at(&out, "/computeEnvironments/0/computeResources/type"),
        "LOCAL"
    );
    assert_eq!(
        out["computeEnvironments"][0]["computeResources"]["maxvCpus"],
        2
    );

    let out = cli.ok(&[
        "create-job-queue",
        "--job-queue-name",
        "cli-q",
        "--priority",
        "10",
        "--compute-environment-order",
        "order=1,computeEnvironment=cli-ce",
    ]);
    let queue_arn = str_at(&out, "/jobQueueArn").to_string();
    assert_eq!(queue_arn, format!("{arn}:job-queue/cli-q"));

    let out = cli.ok(&[
        "register-job-definition",
        "--job-definition-name", "cli-jd",
        "--type", "container",
        "--parameters", "msg=hello",
        "--container-properties",
        r#"{"image":"busybox","command":["echo","Ref::msg"],"resourceRequirements":[{"type":"VCPU","value":"1"},{"type":"MEMORY","value":"64"}]}"#,
    ]);
    assert_eq!(out["revision"], 1);
    assert_eq!(
        str_at(&out, "/jobDefinitionArn"),
        format!("{arn}:job-definition/cli-jd:1")
    );

    // Jobs: plain and array.
    let out = cli.ok(&[
        "submit-job",
        "--job-name",
        "hello",
        "--job-queue",
        "cli-q",
        "--job-definition",
        "cli-jd",
        "--parameters",
        "msg=bonjour",
    ]);
    let hello = str_at(&out, "/jobId").to_string();
    assert_eq!(str_at(&out, "/jobArn"), format!("{arn}:job/{hello}"));
    let out = cli.ok(&[
        "submit-job",
        "--job-name",
        "fanout",
        "--job-queue",
        "cli-q",
        "--job-definition",
        "cli-jd:1",
        "--array-properties",
        "size=3",
    ]);
    let parent = str_at(&out, "/jobId").to_string();

    let out = cli.ok(&["describe-jobs", "--jobs", &hello, &parent]);
    assert_eq!(str_at(&out, "/jobs/0/jobId"), hello);
    assert_eq!(str_at(&out, "/jobs/0/status"), "RUNNABLE");
    assert_eq!(
        out["jobs"][0]["container"]["command"],
        serde_json::json!(["echo", "bonjour"])
    );
    assert_eq!(str_at(&out, "/jobs/1/status"), "PENDING");
    assert_eq!(out["jobs"][1]["arrayProperties"]["size"], 3);
    assert_eq!(
        out["jobs"][1]["arrayProperties"]["statusSummary"]["RUNNABLE"],
        3
    );

    // ListJobs: default RUNNING only, by status, with a filter, array children.
    let out = cli.ok(&["list-jobs", "--job-queue", "cli-q"]);
    assert!(job_ids(&out).is_empty(), "{out}");
    let out = cli.ok(&[
        "list-jobs",
        "--job-queue",
        "cli-q",
        "--job-status",
        "RUNNABLE",
    ]);
    assert_eq!(job_ids(&out), vec![hello.clone()]);
    let out = cli.ok(&[
        "list-jobs",
        "--job-queue",
        "cli-q",
        "--job-status",
        "PENDING",
    ]);
    assert_eq!(job_ids(&out), vec![parent.clone()]);
    let out = cli.ok(&[
        "list-jobs",
        "--job-queue",
        "cli-q",
        "--filters",
        "name=JOB_NAME,values=fan*",
    ]);
    assert_eq!(job_ids(&out), vec![parent.clone()]);
    let out = cli.ok(&[
        "list-jobs",
        "--array-job-id",
        &parent,
        "--job-status",
        "RUNNABLE",
    ]);
    assert_eq!(
        job_ids(&out),
        (0..3).map(|i| format!("{parent}:{i}")).collect::<Vec<_>>()
    );
    // The CLI's paginator follows nextToken across pages.
    let out = cli.ok(&[
        "list-jobs",
        "--array-job-id",
        &parent,
        "--job-status",
        "RUNNABLE",
        "--page-size",
        "2",
    ]);
    assert_eq!(job_ids(&out).len(), 3);

    let out = cli.ok(&["get-job-queue-snapshot", "--job-queue", "cli-q"]);
    let front: Vec<&str> = out["frontOfQueue"]["jobs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|j| j["jobArn"].as_str().unwrap())
        .collect();
    assert_eq!(
        front.first().copied(),
        Some(format!("{arn}:job/{hello}").as_str())
    );
    assert_eq!(
        front.len(),
        4,
        "the plain job and the three children are RUNNABLE: {out}"
    );

    // Cancel and terminate.
    cli.ok(&[
        "cancel-job",
        "--job-id",
        &hello,
        "--reason",
        "cancelled from the CLI",
    ]);
    cli.ok(&[
        "terminate-job",
        "--job-id",
        &parent,
        "--reason",
        "terminated from the CLI",
    ]);
    let out = cli.ok(&[
        "describe-jobs",
        "--jobs",
        &hello,
        &parent,
        &format!("{parent}:1"),
    ]);
    assert_eq!(str_at(&out, "/jobs/0/status"), "FAILED");
    assert_eq!(
        str_at(&out, "/jobs/0/statusReason"),
        "cancelled from the CLI"
    );
    assert_eq!(out["jobs"][0]["isCancelled"], true);
    assert_eq!(str_at(&out, "/jobs/1/status"), "FAILED");
    assert_eq!(
        str_at(&out, "/jobs/1/statusReason"),
        "terminated from the CLI"
    );
    assert_eq!(str_at(&out, "/jobs/2/status"), "FAILED");
    let out = cli.ok(&[
        "list-jobs",
        "--job-queue",
        "cli-q",
        "--job-status",
        "FAILED",
    ]);
    assert_eq!(job_ids(&out).len(), 2);

    // Tags (GET/POST/DELETE /v1/tags/{arn}).
    cli.ok(&[
        "tag-resource",
        "--resource-arn",
        &queue_arn,
        "--tags",
        "team=data,env=test",
    ]);
    let out = cli.ok(&["list-tags-for-resource", "--resource-arn", &queue_arn]);
    assert_eq!(
        out["tags"],
        serde_json::json!({"team": "data", "env": "test"})
    );
    cli.ok(&[
        "untag-resource",
        "--resource-arn",
        &queue_arn,
        "--tag-keys",
        "env",
    ]);
    let out = cli.ok(&["list-tags-for-resource", "--resource-arn", &queue_arn]);
    assert_eq!(out["tags"], serde_json::json!({"team": "data"}));
    let job_arn = format!("{arn}:job/{hello}");
    cli.ok(&[
        "tag-resource",
        "--resource-arn",
        &job_arn,
        "--tags",
        "run=1",
    ]);
    let out = cli.ok(&["list-tags-for-resource", "--resource-arn", &job_arn]);
    assert_eq!(out["tags"], serde_json::json!({"run": "1"}));

    // Scheduling policies.
    let out = cli.ok(&[
        "create-scheduling-policy",
        "--name", "cli-fair",
        "--fairshare-policy",
        "shareDecaySeconds=3600,computeReservation=10,shareDistribution=[{shareIdentifier=teamA,weightFactor=0.5}]",
    ]);
    let policy_arn = str_at(&out, "/arn").to_string();
    assert_eq!(policy_arn, format!("{arn}:scheduling-policy/cli-fair"));
    let out = cli.ok(&["describe-scheduling-policies", "--arns", &policy_arn]);
    assert_eq!(
        out["schedulingPolicies"][0]["fairsharePolicy"]["shareDecaySeconds"],
        3600
    );
    assert_eq!(
        str_at(
            &out,
            "/schedulingPolicies/0/fairsharePolicy/shareDistribution/0/shareIdentifier"
        ),
        "teamA"
    );
    let out = cli.ok(&["list-scheduling-policies"]);
    assert_eq!(
        out["schedulingPolicies"],
        serde_json::json!([{ "arn": policy_arn }])
    );
    cli.ok(&["delete-scheduling-policy", "--arn", &policy_arn]);
    let out = cli.ok(&["list-scheduling-policies"]);
    assert_eq!(out["schedulingPolicies"], serde_json::json!([]));

    // Queue update and delete.
    cli.ok(&[
        "update-job-queue",
        "--job-queue",
        "cli-q",
        "--priority",
        "20",
    ]);
    let out = cli.ok(&["describe-job-queues", "--job-queues", "cli-q"]);
    assert_eq!(out["jobQueues"][0]["priority"], 20);
    let err = cli.fails(&["delete-job-queue", "--job-queue", "cli-q"]);
    assert!(
        err.contains("ClientException") && err.contains("DISABLED"),
        "{err}"
    );
    cli.ok(&[
        "update-job-queue",
        "--job-queue",
        "cli-q",
        "--state",
        "DISABLED",
    ]);
    let err = cli.fails(&[
        "submit-job",
        "--job-name",
        "late",
        "--job-queue",
        "cli-q",
        "--job-definition",
        "cli-jd",
    ]);
    assert!(
        err.contains("ClientException") && err.contains("jobQueue"),
        "{err}"
    );
    cli.ok(&["delete-job-queue", "--job-queue", "cli-q"]);
    let out = cli.ok(&["describe-job-queues", "--job-queues", "cli-q"]);
    assert_eq!(out["jobQueues"], serde_json::json!([]));

    // Job definition revisions.
    cli.ok(&["deregister-job-definition", "--job-definition", "cli-jd:1"]);
    let out = cli.ok(&[
        "describe-job-definitions",
        "--job-definition-name",
        "cli-jd",
    ]);
    assert_eq!(str_at(&out, "/jobDefinitions/0/status"), "INACTIVE");
    let out = cli.ok(&[
        "describe-job-definitions",
        "--job-definition-name",
        "cli-jd",
        "--status",
        "ACTIVE",
    ]);
    assert_eq!(out["jobDefinitions"], serde_json::json!([]));

    // Compute environment: disable, delete.
    cli.ok(&[
        "update-compute-environment",
        "--compute-environment",
        "cli-ce",
        "--state",
        "DISABLED",
    ]);
    cli.ok(&[
        "delete-compute-environment",
        "--compute-environment",
        "cli-ce",
    ]);
    let out = cli.ok(&["describe-compute-environments"]);
    let names: Vec<&str> = out["computeEnvironments"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["computeEnvironmentName"].as_str().unwrap())
        .collect();
    assert_eq!(names, vec!["local"]);

    cli.write_transcript();
}

#[test]
fn aws_cli_with_the_wrong_secret_is_refused() {
    let server = Server::start();
    let cli = Cli::new(&server);
    let out = cli
        .command(&["describe-job-queues"])
        .env("AWS_SECRET_ACCESS_KEY", "wrong")
        .output()
        .expect("run the AWS CLI");
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("InvalidSignatureException"), "{stderr}");
}
