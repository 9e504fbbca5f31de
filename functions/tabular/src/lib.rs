//! Tabular models (scikit-learn pipelines converted to ONNX) from the function's side: the
//! card's feature schema ([`schema`]), JSON records checked against it and laid out as the
//! model's input tensors ([`records`]), and the model's output as per-record predictions
//! ([`answer`]). Pure Rust, so that it is tested natively and the host can check cards with
//! the same code.

pub mod answer;
pub mod records;
pub mod schema;

pub use answer::{predictions, Prediction};
pub use records::{parse, Batch, Column, RecordError, Values};
pub use schema::{InputLayout, Kind, Layout, Schema, Task};
