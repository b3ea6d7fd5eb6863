//! Transformer checkpoints: loading, the trunk forward pass, and the heads.
#![doc = include_str!("../docs/heads.md")]

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Tensor};
use candle_nn::VarBuilder;
use candle_transformers::models::bert::{BertModel, Config as BertConfig};
use serde::Deserialize;

use crate::bert::BertEncoder;
use crate::config::{ModelSource, Pooling, in_range};
use crate::error::LoadError;

/// A dense head reading the trunk output.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(crate) enum PooledHead {
    Mean,
    Cls,
    Cause,
    Effect,
}

/// The trunk: the fused CPU encoder, or candle's `BertModel` elsewhere.
enum Trunk {
    Cpu(BertEncoder),
    Candle(BertModel),
}

/// A loaded BERT-family checkpoint.
pub(crate) struct Checkpoint {
    model: Trunk,
    pub(crate) hidden: usize,
    pub(crate) max_len: usize,
    pub(crate) pooling: Pooling,
    pub(crate) weight_bytes: u64,
    pub(crate) vocab_size: usize,
    pad_id: u32,
    device: Device,
}

impl std::fmt::Debug for Checkpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Checkpoint")
            .field("hidden", &self.hidden)
            .field("max_len", &self.max_len)
            .field("pooling", &self.pooling)
            .field("weight_bytes", &self.weight_bytes)
            .finish_non_exhaustive()
    }
}

#[derive(Deserialize)]
struct SentenceBertConfig {
    max_seq_length: Option<usize>,
}

#[derive(Deserialize)]
struct PoolingConfig {
    #[serde(default)]
    pooling_mode_cls_token: bool,
    #[serde(default)]
    pooling_mode_mean_tokens: bool,
    #[serde(default)]
    pooling_mode_max_tokens: bool,
    #[serde(default)]
    pooling_mode_mean_sqrt_len_tokens: bool,
}

fn read_json<T: for<'de> Deserialize<'de>>(path: &Path) -> Result<T, LoadError> {
    let text = std::fs::read_to_string(path).map_err(|e| LoadError::Io {
        path: path.to_owned(),
        reason: e.to_string(),
    })?;
    serde_json::from_str(&text).map_err(|e| LoadError::BadModelConfig {
        path: path.to_owned(),
        reason: e.to_string(),
    })
}

fn required(model: &str, dir: &Path, file: &str) -> Result<PathBuf, LoadError> {
    let path = dir.join(file);
    if path.is_file() {
        Ok(path)
    } else {
        Err(LoadError::ModelFileNotFound {
            model: model.to_owned(),
            path,
        })
    }
}

/// Paths of the files a checkpoint needs, checked to exist.
pub(crate) fn tokenizer_path(model: &str, dir: &Path) -> Result<PathBuf, LoadError> {
    required(model, dir, "tokenizer.json")
}

impl Checkpoint {
    /// Loads `config.json`, `model.safetensors`, and the optional
    /// `sentence_bert_config.json` and `1_Pooling/config.json`.
    pub(crate) fn load(
        model: &str,
        dir: &Path,
        source: &ModelSource,
        device: &Device,
    ) -> Result<Self, LoadError> {
        let config_path = required(model, dir, "config.json")?;
        let weights_path = required(model, dir, "model.safetensors")?;
        let config: BertConfig = read_json(&config_path)?;
        let bad = |reason: String| LoadError::BadModelConfig {
            path: config_path.clone(),
            reason,
        };
        // Every field we read, in a range no real BERT-family checkpoint
        // leaves and no product of which overflows.
        for (key, value, range) in [
            ("hidden_size", config.hidden_size, 1..=16_384),
            ("num_attention_heads", config.num_attention_heads, 1..=256),
            ("num_hidden_layers", config.num_hidden_layers, 1..=256),
            ("intermediate_size", config.intermediate_size, 1..=65_536),
            ("vocab_size", config.vocab_size, 1..=1 << 21),
            (
                "max_position_embeddings",
                config.max_position_embeddings,
                2..=1 << 16,
            ),
            ("type_vocab_size", config.type_vocab_size, 1..=16),
        ] {
            in_range(key, value, range).map_err(|e| bad(e.to_string()))?;
        }
        if !config
            .hidden_size
            .is_multiple_of(config.num_attention_heads)
        {
            return Err(bad(format!(
                "hidden_size {} must be a positive multiple of num_attention_heads {}",
                config.hidden_size, config.num_attention_heads
            )));
        }
        let st_path = dir.join("sentence_bert_config.json");
        let st_max = if st_path.is_file() {
            read_json::<SentenceBertConfig>(&st_path)?.max_seq_length
        } else {
            None
        };
        let max_len = source
            .max_seq_length
            .or(st_max)
            .unwrap_or(config.max_position_embeddings)
            .min(config.max_position_embeddings);
        let pool_path = dir.join("1_Pooling").join("config.json");
        let pooling = if pool_path.is_file() {
            let p: PoolingConfig = read_json(&pool_path)?;
            match (
                p.pooling_mode_mean_tokens,
                p.pooling_mode_cls_token,
                p.pooling_mode_max_tokens || p.pooling_mode_mean_sqrt_len_tokens,
            ) {
                (true, false, false) => Pooling::Mean,
                (false, true, false) => Pooling::Cls,
                _ => {
                    return Err(LoadError::BadModelConfig {
                        path: pool_path,
                        reason: "only one of mean or CLS pooling is supported".into(),
                    });
                }
            }
        } else {
            Pooling::Mean
        };

        let bytes = std::fs::read(&weights_path).map_err(|e| LoadError::Io {
            path: weights_path.clone(),
            reason: e.to_string(),
        })?;
        let corrupt = |reason: String| LoadError::CorruptWeights {
            path: weights_path.clone(),
            reason,
        };
        let tensors: HashMap<String, Tensor> =
            std::panic::catch_unwind(|| candle_core::safetensors::load_buffer(&bytes, device))
                .map_err(|_| corrupt("the safetensors reader panicked".into()))?
                .map_err(|e| corrupt(e.to_string()))?;
        drop(bytes);
        let weight_bytes = tensors
            .values()
            .map(|t| (t.elem_count() * DType::F32.size_in_bytes()) as u64)
            .sum();
        let vb = VarBuilder::from_tensors(tensors, DType::F32, device);
        let model = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            if device.is_cpu() {
                BertEncoder::load(vb, &config).map(Trunk::Cpu)
            } else {
                BertModel::load(vb, &config).map(Trunk::Candle)
            }
        }))
        .map_err(|_| corrupt("loading the tensors panicked".into()))?
        .map_err(|e| LoadError::WeightsMismatch {
            path: weights_path.clone(),
            reason: e.to_string(),
        })?;
        Ok(Self {
            model,
            hidden: config.hidden_size,
            max_len,
            pooling,
            weight_bytes,
            vocab_size: config.vocab_size,
            pad_id: u32::try_from(config.pad_token_id).unwrap_or(0),
            device: device.clone(),
        })
    }

    /// Runs the trunk on one chunk of id sequences (each already truncated
    /// and with special tokens). Returns `[batch, longest, hidden]`.
    pub(crate) fn forward(&self, ids: &[Vec<u32>]) -> candle_core::Result<Tensor> {
        let batch = ids.len();
        let longest = ids.iter().map(Vec::len).max().unwrap_or(0).max(1);
        let mut flat = vec![self.pad_id; batch * longest];
        for (row, seq) in ids.iter().enumerate() {
            flat[row * longest..row * longest + seq.len()].copy_from_slice(seq);
        }
        let input = Tensor::from_vec(flat, (batch, longest), &self.device)?;
        match &self.model {
            // Our encoder masks by each row's length; no mask tensor.
            Trunk::Cpu(encoder) => {
                let lens: Vec<usize> = ids.iter().map(Vec::len).collect();
                encoder.forward(&input, &lens)
            }
            Trunk::Candle(model) => {
                let mut mask = vec![0u32; batch * longest];
                for (row, seq) in ids.iter().enumerate() {
                    mask[row * longest..row * longest + seq.len()].fill(1);
                }
                let mask = Tensor::from_vec(mask, (batch, longest), &self.device)?;
                let types = input.zeros_like()?;
                model.forward(&input, &types, Some(&mask))
            }
        }
    }
}

/// L2-normalises along the last dimension (`x / max(‖x‖, 1e-12)`).
pub(crate) fn l2_normalize(x: &Tensor) -> candle_core::Result<Tensor> {
    let norm = x
        .sqr()?
        .sum_keepdim(candle_core::D::Minus1)?
        .sqrt()?
        .clamp(1e-12, f64::MAX)?;
    x.broadcast_div(&norm)
}

/// One pooled head's vectors for a chunk: each row L2-normalised, and the
/// length it had before (`vectors[r] * norms[r]` is the raw pooling).
pub(crate) struct PooledRows {
    pub(crate) vectors: Vec<Vec<f32>>,
    pub(crate) norms: Vec<f32>,
}

/// Pooled heads over a trunk output. `lens[b]` is the number of real tokens
/// of row `b`. Returns one [`PooledRows`] per head.
pub(crate) fn pooled(
    hidden: &Tensor,
    lens: &[usize],
    heads: &[PooledHead],
) -> candle_core::Result<Vec<PooledRows>> {
    let (batch, longest, _) = hidden.dims3()?;
    let k = heads.len();
    let mut w = vec![0f32; batch * k * longest];
    for (b, &n) in lens.iter().enumerate() {
        let n = n.clamp(1, longest);
        for (h, head) in heads.iter().enumerate() {
            let row = &mut w[(b * k + h) * longest..(b * k + h + 1) * longest];
            for (i, slot) in row.iter_mut().enumerate().take(n) {
                let u = if n == 1 {
                    0.5
                } else {
                    i as f32 / (n - 1) as f32
                };
                *slot = match head {
                    PooledHead::Mean => 1.0 / n as f32,
                    PooledHead::Cls => f32::from(u8::from(i == 0)),
                    PooledHead::Cause => 1.5 - u,
                    PooledHead::Effect => 0.5 + u,
                };
            }
        }
    }
    let w = Tensor::from_vec(w, (batch, k, longest), hidden.device())?;
    let raw = w.matmul(hidden)?; // [batch, k, hidden]
    let norms = raw
        .sqr()?
        .sum(candle_core::D::Minus1)?
        .sqrt()?
        .to_vec2::<f32>()?;
    let rows = l2_normalize(&raw)?.to_vec3::<f32>()?;
    let mut out: Vec<PooledRows> = (0..k)
        .map(|_| PooledRows {
            vectors: Vec::with_capacity(batch),
            norms: Vec::with_capacity(batch),
        })
        .collect();
    for (row, row_norms) in rows.into_iter().zip(norms) {
        for ((v, n), head) in row.into_iter().zip(row_norms).zip(out.iter_mut()) {
            head.vectors.push(v);
            head.norms.push(n);
        }
    }
    Ok(out)
}

/// Per-token vectors (late interaction): optional projection `[hidden, p]`,
/// then each token L2-normalised; padding dropped. Returns `(dim, rows)` with
/// each row `lens[b] * dim` floats.
pub(crate) fn per_token(
    hidden: &Tensor,
    lens: &[usize],
    projection: Option<&Tensor>,
) -> candle_core::Result<(usize, Vec<Vec<f32>>)> {
    let (batch, longest, h) = hidden.dims3()?;
    let x = match projection {
        Some(p) => {
            hidden
                .reshape((batch * longest, h))?
                .matmul(p)?
                .reshape((batch, longest, ()))?
        }
        None => hidden.clone(),
    };
    let dim = x.dim(2)?;
    let x = l2_normalize(&x)?;
    let rows = x.to_vec3::<f32>()?;
    let out = rows
        .into_iter()
        .zip(lens)
        .map(|(tokens, &n)| tokens.into_iter().take(n).flatten().collect())
        .collect();
    Ok((dim, out))
}
