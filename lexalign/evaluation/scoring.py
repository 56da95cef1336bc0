"""From answers and scores to the metrics of each task (the definitions are in ``metrics.py``), with intervals.

Items whose prompt did not fit the model's context (or that the server rejected) have no answer: they are
counted as ``skipped`` in their task and left out of its metrics.

Each task also keeps one row of numbers per scored item (``ItemScores``) and a formula per metric over those
rows (``FORMULAS``): the bootstrap interval of every metric (``uncertainty.intervals``) and the paired
difference between two stages scored on the same items (``lexalign report``) both come from them. A formula
gives the same value as the metric function of ``metrics.py`` on the same items (the tests check it).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from lexalign.data.prompts import UNFAIR_NAMES
from lexalign.evaluation import metrics as m
from lexalign.evaluation.tasks import GENERATION_TASKS, parse_extract, parse_presence, parse_unfair, regroup
from lexalign.evaluation.uncertainty import DEFAULT_LEVEL, DEFAULT_RESAMPLES, Formula, ItemScores, Resample, \
    intervals, mean_of, ratio

# Every metric each task reports, in report order (a task that did not run reports them as None).
METRICS: dict[str, list[str]] = {
    "extract": ["presence_accuracy", "presence_precision", "presence_recall", "presence_f1", "span_f1",
                "span_jaccard", "not_present_rate", "unparsed_rate"],
    "presence": ["accuracy", "f1", "unparsed_rate"],
    "normalize": ["exact_match", "token_f1"],
    "unfair": ["unfair_accuracy", "unfair_precision", "unfair_recall", "unfair_f1", "macro_f1", "micro_f1",
               "unparsed_rate"],
    "ranking": ["policy_ndcg@{k}", "policy_pairwise_accuracy", "reward_ndcg@{k}", "reward_pairwise_accuracy"],
    "preferences": ["rm_pairwise_accuracy"],
    "winrate": ["win_rate"],
    "behaviour": ["stop_rate", "length_cut_rate", "length_mean", "length_median", "refusal_rate",
                  "not_present_rate", "empty_rate"],
}
# Metrics of the reward model alone: the same for every policy stage (left out of stage-vs-stage differences).
REWARD_MODEL_METRICS = ("ranking/reward_ndcg@{k}", "ranking/reward_pairwise_accuracy",
                        "preferences/rm_pairwise_accuracy")


def metric_names(task: str, k: int) -> list[str]:
    return [name.format(k=k) for name in METRICS[task]]


def _answered(items: list[Any], answers: dict[str, Any]) -> tuple[list[Any], int]:
    done = [item for item in items if item.id in answers and not answers[item.id].skipped]
    return done, len(items) - len(done)


# --------------------------------------------------------------------------- per-item rows and formulas


def _verdict_columns(parsed: list[bool | None], gold: list[bool]) -> dict[str, list[float]]:
    """Binary verdicts item by item. An unparsed verdict (None) is wrong whatever the gold label: a false
    negative when the gold label is positive, a false positive when it is negative."""
    predicted = [(not g) if p is None else p for p, g in zip(parsed, gold)]
    return {
        "correct": [float(p == g) for p, g in zip(predicted, gold)],
        "tp": [float(p and g) for p, g in zip(predicted, gold)],
        "fp": [float(p and not g) for p, g in zip(predicted, gold)],
        "fn": [float(g and not p) for p, g in zip(predicted, gold)],
        "unparsed": [float(p is None) for p in parsed],
        "gold": [float(g) for g in gold],
    }


def _scored_verdicts(parsed: list[bool | None], gold: list[bool]) -> dict[str, float | int | None]:
    """``metrics.binary_scores`` with the unparsed verdicts counted wrong (as in ``_verdict_columns``)."""
    return m.binary_scores([(not g) if p is None else p for p, g in zip(parsed, gold)], gold)


def _precision(prefix: str = "") -> Formula:
    return lambda r: ratio(r.sum(f"{prefix}tp"), r.sum(f"{prefix}tp") + r.sum(f"{prefix}fp"), empty=0.0)


def _recall(prefix: str = "") -> Formula:
    return lambda r: ratio(r.sum(f"{prefix}tp"), r.sum(f"{prefix}tp") + r.sum(f"{prefix}fn"), empty=0.0)


def _f1(prefix: str = "", empty: float = 0.0) -> Formula:
    """2TP / (2TP + FP + FN): the same as 2PR / (P + R), and 0 when nothing is predicted or gold positive."""
    return lambda r: ratio(2 * r.sum(f"{prefix}tp"), 2 * r.sum(f"{prefix}tp") + r.sum(f"{prefix}fp")
                           + r.sum(f"{prefix}fn"), empty=empty)


def _macro_f1(r: Resample) -> np.ndarray:
    """Mean per-category F1 over the categories that occur (gold or predicted) in the resample."""
    per_category = np.stack([_f1(f"{name}|", empty=np.nan)(r) for name in UNFAIR_NAMES])
    occurring = np.isfinite(per_category)
    return ratio(np.where(occurring, per_category, 0.0).sum(axis=0), occurring.sum(axis=0))


def _micro_f1(r: Resample) -> np.ndarray:
    tp = sum(r.sum(f"{name}|tp") for name in UNFAIR_NAMES)
    fp = sum(r.sum(f"{name}|fp") for name in UNFAIR_NAMES)
    fn = sum(r.sum(f"{name}|fn") for name in UNFAIR_NAMES)
    return ratio(2 * tp, 2 * tp + fp + fn)


def _pooled(prefix: str) -> Formula:
    return lambda r: ratio(r.sum(f"{prefix}credit"), r.sum(f"{prefix}pairs"))


def _median(column: str) -> Formula:
    def median(r: Resample) -> np.ndarray:
        values = r.values(column)
        if np.isnan(values).all():
            return np.full(values.shape[0], np.nan)
        return np.nanmedian(values, axis=1)
    return median


def formulas(task: str, k: int = 5) -> dict[str, Formula]:
    """metric name -> formula over the task's per-item rows (see the module docstring)."""
    table: dict[str, dict[str, Formula]] = {
        "extract": {"presence_accuracy": mean_of("correct"), "presence_precision": _precision(),
                    "presence_recall": _recall(), "presence_f1": _f1(), "span_f1": mean_of("span_f1"),
                    "span_jaccard": mean_of("span_jaccard"), "not_present_rate": mean_of("not_present"),
                    "unparsed_rate": mean_of("unparsed")},
        "presence": {"accuracy": mean_of("correct"), "f1": _f1(), "unparsed_rate": mean_of("unparsed")},
        "normalize": {"exact_match": mean_of("exact_match"), "token_f1": mean_of("token_f1")},
        "unfair": {"unfair_accuracy": mean_of("correct"), "unfair_precision": _precision(),
                   "unfair_recall": _recall(), "unfair_f1": _f1(), "macro_f1": _macro_f1, "micro_f1": _micro_f1,
                   "unparsed_rate": mean_of("unparsed")},
        "ranking": {f"policy_ndcg@{k}": mean_of("policy_ndcg"), "policy_pairwise_accuracy": _pooled("policy_"),
                    f"reward_ndcg@{k}": mean_of("reward_ndcg"), "reward_pairwise_accuracy": _pooled("reward_")},
        "preferences": {"rm_pairwise_accuracy": mean_of("correct")},
        "winrate": {"win_rate": mean_of("win")},
        "behaviour": {"stop_rate": mean_of("stop"), "length_cut_rate": mean_of("length_cut"),
                      "length_mean": mean_of("length"), "length_median": _median("length"),
                      "refusal_rate": mean_of("refusal"), "not_present_rate": mean_of("not_present"),
                      "empty_rate": mean_of("empty")},
    }
    return table[task]


def _majority(gold: list[bool], what: str) -> dict[str, Any]:
    share = sum(gold) / len(gold)
    return {"value": max(share, 1 - share), "what": f"majority class ({share:.0%} {what})"}


def _always_positive_f1(gold: list[bool], positive: str) -> dict[str, Any]:
    share = sum(gold) / len(gold)
    return {"value": 2 * share / (1 + share), "what": f"always '{positive}'"}


# --------------------------------------------------------------------------- tasks


def score_extract(items: list[Any], answers: dict[str, Any]) -> dict[str, Any]:
    texts = [answers[item.id].text for item in items]
    parsed = [parse_extract(t, item.excerpt) for t, item in zip(texts, items)]
    gold = [bool(item.gold["present"]) for item in items]
    presence = _scored_verdicts(parsed, gold)
    overlaps = [m.span_overlap(m.span_candidates(t), item.gold["answers"]) for t, item in zip(texts, items)]
    scored = [o for o in overlaps if o is not None]
    columns = _verdict_columns(parsed, gold)
    columns["span_f1"] = [np.nan if o is None else o[0] for o in overlaps]
    columns["span_jaccard"] = [np.nan if o is None else o[1] for o in overlaps]
    columns["not_present"] = [float(p is False) for p in parsed]
    return {
        "presence_accuracy": presence["accuracy"], "presence_precision": presence["precision"],
        "presence_recall": presence["recall"], "presence_f1": presence["f1"],
        "span_f1": m.mean_or_none([o[0] for o in scored]),
        "span_jaccard": m.mean_or_none([o[1] for o in scored]),
        "not_present_rate": m.mean_or_none([float(p is False) for p in parsed]),
        "unparsed_rate": m.mean_or_none([float(p is None) for p in parsed]),
        "_counts": {"gold_present": sum(gold), "span_items": len(scored)},
        "_items": ItemScores([item.id for item in items], columns),
        "_chance": {"presence_accuracy": _majority(gold, "present"),
                    "presence_f1": _always_positive_f1(gold, "present")},
    }


def score_presence(items: list[Any], answers: dict[str, Any]) -> dict[str, Any]:
    parsed = [parse_presence(answers[item.id].text) for item in items]
    gold = [bool(item.gold["present"]) for item in items]
    binary = _scored_verdicts(parsed, gold)
    return {
        "accuracy": binary["accuracy"],   # an answer that is neither Yes nor No is wrong
        "f1": binary["f1"],
        "unparsed_rate": m.mean_or_none([float(p is None) for p in parsed]),
        "_items": ItemScores([item.id for item in items], _verdict_columns(parsed, gold)),
        "_chance": {"accuracy": _majority(gold, "Yes"), "f1": _always_positive_f1(gold, "Yes")},
    }


def score_normalize(items: list[Any], answers: dict[str, Any]) -> dict[str, Any]:
    texts = [answers[item.id].text.strip() for item in items]
    exact = [m.exact_match(t, item.gold["normalized"]) for t, item in zip(texts, items)]
    overlap = [m.token_f1(t, item.gold["normalized"]) for t, item in zip(texts, items)]
    return {
        "exact_match": m.mean_or_none(exact),
        "token_f1": m.mean_or_none(overlap),
        "_items": ItemScores([item.id for item in items], {"exact_match": exact, "token_f1": overlap}),
    }


def score_unfair(items: list[Any], answers: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    parsed = [parse_unfair(answers[item.id].text) for item in items]
    flags = [flag for flag, _ in parsed]
    gold_unfair = [bool(item.gold["unfair"]) for item in items]
    binary = _scored_verdicts(flags, gold_unfair)
    predicted_sets = [set(names) if flag else set() for flag, names in parsed]
    gold_sets = [set(item.gold["labels"]) for item in items]
    categories = m.multilabel_f1(predicted_sets, gold_sets, UNFAIR_NAMES)
    columns = _verdict_columns(flags, gold_unfair)
    for name in UNFAIR_NAMES:
        columns[f"{name}|tp"] = [float(name in p and name in g) for p, g in zip(predicted_sets, gold_sets)]
        columns[f"{name}|fp"] = [float(name in p and name not in g) for p, g in zip(predicted_sets, gold_sets)]
        columns[f"{name}|fn"] = [float(name not in p and name in g) for p, g in zip(predicted_sets, gold_sets)]
    scores = {
        "unfair_accuracy": binary["accuracy"], "unfair_precision": binary["precision"],
        "unfair_recall": binary["recall"], "unfair_f1": binary["f1"],
        "macro_f1": categories["macro_f1"], "micro_f1": categories["micro_f1"],
        "unparsed_rate": m.mean_or_none([float(flag is None) for flag in flags]),
        "_counts": {"gold_unfair": sum(gold_unfair), "categories_scored": categories["categories_scored"]},
        "_items": ItemScores([item.id for item in items], columns),
        "_chance": {"unfair_accuracy": _majority(gold_unfair, "unfair"),
                    "unfair_f1": _always_positive_f1(gold_unfair, "Potentially unfair")},
    }
    per_category = {name: {"f1": categories["per_category"][name], "support": categories["support"][name]}
                    for name in categories["per_category"]}
    return scores, per_category


def _ranking_columns(prefix: str, groups: list[tuple[list[float], list[float]]], k: int,
                     gain: str) -> dict[str, list[float]]:
    ndcgs = [m.ndcg_at_k(scores, relevance, k, gain) for scores, relevance in groups]
    pairs = [m.pairwise_accuracy(scores, relevance) for scores, relevance in groups]
    return {f"{prefix}ndcg": [np.nan if v is None else v for v in ndcgs],
            f"{prefix}credit": [c for c, _ in pairs], f"{prefix}pairs": [float(n) for _, n in pairs]}


def _random_order_ndcg(items: list[Any], k: int, gain: str) -> float | None:
    """NDCG@k expected from a random order: every response scored alike (ties share the mean discount)."""
    return m.mean_or_none([v for v in (m.ndcg_at_k([0.0] * len(item.relevance), item.relevance, k, gain)
                                       for item in items) if v is not None])


def score_ranking(config: Any, items: list[Any], loglik: list[Any],
                  rm_groups: list[list[float]] | None) -> dict[str, Any]:
    k, gain = config.ranking.k, config.ranking.gain
    scores: dict[str, Any] = {}
    columns: dict[str, list[float]] = {}
    chance: dict[str, Any] = {}
    random_ndcg = {"value": _random_order_ndcg(items, k, gain), "what": "random order"}
    if loglik:
        groups = regroup(items, loglik)
        values = [[(ll.mean if config.ranking.length_normalize else ll.total) for ll in group] for group in groups]
        pairs = [(v, item.relevance) for v, item in zip(values, items)]
        policy = m.ranking_scores(pairs, k, gain)
        scores[f"policy_ndcg@{k}"] = policy[f"ndcg@{k}"]
        scores["policy_pairwise_accuracy"] = policy["pairwise_accuracy"]
        scores["_policy_pairs"] = policy["pairs"]
        scores["_truncated_responses"] = sum(1 for ll in loglik if ll.truncated)
        columns.update(_ranking_columns("policy_", pairs, k, gain))
        chance.update({f"policy_ndcg@{k}": random_ndcg,
                       "policy_pairwise_accuracy": {"value": 0.5, "what": "random order"}})
    if rm_groups is not None:
        pairs = [(v, item.relevance) for v, item in zip(rm_groups, items)]
        reward = m.ranking_scores(pairs, k, gain)
        scores[f"reward_ndcg@{k}"] = reward[f"ndcg@{k}"]
        scores["reward_pairwise_accuracy"] = reward["pairwise_accuracy"]
        scores["_reward_pairs"] = reward["pairs"]
        columns.update(_ranking_columns("reward_", pairs, k, gain))
        chance.update({f"reward_ndcg@{k}": random_ndcg,
                       "reward_pairwise_accuracy": {"value": 0.5, "what": "random order"}})
    nan = [np.nan] * len(items)
    for prefix in ("policy_", "reward_"):  # a scorer that did not run: its metrics are undefined
        for name in ("ndcg", "credit", "pairs"):
            columns.setdefault(f"{prefix}{name}", nan)
    scores["_items"] = ItemScores([item.id for item in items], columns)
    scores["_chance"] = chance
    return scores


def _bootstrap_settings(config: Any) -> tuple[int, int, float]:
    section = getattr(config, "bootstrap", None)
    return (getattr(section, "resamples", DEFAULT_RESAMPLES), getattr(section, "seed", 0),
            getattr(section, "level", DEFAULT_LEVEL))


def score_all(config: Any, tasks: list[str], chat_items: list[Any], answers: dict[str, Any], rank_items: list[Any],
              loglik: list[Any], rm_scores: dict[str, Any], skipped: dict[str, str]) -> dict[str, Any]:
    """Every task requested, scored (a task that could not run has every metric None and a ``skipped`` reason):

    ``metrics`` {task/metric: value}; ``intervals`` {task/metric: {value, ci_low, ci_high, n, level, resamples}};
    ``chance`` {task/metric: {value, what}} (the level a model without skill reaches); ``tasks`` {task: details};
    ``per_category``; ``skipped``; and ``item_scores`` {task: ItemScores} (the per-item rows, not JSON)."""
    k = config.ranking.k
    details: dict[str, dict[str, Any]] = {}
    per_category: dict[str, Any] = {}
    for task in GENERATION_TASKS:
        if task not in tasks:
            continue
        items, n_skipped = _answered([i for i in chat_items if i.task == task], answers)
        total = len(items) + n_skipped
        entry: dict[str, Any] = {"n": len(items), "skipped_items": n_skipped}
        if not items:
            entry["skipped"] = skipped.get(task) or ("no items in the evaluation data" if not total else
                                                     "no item fitted the model's context")
        elif task == "extract":
            entry.update(score_extract(items, answers))
        elif task == "presence":
            entry.update(score_presence(items, answers))
        elif task == "normalize":
            entry.update(score_normalize(items, answers))
        else:
            scores, per_category["unfair"] = score_unfair(items, answers)
            entry.update(scores)
        details[task] = entry
    if "ranking" in tasks:
        entry = {"n": len(rank_items)}
        if not rank_items:
            entry["skipped"] = "no RankingRecords in the evaluation data"
        else:
            entry.update(score_ranking(config, rank_items, loglik, rm_scores.get("ranking")))
            if "ranking" not in rm_scores and "reward" in config.ranking.scorers:
                entry["note"] = "reward scorer: no reward_model given"
        details["ranking"] = entry
    if "preferences" in tasks:
        entry = {}
        if "preferences" in rm_scores:
            chosen, rejected, ids = rm_scores["preferences"]
            entry = {"n": len(chosen), "rm_pairwise_accuracy": m.preference_accuracy(chosen, rejected),
                     "_mean_margin": m.mean_or_none([c - r for c, r in zip(chosen, rejected)]),
                     "_items": ItemScores(list(ids), {"correct": [1.0 if c > r else 0.5 if c == r else 0.0
                                                                  for c, r in zip(chosen, rejected)]}),
                     "_chance": {"rm_pairwise_accuracy": {"value": 0.5, "what": "coin flip"}}}
        else:
            entry = {"n": 0, "skipped": skipped.get("preferences", "no PreferencePairs in the evaluation data")}
        details["preferences"] = entry
    if "winrate" in tasks:
        if "winrate" in rm_scores:
            pairs, mine, theirs = rm_scores["winrate"]
            entry = dict(m.win_rate(mine, theirs))
            entry["_items"] = ItemScores([item.id for item in pairs], {
                "win": [1.0 if a > b else 0.5 if a == b else 0.0 for a, b in zip(mine, theirs)]})
            entry["_chance"] = {"win_rate": {"value": 0.5, "what": "as good as the other policy"}}
        else:
            entry = {"n": 0, "skipped": skipped.get("winrate", "no other policy's answers")}
        details["winrate"] = entry
    if "behaviour" in tasks:
        answered = [i for i in chat_items if i.id in answers and not answers[i.id].skipped]
        gens = [answers[i.id] for i in answered]
        entry = dict(m.behaviour_scores([g.text for g in gens], [g.finish_reason for g in gens],
                                        [g.completion_tokens for g in gens]))
        entry["skipped_items"] = sum(1 for i in chat_items if i.id in answers and answers[i.id].skipped)
        entry["_items"] = ItemScores([i.id for i in answered], {
            "stop": [float(g.finish_reason == "stop") for g in gens],
            "length_cut": [float(g.finish_reason == "length") for g in gens],
            "length": [float(g.completion_tokens) for g in gens],
            "refusal": [float(m.is_refusal(g.text)) for g in gens],
            "not_present": [float(m.is_not_present(g.text)) for g in gens],
            "empty": [float(not g.text.strip()) for g in gens]})
        if not gens:
            entry["skipped"] = "no answers"
        details["behaviour"] = entry

    resamples, seed, level = _bootstrap_settings(config)
    flat: dict[str, Any] = {}
    spreads: dict[str, Any] = {}
    chance: dict[str, Any] = {}
    item_scores: dict[str, ItemScores] = {}
    for task, entry in details.items():
        rows = entry.pop("_items", None)
        for name, level_info in (entry.pop("_chance", None) or {}).items():
            if level_info.get("value") is not None:
                chance[f"{task}/{name}"] = level_info
        found = intervals(rows, formulas(task, k), resamples, seed, level) if rows is not None else {}
        if rows is not None:
            item_scores[task] = rows
        for name in metric_names(task, k):
            value = entry.get(name)
            value = float(value) if isinstance(value, (int, float)) else None
            flat[f"{task}/{name}"] = value
            entry.setdefault(name, None)
            spread = found.get(name) or {"ci_low": None, "ci_high": None, "n": entry.get("n", 0)}
            # the reported value is the metric function's; the formula gives the same on the same items
            spreads[f"{task}/{name}"] = {"value": value, "ci_low": spread["ci_low"] if value is not None else None,
                                         "ci_high": spread["ci_high"] if value is not None else None,
                                         "n": spread["n"]}
    return {"metrics": flat, "intervals": spreads, "chance": chance,
            "bootstrap": {"resamples": resamples, "seed": seed, "level": level, "method": "percentile"},
            "tasks": details, "per_category": per_category, "skipped": skipped, "item_scores": item_scores}
