"""Inter-annotator agreement on rankings: Krippendorff's alpha and Kendall's W (numpy only).

How the admin view reads the store's rankings (tasks ranked by at least two annotators):

* **Krippendorff's alpha, ordinal** (the headline number). Every (task, candidate) is a *unit*, every
  annotator a *coder*, and the value is the candidate's rank in that annotator's ranking, converted to
  fractional ranks (ties share the mean of the positions they span: dense [1, 2, 2, 3] -> [1, 2.5, 2.5, 4]).
  Units with a single value are ignored, missing values are allowed, so tasks ranked by different
  subsets of annotators pool into one number. 1 = perfect agreement, 0 = chance, < 0 = systematic
  disagreement. Formulas: Krippendorff (2011), "Computing Krippendorff's Alpha-Reliability".
* **Kendall's W** (coefficient of concordance) per task, with the tie correction, averaged over tasks.
  0 = no agreement, 1 = identical rankings. A task where every annotator tied every candidate has no
  defined W and is left out of the mean.

How the numbers read (``AgreementSummary.explanation``): Krippendorff's usual thresholds are alpha >= 0.8
reliable, >= 0.667 enough for tentative conclusions, below that unreliable. The tasks with the lowest W
(``AgreementSummary.most_disputed``) are where the guidelines or the answers most need a second look.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np

Level = Literal["nominal", "ordinal", "interval"]
Band = Literal["reliable", "tentative", "unreliable", "undefined"]

# Krippendorff (2004), "Content Analysis", 2nd ed., standards for data reliability: rely on alpha >= .800;
# .667 is the lowest value that still allows tentative conclusions.
ALPHA_RELIABLE = 0.8
ALPHA_TENTATIVE = 0.667


def fractional_ranks(ranks: Sequence[float]) -> np.ndarray:
    """Dense ranks with ties (1 = best) -> fractional ranks (tied items share the mean position)."""
    values = np.asarray(ranks, dtype=float)
    order = np.argsort(values, kind="stable")
    result = np.empty(len(values), dtype=float)
    position = 0
    sorted_values = values[order]
    while position < len(values):
        end = position
        while end + 1 < len(values) and sorted_values[end + 1] == sorted_values[position]:
            end += 1
        result[order[position:end + 1]] = (position + end) / 2 + 1
        position = end + 1
    return result


def kendalls_w(rank_matrix: Sequence[Sequence[float]]) -> float:
    """Kendall's W for m raters (rows) x n items (columns), tie-corrected; NaN when undefined.

    Each row is converted to fractional ranks first, so dense ranks with ties are fine.
    W = 12 S / (m^2 (n^3 - n) - m sum_j T_j), S = sum_i (R_i - mean R)^2, T_j = sum over tie groups (t^3 - t).
    """
    matrix = np.asarray(rank_matrix, dtype=float)
    if matrix.ndim != 2:
        raise ValueError("rank_matrix must be 2-D: one row per rater, one column per item")
    m, n = matrix.shape
    if m < 2 or n < 2:
        return math.nan
    fractional = np.vstack([fractional_ranks(row) for row in matrix])
    totals = fractional.sum(axis=0)
    s = float(((totals - totals.mean()) ** 2).sum())
    ties = 0.0
    for row in matrix:
        _, counts = np.unique(row, return_counts=True)
        ties += float((counts ** 3 - counts).sum())
    denominator = m ** 2 * (n ** 3 - n) - m * ties
    if denominator <= 0:
        return math.nan
    return 12 * s / denominator


def krippendorff_alpha(reliability_data: Sequence[Sequence[float]], level: Level = "ordinal") -> float:
    """Krippendorff's alpha for coders (rows) x units (columns); NaN marks a missing value.

    Returns NaN when no unit has two values or the data has no variation (alpha is undefined).
    """
    data = np.asarray(reliability_data, dtype=float)
    if data.ndim != 2:
        raise ValueError("reliability_data must be 2-D: one row per coder, one column per unit")
    values = np.unique(data[~np.isnan(data)])
    if len(values) < 2:
        return math.nan
    index = {v: i for i, v in enumerate(values)}
    v = len(values)
    coincidences = np.zeros((v, v))
    for unit in data.T:
        present = unit[~np.isnan(unit)]
        m_u = len(present)
        if m_u < 2:
            continue
        counts = np.zeros(v)
        for value in present:
            counts[index[value]] += 1
        coincidences += (np.outer(counts, counts) - np.diag(counts)) / (m_u - 1)
    n_c = coincidences.sum(axis=1)
    n = n_c.sum()
    if n <= 1:
        return math.nan
    delta = _distances(values, n_c, level)
    observed = float((coincidences * delta).sum())
    expected = float((np.outer(n_c, n_c) * delta).sum())
    if expected == 0:
        return math.nan
    return 1.0 - (n - 1) * observed / expected


def _distances(values: np.ndarray, n_c: np.ndarray, level: Level) -> np.ndarray:
    v = len(values)
    if level == "nominal":
        return 1.0 - np.eye(v)
    if level == "interval":
        return (values[:, None] - values[None, :]) ** 2
    if level == "ordinal":
        cumulative = np.concatenate([[0.0], np.cumsum(n_c)])
        delta = np.zeros((v, v))
        for c in range(v):
            for k in range(v):
                lo, hi = min(c, k), max(c, k)
                delta[c, k] = (cumulative[hi + 1] - cumulative[lo] - (n_c[c] + n_c[k]) / 2) ** 2
        return delta
    raise ValueError(f"level {level!r}: expected nominal, ordinal or interval")


@dataclass
class AgreementSummary:
    tasks_with_overlap: int = 0        # tasks ranked by >= 2 annotators
    rankings_in_overlap: int = 0
    alpha_ordinal: float = math.nan    # pooled over every (task, candidate) unit
    mean_kendall_w: float = math.nan   # mean over overlapping tasks where W is defined
    per_task: list[dict[str, Any]] = field(default_factory=list)

    def alpha_band(self) -> Band:
        """Where alpha falls among Krippendorff's thresholds ("undefined" when there is no alpha)."""
        if math.isnan(self.alpha_ordinal):
            return "undefined"
        if self.alpha_ordinal >= ALPHA_RELIABLE:
            return "reliable"
        if self.alpha_ordinal >= ALPHA_TENTATIVE:
            return "tentative"
        return "unreliable"

    def explanation(self) -> str:
        """What the two numbers mean, the usual thresholds and which band the current alpha is in (plain text)."""
        meaning = (f"Krippendorff's alpha says how much more the annotators agree than chance would (1 = perfect "
                   "agreement, 0 = no better than chance, below 0 = systematic disagreement). The usual thresholds: "
                   f"alpha >= {ALPHA_RELIABLE} is reliable, >= {ALPHA_TENTATIVE} is enough for tentative "
                   f"conclusions, below {ALPHA_TENTATIVE} the rankings are unreliable. Kendall's W says how "
                   "alike the rankings of one task are (1 = identical, 0 = no agreement); the mean is over tasks.")
        band = self.alpha_band()
        if band == "undefined":
            current = ("There is no alpha yet: it needs at least one task ranked by two annotators, with some "
                       "difference between the answers' ranks.")
        else:
            current = {
                "reliable": "the rankings can be relied on.",
                "tentative": "good enough for tentative conclusions only; look at the disputed tasks.",
                "unreliable": "the annotators do not agree enough to rely on the rankings; look at the "
                              "disputed tasks and the guidelines.",
            }[band]
            current = f"The current alpha, {self.alpha_ordinal:.3f}, is {band}: {current}"
        return f"{meaning} {current}"

    def most_disputed(self, limit: int = 10) -> list[dict[str, Any]]:
        """The ``limit`` tasks with the lowest Kendall's W, lowest first. Tasks with W undefined (every
        annotator tied every answer) or W = 1 (identical rankings) are not disputed and are left out."""
        disputed = [t for t in self.per_task if not math.isnan(t["kendall_w"]) and t["kendall_w"] < 1 - 1e-9]
        return sorted(disputed, key=lambda t: (t["kendall_w"], str(t["prompt_id"])))[:max(0, limit)]

    def as_text(self) -> str:
        if not self.tasks_with_overlap:
            return "No task has been ranked by two or more annotators yet; agreement needs overlap."
        def fmt(x: float) -> str:
            return "n/a" if math.isnan(x) else f"{x:.3f}"
        return (f"Krippendorff's alpha (ordinal): {fmt(self.alpha_ordinal)} over {self.tasks_with_overlap} "
                f"task(s) with overlap ({self.rankings_in_overlap} rankings); mean Kendall's W: "
                f"{fmt(self.mean_kendall_w)}")


def rankings_agreement(task_rankings: Sequence[Any]) -> AgreementSummary:
    """Agreement over ``Store.task_rankings()`` output (anything with ``.candidates`` and ``.rankings``)."""
    summary = AgreementSummary()
    coders: dict[str, int] = {}
    columns: list[dict[int, float]] = []
    ws: list[float] = []
    for task in task_rankings:
        if len(task.rankings) < 2:
            continue
        summary.tasks_with_overlap += 1
        summary.rankings_in_overlap += len(task.rankings)
        matrix = [list(r.ranks) for r in task.rankings]
        w = kendalls_w(matrix)
        # meta and source let a caller title the task for people (the ranking app's task_title)
        summary.per_task.append({"prompt_id": task.prompt_id, "annotators": len(matrix), "kendall_w": w,
                                 "meta": getattr(task, "meta", None) or {}, "source": getattr(task, "source", "")})
        if not math.isnan(w):
            ws.append(w)
        unit_columns: list[dict[int, float]] = [{} for _ in task.candidates]
        for ranking in task.rankings:
            coder = coders.setdefault(ranking.annotator, len(coders))
            for position, value in enumerate(fractional_ranks(ranking.ranks)):
                unit_columns[position][coder] = float(value)
        columns.extend(unit_columns)
    if columns:
        data = np.full((len(coders), len(columns)), np.nan)
        for unit, column in enumerate(columns):
            for coder, value in column.items():
                data[coder, unit] = value
        summary.alpha_ordinal = krippendorff_alpha(data, "ordinal")
    summary.mean_kendall_w = float(np.mean(ws)) if ws else math.nan
    return summary
