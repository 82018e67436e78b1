//! Whether the store's writes land: what `/healthz` and `/metrics` report while the disk is full
//! or failing.
//!
//! The writers record every outcome here; nothing else decides. A failing write is retried by its
//! owner (the engine, the array-children task), so the state clears by itself with the first
//! write that lands once space returns. The store also probes while degraded (see
//! `sql::run_writer`), so an idle server does not stay "degraded" for want of a write.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::metrics;

use super::StoreError;

/// At most one error line per this interval while writes keep failing: a full disk fails every
/// retry, and a line per retry would fill the log (and the disk) faster than it helps.
const LOG_EVERY: Duration = Duration::from_secs(60);

#[derive(Debug, Default)]
struct State {
    /// Since when writes fail (`None`: the last write landed).
    failing_since: Option<Instant>,
    last_error: Option<String>,
    /// Failed writes since the last error line.
    unlogged: u64,
    last_logged: Option<Instant>,
}

/// The outcome of the store's recent writes.
#[derive(Debug, Default)]
pub struct WriteHealth {
    state: Mutex<State>,
}

/// What [`WriteHealth::status`] reports while writes fail.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Degraded {
    pub failing_for: Duration,
    pub last_error: String,
}

impl WriteHealth {
    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        // The state is a few plain fields, consistent after any panic.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A write that failed in a way a retry may fix (disk full, I/O error, database away).
    /// Errors of the row itself (a bug) do not make the store degraded and are not counted.
    pub fn failed(&self, e: &StoreError) {
        if !e.is_retryable() {
            return;
        }
        metrics::store_write_failed();
        let mut s = self.state();
        let now = Instant::now();
        let since = *s.failing_since.get_or_insert(now);
        s.last_error = Some(e.to_string());
        s.unlogged += 1;
        if s.last_logged
            .is_none_or(|t| now.duration_since(t) >= LOG_EVERY)
        {
            tracing::error!(
                error = %e,
                failed_writes = s.unlogged,
                failing_for_s = now.duration_since(since).as_secs(),
                storage_fault = e.is_storage_fault(),
                "store writes failing; retrying until they land (nothing is dropped)"
            );
            s.unlogged = 0;
            s.last_logged = Some(now);
        }
        drop(s);
        metrics::store_degraded(true);
    }

    /// A write landed: whatever failed before has been (or is being) retried.
    pub fn succeeded(&self) {
        let mut s = self.state();
        let Some(since) = s.failing_since.take() else {
            return;
        };
        tracing::warn!(
            failed_for_s = since.elapsed().as_secs(),
            "store writes land again"
        );
        s.last_error = None;
        s.unlogged = 0;
        s.last_logged = None;
        drop(s);
        metrics::store_degraded(false);
    }

    /// `Some` while writes fail.
    pub fn status(&self) -> Option<Degraded> {
        let s = self.state();
        s.failing_since.map(|since| Degraded {
            failing_for: since.elapsed(),
            last_error: s.last_error.clone().unwrap_or_default(),
        })
    }

    pub fn is_degraded(&self) -> bool {
        self.state().failing_since.is_some()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn degraded_from_a_retryable_failure_until_a_write_lands() {
        let h = WriteHealth::default();
        assert!(h.status().is_none());
        h.failed(&StoreError::Fatal("bad row".into()));
        assert!(!h.is_degraded(), "a bad row is not a storage fault");
        h.failed(&StoreError::Storage("database or disk is full".into()));
        let d = h.status().expect("degraded");
        assert!(d.last_error.contains("disk is full"), "{d:?}");
        h.succeeded();
        assert!(h.status().is_none());
    }
}
