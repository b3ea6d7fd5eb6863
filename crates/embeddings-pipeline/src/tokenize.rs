//! Tokenization that follows sentence-transformers rather than the padding and
//! truncation settings shipped in `tokenizer.json`.
//!
//! Texts are encoded once *without* special tokens and without truncation;
//! transformer slots then keep the first `max_len - specials` content tokens
//! and add the special tokens through the tokenizer's own post-processor
//! (`[CLS] … [SEP]` for BERT), exactly what `tokenizer(…, truncation=True,
//! max_length=max_seq_length)` does. Padding is done later, per chunk, to the
//! chunk's longest item. Built-in slots (`Sparse`, `Hdc`) use the content
//! tokens of the whole text.

use std::path::{Path, PathBuf};

use tokenizers::{Encoding, Tokenizer, TruncationDirection};

use crate::error::LoadError;
use crate::options::TruncationDirection as Direction;

/// A loaded `tokenizer.json` with padding and truncation switched off.
pub(crate) struct TextTokenizer {
    inner: Tokenizer,
    path: PathBuf,
    /// Special tokens the post-processor adds to a single sequence.
    specials: usize,
    vocab_size: usize,
    /// The id of the unknown token (`[UNK]` or `<unk>`), if the vocabulary has one.
    unk_id: Option<u32>,
}

impl std::fmt::Debug for TextTokenizer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TextTokenizer")
            .field("path", &self.path)
            .field("vocab_size", &self.vocab_size)
            .finish_non_exhaustive()
    }
}

/// One text, tokenized.
#[derive(Debug, Clone)]
pub(crate) struct Tokens {
    /// Content token ids (no special tokens), whole text.
    pub(crate) content: Encoding,
}

impl TextTokenizer {
    pub(crate) fn load(path: &Path) -> Result<Self, LoadError> {
        let err = |reason: String| LoadError::Tokenizer {
            path: path.to_owned(),
            reason,
        };
        let mut inner = Tokenizer::from_file(path).map_err(|e| err(e.to_string()))?;
        inner.with_padding(None);
        inner
            .with_truncation(None)
            .map_err(|e| err(e.to_string()))?;
        let empty = inner
            .encode_fast("", true)
            .map_err(|e| err(e.to_string()))?;
        let vocab_size = inner.get_vocab_size(true);
        let unk_id = ["[UNK]", "<unk>"].iter().find_map(|t| inner.token_to_id(t));
        Ok(Self {
            inner,
            path: path.to_owned(),
            specials: empty.len(),
            vocab_size,
            unk_id,
        })
    }

    /// Vocabulary size, added tokens included.
    pub(crate) fn vocab_size(&self) -> usize {
        self.vocab_size
    }

    /// Encodes every text; a failing text gets its own error, the others
    /// are unaffected.
    pub(crate) fn encode_all(&self, texts: &[&str]) -> Vec<Result<Tokens, String>> {
        match self.inner.encode_batch_fast(texts.to_vec(), false) {
            Ok(encs) => encs
                .into_iter()
                .map(|content| Ok(Tokens { content }))
                .collect(),
            Err(_) => texts
                .iter()
                .map(|t| {
                    self.inner
                        .encode_fast(*t, false)
                        .map(|content| Tokens { content })
                        .map_err(|e| e.to_string())
                })
                .collect(),
        }
    }

    /// Number of tokens the model would see without truncation.
    /// How many of the content tokens are the unknown token.
    pub(crate) fn unknown_count(&self, tokens: &Tokens) -> usize {
        self.unk_id.map_or(0, |unk| {
            tokens
                .content
                .get_ids()
                .iter()
                .filter(|id| **id == unk)
                .count()
        })
    }

    pub(crate) fn full_len(&self, tokens: &Tokens) -> usize {
        tokens.content.len() + self.specials
    }

    /// Model input ids: content truncated to `max_len - specials` (its end
    /// cut, or its start for [`Direction::Left`]), then the special tokens
    /// added by the post-processor.
    pub(crate) fn model_ids(
        &self,
        tokens: &Tokens,
        max_len: usize,
        direction: Direction,
    ) -> Result<Vec<u32>, String> {
        let mut enc = tokens.content.clone();
        let keep = max_len.saturating_sub(self.specials);
        if enc.len() > keep {
            let direction = match direction {
                Direction::Right => TruncationDirection::Right,
                Direction::Left => TruncationDirection::Left,
            };
            enc.truncate(keep, 0, direction);
            enc.get_overflowing_mut().clear();
        }
        let processed = self
            .inner
            .post_process(enc, None, true)
            .map_err(|e| e.to_string())?;
        Ok(processed.get_ids().to_vec())
    }
}

/// One token of a text, as [`EmbeddingPipeline::tokenize`](crate::EmbeddingPipeline::tokenize)
/// reports it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct TokenInfo {
    /// The token id.
    pub id: u32,
    /// The text it covers (for a special token, the token itself, e.g. `[CLS]`).
    pub text: String,
    /// Whether the tokenizer's post-processor added it (`[CLS]`, `[SEP]`).
    pub special: bool,
    /// Byte offset in the text where it starts; `None` for special tokens.
    pub start: Option<usize>,
    /// Byte offset where it ends (exclusive); `None` for special tokens.
    pub stop: Option<usize>,
}

impl TextTokenizer {
    /// Every token of `text` (special tokens added when asked), with what
    /// it covers. Not truncated.
    pub(crate) fn describe(
        &self,
        text: &str,
        add_special_tokens: bool,
    ) -> Result<Vec<TokenInfo>, String> {
        let enc = self
            .inner
            .encode(text, add_special_tokens)
            .map_err(|e| e.to_string())?;
        let tokens = enc.get_tokens();
        let offsets = enc.get_offsets();
        let special = enc.get_special_tokens_mask();
        Ok(enc
            .get_ids()
            .iter()
            .enumerate()
            .map(|(i, &id)| {
                let is_special = special.get(i).is_some_and(|s| *s == 1);
                let (start, stop) = offsets.get(i).copied().unwrap_or_default();
                let covered = text.get(start..stop).filter(|_| !is_special);
                TokenInfo {
                    id,
                    text: covered
                        .map(str::to_owned)
                        .or_else(|| tokens.get(i).cloned())
                        .unwrap_or_default(),
                    special: is_special,
                    start: covered.map(|_| start),
                    stop: covered.map(|_| stop),
                }
            })
            .collect())
    }

    /// The text of `ids`.
    pub(crate) fn decode(&self, ids: &[u32], skip_special_tokens: bool) -> Result<String, String> {
        self.inner
            .decode(ids, skip_special_tokens)
            .map_err(|e| e.to_string())
    }
}
