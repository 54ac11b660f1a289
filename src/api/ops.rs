//! Operations endpoints: Prometheus `GET /metrics` and the OpenAPI document
//! `GET /openapi.json`.

use actix_web::{get, web, HttpResponse};
use utoipa::OpenApi;

use super::AppState;

/// Prometheus text exposition of every `triaged_*` metric.
#[utoipa::path(get, path = "/metrics", tag = "ops", responses((status = 200, description = "Prometheus text format", content_type = "text/plain")))]
#[get("/metrics")]
pub async fn metrics(state: web::Data<AppState>) -> HttpResponse {
    HttpResponse::Ok()
        .content_type("text/plain; version=0.0.4; charset=utf-8")
        .body(state.metrics.render())
}

/// This API's OpenAPI 3.1 document, generated from the handler types.
#[utoipa::path(get, path = "/openapi.json", tag = "ops", responses((status = 200, description = "OpenAPI document", content_type = "application/json")))]
#[get("/openapi.json")]
pub async fn openapi() -> HttpResponse {
    HttpResponse::Ok().json(super::openapi::ApiDoc::openapi())
}
