"""Export of rankings as pairwise preferences (hand-computed pairs and margins), files, CLI, add-tasks."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from lexalign.data.jsonl import DataError, read_jsonl
from lexalign.data.prompts import SYSTEM_PROMPT
from lexalign.data.schemas import PreferencePair, RankingRecord
from lexalign.data.store import StoreError, open_store
from lexalign.reward.prefs import add_tasks_file, export_preferences

RESPONSES = {"T1": ["a1", "b1", "c1"], "T2": ["a2", "b2", "c2"], "T3": ["a3", "b3"], "T4": ["a4", "b4"],
             "T5": ["a5", "b5"]}

# (prompt_id, annotator, ranks, none_acceptable)
RANKINGS = [
    ("T1", "u1", [1, 2, 3], False),
    ("T1", "u2", [1, 3, 2], False),
    ("T1", "u3", [2, 1, 3], False),
    ("T2", "u1", [1, 1, 2], False),
    ("T2", "u2", [2, 1, 1], False),
    ("T3", "u1", [1, 2], True),    # none acceptable, but a preference
    ("T4", "u1", [1, 1], True),    # none acceptable, all tied
    ("T4", "u2", [1, 1], False),
    ("T5", "u1", [2, 1], False),
]

# Worked by hand from RANKINGS with the rule in reward/prefs.py:
# T1 (a,b): u1 a>b gap 1, u2 a>b gap 2, u3 b>a gap 1 -> 2:1 for a, margin (1+2)/2 = 1.5
# T1 (a,c): u1 gap 2, u2 gap 1, u3 gap 1, all a>c      -> 3:0 for a, margin 4/3
# T1 (b,c): u1 b>c gap 1, u2 c>b gap 1, u3 b>c gap 2 -> 2:1 for b, margin (1+2)/2 = 1.5
# T2 (a,b): u1 tie, u2 b>a gap 1                      -> 1:0 for b, margin 1, 1 tie
# T2 (a,c): u1 a>c gap 1, u2 c>a gap 1                -> 1:1, no majority: no pair
# T2 (b,c): u1 b>c gap 1, u2 tie                      -> 1:0 for b, margin 1, 1 tie
# T3 (a,b): u1 a>b gap 1 (none acceptable)            -> kept by default; dropped with none_acceptable="drop"
# T4: all tied                                        -> no pair
# T5 (a,b): u1 b>a gap 1                              -> 1:0 for b, margin 1 (only one annotator)
# (prompt_id, chosen, rejected, margin, votes_for, votes_against, ties, none_acceptable_votes)
EXPECTED = {
    ("T1", "a1", "b1", 1.5, 2, 1, 0, 0),
    ("T1", "a1", "c1", 4 / 3, 3, 0, 0, 0),
    ("T1", "b1", "c1", 1.5, 2, 1, 0, 0),
    ("T2", "b2", "a2", 1.0, 1, 0, 1, 0),
    ("T2", "b2", "c2", 1.0, 1, 0, 1, 0),
    ("T3", "a3", "b3", 1.0, 1, 0, 0, 1),
    ("T5", "b5", "a5", 1.0, 1, 0, 0, 0),
}


@pytest.fixture()
def store(tmp_path: Path):
    with open_store(f"sqlite:///{tmp_path / 'prefs.db'}") as s:
        records = [RankingRecord(prompt_id=pid, prompt=f"Question {pid}?", responses=RESPONSES[pid], ranks=ranks,
                                 annotator=who, none_acceptable=na) for pid, who, ranks, na in RANKINGS]
        s.import_rankings(records, source="test")
        yield s


def as_tuples(rows: list[PreferencePair]) -> set[tuple]:
    return {(p.meta["prompt_id"], p.chosen[0].content, p.rejected[0].content, round(p.margin, 9),
             p.meta["votes_for"], p.meta["votes_against"], p.meta["ties"], p.meta["none_acceptable_votes"])
            for p in rows}


def expected(*, drop_none: bool = False, min_annotators: int = 1) -> set[tuple]:
    counts = {pid: sum(1 for p, *_ in RANKINGS if p == pid) for pid in RESPONSES}
    return {(pid, c, r, round(m, 9), vf, va, t, na) for pid, c, r, m, vf, va, t, na in EXPECTED
            if counts[pid] >= min_annotators and not (drop_none and na)}


def test_export_gives_exactly_the_hand_computed_pairs_and_margins(store, tmp_path: Path) -> None:
    summary = export_preferences(store, tmp_path / "out")
    pairs = read_jsonl(tmp_path / "out" / "preferences.jsonl", PreferencePair)
    assert as_tuples(pairs) == expected()
    assert summary.pairs == len(EXPECTED) == 7
    assert summary.pairs_dropped_no_majority == 1  # T2 (a, c)
    assert summary.tasks == 5 and summary.rankings == 9 and summary.rankings_none_acceptable == 2


def test_none_acceptable_drop_and_min_annotators(store, tmp_path: Path) -> None:
    export_preferences(store, tmp_path / "drop", none_acceptable="drop")
    assert as_tuples(read_jsonl(tmp_path / "drop" / "preferences.jsonl", PreferencePair)) == expected(drop_none=True)
    export_preferences(store, tmp_path / "min2", min_annotators=2)
    min2 = as_tuples(read_jsonl(tmp_path / "min2" / "preferences.jsonl", PreferencePair))
    assert min2 == expected(min_annotators=2) and {t[0] for t in min2} == {"T1", "T2"}
    with pytest.raises(StoreError, match="min_annotators"):
        export_preferences(store, tmp_path / "bad", min_annotators=0)


def test_export_format_is_trl_conversational_with_prompt_level_meta(store, tmp_path: Path) -> None:
    from datasets import load_from_disk

    export_preferences(store, tmp_path / "out")
    first = json.loads((tmp_path / "out" / "preferences.jsonl").read_text().splitlines()[0])
    assert set(first) == {"prompt", "chosen", "rejected", "margin", "meta"}
    assert first["prompt"] == [{"role": "system", "content": SYSTEM_PROMPT},
                               {"role": "user", "content": f"Question {first['meta']['prompt_id']}?"}]
    assert first["chosen"][0]["role"] == first["rejected"][0]["role"] == "assistant"
    assert {"task_id", "prompt_id", "source", "chosen_index", "rejected_index"} <= set(first["meta"])
    dataset = load_from_disk(str(tmp_path / "out" / "dataset"))
    assert len(dataset) == 7 and set(dataset.column_names) == {"prompt", "chosen", "rejected", "margin", "meta"}
    assert dataset[0]["prompt"] == first["prompt"]
    report = json.loads((tmp_path / "out" / "export.json").read_text())
    assert report["pairs"] == 7 and "net votes" in report["rule"]
    lines = (tmp_path / "out" / "preferences.jsonl").read_bytes()
    export_preferences(store, tmp_path / "out")  # deterministic: same store, same bytes
    assert (tmp_path / "out" / "preferences.jsonl").read_bytes() == lines


def test_chat_prompts_and_app_submissions_export_end_to_end(tmp_path: Path, capsys) -> None:
    from lexalign.cli import main

    url = f"sqlite:///{tmp_path / 'e2e.db'}"
    messages = [{"role": "system", "content": "Custom system."}, {"role": "user", "content": "Which law governs?"}]
    with open_store(url) as store:
        for name in ("x", "y"):
            store.add_annotator(name, None)
        store.add_task("chat-1", messages, ["New York law.", "Delaware law.", "Not present."], k=2)
        for name, ranks in (("x", [1, 2, 3]), ("y", [1, 3, 2])):
            view = store.next_task_for(name)
            store.submit_ranking(name, view.task_id, {c.id: r for c, r in zip(view.candidates, ranks)},
                                 form_token=view.form_token)
    assert main(["prefs", "export", "--store", url, "--out", str(tmp_path / "out"), "--min-annotators", "2"]) == 0
    assert "2 preference pairs from 1 tasks" in capsys.readouterr().out
    pairs = read_jsonl(tmp_path / "out" / "preferences.jsonl", PreferencePair)
    assert {(p.chosen[0].content, p.rejected[0].content, p.margin) for p in pairs} == {
        ("New York law.", "Delaware law.", 1.5), ("New York law.", "Not present.", 1.5)}  # (b, c): 1:1, dropped
    assert [m.model_dump() for m in pairs[0].prompt] == messages  # chat prompts are kept as they were

    # by annotator: only y's ranking (1 > 3 > 2 over three answers: three pairs)
    assert main(["prefs", "export", "--store", url, "--out", str(tmp_path / "by-y"), "--annotator", "y"]) == 0
    assert "3 preference pairs from 1 tasks (1 rankings" in capsys.readouterr().out
    exported = [json.loads(line) for line in (tmp_path / "by-y" / "rankings.jsonl").read_text().splitlines()]
    assert {r["annotator"] for r in exported} == {"y"}
    # a day range that holds nothing today, and a malformed day: a clear error, nothing written
    assert main(["prefs", "export", "--store", url, "--out", str(tmp_path / "old"), "--submitted-to", "2000-01-01"]) == 0
    assert "0 preference pairs from 0 tasks" in capsys.readouterr().out
    assert main(["prefs", "export", "--store", url, "--out", str(tmp_path / "bad"), "--submitted-from", "1/2/2025"]) != 0
    assert "YYYY-MM-DD" in capsys.readouterr().err and not (tmp_path / "bad").exists()


def test_add_tasks_file(tmp_path: Path, capsys) -> None:
    from lexalign.cli import main

    good = tmp_path / "tasks.jsonl"
    good.write_text("\n".join(json.dumps(t) for t in [
        {"prompt_id": "g1", "prompt": "Q1?", "responses": ["a", "b"], "meta": {"excerpt": "E", "question": "Q1?"}},
        {"prompt_id": "g2", "prompt": [{"role": "user", "content": "Q2?"}], "responses": ["a", "b", "c"],
         "models": ["sft", "sft", "base"], "k": 1},
    ]) + "\n")
    url = f"sqlite:///{tmp_path / 't.db'}"
    assert main(["prefs", "add-tasks", str(good), "--store", url, "--k", "2"]) == 0
    assert main(["prefs", "add-tasks", str(good), "--store", url]) == 0
    out = capsys.readouterr().out
    assert "2 tasks added, 0 already" in out and "0 tasks added, 2 already" in out
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"prompt_id": "b1", "prompt": "Q?", "responses": ["only one"]}\n{"prompt_id": "b2"}\n')
    with open_store(url) as store:
        with pytest.raises(DataError, match=r"bad.jsonl:1: .*responses") as info:
            add_tasks_file(store, bad)
        assert "bad.jsonl:2" in str(info.value)
        assert store.task_count() == 2
        store.add_annotator("z", None)
        view = store.next_task_for("z")
        assert view.prompt_id == "g1" and view.meta["excerpt"] == "E"
