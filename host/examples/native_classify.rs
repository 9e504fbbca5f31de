//! Native baseline for the `/classify` benchmark: the same decode and preprocessing code as
//! the image-classify function (the `vision` crate), and the same tract model, called
//! in-process with no WebAssembly and no HTTP.
//!
//! Usage: native_classify <models-dir> <photo> <iterations> <seconds-per-concurrency> <c>...
//! The model is `SCORIA_MODEL` (default efficientnet-lite0), the backend `SCORIA_BACKEND`.
//! Prints one JSON object: per-stage p50s and total p50/p99 at concurrency 1, then
//! throughput (images/s) at each concurrency given.
//!
//! With `SCORIA_TENSOR_FILE=<path>` it also writes the photo's preprocessed tensor there
//! (float32 little-endian, the `application/x-tensor` body a client would send) and times
//! inference and top-5 alone on that tensor (`tensor_ms_p50`): the baseline for a request that
//! brings its own tensor, as a client of Triton or KServe would.

mod support;
use scoria::models::Repository;
use scoria::nn::{LoadedModel, Tensor};
use std::sync::Arc;
use std::time::Instant;
use vision::Preprocess;

fn main() -> anyhow::Result<()> {
    // SAFETY: nothing has started a thread yet.
    unsafe { scoria::nn::onnxruntime::disable_telemetry_by_default() };
    let args: Vec<String> = std::env::args().collect();
    anyhow::ensure!(
        args.len() >= 5,
        "usage: native_classify <models-dir> <photo> <iterations> <seconds> <c>..."
    );
    let loader = support::model_loader(&args[1])?;
    let model = std::env::var("SCORIA_MODEL").unwrap_or_else(|_| "efficientnet-lite0".into());
    let entry = Repository::new(&args[1]).get(&model)?;
    let photo = std::fs::read(&args[2])?;
    let iterations: usize = args[3].parse()?;
    let seconds: f64 = args[4].parse()?;
    let concurrency: Vec<usize> = args[5..].iter().map(|c| c.parse()).collect::<Result<_, _>>()?;

    let pre: Preprocess = entry
        .card
        .preprocess
        .clone()
        .ok_or_else(|| anyhow::anyhow!("no [preprocess]"))?
        .try_into()?;
    let model = Arc::new(loader.load_model_bytes(entry.clone(), &std::fs::read(entry.weights_path())?)?);
    let pre = Arc::new(pre);

    // Warm up, then time each stage of a single-image request.
    for _ in 0..5 {
        pipeline(&model, &pre, &photo)?;
    }
    let (mut dec, mut prep, mut inf, mut tot) = (vec![], vec![], vec![], vec![]);
    for _ in 0..iterations {
        let t = pipeline(&model, &pre, &photo)?;
        dec.push(t[0]);
        prep.push(t[1]);
        inf.push(t[2]);
        tot.push(t[0] + t[1] + t[2]);
    }
    let throughput = {
        let (model, pre, photo) = (model.clone(), pre.clone(), photo.clone());
        support::throughput(&concurrency, seconds, move || {
            pipeline(&model, &pre, &photo).expect("pipeline");
        })
    };
    let tensor_ms_p50 = match std::env::var_os("SCORIA_TENSOR_FILE") {
        Some(path) => Some(tensor_only(&model, &pre, &photo, iterations, path.as_ref())?),
        None => None,
    };
    let out = serde_json::json!({
        "tensor_ms_p50": tensor_ms_p50,
        "decode_ms_p50": support::pct(&mut dec, 0.5),
        "preprocess_ms_p50": support::pct(&mut prep, 0.5),
        "inference_ms_p50": support::pct(&mut inf, 0.5),
        "total_ms_p50": support::pct(&mut tot, 0.5),
        "total_ms_p99": support::pct(&mut tot, 0.99),
        "throughput": throughput,
    });
    println!("{out}");
    Ok(())
}

/// Write the photo's preprocessed tensor to `path`, then time inference and top-5 alone on
/// it; returns the p50 in ms.
fn tensor_only(
    model: &LoadedModel,
    pre: &Preprocess,
    photo: &[u8],
    iterations: usize,
    path: &std::path::Path,
) -> anyhow::Result<f64> {
    let img = vision::decode(photo, 40_000_000)?;
    let mut data = Vec::new();
    vision::to_tensor(&img, pre, &pre.affine().map_err(anyhow::Error::msg)?, &mut data);
    let bytes: Vec<u8> = data.iter().flat_map(|v| v.to_le_bytes()).collect();
    std::fs::write(path, bytes)?;
    let once = || -> anyhow::Result<f64> {
        let input = Tensor::from_slice(vec![1, 3, pre.crop, pre.crop], &data);
        let t = Instant::now();
        infer_top5(model, input)?;
        Ok(t.elapsed().as_secs_f64() * 1e3)
    };
    for _ in 0..5 {
        once()?;
    }
    let mut times = (0..iterations)
        .map(|_| once())
        .collect::<anyhow::Result<Vec<_>>>()?;
    Ok(support::pct(&mut times, 0.5))
}

/// Decode, preprocess and infer once; returns the three stage times in ms.
fn pipeline(model: &LoadedModel, pre: &Preprocess, photo: &[u8]) -> anyhow::Result<[f64; 3]> {
    let t0 = Instant::now();
    let img = vision::decode(photo, 40_000_000)?;
    let t1 = Instant::now();
    let mut data = Vec::new();
    vision::to_tensor(&img, pre, &pre.affine().map_err(anyhow::Error::msg)?, &mut data);
    // memcpy-speed conversions, so that an unoptimised build does not slow the baseline.
    let input = Tensor::from_slice(vec![1, 3, pre.crop, pre.crop], &data);
    let t2 = Instant::now();
    infer_top5(model, input)?;
    let t3 = Instant::now();
    let ms = |a: Instant, b: Instant| (b - a).as_secs_f64() * 1e3;
    Ok([ms(t0, t1), ms(t1, t2), ms(t2, t3)])
}

/// Inference and the function's post-processing (softmax, top-5) on one preprocessed image.
fn infer_top5(model: &LoadedModel, input: Tensor) -> anyhow::Result<()> {
    let name = model.entry.card.inputs[0].name.clone();
    let out = model.compute(vec![(name, input)])?;
    let logits: Vec<f32> = out[0].1.to_vec();
    std::hint::black_box(vision::top_k(&vision::softmax(&logits), 5));
    Ok(())
}
