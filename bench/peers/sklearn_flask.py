"""The Python server a user of the reference architecture writes for a scikit-learn model:
Flask, as its scoring image runs it, under gunicorn, loading the fitted pipeline once and
calling `predict_proba` (or `predict`) per request. The benchmark's peer for `/predict`.

It takes and answers the same JSON as Scoria's `predict` function:
`{"instances": [{feature: value, ...}, ...]}` in, `{"predictions": [{"label": ...,
"probabilities": {...}}]}` or `[{"value": ...}]` out.

    SCORIA_PIPELINE=models/breast-cancer/pipeline.joblib \
        gunicorn --workers 2 --bind 127.0.0.1:8000 --chdir bench/peers sklearn_flask:app
"""

import os

import joblib
import pandas as pd
from flask import Flask, jsonify, request

app = Flask(__name__)
model = joblib.load(os.environ["SCORIA_PIPELINE"])
classes = [str(c) for c in getattr(model, "classes_", [])]


@app.post("/predict")
def predict():
    body = request.get_json()
    records = body["instances"] if isinstance(body, dict) else body
    X = pd.DataFrame.from_records(records, columns=list(model.feature_names_in_))
    if classes:
        proba = model.predict_proba(X)
        return jsonify(predictions=[
            {"label": classes[p.argmax()], "probabilities": dict(zip(classes, map(float, p)))} for p in proba
        ])
    return jsonify(predictions=[{"value": float(v)} for v in model.predict(X)])
