//! Tabular models (scikit-learn pipelines) end to end, through the real `scoria up` over
//! HTTP: every shipped example answers its held-out records as scikit-learn's own `predict`
//! and `predict_proba` do, on every backend that can load it; a batch answers as its
//! records one by one; bad records get a 400 naming the record and the feature; a graph
//! tract cannot run is refused by `--backend tract` and served by ONNX Runtime under `auto`;
//! and the documented conversion command turns a fitted pipeline into a model that serves.
//!
//! Needs what `./dev setup` produces: `models/tabular/build.py`'s models, with scikit-learn's
//! predictions in each `holdout.json`, and ONNX Runtime's library.

mod common;

use common::*;
use serde_json::{Value, json};
use std::path::Path;
use std::process::Command;

/// The examples tract runs, and one it cannot (its `SVMClassifier`).
const ON_TRACT: [&str; 3] = ["breast-cancer", "diabetes", "diabetes-risk"];
const ORT_ONLY: &str = "iris-svm";

/// A manifest in `dir` serving each of `models` at `/predict/<name>` with the `predict`
/// component, and a `.cache` link beside it (ONNX Runtime's library, `auto`'s records).
fn manifest(dir: &Path, models: &[&str]) -> String {
    manifest_for(dir, &root().join("models"), models)
}

/// [`manifest`] with the models from the repository `repo`.
fn manifest_for(dir: &Path, repo: &Path, models: &[&str]) -> String {
    let wasm = root().join("functions/target/wasm32-wasip2/release/predict.wasm");
    let mut text = String::from("spin_manifest_version = 2\n[application]\nname = \"tabular\"\n");
    for m in models {
        text += &format!(
            r#"[[trigger.scoria]]
route = "/predict/{m}"
component = "{m}"
[component.{m}]
source = "{wasm}"
files = [{{ source = "{repo}/{m}", destination = "/models/{m}" }}]
environment = {{ SCORIA_MODEL = "{m}" }}
[component.{m}.tool.scoria]
models = ["{m}"]
"#,
            wasm = wasm.display(),
            repo = repo.display()
        );
    }
    let _ = std::os::unix::fs::symlink(root().join(".cache"), dir.join(".cache"));
    let path = dir.join("spin.toml");
    std::fs::write(&path, text).unwrap();
    path.display().to_string()
}

fn serve(dir: &Path, models: &[&str], backend: &str) -> Server {
    Server::start_with_models(
        &manifest(dir, models),
        &root().join("models"),
        &["--backend", backend],
    )
}

/// `models/<name>/holdout.json`: the records and scikit-learn's answers for them.
fn holdout(name: &str) -> Value {
    let p = root().join("models").join(name).join("holdout.json");
    let text = std::fs::read_to_string(&p)
        .unwrap_or_else(|e| panic!("{}: {e}; run `./dev setup` first", p.display()));
    serde_json::from_str(&text).unwrap()
}

/// The class labels of `model`'s card, in the order of scikit-learn's probability columns.
fn classes(model: &str) -> Vec<String> {
    let card = std::fs::read_to_string(root().join("models").join(model).join("model.toml")).unwrap();
    let card: toml::Table = toml::from_str(&card).unwrap();
    card["preprocess"]
        .get("classes")
        .and_then(|c| c.as_array())
        .map(|c| c.iter().map(|x| x.as_str().unwrap().to_string()).collect())
        .unwrap_or_default()
}

/// A prediction's numbers: its probabilities in `classes` order, or its value.
fn numbers(p: &Value, classes: &[String]) -> Vec<f64> {
    match p.get("probabilities") {
        Some(probs) => classes.iter().map(|c| probs[c].as_f64().unwrap()).collect(),
        None => vec![p["value"].as_f64().unwrap()],
    }
}

fn predict(s: &Server, model: &str, records: &[Value]) -> (u16, Value) {
    let body = serde_json::to_vec(&json!({ "instances": records })).unwrap();
    s.post(&format!("/predict/{model}"), "application/json", body)
}

/// Scoria's answers for every held-out record of `model` (one request) against
/// scikit-learn's: the same class and probabilities within 1e-5, or values within 1e-4
/// relative. Returns the predictions.
fn matches_scikit_learn(s: &Server, model: &str) -> Vec<Value> {
    matches_scikit_learn_as(s, model, model)
}

/// [`matches_scikit_learn`] for `model` served under the name `served`.
fn matches_scikit_learn_as(s: &Server, model: &str, served: &str) -> Vec<Value> {
    let fx = holdout(model);
    let records = fx["records"].as_array().unwrap();
    let (status, v) = predict(s, served, records);
    assert_eq!(status, 200, "{model}: {v}");
    let got = v["predictions"].as_array().unwrap().clone();
    assert_eq!(got.len(), records.len(), "{model}");
    for (i, p) in got.iter().enumerate() {
        match fx.get("predict_proba") {
            Some(proba) => {
                assert_eq!(p["label"], fx["predict"][i], "{model} record {i}: {p}");
                let probs = numbers(p, &classes(model));
                let want: Vec<f64> = proba[i]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|x| x.as_f64().unwrap())
                    .collect();
                assert_eq!(probs.len(), want.len(), "{model} record {i}");
                for (g, w) in probs.iter().zip(&want) {
                    assert!(
                        (g - w).abs() <= 1e-5,
                        "{model} record {i}: {probs:?} against {want:?}"
                    );
                }
            }
            None => {
                let (g, w) = (p["value"].as_f64().unwrap(), fx["predict"][i].as_f64().unwrap());
                assert!(
                    (g - w).abs() <= 1e-4 * w.abs().max(1.0),
                    "{model} record {i}: {g} against {w}"
                );
            }
        }
    }
    got
}

#[test]
fn every_example_answers_as_scikit_learn_on_every_backend_that_loads_it() {
    let (d1, d2) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let tract = serve(d1.path(), &ON_TRACT, "tract");
    let mut all = ON_TRACT.to_vec();
    all.push(ORT_ONLY);
    let ort = serve(d2.path(), &all, "onnxruntime");
    for model in ON_TRACT {
        assert!(
            tract.log().contains(&format!("model={model} backend=\"tract\"")),
            "{}",
            tract.log()
        );
        let a = matches_scikit_learn(&tract, model);
        let b = matches_scikit_learn(&ort, model);
        // And tract's own operators (Scaler, Imputer, OneHotEncoder, TreeEnsembleRegressor)
        // against ONNX Runtime's, record by record.
        let classes = classes(model);
        for (x, y) in a.iter().zip(&b) {
            for (p, q) in numbers(x, &classes).iter().zip(numbers(y, &classes)) {
                assert!(
                    (p - q).abs() <= 1e-5 * q.abs().max(1.0),
                    "{model}: tract {x} against onnxruntime {y}"
                );
            }
        }
    }
    matches_scikit_learn(&ort, ORT_ONLY);
}

#[test]
fn a_batch_of_256_records_answers_as_256_single_requests() {
    let dir = tempfile::tempdir().unwrap();
    let s = serve(dir.path(), &["breast-cancer", "diabetes-risk"], "tract");
    for model in ["breast-cancer", "diabetes-risk"] {
        let fx = holdout(model);
        let records: Vec<Value> = fx["records"]
            .as_array()
            .unwrap()
            .iter()
            .cycle()
            .take(256)
            .cloned()
            .collect();
        let (status, batch) = predict(&s, model, &records);
        assert_eq!(status, 200, "{batch}");
        let batch = batch["predictions"].as_array().unwrap();
        assert_eq!(batch.len(), 256);
        for (i, r) in records.iter().enumerate() {
            let (status, one) = predict(&s, model, std::slice::from_ref(r));
            assert_eq!(status, 200, "{one}");
            let one = &one["predictions"][0];
            assert_eq!(one["label"], batch[i]["label"], "{model} record {i}");
            for (c, p) in one["probabilities"].as_object().unwrap() {
                let q = batch[i]["probabilities"][c].as_f64().unwrap();
                assert!(
                    (p.as_f64().unwrap() - q).abs() <= 1e-6,
                    "{model} record {i}: {one} against {}",
                    batch[i]
                );
            }
        }
    }
}

#[test]
fn bad_records_get_a_400_naming_the_record_and_the_feature_and_nothing_else_is_harmed() {
    let dir = tempfile::tempdir().unwrap();
    let s = serve(dir.path(), &["breast-cancer", "diabetes-risk"], "tract");
    let fx = holdout("diabetes-risk");
    let good = fx["records"][0].clone();
    let with = |key: &str, value: Value| {
        let mut r = good.clone();
        r[key] = value;
        r
    };
    let mut missing = good.clone();
    missing.as_object_mut().unwrap().remove("s5");
    let mut unknown = good.clone();
    unknown["bmi"] = json!(31.2);
    let cases: Vec<(Vec<Value>, &str, &str)> = vec![
        (
            vec![good.clone(), missing],
            "missing_feature",
            "record 1 lacks feature `s5`",
        ),
        (vec![unknown], "unknown_feature", "`bmi` is not a feature"),
        (
            vec![with("age", json!("fifty"))],
            "invalid_value",
            "`age` must be a number, not a string",
        ),
        (
            vec![with("sex", json!(1))],
            "invalid_value",
            "`sex` must be a string",
        ),
        (vec![with("age", Value::Null)], "missing_value", "`age` is null"),
        (vec![with("s1", json!(1e39))], "value_out_of_range", "`s1`"),
        (vec![], "empty_batch", "no records"),
    ];
    for (records, code, says) in cases {
        let (status, v) = predict(&s, "diabetes-risk", &records);
        assert_error(status, &v, 400, code);
        assert!(
            v["error"]["message"].as_str().unwrap().contains(says),
            "{code}: {v}"
        );
    }
    // Not JSON at all, and JSON's non-numbers as Python's json.dumps writes them.
    for body in ["{\"instances\": [", "{\"instances\": [{\"age\": NaN}]}"] {
        let (status, v) = s.post("/predict/diabetes-risk", "application/json", body.into());
        assert_error(status, &v, 400, "invalid_json");
    }
    // What the card allows: a missing `bp` (the imputer fills it) and a BMI band the encoder
    // never saw (`handle_unknown="ignore"`: no band at all, as scikit-learn does).
    let (status, v) = predict(
        &s,
        "diabetes-risk",
        &[with("bp", Value::Null), with("bmi_band", json!("extreme"))],
    );
    assert_eq!(status, 200, "{v}");
    // Other routes and later requests are unaffected.
    matches_scikit_learn(&s, "breast-cancer");
    matches_scikit_learn(&s, "diabetes-risk");
    s.assert_alive();
}

#[test]
fn a_graph_tract_cannot_run_is_refused_by_tract_and_served_by_onnx_runtime_under_auto() {
    let dir = tempfile::tempdir().unwrap();
    let m = manifest(dir.path(), &[ORT_ONLY]);
    let models = root().join("models");
    let models = models.to_str().unwrap();
    let err = refused_start(&m, &["--models-dir", models, "--backend", "tract"]);
    assert!(
        err.contains("ai.onnx.ml.SVMClassifier") && err.contains("ONNX Runtime"),
        "{err}"
    );
    let s = Server::start_with_models(&m, Path::new(models), &["--backend", "auto"]);
    assert!(
        s.log()
            .contains(&format!("model={ORT_ONLY} backend=\"onnxruntime\""))
            && s.log().contains("tract cannot run it"),
        "{}",
        s.log()
    );
    matches_scikit_learn(&s, ORT_ONLY);
    let out = Command::new(env!("CARGO_BIN_EXE_scoria"))
        .current_dir(dir.path())
        .args(["models", "list", "--models-dir", models])
        .output()
        .unwrap();
    let list = String::from_utf8_lossy(&out.stdout);
    let line = list
        .lines()
        .find(|l| l.starts_with(ORT_ONLY))
        .unwrap_or_else(|| panic!("{list}"));
    assert!(
        line.contains("tract lacks") && line.contains("SVMClassifier"),
        "{line}"
    );
}

#[test]
fn the_documented_conversion_command_turns_a_pipeline_into_a_model_that_serves() {
    // docs/tabular.md's command, on the fitted diabetes-risk pipeline, into a new folder.
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("models/my-model");
    let status = Command::new(root().join(".cache/venv/bin/python"))
        .arg(root().join("models/tools/sklearn_onnx.py"))
        .arg(root().join("models/diabetes-risk/pipeline.joblib"))
        .arg(&out)
        .args([
            "--categorical",
            "sex",
            "bmi_band",
            "--allow-missing",
            "bp",
            "s6",
            "--licence",
            "BSD-3-Clause",
        ])
        .status()
        .unwrap();
    assert!(status.success());
    let card = std::fs::read_to_string(out.join("model.toml")).unwrap();
    assert!(
        card.contains("name = \"my-model\"") && card.contains("kind = \"category\""),
        "{card}"
    );
    let m = manifest_for(dir.path(), &dir.path().join("models"), &["my-model"]);
    let s = Server::start_with_models(&m, &dir.path().join("models"), &["--backend", "tract"]);
    matches_scikit_learn_as(&s, "diabetes-risk", "my-model");
}
