"""Scoring (prompt, response) pairs with a trained reward model, for evaluation.

``load_reward_scorer(path)`` takes a reward run directory (``runs/<name>/reward``: a LoRA adapter with its
score head on a base model, or a full model, as its manifest says) or a sequence-classification model folder.
A pair is formatted the way TRL's RewardTrainer formats conversational data: the chat template applied to the
prompt messages followed by the assistant response; the score is the model's single logit.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Sequence

from lexalign.evaluation.backends import EvalError, Messages

logger = logging.getLogger(__name__)


class RewardModelScorer:
    """A reward model loaded in this process (CPU or CUDA), scoring one pair at a time (no padding effects)."""

    def __init__(self, path: str | Path, device: str = "auto", threads: int = 0) -> None:
        import torch
        from transformers import AutoModelForSequenceClassification

        from lexalign.modeling import choose_device, configure_threads, load_tokenizer
        from lexalign.serve.launch import resolve_target

        path = Path(path)
        if not path.exists():
            raise EvalError(f"reward_model {path}: does not exist; train one with `lexalign reward` or pass a "
                            "sequence-classification model folder")
        target = resolve_target(path)
        configure_threads(threads)
        self.device = choose_device(device)
        tokenizer_dir = target.adapter if target.adapter and (target.adapter / "tokenizer_config.json").is_file() \
            else target.base_model
        self.tokenizer = load_tokenizer(tokenizer_dir)
        if target.chat_template is not None:
            self.tokenizer.chat_template = Path(target.chat_template).read_text(encoding="utf-8")
        dtype = torch.float32 if self.device.type == "cpu" else "auto"
        model = AutoModelForSequenceClassification.from_pretrained(str(target.base_model), num_labels=1, dtype=dtype)
        model.config.pad_token_id = self.tokenizer.pad_token_id
        if target.adapter is not None:
            from peft import PeftModel

            model = PeftModel.from_pretrained(model, str(target.adapter))
        self.net = model.to(self.device).eval()
        self.max_length = int(getattr(model.config, "max_position_embeddings", 0) or 0) or None
        self.source = str(path)
        self.truncated = 0
        logger.info("reward model: %s (adapter: %s) on %s", target.base_model, target.adapter or "none", self.device)

    def encode(self, messages: Messages, response: str) -> list[int]:
        conversation = list(messages) + [{"role": "assistant", "content": response}]
        ids = self.tokenizer.apply_chat_template(conversation, tokenize=True, return_dict=True)["input_ids"]
        ids = list(ids)
        if self.max_length and len(ids) > self.max_length:
            self.truncated += 1
            ids = ids[-self.max_length:]  # keep the answer's end
        return ids

    def score(self, pairs: Sequence[tuple[Messages, str]], desc: str = "reward model") -> list[float]:
        import torch
        from tqdm.auto import tqdm

        scores = []
        with torch.no_grad():
            for messages, response in tqdm(pairs, desc=desc, leave=False, disable=None):
                ids = torch.tensor([self.encode(messages, response)], device=self.device)
                logits = self.net(input_ids=ids, attention_mask=torch.ones_like(ids)).logits
                scores.append(float(logits[0, 0].float().item()))
        return scores

    def describe(self) -> dict[str, Any]:
        return {"reward_model": self.source, "device": str(self.device), "truncated_inputs": self.truncated}


def load_reward_scorer(path: str | Path, device: str = "auto", threads: int = 0) -> RewardModelScorer:
    return RewardModelScorer(path, device=device, threads=threads)
