//! PNG plots of an evaluation: the triage curve, ROC curves of disagreement
//! detection (DUP vs UVC, `D > 0`), and the reliability diagram. Text is drawn with
//! the DejaVu Sans font compiled into the binary, so no system fonts are needed.

use std::path::Path;
use std::sync::Once;

use anyhow::anyhow;
use plotters::prelude::*;
use plotters::style::FontStyle;

use super::metrics::roc_curve;
use super::Evaluation;

const SIZE: (u32, u32) = (760, 500);
const FONT: &str = "sans-serif";

fn register_font() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        // The font is a compiled-in, valid TTF; failure here would be a build defect.
        let _ = plotters::style::register_font(FONT, FontStyle::Normal, dejavu::sans::regular());
    });
}

/// Writes the plots into `dir`; returns `(file name, caption)` pairs for the HTML.
pub fn write_all(eval: &Evaluation, dir: &Path) -> anyhow::Result<Vec<(String, String)>> {
    register_font();
    let mut out = Vec::new();
    let file = "triage_curve.png";
    triage_curve(eval, &dir.join(file)).map_err(|e| anyhow!("plotting {file}: {e}"))?;
    out.push((
        file.to_string(),
        "Total error vs fraction of cases sent to review".to_string(),
    ));
    let file = "disagreement_roc.png";
    disagreement_roc(eval, &dir.join(file)).map_err(|e| anyhow!("plotting {file}: {e}"))?;
    out.push((
        file.to_string(),
        "ROC of detecting D > 0: DUP vs UVC".to_string(),
    ));
    let file = "reliability.png";
    reliability(eval, &dir.join(file)).map_err(|e| anyhow!("plotting {file}: {e}"))?;
    out.push((
        file.to_string(),
        "Reliability diagram (top-class confidence)".to_string(),
    ));
    Ok(out)
}

type PlotResult = Result<(), Box<dyn std::error::Error>>;

fn series_colors() -> [RGBColor; 5] {
    [
        RGBColor(31, 119, 180),
        RGBColor(255, 127, 14),
        RGBColor(44, 160, 44),
        RGBColor(127, 127, 127),
        RGBColor(214, 39, 40),
    ]
}

fn triage_curve(eval: &Evaluation, path: &Path) -> PlotResult {
    let t = &eval.report.triage_curve;
    let all = [&t.dup, &t.uvc, &t.combined, &t.random, &t.oracle];
    let max = all
        .iter()
        .flat_map(|s| s.iter().copied())
        .filter(|v| v.is_finite())
        .fold(0.0f64, f64::max)
        .max(1e-3)
        * 1.05;
    let root = BitMapBackend::new(path, SIZE).into_drawing_area();
    root.fill(&WHITE)?;
    let mut chart = ChartBuilder::on(&root)
        .caption("Triage curve", (FONT, 22))
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(60)
        .build_cartesian_2d(0.0..1.0, 0.0..max)?;
    chart
        .configure_mesh()
        .x_desc("fraction of cases reviewed")
        .y_desc("total error")
        .label_style((FONT, 14))
        .draw()?;
    let names = ["DUP", "UVC", "â − ĥ", "random", "oracle"];
    for ((series, name), color) in all.iter().zip(names).zip(series_colors()) {
        chart
            .draw_series(LineSeries::new(
                t.fractions.iter().copied().zip(series.iter().copied()),
                color.stroke_width(2),
            ))?
            .label(name)
            .legend(move |(x, y)| {
                PathElement::new(vec![(x, y), (x + 18, y)], color.stroke_width(2))
            });
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperRight)
        .label_font((FONT, 14))
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .draw()?;
    root.present()?;
    Ok(())
}

fn disagreement_roc(eval: &Evaluation, path: &Path) -> PlotResult {
    let cases: Vec<_> = eval
        .cases
        .iter()
        .filter(|c| c.disagreement.is_some())
        .collect();
    let positive: Vec<bool> = cases
        .iter()
        .map(|c| c.disagreement.unwrap_or(0.0) > 0.0)
        .collect();
    let dup: Vec<f64> = cases
        .iter()
        .map(|c| f64::from(c.prediction.disagreement))
        .collect();
    let uvc: Vec<f64> = cases
        .iter()
        .map(|c| f64::from(c.prediction.uvc()))
        .collect();
    let root = BitMapBackend::new(path, SIZE).into_drawing_area();
    root.fill(&WHITE)?;
    let mut chart = ChartBuilder::on(&root)
        .caption("Detecting human disagreement (D > 0)", (FONT, 22))
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(50)
        .build_cartesian_2d(0.0..1.0, 0.0..1.0)?;
    chart
        .configure_mesh()
        .x_desc("false positive rate")
        .y_desc("true positive rate")
        .label_style((FONT, 14))
        .draw()?;
    let d = &eval.report.disagreement;
    let fmt = |v: Option<f64>| v.map_or("n/a".to_string(), |v| format!("{v:.3}"));
    let colors = series_colors();
    for (scores, name, color) in [
        (&dup, format!("DUP (AUC {})", fmt(d.dup.auc_any)), colors[0]),
        (&uvc, format!("UVC (AUC {})", fmt(d.uvc.auc_any)), colors[1]),
    ] {
        chart
            .draw_series(LineSeries::new(
                roc_curve(scores, &positive),
                color.stroke_width(2),
            ))?
            .label(name)
            .legend(move |(x, y)| {
                PathElement::new(vec![(x, y), (x + 18, y)], color.stroke_width(2))
            });
    }
    chart.draw_series(LineSeries::new(vec![(0.0, 0.0), (1.0, 1.0)], colors[3]))?;
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::LowerRight)
        .label_font((FONT, 14))
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .draw()?;
    root.present()?;
    Ok(())
}

fn reliability(eval: &Evaluation, path: &Path) -> PlotResult {
    let bins = &eval.report.classification.reliability;
    let root = BitMapBackend::new(path, SIZE).into_drawing_area();
    root.fill(&WHITE)?;
    let mut chart = ChartBuilder::on(&root)
        .caption(
            format!("Reliability (ECE {:.3})", eval.report.classification.ece),
            (FONT, 22),
        )
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(50)
        .build_cartesian_2d(0.0..1.0, 0.0..1.0)?;
    chart
        .configure_mesh()
        .x_desc("confidence")
        .y_desc("accuracy")
        .label_style((FONT, 14))
        .draw()?;
    let colors = series_colors();
    chart.draw_series(bins.iter().filter(|b| b.count > 0).map(|b| {
        Rectangle::new(
            [(b.lower, 0.0), (b.upper, b.accuracy)],
            colors[0].mix(0.6).filled(),
        )
    }))?;
    chart.draw_series(LineSeries::new(
        vec![(0.0, 0.0), (1.0, 1.0)],
        colors[4].stroke_width(2),
    ))?;
    root.present()?;
    Ok(())
}
