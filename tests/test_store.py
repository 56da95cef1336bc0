"""The preference store: schema versions, durability settings, assignment rules under concurrency,
server-side validation of submissions (hypothesis for rank lists), kill -9 durability, import, feedback, audit."""

from __future__ import annotations

import json
import os
import random
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from lexalign.data.schemas import RankingRecord
from lexalign.data.store import StoreError, SubmissionError, open_store
from lexalign.data.store_schema import SCHEMA_VERSION
from lexalign.data.store_input import ANSWER_FLAGS, FLAGS, TASK_FLAGS, parse_day, submission_period
from lexalign.errors import LexalignError

REPO = Path(__file__).resolve().parent.parent
CANDIDATES = ["Answer one.", "Answer two.", "Answer three.", "Answer four."]


def url_for(path: Path) -> str:
    return f"sqlite:///{path}"


@pytest.fixture()
def store(tmp_path: Path):
    with open_store(url_for(tmp_path / "prefs.db")) as s:
        yield s


def add_tasks(store, n: int, k: int = 3, prefix: str = "t", n_candidates: int = 3) -> list[int]:
    return [store.add_task(f"{prefix}{i}", f"Question {i}?", CANDIDATES[:n_candidates], {"question": f"Q{i}"}, k=k)
            for i in range(n)]


def valid_ranks(view, rng: random.Random) -> dict[int, int]:
    """A random complete weak ordering (dense, ties allowed) of the view's candidates."""
    n = len(view.candidates)
    levels = rng.randint(1, n)
    ranks = [rng.randint(1, levels) for _ in range(n)]
    order = sorted(set(ranks))
    return {c.id: order.index(r) + 1 for c, r in zip(view.candidates, ranks)}


def rankings_count(store) -> int:
    return store.counts()["rankings"]


# --------------------------------------------------------------------------- schema version and settings


def test_new_store_records_schema_version_and_durability_pragmas(tmp_path: Path) -> None:
    with open_store(url_for(tmp_path / "a.db")) as store:
        assert store.schema_version() == SCHEMA_VERSION == 2
        with store.engine.connect() as conn:
            pragmas = {name: conn.exec_driver_sql(f"PRAGMA {name}").scalar()
                       for name in ("journal_mode", "synchronous", "foreign_keys", "busy_timeout")}
    assert pragmas == {"journal_mode": "wal", "synchronous": 2, "foreign_keys": 1, "busy_timeout": 30000}
    with open_store(url_for(tmp_path / "a.db"), synchronous="NORMAL") as store:  # reopening works
        with store.engine.connect() as conn:
            assert conn.exec_driver_sql("PRAGMA synchronous").scalar() == 1


@pytest.mark.parametrize("version, words", [(3, "newer than the version 2"), (0, "older than 2, and no migration")])
def test_schema_version_mismatch_fails_clearly(tmp_path: Path, version: int, words: str) -> None:
    path = tmp_path / "v.db"
    open_store(url_for(path)).close()
    with sqlite3.connect(path) as raw:
        raw.execute("UPDATE schema_version SET version = ?", (version,))
    with pytest.raises(StoreError, match=words) as info:
        open_store(url_for(path))
    assert isinstance(info.value, LexalignError)
    assert f"schema version {version}" in str(info.value)


def test_unknown_schema_fails_clearly(tmp_path: Path) -> None:
    path = tmp_path / "u.db"
    open_store(url_for(path)).close()
    with sqlite3.connect(path) as raw:
        raw.execute("DELETE FROM schema_version")
    with pytest.raises(StoreError, match="schema_version table is empty"):
        open_store(url_for(path))
    with sqlite3.connect(path) as raw:
        raw.execute("DROP TABLE schema_version")
    with pytest.raises(StoreError, match="no schema_version"):
        open_store(url_for(path))


def test_version_mismatch_through_the_cli_is_one_clear_line(tmp_path: Path, capsys) -> None:
    from lexalign.cli import main

    path = tmp_path / "v.db"
    open_store(url_for(path)).close()
    with sqlite3.connect(path) as raw:
        raw.execute("UPDATE schema_version SET version = 7")
    assert main(["annotators", "list", "--store", url_for(path)]) == 2
    err = capsys.readouterr().err
    assert "schema version 7" in err and "upgrade lexalign" in err and "Traceback" not in err


def test_bad_urls_are_clear() -> None:
    with pytest.raises(StoreError, match="not a database URL"):
        open_store("no-scheme-here")
    with pytest.raises(StoreError, match="unsupported database"):
        open_store("mysql://x@y/z")


# --------------------------------------------------------------------------- annotators and login


def test_annotators_passwords_and_login(store) -> None:
    store.add_annotator("alice", "correct-horse", "annotator")
    store.add_annotator("root", "battery-staple", "admin")
    assert store.verify_login("alice", "correct-horse").username == "alice"
    assert store.verify_login("alice", "wrong-password") is None
    assert store.verify_login("nobody", "whatever-pass") is None
    assert store.is_admin("root") and not store.is_admin("alice") and not store.is_admin(None)
    with store.engine.connect() as conn:
        stored = conn.exec_driver_sql("SELECT password_hash FROM annotators WHERE username='alice'").scalar()
    assert stored.startswith("$argon2id$") and "correct-horse" not in stored
    with pytest.raises(StoreError, match="already exists"):
        store.add_annotator("alice", "another-pass", "annotator")
    with pytest.raises(StoreError, match="at least 8"):
        store.add_annotator("carol", "short", "annotator")
    with pytest.raises(StoreError, match="role"):
        store.add_annotator("carol", "long-enough", "boss")  # type: ignore[arg-type]
    with pytest.raises(StoreError, match="username"):
        store.add_annotator("<script>", "long-enough", "annotator")
    store.set_active("alice", False)
    assert store.verify_login("alice", "correct-horse") is None
    logins = store.audit_events("login")
    assert [e["detail"]["ok"] for e in reversed(logins)] == [True, False, False, False]
    assert len(store.audit_events("annotator_created")) == 2


def test_cli_annotators_add_and_list(tmp_path: Path, capsys, monkeypatch) -> None:
    import io

    from lexalign.cli import main

    url = url_for(tmp_path / "cli.db")
    monkeypatch.setattr(sys, "stdin", io.StringIO("s3cret-password\n"))
    assert main(["annotators", "add", "dana", "--role", "admin", "--store", url, "--password-stdin"]) == 0
    assert main(["annotators", "list", "--store", url]) == 0
    out = capsys.readouterr().out
    assert "created admin 'dana'" in out and "dana" in out.splitlines()[-1]
    with open_store(url) as store:
        assert store.verify_login("dana", "s3cret-password") is not None
    monkeypatch.setattr(sys, "stdin", io.StringIO("short\n"))
    assert main(["annotators", "add", "erin", "--store", url, "--password-stdin"]) == 2
    assert "at least 8 characters" in capsys.readouterr().err


# --------------------------------------------------------------------------- assignment


def test_each_task_goes_to_k_different_annotators_never_twice(store) -> None:
    for name in ("a", "b", "c", "d"):
        store.add_annotator(name, None)
    (task,) = add_tasks(store, 1, k=2)
    va = store.next_task_for("a")
    assert va.task_id == task
    assert store.next_task_for("a").form_token == va.form_token  # the open task comes back, same token
    vb = store.next_task_for("b")
    assert vb.task_id == task and vb.form_token != va.form_token
    assert store.next_task_for("c") is None  # k = 2 reached
    store.skip_task("b", task, form_token=vb.form_token)
    assert store.next_task_for("b") is None  # never again to the one who skipped it
    vc = store.next_task_for("c")  # ... but the freed slot goes to someone else
    assert vc.task_id == task
    store.submit_ranking("a", task, {c.id: i + 1 for i, c in enumerate(va.candidates)}, form_token=va.form_token)
    assert store.next_task_for("a") is None  # never twice to the same annotator
    assert store.next_task_for("d") is None
    assert store.progress("a").done == 1 and store.progress("b").skipped == 1


def test_imported_tasks_with_k0_are_not_offered(store) -> None:
    store.add_annotator("a", None)
    store.add_task("ref", "Q?", ["x", "y"], k=0)
    assert store.next_task_for("a") is None
    assert store.progress("a").total == 0


def test_concurrent_assignment_of_one_task_gives_exactly_k(tmp_path: Path) -> None:
    with open_store(url_for(tmp_path / "race.db")) as store:
        names = [f"u{i}" for i in range(20)]
        for name in names:
            store.add_annotator(name, None)
        (task,) = add_tasks(store, 1, k=3)
        barrier = threading.Barrier(len(names))
        got: dict[str, object] = {}

        def grab(name: str) -> None:
            barrier.wait()
            got[name] = store.next_task_for(name)

        threads = [threading.Thread(target=grab, args=(n,)) for n in names]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        winners = [n for n, v in got.items() if v is not None]
        assert len(winners) == 3 and all(got[n].task_id == task for n in winners)
        with store.engine.connect() as conn:
            slots = sorted(r[0] for r in conn.exec_driver_sql("SELECT slot FROM assignments"))
        assert slots == [0, 1, 2]


def test_20_annotators_x_50_concurrent_submissions_each_stored_exactly_once(tmp_path: Path) -> None:
    annotators, per_annotator, k = 20, 50, 3
    with open_store(url_for(tmp_path / "load.db")) as store:
        for i in range(annotators):
            store.add_annotator(f"u{i:02d}", None)
        add_tasks(store, annotators * per_annotator // k + 10, k=k)
        barrier = threading.Barrier(annotators)
        acks: list[tuple[str, int, str, int]] = []
        errors: list[BaseException] = []
        lock = threading.Lock()

        def work(name: str, seed: int) -> None:
            rng = random.Random(seed)
            barrier.wait()
            try:
                for _ in range(per_annotator):
                    view = store.next_task_for(name)
                    assert view is not None
                    ranking_id = store.submit_ranking(name, view.task_id, valid_ranks(view, rng),
                                                      rng.random() < 0.1, "ok", [], form_token=view.form_token)
                    with lock:
                        acks.append((name, view.task_id, view.form_token, ranking_id))
            except BaseException as err:  # noqa: BLE001 - reported below
                errors.append(err)

        started = time.perf_counter()
        threads = [threading.Thread(target=work, args=(f"u{i:02d}", i)) for i in range(annotators)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        elapsed = time.perf_counter() - started
        assert not errors, errors[:3]
        assert len(acks) == annotators * per_annotator
        with store.engine.connect() as conn:
            rows = conn.exec_driver_sql(
                "SELECT r.id, a.username, r.task_id, r.form_token FROM rankings r "
                "JOIN annotators a ON a.id = r.annotator_id").all()
            per_task = Counter(r[2] for r in rows)
            done = conn.exec_driver_sql("SELECT count(*) FROM assignments WHERE status = 'done'").scalar()
            audited = conn.exec_driver_sql("SELECT count(*) FROM audit_events WHERE action = 'submission'").scalar()
        stored = {(r[1], r[2], r[3], r[0]) for r in rows}
        assert len(rows) == len(acks) == len(stored)        # nothing lost, nothing doubled
        assert stored == set(acks)                          # every ack is exactly the row stored
        assert max(per_task.values()) <= k                  # never more than k annotators per task
        assert done == audited == len(acks)                 # submission + assignment + audit: one transaction
        print(f"\n{len(acks)} submissions by {annotators} threads in {elapsed:.1f} s")


# --------------------------------------------------------------------------- submissions: validation


@pytest.fixture()
def one_task(store):
    store.add_annotator("alice", None)
    store.add_annotator("bob", None)
    add_tasks(store, 2, k=2)
    view = store.next_task_for("alice")
    return store, view


def ids(view) -> list[int]:
    return [c.id for c in view.candidates]


@pytest.mark.parametrize("make_ranks, words", [
    (lambda i: {i[0]: 1, i[1]: 3, i[2]: 1}, "missing rank 2"),          # gap: not dense
    (lambda i: {i[0]: 1, i[1]: 10**18, i[2]: 2}, "missing rank 3"),    # a huge rank is a gap, not a huge set
    (lambda i: {i[0]: 0, i[1]: 1, i[2]: 2}, "start at 1"),
    (lambda i: {i[0]: 1, i[1]: 2}, "no rank for candidate"),           # incomplete
    (lambda i: {i[0]: 1, i[1]: 2, i[2]: 3, 99999: 4}, "unknown candidate id 99999"),
    (lambda i: {i[0]: 1, i[1]: 2, 424242: 3}, "unknown candidate id 424242"),
    (lambda i: {i[0]: 1.5, i[1]: 1, i[2]: 2}, "whole number"),
    (lambda i: {i[0]: True, i[1]: 1, i[2]: 2}, "whole number"),
    (lambda i: [1, 2, 3], "ranks must map"),
    (lambda i: {}, "ranks must map"),
])
def test_bad_ranks_are_refused_and_nothing_is_stored(one_task, make_ranks, words) -> None:
    store, view = one_task
    before = store.counts()
    with pytest.raises(SubmissionError, match=words):
        store.submit_ranking("alice", view.task_id, make_ranks(ids(view)), form_token=view.form_token)
    assert store.counts() == before
    assert store.next_task_for("alice").form_token == view.form_token  # the task is still open


@pytest.mark.parametrize("rationale, words", [
    ("x" * 2001, "2001 characters long; the limit is 2000"),
    ("<script>alert('x')</script>", "plain text"),
    ("fine <img src=x onerror=alert(1)>", "plain text"),
    ("see <a href='javascript:alert(1)'>this</a>", "plain text"),
    ("<!-- hidden -->", "plain text"),
    ("<script", "plain text"),
    ("null byte \x00 here", "control characters"),
    ("escape \x1b[31m red", "control characters"),
    ("bidi \u202e override", "control characters"),
])
def test_bad_rationales_are_refused_and_nothing_is_stored(one_task, rationale, words) -> None:
    store, view = one_task
    before = store.counts()
    with pytest.raises(SubmissionError, match=words):
        store.submit_ranking("alice", view.task_id, dict(zip(ids(view), [1, 2, 3])), rationale=rationale,
                             form_token=view.form_token)
    assert store.counts() == before


def test_plain_text_with_angle_brackets_is_fine_and_stored_verbatim(one_task) -> None:
    store, view = one_task
    text = "Damages cap < fees paid; B > C.\nSecond line\twith a tab. 5 <= 6"
    store.submit_ranking("alice", view.task_id, dict(zip(ids(view), [1, 2, 2])), rationale=text,
                         flags=["wrong_law", "wrong_law", "other"], form_token=view.form_token)
    (mine,) = store.my_rankings("alice")
    assert mine["rationale"] == text and mine["flags"] == ["wrong_law", "other"] and mine["ranks"] == [1, 2, 2]


def test_flags_on_single_answers_are_stored_at_their_positions_and_checked(one_task) -> None:
    """answer_flags={candidate id: flags} -> "flag@position" (the order of the stored ranks and of an export's
    responses); a flag on an answer of another task, an unknown flag or a non-list is refused, nothing stored."""
    from lexalign.data.store_input import split_flags

    store, view = one_task
    cids = ids(view)
    ranks = dict(zip(cids, [1, 2, 2]))
    for bad, words in [({cids[0] + 1000: ["wrong_law"]}, "flags for unknown candidate id"),
                       ({cids[0]: ["nonsense"]}, "unknown flag"), ({cids[0]: "wrong_law"}, "must be a list"),
                       ({"x": ["wrong_law"]}, "unknown candidate id 'x'"), ({cids[0]: [["wrong_law"]]}, "unknown flag"),
                       ({cids[0]: ["bad_task"]}, "about the whole task, not one answer")]:
        with pytest.raises(SubmissionError, match=words):
            store.submit_ranking("alice", view.task_id, ranks, form_token=view.form_token, answer_flags=bad)
    assert rankings_count(store) == 0
    store.submit_ranking("alice", view.task_id, ranks, flags=["other"], form_token=view.form_token,
                         answer_flags={cids[2]: ["invented_clause", "invented_clause", "wrong_law"], cids[0]: []})
    (mine,) = store.my_rankings("alice")
    assert mine["flags"] == ["other", "invented_clause@2", "wrong_law@2"]
    assert split_flags(mine["flags"]) == (["other"], {2: ["invented_clause", "wrong_law"]})


def test_form_tokens_replay_and_ownership(one_task) -> None:
    store, view = one_task
    ranks = dict(zip(ids(view), [2, 1, 2]))
    with pytest.raises(SubmissionError, match="unknown or stale form token"):
        store.submit_ranking("alice", view.task_id, ranks, form_token="forged-token")
    with pytest.raises(SubmissionError, match="missing form token"):
        store.submit_ranking("alice", view.task_id, ranks, form_token="")
    with pytest.raises(SubmissionError, match="not assigned to you"):
        store.submit_ranking("bob", view.task_id, ranks, form_token=view.form_token)  # someone else's form
    store.submit_ranking("alice", view.task_id, ranks, form_token=view.form_token)
    before = store.counts()
    with pytest.raises(SubmissionError, match="already submitted"):
        store.submit_ranking("alice", view.task_id, ranks, form_token=view.form_token)  # replay
    second = store.next_task_for("alice")
    with pytest.raises(SubmissionError, match="unknown or stale form token"):  # old token, new task
        store.submit_ranking("alice", second.task_id, dict(zip(ids(second), [1, 1, 1])), form_token=view.form_token)
    store.skip_task("alice", second.task_id, form_token=second.form_token)
    with pytest.raises(SubmissionError, match="skipped"):
        store.submit_ranking("alice", second.task_id, dict(zip(ids(second), [1, 1, 1])), form_token=second.form_token)
    assert store.counts()["rankings"] == before["rankings"]


def test_unknown_flag_and_inactive_annotator_are_refused(one_task) -> None:
    store, view = one_task
    ranks = dict(zip(ids(view), [1, 2, 3]))
    with pytest.raises(SubmissionError, match="unknown flag"):
        store.submit_ranking("alice", view.task_id, ranks, flags=["<b>bold</b>"], form_token=view.form_token)
    store.set_active("alice", False)
    with pytest.raises(SubmissionError, match="deactivated"):
        store.submit_ranking("alice", view.task_id, ranks, form_token=view.form_token)
    assert rankings_count(store) == 0
    assert set(ANSWER_FLAGS) == {"invented_clause", "wrong_law", "risky_advice", "personal_data", "other"}
    assert set(TASK_FLAGS) == {"bad_task"} and FLAGS == {**ANSWER_FLAGS, **TASK_FLAGS}


@pytest.fixture(scope="module")
def hypothesis_store(tmp_path_factory):
    with open_store(url_for(tmp_path_factory.mktemp("hyp") / "h.db"), synchronous="NORMAL") as store:
        store.add_annotator("h", None)
        yield store


def _is_weak_ordering(ranks: list[int], n: int) -> bool:
    return len(ranks) == n and all(r >= 1 for r in ranks) and set(ranks) == set(range(1, max(ranks) + 1))


@settings(max_examples=120, deadline=None, database=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(n=st.integers(2, 5), ranks=st.lists(st.integers(-1, 6), min_size=0, max_size=7),
       extra_id=st.booleans(), none_acceptable=st.booleans())
def test_random_rank_lists_are_accepted_exactly_when_they_are_weak_orderings(hypothesis_store, n, ranks, extra_id,
                                                                            none_acceptable) -> None:
    store = hypothesis_store
    prompt_id = f"h{store.task_count()}"
    task = store.add_task(prompt_id, "Q?", [f"c{i}" for i in range(n)], k=1)
    view = store.next_task_for("h")
    assert view.task_id == task
    cids = ids(view)
    # ranks beyond the n candidates go to ids that do not exist (an unknown candidate must be refused)
    mapping = {(cids[i] if i < n else max(cids) + 1000 + i): r for i, r in enumerate(ranks)}
    if extra_id and ranks:
        mapping[max(cids) + 999] = ranks[-1]
    before = rankings_count(store)
    expected_ok = not (extra_id and ranks) and _is_weak_ordering(ranks, n)
    try:
        store.submit_ranking("h", task, mapping, none_acceptable, form_token=view.form_token)
        accepted = True
    except SubmissionError:
        accepted = False
        store.skip_task("h", task, form_token=view.form_token)
    assert accepted == expected_ok, (ranks, n, extra_id)
    assert rankings_count(store) == before + accepted
    if accepted:
        stored = store.my_rankings("h", limit=1)[0]
        assert stored["ranks"] == ranks[:n]


# --------------------------------------------------------------------------- kill -9 durability


def _load_child(url: str, annotators: int, synchronous: str) -> None:
    """Runs in a subprocess: annotators submit as fast as they can; one line per acknowledged submission."""
    store = open_store(url, synchronous=synchronous)
    out_lock = threading.Lock()

    def work(name: str, seed: int) -> None:
        rng = random.Random(seed)
        while True:
            view = store.next_task_for(name)
            if view is None:
                return
            ranking_id = store.submit_ranking(name, view.task_id, valid_ranks(view, rng), form_token=view.form_token)
            with out_lock:  # printed only after submit_ranking returned: this is the acknowledgement
                sys.stdout.write(json.dumps([name, view.task_id, view.form_token, ranking_id]) + "\n")
                sys.stdout.flush()

    threads = [threading.Thread(target=work, args=(f"u{i:02d}", i), daemon=True) for i in range(annotators)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()


@pytest.mark.parametrize("synchronous", ["FULL", "NORMAL"])
def test_sigkill_mid_load_keeps_every_acknowledged_submission(tmp_path: Path, synchronous: str) -> None:
    """kill -9 of a process whose 20 annotator threads submit as fast as they can: afterwards every acknowledged
    submission is stored, none half-applied, and the file passes ``integrity_check``.

    Both levels must pass, because WAL mode alone gives this: a commit's WAL frames are in the OS page cache
    before ``submit_ranking`` returns, and killing the process does not clear that cache. So this test cannot
    tell FULL from NORMAL. What ``synchronous=FULL`` (the default) adds is an fsync of the WAL at each commit,
    which keeps acknowledged submissions through a power cut or an OS crash; that cannot be produced here and
    is not tested."""
    path = tmp_path / "kill.db"
    url = url_for(path)
    annotators = 20
    with open_store(url) as store:
        for i in range(annotators):
            store.add_annotator(f"u{i:02d}", None)
        add_tasks(store, 400, k=3)
    code = (f"import sys; sys.path.insert(0, {str(Path(__file__).parent)!r}); import test_store; "
            f"test_store._load_child({url!r}, {annotators}, {synchronous!r})")
    child = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                             text=True, cwd=REPO)
    acks = []
    deadline = time.monotonic() + 120
    while len(acks) < 300 and time.monotonic() < deadline:
        line = child.stdout.readline()
        if not line:
            break
        acks.append(json.loads(line))
    assert len(acks) >= 300, child.stderr.read()[-3000:]
    child.send_signal(signal.SIGKILL)  # mid-load: 20 threads are inside transactions right now
    rest, _ = child.communicate(timeout=30)
    assert child.returncode == -signal.SIGKILL
    acks += [json.loads(line) for line in rest.splitlines() if line.strip().endswith("]")]
    with sqlite3.connect(path) as raw:  # what a fresh process finds after the crash (WAL recovery)
        assert raw.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    with open_store(url) as store:
        with store.engine.connect() as conn:
            rows = {(r[0], r[1], r[2], r[3]) for r in conn.exec_driver_sql(
                "SELECT a.username, r.task_id, r.form_token, r.id FROM rankings r "
                "JOIN annotators a ON a.id = r.annotator_id")}
            done = conn.exec_driver_sql("SELECT count(*) FROM assignments WHERE status='done'").scalar()
            audited = conn.exec_driver_sql("SELECT count(*) FROM audit_events WHERE action='submission'").scalar()
    missing = [a for a in acks if tuple(a) not in rows]
    assert not missing, f"{len(missing)} acknowledged submissions lost, e.g. {missing[:3]}"
    assert len(rows) >= len(acks)
    assert done == audited == len(rows)  # no half-applied submission survived the crash
    assert len(rows) < 400 * 3  # it really was killed mid-load


# --------------------------------------------------------------------------- import, feedback, audit


def _record(prompt_id: str, ranks: list[int], annotator: str = "acord-lawyers", **kw) -> RankingRecord:
    return RankingRecord(prompt_id=prompt_id, prompt=f"Request {prompt_id}", responses=["r1", "r2", "r3"][:len(ranks)],
                         ranks=ranks, annotator=annotator, **kw)


def test_import_rankings_is_atomic_and_idempotent(store) -> None:
    records = [_record("p1", [1, 2, 2]), _record("p2", [2, 1, 3], meta={"source": "acord"})]
    result = store.import_rankings(records, source="acord")
    assert (result.tasks_created, result.rankings_added, result.annotators_created) == (2, 2, ["acord-lawyers"])
    again = store.import_rankings(records, source="acord")
    assert (again.tasks_created, again.tasks_reused, again.rankings_added, again.duplicates) == (0, 2, 0, 2)
    lawyers = store.get_annotator("acord-lawyers")
    assert lawyers is not None and not lawyers.active
    assert store.verify_login("acord-lawyers", "") is None
    before = store.counts()
    with pytest.raises(StoreError, match="already ranked this task differently"):
        store.import_rankings([_record("p3", [1, 2]), _record("p1", [1, 1, 2])], source="acord")
    with pytest.raises(StoreError, match="different responses"):
        store.import_rankings([RankingRecord(prompt_id="p1", prompt="x", responses=["other", "texts", "r3"],
                                             ranks=[1, 2, 3], annotator="someone")], source="acord")
    assert store.counts() == before  # the p3 of the failed batch was rolled back too
    (t1, t2) = store.task_rankings()
    assert t1.rankings[0].ranks == (1, 2, 2) and t2.source == "acord"


def test_import_the_shipped_acord_rankings(tmp_path: Path, capsys) -> None:
    from lexalign.cli import main
    from lexalign.data.paths import shipped_dir

    shipped = shipped_dir() / "acord_rankings_valid.jsonl"
    if not shipped.is_file():  # the data engineer's file; fall back to a tiny file of the same format
        shipped = tmp_path / "acord_rankings_valid.jsonl"
        shipped.write_text("".join(_record(f"a{i}", [1, 2, 3]).model_dump_json() + "\n" for i in range(3)))
    n_records = sum(1 for line in shipped.read_text().splitlines() if line.strip())
    url = url_for(tmp_path / "acord.db")
    assert main(["prefs", "import", str(shipped), "--store", url]) == 0
    assert f"{n_records} rankings added" in capsys.readouterr().out
    with open_store(url) as store:
        tasks = store.task_rankings()
        assert len(tasks) == n_records
        assert {r.annotator for t in tasks for r in t.rankings} == {"acord-lawyers"}
        assert store.audit_events("import")[0]["detail"]["rankings_added"] == n_records


def test_feedback_is_validated_and_stored(store) -> None:
    fid = store.add_feedback("lawyer1", [{"role": "user", "content": "Is clause 5 an indemnity?"}], "Yes.", -1,
                             better_answer="No: clause 5 is a limitation of liability.")
    (row,) = store.list_feedback()
    assert row["id"] == fid and row["rating"] == -1 and row["prompt"][0]["role"] == "user"
    for bad in (dict(rating=0), dict(rating=True), dict(response=" "), dict(prompt=[{"role": "assistant", "content": "x"}]),
                dict(better_answer="a\x00b")):
        kwargs = dict(user="lawyer1", prompt="Q?", response="A.", rating=1) | bad
        with pytest.raises(SubmissionError):
            store.add_feedback(**kwargs)
    assert len(store.list_feedback()) == 1


def test_audit_events_cover_the_actions(store, tmp_path: Path) -> None:
    from lexalign.reward.prefs import export_preferences

    store.add_annotator("alice", "password-1", "annotator")
    store.verify_login("alice", "password-1")
    add_tasks(store, 2, k=1)
    view = store.next_task_for("alice")
    store.submit_ranking("alice", view.task_id, dict(zip(ids(view), [1, 2, 3])), form_token=view.form_token)
    view = store.next_task_for("alice")
    store.skip_task("alice", view.task_id, form_token=view.form_token, reason="outside my practice area")
    export_preferences(store, tmp_path / "out", save_dataset=False, actor="alice")
    actions = {e["action"] for e in store.audit_events()}
    assert {"annotator_created", "login", "submission", "skip", "export"} <= actions
    skip = store.audit_events("skip")[0]
    assert skip["actor"] == "alice" and skip["detail"]["reason"] == "outside my practice area"


# --------------------------------------------------------------------------- withdrawing one's own ranking


def _submit(store, user: str, ranks: list[int], **kw) -> tuple[object, int]:
    view = store.next_task_for(user)
    return view, store.submit_ranking(user, view.task_id, dict(zip(ids(view), ranks)), form_token=view.form_token,
                                      **kw)


def test_withdrawing_ones_own_ranking_reopens_the_task_in_one_audited_step(store) -> None:
    store.add_annotator("alice", None)
    store.add_annotator("bob", None)
    add_tasks(store, 2, k=1)
    view, ranking_id = _submit(store, "alice", [1, 2, 2], rationale="B and C tie", flags=["wrong_law"])
    later = store.next_task_for("alice")  # another task is open meanwhile
    assert later.task_id != view.task_id
    (mine,) = store.my_rankings("alice")
    assert mine["ranking_id"] == ranking_id and mine["editable"] is True and mine["locked_reason"] is None

    withdrawn = store.withdraw_ranking("alice", ranking_id=ranking_id)
    # what it said, by candidate id, so the app can put it back on screen
    assert withdrawn.ranks == dict(zip(ids(view), [1, 2, 2])) and withdrawn.rationale == "B and C tie"
    assert withdrawn.flags == ("wrong_law",) and withdrawn.none_acceptable is False
    assert withdrawn.task.task_id == view.task_id and withdrawn.task.form_token == view.form_token
    assert rankings_count(store) == 0 and store.my_rankings("alice") == []
    assert store.progress("alice").done == 0 and store.progress("alice").open == 2
    # the withdrawn task comes first, with the form it was shown with; its slot stays alice's (k=1: not bob's)
    assert store.next_task_for("alice") == withdrawn.task
    assert store.next_task_for("bob") is None
    (event,) = store.audit_events("ranking_withdrawn")
    assert event["actor"] == "alice" and event["at"] is not None
    assert event["detail"] | {"submitted_at": None} == {
        "task_id": view.task_id, "ranking_id": ranking_id, "ranks": [1, 2, 2], "none_acceptable": False,
        "flags": ["wrong_law"], "submitted_at": None}
    assert event["detail"]["submitted_at"]

    # ranked again with the reopened form: stored, and the form is used up again
    new_id = store.submit_ranking("alice", view.task_id, dict(zip(ids(view), [2, 1, 3])), form_token=view.form_token)
    assert store.my_rankings("alice")[0]["ranks"] == [2, 1, 3]  # (SQLite may reuse the freed ranking id)
    with pytest.raises(SubmissionError, match="already submitted"):
        store.submit_ranking("alice", view.task_id, dict(zip(ids(view), [1, 2, 3])), form_token=view.form_token)
    assert store.next_task_for("alice") == later
    # by task id works as well
    assert store.withdraw_ranking("alice", task_id=view.task_id).ranking_id == new_id
    assert rankings_count(store) == 0


def test_withdrawal_refuses_other_peoples_unknown_and_imported_rankings(store) -> None:
    store.add_annotator("alice", None)
    store.add_annotator("bob", None)
    add_tasks(store, 1, k=2)
    view, ranking_id = _submit(store, "alice", [1, 2, 3])
    before = store.counts()
    with pytest.raises(StoreError, match="is not yours: only the annotator who submitted"):
        store.withdraw_ranking("bob", ranking_id=ranking_id)
    with pytest.raises(StoreError, match="does not exist"):
        store.withdraw_ranking("bob", task_id=view.task_id)  # bob has no ranking of it
    with pytest.raises(StoreError, match="ranking 424242 does not exist"):
        store.withdraw_ranking("alice", ranking_id=424242)
    with pytest.raises(StoreError, match="no annotator named"):
        store.withdraw_ranking("mallory", ranking_id=ranking_id)
    for kwargs in ({}, {"ranking_id": ranking_id, "task_id": view.task_id}):
        with pytest.raises(StoreError, match="exactly one of ranking_id and task_id"):
            store.withdraw_ranking("alice", **kwargs)
    with pytest.raises(StoreError, match="whole number"):
        store.withdraw_ranking("alice", ranking_id="1")
    assert store.counts() == before and store.audit_events("ranking_withdrawn") == []
    store.withdraw_ranking("alice", ranking_id=ranking_id)
    with pytest.raises(StoreError, match="unknown, or already withdrawn"):
        store.withdraw_ranking("alice", ranking_id=ranking_id)
    # a ranking that did not come through the app (an imported lawyer's) has no form to reopen
    store.import_rankings([_record("imported-1", [2, 1], annotator="alice")], "acord")
    (imported,) = store.my_rankings("alice")
    assert imported["editable"] is False and "imported" in imported["locked_reason"]
    with pytest.raises(StoreError, match="can no longer be withdrawn: imported"):
        store.withdraw_ranking("alice", ranking_id=imported["ranking_id"])
    store.set_active("alice", False)
    with pytest.raises(StoreError, match="deactivated"):
        store.withdraw_ranking("alice", task_id=view.task_id)


def test_an_export_locks_earlier_rankings_and_a_withdrawn_one_is_not_exported(store, tmp_path: Path) -> None:
    from lexalign.reward.prefs import export_preferences

    store.add_annotator("alice", None)
    store.add_annotator("bob", None)
    add_tasks(store, 2, k=2)
    view, alice_id = _submit(store, "alice", [1, 2, 3])
    _submit(store, "bob", [3, 2, 1])
    store.withdraw_ranking("alice", ranking_id=alice_id)
    export_preferences(store, tmp_path / "one", save_dataset=False, feedback=False, actor="root")
    exported = [json.loads(line) for line in (tmp_path / "one" / "rankings.jsonl").read_text().splitlines()]
    assert [r["annotator"] for r in exported] == ["bob"]  # the withdrawn ranking is gone from exports

    # submitted again, exported again: now it is locked for good
    alice_id = store.submit_ranking("alice", view.task_id, dict(zip(ids(view), [2, 1, 3])),
                                    form_token=view.form_token)
    export_preferences(store, tmp_path / "two", save_dataset=False, feedback=False, actor="root")
    exported = [json.loads(line) for line in (tmp_path / "two" / "rankings.jsonl").read_text().splitlines()]
    assert sorted((r["annotator"], tuple(r["ranks"])) for r in exported) == [("alice", (2, 1, 3)), ("bob", (3, 2, 1))]
    with pytest.raises(StoreError, match="can no longer be withdrawn: exported by an admin on"):
        store.withdraw_ranking("alice", ranking_id=alice_id)
    (mine,) = store.my_rankings("alice")
    assert mine["editable"] is False and mine["locked_reason"].startswith("exported by an admin on ")
    assert rankings_count(store) == 2 and store.audit_events("ranking_withdrawn")[0]["detail"]["ranks"] == [1, 2, 3]
    # a ranking submitted after the last export is still its annotator's to change
    _, later_id = _submit(store, "alice", [1, 1, 2])
    assert [r["editable"] for r in store.my_rankings("alice")] == [True, False]
    assert store.withdraw_ranking("alice", ranking_id=later_id).ranks


def test_days_of_a_submission_filter_are_checked() -> None:
    from datetime import date, datetime

    assert parse_day("2025-03-01", "from") == date(2025, 3, 1) and parse_day(" 2025-03-01 ", "from") == date(2025, 3, 1)
    assert parse_day("", "from") is None and parse_day(None, "to") is None and parse_day("  ", "to") is None
    assert parse_day(date(2025, 3, 1), "to") == date(2025, 3, 1)
    for bad in ("2025-3-1", "01/03/2025", "2025-02-30", "20250301", "2025-03-01T10:00", "yesterday", "２０２５-03-01"):
        with pytest.raises(StoreError, match="the 'from' date .* is not a day in the format YYYY-MM-DD"):
            parse_day(bad, "from")
    with pytest.raises(StoreError, match="the 'to' date must be a day in the format YYYY-MM-DD, not a time"):
        parse_day(datetime(2025, 3, 1, 10), "to")
    assert submission_period("2025-03-01", "2025-03-01") == (date(2025, 3, 1), date(2025, 3, 1))
    assert submission_period(None, "2025-03-02") == (None, date(2025, 3, 2))
    with pytest.raises(StoreError, match="'from' date 2025-03-02 is after the 'to' date 2025-03-01"):
        submission_period("2025-03-02", "2025-03-01")
    with pytest.raises(StoreError, match="the 'to' date"):
        submission_period("2025-03-01", "2025-13-01")


def test_task_rankings_by_annotator_and_submission_day(store) -> None:
    """Submission days are UTC calendar days, both ends inclusive: 23:59 on the 1st and 00:00 on the 2nd fall on
    either side of the boundary; an unknown annotator is an error, not an empty result."""
    from datetime import datetime, timezone

    from sqlalchemy import update

    from lexalign.data.store import rankings

    store.add_annotator("alice", None)
    store.add_annotator("bob", None)
    add_tasks(store, 1, k=2)
    submitted = {"alice": datetime(2025, 3, 1, 23, 59, tzinfo=timezone.utc),
                 "bob": datetime(2025, 3, 2, 0, 0, tzinfo=timezone.utc)}
    annotator_ids = {}
    for user in submitted:
        _submit(store, user, [1, 2, 3])
        annotator_ids[user] = store.get_annotator(user).id
    with store.engine.begin() as conn:
        for user, at in submitted.items():
            conn.execute(update(rankings).where(rankings.c.annotator_id == annotator_ids[user]).values(submitted_at=at))

    def who(**filters) -> list[str]:
        return sorted(r.annotator for task in store.task_rankings(**filters) for r in task.rankings)

    assert who() == ["alice", "bob"]
    assert who(annotator_names=["alice"]) == ["alice"] and who(annotator_names="bob") == ["bob"]
    assert who(annotator_names=[]) == []
    assert who(submitted_to="2025-03-01") == ["alice"] and who(submitted_from="2025-03-02") == ["bob"]
    assert who(submitted_from="2025-03-01", submitted_to="2025-03-02") == ["alice", "bob"]
    assert who(submitted_from="2025-03-03") == [] and who(submitted_to="2025-02-28") == []
    assert who(annotator_names=["bob"], submitted_to="2025-03-01") == []
    with pytest.raises(StoreError, match="no annotator named 'carol'"):
        store.task_rankings(annotator_names=["alice", "carol"])
    with pytest.raises(StoreError, match="the 'from' date '1 March' is not a day"):
        store.task_rankings(submitted_from="1 March")


def test_nobody_can_disable_their_own_account(store) -> None:
    store.add_annotator("root", "root-password", "admin")
    with pytest.raises(StoreError, match="cannot disable your own account"):
        store.set_active("root", False, actor="root")
    assert store.is_admin("root") and store.audit_events("annotator_deactivated") == []
    store.add_annotator("lead", "lead-password", "admin")
    store.set_active("root", False, actor="lead")
    assert not store.is_admin("root")
    (event,) = store.audit_events("annotator_deactivated")
    assert event["actor"] == "lead" and event["detail"] == {"username": "root"}


def test_memory_store_works_for_quick_experiments() -> None:
    with open_store("sqlite://") as store:
        store.add_annotator("m", None)
        add_tasks(store, 1, k=1)
        view = store.next_task_for("m")
        store.submit_ranking("m", view.task_id, dict(zip(ids(view), [1, 1, 2])), form_token=view.form_token)
        assert store.progress("m").done == 1


if __name__ == "__main__":  # pragma: no cover - the kill test runs _load_child through -c
    _load_child(sys.argv[1], int(sys.argv[2]), sys.argv[3])
    os._exit(0)


def test_fair_lock_serves_in_order_and_survives_an_interrupted_waiter() -> None:
    from lexalign.data.store_db import FairLock

    lock = FairLock()
    order: list[int] = []
    lock.__enter__()  # held, so the threads below queue up in start order
    threads = []
    for i in range(5):
        def work(i: int = i) -> None:
            with lock:
                order.append(i)
        t = threading.Thread(target=work)
        t.start()
        threads.append(t)
        deadline = time.monotonic() + 5
        while lock._next_ticket != i + 2 and time.monotonic() < deadline:  # wait until it holds a ticket
            time.sleep(0.001)
    with lock._cond:  # a waiter that gave up (an exception while waiting) must not block the queue
        lock._abandoned.add(lock._next_ticket)
        lock._next_ticket += 1
    lock.__exit__(None, None, None)
    for t in threads:
        t.join(timeout=5)
    assert order == [0, 1, 2, 3, 4]
    with lock:  # the abandoned ticket was skipped: the lock is free again
        pass
