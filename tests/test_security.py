"""Security guarantees, one test each (guarantees already proven elsewhere are referenced in docs/reliability.md):
login required on both Gradio apps, argon2 password hashes only, annotators isolated from each other's data
and from admin functions, user text rendered inert in the chat UI, secrets never written to logs, manifests,
reports or the database, and an audit log of who ranked and exported what.

Both apps run as ``lexalign annotate`` / ``lexalign chat`` subprocesses on free ports, configured by YAML files
that hold a PostgreSQL URL with its password (the throwaway server of test_postgres.py), with API keys and
tokens in their environment: every byte they log or write is searched for those secrets.
"""

from __future__ import annotations

import os
import secrets
import subprocess
import sys
import time
import re
from pathlib import Path
from types import SimpleNamespace

import pytest
import requests

from app_support import free_port, start_app, stop_app
from test_postgres import postgres  # noqa: F401 - the session's PostgreSQL cluster fixture

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parent.parent
API_KEY = "sk-lexalign-" + secrets.token_hex(12)
HF_TOKEN = "hf_" + secrets.token_hex(12)
SECRET_ENV = {"LEXALIGN_API_KEY": API_KEY, "HF_TOKEN": HF_TOKEN, "OPENAI_API_KEY": API_KEY + "-openai",
              "WANDB_API_KEY": "wandb-" + secrets.token_hex(8)}
USERS = {"alice": ("alice-" + secrets.token_hex(6), "annotator"), "bob": ("bob-" + secrets.token_hex(6), "annotator"),
         "root": ("root-" + secrets.token_hex(6), "admin")}


def env_with_secrets() -> dict[str, str]:
    return dict(os.environ, GRADIO_ANALYTICS_ENABLED="False", NO_PROXY="127.0.0.1,localhost", **SECRET_ENV)


def secrets_in(text: str | bytes, extra: list[str]) -> list[str]:
    data = text.encode("utf-8", "replace") if isinstance(text, str) else text
    values = list(SECRET_ENV.values()) + extra
    return [v for v in values if v.encode() in data]


def files_under(*folders: Path) -> list[Path]:
    return [p for folder in folders if folder.exists() for p in sorted(folder.rglob("*")) if p.is_file()]


@pytest.fixture(scope="module")
def apps(postgres, tmp_path_factory):  # noqa: F811
    """Both apps on one PostgreSQL store, started while the store has no account (so their startup warnings
    about the store run too); accounts and a task are added once they are up."""
    from lexalign.data.store import open_store

    root = tmp_path_factory.mktemp("security")
    url = postgres.create_database("sec")
    open_store(url).close()
    ports = {"annotate": free_port(), "chat": free_port()}
    configs = {}
    for app in ("annotate", "chat"):
        lines = [f"store: {url}", f"port: {ports[app]}"]
        lines += [f"export_dir: {root / 'exports'}"] if app == "annotate" else [f"endpoint: http://127.0.0.1:{free_port()}/v1"]
        configs[app] = root / f"{app}.yaml"
        configs[app].write_text("\n".join(lines) + "\n")  # the database password sits in the config file
    procs = {app: start_app([sys.executable, "-m", "lexalign.cli", app, "--config", str(configs[app])],
                            root / f"{app}.log", ports[app], env_with_secrets(), timeout_s=180, new_session=True)
             for app in ("annotate", "chat")}
    with open_store(url) as store:
        for name, (password, role) in USERS.items():
            store.add_annotator(name, password, role, actor="test-admin")
        store.add_task("sec-1", "Which law governs?\n\nExcerpt:\nGoverned by the laws of New York.",
                       ["New York.", "<script>window.x=1</script>Delaware.", "Not present."], k=2)
    yield SimpleNamespace(url=url, root=root, password=postgres.password,
                          base={app: f"http://127.0.0.1:{port}/" for app, port in ports.items()}, procs=procs)
    for proc in procs.values():
        stop_app(proc, timeout_s=20)


def login(base: str, user: str, password: str) -> requests.Session:
    session = requests.Session()
    response = session.post(f"{base}login", data={"username": user, "password": password}, timeout=30)
    assert response.status_code == 200, response.text
    return session


# --------------------------------------------------------------------------- login


@pytest.mark.parametrize("app", ["annotate", "chat"])
def test_login_is_required_on_both_apps(apps, app) -> None:
    from gradio_client import Client

    base = apps.base[app]
    for path in ("config", "gradio_api/info"):
        assert requests.get(f"{base}{path}", timeout=30).status_code == 401, path
    api = "load_task" if app == "annotate" else "on_load"
    call = requests.post(f"{base}gradio_api/call/{api}", json={"data": []}, timeout=30)
    assert call.status_code == 401
    with pytest.raises(Exception):  # noqa: B017 - the client cannot even read the app's config
        Client(base, verbose=False)
    wrong = requests.post(f"{base}login", data={"username": "alice", "password": "not-her-password"}, timeout=30)
    assert wrong.status_code == 400
    with pytest.raises(Exception):  # noqa: B017
        Client(base, auth=("alice", "not-her-password"), verbose=False)
    session = login(base, "alice", USERS["alice"][0])
    assert session.get(f"{base}config", timeout=30).status_code == 200
    Client(base, auth=("alice", USERS["alice"][0]), verbose=False)  # signed in: the API answers


# --------------------------------------------------------------------------- passwords


def test_passwords_are_stored_as_argon2_hashes_only(apps, tmp_path) -> None:
    """Every stored password is an argon2id hash; no plaintext anywhere in the database (PostgreSQL dump of
    every table) or in a SQLite store's files (database + WAL), for accounts made by the CLI and the API."""
    import sqlalchemy

    from lexalign.cli import main
    from lexalign.data.store import open_store

    engine = sqlalchemy.create_engine(apps.url)
    with engine.connect() as conn:
        hashes = dict(conn.exec_driver_sql("SELECT username, password_hash FROM annotators").all())
        dump = "\n".join(str(row) for table in ("annotators", "audit_events", "tasks", "rankings", "feedback")
                         for row in conn.exec_driver_sql(f"SELECT * FROM {table}").all())
    engine.dispose()
    assert all(hashes[name].startswith("$argon2id$") for name in USERS)
    assert not [name for name, (password, _) in USERS.items() if password in dump]
    url = f"sqlite:///{tmp_path / 'p.db'}"
    password = "cli-" + secrets.token_hex(8)
    import io

    stdin = sys.stdin
    sys.stdin = io.StringIO(password + "\n")
    try:
        assert main(["annotators", "add", "carol", "--store", url, "--password-stdin"]) == 0
    finally:
        sys.stdin = stdin
    with open_store(url) as store:
        assert store.verify_login("carol", password) is not None
    raw = b"".join(p.read_bytes() for p in tmp_path.iterdir() if p.name.startswith("p.db"))
    assert password.encode() not in raw and b"$argon2id$" in raw


# --------------------------------------------------------------------------- isolation


def test_annotators_see_only_their_own_work_and_no_admin_function(apps) -> None:
    import re

    from gradio_client import Client

    from lexalign.data.store import SubmissionError, open_store

    alice = Client(apps.base["annotate"], auth=("alice", USERS["alice"][0]), verbose=False)
    outputs = alice.predict(api_name="/load_task")
    assert re.search(r"Task `sec-1`", outputs[1])
    saved = alice.predict(1, 2, 3, None, None, None, False, "alice-private-rationale", *[[]] * 6, [],
                          api_name="/submit")   # flags: on each answer, then on the whole task
    assert saved[0].startswith("Saved"), saved[0]
    bob = Client(apps.base["annotate"], auth=("bob", USERS["bob"][0]), verbose=False)
    bob_view = bob.predict(api_name="/load_task")
    assert "alice-private-rationale" not in str(bob_view)  # bob's page and table never hold alice's work
    # export: sources, kinds, annotators, submitted from, submitted to
    for endpoint, inputs in (("/admin_refresh", []), ("/admin_export", [[], [], [], "", ""])):
        with pytest.raises(Exception, match="Only admins"):
            bob.predict(*inputs, api_name=endpoint)
    with open_store(apps.url) as store:
        assert store.my_rankings("bob") == [] and len(store.my_rankings("alice")) == 1
        task = store.task_rankings()[0]
        # bob cannot submit a ranking for a task with a form token that is not his
        with pytest.raises(SubmissionError):
            store.submit_ranking("bob", task.task_id, {c.id: 1 for c in task.candidates}, form_token="guessed")
        denied = store.audit_events("admin_denied")
        assert {e["actor"] for e in denied} == {"bob"} and len(denied) >= 2
    assert not (apps.root / "exports").exists() or not any((apps.root / "exports").iterdir())


def test_chat_sessions_belong_to_their_user() -> None:
    """A chat session (conversation, uploaded contract, feedback) is bound to the signed-in user: a request
    from another user never reads, rates or exports it."""
    from lexalign.serve.chat import ChatApp, ChatConfig, ChatSession, Turn

    app = ChatApp.__new__(ChatApp)  # handlers only: no store or endpoint needed for these checks
    app.config = ChatConfig()
    alice_session = ChatSession("alice")
    alice_session.turns.append(Turn(request={}, display="Q", messages=[{"role": "user", "content": "Q"}],
                                    answer="alice's confidential answer", model="m", done=True))
    as_bob = app._session(alice_session, SimpleNamespace(username="bob"))
    assert as_bob is not alice_session and as_bob.user == "bob" and as_bob.turns == []
    assert app._session(alice_session, SimpleNamespace(username=None)) is None
    assert app.export(alice_session, SimpleNamespace(username="bob")) is None
    status, state, enabled, _ = app.on_feedback(-1, "better", alice_session, SimpleNamespace(username="bob"))
    assert state is not alice_session and "no answer to rate" in status and alice_session.turns[0].feedback_id is None


# --------------------------------------------------------------------------- inert text


def test_chat_renders_user_document_and_model_text_inert() -> None:
    from lexalign.serve.chat import ChatSession, Turn, chat_messages, sources_markdown

    attack = '<img src=x onerror="alert(1)"><script>alert(2)</script>[link](javascript:alert(3))'
    session = ChatSession("alice")
    session.document = SimpleNamespace(chunks=[1, 2])
    session.turns.append(Turn(request={}, display=attack, messages=[], answer=attack, model="m", done=True,
                              sources=[{"label": attack, "text": attack}],
                              citations=[{"label": attack, "found": False, "quote": attack}]))
    rendered = "\n".join(m["content"] for m in chat_messages(session)) + sources_markdown(session)
    assert "<img" not in rendered and "<script" not in rendered and "&lt;script&gt;" in rendered
    assert 'onerror="' not in rendered


# --------------------------------------------------------------------------- secrets


def test_secrets_never_reach_logs_manifests_reports_or_the_database(apps, tiny_model_dir, tmp_path) -> None:
    """API keys/tokens in the environment and a database password in config files and --store URLs: run the
    apps (startup on an empty store, logins, a submission, an admin export), the prefs CLI and an SFT stage,
    then search every log, every file they wrote and every database row for the secrets."""
    import json

    import sqlalchemy
    from gradio_client import Client

    from test_sft import chat_records

    password = apps.password
    extra = [password] + [p for p, _ in USERS.values()]
    # the apps: logins (one wrong), an admin export from the UI
    root_client = Client(apps.base["annotate"], auth=("root", USERS["root"][0]), verbose=False)
    text, _ = root_client.predict([], [], [], "", "", api_name="/admin_export")   # no filter: all
    assert "Exported" in text
    requests.post(f"{apps.base['chat']}login", data={"username": "root", "password": password}, timeout=30)
    login(apps.base["chat"], "alice", USERS["alice"][0])
    # the CLI with the password in --store
    outputs: list[str] = []
    for args in (["annotators", "list"], ["prefs", "export", "--out", str(tmp_path / "export")],
                 ["prefs", "import", "shipped:acord_rankings_valid.jsonl"]):
        result = subprocess.run([sys.executable, "-m", "lexalign.cli", *args, "--store", apps.url], cwd=REPO,
                                capture_output=True, text=True, timeout=300, env=env_with_secrets())
        assert result.returncode == 0, result.stderr[-2000:]
        outputs += [result.stdout, result.stderr]
    # an SFT stage with the keys in its environment (checkpoints hold the pickled trainer arguments)
    data = tmp_path / "chat.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in chat_records(32, seed=0)))
    sft = [sys.executable, "-m", "lexalign.cli", "sft", "--config", str(REPO / "configs" / "sft.yaml"),
           f"model.path={tiny_model_dir}", f"data.train={data}", f"data.valid={data}", f"output_dir={tmp_path / 'runs'}",
           "model.quantization.bits=null", "model.threads=1", "training.max_steps=2", "training.save_steps=2",
           "training.eval_steps=2", "training.max_length=128"]
    result = subprocess.run(sft, cwd=REPO, capture_output=True, text=True, timeout=600, env=env_with_secrets())
    assert result.returncode == 0, result.stderr[-2000:]
    outputs += [result.stdout, result.stderr]
    # a token put in a config is refused (it would be pickled into every checkpoint), without echoing it
    refused = subprocess.run(sft + [f"training.hub_token={HF_TOKEN}"], cwd=REPO, capture_output=True, text=True,
                             timeout=300, env=env_with_secrets())
    assert refused.returncode == 2 and "HF_TOKEN in the environment" in refused.stderr
    outputs += [refused.stdout, refused.stderr]
    time.sleep(1)  # let the apps flush their logs
    leaks = {}
    inputs = {apps.root / "annotate.yaml", apps.root / "chat.yaml"}  # where the user put the password
    for file in files_under(apps.root, tmp_path):
        if file in inputs:
            continue
        found = secrets_in(file.read_bytes(), extra)
        if found:
            leaks[str(file)] = found
    for i, text in enumerate(outputs):
        if secrets_in(text, extra):
            leaks[f"cli output {i}"] = secrets_in(text, extra)
    engine = sqlalchemy.create_engine(apps.url)
    with engine.connect() as conn:
        rows = "\n".join(str(r) for t in ("audit_events", "annotators", "tasks", "rankings", "feedback")
                         for r in conn.exec_driver_sql(f"SELECT * FROM {t}").all())
    engine.dispose()
    if secrets_in(rows, extra):
        leaks["database rows"] = secrets_in(rows, extra)
    manifest = json.loads((tmp_path / "runs" / "tiny" / "sft" / "manifest.json").read_text())
    assert manifest["host"]["argv"] and (tmp_path / "export" / "export.json").is_file()
    assert "***@" in json.loads((tmp_path / "export" / "export.json").read_text())["store"]
    assert not leaks, leaks


# --------------------------------------------------------------------------- audit


def test_audit_log_records_who_ranked_and_exported_what(apps, tmp_path) -> None:
    from gradio_client import Client

    from lexalign.data.store import open_store
    from lexalign.reward.prefs import export_preferences

    bob = Client(apps.base["annotate"], auth=("bob", USERS["bob"][0]), verbose=False)
    bob.predict(api_name="/load_task")
    bob.predict(2, 1, 1, None, None, None, True, "", ["invented_clause"], *[[]] * 5, [],
                api_name="/submit")  # on answer A; none on the whole task
    root = Client(apps.base["annotate"], auth=("root", USERS["root"][0]), verbose=False)
    root.predict([], [], [], "", "", api_name="/admin_export")
    with open_store(apps.url) as store:
        export_preferences(store, tmp_path / "cli-export", save_dataset=False, actor="lead@cli")
        events = store.audit_events(limit=10_000)
    by_action: dict[str, list] = {}
    for e in events:
        by_action.setdefault(e["action"], []).append(e)
    submissions = {e["actor"]: e["detail"] for e in by_action["submission"]}
    assert {"alice", "bob"} <= set(submissions)
    assert submissions["bob"]["task_id"] and submissions["bob"]["ranking_id"] and submissions["bob"]["none_acceptable"]
    (flag,) = submissions["bob"]["flags"]   # on one answer: stored with its position
    assert re.fullmatch(r"invented_clause@[0-2]", flag), flag
    exports = by_action["export"]
    assert {"root", "lead@cli"} <= {e["actor"] for e in exports}
    for e in exports:
        assert {"out_dir", "pairs", "tasks", "min_annotators", "feedback_pairs"} <= set(e["detail"])
    logins = by_action["login"]
    assert any(e["actor"] == "bob" and e["detail"]["ok"] for e in logins)
    assert any(not e["detail"]["ok"] for e in logins)  # failed attempts are recorded too
    created = {e["detail"]["username"]: e["actor"] for e in by_action["annotator_created"]}
    assert created["alice"] == "test-admin"
    assert all(e["at"] is not None for e in events)
