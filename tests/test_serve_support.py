"""Shared fixtures of the serving tests (a pytest plugin module, no tests of its own).

Test modules load it with ``pytest_plugins = ["test_serve_support"]`` so that its session fixtures are
global: ONE real vLLM server is started per test session and shared by test_serve.py, test_candidates.py,
test_chat.py and test_chat_browser.py. (It is named ``test_serve_*`` only to live among those files.)

Fixtures:
    sft_run        Path: a real, completed SFT run directory (LoRA r=8 on the tiny model, 40 steps on short
                   Governing Law records), made with lexalign.sft.train.train_sft: what users serve
    engine         lexalign.serve.engine.Engine: the vLLM engine environment, found the way `lexalign serve`
                   finds it ($LEXALIGN_ENGINE_PYTHON, .venv-serve, ...); the test fails with the fix if none
    served         ServerHandle: vLLM serving sft_run (base `tiny-base` + adapter `tiny-sft`) behind the
                   authenticating API front (serve/gateway.py), with a random key
    store_url      str: a fresh SQLite preference store per test (function scope)
"""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
SYSTEM = "You are a contract-review assistant for lawyers. Answer only from the text you are given."
STATES = ["New York", "Delaware", "California", "Texas", "Ohio", "Nevada", "Florida", "Illinois"]
MAX_MODEL_LEN = 512


def governing_law_records(n: int, seed: int) -> list[dict]:
    """Short SFT records (Governing Law present/absent) whose answers end the turn."""
    rng = random.Random(seed)
    records = []
    for _ in range(n):
        state = rng.choice(STATES)
        present = rng.random() < 0.5
        clause = f"This Agreement shall be governed by the laws of the State of {state}."
        excerpt = clause if present else f"Payment is due within {rng.randint(10, 90)} days of invoice."
        records.append({"messages": [
            {"role": "system", "content": SYSTEM},
            {"role": "user", "content": f"Find the Governing Law clause in this contract excerpt.\n\nExcerpt:\n{excerpt}"},
            {"role": "assistant", "content": clause if present else "Not present."},
        ]})
    return records


@pytest.fixture(scope="session")
def sft_run(tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    from lexalign.config import load_config
    from lexalign.sft.train import SFTStageConfig, train_sft

    folder = tmp_path_factory.mktemp("serve-sft")
    train, valid = folder / "train.jsonl", folder / "valid.jsonl"
    train.write_text("".join(json.dumps(r) + "\n" for r in governing_law_records(160, seed=0)))
    valid.write_text("".join(json.dumps(r) + "\n" for r in governing_law_records(16, seed=1)))
    config = load_config(SFTStageConfig, REPO / "configs" / "sft.yaml", [
        f"model.path={tiny_model_dir}", f"data.train={train}", f"data.valid={valid}", f"output_dir={folder / 'runs'}",
        "name=tiny", "model.quantization.bits=4", "model.threads=1", "model.lora.r=8", "model.lora.alpha=16",
        "training.max_steps=40", "training.learning_rate=5e-3", "training.warmup_steps=0", "training.eval_steps=40",
        "training.save_steps=40", "training.logging_steps=10", "training.per_device_train_batch_size=8",
        "training.max_length=256", "data.max_valid_records=0"])
    return train_sft(config)


@pytest.fixture(scope="session")
def engine():
    from lexalign.serve.engine import find_engine
    from lexalign.serve.launch import ServeError

    try:
        return find_engine()
    except ServeError as err:
        pytest.fail(f"{err}\n(the serving tests need the vLLM engine environment: `make serve-setup`, or export "
                    "LEXALIGN_ENGINE_PYTHON=/path/to/python-with-vllm)")


@pytest.fixture(scope="session")
def served(sft_run: Path, engine, tmp_path_factory: pytest.TempPathFactory):
    """The real vLLM server for the whole session (about 30-60 s to start on 2 CPU cores)."""
    from lexalign.config import load_config
    from lexalign.serve.launch import ServeConfig, start_server

    work = tmp_path_factory.mktemp("serve-work")
    config = load_config(ServeConfig, REPO / "configs" / "serve.yaml", [
        f"run={sft_run}", "port=0", f"work_dir={work}", f"max_model_len={MAX_MODEL_LEN}", "max_num_seqs=16",
        "cpu_kvcache_gib=1", "shutdown_timeout_s=10"])
    with start_server(config, ephemeral_key=True, engine=engine) as handle:
        yield handle


@pytest.fixture()
def store_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'prefs.db'}"
