//! Small closed sets of names used as metric labels: [`ModelId`](crate::ModelId),
//! [`Stage`] and [`ErrorKind`].
//!
//! Each is a `#[repr(u8)]` enum with a dense index (so recorders can keep one
//! array slot per variant instead of a map), a stable `snake_case` name used by
//! `Display`, `FromStr` and serde, and a fallible conversion from an index.

/// Defines a closed, index-addressable label enum. One definition keeps the
/// name table, the index table and the serde/`FromStr` behaviour of every
/// label set identical.
macro_rules! label_enum {
    (
        $(#[$meta:meta])*
        $vis:vis enum $name:ident as $what:literal {
            $( $(#[$vmeta:meta])* $variant:ident = $idx:literal => $text:literal, )+
        }
    ) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
        #[repr(u8)]
        $vis enum $name {
            $( $(#[$vmeta])* $variant = $idx, )+
        }

        impl $name {
            /// Every variant, in index order.
            pub const ALL: [Self; [$( $idx ),+].len()] = [$( Self::$variant ),+];
            /// The number of variants.
            pub const COUNT: usize = Self::ALL.len();
            /// Every valid name, comma-separated, in index order (used in error messages).
            pub const VALID_NAMES: &'static str = concat!($( $text, ", " ),+);

            /// The dense index of this variant, `0..COUNT`, for array-indexed storage.
            #[inline]
            #[must_use]
            pub const fn index(self) -> usize {
                self as usize
            }

            /// The variant at `index`, or an error naming the valid range.
            ///
            /// # Errors
            /// [`TypesError::IndexOutOfRange`](crate::TypesError::IndexOutOfRange)
            /// when `index >= COUNT`.
            pub fn from_index(index: usize) -> Result<Self, crate::TypesError> {
                Self::ALL.get(index).copied().ok_or(crate::TypesError::IndexOutOfRange {
                    what: $what,
                    index,
                    max: Self::COUNT - 1,
                })
            }

            /// The stable `snake_case` name, as used in JSON and metric labels.
            #[must_use]
            pub const fn as_str(self) -> &'static str {
                match self {
                    $( Self::$variant => $text, )+
                }
            }
        }

        impl TryFrom<u8> for $name {
            type Error = crate::TypesError;
            fn try_from(index: u8) -> Result<Self, Self::Error> {
                Self::from_index(usize::from(index))
            }
        }

        impl From<$name> for u8 {
            fn from(value: $name) -> u8 {
                value as u8
            }
        }

        impl ::core::fmt::Display for $name {
            fn fmt(&self, f: &mut ::core::fmt::Formatter<'_>) -> ::core::fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl ::core::str::FromStr for $name {
            type Err = crate::TypesError;
            fn from_str(s: &str) -> Result<Self, Self::Err> {
                match s {
                    $( $text => Ok(Self::$variant), )+
                    _ => Err(crate::TypesError::UnknownName {
                        what: $what,
                        input: s.to_owned(),
                        valid: Self::VALID_NAMES.trim_end_matches(", "),
                    }),
                }
            }
        }

        impl ::serde::Serialize for $name {
            fn serialize<S: ::serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
                serializer.serialize_str(self.as_str())
            }
        }

        impl<'de> ::serde::Deserialize<'de> for $name {
            fn deserialize<D: ::serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
                struct NameVisitor;
                impl ::serde::de::Visitor<'_> for NameVisitor {
                    type Value = $name;
                    fn expecting(&self, f: &mut ::core::fmt::Formatter<'_>) -> ::core::fmt::Result {
                        write!(f, "one of: {}", $name::VALID_NAMES.trim_end_matches(", "))
                    }
                    fn visit_str<E: ::serde::de::Error>(self, v: &str) -> Result<$name, E> {
                        v.parse().map_err(E::custom)
                    }
                }
                deserializer.deserialize_str(NameVisitor)
            }
        }
    };
}

pub(crate) use label_enum;

label_enum! {
    /// A stage of the embedding path, timed separately so an operator can see
    /// where the latency goes.
    pub enum Stage as "stage" {
        /// Time a request waited in the submission queue before a worker took it.
        QueueWait = 0 => "queue_wait",
        /// Turning text into token ids.
        Tokenization = 1 => "tokenization",
        /// Model forward passes and heads.
        Inference = 2 => "inference",
        /// Fusing the per-slot outputs into one vector.
        Fusion = 3 => "fusion",
    }
}

label_enum! {
    /// Why a request or an item failed. Counted separately so alerts can tell
    /// a client's bad input from a broken model: see
    /// [`ErrorKind::is_service_failure`].
    pub enum ErrorKind as "error kind" {
        /// The input was rejected before any work (empty text, bad timestamp, ...).
        Validation = 0 => "validation",
        /// The tokenizer failed on the input.
        Tokenization = 1 => "tokenization",
        /// A model forward pass or head failed.
        Inference = 2 => "inference",
        /// The work did not finish within its deadline.
        Timeout = 3 => "timeout",
        /// The request was refused because a queue was full.
        Overload = 4 => "overload",
        /// A bug or an unexpected condition inside the pipeline.
        Internal = 5 => "internal",
        /// The caller went away (dropped its ticket, closed its connection)
        /// before the answer was ready; the work was dropped or discarded.
        Cancelled = 6 => "cancelled",
    }
}

impl ErrorKind {
    /// The kinds that are failures of the service itself: `inference`,
    /// `timeout` and `internal`. Only these feed the error rate that health
    /// rules judge, so bad clients cannot make the service look broken.
    pub const SERVICE_FAILURES: [Self; 3] = [Self::Inference, Self::Timeout, Self::Internal];

    /// `true` for a failure of the service (`inference`, `timeout`,
    /// `internal`); `false` for what a client caused or chose: a rejected
    /// input (`validation`, `tokenization`), a full queue it should back off
    /// from (`overload`, HTTP 429), or its own cancellation (`cancelled`).
    ///
    /// ```
    /// use embeddings_types::ErrorKind;
    /// assert!(ErrorKind::Inference.is_service_failure());
    /// assert!(!ErrorKind::Validation.is_service_failure());
    /// assert!(!ErrorKind::Overload.is_service_failure());
    /// ```
    #[must_use]
    pub const fn is_service_failure(self) -> bool {
        matches!(self, Self::Inference | Self::Timeout | Self::Internal)
    }
}
