"""Eval reports: the markdown table, the bar chart, and side-by-side comparisons of several runs."""

from __future__ import annotations

from pathlib import Path

from lexalign.evaluation import report


def _results(label: str, f1: float | None) -> dict:
    return {
        "name": "tiny", "label": label, "model": {"spec": f"runs/tiny/{label}", "model": f"tiny-{label}", "backend": "vllm"},
        "data": {"files": {"sft_valid.jsonl": {"kind": "chat", "sha256": "ab" * 32}}, "max_per_task": 8, "seed": 0},
        "metrics": {"extract/presence_f1": f1, "behaviour/length_mean": 12.0, "behaviour/stop_rate": 0.5},
        "intervals": {"extract/presence_f1": {"value": f1, "ci_low": None if f1 is None else f1 - 0.1,
                                              "ci_high": None if f1 is None else f1 + 0.1, "n": 8},
                      "behaviour/stop_rate": {"value": 0.5, "ci_low": 0.25, "ci_high": 0.75, "n": 8}},
        "chance": {"extract/presence_f1": {"value": 0.4, "what": "always 'present'"}},
        "bootstrap": {"resamples": 2000, "seed": 0, "level": 0.95},
        "tasks": {"extract": {"n": 8, "presence_f1": f1, "skipped_items": 1},
                  "winrate": {"n": 0, "skipped": "no reward_model given"},
                  "behaviour": {"n": 8, "length_mean": 12.0, "stop_rate": 0.5}},
        "per_category": {"unfair": {"arbitration": {"f1": None, "support": 0}, "choice of law": {"f1": 0.5, "support": 2}}},
        "timing_s": {"total": 3.2},
        "config": {"ranking": {"k": 5}},
    }


def test_markdown_table_and_notes() -> None:
    text = report.markdown(_results("sft", 0.75))
    assert "# Evaluation: tiny / sft" in text
    assert "| Clause extraction (CUAD) | presence_accuracy | n/a |  | 8 |  |" in text
    assert "|  | presence_f1 | 0.750 | [0.650, 0.850] |  | 0.400 (always 'present') |" in text
    assert "| Reward-model win rate | win_rate | n/a |  | 0 |  |" in text
    assert "percentile bootstrap" in text
    assert "| arbitration | n/a | 0 |" in text and "| choice of law | 0.500 | 2 |" in text
    assert "- winrate: no reward_model given" in text
    assert "- extract: 1 item(s) without an answer" in text


def test_plot_and_comparison(tmp_path: Path) -> None:
    png = report.plot(_results("sft", 0.75), tmp_path / "eval.png")
    assert png.read_bytes()[:4] == b"\x89PNG"
    assert set(report.share_metrics(_results("sft", None))) == {"extract/presence_f1", "behaviour/stop_rate"}
    files = report.write_comparison([_results("sft", 0.75), _results("dpo", 0.8)], tmp_path / "cmp", "tiny: sft vs dpo")
    table = files["markdown"].read_text()
    assert "| Metric | sft | dpo |" in table
    assert "| extract/presence_f1 | 0.750 [0.650, 0.850] | 0.800 [0.700, 0.900] |" in table
    assert files["plot"].read_bytes()[:4] == b"\x89PNG"


def _stage(root: Path, label: str, correct: list[float], answers: list[str]) -> None:
    """A completed eval folder of one stage: results.json, item_scores.json and predictions.jsonl."""
    import json

    from lexalign.evaluation.uncertainty import ItemScores

    folder = root / "eval" / label
    folder.mkdir(parents=True)
    ids = [f"/data/sft_test.jsonl:{i + 1}" for i in range(len(correct))]
    gold = [1.0] * len(correct)
    rows = ItemScores(ids, {"correct": correct, "tp": correct, "fp": [0.0] * len(correct),
                            "fn": [1.0 - c for c in correct], "unparsed": [0.0] * len(correct), "gold": gold})
    accuracy = sum(correct) / len(correct)
    result = _results(label, None)
    result.update(metrics={"presence/accuracy": accuracy}, tasks={"presence": {"n": len(correct), "accuracy": accuracy}},
                  intervals={"presence/accuracy": {"value": accuracy, "ci_low": accuracy - 0.1,
                                                   "ci_high": accuracy + 0.1, "n": len(correct)}},
                  chance={"presence/accuracy": {"value": 0.6, "what": "majority class"}},
                  bootstrap={"resamples": 1000, "seed": 0, "level": 0.95}, data={"split": "test", "max_per_task": 200,
                                                                                  "seed": 0})
    (folder / "results.json").write_text(json.dumps(result))
    (folder / "item_scores.json").write_text(json.dumps({"presence": rows.to_json()}))
    predictions = [{"id": i, "task": "presence", "prompt": f"Does it contain clause {n}? | Excerpt", "answer": a,
                    "reference": "Yes"} for n, (i, a) in enumerate(zip(ids, answers))]
    (folder / "predictions.jsonl").write_text("".join(json.dumps(p) + "\n" for p in predictions))
    (folder / "COMPLETE").write_text("ok")


def test_pipeline_report_pairs_stages_marks_real_differences_and_shows_answers(tmp_path: Path) -> None:
    from lexalign.report import build_report, comparisons

    assert comparisons(["base", "sft", "dpo", "ppo"]) == [("sft", "base"), ("dpo", "sft"), ("ppo", "dpo"),
                                                          ("ppo", "sft")]
    n = 80
    _stage(tmp_path, "base", [0.0] * n, ["Maybe"] * n)
    _stage(tmp_path, "sft", [1.0] * 60 + [0.0] * 20, ["Yes"] * 60 + ["No"] * 20)
    _stage(tmp_path, "dpo", [1.0] * 59 + [0.0, 1.0] + [0.0] * 19, ["Yes | sure"] * n)   # one better, one worse
    text = (build_report(tmp_path) / "report.md").read_text()
    assert "| metric | n | base | sft | dpo | chance |" in text
    assert "| presence/accuracy | 80 | 0.000 [-0.100, 0.100] | 0.750 [0.650, 0.850] |" in text
    assert "0.600 (majority class)" in text
    assert "| metric | sft − base | dpo − sft |" in text
    row = next(line for line in text.splitlines() if line.startswith("| presence/accuracy | +0.750"))
    sft_base, dpo_sft = row.split(" | ")[1:3]
    assert sft_base.startswith("+0.750 [") and sft_base.endswith("(n 80) **\\***")     # marked: excludes 0
    assert dpo_sft.startswith("+0.000 [") and "**" not in dpo_sft                      # not marked
    # the first prompts of the task, the gold answer and every stage's answer side by side ("|" escaped)
    assert "**presence** `sft_test.jsonl:1`: Does it contain clause 0?" in text
    assert "| gold | Yes |" in text and "| base | Maybe |" in text and "| dpo | Yes \\| sure |" in text
    assert "`sft_test.jsonl:4`" not in text
    assert "strictly higher" in text                                                  # DPO's accuracy note


def test_gold_judged_win_rate_scores_each_pair_of_answers_by_the_label() -> None:
    from lexalign.report import gold_outcomes

    def rows(*answers: str) -> dict:
        gold = [{"present": True, "category": "Audit Rights"}, {"present": True, "category": "Audit Rights"},
                {"present": False, "category": "Audit Rights"},
                {"answers": ["The Licensee shall keep books."], "present": True, "category": "Audit Rights"},
                {"answers": ["The Licensee shall keep books."], "present": True, "category": "Audit Rights"},
                {"answers": ["The Licensee shall keep books."], "present": True, "category": "Audit Rights"}]
        tasks = ["presence", "presence", "presence", "extract", "extract", "extract"]
        prompt = "Find the Audit Rights clause.\n\nExcerpt:\nThe Licensee shall keep books. Payment is due monthly."
        return {f"item{i}": {"task": t, "gold": g, "prompt": prompt, "answer": a}
                for i, (t, g, a) in enumerate(zip(tasks, gold, answers))}

    misquote = '"The Licensee shall keep ledgers."'   # 4 of 5 words, not in the excerpt
    later = rows("Yes", "Yes", "Perhaps", '"The Licensee shall keep books."', misquote, misquote)
    sft = rows("No", "Yes", "Yes", "Not present.", "Not present.", '"The Licensee shall keep books."')
    found = gold_outcomes(later, sft)
    # right vs wrong: win; both right: tie; unparseable vs a wrong parsed answer: loss; exact quote vs absent: win;
    # a misquote of a present clause beats "Not present." and loses to the exact quote
    assert found == {"presence": [1.0, 0.5, 0.0], "extract": [1.0, 1.0, 0.0]}
