"""Turn a fitted scikit-learn pipeline into a Scoria model folder: `model.onnx` and its card.

    python models/tools/sklearn_onnx.py PIPELINE.joblib models/<name> \
        [--categorical COL ...] [--allow-missing COL ...] [--class-names A B ...] \
        [--licence SPDX] [--source TEXT]

The pipeline (a `Pipeline`, or a bare estimator) must have been fitted on a pandas DataFrame,
so that it knows its feature names (`feature_names_in_`), or be given `--features`. Columns
named by `--categorical` hold strings and must reach a `OneHotEncoder`; every other column is
a number.

What it writes, and why:
- `model.onnx`, converted with skl2onnx (`ai.onnx.ml` operators). Classifiers keep only their
  `probabilities` output (no `ZipMap`): the tabular function picks the class from it, and the
  `label` output of a model with string classes would be a string tensor, which wasi-nn
  cannot carry. String columns become `int64` inputs holding each value's index in the
  encoder's categories (the function maps strings to indices from the card), so the graph
  needs no string tensors either.
- `model.toml`: the card, whose `[preprocess]` is the feature schema the tabular function
  validates records against: each feature's name, kind, graph input and column, categories,
  what an unknown category does, whether a missing value (`null`) is allowed; the task, and
  the class labels in the order of the probability columns.
"""

import argparse
import hashlib
import json
import os
import sys

import numpy as np
import onnx
from onnx import TensorProto, helper

OPSETS = {"": 17, "ai.onnx.ml": 3}


def toml_str(s):
    # JSON string escapes are valid TOML basic-string escapes.
    return json.dumps(str(s), ensure_ascii=True)


def final_estimator(model):
    return model.steps[-1][1] if hasattr(model, "steps") else model


def is_classifier(model):
    return hasattr(final_estimator(model), "classes_")


def convert(model, features, categorical):
    """The ONNX graph of `model`. All-numeric models take one float matrix `features`
    [N, F]; models with categorical columns take one [N, 1] input per column, as a
    `ColumnTransformer` selects them by name."""
    from skl2onnx import convert_sklearn
    from skl2onnx.common.data_types import FloatTensorType, StringTensorType

    if categorical:
        types = [
            (f, StringTensorType([None, 1]) if f in categorical else FloatTensorType([None, 1]))
            for f in features
        ]
    else:
        types = [("features", FloatTensorType([None, len(features)]))]
    options = {id(final_estimator(model)): {"zipmap": False}} if is_classifier(model) else {}
    return convert_sklearn(model, initial_types=types, options=options, target_opset=OPSETS)


def consumers(graph, name):
    return [n for n in graph.node if name in n.input]


def encode_string_inputs(model):
    """Rewrite every string input into an int64 input of category indices.

    A string input may reach `OneHotEncoder` nodes only, directly or through shape-only nodes
    (`Gather`, `Identity`, `Reshape`). Each encoder's `cats_strings` becomes `cats_int64s`
    0..k. Returns {input: (categories, unknown)}, `unknown` being `ignore` (an unseen value
    encodes as all zeros, as `handle_unknown="ignore"` does) or `refuse`.
    """
    graph = model.graph
    found = {}
    for inp in graph.input:
        if inp.type.tensor_type.elem_type != TensorProto.STRING:
            continue
        cats, unknown, frontier, seen = None, None, [inp.name], set()
        while frontier:
            name = frontier.pop()
            for node in consumers(graph, name):
                if id(node) in seen:
                    continue
                seen.add(id(node))
                if node.op_type in ("Gather", "Identity", "Reshape") and node.input[0] == name:
                    frontier.extend(node.output)
                elif node.op_type == "OneHotEncoder":
                    attrs = {a.name: a for a in node.attribute}
                    if "cats_strings" not in attrs:
                        sys.exit(f"error: `{inp.name}` reaches a OneHotEncoder without string categories")
                    these = [s.decode() for s in attrs["cats_strings"].strings]
                    if cats is not None and these != cats:
                        sys.exit(f"error: `{inp.name}` reaches two OneHotEncoders with different categories")
                    cats = these
                    zeros = attrs["zeros"].i if "zeros" in attrs else 1
                    unknown = "ignore" if zeros else "refuse"
                    kept = [a for a in node.attribute if a.name != "cats_strings"]
                    del node.attribute[:]
                    node.attribute.extend(kept)
                    node.attribute.append(helper.make_attribute("cats_int64s", list(range(len(cats)))))
                else:
                    sys.exit(
                        f"error: the string column `{inp.name}` reaches a {node.op_type} node; "
                        "only OneHotEncoder is supported for categorical columns"
                    )
        if cats is None:
            sys.exit(f"error: the string column `{inp.name}` reaches no OneHotEncoder")
        inp.type.tensor_type.elem_type = TensorProto.INT64
        found[inp.name] = (cats, unknown)
    return found


def keep_outputs(model, names):
    kept = [o for o in model.graph.output if o.name in names]
    del model.graph.output[:]
    model.graph.output.extend(kept)


def number_class_labels(model):
    """Give classifier nodes integer class labels 0..k instead of strings. Their label
    output is no longer the graph's (the card maps probability columns to the class names),
    but a runtime still types it, and tract cannot type a string label."""
    for node in model.graph.node:
        attrs = [a for a in node.attribute if a.name == "classlabels_strings"]
        if not attrs:
            continue
        k = len(attrs[0].strings)
        kept = [a for a in node.attribute if a.name != "classlabels_strings"]
        del node.attribute[:]
        node.attribute.extend(kept)
        ints = "classlabels_int64s" if node.op_type.startswith("TreeEnsemble") else "classlabels_ints"
        node.attribute.append(helper.make_attribute(ints, list(range(k))))


def dims(value_info):
    return [d.dim_value if d.dim_value > 0 else -1 for d in value_info.type.tensor_type.shape.dim]


def export(model, out, *, features, categorical=(), allow_missing=(), class_names=None,
           description="", source="", licence="unknown", version=None):
    """Write `out/model.onnx` and `out/model.toml` for the fitted `model`; returns the card's
    output name."""
    categorical, allow_missing = set(categorical), set(allow_missing)
    unknown_cols = (categorical | allow_missing) - set(features)
    if unknown_cols:
        sys.exit(f"error: not features of the model: {sorted(unknown_cols)}")
    onx = convert(model, features, categorical)
    encoded = encode_string_inputs(onx)
    classifier = is_classifier(model)
    if classifier:
        keep_outputs(onx, {"probabilities"})
        number_class_labels(onx)
        classes = list(final_estimator(model).classes_)
        names = [str(c) for c in classes] if class_names is None else list(class_names)
        if len(names) != len(classes):
            sys.exit(f"error: {len(names)} class names for {len(classes)} classes")
    onnx.checker.check_model(onx)
    os.makedirs(out, exist_ok=True)
    data = onx.SerializeToString()
    with open(os.path.join(out, "model.onnx"), "wb") as f:
        f.write(data)
    digest = hashlib.sha256(data).hexdigest()
    name = os.path.basename(os.path.normpath(out))

    lines = [
        "# Written by models/tools/sklearn_onnx.py; do not edit (rebuild instead).",
        f"name = {toml_str(name)}",
        f"version = {toml_str(version or digest[:12])}",
        f"description = {toml_str(description)}",
        'format = "onnx"',
        'file = "model.onnx"',
        f"sha256 = {toml_str(digest)}",
        'weights = "trained"',
        f"source = {toml_str(source)}",
        f"licence = {toml_str(licence)}",
        "",
    ]
    for inp in onx.graph.input:
        dtype = "i64" if inp.name in encoded else "f32"
        lines.append(f'[[inputs]]\nname = {toml_str(inp.name)}\nshape = {dims(inp)}\ndtype = "{dtype}"\n')
    for o in onx.graph.output:
        lines.append(f'[[outputs]]\nname = {toml_str(o.name)}\nshape = {dims(o)}\ndtype = "f32"\n')
    lines.append("# The feature schema the tabular function checks records against.")
    lines.append("[preprocess]")
    lines.append(f'task = "{"classifier" if classifier else "regressor"}"')
    lines.append(f"output = {toml_str(onx.graph.output[0].name)}")
    if classifier:
        lines.append("classes = [" + ", ".join(toml_str(c) for c in names) + "]")
    lines.append("")
    for column, feature in enumerate(features):
        lines.append("[[preprocess.features]]")
        lines.append(f"name = {toml_str(feature)}")
        if categorical:
            lines.append(f"input = {toml_str(feature)}\ncolumn = 0")
        else:
            lines.append(f'input = "features"\ncolumn = {column}')
        if feature in categorical:
            cats, unknown = encoded[feature]
            lines.append('kind = "category"')
            lines.append("categories = [" + ", ".join(toml_str(c) for c in cats) + "]")
            lines.append(f'unknown = "{unknown}"')
        else:
            lines.append('kind = "number"')
        lines.append(f"missing = \"{'allow' if feature in allow_missing else 'refuse'}\"")
        lines.append("")
    with open(os.path.join(out, "model.toml"), "w") as f:
        f.write("\n".join(lines))
    return onx.graph.output[0].name


def main():
    import joblib

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("pipeline", help="a fitted pipeline saved with joblib.dump")
    p.add_argument("out", help="the model folder to write, models/<name>")
    p.add_argument("--features", nargs="+", help="feature names, if the model has no feature_names_in_")
    p.add_argument("--categorical", nargs="*", default=[], help="string columns (one-hot encoded)")
    p.add_argument("--allow-missing", nargs="*", default=[], help="columns that may be null (NaN)")
    p.add_argument("--class-names", nargs="+", help="labels for classes_, in its order")
    p.add_argument("--description", default="")
    p.add_argument("--source", default="")
    p.add_argument("--licence", default="unknown")
    a = p.parse_args()
    model = joblib.load(a.pipeline)
    features = a.features or [str(f) for f in getattr(model, "feature_names_in_", [])]
    if not features:
        sys.exit("error: the model was not fitted on a DataFrame; name its columns with --features")
    export(
        model, a.out, features=features, categorical=a.categorical, allow_missing=a.allow_missing,
        class_names=a.class_names, description=a.description, source=a.source or f"{a.pipeline}, converted by skl2onnx",
        licence=a.licence,
    )
    print(f"wrote {a.out}/model.onnx and {a.out}/model.toml")


if __name__ == "__main__":
    np.set_printoptions(legacy=False)
    main()
