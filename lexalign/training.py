"""What every TRL-trained stage shares: building TRL's config, logging into the run directory,
checkpoint resume, and the end-of-training curves."""

from __future__ import annotations

import json
import logging
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lexalign.config import ConfigError, Problem, problem_if
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


def ready_for_distributed_training(trainer: Any) -> None:
    """Call after an initial ``trainer.evaluate()`` and before ``trainer.train()``.

    In multi-process runs (accelerate/torchrun), evaluate() before train() makes accelerate prepare the model
    for evaluation only and flag it as prepared; train() then never wraps it in DistributedDataParallel, so
    every process trains its own copy on its own shard with no gradient averaging, silently (transformers
    5.19 + accelerate 1.15). Clearing the flag lets train() wrap the model as usual. A no-op in one process.
    """
    if trainer.args.world_size <= 1:
        return
    model = trainer.model
    if getattr(model, "_is_accelerate_prepared", False):
        model._is_accelerate_prepared = False
    trainer.accelerator._models = [m for m in trainer.accelerator._models if m is not model]
    trainer.model_wrapped = model


def seed_length_balanced_batches(trainer: Any) -> None:
    """Seed transformers' ``BatchRebalanceSampler`` (``train_sampling_strategy: batch_rebalance``) with the run's
    ``data_seed`` (else ``seed``), as the random sampler follows the run's seed. transformers 5.19 builds it with the
    sampler's own default (42) whatever the run says, so runs of different seeds would train on one draw of batches."""
    from transformers.trainer_pt_utils import BatchRebalanceSampler

    build_sampler = trainer._get_train_sampler

    def seeded_sampler(*args: Any, **kwargs: Any) -> Any:
        sampler = build_sampler(*args, **kwargs)
        if isinstance(sampler, BatchRebalanceSampler):
            sampler.seed = trainer.args.data_seed if trainer.args.data_seed is not None else trainer.args.seed
        return sampler

    trainer._get_train_sampler = seeded_sampler


def pair_sampler_problems(training: dict[str, Any]) -> list[Problem]:
    """transformers' length-aware samplers read each record's length from an ``input_ids`` column, which tokenized
    preference pairs (prompt, chosen and rejected ids) do not have: the trainer would fail after the model loads."""
    strategy = training.get("train_sampling_strategy", "random")
    return problem_if(strategy in ("group_by_length", "batch_rebalance"), "training.train_sampling_strategy", strategy,
                      "random or sequential: preference pairs have no single length to group or balance by")


def checkpoint_is_whole(path: Path) -> bool:
    """The Trainer writes trainer_state.json last (after weights, optimizer, scheduler and RNG states), so a
    checkpoint whose state file is missing or cut short was interrupted mid-save (kill -9, disk full)."""
    try:
        state = json.loads((path / "trainer_state.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return isinstance(state, dict) and state.get("global_step") == checkpoint_step(str(path))


def find_resume_checkpoint(run: RunDir, resume: bool) -> str | None:
    """The newest whole checkpoint in the run directory when resuming, else None (call before ``run.start()``).
    Checkpoints left half-written by an interrupted save are removed (by the main process): they cannot be resumed
    from. So are all of them when the run last started there had other inputs or another model/data config (a
    pipeline re-running a stage on new preference pairs): resuming would finish the old run, not train on the new
    data."""
    import re
    import shutil

    from lexalign.runs import is_main_process

    folder = run.path / CHECKPOINTS
    if not folder.is_dir():
        return None
    if not resume:  # starting over: an old run's later checkpoints would outlive this run's and be resumed next time
        if is_main_process():
            shutil.rmtree(folder, ignore_errors=True)
        return None
    changed = run.changed_since_last_start()
    if changed:
        logger.warning("%s: its checkpoints were trained on other inputs (%s changed); starting over%s", run.path,
                       ", ".join(changed), " (removing them)" if is_main_process() else "")
        if is_main_process():
            shutil.rmtree(folder, ignore_errors=True)
        return None
    found = sorted((p for p in folder.iterdir() if p.is_dir() and re.fullmatch(r"checkpoint-\d+", p.name)),
                   key=lambda p: checkpoint_step(str(p)), reverse=True)
    for path in found:
        if checkpoint_is_whole(path):
            logger.info("resuming from %s", path)
            return str(path)
        logger.warning("%s was interrupted while being saved (no complete trainer_state.json); %s", path,
                       "removing it" if is_main_process() else "skipping it")
        if is_main_process():
            shutil.rmtree(path, ignore_errors=True)
    return None


def trim_metrics_after(run: RunDir, step: int) -> None:
    """Drop metric records logged after ``step`` (they will be logged again by the resumed run)."""
    file = run.path / "metrics.jsonl"
    if not file.is_file():
        return
    kept = [r for r in read_metrics(run.path) if r.get("step", 0) <= step]
    file.write_text("".join(json.dumps(r) + "\n" for r in kept), encoding="utf-8")


def checkpoint_step(checkpoint: str | None) -> int:
    return int(Path(checkpoint).name.split("-")[-1]) if checkpoint else 0


def metrics_callback(run: RunDir, perplexity: bool = True) -> Any:
    """A transformers callback that appends every log (train and eval) to the run's metrics.jsonl.

    ``perplexity``: add eval_perplexity = exp(eval_loss) (language-model losses only; not for reward/DPO losses)."""
    from transformers import TrainerCallback

    class RunDirMetrics(TrainerCallback):
        def on_log(self, args, state, control, logs=None, **kwargs):  # noqa: ANN001 - transformers' signature
            if not logs or not state.is_world_process_zero:
                return
            record = {"step": state.global_step, **{k: v for k, v in logs.items() if isinstance(v, (int, float))}}
            if perplexity and "eval_loss" in record:
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


# --------------------------------------------------------------------------- preference pairs (reward, DPO)


def preference_file_problems(files: list[str], key: str) -> list[Problem]:
    """Config rule: every listed preference file exists ("shipped:<name>" = a shipped dataset)."""
    from lexalign.data.paths import resolve_data_path

    return [Problem(f"{key}[{i}]", "file not found; give a preference-pair JSONL file or shipped:<name>", value)
            for i, value in enumerate(files) if not resolve_data_path(value).is_file()]


def load_pairs(files: list[str], limit: int = 0) -> list[Any]:
    """Every PreferencePair of every file, validated (a bad line -> DataError naming file:line), in order."""
    from lexalign.data.jsonl import read_jsonl
    from lexalign.data.paths import resolve_data_path
    from lexalign.data.schemas import PreferencePair

    pairs: list[Any] = []
    for value in files:
        pairs += read_jsonl(resolve_data_path(value), PreferencePair)
    return pairs[:limit] if limit else pairs


@dataclass
class PreferenceDataSection:
    """The preference pairs of a stage (reward model, DPO): training pairs and held-out pairs."""

    # Preference-pair JSONL files (lexalign.data.schemas.PreferencePair); "shipped:<file>" = data/shipped/<file>.
    # Add the store export with e.g. train=[shipped:acord_pairs_train.jsonl,runs/prefs/preferences.jsonl].
    train: list[str] = field(default_factory=lambda: ["shipped:acord_pairs_train.jsonl"])
    # Held-out pairs; [] = split the train pairs by meta.prompt_id (valid_fraction of the prompts).
    valid: list[str] = field(default_factory=lambda: ["shipped:acord_pairs_valid.jsonl"])
    valid_fraction: float = 0.1
    split_seed: int = 0
    max_train_pairs: int = 0  # 0 = all; else a seeded draw (split_seed), kept in file order
    max_valid_pairs: int = 0
    # Training pairs only: every answer text that recurs across prompts ("Not present.", "Fair: ...", "No") is kept
    # as often chosen as rejected (a seeded draw drops the surplus). When one fixed answer mostly wins — because the
    # label's prior favours it, not because the policy told the cases apart — DPO learns to give it everywhere.
    balance_fixed_answers: bool = False
    # Training pairs only: every pair with a fixed answer on either side is dropped, so what is left compares
    # answers that are each the policy's own reading of its excerpt (two quotes, two category lists, two
    # normalizations): how to answer, never how often to give a fixed answer.
    drop_fixed_answer_pairs: bool = False

    def problems(self) -> list[Problem]:
        found = problem_if(not self.train, "train", self.train, "list at least one preference-pair JSONL file")
        found += preference_file_problems(self.train, "train") + preference_file_problems(self.valid, "valid")
        found += problem_if(not 0 < self.valid_fraction < 1, "valid_fraction", self.valid_fraction,
                            "a fraction of the prompts in (0, 1), used when valid is []")
        found += problem_if(self.balance_fixed_answers and self.drop_fixed_answer_pairs, "drop_fixed_answer_pairs",
                            self.drop_fixed_answer_pairs, "at most one of balance_fixed_answers and "
                            "drop_fixed_answer_pairs (dropping leaves nothing to balance)")
        for key in ("max_train_pairs", "max_valid_pairs"):
            found += problem_if(getattr(self, key) < 0, key, getattr(self, key), "use 0 (all) or a positive count")
        return found

    def load(self) -> tuple[list[Any], list[Any], bool]:
        """(training pairs, held-out pairs, whether the held-out pairs were split off by prompt); every line
        validated (a bad one -> DataError naming file:line)."""
        train = load_pairs(self.train)
        split = not self.valid
        if split:
            train, valid = split_by_prompt(train, self.valid_fraction, self.split_seed)
        else:
            valid = load_pairs(self.valid)
        # a seeded draw kept in file order: the first N lines of a file may hold only one or two prompts
        train = sample_in_order(train, self.max_train_pairs, self.split_seed)
        # after the draw, so that what is trained on is balanced or free of fixed answers
        for key, select in (("balance_fixed_answers", lambda p: balance_fixed_answers(p, self.split_seed)),
                            ("drop_fixed_answer_pairs", drop_fixed_answer_pairs)):
            if getattr(self, key):
                kept = select(train)
                if train and not kept:
                    from lexalign.errors import LexalignError

                    raise LexalignError(f"data.{key}: it left none of the {len(train)} training pairs; add "
                                        f"rankings of other answers or set data.{key}=false")
                train = kept
        return train, sample_in_order(valid, self.max_valid_pairs, self.split_seed), split


def answer_text(answer: Any) -> str:
    """A pair side as one string (a string, or the contents of its assistant messages), stripped."""
    return (answer if isinstance(answer, str) else "\n\n".join(m.content for m in answer)).strip()


def fixed_answer_texts(pairs: list[Any]) -> set[str]:
    """The *fixed* answers of a set of pairs: texts that are a side of pairs of at least two prompts ("Not
    present.", "Fair: ...", "Yes"). A quote or a free answer is unique to its prompt."""
    prompts: dict[str, set[str]] = {}
    for pair in pairs:
        for text in (answer_text(pair.chosen), answer_text(pair.rejected)):
            prompts.setdefault(text, set()).add(prompt_key(pair))
    return {text for text, keys in prompts.items() if len(keys) >= 2}


def drop_fixed_answer_pairs(pairs: list[Any]) -> list[Any]:
    """The pairs (in file order) with no fixed answer on either side."""
    fixed = fixed_answer_texts(pairs)
    kept = [p for p in pairs if answer_text(p.chosen) not in fixed and answer_text(p.rejected) not in fixed]
    if len(kept) < len(pairs):
        logger.info("drop_fixed_answer_pairs: %d of %d training pairs dropped (a side is one of %d fixed answers)",
                    len(pairs) - len(kept), len(pairs), len(fixed))
    return kept


def balance_fixed_answers(pairs: list[Any], seed: int) -> list[Any]:
    """The pairs (in file order) with every *fixed* answer — a text that is a side of pairs of at least two
    prompts — as often chosen as rejected: the side it occurs on more often loses a seeded draw of its surplus,
    the fixed answer with the largest surplus first, counts updated after each. Quotes and free answers, unique
    to their prompt, are never dropped for balance."""
    import random
    from collections import Counter

    sides = [(answer_text(p.chosen), answer_text(p.rejected)) for p in pairs]
    fixed = fixed_answer_texts(pairs)
    rng = random.Random(seed)
    kept = set(range(len(pairs)))
    dropped: Counter[str] = Counter()
    while True:
        chosen = Counter(sides[i][0] for i in kept if sides[i][0] in fixed)
        rejected = Counter(sides[i][1] for i in kept if sides[i][1] in fixed)
        surplus = {text: chosen[text] - rejected[text] for text in fixed if chosen[text] != rejected[text]}
        if not surplus:
            break
        text = max(sorted(surplus), key=lambda t: abs(surplus[t]))
        side = 0 if surplus[text] > 0 else 1
        candidates = sorted(i for i in kept if sides[i][side] == text)
        for i in rng.sample(candidates, abs(surplus[text])):
            kept.discard(i)
        dropped[text] += abs(surplus[text])
    if dropped:
        logger.info("balance_fixed_answers: %d of %d training pairs dropped (%s)", sum(dropped.values()), len(pairs),
                    ", ".join(f"{text[:40]!r} {n}" for text, n in dropped.most_common()))
    return [pairs[i] for i in sorted(kept)]


def sample_in_order(items: list[Any], limit: int, seed: int) -> list[Any]:
    """At most ``limit`` items (0 = all): a seeded random draw, kept in the original order."""
    import random

    if not limit or len(items) <= limit:
        return items
    keep = sorted(random.Random(seed).sample(range(len(items)), limit))
    return [items[i] for i in keep]


def pairs_by_origin(pairs: list[Any]) -> dict[str, int]:
    """How many pairs each source and origin gave (``meta.source``/``meta.origin``, e.g. ``candidates/derived:gold:cuad``,
    ``chat_feedback/human``, ``acord``): what a stage trained on, for its manifest."""
    counts: dict[str, int] = {}
    for pair in pairs:
        meta = pair.meta or {}
        key = "/".join(str(meta[k]) for k in ("source", "origin") if meta.get(k)) or "unlabelled"
        counts[key] = counts.get(key, 0) + 1
    return dict(sorted(counts.items()))


def prompt_key(pair: Any) -> str:
    """The unit of a held-out split: ``meta.prompt_id``, else a hash of the prompt itself."""
    import hashlib

    if pair.meta and pair.meta.get("prompt_id"):
        return str(pair.meta["prompt_id"])
    prompt = pair.prompt if isinstance(pair.prompt, str) else [m.model_dump() for m in pair.prompt]
    return hashlib.sha256(json.dumps(prompt, sort_keys=True).encode()).hexdigest()


def split_by_prompt(pairs: list[Any], fraction: float, seed: int) -> tuple[list[Any], list[Any]]:
    """(train, held-out): whole prompts go to one side, ``fraction`` of the prompts (at least one) held out."""
    import random

    from lexalign.errors import LexalignError

    keys = sorted({prompt_key(p) for p in pairs})
    if len(keys) < 2:
        raise LexalignError("cannot split the preference pairs by prompt: they all share one prompt; "
                            "give held-out (valid) files with other prompts")
    random.Random(seed).shuffle(keys)
    held = set(keys[: max(1, round(fraction * len(keys)))])
    return [p for p in pairs if prompt_key(p) not in held], [p for p in pairs if prompt_key(p) in held]
