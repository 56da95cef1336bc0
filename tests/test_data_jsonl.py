"""JSONL reading (all-or-nothing, file:line errors) and atomic deterministic writing."""

from __future__ import annotations

import json

import pytest

from lexalign.data.jsonl import DataError, read_jsonl, write_jsonl
from lexalign.data.schemas import ChatRecord, RankingRecord
from lexalign.errors import LexalignError

GOOD = {"messages": [{"role": "user", "content": "Is this clause unfair?"}, {"role": "assistant", "content": "No."}]}


def _write_lines(path, lines):
    path.write_text("".join(line + "\n" for line in lines), encoding="utf-8")
    return path


def test_reads_valid_records(tmp_path):
    path = _write_lines(tmp_path / "ok.jsonl", [json.dumps(GOOD), "", json.dumps({**GOOD, "meta": {"source": "x"}})])
    records = read_jsonl(path, ChatRecord)
    assert len(records) == 2 and records[1].meta == {"source": "x"}


def test_every_bad_line_is_named_and_nothing_partial_is_returned(tmp_path):
    bad_role = {"messages": [{"role": "user", "content": "q"}, {"role": "robot", "content": "a"}]}
    path = _write_lines(tmp_path / "mixed.jsonl", [
        json.dumps(GOOD),
        '{"messages": [',            # line 2: JSON syntax
        json.dumps(bad_role),         # line 3: schema, names the field
        json.dumps(GOOD),
        "[1, 2]",                     # line 5: not an object
    ])
    with pytest.raises(DataError) as caught:
        read_jsonl(path, ChatRecord)
    err = caught.value
    assert isinstance(err, LexalignError)
    message = str(err)
    assert f"{path}:2: not valid JSON" in message
    assert f"{path}:3: messages[1].role" in message
    assert f"{path}:5: expected a JSON object" in message
    assert "nothing was loaded" in message
    assert len(err.problems) == 3
    assert f"{path}:1" not in message and f"{path}:4" not in message


def test_ranking_problem_names_field_and_line(tmp_path):
    bad = {"prompt_id": "p", "prompt": "x", "responses": ["a", "b"], "ranks": [1, 3], "annotator": "l"}
    path = _write_lines(tmp_path / "r.jsonl", [json.dumps(bad)])
    with pytest.raises(DataError, match=rf"{path}:1: ranks must be dense .*missing rank 2"):
        read_jsonl(path, RankingRecord)


def test_empty_missing_and_wrong_encoding(tmp_path):
    empty = tmp_path / "empty.jsonl"
    empty.write_text("\n\n", encoding="utf-8")
    with pytest.raises(DataError, match="empty file"):
        read_jsonl(empty, ChatRecord)
    with pytest.raises(DataError, match="file not found"):
        read_jsonl(tmp_path / "nope.jsonl", ChatRecord)
    latin = tmp_path / "latin1.jsonl"
    latin.write_bytes((json.dumps(GOOD) + "\n").encode() + '{"x": "Vertragsstrafe für"}\n'.encode("latin-1"))
    with pytest.raises(DataError, match=rf"{latin}:2: not UTF-8 text"):
        read_jsonl(latin, ChatRecord)


def test_write_is_atomic_deterministic_and_round_trips(tmp_path):
    records = [ChatRecord.model_validate({**GOOD, "meta": {"z": 1, "a": "ü"}})] * 3
    path = tmp_path / "sub" / "out.jsonl"
    assert write_jsonl(path, records) == 3
    first = path.read_bytes()
    write_jsonl(path, records)
    assert path.read_bytes() == first
    assert list(tmp_path.joinpath("sub").iterdir()) == [path]  # no temporary file left behind
    line = first.decode().splitlines()[0]
    assert line.index('"a"') < line.index('"z"') and "ü" in line  # sorted keys, UTF-8 kept
    assert read_jsonl(path, ChatRecord) == records
