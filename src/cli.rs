//! The command line (docs/cli.md): argument types and the dispatch from each
//! subcommand to the library. Every flag also reads from an environment variable
//! where that makes sense for operators.

use std::path::PathBuf;

use anyhow::Context;
use clap::{Args, Parser, Subcommand};

use crate::calibrate::{self, CalibrateConfig};
use crate::config::{Overrides, Settings};
use crate::data::csv_import::{self, CsvImport, LabelLayout};
use crate::data::synth::{self, SynthConfig};
use crate::data::{describe, format, images, Split};
use crate::eval::{self, EvalOptions};
use crate::model::device::{self, DeviceChoice};
use crate::model::Predictor;
use crate::policy::spec as policy_spec;
use crate::startup::Application;
use crate::train::{self, TrainConfig};

#[derive(Debug, Parser)]
#[command(
    name = "triaged",
    version,
    about = "Decides, case by case, whether a model's answer can be used or the case needs human reviewers."
)]
pub struct Cli {
    /// CPU threads for candle's kernels (default 1, or `batch.threads` for serve;
    /// 1 is fastest for small models on 2 cores).
    #[arg(long, global = true, env = "TRIAGED_THREADS")]
    pub threads: Option<usize>,
    /// Log format on stderr (default text, or `log.format` for serve).
    #[arg(long, global = true, value_enum, env = "TRIAGED_LOG_FORMAT")]
    pub log_format: Option<LogFormat>,
    #[command(subcommand)]
    pub command: Command,
}

pub use crate::telemetry::LogFormat;

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the triage service (HTTP API, batching, metrics) on the bundles in models/.
    Serve(ServeArgs),
    /// Build, generate and inspect data sets.
    #[command(subcommand)]
    Data(DataCommand),
    /// Train a model bundle on a data set.
    Train(TrainArgs),
    /// Evaluate a model bundle on a split of a data set.
    Eval(EvalArgs),
    /// Calibrate a triage policy on a data set and write policy.json into the bundle.
    Calibrate(CalibrateArgs),
}

#[derive(Debug, Args)]
pub struct ServeArgs {
    /// TOML file layered over config/default.toml.
    #[arg(long, env = "TRIAGED_CONFIG")]
    pub config: Option<PathBuf>,
    /// Address to listen on (overrides server.bind).
    #[arg(long, env = "TRIAGED_BIND")]
    pub bind: Option<std::net::SocketAddr>,
    /// Folder of model bundles (overrides models.dir).
    #[arg(long, env = "TRIAGED_MODELS_DIR")]
    pub models_dir: Option<PathBuf>,
    /// Model served by POST /v1/triage (overrides models.default).
    #[arg(long, env = "TRIAGED_DEFAULT_MODEL")]
    pub default_model: Option<String>,
}

#[derive(Debug, Subcommand)]
pub enum DataCommand {
    /// Generate the synthetic DUP-vs-UVC data set (docs/science.md).
    Synth {
        #[arg(long)]
        out: PathBuf,
        #[arg(long, default_value_t = 0)]
        seed: u64,
        #[command(flatten)]
        config: SynthConfig,
    },
    /// Import a CSV of features and human labels.
    ImportCsv(ImportCsvArgs),
    /// Import a folder or .tar.gz of images and a CSV of labels.
    ImportImages(ImportImagesArgs),
    /// Summarise a data set: size, classes, labels per case, disagreement.
    Describe {
        /// The dataset file.
        file: PathBuf,
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
}

#[derive(Debug, Args)]
#[command(group = clap::ArgGroup::new("labels").required(true).args(["counts", "annotators", "label_column"]))]
pub struct ImportCsvArgs {
    #[arg(long)]
    pub csv: PathBuf,
    #[arg(long)]
    pub out: PathBuf,
    /// One count column per class, comma-separated, in class order.
    #[arg(long, value_delimiter = ',')]
    pub counts: Option<Vec<String>>,
    /// One column per annotator holding a class index or name, comma-separated.
    #[arg(long, value_delimiter = ',')]
    pub annotators: Option<Vec<String>>,
    /// One row per annotation: the column holding the label (needs --case-column).
    #[arg(long, requires = "case_column")]
    pub label_column: Option<String>,
    /// One row per annotation: the column holding the case id.
    #[arg(long, requires = "label_column")]
    pub case_column: Option<String>,
    /// Feature columns in order (default: every column not used otherwise).
    #[arg(long, value_delimiter = ',')]
    pub features: Option<Vec<String>>,
    /// Column with the reference label (index or class name; empty = none).
    #[arg(long)]
    pub reference: Option<String>,
    /// Column with train|calibration|test.
    #[arg(long)]
    pub split: Option<String>,
    /// Class names, comma-separated.
    #[arg(long, value_delimiter = ',')]
    pub classes: Option<Vec<String>>,
    /// Keep only cases with at least this many labels (rows stay in file order).
    #[arg(long, default_value_t = 0)]
    pub min_labels: u32,
    /// Column with each case's group (e.g. the patient id): calibration's fitting
    /// and certification parts never divide a group.
    #[arg(long)]
    pub group: Option<String>,
}

#[derive(Debug, Args)]
#[command(group = clap::ArgGroup::new("labels").required(true).args(["counts", "annotators"]))]
pub struct ImportImagesArgs {
    /// A folder, or a .tar.gz/.tgz archive, holding the images.
    #[arg(long)]
    pub images: PathBuf,
    #[arg(long)]
    pub csv: PathBuf,
    #[arg(long)]
    pub out: PathBuf,
    /// One count column per class, comma-separated, in class order.
    #[arg(long, value_delimiter = ',')]
    pub counts: Option<Vec<String>>,
    /// One column per annotator holding a class index or name, comma-separated.
    #[arg(long, value_delimiter = ',')]
    pub annotators: Option<Vec<String>>,
    /// Column with each image's path, relative to --images.
    #[arg(long, default_value = "image")]
    pub image_column: String,
    #[arg(long)]
    pub reference: Option<String>,
    #[arg(long)]
    pub split: Option<String>,
    #[arg(long, value_delimiter = ',')]
    pub classes: Option<Vec<String>>,
    /// Size of the stored images, HxW.
    #[arg(long, default_value = "32x32")]
    pub size: String,
    /// Fail on an image of another size instead of resizing it.
    #[arg(long)]
    pub no_resize: bool,
    #[arg(long, default_value_t = 0)]
    pub min_labels: u32,
}

#[derive(Debug, Args)]
pub struct TrainArgs {
    /// Dataset file (safetensors).
    #[arg(long)]
    pub data: PathBuf,
    /// Bundle folder `models/<name>/<version>/`.
    #[arg(long)]
    pub out: PathBuf,
    /// Image data: a second data set whose calibration split (and test split, for
    /// the metrics in model.json) is used instead of `--data`'s; every labelled
    /// image of `--data` is then trained on unless it has its own split.
    #[arg(long)]
    pub calibration_data: Option<PathBuf>,
    /// Head-only refit: keep this bundle's body and class head frozen and refit
    /// its disagreement and human-error heads (plus temperature and calibrators)
    /// on the fitting part of `--data`'s calibration split.
    #[arg(long, conflicts_with = "calibration_data")]
    pub refit_heads: Option<PathBuf>,
    #[arg(long, value_enum, default_value_t = DeviceChoice::Cpu, env = "TRIAGED_DEVICE")]
    pub device: DeviceChoice,
    #[command(flatten)]
    pub config: TrainConfig,
}

#[derive(Debug, Args)]
pub struct CalibrateArgs {
    /// Bundle folder `models/<name>/<version>/`; policy.json is written here.
    #[arg(long)]
    pub model: PathBuf,
    #[arg(long)]
    pub data: PathBuf,
    #[arg(long, value_enum, default_value_t = DeviceChoice::Cpu, env = "TRIAGED_DEVICE")]
    pub device: DeviceChoice,
    #[command(flatten)]
    pub config: CalibrateConfig,
}

#[derive(Debug, Args)]
pub struct EvalArgs {
    /// Bundle folder `models/<name>/<version>/`.
    #[arg(long)]
    pub model: PathBuf,
    #[arg(long)]
    pub data: PathBuf,
    /// Split to evaluate (default: all cases).
    #[arg(long, value_enum)]
    pub split: Option<Split>,
    /// Class groups for a coarse disagreement event: groups separated by `/`,
    /// classes in a group by `,`. Adds the ROC-AUC for labels that fall into more
    /// than one group, e.g. benign vs malignant ratings: `--class-groups 0,1,2/3,4`.
    #[arg(long)]
    pub class_groups: Option<String>,
    /// Also apply the bundle's policy.json and report what it does.
    #[arg(long)]
    pub policy: bool,
    /// Report folder (report.json, predictions.csv, report.html, plots).
    #[arg(long)]
    pub out: PathBuf,
    #[arg(long, value_enum, default_value_t = DeviceChoice::Cpu, env = "TRIAGED_DEVICE")]
    pub device: DeviceChoice,
}

/// Pins threads, starts logging and runs the parsed command. Nothing may start a
/// thread before this (see `device::pin_cpu_threads`).
pub fn run(cli: Cli) -> anyhow::Result<()> {
    if let Command::Serve(args) = cli.command {
        return serve(args, cli.threads, cli.log_format);
    }
    device::pin_cpu_threads(cli.threads.unwrap_or(1));
    crate::telemetry::init(cli.log_format.unwrap_or(LogFormat::Text));
    match cli.command {
        Command::Serve(_) => unreachable!("handled above"),
        Command::Data(DataCommand::Synth { out, seed, config }) => {
            let data = synth::generate(&config, seed)?;
            format::save(&data, &out)?;
            println!(
                "wrote {} ({} cases, seed {seed})",
                out.display(),
                data.len()
            );
            Ok(())
        }
        Command::Data(DataCommand::ImportCsv(args)) => import_csv(args),
        Command::Data(DataCommand::ImportImages(args)) => import_images(args),
        Command::Data(DataCommand::Describe { file, json }) => {
            let summary = describe::describe(&format::load(&file)?);
            let text = if json {
                serde_json::to_string_pretty(&summary)? + "\n"
            } else {
                summary.to_string()
            };
            // A closed pipe (`| head`) is not an error worth a panic.
            use std::io::Write as _;
            let _ = std::io::stdout().write_all(text.as_bytes());
            Ok(())
        }
        Command::Train(args) => run_train(args),
        Command::Eval(args) => run_eval(args),
        Command::Calibrate(args) => run_calibrate(args),
    }
}

fn serve(
    args: ServeArgs,
    threads: Option<usize>,
    log_format: Option<LogFormat>,
) -> anyhow::Result<()> {
    let overrides = Overrides {
        bind: args.bind,
        models_dir: args.models_dir,
        default_model: args.default_model,
    };
    let mut settings = Settings::load(args.config.as_deref(), std::env::vars(), &overrides)?;
    // Flags win over the files: fold them in, so the logged configuration is
    // the one in force.
    if let Some(t) = threads {
        settings.batch.threads = t;
    }
    if let Some(f) = log_format {
        settings.log.format = f;
    }
    device::pin_cpu_threads(settings.batch.threads);
    crate::telemetry::init(settings.log.format);
    tracing::info!(settings = %settings.redacted(), "effective configuration");
    actix_web::rt::System::new().block_on(async move {
        let app = Application::build(settings).await?;
        tracing::info!(port = app.port(), "listening");
        app.run_until_stopped().await?;
        tracing::info!("stopped");
        Ok(())
    })
}

fn import_csv(args: ImportCsvArgs) -> anyhow::Result<()> {
    let labels = match (
        args.counts,
        args.annotators,
        args.case_column,
        args.label_column,
    ) {
        (Some(c), _, _, _) => LabelLayout::Counts(c),
        (_, Some(a), _, _) => LabelLayout::Annotators(a),
        (_, _, Some(case), Some(label)) => LabelLayout::Long { case, label },
        _ => anyhow::bail!("give --counts, --annotators, or --case-column with --label-column"),
    };
    let data = csv_import::import_csv(&CsvImport {
        csv: args.csv,
        labels,
        features: args.features,
        reference: args.reference,
        split: args.split,
        classes: args.classes,
        min_labels: args.min_labels,
        image_column: None,
        group: args.group,
    })?;
    format::save(&data, &args.out)?;
    println!(
        "wrote {} ({} cases, {} classes, {} features)",
        args.out.display(),
        data.len(),
        data.num_classes(),
        data.inputs().case_len()
    );
    Ok(())
}

fn import_images(args: ImportImagesArgs) -> anyhow::Result<()> {
    let (h, w) = args
        .size
        .split_once('x')
        .and_then(|(h, w)| {
            Some((
                h.trim().parse::<usize>().ok()?,
                w.trim().parse::<usize>().ok()?,
            ))
        })
        .with_context(|| format!("--size '{}' is not HxW (e.g. 32x32)", args.size))?;
    let labels = match (args.counts, args.annotators) {
        (Some(c), _) => LabelLayout::Counts(c),
        (_, Some(a)) => LabelLayout::Annotators(a),
        _ => anyhow::bail!("give --counts or --annotators"),
    };
    let data = images::import_images(&images::ImageImport {
        images: args.images,
        labels: CsvImport {
            csv: args.csv,
            labels,
            features: None,
            reference: args.reference,
            split: args.split,
            classes: args.classes,
            min_labels: args.min_labels,
            image_column: Some(args.image_column),
            group: None,
        },
        height: h,
        width: w,
        resize: !args.no_resize,
    })?;
    format::save(&data, &args.out)?;
    println!(
        "wrote {} ({} images {h}x{w}x{}, {} classes)",
        args.out.display(),
        data.len(),
        images::CHANNELS,
        data.num_classes()
    );
    Ok(())
}

fn run_train(args: TrainArgs) -> anyhow::Result<()> {
    let device = device::select(args.device)?;
    let data = format::load(&args.data)?;
    if let Some(from) = &args.refit_heads {
        let outcome = train::refit::refit_heads(from, &data, &args.data, &args.out, &device, true)?;
        let m = &outcome.manifest;
        println!(
            "wrote bundle {} ({} v{}): heads refitted on {} cases, temperature {:.3}",
            args.out.display(),
            m.name,
            m.version,
            m.training.n_calibration,
            m.temperature
        );
        for (split, metrics) in &m.metrics {
            println!("  {split}: {metrics}");
        }
        return Ok(());
    }
    let calibration = args
        .calibration_data
        .as_ref()
        .map(|p| format::load(p).map(|d| (d, p.clone())))
        .transpose()?;
    let outcome = train::train(
        &data,
        &args.data,
        calibration.as_ref().map(|(d, p)| (d, p.as_path())),
        &args.out,
        &args.config,
        &device,
        true,
    )?;
    let m = &outcome.manifest;
    println!(
        "wrote bundle {} ({} v{}): {} epochs, best {}, temperature {:.3}",
        args.out.display(),
        m.name,
        m.version,
        outcome.epochs_run,
        outcome.best_epoch,
        m.temperature
    );
    for (split, metrics) in &m.metrics {
        println!("  {split}: {metrics}");
    }
    Ok(())
}

fn run_calibrate(args: CalibrateArgs) -> anyhow::Result<()> {
    let device = device::select(args.device)?;
    let predictor = Predictor::load(&args.model, &device)?;
    let data = format::load(&args.data)?;
    let spec = calibrate::calibrate(&predictor, &data, &args.data, &args.config)?;
    policy_spec::write(&args.model, &spec)?;
    println!(
        "wrote {} ({} policy, version {})",
        args.model.join(policy_spec::POLICY_FILE).display(),
        spec.rule.kind(),
        spec.version()
    );
    if let policy_spec::RuleSpec::System { certificate: c } = &spec.rule {
        match c.setting {
            Some(s) => println!(
                "certificate: total error <= {} with probability >= {}; threshold {:.4}, price {}, n_cert {}; on the certification part: {:.3} labels per case, {:.3} automated, total error {:.4}",
                c.alpha, 1.0 - c.delta, s.threshold, s.price, c.n_cert, c.labels_per_case, c.automation_rate, c.total_error
            ),
            None => println!(
                "certificate: nothing certified at alpha {}, delta {} (n_cert {}): every case gets {} reviewers",
                c.alpha, c.delta, c.n_cert, c.k_max
            ),
        }
    }
    if let policy_spec::RuleSpec::Risk { certificate: c } = &spec.rule {
        match c.tau {
            Some(t) => println!(
                "certificate: error of automated cases <= {} with probability >= {}; tau {t:.4}, n_cal {}, expected automation {:.3}",
                c.alpha,
                1.0 - c.delta,
                c.n_cal,
                c.automation_rate
            ),
            None => println!(
                "certificate: no threshold certified at alpha {}, delta {} (n_cal {}): the policy reviews every case",
                c.alpha, c.delta, c.n_cal
            ),
        }
    }
    Ok(())
}

fn parse_groups(raw: Option<&str>) -> anyhow::Result<Option<Vec<Vec<usize>>>> {
    let Some(raw) = raw else { return Ok(None) };
    let groups = raw
        .split('/')
        .map(|g| {
            g.split(',')
                .map(|c| {
                    c.trim()
                        .parse::<usize>()
                        .with_context(|| format!("--class-groups: '{c}' is not a class index"))
                })
                .collect::<anyhow::Result<Vec<usize>>>()
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    anyhow::ensure!(
        groups.len() >= 2,
        "--class-groups needs at least two groups separated by '/'"
    );
    Ok(Some(groups))
}

fn run_eval(args: EvalArgs) -> anyhow::Result<()> {
    let device = device::select(args.device)?;
    let predictor = Predictor::load(&args.model, &device)?;
    let data = format::load(&args.data)?;
    let opts = EvalOptions {
        split: args.split,
        class_groups: parse_groups(args.class_groups.as_deref())?,
    };
    let mut evaluation = eval::evaluate(&predictor, &data, &opts)?;
    if args.policy {
        let spec = policy_spec::read(&args.model)?.with_context(|| {
            format!(
                "{} has no policy.json: run `triaged calibrate --model {}` first",
                args.model.display(),
                args.model.display()
            )
        })?;
        evaluation.report.policy = Some(eval::policy_eval::evaluate_policy(
            &spec,
            &evaluation.cases,
            &data,
        ));
    }
    eval::report::write_all(&evaluation, &args.out)?;
    print!("{}", eval::report::summary_table(&evaluation.report));
    println!(
        "report: {}",
        args.out.join(eval::report::REPORT_HTML).display()
    );
    Ok(())
}
