"""The preference store on a real PostgreSQL server: the SAME concurrency tests as SQLite (test_store.py's
20 annotators x 50 submissions and k-assignment race, run unchanged with their database URL pointed at
PostgreSQL), kill -9 of the client process and of the database server mid-load, the ranking app's admin
isolation, and schema-version checks.

The server is a throwaway cluster that this module starts itself: ``initdb`` into a fresh temporary folder,
``pg_ctl start`` on a free loopback port with a private unix-socket folder, password (SCRAM) authentication
on TCP, and ``pg_ctl stop`` + removal at the end. PostgreSQL refuses to run as root, so as root the cluster
runs as the ``postgres`` system user (created by Debian's ``postgresql`` package) through ``runuser``.
The binaries come from ``$LEXALIGN_PG_BINDIR``, ``pg_ctl`` on PATH, ``/usr/lib/postgresql/*/bin`` or
``pg_config --bindir``; ``make test`` installs them (``apt-get install postgresql``) when they are missing.
Missing binaries FAIL this module with that instruction; they never skip it.
"""

from __future__ import annotations

import atexit
import glob
import json
import os
import pwd
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
PG_USER = "lexalign"


def find_pg_bindir() -> Path | None:
    candidates = []
    if os.environ.get("LEXALIGN_PG_BINDIR"):
        candidates.append(Path(os.environ["LEXALIGN_PG_BINDIR"]))
    if shutil.which("pg_ctl"):
        candidates.append(Path(os.path.realpath(shutil.which("pg_ctl"))).parent)
    candidates += [Path(p) for p in sorted(glob.glob("/usr/lib/postgresql/*/bin"),
                                           key=lambda p: int(Path(p).parent.name) if Path(p).parent.name.isdigit() else 0,
                                           reverse=True)]
    if shutil.which("pg_config"):
        try:
            out = subprocess.run(["pg_config", "--bindir"], capture_output=True, text=True, timeout=10).stdout.strip()
            candidates.append(Path(out))
        except (OSError, subprocess.TimeoutExpired):
            pass
    for folder in candidates:
        if all((folder / tool).is_file() for tool in ("initdb", "pg_ctl", "postgres")):
            return folder
    return None


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class PostgresCluster:
    """A throwaway PostgreSQL cluster on 127.0.0.1:<free port> (see the module docstring)."""

    def __init__(self, bindir: Path) -> None:
        self.bindir = bindir
        self.root = Path(tempfile.mkdtemp(prefix="lexalign-pg-"))
        self.data = self.root / "data"
        self.sockets = self.root / "sockets"
        self.log = self.root / "server.log"
        self.port = free_port()
        self.password = secrets.token_urlsafe(18)
        self.as_user: list[str] = []
        self._stop_at_exit = False
        if os.geteuid() == 0:  # postgres refuses to run as root
            try:
                account = pwd.getpwnam("postgres")
            except KeyError:
                pytest.fail("running as root and there is no 'postgres' system user to run PostgreSQL as; "
                            "install Debian's postgresql package (make test does: apt-get install -y postgresql)")
            runuser = shutil.which("runuser")
            self.as_user = [runuser, "-u", "postgres", "--"] if runuser else ["su", "postgres", "-s", "/bin/sh", "-c"]
            self.sockets.mkdir()
            for path in (self.root, self.sockets):
                os.chown(path, account.pw_uid, account.pw_gid)
        else:
            self.sockets.mkdir()

    def _run(self, args: list[str], timeout: float = 120) -> subprocess.CompletedProcess:
        command = self.as_user + args if self.as_user[:1] != ["su"] else self.as_user + [" ".join(args)]
        return subprocess.run(command, capture_output=True, text=True, timeout=timeout)

    def initdb(self) -> None:
        pwfile = self.root / "pw"
        pwfile.write_text(self.password + "\n")
        if self.as_user:
            account = pwd.getpwnam("postgres")
            os.chown(pwfile, account.pw_uid, account.pw_gid)
        result = self._run([str(self.bindir / "initdb"), "-D", str(self.data), "-U", PG_USER, f"--pwfile={pwfile}",
                            "--auth-local=trust", "--auth-host=scram-sha-256", "-E", "UTF8", "--no-instructions"])
        pwfile.unlink()
        if result.returncode != 0:
            pytest.fail(f"initdb failed:\n{result.stdout[-2000:]}\n{result.stderr[-2000:]}")

    def start(self) -> None:
        if not self._stop_at_exit:  # a test process killed outside pytest's teardown still stops its server
            atexit.register(self.cleanup)
            self._stop_at_exit = True
        options = (f"-p {self.port} -k {self.sockets} -c listen_addresses=127.0.0.1 -c max_connections=300 "
                   "-c shared_buffers=32MB -c fsync=on -c synchronous_commit=on -c full_page_writes=on")
        result = self._run([str(self.bindir / "pg_ctl"), "-D", str(self.data), "-l", str(self.log), "-o", options,
                            "-w", "-t", "60", "start"])
        if result.returncode != 0:
            log = self.log.read_text() if self.log.exists() else ""
            pytest.fail(f"pg_ctl start failed:\n{result.stdout[-1500:]}\n{result.stderr[-1500:]}\n{log[-2000:]}")

    def postmaster_pid(self) -> int:
        return int((self.data / "postmaster.pid").read_text().splitlines()[0])

    def kill9(self) -> None:
        """SIGKILL the postmaster and every backend: what a crash of the database machine's process looks like."""
        pid = self.postmaster_pid()
        children = subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True).stdout.split()
        for p in [pid, *map(int, children)]:
            try:
                os.kill(p, signal.SIGKILL)
            except ProcessLookupError:
                pass
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                os.kill(pid, 0)
            except ProcessLookupError:
                return
            time.sleep(0.1)

    def stop(self) -> None:
        self._run([str(self.bindir / "pg_ctl"), "-D", str(self.data), "-m", "immediate", "-w", "stop"], timeout=60)

    def url(self, database: str = "postgres", password: str | None = None) -> str:
        return (f"postgresql+psycopg://{PG_USER}:{password if password is not None else self.password}"
                f"@127.0.0.1:{self.port}/{database}")

    def create_database(self, prefix: str = "t") -> str:
        import psycopg

        name = f"{prefix}_{secrets.token_hex(6)}"
        with psycopg.connect(host="127.0.0.1", port=self.port, user=PG_USER, password=self.password,
                             dbname="postgres", autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        return self.url(name)

    def cleanup(self) -> None:
        if not self.root.exists():
            return
        self.stop()
        shutil.rmtree(self.root, ignore_errors=True)


_CLUSTER: PostgresCluster | None = None


@pytest.fixture(scope="session")
def postgres() -> PostgresCluster:
    """One cluster per test session, shared by every module that imports this fixture."""
    global _CLUSTER
    if _CLUSTER is not None:
        yield _CLUSTER
        return
    bindir = find_pg_bindir()
    if bindir is None:
        pytest.fail("PostgreSQL server binaries (initdb, pg_ctl, postgres) not found; install them with "
                    "`apt-get install -y postgresql` (make test does this) or set LEXALIGN_PG_BINDIR")
    try:
        import psycopg  # noqa: F401
    except ImportError:
        pytest.fail("the psycopg driver is missing: pip install 'psycopg[binary]' (in the dev extra)")
    cluster = PostgresCluster(bindir)
    cluster.initdb()
    cluster.start()
    _CLUSTER = cluster
    yield cluster
    _CLUSTER = None
    cluster.cleanup()


@pytest.fixture()
def pg_url(postgres: PostgresCluster) -> str:
    return postgres.create_database()


# --------------------------------------------------------------------------- the SQLite tests, on PostgreSQL


@pytest.fixture()
def store_tests_on_postgres(postgres: PostgresCluster, monkeypatch):
    """test_store.py's tests build their URL with ``url_for(path)``: point it at a fresh PostgreSQL database."""
    import test_store

    monkeypatch.setattr(test_store, "url_for", lambda path: postgres.create_database("st"))
    return test_store


@pytest.mark.slow
def test_20_annotators_x_50_concurrent_submissions_each_stored_exactly_once(store_tests_on_postgres, tmp_path) -> None:
    """The SQLite load test, unchanged: 20 threads x 50 submissions, every ack stored once, <= k per task."""
    started = time.perf_counter()
    store_tests_on_postgres.test_20_annotators_x_50_concurrent_submissions_each_stored_exactly_once(tmp_path)
    print(f"PostgreSQL: 1000 submissions by 20 annotators in {time.perf_counter() - started:.1f} s")


def test_concurrent_assignment_of_one_task_gives_exactly_k(store_tests_on_postgres, tmp_path) -> None:
    for _ in range(5):  # a race: run it a few times
        store_tests_on_postgres.test_concurrent_assignment_of_one_task_gives_exactly_k(tmp_path)


def test_assignment_rules_and_validation_match_sqlite(store_tests_on_postgres, tmp_path) -> None:
    t = store_tests_on_postgres
    from lexalign.data.store import open_store

    for test in (t.test_each_task_goes_to_k_different_annotators_never_twice, t.test_form_tokens_replay_and_ownership,
                 t.test_import_rankings_is_atomic_and_idempotent, t.test_audit_events_cover_the_actions):
        with open_store(t.url_for(tmp_path / "x.db")) as store:
            if test is t.test_form_tokens_replay_and_ownership:
                store.add_annotator("alice", None)
                store.add_annotator("bob", None)
                t.add_tasks(store, 2, k=2)
                test((store, store.next_task_for("alice")))
            elif test is t.test_audit_events_cover_the_actions:
                test(store, tmp_path / test.__name__)
            else:
                test(store)


def test_a_version_1_store_is_migrated_on_postgresql(pg_url: str) -> None:
    import sqlalchemy
    from test_gold_rankings import check_migrated, version_1_store

    version_1_store(pg_url)
    check_migrated(pg_url)
    engine = sqlalchemy.create_engine(pg_url)
    with pytest.raises(sqlalchemy.exc.IntegrityError, match="ck_annotators_kind"):
        with engine.begin() as conn:
            conn.exec_driver_sql("UPDATE annotators SET kind = 'robot'")
    engine.dispose()


def test_schema_version_mismatch_fails_clearly(pg_url: str) -> None:
    import sqlalchemy

    from lexalign.data.store import StoreError, open_store

    open_store(pg_url).close()
    engine = sqlalchemy.create_engine(pg_url)
    with engine.begin() as conn:
        conn.exec_driver_sql("UPDATE schema_version SET version = 7")
    engine.dispose()
    with pytest.raises(StoreError, match="schema version 7, newer"):
        open_store(pg_url)


def test_wrong_password_is_a_clear_error_without_the_password(postgres: PostgresCluster) -> None:
    url = postgres.url(password="not-the-password-x9")
    result = subprocess.run([sys.executable, "-m", "lexalign.cli", "annotators", "list", "--store", url],
                            capture_output=True, text=True, timeout=120, cwd=REPO)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert "password authentication failed" in result.stderr
    assert "not-the-password-x9" not in result.stderr + result.stdout  # the URL is shown with *** for the password


# --------------------------------------------------------------------------- kill -9: client process, server


def _acks_from(stream, acks: list, stop_at: int, deadline: float) -> None:
    while len(acks) < stop_at and time.monotonic() < deadline:
        line = stream.readline()
        if not line:
            break
        acks.append(json.loads(line))


def _stored(url: str) -> tuple[set[tuple], int, int]:
    from lexalign.data.store import open_store

    with open_store(url) as store:
        with store.engine.connect() as conn:
            rows = {tuple(r) for r in conn.exec_driver_sql(
                "SELECT a.username, r.task_id, r.form_token, r.id FROM rankings r "
                "JOIN annotators a ON a.id = r.annotator_id")}
            done = conn.exec_driver_sql("SELECT count(*) FROM assignments WHERE status='done'").scalar()
            audited = conn.exec_driver_sql("SELECT count(*) FROM audit_events WHERE action='submission'").scalar()
    return rows, done, audited


def _seed(url: str, annotators: int, tasks: int) -> None:
    import test_store

    from lexalign.data.store import open_store

    with open_store(url) as store:
        for i in range(annotators):
            store.add_annotator(f"u{i:02d}", None)
        test_store.add_tasks(store, tasks, k=3)


@pytest.mark.slow
def test_sigkill_of_the_client_mid_load_keeps_every_acknowledged_submission(pg_url: str) -> None:
    """test_store.py's kill -9 test on PostgreSQL: the process holding 20 annotator threads is killed."""
    annotators = 20
    _seed(pg_url, annotators, 400)
    code = (f"import sys; sys.path.insert(0, {str(Path(__file__).parent)!r}); import test_store; "
            f"test_store._load_child({pg_url!r}, {annotators}, 'FULL')")
    child = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                             text=True, cwd=REPO)
    acks: list = []
    _acks_from(child.stdout, acks, 300, time.monotonic() + 180)
    assert len(acks) >= 300, child.stderr.read()[-3000:] if child.poll() is not None else "too slow"
    child.send_signal(signal.SIGKILL)
    rest, _ = child.communicate(timeout=30)
    acks += [json.loads(line) for line in rest.splitlines() if line.strip().endswith("]")]
    rows, done, audited = _stored(pg_url)
    missing = [a for a in acks if tuple(a) not in rows]
    assert not missing, f"{len(missing)} acknowledged submissions lost, e.g. {missing[:3]}"
    assert done == audited == len(rows) and len(rows) < 400 * 3
    print(f"PostgreSQL, client killed: {len(acks)} acknowledged, {len(rows)} stored, 0 lost")


@pytest.mark.slow
def test_sigkill_of_the_database_server_mid_load_keeps_every_acknowledged_submission(postgres: PostgresCluster) -> None:
    """kill -9 of the postmaster and all backends while 20 annotators submit; after restart (WAL recovery)
    every acknowledged submission is there and no half-applied one is."""
    url = postgres.create_database("crash")
    annotators = 20
    _seed(url, annotators, 400)
    code = (f"import sys; sys.path.insert(0, {str(Path(__file__).parent)!r}); import test_store; "
            f"test_store._load_child({url!r}, {annotators}, 'FULL')")
    child = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                             text=True, cwd=REPO)
    acks: list = []
    _acks_from(child.stdout, acks, 300, time.monotonic() + 180)
    assert len(acks) >= 300, "too slow"
    postgres.kill9()  # the database dies under 20 writers
    rest, _ = child.communicate(timeout=120)  # the client's threads fail and it exits
    acks += [json.loads(line) for line in rest.splitlines() if line.strip().endswith("]")]
    postgres.start()  # crash recovery replays the WAL
    rows, done, audited = _stored(url)
    missing = [a for a in acks if tuple(a) not in rows]
    assert not missing, f"{len(missing)} acknowledged submissions lost, e.g. {missing[:3]}"
    assert done == audited == len(rows)
    assert len(rows) < 400 * 3
    print(f"PostgreSQL server killed: {len(acks)} acknowledged, {len(rows)} stored after recovery, 0 lost")


# --------------------------------------------------------------------------- the ranking app on PostgreSQL


def test_ranking_app_isolation_and_admin_checks_on_postgres(pg_url: str, tmp_path: Path) -> None:
    from types import SimpleNamespace

    import gradio as gr
    from test_annotate_app import components

    from lexalign.config import load_config
    from lexalign.data.store import open_store
    from lexalign.reward.annotate import AnnotateApp, AnnotateConfig

    config = load_config(AnnotateConfig, None, [f"store={pg_url}", "max_candidates=4",
                                                f"export_dir={tmp_path / 'exports'}"])
    with open_store(pg_url) as store:
        for name, role in (("alice", "annotator"), ("bob", "annotator"), ("root", "admin")):
            store.add_annotator(name, f"{name}-password", role)
        store.add_task("t1", "Which law governs?", ["New York.", "Delaware.", "Not present."], k=2)
        app = AnnotateApp(store, config)
        c = components()
        state = app.on_load(c, SimpleNamespace(username="alice"))["state"]
        ok = app.on_submit(c, state, [1, 2, 3, None], False, "alice private note", [], SimpleNamespace(username="alice"))
        assert ok["message"].startswith("Saved")
        assert store.my_rankings("bob") == [] and all(r["rationale"] != "alice private note" for r in app._my_rows("bob"))
        with pytest.raises(gr.Error, match="Only admins"):
            app.admin_export(SimpleNamespace(username="bob"))
        assert app.auth("alice", "alice-password") and not app.auth("alice", "wrong")
        with store.engine.connect() as conn:
            hashes = [r[0] for r in conn.exec_driver_sql("SELECT password_hash FROM annotators")]
        assert all(h.startswith("$argon2id$") for h in hashes)
