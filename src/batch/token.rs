//! Pagination tokens (`nextToken`), bound to the listing that issued them.
//!
//! A token carries a position (a catalog key, or a [`JobCursor`] into the store) and a digest of
//! its [`TokenScope`]: the operation and the parameters that choose the sequence being paged.
//! A token presented to another scope (a queue's token on an array job, queue A's on queue B,
//! DescribeJobQueues' on DescribeComputeEnvironments) is a ClientException naming `nextToken`:
//! its position means nothing there, and before the binding it either answered 500 or returned
//! pages of the wrong sequence.
//!
//! Wire form: base64url(`v1.<16 hex digits of SHA-256(scope)>.<position>`). A digest rather than
//! the scope itself keeps tokens short whatever the length of the ARN they were issued for.

use crate::error::{BatchError, BatchResult};
use crate::store::JobCursor;
use base64::Engine;
use sha2::{Digest, Sha256};

const VERSION: &str = "v1";

/// The listing a token belongs to. Two requests page through the same sequence exactly when
/// their scopes are equal.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct TokenScope(String);

impl TokenScope {
    /// `operation` and the request parameters that select what it lists, in a fixed order.
    pub(crate) fn new<'a>(operation: &str, parts: impl IntoIterator<Item = &'a str>) -> Self {
        let mut s = operation.to_string();
        for p in parts {
            // A separator that cannot occur in names or ARNs keeps ("a", "bc") apart from ("ab", "c").
            s.push('\u{1f}');
            s.push_str(p);
        }
        TokenScope(s)
    }

    fn digest(&self) -> String {
        hex::encode(&Sha256::digest(self.0.as_bytes())[..8])
    }
}

/// Why a `nextToken` was refused.
fn not_issued() -> BatchError {
    BatchError::client("nextToken: is not a token this server issued")
}

pub(crate) fn encode(scope: &TokenScope, position: &str) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD
        .encode(format!("{VERSION}.{}.{position}", scope.digest()))
}

/// The position of a token issued for `scope`.
pub(crate) fn decode(scope: &TokenScope, token: &str) -> BatchResult<String> {
    let text = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(token)
        .ok()
        .and_then(|b| String::from_utf8(b).ok())
        .ok_or_else(not_issued)?;
    let mut parts = text.splitn(3, '.');
    let (Some(VERSION), Some(digest), Some(position)) = (parts.next(), parts.next(), parts.next())
    else {
        return Err(not_issued());
    };
    if digest != scope.digest() {
        return Err(BatchError::client(
            "nextToken: was issued for another listing (another operation, job queue, array job \
             or filter); pass it only with the parameters of the request that returned it",
        ));
    }
    Ok(position.to_string())
}

/// The token of a page of jobs that ended at `cursor`.
pub(crate) fn encode_cursor(scope: &TokenScope, cursor: &JobCursor) -> String {
    let position = match cursor {
        JobCursor::Created { created_at, job_id } => format!("c:{created_at}:{job_id}"),
        JobCursor::Index(i) => format!("i:{i}"),
    };
    encode(scope, &position)
}

pub(crate) fn decode_cursor(scope: &TokenScope, token: &str) -> BatchResult<JobCursor> {
    let position = decode(scope, token)?;
    if let Some(rest) = position.strip_prefix("c:") {
        let (at, id) = rest.split_once(':').ok_or_else(not_issued)?;
        Ok(JobCursor::Created {
            created_at: at.parse().map_err(|_| not_issued())?,
            job_id: id.to_string(),
        })
    } else if let Some(i) = position.strip_prefix("i:") {
        Ok(JobCursor::Index(i.parse().map_err(|_| not_issued())?))
    } else {
        Err(not_issued())
    }
}

/// `maxResults` for the describe/list operations of resources: 1–`field_max`, default
/// `field_max`.
fn page_size(max_results: Option<i32>, field_max: i32) -> BatchResult<usize> {
    match max_results {
        None => Ok(field_max as usize),
        Some(n) if (1..=field_max).contains(&n) => Ok(n as usize),
        Some(n) => Err(BatchError::client(format!(
            "maxResults: must be between 1 and {field_max}, got {n}"
        ))),
    }
}

/// One page of an ordered sequence of (key, item), resuming after the token's key.
pub(crate) fn paginate<T>(
    scope: &TokenScope,
    items: Vec<(String, T)>,
    max_results: Option<i32>,
    next_token: Option<&str>,
) -> BatchResult<(Vec<T>, Option<String>)> {
    let size = page_size(max_results, 100)?;
    let after = next_token.map(|t| decode(scope, t)).transpose()?;
    let mut out = Vec::new();
    let mut last_key = None;
    let mut more = false;
    for (key, item) in items {
        if let Some(a) = &after
            && key.as_str() <= a.as_str()
        {
            continue;
        }
        if out.len() == size {
            more = true;
            break;
        }
        last_key = Some(key);
        out.push(item);
    }
    let token = if more {
        last_key.map(|k| encode(scope, &k))
    } else {
        None
    };
    Ok((out, token))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scope(s: &str) -> TokenScope {
        TokenScope::new("Op", [s])
    }

    #[test]
    fn pagination_resumes_after_the_token() {
        let s = scope("a");
        let items: Vec<(String, i32)> = (0..7).map(|i| (format!("k{i}"), i)).collect();
        let (p1, t1) = paginate(&s, items.clone(), Some(3), None).unwrap();
        assert_eq!(p1, vec![0, 1, 2]);
        let (p2, t2) = paginate(&s, items.clone(), Some(3), t1.as_deref()).unwrap();
        assert_eq!(p2, vec![3, 4, 5]);
        let (p3, t3) = paginate(&s, items.clone(), Some(3), t2.as_deref()).unwrap();
        assert_eq!(p3, vec![6]);
        assert!(t3.is_none());
        assert!(paginate(&s, items.clone(), Some(0), None).is_err());
        assert!(paginate(&s, items, None, Some("%%%")).is_err());
    }

    #[test]
    fn a_token_is_refused_by_another_scope() {
        let items: Vec<(String, i32)> = (0..7).map(|i| (format!("k{i}"), i)).collect();
        let (_, t) = paginate(&scope("a"), items.clone(), Some(3), None).unwrap();
        let err = paginate(&scope("b"), items.clone(), Some(3), t.as_deref()).unwrap_err();
        assert!(err.to_string().contains("nextToken"), "{err}");
        // The parts of a scope are kept apart.
        assert_ne!(
            TokenScope::new("Op", ["a", "bc"]).digest(),
            TokenScope::new("Op", ["ab", "c"]).digest()
        );
    }

    #[test]
    fn cursors_round_trip_in_their_scope_only() {
        let (a, b) = (scope("queue-a"), scope("queue-b"));
        let c = JobCursor::Created {
            created_at: 17,
            job_id: "a:b.c".into(),
        };
        assert_eq!(decode_cursor(&a, &encode_cursor(&a, &c)).unwrap(), c);
        let i = JobCursor::Index(42);
        assert_eq!(decode_cursor(&a, &encode_cursor(&a, &i)).unwrap(), i);
        assert!(decode_cursor(&b, &encode_cursor(&a, &c)).is_err());
        // Tokens of the unbound format this server issued before are refused, not misread.
        let old = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode("c:17:a");
        assert!(decode_cursor(&a, &old).is_err());
        assert!(decode_cursor(&a, "bm9wZQ").is_err());
    }
}
