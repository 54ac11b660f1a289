//! The `triaged` binary: parse the command line and hand it to `cli::run`, which
//! pins candle's threads, sets up logging and runs the command.

use clap::Parser;

// mimalloc keeps freed memory for reuse: the CNN's multi-megabyte batch tensors
// would otherwise be mmap'd and page-faulted in afresh on every forward pass
// (glibc's threshold), and the many small per-request allocations are cheaper.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

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
