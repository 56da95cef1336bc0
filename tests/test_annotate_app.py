"""The ranking app's handlers without a browser: config, server-side admin checks, submission handling,
inert rendering. (The headless-Chromium tests are in test_annotate_browser.py.)"""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import pytest

from lexalign.config import ConfigError, load_config
from lexalign.data.store import open_store
from lexalign.reward.annotate import AnnotateApp, AnnotateConfig, Session, inert, question_and_excerpt

REPO = Path(__file__).resolve().parent.parent
N_MAX = 4


def components() -> dict:
    names = ["message", "task_header", "question", "excerpt", "state", "submit", "skip", "none_acceptable",
             "rationale", "flags", "progress", "mine", "admin_tab"]
    c: dict = {name: name for name in names}
    for group in ("columns", "titles", "answers", "ranks"):
        c[group] = [f"{group}{i}" for i in range(N_MAX)]
    return c


@pytest.fixture()
def app(tmp_path: Path):
    config = load_config(AnnotateConfig, None, [f"store=sqlite:///{tmp_path / 'a.db'}", f"max_candidates={N_MAX}",
                                                f"export_dir={tmp_path / 'exports'}"])
    with open_store(config.store) as store:
        store.add_annotator("alice", None)
        store.add_annotator("bob", None)
        store.add_annotator("root", None, "admin")
        store.add_task("t1", "Find the Governing Law clause.\n\nExcerpt:\nGoverned by New York law.",
                       ["New York.", "<script>alert(1)</script>", "Not present."], k=2)
        yield AnnotateApp(store, config)


def req(user: str | None) -> SimpleNamespace:
    return SimpleNamespace(username=user)


def test_shipped_config_validates_and_bad_values_are_listed(tmp_path: Path) -> None:
    config = load_config(AnnotateConfig, REPO / "configs" / "annotate.yaml")
    assert config.store == "sqlite:///runs/prefs.db" and config.sqlite_synchronous == "FULL"
    with pytest.raises(ConfigError) as info:
        load_config(AnnotateConfig, None, ["port=0", "k=0", "max_candidates=20", "store=mysql://x",
                                           "guidelines_file=/nope.md"])
    assert {p.key for p in info.value.problems} == {"port", "k", "max_candidates", "store", "guidelines_file"}
    with pytest.raises(ConfigError, match="colour.*unknown key"):
        load_config(AnnotateConfig, None, ["colour=red"])


def test_render_shows_the_task_shuffled_and_inert(app) -> None:
    c = components()
    updates = app.on_load(c, req("alice"))
    state: Session = updates["state"]
    assert state.user == "alice" and len(state.slots) == 3
    shown = [updates[f"answers{i}"] for i in range(3)]
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in shown and "<script>" not in "".join(shown)
    assert updates["question"].endswith("Find the Governing Law clause.")
    assert updates["excerpt"].value == "Governed by New York law."
    assert "0 of 1 done" in updates["progress"]
    assert updates["admin_tab"].visible is False
    assert app.on_load(c, req("root"))["admin_tab"].visible is True


def test_submit_handler_validates_and_stores_once(app) -> None:
    c = components()
    state = app.on_load(c, req("alice"))["state"]
    msg = app.on_submit(c, state, [1, None, None, None], False, "", [], req("alice"))["message"]
    assert "give answers B, C a rank" in msg and app.store.counts()["rankings"] == 0
    msg = app.on_submit(c, state, [1, 3, 3, None], False, "", [], req("alice"))["message"]
    assert "Not saved" in msg and "missing rank 2" in msg and app.store.counts()["rankings"] == 0
    msg = app.on_submit(c, state, [1, 2, 2, None], False, "<b>x</b>", [], req("alice"))["message"]
    assert "plain text" in msg and "&lt;b&gt;" in msg and app.store.counts()["rankings"] == 0
    # a session that belongs to someone else is never used: the page is reloaded for the real user
    stolen = app.on_submit(c, state, [1, 2, 2, None], False, "", [], req("bob"))
    assert "out of date" in stolen["message"] and app.store.counts()["rankings"] == 0
    ok = app.on_submit(c, state, [1, 2, 2, None], False, "fine", ["risky_advice"], req("alice"))
    assert ok["message"].startswith("Saved") and app.store.counts()["rankings"] == 1
    stored = app.store.my_rankings("alice")[0]
    by_id = dict(zip(state.slots, [1, 2, 2]))
    view_ids = [cand.id for cand in app.store.task_rankings()[0].candidates]
    assert stored["ranks"] == [by_id[cid] for cid in view_ids]  # the rank lands on the candidate that was shown
    replay = app.on_submit(c, state, [1, 2, 2, None], False, "", [], req("alice"))
    assert "already submitted" in replay["message"] and app.store.counts()["rankings"] == 1
    assert "All done" in ok["task_header"]


def test_none_acceptable_without_ranks_ties_everything(app) -> None:
    c = components()
    state = app.on_load(c, req("bob"))["state"]
    app.on_submit(c, state, [None] * N_MAX, True, "", ["invented_clause"], req("bob"))
    (row,) = app.store.my_rankings("bob")
    assert row["ranks"] == [1, 1, 1] and row["none_acceptable"] is True


def test_admin_handlers_refuse_annotators_on_the_server(app) -> None:
    import gradio as gr

    for user in ("alice", None):
        with pytest.raises(gr.Error, match="Only admins"):
            app.admin_refresh(req(user))
        with pytest.raises(gr.Error, match="Only admins"):
            app.admin_export(req(user))
    denied = app.store.audit_events("admin_denied")
    assert len(denied) == 4 and {e["actor"] for e in denied} == {"alice", "anonymous"}
    rows, agreement = app.admin_refresh(req("root"))
    assert [r[0] for r in rows] == ["alice", "bob", "root"] and "No task" in agreement
    text, path = app.admin_export(req("root"))
    assert "Exported **0** preference pairs" in text and Path(path).is_file()


def test_login_check_uses_the_store(app) -> None:
    app.store.set_password("alice", "a-long-password")
    assert app.auth("alice", "a-long-password") is True
    assert app.auth("alice", "wrong") is False
    assert app.auth("acord-lawyers", "") is False


def test_inert_and_question_split() -> None:
    assert inert('<img src=x onerror="alert(1)">&') == "&lt;img src=x onerror=&quot;alert(1)&quot;&gt;&amp;"
    view = SimpleNamespace(meta={}, prompt=[{"role": "system", "content": "S"},
                                            {"role": "user", "content": "Q?\n\nExcerpt:\nE text"}])
    assert question_and_excerpt(view) == ("Q?", "E text")
    view = SimpleNamespace(meta={"question": "MQ", "excerpt": "ME"}, prompt="whatever")
    assert question_and_excerpt(view) == ("MQ", "ME")
    assert question_and_excerpt(SimpleNamespace(meta={}, prompt="Just a request")) == ("Just a request", "")
