"""Reward-model stage: a Bradley-Terry reward model on lawyers' preference pairs with TRL's RewardTrainer.

    lexalign reward --config configs/reward.yaml [key=value ...]

Reads top to bottom: config -> inputs checked (SFT run, preference files) -> tokenizer -> data -> model ->
trainer -> train -> save -> evaluate (held-out pairwise accuracy, calibration) -> card.

The model. ``sft_run`` set (default): the reward model starts from the SFT policy. Its LoRA adapter is merged
into the FULL-PRECISION base in memory (never into a 4-bit model), the result is loaded as
``AutoModelForSequenceClassification`` with one label (a fresh ``score`` head, ``pad_token_id`` set), and a
new LoRA (task SEQ_CLS, ``score`` always in ``modules_to_save``) is trained on top. With 4-bit quantization
(QLoRA on a GPU) the merged SFT model is first written to ``<run>/init`` and loaded quantized from there.
``sft_run: ""`` starts from ``model.path`` (any base model) instead.

The saved form is one merged, full-precision sequence-classification folder ``<run>/model`` (weights,
tokenizer, chat template, ``lexalign_reward.json``, model card): PPO, GRPO/RLOO, ``lexalign score`` and
``lexalign eval`` load it with ``from_pretrained`` alone. Every reported number comes from that reloaded folder;
the first held-out pairs are also scored by the in-memory trained model and the largest difference is recorded
(``reload_max_abs_diff``).

Input format (``lexalign.modeling.reward_input_ids``): chat-formatted prompt + generation header + response +
end-of-turn token, nothing after it: the tokens a policy generates, so PPO's online scores see what training saw.

Held-out data: the ``data.valid`` files (the shipped ACORD splits are split by document); with no valid file the
train pairs are split by ``meta.prompt_id`` (whole prompts, never single pairs). ``data.margin`` feeds the
pairs' margin (ACORD: star gap; store export: mean rank gap) times ``margin_scale`` into TRL's loss
``-log sigmoid(r_chosen - r_rejected - margin)``.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lexalign.config import Problem, load_config, problem_if, trl_section
from lexalign.modeling import RunModelSection
from lexalign.runs import RunDir, is_main_process, writes_to
from lexalign.training import PreferenceDataSection, pair_sampler_problems, pairs_by_origin, prompt_key

logger = logging.getLogger(__name__)

STAGE = "reward"
RELOAD_CHECK_PAIRS = 16  # held-out pairs scored by the in-memory model and by the reloaded folder
FORMAT = "chat template of the prompt with the generation header, the response, the end-of-turn token; nothing after"


@dataclass
class RewardDataSection(PreferenceDataSection):
    margin: bool = True  # use the pairs' margin in the loss (pairs without one get 0)
    margin_scale: float = 1.0

    def problems(self) -> list[Problem]:
        return super().problems() + problem_if(self.margin_scale < 0, "margin_scale", self.margin_scale, "must be >= 0")


@dataclass
class RewardStageConfig:
    name: str = "tiny"
    output_dir: str = "runs"
    resume: bool = True
    # The SFT run the reward model starts from (its adapter merged into the full-precision base); "" = model.path.
    sft_run: str = "runs/tiny/sft"
    # path "" = the SFT run's base model. quantization.bits: 4 = QLoRA on the merged SFT model (GPU configs).
    model: RunModelSection = field(default_factory=RunModelSection)
    data: RewardDataSection = field(default_factory=RewardDataSection)
    # Arguments of trl.RewardConfig (max_length also bounds the scoring format: longer responses are cut).
    training: dict[str, Any] = trl_section("trl.RewardConfig")
    calibration_bins: int = 5
    # Score every held-out pair once more before training (the SFT backbone with the new, random score head): a
    # control beside chance (0.5), at the cost of a pass over the held-out pairs in the training dtype.
    score_before_training: bool = True

    @property
    def run_dir(self) -> Path:
        return Path(self.output_dir) / self.name / STAGE

    def problems(self) -> list[Problem]:
        found = problem_if(not self.sft_run and not self.model.path, "model.path", self.model.path,
                           "with sft_run: \"\" set model.path to the base model folder")
        max_length = self.training.get("max_length", 1024)
        found += problem_if(not isinstance(max_length, int) or max_length < 32, "training.max_length", max_length,
                            "a token count >= 32 (prompt + response are cut to fit)")
        found += problem_if(self.calibration_bins < 2, "calibration_bins", self.calibration_bins, "at least 2")
        found += pair_sampler_problems(self.training)
        if self.model.tuning == "full" and self.sft_run and self.model.quantization.bits:
            found.append(Problem("model.quantization.bits", "full fine-tuning cannot update quantized weights; "
                                 "set quantization.bits: null", self.model.quantization.bits))
        return found


# --------------------------------------------------------------------------- data


def response_text(value: Any) -> Any:
    return value if isinstance(value, str) else [m.model_dump() for m in value]


def prompt_messages(pair: Any) -> Any:
    return pair.prompt if isinstance(pair.prompt, str) else [m.model_dump() for m in pair.prompt]


def to_reward_records(pairs: list[Any], tokenizer: Any, max_length: int, margin_scale: float | None) -> list[dict]:
    """Pairs -> TRL's processed preference format (chosen_ids, rejected_ids[, margin]) in the scoring format."""
    from lexalign.modeling import reward_input_ids

    records = []
    cut = 0
    for pair in pairs:
        record: dict[str, Any] = {}
        for side in ("chosen", "rejected"):
            full = reward_input_ids(tokenizer, prompt_messages(pair), response_text(getattr(pair, side)))
            record[f"{side}_ids"] = reward_input_ids(tokenizer, prompt_messages(pair),
                                                     response_text(getattr(pair, side)), max_length)
            cut += len(full) > max_length
        if margin_scale is not None:
            record["margin"] = float(pair.margin or 0.0) * margin_scale
        records.append(record)
    if cut:
        # A cut prompt loses its start (the system prompt and the question), a cut response its end: a model that
        # cannot see what was asked, or where two answers differ, learns nothing from the pair (measured: held-out
        # accuracy at chance with 256 tokens, bench/RESULTS.md).
        logger.warning("%d of %d answers are longer than training.max_length=%d tokens with their prompt and are "
                       "cut (the prompt's start or the answer's end is lost); raise training.max_length to keep "
                       "them whole", cut, 2 * len(records), max_length)
    return records


# --------------------------------------------------------------------------- model


def merged_sft_classifier(base: Path, adapter: Path | None, dtype: Any, device: Any) -> Any:
    """The SFT policy as a one-label sequence classifier: base (full precision) + SFT adapter merged, new head."""
    from transformers import AutoModelForSequenceClassification

    model = AutoModelForSequenceClassification.from_pretrained(str(base), num_labels=1, dtype=dtype).to(device)
    return merge_sft_adapter(model, adapter) if adapter is not None else model


def merge_sft_adapter(model: Any, adapter: Path) -> Any:
    """Merge a CAUSAL_LM adapter into a classifier's backbone: its LoRA weights sit in the layers both share,
    so it loads with a task-less config. Only into full-precision weights, never into a 4-bit model."""
    from peft import PeftConfig, PeftModel

    peft_config = PeftConfig.from_pretrained(str(adapter))
    peft_config.task_type = None
    logger.info("merging the SFT adapter %s into the reward model's backbone (full precision)", adapter)
    return PeftModel.from_pretrained(model, str(adapter), config=peft_config).merge_and_unload()


def load_reward_init(config: RewardStageConfig, base: Path, adapter: Path | None, run: RunDir,
                     tokenizer: Any) -> tuple[Any, Any, Any]:
    """(model, device, dtype): the model the reward LoRA (or full tuning) starts from."""
    from transformers import AutoModelForSequenceClassification

    from lexalign.modeling import choose_compute_dtype, choose_device, load_model

    section = dataclasses.replace(config.model, path=str(base))
    if adapter is not None and config.model.quantization.bits:
        init_dir = run.path / "init"
        if not (init_dir / "config.json").is_file():
            device = choose_device(config.model.device)
            dtype = choose_compute_dtype(device, "auto" if device.type == "cuda" else "float32")
            logger.info("merging the SFT adapter into the full-precision base -> %s (loaded %d-bit from there)",
                        init_dir, config.model.quantization.bits)
            merged = merged_sft_classifier(base, adapter, dtype, device)
            merged.save_pretrained(str(init_dir))
            tokenizer.save_pretrained(str(init_dir))
            del merged
        section = dataclasses.replace(section, path=str(init_dir))
        adapter = None
    model, device, dtype = load_model(section, AutoModelForSequenceClassification, num_labels=1)
    if adapter is not None:
        model = merge_sft_adapter(model, adapter)
    model.config.pad_token_id = tokenizer.pad_token_id
    return model, device, dtype


def save_merged(trainer: Any, config: RewardStageConfig, run: RunDir, base: Path, sft_adapter: Path | None,
                tokenizer: Any, out: Path, compute_dtype: Any) -> None:
    """Write the trained reward model as one full-precision sequence-classification folder; ``compute_dtype`` (the
    dtype it was trained in) is recorded so that consumers score it the same way (``load_reward_model``)."""
    import shutil

    from peft import PeftModel

    model = trainer.model
    if isinstance(model, PeftModel):
        if config.model.quantization.bits:
            # Never merge into 4-bit weights: re-create the full-precision init and merge the trained LoRA there.
            import torch
            from transformers import AutoModelForSequenceClassification

            adapter_dir = run.path / "reward-adapter"
            model.save_pretrained(str(adapter_dir))
            init = run.path / "init" if sft_adapter is not None else base
            dtype = torch.float32 if not torch.cuda.is_available() else torch.bfloat16
            full = AutoModelForSequenceClassification.from_pretrained(str(init), num_labels=1, dtype=dtype)
            full.config.pad_token_id = tokenizer.pad_token_id
            model = PeftModel.from_pretrained(full, str(adapter_dir)).merge_and_unload()
            shutil.rmtree(adapter_dir, ignore_errors=True)
        else:
            model = model.merge_and_unload()
    model.config.pad_token_id = tokenizer.pad_token_id
    model.save_pretrained(str(out))
    tokenizer.save_pretrained(str(out))
    (out / "lexalign_reward.json").write_text(json.dumps({
        "format": FORMAT, "max_length": config.training.get("max_length", 1024),
        "eos_token": tokenizer.eos_token, "pad_token": tokenizer.pad_token,
        "scoring": "lexalign.modeling.reward_input_ids / reward_scores",
        "compute_dtype": str(compute_dtype).removeprefix("torch."),
    }, indent=2) + "\n", encoding="utf-8")
    if (run.path / "init").is_dir():
        shutil.rmtree(run.path / "init", ignore_errors=True)


# --------------------------------------------------------------------------- evaluation


def pairwise_accuracy(chosen: list[float], rejected: list[float]) -> float | None:
    """Share of pairs where the chosen response scores higher (ties count one half)."""
    if not chosen:
        return None
    return sum(1.0 if c > r else 0.5 if c == r else 0.0 for c, r in zip(chosen, rejected)) / len(chosen)


def accuracy_by_source(pairs: list[Any], chosen: list[float], rejected: list[float]) -> dict[str, dict[str, Any]]:
    """Pairwise accuracy per ``meta.source`` of the held-out pairs (``acord``: lawyers' ratings of retrieved
    clauses; ``candidates``: the policy's own answers, ranked by gold labels or lawyers), each with its 95 %
    Wilson interval; chance is 0.5 for every pair. One number over a mix would hide a judge that is good on one
    kind of pair and at chance on the other."""
    from lexalign.evaluation.uncertainty import wilson_interval

    groups: dict[str, list[tuple[float, float]]] = {}
    for pair, c, r in zip(pairs, chosen, rejected):
        groups.setdefault(str((pair.meta or {}).get("source") or "unknown"), []).append((c, r))
    found = {}
    for source, scores in sorted(groups.items()):
        accuracy = pairwise_accuracy([c for c, _ in scores], [r for _, r in scores])
        low, high = wilson_interval(accuracy * len(scores), len(scores))
        found[source] = {"pairs": len(scores), "accuracy": accuracy, "ci95": [low, high], "chance": 0.5}
    return found


def bradley_terry_loss(gaps: list[float]) -> float | None:
    """Mean -log sigmoid(r_chosen - r_rejected) over held-out pairs (no margin term)."""
    if not gaps:
        return None
    return sum(math.log1p(math.exp(-g)) if g > -30 else -g for g in gaps) / len(gaps)


def calibration_table(gaps: list[float], bins: int) -> list[dict[str, float]]:
    """Pairs bucketed by |score gap| (equal-count bins): predicted P(model's order is the lawyers') under
    Bradley-Terry, sigmoid(|gap|), vs. the empirical share of pairs where the model's order is the lawyers'."""
    ranked = sorted(gaps, key=abs)
    if not ranked:
        return []
    size = math.ceil(len(ranked) / bins)
    table = []
    for start in range(0, len(ranked), size):
        chunk = ranked[start:start + size]
        table.append({
            "abs_gap_low": abs(chunk[0]), "abs_gap_high": abs(chunk[-1]), "pairs": len(chunk),
            "predicted": sum(1 / (1 + math.exp(-abs(g))) for g in chunk) / len(chunk),
            "agreement": sum(1.0 if g > 0 else 0.5 if g == 0 else 0.0 for g in chunk) / len(chunk),
        })
    return table


def expected_calibration_error(table: list[dict[str, float]]) -> float | None:
    total = sum(row["pairs"] for row in table)
    if not total:
        return None
    return sum(row["pairs"] * abs(row["predicted"] - row["agreement"]) for row in table) / total


def plot_calibration(table: list[dict[str, float]], path: Path, title: str) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5.6, 4.4))
    ax.plot([0.5, 1.0], [0.5, 1.0], linestyle="--", color="grey", label="perfectly calibrated")
    xs = [row["predicted"] for row in table]
    ys = [row["agreement"] for row in table]
    ax.plot(xs, ys, marker="o", label="held-out pairs")
    for row, x, y in zip(table, xs, ys):
        ax.annotate(f"n={row['pairs']}", (x, y), fontsize=7, textcoords="offset points", xytext=(4, 4))
    ax.set_xlabel("predicted agreement, sigmoid(|score gap|), equal-count bins of |gap|")
    ax.set_ylabel("empirical agreement with lawyers")
    ax.set_ylim(0, 1.05)
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def score_pairs(model: Any, tokenizer: Any, pairs: list[Any], max_length: int) -> tuple[list[float], list[float]]:
    from lexalign.modeling import reward_scores

    prompts = [prompt_messages(p) for p in pairs]
    chosen = reward_scores(model, tokenizer, prompts, [response_text(p.chosen) for p in pairs], max_length)
    rejected = reward_scores(model, tokenizer, prompts, [response_text(p.rejected) for p in pairs], max_length)
    return chosen, rejected


# --------------------------------------------------------------------------- stage


def run_reward(config_path: str | Path | None, overrides: list[str]) -> Path:
    config = load_config(RewardStageConfig, config_path, overrides)
    with writes_to(config.run_dir):
        return train_reward(config)


def check_inputs(config: RewardStageConfig) -> tuple[Path, Path | None, list[Any], list[Any], bool]:
    """Everything that can fail before a model loads: SFT run, base folder, every preference line.

    Returns (base model folder, SFT adapter or None, train pairs, held-out pairs, split_by_prompt_used).
    """
    from lexalign.modeling import ModelLoadError, check_model_dir, trained_policy

    if config.sft_run:
        policy = trained_policy(config.sft_run, "sft_run", config.model.path)
        base, adapter = policy.base, policy.adapter
    else:
        base, adapter = check_model_dir(config.model.path), None
    if config.model.tuning == "full" and adapter is None and config.model.quantization.bits:
        raise ModelLoadError("full fine-tuning cannot update quantized weights; set model.quantization.bits: null")
    train, valid, split = config.data.load()
    return base, adapter, train, valid, split


def train_reward(config: RewardStageConfig) -> Path:
    from datasets import Dataset
    from transformers import set_seed
    from trl import RewardConfig, RewardTrainer

    from lexalign.data.paths import resolve_data_path
    from lexalign.modeling import choose_compute_dtype, choose_device, load_reward_model, load_tokenizer, lora_config
    from lexalign.training import (
        checkpoint_step,
        find_resume_checkpoint,
        make_trl_args,
        metrics_callback,
        mixed_precision,
        plot_training,
        trim_metrics_after,
    )

    base, sft_adapter, train_pairs, valid_pairs, split = check_inputs(config)
    inputs = {"base_model": base, **({"sft_adapter": sft_adapter} if sft_adapter else {})}
    inputs.update({f"train_data_{i}": resolve_data_path(v) for i, v in enumerate(config.data.train)})
    inputs.update({f"valid_data_{i}": resolve_data_path(v) for i, v in enumerate(config.data.valid)})
    run = RunDir(config.run_dir, STAGE, config, inputs=inputs, parent=Path(config.sft_run) if config.sft_run else None)
    checkpoint = find_resume_checkpoint(run, config.resume)
    run.start()
    if is_main_process():  # metrics after the resumed step (or all, when starting over) are logged again
        if checkpoint:
            trim_metrics_after(run, checkpoint_step(checkpoint))
        else:  # else a run started over (resume: false, or no whole checkpoint) appends to the old steps
            (run.path / "metrics.jsonl").unlink(missing_ok=True)

    tokenizer = load_tokenizer(sft_adapter or base)

    max_length = int(config.training.get("max_length", 1024))
    margin_scale = config.data.margin_scale if config.data.margin else None
    train_keys, valid_keys = {prompt_key(p) for p in train_pairs}, {prompt_key(p) for p in valid_pairs}
    shared = len(train_keys & valid_keys)
    if shared:
        logger.warning("%d held-out prompts also appear in the training pairs: held-out accuracy is optimistic", shared)
    train_dataset = Dataset.from_list(to_reward_records(train_pairs, tokenizer, max_length, margin_scale))
    valid_dataset = Dataset.from_list(to_reward_records(valid_pairs, tokenizer, max_length, margin_scale))
    logger.info("data: %d train pairs (%d prompts), %d held-out pairs (%d prompts)%s; margin %s",
                len(train_pairs), len(train_keys), len(valid_pairs), len(valid_keys),
                " split by meta.prompt_id" if split else "", f"x{margin_scale}" if margin_scale is not None else "off")

    device = choose_device(config.model.device)
    args = make_trl_args(RewardConfig, config.training, run, max_length=max_length, **mixed_precision(
        config.training, choose_compute_dtype(device, config.model.quantization.compute_dtype)))
    set_seed(args.seed)  # the new score head is drawn when the model loads
    model, device, dtype = load_reward_init(config, base, sft_adapter, run, tokenizer)
    peft_config = None
    if config.model.tuning == "lora":
        if config.model.quantization.bits:
            from peft import prepare_model_for_kbit_training

            model = prepare_model_for_kbit_training(
                model, use_gradient_checkpointing=bool(config.training.get("gradient_checkpointing", False)))
        lora = dataclasses.replace(config.model.lora,
                                   modules_to_save=sorted(set(config.model.lora.modules_to_save) | {"score"}))
        peft_config = lora_config(lora, "SEQ_CLS")

    trainer = RewardTrainer(
        model=model,
        args=args,
        train_dataset=train_dataset,
        eval_dataset=valid_dataset,
        processing_class=tokenizer,
        peft_config=peft_config,
        callbacks=[metrics_callback(run, perplexity=False)],
    )
    if peft_config is not None:
        trainer.model.print_trainable_parameters()

    initial: dict[str, Any] = {}
    not_scored = "not measured (resumed)" if checkpoint else "not measured (score_before_training: false)"
    if not checkpoint and config.score_before_training:  # the same measure as after training, every held-out pair
        trainer.model.eval()
        logger.info("scoring %d held-out pairs before training", len(valid_pairs))
        before = score_pairs(trainer.model, tokenizer, valid_pairs, max_length)
        logger.info("held-out pairs scored before training")
        initial = {"accuracy": pairwise_accuracy(*before),
                   "loss": bradley_terry_loss([c - r for c, r in zip(*before)]),
                   "by_source": accuracy_by_source(valid_pairs, *before)}
        run.log_metrics({"step": 0, "eval_accuracy": initial["accuracy"], "eval_loss": initial["loss"]})
    trainer.train(resume_from_checkpoint=checkpoint)

    trainer.model.eval()
    probe = valid_pairs[:RELOAD_CHECK_PAIRS]
    memory_chosen, memory_rejected = score_pairs(trainer.model, tokenizer, probe, max_length)
    global_step = trainer.state.global_step
    out = run.path / "model"
    trained_in = "bfloat16" if args.bf16 else "float16" if args.fp16 else dtype  # autocast, else the weights'
    save_merged(trainer, config, run, base, sft_adapter, tokenizer, out, trained_in)
    del trainer, model

    # Everything reported comes from the saved folder, reloaded the way every consumer loads it.
    saved, saved_tokenizer = load_reward_model(out, config.model.device)
    logger.info("scoring %d held-out pairs with the saved reward model", len(valid_pairs))
    chosen, rejected = score_pairs(saved, saved_tokenizer, valid_pairs, max_length)
    n = len(probe)
    reload_diff = max((abs(a - b) for a, b in zip(memory_chosen + memory_rejected, chosen[:n] + rejected[:n])),
                      default=0.0)
    gaps = [c - r for c, r in zip(chosen, rejected)]
    table = calibration_table(gaps, config.calibration_bins)
    accuracy = pairwise_accuracy(chosen, rejected)
    by_source = accuracy_by_source(valid_pairs, chosen, rejected)
    for source, row in by_source.items():
        before_row = initial.get("by_source", {}).get(source, {})
        logger.info("held-out %s pairs: pairwise accuracy %.3f [%.3f, %.3f] (n %d, chance 0.5; before training %s)",
                    source, row["accuracy"], row["ci95"][0], row["ci95"][1], row["pairs"],
                    f"{before_row['accuracy']:.3f}" if before_row else not_scored)
    with (run.path / "scores_valid.jsonl").open("w", encoding="utf-8") as handle:
        for pair, c, r in zip(valid_pairs, chosen, rejected):
            handle.write(json.dumps({"prompt_id": prompt_key(pair), "source": (pair.meta or {}).get("source"),
                                     "chosen_score": c, "rejected_score": r, "margin": pair.margin}) + "\n")
    run.log_metrics({"step": global_step, "eval_accuracy": accuracy, "eval_loss": bradley_terry_loss(gaps)})
    plot_training(run, f"Reward model ({config.model.mode}) from {config.sft_run or base}",
                  keys=("loss", "eval_loss", "accuracy", "eval_accuracy"))
    plot_calibration(table, run.path / "calibration.png",
                     f"Reward model calibration, {len(valid_pairs)} held-out pairs (acc {accuracy:.3f})")

    results = {
        "pairwise_accuracy": accuracy,
        "initial_pairwise_accuracy": initial.get("accuracy"),
        "eval_loss": bradley_terry_loss(gaps),
        "initial_eval_loss": initial.get("loss"),
        "accuracy_by_source": by_source,
        "initial_accuracy_by_source": initial.get("by_source"),
        "mean_score_gap": sum(gaps) / len(gaps) if gaps else None,
        "calibration": table,
        "expected_calibration_error": expected_calibration_error(table),
        "reload_max_abs_diff": reload_diff,
        "global_step": global_step,
        "train_pairs": len(train_pairs),
        "train_pairs_by_origin": pairs_by_origin(train_pairs),
        "valid_pairs": len(valid_pairs),
        "valid_prompts": len(valid_keys),
        "valid_prompts_also_in_train": shared,
        "valid_split": "by meta.prompt_id" if split else "valid files",
        "margin_scale": margin_scale,
        "mode": config.model.mode,
        "init": f"SFT run {config.sft_run} merged into {base}" if config.sft_run else str(base),
        "device": str(device),
        "compute_dtype": str(dtype).removeprefix("torch."),
    }
    write_model_card(out, config, results, base)
    run.complete(outputs={"model": "model", "calibration_plot": "calibration.png", "scores": "scores_valid.jsonl"},
                 results=results)
    return run.path


def write_model_card(folder: Path, config: RewardStageConfig, results: dict[str, Any], base: Path) -> None:
    initial = results.get("initial_pairwise_accuracy")
    ece = results.get("expected_calibration_error")
    lines = [
        f"# lexalign reward model: {config.name}",
        "",
        "A Bradley-Terry reward model for contract-review answers, trained on lawyers' preference pairs with",
        "lexalign's reward stage (TRL RewardTrainer). Load it with `AutoModelForSequenceClassification` (one label);",
        f"score texts in this format: {FORMAT} (`lexalign.modeling.reward_input_ids`).",
        "",
        f"- initialised from: {results['init']}",
        f"- method: {config.model.mode}"
        + (f" (LoRA r={config.model.lora.r}, alpha={config.model.lora.alpha}, score head trained and saved), merged"
           if config.model.tuning == "lora" else ""),
        f"- data: {', '.join(config.data.train)} ({results['train_pairs']} pairs); held-out "
        f"{', '.join(config.data.valid) or 'split of the train pairs by prompt'} ({results['valid_pairs']} pairs, "
        f"{results['valid_prompts']} prompts)",
        f"- margin in the loss: {'star/rank gap x ' + str(results['margin_scale']) if results['margin_scale'] is not None else 'no'}",
        f"- held-out pairwise accuracy: {results['pairwise_accuracy']:.3f}"
        + (f" (before training {initial:.3f})" if initial is not None else ""),
        f"- expected calibration error: {ece:.3f}" if ece is not None else "- calibration: n/a",
        f"- steps: {results['global_step']}, device {results['device']}, compute dtype {results['compute_dtype']}",
        "",
        "Data attribution: ACORD (The Atticus Project, CC BY 4.0) for the shipped pairs.",
        "Scores rank answers; they are not a judgement of legal correctness. Not legal advice.",
        "",
    ]
    (folder / "README.md").write_text("\n".join(lines), encoding="utf-8")
