"""DPO stage: align the SFT policy with lawyers' preference pairs, offline, with TRL's DPOTrainer.

    lexalign dpo --config configs/dpo.yaml [key=value ...]

Reads top to bottom: config -> inputs checked (SFT run, preference files, reward run) -> tokenizer -> data ->
model -> trainer -> train -> save -> evaluate (held-out DPO margins, reward-model win rate vs SFT) -> card.

Policy and reference (``lexalign.rlhf.policy``): the base is loaded once (4-bit for QLoRA or full precision,
per ``model:``), the SFT adapter is loaded as the trainable adapter, and TRL's DPOTrainer (``ref_model=None``
with a PeftModel) adds a frozen copy of it named ``ref``: the reference is exactly the SFT policy, with no
second model in memory. The stage checks this: before training the policy's and the reference's log-probs
on held-out pairs are equal (``reference_check.initial_max_abs_diff``), and after training the reference
has not moved (``reference_check.drift_max_abs_diff``); so the held-out numbers before training follow from the
evaluation after it (``evaluation_before_training``) instead of a second pass. ``beta`` and ``loss_type`` are
TRL's DPOConfig fields in ``training``. The output adapter sits on the SFT base with the same manifest outputs
as SFT (``adapter``, ``base_model``, ``lora_rank``), so ``lexalign export`` and ``lexalign serve`` take it
unchanged.
"""

from __future__ import annotations

import gc
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lexalign.config import Problem, load_config, problem_if, trl_section
from lexalign.modeling import RunModelSection
from lexalign.rlhf.winrate import WinRateSection
from lexalign.runs import RunDir, is_main_process, writes_to
from lexalign.training import PreferenceDataSection, pair_sampler_problems, prompt_key

logger = logging.getLogger(__name__)

STAGE = "dpo"
DPO_LOSSES = {"sigmoid", "hinge", "ipo", "exo_pair", "nca_pair", "robust", "bco_pair", "sppo_hard", "aot",
              "aot_unpaired", "apo_zero", "apo_down", "discopop", "sft", "sigmoid_norm"}
REWARD_METRICS = ("rewards/margins", "eval_rewards/margins", "rewards/accuracies", "eval_rewards/accuracies")


@dataclass
class DPOStageConfig:
    name: str = "tiny"
    output_dir: str = "runs"
    resume: bool = True
    sft_run: str = "runs/tiny/sft"  # a completed SFT run: its adapter is trained further
    # path "" = the SFT run's base model. lora: only used when SFT trained the full model (a new adapter on it).
    model: RunModelSection = field(default_factory=RunModelSection)
    data: PreferenceDataSection = field(default_factory=PreferenceDataSection)
    # Arguments of trl.DPOConfig: beta, loss_type (a list, e.g. [sigmoid] or [ipo]), max_length, ...
    training: dict[str, Any] = trl_section("trl.DPOConfig")
    # Reward-model win rate of the DPO policy against the SFT policy (reward_run "" = skipped).
    eval: WinRateSection = field(default_factory=WinRateSection)

    @property
    def run_dir(self) -> Path:
        return Path(self.output_dir) / self.name / STAGE

    def problems(self) -> list[Problem]:
        found = problem_if(not self.sft_run, "sft_run", self.sft_run, "give the SFT run directory (e.g. runs/tiny/sft)")
        losses = self.training.get("loss_type", ["sigmoid"])
        unknown = [loss for loss in losses if loss not in DPO_LOSSES]
        found += problem_if(bool(unknown), "training.loss_type", losses,
                            f"unknown loss {unknown}; one or more of {', '.join(sorted(DPO_LOSSES))}")
        beta = self.training.get("beta", 0.1)
        found += problem_if(beta <= 0, "training.beta", beta, "the KL strength must be positive (e.g. 0.1)")
        found += problem_if(bool(self.training.get("sync_ref_model")), "training.sync_ref_model", True,
                            "not supported with LoRA (the reference is the frozen SFT adapter); remove it")
        found += problem_if(self.model.tuning != "lora", "model.tuning", self.model.tuning,
                            "DPO trains a LoRA adapter (the reference shares the base); use lora")
        return found + pair_sampler_problems(self.training)


# --------------------------------------------------------------------------- data


def to_dpo_records(pairs: list[Any]) -> list[dict[str, Any]]:
    """Pairs -> TRL's preference format (conversational or standard), without meta/margin."""
    def dump(value: Any) -> Any:
        return value if isinstance(value, str) else [m.model_dump() for m in value]

    return [{"prompt": dump(p.prompt), "chosen": dump(p.chosen), "rejected": dump(p.rejected)} for p in pairs]


# --------------------------------------------------------------------------- reference check


def completion_logps(model: Any, batch: dict[str, Any]) -> Any:
    """Summed log-probs of the completion tokens of a DPO batch (chosen rows, then rejected rows)."""
    import torch
    from trl.trainer.utils import selective_log_softmax

    with torch.no_grad():
        logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], use_cache=False).logits
    logps = selective_log_softmax(logits[:, :-1].float(), batch["input_ids"][:, 1:])
    return (logps * batch["completion_mask"][:, 1:]).sum(1)


def reference_logps(trainer: Any, batch: dict[str, Any]) -> Any:
    import torch

    chosen, rejected = trainer.compute_ref_log_probs(trainer.model, batch)
    return torch.cat([chosen, rejected]).float()


def check_batch(trainer: Any, n: int = 8) -> dict[str, Any]:
    dataset = trainer.eval_dataset
    rows = [dataset[i] for i in range(min(n, len(dataset)))]
    batch = trainer.data_collator(rows)
    device = trainer.accelerator.device
    return {k: v.to(device) if hasattr(v, "to") else v for k, v in batch.items()}


# --------------------------------------------------------------------------- stage


def run_dpo(config_path: str | Path | None, overrides: list[str]) -> Path:
    config = load_config(DPOStageConfig, config_path, overrides)
    with writes_to(config.run_dir):
        return train_dpo(config)


def check_inputs(config: DPOStageConfig) -> tuple[Any, list[Any], list[Any], Path | None]:
    """Everything that can fail before a model loads: (SFT policy, train pairs, held-out pairs, reward model dir)."""
    from lexalign.modeling import trained_policy
    from lexalign.rlhf.policy import check_same_tokenizer, reward_model_dir

    sft = trained_policy(config.sft_run, "sft_run", config.model.path)
    train, valid, _ = config.data.load()
    reward_dir = None
    if config.eval.reward_run and config.eval.num_prompts:
        reward_dir = reward_model_dir(config.eval.reward_run, "eval.reward_run")
        check_same_tokenizer(sft.tokenizer_dir, reward_dir, "eval.reward_run")
    return sft, train, valid, reward_dir


def train_dpo(config: DPOStageConfig) -> Path:
    from datasets import Dataset
    from trl import DPOConfig, DPOTrainer

    from lexalign.data.paths import resolve_data_path
    from lexalign.modeling import choose_compute_dtype, choose_device, load_tokenizer
    from lexalign.rlhf.policy import load_policy, save_policy_adapter
    from lexalign.rlhf.winrate import trained_run_winrate
    from lexalign.training import (
        checkpoint_step,
        find_resume_checkpoint,
        make_trl_args,
        metrics_callback,
        mixed_precision,
        pairs_by_origin,
        plot_training,
        trim_metrics_after,
    )

    sft, train_pairs, valid_pairs, reward_dir = check_inputs(config)
    inputs = {"base_model": sft.base, **({"sft_adapter": sft.adapter} if sft.adapter else {})}
    inputs.update({f"train_data_{i}": resolve_data_path(v) for i, v in enumerate(config.data.train)})
    inputs.update({f"valid_data_{i}": resolve_data_path(v) for i, v in enumerate(config.data.valid)})
    if reward_dir is not None:
        inputs["reward_model"] = reward_dir
    run = RunDir(config.run_dir, STAGE, config, inputs=inputs, parent=sft.run)
    checkpoint = find_resume_checkpoint(run, config.resume)
    device = choose_device(config.model.device)
    args = make_trl_args(DPOConfig, config.training, run, **mixed_precision(
        config.training, choose_compute_dtype(device, config.model.quantization.compute_dtype)))
    run.start()
    if is_main_process():  # metrics after the resumed step (or all, when starting over) are logged again
        if checkpoint:
            trim_metrics_after(run, checkpoint_step(checkpoint))
        else:  # else a run started over (resume: false, or no whole checkpoint) appends to the old steps
            (run.path / "metrics.jsonl").unlink(missing_ok=True)

    tokenizer = load_tokenizer(sft.tokenizer_dir)

    train_dataset = Dataset.from_list(to_dpo_records(train_pairs))
    valid_dataset = Dataset.from_list(to_dpo_records(valid_pairs))
    shared = len({prompt_key(p) for p in train_pairs} & {prompt_key(p) for p in valid_pairs})
    if shared:
        logger.warning("%d held-out prompts also appear in the training pairs", shared)
    logger.info("data: %d train pairs, %d held-out pairs", len(train_dataset), len(valid_dataset))

    from transformers import set_seed

    set_seed(int(config.training.get("seed", 42)))  # before the trained adapter is set up: same seed, same run
    model, device, dtype, peft_config = load_policy(config.model, sft, bool(config.training.get("gradient_checkpointing")))
    trainer = DPOTrainer(
        model=model,
        ref_model=None,
        args=args,
        train_dataset=train_dataset,
        eval_dataset=valid_dataset,
        processing_class=tokenizer,
        peft_config=peft_config,
        callbacks=[metrics_callback(run, perplexity=False)],
    )
    adapters = list(trainer.model.peft_config)
    logger.info("adapters: %s (trained: default; reference: %s)", adapters,
                "ref = frozen SFT adapter" if "ref" in adapters else "adapter disabled")

    batch = check_batch(trainer)
    reference_before = reference_logps(trainer, batch)
    initial_diff = (completion_logps(trainer.model, batch) - reference_before).abs().max().item()
    reference_weights = adapter_tensors(trainer.model, "ref" if "ref" in adapters else "default")
    initial_weight_diff = reference_weight_gap(trainer.model, reference_weights, "ref" in adapters)
    if checkpoint:  # after the reference check above: that compares the policy and the reference before training
        load_trained_adapter(trainer.model, checkpoint)
    trainer.train(resume_from_checkpoint=checkpoint)
    final_eval = trainer.evaluate()
    drift = (reference_logps(trainer, batch) - reference_before).abs().max().item()
    weight_drift = (largest_difference(adapter_tensors(trainer.model, "ref"), reference_weights)
                    if "ref" in adapters else 0.0)
    initial_eval = evaluation_before_training(final_eval, args, initial_weight_diff, weight_drift)
    if initial_eval:
        run.log_metrics({"step": 0, **initial_eval})

    out = run.path / "adapter"
    rank = save_policy_adapter(trainer.model, tokenizer, out)
    global_step = trainer.state.global_step
    plot_training(run, f"DPO ({config.model.mode}) from {config.sft_run}")
    from lexalign.plots import plot_curves
    from lexalign.runs import read_metrics

    plot_curves(read_metrics(run.path), list(REWARD_METRICS), run.path / "rewards.png",
                f"DPO implicit rewards (beta={args.beta}, loss {'+'.join(args.loss_type)})")
    del trainer, model
    gc.collect()

    results: dict[str, Any] = {
        "eval_loss": final_eval.get("eval_loss"),
        "initial_eval_loss": initial_eval.get("eval_loss"),
        "eval_rewards_margins": final_eval.get("eval_rewards/margins"),
        "initial_eval_rewards_margins": initial_eval.get("eval_rewards/margins"),
        "eval_rewards_accuracies": final_eval.get("eval_rewards/accuracies"),
        "eval_logp_margin": _logp_margin(final_eval),
        "initial_eval_logp_margin": _logp_margin(initial_eval),
        "reference": "frozen copy of the SFT adapter ('ref')" if "ref" in adapters else "adapter disabled",
        "reference_check": {"initial_max_abs_diff": initial_diff, "drift_max_abs_diff": drift,
                            "sequences": int(batch["input_ids"].shape[0]),
                            "initial_adapter_max_abs_diff": initial_weight_diff,
                            "adapter_drift_max_abs_diff": weight_drift},
        "beta": args.beta,
        "loss_type": list(args.loss_type),
        "global_step": global_step,
        "train_pairs": len(train_pairs),
        "train_pairs_by_origin": pairs_by_origin(train_pairs),
        "valid_pairs": len(valid_pairs),
        "valid_pairs_by_origin": pairs_by_origin(valid_pairs),
        "mode": config.model.mode,
        "device": str(device),
        "compute_dtype": str(dtype).removeprefix("torch."),
    }
    if reward_dir is not None:
        results["winrate_vs_sft"] = trained_run_winrate(run.path, sft, out, reward_dir, config.eval, config.model.device)
    write_model_card(out, config, results, sft)
    run.complete(outputs={"adapter": "adapter", "base_model": str(sft.base), "lora_rank": rank}, results=results)
    return run.path


def adapter_tensors(model: Any, name: str) -> dict[str, Any]:
    """The LoRA weights of one adapter as fp32 copies, keyed without the adapter's name."""
    marker = f".{name}."
    return {key.replace(marker, "."): param.detach().float().clone()
            for key, param in model.named_parameters() if marker in key and ".lora_" in key}


def reference_weight_gap(model: Any, reference: dict[str, Any], has_ref_adapter: bool) -> float:
    """Largest weight difference between the policy and its reference before training: the trained adapter
    against the frozen copy ``ref``; without one (a new LoRA on a fully fine-tuned SFT model, reference = adapter
    disabled) the new adapter's lora_B, whose zeros make the policy the reference."""
    if not has_ref_adapter:
        return max((w.abs().max().item() for k, w in reference.items() if ".lora_B." in k), default=0.0)
    return largest_difference(adapter_tensors(model, "default"), reference)


def largest_difference(weights: dict[str, Any], other: dict[str, Any]) -> float:
    """Largest absolute difference between two sets of the same tensors; inf when they hold different tensors."""
    if weights.keys() != other.keys():
        return float("inf")
    return max(((weights[k] - w).abs().max().item() for k, w in other.items()), default=0.0)


def evaluation_before_training(final_eval: dict[str, Any], args: Any, initial_diff: float,
                               drift: float) -> dict[str, float]:
    """The held-out evaluation of the policy before training, read off the evaluation after it.

    Why not evaluate twice: at the start the policy *is* the reference (``initial_diff``: the largest difference of
    their adapter weights; ``drift``: how far the reference's moved in training), and the final evaluation
    measures the reference's log-probs of every held-out completion beside the policy's (TRL's ``rewards/* = beta *
    (logps/* - ref logps/*)``, both averaged the same way), so the policy's log-probs before training are
    ``logps/* - rewards/* / beta``, its implicit rewards 0 and its sigmoid loss ln 2. The same numbers as a second
    pass over the held-out pairs (identical to 1e-9 on the demo's 32 pairs), ~40 s less on 2 cores. Empty when the
    premise fails. (Weights, not the log-prob checks of ``reference_check``: in bf16 those differ by the rounding of
    their own code paths, 0.03 before and 0.2 after training, while TRL's evaluation at step 0 gives exactly 0.)"""
    import math

    tolerance = 1e-6  # weights, exact copies: the log-prob checks differ by bf16 rounding of their own paths
    beta = float(args.beta)
    if "eval_rewards/chosen" not in final_eval:
        return {}
    if initial_diff > tolerance or drift > tolerance:
        logger.warning("held-out evaluation before training not derived: the policy's and the reference's adapter "
                       "weights differed (max |diff| %.2g at the start; the reference moved %.2g)", initial_diff, drift)
        return {}
    before = {f"eval_logps/{side}": final_eval[f"eval_logps/{side}"] - final_eval[f"eval_rewards/{side}"] / beta
              for side in ("chosen", "rejected")}
    before.update({"eval_rewards/chosen": 0.0, "eval_rewards/rejected": 0.0, "eval_rewards/margins": 0.0,
                   "eval_rewards/accuracies": 0.0})  # TRL counts a strict win: 0 when both rewards are 0
    plain_sigmoid = (list(args.loss_type) == ["sigmoid"] and not args.use_weighting
                     and args.f_divergence_type == "reverse_kl" and list(args.loss_weights or [1.0]) == [1.0])
    if plain_sigmoid:  # other losses have other values at a zero margin; they are left unreported
        before["eval_loss"] = math.log(2.0)  # -log sigmoid(0), label smoothing or not
    return before


def load_trained_adapter(model: Any, checkpoint: str) -> None:
    """Load a checkpoint's trained adapter (``default``) into the policy before ``trainer.train`` resumes.

    Why: a DPO checkpoint holds the trained adapter at its top level and TRL's frozen reference copy in ``ref/``;
    when a checkpoint has adapter sub-folders, transformers 5.19 (``Trainer._load_from_checkpoint``) loads only
    those, so a resumed run went on from the SFT weights with the checkpoint's step, optimizer and schedule
    (final adapter 0.03 off an uninterrupted run, max |w| 0.17;
    tests/test_reliability.py::test_dpo_killed_with_sigkill_resumes_to_the_same_final_step)."""
    from peft import set_peft_model_state_dict
    from safetensors.torch import load_file

    weights = load_file(str(Path(checkpoint) / "adapter_model.safetensors"))
    result = set_peft_model_state_dict(model, weights, adapter_name="default")
    if result.unexpected_keys:
        raise RuntimeError(f"{checkpoint}: adapter weights that the policy does not have: {result.unexpected_keys[:3]}")
    logger.info("resumed policy adapter: %d tensors from %s", len(weights), checkpoint)


def _logp_margin(metrics: dict[str, Any]) -> float | None:
    """Mean held-out log p(chosen) - log p(rejected) under the policy."""
    if "eval_logps/chosen" not in metrics:
        return None
    return metrics["eval_logps/chosen"] - metrics["eval_logps/rejected"]


def write_model_card(folder: Path, config: DPOStageConfig, results: dict[str, Any], sft: Any) -> None:
    def fmt(value: Any) -> str:
        return "n/a" if value is None else f"{value:.4f}"

    win = results.get("winrate_vs_sft")
    lines = [
        f"# lexalign DPO adapter: {config.name}",
        "",
        "A contract-review assistant aligned with lawyers' preferences by lexalign's DPO stage (TRL DPOTrainer),",
        f"trained further from the SFT run `{config.sft_run}`. Load it like the SFT adapter: base + this adapter.",
        "",
        f"- base model: `{sft.base}`; reference: {results['reference']}",
        f"- method: {config.model.mode}, beta {results['beta']}, loss {', '.join(results['loss_type'])}",
        f"- data: {', '.join(config.data.train)} ({results['train_pairs']} pairs); held-out "
        f"{', '.join(config.data.valid) or 'split by prompt'} ({results['valid_pairs']} pairs)",
        f"- held-out DPO reward margin: {fmt(results['eval_rewards_margins'])} "
        f"(before {fmt(results['initial_eval_rewards_margins'])}); accuracy {fmt(results['eval_rewards_accuracies'])}",
        f"- held-out log-prob margin chosen - rejected: {fmt(results['eval_logp_margin'])} "
        f"(before {fmt(results['initial_eval_logp_margin'])})",
        f"- reward-model win rate vs SFT: {win['win_rate']:.3f} over {win['prompts']} held-out prompts"
        if win else "- reward-model win rate vs SFT: not evaluated here (eval.num_prompts 0 or eval.reward_run empty; "
        "`lexalign eval --reward` judges it)",
        f"- steps: {results['global_step']}, device {results['device']}, compute dtype {results['compute_dtype']}",
        "",
        "Data attribution: ACORD (The Atticus Project, CC BY 4.0) for the shipped pairs.",
        "Not legal advice: answers must be checked by a lawyer.",
        "",
    ]
    (folder / "README.md").write_text("\n".join(lines), encoding="utf-8")
