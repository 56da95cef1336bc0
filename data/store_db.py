"""The database under the preference store (``lexalign.data.store``): one SQLAlchemy engine on a SQLite file or a
PostgreSQL server, durable write transactions with retries on transient locks, and the schema version check
(with in-place migration) every open runs. The store's operations build on ``Database._write`` / ``_read``.

Durability (SQLite). The database runs in WAL mode with ``synchronous=FULL`` by default: a commit returns
only after its WAL frames were fsynced, so an acknowledged submission survives ``kill -9`` of the server
*and* an OS crash or power cut. ``synchronous=NORMAL`` in WAL mode already survives ``kill -9`` (the
committed frames sit in the OS page cache, which outlives the process, and are recovered on the next
open), but may lose the last commits on power loss; it is offered as an option (``synchronous=``) for
write-heavy use. A lawyer's ranking is minutes of expert work: one fsync per submission (a few ms) is the
right price. Bookkeeping that is harmless to lose in a power cut (a task assignment, a login audit event)
commits without its own fsync and becomes durable with the next submission's fsync of the WAL; kill -9
loses none of it. Foreign keys are enforced and a 30 s busy timeout lets other processes (the CLI) wait
for the write lock instead of failing.

Transactions. Every write (an assignment, a submission with its audit event, a skip, an import) is one
transaction. On SQLite a write transaction starts with ``BEGIN IMMEDIATE`` (it takes the database's single
write lock up front, so a transaction never fails half-way on a lock upgrade) and writers in one process
queue first on an in-process FIFO lock (no busy-wait polling and no starvation, so the tail latency under
load is bounded by the queue length). Reads use a deferred ``BEGIN`` and see one consistent WAL snapshot
without blocking writers.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from pathlib import Path
from typing import Any, TypeVar

from sqlalchemy import create_engine, event, func, insert, inspect, select, text
from sqlalchemy.engine import Connection, Engine, make_url
from sqlalchemy.exc import ArgumentError, DataError, OperationalError
from sqlalchemy.pool import StaticPool

from lexalign.data.store_input import StoreError, SubmissionError
from lexalign.data.store_schema import MIGRATIONS, SCHEMA_VERSION, metadata, schema_version, utc_now

logger = logging.getLogger(__name__)

BUSY_TIMEOUT_S = 30.0
MAX_RETRIES = 8
SYNCHRONOUS = ("FULL", "NORMAL", "EXTRA")

_DB = TypeVar("_DB", bound="Database")


class FairLock:
    """A FIFO lock: writers get SQLite's single write slot in arrival order, so no thread starves and the
    tail latency under load is bounded by the queue length (threading.Lock makes no such promise)."""

    def __init__(self) -> None:
        self._cond = threading.Condition(threading.Lock())
        self._next_ticket = 0
        self._serving = 0
        self._abandoned: set[int] = set()  # tickets whose waiter was interrupted (e.g. KeyboardInterrupt)

    def __enter__(self) -> "FairLock":
        with self._cond:
            ticket = self._next_ticket
            self._next_ticket += 1
            try:
                while ticket != self._serving:
                    self._cond.wait()
            except BaseException:
                if ticket == self._serving:
                    self._advance()
                else:
                    self._abandoned.add(ticket)
                raise
        return self

    def __exit__(self, *exc: object) -> None:
        with self._cond:
            self._advance()

    def _advance(self) -> None:  # called with the condition held
        self._serving += 1
        while self._serving in self._abandoned:
            self._abandoned.discard(self._serving)
            self._serving += 1
        self._cond.notify_all()


_PROCESS_LOCKS: dict[str, FairLock] = {}
_PROCESS_LOCKS_GUARD = threading.Lock()


def _process_lock(key: str) -> FairLock:
    """One write queue per database file in this process (shared by every Store opened on it)."""
    with _PROCESS_LOCKS_GUARD:
        return _PROCESS_LOCKS.setdefault(key, FairLock())


class Database:
    """A connection pool to one preference database: transactions, retries and the schema version."""

    def __init__(self, url: str, *, synchronous: str = "FULL", pool_size: int = 8) -> None:
        self.url = url
        try:
            parsed = make_url(url)
        except ArgumentError:
            raise StoreError(f"not a database URL: {url!r}; use e.g. sqlite:///runs/prefs.db or "
                             "postgresql+psycopg://user:password@host/dbname") from None
        self.safe_url = parsed.render_as_string(hide_password=True)
        self.dialect = parsed.get_backend_name()
        synchronous = synchronous.upper()
        if synchronous not in SYNCHRONOUS:
            raise StoreError(f"synchronous={synchronous!r}: expected one of {', '.join(SYNCHRONOUS)}")
        self.synchronous = synchronous
        self._memory = False
        if self.dialect == "sqlite":
            database = parsed.database or ""
            self._memory = database in ("", ":memory:") or database.startswith("file::memory:")
            kwargs: dict[str, Any] = {"connect_args": {"check_same_thread": False, "timeout": BUSY_TIMEOUT_S}}
            if self._memory:
                kwargs["poolclass"] = StaticPool
                lock_key = f"memory:{id(self)}"
            else:
                path = Path(database).expanduser()
                try:
                    path.parent.mkdir(parents=True, exist_ok=True)
                except OSError as err:
                    raise StoreError(f"{self.safe_url}: cannot create the folder {path.parent}: {err.strerror}") from None
                kwargs.update(pool_size=pool_size, max_overflow=4 * pool_size, pool_timeout=BUSY_TIMEOUT_S)
                lock_key = str(path.resolve())
            try:
                self.engine: Engine = create_engine(parsed, **kwargs)
            except Exception as err:  # noqa: BLE001 - driver import errors etc.
                raise StoreError(f"cannot open {self.safe_url}: {err}") from None
            self._install_sqlite_hooks()
            self._write_lock: Any = _process_lock(lock_key)
        elif self.dialect == "postgresql":
            try:
                self.engine = create_engine(parsed, pool_size=pool_size, max_overflow=4 * pool_size, pool_pre_ping=True)
            except Exception as err:  # noqa: BLE001 - a missing driver (psycopg) lands here
                raise StoreError(f"cannot open {self.safe_url}: {err}; install a PostgreSQL driver "
                                 "(pip install 'psycopg[binary]') and use postgresql+psycopg://...") from None
            self._write_lock = nullcontext()  # PostgreSQL has row locks; no process-wide serialization
        else:
            raise StoreError(f"{self.safe_url}: unsupported database {self.dialect!r}; use sqlite:///FILE or postgresql://...")
        self._read_guard: Any = self._write_lock if self._memory else nullcontext()
        self._init_schema()

    # ----------------------------------------------------------------------- connections

    def _install_sqlite_hooks(self) -> None:
        memory, synchronous = self._memory, self.synchronous

        @event.listens_for(self.engine, "connect")
        def _on_connect(dbapi_connection: Any, _record: Any) -> None:
            dbapi_connection.isolation_level = None  # pysqlite must not BEGIN on its own; we emit BEGIN below
            cursor = dbapi_connection.cursor()
            if not memory:
                mode = cursor.execute("PRAGMA journal_mode=WAL").fetchone()[0]
                if str(mode).lower() != "wal":
                    logger.warning("SQLite refused WAL mode (journal_mode=%s); durability still holds, "
                                   "concurrency is lower", mode)
            cursor.execute(f"PRAGMA synchronous={synchronous}")
            cursor.execute("PRAGMA foreign_keys=ON")
            cursor.execute(f"PRAGMA busy_timeout={int(BUSY_TIMEOUT_S * 1000)}")
            cursor.close()

        @event.listens_for(self.engine, "begin")
        def _on_begin(conn: Connection) -> None:
            options = conn.get_execution_options()
            if not options.get("lexalign_write", False):
                conn.exec_driver_sql("BEGIN")
                return
            # Durable writes (submissions, accounts, imports, feedback, skips) commit with the configured level;
            # bookkeeping that is safe to lose on power loss (a task assignment, a login audit) commits with
            # NORMAL and becomes durable with the next FULL commit's fsync of the WAL.
            level = synchronous if options.get("lexalign_durable", True) else "NORMAL"
            conn.exec_driver_sql(f"PRAGMA synchronous={level}")
            conn.exec_driver_sql("BEGIN IMMEDIATE")

    @contextmanager
    def _write(self, durable: bool = True) -> Iterator[Connection]:
        """One write transaction (committed on success, rolled back on any exception).

        ``durable=False`` (SQLite): the commit is not fsynced on its own; use it only for data that may be
        lost on power loss (never for an acknowledged submission). kill -9 of the process loses nothing either way.
        """
        with self._write_lock:
            with self.engine.connect() as conn:
                conn.execution_options(lexalign_write=True, lexalign_durable=durable)
                with conn.begin():
                    yield conn

    @contextmanager
    def _read(self) -> Iterator[Connection]:
        with self._read_guard:
            with self.engine.connect() as conn:
                with conn.begin():
                    yield conn

    def _retrying(self, what: str, fn: Any) -> Any:
        """Run ``fn()`` (which opens its own transaction) again when the database reports a transient lock."""
        delay = 0.01
        for attempt in range(MAX_RETRIES):
            try:
                return fn()
            except DataError as err:  # a value the database cannot hold (PostgreSQL: a NUL byte in text)
                raise SubmissionError(f"{what} refused by the database: {str(err.orig).splitlines()[0]}") from None
            except OperationalError as err:
                message = str(err).lower()
                transient = "locked" in message or "busy" in message or "deadlock" in message or "serializ" in message
                if not transient or attempt == MAX_RETRIES - 1:
                    raise StoreError(f"{self.safe_url}: {what} failed: {err.orig}") from None
                time.sleep(delay)
                delay = min(delay * 2, 0.5)
        raise AssertionError("unreachable")

    def close(self) -> None:
        self.engine.dispose()

    def __enter__(self: _DB) -> _DB:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ----------------------------------------------------------------------- schema version

    def _init_schema(self) -> None:
        def run() -> None:
            with self._write() as conn:
                if self.dialect == "postgresql":
                    conn.execute(text("SELECT pg_advisory_xact_lock(727274)"))  # first open by two processes at once
                names = set(inspect(conn).get_table_names())
                ours = set(metadata.tables)
                if "schema_version" in names:
                    versions = conn.execute(select(schema_version.c.version)).scalars().all()
                    if not versions:
                        raise StoreError(f"{self.safe_url}: the schema_version table is empty, so the schema is unknown; "
                                         "this is not a lexalign preference store (or it was damaged)")
                    version = max(versions)
                    if version > SCHEMA_VERSION:
                        raise StoreError(f"{self.safe_url}: the store has schema version {version}, newer than the "
                                         f"version {SCHEMA_VERSION} this lexalign understands; upgrade lexalign "
                                         "(or open another store)")
                    missing = sorted(ours - names)
                    if missing:
                        raise StoreError(f"{self.safe_url}: schema version {version} but tables {', '.join(missing)} "
                                         "are missing; the store is damaged")
                    if version < SCHEMA_VERSION:
                        self._migrate(conn, version)
                    return
                present = sorted(ours & names)
                if present:
                    raise StoreError(f"{self.safe_url}: has tables {', '.join(present)} but no schema_version; "
                                     "the schema is unknown, so it is not opened (use a new database)")
                metadata.create_all(conn)
                conn.execute(insert(schema_version).values(version=SCHEMA_VERSION, applied_at=utc_now()))
                logger.info("created preference store %s (schema version %d)", self.safe_url, SCHEMA_VERSION)

        try:
            self._retrying("opening the store", run)
        except OperationalError as err:
            raise StoreError(f"cannot open {self.safe_url}: {err.orig}") from None

    def _migrate(self, conn: Connection, version: int) -> None:
        """Upgrade an older store step by step inside the opening transaction: every step or none is applied."""
        start = version
        while version < SCHEMA_VERSION:
            step = MIGRATIONS.get(version)
            if step is None:
                raise StoreError(f"{self.safe_url}: the store has schema version {version}, older than "
                                 f"{SCHEMA_VERSION}, and no migration exists; export its rankings with the "
                                 "lexalign that wrote it and import them into a new store")
            step(conn)
            version += 1
            conn.execute(insert(schema_version).values(version=version, applied_at=utc_now()))
        logger.info("migrated preference store %s from schema version %d to %d", self.safe_url, start, version)

    def schema_version(self) -> int:
        with self._read() as conn:
            return int(conn.execute(select(func.max(schema_version.c.version))).scalar_one())
