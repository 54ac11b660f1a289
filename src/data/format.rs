//! The dataset file format (docs/formats.md): one safetensors file with tensors `x`
//! (`f32 [N,D]` or `u8 [N,H,W,C]`), `counts` (`u32 [N,K]`), optional `reference`
//! (`i64 [N]`, −1 = none), `split` (`u8 [N]`), `group` (`i64 [N]`, e.g. the patient), and `__metadata__` keys `kind`,
//! `class_names`, `source` (+ `feature_names` for feature data sets).

use std::collections::HashMap;
use std::path::Path;

use anyhow::{bail, Context};
use safetensors::tensor::{Dtype, TensorView};
use safetensors::SafeTensors;

use super::{Dataset, Inputs, Split};

/// Writes `dataset` to `path` (parent folders are created).
pub fn save(dataset: &Dataset, path: &Path) -> anyhow::Result<()> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir)
            .with_context(|| format!("creating folder {}", dir.display()))?;
    }
    let bytes = to_bytes(dataset)?;
    std::fs::write(path, bytes).with_context(|| format!("writing dataset {}", path.display()))
}

/// The dataset file's bytes.
pub fn to_bytes(dataset: &Dataset) -> anyhow::Result<Vec<u8>> {
    let n = dataset.len();
    let k = dataset.num_classes();
    let mut meta = HashMap::new();
    meta.insert("kind".to_string(), dataset.inputs().kind().to_string());
    meta.insert(
        "class_names".to_string(),
        serde_json::to_string(dataset.class_names())?,
    );
    meta.insert("source".to_string(), dataset.source().to_string());

    let x_bytes: Vec<u8>;
    let x_view = match dataset.inputs() {
        Inputs::Features { dim, names, values } => {
            meta.insert("feature_names".to_string(), serde_json::to_string(names)?);
            x_bytes = values.iter().flat_map(|v| v.to_le_bytes()).collect();
            TensorView::new(Dtype::F32, vec![n, *dim], &x_bytes)?
        }
        Inputs::Images {
            height,
            width,
            channels,
            pixels,
        } => TensorView::new(Dtype::U8, vec![n, *height, *width, *channels], pixels)?,
    };
    let counts_bytes: Vec<u8> = dataset
        .all_counts()
        .iter()
        .flat_map(|v| v.to_le_bytes())
        .collect();
    let mut tensors = vec![
        ("x".to_string(), x_view),
        (
            "counts".to_string(),
            TensorView::new(Dtype::U32, vec![n, k], &counts_bytes)?,
        ),
    ];
    let ref_bytes: Vec<u8>;
    if let Some(r) = dataset.references() {
        ref_bytes = r.iter().flat_map(|v| v.to_le_bytes()).collect();
        tensors.push((
            "reference".to_string(),
            TensorView::new(Dtype::I64, vec![n], &ref_bytes)?,
        ));
    }
    let split_bytes: Vec<u8>;
    if let Some(s) = dataset.splits() {
        split_bytes = s.iter().map(|s| s.code()).collect();
        tensors.push((
            "split".to_string(),
            TensorView::new(Dtype::U8, vec![n], &split_bytes)?,
        ));
    }
    let group_bytes: Vec<u8>;
    if let Some(g) = dataset.groups() {
        group_bytes = g.iter().flat_map(|v| v.to_le_bytes()).collect();
        tensors.push((
            "group".to_string(),
            TensorView::new(Dtype::I64, vec![n], &group_bytes)?,
        ));
    }
    safetensors::serialize(tensors, Some(meta)).context("encoding the dataset as safetensors")
}

/// Reads and validates a dataset file. Errors name the file and the offending
/// tensor or metadata key.
pub fn load(path: &Path) -> anyhow::Result<Dataset> {
    let bytes =
        std::fs::read(path).with_context(|| format!("reading dataset {}", path.display()))?;
    parse(&bytes).with_context(|| format!("dataset {}", path.display()))
}

fn parse(bytes: &[u8]) -> anyhow::Result<Dataset> {
    let (_, header) =
        SafeTensors::read_metadata(bytes).context("not a safetensors file (bad header)")?;
    let meta = header.metadata().clone().unwrap_or_default();
    let tensors = SafeTensors::deserialize(bytes).context("not a safetensors file")?;
    let get_meta = |key: &str| {
        meta.get(key)
            .with_context(|| format!("__metadata__ has no '{key}'"))
    };
    let class_names: Vec<String> = serde_json::from_str(get_meta("class_names")?)
        .context("__metadata__ 'class_names' is not a JSON list of strings")?;
    let kind = get_meta("kind")?.as_str();
    let source = meta.get("source").cloned().unwrap_or_default();

    let counts_view = tensors.tensor("counts").context("tensor 'counts'")?;
    expect_dtype(&counts_view, "counts", Dtype::U32)?;
    let cshape = counts_view.shape();
    if cshape.len() != 2 || cshape[1] != class_names.len() {
        bail!(
            "tensor 'counts' has shape {cshape:?}, expected [N, {}] (one column per class name)",
            class_names.len()
        );
    }
    let n = cshape[0];
    let counts: Vec<u32> = le_values(counts_view.data(), u32::from_le_bytes);

    let x = tensors.tensor("x").context("tensor 'x'")?;
    let inputs = match kind {
        "features" => {
            expect_dtype(&x, "x", Dtype::F32)?;
            let shape = x.shape();
            if shape.len() != 2 || shape[0] != n {
                bail!("tensor 'x' has shape {shape:?}, expected [{n}, D]");
            }
            let dim = shape[1];
            let names: Vec<String> = match meta.get("feature_names") {
                Some(text) => serde_json::from_str(text)
                    .context("__metadata__ 'feature_names' is not a JSON list of strings")?,
                None => (0..dim).map(|i| format!("x{i}")).collect(),
            };
            if names.len() != dim {
                bail!(
                    "__metadata__ 'feature_names' has {} names for {dim} columns of 'x'",
                    names.len()
                );
            }
            Inputs::Features {
                dim,
                names,
                values: le_values(x.data(), f32::from_le_bytes),
            }
        }
        "image" => {
            expect_dtype(&x, "x", Dtype::U8)?;
            let shape = x.shape();
            if shape.len() != 4 || shape[0] != n {
                bail!("tensor 'x' has shape {shape:?}, expected [{n}, H, W, C]");
            }
            Inputs::Images {
                height: shape[1],
                width: shape[2],
                channels: shape[3],
                pixels: x.data().to_vec(),
            }
        }
        other => bail!("__metadata__ 'kind' is '{other}', expected 'features' or 'image'"),
    };

    let reference = match tensors.tensor("reference") {
        Ok(view) => {
            expect_dtype(&view, "reference", Dtype::I64)?;
            if view.shape() != [n] {
                bail!(
                    "tensor 'reference' has shape {:?}, expected [{n}]",
                    view.shape()
                );
            }
            Some(le_values(view.data(), i64::from_le_bytes))
        }
        Err(_) => None,
    };
    let split = match tensors.tensor("split") {
        Ok(view) => {
            expect_dtype(&view, "split", Dtype::U8)?;
            if view.shape() != [n] {
                bail!(
                    "tensor 'split' has shape {:?}, expected [{n}]",
                    view.shape()
                );
            }
            let codes = view.data();
            let mut out = Vec::with_capacity(n);
            for (i, &c) in codes.iter().enumerate() {
                out.push(Split::from_code(c).with_context(|| {
                    format!("tensor 'split' case {i}: code {c} is not 0 (train), 1 (calibration) or 2 (test)")
                })?);
            }
            Some(out)
        }
        Err(_) => None,
    };
    let group = match tensors.tensor("group") {
        Ok(view) => {
            expect_dtype(&view, "group", Dtype::I64)?;
            if view.shape() != [n] {
                bail!(
                    "tensor 'group' has shape {:?}, expected [{n}]",
                    view.shape()
                );
            }
            Some(le_values(view.data(), i64::from_le_bytes))
        }
        Err(_) => None,
    };
    let data = Dataset::new(inputs, class_names, counts, reference, split, source)?;
    match group {
        Some(g) => data.with_groups(g),
        None => Ok(data),
    }
}

fn expect_dtype(view: &TensorView<'_>, name: &str, want: Dtype) -> anyhow::Result<()> {
    if view.dtype() != want {
        bail!(
            "tensor '{name}' has dtype {:?}, expected {want:?}",
            view.dtype()
        );
    }
    Ok(())
}

fn le_values<T, const W: usize>(data: &[u8], from: fn([u8; W]) -> T) -> Vec<T> {
    data.chunks_exact(W)
        .map(|c| from(c.try_into().expect("chunks_exact yields W bytes")))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn small() -> Dataset {
        Dataset::new(
            Inputs::Features {
                dim: 2,
                names: vec!["a".into(), "b".into()],
                values: vec![1.0, 2.0, -3.5, 4.25, 0.0, 1e-3],
            },
            vec!["no".into(), "yes".into()],
            vec![2, 1, 0, 3, 1, 1],
            Some(vec![0, 1, -1]),
            Some(vec![Split::Train, Split::Calibration, Split::Test]),
            "unit test".into(),
        )
        .unwrap()
    }

    #[test]
    fn round_trip_features() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub/d.safetensors");
        let d = small();
        save(&d, &path).unwrap();
        assert_eq!(load(&path).unwrap(), d);
    }

    #[test]
    fn round_trip_images_without_optional_tensors() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("i.safetensors");
        let d = Dataset::new(
            Inputs::Images {
                height: 2,
                width: 2,
                channels: 3,
                pixels: (0..24).collect(),
            },
            vec!["cat".into(), "dog".into()],
            vec![3, 0, 1, 2],
            None,
            None,
            "imgs".into(),
        )
        .unwrap();
        save(&d, &path).unwrap();
        assert_eq!(load(&path).unwrap(), d);
    }

    #[test]
    fn rejects_garbage_and_names_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("bad.safetensors");
        std::fs::write(&path, b"not a safetensors file at all").unwrap();
        let err = format!("{:#}", load(&path).unwrap_err());
        assert!(err.contains("bad.safetensors"), "{err}");
        assert!(err.contains("safetensors"), "{err}");
    }

    #[test]
    fn rejects_counts_that_do_not_match_classes() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("d.safetensors");
        let counts: Vec<u8> = [1u32, 2, 3].iter().flat_map(|v| v.to_le_bytes()).collect();
        let x: Vec<u8> = [0f32].iter().flat_map(|v| v.to_le_bytes()).collect();
        let mut meta = HashMap::new();
        meta.insert("kind".to_string(), "features".to_string());
        meta.insert("class_names".to_string(), r#"["a","b"]"#.to_string());
        let tensors = vec![
            (
                "counts",
                TensorView::new(Dtype::U32, vec![1, 3], &counts).unwrap(),
            ),
            ("x", TensorView::new(Dtype::F32, vec![1, 1], &x).unwrap()),
        ];
        safetensors::serialize_to_file(tensors, Some(meta), &path).unwrap();
        let err = format!("{:#}", load(&path).unwrap_err());
        assert!(err.contains("'counts'") && err.contains("[1, 3]"), "{err}");
    }
}
