//! The image model on the committed CIFAR fixture (tests/fixtures/cifar): import
//! of CIFAR-10N-style annotator columns and CIFAR-10H-style counts, a short CNN
//! training run calibrated on the second set, a bundle that loads, evaluates, and
//! answers the same for a batch as for each image alone.

use crate::common;

use candle_core::Device;
use common::{cifar10h, cifar10n};
use triaged::data::{format, Split};
use triaged::eval::{self, EvalOptions};
use triaged::model::{InputSchema, Predictor};
use triaged::train::{self, TrainConfig};

#[test]
fn fixture_imports_with_three_and_many_labels() {
    let n = cifar10n();
    assert_eq!(n.len(), 150);
    assert!((0..n.len()).all(|i| n.counts(i).iter().sum::<u32>() == 3));
    let h = cifar10h();
    assert_eq!(h.len(), 150);
    assert!((0..h.len()).all(|i| h.counts(i).iter().sum::<u32>() >= 47));
    assert_eq!(h.indices(Some(Split::Calibration)).unwrap().len(), 75);
    assert_eq!(h.indices(Some(Split::Test)).unwrap().len(), 75);
}

#[test]
fn a_short_cnn_run_writes_a_bundle_that_serves_batches_like_single_images() {
    let dir = tempfile::tempdir().unwrap();
    let (train_data, cal_data) = (cifar10n(), cifar10h());
    let train_path = dir.path().join("n.safetensors");
    let cal_path = dir.path().join("h.safetensors");
    format::save(&train_data, &train_path).unwrap();
    format::save(&cal_data, &cal_path).unwrap();
    let out = dir.path().join("models/cnn/1");
    let cfg = TrainConfig {
        epochs: 2,
        batch_size: 16,
        ensemble: 1,
        hidden: vec![16],
        stages: "4,8+8".into(),
        learning_rate: 3e-3,
        ..TrainConfig::default()
    };
    let outcome = train::train(
        &train_data,
        &train_path,
        Some((&cal_data, &cal_path)),
        &out,
        &cfg,
        &Device::Cpu,
        false,
    )
    .unwrap();
    let m = &outcome.manifest;
    assert_eq!(m.architecture.kind, "cnn");
    assert_eq!(
        m.input,
        InputSchema::Image {
            height: 32,
            width: 32,
            channels: 3
        }
    );
    assert_eq!(m.training.n_train, 150);
    // Only the calibration split's fitting part is used; the rest is left to
    // certificates (the split note says how it was divided).
    assert!(
        (1..75).contains(&m.training.n_calibration),
        "{}",
        m.training.n_calibration
    );
    assert!(m.training.split.contains("certify"), "{}", m.training.split);
    assert!(m.metrics.contains_key("test"), "{:?}", m.metrics);
    assert!(out.join("checkpoint.safetensors").exists());

    let predictor = Predictor::load(&out, &Device::Cpu).unwrap();
    let mut rows = Vec::new();
    for i in 0..5 {
        cal_data.extend_inputs(i, &mut rows);
    }
    let batched = predictor.predict(&rows).unwrap();
    let len = 32 * 32 * 3;
    for (i, b) in batched.iter().enumerate() {
        let single = predictor.predict(&rows[i * len..(i + 1) * len]).unwrap();
        for (p, q) in b.probabilities.iter().zip(&single[0].probabilities) {
            assert!((p - q).abs() < 1e-5, "case {i}: {p} vs {q}");
        }
        assert!((b.disagreement - single[0].disagreement).abs() < 1e-5);
        assert!((b.probabilities.iter().sum::<f32>() - 1.0).abs() < 1e-4);
    }

    let ev = eval::evaluate(
        &predictor,
        &cal_data,
        &EvalOptions {
            split: Some(Split::Test),
            class_groups: None,
        },
    )
    .unwrap();
    assert_eq!(ev.report.n, 75);
}

#[test]
fn a_feature_model_refuses_a_calibration_data_set() {
    let dir = tempfile::tempdir().unwrap();
    let data = triaged::data::synth::generate(
        &triaged::data::synth::SynthConfig {
            cases: 200,
            ..Default::default()
        },
        1,
    )
    .unwrap();
    let path = dir.path().join("d.safetensors");
    format::save(&data, &path).unwrap();
    let err = train::train(
        &data,
        &path,
        Some((&data, &path)),
        &dir.path().join("models/m/1"),
        &TrainConfig::default(),
        &Device::Cpu,
        false,
    )
    .err()
    .expect("refused");
    assert!(err.to_string().contains("--calibration-data"), "{err}");
}

#[test]
fn the_cnn_trainer_stops_early_and_records_file_names_not_paths() {
    let dir = tempfile::tempdir().unwrap();
    let (train_data, cal_data) = (cifar10n(), cifar10h());
    let train_path = dir.path().join("n.safetensors");
    let cal_path = dir.path().join("h.safetensors");
    format::save(&train_data, &train_path).unwrap();
    format::save(&cal_data, &cal_path).unwrap();
    let out = dir.path().join("models/cnn/1");
    // Patience 0: no epoch can improve on the best one "for 0 epochs", so the
    // run stops after its first epoch instead of running all 5.
    let cfg = TrainConfig {
        epochs: 5,
        patience: 0,
        batch_size: 32,
        ensemble: 1,
        hidden: vec![8],
        stages: "4".into(),
        ..TrainConfig::default()
    };
    let outcome = train::train(
        &train_data,
        &train_path,
        Some((&cal_data, &cal_path)),
        &out,
        &cfg,
        &Device::Cpu,
        false,
    )
    .unwrap();
    let t = &outcome.manifest.training;
    assert_eq!(t.epochs_run, 1, "--patience is honoured by the CNN trainer");
    assert_eq!(
        t.data_file, "n.safetensors",
        "no path of the training machine"
    );
    let manifest = std::fs::read_to_string(out.join("model.json")).unwrap();
    assert!(
        !manifest.contains(&dir.path().display().to_string()),
        "model.json names a local folder"
    );
}
