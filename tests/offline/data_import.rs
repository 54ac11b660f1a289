//! CSV import: the three label layouts, and every malformed-input error, each of
//! which must name the file, the line and the column.

use std::path::{Path, PathBuf};

use triaged::data::csv_import::{import_csv, CsvImport, ImportError, LabelLayout};
use triaged::data::{Inputs, Split};

fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, text).unwrap();
    p
}

fn counts_opts(csv: PathBuf) -> CsvImport {
    CsvImport {
        csv,
        labels: LabelLayout::Counts(vec!["n_a".into(), "n_b".into()]),
        features: Some(vec!["f1".into(), "f2".into()]),
        reference: None,
        split: None,
        classes: None,
        min_labels: 0,
        image_column: None,
        group: None,
    }
}

fn import_err(opts: &CsvImport) -> ImportError {
    import_csv(opts).expect_err("import should fail")
}

#[test]
fn counts_layout_with_reference_and_split() {
    let dir = tempfile::tempdir().unwrap();
    let csv = write(
        dir.path(),
        "ok.csv",
        "id,f1,f2,n_a,n_b,ref,split\n\
         a,1.5,2,3,0,0,train\n\
         b,-1,0.25,1,2,b,calibration\n\
         c,0,0,0,4,,test\n",
    );
    let opts = CsvImport {
        reference: Some("ref".into()),
        split: Some("split".into()),
        classes: Some(vec!["a".into(), "b".into()]),
        ..counts_opts(csv)
    };
    let d = import_csv(&opts).unwrap();
    assert_eq!(d.len(), 3);
    assert_eq!(d.class_names(), ["a", "b"]);
    assert_eq!(d.counts(1), [1, 2]);
    assert_eq!(d.features(0).unwrap(), [1.5, 2.0]);
    assert_eq!(d.reference(0), Some(0));
    assert_eq!(
        d.reference(1),
        Some(1),
        "a class name is accepted as reference"
    );
    assert_eq!(d.reference(2), None, "an empty reference cell means none");
    assert_eq!(
        d.splits().unwrap(),
        [Split::Train, Split::Calibration, Split::Test]
    );
    match d.inputs() {
        Inputs::Features { names, .. } => assert_eq!(names, &["f1", "f2"]),
        _ => panic!("features expected"),
    }
}

#[test]
fn annotator_columns_count_labels_and_skip_empty_cells() {
    let dir = tempfile::tempdir().unwrap();
    let csv = write(
        dir.path(),
        "ann.csv",
        "x,r1,r2,r3\n0.5,cat,dog,cat\n1.5,2,,2\n",
    );
    let opts = CsvImport {
        csv,
        labels: LabelLayout::Annotators(vec!["r1".into(), "r2".into(), "r3".into()]),
        features: None,
        reference: None,
        split: None,
        classes: Some(vec!["cat".into(), "dog".into(), "bird".into()]),
        min_labels: 0,
        image_column: None,
        group: None,
    };
    let d = import_csv(&opts).unwrap();
    assert_eq!(d.counts(0), [2, 1, 0]);
    assert_eq!(d.counts(1), [0, 0, 2]);
    assert_eq!(
        d.inputs().case_len(),
        1,
        "default features: every unused column"
    );
}

#[test]
fn annotator_indices_without_class_names_define_k() {
    let dir = tempfile::tempdir().unwrap();
    let csv = write(dir.path(), "ann.csv", "x,r1,r2\n0.5,0,3\n1.5,1,1\n");
    let opts = CsvImport {
        csv,
        labels: LabelLayout::Annotators(vec!["r1".into(), "r2".into()]),
        features: None,
        reference: None,
        split: None,
        classes: None,
        min_labels: 0,
        image_column: None,
        group: None,
    };
    let d = import_csv(&opts).unwrap();
    assert_eq!(d.class_names(), ["0", "1", "2", "3"]);
    assert_eq!(d.counts(0), [1, 0, 0, 1]);
}

#[test]
fn one_row_per_annotation_groups_by_case() {
    let dir = tempfile::tempdir().unwrap();
    let csv = write(
        dir.path(),
        "long.csv",
        "case,reader,label,size\nn1,r1,1,3.0\nn2,r1,0,9.0\nn1,r2,1,3.0\nn1,r3,0,3.0\n",
    );
    let opts = CsvImport {
        csv,
        labels: LabelLayout::Long {
            case: "case".into(),
            label: "label".into(),
        },
        features: Some(vec!["size".into()]),
        reference: None,
        split: None,
        classes: Some(vec!["benign".into(), "malignant".into()]),
        min_labels: 0,
        image_column: None,
        group: None,
    };
    let d = import_csv(&opts).unwrap();
    assert_eq!(d.len(), 2, "cases in order of first appearance");
    assert_eq!(d.counts(0), [1, 2]);
    assert_eq!(d.counts(1), [1, 0]);
    assert_eq!(d.features(1).unwrap(), [9.0]);
}

#[test]
fn long_layout_rejects_a_case_whose_features_change() {
    let dir = tempfile::tempdir().unwrap();
    let csv = write(
        dir.path(),
        "long.csv",
        "case,label,size\nn1,1,3.0\nn1,0,4.0\n",
    );
    let opts = CsvImport {
        csv,
        labels: LabelLayout::Long {
            case: "case".into(),
            label: "label".into(),
        },
        features: Some(vec!["size".into()]),
        reference: None,
        split: None,
        classes: None,
        min_labels: 0,
        image_column: None,
        group: None,
    };
    let e = import_err(&opts);
    assert_eq!(
        (e.line, e.column.as_deref()),
        (Some(3), Some("size")),
        "{e}"
    );
    assert!(e.to_string().contains("differs"), "{e}");
}

#[test]
fn min_labels_drops_cases_before_checking_them() {
    let dir = tempfile::tempdir().unwrap();
    // The dropped case has a NaN feature; it must not fail the import.
    let csv = write(
        dir.path(),
        "m.csv",
        "f1,f2,n_a,n_b\n1,2,2,1\nnan,2,1,0\n3,4,0,3\n",
    );
    let opts = CsvImport {
        min_labels: 3,
        ..counts_opts(csv)
    };
    let d = import_csv(&opts).unwrap();
    assert_eq!(d.len(), 2);
    assert_eq!(d.features(1).unwrap(), [3.0, 4.0]);
}

/// Runs a counts-layout import of `text` and returns the error.
fn counts_error(text: &str) -> (ImportError, String) {
    let dir = tempfile::tempdir().unwrap();
    let csv = write(dir.path(), "cases.csv", text);
    let e = import_err(&counts_opts(csv));
    let msg = e.to_string();
    assert!(
        msg.contains("cases.csv"),
        "the message names the file: {msg}"
    );
    (e, msg)
}

#[test]
fn ragged_row_names_its_line() {
    let (e, msg) = counts_error("f1,f2,n_a,n_b\n1,2,3,4\n1,2,3\n");
    assert_eq!(e.line, Some(3), "{msg}");
    assert!(msg.contains("ragged"), "{msg}");
}

#[test]
fn nan_and_infinite_features_are_rejected() {
    for bad in ["NaN", "inf", "-Infinity"] {
        let (e, msg) = counts_error(&format!("f1,f2,n_a,n_b\n1,2,3,4\n5,{bad},1,1\n"));
        assert_eq!(
            (e.line, e.column.as_deref()),
            (Some(3), Some("f2")),
            "{msg}"
        );
        assert!(msg.contains("finite"), "{msg}");
    }
}

#[test]
fn non_numeric_and_missing_features_are_rejected() {
    let (e, msg) = counts_error("f1,f2,n_a,n_b\nabc,2,3,4\n");
    assert_eq!(
        (e.line, e.column.as_deref()),
        (Some(2), Some("f1")),
        "{msg}"
    );
    assert!(msg.contains("not a number"), "{msg}");
    let (e, msg) = counts_error("f1,f2,n_a,n_b\n1,,3,4\n");
    assert_eq!(
        (e.line, e.column.as_deref()),
        (Some(2), Some("f2")),
        "{msg}"
    );
    assert!(msg.contains("missing"), "{msg}");
}

#[test]
fn negative_and_fractional_counts_are_rejected() {
    let (e, msg) = counts_error("f1,f2,n_a,n_b\n1,2,3,4\n1,2,-1,4\n");
    assert_eq!(
        (e.line, e.column.as_deref()),
        (Some(3), Some("n_a")),
        "{msg}"
    );
    assert!(msg.contains("negative"), "{msg}");
    let (e, msg) = counts_error("f1,f2,n_a,n_b\n1,2,3,0.5\n");
    assert_eq!(
        (e.line, e.column.as_deref()),
        (Some(2), Some("n_b")),
        "{msg}"
    );
}

#[test]
fn unknown_class_is_rejected_with_the_known_ones() {
    let dir = tempfile::tempdir().unwrap();
    let csv = write(
        dir.path(),
        "ann.csv",
        "x,r1,r2\n0.5,cat,dog\n1.5,cat,fish\n",
    );
    let opts = CsvImport {
        csv,
        labels: LabelLayout::Annotators(vec!["r1".into(), "r2".into()]),
        features: None,
        reference: None,
        split: None,
        classes: Some(vec!["cat".into(), "dog".into()]),
        min_labels: 0,
        image_column: None,
        group: None,
    };
    let e = import_err(&opts);
    assert_eq!((e.line, e.column.as_deref()), (Some(3), Some("r2")), "{e}");
    let msg = e.to_string();
    assert!(
        msg.contains("unknown class 'fish'") && msg.contains("cat, dog"),
        "{msg}"
    );
    // An index out of range is unknown too.
    let csv = write(dir.path(), "ann2.csv", "x,r1,r2\n0.5,0,7\n");
    let e = import_err(&CsvImport {
        csv,
        ..opts.clone()
    });
    assert_eq!(e.column.as_deref(), Some("r2"), "{e}");
}

#[test]
fn empty_file_and_header_only_are_rejected() {
    let (e, msg) = counts_error("");
    assert!(
        msg.contains("empty") || msg.contains("no such column"),
        "{msg}"
    );
    assert!(e.line.is_none() || e.line == Some(1));
    let (_, msg) = counts_error("f1,f2,n_a,n_b\n");
    assert!(msg.contains("no data rows"), "{msg}");
}

#[test]
fn missing_column_lists_the_header() {
    let (e, msg) = counts_error("f1,f2,n_a\n1,2,3\n");
    assert_eq!(e.column.as_deref(), Some("n_b"), "{msg}");
    assert!(
        msg.contains("no such column") && msg.contains("f1, f2, n_a"),
        "{msg}"
    );
}

#[test]
fn bad_split_value_is_rejected() {
    let dir = tempfile::tempdir().unwrap();
    let csv = write(
        dir.path(),
        "s.csv",
        "f1,f2,n_a,n_b,s\n1,2,3,4,train\n1,2,3,4,holdout\n",
    );
    let e = import_err(&CsvImport {
        split: Some("s".into()),
        ..counts_opts(csv)
    });
    assert_eq!((e.line, e.column.as_deref()), (Some(3), Some("s")), "{e}");
    assert!(e.to_string().contains("train, calibration, test"), "{e}");
}

#[test]
fn a_column_cannot_be_feature_and_label() {
    let dir = tempfile::tempdir().unwrap();
    let csv = write(dir.path(), "s.csv", "f1,f2,n_a,n_b\n1,2,3,4\n");
    let e = import_err(&CsvImport {
        features: Some(vec!["f1".into(), "n_a".into()]),
        ..counts_opts(csv)
    });
    assert_eq!(e.column.as_deref(), Some("n_a"), "{e}");
}

#[test]
fn missing_file_is_reported() {
    let e = import_err(&counts_opts(PathBuf::from("/nonexistent/cases.csv")));
    assert!(e.to_string().contains("/nonexistent/cases.csv"), "{e}");
}

#[test]
fn group_column_is_kept_and_survives_a_save() {
    let dir = tempfile::tempdir().unwrap();
    let csv = write(
        dir.path(),
        "g.csv",
        "id,f1,f2,n_a,n_b,patient\n\
         a,1,2,3,0,P-7\n\
         b,1,0,1,2,P-9\n\
         c,0,0,0,4,P-7\n",
    );
    let opts = CsvImport {
        group: Some("patient".into()),
        ..counts_opts(csv)
    };
    let d = import_csv(&opts).unwrap();
    assert_eq!(d.groups(), Some(&[0i64, 1, 0][..]));
    let path = dir.path().join("g.safetensors");
    triaged::data::format::save(&d, &path).unwrap();
    assert_eq!(
        triaged::data::format::load(&path).unwrap().groups(),
        d.groups()
    );
    // A missing group is refused with its line and column.
    let bad = write(dir.path(), "bad.csv", "f1,f2,n_a,n_b,patient\n1,2,3,0,\n");
    let e = import_err(&CsvImport {
        group: Some("patient".into()),
        ..counts_opts(bad)
    });
    assert_eq!((e.line, e.column.as_deref()), (Some(2), Some("patient")));
}
