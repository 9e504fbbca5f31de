//! Embedding indexes: a list of texts (an FAQ) turned into a model that scores a query
//! embedding against every entry in one `wasi:nn` call.
//!
//! An index is a model folder with a committed `index.toml` naming the list and the embedding
//! model. [`build`] embeds every entry with that model (through [`text`], the very code the
//! functions run) and writes, beside `index.toml`:
//!
//! - `index.onnx`: `scores[b, n] = query[b, dim] x matrix[dim, n]`, the entries' unit-length
//!   embeddings as columns, so a score is the cosine similarity;
//! - `entries.jsonl`: the entries in column order, which the function reads for ids and text;
//! - `lexical.json`: the BM25 weights of the list's words ([`text::lexical`]), which the
//!   function fuses with the cosine (dense + weight x lexical);
//! - `model.toml`: an ordinary card, whose `[preprocess]` records the digests of the list and
//!   of the embedding model. [`is_current`] compares them, so `scoria up` rebuilds a stale
//!   index at start-up and otherwise reuses it.

use crate::models::{ModelEntry, Repository, sha256_file};
use crate::nn::{LoadedModel, Tensor};
use prost::Message as _;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::path::{Component, Path, PathBuf};
use text::{TextEncoder, TextPreprocess};
use tract_onnx::pb;

/// The file that makes a model folder an index.
pub const SPEC_FILE: &str = "index.toml";

/// The list's BM25 weights, beside the index model.
pub const LEXICAL_FILE: &str = "lexical.json";

/// Part of every index's digest: an index written by an older `scoria index` (one without
/// [`LEXICAL_FILE`], say) is stale and rebuilt.
const FORMAT: &str = "index-format:2";

/// Why an index could not be read or built; every variant names the file at fault.
#[derive(Debug, thiserror::Error)]
pub enum IndexError {
    #[error("{file}: cannot read: {source}")]
    Read {
        file: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{file}: cannot write: {source}")]
    Write {
        file: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{file}: {message}")]
    Invalid { file: PathBuf, message: String },
    #[error("{file} line {line}: {message}")]
    List {
        file: PathBuf,
        line: usize,
        message: String,
    },
    #[error("embedding `{text}`: {message}")]
    Embed { text: String, message: String },
    #[error(transparent)]
    Model(#[from] crate::models::ModelError),
}

/// `index.toml`: what the index is built from.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IndexSpec {
    /// The list (`.jsonl` or `.tsv`), relative to the index folder.
    pub list: PathBuf,
    /// The embedding model's folder name in the same repository.
    pub embedding_model: String,
    /// Copied into the card; the list's own licence.
    #[serde(default = "unknown")]
    pub licence: String,
}

fn unknown() -> String {
    "see the list".into()
}

impl IndexSpec {
    /// Read `<dir>/index.toml`, or `None` if the folder is not an index.
    pub fn load(dir: &Path) -> Result<Option<Self>, IndexError> {
        let file = dir.join(SPEC_FILE);
        if !file.is_file() {
            return Ok(None);
        }
        let text = std::fs::read_to_string(&file).map_err(|source| IndexError::Read {
            file: file.clone(),
            source,
        })?;
        toml::from_str(&text).map(Some).map_err(|e| IndexError::Invalid {
            file,
            message: e.to_string(),
        })
    }
}

/// One entry of a list: what a question is matched against, and what comes back.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListEntry {
    pub id: String,
    pub question: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub answer: Option<String>,
    /// Other phrasings of the question; an entry scores as its best-matching phrasing.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub alternatives: Vec<String>,
    /// More text about the entry (a Stack Overflow question's own text, say), plain text once
    /// read: HTML tags and entities are stripped. Matched lexically only, and not copied into
    /// `entries.jsonl` since answers never show it.
    #[serde(default, skip_serializing)]
    pub body: Option<String>,
}

impl ListEntry {
    /// The texts an entry is matched by: its question, then its alternatives.
    pub fn phrasings(&self) -> impl Iterator<Item = &str> {
        std::iter::once(self.question.as_str()).chain(self.alternatives.iter().map(String::as_str))
    }
}

/// Read a list: JSON Lines (`{"id", "question", "answer"?, "alternatives"?, "body"?}` per
/// line) or TSV, by extension. A TSV list is `id<TAB>question[<TAB>answer]`, or has a first
/// line naming its columns from `id`, `question`, `answer`, `body` and `alternatives`
/// (phrasings separated by `|`). Blank lines and, in TSV, lines starting with `#` are skipped.
/// Ids must be unique and questions non-empty; a body's HTML is reduced to plain text.
pub fn read_list(file: &Path) -> Result<Vec<ListEntry>, IndexError> {
    let text = std::fs::read_to_string(file).map_err(|source| IndexError::Read {
        file: file.to_path_buf(),
        source,
    })?;
    let tsv = file.extension().is_some_and(|e| e == "tsv");
    let err = |line: usize, message: String| IndexError::List {
        file: file.to_path_buf(),
        line,
        message,
    };
    let mut columns: Option<Vec<Column>> = None;
    let mut entries: Vec<ListEntry> = Vec::new();
    let mut seen = std::collections::HashSet::new();
    for (i, raw) in text.lines().enumerate() {
        let line = i + 1;
        if raw.trim().is_empty() || (tsv && raw.starts_with('#')) {
            continue;
        }
        let mut entry = if tsv {
            if columns.is_none()
                && entries.is_empty()
                && let Some(header) = Column::header(raw).map_err(|m| err(line, m))?
            {
                columns = Some(header);
                continue;
            }
            let columns = columns.as_deref().unwrap_or(&Column::DEFAULT);
            Column::entry(columns, raw).map_err(|m| err(line, m))?
        } else {
            serde_json::from_str(raw).map_err(|e| {
                err(
                    line,
                    format!(
                        "{e}; expected {{\"id\": \"...\", \"question\": \"...\", \"answer\": \"...\", \"alternatives\": [\"...\"], \"body\": \"...\"}}"
                    ),
                )
            })?
        };
        if entry.id.is_empty() || entry.question.trim().is_empty() {
            return Err(err(line, "`id` and `question` must not be empty".into()));
        }
        if entry.alternatives.iter().any(|a| a.trim().is_empty()) {
            return Err(err(line, "an entry of `alternatives` is empty".into()));
        }
        entry.body = entry.body.as_deref().map(plain_text).filter(|b| !b.is_empty());
        if !seen.insert(entry.id.clone()) {
            return Err(err(line, format!("duplicate id `{}`", entry.id)));
        }
        entries.push(entry);
    }
    if entries.is_empty() {
        return Err(err(0, "the list has no entries".into()));
    }
    Ok(entries)
}

/// A column of a TSV list.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Column {
    Id,
    Question,
    Answer,
    Body,
    Alternatives,
}

impl Column {
    /// The columns of a list without a header line.
    const DEFAULT: [Column; 3] = [Column::Id, Column::Question, Column::Answer];

    /// The columns a header line names, or `None` if `line` is not a header (its first cell
    /// is not `id`).
    fn header(line: &str) -> Result<Option<Vec<Column>>, String> {
        let cells: Vec<&str> = line.split('\t').map(str::trim).collect();
        if cells.first() != Some(&"id") {
            return Ok(None);
        }
        let columns = cells
            .iter()
            .map(|c| match *c {
                "id" => Ok(Column::Id),
                "question" => Ok(Column::Question),
                "answer" => Ok(Column::Answer),
                "body" => Ok(Column::Body),
                "alternatives" => Ok(Column::Alternatives),
                other => Err(format!(
                    "unknown column `{other}` in the header; columns are id, question, answer, body, alternatives"
                )),
            })
            .collect::<Result<Vec<_>, _>>()?;
        for (i, c) in columns.iter().enumerate() {
            if columns[..i].contains(c) {
                return Err(format!("column `{}` is named twice in the header", cells[i]));
            }
        }
        if !columns.contains(&Column::Question) {
            return Err("the header has no `question` column".into());
        }
        Ok(Some(columns))
    }

    /// One line of cells in the order of `columns`; missing trailing cells are empty.
    fn entry(columns: &[Column], line: &str) -> Result<ListEntry, String> {
        let cells: Vec<&str> = line.split('\t').map(str::trim).collect();
        if cells.len() < 2 || cells.len() > columns.len() {
            return Err(format!(
                "expected {} tab-separated cells ({}), found {}",
                if columns.len() > 2 {
                    format!("2 to {}", columns.len())
                } else {
                    "2".into()
                },
                columns
                    .iter()
                    .map(|c| format!("{c:?}").to_lowercase())
                    .collect::<Vec<_>>()
                    .join(", "),
                cells.len()
            ));
        }
        let mut e = ListEntry {
            id: String::new(),
            question: String::new(),
            answer: None,
            alternatives: Vec::new(),
            body: None,
        };
        for (column, cell) in columns.iter().zip(cells) {
            let some = || Some(cell.to_string()).filter(|c| !c.is_empty());
            match column {
                Column::Id => e.id = cell.into(),
                Column::Question => e.question = cell.into(),
                Column::Answer => e.answer = some(),
                Column::Body => e.body = some(),
                Column::Alternatives => {
                    e.alternatives = cell
                        .split('|')
                        .map(str::trim)
                        .filter(|a| !a.is_empty())
                        .map(String::from)
                        .collect()
                }
            }
        }
        Ok(e)
    }
}

/// Plain text of an HTML fragment: tags removed (the contents of `script` and `style` too),
/// entities decoded, runs of white space made one space. Text that merely contains `<` (as in
/// `a < b`) is kept.
pub fn plain_text(html: &str) -> String {
    let mut out = String::with_capacity(html.len());
    let mut rest = html;
    while let Some(i) = rest.find(['<', '&']) {
        out.push_str(&rest[..i]);
        rest = &rest[i..];
        if rest.starts_with('&') {
            let (decoded, used) = entity(rest);
            out.push_str(&decoded);
            rest = &rest[used..];
            continue;
        }
        let is_tag = rest[1..]
            .chars()
            .next()
            .is_some_and(|c| c.is_ascii_alphabetic() || matches!(c, '/' | '!' | '?'));
        let Some(end) = rest.find('>').filter(|_| is_tag) else {
            out.push('<');
            rest = &rest[1..];
            continue;
        };
        let tag = rest[1..end].to_ascii_lowercase();
        rest = &rest[end + 1..];
        for skipped in ["script", "style"] {
            if tag.split_whitespace().next() == Some(skipped) {
                let close = format!("</{skipped}");
                let at = rest.to_ascii_lowercase().find(&close).unwrap_or(rest.len());
                rest = &rest[at..];
                rest = rest.find('>').map_or("", |e| &rest[e + 1..]);
            }
        }
        out.push(' ');
    }
    out.push_str(rest);
    out.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// The text an entity at the start of `s` stands for, and how many bytes it took; an
/// unknown one stands for itself.
fn entity(s: &str) -> (String, usize) {
    let Some(end) = s.find(';').filter(|&e| e <= 10) else {
        return ("&".into(), 1);
    };
    let name = &s[1..end];
    let c = match name {
        "amp" => Some('&'),
        "lt" => Some('<'),
        "gt" => Some('>'),
        "quot" => Some('"'),
        "apos" => Some('\''),
        "nbsp" => Some(' '),
        _ => name
            .strip_prefix("#x")
            .or_else(|| name.strip_prefix("#X"))
            .and_then(|h| u32::from_str_radix(h, 16).ok())
            .or_else(|| name.strip_prefix('#').and_then(|d| d.parse().ok()))
            .and_then(char::from_u32),
    };
    match c {
        Some(c) => (c.to_string(), end + 1),
        None => ("&".into(), 1),
    }
}

/// What an index's digests are computed from: the list, and everything that decides an
/// embedding (weights, tokenizer, pooling settings).
struct Sources {
    list_file: PathBuf,
    list_sha256: String,
    embedding_sha256: String,
    text: TextPreprocess,
    tokenizer: Vec<u8>,
    vocab: Vec<u8>,
}

fn sources(repo: &Repository, dir: &Path, spec: &IndexSpec) -> Result<Sources, IndexError> {
    let list_file = dir.join(&spec.list);
    let list_sha256 = sha256_file(&list_file)?;
    let model = repo.get(&spec.embedding_model)?;
    let card_file = model.dir.join("model.toml");
    let text: TextPreprocess = model
        .card
        .preprocess
        .clone()
        .ok_or_else(|| "has no [preprocess] table".to_string())
        .and_then(|t| t.try_into().map_err(|e: toml::de::Error| e.to_string()))
        .map_err(|message| IndexError::Invalid {
            file: card_file.clone(),
            message: format!("not a text embedding model: {message}"),
        })?;
    let read = |name: &str| {
        let file = model.dir.join(name);
        std::fs::read(&file).map_err(|source| IndexError::Read { file, source })
    };
    let tokenizer = read(&text.tokenizer)?;
    let vocab = read(&text.vocab)?;
    let mut h = Sha256::new();
    h.update(model.card.sha256.as_bytes());
    h.update(Sha256::digest(&tokenizer));
    h.update(Sha256::digest(&vocab));
    h.update(FORMAT);
    h.update(format!(
        "{}:{}:{}:{}",
        text.max_tokens, text.dim, text.pooling, text.normalize
    ));
    Ok(Sources {
        list_file,
        list_sha256,
        embedding_sha256: hex::encode(h.finalize()),
        text,
        tokenizer,
        vocab,
    })
}

/// Whether `<dir>` holds a built index whose digests match its list and embedding model.
pub fn is_current(repo: &Repository, dir: &Path) -> Result<bool, IndexError> {
    let Some(spec) = IndexSpec::load(dir)? else {
        return Ok(true);
    };
    let src = sources(repo, dir, &spec)?;
    let Ok(entry) = ModelEntry::load(dir) else {
        return Ok(false);
    };
    let recorded = |key: &str| {
        entry
            .card
            .preprocess
            .as_ref()
            .and_then(|p| p.get(key))
            .and_then(|v| v.as_str())
            .map(str::to_owned)
    };
    Ok(recorded("list_sha256").as_deref() == Some(&src.list_sha256)
        && recorded("embedding_sha256").as_deref() == Some(&src.embedding_sha256)
        && entry.check().is_ok())
}

/// Embed every entry of the index's list with `embedder` (the loaded embedding model) and
/// write the index files into `dir`. Returns the number of entries.
pub fn build(repo: &Repository, dir: &Path, embedder: &LoadedModel) -> Result<usize, IndexError> {
    let spec_file = dir.join(SPEC_FILE);
    let spec = IndexSpec::load(dir)?.ok_or_else(|| IndexError::Invalid {
        file: spec_file.clone(),
        message: "missing; fix: create it with `scoria index <name> --list <file> --embedding-model <model>`"
            .into(),
    })?;
    if embedder.entry.card.name != spec.embedding_model {
        return Err(IndexError::Invalid {
            file: spec_file,
            message: format!(
                "names embedding model `{}`, but `{}` was given",
                spec.embedding_model, embedder.entry.card.name
            ),
        });
    }
    let src = sources(repo, dir, &spec)?;
    let entries = read_list(&src.list_file)?;
    let encoder =
        TextEncoder::new(&src.tokenizer, src.vocab, &src.text).map_err(|e| IndexError::Invalid {
            file: embedder.entry.dir.join(&src.text.tokenizer),
            message: e.to_string(),
        })?;
    let dim = src.text.dim;
    // Each entry has `per` columns, one per phrasing; an entry with fewer repeats its
    // question's, which changes no maximum. Row r of `matrix` is dimension r of every column.
    let n = entries.len();
    let per = entries.iter().map(|e| e.phrasings().count()).max().unwrap_or(1);
    let cols = n * per;
    let mut matrix = vec![0f32; dim * cols];
    for (i, entry) in entries.iter().enumerate() {
        let embedded = entry
            .phrasings()
            .map(|text| embed(embedder, &encoder, &src.text, text))
            .collect::<Result<Vec<_>, _>>()?;
        for k in 0..per {
            let e = embedded.get(k).unwrap_or(&embedded[0]);
            for (r, v) in e.iter().enumerate() {
                matrix[r * cols + i * per + k] = *v;
            }
        }
    }

    let name = dir
        .file_name()
        .and_then(|n| n.to_str())
        .unwrap_or("index")
        .to_string();
    let onnx = dir.join("index.onnx");
    write(&onnx, &matmul_model(&matrix, dim, n, per))?;
    let jsonl: String = entries
        .iter()
        .map(|e| serde_json::to_string(e).map(|s| s + "\n"))
        .collect::<Result<_, _>>()
        .map_err(|e| IndexError::Invalid {
            file: src.list_file.clone(),
            message: e.to_string(),
        })?;
    write(&dir.join("entries.jsonl"), jsonl.as_bytes())?;
    let lexical = lexical_index(&encoder, &entries)?;
    let lexical = serde_json::to_vec(&lexical).map_err(|e| IndexError::Invalid {
        file: src.list_file.clone(),
        message: e.to_string(),
    })?;
    write(&dir.join(LEXICAL_FILE), &lexical)?;
    let list = spec.list.display().to_string();
    let model = &spec.embedding_model;
    let card = card::IndexCard {
        name: &name,
        version: &src.list_sha256[..12],
        description: format!("Embedding index of {list} ({n} entries) for {model}"),
        format: "onnx",
        file: "index.onnx",
        sha256: sha256_file(&onnx)?,
        weights: "generated",
        source: format!("scoria index: {list} embedded with {model}"),
        licence: &spec.licence,
        inputs: [card::Tensor::f32("query", [-1, dim as i64])],
        outputs: [card::Tensor::f32("scores", [-1, n as i64])],
        preprocess: card::IndexPreprocess {
            embedding_model: model,
            entries: "entries.jsonl",
            lexical: LEXICAL_FILE,
            list_sha256: &src.list_sha256,
            embedding_sha256: &src.embedding_sha256,
        },
    };
    let card = card.to_toml().map_err(|e| IndexError::Invalid {
        file: dir.join("model.toml"),
        message: e.to_string(),
    })?;
    write(&dir.join("model.toml"), card.as_bytes())?;
    Ok(n)
}

/// The BM25 weights of the list's words (`lexical.json`, read by faq-match): an entry's
/// document is its question, alternatives, body and answer, each truncated to what the
/// embedding model reads.
fn lexical_index(
    encoder: &TextEncoder,
    entries: &[ListEntry],
) -> Result<text::lexical::LexicalIndex, IndexError> {
    let docs = entries
        .iter()
        .map(|e| {
            let texts = e.phrasings().chain(e.body.as_deref()).chain(e.answer.as_deref());
            let mut doc = Vec::new();
            for text in texts {
                doc.extend(encoder.terms(text).map_err(|err| IndexError::Embed {
                    text: text.chars().take(60).collect(),
                    message: err.to_string(),
                })?);
            }
            Ok(doc)
        })
        .collect::<Result<Vec<_>, IndexError>>()?;
    Ok(text::lexical::LexicalIndex::build(&docs))
}

/// One text's embedding, exactly as the functions compute it.
pub fn embed(
    model: &LoadedModel,
    encoder: &TextEncoder,
    pre: &TextPreprocess,
    text: &str,
) -> Result<Vec<f32>, IndexError> {
    let fail = |message: String| IndexError::Embed {
        text: text.chars().take(60).collect(),
        message,
    };
    let enc = encoder.encode(text).map_err(|e| fail(e.to_string()))?;
    embed_encoded(model, &enc, pre).map_err(fail)
}

/// The embedding of an already tokenised text; the error is a message for [`IndexError::Embed`].
pub fn embed_encoded(
    model: &LoadedModel,
    enc: &text::Encoded,
    pre: &TextPreprocess,
) -> Result<Vec<f32>, String> {
    let len = enc.len() as u32;
    let tensor = |v: &[i64]| Tensor {
        dims: vec![1, len],
        dtype: crate::models::DType::I64,
        data: v.iter().flat_map(|x| x.to_le_bytes()).collect(),
    };
    let inputs = model
        .entry
        .card
        .inputs
        .iter()
        .map(|spec| {
            let t = match spec.name.as_str() {
                "input_ids" => tensor(&enc.input_ids),
                "attention_mask" => tensor(&enc.attention_mask),
                "token_type_ids" => tensor(&enc.token_type_ids),
                other => return Err(format!("unknown text model input `{other}`")),
            };
            Ok((spec.name.clone(), t))
        })
        .collect::<Result<Vec<_>, _>>()?;
    let out = model.compute(inputs).map_err(|e| e.to_string())?;
    let hidden: Vec<f32> = out
        .first()
        .map(|(_, t)| {
            t.data
                .chunks_exact(4)
                .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
                .collect()
        })
        .unwrap_or_default();
    text::embedding(&hidden, enc, pre).map_err(|e| e.to_string())
}

/// The ONNX graph `scores = query x matrix`, with `matrix` (`[dim, n * per]`, row-major) as a
/// constant: matching becomes one more inference on whatever backend serves the model. With
/// `per` phrasings an entry (columns `i * per ..`), each entry's score is its best one:
/// the product is reshaped to `[batch, n, per]` and reduced with `ReduceMax`.
pub(crate) fn matmul_model(matrix: &[f32], dim: usize, n: usize, per: usize) -> Vec<u8> {
    use pb::tensor_proto::DataType;
    use pb::tensor_shape_proto::{Dimension, dimension::Value as Dim};
    let value = |name: &str, dims: Vec<Dim>| pb::ValueInfoProto {
        name: name.into(),
        r#type: Some(pb::TypeProto {
            value: Some(pb::type_proto::Value::TensorType(pb::type_proto::Tensor {
                elem_type: DataType::Float as i32,
                shape: Some(pb::TensorShapeProto {
                    dim: dims
                        .into_iter()
                        .map(|v| Dimension {
                            value: Some(v),
                            ..Default::default()
                        })
                        .collect(),
                }),
            })),
            ..Default::default()
        }),
        ..Default::default()
    };
    let node = |op: &str, inputs: &[&str], output: &str, attribute: Vec<pb::AttributeProto>| pb::NodeProto {
        input: inputs.iter().map(|i| i.to_string()).collect(),
        output: vec![output.into()],
        name: output.into(),
        op_type: op.into(),
        attribute,
        ..Default::default()
    };
    let mut initializer = vec![pb::TensorProto {
        name: "matrix".into(),
        dims: vec![dim as i64, (n * per) as i64],
        data_type: DataType::Float as i32,
        raw_data: matrix.iter().flat_map(|v| v.to_le_bytes()).collect(),
        ..Default::default()
    }];
    let nodes = if per == 1 {
        vec![node("MatMul", &["query", "matrix"], "scores", vec![])]
    } else {
        initializer.push(pb::TensorProto {
            name: "by_entry_shape".into(),
            dims: vec![3],
            data_type: DataType::Int64 as i32,
            raw_data: [-1i64, n as i64, per as i64]
                .iter()
                .flat_map(|v| v.to_le_bytes())
                .collect(),
            ..Default::default()
        });
        let axes = pb::AttributeProto {
            name: "axes".into(),
            r#type: pb::attribute_proto::AttributeType::Ints as i32,
            ints: vec![2],
            ..Default::default()
        };
        let keepdims = pb::AttributeProto {
            name: "keepdims".into(),
            r#type: pb::attribute_proto::AttributeType::Int as i32,
            i: 0,
            ..Default::default()
        };
        vec![
            node("MatMul", &["query", "matrix"], "phrasing_scores", vec![]),
            node(
                "Reshape",
                &["phrasing_scores", "by_entry_shape"],
                "by_entry",
                vec![],
            ),
            node("ReduceMax", &["by_entry"], "scores", vec![axes, keepdims]),
        ]
    };
    let graph = pb::GraphProto {
        name: "index".into(),
        node: nodes,
        initializer,
        input: vec![value(
            "query",
            vec![Dim::DimParam("batch".into()), Dim::DimValue(dim as i64)],
        )],
        output: vec![value(
            "scores",
            vec![Dim::DimParam("batch".into()), Dim::DimValue(n as i64)],
        )],
        ..Default::default()
    };
    pb::ModelProto {
        ir_version: 8,
        producer_name: "scoria index".into(),
        opset_import: vec![pb::OperatorSetIdProto {
            domain: String::new(),
            version: 17,
        }],
        graph: Some(graph),
        ..Default::default()
    }
    .encode_to_vec()
}

fn write(file: &Path, bytes: &[u8]) -> Result<(), IndexError> {
    // Write then rename, so a reader (or a crash) never sees half a file; the name is per
    // process, since hosts starting together may build the same index at once.
    let tmp = file.with_extension(format!("tmp-{}", std::process::id()));
    std::fs::write(&tmp, bytes)
        .and_then(|()| std::fs::rename(&tmp, file))
        .map_err(|source| IndexError::Write {
            file: file.to_path_buf(),
            source,
        })
}

/// `target` relative to the folder `from` (both made absolute), for paths stored in
/// `index.toml` that must survive moving the project.
///
/// Both are resolved through symbolic links first: the operating system follows a link
/// before it applies `..`, so a path computed from the link's own location would lead
/// elsewhere when the folder is a link (a models folder of links, a Kubernetes volume).
pub fn relative_to(target: &Path, from: &Path) -> std::io::Result<PathBuf> {
    let resolve = |p: &Path| std::fs::canonicalize(p).or_else(|_| std::path::absolute(p));
    let target = resolve(target)?;
    let from = resolve(from)?;
    let t: Vec<Component> = target.components().collect();
    let f: Vec<Component> = from.components().collect();
    let common = t.iter().zip(&f).take_while(|(a, b)| a == b).count();
    let mut out = PathBuf::new();
    for _ in common..f.len() {
        out.push("..");
    }
    for c in &t[common..] {
        out.push(c.as_os_str());
    }
    Ok(out)
}

/// The card `scoria index` writes: the same format as every `model.toml`, serialised rather
/// than formatted, so that any list path or licence text comes out as valid TOML.
mod card {
    use serde::Serialize;

    #[derive(Serialize)]
    pub struct IndexCard<'a> {
        pub name: &'a str,
        pub version: &'a str,
        pub description: String,
        pub format: &'a str,
        pub file: &'a str,
        pub sha256: String,
        pub weights: &'a str,
        pub source: String,
        pub licence: &'a str,
        pub inputs: [Tensor<'a>; 1],
        pub outputs: [Tensor<'a>; 1],
        /// Read by the faq-match function (entries, embedding_model) and by `scoria up` (digests).
        pub preprocess: IndexPreprocess<'a>,
    }

    #[derive(Serialize)]
    pub struct Tensor<'a> {
        name: &'a str,
        shape: [i64; 2],
        dtype: &'a str,
    }

    impl<'a> Tensor<'a> {
        pub fn f32(name: &'a str, shape: [i64; 2]) -> Self {
            Self {
                name,
                shape,
                dtype: "f32",
            }
        }
    }

    #[derive(Serialize)]
    pub struct IndexPreprocess<'a> {
        pub embedding_model: &'a str,
        pub entries: &'a str,
        pub lexical: &'a str,
        pub list_sha256: &'a str,
        pub embedding_sha256: &'a str,
    }

    impl IndexCard<'_> {
        pub fn to_toml(&self) -> Result<String, toml::ser::Error> {
            Ok(format!(
                "# Written by `scoria index` from index.toml; do not edit (rebuilt when the list or the model changes).\n{}",
                toml::to_string(self)?
            ))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_relative_path_from_a_linked_folder_leads_to_its_target() {
        let t = tempfile::tempdir().unwrap();
        let real = t.path().join("project/models/faq");
        std::fs::create_dir_all(&real).unwrap();
        std::fs::create_dir_all(t.path().join("project/faq")).unwrap();
        let list = t.path().join("project/faq/list.jsonl");
        std::fs::write(&list, "{}").unwrap();
        // The index folder seen through a link elsewhere, as a benchmark's models folder has it.
        std::fs::create_dir_all(t.path().join("elsewhere/models")).unwrap();
        let link = t.path().join("elsewhere/models/faq");
        std::os::unix::fs::symlink(&real, &link).unwrap();
        let rel = relative_to(&list, &link).unwrap();
        assert_eq!(rel, Path::new("../../faq/list.jsonl"));
        assert!(link.join(&rel).is_file(), "{}", rel.display());
        assert!(real.join(&rel).is_file(), "{}", rel.display());
    }

    #[test]
    fn an_index_card_is_valid_toml_whatever_its_path_and_licence_hold() {
        let list = r#"C:\faq "v2"\list.jsonl"#;
        let card = card::IndexCard {
            name: "faq-x",
            version: "0123456789ab",
            description: format!("Embedding index of {list} (3 entries) for minilm"),
            format: "onnx",
            file: "index.onnx",
            sha256: "00".repeat(32),
            weights: "generated",
            source: format!("scoria index: {list} embedded with minilm"),
            licence: "CC-BY-4.0 \"with\" notes",
            inputs: [card::Tensor::f32("query", [-1, 384])],
            outputs: [card::Tensor::f32("scores", [-1, 3])],
            preprocess: card::IndexPreprocess {
                embedding_model: "minilm",
                entries: "entries.jsonl",
                lexical: LEXICAL_FILE,
                list_sha256: "aa",
                embedding_sha256: "bb",
            },
        };
        let text = card.to_toml().unwrap();
        let parsed: crate::models::ModelCard = toml::from_str(&text).unwrap();
        assert!(parsed.source.contains(list), "{text}");
        assert_eq!(parsed.licence, "CC-BY-4.0 \"with\" notes");
        assert_eq!(parsed.inputs[0].shape, vec![-1, 384]);
        assert_eq!(parsed.outputs[0].name, "scores");
        let pre = parsed.preprocess.unwrap();
        assert_eq!(pre["embedding_model"].as_str(), Some("minilm"));
    }

    #[test]
    fn lists_parse_as_jsonl_and_tsv_and_refuse_duplicates() {
        let t = tempfile::tempdir().unwrap();
        let jsonl = t.path().join("a.jsonl");
        std::fs::write(
            &jsonl,
            "{\"id\": \"a\", \"question\": \"Q1\", \"answer\": \"A1\"}\n\n{\"id\": \"b\", \"question\": \"Q2\"}\n",
        )
        .unwrap();
        let e = read_list(&jsonl).unwrap();
        assert_eq!(e.len(), 2);
        assert_eq!(e[0].answer.as_deref(), Some("A1"));
        assert_eq!(e[1].answer, None);

        let tsv = t.path().join("b.tsv");
        std::fs::write(&tsv, "# id\tquestion\tanswer\nx\tWhat?\tThat.\ny\tWhy?\n").unwrap();
        let e = read_list(&tsv).unwrap();
        assert_eq!((e[0].id.as_str(), e[1].answer.as_deref()), ("x", None));

        std::fs::write(&tsv, "x\tWhat?\nx\tAgain?\n").unwrap();
        let msg = read_list(&tsv).unwrap_err().to_string();
        assert!(
            msg.contains("line 2") && msg.contains("duplicate id `x`"),
            "{msg}"
        );

        std::fs::write(&jsonl, "{\"id\": \"a\", \"q\": \"typo\"}\n").unwrap();
        let msg = read_list(&jsonl).unwrap_err().to_string();
        assert!(msg.contains("a.jsonl line 1"), "{msg}");
    }

    /// Run the index graph `bytes` on tract for the queries `q` (`[batch, dim]`); returns the
    /// scores' shape and values.
    fn run_index(bytes: &[u8], q: tract_onnx::prelude::tract_ndarray::Array2<f32>) -> (Vec<usize>, Vec<f32>) {
        use tract_onnx::prelude::*;
        let model = tract_onnx::onnx()
            .model_for_read(&mut &bytes[..])
            .unwrap()
            .into_optimized()
            .unwrap()
            .into_runnable()
            .unwrap();
        let out = model.run(tvec![q.into_tensor().into_tvalue()]).unwrap();
        let scores = out[0].to_plain_array_view::<f32>().unwrap();
        (scores.shape().to_vec(), scores.iter().copied().collect())
    }

    #[test]
    fn the_index_graph_is_a_matmul_tract_can_run() {
        // Two entries in 3 dimensions: columns (1,0,0) and (0,1,0).
        let bytes = matmul_model(&[1.0, 0.0, 0.0, 1.0, 0.0, 0.0], 3, 2, 1);
        let (_, scores) = run_index(
            &bytes,
            tract_onnx::prelude::tract_ndarray::arr2(&[[0.6f32, 0.8, 0.0]]),
        );
        assert_eq!(scores, [0.6, 0.8]);
    }

    #[test]
    fn alternatives_are_read_and_checked() {
        let t = tempfile::tempdir().unwrap();
        let jsonl = t.path().join("a.jsonl");
        std::fs::write(
            &jsonl,
            "{\"id\": \"a\", \"question\": \"Q1\", \"alternatives\": [\"Q1 again\", \"Q1 once more\"]}\n",
        )
        .unwrap();
        let e = read_list(&jsonl).unwrap();
        assert_eq!(
            e[0].phrasings().collect::<Vec<_>>(),
            ["Q1", "Q1 again", "Q1 once more"]
        );
        for (bad, says) in [
            (
                "{\"id\": \"a\", \"question\": \"Q\", \"alternatives\": [\" \"]}",
                "`alternatives` is empty",
            ),
            (
                "{\"id\": \"a\", \"question\": \"Q\", \"alternatives\": \"Q2\"}",
                "line 1",
            ),
        ] {
            std::fs::write(&jsonl, format!("{bad}\n")).unwrap();
            let msg = read_list(&jsonl).unwrap_err().to_string();
            assert!(msg.contains(says), "{bad}: {msg}");
        }
    }

    #[test]
    fn an_entry_scores_as_its_best_phrasing() {
        // Two entries, two phrasings each, in 2 dimensions: entry 0 is (1,0) or (0,1); entry 1
        // is (0.6,0.8) twice. Columns: e0p0, e0p1, e1p0, e1p1.
        let matrix = [1.0, 0.0, 0.6, 0.6, 0.0, 1.0, 0.8, 0.8];
        let bytes = matmul_model(&matrix, 2, 2, 2);
        let (shape, scores) = run_index(
            &bytes,
            tract_onnx::prelude::tract_ndarray::arr2(&[[0.0f32, 1.0], [1.0, 0.0]]),
        );
        assert_eq!(shape, [2, 2]);
        assert_eq!(scores, [1.0, 0.8, 1.0, 0.6]);
    }

    #[test]
    fn bodies_lose_their_html_and_tsv_headers_name_the_columns() {
        assert_eq!(
            plain_text(
                "<p>Use <code>a &lt; b</code>&nbsp;&amp; <b>x</b>&#39;s &#x41;</p>\n<script>var x = '<p>';</script>if a < b &unknown; ok"
            ),
            "Use a < b & x 's A if a < b &unknown; ok"
        );
        let t = tempfile::tempdir().unwrap();
        let jsonl = t.path().join("a.jsonl");
        std::fs::write(
            &jsonl,
            "{\"id\": \"a\", \"question\": \"Q\", \"body\": \"<div>Some <i>text</i></div>\"}\n{\"id\": \"b\", \"question\": \"R\", \"body\": \"<br/>\"}\n",
        )
        .unwrap();
        let e = read_list(&jsonl).unwrap();
        assert_eq!(e[0].body.as_deref(), Some("Some text"));
        assert_eq!(e[1].body, None, "a body of tags only is no body");
        // The body stays out of what the function reads back.
        assert!(!serde_json::to_string(&e[0]).unwrap().contains("body"));

        let tsv = t.path().join("b.tsv");
        std::fs::write(
            &tsv,
            "id\tquestion\talternatives\tbody\nx\tWhat?\tWhat is it? | What's that?\t<p>More</p>\ny\tWhy?\n",
        )
        .unwrap();
        let e = read_list(&tsv).unwrap();
        assert_eq!(e[0].alternatives, ["What is it?", "What's that?"]);
        assert_eq!(e[0].body.as_deref(), Some("More"));
        assert_eq!((e[1].id.as_str(), e[1].answer.as_deref()), ("y", None));

        for (text, says) in [
            (
                "id\tquestion\tcolour\nx\tWhat?\n",
                "line 1: unknown column `colour`",
            ),
            (
                "id\tanswer\nx\tThat.\n",
                "line 1: the header has no `question` column",
            ),
            ("id\tquestion\tid\n", "named twice"),
            (
                "id\tquestion\nx\tWhat?\tThat.\n",
                "line 2: expected 2 tab-separated cells",
            ),
            (
                "id\tquestion\nx\t \n",
                "line 2: `id` and `question` must not be empty",
            ),
            ("x\tWhat?\n\n\nx\tAgain?\n", "line 4: duplicate id `x`"),
        ] {
            std::fs::write(&tsv, text).unwrap();
            let msg = read_list(&tsv).unwrap_err().to_string();
            assert!(msg.contains(says), "{text:?}: {msg}");
        }
        for (text, says) in [
            (
                "{\"id\": \"a\", \"question\": \"Q\", \"body\": 3}",
                "line 1: invalid type",
            ),
            ("{\"id\": 1, \"question\": \"Q\"}", "line 1: invalid type"),
            ("{\"id\": \"a\", \"question\": \"\"}", "must not be empty"),
            ("", "no entries"),
        ] {
            std::fs::write(&jsonl, text).unwrap();
            let msg = read_list(&jsonl).unwrap_err().to_string();
            assert!(msg.contains(says), "{text:?}: {msg}");
        }
    }

    #[test]
    fn relative_paths_climb_out_of_the_index_folder() {
        let p = relative_to(Path::new("/p/faq/js.jsonl"), Path::new("/p/models/faq-js")).unwrap();
        assert_eq!(p, PathBuf::from("../../faq/js.jsonl"));
    }
}
