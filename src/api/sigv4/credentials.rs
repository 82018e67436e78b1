//! The access keys a server accepts: from the environment or an AWS shared credentials file.

use std::collections::HashMap;
use std::fmt;

/// Access key id -> secret access key.
#[derive(Clone, Default)]
pub struct CredentialStore {
    keys: HashMap<String, String>,
}

impl fmt::Debug for CredentialStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut ids: Vec<&str> = self.keys.keys().map(String::as_str).collect();
        ids.sort_unstable();
        f.debug_struct("CredentialStore")
            .field("access_key_ids", &ids)
            .finish_non_exhaustive()
    }
}

impl CredentialStore {
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a key pair; a second insert of the same access key id replaces the secret.
    pub fn insert(
        &mut self,
        access_key_id: impl Into<String>,
        secret_access_key: impl Into<String>,
    ) {
        self.keys
            .insert(access_key_id.into(), secret_access_key.into());
    }

    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    pub fn len(&self) -> usize {
        self.keys.len()
    }

    pub fn secret(&self, access_key_id: &str) -> Option<&str> {
        self.keys.get(access_key_id).map(String::as_str)
    }

    /// Adds every key pair of `other`, replacing secrets of access key ids already present.
    pub fn extend(&mut self, other: CredentialStore) {
        self.keys.extend(other.keys);
    }

    /// The pair in `AWS_ACCESS_KEY_ID` / `AWS_SECRET_ACCESS_KEY`, if both are set and non-empty.
    pub fn from_env() -> Self {
        let mut store = Self::new();
        if let (Ok(id), Ok(secret)) = (
            std::env::var("AWS_ACCESS_KEY_ID"),
            std::env::var("AWS_SECRET_ACCESS_KEY"),
        ) && !id.trim().is_empty()
            && !secret.trim().is_empty()
        {
            store.insert(id.trim(), secret.trim());
        }
        store
    }

    /// Parses an AWS shared credentials file (`~/.aws/credentials` INI format). Every section
    /// that has both `aws_access_key_id` and `aws_secret_access_key` adds its pair; other keys
    /// (`aws_session_token`, `region`, ...) are ignored, as are lines outside any section.
    pub fn parse_credentials_file(text: &str) -> Self {
        #[derive(Default)]
        struct Section {
            id: Option<String>,
            secret: Option<String>,
        }
        fn flush(store: &mut CredentialStore, section: &mut Option<Section>) {
            if let Some(Section {
                id: Some(id),
                secret: Some(secret),
            }) = section.take()
                && !id.is_empty()
                && !secret.is_empty()
            {
                store.insert(id, secret);
            }
        }

        let mut store = Self::new();
        let mut section: Option<Section> = None;
        for line in text.lines() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') || line.starts_with(';') {
                continue;
            }
            if line.starts_with('[') {
                flush(&mut store, &mut section);
                section = Some(Section::default());
                continue;
            }
            let Some(current) = section.as_mut() else {
                continue;
            };
            let Some((key, value)) = line.split_once('=') else {
                continue;
            };
            let value = value.trim().to_owned();
            // Option names are case-insensitive, as in Python's configparser that botocore uses.
            match key.trim().to_ascii_lowercase().as_str() {
                "aws_access_key_id" => current.id = Some(value),
                "aws_secret_access_key" => current.secret = Some(value),
                _ => {}
            }
        }
        flush(&mut store, &mut section);
        store
    }
}
