//! `faq-match`: the best-matching entries of an FAQ list for a user's question.
//!
//! Request path: parse the question -> tokenise (the embedding model's `tokenizer.json`) ->
//! `wasi:nn` compute on the embedding model -> mean pooling and L2 normalisation -> `wasi:nn`
//! compute on the list's index model (one matrix product: a cosine score per entry) -> plus
//! `lexical_weight` x the entry's BM25 score over the same tokens (`lexical.json` of the index,
//! see `text::lexical`) -> top k above the minimum score -> JSON. The list is data: `scoria index` turns it into an index
//! model, and the manifest names the index, so another list needs no rebuild of this code.
//!
//! Configuration from the manifest's `environment`:
//! - `SCORIA_FAQ_INDEX` (required): the index model; its card names the embedding model.
//! - the Spin variable `min_score` (`[component.faq-match.variables]`), else `SCORIA_MIN_SCORE`,
//!   else 0.55: below it a match is not returned; with no match left the answer is
//!   `"matches": [], "no_match": true`.
//! - the Spin variable `lexical_weight`, else `SCORIA_LEXICAL_WEIGHT`, else 0.7: how much the
//!   lexical score adds to the cosine (0: embeddings only).
//! - `SCORIA_MAX_QUESTION_BYTES` (default 8192): longer questions get 413.
//!
//! Every answer carries `Server-Timing` entries for its steps: reading the model cards
//! (`cards`), building the tokenizer (`tokenizer`), `tokenize`, `embed` and `match`.

use scoria_guest::card::{Card, MODELS_ROOT};
use scoria_guest::error::ApiError;
use scoria_guest::nn::{compute, F32Tensor, I64Tensor, Input};
use scoria_guest::timing::Timing;
use scoria_guest::{instance, mount, request};
use serde::{Deserialize, Serialize};
use spin_sdk::http::body::IncomingBodyExt;
use spin_sdk::http::{Method, Request};
use std::cell::OnceCell;
use std::rc::Rc;
use text::lexical::{fuse, LexicalIndex};
use text::{TextEncoder, TextPreprocess};

type Response = spin_sdk::http::Response<String>;

const DEFAULT_K: usize = 5;
const MAX_K: usize = 50;
/// The defaults of `min_score` and `lexical_weight`, measured with `./dev faq-eval`
/// (docs/faq.md): together they answer most in-list questions and few unrelated ones.
const DEFAULT_MIN_SCORE: f32 = 0.55;
const DEFAULT_LEXICAL_WEIGHT: f32 = 0.7;
/// A score is at most `1 + lexical_weight`.
const MAX_LEXICAL_WEIGHT: f32 = 4.0;

thread_local! {
    /// The index's and the embedding model's cards, and the tokenizer, built by an instance's
    /// first request (see `scoria_guest::instance`).
    static CARDS: OnceCell<Rc<(Card<IndexPre>, Card<TextPreprocess>)>> = const { OnceCell::new() };
    static ENCODER: OnceCell<Rc<TextEncoder>> = const { OnceCell::new() };
    static LEXICAL: OnceCell<Rc<LexicalIndex>> = const { OnceCell::new() };
}

#[spin_sdk::http_service]
async fn handle(req: Request) -> Response {
    let mut timing = Timing::default();
    let result = answer(req, &mut timing).await;
    let (status, body) = match result {
        Ok(json) => (200, json),
        Err(e) => (e.status, e.to_json()),
    };
    let mut r = scoria_guest::response::json(status, body);
    timing.add_to(&mut r);
    r
}

/// The JSON request forms: `{"question": ..., "k": ...}` or the reference architecture's
/// `{"input": ...}`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct JsonRequest {
    question: Option<String>,
    input: Option<String>,
    k: Option<usize>,
    min_score: Option<f32>,
    lexical_weight: Option<f32>,
}

/// What an index card's `[preprocess]` says (written by `scoria index`).
#[derive(Deserialize)]
struct IndexPre {
    embedding_model: String,
    entries: String,
    lexical: String,
}

/// One line of the index's `entries.jsonl`.
#[derive(Deserialize)]
struct Entry {
    id: String,
    question: String,
    #[serde(default)]
    answer: Option<String>,
}

#[derive(Serialize)]
struct Match {
    id: String,
    question: String,
    /// What the entries are ranked by: `cosine + lexical_weight x lexical`.
    score: f32,
    cosine: f32,
    lexical: f32,
    #[serde(skip_serializing_if = "Option::is_none")]
    answer: Option<String>,
}

#[derive(Serialize)]
struct Answer<'a> {
    model: &'a str,
    index: &'a str,
    matches: Vec<Match>,
    no_match: bool,
}

/// A parsed request.
struct Question {
    text: String,
    k: usize,
    min_score: Option<f32>,
    lexical_weight: Option<f32>,
}

async fn answer(req: Request, timing: &mut Timing) -> Result<String, ApiError> {
    if req.method() != Method::POST {
        return Err(ApiError::new(
            405,
            "method_not_allowed",
            "use POST with {\"question\": \"...\"} or a text/plain body",
        ));
    }
    let max_bytes = request::env_or("SCORIA_MAX_QUESTION_BYTES", 8192usize)?;
    let query_k = request::query_k(req.uri().query(), MAX_K)?;
    let content_type = request::media_type(req.headers().get("content-type").and_then(|v| v.to_str().ok()));
    let body =
        req.into_body().bytes().await.map_err(|e| {
            ApiError::bad_request("body_unreadable", format!("could not read the body: {e:?}"))
        })?;
    // JSON escapes can at most sextuple a character; anything bigger cannot hold a valid question.
    if body.len() > max_bytes * 6 + 1024 {
        return Err(ApiError::new(
            413,
            "question_too_large",
            format!(
                "the request body has {} bytes, more than any question within the limit of {max_bytes} bytes \
                 (SCORIA_MAX_QUESTION_BYTES) can take",
                body.len()
            ),
        ));
    }
    let q = parse(&body, content_type.as_deref(), query_k)?;
    if q.text.len() > max_bytes {
        return Err(too_long(q.text.len(), max_bytes));
    }
    let min_score = match q.min_score {
        Some(s) => s,
        None => request::variable_or_env("min_score", "SCORIA_MIN_SCORE", DEFAULT_MIN_SCORE).await?,
    };
    let lexical_weight = match q.lexical_weight {
        Some(w) => w,
        None => {
            request::variable_or_env("lexical_weight", "SCORIA_LEXICAL_WEIGHT", DEFAULT_LEXICAL_WEIGHT)
                .await?
        }
    };

    let index_name = request::env_required("SCORIA_FAQ_INDEX")?;
    let cards = timing.time("cards", || {
        instance::keep(&CARDS, || {
            let index: Card<IndexPre> = Card::load(&index_name)?;
            let model: Card<TextPreprocess> = Card::load(&index.preprocess.embedding_model)?;
            Ok::<_, ApiError>((index, model))
        })
    })?;
    let (index, model) = &*cards;

    // A fresh instance has no tokenizer yet: building one is its own step.
    let encoder = timing.time("tokenizer", || {
        instance::keep(&ENCODER, || {
            let read = |file: &str| {
                let path = format!("{MODELS_ROOT}/{}/{file}", model.name);
                mount::read(&path).map_err(|e| {
                    ApiError::internal("tokenizer_unreadable", format!("cannot read {path}: {e}"))
                })
            };
            let pre = &model.preprocess;
            TextEncoder::new(&read(&pre.tokenizer)?, read(&pre.vocab)?, pre)
                .map_err(|e| ApiError::internal("tokenizer_invalid", format!("{}: {e}", model.name)))
        })
    })?;
    let encoded = timing.time("tokenize", || {
        encoder
            .encode(&q.text)
            .map_err(|e| ApiError::bad_request("empty_question", e.to_string()))
    })?;

    let embedding = timing.time("embed", || {
        let len = encoded.len() as u32;
        let tensor = |v: &[i64]| {
            Input::I64(I64Tensor {
                dims: vec![1, len],
                data: v.to_vec(),
            })
        };
        let inputs = model
            .inputs
            .iter()
            .map(|t| {
                let v = match t.name.as_str() {
                    "input_ids" => &encoded.input_ids,
                    "attention_mask" => &encoded.attention_mask,
                    "token_type_ids" => &encoded.token_type_ids,
                    other => {
                        return Err(ApiError::internal(
                            "model_card_invalid",
                            format!("unknown text model input `{other}`"),
                        ))
                    }
                };
                Ok((t.name.clone(), tensor(v)))
            })
            .collect::<Result<Vec<_>, _>>()?;
        let hidden = first_output(compute(&model.name, inputs)?)?;
        text::embedding(&hidden.data, &encoded, &model.preprocess)
            .map_err(|e| ApiError::internal("inference_failed", e.to_string()))
    })?;

    let matches = timing.time("match", || {
        let query_name = index
            .inputs
            .first()
            .map(|t| t.name.clone())
            .unwrap_or_else(|| "query".into());
        let query = Input::F32(F32Tensor {
            dims: vec![1, embedding.len() as u32],
            data: embedding,
        });
        let cosine = first_output(compute(&index.name, vec![(query_name, query)])?)?.data;
        let lexical = if lexical_weight == 0.0 {
            vec![0.0; cosine.len()]
        } else {
            let weights = instance::keep(&LEXICAL, || {
                let path = format!("{MODELS_ROOT}/{}/{}", index.name, index.preprocess.lexical);
                let bytes = mount::read(&path).map_err(|e| {
                    ApiError::internal("index_unreadable", format!("cannot read {path}: {e}"))
                })?;
                serde_json::from_slice::<LexicalIndex>(&bytes).map_err(|e| {
                    ApiError::internal("index_invalid", format!("{path}: {e}; rebuild the index"))
                })
            })?;
            let terms = encoder
                .terms(&q.text)
                .map_err(|e| ApiError::bad_request("empty_question", e.to_string()))?;
            weights.scores(&terms)
        };
        let scores = fuse(&cosine, &lexical, lexical_weight);
        let best: Vec<usize> = text::top_k(&scores, q.k)
            .into_iter()
            .filter(|&i| scores[i] >= min_score)
            .collect();
        let entries = read_entries(&index.name, &index.preprocess.entries, &best)?;
        Ok::<_, ApiError>(
            best.iter()
                .zip(entries)
                .map(|(&i, e)| Match {
                    id: e.id,
                    question: e.question,
                    score: scores[i],
                    cosine: cosine[i],
                    lexical: lexical.get(i).copied().unwrap_or(0.0),
                    answer: e.answer,
                })
                .collect::<Vec<_>>(),
        )
    })?;

    serde_json::to_string(&Answer {
        model: &model.name,
        index: &index.name,
        no_match: matches.is_empty(),
        matches,
    })
    .map_err(|e| ApiError::internal("serialisation_failed", e.to_string()))
}

/// Accept JSON (`question` or `input`, optional `k` and `min_score`) or a text/plain body.
fn parse(body: &[u8], content_type: Option<&str>, query_k: Option<usize>) -> Result<Question, ApiError> {
    let text = std::str::from_utf8(body)
        .map_err(|e| ApiError::bad_request("invalid_utf8", format!("the body is not valid UTF-8: {e}")))?;
    let is_json = match content_type {
        Some("application/json") => true,
        Some("text/plain") => false,
        // No type: JSON if it looks like an object, else the question itself.
        None => text.trim_start().starts_with('{'),
        Some(other) => {
            return Err(ApiError::new(
                415,
                "unsupported_media_type",
                format!("Content-Type `{other}` is not supported; send application/json or text/plain"),
            ))
        }
    };
    let q = if is_json {
        let req: JsonRequest = serde_json::from_str(text).map_err(|e| {
            ApiError::bad_request(
                "invalid_json",
                format!("{e}; expected {{\"question\": \"...\", \"k\": 5}} or {{\"input\": \"...\"}}"),
            )
        })?;
        let text = match (req.question, req.input) {
            (Some(q), None) | (None, Some(q)) => q,
            _ => {
                return Err(ApiError::bad_request(
                    "invalid_json",
                    "send exactly one of `question` or `input`",
                ))
            }
        };
        let k = match req.k.or(query_k) {
            Some(k) if !(1..=MAX_K).contains(&k) => return Err(bad_k(k)),
            k => k.unwrap_or(DEFAULT_K),
        };
        if let Some(s) = req.min_score {
            if !(-1.0..=1.0 + MAX_LEXICAL_WEIGHT).contains(&s) {
                return Err(ApiError::bad_request(
                    "invalid_min_score",
                    format!(
                        "min_score must be from -1 to {}, not {s}",
                        1.0 + MAX_LEXICAL_WEIGHT
                    ),
                ));
            }
        }
        if let Some(w) = req.lexical_weight {
            if !(0.0..=MAX_LEXICAL_WEIGHT).contains(&w) {
                return Err(ApiError::bad_request(
                    "invalid_lexical_weight",
                    format!("lexical_weight must be from 0 to {MAX_LEXICAL_WEIGHT}, not {w}"),
                ));
            }
        }
        Question {
            text,
            k,
            min_score: req.min_score,
            lexical_weight: req.lexical_weight,
        }
    } else {
        Question {
            text: text.to_string(),
            k: query_k.unwrap_or(DEFAULT_K),
            min_score: None,
            lexical_weight: None,
        }
    };
    if q.text.trim().is_empty() {
        return Err(ApiError::bad_request("empty_question", "the question is empty"));
    }
    Ok(q)
}

fn bad_k(k: usize) -> ApiError {
    ApiError::bad_request("invalid_k", format!("k must be from 1 to {MAX_K}, not {k}"))
}

fn too_long(len: usize, max: usize) -> ApiError {
    ApiError::new(
        413,
        "question_too_large",
        format!("the question has {len} bytes; the limit is {max} (SCORIA_MAX_QUESTION_BYTES)"),
    )
}

fn first_output(outputs: Vec<(String, F32Tensor)>) -> Result<F32Tensor, ApiError> {
    outputs
        .into_iter()
        .next()
        .map(|(_, t)| t)
        .ok_or_else(|| ApiError::internal("inference_failed", "the model returned no output"))
}

/// The entries at `wanted` (column indices of the index), in that order; only those lines are
/// parsed.
fn read_entries(index: &str, file: &str, wanted: &[usize]) -> Result<Vec<Entry>, ApiError> {
    if wanted.is_empty() {
        return Ok(Vec::new());
    }
    let path = format!("{MODELS_ROOT}/{index}/{file}");
    let text = mount::read_to_string(&path)
        .map_err(|e| ApiError::internal("index_unreadable", format!("cannot read {path}: {e}")))?;
    let lines: Vec<&str> = text.lines().collect();
    wanted
        .iter()
        .map(|&i| {
            let line = lines.get(i).ok_or_else(|| {
                ApiError::internal(
                    "index_invalid",
                    format!("{path} has no entry {i}; rebuild the index"),
                )
            })?;
            serde_json::from_str(line)
                .map_err(|e| ApiError::internal("index_invalid", format!("{path} line {}: {e}", i + 1)))
        })
        .collect()
}
