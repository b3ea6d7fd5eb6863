//! The `embeddings-server` binary: parses flags and runs [`embeddings_server::run`].

use std::process::ExitCode;

use clap::Parser;
use embeddings_server::cli::Args;

/// mimalloc instead of the system allocator: with glibc, the forward pass's
/// multi-megabyte activation buffers come back as fresh page-faulted mmaps
/// on every op (see the workspace `Cargo.toml` and `BENCHMARKS.md`).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    let args = Args::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("embeddings-server: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(embeddings_server::run(args)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("embeddings-server: {e}");
            ExitCode::FAILURE
        }
    }
}
