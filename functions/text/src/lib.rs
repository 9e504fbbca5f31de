//! Sentence embeddings for scoring functions and for the host's index builder.
//!
//! The same code runs in the guest (per request) and in `scoria index` (once per list entry),
//! so a question and the FAQ entries it is compared with are embedded identically:
//! tokenise -> model -> [`mean_pool`] with the attention mask -> [`l2_normalize`].
//! Everything model-specific comes from the embedding model's card (`[preprocess]`, see
//! [`TextPreprocess`]).

pub mod lexical;

use serde::Deserialize;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use tokenizers::{
    AddedToken, DecoderWrapper, Model, NormalizerWrapper, PostProcessorWrapper, PreTokenizerWrapper, Token,
    TokenizerImpl, Trainer, TruncationParams,
};

/// Why text could not be embedded.
#[derive(Debug, thiserror::Error)]
pub enum TextError {
    #[error("tokenizer: {0}")]
    Tokenizer(String),
    #[error("vocabulary: {0}")]
    Vocab(String),
    #[error("the text is empty")]
    Empty,
    #[error("model output has {got} values, expected {tokens} tokens x {dim}")]
    OutputShape { got: usize, tokens: usize, dim: usize },
}

/// How a text model wants its input and output treated: the `[preprocess]` table of its card.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TextPreprocess {
    /// The tokenizer pipeline (a `tokenizer.json`, its vocabulary may be left out), relative
    /// to the model's folder.
    pub tokenizer: String,
    /// The vocabulary as a [`FlatVocab`] file, relative to the model's folder.
    pub vocab: String,
    /// Longer texts are truncated to this many tokens (special tokens included).
    #[serde(default = "default_max_tokens")]
    pub max_tokens: usize,
    /// Width of one token's hidden state.
    pub dim: usize,
    /// Only `mean` (masked mean over tokens) is implemented; named so cards say what they need.
    #[serde(default = "default_pooling")]
    pub pooling: String,
    #[serde(default = "yes")]
    pub normalize: bool,
}

fn default_max_tokens() -> usize {
    256
}
fn default_pooling() -> String {
    "mean".into()
}
fn yes() -> bool {
    true
}

/// The three int64 inputs of a BERT-style encoder, each of shape `[1, len]`.
#[derive(Debug, Clone, PartialEq)]
pub struct Encoded {
    pub input_ids: Vec<i64>,
    pub attention_mask: Vec<i64>,
    pub token_type_ids: Vec<i64>,
}

impl Encoded {
    /// Number of tokens, special tokens included: the dynamic sequence length.
    pub fn len(&self) -> usize {
        self.input_ids.len()
    }

    pub fn is_empty(&self) -> bool {
        self.input_ids.is_empty()
    }
}

/// The tokenizer type: the `tokenizers` crate's pipeline (normaliser, pre-tokeniser,
/// special tokens, post-processor) around a WordPiece model over a [`FlatVocab`].
type Inner = TokenizerImpl<
    FlatWordPiece,
    NormalizerWrapper,
    PreTokenizerWrapper,
    PostProcessorWrapper,
    DecoderWrapper,
>;

/// A tokenizer with the card's truncation applied; no padding, so the sequence length is the
/// text's own.
pub struct TextEncoder {
    tokenizer: Inner,
    max_tokens: usize,
}

/// What a `tokenizer.json` says besides its vocabulary. Unknown keys (the vocabulary
/// included) are skipped, so both the full file and the pipeline file parse.
#[derive(Deserialize)]
struct Pipeline {
    #[serde(default)]
    added_tokens: Vec<AddedTokenSpec>,
    normalizer: Option<NormalizerWrapper>,
    pre_tokenizer: Option<PreTokenizerWrapper>,
    post_processor: Option<PostProcessorWrapper>,
    decoder: Option<DecoderWrapper>,
    model: ModelSpec,
}

#[derive(Deserialize)]
struct AddedTokenSpec {
    content: String,
    #[serde(default)]
    single_word: bool,
    #[serde(default)]
    lstrip: bool,
    #[serde(default)]
    rstrip: bool,
    #[serde(default)]
    normalized: bool,
    #[serde(default)]
    special: bool,
}

#[derive(Deserialize)]
struct ModelSpec {
    #[serde(rename = "type")]
    kind: String,
    unk_token: String,
    continuing_subword_prefix: String,
    max_input_chars_per_word: usize,
}

impl TextEncoder {
    /// Build from a tokenizer pipeline (`tokenizer.json`, with or without its vocabulary) and
    /// the vocabulary as a [`FlatVocab`] file. Both are read as they are: nothing is hashed or
    /// indexed, which is what makes a tokenizer per request affordable.
    pub fn new(pipeline_json: &[u8], vocab: Vec<u8>, pre: &TextPreprocess) -> Result<Self, TextError> {
        let bad = |e: String| TextError::Tokenizer(e);
        let p: Pipeline = serde_json::from_slice(pipeline_json).map_err(|e| bad(e.to_string()))?;
        if p.model.kind != "WordPiece" {
            return Err(bad(format!(
                "model type `{}` is not supported; only WordPiece",
                p.model.kind
            )));
        }
        let vocab = FlatVocab::new(vocab)?;
        let model = FlatWordPiece {
            unk_id: vocab.get(&p.model.unk_token).ok_or_else(|| {
                bad(format!(
                    "the unknown token `{}` is not in the vocabulary",
                    p.model.unk_token
                ))
            })?,
            unk_token: p.model.unk_token,
            prefix: p.model.continuing_subword_prefix,
            max_chars: p.model.max_input_chars_per_word,
            vocab,
        };
        let mut tokenizer = Inner::new(model);
        tokenizer
            .with_normalizer(p.normalizer)
            .with_pre_tokenizer(p.pre_tokenizer)
            .with_post_processor(p.post_processor)
            .with_decoder(p.decoder)
            .with_padding(None)
            .with_truncation(Some(TruncationParams {
                max_length: pre.max_tokens,
                ..Default::default()
            }))
            .map_err(|e| bad(e.to_string()))?;
        let special: Vec<AddedToken> = p
            .added_tokens
            .into_iter()
            .map(|t| AddedToken {
                content: t.content,
                single_word: t.single_word,
                lstrip: t.lstrip,
                rstrip: t.rstrip,
                normalized: t.normalized,
                special: t.special,
            })
            .collect();
        tokenizer.add_special_tokens(&special);
        Ok(Self {
            tokenizer,
            max_tokens: pre.max_tokens,
        })
    }

    /// The most tokens one text becomes.
    pub fn max_tokens(&self) -> usize {
        self.max_tokens
    }

    /// Tokenise one text, with the model's special tokens.
    pub fn encode(&self, text: &str) -> Result<Encoded, TextError> {
        if text.trim().is_empty() {
            return Err(TextError::Empty);
        }
        let enc = self
            .tokenizer
            .encode(text, true)
            .map_err(|e| TextError::Tokenizer(e.to_string()))?;
        let widen = |v: &[u32]| v.iter().map(|&x| i64::from(x)).collect::<Vec<_>>();
        Ok(Encoded {
            input_ids: widen(enc.get_ids()),
            attention_mask: widen(enc.get_attention_mask()),
            token_type_ids: widen(enc.get_type_ids()),
        })
    }

    /// The tokens of a text without the model's special tokens, truncated as [`Self::encode`]
    /// truncates: the words lexical matching ([`lexical`]) counts.
    pub fn terms(&self, text: &str) -> Result<Vec<u32>, TextError> {
        let enc = self
            .tokenizer
            .encode(text, false)
            .map_err(|e| TextError::Tokenizer(e.to_string()))?;
        Ok(enc.get_ids().to_vec())
    }
}

/// A vocabulary stored so that it is usable straight from its bytes: `b"SCVOCAB1"`, a u32
/// count n, n records `(start, len, id)` (u32 little-endian) sorted by the token's UTF-8 bytes,
/// then the tokens' bytes. Lookups are binary searches.
///
/// Building a hash map of a 30,522-token vocabulary takes about 7 ms natively (parsing
/// `tokenizer.json`, 20 ms), and a function builds its tokenizer on every request; this takes
/// the time to read the file. `models/all-minilm-l6-v2/build.py` writes it.
pub struct FlatVocab {
    bytes: Vec<u8>,
    n: usize,
}

const MAGIC: &[u8; 8] = b"SCVOCAB1";

impl FlatVocab {
    /// Check the header and that every record lies inside the file.
    pub fn new(bytes: Vec<u8>) -> Result<Self, TextError> {
        let bad = |m: &str| TextError::Vocab(m.to_string());
        if bytes.len() < 12 || &bytes[..8] != MAGIC {
            return Err(bad("not a SCVOCAB1 file"));
        }
        let n = u32::from_le_bytes([bytes[8], bytes[9], bytes[10], bytes[11]]) as usize;
        let blob = 12 + n * 12;
        if bytes.len() < blob {
            return Err(bad("truncated record table"));
        }
        let v = Self { bytes, n };
        // Bounds only: lookups compare bytes, and `token` checks UTF-8 when it is asked.
        for i in 0..n {
            let (start, len, _) = v.record(i);
            if blob + start + len > v.bytes.len() {
                return Err(bad("a record points outside the file"));
            }
        }
        Ok(v)
    }

    fn record(&self, i: usize) -> (usize, usize, u32) {
        let at = 12 + i * 12;
        let u = |o: usize| {
            u32::from_le_bytes([
                self.bytes[o],
                self.bytes[o + 1],
                self.bytes[o + 2],
                self.bytes[o + 3],
            ])
        };
        (u(at) as usize, u(at + 4) as usize, u(at + 8))
    }

    fn token_bytes(&self, i: usize) -> &[u8] {
        let (start, len, _) = self.record(i);
        let blob = 12 + self.n * 12;
        &self.bytes[blob + start..blob + start + len]
    }

    /// The id of `token`.
    pub fn get(&self, token: &str) -> Option<u32> {
        let (mut lo, mut hi) = (0, self.n);
        while lo < hi {
            let mid = (lo + hi) / 2;
            match self.token_bytes(mid).cmp(token.as_bytes()) {
                std::cmp::Ordering::Less => lo = mid + 1,
                std::cmp::Ordering::Greater => hi = mid,
                std::cmp::Ordering::Equal => return Some(self.record(mid).2),
            }
        }
        None
    }

    /// The token with `id` (a scan: only decoding needs it).
    pub fn token(&self, id: u32) -> Option<String> {
        (0..self.n)
            .find(|&i| self.record(i).2 == id)
            .and_then(|i| std::str::from_utf8(self.token_bytes(i)).ok().map(str::to_owned))
    }

    pub fn len(&self) -> usize {
        self.n
    }

    pub fn is_empty(&self) -> bool {
        self.n == 0
    }
}

/// WordPiece (greedy longest match first, as in `tokenizers`' own model) over a [`FlatVocab`].
pub struct FlatWordPiece {
    vocab: FlatVocab,
    unk_token: String,
    unk_id: u32,
    prefix: String,
    max_chars: usize,
}

impl Model for FlatWordPiece {
    type Trainer = NoTraining;

    fn tokenize(&self, sequence: &str) -> tokenizers::Result<Vec<Token>> {
        let unknown = || {
            Ok(vec![Token {
                value: self.unk_token.clone(),
                id: self.unk_id,
                offsets: (0, sequence.len()),
            }])
        };
        if sequence.chars().count() > self.max_chars {
            return unknown();
        }
        let mut tokens = Vec::new();
        let mut start = 0;
        while start < sequence.len() {
            let mut end = sequence.len();
            let mut found = None;
            while start < end {
                let piece = &sequence[start..end];
                let candidate = if start > 0 {
                    format!("{}{piece}", self.prefix)
                } else {
                    piece.to_string()
                };
                if let Some(id) = self.vocab.get(&candidate) {
                    found = Some(Token {
                        id,
                        value: candidate,
                        offsets: (start, end),
                    });
                    break;
                }
                end -= piece.chars().last().map_or(1, char::len_utf8);
            }
            match found {
                Some(t) => tokens.push(t),
                None => return unknown(),
            }
            start = end;
        }
        Ok(tokens)
    }

    fn token_to_id(&self, token: &str) -> Option<u32> {
        self.vocab.get(token)
    }

    fn id_to_token(&self, id: u32) -> Option<String> {
        self.vocab.token(id)
    }

    fn get_vocab(&self) -> HashMap<String, u32> {
        (0..self.vocab.n)
            .filter_map(|i| {
                let t = std::str::from_utf8(self.vocab.token_bytes(i)).ok()?;
                Some((t.to_string(), self.vocab.record(i).2))
            })
            .collect()
    }

    fn get_vocab_size(&self) -> usize {
        self.vocab.n
    }

    fn save(&self, _folder: &Path, _prefix: Option<&str>) -> tokenizers::Result<Vec<PathBuf>> {
        Err("a flat WordPiece vocabulary is written by build.py, not saved".into())
    }

    fn get_trainer(&self) -> NoTraining {
        NoTraining
    }
}

/// `tokenizers` wants every model to be trainable; this one is only ever loaded.
pub struct NoTraining;

impl Trainer for NoTraining {
    type Model = FlatWordPiece;

    fn should_show_progress(&self) -> bool {
        false
    }

    fn train(&self, _model: &mut FlatWordPiece) -> tokenizers::Result<Vec<AddedToken>> {
        Err("a flat WordPiece vocabulary cannot be trained".into())
    }

    fn feed<I, S, F>(&mut self, _iterator: I, _process: F) -> tokenizers::Result<()>
    where
        I: Iterator<Item = S> + Send,
        S: AsRef<str> + Send,
        F: Fn(&str) -> tokenizers::Result<Vec<String>> + Sync,
    {
        Ok(())
    }
}

/// Average the hidden states of the tokens the mask keeps: `hidden` is `[tokens, dim]`.
pub fn mean_pool(hidden: &[f32], mask: &[i64], dim: usize) -> Result<Vec<f32>, TextError> {
    if dim == 0 || hidden.len() != mask.len() * dim {
        return Err(TextError::OutputShape {
            got: hidden.len(),
            tokens: mask.len(),
            dim,
        });
    }
    let mut sum = vec![0f32; dim];
    let mut count = 0f32;
    for (row, &m) in hidden.chunks_exact(dim).zip(mask) {
        if m != 0 {
            for (s, &v) in sum.iter_mut().zip(row) {
                *s += v;
            }
            count += 1.0;
        }
    }
    let count = count.max(1e-9);
    sum.iter_mut().for_each(|s| *s /= count);
    Ok(sum)
}

/// Scale `v` to unit length, so that a dot product is the cosine similarity.
pub fn l2_normalize(v: &mut [f32]) {
    let norm = v.iter().map(|x| x * x).sum::<f32>().sqrt().max(1e-12);
    v.iter_mut().for_each(|x| *x /= norm);
}

/// Pool and (if the card asks) normalise one text's hidden states into its embedding.
pub fn embedding(hidden: &[f32], enc: &Encoded, pre: &TextPreprocess) -> Result<Vec<f32>, TextError> {
    let mut e = mean_pool(hidden, &enc.attention_mask, pre.dim)?;
    if pre.normalize {
        l2_normalize(&mut e);
    }
    Ok(e)
}

/// The indices of the `k` highest scores, best first; ties keep the earlier entry first.
pub fn top_k(scores: &[f32], k: usize) -> Vec<usize> {
    let mut idx: Vec<usize> = (0..scores.len()).collect();
    idx.sort_by(|&a, &b| scores[b].total_cmp(&scores[a]).then(a.cmp(&b)));
    idx.truncate(k);
    idx
}

#[cfg(test)]
mod tests {
    use super::*;

    fn model_file(name: &str) -> Vec<u8> {
        let path = format!(
            "{}/../../models/all-minilm-l6-v2/{name}",
            env!("CARGO_MANIFEST_DIR")
        );
        std::fs::read(&path).unwrap_or_else(|e| panic!("{path}: {e}; run ./dev setup first"))
    }

    fn minilm() -> (TextEncoder, TextPreprocess) {
        let pre = TextPreprocess {
            tokenizer: "tokenizer-pipeline.json".into(),
            vocab: "vocab.bin".into(),
            max_tokens: 16,
            dim: 384,
            pooling: "mean".into(),
            normalize: true,
        };
        let enc = TextEncoder::new(&model_file(&pre.tokenizer), model_file(&pre.vocab), &pre);
        (enc.expect("the tokenizer loads"), pre)
    }

    /// The flat vocabulary must tokenise exactly as `tokenizers` does from the original
    /// tokenizer.json, on every question of the FAQ and its evaluation set and on odd text.
    #[test]
    fn flat_vocab_tokenises_exactly_like_tokenizer_json() {
        let mut reference = tokenizers::Tokenizer::from_bytes(model_file("tokenizer.json")).unwrap();
        reference.with_padding(None);
        reference
            .with_truncation(Some(TruncationParams {
                max_length: 256,
                ..Default::default()
            }))
            .unwrap();
        let pre = TextPreprocess {
            tokenizer: String::new(),
            vocab: String::new(),
            max_tokens: 256,
            dim: 384,
            pooling: "mean".into(),
            normalize: true,
        };
        let ours = TextEncoder::new(
            &model_file("tokenizer-pipeline.json"),
            model_file("vocab.bin"),
            &pre,
        )
        .unwrap();
        let root = concat!(env!("CARGO_MANIFEST_DIR"), "/../../faq/");
        let mut texts: Vec<String> = ["javascript.jsonl", "javascript-eval.jsonl"]
            .iter()
            .flat_map(|f| {
                std::fs::read_to_string(format!("{root}{f}"))
                    .unwrap()
                    .lines()
                    .map(str::to_owned)
                    .collect::<Vec<_>>()
            })
            .collect();
        texts.extend(
            [
                "Crème brûlée, naïve café — Größe",
                "日本語のテキスト and 中文",
                "emoji 🎉🚀 and [CLS] [SEP] literal",
                "supercalifragilisticexpialidocious antidisestablishmentarianism",
                &"x".repeat(150),
                "tabs\tand\nnewlines  and   spaces",
            ]
            .map(str::to_owned),
        );
        for t in &texts {
            let want = reference.encode(t.as_str(), true).unwrap();
            let got = ours.encode(t).unwrap();
            let ids: Vec<i64> = want.get_ids().iter().map(|&i| i64::from(i)).collect();
            assert_eq!(got.input_ids, ids, "{t}");
        }
        assert!(texts.len() > 300);
    }

    #[test]
    fn tokenises_like_bert_uncased() {
        let (enc, _) = minilm();
        let e = enc.encode("How do I Clone an array?").unwrap();
        // [CLS] how do i clone an array ? [SEP]
        assert_eq!(e.input_ids.first(), Some(&101));
        assert_eq!(e.input_ids.last(), Some(&102));
        assert_eq!(e.len(), 9);
        assert!(e.attention_mask.iter().all(|&m| m == 1));
        assert!(e.token_type_ids.iter().all(|&t| t == 0));
        // Lower-cased: the same ids whatever the case.
        assert_eq!(enc.encode("how do i clone an ARRAY?").unwrap(), e);
    }

    #[test]
    fn long_text_is_truncated_and_empty_text_refused() {
        let (enc, _) = minilm();
        let long = "word ".repeat(100);
        let e = enc.encode(&long).unwrap();
        assert_eq!(e.len(), 16);
        assert_eq!(e.input_ids.last(), Some(&102));
        assert!(matches!(enc.encode("  \n"), Err(TextError::Empty)));
    }

    #[test]
    fn pooling_respects_the_mask_and_normalises() {
        let hidden = [1.0, 2.0, 3.0, 4.0, 100.0, 100.0];
        let pooled = mean_pool(&hidden, &[1, 1, 0], 2).unwrap();
        assert_eq!(pooled, vec![2.0, 3.0]);
        let mut v = vec![3.0, 4.0];
        l2_normalize(&mut v);
        assert_eq!(v, vec![0.6, 0.8]);
        assert!(mean_pool(&hidden, &[1, 1], 2).is_err());
    }

    #[test]
    fn top_k_is_best_first() {
        assert_eq!(top_k(&[0.1, 0.9, 0.5, 0.9], 3), vec![1, 3, 2]);
        assert_eq!(top_k(&[0.1], 5), vec![0]);
    }
}
