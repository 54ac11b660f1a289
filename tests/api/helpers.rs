//! `spawn_app`: a real server on port 0 over a temporary copy of the shipped
//! LIDC bundle, plus typed request helpers. Logs only when `TEST_LOG` is set.

use std::path::{Path, PathBuf};
use std::sync::Once;
use std::time::Duration;

use actix_web::dev::ServerHandle;
use serde_json::{json, Value};
use triaged::config::Settings;
use triaged::startup::Application;

pub const MODEL: &str = "lidc-malignancy";

pub struct TestApp {
    pub address: String,
    pub client: reqwest::Client,
    pub models_dir: PathBuf,
    pub handle: ServerHandle,
    pub server: tokio::task::JoinHandle<std::io::Result<()>>,
    _dir: tempfile::TempDir,
}

fn init_logs() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        if std::env::var("TEST_LOG").is_ok() {
            triaged::telemetry::init(triaged::cli::LogFormat::Text);
        }
    });
}

/// The shipped bundle, copied into `models_dir/<MODEL>/<version>`.
pub fn install_bundle(models_dir: &Path, version: &str) -> PathBuf {
    let src = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("models")
        .join(MODEL)
        .join("1");
    let dst = models_dir.join(MODEL).join(version);
    std::fs::create_dir_all(&dst).unwrap();
    for f in ["model.json", "model.safetensors"] {
        std::fs::copy(src.join(f), dst.join(f)).unwrap();
    }
    dst
}

/// Starts a server; `with_model` installs the shipped bundle first, `tweak`
/// adjusts the settings. Waits until ready when a model is installed.
pub async fn spawn_app_with(with_model: bool, tweak: impl FnOnce(&mut Settings)) -> TestApp {
    init_logs();
    let dir = tempfile::tempdir().unwrap();
    let models_dir = dir.path().join("models");
    std::fs::create_dir_all(&models_dir).unwrap();
    if with_model {
        install_bundle(&models_dir, "1");
    }
    let mut settings = Settings::defaults();
    settings.server.bind = "127.0.0.1:0".parse().unwrap();
    settings.server.workers = 2;
    settings.server.shutdown_timeout_seconds = 5;
    settings.models.dir = models_dir.clone();
    settings.store.url = format!("sqlite://{}", dir.path().join("queue.db").display()).into();
    tweak(&mut settings);
    let app = Application::build(settings).await.expect("build app");
    let address = format!("http://127.0.0.1:{}", app.port());
    let handle = app.handle();
    let server = tokio::spawn(app.run_until_stopped());
    let t = TestApp {
        address,
        client: json_client(),
        models_dir,
        handle,
        server,
        _dir: dir,
    };
    if with_model {
        t.wait_ready().await;
    }
    t
}

/// A client like the console: every request says `Content-Type:
/// application/json` (state-changing requests without it are refused, 415), so
/// a test of an action with no body need not repeat it. A request's own
/// content type replaces it.
pub fn json_client() -> reqwest::Client {
    let mut headers = reqwest::header::HeaderMap::new();
    headers.insert(
        reqwest::header::CONTENT_TYPE,
        reqwest::header::HeaderValue::from_static("application/json"),
    );
    reqwest::Client::builder()
        .default_headers(headers)
        .build()
        .unwrap()
}

pub async fn spawn_app() -> TestApp {
    spawn_app_with(true, |_| {}).await
}

impl TestApp {
    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.address)
    }

    pub async fn wait_ready(&self) {
        for _ in 0..200 {
            if let Ok(r) = self.client.get(self.url("/v2/health/ready")).send().await {
                if r.status() == 200 {
                    return;
                }
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        panic!("server not ready in 5 s");
    }

    pub async fn get(&self, path: &str) -> reqwest::Response {
        self.client.get(self.url(path)).send().await.unwrap()
    }

    pub async fn get_json(&self, path: &str) -> Value {
        self.get(path).await.json().await.unwrap()
    }

    pub async fn post_json(&self, path: &str, body: &Value) -> reqwest::Response {
        self.client
            .post(self.url(path))
            .json(body)
            .send()
            .await
            .unwrap()
    }

    pub async fn post_raw(
        &self,
        path: &str,
        body: impl Into<reqwest::Body>,
        content_type: &str,
    ) -> reqwest::Response {
        self.client
            .post(self.url(path))
            .header("content-type", content_type)
            .body(body)
            .send()
            .await
            .unwrap()
    }

    /// The model's feature names, from `GET /v1/models/{model}`.
    pub async fn feature_names(&self) -> Vec<String> {
        let m: Value = self
            .get(&format!("/v1/models/{MODEL}"))
            .await
            .json()
            .await
            .unwrap();
        m["input"]["features"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_str().unwrap().to_string())
            .collect()
    }

    /// `POST /v1/admin/models/{MODEL}/reload`.
    pub async fn reload(&self) -> reqwest::Response {
        self.client
            .post(self.url(&format!("/v1/admin/models/{MODEL}/reload")))
            .send()
            .await
            .unwrap()
    }

    pub async fn metrics(&self) -> String {
        self.get("/metrics").await.text().await.unwrap()
    }
}

/// A plausible nodule (LIDC scale) varied by `i`.
pub fn nodule(i: usize) -> Vec<f64> {
    let f = i as f64;
    vec![
        50.0 + 37.0 * f,
        4.0 + 0.7 * f,
        2.0 + (i % 9) as f64,
        150.0 + 3.0 * f,
        200.0 + 2.0 * f,
        [1.0, 1.25, 2.5, 3.0][i % 4],
        0.55 + 0.01 * (i % 20) as f64,
        (i % 2) as f64,
    ]
}

pub fn triage_body(rows: &[Vec<f64>]) -> Value {
    json!({ "instances": rows.iter().map(|r| json!({ "features": r })).collect::<Vec<_>>() })
}

/// Asserts a problem+json answer with `status` whose detail contains `needle`.
pub async fn assert_problem(resp: reqwest::Response, status: u16, needle: &str) -> Value {
    assert_eq!(resp.status().as_u16(), status, "status");
    let ct = resp
        .headers()
        .get("content-type")
        .map(|v| v.to_str().unwrap().to_string())
        .unwrap_or_default();
    assert!(
        ct.starts_with("application/problem+json"),
        "content-type {ct}"
    );
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["status"], status, "{body}");
    let detail = body["detail"].as_str().unwrap_or_default();
    assert!(
        detail.contains(needle),
        "detail {detail:?} lacks {needle:?}"
    );
    body
}

/// Metric value of the first sample line starting with `prefix` (name + labels).
pub fn metric_value(text: &str, prefix: &str) -> Option<f64> {
    text.lines()
        .find(|l| l.starts_with(prefix))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

/// A token entry for `auth.tokens`.
pub fn token(secret: &str, role: triaged::auth::Role, subject: &str) -> triaged::auth::TokenSpec {
    use sha2::Digest;
    triaged::auth::TokenSpec {
        sha256: hex::encode(sha2::Sha256::digest(secret.as_bytes())),
        role,
        subject: subject.into(),
    }
}

impl TestApp {
    /// A request as `subject` on an open (token-less) server.
    pub fn as_subject(
        &self,
        method: reqwest::Method,
        path: &str,
        subject: &str,
    ) -> reqwest::RequestBuilder {
        self.client
            .request(method, self.url(path))
            .header("x-triaged-subject", subject)
    }
}
