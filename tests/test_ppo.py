"""Online RL stage (PPO, GRPO, RLOO) on the tiny model: steps with KL and reward logged, inputs checked first."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch

from lexalign.config import ConfigError, load_config
from lexalign.rlhf.online import OnlineStageConfig, train_online
from lexalign.runs import is_complete, read_manifest, read_metrics

pytest_plugins = ["test_reward_support"]

from test_reward_support import REPO  # noqa: E402

PPO_YAML = REPO / "configs" / "ppo.yaml"


def online_config(sft_run: Path, reward_run: Path, prompts: Path, out: Path, *extra: str) -> OnlineStageConfig:
    return load_config(OnlineStageConfig, PPO_YAML, [
        f"sft_run={sft_run}", f"reward_run={reward_run}", f"output_dir={out}", f"data.prompts=[{prompts}]",
        "data.max_prompts=64", "model.threads=1", "ppo.total_episodes=32", "ppo.response_length=24",
        "ppo.learning_rate=1e-3", "grpo.max_steps=4", "grpo.max_completion_length=24", "grpo.learning_rate=1e-3",
        "rloo.max_steps=4", "rloo.max_completion_length=24", "rloo.learning_rate=1e-3", "eval.num_prompts=4",
        "eval.max_new_tokens=16", f"eval.prompts=[{prompts}]", *extra])


def adapter_changed(run: Path, sft_run: Path) -> int:
    from safetensors.torch import load_file

    before = load_file(str(sft_run / "adapter" / "adapter_model.safetensors"))
    after = load_file(str(run / "adapter" / "adapter_model.safetensors"))
    assert before.keys() == after.keys()
    return sum(not torch.equal(before[k], after[k]) for k in before)


@pytest.fixture(scope="module")
def ppo_run(align_sft_run: Path, align_reward_run: Path, align_chat, tmp_path_factory) -> Path:
    return train_online(online_config(align_sft_run, align_reward_run, align_chat[0], tmp_path_factory.mktemp("ppo")))


def test_ppo_runs_steps_with_kl_to_the_sft_reference_and_a_changing_reward(ppo_run: Path,
                                                                         align_sft_run: Path) -> None:
    assert read_manifest(align_sft_run)["results"]["mode"] == "qlora"  # the default path: a QLoRA SFT adapter
    metrics = [m for m in read_metrics(ppo_run) if "objective/kl" in m]
    assert len(metrics) == 4  # 32 episodes / 8 prompts per step
    kl = [m["objective/kl"] for m in metrics]
    assert abs(kl[0]) < 1e-3, kl  # first rollout: the policy IS the reference (frozen copy of the SFT adapter)
    assert max(abs(k) for k in kl[1:]) > 1e-3, kl  # after updates the policy has moved away from it
    scores = [m["objective/scores"] for m in metrics]
    assert len({round(s, 5) for s in scores}) > 1, scores
    for key in ("objective/rlhf_reward", "objective/non_score_reward", "loss/policy_avg", "loss/value_avg"):
        assert all(key in m for m in metrics), key
    results = read_manifest(ppo_run)["results"]
    assert results["reference"].startswith("frozen copy of the SFT adapter")
    assert results["value_model"].startswith("copy of the reward model")
    assert adapter_changed(ppo_run, align_sft_run) >= 1


def test_ppo_run_is_complete_servable_and_evaluated(ppo_run: Path, align_sft_run: Path) -> None:
    manifest = read_manifest(ppo_run)
    assert is_complete(ppo_run) and ppo_run.name == "ppo"
    assert set(manifest["outputs"]) == {"adapter", "base_model", "lora_rank"}
    assert manifest["outputs"]["base_model"] == read_manifest(align_sft_run)["outputs"]["base_model"]
    assert not (ppo_run / "adapter" / "ref").exists()
    for name in ("training.png", "losses.png", "adapter/adapter_config.json", "adapter/README.md",
                 "adapter/chat_template.jinja", "winrate_samples.jsonl"):
        assert (ppo_run / name).exists(), name
    win = manifest["results"]["winrate_vs_sft"]
    assert win["prompts"] == 4 and 0 <= win["win_rate"] <= 1


def test_ppo_run_again_trains_the_same_adapter(ppo_run: Path, align_sft_run: Path, align_reward_run: Path,
                                                align_chat, tmp_path: Path) -> None:
    """The same config trains the same policy: TRL's PPO draws its mini-batches with numpy's global generator,
    which nothing else seeds (its own seeding is torch's only), so unseeded runs updated on other mini-batches."""
    from safetensors.torch import load_file

    again = train_online(online_config(align_sft_run, align_reward_run, align_chat[0], tmp_path, "eval.num_prompts=0"))
    first = load_file(str(ppo_run / "adapter" / "adapter_model.safetensors"))
    second = load_file(str(again / "adapter" / "adapter_model.safetensors"))
    assert first.keys() == second.keys()
    different = [k for k in first if not torch.equal(first[k], second[k])]
    assert not different, f"{len(different)} of {len(first)} tensors differ, e.g. {different[:3]}"
    kl = [[m["objective/kl"] for m in read_metrics(run) if "objective/kl" in m] for run in (ppo_run, again)]
    assert kl[0] == kl[1]


@pytest.mark.parametrize("algorithm", ["grpo", "rloo"])
def test_grpo_and_rloo_run_steps_with_kl_and_reward(algorithm: str, align_sft_run: Path, align_reward_run: Path,
                                                    align_chat, tmp_path: Path) -> None:
    run = train_online(online_config(align_sft_run, align_reward_run, align_chat[0], tmp_path,
                                     f"algorithm={algorithm}", "eval.num_prompts=0"))
    assert run.name == algorithm and is_complete(run)
    metrics = [m for m in read_metrics(run) if "kl" in m and "reward" in m]
    assert len(metrics) == 4
    kl = [m["kl"] for m in metrics]
    assert abs(kl[0]) < 1e-3 and max(abs(k) for k in kl[1:]) > 1e-5, kl
    rewards = [m["reward"] for m in metrics]
    assert len({round(r, 5) for r in rewards}) > 1, rewards
    assert all("rewards/reward_model/mean" in m for m in metrics)
    results = read_manifest(run)["results"]
    assert results["reference"].startswith("frozen copy of the SFT adapter") and results["global_step"] == 4
    assert adapter_changed(run, align_sft_run) >= 1


def test_grpo_resumes_from_its_checkpoint_with_the_trained_adapter(align_sft_run: Path, align_reward_run: Path,
                                                                   align_chat, tmp_path: Path) -> None:
    """A finished 6-step GRPO run (checkpoint at step 4) is run again with the same config, as after a kill past step
    4: it resumes at checkpoint-4, keeps the metrics lines of steps 1-4 (marked, so that a restart logging the same
    seeded values again cannot pass), logs steps 5-6 only, with the first run's values, and ends with its adapter.
    A resume that kept the SFT adapter (the checkpoint's trained one lies beside TRL's ``ref/`` copy) fails. Then
    ``resume: false`` starts over: each step logged once, none of the earlier lines kept."""
    from test_sft import KILLED, assert_resumed, assert_same_adapter, assert_same_curve, mark_metrics

    config = online_config(align_sft_run, align_reward_run, align_chat[0], tmp_path, "algorithm=grpo",
                           "eval.num_prompts=0", "grpo.max_steps=6", "grpo.save_steps=4", "grpo.logging_steps=1")
    run = train_online(config)
    first = read_metrics(run)
    shutil.copytree(run / "adapter", tmp_path / "uninterrupted-adapter")
    for later in (run / "checkpoints").glob("checkpoint-*"):  # checkpoint-4 only: as if killed after step 4
        if later.name != "checkpoint-4":
            shutil.rmtree(later)
    assert (run / "checkpoints" / "checkpoint-4" / "ref").is_dir()  # the frozen reference copy, in a sub-folder
    killed = mark_metrics(run)

    assert train_online(config) == run and is_complete(run)
    assert read_manifest(run)["results"]["global_step"] == 6
    rerun = assert_resumed(run, killed, 4, 1, 6)
    assert_same_curve(rerun, first, ("loss", "reward", "kl"))
    diff = assert_same_adapter(run / "adapter", tmp_path / "uninterrupted-adapter")
    print(f"\nGRPO: resumed at step 5 from checkpoint-4; max |resumed - uninterrupted| adapter weight {diff:.1e}")
    # resume: false starts over, and so does a PPO run always: the old metrics lines go, each step is logged once
    config.resume = False
    train_online(config)
    assert [m["step"] for m in read_metrics(run) if "loss" in m] == [1, 2, 3, 4, 5, 6]
    assert not [m for m in read_metrics(run) if m.get("attempt") == KILLED]


def test_reward_function_scores_in_the_training_format(align_reward_run: Path) -> None:
    """GRPO/RLOO's reward function gives the same numbers as scoring the pair directly."""
    from lexalign.modeling import load_reward_model, reward_scores
    from lexalign.rlhf.online import RewardModelFunction

    model, tokenizer = load_reward_model(align_reward_run / "model", "cpu")
    prompt = [{"role": "user", "content": "Find the Governing Law clause."}]
    completions = [[{"role": "assistant", "content": "Not present."}], [{"role": "assistant", "content": '"x"'}]]
    scores = RewardModelFunction(model, tokenizer, 192)([prompt, prompt], completions)
    assert scores == pytest.approx(reward_scores(model, tokenizer, [prompt, prompt], ["Not present.", '"x"'], 192))


# --------------------------------------------------------------------------- bad inputs, before any model loads


@pytest.fixture()
def no_model_loading(monkeypatch: pytest.MonkeyPatch) -> None:
    import lexalign.modeling

    def refuse(*args, **kwargs):
        raise AssertionError("a model was loaded before the inputs were checked")

    monkeypatch.setattr(lexalign.modeling, "load_model", refuse)
    monkeypatch.setattr(lexalign.modeling, "load_reward_model", refuse)


def fake_reward_run(folder: Path, model_dir: Path) -> Path:
    """A completed 'reward' run whose model folder is ``model_dir`` (only its tokenizer is read by the checks)."""
    shutil.copytree(model_dir, folder / "model")
    (folder / "manifest.json").write_text(json.dumps({"stage": "reward", "outputs": {"model": "model"}}))
    (folder / "COMPLETE").write_text("done\n")
    return folder


def test_tokenizer_mismatch_is_refused_before_loading(align_sft_run: Path, align_reward_run: Path, align_chat,
                                                      tiny_corpus_text: str, tmp_path: Path,
                                                      no_model_loading) -> None:
    from lexalign.basemodel import make_tiny_model
    from lexalign.errors import LexalignError

    other = make_tiny_model(tmp_path / "other-model", tiny_corpus_text[:60_000], vocab_size=400)
    run = fake_reward_run(tmp_path / "other-reward", other)
    with pytest.raises(LexalignError, match="differs from the policy's .* in its vocabulary"):
        train_online(online_config(align_sft_run, run, align_chat[0], tmp_path))
    edited = tmp_path / "edited-reward"
    shutil.copytree(align_reward_run, edited)
    template = edited / "model" / "chat_template.jinja"
    template.write_text(template.read_text().replace("<|im_start|>", "<|im_start|> "))
    with pytest.raises(LexalignError, match="in its chat template"):
        train_online(online_config(align_sft_run, edited, align_chat[0], tmp_path))
    assert not (tmp_path / "tiny" / "ppo").exists()


def test_missing_or_wrong_reward_run_is_clear(align_sft_run: Path, align_chat, tmp_path: Path,
                                              no_model_loading) -> None:
    from lexalign.errors import LexalignError
    from lexalign.runs import RunDirError

    with pytest.raises(RunDirError, match="reward_run: .* does not exist"):
        train_online(online_config(align_sft_run, tmp_path / "none", align_chat[0], tmp_path))
    with pytest.raises(LexalignError, match="a 'sft' run, not a reward run"):
        train_online(online_config(align_sft_run, align_sft_run, align_chat[0], tmp_path))


def test_malformed_prompt_line_names_file_and_line(align_sft_run: Path, align_reward_run: Path, align_chat,
                                                   tmp_path: Path, no_model_loading) -> None:
    from lexalign.data.jsonl import DataError

    bad = tmp_path / "prompts.jsonl"
    bad.write_text(align_chat[0].read_text().splitlines()[0] + "\n" +
                   json.dumps({"messages": [{"role": "user", "content": "no answer"}]}) + "\n")
    with pytest.raises(DataError, match=f"{bad}:2: .*the last message must be 'assistant'"):
        train_online(online_config(align_sft_run, align_reward_run, bad, tmp_path))


@pytest.mark.parametrize("overrides, key", [
    (["ppo.stop_token=null"], "ppo.stop_token"),
    (["ppo.max_steps=10"], "ppo.max_steps"),
    (["ppo.num_mini_batches=3"], "ppo.num_mini_batches"),
    (["ppo.ref_adapter_name=other"], "ppo.ref_adapter_name"),
    (["algorithm=grpo", "grpo.use_vllm=true"], "grpo.use_vllm"),
    (["algorithm=grpo", "grpo.num_generations=1"], "grpo.num_generations"),
    (["algorithm=rloo", "rloo.beta=-1"], "rloo.beta"),
    (["algorithm=a2c"], "algorithm"),
    (["reward_run="], "reward_run"),
    (["reward=gold"], "reward"),                       # PPO needs a reward model
    (["data.prompts=[/no/prompts.jsonl]"], "data.prompts[0]"),
    (["data.max_not_present_share=0.3"], "data.max_not_present_share"),   # needs reward: gold (labels)
    (["algorithm=grpo", "reward=gold", "data.max_not_present_share=1"], "data.max_not_present_share"),
    (["quote_credit=0.5"], "quote_credit"),                               # needs reward: gold (labels)
    (["algorithm=grpo", "reward=gold", "quote_credit=1.5"], "quote_credit"),
    (["algorithm=grpo", "reward=gold", "quote_credit=true"], "quote_credit"),        # a boolean is no share
    (["algorithm=grpo", "reward=gold", "data.max_not_present_share=true"], "data.max_not_present_share"),
    (["data.tasks=[unfair]"], "data.tasks"),                              # needs reward: gold (labels)
    (["algorithm=grpo", "reward=gold", "data.tasks=[unfair,summarize]"], "data.tasks[1]"),  # no such task
])
def test_bad_online_configs_fail_before_any_model_loads(overrides: list[str], key: str) -> None:
    with pytest.raises(ConfigError) as info:
        load_config(OnlineStageConfig, PPO_YAML, overrides)
    assert key in [p.key for p in info.value.problems]


def test_inactive_algorithm_sections_are_ignored() -> None:
    config = load_config(OnlineStageConfig, PPO_YAML, ["algorithm=rloo", "ppo.stop_token=null"])
    assert config.run_dir == Path("runs/tiny/rloo") and config.training is config.rloo


def labelled_chat(path: Path, n: int, task: str = "extract") -> Path:
    """Records with CUAD-style labels (half the clauses absent) and one record without a label: extraction labels,
    or normalisation labels (the answer's text; token F1 gives partial credit, so even the tiny model's answers
    differ in reward)."""
    from test_reward_support import chat_records

    rows = []
    for i, record in enumerate(chat_records(n, seed=3 if task == "extract" else 5)):   # prompts of their own
        answer = record["messages"][-1]["content"]
        present = answer != "Not present."
        label = ({"present": present, "answers": [answer.strip('"')] if present else []} if task == "extract"
                 else {"normalized": answer.strip('"')})
        rows.append({**record, "meta": {"task": task, "source": "cuad", "category": "Governing Law",
                                        "doc_id": f"doc-{i}", **label}})
    rows.append(chat_records(1, seed=4)[0])                               # no label: left out
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def test_gold_reward_scores_answers_with_the_task_metric() -> None:
    from lexalign.rlhf.online import GoldRewardFunction
    from test_reward_support import clause_of, prompt_messages

    gold = json.dumps({"answers": [clause_of("Ohio")], "present": True, "category": "Governing Law"})
    absent = json.dumps({"answers": [], "present": False, "category": "Governing Law"})
    prompt = prompt_messages(f"Fees are due. {clause_of('Ohio')}")
    answers = [f'"{clause_of("Ohio")}"', "Not present.", '"Fees are due."', '"I think Ohio maybe"', "Not present.",
               "I think Ohio maybe", '"Fees are due."']
    labels = [gold] * 4 + [absent, gold, absent]
    completions = [[{"role": "assistant", "content": a}] for a in answers]
    rewards = GoldRewardFunction()([prompt] * 7, completions, task=["extract"] * 7, gold=labels)
    assert rewards[0] == pytest.approx(1.0) and rewards[1] == 0.0 and 0.0 <= rewards[2] < 0.5
    assert rewards[4] == 1.0 and rewards[6] == 0.0        # "Not present." / a quote when the clause is absent
    assert 0.0 < rewards[3] < 0.25                        # a misquote keeps half of its small overlap
    assert rewards[5] == -1.0                             # unquoted, not "Not present.": no answer format

    # quote_credit: a quote of a present clause earns that share for quoting at all, the rest for its span F1
    credited = GoldRewardFunction(0.5)([prompt] * 7, completions, task=["extract"] * 7, gold=labels)
    assert credited[0] == pytest.approx(1.0) and credited[2] == pytest.approx(0.5 + 0.5 * rewards[2])
    assert credited[3] == pytest.approx(0.5 + 0.5 * rewards[3])                # a misquote keeps its credit too
    assert [credited[i] for i in (1, 4, 5, 6)] == [rewards[i] for i in (1, 4, 5, 6)]   # nothing else changes


def test_grpo_learns_from_the_labels_without_a_reward_model(align_sft_run: Path, tmp_path: Path) -> None:
    prompts = labelled_chat(tmp_path / "labelled.jsonl", 24, task="normalize")
    run = train_online(online_config(align_sft_run, Path(""), prompts, tmp_path, "algorithm=grpo", "reward=gold",
                                     "reward_run=", "eval.num_prompts=0"))
    results = read_manifest(run)["results"]
    left_out = results["prompts_left_out"]
    assert results["reward"].startswith("the prompts' gold labels") and left_out["no_label"] == 1
    assert results["prompts"] + left_out["duplicate"] + left_out["too_long"] == 24 and results["prompts"] >= 16
    metrics = [m for m in read_metrics(run) if "rewards/gold_label/mean" in m]
    assert len(metrics) == 4 and all(0.0 <= m["rewards/gold_label/mean"] <= 1.0 for m in metrics)
    assert any(m["rewards/gold_label/std"] > 0 for m in metrics), metrics   # the labels tell answers apart
    assert adapter_changed(run, align_sft_run) >= 1
    assert "reward_model" not in read_manifest(run)["inputs"]


def test_not_present_cap_thins_only_absent_extraction_prompts(tmp_path: Path) -> None:
    from lexalign.rlhf.online import labelled_prompts

    extract = labelled_chat(tmp_path / "extract.jsonl", 40)
    normalize = labelled_chat(tmp_path / "normalize.jsonl", 10, task="normalize")
    files = [str(extract), str(normalize)]
    every, _ = labelled_prompts(files, 10**9, seed=0)
    capped, left_out = labelled_prompts(files, 10**9, seed=0, max_not_present_share=0.25)

    def absent(rows: list[dict]) -> int:
        return sum(r["task"] == "extract" and not json.loads(r["gold"])["present"] for r in rows)

    present = sum(r["task"] == "extract" for r in every) - absent(every)
    assert absent(every) > present / 3                                    # the data's mix is above the cap
    assert absent(capped) == int(0.25 * present / 0.75)
    assert left_out["not_present_cap"] == absent(every) - absent(capped)
    normalize_rows = [r for r in every if r["task"] == "normalize"]
    assert normalize_rows and [r for r in capped if r["task"] == "normalize"] == normalize_rows
    assert len(capped) == len(every) - left_out["not_present_cap"]

    # A small draw from a large pool holds the cap itself, and is still full: ten distinct copies of every record
    # (the copy number in the excerpt), so the pool's quota is far above what the draw may hold.
    records = [json.loads(line) for line in extract.read_text(encoding="utf-8").splitlines()]
    large = tmp_path / "large.jsonl"
    with large.open("w", encoding="utf-8") as out:
        for copy in range(10):
            for record in records:
                messages = [dict(m) for m in record["messages"]]
                messages[1]["content"] += f" (copy {copy})"
                out.write(json.dumps({**record, "messages": messages}) + "\n")
    drawn, _ = labelled_prompts([str(large)], 12, seed=0)
    small, small_left_out = labelled_prompts([str(large)], 12, seed=0, max_not_present_share=0.25)
    assert absent(drawn) > 0.25 * len(drawn)                                # the uncapped draw is above the cap
    assert len(small) == 12 and 0 < absent(small) <= 0.25 * 12 and small_left_out["not_present_cap"] > 0


def test_tasks_draw_only_the_named_tasks_prompts(tmp_path: Path) -> None:
    from lexalign.rlhf.online import labelled_prompts

    extract = str(labelled_chat(tmp_path / "extract.jsonl", 40))
    normalize = str(labelled_chat(tmp_path / "normalize.jsonl", 10, task="normalize"))
    # The same rows, in the same seeded order, as a file of that task's records alone
    alone, _ = labelled_prompts([normalize], 10**9, seed=0)
    chosen, left_out = labelled_prompts([extract, normalize], 10**9, seed=0, tasks=["normalize"])
    assert chosen == alone and len(chosen) > 5 and left_out["other_task"] == 40
    drawn, _ = labelled_prompts([extract, normalize], 4, seed=0, tasks=["normalize"])
    assert len(drawn) == 4 and {r["task"] for r in drawn} == {"normalize"}


def test_unreadable_label_and_tasks_without_prompts_fail_before_loading(align_sft_run: Path, tmp_path: Path,
                                                                        no_model_loading) -> None:
    from lexalign.data.jsonl import DataError
    from lexalign.errors import LexalignError

    prompts = labelled_chat(tmp_path / "labelled.jsonl", 4)
    lines = prompts.read_text().splitlines()
    bad = json.loads(lines[2])
    bad["meta"]["present"] = "maybe"
    lines[2] = json.dumps(bad)
    prompts.write_text("\n".join(lines) + "\n")
    with pytest.raises(DataError, match=r"labelled\.jsonl:3: meta\.present"):
        train_online(online_config(align_sft_run, Path(""), prompts, tmp_path, "algorithm=grpo", "reward=gold",
                                   "reward_run=", "eval.num_prompts=0"))
    # Tasks without a prompt among the extraction records: named before a model loads
    prompts.write_text("\n".join(lines[:2] + lines[3:]) + "\n")
    with pytest.raises(LexalignError, match=r"no labelled prompt of data\.tasks = \['unfair'\]"):
        train_online(online_config(align_sft_run, Path(""), prompts, tmp_path, "algorithm=grpo", "reward=gold",
                                   "reward_run=", "eval.num_prompts=0", "data.tasks=[unfair]"))
