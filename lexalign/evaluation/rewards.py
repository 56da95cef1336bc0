"""Scoring (prompt, response) pairs with a trained reward model, for evaluation.

A thin layer over what the reward stage publishes, so that evaluation scores texts exactly as the reward model
was trained to see them: ``lexalign.reward.score.reward_model_dir`` (a reward run directory -> its model folder;
a model folder as it is), ``max_length_of`` (the training length), and ``lexalign.modeling.load_reward_model`` /
``reward_scores`` (the one input format: chat-formatted prompt with the generation header, the response, eos).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Sequence

from lexalign.evaluation.backends import EvalError, Messages

logger = logging.getLogger(__name__)


class RewardModelScorer:
    """A reward model loaded in this process (CPU or CUDA)."""

    def __init__(self, path: str | Path, device: str = "auto", threads: int = 0, batch_size: int = 8) -> None:
        from lexalign.modeling import load_reward_model
        from lexalign.reward.score import max_length_of, reward_model_dir

        path = Path(path)
        if not path.exists():
            raise EvalError(f"reward_model {path}: does not exist; train one with `lexalign reward` or pass a "
                            "sequence-classification model folder")
        self.folder = reward_model_dir(path)
        self.model, self.tokenizer = load_reward_model(self.folder, device, threads)
        self.max_length = max_length_of(self.folder)
        self.batch_size = batch_size
        self.source = str(path)
        self.device = str(next(self.model.parameters()).device)
        logger.info("reward model: %s on %s (max_length %s)", self.folder, self.device, self.max_length)

    def score(self, pairs: Sequence[tuple[Messages, str]], desc: str = "reward model") -> list[float]:
        from lexalign.modeling import reward_scores

        if not pairs:
            return []
        logger.info("%s: scoring %d answers", desc, len(pairs))
        return reward_scores(self.model, self.tokenizer, [p for p, _ in pairs], [r for _, r in pairs],
                             self.max_length, batch_size=self.batch_size)

    def describe(self) -> dict[str, Any]:
        return {"reward_model": self.source, "model_folder": str(self.folder), "device": self.device,
                "max_length": self.max_length}


def load_reward_scorer(path: str | Path, device: str = "auto", threads: int = 0) -> RewardModelScorer:
    return RewardModelScorer(path, device=device, threads=threads)
