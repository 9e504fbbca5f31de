"""KServe's own Python SDK (`kserve` from PyPI: `InferenceRESTClient` and `InferenceGRPCClient`,
built on httpx and grpc.aio) against a running Scoria: a client family independent of Triton's.

Run by host/tests/oip.rs in its own virtual environment (.cache/venv-kserve: kserve pins a
pandas older than the tabular tools'), with the same --dir as tritonclient_http.py. Checks
readiness, and inference over REST (binary and JSON tensors) and gRPC equal to the route's
answers; a bad request is refused with the protocol's error. Exits non-zero if anything differs.
"""

import argparse
import asyncio
import json
import pathlib

import httpx
import numpy as np
from kserve import InferenceGRPCClient, InferenceRESTClient, InferInput, InferRequest, RESTConfig

from expected import MODEL, same_as_route, softmax_top5

def request(tensor, binary, request_id):
    x = InferInput(name="input", shape=list(tensor.shape), datatype="FP32")
    x.set_data_from_numpy(tensor, binary_data=binary)
    return InferRequest(model_name=MODEL, infer_inputs=[x], request_id=request_id)


async def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--url", required=True)
    ap.add_argument("--grpc-url", required=True)
    ap.add_argument("--dir", required=True, type=pathlib.Path)
    ap.add_argument("--models", required=True, type=pathlib.Path)
    ap.add_argument("--photos", required=True, type=pathlib.Path)
    args = ap.parse_args()
    labels = (args.models / MODEL / "imagenet-labels.txt").read_text().splitlines()
    tensor = np.fromfile(args.dir / "chelsea.f32", dtype=np.float32).reshape(1, 3, 224, 224)
    answer = json.loads((args.dir / "chelsea.json").read_text())
    base = f"http://{args.url}"

    rest = InferenceRESTClient(config=RESTConfig(protocol="v2", timeout=60))
    assert await rest.is_server_live(base)
    assert await rest.is_server_ready(base)
    assert await rest.is_model_ready(base, MODEL)
    assert not await rest.is_model_ready(base, "no-such-model")
    for binary in [True, False]:
        r = await rest.infer(base, request(tensor, binary, f"k-{binary}"), model_name=MODEL)
        assert r.id == f"k-{binary}", r.id
        same_as_route(softmax_top5(r.outputs[0].as_numpy()[0], labels), answer, f"kserve REST binary={binary}")
    try:
        await rest.infer(base, request(tensor.reshape(1, 3, 112, 448), True, "bad"), model_name=MODEL)
        raise AssertionError("a wrong shape was accepted")
    except httpx.HTTPStatusError as e:
        assert e.response.status_code == 400 and "shape is [1, 3, 112, 448]" in str(e), e
    await rest.close()

    grpc_client = InferenceGRPCClient(url=args.grpc_url, timeout=60)
    assert await grpc_client.is_server_ready()
    assert await grpc_client.is_model_ready(MODEL)
    r = await grpc_client.infer(request(tensor, True, "k-grpc"))
    same_as_route(softmax_top5(r.outputs[0].as_numpy()[0], labels), answer, "kserve gRPC")
    await grpc_client.close()
    print("kserve: REST (binary and JSON) and gRPC inference as /classify, readiness, a refusal: ok")


if __name__ == "__main__":
    asyncio.run(main())
