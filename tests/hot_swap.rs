//! Hot swap through the admin API, end to end: swaps under load lose no request, a bad
//! component is refused while the old one keeps serving, rollback works, and compiled
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
    let server = Server::start(FAULTS, &args);
    Admin {
        server,
        _token_file: token_file,
        _cache: cache,
    }
}

fn put(s: &Server, id: &str, bytes: Vec<u8>) -> (u16, Value) {
    parse(
        client()
            .put(s.url(&format!("/admin/functions/{id}")))
            .bearer_auth(TOKEN)
            .header("content-type", "application/wasm")
            .body(bytes)
            .send()
            .unwrap(),
    )
}

#[test]
fn swapping_under_load_loses_no_request() {
    let a = start_with_admin(&[]);
    let s = Arc::new(a.server);
    let stop = Arc::new(AtomicBool::new(false));
    let clients: Vec<_> = (0..8)
        .map(|_| {
            let (s, stop) = (s.clone(), stop.clone());
            std::thread::spawn(move || {
                let (mut v1, mut v2, mut failures) = (0, 0, Vec::new());
                while !stop.load(Ordering::Relaxed) {
                    match client().get(s.url("/p2/x")).send() {
                        Ok(r) if r.status() == 200 => match r.text().unwrap_or_default() {
                            t if t.starts_with("hello from p2 (v1)") => v1 += 1,
                            t if t.starts_with("hello from p2 (v2)") => v2 += 1,
                            t => failures.push(format!("unexpected body {t}")),
                        },
                        Ok(r) => failures.push(format!("status {}", r.status())),
                        Err(e) => failures.push(format!("request failed: {e}")),
                    }
                }
                (v1, v2, failures)
            })
        })
        .collect();
    let builds = [v2(), v1()];
    for i in 0..10 {
        std::thread::sleep(Duration::from_millis(150));
        let (st, v) = put(&s, "hello-p2", builds[i % 2].clone());
        assert_eq!(st, 200, "swap {i}: {v}");
    }
    std::thread::sleep(Duration::from_millis(150));
    stop.store(true, Ordering::Relaxed);
    let (mut v1, mut v2) = (0, 0);
    for c in clients {
        let (a, b, failures) = c.join().unwrap();
        assert!(failures.is_empty(), "{failures:?}");
        v1 += a;
        v2 += b;
    }
    assert!(v1 > 0 && v2 > 0, "both versions must be seen: v1 {v1}, v2 {v2}");
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
