"""Build ResNet-152 with RANDOM weights, without PyTorch: the reference architecture's model,
for load tests. Its predictions are meaningless; its cost is the real model's.

No package ships trained ResNet-152 weights, so this script writes torchvision's
`resnet152` graph (v1.5: stride in the 3x3 convolution; batch norms folded into the
convolutions, as an inference export has them) with weights drawn from a fixed seed, so the
file and its sha256 are the same on every machine with the pinned numpy and onnx.

The weights are He-initialised, and each bottleneck's last convolution is scaled down so that
activations stay in range through 50 residual blocks (also in fp16).

A user with the trained model: export it to ONNX with input `input` [batch, 3, 224, 224]
(ImageNet mean/std) and output `logits` [batch, 1000], drop it in as `resnet152.onnx`, and
set `sha256` and `weights = "pretrained"` in model.toml.

Usage: build.py <out-dir> [--fp16]
  writes <out-dir>/resnet152.onnx (fp32) or <out-dir>/resnet152-fp16.onnx (fp16 weights and
  compute; input and output stay fp32, cast inside the graph), and copies the ImageNet labels.
"""

import os
import shutil
import sys

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

HERE = os.path.dirname(os.path.abspath(__file__))
LABELS = os.path.join(HERE, "..", "efficientnet-lite0", "imagenet-labels.txt")
IMAGE = 224
# Bottleneck blocks per stage and their widths (torchvision resnet152).
STAGES = [(3, 64), (8, 128), (36, 256), (3, 512)]
EXPANSION = 4
SEED = 152


class Graph:
    def __init__(self, dtype):
        self.rng = np.random.default_rng(SEED)
        self.dtype, self.nodes, self.inits, self.n = dtype, [], [], 0

    def name(self, base):
        self.n += 1
        return f"{base}_{self.n}"

    def const(self, base, arr):
        name = self.name(base)
        self.inits.append(numpy_helper.from_array(np.ascontiguousarray(arr.astype(self.dtype)), name))
        return name

    def node(self, op, inputs, **attrs):
        y = self.name(op.lower())
        self.nodes.append(helper.make_node(op, inputs, [y], **attrs))
        return y

    def conv(self, x, cin, cout, k, stride, gain=1.0, relu=True):
        """Conv (batch norm folded in: a weight and a bias), optionally followed by ReLU."""
        std = gain * np.sqrt(2.0 / (cin * k * k))
        w = self.rng.standard_normal((cout, cin, k, k), dtype=np.float32) * np.float32(std)
        b = self.rng.standard_normal(cout, dtype=np.float32) * np.float32(0.01)
        y = self.node(
            "Conv",
            [x, self.const("w", w), self.const("b", b)],
            kernel_shape=[k, k],
            strides=[stride, stride],
            pads=[k // 2] * 4,
        )
        return self.node("Relu", [y]) if relu else y

    def bottleneck(self, x, cin, width, stride):
        cout = width * EXPANSION
        y = self.conv(x, cin, width, 1, 1)
        y = self.conv(y, width, width, 3, stride)
        # Scaled down like a zero-initialised last batch norm, so depth does not blow up.
        y = self.conv(y, width, cout, 1, 1, gain=0.2, relu=False)
        skip = x if stride == 1 and cin == cout else self.conv(x, cin, cout, 1, stride, gain=0.7, relu=False)
        return self.node("Relu", [self.node("Add", [y, skip])])


def build(fp16):
    g = Graph(np.float16 if fp16 else np.float32)
    x = "input"
    if fp16:
        x = g.node("Cast", [x], to=TensorProto.FLOAT16)
    x = g.conv(x, 3, 64, 7, 2)
    x = g.node("MaxPool", [x], kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1])
    cin = 64
    for i, (blocks, width) in enumerate(STAGES):
        for b in range(blocks):
            x = g.bottleneck(x, cin, width, 2 if (b == 0 and i > 0) else 1)
            cin = width * EXPANSION
    x = g.node("Flatten", [g.node("GlobalAveragePool", [x])], axis=1)
    fc_w = g.rng.standard_normal((1000, cin), dtype=np.float32) * np.float32(np.sqrt(1.0 / cin))
    fc_b = np.zeros(1000, np.float32)
    x = g.node("Gemm", [x, g.const("fc_w", fc_w), g.const("fc_b", fc_b)], transB=1)
    out = g.node("Cast", [x], to=TensorProto.FLOAT) if fp16 else g.node("Identity", [x])
    g.nodes[-1].output[0] = "logits"
    del out
    graph = helper.make_graph(
        g.nodes,
        "resnet152-random" + ("-fp16" if fp16 else ""),
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["batch", 3, IMAGE, IMAGE])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", 1000])],
        g.inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], producer_name="scoria")
    model.ir_version = 8
    model.doc_string = "ResNet-152 with RANDOM weights (seed 152), for load tests only"
    onnx.checker.check_model(model)
    return model


def main():
    args = sys.argv[1:]
    fp16 = "--fp16" in args
    out_dir = [a for a in args if a != "--fp16"][0]
    os.makedirs(out_dir, exist_ok=True)
    dst = os.path.join(out_dir, "resnet152-fp16.onnx" if fp16 else "resnet152.onnx")
    tmp = dst + ".tmp"
    with open(tmp, "wb") as f:
        f.write(build(fp16).SerializeToString(deterministic=True))
    os.replace(tmp, dst)
    shutil.copyfile(LABELS, os.path.join(out_dir, "imagenet-labels.txt"))
    print(f"wrote {dst}")


if __name__ == "__main__":
    main()
