//! `triaged data import-csv`: builds a [`Dataset`] from a CSV file in one of three
//! label layouts — per-class count columns (`--counts`), one column per annotator
//! holding a class (`--annotators`), or one row per annotation (`--case-column` +
//! `--label-column`). Every malformed input fails with an [`ImportError`] that names
//! the file, the line and the column.

use std::collections::HashMap;
use std::fmt;
use std::path::{Path, PathBuf};

use super::{Dataset, Inputs, Split};

/// Most labels one case may carry (so every per-case sum fits a `u32`).
pub const MAX_LABELS_PER_CASE: u32 = 1_000_000;
/// Most classes a data set may have when they are inferred from class indices.
pub const MAX_CLASSES: usize = 10_000;

/// Where the human labels are in the CSV.
#[derive(Debug, Clone)]
pub enum LabelLayout {
    /// One count column per class, in class order.
    Counts(Vec<String>),
    /// One column per annotator; a cell holds a class index or name, empty = no label.
    Annotators(Vec<String>),
    /// One row per annotation: the case id column and the label column. Feature,
    /// reference and split values must agree across the rows of one case.
    Long { case: String, label: String },
}

/// What to import and how.
#[derive(Debug, Clone)]
pub struct CsvImport {
    pub csv: PathBuf,
    pub labels: LabelLayout,
    /// Feature columns in model order; `None` = every column not used otherwise.
    pub features: Option<Vec<String>>,
    pub reference: Option<String>,
    pub split: Option<String>,
    /// Class names; default: the count column names, or `0..K-1` for annotators.
    pub classes: Option<Vec<String>>,
    /// Drop cases with fewer labels than this (e.g. 3 for a usable `D`).
    pub min_labels: u32,
    /// For image data sets: the column holding each case's image path; no
    /// feature columns are read then.
    pub image_column: Option<String>,
    /// Column holding each case's group (e.g. the patient id): kept in the data
    /// set so calibration parts never divide a group.
    pub group: Option<String>,
}

/// What a CSV says about its cases before inputs are attached.
pub struct Labeled {
    /// Feature names and row-major values (feature imports).
    pub features: Option<(Vec<String>, Vec<f32>)>,
    /// Image path and CSV line per case (image imports).
    pub images: Option<Vec<(String, u64)>>,
    pub class_names: Vec<String>,
    pub counts: Vec<u32>,
    pub reference: Option<Vec<i64>>,
    pub split: Option<Vec<Split>>,
    /// Group id per case (in order of first appearance of the group's value).
    pub group: Option<Vec<i64>>,
}

/// A malformed input, located as precisely as the input allows.
#[derive(Debug, Clone, PartialEq)]
pub struct ImportError {
    pub file: PathBuf,
    /// 1-based line in the file (the header is line 1).
    pub line: Option<u64>,
    pub column: Option<String>,
    pub message: String,
}

impl fmt::Display for ImportError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.file.display())?;
        if let Some(line) = self.line {
            write!(f, ", line {line}")?;
        }
        if let Some(col) = &self.column {
            write!(f, ", column '{col}'")?;
        }
        write!(f, ": {}", self.message)
    }
}

impl std::error::Error for ImportError {}

struct Ctx<'a> {
    file: &'a Path,
}

impl Ctx<'_> {
    fn err(&self, line: Option<u64>, column: Option<&str>, message: String) -> ImportError {
        ImportError {
            file: self.file.to_path_buf(),
            line,
            column: column.map(str::to_string),
            message,
        }
    }
}

/// One parsed CSV row with its line number.
struct Row {
    line: u64,
    cells: csv::StringRecord,
}

/// Reads, checks and converts the CSV into a data set.
pub fn import_csv(opts: &CsvImport) -> Result<Dataset, ImportError> {
    let labeled = read_labeled(opts)?;
    let (names, values) = labeled.features.unwrap_or_default();
    Dataset::new(
        Inputs::Features {
            dim: names.len(),
            names,
            values,
        },
        labeled.class_names,
        labeled.counts,
        labeled.reference,
        labeled.split,
        format!("import-csv {}", opts.csv.display()),
    )
    .and_then(|d| match labeled.group {
        Some(g) => d.with_groups(g),
        None => Ok(d),
    })
    .map_err(|e| Ctx { file: &opts.csv }.err(None, None, format!("{e:#}")))
}

/// Reads and checks the CSV: labels, reference, split, and either the feature
/// values or (with `image_column`) each case's image path.
pub fn read_labeled(opts: &CsvImport) -> Result<Labeled, ImportError> {
    let ctx = Ctx { file: &opts.csv };
    let mut reader = csv::ReaderBuilder::new()
        .trim(csv::Trim::All)
        .from_path(&opts.csv)
        .map_err(|e| ctx.err(None, None, format!("cannot open: {e}")))?;
    let header: Vec<String> = reader
        .headers()
        .map_err(|e| ctx.err(Some(1), None, format!("cannot read the header: {e}")))?
        .iter()
        .map(str::to_string)
        .collect();
    if header.iter().all(|h| h.is_empty()) {
        return Err(ctx.err(None, None, "the file is empty (no header row)".into()));
    }
    let col_index: HashMap<&str, usize> = header
        .iter()
        .enumerate()
        .map(|(i, h)| (h.as_str(), i))
        .collect();
    let find = |name: &str| -> Result<usize, ImportError> {
        col_index.get(name).copied().ok_or_else(|| {
            ctx.err(
                Some(1),
                Some(name),
                format!("no such column (the header has: {})", header.join(", ")),
            )
        })
    };

    let mut rows = Vec::new();
    for record in reader.records() {
        let record = record.map_err(|e| {
            let line = e.position().map(|p| p.line());
            let message = match e.kind() {
                csv::ErrorKind::UnequalLengths {
                    expected_len, len, ..
                } => format!("ragged row: {len} fields where the header has {expected_len}"),
                _ => format!("unreadable row: {e}"),
            };
            ctx.err(line, None, message)
        })?;
        let line = record.position().map_or(0, |p| p.line());
        rows.push(Row {
            line,
            cells: record,
        });
    }
    if rows.is_empty() {
        return Err(ctx.err(None, None, "the file has a header but no data rows".into()));
    }

    // Which columns hold what.
    let mut used: Vec<usize> = Vec::new();
    let label_cols: Vec<usize> = match &opts.labels {
        LabelLayout::Counts(cols) | LabelLayout::Annotators(cols) => {
            cols.iter().map(|c| find(c)).collect::<Result<_, _>>()?
        }
        LabelLayout::Long { case, label } => vec![find(case)?, find(label)?],
    };
    used.extend(&label_cols);
    let reference_col = opts.reference.as_deref().map(find).transpose()?;
    let split_col = opts.split.as_deref().map(find).transpose()?;
    let group_col = opts.group.as_deref().map(find).transpose()?;
    used.extend(reference_col);
    used.extend(split_col);
    used.extend(group_col);
    let image_col = opts.image_column.as_deref().map(find).transpose()?;
    let feature_cols: Vec<usize> = match (&opts.features, image_col) {
        (_, Some(_)) => Vec::new(),
        (Some(names), None) => names.iter().map(|c| find(c)).collect::<Result<_, _>>()?,
        (None, None) => (0..header.len()).filter(|i| !used.contains(i)).collect(),
    };
    if feature_cols.is_empty() && image_col.is_none() {
        return Err(ctx.err(
            Some(1),
            None,
            "no feature columns left: name them with --features".into(),
        ));
    }
    if let Some(&dup) = feature_cols.iter().find(|c| used.contains(c)) {
        return Err(ctx.err(
            Some(1),
            Some(&header[dup]),
            "used both as a feature and as a label, reference, split or group column".into(),
        ));
    }

    let classes = class_names(opts, &ctx, &rows, &label_cols, reference_col, &header)?;
    let k = classes.len();
    let parse_class = |row: &Row, col: usize| -> Result<Option<usize>, ImportError> {
        let text = &row.cells[col];
        if text.is_empty() {
            return Ok(None);
        }
        if let Some(i) = classes.iter().position(|c| c == text) {
            return Ok(Some(i));
        }
        match text.parse::<usize>() {
            Ok(i) if i < k => Ok(Some(i)),
            _ => Err(ctx.err(
                Some(row.line),
                Some(&header[col]),
                format!(
                    "unknown class '{text}': expected an index in 0..{k} or one of {}",
                    classes.join(", ")
                ),
            )),
        }
    };
    let parse_feature = |row: &Row, col: usize| -> Result<f32, ImportError> {
        let text = &row.cells[col];
        let here = |msg: String| ctx.err(Some(row.line), Some(&header[col]), msg);
        if text.is_empty() {
            return Err(here("missing value".into()));
        }
        let v: f32 = text.parse().map_err(|_| {
            here(format!(
                "'{text}' is not a number (choose numeric feature columns with --features)"
            ))
        })?;
        if !v.is_finite() {
            return Err(here(format!("'{text}' is not a finite number")));
        }
        Ok(v)
    };
    let parse_split = |row: &Row, col: usize| -> Result<Split, ImportError> {
        let text = &row.cells[col];
        Split::parse(text).ok_or_else(|| {
            ctx.err(
                Some(row.line),
                Some(&header[col]),
                format!("split '{text}' is not one of train, calibration, test"),
            )
        })
    };

    // Group rows into cases: one row per case, or all rows sharing a case id.
    let groups: Vec<Vec<&Row>> = match &opts.labels {
        LabelLayout::Long { .. } => {
            let case_col = label_cols[0];
            let mut order: Vec<Vec<&Row>> = Vec::new();
            let mut by_id: HashMap<&str, usize> = HashMap::new();
            for row in &rows {
                let id = &row.cells[case_col];
                if id.is_empty() {
                    return Err(ctx.err(
                        Some(row.line),
                        Some(&header[case_col]),
                        "missing case id".into(),
                    ));
                }
                let slot = *by_id.entry(id).or_insert_with(|| {
                    order.push(Vec::new());
                    order.len() - 1
                });
                order[slot].push(row);
            }
            order
        }
        _ => rows.iter().map(|r| vec![r]).collect(),
    };

    let dim = feature_cols.len();
    let mut values = Vec::with_capacity(groups.len() * dim);
    let mut counts = Vec::with_capacity(groups.len() * k);
    let mut reference = reference_col.map(|_| Vec::with_capacity(groups.len()));
    let mut split = split_col.map(|_| Vec::with_capacity(groups.len()));
    let mut group_ids = group_col.map(|_| Vec::with_capacity(groups.len()));
    let mut group_index: std::collections::HashMap<String, i64> = Default::default();
    let mut dropped = 0usize;
    let mut images = Vec::new();
    for group in &groups {
        let first = group[0];
        let mut case_counts = vec![0u32; k];
        match &opts.labels {
            LabelLayout::Counts(_) => {
                for (c, &col) in label_cols.iter().enumerate() {
                    case_counts[c] = parse_count(&ctx, first, col, &header)?;
                }
            }
            LabelLayout::Annotators(_) => {
                for &col in &label_cols {
                    if let Some(c) = parse_class(first, col)? {
                        case_counts[c] += 1;
                    }
                }
            }
            LabelLayout::Long { .. } => {
                for row in group {
                    match parse_class(row, label_cols[1])? {
                        Some(c) => case_counts[c] += 1,
                        None => {
                            return Err(ctx.err(
                                Some(row.line),
                                Some(&header[label_cols[1]]),
                                "missing label".into(),
                            ))
                        }
                    }
                }
            }
        }
        let total = case_counts
            .iter()
            .try_fold(0u32, |a, &c| a.checked_add(c))
            .filter(|&t| t <= MAX_LABELS_PER_CASE)
            .ok_or_else(|| {
                ctx.err(
                    Some(first.line),
                    None,
                    format!("the case's labels add up to more than {MAX_LABELS_PER_CASE}"),
                )
            })?;
        // Cases dropped by --min-labels are not imported, so their other cells
        // are not checked either.
        if total < opts.min_labels {
            dropped += 1;
            continue;
        }
        counts.extend(case_counts);
        for &col in &feature_cols {
            values.push(parse_feature(first, col)?);
        }
        if let Some(col) = image_col {
            let path = first.cells[col].to_string();
            if path.is_empty() {
                return Err(ctx.err(
                    Some(first.line),
                    Some(&header[col]),
                    "missing image path".into(),
                ));
            }
            images.push((path, first.line));
        }
        if let (Some(col), Some(out)) = (reference_col, reference.as_mut()) {
            out.push(parse_class(first, col)?.map_or(-1, |c| c as i64));
        }
        if let (Some(col), Some(out)) = (split_col, split.as_mut()) {
            out.push(parse_split(first, col)?);
        }
        if let (Some(col), Some(out)) = (group_col, group_ids.as_mut()) {
            let text = first.cells[col].trim();
            if text.is_empty() {
                return Err(ctx.err(Some(first.line), Some(&header[col]), "missing group".into()));
            }
            let next = group_index.len() as i64;
            out.push(*group_index.entry(text.to_string()).or_insert(next));
        }
        // Later rows of one case must describe the same case.
        for row in &group[1..] {
            for &col in feature_cols
                .iter()
                .chain(&reference_col)
                .chain(&split_col)
                .chain(&group_col)
            {
                if row.cells[col] != first.cells[col] {
                    return Err(ctx.err(
                        Some(row.line),
                        Some(&header[col]),
                        format!(
                            "'{}' differs from '{}' on line {} for the same case",
                            &row.cells[col], &first.cells[col], first.line
                        ),
                    ));
                }
            }
        }
    }
    if dropped > 0 {
        tracing::info!(
            dropped,
            min_labels = opts.min_labels,
            "dropped cases with too few labels"
        );
    }
    if counts.is_empty() {
        return Err(ctx.err(
            None,
            None,
            format!("no case has at least {} labels", opts.min_labels),
        ));
    }
    let names: Vec<String> = feature_cols.iter().map(|&c| header[c].clone()).collect();
    Ok(Labeled {
        features: image_col.is_none().then_some((names, values)),
        images: image_col.map(|_| images),
        class_names: classes,
        counts,
        reference,
        split,
        group: group_ids,
    })
}

fn parse_count(
    ctx: &Ctx<'_>,
    row: &Row,
    col: usize,
    header: &[String],
) -> Result<u32, ImportError> {
    let text = &row.cells[col];
    let here = |msg: String| ctx.err(Some(row.line), Some(&header[col]), msg);
    if text.is_empty() {
        return Err(here("missing count".into()));
    }
    match text.parse::<i64>() {
        Ok(v) if v < 0 => Err(here(format!("negative count {v}"))),
        Ok(v) => u32::try_from(v).map_err(|_| here(format!("count {v} is too large"))),
        Err(_) => Err(here(format!("'{text}' is not a whole-number count"))),
    }
}

/// Class names from `--classes`, else the count column names, else `0..K-1`
/// where K is one more than the largest class index in the label cells.
fn class_names(
    opts: &CsvImport,
    ctx: &Ctx<'_>,
    rows: &[Row],
    label_cols: &[usize],
    reference_col: Option<usize>,
    header: &[String],
) -> Result<Vec<String>, ImportError> {
    let names = match (&opts.classes, &opts.labels) {
        (Some(names), _) => names.clone(),
        (None, LabelLayout::Counts(cols)) => cols.clone(),
        (None, layout) => {
            let cols: Vec<usize> = match layout {
                LabelLayout::Long { .. } => vec![label_cols[1]],
                _ => label_cols.to_vec(),
            };
            let mut max = 0usize;
            for row in rows {
                for &col in cols.iter().chain(&reference_col) {
                    let text = &row.cells[col];
                    if text.is_empty() {
                        continue;
                    }
                    let v: usize = text.parse().map_err(|_| {
                        ctx.err(
                            Some(row.line),
                            Some(&header[col]),
                            format!("label '{text}' is not a class index; name the classes with --classes"),
                        )
                    })?;
                    if v >= MAX_CLASSES {
                        return Err(ctx.err(
                            Some(row.line),
                            Some(&header[col]),
                            format!("class index {v} is beyond the {MAX_CLASSES} classes a data set may have"),
                        ));
                    }
                    max = max.max(v);
                }
            }
            (0..=max).map(|i| i.to_string()).collect()
        }
    };
    if let LabelLayout::Counts(cols) = &opts.labels {
        if cols.len() != names.len() {
            return Err(ctx.err(
                None,
                None,
                format!(
                    "{} count columns but {} class names",
                    cols.len(),
                    names.len()
                ),
            ));
        }
    }
    if names.len() < 2 {
        return Err(ctx.err(None, None, "at least 2 classes are needed".into()));
    }
    Ok(names)
}
