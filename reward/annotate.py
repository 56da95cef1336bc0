"""The ranking app: lawyers rank candidate answers in a Gradio app backed by the preference store.

    lexalign annotate [--config configs/annotate.yaml] [key=value ...]

Login is Gradio's own (``launch(auth=callable)``) checked against the store's argon2 password hashes; every
handler takes the user from the server-side session (``gr.Request.username``), never from the page. Each
annotator sees one task at a time (the contract excerpt, the question and N candidate answers side by side,
in an order shuffled per assignment so position does not bias the ranking), gives every answer a rank
(1 = best; equal ranks for ties), may tick "none acceptable", write a rationale and set flags, then submits
(button, or Ctrl/Cmd+Enter anywhere) or skips. The task, its candidate ids and the one-time form token live
in server-side session state; the store validates everything again and stores a submission in one
transaction, or nothing with a clear message.

Model and user text is inert: it is HTML-escaped before it reaches Markdown (which also runs Gradio's
sanitizer), and free text (rationales) with markup is refused. Admins (role ``admin``) also get an Admin
tab: progress per annotator, agreement (Krippendorff's alpha, Kendall's W) and an export button. The tab is
hidden for others, and every admin handler checks the role on the server, so a hand-made request from an
annotator's session is refused (and audited).
"""

import html
import logging
import os
import random
import string
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from lexalign.config import Problem, load_config, problem_if
from lexalign.data.store import DEFAULT_RATIONALE_MAX, DEFAULT_URL, FLAGS, Store, StoreError, SubmissionError, TaskView

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
4. **Flags.** Mark invented clauses, wrong law, risky advice and personal data, on any answer.
5. **Rationale** (optional, plain text): one or two sentences on what decided your ranking. Do not paste
   personal data.
6. **Skip** a task you cannot judge (outside your practice area, unreadable excerpt); it goes to a colleague.

Keyboard: **Tab** moves through the rank choices, **Space** picks one, **Ctrl+Enter** (Cmd+Enter) submits.
"""

_THEME_FONTS = ["ui-sans-serif", "system-ui", "Segoe UI", "Roboto", "Helvetica", "Arial", "sans-serif"]
_MONO_FONTS = ["ui-monospace", "SFMono-Regular", "Menlo", "Consolas", "monospace"]

SUBMIT_SHORTCUT_JS = """
() => {
  document.addEventListener('keydown', (event) => {
    if (event.key === 'Enter' && (event.ctrlKey || event.metaKey)) {
      const button = document.querySelector('#submit-btn');
      if (button && !button.disabled) { event.preventDefault(); button.click(); }
    }
  });
}
"""

CSS = """
.candidate { border: 1px solid var(--border-color-primary); border-radius: 8px; padding: 8px; }
#message .error { color: var(--error-text-color, #b91c1c); font-weight: 600; }
"""


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
    order = list(range(len(view.candidates)))
    if shuffle:
        random.Random(view.form_token).shuffle(order)  # stable for this assignment, differs across annotators
    return order


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

    def _my_rows(self, user: str) -> list[list[Any]]:
        rows = []
        for r in self.store.my_rankings(user, limit=50):
            submitted = r["submitted_at"].strftime("%Y-%m-%d %H:%M") if r["submitted_at"] else ""
            rationale = (r["rationale"] or "")
            rows.append([r["prompt_id"], submitted, " ".join(map(str, r["ranks"])),
                         "yes" if r["none_acceptable"] else "", ", ".join(r["flags"] or []),
                         rationale[:200] + ("…" if len(rationale) > 200 else "")])
        return rows

    def _render(self, c: dict[str, Any], user: str | None, message: str = "") -> dict[Any, Any]:
        """Updates that show the user's current task (or why there is none)."""
        import gradio as gr

        n_max = self.config.max_candidates
        updates: dict[Any, Any] = {c["message"]: message}
        view = None
        if user:
            try:
                view = self.store.next_task_for(user)
            except StoreError as err:
                updates[c["message"]] = f"<span class='error'>{inert(str(err))}</span>"
        if view is not None and len(view.candidates) > n_max:
            updates[c["message"]] = (f"<span class='error'>Task {inert(view.prompt_id)} has {len(view.candidates)} "
                                     f"answers but this page shows at most {n_max}; ask an admin to raise "
                                     "max_candidates. Skip it for now.</span>")
        if view is None:
            empty = "All done: no task is waiting for you. Thank you!" if user else "Not signed in."
            updates.update({
                c["task_header"]: f"### {empty}", c["question"]: "", c["excerpt"]: gr.Textbox(value="", visible=False),
                c["state"]: None, c["submit"]: gr.Button(interactive=False), c["skip"]: gr.Button(interactive=False),
                c["none_acceptable"]: False, c["rationale"]: "", c["flags"]: [],
            })
            for i in range(n_max):
                updates[c["columns"][i]] = gr.Column(visible=False)
                updates[c["ranks"][i]] = gr.Radio(choices=[], value=None)
        else:
            order = _display_order(view, self.config.shuffle_candidates)[:n_max]
            question, excerpt = question_and_excerpt(view)
            n = len(order)
            letters = _letters(n)
            choices = [(str(r), r) for r in range(1, n + 1)]
            updates.update({
                c["task_header"]: f"### Task `{inert(view.prompt_id)}`",
                c["question"]: f"**Question**\n\n{inert(question)}",
                c["excerpt"]: gr.Textbox(value=excerpt, visible=bool(excerpt)),
                c["state"]: Session(user, view.task_id, view.form_token,  # type: ignore[arg-type]
                                    [view.candidates[i].id for i in order]),
                c["submit"]: gr.Button(interactive=True), c["skip"]: gr.Button(interactive=True),
                c["none_acceptable"]: False, c["rationale"]: "", c["flags"]: [],
            })
            for slot in range(n_max):
                if slot < n:
                    candidate = view.candidates[order[slot]]
                    updates[c["columns"][slot]] = gr.Column(visible=True)
                    updates[c["titles"][slot]] = f"#### Answer {letters[slot]}"
                    updates[c["answers"][slot]] = inert(candidate.text)
                    updates[c["ranks"][slot]] = gr.Radio(choices=choices, value=None,
                                                         label=f"Rank of answer {letters[slot]} (1 = best)")
                else:
                    updates[c["columns"][slot]] = gr.Column(visible=False)
                    updates[c["ranks"][slot]] = gr.Radio(choices=[], value=None)
        if user:
            try:
                updates[c["progress"]] = self._progress_text(user)
                updates[c["mine"]] = self._my_rows(user)
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
                  rationale: str, flags: list[str], request: Any) -> dict[Any, Any]:
        user = self._user(request)
        if not user:
            return {c["message"]: "<span class='error'>Not signed in; reload the page and sign in.</span>"}
        if state is None or state.user != user:
            return self._render(c, user, "<span class='error'>Nothing was saved: the page was out of date, "
                                         "so your current task was reloaded.</span>")
        shown = ranks[:len(state.slots)]
        letters = _letters(len(state.slots))
        if none_acceptable and all(r in (None, "") for r in shown):
            shown = [1] * len(state.slots)  # "none acceptable" without ranks: all tied, no preference
        missing = [letters[i] for i, r in enumerate(shown) if r in (None, "")]
        if missing:
            return {c["message"]: f"<span class='error'>Not saved: give answer{'s' * (len(missing) > 1)} "
                                  f"{', '.join(missing)} a rank (1 = best; equal ranks for ties).</span>"}
        try:
            rank_map = {cid: int(r) for cid, r in zip(state.slots, shown)}
            self.store.submit_ranking(user, state.task_id, rank_map, bool(none_acceptable), rationale,
                                      list(flags or []), form_token=state.form_token)
        except (ValueError, TypeError):
            return {c["message"]: "<span class='error'>Not saved: every rank must be a number.</span>"}
        except SubmissionError as err:
            text = f"<span class='error'>Not saved: {inert(_letter_ids(str(err), state))}</span>"
            current = self.store.next_task_for(user)
            if current is None or current.form_token != state.form_token:  # the form on screen is stale
                return self._render(c, user, text + " Your current task was reloaded.")
            return {c["message"]: text}  # keep what was entered so it can be fixed
        except StoreError as err:
            return {c["message"]: f"<span class='error'>Not saved: {inert(str(err))}</span>"}
        return self._render(c, user, "Saved. Here is your next task.")

    def on_skip(self, c: dict[str, Any], state: Session | None, request: Any) -> dict[Any, Any]:
        user = self._user(request)
        if not user:
            return {c["message"]: "<span class='error'>Not signed in; reload the page and sign in.</span>"}
        if state is None or state.user != user:
            return self._render(c, user)
        try:
            self.store.skip_task(user, state.task_id, form_token=state.form_token)
        except StoreError as err:
            return {c["message"]: f"<span class='error'>Not skipped: {inert(str(err))}</span>"}
        return self._render(c, user, "Skipped. Here is your next task.")

    def admin_refresh(self, request: Any) -> tuple[list[list[Any]], str]:
        from lexalign.reward.agreement import rankings_agreement

        self._require_admin(request, "see everyone's progress")
        rows = [[p.username, p.role, "yes" if p.active else "no", p.done, p.skipped, p.open,
                 p.last_submitted_at.strftime("%Y-%m-%d %H:%M") if p.last_submitted_at else ""]
                for p in self.store.admin_progress()]
        # agreement between people: derived rankings (gold:<corpus>) are not annotators of the panel
        summary = rankings_agreement(self.store.task_rankings(min_annotators=2, kinds=["human"]))
        return rows, inert(summary.as_text())

    def admin_export(self, request: Any) -> tuple[str, str | None]:
        from lexalign.reward.prefs import export_preferences

        user = self._require_admin(request, "export preferences")
        out = Path(self.config.export_dir) / time.strftime("%Y%m%d-%H%M%S")
        result = export_preferences(self.store, out, min_annotators=self.config.export_min_annotators, actor=user)
        text = (f"Exported **{result.pairs}** preference pairs from {result.tasks} tasks "
                f"({result.rankings} rankings) to `{inert(str(out))}`.")
        return text, result.files.get("preferences")

    # ----------------------------------------------------------------------- layout

    def build(self) -> Any:
        import gradio as gr

        n_max = self.config.max_candidates
        c: dict[str, Any] = {"columns": [], "titles": [], "answers": [], "ranks": []}
        with gr.Blocks(title=self.config.title, analytics_enabled=False) as demo:
            with gr.Row():
                gr.Markdown(f"## {inert(self.config.title)}")
                c["progress"] = gr.Markdown("", elem_id="progress")
                gr.Button("Log out", link="/logout", size="sm", scale=0)
            with gr.Tabs():
                with gr.Tab("Rank", id="rank"):
                    with gr.Accordion("Guidelines", open=False, elem_id="guidelines"):
                        gr.Markdown(self.guidelines)
                    c["message"] = gr.Markdown("", elem_id="message")
                    c["task_header"] = gr.Markdown("", elem_id="task-header")
                    c["question"] = gr.Markdown("", elem_id="question")
                    c["excerpt"] = gr.Textbox(label="Contract excerpt", interactive=False, lines=4, max_lines=14,
                                              visible=False, elem_id="excerpt")
                    with gr.Row(equal_height=False):
                        for i in range(n_max):
                            with gr.Column(visible=False, min_width=220, elem_classes=["candidate"],
                                           elem_id=f"candidate-{i}") as column:
                                c["columns"].append(column)
                                c["titles"].append(gr.Markdown(f"#### Answer {string.ascii_uppercase[i]}"))
                                c["answers"].append(gr.Markdown("", elem_id=f"answer-{i}"))
                                c["ranks"].append(gr.Radio(choices=[], label="Rank (1 = best)", elem_id=f"rank-{i}"))
                    c["none_acceptable"] = gr.Checkbox(label="None of these answers is acceptable",
                                                       elem_id="none-acceptable")
                    c["rationale"] = gr.Textbox(label="Rationale (optional, plain text)", lines=2, max_lines=8,
                                                max_length=self.config.rationale_max_chars, elem_id="rationale",
                                                placeholder="What decided your ranking? (Ctrl+Enter submits)")
                    c["flags"] = gr.CheckboxGroup(choices=[(label, key) for key, label in FLAGS.items()],
                                                  label="Flags", elem_id="flags")
                    with gr.Row():
                        c["submit"] = gr.Button("Submit ranking", variant="primary", interactive=False,
                                                elem_id="submit-btn")
                        c["skip"] = gr.Button("Skip this task", interactive=False, elem_id="skip-btn")
                with gr.Tab("My submissions", id="mine"):
                    c["mine"] = gr.Dataframe(headers=["task", "submitted (UTC)", "ranks", "none acceptable",
                                                      "flags", "rationale"], interactive=False, elem_id="my-table")
                with gr.Tab("Admin", id="admin", visible=False) as admin_tab:
                    c["admin_tab"] = admin_tab
                    admin_refresh = gr.Button("Refresh", elem_id="admin-refresh")
                    admin_table = gr.Dataframe(headers=["annotator", "role", "active", "done", "skipped", "open",
                                                        "last submission (UTC)"], interactive=False,
                                               elem_id="admin-table")
                    admin_agreement = gr.Markdown("", elem_id="admin-agreement")
                    admin_export = gr.Button("Export preferences", elem_id="admin-export")
                    admin_export_text = gr.Markdown("", elem_id="admin-export-text")
                    admin_export_file = gr.File(label="preferences.jsonl", interactive=False)
            c["state"] = gr.State(None)

            task_outputs = [c["message"], c["task_header"], c["question"], c["excerpt"], c["state"], c["submit"],
                            c["skip"], c["none_acceptable"], c["rationale"], c["flags"], c["progress"], c["mine"],
                            *c["columns"], *c["titles"], *c["answers"], *c["ranks"]]
            n_ranks = len(c["ranks"])

            def load(request: gr.Request) -> dict[Any, Any]:
                return self.on_load(c, request)

            # gr.Request first: Gradio injects it by position and a keyword-only one after *values is missed.
            def submit(request: gr.Request, state: Any, *values: Any) -> dict[Any, Any]:
                ranks, (none_acceptable, rationale, flags) = list(values[:n_ranks]), values[n_ranks:]
                return self.on_submit(c, state, ranks, none_acceptable, rationale, flags, request)

            def skip(state: Any, request: gr.Request) -> dict[Any, Any]:
                return self.on_skip(c, state, request)

            def refresh(request: gr.Request) -> tuple[list[list[Any]], str]:
                return self.admin_refresh(request)

            def export(request: gr.Request) -> tuple[str, str | None]:
                return self.admin_export(request)

            demo.load(load, None, task_outputs + [admin_tab], api_name="load_task", api_visibility="undocumented")
            submit_inputs = [c["state"], *c["ranks"], c["none_acceptable"], c["rationale"], c["flags"]]
            c["submit"].click(submit, submit_inputs, task_outputs, api_name="submit", api_visibility="undocumented")
            c["rationale"].submit(submit, submit_inputs, task_outputs, api_name=False, api_visibility="private")
            c["skip"].click(skip, [c["state"]], task_outputs, api_name="skip", api_visibility="undocumented")
            admin_refresh.click(refresh, None, [admin_table, admin_agreement], api_name="admin_refresh",
                                api_visibility="undocumented")
            admin_export.click(export, None, [admin_export_text, admin_export_file], api_name="admin_export",
                               api_visibility="undocumented")
        demo.queue(default_concurrency_limit=self.config.concurrency_limit)
        return demo

    def launch_kwargs(self) -> dict[str, Any]:
        import gradio as gr

        return {
            "server_name": self.config.host, "server_port": self.config.port, "auth": self.auth,
            "auth_message": "Sign in with your annotator account (an admin creates it with "
                            "<code>lexalign annotators add</code>).",
            "show_error": False, "ssr_mode": False, "run_history": False, "mcp_server": False,
            "enable_monitoring": False, "footer_links": [], "quiet": True,
            "theme": gr.themes.Default(font=_THEME_FONTS, font_mono=_MONO_FONTS),
            "css": CSS, "js": SUBMIT_SHORTCUT_JS,
            "allowed_paths": [str(Path(self.config.export_dir).resolve())],
        }


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
