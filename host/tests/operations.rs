//! Production operations, end to end against the real binary: API keys, limits, fault
//! containment, metrics, graceful shutdown and a short soak.

mod common;

use common::*;
use serde_json::Value;
use std::net::TcpStream;
use std::process::Command;
use std::time::{Duration, Instant};

const FAULTS: &str = "tests/fixtures/faults.toml";

fn get(s: &Server, path: &str) -> (u16, Value) {
    parse(client().get(s.url(path)).send().unwrap())
}

fn keys_file() -> tempfile::NamedTempFile {
    let f = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(
        f.path(),
        "# test keys\nall-functions-key-0001\nclassify-only-key-0001 image-classify\n",
    )
    .unwrap();
    f
}

#[test]
fn api_keys_gate_function_routes_but_not_probes() {
    let keys = keys_file();
    let path = keys.path().to_str().unwrap().to_string();
    let s = Server::start(FAULTS, &["--api-keys-file", &path]);
    let cat = photo("coffee.png");
    let post = |headers: &[(&str, &str)], route: &str| {
        let mut r = client()
            .post(s.url(route))
            .header("content-type", "image/png")
            .body(cat.clone());
        for (k, v) in headers {
            r = r.header(*k, *v);
        }
        parse(r.send().unwrap())
    };

    let (st, v) = post(&[], "/classify");
    assert_error(st, &v, 401, "missing_api_key");
    let (st, v) = post(&[("authorization", "Bearer wrong-key-wrong-key")], "/classify");
    assert_error(st, &v, 401, "invalid_api_key");
    let (st, v) = post(&[("x-api-key", "classify-only-key-0001")], "/fault/ok");
    assert_error(st, &v, 403, "forbidden");
    let (st, v) = post(&[("x-api-key", "classify-only-key-0001")], "/classify");
    assert_eq!((st, labels(&v)[0].as_str()), (200, "espresso"));
    let (st, v) = post(&[("authorization", "Bearer all-functions-key-0001")], "/classify");
    assert_eq!(st, 200, "{v}");

    // Probes and the scraper need no key.
    assert_eq!(client().get(s.url("/healthz")).send().unwrap().status(), 200);
    assert_eq!(client().get(s.url("/readyz")).send().unwrap().status(), 200);
    assert_eq!(client().get(s.url("/metrics")).send().unwrap().status(), 200);
    // Keys never reach the logs.
    let log = s.log();
    assert!(!log.contains("classify-only-key-0001") && !log.contains("all-functions-key-0001"));
}

#[test]
fn limits_and_faults_each_get_their_status() {
    let s = Server::start(
        FAULTS,
        &["--request-timeout", "2", "--max-guest-memory-mib", "64"],
    );
    let t = Instant::now();
    let (st, v) = get(&s, "/fault/loop");
    assert_error(st, &v, 504, "timeout");
    assert!(
        t.elapsed() < Duration::from_secs(10),
        "the loop ran {:?}",
        t.elapsed()
    );

    let (st, v) = get(&s, "/fault/memory");
    assert_error(st, &v, 500, "memory_limit_exceeded");
    assert!(v["error"]["message"].as_str().unwrap().contains("64 MiB"), "{v}");

    let (st, v) = get(&s, "/fault/stack");
    assert_error(st, &v, 500, "function_failed");
    let (st, v) = get(&s, "/fault/trap");
    assert_error(st, &v, 500, "function_failed");

    // Garbage handed to wasi-nn comes back to the guest as wasi-nn errors, not host crashes.
    for (path, code, detail) in [
        ("/allowed/nn-shape", "inference_failed", "InvalidArgument"),
        ("/allowed/nn-type", "inference_failed", "InvalidArgument"),
        ("/allowed/nn-unknown", "model_unavailable", "NotFound"),
    ] {
        let (st, v) = get(&s, path);
        assert_error(st, &v, 500, code);
        assert!(
            v["error"]["message"].as_str().unwrap().contains(detail),
            "{path}: {v}"
        );
    }

    let (st, v) = s.post("/classify", "image/png", photo("coffee.png"));
    assert_eq!((st, labels(&v)[0].as_str()), (200, "espresso"));
}

#[test]
fn a_thousand_faults_leave_memory_flat_and_answers_right() {
    let s = Server::start(
        FAULTS,
        &["--request-timeout", "1", "--max-guest-memory-mib", "64"],
    );
    let pid = s.child.id();
    let faults = [
        "/fault/trap",
        "/fault/stack",
        "/allowed/nn-shape",
        "/allowed/nn-type",
        "/fault/memory",
    ];
    let run = |n: usize| {
        for i in 0..n {
            let r = client().get(s.url(faults[i % faults.len()])).send().unwrap();
            assert!(r.status().is_server_error(), "{}", r.status());
            if i % 100 == 0 {
                let (st, v) = s.post("/classify", "image/png", photo("coffee.png"));
                assert_eq!((st, labels(&v)[0].as_str()), (200, "espresso"));
            }
        }
    };
    // Warm-up: pools, caches and the inference threads' buffers reach their working size.
    for _ in 0..20 {
        let (st, _) = s.post("/classify", "image/png", photo("coffee.png"));
        assert_eq!(st, 200);
    }
    run(100);
    let before = rss_mib(pid);
    run(1000);
    for _ in 0..3 {
        let (st, v) = get(&s, "/fault/loop");
        assert_error(st, &v, 504, "timeout");
    }
    let after = rss_mib(pid);
    assert!(
        after < before * 1.10 + 8.0,
        "RSS grew from {before:.1} MiB to {after:.1} MiB"
    );
    let (st, v) = s.post("/classify", "image/png", photo("chelsea.png"));
    assert_eq!((st, labels(&v)[0].as_str()), (200, "tiger cat"));
}

#[test]
fn overload_gets_503_with_retry_after() {
    let s = std::sync::Arc::new(Server::start(
        FAULTS,
        &["--max-concurrency", "1", "--max-queue", "1"],
    ));
    let slow: Vec<_> = (0..2)
        .map(|_| {
            let s = s.clone();
            std::thread::spawn(move || {
                client()
                    .get(s.url("/fault/sleep?ms=1500"))
                    .send()
                    .unwrap()
                    .status()
            })
        })
        .collect();
    std::thread::sleep(Duration::from_millis(400));
    let r = client().get(s.url("/fault/ok")).send().unwrap();
    assert_eq!(
        r.headers().get("retry-after").map(|v| v.to_str().unwrap()),
        Some("1")
    );
    let (st, v) = parse(r);
    assert_error(st, &v, 503, "overloaded");
    // The running one and the queued one both finish.
    for h in slow {
        assert_eq!(h.join().unwrap(), 200);
    }
    // Another function has its own slots.
    let (st, _) = s.post("/classify", "image/png", photo("coffee.png"));
    assert_eq!(st, 200);
}

#[test]
fn metrics_parse_as_prometheus_text() {
    let s = Server::start(FAULTS, &[]);
    for _ in 0..3 {
        let (st, _) = s.post("/classify", "image/png", photo("coffee.png"));
        assert_eq!(st, 200);
    }
    let _ = get(&s, "/fault/trap");
    let r = client().get(s.url("/metrics")).send().unwrap();
    assert!(
        r.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/plain")
    );
    let text = r.text().unwrap();
    let lines = text.lines().map(|l| Ok(l.to_string()));
    let scrape = prometheus_parse::Scrape::parse(lines).expect("valid Prometheus text");

    let value = |name: &str, labels: &[(&str, &str)]| -> Option<prometheus_parse::Value> {
        scrape
            .samples
            .iter()
            .find(|s| s.metric == name && labels.iter().all(|(k, v)| s.labels.get(k) == Some(*v)))
            .map(|s| s.value.clone())
    };
    use prometheus_parse::Value as V;
    assert!(
        matches!(value("scoria_ready", &[]), Some(V::Gauge(v)) if v == 1.0),
        "{text}"
    );
    assert!(
        matches!(value("scoria_requests_total", &[("function", "image-classify"), ("status", "200")]), Some(V::Counter(v)) if v == 3.0),
        "{text}"
    );
    assert!(
        matches!(value("scoria_requests_total", &[("function", "fault-test"), ("status", "500")]), Some(V::Counter(v)) if v == 1.0),
        "{text}"
    );
    match value(
        "scoria_request_duration_seconds",
        &[("function", "image-classify")],
    ) {
        Some(V::Histogram(h)) => assert_eq!(h.last().unwrap().count, 3.0, "{text}"),
        other => panic!("no latency histogram: {other:?}\n{text}"),
    }
    match value(
        "scoria_inference_duration_seconds",
        &[("model", "efficientnet-lite0"), ("backend", "tract")],
    ) {
        Some(V::Histogram(h)) => assert_eq!(h.last().unwrap().count, 3.0, "{text}"),
        other => panic!("no inference histogram: {other:?}\n{text}"),
    }
    assert!(
        value("scoria_batch_size", &[("model", "efficientnet-lite0")]).is_some(),
        "{text}"
    );
    assert!(
        value(
            "scoria_batch_queue_delay_seconds",
            &[("model", "efficientnet-lite0")]
        )
        .is_some(),
        "{text}"
    );
    assert!(
        matches!(value("scoria_instances_in_use", &[("function", "image-classify")]), Some(V::Gauge(v)) if v == 0.0)
    );
    assert!(
        matches!(value("scoria_queue_depth", &[("function", "image-classify")]), Some(V::Gauge(v)) if v == 0.0)
    );
}

#[test]
fn sigterm_drains_in_flight_requests_and_refuses_new_connections() {
    let mut s = Server::start(FAULTS, &["--drain-timeout", "10"]);
    let url = s.url("/fault/sleep?ms=2000");
    let in_flight = std::thread::spawn(move || {
        let r = client().get(url).send().unwrap();
        (r.status().as_u16(), r.text().unwrap())
    });
    std::thread::sleep(Duration::from_millis(500));
    s.terminate();
    std::thread::sleep(Duration::from_millis(300));

    let addr = s.base.trim_start_matches("http://").to_string();
    assert!(
        TcpStream::connect(&addr).is_err(),
        "a new connection was accepted while draining"
    );
    assert_eq!(in_flight.join().unwrap(), (200, "slept 2000 ms".to_string()));

    let deadline = Instant::now() + Duration::from_secs(15);
    let status = loop {
        if let Some(st) = s.child.try_wait().unwrap() {
            break st;
        }
        assert!(Instant::now() < deadline, "scoria did not exit after draining");
        std::thread::sleep(Duration::from_millis(100));
    };
    assert!(status.success(), "exit status {status}\n{}", s.log());
    assert!(s.log().contains("drained"), "{}", s.log());
}

#[test]
fn soak_30_seconds_at_concurrency_8() {
    let s = Server::start("spin.toml", &[]);
    let python = root().join(".cache/venv/bin/python");
    let out = Command::new(&python)
        .current_dir(root())
        .args([
            "bench/soak.py",
            "--json",
            "--concurrency",
            "8",
            "--duration",
            "30",
            "--url",
        ])
        .arg(s.url("/classify"))
        .output()
        .unwrap_or_else(|e| panic!("{}: {e}; run ./dev setup", python.display()));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report: Value = serde_json::from_str(text.trim()).unwrap();
    eprintln!("soak: {report}");
    assert_eq!(report["errors"], serde_json::json!({}), "{report}");
    assert!(report["requests"].as_u64().unwrap() > 100, "{report}");
    assert!(report["rss_growth"].as_f64().unwrap() < 0.10, "{report}");
}

/// Under `RUST_BACKTRACE=1` an error names its cause without a stack trace, unless
/// `RUST_LIB_BACKTRACE=1` asks for one (the host sets it to 0 when unset, so that wasmtime's
/// per-request errors capture no backtrace either).
#[test]
fn errors_capture_no_backtrace_unless_asked() {
    let start = |lib_backtrace: Option<&str>| {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_scoria"));
        cmd.args(["up", "--manifest", "no-such-spin.toml"])
            .env("RUST_BACKTRACE", "1")
            .env_remove("RUST_LIB_BACKTRACE");
        if let Some(v) = lib_backtrace {
            cmd.env("RUST_LIB_BACKTRACE", v);
        }
        let out = cmd.output().unwrap();
        assert!(!out.status.success());
        String::from_utf8_lossy(&out.stderr).into_owned()
    };
    let plain = start(None);
    assert!(plain.contains("no-such-spin.toml"), "{plain}");
    assert!(!plain.contains("Stack backtrace"), "{plain}");
    let asked = start(Some("1"));
    assert!(asked.contains("Stack backtrace"), "{asked}");
}
