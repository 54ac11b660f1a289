//! The FHIR outbox for admins (docs/fhir.md): how far the FHIR server's Tasks
//! are behind the queue, which cases are parked after repeated refusals (with
//! the server's OperationOutcome summary), and a retry of the parked ones once
//! the cause is fixed.

use actix_web::{get, post, web, HttpResponse};
use serde::Serialize;
use utoipa::ToSchema;

use super::caller::Admin;
use super::problem::{ApiError, Problem};
use super::AppState;
use crate::store::{FhirOutboxStats, ParkedSync};

/// Most parked cases one answer lists.
const MAX_PARKED_LISTED: i64 = 100;

#[derive(Debug, Serialize, ToSchema)]
pub struct FhirOutbox {
    /// Whether FHIR publishing is on (`fhir.base_url` set).
    pub enabled: bool,
    #[serde(flatten)]
    pub stats: FhirOutboxStats,
    /// The most recently parked cases (at most 100).
    pub parked_cases: Vec<ParkedSync>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct FhirRetried {
    /// Parked cases made due again.
    pub retried: u64,
}

/// The FHIR outbox: undelivered and parked cases (admin).
#[utoipa::path(get, path = "/v1/fhir/outbox", tag = "fhir",
    responses((status = 200, body = FhirOutbox),
              (status = 401, description = "No valid bearer token", body = Problem, content_type = "application/problem+json"),
              (status = 403, description = "Not an admin", body = Problem, content_type = "application/problem+json"),
              (status = 503, description = "The review queue is unavailable", body = Problem, content_type = "application/problem+json")))]
#[get("/v1/fhir/outbox")]
pub async fn outbox(state: web::Data<AppState>, _caller: Admin) -> Result<HttpResponse, ApiError> {
    Ok(HttpResponse::Ok().json(FhirOutbox {
        enabled: state.settings.fhir.enabled(),
        stats: state.store.fhir_outbox_stats().await?,
        parked_cases: state.store.fhir_parked(MAX_PARKED_LISTED).await?,
    }))
}

/// Try every parked case again (admin), after fixing what the FHIR server refused.
#[utoipa::path(post, path = "/v1/fhir/outbox/retry", tag = "fhir", request_body = super::empty_body::EmptyBody,
    responses((status = 200, body = FhirRetried),
              (status = 401, description = "No valid bearer token", body = Problem, content_type = "application/problem+json"),
              (status = 403, description = "Not an admin", body = Problem, content_type = "application/problem+json"),
              (status = 503, description = "The review queue is unavailable", body = Problem, content_type = "application/problem+json")))]
#[post("/v1/fhir/outbox/retry")]
pub async fn retry(
    state: web::Data<AppState>,
    caller: Admin,
    _body: super::empty_body::EmptyBody,
) -> Result<HttpResponse, ApiError> {
    let retried = state.store.fhir_retry_parked().await?;
    state
        .store
        .audit(
            &caller.subject,
            caller.role.name(),
            "fhir.retry",
            None,
            &format!("{retried} parked cases"),
        )
        .await?;
    Ok(HttpResponse::Ok().json(FhirRetried { retried }))
}
