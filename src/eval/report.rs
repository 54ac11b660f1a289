//! Writing an evaluation: `report.json`, `predictions.csv` (docs/formats.md), PNG plots,
//! a self-contained `report.html`, and the short table `eval` prints.

use crate::policy::AnyCertificate;
use std::fmt::Write as _;
use std::path::Path;

use anyhow::Context;

use super::{plots, Evaluation, Report};

pub const REPORT_JSON: &str = "report.json";
pub const PREDICTIONS_CSV: &str = "predictions.csv";
pub const REPORT_HTML: &str = "report.html";

/// Writes every artefact of `eval` into `dir` (created if needed).
pub fn write_all(eval: &Evaluation, dir: &Path) -> anyhow::Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let json = serde_json::to_vec_pretty(&eval.report)?;
    std::fs::write(dir.join(REPORT_JSON), json)
        .with_context(|| format!("writing {}", dir.join(REPORT_JSON).display()))?;
    write_predictions(eval, &dir.join(PREDICTIONS_CSV))?;
    let images = plots::write_all(eval, dir)?;
    std::fs::write(dir.join(REPORT_HTML), html(&eval.report, &images))
        .with_context(|| format!("writing {}", dir.join(REPORT_HTML).display()))?;
    Ok(())
}

fn write_predictions(eval: &Evaluation, path: &Path) -> anyhow::Result<()> {
    let k = eval.report.data.class_names.len();
    let mut w =
        csv::Writer::from_path(path).with_context(|| format!("writing {}", path.display()))?;
    let mut header = vec![
        "index".to_string(),
        "reference".into(),
        "majority".into(),
        "predicted".into(),
    ];
    header.extend((0..k).map(|c| format!("p_{c}")));
    header.extend(["dup".to_string(), "uvc".into(), "D".into()]);
    w.write_record(&header)?;
    let class = |c: Option<usize>| c.map_or("-1".to_string(), |c| c.to_string());
    for case in &eval.cases {
        let p = &case.prediction;
        let mut row = vec![
            case.index.to_string(),
            class(case.reference),
            class(case.majority),
            p.class().to_string(),
        ];
        row.extend(p.probabilities.iter().map(|v| format!("{v:.6}")));
        row.push(format!("{:.6}", p.disagreement));
        row.push(format!("{:.6}", p.uvc()));
        row.push(
            case.disagreement
                .map_or(String::new(), |d| format!("{d:.6}")),
        );
        w.write_record(&row)?;
    }
    w.flush()?;
    Ok(())
}

fn fmt_opt(v: Option<f64>) -> String {
    v.map_or("n/a".into(), |v| format!("{v:.3}"))
}

/// The short table printed by `triaged eval`.
pub fn summary_table(r: &Report) -> String {
    let c = &r.classification;
    let d = &r.disagreement;
    let t = &r.triage_curve;
    let mut s = String::new();
    let _ = writeln!(
        s,
        "model {} v{} on {} split, n = {}",
        r.model.name, r.model.version, r.data.split, r.n
    );
    let _ = writeln!(
        s,
        "classification  acc(ref) {}  acc(majority) {}  NLL {:.3}  ECE {:.3}  T {:.3}",
        fmt_opt(c.accuracy_reference),
        fmt_opt(c.accuracy_majority),
        c.nll,
        c.ece,
        c.temperature
    );
    let _ = writeln!(
        s,
        "disagreement    n {}  mean D {:.3}  D>0 {:.1}%",
        d.n,
        d.mean_d,
        100.0 * d.positive_rate
    );
    let groups = d.class_groups.is_some();
    let _ = writeln!(
        s,
        "  score   AUC(D>0)  AUC(D>=med)  Spearman{}",
        if groups { "  AUC(groups)" } else { "" }
    );
    for (name, sc) in [("DUP", &d.dup), ("UVC", &d.uvc)] {
        let _ = writeln!(
            s,
            "  {name:<6}  {:>8}  {:>11}  {:>8}{}",
            fmt_opt(sc.auc_any),
            fmt_opt(sc.auc_median),
            fmt_opt(sc.spearman),
            if groups {
                format!("  {:>11}", fmt_opt(sc.auc_groups))
            } else {
                String::new()
            }
        );
    }
    if let Some(gap) = d.dup_minus_uvc_auc_any {
        let _ = writeln!(s, "  DUP - UVC AUC(D>0): {gap:+.3}");
    }
    if let Some(p) = &r.policy {
        let _ = writeln!(s, "policy {} ({})", p.name, p.version);
        if let Some(AnyCertificate::System(c)) = &p.certificate {
            let _ = writeln!(
                s,
                "  certificate  total error <= {} w.p. >= {}  n_cert {}  labels/case {:.3}  automation {:.3} (on the certification part)",
                c.alpha,
                1.0 - c.delta,
                c.n_cert,
                c.labels_per_case,
                c.automation_rate
            );
        }
        let _ = writeln!(
            s,
            "  total error {:.4} (95% upper {:.4})  labels/case {:.3}",
            p.total_error, p.total_error_upper, p.labels_per_case
        );
        if let Some(AnyCertificate::Risk(c)) = &p.certificate {
            let _ = writeln!(
                s,
                "  certificate  alpha {}  delta {}  n_cal {}  tau {}  expected automation {:.3}",
                c.alpha,
                c.delta,
                c.n_cal,
                c.tau.map_or("none".to_string(), |t| format!("{t:.4}")),
                c.automation_rate
            );
        }
        let _ = writeln!(
            s,
            "  realized     automation {:.3} ({}/{})  selective error {} (95% CI {:.3}-{:.3})  total error {:.4}  reviewers/reviewed {}",
            p.automation_rate,
            p.automated,
            p.n,
            fmt_opt(p.selective_error),
            p.selective_error_lower,
            p.selective_error_upper,
            p.total_error,
            fmt_opt(p.mean_reviewers)
        );
    }
    let _ = writeln!(
        s,
        "triage curve (total error; model alone {:.3}, one human alone {:.3})",
        t.algorithm_error, t.human_error
    );
    let _ = writeln!(s, "  reviewed   DUP    UVC    â-ĥ    random  oracle");
    for (i, f) in t.fractions.iter().enumerate() {
        if i % 4 == 0 {
            let _ = writeln!(
                s,
                "  {:>6.0}%  {:.3}  {:.3}  {:.3}  {:.3}   {:.3}",
                100.0 * f,
                t.dup[i],
                t.uvc[i],
                t.combined[i],
                t.random[i],
                t.oracle[i]
            );
        }
    }
    s
}

fn html(r: &Report, images: &[(String, String)]) -> String {
    let esc = |s: &str| {
        s.replace('&', "&amp;")
            .replace('<', "&lt;")
            .replace('>', "&gt;")
    };
    let mut h = String::new();
    let _ = write!(
        h,
        "<!doctype html><html><head><meta charset=\"utf-8\"><title>triaged eval: {name}</title>\
         <style>body{{font-family:sans-serif;max-width:980px;margin:2em auto;color:#222}}\
         table{{border-collapse:collapse;margin:1em 0}}td,th{{border:1px solid #ccc;padding:4px 10px;text-align:right}}\
         th{{background:#f4f4f4}}td:first-child,th:first-child{{text-align:left}}img{{max-width:100%}}</style></head><body>",
        name = esc(&r.model.name)
    );
    let _ = write!(
        h,
        "<h1>Evaluation of {} v{}</h1><p>Model bundle <code>{}</code>; data <code>{}</code>, split <b>{}</b>, n = {}.</p>",
        esc(&r.model.name),
        esc(&r.model.version),
        esc(&r.model.path),
        esc(&r.data.source),
        esc(&r.data.split),
        r.n
    );
    let c = &r.classification;
    let _ = write!(
        h,
        "<h2>Classification</h2><table><tr><th>metric</th><th>value</th></tr>\
         <tr><td>accuracy vs reference ({} cases)</td><td>{}</td></tr>\
         <tr><td>accuracy vs majority</td><td>{}</td></tr>\
         <tr><td>NLL (y* = reference, else majority)</td><td>{:.4}</td></tr>\
         <tr><td>cross-entropy vs annotator distribution</td><td>{:.4}</td></tr>\
         <tr><td>ECE (15 bins)</td><td>{:.4}</td></tr><tr><td>temperature</td><td>{:.3}</td></tr></table>",
        c.n_reference,
        fmt_opt(c.accuracy_reference),
        fmt_opt(c.accuracy_majority),
        c.nll,
        c.nll_soft,
        c.ece,
        c.temperature
    );
    let d = &r.disagreement;
    let _ = write!(
        h,
        "<h2>Detecting human disagreement</h2><p>{} cases with ≥ 2 labels; mean D {:.3}, median {:.3}, D &gt; 0 in {:.1}%.</p>\
         <table><tr><th>score</th><th>ROC-AUC D&gt;0</th><th>ROC-AUC D≥median</th><th>Spearman with D</th>{}</tr>",
        d.n,
        d.mean_d,
        d.median_d,
        100.0 * d.positive_rate,
        if d.class_groups.is_some() { "<th>ROC-AUC crossing class groups</th>" } else { "" }
    );
    for (name, s) in [("DUP (direct)", &d.dup), ("UVC (1 − Σp²)", &d.uvc)] {
        let _ = write!(
            h,
            "<tr><td>{name}</td><td>{}</td><td>{}</td><td>{}</td>{}</tr>",
            fmt_opt(s.auc_any),
            fmt_opt(s.auc_median),
            fmt_opt(s.spearman),
            if d.class_groups.is_some() {
                format!("<td>{}</td>", fmt_opt(s.auc_groups))
            } else {
                String::new()
            }
        );
    }
    h.push_str("</table>");
    let t = &r.triage_curve;
    let _ = write!(
        h,
        "<h2>Triage curve</h2><p>Total error over {} cases when the top fraction by each score goes to one human \
         (erring at 1 − n<sub>y*</sub>/N) and the rest is automated. Model alone: {:.4}; one human alone: {:.4}.</p>\
         <table><tr><th>reviewed</th><th>DUP</th><th>UVC</th><th>â − ĥ</th><th>random</th><th>oracle</th></tr>",
        t.n, t.algorithm_error, t.human_error
    );
    for (i, f) in t.fractions.iter().enumerate() {
        let _ = write!(
            h,
            "<tr><td>{:.0}%</td><td>{:.4}</td><td>{:.4}</td><td>{:.4}</td><td>{:.4}</td><td>{:.4}</td></tr>",
            100.0 * f,
            t.dup[i],
            t.uvc[i],
            t.combined[i],
            t.random[i],
            t.oracle[i]
        );
    }
    h.push_str("</table>");
    if let Some(p) = &r.policy {
        let _ = write!(
            h,
            "<h2>Policy {} ({})</h2><table><tr><th>measure</th><th>value</th></tr>\
             <tr><td>automation rate</td><td>{:.4} ({} of {})</td></tr>\
             <tr><td>error of automated cases</td><td>{} (95% CI {:.4}–{:.4})</td></tr>\
             <tr><td>total error, reviewers on the rest</td><td>{:.4}</td></tr>\
             <tr><td>reviewers' error on reviewed cases</td><td>{}</td></tr>\
             <tr><td>mean reviewers per reviewed case</td><td>{}</td></tr></table>",
            esc(&p.name),
            esc(&p.version),
            p.automation_rate,
            p.automated,
            p.n,
            fmt_opt(p.selective_error),
            p.selective_error_lower,
            p.selective_error_upper,
            p.total_error,
            fmt_opt(p.reviewed_error),
            fmt_opt(p.mean_reviewers)
        );
        if let Some(AnyCertificate::System(c)) = &p.certificate {
            let _ = write!(
                h,
                "<p>Certificate: with probability ≥ {:.3}, the total error of the system (automated and reviewed cases) is ≤ α = {}; \
                 certified on n<sub>cert</sub> = {} cases; there: {:.3} labels per case, {:.3} automated. {}</p>",
                1.0 - c.delta,
                c.alpha,
                c.n_cert,
                c.labels_per_case,
                c.automation_rate,
                esc(&c.method)
            );
        }
        if let Some(AnyCertificate::Risk(c)) = &p.certificate {
            let _ = write!(
                h,
                "<p>Certificate: with probability ≥ {:.3}, the error of automated cases is ≤ α = {}; \
                 τ = {}, certified on n<sub>cal</sub> = {} calibration cases ({} automated, {} errors), \
                 expected automation {:.4}. {}</p>",
                1.0 - c.delta,
                c.alpha,
                c.tau.map_or("none (review everything)".to_string(), |t| format!("{t:.4}")),
                c.n_cal,
                c.automated,
                c.errors,
                c.automation_rate,
                esc(&c.method)
            );
        }
    }
    h.push_str("<h2>Plots</h2>");
    for (file, caption) in images {
        let _ = write!(h, "<figure><img src=\"{file}\" alt=\"{caption}\"><figcaption>{caption}</figcaption></figure>");
    }
    h.push_str("</body></html>\n");
    h
}
