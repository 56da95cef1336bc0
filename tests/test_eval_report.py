"""Eval reports: the markdown table, the bar chart, and side-by-side comparisons of several runs."""

from __future__ import annotations

from pathlib import Path

from lexalign.evaluation import report


def _results(label: str, f1: float | None) -> dict:
    return {
        "name": "tiny", "label": label, "model": {"spec": f"runs/tiny/{label}", "model": f"tiny-{label}", "backend": "vllm"},
        "data": {"files": {"sft_valid.jsonl": {"kind": "chat", "sha256": "ab" * 32}}, "max_per_task": 8, "seed": 0},
        "metrics": {"extract/presence_f1": f1, "behaviour/length_mean": 12.0, "behaviour/stop_rate": 0.5},
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
    assert "| Clause extraction (CUAD) | presence_accuracy | n/a | 8 |" in text
    assert "|  | presence_f1 | 0.750 |  |" in text
    assert "| Reward-model win rate | win_rate | n/a | 0 |" in text
    assert "| arbitration | n/a | 0 |" in text and "| choice of law | 0.500 | 2 |" in text
    assert "- winrate: no reward_model given" in text
    assert "- extract: 1 item(s) without an answer" in text


def test_plot_and_comparison(tmp_path: Path) -> None:
    png = report.plot(_results("sft", 0.75), tmp_path / "eval.png")
    assert png.read_bytes()[:4] == b"\x89PNG"
    assert set(report.share_metrics(_results("sft", None))) == {"extract/presence_f1", "behaviour/stop_rate"}
    files = report.write_comparison([_results("sft", 0.75), _results("dpo", 0.8)], tmp_path / "cmp", "tiny: sft vs dpo")
    table = files["markdown"].read_text()
    assert "| Metric | sft | dpo |" in table and "| extract/presence_f1 | 0.750 | 0.800 |" in table
    assert files["plot"].read_bytes()[:4] == b"\x89PNG"
