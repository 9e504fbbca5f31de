//! `wasi:nn@0.2.0-rc-2024-10-28` for guests, implemented with `bindgen!` rather than
//! wasmtime-wasi-nn so that models are loaded once by the host and shared, `compute` runs off
//! the async executor without a per-model lock, and each model picks its backend.
//!
//! A guest sees only the models its manifest entry lists (`load-by-name`); loading raw graph
//! bytes from a guest is refused, since it would let any request allocate a model.

use super::{ErrorKind, LoadedModel, ModelRegistry, NnError, Tensor};
use crate::metrics::Metrics;
use crate::models::DType;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};
use wasmtime::component::{HasData, Linker, Resource, ResourceTable};

mod generated {
    wasmtime::component::bindgen!({
        path: "../wit/deps/wasi-nn",
        world: "wasi:nn/ml",
        imports: {
            "wasi:nn/inference.[method]graph-execution-context.compute": async | trappable,
            default: trappable,
        },
        with: {
            "wasi:nn/graph.graph": super::GraphHandle,
            "wasi:nn/inference.graph-execution-context": super::ExecutionContext,
            "wasi:nn/tensor.tensor": crate::nn::Tensor,
            "wasi:nn/errors.error": crate::nn::NnError,
        },
    });
}

use generated::wasi::nn::{errors, graph, inference, tensor};

/// A guest's handle to a loaded, shared model.
pub struct GraphHandle(Arc<LoadedModel>);

/// A guest's execution context; holds no per-context state since graphs are reentrant.
pub struct ExecutionContext(Arc<LoadedModel>);

/// Per-request wasi-nn state: the models this component may use, and where to add up the
/// time spent in inference (reported to clients in `Server-Timing`).
pub struct NnCtx {
    models: ModelRegistry,
    metrics: Arc<Metrics>,
    timing: Option<Arc<InferenceTiming>>,
}

impl NnCtx {
    /// `models` must already be narrowed to what the component's manifest entry grants.
    pub fn new(models: ModelRegistry, metrics: Arc<Metrics>) -> Self {
        Self {
            models,
            metrics,
            timing: None,
        }
    }

    /// Attribute this instance's inference time to a request.
    pub fn set_timing(&mut self, timing: Arc<InferenceTiming>) {
        self.timing = Some(timing);
    }
}

/// Inference time accumulated over one request's `compute` calls.
#[derive(Debug, Default)]
pub struct InferenceTiming {
    nanos: AtomicU64,
}

impl InferenceTiming {
    pub fn get(&self) -> Duration {
        Duration::from_nanos(self.nanos.load(Ordering::Relaxed))
    }

    fn add(&self, d: Duration) {
        self.nanos.fetch_add(d.as_nanos() as u64, Ordering::Relaxed);
    }
}

/// What the generated `Host` traits are implemented on: the context plus the store's table.
pub struct NnView<'a> {
    pub ctx: &'a mut NnCtx,
    pub table: &'a mut ResourceTable,
}

struct HasNn;

impl HasData for HasNn {
    type Data<'a> = NnView<'a>;
}

/// Add wasi-nn to a linker; `view` finds the context in the store's data.
pub fn add_to_linker<T: Send + 'static>(
    linker: &mut Linker<T>,
    view: fn(&mut T) -> NnView<'_>,
) -> wasmtime::Result<()> {
    graph::add_to_linker::<T, HasNn>(linker, view)?;
    tensor::add_to_linker::<T, HasNn>(linker, view)?;
    inference::add_to_linker::<T, HasNn>(linker, view)?;
    errors::add_to_linker::<T, HasNn>(linker, view)?;
    Ok(())
}

type Fallible<T> = wasmtime::Result<Result<T, Resource<NnError>>>;

impl NnView<'_> {
    fn fail<T>(&mut self, e: NnError) -> Fallible<T> {
        tracing::debug!(error = %e, "wasi-nn error returned to guest");
        Ok(Err(self.table.push(e)?))
    }
}

impl graph::Host for NnView<'_> {
    fn load(
        &mut self,
        _builder: Vec<Vec<u8>>,
        _e: graph::GraphEncoding,
        _t: graph::ExecutionTarget,
    ) -> Fallible<Resource<GraphHandle>> {
        self.fail(NnError::new(
            ErrorKind::UnsupportedOperation,
            "loading graph bytes from a guest is not allowed; list the model in the component's \
             `tool.scoria.models` and use load-by-name",
        ))
    }

    fn load_by_name(&mut self, name: String) -> Fallible<Resource<GraphHandle>> {
        match self.ctx.models.get(&name) {
            Some(m) => {
                let g = GraphHandle(m.clone());
                Ok(Ok(self.table.push(g)?))
            }
            None => self.fail(NnError::new(
                ErrorKind::NotFound,
                format!("model `{name}` is not available to this component; list it in `[component.<id>.tool.scoria] models`"),
            )),
        }
    }
}

impl graph::HostGraph for NnView<'_> {
    fn init_execution_context(&mut self, g: Resource<GraphHandle>) -> Fallible<Resource<ExecutionContext>> {
        let model = self.table.get(&g)?.0.clone();
        Ok(Ok(self.table.push(ExecutionContext(model))?))
    }

    fn drop(&mut self, g: Resource<GraphHandle>) -> wasmtime::Result<()> {
        self.table.delete(g)?;
        Ok(())
    }
}

impl inference::Host for NnView<'_> {}

impl inference::HostGraphExecutionContext for NnView<'_> {
    async fn compute(
        &mut self,
        ctx: Resource<ExecutionContext>,
        inputs: Vec<(String, Resource<Tensor>)>,
    ) -> Fallible<Vec<(String, Resource<Tensor>)>> {
        let model = self.table.get(&ctx)?.0.clone();
        let mut tensors = Vec::with_capacity(inputs.len());
        for (name, t) in inputs {
            tensors.push((name, self.table.delete(t)?));
        }
        let start = Instant::now();
        let result = model
            .run(self.ctx.models.pool(), tensors)
            .await
            .map(|(outputs, run)| (run, outputs));
        if let Some(t) = &self.ctx.timing {
            t.add(start.elapsed());
        }
        let outputs = match result {
            Ok((run, outputs)) => {
                self.ctx
                    .metrics
                    .inference(&model.entry.card.name, model.backend, &run);
                outputs
            }
            Err(e) => return self.fail(e),
        };
        let mut named = Vec::with_capacity(outputs.len());
        for (name, t) in outputs {
            named.push((name, self.table.push(t)?));
        }
        Ok(Ok(named))
    }

    fn drop(&mut self, ctx: Resource<ExecutionContext>) -> wasmtime::Result<()> {
        self.table.delete(ctx)?;
        Ok(())
    }
}

impl tensor::Host for NnView<'_> {}

impl tensor::HostTensor for NnView<'_> {
    fn new(
        &mut self,
        dims: Vec<u32>,
        ty: tensor::TensorType,
        data: Vec<u8>,
    ) -> wasmtime::Result<Resource<Tensor>> {
        let dtype = match ty {
            tensor::TensorType::Fp16 => DType::F16,
            tensor::TensorType::Fp32 => DType::F32,
            tensor::TensorType::Fp64 => DType::F64,
            tensor::TensorType::Bf16 => DType::Bf16,
            tensor::TensorType::U8 => DType::U8,
            tensor::TensorType::I32 => DType::I32,
            tensor::TensorType::I64 => DType::I64,
        };
        Ok(self.table.push(Tensor { dims, dtype, data })?)
    }

    fn dimensions(&mut self, t: Resource<Tensor>) -> wasmtime::Result<Vec<u32>> {
        Ok(self.table.get(&t)?.dims.clone())
    }

    fn ty(&mut self, t: Resource<Tensor>) -> wasmtime::Result<tensor::TensorType> {
        Ok(match self.table.get(&t)?.dtype {
            DType::F16 => tensor::TensorType::Fp16,
            DType::F32 => tensor::TensorType::Fp32,
            DType::F64 => tensor::TensorType::Fp64,
            DType::Bf16 => tensor::TensorType::Bf16,
            DType::U8 => tensor::TensorType::U8,
            DType::I32 => tensor::TensorType::I32,
            DType::I64 => tensor::TensorType::I64,
        })
    }

    fn data(&mut self, t: Resource<Tensor>) -> wasmtime::Result<Vec<u8>> {
        Ok(self.table.get(&t)?.data.clone())
    }

    fn drop(&mut self, t: Resource<Tensor>) -> wasmtime::Result<()> {
        self.table.delete(t)?;
        Ok(())
    }
}

impl errors::Host for NnView<'_> {}

impl errors::HostError for NnView<'_> {
    fn code(&mut self, e: Resource<NnError>) -> wasmtime::Result<errors::ErrorCode> {
        Ok(match self.table.get(&e)?.kind {
            ErrorKind::InvalidArgument => errors::ErrorCode::InvalidArgument,
            ErrorKind::InvalidEncoding => errors::ErrorCode::InvalidEncoding,
            ErrorKind::RuntimeError => errors::ErrorCode::RuntimeError,
            ErrorKind::UnsupportedOperation => errors::ErrorCode::UnsupportedOperation,
            ErrorKind::TooLarge => errors::ErrorCode::TooLarge,
            ErrorKind::NotFound => errors::ErrorCode::NotFound,
            ErrorKind::Security => errors::ErrorCode::Security,
        })
    }

    fn data(&mut self, e: Resource<NnError>) -> wasmtime::Result<String> {
        Ok(self.table.get(&e)?.message.clone())
    }

    fn drop(&mut self, e: Resource<NnError>) -> wasmtime::Result<()> {
        self.table.delete(e)?;
        Ok(())
    }
}
