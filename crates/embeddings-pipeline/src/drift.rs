//! The output-drift monitor: for each dense slot, a reference window (the
//! first `[quality] drift_window` outputs computed after start) and a recent
//! window (the last ones), compared on demand. It answers "do the vectors we
//! return now look like the ones we returned at first?": a change of what
//! callers send (another language, code, garbage) moves it, and so does a
//! model that changed under the service.
//!
//! Recording never blocks a request: a window is taken with `try_lock`, and
//! an output that finds it busy (a report copying it) is not sampled. The
//! windows hold shared handles to the returned vectors (slots computing the
//! same vector share one allocation), so the memory bound is two windows of
//! distinct vectors per slot.
//!
//! Pairwise figures sample [`PAIRS`] pairs per window with SplitMix64 seeded
//! by [`SEED`] and the slot: the same windows always give the same figures.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, PoisonError};

use chrono::Utc;
use embeddings_types::{DriftReport, ModelId, SlotDrift};

use crate::fusion::Fusion;
use crate::output::{MultiEmbedding, SlotOutput};
use crate::rng::{SplitMix64, derive};

/// Pairs of vectors sampled in each window.
pub(crate) const PAIRS: usize = 2048;

/// The seed of the pair sampling.
pub(crate) const SEED: u64 = 0x00D2_1F7E_5EED;

#[derive(Debug, Clone)]
struct Sample {
    vector: Arc<[f32]>,
    norm: Option<f32>,
}

#[derive(Debug)]
struct Windows<T> {
    reference: Vec<T>,
    recent: VecDeque<T>,
}

impl<T> Default for Windows<T> {
    fn default() -> Self {
        Self {
            reference: Vec::new(),
            recent: VecDeque::new(),
        }
    }
}

impl<T: Clone> Windows<T> {
    fn push(&mut self, value: T, size: usize) {
        if self.reference.len() < size {
            self.reference.push(value.clone());
        }
        if self.recent.len() == size {
            self.recent.pop_front();
        }
        self.recent.push_back(value);
    }

    fn copy(&self) -> (Vec<T>, Vec<T>) {
        (
            self.reference.clone(),
            self.recent.iter().cloned().collect(),
        )
    }
}

/// Inputs kept for the fused vector's neighbourhood check.
pub(crate) const FUSED_SAMPLES: usize = 64;

/// Neighbours compared per input in that check.
pub(crate) const NEIGHBOURS: usize = 5;

/// One input in both spaces: the gated concatenation the projection maps,
/// and the fused vector it made.
#[derive(Debug)]
struct FusedSample {
    gated: Vec<f32>,
    fused: Vec<f32>,
}

/// The monitor (see the [module docs](self)).
#[derive(Debug)]
pub(crate) struct DriftMonitor {
    size: usize,
    dense: [Mutex<Windows<Sample>>; ModelId::COUNT],
    sparse_nonzeros: Mutex<Windows<u32>>,
    /// The last [`FUSED_SAMPLES`] inputs with a fused vector, every fourth
    /// one sampled (building the gated input costs a few microseconds).
    fused: Mutex<VecDeque<FusedSample>>,
    observed: std::sync::atomic::AtomicU64,
}

impl DriftMonitor {
    pub(crate) fn new(size: usize) -> Self {
        Self {
            size,
            dense: std::array::from_fn(|_| Mutex::new(Windows::default())),
            sparse_nonzeros: Mutex::new(Windows::default()),
            fused: Mutex::new(VecDeque::new()),
            observed: std::sync::atomic::AtomicU64::new(0),
        }
    }

    /// Samples one computed output (`fusion`: the pipeline's fusion step,
    /// for the fused vector's neighbourhood check).
    pub(crate) fn observe(&self, out: &MultiEmbedding, fusion: Option<&Fusion>) {
        let n = self
            .observed
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        if n.is_multiple_of(4)
            && let (Some(fusion), Some(fused)) = (fusion, out.fused())
            && let Some(gated) = fusion.gated_input(&out.slots)
            && let Ok(mut ring) = self.fused.try_lock()
        {
            if ring.len() == FUSED_SAMPLES {
                ring.pop_front();
            }
            ring.push_back(FusedSample {
                gated,
                fused: fused.to_vec(),
            });
        }
        for (slot, output) in out.iter() {
            match output {
                SlotOutput::Dense(v) => {
                    if let Ok(mut w) = self.dense[slot.index()].try_lock() {
                        let sample = Sample {
                            vector: Arc::clone(v),
                            norm: out.pre_norm(slot),
                        };
                        w.push(sample, self.size);
                    }
                }
                SlotOutput::Sparse(s) => {
                    if let Ok(mut w) = self.sparse_nonzeros.try_lock() {
                        w.push(
                            u32::try_from(s.indices.len()).unwrap_or(u32::MAX),
                            self.size,
                        );
                    }
                }
                SlotOutput::Causal(_) | SlotOutput::PerToken(_) => {}
            }
        }
    }

    /// The figures now, for the slots in `slots`.
    pub(crate) fn report(&self, slots: impl Iterator<Item = ModelId>) -> DriftReport {
        let mut out = Vec::new();
        for slot in slots {
            let (reference, recent) = self.dense[slot.index()]
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .copy();
            if reference.is_empty() && recent.is_empty() {
                continue;
            }
            out.push(self.slot(slot, &reference, &recent));
        }
        let (reference, recent) = self
            .sparse_nonzeros
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .copy();
        let mean = |v: &[u32]| {
            (!v.is_empty()).then(|| v.iter().map(|n| f64::from(*n)).sum::<f64>() / v.len() as f64)
        };
        let fused_neighbour_overlap = {
            let ring = self.fused.lock().unwrap_or_else(PoisonError::into_inner);
            (ring.len() == FUSED_SAMPLES).then(|| neighbour_overlap(&ring))
        };
        DriftReport {
            computed_at: Utc::now(),
            window: self.size,
            pairs: PAIRS,
            seed: SEED,
            slots: out,
            sparse_mean_nonzeros: mean(&recent),
            sparse_reference_mean_nonzeros: mean(&reference),
            fused_neighbour_overlap,
        }
    }

    fn slot(&self, slot: ModelId, reference: &[Sample], recent: &[Sample]) -> SlotDrift {
        let full = reference.len() == self.size && recent.len() == self.size;
        let mean_norm = |w: &[Sample]| {
            let norms: Vec<f64> = w.iter().filter_map(|s| s.norm.map(f64::from)).collect();
            (!norms.is_empty() && norms.len() == w.len())
                .then(|| norms.iter().sum::<f64>() / norms.len() as f64)
        };
        let mut drift = SlotDrift {
            model: slot,
            reference_size: reference.len(),
            recent_size: recent.len(),
            centroid_cosine: None,
            mean_pairwise_cosine: None,
            reference_mean_pairwise_cosine: None,
            similarity_ks: None,
            drift_score: None,
            mean_norm: mean_norm(recent),
            reference_mean_norm: mean_norm(reference),
        };
        if !full {
            return drift;
        }
        let stream = slot.index() as u64;
        let mut a = pair_cosines(reference, derive(SEED, 2 * stream));
        let mut b = pair_cosines(recent, derive(SEED, 2 * stream + 1));
        let centroid = cosine(&centroid(reference), &centroid(recent));
        let ks = ks_statistic(&mut a, &mut b);
        drift.centroid_cosine = Some(centroid);
        drift.reference_mean_pairwise_cosine = Some(mean(&a));
        drift.mean_pairwise_cosine = Some(mean(&b));
        drift.similarity_ks = Some(ks);
        drift.drift_score = Some(ks.max(1.0 - centroid));
        drift
    }
}

fn mean(v: &[f64]) -> f64 {
    if v.is_empty() {
        0.0
    } else {
        v.iter().sum::<f64>() / v.len() as f64
    }
}

/// The mean vector, in f64.
fn centroid(window: &[Sample]) -> Vec<f64> {
    let dim = window.first().map_or(0, |s| s.vector.len());
    let mut sum = vec![0f64; dim];
    for s in window {
        for (acc, x) in sum.iter_mut().zip(s.vector.iter()) {
            *acc += f64::from(*x);
        }
    }
    sum
}

fn cosine(a: &[f64], b: &[f64]) -> f64 {
    let (mut ab, mut aa, mut bb) = (0.0, 0.0, 0.0);
    for (x, y) in a.iter().zip(b) {
        ab += x * y;
        aa += x * x;
        bb += y * y;
    }
    if aa == 0.0 || bb == 0.0 {
        if aa == bb { 1.0 } else { 0.0 }
    } else {
        ab / (aa.sqrt() * bb.sqrt())
    }
}

/// Cosines of [`PAIRS`] pairs of distinct vectors drawn with `seed`.
fn pair_cosines(window: &[Sample], seed: u64) -> Vec<f64> {
    let n = window.len() as u64;
    if n < 2 {
        return Vec::new();
    }
    let mut rng = SplitMix64::new(seed);
    (0..PAIRS)
        .map(|_| {
            let i = rng.next_u64() % n;
            let j = (i + 1 + rng.next_u64() % (n - 1)) % n;
            f64::from(crate::output::cosine(
                &window[i as usize].vector,
                &window[j as usize].vector,
            ))
        })
        .collect()
}

/// The mean share of each sample's [`NEIGHBOURS`] nearest others (by
/// cosine) in the gated space that are also its nearest in the fused space:
/// 1 when the projection keeps every neighbourhood.
fn neighbour_overlap(samples: &VecDeque<FusedSample>) -> f64 {
    let n = samples.len();
    let k = NEIGHBOURS.min(n.saturating_sub(1));
    if k == 0 {
        return 1.0;
    }
    let unit = |v: &[f32]| -> Vec<f64> {
        let norm = v.iter().map(|x| f64::from(*x).powi(2)).sum::<f64>().sqrt();
        v.iter()
            .map(|x| {
                if norm > 0.0 {
                    f64::from(*x) / norm
                } else {
                    0.0
                }
            })
            .collect()
    };
    let gated: Vec<Vec<f64>> = samples.iter().map(|s| unit(&s.gated)).collect();
    let fused: Vec<Vec<f64>> = samples.iter().map(|s| unit(&s.fused)).collect();
    let nearest = |space: &[Vec<f64>], i: usize| -> Vec<usize> {
        let mut others: Vec<(usize, f64)> = (0..n)
            .filter(|j| *j != i)
            .map(|j| (j, space[i].iter().zip(&space[j]).map(|(a, b)| a * b).sum()))
            .collect();
        // Ties broken by index, so the figure is deterministic.
        others.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
        others.into_iter().take(k).map(|(j, _)| j).collect()
    };
    let shared: usize = (0..n)
        .map(|i| {
            let a = nearest(&gated, i);
            nearest(&fused, i).iter().filter(|j| a.contains(j)).count()
        })
        .sum();
    shared as f64 / (n * k) as f64
}

/// The two-sample Kolmogorov–Smirnov statistic: the largest distance
/// between the two empirical distribution functions (sorts both).
fn ks_statistic(a: &mut [f64], b: &mut [f64]) -> f64 {
    if a.is_empty() || b.is_empty() {
        return 0.0;
    }
    a.sort_by(f64::total_cmp);
    b.sort_by(f64::total_cmp);
    let (n, m) = (a.len() as f64, b.len() as f64);
    let (mut i, mut j, mut d) = (0usize, 0usize, 0f64);
    while i < a.len() && j < b.len() {
        let x = a[i].min(b[j]);
        while i < a.len() && a[i] <= x {
            i += 1;
        }
        while j < b.len() && b[j] <= x {
            j += 1;
        }
        d = d.max((i as f64 / n - j as f64 / m).abs());
    }
    d
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ks_of_equal_samples_is_zero_and_of_disjoint_ones_one() {
        let mut a = vec![0.1, 0.2, 0.3];
        let mut b = vec![0.3, 0.1, 0.2];
        assert_eq!(ks_statistic(&mut a, &mut b), 0.0);
        let mut c = vec![5.0, 6.0];
        assert_eq!(ks_statistic(&mut a, &mut c), 1.0);
        let mut d = vec![0.1, 0.2, 10.0, 11.0];
        assert!((ks_statistic(&mut a, &mut d) - 0.5).abs() < 1e-12);
    }

    #[test]
    fn windows_keep_the_first_and_the_last() {
        let mut w = Windows::default();
        for i in 0..10u32 {
            w.push(i, 4);
        }
        let (reference, recent) = w.copy();
        assert_eq!(reference, [0, 1, 2, 3]);
        assert_eq!(recent, [6, 7, 8, 9]);
    }

    #[test]
    fn figures_are_unknown_until_both_windows_are_full_then_zero_for_the_same_outputs() {
        let m = DriftMonitor::new(16);
        let sample = |k: usize| Sample {
            vector: Arc::from(vec![(k % 7) as f32 + 1.0, (k % 3) as f32, 1.0]),
            norm: Some(2.0),
        };
        {
            let mut w = m.dense[0].lock().unwrap();
            for k in 0..8 {
                w.push(sample(k), 16);
            }
        }
        let r = m.report([ModelId::ALL[0]].into_iter());
        assert_eq!(r.slots[0].drift_score, None);
        assert_eq!(r.slots[0].mean_norm, Some(2.0));
        {
            let mut w = m.dense[0].lock().unwrap();
            for k in 8..16 {
                w.push(sample(k), 16);
            }
        }
        // Both windows hold the same 16 vectors.
        let r = m.report([ModelId::ALL[0]].into_iter());
        let s = &r.slots[0];
        assert!((s.centroid_cosine.unwrap() - 1.0).abs() < 1e-12);
        assert!(s.drift_score.unwrap() < 0.05, "{s:?}");
        assert_eq!(r.worst().map(|w| w.0), Some(ModelId::ALL[0]));
    }
}
