"""Eval results as files: results.json, results.md (markdown tables), eval.png (bar chart), predictions.jsonl.

``write_comparison`` puts several eval results side by side (e.g. base, sft, dpo, ppo) in one table and one
bar chart, for pipeline reports.
"""

from __future__ import annotations

import json
import logging
import math
from pathlib import Path
from typing import Any

from lexalign.evaluation.scoring import metric_names

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
    lines.append(f"- items per task: at most {limit or 'all'} (seed {data.get('seed')}); greedy decoding")
    lines += ["", "| Task | Metric | Value | n |", "|---|---|---:|---:|"]
    k = ((results.get("config") or {}).get("ranking") or {}).get("k", 5)
    for task, entry in (results.get("tasks") or {}).items():
        names = metric_names(task, k) if task in TASK_TITLES else []
        for i, name in enumerate(names):
            title = TASK_TITLES.get(task, task) if i == 0 else ""
            n = entry.get("n") if i == 0 else ""
            lines.append(f"| {title} | {name} | {fmt(entry.get(name))} | {fmt(n) if n != '' else ''} |")
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


def plot(results: dict[str, Any], path: Path) -> Path:
    from lexalign.plots import plot_bars

    label = str(results.get("label") or "model")
    values = {key: {label: value} for key, value in share_metrics(results).items()} or {"(none)": {label: float("nan")}}
    return plot_bars(values, path, f"Contract-review evaluation: {results.get('name')} / {label}", ylabel="score")


def write_all(run_dir: Path, results: dict[str, Any], predictions: list[dict[str, Any]]) -> dict[str, str]:
    from lexalign.data.jsonl import write_text_atomic
    from lexalign.runs import write_json_atomic

    write_json_atomic(run_dir / "results.json", results)
    write_text_atomic(run_dir / "results.md", markdown(results))
    write_text_atomic(run_dir / "predictions.jsonl",
                      "".join(json.dumps(row, ensure_ascii=False, default=str) + "\n" for row in predictions))
    plot(results, run_dir / "eval.png")
    return {"results": "results.json", "report": "results.md", "plot": "eval.png", "predictions": "predictions.jsonl"}


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
    from lexalign.plots import plot_bars

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    labels = [str(r.get("label") or f"model{i}") for i, r in enumerate(results)]
    keys = list(dict.fromkeys(key for r in results for key in (r.get("metrics") or {})))
    lines = [f"# {title}", "", "| Metric | " + " | ".join(labels) + " |", "|---|" + "---:|" * len(labels)]
    for key in keys:
        lines.append(f"| {key} | " + " | ".join(fmt((r.get("metrics") or {}).get(key)) for r in results) + " |")
    md = out_dir / "comparison.md"
    write_text_atomic(md, "\n".join(lines) + "\n")
    values: dict[str, dict[str, float]] = {}
    for label, r in zip(labels, results):
        for key, value in share_metrics(r).items():
            values.setdefault(key, {})[label] = value
    png = plot_bars(values or {"(none)": {labels[0] if labels else "model": float("nan")}},
                    out_dir / "comparison.png", title, ylabel="score")
    return {"markdown": md, "plot": png}
