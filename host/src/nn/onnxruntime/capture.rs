//! Runs of one session through input and output buffers bound once, replayed as a captured
//! CUDA graph on a GPU (`[onnxruntime] cuda_graph`, on by default there).
//!
//! A batch-1 ResNet-152 is a few hundred kernels, and ONNX Runtime launches each from the CPU,
//! which costs more than the GPU's own work. With `enable_cuda_graph`, ONNX Runtime records one
//! run's launches per graph id and replays them in one call. A replay reads and writes the
//! addresses it was recorded with, so each shape gets its own buffers on the device, bound
//! once in an `IoBinding`, and each compute copies its input into them: first into a pinned
//! host buffer (which the GPU reads at full speed, unlike ordinary pageable memory), then
//! across.
//!
//! ONNX Runtime keeps captured graphs per calling thread, and a capture fails if another
//! thread allocates GPU memory meanwhile. So graphs are only captured while a model is warmed
//! at load, each session on the one worker thread that then runs it (see the caller).

use super::super::batch::BatchInputs;
use super::super::{ErrorKind, NnError, Tensor, with_element};
use crate::models::DType;
use ort::memory::{AllocationDevice, Allocator, AllocatorType, MemoryInfo, MemoryType};
use ort::session::{IoBinding, NoSelectedOutputs, RunOptions, Session};
use ort::value::DynTensor;

/// ONNX Runtime's run option naming the CUDA graph a run captures or replays (`-1`: none).
const GRAPH_ID: &str = "gpu_graph_id";

/// Options for a run outside every captured graph. On a session with CUDA graphs enabled, a
/// run that names no graph is graph 0, which ONNX Runtime would capture with whatever
/// addresses that run's inputs happen to have.
pub fn uncaptured() -> Result<RunOptions<NoSelectedOutputs>, ort::Error> {
    let mut options = RunOptions::new()?;
    options.set(GRAPH_ID, "-1")?;
    Ok(options)
}

/// One input shape's bound buffers on one session, and the graph id they replay.
pub struct Captured {
    /// The input shapes this serves; a compute with other shapes runs uncaptured.
    shapes: Vec<Vec<u32>>,
    binding: IoBinding,
    /// Each input's host-side buffer (pinned on a GPU), its size in bytes, and its bound buffer.
    staging: Vec<DynTensor>,
    staging_bytes: Vec<usize>,
    inputs: Vec<DynTensor>,
    /// Each output's buffer and the type the card gives it.
    outputs: Vec<(DynTensor, DType)>,
    options: RunOptions<NoSelectedOutputs>,
}

/// Where the bound buffers live (GPU memory for CUDA), and where inputs are staged on the
/// host (pinned memory for CUDA); both the session's own memory on the CPU.
fn allocators(session: &Session, gpu: bool) -> Result<(Allocator, Allocator), ort::Error> {
    match gpu {
        true => Ok((
            Allocator::new(
                session,
                MemoryInfo::new(
                    AllocationDevice::CUDA,
                    0,
                    AllocatorType::Device,
                    MemoryType::Default,
                )?,
            )?,
            Allocator::new(
                session,
                MemoryInfo::new(
                    AllocationDevice::CUDA_PINNED,
                    0,
                    AllocatorType::Device,
                    MemoryType::CPUInput,
                )?,
            )?,
        )),
        false => Ok((
            Allocator::new(session, session.allocator().memory_info().clone())?,
            Allocator::new(session, session.allocator().memory_info().clone())?,
        )),
    }
}

impl Captured {
    /// Bind buffers shaped as `inputs` and as `example` (one uncaptured run's outputs) on
    /// `session` (in GPU memory if `gpu`), copy `inputs` in and run until ONNX Runtime has
    /// captured graph `graph` (`None`: bound runs without a graph, as on CPU).
    pub fn record(
        session: &mut Session,
        names: (&[String], &[(String, DType)]),
        inputs: &[Tensor],
        example: &[Tensor],
        gpu: bool,
        graph: Option<u32>,
    ) -> Result<Self, NnError> {
        let err = |e: ort::Error| {
            NnError::new(
                ErrorKind::RuntimeError,
                format!("onnxruntime: capturing a CUDA graph: {e}"),
            )
        };
        let (alloc, host) = allocators(session, gpu).map_err(err)?;
        let mut binding = session.create_binding().map_err(err)?;
        let mut bound_inputs = Vec::with_capacity(inputs.len());
        let mut staging = Vec::with_capacity(inputs.len());
        let mut staging_bytes = Vec::with_capacity(inputs.len());
        for (t, name) in inputs.iter().zip(names.0) {
            let buffer = DynTensor::new(&alloc, element_type(t.dtype)?, shape(&t.dims)).map_err(err)?;
            binding.bind_input(name.as_str(), &buffer).map_err(err)?;
            bound_inputs.push(buffer);
            staging.push(DynTensor::new(&host, element_type(t.dtype)?, shape(&t.dims)).map_err(err)?);
            let elements = t.dims.iter().map(|&d| d as usize).product();
            let bytes = element_type(t.dtype)?.byte_size(elements).ok_or_else(|| {
                NnError::new(
                    ErrorKind::UnsupportedOperation,
                    format!("onnxruntime: bound inputs of {:?}", t.dtype),
                )
            })?;
            staging_bytes.push(bytes);
        }
        let mut outputs = Vec::with_capacity(example.len());
        for (t, (name, dtype)) in example.iter().zip(names.1) {
            let mut buffer = DynTensor::new(&alloc, element_type(*dtype)?, shape(&t.dims)).map_err(err)?;
            binding.bind_output(name.as_str(), &mut buffer).map_err(err)?;
            outputs.push((buffer, *dtype));
        }
        let mut options = RunOptions::new().map_err(err)?;
        if let Some(id) = graph {
            options.set(GRAPH_ID, id.to_string()).map_err(err)?;
        }
        let mut captured = Self {
            shapes: inputs.iter().map(|t| t.dims.clone()).collect(),
            binding,
            staging,
            staging_bytes,
            inputs: bound_inputs,
            outputs,
            options,
        };
        // ONNX Runtime runs a graph id uncaptured until it has seen it once, then captures it
        // (within the same call); a third run is the first replay.
        for _ in 0..3 {
            captured.run(session, inputs)?;
        }
        Ok(captured)
    }

    /// Whether `inputs` have the shapes this was recorded for.
    pub fn fits(&self, inputs: &[Tensor]) -> bool {
        self.fits_with(inputs.len(), |i, shape| {
            inputs.get(i).is_some_and(|t| t.dims == shape)
        })
    }

    /// Whether a batch's inputs have the shapes this was recorded for.
    pub fn fits_batch(&self, batch: &BatchInputs) -> bool {
        self.fits_with(batch.inputs(), |i, shape| batch.dims(i).as_deref() == Some(shape))
    }

    /// Whether there are `n` inputs and `same(i, shape)` holds for each input `i` and the shape
    /// recorded for it.
    fn fits_with(&self, n: usize, same: impl Fn(usize, &[u32]) -> bool) -> bool {
        self.shapes.len() == n && self.shapes.iter().enumerate().all(|(i, s)| same(i, s))
    }

    /// Copy `inputs` into the bound buffers, replay, and copy the outputs back to the host.
    pub fn run(&mut self, session: &mut Session, inputs: &[Tensor]) -> Result<Vec<Tensor>, NnError> {
        self.run_with(session, |i, dst| {
            let t = inputs
                .get(i)
                .filter(|t| t.data.len() == dst.len())
                .ok_or_else(|| {
                    NnError::new(
                        ErrorKind::InvalidArgument,
                        format!(
                            "onnxruntime: input {i} does not fill its bound buffer of {} bytes",
                            dst.len()
                        ),
                    )
                })?;
            dst.copy_from_slice(&t.data);
            Ok(())
        })
    }

    /// Let `write` fill each input's staging buffer (by index; the slice is exactly its size),
    /// copy them into the bound buffers, replay, and copy the outputs back to the host.
    pub fn run_with(
        &mut self,
        session: &mut Session,
        write: impl Fn(usize, &mut [u8]) -> Result<(), NnError>,
    ) -> Result<Vec<Tensor>, NnError> {
        let err = |e: ort::Error| NnError::new(ErrorKind::RuntimeError, format!("onnxruntime: {e}"));
        for (i, ((staging, buffer), &bytes)) in self
            .staging
            .iter_mut()
            .zip(&mut self.inputs)
            .zip(&self.staging_bytes)
            .enumerate()
        {
            copy_in(|dst| write(i, dst), staging, bytes, buffer)?;
        }
        // The outputs are the bound buffers; the run has synchronised with the device.
        drop(
            session
                .run_binding_with_options(&self.binding, &self.options)
                .map_err(err)?,
        );
        self.outputs
            .iter()
            .map(|(buffer, dtype)| {
                let host = buffer.to(AllocationDevice::CPU, 0).map_err(err)?;
                super::from_ort(&host.into_dyn(), *dtype).map_err(err)
            })
            .collect()
    }
}

fn shape(dims: &[u32]) -> Vec<i64> {
    dims.iter().map(|&d| i64::from(d)).collect()
}

fn element_type(dtype: DType) -> Result<ort::value::TensorElementType, NnError> {
    use ort::value::IntoTensorElementType as P;
    with_element!(dtype, T => Ok(<T as P>::into_tensor_element_type()), other => Err(NnError::new(
        ErrorKind::UnsupportedOperation,
        format!("onnxruntime backend: {other:?} tensors"),
    )))
}

/// Fill a staging buffer of `bytes` bytes with `write`, then copy it into its bound buffer (on
/// a GPU: `staging` is pinned memory, copied host to device).
///
/// Both sides are buffers that ONNX Runtime allocated: `ort` copies through a session of its
/// own, and a borrowed source would make it clone the source with that same session, which
/// deadlocks on its lock (ort 2.0.0-rc.15).
fn copy_in(
    write: impl FnOnce(&mut [u8]) -> Result<(), NnError>,
    staging: &mut DynTensor,
    bytes: usize,
    buffer: &mut DynTensor,
) -> Result<(), NnError> {
    // `ort` refuses typed access to pinned memory (it counts it as the GPU's), so the bytes go
    // in through the raw pointer.
    let dst = staging.data_ptr_mut().cast::<u8>();
    // SAFETY: `staging` is host memory (pageable or pinned) that ONNX Runtime allocated for
    // a tensor of exactly `bytes` bytes (see `record`), and it is borrowed mutably for as
    // long as the slice lives, so nothing else reads or writes it meanwhile.
    write(unsafe { std::slice::from_raw_parts_mut(dst, bytes) })?;
    staging.copy_into(buffer).map_err(|e| {
        NnError::new(
            ErrorKind::RuntimeError,
            format!("onnxruntime: copying an input: {e}"),
        )
    })
}
