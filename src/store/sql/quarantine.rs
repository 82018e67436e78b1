//! Rows that cannot be read are moved aside rather than stop the server.
//!
//! A job or resource document that no longer parses (a bug in an older version, a hand edit, a
//! damaged page SQLite did not notice) used to make every start fail. Now the reader that trips
//! on it asks the store to move it into the `quarantine` table, in one transaction with its
//! removal from its own table, and the server starts with the rest. The row stays there whole,
//! with the reason, for an operator to repair and move back (see docs/operations.md).

use super::*;
use crate::metrics;

const MOVE: &str = "INSERT INTO quarantine (source, row_key, columns, doc, reason, quarantined_at) \
     VALUES ($1, $2, $3, $4, $5, $6) \
     ON CONFLICT (source, row_key) DO UPDATE SET columns = excluded.columns, doc = excluded.doc, \
     reason = excluded.reason, quarantined_at = excluded.quarantined_at";

/// Which row to take out of its table.
pub(super) enum Origin<'a> {
    Job(&'a str),
    Resource { kind: &'a str, arn: &'a str },
}

impl SqlStore {
    /// Moves one row into the quarantine table and removes it from its own, atomically.
    pub(super) async fn quarantine(
        &self,
        origin: Origin<'_>,
        columns: serde_json::Value,
        doc: &str,
        reason: &str,
    ) -> StoreResult<()> {
        let (source, key) = match &origin {
            Origin::Job(id) => ("job".to_string(), *id),
            Origin::Resource { kind, arn } => (format!("resource:{kind}"), *arn),
        };
        let columns = columns.to_string();
        let now = now_ms();
        on_pool!(&self.pool, p => {
            async {
                let mut tx = p.begin().await?;
                sqlx::query(MOVE)
                    .bind(source.as_str())
                    .bind(key)
                    .bind(columns.as_str())
                    .bind(doc)
                    .bind(reason)
                    .bind(now)
                    .execute(&mut *tx)
                    .await?;
                match &origin {
                    Origin::Job(id) => {
                        sqlx::query("DELETE FROM jobs WHERE job_id = $1")
                            .bind(*id)
                            .execute(&mut *tx)
                            .await?;
                    }
                    Origin::Resource { kind, arn } => {
                        sqlx::query("DELETE FROM resources WHERE kind = $1 AND arn = $2")
                            .bind(*kind)
                            .bind(*arn)
                            .execute(&mut *tx)
                            .await?;
                    }
                }
                tx.commit().await
            }
            .await
        })
        .map_err(map_err)
        .inspect_err(|e| self.health.failed(e))?;
        tracing::error!(%source, key, %reason, "unreadable row moved to the quarantine table");
        self.report_quarantine().await
    }

    /// Sets the quarantine metric; returns how many rows the table holds.
    pub(super) async fn report_quarantine(&self) -> StoreResult<()> {
        let n: i64 = on_pool!(&self.pool, p => {
            sqlx::query_scalar("SELECT COUNT(*) FROM quarantine")
                .fetch_one(p)
                .await
        })
        .map_err(map_err)?;
        metrics::store_quarantined_rows(n);
        Ok(())
    }

    /// At open: the count, and a line when the table is not empty.
    pub(super) async fn announce_quarantine(&self) -> StoreResult<()> {
        let rows: Vec<(String, String, String)> = on_pool!(&self.pool, p => {
            sqlx::query_as("SELECT source, row_key, reason FROM quarantine ORDER BY quarantined_at")
                .fetch_all(p)
                .await
        })
        .map_err(map_err)?;
        metrics::store_quarantined_rows(rows.len() as i64);
        if !rows.is_empty() {
            let keys: Vec<String> = rows
                .iter()
                .take(20)
                .map(|(source, key, _)| format!("{source} {key}"))
                .collect();
            warn!(
                rows = rows.len(),
                first = %keys.join(", "),
                "the quarantine table holds rows that could not be read; they are left out"
            );
        }
        Ok(())
    }
}

pub(super) fn job_columns(row: &JobRow) -> serde_json::Value {
    serde_json::json!({
        "job_id": row.job_id,
        "job_queue": row.job_queue,
        "status": row.status,
        "job_name": row.job_name,
        "job_definition": row.job_definition,
        "array_parent": row.array_parent,
        "array_index": row.array_index,
        "created_at": row.created_at,
    })
}
