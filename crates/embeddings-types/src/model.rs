//! [`ModelId`]: the twelve embedding slots, and the kind of output each produces.

use crate::labels::label_enum;

label_enum! {
    /// One of the twelve embedding slots of the pipeline.
    ///
    /// The discriminant is the slot's index (`0..=11`): recorders keep one array
    /// element per model, never a map. Names are stable `snake_case` strings used
    /// by `Display`, `FromStr`, serde and metric labels.
    ///
    /// Dimensions are deliberately *not* part of this type: they come from
    /// whatever checkpoint the pipeline binds to the slot.
    ///
    /// ```
    /// use embeddings_types::ModelId;
    /// assert_eq!(ModelId::COUNT, 12);
    /// assert_eq!(ModelId::TemporalRecent.to_string(), "temporal_recent");
    /// assert_eq!("late_interaction".parse::<ModelId>(), Ok(ModelId::LateInteraction));
    /// assert_eq!(ModelId::from_index(11), Ok(ModelId::LateInteraction));
    /// let err = "nope".parse::<ModelId>().unwrap_err();
    /// assert!(err.to_string().contains("semantic"));
    /// ```
    pub enum ModelId as "model" {
        /// General-purpose sentence semantics.
        Semantic = 0 => "semantic",
        /// Recency: exponential-decay features of the input's timestamp.
        TemporalRecent = 1 => "temporal_recent",
        /// Periodicity: Fourier features of time of day, week and year.
        TemporalPeriodic = 2 => "temporal_periodic",
        /// Position in a sequence: sinusoidal encoding.
        TemporalPositional = 3 => "temporal_positional",
        /// Asymmetric cause / effect vectors.
        Causal = 4 => "causal",
        /// Lexical sparse vector over the tokenizer vocabulary.
        Sparse = 5 => "sparse",
        /// Source code.
        Code = 6 => "code",
        /// Graph / relational structure.
        Graph = 7 => "graph",
        /// Hyperdimensional computing (bound and bundled hypervectors).
        Hdc = 8 => "hdc",
        /// Multimodal (text side).
        Multimodal = 9 => "multimodal",
        /// Named entities.
        Entity = 10 => "entity",
        /// Per-token vectors for late interaction (ColBERT-style).
        LateInteraction = 11 => "late_interaction",
    }
}

/// The shape of what a slot produces.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OutputKind {
    /// One dense vector per input.
    Dense,
    /// Index/value pairs over a vocabulary.
    Sparse,
    /// One dense vector per token.
    PerToken,
}

impl ModelId {
    /// The kind of output this slot produces.
    ///
    /// `Causal` is dense: it yields a cause vector and an effect vector of the
    /// same dimension, both dense.
    #[must_use]
    pub const fn output_kind(self) -> OutputKind {
        match self {
            Self::Sparse => OutputKind::Sparse,
            Self::LateInteraction => OutputKind::PerToken,
            _ => OutputKind::Dense,
        }
    }
}
