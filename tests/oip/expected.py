"""What the inference-protocol checks compare with, shared by every client's script (numpy
only, so that the KServe script, in its own environment, can use it too): the files
host/tests/oip.rs writes into --dir, and the comparison with the routes' answers."""

import json

import numpy as np

MODEL = "efficientnet-lite0"
PHOTOS = ["chelsea", "coffee"]
QUESTION = "how do I take the last element off an array"


def load(folder):
    """The photos' preprocessed tensors and `/classify`'s answers, and the tokenised question
    with `/faq`'s answer."""
    tensors = {p: np.fromfile(folder / f"{p}.f32", dtype=np.float32).reshape(1, 3, 224, 224) for p in PHOTOS}
    answers = {p: json.loads((folder / f"{p}.json").read_text()) for p in PHOTOS}
    question = json.loads((folder / "question.json").read_text())
    return tensors, answers, question


def softmax_top5(logits, labels):
    p = np.exp(logits.astype(np.float64) - logits.max())
    p /= p.sum()
    top = np.argsort(-p)[:5]
    return [(labels[i], float(p[i])) for i in top]


def same_as_route(got, route_answer, what):
    """`got` ((label, score) best first) is what `/classify` answered, scores within 1e-5."""
    want = [(p["label"], p["score"]) for p in route_answer["predictions"]]
    assert [g[0] for g in got] == [w[0] for w in want], f"{what}: {got} != {want}"
    for (label, g), (_, w) in zip(got, want):
        assert abs(g - w) <= 1e-5, f"{what}: {label} {g} != {w}"
