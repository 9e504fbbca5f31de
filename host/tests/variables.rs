//! Spin's application variables under `scoria up`: `[variables]` with defaults and required
//! ones, `[component.<id>.variables]` templates, values from `SPIN_VARIABLE_*` and `.env`, read
//! by a real component through `spin:variables` and `wasi:config/store`, templates in
//! `allowed_outbound_hosts`, and the FAQ function's minimum score set by an operator.

mod common;

use common::*;
use serde_json::Value;
use std::path::Path;

/// A manifest in `dir` serving the fault-test component at `/v/...` with variables, and the
/// same build without any at `/plain/...`.
fn manifest(dir: &Path) -> std::path::PathBuf {
    let wasm = root().join("functions/target/wasm32-wasip2/release/fault_test.wasm");
    let path = dir.join("spin.toml");
    std::fs::write(
        &path,
        format!(
            r#"spin_manifest_version = 2
[application]
name = "variables"

[variables]
region = {{ default = "west" }}
api_host = {{ default = "127.0.0.1" }}
token = {{ required = true, secret = true }}

[[trigger.http]]
route = "/v/..."
component = "with-variables"

[[trigger.http]]
route = "/plain/..."
component = "plain"

[component.with-variables]
source = "{wasm}"
allowed_outbound_hosts = ["http://{{{{ api_host }}}}:*"]
[component.with-variables.variables]
url = "https://{{{{ region }}}}.example.com/v1"
token = "{{{{ token }}}}"
greeting = "hello"

[component.plain]
source = "{wasm}"
"#,
            wasm = wasm.display()
        ),
    )
    .unwrap();
    path
}

fn variable(s: &Server, route: &str, name: &str) -> Value {
    let r = client()
        .get(s.url(&format!("/{route}/variable?name={name}")))
        .send()
        .unwrap();
    assert_eq!(r.status(), 200);
    serde_json::from_str(&r.text().unwrap()).unwrap()
}

#[test]
fn components_read_their_variables_from_the_environment_dotenv_and_defaults() {
    let dir = tempfile::tempdir().unwrap();
    let manifest = manifest(dir.path());
    // The process environment wins over `.env`, which wins over the default.
    std::fs::write(
        dir.path().join(".env"),
        "SPIN_VARIABLE_REGION=north\nSPIN_VARIABLE_TOKEN=from-dotenv\n",
    )
    .unwrap();
    let s = Server::start_in(dir.path(), &manifest, &[("SPIN_VARIABLE_TOKEN", "s3cret")]);

    let v = variable(&s, "v", "url");
    assert_eq!(v["spin"]["value"], "https://north.example.com/v1", "{v}");
    assert_eq!(v["config"]["value"], "https://north.example.com/v1", "{v}");
    assert_eq!(variable(&s, "v", "token")["spin"]["value"], "s3cret");
    assert_eq!(variable(&s, "v", "greeting")["spin"]["value"], "hello");
    let all = &variable(&s, "v", "url")["config_all"];
    let mut all: Vec<(String, String)> = serde_json::from_value(all.clone()).unwrap();
    all.sort();
    assert_eq!(
        all,
        [
            ("greeting", "hello"),
            ("token", "s3cret"),
            ("url", "https://north.example.com/v1")
        ]
        .map(|(k, v)| (k.to_string(), v.to_string()))
    );

    // A key the component does not declare, an application variable it has no key for, and a
    // name Spin would refuse: `undefined`, `undefined` and `invalid-name`; `wasi:config` has
    // no value for any of them.
    for (name, error) in [
        ("nope", "Undefined"),
        ("region", "Undefined"),
        ("Bad-Name", "InvalidName"),
    ] {
        let v = variable(&s, "v", name);
        let e = v["spin"]["error"].as_str().unwrap_or_default();
        assert!(e.contains(&format!("{error}(")), "{name}: {v}");
        assert_eq!(v["config"]["value"], Value::Null, "{name}: {v}");
    }
    let v = variable(&s, "plain", "url");
    assert!(
        v["spin"]["error"]
            .as_str()
            .unwrap_or_default()
            .contains("Undefined("),
        "{v}"
    );
    assert_eq!(v["config_all"], serde_json::json!([]));

    // `allowed_outbound_hosts` = ["http://{{ api_host }}:*"]: the resolved host is allowed.
    let target = s.url("/healthz");
    let outbound = |route: &str| {
        client()
            .get(s.url(&format!("/{route}/outbound?url={target}")))
            .send()
            .unwrap()
            .text()
            .unwrap()
    };
    assert_eq!(outbound("v"), "reached: 200");
    assert!(outbound("plain").contains("HttpRequestDenied"));
    s.assert_alive();
}

#[test]
fn a_required_variable_without_a_value_stops_the_start() {
    let dir = tempfile::tempdir().unwrap();
    let manifest = manifest(dir.path());
    let err = refused_start(manifest.to_str().unwrap(), &[]);
    assert!(
        err.contains("`token`") && err.contains("SPIN_VARIABLE_TOKEN=..."),
        "{err}"
    );
    // A value that turns an outbound template into something that is not a host.
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_scoria"))
        .args([
            "up",
            "--manifest",
            manifest.to_str().unwrap(),
            "--listen",
            "127.0.0.1:0",
        ])
        .env("SPIN_VARIABLE_TOKEN", "t")
        .env("SPIN_VARIABLE_API_HOST", "a/b")
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut err = String::new();
    std::io::Read::read_to_string(child.stderr.as_mut().unwrap(), &mut err).unwrap();
    assert!(!child.wait().unwrap().success());
    assert!(
        err.contains("component.with-variables.allowed_outbound_hosts") && err.contains("http://a/b:*"),
        "{err}"
    );
}

#[test]
fn an_operator_sets_the_faq_minimum_score_without_editing_the_manifest() {
    let ask = |s: &Server| s.post("/faq", "text/plain", b"remove an item from an array".to_vec());
    let s = Server::start_in(&root(), &root().join("spin.toml"), &[]);
    let (status, v) = ask(&s);
    assert_eq!((status, &v["no_match"]), (200, &Value::Bool(false)), "{v}");
    drop(s);
    let s = Server::start_in(
        &root(),
        &root().join("spin.toml"),
        &[("SPIN_VARIABLE_FAQ_MIN_SCORE", "1.8")],
    );
    let (status, v) = ask(&s);
    assert_eq!((status, &v["no_match"]), (200, &Value::Bool(true)), "{v}");
    // A value the function cannot read is the deployment's mistake: 500 `misconfigured`.
    drop(s);
    let s = Server::start_in(
        &root(),
        &root().join("spin.toml"),
        &[("SPIN_VARIABLE_FAQ_MIN_SCORE", "high")],
    );
    let (status, v) = ask(&s);
    assert_error(status, &v, 500, "misconfigured");
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap_or_default()
            .contains("min_score"),
        "{v}"
    );
}
