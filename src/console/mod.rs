//! The web console at `/console`: pages rendered here from the same [`crate::batch::Batch`]
//! operations the API serves, a session cookie signed with the API's own credentials, and a
//! little JavaScript that polls JSON under `/console/api/` for what moves (see docs/console.md).
//!
//! - `auth`: sign-in, the stateless session cookie, CSRF tokens, the guard on every page.
//! - `overview`: queues, compute environments, charts; `live`: their figures and samples.
//! - `jobs`: the listing (ListJobs' filters and keyset paging) and the job page; `graph`: its
//!   dependency graph as SVG.
//! - `actions`: cancel/terminate (single and bulk), enable/disable, each confirmed first.
//! - `html`, `form`, `error`: escaping and the page frame, form parsing, error pages.

mod actions;
mod auth;
mod error;
mod form;
mod graph;
mod html;
mod jobs;
mod live;
mod overview;

pub use error::ConsoleError;

use crate::api::AppState;
use axum::Router;
use axum::extract::Path;
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use std::sync::Arc;

/// What every console handler shares.
pub struct Console {
    app: Arc<AppState>,
    /// Keys the CSRF token when the server has no credentials (its loopback-only mode): a
    /// random per-process secret, so a form still proves a page of this process served it.
    anonymous_key: [u8; 32],
    live: live::Live,
}

/// The console's routes, all under `/console`, to merge into the API's router.
pub fn router(app: Arc<AppState>) -> Router {
    let mut anonymous_key = [0u8; 32];
    anonymous_key[..16].copy_from_slice(uuid::Uuid::new_v4().as_bytes());
    anonymous_key[16..].copy_from_slice(uuid::Uuid::new_v4().as_bytes());
    let console = Arc::new(Console {
        app,
        anonymous_key,
        live: live::Live::default(),
    });
    live::spawn_sampler(&console);
    let guarded = Router::new()
        .route("/console", get(overview::page))
        .route("/console/", get(overview::page))
        .route("/console/api/overview", get(overview::api))
        .route("/console/jobs", get(jobs::list))
        .route("/console/jobs/{id}", get(jobs::detail))
        .route("/console/api/jobs/{id}", get(jobs::status_api))
        .route("/console/api/jobs/{id}/log", get(jobs::log_api))
        .route("/console/confirm", post(actions::confirm))
        .route("/console/act", post(actions::act))
        .route("/console/logout", post(auth::logout))
        .route_layer(middleware::from_fn_with_state(
            console.clone(),
            auth::require,
        ));
    let open = Router::new()
        .route("/console/login", get(auth::login_page).post(auth::login))
        .route("/console/static/{file}", get(asset));
    guarded.merge(open).with_state(console)
}

const CSS: &str = include_str!("static/console.css");
const JS: &str = include_str!("static/console.js");

/// The stylesheet and the script: public, so the sign-in page has them; they hold no data.
async fn asset(Path(file): Path<String>) -> Response {
    let (body, kind) = match file.as_str() {
        "console.css" => (CSS, "text/css; charset=utf-8"),
        "console.js" => (JS, "text/javascript; charset=utf-8"),
        _ => return StatusCode::NOT_FOUND.into_response(),
    };
    let mut resp = body.into_response();
    let h = resp.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(kind));
    h.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("public, max-age=300"),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    resp
}
