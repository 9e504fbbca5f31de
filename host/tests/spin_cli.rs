//! The real Spin CLI (`../shared/tools/spin`, built from Spin's source) with this build
//! installed as its `trigger-scoria` plugin, each test in its own `SPIN_DATA_DIR`: `spin up
//! --help` lists the plugin's flags, `spin up` serves the demo app with `scoria up`'s answers
//! and Scoria's flags, stops cleanly on SIGINT and SIGTERM, `spin build` builds every
//! function, and a plain Spin app runs unchanged under both. Whatever Spin prints is checked
//! for warnings about the plugin.

mod common;

use common::*;
use scoria::manifest::Manifest;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// The Spin CLI. It is not in any package registry, so the test fails, rather than skips,
/// when it is missing.
fn spin_binary() -> PathBuf {
    let path = root().join("../shared/tools/spin");
    assert!(
        path.exists(),
        "the Spin CLI is missing: it must be at {} (a build of Spin's source; see ../shared/tools/README.md)",
        path.display()
    );
    path
}

/// A Spin data folder with this build installed as the `trigger-scoria` plugin.
struct Spin {
    data: tempfile::TempDir,
}

impl Spin {
    fn with_plugin() -> Spin {
        let data = tempfile::tempdir().unwrap();
        let pkg = data.path().join("pkg");
        std::fs::create_dir_all(&pkg).unwrap();
        std::fs::copy(env!("CARGO_BIN_EXE_scoria"), pkg.join("trigger-scoria")).unwrap();
        let tarball = data.path().join("trigger-scoria.tar.gz");
        let tar = Command::new("tar")
            .args([
                "-C",
                pkg.to_str().unwrap(),
                "-czf",
                tarball.to_str().unwrap(),
                "trigger-scoria",
            ])
            .status()
            .unwrap();
        assert!(tar.success());
        let sha = {
            use sha2::Digest as _;
            hex::encode(sha2::Sha256::digest(std::fs::read(&tarball).unwrap()))
        };
        let manifest = serde_json::json!({
            "name": "trigger-scoria",
            "description": "Scoria, as the trigger for [[trigger.scoria]]",
            "homepage": "https://github.com/scoria/scoria",
            "version": "0.1.0",
            "spinCompatibility": ">=3.0",
            "license": "Apache-2.0",
            "packages": [{"os": "linux", "arch": "amd64", "url": format!("file://{}", tarball.display()), "sha256": sha}]
        });
        let json = data.path().join("trigger-scoria.json");
        std::fs::write(&json, manifest.to_string()).unwrap();
        let spin = Spin { data };
        let out = spin
            .command(&root())
            .args(["plugins", "install", "--file", json.to_str().unwrap(), "--yes"])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "plugin install failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        spin
    }

    fn command(&self, dir: &Path) -> Command {
        let mut c = Command::new(spin_binary());
        c.current_dir(dir).env("SPIN_DATA_DIR", self.data.path());
        c
    }
}

/// A running `spin up`, its output kept.
struct SpinUp {
    child: Child,
    base: String,
    output: Arc<Mutex<Vec<String>>>,
}

impl SpinUp {
    fn start(spin: &Spin, dir: &Path, extra: &[&str]) -> SpinUp {
        Self::start_with_env(spin, dir, extra, &[])
    }

    /// `spin up` in `dir` with `env` added to its environment.
    fn start_with_env(spin: &Spin, dir: &Path, extra: &[&str], env: &[(&str, &str)]) -> SpinUp {
        let port = free_port();
        let mut child = spin
            .command(dir)
            .args(["up", "--listen", &format!("127.0.0.1:{port}")])
            .args(extra)
            .envs(env.iter().copied())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let output = Arc::new(Mutex::new(Vec::new()));
        for stream in [
            Box::new(child.stdout.take().unwrap()) as Box<dyn std::io::Read + Send>,
            Box::new(child.stderr.take().unwrap()),
        ] {
            let sink = output.clone();
            std::thread::spawn(move || {
                for line in BufReader::new(stream).lines().map_while(Result::ok) {
                    sink.lock().unwrap().push(line);
                }
            });
        }
        let up = SpinUp {
            child,
            base: format!("http://127.0.0.1:{port}"),
            output,
        };
        up.wait_answering();
        up
    }

    fn wait_answering(&self) {
        let deadline = Instant::now() + Duration::from_secs(180);
        while Instant::now() < deadline {
            if let Ok(r) = client().get(format!("{}/readyz", self.base)).send()
                && r.status() == 200
            {
                return;
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        panic!("spin up did not answer:\n{}", self.output());
    }

    fn output(&self) -> String {
        self.output.lock().unwrap().join("\n")
    }

    /// Send `signal` to `spin` and wait for it to exit; its output.
    fn stop(mut self, signal: &str) -> String {
        let pid = self.child.id().to_string();
        assert!(
            Command::new("kill")
                .args([signal, &pid])
                .status()
                .unwrap()
                .success()
        );
        let deadline = Instant::now() + Duration::from_secs(40);
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                std::thread::sleep(Duration::from_millis(200));
                let out = self.output();
                assert!(
                    status.success(),
                    "spin up exited with {status} after {signal}:\n{out}"
                );
                return out;
            }
            assert!(
                Instant::now() < deadline,
                "spin up still running after {signal}:\n{}",
                self.output()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for SpinUp {
    /// SIGINT first, so that Spin stops the plugin it started (SIGKILL would orphan it).
    fn drop(&mut self) {
        interrupt(&mut self.child);
    }
}

/// Stop a `spin` process as Ctrl-C does, or kill it if it lingers.
fn interrupt(child: &mut Child) {
    if let Ok(Some(_)) = child.try_wait() {
        return;
    }
    let _ = Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status();
    let deadline = Instant::now() + Duration::from_secs(30);
    while Instant::now() < deadline {
        if let Ok(Some(_)) = child.try_wait() {
            return;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let _ = child.kill();
    let _ = child.wait();
}

/// Spin's complaints about a plugin: compatibility, unknown flags, failed starts.
fn assert_no_plugin_warnings(output: &str) {
    for line in output.lines() {
        let l = line.to_ascii_lowercase();
        let about_plugin = l.contains("plugin") || l.contains("trigger-scoria") || l.contains("trigger");
        let complaint =
            l.contains("warn") || l.contains("error") || l.contains("unexpected") || l.contains("compatib");
        assert!(
            !(about_plugin && complaint),
            "Spin complained about the plugin: {line}\n{output}"
        );
    }
}

fn answers(base: &str) -> (serde_json::Value, serde_json::Value) {
    let c = client();
    let classify = c
        .post(format!("{base}/classify"))
        .header("content-type", "image/png")
        .body(photo("chelsea.png"))
        .send()
        .unwrap();
    let faq = c
        .post(format!("{base}/faq"))
        .header("content-type", "application/json")
        .body(r#"{"question": "remove duplicates from an array"}"#)
        .send()
        .unwrap();
    (parse(classify).1, parse(faq).1)
}

#[test]
fn spin_up_help_lists_the_plugins_flags() {
    let spin = Spin::with_plugin();
    let out = spin.command(&root()).args(["up", "--help"]).output().unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "{text}");
    for flag in [
        "--backend",
        "--max-concurrency",
        "--api-keys-file",
        "--memory-budget-mib",
    ] {
        assert!(text.contains(flag), "{flag} is not in `spin up --help`:\n{text}");
    }
    assert!(!text.contains("unexpected argument"), "{text}");
}

#[test]
fn spin_up_serves_the_demo_app_as_scoria_up_does_and_stops_cleanly() {
    let spin = Spin::with_plugin();
    let scoria = Server::start("spin.toml", &[]);
    let (want_classify, want_faq) = answers(&scoria.base);
    drop(scoria);

    for signal in ["-INT", "-TERM"] {
        let up = SpinUp::start(&spin, &root(), &[]);
        let (classify, faq) = answers(&up.base);
        assert_eq!(classify["predictions"], want_classify["predictions"]);
        assert_eq!(faq["matches"], want_faq["matches"]);
        let page = client().get(format!("{}/", up.base)).send().unwrap();
        assert_eq!(page.status(), 200);
        let out = up.stop(signal);
        assert!(out.contains("drained"), "no clean drain after {signal}:\n{out}");
        assert_no_plugin_warnings(&out);
    }
}

#[test]
fn spin_up_passes_scorias_flags_to_the_plugin() {
    let spin = Spin::with_plugin();
    let keys = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(keys.path(), "spin-passes-flags-0001\n").unwrap();
    let up = SpinUp::start(
        &spin,
        &root(),
        &["--api-keys-file", keys.path().to_str().unwrap()],
    );
    let c = client();
    let refused = c
        .post(format!("{}/faq", up.base))
        .body("sort numbers")
        .send()
        .unwrap();
    let (status, v) = parse(refused);
    assert_error(status, &v, 401, "missing_api_key");
    let allowed = c
        .post(format!("{}/faq", up.base))
        .header("x-api-key", "spin-passes-flags-0001")
        .body("sort numbers")
        .send()
        .unwrap();
    assert_eq!(allowed.status(), 200);
    assert_no_plugin_warnings(&up.output());
}

#[test]
fn spin_build_builds_every_function() {
    let spin = Spin::with_plugin();
    let out = spin.command(&root()).arg("build").output().unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "spin build failed:\n{text}");
    for component in ["image-classify", "faq-match", "demo-page"] {
        assert!(
            text.contains(component),
            "spin build did not build {component}:\n{text}"
        );
    }
}

#[test]
fn a_plain_spin_app_runs_unchanged_under_spin_up_and_scoria_up() {
    let dir = tempfile::tempdir().unwrap();
    let wasm = root().join("functions/target/wasm32-wasip2/release/hello_p2.wasm");
    std::fs::write(
        dir.path().join("spin.toml"),
        format!(
            "spin_manifest_version = 2\n[application]\nname = \"plain\"\n\
             [[trigger.http]]\nroute = \"/hello/...\"\ncomponent = \"hello\"\n\
             [component.hello]\nsource = \"{}\"\n",
            wasm.display()
        ),
    )
    .unwrap();
    let spin = Spin::with_plugin();
    let port = free_port();
    let mut child = spin
        .command(dir.path())
        .args(["up", "--listen", &format!("127.0.0.1:{port}")])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let url = format!("http://127.0.0.1:{port}/hello/there");
    let deadline = Instant::now() + Duration::from_secs(60);
    let under_spin = loop {
        if let Ok(r) = client().get(&url).send() {
            break (r.status().as_u16(), r.text().unwrap());
        }
        assert!(Instant::now() < deadline, "spin up did not serve the plain app");
        std::thread::sleep(Duration::from_millis(200));
    };
    interrupt(&mut child);

    let manifest = dir.path().join("spin.toml");
    let s = Server::start(manifest.to_str().unwrap(), &[]);
    let r = client().get(s.url("/hello/there")).send().unwrap();
    let under_scoria = (r.status().as_u16(), r.text().unwrap());
    assert_eq!(under_spin.0, 200, "{under_spin:?}");
    assert_eq!(under_spin, under_scoria);
}

/// Run a `spin` command to completion in `dir`; its output, or a failure that shows it.
fn run_spin(spin: &Spin, dir: &Path, args: &[&str]) -> String {
    // The template builds into its own `target/`, where its manifest looks for the component.
    let out = spin
        .command(dir)
        .args(args)
        .env_remove("CARGO_TARGET_DIR")
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "spin {args:?} failed:\n{text}");
    text
}

/// POST a zero tensor of EfficientNet-Lite0's input to `url`.
fn score_zeros(url: &str) -> Option<serde_json::Value> {
    let r = client()
        .post(url)
        .header("content-type", "application/x-tensor")
        .body(vec![0u8; 4 * 3 * 224 * 224])
        .send()
        .ok()?;
    (r.status() == 200).then(|| r.json().ok()).flatten()
}

#[test]
fn a_function_from_the_template_builds_answers_and_is_rebuilt_by_spin_watch() {
    let spin = Spin::with_plugin();
    let work = tempfile::tempdir().unwrap();
    run_spin(
        &spin,
        &root(),
        &[
            "templates",
            "install",
            "--dir",
            root().to_str().unwrap(),
            "--upgrade",
        ],
    );
    run_spin(
        &spin,
        work.path(),
        &[
            "new",
            "-t",
            "scoria-rust",
            "scorer",
            "--accept-defaults",
            "--no-vcs",
        ],
    );
    let app = work.path().join("scorer");
    run_spin(&spin, &app, &["build"]);

    // The model card names the output the function must answer with.
    let card = std::fs::read_to_string(root().join("models/efficientnet-lite0/model.toml")).unwrap();
    assert!(
        card.contains(r#"outputs = [{ name = "logits", shape = [-1, 1000]"#),
        "{card}"
    );
    let models = root().join("models");
    let up = SpinUp::start(&spin, &app, &["--models-dir", models.to_str().unwrap()]);
    let v = score_zeros(&format!("{}/score", up.base)).expect("the new function answers");
    assert_eq!(v["model"], "efficientnet-lite0", "{v}");
    assert_eq!(v["outputs"][0]["name"], "logits", "{v}");
    assert_eq!(v["outputs"][0]["shape"], serde_json::json!([1, 1000]), "{v}");
    assert_eq!(v["outputs"][0]["top"].as_array().map(Vec::len), Some(5), "{v}");
    assert_no_plugin_warnings(&up.stop("-INT"));

    // `spin add` puts a second one beside it, with its route, grant and build command.
    run_spin(
        &spin,
        &app,
        &[
            "add",
            "-t",
            "scoria-rust",
            "second",
            "--accept-defaults",
            "-v",
            "http-path=/second",
        ],
    );
    let manifest = std::fs::read_to_string(app.join("spin.toml")).unwrap();
    for needle in [
        "route = \"/second\"",
        "[component.second]",
        "source = \"second/target/wasm32-wasip2/release/second.wasm\"",
        "[component.second.tool.scoria]",
        "workdir = \"second\"",
    ] {
        assert!(manifest.contains(needle), "no {needle} in:\n{manifest}");
    }
    Manifest::load(&app.join("spin.toml")).expect("scoria reads the manifest spin add wrote");

    // `spin watch` rebuilds and serves again when the source changes. (Only the first
    // function is watched here: `-f` would do, but the second one is not built.)
    std::fs::write(
        app.join("spin.toml"),
        manifest
            .split("\n[[trigger.scoria]]\nroute = \"/second\"")
            .next()
            .unwrap(),
    )
    .unwrap();
    let port = free_port();
    let mut watch = spin
        .command(&app)
        .env_remove("CARGO_TARGET_DIR")
        .args([
            "watch",
            "--",
            "--listen",
            &format!("127.0.0.1:{port}"),
            "--models-dir",
            models.to_str().unwrap(),
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let url = format!("http://127.0.0.1:{port}/score");
    let until = |what: &str, ok: &dyn Fn(&serde_json::Value) -> bool| {
        let deadline = Instant::now() + Duration::from_secs(240);
        loop {
            if let Some(v) = score_zeros(&url)
                && ok(&v)
            {
                return;
            }
            assert!(Instant::now() < deadline, "spin watch never served {what}");
            std::thread::sleep(Duration::from_millis(500));
        }
    };
    until("the first build", &|v| v["model"] == "efficientnet-lite0");
    let src = app.join("src/lib.rs");
    let code = std::fs::read_to_string(&src).unwrap();
    let edited = code.replace(r#"json!({ "model": model,"#, r#"json!({ "model": "edited","#);
    assert_ne!(code, edited, "the template's answer line moved");
    std::fs::write(&src, edited).unwrap();
    until("the edited build", &|v| v["model"] == "edited");
    interrupt(&mut watch);
}

#[test]
fn spin_variables_reach_the_app_as_under_scoria_up() {
    let spin = Spin::with_plugin();
    let ask = |base: &str| {
        parse(
            client()
                .post(format!("{base}/faq"))
                .header("content-type", "text/plain")
                .body("remove an item from an array")
                .send()
                .unwrap(),
        )
    };
    // The demo's `faq_min_score` from the environment: a minimum no match reaches.
    let up = SpinUp::start_with_env(&spin, &root(), &[], &[("SPIN_VARIABLE_FAQ_MIN_SCORE", "1.8")]);
    let (status, v) = ask(&up.base);
    assert_eq!((status, &v["no_match"]), (200, &serde_json::json!(true)), "{v}");
    assert_no_plugin_warnings(&up.stop("-INT"));

    // From `.env` in the folder `spin up` runs in, with the app named by `-f`.
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join(".env"), "SPIN_VARIABLE_FAQ_MIN_SCORE=1.8\n").unwrap();
    let manifest = root().join("spin.toml");
    let up = SpinUp::start(&spin, dir.path(), &["-f", manifest.to_str().unwrap()]);
    let (status, v) = ask(&up.base);
    assert_eq!((status, &v["no_match"]), (200, &serde_json::json!(true)), "{v}");
    assert_no_plugin_warnings(&up.stop("-INT"));

    // The default when nothing sets it: the answer `scoria up` gives.
    let up = SpinUp::start(&spin, &root(), &[]);
    let (status, v) = ask(&up.base);
    assert_eq!((status, &v["no_match"]), (200, &serde_json::json!(false)), "{v}");
    drop(up);

    // A required variable without a value stops `spin up`, saying how to set it. (Spin maps
    // only files inside the app's folder, so this manifest sits beside the project's.)
    let demo = std::fs::read_to_string(root().join("spin.toml")).unwrap();
    let required = demo.replace(
        "faq_min_score = { default = \"0.55\" }",
        "faq_min_score = { required = true }",
    );
    assert_ne!(demo, required, "spin.toml no longer declares faq_min_score");
    let manifest = root().join(format!("spin-required-{}.toml", std::process::id()));
    std::fs::write(&manifest, required).unwrap();
    let out = spin
        .command(&root())
        .args(["up", "-f", manifest.to_str().unwrap(), "--listen"])
        .arg(format!("127.0.0.1:{}", free_port()))
        .output();
    std::fs::remove_file(&manifest).unwrap();
    let out = out.unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!out.status.success(), "{text}");
    assert!(text.contains("SPIN_VARIABLE_FAQ_MIN_SCORE=..."), "{text}");
}

#[test]
fn spins_own_up_options_reach_the_app() {
    let spin = Spin::with_plugin();
    let ask = |base: &str| {
        let r = client()
            .post(format!("{base}/faq"))
            .header("content-type", "text/plain")
            .body("remove an item from an array")
            .send()
            .unwrap();
        parse(r)
    };

    // `--env` sets a component's environment: a question limit this one is over.
    let up = SpinUp::start(&spin, &root(), &["-e", "SCORIA_MAX_QUESTION_BYTES=8"]);
    let (status, v) = ask(&up.base);
    assert_error(status, &v, 413, "question_too_large");
    assert_no_plugin_warnings(&up.stop("-INT"));

    // `-c` runs only the components named.
    let up = SpinUp::start(&spin, &root(), &["-c", "image-classify"]);
    let (status, v) = ask(&up.base);
    assert_error(status, &v, 404, "not_found");
    let (status, v) = parse(
        client()
            .post(format!("{}/classify", up.base))
            .header("content-type", "image/png")
            .body(photo("chelsea.png"))
            .send()
            .unwrap(),
    );
    assert_eq!((status, labels(&v)[0].as_str()), (200, "tiger cat"));
    drop(up);

    // An option of Spin's own triggers is refused by the plugin, naming it and why.
    let out = spin
        .command(&root())
        .args(["up", "--runtime-config-file", "runtime-config.toml", "--listen"])
        .arg(format!("127.0.0.1:{}", free_port()))
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{err}");
    assert!(
        err.contains("`spin up --runtime-config-file`") && err.contains("SPIN_VARIABLE_"),
        "{err}"
    );

    // `--temp` is where Spin copies the mounted files the plugin then reads.
    let temp = tempfile::tempdir().unwrap();
    let up = SpinUp::start(&spin, &root(), &["--temp", temp.path().to_str().unwrap()]);
    let (status, v) = ask(&up.base);
    assert_eq!(status, 200, "{v}");
    assert!(temp.path().join("spin.lock").exists());
    assert_no_plugin_warnings(&up.stop("-INT"));
}
