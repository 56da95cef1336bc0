"""What every TRL-trained stage shares: building TRL's config, logging into the run directory,
checkpoint resume, and the end-of-training curves."""

from __future__ import annotations

import json
import logging
import math
from pathlib import Path
from typing import Any

from lexalign.config import ConfigError, Problem
from lexalign.plots import plot_curves
from lexalign.runs import RunDir, read_metrics

logger = logging.getLogger(__name__)

CHECKPOINTS = "checkpoints"


def make_trl_args(trl_class: Any, section: dict[str, Any], run: RunDir, **forced: Any) -> Any:
    """Instantiate a TRL config (SFTConfig, DPOConfig, ...) from the config's ``training`` section.

    Run-directory wiring (output_dir, report_to) is forced; TRL's own validation errors come back as a
    ConfigError naming the ``training`` section instead of a traceback from inside TRL.
    """
    import torch

    kwargs = {"report_to": "none", "save_total_limit": 2, **section, **forced,
              "output_dir": str(run.path / CHECKPOINTS)}
    if not torch.cuda.is_available():
        kwargs["use_cpu"] = True
        kwargs.setdefault("bf16", False)
        kwargs.setdefault("dataloader_pin_memory", False)
    try:
        return trl_class(**kwargs)
    except (ValueError, TypeError) as err:
        raise ConfigError([Problem("training", f"{trl_class.__name__} rejected these arguments: {err}")]) from None


def mixed_precision(section: dict[str, Any], dtype: Any) -> dict[str, bool]:
    """bf16/fp16 trainer flags that follow the chosen compute dtype, unless the config sets them."""
    import torch

    if "bf16" in section or "fp16" in section:
        return {}
    return {"bf16": dtype == torch.bfloat16, "fp16": dtype == torch.float16}


def find_resume_checkpoint(run_dir: Path, resume: bool) -> str | None:
    """The newest checkpoint in the run directory when resuming, else None."""
    from transformers.trainer_utils import get_last_checkpoint

    folder = run_dir / CHECKPOINTS
    if not resume or not folder.is_dir():
        return None
    checkpoint = get_last_checkpoint(str(folder))
    if checkpoint:
        logger.info("resuming from %s", checkpoint)
    return checkpoint


def trim_metrics_after(run: RunDir, step: int) -> None:
    """Drop metric records logged after ``step`` (they will be logged again by the resumed run)."""
    file = run.path / "metrics.jsonl"
    if not file.is_file():
        return
    kept = [r for r in read_metrics(run.path) if r.get("step", 0) <= step]
    file.write_text("".join(json.dumps(r) + "\n" for r in kept), encoding="utf-8")


def checkpoint_step(checkpoint: str | None) -> int:
    return int(Path(checkpoint).name.split("-")[-1]) if checkpoint else 0


def metrics_callback(run: RunDir) -> Any:
    """A transformers callback that appends every log (train and eval) to the run's metrics.jsonl."""
    from transformers import TrainerCallback

    class RunDirMetrics(TrainerCallback):
        def on_log(self, args, state, control, logs=None, **kwargs):  # noqa: ANN001 - transformers' signature
            if not logs or not state.is_world_process_zero:
                return
            record = {"step": state.global_step, **{k: v for k, v in logs.items() if isinstance(v, (int, float))}}
            if "eval_loss" in record:
                record["eval_perplexity"] = math.exp(min(record["eval_loss"], 50.0))
            run.log_metrics(record)

    return RunDirMetrics()


def plot_training(run: RunDir, title: str, keys: tuple[str, ...] = ("loss", "eval_loss")) -> Path | None:
    return plot_curves(read_metrics(run.path), list(keys), run.path / "training.png", title)


def last_value(run: RunDir, key: str) -> float | None:
    values = [r[key] for r in read_metrics(run.path) if key in r]
    return values[-1] if values else None


def first_value(run: RunDir, key: str) -> float | None:
    values = [r[key] for r in read_metrics(run.path) if key in r]
    return values[0] if values else None
