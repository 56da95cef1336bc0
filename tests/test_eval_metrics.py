"""Every eval metric on small hand-made cases with known answers: perfect, empty, partial, ties."""

from __future__ import annotations

import math

import pytest

from lexalign.evaluation import metrics as m

# --------------------------------------------------------------------------- answers and spans


@pytest.mark.parametrize("answer", ["Not present.", "not present", "  NOT PRESENT.  ", '"Not present."'])
def test_not_present_variants(answer: str) -> None:
    assert m.is_not_present(answer)
    assert m.answer_spans(answer) == []


def test_answer_spans_are_lines() -> None:
    assert m.answer_spans('"First clause."\n\n  Second clause.  \n') == ["First clause.", "Second clause."]
    assert m.answer_spans("The clause is not present in my view.") == ["The clause is not present in my view."]
    assert m.span_candidates("a b\nc d") == ["a b", "c d", "a b\nc d"]  # a gold span may hold a line break
    assert m.span_candidates("one line") == ["one line"]


def test_normalisation_is_squad_style() -> None:
    assert m.normalize_text("The  Licensee, shall NOT assign!") == "licensee shall not assign"
    assert m.exact_match("New York.", "new york") == 1.0
    assert m.exact_match("New York", "New Jersey") == 0.0


# --------------------------------------------------------------------------- span overlap


def test_token_f1_and_jaccard_perfect_empty_partial() -> None:
    gold = "Licensee shall not assign this Agreement without consent"
    assert m.token_f1(gold, gold) == 1.0 and m.token_jaccard(gold, gold) == 1.0
    assert m.token_f1("", "") == 1.0 and m.token_jaccard("", "") == 1.0
    assert m.token_f1("", gold) == 0.0 and m.token_jaccard("", gold) == 0.0
    # partial: the prediction has 6 of the 8 gold tokens and nothing else
    # precision 6/6, recall 6/8 -> F1 = 2 * 1 * 0.75 / 1.75 = 6/7; Jaccard = 6/8
    partial = "Licensee shall not assign this Agreement"
    assert m.token_f1(partial, gold) == pytest.approx(6 / 7)
    assert m.token_jaccard(partial, gold) == pytest.approx(0.75)
    # "the" is dropped: pred {quick, brown, fox} vs gold {quick, brown, dog}: P = R = 2/3, Jaccard 2/4
    assert m.token_f1("the quick brown fox", "quick brown dog") == pytest.approx(2 / 3)
    assert m.token_jaccard("the quick brown fox", "quick brown dog") == pytest.approx(0.5)


def test_token_f1_counts_repeated_tokens_once_each() -> None:
    # pred [a, a, b] vs gold [a, b, b]: common multiset {a, b} = 2 -> P = R = 2/3
    assert m.token_f1("x x y", "x y y") == pytest.approx(2 / 3)


def test_span_overlap_best_match_per_gold_span() -> None:
    gold = ["Governing law New York", "Venue Manhattan courts"]
    assert m.span_overlap(gold, gold) == (1.0, 1.0)
    assert m.span_overlap([], gold) == (0.0, 0.0)           # nothing quoted
    assert m.span_overlap(["anything"], []) is None          # no gold span: the item does not count
    # one gold span found exactly, the other not at all -> mean of 1 and 0
    f1, jaccard = m.span_overlap(["Governing law New York", "unrelated words"], gold)
    assert f1 == pytest.approx(0.5) and jaccard == pytest.approx(0.5)


# --------------------------------------------------------------------------- classification


def test_binary_scores_perfect_empty_partial() -> None:
    perfect = m.binary_scores([True, False, True], [True, False, True])
    assert perfect == {"n": 3, "support": 2, "accuracy": 1.0, "precision": 1.0, "recall": 1.0, "f1": 1.0}
    empty = m.binary_scores([], [])
    assert empty["n"] == 0 and empty["accuracy"] is None and empty["f1"] is None
    # TP = 1, FP = 1, FN = 1, TN = 1: P = R = F1 = 1/2, accuracy 2/4
    partial = m.binary_scores([True, True, False, False], [True, False, True, False])
    assert partial["precision"] == 0.5 and partial["recall"] == 0.5 and partial["f1"] == 0.5
    assert partial["accuracy"] == 0.5
    # never predicts positive: precision 0 by convention, F1 0
    never = m.binary_scores([False, False], [True, False])
    assert never["precision"] == 0.0 and never["recall"] == 0.0 and never["f1"] == 0.0 and never["accuracy"] == 0.5
    with pytest.raises(ValueError):
        m.binary_scores([True], [True, False])


def test_multilabel_f1_with_a_missing_category() -> None:
    gold = [{"a"}, {"b"}, set()]
    predicted = [{"a"}, set(), {"a"}]
    result = m.multilabel_f1(predicted, gold, ["a", "b", "c"])
    # a: TP 1, FP 1, FN 0 -> 2/3; b: TP 0, FN 1 -> 0; c: never gold, never predicted -> undefined (None)
    assert result["per_category"]["a"] == pytest.approx(2 / 3)
    assert result["per_category"]["b"] == 0.0
    assert result["per_category"]["c"] is None
    assert result["macro_f1"] == pytest.approx((2 / 3 + 0) / 2)    # c is left out of the mean
    assert result["micro_f1"] == pytest.approx(2 * 1 / (2 * 1 + 1 + 1))   # pooled TP 1, FP 1, FN 1
    assert result["categories_scored"] == 2
    assert result["support"] == {"a": 1, "b": 1, "c": 0}


def test_multilabel_f1_perfect_and_empty() -> None:
    assert m.multilabel_f1([{"a"}, {"a", "b"}], [{"a"}, {"a", "b"}])["macro_f1"] == 1.0
    nothing = m.multilabel_f1([set(), set()], [set(), set()], ["a"])
    assert nothing["macro_f1"] is None and nothing["micro_f1"] is None
    # a category predicted but never gold counts as 0
    assert m.multilabel_f1([{"x"}], [set()])["macro_f1"] == 0.0


# --------------------------------------------------------------------------- ranking


def test_ndcg_ideal_reversed_and_hand_computed() -> None:
    relevance = [3, 2, 1]
    assert m.ndcg_at_k([0.9, 0.5, 0.1], relevance, k=5) == pytest.approx(1.0)
    # reversed: gains 2^rel - 1 = 7, 3, 1 at positions 3, 2, 1
    # DCG = 1/log2(2) + 3/log2(3) + 7/log2(4) = 1 + 1.892789 + 3.5 = 6.392789
    # IDCG = 7 + 1.892789 + 0.5 = 9.392789  ->  NDCG = 0.680606
    reversed_ndcg = m.ndcg_at_k([0.1, 0.5, 0.9], relevance, k=5)
    assert reversed_ndcg == pytest.approx(0.680606, abs=1e-6)
    assert reversed_ndcg == pytest.approx((1 + 3 / math.log2(3) + 3.5) / (7 + 3 / math.log2(3) + 0.5))
    # linear gain: DCG = 1 + 2/log2(3) + 3/2, IDCG = 3 + 2/log2(3) + 1/2
    assert m.ndcg_at_k([0.1, 0.5, 0.9], relevance, k=5, gain_kind="linear") == pytest.approx(
        (1 + 2 / math.log2(3) + 1.5) / (3 + 2 / math.log2(3) + 0.5))


def test_ndcg_ties_cutoff_and_empty() -> None:
    # all scores tie: each item gets the mean discount of positions 1 and 2: (1 + 1/log2(3)) / 2 = 0.815465
    assert m.ndcg_at_k([0.0, 0.0], [1, 0], k=5) == pytest.approx((1 + 1 / math.log2(3)) / 2)
    # the only relevant item ranked 6th is outside the top 5
    assert m.ndcg_at_k([6, 5, 4, 3, 2, 1], [0, 0, 0, 0, 0, 1], k=5) == 0.0
    assert m.ndcg_at_k([1, 2], [0, 0]) is None         # nothing relevant: undefined
    assert m.ndcg_at_k([], []) is None


def test_pairwise_accuracy_with_ties() -> None:
    assert m.pairwise_accuracy([3, 2, 1], [3, 2, 1]) == (3.0, 3)
    assert m.pairwise_accuracy([1, 2, 3], [3, 2, 1]) == (0.0, 3)
    # relevance [2, 1, 1]: pairs (0,1) and (0,2) count, (1,2) is a gold tie and does not
    # (0,1): scores tie -> 1/2; (0,2): right order -> 1  => 1.5 / 2
    assert m.pairwise_accuracy([1, 1, 0], [2, 1, 1]) == (1.5, 2)
    assert m.pairwise_accuracy([1, 2], [4, 4]) == (0.0, 0)


def test_ranking_scores_pools_pairs_and_averages_ndcg() -> None:
    groups = [([3, 2, 1], [3, 2, 1]), ([1, 2, 3], [3, 2, 1]), ([5, 5], [2, 2])]
    result = m.ranking_scores(groups, k=5)
    assert result["n"] == 3
    assert result["pairs"] == 6                       # the all-tie group has no pairs
    assert result["pairwise_accuracy"] == pytest.approx(3 / 6)
    # group 3 has relevance > 0 so its NDCG is defined (= 1: ties among equally relevant items)
    assert result["ndcg@5"] == pytest.approx((1 + 0.680606 + 1) / 3, abs=1e-6)
    empty = m.ranking_scores([], k=5)
    assert empty["ndcg@5"] is None and empty["pairwise_accuracy"] is None


# --------------------------------------------------------------------------- preferences and win rate


def test_preference_accuracy_with_ties() -> None:
    assert m.preference_accuracy([2, 3], [1, 0]) == 1.0
    assert m.preference_accuracy([1, 2, 3], [0, 2, 4]) == pytest.approx(0.5)   # win, tie (1/2), loss
    assert m.preference_accuracy([], []) is None


def test_win_rate_counts_ties_half() -> None:
    result = m.win_rate([1.0, 1.0, 2.0, 5.0], [0.0, 1.0, 3.0, 4.0])
    assert result == {"n": 4, "wins": 2, "ties": 1, "losses": 1, "win_rate": pytest.approx(2.5 / 4)}
    assert m.win_rate([], [])["win_rate"] is None
    assert m.win_rate([1, 2], [1, 2])["win_rate"] == 0.5


# --------------------------------------------------------------------------- behaviour


def test_behaviour_scores() -> None:
    result = m.behaviour_scores(["Not present.", "I cannot help with that.", "Clause text", ""],
                                ["stop", "stop", "length", "stop"], [2, 6, 9, 1])
    assert result["n"] == 4
    assert result["stop_rate"] == 0.75 and result["length_cut_rate"] == 0.25
    assert result["length_mean"] == 4.5 and result["length_median"] == 4.0
    assert result["refusal_rate"] == 0.25 and result["not_present_rate"] == 0.25 and result["empty_rate"] == 0.25
    empty = m.behaviour_scores([], [], [])
    assert empty["stop_rate"] is None and empty["length_mean"] is None


@pytest.mark.parametrize("text,refusal", [("I'm sorry, I can't.", True), ("As an AI, no.", True),
                                          ("I cannot", True), ("Sorry", True), ("Indemnification clause", False),
                                          ("Not present.", False), ("I do not know", True)])
def test_refusals(text: str, refusal: bool) -> None:
    assert m.is_refusal(text) is refusal
