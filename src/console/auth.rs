//! Sign-in with the API's own access key and secret, and a stateless session cookie.
//!
//! The cookie is `<base64url(access key id)>.<expiry, epoch s>.<hex HMAC-SHA256>`, the MAC keyed
//! by that key's secret over both: any replica that has the credentials accepts it, nothing is
//! stored per session, and removing or rotating a secret ends that key's sessions. A refused
//! sign-in allocates nothing beyond its (bounded) request body.
//!
//! Actions are POSTs only. Each carries a CSRF token, an HMAC of the cookie value under the
//! same secret, in a hidden field, and must come from this origin (`Origin`, else `Referer`).

use super::Console;
use super::error::{ConsoleError, ConsoleResult};
use super::form::{Form, encode};
use super::html::{self, esc};
use crate::metrics;
use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use base64::Engine;
use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;
use std::sync::Arc;

pub const COOKIE: &str = "flotilla_console";
/// A session lasts a working day; signing in again is cheap.
const SESSION_SECS: i64 = 12 * 3600;
/// Two short fields and a path: anything larger is not a sign-in.
const MAX_LOGIN_BODY: usize = 4 * 1024;
/// A bulk action names at most a page of jobs (1,000 IDs of ≤ 100 bytes, encoded).
const MAX_FORM_BODY: usize = 256 * 1024;

const B64: base64::engine::GeneralPurpose = base64::engine::general_purpose::URL_SAFE_NO_PAD;

/// Who a request is from, as the middleware established it.
#[derive(Debug, Clone)]
pub struct Session {
    /// `None` when the server has no credentials (its loopback-only mode).
    pub key_id: Option<String>,
    /// The token every POST form must carry.
    pub csrf: String,
}

impl Session {
    /// The hidden form field that carries the CSRF token.
    pub fn csrf_field(&self) -> String {
        format!(
            r#"<input type="hidden" name="csrf" value="{}">"#,
            esc(&self.csrf)
        )
    }
}

fn mac(key: &[u8], purpose: &str, parts: &[&[u8]]) -> Vec<u8> {
    // HMAC accepts keys of any length.
    let mut m = <Hmac<Sha256> as KeyInit>::new_from_slice(key).expect("HMAC takes any key");
    // The purpose keeps a session MAC from ever being valid as a CSRF token, or the reverse;
    // the NUL separators keep `a|bc` and `ab|c` apart.
    m.update(purpose.as_bytes());
    for p in parts {
        m.update(b"\0");
        m.update(p);
    }
    m.finalize().into_bytes().to_vec()
}

/// The cookie value for `key_id`, valid until `expiry` (epoch s).
pub fn issue(key_id: &str, secret: &str, expiry: i64) -> String {
    let id = B64.encode(key_id);
    let exp = expiry.to_string();
    let sig = mac(
        secret.as_bytes(),
        "flotilla-console-session",
        &[key_id.as_bytes(), exp.as_bytes()],
    );
    format!("{id}.{exp}.{}", hex::encode(sig))
}

/// The access key id a cookie value proves, if it is intact, current and the key still exists.
pub fn verify(
    value: &str,
    secret_of: impl Fn(&str) -> Option<String>,
    now_s: i64,
) -> Option<String> {
    let mut parts = value.split('.');
    let (id, exp, sig) = (parts.next()?, parts.next()?, parts.next()?);
    if parts.next().is_some() {
        return None;
    }
    let key_id = String::from_utf8(B64.decode(id).ok()?).ok()?;
    let expiry: i64 = exp.parse().ok()?;
    if expiry <= now_s || expiry > now_s + SESSION_SECS + 60 {
        return None;
    }
    let sig = hex::decode(sig).ok()?;
    let secret = secret_of(&key_id)?;
    let mut m = <Hmac<Sha256> as KeyInit>::new_from_slice(secret.as_bytes()).ok()?;
    m.update(b"flotilla-console-session");
    m.update(b"\0");
    m.update(key_id.as_bytes());
    m.update(b"\0");
    m.update(exp.as_bytes());
    m.verify_slice(&sig).ok()?;
    Some(key_id)
}

fn csrf_token(key: &[u8], cookie: &str) -> String {
    hex::encode(mac(key, "flotilla-console-csrf", &[cookie.as_bytes()]))
}

/// Equal in time independent of where they differ.
fn ct_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

fn cookie_value(headers: &HeaderMap) -> Option<&str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .find_map(|kv| kv.trim().strip_prefix(COOKIE)?.strip_prefix('='))
}

fn now_s() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

/// The session a request carries, or `None` when it must sign in.
pub fn session_of(console: &Console, headers: &HeaderMap) -> Option<Session> {
    let Some(creds) = &console.app.credentials else {
        return Some(Session {
            key_id: None,
            csrf: csrf_token(&console.anonymous_key, "anonymous"),
        });
    };
    let value = cookie_value(headers)?;
    let key_id = verify(value, |id| creds.secret(id).map(str::to_string), now_s())?;
    let secret = creds.secret(&key_id)?;
    Some(Session {
        csrf: csrf_token(secret.as_bytes(), value),
        key_id: Some(key_id),
    })
}

/// Whether the request says it comes from a page of this host: its `Origin`, or without one its
/// `Referer`, names the host it was sent to. Browsers send `Origin` with every POST.
pub fn same_origin(headers: &HeaderMap) -> bool {
    let Some(host) = headers.get(header::HOST).and_then(|v| v.to_str().ok()) else {
        return false;
    };
    let source = headers
        .get(header::ORIGIN)
        .or_else(|| headers.get(header::REFERER))
        .and_then(|v| v.to_str().ok());
    let Some(source) = source else { return false };
    let Some(rest) = source
        .strip_prefix("http://")
        .or_else(|| source.strip_prefix("https://"))
    else {
        return false;
    };
    let authority = rest.split(['/', '?', '#']).next().unwrap_or("");
    authority.eq_ignore_ascii_case(host)
}

/// In front of every page but sign-in: a session or a way to get one.
pub async fn require(
    State(console): State<Arc<Console>>,
    mut request: Request,
    next: Next,
) -> Response {
    let Some(session) = session_of(&console, request.headers()) else {
        return unauthenticated(&request);
    };
    if request.method() != Method::GET && request.method() != Method::HEAD {
        if request.method() != Method::POST {
            return ConsoleError::Forbidden("the console changes things only by POST")
                .into_response();
        }
        if !same_origin(request.headers()) {
            return ConsoleError::Forbidden(
                "refused: the form was not sent from a page of this console (Origin/Referer)",
            )
            .into_response();
        }
    }
    request.extensions_mut().insert(session);
    let mut resp = next.run(request).await;
    // Nothing behind a session belongs in a shared or on-disk cache, the JSON included.
    resp.headers_mut()
        .entry(header::CACHE_CONTROL)
        .or_insert(HeaderValue::from_static("no-store"));
    resp
}

fn unauthenticated(request: &Request) -> Response {
    let path = request.uri().path();
    if path.starts_with("/console/api/") {
        return (
            StatusCode::UNAUTHORIZED,
            axum::Json(serde_json::json!({"message": "sign in at /console/login"})),
        )
            .into_response();
    }
    if request.method() == Method::GET {
        let back = request
            .uri()
            .path_and_query()
            .map_or("/console", |p| p.as_str());
        return redirect(&format!("/console/login?next={}", encode(back)));
    }
    ConsoleError::Forbidden("sign in first: /console/login").into_response()
}

pub fn redirect(to: &str) -> Response {
    let mut resp = StatusCode::SEE_OTHER.into_response();
    if let Ok(v) = HeaderValue::from_str(to) {
        resp.headers_mut().insert(header::LOCATION, v);
    }
    resp
}

/// Where to go after signing in: a console path, never another site (`//evil`, `/\evil`).
fn safe_next(next: Option<&str>) -> String {
    match next {
        Some(n)
            if n.starts_with("/console")
                && !n.contains("//")
                && !n.contains('\\')
                && !n.chars().any(char::is_control) =>
        {
            n.to_string()
        }
        _ => "/console".to_string(),
    }
}

fn login_form(next: &str, error: Option<&str>) -> String {
    let error = error.map_or(String::new(), |e| {
        format!(r#"<p class="error" id="login-error">{}</p>"#, esc(e))
    });
    format!(
        r#"<h1>Sign in</h1>
<p class="muted">Use an access key of this server's API (the pair you give the AWS CLI).</p>
{error}
<form method="post" action="/console/login" class="login" autocomplete="off">
<input type="hidden" name="next" value="{}">
<label>Access key ID <input name="access_key_id" id="access_key_id" required maxlength="256"></label>
<label>Secret access key <input name="secret_access_key" id="secret_access_key" type="password" required maxlength="1024"></label>
<button type="submit" id="sign-in">Sign in</button>
</form>"#,
        esc(next)
    )
}

pub async fn login_page(State(console): State<Arc<Console>>, request: Request) -> Response {
    if console.app.credentials.is_none() {
        return redirect("/console");
    }
    let q = Form::parse(request.uri().query().unwrap_or(""));
    html::bare(
        StatusCode::OK,
        "Sign in",
        &login_form(&safe_next(q.get("next")), None),
    )
}

pub async fn login(
    State(console): State<Arc<Console>>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let Some(creds) = &console.app.credentials else {
        return redirect("/console");
    };
    // Login CSRF: a foreign page must not sign the browser in under the attacker's key.
    if !same_origin(&headers) {
        return ConsoleError::Forbidden(
            "refused: the sign-in form was not sent from this console (Origin/Referer)",
        )
        .into_response();
    }
    let bytes = match axum::body::to_bytes(body, MAX_LOGIN_BODY).await {
        Ok(b) => b,
        Err(_) => return ConsoleError::TooLarge(MAX_LOGIN_BODY).into_response(),
    };
    let form = Form::parse(&String::from_utf8_lossy(&bytes));
    let next = safe_next(form.get("next"));
    let id = form.get("access_key_id").unwrap_or("");
    let given = form.raw("secret_access_key").unwrap_or("");
    let ok = creds
        .secret(id)
        .is_some_and(|secret| ct_eq(secret.as_bytes(), given.as_bytes()));
    metrics::console_login(ok);
    if !ok {
        tracing::info!("console sign-in refused");
        return html::bare(
            StatusCode::UNAUTHORIZED,
            "Sign in",
            &login_form(&next, Some("Wrong access key ID or secret access key.")),
        );
    }
    let secret = creds.secret(id).unwrap_or_default();
    let value = issue(id, secret, now_s() + SESSION_SECS);
    let cookie = set_cookie(&value, &headers);
    let mut resp = redirect(&next);
    if let Ok(v) = HeaderValue::from_str(&cookie) {
        resp.headers_mut().insert(header::SET_COOKIE, v);
    }
    resp
}

/// The `Set-Cookie` value for a new session. `Secure` when the sign-in page was served over TLS,
/// which the form's `Origin` (or `Referer`) says: the listener's TLS is not visible here, and the
/// browser's own account of the page is what decides whether it would send the cookie in clear.
fn set_cookie(value: &str, headers: &HeaderMap) -> String {
    let secure = headers
        .get(header::ORIGIN)
        .or_else(|| headers.get(header::REFERER))
        .and_then(|v| v.to_str().ok())
        .is_some_and(|o| o.starts_with("https://"));
    format!(
        "{COOKIE}={value}; Path=/console; HttpOnly; SameSite=Strict; Max-Age={SESSION_SECS}{}",
        if secure { "; Secure" } else { "" }
    )
}

/// Reads a POSTed form (bounded) and checks its CSRF token.
pub async fn read_form(session: &Session, body: Body) -> ConsoleResult<Form> {
    let bytes = axum::body::to_bytes(body, MAX_FORM_BODY)
        .await
        .map_err(|_| ConsoleError::TooLarge(MAX_FORM_BODY))?;
    let form = Form::parse(&String::from_utf8_lossy(&bytes));
    let token = form.get("csrf").unwrap_or("");
    if !ct_eq(token.as_bytes(), session.csrf.as_bytes()) {
        return Err(ConsoleError::Forbidden(
            "the form's CSRF token is missing or stale: reload the page and try again",
        ));
    }
    Ok(form)
}

pub async fn logout(axum::Extension(session): axum::Extension<Session>, body: Body) -> Response {
    if let Err(e) = read_form(&session, body).await {
        return e.into_response();
    }
    let mut resp = redirect("/console/login");
    resp.headers_mut().insert(
        header::SET_COOKIE,
        HeaderValue::from_static(
            "flotilla_console=; Path=/console; HttpOnly; SameSite=Strict; Max-Age=0",
        ),
    );
    resp
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secret_of(id: &str) -> Option<String> {
        (id == "AKID").then(|| "s3cret".to_string())
    }

    #[test]
    fn cookies_verify_only_intact_current_and_known() {
        let now = 1_000_000;
        let c = issue("AKID", "s3cret", now + 60);
        assert_eq!(verify(&c, secret_of, now).as_deref(), Some("AKID"));
        // Expired, or signed with another secret, or tampered with.
        assert_eq!(verify(&c, secret_of, now + 61), None);
        assert_eq!(
            verify(&issue("AKID", "other", now + 60), secret_of, now),
            None
        );
        let longer = c.replacen(&format!(".{}.", now + 60), &format!(".{}.", now + 3600), 1);
        assert_eq!(verify(&longer, secret_of, now), None);
        assert_eq!(
            verify(&issue("NOPE", "s3cret", now + 60), secret_of, now),
            None
        );
        assert_eq!(verify("garbage", secret_of, now), None);
        assert_eq!(verify("a.b.c.d", secret_of, now), None);
        // An expiry beyond what this server issues is not honoured either.
        let far = issue("AKID", "s3cret", now + 10 * SESSION_SECS);
        assert_eq!(verify(&far, secret_of, now), None);
    }

    #[test]
    fn origin_must_name_this_host() {
        let h = |pairs: &[(&'static str, &'static str)]| {
            let mut m = HeaderMap::new();
            for (k, v) in pairs {
                m.insert(*k, HeaderValue::from_static(v));
            }
            m
        };
        assert!(same_origin(&h(&[
            ("host", "127.0.0.1:8080"),
            ("origin", "http://127.0.0.1:8080")
        ])));
        assert!(same_origin(&h(&[
            ("host", "127.0.0.1:8080"),
            ("referer", "http://127.0.0.1:8080/console/jobs?x=1")
        ])));
        assert!(!same_origin(&h(&[
            ("host", "127.0.0.1:8080"),
            ("origin", "http://evil.example")
        ])));
        assert!(!same_origin(&h(&[
            ("host", "127.0.0.1:8080"),
            ("origin", "null")
        ])));
        assert!(!same_origin(&h(&[("host", "127.0.0.1:8080")])));
    }

    #[test]
    fn the_cookie_is_secure_when_the_page_was_https() {
        let with = |k: &'static str, v: &'static str| {
            let mut m = HeaderMap::new();
            m.insert(k, HeaderValue::from_static(v));
            m
        };
        let https = set_cookie("v", &with("origin", "https://batch.example:8443"));
        assert!(https.ends_with("; Secure"), "{https}");
        for attr in ["HttpOnly", "SameSite=Strict", "Path=/console"] {
            assert!(https.contains(attr), "{https}");
        }
        let referer = set_cookie("v", &with("referer", "https://batch.example/console/login"));
        assert!(referer.ends_with("; Secure"), "{referer}");
        let http = set_cookie("v", &with("origin", "http://127.0.0.1:8080"));
        assert!(!http.contains("Secure"), "{http}");
    }

    #[test]
    fn next_stays_in_the_console() {
        assert_eq!(safe_next(Some("/console/jobs?q=1")), "/console/jobs?q=1");
        assert_eq!(safe_next(Some("//evil.example/console")), "/console");
        assert_eq!(safe_next(Some("/console//evil")), "/console");
        assert_eq!(safe_next(Some("https://evil.example")), "/console");
        assert_eq!(safe_next(None), "/console");
    }
}
