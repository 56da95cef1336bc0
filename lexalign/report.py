"""One page per pipeline run: what each stage did to the assistant, in numbers and pictures.

    lexalign report --run runs/tiny

Writes ``<run>/report/report.md`` and ``report.html`` (same content) with: the stage x metric table
(base, SFT, DPO, PPO, from each stage's ``lexalign eval`` results) with each value's 95 % bootstrap interval
and the level a model without skill reaches; the paired differences between stages (consecutive stages and
each stage vs SFT, on the items both were scored on, the same resampled items on both sides) with the ones
whose interval excludes 0 marked; a few held-out prompts per task with the gold answer and every stage's
answer side by side; the wall time of every pipeline step, training curves and eval bar charts with error bars
(PNG), the lineage (which run fed which, with input hashes), and the data and model cards. Numbers are
reported as measured.
"""

from __future__ import annotations

import html
import json
import logging
import shutil
from pathlib import Path
from typing import Any

from lexalign.errors import LexalignError

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


# How many held-out prompts per task the report shows with every stage's answer, and how much of them.
SIDE_BY_SIDE_PROMPTS = 3
SHOWN_CHARS = 300


def fmt(value: Any) -> str:
    if value is None:
        return "–"
    if isinstance(value, float):
        return f"{value:.3f}"
    return str(value)


def _cell(result: dict[str, Any], metric: str) -> str:
    """The value with its interval: "0.750 [0.650, 0.850]"."""
    value = (result.get("metrics") or {}).get(metric)
    spread = (result.get("intervals") or {}).get(metric) or {}
    if value is None or spread.get("ci_low") is None:
        return fmt(value)
    return f"{value:.3f} [{spread['ci_low']:.3f}, {spread['ci_high']:.3f}]"


def _chance(results: dict[str, dict[str, Any]], metric: str) -> str:
    for result in results.values():
        entry = (result.get("chance") or {}).get(metric)
        if entry and entry.get("value") is not None:
            return f"{entry['value']:.3f} ({entry.get('what', '')})"
    return ""


def _n(results: dict[str, dict[str, Any]], metric: str) -> str:
    counts = sorted({(r.get("intervals") or {}).get(metric, {}).get("n") for r in results.values()} - {None})
    return "/".join(str(c) for c in counts)


def metric_table(results: dict[str, dict[str, Any]]) -> tuple[list[str], list[str]]:
    """Markdown rows of the stage x metric table (metrics as rows: there are more metrics than stages): each value
    with its 95 % interval, the items it was computed on and the chance level."""
    labels = list(results)
    metrics = sorted({m for r in results.values() for m in r.get("metrics", {})})
    lines = ["| metric | n | " + " | ".join(labels) + " | chance |", "|---|---:|" + "---|" * len(labels) + "---|"]
    for metric in metrics:
        lines.append(f"| {metric} | {_n(results, metric)} | " + " | ".join(_cell(results[l], metric) for l in labels)
                     + f" | {_chance(results, metric)} |")
    return lines, metrics


def comparisons(labels: list[str]) -> list[tuple[str, str]]:
    """(later, earlier) pairs: consecutive stages, then each stage against SFT (each pair once)."""
    pairs = list(zip(labels[1:], labels[:-1]))
    if "sft" in labels:
        sft = labels.index("sft")
        pairs += [(label, "sft") if i > sft else ("sft", label) for i, label in enumerate(labels) if label != "sft"]
    return list(dict.fromkeys(pairs))


def paired_table(run_root: Path, results: dict[str, dict[str, Any]]) -> list[str]:
    """Differences later - earlier per metric on the items both stages were scored on, with a paired bootstrap
    interval (the same resampled items on both sides); ``*`` marks an interval that excludes 0."""
    from lexalign.evaluation.report import load_item_scores
    from lexalign.evaluation.scoring import REWARD_MODEL_METRICS, formulas, metric_names
    from lexalign.evaluation.uncertainty import paired_differences

    labels = list(results)
    pairs = comparisons(labels)
    if not pairs:
        return ["(one evaluated stage: nothing to compare)"]
    rows = {label: load_item_scores(run_root / "eval" / label) for label in labels}
    deltas: dict[str, dict[tuple[str, str], dict[str, Any]]] = {}
    notes = []
    for later, earlier in pairs:
        first, second = results[later], results[earlier]
        config = first.get("config") or {}
        k = (config.get("ranking") or {}).get("k", 5)
        boot = first.get("bootstrap") or {}
        skip = {name.format(k=k) for name in REWARD_MODEL_METRICS}
        for task in sorted(set(rows[later]) & set(rows[earlier])):
            against = [(r.get("against") or {}).get("spec") for r in (first, second)]
            if task == "winrate" and against[0] != against[1]:
                notes.append(f"winrate: {later} and {earlier} were compared with different policies; no difference")
                continue
            wanted = {name: f for name, f in formulas(task, k).items()
                      if f"{task}/{name}" not in skip and name in metric_names(task, k)}
            found = paired_differences(rows[later][task], rows[earlier][task], wanted,
                                       boot.get("resamples", 2000), boot.get("seed", 0), boot.get("level", 0.95))
            for name, entry in found.items():
                deltas.setdefault(f"{task}/{name}", {})[(later, earlier)] = entry
    if not deltas:
        return ["(no per-item scores: evaluate the stages again with this version of `lexalign eval`)"]
    header = [f"{later} − {earlier}" for later, earlier in pairs]
    lines = ["| metric | " + " | ".join(header) + " |", "|---|" + "---|" * len(pairs)]
    for metric in sorted(deltas):
        cells = []
        for pair in pairs:
            entry = deltas[metric].get(pair)
            if not entry or entry.get("delta") is None:
                cells.append("–")
                continue
            mark = " **\\***" if entry["excludes_zero"] else ""
            cells.append(f"{entry['delta']:+.3f} [{entry['ci_low']:+.3f}, {entry['ci_high']:+.3f}] "
                         f"(n {entry['n']}){mark}")
        lines.append(f"| {metric} | " + " | ".join(cells) + " |")
    return lines + [""] + [f"- {note}" for note in dict.fromkeys(notes)]


def _shorten(text: str, limit: int = SHOWN_CHARS) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= limit else text[:limit].rstrip() + " …"


def _table_text(text: str) -> str:
    return _shorten(text).replace("|", "\\|") or "(empty)"


def stage_answers(run_root: Path, labels: list[str]) -> dict[str, dict[str, dict[str, Any]]]:
    """label -> item id -> prediction row, for every stage with an eval that answered (skipped items left out)."""
    answers: dict[str, dict[str, dict[str, Any]]] = {}
    for label in labels:
        path = run_root / "eval" / label / "predictions.jsonl"
        if path.is_file():
            rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
            answers[label] = {row["id"]: row for row in rows if "answer" in row and not row.get("skipped")}
    return answers


def side_by_side(run_root: Path, labels: list[str]) -> list[str]:
    """For the first few held-out prompts of each generation task that every stage answered (in file order, so
    the same prompts in every report of the run): the request, the gold answer and each stage's answer."""
    answers = stage_answers(run_root, labels)
    shown = [label for label in labels if label in answers]
    if not shown:
        return ["(no predictions)"]
    lines: list[str] = []
    for task in ("extract", "presence", "normalize", "unfair"):
        first = answers[shown[0]]
        ids = [i for i, row in first.items() if row.get("task") == task and all(i in answers[l] for l in shown)]
        ids.sort(key=lambda i: (i.rsplit(":", 1)[0], int(i.rsplit(":", 1)[1]) if i.rsplit(":", 1)[-1].isdigit() else 0))
        for item_id in ids[:SIDE_BY_SIDE_PROMPTS]:
            row = first[item_id]
            lines += [f"**{task}** `{Path(item_id).name}`: {_shorten(row.get('prompt', ''), 400)}", "",
                      "| | answer |", "|---|---|", f"| gold | {_table_text(row.get('reference', ''))} |"]
            lines += [f"| {label} | {_table_text(answers[label][item_id]['answer'])} |" for label in shown]
            lines.append("")
    return lines or ["(no generation tasks evaluated)"]


def _data_line(results: dict[str, dict[str, Any]]) -> str:
    """Which split, how many items per task, which draw: from the first stage's results."""
    if not results:
        return "no completed evaluations"
    data = next(iter(results.values())).get("data") or {}
    split = f"the shipped {data['split']} split" if data.get("split") else "own files"
    limit = data.get("max_per_task")
    return f"{split}, at most {limit or 'all'} items per task, seeded draw (seed {data.get('seed')})"


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
    """One grouped bar chart per task (metrics in [0, 1] only, so bars share an axis), 95 % intervals as error bars."""
    from lexalign.plots import plot_intervals

    groups: dict[str, dict[str, dict[str, tuple[float, float | None, float | None]]]] = {}
    for metric in metrics:
        task = metric.split("/")[0]
        for label, result in results.items():
            value = result["metrics"].get(metric)
            spread = (result.get("intervals") or {}).get(metric) or {}
            if isinstance(value, (int, float)) and 0.0 <= value <= 1.0:
                groups.setdefault(task, {}).setdefault(metric.split("/", 1)[-1], {})[label] = (
                    float(value), spread.get("ci_low"), spread.get("ci_high"))
    images = []
    for task, values in sorted(groups.items()):
        path = out / f"eval-{task}.png"
        plot_intervals(values, path, f"{task}: by stage")
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


GOLD_JUDGED_TASKS = ("extract", "presence", "normalize", "unfair")


def gold_outcomes(rows: dict[str, dict[str, Any]], baseline: dict[str, dict[str, Any]]) -> dict[str, list[float]]:
    """task -> per held-out item 1 (this stage's answer agrees better with the lawyers' label than the baseline's),
    0.5 (as well) or 0 (worse), scored by the task's own per-item metric (``evaluation.gold.answer_scores``; an
    unparseable answer below any parsed one, an extraction misquote at half its span F1)."""
    from lexalign.evaluation.gold import answer_scores

    found: dict[str, list[float]] = {}
    for item_id in sorted(set(rows) & set(baseline)):
        row, base = rows[item_id], baseline[item_id]
        task = row.get("task")
        if task not in GOLD_JUDGED_TASKS or not isinstance(row.get("gold"), dict):
            continue
        messages = [{"role": "user", "content": str(row.get("prompt", ""))}]
        mine, theirs = (-1.0 if v is None else v
                        for v in answer_scores(task, row["gold"], messages, [row["answer"], base["answer"]]))
        found.setdefault(task, []).append(1.0 if mine > theirs else 0.5 if mine == theirs else 0.0)
    return found


def gold_win_rates(run_root: Path, labels: list[str], resamples: int = 2000, seed: int = 0) -> list[str]:
    """Win rate of every later stage against SFT judged by the gold labels, not by the policy's own reward model:
    per held-out item, which of the two answers scores higher on the task metric (ties count one half)."""
    import numpy as np

    from lexalign.evaluation.uncertainty import draws

    if "sft" not in labels:
        return ["(no SFT evaluation: nothing to judge against)"]
    answers = stage_answers(run_root, labels)
    later = [label for label in labels if label in answers and stage_rank(label) > stage_rank("sft")]
    if "sft" not in answers or not later:
        return ["(no stage after SFT was evaluated)"]
    lines = ["| stage vs SFT | task | n | wins | ties | losses | win rate [95 % CI] |",
             "|---|---|---:|---:|---:|---:|---|"]
    for label in later:
        outcomes = gold_outcomes(answers[label], answers["sft"])
        every = [v for task in GOLD_JUDGED_TASKS for v in outcomes.get(task, [])]
        for task, values in [*((t, outcomes[t]) for t in GOLD_JUDGED_TASKS if t in outcomes), ("all", every)]:
            if not values:
                continue
            array = np.asarray(values)
            boot = array[draws(len(array), resamples, seed)].mean(axis=1)
            low, high = np.percentile(boot, [2.5, 97.5])
            mark = " **\\***" if low > 0.5 or high < 0.5 else ""
            lines.append(f"| {label} | {task} | {len(array)} | {int((array == 1).sum())} | {int((array == 0.5).sum())} "
                         f"| {int((array == 0).sum())} | {array.mean():.3f} [{low:.3f}, {high:.3f}]{mark} |")
    return lines


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
        "Contract-review metrics of every stage, measured by `lexalign eval` on held-out data "
        f"({_data_line(results)}); numbers as measured (the tiny default model is a smoke-size model, not a "
        "useful assistant).",
        "",
        "## Stage × metric",
        "",
        "Each value with its 95 % bootstrap interval over the items (n = items scored). *chance*: what a model "
        "without skill scores on the same items (majority class, always 'present', random order, coin flip). "
        "A value whose interval overlaps chance, or another stage's interval, is not evidence of skill or of a "
        "difference on its own; the paired differences below are the sharper test.",
        "",
        *table,
        "",
        "## Differences between stages (paired)",
        "",
        "later − earlier on the items both stages were scored on, with a paired 95 % bootstrap interval (the same "
        "resampled items on both sides); **\\*** marks a difference whose interval excludes 0. The reward model's "
        "own metrics are the same for every stage and are left out. With this many metrics about one interval in "
        "20 excludes 0 by chance alone when nothing changed.",
        "",
        *paired_table(run_root, results),
        "",
        "## Win rate against SFT, judged by the lawyers' labels",
        "",
        "Per held-out item, the later stage's answer and the SFT answer are scored with the task's own metric "
        "against the gold label (span F1 or 'Not present.', a misquote at half its span F1, Yes/No, token F1, "
        "fair/unfair and categories; an unparseable answer loses to any parsed one); win 1, tie ½, loss 0. "
        "Chance (no difference) is 0.5; "
        "**\\*** marks a 95 % bootstrap interval that excludes it. This judge is not the reward model the "
        "policies were trained against.",
        "",
        *gold_win_rates(run_root, list(results)),
        "",
        "## Answers side by side",
        "",
        "The same held-out prompts for every stage (the first ones of each task that every stage answered): the "
        f"gold answer and each stage's answer (first {SHOWN_CHARS} characters).",
        "",
        *side_by_side(run_root, list(results)),
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
        "DPO's `rewards/accuracies` (TRL) counts a pair right only when the chosen answer's implicit reward is "
        "strictly higher; before training both rewards are 0, so it starts at 0 although chance is 0.5.",
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
