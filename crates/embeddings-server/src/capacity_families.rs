//! The capacity families of `/metrics`: what the process may use and how
//! much of it is taken, read at scrape time. Each is written only when its
//! figure was read (unknown is no series, never a 0).

use embeddings_metrics::{Encoder, Family, Labels};

use crate::app::AppState;

/// Writes the admission, compute-thread, memory-limit and CPU-throttling families.
///
/// # Errors
/// Only those of the underlying writer.
pub(crate) fn encode(
    encoder: &mut Encoder<'_>,
    prefix: &str,
    state: &AppState,
) -> std::fmt::Result {
    let none = Labels::empty();
    let gauge = |name: &str, help: &str| {
        Family::gauge(&format!("{prefix}{name}"), help).map_err(|_| std::fmt::Error)
    };
    let counter = |name: &str, help: &str| {
        Family::counter(&format!("{prefix}{name}"), help).map_err(|_| std::fmt::Error)
    };
    if let Some(pipeline) = state.ready() {
        encoder
            .family(&gauge(
                "admitted_tokens",
                "Tokens admitted to the queue and not yet answered (each input at the upper bound it was admitted with).",
            )?)?
            .gauge(&none, pipeline.tokens_admitted() as u64)?;
        encoder
            .family(&gauge(
                "token_budget",
                "The most tokens admitted at once ([batching] token_budget).",
            )?)?
            .gauge(&none, pipeline.limits().batching.token_budget as u64)?;
    }
    // The pool's real size, not the number asked for.
    encoder
        .family(&gauge(
            "compute_threads",
            "Threads of the compute pool (candle, tokenizer).",
        )?)?
        .gauge(&none, rayon::current_num_threads() as u64)?;
    if let Some(limit) = state.memory_limit {
        encoder
            .family(&gauge(
                "memory_limit_bytes",
                "The container's memory limit (cgroup memory.max), read at start; no sample when unlimited.",
            )?)?
            .gauge(&none, limit)?;
    }
    let Some(cpu) = &state.cpu else {
        return Ok(());
    };
    if let Some(q) = cpu.quota_cores {
        encoder
            .family(&gauge("cpu_quota_cores", "The cgroup CPU quota, cores.")?)?
            .gauge(&none, q)?;
    }
    if let Some(t) = cpu.throttling() {
        encoder
            .family(&counter(
                "cpu_periods",
                "CPU quota enforcement periods elapsed (cgroup cpu.stat nr_periods).",
            )?)?
            .counter_value(&none, t.periods)?;
        encoder
            .family(&counter(
                "cpu_throttled_periods",
                "Periods in which the cgroup was throttled (cpu.stat nr_throttled).",
            )?)?
            .counter_value(&none, t.throttled_periods)?;
        encoder
            .family(&counter(
                "cpu_throttled_seconds",
                "Time the cgroup spent throttled, seconds (cpu.stat).",
            )?)?
            .counter_value(&none, t.throttled_seconds)?;
    }
    Ok(())
}
