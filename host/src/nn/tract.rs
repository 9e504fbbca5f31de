//! The tract backend: pure-Rust ONNX inference on CPU, the default on CPU node pools.
//!
//! A model is parsed and optimised once; its runnable plan is shared, and each `run` spawns
//! its own state, so concurrent requests on one model never wait for each other.

use super::{Backend, ErrorKind, Graph, NnError, Tensor};
use crate::models::{DType, Format, ModelEntry};
use std::collections::HashMap;
use std::sync::Arc;
use tract_onnx::prelude::Tensor as TractTensor;
use tract_onnx::prelude::*;

/// Loads ONNX models with tract.
#[derive(Debug, Default)]
pub struct TractBackend;

struct TractGraph {
    /// Plan for any size of the dynamic dimensions.
    general: Arc<TypedRunnableModel>,
    /// Plan with every dynamic dimension fixed to 1 (batch 1, the common case): tract picks
    /// much faster kernels when shapes are concrete.
    unit: Arc<TypedRunnableModel>,
    /// Which (input, axis) pairs are dynamic, to choose the plan per call.
    dynamic: Vec<(usize, usize)>,
    output_types: Vec<DType>,
}

impl Backend for TractBackend {
    fn name(&self) -> &'static str {
        "tract"
    }

    fn load(&self, entry: &ModelEntry) -> Result<Arc<dyn Graph>, NnError> {
        let card = &entry.card;
        if card.format != Format::Onnx {
            return Err(NnError::new(
                ErrorKind::InvalidEncoding,
                format!("tract cannot load {:?}", card.format),
            ));
        }
        let path = entry.weights_path();
        let fail =
            |e: anyhow::Error| NnError::new(ErrorKind::RuntimeError, format!("{}: {e:#}", path.display()));
        let mut model = tract_onnx::onnx().model_for_path(&path).map_err(fail)?;
        // Pin input facts from the card: exporters' symbolic dims often confuse tract's
        // inference, and the card is what we validate against anyway.
        let symbols = model.symbols.clone();
        let mut dynamic = Vec::new();
        let mut unit_subs = HashMap::new();
        for (i, spec) in card.inputs.iter().enumerate() {
            let mut shape: TVec<TDim> = TVec::new();
            for (j, &d) in spec.shape.iter().enumerate() {
                if d < 0 {
                    let sym = symbols.sym(&format!("d{i}_{j}"));
                    unit_subs.insert(sym.clone(), TDim::from(1));
                    dynamic.push((i, j));
                    shape.push(sym.into());
                } else {
                    shape.push((d as usize).to_dim());
                }
            }
            let fact = InferenceFact::dt_shape(datum_type(spec.dtype)?, shape);
            model.set_input_fact(i, fact).map_err(fail)?;
        }
        let typed = model.into_typed().map_err(fail)?;
        let unit = typed
            .set_symbols(&unit_subs)
            .and_then(|m| m.into_optimized())
            .map_err(fail)?;
        let unit = unit.into_runnable().map_err(fail)?;
        let general = typed
            .into_optimized()
            .and_then(|m| m.into_runnable())
            .map_err(fail)?;
        let output_types = card.outputs.iter().map(|o| o.dtype).collect();
        Ok(Arc::new(TractGraph {
            general,
            unit,
            dynamic,
            output_types,
        }))
    }
}

impl Graph for TractGraph {
    fn run(&self, inputs: Vec<Tensor>) -> Result<Vec<Tensor>, NnError> {
        let all_unit = self.dynamic.iter().all(|&(i, j)| inputs[i].dims[j] == 1);
        let plan = if all_unit { &self.unit } else { &self.general };
        let inputs = inputs
            .into_iter()
            .map(to_tract)
            .collect::<Result<TVec<TValue>, _>>()?;
        let outputs = plan
            .run(inputs)
            .map_err(|e| NnError::new(ErrorKind::RuntimeError, format!("tract: {e:#}")))?;
        outputs
            .into_iter()
            .zip(&self.output_types)
            .map(|(t, &dtype)| from_tract(&t, dtype))
            .collect()
    }
}

fn datum_type(d: DType) -> Result<DatumType, NnError> {
    Ok(match d {
        DType::F32 => f32::datum_type(),
        DType::F64 => f64::datum_type(),
        DType::I32 => i32::datum_type(),
        DType::I64 => i64::datum_type(),
        DType::U8 => u8::datum_type(),
        DType::F16 | DType::Bf16 => {
            return Err(NnError::new(
                ErrorKind::UnsupportedOperation,
                format!("tract backend: {d:?} tensors"),
            ));
        }
    })
}

fn to_tract(t: Tensor) -> Result<TValue, NnError> {
    let shape: Vec<usize> = t.dims.iter().map(|&d| d as usize).collect();
    let bad = |e: anyhow::Error| NnError::new(ErrorKind::InvalidArgument, e.to_string());
    fn le<const N: usize, T>(b: &[u8], f: fn([u8; N]) -> T) -> Vec<T> {
        b.chunks_exact(N)
            .map(|c| f(c.try_into().expect("chunks_exact yields N bytes")))
            .collect()
    }
    let tensor = match t.dtype {
        DType::F32 => tract_ndarray::ArrayD::from_shape_vec(shape, le(&t.data, f32::from_le_bytes))
            .map(TractTensor::from),
        DType::F64 => tract_ndarray::ArrayD::from_shape_vec(shape, le(&t.data, f64::from_le_bytes))
            .map(TractTensor::from),
        DType::I32 => tract_ndarray::ArrayD::from_shape_vec(shape, le(&t.data, i32::from_le_bytes))
            .map(TractTensor::from),
        DType::I64 => tract_ndarray::ArrayD::from_shape_vec(shape, le(&t.data, i64::from_le_bytes))
            .map(TractTensor::from),
        DType::U8 => tract_ndarray::ArrayD::from_shape_vec(shape, t.data).map(TractTensor::from),
        other => {
            return Err(NnError::new(
                ErrorKind::UnsupportedOperation,
                format!("tract backend: {other:?} tensors"),
            ));
        }
    };
    tensor.map(|t| t.into_tvalue()).map_err(|e| bad(e.into()))
}

fn from_tract(t: &TractTensor, dtype: DType) -> Result<Tensor, NnError> {
    let want = datum_type(dtype)?;
    let cast;
    let t = if t.datum_type() == want {
        t
    } else {
        cast = t
            .cast_to_dt(want)
            .map_err(|e| NnError::new(ErrorKind::RuntimeError, format!("output cast to {dtype:?}: {e}")))?;
        &*cast
    };
    let dims = t.shape().iter().map(|&d| d as u32).collect();
    let data = match dtype {
        DType::F32 => bytes(t, f32::to_le_bytes),
        DType::F64 => bytes(t, f64::to_le_bytes),
        DType::I32 => bytes(t, i32::to_le_bytes),
        DType::I64 => bytes(t, i64::to_le_bytes),
        DType::U8 => bytes(t, |v: u8| [v]),
        other => {
            return Err(NnError::new(
                ErrorKind::UnsupportedOperation,
                format!("tract backend: {other:?} tensors"),
            ));
        }
    }
    .map_err(|e| NnError::new(ErrorKind::RuntimeError, e.to_string()))?;
    Ok(Tensor { dims, dtype, data })
}

fn bytes<T: Datum + Copy, const N: usize>(t: &TractTensor, f: fn(T) -> [u8; N]) -> TractResult<Vec<u8>> {
    Ok(t.to_plain_array_view::<T>()?.iter().flat_map(|&v| f(v)).collect())
}
