//! Dynamic batching end to end: concurrent requests to a batched model get the answers they
//! get unbatched, and the batch-size metric shows runs that merged several requests.
//!
//! Runs on ONNX Runtime on CPU (the GPU path batches the same way; CPU only differs in the
//! default, off). Needs what `./dev setup` produces.

mod common;

use common::*;
use serde_json::Value;
use std::path::Path;

/// A copy of the EfficientNet folder whose card asks for batching with a long queue delay,
/// so that the concurrent requests below merge even on a busy 2-core machine, and a
/// manifest in `dir` serving it at `/classify`. Returns the manifest.
fn batched_models(dir: &Path) -> String {
    // Padded as on a GPU: every run is at 1, 2, 4 or 8 items, each warmed on every session.
    classify_with_card(dir, |card| {
        format!("{card}\n[batching]\nenabled = true\nmax_batch = 8\nmax_queue_delay_ms = 100\npad = true\n")
    })
}

const PHOTOS: [(&str, &str); 4] = [
    ("chelsea.png", "image/png"),
    ("coffee.png", "image/png"),
    ("rocket.jpg", "image/jpeg"),
    ("grace_hopper.jpg", "image/jpeg"),
];

/// The `_sum` and `_count` of `scoria_batch_size` for `model`.
fn batch_metric(s: &Server, model: &str) -> (f64, f64) {
    let text = client().get(s.url("/metrics")).send().unwrap().text().unwrap();
    let value = |suffix: &str| {
        text.lines()
            .find(|l| l.starts_with(&format!("scoria_batch_size_{suffix}{{model=\"{model}\"}}")))
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("no scoria_batch_size_{suffix} for {model}:\n{text}"))
    };
    (value("sum"), value("count"))
}

/// `scoria_batch_padding_rows_total` for `model`.
fn padding_rows(s: &Server, model: &str) -> f64 {
    let text = client().get(s.url("/metrics")).send().unwrap().text().unwrap();
    text.lines()
        .find(|l| l.starts_with(&format!("scoria_batch_padding_rows_total{{model=\"{model}\"}}")))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no scoria_batch_padding_rows_total for {model}:\n{text}"))
}

#[test]
fn concurrent_requests_merge_and_get_the_answers_they_get_unbatched() {
    let dir = tempfile::tempdir().unwrap();
    let manifest = batched_models(dir.path());
    let models = dir.path().join("models");
    let unbatched = Server::start_with_models(
        &manifest,
        &models,
        &["--backend", "onnxruntime", "--batching", "off"],
    );
    let batched = Server::start_with_models(&manifest, &models, &["--backend", "onnxruntime"]);
    assert!(
        batched.log().contains("batching=\"max 8 items"),
        "the card's [batching] was not applied:\n{}",
        batched.log()
    );
    assert!(
        unbatched.log().contains("batching=\"off\""),
        "{}",
        unbatched.log()
    );

    let expected: Vec<Vec<(String, f64)>> = PHOTOS
        .iter()
        .map(|(name, ct)| {
            let (status, v) = unbatched.post("/classify", ct, photo(name));
            assert_eq!(status, 200, "{v}");
            predictions(&v)
        })
        .collect();

    // 16 requests at once, 4 of each photo, in rounds so that runs hold different photos.
    let answers: Vec<(usize, u16, Value)> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..16)
            .map(|i| {
                let batched = &batched;
                scope.spawn(move || {
                    let (name, ct) = PHOTOS[i % PHOTOS.len()];
                    let (status, v) = batched.post("/classify", ct, photo(name));
                    (i % PHOTOS.len(), status, v)
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    for (photo_index, status, v) in &answers {
        assert_eq!(*status, 200, "{v}");
        let got = predictions(v);
        let want = &expected[*photo_index];
        let labels = |p: &[(String, f64)]| p.iter().map(|(l, _)| l.clone()).collect::<Vec<_>>();
        assert_eq!(
            labels(&got),
            labels(want),
            "{} got another photo's answer",
            PHOTOS[*photo_index].0
        );
        for ((label, x), (_, y)) in got.iter().zip(want) {
            assert!((x - y).abs() < 1e-4, "{label}: batched {x}, unbatched {y}");
        }
    }

    let (items, runs) = batch_metric(&batched, "efficientnet-lite0");
    assert_eq!(
        items, 16.0,
        "every request is counted once in the runs' sizes (padding is not)"
    );
    assert!(
        runs < items,
        "no run merged requests: {runs} runs for {items} items"
    );
    // A run is padded to a warmed size, or trimmed back to one: never more zero rows than items.
    let padding = padding_rows(&batched, "efficientnet-lite0");
    assert!(padding < items, "{padding} padding rows for {items} items");
    let (items, runs) = batch_metric(&unbatched, "efficientnet-lite0");
    assert_eq!(items, runs, "unbatched runs hold one image each");
    assert_eq!(padding_rows(&unbatched, "efficientnet-lite0"), 0.0);
}

#[test]
fn a_card_that_asks_for_batching_on_a_fixed_batch_dimension_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let manifest = batched_models(dir.path());
    let card = dir.path().join("models/efficientnet-lite0/model.toml");
    let text = std::fs::read_to_string(&card)
        .unwrap()
        .replace("shape = [-1, 3, 224, 224]", "shape = [1, 3, 224, 224]");
    std::fs::write(&card, text).unwrap();
    let err = refused_start(&manifest, &["--backend", "onnxruntime"]);
    assert!(
        err.contains("model.toml") && err.contains("[batching] enabled = true") && err.contains("fix:"),
        "{err}"
    );
}
