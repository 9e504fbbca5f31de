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
//! - `.../outbound?url=...`: tries an outbound HTTP GET and reports what happened;
//! - `.../loop`: spins forever (the host's request timeout must stop it);
//! - `.../memory`: allocates without bound (the host's memory limit must stop it);
//! - `.../stack`: recurses without bound (a stack-overflow trap);
//! - `.../sleep?ms=N`: answers after N milliseconds (for drain and overload tests);
//! - `.../nn-shape`, `.../nn-type`, `.../nn-unknown`: hand wasi-nn a tensor of the wrong
//!   shape, of the wrong type, or ask for a model that does not exist;
//! - `.../count`: how many requests this instance has served, this one included (1 in a
//!   fresh instance; more only where the manifest lets instances be reused);
//! - `.../variable?name=...`: what `spin:variables` and `wasi:config/store` answer for that
//!   component variable, as JSON.

use scoria_guest::nn::{infer, F32Tensor};
use spin_sdk::http::Request;
use std::sync::atomic::{AtomicU64, Ordering};

// spin-sdk offers `wasi:config` only in its experimental world; the vendored WIT is the same.
spin_sdk::wit_bindgen::generate!({
    runtime_path: "spin_sdk::wit_bindgen::rt",
    path: "../../wit/deps/wasi-config@0.2.0-draft-2024-09-27",
    world: "wasi:config/imports",
});

#[spin_sdk::http_service]
async fn handle(req: Request) -> spin_sdk::http::Response<String> {
    let path = req.uri().path().to_string();
    let query = req.uri().query().unwrap_or("").to_string();
    let body = match path.rsplit('/').next().unwrap_or("") {
        "ok" => "ok".to_string(),
        "count" => {
            static SERVED: AtomicU64 = AtomicU64::new(0);
            (SERVED.fetch_add(1, Ordering::Relaxed) + 1).to_string()
        }
        "trap" => panic!("deliberate trap"),
        "sandbox" => sandbox_report(),
        "outbound" => outbound(query.strip_prefix("url=").unwrap_or("")).await,
        "variable" => variable(query.strip_prefix("name=").unwrap_or("")).await,
        "loop" => spin_forever(),
        "memory" => hog_memory(),
        "stack" => format!("{}", recurse(std::hint::black_box(1))),
        "sleep" => {
            let ms = query
                .strip_prefix("ms=")
                .and_then(|v| v.parse().ok())
                .unwrap_or(1000);
            std::thread::sleep(std::time::Duration::from_millis(ms));
            format!("slept {ms} ms")
        }
        "nn-shape" => return nn_garbage("efficientnet-lite0", vec![1, 3, 7, 7], 147),
        "nn-type" => return nn_garbage_u8(),
        "nn-unknown" => return nn_garbage("no-such-model", vec![1], 1),
        other => format!("unknown path {other}"),
    };
    spin_sdk::http::Response::new(body)
}

/// Both interfaces' answers for `name`, and `wasi:config`'s whole list.
async fn variable(name: &str) -> String {
    let spin = match spin_sdk::variables::get(name).await {
        Ok(v) => serde_json::json!({ "value": v }),
        Err(e) => serde_json::json!({ "error": format!("{e:?}") }),
    };
    use wasi::config::store;
    let config = match store::get(name) {
        Ok(v) => serde_json::json!({ "value": v }),
        Err(e) => serde_json::json!({ "error": format!("{e:?}") }),
    };
    let all = match store::get_all() {
        Ok(pairs) => serde_json::json!(pairs),
        Err(e) => serde_json::json!({ "error": format!("{e:?}") }),
    };
    serde_json::json!({ "spin": spin, "config": config, "config_all": all }).to_string()
}

fn spin_forever() -> String {
    let mut x = 0u64;
    loop {
        x = std::hint::black_box(x.wrapping_add(1));
    }
}

fn hog_memory() -> String {
    let mut hoard: Vec<Vec<u8>> = Vec::new();
    loop {
        hoard.push(vec![1u8; 8 << 20]);
        std::hint::black_box(&hoard);
    }
}

#[allow(unconditional_recursion)] // the point: overflow the stack
fn recurse(n: u64) -> u64 {
    let pad = std::hint::black_box([n; 64]);
    recurse(pad[(n % 64) as usize] + 1) + pad[0]
}

fn error_response(e: scoria_guest::error::ApiError) -> spin_sdk::http::Response<String> {
    let mut r = spin_sdk::http::Response::new(e.to_json());
    *r.status_mut() = spin_sdk::http::StatusCode::from_u16(e.status)
        .unwrap_or(spin_sdk::http::StatusCode::INTERNAL_SERVER_ERROR);
    r
}

fn nn_garbage(model: &str, dims: Vec<u32>, len: usize) -> spin_sdk::http::Response<String> {
    match infer(
        model,
        vec![(
            "input".into(),
            F32Tensor {
                dims,
                data: vec![0.5; len],
            },
        )],
    ) {
        Ok(_) => spin_sdk::http::Response::new("accepted garbage".into()),
        Err(e) => error_response(e),
    }
}

fn nn_garbage_u8() -> spin_sdk::http::Response<String> {
    match scoria_guest::nn::infer_raw(
        "efficientnet-lite0",
        "input",
        vec![1, 3, 224, 224],
        vec![0u8; 3 * 224 * 224],
    ) {
        Ok(()) => spin_sdk::http::Response::new("accepted garbage".into()),
        Err(e) => error_response(e),
    }
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
