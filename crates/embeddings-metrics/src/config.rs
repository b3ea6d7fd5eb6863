//! [`MetricsConfig`]: the tunables of a [`PipelineMetrics`](crate::PipelineMetrics).

use crate::MetricsError;
use crate::histogram::{self, DEFAULT_PRECISION_BITS, MAX_PRECISION_BITS, MIN_PRECISION_BITS};

/// At most this many `le` bounds per exported histogram: a cardinality guard.
pub const MAX_EXPORTED_BOUNDS: usize = 64;

/// Default EMA weight of a new sample.
pub const DEFAULT_EMA_ALPHA: f64 = 0.1;

/// Default metric name prefix.
pub const DEFAULT_PREFIX: &str = "embeddings_";

/// Default exported latency bounds, µs (exported in seconds): 23 bounds from
/// 10 µs to 65.5 s, doubling from 250 µs. Every one is an exact bucket edge
/// for precision bits `>= 6` (1000 · 2^k = 125 · 2^(k+3), and 125 <= 2^7).
pub const DEFAULT_LATENCY_BOUNDS_US: [u64; 23] = [
    10, 25, 50, 100, 250, 500, 1_000, 2_000, 4_000, 8_000, 16_000, 32_000, 64_000, 128_000,
    256_000, 512_000, 1_024_000, 2_048_000, 4_096_000, 8_192_000, 16_384_000, 32_768_000,
    65_536_000,
];

/// Exported bounds of the tokens-per-input histograms: powers of two from 4
/// to 8192 (edges at every precision).
pub const INPUT_TOKEN_BOUNDS: [u64; 12] = [4, 8, 16, 32, 64, 128, 256, 512, 1024, 2048, 4096, 8192];

/// Default exported batch-size bounds, items: powers of two up to 1024 (edges
/// at every precision).
pub const DEFAULT_BATCH_SIZE_BOUNDS: [u64; 11] = [1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024];

/// Tunables, validated by [`validate`](Self::validate) (and by
/// [`PipelineMetrics::with_config`](crate::PipelineMetrics::with_config)).
///
/// ```
/// use embeddings_metrics::{MetricsConfig, MetricsError};
/// let config = MetricsConfig::default().with_ema_alpha(0.2).with_prefix("svc_");
/// assert!(config.validate().is_ok());
/// let bad = MetricsConfig::default().with_ema_alpha(f64::NAN);
/// assert!(matches!(bad.validate(), Err(MetricsError::InvalidAlpha { .. })));
/// ```
#[derive(Debug, Clone, PartialEq)]
pub struct MetricsConfig {
    /// Weight of a new sample in the latency EMAs, in `(0, 1]`. Default 0.1:
    /// the average follows roughly the last 10–20 samples.
    pub ema_alpha: f64,
    /// Histogram precision bits `p`: quantile relative error `2^-(p+1)`.
    /// Default 6 (0.78 %), range 1..=10.
    pub histogram_precision_bits: u32,
    /// Exported `le` bounds of every latency histogram, µs, strictly
    /// increasing, each an exact bucket edge (see [`snap_bounds`](Self::snap_bounds)).
    pub latency_bounds_us: Vec<u64>,
    /// Exported `le` bounds of the batch-size histogram, items.
    pub batch_size_bounds: Vec<u64>,
    /// Prefix of every metric name. Default `embeddings_`.
    pub prefix: String,
    /// Labels added to every exported series (e.g. `("replica", "a")`);
    /// values are escaped on output. Default none.
    pub const_labels: Vec<(String, String)>,
}

impl Default for MetricsConfig {
    fn default() -> Self {
        Self {
            ema_alpha: DEFAULT_EMA_ALPHA,
            histogram_precision_bits: DEFAULT_PRECISION_BITS,
            latency_bounds_us: DEFAULT_LATENCY_BOUNDS_US.to_vec(),
            batch_size_bounds: DEFAULT_BATCH_SIZE_BOUNDS.to_vec(),
            prefix: DEFAULT_PREFIX.to_owned(),
            const_labels: Vec::new(),
        }
    }
}

impl MetricsConfig {
    /// Sets [`ema_alpha`](Self::ema_alpha).
    #[must_use]
    pub fn with_ema_alpha(mut self, alpha: f64) -> Self {
        self.ema_alpha = alpha;
        self
    }

    /// Sets [`histogram_precision_bits`](Self::histogram_precision_bits).
    #[must_use]
    pub fn with_precision_bits(mut self, bits: u32) -> Self {
        self.histogram_precision_bits = bits;
        self
    }

    /// Sets [`latency_bounds_us`](Self::latency_bounds_us).
    #[must_use]
    pub fn with_latency_bounds_us(mut self, bounds: Vec<u64>) -> Self {
        self.latency_bounds_us = bounds;
        self
    }

    /// Sets [`batch_size_bounds`](Self::batch_size_bounds).
    #[must_use]
    pub fn with_batch_size_bounds(mut self, bounds: Vec<u64>) -> Self {
        self.batch_size_bounds = bounds;
        self
    }

    /// Sets [`prefix`](Self::prefix).
    #[must_use]
    pub fn with_prefix(mut self, prefix: impl Into<String>) -> Self {
        self.prefix = prefix.into();
        self
    }

    /// Adds a constant label.
    #[must_use]
    pub fn with_const_label(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.const_labels.push((name.into(), value.into()));
        self
    }

    /// Moves every bound down to the nearest bucket edge at the configured
    /// precision (and drops duplicates), so a low-precision config can keep
    /// the default bounds. Bounds that are already edges are unchanged.
    #[must_use]
    pub fn snap_bounds(mut self) -> Self {
        let bits = self
            .histogram_precision_bits
            .clamp(MIN_PRECISION_BITS, MAX_PRECISION_BITS);
        for bounds in [&mut self.latency_bounds_us, &mut self.batch_size_bounds] {
            for b in bounds.iter_mut() {
                *b = histogram::edge_at_or_below(*b, bits);
            }
            bounds.dedup();
        }
        self
    }

    /// Checks every field.
    ///
    /// # Errors
    /// The first problem found, as a [`MetricsError`]: alpha NaN, `<= 0` or
    /// `> 1`; precision out of range; bounds not increasing, too many, or not
    /// bucket edges; a bad prefix or constant label name.
    pub fn validate(&self) -> Result<(), MetricsError> {
        let alpha = self.ema_alpha;
        if !(alpha > 0.0 && alpha <= 1.0) {
            return Err(MetricsError::InvalidAlpha { alpha });
        }
        let bits = self.histogram_precision_bits;
        if !(MIN_PRECISION_BITS..=MAX_PRECISION_BITS).contains(&bits) {
            return Err(MetricsError::InvalidPrecision { bits });
        }
        check_bounds("latency", &self.latency_bounds_us, bits)?;
        check_bounds("batch_size", &self.batch_size_bounds, bits)?;
        if !self.prefix.is_empty() && !is_name(&self.prefix) {
            return Err(MetricsError::InvalidPrefix {
                prefix: self.prefix.clone(),
            });
        }
        for (name, _) in &self.const_labels {
            let reserved = ["le", "model", "stage", "kind", "window"].contains(&name.as_str());
            let duplicate = self.const_labels.iter().filter(|(n, _)| n == name).count() > 1;
            if !is_name(name) || name.starts_with("__") || reserved || duplicate {
                return Err(MetricsError::InvalidLabelName { name: name.clone() });
            }
        }
        Ok(())
    }
}

pub(crate) fn check_bounds(
    family: &'static str,
    bounds: &[u64],
    bits: u32,
) -> Result<(), MetricsError> {
    if bounds.len() > MAX_EXPORTED_BOUNDS || bounds.windows(2).any(|w| w[0] >= w[1]) {
        return Err(MetricsError::InvalidBounds {
            family,
            max: MAX_EXPORTED_BOUNDS,
        });
    }
    for &bound in bounds {
        if !histogram::is_edge(bound, bits) {
            let below = histogram::edge_at_or_below(bound, bits);
            let above = histogram::edge_at_or_above(bound, bits);
            return Err(MetricsError::BoundNotAnEdge {
                family,
                bound,
                bits,
                below,
                above,
            });
        }
    }
    Ok(())
}

/// `[a-zA-Z_][a-zA-Z0-9_]*`. Colons are legal in Prometheus names but reserved
/// for recording rules (promtool lints them), so they are refused here.
pub(crate) fn is_name(s: &str) -> bool {
    let mut chars = s.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}
