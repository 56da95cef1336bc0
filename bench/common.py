"""What several benchmarks share: the default base model's folder and the machine's load."""

from __future__ import annotations

import os
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "bench" / "out"


def smollm2_model(folder: Path | None = None) -> Path:
    """SmolLM2-135M-Instruct as the pipeline imports it (``runs/smollm2/base/model``), imported if absent."""
    if folder is not None and (folder / "config.json").is_file():
        return folder
    for candidate in (ROOT / "runs" / "smollm2" / "base" / "model", OUT / "runs" / "smollm2" / "base" / "model"):
        if (candidate / "config.json").is_file():
            return candidate
    from lexalign.base_import import run_import

    run_import(ROOT / "configs" / "smollm2" / "import.yaml", [f"output_dir={OUT / 'runs'}"])
    return OUT / "runs" / "smollm2" / "base" / "model"


def load_average() -> float | None:
    try:
        return os.getloadavg()[0]
    except OSError:
        return None
