"""Eval results as files: results.json, results.md (markdown tables), eval.png (bar chart with 95 % intervals),
predictions.jsonl and item_scores.json (each task's per-item rows, for paired stage-vs-stage differences).

``write_comparison`` puts several eval results side by side (e.g. base, sft, dpo, ppo) in one table and one
bar chart, for pipeline reports (grouped bars with their interval as error bars: ``lexalign.plots.plot_intervals``).
"""

from __future__ import annotations

import json
import logging
import math
from pathlib import Path
from typing import Any

from lexalign.evaluation.scoring import metric_names
from lexalign.evaluation.uncertainty import ItemScores
from lexalign.plots import plot_intervals

logger = logging.getLogger(__name__)

TASK_TITLES = {
    "extract": "Clause extraction (CUAD)",
    "presence": "Clause presence, Yes/No (CUAD)",
    "normalize": "Normalised answers (CUAD)",
    "unfair": "Unfair-clause detection (CLAUDETTE)",
    "ranking": "Clause ranking vs lawyers' stars (ACORD)",
    "preferences": "Reward model on held-out preferences",
    "winrate": "Reward-model win rate",
    "behaviour": "Answer behaviour",
}
# Metrics that are not shares in [0, 1] stay out of the bar chart.
NOT_A_SHARE = ("length_mean", "length_median")


def fmt(value: Any) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "n/a"
    if isinstance(value, float):
        return f"{value:.3f}"
    return str(value)


def fmt_interval(entry: dict[str, Any] | None) -> str:
    """"[low, high]" of an interval entry, or "" when there is none."""
    if not entry or entry.get("ci_low") is None or entry.get("ci_high") is None:
        return ""
    return f"[{entry['ci_low']:.3f}, {entry['ci_high']:.3f}]"


def fmt_chance(entry: dict[str, Any] | None) -> str:
    if not entry or entry.get("value") is None:
        return ""
    return f"{entry['value']:.3f} ({entry.get('what', '')})"


def markdown(results: dict[str, Any]) -> str:
    model = results.get("model") or {}
    lines = [f"# Evaluation: {results.get('name')} / {results.get('label')}", ""]
    lines.append(f"- model: `{model.get('spec')}` (served as `{model.get('model')}`, backend {model.get('backend')})")
    if results.get("against"):
        lines.append(f"- win rate against: `{results['against'].get('spec')}` (`{results['against'].get('model')}`)")
    if results.get("reward_model"):
        lines.append(f"- reward model: `{results['reward_model'].get('reward_model')}`")
    data = results.get("data") or {}
    for path, info in (data.get("files") or {}).items():
        lines.append(f"- data: `{path}` ({info.get('kind')}, sha256 {str(info.get('sha256'))[:12]})")
    limit = data.get("max_per_task")
    split = f"{data['split']} split, " if data.get("split") else ""
    lines.append(f"- items per task: {split}at most {limit or 'all'} (seeded draw, seed {data.get('seed')}; the "
                 "drawn item ids are in results.json); greedy decoding")
    boot = results.get("bootstrap") or {}
    if boot:
        lines.append(f"- 95 % CI: percentile bootstrap over the items ({boot.get('resamples')} resamples, seed "
                     f"{boot.get('seed')}, level {boot.get('level')}); chance: what a model without skill scores")
    lines += ["", "| Task | Metric | Value | 95 % CI | n | chance |", "|---|---|---:|---|---:|---|"]
    k = ((results.get("config") or {}).get("ranking") or {}).get("k", 5)
    spreads = results.get("intervals") or {}
    chance = results.get("chance") or {}
    for task, entry in (results.get("tasks") or {}).items():
        names = metric_names(task, k) if task in TASK_TITLES else []
        for i, name in enumerate(names):
            title = TASK_TITLES.get(task, task) if i == 0 else ""
            n = entry.get("n") if i == 0 else ""
            key = f"{task}/{name}"
            lines.append(f"| {title} | {name} | {fmt(entry.get(name))} | {fmt_interval(spreads.get(key))} | "
                         f"{fmt(n) if n != '' else ''} | {fmt_chance(chance.get(key))} |")
    unfair = (results.get("per_category") or {}).get("unfair")
    if unfair:
        lines += ["", "## Unfair-clause categories (F1 per category; n/a = neither gold nor predicted)", "",
                  "| Category | F1 | Gold items |", "|---|---:|---:|"]
        for name, entry in unfair.items():
            lines.append(f"| {name} | {fmt(entry.get('f1'))} | {entry.get('support')} |")
    notes = [(task, entry["skipped"]) for task, entry in (results.get("tasks") or {}).items() if entry.get("skipped")]
    items_skipped = [(task, entry["skipped_items"]) for task, entry in (results.get("tasks") or {}).items()
                     if entry.get("skipped_items") and not entry.get("skipped")]
    if notes or items_skipped:
        lines += ["", "## Not evaluated", ""]
        lines += [f"- {task}: {reason}" for task, reason in notes]
        lines += [f"- {task}: {n} item(s) without an answer (prompt longer than the context)" for task, n in items_skipped]
    timing = results.get("timing_s") or {}
    if timing:
        lines += ["", "## Time (s)", "", " · ".join(f"{k} {v}" for k, v in timing.items())]
    return "\n".join(lines) + "\n"


def share_metrics(results: dict[str, Any]) -> dict[str, float]:
    """The metrics that are shares in [0, 1], for bar charts (None -> NaN, so the bar is missing)."""
    values = {}
    for key, value in (results.get("metrics") or {}).items():
        if key.split("/", 1)[1] in NOT_A_SHARE:
            continue
        values[key] = float("nan") if value is None else float(value)
    return values


Bar = tuple[float, float | None, float | None]   # value, interval low, interval high


def bars_of(results: dict[str, Any]) -> dict[str, Bar]:
    """The share metrics with their intervals: key -> (value, low, high) (NaN value: no bar)."""
    spreads = results.get("intervals") or {}
    bars = {}
    for key, value in share_metrics(results).items():
        entry = spreads.get(key) or {}
        bars[key] = (value, entry.get("ci_low"), entry.get("ci_high"))
    return bars


def plot(results: dict[str, Any], path: Path) -> Path:
    label = str(results.get("label") or "model")
    values = {key: {label: bar} for key, bar in bars_of(results).items()}
    return plot_intervals(values, path, f"Contract-review evaluation: {results.get('name')} / {label}")


def write_all(run_dir: Path, results: dict[str, Any], predictions: list[dict[str, Any]],
              item_scores: dict[str, ItemScores] | None = None) -> dict[str, str]:
    from lexalign.data.jsonl import write_text_atomic
    from lexalign.runs import write_json_atomic

    write_json_atomic(run_dir / "results.json", results)
    # compact: one number per item and column, hundreds of items per task
    write_text_atomic(run_dir / "item_scores.json",
                      json.dumps({task: rows.to_json() for task, rows in (item_scores or {}).items()}) + "\n")
    write_text_atomic(run_dir / "results.md", markdown(results))
    write_text_atomic(run_dir / "predictions.jsonl",
                      "".join(json.dumps(row, ensure_ascii=False, default=str) + "\n" for row in predictions))
    plot(results, run_dir / "eval.png")
    return {"results": "results.json", "report": "results.md", "plot": "eval.png", "predictions": "predictions.jsonl",
            "item_scores": "item_scores.json"}


def load_item_scores(run_dir: str | Path) -> dict[str, ItemScores]:
    """task -> ItemScores of an eval run directory ({} for results written before per-item rows were kept)."""
    path = Path(run_dir) / "item_scores.json"
    if not path.is_file():
        return {}
    return {task: ItemScores.from_json(rows) for task, rows in json.loads(path.read_text(encoding="utf-8")).items()}


def load_results(path: str | Path) -> dict[str, Any]:
    """results.json of an eval run directory (or the file itself)."""
    from lexalign.evaluation.backends import EvalError

    path = Path(path)
    file = path / "results.json" if path.is_dir() else path
    if not file.is_file():
        raise EvalError(f"{path}: no results.json; run `lexalign eval` first")
    return json.loads(file.read_text(encoding="utf-8"))


def write_comparison(results: list[dict[str, Any]], out_dir: Path, title: str = "Evaluation") -> dict[str, Path]:
    """One markdown table (metric x model) and one grouped bar chart for several eval results."""
    from lexalign.data.jsonl import write_text_atomic

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    labels = [str(r.get("label") or f"model{i}") for i, r in enumerate(results)]
    keys = list(dict.fromkeys(key for r in results for key in (r.get("metrics") or {})))
    lines = [f"# {title}", "", "Values with their 95 % bootstrap interval.", "",
             "| Metric | " + " | ".join(labels) + " |", "|---|" + "---:|" * len(labels)]
    for key in keys:
        cells = [f"{fmt((r.get('metrics') or {}).get(key))} {fmt_interval((r.get('intervals') or {}).get(key))}".strip()
                 for r in results]
        lines.append(f"| {key} | " + " | ".join(cells) + " |")
    md = out_dir / "comparison.md"
    write_text_atomic(md, "\n".join(lines) + "\n")
    values: dict[str, dict[str, Bar]] = {}
    for label, r in zip(labels, results):
        for key, bar in bars_of(r).items():
            values.setdefault(key, {})[label] = bar
    png = plot_intervals(values, out_dir / "comparison.png", title)
    return {"markdown": md, "plot": png}
