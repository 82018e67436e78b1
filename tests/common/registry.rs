//! A container registry on loopback, enough for `docker pull`: the Docker Registry HTTP API v2
//! (`GET /v2/`, manifests, blobs) serving one image under the repository `flotilla-test/busybox`
//! and any tag. Docker pulls from 127.0.0.0/8 over plain HTTP without being told to.
//!
//! The image is the busybox test image as `docker save` writes it, with a file of its own added
//! to its layer, `/etc/flotilla-registry`, holding a random id: the engine has neither its layer
//! nor its config, so it really downloads both, and a job that prints the file shows it ran the
//! image pulled from this registry.
//!
//! It runs on a thread and runtime of its own, so it answers whatever the test's own runtime is
//! doing, and stops when dropped.

use axum::Router;
use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::Response;
use axum::routing::get;
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

pub const REPOSITORY: &str = "flotilla-test/busybox";
const MANIFEST_V2: &str = "application/vnd.docker.distribution.manifest.v2+json";

pub struct Registry {
    pub addr: SocketAddr,
    served: Arc<Served>,
    /// The contents of `/etc/flotilla-registry` in the served image.
    pub marker: String,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

struct Served {
    manifest: Vec<u8>,
    manifest_digest: String,
    blobs: HashMap<String, Vec<u8>>,
    manifest_requests: AtomicUsize,
    blob_requests: AtomicUsize,
    /// Whether blob downloads are answered (or held until it turns true).
    open: tokio::sync::watch::Sender<bool>,
    /// `Basic …` every request must carry, for a private registry.
    login: Option<String>,
    /// Requests refused for a missing or wrong login.
    refused: AtomicUsize,
}

impl Registry {
    /// Serves `image` (present in the local Docker engine) as `127.0.0.1:PORT/flotilla-test/busybox:*`.
    pub fn serve(image: &str) -> Registry {
        Self::start(image, true, None)
    }

    /// Like [`Registry::serve`], but every request needs HTTP basic auth as `user`/`password`.
    pub fn serve_private(image: &str, user: &str, password: &str) -> Registry {
        use base64::Engine;
        let login = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
        Self::start(image, true, Some(format!("Basic {login}")))
    }

    /// Requests refused for want of the right login so far.
    pub fn refused(&self) -> usize {
        self.served.refused.load(Ordering::SeqCst)
    }

    /// Like [`Registry::serve`], but blob downloads wait until [`Registry::release`]: a pull
    /// that stays in progress for as long as the test needs.
    pub fn serve_held(image: &str) -> Registry {
        Self::start(image, false, None)
    }

    /// Lets held blob downloads go on.
    pub fn release(&self) {
        self.served.open.send_replace(true);
    }

    /// Blob requests received so far (answered or held).
    pub fn blob_requests(&self) -> usize {
        self.served.blob_requests.load(Ordering::SeqCst)
    }

    fn start(image: &str, open: bool, login: Option<String>) -> Registry {
        let saved = Command::new("docker")
            .args(["save", image])
            .output()
            .expect("run docker save");
        assert!(
            saved.status.success(),
            "docker save {image}: {}",
            String::from_utf8_lossy(&saved.stderr)
        );
        let marker = uuid::Uuid::new_v4().to_string();
        let served = Arc::new(Served::from_saved(&saved.stdout, &marker, open, login));
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let state = served.clone();
        let thread = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("registry runtime");
            rt.block_on(async move {
                let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
                    .await
                    .expect("bind registry");
                ready_tx
                    .send(listener.local_addr().expect("registry address"))
                    .expect("report address");
                let app = Router::new()
                    .route("/v2/", get(base))
                    .route("/v2/{*rest}", get(item))
                    .with_state(state);
                axum::serve(listener, app)
                    .with_graceful_shutdown(async {
                        let _ = stopped.await;
                    })
                    .await
                    .expect("registry serve");
            });
        });
        let addr = ready_rx.recv().expect("registry address");
        Registry {
            addr,
            served,
            marker,
            stop: Some(stop),
            thread: Some(thread),
        }
    }

    /// `127.0.0.1:PORT/flotilla-test/busybox:TAG`.
    pub fn image(&self, tag: &str) -> String {
        format!("{}/{REPOSITORY}:{tag}", self.addr)
    }

    /// Manifest requests answered so far (each `docker pull` makes at least one).
    pub fn manifest_requests(&self) -> usize {
        self.served.manifest_requests.load(Ordering::SeqCst)
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        // A held download would keep the graceful shutdown waiting.
        self.release();
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn sha256(data: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(data)))
}

impl Served {
    /// Reads `docker save`'s archive (`manifest.json`, the config, one `layer.tar` per layer),
    /// adds `/etc/flotilla-registry` to the last layer and builds the schema-2 manifest a
    /// registry would hold for the result. Layers are served uncompressed; the engine
    /// recognises the compression of what it downloads.
    fn from_saved(archive: &[u8], marker: &str, open: bool, login: Option<String>) -> Served {
        let files = untar(archive);
        let index: serde_json::Value =
            serde_json::from_slice(&files["manifest.json"]).expect("manifest.json");
        let entry = &index[0];
        let mut config: serde_json::Value =
            serde_json::from_slice(&files[entry["Config"].as_str().expect("Config")])
                .expect("image config");
        let paths = entry["Layers"].as_array().expect("Layers");
        let mut blobs = HashMap::new();
        let mut layers = Vec::new();
        for (i, l) in paths.iter().enumerate() {
            let mut data = files[l.as_str().expect("layer path")].clone();
            if i + 1 == paths.len() {
                data = with_file(&data, "etc/flotilla-registry", marker.as_bytes());
                // The layer's uncompressed digest, which the engine checks after download.
                config["rootfs"]["diff_ids"][i] = sha256(&data).into();
            }
            let digest = sha256(&data);
            layers.push(serde_json::json!({
                "mediaType": "application/vnd.docker.image.rootfs.diff.tar.gzip",
                "size": data.len(),
                "digest": digest,
            }));
            blobs.insert(digest, data);
        }
        let config = serde_json::to_vec(&config).expect("encode config");
        let config_digest = sha256(&config);
        let manifest = serde_json::to_vec(&serde_json::json!({
            "schemaVersion": 2,
            "mediaType": MANIFEST_V2,
            "config": {
                "mediaType": "application/vnd.docker.container.image.v1+json",
                "size": config.len(),
                "digest": config_digest,
            },
            "layers": layers,
        }))
        .expect("encode manifest");
        blobs.insert(config_digest, config);
        Served {
            manifest_digest: sha256(&manifest),
            manifest,
            blobs,
            manifest_requests: AtomicUsize::new(0),
            blob_requests: AtomicUsize::new(0),
            open: tokio::sync::watch::Sender::new(open),
            login,
            refused: AtomicUsize::new(0),
        }
    }
}

/// `archive` (a tar) with a regular file appended before its end-of-archive blocks.
fn with_file(archive: &[u8], path: &str, content: &[u8]) -> Vec<u8> {
    let mut out = archive[..end_of_entries(archive)].to_vec();
    let mut h = [0u8; 512];
    let mut put = |at: usize, v: &[u8]| h[at..at + v.len()].copy_from_slice(v);
    put(0, path.as_bytes());
    put(100, b"0000644\0");
    put(108, b"0000000\0");
    put(116, b"0000000\0");
    put(124, format!("{:011o}\0", content.len()).as_bytes());
    put(136, b"00000000000\0");
    put(156, b"0");
    put(257, b"ustar\0");
    put(263, b"00");
    // The checksum is computed with its own field as spaces.
    h[148..156].copy_from_slice(b"        ");
    let sum: u32 = h.iter().map(|b| u32::from(*b)).sum();
    h[148..156].copy_from_slice(format!("{sum:06o}\0 ").as_bytes());
    out.extend_from_slice(&h);
    out.extend_from_slice(content);
    out.resize(out.len().div_ceil(512) * 512, 0);
    out.extend_from_slice(&[0u8; 1024]);
    out
}

/// The offset where `archive`'s entries end (its end-of-archive zero blocks begin).
fn end_of_entries(data: &[u8]) -> usize {
    let mut at = 0;
    while at + 512 <= data.len() {
        let h = &data[at..at + 512];
        if h.iter().all(|b| *b == 0) {
            break;
        }
        at += 512 + header_size(h).div_ceil(512) * 512;
    }
    at
}

fn header_field(b: &[u8]) -> String {
    let end = b.iter().position(|c| *c == 0).unwrap_or(b.len());
    String::from_utf8_lossy(&b[..end]).trim().to_string()
}

fn header_size(h: &[u8]) -> usize {
    usize::from_str_radix(&header_field(&h[124..136]), 8).expect("tar size")
}

/// The regular files of a ustar archive, by path.
fn untar(data: &[u8]) -> HashMap<String, Vec<u8>> {
    let field = header_field;
    let mut files = HashMap::new();
    let mut at = 0;
    while at + 512 <= data.len() {
        let h = &data[at..at + 512];
        if h.iter().all(|b| *b == 0) {
            break;
        }
        let name = field(&h[0..100]);
        let prefix = field(&h[345..500]);
        let size = header_size(h);
        let path = if prefix.is_empty() {
            name
        } else {
            format!("{prefix}/{name}")
        };
        at += 512;
        if matches!(h[156], b'0' | 0) {
            files.insert(path, data[at..at + size].to_vec());
        }
        at += size.div_ceil(512) * 512;
    }
    files
}

/// The challenge for a request without the private registry's login, if it lacks it.
fn refuse(s: &Served, headers: &HeaderMap) -> Option<Response> {
    let want = s.login.as_deref()?;
    let given = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok());
    if given == Some(want) {
        return None;
    }
    s.refused.fetch_add(1, Ordering::SeqCst);
    let body = serde_json::json!({"errors": [{"code": "UNAUTHORIZED", "message": "authentication required"}]});
    Some(
        Response::builder()
            .status(StatusCode::UNAUTHORIZED)
            .header(header::WWW_AUTHENTICATE, "Basic realm=\"flotilla-test\"")
            .header("Docker-Distribution-API-Version", "registry/2.0")
            .header(header::CONTENT_TYPE, "application/json")
            .body(Body::from(body.to_string()))
            .expect("response"),
    )
}

async fn base(State(s): State<Arc<Served>>, headers: HeaderMap) -> Response {
    if let Some(r) = refuse(&s, &headers) {
        return r;
    }
    Response::builder()
        .header("Docker-Distribution-API-Version", "registry/2.0")
        .header(header::CONTENT_TYPE, "application/json")
        .body(Body::from("{}"))
        .expect("response")
}

fn unknown(code: &str) -> Response {
    let body = serde_json::json!({"errors": [{"code": code, "message": code.to_lowercase().replace('_', " ")}]});
    Response::builder()
        .status(StatusCode::NOT_FOUND)
        .header(header::CONTENT_TYPE, "application/json")
        .body(Body::from(body.to_string()))
        .expect("response")
}

/// `<name>/manifests/<reference>` or `<name>/blobs/<digest>`.
async fn item(
    State(s): State<Arc<Served>>,
    Path(rest): Path<String>,
    headers: HeaderMap,
) -> Response {
    if let Some(r) = refuse(&s, &headers) {
        return r;
    }
    if let Some((name, reference)) = rest.rsplit_once("/manifests/") {
        s.manifest_requests.fetch_add(1, Ordering::SeqCst);
        if name != REPOSITORY
            || (reference.starts_with("sha256:") && reference != s.manifest_digest)
        {
            return unknown("MANIFEST_UNKNOWN");
        }
        return Response::builder()
            .header(header::CONTENT_TYPE, MANIFEST_V2)
            .header("Docker-Content-Digest", &s.manifest_digest)
            .body(Body::from(s.manifest.clone()))
            .expect("response");
    }
    if rest.contains("/blobs/") {
        s.blob_requests.fetch_add(1, Ordering::SeqCst);
        let _ = s.open.subscribe().wait_for(|open| *open).await;
    }
    if let Some((name, digest)) = rest.rsplit_once("/blobs/")
        && name == REPOSITORY
        && let Some(blob) = s.blobs.get(digest)
    {
        return Response::builder()
            .header(header::CONTENT_TYPE, "application/octet-stream")
            .header("Docker-Content-Digest", digest)
            .body(Body::from(blob.clone()))
            .expect("response");
    }
    unknown("BLOB_UNKNOWN")
}
