"""bench/first_token.py: the AUROC that says whether a model's 'Not present.' mass separates absent from present
clauses, whatever threshold the training mix puts on it."""

from __future__ import annotations

import pytest
from bench_support import load_bench_script


def test_auroc_is_one_for_perfect_separation_zero_reversed_and_half_for_ties() -> None:
    auroc = load_bench_script("first_token").auroc
    assert auroc(absent=[0.9, 0.8], present=[0.1, 0.2]) == 1.0
    assert auroc(absent=[0.1, 0.2], present=[0.9, 0.8]) == 0.0
    assert auroc(absent=[0.5, 0.5], present=[0.5, 0.5]) == 0.5


def test_auroc_does_not_move_when_every_probability_shifts_by_the_same_amount() -> None:
    """A change of the training mix that only moves the threshold leaves the ranking, and the AUROC, as it was."""
    auroc = load_bench_script("first_token").auroc
    absent, present = [0.30, 0.55, 0.62, 0.20], [0.25, 0.40, 0.10, 0.58]
    shifted = auroc([a + 0.2 for a in absent], [p + 0.2 for p in present])
    assert shifted == pytest.approx(auroc(absent, present))
    assert auroc(absent, present) == pytest.approx(10 / 16)


def test_the_presence_probe_ranks_absent_items_above_present_ones() -> None:
    """bench/presence_probe.py labels absent items 1 and reuses first_token's AUROC in that direction."""
    import torch

    load_bench_script("first_token")  # the probe imports it from bench/
    absent_auroc = load_bench_script("presence_probe").absent_auroc
    labels = torch.tensor([1.0, 1.0, 0.0, 0.0])
    assert absent_auroc(torch.tensor([0.9, 0.8, 0.1, 0.2]), labels) == 1.0
    assert absent_auroc(torch.tensor([0.1, 0.2, 0.9, 0.8]), labels) == 0.0
