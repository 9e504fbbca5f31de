//! Native baseline for the `/faq` benchmark: the same tokenising and pooling code as the
//! faq-match function (the `text` crate), the same embedding model and index model on the
//! same tract backend, called in-process with no WebAssembly and no HTTP. The tokenizer is
//! loaded once, as a long-lived native server would.
//!
//! Usage: native_faq <models-dir> <index> <question> <iterations> <seconds> <c>...
//! Prints one JSON object: per-stage p50s and total p50/p99 at concurrency 1, then
//! throughput (questions/s) at each concurrency given.

mod support;
use scoria::models::Repository;
use scoria::nn::{LoadedModel, Tensor};
use std::sync::Arc;
use std::time::Instant;
use text::{TextEncoder, TextPreprocess};

struct Pipeline {
    encoder: TextEncoder,
    pre: TextPreprocess,
    embedder: LoadedModel,
    index: LoadedModel,
}

fn main() -> anyhow::Result<()> {
    // SAFETY: nothing has started a thread yet.
    unsafe { scoria::nn::onnxruntime::disable_telemetry_by_default() };
    let args: Vec<String> = std::env::args().collect();
    anyhow::ensure!(
        args.len() >= 6,
        "usage: native_faq <models-dir> <index> <question> <iterations> <seconds> <c>..."
    );
    let loader = support::model_loader(&args[1])?;
    let repo = Repository::new(&args[1]);
    let question = args[3].clone();
    let iterations: usize = args[4].parse()?;
    let seconds: f64 = args[5].parse()?;
    let concurrency: Vec<usize> = args[6..].iter().map(|c| c.parse()).collect::<Result<_, _>>()?;

    let index = loader.load_model(&repo, &args[2])?;
    let model_name = index
        .entry
        .card
        .preprocess
        .as_ref()
        .and_then(|p| p.get("embedding_model"))
        .and_then(|v| v.as_str())
        .ok_or_else(|| anyhow::anyhow!("{} is not an index", args[2]))?
        .to_string();
    let embedder = loader.load_model(&repo, &model_name)?;
    let pre: TextPreprocess = embedder
        .entry
        .card
        .preprocess
        .clone()
        .ok_or_else(|| anyhow::anyhow!("no [preprocess]"))?
        .try_into()?;
    let dir = &embedder.entry.dir;
    let encoder = TextEncoder::new(
        &std::fs::read(dir.join(&pre.tokenizer))?,
        std::fs::read(dir.join(&pre.vocab))?,
        &pre,
    )?;
    let p = Arc::new(Pipeline {
        encoder,
        pre,
        embedder,
        index,
    });

    for _ in 0..5 {
        p.run(&question)?;
    }
    let (mut tok, mut emb, mut mat, mut tot) = (vec![], vec![], vec![], vec![]);
    for _ in 0..iterations {
        let t = p.run(&question)?;
        tok.push(t[0]);
        emb.push(t[1]);
        mat.push(t[2]);
        tot.push(t[0] + t[1] + t[2]);
    }
    let throughput = {
        let (p, q) = (p.clone(), question.clone());
        support::throughput(&concurrency, seconds, move || {
            p.run(&q).expect("pipeline");
        })
    };
    let out = serde_json::json!({
        "tokenize_ms_p50": support::pct(&mut tok, 0.5),
        "embed_ms_p50": support::pct(&mut emb, 0.5),
        "match_ms_p50": support::pct(&mut mat, 0.5),
        "total_ms_p50": support::pct(&mut tot, 0.5),
        "total_ms_p99": support::pct(&mut tot, 0.99),
        "throughput": throughput,
    });
    println!("{out}");
    Ok(())
}

impl Pipeline {
    /// Tokenise, embed and match once; returns the three stage times in ms.
    fn run(&self, question: &str) -> anyhow::Result<[f64; 3]> {
        let t0 = Instant::now();
        let enc = self.encoder.encode(question)?;
        let t1 = Instant::now();
        let e = scoria::index::embed_encoded(&self.embedder, &enc, &self.pre).map_err(anyhow::Error::msg)?;
        let t2 = Instant::now();
        let query = Tensor::from_slice(vec![1, e.len() as u32], &e);
        let out = self.index.compute(vec![("query".into(), query)])?;
        let scores: Vec<f32> = out[0].1.to_vec();
        std::hint::black_box(text::top_k(&scores, 5));
        let t3 = Instant::now();
        let ms = |a: Instant, b: Instant| (b - a).as_secs_f64() * 1e3;
        Ok([ms(t0, t1), ms(t1, t2), ms(t2, t3)])
    }
}
