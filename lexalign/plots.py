"""PNG plots for run directories and reports (matplotlib, headless)."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)


def plot_curves(records: list[dict[str, Any]], keys: list[str], path: Path, title: str, x_key: str = "step") -> Path | None:
    """One line per metric key over ``x_key``; records missing a key are skipped. Returns None if nothing to plot."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    # by x: a stage may log a point after later ones (DPO's before-training row is known only after training)
    series = {key: sorted(((r[x_key], r[key]) for r in records if key in r and x_key in r), key=lambda p: p[0])
              for key in keys}
    series = {key: points for key, points in series.items() if points}
    if not series:
        logger.warning("no metrics to plot for %s", path.name)
        return None
    fig, ax = plt.subplots(figsize=(6.4, 4))
    for key, points in series.items():
        xs, ys = zip(*points)
        ax.plot(xs, ys, marker="o" if len(xs) < 20 else None, markersize=3, label=key)
    ax.set_xlabel(x_key)
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def plot_intervals(values: dict[str, dict[str, tuple[float, float | None, float | None]]], path: Path, title: str, ylabel: str = "score") -> Path:
    """Grouped bars ``values[group][series] = (value, low, high)`` with the interval as an error bar."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    groups = list(values) or ["(none)"]
    series = list(dict.fromkeys(name for group in values.values() for name in group)) or ["model"]
    width = 0.8 / len(series)
    fig, ax = plt.subplots(figsize=(max(6.4, 1.2 * len(groups)), 4))
    x = np.arange(len(groups))
    for i, name in enumerate(series):
        bars = [values.get(g, {}).get(name, (float("nan"), None, None)) for g in groups]
        heights = np.array([b[0] for b in bars], dtype=float)
        lows = np.array([b[0] - b[1] if b[1] is not None else 0.0 for b in bars], dtype=float)
        highs = np.array([b[2] - b[0] if b[2] is not None else 0.0 for b in bars], dtype=float)
        errors = np.nan_to_num(np.clip(np.vstack([lows, highs]), 0.0, None))
        ax.bar(x + i * width - 0.4 + width / 2, heights, width, label=name, yerr=errors, capsize=3,
               error_kw={"elinewidth": 1, "alpha": 0.8})
    ax.set_xticks(x, groups, rotation=20, ha="right")
    ax.set_ylabel(ylabel)
    ax.set_title(f"{title}\n(error bars: 95 % bootstrap interval)", fontsize=10)
    ax.grid(axis="y", alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
