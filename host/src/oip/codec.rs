//! Inference requests and responses of the Open Inference Protocol's REST form, with Triton's
//! binary tensor data extension: the JSON header, tensors as JSON `data` or as raw bytes after
//! the header, and the answer in the form the client asked for.
//!
//! Everything a request declares is checked against what it carries before anything is
//! allocated for it: a shape whose element count does not match its data is refused, however
//! large it claims to be.

use super::OipError;
use crate::models::DType;
use crate::nn::Tensor;
use bytes::Bytes;
use serde::Deserialize;
use serde_json::{Map, Value};

/// The header that splits a binary request or response into its JSON part and its tensors.
pub const HEADER_LENGTH: &str = "inference-header-content-length";

/// A datatype name of the protocol for one of the host's tensor types; the protocol's names
/// for types no model here takes (`BOOL`, `BYTES`, the unsigned and narrow integers) have no
/// entry and are refused with the model's expected type.
pub fn datatype(dtype: DType) -> &'static str {
    match dtype {
        DType::F16 => "FP16",
        DType::F32 => "FP32",
        DType::F64 => "FP64",
        DType::Bf16 => "BF16",
        DType::U8 => "UINT8",
        DType::I32 => "INT32",
        DType::I64 => "INT64",
    }
}

fn dtype(name: &str) -> Option<DType> {
    [
        DType::F16,
        DType::F32,
        DType::F64,
        DType::Bf16,
        DType::U8,
        DType::I32,
        DType::I64,
    ]
    .into_iter()
    .find(|&d| datatype(d) == name)
}

/// The names the protocol defines; a name outside them is a malformed request rather than a
/// type this host lacks.
const PROTOCOL_DATATYPES: [&str; 14] = [
    "BOOL", "UINT8", "UINT16", "UINT32", "UINT64", "INT8", "INT16", "INT32", "INT64", "FP16", "FP32", "FP64",
    "BF16", "BYTES",
];

#[derive(Deserialize)]
struct Header {
    #[serde(default)]
    id: Option<String>,
    #[serde(default)]
    parameters: Map<String, Value>,
    inputs: Vec<InputHeader>,
    #[serde(default)]
    outputs: Option<Vec<OutputHeader>>,
}

#[derive(Deserialize)]
struct InputHeader {
    name: String,
    shape: Vec<i64>,
    datatype: String,
    #[serde(default)]
    parameters: Map<String, Value>,
    #[serde(default)]
    data: Option<Value>,
}

#[derive(Deserialize)]
struct OutputHeader {
    name: String,
    #[serde(default)]
    parameters: Map<String, Value>,
}

/// A parsed inference request: its tensors, ready for the model, and how to answer.
pub struct InferRequest {
    pub id: Option<String>,
    pub inputs: Vec<(String, Tensor)>,
    /// `BYTES` inputs (what a function called as a model takes), each element as it came.
    pub bytes_inputs: Vec<(String, Vec<Bytes>)>,
    /// The outputs asked for, by name, each with whether it goes back as binary data (unsaid:
    /// as `binary_by_default` says); `None`: every output.
    pub outputs: Option<Vec<(String, Option<bool>)>>,
    /// `binary_data_output`: every output not asked for otherwise goes back as binary data.
    pub binary_by_default: bool,
}

fn bad(message: impl Into<String>) -> OipError {
    OipError::bad_request(message)
}

fn flag(parameters: &Map<String, Value>, key: &str) -> Result<Option<bool>, OipError> {
    match parameters.get(key) {
        None => Ok(None),
        Some(Value::Bool(b)) => Ok(Some(*b)),
        Some(v) => Err(bad(format!("parameter `{key}` must be true or false, not {v}"))),
    }
}

/// Parse a request body; `header_length` is `Inference-Header-Content-Length`, when sent.
pub fn parse(body: &Bytes, header_length: Option<&str>) -> Result<InferRequest, OipError> {
    let json_len = match header_length {
        None => body.len(),
        Some(v) => {
            let n: usize = v
                .trim()
                .parse()
                .map_err(|_| bad(format!("{HEADER_LENGTH} `{v}` is not a byte count")))?;
            if n > body.len() {
                return Err(bad(format!(
                    "{HEADER_LENGTH} says the JSON header has {n} bytes, but the body has only {}",
                    body.len()
                )));
            }
            n
        }
    };
    let header: Header = serde_json::from_slice(&body[..json_len])
        .map_err(|e| bad(format!("the request is not a valid inference request: {e}")))?;
    if header.parameters.contains_key("classification") {
        return Err(bad("the classification extension is not supported"));
    }
    let mut binary = body.slice(json_len..);
    let mut inputs = Vec::with_capacity(header.inputs.len());
    let mut bytes_inputs = Vec::new();
    for input in header.inputs {
        if input.datatype == BYTES {
            let elements = decode_bytes(&input, &mut binary)?;
            bytes_inputs.push((input.name, elements));
        } else {
            let tensor = decode(&input, &mut binary)?;
            inputs.push((input.name, tensor));
        }
    }
    if !binary.is_empty() {
        return Err(bad(format!(
            "the body has {} bytes of binary data that no input's `binary_data_size` accounts for",
            binary.len()
        )));
    }
    let outputs = match header.outputs {
        None => None,
        Some(list) => Some(
            list.into_iter()
                .map(|o| Ok((o.name, flag(&o.parameters, "binary_data")?)))
                .collect::<Result<Vec<_>, OipError>>()?,
        ),
    };
    Ok(InferRequest {
        id: header.id,
        inputs,
        bytes_inputs,
        outputs,
        binary_by_default: flag(&header.parameters, "binary_data_output")?.unwrap_or(false),
    })
}

/// What a request declares of one input, whatever the transport: the data it carries is
/// checked against this before anything is allocated for it.
pub struct Declared<'a> {
    pub name: &'a str,
    pub datatype: &'a str,
    pub shape: &'a [i64],
}

impl Declared<'_> {
    /// The tensor type, the dimensions and the element count it stands for.
    pub fn check(&self) -> Result<(DType, Vec<u32>, u64), OipError> {
        let name = self.name;
        let dtype = dtype(self.datatype).ok_or_else(|| {
            if PROTOCOL_DATATYPES.contains(&self.datatype) {
                bad(format!(
                    "input `{name}`: datatype {} is not one any model here takes",
                    self.datatype
                ))
            } else {
                bad(format!(
                    "input `{name}`: `{}` is not a datatype of the protocol",
                    self.datatype
                ))
            }
        })?;
        let mut dims = Vec::with_capacity(self.shape.len());
        for &d in self.shape {
            match u32::try_from(d) {
                Ok(d) => dims.push(d),
                Err(_) => {
                    return Err(bad(format!(
                        "input `{name}`: shape {:?} has a dimension that is not a size",
                        self.shape
                    )));
                }
            }
        }
        // The element count, never allocated: compared with what the request carries.
        let elements = dims
            .iter()
            .try_fold(1u64, |n, &d| n.checked_mul(u64::from(d)))
            .ok_or_else(|| bad(format!("input `{name}`: shape {:?} is too large", self.shape)))?;
        Ok((dtype, dims, elements))
    }

    /// The tensor of `bytes` (little-endian, row-major), which must be exactly what the
    /// shape needs.
    pub fn from_bytes(&self, bytes: &[u8]) -> Result<Tensor, OipError> {
        let (dtype, dims, elements) = self.check()?;
        let want = elements.checked_mul(dtype.size() as u64);
        if want != Some(bytes.len() as u64) {
            return Err(bad(format!(
                "input `{}`: shape {:?} of {} needs {} bytes, the request has {}",
                self.name,
                self.shape,
                self.datatype,
                want.map_or("more than 2^64".to_string(), |w| w.to_string()),
                bytes.len()
            )));
        }
        Ok(Tensor {
            dims,
            dtype,
            data: bytes.to_vec(),
        })
    }

    /// The tensor of `count` elements that `write` appends as little-endian bytes of the
    /// declared type, once the count is known to fill the shape.
    pub fn from_elements(
        &self,
        count: usize,
        write: impl FnOnce(DType, &mut Vec<u8>) -> Result<(), String>,
    ) -> Result<Tensor, OipError> {
        let (dtype, dims, elements) = self.check()?;
        if count as u64 != elements {
            return Err(bad(format!(
                "input `{}`: shape {:?} has {elements} elements, the request has {count}",
                self.name, self.shape
            )));
        }
        let mut data = Vec::with_capacity(count * dtype.size());
        write(dtype, &mut data).map_err(|m| bad(format!("input `{}`: {m}", self.name)))?;
        Ok(Tensor { dims, dtype, data })
    }
}

/// The protocol's name for strings and raw bytes.
pub const BYTES: &str = "BYTES";

/// The elements of a `BYTES` tensor as the protocol serialises them in binary form: each one
/// a 4-byte little-endian length, then its bytes. Their count must fill `shape`.
pub fn bytes_elements(name: &str, shape: &[i64], raw: &Bytes) -> Result<Vec<Bytes>, OipError> {
    let want = bytes_count(name, shape)?;
    let mut rest = raw.clone();
    let mut out = Vec::new();
    while !rest.is_empty() {
        if rest.len() < 4 {
            return Err(bad(format!(
                "input `{name}`: a BYTES element's length is cut off"
            )));
        }
        let n = u32::from_le_bytes([rest[0], rest[1], rest[2], rest[3]]) as usize;
        let _ = rest.split_to(4);
        if n > rest.len() {
            return Err(bad(format!(
                "input `{name}`: a BYTES element says {n} bytes, {} are left",
                rest.len()
            )));
        }
        out.push(rest.split_to(n));
        if out.len() as u64 > want {
            break;
        }
    }
    if out.len() as u64 != want {
        return Err(bad(format!(
            "input `{name}`: shape {shape:?} has {want} elements, the request has {}",
            out.len()
        )));
    }
    Ok(out)
}

/// How many elements a `BYTES` input's shape holds.
fn bytes_count(name: &str, shape: &[i64]) -> Result<u64, OipError> {
    shape
        .iter()
        .try_fold(1u64, |n, &d| u64::try_from(d).ok().and_then(|d| n.checked_mul(d)))
        .ok_or_else(|| bad(format!("input `{name}`: shape {shape:?} is not a size")))
}

/// A `BYTES` input's elements, from JSON strings or from its binary data.
fn decode_bytes(input: &InputHeader, binary: &mut Bytes) -> Result<Vec<Bytes>, OipError> {
    let name = &input.name;
    match (flag_size(&input.parameters, name)?, &input.data) {
        (Some(n), None) => {
            if n > binary.len() as u64 {
                return Err(bad(format!(
                    "input `{name}`: `binary_data_size` is {n}, but only {} bytes of binary data are left \
                     (the body is truncated)",
                    binary.len()
                )));
            }
            bytes_elements(name, &input.shape, &binary.split_to(n as usize))
        }
        (None, Some(data)) => {
            let mut flat = Vec::new();
            flatten(data, &mut flat);
            let want = bytes_count(name, &input.shape)?;
            if flat.len() as u64 != want {
                return Err(bad(format!(
                    "input `{name}`: shape {:?} has {want} elements, `data` has {}",
                    input.shape,
                    flat.len()
                )));
            }
            flat.iter()
                .map(|v| match v {
                    Value::String(text) => Ok(Bytes::from(text.clone())),
                    other => Err(bad(format!("input `{name}`: {other} is not a string"))),
                })
                .collect()
        }
        (Some(_), Some(_)) => Err(bad(format!(
            "input `{name}` has both `data` and `binary_data_size`"
        ))),
        (None, None) => Err(bad(format!(
            "input `{name}` has no `data` and no `binary_data_size`"
        ))),
    }
}

/// One input's tensor, from its JSON `data` or from the next `binary_data_size` bytes of
/// `binary` (which it then consumes).
fn decode(input: &InputHeader, binary: &mut Bytes) -> Result<Tensor, OipError> {
    let name = &input.name;
    let declared = Declared {
        name,
        datatype: &input.datatype,
        shape: &input.shape,
    };
    declared.check()?;
    match (flag_size(&input.parameters, name)?, &input.data) {
        (Some(_), Some(_)) => Err(bad(format!(
            "input `{name}` has both `data` and `binary_data_size`"
        ))),
        (None, None) => Err(bad(format!(
            "input `{name}` has no `data` and no `binary_data_size`"
        ))),
        (Some(n), None) => {
            if n > binary.len() as u64 {
                return Err(bad(format!(
                    "input `{name}`: `binary_data_size` is {n}, but only {} bytes of binary data are left \
                     (the body is truncated)",
                    binary.len()
                )));
            }
            declared.from_bytes(&binary.split_to(n as usize))
        }
        (None, Some(data)) => {
            let mut flat = Vec::new();
            flatten(data, &mut flat);
            declared.from_elements(flat.len(), |dtype, out| encode_json(dtype, &flat, out))
        }
    }
}

fn flag_size(parameters: &Map<String, Value>, name: &str) -> Result<Option<u64>, OipError> {
    match parameters.get("binary_data_size") {
        None => Ok(None),
        Some(v) => v.as_u64().map(Some).ok_or_else(|| {
            bad(format!(
                "input `{name}`: `binary_data_size` must be a byte count, not {v}"
            ))
        }),
    }
}

/// `data` in row-major order, whether the client sent it flat or nested.
fn flatten<'a>(v: &'a Value, out: &mut Vec<&'a Value>) {
    match v {
        Value::Array(items) => items.iter().for_each(|i| flatten(i, out)),
        other => out.push(other),
    }
}

/// JSON numbers as little-endian bytes of `dtype`; an element that is not a number of that
/// type is named.
fn encode_json(dtype: DType, values: &[&Value], out: &mut Vec<u8>) -> Result<(), String> {
    for (i, v) in values.iter().enumerate() {
        let wrong = || format!("element {i} ({v}) is not a {}", datatype(dtype));
        match dtype {
            DType::F32 => out.extend((v.as_f64().ok_or_else(wrong)? as f32).to_le_bytes()),
            DType::F64 => out.extend(v.as_f64().ok_or_else(wrong)?.to_le_bytes()),
            DType::F16 => out.extend(half::f16::from_f64(v.as_f64().ok_or_else(wrong)?).to_le_bytes()),
            DType::Bf16 => out.extend(half::bf16::from_f64(v.as_f64().ok_or_else(wrong)?).to_le_bytes()),
            DType::I64 => out.extend(v.as_i64().ok_or_else(wrong)?.to_le_bytes()),
            DType::I32 => {
                let n = v.as_i64().and_then(|n| i32::try_from(n).ok()).ok_or_else(wrong)?;
                out.extend(n.to_le_bytes());
            }
            DType::U8 => out.push(v.as_u64().and_then(|n| u8::try_from(n).ok()).ok_or_else(wrong)?),
        }
    }
    Ok(())
}

/// An output tensor as the protocol sends it: its datatype, shape, and raw bytes (for
/// `BYTES`, length-prefixed elements, as the protocol's binary form has them).
pub struct OutTensor {
    pub datatype: &'static str,
    pub dims: Vec<u32>,
    pub raw: Vec<u8>,
}

impl From<Tensor> for OutTensor {
    fn from(t: Tensor) -> Self {
        Self {
            datatype: datatype(t.dtype),
            dims: t.dims,
            raw: t.data,
        }
    }
}

impl OutTensor {
    /// A `BYTES` tensor of `elements`, row-major, with shape `dims`.
    pub fn bytes(dims: Vec<u32>, elements: &[Vec<u8>]) -> Self {
        let mut raw = Vec::new();
        for e in elements {
            raw.extend((e.len() as u32).to_le_bytes());
            raw.extend_from_slice(e);
        }
        Self {
            datatype: BYTES,
            dims,
            raw,
        }
    }

    /// Its elements as JSON `data`: numbers, or strings for `BYTES`.
    fn json(&self) -> Vec<Value> {
        if self.datatype == BYTES {
            let mut out = Vec::new();
            let mut rest = &self.raw[..];
            while rest.len() >= 4 {
                let n = u32::from_le_bytes([rest[0], rest[1], rest[2], rest[3]]) as usize;
                let end = (4 + n).min(rest.len());
                out.push(Value::from(String::from_utf8_lossy(&rest[4..end]).into_owned()));
                rest = &rest[end..];
            }
            return out;
        }
        let dtype = dtype(self.datatype).unwrap_or(DType::U8);
        decode_json(&Tensor {
            dims: self.dims.clone(),
            dtype,
            data: self.raw.clone(),
        })
    }
}

/// A tensor's elements as JSON numbers (`data`).
fn decode_json(t: &Tensor) -> Vec<Value> {
    fn each<const N: usize>(data: &[u8], f: impl Fn([u8; N]) -> Value) -> Vec<Value> {
        data.chunks_exact(N)
            .map(|c| f(c.try_into().unwrap_or([0; N])))
            .collect()
    }
    match t.dtype {
        DType::F32 => each(&t.data, |b| Value::from(f32::from_le_bytes(b))),
        DType::F64 => each(&t.data, |b| Value::from(f64::from_le_bytes(b))),
        DType::F16 => each(&t.data, |b| Value::from(half::f16::from_le_bytes(b).to_f32())),
        DType::Bf16 => each(&t.data, |b| Value::from(half::bf16::from_le_bytes(b).to_f32())),
        DType::I64 => each(&t.data, |b| Value::from(i64::from_le_bytes(b))),
        DType::I32 => each(&t.data, |b| Value::from(i32::from_le_bytes(b))),
        DType::U8 => t.data.iter().map(|&b| Value::from(b)).collect(),
    }
}

/// The answer's JSON, fields in the protocol's order.
#[derive(serde::Serialize)]
struct InferResponse<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    id: Option<&'a str>,
    model_name: &'a str,
    model_version: &'a str,
    outputs: Vec<OutputEntry>,
}

#[derive(serde::Serialize)]
struct OutputEntry {
    name: String,
    datatype: &'static str,
    shape: Vec<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    parameters: Option<BinarySize>,
    #[serde(skip_serializing_if = "Option::is_none")]
    data: Option<Vec<Value>>,
}

#[derive(serde::Serialize)]
struct BinarySize {
    binary_data_size: usize,
}

/// An encoded answer: its content type, the JSON header's length when binary data follows it,
/// and the body.
pub struct Encoded {
    pub content_type: &'static str,
    pub header_length: Option<usize>,
    pub body: Bytes,
}

/// The outputs `request` asks for, from `outputs` (the model's, in card order), each with
/// whether it goes back as binary data. An output asked for that the model does not have is
/// the client's mistake.
pub fn select(
    model: &str,
    request: &InferRequest,
    outputs: Vec<(String, OutTensor)>,
) -> Result<Vec<(String, OutTensor, bool)>, OipError> {
    Ok(match &request.outputs {
        None => outputs
            .into_iter()
            .map(|(n, t)| (n, t, request.binary_by_default))
            .collect(),
        Some(asked) => {
            let mut outputs = outputs;
            let mut chosen = Vec::with_capacity(asked.len());
            for (name, binary) in asked {
                let Some(i) = outputs.iter().position(|(n, _)| n == name) else {
                    let known: Vec<&str> = outputs.iter().map(|(n, _)| n.as_str()).collect();
                    return Err(bad(format!(
                        "model `{model}` has no output `{name}`; its outputs are {known:?}"
                    )));
                };
                let (n, t) = outputs.swap_remove(i);
                chosen.push((n, t, binary.unwrap_or(request.binary_by_default)));
            }
            chosen
        }
    })
}

/// The answer to `request` from `outputs` (the model's, in card order), JSON or JSON and
/// binary data as the request asked.
pub fn encode(
    model: &str,
    version: &str,
    request: &InferRequest,
    outputs: Vec<(String, OutTensor)>,
) -> Result<Encoded, OipError> {
    let chosen = select(model, request, outputs)?;
    let mut binary: Vec<Vec<u8>> = Vec::new();
    let mut entries = Vec::with_capacity(chosen.len());
    for (name, t, as_binary) in chosen {
        let mut entry = OutputEntry {
            name,
            datatype: t.datatype,
            shape: t.dims.clone(),
            parameters: None,
            data: None,
        };
        if as_binary {
            entry.parameters = Some(BinarySize {
                binary_data_size: t.raw.len(),
            });
            binary.push(t.raw);
        } else {
            entry.data = Some(t.json());
        }
        entries.push(entry);
    }
    let answer = InferResponse {
        id: request.id.as_deref(),
        model_name: model,
        model_version: version,
        outputs: entries,
    };
    let json = serde_json::to_string(&answer)
        .map_err(|e| OipError::new(500, format!("the answer could not be written: {e}")))?;
    if binary.is_empty() {
        return Ok(Encoded {
            content_type: "application/json",
            header_length: None,
            body: Bytes::from(json),
        });
    }
    let header_length = json.len();
    let mut body = json.into_bytes();
    body.reserve(binary.iter().map(Vec::len).sum());
    for b in binary {
        body.extend_from_slice(&b);
    }
    Ok(Encoded {
        content_type: "application/octet-stream",
        header_length: Some(header_length),
        body: Bytes::from(body),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(json: &str, binary: &[u8]) -> (Bytes, String) {
        let mut body = json.as_bytes().to_vec();
        body.extend_from_slice(binary);
        (Bytes::from(body), json.len().to_string())
    }

    #[test]
    fn json_data_flat_or_nested_and_binary_data_decode_alike() {
        let flat = r#"{"inputs":[{"name":"x","shape":[2,2],"datatype":"FP32","data":[1,2,3,4]}]}"#;
        let nested = r#"{"inputs":[{"name":"x","shape":[2,2],"datatype":"FP32","data":[[1,2],[3,4]]}]}"#;
        let values: Vec<u8> = [1f32, 2., 3., 4.].iter().flat_map(|v| v.to_le_bytes()).collect();
        let (bin, len) = request(
            r#"{"inputs":[{"name":"x","shape":[2,2],"datatype":"FP32","parameters":{"binary_data_size":16}}]}"#,
            &values,
        );
        for r in [
            parse(&Bytes::from(flat), None).unwrap(),
            parse(&Bytes::from(nested), None).unwrap(),
            parse(&bin, Some(&len)).unwrap(),
        ] {
            assert_eq!(r.inputs[0].1, Tensor::from_slice(vec![2, 2], &[1f32, 2., 3., 4.]));
        }
    }

    #[test]
    fn declarations_that_disagree_with_the_data_are_refused_before_allocating() {
        let cases = [
            (
                r#"{"inputs":[{"name":"x","shape":[2],"datatype":"FP32","data":[1]}]}"#,
                "",
                "has 2 elements",
            ),
            (
                r#"{"inputs":[{"name":"x","shape":[1],"datatype":"FP33","data":[1]}]}"#,
                "",
                "not a datatype",
            ),
            (
                r#"{"inputs":[{"name":"x","shape":[1],"datatype":"UINT16","data":[1]}]}"#,
                "",
                "not one any model",
            ),
            (
                r#"{"inputs":[{"name":"x","shape":[2],"datatype":"BYTES","data":["a"]}]}"#,
                "",
                "has 2 elements",
            ),
            (
                r#"{"inputs":[{"name":"x","shape":[1],"datatype":"BYTES","parameters":{"binary_data_size":6}}]}"#,
                "\u{9}\0\0\0ab",
                "says 9 bytes",
            ),
            (
                r#"{"inputs":[{"name":"x","shape":[1],"datatype":"INT32","data":[1.5]}]}"#,
                "",
                "not a INT32",
            ),
            (
                r#"{"inputs":[{"name":"x","shape":[-1],"datatype":"FP32","data":[1]}]}"#,
                "",
                "not a size",
            ),
            (
                r#"{"inputs":[{"name":"x","shape":[4294967295,4294967295,4294967295],"datatype":"FP32","parameters":{"binary_data_size":4}}]}"#,
                "abcd",
                "is too large",
            ),
            (
                r#"{"inputs":[{"name":"x","shape":[4000000000,3,224,224],"datatype":"FP32","parameters":{"binary_data_size":4}}]}"#,
                "abcd",
                "needs 2408448000000000 bytes",
            ),
            (
                r#"{"inputs":[{"name":"x","shape":[2],"datatype":"FP32","parameters":{"binary_data_size":8}}]}"#,
                "abcd",
                "truncated",
            ),
            (
                r#"{"inputs":[{"name":"x","shape":[1],"datatype":"FP32","parameters":{"binary_data_size":4}}]}"#,
                "abcdefgh",
                "no input's",
            ),
            (
                r#"{"inputs":[{"name":"x","shape":[1],"datatype":"FP32"}]}"#,
                "",
                "no `data`",
            ),
            (r#"{"inputs":"#, "", "not a valid inference request"),
        ];
        for (json, binary, want) in cases {
            let (body, len) = request(json, binary.as_bytes());
            let e = parse(&body, Some(&len))
                .err()
                .unwrap_or_else(|| panic!("accepted {json}"));
            assert_eq!(e.status, 400);
            assert!(e.message.contains(want), "{json}: {}", e.message);
        }
        let (body, _) = request(r#"{"inputs":[]}"#, b"");
        let e = parse(&body, Some("999")).err().unwrap();
        assert!(e.message.contains("has only"), "{}", e.message);
    }

    #[test]
    fn bytes_inputs_and_outputs_use_the_protocols_framing() {
        let (body, len) = request(
            r#"{"inputs":[{"name":"q","shape":[2],"datatype":"BYTES","parameters":{"binary_data_size":13}}]}"#,
            b"\x02\0\0\0hi\x03\0\0\0you",
        );
        let r = parse(&body, Some(&len)).unwrap();
        assert_eq!(r.bytes_inputs[0].1, vec![Bytes::from("hi"), Bytes::from("you")]);
        let r = parse(
            &Bytes::from(
                r#"{"inputs":[{"name":"q","shape":[1,2],"datatype":"BYTES","data":[["hi","you"]]}]}"#,
            ),
            None,
        )
        .unwrap();
        assert_eq!(r.bytes_inputs[0].1.len(), 2);
        let out = OutTensor::bytes(vec![2], &[b"a".to_vec(), b"bc".to_vec()]);
        assert_eq!(out.raw, b"\x01\0\0\0a\x02\0\0\0bc");
        assert_eq!(out.json(), vec![Value::from("a"), Value::from("bc")]);
    }

    #[test]
    fn answers_carry_json_or_binary_outputs_as_asked() {
        let out = || -> Vec<(String, OutTensor)> {
            vec![(
                "y".to_string(),
                Tensor::from_slice(vec![1, 2], &[0.5f32, 1.5]).into(),
            )]
        };
        let mut r = parse(&Bytes::from(r#"{"id":"7","inputs":[]}"#), None).unwrap();
        let e = encode("m", "1", &r, out()).unwrap();
        assert_eq!(e.content_type, "application/json");
        let v: Value = serde_json::from_slice(&e.body).unwrap();
        assert_eq!(v["id"], "7");
        assert_eq!(v["outputs"][0]["data"], serde_json::json!([0.5, 1.5]));
        r.binary_by_default = true;
        let e = encode("m", "1", &r, out()).unwrap();
        let n = e.header_length.unwrap();
        let v: Value = serde_json::from_slice(&e.body[..n]).unwrap();
        assert_eq!(v["outputs"][0]["parameters"]["binary_data_size"], 8);
        assert_eq!(&e.body[n..], bytemuck::cast_slice::<f32, u8>(&[0.5, 1.5]));
        r.outputs = Some(vec![("y".into(), Some(false))]);
        let e = encode("m", "1", &r, out()).unwrap();
        assert_eq!(e.content_type, "application/json");
        r.outputs = Some(vec![("z".into(), None)]);
        assert!(
            encode("m", "1", &r, out())
                .err()
                .unwrap()
                .message
                .contains("no output `z`")
        );
    }
}
