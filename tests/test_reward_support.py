"""Shared fixtures of the alignment tests (a pytest plugin module, no tests of its own).

test_reward.py, test_dpo.py and test_ppo.py load it with ``pytest_plugins = ["test_reward_support"]`` so
that the SFT run and the reward run are built once per session on the tiny model.

Fixtures:
    align_pairs      (train, valid, single) JSONL files of preference pairs that are learnable by construction:
                     the prompt holds a Governing Law clause; the chosen answer quotes it, the rejected one
                     does not ("Not present." or a payment clause). valid prompts differ from train prompts;
                     ``single`` mixes both for the split-by-prompt path. Every pair has meta.prompt_id.
    align_sft_run    Path: a completed SFT run (LoRA r=8 on the tiny model, 40 steps, full-precision base)
    align_reward_run Path: a completed reward run from align_sft_run on align_pairs (40 steps)
"""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
SYSTEM = "You are a contract-review assistant. Quote clause text exactly; say 'Not present.' when absent."
STATES = ["New York", "Delaware", "California", "Texas", "Ohio", "Nevada", "Florida", "Illinois", "Georgia"]


def clause_of(state: str) -> str:
    return f"This Agreement shall be governed by the laws of the State of {state}."


def prompt_messages(excerpt: str) -> list[dict]:
    return [{"role": "system", "content": SYSTEM},
            {"role": "user", "content": f"Find the Governing Law clause in this excerpt.\n\nExcerpt: {excerpt}"}]


def preference_pairs(n_prompts: int, seed: int, prefix: str) -> list[dict]:
    """Two pairs per prompt: chosen quotes the clause; rejected says 'Not present.' or quotes another clause."""
    rng = random.Random(seed)
    pairs = []
    for i in range(n_prompts):
        state = rng.choice(STATES)
        days = rng.randint(10, 90)
        excerpt = f"Payment is due within {days} days of invoice. {clause_of(state)}"
        chosen = [{"role": "assistant", "content": f'"{clause_of(state)}"'}]
        for j, wrong in enumerate(["Not present.", f'"Payment is due within {days} days of invoice."']):
            pairs.append({"prompt": prompt_messages(excerpt), "chosen": chosen,
                          "rejected": [{"role": "assistant", "content": wrong}], "margin": 1.0 + j,
                          "meta": {"prompt_id": f"{prefix}-{i}"}})
    return pairs


def chat_records(n: int, seed: int) -> list[dict]:
    rng = random.Random(seed)
    records = []
    for _ in range(n):
        state = rng.choice(STATES)
        present = rng.random() < 0.5
        excerpt = clause_of(state) if present else f"Payment is due within {rng.randint(10, 90)} days of invoice."
        records.append({"messages": prompt_messages(excerpt) + [
            {"role": "assistant", "content": f'"{clause_of(state)}"' if present else "Not present."}]})
    return records


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


@pytest.fixture(scope="session")
def align_pairs(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, Path]:
    folder = tmp_path_factory.mktemp("pairs")
    train = preference_pairs(80, seed=0, prefix="train")
    valid = preference_pairs(24, seed=1, prefix="valid")
    return (write_jsonl(folder / "train.jsonl", train), write_jsonl(folder / "valid.jsonl", valid),
            write_jsonl(folder / "single.jsonl", train + valid))


@pytest.fixture(scope="session")
def align_chat(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    folder = tmp_path_factory.mktemp("chat")
    return (write_jsonl(folder / "train.jsonl", chat_records(160, seed=0)),
            write_jsonl(folder / "valid.jsonl", chat_records(16, seed=1)))


@pytest.fixture(scope="session")
def align_sft_run(tiny_model_dir: Path, align_chat: tuple[Path, Path],
                  tmp_path_factory: pytest.TempPathFactory) -> Path:
    from lexalign.config import load_config
    from lexalign.sft.train import SFTStageConfig, train_sft

    out = tmp_path_factory.mktemp("align-runs")
    config = load_config(SFTStageConfig, REPO / "configs" / "sft.yaml", [
        f"model.path={tiny_model_dir}", f"data.train={align_chat[0]}", f"data.valid={align_chat[1]}",
        f"output_dir={out}", "model.quantization.bits=4", "model.threads=1", "model.lora.r=8",
        "model.lora.alpha=16", "training.max_steps=40", "training.learning_rate=5e-3", "training.warmup_steps=0",
        "training.eval_steps=40", "training.save_steps=40", "training.logging_steps=10",
        "training.per_device_train_batch_size=8", "training.max_length=256", "data.max_valid_records=0"])
    return train_sft(config)


def reward_overrides(sft_run: Path, pairs: tuple[Path, Path, Path], out: Path, *extra: str) -> list[str]:
    return [f"sft_run={sft_run}", f"output_dir={out}", f"data.train=[{pairs[0]}]", f"data.valid=[{pairs[1]}]",
            "model.threads=1", "model.lora.r=8", "model.lora.alpha=16", "training.max_steps=40",
            "training.learning_rate=2e-3", "training.warmup_steps=0", "training.eval_steps=20",
            "training.save_steps=20", "training.logging_steps=5", "training.per_device_train_batch_size=8",
            "training.max_length=192", *extra]


@pytest.fixture(scope="session")
def align_reward_run(align_sft_run: Path, align_pairs: tuple[Path, Path, Path],
                     tmp_path_factory: pytest.TempPathFactory) -> Path:
    from lexalign.config import load_config
    from lexalign.reward.train import RewardStageConfig, train_reward

    out = tmp_path_factory.mktemp("align-reward")
    config = load_config(RewardStageConfig, REPO / "configs" / "reward.yaml",
                         reward_overrides(align_sft_run, align_pairs, out))
    return train_reward(config)
