"""Rankings -> preference pairs (what a Bradley-Terry reward model and DPO train on).

Used by the ACORD builder here and by any stage that turns annotators' rankings into TRL's preference format.
"""

from __future__ import annotations

from typing import Any, Sequence

from lexalign.data import prompts
from lexalign.data.schemas import Message, PreferencePair, RankingRecord


def dense_ranks(scores: Sequence[float]) -> list[int]:
    """Higher score = better rank; equal scores tie: [5, 3, 3, 1] -> [1, 2, 2, 3]."""
    order = sorted(set(scores), reverse=True)
    return [order.index(s) + 1 for s in scores]


def prompt_messages(prompt: str | list[Message], system_prompt: str | None) -> list[Message]:
    if not isinstance(prompt, str):
        return list(prompt)
    system = [Message(role="system", content=system_prompt)] if system_prompt else []
    return system + [Message(role="user", content=prompt)]


def ranking_to_pairs(record: RankingRecord, scores: Sequence[float] | None = None,
                     system_prompt: str | None = prompts.SYSTEM_PROMPT) -> list[PreferencePair]:
    """Every (better, worse) pair of a ranking, in TRL's conversational preference format.

    Ties give no pair. ``margin`` is the score gap when ``scores`` are given (e.g. ACORD's stars), else the
    rank gap. A string prompt becomes [system, user] messages. Pairs are emitted even when the annotator
    marked none acceptable (the relative preference still holds); ``meta.none_acceptable`` says so.
    """
    if scores is not None and len(scores) != len(record.responses):
        raise ValueError(f"{len(scores)} scores for {len(record.responses)} responses")
    prompt = prompt_messages(record.prompt, system_prompt)
    pairs = []
    for i, better in enumerate(record.responses):
        for j, worse in enumerate(record.responses):
            if record.ranks[i] >= record.ranks[j] or better == worse:
                continue
            margin = float(scores[i] - scores[j]) if scores is not None else float(record.ranks[j] - record.ranks[i])
            meta: dict[str, Any] = {
                "prompt_id": record.prompt_id,
                "annotator": record.annotator,
                "chosen_index": i,
                "rejected_index": j,
                "chosen_rank": record.ranks[i],
                "rejected_rank": record.ranks[j],
            }
            if record.none_acceptable:
                meta["none_acceptable"] = True
            if record.meta and "source" in record.meta:
                meta["source"] = record.meta["source"]
            pairs.append(PreferencePair(
                prompt=prompt,
                chosen=[Message(role="assistant", content=better)],
                rejected=[Message(role="assistant", content=worse)],
                margin=margin,
                meta=meta,
            ))
    return pairs
