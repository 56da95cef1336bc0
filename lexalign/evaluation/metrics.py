"""Pure metric functions (no model, no I/O): every number in an eval report comes from one of these.

Conventions, the same everywhere:
  * a metric over zero items is ``None`` (reported as "n/a"), never 0 or 1;
  * a division by zero inside a well-defined metric is 0 (precision with no predicted positives);
  * predicted ties count one half (pairwise accuracy, preference accuracy, win rate) and are spread over the
    positions they share (NDCG: expected DCG over every order of the tied items, McSherry & Najork 2008).
"""

from __future__ import annotations

import math
import re
import statistics
import string
from collections import Counter
from typing import Iterable, Sequence

from lexalign.data.prompts import NOT_PRESENT

# --------------------------------------------------------------------------- text normalisation (SQuAD)

_ARTICLES = re.compile(r"\b(a|an|the)\b")
_PUNCTUATION = set(string.punctuation) | {"“", "”", "‘", "’", "–", "—"}


def normalize_text(text: str) -> str:
    """SQuAD's answer normalisation: lower case, no punctuation, no articles (a/an/the), single spaces."""
    text = text.lower()
    text = "".join(" " if ch in _PUNCTUATION else ch for ch in text)
    text = _ARTICLES.sub(" ", text)
    return " ".join(text.split())


def text_tokens(text: str) -> list[str]:
    return normalize_text(text).split()


# "Not present" as the answer's first sentence, after leading quotes or markdown; "Not presently ..." is not it.
_NOT_PRESENT_START = re.compile(r"^[\s\"'“”‘’*_`>#-]*not[ \t]+present[ \t]*(?:[.!;:,\"”'’*_`\n]|$)",
                                re.IGNORECASE)


def is_not_present(answer: str) -> bool:
    """The answer says 'Not present.': exactly (case, surrounding quotes/space and the final period ignored) or as
    its first sentence (a model that adds an explanation has still given the verdict)."""
    return normalize_text(answer) == normalize_text(NOT_PRESENT) or bool(_NOT_PRESENT_START.match(answer))


def answer_spans(answer: str) -> list[str]:
    """The quoted spans of an extraction answer: its non-empty lines (none for 'Not present.')."""
    if is_not_present(answer):
        return []
    spans = []
    for line in answer.splitlines():
        line = line.strip().strip('"“”').strip()
        if line:
            spans.append(line)
    return spans


def span_candidates(answer: str) -> list[str]:
    """What a gold span is matched against: each quoted line, plus the whole answer when it has several lines
    (a gold span may itself contain line breaks). None for 'Not present.'."""
    spans = answer_spans(answer)
    if len(spans) > 1:
        spans.append(answer.strip())
    return spans


# --------------------------------------------------------------------------- span overlap


def token_f1(prediction: str, gold: str) -> float:
    """SQuAD token F1: overlap of the normalised token multisets. Both empty -> 1.0; one empty -> 0.0."""
    pred, ref = text_tokens(prediction), text_tokens(gold)
    if not pred or not ref:
        return float(pred == ref)
    same = sum((Counter(pred) & Counter(ref)).values())
    if same == 0:
        return 0.0
    precision, recall = same / len(pred), same / len(ref)
    return 2 * precision * recall / (precision + recall)


def token_jaccard(prediction: str, gold: str) -> float:
    """|A ∩ B| / |A ∪ B| of the normalised token sets. Both empty -> 1.0."""
    pred, ref = set(text_tokens(prediction)), set(text_tokens(gold))
    if not pred and not ref:
        return 1.0
    return len(pred & ref) / len(pred | ref)


def span_overlap(predicted: Sequence[str], gold: Sequence[str]) -> tuple[float, float] | None:
    """(token F1, token Jaccard) of one item: for each gold span the best-matching predicted span, averaged
    over the gold spans. No gold spans -> None (the item does not count); no predicted spans -> (0, 0)."""
    if not gold:
        return None
    if not predicted:
        return 0.0, 0.0
    f1 = [max(token_f1(p, g) for p in predicted) for g in gold]
    jaccard = [max(token_jaccard(p, g) for p in predicted) for g in gold]
    return sum(f1) / len(f1), sum(jaccard) / len(jaccard)


def exact_match(prediction: str, gold: str) -> float:
    return float(normalize_text(prediction) == normalize_text(gold))


# --------------------------------------------------------------------------- classification


def binary_scores(predicted: Sequence[bool], gold: Sequence[bool]) -> dict[str, float | int | None]:
    """Accuracy, precision, recall and F1 of the positive class; ``support`` = gold positives, ``n`` = items.

    precision = TP / (TP + FP) (0 when nothing is predicted positive), recall = TP / (TP + FN) (0 when no gold
    positive), F1 = 2PR / (P + R) (0 when P + R = 0). Every value is None when there are no items.
    """
    if len(predicted) != len(gold):
        raise ValueError(f"{len(predicted)} predictions for {len(gold)} gold labels")
    n = len(gold)
    if n == 0:
        return {"n": 0, "support": 0, "accuracy": None, "precision": None, "recall": None, "f1": None}
    tp = sum(1 for p, g in zip(predicted, gold) if p and g)
    fp = sum(1 for p, g in zip(predicted, gold) if p and not g)
    fn = sum(1 for p, g in zip(predicted, gold) if not p and g)
    correct = sum(1 for p, g in zip(predicted, gold) if bool(p) == bool(g))
    precision = tp / (tp + fp) if tp + fp else 0.0
    recall = tp / (tp + fn) if tp + fn else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return {"n": n, "support": tp + fn, "accuracy": correct / n, "precision": precision, "recall": recall, "f1": f1}


def multilabel_f1(predicted: Sequence[Iterable[str]], gold: Sequence[Iterable[str]],
                  categories: Sequence[str] | None = None) -> dict[str, object]:
    """Per-category F1 = 2TP / (2TP + FP + FN) over items, their macro mean, and micro F1 (pooled counts).

    A category that occurs neither in the gold labels nor in the predictions of this item set has no F1
    (None in ``per_category``) and is left out of the macro mean; a category that is predicted but never gold,
    or gold but never predicted, has F1 0 and counts. ``categories`` fixes the order (and may name categories
    that never occur); others that occur are appended.
    """
    if len(predicted) != len(gold):
        raise ValueError(f"{len(predicted)} predictions for {len(gold)} gold label sets")
    pred_sets = [set(p) for p in predicted]
    gold_sets = [set(g) for g in gold]
    names = list(dict.fromkeys(list(categories or []) + sorted(set().union(*pred_sets, *gold_sets))))
    per_category: dict[str, float | None] = {}
    support: dict[str, int] = {}
    totals = Counter()
    for name in names:
        tp = sum(1 for p, g in zip(pred_sets, gold_sets) if name in p and name in g)
        fp = sum(1 for p, g in zip(pred_sets, gold_sets) if name in p and name not in g)
        fn = sum(1 for p, g in zip(pred_sets, gold_sets) if name not in p and name in g)
        totals.update(tp=tp, fp=fp, fn=fn)
        support[name] = tp + fn
        denominator = 2 * tp + fp + fn
        per_category[name] = 2 * tp / denominator if denominator else None
    defined = [v for v in per_category.values() if v is not None]
    micro_denominator = 2 * totals["tp"] + totals["fp"] + totals["fn"]
    return {
        "per_category": per_category,
        "support": support,
        "macro_f1": sum(defined) / len(defined) if defined else None,
        "micro_f1": 2 * totals["tp"] / micro_denominator if micro_denominator else None,
        "categories_scored": len(defined),
    }


# --------------------------------------------------------------------------- ranking


def gain(relevance: float, kind: str = "exponential") -> float:
    """exponential: 2^rel - 1 (Burges et al.); linear: rel."""
    if kind == "exponential":
        return 2.0 ** relevance - 1.0
    if kind == "linear":
        return float(relevance)
    raise ValueError(f"unknown gain {kind!r}; use 'exponential' or 'linear'")


def _discount(position: int) -> float:
    """1 / log2(position + 1) for 1-based positions."""
    return 1.0 / math.log2(position + 1)


def dcg_at_k(scores: Sequence[float], relevance: Sequence[float], k: int, gain_kind: str = "exponential") -> float:
    """DCG@k of the order by descending ``scores``; tied scores share the mean discount of their positions."""
    if len(scores) != len(relevance):
        raise ValueError(f"{len(scores)} scores for {len(relevance)} relevance labels")
    order = sorted(range(len(scores)), key=lambda i: -scores[i])
    total, position = 0.0, 1
    i = 0
    while i < len(order):
        j = i
        while j + 1 < len(order) and scores[order[j + 1]] == scores[order[i]]:
            j += 1
        group = order[i:j + 1]
        positions = range(position, position + len(group))
        mean_discount = sum(_discount(p) for p in positions if p <= k) / len(group)
        total += mean_discount * sum(gain(relevance[g], gain_kind) for g in group)
        position += len(group)
        i = j + 1
    return total


def ndcg_at_k(scores: Sequence[float], relevance: Sequence[float], k: int = 5,
              gain_kind: str = "exponential") -> float | None:
    """DCG@k of the predicted order / DCG@k of the ideal order (by relevance). None when the ideal DCG is 0."""
    ideal = dcg_at_k(list(relevance), relevance, k, gain_kind)
    if ideal <= 0:
        return None
    return dcg_at_k(scores, relevance, k, gain_kind) / ideal


def pairwise_accuracy(scores: Sequence[float], relevance: Sequence[float]) -> tuple[float, int]:
    """(credit, pairs) over the pairs whose gold relevance differs: 1 when the scores order them the same way,
    1/2 when the scores tie, 0 otherwise. Pairs tied in the gold labels are not counted."""
    if len(scores) != len(relevance):
        raise ValueError(f"{len(scores)} scores for {len(relevance)} relevance labels")
    credit, pairs = 0.0, 0
    for i in range(len(scores)):
        for j in range(i + 1, len(scores)):
            if relevance[i] == relevance[j]:
                continue
            pairs += 1
            if scores[i] == scores[j]:
                credit += 0.5
            elif (scores[i] > scores[j]) == (relevance[i] > relevance[j]):
                credit += 1.0
    return credit, pairs


def ranking_scores(groups: Sequence[tuple[Sequence[float], Sequence[float]]], k: int = 5,
                   gain_kind: str = "exponential") -> dict[str, float | int | None]:
    """Mean NDCG@k over groups (those with a defined NDCG) and pairwise accuracy pooled over all pairs."""
    ndcgs = [v for v in (ndcg_at_k(s, r, k, gain_kind) for s, r in groups) if v is not None]
    credit, pairs = 0.0, 0
    for s, r in groups:
        c, p = pairwise_accuracy(s, r)
        credit += c
        pairs += p
    return {
        "n": len(groups),
        f"ndcg@{k}": sum(ndcgs) / len(ndcgs) if ndcgs else None,
        "pairwise_accuracy": credit / pairs if pairs else None,
        "pairs": pairs,
    }


# --------------------------------------------------------------------------- preferences


def preference_accuracy(chosen: Sequence[float], rejected: Sequence[float]) -> float | None:
    """Share of pairs where the chosen answer scores higher (ties count 1/2). None for no pairs."""
    if len(chosen) != len(rejected):
        raise ValueError(f"{len(chosen)} chosen scores for {len(rejected)} rejected scores")
    if not chosen:
        return None
    return sum(1.0 if c > r else 0.5 if c == r else 0.0 for c, r in zip(chosen, rejected)) / len(chosen)


def win_rate(policy: Sequence[float], other: Sequence[float]) -> dict[str, float | int | None]:
    """Reward-model win rate of ``policy`` over ``other`` on the same prompts: (wins + ties/2) / n."""
    if len(policy) != len(other):
        raise ValueError(f"{len(policy)} policy scores for {len(other)} scores of the other model")
    wins = sum(1 for a, b in zip(policy, other) if a > b)
    ties = sum(1 for a, b in zip(policy, other) if a == b)
    n = len(policy)
    return {"n": n, "wins": wins, "ties": ties, "losses": n - wins - ties,
            "win_rate": (wins + 0.5 * ties) / n if n else None}


# --------------------------------------------------------------------------- behaviour

_REFUSAL = re.compile(
    r"^\s*(i\s*(am|'m)\s*(sorry|unable|not able)|i\s*(cannot|can\s*not|can't|won't)|sorry\b|as an ai\b|"
    r"i\s*do\s*not\s*(have|know)|i\s*don't\s*(have|know))", re.IGNORECASE)


def is_refusal(answer: str) -> bool:
    """An answer that declines instead of answering: starts like 'I cannot…', 'I'm sorry…', 'As an AI…'."""
    return bool(_REFUSAL.match(answer))


def mean_or_none(values: Sequence[float]) -> float | None:
    return sum(values) / len(values) if values else None


def median_or_none(values: Sequence[float]) -> float | None:
    return float(statistics.median(values)) if values else None


def behaviour_scores(answers: Sequence[str], finish_reasons: Sequence[str | None],
                     completion_tokens: Sequence[int]) -> dict[str, float | int | None]:
    """How the model answers, whatever the task: stop rate (the answer ended with the end-of-turn token:
    finish_reason 'stop'; 'length' = cut at max_new_tokens), answer length in tokens, refusal, 'Not present.'
    and empty-answer rates."""
    n = len(answers)
    return {
        "n": n,
        "stop_rate": sum(1 for r in finish_reasons if r == "stop") / n if n else None,
        "length_cut_rate": sum(1 for r in finish_reasons if r == "length") / n if n else None,
        "length_mean": mean_or_none([float(t) for t in completion_tokens]),
        "length_median": median_or_none([float(t) for t in completion_tokens]),
        "refusal_rate": sum(1 for a in answers if is_refusal(a)) / n if n else None,
        "not_present_rate": sum(1 for a in answers if is_not_present(a)) / n if n else None,
        "empty_rate": sum(1 for a in answers if not a.strip()) / n if n else None,
    }
