//! What comes out of the pipeline.

use std::sync::Arc;

use embeddings_types::ModelId;

/// Cosine similarity of two equally long vectors (0 when either is zero).
#[must_use]
pub fn cosine(a: &[f32], b: &[f32]) -> f32 {
    let (mut ab, mut aa, mut bb) = (0f32, 0f32, 0f32);
    for (x, y) in a.iter().zip(b) {
        ab += x * y;
        aa += x * x;
        bb += y * y;
    }
    if aa == 0.0 || bb == 0.0 {
        0.0
    } else {
        ab / (aa.sqrt() * bb.sqrt())
    }
}

/// A sparse vector over a vocabulary: ascending `indices` with their `values`.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct SparseVector {
    /// The vocabulary size (every index is below it).
    pub dim: usize,
    /// Token ids, strictly ascending.
    pub indices: Vec<u32>,
    /// Weights, positive, L2 norm 1 (empty for an empty text).
    pub values: Vec<f32>,
}

impl SparseVector {
    /// Dot product (the cosine, since both are unit vectors).
    #[must_use]
    pub fn dot(&self, other: &Self) -> f32 {
        let (mut i, mut j, mut sum) = (0, 0, 0f32);
        while i < self.indices.len() && j < other.indices.len() {
            match self.indices[i].cmp(&other.indices[j]) {
                std::cmp::Ordering::Less => i += 1,
                std::cmp::Ordering::Greater => j += 1,
                std::cmp::Ordering::Equal => {
                    sum += self.values[i] * other.values[j];
                    i += 1;
                    j += 1;
                }
            }
        }
        sum
    }
}

/// One L2-normalised vector per token (late interaction), row-major.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct TokenVectors {
    dim: usize,
    data: Vec<f32>,
}

impl TokenVectors {
    pub(crate) fn new(dim: usize, data: Vec<f32>) -> Self {
        Self { dim, data }
    }

    /// Width of each token vector.
    #[must_use]
    pub fn dim(&self) -> usize {
        self.dim
    }

    /// Number of tokens (special tokens included, padding excluded).
    #[must_use]
    pub fn len(&self) -> usize {
        self.data.len().checked_div(self.dim).unwrap_or(0)
    }

    /// `true` when there are no tokens.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.data.is_empty()
    }

    /// The vectors, one `dim`-long slice per token.
    pub fn iter(&self) -> impl Iterator<Item = &[f32]> {
        self.data.chunks_exact(self.dim.max(1))
    }

    /// All vectors, row-major (`len() * dim()` floats).
    #[must_use]
    pub fn as_flat(&self) -> &[f32] {
        &self.data
    }

    /// ColBERT MaxSim: for each query token (`self`), the best dot product
    /// with any document token, summed.
    #[must_use]
    pub fn max_sim(&self, document: &Self) -> f32 {
        self.iter()
            .map(|q| {
                document
                    .iter()
                    .map(|d| q.iter().zip(d).map(|(a, b)| a * b).sum::<f32>())
                    .fold(f32::NEG_INFINITY, f32::max)
            })
            .filter(|s| s.is_finite())
            .sum()
    }
}

/// The `Causal` slot's pair of vectors (see the crate docs for the heads).
#[derive(Debug, Clone, PartialEq)]
pub struct CausalPair {
    /// The text read as a cause.
    pub cause: Arc<[f32]>,
    /// The text read as an effect.
    pub effect: Arc<[f32]>,
}

/// One slot's output.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum SlotOutput {
    /// A dense, L2-normalised vector. Slots computing the same thing share the
    /// allocation (`Arc::ptr_eq` holds).
    Dense(Arc<[f32]>),
    /// Cause and effect vectors.
    Causal(CausalPair),
    /// Lexical weights.
    Sparse(SparseVector),
    /// Per-token vectors.
    PerToken(TokenVectors),
}

impl SlotOutput {
    /// The vector width (vocabulary size for sparse, token width for per-token).
    #[must_use]
    pub fn dim(&self) -> usize {
        match self {
            Self::Dense(v) => v.len(),
            Self::Causal(p) => p.cause.len(),
            Self::Sparse(s) => s.dim,
            Self::PerToken(t) => t.dim(),
        }
    }
}

/// Every enabled slot's output for one input, plus the fused vector.
#[derive(Debug, Clone, PartialEq)]
pub struct MultiEmbedding {
    pub(crate) slots: [Option<SlotOutput>; ModelId::COUNT],
    /// Per pooled (mean / CLS) transformer slot: the length of its vector
    /// before normalisation.
    pub(crate) norms: [Option<f32>; ModelId::COUNT],
    pub(crate) fused: Option<Vec<f32>>,
    pub(crate) tokens: usize,
    pub(crate) truncated: bool,
}

impl MultiEmbedding {
    /// The output of `slot`, `None` when the slot is off or failed to load.
    #[must_use]
    pub fn get(&self, slot: ModelId) -> Option<&SlotOutput> {
        self.slots[slot.index()].as_ref()
    }

    /// The length a pooled (mean or CLS) transformer slot's vector had before
    /// it was L2-normalised: `dense(slot) × pre_norm(slot)` is the raw
    /// pooling (what sentence-transformers returns with
    /// `normalize_embeddings=False`). `None` for every other slot.
    #[must_use]
    pub fn pre_norm(&self, slot: ModelId) -> Option<f32> {
        self.norms[slot.index()]
    }

    /// The dense vector of `slot` (`None` for causal, sparse and per-token slots).
    #[must_use]
    pub fn dense(&self, slot: ModelId) -> Option<&[f32]> {
        match self.get(slot)? {
            SlotOutput::Dense(v) => Some(v),
            _ => None,
        }
    }

    /// The `Causal` pair.
    #[must_use]
    pub fn causal(&self) -> Option<&CausalPair> {
        match self.get(ModelId::Causal)? {
            SlotOutput::Causal(p) => Some(p),
            _ => None,
        }
    }

    /// The `Sparse` vector.
    #[must_use]
    pub fn sparse(&self) -> Option<&SparseVector> {
        match self.get(ModelId::Sparse)? {
            SlotOutput::Sparse(s) => Some(s),
            _ => None,
        }
    }

    /// The `LateInteraction` token vectors.
    #[must_use]
    pub fn per_token(&self) -> Option<&TokenVectors> {
        match self.get(ModelId::LateInteraction)? {
            SlotOutput::PerToken(t) => Some(t),
            _ => None,
        }
    }

    /// The fused vector (`None` when fusion is off).
    #[must_use]
    pub fn fused(&self) -> Option<&[f32]> {
        self.fused.as_deref()
    }

    /// Every present slot output, in slot order.
    pub fn iter(&self) -> impl Iterator<Item = (ModelId, &SlotOutput)> {
        ModelId::ALL
            .iter()
            .zip(&self.slots)
            .filter_map(|(id, s)| s.as_ref().map(|s| (*id, s)))
    }

    /// Tokens the primary transformer model saw (after truncation, special
    /// tokens included); 0 when no transformer slot ran.
    #[must_use]
    pub fn token_count(&self) -> usize {
        self.tokens
    }

    /// `true` when a transformer model saw a truncated text.
    #[must_use]
    pub fn truncated(&self) -> bool {
        self.truncated
    }

    /// Bytes this value holds: its inline size plus every heap allocation it
    /// owns or shares, each shared (`Arc`) vector counted once. This is the
    /// weight the embedding cache charges for an entry.
    #[must_use]
    pub fn heap_bytes(&self) -> usize {
        const ARC_HEADER: usize = 2 * std::mem::size_of::<usize>();
        let f32s = std::mem::size_of::<f32>();
        let mut seen: [*const f32; 2 * ModelId::COUNT] = [std::ptr::null(); 2 * ModelId::COUNT];
        let mut n_seen = 0;
        let mut arc = |v: &Arc<[f32]>| -> usize {
            let p = v.as_ptr();
            if seen[..n_seen].contains(&p) {
                return 0;
            }
            if let Some(slot) = seen.get_mut(n_seen) {
                *slot = p;
                n_seen += 1;
            }
            ARC_HEADER + v.len() * f32s
        };
        let mut total = std::mem::size_of::<Self>();
        for out in self.slots.iter().flatten() {
            total += match out {
                SlotOutput::Dense(v) => arc(v),
                SlotOutput::Causal(p) => arc(&p.cause) + arc(&p.effect),
                SlotOutput::Sparse(s) => {
                    s.indices.capacity() * std::mem::size_of::<u32>() + s.values.capacity() * f32s
                }
                SlotOutput::PerToken(t) => t.data.capacity() * f32s,
            };
        }
        total + self.fused.as_ref().map_or(0, |f| f.capacity() * f32s)
    }
}
