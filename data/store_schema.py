"""The preference store's SQL schema: its tables (SQLAlchemy Core), their version, and the migrations that upgrade
a store written by an older version. ``lexalign.data.store`` reads and writes the store through these tables.

Tables: ``schema_version``, ``annotators``, ``tasks``, ``candidates``, ``assignments``, ``rankings``, ``feedback``
(ratings from the lawyers' chat UI) and ``audit_events``. Schema version 2 added the annotators' kind (human or
derived); version-1 stores are migrated (every existing annotator is human).
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timezone

from sqlalchemy import (
    JSON,
    Boolean,
    CheckConstraint,
    Column,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
    text,
)
from sqlalchemy.engine import Connection

SCHEMA_VERSION = 2

metadata = MetaData()


def utc_now() -> datetime:
    return datetime.now(timezone.utc)


def _ts() -> Column:
    return Column("created_at", DateTime(timezone=True), nullable=False, default=utc_now)


schema_version = Table(
    "schema_version", metadata,
    Column("version", Integer, primary_key=True, autoincrement=False),
    Column("applied_at", DateTime(timezone=True), nullable=False),
)

annotators = Table(
    "annotators", metadata,
    Column("id", Integer, primary_key=True),
    Column("username", String(64), nullable=False, unique=True),
    Column("password_hash", String(255), nullable=True),  # NULL: cannot log in (e.g. imported lawyers)
    Column("role", String(16), nullable=False, default="annotator"),
    Column("active", Boolean, nullable=False, default=True),
    _ts(),
    # human: a person; derived: rankings computed from labels (gold:<corpus>). Added in schema version 2.
    Column("kind", String(16), nullable=False, default="human", server_default=text("'human'")),
    CheckConstraint("role IN ('annotator', 'admin')", name="ck_annotators_role"),
    CheckConstraint("kind IN ('human', 'derived')", name="ck_annotators_kind"),
)

tasks = Table(
    "tasks", metadata,
    Column("id", Integer, primary_key=True),
    Column("prompt_id", String(200), nullable=False, unique=True),
    Column("prompt", JSON, nullable=False),          # a string or chat messages [{"role", "content"}]
    Column("meta", JSON, nullable=True),             # excerpt, question, doc ids, generation settings...
    Column("source", String(100), nullable=False, default="app"),
    Column("k", Integer, nullable=False, default=3),  # annotations wanted (0: not offered to annotators)
    Column("assigned", Integer, nullable=False, default=0, server_default=text("0")),  # live (open/done) assignments
    _ts(),
    CheckConstraint("k >= 0", name="ck_tasks_k"),
    CheckConstraint("assigned >= 0 AND assigned <= k", name="ck_tasks_assigned"),
    # Only tasks that still want annotators are indexed, so picking the next one does not scan finished tasks.
    Index("ix_tasks_open", "id", sqlite_where=text("assigned < k"), postgresql_where=text("assigned < k")),
)

candidates = Table(
    "candidates", metadata,
    Column("id", Integer, primary_key=True),
    Column("task_id", Integer, ForeignKey("tasks.id", ondelete="CASCADE"), nullable=False),
    Column("position", Integer, nullable=False),
    Column("text", Text, nullable=False),
    Column("model", String(200), nullable=True),     # the model (or source) that wrote it
    UniqueConstraint("task_id", "position", name="uq_candidates_task_position"),
)

assignments = Table(
    "assignments", metadata,
    Column("id", Integer, primary_key=True),
    Column("task_id", Integer, ForeignKey("tasks.id", ondelete="CASCADE"), nullable=False),
    Column("annotator_id", Integer, ForeignKey("annotators.id"), nullable=False),
    Column("slot", Integer, nullable=True),          # 0..k-1 while live; NULL once skipped
    Column("status", String(16), nullable=False, default="open"),
    Column("form_token", String(64), nullable=False, unique=True),
    Column("assigned_at", DateTime(timezone=True), nullable=False, default=utc_now),
    Column("finished_at", DateTime(timezone=True), nullable=True),
    UniqueConstraint("task_id", "annotator_id", name="uq_assignments_task_annotator"),
    UniqueConstraint("task_id", "slot", name="uq_assignments_task_slot"),
    CheckConstraint("status IN ('open', 'done', 'skipped')", name="ck_assignments_status"),
    Index("ix_assignments_annotator_status", "annotator_id", "status"),
)

rankings = Table(
    "rankings", metadata,
    Column("id", Integer, primary_key=True),
    Column("task_id", Integer, ForeignKey("tasks.id", ondelete="CASCADE"), nullable=False),
    Column("annotator_id", Integer, ForeignKey("annotators.id"), nullable=False),
    Column("ranks", JSON, nullable=False),           # one rank per candidate, in candidate position order
    Column("none_acceptable", Boolean, nullable=False, default=False),
    Column("rationale", Text, nullable=True),
    Column("flags", JSON, nullable=False),
    Column("form_token", String(64), nullable=True, unique=True),  # NULL for imported rankings
    Column("submitted_at", DateTime(timezone=True), nullable=False, default=utc_now),
    UniqueConstraint("task_id", "annotator_id", name="uq_rankings_task_annotator"),
    Index("ix_rankings_annotator", "annotator_id"),
)

feedback = Table(
    "feedback", metadata,
    Column("id", Integer, primary_key=True),
    Column("user", String(64), nullable=False),
    Column("prompt", JSON, nullable=False),
    Column("response", Text, nullable=False),
    Column("rating", Integer, nullable=False),
    Column("better_answer", Text, nullable=True),
    Column("meta", JSON, nullable=True),
    _ts(),
    CheckConstraint("rating IN (-1, 1)", name="ck_feedback_rating"),
)

audit_events = Table(
    "audit_events", metadata,
    Column("id", Integer, primary_key=True),
    Column("at", DateTime(timezone=True), nullable=False, default=utc_now),
    Column("actor", String(64), nullable=False),
    Column("action", String(64), nullable=False),
    Column("detail", JSON, nullable=True),
    Index("ix_audit_action", "action"),
)


# --------------------------------------------------------------------------- migrations


def _add_annotator_kind(conn: Connection) -> None:
    """1 -> 2: annotators get a kind; everyone already in a version-1 store is a person (human).

    The column is declared exactly as ``metadata`` declares it for new stores (the same default and the same
    named check), so a migrated store and a new one behave alike on SQLite and on PostgreSQL."""
    conn.execute(text("ALTER TABLE annotators ADD COLUMN kind VARCHAR(16) DEFAULT 'human' NOT NULL "
                      "CONSTRAINT ck_annotators_kind CHECK (kind IN ('human', 'derived'))"))


# version -> the step that upgrades a store of that version to the next one
MIGRATIONS: dict[int, Callable[[Connection], None]] = {1: _add_annotator_kind}
