//! The `triaged` binary: parse the command line, pin candle's threads, set up
//! logging, run.

use clap::Parser;

fn main() -> std::process::ExitCode {
    let cli = triaged::cli::Cli::parse();
    triaged::model::device::pin_cpu_threads(cli.threads);
    triaged::telemetry::init(cli.log_format);
    match triaged::cli::run(cli) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
