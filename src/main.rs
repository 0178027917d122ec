//! The `zeroshot` binary: parses the command line and runs the command (`cli`).

use std::process::ExitCode;

use clap::Parser;

use zeroshot::cli::{self, Cli};

fn main() -> ExitCode {
    limit_malloc_arenas();
    let cli = Cli::parse();
    cli::init_logging(cli.log_format);
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(runtime) => runtime,
        Err(err) => {
            eprintln!("error: cannot start the async runtime: {err}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(cli::run(cli.command)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("error: {err:#}");
            ExitCode::from(cli::exit_code(&err))
        }
    }
}

/// Bounds glibc's malloc arenas to one per core, before any thread starts. By default
/// glibc allows eight per core, and the threads that score batch chunks (rayon, ONNX
/// Runtime, tokio) each keep their own arena's high-water mark: RSS climbed 27.6% over
/// a 10-minute soak with the defaults, 5.4% with two arenas on two cores
/// (docs/performance.md#soak-test). `MALLOC_ARENA_MAX` in the environment, which glibc
/// reads itself, wins.
fn limit_malloc_arenas() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    if std::env::var_os("MALLOC_ARENA_MAX").is_none() {
        let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
        let arenas = libc::c_int::try_from(cores.max(2)).unwrap_or(libc::c_int::MAX);
        // SAFETY: mallopt only sets an allocator parameter; no thread has started yet.
        unsafe {
            libc::mallopt(libc::M_ARENA_MAX, arenas);
        }
    }
}
