//! End-to-end tests: start the real `scoria` binary on a free port, POST real photos, and
//! check real predictions and every documented error.
//!
//! Needs what `./dev setup` produces: the built functions, the EfficientNet-Lite0 ONNX file
//! and the photos in tests/data. A missing piece fails the test with the command to run.

mod common;

use common::*;
use serde_json::Value;
use std::process::Command;
use std::sync::Arc;

const CATS: &[&str] = &[
    "tiger cat",
    "Egyptian cat",
    "tabby",
    "Persian cat",
    "Siamese cat",
    "lynx",
];

fn b64(bytes: &[u8]) -> String {
    const A: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for c in bytes.chunks(3) {
        let n = (u32::from(c[0]) << 16)
            | (u32::from(*c.get(1).unwrap_or(&0)) << 8)
            | u32::from(*c.get(2).unwrap_or(&0));
        for i in 0..4 {
            if i <= c.len() {
                out.push(A[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

#[test]
fn classifies_real_photos() {
    let s = Server::start("spin.toml", &[]);

    for (file, ct) in [
        ("chelsea.png", "image/png"),
        ("chelsea.jpg", "image/jpeg"),
        ("chelsea.webp", "image/webp"),
        ("chelsea.gif", "image/gif"),
    ] {
        let (status, v) = s.post("/classify", ct, photo(file));
        assert_eq!(status, 200, "{file}: {v}");
        assert_eq!(v["model"], "efficientnet-lite0");
        assert_eq!(v["weights"], "pretrained", "{v}");
        let top = labels(&v);
        assert_eq!(top.len(), 5, "{v}");
        assert!(
            top.iter().any(|l| CATS.contains(&l.as_str())),
            "{file}: no cat in {top:?}"
        );
        let p = &v["predictions"][0];
        assert!(p["index"].as_u64().unwrap() < 1000 && p["score"].as_f64().unwrap() > 0.0);
    }

    // The reference (ONNX Runtime, PIL bilinear resize) gives tiger cat 0.381, Egyptian cat
    // 0.372, tabby 0.161 and espresso 0.957; our in-guest resize and tract may differ a little.
    let (_, v) = s.post("/classify", "image/png", photo("chelsea.png"));
    assert_eq!(labels(&v)[..3], ["tiger cat", "Egyptian cat", "tabby"], "{v}");
    for (label, want) in [("tiger cat", 0.381), ("Egyptian cat", 0.372), ("tabby", 0.161)] {
        let got = score_of(&v, label);
        assert!((got - want).abs() < 0.02, "{label}: {got} vs reference {want}");
    }
    let (_, v) = s.post("/classify", "image/png", photo("coffee.png"));
    assert_eq!(labels(&v)[0], "espresso", "{v}");
    assert!((score_of(&v, "espresso") - 0.957).abs() < 0.02, "{v}");

    let (_, v) = s.post("/classify", "image/jpeg", photo("rocket.jpg"));
    assert!(
        ["missile", "projectile", "space shuttle"].contains(&labels(&v)[0].as_str()),
        "{v}"
    );

    let (_, v) = s.post("/classify", "image/jpeg", photo("grace_hopper.jpg"));
    assert!(labels(&v).iter().any(|l| l == "military uniform"), "{v}");

    // The reference architecture's JSON form, and k.
    let body = serde_json::json!({ "input": b64(&photo("coffee.png")) }).to_string();
    let (status, v) = s.post("/classify?k=3", "application/json", body.into_bytes());
    assert_eq!(status, 200, "{v}");
    assert_eq!(labels(&v).len(), 3);
    assert_eq!(labels(&v)[0], "espresso");

    // Several images in one request: one answer per image, in order, from one batched compute.
    let body =
        serde_json::json!({ "images": [b64(&photo("coffee.png")), b64(&photo("chelsea.png"))] }).to_string();
    let (status, v) = s.post("/classify", "application/json", body.into_bytes());
    assert_eq!(status, 200, "{v}");
    let list = v.as_array().expect("a list for several images");
    assert_eq!(list.len(), 2);
    assert_eq!(labels(&list[0])[0], "espresso");
    assert!(labels(&list[1]).iter().any(|l| CATS.contains(&l.as_str())));
}

/// A PNG whose header claims `w` x `h` pixels, with valid chunk CRCs but no real pixel data.
fn png_claiming(w: u32, h: u32) -> Vec<u8> {
    fn crc32(data: &[u8]) -> u32 {
        let mut c = 0xffff_ffffu32;
        for &b in data {
            c ^= u32::from(b);
            for _ in 0..8 {
                c = if c & 1 != 0 {
                    0xedb8_8320 ^ (c >> 1)
                } else {
                    c >> 1
                };
            }
        }
        !c
    }
    let mut out = b"\x89PNG\r\n\x1a\n".to_vec();
    let mut chunk = b"IHDR".to_vec();
    chunk.extend(w.to_be_bytes());
    chunk.extend(h.to_be_bytes());
    chunk.extend([8, 2, 0, 0, 0]);
    out.extend(13u32.to_be_bytes());
    out.extend(&chunk);
    out.extend(crc32(&chunk).to_be_bytes());
    let idat = b"IDAT\x78\x9c\x03\x00\x00\x00\x00\x01".to_vec();
    out.extend(((idat.len() - 4) as u32).to_be_bytes());
    out.extend(&idat);
    out.extend(crc32(&idat).to_be_bytes());
    out
}

#[test]
fn every_error_has_its_status_and_a_json_body() {
    let s = Server::start("spin.toml", &["--max-body-size", "4194304"]);
    let cat = photo("chelsea.png");

    let (st, v) = s.post("/classify", "image/png", Vec::new());
    assert_error(st, &v, 400, "empty_body");
    let (st, v) = s.post("/classify", "image/png", cat[..cat.len() / 2].to_vec());
    assert_error(st, &v, 400, "invalid_image");
    let (st, v) = s.post("/classify", "image/jpeg", b"this is not a picture".to_vec());
    assert_error(st, &v, 400, "invalid_image");
    let (st, v) = s.post("/classify", "image/png", png_claiming(100_000, 100_000));
    assert_error(st, &v, 400, "image_too_large");
    let (st, v) = s.post("/classify", "text/plain", b"hello".to_vec());
    assert_error(st, &v, 415, "unsupported_media_type");
    let (st, v) = s.post("/classify", "application/json", b"{\"input\": ".to_vec());
    assert_error(st, &v, 400, "invalid_json");
    let (st, v) = s.post("/classify", "application/json", b"{\"input\": \"@@@\"}".to_vec());
    assert_error(st, &v, 400, "invalid_base64");
    let (st, v) = s.post("/classify?k=0", "image/png", cat.clone());
    assert_error(st, &v, 400, "invalid_k");

    let (st, v) = parse(client().get(s.url("/classify")).send().unwrap());
    assert_error(st, &v, 405, "method_not_allowed");
    let (st, v) = parse(client().post(s.url("/nowhere")).body("x").send().unwrap());
    assert_error(st, &v, 404, "not_found");

    // Over the limit: refused on the declared length before any of the body is sent, and
    // on a chunked body without a length once the limit is crossed.
    let head = "POST /classify HTTP/1.1\r\nhost: x\r\ncontent-type: image/png\r\n";
    let (st, v) = s.raw(&format!("{head}content-length: {}\r\n\r\n", 5 << 20), Vec::new());
    assert_error(st, &v, 413, "body_too_large");
    let mut chunked = Vec::new();
    for _ in 0..80 {
        chunked.extend(format!("{:x}\r\n", 64 << 10).as_bytes());
        chunked.extend(vec![0u8; 64 << 10]);
        chunked.extend(b"\r\n");
    }
    let (st, v) = s.raw(&format!("{head}transfer-encoding: chunked\r\n\r\n"), chunked);
    assert_error(st, &v, 413, "body_too_large");

    // None of that hurt the host.
    let (st, v) = s.post("/classify", "image/png", cat);
    assert_eq!(st, 200, "{v}");
}

#[test]
fn thirty_two_concurrent_requests_agree() {
    let s = Arc::new(Server::start("spin.toml", &[]));
    let cat = Arc::new(photo("chelsea.png"));
    let (_, reference) = s.post("/classify", "image/png", cat.to_vec());
    let handles: Vec<_> = (0..32)
        .map(|_| {
            let (s, cat) = (s.clone(), cat.clone());
            std::thread::spawn(move || s.post("/classify", "image/png", cat.to_vec()))
        })
        .collect();
    for h in handles {
        let (status, v) = h.join().unwrap();
        assert_eq!(status, 200, "{v}");
        assert_eq!(v, reference, "a concurrent answer differs");
    }
}

#[test]
fn a_trapping_guest_gets_500_and_the_host_keeps_serving() {
    let s = Server::start("tests/fixtures/faults.toml", &[]);
    for _ in 0..3 {
        let (st, v) = parse(client().get(s.url("/fault/trap")).send().unwrap());
        assert_error(st, &v, 500, "function_failed");
        s.assert_alive();
        let r = client().get(s.url("/fault/ok")).send().unwrap();
        assert_eq!(r.status(), 200);
        assert_eq!(r.text().unwrap(), "ok");
        let (st, v) = s.post("/classify", "image/png", photo("coffee.png"));
        assert_eq!((st, labels(&v)[0].as_str()), (200, "espresso"));
    }
}

#[test]
fn a_guest_sees_only_what_its_manifest_grants() {
    let s = Server::start("tests/fixtures/faults.toml", &[]);
    let r = client().get(s.url("/fault/sandbox")).send().unwrap();
    assert_eq!(r.status(), 200);
    let v: Value = r.json().unwrap();
    let env: Vec<&str> = v["env"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e.as_str().unwrap())
        .collect();
    assert_eq!(env, vec!["GRANTED"], "host environment leaked: {v}");
    assert_eq!(v["host_file_readable"], false, "{v}");
    assert_eq!(v["granted_dir_visible"], true, "{v}");
    let model = v["model"].as_str().unwrap();
    assert!(
        model.contains("NotFound") && model.contains("not available to this component"),
        "{v}"
    );
}

/// A function whose manifest entry does not mount its model's folder could not read the
/// card: the host refuses the manifest at start-up, naming the key and the fix, rather than
/// answering the first request with a 500.
#[test]
fn a_missing_model_mount_is_refused_at_start_with_the_fix() {
    let dir = tempfile::tempdir().unwrap();
    let manifest = classify_manifest_with(
        dir.path(),
        "destination = \"/models/efficientnet-lite0\"",
        "destination = \"/models/elsewhere\"",
    );
    let err = refused_start(&manifest, &[]);
    assert!(
        err.contains("`component.image-classify.files`")
            && err.contains("destination = \"/models/efficientnet-lite0\""),
        "{err}"
    );
}

/// A setting the function cannot read is the deployment's mistake: a 500 that names it, the
/// same in every bundled function, never a silent fall-back to the default.
#[test]
fn a_bad_setting_is_a_500_that_names_it() {
    let dir = tempfile::tempdir().unwrap();
    let manifest = classify_manifest_with(
        dir.path(),
        "SCORIA_MODEL = \"efficientnet-lite0\"",
        "SCORIA_MODEL = \"efficientnet-lite0\", SCORIA_MAX_IMAGES = \"lots\"",
    );
    let s = Server::start(&manifest, &[]);
    let (st, v) = s.post("/classify", "image/jpeg", photo("chelsea.jpg"));
    assert_error(st, &v, 500, "misconfigured");
    assert!(v.to_string().contains("SCORIA_MAX_IMAGES=`lots`"), "{v}");
    s.assert_alive();
}

/// A manifest route that the host's own endpoints would hide is refused at start-up.
#[test]
fn a_route_under_the_hosts_own_endpoints_is_refused_at_start() {
    let dir = tempfile::tempdir().unwrap();
    let manifest = classify_manifest_with(dir.path(), "route = \"/classify\"", "route = \"/metrics\"");
    let err = refused_start(&manifest, &[]);
    assert!(
        err.contains("route `/metrics` is served by the host itself"),
        "{err}"
    );
}

/// `Server-Timing` splits the host's time, so that a client can see what serving added to
/// the inference: waiting for a slot, reading the body, making the instance, inference, total.
#[test]
fn server_timing_splits_the_hosts_time() {
    let s = Server::start("spin.toml", &[]);
    let r = client()
        .post(s.url("/classify"))
        .header("content-type", "image/jpeg")
        .body(photo("chelsea.jpg"))
        .send()
        .unwrap();
    assert_eq!(r.status(), 200);
    let steps = server_timing(r.headers());
    for step in ["queue", "body", "instance", "inference", "total"] {
        assert!(
            steps.get(step).is_some_and(|ms| *ms >= 0.0),
            "{step} in {steps:?}"
        );
    }
    assert!(steps["instance"] > 0.0 && steps["inference"] > 0.0, "{steps:?}");
    let parts = steps["queue"] + steps["body"] + steps["instance"] + steps["inference"];
    assert!(
        parts <= steps["total"] + 0.01,
        "the steps add up to more than the total: {steps:?}"
    );
}

/// Answers, errors included, carry their length: sent chunked, the client waited for the
/// chunked body's end after the head.
#[test]
fn answers_carry_their_length() {
    let s = Server::start("spin.toml", &[]);
    let requests = [
        ("POST", "image/jpeg", photo("chelsea.jpg"), 200),
        ("POST", "text/plain", b"not an image".to_vec(), 415),
        ("GET", "image/jpeg", Vec::new(), 405),
    ];
    for (method, ct, body, want) in requests {
        let r = client()
            .request(method.parse().unwrap(), s.url("/classify"))
            .header("content-type", ct)
            .body(body)
            .send()
            .unwrap();
        assert_eq!(r.status().as_u16(), want);
        assert!(
            r.headers().get("transfer-encoding").is_none(),
            "{method} {ct}: chunked"
        );
        let length: usize = r.headers()["content-length"].to_str().unwrap().parse().unwrap();
        let text = r.text().unwrap();
        assert_eq!(length, text.len(), "{text}");
        assert!(serde_json::from_str::<Value>(&text).is_ok(), "{text}");
    }
}

/// Every request gets a fresh instance unless the manifest says otherwise: `/fault/count`
/// reports how many requests its instance has served.
#[test]
fn instances_serve_one_request_unless_the_manifest_lets_them_serve_more() {
    let count = |s: &Server, path: &str| -> u32 {
        let r = client().get(s.url(path)).send().unwrap();
        assert_eq!(r.status(), 200, "{path}");
        r.text().unwrap().parse().unwrap()
    };
    let s = Server::start("tests/fixtures/faults.toml", &[]);
    let fresh: Vec<u32> = (0..5).map(|_| count(&s, "/fault/count")).collect();
    assert_eq!(fresh, vec![1; 5], "state survived from one request to the next");
    drop(s);

    // The same manifest with `instance_reuse = 3` for fault-test, its paths made absolute.
    let root = root();
    let text = std::fs::read_to_string(root.join("tests/fixtures/faults.toml"))
        .unwrap()
        .replace("../../", &format!("{}/", root.display()))
        .replace("\"../data\"", &format!("\"{}/tests/data\"", root.display()))
        .replace(
            "environment = { GRANTED = \"yes\" }",
            "environment = { GRANTED = \"yes\" }\ntool.scoria.instance_reuse = 3",
        )
        .replace(
            "[component.image-classify.tool.scoria]\n",
            "[component.image-classify.tool.scoria]\ninstance_reuse = 8\n",
        );
    let dir = tempfile::tempdir().unwrap();
    let manifest = dir.path().join("spin.toml");
    std::fs::write(&manifest, text).unwrap();
    let s = Server::start(manifest.to_str().unwrap(), &[]);
    let mut seen = Vec::new();
    for _ in 0..9 {
        seen.push(count(&s, "/fault/count"));
        // Time for the instance to offer itself for the next request.
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    assert!(seen.iter().all(|&n| (1..=3).contains(&n)), "{seen:?}");
    assert!(
        seen.iter().any(|&n| n > 1),
        "no instance served a second request: {seen:?}"
    );
    // A trap ends the instance it happens in; the next request starts afresh, and the other
    // components still get a fresh instance each.
    let r = client().get(s.url("/fault/trap")).send().unwrap();
    assert_eq!(r.status(), 500);
    assert_eq!(count(&s, "/fault/count"), 1);
    let again: Vec<u32> = (0..3).map(|_| count(&s, "/allowed/count")).collect();
    assert_eq!(again, vec![1; 3]);
    // A reused image-classify (its card and labels kept from the first request) answers as a
    // fresh one does, photo after photo.
    for (file, want) in [
        ("coffee.png", "espresso"),
        ("chelsea.png", "tiger cat"),
        ("coffee.png", "espresso"),
    ] {
        let (status, v) = s.post("/classify", "image/png", photo(file));
        assert_eq!(status, 200, "{v}");
        assert_eq!(labels(&v)[0], want, "{file}: {v}");
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    s.assert_alive();
}

#[test]
fn health_and_readiness() {
    let s = Server::start("spin.toml", &[]);
    let (st, v) = parse(client().get(s.url("/healthz")).send().unwrap());
    assert_eq!((st, v["status"].as_str()), (200, Some("ok")));
    let (st, v) = parse(client().get(s.url("/readyz")).send().unwrap());
    assert_eq!((st, v["status"].as_str()), (200, Some("ready")));
    let r = client()
        .post(s.url("/classify"))
        .header("content-type", "image/png")
        .body(photo("coffee.png"))
        .send()
        .unwrap();
    assert!(r.headers().contains_key("x-request-id"));
}

#[test]
fn outbound_http_goes_only_to_allowed_hosts() {
    let s = Server::start("tests/fixtures/faults.toml", &[]);
    let target = s.url("/healthz");
    let denied = client()
        .get(s.url(&format!("/fault/outbound?url={target}")))
        .send()
        .unwrap()
        .text()
        .unwrap();
    assert!(
        denied.starts_with("failed") && denied.contains("HttpRequestDenied"),
        "{denied}"
    );
    let allowed = client()
        .get(s.url(&format!("/allowed/outbound?url={target}")))
        .send()
        .unwrap()
        .text()
        .unwrap();
    assert_eq!(allowed, "reached: 200");
}

#[test]
fn wasip2_components_are_served_too() {
    let s = Server::start("tests/fixtures/faults.toml", &[]);
    let r = client().post(s.url("/p2/echo?x=1")).body("hi").send().unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(
        r.text().unwrap(),
        "hello from p2 (v1): Method::Post /p2/echo?x=1\n"
    );
}

#[test]
fn model_commands_list_and_check_the_repository() {
    let scoria = env!("CARGO_BIN_EXE_scoria");
    let out = Command::new(scoria)
        .current_dir(root())
        .args(["models", "list"])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}");
    assert!(
        text.contains("efficientnet-lite0") && text.contains("pretrained") && text.contains("present"),
        "{text}"
    );

    let out = Command::new(scoria)
        .current_dir(root())
        .args(["models", "check"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stdout));

    // A copy of the repository with one corrupted label file fails the check and names it.
    let t = tempfile::tempdir().unwrap();
    let dir = t.path().join("efficientnet-lite0");
    std::fs::create_dir(&dir).unwrap();
    let src = root().join("models/efficientnet-lite0");
    for f in ["model.toml", "efficientnet-lite0.onnx"] {
        std::fs::copy(src.join(f), dir.join(f)).unwrap();
    }
    std::fs::write(dir.join("imagenet-labels.txt"), "not the labels\n").unwrap();
    let out = Command::new(scoria)
        .args(["models", "check", "--models-dir"])
        .arg(t.path())
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(!out.status.success());
    assert!(
        text.contains("FAILED") && text.contains("imagenet-labels.txt"),
        "{text}"
    );
}

#[test]
fn a_preprocessed_tensor_gets_the_answer_its_photo_gets() {
    // The client preprocesses as the card says (the same `vision` code the function runs)
    // and sends the float32 NCHW tensor, as a Triton or KServe client would.
    let entry = scoria::models::Repository::new(root().join("models"))
        .get("efficientnet-lite0")
        .unwrap();
    let pre: vision::Preprocess = entry.card.preprocess.clone().unwrap().try_into().unwrap();
    let img = vision::decode(&photo("chelsea.png"), 40_000_000).unwrap();
    let mut data = Vec::new();
    vision::to_tensor(&img, &pre, &pre.affine().unwrap(), &mut data);
    let tensor: Vec<u8> = data.iter().flat_map(|v| v.to_le_bytes()).collect();

    let s = Server::start("spin.toml", &[]);
    let (status, from_photo) = s.post("/classify", "image/png", photo("chelsea.png"));
    assert_eq!(status, 200, "{from_photo}");
    let (status, from_tensor) = s.post("/classify", "application/x-tensor", tensor.clone());
    assert_eq!(status, 200, "{from_tensor}");
    assert_eq!(from_tensor["predictions"], from_photo["predictions"]);

    // Two images in one tensor: a list of two answers.
    let (status, two) = s.post(
        "/classify",
        "application/x-tensor",
        [tensor.clone(), tensor.clone()].concat(),
    );
    assert_eq!(status, 200, "{two}");
    assert_eq!(two.as_array().map(Vec::len), Some(2), "{two}");

    // A length that is not a whole number of images, or no image at all.
    for body in [tensor[..tensor.len() - 4].to_vec(), Vec::new()] {
        let (status, v) = s.post("/classify", "application/x-tensor", body);
        assert_error(status, &v, 400, "invalid_tensor");
    }
    // All NaN, all infinite, or one NaN among real pixels: not an image.
    let filled = |v: f32| -> Vec<u8> { v.to_le_bytes().repeat(tensor.len() / 4) };
    let mut one_nan = tensor.clone();
    one_nan[400..404].copy_from_slice(&f32::NAN.to_le_bytes());
    for body in [
        filled(f32::NAN),
        filled(f32::INFINITY),
        filled(f32::NEG_INFINITY),
        one_nan,
    ] {
        let (status, v) = s.post("/classify", "application/x-tensor", body);
        assert_error(status, &v, 400, "invalid_tensor");
    }
    let (status, again) = s.post("/classify", "application/x-tensor", tensor.clone());
    assert_eq!((status, &again["predictions"]), (200, &from_photo["predictions"]));
    s.assert_alive();
}
