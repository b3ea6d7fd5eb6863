//! The process and build families of `/metrics`, with the names Prometheus
//! client libraries use (`process_resident_memory_bytes`, ...), so existing
//! dashboards and alerts work unchanged.

use embeddings_metrics::{Encoder, Family, Labels};

use crate::process::ProcessStats;

/// Writes the process families (each only when its figure was read) and
/// `<prefix>build_info`.
///
/// # Errors
/// Only those of the underlying writer.
pub(crate) fn encode(
    encoder: &mut Encoder<'_>,
    prefix: &str,
    stats: &ProcessStats,
) -> std::fmt::Result {
    let none = Labels::empty();
    let gauge = |name: &str, help: &str| Family::gauge(name, help).map_err(|_| std::fmt::Error);
    if let Some(v) = stats.cpu_seconds {
        let family = Family::counter(
            "process_cpu_seconds",
            "Total user and system CPU time spent, seconds.",
        )
        .map_err(|_| std::fmt::Error)?;
        encoder.family(&family)?.counter_value(&none, v)?;
    }
    if let Some(v) = stats.resident_memory_bytes {
        encoder
            .family(&gauge(
                "process_resident_memory_bytes",
                "Resident memory size, bytes.",
            )?)?
            .gauge(&none, v)?;
    }
    if let Some(v) = stats.open_fds {
        encoder
            .family(&gauge("process_open_fds", "Open file descriptors.")?)?
            .gauge(&none, v)?;
    }
    if let Some(v) = stats.max_fds {
        encoder
            .family(&gauge(
                "process_max_fds",
                "Maximum number of open file descriptors.",
            )?)?
            .gauge(&none, v)?;
    }
    if let Some(v) = stats.start_time_seconds {
        encoder
            .family(&gauge(
                "process_start_time_seconds",
                "Start time of the process since the Unix epoch, seconds.",
            )?)?
            .gauge(&none, v)?;
    }
    let labels =
        Labels::new([("version", env!("CARGO_PKG_VERSION"))]).map_err(|_| std::fmt::Error)?;
    encoder
        .family(&gauge(
            &format!("{prefix}build_info"),
            "Build information; the value is always 1.",
        )?)?
        .gauge(&labels, 1u64)?;
    Ok(())
}
