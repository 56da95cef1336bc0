"""Bootstrap intervals and paired stage-vs-stage differences on hand-made data with known answers."""

from __future__ import annotations

import numpy as np
import pytest

from lexalign.evaluation import uncertainty as u


def _scores(values: list[float], prefix: str = "item") -> u.ItemScores:
    return u.ItemScores([f"{prefix}:{i}" for i in range(len(values))], {"correct": values})


def test_constant_metric_has_a_zero_width_interval() -> None:
    for value in (0.0, 1.0):
        entry = u.interval(_scores([value] * 50), u.mean_of("correct"))
        assert entry["value"] == entry["ci_low"] == entry["ci_high"] == value
        assert entry["n"] == 50 and entry["resamples"] >= 1000 and entry["level"] == 0.95


def test_interval_of_a_known_proportion_covers_it_and_shrinks_with_n() -> None:
    widths = []
    for n in (40, 400):
        values = [1.0] * int(0.6 * n) + [0.0] * (n - int(0.6 * n))
        entry = u.interval(_scores(values), u.mean_of("correct"), resamples=2000, seed=3)
        assert entry["value"] == pytest.approx(0.6)
        assert entry["ci_low"] < 0.6 < entry["ci_high"]
        # the normal approximation of a proportion's 95 % interval: +- 1.96 sqrt(p(1-p)/n)
        half = 1.96 * np.sqrt(0.6 * 0.4 / n)
        assert entry["ci_high"] - entry["ci_low"] == pytest.approx(2 * half, rel=0.2)
        widths.append(entry["ci_high"] - entry["ci_low"])
    assert widths[1] < widths[0] / 2.5   # ten times the items: about a third of the width


def test_intervals_are_seeded() -> None:
    scores = _scores([0.31, 0.02, 0.77, 0.95, 0.18, 0.64, 0.49, 0.11, 0.86, 0.57])  # e.g. span F1 per item
    first = u.interval(scores, u.mean_of("correct"), seed=7)
    assert u.interval(scores, u.mean_of("correct"), seed=7) == first
    assert u.interval(scores, u.mean_of("correct"), seed=8) != first


def test_undefined_metric_and_empty_items() -> None:
    scores = u.ItemScores(["a", "b"], {"span": [np.nan, np.nan]})
    assert u.interval(scores, u.mean_of("span"))["value"] is None
    empty = u.interval(u.ItemScores([], {"correct": []}), u.mean_of("correct"))
    assert empty == {**empty, "value": None, "ci_low": None, "ci_high": None, "n": 0}
    # items without a value in the column do not count: mean of the others
    partial = u.interval(u.ItemScores(["a", "b", "c"], {"span": [1.0, np.nan, 0.0]}), u.mean_of("span"))
    assert partial["value"] == 0.5 and partial["ci_low"] == 0.0 and partial["ci_high"] == 1.0


def test_item_scores_round_trip_through_json() -> None:
    scores = u.ItemScores(["a", "b"], {"x": [1.0, np.nan]})
    again = u.ItemScores.from_json(scores.to_json())
    assert again.ids == ["a", "b"] and again.columns["x"][0] == 1.0 and np.isnan(again.columns["x"][1])
    with pytest.raises(ValueError, match="2 items"):
        u.ItemScores(["a", "b"], {"x": [1.0]})


def test_paired_difference_sign_and_significance() -> None:
    n = 100
    better = _scores([1.0] * 80 + [0.0] * 20)
    worse = _scores([1.0] * 50 + [0.0] * 50)
    up = u.paired_difference(better, worse, u.mean_of("correct"))
    assert up["delta"] == pytest.approx(0.3) and up["n"] == n
    assert 0 < up["ci_low"] < 0.3 < up["ci_high"] and up["excludes_zero"]
    down = u.paired_difference(worse, better, u.mean_of("correct"))
    assert down["delta"] == pytest.approx(-0.3) and down["ci_high"] < 0 and down["excludes_zero"]
    same = u.paired_difference(better, better, u.mean_of("correct"))
    assert same["delta"] == same["ci_low"] == same["ci_high"] == 0.0 and not same["excludes_zero"]
    # one item better, one item worse: no evidence either way
    a = _scores([1.0, 0.0] + [1.0, 0.0] * 49)
    b = _scores([0.0, 1.0] + [1.0, 0.0] * 49)
    tie = u.paired_difference(a, b, u.mean_of("correct"))
    assert tie["delta"] == 0.0 and tie["ci_low"] < 0 < tie["ci_high"] and not tie["excludes_zero"]


def test_pairing_sees_what_separate_intervals_cannot() -> None:
    """Stage B answers 8 more of 60 items right and none worse: the separate intervals overlap, the paired one
    (the same items drawn on both sides) excludes 0."""
    base = [1.0] * 30 + [0.0] * 30
    improved = [1.0] * 38 + [0.0] * 22
    a, b = _scores(improved), _scores(base)
    ia, ib = u.interval(a, u.mean_of("correct")), u.interval(b, u.mean_of("correct"))
    assert ia["ci_low"] < ib["ci_high"]                       # overlapping intervals
    paired = u.paired_difference(a, b, u.mean_of("correct"))
    assert paired["excludes_zero"] and paired["ci_low"] > 0


def test_paired_difference_uses_the_shared_items_only() -> None:
    a = u.ItemScores(["x", "y", "z"], {"correct": [1.0, 1.0, 0.0]})
    b = u.ItemScores(["z", "y", "w"], {"correct": [0.0, 0.0, 1.0]})
    entry = u.paired_difference(a, b, u.mean_of("correct"))
    assert entry["n"] == 2 and entry["delta"] == pytest.approx(0.5)   # y: 1 vs 0, z: 0 vs 0
    none = u.paired_difference(a, u.ItemScores(["q"], {"correct": [1.0]}), u.mean_of("correct"))
    assert none["n"] == 0 and none["delta"] is None and not none["excludes_zero"]


def test_ratio_metrics_resample_items_not_counts() -> None:
    """Precision = sum TP / sum (TP + FP) over the drawn items: a ratio of sums, not a mean of ratios."""
    scores = u.ItemScores(list("abcd"), {"tp": [1, 1, 0, 0], "fp": [0, 1, 1, 0]})
    precision = lambda r: u.ratio(r.sum("tp"), r.sum("tp") + r.sum("fp"), empty=0.0)  # noqa: E731
    entry = u.interval(scores, precision)
    assert entry["value"] == pytest.approx(0.5) and 0.0 <= entry["ci_low"] <= 0.5 <= entry["ci_high"] <= 1.0
