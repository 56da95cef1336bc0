"""The ranking app's handlers without a browser: config, server-side admin checks, submission handling,
inert rendering, task titles, the live ranking summary, "My submissions", flags on the whole task, the export's
filters and account management. (The headless-Chromium tests are in test_annotate_browser.py.)"""

from __future__ import annotations

import json

from pathlib import Path
from types import SimpleNamespace

import pytest

from lexalign.config import ConfigError, load_config
from lexalign.data.store import FLAGS, TASK_FLAGS, open_store
from lexalign.reward.annotate import (
    AnnotateApp,
    AnnotateConfig,
    Session,
    inert,
    question_and_excerpt,
    ranking_summary,
    task_title,
)

REPO = Path(__file__).resolve().parent.parent
N_MAX = 4


def components() -> dict:
    names = ["message", "task_header", "question", "excerpt", "state", "submit", "skip", "none_acceptable",
             "rationale", "progress", "mine", "admin_tab", "summary", "tabs", "edit_choice", "edit_message",
             "task_flags"]
    c: dict = {name: name for name in names}
    for group in ("columns", "titles", "answers", "ranks", "answer_flags"):
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


def elem_ids_inside(block) -> set:
    """The elem_ids of every block inside ``block`` (its children, theirs, ...)."""
    inside: set = set()
    stack = list(block.children)
    while stack:
        child = stack.pop()
        inside.add(getattr(child, "elem_id", None))
        stack.extend(getattr(child, "children", []))
    return inside


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
    ok = app.on_submit(c, state, [1, 2, 2, None], False, "fine", [["risky_advice"]], req("alice"))
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
    app.on_submit(c, state, [None] * N_MAX, True, "", [["invented_clause"]], req("bob"))
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
    text, files = app.admin_export(req("root"))
    assert "Exported **0** preference pairs" in text and all(Path(f).is_file() for f in files)


def test_admin_export_takes_the_chosen_sources_and_kinds_and_offers_every_file(app) -> None:
    """Imported lawyer rankings and app rankings in one store: the export of source "app" alone holds only the
    app's task; the source choices list every source with its task count; every file written is downloadable."""
    from lexalign.data.schemas import RankingRecord

    c = components()
    state = app.on_load(c, req("alice"))["state"]
    app.on_submit(c, state, [1, 2, 2, None], False, "", [], req("alice"))
    app.store.import_rankings([RankingRecord(prompt_id=f"imp-{i}", prompt="Which law governs?",
                                             responses=["Delaware law.", "No."], ranks=[1, 2], annotator="lawyer-1",
                                             meta={"task": "normalize"}) for i in range(3)], "acord")
    choices = app.admin_export_sources(req("root"))
    assert choices.choices == [("acord (3 tasks)", "acord"), ("app (1 tasks)", "app")]
    assert choices.value == ["acord", "app"]
    everything, _ = app.admin_export(req("root"), ["acord", "app"], ["human", "derived"])
    assert "from 4 tasks" in everything
    text, files = app.admin_export(req("root"), ["app"], ["human"])
    assert "from 1 tasks" in text and "sources `app`" in text and "annotators human" in text
    names = sorted(Path(f).name for f in files)
    assert names == ["export.json", "feedback_pairs.jsonl", "preferences.jsonl", "rankings.jsonl"]
    exported = [json.loads(line) for line in Path(next(f for f in files if f.endswith("rankings.jsonl"))).open()]
    assert [r["prompt_id"] for r in exported] == ["t1"]


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


def _letters_to_texts(app, state: Session) -> dict[str, str]:
    """Letter on screen -> answer text, for the task in ``state``."""
    (view,) = [t for t in [app.store.next_task_for(state.user)] if t is not None]
    text_of = {cand.id: cand.text for cand in view.candidates}
    return {"ABCDEF"[slot]: text_of[cid] for slot, cid in enumerate(state.slots)}


def test_rank_errors_quote_the_ranks_by_letter_as_entered(app) -> None:
    c = components()
    app.store.add_task("t4", "Which law governs?", ["New York.", "Delaware.", "Texas.", "Not present."], k=1)
    state = app.on_load(c, req("alice"))["state"]
    app.on_skip(c, state, req("alice"))  # t1 -> the four-answer task
    state = app.on_load(c, req("alice"))["state"]
    assert len(state.slots) == 4
    msg = app.on_submit(c, state, [1, 4, 3, 3], False, "", [], req("alice"))["message"]
    # in the order on screen, whatever the order of the candidate ids in the store
    assert "got A=1, B=4, C=3, D=3" in msg and "missing rank 2" in msg and "[" not in msg.split("got")[1]
    msg = app.on_submit(c, state, [0, 1, 2, 3], False, "", [], req("alice"))["message"]
    assert "got A=0, B=1, C=2, D=3" in msg and app.store.counts()["rankings"] == 0


def test_my_submissions_show_ranks_in_the_order_shown_and_readable_flags(app) -> None:
    """Flags are per answer: stored at the answer's position (the order of the ranks), shown under the letter
    the answer had on screen."""
    from lexalign.data.schemas import RankingRecord

    c = components()
    state = app.on_load(c, req("alice"))["state"]
    letters = _letters_to_texts(app, state)
    app.on_submit(c, state, [1, 2, 2, None], False, "fine", [[], ["invented_clause", "wrong_law"], ["wrong_law"]],
                  req("alice"))
    (task,) = app.store.task_rankings()   # stored: B's and C's flags at their candidates' positions
    ids = [cand.id for cand in task.candidates]
    b, c_at = ids.index(state.slots[1]), ids.index(state.slots[2])
    assert sorted(task.rankings[0].flags) == sorted([f"invented_clause@{b}", f"wrong_law@{b}", f"wrong_law@{c_at}"])
    (row,) = app._my_rows("alice")
    title, _, ranks, answers, none_acceptable, flags, rationale, prompt_id, status = row
    assert status == "can edit"
    assert ranks == "A=1, B=2, C=2" and prompt_id == "t1" and rationale == "fine" and none_acceptable == ""
    for letter, text in letters.items():  # each letter names the answer that had it on screen
        assert f"{letter}: {text[:20]}" in answers
    assert flags == (f"B: {FLAGS['invented_clause']}, B: {FLAGS['wrong_law']}, C: {FLAGS['wrong_law']}") \
        and "_" not in flags
    assert title == "Task from app"
    # a ranking that never went through the app has no shown order: each rank is labelled by its answer
    app.store.import_rankings([RankingRecord(prompt_id="imp-1", prompt="Which law governs?",
                                             responses=["Delaware law governs this agreement entirely.", "No."],
                                             ranks=[2, 1], annotator="alice",
                                             meta={"task": "normalize", "category": "Governing Law"})], "import")
    imported = app._my_rows("alice")[0]
    assert imported[0] == "Normalized answer: Governing Law"
    assert imported[2] == '"Delaware law governs this agree…"=2, "No."=1' and imported[3] == ""
    assert imported[8] == "locked: imported, not submitted in the ranking app"
    # the rendered table holds the same rows
    assert app.on_load(c, req("alice"))["mine"] == app._my_rows("alice")


def test_edit_withdraws_the_ranking_and_brings_the_task_back_filled_in(app) -> None:
    c = components()
    state = app.on_load(c, req("alice"))["state"]
    saved = app.on_submit(c, state, [1, 2, 2, None], True, "B and C equally wrong", [[], [], ["wrong_law"]],
                          req("alice"))
    (choice,) = saved["edit_choice"].choices  # (label, task id) of the one editable submission
    assert choice[1] == state.task_id and choice[0].startswith("t1 · Task from app · ") and "A=1, B=2, C=2" in choice[0]
    assert saved["mine"][0][8] == "can edit"

    edited = app.on_edit(c, choice[1], req("alice"))
    assert "was withdrawn" in edited["message"] and "submit it again" in edited["message"]
    assert edited["edit_message"] == "" and edited["tabs"].selected == "rank"
    # the same task, in the same order, with everything as it was submitted
    assert edited["state"] == state
    assert [edited[f"ranks{i}"].value for i in range(3)] == [1, 2, 2] and edited["ranks3"].value is None
    assert edited["none_acceptable"] is True and edited["rationale"] == "B and C equally wrong"
    assert [edited[f"answer_flags{i}"] for i in range(4)] == [[], [], ["wrong_law"], []]   # back under C
    assert edited["summary"] == "Ranking: A &gt; B = C"
    assert app.store.counts()["rankings"] == 0 and edited["mine"] == [] and edited["edit_choice"].choices == []
    (event,) = app.store.audit_events("ranking_withdrawn")
    assert event["actor"] == "alice" and event["detail"]["task_id"] == state.task_id

    again = app.on_submit(c, edited["state"], [2, 1, 2, None], False, "B is right after all", [], req("alice"))
    assert again["message"].startswith("Saved") and app.store.counts()["rankings"] == 1
    row = app._my_rows("alice")[0]
    assert row[2] == "A=2, B=1, C=2" and row[6] == "B is right after all" and row[8] == "can edit"


def test_edit_refusals_say_why_and_change_nothing(app) -> None:
    c = components()
    state = app.on_load(c, req("alice"))["state"]
    app.on_submit(c, state, [1, 2, 3, None], False, "", [], req("alice"))
    assert "Not signed in" in app.on_edit(c, state.task_id, req(None))["edit_message"]
    assert "Pick a submission" in app.on_edit(c, None, req("alice"))["edit_message"]
    # bob has no ranking of the task (and could never reach alice's)
    refused = app.on_edit(c, state.task_id, req("bob"))
    assert "Not withdrawn" in refused["edit_message"] and "does not exist" in refused["edit_message"]
    # once an admin exports, alice's ranking is locked, and the page says so
    app.admin_export(req("root"))
    refused = app.on_edit(c, state.task_id, req("alice"))
    assert "Not withdrawn" in refused["edit_message"] and "exported by an admin on" in refused["edit_message"]
    assert refused["mine"][0][8].startswith("locked: exported by an admin on ")
    assert refused["edit_choice"].choices == [] and "Nothing to edit" in refused["edit_choice"].info
    assert "state" not in refused  # the task on screen is left alone
    assert app.store.counts()["rankings"] == 1 and app.store.audit_events("ranking_withdrawn") == []


def test_the_edit_action_is_in_my_submissions(app) -> None:
    import gradio as gr

    demo = app.build()
    blocks = {getattr(b, "elem_id", None): b for b in demo.blocks.values()}
    assert isinstance(blocks["edit-choice"], gr.Dropdown)
    assert blocks["edit-btn"].value == "Withdraw and rank again"
    mine_tab = next(b for b in demo.blocks.values() if isinstance(b, gr.Tab) and b.label == "My submissions")
    inside: set[str] = set()
    stack = list(mine_tab.children)
    while stack:
        child = stack.pop()
        inside.add(getattr(child, "elem_id", None))
        stack.extend(getattr(child, "children", []))
    assert {"my-table", "edit-choice", "edit-btn", "edit-message"} <= inside


def test_task_titles_are_readable(app) -> None:
    c = components()
    meta = {"task": "extract", "category": "Governing Law", "doc_id": "ACME_Supply*Agreement.pdf",
            "question": "Find the Governing Law clause.", "excerpt": "Governed by New York law."}
    app.store.add_task("tiny-sft/4de907fa80322c02", "Q", ["New York.", "Not present."], meta, k=1,
                       source="candidates")
    state = app.on_load(c, req("alice"))["state"]
    app.on_skip(c, state, req("alice"))
    header = app.on_load(c, req("alice"))["task_header"]
    title_line, reference = header.split("\n\n")
    assert title_line == r"### Clause extraction: Governing Law — ACME\_Supply\*Agreement.pdf"
    assert reference == "Task `tiny-sft/4de907fa80322c02`"  # the id stays, below, to quote to an admin
    assert task_title({"task": "presence", "category": "Non-Compete"}, "app") == "Clause presence: Non-Compete"
    assert task_title({"task": "unfair", "doc_id": "Acme Social"}, "candidates") == "Unfair-terms check — Acme Social"
    assert task_title({"category": "Governing Law", "contract": "MSA"}, "acord") == "Governing Law — MSA"
    assert task_title({"task": "summarize"}, "app") == "Summarize"
    assert task_title({"doc": 3}, "candidates") == "Task from candidates"  # nothing readable in meta: the source
    assert task_title({}, "") == "Task from an unknown source"
    long = task_title({"task": "extract", "category": "x" * 300}, "app")
    assert len(long) <= 80 and long.endswith("…")
    # markup in meta stays text
    app.store.add_task("evil", "Q", ["a", "b"], {"category": "<img src=x onerror=alert(1)>"}, k=1)
    app.on_skip(c, app.on_load(c, req("root"))["state"], req("root"))  # t1, then (tiny-sft is taken) evil
    header = app.on_load(c, req("root"))["task_header"]
    assert header.startswith("### &lt;img src=x onerror=alert(1)&gt;") and "<" not in header


def test_ranking_summary_orders_ties_and_names_unranked_answers(app) -> None:
    assert ranking_summary([1, 4, 2, 2], 4) == "Ranking: A > C = D > B"
    assert ranking_summary([2, 1, 1], 3) == "Ranking: B = C > A"
    assert ranking_summary([1, None, "", 2], 4) == "Ranking: A > D · not ranked yet: B, C"
    assert ranking_summary([None, None], 2) == "Ranking: no answer ranked yet (1 = best)."
    assert ranking_summary([1, 3, 3], 3) == "Ranking: A > B = C"  # a gap is the submit check's business
    assert ranking_summary([1], 3) == "Ranking: A · not ranked yet: B, C"  # fewer values than answers
    assert ranking_summary([1, 2, 3, 1, 1, 1], 3) == "Ranking: A > B > C"  # hidden columns are ignored
    c = components()
    updates = app.on_load(c, req("alice"))
    state = updates["state"]
    assert updates["summary"] == "Ranking: no answer ranked yet (1 = best)."  # a new task starts empty
    assert app.on_rank_input(state, [2, 1, None, None]) == "Ranking: B &gt; A · not ranked yet: C"
    assert app.on_rank_input(None, [1, 2, 3, None]) == ""


def test_layout_rationale_never_submits_and_buttons_have_text_labels(app) -> None:
    import unicodedata

    import gradio as gr

    from lexalign.reward import annotate

    demo = app.build()
    blocks = demo.blocks.values()
    rationale = next(b for b in blocks if getattr(b, "elem_id", None) == "rationale")
    events = {(target, name) for fn in demo.fns.values() for target, name in fn.targets}
    assert (rationale._id, "submit") not in events  # Enter / Shift+Enter in the rationale submit nothing
    assert "Ctrl+Enter" in rationale.placeholder and "new line" in rationale.placeholder
    assert "'keypress'" in annotate.KEYBOARD_JS and "stopImmediatePropagation" in annotate.KEYBOARD_JS
    buttons = [b for b in blocks if isinstance(b, gr.Button)]
    assert {b.elem_id for b in buttons} >= {"submit-btn", "skip-btn", "admin-refresh", "admin-export"}
    for button in buttons:  # Debian's Chromium has no emoji font: labels are words
        label = str(button.value)
        assert any(ch.isalpha() for ch in label), label
        assert not [ch for ch in label if unicodedata.category(ch) == "So" or ord(ch) >= 0x1F000], label
    # the message lives in the submit bar, next to Submit and Skip
    bar = next(b for b in blocks if getattr(b, "elem_id", None) == "submit-bar")
    inside: set[str] = set()
    stack = list(bar.children)
    while stack:
        child = stack.pop()
        inside.add(getattr(child, "elem_id", None))
        stack.extend(getattr(child, "children", []))
    assert {"message", "submit-btn", "skip-btn", "ranking-summary"} <= inside


def test_admin_view_fills_on_open_and_explains_agreement_with_disputed_task_titles(app) -> None:
    from lexalign.data.schemas import RankingRecord

    rankings = [("split", {"task": "extract", "category": "Governing Law", "doc_id": "Reseller_Agreement*v2"},
                 [1, 2, 3], [3, 2, 1]),
                ("partial", {"task": "presence", "category": "Non-Compete"}, [1, 2, 3], [1, 3, 2]),
                ("same", {"task": "unfair", "doc_id": "Acme Terms"}, [1, 2, 3], [1, 2, 3])]
    app.store.import_rankings([RankingRecord(prompt_id=pid, prompt="Q", responses=["x", "y", "z"], ranks=ranks,
                                             annotator=who, meta=meta)
                               for pid, meta, first, second in rankings
                               for who, ranks in (("panel-a", first), ("panel-b", second))], "acord")
    # on open: filled for the admin, nothing (and no refusal on record) for an annotator
    assert app.admin_on_open(req("alice")) is None and app.admin_on_open(req(None)) is None
    assert app.store.audit_events("admin_denied") == []
    rows, agreement = app.admin_on_open(req("root"))
    assert {"alice", "bob", "root"} <= {r[0] for r in rows}
    assert (rows, agreement) == app.admin_refresh(req("root"))
    head, meaning, disputed_head, disputed = agreement.split("\n\n")
    assert head.startswith("Krippendorff&#x27;s alpha (ordinal): ") and "3 task(s) with overlap" in head
    assert "alpha &gt;= 0.8 is reliable, &gt;= 0.667 is enough for tentative conclusions" in meaning
    assert "Kendall&#x27;s W says how alike" in meaning and " is unreliable: " in meaning
    assert disputed_head == "**Most disputed tasks** (lowest Kendall's W first):"
    # readable titles (Markdown punctuation shown as typed), lowest W first; the identical task is not listed
    assert disputed.split("\n") == [
        r"1. Clause extraction: Governing Law — Reseller\_Agreement\*v2 (task `split`): W = 0.000, 2 annotators",
        "2. Clause presence: Non-Compete (task `partial`): W = 0.750, 2 annotators"]
    with pytest.raises(Exception, match="Only admins"):
        app.admin_refresh(req("alice"))


def test_agreement_words_without_overlap_and_without_disputes() -> None:
    from types import SimpleNamespace as NS

    from lexalign.reward.agreement import rankings_agreement
    from lexalign.reward.annotate import agreement_markdown

    assert agreement_markdown(rankings_agreement([])).startswith("No task has been ranked by two or more")
    same = rankings_agreement([NS(prompt_id="t", meta={}, source="app", candidates=[1, 2],
                                  rankings=[NS(annotator="a", ranks=[1, 2]), NS(annotator="b", ranks=[1, 2])])])
    text = agreement_markdown(same)
    assert "The current alpha, 1.000, is reliable:" in text and "No task is disputed" in text
    assert "Most disputed" not in text


def test_guidelines_sit_in_a_column_beside_the_task(app) -> None:
    """One row holds the task's column (answers, flags, submit bar) and, beside it, the guidelines' column with
    the guidelines open; the browser test checks that it is really to the right of the answers."""
    import gradio as gr

    demo = app.build()
    blocks = {getattr(b, "elem_id", None): b for b in demo.blocks.values()}
    guidelines = blocks["guidelines"]
    assert isinstance(guidelines, gr.Accordion) and guidelines.open is True
    row = blocks["task-and-guidelines"]
    assert isinstance(row, gr.Row)
    assert [child.elem_id for child in row.children] == ["task-column", "guidelines-column"]
    assert {"candidate-0", "task-flags", "submit-bar", "submit-btn"} <= elem_ids_inside(blocks["task-column"])
    assert "guidelines" in elem_ids_inside(blocks["guidelines-column"])
    assert "guidelines" not in elem_ids_inside(blocks["task-column"])
    markdown = next(child for child in guidelines.children if isinstance(child, gr.Markdown))
    assert "Correct before complete" in markdown.value and "task is broken" in markdown.value


def test_task_flags_are_stored_shown_in_my_submissions_and_restored_on_edit(app) -> None:
    """A flag on the whole task (not on one answer) is stored with the task's flags, shown in "My submissions"
    and ticked again when the submission is edited; a task flag given to one answer is refused."""
    c = components()
    updates = app.on_load(c, req("alice"))
    state = updates["state"]
    assert updates["task_flags"].choices == [(TASK_FLAGS["bad_task"], "bad_task")]
    assert updates["task_flags"].value == []
    saved = app.on_submit(c, state, [None] * N_MAX, True, "The excerpt is cut off.", [[], ["wrong_law"], []],
                          req("alice"), task_flags=["bad_task"])
    assert saved["message"].startswith("Saved")
    (task,) = app.store.task_rankings()
    b_position = [cand.id for cand in task.candidates].index(state.slots[1])
    assert task.rankings[0].flags == ("bad_task", f"wrong_law@{b_position}")
    (row,) = app._my_rows("alice")
    assert row[5] == f"{TASK_FLAGS['bad_task']}, B: {FLAGS['wrong_law']}"

    edited = app.on_edit(c, state.task_id, req("alice"))
    assert "was withdrawn" in edited["message"]
    assert edited["task_flags"].value == ["bad_task"]
    assert edited["task_flags"].choices == [(TASK_FLAGS["bad_task"], "bad_task")]
    assert [edited[f"answer_flags{i}"] for i in range(N_MAX)] == [[], ["wrong_law"], [], []]
    again = app.on_submit(c, edited["state"], [1, 2, 2, None], False, "", [[], [], []], req("alice"), task_flags=[])
    assert again["message"].startswith("Saved") and again["task_flags"].value == []   # the next task starts clean
    assert app.store.task_rankings()[0].rankings[0].flags == ()

    # bob: a task flag on one answer (a hand-made request) is refused by the store, nothing stored
    state = app.on_load(c, req("bob"))["state"]
    refused = app.on_submit(c, state, [1, 2, 2, None], False, "", [["bad_task"], [], []], req("bob"))
    assert "Not saved" in refused["message"] and "about the whole task" in refused["message"]
    assert len(app.store.task_rankings()[0].rankings) == 1
    # a flag an older page gave the whole task comes back ticked when edited, so it is not lost by resubmitting
    view = app.store.next_task_for("bob")
    app.store.submit_ranking("bob", view.task_id, {cand.id: 1 for cand in view.candidates}, True,
                             flags=["wrong_law"], form_token=view.form_token)
    edited = app.on_edit(c, view.task_id, req("bob"))
    assert edited["task_flags"].choices == [(TASK_FLAGS["bad_task"], "bad_task"), (FLAGS["wrong_law"], "wrong_law")]
    assert edited["task_flags"].value == ["wrong_law"]


def _exported_annotators(files: list[str]) -> list[str]:
    rankings_file = next(f for f in files if f.endswith("rankings.jsonl"))
    return sorted(json.loads(line)["annotator"] for line in Path(rankings_file).read_text().splitlines())


def _export_summary(files: list[str]) -> dict:
    return json.loads(Path(next(f for f in files if f.endswith("export.json"))).read_text())


def test_admin_export_by_annotator_and_submission_days(app) -> None:
    """Two annotators rank on different days (UTC): the export by annotator holds only theirs, a day range only
    that range's (both ends inclusive), export.json records the scope, and a bad filter exports nothing."""
    from datetime import datetime, timezone

    from sqlalchemy import update

    from lexalign.data.store import rankings

    c = components()
    for user in ("alice", "bob"):
        state = app.on_load(c, req(user))["state"]
        assert app.on_submit(c, state, [1, 2, 3, None], False, f"by {user}", [], req(user))["message"].startswith("Saved")
    submitted = {"alice": datetime(2025, 3, 1, 23, 59, tzinfo=timezone.utc),
                 "bob": datetime(2025, 3, 2, 0, 0, tzinfo=timezone.utc)}
    annotator_ids = {user: app.store.get_annotator(user).id for user in submitted}
    with app.store.engine.begin() as conn:
        for user, at in submitted.items():
            conn.execute(update(rankings).where(rankings.c.annotator_id == annotator_ids[user]).values(submitted_at=at))

    # refused with the field and the format named; nothing written, no export on record
    refusals = [(["2025-3-1", ""], "the &#x27;from&#x27; date &#x27;2025-3-1&#x27; is not a day in the format YYYY-MM-DD"),
                (["", "01/03/2025"], "the &#x27;to&#x27; date &#x27;01/03/2025&#x27; is not a day in the format YYYY-MM-DD"),
                (["2025-02-30", ""], "the &#x27;from&#x27; date"),
                (["2025-03-02", "2025-03-01"], "is after the &#x27;to&#x27; date 2025-03-01")]
    for days, words in refusals:
        text, files = app.admin_export(req("root"), [], [], [], *days)
        assert text.startswith("<span class='error'>Not exported: ") and words in text and files is None
    text, files = app.admin_export(req("root"), [], [], ["nobody"], "", "")
    assert "Not exported" in text and "no annotator named" in text and files is None
    assert not Path(app.config.export_dir).exists()
    assert app.store.audit_events("export_started") == [] and app.store.audit_events("export") == []

    choices = app.admin_export_annotators(req("root"))
    assert choices.choices == [("alice (1 ranking)", "alice"), ("bob (1 ranking)", "bob")] and choices.value == []

    text, files = app.admin_export(req("root"), [], [], ["alice"], "", "")
    assert _exported_annotators(files) == ["alice"] and "ranked by `alice`" in text
    summary = _export_summary(files)
    assert summary["annotators"] == ["alice"] and summary["submitted_from"] is None and summary["submitted_to"] is None
    assert summary["sources"] is None and summary["kinds"] == ["human", "derived"]

    text, files = app.admin_export(req("root"), [], [], [], "2025-03-01", "2025-03-01")
    assert _exported_annotators(files) == ["alice"] and "submitted 2025-03-01 to 2025-03-01 UTC" in text
    summary = _export_summary(files)
    assert (summary["submitted_from"], summary["submitted_to"], summary["annotators"]) == ("2025-03-01", "2025-03-01",
                                                                                          None)
    text, files = app.admin_export(req("root"), [], [], [], " 2025-03-02 ", "")
    assert _exported_annotators(files) == ["bob"] and "submitted from 2025-03-02 UTC" in text
    assert (_export_summary(files)["submitted_from"], _export_summary(files)["submitted_to"]) == ("2025-03-02", None)
    text, files = app.admin_export(req("root"), [], [], [], "", "2025-03-01")
    assert _exported_annotators(files) == ["alice"] and "submitted until 2025-03-01 UTC" in text
    _, files = app.admin_export(req("root"), [], [], ["alice", "bob"], "2025-03-01", "2025-03-02")
    assert _exported_annotators(files) == ["alice", "bob"]
    text, files = app.admin_export(req("root"), [], [], ["bob"], "", "2025-03-01")
    assert _exported_annotators(files) == [] and "from 0 tasks" in text
    (event, *_) = app.store.audit_events("export")   # the latest export, with its scope
    assert event["actor"] == "root" and event["detail"]["annotators"] == ["bob"]
    assert event["detail"]["submitted_to"] == "2025-03-01" and event["detail"]["submitted_from"] is None


def test_admin_manages_accounts_and_every_change_is_audited_with_the_admin(app) -> None:
    """Only an admin adds, disables, enables an account or sets its password (checked on the server for every
    call); each change is in the audit log with the admin as the actor; nobody can disable themself."""
    import gradio as gr

    changes = ("annotator_created", "annotator_activated", "annotator_deactivated", "password_changed")

    def recorded() -> dict[str, list[tuple[str, str]]]:
        return {action: [(e["actor"], e["detail"]["username"]) for e in app.store.audit_events(action)]
                for action in changes}

    before = recorded()
    for user in ("alice", None):   # an annotator's session (or none) is refused before anything changes
        with pytest.raises(gr.Error, match="Only admins"):
            app.admin_add_account(req(user), "mallory", "admin", "mallory-password")
        with pytest.raises(gr.Error, match="Only admins"):
            app.admin_set_active(req(user), "bob", False)
        with pytest.raises(gr.Error, match="Only admins"):
            app.admin_set_password(req(user), "bob", "bob-new-password")
    assert app.store.get_annotator("mallory") is None and app.store.get_annotator("bob").active
    assert recorded() == before
    assert {e["actor"] for e in app.store.audit_events("admin_denied")} == {"alice", "anonymous"}
    # the accounts are listed for the admin when the page opens, for nobody else (no refusal on record then)
    denied = len(app.store.audit_events("admin_denied"))
    assert app.admin_choices_on_open(req("alice")) == (gr.skip(),) * 4   # nothing filled, nothing refused
    assert len(app.store.audit_events("admin_denied")) == denied
    _, _, rows, choices = app.admin_choices_on_open(req("root"))
    assert rows == [["alice", "annotator", "yes", 0], ["bob", "annotator", "yes", 0], ["root", "admin", "yes", 0]]
    assert [value for _, value in choices.choices] == ["alice", "bob", "root"]

    message, rows, choices, username_box, password_box = app.admin_add_account(
        req("root"), " grace ", "annotator", "grace-password")
    assert message == "Added the annotator account `grace`; it can sign in now."
    assert ["grace", "annotator", "yes", 0] in rows and choices.value == "grace"
    assert username_box == "" and password_box == ""   # the password never stays on the page
    assert app.store.verify_login("grace", "grace-password") is not None
    for username, role, password, words in [("henry", "annotator", "short", "at least 8 characters"),
                                            ("grace", "annotator", "another-password", "already exists"),
                                            ("<b>x</b>", "annotator", "long-enough-pw", "use 1-64 letters"),
                                            ("ivan", "boss", "long-enough-pw", "role")]:
        message, _, _, username_box, password_box = app.admin_add_account(req("root"), username, role, password)
        assert message.startswith("<span class='error'>Not added: ") and words in message, message
        assert "<b>" not in message and password_box == ""
    assert {a.username for a in app.store.list_annotators()} == {"alice", "bob", "grace", "root"}

    message, rows, _ = app.admin_set_active(req("root"), "grace", False)
    assert message.startswith("Disabled `grace`") and ["grace", "annotator", "no", 0] in rows
    assert app.store.verify_login("grace", "grace-password") is None
    assert app.admin_set_active(req("root"), "grace", True)[0].startswith("Enabled `grace`")
    assert app.store.verify_login("grace", "grace-password") is not None
    message = app.admin_set_password(req("root"), "grace", "grace-new-password")[0]
    assert message == "New password set for `grace`."
    assert app.store.verify_login("grace", "grace-new-password") is not None
    assert app.store.verify_login("grace", "grace-password") is None
    assert "at least 8" in app.admin_set_password(req("root"), "grace", "short")[0]
    assert "Pick an account" in app.admin_set_active(req("root"), None, False)[0]
    assert "no annotator named" in app.admin_set_active(req("root"), "nobody", False)[0]

    message, rows, _ = app.admin_set_active(req("root"), "root", False)   # an admin cannot lock themself out
    assert "Not disabled" in message and "cannot disable your own account" in message
    assert app.store.is_admin("root") and ["root", "admin", "yes", 0] in rows

    after = recorded()
    assert after["annotator_created"] == [("root", "grace")] + before["annotator_created"]   # newest first
    assert after["annotator_deactivated"] == [("root", "grace")]
    assert after["annotator_activated"] == [("root", "grace")]
    assert after["password_changed"] == [("root", "grace")]
