//! The ONNX Runtime backend end to end: the same photos give the same top five as tract
//! with scores within 1e-3, text models with a dynamic sequence length run on it, `auto`
//! measures both, and a missing library is reported while tract keeps serving.
//!
//! Needs what `./dev setup` produces, including `.cache/onnxruntime/libonnxruntime.so` (from
//! the PyPI wheel `onnxruntime`).

mod common;

use common::*;
use serde_json::Value;
use std::process::Command;

/// `scoria up` serving spin.toml with `backend`, and the port it will listen on.
fn up(backend: &str) -> (Command, u16) {
    up_manifest("spin.toml", backend)
}

/// `scoria up` serving `manifest` with `backend`, and the port it will listen on.
fn up_manifest(manifest: &str, backend: &str) -> (Command, u16) {
    let port = free_port();
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_scoria"));
    cmd.current_dir(root())
        .args(["up", "--manifest", manifest, "--backend", backend, "--listen"])
        .arg(format!("127.0.0.1:{port}"));
    (cmd, port)
}

fn start(backend: &str, env: &[(&str, &str)]) -> Server {
    let (mut cmd, port) = up(backend);
    cmd.envs(env.iter().copied());
    Server::spawn(cmd, port)
}

/// POST chelsea.png to `/classify` on `s`; it must answer 200 with a cat in its top five.
fn classifies_the_cat(s: &Server) -> Value {
    let (status, v) = s.post("/classify", "image/png", photo("chelsea.png"));
    assert_eq!(status, 200, "{v}");
    assert!(labels(&v).iter().any(|l| l.contains("cat")), "{v}");
    v
}

#[test]
fn the_same_photos_give_the_same_top_five_as_tract() {
    let tract = start("tract", &[]);
    let ort = start("onnxruntime", &[]);
    assert!(
        ort.log()
            .contains("model=efficientnet-lite0 backend=\"onnxruntime\""),
        "{}",
        ort.log()
    );
    for photo_name in ["chelsea.png", "coffee.png", "rocket.jpg", "grace_hopper.jpg"] {
        let ct = if photo_name.ends_with(".png") {
            "image/png"
        } else {
            "image/jpeg"
        };
        let (s1, a) = tract.post("/classify", ct, photo(photo_name));
        let (s2, b) = ort.post("/classify", ct, photo(photo_name));
        assert_eq!((s1, s2), (200, 200), "{a} {b}");
        let (a, b) = (predictions(&a), predictions(&b));
        let labels = |p: &[(String, f64)]| p.iter().map(|(l, _)| l.clone()).collect::<Vec<_>>();
        assert_eq!(labels(&a), labels(&b), "{photo_name}");
        for ((label, x), (_, y)) in a.iter().zip(&b) {
            assert!(
                (x - y).abs() < 1e-3,
                "{photo_name} {label}: tract {x}, onnxruntime {y}"
            );
        }
    }
    // A text model with a dynamic sequence length, and the FAQ index, on ONNX Runtime.
    let (status, v) = ort.post(
        "/faq",
        "application/json",
        br#"{"question": "how do I get rid of repeated values in a list"}"#.to_vec(),
    );
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["matches"][0]["id"], "array-dedupe", "{v}");
}

#[test]
fn resnet152_is_served_the_same_by_both_backends_and_labelled_random() {
    let serve = |backend: &str| {
        Server::start(
            "spin-resnet152.toml",
            &["--backend", backend, "--batching", "off"],
        )
    };
    let (tract, ort) = (serve("tract"), serve("onnxruntime"));
    let (s1, a) = tract.post("/classify", "image/png", photo("chelsea.png"));
    let (s2, b) = ort.post("/classify", "image/png", photo("chelsea.png"));
    assert_eq!((s1, s2), (200, 200), "{a} {b}");
    for v in [&a, &b] {
        assert_eq!(v["model"], "resnet152", "{v}");
        assert_eq!(
            v["weights"], "random",
            "answers must say the weights are random: {v}"
        );
    }
    let (a, b) = (predictions(&a), predictions(&b));
    let indexes = |p: &[(String, f64)]| p.iter().map(|(l, _)| l.clone()).collect::<Vec<_>>();
    assert_eq!(indexes(&a), indexes(&b));
    for ((label, x), (_, y)) in a.iter().zip(&b) {
        assert!((x - y).abs() < 1e-3, "{label}: tract {x}, onnxruntime {y}");
    }
}

#[test]
fn auto_measures_both_backends_records_the_choice_and_lists_it() {
    let record = root().join(".cache/backend-choices.toml");
    let _ = std::fs::remove_file(&record);
    let loaded = |s: &Server| {
        let log = s.log();
        log.lines()
            .find(|l| l.contains("model=efficientnet-lite0") && l.contains("model loaded"))
            .unwrap_or_else(|| panic!("{log}"))
            .to_string()
    };
    let first = start("auto", &[]);
    let line = loaded(&first);
    assert!(
        line.contains("auto: tract") && line.contains("onnxruntime") && line.contains("(measured)"),
        "{line}"
    );
    let (status, v) = first.post("/classify", "image/png", photo("chelsea.png"));
    assert_eq!(status, 200, "{v}");
    drop(first);
    let text = std::fs::read_to_string(&record).unwrap();
    assert!(text.contains("[efficientnet-lite0]"), "{text}");

    // The next start takes the recorded choice instead of loading and timing both.
    let second = start("auto", &[]);
    assert!(loaded(&second).contains("(recorded)"), "{}", loaded(&second));
    let list = Command::new(env!("CARGO_BIN_EXE_scoria"))
        .current_dir(root())
        .args(["models", "list"])
        .output()
        .unwrap();
    let list = String::from_utf8_lossy(&list.stdout);
    let row = list
        .lines()
        .find(|l| l.starts_with("efficientnet-lite0 "))
        .unwrap_or_else(|| panic!("{list}"));
    assert!(row.contains("(auto, measured)"), "{list}");
}

#[test]
fn a_missing_library_is_reported_and_tract_keeps_serving() {
    let s = start(
        "onnxruntime",
        &[("ORT_DYLIB_PATH", "/nonexistent/libonnxruntime.so")],
    );
    let log = s.log();
    assert!(
        log.contains("the ONNX Runtime library is missing") && log.contains("./dev setup"),
        "{log}"
    );
    assert!(
        log.contains("model=efficientnet-lite0 backend=\"tract\""),
        "{log}"
    );
    classifies_the_cat(&s);
}

#[test]
fn device_gpu_without_cuda_fails_clearly() {
    // This machine's ONNX Runtime is the CPU build: asking for CUDA must stop the host with
    // the reason, not serve a GPU pod's models on its CPU.
    let err = refused_start("spin.toml", &["--device", "gpu"]);
    assert!(err.contains("CUDA"), "{err}");
}

/// `scoria up`, with its defaults, serving a copy of EfficientNet-Lite0 whose card is
/// `edit`ed; the folder lives as long as the returned guard.
fn serve_card(edit: impl FnOnce(String) -> String) -> (tempfile::TempDir, Server) {
    let dir = tempfile::tempdir().unwrap();
    let manifest = classify_with_card(dir.path(), edit);
    let s = Server::start_with_models(&manifest, &dir.path().join("models"), &[]);
    (dir, s)
}

/// The `model loaded` line of `model` in `s`'s log.
fn loaded_line(s: &Server, model: &str) -> String {
    let log = s.log();
    log.lines()
        .find(|l| l.contains(&format!("model={model} ")) && l.contains("model loaded"))
        .unwrap_or_else(|| panic!("{log}"))
        .to_string()
}

#[test]
fn a_card_asking_for_the_gpu_runs_on_the_cpu_where_cuda_is_unavailable() {
    // The host runs with its defaults (--backend tract, --device cpu), and this machine's
    // ONNX Runtime has no CUDA: the model still serves, on ONNX Runtime's CPU provider, and
    // the log says why.
    let (dir, s) = serve_card(|card| format!("device = \"gpu\"\n{card}"));
    let models = dir.path().join("models");
    let line = loaded_line(&s, "efficientnet-lite0");
    assert!(
        line.contains("backend=\"onnxruntime\"")
            && line.contains("device=cpu")
            && line.contains("CUDA unavailable"),
        "{line}"
    );
    let log = s.log();
    assert!(
        log.contains("`device = \"gpu\"`, but CUDA is unavailable")
            && log.contains("the CUDA execution provider is not available"),
        "{log}"
    );
    classifies_the_cat(&s);

    let list = Command::new(env!("CARGO_BIN_EXE_scoria"))
        .current_dir(root())
        .args(["models", "list", "--models-dir"])
        .arg(&models)
        .output()
        .unwrap();
    let list = String::from_utf8_lossy(&list.stdout);
    assert!(list.contains("gpu (model.toml)"), "{list}");
}

#[test]
fn a_card_pinned_to_onnxruntime_gets_it_without_any_flag() {
    // `--backend tract` is the default; the card's pin wins, so ONNX Runtime is opened for it.
    // One session on ONNX Runtime's own thread count (0), as Triton runs it, serves too.
    let (_dir, s) = serve_card(|card| {
        format!("backend = \"onnxruntime\"\n{card}\n[onnxruntime]\nsessions = 1\nintra_threads = 0\n")
    });
    let line = loaded_line(&s, "efficientnet-lite0");
    assert!(
        line.contains("backend=\"onnxruntime\"") && line.contains("why=chosen"),
        "{line}"
    );
    classifies_the_cat(&s);
}

#[test]
fn a_card_asking_for_the_gpu_on_tract_is_refused_with_the_fix() {
    let dir = tempfile::tempdir().unwrap();
    let manifest = classify_with_card(dir.path(), |card| {
        format!("device = \"gpu\"\nbackend = \"tract\"\n{card}")
    });
    let err = refused_start(&manifest, &[]);
    assert!(
        err.contains("efficientnet-lite0/model.toml")
            && err.contains("`device = \"gpu\"`")
            && err.contains("fix:"),
        "{err}"
    );
}

#[test]
fn solo_threads_serve_a_lone_request_and_concurrent_ones_alike() {
    // A lone compute runs on the extra all-cores session, concurrent ones on the others; every
    // answer must be the same.
    let (_dir, s) = serve_card(|card| {
        format!("backend = \"onnxruntime\"\n{card}\n[onnxruntime]\nsolo_intra_threads = 0\n")
    });
    let want = predictions(&classifies_the_cat(&s));
    let answers: Vec<Value> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..4)
            .map(|_| scope.spawn(|| s.post("/classify", "image/png", photo("chelsea.png"))))
            .collect();
        handles
            .into_iter()
            .map(|h| {
                let (status, v) = h.join().unwrap();
                assert_eq!(status, 200, "{v}");
                v
            })
            .collect()
    });
    for v in answers {
        let got = predictions(&v);
        assert_eq!(got.len(), want.len(), "{v}");
        for ((gl, gs), (wl, ws)) in got.iter().zip(&want) {
            assert_eq!(gl, wl, "{v}");
            assert!((gs - ws).abs() < 1e-4, "{gl}: {gs} vs {ws}");
        }
    }
}

/// Official ONNX Runtime builds from 1.29 on keep a device id under `$HOME/.cache/Microsoft`
/// and a session file in `$TMPDIR`, and upload usage events to Microsoft, unless
/// `ORT_DISABLE_TELEMETRY=1` is set before the library starts. The host sets it unless the
/// operator chose; opting in with `0` shows that this test sees the files when they are made.
#[test]
fn onnx_runtime_telemetry_is_off_unless_asked_for() {
    const VAR: &str = "ORT_DISABLE_TELEMETRY";
    // ONNX Runtime sends nothing where one of these says it runs under CI (the names are in
    // libonnxruntime.so), which would make both halves of this test pass or fail for nothing.
    const CI_VARS: [&str; 12] = [
        "CI",
        "TF_BUILD",
        "GITHUB_ACTIONS",
        "GITLAB_CI",
        "CIRCLECI",
        "TRAVIS",
        "JENKINS_URL",
        "CODEBUILD_BUILD_ID",
        "BUILDKITE",
        "TEAMCITY_VERSION",
        "APPVEYOR",
        "BITBUCKET_BUILD_NUMBER",
    ];
    let files_left = |setting: Option<&str>| {
        let home = tempfile::tempdir().unwrap();
        let tmp = home.path().join("tmp");
        std::fs::create_dir(&tmp).unwrap();
        let (mut cmd, port) = up("onnxruntime");
        cmd.env("HOME", home.path()).env("TMPDIR", &tmp).env_remove(VAR);
        for var in CI_VARS {
            cmd.env_remove(var);
        }
        if let Some(v) = setting {
            cmd.env(VAR, v);
        }
        let s = Server::spawn(cmd, port);
        classifies_the_cat(&s);
        let said = if setting == Some("0") {
            "telemetry=\"on"
        } else {
            "telemetry=\"off"
        };
        assert!(s.log().contains(said), "{}", s.log());
        drop(s);
        let mut files = vec![];
        let mut dirs = vec![home.path().to_path_buf()];
        while let Some(dir) = dirs.pop() {
            for entry in std::fs::read_dir(dir).unwrap().map(Result::unwrap) {
                let path = entry.path();
                if path.is_dir() {
                    dirs.push(path)
                } else {
                    files.push(path)
                }
            }
        }
        files
    };
    let by_default = files_left(None);
    assert!(by_default.is_empty(), "ONNX Runtime wrote {by_default:?}");
    let opted_in = files_left(Some("0"));
    assert!(
        opted_in.iter().any(|p| p.ends_with("deviceid")),
        "with ORT_DISABLE_TELEMETRY=0 ONNX Runtime should keep a device id; it wrote {opted_in:?}"
    );
}

/// A compute still queued when its request's deadline ends it (504) is dropped unrun, so a
/// burst of 504s leaves no backlog for the requests after it. Before, every abandoned
/// ResNet-152 run still ran, and the next request waited behind them past its own deadline.
#[test]
fn computes_of_requests_past_their_deadline_are_dropped_unrun() {
    let (mut cmd, port) = up_manifest("spin-resnet152.toml", "onnxruntime");
    cmd.env("RUST_LOG", "info,scoria::nn=debug")
        .args(["--batching", "off", "--request-timeout", "1"]);
    let s = Server::spawn(cmd, port);
    // ResNet-152's input, 1x3x224x224 float32: zeros cost what a photo's tensor costs.
    let tensor = vec![0u8; 3 * 224 * 224 * 4];
    let post = || s.post("/classify", "application/x-tensor", tensor.clone());
    assert_eq!(post().0, 200);
    // About 0.2 s a run on two threads: 40 at once is 4 s of work against a 1 s deadline.
    let statuses: Vec<u16> = std::thread::scope(|scope| {
        let burst: Vec<_> = (0..40).map(|_| scope.spawn(|| post().0)).collect();
        burst.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let cut_off = statuses.iter().filter(|&&c| c == 504).count();
    assert!(
        cut_off > 0,
        "the burst did not outlast the deadline: {statuses:?}"
    );
    assert!(statuses.iter().all(|&c| c == 200 || c == 504), "{statuses:?}");
    let (status, v) = post();
    assert_eq!(
        status, 200,
        "the request after the burst waited behind abandoned runs: {v}"
    );
    let dropped = s.log().matches("compute dropped unrun").count();
    assert!(
        dropped > 0 && dropped <= cut_off,
        "{dropped} computes dropped unrun for {cut_off} requests cut off"
    );
}
