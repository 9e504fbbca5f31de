"""Triton's own gRPC client (`tritonclient.grpc`, from PyPI) against a running Scoria started
with `--grpc-listen`.

Run by host/tests/oip.rs with the same --dir as tritonclient_http.py (preprocessed photos and
`/classify`'s answers, a tokenised question and `/faq`'s answer). Checks metadata, readiness,
inference equal to the routes' answers, a batch of four, and the protocol's gRPC status codes
for bad requests. Exits non-zero, with the failed assertion, if anything differs.
"""

import argparse
import pathlib

import grpc
import numpy as np
import tritonclient.grpc as grpcclient
from tritonclient.utils import InferenceServerException

from expected import MODEL, PHOTOS, load, same_as_route, softmax_top5
from tritonclient_http import check_batch_and_faq, check_functions


def refused(call, code, words):
    try:
        call()
    except InferenceServerException as e:
        assert e.status() == f"StatusCode.{code}", f"{words}: status {e.status()} ({e.message()})"
        assert words in str(e.message()), f"expected `{words}` in: {e.message()}"
        return
    raise AssertionError(f"accepted, expected {code} with `{words}`")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--url", required=True)
    ap.add_argument("--dir", required=True, type=pathlib.Path)
    ap.add_argument("--models", required=True, type=pathlib.Path)
    ap.add_argument("--photos", required=True, type=pathlib.Path)
    ap.add_argument("--key", help="only check API keys: this key may call the model, no key may not")
    args = ap.parse_args()
    if args.key:
        client = grpcclient.InferenceServerClient(url=args.url)
        refused(lambda: client.get_model_metadata(MODEL), "UNAUTHENTICATED", "API key")
        refused(lambda: client.get_model_metadata(MODEL, headers={"authorization": "Bearer nope-nope-nope-nope"}),
                "UNAUTHENTICATED", "not valid")
        meta = client.get_model_metadata(MODEL, headers={"authorization": f"Bearer {args.key}"}, as_json=True)
        assert meta["name"] == MODEL, meta
        print("tritonclient.grpc: API keys: ok")
        return
    labels = (args.models / MODEL / "imagenet-labels.txt").read_text().splitlines()
    client = grpcclient.InferenceServerClient(url=args.url)

    assert client.is_server_live() and client.is_server_ready()
    meta = client.get_server_metadata(as_json=True)
    assert meta["name"] == "scoria" and "binary_tensor_data" in meta["extensions"], meta
    for name in [MODEL, "all-minilm-l6-v2", "faq-javascript"]:
        assert client.is_model_ready(name), name
    meta = client.get_model_metadata(MODEL, as_json=True)
    assert meta["inputs"] == [{"name": "input", "datatype": "FP32", "shape": ["-1", "3", "224", "224"]}], meta
    assert meta["outputs"] == [{"name": "logits", "datatype": "FP32", "shape": ["-1", "1000"]}], meta

    tensors, answers, q = load(args.dir)
    for p in PHOTOS:
        x = grpcclient.InferInput("input", [1, 3, 224, 224], "FP32")
        x.set_data_from_numpy(tensors[p])
        r = client.infer(MODEL, [x], outputs=[grpcclient.InferRequestedOutput("logits")], request_id=p)
        assert r.get_response().id == p
        same_as_route(softmax_top5(r.as_numpy("logits")[0], labels), answers[p], f"{p} over gRPC")

    check_batch_and_faq(client, grpcclient, labels, tensors, answers, q)
    check_functions(client, grpcclient, args, answers, q)

    def infer(name, shape, datatype, data, model=MODEL):
        x = grpcclient.InferInput(name, shape, datatype)
        x.set_data_from_numpy(data)
        return lambda: client.infer(model, [x])

    one = tensors["chelsea"]
    refused(infer("input", [1, 3, 224, 224], "FP64", one.astype(np.float64)), "INVALID_ARGUMENT", "type is F64")
    refused(infer("input", [1, 3, 112, 448], "FP32", one.reshape(1, 3, 112, 448)), "INVALID_ARGUMENT",
            "shape is [1, 3, 112, 448]")
    refused(infer("input", [1, 3, 224, 224], "FP32", one, model="no-such-model"), "NOT_FOUND", "no model")
    refused(lambda: client.get_model_metadata(MODEL, model_version="999"), "NOT_FOUND", "no version `999`")

    # Framings tritonclient never sends, through grpc's own stubs: raw data shorter than the
    # shape, a shape of billions of elements, typed contents of the wrong count.
    from tritonclient.grpc import service_pb2, service_pb2_grpc
    stub = service_pb2_grpc.GRPCInferenceServiceStub(grpc.insecure_channel(args.url))

    def raw_call(shape, raw=None, contents=None):
        t = service_pb2.ModelInferRequest.InferInputTensor(name="input", datatype="FP32", shape=shape)
        if contents is not None:
            t.contents.fp32_contents.extend(contents)
        req = service_pb2.ModelInferRequest(model_name=MODEL, inputs=[t])
        if raw is not None:
            req.raw_input_contents.append(raw)
        try:
            stub.ModelInfer(req)
        except grpc.RpcError as e:
            return e.code(), e.details()
        return grpc.StatusCode.OK, ""

    code, details = raw_call([1, 3, 224, 224], raw=one.tobytes()[:1000])
    assert code == grpc.StatusCode.INVALID_ARGUMENT and "needs 602112 bytes" in details, (code, details)
    code, details = raw_call([4000000000, 3, 224, 224], raw=b"0123")
    assert code == grpc.StatusCode.INVALID_ARGUMENT and "needs" in details, (code, details)
    code, details = raw_call([1, 3, 224, 224], contents=[0.5] * 10)
    assert code == grpc.StatusCode.INVALID_ARGUMENT and "has 150528 elements" in details, (code, details)

    x = grpcclient.InferInput("input", [1, 3, 224, 224], "FP32")
    x.set_data_from_numpy(one)
    same_as_route(softmax_top5(client.infer(MODEL, [x]).as_numpy("logits")[0], labels), answers["chelsea"],
                  "after errors over gRPC")
    print("tritonclient.grpc: metadata, readiness, inference as /classify and /faq, a batch of 4, "
          "the functions as models, 7 refusals: ok")


if __name__ == "__main__":
    main()
