"""Record schemas: each validator has a failing and a passing case; rankings -> pairs."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import ValidationError

from lexalign.data.pairs import dense_ranks, ranking_to_pairs
from lexalign.data.prompts import (
    FAIR_ANSWER,
    NOT_PRESENT,
    excerpt_of,
    extract_prompt,
    parse_unfair_answer,
    unfair_answer,
)
from lexalign.data.schemas import ChatRecord, PreferencePair, RankingRecord

SYSTEM = {"role": "system", "content": "You review contracts."}
USER = {"role": "user", "content": "Find the Governing Law clause."}
ASSISTANT = {"role": "assistant", "content": "Not present."}


# --------------------------------------------------------------------------- ChatRecord


def test_chat_record_accepts_system_user_assistant_and_meta():
    record = ChatRecord.model_validate({"messages": [SYSTEM, USER, ASSISTANT], "meta": {"source": "cuad", "task": "extract"}})
    assert [m.role for m in record.messages] == ["system", "user", "assistant"]
    ChatRecord.model_validate({"messages": [USER, ASSISTANT, USER, ASSISTANT]})  # multi-turn


@pytest.mark.parametrize("messages, expected", [
    ([SYSTEM, USER], "last message must be 'assistant'"),
    ([SYSTEM, ASSISTANT], "first turn after the optional system message must be 'user'"),
    ([USER, {"role": "assistant", "content": "   "}], "must not be empty"),
    ([USER, USER, ASSISTANT], "must alternate"),
    ([USER, SYSTEM, ASSISTANT], "system message may only come first"),
    ([USER, {"role": "lawyer", "content": "x"}], "Input should be 'system', 'user' or 'assistant'"),
    ([], "at least one message"),
])
def test_chat_record_rejects_bad_turns(messages, expected):
    with pytest.raises(ValidationError, match=expected):
        ChatRecord.model_validate({"messages": messages})


def test_chat_record_rejects_unknown_fields():
    with pytest.raises(ValidationError, match="Extra inputs are not permitted"):
        ChatRecord.model_validate({"messages": [USER, ASSISTANT], "metadata": {}})
    with pytest.raises(ValidationError, match="Extra inputs"):
        ChatRecord.model_validate({"messages": [USER, {**ASSISTANT, "name": "bot"}]})


# --------------------------------------------------------------------------- PreferencePair


def test_preference_pair_standard_and_conversational():
    PreferencePair.model_validate({"prompt": "Draft a cap.", "chosen": "Liability is capped.", "rejected": "No.", "margin": 2})
    pair = PreferencePair.model_validate({
        "prompt": [SYSTEM, USER],
        "chosen": [{"role": "assistant", "content": "Governed by New York law."}],
        "rejected": [ASSISTANT],
    })
    assert pair.margin is None


@pytest.mark.parametrize("data, expected", [
    ({"prompt": "p", "chosen": "a", "rejected": "b", "margin": -1}, "greater than or equal to 0"),
    ({"prompt": "p", "chosen": "same", "rejected": "same"}, "identical"),
    ({"prompt": "p", "chosen": [ASSISTANT], "rejected": "b"}, "all be strings or all be lists"),
    ({"prompt": [USER], "chosen": [USER], "rejected": [ASSISTANT]}, "list of assistant messages"),
    ({"prompt": [USER, ASSISTANT], "chosen": [ASSISTANT], "rejected": [{"role": "assistant", "content": "x"}]},
     "last message must be 'user'"),
    ({"prompt": "p", "chosen": "a"}, "rejected\n  Field required"),
    ({"prompt": "", "chosen": "a", "rejected": "b"}, "prompt must not be empty"),
])
def test_preference_pair_rejects(data, expected):
    with pytest.raises(ValidationError, match=expected):
        PreferencePair.model_validate(data)


# --------------------------------------------------------------------------- RankingRecord


def _ranking(**changes):
    data = {"prompt_id": "p1", "prompt": "Find a cap on liability.", "responses": ["a", "b", "c", "d"],
            "ranks": [1, 2, 2, 3], "annotator": "lawyer-1"}
    data.update(changes)
    return data


def test_ranking_accepts_weak_orderings():
    record = RankingRecord.model_validate(_ranking())
    assert record.none_acceptable is False and record.flags == []
    RankingRecord.model_validate(_ranking(ranks=[1, 1, 1, 1], none_acceptable=True, rationale="all off-topic",
                                          flags=["hallucination"]))
    RankingRecord.model_validate(_ranking(responses=["x", "y"], ranks=[2, 1], prompt=[USER]))


@pytest.mark.parametrize("changes, expected", [
    ({"responses": ["x", "y"], "ranks": [1, 3]}, "missing rank 2"),
    ({"responses": ["x", "y"], "ranks": [1, 10**19]}, "missing rank 2"),
    ({"ranks": [1, 2, 3]}, "3 values for 4 responses"),
    ({"ranks": [0, 1, 2, 3]}, "ranks start at 1"),
    ({"responses": ["only one"], "ranks": [1]}, "at least 2 items"),
    ({"annotator": " "}, "annotator must not be empty"),
    ({"responses": ["a", "", "c", "d"]}, r"responses\[1\] must not be empty"),
    ({"score": 3}, "Extra inputs"),
])
def test_ranking_rejects(changes, expected):
    with pytest.raises(ValidationError, match=expected):
        RankingRecord.model_validate(_ranking(**changes))


# --------------------------------------------------------------------------- rankings -> pairs


def test_dense_ranks_from_stars():
    assert dense_ranks([5, 3, 3, 1]) == [1, 2, 2, 3]
    assert dense_ranks([2, 4, 2, 4]) == [2, 1, 2, 1]


def test_ranking_to_pairs_skips_ties_and_uses_score_gap():
    record = RankingRecord.model_validate(_ranking(responses=["best", "mid1", "mid2", "worst"], ranks=[1, 2, 2, 3]))
    pairs = ranking_to_pairs(record, scores=[5, 3, 3, 1])
    got = {(p.chosen[0].content, p.rejected[0].content): p.margin for p in pairs}
    assert got == {("best", "mid1"): 2, ("best", "mid2"): 2, ("best", "worst"): 4, ("mid1", "worst"): 2, ("mid2", "worst"): 2}
    assert [m.role for m in pairs[0].prompt] == ["system", "user"]
    rank_gap = ranking_to_pairs(record, system_prompt=None)
    assert {p.margin for p in rank_gap} == {1.0, 2.0} and [m.role for m in rank_gap[0].prompt] == ["user"]


@given(st.lists(st.integers(min_value=1, max_value=5), min_size=2, max_size=8))
def test_stars_always_give_valid_rankings_and_all_strict_pairs(stars):
    responses = [f"clause {i}" for i in range(len(stars))]
    record = RankingRecord(prompt_id="q", prompt="Find a clause.", responses=responses, ranks=dense_ranks(stars),
                           annotator="a")
    pairs = ranking_to_pairs(record, scores=stars)
    strict = sum(1 for a in stars for b in stars if a > b)
    assert len(pairs) == strict
    assert all(p.margin > 0 for p in pairs)


# --------------------------------------------------------------------------- prompt conventions


def test_unfair_answers_round_trip():
    assert parse_unfair_answer(FAIR_ANSWER) == (False, [])
    assert parse_unfair_answer(unfair_answer(["ltd", "ter"])) == (True, ["limitation of liability", "unilateral termination"])
    assert parse_unfair_answer("maybe?") == (None, [])


def test_excerpt_is_recoverable_from_the_prompt():
    excerpt = "12. Governing Law. This Agreement is governed by the laws of Delaware."
    assert excerpt_of(extract_prompt("Governing Law", "Which law governs?", excerpt)) == excerpt
    assert NOT_PRESENT in extract_prompt("Parties", "who", excerpt)
