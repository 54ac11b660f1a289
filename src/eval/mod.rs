//! `triaged eval`: how good the prediction is, how well DUP and UVC detect human
//! disagreement, and what triage buys — on one split of a data set. Produces a
//! [`Report`] (`report.json`, docs/formats.md), per-case rows for `predictions.csv`,
//! `report.html` and PNG plots.

pub mod estimates;
pub mod metrics;
pub mod plots;
pub mod policy_eval;
pub mod report;
pub mod triage_curve;

use serde::Serialize;

use crate::data::targets::{crosses_groups, human_error, majority, pairwise_disagreement};
use crate::data::{Dataset, Split};
use crate::model::{Prediction, Predictor};

/// Bins of the reliability diagram and the ECE.
pub const CALIBRATION_BINS: usize = 15;

#[derive(Debug, Clone, Default)]
pub struct EvalOptions {
    /// Evaluate only this split; all cases when `None`.
    pub split: Option<Split>,
    /// Class groups for a coarse disagreement event, e.g. benign `[0,1,2]` vs
    /// malignant `[3,4]`: the labels of a case fall into more than one group.
    pub class_groups: Option<Vec<Vec<usize>>>,
}

/// One evaluated case, in data set order.
#[derive(Debug, Clone)]
pub struct CaseResult {
    pub index: usize,
    pub reference: Option<usize>,
    pub majority: Option<usize>,
    pub prediction: Prediction,
    /// Pairwise disagreement of the human labels (`None` with fewer than 2 labels).
    pub disagreement: Option<f64>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Classification {
    /// Accuracy against the reference label (cases that have one).
    pub accuracy_reference: Option<f64>,
    /// Accuracy against the annotators' majority label.
    pub accuracy_majority: Option<f64>,
    /// Mean −log p(y*), y* = the reference, or the majority where none.
    pub nll: f64,
    /// Cross-entropy against the annotators' label distribution.
    pub nll_soft: f64,
    /// Expected calibration error of the top class against y* (15 bins).
    pub ece: f64,
    pub n_reference: usize,
    pub temperature: f64,
    pub reliability: Vec<metrics::ReliabilityBin>,
}

/// How well one score detects human disagreement.
#[derive(Debug, Clone, Serialize)]
pub struct DetectionScores {
    /// ROC-AUC for `D > 0`.
    pub auc_any: Option<f64>,
    /// ROC-AUC for `D ≥` the split's median `D` (`D >` it when the median is
    /// also the minimum).
    pub auc_median: Option<f64>,
    /// Spearman correlation with `D`.
    pub spearman: Option<f64>,
    /// ROC-AUC for labels crossing the `--class-groups` (when given).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub auc_groups: Option<f64>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Disagreement {
    /// Cases with at least 2 labels.
    pub n: usize,
    pub mean_d: f64,
    pub median_d: f64,
    pub positive_rate: f64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub class_groups: Option<Vec<Vec<usize>>>,
    pub dup: DetectionScores,
    pub uvc: DetectionScores,
    /// The DUP minus UVC gap in `auc_any`.
    pub dup_minus_uvc_auc_any: Option<f64>,
}

#[derive(Debug, Clone, Serialize)]
pub struct TriageCurve {
    pub fractions: Vec<f64>,
    pub dup: Vec<f64>,
    pub uvc: Vec<f64>,
    /// Reviewing by `â − ĥ`.
    pub combined: Vec<f64>,
    pub random: Vec<f64>,
    pub oracle: Vec<f64>,
    /// Cases on the curve (those with labels).
    pub n: usize,
    /// Error of the model alone and of one human alone (the curve's endpoints).
    pub algorithm_error: f64,
    pub human_error: f64,
}

/// `report.json` (docs/formats.md).
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub model: ModelInfo,
    pub data: DataInfo,
    pub n: usize,
    pub classification: Classification,
    pub disagreement: Disagreement,
    pub triage_curve: TriageCurve,
    /// Reliability and Brier scores of `â`, `D̂`, `ĥ` against their targets.
    pub calibration: estimates::Estimates,
    /// Filled by `eval --policy`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub policy: Option<policy_eval::PolicyReport>,
}

#[derive(Debug, Clone, Serialize)]
pub struct ModelInfo {
    pub name: String,
    pub version: String,
    pub path: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct DataInfo {
    pub source: String,
    pub split: String,
    pub class_names: Vec<String>,
}

pub struct Evaluation {
    pub report: Report,
    pub cases: Vec<CaseResult>,
}

/// Largest batch handed to the network at once.
const EVAL_BATCH: usize = 4096;

/// Runs the model over the chosen split and computes every metric.
pub fn evaluate(
    predictor: &Predictor,
    data: &Dataset,
    opts: &EvalOptions,
) -> anyhow::Result<Evaluation> {
    let manifest = predictor.manifest();
    anyhow::ensure!(
        data.class_names().len() == manifest.classes.len(),
        "the data set has {} classes, the model {}",
        data.class_names().len(),
        manifest.classes.len()
    );
    anyhow::ensure!(
        data.inputs().case_len() == manifest.input_dim(),
        "the data set has {} inputs per case, the model expects {}",
        data.inputs().case_len(),
        manifest.input_dim()
    );
    if let Some(groups) = &opts.class_groups {
        let k = data.num_classes();
        anyhow::ensure!(
            groups.iter().flatten().all(|&c| c < k),
            "--class-groups names a class outside 0..{k}"
        );
    }
    let indices = data.indices(opts.split)?;
    anyhow::ensure!(
        !indices.is_empty(),
        "no cases to evaluate in split {}",
        opts.split.map_or("all".into(), |s| s.to_string())
    );
    let mut predictions = Vec::with_capacity(indices.len());
    for chunk in indices.chunks(EVAL_BATCH) {
        let mut rows = Vec::with_capacity(chunk.len() * manifest.input_dim());
        for &i in chunk {
            data.extend_inputs(i, &mut rows);
        }
        predictions.extend(predictor.predict(&rows)?);
    }
    let cases: Vec<CaseResult> = indices
        .iter()
        .zip(predictions)
        .map(|(&i, prediction)| CaseResult {
            index: i,
            reference: data.reference(i),
            majority: majority(data.counts(i)),
            prediction,
            disagreement: pairwise_disagreement(data.counts(i)),
        })
        .collect();
    let report = Report {
        model: ModelInfo {
            name: manifest.name.clone(),
            version: manifest.version.clone(),
            path: predictor.dir().display().to_string(),
        },
        data: DataInfo {
            source: data.source().to_string(),
            split: opts.split.map_or("all".into(), |s| s.to_string()),
            class_names: data.class_names().to_vec(),
        },
        n: cases.len(),
        classification: classification(&cases, data, manifest.temperature),
        disagreement: disagreement(&cases, data, opts.class_groups.as_deref()),
        triage_curve: triage(&cases, data),
        calibration: estimates::estimates(&cases, data),
        policy: None,
    };
    Ok(Evaluation { report, cases })
}

/// The label errors are measured against: the reference, else the majority.
fn target(case: &CaseResult) -> Option<usize> {
    case.reference.or(case.majority)
}

fn classification(cases: &[CaseResult], data: &Dataset, temperature: f64) -> Classification {
    let accuracy = |pick: fn(&CaseResult) -> Option<usize>| {
        let hits: Vec<bool> = cases
            .iter()
            .filter_map(|c| pick(c).map(|y| c.prediction.class() == y))
            .collect();
        (!hits.is_empty()).then(|| hits.iter().filter(|&&h| h).count() as f64 / hits.len() as f64)
    };
    let mut p_true = Vec::new();
    let mut confidence = Vec::new();
    let mut correct = Vec::new();
    let mut soft = Vec::new();
    for c in cases {
        let p = &c.prediction.probabilities;
        if let Some(y) = target(c) {
            p_true.push(f64::from(p[y]));
            confidence.push(f64::from(p[c.prediction.class()]));
            correct.push(c.prediction.class() == y);
        }
        let counts = data.counts(c.index);
        let n: u32 = counts.iter().sum();
        if n > 0 {
            soft.push(
                counts
                    .iter()
                    .zip(p)
                    .map(|(&k, &q)| -(f64::from(k) / f64::from(n)) * f64::from(q).max(1e-12).ln())
                    .sum::<f64>(),
            );
        }
    }
    let reliability = metrics::reliability_bins(&confidence, &correct, CALIBRATION_BINS);
    Classification {
        accuracy_reference: accuracy(|c| c.reference),
        accuracy_majority: accuracy(|c| c.majority),
        nll: metrics::mean_nll(&p_true),
        nll_soft: if soft.is_empty() {
            f64::NAN
        } else {
            soft.iter().sum::<f64>() / soft.len() as f64
        },
        ece: metrics::expected_calibration_error(&reliability),
        n_reference: cases.iter().filter(|c| c.reference.is_some()).count(),
        temperature,
        reliability,
    }
}

fn disagreement(
    cases: &[CaseResult],
    data: &Dataset,
    groups: Option<&[Vec<usize>]>,
) -> Disagreement {
    let with_d: Vec<&CaseResult> = cases.iter().filter(|c| c.disagreement.is_some()).collect();
    let d: Vec<f64> = with_d
        .iter()
        .map(|c| c.disagreement.unwrap_or(0.0))
        .collect();
    let median = median(&d);
    let any: Vec<bool> = d.iter().map(|&v| v > 0.0).collect();
    let high = above_median(&d, median);
    let crossing: Option<Vec<bool>> = groups.map(|g| {
        with_d
            .iter()
            .map(|c| crosses_groups(data.counts(c.index), g))
            .collect()
    });
    let scores = |score: fn(&Prediction) -> f32| {
        let s: Vec<f64> = with_d
            .iter()
            .map(|c| f64::from(score(&c.prediction)))
            .collect();
        DetectionScores {
            auc_any: metrics::roc_auc(&s, &any),
            auc_median: metrics::roc_auc(&s, &high),
            spearman: metrics::spearman(&s, &d),
            auc_groups: crossing.as_ref().and_then(|g| metrics::roc_auc(&s, g)),
        }
    };
    let dup = scores(|p| p.disagreement);
    let uvc = scores(Prediction::uvc);
    let gap = dup.auc_any.zip(uvc.auc_any).map(|(a, b)| a - b);
    Disagreement {
        n: d.len(),
        mean_d: if d.is_empty() {
            f64::NAN
        } else {
            d.iter().sum::<f64>() / d.len() as f64
        },
        median_d: median,
        positive_rate: if d.is_empty() {
            f64::NAN
        } else {
            any.iter().filter(|&&a| a).count() as f64 / d.len() as f64
        },
        class_groups: groups.map(<[Vec<usize>]>::to_vec),
        dup,
        uvc,
        dup_minus_uvc_auc_any: gap,
    }
}

fn triage(cases: &[CaseResult], data: &Dataset) -> TriageCurve {
    let mut e = Vec::new();
    let mut h = Vec::new();
    let mut by = (Vec::new(), Vec::new(), Vec::new());
    for c in cases {
        let Some(y) = target(c) else { continue };
        let Some(human) = human_error(data.counts(c.index), Some(y)) else {
            continue;
        };
        e.push(if c.prediction.class() == y { 0.0 } else { 1.0 });
        h.push(human);
        let p = &c.prediction;
        by.0.push(f64::from(p.disagreement));
        by.1.push(f64::from(p.uvc()));
        by.2.push(f64::from(p.algorithm_error() - p.estimated_human_error()));
    }
    let f = triage_curve::default_fractions();
    let n = e.len();
    let mean = |v: &[f64]| {
        if v.is_empty() {
            f64::NAN
        } else {
            v.iter().sum::<f64>() / v.len() as f64
        }
    };
    TriageCurve {
        dup: triage_curve::curve(&by.0, &e, &h, &f),
        uvc: triage_curve::curve(&by.1, &e, &h, &f),
        combined: triage_curve::curve(&by.2, &e, &h, &f),
        random: triage_curve::random_curve(&e, &h, &f),
        oracle: triage_curve::oracle_curve(&e, &h, &f),
        algorithm_error: mean(&e),
        human_error: mean(&h),
        fractions: f,
        n,
    }
}

/// `D ≥ median`; when every case is `≥` the median (more than half the cases tie
/// at the minimum, typically `D = 0`), the event is `D > median` instead, so it
/// still splits the cases.
fn above_median(d: &[f64], median: f64) -> Vec<bool> {
    let at_least: Vec<bool> = d.iter().map(|&v| v >= median).collect();
    if at_least.iter().all(|&b| b) {
        d.iter().map(|&v| v > median).collect()
    } else {
        at_least
    }
}

fn median(values: &[f64]) -> f64 {
    if values.is_empty() {
        return f64::NAN;
    }
    let mut v = values.to_vec();
    v.sort_by(f64::total_cmp);
    let m = v.len() / 2;
    if v.len() % 2 == 1 {
        v[m]
    } else {
        (v[m - 1] + v[m]) / 2.0
    }
}
