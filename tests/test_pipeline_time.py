"""bench/pipeline_time.py: a pipeline run's wall time split into server starts, generation, training, the stages'
own evaluations and the rest, from what the run left behind (pipeline.json, step logs, metrics.jsonl)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from bench_support import load_bench_script

REPO_ROOT = Path(__file__).resolve().parent.parent
SCRIPT = REPO_ROOT / "bench" / "pipeline_time.py"




def fake_run(root: Path) -> Path:
    """A run as `lexalign pipeline` leaves it: a training step, a generation step, the reward step past midnight,
    PPO (no train_runtime) and GRPO (the same subcommand, with one), and a skipped step."""
    run = root / "runs" / "demo"
    (run / "logs").mkdir(parents=True)
    (run / "sft").mkdir()
    (run / "sft" / "metrics.jsonl").write_text(
        json.dumps({"step": 8, "loss": 1.0}) + "\n" + json.dumps({"step": 8, "train_runtime": 100.5}) + "\n"
        + json.dumps({"step": 8, "eval_runtime": 10.0}) + "\n" + json.dumps({"step": 0, "eval_runtime": 9.5}) + "\n")
    (run / "logs" / "sft.log").write_text("10:00:00 INFO lexalign.runs: run directory\n 50%|#####| 4/8\r 100%|\n")
    (run / "logs" / "candidates.log").write_text(
        "10:03:00 INFO lexalign.serve.launch: waiting for vLLM to load m: 10 s\n"
        "10:03:30 INFO lexalign.serve.launch: vLLM ready in 30.5 s at http://127.0.0.1:1/v1, models: m\n"
        "10:04:20 INFO lexalign.serve.candidates: 9 ranking tasks added (600 tokens in 48.0 s = 12 tokens/s)\n")
    (run / "reward").mkdir()
    (run / "reward" / "metrics.jsonl").write_text(json.dumps({"step": 4, "train_runtime": 40.0}) + "\n")
    (run / "logs" / "reward.log").write_text(
        "23:59:50 INFO lexalign.reward.train: scoring 20 held-out pairs before training\n"
        "00:00:10 INFO lexalign.reward.train: held-out pairs scored before training\n"
        "00:01:00 INFO lexalign.reward.train: scoring 20 held-out pairs with the saved reward model\n"
        "00:01:25 INFO lexalign.reward.train: held-out acord pairs: pairwise accuracy 0.5 [0.3, 0.7]\n")
    online = ("12:00:00 INFO lexalign.rlhf.policy: policy: SFT adapter trained further\n"
              "12:04:00 INFO lexalign.rlhf.winrate: win rate: 12 held-out prompts from test.jsonl, greedy\n"
              "12:04:50 INFO lexalign.runs: stage ppo complete in 300.0 s: runs/demo/ppo\n")
    for name in ("ppo", "grpo"):
        (run / name).mkdir()
        (run / "logs" / f"{name}.log").write_text(online)
    (run / "ppo" / "metrics.jsonl").write_text(json.dumps({"step": 3, "objective/kl": 0.1}) + "\n")
    (run / "grpo" / "metrics.jsonl").write_text(json.dumps({"step": 24, "train_runtime": 200.0}) + "\n")
    steps = {
        "sft": {"seconds": 130.0, "output": str(run / "sft"), "command": "lexalign sft --config c.yaml"},
        "candidates": {"seconds": 90.0, "output": str(run / "candidates" / "tasks.jsonl"),
                       "command": "lexalign candidates --run m"},
        "reward": {"seconds": 120.0, "output": str(run / "reward"), "command": "lexalign reward --config r.yaml"},
        "ppo": {"seconds": 300.0, "output": str(run / "ppo"), "command": "lexalign ppo --config ppo.yaml"},
        "grpo": {"seconds": 300.0, "output": str(run / "grpo"), "command": "lexalign ppo --config grpo.yaml"},
        "data": {"seconds": 0.0, "skipped": True, "output": str(run / "data"), "command": "lexalign data stats"},
    }
    (run / "pipeline.json").write_text(json.dumps({"steps": steps, "wall_time_s": 940.0}))
    return run


def test_each_step_is_split_by_what_its_log_and_metrics_say(tmp_path: Path) -> None:
    module = load_bench_script("pipeline_time")
    run = fake_run(tmp_path)
    state = json.loads((run / "pipeline.json").read_text())
    sft = module.step_time(run, "sft", state["steps"]["sft"])
    assert sft.parts["training"] == 100.5 and sft.parts["stage evaluation"] == 19.5
    assert abs(sft.parts["other"] - 10.0) < 1e-9
    candidates = module.step_time(run, "candidates", state["steps"]["candidates"])
    assert candidates.parts["server start"] == 30.5 and candidates.parts["generation"] == 48.0
    assert abs(candidates.parts["other"] - 11.5) < 1e-9
    reward = module.step_time(run, "reward", state["steps"]["reward"])
    # 20 s before training (across midnight) + 25 s with the saved model
    assert reward.parts["stage evaluation"] == 45.0 and reward.parts["training"] == 40.0
    assert reward.parts["other"] == 35.0
    # PPO: training from the policy's set-up to the win rate (240 s), then the win rate (50 s)
    ppo = module.step_time(run, "ppo", state["steps"]["ppo"])
    assert ppo.parts["training"] == 240.0 and ppo.parts["stage evaluation"] == 50.0
    # GRPO runs `lexalign ppo` too: its trainer's train_runtime counts, the log's window is not added to it
    grpo = module.step_time(run, "grpo", state["steps"]["grpo"])
    assert grpo.parts["training"] == 200.0 and grpo.parts["stage evaluation"] == 50.0


def test_the_table_sums_the_steps_that_ran_and_reports_the_load(tmp_path: Path) -> None:
    run = fake_run(tmp_path)
    load_log = tmp_path / "load.log"
    load_log.write_text("10:00:00 0.10 0.2 0.3\n10:01:00 2.05 1.0 0.5\n")
    result = subprocess.run([sys.executable, str(SCRIPT), str(run), "--markdown", "--load-log", str(load_log)],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    rows = [line for line in result.stdout.splitlines() if line.startswith("| ")]
    assert [r.split("|")[1].strip() for r in rows[1:]] == ["sft", "candidates", "reward", "ppo", "grpo", "**all**"]
    assert "**940**" in rows[-1]  # the skipped step counts nothing
    assert "1-min load average 0.10-2.05 over 2 samples" in result.stdout


def test_a_malformed_load_log_is_named_by_file_and_line(tmp_path: Path) -> None:
    run = fake_run(tmp_path)
    load_log = tmp_path / "load.log"
    load_log.write_text("10:00:00 0.10 0.2 0.3\n10:01:00 high\n")
    result = subprocess.run([sys.executable, str(SCRIPT), str(run), "--load-log", str(load_log)],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode != 0 and "Traceback" not in result.stderr
    assert f"{load_log}:2: expected 'HH:MM:SS load1 load5 load15'" in result.stderr


def test_a_folder_without_a_pipeline_run_is_named(tmp_path: Path) -> None:
    result = subprocess.run([sys.executable, str(SCRIPT), str(tmp_path)], capture_output=True, text=True, timeout=60)
    assert result.returncode != 0
    assert f"{tmp_path / 'pipeline.json'}: no pipeline state" in result.stderr
