//! FAQ matching end to end: the real host serving the faq-match function with the real
//! MiniLM model, real questions, and a second FAQ list indexed by the real `scoria index`.
//!
//! Needs what `./dev setup` produces: the built functions, models/all-minilm-l6-v2 and the
//! second list in .cache/faq (from the PyPI package zaragoza-construction-faq).

mod common;

use common::*;
use serde_json::{Value, json};
use std::path::Path;
use std::process::Command;

/// One line of faq/javascript-eval.jsonl.
struct Case {
    question: String,
    expected: Option<String>,
}

fn eval_set() -> Vec<Case> {
    std::fs::read_to_string(root().join("faq/javascript-eval.jsonl"))
        .expect("faq/javascript-eval.jsonl")
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| {
            let v: Value = serde_json::from_str(l).expect("eval line is JSON");
            Case {
                question: v["question"].as_str().expect("question").to_string(),
                expected: v["expected"].as_str().map(str::to_owned),
            }
        })
        .collect()
}

fn ask(s: &Server, body: Value) -> (u16, Value) {
    s.post("/faq", "application/json", body.to_string().into_bytes())
}

fn ids(v: &Value) -> Vec<String> {
    v["matches"]
        .as_array()
        .unwrap_or_else(|| panic!("no matches in {v}"))
        .iter()
        .map(|m| m["id"].as_str().unwrap().to_string())
        .collect()
}

/// Paraphrase accuracy on the development set, and no confident answer for questions the
/// list does not cover, as deployed (cosine + 0.7 x BM25, minimum 0.55). Top-1 and top-3 sit a
/// few points under the measured figures (78.9%, 91.5%; `./dev faq-eval`), so a regression in
/// tokenising, pooling, the index, the lexical scores or the model fails here; unrelated
/// questions are held to the target (at most 10% matched; 1 of 40 measured). The targets of
/// 90% top-1 and 98% top-3 are not met yet (docs/faq.md).
#[test]
fn paraphrases_find_their_entry_and_unrelated_questions_find_none() {
    let s = Server::start("spin.toml", &[]);
    let cases = eval_set();
    let (mut n, mut top1, mut top3, mut none, mut false_matches) = (0, 0, 0, 0, 0);
    for c in &cases {
        let (status, v) = ask(&s, json!({"question": c.question, "k": 3, "min_score": -1}));
        assert_eq!(status, 200, "{}: {v}", c.question);
        let got = ids(&v);
        match &c.expected {
            Some(want) => {
                n += 1;
                top1 += usize::from(got.first() == Some(want));
                top3 += usize::from(got.contains(want));
            }
            None => {
                // Asked again with the deployed minimum score (`faq_min_score` in spin.toml).
                none += 1;
                let (_, v) = ask(&s, json!({"question": c.question}));
                if v["no_match"] != true {
                    false_matches += 1;
                }
            }
        }
    }
    let (r1, r3) = (top1 as f64 / n as f64, top3 as f64 / n as f64);
    println!("top-1 {r1:.3}, top-3 {r3:.3} on {n}; {false_matches}/{none} false matches");
    assert!(n >= 220 && none >= 40, "the evaluation set shrank: {n} + {none}");
    assert!(r1 >= 0.76, "top-1 accuracy {r1:.3} < 0.76");
    assert!(r3 >= 0.89, "top-3 accuracy {r3:.3} < 0.89");
    assert!(
        false_matches * 10 <= none,
        "{false_matches} of {none} unrelated questions matched (the target is at most 10%)"
    );
}

#[test]
fn every_request_form_gets_ranked_matches() {
    let s = Server::start("spin.toml", &[]);

    let (status, v) = ask(
        &s,
        json!({"question": "how do I get rid of repeated values in a list", "k": 3}),
    );
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["model"], "all-minilm-l6-v2");
    assert_eq!(v["index"], "faq-javascript");
    assert_eq!(v["no_match"], false);
    assert_eq!(ids(&v)[0], "array-dedupe", "{v}");
    let matches = v["matches"].as_array().unwrap();
    assert!(!matches.is_empty() && matches.len() <= 3, "{v}");
    let scores: Vec<f64> = matches.iter().map(|m| m["score"].as_f64().unwrap()).collect();
    assert!(
        scores.windows(2).all(|w| w[0] >= w[1]),
        "not best first: {scores:?}"
    );
    // At least the deployed minimum, at most a cosine of 1 plus the lexical weight.
    assert!(scores.iter().all(|&x| (0.55..=1.7001).contains(&x)), "{scores:?}");
    for m in matches {
        let (score, cosine, lexical) = (
            m["score"].as_f64().unwrap(),
            m["cosine"].as_f64().unwrap(),
            m["lexical"].as_f64().unwrap(),
        );
        assert!((score - (cosine + 0.7 * lexical)).abs() < 1e-4, "{m}");
        assert!((0.0..=1.0).contains(&lexical), "{m}");
    }
    assert!(
        matches[0]["question"].as_str().unwrap().contains("duplicate"),
        "{v}"
    );
    assert!(matches[0]["answer"].as_str().unwrap().contains("Set"), "{v}");

    // The reference architecture's form.
    let (status, v) = ask(&s, json!({"input": "0.1 + 0.2 is not 0.3"}));
    assert_eq!(status, 200, "{v}");
    assert_eq!(ids(&v)[0], "number-float-precision", "{v}");
    assert!(v["matches"].as_array().unwrap().len() <= 5);

    // A plain-text body, with k in the query string.
    let r = client()
        .post(s.url("/faq?k=1"))
        .header("content-type", "text/plain; charset=utf-8")
        .body("TypeError: Converting circular structure to JSON")
        .send()
        .unwrap();
    let steps = server_timing(r.headers());
    let (status, v) = parse(r);
    assert_eq!(status, 200, "{v}");
    assert_eq!(ids(&v), vec!["json-circular"], "{v}");
    for step in [
        "cards",
        "tokenizer",
        "tokenize",
        "embed",
        "match",
        "inference",
        "total",
    ] {
        assert!(steps.contains_key(step), "{step} in {steps:?}");
    }

    // Far from every entry: an empty list and the flag, never a confident wrong answer.
    let (status, v) = ask(&s, json!({"question": "what is a good recipe for banana bread"}));
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["no_match"], true, "{v}");
    assert_eq!(v["matches"], json!([]), "{v}");
}

#[test]
fn bad_questions_get_4xx_json_errors_and_harm_nothing() {
    let s = Server::start("spin.toml", &[]);
    let cases: Vec<(&str, Vec<u8>, u16, &str)> = vec![
        (
            "application/json",
            b"{\"question\": ".to_vec(),
            400,
            "invalid_json",
        ),
        ("application/json", b"[1, 2]".to_vec(), 400, "invalid_json"),
        (
            "application/json",
            br#"{"question": "a", "input": "b"}"#.to_vec(),
            400,
            "invalid_json",
        ),
        (
            "application/json",
            br#"{"questoin": "typo"}"#.to_vec(),
            400,
            "invalid_json",
        ),
        (
            "application/json",
            br#"{"question": "   "}"#.to_vec(),
            400,
            "empty_question",
        ),
        (
            "application/json",
            br#"{"question": "sort", "k": 0}"#.to_vec(),
            400,
            "invalid_k",
        ),
        (
            "application/json",
            br#"{"question": "sort", "min_score": 7}"#.to_vec(),
            400,
            "invalid_min_score",
        ),
        (
            "application/json",
            br#"{"question": "sort", "lexical_weight": -1}"#.to_vec(),
            400,
            "invalid_lexical_weight",
        ),
        ("text/plain", Vec::new(), 400, "empty_question"),
        ("text/plain", b"caf\xc3 \xff\xfe".to_vec(), 400, "invalid_utf8"),
        (
            "application/json",
            b"{\"question\": \"\xff\"}".to_vec(),
            400,
            "invalid_utf8",
        ),
        (
            "text/plain",
            "why ".repeat(2100).into_bytes(),
            413,
            "question_too_large",
        ),
        (
            "application/json",
            json!({"question": "x".repeat(9000)}).to_string().into_bytes(),
            413,
            "question_too_large",
        ),
        (
            "image/png",
            b"sort numbers".to_vec(),
            415,
            "unsupported_media_type",
        ),
    ];
    for (ct, body, status, code) in cases {
        let (got, v) = s.post("/faq", ct, body);
        assert_error(got, &v, status, code);
    }
    let r = client().get(s.url("/faq")).send().unwrap();
    let (status, v) = parse(r);
    assert_error(status, &v, 405, "method_not_allowed");

    // 8 KiB is the limit, not less: a long but legal question is answered (truncated to the
    // model's 256 tokens).
    let long = "how do I sort an array of numbers ".repeat(200);
    assert!(long.len() < 8192);
    let (status, v) = s.post("/faq", "text/plain", long.into_bytes());
    assert_eq!(status, 200, "{v}");
    // A body too big to hold any question within the limit is refused by its size, and the
    // answer says it is the body's.
    let (status, v) = s.post("/faq", "text/plain", "x".repeat(60_000).into_bytes());
    assert_error(status, &v, 413, "question_too_large");
    let msg = v["error"]["message"].as_str().unwrap_or_default();
    assert!(msg.contains("the request body has 60000 bytes"), "{v}");
    s.assert_alive();
    let (status, v) = ask(&s, json!({"question": "sort numbers correctly"}));
    assert_eq!((status, ids(&v)[0].as_str()), (200, "array-sort-numbers"), "{v}");
}

/// `<dir>/models`, a model repository holding (a link to) the embedding model alone, where
/// a test builds its own index.
fn repository_with_minilm(dir: &Path) -> std::path::PathBuf {
    let models = dir.join("models");
    std::fs::create_dir_all(&models).unwrap();
    std::os::unix::fs::symlink(
        root().join("models/all-minilm-l6-v2"),
        models.join("all-minilm-l6-v2"),
    )
    .unwrap();
    models
}

/// A manifest in `dir` serving the list `dir/help.jsonl` as the index `faq-help`, built from
/// `models` at start-up.
fn help_manifest(dir: &Path, models: &Path) -> std::path::PathBuf {
    faq_manifest(
        dir,
        models,
        "faq-help",
        "",
        r#"[component.faq-match.tool.scoria.indexes.faq-help]
list = "help.jsonl"
embedding_model = "all-minilm-l6-v2"
licence = "CC0-1.0"
"#,
    )
}

/// A second list is one `scoria index` command and a manifest change, with the same
/// function binary; the manifest declares the list, and a changed list is re-indexed at
/// start-up.
#[test]
fn a_second_faq_list_is_served_without_rebuilding_the_function() {
    let list_src = root().join(".cache/faq/zaragoza-en.jsonl");
    assert!(
        list_src.is_file(),
        "{} is missing; run ./dev setup",
        list_src.display()
    );
    let tmp = tempfile::tempdir().unwrap();
    let models = repository_with_minilm(tmp.path());
    let list = tmp.path().join("zaragoza.jsonl");
    std::fs::copy(&list_src, &list).unwrap();

    let out = Command::new(env!("CARGO_BIN_EXE_scoria"))
        .current_dir(root())
        .args(["index", "faq-zaragoza", "--licence", "CC-BY-4.0", "--list"])
        .arg(&list)
        .arg("--models-dir")
        .arg(&models)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("503 entries"), "{stdout}");

    let manifest = faq_manifest(
        tmp.path(),
        &models,
        "faq-zaragoza",
        r#", SCORIA_MAX_QUESTION_BYTES = "200""#,
        r#"[component.faq-match.tool.scoria.indexes.faq-zaragoza]
list = "zaragoza.jsonl"
embedding_model = "all-minilm-l6-v2"
licence = "CC-BY-4.0"
"#,
    );
    let manifest = manifest.to_str().unwrap();
    let ask_zaragoza = |s: &Server, q: &str| {
        let (status, v) = ask(s, json!({"question": q, "k": 3}));
        assert_eq!(status, 200, "{q}: {v}");
        assert_eq!(v["index"], "faq-zaragoza");
        v
    };

    {
        let s = Server::start_with_models(manifest, &models, &[]);
        let v = ask_zaragoza(
            &s,
            "how many weeks does the municipality take to decide on a building permit",
        );
        assert_eq!(ids(&v)[0], "bygglov-002", "{v}");
        assert!(
            v["matches"][0]["answer"].as_str().unwrap().contains("weeks"),
            "{v}"
        );
        // The manifest's own limit on question size applies.
        let (status, v) = s.post("/faq", "text/plain", "why ".repeat(60).into_bytes());
        assert_error(status, &v, 413, "question_too_large");
        assert!(
            !s.log().contains("index built"),
            "the fresh index was rebuilt:\n{}",
            s.log()
        );
    }

    // Add an entry: the next start sees the list's new digest, re-indexes, and serves it.
    let mut text = std::fs::read_to_string(&list).unwrap();
    text.push_str(&format!(
        "{}\n",
        json!({"id": "test-001", "question": "Can I keep bees on the roof of a terraced house?", "answer": "Test entry."})
    ));
    std::fs::write(&list, text).unwrap();
    let s = Server::start_with_models(manifest, &models, &[]);
    assert!(s.log().contains("index built"), "{}", s.log());
    let v = ask_zaragoza(&s, "beekeeping on my rooftop, is it allowed?");
    assert_eq!(ids(&v)[0], "test-001", "{v}");
    assert_eq!(v["matches"][0]["answer"], "Test entry.");
    assert!(Path::new(&models.join("faq-zaragoza/entries.jsonl")).is_file());
}

/// With `instance_reuse`, faq-match keeps its cards and tokenizer from one request to the
/// next in the same instance; its answers must be exactly a fresh instance's.
#[test]
fn a_reused_instance_answers_as_fresh_ones_do() {
    let fresh = Server::start("spin.toml", &[]);
    let tmp = tempfile::tempdir().unwrap();
    let manifest = faq_manifest(
        tmp.path(),
        &root().join("models"),
        "faq-javascript",
        "",
        "instance_reuse = 16\n",
    );
    let reused = Server::start(manifest.to_str().unwrap(), &[]);
    let mut kept_tokenizer = 0;
    for c in eval_set().iter().take(30) {
        let body = json!({"question": c.question, "k": 3, "min_score": -1});
        assert_eq!(
            ask(&fresh, body.clone()),
            ask(&reused, body.clone()),
            "{}",
            c.question
        );
        // The guest's `tokenizer` step: building it takes tenths of a millisecond.
        let r = client()
            .post(reused.url("/faq"))
            .header("content-type", "application/json")
            .body(body.to_string())
            .send()
            .unwrap();
        let built_ms = *server_timing(r.headers())
            .get("tokenizer")
            .expect("a tokenizer step");
        kept_tokenizer += usize::from(built_ms < 0.05);
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    assert!(
        kept_tokenizer > 0,
        "no request found its instance's tokenizer kept"
    );
}

/// An entry's `alternatives` are indexed beside its question, and the entry scores as its
/// best phrasing: a question worded like an alternative finds the entry, with a higher score
/// than the same list without alternatives gives it.
#[test]
fn an_entrys_alternatives_find_it() {
    let tmp = tempfile::tempdir().unwrap();
    let models = repository_with_minilm(tmp.path());
    let list = tmp.path().join("help.jsonl");
    let entries = |alternatives: bool| {
        let reset = if alternatives {
            json!({"id": "reset", "question": "How do I reset my password?",
                   "alternatives": ["I am locked out and cannot sign in", "forgot my login credentials"]})
        } else {
            json!({"id": "reset", "question": "How do I reset my password?"})
        };
        [
            reset,
            json!({"id": "invoice", "question": "Where can I download my invoices?"}),
            json!({"id": "delete", "question": "How do I close my account for good?"}),
        ]
        .iter()
        .map(|e| format!("{e}\n"))
        .collect::<String>()
    };
    let manifest = help_manifest(tmp.path(), &models);
    let manifest = manifest.to_str().unwrap();
    let question = json!({"question": "I'm locked out, I can't sign in anymore", "k": 3, "min_score": 0.0});
    let score_of_reset = |alternatives: bool| {
        std::fs::write(&list, entries(alternatives)).unwrap();
        let s = Server::start_with_models(manifest, &models, &[]);
        let (status, v) = ask(&s, question.clone());
        assert_eq!(status, 200, "{v}");
        let reset = v["matches"]
            .as_array()
            .unwrap()
            .iter()
            .find(|m| m["id"] == "reset")
            .unwrap()["score"]
            .as_f64();
        (ids(&v)[0].clone(), reset.unwrap(), v)
    };
    let (_, plain, _) = score_of_reset(false);
    let (first, with_alternatives, v) = score_of_reset(true);
    assert_eq!(first, "reset", "{v}");
    assert!(
        with_alternatives > plain + 0.1,
        "{plain} without alternatives, {with_alternatives} with: {v}"
    );
}

/// An entry's `body` is matched word for word: its HTML is stripped when the list is indexed,
/// and a question quoting an error message from it finds the entry through the lexical score,
/// which `lexical_weight` 0 turns off.
#[test]
fn an_entrys_body_finds_it_by_its_words() {
    let tmp = tempfile::tempdir().unwrap();
    let models = repository_with_minilm(tmp.path());
    let entries = [
        json!({"id": "cors", "question": "Why does my call to another site fail?",
               "body": "<p>The console says <code>No &#39;Access-Control-Allow-Origin&#39; header is present on the requested resource</code>.</p>"}),
        json!({"id": "parse", "question": "Why does reading my settings fail?",
               "body": "<p>I get <code>SyntaxError: Unexpected token &lt; in JSON at position 0</code></p>"}),
        json!({"id": "slow", "question": "Why is my page so slow to load?"}),
    ];
    let list: String = entries.iter().map(|e| format!("{e}\n")).collect();
    std::fs::write(tmp.path().join("help.jsonl"), list).unwrap();
    let manifest = help_manifest(tmp.path(), &models);
    let s = Server::start_with_models(manifest.to_str().unwrap(), &models, &[]);
    for (question, want) in [
        ("Access-Control-Allow-Origin header is present", "cors"),
        ("Unexpected token < in JSON at position 0", "parse"),
    ] {
        let (status, v) = ask(&s, json!({"question": question, "k": 3, "min_score": -1}));
        assert_eq!(status, 200, "{v}");
        let first = &v["matches"][0];
        assert_eq!(first["id"], want, "{v}");
        assert!(first["lexical"].as_f64().unwrap() > 0.2, "{v}");
        let (_, v) = ask(
            &s,
            json!({"question": question, "k": 3, "min_score": -1, "lexical_weight": 0}),
        );
        let lexical: Vec<f64> = v["matches"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| m["lexical"].as_f64().unwrap())
            .collect();
        assert!(lexical.iter().all(|&l| l == 0.0), "{v}");
    }
    // The stripped body is indexed, not shown: answers never carry it.
    let (_, v) = ask(&s, json!({"question": "CORS error", "min_score": -1}));
    assert!(
        !v.to_string().contains("body") && !v.to_string().contains("<code>"),
        "{v}"
    );
    let entries = std::fs::read_to_string(models.join("faq-help/entries.jsonl")).unwrap();
    assert!(!entries.contains("Access-Control"), "{entries}");
}
