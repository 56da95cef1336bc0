"""The policy and the reward model of the alignment stages (DPO, PPO, GRPO, RLOO), from run directories.

Policy = the SFT run's policy, trained further:

* SFT trained a LoRA adapter (the default): the base is loaded (4-bit for QLoRA, full precision otherwise, per
  ``model:``) and the SFT adapter is loaded as the TRAINABLE adapter ``default``. The reference is the SFT
  policy itself, kept as a frozen copy of that adapter named ``ref`` on the same base: one base model in
  memory, two small adapters. (Disabling the adapter would give the *base* model, not the SFT policy, so it is
  not the reference here.) TRL's DPOTrainer, GRPOTrainer and RLOOTrainer add this ``ref`` adapter themselves
  when given a PeftModel; for PPO (``trl.experimental.ppo``) lexalign loads it and passes
  ``ref_adapter_name="ref"``.
* SFT trained the full model: that model is the frozen base, a new LoRA (``model.lora``) is trained on it and
  the reference is the same model with the adapter disabled.

Either way the output is an adapter on the same base as SFT's, so ``lexalign export`` / ``serve`` take it
unchanged. The reward model comes from a reward run's ``model`` folder (a merged sequence classifier); its
tokenizer must be the policy's (same vocabulary, special tokens and chat template), checked before loading.
"""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path
from typing import Any

from lexalign.errors import LexalignError
from lexalign.modeling import ModelSection, TrainedPolicy

logger = logging.getLogger(__name__)

REF_ADAPTER = "ref"


def reward_model_dir(reward_run: str | Path, what: str = "reward_run") -> Path:
    """A completed reward run -> its model folder (clear errors; nothing loaded)."""
    from lexalign.modeling import check_model_dir
    from lexalign.runs import read_manifest, require_complete

    run = require_complete(reward_run, what)
    manifest = read_manifest(run)
    model = manifest.get("outputs", {}).get("model")
    if manifest.get("stage") != "reward" or not model:
        raise LexalignError(f"{what} = {str(run)!r}: a {manifest.get('stage')!r} run, not a reward run; "
                            "give the output directory of `lexalign reward` (e.g. runs/tiny/reward)")
    return check_model_dir(run / model, f"{what}: reward model")


def check_same_tokenizer(policy_dir: Path, reward_dir: Path, what: str = "reward_run") -> None:
    """The reward model must read the policy's tokens: same vocabulary, special tokens and chat template."""
    from lexalign.modeling import tokenizer_fingerprint

    policy, reward = tokenizer_fingerprint(policy_dir), tokenizer_fingerprint(reward_dir)
    different = [part for part in policy if policy[part] != reward[part]]
    if different:
        raise LexalignError(f"{what}: the reward model's tokenizer ({reward_dir}) differs from the policy's "
                            f"({policy_dir}) in its {' and '.join(different)}; train the reward model from the "
                            "same SFT run (or base model family) as the policy")


def load_policy(section: ModelSection, sft: TrainedPolicy, gradient_checkpointing: bool = False,
                ref_adapter: bool = False) -> tuple[Any, Any, Any, Any]:
    """(model, device, dtype, peft_config): the trainable policy; see the module docstring.

    ``ref_adapter``: also load the SFT adapter a second time as the frozen adapter ``ref`` (for PPO; TRL's
    DPO/GRPO/RLOO trainers do it themselves). ``peft_config`` is set only for a new LoRA on a full SFT model.
    """
    from lexalign.modeling import load_model, lora_config

    model, device, dtype = load_model(dataclasses.replace(section, path=str(sft.base)))
    if section.quantization.bits:
        from peft import prepare_model_for_kbit_training

        model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=gradient_checkpointing)
    if sft.adapter is None:
        logger.info("SFT trained the full model %s: a new LoRA on it; reference = adapter disabled", sft.base)
        return model, device, dtype, lora_config(section.lora)
    from peft import PeftModel

    model = PeftModel.from_pretrained(model, str(sft.adapter), is_trainable=True)
    if ref_adapter:
        model.load_adapter(str(sft.adapter), adapter_name=REF_ADAPTER, is_trainable=False)
        model.set_adapter("default")
    logger.info("policy: SFT adapter %s trained further on %s; reference = the SFT adapter, frozen", sft.adapter,
                sft.base)
    return model, device, dtype, None


def save_policy_adapter(model: Any, tokenizer: Any, out: Path) -> int:
    """Save only the trained adapter (not the frozen reference copy) with the tokenizer; returns its rank."""
    model.save_pretrained(str(out), selected_adapters=["default"])
    tokenizer.save_pretrained(str(out))
    return int(model.peft_config["default"].r)
