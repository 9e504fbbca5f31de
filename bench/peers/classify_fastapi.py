"""The Python server a user of the reference architecture writes for an image classifier:
FastAPI under uvicorn, Pillow to decode and resize, ONNX Runtime for the model, one session
per worker process. The photo peer of `./dev bench peers`.

Same model, same preprocessing and same session settings as Scoria's `/classify` on
`--backend onnxruntime`: EfficientNet-Lite0 from `models/efficientnet-lite0`, the short side
resized to 256 (bilinear), a centre crop of 224, pixels scaled to [-1, 1], NCHW; one
intra-op thread, full graph optimisation. POST the image's bytes; the answer is the top five.

    SCORIA_MODEL_DIR=models/efficientnet-lite0 \
        uvicorn --workers 2 --app-dir bench/peers classify_fastapi:app
"""

import io
import os

import numpy as np
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from PIL import Image

import onnxruntime as ort

MODEL_DIR = os.environ["SCORIA_MODEL_DIR"]
options = ort.SessionOptions()
options.intra_op_num_threads = 1
options.inter_op_num_threads = 1
options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
session = ort.InferenceSession(os.path.join(MODEL_DIR, "efficientnet-lite0.onnx"), options,
                               providers=["CPUExecutionProvider"])
with open(os.path.join(MODEL_DIR, "imagenet-labels.txt")) as f:
    labels = f.read().splitlines()
app = FastAPI()


def preprocess(data):
    img = Image.open(io.BytesIO(data)).convert("RGB")
    w, h = img.size
    scale = 256 / min(w, h)
    img = img.resize((max(224, round(w * scale)), max(224, round(h * scale))), Image.BILINEAR)
    w, h = img.size
    left, top = (w - 224) // 2, (h - 224) // 2
    img = img.crop((left, top, left + 224, top + 224))
    x = np.asarray(img, dtype=np.float32) * (2.0 / 255.0) - 1.0
    return x.transpose(2, 0, 1)[None]


@app.post("/classify")
async def classify(request: Request):
    try:
        x = preprocess(await request.body())
    except Exception as e:  # noqa: BLE001 - a bad image is the client's error
        return JSONResponse({"error": {"code": "invalid_image", "message": str(e)}}, status_code=400)
    logits = session.run(None, {"input": x})[0][0]
    p = np.exp(logits - logits.max())
    p /= p.sum()
    top = np.argsort(-p)[:5]
    return {"model": "efficientnet-lite0",
            "predictions": [{"index": int(i), "label": labels[i], "score": float(p[i])} for i in top]}
