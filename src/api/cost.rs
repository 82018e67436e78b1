//! `GET /cost?from=MS&to=MS`: the cost report of a time range (`batch::cost`), signed with
//! SigV4 like the API. Flotilla's own; AWS Batch has no such operation.

use super::AppState;
use axum::extract::{Request, State};
use axum::response::{IntoResponse, Response};
use std::sync::Arc;

/// Without `from`: the last day.
const DEFAULT_RANGE_MS: i64 = 24 * 3600 * 1000;

pub async fn report(State(state): State<Arc<AppState>>, request: Request) -> Response {
    let (mut parts, _body) = request.into_parts();
    if let Some(refused) = super::refuse_unsigned_get(&state, &mut parts, "cost report") {
        return refused;
    }
    let now = crate::util::time::now_ms();
    let (from, to) = match range(parts.uri.query().unwrap_or(""), now) {
        Ok(r) => r,
        Err(message) => return super::ApiError::client(message).into_response(),
    };
    match state.batch.cost_report(from, to, now).await {
        Ok(report) => axum::Json(report).into_response(),
        Err(e) => super::ApiError::from(e).into_response(),
    }
}

/// `from` and `to` from the query: epoch milliseconds, `to` defaulting to now and `from` to a
/// day before `to`.
fn range(query: &str, now: i64) -> Result<(i64, i64), String> {
    let mut from = None;
    let mut to = None;
    for kv in query.split('&').filter(|kv| !kv.is_empty()) {
        let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
        let parse = |v: &str| {
            v.parse::<i64>()
                .ok()
                .filter(|n| *n >= 0)
                .ok_or_else(|| format!("{k}: expected epoch milliseconds, got {v:?}"))
        };
        match k {
            "from" => from = Some(parse(v)?),
            "to" => to = Some(parse(v)?),
            _ => return Err(format!("{k}: unknown parameter (from, to)")),
        }
    }
    let to = to.unwrap_or(now);
    let from = from.unwrap_or(to - DEFAULT_RANGE_MS).max(0);
    if from >= to {
        return Err(format!("from ({from}) must be before to ({to})"));
    }
    Ok((from, to))
}

#[cfg(test)]
mod tests {
    use super::range;

    #[test]
    fn the_range_defaults_to_the_last_day_and_names_a_bad_field() {
        assert_eq!(range("", 100_000_000), Ok((13_600_000, 100_000_000)));
        assert_eq!(range("from=5&to=10", 99), Ok((5, 10)));
        assert!(range("from=abc", 99).unwrap_err().starts_with("from:"));
        assert!(range("to=-1", 99).unwrap_err().starts_with("to:"));
        assert!(range("from=10&to=10", 99).unwrap_err().contains("before"));
        assert!(range("since=1", 99).unwrap_err().starts_with("since:"));
    }
}
