"""How sure a number is: percentile bootstrap intervals of every metric, alone and as a paired difference.

Every task keeps one row of numbers per scored item (``ItemScores``: correct or not, TP/FP/FN counts, the
item's span F1, ...). A metric is a *formula* over those rows, written against a ``Resample`` (column sums
and gathered values over a resample of the items), so one definition gives the point value (each item once)
and the value on every bootstrap resample (items drawn with replacement, as many as there are).

* ``interval(scores, formula)``: the point value and the 95 % percentile interval over ``resamples`` draws
  (seeded); resamples where the metric is undefined (e.g. precision with nothing predicted positive never
  happens, but F1 of a category absent from the draw does) are left out of the percentiles.
* ``paired_difference(a, b, formula)``: two stages scored on the same items; the SAME resampled items are used
  on both sides, so what the items have in common (easy or hard items) cancels, and the interval is that of
  ``metric(a) - metric(b)``. ``excludes_zero`` marks a difference whose interval lies on one side of 0.

Intervals are per metric and per comparison: with dozens of metrics a few intervals exclude 0 by chance alone
(about 1 in 20 when nothing changed).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np

DEFAULT_RESAMPLES = 2000
DEFAULT_LEVEL = 0.95


@dataclass
class ItemScores:
    """Per-item numbers of one task: ``columns[name][i]`` belongs to the item ``ids[i]`` (NaN: not applicable)."""

    ids: list[str]
    columns: dict[str, np.ndarray] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.columns = {name: np.asarray(values, dtype=float) for name, values in self.columns.items()}
        for name, values in self.columns.items():
            if values.shape != (len(self.ids),):
                raise ValueError(f"column {name!r} has {values.shape} values for {len(self.ids)} items")

    def __len__(self) -> int:
        return len(self.ids)

    def subset(self, ids: list[str]) -> "ItemScores":
        """The rows of ``ids``, in that order (every id must be here)."""
        where = {item: i for i, item in enumerate(self.ids)}
        rows = np.array([where[item] for item in ids], dtype=int)
        return ItemScores(list(ids), {name: values[rows] for name, values in self.columns.items()})

    def to_json(self) -> dict[str, Any]:
        return {"ids": list(self.ids),
                "columns": {name: [None if math.isnan(v) else float(v) for v in values]
                            for name, values in self.columns.items()}}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> "ItemScores":
        return cls(list(data["ids"]), {name: [np.nan if v is None else v for v in values]
                                       for name, values in data["columns"].items()})


class Resample:
    """Items drawn for B resamples at once: ``counts[b, i]`` = how often item i is in resample b."""

    def __init__(self, scores: ItemScores, rows: np.ndarray) -> None:
        self.scores = scores
        self.rows = rows                                   # (B, n) item indices
        n = len(scores)
        self.counts = np.zeros((rows.shape[0], n))
        np.add.at(self.counts, (np.arange(rows.shape[0])[:, None], rows), 1.0)

    def sum(self, column: str) -> np.ndarray:
        """(B,) sums of a column over each resample (NaN rows count as 0)."""
        values = np.nan_to_num(self.scores.columns[column], nan=0.0)
        return self.counts @ values

    def count(self, column: str) -> np.ndarray:
        """(B,) how many drawn items have a value (not NaN) in the column."""
        return self.counts @ (~np.isnan(self.scores.columns[column])).astype(float)

    def values(self, column: str) -> np.ndarray:
        """(B, n) the column's values of the drawn items (for medians)."""
        return self.scores.columns[column][self.rows]


Formula = Callable[[Resample], np.ndarray]


def ratio(numerator: np.ndarray, denominator: np.ndarray, empty: float = np.nan) -> np.ndarray:
    """numerator / denominator, ``empty`` where the denominator is 0."""
    out = np.full(np.shape(numerator), empty, dtype=float)
    np.divide(numerator, denominator, out=out, where=np.asarray(denominator) != 0)
    return out


def mean_of(column: str) -> Formula:
    """The mean of a column over the items that have a value in it (None when none has)."""
    return lambda r: ratio(r.sum(column), r.count(column))


def identity(scores: ItemScores) -> Resample:
    return Resample(scores, np.arange(len(scores))[None, :])


def draws(n: int, resamples: int, seed: int) -> np.ndarray:
    """(resamples, n) item indices drawn with replacement from a seeded generator."""
    return np.random.default_rng(seed).integers(0, n, size=(resamples, n))


def _finite(value: float) -> float | None:
    return None if value is None or not math.isfinite(value) else float(value)


def _percentiles(values: np.ndarray, level: float) -> tuple[float | None, float | None]:
    values = values[np.isfinite(values)]
    if values.size == 0:
        return None, None
    tail = (1.0 - level) / 2.0 * 100.0
    low, high = np.percentile(values, [tail, 100.0 - tail])
    return float(low), float(high)


def intervals(scores: ItemScores, formulas: dict[str, Formula], resamples: int = DEFAULT_RESAMPLES,
              seed: int = 0, level: float = DEFAULT_LEVEL) -> dict[str, dict[str, Any]]:
    """Per metric ``{"value", "ci_low", "ci_high", "n", "level", "resamples"}`` (None where undefined).

    The metrics of one task share their resamples (the same drawn items), as they share their items."""
    n = len(scores)
    found: dict[str, dict[str, Any]] = {}
    point = identity(scores) if n else None
    drawn = Resample(scores, draws(n, resamples, seed)) if n else None
    for name, formula in formulas.items():
        entry: dict[str, Any] = {"value": None, "ci_low": None, "ci_high": None, "n": n, "level": level,
                                 "resamples": resamples}
        if n:
            entry["value"] = _finite(formula(point)[0])
            if entry["value"] is not None:
                entry["ci_low"], entry["ci_high"] = _percentiles(formula(drawn), level)
        found[name] = entry
    return found


def interval(scores: ItemScores, formula: Formula, resamples: int = DEFAULT_RESAMPLES, seed: int = 0,
             level: float = DEFAULT_LEVEL) -> dict[str, Any]:
    """One metric's value and percentile interval (see ``intervals``)."""
    return intervals(scores, {"metric": formula}, resamples, seed, level)["metric"]


def paired_differences(a: ItemScores, b: ItemScores, formulas: dict[str, Formula],
                       resamples: int = DEFAULT_RESAMPLES, seed: int = 0,
                       level: float = DEFAULT_LEVEL) -> dict[str, dict[str, Any]]:
    """Per metric: metric(a) - metric(b) on the items both were scored on, with a paired bootstrap interval.

    ``{"delta", "ci_low", "ci_high", "n", "excludes_zero", "level", "resamples"}``; ``n`` = shared items.
    A metric undefined on either side has delta None."""
    in_b = set(b.ids)
    shared = [item for item in a.ids if item in in_b]
    found: dict[str, dict[str, Any]] = {}
    if shared:
        a, b = a.subset(shared), b.subset(shared)
        rows = draws(len(shared), resamples, seed)
        point_a, point_b = identity(a), identity(b)
        drawn_a, drawn_b = Resample(a, rows), Resample(b, rows)
    for name, formula in formulas.items():
        entry: dict[str, Any] = {"delta": None, "ci_low": None, "ci_high": None, "n": len(shared),
                                 "excludes_zero": False, "level": level, "resamples": resamples}
        if shared:
            delta = _finite(formula(point_a)[0] - formula(point_b)[0])
            if delta is not None:
                low, high = _percentiles(formula(drawn_a) - formula(drawn_b), level)
                entry.update(delta=delta, ci_low=low, ci_high=high,
                             excludes_zero=low is not None and high is not None and (low > 0 or high < 0))
        found[name] = entry
    return found


def paired_difference(a: ItemScores, b: ItemScores, formula: Formula, resamples: int = DEFAULT_RESAMPLES,
                      seed: int = 0, level: float = DEFAULT_LEVEL) -> dict[str, Any]:
    """One metric's paired difference (see ``paired_differences``)."""
    return paired_differences(a, b, {"metric": formula}, resamples, seed, level)["metric"]


def wilson_interval(successes: float, n: int, level: float = DEFAULT_LEVEL) -> tuple[float | None, float | None]:
    """Wilson score interval of a proportion (pairwise accuracies: ties count one half). Unlike the normal
    approximation it stays inside [0, 1] and keeps its coverage near 0 or 1 and for small n."""
    if n <= 0:
        return None, None
    z = {0.9: 1.6448536, 0.95: 1.9599640, 0.99: 2.5758293}.get(level)
    if z is None:
        raise ValueError(f"level {level}: expected 0.9, 0.95 or 0.99")
    p = successes / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return max(0.0, centre - half), min(1.0, centre + half)
