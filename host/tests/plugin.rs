//! Plugin mode: the `scoria` binary started the way `spin up` starts the `trigger-scoria`
//! plugin, with a locked app shaped the way Spin 3 writes one (files copied into Spin's
//! working directory and mounted at `/`, `metadata.origin` naming spin.toml), serves the same
//! routes with the same answers as `scoria up`.

mod common;

use common::*;
use serde_json::json;
use std::path::Path;
use std::process::Command;

fn file_url(p: &Path) -> String {
    format!("file://{}", p.display())
}

/// Copy `files` of `models/<model>` into Spin's asset copy for a component.
fn copy_into(assets: &Path, model: &str, files: &[&str]) {
    let dest = assets.join("models").join(model);
    std::fs::create_dir_all(&dest).unwrap();
    for f in files {
        let src = root().join("models").join(model).join(f);
        std::fs::copy(&src, dest.join(f))
            .unwrap_or_else(|e| panic!("{}: {e}; run ./dev test", src.display()));
    }
}

/// A working directory with `spin.lock` and the component assets, as `spin up` prepares it.
fn spin_working_dir() -> tempfile::TempDir {
    let work = tempfile::tempdir().unwrap();
    let assets = work.path().join("assets");
    let classify = assets.join("image-classify");
    copy_into(
        &classify,
        "efficientnet-lite0",
        &["model.toml", "imagenet-labels.txt"],
    );
    let faq = assets.join("faq-match");
    copy_into(
        &faq,
        "faq-javascript",
        &["model.toml", "entries.jsonl", "lexical.json"],
    );
    copy_into(
        &faq,
        "all-minilm-l6-v2",
        &["model.toml", "tokenizer-pipeline.json", "vocab.bin"],
    );
    let wasm = |name: &str| file_url(&root().join("functions/target/wasm32-wasip2/release").join(name));
    let locked = json!({
        "spin_lock_version": 0,
        "metadata": {
            "name": "scoria-demo",
            "version": "0.1.0",
            "origin": file_url(&root().join("spin.toml")),
            "triggers": {"scoria": {}}
        },
        "triggers": [
            {"id": "trigger--image-classify", "trigger_type": "scoria",
             "trigger_config": {"component": "image-classify", "route": "/classify"}},
            {"id": "trigger--faq-match", "trigger_type": "scoria",
             "trigger_config": {"component": "faq-match", "route": "/faq"}}
        ],
        "components": [
            {
                "id": "image-classify",
                "metadata": {"allowed_outbound_hosts": [], "build": {"command": "cargo build"}},
                "source": {"content_type": "application/wasm", "source": wasm("image_classify.wasm")},
                "env": {"SCORIA_MODEL": "efficientnet-lite0"},
                "files": [{"source": file_url(&classify), "path": "/"}]
            },
            {
                "id": "faq-match",
                "metadata": {"allowed_outbound_hosts": []},
                "source": {"content_type": "application/wasm", "source": wasm("faq_match.wasm")},
                "env": {"SCORIA_FAQ_INDEX": "faq-javascript", "SCORIA_MIN_SCORE": "0.5"},
                "files": [{"source": file_url(&faq), "path": "/"}]
            }
        ]
    });
    std::fs::write(
        work.path().join("spin.lock"),
        serde_json::to_vec_pretty(&locked).unwrap(),
    )
    .unwrap();
    work
}

fn plugin_command(work: &Path) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_scoria"));
    cmd.current_dir(work)
        .env("SPIN_LOCKED_URL", file_url(&work.join("spin.lock")))
        .env("SPIN_WORKING_DIR", work)
        .env("SPIN_LOCAL_APP_DIR", root());
    cmd
}

#[test]
fn serves_a_locked_app_as_spin_starts_the_plugin() {
    let work = spin_working_dir();
    let port = free_port();
    let mut cmd = plugin_command(work.path());
    cmd.args(["--listen", &format!("127.0.0.1:{port}")]);
    let s = Server::spawn(cmd, port);
    assert!(s.log().contains("trigger-scoria plugin"), "{}", s.log());

    let (status, v) = s.post("/classify", "image/png", photo("chelsea.png"));
    assert_eq!(status, 200, "{v}");
    let top = labels(&v);
    assert!(top.iter().any(|l| l.contains("cat")), "{top:?}");

    let (status, v) = s.post(
        "/faq",
        "application/json",
        br#"{"question": "remove duplicates from an array"}"#.to_vec(),
    );
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["matches"][0]["id"], "array-dedupe", "{v}");
    let (status, _) = s.post("/nope", "text/plain", b"x".to_vec());
    assert_eq!(status, 404);
}

#[test]
fn answers_spins_help_probe_and_names_what_is_wrong_in_a_locked_app() {
    let work = spin_working_dir();
    let out = plugin_command(work.path())
        .arg("--help-args-only")
        .output()
        .unwrap();
    let help = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success() && help.contains("--listen"), "{help}");

    // Spin's own trigger options, which `spin up` passes on: refused, saying why.
    for (args, why) in [
        (&["--runtime-config-file", "rc.toml"][..], "SPIN_VARIABLE_"),
        (&["--state-dir=.spin"][..], "key-value"),
        (&["-q"][..], "stdout"),
        (&["--disable-cache"][..], "--no-compile-cache"),
    ] {
        let out = plugin_command(work.path()).args(args).output().unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{err}");
        assert!(
            err.contains(&format!("`spin up {}`", args[0].split('=').next().unwrap())) && err.contains(why),
            "{err}"
        );
    }

    let lock = work.path().join("spin.lock");
    let text = std::fs::read_to_string(&lock).unwrap();
    // An app `spin up` pulled from an OCI registry (`spin up -f ghcr.io/...`).
    let origin = file_url(&root().join("spin.toml"));
    assert!(text.contains(&origin));
    std::fs::write(&lock, text.replace(&origin, "oci:ghcr.io/example/scoria-demo:v1")).unwrap();
    let out = plugin_command(work.path())
        .args(["--listen", &format!("127.0.0.1:{}", free_port())])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{err}");
    assert!(
        err.contains("metadata.origin") && err.contains("OCI registry") && err.contains("local spin.toml"),
        "{err}"
    );

    std::fs::write(&lock, text.replace("\"route\": \"/faq\"", "\"rout\": \"/faq\"")).unwrap();
    let out = plugin_command(work.path())
        .args(["--listen", &format!("127.0.0.1:{}", free_port())])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{err}");
    assert!(
        err.contains("spin.lock") && err.contains("triggers[1].trigger_config.route"),
        "{err}"
    );
}
