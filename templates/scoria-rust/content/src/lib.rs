//! {{project-name | kebab_case}}: a Scoria scoring function. `POST {{http-path}}` with the
//! model's input as raw float32 little-endian bytes (`application/x-tensor`, shape
//! `INPUT_SHAPE`) runs `MODEL` through wasi:nn in the host and answers each output tensor's
//! name, shape and five largest values as JSON.
//!
//! Pre-processing (decode an image, tokenise a text) goes before `compute`, post-processing
//! (labels, thresholds) after it; the model itself stays loaded in the host.

use spin_sdk::http::body::IncomingBodyExt;
use serde_json::json;
use spin_sdk::http::{Method, Request, Response};

mod nn {
    wit_bindgen::generate!({ path: "wit/deps/wasi-nn", world: "wasi:nn/ml" });
}
use nn::wasi::nn::{graph, tensor};

#[spin_sdk::http_service]
async fn handle(req: Request) -> Response<String> {
    match score(req).await {
        Ok(json) => answer(200, json),
        Err((status, code, message)) => {
            let body = json!({ "error": { "code": code, "message": message } });
            answer(status, body.to_string())
        }
    }
}

type Failure = (u16, &'static str, String);

async fn score(req: Request) -> Result<String, Failure> {
    if req.method() != Method::POST {
        return Err((405, "method_not_allowed", "POST the input tensor as application/x-tensor".into()));
    }
    let setting = |name: &str| std::env::var(name).map_err(|_| (500, "misconfigured", format!("{name} is not set")));
    let model = setting("MODEL")?;
    let input = setting("INPUT_NAME")?;
    let shape: Vec<u32> = setting("INPUT_SHAPE")?
        .split(',')
        .map(|d| d.trim().parse().map_err(|_| (500, "misconfigured", format!("INPUT_SHAPE has `{d}`"))))
        .collect::<Result<_, _>>()?;
    let body = req
        .into_body()
        .bytes()
        .await
        .map_err(|e| (400, "body_unreadable", format!("{e:?}")))?;
    let want = shape.iter().product::<u32>() as usize * 4;
    if body.len() != want {
        return Err((400, "invalid_tensor", format!("send {want} bytes: float32 {shape:?}; got {}", body.len())));
    }

    let failed = |e: nn::wasi::nn::errors::Error| (500, "inference_failed", format!("{:?}: {}", e.code(), e.data()));
    let graph = graph::load_by_name(&model).map_err(failed)?;
    let context = graph.init_execution_context().map_err(failed)?;
    let tensor = tensor::Tensor::new(&shape, tensor::TensorType::Fp32, &body);
    let outputs = context.compute(vec![(input, tensor)]).map_err(failed)?;

    let mut answers = Vec::new();
    for (name, t) in outputs {
        let values: Vec<f32> = t.data().chunks_exact(4).map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])).collect();
        let mut order: Vec<usize> = (0..values.len()).collect();
        order.sort_by(|&a, &b| values[b].total_cmp(&values[a]));
        let top: Vec<_> = order.iter().take(5).map(|&i| json!({ "index": i, "value": values[i] })).collect();
        answers.push(json!({ "name": name, "shape": t.dimensions(), "top": top }));
    }
    Ok(json!({ "model": model, "outputs": answers }).to_string())
}

fn answer(status: u16, body: String) -> Response<String> {
    let mut r = Response::new(body);
    *r.status_mut() = spin_sdk::http::StatusCode::from_u16(status).unwrap_or(spin_sdk::http::StatusCode::INTERNAL_SERVER_ERROR);
    r.headers_mut().insert("content-type", spin_sdk::http::HeaderValue::from_static("application/json"));
    r
}
