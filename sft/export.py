"""Export a trained stage (SFT, DPO, PPO) for serving.

    lexalign export RUN_DIR [--out DIR] [--dtype float32|bfloat16|float16]

The adapter is merged into the FULL-PRECISION base model (never into a 4-bit model: merging into
quantized weights rounds the update away), giving a plain Hugging Face folder that vLLM and
``from_pretrained`` load. Serving base + adapter instead needs no export: ``lexalign serve`` reads the
adapter's rank from the run manifest to set vLLM's ``--max-lora-rank``.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

from lexalign.errors import LexalignError
from lexalign.runs import read_manifest, require_complete, write_json_atomic

logger = logging.getLogger(__name__)


def adapter_info(run_dir: Path) -> tuple[Path, Path, int]:
    """(adapter folder, base model folder, LoRA rank) of a completed run that trained an adapter."""
    manifest = read_manifest(run_dir)
    adapter = run_dir / manifest.get("outputs", {}).get("adapter", "adapter")
    if not (adapter / "adapter_config.json").is_file():
        raise LexalignError(f"{run_dir}: has no LoRA adapter to merge (no adapter/adapter_config.json); "
                            "a full fine-tuning run's model/ folder is already servable")
    adapter_config = json.loads((adapter / "adapter_config.json").read_text())
    base = Path(manifest["outputs"].get("base_model") or adapter_config["base_model_name_or_path"])
    return adapter, base, int(adapter_config["r"])


def export_merged(run_dir: str | Path, out: str | Path | None = None, dtype: str = "float32") -> Path:
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    from lexalign.modeling import check_model_dir, load_tokenizer

    run_dir = require_complete(run_dir, "export")
    adapter, base, rank = adapter_info(run_dir)
    check_model_dir(base, "base model of the adapter")
    out = Path(out) if out else run_dir / "merged"
    logger.info("merging %s (r=%d) into the full-precision base %s", adapter, rank, base)
    model = AutoModelForCausalLM.from_pretrained(str(base), dtype=getattr(torch, dtype))
    model = PeftModel.from_pretrained(model, str(adapter)).merge_and_unload()
    model.save_pretrained(str(out))
    load_tokenizer(adapter).save_pretrained(str(out))
    write_json_atomic(out / "lexalign_export.json", {
        "source_run": str(run_dir), "adapter": str(adapter), "base_model": str(base), "lora_rank": rank,
        "dtype": dtype,
    })
    logger.info("merged model written to %s", out)
    return out
