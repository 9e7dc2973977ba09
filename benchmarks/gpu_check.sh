#!/usr/bin/env bash
# The GPU checks in one call, for a machine with CUDA: `pytest -m gpu`, then the full-size
# benchmark with --compile. Logs and the benchmark's JSON go to $OUT (or ./gpu-results).
#
# A GPU image may lack some of the project's packages (the lent H200's has torch, transformers,
# peft, safetensors and sentencepiece, but not diffusers, pydantic or orjson) and cannot download
# them. Carry them as Python 3.12 wheels in .whl/, fetched beforehand on a machine that can:
#   echo /.whl/ >> .git/info/exclude
#   python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
#     --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
#     -d .whl diffusers==0.42.1 pydantic==2.13.4 pydantic-core==2.46.4 annotated-types==0.7.0 \
#     typing-inspection==0.4.2 orjson==3.13.0 platformdirs==4.14.8 networkx==3.6.1
set -uo pipefail
cd "$(dirname "$0")/.."
out=${OUT:-gpu-results}
mkdir -p "$out"
if compgen -G ".whl/*.whl" > /dev/null; then
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
    export PYTHONPATH=/tmp/site
fi
# The project itself, without touching the image's packages: its node pack is an entry point.
python3 -m pip install -q --no-index --no-deps --no-build-isolation --target /tmp/project . \
    || { echo "cannot install the project"; exit 2; }
export PYTHONPATH=/tmp/project:${PYTHONPATH:-} PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv > "$out/gpu.txt" 2>&1
python3 -m pytest -q -m gpu -p no:cacheprovider tests/test_gpu.py 2>&1 | tee "$out/gpu-tests.log"
python3 benchmarks/gpu_kolors.py --compile --models-dir /tmp/kolors-full-random --out "$out/gpu_kolors.json" \
    > "$out/gpu_kolors.log" 2>&1
tail -60 "$out/gpu_kolors.log"
