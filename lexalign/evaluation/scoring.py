"""From answers and scores to the metrics of each task (the definitions are in ``metrics.py``).

Items whose prompt did not fit the model's context (or that the server rejected) have no answer: they are
counted as ``skipped`` in their task and left out of its metrics.
"""

from __future__ import annotations

from typing import Any

from lexalign.data.prompts import UNFAIR_NAMES
from lexalign.evaluation import metrics as m
from lexalign.evaluation.tasks import GENERATION_TASKS, parse_presence, parse_unfair, regroup

# Every metric each task reports, in report order (a task that did not run reports them as None).
METRICS: dict[str, list[str]] = {
    "extract": ["presence_accuracy", "presence_precision", "presence_recall", "presence_f1", "span_f1",
                "span_jaccard", "not_present_rate"],
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


def metric_names(task: str, k: int) -> list[str]:
    return [name.format(k=k) for name in METRICS[task]]


def _answered(items: list[Any], answers: dict[str, Any]) -> tuple[list[Any], int]:
    done = [item for item in items if item.id in answers and not answers[item.id].skipped]
    return done, len(items) - len(done)


def score_extract(items: list[Any], answers: dict[str, Any]) -> dict[str, Any]:
    texts = [answers[item.id].text for item in items]
    predicted = [not m.is_not_present(t) for t in texts]
    gold = [bool(item.gold["present"]) for item in items]
    presence = m.binary_scores(predicted, gold)
    overlaps = [m.span_overlap(m.span_candidates(t), item.gold["answers"]) for t, item in zip(texts, items)]
    overlaps = [o for o in overlaps if o is not None]
    return {
        "presence_accuracy": presence["accuracy"], "presence_precision": presence["precision"],
        "presence_recall": presence["recall"], "presence_f1": presence["f1"],
        "span_f1": m.mean_or_none([o[0] for o in overlaps]),
        "span_jaccard": m.mean_or_none([o[1] for o in overlaps]),
        "not_present_rate": m.mean_or_none([float(not p) for p in predicted]),
        "_counts": {"gold_present": sum(gold), "span_items": len(overlaps)},
    }


def score_presence(items: list[Any], answers: dict[str, Any]) -> dict[str, Any]:
    parsed = [parse_presence(answers[item.id].text) for item in items]
    gold = [bool(item.gold["present"]) for item in items]
    binary = m.binary_scores([p is True for p in parsed], gold)
    return {
        # an answer that is neither Yes nor No is wrong
        "accuracy": m.mean_or_none([float(p is not None and p == g) for p, g in zip(parsed, gold)]),
        "f1": binary["f1"],
        "unparsed_rate": m.mean_or_none([float(p is None) for p in parsed]),
    }


def score_normalize(items: list[Any], answers: dict[str, Any]) -> dict[str, Any]:
    texts = [answers[item.id].text.strip() for item in items]
    return {
        "exact_match": m.mean_or_none([m.exact_match(t, item.gold["normalized"]) for t, item in zip(texts, items)]),
        "token_f1": m.mean_or_none([m.token_f1(t, item.gold["normalized"]) for t, item in zip(texts, items)]),
    }


def score_unfair(items: list[Any], answers: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    parsed = [parse_unfair(answers[item.id].text) for item in items]
    predicted_unfair = [flag is True for flag, _ in parsed]
    gold_unfair = [bool(item.gold["unfair"]) for item in items]
    binary = m.binary_scores(predicted_unfair, gold_unfair)
    categories = m.multilabel_f1([names if flag else [] for flag, names in parsed],
                                 [item.gold["labels"] for item in items], UNFAIR_NAMES)
    scores = {
        "unfair_accuracy": binary["accuracy"], "unfair_precision": binary["precision"],
        "unfair_recall": binary["recall"], "unfair_f1": binary["f1"],
        "macro_f1": categories["macro_f1"], "micro_f1": categories["micro_f1"],
        "unparsed_rate": m.mean_or_none([float(flag is None) for flag, _ in parsed]),
        "_counts": {"gold_unfair": sum(gold_unfair), "categories_scored": categories["categories_scored"]},
    }
    per_category = {name: {"f1": categories["per_category"][name], "support": categories["support"][name]}
                    for name in categories["per_category"]}
    return scores, per_category


def score_ranking(config: Any, items: list[Any], loglik: list[Any], rm_groups: list[list[float]] | None) -> dict[str, Any]:
    k, gain = config.ranking.k, config.ranking.gain
    scores: dict[str, Any] = {}
    if loglik:
        groups = regroup(items, loglik)
        values = [[(ll.mean if config.ranking.length_normalize else ll.total) for ll in group] for group in groups]
        policy = m.ranking_scores([(v, item.relevance) for v, item in zip(values, items)], k, gain)
        scores[f"policy_ndcg@{k}"] = policy[f"ndcg@{k}"]
        scores["policy_pairwise_accuracy"] = policy["pairwise_accuracy"]
        scores["_policy_pairs"] = policy["pairs"]
        scores["_truncated_responses"] = sum(1 for ll in loglik if ll.truncated)
    if rm_groups is not None:
        reward = m.ranking_scores([(v, item.relevance) for v, item in zip(rm_groups, items)], k, gain)
        scores[f"reward_ndcg@{k}"] = reward[f"ndcg@{k}"]
        scores["reward_pairwise_accuracy"] = reward["pairwise_accuracy"]
        scores["_reward_pairs"] = reward["pairs"]
    return scores


def score_all(config: Any, tasks: list[str], chat_items: list[Any], answers: dict[str, Any], rank_items: list[Any],
              loglik: list[Any], rm_scores: dict[str, Any], skipped: dict[str, str]) -> dict[str, Any]:
    """``{"metrics": {task/metric: value}, "tasks": {task: details}, "per_category": {...}}`` for every task
    requested (a task that could not run has every metric None and a ``skipped`` reason)."""
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
            chosen, rejected = rm_scores["preferences"]
            entry = {"n": len(chosen), "rm_pairwise_accuracy": m.preference_accuracy(chosen, rejected),
                     "_mean_margin": m.mean_or_none([c - r for c, r in zip(chosen, rejected)])}
        else:
            entry = {"n": 0, "skipped": skipped.get("preferences", "no PreferencePairs in the evaluation data")}
        details["preferences"] = entry
    if "winrate" in tasks:
        if "winrate" in rm_scores:
            pairs, mine, theirs = rm_scores["winrate"]
            entry = dict(m.win_rate(mine, theirs))
        else:
            entry = {"n": 0, "skipped": skipped.get("winrate", "no other policy's answers")}
        details["winrate"] = entry
    if "behaviour" in tasks:
        gens = [answers[i.id] for i in chat_items if i.id in answers and not answers[i.id].skipped]
        entry = dict(m.behaviour_scores([g.text for g in gens], [g.finish_reason for g in gens],
                                        [g.completion_tokens for g in gens]))
        entry["skipped_items"] = sum(1 for i in chat_items if i.id in answers and answers[i.id].skipped)
        if not gens:
            entry["skipped"] = "no answers"
        details["behaviour"] = entry

    flat: dict[str, Any] = {}
    for task, entry in details.items():
        for name in metric_names(task, k):
            value = entry.get(name)
            flat[f"{task}/{name}"] = float(value) if isinstance(value, (int, float)) else None
            entry.setdefault(name, None)
    return {"metrics": flat, "tasks": details, "per_category": per_category, "skipped": skipped}
