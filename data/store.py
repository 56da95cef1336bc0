"""The preference store: annotators, ranking tasks, assignments, rankings, chat feedback and an audit log
in one SQL database (SQLAlchemy 2.0 Core). Open it by URL with ``open_store(url)``:

    sqlite:///runs/prefs.db                      embedded default (a file; created on first use)
    postgresql+psycopg://user:pw@host/lexalign   a shared server (install a driver, e.g. ``psycopg``)

Tables: ``schema_version``, ``annotators``, ``tasks``, ``candidates``, ``assignments``, ``rankings``,
``feedback`` (ratings from the lawyers' chat UI) and ``audit_events`` (``lexalign.data.store_schema``; what
the store accepts is checked in ``lexalign.data.store_input``). Opening a store written by a newer
schema version (or by an older one without a migration) fails with a ``StoreError`` instead of guessing; an
older version with a migration is upgraded in place, in the opening transaction (all or nothing).

Annotator kinds. Every annotator is of kind ``human`` (a person: an app account, or an imported lawyer) or
``derived`` (rankings computed from labels, e.g. ``gold:cuad`` from the CUAD lawyers' spans, see
``lexalign.evaluation.gold``). Derived annotators are named ``<method>:<name>``; a human username can never
contain ":", so a derived annotator never logs in, is never assigned a task, and no person can take its name.
Schema version 2 added the kind (version 1 stores are migrated: every existing annotator is human).

Durability and transactions (WAL, ``synchronous``, ``BEGIN IMMEDIATE``, the FIFO write queue, retries) belong to
the database layer under the store: ``lexalign.data.store_db``.

Assignment. ``next_task_for(annotator)`` first returns the annotator's open assignment, if any; otherwise
it picks the oldest task that (a) has fewer than ``k`` live assignments and (b) was never assigned to this
annotator (a partial index on ``assigned < k`` keeps this fast however many tasks are finished), raises the
task's ``assigned`` counter (``UPDATE ... WHERE assigned < k``, which must touch one row) and inserts an
assignment in a free *slot* ``0 <= slot < k``. Two unique constraints make the rules hold whatever the
isolation level: (task, annotator) — a task never goes twice to the same person
(a skipped assignment keeps its row) — and (task, slot) — never more than ``k`` live assignments (a skip
sets the slot to NULL, freeing it). On PostgreSQL the task row is locked with ``FOR UPDATE SKIP LOCKED``
so concurrent annotators take different tasks; a constraint violation from a race is retried.

Submissions. ``submit_ranking`` validates everything server-side and raises ``SubmissionError`` (nothing
stored) when the ranks are not a complete weak ordering of exactly the task's candidates (1 = best, ties
share a rank, no gaps), a candidate id is unknown, the rationale is too long, holds control characters or
HTML markup (rationales are plain text; they are also always rendered escaped), a flag is unknown or names an
answer that is not the task's, the
task is not assigned to this annotator, or the form token is unknown, stale or already used (each
assignment has one random token; a ranking stores it under a unique constraint, so a replayed form is
refused even under a race).

Flags. A flag is on the whole task (``flags=["bad_task"]``) or on one answer: ``submit_ranking(answer_flags={
candidate id: [flags]})`` stores ``wrong_law@2``, the flag on the task's answer at position 2 (0-based, the order
of the stored ranks and of an export's responses), so a flag means the same after an export as in the app.
``ANSWER_FLAGS`` are about what one answer says; ``TASK_FLAGS`` are about the task itself (a missing or unreadable
excerpt) and are refused on a single answer. Any flag may still be given for the whole task (older submissions
did so).

Export filters. ``task_rankings`` (what an export reads) keeps the rankings of chosen task sources, annotator
kinds, annotators (by username) and submission days: ``submitted_from`` / ``submitted_to`` are calendar days
(``YYYY-MM-DD``, UTC), both inclusive; a malformed day or an empty range is a ``StoreError`` naming the field.

Withdrawal. ``withdraw_ranking`` lets an annotator take back one of their own app submissions until an admin
exports: in one transaction the ranking is deleted, the annotator's assignment of the task is reopened (same
slot, same form token, so the answers come back in the order first shown) and a ``ranking_withdrawn`` audit
event keeps who withdrew what and when. Exports are the ``export`` audit events (``reward/prefs.py`` writes one
after every export); a ranking submitted at or before any export's time is locked, because it may be in that
export's files. Imported and derived rankings were never submitted in the app and cannot be withdrawn.
"""

from __future__ import annotations

import json
import logging
import secrets
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta, timezone
from typing import Any, Literal

from sqlalchemy import exists, func, insert, select, text, update
from sqlalchemy.engine import Connection
from sqlalchemy.exc import IntegrityError

from lexalign.data.store_db import MAX_RETRIES, Database
from lexalign.data.store_input import (
    ANSWER_FLAG_SEP,
    DEFAULT_RATIONALE_MAX,
    FLAGS,
    MIN_PASSWORD_CHARS,
    ROLES,
    TASK_FLAGS,
    USERNAME_PATTERN,
    StoreError,
    SubmissionError,
    check_kinds,
    check_plain_text,
    check_prompt,
    check_ranks,
    check_username,
    control_chars,
    day_start,
    submission_period,
    unique_names,
)
from lexalign.data.store_schema import (
    annotators,
    assignments,
    audit_events,
    candidates,
    feedback,
    rankings,
    tasks,
    utc_now,
)

logger = logging.getLogger(__name__)

DEFAULT_URL = "sqlite:///runs/prefs.db"


# --------------------------------------------------------------------------- plain result objects


@dataclass(frozen=True)
class Annotator:
    id: int
    username: str
    role: str
    active: bool
    created_at: datetime | None = None
    kind: str = "human"

    @property
    def is_admin(self) -> bool:
        return self.role == "admin"


@dataclass(frozen=True)
class Candidate:
    id: int
    position: int
    text: str
    model: str | None = None


@dataclass(frozen=True)
class TaskView:
    """One task as shown to one annotator: the prompt, its candidates and the form token to submit with."""

    task_id: int
    prompt_id: str
    prompt: str | list[dict[str, str]]
    meta: dict[str, Any]
    source: str
    candidates: tuple[Candidate, ...]
    form_token: str


@dataclass(frozen=True)
class Progress:
    done: int
    skipped: int
    open: int
    remaining: int  # tasks still available to this annotator, the open one included

    @property
    def total(self) -> int:
        return self.done + self.remaining


@dataclass(frozen=True)
class AnnotatorProgress:
    username: str
    role: str
    active: bool
    done: int
    skipped: int
    open: int
    last_submitted_at: datetime | None
    kind: str = "human"


@dataclass(frozen=True)
class StoredRanking:
    annotator: str
    ranks: tuple[int, ...]  # aligned with TaskRankings.candidates (position order)
    none_acceptable: bool
    rationale: str | None
    flags: tuple[str, ...]
    submitted_at: datetime | None
    kind: str = "human"   # the annotator's kind: human or derived


@dataclass(frozen=True)
class TaskRankings:
    task_id: int
    prompt_id: str
    prompt: str | list[dict[str, str]]
    meta: dict[str, Any]
    source: str
    candidates: tuple[Candidate, ...]
    rankings: tuple[StoredRanking, ...]


@dataclass(frozen=True)
class DerivedRanking:
    """A ranking computed from labels, not given by a person (``add_derived_rankings``)."""

    task_id: int
    annotator: str                 # <method>:<name>, e.g. gold:cuad
    ranks: tuple[int, ...]         # in candidate position order, 1 = best, ties share a rank
    none_acceptable: bool
    rationale: str | None = None   # how the ranks were derived (plain text)


@dataclass(frozen=True)
class WithdrawnRanking:
    """A ranking its annotator took back (``withdraw_ranking``): what it said, and the task reopened for them."""

    ranking_id: int
    task_id: int
    ranks: dict[int, int]          # candidate id -> rank, as submitted
    none_acceptable: bool
    rationale: str | None
    flags: tuple[str, ...]
    submitted_at: datetime | None
    task: TaskView                 # the reopened assignment (its original form token: the same answer order)


@dataclass
class DerivedResult:
    rankings_added: int = 0
    duplicates: int = 0            # the same ranking was already stored (a rerun)
    annotators_created: list[str] = field(default_factory=list)


@dataclass
class ImportResult:
    tasks_created: int = 0
    tasks_reused: int = 0
    rankings_added: int = 0
    duplicates: int = 0
    annotators_created: list[str] = field(default_factory=list)


def _candidate_fields(candidate: Any, index: int) -> tuple[str, str | None]:
    if isinstance(candidate, str):
        text_, model = candidate, None
    elif isinstance(candidate, Mapping):
        text_, model = candidate.get("text"), candidate.get("model")
    elif isinstance(candidate, Candidate):
        text_, model = candidate.text, candidate.model
    else:
        raise StoreError(f"candidates[{index}]: expected a string or {{'text': ..., 'model': ...}}")
    if not isinstance(text_, str) or not text_.strip():
        raise StoreError(f"candidates[{index}]: the text must be a non-empty string")
    return text_, model


# --------------------------------------------------------------------------- the store


class Store(Database):
    """The operations the apps and the CLI need, on one preference database (``Database``: connections,
    transactions, schema)."""

    def __init__(self, url: str, *, synchronous: str = "FULL", rationale_max_chars: int = DEFAULT_RATIONALE_MAX,
                 pool_size: int = 8) -> None:
        self.rationale_max_chars = rationale_max_chars
        self._task_cache: dict[int, tuple[Any, tuple[Candidate, ...]]] = {}
        super().__init__(url, synchronous=synchronous, pool_size=pool_size)

    # ----------------------------------------------------------------------- audit

    @staticmethod
    def _audit(conn: Connection, actor: str, action: str, detail: Mapping[str, Any] | None = None) -> None:
        actor = actor.replace("\x00", "\ufffd")  # PostgreSQL text cannot hold NUL (a login attempt's name)
        conn.execute(insert(audit_events).values(at=utc_now(), actor=actor[:64], action=action[:64],
                                                 detail=dict(detail) if detail else None))

    def audit(self, actor: str, action: str, detail: Mapping[str, Any] | None = None, *, durable: bool = True) -> None:
        """Record one event (login, submission, skip, export, annotator creation, refused admin access...)."""
        json.dumps(detail or {}, default=str)  # fail here, not in the driver, when the detail is not JSON

        def run() -> None:
            with self._write(durable) as conn:
                self._audit(conn, actor, action, json.loads(json.dumps(detail, default=str)) if detail else None)

        self._retrying("writing an audit event", run)

    def audit_events(self, action: str | None = None, limit: int = 1000) -> list[dict[str, Any]]:
        query = select(audit_events).order_by(audit_events.c.id.desc()).limit(limit)
        if action:
            query = query.where(audit_events.c.action == action)
        with self._read() as conn:
            return [dict(row._mapping) for row in conn.execute(query)]

    # ----------------------------------------------------------------------- annotators

    def add_annotator(self, username: str, password: str | None, role: Literal["annotator", "admin"] = "annotator", *,
                      actor: str = "cli", active: bool = True) -> Annotator:
        """Create an account. ``password=None`` creates one that cannot log in (imported annotators)."""
        if not isinstance(username, str) or not USERNAME_PATTERN.match(username):
            raise StoreError(f"username {username!r}: use 1-64 letters, digits, '.', '_', '@' or '-', starting with "
                             "a letter or digit")
        if role not in ROLES:
            raise StoreError(f"role {role!r}: expected one of {', '.join(ROLES)}")
        password_hash = None
        if password is not None:
            if len(password) < MIN_PASSWORD_CHARS:
                raise StoreError(f"the password must have at least {MIN_PASSWORD_CHARS} characters")
            password_hash = _hasher().hash(password)

        def run() -> Annotator:
            with self._write() as conn:
                try:
                    row_id = conn.execute(insert(annotators).values(
                        username=username, password_hash=password_hash, role=role, active=active,
                        created_at=utc_now())).inserted_primary_key[0]
                except IntegrityError:
                    raise StoreError(f"annotator {username!r} already exists; choose another username") from None
                self._audit(conn, actor, "annotator_created", {"username": username, "role": role,
                                                               "can_login": password_hash is not None})
            return Annotator(row_id, username, role, active)

        return self._retrying("adding an annotator", run)

    def set_password(self, username: str, password: str, *, actor: str = "cli") -> None:
        if len(password) < MIN_PASSWORD_CHARS:
            raise StoreError(f"the password must have at least {MIN_PASSWORD_CHARS} characters")
        password_hash = _hasher().hash(password)
        with self._write() as conn:
            # A derived annotator (gold:cuad) is not a person: it must never get credentials.
            result = conn.execute(update(annotators).where(annotators.c.username == username,
                                                           annotators.c.kind == "human")
                                  .values(password_hash=password_hash))
            if result.rowcount != 1:
                derived = conn.execute(select(annotators.c.id).where(annotators.c.username == username)).first()
                raise StoreError(f"{username!r} is a derived annotator (rankings computed from labels); it cannot "
                                 "log in" if derived else f"no annotator named {username!r}")
            self._audit(conn, actor, "password_changed", {"username": username})

    def set_active(self, username: str, active: bool, *, actor: str = "cli") -> None:
        """Enable or disable an account (a disabled one cannot log in, take or submit tasks); nobody can disable
        their own account, so an admin never locks themself out by mistake."""
        if not active and actor == username:
            raise StoreError(f"you cannot disable your own account ({username!r}); ask another admin to do it")
        with self._write() as conn:
            result = conn.execute(update(annotators).where(annotators.c.username == username).values(active=active))
            if result.rowcount != 1:
                raise StoreError(f"no annotator named {username!r}")
            self._audit(conn, actor, "annotator_activated" if active else "annotator_deactivated", {"username": username})

    def get_annotator(self, username: str) -> Annotator | None:
        with self._read() as conn:
            row = conn.execute(select(annotators).where(annotators.c.username == username)).first()
        return _annotator(row) if row else None

    def list_annotators(self) -> list[Annotator]:
        with self._read() as conn:
            return [_annotator(row) for row in conn.execute(select(annotators).order_by(annotators.c.username))]

    def is_admin(self, username: str | None) -> bool:
        if not username:
            return False
        annotator = self.get_annotator(username)
        return bool(annotator and annotator.active and annotator.role == "admin")

    def verify_login(self, username: str, password: str) -> Annotator | None:
        """The active annotator for these credentials, or None. Records a ``login`` audit event either way."""
        from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError

        hasher = _hasher()
        row = None
        if isinstance(username, str) and USERNAME_PATTERN.match(username or ""):
            with self._read() as conn:
                row = conn.execute(select(annotators).where(annotators.c.username == username)).first()
        ok = False
        if row is not None and row.active and row.password_hash:
            try:
                ok = hasher.verify(row.password_hash, password or "")
            except (VerifyMismatchError, VerificationError, InvalidHashError):
                ok = False
        else:
            try:  # same work for unknown users, so response time does not reveal which usernames exist
                hasher.verify(_dummy_hash(), password or "")
            except (VerifyMismatchError, VerificationError, InvalidHashError):
                pass
        self.audit(str(username)[:64], "login", {"ok": ok}, durable=False)
        if not ok or row is None:
            return None
        if hasher.check_needs_rehash(row.password_hash):
            with self._write() as conn:
                conn.execute(update(annotators).where(annotators.c.id == row.id)
                             .values(password_hash=hasher.hash(password)))
        return _annotator(row)

    def _active_annotator(self, conn: Connection, username: str, error: type[StoreError] = StoreError) -> Any:
        if not isinstance(username, str) or not USERNAME_PATTERN.match(username):  # never a stored name: no query
            raise error(f"no annotator named {username!r}")
        row = conn.execute(select(annotators.c.id, annotators.c.role, annotators.c.active, annotators.c.kind)
                           .where(annotators.c.username == username)).first()
        if row is None:
            raise error(f"no annotator named {username!r}")
        if not row.active:
            raise error(f"annotator {username!r} is deactivated")
        return row

    # ----------------------------------------------------------------------- tasks

    def add_task(self, prompt_id: str, prompt: str | list[dict[str, str]], candidates: Sequence[str | Mapping[str, Any]],
                 meta: Mapping[str, Any] | None = None, k: int = 3, *, source: str = "app", exist_ok: bool = False) -> int:
        """Add a ranking task with its candidate answers (kept in the given order); returns the task id.

        ``meta`` holds what the UI shows besides the prompt (``excerpt``, ``question``) and anything worth
        keeping (document ids, generation settings). ``k`` = how many different annotators should rank it.
        """
        prompt_value, candidate_rows = self._check_task(prompt_id, prompt, candidates, k)

        def run() -> int:
            with self._write() as conn:
                existing = conn.execute(select(tasks.c.id).where(tasks.c.prompt_id == prompt_id)).scalar()
                if existing is not None:
                    if exist_ok:
                        return int(existing)
                    raise StoreError(f"a task with prompt_id {prompt_id!r} already exists (task {existing})")
                return self._insert_task(conn, prompt_id, prompt_value, candidate_rows, meta, k, source)

        return self._retrying("adding a task", run)

    @staticmethod
    def _check_task(prompt_id: str, prompt: Any, candidates: Sequence[Any], k: int
                    ) -> tuple[str | list[dict[str, str]], list[tuple[str, str | None]]]:
        if not isinstance(prompt_id, str) or not prompt_id.strip() or len(prompt_id) > 200:
            raise StoreError(f"prompt_id {prompt_id!r}: expected a non-empty string of at most 200 characters")
        if isinstance(k, bool) or not isinstance(k, int) or k < 0:
            raise StoreError(f"k={k!r}: expected a whole number >= 0 (annotators wanted per task)")
        if isinstance(candidates, (str, bytes)) or len(candidates) < 2:
            raise StoreError(f"task {prompt_id!r}: needs at least 2 candidate answers to rank")
        return check_prompt(prompt), [_candidate_fields(c, i) for i, c in enumerate(candidates)]

    @staticmethod
    def _insert_task(conn: Connection, prompt_id: str, prompt: Any, candidate_rows: list[tuple[str, str | None]],
                     meta: Mapping[str, Any] | None, k: int, source: str) -> int:
        task_id = conn.execute(insert(tasks).values(
            prompt_id=prompt_id, prompt=prompt, meta=dict(meta) if meta else None, source=source, k=k, assigned=0,
            created_at=utc_now())).inserted_primary_key[0]
        conn.execute(insert(candidates), [
            {"task_id": task_id, "position": i, "text": text_, "model": model}
            for i, (text_, model) in enumerate(candidate_rows)])
        return int(task_id)

    def task_count(self) -> int:
        with self._read() as conn:
            return int(conn.execute(select(func.count()).select_from(tasks)).scalar_one())

    def _task_parts(self, conn: Connection, task_id: int) -> tuple[Any, tuple[Candidate, ...]]:
        """A task row and its candidates; both never change once written, so they are cached in-process."""
        cached = self._task_cache.get(task_id)
        if cached is None:
            task = conn.execute(select(tasks).where(tasks.c.id == task_id)).one()
            cands = tuple(Candidate(c.id, c.position, c.text, c.model) for c in conn.execute(
                select(candidates).where(candidates.c.task_id == task_id).order_by(candidates.c.position)))
            cached = (task, cands)
            if len(self._task_cache) > 50_000:
                self._task_cache.clear()
            self._task_cache[task_id] = cached
        return cached

    def _task_view(self, conn: Connection, task_id: int, form_token: str) -> TaskView:
        task, cands = self._task_parts(conn, task_id)
        return TaskView(task.id, task.prompt_id, task.prompt, dict(task.meta or {}), task.source, cands, form_token)

    def next_task_for(self, username: str) -> TaskView | None:
        """The annotator's open task, else a newly assigned one (oldest first), else None when none is left."""
        with self._read() as conn:
            annotator = self._active_annotator(conn, username)
            open_row = conn.execute(
                select(assignments.c.task_id, assignments.c.form_token)
                .where(assignments.c.annotator_id == annotator.id, assignments.c.status == "open")
                .order_by(assignments.c.id).limit(1)).first()
            if open_row is not None:
                return self._task_view(conn, open_row.task_id, open_row.form_token)

        mine = exists().where(assignments.c.task_id == tasks.c.id, assignments.c.annotator_id == annotator.id)
        pick = (select(tasks.c.id, tasks.c.k).where(text("assigned < k"), ~mine).order_by(tasks.c.id).limit(1)
                .with_for_update(skip_locked=True, of=tasks))
        pick_waiting = (select(tasks.c.id, tasks.c.k).where(text("assigned < k"), ~mine).order_by(tasks.c.id).limit(1)
                        .with_for_update(of=tasks))

        def run() -> TaskView | None:
            with self._write(durable=False) as conn:  # an assignment lost to a power cut is simply made again
                # Another tab of the same annotator may have taken a task since the read above.
                open_row = conn.execute(
                    select(assignments.c.task_id, assignments.c.form_token)
                    .where(assignments.c.annotator_id == annotator.id, assignments.c.status == "open")
                    .order_by(assignments.c.id).limit(1)).first()
                if open_row is not None:
                    return self._task_view(conn, open_row.task_id, open_row.form_token)
                chosen = conn.execute(pick).first()
                if chosen is None and self.dialect == "postgresql":
                    # SKIP LOCKED also skips the last open tasks while a concurrent assigner holds them: wait for
                    # those locks instead of answering "nothing left" (PostgreSQL re-checks assigned < k after).
                    chosen = conn.execute(pick_waiting).first()
                if chosen is None:
                    return None
                taken = conn.execute(update(tasks).where(tasks.c.id == chosen.id, text("assigned < k"))
                                     .values(assigned=tasks.c.assigned + 1))
                if taken.rowcount != 1:  # filled by a concurrent assigner since the pick (PostgreSQL)
                    raise IntegrityError("task filled concurrently", None, Exception("race"))
                used = set(conn.execute(select(assignments.c.slot).where(
                    assignments.c.task_id == chosen.id, assignments.c.slot.is_not(None))).scalars())
                slot = min(set(range(chosen.k)) - used)
                token = secrets.token_urlsafe(24)
                conn.execute(insert(assignments).values(
                    task_id=chosen.id, annotator_id=annotator.id, slot=slot, status="open", form_token=token,
                    assigned_at=utc_now()))
                return self._task_view(conn, chosen.id, token)

        for attempt in range(MAX_RETRIES):
            try:
                return self._retrying("assigning a task", run)
            except IntegrityError:  # a concurrent assigner took the slot (PostgreSQL); pick again
                logger.debug("assignment race for %s (attempt %d); retrying", username, attempt + 1)
                time.sleep(0.005 * (attempt + 1))
        raise StoreError(f"could not assign a task to {username!r} after {MAX_RETRIES} attempts (heavy contention); try again")

    # ----------------------------------------------------------------------- submissions

    @staticmethod
    def _flag(flag: Any) -> str:
        if not isinstance(flag, str) or flag not in FLAGS:   # a list or dict would not even hash
            raise SubmissionError(f"unknown flag {str(flag)[:40]!r}; expected some of: {', '.join(FLAGS)}")
        return flag

    def _prevalidate(self, ranks: Any, none_acceptable: Any, rationale: Any, flags: Any, form_token: Any
                     ) -> tuple[dict[int, int], str | None, list[str]]:
        if not isinstance(form_token, str) or not form_token:
            raise SubmissionError("missing form token; reload the page to get the current task")
        if not isinstance(none_acceptable, bool):
            raise SubmissionError(f"none_acceptable must be true or false; got {none_acceptable!r}")
        if not isinstance(ranks, Mapping) or not ranks:
            raise SubmissionError("ranks must map each candidate id to its rank (1 = best, ties share a rank)")
        clean: dict[int, int] = {}
        for key, value in ranks.items():
            try:
                cid = int(key)
            except (TypeError, ValueError):
                raise SubmissionError(f"unknown candidate id {key!r}") from None
            if isinstance(value, bool) or not isinstance(value, int):
                raise SubmissionError(f"the rank of candidate {cid} must be a whole number (1 = best); got {value!r}")
            clean[cid] = value
        try:
            rationale_text = check_plain_text(rationale, "the rationale", self.rationale_max_chars)
        except ValueError as err:
            raise SubmissionError(str(err)) from None
        flag_list: list[str] = []
        for flag in flags or []:
            if self._flag(flag) not in flag_list:
                flag_list.append(flag)
        return clean, rationale_text, flag_list

    def _answer_flags(self, answer_flags: Any) -> dict[int, list[str]]:
        """{candidate id: [flags]} checked (ids as ints, known flags, no repeats)."""
        if answer_flags is None:
            return {}
        if not isinstance(answer_flags, Mapping):
            raise SubmissionError("answer_flags must map candidate ids to lists of flags")
        clean: dict[int, list[str]] = {}
        for key, values in answer_flags.items():
            try:
                cid = int(key)
            except (TypeError, ValueError):
                raise SubmissionError(f"unknown candidate id {key!r} in the answer flags") from None
            if isinstance(values, str) or not isinstance(values, Sequence):
                raise SubmissionError(f"the flags of candidate {cid} must be a list; got {values!r}")
            for flag in values:
                if self._flag(flag) in TASK_FLAGS:
                    raise SubmissionError(f"flag {flag!r} ({TASK_FLAGS[flag]}) is about the whole task, not one "
                                          "answer; give it with the task's flags")
                if flag not in clean.setdefault(cid, []):
                    clean[cid].append(flag)
        return clean

    def _check_assignment(self, conn: Connection, username: str, task_id: int, form_token: str) -> Any:
        """The annotator's (active) assignment of this task, checked against the form token; one query."""
        if not isinstance(username, str) or not USERNAME_PATTERN.match(username):  # never a stored name: no query
            raise SubmissionError(f"no annotator named {username!r}")
        row = conn.execute(
            select(annotators.c.id.label("annotator_id"), annotators.c.active, assignments.c.form_token,
                   assignments.c.status)
            .select_from(annotators.outerjoin(assignments, (assignments.c.annotator_id == annotators.c.id)
                                              & (assignments.c.task_id == task_id)))
            .where(annotators.c.username == username)).first()
        if row is None:
            raise SubmissionError(f"no annotator named {username!r}")
        if not row.active:
            raise SubmissionError(f"annotator {username!r} is deactivated")
        assignment = row if row.status is not None else None
        if assignment is None:
            raise SubmissionError(f"task {task_id} is not assigned to you; take the next task from your queue")
        if not secrets.compare_digest(assignment.form_token, form_token):
            raise SubmissionError(f"this form does not belong to task {task_id} (unknown or stale form token); "
                                  "reload the page to get your current task")
        if assignment.status == "done":
            raise SubmissionError(f"task {task_id} was already submitted with this form (a form can be submitted "
                                  "only once); reload the page for your next task")
        if assignment.status == "skipped":
            raise SubmissionError(f"you skipped task {task_id}; a skipped task cannot be submitted")
        return assignment

    def submit_ranking(self, username: str, task_id: int, ranks: Mapping[int, int], none_acceptable: bool = False,
                       rationale: str | None = None, flags: Sequence[str] = (), *, form_token: str,
                       answer_flags: Mapping[int, Sequence[str]] | None = None) -> int:
        """Store one ranking in one transaction; returns its id. ``ranks`` maps candidate id -> rank (1 = best);
        ``flags`` are on the whole task, ``answer_flags`` maps candidate id -> the flags on that answer.

        Raises SubmissionError (nothing stored) for anything invalid; see the module docstring.
        """
        clean_ranks, rationale_text, flag_list = self._prevalidate(ranks, none_acceptable, rationale, flags, form_token)
        per_answer = self._answer_flags(answer_flags)

        def run() -> int:
            with self._write() as conn:
                assignment = self._check_assignment(conn, username, task_id, form_token)
                ids = [c.id for c in self._task_parts(conn, task_id)[1]]
                unknown = sorted(set(clean_ranks) - set(ids))
                if unknown:
                    raise SubmissionError(f"unknown candidate id{'s' * (len(unknown) > 1)} "
                                          f"{', '.join(map(str, unknown))} for task {task_id}; rank only the answers shown")
                missing = [cid for cid in ids if cid not in clean_ranks]
                if missing:
                    raise SubmissionError(f"no rank for candidate{'s' * (len(missing) > 1)} "
                                          f"{', '.join(map(str, missing))}; give every answer a rank (ties allowed)")
                ordered = [clean_ranks[cid] for cid in ids]
                try:
                    check_ranks(ordered, len(ids))
                except ValueError as err:
                    raise SubmissionError(f"ranks are not a complete weak ordering: {err}") from None
                strangers = sorted(set(per_answer) - set(ids))
                if strangers:
                    raise SubmissionError(f"flags for unknown candidate id{'s' * (len(strangers) > 1)} "
                                          f"{', '.join(map(str, strangers))} of task {task_id}; flag only the answers shown")
                stored_flags = flag_list + [f"{flag}{ANSWER_FLAG_SEP}{position}" for position, cid in enumerate(ids)
                                            for flag in per_answer.get(cid, [])]
                try:
                    ranking_id = conn.execute(insert(rankings).values(
                        task_id=task_id, annotator_id=assignment.annotator_id, ranks=ordered,
                        none_acceptable=none_acceptable,
                        rationale=rationale_text, flags=stored_flags, form_token=form_token,
                        submitted_at=utc_now())).inserted_primary_key[0]
                except IntegrityError:
                    raise SubmissionError(f"task {task_id} was already submitted (a form can be submitted only once)") from None
                conn.execute(update(assignments)
                             .where(assignments.c.task_id == task_id,
                                    assignments.c.annotator_id == assignment.annotator_id)
                             .values(status="done", finished_at=utc_now()))
                self._audit(conn, username, "submission", {"task_id": task_id, "ranking_id": int(ranking_id),
                                                           "none_acceptable": none_acceptable, "flags": stored_flags})
            return int(ranking_id)

        return self._retrying("storing the ranking", run)

    def skip_task(self, username: str, task_id: int, *, form_token: str, reason: str | None = None) -> None:
        """Give the task back: it is never shown to this annotator again and its slot goes to someone else."""
        if not isinstance(form_token, str) or not form_token:
            raise SubmissionError("missing form token; reload the page to get the current task")
        try:
            reason_text = check_plain_text(reason, "the skip reason", self.rationale_max_chars)
        except ValueError as err:
            raise SubmissionError(str(err)) from None

        def run() -> None:
            with self._write() as conn:
                assignment = self._check_assignment(conn, username, task_id, form_token)
                conn.execute(update(assignments)
                             .where(assignments.c.task_id == task_id,
                                    assignments.c.annotator_id == assignment.annotator_id)
                             .values(status="skipped", slot=None, finished_at=utc_now()))
                conn.execute(update(tasks).where(tasks.c.id == task_id).values(assigned=tasks.c.assigned - 1))
                self._audit(conn, username, "skip", {"task_id": task_id, "reason": reason_text})

        self._retrying("skipping the task", run)

    # ----------------------------------------------------------------------- withdrawal of one's own ranking

    @staticmethod
    def _export_since(submitted_at: Any) -> Any:
        """The time of the first export at or after ``submitted_at`` (a scalar subquery; NULL: none yet).

        An export records ``export_started`` before it reads the rankings (and ``export`` after writing), so a
        ranking that made it into an export was always submitted before that event: "at or after" never unlocks
        an exported ranking, even while the export is still writing. (One submitted during an export's run is
        locked too, though it may not be in the files: the safe side.)"""
        return (select(func.min(audit_events.c.at))
                .where(audit_events.c.action.in_(("export_started", "export")), audit_events.c.at >= submitted_at)
                .scalar_subquery())

    @staticmethod
    def _locked_reason(form_token: str | None, kind: str, exported_at: datetime | None) -> str | None:
        """Why a ranking can no longer be withdrawn by its annotator; None while it still can."""
        if kind != "human":
            return "computed from labels, not submitted by a person"
        if not form_token:
            return "imported, not submitted in the ranking app"
        if exported_at is not None:
            if exported_at.tzinfo is not None:  # PostgreSQL answers in the session's time zone
                exported_at = exported_at.astimezone(timezone.utc)
            return f"exported by an admin on {exported_at:%Y-%m-%d %H:%M} UTC"
        return None

    def withdraw_ranking(self, username: str, *, ranking_id: int | None = None,
                         task_id: int | None = None) -> WithdrawnRanking:
        """Take back one of ``username``'s own rankings (by ranking id or task id) so they can rank the task again.

        One transaction: the ranking is deleted, the annotator's assignment of the task is open again (same slot
        and form token: the task keeps its place among the k annotators and shows its answers in the same
        order) and a ``ranking_withdrawn`` audit event records it. Raises StoreError, changing nothing, when the
        ranking is unknown (or already withdrawn), is someone else's, was not submitted in the app by a person
        (imported, derived), or was submitted before an export. A page should name the task: an annotator has one
        ranking per task, whereas SQLite may give a withdrawn ranking's id to the next ranking stored."""
        if (ranking_id is None) == (task_id is None):
            raise StoreError("give exactly one of ranking_id and task_id to say which ranking to withdraw")
        for name, value in (("ranking_id", ranking_id), ("task_id", task_id)):
            if value is not None and (isinstance(value, bool) or not isinstance(value, int)):
                raise StoreError(f"{name} must be a whole number; got {value!r}")
        which = f"ranking {ranking_id}" if ranking_id is not None else f"your ranking of task {task_id}"

        def run() -> WithdrawnRanking:
            with self._write() as conn:
                annotator = self._active_annotator(conn, username)
                query = (select(rankings, self._export_since(rankings.c.submitted_at).label("exported_at"))
                         .with_for_update(of=rankings))  # PostgreSQL: two withdrawals of one ranking queue here
                if ranking_id is not None:
                    query = query.where(rankings.c.id == ranking_id)
                else:
                    query = query.where(rankings.c.task_id == task_id, rankings.c.annotator_id == annotator.id)
                row = conn.execute(query).first()
                if row is None:
                    raise StoreError(f"{which} does not exist (unknown, or already withdrawn); "
                                     "reload My submissions")
                if row.annotator_id != annotator.id:
                    raise StoreError(f"{which} is not yours: only the annotator who submitted a ranking can "
                                     "withdraw it")
                locked = self._locked_reason(row.form_token, annotator.kind, row.exported_at)
                if locked:
                    raise StoreError(f"{which} can no longer be withdrawn: {locked}; ask an admin if it is wrong")
                reopened = conn.execute(
                    update(assignments)
                    .where(assignments.c.task_id == row.task_id, assignments.c.annotator_id == annotator.id,
                           assignments.c.status == "done", assignments.c.form_token == row.form_token)
                    .values(status="open", finished_at=None))
                if reopened.rowcount != 1:  # a submitted app ranking always has its done assignment
                    raise StoreError(f"{which} has no finished assignment to reopen; ask an admin")
                # The ranking's form token is freed with it, so the reopened form can be submitted once more.
                if conn.execute(rankings.delete().where(rankings.c.id == row.id)).rowcount != 1:
                    raise StoreError(f"{which} was withdrawn at the same time from another page; reload")
                submitted_at = row.submitted_at
                self._audit(conn, username, "ranking_withdrawn", {
                    "task_id": int(row.task_id), "ranking_id": int(row.id), "ranks": list(row.ranks),
                    "none_acceptable": bool(row.none_acceptable), "flags": list(row.flags or ()),
                    "submitted_at": submitted_at.isoformat() if submitted_at else None})
                view = self._task_view(conn, row.task_id, row.form_token)
            logger.info("%s withdrew ranking %d of task %d", username, row.id, row.task_id)
            ids = [c.id for c in view.candidates]
            return WithdrawnRanking(int(row.id), int(row.task_id), dict(zip(ids, row.ranks)),
                                    bool(row.none_acceptable), row.rationale, tuple(row.flags or ()),
                                    submitted_at, view)

        return self._retrying("withdrawing the ranking", run)

    # ----------------------------------------------------------------------- progress and views

    def progress(self, username: str) -> Progress:
        with self._read() as conn:
            annotator = self._active_annotator(conn, username)
            counts = dict(conn.execute(
                select(assignments.c.status, func.count()).where(assignments.c.annotator_id == annotator.id)
                .group_by(assignments.c.status)).all())
            done = conn.execute(select(func.count()).select_from(rankings)
                                .where(rankings.c.annotator_id == annotator.id)).scalar_one()
            mine = exists().where(assignments.c.task_id == tasks.c.id, assignments.c.annotator_id == annotator.id)
            available = conn.execute(select(func.count()).select_from(tasks)
                                     .where(text("assigned < k"), ~mine)).scalar_one()
        open_ = int(counts.get("open", 0))
        return Progress(done=int(done), skipped=int(counts.get("skipped", 0)), open=open_,
                        remaining=open_ + int(available))

    def my_rankings(self, username: str, limit: int = 20) -> list[dict[str, Any]]:
        """This annotator's own latest rankings (never anyone else's), each with its task (id, prompt_id, meta,
        source), the answers' texts in stored order (``texts``; ``ranks`` follow it), the form token the
        ranking was submitted with (it fixed the order the answers were shown in), its ``ranking_id`` and
        whether the annotator may still withdraw it (``editable``; else ``locked_reason`` says why)."""
        with self._read() as conn:
            annotator = self._active_annotator(conn, username)
            rows = [dict(row._mapping) for row in conn.execute(
                select(tasks.c.prompt_id, tasks.c.meta, tasks.c.source, rankings.c.task_id, rankings.c.ranks,
                       rankings.c.none_acceptable, rankings.c.flags, rankings.c.rationale, rankings.c.form_token,
                       rankings.c.submitted_at, rankings.c.id.label("ranking_id"),
                       self._export_since(rankings.c.submitted_at).label("exported_at"))
                .join(tasks, tasks.c.id == rankings.c.task_id)
                .where(rankings.c.annotator_id == annotator.id)
                .order_by(rankings.c.id.desc()).limit(limit))]
            texts: dict[int, list[str]] = {}
            task_ids = sorted({row["task_id"] for row in rows})
            if task_ids:
                for cand in conn.execute(select(candidates.c.task_id, candidates.c.text)
                                         .where(candidates.c.task_id.in_(task_ids))
                                         .order_by(candidates.c.task_id, candidates.c.position)):
                    texts.setdefault(cand.task_id, []).append(cand.text)
        for row in rows:
            row["texts"] = texts.get(row["task_id"], [])
            row["locked_reason"] = self._locked_reason(row["form_token"], annotator.kind, row["exported_at"])
            row["editable"] = row["locked_reason"] is None
        return rows

    def admin_progress(self) -> list[AnnotatorProgress]:
        with self._read() as conn:
            status_counts: dict[int, dict[str, int]] = {}
            for annotator_id, status, count in conn.execute(
                    select(assignments.c.annotator_id, assignments.c.status, func.count())
                    .group_by(assignments.c.annotator_id, assignments.c.status)):
                status_counts.setdefault(annotator_id, {})[status] = int(count)
            done = {row[0]: (int(row[1]), row[2]) for row in conn.execute(
                select(rankings.c.annotator_id, func.count(), func.max(rankings.c.submitted_at))
                .group_by(rankings.c.annotator_id))}
            people = conn.execute(select(annotators).order_by(annotators.c.username)).all()
        result = []
        for person in people:
            counts = status_counts.get(person.id, {})
            n_done, last = done.get(person.id, (0, None))
            result.append(AnnotatorProgress(person.username, person.role, bool(person.active), n_done,
                                            counts.get("skipped", 0), counts.get("open", 0), last, person.kind))
        return result

    def task_sources(self) -> dict[str, int]:
        """Where the tasks came from (``app``, ``candidates``, an import's name, ...) -> how many tasks each."""
        with self._read() as conn:
            rows = conn.execute(select(tasks.c.source, func.count()).group_by(tasks.c.source)
                                .order_by(tasks.c.source)).all()
        return {str(source): int(count) for source, count in rows}

    def task_rankings(self, min_annotators: int = 1, sources: Iterable[str] | None = None,
                      kinds: Iterable[str] | None = None, *, annotator_names: Iterable[str] | None = None,
                      submitted_from: date | str | None = None,
                      submitted_to: date | str | None = None) -> list[TaskRankings]:
        """Every task with at least ``min_annotators`` rankings, with its candidates and rankings (for export).

        ``kinds`` keeps only the rankings of those annotator kinds (``human``, ``derived``; default: all),
        ``annotator_names`` only those annotators' rankings (an unknown name is a StoreError), and
        ``submitted_from`` / ``submitted_to`` only the rankings submitted on those days or between them (UTC days,
        ``YYYY-MM-DD``, both inclusive); ``min_annotators`` counts the kept rankings."""
        source_list = list(sources) if sources is not None else None
        kind_list = check_kinds(kinds)
        first_day, last_day = submission_period(submitted_from, submitted_to)
        name_list = unique_names(annotator_names)
        with self._read() as conn:
            if name_list is not None:
                self._check_known_annotators(conn, name_list)
            query = select(tasks).order_by(tasks.c.id)
            if source_list is not None:
                query = query.where(tasks.c.source.in_(source_list))
            task_rows = {row.id: row for row in conn.execute(query)}
            by_task: dict[int, list[StoredRanking]] = {}
            ranking_query = (select(rankings, annotators.c.username, annotators.c.kind)
                             .join(annotators, annotators.c.id == rankings.c.annotator_id)
                             .order_by(rankings.c.task_id, annotators.c.username))
            if kind_list is not None:
                ranking_query = ranking_query.where(annotators.c.kind.in_(kind_list))
            if name_list is not None:
                ranking_query = ranking_query.where(annotators.c.username.in_(name_list))
            if first_day is not None:
                ranking_query = ranking_query.where(rankings.c.submitted_at >= day_start(first_day))
            if last_day is not None and last_day < date.max:
                ranking_query = ranking_query.where(rankings.c.submitted_at < day_start(last_day + timedelta(days=1)))
            for row in conn.execute(ranking_query):
                if row.task_id in task_rows:
                    by_task.setdefault(row.task_id, []).append(StoredRanking(
                        row.username, tuple(row.ranks), bool(row.none_acceptable), row.rationale,
                        tuple(row.flags or ()), row.submitted_at, row.kind))
            wanted = [tid for tid in task_rows if len(by_task.get(tid, ())) >= max(1, min_annotators)]
            cands = self._candidates_of(conn, wanted)
        return [TaskRankings(tid, task_rows[tid].prompt_id, task_rows[tid].prompt, task_rows[tid].meta or {},
                             task_rows[tid].source, cands[tid], tuple(by_task[tid])) for tid in wanted]

    def check_annotator_names(self, names: Iterable[str] | None) -> list[str] | None:
        """The usernames of an annotator filter, each once (None: no filter); a StoreError naming any that the
        store does not know, so a typo never yields a silently empty export."""
        name_list = unique_names(names)
        if name_list is not None:
            with self._read() as conn:
                self._check_known_annotators(conn, name_list)
        return name_list

    @staticmethod
    def _check_known_annotators(conn: Connection, names: Sequence[str]) -> None:
        known: set[str] = set()
        for start in range(0, len(names), 500):  # bounded IN lists (SQLite's variable limit)
            known.update(conn.execute(select(annotators.c.username)
                                      .where(annotators.c.username.in_(names[start:start + 500]))).scalars())
        unknown = [name for name in names if name not in known]
        if unknown:
            raise StoreError(f"no annotator named {', '.join(repr(name[:64]) for name in unknown[:5])} in the store; "
                             "choose among the annotators who have rankings")

    @staticmethod
    def _candidates_of(conn: Connection, task_ids: Sequence[int]) -> dict[int, tuple[Candidate, ...]]:
        found: dict[int, list[Candidate]] = {tid: [] for tid in task_ids}
        for start in range(0, len(task_ids), 500):  # bounded IN lists (SQLite's variable limit)
            for c in conn.execute(select(candidates).where(candidates.c.task_id.in_(task_ids[start:start + 500]))
                                  .order_by(candidates.c.task_id, candidates.c.position)):
                found[c.task_id].append(Candidate(c.id, c.position, c.text, c.model))
        return {tid: tuple(cands) for tid, cands in found.items()}

    # ----------------------------------------------------------------------- derived rankings

    def tasks_without_ranking(self, annotator_prefix: str, sources: Iterable[str] | None = None,
                              task_ids: Iterable[int] | None = None) -> list[TaskRankings]:
        """Tasks (with their candidates, ``rankings`` empty) that no annotator whose name starts with
        ``annotator_prefix`` (e.g. ``gold:``) has ranked yet, oldest first; optionally only these sources/ids."""
        ranked = exists().where(rankings.c.task_id == tasks.c.id, rankings.c.annotator_id == annotators.c.id,
                                annotators.c.username.startswith(annotator_prefix, autoescape=True))
        query = select(tasks).where(~ranked).order_by(tasks.c.id)
        if sources is not None:
            query = query.where(tasks.c.source.in_(list(sources)))
        if task_ids is not None:
            query = query.where(tasks.c.id.in_(list(task_ids)))
        with self._read() as conn:
            rows = list(conn.execute(query))
            cands = self._candidates_of(conn, [row.id for row in rows])
        return [TaskRankings(row.id, row.prompt_id, row.prompt, row.meta or {}, row.source, cands[row.id], ())
                for row in rows]

    def add_derived_rankings(self, derived: Sequence[DerivedRanking], *, actor: str = "cli") -> DerivedResult:
        """Store rankings computed from labels (one transaction: all or nothing).

        Each annotator is created on first use as kind ``derived`` (no password, inactive: it never logs in and
        is never assigned a task). The tasks stay offered to human annotators as before. Storing the same
        ranking again counts as a duplicate; a different ranking by the same annotator is an error.
        """
        checked: list[DerivedRanking] = []
        for item in derived:
            where = f"task {item.task_id} ({item.annotator})"
            if not isinstance(item.none_acceptable, bool):
                raise StoreError(f"{where}: none_acceptable must be true or false")
            try:
                rationale = check_plain_text(item.rationale, f"{where}: the rationale", self.rationale_max_chars)
                check_ranks(list(item.ranks), len(item.ranks))
            except ValueError as err:
                raise StoreError(str(err)) from None
            checked.append(DerivedRanking(item.task_id, item.annotator, tuple(item.ranks), item.none_acceptable,
                                          rationale))

        def run() -> DerivedResult:
            res = DerivedResult()
            with self._write() as conn:
                annotator_ids: dict[str, int] = {}
                for item in checked:
                    where = f"task {item.task_id} ({item.annotator})"
                    n = conn.execute(select(func.count()).select_from(candidates)
                                     .where(candidates.c.task_id == item.task_id)).scalar_one()
                    if not n:
                        raise StoreError(f"{where}: no such task in the store")
                    if n != len(item.ranks):
                        raise StoreError(f"{where}: {len(item.ranks)} ranks for the task's {n} candidates")
                    if item.annotator not in annotator_ids:
                        annotator_ids[item.annotator], created = self._ensure_offline_annotator(
                            conn, item.annotator, "derived", actor, where, {})
                        if created:
                            res.annotators_created.append(item.annotator)
                    added = self._insert_offline_ranking(conn, item.task_id, annotator_ids[item.annotator],
                                                         item.ranks, item.none_acceptable, item.rationale, (),
                                                         f"{where}: already ranked")
                    res.rankings_added += added
                    res.duplicates += not added
                self._audit(conn, actor, "derived_rankings", {
                    "annotators": sorted(annotator_ids), "rankings_added": res.rankings_added,
                    "duplicates": res.duplicates})
            return res

        return self._retrying("storing derived rankings", run)

    @staticmethod
    def _insert_offline_ranking(conn: Connection, task_id: int, annotator_id: int, ranks: Sequence[int],
                                none_acceptable: bool, rationale: str | None, flags: Sequence[str],
                                already: str) -> bool:
        """Store a ranking that did not come through the app (an import, a derived ranking). False when the same
        ranking is already stored (a rerun); a different one by the same annotator is an error."""
        previous = conn.execute(select(rankings.c.ranks).where(
            rankings.c.task_id == task_id, rankings.c.annotator_id == annotator_id)).first()
        if previous is not None:
            if list(previous.ranks) == list(ranks):
                return False
            raise StoreError(f"{already} differently ({list(previous.ranks)} stored vs {list(ranks)} now)")
        conn.execute(insert(rankings).values(
            task_id=task_id, annotator_id=annotator_id, ranks=list(ranks), none_acceptable=none_acceptable,
            rationale=rationale, flags=list(flags), form_token=None, submitted_at=utc_now()))
        return True

    def _ensure_offline_annotator(self, conn: Connection, name: str, kind: str, actor: str, where: str,
                                  detail: Mapping[str, Any]) -> tuple[int, bool]:
        """(id, created) of an annotator that cannot log in (an imported lawyer, a derived ranker), created if
        missing. An existing annotator of another kind is an error: a person's rankings never turn derived."""
        row = conn.execute(select(annotators.c.id, annotators.c.kind).where(annotators.c.username == name)).first()
        if row is not None:
            if row.kind != kind:
                raise StoreError(f"{where}: annotator {name!r} is of kind {row.kind!r} in the store, not {kind!r}; "
                                 "rankings of one annotator have one kind (rename one of them)")
            return int(row.id), False
        check_username(name, kind, where)
        row_id = conn.execute(insert(annotators).values(
            username=name, password_hash=None, role="annotator", active=False, kind=kind,
            created_at=utc_now())).inserted_primary_key[0]
        self._audit(conn, actor, "annotator_created",
                    {"username": name, "role": "annotator", "kind": kind, "can_login": False, **detail})
        return int(row_id), True

    def counts(self) -> dict[str, int]:
        with self._read() as conn:
            return {table.name: int(conn.execute(select(func.count()).select_from(table)).scalar_one())
                    for table in (annotators, tasks, candidates, assignments, rankings, feedback, audit_events)}

    # ----------------------------------------------------------------------- feedback (chat UI)

    def add_feedback(self, user: str, prompt: str | list[dict[str, str]], response: str, rating: int,
                     better_answer: str | None = None, meta: Mapping[str, Any] | None = None) -> int:
        """A thumbs up (+1) / down (-1) on one chat answer, optionally with a better answer written by the lawyer."""
        if isinstance(rating, bool) or rating not in (1, -1):
            raise SubmissionError(f"rating must be +1 or -1; got {rating!r}")
        if not isinstance(response, str) or not response.strip():
            raise SubmissionError("the rated response must not be empty")
        try:
            prompt_value = check_prompt(prompt)
        except StoreError as err:
            raise SubmissionError(str(err)) from None
        if better_answer is not None:
            if not isinstance(better_answer, str):
                raise SubmissionError("better_answer must be text")
            bad = control_chars(better_answer)
            if bad:
                raise SubmissionError(f"the better answer contains control characters ({', '.join(bad[:5])}); remove them")
            if len(better_answer) > 20_000:
                raise SubmissionError(f"the better answer is {len(better_answer)} characters long; the limit is 20000")
            better_answer = better_answer.strip() or None

        def run() -> int:
            with self._write() as conn:
                feedback_id = conn.execute(insert(feedback).values(
                    user=str(user)[:64], prompt=prompt_value, response=response, rating=rating,
                    better_answer=better_answer, meta=dict(meta) if meta else None,
                    created_at=utc_now())).inserted_primary_key[0]
                self._audit(conn, str(user), "feedback", {"feedback_id": int(feedback_id), "rating": rating})
            return int(feedback_id)

        return self._retrying("storing feedback", run)

    def list_feedback(self, limit: int = 1000) -> list[dict[str, Any]]:
        with self._read() as conn:
            return [dict(row._mapping) for row in
                    conn.execute(select(feedback).order_by(feedback.c.id).limit(limit))]

    # ----------------------------------------------------------------------- import of RankingRecords

    def import_rankings(self, records: Iterable[Any], source: str, *, k: int = 0, actor: str = "cli",
                        record_sources: Sequence[str] | None = None) -> ImportResult:
        """Import RankingRecords (e.g. ACORD's lawyer ratings) as tasks + candidates + rankings, in one transaction.

        A record's annotator becomes an account that cannot log in, of the record's ``annotator_kind`` (human,
        or derived for rankings computed from labels); an annotator already in the store must have that kind.
        Tasks are matched by ``prompt_id``; a task that exists must have the same responses in the same order.
        Re-importing the same file changes nothing (identical rankings count as duplicates); a different ranking
        by the same annotator is an error. ``k`` = annotations wanted from the app's annotators for the imported
        tasks (0: none, the default). ``record_sources`` (one per record) overrides ``source`` for the tasks
        each record creates (an export's rankings.jsonl keeps every task's own source).
        """
        from lexalign.data.schemas import RankingRecord

        checked: list[Any] = []
        for i, record in enumerate(records):
            if not isinstance(record, RankingRecord):
                try:
                    record = RankingRecord.model_validate(record)
                except ValueError as err:
                    raise StoreError(f"record {i + 1}: not a RankingRecord: {err}") from None
            checked.append(record)
        if not checked:
            raise StoreError("nothing to import: no records")
        if record_sources is not None and len(record_sources) != len(checked):
            raise StoreError(f"{len(record_sources)} record sources for {len(checked)} records")

        def run() -> ImportResult:
            res = ImportResult()
            with self._write() as conn:
                annotator_ids: dict[str, int] = {}
                for i, record in enumerate(checked, start=1):
                    where = f"record {i} (prompt_id {record.prompt_id!r})"
                    prompt_value = check_prompt([m.model_dump() for m in record.prompt]
                                                 if isinstance(record.prompt, list) else record.prompt)
                    task = conn.execute(select(tasks.c.id).where(tasks.c.prompt_id == record.prompt_id)).first()
                    if task is None:
                        task_id = self._insert_task(conn, record.prompt_id, prompt_value,
                                                    [(r, None) for r in record.responses], record.meta, k,
                                                    record_sources[i - 1] if record_sources else source)
                        res.tasks_created += 1
                    else:
                        task_id = task.id
                        existing = conn.execute(select(candidates.c.text).where(candidates.c.task_id == task_id)
                                                .order_by(candidates.c.position)).scalars().all()
                        if list(existing) != list(record.responses):
                            raise StoreError(f"{where}: the store already has this prompt_id with different responses "
                                             f"({len(existing)} stored vs {len(record.responses)} here); give the "
                                             "record its own prompt_id or keep the responses in the same order")
                        res.tasks_reused += 1
                    name = record.annotator
                    if name not in annotator_ids:
                        annotator_ids[name], created = self._ensure_offline_annotator(
                            conn, name, record.annotator_kind, actor, where, {"source": source})
                        if created:
                            res.annotators_created.append(name)
                    added = self._insert_offline_ranking(conn, task_id, annotator_ids[name], record.ranks,
                                                         record.none_acceptable, record.rationale, record.flags,
                                                         f"{where}: {name!r} already ranked this task")
                    res.rankings_added += added
                    res.duplicates += not added
                self._audit(conn, actor, "import", {"source": source, "tasks_created": res.tasks_created,
                                                    "rankings_added": res.rankings_added, "duplicates": res.duplicates})
            return res

        return self._retrying("importing rankings", run)


def _annotator(row: Any) -> Annotator:
    return Annotator(int(row.id), row.username, row.role, bool(row.active), row.created_at, row.kind)


_HASHER: Any = None
_DUMMY: str | None = None


def _hasher() -> Any:
    global _HASHER
    if _HASHER is None:
        from argon2 import PasswordHasher

        _HASHER = PasswordHasher()  # argon2id with the library's (RFC 9106 low-memory) defaults
    return _HASHER


def _dummy_hash() -> str:
    global _DUMMY
    if _DUMMY is None:
        _DUMMY = _hasher().hash(secrets.token_urlsafe(16))
    return _DUMMY


def open_store(url: str = DEFAULT_URL, *, synchronous: str = "FULL",
               rationale_max_chars: int = DEFAULT_RATIONALE_MAX) -> Store:
    """Open (creating if new) the preference store at ``url``; StoreError when it cannot be used."""
    return Store(url, synchronous=synchronous, rationale_max_chars=rationale_max_chars)
