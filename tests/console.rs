//! The web console in a real headless Chromium against a real server running host-process jobs:
//! sign-in, live job progress, logs, terminate, queue state, and nothing at all without a
//! session. Set `FLOTILLA_CONSOLE_SCREENSHOTS=<dir>` to save the overview and a job page as PNGs.

mod common;
#[path = "common/webdriver.rs"]
mod webdriver;

use aws_sdk_batch::types::*;
use common::*;
use serde_json::json;
use std::time::Duration;
use webdriver::Browser;

fn server() -> Server {
    Server::start_with(ServerOptions {
        extra_args: vec![
            "--local-runtime".into(),
            "process".into(),
            "--kill-grace-seconds".into(),
            "2".into(),
        ],
        dispatch: true,
        ..Default::default()
    })
}

async fn register(client: &aws_sdk_batch::Client, name: &str, script: &str) {
    client
        .register_job_definition()
        .job_definition_name(name)
        .r#type(JobDefinitionType::Container)
        .container_properties(
            ContainerProperties::builder()
                .image("flotilla-test/busybox:latest")
                .command("sh")
                .command("-c")
                .command(script)
                .environment(
                    KeyValuePair::builder()
                        .name("GREETING")
                        .value("<b>not bold</b>")
                        .build(),
                )
                .resource_requirements(
                    ResourceRequirement::builder()
                        .r#type(ResourceType::Vcpu)
                        .value("1")
                        .build(),
                )
                .resource_requirements(
                    ResourceRequirement::builder()
                        .r#type(ResourceType::Memory)
                        .value("32")
                        .build(),
                )
                .build(),
        )
        .send()
        .await
        .expect("register");
}

async fn submit(client: &aws_sdk_batch::Client, name: &str, queue: &str, def: &str) -> String {
    common::submit(client, name, queue, def).await
}

fn screenshot_dir() -> Option<std::path::PathBuf> {
    std::env::var_os("FLOTILLA_CONSOLE_SCREENSHOTS").map(Into::into)
}

async fn save_screenshot(b: &Browser, name: &str) {
    if let Some(dir) = screenshot_dir() {
        std::fs::create_dir_all(&dir).expect("screenshot dir");
        std::fs::write(dir.join(name), b.screenshot_png().await).expect("write screenshot");
    }
}

async fn sign_in(b: &Browser, s: &Server) {
    b.goto(&format!("{}/console", s.endpoint)).await;
    assert!(
        b.url().await.contains("/console/login"),
        "{}",
        b.url().await
    );
    b.type_into("#access_key_id", ACCESS_KEY).await;
    b.type_into("#secret_access_key", SECRET_KEY).await;
    b.click("#sign-in").await;
    b.until(10, "the overview after signing in", || async {
        b.find("#queues-table").await.map(|_| ())
    })
    .await;
}

/// The text of an element, polled until `ok` holds.
async fn wait_text(
    b: &Browser,
    css: &str,
    secs: u64,
    what: &str,
    ok: impl Fn(&str) -> bool,
) -> String {
    b.until(secs, what, || async {
        let t = b.text(css).await;
        ok(&t).then_some(t)
    })
    .await
}

#[tokio::test]
async fn console_follows_jobs_terminates_and_toggles_queues() {
    let s = server();
    let c = s.client();
    register(
        &c,
        "greet",
        "echo hello-from-$AWS_BATCH_JOB_ARRAY_INDEX; sleep 3",
    )
    .await;
    register(&c, "long", "echo started-long; sleep 300").await;
    // A queue on a DISABLED environment: its jobs wait RUNNABLE, with a reason.
    let ce = create_local_ce(&c, "held").await;
    create_queue(&c, "overnight", &ce).await;
    for i in 0..3 {
        submit(&c, &format!("nightly-{i}"), "overnight", "greet").await;
    }

    let b = Browser::start().await;
    sign_in(&b, &s).await;
    wait_text(
        &b,
        "#queues-table",
        20,
        "both queues on the overview",
        |t| t.contains("default") && t.contains("overnight"),
    )
    .await;

    // An array job progresses to SUCCEEDED on its page, without a reload. It waits on a DISABLED
    // environment until its page is open, so that a slow machine cannot finish it first.
    let gate = create_local_ce(&c, "gate").await;
    create_queue(&c, "gated", &gate).await;
    let array = c
        .submit_job()
        .job_name("console-array")
        .job_queue("gated")
        .job_definition("greet")
        .array_properties(ArrayProperties::builder().size(3).build())
        .send()
        .await
        .expect("submit array")
        .job_id
        .expect("jobId");
    b.goto(&format!("{}/console/jobs/{array}", s.endpoint))
        .await;
    let first = b.text("#job-status").await;
    assert_ne!(
        first, "SUCCEEDED",
        "the array finished before its page was open"
    );
    b.exec("window.__same_page = 42;", vec![]).await;
    c.update_compute_environment()
        .compute_environment("gate")
        .state(CeState::Enabled)
        .send()
        .await
        .expect("enable gate");
    let seen = std::cell::RefCell::new(vec![first]);
    b.until(
        90,
        "the array job's status to reach SUCCEEDED live",
        || async {
            let t = b.text("#job-status").await;
            let mut seen = seen.borrow_mut();
            if seen.last() != Some(&t) {
                seen.push(t.clone());
            }
            (t == "SUCCEEDED").then_some(())
        },
    )
    .await;
    let seen = seen.into_inner();
    assert_eq!(
        b.exec("return window.__same_page;", vec![]).await,
        json!(42),
        "the page reloaded instead of updating in place"
    );
    assert_eq!(
        b.text("#array-summary td[data-status=SUCCEEDED]").await,
        "3",
        "statuses seen: {seen:?}"
    );
    let sdk = describe_job(&c, &array).await;
    assert_eq!(sdk.status, Some(JobStatus::Succeeded));

    // A child's page: its log, its container spec (escaped), its place in the graph.
    b.goto(&format!("{}/console/jobs/{array}:1", s.endpoint))
        .await;
    wait_text(&b, "#log", 20, "child 1's log", |t| {
        t.contains("hello-from-1")
    })
    .await;
    let container = b.text("#environment").await;
    assert!(container.contains("<b>not bold</b>"), "{container}");
    assert!(b.find("#graph svg").await.is_some(), "no dependency graph");

    // A running job: its log followed live, then terminated through the UI.
    let long = c
        .submit_job()
        .job_name("console-long")
        .job_queue("default")
        .job_definition("long")
        .depends_on(JobDependency::builder().job_id(&array).build())
        .send()
        .await
        .expect("submit long")
        .job_id
        .expect("jobId");
    b.goto(&format!("{}/console/jobs/{long}", s.endpoint)).await;
    wait_text(&b, "#job-status", 60, "the long job RUNNING", |t| {
        t == "RUNNING"
    })
    .await;
    wait_text(&b, "#log", 30, "the long job's log followed", |t| {
        t.contains("started-long")
    })
    .await;
    assert!(
        b.find("#graph svg").await.is_some(),
        "no graph of the job's dependency on the array"
    );
    wait_text(
        &b,
        "#graph-self-status",
        10,
        "the graph's own node RUNNING",
        |t| t == "RUNNING",
    )
    .await;
    save_screenshot(&b, "console-job.png").await;
    b.click("#terminate").await;
    let q = wait_text(&b, "#question", 10, "the confirmation page", |t| {
        !t.is_empty()
    })
    .await;
    assert_eq!(q, "Terminate 1 job?");
    b.click("#confirm").await;
    b.until(10, "back on the job page", || async {
        b.url()
            .await
            .ends_with(&format!("/console/jobs/{long}"))
            .then_some(())
    })
    .await;
    wait_text(&b, "#job-status", 60, "the terminated job FAILED", |t| {
        t == "FAILED"
    })
    .await;
    let sdk = describe_job(&c, &long).await;
    assert_eq!(sdk.status, Some(JobStatus::Failed));
    assert!(
        sdk.status_reason
            .as_deref()
            .unwrap_or("")
            .contains("web console"),
        "{:?}",
        sdk.status_reason
    );

    // The overview: the waiting queue's oldest RUNNABLE job and why it waits; disable and enable
    // a queue with confirmation.
    b.goto(&format!("{}/console", s.endpoint)).await;
    let row = wait_text(
        &b,
        "#queues-table",
        30,
        "overnight's oldest RUNNABLE job",
        |t| t.contains("nightly-"),
    )
    .await;
    assert!(row.contains("nightly-"), "{row}");
    b.until(20, "the charts drawn", || async {
        b.find("#chart-vcpus svg").await.map(|_| ())
    })
    .await;
    save_screenshot(&b, "console-overview.png").await;
    b.click(r#"button[data-action="disable-queue"][data-target="overnight"]"#)
        .await;
    wait_text(&b, "#question", 10, "the confirmation page", |t| {
        t == "Disable job queue overnight?"
    })
    .await;
    b.click("#confirm").await;
    let state = |want: JqState| {
        let c = c.clone();
        async move {
            let got = c
                .describe_job_queues()
                .job_queues("overnight")
                .send()
                .await
                .expect("describe queues")
                .job_queues
                .unwrap_or_default()
                .remove(0)
                .state;
            (got == Some(want)).then_some(())
        }
    };
    b.until(10, "overnight DISABLED", || state(JqState::Disabled))
        .await;
    b.until(10, "the overview again", || async {
        b.find(r#"button[data-action="enable-queue"][data-target="overnight"]"#)
            .await
            .map(|_| ())
    })
    .await;
    b.click(r#"button[data-action="enable-queue"][data-target="overnight"]"#)
        .await;
    wait_text(&b, "#question", 10, "the confirmation page", |t| {
        t == "Enable job queue overnight?"
    })
    .await;
    b.click("#confirm").await;
    b.until(10, "overnight ENABLED", || state(JqState::Enabled))
        .await;

    // And a compute environment: enabling `held` lets overnight's jobs run.
    b.until(10, "the overview again", || async {
        b.find(r#"button[data-action="enable-ce"][data-target="held"]"#)
            .await
            .map(|_| ())
    })
    .await;
    b.click(r#"button[data-action="enable-ce"][data-target="held"]"#)
        .await;
    wait_text(&b, "#question", 10, "the confirmation page", |t| {
        t == "Enable compute environment held?"
    })
    .await;
    b.click("#confirm").await;
    b.until(10, "held ENABLED", || async {
        let envs = c
            .describe_compute_environments()
            .compute_environments("held")
            .send()
            .await
            .expect("describe environments")
            .compute_environments
            .unwrap_or_default();
        (envs[0].state == Some(CeState::Enabled)).then_some(())
    })
    .await;

    // Signing out ends access from this browser.
    b.click("#logout").await;
    b.until(10, "the sign-in page after signing out", || async {
        b.find("#sign-in").await.map(|_| ())
    })
    .await;
    b.goto(&format!("{}/console/jobs", s.endpoint)).await;
    assert!(
        b.url().await.contains("/console/login"),
        "{}",
        b.url().await
    );
    b.quit().await;
}

/// Form-encodes pairs.
fn form(pairs: &[(&str, &str)]) -> String {
    pairs
        .iter()
        .map(|(k, v)| {
            format!(
                "{k}={}",
                percent_encoding::utf8_percent_encode(v, percent_encoding::NON_ALPHANUMERIC)
            )
        })
        .collect::<Vec<_>>()
        .join("&")
}

#[tokio::test]
async fn nothing_without_signing_in() {
    let s = server();
    let c = s.client();
    register(&c, "long", "sleep 300").await;
    let job = submit(&c, "secret-job-name", "default", "long").await;
    wait_for(&c, &job, &[JobStatus::Running], 60).await;

    // In the browser: every page leads to the sign-in form and shows nothing of the job.
    let b = Browser::start().await;
    for path in [
        "/console".to_string(),
        "/console/jobs?status=ALL".to_string(),
        format!("/console/jobs/{job}"),
    ] {
        b.goto(&format!("{}{path}", s.endpoint)).await;
        let url = b.url().await;
        assert!(url.contains("/console/login"), "{path} led to {url}");
        assert!(
            !b.source().await.contains("secret-job-name"),
            "{path} showed the job"
        );
    }
    b.goto(&format!("{}/console/api/jobs/{job}", s.endpoint))
        .await;
    assert!(
        !b.source().await.contains("RUNNING"),
        "the job API answered"
    );
    // A wrong secret is refused.
    b.goto(&format!("{}/console/login", s.endpoint)).await;
    b.type_into("#access_key_id", ACCESS_KEY).await;
    b.type_into("#secret_access_key", "not-the-secret").await;
    b.click("#sign-in").await;
    wait_text(&b, "#login-error", 10, "the sign-in error", |t| {
        !t.is_empty()
    })
    .await;
    b.goto(&format!("{}/console/jobs/{job}", s.endpoint)).await;
    assert!(b.url().await.contains("/console/login"));
    b.quit().await;

    // Over plain HTTP: actions without a session, with a forged one, without the CSRF token or
    // from another origin all fail, and the job keeps running.
    let http = console_http();
    let origin = s.endpoint.clone();
    let act = form(&[("action", "terminate"), ("job", &job), ("reason", "x")]);
    let post = |path: &str, cookie: Option<&str>, origin: &str, body: String| {
        let mut r = http
            .post(format!("{}{path}", s.endpoint))
            .header("content-type", "application/x-www-form-urlencoded")
            .header("origin", origin)
            .body(body);
        if let Some(c) = cookie {
            r = r.header("cookie", c);
        }
        r.send()
    };
    let r = post("/console/act", None, &origin, act.clone())
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
    let forged = "flotilla_console=QUtJREZMT1RJTExBVEVTVA.9999999999.00ff";
    let r = post("/console/act", Some(forged), &origin, act.clone())
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
    let r = http
        .get(format!("{}/console/jobs", s.endpoint))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 303);
    // A real session, but no CSRF token; then a token-less request from another site.
    let login = form(&[
        ("access_key_id", ACCESS_KEY),
        ("secret_access_key", SECRET_KEY),
    ]);
    let r = post("/console/login", None, &origin, login.clone())
        .await
        .unwrap();
    assert_eq!(r.status(), 303);
    let set = r.headers()["set-cookie"].to_str().unwrap().to_string();
    for attr in ["HttpOnly", "SameSite=Strict", "Path=/console"] {
        assert!(set.contains(attr), "{set}");
    }
    let cookie = set.split(';').next().unwrap().to_string();
    let r = post("/console/act", Some(&cookie), &origin, act.clone())
        .await
        .unwrap();
    assert_eq!(r.status(), 403, "an action without a CSRF token");
    let r = post(
        "/console/act",
        Some(&cookie),
        "http://evil.example",
        act.clone(),
    )
    .await
    .unwrap();
    assert_eq!(r.status(), 403, "an action from another origin");
    let r = post("/console/login", None, "http://evil.example", login)
        .await
        .unwrap();
    assert_eq!(r.status(), 403, "a sign-in from another origin");
    let huge = form(&[
        ("access_key_id", ACCESS_KEY),
        ("secret_access_key", &"x".repeat(10_000)),
    ]);
    let r = post("/console/login", None, &origin, huge).await.unwrap();
    assert_eq!(r.status(), 413, "a sign-in form over 4 KiB");
    // Bad input gets a page naming the field, not a 500.
    let r = http
        .get(format!("{}/console/jobs?status=NOPE", s.endpoint))
        .header("cookie", &cookie)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    assert!(r.text().await.unwrap().contains("status:"));

    tokio::time::sleep(Duration::from_millis(500)).await;
    let j = describe_job(&c, &job).await;
    assert_eq!(j.status, Some(JobStatus::Running), "{:?}", j.status_reason);
}

/// The rows of the jobs table on the page (the "none" row counts as none).
async fn job_rows(b: &Browser) -> usize {
    let n = b
        .exec(
            "return document.querySelectorAll('#jobs-table input.pick').length;",
            vec![],
        )
        .await;
    n.as_u64().unwrap_or(0) as usize
}

#[tokio::test]
async fn listing_pages_searches_and_bulk_terminates() {
    let s = server();
    let c = s.client();
    register(&c, "wait", "sleep 300").await;
    // A DISABLED environment: the jobs stay RUNNABLE, as many as we like.
    let ce = create_local_ce(&c, "parked").await;
    create_queue(&c, "bulk", &ce).await;
    let mut ids = Vec::new();
    for i in 0..120 {
        ids.push(submit(&c, &format!("bulk-{i}"), "bulk", "wait").await);
    }
    let b = Browser::start().await;
    sign_in(&b, &s).await;

    // Paging forward by ListJobs' token: 50 + 50 + 20, every job once.
    b.goto(&format!(
        "{}/console/jobs?queue=bulk&status=ALL&size=50",
        s.endpoint
    ))
    .await;
    let mut seen = std::collections::HashSet::new();
    let mut pages = 0;
    loop {
        pages += 1;
        let n = job_rows(&b).await;
        let page_ids = b
            .exec(
                "return [...document.querySelectorAll('#jobs-table input.pick')].map(e => e.value);",
                vec![],
            )
            .await;
        for id in page_ids.as_array().expect("ids") {
            assert!(seen.insert(id.as_str().unwrap().to_string()), "{id} twice");
        }
        assert_eq!(n, if pages < 3 { 50 } else { 20 }, "page {pages}");
        if b.find("#next-page").await.is_none() {
            break;
        }
        b.click("#next-page").await;
        b.until(10, "the next page", || async {
            b.url().await.contains("next=").then_some(())
        })
        .await;
        b.until(10, "the next page's rows", || async {
            let first = b
                .exec(
                    "const e = document.querySelector('#jobs-table input.pick'); return e && e.value;",
                    vec![],
                )
                .await;
            (!seen.contains(first.as_str().unwrap_or_default())).then_some(())
        })
        .await;
    }
    assert_eq!((pages, seen.len()), (3, 120));

    // Search by name (a prefix, as ListJobs' JOB_NAME filter), then terminate what it found.
    b.goto(&format!("{}/console/jobs?queue=bulk", s.endpoint))
        .await;
    b.type_into("#f-name", "bulk-7*").await;
    b.click("#f-apply").await;
    b.until(10, "the search's 11 jobs", || async {
        (job_rows(&b).await == 11).then_some(())
    })
    .await;
    b.click("#select-all").await;
    b.click("#bulk-terminate").await;
    wait_text(&b, "#question", 10, "the confirmation page", |t| {
        t == "Terminate 11 jobs?"
    })
    .await;
    b.click("#confirm").await;
    let found: Vec<&String> = ids
        .iter()
        .enumerate()
        .filter(|(i, _)| *i == 7 || (70..80).contains(i))
        .map(|(_, id)| id)
        .collect();
    for id in &found {
        wait_for(&c, id, &[JobStatus::Failed], 30).await;
    }
    let other = describe_job(&c, &ids[8]).await;
    assert_eq!(other.status, Some(JobStatus::Runnable));
    b.quit().await;
}

#[tokio::test]
async fn without_credentials_no_sign_in_but_still_csrf() {
    let s = Server::start_with(ServerOptions {
        auth: false,
        ..Default::default()
    });
    let http = console_http();
    let r = http
        .get(format!("{}/console", s.endpoint))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let page = r.text().await.unwrap();
    assert!(page.contains("queues-table"), "{page}");
    let r = http
        .post(format!("{}/console/act", s.endpoint))
        .header("content-type", "application/x-www-form-urlencoded")
        .header("origin", &s.endpoint)
        .body(form(&[("action", "disable-queue"), ("target", "default")]))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403, "an action without the CSRF token");
}
