//! `triaged data synth`: the seeded synthetic generator described in docs/science.md, built so that
//! direct disagreement prediction (DUP) has a measurable edge over UVC.
//!
//! Cases come from Gaussian clusters of three kinds, assigned in turn:
//! - **clean**: every case's humans mostly agree on the cluster's class;
//! - **hidden mixture**: each case is (nearly) unanimous, but for one of two
//!   classes that `x` cannot tell apart — a classifier is torn (high UVC), yet the
//!   humans agree (low `D`);
//! - **ambiguous**: each case is genuinely split between two classes, with a
//!   per-case mixing weight — humans disagree (high `D`).

use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, Normal};

use super::{Dataset, Inputs, Split};

/// Generator settings; the defaults are what `data synth` uses without flags.
#[derive(Debug, Clone, clap::Args)]
pub struct SynthConfig {
    /// Number of cases.
    #[arg(long, default_value_t = 6000)]
    pub cases: usize,
    /// Feature dimension.
    #[arg(long, default_value_t = 8)]
    pub dim: usize,
    /// Number of classes.
    #[arg(long, default_value_t = 3)]
    pub classes: usize,
    /// Number of clusters (kinds alternate clean, hidden mixture, ambiguous).
    #[arg(long, default_value_t = 12)]
    pub clusters: usize,
    /// Fewest annotators per case.
    #[arg(long, default_value_t = 3)]
    pub min_annotators: u32,
    /// Most annotators per case.
    #[arg(long, default_value_t = 7)]
    pub max_annotators: u32,
    /// Probability that an annotator gives a case's own class in clean and hidden
    /// clusters (the rest is spread over the other classes).
    #[arg(long, default_value_t = 0.95)]
    pub annotator_accuracy: f64,
    /// Standard deviation of the cluster centres (case noise has std 1).
    #[arg(long, default_value_t = 2.0)]
    pub spread: f64,
    /// How annotators err: `uniform` (every annotator errs alike, at
    /// `--annotator-accuracy`), or `confusion` (a pool of annotators, each with
    /// their own confusion matrix; see [`AnnotatorModel`]).
    #[arg(long, value_enum, default_value_t = AnnotatorModel::Uniform)]
    pub annotators: AnnotatorModel,
    /// Cases per group (e.g. studies of one patient): splits and calibration
    /// parts never divide a group. In `confusion` mode the cases of a group also
    /// share a feature offset.
    #[arg(long, default_value_t = 3)]
    pub group_size: usize,
}

/// How synthetic annotators produce labels.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum AnnotatorModel {
    /// Every annotator gives the case's class with `--annotator-accuracy`.
    Uniform,
    /// A pool of 24 annotators; annotator j has a confusion matrix whose diagonal
    /// is drawn from U(0.75, 0.99) and whose errors favour one "confusable"
    /// class per true class. Each case draws its annotators from the pool.
    Confusion,
}

impl Default for SynthConfig {
    fn default() -> Self {
        SynthConfig {
            cases: 6000,
            dim: 8,
            classes: 3,
            clusters: 12,
            min_annotators: 3,
            max_annotators: 7,
            annotator_accuracy: 0.95,
            spread: 2.0,
            annotators: AnnotatorModel::Uniform,
            group_size: 3,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum ClusterKind {
    Clean { class: usize },
    Hidden { a: usize, b: usize },
    Ambiguous { a: usize, b: usize },
}

/// Generates the data set. The same config and seed give the same bytes.
pub fn generate(cfg: &SynthConfig, seed: u64) -> anyhow::Result<Dataset> {
    anyhow::ensure!(cfg.classes >= 2, "--classes must be at least 2");
    anyhow::ensure!(cfg.dim >= 1, "--dim must be at least 1");
    anyhow::ensure!(
        cfg.clusters >= 3,
        "--clusters must be at least 3 (one of each kind)"
    );
    anyhow::ensure!(cfg.cases >= 10, "--cases must be at least 10");
    anyhow::ensure!(
        (1..=1000).contains(&cfg.group_size),
        "--group-size must be in 1..=1000"
    );
    anyhow::ensure!(
        cfg.min_annotators >= 2 && cfg.min_annotators <= cfg.max_annotators,
        "need 2 <= --min-annotators <= --max-annotators"
    );
    anyhow::ensure!(
        (0.0..=1.0).contains(&cfg.annotator_accuracy),
        "--annotator-accuracy must be in [0, 1]"
    );
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let k = cfg.classes;
    let centre = Normal::new(0.0, cfg.spread)?;
    let noise = Normal::new(0.0, 1.0)?;

    let clusters: Vec<(Vec<f64>, ClusterKind)> = (0..cfg.clusters)
        .map(|c| {
            let mean: Vec<f64> = (0..cfg.dim).map(|_| centre.sample(&mut rng)).collect();
            let a = rng.gen_range(0..k);
            let b = (a + rng.gen_range(1..k)) % k;
            let kind = match c % 3 {
                0 => ClusterKind::Clean { class: a },
                1 => ClusterKind::Hidden { a, b },
                _ => ClusterKind::Ambiguous { a, b },
            };
            (mean, kind)
        })
        .collect();

    // Drawn from their own streams so the uniform mode's data stay as they were.
    let mut pool_rng = ChaCha8Rng::seed_from_u64(seed ^ 0x616e_6e6f_7461_746f);
    let pool = match cfg.annotators {
        AnnotatorModel::Uniform => Vec::new(),
        AnnotatorModel::Confusion => annotator_pool(k, &mut pool_rng),
    };
    let group_offset = Normal::new(0.0, 0.5)?;
    let n = cfg.cases;
    let groups: Vec<i64> = (0..n).map(|i| (i / cfg.group_size) as i64).collect();
    let n_groups = n.div_ceil(cfg.group_size);
    let offsets: Vec<Vec<f64>> = (0..n_groups)
        .map(|_| match cfg.annotators {
            AnnotatorModel::Uniform => vec![0.0; cfg.dim],
            AnnotatorModel::Confusion => (0..cfg.dim)
                .map(|_| group_offset.sample(&mut pool_rng))
                .collect(),
        })
        .collect();
    let mut values = Vec::with_capacity(n * cfg.dim);
    let mut counts = vec![0u32; n * k];
    let mut reference = Vec::with_capacity(n);
    let acc = cfg.annotator_accuracy;
    for i in 0..n {
        let (mean, kind) = &clusters[rng.gen_range(0..clusters.len())];
        let offset = &offsets[groups[i] as usize];
        values.extend(
            mean.iter()
                .zip(offset)
                .map(|(m, o)| (m + o + noise.sample(&mut rng)) as f32),
        );
        // The case's own label distribution p over classes, and its true class:
        // annotators err around the truth in clean and hidden clusters; in
        // ambiguous ones the truth itself is a draw from the split.
        let mut p = vec![0.0; k];
        let truth = match *kind {
            ClusterKind::Clean { class } => {
                noisy_one_hot(&mut p, class, acc);
                class
            }
            ClusterKind::Hidden { a, b } => {
                let class = if rng.gen_bool(0.5) { a } else { b };
                noisy_one_hot(&mut p, class, acc);
                class
            }
            ClusterKind::Ambiguous { a, b } => {
                let w = rng.gen_range(0.3..0.7);
                p[a] = w;
                p[b] = 1.0 - w;
                sample_class(&p, &mut rng)
            }
        };
        reference.push(truth as i64);
        let annotators = rng.gen_range(cfg.min_annotators..=cfg.max_annotators);
        for _ in 0..annotators {
            let seen = sample_class(&p, &mut rng);
            let label = match cfg.annotators {
                AnnotatorModel::Uniform => seen,
                AnnotatorModel::Confusion => {
                    // The annotator perceives the case as `seen` (the truth, or the
                    // case's own ambiguity), then answers through their confusion
                    // matrix. `p` then only carries the case's ambiguity.
                    let base = match *kind {
                        ClusterKind::Ambiguous { .. } => seen,
                        _ => truth,
                    };
                    let j = pool_rng.gen_range(0..pool.len());
                    sample_class(&pool[j][base], &mut pool_rng)
                }
            };
            counts[i * k + label] += 1;
        }
    }

    // 60 / 20 / 20 split by group, shuffled with the same seed.
    let mut group_split: Vec<Split> = (0..n_groups)
        .map(|g| match g * 10 / n_groups {
            0..=5 => Split::Train,
            6 | 7 => Split::Calibration,
            _ => Split::Test,
        })
        .collect();
    group_split.shuffle(&mut rng);
    let split: Vec<Split> = groups.iter().map(|&g| group_split[g as usize]).collect();

    let data = Dataset::new(
        Inputs::Features {
            dim: cfg.dim,
            names: (0..cfg.dim).map(|i| format!("x{i}")).collect(),
            values,
        },
        (0..k).map(|i| format!("class{i}")).collect(),
        counts,
        Some(reference),
        Some(split),
        format!(
            "synth seed={seed} cases={} dim={} classes={k} clusters={} annotators={}..={} accuracy={acc} spread={} annotator_model={:?} group_size={}",
            n, cfg.dim, cfg.clusters, cfg.min_annotators, cfg.max_annotators, cfg.spread, cfg.annotators, cfg.group_size
        ),
    )?;
    data.with_groups(groups)
}

/// Annotators with their own confusion matrices: row `t` of annotator `j` is the
/// distribution of their answer when the truth is `t`.
fn annotator_pool(k: usize, rng: &mut impl Rng) -> Vec<Vec<Vec<f64>>> {
    (0..24)
        .map(|_| {
            let accuracy = rng.gen_range(0.75..0.99);
            (0..k)
                .map(|t| {
                    // Most of the errors go to one confusable class.
                    let confusable = (t + rng.gen_range(1..k)) % k;
                    let rest = (1.0 - accuracy) * 0.3 / (k - 1) as f64;
                    let mut row = vec![rest; k];
                    row[t] = accuracy;
                    row[confusable] += (1.0 - accuracy) * 0.7;
                    row
                })
                .collect()
        })
        .collect()
}

fn noisy_one_hot(p: &mut [f64], class: usize, acc: f64) {
    let rest = (1.0 - acc) / (p.len() - 1) as f64;
    for (c, v) in p.iter_mut().enumerate() {
        *v = if c == class { acc } else { rest };
    }
}

fn sample_class(p: &[f64], rng: &mut impl Rng) -> usize {
    let u: f64 = rng.gen();
    let mut acc = 0.0;
    for (c, &v) in p.iter().enumerate() {
        acc += v;
        if u < acc {
            return c;
        }
    }
    p.len() - 1
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::targets::pairwise_disagreement;

    #[test]
    fn same_seed_same_data_other_seed_other_data() {
        let cfg = SynthConfig {
            cases: 300,
            ..SynthConfig::default()
        };
        assert_eq!(generate(&cfg, 3).unwrap(), generate(&cfg, 3).unwrap());
        assert_ne!(generate(&cfg, 3).unwrap(), generate(&cfg, 4).unwrap());
    }

    #[test]
    fn confusion_mode_has_groups_references_and_whole_groups_per_split() {
        let cfg = SynthConfig {
            cases: 900,
            annotators: AnnotatorModel::Confusion,
            group_size: 4,
            ..SynthConfig::default()
        };
        let d = generate(&cfg, 11).unwrap();
        assert_eq!(d.groups().unwrap().len(), 900);
        assert!(d.references().unwrap().iter().all(|&r| r >= 0));
        // Splits never divide a group.
        for i in 1..d.len() {
            if d.group(i) == d.group(i - 1) {
                assert_eq!(d.split(i), d.split(i - 1));
            }
        }
        // Annotators err more than the uniform mode's 5% on clean cases, and the
        // calibration parts keep groups whole.
        let cal = d.indices(Some(Split::Calibration)).unwrap();
        let parts = d.calibration_parts(&cal);
        assert_eq!(parts.by, "group");
        let fit_groups: std::collections::HashSet<i64> =
            parts.fit.iter().map(|&i| d.group(i).unwrap()).collect();
        assert!(parts
            .certify
            .iter()
            .all(|&i| !fit_groups.contains(&d.group(i).unwrap())));
        assert!(!parts.fit.is_empty() && parts.certify.len() > parts.fit.len());
    }

    #[test]
    fn has_both_agreement_and_disagreement_and_all_splits() {
        let d = generate(&SynthConfig::default(), 7).unwrap();
        let ds: Vec<f64> = (0..d.len())
            .map(|i| pairwise_disagreement(d.counts(i)).unwrap())
            .collect();
        let unanimous = ds.iter().filter(|&&v| v == 0.0).count();
        assert!(
            unanimous > d.len() / 4 && unanimous < d.len() * 3 / 4,
            "{unanimous}"
        );
        for s in Split::ALL {
            let m = d.indices(Some(s)).unwrap().len();
            assert!(m >= d.len() / 6, "{s}: {m}");
        }
    }
}
