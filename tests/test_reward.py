"""Reward stage on the tiny model: learning, held-out accuracy, the saved form, scoring CLI, bad inputs."""

from __future__ import annotations

import json
import logging
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from lexalign.config import ConfigError, load_config
from lexalign.reward.train import RewardStageConfig, calibration_table, train_reward
from lexalign.runs import is_complete, read_manifest, read_metrics

pytest_plugins = ["test_reward_support"]

from test_reward_support import REPO, preference_pairs, reward_overrides, write_jsonl  # noqa: E402

REWARD_YAML = REPO / "configs" / "reward.yaml"


def test_reward_model_learns_the_preference_and_writes_a_complete_run(align_reward_run: Path) -> None:
    manifest = read_manifest(align_reward_run)
    assert read_manifest(Path(manifest["parent"]))["results"]["mode"] == "qlora"  # the default path: a QLoRA SFT run
    results = manifest["results"]
    assert results["pairwise_accuracy"] >= 0.9, results
    assert results["valid_pairs"] == 48 and results["valid_prompts_also_in_train"] == 0
    (only,) = results["accuracy_by_source"].values()  # these pairs carry no meta.source: one group
    assert only["pairs"] == 48 and only["accuracy"] == pytest.approx(results["pairwise_accuracy"])
    assert only["ci95"][0] <= only["accuracy"] <= only["ci95"][1] and only["chance"] == 0.5
    losses = [m["loss"] for m in read_metrics(align_reward_run) if "loss" in m]
    assert losses[-1] < losses[0] * 0.7, losses
    assert results["global_step"] == 40
    assert manifest["outputs"]["model"] == "model" and manifest["parent"]
    for name in ("config.yaml", "manifest.json", "metrics.jsonl", "training.png", "calibration.png", "COMPLETE",
                 "scores_valid.jsonl", "model/model.safetensors", "model/config.json", "model/tokenizer.json",
                 "model/chat_template.jinja", "model/README.md", "model/lexalign_reward.json"):
        assert (align_reward_run / name).exists(), name
    assert is_complete(align_reward_run)
    assert not (align_reward_run / "init").exists()


def test_frozen_reward_model_scores_in_its_training_dtype_where_the_cpu_has_it(
        align_reward_run: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The stage records the dtype it trained in; a frozen scorer loads in bf16 only for a bf16-trained model on a
    CPU with bf16 instructions, and a trainable copy (PPO's value model) keeps fp32 weights."""
    import lexalign.modeling as modeling

    recorded = json.loads((align_reward_run / "model" / "lexalign_reward.json").read_text())
    assert recorded["compute_dtype"] == "float32"  # the tiny config trains in fp32 on a CPU
    folder = tmp_path / "model"
    shutil.copytree(align_reward_run / "model", folder)
    (folder / "lexalign_reward.json").write_text(json.dumps({**recorded, "compute_dtype": "bfloat16"}))

    def dtype_of(model_folder: Path, **kwargs: bool) -> torch.dtype:
        return next(modeling.load_reward_model(model_folder, "cpu", **kwargs)[0].parameters()).dtype

    monkeypatch.setattr(modeling, "cpu_has_native_bf16", lambda: True)
    assert dtype_of(folder) == torch.bfloat16
    assert dtype_of(folder, trainable=True) == torch.float32
    assert dtype_of(align_reward_run / "model") == torch.float32
    monkeypatch.setattr(modeling, "cpu_has_native_bf16", lambda: False)
    assert dtype_of(folder) == torch.float32


def test_a_damaged_record_beside_the_reward_model_is_a_clear_error(align_reward_run: Path, tmp_path: Path) -> None:
    from lexalign.errors import LexalignError
    from lexalign.modeling import reward_model_info

    folder = tmp_path / "model"
    folder.mkdir()
    assert reward_model_info(folder) == {}  # none recorded: an older or foreign model
    assert reward_model_info(align_reward_run / "model")["max_length"] == 192
    (folder / "lexalign_reward.json").write_text('{"max_length": 192,\n "compute_dtype": }')
    with pytest.raises(LexalignError, match=r"lexalign_reward.json:2: not valid JSON"):
        reward_model_info(folder)
    (folder / "lexalign_reward.json").write_text("[512]")
    with pytest.raises(LexalignError, match=r"lexalign_reward.json:1: expected a JSON object"):
        reward_model_info(folder)


def test_bench_script_scores_the_held_out_pairs_in_both_dtypes(
        align_reward_run: Path, align_pairs: tuple[Path, Path, Path], tmp_path: Path) -> None:
    """bench/reward_dtype.py: fp32, then the frozen scorer as consumers load it, on the same pairs; the accuracies of
    both and the decisions compared (the tiny model marked bf16-trained, as the SmolLM2 reward stage records it)."""
    from lexalign.modeling import cpu_has_native_bf16

    folder = tmp_path / "model"
    shutil.copytree(align_reward_run / "model", folder)
    info = folder / "lexalign_reward.json"
    info.write_text(json.dumps({**json.loads(info.read_text()), "compute_dtype": "bfloat16"}))
    out = subprocess.run([sys.executable, str(REPO / "bench" / "reward_dtype.py"), str(folder),
                          "--pairs", str(align_pairs[1])], capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-2000:]
    lines = out.stdout.splitlines()
    results = read_manifest(align_reward_run)["results"]
    n = results["valid_pairs"]
    assert f"valid.jsonl {results['pairwise_accuracy']:.3f} (n {n})" in lines[1], lines[1]  # the stage's fp32 measure
    if cpu_has_native_bf16():
        assert [line.split(":")[0].strip() for line in lines[1:3]] == ["float32", "bfloat16"], out.stdout
        assert "decisions that differ:" in lines[3] and f" of {n};" in lines[3], lines[3]
    else:  # the frozen scorer stays fp32 on such a CPU: the script says there is nothing to compare
        assert "nothing to compare" in lines[3], out.stdout


def test_the_score_before_training_is_measured_by_default_and_skipped_when_switched_off(
        align_reward_run: Path, align_sft_run: Path, align_pairs, tmp_path: Path, caplog) -> None:
    measured = read_manifest(align_reward_run)["results"]
    assert 0 <= measured["initial_pairwise_accuracy"] <= 1 and measured["initial_accuracy_by_source"]
    assert [m for m in read_metrics(align_reward_run) if m["step"] == 0 and "eval_accuracy" in m]

    config = load_config(RewardStageConfig, REWARD_YAML, reward_overrides(
        align_sft_run, align_pairs, tmp_path, "training.max_steps=2", "score_before_training=false"))
    with caplog.at_level(logging.INFO, logger="lexalign.reward.train"):
        run = train_reward(config)
    results = read_manifest(run)["results"]
    assert results["initial_pairwise_accuracy"] is None and results["initial_accuracy_by_source"] is None
    assert 0 <= results["pairwise_accuracy"] <= 1  # the saved model is still scored on every held-out pair
    assert not [m for m in read_metrics(run) if m["step"] == 0]
    assert "scoring 48 held-out pairs before training" not in caplog.text
    assert "before training not measured (score_before_training: false)" in caplog.text


def test_saved_reward_model_reloads_with_the_same_scores(align_reward_run: Path) -> None:
    """The merged folder alone, loaded with plain transformers, gives the scores the trained model gave."""
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from lexalign.modeling import reward_input_ids
    from lexalign.training import load_pairs

    results = read_manifest(align_reward_run)["results"]
    assert results["reload_max_abs_diff"] < 1e-4  # in-memory (PeftModel) vs reloaded merged folder
    folder = align_reward_run / "model"
    config = json.loads((folder / "config.json").read_text())
    assert len(config["id2label"]) == 1
    assert config["pad_token_id"] is not None
    model = AutoModelForSequenceClassification.from_pretrained(str(folder)).eval()
    tokenizer = AutoTokenizer.from_pretrained(str(folder))
    saved = [json.loads(line) for line in (align_reward_run / "scores_valid.jsonl").read_text().splitlines()]
    pairs = load_pairs(load_config(RewardStageConfig, align_reward_run / "config.yaml").data.valid)
    for pair, row in list(zip(pairs, saved))[:8]:
        prompt = [m.model_dump() for m in pair.prompt]
        for side in ("chosen", "rejected"):
            ids = reward_input_ids(tokenizer, prompt, [m.model_dump() for m in getattr(pair, side)], 192)
            with torch.no_grad():
                score = model(input_ids=torch.tensor([ids])).logits[0, 0].item()
            assert abs(score - row[f"{side}_score"]) < 1e-4, (side, score, row)


def test_pairs_cut_to_max_length_are_counted_in_a_warning(align_reward_run: Path, caplog) -> None:
    from transformers import AutoTokenizer

    from lexalign.reward.train import to_reward_records
    from lexalign.training import load_pairs

    tokenizer = AutoTokenizer.from_pretrained(str(align_reward_run / "model"))
    pairs = load_pairs(load_config(RewardStageConfig, align_reward_run / "config.yaml").data.valid)[:4]
    with caplog.at_level("WARNING", logger="lexalign.reward.train"):
        whole = to_reward_records(pairs, tokenizer, 4096, None)
    assert "cut" not in caplog.text
    with caplog.at_level("WARNING", logger="lexalign.reward.train"):
        cut = to_reward_records(pairs, tokenizer, 40, None)
    assert "8 of 8 answers are longer than training.max_length=40" in caplog.text
    assert all(len(r["chosen_ids"]) <= 40 < len(w["chosen_ids"]) for r, w in zip(cut, whole))


def test_score_cli_ranks_responses_and_reports_accuracy(align_reward_run: Path,
                                                        align_pairs: tuple[Path, Path, Path]) -> None:
    clause = "This Agreement shall be governed by the laws of the State of Ohio."
    result = subprocess.run(
        [sys.executable, "-m", "lexalign.cli", "score", "--reward", str(align_reward_run), "--device", "cpu",
         "--system", "You are a contract-review assistant. Quote clause text exactly; say 'Not present.' when absent.",
         "--prompt", f"Find the Governing Law clause in this excerpt.\n\nExcerpt: Payment is due within 30 days "
         f"of invoice. {clause}", "--response", "Not present.", "--response", f'"{clause}"'],
        capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    lines = [line for line in result.stdout.splitlines() if line.strip()]
    assert len(lines) == 2 and clause in lines[0], result.stdout  # best first: the quoted clause
    result = subprocess.run(
        [sys.executable, "-m", "lexalign.cli", "score", "--reward", str(align_reward_run), "--device", "cpu",
         "--file", str(align_pairs[1])], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    accuracy = float(result.stdout.split("pairwise accuracy ")[1].split(",")[0])
    assert accuracy == pytest.approx(read_manifest(align_reward_run)["results"]["pairwise_accuracy"], abs=1e-6)


def test_accuracy_is_reported_per_source_with_wilson_intervals() -> None:
    from types import SimpleNamespace

    from lexalign.reward.train import accuracy_by_source

    pairs = [SimpleNamespace(meta={"source": "acord"})] * 4 + [SimpleNamespace(meta={"source": "candidates"})] * 2
    chosen, rejected = [1, 1, 1, 0, 2, 0], [0, 0, 0, 1, 2, 1]  # acord 3 of 4 right; candidates one tie, one wrong
    found = accuracy_by_source(pairs, chosen, rejected)
    assert found["acord"]["accuracy"] == 0.75 and found["acord"]["pairs"] == 4
    assert found["candidates"]["accuracy"] == 0.25
    low, high = found["acord"]["ci95"]
    assert 0.30 < low < 0.75 < high < 0.96  # Wilson, n=4: about [0.30, 0.95]


def test_split_by_prompt_keeps_every_prompt_on_one_side(align_pairs: tuple[Path, Path, Path]) -> None:
    from lexalign.training import load_pairs, prompt_key, split_by_prompt

    pairs = load_pairs([str(align_pairs[2])])
    train, valid = split_by_prompt(pairs, 0.2, seed=0)
    assert len(train) + len(valid) == len(pairs) and valid and train
    assert not {prompt_key(p) for p in train} & {prompt_key(p) for p in valid}
    assert len({prompt_key(p) for p in valid}) == round(0.2 * len({prompt_key(p) for p in pairs}))
    assert split_by_prompt(pairs, 0.2, seed=0) == (train, valid)  # deterministic


def test_calibration_table_buckets_by_gap() -> None:
    table = calibration_table([0.01, -0.02, 3.0, 4.0, -0.5, 2.5], bins=3)
    assert [row["pairs"] for row in table] == [2, 2, 2]
    assert table[0]["agreement"] == 0.5 and table[-1]["agreement"] == 1.0
    assert table[-1]["predicted"] > 0.9 > table[0]["predicted"]


# --------------------------------------------------------------------------- bad inputs, before any model loads


@pytest.fixture()
def no_model_loading(monkeypatch: pytest.MonkeyPatch) -> None:
    import lexalign.modeling
    from transformers import AutoModelForSequenceClassification

    def refuse(*args, **kwargs):
        raise AssertionError("a model was loaded before the inputs were checked")

    monkeypatch.setattr(lexalign.modeling, "load_model", refuse)
    monkeypatch.setattr(AutoModelForSequenceClassification, "from_pretrained", refuse)


def test_missing_preference_file_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        load_config(RewardStageConfig, REWARD_YAML, [f"data.train=[{tmp_path / 'nope.jsonl'}]"])
    assert "data.train[0]" in [p.key for p in info.value.problems]
    assert "file not found" in str(info.value)


def test_malformed_preference_line_names_file_and_line(align_sft_run: Path, align_pairs, tmp_path: Path,
                                                       no_model_loading) -> None:
    from lexalign.data.jsonl import DataError

    bad = tmp_path / "bad.jsonl"
    good = preference_pairs(2, seed=3, prefix="bad")
    write_jsonl(bad, good)
    with bad.open("a") as handle:
        handle.write(json.dumps({"prompt": "p", "chosen": "same", "rejected": "same"}) + "\n")
        handle.write("{not json\n")
    config = load_config(RewardStageConfig, REWARD_YAML, reward_overrides(align_sft_run, align_pairs, tmp_path) +
                         [f"data.train=[{bad}]"])
    with pytest.raises(DataError) as info:
        train_reward(config)
    assert f"{bad}:5: chosen and rejected are identical" in str(info.value)
    assert f"{bad}:6: not valid JSON" in str(info.value)
    assert not (tmp_path / "tiny" / "reward").exists()


def test_missing_or_incomplete_sft_run_is_clear(align_sft_run: Path, align_pairs, tmp_path: Path,
                                                no_model_loading) -> None:
    from lexalign.runs import RunDirError

    config = load_config(RewardStageConfig, REWARD_YAML,
                         reward_overrides(tmp_path / "no-such-run", align_pairs, tmp_path))
    with pytest.raises(RunDirError, match="does not exist; run the stage that produces it first"):
        train_reward(config)
    partial = tmp_path / "partial-sft"
    shutil.copytree(align_sft_run, partial)
    (partial / "COMPLETE").unlink()
    config = load_config(RewardStageConfig, REWARD_YAML, reward_overrides(partial, align_pairs, tmp_path))
    with pytest.raises(RunDirError, match="not a completed run"):
        train_reward(config)


def test_missing_reward_run_is_a_clear_cli_error(tmp_path: Path) -> None:
    result = subprocess.run([sys.executable, "-m", "lexalign.cli", "score", "--reward", str(tmp_path / "nope"),
                             "--prompt", "p", "--response", "r"], capture_output=True, text=True, timeout=120)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert "neither a reward run directory" in result.stderr


@pytest.mark.parametrize("overrides, key", [
    (["training.max_length=8"], "training.max_length"),
    (["data.valid_fraction=1.5"], "data.valid_fraction"),
    (["sft_run=", "model.path="], "model.path"),
    (["data.margin_scale=-1"], "data.margin_scale"),
    (["training.train_sampling_strategy=group_by_length"], "training.train_sampling_strategy"),   # pairs: no input_ids
    (["training.center_rewards_coefficent=0.1"], "training.center_rewards_coefficent"),
])
def test_bad_reward_configs_fail_before_any_model_loads(overrides: list[str], key: str) -> None:
    with pytest.raises(ConfigError) as info:
        load_config(RewardStageConfig, REWARD_YAML, overrides)
    assert key in [p.key for p in info.value.problems]


def test_reward_resumes_from_its_checkpoint_with_the_trained_adapter_and_score_head(
        align_sft_run: Path, align_pairs, tmp_path: Path) -> None:
    """A finished 6-step reward run (checkpoint at step 4) is run again with the same config, as after a kill past
    step 4: it resumes at checkpoint-4, keeps the metrics lines of steps 0-4 (marked, so that a restart logging the
    same seeded values again cannot pass), logs steps 5-6 only, with the first run's values, and saves the first
    run's model. A resume that restarted from the initial LoRA or from the fresh score head fails. Then
    ``resume: false`` starts over: each step logged once, none of the earlier lines kept."""
    from safetensors.torch import load_file
    from test_sft import assert_resumed, assert_same_curve, mark_metrics

    config = load_config(RewardStageConfig, REWARD_YAML, reward_overrides(
        align_sft_run, align_pairs, tmp_path, "training.max_steps=6", "training.save_steps=4",
        "training.logging_steps=1", "training.eval_steps=100"))
    run = train_reward(config)
    first, first_model = read_metrics(run), load_file(str(run / "model" / "model.safetensors"))
    for later in (run / "checkpoints").glob("checkpoint-*"):  # checkpoint-4 only: as if killed after step 4
        if later.name != "checkpoint-4":
            shutil.rmtree(later)
    saved = load_file(str(run / "checkpoints" / "checkpoint-4" / "adapter_model.safetensors"))
    assert any(".score." in k for k in saved), list(saved)  # the trained head (modules_to_save) is in it
    killed = mark_metrics(run)

    assert train_reward(config) == run and is_complete(run)
    results = read_manifest(run)["results"]
    assert results["global_step"] == 6 and results["initial_pairwise_accuracy"] is None  # resumed: not measured
    rerun = assert_resumed(run, killed, 4, 1, 6)
    assert_same_curve(rerun, first, ("loss", "grad_norm", "learning_rate", "eval_loss", "eval_accuracy"))
    model = load_file(str(run / "model" / "model.safetensors"))
    assert model.keys() == first_model.keys() and "score.weight" in model
    diff = {k: (model[k] - first_model[k]).abs().max().item() for k in model}
    assert max(diff.values()) <= 1e-4, sorted(diff.items(), key=lambda kv: -kv[1])[:3]
    print(f"\nreward: resumed at step 5 from checkpoint-4; max |resumed - uninterrupted| weight "
          f"{max(diff.values()):.1e} (score head {diff['score.weight']:.1e})")
    # resume: false starts over: the old metrics lines go, the initial evaluation and each step are logged once
    config.resume = False
    train_reward(config)
    assert [m["step"] for m in read_metrics(run) if "loss" in m] == [1, 2, 3, 4, 5, 6]
    assert [m["step"] for m in read_metrics(run) if "eval_accuracy" in m] == [0, 6]
