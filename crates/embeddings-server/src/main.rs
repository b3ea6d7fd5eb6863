//! The `embeddings-server` binary: parses flags and runs [`embeddings_server::run`].

use std::process::ExitCode;

use clap::Parser;
use embeddings_server::cli::Args;
use embeddings_server::cpu::CpuPlan;

/// mimalloc instead of the system allocator: with glibc, the forward pass's
/// multi-megabyte activation buffers come back as fresh page-faulted mmaps
/// on every op (see the workspace `Cargo.toml` and `BENCHMARKS.md`).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    let args = Args::parse();
    // Sized before any thread starts: the compute pool and the runtime's
    // workers follow the container's CPU quota, not the host's core count.
    let threads = args.threads.and_then(|n| usize::try_from(n).ok());
    let cpu = CpuPlan::decide(threads, &args.cgroup_root);
    if let Err(e) = cpu.apply() {
        eprintln!("embeddings-server: cannot size the compute pool: {e}");
        return ExitCode::FAILURE;
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(cpu.threads)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("embeddings-server: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(embeddings_server::run(args, cpu)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("embeddings-server: {e}");
            ExitCode::FAILURE
        }
    }
}
