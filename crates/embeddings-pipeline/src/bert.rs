//! A BERT encoder for the CPU, numerically equivalent to
//! `candle_transformers::models::bert::BertModel` (itself a port of Hugging
//! Face's `BertModel`), on plain `f32` buffers:
//!
//! * Q, K and V are one matmul against a concatenated `[hidden, 3·hidden]`
//!   weight; the `1/√d` attention scale is folded into the Q weight and bias
//!   at load time.
//! * the products against the weights run over the real tokens of every
//!   input back to back, no padding row among them (`Tokens`);
//! * those products use the weights packed at load for the AVX-512 or
//!   AVX2/FMA kernel of `packed.rs` where the CPU has one, and otherwise
//!   the `gemm` kernel through `matmul.rs`, as do the attention products
//!   (not candle's `Tensor::matmul`, which re-reads `/proc/cpuinfo` on
//!   every call);
//! * every step of a pass is split across one thread team (`team.rs`):
//!   products by columns or rows (`dense.rs`), row passes by rows,
//!   attention by items; the helpers wake once per pass, not once per step;
//! * one pass adds the QKV bias and splits the heads, one adds bias +
//!   residual and layer-norms, one adds bias and applies the exact (erf)
//!   GELU (`bert_kernels.rs`);
//! * attention runs per `(input, head)` item over the input's real tokens
//!   only: padding keys would get probability 0 and padding queries only
//!   feed padding rows, which the heads drop (their context rows stay 0);
//! * the buffers of a forward pass are allocated once per pass, not per op.
//!
//! CPU only: other devices use candle's `BertModel` (see `transformer.rs`).

use candle_core::{Device, Result, Tensor};
use candle_nn::VarBuilder;
use candle_transformers::models::bert::{Config, HiddenAct};

use crate::bert_kernels::{
    Norm, gelu_erf_in_place, gelu_tanh_in_place, layer_norm_row, softmax_into,
};
use crate::dense::Dense;
use crate::matmul::{Mat, matmul};
use crate::team::{Shared, Team, split};

fn load_norm(vb: VarBuilder<'_>, h: usize, eps: f64) -> Result<Norm> {
    Ok(Norm {
        gamma: vb.get(h, "weight")?.to_vec1()?,
        beta: vb.get(h, "bias")?.to_vec1()?,
        eps: eps as f32,
    })
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
    /// Word rows `[vocab, hidden]`, row-major.
    word: Vec<f32>,
    vocab: usize,
    /// Position rows `[max_position_embeddings, hidden]`, row-major.
    pos: Vec<f32>,
    /// Token-type row 0 (every input is a single segment).
    type0: Vec<f32>,
    emb_ln: Norm,
    layers: Vec<Layer>,
    hidden: usize,
    inter: usize,
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

/// The working buffers of one forward pass, allocated once per pass.
struct Buffers {
    /// `[rows, 3h]`: the QKV product.
    qkv: Vec<f32>,
    /// `[3, batch·heads, seq, d]`: Q, K, V split by head, bias added.
    split: Vec<f32>,
    /// `[batch·heads, seq, d]`: attention context per head.
    ctx: Vec<f32>,
    /// `[rows, h]`: the heads merged back.
    merged: Vec<f32>,
    /// `[rows, h]`: after attention (+ residual, layer norm).
    attn: Vec<f32>,
    /// `[rows, inter]`: the feed-forward's inner activation.
    up: Vec<f32>,
}

impl BertEncoder {
    /// Loads the same tensor names as candle's `BertModel` (optionally under
    /// `bert.` or `<model_type>.`), with the weights packed for the AVX-512
    /// or AVX2/FMA kernel where this CPU has one.
    pub(crate) fn load(vb: VarBuilder<'_>, config: &Config) -> Result<Self> {
        Self::load_with(vb, config, crate::packed::available())
    }

    /// `load`, choosing the weight layout: packed panels or plain for
    /// `gemm` (tests compare the two on one CPU).
    fn load_with(vb: VarBuilder<'_>, config: &Config, packed: bool) -> Result<Self> {
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
            .flatten_all()?
            .to_vec1()?;
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
        let emb_ln = load_norm(e.pp("LayerNorm"), h, eps)?;
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
            let qkv = Dense::new(
                Tensor::cat(&[&qw, &kw, &vw], 0)?
                    .t()?
                    .contiguous()?
                    .flatten_all()?
                    .to_vec1()?,
                Tensor::cat(&[&qb, &kb, &vbias], 0)?.to_vec1()?,
                h,
                3 * h,
                packed,
            )?;
            layers.push(Layer {
                qkv,
                out: Dense::load(a.pp("output.dense"), h, h, packed)?,
                ln1: load_norm(a.pp("output.LayerNorm"), h, eps)?,
                up: Dense::load(l.pp("intermediate.dense"), h, inter, packed)?,
                down: Dense::load(l.pp("output.dense"), inter, h, packed)?,
                ln2: load_norm(l.pp("output.LayerNorm"), h, eps)?,
            });
        }
        Ok(Self {
            word,
            vocab: config.vocab_size,
            inter,
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
    /// `b`. Returns `[batch, seq, hidden]`; rows past a length are padding,
    /// never computed, and 0.
    pub(crate) fn forward(&self, ids: &Tensor, lens: &[usize]) -> Result<Tensor> {
        let (batch, seq) = ids.dims2()?;
        let ids = ids.flatten_all()?.to_vec1::<u32>()?;
        let x = self.forward_ids(&ids, batch, seq, lens)?;
        Tensor::from_vec(x, (batch, seq, self.hidden), &Device::Cpu)
    }

    fn forward_ids(
        &self,
        ids: &[u32],
        batch: usize,
        seq: usize,
        lens: &[usize],
    ) -> Result<Vec<f32>> {
        let h = self.hidden;
        let rows = batch * seq;
        if seq * h > self.pos.len() {
            candle_core::bail!("sequence length {seq} exceeds max_position_embeddings");
        }
        if ids.len() != rows || lens.len() != batch {
            candle_core::bail!(
                "{} ids and {} lengths for a {batch}x{seq} batch",
                ids.len(),
                lens.len()
            );
        }
        if let Some(bad) = ids.iter().find(|&&id| id as usize >= self.vocab) {
            candle_core::bail!(
                "token id {bad} is outside the vocabulary ({} ids)",
                self.vocab
            );
        }
        let lens: Vec<usize> = lens.iter().map(|&l| l.clamp(1, seq)).collect();
        let tokens = Tokens::new(batch, seq, &lens);
        // One team for the whole pass: helpers wake once, not per step.
        let x = Team::run(rayon::current_num_threads(), |team| {
            self.pass(team, ids, &tokens)
        })?;
        // Back to `[batch, seq, hidden]`; padding rows stay 0.
        let mut out = vec![0f32; rows * h];
        for (r, &(bi, t)) in tokens.at.iter().enumerate() {
            out[(bi * seq + t) * h..][..h].copy_from_slice(&x[r * h..(r + 1) * h]);
        }
        Ok(out)
    }

    /// The pass over the real tokens only: `[tokens.rows, hidden]`.
    fn pass(&self, team: &Team, ids: &[u32], tokens: &Tokens<'_>) -> Result<Vec<f32>> {
        let h = self.hidden;
        let rows = tokens.rows();
        let seq = tokens.seq;
        // Embeddings: word + position + token type 0, layer-normed.
        let mut x = vec![0f32; rows * h];
        rows_phase(team, &mut x, h, |r, row| {
            let (bi, t) = tokens.at[r];
            let id = ids[bi * seq + t] as usize;
            let word = &self.word[id * h..(id + 1) * h];
            let pos = &self.pos[t * h..(t + 1) * h];
            for (((v, w), p), ty) in row.iter_mut().zip(word).zip(pos).zip(&self.type0) {
                *v = *w + ty + p;
            }
            layer_norm_row(row, &self.emb_ln);
        });
        // Attention's buffers keep one `seq`-row block per (input, head).
        let padded = tokens.batch * seq;
        let mut b = Buffers {
            qkv: vec![0f32; rows * 3 * h],
            split: vec![0f32; padded * 3 * h],
            ctx: vec![0f32; padded * h],
            merged: vec![0f32; rows * h],
            attn: vec![0f32; rows * h],
            up: vec![0f32; rows * self.inter],
        };
        for layer in &self.layers {
            self.layer(team, layer, &mut x, &mut b, tokens)?;
        }
        Ok(x)
    }

    /// One encoder layer, `x` in place.
    fn layer(
        &self,
        team: &Team,
        l: &Layer,
        x: &mut [f32],
        b: &mut Buffers,
        tokens: &Tokens<'_>,
    ) -> Result<()> {
        let h = self.hidden;
        let heads = self.heads;
        let d = h / heads;
        let rows = tokens.rows();
        let seq = tokens.seq;
        l.qkv.apply(team, x, rows, &mut b.qkv)?;
        split_heads(team, &b.qkv, &l.qkv.b, &mut b.split, tokens, heads);
        self.attention(team, &b.split, &mut b.ctx, tokens.batch, seq, tokens.lens)?;
        // [batch, heads, seq, d] -> [tokens, heads·d]
        rows_phase(team, &mut b.merged, h, |r, row| {
            let (bi, t) = tokens.at[r];
            for (hi, dst) in row.chunks_exact_mut(d).enumerate() {
                let src = ((bi * heads + hi) * seq + t) * d;
                dst.copy_from_slice(&b.ctx[src..src + d]);
            }
        });
        l.out.apply(team, &b.merged, rows, &mut b.attn)?;
        add_layer_norm(team, &mut b.attn, &l.out.b, x, &l.ln1);
        l.up.apply(team, &b.attn, rows, &mut b.up)?;
        let act = self.act;
        rows_phase(team, &mut b.up, self.inter, |_, row| {
            for (v, bias) in row.iter_mut().zip(&l.up.b) {
                *v += bias;
            }
            match act {
                HiddenAct::Gelu => gelu_erf_in_place(row),
                HiddenAct::GeluApproximate => gelu_tanh_in_place(row),
                HiddenAct::Relu => row.iter_mut().for_each(|v| *v = v.max(0.0)),
            }
        });
        l.down.apply(team, &b.up, rows, x)?;
        add_layer_norm(team, x, &l.down.b, &b.attn, &l.ln2);
        Ok(())
    }

    /// Scaled dot-product attention per `(input, head)` item over the
    /// input's real tokens; context rows of padding queries are 0. Items
    /// are split across the team.
    fn attention(
        &self,
        team: &Team,
        split_qkv: &[f32],
        ctx: &mut [f32],
        batch: usize,
        seq: usize,
        lens: &[usize],
    ) -> Result<()> {
        let heads = self.heads;
        let d = self.hidden / heads;
        let items = batch * heads;
        let block = seq * d;
        let (q, rest) = split_qkv.split_at(items * block);
        let (k, v) = rest.split_at(items * block);
        let one = |item: usize, out: &mut [f32], scores: &mut Vec<f32>| -> Result<()> {
            let len = lens[item / heads];
            let at = item * block;
            let (q, k, v) = (
                &q[at..at + len * d],
                &k[at..at + len * d],
                &v[at..at + len * d],
            );
            scores.resize(2 * len * len, 0.0);
            let (raw, probs) = scores.split_at_mut(len * len);
            matmul(raw, len, Mat::rows(q, len, d), Mat::transposed(k, d, len))?;
            for (s, p) in raw.chunks_exact(len).zip(probs.chunks_exact_mut(len)) {
                softmax_into(s, p);
            }
            matmul(
                &mut out[..len * d],
                d,
                Mat::rows(probs, len, len),
                Mat::rows(v, len, d),
            )?;
            out[len * d..].fill(0.0);
            Ok(())
        };
        let chunks = team.chunks();
        let shared = Shared::new(ctx);
        team.try_phase(&|piece| {
            let r = split(items, chunks, piece, 1);
            // SAFETY: `split` gives each piece its own items' blocks.
            let Some(mine) = (unsafe { shared.block(r.start * block..r.end * block) }) else {
                return Err(candle_core::Error::Msg(
                    "attention: items past the output".into(),
                ));
            };
            let mut scores = Vec::new();
            for (i, out) in mine.chunks_exact_mut(block).enumerate() {
                one(r.start + i, out, &mut scores)?;
            }
            Ok(())
        })
    }
}

/// `f(row_index, row)` over the rows of `width` in `buf`, split across the
/// team.
fn rows_phase(team: &Team, buf: &mut [f32], width: usize, f: impl Fn(usize, &mut [f32]) + Sync) {
    if width == 0 {
        return;
    }
    let n = buf.len() / width;
    let chunks = team.chunks();
    let shared = Shared::new(buf);
    team.phase(&|piece| {
        let r = split(n, chunks, piece, 1);
        // SAFETY: `split` gives each piece its own rows.
        if let Some(block) = unsafe { shared.block(r.start * width..r.end * width) } {
            for (i, row) in block.chunks_exact_mut(width).enumerate() {
                f(r.start + i, row);
            }
        }
    });
}

/// `qkv [tokens, 3h]` (+ bias) → `split [3, b·heads, s, d]`; the rows past
/// each input's length are left as they are (attention never reads them).
fn split_heads(
    team: &Team,
    qkv: &[f32],
    bias: &[f32],
    out: &mut [f32],
    tokens: &Tokens<'_>,
    heads: usize,
) {
    let (batch, seq) = (tokens.batch, tokens.seq);
    let w3 = bias.len();
    let h = w3 / 3;
    let d = h / heads;
    // One output block per (which, batch, head): `seq` rows of `d`.
    rows_phase(team, out, seq * d, |blk, dst| {
        let which = blk / (batch * heads);
        let bi = (blk / heads) % batch;
        let hi = blk % heads;
        let col = which * h + hi * d;
        let bias = &bias[col..col + d];
        let first = tokens.starts[bi];
        for (t, drow) in dst.chunks_exact_mut(d).take(tokens.lens[bi]).enumerate() {
            let src = &qkv[(first + t) * w3 + col..][..d];
            for ((o, s), bb) in drow.iter_mut().zip(src).zip(bias) {
                *o = s + bb;
            }
        }
    });
}

/// Where the real tokens of a padded `[batch, seq]` batch go: the products
/// and row passes run over them back to back, no padding row among them
/// (short inputs of mixed lengths padded to the longest were ~28 % padding
/// at batch 32 in `benches/data/sentences.json`).
struct Tokens<'a> {
    batch: usize,
    seq: usize,
    /// Real tokens per input, each in `1..=seq`.
    lens: &'a [usize],
    /// The first row of each input among the real tokens.
    starts: Vec<usize>,
    /// `(input, position)` of each real-token row.
    at: Vec<(usize, usize)>,
}

impl<'a> Tokens<'a> {
    fn new(batch: usize, seq: usize, lens: &'a [usize]) -> Self {
        let mut starts = Vec::with_capacity(batch);
        let mut at = Vec::with_capacity(lens.iter().sum());
        for (bi, &len) in lens.iter().enumerate() {
            starts.push(at.len());
            at.extend((0..len).map(|t| (bi, t)));
        }
        Self {
            batch,
            seq,
            lens,
            starts,
            at,
        }
    }

    /// Real tokens in all.
    fn rows(&self) -> usize {
        self.at.len()
    }
}

/// `x = LayerNorm((x + bias) + residual)`, rows of `bias.len()`.
fn add_layer_norm(team: &Team, x: &mut [f32], bias: &[f32], residual: &[f32], norm: &Norm) {
    let h = bias.len();
    rows_phase(team, x, h, |i, row| {
        // Same order as `(dense(x) + bias) + residual`.
        for ((v, b), r) in row.iter_mut().zip(bias).zip(&residual[i * h..(i + 1) * h]) {
            *v = (*v + b) + r;
        }
        layer_norm_row(row, norm);
    });
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use std::collections::HashMap;

    use candle_core::DType;
    use candle_transformers::models::bert::BertModel;

    use super::*;

    /// A small BERT (2 layers, hidden 40 = 2 heads of 20, a partial last
    /// panel in every product) with deterministic weights.
    fn tiny() -> (Config, HashMap<String, Tensor>) {
        let config: Config = serde_json::from_value(serde_json::json!({
            "vocab_size": 50, "hidden_size": 40, "num_hidden_layers": 2,
            "num_attention_heads": 2, "intermediate_size": 72,
            "hidden_act": "gelu", "hidden_dropout_prob": 0.0,
            "max_position_embeddings": 64, "type_vocab_size": 2,
            "initializer_range": 0.02, "layer_norm_eps": 1e-12,
            "pad_token_id": 0, "classifier_dropout": null, "model_type": "bert"
        }))
        .unwrap();
        let (h, i) = (40, 72);
        let mut shapes: Vec<(String, Vec<usize>)> = vec![
            ("embeddings.word_embeddings.weight".into(), vec![50, h]),
            ("embeddings.position_embeddings.weight".into(), vec![64, h]),
            ("embeddings.token_type_embeddings.weight".into(), vec![2, h]),
        ];
        let norm = |p: &str, v: &mut Vec<(String, Vec<usize>)>| {
            v.push((format!("{p}.weight"), vec![h]));
            v.push((format!("{p}.bias"), vec![h]));
        };
        let dense = |p: &str, o: usize, n: usize, v: &mut Vec<(String, Vec<usize>)>| {
            v.push((format!("{p}.weight"), vec![o, n]));
            v.push((format!("{p}.bias"), vec![o]));
        };
        norm("embeddings.LayerNorm", &mut shapes);
        for l in 0..2 {
            let p = format!("encoder.layer.{l}");
            for m in ["query", "key", "value"] {
                dense(&format!("{p}.attention.self.{m}"), h, h, &mut shapes);
            }
            dense(&format!("{p}.attention.output.dense"), h, h, &mut shapes);
            norm(&format!("{p}.attention.output.LayerNorm"), &mut shapes);
            dense(&format!("{p}.intermediate.dense"), i, h, &mut shapes);
            dense(&format!("{p}.output.dense"), h, i, &mut shapes);
            norm(&format!("{p}.output.LayerNorm"), &mut shapes);
        }
        let mut seed = 7u32;
        let tensors = shapes
            .into_iter()
            .map(|(name, shape)| {
                let n = shape.iter().product::<usize>();
                let values: Vec<f32> = (0..n)
                    .map(|_| {
                        seed = seed.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
                        let r = (seed >> 8) as f32 / (1u32 << 24) as f32 - 0.5;
                        // LayerNorm gains near 1, everything else small.
                        if name.ends_with("LayerNorm.weight") {
                            1.0 + 0.2 * r
                        } else {
                            0.4 * r
                        }
                    })
                    .collect();
                (name, Tensor::from_vec(values, shape, &Device::Cpu).unwrap())
            })
            .collect();
        (config, tensors)
    }

    #[test]
    fn packed_and_plain_layouts_match_candles_bert_on_the_real_tokens() {
        let (config, tensors) = tiny();
        let vb = || VarBuilder::from_tensors(tensors.clone(), DType::F32, &Device::Cpu);
        let candle = BertModel::load(vb(), &config).unwrap();
        let mut encoders = vec![(
            "plain",
            BertEncoder::load_with(vb(), &config, false).unwrap(),
        )];
        if crate::packed::available() {
            encoders.push((
                "packed",
                BertEncoder::load_with(vb(), &config, true).unwrap(),
            ));
        }
        // Batches of mixed lengths (one input, the longest first or last,
        // one token), each padded to its longest: the real-token rows must
        // match candle's masked pass, and padding rows are not computed (0).
        let batches: [&[usize]; 4] = [&[5, 3], &[1], &[2, 7, 1], &[4, 4]];
        for lens in batches {
            let (batch, seq) = (lens.len(), lens.iter().copied().max().unwrap());
            let ids: Vec<u32> = (0..batch * seq)
                .map(|i| {
                    if i % seq < lens[i / seq] {
                        1 + (i as u32 * 7) % 49
                    } else {
                        0
                    }
                })
                .collect();
            let input = Tensor::from_vec(ids, (batch, seq), &Device::Cpu).unwrap();
            let mask: Vec<u32> = (0..batch * seq)
                .map(|i| u32::from(i % seq < lens[i / seq]))
                .collect();
            let mask = Tensor::from_vec(mask, (batch, seq), &Device::Cpu).unwrap();
            let want: Vec<f32> = candle
                .forward(&input, &input.zeros_like().unwrap(), Some(&mask))
                .unwrap()
                .flatten_all()
                .unwrap()
                .to_vec1()
                .unwrap();
            for (name, encoder) in &encoders {
                let got: Vec<f32> = encoder
                    .forward(&input, lens)
                    .unwrap()
                    .flatten_all()
                    .unwrap()
                    .to_vec1()
                    .unwrap();
                for r in 0..batch * seq {
                    let row = &got[r * 40..(r + 1) * 40];
                    if r % seq >= lens[r / seq] {
                        assert!(row.iter().all(|&v| v == 0.0), "{name} {lens:?} row {r}");
                        continue;
                    }
                    for (c, (g, w)) in row.iter().zip(&want[r * 40..]).enumerate() {
                        assert!(
                            (g - w).abs() < 1e-4,
                            "{name} {lens:?} ({r},{c}): {g} vs {w}"
                        );
                    }
                }
            }
        }
    }
}
