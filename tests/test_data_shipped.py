"""The datasets shipped in data/shipped: intact, valid, split by document, spans verbatim; the stats CLI."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from lexalign.data import resolve_data_path, shipped_dir
from lexalign.data.build import verify_against
from lexalign.data.jsonl import read_jsonl
from lexalign.data.prompts import NOT_PRESENT, SYSTEM_PROMPT, excerpt_of, extract_answer
from lexalign.data.schemas import ChatRecord, PreferencePair, RankingRecord
from lexalign.data.stats import compute_stats

SPLITS = ("train", "valid", "test")
SHIPPED = shipped_dir()


@pytest.fixture(scope="module")
def sft() -> dict[str, list[ChatRecord]]:
    return {split: read_jsonl(SHIPPED / f"sft_{split}.jsonl", ChatRecord) for split in SPLITS}


@pytest.fixture(scope="module")
def rankings() -> dict[str, list[RankingRecord]]:
    return {split: read_jsonl(SHIPPED / f"acord_rankings_{split}.jsonl", RankingRecord) for split in SPLITS}


def test_shipped_files_match_their_manifest():
    assert verify_against(SHIPPED / "manifest.json") == []


def test_shipped_folder_is_compact_and_credited():
    total = sum(p.stat().st_size for p in SHIPPED.rglob("*") if p.is_file())
    assert total <= 20 * 1024 * 1024  # 17 MB, of which 3 MB are sft_train_extra.jsonl (more presence examples)
    attribution = (SHIPPED / "ATTRIBUTION.md").read_text(encoding="utf-8")
    for name in ("CUAD", "CLAUDETTE", "ACORD", "CC BY 4.0"):
        assert name in attribution
    assert len(list((SHIPPED / "LICENSES").iterdir())) == 3


def test_sft_splits_have_the_intended_sizes_and_mix(sft):
    assert 4000 <= len(sft["train"]) <= 6000 and 400 <= len(sft["valid"]) <= 600 and 400 <= len(sft["test"]) <= 600
    for records in sft.values():
        tasks = {(r.meta["source"], r.meta["task"]) for r in records}
        assert tasks == {("cuad", "extract"), ("cuad", "presence"), ("cuad", "normalize"), ("claudette", "unfair")}
        assert all(r.messages[0].role == "system" and r.messages[0].content == SYSTEM_PROMPT for r in records)
        keys = [json.dumps([m.model_dump() for m in r.messages]) for r in records]
        assert len(keys) == len(set(keys))  # deduplicated


def test_cuad_spans_are_verbatim_in_the_window(sft):
    checked = 0
    for records in sft.values():
        for record in records:
            meta = record.meta
            if meta["source"] != "cuad":
                continue
            excerpt = excerpt_of(record.messages[1].content)
            assert len(excerpt) == meta["window"][1] - meta["window"][0]
            for span in meta["answers"]:
                assert span in excerpt, (meta["doc_id"], meta["category"], span[:60])
            if meta["task"] == "extract":
                answer = record.messages[-1].content
                assert answer == (extract_answer(meta["answers"]) if meta["present"] else NOT_PRESENT)
                if meta["present"]:  # quoted: the answer opens with a token shared by every quote
                    assert answer.startswith('"') and answer.endswith('"'), answer[:60]
                checked += meta["present"]
            elif meta["task"] == "presence":
                assert record.messages[-1].content == ("Yes" if meta["present"] else "No")
    assert checked > 500


def test_no_document_is_in_two_splits(sft, rankings):
    owner: dict[tuple[str, str], str] = {}
    for split in SPLITS:
        docs = {(r.meta["source"], r.meta["doc_id"]) for r in sft[split]}
        docs |= {("acord", r.meta["query_id"]) for r in rankings[split]}
        for doc in docs:
            assert owner.setdefault(doc, split) == split, f"{doc} is in {owner[doc]} and {split}"


def test_pretraining_text_holds_no_held_out_contract_text(sft):
    corpus = " ".join((SHIPPED / "pretrain_corpus.txt").read_text(encoding="utf-8").split())
    held_out = [r for split in ("valid", "test") for r in sft[split] if r.meta["source"] == "cuad"]
    probes = [" ".join(excerpt_of(r.messages[1].content).split())[100:400] for r in held_out]
    probes = [p for p in probes if len(p) > 250]
    leaked = [p for p in probes if p in corpus]
    # Contracts share boilerplate (same filer, same template), so allow a sliver of identical passages.
    assert len(leaked) <= 0.02 * len(probes), leaked[:3]


def test_rankings_and_pairs(rankings):
    ids = [r.prompt_id for split in SPLITS for r in rankings[split]]
    assert len(ids) == len(set(ids))
    for split in SPLITS:
        assert rankings[split], split
        pairs = read_jsonl(SHIPPED / f"acord_pairs_{split}.jsonl", PreferencePair)
        assert pairs and all(p.margin >= 1 for p in pairs)
        assert {p.meta["prompt_id"] for p in pairs} <= {r.prompt_id for r in rankings[split]}


def test_stats_json_describes_the_files():
    saved = json.loads((SHIPPED / "stats.json").read_text(encoding="utf-8"))
    fresh = compute_stats(SHIPPED)
    for key in ("sft", "acord_rankings", "acord_pairs", "pretrain"):
        assert saved[key] == fresh[key]
    assert set(saved["splits"]) == {"cuad", "claudette", "acord"}


def test_shipped_prefix_resolves():
    assert resolve_data_path("shipped:sft_train.jsonl") == SHIPPED / "sft_train.jsonl"
    assert resolve_data_path("other/file.jsonl") == Path("other/file.jsonl")


def test_stats_cli_smoke(tmp_path):
    exe = shutil.which("lexalign")
    command = [exe] if exe else [sys.executable, "-m", "lexalign.cli"]
    result = subprocess.run(command + ["data", "stats", "--out", str(tmp_path / "card")], capture_output=True,
                            text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    for text in ("SFT chat records", "cuad/extract", "claudette/unfair", "ACORD ranking groups", "pretraining corpus"):
        assert text in result.stdout
    stats = json.loads((tmp_path / "card" / "stats.json").read_text())  # the pipeline's data step writes these
    assert stats["sft"]["train"]["records"] == 4000 and stats["acord_pairs"]["valid"]["pairs"] == 156
    card = (tmp_path / "card" / "README.md").read_text()
    assert "| **total** | **4000** | **500** | **500** |" in card and "CC BY 4.0" in card
    assert (tmp_path / "card" / "stats.txt").read_text().strip() == result.stdout.strip()
    missing = subprocess.run(command + ["data", "stats", "/nonexistent/folder"], capture_output=True, text=True, timeout=120)
    assert missing.returncode == 2 and "no such folder" in missing.stderr and "Traceback" not in missing.stderr
