"""Bad input, property-based (hypothesis): whatever bytes, JSON, YAML, overrides, rankings or uploads come in,
the loaders answer with their own error type naming the place (file:line, key, field) or with a complete
result, never with another exception, never with a partial result. Example counts are modest: these run in CI.
"""

from __future__ import annotations

import io
import json
import re
import zipfile
from pathlib import Path

import pytest
import yaml
from hypothesis import HealthCheck, assume, event, given, settings
from hypothesis import strategies as st

from lexalign.config import ConfigError, load_config
from lexalign.data.jsonl import DataError, read_jsonl
from lexalign.data.schemas import ChatRecord, PreferencePair, RankingRecord

REPO = Path(__file__).resolve().parent.parent
FAST = settings(max_examples=80, deadline=None, database=None,
                suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])

# --------------------------------------------------------------------------- JSONL loaders, every schema


def _schemas() -> dict[str, tuple[type, list[dict]]]:
    """Every schema read with read_jsonl, with valid example records."""
    from lexalign.reward.prefs import TaskFileRecord

    chat = {"messages": [{"role": "system", "content": "S"}, {"role": "user", "content": "Q?"},
                         {"role": "assistant", "content": "A."}], "meta": {"source": "cuad"}}
    pair = {"prompt": [{"role": "user", "content": "Q?"}], "chosen": [{"role": "assistant", "content": "yes"}],
            "rejected": [{"role": "assistant", "content": "no"}], "margin": 1.0}
    pair_str = {"prompt": "Q?", "chosen": "yes", "rejected": "no"}
    ranking = {"prompt_id": "p1", "prompt": "Q?", "responses": ["a", "b", "c"], "ranks": [1, 2, 2], "annotator": "x"}
    task = {"prompt_id": "t1", "prompt": "Q?", "responses": ["a", "b"], "k": 2}
    found = {"ChatRecord": (ChatRecord, [chat]), "PreferencePair": (PreferencePair, [pair, pair_str]),
             "RankingRecord": (RankingRecord, [ranking]), "TaskFileRecord": (TaskFileRecord, [task])}
    try:
        from lexalign.serve.candidates import PromptRecord

        found["PromptRecord"] = (PromptRecord, [{"prompt": "Q?"}])
    except ImportError:  # pragma: no cover - the serving engineer's module
        pass
    return found


SCHEMAS = _schemas()

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=True) | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner, max_size=4),
    max_leaves=12)


@st.composite
def mutated_record(draw, examples: list[dict]) -> str:
    """A valid record, or one with a key removed / changed / added / a value replaced: one JSON line."""
    record = json.loads(json.dumps(draw(st.sampled_from(examples))))
    action = draw(st.sampled_from(["keep", "drop", "retype", "extra", "nested"]))
    keys = list(record)
    if action == "drop":
        record.pop(draw(st.sampled_from(keys)))
    elif action == "retype":
        record[draw(st.sampled_from(keys))] = draw(json_values)
    elif action == "extra":
        record[draw(st.text(min_size=1, max_size=8))] = draw(json_values)
    elif action == "nested":
        key = draw(st.sampled_from(keys))
        if isinstance(record[key], list) and record[key]:
            i = draw(st.integers(0, len(record[key]) - 1))
            record[key][i] = draw(json_values)
    return json.dumps(record, ensure_ascii=draw(st.booleans()))


GARBAGE_LINES = st.one_of(
    st.text(max_size=40),
    json_values.map(json.dumps),
    st.sampled_from(["[" * 5000, "1" * 5000, '{"prompt": "' + "\\ud800" + '"}', "NaN", '{"a": Infinity}', "\x00",
                     "{" + '"k": ' * 3 + "1}", "\ufeff{}", '{"messages": [' * 800 + "]" * 800 + "}"]),
)


def _check_data_error(err: DataError, path: Path, n_lines: int) -> None:
    assert err.problems, err
    for problem in err.problems:
        assert problem.startswith(str(path)), problem
        match = re.match(re.escape(str(path)) + r":(\d+):", problem)
        if match:
            assert 1 <= int(match.group(1)) <= max(n_lines, 1), problem
        else:  # whole-file problems: empty, not found
            assert problem.startswith(f"{path}: "), problem


@pytest.mark.parametrize("schema_name", sorted(SCHEMAS))
@FAST
@given(data=st.data())
def test_jsonl_loader_answers_records_or_data_error_with_file_and_line(schema_name, data, tmp_path) -> None:
    schema, examples = SCHEMAS[schema_name]
    lines = data.draw(st.lists(st.one_of(mutated_record(examples), GARBAGE_LINES, st.just("")), max_size=8))
    newline = data.draw(st.sampled_from(["\n", "\r\n"]))
    path = tmp_path / f"{schema_name}.jsonl"
    content = newline.join(lines)
    path.write_text(content, encoding="utf-8", errors="surrogatepass")
    physical = content.split("\n")  # a generated "line" may hold newlines itself
    try:
        records = read_jsonl(path, schema)
    except DataError as err:
        _check_data_error(err, path, len(physical))
        return
    non_blank = [line for line in physical if line.strip()]
    assert len(records) == len(non_blank) > 0  # all or nothing: every line became a record
    assert all(isinstance(r, schema) for r in records)


@FAST
@given(raw=st.binary(max_size=300))
def test_jsonl_loader_on_random_bytes(raw, tmp_path) -> None:
    path = tmp_path / "bytes.jsonl"
    path.write_bytes(raw)
    for schema, _ in SCHEMAS.values():
        try:
            records = read_jsonl(path, schema)
        except DataError as err:
            _check_data_error(err, path, raw.count(b"\n") + 1)
        else:
            assert records


@FAST
@given(good=st.integers(1, 6), bad_at=st.integers(0, 6), bad=GARBAGE_LINES)
def test_one_bad_line_means_nothing_is_loaded(good, bad_at, bad, tmp_path) -> None:
    assume(bad.strip())
    valid = json.dumps(SCHEMAS["ChatRecord"][1][0])
    lines = [valid] * good
    lines.insert(min(bad_at, good), bad)
    path = tmp_path / "mixed.jsonl"
    path.write_text("\n".join(lines), encoding="utf-8", errors="surrogatepass")
    try:
        read_jsonl(path, ChatRecord)
    except DataError as err:
        assert f"{path}:{min(bad_at, good) + 1}:" in str(err)
    else:  # only possible when the "bad" line is in fact a valid ChatRecord
        ChatRecord.model_validate(json.loads(bad))


# --------------------------------------------------------------------------- config loader

def _stage_configs() -> list[type]:
    from lexalign.data.build import DataBuildConfig
    from lexalign.reward.annotate import AnnotateConfig
    from lexalign.serve.chat import ChatConfig
    from lexalign.sft.train import SFTStageConfig

    return [DataBuildConfig, AnnotateConfig, ChatConfig, SFTStageConfig]


CONFIG_CLASSES = _stage_configs()
KNOWN_KEYS = ["name", "output_dir", "store", "port", "k", "seed", "model.path", "model.tuning", "model.lora.r",
              "model.quantization.bits", "training.max_steps", "training.learning_rate", "training.packing",
              "data.train", "cuad.window_chars", "splits.valid_fraction", "sft.max_records.train", "redact.enabled",
              "redact.entities", "temperature", "max_upload_mb", "host"]
yaml_scalars = (st.none() | st.booleans() | st.integers(-10**6, 10**6) | st.floats(allow_nan=True)
                | st.text(max_size=15))
yaml_trees = st.recursive(yaml_scalars, lambda inner: st.lists(inner, max_size=3)
                          | st.dictionaries(st.sampled_from(KNOWN_KEYS + ["x", "model", "training", "cuad"])
                                            | st.text(max_size=8), inner, max_size=4), max_leaves=10)


def _nest(flat: dict) -> dict:
    tree: dict = {}
    for key, value in flat.items():
        node = tree
        parts = str(key).split(".")
        for part in parts[:-1]:
            node = node.setdefault(part, {}) if isinstance(node.get(part, {}), dict) else {}
        node[parts[-1]] = value
    return tree


config_files = st.one_of(
    st.dictionaries(st.sampled_from(KNOWN_KEYS), yaml_scalars | yaml_trees, max_size=5)
    .map(lambda d: yaml.safe_dump(_nest(d)).encode()),
    yaml_trees.map(lambda d: yaml.safe_dump(d).encode()),
    st.text(max_size=120).map(lambda t: t.encode("utf-8", "surrogatepass")),
    st.binary(max_size=120),
    st.sampled_from([b"a: [" * 3000, b"a: &x [*x]", b"!!python/object/apply:os.system [echo hi]", b"\xef\xbb\xbf",
                     b"key: \x00", b"- 1\n- 2", b"model: {path: \x07}", b"{a: 1, a: 2}", b"? [1, 2]\n: 3"]),
)
overrides = st.lists(st.one_of(
    st.tuples(st.sampled_from(KNOWN_KEYS) | st.text(max_size=12), st.text(max_size=15)).map(lambda kv: f"{kv[0]}={kv[1]}"),
    st.text(max_size=20)), max_size=4)


@FAST
@given(content=config_files, extra=overrides, which=st.integers(0, len(CONFIG_CLASSES) - 1))
def test_config_loader_answers_a_config_or_config_error(content, extra, which, tmp_path) -> None:
    cls = CONFIG_CLASSES[which]
    path = tmp_path / "config.yaml"
    path.write_bytes(content)
    try:
        config = load_config(cls, path, extra)
    except ConfigError as err:
        assert err.problems and all(str(p) for p in err.problems)
        text = str(err)
        assert "Traceback" not in text and text.startswith("invalid config")
        event("ConfigError")
        return
    assert isinstance(config, cls)
    event("config")


@FAST
@given(extra=overrides)
def test_config_overrides_alone(extra) -> None:
    from lexalign.sft.train import SFTStageConfig

    try:
        load_config(SFTStageConfig, None, extra)
    except ConfigError as err:
        assert all(p.where in ("", "command line") or ":" in p.where or p.where.endswith(".yaml") for p in err.problems)


def test_config_loader_on_a_folder_and_an_unreadable_file(tmp_path) -> None:
    from lexalign.sft.train import SFTStageConfig

    with pytest.raises(ConfigError, match="cannot read the file"):
        load_config(SFTStageConfig, tmp_path)
    bad = tmp_path / "latin1.yaml"
    bad.write_bytes(b"name: caf\xe9\n")
    with pytest.raises(ConfigError, match=r"latin1.yaml:1.*UTF-8"):
        load_config(SFTStageConfig, bad)


# --------------------------------------------------------------------------- ranking submission


def _stores() -> list[str]:
    return ["sqlite", "postgresql"]


@pytest.fixture(scope="module", params=_stores())
def prop_store(request, tmp_path_factory):
    from lexalign.data.store import open_store

    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path_factory.mktemp('props') / 'p.db'}"
    else:
        cluster = request.getfixturevalue("postgres")
        url = cluster.create_database("props")
    with open_store(url, synchronous="NORMAL") as store:
        store.add_annotator("ann", None)
        store.add_annotator("other", None)
        yield store


from test_postgres import postgres  # noqa: E402,F401 - the session's PostgreSQL cluster fixture

rank_values = st.one_of(st.integers(-2, 6), st.booleans(), st.floats(allow_nan=True), st.text(max_size=3), st.none(),
                        st.integers(10**18, 10**20))
free_text = st.one_of(st.none(), st.text(max_size=60), st.sampled_from(
    ["<script>alert(1)</script>", "x" * 2500, "a\x00b", "ok \u202e bidi", "fine < fees", "  ", "Plain rationale."]))


def _consistent(store) -> dict[str, int]:
    with store.engine.connect() as conn:
        rankings = conn.exec_driver_sql("SELECT count(*) FROM rankings").scalar()
        done = conn.exec_driver_sql("SELECT count(*) FROM assignments WHERE status = 'done'").scalar()
        audited = conn.exec_driver_sql("SELECT count(*) FROM audit_events WHERE action = 'submission'").scalar()
        orphans = conn.exec_driver_sql(
            "SELECT count(*) FROM rankings r LEFT JOIN assignments a ON a.task_id = r.task_id "
            "AND a.annotator_id = r.annotator_id WHERE a.status IS NULL OR a.status <> 'done'").scalar()
    assert rankings == done == audited and orphans == 0, (rankings, done, audited, orphans)
    return {"rankings": rankings}


@st.composite
def weak_order(draw, n: int) -> list[int]:
    levels = draw(st.integers(1, n))
    ranks = [draw(st.integers(1, levels)) for _ in range(n)]
    order = sorted(set(ranks))
    return [order.index(r) + 1 for r in ranks]


FIELDS = ["ranks", "key_kind", "rationale", "flags", "none_acceptable", "token_kind", "user"]


@st.composite
def submission(draw) -> dict:
    """A valid form, or one with one or two fields replaced by fuzz (so each bad field reaches the database)."""
    n = draw(st.integers(2, 4))
    broken = set(draw(st.lists(st.sampled_from(FIELDS), max_size=2)))
    fuzz = {
        "ranks": st.lists(rank_values, max_size=5),
        "key_kind": st.just("junk"),
        "rationale": free_text,
        "flags": st.lists(st.sampled_from(["<b>x</b>", "", "wrong_law"]) | st.text(max_size=5), max_size=3),
        "none_acceptable": st.integers(0, 2) | st.none() | st.text(max_size=2),
        "token_kind": st.sampled_from(["wrong", "empty", "none", "other-user"]),
        "user": st.sampled_from(["other", "nobody", "ann\x00", "", "ann\n", "ANN", "ann' OR '1'='1"]),
    }
    valid = {
        "ranks": weak_order(n),
        "key_kind": st.sampled_from(["id", "str"]),
        "rationale": st.sampled_from([None, "", "Only A quotes the clause; fees < cap."]),
        "flags": st.lists(st.sampled_from(["wrong_law", "other", "risky_advice"]), max_size=2),
        "none_acceptable": st.booleans(),
        "token_kind": st.just("right"),
        "user": st.just("ann"),
    }
    form = {name: draw(fuzz[name] if name in broken else valid[name]) for name in FIELDS}
    form["n"] = n
    return form


@settings(max_examples=60, deadline=None, database=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(form=submission())
def test_random_submissions_are_stored_whole_or_refused(prop_store, form) -> None:
    from lexalign.data.store import StoreError, SubmissionError

    store, n, ranks = prop_store, form["n"], form["ranks"]
    before = _consistent(store)["rankings"]
    task = store.add_task(f"p{store.task_count()}", "Which law governs?", [f"c{i}" for i in range(n)], k=1)
    view = store.next_task_for("ann")
    assert view is not None and view.task_id == task
    ids = [c.id for c in view.candidates]
    keys = {"id": ids, "str": [str(i) for i in ids], "junk": [f"x{i}" for i in ids]}[form["key_kind"]]
    mapping = dict(zip(keys, ranks))
    token = {"right": view.form_token, "wrong": "forged", "empty": "", "none": None,
             "other-user": view.form_token}[form["token_kind"]]
    who = "other" if form["token_kind"] == "other-user" else form["user"]
    try:
        store.submit_ranking(who, task, mapping, form["none_acceptable"], form["rationale"], form["flags"],
                             form_token=token)
        accepted = True
    except SubmissionError:
        accepted = False
    except StoreError as err:  # not a SubmissionError: the store could not be used at all; say which
        pytest.fail(f"submission gave a StoreError that is not a SubmissionError: {err}")
    after = _consistent(store)["rankings"]
    assert after == before + accepted
    if accepted:  # what was stored is exactly what a valid form holds
        row = store.my_rankings("ann", limit=1)[0]
        assert who == "ann" and token == view.form_token and isinstance(form["none_acceptable"], bool)
        assert row["ranks"] == [int(r) for r in ranks] and len(ranks) == n
    else:
        store.skip_task("ann", task, form_token=view.form_token)  # free the queue for the next example
    event("accepted" if accepted else "refused")


# --------------------------------------------------------------------------- chat uploads

def _valid_files() -> dict[str, bytes]:
    from test_documents import make_docx, make_pdf

    return {"pdf": make_pdf([["Governing Law. New York law governs this Agreement."], ["Fees are due in 30 days."]]),
            "docx": make_docx(["Governing Law. New York law governs.", "Fees are due in 30 days."]),
            "txt": b"Governing Law. New York law governs this Agreement.\n"}


VALID_FILES = _valid_files()


@st.composite
def upload(draw) -> tuple[str, bytes]:
    kind = draw(st.sampled_from(["pdf", "docx", "txt"]))
    name = draw(st.sampled_from([f"contract.{kind}", f"CONTRACT.{kind.upper()}", "x.bin", "noext", f"../../etc/a.{kind}"]))
    how = draw(st.sampled_from(["random", "flip", "truncate", "splice", "valid"]))
    data = VALID_FILES[kind]
    if how == "random":
        data = draw(st.binary(max_size=400))
        if draw(st.booleans()):
            data = {"pdf": b"%PDF-1.4\n", "docx": b"PK\x03\x04", "txt": b""}[kind] + data
    elif how == "flip":
        raw = bytearray(data)
        for _ in range(draw(st.integers(1, 8))):
            raw[draw(st.integers(0, len(raw) - 1))] = draw(st.integers(0, 255))
        data = bytes(raw)
    elif how == "truncate":
        data = data[:draw(st.integers(0, len(data)))]
    elif how == "splice":
        cut = draw(st.integers(0, len(data)))
        data = data[:cut] + draw(st.binary(max_size=200)) + data[cut:]
    return name, data


@settings(max_examples=120, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])
@given(file=upload())
def test_uploads_give_text_or_a_clear_error_within_bounds(file) -> None:
    from lexalign.serve.documents import DocumentError, DocumentLimits, parse_document

    name, data = file
    limits = DocumentLimits(max_bytes=64 * 1024, max_pages=5, max_chars=20_000, max_unzipped_bytes=2 * 1024 * 1024)
    try:
        document = parse_document(name, data, limits)
    except DocumentError as err:
        message = str(err)
        assert message.startswith(Path(name).name or "upload") and "Traceback" not in message
        event("clear error")
        return
    event("text")
    assert document.text.strip() and len(document.text) <= limits.max_chars
    assert document.pages is None or document.pages <= limits.max_pages
    assert document.chunks and all(document.text[c.start:c.end] == c.text for c in document.chunks)


def test_bounds_hold_for_big_inputs() -> None:
    from test_documents import make_pdf

    from lexalign.serve.documents import DocumentError, DocumentLimits, parse_document

    limits = DocumentLimits(max_bytes=50_000, max_pages=3, max_chars=5_000, max_unzipped_bytes=200_000)
    with pytest.raises(DocumentError, match="MB; the limit"):
        parse_document("big.txt", b"a" * 50_001, limits)
    with pytest.raises(DocumentError, match="pages; the limit is 3"):
        parse_document("many.pdf", make_pdf([["page"]] * 4), limits)
    with pytest.raises(DocumentError, match="characters"):
        parse_document("long.txt", ("word " * 2000).encode(), limits)
    bomb = io.BytesIO()
    with zipfile.ZipFile(bomb, "w", zipfile.ZIP_DEFLATED) as z:
        z.writestr("word/document.xml", "<w:document/>" + " " * 1_000_000)
    with pytest.raises(DocumentError, match="unpacks to"):
        parse_document("bomb.docx", bomb.getvalue(), limits)
