//! Fusion (fusemoe): gates and projects the slot outputs into one vector.
#![doc = include_str!("../docs/fusion.md")]

use std::path::Path;

use candle_core::{DType, Device, Tensor};
use embeddings_types::ModelId;
use rayon::prelude::*;

use crate::config::FusionConfig;
use crate::error::{LoadError, PipelineError};
use crate::output::SlotOutput;
use crate::rng;
use crate::transformer::l2_normalize;

enum Mode {
    /// The seeded subsampled randomized Hadamard transform (SRHT), see the
    /// module docs.
    Static(Srht),
    Trained {
        gate_w: Tensor,
        gate_b: Option<Tensor>,
        proj_w: Tensor,
        proj_b: Option<Tensor>,
    },
}

/// A ready fusion step for a fixed set of present slots.
pub(crate) struct Fusion {
    mode: Mode,
    /// `(slot, offset, width)` for every present slot, in slot order.
    blocks: Vec<(ModelId, usize, usize)>,
    d_in: usize,
    dim: usize,
    top_k: usize,
    sparse_hash_dim: usize,
    seed: u64,
    device: Device,
}

impl std::fmt::Debug for Fusion {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Fusion")
            .field("d_in", &self.d_in)
            .field("dim", &self.dim)
            .field("trained", &matches!(self.mode, Mode::Trained { .. }))
            .finish_non_exhaustive()
    }
}

fn fusion_err(e: impl std::fmt::Display) -> PipelineError {
    PipelineError::Fusion(e.to_string())
}

fn load_err(e: impl std::fmt::Display) -> LoadError {
    LoadError::Fusion(e.to_string())
}

impl Fusion {
    /// `widths[slot]` is the view width of every present slot.
    pub(crate) fn new(
        config: &FusionConfig,
        widths: &[(ModelId, usize)],
        trained: Option<&Path>,
        device: &Device,
    ) -> Result<Self, LoadError> {
        let mut blocks = Vec::with_capacity(widths.len());
        let mut d_in = 0;
        for &(id, w) in widths {
            blocks.push((id, d_in, w));
            d_in += w;
        }
        if blocks.is_empty() {
            return Err(LoadError::Fusion("no slot is present to fuse".into()));
        }
        let dim = config.dim;
        let mode = match trained {
            None => {
                let mut ranked: Vec<(ModelId, f32)> = blocks
                    .iter()
                    .map(|(id, _, _)| (*id, config.weights.get(id).copied().unwrap_or(1.0)))
                    .collect();
                ranked.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
                ranked.truncate(config.top_k);
                let total: f32 = ranked.iter().map(|r| r.1).sum();
                if total <= 0.0 {
                    return Err(LoadError::Config(
                        "every selected `fusion.weights` entry is zero; give at least one present slot a positive weight".into(),
                    ));
                }
                let mut gates = vec![0f32; d_in];
                for &(id, off, w) in &blocks {
                    if let Some((_, g)) = ranked.iter().find(|r| r.0 == id) {
                        gates[off..off + w].fill((g / total).sqrt());
                    }
                }
                Mode::Static(Srht::new(config.seed, &gates, dim))
            }
            Some(path) => load_trained(path, d_in, dim, device)?,
        };
        Ok(Self {
            mode,
            blocks,
            d_in,
            dim,
            top_k: config.top_k,
            sparse_hash_dim: config.sparse_hash_dim,
            seed: config.seed,
            device: device.clone(),
        })
    }

    /// Bytes held by the fusion tables.
    pub(crate) fn weight_bytes(&self) -> u64 {
        let n = match &self.mode {
            Mode::Static(srht) => srht.table_floats(),
            Mode::Trained {
                gate_w,
                gate_b,
                proj_w,
                proj_b,
            } => {
                gate_w.elem_count()
                    + proj_w.elem_count()
                    + gate_b.as_ref().map_or(0, Tensor::elem_count)
                    + proj_b.as_ref().map_or(0, Tensor::elem_count)
            }
        };
        (n * 4) as u64
    }

    /// Output dimension.
    pub(crate) fn dim(&self) -> usize {
        self.dim
    }

    /// Input dimension.
    pub(crate) fn d_in(&self) -> usize {
        self.d_in
    }

    /// The unit view of one slot output, `width` floats.
    fn view(&self, out: &SlotOutput, width: usize, dst: &mut [f32]) {
        match out {
            SlotOutput::Dense(v) => {
                let n = width.min(v.len()).min(dst.len());
                dst[..n].copy_from_slice(&v[..n]);
            }
            SlotOutput::Causal(p) => {
                let h = p.cause.len();
                let s = std::f32::consts::FRAC_1_SQRT_2;
                for (d, x) in dst
                    .iter_mut()
                    .zip(p.cause.iter().chain(p.effect.iter()))
                    .take(2 * h)
                {
                    *d = x * s;
                }
            }
            SlotOutput::Sparse(sv) => {
                for (&i, &v) in sv.indices.iter().zip(&sv.values) {
                    let h = rng::derive(self.seed, u64::from(i));
                    let bucket = (h % self.sparse_hash_dim as u64) as usize;
                    let sign = if h >> 63 == 1 { 1.0 } else { -1.0 };
                    if let Some(d) = dst.get_mut(bucket) {
                        *d += sign * v;
                    }
                }
                normalize(dst);
            }
            SlotOutput::PerToken(t) => {
                let n = t.len().max(1) as f32;
                for tok in t.iter() {
                    for (d, x) in dst.iter_mut().zip(tok) {
                        *d += x / n;
                    }
                }
                normalize(dst);
            }
        }
    }

    /// The gated input the Johnson–Lindenstrauss projection maps: each
    /// present slot's view scaled by its gate (the space whose neighbourhoods
    /// the fused vector should keep). `None` for a trained projection, or
    /// when a slot that feeds the fusion is missing from `row`.
    pub(crate) fn gated_input(
        &self,
        row: &[Option<SlotOutput>; ModelId::COUNT],
    ) -> Option<Vec<f32>> {
        let Mode::Static(srht) = &self.mode else {
            return None;
        };
        let mut x = vec![0f32; self.d_in];
        for &(id, off, w) in &self.blocks {
            self.view(row[id.index()].as_ref()?, w, &mut x[off..off + w]);
        }
        for (v, g) in x.iter_mut().zip(&srht.signed_gates) {
            *v *= g.abs();
        }
        Some(x)
    }

    /// Fuses a chunk; `rows[b][slot]` are the slot outputs of item `b`.
    pub(crate) fn fuse(
        &self,
        rows: &[&[Option<SlotOutput>; ModelId::COUNT]],
    ) -> Result<Vec<Vec<f32>>, PipelineError> {
        let batch = rows.len();
        let mut x = vec![0f32; batch * self.d_in];
        for (b, row) in rows.iter().enumerate() {
            let base = b * self.d_in;
            for &(id, off, w) in &self.blocks {
                if let Some(out) = &row[id.index()] {
                    self.view(out, w, &mut x[base + off..base + off + w]);
                }
            }
        }
        let (gate_w, gate_b, proj_w, proj_b) = match &self.mode {
            Mode::Static(srht) => {
                let project = |z: &[f32]| {
                    let mut y = srht.project(z);
                    normalize(&mut y);
                    y
                };
                return Ok(if batch >= PAR_MIN_ITEMS {
                    x.par_chunks(self.d_in).map(project).collect()
                } else {
                    x.chunks(self.d_in).map(project).collect()
                });
            }
            Mode::Trained {
                gate_w,
                gate_b,
                proj_w,
                proj_b,
            } => (gate_w, gate_b, proj_w, proj_b),
        };
        let x = Tensor::from_vec(x, (batch, self.d_in), &self.device).map_err(fusion_err)?;
        self.trained(&x, gate_w, gate_b.as_ref(), proj_w, proj_b.as_ref())
            .and_then(|y| l2_normalize(&y))
            .and_then(|y| y.to_vec2::<f32>())
            .map_err(fusion_err)
    }

    fn trained(
        &self,
        x: &Tensor,
        gate_w: &Tensor,
        gate_b: Option<&Tensor>,
        proj_w: &Tensor,
        proj_b: Option<&Tensor>,
    ) -> candle_core::Result<Tensor> {
        let mut logits = x.matmul(gate_w)?; // [batch, 12]
        if let Some(b) = gate_b {
            logits = logits.broadcast_add(b)?;
        }
        let logits = logits.to_vec2::<f32>()?;
        let batch = logits.len();
        let mut scale = vec![0f32; batch * self.d_in];
        for (b, row) in logits.iter().enumerate() {
            let mut present: Vec<(usize, f32)> = self
                .blocks
                .iter()
                .enumerate()
                .map(|(k, (id, _, _))| (k, row[id.index()]))
                .collect();
            present.sort_by(|a, c| c.1.total_cmp(&a.1).then(a.0.cmp(&c.0)));
            present.truncate(self.top_k);
            let max = present.first().map_or(0.0, |p| p.1);
            let exps: Vec<f32> = present.iter().map(|p| (p.1 - max).exp()).collect();
            let total: f32 = exps.iter().sum();
            for ((k, _), e) in present.iter().zip(exps) {
                let (_, off, w) = self.blocks[*k];
                let g = if total > 0.0 { e / total } else { 0.0 };
                scale[b * self.d_in + off..b * self.d_in + off + w].fill(g.sqrt());
            }
        }
        let scale = Tensor::from_vec(scale, (batch, self.d_in), x.device())?;
        let mut y = (x * scale)?.matmul(proj_w)?;
        if let Some(b) = proj_b {
            y = y.broadcast_add(b)?;
        }
        Ok(y)
    }
}

fn normalize(v: &mut [f32]) {
    let n = v.iter().map(|x| x * x).sum::<f32>().sqrt();
    if n > 0.0 {
        v.iter_mut().for_each(|x| *x /= n);
    }
}

/// Items from which the default fusion runs in parallel (rayon).
const PAR_MIN_ITEMS: usize = 8;

/// The seeded subsampled randomized Hadamard transform `y = S H D g ∘ z / √m`
/// (Ailon & Chazelle's fast Johnson–Lindenstrauss transform in its SRHT form;
/// Tropp 2011): `z` zero-padded to `P = 2^k ≥ max(D_in, m)`, `g` the static
/// gates, `D` seeded random signs, `H` the unnormalised `P × P`
/// Walsh–Hadamard matrix, `S` a seeded choice of `m` distinct coordinates.
/// `E‖y‖² = ‖g ∘ z‖²`, and inner products are preserved like a dense
/// Rademacher projection to `m` dimensions, at `O(P log P)` work and `O(P)`
/// memory instead of `O(D_in · m)` for both.
struct Srht {
    /// `g_i · D_i` for each input coordinate (gates folded into the signs).
    signed_gates: Vec<f32>,
    /// `P`.
    padded: usize,
    /// The `m` kept coordinates of `H D z`, ascending.
    pick: Vec<usize>,
}

impl Srht {
    fn new(seed: u64, gates: &[f32], dim: usize) -> Self {
        let padded = gates.len().max(dim).max(1).next_power_of_two();
        let signs = rng::rademacher(seed, gates.len(), 1.0);
        let signed_gates = gates.iter().zip(&signs).map(|(g, s)| g * s).collect();
        // Partial Fisher–Yates over 0..P: the first `dim` entries are a
        // uniform choice of distinct coordinates.
        let mut order: Vec<usize> = (0..padded).collect();
        let mut rng = rng::SplitMix64::new(rng::derive(seed, 0x5248_5400)); // "SRHT"
        for i in 0..dim.min(padded) {
            let span = (padded - i) as u64;
            let j = i + (rng.next_u64() % span) as usize;
            order.swap(i, j);
        }
        let mut pick: Vec<usize> = order.into_iter().take(dim).collect();
        pick.sort_unstable();
        Self {
            signed_gates,
            padded,
            pick,
        }
    }

    /// Floats held (for the registry's memory figure).
    fn table_floats(&self) -> usize {
        self.signed_gates.len() + self.pick.len()
    }

    /// `y` for one `z` of `D_in` floats.
    fn project(&self, z: &[f32]) -> Vec<f32> {
        let mut v = vec![0f32; self.padded];
        for ((d, x), g) in v.iter_mut().zip(z).zip(&self.signed_gates) {
            *d = x * g;
        }
        fwht(&mut v);
        // `1/√m` only fixes the expected norm; callers normalise anyway.
        let scale = 1.0 / (self.pick.len().max(1) as f32).sqrt();
        // Every pick is `< padded = v.len()` by construction.
        self.pick.iter().map(|&i| v[i] * scale).collect()
    }
}

/// In-place unnormalised fast Walsh–Hadamard transform (`v.len()` a power
/// of two): `log2 n` rounds of butterflies `(a, b) → (a + b, a − b)`.
fn fwht(v: &mut [f32]) {
    let n = v.len();
    let mut half = 1;
    while half < n {
        for block in v.chunks_exact_mut(2 * half) {
            let (lo, hi) = block.split_at_mut(half);
            for (a, b) in lo.iter_mut().zip(hi.iter_mut()) {
                let (x, y) = (*a, *b);
                *a = x + y;
                *b = x - y;
            }
        }
        half *= 2;
    }
}

fn load_trained(path: &Path, d_in: usize, dim: usize, device: &Device) -> Result<Mode, LoadError> {
    let bytes = std::fs::read(path).map_err(|e| LoadError::Io {
        path: path.to_owned(),
        reason: e.to_string(),
    })?;
    let mut tensors =
        std::panic::catch_unwind(|| candle_core::safetensors::load_buffer(&bytes, device))
            .map_err(|_| LoadError::CorruptWeights {
                path: path.to_owned(),
                reason: "the safetensors reader panicked".into(),
            })?
            .map_err(|e| LoadError::CorruptWeights {
                path: path.to_owned(),
                reason: e.to_string(),
            })?;
    let mut take = |name: &str,
                    shape: &[usize],
                    optional: bool|
     -> Result<Option<Tensor>, LoadError> {
        match tensors.remove(name) {
            None if optional => Ok(None),
            None => Err(LoadError::Fusion(format!(
                "{} has no tensor `{name}`; expected shape {shape:?}",
                path.display()
            ))),
            Some(t) if t.dims() != shape => Err(LoadError::Fusion(format!(
                "`{name}` in {} has shape {:?} but the present slots need {shape:?} \
                 (D_in = {d_in} is the sum of the present slots' view widths); retrain for this slot set",
                path.display(),
                t.dims()
            ))),
            Some(t) => Ok(Some(t.to_dtype(DType::F32).map_err(load_err)?)),
        }
    };
    let gate_w = take("gate.weight", &[ModelId::COUNT, d_in], false)?;
    let gate_b = take("gate.bias", &[ModelId::COUNT], true)?;
    let proj_w = take("proj.weight", &[dim, d_in], false)?;
    let proj_b = take("proj.bias", &[dim], true)?;
    let (Some(gate_w), Some(proj_w)) = (gate_w, proj_w) else {
        return Err(LoadError::Fusion(
            "missing gate or projection weights".into(),
        ));
    };
    Ok(Mode::Trained {
        gate_w: gate_w.t().and_then(|t| t.contiguous()).map_err(load_err)?,
        gate_b,
        proj_w: proj_w.t().and_then(|t| t.contiguous()).map_err(load_err)?,
        proj_b,
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn fwht_is_the_walsh_hadamard_matrix() {
        // H[i][j] = (-1)^popcount(i & j); compare with the naive product.
        let n = 16;
        let x: Vec<f32> = (0..n).map(|i| (i as f32 * 0.37).sin()).collect();
        let mut fast = x.clone();
        fwht(&mut fast);
        for (i, got) in fast.iter().enumerate() {
            let naive: f32 = (0..n)
                .map(|j| {
                    if (i & j).count_ones() % 2 == 0 {
                        x[j]
                    } else {
                        -x[j]
                    }
                })
                .sum();
            assert!((got - naive).abs() < 1e-5, "{i}: {got} vs {naive}");
        }
        // H H = n I.
        fwht(&mut fast);
        for (a, b) in fast.iter().zip(&x) {
            assert!((a / n as f32 - b).abs() < 1e-5);
        }
    }

    #[test]
    fn srht_preserves_inner_products_and_is_seeded() {
        let d_in = 4456;
        let dim = 1536;
        let srht = Srht::new(7, &vec![1.0; d_in], dim);
        assert_eq!(srht.padded, 8192);
        assert_eq!(srht.pick.len(), dim);
        assert!(
            srht.pick.windows(2).all(|w| w[0] < w[1]),
            "distinct, sorted"
        );
        let unit = |k: u64| {
            let mut v = rng::rademacher(k, d_in, 1.0);
            // Structured, not just signs: blocks of different scale.
            for (i, x) in v.iter_mut().enumerate() {
                *x *= 1.0 + (i / 384) as f32;
            }
            normalize(&mut v);
            v
        };
        let dot = |a: &[f32], b: &[f32]| a.iter().zip(b).map(|(x, y)| x * y).sum::<f32>();
        let base = unit(1);
        for k in 2..12 {
            // Mix so the true cosines spread over (0, 1).
            let other = unit(k);
            let t = (k - 2) as f32 / 10.0;
            let mut z: Vec<f32> = base.iter().zip(&other).map(|(a, b)| t * a + b).collect();
            normalize(&mut z);
            let truth = dot(&base, &z);
            let (ya, yb) = (srht.project(&base), srht.project(&z));
            let est = dot(&ya, &yb) / (dot(&ya, &ya) * dot(&yb, &yb)).sqrt();
            // JL at m = 1536: standard deviation ≈ 1/√m ≈ 0.026.
            assert!((est - truth).abs() < 0.1, "cos {truth} estimated {est}");
            assert!(
                (dot(&ya, &ya) - 1.0).abs() < 0.15,
                "norm² {}",
                dot(&ya, &ya)
            );
        }
        let again = Srht::new(7, &vec![1.0; d_in], dim);
        assert_eq!(srht.project(&base), again.project(&base));
        let other_seed = Srht::new(8, &vec![1.0; d_in], dim);
        assert_ne!(srht.project(&base), other_seed.project(&base));
        // More output dimensions than inputs: padded to cover them.
        let wide = Srht::new(7, &[1.0; 10], 100);
        assert_eq!((wide.padded, wide.project(&[0.5; 10]).len()), (128, 100));
    }
}
