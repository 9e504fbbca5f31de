//! What the native benchmark baselines share: the backend, throughput at several
//! concurrencies, and percentiles.

use std::sync::Arc;
use std::time::{Duration, Instant};

/// Requests per second for each concurrency in `levels`: that many threads call `run` for
/// `seconds`.
pub fn throughput<F>(levels: &[usize], seconds: f64, run: F) -> serde_json::Map<String, serde_json::Value>
where
    F: Fn() + Send + Sync + 'static,
{
    let run = Arc::new(run);
    let mut out = serde_json::Map::new();
    for &c in levels {
        let deadline = Instant::now() + Duration::from_secs_f64(seconds);
        let handles: Vec<_> = (0..c)
            .map(|_| {
                let run = run.clone();
                std::thread::spawn(move || {
                    let mut n = 0u64;
                    while Instant::now() < deadline {
                        run();
                        n += 1;
                    }
                    n
                })
            })
            .collect();
        let start = Instant::now();
        let n: u64 = handles.into_iter().map(|h| h.join().expect("worker")).sum();
        out.insert(c.to_string(), (n as f64 / start.elapsed().as_secs_f64()).into());
    }
    out
}

/// The `q` quantile of `v` (sorted in place).
pub fn pct(v: &mut [f64], q: f64) -> f64 {
    v.sort_by(f64::total_cmp);
    v[((v.len() as f64 - 1.0) * q).round() as usize]
}

/// The loader for models on the backend the compared server uses (`SCORIA_BACKEND`, default
/// tract; `SCORIA_DEVICE=gpu` for CUDA), with ONNX Runtime's library looked up beside the
/// model repository `models_dir`.
pub fn model_loader(models_dir: &str) -> anyhow::Result<scoria::loader::ModelLoader> {
    let backend = std::env::var("SCORIA_BACKEND").unwrap_or_else(|_| "tract".into());
    Ok(scoria::loader::ModelLoader::new(
        backend.parse().map_err(anyhow::Error::msg)?,
        match std::env::var("SCORIA_DEVICE").as_deref() {
            Ok("gpu") => scoria::models::Device::Gpu,
            _ => scoria::models::Device::Cpu,
        },
        // In-process calls never batch.
        scoria::loader::Batching::Off,
        std::path::Path::new(models_dir)
            .parent()
            .unwrap_or(std::path::Path::new(".")),
    ))
}
