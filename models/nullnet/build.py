"""Build `nullnet`: an ImageNet-shaped model that costs almost nothing, so that a benchmark
through it measures Scoria's own cost per request (HTTP, a fresh instance, the function's
body handling, wasi-nn, batching) rather than a model's.

It takes the same input as the image classifiers, float32 [batch, 3, 224, 224], averages each
channel and maps the three means to 1,000 logits with a fixed random matrix. Its answers mean
nothing (the card says `weights = "random"`).

Usage: build.py <out-dir>   writes <out-dir>/nullnet.onnx and copies the ImageNet labels.
"""

import os
import shutil
import sys

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

HERE = os.path.dirname(os.path.abspath(__file__))
LABELS = os.path.join(HERE, "..", "efficientnet-lite0", "imagenet-labels.txt")


def main():
    out = sys.argv[1]
    os.makedirs(out, exist_ok=True)
    weights = np.random.default_rng(0).standard_normal((3, 1000)).astype(np.float32)
    graph = helper.make_graph(
        [
            helper.make_node("ReduceMean", ["input", "axes"], ["means"], keepdims=0),
            helper.make_node("MatMul", ["means", "weights"], ["logits"]),
        ],
        "nullnet",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["batch", 3, 224, 224])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", 1000])],
        [numpy_helper.from_array(weights, "weights"), numpy_helper.from_array(np.array([2, 3], np.int64), "axes")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)], producer_name="scoria")
    model.ir_version = 9
    onnx.checker.check_model(model)
    onnx.save(model, os.path.join(out, "nullnet.onnx"))
    shutil.copyfile(LABELS, os.path.join(out, "imagenet-labels.txt"))


if __name__ == "__main__":
    main()
