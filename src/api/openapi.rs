//! The OpenAPI document, generated from the handlers' `#[utoipa::path]`
//! annotations and the request/response types, plus what the derive cannot
//! state: rules across fields, and example values of path parameters.

use utoipa::openapi::path::{Operation, ParameterIn};
use utoipa::openapi::schema::{AllOfBuilder, ObjectBuilder, Schema, Type};
use utoipa::openapi::{RefOr, Required};
use utoipa::{Modify, OpenApi};

use super::{console, fhir, models, oip, ops, problem, requeue, reviews, triage};

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
        models::clear_fallback,
        oip::live,
        oip::ready,
        oip::server_metadata,
        oip::model_metadata,
        oip::model_version_metadata,
        oip::model_ready,
        oip::model_version_ready,
        oip::infer,
        oip::infer_version,
        reviews::claim,
        reviews::get_case,
        reviews::case_image,
        reviews::label,
        reviews::adjudicate,
        reviews::renew,
        reviews::release,
        reviews::list,
        reviews::stats,
        reviews::export,
        reviews::agreement,
        reviews::audit_log,
        reviews::tied_cases,
        reviews::reviewer_stats,
        requeue::requeue_one,
        requeue::requeue_many,
        console::settings,
        console::me,
        fhir::outbox,
        fhir::retry,
        ops::metrics,
        ops::openapi,
    ),
    components(schemas(problem::Problem)),
    modifiers(&CrossFieldRules, &PathExamples, &GuardResponses)
)]
pub struct ApiDoc;

/// Adds to a request schema the rule across its fields that its derive cannot
/// state: the component becomes `allOf: [derived, rule]`, with the derived
/// description and example lifted to the top, where readers and tools look.
struct CrossFieldRules;

impl Modify for CrossFieldRules {
    fn modify(&self, doc: &mut utoipa::openapi::OpenApi) {
        let Some(components) = doc.components.as_mut() else {
            return;
        };
        let rules = [
            ("Instance", triage::Instance::exactly_one_input()),
            (
                "AuditOutcomes",
                models::AuditOutcomes::at_least_one_outcome(),
            ),
        ];
        for (name, rule) in rules {
            let Some(RefOr::T(Schema::Object(mut derived))) = components.schemas.remove(name)
            else {
                panic!("component {name} is not a derived object schema");
            };
            let description = derived.description.take();
            let example = derived.example.take();
            let combined = AllOfBuilder::new()
                .item(derived)
                .item(rule)
                .description(description)
                .examples(example);
            components.schemas.insert(name.to_string(), combined.into());
        }
    }
}

/// The answers [`super::guards`] gives any state-changing request before its
/// handler runs: 403 from another origin, 415 without `application/json`, 408
/// when the body outlives the request deadline. Added to every POST, PUT,
/// PATCH and DELETE that does not document them already; so are the refusals
/// of [`super::empty_body::EmptyBody`] on the actions that take no parameters.
struct GuardResponses;

impl Modify for GuardResponses {
    fn modify(&self, doc: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::{ContentBuilder, Ref, ResponseBuilder};
        let problem = |description: &str| {
            RefOr::T(
                ResponseBuilder::new()
                    .description(description)
                    .content(
                        problem::PROBLEM_JSON,
                        ContentBuilder::new()
                            .schema(Some(Ref::from_schema_name("Problem")))
                            .build(),
                    )
                    .build(),
            )
        };
        for item in doc.paths.paths.values_mut() {
            for op in [
                &mut item.post,
                &mut item.put,
                &mut item.patch,
                &mut item.delete,
            ]
            .into_iter()
            .filter_map(Option::as_mut)
            {
                let takes_no_parameters = op.request_body.as_ref().is_some_and(|b| {
                    b.content.values().any(|c| {
                        matches!(&c.schema, Some(RefOr::Ref(r)) if r.ref_location.ends_with("/EmptyBody"))
                    })
                });
                let responses = &mut op.responses.responses;
                if takes_no_parameters {
                    for (status, description) in [
                        ("400", "The body is not JSON"),
                        ("413", "The body is larger than an empty object needs"),
                        ("422", "A body other than nothing or {}"),
                    ] {
                        responses
                            .entry(status.to_string())
                            .or_insert_with(|| problem(description));
                    }
                }
                for (status, description) in [
                    ("403", "Not allowed, or sent from another origin"),
                    (
                        "408",
                        "The request body did not arrive within the request deadline",
                    ),
                    ("415", "Not application/json"),
                ] {
                    responses
                        .entry(status.to_string())
                        .or_insert_with(|| problem(description));
                }
            }
        }
    }
}

/// Example values of the path parameters naming a served model and version: the
/// models shipped in `models/` (examples, not an enum: any bundle can be served).
struct PathExamples;

impl PathExamples {
    const MODELS: [&'static str; 2] = ["lidc-malignancy", "cifar10-cnn"];
    const VERSIONS: [&'static str; 1] = ["1"];

    fn operations(item: &mut utoipa::openapi::PathItem) -> impl Iterator<Item = &mut Operation> {
        [
            &mut item.get,
            &mut item.put,
            &mut item.post,
            &mut item.delete,
            &mut item.options,
            &mut item.head,
            &mut item.patch,
            &mut item.trace,
        ]
        .into_iter()
        .filter_map(Option::as_mut)
    }
}

impl Modify for PathExamples {
    fn modify(&self, doc: &mut utoipa::openapi::OpenApi) {
        for item in doc.paths.paths.values_mut() {
            for op in PathExamples::operations(item) {
                for p in op.parameters.iter_mut().flatten() {
                    let examples: &[&str] = match p.name.as_str() {
                        "model" => &PathExamples::MODELS,
                        "version" => &PathExamples::VERSIONS,
                        _ => continue,
                    };
                    if p.parameter_in != ParameterIn::Path || p.required != Required::True {
                        continue;
                    }
                    p.schema = Some(
                        ObjectBuilder::new()
                            .schema_type(Type::String)
                            .min_length(Some(1))
                            .examples(examples.iter().copied())
                            .into(),
                    );
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_document_has_the_rules_and_examples() {
        let doc = serde_json::to_value(ApiDoc::openapi()).unwrap();
        let instance = &doc["components"]["schemas"]["Instance"];
        assert_eq!(instance["allOf"][1]["oneOf"].as_array().unwrap().len(), 2);
        let audit = &doc["components"]["schemas"]["AuditOutcomes"];
        assert!(audit["examples"][0].is_object(), "{audit}");
        assert_eq!(audit["allOf"][1]["anyOf"].as_array().unwrap().len(), 2);
        let model =
            &doc["paths"]["/v2/models/{model}/versions/{version}/infer"]["post"]["parameters"][0];
        assert_eq!(model["name"], "model");
        assert_eq!(
            model["schema"]["examples"],
            serde_json::json!(["lidc-malignancy", "cifar10-cnn"])
        );
    }
}
