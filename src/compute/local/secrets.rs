//! `containerProperties.secrets` on the LOCAL runtimes: resolved from the secrets file in the data
//! directory and handed to the job as environment variables, as ECS injects them from SSM
//! Parameter Store and Secrets Manager.
//!
//! The file, `<data-dir>/secrets.json`, maps what a definition's `valueFrom` names to the value:
//!
//! ```json
//! {
//!   "arn:aws:ssm:us-east-1:123456789012:parameter/db/password": "hunter2",
//!   "/db/user": "app",
//!   "arn:aws:secretsmanager:us-east-1:123456789012:secret:db-AbCdEf": "{\"token\":\"t0k3n\"}"
//! }
//! ```
//!
//! A `valueFrom` is looked up as written; an SSM parameter ARN also by its parameter name (with
//! and without the leading `/`), and a bare name also with a leading `/`, because ECS accepts
//! either form for a parameter of the task's own region. A Secrets Manager `valueFrom` with a JSON
//! key (`arn:…:secret:NAME:json-key:version-stage:version-id`) takes that key of the secret's
//! JSON value; a version stage other than `AWSCURRENT` or a version id cannot be honoured from a
//! file and is refused. The file is read at each start of an attempt that has secrets, so an edit
//! takes effect for the next attempt without a restart; it lives in the `0700` data directory.
//!
//! An attempt whose secret cannot be resolved never starts: it ends with ECS's
//! `ResourceInitializationError: unable to pull secrets or registry auth: …` naming the secret,
//! before anything of the job runs, as a task whose secret cannot be fetched ends on ECS.

use super::never_started;
use crate::compute::{
    AttemptSpec, ExpectedAttempt, Runtime, RuntimeError, RuntimeEvent, StopSignal,
};
use crate::logs::LogStore;
use crate::model::container::ContainerSettings;
use serde_json::Value;
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use tokio::sync::mpsc;

/// File name of the secrets file in the data directory.
pub const SECRETS_FILE: &str = "secrets.json";

const REASON: &str = "ResourceInitializationError: unable to pull secrets or registry auth";

/// A LOCAL runtime that resolves an attempt's secrets before handing it on.
pub struct WithSecrets {
    inner: Arc<dyn Runtime>,
    file: PathBuf,
    logs: Arc<LogStore>,
    events: mpsc::Sender<RuntimeEvent>,
}

impl WithSecrets {
    pub fn new(
        inner: Arc<dyn Runtime>,
        data_dir: &std::path::Path,
        logs: Arc<LogStore>,
        events: mpsc::Sender<RuntimeEvent>,
    ) -> WithSecrets {
        WithSecrets {
            inner,
            file: data_dir.join(SECRETS_FILE),
            logs,
            events,
        }
    }

    /// `spec` with its secrets moved into its environment, or the attempt's reason.
    fn resolve(&self, mut spec: AttemptSpec) -> Result<AttemptSpec, String> {
        let settings = ContainerSettings::of("containerProperties", &spec.container)?;
        let secrets = settings.secrets.unwrap_or_default();
        if secrets.is_empty() {
            return Ok(spec);
        }
        let text = match std::fs::read_to_string(&self.file) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(format!(
                    "{REASON}: secret {} ({}): there is no {} to resolve secrets from on a LOCAL \
                     compute environment",
                    secrets[0].name,
                    secrets[0].value_from,
                    self.file.display()
                ));
            }
            Err(e) => {
                return Err(format!(
                    "{REASON}: cannot read {}: {e}",
                    self.file.display()
                ));
            }
        };
        let table: HashMap<String, String> = serde_json::from_str(&text).map_err(|e| {
            format!(
                "{REASON}: {} is not a JSON object of strings: {e}",
                self.file.display()
            )
        })?;
        for s in &secrets {
            let value = lookup(&table, &s.value_from)
                .map_err(|why| format!("{REASON}: secret {} ({}): {why}", s.name, s.value_from))?;
            // A secret wins over a plain variable of the same name, as on ECS.
            spec.env.retain(|(k, _)| k != &s.name);
            spec.env.push((s.name.clone(), value));
        }
        let mut container = (*spec.container).clone();
        container.other.remove("secrets");
        spec.container = Arc::new(container);
        Ok(spec)
    }
}

/// The value `value_from` names in `table`, or why there is none.
fn lookup(table: &HashMap<String, String>, value_from: &str) -> Result<String, String> {
    if let Some(v) = table.get(value_from) {
        return Ok(v.clone());
    }
    if let Some(rest) = value_from.strip_prefix("arn:") {
        // PARTITION:SERVICE:REGION:ACCOUNT:RESOURCE (the resource may hold colons).
        let parts: Vec<&str> = rest.splitn(5, ':').collect();
        if parts.len() == 5
            && parts[1] == "ssm"
            && let Some(name) = parts[4].strip_prefix("parameter")
        {
            for key in [name.to_string(), name.trim_start_matches('/').to_string()] {
                if let Some(v) = table.get(&key) {
                    return Ok(v.clone());
                }
            }
        }
        if parts.len() == 5 && parts[1] == "secretsmanager" {
            // arn:aws:secretsmanager:REGION:ACCOUNT:secret:NAME[:json-key[:stage[:version-id]]]
            let fields: Vec<&str> = value_from.split(':').collect();
            if fields.len() > 7 {
                let secret = fields[..7].join(":");
                let key = fields[7];
                let stage = fields.get(8).copied().unwrap_or("");
                let version = fields.get(9).copied().unwrap_or("");
                if !(stage.is_empty() || stage == "AWSCURRENT") || !version.is_empty() {
                    return Err(
                        "only the current version (AWSCURRENT) of a secret can be read from the \
                         secrets file"
                            .into(),
                    );
                }
                let Some(v) = table.get(&secret) else {
                    return Err(format!("{secret} is not in the secrets file"));
                };
                if key.is_empty() {
                    return Ok(v.clone());
                }
                let json: Value = serde_json::from_str(v)
                    .map_err(|_| format!("{secret} is not JSON, so it has no key {key}"))?;
                return match json.get(key) {
                    Some(Value::String(s)) => Ok(s.clone()),
                    Some(other) => Ok(other.to_string()),
                    None => Err(format!("{secret} has no JSON key {key}")),
                };
            }
        }
    } else if !value_from.starts_with('/')
        && let Some(v) = table.get(&format!("/{value_from}"))
    {
        return Ok(v.clone());
    }
    Err("it is not in the secrets file".into())
}

#[async_trait::async_trait]
impl Runtime for WithSecrets {
    fn name(&self) -> &'static str {
        self.inner.name()
    }

    async fn start(&self, spec: AttemptSpec) -> Result<(), RuntimeError> {
        // The common case costs a map lookup, not a parse and a copy of the spec.
        if !spec.container.other.contains_key("secrets") {
            return self.inner.start(spec).await;
        }
        match self.resolve(spec.clone()) {
            Ok(spec) => self.inner.start(spec).await,
            Err(reason) => {
                never_started(&self.logs, &self.events, &spec, reason);
                Ok(())
            }
        }
    }

    async fn stop(
        &self,
        job_id: &str,
        attempt: u32,
        signal: StopSignal,
    ) -> Result<(), RuntimeError> {
        self.inner.stop(job_id, attempt, signal).await
    }

    async fn recover(&self, expected: Vec<ExpectedAttempt>) -> Result<(), RuntimeError> {
        self.inner.recover(expected).await
    }

    fn end_stored(&self, job_id: &str, attempt: u32) {
        self.inner.end_stored(job_id, attempt)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table() -> HashMap<String, String> {
        HashMap::from([
            ("/db/password".to_string(), "pw".to_string()),
            ("plain".to_string(), "p".to_string()),
            (
                "arn:aws:secretsmanager:us-east-1:123456789012:secret:db-AbCdEf".to_string(),
                r#"{"token":"t0k3n","port":5432}"#.to_string(),
            ),
        ])
    }

    #[test]
    fn value_from_forms_resolve_as_ecs_accepts_them() {
        let t = table();
        let ok = |v: &str| lookup(&t, v).unwrap();
        assert_eq!(
            ok("arn:aws:ssm:us-east-1:123456789012:parameter/db/password"),
            "pw"
        );
        assert_eq!(ok("/db/password"), "pw");
        assert_eq!(ok("db/password"), "pw");
        assert_eq!(
            ok("arn:aws:ssm:us-east-1:123456789012:parameter/plain"),
            "p"
        );
        let secret = "arn:aws:secretsmanager:us-east-1:123456789012:secret:db-AbCdEf";
        assert_eq!(ok(secret), r#"{"token":"t0k3n","port":5432}"#);
        assert_eq!(ok(&format!("{secret}:token::")), "t0k3n");
        assert_eq!(ok(&format!("{secret}:port:AWSCURRENT:")), "5432");
        assert_eq!(
            ok(&format!("{secret}::")),
            r#"{"token":"t0k3n","port":5432}"#
        );
    }

    #[test]
    fn what_cannot_be_resolved_says_why() {
        let t = table();
        let err = |v: &str| lookup(&t, v).unwrap_err();
        assert!(err("/missing").contains("not in the secrets file"));
        let secret = "arn:aws:secretsmanager:us-east-1:123456789012:secret:db-AbCdEf";
        assert!(err(&format!("{secret}:nokey::")).contains("no JSON key nokey"));
        assert!(err(&format!("{secret}:token:AWSPREVIOUS:")).contains("AWSCURRENT"));
        assert!(err(&format!("{secret}:token::v1")).contains("AWSCURRENT"));
        assert!(
            err("arn:aws:secretsmanager:us-east-1:123456789012:secret:other-XyZ:k::")
                .contains("not in the secrets file")
        );
    }
}
