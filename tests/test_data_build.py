"""The builders on a miniature synthetic corpus (same layout as ../shared/data): determinism, splits,
verbatim spans, config validation, the CLI reproducing an in-process build. Needs no real corpora."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from lexalign.config import ConfigError, load_config
from lexalign.data.build import DataBuildConfig, allocate, run_build, verify_against
from lexalign.data.cuad import OffsetMap, make_windows, normalize_contract
from lexalign.data.jsonl import DataError, read_jsonl
from lexalign.data.prompts import NOT_PRESENT, excerpt_of, extract_answer
from lexalign.data.schemas import ChatRecord, PreferencePair, RankingRecord
from lexalign.data.synthetic import write_synthetic_source

REPO = Path(__file__).resolve().parents[1]
CONFIG = REPO / "configs" / "data.yaml"
SMALL = [
    "cuad.window_chars=400", "cuad.window_overlap=100", "cuad.max_answer_chars=300",
    "cuad.normalize_categories=[Document Name, Parties, Agreement Date, Governing Law]",
    "sft.max_records.train=60", "sft.max_records.valid=20", "sft.max_records.test=20",
    "splits.valid_fraction=0.2", "splits.test_fraction=0.2", "splits.acord_test_fraction=0.25",
    "acord.groups_per_query=3", "pretrain.max_bytes=20000",
]
OUTPUTS = [f"{kind}_{split}.jsonl" for kind in ("sft", "acord_rankings", "acord_pairs") for split in ("train", "valid", "test")]


def lexalign_command() -> list[str]:
    exe = shutil.which("lexalign") or str(Path(sys.executable).parent / "lexalign")
    return [exe] if Path(exe).exists() else [sys.executable, "-m", "lexalign.cli"]


@pytest.fixture(scope="module")
def source(tmp_path_factory) -> Path:
    return write_synthetic_source(tmp_path_factory.mktemp("corpora"))


@pytest.fixture(scope="module")
def built(source, tmp_path_factory) -> Path:
    return run_build(CONFIG, SMALL, source=source, out=tmp_path_factory.mktemp("built") / "out")


def _files(folder: Path) -> dict[str, bytes]:
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


# --------------------------------------------------------------------------- outputs


def test_build_writes_every_output_and_they_validate(built):
    names = set(_files(built))
    assert set(OUTPUTS) | {"pretrain_corpus.txt", "stats.json", "manifest.json", "ATTRIBUTION.md"} <= names
    assert {"LICENSES/cuad-CUAD_v1_README.txt", "LICENSES/claudette-LICENSE.txt", "LICENSES/acord-LICENSE.txt"} <= names
    for split in ("train", "valid", "test"):
        sft = read_jsonl(built / f"sft_{split}.jsonl", ChatRecord)
        assert {r.meta["source"] for r in sft} == {"cuad", "claudette"}
        read_jsonl(built / f"acord_rankings_{split}.jsonl", RankingRecord)
        read_jsonl(built / f"acord_pairs_{split}.jsonl", PreferencePair)
    sft_train = read_jsonl(built / "sft_train.jsonl", ChatRecord)
    assert len(sft_train) == 60
    assert {r.meta["task"] for r in sft_train} == {"extract", "presence", "normalize", "unfair"}


def test_rebuild_is_byte_identical_and_matches_the_manifest(built, source, tmp_path):
    again = run_build(CONFIG, SMALL, source=source, out=tmp_path / "again")
    assert _files(again) == _files(built)
    assert verify_against(built / "manifest.json") == []
    assert verify_against(built / "manifest.json", again, source=source) == []
    manifest = json.loads((built / "manifest.json").read_text())
    assert "cuad/cuad_qa_train.jsonl" in manifest["sources"] and "source" not in manifest["config"]


def test_verify_against_reports_changes(built, tmp_path):
    copy = tmp_path / "copy"
    shutil.copytree(built, copy)
    with (copy / "sft_train.jsonl").open("a", encoding="utf-8") as handle:
        handle.write("\n")
    (copy / "extra.txt").write_text("x")
    (copy / "acord_pairs_test.jsonl").unlink()
    problems = verify_against(copy / "manifest.json")
    assert any(p.startswith("sft_train.jsonl: sha256 differs") for p in problems)
    assert "extra.txt: not in the manifest" in problems
    assert any(p.startswith("acord_pairs_test.jsonl: missing") for p in problems)


def test_cli_build_reproduces_counts_and_hashes(built, source, tmp_path):
    """What `lexalign data build` must do for the shipped data, on a miniature copy of the corpora."""
    out = tmp_path / "cli"
    result = subprocess.run(lexalign_command() + ["data", "build", "--source", str(source), "--out", str(out),
                                                  "--config", str(CONFIG), *SMALL],
                            capture_output=True, text=True, cwd=REPO, timeout=300)
    assert result.returncode == 0, result.stderr
    assert verify_against(built / "manifest.json", out) == []
    assert json.loads((out / "stats.json").read_text()) == json.loads((built / "stats.json").read_text())


def test_extra_train_records_come_after_the_cap_and_leave_sft_train_unchanged(built, source, tmp_path):
    from lexalign.data.build import record_key

    plain = run_build(CONFIG, SMALL + ["sft.extra_train={}"], source=source, out=tmp_path / "plain")
    assert not (plain / "sft_train_extra.jsonl").exists() and "train_extra" not in json.loads(
        (plain / "stats.json").read_text())["sft"]
    for split in ("train", "valid", "test"):  # asking for extra records changes no other file
        assert (plain / f"sft_{split}.jsonl").read_bytes() == (built / f"sft_{split}.jsonl").read_bytes()
    extra = read_jsonl(built / "sft_train_extra.jsonl", ChatRecord)
    assert extra and {r.meta["task"] for r in extra} == {"presence"}  # configs/data.yaml asks for presence only
    assert not {record_key(r) for r in extra} & {record_key(r) for r in read_jsonl(built / "sft_train.jsonl", ChatRecord)}
    held_out = {r.meta["doc_id"] for split in ("valid", "test") for r in read_jsonl(built / f"sft_{split}.jsonl", ChatRecord)
                if r.meta["source"] == "cuad"}
    assert not {r.meta["doc_id"] for r in extra} & held_out      # training documents only
    stats = json.loads((built / "stats.json").read_text())
    assert stats["sft"]["train_extra"]["records"] == len(extra)
    assert "sft_train_extra.jsonl" in json.loads((built / "manifest.json").read_text())["outputs"]
    few = read_jsonl(run_build(CONFIG, SMALL + ["sft.extra_train={cuad_presence: 3}"], source=source,
                               out=tmp_path / "few") / "sft_train_extra.jsonl", ChatRecord)
    assert len(few) == 3 and {record_key(r) for r in few} <= {record_key(r) for r in extra}  # the same draw
    with pytest.raises(ConfigError) as caught:
        load_config(DataBuildConfig, CONFIG, ["sft.extra_train={presence: 5}"])
    assert "sft.extra_train.presence" in str(caught.value)


# --------------------------------------------------------------------------- content rules


def test_extract_spans_are_verbatim_in_their_windows(built, source):
    for split in ("train", "valid", "test"):
        for record in read_jsonl(built / f"sft_{split}.jsonl", ChatRecord):
            meta = record.meta
            if meta["source"] != "cuad":
                continue
            excerpt = excerpt_of(record.messages[1].content)
            contract = (source / "cuad" / "contracts" / meta["doc_id"]).read_text(encoding="utf-8")
            start, end = meta["window"]
            assert normalize_contract(contract)[start:end] == excerpt  # offsets into the normalized contract
            assert all(span in excerpt for span in meta["answers"])
            if meta["task"] == "extract":
                expected = extract_answer(meta["answers"]) if meta["answers"] else NOT_PRESENT
                assert record.messages[-1].content == expected
                assert meta["present"] == bool(meta["answers"])


def test_no_document_crosses_splits_and_pretraining_uses_train_only(built, source):
    owners: dict[tuple[str, str], set[str]] = {}
    for split in ("train", "valid", "test"):
        for record in read_jsonl(built / f"sft_{split}.jsonl", ChatRecord):
            owners.setdefault((record.meta["source"], record.meta["doc_id"]), set()).add(split)
        for record in read_jsonl(built / f"acord_rankings_{split}.jsonl", RankingRecord):
            owners.setdefault(("acord", record.meta["query_id"]), set()).add(split)
    assert all(len(splits) == 1 for splits in owners.values()), {k: v for k, v in owners.items() if len(v) > 1}
    held_out = {doc for (src, doc), splits in owners.items() if src == "cuad" and splits != {"train"}}
    corpus = (built / "pretrain_corpus.txt").read_text(encoding="utf-8")
    for doc in held_out:
        title_line = (source / "cuad" / "contracts" / doc).read_text(encoding="utf-8")
        preamble = " ".join(title_line.split("\n\n")[1].split())  # "This ... is made between A and B dated ..."
        assert preamble not in corpus
    assert 0 < len(corpus.encode()) <= 20000


def test_acord_rankings_follow_stars_and_pairs_carry_the_gap(built):
    records = read_jsonl(built / "acord_rankings_train.jsonl", RankingRecord)
    assert len({r.prompt_id for r in records}) == len(records)
    for record in records:
        stars = record.meta["stars"]
        assert len(record.responses) == 4 and len(set(stars)) > 1 and record.annotator == "acord-lawyers"
        for i in range(4):
            for j in range(4):
                assert (stars[i] > stars[j]) == (record.ranks[i] < record.ranks[j])
        assert all('""' not in text for text in record.responses)
    for pair in read_jsonl(built / "acord_pairs_train.jsonl", PreferencePair):
        assert pair.margin == pair.meta["chosen_stars"] - pair.meta["rejected_stars"] > 0


def test_claudette_labels_match_answers(built):
    for record in read_jsonl(built / "sft_train.jsonl", ChatRecord):
        meta = record.meta
        if meta["source"] == "claudette":
            answer = record.messages[-1].content
            assert answer.startswith("Potentially unfair: ") == meta["unfair"] == bool(meta["labels"])
            assert all(label in answer for label in meta["labels"])


# --------------------------------------------------------------------------- windows and allocation


@settings(max_examples=200, deadline=None)
@given(st.text(alphabet=st.sampled_from(list("abc de\n\t.")), min_size=0, max_size=3000),
       st.integers(min_value=20, max_value=300), st.integers(min_value=0, max_value=19))
def test_windows_cover_text_whole_words_and_respect_size(text, size, overlap):
    windows = make_windows(text, size, overlap)
    covered = set()
    for start, end in windows:
        assert 0 <= start < end <= len(text) and end - start <= size
        assert not text[start].isspace() and not text[end - 1].isspace()
        covered.update(range(start, end))
    assert all(i in covered for i, c in enumerate(text) if not c.isspace())
    assert [w[0] for w in windows] == sorted({w[0] for w in windows})


@settings(max_examples=200, deadline=None)
@given(st.text(alphabet=st.sampled_from(list("ab .\n\t\xa0")), max_size=400))
def test_offset_map_points_at_the_same_characters_after_normalization(raw):
    normalized = normalize_contract(raw)
    to_normalized = OffsetMap(raw)
    for i, char in enumerate(raw):
        if not char.isspace():
            assert normalized[to_normalized(i)] == char
    assert "  " not in normalized and normalized == normalized.strip()


def test_windows_do_not_cut_words_when_they_can_avoid_it():
    text = " ".join(f"word{i:03d}" for i in range(300))
    for start, end in make_windows(text, 100, 20):
        assert (start == 0 or text[start - 1] == " ") and (end == len(text) or text[end] == " ")


def test_allocate_follows_weights_and_passes_on_shortfalls():
    assert allocate(100, {"a": 0.5, "b": 0.5}, {"a": 80, "b": 80}) == {"a": 50, "b": 50}
    assert allocate(100, {"a": 0.5, "b": 0.5}, {"a": 10, "b": 200}) == {"a": 10, "b": 90}
    assert allocate(0, {"a": 1.0, "b": 0.0}, {"a": 7, "b": 9}) == {"a": 7, "b": 0}


# --------------------------------------------------------------------------- errors a user can fix


def test_config_problems_are_all_reported():
    with pytest.raises(ConfigError) as caught:
        load_config(DataBuildConfig, CONFIG, ["cuad.window_overlap=5000", "acord.group_size=1", "splits.test_fraction=0.95",
                                              "cuad.windw_chars=3"])
    message = str(caught.value)
    assert "cuad.windw_chars" in message and "unknown key" in message  # typos are caught before cross-field rules
    with pytest.raises(ConfigError) as caught:
        load_config(DataBuildConfig, CONFIG, ["cuad.window_overlap=5000", "acord.group_size=1", "splits.test_fraction=0.95"])
    message = str(caught.value)
    for key in ("cuad.window_overlap", "acord.group_size", "splits.valid_fraction", "acord.zero_star_per_group"):
        assert key in message
    assert load_config(DataBuildConfig, CONFIG).cuad.window_chars == DataBuildConfig().cuad.window_chars


def test_shipped_yaml_states_the_defaults():
    """configs/data.yaml documents exactly the values the shipped data was built with (the dataclass defaults)."""
    from lexalign.config import to_dict

    assert to_dict(load_config(DataBuildConfig, CONFIG)) == to_dict(DataBuildConfig())
    manifest = json.loads((REPO / "data" / "shipped" / "manifest.json").read_text(encoding="utf-8"))
    settings = to_dict(DataBuildConfig())
    settings.pop("source"), settings.pop("out")
    assert manifest["config"] == settings


def test_bad_source_folders_are_explained(tmp_path, source):
    with pytest.raises(DataError, match="missing cuad/, claudette/, acord/"):
        run_build(CONFIG, SMALL, source=tmp_path, out=tmp_path / "out")
    broken = tmp_path / "broken"
    shutil.copytree(source, broken)
    qa = broken / "cuad" / "cuad_qa_train.jsonl"
    lines = qa.read_text(encoding="utf-8").splitlines()
    item = json.loads(lines[0])
    item["answers"] = [{"text": "not in the contract", "answer_start": 3}]
    lines[0] = json.dumps(item)
    qa.write_text("\n".join(lines) + "\n", encoding="utf-8")
    with pytest.raises(DataError, match=rf"{qa}:1: answer_start 3 does not point at the answer text"):
        run_build(CONFIG, SMALL, source=broken, out=tmp_path / "out")
    with pytest.raises(DataError, match="unknown CUAD categories"):
        run_build(CONFIG, SMALL[:3] + SMALL[4:], source=source, out=tmp_path / "out")
