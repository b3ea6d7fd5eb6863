//! The state families of `/metrics`, read at scrape time: whether the
//! instance is ready, and each slot's state, so alerts can say "a slot
//! failed to load" and "not ready" from Prometheus.

use embeddings_metrics::{Encoder, Family, Labels};

use crate::app::AppState;

/// The states a slot can be in, as the `state` label.
const STATES: [&str; 4] = ["loading", "loaded", "disabled", "failed"];

/// Writes `<prefix>ready` and `<prefix>slot_state{model,state}`.
///
/// # Errors
/// Only those of the underlying writer.
pub(crate) fn encode(
    encoder: &mut Encoder<'_>,
    prefix: &str,
    state: &AppState,
) -> std::fmt::Result {
    let none = Labels::empty();
    let ready = Family::gauge(
        &format!("{prefix}ready"),
        "1 while the readiness probe passes (/readyz answers 200), else 0.",
    )
    .map_err(|_| std::fmt::Error)?;
    let ok = state.health().probes.readiness.is_ok();
    encoder.family(&ready)?.gauge(&none, u64::from(ok))?;
    let slots = Family::gauge(
        &format!("{prefix}slot_state"),
        "Each slot's state: 1 for the state it is in (loading, loaded, disabled, failed), 0 for the others.",
    )
    .map_err(|_| std::fmt::Error)?;
    let mut writer = encoder.family(&slots)?;
    for (slot, current) in state.slot_states() {
        let name = slot.to_string();
        for s in STATES {
            let labels = Labels::new([("model", name.as_str()), ("state", s)])
                .map_err(|_| std::fmt::Error)?;
            writer.gauge(&labels, u64::from(s == current))?;
        }
    }
    Ok(())
}
