//! The R4 `Task` a case is published as, built from the case as it is now (no
//! HTTP here): the lifecycle in `status`, our sub-state in `businessStatus`,
//! what the model said in `input` and a contained `Observation` (`focus`), what
//! the reviewers decided in `output`. Input and output types are codes of our
//! own CodeSystems, documented in docs/fhir.md.

use serde_json::{json, Value};

use crate::config::FhirPriorityCutoffs;
use crate::store::{CaseStatus, FhirSnapshot};

/// `Task.input.type` codes: predicted-class, predicted-disagreement, uvc,
/// predicted-human-error, policy-version, policy-reason, reviewers-needed,
/// model, audit.
pub const INPUT_SYSTEM: &str = "urn:triaged:task-input";
/// `Task.output.type` codes: consensus-label, reviewer-label,
/// reviewer-disagreement, adjudicated-by.
pub const OUTPUT_SYSTEM: &str = "urn:triaged:task-output";
/// `Task.businessStatus` codes: labeling, adjudication, resolved, dead-letter.
pub const BUSINESS_STATUS_SYSTEM: &str = "urn:triaged:business-status";
/// The policy's reason codes (`decision.reason_code` of the triage answer).
pub const REASON_SYSTEM: &str = "urn:triaged:policy-reason";
/// HL7's Task codes; `approve` = review and approve (or correct) the focal resource.
const TASK_CODE_SYSTEM: &str = "http://hl7.org/fhir/CodeSystem/task-code";
/// Id of the contained prediction, referenced as `#prediction`.
const PREDICTION_ID: &str = "prediction";

/// What a Task needs besides the case.
#[derive(Debug, Clone)]
pub struct TaskSettings {
    pub identifier_system: String,
    pub priority: FhirPriorityCutoffs,
    /// Reviewer subject -> `Practitioner/…`.
    pub practitioners: std::collections::BTreeMap<String, String>,
    /// The system of the cases' patient identifiers; `None`: no `for`.
    pub patient_identifier_system: Option<String>,
}

/// `Task.for`: the Patient by the identifier the caller sent with the
/// instance, when both it and the system are known. Never invented.
fn patient(s: &FhirSnapshot, settings: &TaskSettings) -> Option<Value> {
    let system = settings.patient_identifier_system.as_deref()?;
    let value = s.case.patient.as_deref()?;
    Some(json!({"type": "Patient", "identifier": {"system": system, "value": value}}))
}

/// The system of a model's class codes: the code is the class index, the
/// display its name.
pub fn class_system(model: &str) -> String {
    format!("urn:triaged:class:{model}")
}

/// `Task.priority` of a case priority (its triage score).
pub fn priority(p: f64, cut: &FhirPriorityCutoffs) -> &'static str {
    if p >= cut.stat {
        "stat"
    } else if p >= cut.asap {
        "asap"
    } else if p >= cut.urgent {
        "urgent"
    } else {
        "routine"
    }
}

/// FHIR `status` of the case now: `ready` while it waits for a reviewer (or an
/// adjudicator), `in-progress` while a reviewer holds a live lease,
/// `completed` once resolved, `failed` in the dead letter.
pub fn status(s: &FhirSnapshot) -> &'static str {
    match s.case.status {
        CaseStatus::Pending if !s.leases.is_empty() => "in-progress",
        CaseStatus::Pending | CaseStatus::Adjudication => "ready",
        CaseStatus::Resolved => "completed",
        CaseStatus::DeadLetter => "failed",
    }
}

/// The whole Task as it should look now. `id` is the server's id when known
/// (an update by id must carry it).
pub fn build(s: &FhirSnapshot, settings: &TaskSettings, id: Option<&str>) -> Value {
    let c = &s.case;
    let mut task = json!({
        "resourceType": "Task",
        "identifier": [{"system": settings.identifier_system, "value": c.id}],
        "status": status(s),
        "businessStatus": business_status(s),
        "intent": "order",
        "priority": priority(c.priority, &settings.priority),
        "code": {
            "coding": [{"system": TASK_CODE_SYSTEM, "code": "approve", "display": "Activate/approve the focal resource"}],
            "text": "Review the AI result"
        },
        "description": format!("Review the triage of case {} by model {} {}", c.id, c.model, c.model_version),
        "contained": [prediction(s)],
        "focus": {"reference": format!("#{PREDICTION_ID}"), "display": "the model's prediction"},
        "authoredOn": datetime(c.created_at),
        "lastModified": datetime(s.now),
        "input": inputs(s),
    });
    if let Some(id) = id {
        task["id"] = json!(id);
    }
    if let Some(patient) = patient(s, settings) {
        task["contained"][0]["subject"] = patient.clone();
        task["for"] = patient;
    }
    if c.status == CaseStatus::DeadLetter {
        task["statusReason"] = json!({"text": format!(
            "its review leases expired {} times before it was labeled; an admin must look at it",
            c.lease_failures
        )});
    }
    if status(s) == "in-progress" {
        // The longest-held live lease whose reviewer has a Practitioner.
        if let Some(reference) = s
            .leases
            .iter()
            .find_map(|(reviewer, _)| settings.practitioners.get(reviewer))
        {
            task["owner"] = json!({"reference": reference});
        }
    }
    if c.status == CaseStatus::Resolved {
        task["output"] = outputs(s);
        if let Some(end) = c.resolved_at {
            task["executionPeriod"] =
                json!({"start": datetime(c.created_at), "end": datetime(end)});
        }
    }
    task
}

fn business_status(s: &FhirSnapshot) -> Value {
    let c = &s.case;
    let k = s.labels.len();
    let n = c.reviewers_needed.max(k as i64);
    let (code, text) = match c.status {
        CaseStatus::Pending => ("labeling", format!("{k} of {n} labels")),
        CaseStatus::Adjudication => (
            "adjudication",
            format!("{k} of {n} labels, no strict majority: awaiting an adjudicator"),
        ),
        CaseStatus::Resolved => ("resolved", format!("{k} of {n} labels")),
        CaseStatus::DeadLetter => ("dead-letter", format!("{k} of {n} labels; dead letter")),
    };
    json!({"coding": [{"system": BUSINESS_STATUS_SYSTEM, "code": code}], "text": text})
}

fn class_concept(model: &str, classes: &[String], class: i64) -> Value {
    let name = usize::try_from(class)
        .ok()
        .and_then(|i| classes.get(i))
        .cloned()
        .unwrap_or_else(|| class.to_string());
    json!({"coding": [{"system": class_system(model), "code": class.to_string(), "display": name}], "text": name})
}

fn typed(system: &str, code: &str) -> Value {
    json!({"coding": [{"system": system, "code": code}], "text": code})
}

/// Probabilities and scores to 6 decimals: `f32` values widened to `f64`
/// would otherwise print as 0.10000000149011612.
fn decimal(x: f64) -> f64 {
    (x * 1e6).round() / 1e6
}

fn uncertainty(s: &FhirSnapshot, key: &str) -> Option<f64> {
    s.case
        .uncertainty
        .get(key)
        .and_then(Value::as_f64)
        .map(decimal)
}

fn inputs(s: &FhirSnapshot) -> Value {
    let c = &s.case;
    let input = |code: &str, value: (&str, Value)| {
        let mut entry = json!({"type": typed(INPUT_SYSTEM, code)});
        entry[value.0] = value.1;
        entry
    };
    let mut inputs = vec![input(
        "predicted-class",
        (
            "valueCodeableConcept",
            class_concept(&c.model, &c.class_names, c.model_class),
        ),
    )];
    if let Some(d) = uncertainty(s, "disagreement") {
        inputs.push(input("predicted-disagreement", ("valueDecimal", json!(d))));
    }
    if let Some(h) = uncertainty(s, "human_error") {
        inputs.push(input("predicted-human-error", ("valueDecimal", json!(h))));
    }
    if let Some(u) = uncertainty(s, "uvc") {
        inputs.push(input("uvc", ("valueDecimal", json!(u))));
    }
    inputs.push(input(
        "model",
        (
            "valueString",
            json!(format!("{} {}", c.model, c.model_version)),
        ),
    ));
    inputs.push(input(
        "policy-version",
        ("valueString", json!(c.policy_version)),
    ));
    inputs.push(input(
        "policy-reason",
        (
            "valueCodeableConcept",
            json!({"coding": [{"system": REASON_SYSTEM, "code": c.reason_code}], "text": c.reason}),
        ),
    ));
    inputs.push(input(
        "reviewers-needed",
        ("valuePositiveInt", json!(c.reviewers_needed.max(1))),
    ));
    if c.audit {
        inputs.push(input("audit", ("valueBoolean", json!(true))));
    }
    Value::Array(inputs)
}

fn outputs(s: &FhirSnapshot) -> Value {
    let c = &s.case;
    let mut outputs = Vec::new();
    if let Some(consensus) = c.consensus {
        outputs.push(json!({
            "type": typed(OUTPUT_SYSTEM, "consensus-label"),
            "valueCodeableConcept": class_concept(&c.model, &c.class_names, consensus),
        }));
    }
    for (reviewer, label) in &s.labels {
        outputs.push(json!({
            "type": {"coding": [{"system": OUTPUT_SYSTEM, "code": "reviewer-label"}], "text": format!("label by {reviewer}")},
            "valueCodeableConcept": class_concept(&c.model, &c.class_names, *label),
        }));
    }
    if let Some(d) = c.disagreement {
        outputs.push(json!({
            "type": typed(OUTPUT_SYSTEM, "reviewer-disagreement"),
            "valueDecimal": decimal(d),
        }));
    }
    if let Some(who) = &c.adjudicated_by {
        outputs.push(json!({"type": typed(OUTPUT_SYSTEM, "adjudicated-by"), "valueString": who}));
    }
    Value::Array(outputs)
}

/// The model's prediction as a contained Observation: the class as its value,
/// one component per class with its probability.
fn prediction(s: &FhirSnapshot) -> Value {
    let c = &s.case;
    let components: Vec<Value> = c
        .probabilities
        .iter()
        .enumerate()
        .map(|(i, p)| {
            let mut code = class_concept(&c.model, &c.class_names, i as i64);
            code["text"] = json!(format!("probability of {}", code["text"].as_str().unwrap_or_default()));
            json!({
                "code": code,
                "valueQuantity": {"value": decimal(f64::from(*p)), "unit": "probability", "system": "http://unitsofmeasure.org", "code": "1"},
            })
        })
        .collect();
    json!({
        "resourceType": "Observation",
        "id": PREDICTION_ID,
        "status": "preliminary",
        "code": {"coding": [{"system": INPUT_SYSTEM, "code": "predicted-class"}], "text": format!("prediction of {} {}", c.model, c.model_version)},
        "issued": datetime(c.created_at),
        "valueCodeableConcept": class_concept(&c.model, &c.class_names, c.model_class),
        "component": components,
    })
}

/// A FHIR `instant`/`dateTime` of unix milliseconds (UTC).
fn datetime(ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(ms)
        .unwrap_or_default()
        .to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::Case;

    fn snapshot(status: CaseStatus) -> FhirSnapshot {
        FhirSnapshot {
            case: Case {
                id: "c1".into(),
                model: "m".into(),
                model_version: "1".into(),
                policy_version: "p1".into(),
                request_id: None,
                instance_index: 0,
                input: vec![],
                feature_names: vec![],
                class_names: vec!["benign".into(), "malignant".into()],
                model_class: 1,
                probabilities: vec![0.3, 0.7],
                uncertainty: json!({"disagreement": 0.42, "uvc": 0.42, "entropy": 0.6}),
                reason: "dup 0.42 >= 0.3".into(),
                reason_code: "threshold".into(),
                audit: false,
                policy_route: None,
                reviewers_needed: 2,
                escalate_on_disagreement: false,
                escalated: false,
                priority: 0.3,
                status,
                lease_failures: 0,
                consensus: None,
                disagreement: None,
                labels: 0,
                created_at: 1_700_000_000_000,
                resolved_at: None,
                max_labels: 5,
                adjudicated_by: None,
                patient: None,
            },
            labels: vec![],
            leases: vec![],
            now: 1_700_000_060_000,
        }
    }

    fn settings() -> TaskSettings {
        TaskSettings {
            identifier_system: "urn:triaged:case".into(),
            priority: FhirPriorityCutoffs {
                urgent: 0.1,
                asap: 0.25,
                stat: 0.5,
            },
            practitioners: [("dr-a".to_string(), "Practitioner/a".to_string())].into(),
            patient_identifier_system: Some("urn:oid:1.2.36.146.595.217.0.1".into()),
        }
    }

    fn input<'a>(task: &'a Value, code: &str) -> &'a Value {
        task["input"]
            .as_array()
            .unwrap()
            .iter()
            .find(|e| e["type"]["coding"][0]["code"] == code)
            .unwrap_or_else(|| panic!("no input {code}"))
    }

    #[test]
    fn priority_follows_the_cutoffs() {
        let cut = settings().priority;
        assert_eq!(priority(-0.2, &cut), "routine");
        assert_eq!(priority(0.1, &cut), "urgent");
        assert_eq!(priority(0.3, &cut), "asap");
        assert_eq!(priority(0.9, &cut), "stat");
    }

    #[test]
    fn a_new_case_is_a_ready_order_with_the_predictions_as_inputs() {
        let task = build(&snapshot(CaseStatus::Pending), &settings(), None);
        assert_eq!(task["status"], "ready");
        assert_eq!(task["intent"], "order");
        assert_eq!(task["priority"], "asap");
        assert_eq!(task["identifier"][0]["value"], "c1");
        assert_eq!(task["authoredOn"], "2023-11-14T22:13:20.000Z");
        assert_eq!(task["businessStatus"]["text"], "0 of 2 labels");
        assert_eq!(
            input(&task, "predicted-disagreement")["valueDecimal"],
            json!(0.42)
        );
        assert_eq!(
            input(&task, "predicted-class")["valueCodeableConcept"]["coding"][0]["display"],
            "malignant"
        );
        assert_eq!(input(&task, "reviewers-needed")["valuePositiveInt"], 2);
        assert_eq!(input(&task, "policy-version")["valueString"], "p1");
        assert_eq!(task["focus"]["reference"], "#prediction");
        assert_eq!(
            task["contained"][0]["component"][1]["valueQuantity"]["value"],
            json!(0.7)
        );
        assert!(task.get("output").is_none() && task.get("owner").is_none());
        assert!(task.get("id").is_none());
        assert!(task.get("for").is_none(), "no patient sent: none invented");
    }

    #[test]
    fn the_patient_is_the_task_subject_only_with_a_known_system() {
        let mut s = snapshot(CaseStatus::Pending);
        s.case.patient = Some("MRN-12345".into());
        let task = build(&s, &settings(), None);
        let patient = json!({"type": "Patient", "identifier": {"system": "urn:oid:1.2.36.146.595.217.0.1", "value": "MRN-12345"}});
        assert_eq!(task["for"], patient);
        assert_eq!(task["contained"][0]["subject"], patient);
        let no_system = TaskSettings {
            patient_identifier_system: None,
            ..settings()
        };
        assert!(build(&s, &no_system, None).get("for").is_none());
    }

    #[test]
    fn a_live_lease_makes_it_in_progress_with_the_practitioner_as_owner() {
        let mut s = snapshot(CaseStatus::Pending);
        s.leases = vec![("dr-b".into(), 0), ("dr-a".into(), 0)];
        s.labels = vec![("dr-c".into(), 1)];
        let task = build(&s, &settings(), Some("t9"));
        assert_eq!(task["status"], "in-progress");
        assert_eq!(task["owner"]["reference"], "Practitioner/a");
        assert_eq!(task["businessStatus"]["text"], "1 of 2 labels");
        assert_eq!(task["id"], "t9");
    }

    #[test]
    fn a_resolved_case_is_completed_with_every_label_as_output() {
        let mut s = snapshot(CaseStatus::Resolved);
        s.case.consensus = Some(1);
        s.case.disagreement = Some(0.5);
        s.case.resolved_at = Some(1_700_000_100_000);
        s.labels = vec![("dr-a".into(), 1), ("dr-b".into(), 0)];
        let task = build(&s, &settings(), None);
        assert_eq!(task["status"], "completed");
        let outputs = task["output"].as_array().unwrap();
        assert_eq!(outputs[0]["valueCodeableConcept"]["coding"][0]["code"], "1");
        assert_eq!(outputs[2]["type"]["text"], "label by dr-b");
        assert_eq!(outputs[3]["valueDecimal"], json!(0.5));
        assert_eq!(task["executionPeriod"]["end"], "2023-11-14T22:15:00.000Z");
    }

    #[test]
    fn dead_letters_fail_and_adjudications_wait_ready() {
        let mut s = snapshot(CaseStatus::DeadLetter);
        s.case.lease_failures = 5;
        let task = build(&s, &settings(), None);
        assert_eq!(task["status"], "failed");
        assert!(task["statusReason"]["text"]
            .as_str()
            .unwrap()
            .contains("expired 5 times"));
        let task = build(&snapshot(CaseStatus::Adjudication), &settings(), None);
        assert_eq!(task["status"], "ready");
        assert_eq!(task["businessStatus"]["coding"][0]["code"], "adjudication");
    }
}
