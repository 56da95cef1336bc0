"""Faults: an unwritable run directory and a full disk give a clear CLI error (exit 2, the path named, no
traceback); once space is back the same command finishes the run (here it starts over: the disk fills during the
first checkpoint, so no whole checkpoint is left to resume from); a half-written checkpoint is never resumed from;
a stage killed before it completed is never taken as complete (no COMPLETE marker; every consumer refuses it);
DPO killed with SIGKILL resumes at its checkpoint (earlier metrics kept) and ends with the weights of an
uninterrupted run.

The ranking store's kill -9 tests live in test_store.py (SQLite), test_postgres.py (client and server killed)
and test_annotate_browser.py (the app server killed); SFT's kill -9 resume is test_sft.py's. See
docs/reliability.md for the figures.

Full disk and read-only folders are real when the tests run as root with mount rights (a 300 KiB tmpfs, a
read-only tmpfs); elsewhere a file-size limit (RLIMIT_FSIZE: writes fail with EFBIG) and a read-only folder
(chmod, as a non-root user) or a path below a regular file stand in for them.
"""

from __future__ import annotations

import json
import os
import resource
import signal
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from lexalign.runs import RunDir, RunDirError, is_complete, read_manifest, read_metrics, require_complete

REPO = Path(__file__).resolve().parent.parent
SFT_YAML = REPO / "configs" / "sft.yaml"

pytest_plugins = ["test_reward_support"]


def lexalign(*args: str, env: dict | None = None, timeout: float = 600, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "lexalign.cli", *args], cwd=REPO, capture_output=True, text=True,
                          timeout=timeout, env=env, **kwargs)


def mount_tmpfs(path: Path, options: str) -> bool:
    """A tmpfs at ``path`` (root with mount rights only); False when it cannot be mounted here."""
    if os.geteuid() != 0 or os.environ.get("LEXALIGN_TEST_NO_MOUNT"):  # the variable exercises the fallbacks
        return False
    path.mkdir(parents=True, exist_ok=True)
    return subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(path)], capture_output=True).returncode == 0


def umount(path: Path) -> None:
    subprocess.run(["umount", "-l", str(path)], capture_output=True)


@pytest.fixture()
def mounts():
    made: list[Path] = []
    yield made
    for path in reversed(made):
        umount(path)


@pytest.fixture(scope="module")
def chat_files(tmp_path_factory) -> tuple[Path, Path]:
    from test_sft import chat_records

    folder = tmp_path_factory.mktemp("chat")
    train, valid = folder / "train.jsonl", folder / "valid.jsonl"
    train.write_text("".join(json.dumps(r) + "\n" for r in chat_records(64, seed=0)))
    valid.write_text("".join(json.dumps(r) + "\n" for r in chat_records(16, seed=1)))
    return train, valid


def sft_args(model: Path, data: tuple[Path, Path], out: Path, *extra: str) -> list[str]:
    return ["sft", "--config", str(SFT_YAML), f"model.path={model}", f"data.train={data[0]}", f"data.valid={data[1]}",
            f"output_dir={out}", "model.quantization.bits=null", "model.threads=1", "training.max_steps=4",
            "training.save_steps=2", "training.eval_steps=4", "training.logging_steps=1", "training.max_length=128",
            *extra]


def assert_clear_error(result: subprocess.CompletedProcess, *words: str) -> None:
    assert result.returncode == 2, (result.returncode, result.stderr[-3000:])
    assert "Traceback" not in result.stderr, result.stderr[-3000:]
    for word in words:
        assert word in result.stderr, (word, result.stderr[-2000:])


# --------------------------------------------------------------------------- unwritable, full disk


def test_unwritable_run_directory_is_a_clear_cli_error(tiny_model_dir, chat_files, tmp_path, mounts) -> None:
    target = tmp_path / "readonly"
    if mount_tmpfs(target, "ro,size=1m"):
        mounts.append(target)
        how = "read-only tmpfs"
    elif os.geteuid() != 0:
        target.mkdir()
        target.chmod(0o555)
        how = "chmod 555"
    else:  # root without mount rights: permissions do not stop root; a path below a regular file cannot be made
        target.write_text("a file, not a folder")
        how = "path below a regular file"
    result = lexalign(*sft_args(tiny_model_dir, chat_files, target))
    assert_clear_error(result, "cannot write the run directory", str(target / "tiny" / "sft"))
    print(f"\nunwritable run directory ({how}): exit {result.returncode}: {result.stderr.strip().splitlines()[-1]}")


def _full_disk(tmp_path: Path, mounts: list[Path], size: int) -> tuple[Path, dict]:
    """A folder on a full-able filesystem, and the preexec settings that fill it; tmpfs when possible."""
    folder = tmp_path / "small-disk"
    if mount_tmpfs(folder, f"size={size}"):
        mounts.append(folder)
        return folder, {}

    def limit() -> None:  # every file of the process may grow to `size` bytes only: writes fail with EFBIG
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (size, size))

    folder.mkdir()
    return folder, {"preexec_fn": limit}


def test_full_disk_is_a_clear_cli_error_and_the_run_starts_over_once_space_is_back(
        tiny_model_dir, chat_files, tmp_path, mounts) -> None:
    """The disk fills while checkpoint-2, the first checkpoint, is saved (its adapter file on the 300 KiB tmpfs, its
    optimizer file under RLIMIT_FSIZE): no whole checkpoint is left, so once space is back the same command
    removes the cut checkpoint and starts over from step 0; it does not resume. Checked: the failed attempt's
    metrics lines are replaced (not kept), the initial evaluation runs again, every step is logged once, and the
    restarted steps log the failed attempt's values (same seed)."""
    from test_sft import KILLED, mark_metrics, resumable_step

    folder, fault = _full_disk(tmp_path, mounts, 300 * 1024)
    result = lexalign(*sft_args(tiny_model_dir, chat_files, folder), **fault)
    run_dir = folder / "tiny" / "sft"
    assert_clear_error(result, "cannot write to the run directory", str(run_dir), "starts over")
    assert not is_complete(run_dir)
    with pytest.raises(RunDirError, match="not a completed run"):
        require_complete(run_dir, "export")
    assert (run_dir / "checkpoints" / "checkpoint-2").is_dir() and resumable_step(run_dir) == 0  # cut mid-save
    failed = mark_metrics(run_dir)
    assert [m["step"] for m in failed if "loss" in m] == [1, 2]  # it trained to the checkpoint, then the disk was full
    # space comes back: the same command finishes the run
    if fault:
        again = lexalign(*sft_args(tiny_model_dir, chat_files, folder))
    else:
        subprocess.run(["mount", "-o", "remount,size=64m", str(folder)], check=True)
        again = lexalign(*sft_args(tiny_model_dir, chat_files, folder))
    assert again.returncode == 0, again.stderr[-3000:]
    assert "checkpoint-2 was interrupted while being saved" in again.stderr and "resuming from" not in again.stderr
    assert is_complete(run_dir) and read_manifest(run_dir)["results"]["global_step"] == 4
    metrics = read_metrics(run_dir)
    assert not [m for m in metrics if m.get("attempt") == KILLED], "the failed attempt's metrics were kept"
    assert metrics[0]["step"] == 0 and "eval_loss" in metrics[0]  # the evaluation before training: a fresh start
    assert [m["step"] for m in metrics if "loss" in m] == [1, 2, 3, 4]  # every step once
    restarted = {m["step"]: m["loss"] for m in metrics if "loss" in m}
    failed_losses = {m["step"]: m["loss"] for m in failed if "loss" in m}
    assert [restarted[s] for s in failed_losses] == pytest.approx(list(failed_losses.values()))  # seeded: same values
    print(f"\nfull disk ({'tmpfs 300k' if not fault else 'RLIMIT_FSIZE'}): exit 2 while checkpoint-2 was saved, "
          "then started over (no whole checkpoint) and finished at step 4")


def test_full_disk_during_data_build_is_a_clear_cli_error(tmp_path, mounts) -> None:
    from test_data_build import SMALL

    from lexalign.data.synthetic import write_synthetic_source

    source = write_synthetic_source(tmp_path / "corpora")
    folder, fault = _full_disk(tmp_path, mounts, 16 * 1024)
    out = folder / "data"
    result = lexalign("data", "build", "--source", str(source), "--out", str(out), "--config",
                      str(REPO / "configs" / "data.yaml"), *SMALL, **fault)
    assert_clear_error(result, "cannot write to the dataset folder", str(out))
    assert not (out / "manifest.json").exists()  # the manifest is written last: a cut build has none


# --------------------------------------------------------------------------- checkpoints and COMPLETE


def _fake_checkpoint(folder: Path, step: int, state: str | None) -> Path:
    path = folder / f"checkpoint-{step}"
    path.mkdir(parents=True)
    (path / "adapter_model.safetensors").write_bytes(b"weights")
    if state is not None:
        (path / "trainer_state.json").write_text(state)
    return path


def test_half_written_checkpoints_are_never_resumed_from(tmp_path) -> None:
    from lexalign.training import find_resume_checkpoint

    folder = tmp_path / "run" / "checkpoints"
    whole = _fake_checkpoint(folder, 20, json.dumps({"global_step": 20}))
    cut = _fake_checkpoint(folder, 40, '{"global_step": 40, "log_hist')   # cut mid-write
    missing = _fake_checkpoint(folder, 60, None)                          # killed before the state file
    wrong = _fake_checkpoint(folder, 80, json.dumps({"global_step": 70}))  # not this checkpoint's state
    run = RunDir(tmp_path / "run", "dpo", StageConfig())
    assert find_resume_checkpoint(run, resume=True) == str(whole)
    assert whole.exists() and not cut.exists() and not missing.exists() and not wrong.exists()
    assert find_resume_checkpoint(run, resume=False) is None


@dataclass
class StageConfig:
    data: dict = field(default_factory=lambda: {"train": ["pairs.jsonl"], "max_train_pairs": 0})
    model: dict = field(default_factory=lambda: {"tuning": "lora", "threads": 2})
    training: dict = field(default_factory=lambda: {"max_steps": 4})


def test_checkpoints_trained_on_other_inputs_are_never_resumed_from(tmp_path) -> None:
    """A stage run again on new data (a pipeline step whose preference pairs changed) starts over: resuming would
    finish the old run and leave a model that never saw the new data. More steps, other threads, other held-out
    data, or an option the earlier run did not know yet still resume; another training setting that decides the
    weights (max_length) starts over; resume: false clears the old checkpoints."""
    from lexalign.training import find_resume_checkpoint

    pairs, held_out = tmp_path / "pairs.jsonl", tmp_path / "valid.jsonl"
    pairs.write_text('{"pair": 1}\n', encoding="utf-8")
    held_out.write_text('{"pair": 9}\n', encoding="utf-8")
    folder = tmp_path / "run" / "checkpoints"

    def rerun(config: StageConfig, resume: bool = True) -> tuple[str | None, list[str]]:
        run = RunDir(tmp_path / "run", "dpo", config, inputs={"train_data_0": pairs, "valid_data_0": held_out})
        changed = run.changed_since_last_start()
        found = find_resume_checkpoint(run, resume=resume)
        run.start()
        return found, changed

    def checkpoint() -> str:
        return str(_fake_checkpoint(folder, 4, json.dumps({"global_step": 4})))

    rerun(StageConfig())
    whole = checkpoint()
    assert rerun(StageConfig()) == (whole, [])                                    # killed, run again: resumes
    assert rerun(StageConfig(training={"max_steps": 8})) == (whole, [])           # trained longer: resumes
    assert rerun(StageConfig(model={"tuning": "lora", "threads": 8})) == (whole, [])   # another machine
    held_out.write_text('{"pair": 10}\n', encoding="utf-8")
    assert rerun(StageConfig()) == (whole, [])                                    # held-out pairs only evaluate
    pairs.write_text('{"pair": 2}\n', encoding="utf-8")
    assert rerun(StageConfig()) == (None, ["train_data_0"]) and not folder.exists()   # other pairs: starts over
    whole = checkpoint()
    assert rerun(StageConfig(data={"train": ["pairs.jsonl"], "max_train_pairs": 32})) == (
        None, ["data.max_train_pairs"]) and not folder.exists()                   # another draw of the pairs
    whole = checkpoint()
    assert rerun(StageConfig(data={"train": ["pairs.jsonl"], "max_train_pairs": 32},
                             model={"tuning": "qlora", "threads": 2})) == (None, ["model.tuning"])
    whole = checkpoint()
    newer = StageConfig(data={"train": ["pairs.jsonl"], "max_train_pairs": 32, "balance_fixed_answers": False},
                        model={"tuning": "qlora", "threads": 2})
    assert rerun(newer) == (whole, [])                 # an option added since, at its default: still resumes
    assert rerun(newer, resume=False)[0] is None and not folder.exists()   # starting over clears the old ones
    rerun(StageConfig(training={"max_length": 256, "max_steps": 8, "logging_steps": 4}))
    whole = checkpoint()
    assert rerun(StageConfig(training={"max_length": 256, "max_steps": 16, "logging_steps": 8})) == (whole, [])
    assert rerun(StageConfig(training={"max_length": 512, "max_steps": 16})) == (
        None, ["training.max_length"]) and not folder.exists()                  # other sequences: starts over


@dataclass
class OnlineStageLike:
    algorithm: str = "grpo"
    grpo: dict = field(default_factory=lambda: {"max_steps": 4, "learning_rate": 1e-3})


def test_online_checkpoints_of_another_algorithm_or_learning_rate_are_never_resumed_from(tmp_path) -> None:
    from lexalign.training import find_resume_checkpoint

    folder = tmp_path / "run" / "checkpoints"

    def rerun(config: OnlineStageLike) -> str | None:
        run = RunDir(tmp_path / "run", "ppo", config)
        found = find_resume_checkpoint(run, resume=True)
        run.start()
        return found

    rerun(OnlineStageLike())
    whole = str(_fake_checkpoint(folder, 4, json.dumps({"global_step": 4})))
    assert rerun(OnlineStageLike(grpo={"max_steps": 8, "learning_rate": 1e-3})) == whole   # longer: resumes
    assert rerun(OnlineStageLike(grpo={"max_steps": 8, "learning_rate": 5e-4})) is None and not folder.exists()
    whole = str(_fake_checkpoint(folder, 4, json.dumps({"global_step": 4})))
    assert rerun(OnlineStageLike("rloo", {"max_steps": 8, "learning_rate": 5e-4})) is None and not folder.exists()


def test_a_stage_interrupted_before_complete_is_never_taken_as_complete(tmp_path, monkeypatch) -> None:
    from dataclasses import dataclass

    import lexalign.runs as runs

    @dataclass
    class Cfg:
        x: int = 1

    path = tmp_path / "stage"
    run = RunDir(path, "sft", Cfg()).start()
    assert read_manifest(path)["status"] == "running" and not is_complete(path)
    run.complete(outputs={"adapter": "adapter"})
    assert is_complete(path) and read_manifest(path)["status"] == "complete"
    RunDir(path, "sft", Cfg()).start()  # a re-run makes the folder incomplete until it finishes again
    assert not is_complete(path)
    # killed between the final manifest and the marker: the manifest says complete, the marker is missing
    real_replace = os.replace

    def crash_on_marker(src, dst):
        if Path(dst).name == runs.COMPLETE_MARKER:
            raise KeyboardInterrupt("killed")
        return real_replace(src, dst)

    monkeypatch.setattr(runs.os, "replace", crash_on_marker)
    with pytest.raises(KeyboardInterrupt):
        RunDir(path, "sft", Cfg()).complete()
    monkeypatch.setattr(runs.os, "replace", real_replace)
    assert read_manifest(path)["status"] == "complete" and not is_complete(path)
    with pytest.raises(RunDirError, match="not a completed run"):
        require_complete(path, "dpo")


def test_consumers_refuse_an_incomplete_run(tiny_model_dir, chat_files, tmp_path) -> None:
    """A finished SFT run whose COMPLETE marker is missing (killed at the very end) is refused by export,
    serve, DPO and the reward stage; with the marker back, export takes it."""
    from lexalign.runs import COMPLETE_MARKER
    from lexalign.sft.train import SFTStageConfig, train_sft
    from lexalign.config import load_config

    run_dir = train_sft(load_config(SFTStageConfig, SFT_YAML, sft_args(tiny_model_dir, chat_files, tmp_path)[3:]))
    marker = run_dir / COMPLETE_MARKER
    marker.rename(tmp_path / "marker")
    commands = {
        "export": ["export", str(run_dir)],
        "serve": ["serve", "--run", str(run_dir), "--dry-run"],
        "dpo": ["dpo", "--config", str(REPO / "configs" / "dpo.yaml"), f"sft_run={run_dir}",
                f"output_dir={tmp_path / 'dpo'}", "eval.reward_run="],
        "reward": ["reward", "--config", str(REPO / "configs" / "reward.yaml"), f"sft_run={run_dir}",
                   f"output_dir={tmp_path / 'reward'}"],
    }
    # The four commands at once: each spends its seconds importing torch/transformers before it refuses.
    running = {name: subprocess.Popen([sys.executable, "-m", "lexalign.cli", *argv], cwd=REPO, text=True,
                                      stdout=subprocess.PIPE, stderr=subprocess.PIPE)
               for name, argv in commands.items()}
    for name, process in running.items():
        _, stderr = process.communicate(timeout=600)
        assert process.returncode == 2, (name, stderr[-2000:])
        assert "not a completed run" in stderr and "Traceback" not in stderr, (name, stderr[-2000:])
    assert not (tmp_path / "dpo").exists() or not any((tmp_path / "dpo").rglob("COMPLETE"))
    (tmp_path / "marker").rename(marker)
    assert lexalign("export", str(run_dir)).returncode == 0


# --------------------------------------------------------------------------- DPO kill -9 resume


@pytest.mark.slow
def test_dpo_killed_with_sigkill_resumes_at_its_checkpoint_and_matches_an_uninterrupted_run(
        align_sft_run, align_pairs, tmp_path) -> None:
    """kill -9 past checkpoint-10 (step 15 logged); the same command resumes at the checkpoint (metrics up to it
    kept, later ones dropped, the rerun logs from step 15 on) and ends with the trained adapter of an
    uninterrupted run of the same config (which a resume that kept the SFT weights missed by 0.03)."""
    from test_sft import assert_resumed, assert_same_adapter, assert_same_curve, kill_after_checkpoint, mark_metrics
    from test_sft import resumable_step

    from lexalign.config import load_config
    from lexalign.rlhf.dpo import DPOStageConfig, train_dpo

    max_steps, logging_steps = 20, 5
    overrides = [f"sft_run={align_sft_run}", f"data.train=[{align_pairs[0]}]", f"data.valid=[{align_pairs[1]}]",
                 "data.max_valid_pairs=0", "model.threads=1", f"training.max_steps={max_steps}",
                 "training.learning_rate=2e-3", "training.warmup_steps=0", "training.save_steps=10",
                 f"training.logging_steps={logging_steps}", "training.max_length=192", "eval.reward_run="]
    dpo_yaml = str(REPO / "configs" / "dpo.yaml")
    command = [sys.executable, "-m", "lexalign.cli", "dpo", "--config", dpo_yaml, *overrides,
               f"output_dir={tmp_path / 'killed'}"]
    run_dir = tmp_path / "killed" / "tiny" / "dpo"
    kill_after_checkpoint(command, run_dir, 10, tmp_path / "first.log", cwd=REPO)
    with pytest.raises(RunDirError):
        require_complete(run_dir, "serve")
    step = resumable_step(run_dir)
    killed = mark_metrics(run_dir)
    assert [m for m in killed if m["step"] > step], "nothing logged after the checkpoint: nothing to drop"
    result = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    assert is_complete(run_dir)
    manifest = read_manifest(run_dir)
    assert manifest["results"]["global_step"] == max_steps
    rerun = assert_resumed(run_dir, killed, step, logging_steps, max_steps)
    assert manifest["results"]["reference_check"]["drift_max_abs_diff"] < 1e-4  # the reference never moved

    uninterrupted = train_dpo(load_config(DPOStageConfig, dpo_yaml, [*overrides, f"output_dir={tmp_path / 'whole'}"]))
    assert_same_curve(rerun, read_metrics(uninterrupted), ("loss", "learning_rate", "grad_norm", "rewards/margins"))
    diff = assert_same_adapter(run_dir / "adapter", uninterrupted / "adapter")
    print(f"\nDPO: killed with SIGKILL after checkpoint-{step}, resumed at step {step + logging_steps}, finished at "
          f"step {max_steps}; max |resumed - uninterrupted| adapter weight {diff:.1e}")
