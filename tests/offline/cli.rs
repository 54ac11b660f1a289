//! The command line contract (docs/cli.md) through the real binary: synth → train →
//! eval writes the report files operators' scripts read; bad input exits non-zero
//! with a located message.

use std::path::Path;
use std::process::{Command, Output};

fn triaged(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_triaged"))
        .args(args)
        .env("RUST_LOG", "warn")
        .output()
        .expect("run triaged")
}

fn ok(args: &[&str]) -> String {
    let out = triaged(args);
    assert!(
        out.status.success(),
        "triaged {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

#[test]
fn synth_train_eval_writes_the_contracted_report() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("synth.safetensors");
    let bundle = dir.path().join("models/synth/3");
    let report = dir.path().join("report");
    ok(&[
        "data",
        "synth",
        "--out",
        s(&data),
        "--seed",
        "3",
        "--cases",
        "900",
    ]);
    let described = ok(&["data", "describe", s(&data)]);
    assert!(described.contains("cases (N)   900"), "{described}");
    ok(&[
        "train",
        "--data",
        s(&data),
        "--out",
        s(&bundle),
        "--seed",
        "3",
        "--epochs",
        "8",
        "--ensemble",
        "2",
    ]);
    let manifest: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(bundle.join("model.json")).unwrap()).unwrap();
    assert_eq!(manifest["input"]["kind"], "features");
    assert_eq!(manifest["input"]["features"].as_array().unwrap().len(), 8);
    assert!(manifest["training"]["data_sha256"].as_str().unwrap().len() == 64);

    let table = ok(&[
        "eval",
        "--model",
        s(&bundle),
        "--data",
        s(&data),
        "--split",
        "test",
        "--out",
        s(&report),
    ]);
    assert!(
        table.contains("AUC(D>0)") && table.contains("DUP"),
        "{table}"
    );

    let r: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(report.join("report.json")).unwrap())
            .unwrap();
    let n = r["n"].as_u64().unwrap() as usize;
    assert!(n > 100 && n < 300, "test split of 900: {n}");
    for key in ["accuracy_reference", "accuracy_majority", "nll", "ece"] {
        assert!(r["classification"][key].is_number(), "classification.{key}");
    }
    for score in ["dup", "uvc"] {
        for key in ["auc_any", "auc_median", "spearman"] {
            assert!(
                r["disagreement"][score][key].is_number(),
                "disagreement.{score}.{key}"
            );
        }
    }
    let curve = &r["triage_curve"];
    let fractions = curve["fractions"].as_array().unwrap();
    for key in ["dup", "uvc", "combined", "random", "oracle"] {
        assert_eq!(
            curve[key].as_array().unwrap().len(),
            fractions.len(),
            "triage_curve.{key}"
        );
    }

    let csv = std::fs::read_to_string(report.join("predictions.csv")).unwrap();
    let mut lines = csv.lines();
    assert_eq!(
        lines.next().unwrap(),
        "index,reference,majority,predicted,p_0,p_1,p_2,dup,uvc,D"
    );
    assert_eq!(lines.count(), n);
    for file in [
        "report.html",
        "triage_curve.png",
        "disagreement_roc.png",
        "reliability.png",
    ] {
        let bytes = std::fs::read(report.join(file)).unwrap();
        assert!(bytes.len() > 1000, "{file} is {} bytes", bytes.len());
    }
    let html = std::fs::read_to_string(report.join("report.html")).unwrap();
    assert!(html.contains("triage_curve.png") && html.contains("ROC-AUC"));
}

#[test]
fn import_csv_error_exits_non_zero_naming_line_and_column() {
    let dir = tempfile::tempdir().unwrap();
    let csv = dir.path().join("bad.csv");
    std::fs::write(&csv, "f,n_a,n_b\n1,2,3\n2,-4,1\n").unwrap();
    let out = triaged(&[
        "data",
        "import-csv",
        "--csv",
        s(&csv),
        "--out",
        s(&dir.path().join("o.safetensors")),
        "--counts",
        "n_a,n_b",
    ]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("bad.csv, line 3, column 'n_a': negative count -4"),
        "{err}"
    );
    assert!(
        !dir.path().join("o.safetensors").exists(),
        "nothing written on failure"
    );
}

#[test]
fn eval_of_a_missing_split_says_so() {
    let dir = tempfile::tempdir().unwrap();
    let csv = dir.path().join("c.csv");
    let rows: String = (0..40)
        .map(|i| format!("{i},{},{}\n", i % 3, 2 - i % 3))
        .collect();
    std::fs::write(&csv, format!("f,n_a,n_b\n{rows}")).unwrap();
    let data = dir.path().join("c.safetensors");
    let bundle = dir.path().join("m/c/1");
    ok(&[
        "data",
        "import-csv",
        "--csv",
        s(&csv),
        "--out",
        s(&data),
        "--counts",
        "n_a,n_b",
    ]);
    ok(&[
        "train",
        "--data",
        s(&data),
        "--out",
        s(&bundle),
        "--epochs",
        "2",
        "--ensemble",
        "1",
    ]);
    let out = triaged(&[
        "eval",
        "--model",
        s(&bundle),
        "--data",
        s(&data),
        "--split",
        "test",
        "--out",
        s(&dir.path().join("r")),
    ]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("no split tensor") && err.contains("--split"),
        "{err}"
    );
}

#[test]
fn calibrate_writes_a_policy_and_eval_reports_what_it_does() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("synth.safetensors");
    let bundle = dir.path().join("models/synth/1");
    ok(&[
        "data",
        "synth",
        "--out",
        s(&data),
        "--seed",
        "5",
        "--cases",
        "2000",
    ]);
    ok(&[
        "train",
        "--data",
        s(&data),
        "--out",
        s(&bundle),
        "--seed",
        "5",
        "--epochs",
        "30",
        "--ensemble",
        "2",
    ]);
    let out = ok(&[
        "calibrate",
        "--model",
        s(&bundle),
        "--data",
        s(&data),
        "--policy",
        "risk",
        "--alpha",
        "0.1",
        "--delta",
        "0.1",
    ]);
    assert!(out.contains("certificate"), "{out}");
    let spec: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(bundle.join("policy.json")).unwrap())
            .unwrap();
    assert_eq!(spec["rule"]["kind"], "risk");
    assert_eq!(spec["calibration"]["split"], "calibration");

    let report_dir = dir.path().join("r");
    let table = ok(&[
        "eval",
        "--model",
        s(&bundle),
        "--data",
        s(&data),
        "--split",
        "test",
        "--policy",
        "--out",
        s(&report_dir),
    ]);
    assert!(
        table.contains("certificate") && table.contains("realized"),
        "{table}"
    );
    let r: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(report_dir.join("report.json")).unwrap())
            .unwrap();
    let p = &r["policy"];
    assert_eq!(p["certificate"]["alpha"], 0.1);
    assert_eq!(p["certificate"]["delta"], 0.1);
    assert!(p["certificate"]["n_cal"].as_u64().unwrap() > 100);
    assert!(p["certificate"]["tau"].is_number(), "{p}");
    let automation = p["automation_rate"].as_f64().unwrap();
    assert!(automation > 0.1, "{p}");
    let selective = p["selective_error"].as_f64().unwrap();
    assert!(selective <= p["selective_error_upper"].as_f64().unwrap());
    assert!(
        selective < 0.1 + 0.05,
        "held-out selective error {selective}"
    );
    assert!(p["total_error"].is_number());
    assert!(std::fs::read_to_string(report_dir.join("report.html"))
        .unwrap()
        .contains("Certificate"));

    // A budget policy reviews about the fraction asked for.
    ok(&[
        "calibrate",
        "--model",
        s(&bundle),
        "--data",
        s(&data),
        "--policy",
        "budget",
        "--review-fraction",
        "0.3",
    ]);
    ok(&[
        "eval",
        "--model",
        s(&bundle),
        "--data",
        s(&data),
        "--split",
        "test",
        "--policy",
        "--out",
        s(&report_dir),
    ]);
    let r: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(report_dir.join("report.json")).unwrap())
            .unwrap();
    let automation = r["policy"]["automation_rate"].as_f64().unwrap();
    assert!(
        (automation - 0.7).abs() < 0.06,
        "budget 0.3 -> automation {automation}"
    );
    assert!(r["policy"]["certificate"].is_null());
}

#[test]
fn eval_policy_without_a_policy_says_how_to_make_one() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("synth.safetensors");
    let bundle = dir.path().join("models/synth/1");
    ok(&["data", "synth", "--out", s(&data), "--cases", "300"]);
    ok(&[
        "train",
        "--data",
        s(&data),
        "--out",
        s(&bundle),
        "--epochs",
        "2",
        "--ensemble",
        "1",
    ]);
    let out = triaged(&[
        "eval",
        "--model",
        s(&bundle),
        "--data",
        s(&data),
        "--policy",
        "--out",
        s(&dir.path().join("r")),
    ]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("no policy.json") && err.contains("triaged calibrate"),
        "{err}"
    );
}

#[test]
fn serve_logs_the_configuration_in_force_including_flags() {
    use std::io::{BufRead, BufReader};
    let dir = tempfile::tempdir().unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_triaged"))
        .args([
            "--threads",
            "2",
            "--log-format",
            "json",
            "serve",
            "--bind",
            "127.0.0.1:0",
        ])
        .env("RUST_LOG", "info")
        .env(
            "TRIAGED__STORE__URL",
            format!("sqlite://{}", dir.path().join("q.db").display()),
        )
        .stderr(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null())
        .spawn()
        .expect("start serve");
    let stderr = child.stderr.take().unwrap();
    let line = BufReader::new(stderr)
        .lines()
        .map_while(Result::ok)
        .find(|l| l.contains("effective configuration"));
    let _ = child.kill();
    let _ = child.wait();
    let line = line.expect("an 'effective configuration' log line");
    let entry: serde_json::Value = serde_json::from_str(&line).expect("--log-format json");
    let settings: serde_json::Value =
        serde_json::from_str(entry["fields"]["settings"].as_str().unwrap()).unwrap();
    assert_eq!(settings["batch"]["threads"], 2, "{settings}");
    assert_eq!(settings["log"]["format"], "json", "{settings}");
}
