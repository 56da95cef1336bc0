"""SFT stage: (Q)LoRA or full instruction tuning of a causal LM on legal chat records with TRL's SFTTrainer.

    lexalign sft --config configs/sft.yaml [key=value ...]

Reads top to bottom: config -> tokenizer -> data -> model -> trainer -> train -> save -> evaluate -> card.
Output: ``<output_dir>/<name>/sft/`` with the adapter (or full model), tokenizer and chat template,
metrics, curves, manifest and model card. Interrupted runs resume from their last checkpoint.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lexalign.config import Problem, load_config, problem_if, share_problems, trl_section
from lexalign.errors import LexalignError
from lexalign.modeling import ModelSection
from lexalign.runs import RunDir, is_main_process, writes_to

logger = logging.getLogger(__name__)

STAGE = "sft"
TASKS = ("extract", "presence", "normalize", "unfair")  # the labelled tasks of the shipped chat records


@dataclass
class SFTDataSection:
    # "shipped:<file>" names a file of the datasets shipped with lexalign (data/shipped/).
    train: str = "shipped:sft_train.jsonl"
    valid: str = "shipped:sft_valid.jsonl"
    # More training files, appended to train, e.g. [shipped:sft_train_extra.jsonl] (clause-presence records beyond
    # those of sft_train.jsonl: configs/data.yaml, sft.extra_train).
    train_extra: list[str] = field(default_factory=list)
    max_train_records: int = 0  # 0 = all
    max_valid_records: int = 0
    # Cap on the share of "Not present." answers among the extraction training records (a seeded downsample of
    # the absent ones; null = as given). Why: the first token decides between "Not present." (one token sequence)
    # and a quote (spread over every sentence start of the excerpt), so a short run on the shipped mix (52 %
    # absent) answers "Not present." to every question under greedy decoding (bench/RESULTS.md).
    max_not_present_share: float | None = None
    # How many times each training record of a task is seen per epoch (task -> count; absent tasks once), e.g.
    # {presence: 2}. Why: the presence decision is the skill the default mix teaches least (600 of the 3,505 records).
    task_repeats: dict[str, int] = field(default_factory=dict)
    seed: int = 0               # the downsample's draw

    def problems(self) -> list[Problem]:
        from lexalign.data.paths import resolve_data_path

        found: list[Problem] = []
        for key in ("train", "valid"):
            value = getattr(self, key)
            if not value:
                found.append(Problem(key, f"set the {key} file (chat records JSONL)", value))
            elif not resolve_data_path(value).is_file():
                found.append(Problem(key, "file not found; give a chat-records JSONL file or shipped:<name>", value))
        for index, value in enumerate(self.train_extra or []):
            if not resolve_data_path(value).is_file():
                found.append(Problem(f"train_extra[{index}]", "file not found; give a chat-records JSONL file or "
                                     "shipped:<name>", value))
        for key in ("max_train_records", "max_valid_records"):
            found += problem_if(getattr(self, key) < 0, key, getattr(self, key), "use 0 (all) or a positive count")
        found += share_problems("max_not_present_share", self.max_not_present_share)
        for task, count in (self.task_repeats or {}).items():
            found += problem_if(task not in TASKS, f"task_repeats.{task}", task, f"one of the tasks {', '.join(TASKS)}")
            found += problem_if(not isinstance(count, int) or isinstance(count, bool) or count < 1,
                                f"task_repeats.{task}", count, "a whole number of times, 1 or more")
        return found


@dataclass
class SFTStageConfig:
    name: str = "tiny"
    output_dir: str = "runs"
    # Continue from the newest checkpoint in the run directory when there is one.
    resume: bool = True
    model: ModelSection = field(default_factory=ModelSection)
    data: SFTDataSection = field(default_factory=SFTDataSection)
    # Arguments of trl.SFTConfig. assistant_only_loss: true trains on `messages` with the chat template's
    # generation markers; otherwise records become prompt/completion pairs (completion-only loss for any template).
    training: dict[str, Any] = trl_section("trl.SFTConfig")

    @property
    def run_dir(self) -> Path:
        return Path(self.output_dir) / self.name / STAGE

    def problems(self) -> list[Problem]:
        found: list[Problem] = []
        if self.training.get("packing") and self.training.get("packing_strategy", "bfd") == "wrapped":
            found.append(Problem("training.packing_strategy", "'wrapped' lets packed examples attend to each "
                                 "other; use 'bfd' (padding-free, isolated examples)", "wrapped"))
        max_length = self.training.get("max_length", 1024)
        found += problem_if(max_length is not None and (not isinstance(max_length, int) or max_length <= 0),
                            "training.max_length", max_length, "a positive token count")
        if self.model.path and Path(self.model.path).is_dir() and not (Path(self.model.path) / "config.json").is_file():
            found.append(Problem("model.path", "not a Hugging Face model folder (no config.json)", self.model.path))
        return found


# --------------------------------------------------------------------------- data


def to_trainer_records(records: list[Any], assistant_only_loss: bool) -> list[dict[str, Any]]:
    """Chat records -> TRL's conversational formats: messages (assistant-only loss) or prompt/completion."""
    if assistant_only_loss:
        return [{"messages": [m.model_dump() for m in r.messages]} for r in records]
    return [
        {"prompt": [m.model_dump() for m in r.messages[:-1]], "completion": [r.messages[-1].model_dump()]}
        for r in records
    ]


def load_split(path: str, limit: int) -> list[Any]:
    from lexalign.data.paths import resolve_data_path
    from lexalign.data.jsonl import read_jsonl
    from lexalign.data.schemas import ChatRecord

    records = read_jsonl(resolve_data_path(path), ChatRecord)
    return records[:limit] if limit else records


def run_inputs(config: SFTStageConfig, base_path: Path) -> dict[str, Path]:
    """The files whose hashes the run's manifest records (a changed one makes it a new run)."""
    from lexalign.data.paths import resolve_data_path

    return {
        "base_model": base_path,
        "train_data": resolve_data_path(config.data.train),
        **{f"train_extra_{i}": resolve_data_path(path) for i, path in enumerate(config.data.train_extra)},
        "valid_data": resolve_data_path(config.data.valid),
    }


def training_records(data: SFTDataSection) -> list[Any]:
    """The records one epoch trains on: train + train_extra, the "Not present." cap, the record cap, the repeats."""
    records = load_split(data.train, 0)
    for path in data.train_extra:
        records += load_split(path, 0)
    records = cap_not_present(records, data.max_not_present_share, data.seed)
    if data.max_train_records:
        records = records[:data.max_train_records]
    return repeat_tasks(records, data.task_repeats)


def cap_not_present(records: list[Any], share: float | None, seed: int) -> list[Any]:
    """Drop a seeded sample of the absent-clause extraction records so that they are at most ``share`` of the
    extraction records; every other record (and the file order) is kept."""
    if share is None:
        return records
    import random

    absent = [i for i, r in enumerate(records) if _task(r) == "extract" and (r.meta or {}).get("present") is False]
    present = sum(1 for r in records if _task(r) == "extract") - len(absent)
    keep = min(len(absent), int(share * present / (1 - share)))
    if keep == len(absent):
        return records
    dropped = set(random.Random(seed).sample(absent, len(absent) - keep))
    logger.info("extraction records: kept %d of %d 'Not present.' answers beside %d quotes (max_not_present_share "
                "%.2f)", keep, len(absent), present, share)
    return [r for i, r in enumerate(records) if i not in dropped]


def repeat_tasks(records: list[Any], repeats: dict[str, int]) -> list[Any]:
    """Each record of a task in ``repeats`` that many times (the copies follow the file; the trainer shuffles)."""
    if not repeats or all(count == 1 for count in repeats.values()):
        return records
    extra = [r for r in records for _ in range(repeats.get(_task(r) or "", 1) - 1)]
    logger.info("training records: %d repeated copies added (task_repeats %s)", len(extra), dict(repeats))
    return records + extra


def _task(record: Any) -> str | None:
    return (record.meta or {}).get("task")


# --------------------------------------------------------------------------- stage


def run_sft(config_path: str | Path | None, overrides: list[str]) -> Path:
    config = load_config(SFTStageConfig, config_path, overrides)
    with writes_to(config.run_dir):
        return train_sft(config)


def train_sft(config: SFTStageConfig) -> Path:
    from datasets import Dataset
    from trl import SFTConfig, SFTTrainer

    from lexalign.modeling import check_model_dir, load_model, load_tokenizer, lora_config
    from lexalign.training import (
        checkpoint_step,
        find_resume_checkpoint,
        make_trl_args,
        metrics_callback,
        mixed_precision,
        plot_training,
        ready_for_distributed_training,
        seed_length_balanced_batches,
        trim_metrics_after,
    )

    base_path = check_model_dir(config.model.path)
    run = RunDir(config.run_dir, STAGE, config, inputs=run_inputs(config, base_path),
                 parent=base_path.parent if (base_path.parent / "manifest.json").is_file() else None)
    checkpoint = find_resume_checkpoint(run, config.resume)
    run.start()
    if is_main_process():  # metrics after the resumed step (or all, when starting over) are logged again
        if checkpoint:
            trim_metrics_after(run, checkpoint_step(checkpoint))
        else:
            (run.path / "metrics.jsonl").unlink(missing_ok=True)

    tokenizer = load_tokenizer(base_path)

    assistant_only = bool(config.training.get("assistant_only_loss", False))
    train_records = training_records(config.data)
    valid_records = load_split(config.data.valid, config.data.max_valid_records)
    train_dataset = Dataset.from_list(to_trainer_records(train_records, assistant_only))
    valid_dataset = Dataset.from_list(to_trainer_records(valid_records, assistant_only))
    logger.info("data: %d train, %d validation records (%s)", len(train_dataset), len(valid_dataset),
                "messages, assistant-only loss" if assistant_only else "prompt/completion, completion-only loss")

    from transformers import set_seed

    set_seed(int(config.training.get("seed", 42)))  # before the LoRA weights are initialized: same seed, same run
    model, device, dtype = load_model(config.model)
    peft_config = None
    if config.model.tuning == "lora":
        if config.model.quantization.bits:
            from peft import prepare_model_for_kbit_training

            model = prepare_model_for_kbit_training(
                model, use_gradient_checkpointing=bool(config.training.get("gradient_checkpointing", False)))
        peft_config = lora_config(config.model.lora)

    args = make_trl_args(SFTConfig, config.training, run, **mixed_precision(config.training, dtype),
                         eos_token=tokenizer.eos_token)
    trainer = SFTTrainer(
        model=model,
        args=args,
        train_dataset=train_dataset,
        eval_dataset=valid_dataset,
        processing_class=tokenizer,
        peft_config=peft_config,
        callbacks=[metrics_callback(run)],
    )
    seed_length_balanced_batches(trainer)
    if peft_config is not None:
        trainer.model.print_trainable_parameters()

    initial_eval = trainer.evaluate() if not checkpoint else {}
    ready_for_distributed_training(trainer)  # else DDP never wraps the model after that evaluate()
    trainer.train(resume_from_checkpoint=checkpoint)
    final_eval = trainer.evaluate()
    if "eval_loss" not in final_eval:  # every validation answer was cut off: nothing to measure the loss on
        raise LexalignError(f"no validation record keeps an answer token within training.max_length="
                          f"{config.training.get('max_length', 1024)} ({len(valid_dataset)} records); raise "
                          "training.max_length or data.max_valid_records")

    output_name = "adapter" if peft_config is not None else "model"
    output_dir = run.path / output_name
    trainer.save_model(str(output_dir))  # the Trainer saves from the main process only
    if not is_main_process():
        return run.path  # rank 0 writes the tokenizer, plots, card, manifest and COMPLETE
    tokenizer.save_pretrained(str(output_dir))
    plot_training(run, f"SFT ({config.model.mode}) on {base_path}")

    results = {
        "eval_loss": final_eval["eval_loss"],
        "eval_perplexity": math.exp(min(final_eval["eval_loss"], 50.0)),
        "initial_eval_loss": initial_eval.get("eval_loss"),
        "global_step": trainer.state.global_step,
        "train_records": len(train_dataset),
        "valid_records": len(valid_dataset),
        "mode": config.model.mode,
        "world_size": trainer.args.world_size,  # training processes (accelerate/torchrun), 1 for a plain run
        "global_batch_size": trainer.args.world_size * trainer.args.per_device_train_batch_size
                             * trainer.args.gradient_accumulation_steps,
        "device": str(device),
        "compute_dtype": str(dtype).removeprefix("torch."),
    }
    outputs = {output_name: output_name, "base_model": str(base_path)}
    if peft_config is not None:
        outputs["lora_rank"] = config.model.lora.r
    write_model_card(output_dir, config, results, len(train_dataset))
    run.complete(outputs=outputs, results=results)
    return run.path


def write_model_card(folder: Path, config: SFTStageConfig, results: dict[str, Any], n_train: int) -> None:
    initial = results.get("initial_eval_loss")
    lines = [
        f"# lexalign SFT {'adapter' if config.model.tuning == 'lora' else 'model'}: {config.name}",
        "",
        "A contract-review assistant tuned with lexalign's SFT stage (TRL SFTTrainer).",
        "",
        f"- base model: `{config.model.path}`",
        f"- method: {config.model.mode}"
        + (f" (LoRA r={config.model.lora.r}, alpha={config.model.lora.alpha}, targets={config.model.lora.target_modules})"
           if config.model.tuning == "lora" else ""),
        f"- data: `{config.data.train}` ({n_train} chat records: CUAD clause extraction/presence, CLAUDETTE "
        "unfair-clause detection); validation `" + config.data.valid + "`",
        f"- steps: {results['global_step']}, device {results['device']}, compute dtype {results['compute_dtype']}",
        f"- held-out loss: {results['eval_loss']:.4f} (perplexity {results['eval_perplexity']:.2f})"
        + (f", before training {initial:.4f}" if initial is not None else ""),
        "",
        "Data attribution: CUAD (The Atticus Project, CC BY 4.0), CLAUDETTE (Galassi et al., CC BY 4.0).",
        "Not legal advice: answers must be checked by a lawyer.",
        "",
    ]
    (folder / "README.md").write_text("\n".join(lines), encoding="utf-8")
