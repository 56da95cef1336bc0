"""The ranking app in headless Chromium (Debian's /usr/bin/chromium, never a downloaded browser).

The app runs as `lexalign annotate` in a subprocess on a free port with a temporary SQLite store seeded
with users and tasks; the tests log in through Gradio's login page, rank, submit, and check the database.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import pytest

from app_support import chromium, free_port, screenshot, start_app, stop_app

from lexalign.data.store import open_store

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parent.parent
USERS = {"alice": ("alice-password", "annotator"), "bob": ("bob-password", "annotator"),
         "root": ("root-password", "admin"), "carol": ("carol-password", "annotator"),
         "dave": ("dave-password", "annotator"), "erin": ("erin-password", "annotator"),
         "frank": ("frank-password", "annotator")}
GOOD = "**New York** law governs this agreement."
XSS_SCRIPT = "<script>window.__xss = 1</script>Delaware law governs."
XSS_IMG = '<img src=x onerror="window.__xss = 2"> Not present.'
ALICE_RATIONALE = "Only answer NY quotes the excerpt; damages < fees. (alice-secret-note)"


def start_annotate(root: Path, url: str) -> tuple[subprocess.Popen, str]:
    """`lexalign annotate` on a free port in a subprocess; returns (process, base URL) once it answers."""
    port = free_port()
    env = dict(os.environ, GRADIO_ANALYTICS_ENABLED="False", NO_PROXY="127.0.0.1,localhost")
    proc = start_app([sys.executable, "-m", "lexalign.cli", "annotate", "--config", str(REPO / "configs" / "annotate.yaml"),
                      f"store={url}", f"port={port}", f"export_dir={root / 'exports'}"], root / "server.log", port, env)
    return proc, f"http://127.0.0.1:{port}/"


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    root = tmp_path_factory.mktemp("annotate-app")
    url = f"sqlite:///{root / 'prefs.db'}"
    with open_store(url) as store:
        for name, (password, role) in USERS.items():
            store.add_annotator(name, password, role)
        for i in range(7):
            prompt = [{"role": "system", "content": "You review contracts."},
                      {"role": "user", "content": f"Find the Governing Law clause.\n\nExcerpt:\n"
                                                  f"{i}. This Agreement is governed by the laws of New York."}]
            meta = {"doc": i, "task": "extract", "category": "Governing Law", "doc_id": f"Supply Agreement {i}"}
            store.add_task(f"gl-{i}", prompt, [GOOD, XSS_SCRIPT, XSS_IMG], meta, k=2)
    proc, base = start_annotate(root, url)
    yield SimpleNamespace(url=base, store_url=url, root=root)
    stop_app(proc)


@pytest.fixture(scope="module")
def browser():
    with chromium() as b:
        yield b


def login(browser, server, user: str, viewport: tuple[int, int] = (1400, 1100), password: str | None = None):
    context = browser.new_context(viewport={"width": viewport[0], "height": viewport[1]})
    page = context.new_page()
    page.goto(server.url)
    page.get_by_label("username").fill(user)
    page.get_by_label("password").fill(password if password is not None else USERS[user][0])
    page.get_by_role("button", name="Login").click()
    page.locator("#progress").get_by_text("done").wait_for(timeout=30_000)
    return page


def shown_answers(page) -> list[str]:
    texts = []
    for i in range(6):
        answer = page.locator(f"#answer-{i}")
        if not answer.is_visible():
            break
        texts.append(answer.inner_text().strip())
    return texts


def pick(page, slot: int, rank: int) -> None:
    page.locator(f"#rank-{slot} [data-testid='{rank}-radio-label']").click()


def message(page, contains: str) -> str:
    from playwright.sync_api import TimeoutError as PlaywrightTimeout

    locator = page.locator("#message")
    try:
        locator.get_by_text(contains).wait_for(timeout=20_000)
    except PlaywrightTimeout:
        page.screenshot(path=str(Path(os.environ.get("TMPDIR", "/tmp")) / "annotate-failure.png"), full_page=True)
        pytest.fail(f"expected {contains!r} in the message box; it says {locator.inner_text()!r}")
    return locator.inner_text()


def wait_text(locator, text: str, timeout: float = 20.0) -> str:
    """Poll a locator's visible text (Gradio tables render each cell twice, so get_by_text is ambiguous)."""
    deadline = time.monotonic() + timeout
    while True:
        seen = locator.inner_text()
        if text in seen:
            return seen
        if time.monotonic() > deadline:
            pytest.fail(f"expected {text!r} in {locator}; it shows {seen[:500]!r}")
        time.sleep(0.2)


def _stored_text(shown: str) -> str:
    """The stored answer behind an answer's text on the page (the fixture's three answers)."""
    return {"New York law governs this agreement.": GOOD}.get(shown, XSS_SCRIPT if "script" in shown else XSS_IMG)


def stored_rankings(server) -> list[dict]:
    with open_store(server.store_url) as store:
        return [{"prompt_id": t.prompt_id, "annotator": r.annotator, "texts": [c.text for c in t.candidates],
                 "ranks": list(r.ranks), "rationale": r.rationale, "flags": list(r.flags)}
                for t in store.task_rankings() for r in t.rankings]


def test_login_rank_submit_stores_the_row_and_model_text_stays_inert(browser, server) -> None:
    page = login(browser, server, "alice")
    assert page.evaluate("window.__xss") is None  # neither the <script> nor the onerror handler ran
    header = page.locator("#task-header").inner_text()
    assert header.startswith("Clause extraction: Governing Law — Supply Agreement") and "Task gl-" in header
    answers = shown_answers(page)
    assert len(answers) == 3
    assert any("<script>window.__xss = 1</script>" in a for a in answers)  # shown as text
    assert any('<img src=x onerror="window.__xss = 2">' in a for a in answers)
    assert any(a.startswith("New York law governs") for a in answers)  # markdown still renders (bold)
    assert page.locator("#answer-0 script, #answer-1 script, #answer-2 script, #answer-0 img, "
                        "#answer-1 img, #answer-2 img").count() == 0
    wanted = {GOOD: 1, XSS_SCRIPT: 2, XSS_IMG: 2}  # a tie between the two bad answers
    for slot, shown in enumerate(answers):
        pick(page, slot, wanted[_stored_text(shown)])
    page.locator("#rationale textarea").fill(ALICE_RATIONALE)
    bad_slot = next(slot for slot, shown in enumerate(answers) if "script" in shown)
    page.locator(f"#flags-{bad_slot}").get_by_text("wrong law or jurisdiction").click()   # on that answer only
    page.locator("#submit-btn").click()
    message(page, "Saved")
    assert page.locator("#progress").get_by_text("1 of").count() == 1
    (row,) = [r for r in stored_rankings(server) if r["annotator"] == "alice"]
    assert dict(zip(row["texts"], row["ranks"])) == wanted
    assert row["rationale"] == ALICE_RATIONALE and row["flags"] == [f"wrong_law@{row['texts'].index(XSS_SCRIPT)}"]
    page.get_by_role("tab", name="My submissions").click()
    table = wait_text(page.locator("#my-table"), row["prompt_id"])
    bad_letter = "ABC"[bad_slot]
    assert ALICE_RATIONALE in table and f"{bad_letter}: wrong law or jurisdiction" in table and "wrong_law" not in table
    assert "A=" in table and "Clause extraction: Governing Law" in table
    assert page.evaluate("window.__xss") is None and page.locator("#my-table script, #my-table img").count() == 0
    page.context.close()


def test_bad_submissions_show_a_clear_error_and_store_nothing(browser, server) -> None:
    page = login(browser, server, "alice")
    before = stored_rankings(server)
    pick(page, 0, 1)
    page.locator("#submit-btn").click()
    assert "give answers B, C a rank" in message(page, "Not saved")
    pick(page, 1, 3)
    pick(page, 2, 3)  # 1, 3, 3: a gap, not a dense weak ordering
    page.locator("#submit-btn").click()
    assert "missing rank 2" in message(page, "missing rank 2")
    pick(page, 1, 2)
    pick(page, 2, 2)
    page.locator("#rationale textarea").fill("<script>window.__xss = 3</script>")
    page.locator("#submit-btn").click()
    assert "plain text" in message(page, "plain text")
    assert page.evaluate("window.__xss") is None
    assert stored_rankings(server) == before  # nothing was stored by any of them
    # Fix the rationale and submit from the keyboard: Ctrl+Enter in the rationale box.
    box = page.locator("#rationale textarea")
    box.fill("Ties between the two wrong answers.")
    box.press("Control+Enter")
    message(page, "Saved")
    assert len(stored_rankings(server)) == len(before) + 1
    page.context.close()


def test_keyboard_tab_and_space_pick_ranks(browser, server) -> None:
    page = login(browser, server, "root")  # root annotates too (admins are annotators as well)
    first = page.locator("#rank-0 input[type=radio]").first
    first.focus()
    page.keyboard.press("Space")
    assert first.is_checked()
    page.keyboard.press("Tab")
    focused = page.evaluate("document.activeElement.closest('[id^=rank-]')?.id + ':' + document.activeElement.value")
    assert focused == "rank-0:2"
    page.context.close()


def test_digits_rank_the_answers_in_turn_and_ctrl_enter_submits(browser, server) -> None:
    """Typing "2 1 2" ranks A, B, C in turn; a digit on a focused answer changes that answer only; digits typed in
    the rationale stay text; Ctrl+Enter stores the ranking on the candidates shown in those places."""
    page = login(browser, server, "frank")
    answers = shown_answers(page)
    assert len(answers) == 3
    page.locator("#task-header").click()          # focus on the page, outside any input
    for key in "212":
        page.keyboard.press(key)
    checked = page.evaluate("""[0, 1, 2].map((i) =>
        document.querySelector(`#rank-${i} input[type=radio]:checked`)?.value ?? null)""")
    assert checked == ["2", "1", "2"]
    wait_text(page.locator("#ranking-summary"), "B > A = C")
    page.locator("#rank-2 input[type=radio]").first.focus()   # a focused answer takes the next digit
    page.keyboard.press("3")
    wait_text(page.locator("#ranking-summary"), "B > A > C")
    screenshot(page, "ranking-keyboard-summary")
    page.locator("#rationale textarea").fill("")
    page.locator("#rationale textarea").press_sequentially("12")  # text, not ranks
    assert page.locator("#rationale textarea").input_value() == "12"
    assert page.evaluate("document.querySelector('#rank-0 input:checked').value") == "2"
    page.keyboard.press("Control+Enter")
    message(page, "Saved")
    row = [r for r in stored_rankings(server) if r["annotator"] == "frank"][-1]
    assert row["rationale"] == "12"
    assert dict(zip(row["texts"], row["ranks"])) == dict(zip(map(_stored_text, answers), [2, 1, 3]))
    page.context.close()


def test_guidelines_are_beside_the_answers_on_a_desktop_window(browser, server) -> None:
    page = login(browser, server, "root", viewport=(1400, 900))
    guidelines = page.locator("#guidelines")
    assert guidelines.is_visible() and guidelines.get_by_text("Correct before complete").first.is_visible()
    answers = [page.locator(f"#candidate-{slot}").bounding_box() for slot in range(3)]
    assert None not in answers
    box = guidelines.bounding_box()
    answers_right = max(a["x"] + a["width"] for a in answers)
    answers_top, answers_bottom = min(a["y"] for a in answers), max(a["y"] + a["height"] for a in answers)
    assert box["x"] >= answers_right - 1, (box, answers)                              # to the right of the answers
    assert box["y"] < answers_bottom and box["y"] + box["height"] > answers_top, (box, answers)   # not above/below
    assert box["x"] + box["width"] <= 1400
    page.context.close()


def test_annotator_cannot_see_others_work_or_reach_the_admin_view(browser, server) -> None:
    from gradio_client import Client

    page = login(browser, server, "bob")
    assert page.get_by_role("tab", name="Admin").count() == 0
    page.get_by_role("tab", name="My submissions").click()
    assert "alice-secret-note" not in page.content()
    assert page.locator("#my-table").get_by_text("gl-").count() == 0  # bob has submitted nothing
    page.context.close()
    # The hidden tab is not the protection: the admin handlers refuse bob's session on the server.
    client = Client(server.url, auth=("bob", USERS["bob"][0]), verbose=False)
    # export: sources, kinds, annotators, submitted from, submitted to
    for endpoint, inputs in (("/admin_refresh", []), ("/admin_export", [[], [], [], "", ""])):
        with pytest.raises(Exception, match="Only admins"):
            client.predict(*inputs, api_name=endpoint)
    with open_store(server.store_url) as store:
        denied = store.audit_events("admin_denied")
        assert {e["actor"] for e in denied} == {"bob"} and len(denied) >= 2
        assert not (server.root / "exports").exists() or not any((server.root / "exports").iterdir())


def test_admin_sees_progress_and_agreement_and_exports(browser, server) -> None:
    page = login(browser, server, "root")
    page.get_by_role("tab", name="Admin").click()
    page.locator("#admin-refresh").click()
    wait_text(page.locator("#admin-table"), "alice")
    assert page.locator("#admin-agreement").inner_text().strip() != ""
    wait_text(page.locator("#admin-export-sources"), "app (7 tasks)")   # every source, with its task count
    assert page.locator("#admin-export-sources input[type=checkbox]:checked").count() == 1
    assert page.locator("#admin-export-kinds input[type=checkbox]:checked").count() == 2
    page.locator("#admin-export-kinds").get_by_text("labels (derived").click()   # people's rankings only
    page.locator("#admin-export").click()
    text = page.locator("#admin-export-text")
    text.get_by_text("Exported").wait_for(timeout=30_000)
    assert "sources app; annotators human" in text.inner_text()
    files = wait_text(page.locator("#admin-export-files"), "rankings").replace("\n", "")   # every file, each
    assert all(name in files for name in ("preferences.jsonl", "rankings.jsonl", "export.json"))   # downloadable
    exports = list((server.root / "exports").glob("*/preferences.jsonl"))
    assert len(exports) == 1 and exports[0].read_text().strip()
    summary = json.loads((exports[0].parent / "export.json").read_text())
    assert summary["kinds"] == ["human"]
    with open_store(server.store_url) as store:
        assert store.audit_events("export")[0]["actor"] == "root"
        assert {"login", "submission"} <= {e["action"] for e in store.audit_events()}
    page.context.close()


def test_admin_tab_is_filled_on_open_and_says_what_agreement_means(browser, server) -> None:
    from lexalign.data.schemas import RankingRecord
    from lexalign.reward.agreement import rankings_agreement

    # two panel members disagree on two imported tasks (not assigned to anyone: k=0)
    disputed = [("panel-split", {"task": "extract", "category": "Termination for Convenience",
                                 "doc_id": "Reseller Agreement"}, [1, 2, 3], [3, 2, 1]),
                ("panel-partial", {"task": "presence", "category": "Non-Compete", "doc_id": "Franchise Agreement"},
                 [1, 2, 3], [1, 3, 2])]
    with open_store(server.store_url) as store:
        store.import_rankings([RankingRecord(prompt_id=pid, prompt="Which clause?", responses=["x", "y", "z"],
                                             ranks=ranks, annotator=who, meta=meta)
                               for pid, meta, first, second in disputed
                               for who, ranks in (("panel-a", first), ("panel-b", second))], "panel")
        band = rankings_agreement(store.task_rankings(min_annotators=2, kinds=["human"])).alpha_band()
    page = login(browser, server, "root")
    page.get_by_role("tab", name="Admin").click()
    # no click on Refresh: the table and the agreement are there
    table = wait_text(page.locator("#admin-table"), "alice")
    assert "root" in table and "admin" in table
    agreement = wait_text(page.locator("#admin-agreement"), "Most disputed tasks")
    assert "Krippendorff's alpha (ordinal): " in agreement and "mean Kendall's W" in agreement
    assert "alpha >= 0.8 is reliable, >= 0.667 is enough for tentative conclusions, below 0.667" in agreement
    assert "Kendall's W says how alike the rankings of one task are" in agreement
    assert f"is {band}:" in agreement
    items = page.locator("#admin-agreement li").all_inner_texts()
    assert 2 <= len(items) <= 10
    titles = [next((i for i, text in enumerate(items) if wanted in text), None)
              for wanted in ("Clause extraction: Termination for Convenience — Reseller Agreement (task panel-split)"
                             ": W = 0.000", "Clause presence: Non-Compete — Franchise Agreement (task panel-partial)"
                             ": W = 0.750")]
    assert None not in titles and titles[0] < titles[1], items  # lowest W first
    assert page.locator("#admin-refresh").is_visible()  # Refresh is still there for later changes
    page.context.close()


def in_view(page, selector: str) -> bool:
    """The element is rendered and wholly inside the window."""
    return page.evaluate("""(selector) => {
        const element = document.querySelector(selector);
        if (!element) return false;
        const box = element.getBoundingClientRect();
        return box.height > 0 && box.top >= 0 && box.bottom <= window.innerHeight;
    }""", selector)


def rank_all(page, n: int = 3) -> None:
    for slot in range(n):
        pick(page, slot, 1 if slot == 0 else 2)


def test_enter_in_the_rationale_adds_lines_and_never_submits(browser, server) -> None:
    page = login(browser, server, "dave")
    before = len(stored_rankings(server))
    rank_all(page)  # a complete ranking: a stray submit would be stored
    box = page.locator("#rationale textarea")
    assert "Ctrl+Enter" in box.get_attribute("placeholder")
    box.click()
    page.keyboard.type("first line")
    page.keyboard.press("Shift+Enter")
    page.keyboard.type("second line")
    page.keyboard.press("Enter")
    page.keyboard.type("third")
    time.sleep(2)  # time for a submission to come back, had one been sent
    assert box.input_value() == "first line\nsecond line\nthird"
    assert len(stored_rankings(server)) == before and "Saved" not in page.locator("#message").inner_text()
    box.press("Control+Enter")  # what the placeholder says submits
    message(page, "Saved")
    (row,) = [r for r in stored_rankings(server) if r["annotator"] == "dave"]
    assert row["rationale"] == "first line\nsecond line\nthird"
    page.context.close()


def test_summary_messages_in_view_and_scroll_to_the_next_task(browser, server) -> None:
    page = login(browser, server, "carol", viewport=(1000, 560))  # short: the page scrolls
    assert page.locator("#submit-btn").inner_text().strip() == "Submit ranking"  # text labels, no emoji
    assert page.locator("#skip-btn").inner_text().strip() == "Skip this task"
    summary = page.locator("#ranking-summary")
    wait_text(summary, "no answer ranked yet")
    pick(page, 1, 1)
    wait_text(summary, "Ranking: B · not ranked yet: A, C")
    pick(page, 0, 2)
    pick(page, 2, 2)
    wait_text(summary, "Ranking: B > A = C")
    pick(page, 2, 3)  # 2, 1, 3
    wait_text(summary, "Ranking: B > A > C")
    # An incomplete ranking, submitted from the bottom of the page: the refusal shows next to the button.
    page.reload()  # the same task, with no rank chosen
    page.locator("#progress").get_by_text("done").wait_for(timeout=30_000)
    pick(page, 0, 1)
    page.evaluate("window.scrollTo(0, document.body.scrollHeight)")
    assert page.evaluate("window.scrollY") > 0
    page.locator("#submit-btn").click()
    message(page, "Not saved")
    assert in_view(page, "#message .error") and in_view(page, "#submit-btn")
    assert page.evaluate("window.scrollY") > 0  # a refusal keeps the place on the page
    # Complete it from the top of the page: the bar, with its message and buttons, is still in view.
    page.evaluate("window.scrollTo(0, 0)")
    assert in_view(page, "#submit-btn") and in_view(page, "#message")
    pick(page, 1, 2)
    pick(page, 2, 2)
    page.evaluate("window.scrollTo(0, document.body.scrollHeight)")
    assert page.evaluate("window.scrollY") > 0
    page.locator("#submit-btn").click()
    message(page, "Saved")
    page.wait_for_function("window.scrollY === 0", timeout=10_000)  # the next task is read from its top
    assert in_view(page, "#message") and in_view(page, "#task-header")
    wait_text(summary, "no answer ranked yet")  # the new task starts with an empty summary
    assert len([r for r in stored_rankings(server) if r["annotator"] == "carol"]) == 1
    page.context.close()


def checked_ranks(page, n: int = 3) -> list[str | None]:
    """The rank chosen in each answer column (None: none chosen), as the page shows it."""
    return [page.evaluate("(slot) => document.querySelector(`#rank-${slot} input[type=radio]:checked`)?.value ?? null",
                          slot) for slot in range(n)]


def test_edit_a_submission_until_it_is_exported(browser, server) -> None:
    from lexalign.reward.prefs import export_preferences

    page = login(browser, server, "erin")
    for slot, rank in enumerate([1, 2, 3]):
        pick(page, slot, rank)
    page.locator("#submit-btn").click()
    message(page, "Saved")
    with open_store(server.store_url) as store:  # an admin exports: that first submission is locked now
        (first,) = store.my_rankings("erin")
        export_preferences(store, server.root / "erin-export", save_dataset=False, feedback=False, actor="root")
    page.locator("#progress").get_by_text("1 of").wait_for(timeout=20_000)
    for slot, rank in enumerate([1, 2, 2]):
        pick(page, slot, rank)
    page.locator("#rationale textarea").fill("B and C are equally weak.")
    page.locator("#flags-1").get_by_text("risky or misleading advice").click()   # on answer B
    page.locator("#submit-btn").click()
    page.locator("#progress").get_by_text("2 of").wait_for(timeout=20_000)  # "Saved" is still there from before
    with open_store(server.store_url) as store:
        second = store.my_rankings("erin")[0]
        assert second["prompt_id"] != first["prompt_id"] and second["editable"]
        assert not next(r for r in store.my_rankings("erin") if r["task_id"] == first["task_id"])["editable"]

    page.get_by_role("tab", name="My submissions").click()
    table = wait_text(page.locator("#my-table"), "locked: exported by an admin on")
    assert "can edit" in table and "A=1, B=2, C=2" in table
    page.locator("#edit-choice input").click()
    options = page.get_by_role("option")
    options.first.wait_for(timeout=10_000)
    assert options.count() == 1 and second["prompt_id"] in options.first.inner_text()  # not the exported one
    options.first.click()
    page.locator("#edit-btn").click()
    assert "was withdrawn" in message(page, "was withdrawn")
    page.get_by_role("tab", name="Rank", selected=True).wait_for(timeout=10_000)  # back on the Rank tab
    assert second["prompt_id"] in page.locator("#task-header").inner_text()
    assert checked_ranks(page) == ["1", "2", "2"]  # everything as submitted, ready to change
    shown_answers_at_edit = [_stored_text(shown) for shown in shown_answers(page)]
    assert page.locator("#rationale textarea").input_value() == "B and C are equally weak."
    assert page.locator(".flags input[type=checkbox]:checked").count() == 1      # the flag, back under B
    assert page.locator("#flags-1 input[type=checkbox]:checked").count() == 1
    wait_text(page.locator("#ranking-summary"), "Ranking: A > B = C")
    assert len([r for r in stored_rankings(server) if r["annotator"] == "erin"]) == 1  # only the exported one

    pick(page, 0, 2)
    pick(page, 1, 1)  # now B is best: A=2, B=1, C=2
    page.locator("#submit-btn").click()
    message(page, "Saved")
    page.get_by_role("tab", name="My submissions").click()
    table = wait_text(page.locator("#my-table"), "A=2, B=1, C=2")
    assert "A=1, B=2, C=2" not in table and table.count(second["prompt_id"]) >= 1
    with open_store(server.store_url) as store:
        mine = {r["prompt_id"]: r for r in store.my_rankings("erin")}
        (event,) = [e for e in store.audit_events("ranking_withdrawn") if e["actor"] == "erin"]
    assert mine[first["prompt_id"]]["ranks"] == first["ranks"]  # the exported one is untouched
    redone = mine[second["prompt_id"]]
    assert redone["ranks"] != second["ranks"] and redone["rationale"] == "B and C are equally weak."
    assert sorted(redone["ranks"]) == [1, 2, 2]
    (flag,) = redone["flags"]                                  # B's flag, kept through the edit, on B's answer
    assert flag == f"risky_advice@{redone['texts'].index(shown_answers_at_edit[1])}"
    assert event["detail"]["task_id"] == second["task_id"] and event["detail"]["ranks"] == second["ranks"]
    page.context.close()


def test_concurrent_http_submissions_against_the_running_app(server) -> None:
    """10 annotators submit at once over HTTP (Gradio's queue API, as the page does): every ack stored once."""
    import threading

    from gradio_client import Client

    names = [f"http{i}" for i in range(10)]
    with open_store(server.store_url) as store:
        for name in names:
            store.add_annotator(name, f"{name}-password")
        # 30 submissions, plus the task each annotator is handed after its last one (every ack loads the next
        # task): without spares, an early finisher holds a task another annotator still needs.
        for i in range(30 + len(names)):
            store.add_task(f"http-{i}", "Which law governs?\n\nExcerpt:\nNew York law governs.",
                           [f"New York ({i}).", f"Delaware ({i}).", f"Not present ({i})."], k=1)
        before = store.counts()["rankings"]
    acks: dict[str, int] = {}
    errors: list[BaseException] = []
    barrier = threading.Barrier(len(names))

    def annotate(name: str) -> None:
        try:
            client = Client(server.url, auth=(name, f"{name}-password"), verbose=False)
            client.predict(api_name="/load_task")
            barrier.wait()
            for _ in range(3):
                result = client.predict(1, 2, 2, None, None, None, False, f"by {name}", *[[]] * 6, [],
                                        api_name="/submit")   # flags: on each answer, then on the whole task
                assert result[0].startswith("Saved"), result[0]
                acks[name] = acks.get(name, 0) + 1
        except BaseException as err:  # noqa: BLE001 - reported below
            errors.append(err)

    threads = [threading.Thread(target=annotate, args=(n,)) for n in names]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors[:3]
    with open_store(server.store_url) as store:
        assert store.counts()["rankings"] == before + 30
        for name in names:
            mine = store.my_rankings(name)
            assert len(mine) == acks[name] == 3
            assert all(r["rationale"] == f"by {name}" for r in mine)


def test_sigkill_of_the_app_server_mid_load_keeps_every_acknowledged_submission(tmp_path: Path) -> None:
    """HTTP clients record each "Saved" reply; the server is killed with SIGKILL while they submit."""
    import re
    import signal
    import threading

    from gradio_client import Client

    url = f"sqlite:///{tmp_path / 'kill.db'}"
    names = [f"k{i}" for i in range(8)]
    with open_store(url) as store:
        for name in names:
            store.add_annotator(name, f"{name}-password")
        for i in range(400):
            store.add_task(f"kill-{i}", "Which law governs?", [f"A{i}", f"B{i}", f"C{i}"], k=2)
    proc, base = start_annotate(tmp_path, url)
    acked: list[tuple[str, str]] = []  # (annotator, prompt_id) whose submission the server confirmed
    lock = threading.Lock()
    stop = threading.Event()

    def annotate(name: str) -> None:
        try:
            client = Client(base, auth=(name, f"{name}-password"), verbose=False)
            outputs = client.predict(api_name="/load_task")
            while not stop.is_set():
                prompt_id = re.search(r"Task `([^`]+)`", outputs[1]).group(1)
                outputs = client.predict(1, 2, 3, None, None, None, False, "", *[[]] * 6, [],
                                         api_name="/submit")   # flags: on each answer, then on the whole task
                if not outputs[0].startswith("Saved"):
                    return
                with lock:
                    acked.append((name, prompt_id))
        except Exception:  # noqa: BLE001 - the server was killed under it: expected
            return

    threads = [threading.Thread(target=annotate, args=(n,), daemon=True) for n in names]
    for t in threads:
        t.start()
    deadline = time.monotonic() + 120
    while len(acked) < 60 and time.monotonic() < deadline:
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)  # mid-load: requests are in flight
    proc.wait(timeout=30)
    stop.set()
    for t in threads:
        t.join(timeout=30)
    assert len(acked) >= 60, (tmp_path / "server.log").read_text()[-3000:]
    with open_store(url) as store:
        stored = {(r.annotator, t.prompt_id) for t in store.task_rankings() for r in t.rankings}
        counts = store.counts()
    missing = [a for a in acked if a not in stored]
    assert not missing, f"{len(missing)} acknowledged submissions lost: {missing[:5]}"
    assert len(stored) >= len(acked) and counts["rankings"] < 400 * 2  # killed mid-load, nothing lost


def test_admin_adds_and_disables_an_account_in_the_page(browser, server) -> None:
    """The admin adds an account in the Admin tab, the new annotator signs in with it, the admin disables it and
    its password no longer works; both changes are audited with the admin as the actor. (Last in this module:
    the new annotator takes a task.)"""
    page = login(browser, server, "root")
    page.get_by_role("tab", name="Admin").click()
    accounts = page.locator("#accounts-table")
    wait_text(accounts, "alice")   # filled when the tab opens
    page.locator("#account-username").locator("input, textarea").first.fill("grace")
    password_box = page.locator("#account-password").locator("input, textarea").first
    password_box.fill("grace-password")
    page.locator("#account-add").click()
    wait_text(page.locator("#accounts-message"), "Added the annotator account grace")
    wait_text(accounts, "grace")
    assert password_box.input_value() == ""   # the password does not stay on the page
    with open_store(server.store_url) as store:
        assert store.get_annotator("grace").role == "annotator"
    grace = login(browser, server, "grace", password="grace-password")
    assert grace.get_by_role("tab", name="Admin").count() == 0
    grace.context.close()

    assert page.locator("#account-choice input").input_value() == "grace"   # the account just added is chosen
    page.locator("#account-disable").click()
    wait_text(page.locator("#accounts-message"), "Disabled grace")
    with open_store(server.store_url) as store:
        assert store.verify_login("grace", "grace-password") is None
        created = [e["actor"] for e in store.audit_events("annotator_created") if e["detail"]["username"] == "grace"]
        assert created == ["root"]
        assert [(e["actor"], e["detail"]["username"]) for e in store.audit_events("annotator_deactivated")] == [
            ("root", "grace")]
    page.context.close()
