"""Agreement measures on known values: Krippendorff's alpha (published examples) and Kendall's W (by hand)."""

from __future__ import annotations

import math
from types import SimpleNamespace

import numpy as np
import pytest

from lexalign.reward.agreement import fractional_ranks, kendalls_w, krippendorff_alpha, rankings_agreement

nan = np.nan

# Krippendorff (2011), "Computing Krippendorff's Alpha-Reliability", 4 coders x 12 units with missing values:
# nominal 0.743, ordinal 0.815, interval 0.849 (the values the `krippendorff` package tests against too).
FOUR_CODERS = [
    [1, 2, 3, 3, 2, 1, 4, 1, 2, nan, nan, nan],
    [1, 2, 3, 3, 2, 2, 4, 1, 2, 5, nan, 3],
    [nan, 3, 3, 3, 2, 3, 4, 2, 2, 5, 1, nan],
    [1, 2, 3, 3, 2, 4, 4, 1, 2, 5, 1, nan],
]
# The Wikipedia worked example, 3 coders x 15 units: nominal 0.691358, interval 0.810845.
THREE_CODERS = [
    [nan, nan, nan, nan, nan, 3, 4, 1, 2, 1, 1, 3, 3, nan, 3],
    [1, nan, 2, 1, 3, 3, 4, 3, nan, nan, nan, nan, nan, nan, nan],
    [nan, nan, 2, 1, 3, 4, 4, nan, 2, 1, 1, 3, 3, nan, 4],
]


@pytest.mark.parametrize("data, level, value, digits", [
    (FOUR_CODERS, "ordinal", 0.815, 3),
    (FOUR_CODERS, "nominal", 0.743, 3),
    (FOUR_CODERS, "interval", 0.849, 3),
    (THREE_CODERS, "nominal", 0.691358, 6),
    (THREE_CODERS, "interval", 0.810845, 6),
])
def test_krippendorff_alpha_known_values(data, level, value, digits) -> None:
    assert round(krippendorff_alpha(data, level), digits) == value


def test_krippendorff_alpha_edges() -> None:
    assert krippendorff_alpha([[1, 2, 3], [1, 2, 3]], "ordinal") == 1.0
    assert math.isnan(krippendorff_alpha([[1, 1], [1, 1]]))          # no variation: undefined
    assert math.isnan(krippendorff_alpha([[1, nan], [nan, 2]]))      # no unit with two values
    with pytest.raises(ValueError, match="level"):
        krippendorff_alpha([[1, 2], [2, 1]], "ratio-ish")  # type: ignore[arg-type]


def test_fractional_ranks() -> None:
    assert fractional_ranks([1, 2, 2, 3]).tolist() == [1, 2.5, 2.5, 4]
    assert fractional_ranks([2, 1, 1]).tolist() == [3, 1.5, 1.5]


def test_kendalls_w_known_values() -> None:
    assert kendalls_w([[1, 2, 3, 4]] * 3) == pytest.approx(1.0)
    # R = [6, 7, 8, 9], S = 5, W = 12 * 5 / (9 * (64 - 4)) = 1/9
    assert kendalls_w([[1, 2, 3, 4], [1, 2, 3, 4], [4, 3, 2, 1]]) == pytest.approx(1 / 9)
    assert kendalls_w([[1, 2, 3], [3, 2, 1]]) == pytest.approx(0.0)
    # ties: [1,1,2] -> [1.5,1.5,3]; R = [2.5, 3.5, 6], S = 6.5; T = 2^3 - 2 = 6; W = 78 / (4*24 - 2*6) = 13/14
    assert kendalls_w([[1, 1, 2], [1, 2, 3]]) == pytest.approx(13 / 14)
    assert math.isnan(kendalls_w([[1, 1], [1, 1]]))
    assert math.isnan(kendalls_w([[1, 2]]))


def test_rankings_agreement_over_store_rows() -> None:
    def task(pid, *rankings):
        return SimpleNamespace(prompt_id=pid, candidates=[None] * len(rankings[0][1]),
                               rankings=[SimpleNamespace(annotator=a, ranks=r) for a, r in rankings])

    perfect = [task("t1", ("a", [1, 2, 3]), ("b", [1, 2, 3])), task("t2", ("a", [2, 1]), ("c", [2, 1])),
               task("solo", ("a", [1, 2]))]
    summary = rankings_agreement(perfect)
    assert summary.tasks_with_overlap == 2 and summary.rankings_in_overlap == 4
    assert summary.alpha_ordinal == pytest.approx(1.0) and summary.mean_kendall_w == pytest.approx(1.0)
    assert "0.000" not in summary.as_text() and "1.000" in summary.as_text()
    split = rankings_agreement([task("t1", ("a", [1, 2, 3]), ("b", [3, 2, 1]))])
    assert split.alpha_ordinal < 0 and split.mean_kendall_w == pytest.approx(0.0)
    assert "No task" in rankings_agreement([task("solo", ("a", [1, 2]))]).as_text()


def _task(pid, rankings, meta=None, source="app"):
    return SimpleNamespace(prompt_id=pid, meta=meta or {}, source=source, candidates=[None] * len(rankings[0][1]),
                           rankings=[SimpleNamespace(annotator=a, ranks=r) for a, r in rankings])


@pytest.mark.parametrize("alpha, band", [(1.0, "reliable"), (0.8, "reliable"), (0.79, "tentative"),
                                         (0.667, "tentative"), (0.666, "unreliable"), (-0.2, "unreliable"),
                                         (nan, "undefined")])
def test_alpha_bands_follow_krippendorffs_thresholds(alpha, band) -> None:
    from lexalign.reward.agreement import AgreementSummary

    summary = AgreementSummary(tasks_with_overlap=1, rankings_in_overlap=2, alpha_ordinal=alpha)
    assert summary.alpha_band() == band
    text = summary.explanation()
    # what the numbers mean and the usual thresholds, always; then where the current value stands
    assert "Krippendorff's alpha says how much more the annotators agree than chance" in text
    assert "alpha >= 0.8 is reliable, >= 0.667 is enough for tentative conclusions, below 0.667" in text
    assert "Kendall's W says how alike the rankings of one task are (1 = identical, 0 = no agreement)" in text
    if band == "undefined":
        assert "There is no alpha yet" in text
    else:
        assert f"The current alpha, {alpha:.3f}, is {band}:" in text


def test_explanation_and_most_disputed_on_constructed_rankings() -> None:
    tasks = [
        _task("agree", [("a", [1, 2, 3]), ("b", [1, 2, 3])], {"task": "unfair", "doc_id": "Acme Terms"}),
        _task("split", [("a", [1, 2, 3]), ("b", [3, 2, 1])], {"task": "extract", "category": "Governing Law"}),
        _task("partial", [("a", [1, 2, 3]), ("b", [1, 3, 2])], {"task": "presence", "category": "Non-Compete"}),
        _task("all-tied", [("a", [1, 1]), ("b", [1, 1])]),
        _task("solo", [("a", [1, 2])]),
    ]
    summary = rankings_agreement(tasks)
    assert summary.tasks_with_overlap == 4
    by_id = {t["prompt_id"]: t for t in summary.per_task}
    # R = [2, 5, 5], S = 6, W = 12 * 6 / (4 * 24) = 0.75
    assert by_id["partial"]["kendall_w"] == pytest.approx(0.75) and by_id["split"]["kendall_w"] == pytest.approx(0)
    assert by_id["split"]["meta"] == {"task": "extract", "category": "Governing Law"}
    assert by_id["split"]["source"] == "app"
    # lowest W first; identical rankings (W = 1) and undefined W (all tied) are not disputes
    assert [t["prompt_id"] for t in summary.most_disputed()] == ["split", "partial"]
    assert [t["prompt_id"] for t in summary.most_disputed(1)] == ["split"]
    assert summary.alpha_band() == "unreliable" and "is unreliable:" in summary.explanation()
    assert rankings_agreement(tasks[:1]).alpha_band() == "reliable" and not rankings_agreement(tasks[:1]).most_disputed()
    # many disputed tasks: only the lowest ten, ordered by W
    many = [_task(f"t{i:02d}", [("a", [1, 2, 3, 4]), ("b", [1, 2, 3, 4]), ("c", [4 - (i % 4), 1, 2, 3])])
            for i in range(16)]
    lowest = rankings_agreement(many).most_disputed(10)
    ws = [t["kendall_w"] for t in lowest]
    assert len(lowest) == 10 and ws == sorted(ws)
    assert max(ws) <= min(t["kendall_w"] for t in rankings_agreement(many).per_task if t not in lowest)
