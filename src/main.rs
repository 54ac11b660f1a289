//! The `triaged` binary: parse the command line and hand it to `cli::run`, which
//! pins candle's threads, sets up logging and runs the command.

use clap::Parser;

fn main() -> std::process::ExitCode {
    let cli = triaged::cli::Cli::parse();
    match triaged::cli::run(cli) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
