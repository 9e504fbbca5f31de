#!/usr/bin/env bash
# The GPU benchmark on a lent GPU machine that has no network (see ../shared/gpu/README.md):
# it carries what `./dev bench gpu-bundle` put in .gpu/ (the onnxruntime-gpu wheel's last
# part and installer, the host built here, oha, the function, the photos, and the wheels that
# generate ResNet-152), after the other wheel parts were copied to /tmp/gpu one call each.
#
#   run carry=[".gpu/part-4", ".gpu/wheel.sha256", ".gpu/wheel.name",
#              ".gpu/install-on-device.sh", ".gpu/bundle"]  command='bash bench/gpu-device.sh'
#
# Results go to $OUT (or /tmp/bench-gpu): gpu-results.json, the host logs, and the tables.
set -uo pipefail
cd "$(dirname "$0")/.."
out="${OUT:-/tmp/bench-gpu}"
mkdir -p "$out" /tmp/gpu /tmp/scoria-bin /tmp/scoria-py
cp .gpu/part-* /tmp/gpu/ 2>/dev/null
# shellcheck disable=SC1091
source .gpu/install-on-device.sh || exit 1
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee "$out/gpu.txt"
bundle=.gpu/bundle
for bin in scoria oha; do
    python3 -c 'import lzma, sys; open(sys.argv[2], "wb").write(lzma.open(sys.argv[1]).read())' \
        "$bundle/$bin.xz" "/tmp/scoria-bin/$bin" && chmod +x "/tmp/scoria-bin/$bin"
done
mkdir -p functions/target/wasm32-wasip2/release tests/data
cp "$bundle/image_classify.wasm" functions/target/wasm32-wasip2/release/
cp "$bundle"/photos/* tests/data/
python3 -m pip install -q --no-index --no-deps --target /tmp/scoria-py "$bundle"/wheels/*.whl || exit 1
for variant in resnet152 resnet152-fp16; do
    flag=""
    [ "$variant" = resnet152-fp16 ] && flag="--fp16"
    PYTHONPATH=/tmp/scoria-py python3 models/resnet152/build.py "models/$variant" $flag || exit 1
    want="$(sed -n 's/^sha256 = "\(.*\)"/\1/p' "models/$variant/model.toml")"
    got="$(sha256sum "models/$variant/$variant.onnx" | cut -d' ' -f1)"
    if [ "$want" != "$got" ]; then
        # Same graph and cost, other bytes (a different numpy or protobuf): benchmark it anyway.
        echo "WARNING: $variant.onnx sha256 $got differs from model.toml's $want; using it for the benchmark" | tee -a "$out/warnings.txt"
        sed -i "s/^sha256 = \".*\"/sha256 = \"$got\"/" "models/$variant/model.toml"
    fi
done
PYTHONPATH=/tmp/ort-gpu python3 bench/gpu.py --scoria /tmp/scoria-bin/scoria --oha /tmp/scoria-bin/oha \
    --out "$out" --python python3 "$@" 2>&1 | tee "$out/report.txt"
