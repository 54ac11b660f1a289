//! The OpenAPI document, generated from the handlers' `#[utoipa::path]`
//! annotations and the request/response types.

use utoipa::OpenApi;

use super::{models, oip, ops, problem, reviews, triage};

#[derive(OpenApi)]
#[openapi(
    info(
        title = "triaged",
        description = "Triage: automate a model's answer or route the case to human review, with predicted human disagreement."
    ),
    paths(
        triage::triage_default,
        triage::triage_named,
        models::list_models,
        models::get_model,
        models::reload_model,
        models::record_audit,
        oip::live,
        oip::ready,
        oip::server_metadata,
        oip::model_metadata,
        oip::model_ready,
        oip::infer,
        reviews::claim,
        reviews::get_case,
        reviews::case_image,
        reviews::label,
        reviews::renew,
        reviews::release,
        reviews::list,
        reviews::stats,
        reviews::export,
        reviews::agreement,
        reviews::audit_log,
        ops::metrics,
        ops::openapi,
    ),
    components(schemas(problem::Problem))
)]
pub struct ApiDoc;
