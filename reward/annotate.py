"""The ranking app: lawyers rank candidate answers in a Gradio app backed by the preference store.

    lexalign annotate [--config configs/annotate.yaml] [key=value ...]

Login is Gradio's own (``launch(auth=callable)``) checked against the store's argon2 password hashes; every
handler takes the user from the server-side session (``gr.Request.username``), never from the page. Each
annotator sees one task at a time (the contract excerpt, the question and N candidate answers side by side,
in an order shuffled per assignment so position does not bias the ranking, with the guidelines in a column
beside them on a desktop-wide window and below them on a narrower one), gives every answer a rank
(1 = best; equal ranks for ties), may tick "none acceptable", write a rationale, flag answers (under each
answer) and flag the task itself (under the answers: a missing or unreadable excerpt), then submits
(button, or Ctrl/Cmd+Enter anywhere; Enter in the rationale only starts a new line) or skips. The submit bar
(a live summary such as "A > C = D > B", messages, Submit and Skip) stays at the bottom of the window. The
task, its candidate ids and the one-time form token live in server-side session state; the store validates
everything again and stores a submission in one transaction, or nothing with a clear message. Tasks are
titled by kind, clause category and contract (from the task's meta); errors and "My submissions" name the
answers by the letters they had on screen.

"My submissions" lists the annotator's own rankings. Until an admin exports, an annotator may take one back
("Withdraw and rank again"): the store withdraws it in one transaction and the task comes back on the Rank tab
with the previous ranks, flags and rationale filled in, to change and submit again. Exported (and imported)
rankings are shown as locked, with the reason.

Model and user text is inert: it is HTML-escaped before it reaches Markdown (which also runs Gradio's
sanitizer), and free text (rationales) with markup is refused. Admins (role ``admin``) also get an Admin
tab, filled when the page opens: progress per annotator, agreement (Krippendorff's alpha, Kendall's W, said in
words against the usual thresholds, with the most disputed tasks by title), the export (by task source,
annotator kind, annotator and submission days) and the accounts (add one, disable or enable it, set its
password; every change is in the audit log with the admin as its actor, and nobody can disable themself). The
tab is hidden for others, and every admin handler checks the role on the server, so a hand-made request from an
annotator's session is refused (and audited) before anything changes.
"""

import html
import logging
import os
import random
import string
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from lexalign.config import Problem, load_config, problem_if
from lexalign.data.store import DEFAULT_URL, Store, StoreError, SubmissionError, TaskView, WithdrawnRanking
from lexalign.data.store_input import (
    ANSWER_FLAGS,
    DAY_FORMAT,
    DEFAULT_RATIONALE_MAX,
    FLAGS,
    MIN_PASSWORD_CHARS,
    ROLES,
    TASK_FLAGS,
    check_ranks,
    split_flags,
)

if TYPE_CHECKING:  # numpy is imported only when the Admin tab needs agreement
    from lexalign.reward.agreement import AgreementSummary
    from lexalign.reward.prefs import ExportSummary

logger = logging.getLogger(__name__)

DEFAULT_GUIDELINES = """\
**What you rank.** Each task shows a contract excerpt, a question about it and several answers written by
the assistant (and sometimes by other systems). Rank the answers as a careful reviewing lawyer would.

1. **Correct before complete.** An answer that quotes or invents contract text that is not in the excerpt,
   or misstates the law, ranks below a shorter answer that is right. If the clause is absent, the right
   answer says so ("Not present.").
2. **Ranks.** Give every answer a rank: **1 = best**. Answers of equal quality get the **same rank** (ties
   are fine); use the next number for the next-best group (1, 2, 2, 3 — no gaps).
3. **None acceptable.** Tick it when you would not send any of the answers to a client. Still rank them if
   one is less bad; otherwise leave them all tied.
4. **Flags.** Under each answer, mark an invented clause, wrong law, risky advice or personal data in it.
   Under the answers, **task is broken** flags the task itself (the excerpt is missing or unreadable): tick
   it, tick **None acceptable** if you cannot rank the answers (they stay tied) and submit, so an admin can
   fix the task.
5. **Rationale** (optional, plain text): one or two sentences on what decided your ranking. Do not paste
   personal data.
6. **Skip** a task you cannot judge (outside your practice area); it goes to a colleague.

Keyboard: type the ranks in the order of the answers (**2 1 3 3** gives A=2, B=1, C=3, D=3); a digit goes to
the answer whose rank has the focus (**Tab** / **Shift+Tab** move it), else to the first answer without a rank.
**Ctrl+Enter** (Cmd+Enter) submits. **Enter** in the rationale starts a new line.
"""

_THEME_FONTS = ["ui-sans-serif", "system-ui", "Segoe UI", "Roboto", "Helvetica", "Arial", "sans-serif"]
_MONO_FONTS = ["ui-monospace", "SFMono-Regular", "Menlo", "Consolas", "monospace"]

KEYBOARD_JS = """
() => {
  document.addEventListener('keydown', (event) => {
    if (event.key === 'Enter' && (event.ctrlKey || event.metaKey)) {
      const button = document.querySelector('#submit-btn');
      if (button && !button.disabled) { event.preventDefault(); button.click(); }
    }
  });
  // Digits rank: 1..N goes to the answer whose rank choices hold the focus, else to the first answer without a
  // rank; the focus then moves to the next answer without one, so typing "2 1 3 3" ranks A, B, C, D in turn.
  // Never while typing text (rationale, edit box), and only on the Rank tab (hidden answers have no layout).
  document.addEventListener('keydown', (event) => {
    if (!/^[1-9]$/.test(event.key) || event.ctrlKey || event.metaKey || event.altKey) { return; }
    const typing = event.target instanceof Element && event.target.closest('textarea, input:not([type=radio]):not([type=checkbox])');
    if (typing) { return; }
    const groups = [...document.querySelectorAll('[id^="rank-"]')]
      .filter((el) => el.offsetParent !== null && el.querySelector('input[type=radio]'));
    const open = (el) => !el.querySelector('input[type=radio]:checked');
    const target = groups.find((el) => el.contains(document.activeElement)) || groups.find(open);
    const choice = target && target.querySelector(`input[type=radio][value="${event.key}"]`);
    if (!choice) { return; }
    event.preventDefault();
    choice.click();
    const next = groups.slice(groups.indexOf(target) + 1).find(open);
    (next ? next.querySelector('input[type=radio]') : choice).focus();
  });
  // Gradio's multi-line textbox turns Shift+Enter into a submit and swallows the line break. In the
  // rationale Enter and Shift+Enter only break the line: stop the key before it reaches that handler
  // (capture phase on window runs first; the browser's default, the new line, still happens).
  window.addEventListener('keypress', (event) => {
    const inRationale = event.target instanceof Element && event.target.closest('#rationale');
    if (event.key === 'Enter' && inRationale && !event.ctrlKey && !event.metaKey) {
      event.stopImmediatePropagation();
    }
  }, true);
}
"""

ERROR_CLASS = "error"

# Runs after Submit/Skip: a new task is on screen unless the message is an error, so start it from the top.
SCROLL_TO_NEW_TASK_JS = f"""
(message) => {{
  if (typeof message === 'string' && !message.includes("class='{ERROR_CLASS}'")) {{ window.scrollTo(0, 0); }}
}}
"""

# Runs after "Withdraw and rank again": on success (the note next to the button is cleared) the task is back on
# the Rank tab, so start it from the top; a refusal stays where it was clicked, next to its reason.
SCROLL_AFTER_EDIT_JS = """
(note) => { if (!note) { window.scrollTo(0, 0); } }
"""

CSS = """
.candidate { border: 1px solid var(--border-color-primary); border-radius: 8px; padding: 8px; }
#message .error, #admin-export-text .error, #accounts-message .error {
  color: var(--error-text-color, #b91c1c); font-weight: 600; }
/* Messages sit next to Submit and the bar stays on screen, so a refusal is seen where the click was.
   Gradio's container clips with overflow: hidden, which makes it the bar's scroll box and stops the sticking;
   clip cuts the same overflow without being a scroll box. */
.gradio-container { overflow: clip !important; }
#submit-bar { position: sticky; bottom: 0; z-index: 50; background: var(--background-fill-primary);
              border-top: 1px solid var(--border-color-primary); padding: 8px 4px; }
#ranking-summary { font-weight: 600; }
/* The guidelines column sits beside the task from 1280 px (Gradio's container is 1280 px wide there; the two
   columns' minimum widths do not fit the narrower containers, so there the guidelines wrap below the task).
   Beside the task it stays in view while the annotator scrolls, and scrolls itself when it is long. */
@media (min-width: 1280px) {
  #guidelines-column { position: sticky; top: 0; max-height: 100vh; overflow-y: auto; }
}
"""

# How a task's kind (meta.task) reads in its title.
TASK_KINDS: dict[str, str] = {
    "extract": "Clause extraction",
    "presence": "Clause presence",
    "normalize": "Normalized answer",
    "unfair": "Unfair-terms check",
}
# meta keys that name the contract or document a task comes from, most specific first
_DOCUMENT_KEYS = ("document", "contract", "doc_name", "doc_id", "company")
_TITLE_PART_MAX = 80
_ANSWER_START_CHARS = 32
DISPUTED_SHOWN = 10  # tasks listed under "Most disputed tasks" in the Admin tab
# Minimum widths (px) of the Rank tab's two columns: together (with the gap) wider than Gradio's 1024 px
# container and narrower than its 1280 px one, so the guidelines are beside the task on a desktop-wide window.
TASK_COLUMN_MIN_WIDTH = 760
GUIDELINES_MIN_WIDTH = 280
MY_SUBMISSIONS_SHOWN = 50  # latest own rankings in "My submissions" (and offered for editing)


@dataclass
class AnnotateConfig:
    """``configs/annotate.yaml``: where the store is, how the app listens and what it shows."""

    store: str = DEFAULT_URL
    host: str = "127.0.0.1"          # 0.0.0.0 to serve a team (put it behind HTTPS)
    port: int = 7860
    k: int = 3                       # annotators wanted per task added from tasks_file
    tasks_file: str | None = None    # JSONL of tasks (prefs add-tasks format) added at start; known prompt_ids skipped
    guidelines: str = DEFAULT_GUIDELINES
    guidelines_file: str | None = None  # Markdown file that replaces `guidelines`
    rationale_max_chars: int = DEFAULT_RATIONALE_MAX
    max_candidates: int = 6          # answer columns the page has room for
    shuffle_candidates: bool = True  # per-assignment order, so position does not bias rankings
    concurrency_limit: int = 8       # submissions processed at once (the store serializes SQLite writes)
    sqlite_synchronous: Literal["FULL", "NORMAL"] = "FULL"  # see data/store.py: FULL survives power loss too
    export_dir: str = "runs/prefs_export"  # where the admin's export button writes
    export_min_annotators: int = 1
    title: str = "LexAlign: rank contract-review answers"

    def problems(self) -> list[Problem]:
        found = []
        found += problem_if(not (self.store.startswith("sqlite") or self.store.startswith("postgresql")),
                            "store", self.store, "expected a sqlite:///FILE or postgresql+DRIVER://... URL")
        found += problem_if(not 0 < self.port < 65536, "port", self.port, "expected a TCP port 1-65535")
        found += problem_if(self.k < 1, "k", self.k, "expected at least 1 annotator per task")
        found += problem_if(not 1 <= self.rationale_max_chars <= 100_000, "rationale_max_chars",
                            self.rationale_max_chars, "expected 1-100000")
        found += problem_if(not 2 <= self.max_candidates <= 12, "max_candidates", self.max_candidates, "expected 2-12")
        found += problem_if(self.concurrency_limit < 1, "concurrency_limit", self.concurrency_limit, "expected >= 1")
        found += problem_if(self.export_min_annotators < 1, "export_min_annotators", self.export_min_annotators,
                            "expected >= 1")
        if self.guidelines_file is not None:
            found += problem_if(not Path(self.guidelines_file).is_file(), "guidelines_file", self.guidelines_file,
                                "file not found; give a Markdown file or remove the key")
        if self.tasks_file is not None and not self.tasks_file.startswith("shipped:"):
            found += problem_if(not Path(self.tasks_file).is_file(), "tasks_file", self.tasks_file,
                                "file not found; give a JSONL task file or remove the key")
        return found

    def guidelines_text(self) -> str:
        if self.guidelines_file:
            return Path(self.guidelines_file).read_text(encoding="utf-8")
        return self.guidelines


# --------------------------------------------------------------------------- rendering helpers


def inert(text: str) -> str:
    """Text for a Markdown component: every HTML special character escaped, so nothing in it runs."""
    return html.escape(text or "", quote=True)


def _letters(n: int) -> list[str]:
    return list(string.ascii_uppercase[:n])


def _display_order(view: TaskView, shuffle: bool) -> list[int]:
    return _order_for(len(view.candidates), view.form_token, shuffle)


def _order_for(n: int, form_token: str, shuffle: bool) -> list[int]:
    """Candidate positions in the order shown; the form token fixes it, so a stored ranking can show it again."""
    order = list(range(n))
    if shuffle:
        random.Random(form_token).shuffle(order)  # stable for this assignment, differs across annotators
    return order


def _error(text: str) -> str:
    """A message shown as an error (already inert text inside)."""
    return f"<span class='{ERROR_CLASS}'>{text}</span>"


def _md_text(text: str) -> str:
    """Inert text whose Markdown punctuation shows as typed (file names with * or _ stay as they are)."""
    escaped = "".join(f"\\{ch}" if ch in "\\`*_[]#|~" else ch for ch in text)
    return inert(escaped)


def _rank_value(rank: Any) -> int | None:
    """A rank as chosen on the page; None when no rank is chosen (or it is not a number)."""
    if rank is None or rank == "" or isinstance(rank, bool):
        return None
    try:
        return int(rank)
    except (TypeError, ValueError):
        return None


def ranking_summary(ranks: Sequence[Any], n: int) -> str:
    """The ranking as the annotator reads it, best first: "A > C = D > B" (ties joined by "="), then the
    answers without a rank yet."""
    letters = _letters(n)
    groups: dict[int, list[str]] = {}
    unranked: list[str] = []
    for slot, letter in enumerate(letters):
        value = _rank_value(ranks[slot]) if slot < len(ranks) else None
        if value is None:
            unranked.append(letter)
        else:
            groups.setdefault(value, []).append(letter)
    if not groups:
        return "Ranking: no answer ranked yet (1 = best)."
    text = "Ranking: " + " > ".join(" = ".join(groups[rank]) for rank in sorted(groups))
    if unranked:
        text += f" · not ranked yet: {', '.join(unranked)}"
    return text


def chosen_values(chosen: Sequence[str] | str | None) -> list[str]:
    """A checkbox group's ticked values as a list (an API client may send a single value as plain text)."""
    if not chosen:
        return []
    return [chosen] if isinstance(chosen, str) else list(chosen)


def export_scope(summary: "ExportSummary", kinds: Sequence[str] | None) -> str:
    """What an admin export took, in words for the Admin tab: " (sources `app`; annotators human; ranked by
    `alice`; submitted 2025-03-01 to 2025-03-02 UTC)", or "" when it took everything."""
    chosen = []
    if summary.sources:
        chosen.append("sources " + ", ".join(f"`{inert(name)}`" for name in summary.sources))
    if kinds:
        chosen.append("annotators " + ", ".join(inert(kind) for kind in kinds))
    if summary.annotators:
        chosen.append("ranked by " + ", ".join(f"`{inert(name)}`" for name in summary.annotators))
    first, last = summary.submitted_from, summary.submitted_to
    if first or last:
        days = f"{first} to {last}" if first and last else (f"from {first}" if first else f"until {last}")
        chosen.append(f"submitted {days} UTC")
    return f" ({'; '.join(chosen)})" if chosen else ""


def lettered_ranks(ranks: Sequence[int], letters: Sequence[str]) -> str:
    """Ranks as entered, in the order shown: "A=1, B=4, C=3"."""
    return ", ".join(f"{letter}={rank}" for letter, rank in zip(letters, ranks))


def _short(text: str, limit: int) -> str:
    flat = " ".join(str(text).split())
    return flat if len(flat) <= limit else flat[:limit - 1].rstrip() + "…"


def task_title(meta: Mapping[str, Any], source: str) -> str:
    """A title an annotator can read: the task's kind and clause category (meta.task, meta.category) and the
    contract or document it comes from; the task's source when meta names neither kind nor category."""
    task = meta.get("task")
    kind = TASK_KINDS.get(task, task.strip().capitalize()) if isinstance(task, str) and task.strip() else None
    category = meta.get("category").strip() if isinstance(meta.get("category"), str) else None
    if kind and category:
        head = f"{kind}: {category}"
    else:
        head = kind or category or f"Task from {source or 'an unknown source'}"
    document = next((meta[key].strip() for key in _DOCUMENT_KEYS
                     if isinstance(meta.get(key), str) and meta[key].strip()), None)
    head = _short(head, _TITLE_PART_MAX)
    return f"{head} — {_short(document, _TITLE_PART_MAX)}" if document else head


def agreement_markdown(summary: "AgreementSummary", limit: int = DISPUTED_SHOWN) -> str:
    """The Admin tab's agreement: the numbers, what they mean and where they stand (in words), and the most
    disputed tasks by readable title, so an admin knows which tasks to discuss with the annotators."""
    lines = [inert(summary.as_text())]
    if not summary.tasks_with_overlap:
        return lines[0]
    lines.append(inert(summary.explanation()))
    disputed = summary.most_disputed(limit)
    if disputed:
        lines.append("**Most disputed tasks** (lowest Kendall's W first):")
        lines.append("\n".join(
            f"{number}. {_md_text(task_title(t.get('meta') or {}, t.get('source') or ''))} "
            f"(task `{inert(str(t['prompt_id']))}`): W = {t['kendall_w']:.3f}, {t['annotators']} annotators"
            for number, t in enumerate(disputed, 1)))
    else:
        lines.append("No task is disputed: every task with overlap was ranked the same way by its annotators.")
    return "\n\n".join(lines)


def question_and_excerpt(view: TaskView) -> tuple[str, str]:
    """What to show above the answers: the question and the contract excerpt (from meta, else the prompt)."""
    from lexalign.data.prompts import CLAUSE_MARKER, EXCERPT_MARKER

    question = view.meta.get("question") if isinstance(view.meta.get("question"), str) else None
    excerpt = view.meta.get("excerpt") if isinstance(view.meta.get("excerpt"), str) else None
    prompt = view.prompt
    user_text = prompt if isinstance(prompt, str) else next(
        (m["content"] for m in reversed(prompt) if m.get("role") == "user"), "")
    if question is None or excerpt is None:
        for marker in (EXCERPT_MARKER, CLAUSE_MARKER):
            if marker in user_text:
                head, tail = user_text.split(marker, 1)
                question = question if question is not None else head
                excerpt = excerpt if excerpt is not None else tail
                break
    return (question if question is not None else user_text), (excerpt or "")


@dataclass
class Session:
    """Per-browser-session state (kept on the server by gr.State): the task on screen and its token."""

    user: str
    task_id: int
    form_token: str
    slots: list[int] = field(default_factory=list)  # candidate id shown in each column


class AnnotateApp:
    """The Gradio Blocks app and its handlers (each handler checks the logged-in user itself)."""

    def __init__(self, store: Store, config: AnnotateConfig) -> None:
        self.store = store
        self.config = config
        self.guidelines = config.guidelines_text()

    # ----------------------------------------------------------------------- auth

    def auth(self, username: str, password: str) -> bool:
        """Gradio's login check: an active account with this password (argon2)."""
        try:
            return self.store.verify_login(username, password) is not None
        except StoreError:
            logger.exception("login check failed")
            return False

    @staticmethod
    def _user(request: Any) -> str | None:
        return getattr(request, "username", None) if request is not None else None

    def _require_admin(self, request: Any, what: str) -> str:
        import gradio as gr

        user = self._user(request)
        if not self.store.is_admin(user):
            self.store.audit(user or "anonymous", "admin_denied", {"what": what})
            raise gr.Error(f"Only admins can {what}. Ask an admin if you need this.", print_exception=False)
        return user  # type: ignore[return-value]

    # ----------------------------------------------------------------------- task rendering

    def _progress_text(self, user: str) -> str:
        p = self.store.progress(user)
        skipped = f" · {p.skipped} skipped" if p.skipped else ""
        return f"**{p.done} of {p.total} done**{skipped} · signed in as `{inert(user)}`"

    def _shown_ranks(self, ranks: Sequence[int], texts: Sequence[str], form_token: str | None) -> tuple[str, str]:
        """(ranks, answers) cells of a past submission, in the order its answers were shown ("A=1, B=3, C=2";
        "A: New York law…"). Without a form token (an imported ranking) there is no shown order: each rank
        is labelled by the start of its answer instead."""
        n = len(ranks)
        order = self._shown_order(n, form_token) if n == len(texts) else None
        if order is None:
            cells = [f'"{_short(text, _ANSWER_START_CHARS)}"={rank}' for text, rank in zip(texts, ranks)]
            return ", ".join(cells) or " ".join(map(str, ranks)), ""
        letters = _letters(n)
        shown = [ranks[i] for i in order]
        answers = " · ".join(f"{letter}: {_short(texts[i], _ANSWER_START_CHARS)}"
                             for letter, i in zip(letters, order))
        return lettered_ranks(shown, letters), answers

    def _shown_order(self, n: int, form_token: str | None) -> list[int] | None:
        """The stored index of the answer shown in each place (A, B, ...) of a past submission; None when there
        was no shown order (an imported ranking has no form token) or the page could not show that many."""
        if not form_token or n > self.config.max_candidates:
            return None
        return _order_for(n, form_token, self.config.shuffle_candidates)

    def _shown_flags(self, flags: Sequence[str], n: int, form_token: str | None) -> str:
        """Readable flags of a past submission, each answer's under the letter it was shown with
        ("B: wrong law or jurisdiction"; an imported ranking has no shown order: "answer 2: ...")."""
        whole, per_answer = split_flags(flags)
        cells = [FLAGS.get(flag, flag) for flag in whole]
        shown_at = {stored: slot for slot, stored in enumerate(self._shown_order(n, form_token) or [])}
        letters = _letters(max(n, 1))
        for position in sorted(per_answer, key=lambda pos: shown_at.get(pos, pos)):
            where = letters[shown_at[position]] if position in shown_at else f"answer {position + 1}"
            cells += [f"{where}: {FLAGS.get(flag, flag)}" for flag in per_answer[position]]
        return ", ".join(cells)

    def _my_rows(self, user: str) -> list[list[Any]]:
        return self._my_submissions(user)[0]

    def _my_submissions(self, user: str) -> tuple[list[list[Any]], list[tuple[str, int]]]:
        """"My submissions": the table rows, and (label, task id) of the ones the annotator may still edit.
        One store read for both, so the table and the Edit choices always agree. The task id names the choice:
        an annotator has one ranking per task, and a ranking id can be reused once its ranking is withdrawn."""
        rows: list[list[Any]] = []
        editable: list[tuple[str, int]] = []
        for r in self.store.my_rankings(user, limit=MY_SUBMISSIONS_SHOWN):
            submitted = r["submitted_at"].strftime("%Y-%m-%d %H:%M") if r["submitted_at"] else ""
            rationale = (r["rationale"] or "")
            ranks, answers = self._shown_ranks(list(r["ranks"]), r["texts"], r["form_token"])
            flags = self._shown_flags(r["flags"] or [], len(r["texts"]), r["form_token"])
            title = task_title(r["meta"] or {}, r["source"])
            status = "can edit" if r["editable"] else f"locked: {r['locked_reason']}"
            rows.append([title, submitted, ranks, answers, "yes" if r["none_acceptable"] else "", flags,
                         rationale[:200] + ("…" if len(rationale) > 200 else ""), r["prompt_id"], status])
            if r["editable"]:
                editable.append((f"{r['prompt_id']} · {_short(title, 60)} · {submitted} · {ranks}",
                                 int(r["task_id"])))
        return rows, editable

    @staticmethod
    def _task_flag_choices(ticked: Sequence[str]) -> Any:
        """The flags on the whole task with ``ticked`` ticked: the task flags, plus any other flag a past
        submission gave the whole task (shown while it is edited, so submitting again keeps it unless unticked)."""
        import gradio as gr

        kept = [flag for flag in dict.fromkeys(ticked) if flag in FLAGS]
        keys = list(dict.fromkeys([*TASK_FLAGS, *kept]))
        return gr.CheckboxGroup(choices=[(FLAGS[key], key) for key in keys], value=kept)

    @staticmethod
    def _edit_choices(editable: list[tuple[str, int]]) -> Any:
        import gradio as gr

        info = ("Submissions an admin has not exported yet." if editable else
                "Nothing to edit: every submission here is exported or locked (see the last column).")
        return gr.Dropdown(choices=editable, value=None, info=info)

    def _render(self, c: dict[str, Any], user: str | None, message: str = "", *, view: TaskView | None = None,
                prefill: WithdrawnRanking | None = None) -> dict[Any, Any]:
        """Updates that show the user's current task (or why there is none); ``view`` shows that task instead,
        with ``prefill``'s ranks, flags and rationale entered (a withdrawn ranking being edited)."""
        import gradio as gr

        n_max = self.config.max_candidates
        updates: dict[Any, Any] = {c["message"]: message}
        if view is None and user:
            try:
                view = self.store.next_task_for(user)
            except StoreError as err:
                updates[c["message"]] = _error(inert(str(err)))
        if view is not None and len(view.candidates) > n_max:
            updates[c["message"]] = _error(f"Task {inert(view.prompt_id)} has {len(view.candidates)} answers but "
                                           f"this page shows at most {n_max}; ask an admin to raise "
                                           "max_candidates. Skip it for now.")
        summary = c.get("summary")  # the live ranking summary, when the page has one
        task_flags = c.get("task_flags")  # the flags on the whole task, when the page has them
        if view is None:
            empty = "All done: no task is waiting for you. Thank you!" if user else "Not signed in."
            updates.update({
                c["task_header"]: f"### {empty}", c["question"]: "", c["excerpt"]: gr.Textbox(value="", visible=False),
                c["state"]: None, c["submit"]: gr.Button(interactive=False), c["skip"]: gr.Button(interactive=False),
                c["none_acceptable"]: False, c["rationale"]: "",
            })
            if summary is not None:
                updates[summary] = ""
            if task_flags is not None:
                updates[task_flags] = self._task_flag_choices([])
            for i in range(n_max):
                updates[c["columns"][i]] = gr.Column(visible=False)
                updates[c["ranks"][i]] = gr.Radio(choices=[], value=None)
                updates[c["answer_flags"][i]] = []
        else:
            order = _display_order(view, self.config.shuffle_candidates)[:n_max]
            question, excerpt = question_and_excerpt(view)
            n = len(order)
            letters = _letters(n)
            choices = [(str(r), r) for r in range(1, n + 1)]
            # Ranks are stored per candidate id, so they land on the right answer whatever column it is in.
            before = [prefill.ranks.get(view.candidates[i].id) for i in order] if prefill else [None] * n
            on_task, flagged = split_flags(prefill.flags) if prefill else ([], {})  # flagged: position -> flags
            updates.update({
                # the readable title first; the id stays as the reference to quote to an admin
                c["task_header"]: (f"### {_md_text(task_title(view.meta, view.source))}\n\n"
                                   f"Task `{inert(view.prompt_id)}`"),
                c["question"]: f"**Question**\n\n{inert(question)}",
                c["excerpt"]: gr.Textbox(value=excerpt, visible=bool(excerpt)),
                c["state"]: Session(user, view.task_id, view.form_token,  # type: ignore[arg-type]
                                    [view.candidates[i].id for i in order]),
                c["submit"]: gr.Button(interactive=True), c["skip"]: gr.Button(interactive=True),
                c["none_acceptable"]: bool(prefill and prefill.none_acceptable),
                c["rationale"]: (prefill.rationale or "") if prefill else "",
            })
            if summary is not None:
                updates[summary] = inert(ranking_summary(before, n))
            if task_flags is not None:
                updates[task_flags] = self._task_flag_choices(on_task)
            for slot in range(n_max):
                if slot < n:
                    candidate = view.candidates[order[slot]]
                    updates[c["columns"][slot]] = gr.Column(visible=True)
                    updates[c["titles"][slot]] = f"#### Answer {letters[slot]}"
                    updates[c["answers"][slot]] = inert(candidate.text)
                    updates[c["ranks"][slot]] = gr.Radio(choices=choices, value=before[slot],
                                                         label=f"Rank of answer {letters[slot]} (1 = best)")
                    updates[c["answer_flags"][slot]] = [f for f in flagged.get(order[slot], []) if f in ANSWER_FLAGS]
                else:
                    updates[c["columns"][slot]] = gr.Column(visible=False)
                    updates[c["ranks"][slot]] = gr.Radio(choices=[], value=None)
                    updates[c["answer_flags"][slot]] = []
        if user:
            try:
                updates[c["progress"]] = self._progress_text(user)
                updates[c["mine"]], editable = self._my_submissions(user)
                if "edit_choice" in c:  # pages built before the Edit action have no such component
                    updates[c["edit_choice"]] = self._edit_choices(editable)
            except StoreError as err:
                updates[c["progress"]] = inert(str(err))
        return updates

    # ----------------------------------------------------------------------- handlers

    def on_load(self, c: dict[str, Any], request: Any) -> dict[Any, Any]:
        import gradio as gr

        user = self._user(request)
        updates = self._render(c, user)
        updates[c["admin_tab"]] = gr.Tab(visible=self.store.is_admin(user))
        return updates

    def on_submit(self, c: dict[str, Any], state: Session | None, ranks: list[Any], none_acceptable: bool,
                  rationale: str, answer_flags: Sequence[Sequence[str] | None], request: Any,
                  task_flags: Sequence[str] | None = None) -> dict[Any, Any]:
        """``ranks`` and ``answer_flags`` are per shown answer (A, B, ...); ``task_flags`` are on the whole task."""
        user = self._user(request)
        if not user:
            return {c["message"]: _error("Not signed in; reload the page and sign in.")}
        if state is None or state.user != user:
            return self._render(c, user, _error("Nothing was saved: the page was out of date, so your current "
                                                "task was reloaded."))
        shown = ranks[:len(state.slots)]
        letters = _letters(len(state.slots))
        if none_acceptable and all(r in (None, "") for r in shown):
            shown = [1] * len(state.slots)  # "none acceptable" without ranks: all tied, no preference
        missing = [letters[i] for i, r in enumerate(shown) if r in (None, "")]
        if missing:
            return {c["message"]: _error(f"Not saved: give answer{'s' * (len(missing) > 1)} "
                                         f"{', '.join(missing)} a rank (1 = best; equal ranks for ties).")}
        try:
            values = [int(r) for r in shown]
        except (ValueError, TypeError):
            return {c["message"]: _error("Not saved: every rank must be a number.")}
        # Checked here too so the message quotes the ranks as entered, by letter (the store sees candidate ids).
        problem = _rank_problem(values, letters)
        if problem:
            return {c["message"]: _error(f"Not saved: {inert(problem)}")}
        try:
            flags = {cid: chosen_values(chosen) for cid, chosen in zip(state.slots, answer_flags) if chosen}
            self.store.submit_ranking(user, state.task_id, dict(zip(state.slots, values)), bool(none_acceptable),
                                      rationale, chosen_values(task_flags), form_token=state.form_token,
                                      answer_flags=flags)
        except SubmissionError as err:
            text = _error(f"Not saved: {inert(_letter_ids(str(err), state))}")
            current = self.store.next_task_for(user)
            if current is None or current.form_token != state.form_token:  # the form on screen is stale
                return self._render(c, user, text + " Your current task was reloaded.")
            return {c["message"]: text}  # keep what was entered so it can be fixed
        except StoreError as err:
            return {c["message"]: _error(f"Not saved: {inert(str(err))}")}
        return self._render(c, user, "Saved. Here is your next task.")

    def on_skip(self, c: dict[str, Any], state: Session | None, request: Any) -> dict[Any, Any]:
        user = self._user(request)
        if not user:
            return {c["message"]: _error("Not signed in; reload the page and sign in.")}
        if state is None or state.user != user:
            return self._render(c, user)
        try:
            self.store.skip_task(user, state.task_id, form_token=state.form_token)
        except StoreError as err:
            return {c["message"]: _error(f"Not skipped: {inert(str(err))}")}
        return self._render(c, user, "Skipped. Here is your next task.")

    def on_edit(self, c: dict[str, Any], task_id: Any, request: Any) -> dict[Any, Any]:
        """"Withdraw and rank again": take the chosen ranking back and show its task on the Rank tab with the
        previous answers entered. The store checks ownership and the export lock again; a refusal leaves the
        submission as it was and says why next to the button."""
        import gradio as gr

        user = self._user(request)
        note = c.get("edit_message", c["message"])
        if not user:
            return {note: _error("Not signed in; reload the page and sign in.")}
        if task_id in (None, ""):
            return {note: _error("Pick a submission to edit first.")}
        try:
            withdrawn = self.store.withdraw_ranking(user, task_id=int(task_id))
        except (StoreError, TypeError, ValueError) as err:
            logger.info("withdrawal refused for %s: %s", user, err)
            updates = {note: _error(f"Not withdrawn: {inert(str(err))}")}
            try:  # what changed since the page was drawn (an export, another tab) shows at once
                updates[c["mine"]], editable = self._my_submissions(user)
                if "edit_choice" in c:
                    updates[c["edit_choice"]] = self._edit_choices(editable)
            except StoreError:
                pass
            return updates
        title = task_title(withdrawn.task.meta, withdrawn.task.source)
        text = (f"Your ranking of “{_md_text(title)}” (task `{inert(withdrawn.task.prompt_id)}`) was withdrawn "
                "and is not counted until you submit it again: change it below and submit.")
        updates = self._render(c, user, text, view=withdrawn.task, prefill=withdrawn)
        updates[note] = ""
        if "tabs" in c:
            updates[c["tabs"]] = gr.Tabs(selected="rank")
        return updates

    @staticmethod
    def on_rank_input(state: Session | None, ranks: list[Any]) -> str:
        """The live summary in the submit bar; it only echoes the page's own choices, so no store access."""
        if state is None:
            return ""
        return inert(ranking_summary(ranks[:len(state.slots)], len(state.slots)))

    def admin_refresh(self, request: Any) -> tuple[list[list[Any]], str]:
        from lexalign.reward.agreement import rankings_agreement

        self._require_admin(request, "see everyone's progress")
        rows = [[p.username, p.role, "yes" if p.active else "no", p.done, p.skipped, p.open,
                 p.last_submitted_at.strftime("%Y-%m-%d %H:%M") if p.last_submitted_at else ""]
                for p in self.store.admin_progress()]
        # agreement between people: derived rankings (gold:<corpus>) are not annotators of the panel
        summary = rankings_agreement(self.store.task_rankings(min_annotators=2, kinds=["human"]))
        return rows, agreement_markdown(summary)

    def admin_on_open(self, request: Any) -> tuple[list[list[Any]], str] | None:
        """The Admin tab's contents when the page opens: filled for admins, None for everyone else (the tab is
        hidden for them; this runs on every page load, so it neither refuses nor audits)."""
        if not self.store.is_admin(self._user(request)):
            return None
        return self.admin_refresh(request)

    def admin_export_sources(self, request: Any) -> Any:
        """The export's source choices (every source of the store's tasks, with its task count), all ticked;
        filled when an admin opens the page or the tab (sources appear as tasks are added)."""
        import gradio as gr

        if not self.store.is_admin(self._user(request)):
            return gr.skip()
        sources = self.store.task_sources()
        return gr.CheckboxGroup(choices=[(f"{name} ({count} tasks)", name) for name, count in sources.items()],
                                value=list(sources))

    def admin_export_annotators(self, request: Any) -> Any:
        """The export's annotator choices (everyone with rankings, with how many), none ticked (= all); filled
        like the source choices."""
        import gradio as gr

        if not self.store.is_admin(self._user(request)):
            return gr.skip()
        ranked = [p for p in self.store.admin_progress() if p.done]
        return gr.CheckboxGroup(choices=[(f"{p.username} ({p.done} ranking{'s' * (p.done != 1)})", p.username)
                                         for p in ranked], value=[])

    def admin_export(self, request: Any, sources: Sequence[str] | None = None, kinds: Sequence[str] | None = None,
                     annotator_names: Sequence[str] | None = None, submitted_from: str | None = None,
                     submitted_to: str | None = None) -> tuple[str, list[str] | None]:
        """Export the rankings of the chosen task sources, annotator kinds and annotators, submitted on or between
        the chosen days (YYYY-MM-DD, UTC, inclusive; none chosen or empty: all, as an API call without them gets);
        returns the message and every file written (pairs, rankings, chat-feedback pairs, the summary), each
        downloadable. A bad choice (a malformed day, an unknown annotator) is refused with the reason and nothing
        is written."""
        from lexalign.reward.prefs import export_preferences

        user = self._require_admin(request, "export preferences")
        out = Path(self.config.export_dir) / time.strftime("%Y%m%d-%H%M%S")
        try:
            result = export_preferences(self.store, out, min_annotators=self.config.export_min_annotators,
                                        actor=user, sources=list(sources) if sources else None,
                                        kinds=list(kinds) if kinds else None,
                                        annotator_names=chosen_values(annotator_names) or None,
                                        submitted_from=submitted_from or None, submitted_to=submitted_to or None)
        except StoreError as err:
            logger.info("export by %s refused: %s", user, err)
            return _error(f"Not exported: {inert(str(err))}"), None
        text = (f"Exported **{result.pairs}** preference pairs from {result.tasks} tasks "
                f"({result.rankings} rankings){export_scope(result, kinds)} to `{inert(str(out))}`.")
        files = [result.files[key] for key in ("preferences", "rankings", "feedback_pairs", "summary")
                 if key in result.files]
        return text, files

    def admin_choices_on_open(self, request: Any) -> tuple[Any, Any, Any, Any]:
        """What the Admin tab lists when an admin opens the page or the tab: the export's source and annotator
        choices, the Accounts table and the account choices. Skipped for everyone else (the tab is hidden for
        them; this runs on every page load, so it neither refuses nor audits)."""
        import gradio as gr

        if not self.store.is_admin(self._user(request)):
            return gr.skip(), gr.skip(), gr.skip(), gr.skip()
        _, accounts, account_choices = self._accounts_view("")
        return self.admin_export_sources(request), self.admin_export_annotators(request), accounts, account_choices

    # ----------------------------------------------------------------------- accounts (admins only)

    def _accounts_view(self, message: str, selected: str | None = None) -> tuple[str, list[list[Any]], Any]:
        """(message, the Accounts table, the account choices with ``selected`` chosen). Accounts are people's
        (derived annotators such as gold:cuad are not accounts): username, role, active, rankings given."""
        import gradio as gr

        people = [p for p in self.store.admin_progress() if p.kind == "human"]
        rows = [[p.username, p.role, "yes" if p.active else "no", p.done] for p in people]
        names = [p.username for p in people]
        return message, rows, gr.Dropdown(choices=names, value=selected if selected in names else None)

    def admin_add_account(self, request: Any, username: str | None, role: str | None,
                          password: str | None) -> tuple[str, list[list[Any]], Any, Any, str]:
        """Add an account with the store's rules (username, role, password length); the store audits it with the
        admin as the actor. Returns the Accounts section, then the username box (emptied once added) and the
        password box (always emptied: a password never stays on the page)."""
        import gradio as gr

        admin = self._require_admin(request, "add accounts")
        name = username.strip() if isinstance(username, str) else ""
        try:
            self.store.add_annotator(name, password if isinstance(password, str) else "", role,  # type: ignore[arg-type]
                                     actor=admin)
        except StoreError as err:
            return (*self._accounts_view(_error(f"Not added: {inert(str(err))}")), gr.skip(), "")
        logger.info("%s added the %s account %s", admin, role, name)
        return (*self._accounts_view(f"Added the {inert(str(role))} account `{inert(name)}`; it can sign in now.",
                                     selected=name), "", "")

    def admin_set_active(self, request: Any, username: str | None, active: bool) -> tuple[str, list[list[Any]], Any]:
        """Enable or disable an account (the store refuses an admin's own, and audits the change)."""
        action = "enable" if active else "disable"
        admin = self._require_admin(request, f"{action} accounts")
        if not username:
            return self._accounts_view(_error(f"Pick an account to {action} first."))
        name = str(username)
        try:
            self.store.set_active(name, bool(active), actor=admin)
        except StoreError as err:
            return self._accounts_view(_error(f"Not {action}d: {inert(str(err))}"), selected=name)
        logger.info("%s %sd the account %s", admin, action, name)
        effect = "can sign in again" if active else "can no longer sign in, take tasks or submit"
        return self._accounts_view(f"{action.capitalize()}d `{inert(name)}`: the account {effect}.", selected=name)

    def admin_set_password(self, request: Any, username: str | None,
                           password: str | None) -> tuple[str, list[list[Any]], Any, str]:
        """Give an account a new password (the store's rules; audited); the password box is always emptied."""
        admin = self._require_admin(request, "set passwords")
        if not username:
            return (*self._accounts_view(_error("Pick an account to set its password first.")), "")
        name = str(username)
        try:
            self.store.set_password(name, password if isinstance(password, str) else "", actor=admin)
        except StoreError as err:
            return (*self._accounts_view(_error(f"Password not set: {inert(str(err))}"), selected=name), "")
        logger.info("%s set a new password for %s", admin, name)
        return (*self._accounts_view(f"New password set for `{inert(name)}`.", selected=name), "")

    # ----------------------------------------------------------------------- layout

    def _build_rank_tab(self, c: dict[str, Any]) -> None:
        """The Rank tab: the task (title, question, excerpt, answers with their ranks and flags, the flags on the
        whole task, "none acceptable", rationale, submit bar) in a column, the guidelines in a column beside it."""
        import gradio as gr

        with gr.Row(equal_height=False, elem_id="task-and-guidelines"):
            with gr.Column(scale=3, min_width=TASK_COLUMN_MIN_WIDTH, elem_id="task-column"):
                c["task_header"] = gr.Markdown("", elem_id="task-header")
                c["question"] = gr.Markdown("", elem_id="question")
                c["excerpt"] = gr.Textbox(label="Contract excerpt", interactive=False, lines=4, max_lines=14,
                                          visible=False, elem_id="excerpt")
                with gr.Row(equal_height=False):
                    for i in range(self.config.max_candidates):
                        with gr.Column(visible=False, min_width=220, elem_classes=["candidate"],
                                       elem_id=f"candidate-{i}") as column:
                            c["columns"].append(column)
                            c["titles"].append(gr.Markdown(f"#### Answer {string.ascii_uppercase[i]}"))
                            c["answers"].append(gr.Markdown("", elem_id=f"answer-{i}"))
                            c["ranks"].append(gr.Radio(choices=[], label="Rank (1 = best)", elem_id=f"rank-{i}"))
                            c["answer_flags"].append(gr.CheckboxGroup(
                                choices=[(label, key) for key, label in ANSWER_FLAGS.items()],
                                label="Flags on this answer", elem_id=f"flags-{i}", elem_classes=["flags"]))
                c["task_flags"] = gr.CheckboxGroup(choices=[(label, key) for key, label in TASK_FLAGS.items()],
                                                   label="Flags on the whole task", elem_id="task-flags")
                c["none_acceptable"] = gr.Checkbox(label="None of these answers is acceptable",
                                                   elem_id="none-acceptable")
                c["rationale"] = gr.Textbox(label="Rationale (optional, plain text)", lines=2, max_lines=8,
                                            max_length=self.config.rationale_max_chars, elem_id="rationale",
                                            placeholder="What decided your ranking? Enter starts a new line; "
                                                        "Ctrl+Enter (Cmd+Enter) submits.")
                # Stays at the bottom of the window (CSS), so the summary and every message are in view
                # wherever the annotator is on the page.
                with gr.Column(elem_id="submit-bar"):
                    with gr.Row(equal_height=True):
                        c["summary"] = gr.Markdown("", elem_id="ranking-summary")
                        c["submit"] = gr.Button("Submit ranking", variant="primary", interactive=False,
                                                elem_id="submit-btn", scale=0, min_width=200)
                        c["skip"] = gr.Button("Skip this task", interactive=False, elem_id="skip-btn",
                                              scale=0, min_width=170)
                    c["message"] = gr.Markdown("", elem_id="message")
            with gr.Column(scale=1, min_width=GUIDELINES_MIN_WIDTH, elem_id="guidelines-column"):
                with gr.Accordion("Guidelines", open=True, elem_id="guidelines"):
                    gr.Markdown(self.guidelines)

    @staticmethod
    def _build_admin_tab(c: dict[str, Any]) -> None:
        """The Admin tab: progress and agreement, the export with its filters, the accounts."""
        import gradio as gr

        c["admin_refresh"] = gr.Button("Refresh", elem_id="admin-refresh")
        c["admin_table"] = gr.Dataframe(headers=["annotator", "role", "active", "done", "skipped", "open",
                                                 "last submission (UTC)"], interactive=False, elem_id="admin-table")
        c["admin_agreement"] = gr.Markdown("", elem_id="admin-agreement")
        gr.Markdown("### Export")
        with gr.Row():
            c["admin_sources"] = gr.CheckboxGroup(choices=[], value=[], elem_id="admin-export-sources", scale=3,
                                                  label="Export the tasks from (none ticked: all)")
            c["admin_kinds"] = gr.CheckboxGroup(choices=[("people (human)", "human"),
                                                         ("labels (derived, e.g. gold:cuad)", "derived")],
                                                value=["human", "derived"], label="ranked by",
                                                elem_id="admin-export-kinds", scale=2)
        with gr.Row():
            c["admin_annotators"] = gr.CheckboxGroup(choices=[], value=[], elem_id="admin-export-annotators",
                                                     scale=3, label="ranked by these annotators (none ticked: all)")
            c["admin_from"] = gr.Textbox(label=f"submitted from ({DAY_FORMAT}, UTC)", placeholder="2025-01-31",
                                         max_lines=1, elem_id="admin-export-from", scale=1)
            c["admin_to"] = gr.Textbox(label=f"to ({DAY_FORMAT}, UTC, inclusive)", placeholder="2025-02-28",
                                       max_lines=1, elem_id="admin-export-to", scale=1)
        c["admin_export"] = gr.Button("Export preferences", elem_id="admin-export")
        c["admin_export_text"] = gr.Markdown("", elem_id="admin-export-text")
        c["admin_export_file"] = gr.File(label="exported files", file_count="multiple", interactive=False,
                                         elem_id="admin-export-files")
        gr.Markdown("### Accounts")
        c["accounts_table"] = gr.Dataframe(headers=["username", "role", "active", "rankings"], interactive=False,
                                           elem_id="accounts-table")
        with gr.Row(equal_height=True):
            c["account_username"] = gr.Textbox(label="new account: username", max_lines=1, scale=2,
                                               elem_id="account-username")
            c["account_role"] = gr.Radio(choices=list(ROLES), value="annotator", label="role", scale=1,
                                         elem_id="account-role")
            c["account_password"] = gr.Textbox(label=f"password (at least {MIN_PASSWORD_CHARS} characters)",
                                               type="password", max_lines=1, scale=2, elem_id="account-password")
            c["account_add"] = gr.Button("Add account", elem_id="account-add", scale=0, min_width=150)
        with gr.Row(equal_height=True):
            c["account_choice"] = gr.Dropdown(choices=[], value=None, label="account", scale=2,
                                              elem_id="account-choice")
            c["account_disable"] = gr.Button("Disable", elem_id="account-disable", scale=0, min_width=110)
            c["account_enable"] = gr.Button("Enable", elem_id="account-enable", scale=0, min_width=110)
            c["account_new_password"] = gr.Textbox(label="new password", type="password", max_lines=1, scale=2,
                                                   elem_id="account-new-password")
            c["account_set_password"] = gr.Button("Set password", elem_id="account-set-password", scale=0,
                                                  min_width=150)
        c["accounts_message"] = gr.Markdown("", elem_id="accounts-message")

    def build(self) -> Any:
        import gradio as gr

        c: dict[str, Any] = {"columns": [], "titles": [], "answers": [], "ranks": [], "answer_flags": []}
        with gr.Blocks(title=self.config.title, analytics_enabled=False) as demo:
            with gr.Row():
                gr.Markdown(f"## {inert(self.config.title)}")
                c["progress"] = gr.Markdown("", elem_id="progress")
                gr.Button("Log out", link="/logout", size="sm", scale=0)
            with gr.Tabs() as tabs:
                c["tabs"] = tabs
                with gr.Tab("Rank", id="rank"):
                    self._build_rank_tab(c)
                with gr.Tab("My submissions", id="mine"):
                    c["mine"] = gr.Dataframe(headers=["task", "submitted (UTC)", "ranks (as shown)", "answers",
                                                      "none acceptable", "flags", "rationale", "task id", "edit"],
                                             interactive=False, elem_id="my-table")
                    with gr.Row(equal_height=True):
                        c["edit_choice"] = gr.Dropdown(choices=[], value=None, label="Edit a submission",
                                                       elem_id="edit-choice", scale=3)
                        c["edit_button"] = gr.Button("Withdraw and rank again", elem_id="edit-btn", scale=0,
                                                     min_width=220)
                    c["edit_message"] = gr.Markdown("", elem_id="edit-message")
                with gr.Tab("Admin", id="admin", visible=False) as admin_tab:
                    c["admin_tab"] = admin_tab
                    self._build_admin_tab(c)
            c["state"] = gr.State(None)

            task_outputs = [c["message"], c["task_header"], c["question"], c["excerpt"], c["state"], c["submit"],
                            c["skip"], c["none_acceptable"], c["rationale"], c["progress"], c["mine"],
                            *c["columns"], *c["titles"], *c["answers"], *c["ranks"], *c["answer_flags"],
                            c["task_flags"], c["summary"],
                            c["edit_choice"]]  # last: API clients read the outputs before it by position
            n_ranks = len(c["ranks"])

            def load(request: gr.Request) -> dict[Any, Any]:
                return self.on_load(c, request)

            # gr.Request first: Gradio injects it by position and a keyword-only one after *values is missed.
            # The values: a rank per answer, none acceptable, rationale, the flags per answer, the task's flags.
            def submit(request: gr.Request, state: Any, *values: Any) -> dict[Any, Any]:
                ranks, (none_acceptable, rationale) = list(values[:n_ranks]), values[n_ranks:n_ranks + 2]
                answer_flags, task_flags = list(values[n_ranks + 2:2 * n_ranks + 2]), values[2 * n_ranks + 2]
                return self.on_submit(c, state, ranks, none_acceptable, rationale, answer_flags, request,
                                      task_flags=task_flags)

            def skip(state: Any, request: gr.Request) -> dict[Any, Any]:
                return self.on_skip(c, state, request)

            def edit(choice: Any, request: gr.Request) -> dict[Any, Any]:
                return self.on_edit(c, choice, request)

            def summarize(state: Any, *ranks: Any) -> str:
                return self.on_rank_input(state, list(ranks))

            def refresh(request: gr.Request) -> tuple[list[list[Any]], str]:
                return self.admin_refresh(request)

            def admin_open(request: gr.Request) -> tuple[Any, Any]:
                filled = self.admin_on_open(request)
                return filled if filled is not None else (gr.skip(), gr.skip())

            def admin_choices(request: gr.Request) -> tuple[Any, Any, Any, Any]:
                return self.admin_choices_on_open(request)

            def export(request: gr.Request, sources: list[str], kinds: list[str], annotator_names: list[str],
                       submitted_from: str, submitted_to: str) -> tuple[str, list[str] | None]:
                return self.admin_export(request, sources, kinds, annotator_names, submitted_from, submitted_to)

            def add_account(request: gr.Request, username: str, role: str, password: str) -> tuple[Any, ...]:
                return self.admin_add_account(request, username, role, password)

            def disable_account(request: gr.Request, username: str) -> tuple[Any, ...]:
                return self.admin_set_active(request, username, False)

            def enable_account(request: gr.Request, username: str) -> tuple[Any, ...]:
                return self.admin_set_active(request, username, True)

            def set_account_password(request: gr.Request, username: str, password: str) -> tuple[Any, ...]:
                return self.admin_set_password(request, username, password)

            # The admin sees progress, agreement and accounts without clicking Refresh: filled after the task is
            # on screen (so annotators' pages do not wait for it), and again whenever the Admin tab is selected.
            admin_views = [c["admin_table"], c["admin_agreement"]]
            admin_lists = [c["admin_sources"], c["admin_annotators"], c["accounts_table"], c["account_choice"]]
            demo.load(load, None, task_outputs + [admin_tab], api_name="load_task", api_visibility="undocumented"
                      ).then(admin_open, None, admin_views, api_visibility="private"
                             ).then(admin_choices, None, admin_lists, api_visibility="private")
            admin_tab.select(refresh, None, admin_views, api_visibility="private"
                             ).then(admin_choices, None, admin_lists, api_visibility="private")
            submit_inputs = [c["state"], *c["ranks"], c["none_acceptable"], c["rationale"], *c["answer_flags"],
                             c["task_flags"]]
            # The rationale box has no submit event: Enter there only starts a new line (see KEYBOARD_JS).
            c["submit"].click(submit, submit_inputs, task_outputs, api_name="submit", api_visibility="undocumented"
                              ).then(None, [c["message"]], None, js=SCROLL_TO_NEW_TASK_JS)
            c["skip"].click(skip, [c["state"]], task_outputs, api_name="skip", api_visibility="undocumented"
                            ).then(None, [c["message"]], None, js=SCROLL_TO_NEW_TASK_JS)
            c["edit_button"].click(edit, [c["edit_choice"]], task_outputs + [c["tabs"], c["edit_message"]],
                                   api_name="withdraw", api_visibility="undocumented"
                                   ).then(None, [c["edit_message"]], None, js=SCROLL_AFTER_EDIT_JS)
            gr.on([rank.input for rank in c["ranks"]], summarize, [c["state"], *c["ranks"]], c["summary"],
                  api_visibility="private", show_progress="hidden", trigger_mode="always_last")
            c["admin_refresh"].click(refresh, None, admin_views, api_name="admin_refresh",
                                     api_visibility="undocumented"
                                     ).then(admin_choices, None, admin_lists, api_visibility="private")
            c["admin_export"].click(export, [c["admin_sources"], c["admin_kinds"], c["admin_annotators"],
                                             c["admin_from"], c["admin_to"]],
                                    [c["admin_export_text"], c["admin_export_file"]], api_name="admin_export",
                                    api_visibility="undocumented")
            accounts = [c["accounts_message"], c["accounts_table"], c["account_choice"]]
            c["account_add"].click(add_account, [c["account_username"], c["account_role"], c["account_password"]],
                                   accounts + [c["account_username"], c["account_password"]],
                                   api_name="admin_add_account", api_visibility="undocumented")
            c["account_disable"].click(disable_account, [c["account_choice"]], accounts,
                                       api_name="admin_disable_account", api_visibility="undocumented")
            c["account_enable"].click(enable_account, [c["account_choice"]], accounts,
                                      api_name="admin_enable_account", api_visibility="undocumented")
            c["account_set_password"].click(set_account_password, [c["account_choice"], c["account_new_password"]],
                                            accounts + [c["account_new_password"]],
                                            api_name="admin_set_password", api_visibility="undocumented")
        demo.queue(default_concurrency_limit=self.config.concurrency_limit)
        return demo

    def launch_kwargs(self) -> dict[str, Any]:
        import gradio as gr

        return {
            "server_name": self.config.host, "server_port": self.config.port, "auth": self.auth,
            "auth_message": "Sign in with your annotator account (an admin creates it in the Admin tab or "
                            "with <code>lexalign annotators add</code>).",
            "show_error": False, "ssr_mode": False, "run_history": False, "mcp_server": False,
            "enable_monitoring": False, "footer_links": [], "quiet": True,
            "theme": gr.themes.Default(font=_THEME_FONTS, font_mono=_MONO_FONTS),
            "css": CSS, "js": KEYBOARD_JS,
            "allowed_paths": [str(Path(self.config.export_dir).resolve())],
        }


def _rank_problem(values: list[int], letters: Sequence[str]) -> str | None:
    """Why these ranks (in the order shown) are not a complete weak ordering, quoting them by letter."""
    try:
        check_ranks(values, len(values))
    except ValueError as err:
        return str(err).replace(f"got {values}", f"got {lettered_ranks(values, letters)}")
    return None


def _letter_ids(message: str, state: Session) -> str:
    """Store messages name candidate ids; the annotator knows the answers as letters."""
    letters = _letters(len(state.slots))
    for slot, cid in sorted(enumerate(state.slots), key=lambda t: -len(str(t[1]))):
        message = message.replace(f"candidate {cid}", f"answer {letters[slot]}")
    return message


def open_app_store(config: AnnotateConfig) -> Store:
    from lexalign.data.store import open_store

    return open_store(config.store, synchronous=config.sqlite_synchronous,
                      rationale_max_chars=config.rationale_max_chars)


def run_annotate(config_path: str | Path | None, overrides: list[str] | None = None) -> None:
    """``lexalign annotate``: load the config, open the store, (add tasks), serve until interrupted."""
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
    config = load_config(AnnotateConfig, config_path, overrides)
    store = open_app_store(config)
    if config.tasks_file:
        from lexalign.reward.prefs import add_tasks_file

        added, skipped = add_tasks_file(store, config.tasks_file, k=config.k)
        logger.info("tasks from %s: %d added, %d already in the store", config.tasks_file, added, skipped)
    people = store.list_annotators()
    if not any(p.active for p in people):
        logger.warning("the store has no active annotator: create one with "
                       "`lexalign annotators add NAME --role admin --store %s`", store.safe_url)
    app = AnnotateApp(store, config)
    demo = app.build()
    logger.info("ranking app on http://%s:%d (store %s, %d tasks); Ctrl+C stops", config.host, config.port,
                store.safe_url, store.task_count())
    try:
        demo.launch(**app.launch_kwargs())
    finally:
        store.close()
