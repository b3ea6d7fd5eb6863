//! The stages every request goes through, each written once: tokenize,
//! compute (chunks of forward passes, heads, built-in slots, fusion) and
//! the output of one item. Each records its own figures, once.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Instant;

use embeddings_metrics::PipelineMetrics;
use embeddings_types::{ErrorKind, ModelId, Stage};

use crate::builtin;
use crate::config::TruncationPolicy;
use crate::engine::{Engine, Item, SlotHead};
use crate::error::{InputError, PipelineError};
use crate::input::unix_seconds;
use crate::options::{Resolved, SlotMask, TruncationDirection};
use crate::output::{CausalPair, MultiEmbedding, SlotOutput, TokenVectors};
use crate::tokenize::Tokens;
use crate::transformer::{self, PooledHead};

impl Engine {
    /// Tokenizes the valid `items` for the plans and built-in slots in
    /// `run`, recording the `tokenization` stage once per call. Items that
    /// fail get their error; the others are unaffected. Returns the tokens
    /// the transformers will see.
    pub(crate) fn tokenize(
        &self,
        items: &mut [Item],
        run: SlotMask,
        direction: TruncationDirection,
        rec: Option<&PipelineMetrics>,
    ) -> usize {
        if items.iter().all(|it| it.error.is_some()) {
            return 0; // nothing to tokenize, nothing to time
        }
        let start = Instant::now();
        let texts: Vec<&str> = items
            .iter()
            .map(|it| {
                if it.error.is_none() {
                    it.text.as_str()
                } else {
                    ""
                }
            })
            .collect();
        let wants_builtin_ids = run.contains(ModelId::Sparse) || run.contains(ModelId::Hdc);
        let builtin_tokenizer = self.builtin_tokenizer.filter(|_| wants_builtin_ids);
        // Tokenize once per tokenizer that is used.
        let mut used: Vec<usize> = self
            .plans
            .iter()
            .filter(|p| Self::plan_runs(p, run))
            .map(|p| p.model)
            .collect();
        used.extend(builtin_tokenizer);
        used.sort_unstable();
        used.dedup();
        let mut encodings: BTreeMap<usize, Vec<Result<Tokens, String>>> = BTreeMap::new();
        for &m in &used {
            if let Some(tok) = &self.models[m].tokenizer {
                encodings.insert(m, tok.encode_all(&texts));
            }
        }
        let mut tokens = 0;
        for (pos, item) in items.iter_mut().enumerate() {
            if item.error.is_some() {
                continue;
            }
            let index = item.index;
            item.ids = vec![Vec::new(); self.plans.len()];
            for (p, plan) in self.plans.iter().enumerate() {
                if !Self::plan_runs(plan, run) {
                    continue;
                }
                let entry = &self.models[plan.model];
                let (Some(tok), Some(ckpt), Some(enc)) = (
                    &entry.tokenizer,
                    &entry.checkpoint,
                    encodings.get(&plan.model),
                ) else {
                    item.error = Some(PipelineError::inference(
                        format!("model `{}`", entry.name),
                        "model or tokenizer not loaded (internal error)",
                    ));
                    break;
                };
                let ids = match enc.get(pos) {
                    Some(Ok(t)) => {
                        let full = tok.full_len(t);
                        if let Some(m) = rec
                            && (full <= ckpt.max_len
                                || self.config.input.truncation == TruncationPolicy::Truncate)
                        {
                            let dropped = full.saturating_sub(ckpt.max_len) as u64;
                            let unknown = tok.unknown_count(t) as u64;
                            for &(slot, _) in plan.slots.iter().filter(|(s, _)| run.contains(*s)) {
                                m.record_input_tokens(slot, full as u64, dropped, unknown);
                            }
                        }
                        if full > ckpt.max_len {
                            if self.config.input.truncation == TruncationPolicy::Reject {
                                item.error = Some(PipelineError::InvalidInput {
                                    index,
                                    reason: InputError::TooLong {
                                        model: entry.name.clone(),
                                        tokens: full,
                                        max: ckpt.max_len,
                                    },
                                });
                                break;
                            }
                            item.truncated = true;
                        }
                        tok.model_ids(t, ckpt.max_len, direction)
                    }
                    Some(Err(e)) => Err(e.clone()),
                    None => Err("tokenizer returned too few encodings (internal error)".into()),
                };
                match ids {
                    Ok(ids) => item.ids[p] = ids,
                    Err(reason) => {
                        item.error = Some(PipelineError::Tokenization { index, reason });
                        break;
                    }
                }
            }
            if item.error.is_none()
                && let Some(enc) = builtin_tokenizer.and_then(|m| encodings.get(&m))
            {
                match enc.get(pos) {
                    Some(Ok(t)) => item.builtin_ids = t.content.get_ids().to_vec(),
                    Some(Err(reason)) => {
                        item.error = Some(PipelineError::Tokenization {
                            index,
                            reason: reason.clone(),
                        });
                    }
                    None => {
                        item.error = Some(PipelineError::Tokenization {
                            index,
                            reason: "tokenizer returned too few encodings (internal error)".into(),
                        });
                    }
                }
            }
            if item.error.is_none() {
                tokens += item.primary_len().max(1);
            }
        }
        if let Some(m) = rec {
            m.record_stage_duration(Stage::Tokenization, start.elapsed());
        }
        tokens
    }

    /// Runs every slot in `run` (and fusion when `fuse`) over the valid
    /// items, sorted by length, in chunks of at most `max_batch_size` items
    /// and `max_forward_tokens` padded tokens. Records the batch (its valid
    /// items and compute time) once; a failure is counted where it happens.
    pub(crate) fn compute(
        &self,
        items: &mut [Item],
        run: SlotMask,
        fuse: bool,
        rec: Option<&PipelineMetrics>,
    ) -> Result<(), PipelineError> {
        // Sort valid items by length so each chunk pads little.
        let mut order: Vec<usize> = (0..items.len())
            .filter(|&i| items[i].error.is_none())
            .collect();
        order.sort_by_key(|&i| items[i].primary_len());
        let lens: Vec<usize> = order.iter().map(|&i| items[i].primary_len()).collect();
        if order.is_empty() {
            return Ok(());
        }
        let started = Instant::now();
        let mut start = 0;
        for len in chunk_lengths(
            &lens,
            self.config.max_batch_size,
            self.config.max_forward_tokens,
        ) {
            let chunk = &order[start..start + len];
            start += len;
            self.run_chunk(items, chunk, run, fuse, rec)?;
        }
        if let Some(m) = rec {
            m.record_batch_duration(order.len(), started.elapsed());
        }
        self.state.warmed_up.store(true, Ordering::Relaxed);
        Ok(())
    }

    /// Turns a computed item into its output, keeping only `r`'s outputs.
    pub(crate) fn output(item: Item, r: &Resolved) -> Result<MultiEmbedding, PipelineError> {
        if let Some(e) = item.error {
            return Err(e);
        }
        let tokens = item.primary_len();
        let mut out = item.out;
        let mut norms = item.norms;
        for id in ModelId::ALL {
            if !r.returned.contains(id) {
                out[id.index()] = None;
                norms[id.index()] = None;
            }
        }
        Ok(MultiEmbedding {
            tokens,
            truncated: item.truncated,
            slots: out,
            norms,
            fused: if r.fused { item.fused } else { None },
        })
    }

    fn run_chunk(
        &self,
        items: &mut [Item],
        chunk: &[usize],
        run: SlotMask,
        fuse: bool,
        rec: Option<&PipelineMetrics>,
    ) -> Result<(), PipelineError> {
        let inference_start = Instant::now();
        for (p, plan) in self.plans.iter().enumerate() {
            if !Self::plan_runs(plan, run) {
                continue;
            }
            let entry = &self.models[plan.model];
            let Some(ckpt) = &entry.checkpoint else {
                continue;
            };
            let slots: Vec<(ModelId, SlotHead)> = plan
                .slots
                .iter()
                .copied()
                .filter(|(id, _)| run.contains(*id))
                .collect();
            // One failed pass is one failure, attributed to every slot it served.
            let fail = |e: candle_core::Error| {
                if let Some(m) = rec {
                    let ids: Vec<ModelId> = slots.iter().map(|(id, _)| *id).collect();
                    m.record_failure(ErrorKind::Inference, &ids);
                }
                PipelineError::inference(format!("model `{}`", entry.name), e)
            };
            let ids: Vec<Vec<u32>> = chunk
                .iter()
                .map(|&i| items[i].ids.get(p).cloned().unwrap_or_default())
                .collect();
            let lens: Vec<usize> = ids.iter().map(Vec::len).collect();
            let t0 = Instant::now();
            #[cfg(test)]
            if self.fail_forward.load(Ordering::Relaxed) {
                return Err(fail(candle_core::Error::Msg("injected by a test".into())));
            }
            let hidden = ckpt.forward(&ids).map_err(fail)?;
            // Only the pooled heads a running slot needs.
            let pooled_heads: Vec<PooledHead> = plan
                .pooled
                .iter()
                .copied()
                .filter(|h| {
                    slots.iter().any(|(_, head)| match head {
                        SlotHead::Pooled(x) => x == h,
                        SlotHead::Causal => matches!(h, PooledHead::Cause | PooledHead::Effect),
                        SlotHead::PerToken => false,
                    })
                })
                .collect();
            let trunk = t0.elapsed();
            let t1 = Instant::now();
            let mut pooled = if pooled_heads.is_empty() {
                Vec::new()
            } else {
                transformer::pooled(&hidden, &lens, &pooled_heads).map_err(fail)?
            };
            let pooled_time = t1.elapsed();
            let t2 = Instant::now();
            let wants_tokens = slots.iter().any(|(_, h)| *h == SlotHead::PerToken);
            let mut tokens = if plan.per_token && wants_tokens {
                Some(
                    transformer::per_token(&hidden, &lens, self.li_projection.as_ref())
                        .map_err(fail)?,
                )
            } else {
                None
            };
            let per_token_time = t2.elapsed();
            // A NaN or infinity is never returned: it fails the pass that
            // made it, counted like any failed pass. A pooled vector is
            // finite exactly when its pre-normalisation norm is.
            let finite = pooled.iter().all(|p| p.norms.iter().all(|n| n.is_finite()))
                && tokens
                    .as_ref()
                    .is_none_or(|(_, rows)| rows.iter().flatten().all(|x| x.is_finite()));
            if !finite {
                return Err(fail(candle_core::Error::Msg(
                    "the model produced a non-finite value (NaN or infinity); the checkpoint or the device may be faulty: check `GET /health` and the canary".into(),
                )));
            }
            let head_of = |h: PooledHead| pooled_heads.iter().position(|x| *x == h);
            for (row, &i) in chunk.iter().enumerate() {
                let mut shared: BTreeMap<PooledHead, Arc<[f32]>> = BTreeMap::new();
                let norm = |h: PooledHead| -> Option<f32> {
                    pooled.get(head_of(h)?)?.norms.get(row).copied()
                };
                for &(slot, head) in &slots {
                    if let SlotHead::Pooled(h) = head {
                        items[i].norms[slot.index()] = norm(h);
                    }
                }
                let mut arc = |h: PooledHead| -> Option<Arc<[f32]>> {
                    let k = head_of(h)?;
                    let v = pooled.get_mut(k)?.vectors.get_mut(row)?;
                    Some(
                        shared
                            .entry(h)
                            .or_insert_with(|| Arc::from(std::mem::take(v)))
                            .clone(),
                    )
                };
                for &(slot, head) in &slots {
                    let out = match head {
                        SlotHead::Pooled(h) => arc(h).map(SlotOutput::Dense),
                        SlotHead::Causal => match (arc(PooledHead::Cause), arc(PooledHead::Effect))
                        {
                            (Some(cause), Some(effect)) => {
                                Some(SlotOutput::Causal(CausalPair { cause, effect }))
                            }
                            _ => None,
                        },
                        SlotHead::PerToken => tokens.as_mut().and_then(|(dim, rows)| {
                            rows.get_mut(row).map(|r| {
                                SlotOutput::PerToken(TokenVectors::new(*dim, std::mem::take(r)))
                            })
                        }),
                    };
                    items[i].out[slot.index()] = out;
                }
            }
            if let Some(m) = rec {
                for &(slot, head) in &slots {
                    let head_time = match head {
                        SlotHead::PerToken => per_token_time,
                        _ => pooled_time,
                    };
                    m.record_model_latency_duration(slot, trunk + head_time);
                    for _ in chunk {
                        m.record_model_request(slot);
                    }
                }
            }
        }
        self.run_builtins(items, chunk, run, rec)?;
        if let Some(m) = rec {
            m.record_stage_duration(Stage::Inference, inference_start.elapsed());
        }
        if fuse && let Some(fusion) = &self.fusion {
            let t = Instant::now();
            let rows: Vec<&[Option<SlotOutput>; ModelId::COUNT]> =
                chunk.iter().map(|&i| &items[i].out).collect();
            let fused = fusion.fuse(&rows).inspect_err(|e| {
                if let Some(m) = rec {
                    m.record_failure(e.kind(), &[]);
                }
            })?;
            for (&i, v) in chunk.iter().zip(fused) {
                items[i].fused = Some(v);
            }
            if let Some(m) = rec {
                m.record_stage_duration(Stage::Fusion, t.elapsed());
            }
        }
        let done = Instant::now();
        for &i in chunk {
            items[i].done_at = Some(done);
        }
        Ok(())
    }

    fn run_builtins(
        &self,
        items: &mut [Item],
        chunk: &[usize],
        run: SlotMask,
        rec: Option<&PipelineMetrics>,
    ) -> Result<(), PipelineError> {
        let on = |id: ModelId| self.builtins[id.index()] && run.contains(id);
        let dev = &self.device;
        let t = &self.config.temporal;
        let done = |id: ModelId, start: Instant| {
            if let Some(m) = rec {
                m.record_model_latency_duration(id, start.elapsed());
                for _ in chunk {
                    m.record_model_request(id);
                }
            }
        };
        let fail = |id: ModelId, e: candle_core::Error| {
            if let Some(m) = rec {
                m.record_failure(ErrorKind::Inference, &[id]);
            }
            PipelineError::inference(id.as_str(), e)
        };
        if on(ModelId::TemporalRecent) {
            let start = Instant::now();
            let ages: Vec<f64> = chunk
                .iter()
                .map(|&i| unix_seconds(items[i].now) - unix_seconds(items[i].timestamp))
                .collect();
            let rows = builtin::temporal_recent(&ages, &self.half_lives_s, dev)
                .map_err(|e| fail(ModelId::TemporalRecent, e))?;
            for (&i, v) in chunk.iter().zip(rows) {
                items[i].out[ModelId::TemporalRecent.index()] = Some(SlotOutput::Dense(v.into()));
            }
            done(ModelId::TemporalRecent, start);
        }
        if on(ModelId::TemporalPeriodic) {
            let start = Instant::now();
            let times: Vec<f64> = chunk
                .iter()
                .map(|&i| unix_seconds(items[i].timestamp))
                .collect();
            let rows = builtin::temporal_periodic(&times, t.periodic_harmonics, dev)
                .map_err(|e| fail(ModelId::TemporalPeriodic, e))?;
            for (&i, v) in chunk.iter().zip(rows) {
                items[i].out[ModelId::TemporalPeriodic.index()] = Some(SlotOutput::Dense(v.into()));
            }
            done(ModelId::TemporalPeriodic, start);
        }
        if on(ModelId::TemporalPositional) {
            let start = Instant::now();
            let pos: Vec<u64> = chunk.iter().map(|&i| items[i].position).collect();
            let rows = builtin::temporal_positional(&pos, t.positional_dim, t.positional_base, dev)
                .map_err(|e| fail(ModelId::TemporalPositional, e))?;
            for (&i, v) in chunk.iter().zip(rows) {
                items[i].out[ModelId::TemporalPositional.index()] =
                    Some(SlotOutput::Dense(v.into()));
            }
            done(ModelId::TemporalPositional, start);
        }
        let vocab = self
            .builtin_tokenizer
            .and_then(|m| self.models[m].tokenizer.as_ref())
            .map_or(0, |t| t.vocab_size());
        if on(ModelId::Hdc) {
            let start = Instant::now();
            let h = &self.config.hdc;
            for &i in chunk {
                let v = builtin::hdc(&items[i].builtin_ids, h.dim, h.seed, h.max_ngram);
                items[i].out[ModelId::Hdc.index()] = Some(SlotOutput::Dense(v.into()));
            }
            done(ModelId::Hdc, start);
        }
        if on(ModelId::Sparse) {
            let start = Instant::now();
            for &i in chunk {
                let s = builtin::sparse(&items[i].builtin_ids, vocab, dev)
                    .map_err(|e| fail(ModelId::Sparse, e))?;
                items[i].out[ModelId::Sparse.index()] = Some(SlotOutput::Sparse(s));
            }
            done(ModelId::Sparse, start);
        }
        Ok(())
    }
}

/// Splits items sorted by ascending length into consecutive chunks of at
/// most `max_items` items whose padded size (items × the last, longest
/// length, at least 1) stays within `max_tokens`; an item longer than
/// `max_tokens` is a chunk alone. Returns the chunk sizes, in order.
pub(crate) fn chunk_lengths(
    sorted_lens: &[usize],
    max_items: usize,
    max_tokens: usize,
) -> Vec<usize> {
    let max_items = max_items.max(1);
    let mut sizes = Vec::new();
    let mut count = 0usize;
    for &len in sorted_lens {
        let padded = (count + 1).saturating_mul(len.max(1));
        if count > 0 && (count == max_items || padded > max_tokens) {
            sizes.push(count);
            count = 0;
        }
        count += 1;
    }
    if count > 0 {
        sizes.push(count);
    }
    sizes
}

#[cfg(test)]
mod tests {
    use super::chunk_lengths;

    #[test]
    fn chunks_respect_items_and_padded_tokens() {
        assert!(chunk_lengths(&[], 32, 4096).is_empty());
        assert_eq!(chunk_lengths(&[10; 100], 32, 4096), [32, 32, 32, 4]);
        // 4 × 100 = 400 fits 450; the fifth would pad to 5 × 100 = 500.
        assert_eq!(chunk_lengths(&[100; 9], 32, 450), [4, 4, 1]);
        // The padded size counts the chunk's longest (last) item.
        assert_eq!(chunk_lengths(&[10, 10, 10, 200], 32, 300), [3, 1]);
        // Longer than the budget: alone, never dropped; zero lengths count as 1.
        assert_eq!(chunk_lengths(&[0, 0, 5000, 6000], 8, 4096), [2, 1, 1]);
        assert_eq!(chunk_lengths(&[7; 3], 0, 0), [1, 1, 1]);
        for n in 0..200 {
            let lens: Vec<usize> = (0..n).map(|i| i * 3 % 257).collect::<Vec<_>>();
            let mut sorted = lens.clone();
            sorted.sort_unstable();
            let sizes = chunk_lengths(&sorted, 16, 1024);
            assert_eq!(sizes.iter().sum::<usize>(), n);
            let mut start = 0;
            for &size in &sizes {
                let chunk = &sorted[start..start + size];
                start += size;
                assert!(size <= 16);
                assert!(size == 1 || size * chunk[size - 1].max(1) <= 1024);
            }
        }
    }
}
