//! The Open Inference Protocol over gRPC (`inference.GRPCInferenceService`, KServe's
//! `proto/open_inference_grpc.proto`), on its own port (`--grpc-listen`): what
//! `tritonclient.grpc` and other gRPC clients of Triton and KServe call.
//!
//! Messages are turned into the same requests as REST's ([`crate::oip::codec`]) and run through
//! the same keys, admission queues, batching and metrics ([`AppState`]'s `oip_*`). Tensors come
//! as `raw_input_contents` (what tritonclient sends) or typed `contents`; outputs go back as
//! `raw_output_contents`. Served on hyper's HTTP/2 with tonic's generated service, without
//! tonic's own transport.

use crate::models::DType;
use crate::nn::Tensor;
use crate::oip::codec::{BYTES, Declared, InferRequest, bytes_elements, datatype};
use crate::oip::{ModelRef, OipError};
use crate::server::{AppState, OipTarget};
use hyper_util::rt::{TokioExecutor, TokioIo};
use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::net::TcpListener;
use tonic::{Request, Response, Status};

#[allow(clippy::all, missing_docs)]
mod proto {
    tonic::include_proto!("inference");
}

use proto::grpc_inference_service_server::{GrpcInferenceService, GrpcInferenceServiceServer};
use proto::model_infer_request::InferInputTensor;
use proto::model_infer_response::InferOutputTensor;
use proto::model_metadata_response::TensorMetadata;
use proto::*;

/// The service: the server's state, shared with the REST side.
struct Inference {
    state: Arc<AppState>,
}

/// A protocol error as a gRPC status: 400 `INVALID_ARGUMENT`, 401 `UNAUTHENTICATED`, 403
/// `PERMISSION_DENIED`, 404 `NOT_FOUND`, a full queue or budget `RESOURCE_EXHAUSTED`, still
/// loading `UNAVAILABLE`.
fn status(e: OipError) -> Status {
    match e.status {
        400 | 405 => Status::invalid_argument(e.message),
        401 => Status::unauthenticated(e.message),
        403 => Status::permission_denied(e.message),
        404 => Status::not_found(e.message),
        413 => Status::resource_exhausted(e.message),
        503 if e.overloaded => Status::resource_exhausted(e.message),
        503 => Status::unavailable(e.message),
        _ => Status::internal(e.message),
    }
}

fn model_ref(name: String, version: String) -> ModelRef {
    ModelRef {
        name,
        version: (!version.is_empty()).then_some(version),
    }
}

/// A typed tensor (`contents`): the field of its datatype, as little-endian bytes.
fn typed(d: &Declared, c: &InferTensorContents) -> Result<Tensor, OipError> {
    fn put<T: Copy, const N: usize>(
        values: &[T],
        f: impl Fn(T) -> [u8; N],
    ) -> impl FnOnce(DType, &mut Vec<u8>) -> Result<(), String> {
        move |_, out| {
            values.iter().for_each(|&v| out.extend(f(v)));
            Ok(())
        }
    }
    let (dtype, _, _) = d.check()?;
    match dtype {
        DType::F32 => d.from_elements(c.fp32_contents.len(), put(&c.fp32_contents, f32::to_le_bytes)),
        DType::F64 => d.from_elements(c.fp64_contents.len(), put(&c.fp64_contents, f64::to_le_bytes)),
        DType::I64 => d.from_elements(c.int64_contents.len(), put(&c.int64_contents, i64::to_le_bytes)),
        DType::I32 => d.from_elements(c.int_contents.len(), put(&c.int_contents, i32::to_le_bytes)),
        DType::U8 => d.from_elements(c.uint_contents.len(), |_, out| {
            for &v in &c.uint_contents {
                out.push(u8::try_from(v).map_err(|_| format!("{v} is not a UINT8"))?);
            }
            Ok(())
        }),
        DType::F16 | DType::Bf16 => Err(OipError::bad_request(format!(
            "input `{}`: the protocol has no typed contents for {}; send it as raw_input_contents",
            d.name, d.datatype
        ))),
    }
}

/// The REST form of a `ModelInferRequest`, every input checked against what it carries.
fn infer_request(r: &ModelInferRequest) -> Result<InferRequest, OipError> {
    let raw = &r.raw_input_contents;
    if !raw.is_empty() && raw.len() != r.inputs.len() {
        return Err(OipError::bad_request(format!(
            "raw_input_contents has {} entries for {} inputs; send one per input, or none",
            raw.len(),
            r.inputs.len()
        )));
    }
    let mut inputs = Vec::with_capacity(r.inputs.len());
    let mut bytes_inputs = Vec::new();
    for (i, input) in r.inputs.iter().enumerate() {
        let InferInputTensor {
            name,
            datatype,
            shape,
            contents,
            ..
        } = input;
        if datatype == BYTES {
            let elements = match (raw.get(i), contents) {
                (Some(b), _) => bytes_elements(name, shape, &bytes::Bytes::copy_from_slice(b))?,
                (None, Some(c)) => c
                    .bytes_contents
                    .iter()
                    .map(|b| bytes::Bytes::copy_from_slice(b))
                    .collect(),
                (None, None) => Vec::new(),
            };
            bytes_inputs.push((name.clone(), elements));
            continue;
        }
        let declared = Declared {
            name,
            datatype,
            shape,
        };
        let tensor = match (raw.get(i), contents) {
            (Some(bytes), _) => declared.from_bytes(bytes)?,
            (None, Some(c)) => typed(&declared, c)?,
            (None, None) => {
                return Err(OipError::bad_request(format!(
                    "input `{name}` has neither contents nor raw_input_contents"
                )));
            }
        };
        inputs.push((name.clone(), tensor));
    }
    let outputs =
        (!r.outputs.is_empty()).then(|| r.outputs.iter().map(|o| (o.name.clone(), Some(true))).collect());
    Ok(InferRequest {
        id: (!r.id.is_empty()).then(|| r.id.clone()),
        inputs,
        bytes_inputs,
        outputs,
        binary_by_default: true,
    })
}

/// The headers a gRPC call carries, for the API keys (`authorization`, `x-api-key`).
fn headers<T>(request: &Request<T>) -> http::HeaderMap {
    request.metadata().clone().into_headers()
}

#[tonic::async_trait]
impl GrpcInferenceService for Inference {
    async fn server_live(
        &self,
        _: Request<ServerLiveRequest>,
    ) -> Result<Response<ServerLiveResponse>, Status> {
        Ok(Response::new(ServerLiveResponse { live: true }))
    }

    async fn server_ready(
        &self,
        _: Request<ServerReadyRequest>,
    ) -> Result<Response<ServerReadyResponse>, Status> {
        Ok(Response::new(ServerReadyResponse {
            ready: self.state.is_ready(),
        }))
    }

    async fn model_ready(
        &self,
        request: Request<ModelReadyRequest>,
    ) -> Result<Response<ModelReadyResponse>, Status> {
        let headers = headers(&request);
        let r = request.into_inner();
        self.state
            .oip_authorize(&headers, Some(&r.name))
            .map_err(status)?;
        let ready = self.state.oip_target(&model_ref(r.name, r.version)).is_ok();
        Ok(Response::new(ModelReadyResponse { ready }))
    }

    async fn server_metadata(
        &self,
        request: Request<ServerMetadataRequest>,
    ) -> Result<Response<ServerMetadataResponse>, Status> {
        self.state
            .oip_authorize(&headers(&request), None)
            .map_err(status)?;
        Ok(Response::new(ServerMetadataResponse {
            name: "scoria".into(),
            version: env!("CARGO_PKG_VERSION").into(),
            extensions: vec!["binary_tensor_data".into(), "model_repository".into()],
        }))
    }

    async fn model_metadata(
        &self,
        request: Request<ModelMetadataRequest>,
    ) -> Result<Response<ModelMetadataResponse>, Status> {
        let headers = headers(&request);
        let r = request.into_inner();
        self.state
            .oip_authorize(&headers, Some(&r.name))
            .map_err(status)?;
        let model = match self
            .state
            .oip_target(&model_ref(r.name, r.version))
            .map_err(status)?
        {
            OipTarget::Model(model) => model,
            OipTarget::Function {
                component,
                decl,
                version,
            } => {
                let outputs = decl
                    .outputs
                    .iter()
                    .map(|o| TensorMetadata {
                        name: o.name.clone(),
                        datatype: o.datatype.clone(),
                        shape: vec![-1, -1],
                    })
                    .collect();
                return Ok(Response::new(ModelMetadataResponse {
                    name: component,
                    versions: vec![version],
                    platform: "scoria_function".into(),
                    inputs: vec![TensorMetadata {
                        name: decl.input,
                        datatype: BYTES.into(),
                        shape: vec![-1],
                    }],
                    outputs,
                    properties: Default::default(),
                }));
            }
        };
        let tensors = |specs: &[crate::models::TensorSpec]| {
            specs
                .iter()
                .map(|s| TensorMetadata {
                    name: s.name.clone(),
                    datatype: datatype(s.dtype).into(),
                    shape: s.shape.clone(),
                })
                .collect()
        };
        let card = &model.entry.card;
        Ok(Response::new(ModelMetadataResponse {
            name: card.name.clone(),
            versions: vec![card.version.clone()],
            platform: crate::oip::platform(model.backend),
            inputs: tensors(&card.inputs),
            outputs: tensors(&card.outputs),
            properties: Default::default(),
        }))
    }

    async fn model_infer(
        &self,
        request: Request<ModelInferRequest>,
    ) -> Result<Response<ModelInferResponse>, Status> {
        let start = Instant::now();
        let headers = headers(&request);
        let r = request.into_inner();
        let name = r.model_name.clone();
        let result = self.infer(&headers, r).await;
        let code = match &result {
            Ok(_) => 200,
            Err(e) => e.status,
        };
        let elapsed = start.elapsed();
        let key = self.state.oip_record(&name, code, elapsed);
        tracing::info!(
            model = %name,
            component = key.unwrap_or("-"),
            status = code,
            ms = (elapsed.as_secs_f64() * 1e5).round() / 100.0,
            "grpc ModelInfer"
        );
        result.map(Response::new).map_err(status)
    }
}

impl Inference {
    async fn infer(
        &self,
        headers: &http::HeaderMap,
        r: ModelInferRequest,
    ) -> Result<ModelInferResponse, OipError> {
        self.state.oip_authorize(headers, Some(&r.model_name))?;
        let m = model_ref(r.model_name.clone(), r.model_version.clone());
        let mut request = infer_request(&r)?;
        drop(r);
        let (version, outputs) = self.state.oip_infer(&m, &mut request).await?;
        let chosen = crate::oip::codec::select(&m.name, &request, outputs)?;
        let mut response = ModelInferResponse {
            model_name: m.name,
            model_version: version,
            id: request.id.unwrap_or_default(),
            ..Default::default()
        };
        for (name, t, _) in chosen {
            response.outputs.push(InferOutputTensor {
                name,
                datatype: t.datatype.into(),
                shape: t.dims.iter().map(|&d| i64::from(d)).collect(),
                ..Default::default()
            });
            response.raw_output_contents.push(t.raw);
        }
        Ok(response)
    }
}

/// Serve the gRPC service on `listener` until `shutdown`, then let calls in flight finish for
/// up to `drain`. Messages over `max_message` bytes are refused (`RESOURCE_EXHAUSTED`).
pub async fn serve(
    listener: TcpListener,
    state: Arc<AppState>,
    max_message: usize,
    drain: Duration,
    shutdown: impl Future<Output = ()>,
) -> anyhow::Result<()> {
    let service = GrpcInferenceServiceServer::new(Inference { state })
        .max_decoding_message_size(max_message)
        .max_encoding_message_size(usize::MAX);
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        let stream = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(e) => {
                    tracing::warn!(error = %e, "gRPC accept failed");
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let _ = stream.set_nodelay(true);
        let conn = hyper::server::conn::http2::Builder::new(TokioExecutor::new()).serve_connection(
            TokioIo::new(stream),
            hyper_util::service::TowerToHyperService::new(service.clone()),
        );
        let conn = graceful.watch(conn);
        tokio::spawn(async move {
            if let Err(e) = conn.await {
                tracing::debug!(error = %e, "gRPC connection ended");
            }
        });
    }
    if tokio::time::timeout(drain, graceful.shutdown()).await.is_err() {
        tracing::warn!("gRPC drain timeout reached; closing the remaining connections");
    }
    Ok(())
}
