"""SFT benchmarks, each against a baseline measured in the same run.

    python bench/sft_bench.py throughput --model runs/tiny/base/model
    python bench/sft_bench.py packing    --model runs/tiny/base/model
    python bench/sft_bench.py memory     --config configs/base-100m.yaml
    python bench/sft_bench.py throughput --model runs/smollm2/base/model --sft-config configs/smollm2/sft.yaml
    python bench/sft_bench.py memory     --model runs/smollm2/base/model --sft-config configs/smollm2/sft.yaml --given-model

throughput: tokens/s of the SFT stage (TRL SFTTrainer through lexalign) vs a bare PyTorch loop on the same
            model, the same collated batches and the same precision (LoRA fp32 and QLoRA NF4); goal >= 0.9.
            Also the model FLOPs utilization (MFU): model FLOPs per token (bench/roofline.py: forward + the
            input gradients of the layers the backward pass goes through) x tokens/s over the fp32 matmul peak
            measured in the same run with the same threads.
packing:    share of non-padding tokens in the training batches with and without padding-free packing;
            goal >= 0.95 with packing.
memory:     peak RSS of one training process for QLoRA, LoRA and full fine-tuning of a ~100M-parameter
            Llama (with gradient checkpointing, as QLoRA recipes train; --no-gradient-checkpointing to compare),
            also above the process's floor after its imports; goal QLoRA <= 0.45 x LoRA. ``--given-model``
            measures ``--model`` (e.g. SmolLM2) with the ``--sft-config`` recipe instead of a random ~100M model.
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(Path(__file__).resolve().parent))
SFT_YAML = ROOT / "configs" / "sft.yaml"  # the recipe measured; --sft-config replaces it


def sft_config(model: str, out: str, mode: str, steps: int, batch: int, extra: list[str] | None = None):
    from lexalign.config import load_config
    from lexalign.sft.train import SFTStageConfig

    mode_overrides = {
        "qlora": ["model.tuning=lora", "model.quantization.bits=4"],
        "lora": ["model.tuning=lora", "model.quantization.bits=null"],
        "full": ["model.tuning=full", "model.quantization.bits=null"],
    }[mode]
    overrides = [f"model.path={model}", f"output_dir={out}", "resume=false", f"training.max_steps={steps}",
                 f"training.per_device_train_batch_size={batch}", "training.eval_strategy=no",
                 "training.save_strategy=no", f"training.logging_steps={steps}", "data.max_train_records=512",
                 *mode_overrides, *(extra or [])]
    return load_config(SFTStageConfig, SFT_YAML, overrides)


def build_trainer(config, out: Path):
    """The SFT stage's own trainer (same data pipeline, model loading and collator) without running it."""
    from datasets import Dataset
    from trl import SFTConfig, SFTTrainer

    from lexalign.modeling import load_model, load_tokenizer, lora_config
    from lexalign.runs import RunDir
    from lexalign.sft.train import load_split, to_trainer_records
    from lexalign.training import make_trl_args, mixed_precision

    run = RunDir(out, "bench", config).start()
    tokenizer = load_tokenizer(config.model.path)
    records = to_trainer_records(load_split(config.data.train, config.data.max_train_records), False)
    model, _, dtype = load_model(config.model)
    peft_config = None
    if config.model.tuning == "lora":
        if config.model.quantization.bits:
            from peft import prepare_model_for_kbit_training

            model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=False)
        peft_config = lora_config(config.model.lora)
    args = make_trl_args(SFTConfig, config.training, run, **mixed_precision(config.training, dtype),
                         eos_token=tokenizer.eos_token)
    return SFTTrainer(model=model, args=args, train_dataset=Dataset.from_list(records), processing_class=tokenizer,
                      peft_config=peft_config)


def count_tokens(batch) -> int:
    if "attention_mask" in batch:
        return int(batch["attention_mask"].sum())
    return int(batch["input_ids"].numel())


def stage_tokens_per_s(model: str, mode: str, steps: int, batch: int) -> float:
    """Tokens/s of ``train_sft`` itself: non-padding tokens it trained on / its training time."""
    from lexalign.runs import read_metrics
    from lexalign.sft.train import train_sft

    with tempfile.TemporaryDirectory() as out:
        config = sft_config(model, out, mode, steps, batch)
        run_dir = train_sft(config)
        train_runtime = [m["train_runtime"] for m in read_metrics(run_dir) if "train_runtime" in m][-1]
        tokens = [m["num_tokens"] for m in read_metrics(run_dir) if "num_tokens" in m]
        if not tokens:  # num_tokens is logged with the loss; run a logging step at the end
            raise RuntimeError("the stage logged no num_tokens")
        return tokens[-1] / train_runtime


def bare_tokens_per_s(model: str, mode: str, steps: int, batch: int) -> tuple[float, float]:
    """A plain PyTorch loop over the very batches the stage's trainer would see: forward, backward, AdamW step.
    Returns tokens/s and the mean sequence length (non-padding tokens per sequence)."""
    import torch

    with tempfile.TemporaryDirectory() as out:
        config = sft_config(model, out, mode, steps, batch)
        trainer = build_trainer(config, Path(out) / "bare")
        net = trainer.model
        net.train()
        optimizer = torch.optim.AdamW([p for p in net.parameters() if p.requires_grad], lr=1e-4)
        batches = []
        for i, item in enumerate(trainer.get_train_dataloader()):
            if i == steps:
                break
            batches.append(item)
        # The stage evaluates before it trains; on CPU that first no-grad pass lets bitsandbytes repack its 4-bit
        # weights for its faster CPU kernel, which training then uses too. The baseline gets the same pass.
        with torch.no_grad():
            net.eval()
            first = {k: v for k, v in batches[0].items() if k in ("input_ids", "attention_mask", "labels", "position_ids")}
            net(**first, use_cache=False)
            net.train()
        tokens = sequences = 0
        start = time.perf_counter()
        for item in batches:
            item = {k: v for k, v in item.items() if k in ("input_ids", "attention_mask", "labels", "position_ids")}
            loss = net(**item, use_cache=False).loss
            loss.backward()
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            tokens += count_tokens(item)
            sequences += int(item["input_ids"].shape[0])
        return tokens / (time.perf_counter() - start), tokens / sequences


def run_throughput(args: argparse.Namespace) -> dict:
    import os

    import torch
    from roofline import ModelShape, measure_peaks

    torch.set_num_threads(args.threads)
    peaks = measure_peaks(args.threads)
    shape = ModelShape.from_folder(args.model)
    layers = sft_config(args.model, tempfile.gettempdir(), "lora", 1, 1).model.lora.layers_to_transform
    backward_layers = shape.layers - min(layers) if layers else None
    print(f"peaks: {peaks.describe()}; load average {os.getloadavg()[0]:.2f}")
    results: dict = {"peaks": peaks.as_dict(), "sft_config": str(SFT_YAML), "load_1min_before": os.getloadavg()[0]}
    for mode in args.modes:
        stage, bare, lengths = [], [], []
        for _ in range(args.repeats):  # interleaved so that background load hits both alike
            tokens_per_s, mean_length = bare_tokens_per_s(args.model, mode, args.steps, args.batch)
            bare.append(tokens_per_s)
            lengths.append(mean_length)
            stage.append(stage_tokens_per_s(args.model, mode, args.steps, args.batch))
        flops_per_token = shape.train_flops_per_token(statistics.mean(lengths), lora=True, backward_layers=backward_layers)
        results[mode] = {"stage_tokens_per_s": statistics.median(stage), "bare_tokens_per_s": statistics.median(bare),
                         "ratio": statistics.median(stage) / statistics.median(bare), "stage_runs": stage,
                         "bare_runs": bare, "mean_sequence_tokens": statistics.mean(lengths),
                         "model_flops_per_token": flops_per_token,
                         "stage_mfu": statistics.median(stage) * flops_per_token / peaks.fp32_flops,
                         "bare_mfu": statistics.median(bare) * flops_per_token / peaks.fp32_flops}
        print(f"{mode}: lexalign sft {results[mode]['stage_tokens_per_s']:.0f} tok/s, bare loop "
              f"{results[mode]['bare_tokens_per_s']:.0f} tok/s, ratio {results[mode]['ratio']:.3f} (goal >= 0.9); "
              f"MFU {results[mode]['stage_mfu']:.1%} (bare {results[mode]['bare_mfu']:.1%}; "
              f"{flops_per_token / 1e6:.0f} MFLOP/token at {results[mode]['mean_sequence_tokens']:.0f} tokens/sequence)")
    results["load_1min_after"] = os.getloadavg()[0]
    return results


def run_packing(args: argparse.Namespace) -> dict:
    results = {}
    for packing in (False, True):
        with tempfile.TemporaryDirectory() as out:
            extra = ["training.packing=true"] if packing else []
            config = sft_config(args.model, out, "lora", 1, args.batch, extra)
            trainer = build_trainer(config, Path(out) / "pack")
            real = total = 0
            for i, item in enumerate(trainer.get_train_dataloader()):
                if i == args.steps:
                    break
                if "attention_mask" in item:
                    real += int(item["attention_mask"].sum())
                else:  # padding-free: pads only appear as trailing positions that were padded in
                    real += int((item["input_ids"] != trainer.processing_class.pad_token_id).sum())
                total += item["input_ids"].numel()
        key = "packed" if packing else "padded"
        results[key] = {"non_padding_fraction": real / total, "tokens": total, "batches": args.steps}
        print(f"{key}: non-padding fraction {real / total:.4f} over {total} tokens")
    results["ratio"] = results["packed"]["non_padding_fraction"] / results["padded"]["non_padding_fraction"]
    print(f"packed / padded: {results['ratio']:.3f} (goal: packed >= 0.95)")
    return results


def run_memory(args: argparse.Namespace) -> dict:
    """One fresh process per mode so that each peak RSS is its own."""
    if args.given_model:
        model_dir = Path(args.model)
    else:
        model_dir = Path(args.workdir) / "model-100m"
        if not (model_dir / "config.json").is_file():
            build_random_model(args.config, model_dir)
    results = {}
    for mode in ("qlora", "lora", "full"):
        child = subprocess.run([sys.executable, __file__, "memory-child", "--model", str(model_dir), "--mode", mode,
                                "--steps", str(args.steps), "--batch", str(args.batch), "--sft-config", str(SFT_YAML),
                                *(["--gradient-checkpointing"] if args.gradient_checkpointing else [])],
                               capture_output=True, text=True)
        if child.returncode != 0:
            raise RuntimeError(f"{mode} failed:\n{child.stderr[-3000:]}")
        results[mode] = json.loads(child.stdout.strip().splitlines()[-1])
        print(f"{mode}: peak RSS {results[mode]['peak_rss_mib']:.0f} MiB ({results[mode]['floor_rss_mib']:.0f} MiB "
              f"after the imports, before any model loads; {results[mode]['above_floor_mib']:.0f} MiB above that); "
              f"while loading {results[mode]['load_peak_mib']:.0f} MiB, while training {results[mode]['train_peak_mib']:.0f} MiB")
    for key in ("peak_rss_mib", "above_floor_mib", "train_peak_mib"):
        results[f"qlora_over_lora_{key}"] = results["qlora"][key] / results["lora"][key]
        results[f"full_over_lora_{key}"] = results["full"][key] / results["lora"][key]
    print(f"QLoRA / LoRA peak RSS: {results['qlora_over_lora_peak_rss_mib']:.3f} (goal <= 0.45); above the import "
          f"floor: {results['qlora_over_lora_above_floor_mib']:.3f}; full / LoRA: "
          f"{results['full_over_lora_peak_rss_mib']:.3f} / {results['full_over_lora_above_floor_mib']:.3f}; "
          f"training peak QLoRA / LoRA: {results['qlora_over_lora_train_peak_mib']:.3f}")
    return results


def build_random_model(config_path: str, out: Path) -> None:
    """A ~100M Llama with random weights and the tiny tokenizer code path (training quality is irrelevant)."""
    from lexalign.basemodel import load_base_config, make_model, read_corpus, resolve_corpus, train_tokenizer

    config = load_base_config(config_path)
    text = read_corpus(resolve_corpus(config.corpus))[:1_000_000]
    tokenizer = train_tokenizer(text, config.tokenizer.vocab_size, config.tokenizer.min_frequency,
                                config.model.max_position_embeddings)
    model = make_model(tokenizer, config.model, config.seed)
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(str(out))
    tokenizer.save_pretrained(str(out))
    print(f"built {sum(p.numel() for p in model.parameters()) / 1e6:.1f}M-parameter model in {out}")


def memory_child(args: argparse.Namespace) -> None:
    import logging

    logging.disable(logging.WARNING)
    import datasets  # noqa: F401 - imported before the floor is read: every mode pays for them alike
    import peft  # noqa: F401
    import trl  # noqa: F401

    import lexalign.modeling
    from lexalign.sft.train import train_sft

    def high_water_kib() -> int:
        status = Path("/proc/self/status").read_text()
        return int(status.split("VmHWM:")[1].split()[0])

    load_model = lexalign.modeling.load_model
    after_load: dict[str, int] = {}

    def load_and_mark(*a, **k):  # the peak of loading, then the high-water mark starts again for training
        loaded = load_model(*a, **k)
        after_load["load_peak_kib"] = high_water_kib()
        Path("/proc/self/clear_refs").write_text("5")  # Linux: reset VmHWM to the current RSS
        return loaded

    lexalign.modeling.load_model = load_and_mark
    floor_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    with tempfile.TemporaryDirectory() as out:
        train_sft(sft_config(args.model, out, args.mode, args.steps, args.batch,
                             ["training.max_length=512", "data.max_train_records=64", "data.max_valid_records=8",
                              f"training.per_device_eval_batch_size={args.batch}",
                              f"training.gradient_checkpointing={str(args.gradient_checkpointing).lower()}"]))
    train_peak_kib = high_water_kib()  # (clear_refs resets ru_maxrss too, so the overall peak is the larger one)
    peak_kib = max(after_load["load_peak_kib"], train_peak_kib)
    print(json.dumps({"peak_rss_mib": peak_kib / 1024, "floor_rss_mib": floor_kib / 1024,
                      "load_peak_mib": after_load["load_peak_kib"] / 1024, "train_peak_mib": train_peak_kib / 1024,
                      "above_floor_mib": (peak_kib - floor_kib) / 1024, "mode": args.mode,
                      "gradient_checkpointing": args.gradient_checkpointing, "batch": args.batch, "steps": args.steps}))


def main() -> None:
    global SFT_YAML  # every helper reads the recipe chosen on the command line
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("bench", choices=["throughput", "packing", "memory", "memory-child"])
    parser.add_argument("--model", default=str(ROOT / "runs" / "tiny" / "base" / "model"))
    parser.add_argument("--config", default=str(ROOT / "configs" / "base-100m.yaml"))
    parser.add_argument("--workdir", default=str(ROOT / "bench" / "out"))
    parser.add_argument("--mode", default="lora")
    parser.add_argument("--modes", nargs="+", default=["lora", "qlora"])
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--json", default=None, help="also write the results here")
    parser.add_argument("--sft-config", default=str(SFT_YAML), help="the SFT recipe measured (default configs/sft.yaml)")
    parser.add_argument("--given-model", action="store_true", help="memory: measure --model, not a random ~100M model")
    parser.add_argument("--gradient-checkpointing", action=argparse.BooleanOptionalAction, default=True,
                        help="memory: recompute activations in backward, as QLoRA recipes do (default: on)")
    args = parser.parse_args()
    SFT_YAML = Path(args.sft_config)
    if args.bench == "memory-child":
        memory_child(args)
        return
    results = {"throughput": run_throughput, "packing": run_packing, "memory": run_memory}[args.bench](args)
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
