"""The chat UI's handlers without a browser: config, uploads, errors as messages, the layout (text labels and
"Warning:" marks, Run review waiting for a contract, a refused file leaving the box), the contract view (every
character escaped, the quoted passages marked, built once per answer), sessions saved per user and restored by a
second app on the same database, "Review all clauses" (the playbook checked at startup or uploaded, the table,
summary and both memos from a stand-in model on a real CUAD contract), and (slow) streamed review
answers from the REAL vLLM server with located quotes, feedback rows in the store and the JSON export.
(The headless-Chromium test is test_chat_browser.py.)"""

from __future__ import annotations

import json
import time
from pathlib import Path
from types import SimpleNamespace

import pytest

from lexalign.config import ConfigError, load_config
from lexalign.data.store import open_store
from lexalign.serve.chat import ChatApp, ChatConfig, ChatSession, Endpoint, chat_messages, inert, sources_markdown

pytest_plugins = ["test_serve_support"]

REPO = Path(__file__).resolve().parent.parent
CONTRACT = """MASTER SERVICES AGREEMENT
This Master Services Agreement is entered into as of January 1, 2020 by and between Acme Corporation and Beta LLC.
1. Fees. Customer shall pay Provider the fees within thirty (30) days after receipt of an undisputed invoice.
2. Term. This Agreement shall continue for a period of three (3) years unless terminated earlier.
3. Governing Law. This Agreement shall be governed by the laws of the State of New York.
4. Notices. All notices shall be in writing. <script>alert('x')</script>
"""
# The session's test model has a 512-token context and a 512-symbol BPE (about 2 characters per token).
# The briefly tuned adapter often ends its turn at once (an empty answer); the base model always writes
# max_tokens of text, so the streaming and feedback tests talk to the base (same code path, other name).
SMALL_MODEL = ["chars_per_token=1.8", "chunk_chars=200", "chunk_overlap=40", "max_tokens=64"]


def req(user: str | None) -> SimpleNamespace:
    return SimpleNamespace(username=user)


def make_app(tmp_path: Path, endpoint: str, api_key: str | None, *extra: str) -> ChatApp:
    config = load_config(ChatConfig, REPO / "configs" / "chat.yaml",
                         [f"endpoint={endpoint}", f"store=sqlite:///{tmp_path / 'prefs.db'}", *SMALL_MODEL, *extra])
    store = open_store(config.store)
    store.add_annotator("alice", "alice-password")
    return ChatApp(store, config, Endpoint(config, api_key))


@pytest.fixture()
def offline_app(tmp_path: Path):
    app = make_app(tmp_path, "http://127.0.0.1:9/v1", "key")  # nothing listens on port 9
    yield app
    app.store.close()


def upload(app: ChatApp, tmp_path: Path, user: str = "alice", name: str = "msa.txt", data: bytes | None = None):
    path = tmp_path / name
    path.write_bytes(CONTRACT.encode() if data is None else data)
    return app.on_upload(str(path), None, req(user))


def test_chat_config_validates_and_lists_every_problem() -> None:
    config = load_config(ChatConfig, REPO / "configs" / "chat.yaml")
    assert config.endpoint == "http://127.0.0.1:8000/v1" and config.limits().max_bytes == 10 * 1024 * 1024
    with pytest.raises(ConfigError) as info:
        load_config(ChatConfig, None, ["endpoint=localhost:8000", "port=0", "chunk_overlap=2000", "temperature=5",
                                       "context_tokens=100", "chars_per_token=0", "store=mysql://x"])
    assert {p.key for p in info.value.problems} == {"endpoint", "port", "chunk_overlap", "temperature",
                                                    "context_tokens", "chars_per_token", "store"}


def test_uploads_are_parsed_or_refused_with_a_message(offline_app: ChatApp, tmp_path: Path) -> None:
    session, status, sources = upload(offline_app, tmp_path)
    assert isinstance(session, ChatSession) and session.user == "alice" and session.document is not None
    assert status.startswith("Loaded **msa.txt: TXT") and "chunks" in status
    assert offline_app.store.audit_events("chat_upload")[-1]["detail"]["name"] == "msa.txt"
    session, status, _ = upload(offline_app, tmp_path, name="bad.pdf", data=b"%PDF-1.4 garbage")
    assert session.document is None and "Not loaded: bad.pdf: cannot read this PDF" in status
    assert "class='error'" in status
    _, status, _ = upload(offline_app, tmp_path, name="evil<b>.doc", data=b"x")
    assert "unsupported file type .doc" in status and "<b>" not in status and "&lt;b&gt;" in status
    _, status, _ = upload(offline_app, tmp_path, user=None)
    assert "Not signed in" in status


def test_an_unreachable_endpoint_is_a_message_not_a_crash(offline_app: ChatApp, tmp_path: Path) -> None:
    session, _, _ = upload(offline_app, tmp_path)
    *_, (messages, _, status, state, enabled) = offline_app.ask({"task": "clause", "category": "Governing Law"},
                                                                 session, req("alice"))
    assert "not reachable" in status and "lexalign serve" in status and enabled is False
    *_, (_, _, status, _, _) = offline_app.ask({"task": "clause", "category": "Nope"}, session, req("alice"))
    assert "Pick a clause category" in status
    status, *_ = offline_app.on_feedback(1, "", session, req("alice"))
    assert "no answer to rate" in status


def test_rendering_is_inert() -> None:
    session = ChatSession("alice")
    from lexalign.serve.chat import Turn

    session.turns.append(Turn({}, "<img src=x onerror=alert(1)>", [], "<script>alert(2)</script>", "m",
                              sources=[{"label": "[chunk 1, chars 0\u201310]", "text": "<b>bold</b>", "chunk": 1,
                                        "start": 0, "end": 10, "page": None}]))
    shown = json.dumps(chat_messages(session)) + sources_markdown(session)
    assert "<img" not in shown and "<script" not in shown and "<b>bold" not in shown
    assert inert("<img src=x onerror=alert(1)>") in shown and "&lt;script&gt;" in shown


GOVERNING = "This Agreement shall be governed by the laws of the State of New York."


def test_the_contract_view_marks_the_answers_quotes_and_runs_nothing(offline_app: ChatApp, tmp_path: Path,
                                                                    monkeypatch) -> None:
    from lexalign.serve.chat import contract_view, plan_marks

    session, _, _ = upload(offline_app, tmp_path)
    html = contract_view(session)
    assert "<script" not in html and "&lt;script&gt;alert(&#x27;x&#x27;)&lt;/script&gt;" in html
    assert html.count("class='section-start'") == len(session.document.sections) >= 4
    assert "<mark" not in html  # nothing is quoted yet

    # an answer quoting the contract, from a stand-in endpoint, through the page's own handler
    monkeypatch.setattr(offline_app.endpoint, "resolve", lambda: ("stand-in", 4096))
    monkeypatch.setattr(offline_app.endpoint, "stream", lambda model, messages, max_tokens: iter([f'"{GOVERNING}"']))
    demo = offline_app.build()
    *partial, final = handler(demo, "run", "click")("clause", "Governing Law", "", session, req("alice"))
    assert partial and all(not isinstance(update[-1], str) for update in partial)  # built once, at the end
    _, sources, _, session, *_, html = final
    (citation,) = session.turns[-1].citations
    assert citation["where"] == "\u00a73 Governing Law" and citation["label"].startswith("[chunk ")
    assert (f"<mark id='cite-1' class='cite' title='\u00a73 Governing Law {citation['label']}'>{GOVERNING}</mark>"
            in html)
    assert f"<a class='cite-link' href='#cite-1' title='{citation['label']}'>\u00a73 Governing Law</a>" in sources
    assert "Sources: \u00a73 Governing Law" in chat_messages(session)[-1]["content"]
    exported = json.loads(Path(offline_app.export(session, req("alice"))).read_text())
    (kept,) = exported["turns"][-1]["citations"]
    assert kept["where"] == "\u00a73 Governing Law" and (kept["start"], kept["end"]) == (citation["start"], citation["end"])

    # a new conversation keeps the contract without the old answer's marks
    *_, cleared, _ = offline_app.clear(session, req("alice"))
    assert "<mark" not in contract_view(cleared) and "MASTER SERVICES AGREEMENT" in contract_view(cleared)
    # another contract: the old answer's character ranges are not marked in it, nor linked
    other = tmp_path / "other.txt"
    other.write_text("SUPPLY AGREEMENT\n1. Supply. " + "Supplier shall deliver the goods. " * 5, encoding="utf-8")
    session, _, _ = offline_app.on_upload(str(other), session, req("alice"))
    assert "<mark" not in contract_view(session) and "SUPPLY AGREEMENT" in contract_view(session)
    assert "cite-link" not in sources_markdown(session)

    # overlapping passages: one mark per stretch of text, each link to the mark that shows its passage
    marks, targets = plan_marks([("cite-1", 0, 10, ""), ("cite-2", 5, 8, ""), ("clause-1", 8, 20, "")])
    assert [mark[:3] for mark in marks] == [("cite-1", 0, 10), ("clause-1", 10, 20)]
    assert targets == {"cite-1": "cite-1", "cite-2": "cite-1", "clause-1": "clause-1"}


def test_a_saved_session_comes_back_for_its_user_only(tmp_path: Path, monkeypatch) -> None:
    from lexalign.serve.chat import contract_view, review_markdown

    app = make_app(tmp_path, "http://127.0.0.1:9/v1", "key")
    monkeypatch.setattr(app.endpoint, "resolve", lambda: ("stand-in", 4096))
    monkeypatch.setattr(app.endpoint, "stream", lambda model, messages, max_tokens: iter([f'"{GOVERNING}"']))
    session, _, _ = upload(app, tmp_path)
    *_, (_, _, status, session, _) = app.ask({"task": "clause", "category": "Governing Law"}, session, req("alice"))
    assert status.startswith("Done (answer 1).")
    app.on_feedback(1, "", session, req("alice"))
    book = tmp_path / "book.yaml"
    book.write_text("- Governing Law\n", encoding="utf-8")
    session, _, _ = app.on_playbook(str(book), session, req("alice"))
    summary, table, *_, session = app.review_all(session, req("alice"))
    assert table[0][:2] == ["Governing Law", "found"] and session.review is not None

    # a second app on the same database (a restarted server, or the page loaded again) brings it all back
    config = app.config
    second = ChatApp(open_store(config.store), config, Endpoint(config, "key"))
    restored = second.restore("alice")
    assert restored.conversation_id == session.conversation_id and restored.user == "alice"
    assert restored.document.text == session.document.text and restored.document.name == "msa.txt"
    assert restored.document.sections == session.document.sections
    assert [(c.start, c.end) for c in restored.document.chunks] == [(c.start, c.end) for c in session.document.chunks]
    (turn,) = restored.turns
    assert turn == session.turns[0] and turn.rating == 1 and turn.citations[0]["where"] == "\u00a73 Governing Law"
    assert restored.review == session.review
    assert chat_messages(restored) == chat_messages(session)
    assert sources_markdown(restored) == sources_markdown(session)
    assert contract_view(restored) == contract_view(session) and "<mark id='cite-1' class='cite'" in contract_view(restored)
    assert review_markdown(restored) == summary
    assert "already saved" in second.on_feedback(-1, "", restored, req("alice"))[0]  # rated before the reload

    # another user gets a session of their own
    other = second.restore("bob")
    assert other.user == "bob" and other.document is None and other.turns == [] and other.review is None
    # a new conversation keeps the contract and clears the turns, for the next load too
    *_, cleared, _ = second.clear(restored, req("alice"))
    again = app.restore("alice")
    assert again.conversation_id == cleared.conversation_id != session.conversation_id
    assert again.turns == [] and again.document.sha256 == session.document.sha256 and again.review == session.review
    # an upload that is refused leaves no contract to come back
    app.on_upload(str(tmp_path / "missing.txt"), again, req("alice"))
    assert app.restore("alice").document is None
    second.store.close()
    app.store.close()


@pytest.mark.slow
def test_review_streams_cites_and_feedback_is_stored(served, tmp_path: Path) -> None:
    app = make_app(tmp_path, served.base_url, served.api_key, "model=tiny-base")
    session, _, _ = upload(app, tmp_path)
    updates = list(app.ask({"task": "clause", "category": "Governing Law"}, session, req("alice")))
    assert len(updates) >= 3  # the sources, then the answer as it streams, then the final state
    messages, sources, status, session, enabled = updates[-1]
    assert status.startswith("Done (answer 1).") and enabled is True
    turn = session.turns[-1]
    assert turn.model == "tiny-base" and turn.answer and messages[-1]["role"] == "assistant"
    assert inert(turn.answer) in messages[-1]["content"]
    assert turn.messages[-1]["content"].startswith("Find the Governing Law clause in this contract excerpt (")
    assert any("Governing Law. This Agreement shall be governed" in s["text"] for s in turn.sources)
    assert all(s["label"] in turn.messages[-1]["content"] for s in turn.sources)
    assert "Excerpts sent to the model" in sources and "&lt;script&gt;" not in turn.messages[-1]["content"]
    partials = [u[0][-1]["content"].split("\n\n*")[0] for u in updates[:-1] if u[0][-1]["role"] == "assistant"]
    assert partials and all(p == "\u2026" or inert(turn.answer).startswith(p) for p in partials)

    status, session, enabled, box = app.on_feedback(-1, "This Agreement shall be governed by the laws of the State "
                                                    "of New York.", session, req("alice"))
    assert "saved with your better answer" in status and enabled is False and box == ""
    (row,) = app.store.list_feedback()
    assert row["user"] == "alice" and row["rating"] == -1 and row["response"] == turn.answer
    assert row["prompt"] == turn.messages and row["better_answer"].endswith("State of New York.")
    assert row["meta"]["model"] == "tiny-base" and row["meta"]["document"]["name"] == "msa.txt"
    assert row["meta"]["task"]["category"] == "Governing Law" and row["meta"]["sources"]
    assert "already saved" in app.on_feedback(1, "", session, req("alice"))[0]  # one rating per answer

    # a free question is a second turn; the export holds both, with the feedback
    *_, (messages, _, status, session, _) = app.ask({"task": "question", "question": "When are fees due?"},
                                                     session, req("alice"))
    assert len(session.turns) == 2 and status.startswith("Done")
    exported = json.loads(Path(app.export(session, req("alice"))).read_text())
    assert exported["user"] == "alice" and exported["document"]["name"] == "msa.txt"
    assert [t["asked"] for t in exported["turns"]] == ["Find the Governing Law clause.", "When are fees due?"]
    assert exported["turns"][0]["feedback"]["rating"] == -1 and exported["turns"][0]["prompt"] == turn.messages
    # another user never continues alice's session
    *_, (_, _, _, other, _) = app.ask({"task": "question", "question": "Hi?"}, session, req("bob"))
    assert other.user == "bob" and len(other.turns) == 1 and other.document is None
    app.store.close()


@pytest.mark.slow
def test_the_tuned_model_is_chosen_and_an_empty_answer_cannot_be_rated(served, tmp_path: Path) -> None:
    app = make_app(tmp_path, served.base_url, served.api_key)
    assert app.endpoint.resolve() == ("tiny-sft", 512)  # the adapter, and vLLM's max_model_len of its base
    session, _, _ = upload(app, tmp_path)
    *_, (messages, _, status, session, enabled) = app.ask({"task": "clause", "category": "Governing Law"}, session,
                                                          req("alice"))
    assert status.startswith("Done") and session.turns[-1].model == "tiny-sft"
    if not session.turns[-1].answer:  # the tuned model ended its turn at once
        assert enabled is False and "(empty answer)" in messages[-1]["content"]
        assert "no answer to rate" in app.on_feedback(1, "", session, req("alice"))[0]
    app.store.close()


@pytest.mark.slow
def test_a_wrong_key_is_explained(served, tmp_path: Path) -> None:
    app = make_app(tmp_path, served.base_url, "wrong-key")
    session, _, _ = upload(app, tmp_path)
    *_, (_, _, status, _, _) = app.ask({"task": "unfair"}, session, req("alice"))
    assert "refused the API key (HTTP 401)" in status and "LEXALIGN_API_KEY" in status
    app.store.close()


def emoji(text: str) -> list[str]:
    """Symbols that need an emoji font (Debian's Chromium has none: they show as boxes)."""
    import unicodedata

    return [ch for ch in text if unicodedata.category(ch) == "So" or ord(ch) >= 0x1F000]


def handler(demo, elem_id: str, event: str):
    """The function the app binds to ``event`` of the component with ``elem_id``."""
    block = next(b for b in demo.blocks.values() if getattr(b, "elem_id", None) == elem_id)
    (fn,) = [fn for fn in demo.fns.values() if (block._id, event) in fn.targets]
    return fn.fn


def test_layout_buttons_and_marks_are_words_not_emoji(offline_app: ChatApp, tmp_path: Path, monkeypatch) -> None:
    import gradio as gr

    from lexalign.serve.chat import Turn, citation_line

    demo = offline_app.build()
    blocks = list(demo.blocks.values())
    labels = {b.elem_id: str(b.value) for b in blocks if isinstance(b, gr.Button)}
    labels.update({b.elem_id: str(b.label) for b in blocks if isinstance(b, gr.DownloadButton)})
    assert {"run", "send", "thumbs-up", "thumbs-down", "export", "clear"} <= set(labels)
    assert labels["thumbs-up"] == "Good answer" and labels["thumbs-down"] == "Needs work"
    for label in labels.values():
        assert any(ch.isalpha() for ch in label) and not emoji(label), label
    notes = " ".join(str(b.value) for b in blocks if isinstance(b, gr.Markdown))
    assert "a quote marked \u201cWarning:\u201d is not in it" in notes and not emoji(notes)

    # every place that marks a problem says "Warning:" in words
    session, _, _ = upload(offline_app, tmp_path)
    turn = Turn({}, "Which law?", [], "It says \u201cgoverned by the laws of Mars\u201d.", "m", done=True,
                citations=[{"quote": "governed by the laws of Mars", "found": False, "label": ""}],
                sources=[{"label": "[chunk 1, chars 0\u201310]", "text": "MASTER", "chunk": 1, "start": 0, "end": 10,
                          "page": None}])
    session.turns = [Turn({}, "Hi?", [], "", "m", error="The model server failed.", done=True), turn]
    shown = citation_line(turn) + json.dumps(chat_messages(session), ensure_ascii=False) + sources_markdown(session)
    assert "Warning: quote not found in the contract" in citation_line(turn)
    assert chat_messages(session)[1]["content"] == "Warning: The model server failed."
    assert "Warning: not found in the contract" in sources_markdown(session) and not emoji(shown)

    # an answer quoting text that is not in the contract, from a stand-in endpoint; then both ratings
    answer = 'The contract says "governed by the laws of the planet Mars" in section 3.'
    monkeypatch.setattr(offline_app.endpoint, "resolve", lambda: ("stand-in", 4096))
    monkeypatch.setattr(offline_app.endpoint, "stream", lambda model, messages, max_tokens: iter([answer]))
    session.turns = []
    *_, (_, _, status, session, enabled) = offline_app.ask({"task": "clause", "category": "Governing Law"},
                                                           session, req("alice"))
    assert enabled and "Warning: 1 quote(s) are not in the contract" in status and not emoji(status)
    thanks, *_ = offline_app.on_feedback(1, "", session, req("alice"))
    assert thanks == "Feedback saved (#1): Good answer. Thank you."
    *_, (_, _, _, session, _) = offline_app.ask({"task": "question", "question": "And the fees?"}, session,
                                                req("alice"))
    thanks, *_ = offline_app.on_feedback(-1, "Better.", session, req("alice"))
    assert thanks == "Feedback saved with your better answer (#2): Needs work. Thank you."
    assert [r["rating"] for r in offline_app.store.list_feedback()] == [1, -1]


def test_run_review_needs_a_contract_and_a_refused_file_leaves_the_box(offline_app: ChatApp, tmp_path: Path,
                                                                       monkeypatch) -> None:
    demo = offline_app.build()
    blocks = {getattr(b, "elem_id", None): b for b in demo.blocks.values()}
    assert blocks["run"].interactive is False and blocks["run-note"].value == "Load a contract to run a review."
    # the box's own upload and clear events, never change: emptying the box after a refusal must not fire
    events = {name for fn in demo.fns.values() for target, name in fn.targets if target == blocks["upload"]._id}
    assert events == {"upload", "clear"}

    on_upload = handler(demo, "upload", "upload")
    good, bad = tmp_path / "msa.txt", tmp_path / "broken.pdf"
    good.write_text(CONTRACT, encoding="utf-8")
    bad.write_bytes(b"%PDF-1.4 garbage")
    session, status, _, run, note, box = on_upload(str(good), None, req("alice"))
    assert status.startswith("Loaded **msa.txt") and run.interactive is True and note.visible is False
    assert box is not None  # the loaded file stays in the box
    session, status, _, run, note, box = on_upload(str(bad), session, req("alice"))
    assert "class='error'" in status and "Not loaded: broken.pdf" in status and session.document is None
    assert run.interactive is False and note.visible is True and box is None  # the refused file is removed
    on_upload(str(good), session, req("alice"))
    session, status, _, run, note, box = handler(demo, "upload", "clear")(None, session, req("alice"))
    assert status.startswith("No contract loaded") and run.interactive is False and note.visible is True

    # the server refuses a review without a contract too; a typed question still goes out
    monkeypatch.setattr(offline_app.endpoint, "resolve", lambda: ("stand-in", 4096))
    monkeypatch.setattr(offline_app.endpoint, "stream", lambda model, messages, max_tokens: iter(["A clause."]))
    *_, (_, _, status, session, _) = offline_app.ask({"task": "unfair"}, session, req("alice"))
    assert "Load a contract to run a review." in status and "class='error'" in status and not session.turns
    *_, (_, _, status, session, _) = offline_app.ask({"task": "question", "question": "What is an indemnity?"},
                                                     session, req("alice"))
    assert status.startswith("Done (answer 1).") and session.turns[0].answer == "A clause."


# --------------------------------------------------------------------------- clause-by-clause review


def test_review_all_clauses_table_summary_and_memos(tmp_path: Path, monkeypatch) -> None:
    """The "Review all clauses" handler on a real CUAD contract, with the config's playbook and a stand-in model
    that quotes the contract as the tuned model is trained to (tests/test_clause_review.py's fixed answers)."""
    import docx

    from test_clause_review import PLAYBOOK, cuad_contract, fixed_ask

    from lexalign.serve.clause_review import NOT_IN_CONTRACT

    # the chat config's own chunking and budget (1000-character chunks, as the training data)
    app = make_app(tmp_path, "http://127.0.0.1:9/v1", "key", "chunk_chars=1000", "chunk_overlap=250",
                   "chars_per_token=3.0", "max_tokens=256", f"playbook={PLAYBOOK}")
    assert app.playbook_note(None) == "Playbook: standard.yaml (10 clauses)."
    text, gold = cuad_contract()
    summary, table, docx_path, md_path, _ = app.review_all(None, req("alice"))
    assert "Load a contract to review all clauses." in summary and table == [] and docx_path is None

    session, _, _ = upload(app, tmp_path, name="inmode.txt", data=text.encode())
    # nothing listens on the endpoint: a message, no memo
    summary, table, docx_path, md_path, session = app.review_all(session, req("alice"))
    assert "not reachable" in summary and "class='error'" in summary and table == [] and md_path is None

    calls: list[list[dict[str, str]]] = []
    answer = fixed_ask(gold, calls)

    def stand_in(model: str, messages: list[dict[str, str]], max_tokens: int):
        assert model == "stand-in" and max_tokens == 256  # the chat budget: min(max_tokens, context // 4)
        if "Find the Audit Rights clause" in messages[-1]["content"]:
            return iter(['"The Contractor may audit the books of the planet Mars."'])  # not in the contract
        return iter([answer(messages)])

    monkeypatch.setattr(app.endpoint, "resolve", lambda: ("stand-in", 4096))
    monkeypatch.setattr(app.endpoint, "stream", stand_in)
    steps: list[tuple[float, str]] = []
    started = time.monotonic()
    summary, table, docx_path, md_path, session = app.review_all(
        session, req("alice"), lambda fraction, desc=None: steps.append((fraction, desc)))
    assert time.monotonic() - started < 30
    assert steps == [(0, "Asking about 10 clauses"), (1, "Writing the memo")]
    assert len(calls) == 9  # ten clauses; Audit Rights was answered by the stand-in itself
    names = [row[0] for row in table]
    assert names[:3] == ["Governing Law", "Termination for Convenience", "Cap on Liability"] and len(table) == 10
    rows = {row[0]: row for row in table}
    for clause in ("Governing Law", "Termination for Convenience", "Cap on Liability"):
        _, status, quote, location, _ = rows[clause]
        assert status == "found" and quote.startswith(gold[clause][:40]) and location.startswith("\u00a7")
    assert rows["Governing Law"][3] == "\u00a722.4 Governing Law"  # the contract's own clause 22.4
    assert rows["Non-Compete"][1] == "not found" and rows["Non-Compete"][2] == ""
    assert rows["Non-Compete"][4].startswith("Missing (")
    assert rows["Audit Rights"][1] == "unverified" and "Check by hand" in rows["Audit Rights"][4]
    assert "Found 3 of 10 clauses." in summary and "inmode.txt" in summary and "`stand-in`" in summary
    assert "Audit Rights" in summary  # to check by hand
    # each located quote is marked in the contract view, and linked from the summary
    from lexalign.serve.chat import contract_view

    assert len(session.review.quotes) >= 3 and "In the contract: <a class='cite-link' href='#clause-" in summary
    assert contract_view(session).count("class='cite'") >= 3
    assert app.store.audit_events("chat_clause_review")[-1]["detail"]["found"] == 3

    # both memos, in this conversation's own folder
    assert Path(docx_path).name == "review.docx" and Path(md_path).name == "review.md"
    assert Path(docx_path).parent == app.export_dir / session.conversation_id / "clause-review"
    memo = Path(md_path).read_text(encoding="utf-8")
    assert memo.startswith("# Clause review: inmode.txt") and "- Model: stand-in" in memo
    assert "| 1 | Governing Law | yes |" in memo and NOT_IN_CONTRACT in memo
    word = docx.Document(docx_path)
    (grid,) = word.tables
    assert [c.text for c in grid.rows[0].cells] == ["#", "Clause", "Found", "Quote", "Location", "Risk note"]
    assert len(grid.rows) == 11 and grid.rows[1].cells[1].text == "Governing Law"
    assert any("Found 3 of 10 clauses." in p.text for p in word.paragraphs)
    app.store.close()


def test_the_playbook_is_checked_at_startup_and_one_can_be_uploaded(offline_app: ChatApp, tmp_path: Path,
                                                                     monkeypatch) -> None:
    bad = tmp_path / "book.yaml"
    bad.write_text("- clause: Governing Law\n- clause: Governing law\n", encoding="utf-8")
    with pytest.raises(ConfigError) as info:
        load_config(ChatConfig, REPO / "configs" / "chat.yaml", [f"playbook={bad}"])
    assert f"{bad}:2: playbook.clause = 'Governing law': not a CUAD category" in str(info.value)
    with pytest.raises(ConfigError, match="file not found"):
        load_config(ChatConfig, None, [f"playbook={tmp_path / 'missing.yaml'}"])

    # in the page: the default is every CUAD category; a bad upload is an error naming the file's line
    assert offline_app.playbook_note(None) == "Playbook: all CUAD categories (41 clauses)."
    session, status, accepted = offline_app.on_playbook(str(bad), None, req("alice"))
    assert not accepted and session.playbook is None and "class='error'" in status
    assert "Playbook not used: invalid playbook: book.yaml:2: " in status
    assert "all CUAD categories (41 clauses)" in status
    good = tmp_path / "mine.yaml"
    good.write_text("- Governing Law\n- clause: Audit Rights\n  risk_if_missing: high\n", encoding="utf-8")
    session, status, accepted = offline_app.on_playbook(str(good), session, req("alice"))
    assert accepted and status == "Playbook: mine.yaml (2 clauses)."
    session, _, _ = offline_app.on_upload(str(_contract(tmp_path)), session, req("alice"))
    monkeypatch.setattr(offline_app.endpoint, "resolve", lambda: ("stand-in", 4096))
    monkeypatch.setattr(offline_app.endpoint, "stream", lambda model, messages, max_tokens: iter(["Not present."]))
    summary, table, *_ = offline_app.review_all(session, req("alice"))
    assert [row[:2] for row in table] == [["Governing Law", "not found"], ["Audit Rights", "not found"]]
    assert "Missing high-risk clauses: Audit Rights." in summary
    # a new conversation keeps the contract and the playbook
    *_, session, _ = offline_app.clear(session, req("alice"))
    assert session.playbook is not None and session.document is not None
    session, status, _ = offline_app.on_playbook(None, session, req("alice"))
    assert session.playbook is None and "41 clauses" in status


def _contract(tmp_path: Path) -> Path:
    path = tmp_path / "msa.txt"
    path.write_text(CONTRACT, encoding="utf-8")
    return path


def test_review_all_clauses_waits_for_a_contract_in_the_layout(offline_app: ChatApp) -> None:
    import gradio as gr

    demo = offline_app.build()
    blocks = {getattr(b, "elem_id", None): b for b in demo.blocks.values()}
    assert blocks["review-all"].value == "Review all clauses" and blocks["review-all"].interactive is False
    assert blocks["review-all-note"].value == "Load a contract to review all clauses."
    assert blocks["memo-docx"].label == "Download memo (Word)" and blocks["memo-md"].label == "Download memo (Markdown)"
    assert isinstance(blocks["clause-table"], gr.Dataframe) and blocks["clause-table"].interactive is False
    from lexalign.serve.chat import CITE_LINKS_JS

    assert isinstance(blocks["contract-view"], gr.HTML) and blocks["contract-view"].js_on_load == CITE_LINKS_JS
    assert blocks["playbook-status"].value == "Playbook: all CUAD categories (41 clauses)."
    for elem_id in ("review-all", "memo-docx", "memo-md"):
        assert not emoji(str(blocks[elem_id].value or blocks[elem_id].label))
