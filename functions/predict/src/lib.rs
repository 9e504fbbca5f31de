//! `predict`: score JSON records with a tabular model, one generic function for every
//! scikit-learn pipeline converted by `models/tools/sklearn_onnx.py`.
//!
//! Request path: read the card's feature schema -> check every record against it and lay
//! the records out as the model's input tensors (one row a record) -> one `wasi:nn` compute
//! for the whole batch -> each record's class and probabilities, or value -> JSON. Which
//! model, and so which features, comes from the manifest and the card, never from code: the
//! same component serves any number of tabular models side by side, one manifest entry each.
//!
//! Every answer carries `Server-Timing` entries for its steps: reading the card (`card`),
//! checking the records (`records`), the `wasi:nn` `compute` and writing the `answer`.
//!
//! Configuration from the manifest's `environment`:
//! - `SCORIA_MODEL` (required): the model; its folder is mounted at `/models/<name>`.
//! - `SCORIA_MAX_RECORDS` (default 10000): more records in one request get 400.

use scoria_guest::card::Card;
use scoria_guest::error::ApiError;
use scoria_guest::nn::{compute, F32Tensor, I64Tensor, Input};
use scoria_guest::timing::Timing;
use scoria_guest::{instance, request};
use spin_sdk::http::body::IncomingBodyExt;
use spin_sdk::http::{Method, Request};
use std::cell::OnceCell;
use std::rc::Rc;
use tabular::{Layout, Prediction, Schema, Values};

/// The answer: the model, and a prediction per record in the request's order.
#[derive(serde::Serialize)]
struct Answer<'a> {
    model: &'a str,
    predictions: Vec<Prediction<'a>>,
}

type Response = spin_sdk::http::Response<String>;

thread_local! {
    /// The card and its input layout, read by an instance's first request.
    static CARD: OnceCell<Rc<(Card<Schema>, Layout)>> = const { OnceCell::new() };
}

#[spin_sdk::http_service]
async fn handle(req: Request) -> Response {
    let mut timing = Timing::default();
    let (status, body) = match answer(req, &mut timing).await {
        Ok(json) => (200, json),
        Err(e) => (e.status, e.to_json()),
    };
    let mut r = scoria_guest::response::json(status, body);
    timing.add_to(&mut r);
    r
}

async fn answer(req: Request, timing: &mut Timing) -> Result<String, ApiError> {
    if req.method() != Method::POST {
        return Err(ApiError::new(
            405,
            "method_not_allowed",
            "use POST with {\"instances\": [{\"feature\": value, ...}, ...]}",
        ));
    }
    let max_records = request::env_or("SCORIA_MAX_RECORDS", 10_000usize)?;
    let model = request::env_required("SCORIA_MODEL")?;
    let card = timing.time("card", || {
        instance::keep(&CARD, || {
            let card: Card<Schema> = Card::load(&model)?;
            let layout = card.preprocess.layout().map_err(|e| {
                ApiError::internal(
                    "model_card_invalid",
                    format!("/models/{model}/model.toml [preprocess]: {e}"),
                )
            })?;
            Ok::<_, ApiError>((card, layout))
        })
    })?;
    let (card, layout) = &*card;
    let body =
        req.into_body().bytes().await.map_err(|e| {
            ApiError::bad_request("body_unreadable", format!("could not read the body: {e:?}"))
        })?;
    let batch = timing.time("records", || {
        tabular::parse(&card.preprocess, layout, &body, max_records)
            .map_err(|e| ApiError::bad_request(e.code, e.message))
    })?;

    let rows = batch.rows as u32;
    let inputs = batch
        .columns
        .into_iter()
        .map(|c| {
            let dims = vec![rows, c.width as u32];
            let t = match c.values {
                Values::F32(data) => Input::F32(F32Tensor { dims, data }),
                Values::I64(data) => Input::I64(I64Tensor { dims, data }),
            };
            (c.input, t)
        })
        .collect();
    let outputs = timing.time("compute", || compute(&card.name, inputs))?;
    let schema = &card.preprocess;
    let output = outputs
        .into_iter()
        .find(|(name, _)| name == &schema.output)
        .ok_or_else(|| {
            ApiError::internal(
                "inference_failed",
                format!("the model gave no output `{}`", schema.output),
            )
        })?
        .1;
    let predictions = tabular::predictions(schema, batch.rows, &output.data)
        .map_err(|e| ApiError::internal("inference_failed", e))?;
    timing.time("answer", || {
        serde_json::to_string(&Answer {
            model: &card.name,
            predictions,
        })
        .map_err(|e| ApiError::internal("internal", e.to_string()))
    })
}
