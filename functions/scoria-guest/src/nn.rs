//! Guest side of `wasi:nn@0.2.0-rc-2024-10-28`.
//!
//! Functions call [`infer`] with f32 tensors (or [`compute`] with i64 ones too) and get f32
//! tensors back; the host keeps the model loaded, so `load-by-name` is cheap and happens once
//! per request.

use crate::error::ApiError;

#[allow(missing_docs, clippy::all)]
mod bindings {
    wit_bindgen::generate!({
        path: "../../wit/deps/wasi-nn",
        world: "wasi:nn/ml",
    });
}

use bindings::wasi::nn::{errors, graph, tensor};

/// A dense f32 tensor in row-major order.
#[derive(Debug, Clone, PartialEq)]
pub struct F32Tensor {
    pub dims: Vec<u32>,
    pub data: Vec<f32>,
}

/// A dense i64 tensor in row-major order (token ids and masks).
#[derive(Debug, Clone, PartialEq)]
pub struct I64Tensor {
    pub dims: Vec<u32>,
    pub data: Vec<i64>,
}

/// One input tensor of either element type the functions send.
#[derive(Debug, Clone, PartialEq)]
pub enum Input {
    F32(F32Tensor),
    I64(I64Tensor),
    /// f32 values already in wasi-nn's form, little-endian bytes (a client's
    /// `application/x-tensor` body): passed on as they are, without converting them to `f32`
    /// and back, which for a 600 KB image tensor was two copies and 1.2 MB more memory.
    F32Bytes {
        dims: Vec<u32>,
        bytes: Vec<u8>,
    },
}

/// Run `model` on f32 `inputs` (name, tensor) and return its outputs (name, tensor).
///
/// wasi-nn errors map to HTTP statuses: an unknown or forbidden model is a deployment error
/// (500 with the host's message), as is any backend failure.
pub fn infer(model: &str, inputs: Vec<(String, F32Tensor)>) -> Result<Vec<(String, F32Tensor)>, ApiError> {
    compute(
        model,
        inputs.into_iter().map(|(n, t)| (n, Input::F32(t))).collect(),
    )
}

/// Run `model` on inputs of any supported type; every output must be f32.
pub fn compute(model: &str, inputs: Vec<(String, Input)>) -> Result<Vec<(String, F32Tensor)>, ApiError> {
    let g = graph::load_by_name(model).map_err(|e| nn_error("model_unavailable", e))?;
    let ctx = g
        .init_execution_context()
        .map_err(|e| nn_error("inference_failed", e))?;
    let named = inputs
        .into_iter()
        .map(|(name, t)| {
            // wasm32 is little-endian, as wasi-nn's bytes are: the data is passed as it is.
            let t = match t {
                Input::F32(t) => {
                    tensor::Tensor::new(&t.dims, tensor::TensorType::Fp32, bytemuck::cast_slice(&t.data))
                }
                Input::I64(t) => {
                    tensor::Tensor::new(&t.dims, tensor::TensorType::I64, bytemuck::cast_slice(&t.data))
                }
                Input::F32Bytes { dims, bytes } => {
                    tensor::Tensor::new(&dims, tensor::TensorType::Fp32, &bytes)
                }
            };
            (name, t)
        })
        .collect();
    let outputs = ctx.compute(named).map_err(|e| nn_error("inference_failed", e))?;
    outputs
        .into_iter()
        .map(|(name, t)| {
            if t.ty() != tensor::TensorType::Fp32 {
                return Err(ApiError::internal(
                    "inference_failed",
                    format!("output `{name}` is not f32"),
                ));
            }
            let data = f32_from_le_bytes(&t.data());
            Ok((
                name,
                F32Tensor {
                    dims: t.dimensions(),
                    data,
                },
            ))
        })
        .collect()
}

/// f32 values from little-endian bytes (a multiple of 4 long), at memcpy speed.
pub fn f32_from_le_bytes(bytes: &[u8]) -> Vec<f32> {
    bytemuck::pod_collect_to_vec(bytes)
}

fn nn_error(code: &'static str, e: errors::Error) -> ApiError {
    ApiError::internal(code, format!("wasi-nn {:?}: {}", e.code(), e.data()))
}

/// Run `model` on one u8 tensor and discard the outputs. Exists for functions whose models take
/// byte inputs, and for the fault tests, which feed a model the wrong type on purpose.
pub fn infer_raw(model: &str, input: &str, dims: Vec<u32>, data: Vec<u8>) -> Result<(), ApiError> {
    let g = graph::load_by_name(model).map_err(|e| nn_error("model_unavailable", e))?;
    let ctx = g
        .init_execution_context()
        .map_err(|e| nn_error("inference_failed", e))?;
    let t = tensor::Tensor::new(&dims, tensor::TensorType::U8, &data);
    ctx.compute(vec![(input.to_string(), t)])
        .map_err(|e| nn_error("inference_failed", e))?;
    Ok(())
}
