"""The lawyers' chat UI: review a contract with the served model, and rate its answers.

    lexalign chat [--config configs/chat.yaml] [--endpoint URL] [key=value ...]

The app talks ONLY to an OpenAI-compatible endpoint (``lexalign serve``, or any other server) through the
official ``openai`` client, streaming every answer; the API key comes from the environment variable named
by ``api_key_env``. Sign-in is Gradio's login page checked against the preference store's accounts (the
same argon2 hashes as the ranking app); every handler takes the user from the server-side session.

A lawyer uploads a contract (TXT, PDF or DOCX, bounded in size, pages and characters; ``documents.py``;
a refused file is named in red and taken out of the upload box), picks a review task (find one of the 41
CUAD clause categories, flag potentially unfair clauses, summarize obligations and dates; "Run review" is
enabled once a contract is loaded) or types a question (with or without a contract). The contract is cut
into chunks; the chunks that best match the task are chosen by BM25 to fit the model's context
(``review.py``), sent with their location labels, and shown beside the answer. Quotes in the answer are
located in the contract and named by its own structure ("\u00a714 Governing Law, p. 3"; the chunk and character
range stay in the export), or marked as not found: a quote that is not in the contract is the first thing a
reviewer must see.

The contract view beside the conversation shows the loaded contract's text, with an anchor at each section
start and the passages quoted by the latest answer (and by the last clause-by-clause review) marked. Each
located quote in the sources list (and each clause in the review's summary) is a link that scrolls the view to
its passage. The view's HTML is built once per change (upload, answer, review, new conversation), never per
streamed token.

Each user's session (the contract, the conversation with its citations and ratings, the last clause review) is
saved in the store's database after every upload, answer, rating, review and new conversation
(``data/chat_sessions.py``) and restored when the page loads, so a reload, another browser or a restarted app
shows it again. "New conversation" keeps the contract and clears the turns. An uploaded playbook and the memo
downloads are not kept.

"Good answer" / "Needs work" (with an optional better answer written by the lawyer) store one feedback
row in the preference store (``Store.add_feedback``): the exact prompt messages sent, the answer, the
rating, the better answer and what produced it (model, task, excerpts, document hash). The preference
export turns them into training pairs, closing the loop. The conversation can be downloaded as JSON.

"Review all clauses" runs the clause-by-clause review (``clause_review.py``) on the loaded contract with the same
model, budget and prompts: one "Find a clause" prompt per playbook clause, the result as a table (clause,
found / not found / unverified, quote, location, risk note) under its summary line, and the memo as Word and
Markdown downloads. The playbook is the config's ``playbook`` (checked with its file:line before the app starts;
null = every CUAD category), or a playbook YAML uploaded in the page for this session.

All user, document and model text is HTML-escaped before it reaches a component that renders Markdown, so
nothing in a contract or an answer can run in the browser.
"""

import dataclasses
import json
import logging
import os
import secrets
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator, Literal

from lexalign.config import Problem, load_config, problem_if
from lexalign.data.store import DEFAULT_URL, Store, StoreError
from lexalign.serve.contract_view import (
    CITE_LINKS_JS,
    cite_link,
    contract_html,
    inert,
    is_located,
    plan_marks,
)
from lexalign.serve.documents import where_of

logger = logging.getLogger(__name__)

CSS = """
#sources .excerpt { white-space: pre-wrap; }
#sources .chunk-ref { color: var(--body-text-color-subdued, #6b7280); font-size: 0.85em; }
#contract-view .contract-name { font-weight: 600; margin: 0 0 4px 0; }
#contract-view .contract-text { white-space: pre-wrap; line-height: 1.45; font-size: 0.9em; padding: 8px 10px;
  border: 1px solid var(--border-color-primary, #d1d5db); border-radius: 6px; }
#contract-view mark.cite { background: #fde68a; color: inherit; padding: 0; }
#contract-view mark.cite.current { background: #fbbf24; outline: 2px solid #b45309; }
#feedback-status .error, #status .error,
#playbook-status .error, #clause-summary .error { color: var(--error-text-color, #b91c1c); font-weight: 600; }
"""
_THEME_FONTS = ["ui-sans-serif", "system-ui", "Segoe UI", "Roboto", "Helvetica", "Arial", "sans-serif"]
# Marks and labels are words: emoji need a font many browsers' systems lack (Debian's Chromium shows boxes).
WARNING = "Warning:"
RATING_LABELS = {1: "Good answer", -1: "Needs work"}
NEEDS_CONTRACT = "Load a contract to run a review."
NEEDS_CONTRACT_CLAUSES = "Load a contract to review all clauses."
CLAUSE_COLUMNS = ["Clause", "Status", "Quote", "Location", "Risk note"]
NO_REVIEW = "*One row per playbook clause appears here.*"


@dataclass
class ChatConfig:
    """``configs/chat.yaml``: the endpoint, the store, the app's address, generation and document limits."""

    endpoint: str = "http://127.0.0.1:8000/v1"  # an OpenAI-compatible API (lexalign serve's default address)
    api_key_env: str = "LEXALIGN_API_KEY"       # environment variable holding the endpoint's key
    model: str | None = None                    # null = the tuned model the endpoint serves (its LoRA adapter)
    store: str = DEFAULT_URL                    # accounts and feedback (the ranking app's store)
    sqlite_synchronous: Literal["FULL", "NORMAL"] = "FULL"
    host: str = "127.0.0.1"
    port: int = 7861
    title: str = "LexAlign contract review"
    # generation
    temperature: float = 0.0                    # 0 = the same answer for the same question (reviewable)
    top_p: float = 1.0
    max_tokens: int = 256                       # answer length limit
    request_timeout_s: float = 300.0
    # context budget
    context_tokens: int | None = None           # null = the endpoint's max_model_len (vLLM reports it), else 4096
    chars_per_token: float = 3.0                # token estimate for the budget (tiny default BPE: 3.5-4 on contracts)
    history_share: float = 0.3                  # earlier turns may use this share of the prompt budget
    # documents
    chunk_chars: int = 1000                     # the training data's window size
    chunk_overlap: int = 250
    max_chunks: int = 8
    max_upload_mb: float = 10.0
    max_pages: int = 300
    max_chars: int = 1_000_000
    max_question_chars: int = 4000
    concurrency_limit: int = 8                  # answers generated at once (the endpoint batches them)
    # clause-by-clause review
    playbook: str | None = None                 # a playbook YAML (clause_review.py); null = every CUAD category

    def problems(self) -> list[Problem]:
        found: list[Problem] = []
        found += problem_if(not self.endpoint.startswith(("http://", "https://")), "endpoint", self.endpoint,
                            "expected an http(s) URL of an OpenAI-compatible API, e.g. http://127.0.0.1:8000/v1")
        found += problem_if(not (self.store.startswith("sqlite") or self.store.startswith("postgresql")),
                            "store", self.store, "expected a sqlite:///FILE or postgresql+DRIVER://... URL")
        found += problem_if(not 0 < self.port < 65536, "port", self.port, "expected a TCP port 1-65535")
        found += problem_if(not 0 <= self.temperature <= 2, "temperature", self.temperature, "expected 0-2")
        found += problem_if(not 0 < self.top_p <= 1, "top_p", self.top_p, "expected (0, 1]")
        found += problem_if(self.max_tokens < 1, "max_tokens", self.max_tokens, "expected >= 1")
        found += problem_if(self.context_tokens is not None and self.context_tokens <= self.max_tokens + 64,
                            "context_tokens", self.context_tokens,
                            "must leave room for a prompt: more than max_tokens + 64, or null (from the endpoint)")
        found += problem_if(not 0.5 <= self.chars_per_token <= 10, "chars_per_token", self.chars_per_token,
                            "expected 0.5-10 (characters per token of the served tokenizer)")
        found += problem_if(not 0 <= self.history_share < 1, "history_share", self.history_share, "expected [0, 1)")
        found += problem_if(self.chunk_chars < 100, "chunk_chars", self.chunk_chars, "expected >= 100 characters")
        found += problem_if(not 0 <= self.chunk_overlap < self.chunk_chars, "chunk_overlap", self.chunk_overlap,
                            "expected 0 <= chunk_overlap < chunk_chars")
        found += problem_if(self.max_chunks < 1, "max_chunks", self.max_chunks, "expected >= 1")
        found += problem_if(not 0 < self.max_upload_mb <= 200, "max_upload_mb", self.max_upload_mb, "expected (0, 200]")
        found += problem_if(self.max_pages < 1, "max_pages", self.max_pages, "expected >= 1")
        found += problem_if(self.max_chars < 1000, "max_chars", self.max_chars, "expected >= 1000")
        found += problem_if(self.max_question_chars < 10, "max_question_chars", self.max_question_chars, "expected >= 10")
        found += problem_if(self.concurrency_limit < 1, "concurrency_limit", self.concurrency_limit, "expected >= 1")
        found += problem_if(self.request_timeout_s <= 0, "request_timeout_s", self.request_timeout_s, "expected > 0")
        found += self.playbook_problems()
        return found

    def playbook_problems(self) -> list[Problem]:
        """The playbook file's problems, each with its file:line, so a bad playbook stops the app at startup
        rather than the first review."""
        if self.playbook is None:
            return []
        # imported here: clause_review imports this module
        from lexalign.serve.clause_review import PlaybookError, load_playbook

        try:
            load_playbook(self.playbook)
        except PlaybookError as err:
            # load_config drops a ValueError raised by problems(), so the problems are returned, not raised
            return [dataclasses.replace(p, key=f"playbook.{p.key}") for p in err.problems]
        return []

    def limits(self) -> Any:
        from lexalign.serve.documents import DocumentLimits

        return DocumentLimits(max_bytes=int(self.max_upload_mb * 1024 * 1024), max_pages=self.max_pages,
                              max_chars=self.max_chars)


def _error(text: str) -> str:
    return f"<span class='error'>{inert(text)}</span>"


# =========================================================================== the endpoint


class EndpointError(Exception):
    """The model endpoint cannot answer; the message is for the lawyer."""


class Endpoint:
    """The OpenAI-compatible API: the model to use and its context length, resolved on first use."""

    def __init__(self, config: ChatConfig, api_key: str | None) -> None:
        from openai import OpenAI

        self.config = config
        self.client = OpenAI(base_url=config.endpoint, api_key=api_key or "no-key",
                             timeout=config.request_timeout_s, max_retries=1)
        self._lock = threading.Lock()
        self._model: str | None = None
        self._context: int | None = None

    def describe_error(self, err: Exception) -> str:
        import openai

        if isinstance(err, openai.AuthenticationError):
            return (f"The model server refused the API key (HTTP 401). Check {self.config.api_key_env} for "
                    "`lexalign chat`.")
        if isinstance(err, openai.NotFoundError):
            return f"The model server does not serve the model {self._model or self.config.model!r} (HTTP 404)."
        if isinstance(err, openai.BadRequestError):
            return f"The model server refused the request: {getattr(err, 'message', err)}"
        if isinstance(err, openai.APITimeoutError):
            return "The model server did not answer in time; try again, or ask a shorter question."
        if isinstance(err, openai.APIConnectionError):
            return f"The model server at {self.config.endpoint} is not reachable; is `lexalign serve` running?"
        if isinstance(err, openai.APIStatusError):
            return f"The model server answered with an error (HTTP {err.status_code})."
        return f"The model server failed: {type(err).__name__}"

    def resolve(self) -> tuple[str, int]:
        """(model name, context tokens); cached after the first success."""
        with self._lock:
            if self._model is not None and self._context is not None:
                return self._model, self._context
            try:
                cards = list(self.client.models.list())
            except Exception as err:  # noqa: BLE001 - every failure becomes a message for the lawyer
                raise EndpointError(self.describe_error(err)) from None
            names = [c.id for c in cards]
            if self.config.model:
                if self.config.model not in names:
                    raise EndpointError(f"The model server does not serve {self.config.model!r}; it serves "
                                        f"{', '.join(names) or 'nothing'}. Fix `model` in the chat config.")
                model = self.config.model
            else:
                tuned = [c.id for c in cards if getattr(c, "parent", None)]
                if not names:
                    raise EndpointError("The model server serves no model.")
                model = tuned[-1] if tuned else names[0]
            context = self.config.context_tokens
            if context is None:
                by_name = {c.id: c for c in cards}
                card = by_name[model]
                value = getattr(card, "max_model_len", None)
                parent = getattr(card, "parent", None)
                if value is None and parent in by_name:
                    value = getattr(by_name[parent], "max_model_len", None)
                context = int(value) if value else 4096
            self._model, self._context = model, context
            logger.info("chat endpoint %s: model %s, context %d tokens", self.config.endpoint, model, context)
            return model, context

    def stream(self, model: str, messages: list[dict[str, str]], max_tokens: int) -> Iterator[str]:
        config = self.config
        try:
            stream = self.client.chat.completions.create(
                model=model, messages=messages, stream=True, max_tokens=max_tokens,
                temperature=config.temperature, top_p=config.top_p)
            for event in stream:
                if event.choices and event.choices[0].delta and event.choices[0].delta.content:
                    yield event.choices[0].delta.content
        except Exception as err:  # noqa: BLE001
            raise EndpointError(self.describe_error(err)) from None


# =========================================================================== session state


@dataclass
class Turn:
    request: dict[str, Any]
    display: str                  # what the lawyer asked, as shown
    messages: list[dict[str, str]]  # the exact prompt sent
    answer: str
    model: str
    sources: list[dict[str, Any]] = field(default_factory=list)
    citations: list[dict[str, Any]] = field(default_factory=list)
    feedback_id: int | None = None
    rating: int | None = None
    better_answer: str | None = None
    at: str = field(default_factory=lambda: time.strftime("%Y-%m-%dT%H:%M:%S"))
    error: str | None = None
    max_tokens: int = 0
    done: bool = False
    document: str | None = None   # sha256 of the contract the citations' character ranges point into


@dataclass
class ClauseReview:
    """The last clause-by-clause review as the page shows it, kept with the session: the contract view marks its
    quotes, and a reload shows it again."""

    document: str                 # sha256 of the contract reviewed
    model: str
    summary: str                  # clause_review.summary_line
    table: list[list[str]]        # CLAUSE_COLUMNS rows
    quotes: list[dict[str, Any]] = field(default_factory=list)  # located quotes: clause, where, label, start, end


@dataclass
class ChatSession:
    user: str
    conversation_id: str = field(default_factory=lambda: secrets.token_hex(8))
    document: Any = None          # documents.Document
    turns: list[Turn] = field(default_factory=list)
    playbook: Any = None          # clause_review.Playbook uploaded in the page; None = the app's
    review: ClauseReview | None = None

    def history(self) -> list[tuple[str, str]]:
        return [(t.display, t.answer) for t in self.turns if t.answer and not t.error]

    def last_answer(self) -> Turn | None:
        return self.turns[-1] if self.turns and self.turns[-1].answer and not self.turns[-1].error else None


def citation_line(turn: Turn) -> str:
    parts = []
    for c in turn.citations:
        parts.append(where_of(c) if c["found"] else
                     f"{WARNING} quote not found in the contract: \u201c{c['quote'][:80]}\u201d")
    if not parts and turn.sources:
        parts.append("excerpts used: " + ", ".join(where_of(s) for s in turn.sources))
    return "Sources: " + "; ".join(parts) if parts else ""


def chat_messages(session: ChatSession | None) -> list[dict[str, str]]:
    """The conversation for gr.Chatbot (messages format), every text escaped."""
    out: list[dict[str, str]] = []
    if session is None:
        return out
    for turn in session.turns:
        out.append({"role": "user", "content": inert(turn.display)})
        if turn.error:
            out.append({"role": "assistant", "content": f"{WARNING} {inert(turn.error)}"})
            continue
        body = inert(turn.answer) or ("(empty answer)" if turn.done else "\u2026")
        line = citation_line(turn)
        out.append({"role": "assistant", "content": body + (f"\n\n*{inert(line)}*" if line else "")})
    return out


def _chunk_ref(source: dict[str, Any]) -> str:
    # The prompt asks the model to cite "[chunk N]" labels, so an answer may name chunks: the number stays visible
    # beside the section, with the exact range on hover.
    if where_of(source) == source.get("label") or source.get("chunk") is None:
        return ""
    return f" <span class='chunk-ref' title='{inert(source.get('label'))}'>chunk {int(source['chunk'])}</span>"


def sources_markdown(session: ChatSession | None) -> str:
    turn = session.turns[-1] if session and session.turns else None
    if turn is None or not turn.sources:
        return "*The excerpts sent to the model appear here.*" if not (session and session.document) else \
            "*Ask something: the excerpts sent to the model appear here.*"
    lines = [f"**Excerpts sent to the model** ({len(turn.sources)} of {len(session.document.chunks) if session.document else '?'} chunks)"]
    for s in turn.sources:
        lines.append(f"\n**{inert(where_of(s))}**{_chunk_ref(s)}\n\n<div class='excerpt'>{inert(s['text'])}</div>")
    if turn.citations:
        _, targets = plan_marks(view_spans(session))
        lines.append("\n**Quotes in the answer** (a link shows the passage in the contract)")
        located = 0
        for c in turn.citations:
            if is_located(c):
                located += 1
                where = cite_link(targets.get(f"cite-{located}"), where_of(c), c.get("label"))
            else:
                where = f"{WARNING} not found in the contract"
            lines.append(f"- {where}: \u201c{inert(c['quote'][:300])}\u201d")
    return "\n".join(lines)


def document_status(session: ChatSession | None) -> str:
    document = session.document if session is not None else None
    return f"Loaded **{inert(document.summary())}**." if document is not None else "No contract loaded."


def review_markdown(session: ChatSession | None) -> str:
    """The clause review's summary line, and a link to each quoted clause in the contract view."""
    review = session.review if session is not None else None
    if session is None or review is None:
        return NO_REVIEW
    name = session.document.name if session.document is not None else "the contract"
    text = f"**{inert(name)}** with `{inert(review.model)}`: {inert(review.summary)}"
    _, targets = plan_marks(view_spans(session))
    links = [cite_link(targets.get(f"clause-{n}"), q["clause"], q.get("where"))
             for n, q in enumerate(review.quotes, start=1)]
    return text + ("\n\nIn the contract: " + " \u00b7 ".join(links) if links else "")


# =========================================================================== the contract view


def view_spans(session: ChatSession | None) -> list[tuple[str, int, int, str]]:
    """(mark id, start, end, hover text) of every passage the contract view marks: the located quotes of the latest
    answer (cite-1, cite-2, ...) and of the last clause review (clause-1, ...), when they point into this contract."""
    document = session.document if session is not None else None
    sha = getattr(document, "sha256", None)
    if sha is None:
        return []
    spans: list[tuple[str, int, int, str]] = []
    turn = session.turns[-1] if session.turns else None
    if turn is not None and turn.document == sha:
        located = [c for c in turn.citations if is_located(c)]
        spans += [(f"cite-{n}", int(c["start"]), int(c["end"]), f"{where_of(c)} {c.get('label', '')}".strip())
                  for n, c in enumerate(located, start=1)]
    if session.review is not None and session.review.document == sha:
        spans += [(f"clause-{n}", int(q["start"]), int(q["end"]), f"{q['clause']}: {q.get('where', '')}")
                  for n, q in enumerate(session.review.quotes, start=1)]
    return spans


def contract_view(session: ChatSession | None) -> str:
    return contract_html(session.document if session is not None else None, view_spans(session))


# =========================================================================== saved sessions


def document_record(document: Any) -> dict[str, Any] | None:
    """What is saved of a contract: its normalized text and identity; sections and chunks are rebuilt from it."""
    if document is None:
        return None
    return {"name": document.name, "kind": document.kind, "text": document.text, "sha256": document.sha256,
            "size_bytes": document.size_bytes, "pages": document.pages, "page_starts": list(document.page_starts)}


def _known_fields(cls: type, data: dict[str, Any]) -> dict[str, Any]:
    # a record written by another version may carry fields this one does not know
    names = {f.name for f in dataclasses.fields(cls)}
    return {k: v for k, v in data.items() if k in names}


def restore_session(saved: Any, config: ChatConfig) -> ChatSession:
    """A ChatSession from a ``data.chat_sessions.SavedSession``, its contract chunked with ``config``'s settings."""
    from lexalign.serve.documents import build_document

    document = None
    if saved.document is not None:
        d = saved.document
        document = build_document(d["name"], d["kind"], d["text"], d["sha256"], int(d["size_bytes"]), d["pages"],
                                  d["page_starts"], config.chunk_chars, config.chunk_overlap)
    return ChatSession(saved.user, conversation_id=saved.conversation, document=document,
                       turns=[Turn(**_known_fields(Turn, t)) for t in saved.turns],
                       review=ClauseReview(**_known_fields(ClauseReview, saved.review)) if saved.review else None)


# =========================================================================== the app


class ChatApp:
    def __init__(self, store: Store, config: ChatConfig, endpoint: Endpoint) -> None:
        self.store = store
        self.config = config
        self.endpoint = endpoint
        self.export_dir = Path(tempfile.mkdtemp(prefix="lexalign-chat-"))
        from lexalign.data.chat_sessions import ChatSessionStore
        from lexalign.serve.clause_review import load_playbook

        self.playbook = load_playbook(config.playbook)  # its problems were reported by load_config already
        self.sessions = ChatSessionStore(store)

    # ----------------------------------------------------------------------- auth and session

    def auth(self, username: str, password: str) -> bool:
        try:
            return self.store.verify_login(username, password) is not None
        except StoreError:
            logger.exception("login check failed")
            return False

    @staticmethod
    def _user(request: Any) -> str | None:
        return getattr(request, "username", None) if request is not None else None

    def _session(self, state: ChatSession | None, request: Any) -> ChatSession | None:
        user = self._user(request)
        if not user:
            return None
        if state is None:
            # no session in the page (the app restarted under an open page): the saved one, which the next save
            # would otherwise overwrite with this request alone
            return self.restore(user)
        if state.user != user:
            return ChatSession(user)
        return state

    def restore(self, user: str) -> ChatSession:
        """``user``'s saved session, or a new one when there is none or it cannot be read. Never raises."""
        try:
            saved = self.sessions.load(user)
            if saved is not None:
                session = restore_session(saved, self.config)
                logger.info("restored the chat session of %s: %s, %d turn(s)", user,
                            session.document.name if session.document is not None else "no contract",
                            len(session.turns))
                return session
        except StoreError:
            logger.exception("loading the chat session of %s failed; a new one starts", user)
        except (AttributeError, KeyError, TypeError, ValueError):
            logger.exception("the saved chat session of %s cannot be read; a new one starts", user)
        return ChatSession(user)

    def save(self, session: ChatSession | None, *, with_document: bool = False) -> None:
        """Keep ``session`` for the user's next page load (``with_document``: the contract changed). A failure is
        logged, not shown: the chat goes on without it."""
        from lexalign.data.chat_sessions import KEEP

        if session is None:
            return
        try:
            self.sessions.save(session.user, session.conversation_id,
                               [dataclasses.asdict(t) for t in session.turns],
                               dataclasses.asdict(session.review) if session.review is not None else None,
                               document=document_record(session.document) if with_document else KEEP)
        except StoreError:
            logger.exception("saving the chat session of %s failed", session.user)

    # ----------------------------------------------------------------------- upload

    def on_upload(self, file: Any, state: ChatSession | None, request: Any) -> tuple[ChatSession | None, str, str]:
        """Parse the uploaded contract; (state, status markdown, sources markdown). Never raises."""
        session = self._session(state, request)
        if session is None:
            return state, _error("Not signed in; reload the page and sign in."), ""
        session.review = None  # the last review belongs to the contract that is being replaced
        status = self._read_upload(file, session)
        self.save(session, with_document=True)
        return session, status, sources_markdown(session)

    def _read_upload(self, file: Any, session: ChatSession) -> str:
        """Set ``session.document`` from the upload (None when there is none or it is refused); the status."""
        from lexalign.serve.documents import DocumentError, load_document

        session.document = None
        if file is None:
            return "No contract loaded: questions go to the model without contract text."
        path = file if isinstance(file, str) else getattr(file, "name", None) or getattr(file, "path", "")
        name = getattr(file, "orig_name", None) or Path(str(path)).name
        try:
            document = load_document(path, self.config.limits(), name=name, chunk_chars=self.config.chunk_chars,
                                     chunk_overlap=self.config.chunk_overlap)
        except DocumentError as err:
            return _error(f"Not loaded: {err}")
        except Exception as err:  # noqa: BLE001 - an upload must never crash the app
            logger.exception("parsing %s failed", name)
            return _error(f"Not loaded: {name}: could not be read ({type(err).__name__}).")
        session.document = document
        self.store.audit(session.user, "chat_upload", {"conversation": session.conversation_id, **document.meta()})
        return document_status(session)

    # ----------------------------------------------------------------------- asking

    def _budget(self, context: int) -> Any:
        from lexalign.serve.clause_review import budget_for

        # One budget for chat answers and the clause-by-clause review: the same prompt in both gets the same answer.
        return budget_for(self.config, context)

    def ask(self, request_data: dict[str, Any], state: ChatSession | None, request: Any) -> Iterator[tuple[Any, ...]]:
        """Stream one answer. Yields (chatbot messages, sources md, status md, state, feedback enabled)."""
        from lexalign.serve.documents import locate_quotes
        from lexalign.serve.review import build_prompt, request_from_dict, validate_request

        session = self._session(state, request)
        if session is None:
            yield [], "", _error("Not signed in; reload the page and sign in."), state, False
            return
        review = request_from_dict(request_data)
        problem = validate_request(review)
        if problem is None and review.question and len(review.question) > self.config.max_question_chars:
            problem = f"The question is {len(review.question)} characters long; the limit is {self.config.max_question_chars}."
        # The page disables "Run review" without a contract; a request made by hand gets the same answer.
        if problem is None and review.task != "question" and session.document is None:
            problem = NEEDS_CONTRACT
        if problem:
            yield chat_messages(session), sources_markdown(session), _error(problem), session, bool(session.last_answer())
            return
        try:
            model, context = self.endpoint.resolve()
            budget = self._budget(context)
            built = build_prompt(review, session.document, session.history(), budget, max_chunks=self.config.max_chunks)
        except (EndpointError, ValueError) as err:
            yield chat_messages(session), sources_markdown(session), _error(str(err)), session, bool(session.last_answer())
            return
        turn = Turn(request={"task": review.task, "category": review.category, "question": review.question},
                    display=review.display(), messages=built.messages, answer="", model=model,
                    max_tokens=budget.max_tokens,
                    document=session.document.sha256 if session.document is not None else None,
                    sources=[{"label": c.label(), "where": c.where(), "chunk": c.index, "start": c.start,
                              "end": c.end, "page": c.page, "text": c.text} for c in built.sources])
        session.turns.append(turn)
        note = ""
        if built.selection is not None and not built.selection.matched:
            note = " No chunk matched the task's words; the start of the contract was used."
        if built.selection is not None and built.selection.truncated:
            note += " The best excerpt was cut to fit the model's context."
        status = f"Answering with `{inert(model)}` from {len(built.sources)} excerpt(s).{inert(note)}"
        yield chat_messages(session), sources_markdown(session), status, session, False
        last = 0.0  # the first piece shows at once, then at most 20 updates a second
        try:
            for piece in self.endpoint.stream(model, built.messages, budget.max_tokens):
                turn.answer += piece
                if time.monotonic() - last > 0.05:
                    last = time.monotonic()
                    yield chat_messages(session), gr_skip(), status, session, False
        except EndpointError as err:
            turn.error, turn.done = str(err), True
            self.save(session)
            yield chat_messages(session), sources_markdown(session), _error(str(err)), session, False
            return
        finally:
            turn.done = True  # also when the browser went away mid-answer (the generator is closed)
        if session.document is not None:
            turn.citations = [c.as_dict() for c in locate_quotes(turn.answer, session.document)]
        self.save(session)
        missing = [c for c in turn.citations if not c["found"]]
        done = f"Done (answer {len(session.turns)})." + (
            f" {WARNING} {len(missing)} quote(s) are not in the contract: check before relying on them." if missing else "")
        yield chat_messages(session), sources_markdown(session), done, session, bool(turn.answer.strip())

    # ----------------------------------------------------------------------- feedback and export

    def on_feedback(self, rating: int, better_answer: str, state: ChatSession | None, request: Any
                    ) -> tuple[str, ChatSession | None, bool, str]:
        """Store a rating of the latest answer; (status, state, feedback still enabled, better-answer box)."""
        from lexalign.data.store import SubmissionError

        session = self._session(state, request)
        if session is None:
            return _error("Not signed in; reload the page and sign in."), state, False, better_answer
        turn = session.last_answer()
        if turn is None:
            return _error("There is no answer to rate yet."), session, False, better_answer
        if turn.feedback_id is not None:
            return f"Feedback for this answer was already saved (#{turn.feedback_id}).", session, False, better_answer
        better = (better_answer or "").strip() or None
        meta = {
            "source": "chat", "conversation": session.conversation_id, "turn": len(session.turns),
            "model": turn.model, "endpoint": self.config.endpoint, "task": turn.request,
            "sources": [{"where": where_of(s), **{k: s[k] for k in ("label", "chunk", "start", "end", "page")}}
                        for s in turn.sources],
            "citations": [{"where": where_of(c), **{k: c[k] for k in ("found", "label", "quote")}}
                          for c in turn.citations],
            "document": session.document.meta() if session.document is not None else None,
            "sampling": {"temperature": self.config.temperature, "top_p": self.config.top_p,
                         "max_tokens": turn.max_tokens},
        }
        try:
            feedback_id = self.store.add_feedback(session.user, turn.messages, turn.answer, rating, better, meta)
        except SubmissionError as err:
            return _error(f"Not saved: {err}"), session, True, better_answer
        except StoreError as err:
            return _error(f"Not saved: {err}"), session, True, better_answer
        turn.feedback_id, turn.rating, turn.better_answer = feedback_id, rating, better
        self.save(session)  # a reloaded page must not offer the rating again
        label = RATING_LABELS[1 if rating > 0 else -1]
        extra = " with your better answer" if better else ""
        return f"Feedback saved{extra} (#{feedback_id}): {label}. Thank you.", session, False, ""

    def export(self, state: ChatSession | None, request: Any) -> str | None:
        """Write the conversation as JSON; the path for the download button (None when there is nothing)."""
        session = self._session(state, request)
        if session is None or not session.turns:
            return None
        payload = {
            "exported_at": time.strftime("%Y-%m-%dT%H:%M:%S"), "user": session.user,
            "conversation": session.conversation_id, "endpoint": self.config.endpoint,
            "document": session.document.meta() if session.document is not None else None,
            "turns": [{"asked": t.display, "request": t.request, "model": t.model, "at": t.at,
                       "prompt": t.messages, "answer": t.answer, "error": t.error, "sources": t.sources,
                       "citations": t.citations, "feedback": {"id": t.feedback_id, "rating": t.rating,
                                                              "better_answer": t.better_answer}}
                      for t in session.turns],
        }
        folder = self.export_dir / session.conversation_id
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / f"lexalign-conversation-{session.conversation_id}.json"
        path.write_text(json.dumps(payload, indent=2, ensure_ascii=False), encoding="utf-8")
        return str(path)

    def clear(self, state: ChatSession | None, request: Any) -> tuple[Any, ...]:
        session = self._session(state, request)
        if session is not None:
            # a new conversation about the same contract: the contract, playbook and last review stay
            session = ChatSession(session.user, document=session.document, playbook=session.playbook,
                                  review=session.review)
            self.save(session)
        return [], sources_markdown(session), "New conversation.", session, False

    # ----------------------------------------------------------------------- clause-by-clause review

    def playbook_note(self, session: ChatSession | None) -> str:
        book = session.playbook if session is not None and session.playbook is not None else self.playbook
        name, count = Path(book.source).name, len(book.clauses)  # a file's name, or "all CUAD categories"
        return f"Playbook: {inert(name)} ({count} clause{'s' * (count != 1)})."

    def on_playbook(self, file: Any, state: ChatSession | None, request: Any) -> tuple[ChatSession | None, str, bool]:
        """Use an uploaded playbook YAML for this session's reviews; (state, status markdown, accepted).
        A refused playbook leaves the session on the app's playbook. Never raises."""
        from lexalign.serve.clause_review import PlaybookError, load_playbook

        session = self._session(state, request)
        if session is None:
            return state, _error("Not signed in; reload the page and sign in."), False
        if file is None:
            session.playbook = None
            return session, self.playbook_note(session), False
        path = str(file if isinstance(file, str) else getattr(file, "name", None) or getattr(file, "path", ""))
        name = getattr(file, "orig_name", None) or Path(path).name
        try:
            book = load_playbook(path)
        except PlaybookError as err:
            session.playbook = None
            # the upload's temporary path means nothing to the lawyer; the file's own name with its line does
            message = str(err).replace(path, name)
            return session, _error(f"Playbook not used: {message}") + "<br>" + self.playbook_note(session), False
        except Exception as err:  # noqa: BLE001 - an upload must never crash the app
            logger.exception("reading playbook %s failed", name)
            session.playbook = None
            return session, _error(f"Playbook not used: {name}: could not be read ({type(err).__name__})."), False
        session.playbook = dataclasses.replace(book, source=name)
        logger.info("%s uses playbook %s (%d clauses)", session.user, name, len(book.clauses))
        return session, self.playbook_note(session), True

    def review_all(self, state: ChatSession | None, request: Any, progress: Any = None
                   ) -> tuple[str, list[list[str]], str | None, str | None, ChatSession | None]:
        """Look for every playbook clause in the loaded contract and write the memo;
        (summary markdown, table rows, review.docx path, review.md path, state). Never raises.

        ``progress(fraction, desc=...)`` (gr.Progress) marks the start and the memo; the clauses in between are
        counted by the review's own progress bar, which gr.Progress(track_tqdm=True) follows.
        """
        from lexalign.serve.clause_review import (
            ClauseReviewError,
            ask_every_clause,
            shorten_quote,
            summary_line,
            write_memos,
        )

        session = self._session(state, request)
        if session is None:
            return _error("Not signed in; reload the page and sign in."), [], None, None, state
        session.review = None  # the table is emptied whatever happens next; the view's marks go with it
        # The page disables the button without a contract; a request made by hand gets the same answer.
        if session.document is None:
            return _error(NEEDS_CONTRACT_CLAUSES), [], None, None, session
        document = session.document
        book = session.playbook if session.playbook is not None else self.playbook
        started = time.monotonic()
        if progress is not None:
            progress(0, desc=f"Asking about {len(book.clauses)} clauses")
        try:
            rows, model = ask_every_clause(document, book, self.config, self.endpoint)
        except (EndpointError, ClauseReviewError) as err:
            return _error(str(err)), [], None, None, session
        if progress is not None:
            progress(1, desc="Writing the memo")
        # one folder per conversation: a lawyer's memo is never offered to another session
        folder = self.export_dir / session.conversation_id / "clause-review"
        try:
            folder.mkdir(parents=True, exist_ok=True)
            files = write_memos(rows, document, model, book, folder, {"conversation": session.conversation_id})
        except OSError as err:
            logger.exception("writing the clause review memo failed")
            return _error(f"The memo could not be written: {err.strerror or err}"), [], None, None, session
        markdown, docx_path = files["markdown"], files["docx"]
        self.store.audit(session.user, "chat_clause_review", {
            "conversation": session.conversation_id, "document": document.meta(), "model": model,
            "playbook": book.source, "clauses": len(rows), "found": sum(r.found for r in rows)})
        logger.info("%s reviewed %s: %d clauses in %.1f s", session.user, document.name, len(rows),
                    time.monotonic() - started)
        table = [[r.clause, r.status, shorten_quote(r.quote), r.location, r.risk_note] for r in rows]
        quotes = [{"clause": r.clause, **{k: c[k] for k in ("where", "label", "start", "end")}}
                  for r in rows for c in r.citations if is_located(c)]
        session.review = ClauseReview(document.sha256, model, summary_line(rows), table, quotes)
        self.save(session)
        return review_markdown(session), table, str(docx_path), str(markdown), session

    # ----------------------------------------------------------------------- layout

    def build(self) -> Any:
        import gradio as gr

        from lexalign.serve.review import CUAD_CATEGORIES, TASKS

        config = self.config
        with gr.Blocks(title=config.title, analytics_enabled=False) as demo:
            state = gr.State(None)
            with gr.Row():
                gr.Markdown(f"## {inert(config.title)}")
                who = gr.Markdown("", elem_id="who")
                gr.Button("Log out", link="/logout", size="sm", scale=0)
            with gr.Row(equal_height=False):
                with gr.Column(scale=1, min_width=300):
                    upload = gr.File(label="Contract (TXT, PDF or DOCX)", file_types=[".txt", ".pdf", ".docx"],
                                     type="filepath", elem_id="upload")
                    doc_status = gr.Markdown("No contract loaded.", elem_id="doc-status")
                    task = gr.Dropdown(choices=[(label, key) for key, label in TASKS.items()], value="clause",
                                       label="Review task", elem_id="task")
                    category = gr.Dropdown(choices=list(CUAD_CATEGORIES), value="Governing Law",
                                           label="Clause category (CUAD)", elem_id="category")
                    # Enabled once a contract is loaded (see review_controls); the note says why until then.
                    run = gr.Button("Run review", variant="primary", interactive=False, elem_id="run")
                    run_note = gr.Markdown(NEEDS_CONTRACT, elem_id="run-note")
                    gr.Markdown("Answers are drafts for a lawyer to check, not legal advice. Every quote is "
                                f"located in the contract; a quote marked \u201c{WARNING}\u201d is not in it.")
                with gr.Column(scale=2, min_width=400):
                    chatbot = gr.Chatbot(label="Conversation", elem_id="chat", height=460, sanitize_html=True,
                                         render_markdown=True, buttons=["copy"])
                    with gr.Row():
                        message = gr.Textbox(label="Ask about the contract", placeholder="Type a question and press Enter",
                                             lines=1, max_lines=6, scale=4, elem_id="message",
                                             max_length=config.max_question_chars)
                        send = gr.Button("Send", scale=0, elem_id="send")
                    status = gr.Markdown("", elem_id="status")
                    with gr.Row():
                        better = gr.Textbox(label="Better answer (optional; write it before rating)", lines=2,
                                            max_lines=10, scale=4, elem_id="better-answer")
                        with gr.Column(scale=1, min_width=160):
                            up = gr.Button(RATING_LABELS[1], interactive=False, elem_id="thumbs-up")
                            down = gr.Button(RATING_LABELS[-1], interactive=False, elem_id="thumbs-down")
                    feedback_status = gr.Markdown("", elem_id="feedback-status")
                    with gr.Row():
                        export = gr.DownloadButton("Download conversation (JSON)", value=None, elem_id="export",
                                                   interactive=False)
                        clear = gr.Button("New conversation", elem_id="clear")
                    sources = gr.Markdown(sources_markdown(None), elem_id="sources")
                with gr.Column(scale=2, min_width=360):
                    # the contract beside the conversation; the sources' links scroll it to their passage
                    contract = gr.HTML(contract_view(None), elem_id="contract-view", js_on_load=CITE_LINKS_JS)
            gr.Markdown("### Clause-by-clause review")
            with gr.Row(equal_height=False):
                with gr.Column(scale=1, min_width=300):
                    playbook = gr.File(label="Playbook (YAML, optional)", file_types=[".yaml", ".yml"],
                                       type="filepath", elem_id="playbook")
                    playbook_status = gr.Markdown(self.playbook_note(None), elem_id="playbook-status")
                    # Enabled with "Run review", once a contract is loaded.
                    review_all = gr.Button("Review all clauses", variant="primary", interactive=False,
                                           elem_id="review-all")
                    review_all_note = gr.Markdown(NEEDS_CONTRACT_CLAUSES, elem_id="review-all-note")
                    with gr.Row():
                        memo_docx = gr.DownloadButton("Download memo (Word)", value=None, interactive=False,
                                                      elem_id="memo-docx")
                        memo_md = gr.DownloadButton("Download memo (Markdown)", value=None, interactive=False,
                                                    elem_id="memo-md")
                with gr.Column(scale=3, min_width=400):
                    clause_summary = gr.Markdown(NO_REVIEW, elem_id="clause-summary")
                    clause_table = gr.Dataframe(headers=CLAUSE_COLUMNS, datatype="str", interactive=False,
                                                wrap=True, label="Clauses", elem_id="clause-table",
                                                column_widths=["14%", "9%", "37%", "18%", "22%"])

            def feedback_buttons(enabled: bool) -> tuple[Any, Any]:
                return gr.Button(interactive=enabled), gr.Button(interactive=enabled)

            def export_button(session: ChatSession | None, request: gr.Request) -> Any:
                path = self.export(session, request)
                return gr.DownloadButton(value=path, interactive=path is not None)

            def on_load(request: gr.Request) -> tuple[Any, ...]:
                # the user's saved session comes back: contract, conversation, sources, view and last review
                user = self._user(request)
                session = self.restore(user) if user else None
                loaded = session is not None and session.document is not None
                last = session.last_answer() if session is not None else None
                table = session.review.table if session is not None and session.review is not None else []
                return ((f"signed in as `{inert(user)}`" if user else "not signed in"), session,
                        chat_messages(session), sources_markdown(session), document_status(session),
                        *review_controls(loaded), *review_controls(loaded), review_markdown(session),
                        gr.Dataframe(value=table, headers=CLAUSE_COLUMNS), contract_view(session),
                        *feedback_buttons(last is not None and last.feedback_id is None),
                        export_button(session, request))

            def review_controls(loaded: bool) -> tuple[Any, Any]:
                return gr.Button(interactive=loaded), gr.Markdown(visible=not loaded)

            def on_upload(file: Any, session: ChatSession | None, request: gr.Request) -> tuple[Any, ...]:
                new_state, text, src = self.on_upload(file, session, request)
                loaded = new_state is not None and new_state.document is not None
                refused = file is not None and not loaded
                if refused:
                    logger.info("upload refused for %s: %s", self._user(request), text)
                # A refused file leaves the box, so the box never shows a file the answers do not use. Setting
                # the value fires neither upload nor clear, so the error stays on screen.
                return (new_state, text, src, *review_controls(loaded), None if refused else gr.skip())

            def stream(request_data: dict[str, Any], session: ChatSession | None, request: gr.Request
                       ) -> Iterator[tuple[Any, ...]]:
                for messages, src, stat, new_state, enabled in self.ask(request_data, session, request):
                    # the download and the contract view (its marks) are refreshed with the final update only:
                    # a click right after "Done" gets it all, and a large contract is not re-sent per token
                    final = new_state is None or not new_state.turns or new_state.turns[-1].done
                    yield (messages, src, stat, new_state, *feedback_buttons(enabled),
                           export_button(new_state, request) if final else gr.skip(),
                           contract_view(new_state) if final else gr.skip())

            def on_run(task_key: str, category_name: str, text: str, session: ChatSession | None,
                       request: gr.Request) -> Iterator[tuple[Any, ...]]:
                data = {"task": task_key, "category": category_name,
                        "question": (text or "").strip() if task_key == "question" else None}
                yield from stream(data, session, request)

            def on_send(text: str, session: ChatSession | None, request: gr.Request) -> Iterator[tuple[Any, ...]]:
                yield from stream({"task": "question", "question": (text or "").strip()}, session, request)

            def on_rate(rating: int) -> Any:
                def handler(text: str, session: ChatSession | None, request: gr.Request) -> tuple[Any, ...]:
                    stat, new_state, enabled, box = self.on_feedback(rating, text, session, request)
                    return (stat, new_state, *feedback_buttons(enabled), box, export_button(new_state, request))
                return handler

            def on_clear(session: ChatSession | None, request: gr.Request) -> tuple[Any, ...]:
                messages, src, stat, new_state, enabled = self.clear(session, request)
                return (messages, src, stat, new_state, *feedback_buttons(enabled), "",
                        gr.DownloadButton(value=None, interactive=False), contract_view(new_state))

            def document_changed(session: ChatSession | None) -> tuple[Any, ...]:
                # A new contract (or none) empties the last review (its table and memo belong to the old one) and
                # shows the new contract in the view.
                loaded = session is not None and session.document is not None
                return (gr.Button(interactive=loaded), gr.Markdown(visible=not loaded),
                        review_markdown(session),
                        gr.Dataframe(value=[], headers=CLAUSE_COLUMNS),
                        gr.DownloadButton(value=None, interactive=False),
                        gr.DownloadButton(value=None, interactive=False), contract_view(session))

            def on_playbook(file: Any, session: ChatSession | None, request: gr.Request) -> tuple[Any, ...]:
                new_state, text, accepted = self.on_playbook(file, session, request)
                # like a refused contract, a refused playbook leaves the box (its error stays)
                return new_state, text, None if file is not None and not accepted else gr.skip()

            # track_tqdm: the review's own progress bar (one step per clause) drives the page's progress
            def on_review_all(session: ChatSession | None, request: gr.Request,
                              progress: gr.Progress = gr.Progress(track_tqdm=True)) -> tuple[Any, ...]:
                summary, rows, docx_path, md_path, new_state = self.review_all(session, request, progress)
                return (summary, gr.Dataframe(value=rows, headers=CLAUSE_COLUMNS), new_state,
                        gr.DownloadButton(value=docx_path, interactive=docx_path is not None),
                        gr.DownloadButton(value=md_path, interactive=md_path is not None), contract_view(new_state))

            def show_category(task_key: str) -> Any:
                return gr.Dropdown(visible=task_key == "clause")

            # The contract view is refreshed with each answer but shows no progress: it stays readable meanwhile.
            answer_progress = [chatbot, sources, status, state, up, down, export]
            answer_outputs = answer_progress + [contract]
            demo.load(on_load, None, [who, state, chatbot, sources, doc_status, run, run_note, review_all,
                                      review_all_note, clause_summary, clause_table, contract, up, down, export],
                      api_visibility="private")
            # upload and clear, not change: change also fires when on_upload empties the box after a refused file,
            # and would replace the error with "No contract loaded".
            upload_outputs = [state, doc_status, sources, run, run_note, upload]
            reset_outputs = [review_all, review_all_note, clause_summary, clause_table, memo_docx, memo_md, contract]
            upload.upload(on_upload, [upload, state], upload_outputs, api_visibility="private"
                          ).then(document_changed, [state], reset_outputs, api_visibility="private")
            upload.clear(on_upload, [upload, state], upload_outputs, api_visibility="private"
                         ).then(document_changed, [state], reset_outputs, api_visibility="private")
            playbook.upload(on_playbook, [playbook, state], [state, playbook_status, playbook],
                            api_visibility="private")
            playbook.clear(on_playbook, [playbook, state], [state, playbook_status, playbook],
                           api_visibility="private")
            review_progress = [clause_summary, clause_table, state, memo_docx, memo_md]
            review_all.click(on_review_all, [state], review_progress + [contract], show_progress_on=review_progress,
                             api_visibility="private", concurrency_id="answer")
            task.change(show_category, [task], [category], api_visibility="private")
            run.click(on_run, [task, category, message, state], answer_outputs, show_progress_on=answer_progress,
                      api_visibility="private", concurrency_id="answer")
            send.click(on_send, [message, state], answer_outputs, show_progress_on=answer_progress,
                       api_visibility="private", concurrency_id="answer"
                       ).then(lambda: "", None, [message], api_visibility="private")
            message.submit(on_send, [message, state], answer_outputs, show_progress_on=answer_progress,
                           api_visibility="private", concurrency_id="answer"
                           ).then(lambda: "", None, [message], api_visibility="private")
            up.click(on_rate(1), [better, state], [feedback_status, state, up, down, better, export],
                     api_visibility="private")
            down.click(on_rate(-1), [better, state], [feedback_status, state, up, down, better, export],
                       api_visibility="private")
            clear.click(on_clear, [state], [chatbot, sources, status, state, up, down, feedback_status, export,
                                            contract], api_visibility="private")
        demo.queue(default_concurrency_limit=config.concurrency_limit)
        return demo

    def launch_kwargs(self) -> dict[str, Any]:
        import gradio as gr

        return {
            "server_name": self.config.host, "server_port": self.config.port, "auth": self.auth,
            "auth_message": "Sign in with your LexAlign account (an admin creates it with "
                            "<code>lexalign annotators add</code>).",
            "show_error": False, "ssr_mode": False, "run_history": False, "mcp_server": False,
            "enable_monitoring": False, "footer_links": [], "quiet": True,
            "max_file_size": int(self.config.max_upload_mb * 1024 * 1024),
            "theme": gr.themes.Default(font=_THEME_FONTS), "css": CSS,
            "allowed_paths": [str(self.export_dir)],
        }


def gr_skip() -> Any:
    import gradio as gr

    return gr.skip()


def run_chat(config_path: str | Path | None, overrides: list[str] | None = None, endpoint: str | None = None) -> None:
    """``lexalign chat``: load the config, open the store, serve the UI until interrupted."""
    from lexalign.data.store import open_store

    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
    for name in ("httpx", "httpx2"):  # one INFO line per request otherwise
        logging.getLogger(name).setLevel(logging.WARNING)
    overrides = list(overrides or []) + ([f"endpoint={endpoint}"] if endpoint else [])
    config = load_config(ChatConfig, config_path, overrides)
    api_key = os.environ.get(config.api_key_env, "").strip() or None
    if api_key is None:
        logger.warning("%s is not set: requests go to %s without an API key (a lexalign server refuses them)",
                       config.api_key_env, config.endpoint)
    store = open_store(config.store, synchronous=config.sqlite_synchronous)
    endpoint_client = Endpoint(config, api_key)
    try:
        model, context = endpoint_client.resolve()
        logger.info("model %s (context %d tokens) at %s", model, context, config.endpoint)
    except EndpointError as err:
        logger.warning("%s The app starts anyway and retries on the first question.", err)
    if not any(a.active for a in store.list_annotators()):
        logger.warning("the store has no active account: create one with `lexalign annotators add NAME --store %s`",
                       store.safe_url)
    app = ChatApp(store, config, endpoint_client)
    demo = app.build()
    print(f"chat UI: http://{config.host}:{config.port}  (endpoint {config.endpoint}; store {store.safe_url}; "
          "Ctrl+C stops)", flush=True)
    try:
        demo.launch(**app.launch_kwargs())
    finally:
        store.close()
