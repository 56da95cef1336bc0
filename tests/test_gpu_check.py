"""bench/gpu_check.sh: the CPU mode runs the GPU check's whole code path (base model, QLoRA SFT, DPO through
lexalign's stages, step clock, summary), so the script that only runs on a GPU machine now and then keeps
working; and the pieces of its offline install and FLOP accounting behave."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
from bench_support import load_bench_script

REPO_ROOT = Path(__file__).resolve().parent.parent
SCRIPT = REPO_ROOT / "bench" / "gpu_check.sh"




@pytest.mark.slow
def test_cpu_mode_trains_both_stages_and_writes_the_summary(tmp_path: Path) -> None:
    out = tmp_path / "out"
    env = {**os.environ, "PYTHON": sys.executable}
    env.pop("OUT", None)
    # one intra-op thread, as the rest of the suite trains its tiny models (tests/conftest.py)
    threads = os.environ.get("OMP_NUM_THREADS", "1")
    proc = subprocess.run(["bash", str(SCRIPT), "--cpu", "--out", str(out), "--workdir", str(tmp_path / "work"),
                           "--threads", threads],
                          cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-5000:]
    assert "tokens/s" in proc.stdout and "ok: True" in proc.stdout

    summary = json.loads((out / "gpu_check.json").read_text())
    assert summary["ok"] is True
    assert summary["mode"] == "cpu"
    assert summary["errors"] == []
    assert summary["qlora_fallback"] is None and summary["quantization"].startswith("nf4")
    for key in ("device", "peak_tflops_bf16", "peak_assumed", "versions", "model", "flops_note", "wall_seconds"):
        assert key in summary, key
    n = summary["model"]["matmul_parameters"]
    assert n > 0
    for name, factor in (("sft", 4), ("dpo", 6)):
        stage = summary["stages"][name]
        for key in ("tokens_per_s", "tokens_per_s_all_steps", "achieved_tflops", "mfu", "peak_memory_gib",
                    "flops_per_token", "losses", "timed_steps", "stage_seconds", "eval_loss"):
            assert key in stage, (name, key)
        assert stage["steps"] >= 2 and stage["global_step"] == stage["steps"]
        assert stage["timed_steps"] >= 1 and stage["timed_tokens"] > 0
        assert stage["tokens_per_s"] > 0 and math.isfinite(stage["tokens_per_s"])
        assert stage["flops_per_token"] == factor * n
        assert stage["mode"] == "qlora"
        assert stage["mfu"] is None and stage["peak_memory_gib"] is None  # no GPU peak, no GPU memory on a CPU
        assert stage["losses"] and all(math.isfinite(x) for x in stage["losses"])
        assert math.isfinite(stage["eval_loss"])
        assert (Path(stage["run_dir"]) / "COMPLETE").is_file()


def test_peak_is_chosen_by_gpu_name() -> None:
    gpu_check = load_bench_script("gpu_check")
    assert gpu_check.gpu_peak("NVIDIA H100 80GB HBM3")[0] == 989.0
    assert gpu_check.gpu_peak("NVIDIA H100 PCIe")[0] == 756.0
    assert gpu_check.gpu_peak("NVIDIA H200")[0] == 989.0
    peak, label = gpu_check.gpu_peak("Some Other GPU")
    assert peak is None and "--peak-tflops" in label


def test_matmul_parameters_of_the_100m_config() -> None:
    """configs/base-100m.yaml: 12 layers x (4 x 768^2 + 3 x 768 x 2304) + the 768 x 4096 head."""
    gpu_check = load_bench_script("gpu_check")
    config = {"hidden_size": 768, "num_attention_heads": 12, "num_key_value_heads": 12, "intermediate_size": 2304,
              "num_hidden_layers": 12, "vocab_size": 4096}
    assert gpu_check.matmul_parameters(config) == 12 * (4 * 768 * 768 + 3 * 768 * 2304) + 768 * 4096


def test_bitsandbytes_wheel_is_trimmed_to_the_kept_kernels(tmp_path: Path) -> None:
    gpu_check = load_bench_script("gpu_check")
    source = tmp_path / "src" / "bitsandbytes-0.50.2-py3-none-manylinux_2_24_x86_64.whl"
    source.parent.mkdir()
    files = ["bitsandbytes/__init__.py", "bitsandbytes/libbitsandbytes_cpu.so",
             "bitsandbytes/libbitsandbytes_cuda130.so", "bitsandbytes/libbitsandbytes_cuda128.so",
             "bitsandbytes/libbitsandbytes_rocm72.so"]
    record = "".join(f"{name},sha256=x,1\n" for name in files) + "bitsandbytes-0.50.2.dist-info/RECORD,,\n"
    with zipfile.ZipFile(source, "w") as archive:
        for name in files:
            archive.writestr(name, b"x")
        archive.writestr("bitsandbytes-0.50.2.dist-info/RECORD", record)
    target = tmp_path / source.name
    gpu_check.trim_bitsandbytes(source, target, ("130",))
    with zipfile.ZipFile(target) as archive:
        names = set(archive.namelist())
        kept_record = archive.read("bitsandbytes-0.50.2.dist-info/RECORD").decode()
    assert names == {"bitsandbytes/__init__.py", "bitsandbytes/libbitsandbytes_cpu.so",
                     "bitsandbytes/libbitsandbytes_cuda130.so", "bitsandbytes-0.50.2.dist-info/RECORD"}
    assert "cuda128" not in kept_record and "rocm72" not in kept_record and "cuda130" in kept_record
