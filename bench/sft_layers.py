"""Cost of one SFT step on a real base model for each adapter layout, against LoRA on every layer in the same run.

    python bench/sft_layers.py --model runs/smollm2/base/model [--upper 10] [--batch 8] [--tokens 300]

Layouts: LoRA (fp32 base) and QLoRA (4-bit NF4 base), each on every decoder layer or on the upper ``--upper``
layers only (PEFT ``layers_to_transform``; the backward pass then stops at the lowest adapted layer). Each
layout trains ``--steps`` steps of a fixed random batch (``--batch`` x ``--tokens`` tokens, the last 20 tokens
carrying the loss, like a short answer after a contract excerpt); the first step is a warm-up and is not timed.
Prints tokens/s, the ratio to LoRA on every layer, and the machine's load while it ran.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time

TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


def step_seconds(model_dir: str, quantized: bool, upper: int, batch: int, tokens: int, steps: int) -> list[float]:
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoConfig, AutoModelForCausalLM, BitsAndBytesConfig

    kwargs = {}
    if quantized:
        kwargs["quantization_config"] = BitsAndBytesConfig(
            load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
            bnb_4bit_compute_dtype=torch.float32, bnb_4bit_quant_storage=torch.float32)
        kwargs["device_map"] = {"": "cpu"}
    layers = AutoConfig.from_pretrained(model_dir).num_hidden_layers
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32, **kwargs)
    chosen = list(range(layers - upper, layers)) if upper else None
    model = get_peft_model(model, LoraConfig(r=16, lora_alpha=32, target_modules=TARGETS, layers_to_transform=chosen,
                                             task_type="CAUSAL_LM"))
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4)
    generator = torch.Generator().manual_seed(0)
    ids = torch.randint(0, model.config.vocab_size, (batch, tokens), generator=generator)
    labels = ids.clone()
    labels[:, : tokens - 20] = -100
    with torch.no_grad():  # bitsandbytes repacks its CPU 4-bit weights on the first pass
        model(input_ids=ids[:1, :32])
    times = []
    for _ in range(steps):
        start = time.perf_counter()
        model(input_ids=ids, labels=labels).loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        times.append(time.perf_counter() - start)
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="runs/smollm2/base/model")
    parser.add_argument("--upper", type=int, default=10, help="adapted upper layers in the partial layouts")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--tokens", type=int, default=300)
    parser.add_argument("--steps", type=int, default=3, help="steps per layout; the first is not timed")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--json", default=None)
    args = parser.parse_args()

    import torch

    torch.set_num_threads(args.threads)
    load_before = os.getloadavg()[0]
    layouts = [("lora", False, 0), ("lora", False, args.upper), ("qlora", True, 0), ("qlora", True, args.upper)]
    results = []
    for name, quantized, upper in layouts:
        times = step_seconds(args.model, quantized, upper, args.batch, args.tokens, args.steps)
        best = min(times[1:]) if len(times) > 1 else times[0]
        results.append({"mode": name, "layers": f"upper {upper}" if upper else "all",
                        "step_s": [round(t, 2) for t in times], "median_step_s": round(statistics.median(times[1:] or times), 2),
                        "tokens_per_s": round(args.batch * args.tokens / best, 1)})
    baseline = results[0]["tokens_per_s"]
    for row in results:
        row["ratio_to_lora_all"] = round(row["tokens_per_s"] / baseline, 3)
        print(f"{row['mode']:6s} {row['layers']:9s} {row['tokens_per_s']:7.1f} tokens/s  "
              f"x{row['ratio_to_lora_all']:.2f} vs LoRA on every layer  (steps {row['step_s']})")
    summary = {"results": results, "batch": args.batch, "tokens": args.tokens, "threads": args.threads,
               "load_1min_before": load_before, "load_1min_after": os.getloadavg()[0], "cpus": os.cpu_count()}
    print(f"load average (1 min) before {load_before:.2f}, after {summary['load_1min_after']:.2f} on {os.cpu_count()} cores")
    if args.json:
        with open(args.json, "w", encoding="utf-8") as handle:
            json.dump(summary, handle, indent=2)


if __name__ == "__main__":
    main()
