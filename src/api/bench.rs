//! Bench-only routes, the reference points `benches/run` measures `/v1/triage`
//! against. Registered only with `[server] bench_routes = true` (off by default;
//! `TRIAGED__SERVER__BENCH_ROUTES=true`), and never in the OpenAPI document, so
//! neither clients nor schemathesis see them. Both take the `/v1/triage` request
//! on the default model, with the same extractors (caller, JSON limits), and
//! answer in the `/v1/triage` shape:
//!
//! - `POST /bench/parse`: checks the instances exactly as `/v1/triage` does and
//!   renders a fixed answer. No model, no policy, no store: the HTTP/JSON ceiling.
//! - `POST /bench/predict`: the same plus the batched model, with a fixed
//!   placeholder decision. Predictions without a policy: what `/v1/triage` costs
//!   less its decision (the policy's overhead is the difference).

use actix_web::{post, web, HttpResponse};

use super::caller::Client;
use super::problem::ApiError;
use super::triage::{parse_rows, render, served_model, Rows, TriageRequest};
use super::AppState;
use crate::model::Prediction;
use crate::policy::{Decision, Route};
use crate::triage::{TriageError, Triaged, Uncertainty};

/// Registers the bench routes.
pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(parse_only).service(predict_only);
}

/// The decision both routes report: nothing decided it.
fn no_decision() -> Decision {
    Decision {
        route: Route::Automate,
        reason: "bench route: no policy ran".into(),
        reason_code: "automate_all_mode",
        reviewers: 0,
        escalate_on_disagreement: false,
        case_id: None,
        audit: false,
        policy_route: None,
    }
}

/// A fixed prediction over `k` classes whose numbers print as long as real ones.
fn placeholder(k: usize) -> Triaged {
    let total = (k * (k + 1) / 2).max(1) as f32;
    let prediction = Prediction {
        probabilities: (1..=k).map(|i| i as f32 / total).collect(),
        disagreement: 0.271_828_2,
        human_error: None,
        model_error: None,
    };
    Triaged {
        uncertainty: Uncertainty::of(&prediction),
        prediction,
        decision: no_decision(),
    }
}

#[post("/bench/parse")]
async fn parse_only(
    state: web::Data<AppState>,
    _caller: Client,
    body: web::Json<TriageRequest>,
) -> Result<HttpResponse, ApiError> {
    let name = state.registry.default_model().to_string();
    let model = served_model(&state, &name)?;
    let TriageRequest {
        instances,
        request_id,
    } = body.into_inner();
    match parse_rows(&instances, &model, state.triage.max_instances())? {
        Rows::Ready(rows) => drop(std::hint::black_box(rows)),
        Rows::Images(sources, _) => drop(std::hint::black_box(sources)),
    }
    let triaged = vec![placeholder(model.manifest.classes.len()); instances.len()];
    Ok(super::json_response(render(
        &model, instances, request_id, &triaged,
    )))
}

#[post("/bench/predict")]
async fn predict_only(
    state: web::Data<AppState>,
    _caller: Client,
    body: web::Json<TriageRequest>,
) -> Result<HttpResponse, ApiError> {
    let deadline = state.triage.deadline();
    let name = state.registry.default_model().to_string();
    let model = served_model(&state, &name)?;
    let TriageRequest {
        instances,
        request_id,
    } = body.into_inner();
    let rows = match parse_rows(&instances, &model, state.triage.max_instances())? {
        Rows::Ready(rows) => rows,
        Rows::Images(sources, size) => state.images.decode(sources, size, deadline).await?,
    };
    let predictions = model.batcher.infer(rows, instances.len(), deadline).await?;
    if let Some(index) = predictions.iter().position(|p| !p.is_finite()) {
        return Err(TriageError::NonFinite { index }.into());
    }
    let triaged: Vec<Triaged> = predictions
        .into_iter()
        .map(|prediction| Triaged {
            uncertainty: Uncertainty::of(&prediction),
            prediction,
            decision: no_decision(),
        })
        .collect();
    Ok(super::json_response(render(
        &model, instances, request_id, &triaged,
    )))
}
