"""DPO stage on the tiny model: the margin rises, the reference is the SFT policy, the adapter is servable."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from lexalign.config import ConfigError, load_config
from lexalign.errors import LexalignError
from lexalign.rlhf.dpo import DPOStageConfig, train_dpo
from lexalign.runs import is_complete, read_manifest, read_metrics

pytest_plugins = ["test_reward_support"]

from test_reward_support import REPO  # noqa: E402

DPO_YAML = REPO / "configs" / "dpo.yaml"


def dpo_config(sft_run: Path, pairs: tuple[Path, Path, Path], out: Path, *extra: str) -> DPOStageConfig:
    return load_config(DPOStageConfig, DPO_YAML, [
        f"sft_run={sft_run}", f"output_dir={out}", f"data.train=[{pairs[0]}]", f"data.valid=[{pairs[1]}]",
        "data.max_valid_pairs=0", "model.threads=1", "training.max_steps=30", "training.learning_rate=2e-3",
        "training.warmup_steps=0", "training.eval_steps=30", "training.save_steps=15", "training.logging_steps=5",
        "training.max_length=192", "eval.reward_run=", *extra])


@pytest.fixture(scope="module")
def dpo_run(align_sft_run: Path, align_pairs, align_reward_run: Path,
            tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("dpo")
    return train_dpo(dpo_config(align_sft_run, align_pairs, out, f"eval.reward_run={align_reward_run}",
                                "eval.num_prompts=6", "eval.max_new_tokens=16", f"eval.prompts=[{align_pairs[1]}]"))


def test_dpo_raises_the_held_out_margin(dpo_run: Path, align_sft_run: Path) -> None:
    assert read_manifest(align_sft_run)["results"]["mode"] == "qlora"  # the default path: a QLoRA SFT adapter
    results = read_manifest(dpo_run)["results"]
    assert results["initial_eval_rewards_margins"] == 0.0  # policy == reference at start
    assert results["eval_rewards_margins"] > 0.5, results
    assert results["eval_rewards_accuracies"] >= 0.9
    assert results["eval_logp_margin"] > results["initial_eval_logp_margin"] + 5.0, results
    assert results["eval_loss"] < results["initial_eval_loss"]
    metrics = read_metrics(dpo_run)
    for key in ("rewards/chosen", "rewards/rejected", "rewards/margins", "rewards/accuracies"):
        assert any(key in m for m in metrics), key
    assert results["global_step"] == 30


def test_the_evaluation_before_training_is_the_sft_policys_own(dpo_run: Path, align_sft_run: Path, align_pairs,
                                                               tmp_path: Path) -> None:
    """The stage reads the before-training numbers off its final evaluation (the policy starts as the reference);
    TRL's evaluation of the untrained SFT policy on the same held-out pairs must give the same numbers."""
    import math

    from datasets import Dataset
    from trl import DPOConfig, DPOTrainer

    from lexalign.modeling import load_tokenizer, trained_policy
    from lexalign.rlhf.dpo import to_dpo_records
    from lexalign.rlhf.policy import load_policy
    from lexalign.training import load_pairs

    config = dpo_config(align_sft_run, align_pairs, tmp_path)
    sft = trained_policy(config.sft_run, "sft_run")
    model, _, _, peft_config = load_policy(config.model, sft)
    held_out = Dataset.from_list(to_dpo_records(load_pairs([str(align_pairs[1])])))
    args = DPOConfig(output_dir=str(tmp_path / "ckpt"), report_to="none", use_cpu=True, bf16=False,
                     max_length=192, beta=config.training["beta"], save_strategy="no",
                     per_device_eval_batch_size=config.training["per_device_eval_batch_size"])
    trainer = DPOTrainer(model=model, ref_model=None, args=args, train_dataset=held_out, eval_dataset=held_out,
                         processing_class=load_tokenizer(sft.tokenizer_dir), peft_config=peft_config)
    measured = trainer.evaluate()

    derived = next(m for m in read_metrics(dpo_run) if m["step"] == 0)
    assert derived["eval_loss"] == pytest.approx(measured["eval_loss"], abs=1e-6) == math.log(2)
    for key in ("eval_logps/chosen", "eval_logps/rejected", "eval_rewards/margins"):
        assert derived[key] == pytest.approx(measured[key], rel=1e-4, abs=1e-4), key
    results = read_manifest(dpo_run)["results"]
    assert results["initial_eval_logp_margin"] == pytest.approx(
        measured["eval_logps/chosen"] - measured["eval_logps/rejected"], rel=1e-4)
    assert abs(results["initial_eval_logp_margin"] - results["eval_logp_margin"]) > 1.0  # not the trained policy's


def test_dpo_reference_never_moves_and_starts_equal_to_the_policy(dpo_run: Path) -> None:
    check = read_manifest(dpo_run)["results"]["reference_check"]
    assert check["initial_max_abs_diff"] < 1e-4 and check["drift_max_abs_diff"] < 1e-4 and check["sequences"] > 0
    assert check["initial_adapter_max_abs_diff"] == 0.0 and check["adapter_drift_max_abs_diff"] == 0.0  # exact copies
    assert read_manifest(dpo_run)["results"]["reference"].startswith("frozen copy of the SFT adapter")


def test_dpo_adapter_is_trained_servable_and_evaluated(dpo_run: Path, align_sft_run: Path) -> None:
    from safetensors.torch import load_file

    from lexalign.sft.export import adapter_info

    manifest = read_manifest(dpo_run)
    assert is_complete(dpo_run)
    assert set(manifest["outputs"]) == {"adapter", "base_model", "lora_rank"} and manifest["outputs"]["lora_rank"] == 8
    assert manifest["parent"] == str(align_sft_run)
    adapter, base, rank = adapter_info(dpo_run)  # what `lexalign export` / `serve` read
    assert rank == 8 and base == Path(read_manifest(align_sft_run)["outputs"]["base_model"])
    assert not (adapter / "ref").exists()  # only the trained adapter, not the frozen reference copy
    before = load_file(str(align_sft_run / "adapter" / "adapter_model.safetensors"))
    after = load_file(str(adapter / "adapter_model.safetensors"))
    assert before.keys() == after.keys()
    assert sum(not torch.equal(before[k], after[k]) for k in before) >= len(before) // 2
    for name in ("training.png", "rewards.png", "adapter/README.md", "adapter/tokenizer.json", "winrate_samples.jsonl"):
        assert (dpo_run / name).exists(), name
    win = manifest["results"]["winrate_vs_sft"]
    assert win["prompts"] == 6 and win["wins"] + win["ties"] + win["losses"] == 6 and 0 <= win["win_rate"] <= 1


def test_dpo_reference_equals_the_sft_model_not_the_base(align_sft_run: Path, align_pairs, tmp_path: Path) -> None:
    """What the stage builds: TRL's reference log-probs are those of base + SFT adapter (a separate model)."""
    from datasets import Dataset
    from peft import PeftModel
    from transformers import AutoModelForCausalLM
    from trl import DPOConfig, DPOTrainer

    from lexalign.modeling import load_tokenizer, trained_policy
    from lexalign.rlhf.dpo import completion_logps, reference_logps, to_dpo_records
    from lexalign.rlhf.policy import load_policy
    from lexalign.training import load_pairs

    config = dpo_config(align_sft_run, align_pairs, tmp_path)
    sft = trained_policy(config.sft_run, "sft_run")
    tokenizer = load_tokenizer(sft.tokenizer_dir)
    model, _, _, peft_config = load_policy(config.model, sft)
    pairs = load_pairs([str(align_pairs[1])])[:4]
    args = DPOConfig(output_dir=str(tmp_path / "ckpt"), report_to="none", use_cpu=True, bf16=False,
                     max_length=192, per_device_train_batch_size=4, max_steps=3, learning_rate=5e-3,
                     save_strategy="no")
    trainer = DPOTrainer(model=model, ref_model=None, args=args, train_dataset=Dataset.from_list(to_dpo_records(pairs)),
                         processing_class=tokenizer, peft_config=peft_config)
    batch = trainer.data_collator([trainer.train_dataset[i] for i in range(4)])
    reference = reference_logps(trainer, batch)

    base = AutoModelForCausalLM.from_pretrained(str(sft.base)).eval()
    base_logps = completion_logps(base, batch)
    sft_model = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(str(sft.base)), str(sft.adapter)).eval()
    sft_logps = completion_logps(sft_model, batch)
    assert torch.allclose(reference, sft_logps, atol=1e-3), (reference, sft_logps)
    assert (reference - base_logps).abs().max() > 1.0  # the adapter-disabled base would be the wrong reference
    trainer.train()
    assert torch.allclose(reference_logps(trainer, batch), sft_logps, atol=1e-3)  # still SFT after training
    assert (completion_logps(trainer.model, batch) - sft_logps).abs().max() > 1e-2  # while the policy moved


def test_dpo_resumes_from_its_checkpoint(align_sft_run: Path, align_pairs, tmp_path: Path) -> None:
    """A finished run extended to more steps resumes at its last checkpoint (step 4): the first run's metrics
    lines are kept (marked, so that a restart logging the same seeded values again cannot pass), the second run
    logs steps 5-6 only and trains on from the checkpoint's adapter, not from the SFT one."""
    from test_sft import KILLED, mark_metrics

    first = train_dpo(dpo_config(align_sft_run, align_pairs, tmp_path, "training.max_steps=4",
                                 "training.save_steps=4", "training.eval_steps=4", "data.max_train_pairs=32",
                                 "training.logging_steps=1"))
    assert (first / "checkpoints" / "checkpoint-4").is_dir()
    before = mark_metrics(first)
    again = train_dpo(dpo_config(align_sft_run, align_pairs, tmp_path, "training.max_steps=6",
                                 "training.save_steps=4", "training.eval_steps=6", "data.max_train_pairs=32",
                                 "training.logging_steps=1"))
    assert read_manifest(again)["results"]["global_step"] == 6
    metrics = read_metrics(again)
    kept = [m for m in before if m["step"] <= 4]
    assert metrics[:len(kept)] == kept  # steps 0-4 of the first run, unchanged
    assert [m["step"] for m in metrics[len(kept):] if "loss" in m] == [5, 6]  # resumed: no step 1-4 again
    assert not [m for m in metrics[len(kept):] if m.get("attempt") == KILLED]
    # the resumed policy starts from checkpoint-4's adapter: at step 5 it is still ahead of the reference (margin > 0);
    # a resume from the SFT adapter would start level with it (margins ~0, as at step 1)
    margins = {m["step"]: m["rewards/margins"] for m in metrics if "rewards/margins" in m}
    assert abs(margins[1]) < 1e-3 and margins[5] > 0.05, margins
    assert read_manifest(again)["results"]["reference_check"]["drift_max_abs_diff"] < 1e-4


# --------------------------------------------------------------------------- bad inputs


@pytest.fixture()
def no_model_loading(monkeypatch: pytest.MonkeyPatch) -> None:
    import lexalign.modeling

    def refuse(*args, **kwargs):
        raise AssertionError("a model was loaded before the inputs were checked")

    monkeypatch.setattr(lexalign.modeling, "load_model", refuse)


def test_missing_sft_run_and_bad_pairs_fail_before_loading(align_pairs, align_sft_run: Path, tmp_path: Path,
                                                           no_model_loading) -> None:
    from lexalign.data.jsonl import DataError
    from lexalign.runs import RunDirError

    with pytest.raises(RunDirError, match="sft_run: .* does not exist"):
        train_dpo(dpo_config(tmp_path / "missing", align_pairs, tmp_path))
    bad = tmp_path / "bad.jsonl"
    bad.write_text(align_pairs[0].read_text().splitlines()[0] + "\n" +
                   json.dumps({"prompt": [{"role": "user", "content": "q"}], "chosen": "a", "rejected": "b"}) + "\n")
    with pytest.raises(DataError, match=f"{bad}:2: prompt, chosen and rejected must all be strings or all"):
        train_dpo(dpo_config(align_sft_run, (bad, align_pairs[1], bad), tmp_path))
    assert not (tmp_path / "tiny" / "dpo").exists()


@pytest.mark.parametrize("overrides, key", [
    (["training.loss_type=[sigmod]"], "training.loss_type"),
    (["training.beta=0"], "training.beta"),
    (["training.sync_ref_model=true"], "training.sync_ref_model"),
    (["training.train_sampling_strategy=batch_rebalance"], "training.train_sampling_strategy"),   # pairs: no input_ids
    (["data.train=[/no/such/pairs.jsonl]"], "data.train[0]"),
    (["model.tuning=full", "model.quantization.bits=null"], "model.tuning"),
    (["sft_run="], "sft_run"),
    (["eval.prompts=[/no/prompts.jsonl]"], "eval.prompts[0]"),
])
def test_bad_dpo_configs_fail_before_any_model_loads(overrides: list[str], key: str) -> None:
    with pytest.raises(ConfigError) as info:
        load_config(DPOStageConfig, DPO_YAML, overrides)
    assert key in [p.key for p in info.value.problems]


def test_a_reward_run_is_not_a_policy(align_reward_run: Path, align_pairs, tmp_path: Path, no_model_loading) -> None:
    from lexalign.modeling import ModelLoadError

    with pytest.raises(ModelLoadError, match="a reward run \\(a scorer, not a policy\\)"):
        train_dpo(dpo_config(align_reward_run, align_pairs, tmp_path))


def test_balance_fixed_answers_keeps_each_fixed_answer_as_often_chosen_as_rejected(tmp_path: Path) -> None:
    from lexalign.training import PreferenceDataSection

    def pair(prompt: str, chosen: str, rejected: str) -> dict:
        return {"prompt": [{"role": "user", "content": prompt}], "chosen": [{"role": "assistant", "content": chosen}],
                "rejected": [{"role": "assistant", "content": rejected}], "meta": {"prompt_id": prompt}}

    rows = ([pair(f"absent {i}", "Not present.", f'"made-up clause {i}"') for i in range(5)]      # the prior's winner
            + [pair("present 0", '"Clause 0."', "Not present.")]                                   # the one reverse
            + [pair(f"present {i}", f'"Clause {i}."', f'"Clause {i}, misquoted."') for i in range(1, 4)]
            + [pair("p", "Yes", "No"), pair("q", "No", "Yes")])                                    # balanced already
    path = tmp_path / "pairs.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")

    def load(balance: bool, seed: int = 0, drop: bool = False) -> list[tuple[str, str]]:
        section = PreferenceDataSection(train=[str(path)], valid=[str(path)], balance_fixed_answers=balance,
                                        drop_fixed_answer_pairs=drop, split_seed=seed)
        train, valid, _ = section.load()
        assert len(valid) == len(rows)  # held-out pairs are never balanced
        return [(p.chosen[0].content, p.rejected[0].content) for p in train]

    assert len(load(False)) == len(rows)
    kept = load(True)
    assert sum(c == "Not present." for c, _ in kept) == sum(r == "Not present." for _, r in kept) == 1
    assert len(kept) == len(rows) - 4          # 4 of the 5 "Not present." wins dropped, nothing else
    assert [c for c, _ in kept if c.startswith('"Clause')] == ['"Clause 0."', '"Clause 1."', '"Clause 2."',
                                                               '"Clause 3."']   # quotes kept, in file order
    assert ("Yes", "No") in kept and ("No", "Yes") in kept
    assert load(True) == kept and len({tuple(load(True, seed)) for seed in range(6)}) > 1   # a seeded draw
    # dropping keeps only the pairs of two answers that are each the policy's own reading: the three quote pairs
    assert load(False, drop=True) == [(f'"Clause {i}."', f'"Clause {i}, misquoted."') for i in range(1, 4)]

    # bench/pair_mix.py counts the same mix by task and answer kind, before and after balancing
    for row in rows:
        row["meta"]["task"] = "presence" if row["chosen"][0]["content"] in ("Yes", "No") else "extract"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    for flags, wanted in (([], "extract NP > Q 5, extract Q > NP 1, extract Q > Q 3, presence No > Yes 1"),
                          (["--balance-fixed-answers"], "extract NP > Q 1, extract Q > NP 1, extract Q > Q 3"),
                          (["--drop-fixed-answer-pairs"], ": 3 pairs: extract Q > Q 3")):
        result = subprocess.run([sys.executable, str(REPO / "bench" / "pair_mix.py"), str(path), *flags],
                                capture_output=True, text=True, check=True)
        assert wanted in result.stdout, result.stdout

    path.write_text(json.dumps(rows[0]) + "\n" + json.dumps(rows[1]) + "\n", encoding="utf-8")
    with pytest.raises(LexalignError, match="balance_fixed_answers: it left none of the 2 training pairs"):
        load(True)   # "Not present." wins both: nothing left to train on is an error, not an empty run
    with pytest.raises(LexalignError, match="drop_fixed_answer_pairs: it left none of the 2 training pairs"):
        load(False, drop=True)
    both = PreferenceDataSection(train=[str(path)], balance_fixed_answers=True, drop_fixed_answer_pairs=True)
    assert [p.key for p in both.problems()] == ["drop_fixed_answer_pairs"]   # a config that asks for both is refused
