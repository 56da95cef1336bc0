"""Training cost per token on the default base model: each stage against a bare PyTorch loop, MFU, peak RSS.

    python bench/train_cost.py [--model runs/smollm2/base/model] [--stages sft-lora sft-qlora reward dpo]
                               [--steps 8] [--out bench/out/train_cost.json]
                               [--sft-run runs/smollm2/sft] [--set dpo:training.per_device_train_batch_size=2 ...]

Each stage runs as lexalign runs it (``train_sft``, ``train_reward``, ``train_dpo`` with the SmolLM2 recipes of
``configs/smollm2/``: LoRA r=16, the layers and compute dtype the configs set; ``sft-qlora`` = the same on the NF4 base)
for ``--steps`` optimizer steps, each in its own process. Its throughput is the non-padding tokens of the
batches its trainer trained on from the second step to the end of the last optimizer step / that time (the first
step of either side pays for allocations and kernel choices). Then, in the same process, a bare loop
runs over the very same batches (captured from the trainer) on the very same trained model, right after the
trainer's ``train()`` returns (before the stage saves or merges anything): forward, the stage's
loss written out in a few lines (cross-entropy; Bradley-Terry on the reward head; DPO's sigmoid loss with the
reference pass through the frozen SFT adapter), backward, AdamW step. Ratio = stage / bare (goal >= 0.95).

MFU = model FLOPs per token (``bench/roofline.py``: forward + input gradients of the layers the backward pass
goes through; DPO adds the reference forward) x tokens/s / the fp32 matmul peak measured in this run with the
same threads. Peak RSS is the process's high-water mark (stage + bare loop; model, optimizer and activations).
The reward model and DPO start from the ``sft-lora`` run of the same benchmark (run first), or from ``--sft-run``.
``--set STAGE:KEY=VALUE`` adds a config override to one stage (e.g. another micro-batch size, or the pipeline's
own-answer pairs as DPO's data); the bare loop then accumulates gradients over the same micro-batches. Padding is
reported beside the throughput: the share of the batches' positions that are padding, computed for nothing.
"""

from __future__ import annotations

import argparse
import json
import logging
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import OUT, ROOT, load_average, smollm2_model  # noqa: E402
from roofline import ModelShape, measure_peaks  # noqa: E402

THREADS = 2
STAGES = ["sft-lora", "sft-qlora", "reward", "dpo"]
MODEL_KEYS = ("input_ids", "attention_mask", "labels", "position_ids")


def stage_overrides(stage: str, model: Path, work: Path, steps: int, sft_run: Path | None = None
                    ) -> tuple[str, list[str]]:
    """The stage's SmolLM2 config and the overrides that make it a short, saved-nowhere run."""
    common = [f"output_dir={work}", "resume=false", f"training.max_steps={steps}", "training.save_strategy=no",
              f"training.logging_steps={steps}", "training.warmup_steps=0"]
    if stage.startswith("sft"):
        bits = "4" if stage == "sft-qlora" else "null"
        return "configs/smollm2/sft.yaml", [*common, f"name={stage}", f"model.path={model}",
                                            f"model.quantization.bits={bits}", "data.max_valid_records=8"]
    sft_run = sft_run or work / "sft-lora" / "sft"
    if stage == "reward":
        return "configs/smollm2/reward.yaml", [*common, "name=bench", f"sft_run={sft_run}", "data.max_valid_pairs=8"]
    return "configs/smollm2/dpo.yaml", [*common, "name=bench", f"sft_run={sft_run}", "data.max_valid_pairs=8",
                                        "eval.reward_run="]


def run_stage(stage: str, config_path: str, overrides: list[str]) -> None:
    if stage.startswith("sft"):
        from lexalign.sft.train import run_sft as run
    elif stage == "reward":
        from lexalign.reward.train import run_reward as run
    else:
        from lexalign.rlhf.dpo import run_dpo as run
    run(ROOT / config_path, overrides)


class Capture:
    """Wraps ``transformers.Trainer``: keeps the stage's batches and step times, and runs ``bare`` on the trained
    model the moment ``train()`` returns — before the stage goes on (the reward stage merges its LoRA into the
    model in place when it saves, which would leave the bare loop a different, cheaper network)."""

    def __init__(self, bare: Any) -> None:
        self.bare = bare
        self.trainer: Any = None
        self.batches: list[dict[str, Any]] = []
        self.step_starts: list[float] = []
        self.step_ends: list[float] = []   # after each optimizer step (a callback's on_step_end)
        self.bare_seconds: float | None = None

    def install(self) -> None:
        from transformers import Trainer, TrainerCallback

        capture, train, training_step = self, Trainer.train, Trainer.training_step

        class StepEnds(TrainerCallback):
            def on_step_end(self, args, state, control, **kwargs):
                capture.step_ends.append(time.perf_counter())

        def train_and_keep(trainer, *args, **kwargs):
            capture.trainer = trainer
            trainer.add_callback(StepEnds())
            output = train(trainer, *args, **kwargs)
            capture.bare_seconds = capture.bare(trainer, capture.batches)
            return output

        def step_and_keep(trainer, model, inputs, *args, **kwargs):
            capture.step_starts.append(time.perf_counter())
            capture.batches.append({k: v.detach().clone() if hasattr(v, "detach") else v for k, v in inputs.items()})
            return training_step(trainer, model, inputs, *args, **kwargs)

        Trainer.train = train_and_keep
        Trainer.training_step = step_and_keep


def bare_loss(stage: str, net: Any, batch: dict[str, Any], beta: float) -> Any:
    import torch
    import torch.nn.functional as F

    if stage.startswith("sft"):
        return net(**{k: v for k, v in batch.items() if k in MODEL_KEYS}, use_cache=False).loss
    inputs = {"input_ids": batch["input_ids"], "attention_mask": batch["attention_mask"], "use_cache": False}
    if stage == "reward":
        chosen, rejected = net(**inputs).logits.squeeze(-1).chunk(2)
        return -F.logsigmoid(chosen - rejected - batch.get("margin", 0.0)).mean()

    def completion_logps(logits: Any) -> Any:
        labels = batch["input_ids"][:, 1:]
        logits = logits[:, :-1]
        token_logps = logits.gather(-1, labels.unsqueeze(-1)).squeeze(-1) - logits.logsumexp(-1)
        return (token_logps * batch["completion_mask"][:, 1:]).sum(-1)

    logps = completion_logps(net(**inputs).logits)
    if "ref_chosen_logps" in batch:
        reference = torch.cat([batch["ref_chosen_logps"], batch["ref_rejected_logps"]])
    else:
        from trl.trainer.utils import use_adapter

        with torch.no_grad(), use_adapter(net, "ref" if "ref" in net.peft_config else None):
            reference = completion_logps(net(**inputs).logits)
    chosen, rejected = (logps - reference).chunk(2)
    return -F.logsigmoid(beta * (chosen - rejected)).mean()


def bare_loop(stage: str, trainer: Any, batches: list[dict[str, Any]]) -> float:
    """The stage's batches on the stage's trained model in plain PyTorch; seconds from the second batch on."""
    import torch

    net = trainer.model
    net.train()
    optimizer = torch.optim.AdamW([p for p in net.parameters() if p.requires_grad], lr=1e-5)
    beta = float(getattr(trainer.args, "beta", 0.1))
    accumulation = max(1, int(trainer.args.gradient_accumulation_steps))  # micro-batches per optimizer step
    started = time.perf_counter()
    for i, batch in enumerate(batches):
        if i == 1:
            started = time.perf_counter()
        loss = bare_loss(stage, net, batch, beta) / accumulation
        loss.backward()
        if (i + 1) % accumulation == 0 or i == len(batches) - 1:
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
    return time.perf_counter() - started


def child(args: argparse.Namespace) -> None:
    """One stage and its bare loop in this process; prints one JSON line."""
    import torch

    logging.basicConfig(level=logging.WARNING)
    torch.set_num_threads(THREADS)
    capture = Capture(lambda trainer, batches: bare_loop(args.stage, trainer, batches))
    capture.install()
    config_path, overrides = stage_overrides(args.stage, Path(args.model), Path(args.work), args.steps,
                                             args.sft_run)
    run_stage(args.stage, config_path, [*overrides, *args.stage_set])
    trainer, batches = capture.trainer, capture.batches
    # Steady state on both sides: from the second step to the end of the last optimizer step (the first step of
    # each pays for allocations and kernel choices; what a stage does after training is not training).
    timed = batches[1:]
    tokens = sum(int(b["attention_mask"].sum()) for b in timed)
    positions = sum(int(b["attention_mask"].numel()) for b in timed)  # padded batch shapes: what was computed
    sequences = sum(int(b["input_ids"].shape[0]) for b in timed)
    stage_s = capture.step_ends[-1] - capture.step_starts[1]
    bare_s = capture.bare_seconds
    high_water_kib = int(Path("/proc/self/status").read_text().split("VmHWM:")[1].split()[0])
    print(json.dumps({"stage": args.stage, "steps": args.steps, "micro_batches": len(batches),
                      "timed_micro_batches": len(timed), "tokens": tokens,
                      "mean_sequence_tokens": tokens / sequences, "padding_share": 1 - tokens / positions,
                      "sequences_per_forward": int(timed[0]["input_ids"].shape[0]),  # DPO/reward: 2 per pair
                      "gradient_accumulation_steps": int(trainer.args.gradient_accumulation_steps),
                      "stage_seconds": stage_s,
                      "bare_seconds": bare_s, "stage_tokens_per_s": tokens / stage_s,
                      "bare_tokens_per_s": tokens / bare_s, "peak_rss_mib": high_water_kib / 1024,
                      "trainer_mixed_precision": str(trainer.accelerator.mixed_precision),
                      "gradient_checkpointing": bool(getattr(trainer.model, "is_gradient_checkpointing", False)),
                      "activation_offloading": bool(getattr(trainer.args, "activation_offloading", False))}))


def model_flops_per_token(stage: str, shape: ModelShape, context: float, backward_layers: int) -> float:
    if stage == "reward":
        return shape.train_flops_per_token(context, lora=True, backward_layers=backward_layers, lm_head=False)
    flops = shape.train_flops_per_token(context, lora=True, backward_layers=backward_layers)
    if stage == "dpo":
        flops += shape.token_flops(context / 2)  # the reference model's forward pass
    return flops


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("mode", nargs="?", default="bench", choices=["bench", "child"])
    parser.add_argument("--model", type=Path, default=None)
    parser.add_argument("--stages", nargs="+", choices=STAGES, default=STAGES)
    parser.add_argument("--stage", choices=STAGES, help=argparse.SUPPRESS)
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--work", type=Path, default=OUT / "train-cost")
    parser.add_argument("--out", type=Path, default=OUT / "train_cost.json")
    parser.add_argument("--sft-run", type=Path, default=None,
                        help="the SFT run the reward model and DPO start from (default: this benchmark's own)")
    parser.add_argument("--set", dest="sets", action="append", default=[], metavar="STAGE:KEY=VALUE",
                        help="a config override for one stage, e.g. dpo:training.per_device_train_batch_size=2")
    parser.add_argument("--stage-set", action="append", default=[], help=argparse.SUPPRESS)
    args = parser.parse_args()
    for item in args.sets:
        stage, _, override = item.partition(":")
        if stage not in STAGES or "=" not in override:
            parser.error(f"--set {item!r}: expected STAGE:KEY=VALUE with STAGE one of {', '.join(STAGES)}")
    if args.mode == "child":
        child(args)
        return 0
    model = smollm2_model(args.model)
    shape = ModelShape.from_folder(model)
    backward_layers = 10  # configs/smollm2/*.yaml: adapters on layers 20-29 of 30
    load_before = load_average()
    peaks = measure_peaks(THREADS)
    print(f"{model}: {shape.parameters / 1e6:.1f}M parameters; peaks {peaks.describe()}; load {load_before}", flush=True)
    stages = args.stages
    needs_sft = args.sft_run is None and not (args.work / "sft-lora" / "sft" / "COMPLETE").is_file()
    if any(s in ("reward", "dpo") for s in stages) and "sft-lora" not in stages and needs_sft:
        stages = ["sft-lora", *stages]  # the reward model and DPO start from its SFT run
    results: dict[str, Any] = {}
    for stage in sorted(stages, key=STAGES.index):
        print(f"{stage}: {args.steps} steps, then the bare loop on the same batches ...", flush=True)
        stage_sets = [f"--stage-set={item.partition(':')[2]}" for item in args.sets if item.startswith(f"{stage}:")]
        sft_run = ["--sft-run", str(args.sft_run.resolve())] if args.sft_run else []
        done = subprocess.run([sys.executable, __file__, "child", "--stage", stage, "--model", str(model),
                               "--steps", str(args.steps), "--work", str(args.work), *sft_run, *stage_sets],
                              capture_output=True, text=True, cwd=ROOT)
        if done.returncode != 0:
            raise SystemExit(f"{stage} failed:\n{done.stderr[-4000:]}")
        row = json.loads(done.stdout.strip().splitlines()[-1])
        flops = model_flops_per_token(stage, shape, row["mean_sequence_tokens"], backward_layers)
        row.update({"ratio": row["stage_tokens_per_s"] / row["bare_tokens_per_s"], "model_flops_per_token": flops,
                    "stage_mfu": row["stage_tokens_per_s"] * flops / peaks.fp32_flops,
                    "bare_mfu": row["bare_tokens_per_s"] * flops / peaks.fp32_flops})
        results[stage] = row
        print(f"  {row['stage_tokens_per_s']:.0f} tok/s (bare {row['bare_tokens_per_s']:.0f}, ratio {row['ratio']:.2f}); "
              f"MFU {row['stage_mfu']:.1%}; padding {row['padding_share']:.0%} of positions "
              f"({row['sequences_per_forward']} sequences per forward pass, {row['gradient_accumulation_steps']} "
              f"accumulated); "
              f"peak RSS {row['peak_rss_mib']:.0f} MiB", flush=True)
    load_after = load_average()
    report = {"command": " ".join(["python", "bench/train_cost.py", *sys.argv[1:]]), "model": str(model),
              "parameters": shape.parameters, "peaks": peaks.as_dict(), "threads": THREADS, "sets": args.sets,
              "load_1min_before": load_before, "load_1min_after": load_after, "stages": results,
              "time": time.strftime("%Y-%m-%d %H:%M")}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2))
    print(f"\n{'stage':11}{'steps':>6}{'tok/seq':>8}{'padding':>8}{'stage tok/s':>12}{'bare tok/s':>11}{'ratio':>7}{'MFU':>7}"
          f"{'bare MFU':>9}{'peak RSS MiB':>13}")
    for stage, r in results.items():
        print(f"{stage:11}{r['steps']:>6}{r['mean_sequence_tokens']:>8.0f}{r['padding_share']:>8.0%}"
              f"{r['stage_tokens_per_s']:>12.1f}"
              f"{r['bare_tokens_per_s']:>11.1f}{r['ratio']:>7.2f}{r['stage_mfu']:>7.1%}{r['bare_mfu']:>9.1%}"
              f"{r['peak_rss_mib']:>13.0f}")
    print(f"ratio goal >= 0.95, MFU goal >= 40 % (fp32 peak {peaks.fp32_flops / 1e9:.0f} GFLOP/s, {THREADS} threads); "
          f"load average before / after {load_before} / {load_after}")
    print(f"results: {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
