"""Triton's own HTTP client (`tritonclient.http`, from PyPI) against a running Scoria.

Run by host/tests/oip.rs, which starts `scoria up` on spin.toml and writes into --dir the
preprocessed tensors of two photos (`<photo>.f32`, float32 NCHW, as the model card says) and
what the `/classify` route answers for each (`<photo>.json`), and a question tokenised as the
FAQ function does with what `/faq` answers for it (`question.json`). Every check here goes through
tritonclient's own framing: JSON and binary tensor data, metadata, readiness, batches, and the
protocol's errors. Exits non-zero, with the failed assertion, if anything differs.
"""

import argparse
import json
import pathlib
import socket

import numpy as np
import tritonclient.http as httpclient
from tritonclient.utils import InferenceServerException

from expected import MODEL, PHOTOS, QUESTION, load, same_as_route, softmax_top5

def refused(call, status, words):
    try:
        call()
    except InferenceServerException as e:
        assert e.status() == str(status) or e.status() == status, f"{words}: status {e.status()} ({e})"
        assert words in str(e.message()), f"expected `{words}` in: {e.message()}"
        return
    raise AssertionError(f"accepted, expected {status} with `{words}`")


def raw(url, head, body):
    """A request written by hand, for framings no client would send; its status line."""
    host, port = url.split(":")
    with socket.create_connection((host, int(port))) as s:
        # No half-close: the request says `Connection: close`, so the answer ends at EOF (a
        # server may take a client's EOF for a hang-up before it has answered).
        s.sendall(head.encode() + body)
        answer = b""
        while chunk := s.recv(65536):
            answer += chunk
    status = int(answer.split(b" ", 2)[1])
    return status, answer.split(b"\r\n\r\n", 1)[1].decode(errors="replace")


def check_batch_and_faq(client, module, labels, tensors, answers, q):
    """Through tritonclient's `module` (http or grpc): four photos in one tensor, then the FAQ
    function's steps as a client would run them (MiniLM on the tokenised question, mean
    pooling and L2 normalisation, the FAQ index model), whose best entry and cosine must be the
    function's."""
    names = ["chelsea", "coffee", "coffee", "chelsea"]
    batch = np.concatenate([tensors[p] for p in names])
    x = module.InferInput("input", list(batch.shape), "FP32")
    x.set_data_from_numpy(batch)
    logits = client.infer(MODEL, [x]).as_numpy("logits")
    assert logits.shape == (4, 1000), logits.shape
    for row, p in zip(logits, names):
        same_as_route(softmax_top5(row, labels), answers[p], f"{p} in a batch of 4")

    inputs = []
    for name in ["input_ids", "attention_mask", "token_type_ids"]:
        x = module.InferInput(name, [1, len(q[name])], "INT64")
        x.set_data_from_numpy(np.array([q[name]], dtype=np.int64))
        inputs.append(x)
    hidden = client.infer("all-minilm-l6-v2", inputs).as_numpy("last_hidden_state")[0]
    mask = np.array(q["attention_mask"], dtype=np.float32)[:, None]
    embedding = (hidden * mask).sum(axis=0) / mask.sum()
    embedding /= np.linalg.norm(embedding)
    x = module.InferInput("query", [1, 384], "FP32")
    x.set_data_from_numpy(embedding[None, :].astype(np.float32))
    scores = client.infer("faq-javascript", [x]).as_numpy("scores")[0]
    top = q["faq"]["matches"][0]
    # The index model computes the cosine part of /faq's score (the lexical part is the function's).
    assert abs(float(scores.max()) - top["cosine"]) <= 1e-5, (float(scores.max()), top)
    return int(np.argmax(scores))


def check_functions(client, module, args, answers, q):
    """image-classify and faq-match called as models (through tritonclient's `module`, http or
    grpc): a batch of four photos in one request, and two questions, one with no match."""
    meta = client.get_model_metadata("image-classify", **({"as_json": True} if module.__name__.endswith("grpc") else {}))
    assert meta["inputs"][0]["name"] == "image" and meta["inputs"][0]["datatype"] == "BYTES", meta
    names = ["chelsea", "coffee", "coffee", "chelsea"]
    photos = np.array([(args.photos / f"{p}.png").read_bytes() for p in names], dtype=np.object_)
    # Photos go as binary data only: JSON carries BYTES as UTF-8 strings.
    for binary in [True]:
        x = module.InferInput("image", [4], "BYTES")
        if module is httpclient:
            x.set_data_from_numpy(photos, binary_data=binary)
            outs = [module.InferRequestedOutput(n, binary_data=binary) for n in ["labels", "scores", "indices"]]
        else:
            x.set_data_from_numpy(photos)
            outs = [module.InferRequestedOutput(n) for n in ["labels", "scores", "indices"]]
        r = client.infer("image-classify", [x], outputs=outs)
        labels, scores, indices = r.as_numpy("labels"), r.as_numpy("scores"), r.as_numpy("indices")
        assert labels.shape == (4, 5) and scores.shape == (4, 5) and indices.shape == (4, 5), labels.shape
        for row, p in enumerate(names):
            got = [(lb.decode() if isinstance(lb, bytes) else lb, float(sc)) for lb, sc in zip(labels[row], scores[row])]
            same_as_route(got, answers[p], f"image-classify as a model, {p}, binary={binary}")
            assert [int(i) for i in indices[row]] == [pr["index"] for pr in answers[p]["predictions"]]

    # Questions as JSON strings over REST (binary over gRPC).
    x = module.InferInput("question", [2], "BYTES")
    questions = np.array([QUESTION.encode(), b"what is a good recipe for banana bread"], dtype=np.object_)
    if module is httpclient:
        x.set_data_from_numpy(questions, binary_data=False)
        r = client.infer("faq-match", [x], outputs=[module.InferRequestedOutput(n, binary_data=False)
                                                     for n in ["ids", "scores", "answers"]])
    else:
        x.set_data_from_numpy(questions)
        r = client.infer("faq-match", [x])
    text = lambda v: v.decode() if isinstance(v, bytes) else v  # noqa: E731 (JSON outputs are str)
    ids, scores = r.as_numpy("ids"), r.as_numpy("scores")
    top = q["faq"]["matches"][0]
    assert text(ids[0][0]) == top["id"] and abs(float(scores[0][0]) - top["score"]) <= 1e-5, (ids, scores, top)
    assert all(text(i) == "" for i in ids[1]) and np.isnan(scores[1].astype(np.float32)).all(), (ids[1], scores[1])


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--url", required=True)
    ap.add_argument("--dir", required=True, type=pathlib.Path)
    ap.add_argument("--models", required=True, type=pathlib.Path)
    ap.add_argument("--photos", required=True, type=pathlib.Path)
    args = ap.parse_args()
    labels = (args.models / MODEL / "imagenet-labels.txt").read_text().splitlines()
    client = httpclient.InferenceServerClient(url=args.url)

    # The server and its models.
    assert client.is_server_live() and client.is_server_ready()
    meta = client.get_server_metadata()
    assert meta["name"] == "scoria" and "binary_tensor_data" in meta["extensions"], meta
    index = {m["name"]: m for m in client.get_model_repository_index()}
    for name in [MODEL, "all-minilm-l6-v2", "faq-javascript", "image-classify", "faq-match"]:
        assert index[name]["state"] == "READY", index
        assert client.is_model_ready(name), name
    meta = client.get_model_metadata(MODEL)
    assert meta["inputs"] == [{"name": "input", "datatype": "FP32", "shape": [-1, 3, 224, 224]}], meta
    assert meta["outputs"] == [{"name": "logits", "datatype": "FP32", "shape": [-1, 1000]}], meta
    assert client.get_model_metadata(MODEL, model_version=meta["versions"][0])["name"] == MODEL

    tensors, answers, q = load(args.dir)

    # One photo, binary data both ways (tritonclient's default), then JSON both ways.
    for binary in [True, False]:
        for p in PHOTOS:
            x = httpclient.InferInput("input", [1, 3, 224, 224], "FP32")
            x.set_data_from_numpy(tensors[p], binary_data=binary)
            out = httpclient.InferRequestedOutput("logits", binary_data=binary)
            r = client.infer(MODEL, [x], outputs=[out], request_id=f"{p}-{binary}")
            assert r.get_response()["id"] == f"{p}-{binary}"
            logits = r.as_numpy("logits")
            assert logits.shape == (1, 1000), logits.shape
            same_as_route(softmax_top5(logits[0], labels), answers[p], f"{p} binary={binary}")

    # Four photos in one request (no outputs named: every output, as binary data), and the
    # FAQ function's steps; the best entry must be the one /faq names.
    best = check_batch_and_faq(client, httpclient, labels, tensors, answers, q)
    entries = (args.models / "faq-javascript" / "entries.jsonl").read_text().splitlines()
    top = q["faq"]["matches"][0]
    assert json.loads(entries[best])["question"] == top["question"], (entries[best], top)

    # The functions as models: photos, then questions, as one BYTES input each.
    check_functions(client, httpclient, args, answers, q)

    # Errors, each in the protocol's form, none reaching the model.
    def infer(name, shape, datatype, data, model=MODEL):
        x = httpclient.InferInput(name, shape, datatype)
        x.set_data_from_numpy(data)
        return lambda: client.infer(model, [x])

    one = tensors["chelsea"]
    refused(infer("input", [1, 3, 224, 224], "FP64", one.astype(np.float64)), 400, "type is F64")
    refused(infer("input", [1, 3, 112, 448], "FP32", one.reshape(1, 3, 112, 448)), 400, "shape is [1, 3, 112, 448]")
    refused(infer("pixels", [1, 3, 224, 224], "FP32", one), 400, "has no input `pixels`")
    refused(infer("input", [1, 3, 224, 224], "FP32", one, model="no-such-model"), 404, "no model `no-such-model`")
    refused(lambda: client.get_model_metadata(MODEL, model_version="999"), 404, "no version `999`")
    refused(infer("input", [1], "BYTES", np.array([b"x"], dtype=np.object_)), 400, "not one any model here takes")

    head = json.dumps({"inputs": [{"name": "input", "shape": [1, 3, 224, 224], "datatype": "FP32",
                                    "parameters": {"binary_data_size": one.nbytes}}]}).encode()
    def post(header_length, body):
        return raw(args.url, f"POST /v2/models/{MODEL}/infer HTTP/1.1\r\nHost: x\r\nConnection: close\r\n"
                   f"Inference-Header-Content-Length: {header_length}\r\nContent-Length: {len(body)}\r\n\r\n", body)
    status, body = post(len(head), head + one.tobytes()[:1000])
    assert status == 400 and "truncated" in json.loads(body)["error"], (status, body)
    status, body = post(len(head) + one.nbytes + 10, head + one.tobytes())
    assert status == 400 and "has only" in json.loads(body)["error"], (status, body)
    huge = json.dumps({"inputs": [{"name": "input", "shape": [4000000000, 3, 224, 224], "datatype": "FP32",
                                    "parameters": {"binary_data_size": 16}}]}).encode()
    status, body = post(len(huge), huge + b"0123456789abcdef")
    assert status == 400 and "needs" in json.loads(body)["error"], (status, body)

    # Still serving, with the same answer.
    x = httpclient.InferInput("input", [1, 3, 224, 224], "FP32")
    x.set_data_from_numpy(one)
    same_as_route(softmax_top5(client.infer(MODEL, [x]).as_numpy("logits")[0], labels), answers["chelsea"], "after errors")
    print("tritonclient.http: metadata, readiness, JSON and binary inference, a batch of 4, "
          "MiniLM and the FAQ index as /faq, the functions as models, 9 refusals: ok")


if __name__ == "__main__":
    main()
