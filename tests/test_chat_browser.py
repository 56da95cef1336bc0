"""The lawyers' chat UI in headless Chromium (Debian's /usr/bin/chromium, never a downloaded browser).

`lexalign chat` runs in a subprocess against the session's REAL vLLM server, with a temporary SQLite store
holding the account. The tests sign in through Gradio's login page, upload contracts (TXT, and a PDF and a
DOCX made here), run review tasks, watch the answer stream in, rate it with a better answer, find the
feedback row in the store, and check that contract and user text never runs as HTML. What needs no model
(Run review waiting for a contract, a refused file leaving the upload box, text labels) is checked against
a second app whose endpoint is not there. "Review all clauses" (one prompt per playbook clause) runs against a
third app whose endpoint is a stand-in OpenAI-compatible server answering in the trained form, so the table,
summary and memo downloads are checked without waiting for a real model to answer every clause. The contract view
(the quoted passage marked, a citation link scrolling the view to it, the contract's markup shown as text) is
checked against a fourth app on the same stand-in, with a contract long enough to need scrolling; so is a reload
bringing back the user's contract, conversation and view (and nothing of them for another user).
"""

from __future__ import annotations

import json
import os
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from app_support import chromium, free_port, screenshot, start_app, stop_app

from lexalign.data.store import open_store

pytest_plugins = ["test_serve_support"]
pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parent.parent
PASSWORD = "alice-password"
CONTRACT = """MASTER SERVICES AGREEMENT
This Master Services Agreement is entered into as of January 1, 2020 by and between Acme Corporation and Beta LLC.
1. Fees. Customer shall pay Provider the fees within thirty (30) days after receipt of an undisputed invoice.
2. Term. This Agreement shall continue for a period of three (3) years unless terminated earlier.
3. Governing Law. This Agreement shall be governed by the laws of the State of New York.
4. Notices. <script>window.__xss = 1</script> All notices shall be in writing. <img src=x onerror="window.__xss = 2">
"""
BETTER = "This Agreement shall be governed by the laws of the State of New York. [chunk 3]"


@pytest.fixture(scope="module")
def chat_app(served, tmp_path_factory):
    root = tmp_path_factory.mktemp("chat-app")
    url = f"sqlite:///{root / 'prefs.db'}"
    with open_store(url) as store:
        store.add_annotator("alice", PASSWORD)
    port = free_port()
    env = dict(os.environ, GRADIO_ANALYTICS_ENABLED="False", NO_PROXY="127.0.0.1,localhost",
               LEXALIGN_API_KEY=served.api_key)
    # The test model: 512-token context, ~2 characters per token; its base writes max_tokens of text
    # (the briefly tuned adapter often stops at once), so the UI talks to the base here.
    proc = start_app(
        [sys.executable, "-m", "lexalign.cli", "chat", "--config", str(REPO / "configs" / "chat.yaml"),
         "--endpoint", served.base_url, f"store={url}", f"port={port}", "model=tiny-base", "chars_per_token=1.8",
         "chunk_chars=200", "chunk_overlap=40", "max_tokens=96"], root / "chat.log", port, env)
    base = f"http://127.0.0.1:{port}/"
    yield SimpleNamespace(url=base, store_url=url, root=root)
    stop_app(proc)


@pytest.fixture(scope="module")
def browser():
    with chromium() as b:
        yield b


def login(browser, chat_app, user: str = "alice"):
    context = browser.new_context(viewport={"width": 1400, "height": 1300}, accept_downloads=True)
    page = context.new_page()
    page.goto(chat_app.url)
    page.get_by_label("username").fill(user)
    page.get_by_label("password").fill(PASSWORD)
    page.get_by_role("button", name="Login").click()
    page.locator("#who").get_by_text("signed in as").wait_for(timeout=30_000)
    return page


def wait_text(locator, text: str, timeout: float = 60.0) -> str:
    deadline = time.monotonic() + timeout
    while True:
        seen = locator.inner_text()
        if text in seen:
            return seen
        if time.monotonic() > deadline:
            pytest.fail(f"expected {text!r} in {locator}; it shows {seen[:800]!r}")
        time.sleep(0.1)


def upload(page, path: Path) -> str:
    clear = page.locator("#upload button[aria-label='Clear']")
    if clear.count():
        clear.first.click()
    page.locator("#upload input[type=file]").set_input_files(str(path))
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        status = page.locator("#doc-status").inner_text()
        if path.name in status:
            return status
        time.sleep(0.1)
    pytest.fail(f"no upload status for {path.name}: {page.locator('#doc-status').inner_text()!r}")


def pick(page, elem_id: str, label: str) -> None:
    page.locator(f"#{elem_id} input").click()
    page.get_by_role("option", name=label).click()


WATCH_JS = """() => {
  if (window.__watch) window.__watch.disconnect();
  window.__seen = [];
  const chat = document.querySelector('#chat');
  window.__watch = new MutationObserver(() => {
    const bubbles = chat.querySelectorAll('.bot');
    if (!bubbles.length) return;
    const text = bubbles[bubbles.length - 1].innerText;
    if (window.__seen[window.__seen.length - 1] !== text) window.__seen.push(text);
  });
  window.__watch.observe(chat, {subtree: true, childList: true, characterData: true});
}"""


def run_and_watch(page, click) -> list[str]:
    """Click, wait until the status says this answer is done; return every text the answer bubble showed
    meanwhile. A MutationObserver in the page records each render (polling from here missed them under load)."""
    before = page.locator("#chat .bot").count()
    page.evaluate(WATCH_JS)
    click()
    deadline = time.monotonic() + 120
    while f"Done (answer {before + 1})" not in (status := page.locator("#status").inner_text()):
        if time.monotonic() > deadline:
            page.screenshot(path=str(Path(os.environ.get("TMPDIR", "/tmp")) / "chat-failure.png"), full_page=True)
            pytest.fail(f"no answer: status {status!r}")
        time.sleep(0.05)
    seen = page.evaluate("window.__seen")
    return [text for text in seen if text] + [page.locator("#chat .bot").last.inner_text()]


def test_review_a_contract_stream_rate_and_store_feedback(browser, chat_app, tmp_path: Path) -> None:
    page = login(browser, chat_app)
    contract = tmp_path / "msa.txt"
    contract.write_text(CONTRACT, encoding="utf-8")
    assert "Loaded msa.txt: TXT" in upload(page, contract)

    # the default task: find the Governing Law clause (CUAD); the answer streams in
    seen = run_and_watch(page, lambda: page.locator("#run").click())
    final = seen[-1]
    answer = final.split("Sources:")[0].strip()
    assert answer and answer != "\u2026"
    # it streamed: the page rendered a beginning of the answer before the whole answer (the handler's
    # updates are also checked in tests/test_chat.py::test_review_streams_cites_and_feedback_is_stored)
    partial = [text.split("Sources:")[0].strip() for text in seen[:-1]]
    assert any(p and p != "\u2026" and p != answer and answer.startswith(p) for p in partial), seen
    sources = wait_text(page.locator("#sources"), "Excerpts sent to the model")
    assert "\u00a7" in sources and "3. Governing Law. This Agreement shall be governed" in sources
    assert "chunk " in sources  # the chunk numbers an answer may cite stay beside the sections
    assert "Sources:" in final

    # thumbs down with a better answer -> one feedback row with the exact prompt
    page.locator("#better-answer textarea").fill(BETTER)
    page.locator("#thumbs-down").click()
    wait_text(page.locator("#feedback-status"), "saved with your better answer")
    assert page.locator("#thumbs-up").is_disabled()
    with open_store(chat_app.store_url) as store:
        (row,) = store.list_feedback()
    assert row["user"] == "alice" and row["rating"] == -1 and row["better_answer"] == BETTER
    assert row["prompt"][0]["role"] == "system" and row["prompt"][-1]["role"] == "user"
    assert "Governing Law. This Agreement shall be governed" in row["prompt"][-1]["content"]
    assert row["response"].strip()[:20] in answer.replace("\n", " ") or row["response"].strip()[:20] in answer
    assert row["meta"]["document"]["name"] == "msa.txt" and row["meta"]["task"]["category"] == "Governing Law"

    # a typed question with markup stays text; nothing from the contract or the question ever ran
    question = 'Who pays <img src=x onerror="window.__xss = 3"> the fees?'
    page.locator("#message textarea").fill(question)
    run_and_watch(page, lambda: page.locator("#message textarea").press("Enter"))
    assert 'onerror="window.__xss = 3"' in page.locator("#chat").inner_text()
    assert page.evaluate("window.__xss") is None
    for where in ("#chat", "#sources", "#doc-status"):  # markup from the contract or the question is text only
        assert page.locator(f"{where} img[src='x']").count() == 0 and page.locator(f"{where} script").count() == 0

    # the conversation downloads as JSON
    with page.expect_download() as info:
        page.locator("#export").click()
    exported = json.loads(Path(info.value.path()).read_text())
    assert [t["asked"] for t in exported["turns"]] == ["Find the Governing Law clause.", question]
    assert exported["turns"][0]["feedback"]["rating"] == -1 and exported["user"] == "alice"
    page.context.close()


def test_pdf_and_docx_uploads_other_tasks_and_a_bad_file(browser, chat_app, tmp_path: Path) -> None:
    from test_documents import make_docx, make_pdf

    page = login(browser, chat_app)
    pdf = tmp_path / "lease.pdf"
    pdf.write_bytes(make_pdf([["LEASE AGREEMENT", "1. Rent. Tenant shall pay rent of $2,000 on the first day of "
                               "each month.", "2. Term. The term ends on December 31, 2026."],
                              ["3. Notice. Tenant shall give sixty (60) days prior written notice before leaving."]]))
    status = upload(page, pdf)
    assert "Loaded lease.pdf: PDF, 2 pages" in status
    pick(page, "task", "Summarize obligations and dates")
    page.locator("#category").wait_for(state="hidden", timeout=10_000)  # only the clause task needs it
    run_and_watch(page, lambda: page.locator("#run").click())
    sources = page.locator("#sources").inner_text()
    assert "LEASE AGREEMENT" in sources and (", p. 1" in sources or ", p. 2" in sources)  # sections and pages
    assert page.locator("#thumbs-up").is_enabled()
    page.locator("#thumbs-up").click()
    wait_text(page.locator("#feedback-status"), "saved")

    docx = tmp_path / "nda.docx"
    docx.write_bytes(make_docx(["MUTUAL NONDISCLOSURE AGREEMENT",
                                "The Receiving Party shall not disclose Confidential Information for five (5) years.",
                                "We may terminate your account at any time for any reason."]))
    assert "Loaded nda.docx: DOCX" in upload(page, docx)
    pick(page, "task", "Flag potentially unfair clauses")
    run_and_watch(page, lambda: page.locator("#run").click())
    assert "terminate your account" in page.locator("#sources").inner_text()

    broken = tmp_path / "broken.pdf"
    broken.write_bytes(b"%PDF-1.7\n this is not really a pdf")
    status = upload(page, broken)
    assert "Not loaded: broken.pdf: cannot read this PDF" in status
    # the app still works: a question without a contract goes out as typed
    page.locator("#message textarea").fill("What is a limitation of liability clause?")
    run_and_watch(page, lambda: page.locator("#send").click())
    with open_store(chat_app.store_url) as store:
        ratings = [row["rating"] for row in store.list_feedback() if row["meta"]["document"]
                   and row["meta"]["document"]["name"] == "lease.pdf"]
    assert ratings == [1]
    page.context.close()


@contextmanager
def chat_app_on(root: Path, endpoint: str, users: tuple[str, ...] = ("alice",), *settings: str) -> Iterator[Any]:
    """`lexalign chat` on its own store in ``root`` with ``users``, against ``endpoint``, stopped on exit."""
    url = f"sqlite:///{root / 'prefs.db'}"
    with open_store(url) as store:
        for user in users:
            store.add_annotator(user, PASSWORD)
    port = free_port()
    env = dict(os.environ, GRADIO_ANALYTICS_ENABLED="False", NO_PROXY="127.0.0.1,localhost", LEXALIGN_API_KEY="key")
    proc = start_app(
        [sys.executable, "-m", "lexalign.cli", "chat", "--config", str(REPO / "configs" / "chat.yaml"),
         "--endpoint", endpoint, f"store={url}", f"port={port}", *settings], root / "chat.log", port, env)
    try:
        yield SimpleNamespace(url=f"http://127.0.0.1:{port}/", store_url=url, root=root)
    finally:
        stop_app(proc)


@contextmanager
def stand_in_model() -> Iterator[str]:
    """The stand-in model's OpenAI endpoint, served from a thread."""
    model = ThreadingHTTPServer(("127.0.0.1", 0), StandInModel)
    threading.Thread(target=model.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{model.server_address[1]}/v1"
    finally:
        model.shutdown()
        model.server_close()


@pytest.fixture(scope="module")
def offline_chat(tmp_path_factory):
    """`lexalign chat` against an endpoint that is not there (port 9): what needs no model, checked without one."""
    with chat_app_on(tmp_path_factory.mktemp("chat-offline"), "http://127.0.0.1:9/v1") as app:
        yield app


def wait_until(check, what: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out waiting for {what}")
        time.sleep(0.1)


def test_run_review_waits_for_a_contract_and_a_refused_file_is_cleared(browser, offline_chat, tmp_path: Path) -> None:
    page = login(browser, offline_chat)
    run, note, status = page.locator("#run"), page.locator("#run-note"), page.locator("#doc-status")
    assert run.is_disabled()
    assert "Load a contract to run a review" in note.inner_text()

    contract = tmp_path / "msa.txt"
    contract.write_text(CONTRACT, encoding="utf-8")
    assert "Loaded msa.txt: TXT" in upload(page, contract)
    wait_until(run.is_enabled, "Run review to be enabled after the upload")
    wait_until(lambda: not note.is_visible(), "the note to go once a contract is loaded")

    # a refused file: a red error, the box empty again, Run review disabled; the error is not replaced
    broken = tmp_path / "broken.pdf"
    broken.write_bytes(b"%PDF-1.7\n this is not really a pdf")
    assert "Not loaded: broken.pdf: cannot read this PDF" in upload(page, broken)
    assert status.locator(".error").count() == 1
    wait_until(lambda: "broken.pdf" not in page.locator("#upload").inner_text(), "the refused file to leave the box")
    assert page.locator("#upload button[aria-label='Clear']").count() == 0
    time.sleep(1.5)  # time for a stray change event to overwrite the message, had one been sent
    assert "Not loaded: broken.pdf" in status.inner_text() and status.locator(".error").count() == 1
    assert run.is_disabled() and "Load a contract to run a review" in note.inner_text()

    # loaded again, then cleared with the box's own button: disabled again
    assert "Loaded msa.txt" in upload(page, contract)
    wait_until(run.is_enabled, "Run review to be enabled after the second upload")
    page.locator("#upload button[aria-label='Clear']").first.click()
    wait_text(status, "No contract loaded")
    wait_until(run.is_disabled, "Run review to be disabled after clearing")
    assert note.is_visible()

    # a typed question without a contract still goes to the model (here: the server that is not there)
    page.locator("#message textarea").fill("What is an indemnity clause?")
    page.locator("#send").click()
    wait_text(page.locator("#status"), "not reachable")  # sent, not refused for want of a contract
    page.context.close()


def test_feedback_buttons_and_marks_are_words(browser, offline_chat) -> None:
    page = login(browser, offline_chat)
    assert page.locator("#thumbs-up").inner_text().strip() == "Good answer"
    assert page.locator("#thumbs-down").inner_text().strip() == "Needs work"
    assert "a quote marked \u201cWarning:\u201d is not in it" in page.locator("body").inner_text()
    page.context.close()



# --------------------------------------------------------------------------- clause-by-clause review

REVIEWED = CONTRACT + "5. Audit. Provider may audit <img src=x onerror='window.__xss = 5'> the records once a year.\n"
GOVERNING = "This Agreement shall be governed by the laws of the State of New York."
AUDIT = "Provider may audit <img src=x onerror='window.__xss = 5'> the records once a year."


class StandInModel(BaseHTTPRequestHandler):
    """An OpenAI-compatible endpoint that streams the trained answer form: the clause quoted when the prompt's
    excerpts hold it (Governing Law, Audit Rights of REVIEWED), else "Not present."."""

    def log_message(self, *args: Any) -> None:
        pass

    def _json(self, payload: dict[str, Any]) -> None:
        body = json.dumps(payload).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self) -> None:  # noqa: N802 - http.server's naming
        self._json({"object": "list", "data": [{"id": "stand-in", "object": "model", "max_model_len": 4096}]})

    def do_POST(self) -> None:  # noqa: N802
        from lexalign.data import prompts

        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        user = body["messages"][-1]["content"]
        answer = prompts.NOT_PRESENT
        for clause, span in (("Governing Law", GOVERNING), ("Audit Rights", AUDIT)):
            if user.startswith(f"Find the {clause} clause") and span in user:
                answer = prompts.extract_answer([span])
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.end_headers()  # HTTP/1.0: the stream ends when the connection closes
        for delta, finish in (({"role": "assistant", "content": answer}, None), ({}, "stop")):
            event = {"id": "c", "object": "chat.completion.chunk", "created": 0, "model": body["model"],
                     "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]}
            self.wfile.write(f"data: {json.dumps(event)}\n\n".encode())
        self.wfile.write(b"data: [DONE]\n\n")


@pytest.fixture(scope="module")
def review_chat(tmp_path_factory):
    """`lexalign chat` with a three-clause playbook in its config, against the stand-in model."""
    root = tmp_path_factory.mktemp("chat-review")
    book = root / "book.yaml"
    book.write_text("- clause: Governing Law\n  risk_if_missing: medium\n- Audit Rights\n"
                    "- clause: Non-Compete\n  risk_if_missing: high\n  position: None binding the client.\n",
                    encoding="utf-8")
    with stand_in_model() as endpoint, chat_app_on(root, endpoint, ("alice",), f"playbook={book}") as app:
        yield app


def test_review_all_clauses_table_and_memo_downloads(browser, review_chat, tmp_path: Path) -> None:
    import docx

    page = login(browser, review_chat)
    button, note = page.locator("#review-all"), page.locator("#review-all-note")
    assert button.is_disabled() and "Load a contract to review all clauses" in note.inner_text()
    assert "Playbook: book.yaml (3 clauses)" in page.locator("#playbook-status").inner_text()

    contract = tmp_path / "msa.txt"
    contract.write_text(REVIEWED, encoding="utf-8")
    assert "Loaded msa.txt: TXT" in upload(page, contract)
    wait_until(button.is_enabled, "Review all clauses to be enabled after the upload")
    assert not note.is_visible()

    button.click()
    summary = wait_text(page.locator("#clause-summary"), "Found 2 of 3 clauses.")
    assert "Missing high-risk clauses: Non-Compete." in summary and "stand-in" in summary
    table = page.locator("#clause-table")
    shown = wait_text(table, "Non-Compete")
    for text in ("Governing Law", "Audit Rights", "found", "not found", GOVERNING, "\u00a73 Governing Law",
                 "\u00a75 Audit", "Missing (high risk). Firm position: None binding the client."):
        assert text in shown, text
    screenshot(page, "chat-clause-by-clause-review")
    # the contract's markup in a quote is text in the table, never an element
    assert "onerror='window.__xss = 5'" in shown
    assert table.locator("img[src='x']").count() == 0 and page.evaluate("window.__xss") is None

    with page.expect_download() as info:
        page.locator("#memo-docx").click()
    assert info.value.suggested_filename == "review.docx"
    word = docx.Document(info.value.path())
    assert [row.cells[1].text for row in word.tables[0].rows] == ["Clause", "Governing Law", "Audit Rights",
                                                                  "Non-Compete"]
    with page.expect_download() as info:
        page.locator("#memo-md").click()
    memo = Path(info.value.path()).read_text(encoding="utf-8")
    assert info.value.suggested_filename == "review.md" and memo.startswith("# Clause review: msa.txt")

    # a playbook uploaded in the page: a bad one is an error with its line and leaves the box
    bad = tmp_path / "mine.yaml"
    bad.write_text("- Governing Law\n- Govern Law\n", encoding="utf-8")
    page.locator("#playbook input[type=file]").set_input_files(str(bad))
    status = wait_text(page.locator("#playbook-status"), "Playbook not used")
    assert "mine.yaml:2" in status and page.locator("#playbook-status .error").count() == 1
    wait_until(lambda: "mine.yaml" not in page.locator("#playbook").inner_text(), "the refused playbook to go")

    # clearing the contract disables the button and empties the last review
    page.locator("#upload button[aria-label='Clear']").first.click()
    wait_until(button.is_disabled, "Review all clauses to be disabled after clearing")
    wait_until(lambda: "Governing Law" not in table.inner_text(), "the table to empty")
    assert page.locator("#memo-docx").is_disabled()
    page.context.close()


# --------------------------------------------------------------------------- the contract view

# A contract long enough that its Governing Law clause is far below the top of the contract view.
LONG_CONTRACT = "\n".join(
    ["SERVICES AGREEMENT", "This Services Agreement is made between Acme Corporation and Beta LLC."]
    + [f"{n}. Deliverable {n}. Provider shall deliver work item {n} described in Schedule {n} to Customer within "
       f"{n + 5} business days after each written request, in a professional and workmanlike manner."
       for n in range(1, 40)]
    + [f"40. Governing Law. {GOVERNING}",
       '41. Notices. <script>window.__xss = 7</script> Notices are given in writing. '
       '<img src=x onerror="window.__xss = 8">'])

IN_VIEW_JS = """(mark) => {
  const box = mark.closest('.contract-text').getBoundingClientRect();
  const seen = mark.getBoundingClientRect();
  return seen.height > 0 && seen.top >= box.top && seen.bottom <= box.bottom;
}"""


@pytest.fixture(scope="module")
def cite_chat(tmp_path_factory):
    """`lexalign chat` against the stand-in model (it quotes the Governing Law clause), with two accounts."""
    root = tmp_path_factory.mktemp("chat-cite")
    with stand_in_model() as endpoint, chat_app_on(root, endpoint, ("alice", "bob")) as app:
        yield app


def test_a_citation_link_scrolls_the_contract_view_to_the_marked_passage(browser, cite_chat, tmp_path: Path) -> None:
    page = login(browser, cite_chat)
    contract = tmp_path / "services.txt"
    contract.write_text(LONG_CONTRACT, encoding="utf-8")
    assert "Loaded services.txt: TXT" in upload(page, contract)
    view = page.locator("#contract-view .contract-text")
    shown = wait_text(view, "40. Governing Law.")
    # the contract's markup is text in the view, never an element; nothing in it ran
    assert '<script>window.__xss = 7</script>' in shown and '<img src=x onerror="window.__xss = 8">' in shown
    assert page.locator("#contract-view img").count() == 0 and page.locator("#contract-view script").count() == 0
    assert page.locator("#contract-view a.section-start").count() == 42  # the title line and 41 clauses
    assert page.locator("#contract-view mark").count() == 0

    # the default task (find the Governing Law clause): the stand-in quotes it; the view marks the passage
    run_and_watch(page, lambda: page.locator("#run").click())
    mark = page.locator("#contract-view mark.cite")
    wait_until(lambda: mark.count() == 1, "the quoted passage to be marked in the contract view")
    assert mark.inner_text() == GOVERNING and mark.get_attribute("id") == "cite-1"
    assert not mark.evaluate(IN_VIEW_JS)  # far below the top of the view

    link = page.locator("#sources a.cite-link")
    assert link.inner_text() == "\u00a740 Governing Law" and link.get_attribute("href") == "#cite-1"
    link.click()
    wait_until(lambda: mark.evaluate(IN_VIEW_JS), "the contract view to scroll to the marked passage")
    assert "current" in (mark.get_attribute("class") or "")
    screenshot(page, "chat-contract-view-citation")
    assert page.evaluate("window.__xss") is None
    page.context.close()


def test_a_reload_brings_back_the_conversation_and_the_contract_view(browser, cite_chat, tmp_path: Path) -> None:
    page = login(browser, cite_chat, "bob")
    contract = tmp_path / "kept.txt"
    contract.write_text(LONG_CONTRACT, encoding="utf-8")
    assert "Loaded kept.txt: TXT" in upload(page, contract)
    run_and_watch(page, lambda: page.locator("#run").click())
    wait_until(lambda: page.locator("#contract-view mark.cite").count() == 1, "the quoted passage to be marked")

    page.reload()
    page.locator("#who").get_by_text("signed in as").wait_for(timeout=30_000)
    assert "Loaded kept.txt: TXT" in wait_text(page.locator("#doc-status"), "kept.txt")
    chat = wait_text(page.locator("#chat"), "Find the Governing Law clause.")
    assert GOVERNING in chat and "\u00a740 Governing Law" in chat
    mark = page.locator("#contract-view mark.cite")
    wait_until(lambda: mark.count() == 1, "the restored answer's passage to be marked")
    assert mark.inner_text() == GOVERNING and "40. Governing Law." in page.locator("#contract-view").inner_text()
    assert page.locator("#run").is_enabled() and page.locator("#thumbs-up").is_enabled()
    # the restored sources still lead to the passage
    page.locator("#sources a.cite-link").click()
    wait_until(lambda: mark.evaluate(IN_VIEW_JS), "the contract view to scroll to the restored passage")
    # a new conversation keeps the contract, after a reload too
    page.locator("#clear").click()
    wait_text(page.locator("#status"), "New conversation.")
    page.reload()
    page.locator("#who").get_by_text("signed in as").wait_for(timeout=30_000)
    wait_text(page.locator("#doc-status"), "kept.txt")
    wait_until(lambda: "40. Governing Law." in page.locator("#contract-view").inner_text(), "the contract view")
    assert page.locator("#chat .bot").count() == 0 and page.locator("#contract-view mark").count() == 0
    page.context.close()

    # another user sees nothing of it
    other = login(browser, cite_chat, "alice")  # one load event fills "signed in as" and the restored session
    assert "kept.txt" not in other.locator("#doc-status").inner_text()
    assert "kept.txt" not in other.locator("#contract-view").inner_text()
    other.context.close()
