//! Loading: from a validated configuration to an [`Engine`]: checkpoints,
//! tokenizers, slot plans (which slots share a trunk or an output), the
//! registry report, fusion, the cache and the health policy.

use std::collections::BTreeMap;
use std::sync::Arc;

use candle_core::Tensor;
use chrono::Utc;
use embeddings_metrics::PipelineMetrics;
use embeddings_types::ModelId;

use crate::cache_manager::{self, EmbeddingCache};
use crate::config::{PipelineConfig, Pooling, SlotConfig, is_transformer_slot};
use crate::device;
use crate::engine::{Engine, ModelEntry, Plan, RuntimeState, SlotHead, default_models_dir};
use crate::error::LoadError;
use crate::fusion::Fusion;
use crate::options::SlotMask;
use crate::registry::{Backend, FusionReport, ModelRegistry, ModelReport, SlotReport, SlotState};
use crate::rng;
use crate::source;
use crate::tokenize::TextTokenizer;
use crate::transformer::{self, Checkpoint, PooledHead};

impl Engine {
    /// Opens the device, loads every enabled slot's checkpoint or tokenizer,
    /// plans which slots share a forward pass, and builds fusion, the cache
    /// and the health policy.
    pub(crate) fn load(
        config: PipelineConfig,
        strict: bool,
        metrics: Arc<PipelineMetrics>,
        record: bool,
    ) -> Result<Self, LoadError> {
        let device = device::open(config.device)?;
        let models_dir = config.models_dir.clone().unwrap_or_else(default_models_dir);
        let sources = config.models_with_default();
        let slot_cfg: Vec<SlotConfig> = ModelId::ALL.iter().map(|id| config.slot(*id)).collect();
        let enabled = |id: ModelId| slot_cfg[id.index()].enabled;
        let needs_tokenizer = enabled(ModelId::Sparse) || enabled(ModelId::Hdc);

        // Which models are needed, and whether for weights or only the tokenizer.
        let mut needed: BTreeMap<String, bool> = BTreeMap::new();
        for id in ModelId::ALL {
            if is_transformer_slot(id) && enabled(id) {
                needed.insert(config.slot_model(id), true);
            }
        }
        if needs_tokenizer {
            needed
                .entry(config.builtin_tokenizer.clone())
                .or_insert(false);
        }

        let mut models = Vec::new();
        let mut model_errors: BTreeMap<String, LoadError> = BTreeMap::new();
        let mut model_reports = Vec::new();
        for (name, with_weights) in &needed {
            let Some(src) = sources.get(name) else {
                continue; // unreachable after validate()
            };
            let dir = source::resolve(name, src, &models_dir);
            let loaded = dir.clone().and_then(|dir| {
                let tok = TextTokenizer::load(&transformer::tokenizer_path(name, &dir)?)?;
                let ckpt = if *with_weights {
                    let ckpt = Checkpoint::load(name, &dir, src, &device)?;
                    if tok.vocab_size() > ckpt.vocab_size {
                        return Err(LoadError::BadModelConfig {
                            path: dir.join("config.json"),
                            reason: format!(
                                "the tokenizer has {} tokens but vocab_size is {}",
                                tok.vocab_size(),
                                ckpt.vocab_size
                            ),
                        });
                    }
                    Some(ckpt)
                } else {
                    None
                };
                Ok((tok, ckpt))
            });
            let mut report = ModelReport {
                name: name.clone(),
                dir: dir.ok(),
                error: None,
                hidden: None,
                max_seq_length: None,
                weight_bytes: 0,
                used_by: Vec::new(),
            };
            match loaded {
                Ok((tok, ckpt)) => {
                    report.hidden = ckpt.as_ref().map(|c| c.hidden);
                    report.max_seq_length = ckpt.as_ref().map(|c| c.max_len);
                    report.weight_bytes = ckpt.as_ref().map_or(0, |c| c.weight_bytes);
                    models.push(ModelEntry {
                        name: name.clone(),
                        tokenizer: Some(Arc::new(tok)),
                        checkpoint: ckpt,
                    });
                }
                Err(e) => {
                    report.error = Some(e.clone());
                    model_errors.insert(name.clone(), e);
                }
            }
            model_reports.push(report);
        }
        let model_index = |name: &str| models.iter().position(|m| m.name == name);

        // Plans: one per loaded checkpoint.
        let mut plans: Vec<Plan> = Vec::new();
        let mut slot_reports = Vec::with_capacity(ModelId::COUNT);
        let mut slot_keys: Vec<Option<(usize, SlotHead)>> = vec![None; ModelId::COUNT];
        let builtin_tokenizer = if needs_tokenizer {
            model_index(&config.builtin_tokenizer)
        } else {
            None
        };
        let mut builtins = [false; ModelId::COUNT];
        let li_dim_cfg = config.late_interaction.project_dim;
        for id in ModelId::ALL {
            let cfg = &slot_cfg[id.index()];
            let mut report = SlotReport {
                slot: id,
                state: SlotState::Disabled,
                backend: Backend::BuiltIn,
                dim: None,
                weight_bytes: 0,
                trunk_shared_with: Vec::new(),
                output_shared_with: Vec::new(),
            };
            if is_transformer_slot(id) {
                let name = config.slot_model(id);
                let idx = model_index(&name);
                let ckpt = idx.and_then(|i| models[i].checkpoint.as_ref());
                let head = match id {
                    ModelId::Causal => SlotHead::Causal,
                    ModelId::LateInteraction => SlotHead::PerToken,
                    _ => SlotHead::Pooled(match (cfg.pooling, ckpt.map(|c| c.pooling)) {
                        (Pooling::Cls, _) | (Pooling::Auto, Some(Pooling::Cls)) => PooledHead::Cls,
                        _ => PooledHead::Mean,
                    }),
                };
                report.backend = Backend::Transformer {
                    model: name.clone(),
                    head: head.public(),
                };
                if cfg.enabled {
                    match (idx, ckpt) {
                        (Some(i), Some(c)) => {
                            report.state = SlotState::Loaded;
                            report.weight_bytes = c.weight_bytes;
                            report.dim = Some(match head {
                                SlotHead::PerToken => li_dim_cfg.unwrap_or(c.hidden),
                                _ => c.hidden,
                            });
                            slot_keys[id.index()] = Some((i, head));
                            let plan = match plans.iter().position(|p| p.model == i) {
                                Some(p) => &mut plans[p],
                                None => {
                                    plans.push(Plan {
                                        model: i,
                                        pooled: Vec::new(),
                                        per_token: false,
                                        slots: Vec::new(),
                                    });
                                    let last = plans.len() - 1;
                                    &mut plans[last]
                                }
                            };
                            plan.slots.push((id, head));
                            let wanted = match head {
                                SlotHead::Pooled(h) => vec![h],
                                SlotHead::Causal => vec![PooledHead::Cause, PooledHead::Effect],
                                SlotHead::PerToken => Vec::new(),
                            };
                            for h in wanted {
                                if !plan.pooled.contains(&h) {
                                    plan.pooled.push(h);
                                }
                            }
                            plan.per_token |= head == SlotHead::PerToken;
                        }
                        _ => {
                            let err = model_errors.get(&name).cloned().unwrap_or_else(|| {
                                LoadError::NoSlotLoaded(format!("model `{name}` was not loaded"))
                            });
                            report.state = SlotState::Failed(err);
                        }
                    }
                }
            } else if cfg.enabled {
                let t = &config.temporal;
                let dim = match id {
                    ModelId::TemporalRecent => Some(2 * t.half_lives_hours.len()),
                    ModelId::TemporalPeriodic => Some(6 * t.periodic_harmonics),
                    ModelId::TemporalPositional => Some(t.positional_dim),
                    ModelId::Hdc => builtin_tokenizer.map(|_| config.hdc.dim),
                    _ => builtin_tokenizer
                        .and_then(|i| models[i].tokenizer.as_ref())
                        .map(|t| t.vocab_size()),
                };
                if let Some(d) = dim {
                    report.state = SlotState::Loaded;
                    report.dim = Some(d);
                    builtins[id.index()] = true;
                } else {
                    let err = model_errors
                        .get(&config.builtin_tokenizer)
                        .cloned()
                        .unwrap_or_else(|| LoadError::Config("built-in tokenizer missing".into()));
                    report.state = SlotState::Failed(err);
                }
            }
            slot_reports.push(report);
        }

        // Sharing: same checkpoint => one trunk; same checkpoint and head => one output.
        for a in 0..ModelId::COUNT {
            let Some((ma, ha)) = slot_keys[a] else {
                continue;
            };
            for (b, key) in slot_keys.iter().enumerate() {
                if a == b {
                    continue;
                }
                if let Some((mb, hb)) = key
                    && *mb == ma
                {
                    slot_reports[a].trunk_shared_with.push(ModelId::ALL[b]);
                    if *hb == ha {
                        slot_reports[a].output_shared_with.push(ModelId::ALL[b]);
                    }
                }
            }
        }
        for r in &mut model_reports {
            r.used_by = slot_reports
                .iter()
                .filter(|s| s.state == SlotState::Loaded)
                .filter(|s| match &s.backend {
                    Backend::Transformer { model, .. } => *model == r.name,
                    Backend::BuiltIn => {
                        matches!(s.slot, ModelId::Sparse | ModelId::Hdc)
                            && r.name == config.builtin_tokenizer
                    }
                })
                .map(|s| s.slot)
                .collect();
        }

        if strict
            && let Some((slot, e)) = slot_reports.iter().find_map(|s| match &s.state {
                SlotState::Failed(e) => Some((s.slot, e)),
                _ => None,
            })
        {
            return Err(LoadError::SlotFailed {
                slot,
                reason: Box::new(e.clone()),
            });
        }
        if !slot_reports.iter().any(|s| s.state == SlotState::Loaded) {
            let reasons: Vec<String> = slot_reports
                .iter()
                .filter_map(|s| match &s.state {
                    SlotState::Failed(e) => Some(format!("{}: {e}", s.slot)),
                    _ => None,
                })
                .collect();
            return Err(LoadError::NoSlotLoaded(if reasons.is_empty() {
                "every slot is disabled; enable at least one".into()
            } else {
                reasons.join("; ")
            }));
        }

        let li_projection = match (li_dim_cfg, slot_keys[ModelId::LateInteraction.index()]) {
            (Some(p), Some((m, _))) => {
                let hidden = models[m].checkpoint.as_ref().map_or(0, |c| c.hidden);
                let data = rng::rademacher(
                    config.late_interaction.seed,
                    hidden * p,
                    1.0 / (p as f32).sqrt(),
                );
                Some(Tensor::from_vec(data, (hidden, p), &device).map_err(|e| {
                    LoadError::Setup {
                        what: "the late_interaction projection".into(),
                        reason: e.to_string(),
                    }
                })?)
            }
            _ => None,
        };

        let fusion = if config.fusion.enabled {
            let widths: Vec<(ModelId, usize)> = slot_reports
                .iter()
                .filter(|s| s.state == SlotState::Loaded)
                .filter_map(|s| {
                    let d = s.dim?;
                    Some((
                        s.slot,
                        match s.slot {
                            ModelId::Causal => 2 * d,
                            ModelId::Sparse => config.fusion.sparse_hash_dim,
                            _ => d,
                        },
                    ))
                })
                .collect();
            let trained = config.fusion.trained_weights.as_ref().map(|p| {
                if p.is_absolute() {
                    p.clone()
                } else {
                    models_dir.join(p)
                }
            });
            Some(Fusion::new(
                &config.fusion,
                &widths,
                trained.as_deref(),
                &device,
            )?)
        } else {
            None
        };

        let reference_time = config.temporal.reference_time.unwrap_or_else(Utc::now);
        let registry = ModelRegistry {
            slots: slot_reports,
            models: model_reports,
            fusion: fusion.as_ref().map(|f| FusionReport {
                d_in: f.d_in(),
                dim: f.dim(),
                trained: config.fusion.trained_weights.is_some(),
                weight_bytes: f.weight_bytes(),
            }),
            device: format!("{device:?}").to_lowercase(),
            reference_time,
        };
        let half_lives_s = config
            .temporal
            .half_lives_hours
            .iter()
            .map(|h| h * 3600.0)
            .collect();
        let loaded = SlotMask::from_fn(|id| registry.slot(id).state == SlotState::Loaded);
        let fingerprint = cache_manager::fingerprint(&(&config, reference_time, loaded.bits()));
        let cache = EmbeddingCache::new(
            config.cache.max_bytes,
            fingerprint,
            record.then(|| Arc::clone(&metrics)),
        );
        let health_policy = config
            .health
            .build()
            .map_err(|e| LoadError::Config(format!("[health]: {e}")))?;
        let drift_window = config.quality.drift_window;
        Ok(Self {
            config,
            device,
            models,
            plans,
            builtin_tokenizer,
            builtins,
            li_projection,
            fusion,
            registry,
            reference_time,
            half_lives_s,
            loaded,
            metrics,
            record,
            cache,
            health_policy,
            drift: crate::drift::DriftMonitor::new(drift_window),
            state: RuntimeState::new(),
            #[cfg(test)]
            fail_forward: std::sync::atomic::AtomicBool::new(false),
        })
    }
}
