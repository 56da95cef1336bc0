#!/usr/bin/env bash
# GPU check of lexalign's training stages: QLoRA SFT and DPO on the ~100M Llama of configs/base-100m.yaml,
# through the stages' own code, reporting tokens/s, MFU, peak GPU memory and the losses.
#
#   bash bench/gpu_check.sh --prepare        # where pip reaches a package index: the wheels a GPU image lacks
#                                            # -> bench/gpu_wheels/ (ignored by git; carry it to the GPU machine)
#   bash bench/gpu_check.sh [ARGS]           # on the GPU machine, offline: installs the missing wheels into
#                                            # /tmp/lexalign-gpu-site, then runs the check (~3 min on an H100)
#   bash bench/gpu_check.sh --cpu [ARGS]     # toy sizes on the CPU, same stages (tests/test_gpu_check.py)
#
# ARGS go to `python bench/gpu_check.py run` (e.g. --sft-steps 60 --no-qlora --peak-tflops 989); --prepare
# takes `prepare` options (--python-version, --bnb-cuda). The summary is $OUT/gpu_check.json (else
# bench/out/gpu_check.json or --out DIR), with the log beside it. PYTHON picks the interpreter (default: .venv's
# python when there is one, else python3).
set -euo pipefail
cd "$(dirname "$0")/.."

if [[ -z "${PYTHON:-}" ]]; then
    if [[ -x .venv/bin/python ]]; then PYTHON=.venv/bin/python; else PYTHON=python3; fi
fi
export PYTHONUNBUFFERED=1
mode=gpu
case "${1:-}" in
    --prepare) mode=prepare; shift ;;
    --cpu) mode=cpu; shift ;;
esac

case "$mode" in
prepare)
    exec "$PYTHON" bench/gpu_check.py prepare "$@"
    ;;
cpu)
    exec "$PYTHON" bench/gpu_check.py run --device cpu "$@"
    ;;
gpu)
    out="${OUT:-bench/out}"
    mkdir -p "$out"
    site="${LEXALIGN_GPU_SITE:-/tmp/lexalign-gpu-site}"
    {
        command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
        "$PYTHON" bench/gpu_check.py install --wheels bench/gpu_wheels --target "$site"
        # The installed folder goes first: it holds the versions lexalign pins where the image's differ.
        PYTHONPATH="$site${PYTHONPATH:+:$PYTHONPATH}" "$PYTHON" bench/gpu_check.py run --device cuda "$@"
    } 2>&1 | tee "$out/gpu_check.log"
    ;;
esac
