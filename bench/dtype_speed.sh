#!/bin/bash
# fp32 against bf16 autocast: a few steps of every training stage of the SmolLM2 chain, one after the other.
#   bash bench/dtype_speed.sh runs/smollm2 /tmp/dtype-speed     (a finished `make demo` run; ~18 min on 2 cores)
# Each stage runs the command of configs/pipeline/smollm2.yaml with fewer steps and only model.quantization
# .compute_dtype changed; compare the `train_runtime` (or "stage ... complete in") lines of the logs in OUT.
# Run it on an idle machine: the two dtypes are measured in turn, not side by side.
set -euo pipefail
RUN=${1:?a finished SmolLM2 run directory, e.g. runs/smollm2}
OUT=${2:?an output folder}
BIN=${LEXALIGN:-.venv/bin/lexalign}
mkdir -p "$OUT"
for dt in float32 bfloat16; do
  $BIN reward --config configs/smollm2/reward.yaml name=r-$dt output_dir="$OUT/runs" sft_run="$RUN/sft" \
    "data.train=[$RUN/preferences/preferences.jsonl]" data.max_valid_pairs=8 training.max_steps=4 \
    training.logging_steps=1 training.save_steps=100 model.quantization.compute_dtype=$dt > "$OUT/reward-$dt.log" 2>&1
  $BIN dpo --config configs/smollm2/dpo.yaml name=d-$dt output_dir="$OUT/runs" sft_run="$RUN/sft" eval.reward_run="" \
    "data.train=[$RUN/preferences-own/preferences.jsonl]" "data.valid=[$RUN/preferences-valid/preferences.jsonl]" \
    data.max_valid_pairs=4 training.max_steps=2 training.logging_steps=1 training.save_steps=100 \
    model.quantization.compute_dtype=$dt > "$OUT/dpo-$dt.log" 2>&1
  $BIN ppo --config configs/smollm2/grpo.yaml name=g-$dt output_dir="$OUT/runs" sft_run="$RUN/sft" grpo.max_steps=4 \
    model.quantization.compute_dtype=$dt > "$OUT/grpo-$dt.log" 2>&1
  $BIN ppo --config configs/smollm2/ppo.yaml name=p-$dt output_dir="$OUT/runs" sft_run="$RUN/sft" reward_run="$RUN/reward" \
    model.quantization.compute_dtype=$dt > "$OUT/ppo-$dt.log" 2>&1
  $BIN sft --config configs/smollm2/sft.yaml name=s-$dt output_dir="$OUT/runs" model.path="$RUN/base/model" \
    data.max_valid_records=8 training.max_steps=4 training.logging_steps=1 training.save_steps=1000 \
    model.quantization.compute_dtype=$dt > "$OUT/sft-$dt.log" 2>&1
done
grep -H -o "'train_runtime': '[0-9.]*'\|complete in [0-9.]* s" "$OUT"/*.log
