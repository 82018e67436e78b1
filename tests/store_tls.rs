//! PostgreSQL over TLS: the store honours `sslmode` and `sslrootcert` in its URL.
//!
//! `scripts/pg.sh` serves TLS with a certificate for 127.0.0.1 signed by a throwaway CA
//! (`FLOTILLA_TEST_POSTGRES_CA`), and admits the role `flotilla_tls` over TLS only: a store that
//! works as that role has an encrypted connection, and the plain-text control shows the rule
//! bites.

mod common;

use flotilla::store::{SqlStore, Store};
use sqlx::Connection;
use std::path::{Path, PathBuf};
use std::process::Command;

const TLS_USER: &str = "flotilla_tls";

fn test_ca() -> PathBuf {
    let ca = std::env::var("FLOTILLA_TEST_POSTGRES_CA").expect(
        "FLOTILLA_TEST_POSTGRES_CA is not set: run the suite with scripts/test.sh, or \
         `export FLOTILLA_TEST_POSTGRES_CA=$(bash scripts/pg.sh ca)`",
    );
    let ca = PathBuf::from(ca);
    assert!(ca.is_file(), "{} is not a file", ca.display());
    ca
}

/// A schema of its own, dropped at the end, and URLs into it as the TLS-only role.
struct Schema {
    admin_url: String,
    name: String,
}

impl Schema {
    async fn new() -> Schema {
        let admin_url = common::postgres_url();
        let name = format!("t_{}", uuid::Uuid::new_v4().simple());
        let mut conn = sqlx::PgConnection::connect(&admin_url)
            .await
            .expect("connect as the admin role");
        sqlx::raw_sql(sqlx::AssertSqlSafe(format!("CREATE SCHEMA {name}")))
            .execute(&mut conn)
            .await
            .expect("create schema");
        conn.close().await.ok();
        Schema { admin_url, name }
    }

    /// The test URL with `TLS_USER` (trust auth, no password) and `params` appended.
    fn url(&self, params: &str) -> String {
        let (scheme, rest) = self.admin_url.split_once("://").expect("a URL");
        let host = rest.split_once('@').map_or(rest, |(_, h)| h);
        let host = host.split_once('?').map_or(host, |(h, _)| h);
        format!(
            "{scheme}://{TLS_USER}@{host}?options=-c%20search_path%3D{}&{params}",
            self.name
        )
    }

    async fn drop_schema(self) {
        let mut conn = sqlx::PgConnection::connect(&self.admin_url)
            .await
            .expect("connect as the admin role");
        sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
            "DROP SCHEMA IF EXISTS {} CASCADE",
            self.name
        )))
        .execute(&mut conn)
        .await
        .expect("drop schema");
    }
}

fn encode(path: &Path) -> String {
    percent_encoding::utf8_percent_encode(
        &path.display().to_string(),
        percent_encoding::NON_ALPHANUMERIC,
    )
    .to_string()
}

/// A CA of its own that signed nothing the server has.
fn other_ca(dir: &Path) -> PathBuf {
    let ca = dir.join("other-ca.crt");
    let out = Command::new("openssl")
        .args(["req", "-x509", "-newkey", "ec", "-pkeyopt"])
        .arg("ec_paramgen_curve:prime256v1")
        .args(["-nodes", "-days", "1", "-subj", "/CN=Not the test CA"])
        .arg("-keyout")
        .arg(dir.join("other-ca.key"))
        .arg("-out")
        .arg(&ca)
        .output()
        .expect("run openssl");
    assert!(out.status.success(), "openssl: {out:?}");
    ca
}

async fn round_trip(store: &SqlStore) {
    store
        .set_meta("tls-probe", "over tls")
        .await
        .expect("write");
    assert_eq!(
        store.get_meta("tls-probe").await.expect("read").as_deref(),
        Some("over tls")
    );
}

#[tokio::test]
async fn verify_full_with_the_servers_ca_opens_an_encrypted_store() {
    let schema = Schema::new().await;
    let url = schema.url(&format!(
        "sslmode=verify-full&sslrootcert={}",
        encode(&test_ca())
    ));
    let store = SqlStore::open(&url).await.expect("open over verify-full");
    round_trip(&store).await;
    store.close().await;
    schema.drop_schema().await;
}

#[tokio::test]
async fn the_tls_only_role_is_refused_in_plain_text() {
    // The control for the test above: without TLS the same role cannot connect at all.
    let schema = Schema::new().await;
    let err = SqlStore::open(&schema.url("sslmode=disable"))
        .await
        .err()
        .expect("a plain connection as the TLS-only role must be refused");
    let text = err.to_string();
    assert!(text.contains("no encryption"), "{text}");
    schema.drop_schema().await;
}

#[tokio::test]
async fn require_encrypts_without_checking_the_certificate() {
    let schema = Schema::new().await;
    let store = SqlStore::open(&schema.url("sslmode=require"))
        .await
        .expect("open over sslmode=require");
    round_trip(&store).await;
    store.close().await;
    schema.drop_schema().await;
}

#[tokio::test]
async fn verify_full_with_another_ca_is_refused() {
    let dir = tempfile::tempdir().expect("temp dir");
    let wrong = other_ca(dir.path());
    let schema = Schema::new().await;
    for mode in ["verify-full", "verify-ca"] {
        let url = schema.url(&format!("sslmode={mode}&sslrootcert={}", encode(&wrong)));
        let err = SqlStore::open(&url)
            .await
            .err()
            .unwrap_or_else(|| panic!("sslmode={mode} with a CA that signed nothing opened"));
        assert!(!err.is_retryable(), "sslmode={mode}: {err:?}");
        let text = err.to_string();
        assert!(
            text.contains("certificate was refused") && text.contains("sslrootcert"),
            "sslmode={mode}: {text}"
        );
    }
    schema.drop_schema().await;
}

#[tokio::test]
async fn a_server_runs_on_postgres_over_verify_full() {
    let schema = Schema::new().await;
    let url = schema.url(&format!(
        "sslmode=verify-full&sslrootcert={}",
        encode(&test_ca())
    ));
    let server = common::Server::start_with(common::ServerOptions {
        database_url: Some(url),
        ..Default::default()
    });
    let client = server.client();
    let arn = common::register_simple(&client, "over-tls").await;
    let described = client
        .describe_job_definitions()
        .job_definitions(&arn)
        .send()
        .await
        .expect("describe");
    assert_eq!(described.job_definitions().len(), 1);
    drop(server);
    schema.drop_schema().await;
}
