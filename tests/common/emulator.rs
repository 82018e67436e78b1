//! The AWS emulator (`localstack/harness`, moto plus Flotilla's ECS agent) as a child process
//! on a free loopback port, and its control API.

use serde_json::{Value, json};
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// moto's ECS-optimized Amazon Linux 2023 AMI in us-east-1.
pub const AMI: &str = "ami-05fb4f257abd42992";

/// The emulator's test credentials for a child process (a server with the AWS driver, the
/// bench), and no instance metadata service or profile files to look for.
pub fn with_test_credentials(cmd: &mut Command) -> &mut Command {
    cmd.env("AWS_ACCESS_KEY_ID", "testing")
        .env("AWS_SECRET_ACCESS_KEY", "testing")
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .env("AWS_CONFIG_FILE", "/dev/null")
        .env("AWS_SHARED_CREDENTIALS_FILE", "/dev/null")
}

pub struct Emulator {
    child: Child,
    pub endpoint: String,
    http: reqwest::Client,
}

impl Emulator {
    /// Starts `python3 -m flotilla_emulator --port 0`; fails (never skips) when moto is missing.
    pub fn start() -> Emulator {
        let harness = concat!(env!("CARGO_MANIFEST_DIR"), "/localstack/harness");
        let python = std::env::var("PYTHON").unwrap_or_else(|_| "python3".into());
        let mut child = Command::new(python)
            .args([
                "-m",
                "flotilla_emulator",
                "--port",
                "0",
                "--agent-interval",
                "0.1",
            ])
            .env("PYTHONPATH", harness)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start the AWS emulator (python3 -m flotilla_emulator)");
        let stdout = child.stdout.take().expect("stdout");
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut lines = BufReader::new(stdout).lines();
            while let Some(Ok(line)) = lines.next() {
                if let Ok(v) = serde_json::from_str::<Value>(&line)
                    && v["ready"] == true
                {
                    let _ = tx.send(v["endpoint"].as_str().unwrap_or_default().to_string());
                }
            }
        });
        let endpoint = match rx.recv_timeout(Duration::from_secs(90)) {
            Ok(e) => e,
            Err(_) => {
                let _ = child.kill();
                panic!(
                    "the AWS emulator did not start within 90 s: is moto installed? \
                     (pip install -r localstack/requirements.txt; scripts/test.sh does it)"
                );
            }
        };
        Emulator {
            child,
            endpoint,
            http: reqwest::Client::new(),
        }
    }

    async fn control(&self, method: reqwest::Method, path: &str, body: Value) -> Value {
        let url = format!("{}/_flotilla/{path}", self.endpoint);
        let resp = self
            .http
            .request(method, &url)
            .json(&body)
            .send()
            .await
            .expect("emulator control API");
        let status = resp.status();
        let v: Value = resp.json().await.unwrap_or(Value::Null);
        assert!(status.is_success(), "{url}: {status} {v}");
        v
    }

    /// Instances, container instances and tasks as the emulator holds them.
    pub async fn state(&self) -> Value {
        self.control(reqwest::Method::GET, "state", json!({})).await
    }

    /// Every CloudWatch metric datum put (PutMetricData), oldest first.
    pub async fn cloudwatch_metrics(&self) -> Vec<Value> {
        let v = self
            .control(reqwest::Method::GET, "cloudwatch", json!({}))
            .await;
        v["metrics"].as_array().cloned().unwrap_or_default()
    }

    /// Ends a RUNNING task as if its container exited with `exit_code`.
    pub async fn complete(&self, task_arn: &str, exit_code: i32) {
        let enc =
            percent_encoding::utf8_percent_encode(task_arn, percent_encoding::NON_ALPHANUMERIC);
        self.control(
            reqwest::Method::POST,
            &format!("tasks/{enc}/complete"),
            json!({ "exitCode": exit_code }),
        )
        .await;
    }

    /// A Spot interruption: EC2 terminates the instance, its tasks stop with the host-terminated
    /// reason.
    pub async fn interrupt(&self, instance_id: &str) {
        self.control(
            reqwest::Method::POST,
            &format!("instances/{instance_id}/interrupt"),
            json!({}),
        )
        .await;
    }

    /// A fault rule: `{"service": "ec2", "throttle": 0.05, "error": 0.05, "seed": 1}`.
    pub async fn fault(&self, rule: Value) {
        self.control(reqwest::Method::POST, "faults", rule).await;
    }

    /// Limits a capacity pool: CreateFleet launches at most `available` more instances of the
    /// type and lifecycle (`spot`, `on-demand`), then answers InsufficientInstanceCapacity.
    pub async fn capacity(&self, instance_type: &str, lifecycle: &str, available: u32) {
        self.control(
            reqwest::Method::POST,
            "capacity",
            json!({ "instanceType": instance_type, "lifecycle": lifecycle, "available": available }),
        )
        .await;
    }

    pub async fn clear_faults(&self) {
        self.control(reqwest::Method::DELETE, "faults", json!({}))
            .await;
    }
}

impl Drop for Emulator {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
