//! Training, bundles and the predictor: training lowers the loss and beats chance,
//! is reproducible, batched and single forwards agree, and broken bundles are
//! refused with a message naming the file and field.

use std::path::Path;

use candle_core::Device;
use triaged::data::synth::{self, SynthConfig};
use triaged::data::{format, Dataset, Split};
use triaged::eval::{self, EvalOptions};
use triaged::model::Predictor;
use triaged::train::{self, TrainConfig};

fn small_synth(seed: u64) -> Dataset {
    synth::generate(
        &SynthConfig {
            cases: 1500,
            ..SynthConfig::default()
        },
        seed,
    )
    .unwrap()
}

fn quick_config(seed: u64) -> TrainConfig {
    TrainConfig {
        seed,
        epochs: 60,
        patience: 15,
        ensemble: 2,
        hidden: vec![32, 32],
        ..TrainConfig::default()
    }
}

/// Saves `data`, trains into `<dir>/models/m/1`, returns the bundle path.
fn train_bundle(dir: &Path, data: &Dataset, cfg: &TrainConfig) -> std::path::PathBuf {
    let data_path = dir.join("d.safetensors");
    format::save(data, &data_path).unwrap();
    let out = dir.join("models/m/1");
    train::train(data, &data_path, None, &out, cfg, &Device::Cpu, false).unwrap();
    out
}

#[test]
fn training_lowers_loss_beats_chance_and_ranks_disagreement() {
    let dir = tempfile::tempdir().unwrap();
    let data = small_synth(1);
    let bundle = train_bundle(dir.path(), &data, &quick_config(1));
    let predictor = Predictor::load(&bundle, &Device::Cpu).unwrap();
    let m = predictor.manifest();
    assert!(
        m.training.best_calibration_loss < m.training.initial_calibration_loss - 0.05,
        "loss {} -> {}",
        m.training.initial_calibration_loss,
        m.training.best_calibration_loss
    );
    let ev = eval::evaluate(
        &predictor,
        &data,
        &EvalOptions {
            split: Some(Split::Test),
            class_groups: None,
        },
    )
    .unwrap();
    let acc = ev.report.classification.accuracy_majority.unwrap();
    assert!(acc > 0.5, "3 classes, chance is 1/3; got {acc}");
    let dup = ev.report.disagreement.dup.auc_any.unwrap();
    let uvc = ev.report.disagreement.uvc.auc_any.unwrap();
    assert!(dup > 0.65 && dup > uvc, "DUP {dup} UVC {uvc}");
    assert_eq!(
        ev.cases.len(),
        data.indices(Some(Split::Test)).unwrap().len()
    );
    assert!(
        m.temperature > 0.2 && m.temperature < 5.0,
        "{}",
        m.temperature
    );
    assert!(m.metrics.contains_key("test") && m.metrics.contains_key("calibration"));
    assert_eq!(m.name, "m");
    assert_eq!(m.version, "1");
}

#[test]
fn same_seed_gives_the_same_weights() {
    let data = small_synth(2);
    let cfg = TrainConfig {
        epochs: 5,
        ..quick_config(5)
    };
    let a = tempfile::tempdir().unwrap();
    let b = tempfile::tempdir().unwrap();
    let wa = std::fs::read(train_bundle(a.path(), &data, &cfg).join("model.safetensors")).unwrap();
    let wb = std::fs::read(train_bundle(b.path(), &data, &cfg).join("model.safetensors")).unwrap();
    assert_eq!(wa, wb);
}

#[test]
fn batched_forward_equals_single_forward() {
    let dir = tempfile::tempdir().unwrap();
    let data = small_synth(3);
    let cfg = TrainConfig {
        epochs: 3,
        ..quick_config(3)
    };
    let predictor = Predictor::load(&train_bundle(dir.path(), &data, &cfg), &Device::Cpu).unwrap();
    let rows: Vec<f32> = (0..37)
        .flat_map(|i| data.features(i).unwrap().to_vec())
        .collect();
    let batched = predictor.predict(&rows).unwrap();
    assert_eq!(batched.len(), 37);
    for (i, b) in batched.iter().enumerate() {
        let single = predictor.predict(data.features(i).unwrap()).unwrap();
        let s = &single[0];
        for (x, y) in b.probabilities.iter().zip(&s.probabilities) {
            assert!((x - y).abs() < 1e-5, "case {i}: {x} vs {y}");
        }
        assert!((b.disagreement - s.disagreement).abs() < 1e-5);
        assert!((b.human_error.unwrap() - s.human_error.unwrap()).abs() < 1e-5);
        assert!((b.probabilities.iter().sum::<f32>() - 1.0).abs() < 1e-5);
    }
}

#[test]
fn broken_bundles_are_refused_with_file_and_field() {
    let dir = tempfile::tempdir().unwrap();
    let data = small_synth(4);
    let cfg = TrainConfig {
        epochs: 2,
        ..quick_config(4)
    };
    let bundle = train_bundle(dir.path(), &data, &cfg);
    let manifest_path = bundle.join("model.json");
    let good = std::fs::read_to_string(&manifest_path).unwrap();
    let load_err = || {
        format!(
            "{:#}",
            Predictor::load(&bundle, &Device::Cpu)
                .err()
                .expect("load must fail")
        )
    };

    let mut m: serde_json::Value = serde_json::from_str(&good).unwrap();
    m["temperature"] = serde_json::json!(-1.0);
    std::fs::write(&manifest_path, m.to_string()).unwrap();
    let e = load_err();
    assert!(e.contains("model.json") && e.contains("temperature"), "{e}");

    let mut m: serde_json::Value = serde_json::from_str(&good).unwrap();
    m.as_object_mut().unwrap().remove("classes");
    std::fs::write(&manifest_path, m.to_string()).unwrap();
    let e = load_err();
    assert!(e.contains("model.json") && e.contains("classes"), "{e}");

    // Architecture that does not match the weights.
    let mut m: serde_json::Value = serde_json::from_str(&good).unwrap();
    m["architecture"]["hidden"] = serde_json::json!([16, 16]);
    std::fs::write(&manifest_path, m.to_string()).unwrap();
    let e = load_err();
    assert!(
        e.contains("model.safetensors") && e.contains("architecture"),
        "{e}"
    );

    // Truncated weights.
    std::fs::write(&manifest_path, &good).unwrap();
    std::fs::write(bundle.join("model.safetensors"), b"\x08\x00\x00").unwrap();
    let e = load_err();
    assert!(e.contains("model.safetensors"), "{e}");

    // Missing bundle.
    let e = format!(
        "{:#}",
        Predictor::load(&dir.path().join("nope/1"), &Device::Cpu)
            .err()
            .unwrap()
    );
    assert!(e.contains("nope/1/model.json"), "{e}");
}

#[test]
fn training_without_a_split_generates_one() {
    let dir = tempfile::tempdir().unwrap();
    let with = small_synth(6);
    let counts: Vec<u32> = with.all_counts().to_vec();
    let data = Dataset::new(
        with.inputs().clone(),
        with.class_names().to_vec(),
        counts,
        with.references().map(|r| r.to_vec()),
        None,
        "no split".into(),
    )
    .unwrap();
    let cfg = TrainConfig {
        epochs: 2,
        ..quick_config(6)
    };
    let bundle = train_bundle(dir.path(), &data, &cfg);
    let m = Predictor::load(&bundle, &Device::Cpu)
        .unwrap()
        .manifest()
        .clone();
    assert!(
        m.training.split.contains("generated"),
        "{}",
        m.training.split
    );
    // 60% train, 20% calibration of which the fitting part (about 40%) is used.
    assert_eq!(m.training.n_train, 900);
    assert!(
        (60..240).contains(&m.training.n_calibration),
        "{}",
        m.training.n_calibration
    );
}
