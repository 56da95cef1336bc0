"""One page per pipeline run: what each stage did to the assistant, in numbers and pictures.

    lexalign report --run runs/tiny

Writes ``<run>/report/report.md`` and ``report.html`` (same content) with: the stage x metric table
(base, SFT, DPO, PPO, from each stage's ``lexalign eval`` results), the wall time of every pipeline step,
training curves and eval bar charts (PNG), the lineage (which run fed which, with input hashes), and the
data and model cards. Numbers are reported as measured.
"""

from __future__ import annotations

import html
import json
import logging
import shutil
from pathlib import Path
from typing import Any

from lexalign.errors import LexalignError
from lexalign.plots import plot_bars

logger = logging.getLogger(__name__)

STAGE_ORDER = ["base", "sft", "reward", "dpo", "ppo", "grpo", "rloo"]
CURVES = ["loss.png", "training.png", "calibration.png", "rewards.png"]


def stage_rank(label: str) -> tuple[int, str]:
    head = label.split("-")[0]
    return (STAGE_ORDER.index(head) if head in STAGE_ORDER else len(STAGE_ORDER), label)


def load_eval_results(run_root: Path) -> dict[str, dict[str, Any]]:
    """label -> results.json of every completed eval under <run>/eval/."""
    results = {}
    for path in sorted((run_root / "eval").glob("*/results.json")):
        if (path.parent / "COMPLETE").is_file():
            results[path.parent.name] = json.loads(path.read_text())
    return dict(sorted(results.items(), key=lambda item: stage_rank(item[0])))


def fmt(value: Any) -> str:
    if value is None:
        return "–"
    if isinstance(value, float):
        return f"{value:.3f}"
    return str(value)


def metric_table(results: dict[str, dict[str, Any]]) -> tuple[list[str], list[str]]:
    """Markdown rows of the stage x metric table (metrics as rows: there are more metrics than stages)."""
    labels = list(results)
    metrics = sorted({m for r in results.values() for m in r.get("metrics", {})})
    lines = ["| metric | " + " | ".join(labels) + " |", "|---|" + "---|" * len(labels)]
    for metric in metrics:
        lines.append(f"| {metric} | " + " | ".join(fmt(results[l]["metrics"].get(metric)) for l in labels) + " |")
    return lines, metrics


def lineage(run_root: Path) -> list[str]:
    lines = ["| run | stage | parent | inputs | wall time |", "|---|---|---|---|---|"]
    for manifest_path in sorted(run_root.glob("*/manifest.json")) + sorted(run_root.glob("eval/*/manifest.json")):
        manifest = json.loads(manifest_path.read_text())
        inputs = "<br>".join(f"{role}: `{item['path']}` ({(item.get('sha256') or 'missing')[:10]})"
                             for role, item in manifest.get("inputs", {}).items())
        lines.append(f"| `{manifest_path.parent}` | {manifest.get('stage')} | `{manifest.get('parent') or '–'}` | "
                     f"{inputs or '–'} | {manifest.get('wall_time_s', 0):.0f} s |")
    return lines


def step_times(run_root: Path) -> list[str]:
    state_path = run_root / "pipeline.json"
    if not state_path.is_file():
        return ["(not run through `lexalign pipeline`)"]
    state = json.loads(state_path.read_text())
    lines = ["| step | status | seconds | command |", "|---|---|---|---|"]
    total = 0.0
    for step_id, step in state.get("steps", {}).items():
        seconds = step.get("seconds", 0.0)
        status = "skipped (unchanged)" if step.get("skipped") else step.get("status", "?")
        total += 0.0 if step.get("skipped") else seconds
        lines.append(f"| {step_id} | {status} | {seconds:.0f} | `{step.get('command', '')}` |")
    lines.append(f"| **total (this invocation's runs)** | | **{total:.0f}** | |")
    return lines


def cards(run_root: Path) -> list[str]:
    lines = []
    for card in sorted(run_root.glob("*/*/README.md")):
        lines += [f"### {card.parent.relative_to(run_root)}", "", card.read_text().strip(), ""]
    from lexalign.data.paths import shipped_dir

    data_card = run_root / "data" / "README.md"
    if data_card.is_file():
        lines += [data_card.read_text().strip().replace("# Data card", "### Data card", 1), ""]
    attribution = shipped_dir() / "ATTRIBUTION.md"
    if attribution.is_file():
        lines += ["### Data", "", attribution.read_text().strip(), ""]
    return lines


def eval_charts(results: dict[str, dict[str, Any]], metrics: list[str], out: Path) -> list[str]:
    """One grouped bar chart per task (metrics in [0, 1] only, so bars share an axis)."""
    groups: dict[str, dict[str, dict[str, float]]] = {}
    for metric in metrics:
        task = metric.split("/")[0]
        for label, result in results.items():
            value = result["metrics"].get(metric)
            if isinstance(value, (int, float)) and 0.0 <= value <= 1.0:
                groups.setdefault(task, {}).setdefault(metric.split("/", 1)[-1], {})[label] = float(value)
    images = []
    for task, values in sorted(groups.items()):
        path = out / f"eval-{task}.png"
        plot_bars(values, path, f"{task}: by stage", ylabel="score")
        images.append(f"![{task}]({path.name})")
    return images


def training_curves(run_root: Path, out: Path) -> list[str]:
    images = []
    for stage_dir in sorted((p for p in run_root.iterdir() if p.is_dir()), key=lambda p: stage_rank(p.name)):
        for name in CURVES:
            source = stage_dir / name
            if source.is_file():
                target = out / f"{stage_dir.name}-{name}"
                shutil.copyfile(source, target)
                images.append(f"![{stage_dir.name} {name}]({target.name})")
    return images


def build_report(run_root: str | Path) -> Path:
    run_root = Path(run_root)
    if not run_root.is_dir():
        raise LexalignError(f"--run {run_root}: no such run folder; run `lexalign pipeline` first")
    out = run_root / "report"
    out.mkdir(exist_ok=True)
    results = load_eval_results(run_root)
    table, metrics = metric_table(results) if results else (["(no completed evaluations)"], [])
    lines = [
        f"# lexalign report: {run_root.name}",
        "",
        "Contract-review metrics of every stage, measured by `lexalign eval` on the held-out splits "
        "(numbers as measured; the tiny default model is a smoke-size model, not a useful assistant).",
        "",
        "## Stage × metric",
        "",
        *table,
        "",
        "## Evaluation charts",
        "",
        *eval_charts(results, metrics, out),
        "",
        "## Pipeline steps and wall time",
        "",
        *step_times(run_root),
        "",
        "## Training curves",
        "",
        *training_curves(run_root, out),
        "",
        "## Lineage",
        "",
        *lineage(run_root),
        "",
        "## Model and data cards",
        "",
        *cards(run_root),
    ]
    markdown = "\n".join(lines) + "\n"
    (out / "report.md").write_text(markdown, encoding="utf-8")
    (out / "report.html").write_text(to_html(markdown, f"lexalign report: {run_root.name}"), encoding="utf-8")
    logger.info("report: %s", out / "report.md")
    return out


def to_html(markdown: str, title: str) -> str:
    from markdown_it import MarkdownIt

    # html=False: text from cards and configs is shown, never executed
    body = MarkdownIt("commonmark", {"html": False}).enable("table").render(markdown)
    style = ("body{font-family:system-ui,sans-serif;max-width:1100px;margin:2em auto;padding:0 1em;line-height:1.45}"
             "table{border-collapse:collapse;margin:1em 0}td,th{border:1px solid #ccc;padding:.3em .6em;"
             "font-size:.9em}th{background:#f3f3f3}img{max-width:100%}code{background:#f6f6f6}")
    return (f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
            f"<style>{style}</style></head><body>{body}</body></html>\n")
