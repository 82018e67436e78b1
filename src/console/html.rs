//! HTML building blocks: escaping, the page frame, times. Every value that did not come from
//! this file goes through [`esc`]: job names, reasons, environment values and log lines are
//! whatever a client submitted.

use super::auth::Session;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use std::fmt::Write;

/// Text made safe for element content and quoted attribute values.
pub fn esc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// Scripts and styles come only from `/console/static/`, so an escaping slip cannot run script;
/// no page may be framed (clickjacking of the action buttons).
const CSP: &str = "default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'; \
                   connect-src 'self'; frame-ancestors 'none'; form-action 'self'; base-uri 'none'";

/// A complete HTML response with the console's security headers.
pub fn respond(status: StatusCode, body: String) -> Response {
    let mut resp = (status, body).into_response();
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CSP),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("same-origin"),
    );
    resp
}

/// The frame around every signed-in page: navigation, the sign-out form, the scripts.
pub fn page(title: &str, session: &Session, body: &str) -> Response {
    let who = match &session.key_id {
        Some(id) => format!(
            r#"<span class="who">{}</span>
<form method="post" action="/console/logout" class="inline">{}<button type="submit" id="logout">Sign out</button></form>"#,
            esc(id),
            session.csrf_field()
        ),
        None => r#"<span class="who">no credentials (loopback)</span>"#.to_string(),
    };
    respond(
        StatusCode::OK,
        frame(
            title,
            &format!(
                r#"<header><a class="brand" href="/console">Flotilla</a>
<nav><a href="/console">Overview</a> <a href="/console/jobs">Jobs</a></nav>
<div class="session">{who}</div></header>
<main>{body}</main>"#
            ),
        ),
    )
}

/// A page without navigation (sign-in, errors).
pub fn bare(status: StatusCode, title: &str, body: &str) -> Response {
    respond(
        status,
        frame(
            title,
            &format!(
                r#"<header><a class="brand" href="/console">Flotilla</a></header><main>{body}</main>"#
            ),
        ),
    )
}

fn frame(title: &str, inner: &str) -> String {
    format!(
        r#"<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<title>{} · Flotilla</title>
<link rel="stylesheet" href="/console/static/console.css">
<script src="/console/static/console.js" defer></script>
</head><body>
{inner}
</body></html>"#,
        esc(title)
    )
}

pub fn error_page(status: StatusCode, message: &str) -> Response {
    bare(
        status,
        "Error",
        &format!(
            r#"<h1>{} {}</h1><p class="error" id="error">{}</p><p><a href="/console">Overview</a> · <a href="/console/jobs">Jobs</a></p>"#,
            status.as_u16(),
            esc(status.canonical_reason().unwrap_or("")),
            esc(message)
        ),
    )
}

/// `2026-12-05 17:30:01Z` from epoch milliseconds.
pub fn time(ms: i64) -> String {
    let secs = ms.div_euclid(1000);
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    let (y, m, d) = civil_from_days(days);
    format!(
        "{y:04}-{m:02}-{d:02} {:02}:{:02}:{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

/// `1h 02m`, `3m 12s`, `45s`.
pub fn age(ms: i64) -> String {
    let s = ms.max(0) / 1000;
    if s >= 3600 {
        format!("{}h {:02}m", s / 3600, s % 3600 / 60)
    } else if s >= 60 {
        format!("{}m {:02}s", s / 60, s % 60)
    } else {
        format!("{s}s")
    }
}

/// Epoch milliseconds of `YYYY-MM-DDTHH:MM[:SS]` (what `<input type="datetime-local">` sends),
/// read as UTC.
pub fn parse_time(s: &str) -> Option<i64> {
    let (date, clock) = s.split_once(['T', ' '])?;
    let mut d = date.splitn(3, '-').map(|p| p.parse::<i64>().ok());
    let (y, m, day) = (d.next()??, d.next()??, d.next()??);
    let mut c = clock.trim_end_matches('Z').splitn(3, ':');
    let h: i64 = c.next()?.parse().ok()?;
    let min: i64 = c.next()?.parse().ok()?;
    let sec: i64 = match c.next() {
        Some(v) => v.split('.').next()?.parse().ok()?,
        None => 0,
    };
    if !(1..=12).contains(&m) || !(1..=31).contains(&day) || h > 23 || min > 59 || sec > 59 {
        return None;
    }
    Some((days_from_civil(y, m, day) * 86_400 + h * 3600 + min * 60 + sec) * 1000)
}

// Howard Hinnant's civil-calendar algorithms: no date crate for two conversions.
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

fn civil_from_days(z: i64) -> (i64, i64, i64) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    (
        if m <= 2 {
            yoe + era * 400 + 1
        } else {
            yoe + era * 400
        },
        m,
        d,
    )
}

/// A `<table>` from a header row and rows of already-escaped cells.
pub fn table(id: &str, head: &[&str], rows: &[Vec<String>]) -> String {
    let mut out = format!(r#"<table id="{id}"><thead><tr>"#);
    for h in head {
        let _ = write!(out, "<th>{}</th>", esc(h));
    }
    out.push_str("</tr></thead><tbody>");
    for row in rows {
        out.push_str("<tr>");
        for cell in row {
            let _ = write!(out, "<td>{cell}</td>");
        }
        out.push_str("</tr>");
    }
    if rows.is_empty() {
        let _ = write!(
            out,
            r#"<tr><td colspan="{}" class="muted">none</td></tr>"#,
            head.len().max(1)
        );
    }
    out.push_str("</tbody></table>");
    out
}

/// A status as a coloured badge.
pub fn status(s: &str) -> String {
    format!(r#"<span class="st st-{0}">{0}</span>"#, esc(s))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_markup_and_quotes() {
        assert_eq!(
            esc(r#"<script>alert("x")</script>&'"#),
            "&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt;&amp;&#39;"
        );
    }

    #[test]
    fn times_round_trip() {
        let ms = parse_time("2026-12-05T17:30:01").unwrap();
        assert_eq!(time(ms), "2026-12-05 17:30:01Z");
        assert_eq!(parse_time("1970-01-01T00:00"), Some(0));
        assert_eq!(parse_time("2024-02-29T12:00"), Some(1_709_208_000_000));
        assert_eq!(parse_time("2024-13-01T00:00"), None);
        assert_eq!(parse_time("yesterday"), None);
        assert_eq!(age(3_723_000), "1h 02m");
        assert_eq!(age(75_000), "1m 15s");
    }
}
