//! The tract backend: pure-Rust ONNX inference on CPU, the default on CPU node pools.
//!
//! A model is parsed once into a typed graph whose dynamic dimensions are symbols. tract
//! picks much faster kernels when every shape is concrete (EfficientNet-Lite0: 41 ms per image
//! against 240 ms with a symbolic batch), and some exporters' graphs (MiniLM's attention mask)
//! only run with concrete shapes at all. So each distinct set of dynamic sizes gets its own
//! optimised plan, built on first use and kept in a small least-recently-used cache (each
//! plan packs its own copy of the weights); the plan with every dynamic dimension at 1 is
//! built at load. Each `run` spawns its own state from a shared plan, so
//! concurrent requests on one model never wait for each other.

use super::{Backend, Element, ErrorKind, Graph, NnError, Tensor, onnx_ml, with_element};
use crate::models::{DType, Format, ModelEntry};
use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Instant;
use tract_onnx::prelude::Tensor as TractTensor;
use tract_onnx::prelude::*;
use tract_onnx::tract_hir::infer::Factoid as _;

/// How many concrete plans one model keeps unless its card says (`max_plans`). Each plan
/// holds its own packed copy of the weights, so this bounds memory: a stream of odd shapes
/// evicts the least recently used plan instead of growing the process.
const DEFAULT_MAX_PLANS: usize = 16;

/// Loads ONNX models with tract.
#[derive(Debug, Default)]
pub struct TractBackend;

/// A plan being built or built; concurrent first uses of one shape wait for one build.
type Slot = Arc<OnceLock<Result<Arc<TypedRunnableModel>, NnError>>>;

/// Plans by dynamic sizes, and those sizes least recently used first, for eviction.
#[derive(Default)]
struct PlanCache {
    slots: HashMap<Vec<u32>, Slot>,
    order: VecDeque<Vec<u32>>,
    max: usize,
}

struct TractGraph {
    name: String,
    /// The typed, unoptimised graph, with one symbol per dynamic dimension.
    typed: TypedModel,
    /// Which (input, axis) pairs are dynamic, and the symbol each one is.
    dynamic: Vec<(usize, usize, Symbol)>,
    /// Concrete plans keyed by the sizes of the dynamic dimensions.
    plans: Mutex<PlanCache>,
    output_types: Vec<DType>,
}

impl Backend for TractBackend {
    fn name(&self) -> &'static str {
        "tract"
    }

    fn load_bytes(&self, entry: &ModelEntry, bytes: &[u8]) -> Result<Arc<dyn Graph>, NnError> {
        Ok(Arc::new(TractGraph::new(entry, bytes)?))
    }
}

/// The operators of the ONNX graph in `bytes` that tract cannot build, named for an error
/// message, if any.
fn missing_operators(onnx: &tract_onnx::Onnx, bytes: &[u8]) -> Option<String> {
    use prost::Message as _;
    let proto = tract_onnx::pb::ModelProto::decode(bytes).ok()?;
    let missing = onnx_ml::unsupported(onnx, &proto);
    (!missing.is_empty()).then(|| format!("the operator(s) {}", missing.join(", ")))
}

/// Why tract cannot run the ONNX graph in `bytes` (the operators it lacks), if it cannot;
/// for `scoria models list`, which says so without loading anything.
pub fn cannot_run(bytes: &[u8]) -> Option<String> {
    missing_operators(&onnx_ml::onnx(), bytes)
}

impl TractGraph {
    /// Parse and type the graph, pinning its inputs to the card, and build the unit plan.
    fn new(entry: &ModelEntry, bytes: &[u8]) -> Result<Self, NnError> {
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
        let onnx = onnx_ml::onnx();
        let mut model = onnx.model_for_read(&mut &bytes[..]).map_err(fail)?;
        // Pin input facts from the card: exporters' symbolic dims often confuse tract's
        // inference, and the card is what we validate against anyway. A dynamic dimension
        // keeps the graph's own symbol where it has one, since the graph's shape rules use it.
        let symbols = model.symbols.clone();
        let mut dynamic = Vec::new();
        for (i, spec) in card.inputs.iter().enumerate() {
            let declared: Vec<Option<TDim>> = model
                .input_fact(i)
                .map_err(fail)?
                .shape
                .dims()
                .map(|d| d.concretize())
                .collect();
            let mut shape: TVec<TDim> = TVec::new();
            for (j, &d) in spec.shape.iter().enumerate() {
                if d < 0 {
                    let sym = match declared.get(j) {
                        Some(Some(TDim::Sym(s))) => s.clone(),
                        // An unnamed leading dimension is the batch, one for every input:
                        // a graph that joins its inputs (skl2onnx's per-column inputs into
                        // a Concat) only types if tract knows their batches are equal.
                        _ if j == 0 => symbols.sym("scoria_batch"),
                        _ => symbols.sym(&format!("d{i}_{j}")),
                    };
                    dynamic.push((i, j, sym.clone()));
                    shape.push(sym.into());
                } else {
                    shape.push((d as usize).to_dim());
                }
            }
            let fact = InferenceFact::dt_shape(datum_type(spec.dtype)?, shape);
            model.set_input_fact(i, fact).map_err(fail)?;
        }
        let typed = model
            .into_typed()
            .map_err(|e| match missing_operators(&onnx, bytes) {
                Some(ops) => NnError::new(
                    ErrorKind::UnsupportedOperation,
                    format!(
                        "{}: tract has no implementation of {ops}; serve this model with ONNX Runtime \
                     (`backend = \"onnxruntime\"` in its card, or `--backend auto`)",
                        path.display()
                    ),
                ),
                None => fail(e),
            })?;
        let graph = TractGraph {
            name: card.name.clone(),
            typed,
            dynamic,
            plans: Mutex::new(PlanCache {
                max: card.max_plans.unwrap_or(DEFAULT_MAX_PLANS).max(1),
                ..PlanCache::default()
            }),
            output_types: card.outputs.iter().map(|o| o.dtype).collect(),
        };
        // Batch 1 (and length 1) is built now, so the common case never waits for a build.
        let unit = vec![1; graph.dynamic.len()];
        graph.plan(&unit)?;
        Ok(graph)
    }

    /// The plan for these dynamic sizes, built now if this is their first use.
    fn plan(&self, key: &[u32]) -> Result<Arc<TypedRunnableModel>, NnError> {
        let slot = {
            let mut cache = self.plans.lock().unwrap_or_else(|p| p.into_inner());
            match cache.slots.get(key).cloned() {
                Some(slot) => {
                    // Most recently used goes last.
                    if let Some(i) = cache.order.iter().position(|k| k.as_slice() == key) {
                        let k = cache.order.remove(i).unwrap_or_default();
                        cache.order.push_back(k);
                    }
                    slot
                }
                None => {
                    if cache.slots.len() >= cache.max
                        && let Some(old) = cache.order.pop_front()
                    {
                        cache.slots.remove(&old);
                    }
                    let slot = Slot::default();
                    cache.slots.insert(key.to_vec(), slot.clone());
                    cache.order.push_back(key.to_vec());
                    slot
                }
            }
        };
        slot.get_or_init(|| self.build(key)).clone()
    }

    fn build(&self, key: &[u32]) -> Result<Arc<TypedRunnableModel>, NnError> {
        let t = Instant::now();
        let subs: HashMap<Symbol, TDim> = self
            .dynamic
            .iter()
            .zip(key)
            .map(|((_, _, sym), &v)| (sym.clone(), TDim::from(v as i64)))
            .collect();
        let plan = self
            .typed
            .clone()
            .set_symbols(&subs)
            .and_then(|m| m.into_optimized())
            .and_then(|m| m.into_runnable())
            .map_err(|e| NnError::new(ErrorKind::RuntimeError, format!("tract plan for {key:?}: {e:#}")))?;
        tracing::debug!(model = %self.name, sizes = ?key, ms = t.elapsed().as_millis() as u64, "tract plan built");
        Ok(plan)
    }
}

impl Graph for TractGraph {
    fn run(&self, inputs: &[Tensor]) -> Result<Vec<Tensor>, NnError> {
        let key: Vec<u32> = self.dynamic.iter().map(|&(i, j, _)| inputs[i].dims[j]).collect();
        let plan = self.plan(&key)?;
        let inputs = inputs.iter().map(to_tract).collect::<Result<TVec<TValue>, _>>()?;
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
    with_element!(d, T => Ok(T::datum_type()), other => Err(unsupported(other)))
}

fn to_tract(t: &Tensor) -> Result<TValue, NnError> {
    fn array<T: Element + Datum>(t: &Tensor) -> Result<TractTensor, NnError> {
        let shape: Vec<usize> = t.dims.iter().map(|&d| d as usize).collect();
        tract_ndarray::ArrayD::from_shape_vec(shape, t.to_vec::<T>())
            .map(TractTensor::from)
            .map_err(|e| NnError::new(ErrorKind::InvalidArgument, e.to_string()))
    }
    let tensor = with_element!(t.dtype, T => array::<T>(t), other => Err(unsupported(other)))?;
    Ok(tensor.into_tvalue())
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
    fn tensor<T: Element + Datum + Copy>(t: &TractTensor) -> Result<Tensor, NnError> {
        let dims = t.shape().iter().map(|&d| d as u32).collect();
        let view = t
            .to_plain_array_view::<T>()
            .map_err(|e| NnError::new(ErrorKind::RuntimeError, e.to_string()))?;
        Ok(match view.as_slice() {
            Some(values) => Tensor::from_slice(dims, values),
            None => Tensor::from_slice(dims, &view.iter().copied().collect::<Vec<T>>()),
        })
    }
    with_element!(dtype, T => tensor::<T>(t), other => Err(unsupported(other)))
}

fn unsupported(dtype: DType) -> NnError {
    NnError::new(
        ErrorKind::UnsupportedOperation,
        format!("tract backend: {dtype:?} tensors"),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::models::{ModelCard, TensorSpec};

    fn graph(max_plans: usize) -> TractGraph {
        // scores[b, 2] = query[b, 3] x matrix[3, 2], dynamic batch.
        let bytes = crate::index::matmul_model(&[1.0, 0.0, 0.0, 1.0, 0.0, 0.0], 3, 2, 1);
        let spec = |name: &str, shape: Vec<i64>| TensorSpec {
            name: name.into(),
            shape,
            dtype: DType::F32,
        };
        let card = ModelCard {
            name: "m".into(),
            version: "1".into(),
            format: Format::Onnx,
            file: "m.onnx".into(),
            sha256: String::new(),
            weights: "generated".into(),
            description: None,
            inputs: vec![spec("query", vec![-1, 3])],
            outputs: vec![spec("scores", vec![-1, 2])],
            preprocess: None,
            labels: None,
            labels_sha256: None,
            source: "test".into(),
            licence: "test".into(),
            max_plans: Some(max_plans),
            backend: None,
            device: None,
            onnxruntime: Default::default(),
            batching: Default::default(),
        };
        let entry = ModelEntry {
            card,
            dir: std::path::PathBuf::new(),
        };
        TractGraph::new(&entry, &bytes).unwrap()
    }

    fn batch(n: u32) -> Vec<Tensor> {
        let data = (0..n * 3).flat_map(|i| (i as f32).to_le_bytes()).collect();
        vec![Tensor {
            dims: vec![n, 3],
            dtype: DType::F32,
            data,
        }]
    }

    #[test]
    fn plans_are_per_size_and_the_least_recently_used_goes_first() {
        let g = graph(2);
        // The unit plan (batch 1) is built at load.
        for n in [2, 1, 3] {
            let out = g.run(&batch(n)).unwrap();
            assert_eq!(out[0].dims, vec![n, 2]);
            // Row r is (3r, 3r + 1, 3r + 2); the scores are its first two values.
            let first = f32::from_le_bytes(out[0].data[..4].try_into().unwrap());
            assert_eq!(first, 0.0);
        }
        let cache = g.plans.lock().unwrap();
        let kept: Vec<_> = cache.order.iter().cloned().collect();
        // 2 was used before 1's second use, so 3 evicted it.
        assert_eq!(kept, vec![vec![1], vec![3]]);
        assert_eq!(cache.slots.len(), 2);
    }
}
