//! `containerProperties.secrets` (and `repositoryCredentials`, and ECR logins) on the LOCAL
//! runtimes: resolved as ECS resolves them, and handed to the job as environment variables.
//!
//! - **A server with AWS access** (`--aws`, `--aws-endpoint-url`) reads them from AWS with its own
//!   credentials, as the ECS agent does with the task execution role: an SSM parameter (name or
//!   ARN, decrypted) with `GetParameter`, a Secrets Manager secret (ARN, with the optional
//!   `:json-key:version-stage:version-id` suffix) with `GetSecretValue`, each in the region its
//!   ARN names (a bare name: the server's region). The secrets file is not read then.
//! - **Without AWS access** they come from the secrets file in the data directory.
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
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::mpsc;

/// File name of the secrets file in the data directory.
pub const SECRETS_FILE: &str = "secrets.json";

const REASON: &str = "ResourceInitializationError: unable to pull secrets or registry auth";

/// Where secrets come from: AWS with the server's credentials, or the secrets file.
pub struct SecretSource {
    file: PathBuf,
    aws: Option<Aws>,
}

struct Aws {
    sdk: aws_config::SdkConfig,
    region: String,
    ssm: Mutex<HashMap<String, aws_sdk_ssm::Client>>,
    secrets: Mutex<HashMap<String, aws_sdk_secretsmanager::Client>>,
    ecr: Mutex<HashMap<String, aws_sdk_ecr::Client>>,
    /// Region → its ECR login and when it was had (tokens last 12 hours).
    logins: Mutex<HashMap<String, (Instant, RegistryLogin)>>,
}

/// A registry's user name and password, for a pull.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RegistryLogin {
    pub username: String,
    pub password: String,
}

/// An ECR login is asked for again after this long (ECR's tokens last 12 hours).
const ECR_LOGIN_REUSE: Duration = Duration::from_secs(3600);

fn client_for<C: Clone>(
    cache: &Mutex<HashMap<String, C>>,
    region: &str,
    make: impl FnOnce() -> C,
) -> C {
    cache
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .entry(region.to_string())
        .or_insert_with(make)
        .clone()
}

/// AWS's error code and message, or what kept the call from an answer.
fn service_error<E, R>(e: aws_sdk_ssm::error::SdkError<E, R>) -> String
where
    E: aws_sdk_ssm::error::ProvideErrorMetadata + std::error::Error + 'static,
    R: std::fmt::Debug,
{
    match &e {
        aws_sdk_ssm::error::SdkError::ServiceError(s) => format!(
            "{}: {}",
            s.err().code().unwrap_or("ServiceError"),
            s.err().message().unwrap_or("no message")
        ),
        other => aws_sdk_ssm::error::DisplayErrorContext(other).to_string(),
    }
}

impl SecretSource {
    /// Secrets from AWS when `aws` (the server's AWS access) is given, else from the file in
    /// `data_dir`.
    pub fn new(data_dir: &std::path::Path, aws: Option<&aws_config::SdkConfig>) -> SecretSource {
        SecretSource {
            file: data_dir.join(SECRETS_FILE),
            aws: aws.map(|sdk| Aws {
                sdk: sdk.clone(),
                region: sdk
                    .region()
                    .map(|r| r.to_string())
                    .unwrap_or_else(|| "us-east-1".into()),
                ssm: Mutex::new(HashMap::new()),
                secrets: Mutex::new(HashMap::new()),
                ecr: Mutex::new(HashMap::new()),
                logins: Mutex::new(HashMap::new()),
            }),
        }
    }

    /// The file's table, or why there is none.
    fn table(&self, first: &str) -> Result<HashMap<String, String>, String> {
        let text = match std::fs::read_to_string(&self.file) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(format!(
                    "{first}: there is no {} to resolve it from, and the server has no AWS \
                     access to read it with (start it with --aws or --aws-endpoint-url)",
                    self.file.display()
                ));
            }
            Err(e) => return Err(format!("cannot read {}: {e}", self.file.display())),
        };
        serde_json::from_str(&text).map_err(|e| {
            format!(
                "{} is not a JSON object of strings: {e}",
                self.file.display()
            )
        })
    }

    /// The values of `secrets`, in order, or the attempt's reason.
    pub async fn resolve(
        &self,
        secrets: &[crate::model::container::Secret],
    ) -> Result<Vec<(String, String)>, String> {
        let mut out = Vec::with_capacity(secrets.len());
        let table = match &self.aws {
            Some(_) => None,
            None => Some(
                self.table(&format!(
                    "secret {} ({})",
                    secrets[0].name, secrets[0].value_from
                ))
                .map_err(|why| format!("{REASON}: {why}"))?,
            ),
        };
        for s in secrets {
            let value = match (&self.aws, &table) {
                (Some(aws), _) => aws.value(&s.value_from).await,
                (None, Some(t)) => lookup(t, &s.value_from),
                (None, None) => Err("no source of secrets".into()),
            }
            .map_err(|why| format!("{REASON}: secret {} ({}): {why}", s.name, s.value_from))?;
            out.push((s.name.clone(), value));
        }
        Ok(out)
    }

    /// The login for a pull of `image`: the definition's `repositoryCredentials`, or an ECR
    /// login for an ECR image on a server with AWS access; `Ok(None)`: pull anonymously.
    pub async fn registry_login(
        &self,
        image: &str,
        repository_credentials: Option<&str>,
    ) -> Result<Option<RegistryLogin>, String> {
        if let Some(parameter) = repository_credentials {
            let value = match &self.aws {
                Some(aws) => aws.value(parameter).await,
                None => self
                    .table(&format!("repositoryCredentials {parameter}"))
                    .and_then(|t| lookup(&t, parameter)),
            }
            .map_err(|why| {
                format!(
                    "containerProperties.repositoryCredentials.credentialsParameter \
                     {parameter}: {why}"
                )
            })?;
            let json: Value = serde_json::from_str(&value).map_err(|_| {
                format!(
                    "containerProperties.repositoryCredentials: the secret {parameter} is not the \
                     JSON {{\"username\": …, \"password\": …}} ECS expects"
                )
            })?;
            let field = |k: &str| json.get(k).and_then(Value::as_str).map(str::to_string);
            let (Some(username), Some(password)) = (field("username"), field("password")) else {
                return Err(format!(
                    "containerProperties.repositoryCredentials: the secret {parameter} has no \
                     string username and password"
                ));
            };
            return Ok(Some(RegistryLogin { username, password }));
        }
        let Some((_account, region)) = ecr_registry(image) else {
            return Ok(None);
        };
        match &self.aws {
            Some(aws) => aws.ecr_login(&region).await.map(Some),
            None => Err(format!(
                "{image} is in Amazon ECR, and this server has no AWS access to log in with \
                 (start it with --aws, or load the image with docker load)"
            )),
        }
    }
}

impl Aws {
    async fn value(&self, value_from: &str) -> Result<String, String> {
        let arn: Vec<&str> = value_from.splitn(6, ':').collect();
        let (service, region) = if arn.len() == 6 && arn[0] == "arn" {
            (arn[2], arn[3])
        } else {
            ("ssm", self.region.as_str())
        };
        match service {
            "ssm" => {
                let ssm = client_for(&self.ssm, region, || {
                    aws_sdk_ssm::Client::from_conf(
                        aws_sdk_ssm::config::Builder::from(&self.sdk)
                            .region(aws_sdk_ssm::config::Region::new(region.to_string()))
                            .build(),
                    )
                });
                let out = ssm
                    .get_parameter()
                    .name(value_from)
                    .with_decryption(true)
                    .send()
                    .await
                    .map_err(service_error)?;
                out.parameter
                    .and_then(|p| p.value)
                    .ok_or_else(|| "GetParameter returned no value".to_string())
            }
            "secretsmanager" => {
                // arn:PARTITION:secretsmanager:REGION:ACCOUNT:secret:NAME[:key[:stage[:version]]]
                let fields: Vec<&str> = value_from.split(':').collect();
                let id = fields[..fields.len().min(7)].join(":");
                let field = |i: usize| fields.get(i).copied().filter(|f| !f.is_empty());
                let sm = client_for(&self.secrets, region, || {
                    aws_sdk_secretsmanager::Client::from_conf(
                        aws_sdk_secretsmanager::config::Builder::from(&self.sdk)
                            .region(aws_sdk_secretsmanager::config::Region::new(
                                region.to_string(),
                            ))
                            .build(),
                    )
                });
                let out = sm
                    .get_secret_value()
                    .secret_id(&id)
                    .set_version_stage(field(8).map(str::to_string))
                    .set_version_id(field(9).map(str::to_string))
                    .send()
                    .await
                    .map_err(service_error)?;
                let Some(text) = out.secret_string else {
                    return Err(format!(
                        "{id} is a binary secret; ECS injects only string secrets"
                    ));
                };
                match field(7) {
                    None => Ok(text),
                    Some(key) => json_key(&id, &text, key),
                }
            }
            other => Err(format!(
                "{other} is neither SSM Parameter Store nor Secrets Manager"
            )),
        }
    }

    async fn ecr_login(&self, region: &str) -> Result<RegistryLogin, String> {
        let key = region.to_string();
        if let Some((at, login)) = self
            .logins
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&key)
            && at.elapsed() < ECR_LOGIN_REUSE
        {
            return Ok(login.clone());
        }
        let ecr = client_for(&self.ecr, region, || {
            aws_sdk_ecr::Client::from_conf(
                aws_sdk_ecr::config::Builder::from(&self.sdk)
                    .region(aws_sdk_ecr::config::Region::new(region.to_string()))
                    .build(),
            )
        });
        // The token opens every registry the identity may read (ECR deprecated asking for one).
        let out = ecr
            .get_authorization_token()
            .send()
            .await
            .map_err(|e| format!("ECR GetAuthorizationToken: {}", service_error(e)))?;
        let token = out
            .authorization_data
            .unwrap_or_default()
            .into_iter()
            .find_map(|d| d.authorization_token)
            .ok_or_else(|| "ECR GetAuthorizationToken returned no token".to_string())?;
        let login = decode_ecr_token(&token)?;
        self.logins
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(key, (Instant::now(), login.clone()));
        Ok(login)
    }
}

/// `ACCOUNT.dkr.ecr[-fips].REGION.amazonaws.com[.cn]/…` → (ACCOUNT, REGION).
pub fn ecr_registry(image: &str) -> Option<(String, String)> {
    let host = image.split('/').next()?;
    let labels: Vec<&str> = host.split('.').collect();
    if labels.len() < 6
        || labels[0].len() != 12
        || !labels[0].bytes().all(|b| b.is_ascii_digit())
        || labels[1] != "dkr"
        || !(labels[2] == "ecr" || labels[2] == "ecr-fips")
        || labels[4] != "amazonaws"
        || labels[5] != "com"
    {
        return None;
    }
    Some((labels[0].to_string(), labels[3].to_string()))
}

/// An ECR authorization token is base64 of `AWS:PASSWORD`.
fn decode_ecr_token(token: &str) -> Result<RegistryLogin, String> {
    use base64::Engine;
    let raw = base64::engine::general_purpose::STANDARD
        .decode(token.trim())
        .map_err(|_| "ECR returned a token that is not base64".to_string())?;
    let text = String::from_utf8(raw).map_err(|_| "ECR returned a token that is not text")?;
    let (username, password) = text
        .split_once(':')
        .ok_or_else(|| "ECR returned a token that is not USER:PASSWORD".to_string())?;
    Ok(RegistryLogin {
        username: username.to_string(),
        password: password.to_string(),
    })
}

fn json_key(secret: &str, text: &str, key: &str) -> Result<String, String> {
    let json: Value = serde_json::from_str(text)
        .map_err(|_| format!("{secret} is not JSON, so it has no key {key}"))?;
    match json.get(key) {
        Some(Value::String(s)) => Ok(s.clone()),
        Some(other) => Ok(other.to_string()),
        None => Err(format!("{secret} has no JSON key {key}")),
    }
}

/// A LOCAL runtime that resolves an attempt's secrets before handing it on.
pub struct WithSecrets {
    inner: Arc<dyn Runtime>,
    source: Arc<SecretSource>,
    logs: Arc<LogStore>,
    events: mpsc::Sender<RuntimeEvent>,
}

impl WithSecrets {
    pub fn new(
        inner: Arc<dyn Runtime>,
        source: Arc<SecretSource>,
        logs: Arc<LogStore>,
        events: mpsc::Sender<RuntimeEvent>,
    ) -> WithSecrets {
        WithSecrets {
            inner,
            source,
            logs,
            events,
        }
    }

    /// `spec` with its secrets moved into its environment, or the attempt's reason.
    async fn resolve(&self, mut spec: AttemptSpec) -> Result<AttemptSpec, String> {
        let settings = ContainerSettings::of("containerProperties", &spec.container)?;
        let secrets = settings.secrets.unwrap_or_default();
        if secrets.is_empty() {
            return Ok(spec);
        }
        for (name, value) in self.source.resolve(&secrets).await? {
            // A secret wins over a plain variable of the same name, as on ECS.
            spec.env.retain(|(k, _)| k != &name);
            spec.env.push((name, value));
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
                return json_key(&secret, v, key);
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
        match self.resolve(spec.clone()).await {
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
    fn ecr_images_are_recognised_and_their_tokens_decoded() {
        assert_eq!(
            ecr_registry("123456789012.dkr.ecr.eu-west-1.amazonaws.com/app:1"),
            Some(("123456789012".into(), "eu-west-1".into()))
        );
        assert_eq!(
            ecr_registry("123456789012.dkr.ecr-fips.us-east-1.amazonaws.com/app"),
            Some(("123456789012".into(), "us-east-1".into()))
        );
        assert_eq!(ecr_registry("busybox:latest"), None);
        assert_eq!(ecr_registry("public.ecr.aws/docker/library/busybox"), None);
        assert_eq!(
            ecr_registry("12345.dkr.ecr.us-east-1.amazonaws.com/x"),
            None
        );
        use base64::Engine;
        let token = base64::engine::general_purpose::STANDARD.encode("AWS:s3cr3t:with:colons");
        assert_eq!(
            decode_ecr_token(&token).unwrap(),
            RegistryLogin {
                username: "AWS".into(),
                password: "s3cr3t:with:colons".into()
            }
        );
        assert!(decode_ecr_token("not base64!").is_err());
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
