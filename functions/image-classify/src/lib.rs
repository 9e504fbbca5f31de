//! `image-classify`: ImageNet classification as a Scoria scoring function.
//!
//! Request path: parse the body (raw image or JSON with base64 images) -> decode and
//! preprocess as the model card says -> one `wasi:nn` compute for all images -> softmax and
//! top-k -> JSON. Clients that preprocess themselves (as Triton and KServe clients do) can
//! send the model's input tensor instead: `application/x-tensor`, float32 little-endian NCHW
//! `[n, 3, crop, crop]`, `n` read from the length. Configuration comes from the manifest's
//! `environment`:
//!
//! - `SCORIA_MODEL` (required): the model to use; its card is read from `/models/<name>/`.
//! - `SCORIA_MAX_PIXELS` (default 40,000,000): larger images are refused before decoding.
//! - `SCORIA_MAX_IMAGES` (default 32): the most images one JSON request may carry.

use base64::Engine as _;
use scoria_guest::card::{Card, Labels};
use scoria_guest::error::ApiError;
use scoria_guest::instance;
use scoria_guest::nn::{compute, F32Tensor, Input};
use scoria_guest::{request, response};
use serde::{Deserialize, Serialize};
use spin_sdk::http::{IncomingMessage, Method, Request};
use spin_sdk::wasip3::wit_future;
use spin_sdk::wit_bindgen::StreamResult;
use std::cell::OnceCell;
use std::rc::Rc;
use vision::Preprocess;

type Response = spin_sdk::http::Response<String>;

const DEFAULT_K: usize = 5;
const MAX_K: usize = 1000;

thread_local! {
    /// The model card and labels, read by an instance's first request (see
    /// `scoria_guest::instance`).
    static CARD: OnceCell<Rc<Card<Preprocess>>> = const { OnceCell::new() };
    static LABELS: OnceCell<Rc<Labels>> = const { OnceCell::new() };
}

#[spin_sdk::http_service]
async fn handle(req: Request) -> Response {
    match classify(req).await {
        Ok(json) => response::json(200, json),
        Err(e) => response::json(e.status, e.to_json()),
    }
}

/// One ranked class.
#[derive(Serialize)]
struct Prediction<'a> {
    index: usize,
    label: &'a str,
    score: f32,
}

/// The answer for one image.
#[derive(Serialize)]
struct Classification<'a> {
    model: &'a str,
    /// `random` for load-test models: their predictions mean nothing.
    weights: &'a str,
    predictions: Vec<Prediction<'a>>,
}

/// The JSON request forms: the reference architecture's `input`, or several `images`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct JsonRequest {
    input: Option<String>,
    images: Option<Vec<String>>,
}

/// What the client sent, before decoding.
enum Images {
    One(Vec<u8>),
    Many(Vec<Vec<u8>>),
    /// Images already preprocessed into the model's input tensor (float32 LE bytes).
    Tensor(Vec<u8>),
}

async fn classify(req: Request) -> Result<String, ApiError> {
    if req.method() != Method::POST {
        return Err(ApiError::new(
            405,
            "method_not_allowed",
            "use POST with an image body",
        ));
    }
    let k = request::query_k(req.uri().query(), MAX_K)?.unwrap_or(DEFAULT_K);
    let content_type = request::media_type(req.headers().get("content-type").and_then(|v| v.to_str().ok()));
    let max_images = request::env_or("SCORIA_MAX_IMAGES", 32usize)?;
    let body = read_body(req).await?;

    let images = match content_type.as_deref() {
        Some("image/jpeg" | "image/png" | "image/webp" | "image/gif" | "application/octet-stream") | None => {
            Images::One(body)
        }
        Some("application/json") => parse_json(&body, max_images)?,
        Some("application/x-tensor") => Images::Tensor(body),
        Some(other) => {
            return Err(ApiError::new(
                415,
                "unsupported_media_type",
                format!(
                    "Content-Type `{other}` is not supported; send image/jpeg, image/png, image/webp, image/gif, \
                     application/json with {{\"input\": \"<base64>\"}}, or application/x-tensor"
                ),
            ))
        }
    };

    let model = request::env_required("SCORIA_MODEL")?;
    let card = instance::keep(&CARD, || Card::load(&model))?;
    let crop = card.preprocess.crop;
    // One image in, one object out; several (or a tensor of several), an array.
    let one_object = matches!(images, Images::One(_) | Images::Tensor(_));
    let (n, input) = match images {
        Images::Tensor(bytes) => {
            let n = tensor_images(&bytes, crop, max_images)?;
            let dims = vec![n as u32, 3, crop, crop];
            (n, Input::F32Bytes { dims, bytes })
        }
        images => {
            let (n, data) = decode_all(&images, &card.preprocess)?;
            let dims = vec![n as u32, 3, crop, crop];
            (n, Input::F32(F32Tensor { dims, data }))
        }
    };
    let input_name = first_name(&card.inputs, "inputs")?;
    let output_name = first_name(&card.outputs, "outputs")?;
    let outputs = compute(&model, vec![(input_name.to_owned(), input)])?;
    let logits = outputs
        .into_iter()
        .find(|(n, _)| n == output_name)
        .map(|(_, t)| t)
        .ok_or_else(|| {
            ApiError::internal("inference_failed", format!("model returned no `{output_name}`"))
        })?;

    let labels = instance::keep(&LABELS, || card.load_labels())?;
    let classes = logits.data.len() / n.max(1);
    if classes == 0 || logits.data.len() != classes * n {
        return Err(ApiError::internal(
            "inference_failed",
            "output size does not match the batch",
        ));
    }
    let results: Vec<Classification> = logits
        .data
        .chunks_exact(classes)
        .map(|row| {
            let probs = vision::softmax(row);
            let predictions = vision::top_k(&probs, k)
                .into_iter()
                .map(|index| Prediction {
                    index,
                    label: labels.get(index).unwrap_or(""),
                    score: probs[index],
                })
                .collect();
            Classification {
                model: &card.name,
                weights: &card.weights,
                predictions,
            }
        })
        .collect();

    let json = match results.as_slice() {
        [one] if one_object => serde_json::to_string(one),
        _ => serde_json::to_string(&results),
    };
    json.map_err(|e| ApiError::internal("serialisation_failed", e.to_string()))
}

/// Decode and preprocess every image as the card says: `(images, NCHW data)`.
fn decode_all(images: &Images, pre: &Preprocess) -> Result<(usize, Vec<f32>), ApiError> {
    let affine = pre
        .affine()
        .map_err(|e| ApiError::internal("model_card_invalid", e))?;
    let max_pixels = request::env_or("SCORIA_MAX_PIXELS", 40_000_000u64)?;
    let blobs: Vec<&[u8]> = match images {
        Images::One(b) => vec![b.as_slice()],
        Images::Many(v) => v.iter().map(Vec::as_slice).collect(),
        Images::Tensor(_) => Vec::new(),
    };
    let mut data = Vec::new();
    for (i, blob) in blobs.iter().enumerate() {
        let img = vision::decode(blob, max_pixels).map_err(|e| {
            let msg = if blobs.len() > 1 {
                format!("image {i}: {e}")
            } else {
                e.to_string()
            };
            match e {
                vision::VisionError::Empty => ApiError::bad_request("empty_body", msg),
                vision::VisionError::TooManyPixels { .. }
                | vision::VisionError::TooManyBytes { .. }
                | vision::VisionError::TooLarge(_) => ApiError::bad_request("image_too_large", msg),
                _ => ApiError::bad_request("invalid_image", msg),
            }
        })?;
        vision::to_tensor(&img, pre, &affine, &mut data);
    }
    Ok((blobs.len(), data))
}

/// How many images an `application/x-tensor` body (float32 LE `[n, 3, crop, crop]`, `n` from
/// its length) holds, or why it is not such a body.
fn tensor_images(bytes: &[u8], crop: u32, max_images: usize) -> Result<usize, ApiError> {
    let per_image = 3 * (crop as usize) * (crop as usize) * 4;
    let n = bytes.len() / per_image;
    if !bytes.len().is_multiple_of(per_image) || n == 0 || n > max_images {
        return Err(ApiError::bad_request(
            "invalid_tensor",
            format!(
                "an application/x-tensor body is float32 [n, 3, {crop}, {crop}] with n from 1 to {max_images}, \
                 so a multiple of {per_image} bytes; got {} bytes",
                bytes.len()
            ),
        ));
    }
    // NaN and infinities give ordinary-looking predictions; the client sent no image.
    if let Some(i) = bytes
        .chunks_exact(4)
        .position(|b| !f32::from_le_bytes([b[0], b[1], b[2], b[3]]).is_finite())
    {
        return Err(ApiError::bad_request(
            "invalid_tensor",
            format!("value {i} of the tensor is NaN or infinite; every value must be a finite float32"),
        ));
    }
    Ok(n)
}

/// The whole request body, read into one buffer sized by `Content-Length` (the host has
/// already held the body to its size limit). spin-sdk's `bytes()` reads 16 KiB frames and
/// joins them: for a 600 KB tensor that was about 37 stream reads, each a trip through the
/// host, and one more copy of the body.
async fn read_body(req: Request) -> Result<Vec<u8>, ApiError> {
    const MAX_PREALLOCATION: usize = 64 << 20;
    // Read from the header: `http_body::Body::size_hint` on spin-sdk's body gave no length here
    // (tried: a 600 KB tensor body then grew the buffer by doubling, 2 MB of guest memory).
    let declared = req
        .headers()
        .get("content-length")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok())
        .unwrap_or(0);
    let unreadable =
        |why: String| ApiError::bad_request("body_unreadable", format!("could not read the body: {why}"));
    let message = req
        .into_body()
        .take_unstarted()
        .ok_or_else(|| unreadable("it was already being read".into()))?;
    let (done, done_reader) = wit_future::new(|| Ok(()));
    let (mut stream, trailers) = message.consume_body(done_reader);
    // One spare byte: the last read finds only the end of the stream, and a full buffer would
    // be grown (and the body copied) for it.
    let mut body = Vec::with_capacity(declared.min(MAX_PREALLOCATION) + 1);
    loop {
        if body.len() == body.capacity() {
            body.reserve(64 << 10);
        }
        let (result, filled) = stream.read(body).await;
        body = filled;
        match result {
            StreamResult::Complete(_) => {}
            StreamResult::Dropped => break,
            StreamResult::Cancelled => return Err(unreadable("the read was cancelled".into())),
        }
    }
    trailers.await.map_err(|e| unreadable(format!("{e:?}")))?;
    drop(done);
    Ok(body)
}

fn parse_json(body: &[u8], max_images: usize) -> Result<Images, ApiError> {
    if body.is_empty() {
        return Err(ApiError::bad_request("empty_body", "the request body is empty"));
    }
    let req: JsonRequest = serde_json::from_slice(body).map_err(|e| {
        ApiError::bad_request(
            "invalid_json",
            format!("{e}; expected {{\"input\": \"<base64>\"}} or {{\"images\": [\"<base64>\", ...]}}"),
        )
    })?;
    let b64 = |s: &str, what: String| {
        base64::engine::general_purpose::STANDARD
            .decode(s.trim())
            .map_err(|e| ApiError::bad_request("invalid_base64", format!("{what} is not valid base64: {e}")))
    };
    match (req.input, req.images) {
        (Some(one), None) => Ok(Images::One(b64(&one, "`input`".into())?)),
        (None, Some(many)) => {
            if many.is_empty() || many.len() > max_images {
                return Err(ApiError::bad_request(
                    "invalid_batch",
                    format!("`images` must hold 1 to {max_images} images, not {}", many.len()),
                ));
            }
            let decoded = many
                .iter()
                .enumerate()
                .map(|(i, s)| b64(s, format!("`images[{i}]`")))
                .collect::<Result<_, _>>()?;
            Ok(Images::Many(decoded))
        }
        _ => Err(ApiError::bad_request(
            "invalid_json",
            "send exactly one of `input` or `images`",
        )),
    }
}

fn first_name<'a>(tensors: &'a [scoria_guest::card::TensorName], what: &str) -> Result<&'a str, ApiError> {
    tensors
        .first()
        .map(|t| t.name.as_str())
        .ok_or_else(|| ApiError::internal("model_card_invalid", format!("the model card lists no {what}")))
}
