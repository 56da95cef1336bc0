"""Helper of the tests of bench/ scripts (no tests of its own).

    load_bench_script(stem)   import bench/<stem>.py as a module (bench/ is scripts, not a package)
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

BENCH_DIR = Path(__file__).resolve().parent.parent / "bench"


def load_bench_script(stem: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(stem, BENCH_DIR / f"{stem}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[stem] = module  # dataclasses look their module up while the file executes
    spec.loader.exec_module(module)
    return module
