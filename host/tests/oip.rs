//! The Open Inference Protocol v2 over REST and gRPC, checked with the clients inference users
//! already have, from PyPI: Triton's `tritonclient.http` and `tritonclient.grpc`
//! (`tests/oip/tritonclient_*.py`), KServe's Python SDK (`kserve_clients.py`), and `curl`. The
//! models' answers must equal what the `/classify` and `/faq` routes answer for the same photos
//! and question.

mod common;

use common::*;
use std::process::Command;

/// The float32 NCHW tensor the card's preprocessing makes of `photo` (the `vision` code the
/// function runs), as a Triton client would send it.
fn preprocessed(name: &str) -> Vec<u8> {
    let entry = scoria::models::Repository::new(root().join("models"))
        .get("efficientnet-lite0")
        .unwrap();
    let pre: vision::Preprocess = entry.card.preprocess.clone().unwrap().try_into().unwrap();
    let img = vision::decode(&photo(name), 40_000_000).unwrap();
    let mut data = Vec::new();
    vision::to_tensor(&img, &pre, &pre.affine().unwrap(), &mut data);
    data.iter().flat_map(|v| v.to_le_bytes()).collect()
}

/// A question tokenised as the FAQ function does (the `text` code it runs).
fn tokenised(question: &str) -> text::Encoded {
    let entry = scoria::models::Repository::new(root().join("models"))
        .get("all-minilm-l6-v2")
        .unwrap();
    let pre: text::TextPreprocess = entry.card.preprocess.clone().unwrap().try_into().unwrap();
    let read = |f: &str| std::fs::read(entry.dir.join(f)).unwrap();
    let encoder = text::TextEncoder::new(&read(&pre.tokenizer), read(&pre.vocab), &pre).unwrap();
    encoder.encode(question).unwrap()
}

const QUESTION: &str = "how do I take the last element off an array";

/// What the Python checks compare with: two photos' preprocessed tensors and `/classify`'s
/// answers for them, a tokenised question and `/faq`'s answer, written into a folder.
fn expectations(s: &Server) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let enc = tokenised(QUESTION);
    let (status, faq) = s.post("/faq?k=1", "text/plain", QUESTION.as_bytes().to_vec());
    assert_eq!(status, 200, "{faq}");
    let question = serde_json::json!({
        "input_ids": enc.input_ids,
        "attention_mask": enc.attention_mask,
        "token_type_ids": enc.token_type_ids,
        "faq": faq,
    });
    std::fs::write(dir.path().join("question.json"), question.to_string()).unwrap();
    for p in ["chelsea", "coffee"] {
        let tensor = preprocessed(&format!("{p}.png"));
        let (status, answer) = s.post("/classify", "application/x-tensor", tensor.clone());
        assert_eq!(status, 200, "{answer}");
        std::fs::write(dir.path().join(format!("{p}.f32")), tensor).unwrap();
        std::fs::write(dir.path().join(format!("{p}.json")), answer.to_string()).unwrap();
    }
    dir
}

/// Run one of `tests/oip/`'s client scripts against `url`; fails with its output. The KServe
/// SDK has a virtual environment of its own.
fn run_client(script: &str, url: &str, dir: &std::path::Path, extra: &[&str], s: &Server) {
    let venv = if script.starts_with("kserve") {
        ".cache/venv-kserve"
    } else {
        ".cache/venv"
    };
    let out = Command::new(root().join(venv).join("bin/python"))
        .arg(root().join("tests/oip").join(script))
        .args(["--url", url, "--dir"])
        .arg(dir)
        .arg("--models")
        .arg(root().join("models"))
        .arg("--photos")
        .arg(root().join("tests/data"))
        .args(extra)
        .output()
        .expect("the Python environments (./dev setup) run tritonclient and kserve");
    assert!(
        out.status.success(),
        "{script} failed:\n{}{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
        s.log()
    );
}

#[test]
fn tritonclient_http_lists_reads_and_infers_with_the_routes_answers() {
    let s = Server::start("spin.toml", &[]);
    let dir = expectations(&s);
    run_client(
        "tritonclient_http.py",
        s.base.trim_start_matches("http://"),
        dir.path(),
        &[],
        &s,
    );
    s.assert_alive();
}

#[test]
fn tritonclient_grpc_reads_and_infers_with_the_routes_answers() {
    let grpc = format!("127.0.0.1:{}", free_port());
    let s = Server::start("spin.toml", &["--grpc-listen", &grpc]);
    let dir = expectations(&s);
    run_client("tritonclient_grpc.py", &grpc, dir.path(), &[], &s);
    s.assert_alive();

    // API keys apply over gRPC as over REST.
    let keys = dir.path().join("keys.txt");
    std::fs::write(&keys, "sk-model-0123456789abcdef efficientnet-lite0\n").unwrap();
    let grpc = format!("127.0.0.1:{}", free_port());
    let s = Server::start(
        "spin.toml",
        &["--grpc-listen", &grpc, "--api-keys-file", keys.to_str().unwrap()],
    );
    run_client(
        "tritonclient_grpc.py",
        &grpc,
        dir.path(),
        &["--key", "sk-model-0123456789abcdef"],
        &s,
    );
}

#[test]
fn kserves_sdk_infers_over_rest_and_grpc_with_the_routes_answers() {
    let grpc = format!("127.0.0.1:{}", free_port());
    let s = Server::start("spin.toml", &["--grpc-listen", &grpc]);
    let dir = expectations(&s);
    let url = s.base.trim_start_matches("http://").to_string();
    run_client("kserve_clients.py", &url, dir.path(), &["--grpc-url", &grpc], &s);
    s.assert_alive();
}

#[test]
fn errors_are_the_protocols_and_keys_apply() {
    let dir = tempfile::tempdir().unwrap();
    let keys = dir.path().join("keys.txt");
    std::fs::write(&keys, "sk-all-0123456789abcdef\nsk-faq-0123456789abcdef faq-match\nsk-model-0123456789abcdef efficientnet-lite0\n").unwrap();
    let s = Server::start("spin.toml", &["--api-keys-file", keys.to_str().unwrap()]);
    let get = |path: &str, key: Option<&str>| {
        let mut r = client().get(s.url(path));
        if let Some(k) = key {
            r = r.bearer_auth(k);
        }
        parse(r.send().unwrap())
    };
    // Liveness and readiness are open, as /healthz and /readyz are.
    assert_eq!(get("/v2/health/live", None).0, 200);
    assert_eq!(
        get("/v2/health/ready", None),
        (200, serde_json::json!({"ready": true}))
    );
    // A model's endpoints take a key that may call it: any-function keys, or one naming it.
    let (status, v) = get("/v2/models/efficientnet-lite0", None);
    assert_eq!(status, 401, "{v}");
    assert!(v["error"].as_str().unwrap().contains("API key"), "{v}");
    assert_eq!(
        get("/v2/models/efficientnet-lite0", Some("sk-faq-0123456789abcdef")).0,
        403
    );
    assert_eq!(
        get("/v2/models/efficientnet-lite0", Some("sk-model-0123456789abcdef")).0,
        200
    );
    assert_eq!(
        get(
            "/v2/models/efficientnet-lite0/ready",
            Some("sk-all-0123456789abcdef")
        )
        .0,
        200
    );
    assert_eq!(get("/v2", Some("sk-faq-0123456789abcdef")).0, 200);
    // Unknown paths, models and methods, each as `{"error": "..."}`.
    for (path, status) in [
        ("/v2/models/nope", 404),
        ("/v2/nothing", 404),
        ("/v2/models/efficientnet-lite0/infer", 405),
    ] {
        let (got, v) = get(path, Some("sk-all-0123456789abcdef"));
        assert_eq!(got, status, "{path}: {v}");
        assert!(v["error"].is_string(), "{path}: {v}");
    }
    // A request that is not JSON, through curl as a user would send it.
    let out = Command::new("curl")
        .args([
            "-s",
            "-w",
            "\n%{http_code}",
            "-H",
            "Authorization: Bearer sk-all-0123456789abcdef",
            "-d",
            "{not json",
        ])
        .arg(s.url("/v2/models/efficientnet-lite0/infer"))
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    let (body, code) = text.rsplit_once('\n').unwrap();
    assert_eq!(code, "400", "{text}");
    let v: serde_json::Value = serde_json::from_str(body).unwrap();
    assert!(
        v["error"]
            .as_str()
            .unwrap()
            .contains("not a valid inference request"),
        "{v}"
    );
    s.assert_alive();
}

#[test]
fn a_json_request_through_curl_answers_json() {
    let s = Server::start("spin.toml", &[]);
    // The FAQ index model: one 384-wide embedding in, a score per entry out.
    let embedding: Vec<f32> = (0..384).map(|i| if i == 0 { 1.0 } else { 0.0 }).collect();
    let request = serde_json::json!({
        "id": "q1",
        "inputs": [{"name": "query", "shape": [1, 384], "datatype": "FP32", "data": embedding}],
    });
    let r = client()
        .post(s.url("/v2/models/faq-javascript/infer"))
        .json(&request)
        .send()
        .unwrap();
    let (status, v) = parse(r);
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["id"], "q1");
    assert_eq!(v["model_name"], "faq-javascript");
    let out = &v["outputs"][0];
    assert_eq!(out["datatype"], "FP32", "{v}");
    let n = out["shape"][1].as_u64().unwrap() as usize;
    assert_eq!(out["data"].as_array().unwrap().len(), n, "{v}");
}
