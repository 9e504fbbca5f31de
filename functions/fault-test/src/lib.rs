//! A plain `[[trigger.http]]` component used only by the tests. Each path misbehaves in one
//! way, or reports what the sandbox lets it see:
//!
//! The last path segment picks the behaviour, so one build can sit behind several routes with
//! different grants:
//!
//! - `.../ok`: 200, so the tests can tell the host still serves after a fault;
//! - `.../trap`: panics, which is a wasm trap;
//! - `.../sandbox`: reports its environment, whether it can read host files, and whether
//!   it can load a model its manifest entry does not list;
//! - `.../outbound?url=...`: tries an outbound HTTP GET and reports what happened.

use scoria_guest::nn::{infer, F32Tensor};
use spin_sdk::http::Request;

#[spin_sdk::http_service]
async fn handle(req: Request) -> spin_sdk::http::Response<String> {
    let path = req.uri().path().to_string();
    let query = req.uri().query().unwrap_or("").to_string();
    let body = match path.rsplit('/').next().unwrap_or("") {
        "ok" => "ok".to_string(),
        "trap" => panic!("deliberate trap"),
        "sandbox" => sandbox_report(),
        "outbound" => outbound(query.strip_prefix("url=").unwrap_or("")).await,
        other => format!("unknown path {other}"),
    };
    spin_sdk::http::Response::new(body)
}

fn sandbox_report() -> String {
    let env: Vec<String> = std::env::vars().map(|(k, _)| k).collect();
    let host_file =
        std::fs::read_to_string("/etc/hostname").is_ok() || std::fs::read_to_string("/etc/passwd").is_ok();
    let granted_file = std::fs::read_to_string("/data/chelsea.png").is_ok()
        || std::fs::metadata("/data/chelsea.png").is_ok();
    let model = match infer(
        "efficientnet-lite0",
        vec![(
            "input".into(),
            F32Tensor {
                dims: vec![1],
                data: vec![0.0],
            },
        )],
    ) {
        Ok(_) => "loaded".to_string(),
        Err(e) => e.message,
    };
    serde_json::json!({
        "env": env,
        "host_file_readable": host_file,
        "granted_dir_visible": granted_file,
        "model": model,
    })
    .to_string()
}

async fn outbound(url: &str) -> String {
    match spin_sdk::http::get(url).await {
        Ok(r) => format!("reached: {}", r.status().as_u16()),
        Err(e) => format!("failed: {e:?}"),
    }
}
