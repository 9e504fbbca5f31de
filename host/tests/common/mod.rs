//! Helpers shared by the end-to-end test files: a real `scoria up` on a free port, an HTTP
//! client, and assertions on the JSON error shape.
#![allow(dead_code)] // each test file uses its own subset

use serde_json::Value;
use std::io::{BufRead, BufReader};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

pub fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

pub fn photo(name: &str) -> Vec<u8> {
    let p = root().join("tests/data").join(name);
    std::fs::read(&p).unwrap_or_else(|e| panic!("{}: {e}; run `./dev setup` first", p.display()))
}

/// A running `scoria up`, killed on drop. Its log is kept for failure messages.
pub struct Server {
    pub child: Child,
    pub base: String,
    log: Arc<Mutex<Vec<String>>>,
}

impl Server {
    pub fn start(manifest: &str, extra: &[&str]) -> Server {
        Self::start_with_models(manifest, Path::new("models"), extra)
    }

    /// Start with another model repository (relative paths are from the project root).
    pub fn start_with_models(manifest: &str, models: &Path, extra: &[&str]) -> Server {
        let port = free_port();
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_scoria"));
        cmd.current_dir(root())
            .args(["up", "--manifest", manifest, "--models-dir"])
            .arg(models)
            .arg("--listen")
            .arg(format!("127.0.0.1:{port}"))
            .args(extra);
        Self::spawn(cmd, port)
    }

    /// `scoria up` of `manifest` started in `dir` (where it reads `.env`), with `env` set.
    pub fn start_in(dir: &Path, manifest: &Path, env: &[(&str, &str)]) -> Server {
        let port = free_port();
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_scoria"));
        cmd.current_dir(dir)
            .arg("up")
            .arg("--manifest")
            .arg(manifest)
            .arg("--listen")
            .arg(format!("127.0.0.1:{port}"))
            .envs(env.iter().copied());
        Self::spawn(cmd, port)
    }

    /// Run `cmd` (a `scoria` that will listen on `port`) and wait until it is ready.
    pub fn spawn(mut cmd: Command, port: u16) -> Server {
        let mut child = cmd
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("starting scoria");
        let log = Arc::new(Mutex::new(Vec::new()));
        let stderr = child.stderr.take().unwrap();
        let sink = log.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                sink.lock().unwrap().push(line);
            }
        });
        let mut server = Server {
            child,
            base: format!("http://127.0.0.1:{port}"),
            log,
        };
        server.wait_ready();
        server
    }

    pub fn wait_ready(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(180);
        let client = client();
        while Instant::now() < deadline {
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!("scoria exited with {status} before it was ready:\n{}", self.log());
            }
            if let Ok(r) = client.get(self.url("/readyz")).send()
                && r.status() == 200
            {
                return;
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        panic!("scoria did not become ready:\n{}", self.log());
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    pub fn log(&self) -> String {
        self.log.lock().unwrap().join("\n")
    }

    pub fn post(&self, path: &str, content_type: &str, body: Vec<u8>) -> (u16, Value) {
        let r = client()
            .post(self.url(path))
            .header("content-type", content_type)
            .body(body)
            .send()
            .unwrap();
        parse(r)
    }

    /// Send raw bytes over TCP and read the answer, ignoring a write cut short by the server
    /// (it may answer and close before reading a body it refuses).
    pub fn raw(&self, head: &str, body: Vec<u8>) -> (u16, Value) {
        use std::io::{Read, Write};
        let mut tcp = std::net::TcpStream::connect(self.base.trim_start_matches("http://")).unwrap();
        tcp.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
        tcp.write_all(head.as_bytes()).unwrap();
        for chunk in body.chunks(64 << 10) {
            if tcp.write_all(chunk).is_err() {
                break;
            }
        }
        let mut buf = Vec::new();
        let mut tmp = [0u8; 8192];
        while let Ok(n) = tcp.read(&mut tmp) {
            if n == 0 {
                break;
            }
            buf.extend(&tmp[..n]);
            let text = String::from_utf8_lossy(&buf);
            if let Some((head, body)) = text.split_once("\r\n\r\n") {
                let len = head.lines().find_map(|l| {
                    l.to_ascii_lowercase()
                        .strip_prefix("content-length:")
                        .map(|v| v.trim().parse::<usize>().unwrap())
                });
                if len.is_some_and(|n| body.len() >= n) {
                    let status = head.split(' ').nth(1).unwrap().parse().unwrap();
                    return (status, serde_json::from_str(body).unwrap());
                }
            }
        }
        panic!("no complete response: {}", String::from_utf8_lossy(&buf));
    }

    /// Send SIGTERM, as Kubernetes does before stopping a pod.
    pub fn terminate(&self) {
        let pid = self.child.id().to_string();
        let sent = Command::new("kill").args(["-TERM", &pid]).status().unwrap();
        assert!(sent.success(), "kill -TERM {pid} failed");
    }

    pub fn assert_alive(&self) {
        let r = client().get(self.url("/healthz")).send().expect("host is down");
        assert_eq!(r.status(), 200);
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Write `<dir>/spin.toml`: the faq-match function at `/faq`, matching against `index` in the
/// model repository `models`, with `extra_env` (TOML key-value pairs) added to its
/// environment and `extra` appended. Returns the manifest's path.
pub fn faq_manifest(dir: &Path, models: &Path, index: &str, extra_env: &str, extra: &str) -> PathBuf {
    let wasm = root().join("functions/target/wasm32-wasip2/release/faq_match.wasm");
    write_manifest(
        dir,
        &format!(
            r#"spin_manifest_version = 2
[application]
name = "faq-{index}"
[[trigger.scoria]]
route = "/faq"
component = "faq-match"
[component.faq-match]
source = "{wasm}"
files = [
    {{ source = "{models}/{index}", destination = "/models/{index}" }},
    {{ source = "{models}/all-minilm-l6-v2", destination = "/models/all-minilm-l6-v2" }},
]
environment = {{ SCORIA_FAQ_INDEX = "{index}"{extra_env} }}
[component.faq-match.tool.scoria]
models = ["all-minilm-l6-v2", "{index}"]
{extra}"#,
            wasm = wasm.display(),
            models = models.display(),
        ),
    )
}

/// Write `<dir>/spin.toml`: the image-classify function at `/classify` with `model` from the
/// model repository `models`. Returns the manifest's path.
pub fn classify_manifest(dir: &Path, models: &Path, model: &str) -> PathBuf {
    let wasm = root().join("functions/target/wasm32-wasip2/release/image_classify.wasm");
    write_manifest(
        dir,
        &format!(
            r#"spin_manifest_version = 2
[application]
name = "classify-{model}"
[[trigger.scoria]]
route = "/classify"
component = "image-classify"
[component.image-classify]
source = "{wasm}"
files = [{{ source = "{models}/{model}", destination = "/models/{model}" }}]
environment = {{ SCORIA_MODEL = "{model}" }}
[component.image-classify.tool.scoria]
models = ["{model}"]
"#,
            wasm = wasm.display(),
            models = models.display(),
        ),
    )
}

/// `classify_manifest` for EfficientNet-Lite0 in `dir`, with `from` replaced by `to` (which
/// must occur in it); returns the manifest's path.
pub fn classify_manifest_with(dir: &Path, from: &str, to: &str) -> String {
    let manifest = classify_manifest(dir, &root().join("models"), "efficientnet-lite0");
    let text = std::fs::read_to_string(&manifest).unwrap();
    assert!(text.contains(from), "`{from}` is not in the manifest:\n{text}");
    std::fs::write(&manifest, text.replace(from, to)).unwrap();
    manifest.display().to_string()
}

/// A copy of the EfficientNet-Lite0 folder in `<dir>/models` whose card is `edit`ed, and a
/// manifest in `dir` serving it at `/classify`. Returns the manifest's path. The ONNX Runtime
/// library and the compile cache are found through a `.cache` link beside it.
pub fn classify_with_card(dir: &Path, edit: impl FnOnce(String) -> String) -> String {
    let src = root().join("models/efficientnet-lite0");
    let dst = dir.join("models/efficientnet-lite0");
    std::os::unix::fs::symlink(root().join(".cache"), dir.join(".cache")).unwrap();
    std::fs::create_dir_all(&dst).unwrap();
    for f in ["efficientnet-lite0.onnx", "imagenet-labels.txt"] {
        std::fs::copy(src.join(f), dst.join(f)).unwrap();
    }
    let card = std::fs::read_to_string(src.join("model.toml")).unwrap();
    std::fs::write(dst.join("model.toml"), edit(card)).unwrap();
    let manifest = classify_manifest(dir, &dir.join("models"), "efficientnet-lite0");
    manifest.display().to_string()
}

/// Run `scoria up` on `manifest` with `extra` flags, expecting it to refuse to start; returns
/// what it wrote to stderr (the reason).
///
/// A host that starts after all is stopped after 120 s and the test fails, rather than
/// waiting for an exit that never comes.
pub fn refused_start(manifest: &str, extra: &[&str]) -> String {
    let mut child = Command::new(env!("CARGO_BIN_EXE_scoria"))
        .current_dir(root())
        .args(["up", "--manifest", manifest, "--listen"])
        .arg(format!("127.0.0.1:{}", free_port()))
        .args(extra)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stderr = child.stderr.take().unwrap();
    let reader = std::thread::spawn(move || {
        let mut text = String::new();
        let _ = std::io::Read::read_to_string(&mut stderr, &mut text);
        text
    });
    let deadline = Instant::now() + Duration::from_secs(120);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break Some(status);
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let err = reader.join().unwrap();
    assert!(
        status.is_some_and(|s| !s.success()),
        "scoria up should have refused to start ({status:?}):\n{err}"
    );
    err
}

/// Write `text` as `<dir>/spin.toml`; returns its path.
fn write_manifest(dir: &Path, text: &str) -> PathBuf {
    let manifest = dir.join("spin.toml");
    std::fs::write(&manifest, text).unwrap();
    manifest
}

/// A response's `Server-Timing` steps as name -> milliseconds, from every header (the host
/// appends one per step; a function may join several with commas).
pub fn server_timing(headers: &reqwest::header::HeaderMap) -> std::collections::HashMap<String, f64> {
    headers
        .get_all("server-timing")
        .iter()
        .filter_map(|h| h.to_str().ok())
        .flat_map(|h| h.split(','))
        .filter_map(|step| {
            let (name, dur) = step.trim().split_once(";dur=")?;
            Some((name.to_string(), dur.parse().ok()?))
        })
        .collect()
}

/// The resident memory of process `pid`, in MiB.
pub fn rss_mib(pid: u32) -> f64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let kb: f64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap();
    kb / 1024.0
}

/// A port nothing listens on yet.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

pub fn client() -> reqwest::blocking::Client {
    reqwest::blocking::Client::builder()
        .timeout(Duration::from_secs(120))
        .build()
        .unwrap()
}

pub fn parse(r: reqwest::blocking::Response) -> (u16, Value) {
    let status = r.status().as_u16();
    let text = r.text().unwrap();
    let v = serde_json::from_str(&text)
        .unwrap_or_else(|e| panic!("status {status}, body is not JSON ({e}): {text}"));
    (status, v)
}

pub fn labels(v: &Value) -> Vec<String> {
    v["predictions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["label"].as_str().unwrap().to_string())
        .collect()
}

/// `(label, score)` of each prediction.
pub fn predictions(v: &Value) -> Vec<(String, f64)> {
    v["predictions"]
        .as_array()
        .unwrap_or_else(|| panic!("{v}"))
        .iter()
        .map(|p| {
            (
                p["label"].as_str().unwrap().to_string(),
                p["score"].as_f64().unwrap(),
            )
        })
        .collect()
}

pub fn score_of(v: &Value, label: &str) -> f64 {
    v["predictions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["label"] == label)
        .map(|p| p["score"].as_f64().unwrap())
        .unwrap_or(0.0)
}

pub fn assert_error(status: u16, v: &Value, want_status: u16, want_code: &str) {
    assert_eq!(status, want_status, "{v}");
    assert_eq!(v["error"]["code"], want_code, "{v}");
    assert!(!v["error"]["message"].as_str().unwrap_or("").is_empty(), "{v}");
}
