//! A function called as a model of the protocol (`[component.<id>.tool.scoria.inference]`):
//! its metadata, the request bodies one `BYTES` input stands for, and the typed output tensors
//! its JSON answers become. The function is called as through its route; it sees no protocol.

use super::OipError;
use super::codec::{InferRequest, OutTensor};
use crate::manifest::InferenceDecl;
use bytes::Bytes;
use serde_json::{Value, json};

/// `GET /v2/models/{function}`: one `BYTES` input of any length, and each output a matrix of
/// one row per element.
pub fn metadata(component: &str, decl: &InferenceDecl, version: &str) -> String {
    let outputs: Vec<Value> = decl
        .outputs
        .iter()
        .map(|o| json!({ "name": o.name, "datatype": o.datatype, "shape": [-1, -1] }))
        .collect();
    json!({
        "name": component,
        "versions": [version],
        "platform": "scoria_function",
        "inputs": [{ "name": decl.input, "datatype": "BYTES", "shape": [-1] }],
        "outputs": outputs,
    })
    .to_string()
}

/// The request bodies: the elements of the one `BYTES` input the function takes.
pub fn bodies(
    component: &str,
    decl: &InferenceDecl,
    request: &mut InferRequest,
) -> Result<Vec<Bytes>, OipError> {
    let takes = || {
        format!(
            "function `{component}` takes one BYTES input, `{}` (one element per request body)",
            decl.input
        )
    };
    if !request.inputs.is_empty() || request.bytes_inputs.len() != 1 {
        return Err(OipError::bad_request(takes()));
    }
    let (name, elements) = request.bytes_inputs.remove(0);
    if name != decl.input {
        return Err(OipError::bad_request(format!("no input `{name}`: {}", takes())));
    }
    if elements.is_empty() {
        return Err(OipError::bad_request(format!("input `{name}` has no elements")));
    }
    Ok(elements)
}

/// The output tensors of `answers` (one JSON answer per element, in order): for each output,
/// `field` of every item of `list`, one row per answer; rows shorter than the longest are
/// padded with `""`, NaN or -1.
pub fn outputs(
    component: &str,
    decl: &InferenceDecl,
    answers: &[Value],
) -> Result<Vec<(String, OutTensor)>, OipError> {
    let mut out = Vec::with_capacity(decl.outputs.len());
    for o in &decl.outputs {
        let mut rows: Vec<Vec<&Value>> = Vec::with_capacity(answers.len());
        for a in answers {
            let items = a[&o.list].as_array().ok_or_else(|| {
                OipError::new(
                    500,
                    format!("function `{component}` answered without a `{}` list: {a}", o.list),
                )
            })?;
            rows.push(items.iter().map(|item| &item[&o.field]).collect());
        }
        let width = rows.iter().map(Vec::len).max().unwrap_or(0);
        let dims = vec![rows.len() as u32, width as u32];
        let wrong = |v: &Value| {
            OipError::new(
                500,
                format!(
                    "function `{component}`: `{}.{}` is {v}, not {}",
                    o.list, o.field, o.datatype
                ),
            )
        };
        let tensor = match o.datatype.as_str() {
            "FP32" => {
                let mut raw = Vec::with_capacity(rows.len() * width * 4);
                for row in &rows {
                    for k in 0..width {
                        let v = match row.get(k) {
                            Some(v) => v.as_f64().ok_or_else(|| wrong(v))? as f32,
                            None => f32::NAN,
                        };
                        raw.extend(v.to_le_bytes());
                    }
                }
                OutTensor {
                    datatype: "FP32",
                    dims,
                    raw,
                }
            }
            "INT64" => {
                let mut raw = Vec::with_capacity(rows.len() * width * 8);
                for row in &rows {
                    for k in 0..width {
                        let v = match row.get(k) {
                            Some(v) => v.as_i64().ok_or_else(|| wrong(v))?,
                            None => -1,
                        };
                        raw.extend(v.to_le_bytes());
                    }
                }
                OutTensor {
                    datatype: "INT64",
                    dims,
                    raw,
                }
            }
            _ => {
                let mut elements = Vec::with_capacity(rows.len() * width);
                for row in &rows {
                    for k in 0..width {
                        elements.push(match row.get(k) {
                            Some(Value::String(s)) => s.clone().into_bytes(),
                            Some(Value::Null) | None => Vec::new(),
                            Some(v) => v.to_string().into_bytes(),
                        });
                    }
                }
                OutTensor::bytes(dims, &elements)
            }
        };
        out.push((o.name.clone(), tensor));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::manifest::InferenceOutput;

    #[test]
    fn answers_become_padded_typed_rows() {
        let decl = InferenceDecl {
            input: "q".into(),
            content_type: "text/plain".into(),
            outputs: [
                ("ids", "BYTES", "id"),
                ("scores", "FP32", "score"),
                ("ranks", "INT64", "rank"),
            ]
            .map(|(name, datatype, field)| InferenceOutput {
                name: name.into(),
                datatype: datatype.into(),
                list: "matches".into(),
                field: field.into(),
            })
            .to_vec(),
        };
        let answers = [
            json!({"matches": [{"id": "a", "score": 0.5, "rank": 1}, {"id": "b", "score": 0.25, "rank": 2}]}),
            json!({"matches": []}),
        ];
        let out = outputs("faq", &decl, &answers).unwrap();
        assert_eq!(out[0].1.dims, vec![2, 2]);
        assert_eq!(
            out[0].1.raw,
            OutTensor::bytes(vec![2, 2], &[b"a".to_vec(), b"b".to_vec(), vec![], vec![]]).raw
        );
        let scores: Vec<f32> = out[1]
            .1
            .raw
            .chunks(4)
            .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
            .collect();
        assert_eq!(&scores[..2], &[0.5, 0.25]);
        assert!(scores[2].is_nan() && scores[3].is_nan());
        let ranks: Vec<i64> = out[2]
            .1
            .raw
            .chunks(8)
            .map(|c| i64::from_le_bytes(c.try_into().unwrap()))
            .collect();
        assert_eq!(ranks, vec![1, 2, -1, -1]);
        let e = outputs("faq", &decl, &[json!({"nope": 1})]).err().unwrap();
        assert!(e.message.contains("without a `matches` list"), "{}", e.message);
    }
}
