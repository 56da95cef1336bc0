"""Chat sessions kept per user in the preference store's database, so that reloading the chat page (or restarting
the app) brings back the lawyer's contract, conversation and last clause-by-clause review.

One row per user: the session the page shows (a new conversation replaces its turns and conversation id):

    document     the loaded contract: name, kind, normalized text, sha256, size, pages, page starts (NULL: none);
                 the app rebuilds its sections and chunks from the text
    turns        the conversation's turns as the app keeps them (prompt, answer, sources, citations, feedback)
    review       the last clause-by-clause review (summary, table rows, located quotes), or NULL

The table lives beside the store's own tables with its own ``MetaData``, created on first use if it is missing, so
the store's schema version is untouched (a store without the table opens as before; dropping it loses saved chat
sessions and nothing else). The row is JSON the chat app writes and reads (``serve/chat.py``); this module only keeps
it. The contract's text is written when the contract changes (an upload), not with every answer.

Writes use the store's own write transactions (its process-wide writer queue and ``BEGIN IMMEDIATE`` on SQLite),
with ``durable=False``: a chat session lost in a power cut costs a lawyer one more upload, not an acknowledged
ranking, so a save does not wait for its own fsync.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

from sqlalchemy import JSON, Column, DateTime, MetaData, String, Table, insert, select, text, update
from sqlalchemy.exc import IntegrityError

from lexalign.data.store import Store

logger = logging.getLogger(__name__)

metadata = MetaData()

chat_sessions = Table(
    "chat_sessions", metadata,
    Column("user", String(64), primary_key=True),
    Column("conversation", String(64), nullable=False),
    Column("document", JSON, nullable=True),
    Column("turns", JSON, nullable=False),
    Column("review", JSON, nullable=True),
    Column("updated_at", DateTime(timezone=True), nullable=False),
)

KEEP: Any = object()  # save(document=KEEP): leave the saved contract as it is


@dataclass(frozen=True)
class SavedSession:
    user: str
    conversation: str
    document: dict[str, Any] | None
    turns: list[dict[str, Any]]
    review: dict[str, Any] | None
    updated_at: datetime | None = None


class ChatSessionStore:
    """Saved chat sessions, one per user, in ``store``'s database."""

    def __init__(self, store: Store) -> None:
        self.store = store

        def create() -> None:
            with store._write() as conn:
                if store.dialect == "postgresql":  # two processes opening a new store at once: one creates the table
                    conn.execute(text("SELECT pg_advisory_xact_lock(727275)"))
                metadata.create_all(conn)  # checkfirst: an existing table is kept

        store._retrying("creating the chat_sessions table", create)

    def save(self, user: str, conversation: str, turns: list[dict[str, Any]], review: dict[str, Any] | None,
             document: dict[str, Any] | None = KEEP) -> None:
        """Replace ``user``'s saved session (the contract only when ``document`` is given; None: no contract)."""
        values: dict[str, Any] = {"conversation": conversation, "turns": turns, "review": review,
                                  "updated_at": datetime.now(timezone.utc)}
        if document is not KEEP:
            values["document"] = document

        def run() -> None:
            with self.store._write(durable=False) as conn:
                changed = conn.execute(update(chat_sessions).where(chat_sessions.c.user == user).values(**values))
                if changed.rowcount == 0:
                    conn.execute(insert(chat_sessions).values(user=user, **{"document": None, **values}))

        try:
            self.store._retrying("saving the chat session", run)
        except IntegrityError:
            # PostgreSQL: another tab of this user inserted the row between our update and insert; update it now
            self.store._retrying("saving the chat session", run)
        logger.debug("saved the chat session of %s: %d turn(s)", user, len(turns))

    def load(self, user: str) -> SavedSession | None:
        """``user``'s saved session, or None when there is none."""
        with self.store._read() as conn:
            row = conn.execute(select(chat_sessions).where(chat_sessions.c.user == user)).first()
        if row is None:
            return None
        data = row._mapping
        return SavedSession(data["user"], data["conversation"], data["document"], list(data["turns"] or []),
                            data["review"], data["updated_at"])
