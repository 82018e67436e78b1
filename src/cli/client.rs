//! Building the `aws_sdk_batch::Client`: endpoint, region, credentials; and turning SDK errors
//! into messages a person can act on.

use std::error::Error as StdError;
use std::io::{self, Write};
use std::time::Duration;

use anyhow::anyhow;
use aws_config::environment::credentials::EnvironmentVariableCredentialsProvider;
use aws_config::meta::credentials::CredentialsProviderChain;
use aws_config::profile::ProfileFileCredentialsProvider;
use aws_config::provider_config::ProviderConfig;
use aws_config::retry::RetryConfig;
use aws_config::timeout::TimeoutConfig;
use aws_config::{BehaviorVersion, Region};
use aws_credential_types::provider::error::CredentialsError;
use aws_credential_types::provider::{ProvideCredentials, future};
use aws_sdk_batch::Client;
use aws_sdk_batch::config::Credentials;
use aws_sdk_batch::error::{ProvideErrorMetadata, SdkError};

use super::{Output, ResolvedGlobals};

pub const ACCESS_KEY_ENV: &str = "FLOTILLA_ACCESS_KEY_ID";
pub const SECRET_KEY_ENV: &str = "FLOTILLA_SECRET_ACCESS_KEY";
/// What a server without configured credentials accepts (on loopback it ignores signatures).
pub const FALLBACK_KEY: &str = "flotilla";

/// Everything a command needs to talk to the server and print the answer.
pub struct Ctx {
    pub client: Client,
    /// The CloudWatch Logs API, which the server answers on the same endpoint.
    pub logs: aws_sdk_cloudwatchlogs::Client,
    pub endpoint: String,
    pub profile: Option<String>,
    pub output: Output,
    /// What the SDK clients sign with, for requests made without them (`GET /events`).
    pub credentials: aws_credential_types::provider::SharedCredentialsProvider,
    pub region: String,
}

impl Ctx {
    pub async fn connect(globals: ResolvedGlobals) -> anyhow::Result<Ctx> {
        let credentials = aws_credential_types::provider::SharedCredentialsProvider::new(
            credentials_provider(&globals, |k| std::env::var(k).ok())?,
        );
        let mut loader = aws_config::defaults(BehaviorVersion::latest())
            // An explicit region keeps the loader from walking the default region chain, which
            // ends at the instance metadata service.
            .region(Region::new(globals.region.clone()))
            .endpoint_url(globals.endpoint_url.clone())
            .credentials_provider(credentials.clone())
            // A local server either answers at once or is not running; the SDK's defaults
            // (1 s initial backoff, no connect timeout) make "not running" slow to report.
            .retry_config(
                RetryConfig::standard()
                    .with_max_attempts(3)
                    .with_initial_backoff(Duration::from_millis(200)),
            )
            .timeout_config(
                TimeoutConfig::builder()
                    .connect_timeout(Duration::from_secs(5))
                    .build(),
            );
        if let Some(profile) = &globals.profile {
            loader = loader.profile_name(profile);
        }
        if let Some(path) = &globals.ca_bundle {
            loader = loader.http_client(https_client_trusting(path)?);
        }
        let config = loader.load().await;
        Ok(Ctx {
            client: Client::new(&config),
            logs: aws_sdk_cloudwatchlogs::Client::new(&config),
            endpoint: globals.endpoint_url,
            profile: globals.profile,
            output: globals.output,
            credentials,
            region: globals.region,
        })
    }

    /// Maps an SDK error to a one-line message: the service's `Code: message`, or a hint when the
    /// server could not be reached.
    pub fn api_error<E>(&self, err: SdkError<E>) -> anyhow::Error
    where
        E: ProvideErrorMetadata + StdError + Send + Sync + 'static,
    {
        api_error(err, &self.endpoint, self.profile.as_deref())
    }
}

/// An HTTP client that trusts only the certificate authorities in the PEM file at `path`, as
/// the AWS CLI does with `--ca-bundle`: for a server whose certificate a private CA signed.
fn https_client_trusting(
    path: &std::path::Path,
) -> anyhow::Result<aws_sdk_batch::config::SharedHttpClient> {
    use aws_smithy_http_client::tls::{self, rustls_provider::CryptoMode};
    use rustls_pki_types::{CertificateDer, pem::PemObject};
    let pem = std::fs::read(path).map_err(|e| anyhow!("--ca-bundle {}: {e}", path.display()))?;
    // The SDK's client skips what it cannot parse; say so here rather than fail every call
    // with an unknown-issuer error.
    let certs = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| anyhow!("--ca-bundle {}: {e}", path.display()))?;
    if certs.is_empty() {
        return Err(anyhow!(
            "--ca-bundle {}: no PEM CERTIFICATE in the file",
            path.display()
        ));
    }
    let trust = tls::TrustStore::empty().with_pem_certificate(pem);
    let context = tls::TlsContext::builder()
        .with_trust_store(trust)
        .build()
        .map_err(|e| anyhow!("--ca-bundle {}: {e}", path.display()))?;
    Ok(aws_smithy_http_client::Builder::new()
        .tls_provider(tls::Provider::Rustls(CryptoMode::AwsLc))
        .tls_context(context)
        .build_https())
}

/// Credentials in order of precedence:
/// 1. `FLOTILLA_ACCESS_KEY_ID` + `FLOTILLA_SECRET_ACCESS_KEY` (what the server itself reads);
/// 2. the standard environment variables (`AWS_ACCESS_KEY_ID`, …);
/// 3. the shared config and credentials files, for `--profile`/`AWS_PROFILE` or `default`;
/// 4. `flotilla`/`flotilla`, unless a profile was named: a named profile that cannot be loaded is
///    an error the user wants to see, not something to paper over.
///
/// The chain is spelled out instead of using the SDK's default one because that one ends with
/// the EC2 instance metadata service (IMDS) and the ECS container endpoint.
pub fn credentials_provider(
    globals: &ResolvedGlobals,
    env: impl Fn(&str) -> Option<String>,
) -> anyhow::Result<CredentialSource> {
    if let Some(creds) = flotilla_env_credentials(env)? {
        return Ok(CredentialSource::Static(creds));
    }
    let provider_config =
        ProviderConfig::without_region().with_region(Some(Region::new(globals.region.clone())));
    let mut profile = ProfileFileCredentialsProvider::builder()
        .configure(&provider_config)
        // A profile may say `credential_source = Ec2InstanceMetadata | EcsContainer`; those
        // providers would call link-local metadata endpoints, so they are replaced.
        .with_custom_provider(
            "Ec2InstanceMetadata",
            NoMetadataService("Ec2InstanceMetadata"),
        )
        .with_custom_provider("EcsContainer", NoMetadataService("EcsContainer"));
    if let Some(name) = &globals.profile {
        profile = profile.profile_name(name);
    }
    let mut chain = CredentialsProviderChain::first_try(
        "Environment",
        EnvironmentVariableCredentialsProvider::new(),
    )
    .or_else("Profile", profile.build());
    if globals.profile.is_none() {
        chain = chain.or_else(
            "FlotillaDefault",
            Credentials::new(FALLBACK_KEY, FALLBACK_KEY, None, None, "FlotillaDefault"),
        );
    }
    Ok(CredentialSource::Chain(chain))
}

/// Reads the `FLOTILLA_*` pair; one without the other is a mistake worth reporting.
pub fn flotilla_env_credentials(
    env: impl Fn(&str) -> Option<String>,
) -> anyhow::Result<Option<Credentials>> {
    let access = env(ACCESS_KEY_ENV).filter(|v| !v.is_empty());
    let secret = env(SECRET_KEY_ENV).filter(|v| !v.is_empty());
    match (access, secret) {
        (Some(access), Some(secret)) => Ok(Some(Credentials::new(
            access,
            secret,
            None,
            None,
            "FlotillaEnvironment",
        ))),
        (None, None) => Ok(None),
        (Some(_), None) => Err(anyhow!(
            "{ACCESS_KEY_ENV} is set but {SECRET_KEY_ENV} is not"
        )),
        (None, Some(_)) => Err(anyhow!(
            "{SECRET_KEY_ENV} is set but {ACCESS_KEY_ENV} is not"
        )),
    }
}

#[derive(Debug)]
pub enum CredentialSource {
    Static(Credentials),
    Chain(CredentialsProviderChain),
}

impl ProvideCredentials for CredentialSource {
    fn provide_credentials<'a>(&'a self) -> future::ProvideCredentials<'a>
    where
        Self: 'a,
    {
        match self {
            CredentialSource::Static(c) => c.provide_credentials(),
            CredentialSource::Chain(c) => c.provide_credentials(),
        }
    }
}

/// Stands in for a metadata-service credential source named by a profile.
#[derive(Debug)]
struct NoMetadataService(&'static str);

impl ProvideCredentials for NoMetadataService {
    fn provide_credentials<'a>(&'a self) -> future::ProvideCredentials<'a>
    where
        Self: 'a,
    {
        future::ProvideCredentials::ready(Err(CredentialsError::invalid_configuration(format!(
            "credential_source = {} is not supported by the flotilla CLI; \
             use FLOTILLA_ACCESS_KEY_ID/FLOTILLA_SECRET_ACCESS_KEY or static profile keys",
            self.0
        ))))
    }
}

/// A service error as the server sent it: `ClientException: jobQueue: ...`.
#[derive(Debug, thiserror::Error)]
#[error("{code}: {message}")]
pub struct ServiceError {
    pub code: String,
    pub message: String,
}

pub fn api_error<E>(err: SdkError<E>, endpoint: &str, profile: Option<&str>) -> anyhow::Error
where
    E: ProvideErrorMetadata + StdError + Send + Sync + 'static,
{
    match &err {
        SdkError::ServiceError(ctx) => {
            let meta = ctx.err();
            match meta.code() {
                Some(code) => ServiceError {
                    code: code.to_string(),
                    message: meta.message().unwrap_or("").to_string(),
                }
                .into(),
                None => anyhow!(
                    "HTTP {} from {endpoint} without an AWS error code: {}",
                    ctx.raw().status().as_u16(),
                    chain_text(&err)
                ),
            }
        }
        // Credentials are resolved while dispatching, so their failures arrive here.
        SdkError::DispatchFailure(_) if find_credentials_error(&err).is_some() => {
            let cause = find_credentials_error(&err)
                .map(chain_text)
                .unwrap_or_default();
            match profile {
                Some(name) => anyhow!(
                    "cannot load credentials for profile `{name}` from ~/.aws/config or \
                     ~/.aws/credentials: {cause}"
                ),
                None => anyhow!("cannot load credentials: {cause}"),
            }
        }
        SdkError::DispatchFailure(_) if is_connection_refused(&err) => anyhow!(
            "cannot connect to {endpoint}: connection refused; is the Flotilla server running \
             there? (start one with `flotilla server`, or point --endpoint-url / \
             FLOTILLA_ENDPOINT_URL at it)"
        ),
        SdkError::DispatchFailure(_) => {
            anyhow!("request to {endpoint} failed: {}", chain_text(&err))
        }
        SdkError::TimeoutError(_) => anyhow!("request to {endpoint} timed out"),
        SdkError::ResponseError(_) => anyhow!(
            "unreadable response from {endpoint} (is it a Flotilla server?): {}",
            chain_text(&err)
        ),
        _ => anyhow!("{}", chain_text(&err)),
    }
}

/// The error and its sources as `outer: inner: innermost`. The SDK's `DisplayErrorContext` would
/// append a `Debug` dump, which is too much for a command line.
fn chain_text(err: &(dyn StdError + 'static)) -> String {
    let mut parts: Vec<String> = Vec::new();
    let mut current: Option<&(dyn StdError + 'static)> = Some(err);
    while let Some(e) = current {
        let text = e.to_string();
        // Wrappers often repeat their source's text, or say nothing more than "other".
        if !text.is_empty() && text != "other" && !parts.iter().any(|p| p.contains(&text)) {
            parts.push(text);
        }
        current = e.source();
    }
    parts.join(": ")
}

fn find_credentials_error<'a>(
    err: &'a (dyn StdError + 'static),
) -> Option<&'a (dyn StdError + 'static)> {
    let mut current: Option<&(dyn StdError + 'static)> = Some(err);
    while let Some(e) = current {
        if e.is::<CredentialsError>() {
            return Some(e);
        }
        current = e.source();
    }
    None
}

fn is_connection_refused(err: &(dyn StdError + 'static)) -> bool {
    let mut current: Option<&(dyn StdError + 'static)> = Some(err);
    while let Some(e) = current {
        if let Some(io) = e.downcast_ref::<io::Error>()
            && io.kind() == io::ErrorKind::ConnectionRefused
        {
            return true;
        }
        current = e.source();
    }
    // hyper does not always keep the io::Error in the chain; its text is stable enough.
    chain_text(err).contains("Connection refused")
}

/// Writes to stdout; a closed pipe (`flotilla jobs list | head`) is not an error.
pub fn emit(text: &str) -> anyhow::Result<()> {
    let mut out = io::stdout().lock();
    match out.write_all(text.as_bytes()).and_then(|_| out.flush()) {
        Err(e) if e.kind() == io::ErrorKind::BrokenPipe => Ok(()),
        other => Ok(other?),
    }
}

pub fn emit_json(value: &serde_json::Value) -> anyhow::Result<()> {
    let mut text = serde_json::to_string_pretty(value)?;
    text.push('\n');
    emit(&text)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn env_of(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let map: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        move |k| map.get(k).cloned()
    }

    fn globals(profile: Option<&str>) -> ResolvedGlobals {
        ResolvedGlobals {
            endpoint_url: "http://127.0.0.1:8080".into(),
            region: "us-east-1".into(),
            profile: profile.map(str::to_string),
            output: Output::Table,
            ca_bundle: None,
        }
    }

    #[test]
    fn flotilla_variables_win() {
        let env = env_of(&[(ACCESS_KEY_ENV, "AK"), (SECRET_KEY_ENV, "SK")]);
        match credentials_provider(&globals(None), env).unwrap() {
            CredentialSource::Static(c) => {
                assert_eq!(c.access_key_id(), "AK");
                assert_eq!(c.secret_access_key(), "SK");
            }
            other => panic!("expected static credentials, got {other:?}"),
        }
    }

    #[test]
    fn half_a_flotilla_pair_is_an_error() {
        let err = flotilla_env_credentials(env_of(&[(ACCESS_KEY_ENV, "AK")])).unwrap_err();
        assert!(err.to_string().contains(SECRET_KEY_ENV), "{err}");
        assert!(flotilla_env_credentials(env_of(&[])).unwrap().is_none());
    }

    #[test]
    fn chain_has_no_metadata_service_and_falls_back_only_without_a_profile() {
        let unnamed = format!(
            "{:?}",
            credentials_provider(&globals(None), env_of(&[])).unwrap()
        );
        assert!(
            unnamed.contains("\"Environment\", \"Profile\", \"FlotillaDefault\""),
            "{unnamed}"
        );
        assert!(
            !unnamed.contains("Imds") && !unnamed.contains("Ecs"),
            "{unnamed}"
        );
        let named = format!(
            "{:?}",
            credentials_provider(&globals(Some("dev")), env_of(&[])).unwrap()
        );
        assert!(!named.contains("FlotillaDefault"), "{named}");
    }

    #[tokio::test]
    async fn metadata_sources_named_by_a_profile_are_refused() {
        let err = NoMetadataService("Ec2InstanceMetadata")
            .provide_credentials()
            .await
            .unwrap_err();
        assert!(chain_text(&err).contains("not supported"), "{err:?}");
    }

    #[test]
    fn service_errors_display_code_and_message() {
        let e = ServiceError {
            code: "ClientException".into(),
            message: "jobQueue: not found".into(),
        };
        assert_eq!(e.to_string(), "ClientException: jobQueue: not found");
    }

    #[test]
    fn error_chains_read_as_one_line() {
        #[derive(Debug, thiserror::Error)]
        #[error("dispatch failure")]
        struct Outer(#[source] Middle);
        #[derive(Debug, thiserror::Error)]
        #[error("other")]
        struct Middle(#[source] CredentialsError);
        let err = Outer(Middle(CredentialsError::not_loaded(
            "no profile named `dev`",
        )));
        let creds = find_credentials_error(&err).unwrap();
        assert_eq!(
            chain_text(creds),
            "the credential provider was not enabled: no profile named `dev`"
        );
        assert_eq!(
            chain_text(&err),
            "dispatch failure: the credential provider was not enabled: no profile named `dev`"
        );
    }

    #[test]
    fn refused_connections_are_recognised_through_the_source_chain() {
        #[derive(Debug, thiserror::Error)]
        #[error("connect failed")]
        struct Wrapper(#[source] io::Error);
        let refused = Wrapper(io::Error::from(io::ErrorKind::ConnectionRefused));
        assert!(is_connection_refused(&refused));
        let other = Wrapper(io::Error::from(io::ErrorKind::TimedOut));
        assert!(!is_connection_refused(&other));
    }
}
