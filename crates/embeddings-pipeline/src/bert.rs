//! A BERT encoder for the CPU, numerically equivalent to
//! `candle_transformers::models::bert::BertModel` (itself a port of Hugging
//! Face's `BertModel`) but with the elementwise work fused:
//!
//! * Q, K and V are one matmul against a concatenated `[hidden, 3·hidden]`
//!   weight; the `1/√d` attention scale is folded into the Q weight and bias
//!   at load time.
//! * one pass adds the QKV bias and splits the heads (`SplitHeads`), one pass
//!   masks and softmaxes the scores by each row's real length (`MaskedSoftmax`,
//!   no broadcast mask tensor), one pass adds bias + residual and layer-norms
//!   (`AddLayerNorm`), one pass adds bias and applies the exact (erf) GELU
//!   (`BiasAct`, with a vectorisable rational erf instead of scalar `libm`);
//! * attention runs in parallel over slices of the `batch·heads` items (candle
//!   loops over the batch of a batched matmul on one thread);
//! * the elementwise passes are parallel over rows with rayon.
//!
//! Matmuls stay in candle (the `gemm` crate). CPU only: other devices use
//! candle's `BertModel` (see `transformer.rs`).

use std::ops::Range;

use candle_core::{CpuStorage, Layout, Result, Shape, Tensor};
use candle_nn::VarBuilder;
use candle_transformers::models::bert::{Config, HiddenAct};
use rayon::prelude::*;

/// Below this many floats an elementwise pass stays on the calling thread.
const PAR_MIN_FLOATS: usize = 32 * 1024;
/// Attention runs in parallel parts when `batch·heads·s²·d` exceeds this.
const PAR_MIN_ATTN_MACS: usize = 256 * 1024;

/// One layer norm's parameters.
struct Norm {
    gamma: Vec<f32>,
    beta: Vec<f32>,
    eps: f32,
}

impl Norm {
    fn load(vb: VarBuilder<'_>, h: usize, eps: f64) -> Result<Self> {
        Ok(Self {
            gamma: vb.get(h, "weight")?.to_vec1()?,
            beta: vb.get(h, "bias")?.to_vec1()?,
            eps: eps as f32,
        })
    }
}

/// A linear layer: weight stored transposed (`[in, out]`, contiguous) so the
/// matmul is a plain `x · w`; the bias is added by the fused pass after it.
struct Dense {
    w: Tensor,
    b: Vec<f32>,
}

impl Dense {
    fn load(vb: VarBuilder<'_>, inp: usize, out: usize) -> Result<Self> {
        Ok(Self {
            w: vb.get((out, inp), "weight")?.t()?.contiguous()?,
            b: vb.get(out, "bias")?.to_vec1()?,
        })
    }
}

struct Layer {
    qkv: Dense,
    out: Dense,
    ln1: Norm,
    up: Dense,
    down: Dense,
    ln2: Norm,
}

/// The encoder; see the module docs.
pub(crate) struct BertEncoder {
    word: Tensor,
    /// Position rows `[max_position_embeddings, hidden]`, row-major.
    pos: Vec<f32>,
    /// Token-type row 0 (every input is a single segment).
    type0: Vec<f32>,
    emb_ln: Norm,
    layers: Vec<Layer>,
    hidden: usize,
    heads: usize,
    act: HiddenAct,
}

impl std::fmt::Debug for BertEncoder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BertEncoder")
            .field("hidden", &self.hidden)
            .field("heads", &self.heads)
            .field("layers", &self.layers.len())
            .finish_non_exhaustive()
    }
}

impl BertEncoder {
    /// Loads the same tensor names as candle's `BertModel` (optionally under
    /// `bert.` or `<model_type>.`).
    pub(crate) fn load(vb: VarBuilder<'_>, config: &Config) -> Result<Self> {
        let probe = "embeddings.word_embeddings.weight";
        let vb = if vb.contains_tensor(probe) {
            vb
        } else if vb.contains_tensor(&format!("bert.{probe}")) {
            vb.pp("bert")
        } else if let Some(m) = config
            .model_type
            .as_deref()
            .filter(|m| vb.contains_tensor(&format!("{m}.{probe}")))
        {
            vb.pp(m)
        } else {
            vb
        };
        let h = config.hidden_size;
        let heads = config.num_attention_heads;
        if heads == 0 || !h.is_multiple_of(heads) {
            candle_core::bail!("hidden_size {h} is not a multiple of num_attention_heads {heads}");
        }
        let inter = config.intermediate_size;
        let eps = config.layer_norm_eps;
        let e = vb.pp("embeddings");
        let word = e
            .get((config.vocab_size, h), "word_embeddings.weight")?
            .contiguous()?;
        let pos = e
            .get(
                (config.max_position_embeddings, h),
                "position_embeddings.weight",
            )?
            .flatten_all()?
            .to_vec1()?;
        let type0 = e
            .get((config.type_vocab_size, h), "token_type_embeddings.weight")?
            .get(0)?
            .to_vec1()?;
        let emb_ln = Norm::load(e.pp("LayerNorm"), h, eps)?;
        let scale = 1.0 / ((h / heads) as f64).sqrt();
        let mut layers = Vec::with_capacity(config.num_hidden_layers);
        for i in 0..config.num_hidden_layers {
            let l = vb.pp(format!("encoder.layer.{i}"));
            let a = l.pp("attention");
            let s = a.pp("self");
            let get = |name: &str| -> Result<(Tensor, Tensor)> {
                Ok((
                    s.get((h, h), &format!("{name}.weight"))?,
                    s.get(h, &format!("{name}.bias"))?,
                ))
            };
            let (qw, qb) = get("query")?;
            let (kw, kb) = get("key")?;
            let (vw, vbias) = get("value")?;
            let (qw, qb) = ((qw * scale)?, (qb * scale)?);
            let qkv = Dense {
                w: Tensor::cat(&[&qw, &kw, &vw], 0)?.t()?.contiguous()?,
                b: Tensor::cat(&[&qb, &kb, &vbias], 0)?.to_vec1()?,
            };
            layers.push(Layer {
                qkv,
                out: Dense::load(a.pp("output.dense"), h, h)?,
                ln1: Norm::load(a.pp("output.LayerNorm"), h, eps)?,
                up: Dense::load(l.pp("intermediate.dense"), h, inter)?,
                down: Dense::load(l.pp("output.dense"), inter, h)?,
                ln2: Norm::load(l.pp("output.LayerNorm"), h, eps)?,
            });
        }
        Ok(Self {
            word,
            pos,
            type0,
            emb_ln,
            layers,
            hidden: h,
            heads,
            act: config.hidden_act,
        })
    }

    /// `ids`: `[batch, seq]` (u32, padded); `lens[b]`: real tokens of row
    /// `b`. Returns `[batch, seq, hidden]`.
    pub(crate) fn forward(&self, ids: &Tensor, lens: &[usize]) -> Result<Tensor> {
        let (batch, seq) = ids.dims2()?;
        let h = self.hidden;
        if seq * h > self.pos.len() {
            candle_core::bail!("sequence length {seq} exceeds max_position_embeddings");
        }
        let words = self.word.index_select(&ids.flatten_all()?, 0)?; // [b·s, h]
        let mut x = words.apply_op1_no_bwd(&EmbedLayerNorm {
            pos: &self.pos[..seq * h],
            type0: &self.type0,
            norm: &self.emb_ln,
        })?;
        for layer in &self.layers {
            x = self.layer(layer, &x, batch, seq, lens)?;
        }
        x.reshape((batch, seq, h))
    }

    fn layer(
        &self,
        l: &Layer,
        x: &Tensor,
        batch: usize,
        seq: usize,
        lens: &[usize],
    ) -> Result<Tensor> {
        let h = self.hidden;
        let heads = self.heads;
        let d = h / heads;
        let qkv = x.matmul(&l.qkv.w)?; // [b·s, 3h], no bias yet
        let split = qkv.apply_op1_no_bwd(&SplitHeads {
            bias: &l.qkv.b,
            batch,
            seq,
            heads,
        })?; // [3, b·heads, s, d]
        let (q, k, v) = (split.get(0)?, split.get(1)?, split.get(2)?);
        let items = batch * heads;
        let parts = if items * seq * seq * d >= PAR_MIN_ATTN_MACS {
            rayon::current_num_threads().clamp(1, items)
        } else {
            1
        };
        let ranges: Vec<Range<usize>> = (0..parts)
            .map(|p| (p * items / parts)..((p + 1) * items / parts))
            .collect();
        let attend = |r: &Range<usize>| -> Result<Tensor> {
            let n = r.len();
            let (q, k, v) = (
                q.narrow(0, r.start, n)?,
                k.narrow(0, r.start, n)?,
                v.narrow(0, r.start, n)?,
            );
            let scores = q.matmul(&k.t()?)?; // [n, s, s]
            let probs = scores.apply_op1_no_bwd(&MaskedSoftmax {
                lens,
                heads,
                first_item: r.start,
            })?;
            probs.matmul(&v) // [n, s, d]
        };
        let ctx = if parts == 1 {
            attend(&ranges[0])?
        } else {
            let outs = ranges.par_iter().map(attend).collect::<Result<Vec<_>>>()?;
            Tensor::cat(&outs, 0)?
        };
        // [b, heads, s, d] -> [b, s, heads, d] -> [b·s, h]
        let ctx = ctx
            .reshape((batch, heads, seq, d))?
            .transpose(1, 2)?
            .contiguous()?
            .reshape((batch * seq, h))?;
        let attn = ctx.matmul(&l.out.w)?.apply_op2_no_bwd(
            x,
            &AddLayerNorm {
                bias: &l.out.b,
                norm: &l.ln1,
            },
        )?;
        let up = attn.matmul(&l.up.w)?.apply_op1_no_bwd(&BiasAct {
            bias: &l.up.b,
            act: self.act,
        })?;
        up.matmul(&l.down.w)?.apply_op2_no_bwd(
            &attn,
            &AddLayerNorm {
                bias: &l.down.b,
                norm: &l.ln2,
            },
        )
    }
}

/// The contiguous f32 data of a storage, or an error.
fn f32_data<'a>(s: &'a CpuStorage, l: &Layout, op: &str) -> Result<&'a [f32]> {
    let CpuStorage::F32(v) = s else {
        candle_core::bail!("{op}: expected f32 storage");
    };
    match l.contiguous_offsets() {
        Some((a, b)) => Ok(&v[a..b]),
        None => candle_core::bail!("{op}: input must be contiguous"),
    }
}

/// Runs `f(row_index, out_row)` over rows of `width` floats, in parallel
/// when the output is large enough.
fn for_rows(out: &mut [f32], width: usize, f: impl Fn(usize, &mut [f32]) + Sync) {
    if out.len() >= PAR_MIN_FLOATS {
        let rows_per = (PAR_MIN_FLOATS / 4 / width).max(1);
        out.par_chunks_mut(rows_per * width)
            .enumerate()
            .for_each(|(c, chunk)| {
                for (i, row) in chunk.chunks_exact_mut(width).enumerate() {
                    f(c * rows_per + i, row);
                }
            });
    } else {
        for (i, row) in out.chunks_exact_mut(width).enumerate() {
            f(i, row);
        }
    }
}

/// Sum of a slice with eight independent accumulators (vectorises).
fn sum8(x: &[f32]) -> f32 {
    let mut acc = [0f32; 8];
    let chunks = x.chunks_exact(8);
    let rest = chunks.remainder();
    for c in chunks {
        for (a, v) in acc.iter_mut().zip(c) {
            *a += v;
        }
    }
    acc.iter().sum::<f32>() + rest.iter().sum::<f32>()
}

/// In-place layer norm of one row (`row` already holds the pre-norm sum).
fn layer_norm_row(row: &mut [f32], n: &Norm) {
    let inv = 1.0 / row.len() as f32;
    let mean = sum8(row) * inv;
    for v in row.iter_mut() {
        *v -= mean;
    }
    let mut acc = [0f32; 8];
    let chunks = row.chunks_exact(8);
    let rest: f32 = chunks.remainder().iter().map(|v| v * v).sum();
    for c in chunks {
        for (a, v) in acc.iter_mut().zip(c) {
            *a += v * v;
        }
    }
    let var = (acc.iter().sum::<f32>() + rest) * inv;
    let r = 1.0 / (var + n.eps).sqrt();
    for ((v, g), b) in row.iter_mut().zip(&n.gamma).zip(&n.beta) {
        *v = *v * r * g + b;
    }
}

/// `LayerNorm(word_row + position_row + type0)` for `[b·s, h]` word rows.
struct EmbedLayerNorm<'a> {
    pos: &'a [f32],
    type0: &'a [f32],
    norm: &'a Norm,
}

impl candle_core::CustomOp1 for EmbedLayerNorm<'_> {
    fn name(&self) -> &'static str {
        "bert-embed-layer-norm"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
        let x = f32_data(s, l, self.name())?;
        let (_, h) = l.shape().dims2()?;
        let seq = self.pos.len() / h;
        let mut out = x.to_vec();
        for_rows(&mut out, h, |i, row| {
            let p = &self.pos[(i % seq) * h..(i % seq + 1) * h];
            for ((v, p), t) in row.iter_mut().zip(p).zip(self.type0) {
                *v = *v + t + p;
            }
            layer_norm_row(row, self.norm);
        });
        Ok((CpuStorage::F32(out), l.shape().clone()))
    }
}

/// `LayerNorm(x + bias + residual)`, rows of `h`.
struct AddLayerNorm<'a> {
    bias: &'a [f32],
    norm: &'a Norm,
}

impl candle_core::CustomOp2 for AddLayerNorm<'_> {
    fn name(&self) -> &'static str {
        "bert-add-layer-norm"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let x = f32_data(s1, l1, self.name())?;
        let r = f32_data(s2, l2, self.name())?;
        let (_, h) = l1.shape().dims2()?;
        if l1.shape() != l2.shape() || h != self.bias.len() {
            candle_core::bail!("{}: shape mismatch", self.name());
        }
        let mut out = x.to_vec();
        for_rows(&mut out, h, |i, row| {
            // Same order as `(dense(x) + bias) + residual`.
            for ((v, b), r) in row.iter_mut().zip(self.bias).zip(&r[i * h..(i + 1) * h]) {
                *v = (*v + b) + r;
            }
            layer_norm_row(row, self.norm);
        });
        Ok((CpuStorage::F32(out), l1.shape().clone()))
    }
}

/// `act(x + bias)`, rows of `bias.len()`.
struct BiasAct<'a> {
    bias: &'a [f32],
    act: HiddenAct,
}

impl candle_core::CustomOp1 for BiasAct<'_> {
    fn name(&self) -> &'static str {
        "bert-bias-act"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
        let x = f32_data(s, l, self.name())?;
        let w = self.bias.len();
        if w == 0 || !x.len().is_multiple_of(w) {
            candle_core::bail!("{}: shape mismatch", self.name());
        }
        let mut out = x.to_vec();
        let act = self.act;
        for_rows(&mut out, w, |_, row| {
            for (v, b) in row.iter_mut().zip(self.bias) {
                *v += b;
            }
            match act {
                HiddenAct::Gelu => gelu_erf_in_place(row),
                HiddenAct::GeluApproximate => {
                    for v in row.iter_mut() {
                        let x = *v;
                        *v = 0.5
                            * x
                            * (1.0
                                + ((2.0 / std::f32::consts::PI).sqrt()
                                    * (x + 0.044715 * x * x * x))
                                    .tanh());
                    }
                }
                HiddenAct::Relu => {
                    for v in row.iter_mut() {
                        *v = v.max(0.0);
                    }
                }
            }
        });
        Ok((CpuStorage::F32(out), l.shape().clone()))
    }
}

/// Exact GELU, `x · ½ (1 + erf(x / √2))`, elementwise.
pub(crate) fn gelu_erf_in_place(xs: &mut [f32]) {
    for v in xs.iter_mut() {
        let x = *v;
        *v = 0.5 * x * (1.0 + erf(x * std::f32::consts::FRAC_1_SQRT_2));
    }
}

/// `erf` as a rational approximation on `[-4, 4]` (Eigen / XLA's
/// `generic_fast_erf_float`; |error| below 5e-7, exactly ±1 past ±3.8325).
/// Branch-free, so loops over it vectorise. Plain `a * b + c`, not
/// `mul_add`: without a compile-time FMA target that is a libm call.
#[inline]
fn erf(x: f32) -> f32 {
    let x = x.clamp(-4.0, 4.0);
    let x2 = x * x;
    let mut p = x2 * -2.726_142_3e-10 + 2.770_681_4e-8;
    p = x2 * p + -2.101_024e-6;
    p = x2 * p + -5.692_506_4e-5;
    p = x2 * p + -7.349_906_3e-4;
    p = x2 * p + -2.954_6e-3;
    p = x2 * p + -1.609_603_3e-2;
    p *= x;
    let mut q = x2 * -1.456_607_2e-5 + -2.133_740_6e-4;
    q = x2 * q + -1.682_827e-3;
    q = x2 * q + -7.373_329e-3;
    q = x2 * q + -1.426_474e-2;
    let y = p / q;
    // Past ±3.8325 erf rounds to ±1 in f32; the rational form drifts there.
    if x.abs() > 3.832_507 { x.signum() } else { y }
}

/// `e^x` for the shifted scores of a softmax (`x ≤ 0`; larger inputs are
/// not supported), branch-free so loops over it vectorise (the `libm` call
/// does not). Range reduction `x = n·ln 2 + r` with `|r| ≤ ln 2 / 2`, the
/// degree-6 Taylor polynomial of `e^r` (truncation below 1.3e-7 relative),
/// and `2^n` built from its exponent bits. `n` is rounded with the
/// `1.5 · 2^23` trick, whose low mantissa bits then hold `n` itself. Inputs
/// below −87 are clamped there (e^−87 ≈ 1.6e-38: a probability that vanishes
/// next to the row's maximum, whose own term is 1).
#[inline]
fn exp_nonpositive(x: f32) -> f32 {
    const ROUND: f32 = 12_582_912.0; // 1.5 · 2^23
    const LN2_HI: f32 = 0.693_145_75;
    const LN2_LO: f32 = 1.428_606_8e-6;
    let x = x.clamp(-87.0, 0.0);
    let t = x * std::f32::consts::LOG2_E + ROUND;
    let n = t - ROUND; // round(x · log2 e), an integer in [−126, 0]
    let r = (x - n * LN2_HI) - n * LN2_LO;
    let mut p = r * (1.0 / 720.0) + 1.0 / 120.0;
    p = r * p + 1.0 / 24.0;
    p = r * p + 1.0 / 6.0;
    p = r * p + 0.5;
    p = r * p + 1.0;
    p = r * p + 1.0;
    // t's bits are ROUND's plus n (same binade), so this is n as an integer;
    // n + 127 ≥ 1 keeps 2^n a normal float.
    let n_int = t.to_bits().wrapping_sub(ROUND.to_bits());
    let scale = f32::from_bits(n_int.wrapping_add(127) << 23);
    p * scale
}

/// `qkv [b·s, 3h]` (+ bias) → `[3, b·heads, s, d]`.
struct SplitHeads<'a> {
    bias: &'a [f32],
    batch: usize,
    seq: usize,
    heads: usize,
}

impl candle_core::CustomOp1 for SplitHeads<'_> {
    fn name(&self) -> &'static str {
        "bert-split-heads"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
        let x = f32_data(s, l, self.name())?;
        let (rows, w3) = l.shape().dims2()?;
        let (b, seq, heads) = (self.batch, self.seq, self.heads);
        let h = w3 / 3;
        if rows != b * seq || w3 != 3 * h || h % heads != 0 || self.bias.len() != w3 {
            candle_core::bail!("{}: shape mismatch", self.name());
        }
        let d = h / heads;
        let mut out = vec![0f32; x.len()];
        // One output block per (which, batch, head): `seq` rows of `d`.
        for_rows(&mut out, seq * d, |blk, dst| {
            let which = blk / (b * heads);
            let bi = (blk / heads) % b;
            let hi = blk % heads;
            let col = which * h + hi * d;
            let bias = &self.bias[col..col + d];
            for (t, drow) in dst.chunks_exact_mut(d).enumerate() {
                let src = &x[(bi * seq + t) * w3 + col..][..d];
                for ((o, s), bb) in drow.iter_mut().zip(src).zip(bias) {
                    *o = s + bb;
                }
            }
        });
        Ok((CpuStorage::F32(out), Shape::from((3, b * heads, seq, d))))
    }
}

/// Softmax over the last dim of `[n, s, s]` scores, keys at or past the
/// row's real length getting probability 0 (what HF's additive `finfo.min`
/// mask gives). `first_item` is the `batch·heads` index of item 0.
struct MaskedSoftmax<'a> {
    lens: &'a [usize],
    heads: usize,
    first_item: usize,
}

impl candle_core::CustomOp1 for MaskedSoftmax<'_> {
    fn name(&self) -> &'static str {
        "bert-masked-softmax"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
        let x = f32_data(s, l, self.name())?;
        let (_, seq, seq2) = l.shape().dims3()?;
        if seq != seq2 || seq == 0 {
            candle_core::bail!("{}: scores must be square", self.name());
        }
        let mut out = vec![0f32; x.len()];
        let softmax = |r: usize, row: &mut [f32]| {
            let item = self.first_item + r / seq;
            let len = self
                .lens
                .get(item / self.heads)
                .copied()
                .unwrap_or(seq)
                .clamp(1, seq);
            if r % seq >= len {
                // A padding query: its context row only ever feeds padding
                // rows (no real token attends to a padding key, and every
                // other op is per row), which the heads drop. Leave it 0.
                return;
            }
            let src = &x[r * seq..r * seq + len];
            let max = src.iter().copied().fold(f32::NEG_INFINITY, f32::max);
            let valid = &mut row[..len];
            for (o, s) in valid.iter_mut().zip(src) {
                *o = exp_nonpositive(s - max);
            }
            let inv = 1.0 / sum8(valid);
            for o in valid.iter_mut() {
                *o *= inv;
            }
        };
        // Attention already runs in parallel parts; keep each part serial.
        for (r, row) in out.chunks_exact_mut(seq).enumerate() {
            softmax(r, row);
        }
        Ok((CpuStorage::F32(out), l.shape().clone()))
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use candle_core::Device;

    use super::*;

    #[test]
    fn fast_gelu_matches_candle_gelu_erf() {
        let xs: Vec<f32> = (-80_000..80_000).map(|i| i as f32 * 1e-4).collect();
        let reference = Tensor::new(xs.as_slice(), &Device::Cpu)
            .unwrap()
            .gelu_erf()
            .unwrap()
            .to_vec1::<f32>()
            .unwrap();
        let mut ours = xs.clone();
        gelu_erf_in_place(&mut ours);
        // Within 1e-6 absolute (relative above 1): erf's own error is
        // below 5e-7, amplified by x/2 in the negative tail.
        let worst = reference
            .iter()
            .zip(&ours)
            .map(|(a, b)| (a - b).abs() / a.abs().max(1.0))
            .fold(0f32, f32::max);
        let at = reference
            .iter()
            .zip(&ours)
            .zip(&xs)
            .map(|((a, b), x)| ((a - b).abs() / a.abs().max(1.0), *x, *a, *b))
            .fold(
                (0f32, 0f32, 0f32, 0f32),
                |m, v| if v.0 > m.0 { v } else { m },
            );
        assert!(worst < 1e-6, "max relative gelu diff {worst} at {at:?}");
        assert_eq!(erf(10.0), 1.0);
        assert_eq!(erf(-10.0), -1.0);
    }

    #[test]
    fn fast_exp_matches_libm_on_softmax_inputs() {
        let mut worst = (0f64, 0f32);
        for i in 0..=2_000_000 {
            let x = -87.0 * i as f32 / 2_000_000.0;
            let reference = f64::from(x).exp();
            let ours = f64::from(exp_nonpositive(x));
            let rel = (ours - reference).abs() / reference;
            if rel > worst.0 {
                worst = (rel, x);
            }
        }
        assert!(worst.0 < 4e-7, "max relative exp error {worst:?}");
        assert_eq!(exp_nonpositive(0.0), 1.0);
        assert_eq!(exp_nonpositive(-0.0), 1.0);
        // Clamped, never 0 / NaN / garbage past the range.
        assert!(exp_nonpositive(-1e30) > 0.0 && exp_nonpositive(-1e30) < 1e-37);
        assert!(exp_nonpositive(f32::NEG_INFINITY) < 1e-37);
    }
}
