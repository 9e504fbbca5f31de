//! The demo page in a real browser: Debian's chromium, headless, driven by
//! `tests/browser/demo.py` (Selenium and chromium-driver) against the real `scoria up`, with
//! the test photos and questions. `./dev setup` installs the driver and the browser.

mod common;

use common::*;
use std::path::PathBuf;
use std::process::Command;

/// Run the browser script against `s`; its screenshots go to a folder named after `name`.
fn drive(s: &Server, name: &str, extra: &[&str]) {
    let python = root().join(".cache/venv/bin/python");
    assert!(
        python.exists(),
        "{} is missing: run `./dev setup` (it installs selenium and chromium)",
        python.display()
    );
    let shots = PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
        .join("demo-screenshots")
        .join(name);
    let _ = std::fs::remove_dir_all(&shots);
    let out = Command::new(python)
        .current_dir(root())
        .arg("tests/browser/demo.py")
        .args(["--url", &s.base, "--screenshots"])
        .arg(&shots)
        .args(extra)
        .output()
        .expect("running tests/browser/demo.py");
    let report = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success(),
        "the page failed in the browser (screenshots in {}):\n{report}\nhost log:\n{}",
        shots.display(),
        s.log()
    );
    eprintln!("screenshots: {}\n{report}", shots.display());
}

#[test]
fn the_demo_page_classifies_photos_and_answers_questions_in_a_browser() {
    let s = Server::start("spin.toml", &[]);
    drive(&s, "open", &[]);
}

#[test]
fn the_demo_page_asks_for_a_key_once_the_host_wants_one() {
    let keys = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(keys.path(), "demo-page-key-000000001\n").unwrap();
    let s = Server::start("spin.toml", &["--api-keys-file", keys.path().to_str().unwrap()]);
    drive(&s, "keys", &["--api-key", "demo-page-key-000000001"]);
}
