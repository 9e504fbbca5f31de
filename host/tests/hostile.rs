//! Hostile and careless clients against the real binary: every admission resource comes back
//! however a request ends, slow and idle connections are bounded, probes answer past the
//! connection cap, memory is bounded host-wide, and admin refusals are short and early.

mod common;

use common::*;
use serde_json::Value;
use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

const FAULTS: &str = "tests/fixtures/faults.toml";

/// An answer read off a raw connection.
struct Answer {
    status: u16,
    /// Header names in lower case.
    headers: HashMap<String, String>,
    body: Value,
}

fn connect(s: &Server) -> TcpStream {
    let tcp = TcpStream::connect(s.base.trim_start_matches("http://")).unwrap();
    tcp.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    tcp
}

/// Send `bytes` on a new connection and keep it open.
fn open_with(s: &Server, bytes: &[u8]) -> TcpStream {
    let mut tcp = connect(s);
    tcp.write_all(bytes).unwrap();
    tcp
}

/// Read one answer (head and a `Content-Length` body) from `tcp`.
fn read_answer(tcp: &mut TcpStream) -> Answer {
    let mut buf = Vec::new();
    let mut byte = [0u8; 1];
    while !buf.ends_with(b"\r\n\r\n") {
        match tcp.read(&mut byte) {
            Ok(1) => buf.push(byte[0]),
            other => panic!(
                "the connection ended before an answer ({other:?}): {}",
                String::from_utf8_lossy(&buf)
            ),
        }
    }
    let head = String::from_utf8(buf).unwrap();
    let mut lines = head.lines();
    let status = lines.next().unwrap().split(' ').nth(1).unwrap().parse().unwrap();
    let headers: HashMap<String, String> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    let body = match headers.get("content-length") {
        Some(len) => {
            let mut body = vec![0u8; len.parse().unwrap()];
            tcp.read_exact(&mut body).unwrap();
            body
        }
        None => read_chunked(tcp),
    };
    let body = serde_json::from_slice(&body).unwrap_or(Value::String(String::from_utf8_lossy(&body).into()));
    Answer {
        status,
        headers,
        body,
    }
}

/// A `Transfer-Encoding: chunked` body (without trailers).
fn read_chunked(tcp: &mut TcpStream) -> Vec<u8> {
    let mut body = Vec::new();
    loop {
        let mut line = Vec::new();
        let mut byte = [0u8; 1];
        while !line.ends_with(b"\r\n") {
            tcp.read_exact(&mut byte).unwrap();
            line.push(byte[0]);
        }
        let size = usize::from_str_radix(String::from_utf8_lossy(&line).trim(), 16).unwrap();
        let mut chunk = vec![0u8; size + 2];
        tcp.read_exact(&mut chunk).unwrap();
        if size == 0 {
            return body;
        }
        body.extend_from_slice(&chunk[..size]);
    }
}

/// One request on a new connection.
fn request(s: &Server, head: &str) -> Answer {
    let mut tcp = open_with(s, head.as_bytes());
    read_answer(&mut tcp)
}

/// Whether the server closes `tcp` within `within` (anything it sends first is skipped).
fn closed_within(tcp: &mut TcpStream, within: Duration) -> bool {
    tcp.set_read_timeout(Some(within)).unwrap();
    let mut buf = [0u8; 4096];
    let deadline = Instant::now() + within;
    while Instant::now() < deadline {
        match tcp.read(&mut buf) {
            Ok(0) => return true,
            Ok(_) => continue,
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => return true,
            Err(_) => return false,
        }
    }
    false
}

/// A sample's value in `/metrics`: `series` is the name with its labels, as rendered.
fn metric(s: &Server, series: &str) -> f64 {
    let text = client().get(s.url("/metrics")).send().unwrap().text().unwrap();
    text.lines()
        .find_map(|l| l.strip_prefix(series).and_then(|v| v.strip_prefix(' ')))
        .unwrap_or_else(|| panic!("no {series} in /metrics:\n{text}"))
        .trim()
        .parse()
        .unwrap()
}

/// Wait up to 5 s for `series` to read `want`.
fn await_metric(s: &Server, series: &str, want: f64) {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let got = metric(s, series);
        if got == want {
            return;
        }
        assert!(Instant::now() < deadline, "{series} is {got}, not {want}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

const QUEUE_DEPTH: &str = "scoria_queue_depth{function=\"fault-test\"}";

#[test]
fn clients_that_hang_up_while_queued_give_their_places_back() {
    let s = std::sync::Arc::new(Server::start(
        FAULTS,
        &["--max-concurrency", "1", "--max-queue", "3"],
    ));
    let sleep = |ms: u64| {
        let s = s.clone();
        std::thread::spawn(move || {
            let r = client()
                .get(s.url(&format!("/fault/sleep?ms={ms}")))
                .send()
                .unwrap();
            r.status().as_u16()
        })
    };
    let holder = sleep(2000);
    std::thread::sleep(Duration::from_millis(300));
    let queued: Vec<TcpStream> = (0..3)
        .map(|_| open_with(&s, b"GET /fault/ok HTTP/1.1\r\nhost: x\r\n\r\n"))
        .collect();
    await_metric(&s, QUEUE_DEPTH, 3.0);
    // The clients hang up while they wait, as wrk's do at the end of every run.
    drop(queued);
    await_metric(&s, QUEUE_DEPTH, 0.0);
    assert_eq!(holder.join().unwrap(), 200);

    // Full capacity is back: one running and three queued all get their answer.
    let running = sleep(800);
    std::thread::sleep(Duration::from_millis(200));
    let waiting: Vec<_> = (0..3).map(|_| sleep(0)).collect();
    assert_eq!(running.join().unwrap(), 200);
    for w in waiting {
        assert_eq!(w.join().unwrap(), 200);
    }
    await_metric(&s, QUEUE_DEPTH, 0.0);
}

#[test]
fn a_slow_body_holds_no_slot_and_is_cut_off_at_its_deadline() {
    let s = Server::start(
        FAULTS,
        &[
            "--max-concurrency",
            "1",
            "--max-queue",
            "0",
            "--body-timeout",
            "1",
        ],
    );
    let head = "POST /fault/ok HTTP/1.1\r\nhost: x\r\ncontent-length: 1000\r\n\r\n0123456789";
    let started = Instant::now();
    let mut slow: Vec<TcpStream> = (0..4).map(|_| open_with(&s, head.as_bytes())).collect();
    std::thread::sleep(Duration::from_millis(200));
    // The function's one slot is free for a client that sends its body.
    let r = client().post(s.url("/fault/ok")).body("ready").send().unwrap();
    assert_eq!(r.status(), 200);
    for tcp in &mut slow {
        let a = read_answer(tcp);
        assert_error(a.status, &a.body, 408, "body_timeout");
        assert_eq!(a.headers.get("connection").map(String::as_str), Some("close"));
    }
    let took = started.elapsed();
    assert!(took < Duration::from_secs(5), "cut off after {took:?}");
    s.assert_alive();
}

/// Whether `tcp` is still open (nothing to read, and no end of stream).
fn still_open(tcp: &mut TcpStream) -> bool {
    tcp.set_nonblocking(true).unwrap();
    let open = matches!(tcp.read(&mut [0u8; 1]), Err(e) if e.kind() == std::io::ErrorKind::WouldBlock);
    tcp.set_nonblocking(false).unwrap();
    open
}

#[test]
fn idle_connections_and_slow_headers_are_closed_at_their_deadlines() {
    let s = Server::start(FAULTS, &["--idle-timeout", "3", "--header-read-timeout", "1"]);
    let mut silent = connect(&s);
    let mut half = open_with(&s, b"GET /healthz HTTP/1.1\r\nhost: x\r\n");
    let mut kept = open_with(&s, b"GET /healthz HTTP/1.1\r\nhost: x\r\n\r\n");
    assert_eq!(read_answer(&mut kept).status, 200);

    // Headers begun are cut off after 1 s; a connection that sent nothing has 3 s.
    assert!(
        closed_within(&mut half, Duration::from_millis(1800)),
        "half-sent headers are still read"
    );
    assert!(
        still_open(&mut silent),
        "a connection idle for under 2 s was closed"
    );

    // A connection in use is not idle: a request every 0.6 s keeps it open past 3 s.
    let mut busy = connect(&s);
    for _ in 0..6 {
        busy.write_all(b"GET /healthz HTTP/1.1\r\nhost: x\r\n\r\n")
            .unwrap();
        assert_eq!(read_answer(&mut busy).status, 200);
        std::thread::sleep(Duration::from_millis(600));
    }
    for (what, tcp) in [("silent", &mut silent), ("idle", &mut kept)] {
        assert!(
            closed_within(tcp, Duration::from_secs(3)),
            "the {what} connection is still open"
        );
    }
    s.assert_alive();
}

#[test]
fn probes_answer_past_the_connection_cap() {
    let s = Server::start(FAULTS, &["--max-connections", "8", "--idle-timeout", "60"]);
    let mut held: Vec<TcpStream> = (0..8).map(|_| connect(&s)).collect();
    // The start-up's readiness polls may still hold a place or two, until the host sees them
    // closed; a connection more per place they held fills the cap.
    let refused = |s: &Server| request(s, "GET /fault/ok HTTP/1.1\r\nhost: x\r\n\r\n").status == 503;
    while !refused(&s) {
        assert!(held.len() < 12, "the cap of 8 let {} connections in", held.len());
        held.push(connect(&s));
        std::thread::sleep(Duration::from_millis(100));
    }
    // A flood past the cap, more than the probe reserve holds.
    let flood: Vec<TcpStream> = (0..100).map(|_| connect(&s)).collect();
    std::thread::sleep(Duration::from_millis(300));

    for probe in ["/healthz", "/readyz", "/metrics"] {
        let a = request(&s, &format!("GET {probe} HTTP/1.1\r\nhost: x\r\n\r\n"));
        assert_eq!(a.status, 200, "{probe}: {}", a.body);
    }
    let a = request(&s, "GET /fault/ok HTTP/1.1\r\nhost: x\r\n\r\n");
    assert_error(a.status, &a.body, 503, "too_many_connections");
    assert_eq!(a.headers.get("retry-after").map(String::as_str), Some("1"));
    assert!(metric(&s, "scoria_connections_shed_total") >= 60.0);

    // The cap frees as its connections end.
    drop(held);
    drop(flood);
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let a = request(&s, "GET /fault/ok HTTP/1.1\r\nhost: x\r\n\r\n");
        if a.status == 200 {
            break;
        }
        assert!(Instant::now() < deadline, "still refused: {}", a.body);
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// A PNG of black pixels, written row by row (zeros compress to almost nothing).
fn black_png(width: u32, height: u32, color: png::ColorType, depth: png::BitDepth) -> Vec<u8> {
    // The stream writer wants to own its sink.
    #[derive(Clone, Default)]
    struct Sink(std::rc::Rc<std::cell::RefCell<Vec<u8>>>);
    impl Write for Sink {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            self.0.borrow_mut().extend_from_slice(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let out = Sink::default();
    let mut enc = png::Encoder::new(out.clone(), width, height);
    enc.set_color(color);
    enc.set_depth(depth);
    enc.set_compression(png::Compression::Fast);
    let mut w = enc.write_header().unwrap().into_stream_writer().unwrap();
    let channels = match color {
        png::ColorType::Rgba => 4,
        _ => 3,
    };
    let bytes = if depth == png::BitDepth::Sixteen { 2 } else { 1 };
    let row = vec![0u8; width as usize * channels * bytes];
    for _ in 0..height {
        w.write_all(&row).unwrap();
    }
    w.finish().unwrap();
    out.0.take()
}

/// Send `body` as a PNG to /classify from 16 clients at once; the answers, and how far the
/// host's RSS rose above where it was before (sampled every 10 ms).
fn sixteen_at_once(s: &std::sync::Arc<Server>, body: &[u8]) -> (Vec<(u16, Value, Option<String>)>, f64) {
    let pid = s.child.id();
    let before = rss_mib(pid);
    let done = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let sampler = {
        let done = done.clone();
        std::thread::spawn(move || {
            let mut peak = 0f64;
            while !done.load(std::sync::atomic::Ordering::Acquire) {
                peak = peak.max(rss_mib(pid));
                std::thread::sleep(Duration::from_millis(10));
            }
            peak
        })
    };
    let barrier = std::sync::Arc::new(std::sync::Barrier::new(16));
    let clients: Vec<_> = (0..16)
        .map(|_| {
            let (s, body, barrier) = (s.clone(), body.to_vec(), barrier.clone());
            std::thread::spawn(move || {
                let c = client();
                barrier.wait();
                let r = c
                    .post(s.url("/classify"))
                    .header("content-type", "image/png")
                    .body(body)
                    .send()
                    .unwrap();
                let retry = r
                    .headers()
                    .get("retry-after")
                    .map(|v| v.to_str().unwrap().to_string());
                let (status, v) = parse(r);
                (status, v, retry)
            })
        })
        .collect();
    let answers = clients.into_iter().map(|c| c.join().unwrap()).collect();
    done.store(true, std::sync::atomic::Ordering::Release);
    (answers, sampler.join().unwrap() - before)
}

#[test]
fn the_memory_budget_bounds_what_concurrent_images_take() {
    const BUDGET_MIB: f64 = 512.0;
    let s = std::sync::Arc::new(Server::start(FAULTS, &["--memory-budget-mib", "512"]));
    let (status, v) = s.post("/classify", "image/png", photo("chelsea.png"));
    assert_eq!((status, labels(&v)[0].as_str()), (200, "tiger cat"));

    // 40 MP of 16-bit RGBA is 320 MB decoded: refused from its header, before decoding.
    let deep = black_png(6324, 6324, png::ColorType::Rgba, png::BitDepth::Sixteen);
    let (answers, grew) = sixteen_at_once(&s, &deep);
    for (status, v, _) in &answers {
        assert_error(*status, v, 400, "image_too_large");
    }
    assert!(grew < 100.0, "RSS rose by {grew:.0} MiB for refused images");

    // 36 MP of 8-bit RGB is 108 MB decoded, which the function accepts: sixteen at once
    // would take 1.7 GB, and the budget lets about four run.
    let wide = black_png(6000, 6000, png::ColorType::Rgb, png::BitDepth::Eight);
    let (answers, grew) = sixteen_at_once(&s, &wide);
    let ok = answers.iter().filter(|a| a.0 == 200).count();
    eprintln!("16 images of 6000x6000 at once: {ok} answered 200, RSS rose by {grew:.0} MiB");
    for (status, v, retry) in &answers {
        if *status != 200 {
            assert_error(*status, v, 503, "memory_budget_exhausted");
            assert_eq!(retry.as_deref(), Some("1"), "{v}");
        }
    }
    assert!((1..16).contains(&ok), "{ok} of 16 answered 200");
    // The budget, plus the pages each instance slot keeps mapped between requests.
    assert!(
        grew < BUDGET_MIB + 200.0,
        "RSS rose by {grew:.0} MiB with a {BUDGET_MIB} MiB budget"
    );

    await_metric(&s, "scoria_memory_reserved_bytes", 0.0);
    let (status, v) = s.post("/classify", "image/png", photo("chelsea.png"));
    assert_eq!((status, labels(&v)[0].as_str()), (200, "tiger cat"));
}

#[test]
fn answers_that_leave_a_body_unread_close_the_connection() {
    let keys = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(keys.path(), "all-functions-key-0001\n").unwrap();
    let s = Server::start(FAULTS, &["--api-keys-file", keys.path().to_str().unwrap()]);
    let cases = [
        (
            "POST /nowhere HTTP/1.1\r\nhost: x\r\ncontent-length: 100000\r\n\r\nabc",
            404,
        ),
        (
            "POST /classify HTTP/1.1\r\nhost: x\r\ncontent-length: 100000\r\n\r\nabc",
            401,
        ),
    ];
    for (head, status) in cases {
        let mut tcp = open_with(&s, head.as_bytes());
        let a = read_answer(&mut tcp);
        assert_eq!(a.status, status, "{}", a.body);
        assert_eq!(
            a.headers.get("connection").map(String::as_str),
            Some("close"),
            "{head}"
        );
        assert!(closed_within(&mut tcp, Duration::from_secs(2)), "{head}");
    }
    // A body that was read leaves the connection usable.
    let mut tcp = open_with(
        &s,
        b"POST /fault/ok HTTP/1.1\r\nhost: x\r\nx-api-key: all-functions-key-0001\r\ncontent-length: 5\r\n\r\nhello",
    );
    let a = read_answer(&mut tcp);
    assert_eq!(a.status, 200);
    assert_eq!(a.headers.get("connection"), None);
    tcp.write_all(b"GET /fault/ok HTTP/1.1\r\nhost: x\r\nx-api-key: all-functions-key-0001\r\n\r\n")
        .unwrap();
    assert_eq!(read_answer(&mut tcp).status, 200);
}

#[test]
fn admin_refusals_are_short_and_oversized_uploads_are_not_read() {
    const TOKEN: &str = "admin-token-for-tests-0001";
    let token = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(token.path(), format!("{TOKEN}\n")).unwrap();
    let cache = tempfile::tempdir().unwrap();
    let s = Server::start(
        FAULTS,
        &[
            "--admin-token-file",
            token.path().to_str().unwrap(),
            "--cache-dir",
            cache.path().to_str().unwrap(),
            "--admin-max-upload-mib",
            "4",
        ],
    );
    // A megabyte of text is not echoed back, nor logged.
    let junk = "(module junk junk junk ".repeat(45_000);
    let r = client()
        .put(s.url("/admin/functions/fault-test"))
        .header("authorization", format!("BEARER {TOKEN}"))
        .body(junk)
        .send()
        .unwrap();
    let text = r.text().unwrap();
    let v: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(v["error"]["code"], "invalid_component", "{v}");
    assert!(text.len() < 1000, "a {} byte answer: {text}", text.len());
    let longest = s.log().lines().map(str::len).max().unwrap_or(0);
    assert!(longest < 2000, "a log line of {longest} bytes");

    // 3 GiB declared: 413 at once, before any of it is sent.
    let mut tcp = open_with(
        &s,
        format!(
            "PUT /admin/models/efficientnet-lite0 HTTP/1.1\r\nhost: x\r\nauthorization: bearer {TOKEN}\r\n\
             content-length: 3221225472\r\n\r\n"
        )
        .as_bytes(),
    );
    let started = Instant::now();
    let a = read_answer(&mut tcp);
    assert_error(a.status, &a.body, 413, "body_too_large");
    assert!(started.elapsed() < Duration::from_secs(2));
    assert_eq!(a.headers.get("connection").map(String::as_str), Some("close"));

    // The lower-case scheme is accepted for reading too, and the function still serves.
    let r = client()
        .get(s.url("/admin/functions"))
        .header("authorization", format!("bearer {TOKEN}"))
        .send()
        .unwrap();
    assert_eq!(r.status(), 200);
    let r = client().get(s.url("/fault/ok")).send().unwrap();
    assert_eq!(r.status(), 200);
}
