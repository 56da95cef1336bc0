"""Eval data: kinds, gold checks with file:line, sampling, answer parsing; scoring the gold answers gives 1.0."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from lexalign.data.jsonl import DataError
from lexalign.data.prompts import SYSTEM_PROMPT, unfair_answer
from lexalign.evaluation import tasks as t
from lexalign.evaluation.backends import Generation

SHIPPED = Path(__file__).resolve().parent.parent / "data" / "shipped"


@pytest.fixture(scope="module")
def shipped_valid() -> t.EvalData:
    return t.load_eval_files([SHIPPED / name for name in
                              ("sft_valid.jsonl", "acord_rankings_valid.jsonl", "acord_pairs_valid.jsonl")])


def test_shipped_split_loads_every_task(shipped_valid: t.EvalData) -> None:
    counts = shipped_valid.counts()
    assert counts["extract"] == 200 and counts["presence"] == 75 and counts["normalize"] == 50
    assert counts["unfair"] == 175 and counts["ranking"] == 36 and counts["preferences"] == 156
    assert set(shipped_valid.files.values()) == {"chat", "rankings", "preferences"}
    item = shipped_valid.chat[0]
    assert item.id.startswith("sft_valid.jsonl#") and len(item.id) == len("sft_valid.jsonl#") + 12
    assert item.messages[-1]["role"] == "user" and item.messages[0]["role"] == "system"
    ranking = shipped_valid.rankings[0]
    assert ranking.relevance == [2.0, 1.0, 3.0, 4.0]                 # the lawyers' stars
    assert ranking.messages == [{"role": "system", "content": SYSTEM_PROMPT},
                                {"role": "user", "content": ranking.messages[1]["content"]}]


def test_default_files_name_the_split() -> None:
    assert t.default_files("test") == ["shipped:sft_test.jsonl", "shipped:acord_rankings_test.jsonl",
                                       "shipped:acord_pairs_test.jsonl"]


def test_sample_is_seeded_and_keeps_order(shipped_valid: t.EvalData) -> None:
    a = t.select(shipped_valid, 5, seed=0)
    b = t.select(shipped_valid, 5, seed=0)
    c = t.select(shipped_valid, 5, seed=1)
    assert [i.id for i in a.chat] == [i.id for i in b.chat] != [i.id for i in c.chat]
    assert a.counts() == {"extract": 5, "presence": 5, "normalize": 5, "unfair": 5, "ranking": 5, "preferences": 5}
    position = {item.id: n for n, item in enumerate(shipped_valid.chat)}
    lines = [position[i.id] for i in a.chat]
    assert lines == sorted(lines)
    assert len(t.select(shipped_valid, 0, seed=0).chat) == 500     # 0 = all


def test_ids_and_draw_survive_a_reordered_file(tmp_path: Path) -> None:
    """A rebuilt file whose records come in another order keeps every item's id and the seeded draw, so
    evaluations made before and after the rebuild pair item by item; a repeated record gets its own id."""
    lines = (SHIPPED / "sft_valid.jsonl").read_text(encoding="utf-8").splitlines()[:60]
    lines.append(lines[3])                                           # the same record twice
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    first = t.load_eval_files([_write(tmp_path / "a" / "sft.jsonl", lines)])
    second = t.load_eval_files([_write(tmp_path / "b" / "sft.jsonl", list(reversed(lines)))])
    ids = [item.id for item in first.chat]
    assert len(set(ids)) == len(ids) == 61
    assert ids[60] == ids[3] + "~2"
    assert set(ids) == {item.id for item in second.chat}
    assert {i.id: i.gold for i in first.chat}[ids[10]] == {i.id: i.gold for i in second.chat}[ids[10]]
    drawn = {i.id for i in t.select(first, 4, seed=0).chat}
    assert drawn == {i.id for i in t.select(second, 4, seed=0).chat}
    assert drawn != {i.id for i in t.select(first, 4, seed=1).chat}


def _write(path: Path, rows: list) -> Path:
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows), encoding="utf-8")
    return path


def _chat(meta: dict | None, answer: str = "Not present.") -> dict:
    return {"messages": [{"role": "user", "content": "Find the clause.\n\nExcerpt:\nText."},
                         {"role": "assistant", "content": answer}], "meta": meta}


def test_own_files_of_each_kind(tmp_path: Path) -> None:
    chat = _write(tmp_path / "chat.jsonl", [
        _chat({"task": "extract", "answers": ["Text."], "category": "X"}, "Text."),
        "",
        _chat({"task": "unfair", "labels": ["ltd", "arbitration"]}, "Potentially unfair: ..."),
        _chat({"task": "presence", "present": False}, "No"),
        _chat({"task": "normalize", "normalized": "New York"}, "New York"),
    ])
    rankings = _write(tmp_path / "ranks.jsonl", [
        {"prompt_id": "p1", "prompt": "Find a non-compete clause", "responses": ["a", "b", "c"], "ranks": [2, 1, 2],
         "annotator": "lawyer1"}])
    pairs = _write(tmp_path / "pairs.jsonl", [{"prompt": "Which is better?", "chosen": "good", "rejected": "bad"}])
    data = t.load_eval_files([chat, rankings, pairs], system_prompt=None)
    assert [i.task for i in data.chat] == ["extract", "unfair", "presence", "normalize"]
    assert data.chat[1].id.startswith("chat.jsonl#") and len({i.id for i in data.chat}) == 4
    assert data.chat[0].gold == {"answers": ["Text."], "present": True, "category": "X"}
    assert data.chat[1].gold == {"labels": ["arbitration", "limitation of liability"], "unfair": True}
    assert data.rankings[0].relevance == [1.0, 2.0, 1.0]               # no stars: from the ranks, 1 = best
    assert data.rankings[0].messages == [{"role": "user", "content": "Find a non-compete clause"}]
    assert data.preferences[0].chosen == "good"


def test_bad_files_report_file_and_line(tmp_path: Path) -> None:
    chat = _write(tmp_path / "chat.jsonl", [
        _chat({"task": "extract", "answers": []}),
        _chat({"task": "extract", "answers": [], "present": True}),
        _chat({"task": "unfair", "labels": ["ltd"], "unfair": False}),
        _chat({"task": "normalize"}),
        '{"messages": [{"role": "user", "content": "hi"}]}',
    ])
    unknown = _write(tmp_path / "what.jsonl", [{"text": "hello"}])
    with pytest.raises(DataError) as err:
        t.load_eval_files([chat, unknown])
    message = str(err.value)
    assert f"{chat}:2: meta.present is true but meta.answers is empty" in message
    assert f"{chat}:3: meta.unfair is false" in message
    assert f"{chat}:4: meta.normalized" in message
    assert f"{chat}:5: the last message must be 'assistant'" in message   # schema error (read_jsonl)
    assert f"{unknown}:1: cannot tell what this file holds" in message
    assert f"{chat}:1" not in message


@pytest.mark.parametrize("answer,parsed", [("Yes", True), ("yes.", True), ("No, it does not.", False),
                                           ("Maybe", None), ("", None)])
def test_parse_presence(answer: str, parsed: bool | None) -> None:
    assert t.parse_presence(answer) is parsed


def test_parse_unfair_uses_the_training_answer_form() -> None:
    assert t.parse_unfair(unfair_answer(["ltd", "a"])) == (True, ["arbitration", "limitation of liability"])
    assert t.parse_unfair(unfair_answer([])) == (False, [])
    assert t.parse_unfair("no idea") == (None, [])


def test_gold_answers_score_perfectly(shipped_valid: t.EvalData) -> None:
    """The builders' own answers, parsed back, get every metric right: the parsers match the training format."""
    from lexalign.evaluation.scoring import score_all
    from test_eval_scoring import Config  # the scoring settings the scoring tests use

    answers = {item.id: Generation(item.reference, "stop", 10, 5) for item in shipped_valid.chat}
    result = score_all(Config, ["extract", "presence", "normalize", "unfair", "behaviour"], shipped_valid.chat,
                       answers, [], [], {}, {})
    metrics = result["metrics"]
    for key in ("extract/presence_accuracy", "extract/presence_f1", "presence/accuracy", "normalize/exact_match",
                "unfair/unfair_f1", "unfair/macro_f1", "unfair/micro_f1", "behaviour/stop_rate"):
        assert metrics[key] == 1.0, key
    assert metrics["extract/span_f1"] > 0.99 and metrics["extract/span_jaccard"] > 0.99
    assert metrics["unfair/unparsed_rate"] == 0.0 and metrics["presence/unparsed_rate"] == 0.0
    # a model that always says "Not present." gets presence recall 0 and no span overlap
    silent = {item.id: Generation("Not present.", "stop", 10, 3) for item in shipped_valid.chat}
    zero = score_all(Config, ["extract"], shipped_valid.chat, silent, [], [], {}, {})["metrics"]
    assert zero["extract/presence_recall"] == 0.0 and zero["extract/span_f1"] == 0.0
    assert zero["extract/not_present_rate"] == 1.0


def test_skipped_items_are_counted_not_scored(shipped_valid: t.EvalData) -> None:
    from lexalign.evaluation.scoring import score_all
    from test_eval_scoring import Config  # the scoring settings the scoring tests use

    items = shipped_valid.by_task("normalize")[:4]
    answers = {item.id: Generation(item.reference, "stop", 10, 5) for item in items[:2]}
    answers.update({item.id: Generation("", None, 2000, 0, skipped="too long") for item in items[2:]})
    result = score_all(Config, ["normalize", "ranking"], items, answers, [], [], {}, {})
    assert result["tasks"]["normalize"]["n"] == 2 and result["tasks"]["normalize"]["skipped_items"] == 2
    assert result["metrics"]["normalize/exact_match"] == 1.0
    assert result["tasks"]["ranking"]["skipped"]
    assert result["metrics"]["ranking/policy_ndcg@5"] is None
