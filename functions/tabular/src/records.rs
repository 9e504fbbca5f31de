//! JSON records into the model's input tensors, checked against the schema before any
//! compute.
//!
//! A body is `{"instances": [record, ...]}` (KServe's v1 form) or a bare `[record, ...]`.
//! A record is an object keyed by feature name, or an array of values in the schema's
//! feature order. Every record of a request becomes one row of each input, so a batch is
//! one compute.

use crate::schema::{Kind, Layout, Missing, Schema, Unknown};
use serde_json::Value;

/// Why a request's records were refused: a stable code and a message naming the record
/// (from 0) and the feature.
#[derive(Debug, Clone, PartialEq)]
pub struct RecordError {
    pub code: &'static str,
    pub message: String,
}

fn refuse(code: &'static str, message: impl Into<String>) -> RecordError {
    RecordError {
        code,
        message: message.into(),
    }
}

/// The values of one graph input, row-major `[rows, width]`.
#[derive(Debug, Clone, PartialEq)]
pub enum Values {
    F32(Vec<f32>),
    I64(Vec<i64>),
}

/// One graph input, filled.
#[derive(Debug, Clone, PartialEq)]
pub struct Column {
    pub input: String,
    pub width: usize,
    pub values: Values,
}

/// A request's records as input tensors.
#[derive(Debug, Clone, PartialEq)]
pub struct Batch {
    pub rows: usize,
    pub columns: Vec<Column>,
}

/// The index an unknown category encodes as under `unknown = "ignore"`: no category's index,
/// so the one-hot encoder writes zeros.
pub const NO_CATEGORY: i64 = -1;

/// Parse `body` into one row per record, at most `max_records` of them.
pub fn parse(
    schema: &Schema,
    layout: &Layout,
    body: &[u8],
    max_records: usize,
) -> Result<Batch, RecordError> {
    let value: Value = serde_json::from_slice(body).map_err(|e| {
        refuse(
            "invalid_json",
            format!("the body is not JSON: {e}; send {{\"instances\": [{{\"feature\": value, ...}}, ...]}} (a missing value is null)"),
        )
    })?;
    let records = match value {
        Value::Array(records) => Some(records),
        Value::Object(mut o) if o.len() == 1 => match o.remove("instances") {
            Some(Value::Array(records)) => Some(records),
            _ => None,
        },
        _ => None,
    }
    .ok_or_else(|| {
        refuse(
            "invalid_request",
            "expected {\"instances\": [record, ...]} or a JSON array of records",
        )
    })?;
    if records.is_empty() {
        return Err(refuse("empty_batch", "there are no records to score"));
    }
    if records.len() > max_records {
        return Err(refuse(
            "too_many_records",
            format!(
                "{} records in one request, more than the limit of {max_records} (SCORIA_MAX_RECORDS)",
                records.len()
            ),
        ));
    }
    let rows = records.len();
    let mut columns: Vec<Column> = layout
        .inputs
        .iter()
        .map(|l| Column {
            input: l.name.clone(),
            width: l.width,
            values: match l.kind {
                Kind::Number => Values::F32(vec![0.0; rows * l.width]),
                Kind::Category => Values::I64(vec![0; rows * l.width]),
            },
        })
        .collect();

    for (r, record) in records.iter().enumerate() {
        let mut put = |i: usize, value: &Value| -> Result<(), RecordError> {
            let f = &schema.features[i];
            let (c, col) = layout.slots[i];
            let column = &mut columns[c];
            let at = r * column.width + col;
            match &mut column.values {
                Values::F32(v) => v[at] = number(r, f, value)?,
                Values::I64(v) => v[at] = category(r, f, value)?,
            }
            Ok(())
        };
        match record {
            Value::Object(fields) => {
                if let Some(name) = fields
                    .keys()
                    .find(|k| !schema.features.iter().any(|f| &f.name == *k))
                {
                    return Err(refuse(
                        "unknown_feature",
                        format!(
                            "record {r}: `{name}` is not a feature of this model; its features are {}",
                            names(schema)
                        ),
                    ));
                }
                for (i, f) in schema.features.iter().enumerate() {
                    let value = fields.get(&f.name).ok_or_else(|| {
                        refuse(
                            "missing_feature",
                            format!(
                                "record {r} lacks feature `{}` (send null for a missing value)",
                                f.name
                            ),
                        )
                    })?;
                    put(i, value)?;
                }
            }
            Value::Array(values) => {
                if values.len() != schema.features.len() {
                    return Err(refuse(
                        "invalid_record",
                        format!(
                            "record {r} has {} values, but the model has {} features: {}",
                            values.len(),
                            schema.features.len(),
                            names(schema)
                        ),
                    ));
                }
                for (i, value) in values.iter().enumerate() {
                    put(i, value)?;
                }
            }
            _ => {
                return Err(refuse(
                    "invalid_record",
                    format!("record {r} is neither an object of features nor an array of values"),
                ));
            }
        }
    }
    Ok(Batch { rows, columns })
}

/// The feature names, for messages: all of a short list, the first few of a long one.
fn names(schema: &Schema) -> String {
    const SHOWN: usize = 12;
    let mut s: Vec<String> = schema
        .features
        .iter()
        .take(SHOWN)
        .map(|f| format!("`{}`", f.name))
        .collect();
    if schema.features.len() > SHOWN {
        s.push(format!("and {} more", schema.features.len() - SHOWN));
    }
    s.join(", ")
}

fn number(r: usize, f: &crate::schema::Feature, value: &Value) -> Result<f32, RecordError> {
    match value {
        Value::Number(n) => {
            let x = n.as_f64().unwrap_or(f64::NAN) as f32;
            if x.is_finite() {
                Ok(x)
            } else {
                Err(refuse(
                    "value_out_of_range",
                    format!(
                        "record {r}: feature `{}` is {n}, beyond the model's 32-bit float range",
                        f.name
                    ),
                ))
            }
        }
        Value::Null => match f.missing {
            Missing::Allow => Ok(f32::NAN),
            Missing::Refuse => Err(refuse(
                "missing_value",
                format!(
                    "record {r}: feature `{}` is null, and this model cannot score a missing `{}`",
                    f.name, f.name
                ),
            )),
        },
        other => Err(refuse(
            "invalid_value",
            format!(
                "record {r}: feature `{}` must be a number, not {}",
                f.name,
                describe(other)
            ),
        )),
    }
}

fn category(r: usize, f: &crate::schema::Feature, value: &Value) -> Result<i64, RecordError> {
    let s = match value {
        Value::String(s) => s,
        Value::Null if f.missing == Missing::Allow => return Ok(NO_CATEGORY),
        other => {
            return Err(refuse(
                "invalid_value",
                format!(
                    "record {r}: feature `{}` must be a string, one of {:?}, not {}",
                    f.name,
                    f.categories,
                    describe(other)
                ),
            ));
        }
    };
    match f.categories.iter().position(|c| c == s) {
        Some(i) => Ok(i as i64),
        None => match f.unknown {
            Unknown::Ignore => Ok(NO_CATEGORY),
            Unknown::Refuse => Err(refuse(
                "unknown_category",
                format!(
                    "record {r}: feature `{}` is {s:?}, which the model never saw; it knows {:?}",
                    f.name, f.categories
                ),
            )),
        },
    }
}

/// A JSON value's kind and a short excerpt, for messages.
fn describe(v: &Value) -> String {
    let text = v.to_string();
    let short: String = text.chars().take(40).collect();
    let kind = match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    };
    if short.len() < text.len() {
        format!("{kind} ({short}...)")
    } else {
        format!("{kind} ({short})")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::schema::Schema;

    fn schema() -> Schema {
        toml::from_str(
            r#"
task = "classifier"
output = "probabilities"
classes = ["high", "low"]
[[features]]
name = "sex"
kind = "category"
input = "sex"
column = 0
categories = ["1", "2"]
unknown = "ignore"
[[features]]
name = "band"
kind = "category"
input = "band"
column = 0
categories = ["normal", "obese"]
[[features]]
name = "age"
kind = "number"
input = "x"
column = 0
[[features]]
name = "bp"
kind = "number"
input = "x"
column = 1
missing = "allow"
"#,
        )
        .unwrap()
    }

    fn run(body: &str) -> Result<Batch, RecordError> {
        let s = schema();
        let layout = s.layout().unwrap();
        parse(&s, &layout, body.as_bytes(), 4)
    }

    #[test]
    fn records_become_one_row_each_in_every_input() {
        let b = run(r#"{"instances": [{"sex": "2", "band": "obese", "age": 50, "bp": null}, ["1", "normal", 30.5, 80]]}"#)
            .unwrap();
        assert_eq!(b.rows, 2);
        assert_eq!(b.columns[0].values, Values::I64(vec![1, 0]));
        assert_eq!(b.columns[1].values, Values::I64(vec![1, 0]));
        let Values::F32(x) = &b.columns[2].values else {
            panic!()
        };
        assert_eq!((x.len(), x[0], x[2], x[3]), (4, 50.0, 30.5, 80.0));
        assert!(x[1].is_nan());
        // An unseen category of an `ignore` feature is no category at all.
        let b = run(r#"[{"sex": "3", "band": "normal", "age": 1, "bp": 2}]"#).unwrap();
        assert_eq!(b.columns[0].values, Values::I64(vec![NO_CATEGORY]));
    }

    #[test]
    fn bad_records_are_refused_naming_the_record_and_the_feature() {
        let ok = r#"{"sex": "1", "band": "normal", "age": 1, "bp": 2}"#;
        for (body, code, says) in [
            ("{", "invalid_json", "not JSON"),
            (r#"{"records": []}"#, "invalid_request", "instances"),
            ("[]", "empty_batch", "no records"),
            (
                &format!("[{ok},{ok},{ok},{ok},{ok}]"),
                "too_many_records",
                "limit of 4",
            ),
            (
                &format!(r#"[{ok}, {{"sex": "1", "band": "normal", "age": 1}}]"#),
                "missing_feature",
                "record 1 lacks feature `bp`",
            ),
            (
                r#"[{"sex": "1", "band": "normal", "age": 1, "bp": 2, "bmi": 3}]"#,
                "unknown_feature",
                "`bmi` is not a feature",
            ),
            (
                r#"[{"sex": "1", "band": "normal", "age": "old", "bp": 2}]"#,
                "invalid_value",
                "`age` must be a number, not a string",
            ),
            (
                r#"[{"sex": 1, "band": "normal", "age": 1, "bp": 2}]"#,
                "invalid_value",
                "`sex` must be a string",
            ),
            (
                r#"[{"sex": "1", "band": "tiny", "age": 1, "bp": 2}]"#,
                "unknown_category",
                "never saw",
            ),
            (
                r#"[{"sex": "1", "band": "normal", "age": null, "bp": 2}]"#,
                "missing_value",
                "`age` is null",
            ),
            (
                r#"[{"sex": "1", "band": "normal", "age": 1e39, "bp": 2}]"#,
                "value_out_of_range",
                "32-bit float",
            ),
            (r#"[["1", "normal", 1]]"#, "invalid_record", "has 3 values"),
            ("[7]", "invalid_record", "record 0"),
        ] {
            let e = run(body).unwrap_err();
            assert_eq!(e.code, code, "{body}: {}", e.message);
            assert!(e.message.contains(says), "{body}: {}", e.message);
        }
    }
}
