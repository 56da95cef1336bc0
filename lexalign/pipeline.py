"""The whole chain in one command.

    lexalign pipeline --config configs/pipeline/tiny.yaml [--from STEP] [key=value ...]

A pipeline config lists steps; each step is one ``lexalign`` subcommand run as its own process (so a crash
or a kill of one stage cannot leave another half-done in memory), with its log in ``<run>/logs/<step>.log``.

A step is skipped when its output run directory is complete and its fingerprint is unchanged: the hash of
the command line, of the config file's text, and of every input (files or upstream run directories; an
upstream stage that ran again changes its directory's hash, so everything downstream runs again).
``--from STEP`` re-runs that step and all after it. A failing step stops the chain, naming the step, its
exit code and the end of its log. State lives in ``<run>/pipeline.json``.

A short form of the same chain (what the tests run, and a quick check of a changed config):
``--steps data,base,sft`` runs only those steps, in the config's order, and ``--set sft:training.max_steps=2``
appends an override to one step's command line (it wins over the step's own overrides; it is part of the
fingerprint, so a shortened run is never taken for the full one).
"""

from __future__ import annotations

import hashlib
import json
import logging
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lexalign.config import Problem, load_config
from lexalign.errors import LexalignError
from lexalign.runs import hash_path, is_complete, write_json_atomic

logger = logging.getLogger(__name__)


@dataclass
class StepSection:
    id: str = ""
    # The lexalign subcommand and its arguments, e.g. [sft] or [prefs, import, shipped:acord_rankings_train.jsonl].
    command: list[str] = field(default_factory=list)
    config: str = ""
    overrides: list[str] = field(default_factory=list)
    # Files or run directories this step reads; their hashes are part of the step's fingerprint.
    inputs: list[str] = field(default_factory=list)
    # The run directory (or file) the step produces; a directory counts as done only with its COMPLETE marker.
    output: str = ""
    # More run directories or files of the same step (one eval folder per model of `lexalign eval model=[...]`):
    # the step is done when every one of them is.
    outputs: list[str] = field(default_factory=list)

    def all_outputs(self) -> list[str]:
        return [o for o in [self.output, *self.outputs] if o]

    def problems(self) -> list[Problem]:
        found = []
        if not self.id:
            found.append(Problem("id", "every step needs an id (used by --from and in the report)", self.id))
        if not self.command:
            found.append(Problem("command", "the lexalign subcommand to run, e.g. [sft]", self.command))
        if not self.all_outputs():
            found.append(Problem("output", "the run directory or file the step writes (outputs: several)", self.output))
        return found


@dataclass
class PipelineConfig:
    name: str = "tiny"
    output_dir: str = "runs"
    steps: list[StepSection] = field(default_factory=list)

    @property
    def run_root(self) -> Path:
        return Path(self.output_dir) / self.name

    def problems(self) -> list[Problem]:
        ids = [s.id for s in self.steps]
        duplicates = sorted({i for i in ids if ids.count(i) > 1})
        found = [Problem("steps", f"step ids must be unique; repeated: {', '.join(duplicates)}", duplicates)] if duplicates else []
        if not self.steps:
            found.append(Problem("steps", "list the steps to run", self.steps))
        for index, step in enumerate(self.steps):
            found += [Problem(f"steps[{index}].{p.key}", p.message, p.value) for p in step.problems()]
        return found


class PipelineError(LexalignError):
    """A step failed; the message names it, its exit code and the end of its log."""


def expand(text: str, config: PipelineConfig) -> str:
    """``{run}`` -> <output_dir>/<name>, ``{name}`` and ``{output_dir}`` as given."""
    return text.format(run=str(config.run_root), name=config.name, output_dir=config.output_dir)


def step_argv(step: StepSection, config: PipelineConfig) -> list[str]:
    argv = [expand(part, config) for part in step.command]
    if step.config:
        argv += ["--config", expand(step.config, config)]
    return argv + [expand(o, config) for o in step.overrides]


def fingerprint(step: StepSection, config: PipelineConfig) -> str:
    from lexalign.data.paths import resolve_data_path

    digest = hashlib.sha256(json.dumps(step_argv(step, config)).encode())
    if step.config:
        path = Path(expand(step.config, config))
        digest.update(path.read_bytes() if path.is_file() else b"missing")
    for item in step.inputs:
        path = resolve_data_path(expand(item, config))
        digest.update(f"{item}:{hash_path(path) if path.exists() else 'missing'}".encode())
    return digest.hexdigest()


def output_done(step: StepSection, config: PipelineConfig) -> bool:
    def done(output: str) -> bool:
        path = Path(expand(output, config))
        return is_complete(path) if path.is_dir() else path.is_file()

    return all(done(output) for output in step.all_outputs())


def outputs_text(step: StepSection, config: PipelineConfig) -> str:
    return ", ".join(expand(output, config) for output in step.all_outputs())


def read_state(path: Path) -> dict[str, Any]:
    return json.loads(path.read_text()) if path.is_file() else {"steps": {}}


def write_state(path: Path, state: dict[str, Any], ids: list[str]) -> None:
    """Steps in the config's order (a step added to the config later is not listed last); steps no longer
    in the config are dropped."""
    state["steps"] = {step_id: state["steps"][step_id] for step_id in ids if step_id in state["steps"]}
    write_json_atomic(path, state)


def tail(path: Path, lines: int = 25) -> str:
    text = path.read_text(errors="replace").splitlines() if path.is_file() else []
    return "\n".join(text[-lines:])


def apply_step_overrides(config: PipelineConfig, step_overrides: list[str]) -> None:
    """``STEP:key=value`` -> appended to that step's overrides (after its own, so it wins)."""
    steps = {s.id: s for s in config.steps}
    for item in step_overrides:
        step_id, colon, override = item.partition(":")
        if not colon or "=" not in override:
            raise LexalignError(f"--set {item}: expected STEP:key=value, e.g. sft:training.max_steps=2")
        if step_id not in steps:
            raise LexalignError(f"--set {item}: no step '{step_id}'; the steps are: {', '.join(steps)}")
        steps[step_id].overrides.append(override)


def selected_steps(config: PipelineConfig, only: list[str] | None) -> list[StepSection]:
    """The steps to run, in the config's order: all of them, or those named by ``--steps``."""
    if not only:
        return list(config.steps)
    ids = [s.id for s in config.steps]
    unknown = [step_id for step_id in only if step_id not in ids]
    if unknown:
        raise LexalignError(f"--steps: no step {', '.join(unknown)}; the steps are: {', '.join(ids)}")
    return [s for s in config.steps if s.id in only]


def run_pipeline(config_path: str | Path, overrides: list[str], start_from: str | None = None,
                 only: list[str] | None = None, step_overrides: list[str] | None = None) -> Path:
    config = load_config(PipelineConfig, config_path, overrides)
    ids = [s.id for s in config.steps]
    if start_from and start_from not in ids:
        raise LexalignError(f"--from {start_from}: no such step; the steps are: {', '.join(ids)}")
    apply_step_overrides(config, step_overrides or [])
    steps = selected_steps(config, only)
    if start_from and start_from not in [s.id for s in steps]:
        raise LexalignError(f"--from {start_from}: not among --steps {', '.join(s.id for s in steps)}")
    root = config.run_root
    (root / "logs").mkdir(parents=True, exist_ok=True)
    state_path = root / "pipeline.json"
    state = read_state(state_path)
    state.update({"config": str(config_path), "name": config.name})
    forced = False
    started = time.time()
    for number, step in enumerate(steps, 1):
        forced = forced or step.id == start_from
        label = f"[{number}/{len(steps)}] {step.id}"
        current = fingerprint(step, config)
        previous = state["steps"].get(step.id, {})
        if not forced and output_done(step, config) and previous.get("fingerprint") == current:
            logger.info("%s: unchanged, skipped (%s)", label, outputs_text(step, config))
            state["steps"][step.id] = {**previous, "skipped": True}
            continue
        log_path = root / "logs" / f"{step.id}.log"
        argv = step_argv(step, config)
        logger.info("%s: lexalign %s", label, " ".join(argv))
        step_started = time.time()
        with log_path.open("w") as log:
            process = subprocess.run([sys.executable, "-m", "lexalign.cli", *argv], stdout=log,
                                     stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        elapsed = time.time() - step_started
        if process.returncode != 0 or not output_done(step, config):
            state["steps"][step.id] = {"status": "failed", "exit_code": process.returncode, "seconds": round(elapsed, 1),
                                       "log": str(log_path)}
            write_state(state_path, state, ids)
            reason = (f"exit code {process.returncode}" if process.returncode != 0
                      else f"it exited 0 but {outputs_text(step, config)} is not complete")
            raise PipelineError(f"step '{step.id}' failed after {elapsed:.0f} s ({reason}); log {log_path}:\n"
                                f"{tail(log_path)}")
        # The fingerprint is taken again after the run: a step may create or change its own inputs' folders.
        state["steps"][step.id] = {"status": "complete", "fingerprint": fingerprint(step, config),
                                   "seconds": round(elapsed, 1), "output": outputs_text(step, config),
                                   "command": "lexalign " + " ".join(argv), "log": str(log_path), "skipped": False,
                                   "finished_at": time.strftime("%Y-%m-%dT%H:%M:%S")}
        write_state(state_path, state, ids)
        logger.info("%s: done in %.0f s (pipeline %.0f s)", label, elapsed, time.time() - started)
    state["wall_time_s"] = round(time.time() - started, 1)
    write_state(state_path, state, ids)
    return root
