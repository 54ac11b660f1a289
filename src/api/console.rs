//! The reviewer console (docs/console.md): a single page at `/console/` whose
//! HTML, script and style are compiled into the binary (no CDN, no build step:
//! it works on a hospital network without internet), served with a strict
//! Content-Security-Policy. The page works only through the public API, so the
//! role matrix is the API's; this file adds the two small routes the page needs
//! before and after sign-in: how the deployment is set up, and who the caller is.
//!
//! The page itself is not in the OpenAPI document (it is not an API operation);
//! its paths fall outside every `/v1`/`/v2` template, so the 404/405 fallback
//! treats them like any unknown path.

use actix_web::http::header::{self, HeaderValue};
use actix_web::{get, web, HttpResponse};
use serde::Serialize;
use utoipa::ToSchema;

use super::caller::Authenticated;
use super::problem::Problem;
use super::AppState;
use crate::auth::Role;

const INDEX_HTML: &str = include_str!("console/index.html");
const CONSOLE_JS: &str = include_str!("console/console.js");
const CONSOLE_CSS: &str = include_str!("console/console.css");

/// The console's policy: its own script and style files only (no inline script,
/// no `eval`), images from itself or from `blob:` URLs (case images are fetched
/// with the bearer header and shown as blobs), no framing, no `<base>`, and
/// forms that post nowhere else.
pub const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; script-src 'self'; \
     style-src 'self'; img-src 'self' blob: data:; connect-src 'self'; \
     frame-ancestors 'none'; base-uri 'none'; form-action 'self'";

/// Registers the page and its assets.
pub fn pages(cfg: &mut web::ServiceConfig) {
    cfg.route("/console", web::get().to(redirect_to_page))
        .route("/console/", web::get().to(index))
        .route("/console/console.js", web::get().to(script))
        .route("/console/console.css", web::get().to(style));
}

/// A 200 carrying one of the console's files, with the headers every console
/// response has.
fn asset(content_type: &'static str, body: &'static str) -> HttpResponse {
    let mut resp = HttpResponse::Ok()
        .content_type(content_type)
        // The files change with the binary: revalidate rather than keep a stale page.
        .insert_header((header::CACHE_CONTROL, "no-cache"))
        .body(body);
    secure(resp.headers_mut());
    resp
}

/// The security headers of the console's responses.
pub fn secure(headers: &mut header::HeaderMap) {
    for (name, value) in [
        (header::CONTENT_SECURITY_POLICY, CONTENT_SECURITY_POLICY),
        (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        (header::X_FRAME_OPTIONS, "DENY"),
        // Case ids in the page's address must not leak to other sites.
        (header::REFERRER_POLICY, "no-referrer"),
        (
            header::HeaderName::from_static("cross-origin-opener-policy"),
            "same-origin",
        ),
        (
            header::HeaderName::from_static("permissions-policy"),
            "camera=(), microphone=(), geolocation=()",
        ),
    ] {
        headers.insert(name, HeaderValue::from_static(value));
    }
}

async fn redirect_to_page() -> HttpResponse {
    let mut resp = HttpResponse::PermanentRedirect()
        .insert_header((header::LOCATION, "/console/"))
        .finish();
    secure(resp.headers_mut());
    resp
}

async fn index() -> HttpResponse {
    asset("text/html; charset=utf-8", INDEX_HTML)
}

async fn script() -> HttpResponse {
    asset("text/javascript; charset=utf-8", CONSOLE_JS)
}

async fn style() -> HttpResponse {
    asset("text/css; charset=utf-8", CONSOLE_CSS)
}

/// How this deployment is set up, as far as the console must know before
/// anyone signs in.
#[derive(Debug, Serialize, ToSchema)]
pub struct ConsoleSettings {
    /// `tokens`: sign in with a bearer token; `open`: no tokens are configured
    /// (a loopback bind), callers name themselves with `X-Triaged-Subject`.
    pub auth: AuthMode,
    /// Whether the model's suggestion is shown before the reviewer labels
    /// (`console.show_suggestion`; off by default: blind review).
    pub show_suggestion: bool,
    /// How long a claim holds a case (`store.lease_seconds`).
    pub lease_seconds: u64,
}

#[derive(Debug, Clone, Copy, Serialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum AuthMode {
    Tokens,
    Open,
}

/// The deployment's console settings (no token needed: the sign-in form
/// depends on them).
#[utoipa::path(get, path = "/v1/console/settings", tag = "console",
    responses((status = 200, body = ConsoleSettings)))]
#[get("/v1/console/settings")]
pub async fn settings(state: web::Data<AppState>) -> HttpResponse {
    HttpResponse::Ok().json(ConsoleSettings {
        auth: if state.auth.is_open() {
            AuthMode::Open
        } else {
            AuthMode::Tokens
        },
        show_suggestion: state.settings.console.show_suggestion,
        lease_seconds: state.settings.store.lease_seconds,
    })
}

/// Who the caller is.
#[derive(Debug, Serialize, ToSchema)]
pub struct Me {
    pub subject: String,
    pub role: Role,
}

/// The authenticated caller's subject and role: the console shows the views
/// that role may use (the API still checks every call).
#[utoipa::path(get, path = "/v1/me", tag = "console",
    responses((status = 200, body = Me),
              (status = 401, description = "No valid bearer token", body = Problem, content_type = "application/problem+json")))]
#[get("/v1/me")]
pub async fn me(caller: Authenticated) -> HttpResponse {
    HttpResponse::Ok().json(Me {
        subject: caller.0.subject,
        role: caller.0.role,
    })
}
