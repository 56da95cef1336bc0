"""GPU check: QLoRA SFT and DPO through lexalign's own stages on a ~100M Llama; tokens/s, MFU, peak memory.

    python bench/gpu_check.py prepare [--dest bench/gpu_wheels]   # with a package index: the wheels to carry
    python bench/gpu_check.py install [--wheels bench/gpu_wheels --target DIR]   # offline: install what is missing
    python bench/gpu_check.py run [--device auto|cuda|cpu] [--out DIR]           # the check itself

``bench/gpu_check.sh`` chains these (``--prepare``, the default GPU run, ``--cpu``); see bench/RESULTS.md.

What ``run`` does, through the same functions as ``lexalign base build``, ``lexalign sft`` and ``lexalign dpo``:
  1. builds the Llama of configs/base-100m.yaml (tokenizer trained on the shipped corpus, random weights: no
     pretraining steps; ``--device cpu`` shrinks it to a toy of the same code path);
  2. QLoRA SFT (4-bit NF4 base, LoRA on every linear layer, bf16 compute on a GPU) for a few steps on the
     shipped chat records (configs/sft.yaml with overrides);
  3. DPO from that SFT adapter, again on a 4-bit base, on the shipped ACORD pairs (configs/dpo.yaml with
     overrides; the reference is the frozen SFT adapter, computed every step);
and reports per stage: steady-state tokens/s (non-padding tokens, after the warm-up steps), MFU against the
GPU's dense bf16 peak, peak GPU memory (``torch.cuda.max_memory_allocated``), the losses, and the wall time.
A JSON summary goes to ``$OUT/gpu_check.json`` when OUT is set, else ``bench/out/gpu_check.json`` (``--out``).

Where bitsandbytes cannot run (missing, or no kernels for this CUDA), QLoRA falls back to LoRA on a bf16 base,
says so, and the check still runs (``quantization`` in the summary). ``--no-qlora`` asks for that directly.
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib.abc
import importlib.machinery
import importlib.util
import json
import logging
import math
import os
import platform
import re
import resource
import shutil
import subprocess
import sys
import tempfile
import time
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_WHEELS = ROOT / "bench" / "gpu_wheels"
BASE_CONFIG = ROOT / "configs" / "base-100m.yaml"
SFT_CONFIG = ROOT / "configs" / "sft.yaml"
DPO_CONFIG = ROOT / "configs" / "dpo.yaml"
SUMMARY_NAME = "gpu_check.json"

logger = logging.getLogger("gpu_check")

# --------------------------------------------------------------------------- wheels to carry

# What the GPU image (torch, transformers, peft, accelerate, pandas, pyarrow, ...) may lack or hold in another
# version than lexalign pins, and what those packages need that such an image may not have. Each one is
# installed there only when it is missing or its installed version does not satisfy the requirements.
# Versions: the ones this environment resolved (so the GPU runs what CI tests), else these defaults.
CARRIED: dict[str, str] = {
    "trl": "1.12.0",
    "bitsandbytes": "0.50.2",
    "transformers": "5.19.0",
    "peft": "0.21.2",
    "datasets": "5.2.0",  # trl needs it; it is not part of a typical PyTorch image
    "dill": "0.4.1",  # datasets
    "multiprocess": "0.70.19",  # datasets
    "fsspec": "2026.9.0",  # datasets pins an upper bound that a newer image may exceed
    "pydantic": "2.14.4",  # lexalign's record schemas
    "pydantic-core": "2.50.5",
    "annotated-types": "0.8.0",
    "typing-inspection": "0.4.5",
    "typing-extensions": "4.16.0",
    "regex": "2026.11.19",  # transformers refuses to import with a regex older than it needs
}
# The image's Python (python3 there is 3.12) decides which compiled wheels to fetch (pydantic-core).
DEFAULT_TARGET_PYTHON = "3.12"
MANYLINUX = ["manylinux_2_28_x86_64", "manylinux_2_27_x86_64", "manylinux_2_24_x86_64", "manylinux_2_17_x86_64",
             "manylinux2014_x86_64", "manylinux1_x86_64"]
# bitsandbytes ships one kernel library per CUDA version (129 MB unpacked, 43 MB as a wheel): the carried
# working tree has 64 MiB in all, so the wheel is rebuilt with the libraries of the image's CUDA only
# (PyTorch there is built for CUDA 13.0). Another CUDA finds no kernels, and QLoRA falls back to LoRA.
DEFAULT_BNB_CUDA = ("130", "132")
# Packages whose versions the summary records.
REPORTED = ("torch", "transformers", "trl", "peft", "accelerate", "datasets", "bitsandbytes", "tokenizers",
            "pyarrow", "pydantic", "huggingface-hub", "numpy")


def canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def local_version(name: str) -> str | None:
    from importlib import metadata

    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None


def prepare(dest: Path, python_version: str, bnb_cuda: tuple[str, ...]) -> None:
    """Download the carried wheels (pip, no dependencies) for the GPU image's Python into ``dest``."""
    pins = {name: local_version(name) or default for name, default in CARRIED.items()}
    pins = {name: version.split("+")[0] for name, version in pins.items()}
    dest.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        command = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
                   "--python-version", python_version, "--implementation", "cp", "--progress-bar", "off",
                   *[arg for plat in MANYLINUX for arg in ("--platform", plat)], "-d", tmp,
                   *[f"{name}=={version}" for name, version in pins.items()]]
        logger.info("pip download: %s", " ".join(f"{n}=={v}" for n, v in pins.items()))
        subprocess.run(command, check=True)
        for old in dest.glob("*.whl"):  # one version of each package: two would make pip refuse the install
            old.unlink()
        for wheel in sorted(Path(tmp).glob("*.whl")):
            if canonical(wheel.name.split("-")[0]) == "bitsandbytes":
                trim_bitsandbytes(wheel, dest / wheel.name, bnb_cuda)
            else:
                shutil.copy2(wheel, dest / wheel.name)
    total = sum(p.stat().st_size for p in dest.glob("*.whl"))
    for wheel in sorted(dest.glob("*.whl")):
        logger.info("  %-70s %6.2f MiB", wheel.name, wheel.stat().st_size / 2**20)
    logger.info("carried wheels: %.1f MiB in %s", total / 2**20, dest)


def trim_bitsandbytes(source: Path, target: Path, keep_cuda: tuple[str, ...]) -> None:
    """Rewrite the bitsandbytes wheel without the kernel libraries of other CUDA versions, ROCm and XPU.

    RECORD loses the dropped files' lines, so the wheel stays consistent for pip."""
    library = re.compile(r"bitsandbytes/libbitsandbytes_(\w+)\.so$")

    def kept(name: str) -> bool:
        match = library.search(name)
        if not match:
            return True
        kind = match.group(1)
        return kind == "cpu" or (kind.startswith("cuda") and kind.removeprefix("cuda") in keep_cuda)

    with zipfile.ZipFile(source) as src, zipfile.ZipFile(target, "w", zipfile.ZIP_DEFLATED) as out:
        names = [n for n in src.namelist() if kept(n)]
        for name in names:
            data = src.read(name)
            if name.endswith(".dist-info/RECORD"):
                lines = data.decode().splitlines()
                data = ("\n".join(line for line in lines if kept(line.split(",")[0])) + "\n").encode()
            out.writestr(src.getinfo(name), data)
    dropped = sorted(library.search(n).group(1) for n in zipfile.ZipFile(source).namelist()
                     if library.search(n) and not kept(n))
    logger.info("bitsandbytes: kept the CUDA %s kernels (and CPU); dropped %s", ", ".join(keep_cuda),
                ", ".join(dropped))


# --------------------------------------------------------------------------- offline install on the GPU


def wheel_requirements(wheel: Path) -> list[str]:
    """Requires-Dist lines of a wheel (from its METADATA), without extras-only ones."""
    with zipfile.ZipFile(wheel) as archive:
        meta = next(n for n in archive.namelist() if n.endswith(".dist-info/METADATA"))
        text = archive.read(meta).decode("utf-8", "replace")
    return [line.split(":", 1)[1].strip() for line in text.splitlines()
            if line.startswith("Requires-Dist:") and "extra ==" not in line]


def project_requirements() -> list[str]:
    import tomllib

    return list(tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"])


def install(wheels: Path, target: Path) -> None:
    """Install, with pip and no index, each carried wheel whose package is missing or out of its requirements."""
    from packaging.requirements import Requirement
    from packaging.tags import sys_tags
    from packaging.utils import parse_wheel_filename

    found = sorted(wheels.glob("*.whl"))
    if not found:
        raise SystemExit(f"no wheels in {wheels}: run `bash bench/gpu_check.sh --prepare` where pip reaches an index")
    supported = set(sys_tags())
    carried: dict[str, tuple[Path, str]] = {}
    for wheel in found:
        name, version, _, tags = parse_wheel_filename(wheel.name)
        if not tags & supported:
            logger.warning("skipping %s: not built for this Python/platform", wheel.name)
            continue
        carried[canonical(name)] = (wheel, str(version))
    # What must hold: lexalign's pins and every carried package's own requirements.
    requirements = [Requirement(r) for r in project_requirements()]
    for wheel, _ in carried.values():
        requirements += [Requirement(r) for r in wheel_requirements(wheel)]
    requirements = [r for r in requirements if r.marker is None or r.marker.evaluate({"extra": ""})]

    def unmet(name: str) -> tuple[str | None, list[str]]:
        """(installed version or None, the requirements on ``name`` that it does not satisfy)."""
        installed = local_version(name)
        broken = [str(r) for r in requirements if canonical(r.name) == canonical(name)
                  and (installed is None or not r.specifier.contains(installed, prereleases=True))]
        return installed, broken

    needed = []
    for name, (wheel, version) in carried.items():
        installed, broken = unmet(name)
        if installed is None or broken:
            needed.append(wheel)
            logger.info("install %s %s (here: %s%s)", name, version, installed or "missing",
                        f"; needs {', '.join(broken)}" if installed and broken else "")
        else:
            logger.info("keep    %s %s (satisfies every requirement)", name, installed)
    if needed:
        target.mkdir(parents=True, exist_ok=True)
        subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-index", "--no-deps", "--no-compile",
                        "--no-cache-dir", "--disable-pip-version-check", "--upgrade", "--target", str(target),
                        *map(str, needed)], check=True)
    # Report with the installed folder first on the path, as the check will run.
    sys.path.insert(0, str(target))
    importlib.invalidate_caches()
    # Only what the check imports: lexalign's other pins (gradio, sqlalchemy, ...) are not on this code path.
    relevant = {canonical(r.name) for wheel, _ in carried.values() for r in map(Requirement, wheel_requirements(wheel))}
    relevant = (relevant | {canonical(n) for n in REPORTED}) - set(carried)
    problems = []
    for name in sorted(relevant):
        installed, broken = unmet(name)
        if broken:
            problems.append(name)
            logger.warning("not met (and not carried): %s; installed here: %s", ", ".join(sorted(set(broken))),
                           installed or "missing")
    logger.info("installed %d wheel(s) into %s; %d package(s) outside the carried wheels miss a requirement%s",
                len(needed), target, len(problems), " (the check may still run)" if problems else "")


# --------------------------------------------------------------------------- lexalign without installing it


class _PackageDirFinder(importlib.abc.MetaPathFinder):
    """pyproject's ``package-dir`` mapping (lexalign.sft -> sft/, ...) for a source tree that is not installed,
    as the editable install's finder does: the check runs from a plain copy of the working tree."""

    def __init__(self, mapping: dict[str, Path]) -> None:
        self.mapping = mapping

    def find_spec(self, fullname: str, path: Any = None, target: Any = None) -> importlib.machinery.ModuleSpec | None:
        folder = self.mapping.get(fullname)
        if folder is None:
            return None
        return importlib.util.spec_from_file_location(fullname, folder / "__init__.py",
                                                      submodule_search_locations=[str(folder)])


def ensure_lexalign_importable() -> str:
    """Use an installed lexalign when it is this tree; otherwise map the source folders in."""
    spec = importlib.util.find_spec("lexalign")
    if spec is not None and spec.origin and Path(spec.origin).resolve().is_relative_to(ROOT):
        try:
            importlib.import_module("lexalign.sft")
            return "installed"
        except ImportError:
            pass
    import tomllib

    setup = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    mapping = {name: ROOT / folder for name, folder in setup["package-dir"].items()}
    for package in setup["packages"]:  # packages without an entry live under their parent's folder
        if package not in mapping and "." in package:
            parent, _, leaf = package.rpartition(".")
            mapping[package] = mapping.get(parent, ROOT / parent.replace(".", "/")) / leaf
    for name in [n for n in sys.modules if n == "lexalign" or n.startswith("lexalign.")]:
        del sys.modules[name]
    sys.meta_path.insert(0, _PackageDirFinder(mapping))
    return "source tree (pyproject package-dir)"


# --------------------------------------------------------------------------- FLOPs and peaks

# Dense bf16 peaks (no sparsity), TFLOP/s, matched against torch.cuda.get_device_name().
GPU_PEAKS_BF16: list[tuple[str, str, float]] = [
    (r"H200", "H200 (SXM/NVL: 989 TFLOP/s bf16 dense)", 989.0),
    (r"H100.*PCIe", "H100 PCIe (756 TFLOP/s bf16 dense)", 756.0),
    (r"H100.*NVL", "H100 NVL (835 TFLOP/s bf16 dense)", 835.0),
    (r"H100", "H100 SXM (989 TFLOP/s bf16 dense)", 989.0),
    (r"A100", "A100 (312 TFLOP/s bf16 dense)", 312.0),
]


def gpu_peak(device_name: str) -> tuple[float | None, str]:
    for pattern, label, peak in GPU_PEAKS_BF16:
        if re.search(pattern, device_name, re.IGNORECASE):
            return peak, label
    return None, f"unknown GPU {device_name!r}: no peak assumed (give --peak-tflops)"


def matmul_parameters(config: dict[str, Any]) -> int:
    """N: weights that multiply activations per token (attention and MLP projections, the LM head).

    The embedding lookup is a gather (no FLOPs) and norms are negligible, so neither counts."""
    hidden = config["hidden_size"]
    heads = config["num_attention_heads"]
    head_dim = config.get("head_dim") or hidden // heads
    kv = config.get("num_key_value_heads") or heads
    per_layer = (hidden * heads * head_dim * 2  # q and o
                 + hidden * kv * head_dim * 2  # k and v
                 + 3 * hidden * config["intermediate_size"])  # gate, up, down
    return config["num_hidden_layers"] * per_layer + hidden * config["vocab_size"]


# FLOPs per trained token, in multiples of N (a multiply-add = 2 FLOPs per weight):
#   full training: forward 2N + backward 4N (gradients w.r.t. activations 2N and w.r.t. weights 2N) = 6N.
#   LoRA / QLoRA: the base is frozen, so the backward pass still propagates gradients through every base
#     matrix (2N) but computes no weight gradients for it: forward 2N + backward 2N = 4N. The adapters'
#     own work (r x (d_in + d_out) weights per matrix, ~3% of N at r=16 here: forward, backward and their
#     weight gradients, ~0.2N) is left out. Dequantizing the 4-bit weights is real work but not model
#     FLOPs, so it lowers QLoRA's MFU, as it should.
#   DPO with LoRA: each chosen and rejected sequence goes through the policy (4N) and, every step, through
#     the frozen reference adapter without gradients (2N): 6N per token; full-model DPO would be 8N.
# Attention-score FLOPs (about 6 x 2 x layers x hidden x T per token at sequence length T, halved by the
# causal mask; ~5% of 4N at 400 tokens here) are left out like PaLM's "6N": MFU is a slight underestimate.
# Tokens are non-padding tokens, so compute spent on padding counts as waste.
FLOPS_FACTOR = {("sft", "full"): 6, ("sft", "lora"): 4, ("dpo", "lora"): 6, ("dpo", "full"): 8}


# --------------------------------------------------------------------------- step timing


@dataclass
class StepMark:
    step: int
    seconds: float  # perf_counter after the step's kernels finished
    tokens: int  # non-padding input tokens seen so far (Trainer's include_num_input_tokens_seen)


class StepClock:
    """Marks the end of every optimizer step, after synchronizing the GPU, so that steady-state throughput
    can skip the first steps (CUDA context, cuBLAS heuristics, the allocator's first growth)."""

    def __init__(self) -> None:
        self.marks: list[StepMark] = []
        self.callback = self._make_callback()

    def reset(self) -> None:
        self.marks = []

    def _make_callback(self) -> Any:
        from transformers import TrainerCallback

        clock = self

        class _Clock(TrainerCallback):
            def on_train_begin(self, args, state, control, **kwargs):  # noqa: ANN001 - transformers' signature
                clock.marks.append(StepMark(state.global_step, _synced_now(), state.num_input_tokens_seen))

            def on_step_end(self, args, state, control, **kwargs):  # noqa: ANN001
                clock.marks.append(StepMark(state.global_step, _synced_now(), state.num_input_tokens_seen))

        return _Clock()

    def attach(self) -> None:
        """Every Trainer built from now on in this process gets the clock: the stages build their own trainers,
        and transformers adds ``DEFAULT_CALLBACKS`` to each (instances are taken as they are)."""
        import transformers.trainer as trainer_module

        if not isinstance(getattr(trainer_module, "DEFAULT_CALLBACKS", None), list):
            raise RuntimeError("transformers.trainer.DEFAULT_CALLBACKS is gone: the step clock cannot attach")
        trainer_module.DEFAULT_CALLBACKS.append(self.callback)

    def throughput(self, warmup: int) -> dict[str, Any]:
        """Tokens/s over the steps after ``warmup`` (and over all steps, for reference)."""
        steps = self.marks[1:]
        if len(steps) < 2:
            raise RuntimeError(f"the step clock saw {len(steps)} training steps; need at least 2")
        warmup = min(warmup, len(steps) - 1)
        start = self.marks[warmup]  # the end of the last warm-up step (or train begin)
        end = self.marks[-1]
        first = self.marks[0]
        step_times = [b.seconds - a.seconds for a, b in zip(self.marks, self.marks[1:])]
        return {
            "steps": len(steps),
            "warmup_steps": warmup,
            "timed_steps": len(self.marks) - 1 - warmup,
            "timed_tokens": end.tokens - start.tokens,
            "timed_seconds": end.seconds - start.seconds,
            "tokens_per_s": (end.tokens - start.tokens) / max(end.seconds - start.seconds, 1e-9),
            "tokens_per_s_all_steps": (end.tokens - first.tokens) / max(end.seconds - first.seconds, 1e-9),
            "tokens": end.tokens - first.tokens,
            "first_step_seconds": step_times[0],
            "median_step_seconds": sorted(step_times[warmup:])[len(step_times[warmup:]) // 2],
        }


def _synced_now() -> float:
    import torch

    if torch.cuda.is_available() and torch.cuda.is_initialized():
        torch.cuda.synchronize()
    return time.perf_counter()


# --------------------------------------------------------------------------- sizes


@dataclass
class Sizes:
    """Per-mode sizes: the GPU run is sized for a few minutes on an H100 (8 at most, installs included); the CPU
    mode takes ~30 s on 2 cores."""

    base_overrides: list[str]
    sft_steps: int
    sft_batch: int
    sft_max_length: int
    dpo_steps: int
    dpo_batch: int
    dpo_max_length: int
    valid_records: int
    warmup_steps: int
    threads: int
    corpus_chars: int = 0  # 0 = the whole shipped corpus


GPU_SIZES = Sizes(base_overrides=[], sft_steps=60, sft_batch=32, sft_max_length=1024, dpo_steps=40, dpo_batch=16,
                  dpo_max_length=512, valid_records=64, warmup_steps=3, threads=0)
# A toy of the same shape family: head_dim 64 (as vLLM needs), layer sizes divisible by 32 (bitsandbytes' CPU
# 4-bit kernel packs blocks of 32 rows), a 512-token tokenizer trained on 200 KB of the corpus. One intra-op
# thread: on 2 shared cores it ran this toy in 30 s where 2 threads took 70 s.
CPU_SIZES = Sizes(base_overrides=["model.hidden_size=64", "model.num_hidden_layers=2", "model.num_attention_heads=1",
                                  "model.num_key_value_heads=1", "model.intermediate_size=128",
                                  "model.max_position_embeddings=512", "tokenizer.vocab_size=512",
                                  "pretraining.seq_len=128"],
                  # 32 validation records: at 256 tokens of this toy tokenizer only the short ones (~1 in 5) keep an
                  # answer token, and a validation set without one has no loss
                  sft_steps=6, sft_batch=4, sft_max_length=256, dpo_steps=4, dpo_batch=2, dpo_max_length=192,
                  valid_records=32, warmup_steps=1, threads=1, corpus_chars=200_000)


# --------------------------------------------------------------------------- the check


def probe_bitsandbytes(device: str) -> str | None:
    """None when 4-bit NF4 quantization works on ``device``; else why not (QLoRA then falls back to LoRA)."""
    try:
        import bitsandbytes.functional as bnbf
        import torch

        dtype = torch.bfloat16 if device == "cuda" else torch.float32
        weight = torch.randn(256, 256, device=device, dtype=dtype)
        packed, state = bnbf.quantize_4bit(weight, quant_type="nf4", quant_storage=dtype)
        error = (bnbf.dequantize_4bit(packed, state) - weight).abs().mean().item()
        if not math.isfinite(error) or error > 0.5:
            return f"4-bit round trip error {error:.3f}"
        return None
    except Exception as err:  # noqa: BLE001 - any failure here means: no QLoRA on this machine
        return f"{type(err).__name__}: {str(err).splitlines()[0][:300] if str(err) else ''}"


def stage_losses(run_dir: Path) -> list[float]:
    from lexalign.runs import read_metrics

    return [float(r["loss"]) for r in read_metrics(run_dir) if "loss" in r]


@dataclass
class CheckContext:
    """What every stage of one check shares."""

    clock: StepClock
    warmup: int
    n_matmul: int
    peak_tflops: float | None
    cuda: bool
    common: list[str]  # overrides of both stages, without the quantization


def run_stage(name: str, runner: Any, config: Path, overrides: list[str], ctx: CheckContext) -> dict[str, Any]:
    """One lexalign stage (``run_sft``/``run_dpo``, as the CLI calls them) with its throughput and memory."""
    import torch

    from lexalign.runs import read_manifest

    ctx.clock.reset()
    if ctx.cuda:
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
    logger.info("%s: %s %s", name, config.relative_to(ROOT), " ".join(overrides))
    started = time.perf_counter()
    run_dir = Path(runner(config, overrides))
    wall = time.perf_counter() - started
    flops_per_token = FLOPS_FACTOR[(name, "lora")] * ctx.n_matmul  # QLoRA and LoRA count alike
    result: dict[str, Any] = {"run_dir": str(run_dir), "stage_seconds": wall, **ctx.clock.throughput(ctx.warmup)}
    result["flops_per_token"] = flops_per_token
    result["achieved_tflops"] = result["tokens_per_s"] * flops_per_token / 1e12
    result["mfu"] = result["achieved_tflops"] / ctx.peak_tflops if ctx.peak_tflops else None
    result["peak_memory_gib"] = torch.cuda.max_memory_allocated() / 2**30 if ctx.cuda else None
    result["peak_memory_reserved_gib"] = torch.cuda.max_memory_reserved() / 2**30 if ctx.cuda else None
    result["losses"] = stage_losses(run_dir)
    results = read_manifest(run_dir).get("results", {})
    result["global_step"] = results.get("global_step")
    for key in ("eval_loss", "initial_eval_loss", "mode", "compute_dtype", "device",
                "eval_rewards_accuracies", "eval_rewards_margins", "initial_eval_rewards_margins"):
        if key in results:
            result[key] = results[key]
    return result


def run_with_fallback(name: str, runner: Any, config: Path, overrides: list[str], ctx: CheckContext,
                      summary: dict[str, Any]) -> dict[str, Any]:
    """Run a stage with QLoRA; if it fails there, record why and run it again with LoRA on a bf16 base, so one
    GPU run still measures both stages. The fallback sticks for the stages after it."""
    import gc

    import torch

    bits = summary["bits"]
    try:
        return run_stage(name, runner, config, [*ctx.common, f"model.quantization.bits={bits}", *overrides], ctx)
    except Exception as err:  # noqa: BLE001 - recorded, then retried without bitsandbytes or re-raised
        if bits == "null":
            raise
        logger.exception("%s FAILED with QLoRA; running it again with LoRA on a %s base", name,
                         "bf16" if ctx.cuda else "fp32")
        summary["errors"].append({"stage": name, "quantization": "nf4", "error": error_text(err)})
        summary["qlora_fallback"] = f"{name} failed with QLoRA: {type(err).__name__}: {str(err)[:300]}"
        summary["bits"] = "null"
    # (after the except block, which kept the failed trainer's frames and their GPU memory alive)
    gc.collect()
    if ctx.cuda:
        torch.cuda.empty_cache()
    # a fresh run name: the failed run directory stays for inspection
    again = [*ctx.common, "name=check-lora", "model.quantization.bits=null", *overrides]
    return run_stage(name, runner, config, again, ctx)


def error_text(err: BaseException, limit: int = 2000) -> str:
    import traceback

    return "".join(traceback.format_exception(err))[-limit:]


def run_check(args: argparse.Namespace, summary: dict[str, Any]) -> None:
    """Fill ``summary`` as the check goes, so that a failure still leaves what was measured."""
    started = time.perf_counter()
    # Progress bars of weight loading and dataset mapping would bury the report in the log's tail.
    os.environ.setdefault("HF_DATASETS_DISABLE_PROGRESS_BARS", "1")
    source = ensure_lexalign_importable()
    import torch
    import transformers

    transformers.utils.logging.disable_progress_bar()
    cuda = args.device == "cuda" or (args.device == "auto" and torch.cuda.is_available())
    if args.device == "cuda" and not torch.cuda.is_available():
        raise SystemExit("--device cuda, but torch sees no CUDA GPU")
    given = {key: getattr(args, key) for key in ("sft_steps", "sft_batch", "dpo_steps", "dpo_batch", "warmup_steps")
             if getattr(args, key) is not None}
    sizes = dataclasses.replace(GPU_SIZES if cuda else CPU_SIZES, **given)
    if not cuda:
        logger.info("CPU mode: toy sizes (%s), same stages and code path", " ".join(sizes.base_overrides))
    device_name = torch.cuda.get_device_name(0) if cuda else f"CPU ({platform.processor() or platform.machine()})"
    if args.peak_tflops:
        peak, assumed = args.peak_tflops, f"given on the command line: {args.peak_tflops} TFLOP/s"
    elif cuda:
        peak, assumed = gpu_peak(device_name)
    else:
        peak, assumed = None, "CPU: no peak assumed, MFU not computed"
    logger.info("device: %s; lexalign from the %s; peak for MFU: %s", device_name, source, assumed)
    versions = {name: local_version(name) for name in REPORTED}
    versions["python"] = platform.python_version()
    versions["cuda"] = torch.version.cuda
    logger.info("versions: %s", ", ".join(f"{k} {v}" for k, v in versions.items()))
    summary.update({"mode": "gpu" if cuda else "cpu", "device": device_name, "peak_tflops_bf16": peak,
                    "peak_assumed": assumed, "versions": versions, "lexalign_from": source})

    fallback = "--no-qlora given" if args.no_qlora else probe_bitsandbytes("cuda" if cuda else "cpu")
    if fallback:
        logger.warning("QLoRA IS NOT CHECKED: bitsandbytes 4-bit does not work here (%s); falling back to LoRA on "
                       "a %s base", fallback, "bf16" if cuda else "fp32")
    summary["qlora_fallback"] = fallback
    summary["bits"] = "null" if fallback else "4"

    work = Path(args.workdir or tempfile.mkdtemp(prefix="lexalign-gpu-check-"))
    work.mkdir(parents=True, exist_ok=True)
    summary["workdir"] = str(work)
    runs = work / "runs"
    threads = args.threads if args.threads is not None else sizes.threads

    from lexalign.basemodel import build_base_model
    from lexalign.rlhf.dpo import run_dpo
    from lexalign.sft.train import run_sft

    # 1. the base model: configs/base-100m.yaml with random weights (no pretraining steps)
    base_overrides = ["name=check", f"output_dir={runs}", "pretraining.max_steps=0", "pretraining.eval_max_blocks=2",
                      f"pretraining.threads={threads}", *sizes.base_overrides]
    if sizes.corpus_chars:
        from lexalign.data.paths import shipped_dir

        corpus = work / "corpus.txt"
        corpus.write_text((shipped_dir() / "pretrain_corpus.txt").read_text(encoding="utf-8")[:sizes.corpus_chars],
                          encoding="utf-8")
        base_overrides.append(f"corpus={corpus}")
    t0 = time.perf_counter()
    base_run = build_base_model(BASE_CONFIG, base_overrides)
    base_seconds = time.perf_counter() - t0
    model_dir = base_run / "model"
    model_config = json.loads((model_dir / "config.json").read_text())
    n_matmul = matmul_parameters(model_config)
    logger.info("base model: %s (%d layers, hidden %d, vocab %d; N = %.1fM matmul parameters), built in %.1f s",
                model_dir, model_config["num_hidden_layers"], model_config["hidden_size"], model_config["vocab_size"],
                n_matmul / 1e6, base_seconds)
    summary["model"] = {"config": str(BASE_CONFIG.relative_to(ROOT)), "overrides": sizes.base_overrides,
                        "layers": model_config["num_hidden_layers"], "hidden_size": model_config["hidden_size"],
                        "vocab_size": model_config["vocab_size"], "matmul_parameters": n_matmul,
                        "build_seconds": base_seconds}

    clock = StepClock()
    clock.attach()
    common = ["name=check", f"output_dir={runs}", "resume=false", f"model.threads={threads}",
              "training.save_strategy=no", "training.eval_strategy=no",
              "training.include_num_input_tokens_seen=non_padding", "training.gradient_checkpointing=false",
              "training.disable_tqdm=true", "training.report_to=none", "training.seed=0"]
    ctx = CheckContext(clock=clock, warmup=sizes.warmup_steps, n_matmul=n_matmul, peak_tflops=peak, cuda=cuda,
                       common=common)

    # 2. QLoRA SFT (configs/sft.yaml)
    sft = run_with_fallback("sft", run_sft, SFT_CONFIG, [
        f"model.path={model_dir}", f"data.max_train_records={sizes.sft_steps * sizes.sft_batch}",
        f"data.max_valid_records={sizes.valid_records}", f"training.max_steps={sizes.sft_steps}",
        f"training.per_device_train_batch_size={sizes.sft_batch}",
        f"training.per_device_eval_batch_size={sizes.sft_batch}", f"training.max_length={sizes.sft_max_length}",
        "training.warmup_steps=2", f"training.logging_steps={max(1, sizes.sft_steps // 8)}",
        "training.learning_rate=2.0e-4", *args.sft_override], ctx, summary)
    summary["stages"]["sft"] = sft

    # 3. DPO from the SFT adapter (configs/dpo.yaml), on a 4-bit base as configs/dpo-7b.yaml trains
    summary["stages"]["dpo"] = run_with_fallback("dpo", run_dpo, DPO_CONFIG, [
        f"sft_run={sft['run_dir']}", "eval.reward_run=", "eval.num_prompts=0",
        f"data.max_train_pairs={sizes.dpo_steps * sizes.dpo_batch}", f"data.max_valid_pairs={sizes.valid_records}",
        f"training.max_steps={sizes.dpo_steps}", f"training.per_device_train_batch_size={sizes.dpo_batch}",
        f"training.per_device_eval_batch_size={sizes.dpo_batch}", f"training.max_length={sizes.dpo_max_length}",
        "training.warmup_steps=2", f"training.logging_steps={max(1, sizes.dpo_steps // 6)}",
        "training.learning_rate=5.0e-5", *args.dpo_override], ctx, summary)

    summary["quantization"] = ("nf4 (QLoRA)" if summary["bits"] == "4" else
                               f"none: LoRA on a {'bf16' if cuda else 'fp32'} base "
                               f"(QLoRA fallback: {summary['qlora_fallback']})")
    summary["peak_rss_mib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    summary["wall_seconds"] = time.perf_counter() - started
    summary["ok"] = all(s["steps"] > 0 and s["losses"] and all(math.isfinite(x) for x in s["losses"])
                        for s in summary["stages"].values()) and len(summary["stages"]) == 2


def report(summary: dict[str, Any]) -> str:
    def fmt(value: Any, spec: str) -> str:
        return "n/a" if value is None else format(value, spec)

    def flops(tflops: float) -> str:  # the CPU mode's toy model runs at GFLOP/s
        return f"{tflops:.1f} TFLOP/s" if tflops >= 0.1 else f"{tflops * 1e3:.2f} GFLOP/s"

    def mfu(value: float | None) -> str:
        return "n/a (no peak)" if value is None else f"{value * 100:.1f}%"

    lines = [f"lexalign GPU check on {summary['device']} ({summary['mode']} mode)",
             f"  quantization: {summary['quantization']}",
             f"  peak for MFU: {summary['peak_assumed']}",
             f"  model: {summary['model']['layers']} layers, hidden {summary['model']['hidden_size']}, "
             f"N = {summary['model']['matmul_parameters'] / 1e6:.1f}M matmul parameters"]
    for name, stage in summary["stages"].items():
        losses = stage["losses"]
        lines.append(
            f"  {name}: {stage['steps']} steps ({stage['timed_steps']} timed after {stage['warmup_steps']} warm-up); "
            f"{stage['tokens_per_s']:,.0f} tokens/s (all steps {stage['tokens_per_s_all_steps']:,.0f}); "
            f"{stage['flops_per_token'] / summary['model']['matmul_parameters']:.0f}N FLOPs/token -> "
            f"{flops(stage['achieved_tflops'])}, MFU {mfu(stage['mfu'])}; "
            f"peak GPU memory {fmt(stage['peak_memory_gib'], '.2f')} GiB; "
            f"loss {losses[0]:.4f} -> {losses[-1]:.4f}; stage wall {stage['stage_seconds']:.1f} s")
    for error in summary["errors"]:
        lines.append(f"  ERROR in {error['stage']} ({error.get('quantization', '')}): "
                     f"{error['error'].strip().splitlines()[-1]}")
    lines.append(f"  total wall time {summary['wall_seconds']:.1f} s; ok: {summary['ok']}")
    return "\n".join(lines)


def default_out() -> Path:
    return Path(os.environ["OUT"]) if os.environ.get("OUT") else ROOT / "bench" / "out"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("prepare", help="download the wheels to carry (needs a package index)")
    p.add_argument("--dest", type=Path, default=DEFAULT_WHEELS)
    p.add_argument("--python-version", default=DEFAULT_TARGET_PYTHON, help="the GPU image's Python (default 3.12)")
    p.add_argument("--bnb-cuda", default=",".join(DEFAULT_BNB_CUDA),
                   help="CUDA versions whose bitsandbytes kernels to keep, e.g. 130,132 (torch.version.cuda 13.0)")
    i = sub.add_parser("install", help="offline: install the carried wheels that this Python lacks")
    i.add_argument("--wheels", type=Path, default=DEFAULT_WHEELS)
    i.add_argument("--target", type=Path, required=True, help="folder to install into (put it on PYTHONPATH)")
    r = sub.add_parser("run", help="the check: base model, QLoRA SFT, DPO; tokens/s, MFU, peak memory")
    r.add_argument("--device", choices=["auto", "cuda", "cpu"], default="auto",
                   help="cpu = toy sizes, the same stages (what CI runs)")
    r.add_argument("--out", type=Path, default=None, help="summary folder (default: $OUT, else bench/out)")
    r.add_argument("--workdir", default=None, help="run directories (default: a new temporary folder)")
    r.add_argument("--no-qlora", action="store_true", help="LoRA on a bf16 base instead of QLoRA")
    r.add_argument("--peak-tflops", type=float, default=None, help="dense bf16 peak for MFU (default: by GPU name)")
    r.add_argument("--threads", type=int, default=None,
                   help="torch intra-op threads (default: GPU 0 = one per core, CPU 1)")
    for key in ("sft_steps", "sft_batch", "dpo_steps", "dpo_batch", "warmup_steps"):
        r.add_argument("--" + key.replace("_", "-"), dest=key, type=int, default=None)
    r.add_argument("--sft-override", action="append", default=[], metavar="KEY=VALUE",
                   help="extra lexalign sft override (repeatable), e.g. training.max_length=2048")
    r.add_argument("--dpo-override", action="append", default=[], metavar="KEY=VALUE")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s",
                        datefmt="%H:%M:%S")
    if args.command == "prepare":
        prepare(args.dest, args.python_version, tuple(v.strip() for v in args.bnb_cuda.split(",") if v.strip()))
        return
    if args.command == "install":
        install(args.wheels, args.target)
        return
    out = args.out or default_out()
    out.mkdir(parents=True, exist_ok=True)
    summary: dict[str, Any] = {
        "check": "lexalign gpu_check", "ok": False, "stages": {}, "errors": [],
        "flops_note": "model FLOPs per non-padding token: SFT with (Q)LoRA 4N (forward 2N + activation "
                      "gradients 2N; weight gradients only for the adapters), DPO with LoRA 6N (policy 4N + "
                      "reference forward 2N); N = matmul weights; attention-score FLOPs not counted",
    }
    try:
        run_check(args, summary)
    except BaseException as err:
        summary["errors"].append({"stage": "check", "error": error_text(err)})
        raise
    finally:  # what was measured comes back even when a stage broke
        (out / SUMMARY_NAME).write_text(json.dumps(summary, indent=2, default=str) + "\n", encoding="utf-8")
        logger.info("summary: %s", out / SUMMARY_NAME)
    print(report(summary))
    if not summary["ok"]:
        raise SystemExit("the check failed: a stage trained no steps or logged a non-finite loss")


if __name__ == "__main__":
    main()
