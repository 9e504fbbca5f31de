//! Hot swap through the admin API, end to end: swaps of components and of models under load
//! lose no request, a bad component or model is refused while the old one keeps serving,
//! rollback works, `--watch` reloads rebuilt components and re-exported models, and compiled
//! components are cached on disk.

mod common;

use common::*;
use serde_json::Value;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

const FAULTS: &str = "tests/fixtures/faults.toml";
const TOKEN: &str = "admin-token-for-tests-0001";

fn wasm(rel: &str) -> Vec<u8> {
    let p = root().join(rel);
    std::fs::read(&p).unwrap_or_else(|e| panic!("{}: {e}; run ./dev setup", p.display()))
}

fn v1() -> Vec<u8> {
    wasm("functions/target/wasm32-wasip2/release/hello_p2.wasm")
}

fn v2() -> Vec<u8> {
    wasm("functions/target/variant/wasm32-wasip2/release/hello_p2.wasm")
}

struct Admin {
    server: Server,
    _token_file: tempfile::NamedTempFile,
    _cache: tempfile::TempDir,
}

fn start_with_admin(extra: &[&str]) -> Admin {
    start_admin(FAULTS, extra)
}

fn start_admin(manifest: &str, extra: &[&str]) -> Admin {
    let token_file = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(token_file.path(), format!("{TOKEN}\n")).unwrap();
    let cache = tempfile::tempdir().unwrap();
    let mut args = vec![
        "--admin-token-file",
        token_file.path().to_str().unwrap(),
        "--cache-dir",
        cache.path().to_str().unwrap(),
    ];
    args.extend_from_slice(extra);
    let server = Server::start(manifest, &args);
    Admin {
        server,
        _token_file: token_file,
        _cache: cache,
    }
}

/// `PUT` `bytes` to an admin path with the token.
fn upload(s: &Server, path: &str, content_type: &str, bytes: Vec<u8>) -> (u16, Value) {
    parse(
        client()
            .put(s.url(path))
            .bearer_auth(TOKEN)
            .header("content-type", content_type)
            .body(bytes)
            .send()
            .unwrap(),
    )
}

fn put(s: &Server, id: &str, bytes: Vec<u8>) -> (u16, Value) {
    upload(s, &format!("/admin/functions/{id}"), "application/wasm", bytes)
}

/// While `swaps` runs, 8 clients call `probe` without pause; it answers `Ok(true)` for the
/// first version, `Ok(false)` for the second, or why the request failed. Returns how many
/// answers each version gave; any failure fails the test.
fn under_load(
    s: &Arc<Server>,
    probe: fn(&Server) -> Result<bool, String>,
    swaps: impl FnOnce(),
) -> (usize, usize) {
    let stop = Arc::new(AtomicBool::new(false));
    let clients: Vec<_> = (0..8)
        .map(|_| {
            let (s, stop) = (s.clone(), stop.clone());
            std::thread::spawn(move || {
                let (mut v1, mut v2, mut failures) = (0, 0, Vec::new());
                while !stop.load(Ordering::Relaxed) {
                    match probe(&s) {
                        Ok(true) => v1 += 1,
                        Ok(false) => v2 += 1,
                        Err(e) => failures.push(e),
                    }
                }
                (v1, v2, failures)
            })
        })
        .collect();
    swaps();
    stop.store(true, Ordering::Relaxed);
    let (mut v1, mut v2) = (0, 0);
    for c in clients {
        let (a, b, failures) = c.join().unwrap();
        assert!(failures.is_empty(), "requests failed during swaps: {failures:?}");
        v1 += a;
        v2 += b;
    }
    assert!(v1 > 0 && v2 > 0, "both versions must answer: v1 {v1}, v2 {v2}");
    (v1, v2)
}

#[test]
fn swapping_under_load_loses_no_request() {
    let a = start_with_admin(&[]);
    let s = Arc::new(a.server);
    let probe = |s: &Server| match client().get(s.url("/p2/x")).send() {
        Ok(r) if r.status() == 200 => match r.text().unwrap_or_default() {
            t if t.starts_with("hello from p2 (v1)") => Ok(true),
            t if t.starts_with("hello from p2 (v2)") => Ok(false),
            t => Err(format!("unexpected body {t}")),
        },
        Ok(r) => Err(format!("status {}", r.status())),
        Err(e) => Err(format!("request failed: {e}")),
    };
    let builds = [v2(), v1()];
    let (v1, v2) = under_load(&s, probe, || {
        for i in 0..10 {
            std::thread::sleep(Duration::from_millis(150));
            let (st, v) = put(&s, "hello-p2", builds[i % 2].clone());
            assert_eq!(st, 200, "swap {i}: {v}");
        }
        std::thread::sleep(Duration::from_millis(150));
    });
    eprintln!("answers during 10 swaps: v1 {v1}, v2 {v2}");
}

#[test]
fn a_bad_component_is_refused_and_rollback_restores_the_previous_version() {
    let a = start_with_admin(&[]);
    let s = &a.server;
    let body = |s: &Server| client().get(s.url("/p2/x")).send().unwrap().text().unwrap();

    // No token, wrong token.
    let r = client()
        .put(s.url("/admin/functions/hello-p2"))
        .body(v2())
        .send()
        .unwrap();
    let (st, v) = parse(r);
    assert_error(st, &v, 401, "unauthorized");
    let r = client()
        .get(s.url("/admin/functions"))
        .bearer_auth("not-the-token-000000")
        .send()
        .unwrap();
    assert_eq!(r.status(), 401);

    // Not WebAssembly at all; a core module rather than a component.
    let (st, v) = put(s, "hello-p2", b"definitely not wasm".to_vec());
    assert_error(st, &v, 422, "invalid_component");
    let (st, v) = put(s, "hello-p2", b"\0asm\x01\0\0\0".to_vec());
    assert_error(st, &v, 422, "invalid_component");
    assert!(
        body(s).starts_with("hello from p2 (v1)"),
        "the old version must keep serving"
    );
    let (st, v) = put(s, "no-such-function", v2());
    assert_error(st, &v, 404, "unknown_component");
    let rb = s.url("/admin/functions/hello-p2/rollback");
    let (st, v) = parse(client().post(&rb).bearer_auth(TOKEN).send().unwrap());
    assert_error(st, &v, 409, "no_previous_version");

    // Swap, list, roll back.
    let (st, v) = put(s, "hello-p2", v2());
    assert_eq!(st, 200, "{v}");
    let new_digest = v["digest"].as_str().unwrap().to_string();
    let old_digest = v["previous_digest"].as_str().unwrap().to_string();
    assert!(body(s).starts_with("hello from p2 (v2)"));
    let (st, list) = parse(
        client()
            .get(s.url("/admin/functions"))
            .bearer_auth(TOKEN)
            .send()
            .unwrap(),
    );
    assert_eq!(st, 200);
    let entry = list["functions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["id"] == "hello-p2")
        .unwrap()
        .clone();
    assert_eq!(entry["digest"], new_digest.as_str());
    assert_eq!(entry["previous_digest"], old_digest.as_str());
    assert!(entry["loaded_at"].as_u64().unwrap() > 1_700_000_000);

    let (st, v) = parse(client().post(&rb).bearer_auth(TOKEN).send().unwrap());
    assert_eq!(st, 200, "{v}");
    assert_eq!(v["digest"], old_digest.as_str());
    assert!(body(s).starts_with("hello from p2 (v1)"));
}

#[test]
fn the_admin_api_is_off_without_a_token_file() {
    let s = Server::start(FAULTS, &["--no-compile-cache"]);
    let (st, v) = parse(
        client()
            .put(s.url("/admin/functions/hello-p2"))
            .body(v2())
            .send()
            .unwrap(),
    );
    assert_error(st, &v, 404, "not_found");
}

#[test]
fn compiled_components_are_cached_and_scoria_compile_fills_the_cache() {
    let cache = tempfile::tempdir().unwrap();
    let dir = cache.path().to_str().unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_scoria"))
        .current_dir(root())
        .args(["compile", "--manifest", FAULTS, "--cache-dir", dir])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(text.contains("hello-p2") && text.contains("compiled"), "{text}");
    let entries = std::fs::read_dir(cache.path()).unwrap().count();
    // fault-test and fault-test-allowed share one build, hence one artefact.
    assert_eq!(entries, 3, "one artefact per distinct component: {text}");

    // A host started on that cache loads every component from it.
    let s = Server::start(FAULTS, &["--cache-dir", dir]);
    let log = s.log();
    assert!(
        log.contains("from_cache=true") && !log.contains("from_cache=false"),
        "{log}"
    );
    let r = client().get(s.url("/p2/x")).send().unwrap();
    assert_eq!(r.status(), 200);
}

#[test]
fn watch_swaps_in_a_rebuilt_component_without_dropping_requests() {
    let dir = tempfile::tempdir().unwrap();
    let source = dir.path().join("hello.wasm");
    std::fs::write(&source, v1()).unwrap();
    let manifest = dir.path().join("spin.toml");
    std::fs::write(
        &manifest,
        "spin_manifest_version = 2\n[application]\nname = \"watch\"\n\
         [[trigger.http]]\nroute = \"/p2/...\"\ncomponent = \"hello-p2\"\n\
         [component.hello-p2]\nsource = \"hello.wasm\"\n",
    )
    .unwrap();
    let s = Server::start(manifest.to_str().unwrap(), &["--watch", "--no-compile-cache"]);
    let body = || {
        let r = client().get(s.url("/p2/x")).send().unwrap();
        assert_eq!(r.status(), 200);
        r.text().unwrap()
    };
    assert!(body().starts_with("hello from p2 (v1)"));

    // A build that writes its output in two steps, with requests arriving in between.
    let new = v2();
    let (first, rest) = new.split_at(new.len() / 2);
    std::fs::write(&source, first).unwrap();
    for _ in 0..3 {
        assert!(
            body().starts_with("hello from p2 (v1)"),
            "a half-written file must not be loaded"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let mut f = std::fs::OpenOptions::new().append(true).open(&source).unwrap();
    std::io::Write::write_all(&mut f, rest).unwrap();
    drop(f);

    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        if body().starts_with("hello from p2 (v2)") {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the rebuilt component was not swapped in:\n{}",
            s.log()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(s.log().contains("reloaded from disk"));
}

/// The demo FAQ index with its first two columns (entries) swapped: "How do I make a copy of
/// an array?" then finds entry 1 (`array-remove-item`) instead of entry 0 (`array-clone`).
/// Same card (names, types, shapes), different weights: a second version of the model.
fn permuted_index() -> (Vec<u8>, Vec<u8>) {
    use prost::Message as _;
    let original = std::fs::read(root().join("models/faq-javascript/index.onnx"))
        .expect("models/faq-javascript/index.onnx; run ./dev test, which indexes it");
    let mut model = tract_onnx::pb::ModelProto::decode(original.as_slice()).unwrap();
    let graph = model.graph.as_mut().unwrap();
    let matrix = graph.initializer.iter_mut().find(|t| t.name == "matrix").unwrap();
    let n = matrix.dims[1] as usize;
    for row in matrix.raw_data.chunks_exact_mut(n * 4) {
        let (a, b) = row.split_at_mut(4);
        a.swap_with_slice(&mut b[..4]);
    }
    (original, model.encode_to_vec())
}

const COPY_ARRAY: &str = r#"{"question": "How do I make a copy of an array?", "k": 1}"#;

/// The id of the best match for [`COPY_ARRAY`], or the failure.
fn best_match(s: &Server) -> Result<String, String> {
    let r = client()
        .post(s.url("/faq"))
        .header("content-type", "application/json")
        .body(COPY_ARRAY)
        .send()
        .map_err(|e| e.to_string())?;
    let status = r.status();
    let text = r.text().unwrap_or_default();
    if status != 200 {
        return Err(format!("{status}: {text}"));
    }
    let v: Value = serde_json::from_str(&text).map_err(|e| e.to_string())?;
    Ok(v["matches"][0]["id"].as_str().unwrap_or("").to_string())
}

fn put_model(s: &Server, name: &str, bytes: Vec<u8>) -> (u16, Value) {
    upload(
        s,
        &format!("/admin/models/{name}"),
        "application/octet-stream",
        bytes,
    )
}

#[test]
fn swapping_a_model_under_load_loses_no_request() {
    let (original, permuted) = permuted_index();
    let a = start_admin("spin.toml", &[]);
    let s = Arc::new(a.server);
    assert_eq!(best_match(&s).unwrap(), "array-clone");
    let probe = |s: &Server| match best_match(s)?.as_str() {
        "array-clone" => Ok(true),
        "array-remove-item" => Ok(false),
        other => Err(format!("unexpected match {other}")),
    };
    under_load(&s, probe, || {
        for i in 0..10 {
            let bytes = if i % 2 == 0 { &permuted } else { &original };
            let (st, v) = put_model(&s, "faq-javascript", bytes.clone());
            assert_eq!(st, 200, "{v}");
            std::thread::sleep(Duration::from_millis(150));
        }
    });
    // Ten swaps: the original is serving again.
    assert_eq!(best_match(&s).unwrap(), "array-clone");
}

#[test]
fn a_bad_model_is_refused_and_model_rollback_restores_the_previous_version() {
    let (original, permuted) = permuted_index();
    let a = start_admin("spin.toml", &[]);
    let s = &a.server;

    let r = client()
        .put(s.url("/admin/models/faq-javascript"))
        .body(permuted.clone())
        .send()
        .unwrap();
    let (st, v) = parse(r);
    assert_error(st, &v, 401, "unauthorized");
    let (st, v) = put_model(s, "faq-javascript", b"not an onnx file".to_vec());
    assert_error(st, &v, 422, "invalid_model");
    // A valid graph that does not fit the card (MiniLM's weights under the index's card).
    let minilm = std::fs::read(root().join("models/all-minilm-l6-v2/model.onnx")).unwrap();
    let (st, v) = put_model(s, "faq-javascript", minilm);
    assert_error(st, &v, 422, "invalid_model");
    assert_eq!(
        best_match(s).unwrap(),
        "array-clone",
        "the old version must keep serving"
    );
    let (st, v) = put_model(s, "no-such-model", permuted.clone());
    assert_error(st, &v, 404, "unknown_model");
    let rb = s.url("/admin/models/faq-javascript/rollback");
    let (st, v) = parse(client().post(&rb).bearer_auth(TOKEN).send().unwrap());
    assert_error(st, &v, 409, "no_previous_version");

    let before = oip_scores(s);
    let (st, v) = put_model(s, "faq-javascript", permuted);
    assert_eq!(st, 200, "{v}");
    // Inference-protocol clients see the swap as the function does: the same scores, in the
    // permuted index's order.
    let after = oip_scores(s);
    assert_ne!(after, before);
    let sorted = |mut v: Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v
    };
    assert_eq!(sorted(after.clone()), sorted(before.clone()));
    let original_digest = hex_sha256(&original);
    assert_eq!(v["previous_digest"], original_digest.as_str(), "{v}");
    assert_eq!(best_match(s).unwrap(), "array-remove-item");
    let (st, list) = parse(
        client()
            .get(s.url("/admin/models"))
            .bearer_auth(TOKEN)
            .send()
            .unwrap(),
    );
    assert_eq!(st, 200, "{list}");
    let entry = list["models"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["name"] == "faq-javascript")
        .unwrap()
        .clone();
    assert_eq!(entry["digest"], v["digest"]);
    assert_eq!(entry["previous_digest"], original_digest.as_str());
    assert_eq!(entry["backend"], "tract");
    assert_eq!(entry["device"], "cpu");

    let (st, v) = parse(client().post(&rb).bearer_auth(TOKEN).send().unwrap());
    assert_eq!(st, 200, "{v}");
    assert_eq!(v["digest"], original_digest.as_str());
    assert_eq!(best_match(s).unwrap(), "array-clone");
    assert_eq!(oip_scores(s), before);
}

/// The FAQ index's scores for one fixed query, through the inference protocol.
fn oip_scores(s: &Server) -> Vec<f64> {
    let query: Vec<f32> = (0..384).map(|i| ((i % 7) as f32 - 3.0) / 10.0).collect();
    let request = serde_json::json!({
        "inputs": [{"name": "query", "shape": [1, 384], "datatype": "FP32", "data": query}],
    });
    let (st, v) = parse(
        client()
            .post(s.url("/v2/models/faq-javascript/infer"))
            .json(&request)
            .send()
            .unwrap(),
    );
    assert_eq!(st, 200, "{v}");
    v["outputs"][0]["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_f64().unwrap())
        .collect()
}

fn hex_sha256(bytes: &[u8]) -> String {
    use sha2::Digest as _;
    hex::encode(sha2::Sha256::digest(bytes))
}

#[test]
fn watch_reloads_a_model_whose_files_change() {
    let (_, permuted) = permuted_index();
    let tmp = tempfile::tempdir().unwrap();
    let models = tmp.path().join("models");
    let index = models.join("faq-javascript");
    std::fs::create_dir_all(&index).unwrap();
    std::os::unix::fs::symlink(
        root().join("models/all-minilm-l6-v2"),
        models.join("all-minilm-l6-v2"),
    )
    .unwrap();
    // The built index as a plain model (no index.toml: nothing rebuilds it here).
    for f in ["index.onnx", "entries.jsonl", "lexical.json", "model.toml"] {
        std::fs::copy(root().join("models/faq-javascript").join(f), index.join(f)).unwrap();
    }
    let manifest = faq_manifest(tmp.path(), &models, "faq-javascript", "", "");
    let s = Server::start_with_models(
        manifest.to_str().unwrap(),
        &models,
        &["--watch", "--no-compile-cache"],
    );
    assert_eq!(best_match(&s).unwrap(), "array-clone");

    // New weights without the card's new digest: refused (a half-copied file looks like this).
    std::fs::write(index.join("index.onnx"), &permuted).unwrap();
    std::thread::sleep(Duration::from_millis(1500));
    assert_eq!(best_match(&s).unwrap(), "array-clone", "{}", s.log());
    assert!(s.log().contains("change not loaded"), "{}", s.log());

    // Then the card: the new version loads beside the old one and takes over.
    let card = std::fs::read_to_string(index.join("model.toml")).unwrap();
    let old_sha = card
        .lines()
        .find_map(|l| l.strip_prefix("sha256 = "))
        .unwrap()
        .trim_matches('"')
        .to_string();
    std::fs::write(
        index.join("model.toml"),
        card.replace(&old_sha, &hex_sha256(&permuted)),
    )
    .unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while best_match(&s).unwrap() != "array-remove-item" {
        assert!(
            std::time::Instant::now() < deadline,
            "the model was not reloaded:\n{}",
            s.log()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(s.log().contains("model reloaded from disk"), "{}", s.log());
}
