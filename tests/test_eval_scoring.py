"""Answer parsing and scoring on hand-made answers: junk is unparsed (and wrong), never the base rate; the chance
levels; every metric's per-item formula gives the metric's own value; intervals in the scored results."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from lexalign.data.prompts import FAIR_ANSWER, unfair_answer
from lexalign.evaluation import tasks as t
from lexalign.evaluation.backends import Generation
from lexalign.evaluation.scoring import METRICS, formulas, metric_names, score_all
from lexalign.evaluation.uncertainty import identity

SHIPPED = Path(__file__).resolve().parent.parent / "data" / "shipped"
EXCERPT = ("1. Term. This Agreement shall continue for three (3) years.\n"
           "2. Governing Law. This Agreement shall be governed by the laws of the State of New York.")


class Config:
    class ranking:
        k = 5
        gain = "exponential"
        length_normalize = True
        scorers = ["policy"]

    class bootstrap:
        resamples = 1000
        seed = 0
        level = 0.95


@pytest.fixture(scope="module")
def shipped_test() -> t.EvalData:
    data = t.load_eval_files([SHIPPED / "sft_test.jsonl"])
    return t.select(data, 40, 0)


# --------------------------------------------------------------------------- parsing


@pytest.mark.parametrize("answer,present", [
    ("This Agreement shall be governed by the laws of the State of New York.", True),
    ('"this agreement shall be governed by the laws of the state of new york"', True),   # case, quotes, period
    ("Here is the clause:\nThis Agreement shall continue for three (3) years.", True),  # one quoted line suffices
    ("Not present.", False),
    ("Not present. The excerpt has no such clause.", False),           # the verdict, then an explanation
    ("**Not present**", False),
    ("The governing law is New York law, as the contract says.", None),  # paraphrase: not a quote
    ("Governing Law. Governing Law. Expected: Governing Law clause", None),
    ("Yes", None),
    ("", None),
    ("Not presently known.", None),
])
def test_extraction_answers_parse_as_a_quote_or_not_present(answer: str, present: bool | None) -> None:
    assert t.parse_extract(answer, EXCERPT) is present


@pytest.mark.parametrize("answer,parsed", [
    ("Yes", True), ("**Yes**, it does.", True), ("Answer: No.", False), ('"No"', False), ("- yes", True),
    ("Yesterday the parties agreed", None), ("Not present.", None), ("Nothing", None), ("Note: yes", None),
    ("No. Expected: No. Additional information: No.", False),
])
def test_presence_parsing_is_robust_to_markup_not_to_other_words(answer: str, parsed: bool | None) -> None:
    assert t.parse_presence(answer) is parsed


@pytest.mark.parametrize("answer,parsed", [
    (FAIR_ANSWER, (False, [])),
    ("**Fair**: nothing here.", (False, [])),
    ("Fair.", (False, [])),
    (unfair_answer(["a", "j"]), (True, ["arbitration", "jurisdiction"])),
    ("Answer: Potentially unfair: arbitration, choice of law. Because.", (True, ["arbitration", "choice of law"])),
    ("Potentially unfair: something else.", (True, [])),      # the verdict is given, no known category
    ("Fairly standard terms.", (None, [])),                    # not the fair form
    ("Fairness matters. Potentially unfair: arbitration.", (None, [])),
    ("Unfair: arbitration.", (None, [])),
    ("The clause is potentially unfair: arbitration.", (None, [])),
    ("", (None, [])),
])
def test_unfair_parsing_follows_the_trained_form(answer: str, parsed: tuple) -> None:
    assert t.parse_unfair(answer) == parsed


# --------------------------------------------------------------------------- scoring


def _answers(items: list[t.ChatItem], text: str | None = None) -> dict[str, Generation]:
    return {item.id: Generation(item.reference if text is None else text, "stop", 10, 5) for item in items}


def test_junk_answers_are_unparsed_and_score_below_the_base_rate(shipped_test: t.EvalData) -> None:
    """A model that writes fluent junk used to get presence accuracy = the base rate of 'present'."""
    items = shipped_test.chat
    result = score_all(Config, ["extract", "presence", "unfair"], items,
                       _answers(items, "The parties agree that the contract is important."), [], [], {}, {})
    metrics = result["metrics"]
    assert metrics["extract/unparsed_rate"] == metrics["presence/unparsed_rate"] == metrics["unfair/unparsed_rate"] == 1
    for key in ("extract/presence_accuracy", "extract/presence_f1", "presence/accuracy", "presence/f1",
                "unfair/unfair_accuracy", "unfair/unfair_f1"):
        assert metrics[key] == 0.0, key
    chance = result["chance"]
    gold_present = [item.gold["present"] for item in shipped_test.by_task("extract")]
    share = sum(gold_present) / len(gold_present)
    assert chance["extract/presence_accuracy"]["value"] == pytest.approx(max(share, 1 - share))
    assert chance["extract/presence_f1"]["value"] == pytest.approx(2 * share / (1 + share))
    assert "always" in chance["extract/presence_f1"]["what"]
    assert 0.5 <= chance["unfair/unfair_accuracy"]["value"] <= 1.0
    # "always present" scores the base rate; junk no longer does
    quote_everything = {item.id: Generation(item.excerpt.splitlines()[0], "stop", 10, 5)
                        for item in shipped_test.by_task("extract")}
    always = score_all(Config, ["extract"], shipped_test.by_task("extract"), quote_everything, [], [], {}, {})
    assert always["metrics"]["extract/presence_accuracy"] == pytest.approx(share)
    assert always["metrics"]["extract/unparsed_rate"] == 0.0


def test_an_unparsed_verdict_counts_as_wrong_both_ways() -> None:
    gold_present = t.ChatItem("f:1", "presence", [{"role": "user", "content": "x"}], "Yes", {"present": True})
    gold_absent = t.ChatItem("f:2", "presence", [{"role": "user", "content": "x"}], "No", {"present": False})
    answers = {"f:1": Generation("Maybe", "stop", 1, 1), "f:2": Generation("Perhaps", "stop", 1, 1)}
    result = score_all(Config, ["presence"], [gold_present, gold_absent], answers, [], [], {}, {})
    assert result["metrics"]["presence/accuracy"] == 0.0 and result["metrics"]["presence/f1"] == 0.0
    rows = result["item_scores"]["presence"]
    assert list(rows.columns["fn"]) == [1.0, 0.0] and list(rows.columns["fp"]) == [0.0, 1.0]


def test_gold_answers_score_perfectly_with_intervals(shipped_test: t.EvalData) -> None:
    items = shipped_test.chat
    result = score_all(Config, ["extract", "presence", "normalize", "unfair", "behaviour"], items, _answers(items),
                       [], [], {}, {})
    for key in ("extract/presence_accuracy", "extract/presence_f1", "presence/accuracy", "normalize/exact_match",
                "unfair/unfair_f1", "unfair/macro_f1"):
        spread = result["intervals"][key]
        assert spread["value"] == spread["ci_low"] == spread["ci_high"] == 1.0, key   # constant: zero width
    assert result["metrics"]["extract/unparsed_rate"] == 0.0
    assert result["intervals"]["presence/accuracy"]["n"] == len(shipped_test.by_task("presence"))
    assert result["bootstrap"]["resamples"] == 1000


def test_every_formula_gives_the_metric_value(shipped_test: t.EvalData) -> None:
    """On mixed answers (gold, junk, 'Not present.', wrong category), the per-item formula of each metric equals
    the value the metric functions compute: intervals and paired differences measure the reported number."""
    items = shipped_test.chat
    answers = {}
    for i, item in enumerate(items):
        text = [item.reference, "No idea.", "Not present.", "Potentially unfair: arbitration.", "Yes"][i % 5]
        answers[item.id] = Generation(text, "stop" if i % 3 else "length", 10, 3 + i % 7)
    rank = t.select(t.load_eval_files([SHIPPED / "acord_rankings_test.jsonl"]), 6, 0).rankings
    from lexalign.evaluation.backends import LogLikelihood

    loglik = [LogLikelihood(-float((i * 7) % 5), 3) for i in range(sum(len(r.responses) for r in rank))]
    reward = [[float((i + j) % 3) for j in range(len(r.responses))] for i, r in enumerate(rank)]
    prefs = ([1.0, 0.0, 2.0, 2.0], [0.5, 1.0, 2.0, 1.0], ["p:1", "p:2", "p:3", "p:4"])
    result = score_all(Config, list(METRICS), items, answers, rank, loglik,
                       {"ranking": reward, "preferences": prefs}, {})
    checked = 0
    for task, rows in result["item_scores"].items():
        for name, formula in formulas(task, 5).items():
            assert name in metric_names(task, 5)
            value = formula(identity(rows))[0]
            expected = result["metrics"][f"{task}/{name}"]
            if expected is None:
                assert math.isnan(value), (task, name)
            else:
                assert value == pytest.approx(expected), (task, name)
                checked += 1
    assert checked >= 25
