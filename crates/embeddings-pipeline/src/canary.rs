//! The quality canary: a fixed set of probe sentences (`data/canary.json`,
//! shipped in the crate) re-embedded through the real compute path, to
//! catch what latency and error counts cannot — a swapped or corrupted model
//! file, a kernel or device fault, a numerics regression, an answer that
//! depends on its batch neighbours.
//!
//! Each run embeds every probe through every loaded slot twice: all together
//! in one request (sorted, padded and chunked with each other like any
//! batch), and each alone. Per slot it reports the worst of:
//! - `cosine_to_startup`: the batched vector against the same probe's vector
//!   from the **first** run after start-up (every slot has this);
//! - `cosine_to_reference`: the batched vector against the vector the
//!   reference implementation (sentence-transformers) gives, for slots whose
//!   checkpoint and head the reference was made with (see [`ProbeSet`]);
//! - `batch_deviation`: `‖alone − batched‖ / ‖alone‖`.
//!
//! The canary runs with no recorder and no cache: it moves no user figure
//! (requests, latency, cache hits) and always computes afresh. Its inputs
//! carry a fixed timestamp, reference time and position, so the temporal
//! slots are as deterministic as the others.

use std::sync::{Mutex, PoisonError};
use std::time::Instant;

use chrono::{DateTime, Utc};
use embeddings_types::{CanaryReport, ModelId, SlotCanary};
use serde::Deserialize;

use crate::engine::Engine;
use crate::error::PipelineError;
use crate::input::EmbedInput;
use crate::options::Resolved;
use crate::output::{MultiEmbedding, SlotOutput};
use crate::registry::{Backend, HeadKind};

/// The shipped probe set.
const PROBES_JSON: &str = include_str!("../data/canary.json");

/// The probe set and the reference vectors that come with it.
#[derive(Debug, Deserialize)]
pub(crate) struct ProbeSet {
    /// The checkpoint the reference was computed with, as a folder name
    /// (`all-MiniLM-L6-v2`): the reference applies to a slot whose
    /// checkpoint folder (or a component of its path, for a Hugging Face
    /// cache folder) ends with this name, case-insensitively.
    folder: String,
    /// The head the reference vectors were pooled with (`mean`).
    head: String,
    probes: Vec<Probe>,
}

#[derive(Debug, Deserialize)]
struct Probe {
    text: String,
    reference: Vec<f32>,
}

impl ProbeSet {
    /// The shipped set.
    ///
    /// # Errors
    /// Only if the shipped file were malformed (a test parses it).
    pub(crate) fn shipped() -> Result<Self, String> {
        serde_json::from_str(PROBES_JSON).map_err(|e| format!("data/canary.json: {e}"))
    }

    /// Whether the reference applies to `slot` as loaded in `engine`.
    fn applies_to(&self, engine: &Engine, slot: ModelId) -> bool {
        let Backend::Transformer { model, head } = &engine.registry.slot(slot).backend else {
            return false;
        };
        let head_matches = matches!((head, self.head.as_str()), (HeadKind::Mean, "mean"));
        let wanted = self.folder.to_ascii_lowercase();
        let folder_matches = engine
            .registry
            .models
            .iter()
            .find(|m| &m.name == model)
            .and_then(|m| m.dir.as_ref())
            .is_some_and(|dir| {
                dir.components().any(|c| {
                    c.as_os_str()
                        .to_string_lossy()
                        .to_ascii_lowercase()
                        .ends_with(&wanted)
                })
            });
        head_matches && folder_matches
    }
}

/// The canary's state: the start-up vectors and the last report.
#[derive(Debug, Default)]
pub(crate) struct Canary {
    /// Per probe, per slot: the first run's flattened output.
    baseline: Mutex<Option<Vec<[Option<Flat>; ModelId::COUNT]>>>,
    last: Mutex<Option<CanaryReport>>,
    /// Serialises runs (a run is a few hundred milliseconds of compute).
    running: Mutex<()>,
}

/// The fixed time of every probe, so temporal slots are deterministic.
fn probe_time() -> DateTime<Utc> {
    DateTime::from_timestamp(1_704_067_200, 0).unwrap_or_default() // 2024-01-01T00:00:00Z
}

impl Canary {
    /// The last report, if a run has completed.
    pub(crate) fn last(&self) -> Option<CanaryReport> {
        self.last
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Runs the canary over every loaded slot of `engine` with `probes`.
    ///
    /// # Errors
    /// The pipeline's, when a computation fails (for example a non-finite
    /// output): the report is not updated, and the caller sees why.
    pub(crate) fn run(
        &self,
        engine: &Engine,
        probes: &ProbeSet,
    ) -> Result<CanaryReport, PipelineError> {
        let _one_at_a_time = self.running.lock().unwrap_or_else(PoisonError::into_inner);
        let started = Instant::now();
        let r = engine.resolve_all();
        let inputs: Vec<EmbedInput> = probes
            .probes
            .iter()
            .enumerate()
            .map(|(i, p)| {
                EmbedInput::new(p.text.clone())
                    .with_timestamp(probe_time())
                    .with_reference_time(probe_time())
                    .with_position(i as u64)
            })
            .collect();
        let batched = engine.compute_quietly(inputs.clone(), &r)?;
        let mut alone = Vec::with_capacity(inputs.len());
        for input in inputs {
            let mut one = engine.compute_quietly(vec![input], &r)?;
            alone.push(one.pop().ok_or_else(|| {
                PipelineError::Canary("the canary got no output for a probe".into())
            })?);
        }
        let flat_batched: Vec<[Option<Flat>; ModelId::COUNT]> =
            batched.iter().map(flatten_all).collect();
        let mut baseline = self.baseline.lock().unwrap_or_else(PoisonError::into_inner);
        let baseline = baseline.get_or_insert_with(|| flat_batched.clone());
        let mut slots = Vec::new();
        for slot in ModelId::ALL {
            if !engine.loaded.contains(slot) {
                continue;
            }
            let reference = probes.applies_to(engine, slot);
            let mut report = SlotCanary {
                model: slot,
                cosine_to_startup: 1.0,
                cosine_to_reference: reference.then_some(1.0),
                batch_deviation: 0.0,
            };
            for (i, probe) in probes.probes.iter().enumerate() {
                let Some(now) = &flat_batched[i][slot.index()] else {
                    continue;
                };
                if let Some(Some(then)) = baseline.get(i).map(|b| &b[slot.index()]) {
                    report.cosine_to_startup = report.cosine_to_startup.min(now.cosine(then));
                }
                if let Some(c) = &mut report.cosine_to_reference {
                    let reference = Flat::dense(&probe.reference);
                    *c = c.min(now.cosine(&reference));
                }
                if let Some(single) = alone.get(i).and_then(|a| a.get(slot)) {
                    let single = Flat::of(single);
                    report.batch_deviation = report.batch_deviation.max(single.deviation(now));
                }
            }
            slots.push(report);
        }
        let report = CanaryReport {
            completed_at: Utc::now(),
            duration: started.elapsed(),
            probes: probes.probes.len(),
            slots,
        };
        *self.last.lock().unwrap_or_else(PoisonError::into_inner) = Some(report.clone());
        Ok(report)
    }
}

impl Engine {
    /// Computes `inputs` for `r` on the calling thread through the stages
    /// every request takes (validation, tokenization, chunked compute,
    /// output), without the cache and without recording: for the canary,
    /// whose work is not the users'.
    pub(crate) fn compute_quietly(
        &self,
        inputs: Vec<EmbedInput>,
        r: &Resolved,
    ) -> Result<Vec<MultiEmbedding>, PipelineError> {
        let mut items: Vec<_> = inputs
            .into_iter()
            .enumerate()
            .map(|(i, input)| self.prepare(i, input, r))
            .collect();
        self.tokenize(&mut items, r.run, r.direction, None);
        self.compute(&mut items, r.run, r.fused, None)?;
        items.into_iter().map(|it| Engine::output(it, r)).collect()
    }
}

/// A slot's output as `(index, value)` pairs in ascending index order: a
/// dense vector's positions, a causal pair's cause then effect, per-token
/// vectors one after another, a sparse vector's entries.
#[derive(Debug, Clone, PartialEq)]
struct Flat(Vec<(u32, f32)>);

fn flatten_all(out: &MultiEmbedding) -> [Option<Flat>; ModelId::COUNT] {
    let mut flat: [Option<Flat>; ModelId::COUNT] = Default::default();
    for (slot, o) in out.iter() {
        flat[slot.index()] = Some(Flat::of(o));
    }
    flat
}

impl Flat {
    fn dense(values: &[f32]) -> Self {
        Self(
            values
                .iter()
                .enumerate()
                .map(|(i, v)| (u32::try_from(i).unwrap_or(u32::MAX), *v))
                .collect(),
        )
    }

    fn of(output: &SlotOutput) -> Self {
        match output {
            SlotOutput::Dense(v) => Self::dense(v),
            SlotOutput::Causal(p) => Self::dense(
                &p.cause
                    .iter()
                    .chain(p.effect.iter())
                    .copied()
                    .collect::<Vec<_>>(),
            ),
            SlotOutput::PerToken(t) => Self::dense(t.as_flat()),
            SlotOutput::Sparse(s) => Self(
                s.indices
                    .iter()
                    .copied()
                    .zip(s.values.iter().copied())
                    .collect(),
            ),
        }
    }

    /// `Σ a·b`, `Σ a²`, `Σ b²` and `Σ (a − b)²` over the union of indices
    /// (a missing entry is 0), in f64.
    fn sums(&self, other: &Self) -> (f64, f64, f64, f64) {
        let (mut ab, mut aa, mut bb, mut dd) = (0f64, 0f64, 0f64, 0f64);
        let (mut i, mut j) = (0, 0);
        let (a, b) = (&self.0, &other.0);
        while i < a.len() || j < b.len() {
            let (x, y) = match (a.get(i), b.get(j)) {
                (Some(&(ia, x)), Some(&(ib, y))) if ia == ib => {
                    i += 1;
                    j += 1;
                    (f64::from(x), f64::from(y))
                }
                (Some(&(ia, x)), Some(&(ib, _))) if ia < ib => {
                    i += 1;
                    (f64::from(x), 0.0)
                }
                (Some(&(_, x)), None) => {
                    i += 1;
                    (f64::from(x), 0.0)
                }
                (_, Some(&(_, y))) => {
                    j += 1;
                    (0.0, f64::from(y))
                }
                (None, None) => break,
            };
            ab += x * y;
            aa += x * x;
            bb += y * y;
            dd += (x - y) * (x - y);
        }
        (ab, aa, bb, dd)
    }

    /// Cosine similarity; 1 when both are zero (the same empty answer), 0
    /// when only one is.
    fn cosine(&self, other: &Self) -> f64 {
        let (ab, aa, bb, _) = self.sums(other);
        match (aa == 0.0, bb == 0.0) {
            (true, true) => 1.0,
            (true, false) | (false, true) => 0.0,
            (false, false) => ab / (aa.sqrt() * bb.sqrt()),
        }
    }

    /// `‖self − other‖ / ‖self‖` (the absolute distance when `self` is 0).
    fn deviation(&self, other: &Self) -> f64 {
        let (_, aa, _, dd) = self.sums(other);
        if aa == 0.0 {
            dd.sqrt()
        } else {
            (dd / aa).sqrt()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_shipped_probe_set_parses_with_a_reference_per_probe() {
        let set = ProbeSet::shipped().unwrap();
        assert!(set.probes.len() >= 8);
        for p in &set.probes {
            assert!(!p.text.trim().is_empty());
            assert_eq!(p.reference.len(), 384, "{}", p.text);
        }
    }

    #[test]
    fn flat_comparisons_merge_indices() {
        let a = Flat(vec![(1, 3.0), (4, 4.0)]);
        let b = Flat(vec![(1, 3.0), (4, 4.0)]);
        assert!((a.cosine(&b) - 1.0).abs() < 1e-12);
        assert_eq!(a.deviation(&b), 0.0);
        // Disjoint supports: orthogonal; the deviation counts both sides.
        let c = Flat(vec![(0, 5.0)]);
        assert_eq!(a.cosine(&c), 0.0);
        assert!((a.deviation(&c) - (50.0f64 / 25.0).sqrt()).abs() < 1e-12);
        let zero = Flat(Vec::new());
        assert_eq!(zero.cosine(&Flat(Vec::new())), 1.0);
        assert_eq!(zero.cosine(&a), 0.0);
        assert_eq!(
            Flat::dense(&[0.0, 1.0]).cosine(&Flat::dense(&[1.0, 0.0])),
            0.0
        );
    }
}
