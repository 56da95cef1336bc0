"""The served API is keyed on every route: the authenticating front of `lexalign serve` (serve/gateway.py).

Fast tests run the front against a stand-in engine (an ASGI app, or a uvicorn server on a Unix socket for
streaming). The slow test reads the REAL server's route table (the engine's OpenAPI schema through the front,
plus the engine app's own table built in the engine's Python, plus the admin routes and a path no one serves)
and requests every route and method without a key, with a wrong key and with the key (the session's one
vLLM server of test_serve_support.py); the routes checked are printed.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import stat
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, StreamingResponse
from starlette.routing import Route
from starlette.testclient import TestClient

from lexalign.serve.gateway import ADMIN_PATHS, OPEN_PATHS, Gateway, bind_listener, build_app, normalize_path
from lexalign.serve.launch import MIN_KEY_CHARS, ServeConfig, ServeError, resolve_api_key

pytest_plugins = ["test_serve_support"]

REPO = Path(__file__).resolve().parent.parent
KEY = "client-key-" + "k" * 24
ENGINE_KEY = "engine-key-" + "e" * 24


# =========================================================================== a stand-in engine


async def _echo(request: Request) -> JSONResponse:
    """What the engine received: method, path, query, headers and body."""
    return JSONResponse({"method": request.method, "path": request.url.path, "query": request.url.query,
                         "authorization": request.headers.get("authorization"),
                         "connection": request.headers.get("connection"),
                         "x_custom": request.headers.get("x-custom"), "body": (await request.body()).decode()})


async def _events(request: Request) -> StreamingResponse:
    async def generate():
        for i in range(5):
            yield f"data: {json.dumps({'i': i, 't': time.monotonic()})}\n\n".encode()
            await asyncio.sleep(0.3)
        yield b"data: [DONE]\n\n"

    return StreamingResponse(generate(), media_type="text/event-stream")


def fake_engine() -> Starlette:
    methods = ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"]
    return Starlette(routes=[Route("/v1/stream", _events, methods=["POST"]),
                             Route("/{path:path}", _echo, methods=methods)])


class FrontClient(TestClient):
    """Paths as given: httpx would read a path like //health as a host name."""

    def request(self, method: str, url: str, **kwargs):  # type: ignore[override]
        return super().request(method, f"http://front{url}" if url.startswith("/") else url, **kwargs)


def front_client(**kwargs) -> TestClient:
    app = build_app(kwargs.pop("api_key", KEY), ENGINE_KEY, transport=httpx.ASGITransport(fake_engine()), **kwargs)
    return FrontClient(app, base_url="http://front")


PATHS = ["/v1/models", "/v1/chat/completions", "/invocations", "/tokenize", "/metrics", "/ping", "/version", "/load",
         "/openapi.json", "/docs", "/", "/no-such-route", "/health/x", "//v1/models", "/v1/../invocations"]


def test_front_needs_the_key_on_every_path_and_method_but_health() -> None:
    with front_client() as client:
        for path in PATHS:
            for method in ("GET", "POST", "PUT", "DELETE", "PATCH", "OPTIONS", "HEAD", "PROPFIND"):
                for headers in ({}, {"Authorization": "Bearer wrong-key-of-some-length"},
                                {"Authorization": f"Basic {KEY}"}, {"Authorization": KEY},
                                {"Authorization": f"Bearer {KEY}x"}):
                    response = client.request(method, path, headers=headers)
                    assert response.status_code == 401, (method, path, headers, response.status_code)
                    assert response.headers["www-authenticate"] == "Bearer"
                keyed = client.request(method, path, headers={"Authorization": f"Bearer {KEY}"})
                assert keyed.status_code == (405 if method == "PROPFIND" else 200), (method, path, keyed.text)
        for method in ("GET", "HEAD"):
            for path in ("/health", "/./health", "//health"):
                assert client.request(method, path).status_code == 200, (method, path)
        assert client.post("/health").status_code == 401  # open means GET/HEAD only
        body = client.get("/v1/models").json()
        assert body["error"]["type"] == "authentication_error" and "Bearer" in body["error"]["message"]


def test_front_relays_with_the_engine_key_and_never_the_clients() -> None:
    with front_client() as client:
        echoed = client.post("/v1/chat/completions?a=1&b=%20x", content=b'{"x": 1}',
                             headers={"Authorization": f"Bearer {KEY}", "X-Custom": "kept", "Connection": "close",
                                      "Content-Type": "application/json"}).json()
        assert echoed["authorization"] == f"Bearer {ENGINE_KEY}"
        assert echoed["method"] == "POST" and echoed["path"] == "/v1/chat/completions"
        assert echoed["query"] == "a=1&b=%20x" and echoed["body"] == '{"x": 1}'
        assert echoed["x_custom"] == "kept" and echoed["connection"] != "close"
        # the path the front checked is the path the engine routes
        assert client.get("/v1/x/../models", headers={"Authorization": f"Bearer {KEY}"}).json()["path"] == "/v1/models"
        health = client.get("/health").json()
        assert health["authorization"] == f"Bearer {ENGINE_KEY}"  # the engine's key on the open route too


def test_admin_routes_are_off_unless_configured() -> None:
    keyed = {"Authorization": f"Bearer {KEY}"}
    disguised = ["/scale_elastic_ep", "/scale_elastic_ep/", "/x/../scale_elastic_ep", "//scale_elastic_ep",
                 "/%73cale_elastic_ep", "/adapters", "/adapters/tiny-sft", "/v1/load_lora_adapter", "/sleep"]
    with front_client() as client:
        for path in sorted(ADMIN_PATHS) + disguised:
            assert client.post(path).status_code == 401, path  # the key first: no probing without it
            refused = client.post(path, headers=keyed)
            assert refused.status_code == 404 and "admin_routes" in refused.text, path
        assert client.delete("/adapters/tiny-sft", headers=keyed).status_code == 404
    with front_client(admin_routes=True) as client:
        assert client.post("/scale_elastic_ep", headers=keyed).json()["path"] == "/scale_elastic_ep"
        assert client.post("/scale_elastic_ep").status_code == 401  # on, but still keyed


def test_no_key_configured_serves_openly_but_keeps_admin_routes_off() -> None:
    with front_client(api_key=None) as client:
        assert client.post("/v1/chat/completions").status_code == 200
        assert client.post("/sleep").status_code == 404


def test_an_unreachable_engine_is_a_503_also_for_health(tmp_path: Path) -> None:
    app = build_app(KEY, ENGINE_KEY, engine_socket=tmp_path / "missing.sock")
    with TestClient(app) as client:
        assert client.get("/health").status_code == 503
        assert client.get("/v1/models").status_code == 401
        down = client.get("/v1/models", headers={"Authorization": f"Bearer {KEY}"})
        assert down.status_code == 503 and "not reachable" in down.json()["error"]["message"]


class _ClosingOnce(httpx.AsyncBaseTransport):
    """The engine closing a kept-alive connection as a request goes out on it: the first ``fails`` sends get no
    answer (httpx.RemoteProtocolError), the rest reach the stand-in engine."""

    def __init__(self, fails: int) -> None:
        self.fails, self.sends = fails, 0
        self.engine = httpx.ASGITransport(fake_engine())

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        self.sends += 1
        if self.sends <= self.fails:
            raise httpx.RemoteProtocolError("Server disconnected without sending a response.", request=request)
        return await self.engine.handle_async_request(request)


def test_a_request_the_engine_dropped_unanswered_is_sent_once_more() -> None:
    keyed = {"Authorization": f"Bearer {KEY}"}
    once = _ClosingOnce(fails=1)
    with FrontClient(build_app(KEY, ENGINE_KEY, transport=once), base_url="http://front") as client:
        answer = client.post("/tokenize", content=b'{"prompt": "x"}', headers=keyed)
        assert answer.status_code == 200 and answer.json()["body"] == '{"prompt": "x"}'
    assert once.sends == 2
    always = _ClosingOnce(fails=10)
    with FrontClient(build_app(KEY, ENGINE_KEY, transport=always), base_url="http://front") as client:
        assert client.post("/tokenize", headers=keyed).status_code == 503
    assert always.sends == 2  # one retry, not a loop


def test_path_normalization() -> None:
    cases = {"/": "/", "/health": "/health", "//health": "/health", "/./health": "/health", "/a//b/": "/a/b/",
             "/x/../sleep": "/sleep", "/..": "/", "/health/..": "/", "/a/b/..": "/a/", "/v1/models/": "/v1/models/"}
    assert {k: normalize_path(k) for k in cases} == cases
    assert OPEN_PATHS == {"/health"}


def test_front_streams_events_as_the_engine_writes_them(tmp_path: Path) -> None:
    """A real uvicorn front before a stand-in engine on a Unix socket: the first server-sent event reaches the
    client long before the engine has written the last (nothing is buffered), and a client that hangs up is
    let go."""
    import uvicorn

    socket_path = tmp_path / "engine.sock"
    engine = uvicorn.Server(uvicorn.Config(fake_engine(), uds=str(socket_path), log_config=None, log_level="warning"))
    engine_thread = threading.Thread(target=engine.run, daemon=True)
    engine_thread.start()
    deadline = time.monotonic() + 20
    while not engine.started and time.monotonic() < deadline:
        time.sleep(0.02)
    front = Gateway(build_app(KEY, ENGINE_KEY, engine_socket=socket_path), bind_listener("127.0.0.1", 0))
    front.start()
    try:
        host, port = front.address
        url = f"http://{host}:{port}/v1/stream"
        arrivals: list[tuple[float, float]] = []
        with httpx.stream("POST", url, headers={"Authorization": f"Bearer {KEY}"}, timeout=30) as response:
            assert response.status_code == 200 and response.headers["content-type"].startswith("text/event-stream")
            for line in response.iter_lines():
                if line.startswith("data: {"):
                    arrivals.append((time.monotonic(), json.loads(line[6:])["t"]))
        assert len(arrivals) == 5
        first_seen, last_written = arrivals[0][0], arrivals[-1][1]
        assert first_seen < last_written - 0.5, "the first event waited for the whole stream"
        assert httpx.post(url, timeout=10).status_code == 401
        with httpx.stream("POST", url, headers={"Authorization": f"Bearer {KEY}"}, timeout=30) as response:
            next(response.iter_lines())  # hang up after the first event
        assert httpx.get(f"http://{host}:{port}/health", timeout=10).status_code == 200  # still serving
    finally:
        front.stop(timeout=5)
        engine.should_exit = True
        engine_thread.join(10)
    assert not front.alive


# =========================================================================== keys and the engine command


def test_weak_keys_are_refused_unless_allowed(monkeypatch) -> None:
    short = "k" * (MIN_KEY_CHARS - 1)
    monkeypatch.setenv("LEXALIGN_API_KEY", short)
    with pytest.raises(ServeError, match=r"\$LEXALIGN_API_KEY is 15 characters long, under 16.*allow_weak_api_key: true"):
        resolve_api_key(ServeConfig())
    assert resolve_api_key(ServeConfig(allow_weak_api_key=True)) == short
    with pytest.raises(ServeError, match="the api_key given is 5 characters"):
        resolve_api_key(ServeConfig(), api_key="short")
    monkeypatch.setenv("LEXALIGN_API_KEY", "k" * MIN_KEY_CHARS)
    assert resolve_api_key(ServeConfig()) == "k" * MIN_KEY_CHARS


def test_cli_refuses_a_weak_key_in_one_line(sft_run: Path) -> None:
    env = dict(os.environ, LEXALIGN_API_KEY="secret123")
    result = subprocess.run([sys.executable, "-m", "lexalign.cli", "serve", "--run", str(sft_run)], cwd=REPO,
                            capture_output=True, text=True, timeout=120, env=env)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    lines = [line for line in result.stderr.splitlines() if "allow_weak_api_key" in line]
    assert len(lines) == 1 and "9 characters" in lines[0] and "secret123" not in result.stderr


# =========================================================================== the real server


def engine_app_routes(engine, plan) -> set[tuple[str, str]]:
    """The engine app's own route table (docs routes and routes left out of the schema too), built in the
    engine's Python from the arguments and environment the server was started with."""
    probe = (
        "import json, sys, warnings\n"
        "warnings.simplefilter('ignore')\n"
        "from vllm.entrypoints.launchers.app import build_app\n"
        "from vllm.entrypoints.launchers.cli_args import make_arg_parser\n"
        "from vllm.utils.argparse_utils import FlexibleArgumentParser\n"
        "args = make_arg_parser(FlexibleArgumentParser()).parse_args(sys.argv[1:])\n"
        "app = build_app(args, supported_tasks=('generate',))\n"
        "print(json.dumps([[r.path, sorted(getattr(r, 'methods', None) or ['GET'])] for r in app.routes]))\n")
    env = dict(os.environ, **plan.env)
    result = subprocess.run([engine.python, "-c", probe, *plan.command[3:]], capture_output=True, text=True,
                            timeout=300, env=env)
    assert result.returncode == 0, f"cannot build the engine's route table:\n{result.stderr[-3000:]}"
    table = json.loads(result.stdout.strip().splitlines()[-1])
    return {(path, method) for path, methods in table for method in methods}


def concrete(path: str) -> str:
    return re.sub(r"\{[^}]+\}", "x", path)


@pytest.mark.slow
def test_every_route_of_the_real_server_needs_the_key(served, engine, capsys) -> None:
    """Every route and method of the running server: 401 without a key, 401 with a wrong key, not 401 with the
    key; the only exception is GET /health. Admin routes answer 404 with the key (off by default)."""
    root = served.root_url
    keyed = {"Authorization": f"Bearer {served.api_key}"}
    schema = httpx.get(f"{root}/openapi.json", headers=keyed, timeout=30)
    assert schema.status_code == 200
    routes = {(path, method.upper()) for path, operations in schema.json()["paths"].items() for method in operations}
    from_schema = len(routes)
    routes |= engine_app_routes(engine, served.plan)
    routes |= {(path, "POST") for path in ADMIN_PATHS} | {("/adapters", "POST"), ("/adapters/x", "DELETE")}
    routes |= {("/no-such-route", "GET"), ("/health", "POST")}
    assert {"/invocations", "/tokenize", "/metrics", "/scale_elastic_ep", "/ping", "/version", "/load",
            "/v1/chat/completions", "/docs"} <= {path for path, _ in routes}
    rows = []
    with httpx.Client(base_url=root, timeout=60) as client:
        for path, method in sorted(routes):
            url = concrete(path)
            body = {"json": {}} if method in ("POST", "PUT", "PATCH") else {}
            codes = [client.request(method, url, headers=headers, **body).status_code
                     for headers in ({}, {"Authorization": "Bearer not-the-key-0123456789"}, keyed)]
            rows.append((method, path, codes))
    with capsys.disabled():
        print(f"\n{len(rows)} routes checked ({from_schema} from /openapi.json, the rest from the engine app's route "
              "table, the admin routes and an unknown path); status without a key / wrong key / the key:")
        for method, path, codes in rows:
            print(f"  {method:7} {path:45} {codes[0]} / {codes[1]} / {codes[2]}")
    wrong = []
    for method, path, (none, bad, good) in rows:
        if path in OPEN_PATHS and method in ("GET", "HEAD"):
            ok = none == bad == good == 200
        elif path in ADMIN_PATHS or path.startswith("/adapters"):
            ok = none == bad == 401 and good == 404
        else:
            ok = none == bad == 401 and good != 401
        if not ok:
            wrong.append((method, path, none, bad, good))
    assert not wrong, wrong


@pytest.mark.slow
def test_generation_routes_outside_v1_need_the_key_and_work_with_it(served) -> None:
    """The routes vLLM's own --api-key leaves open: /invocations (chat generation), /tokenize, /metrics."""
    root = served.root_url
    keyed = {"Authorization": f"Bearer {served.api_key}"}
    chat = {"model": "tiny-sft", "messages": [{"role": "user", "content": "Which law governs?"}], "max_tokens": 4}
    assert httpx.post(f"{root}/invocations", json=chat, timeout=60).status_code == 401
    answer = httpx.post(f"{root}/invocations", json=chat, headers=keyed, timeout=120)
    assert answer.status_code == 200 and answer.json()["object"] == "chat.completion"
    assert httpx.post(f"{root}/tokenize", json={"model": "tiny-sft", "prompt": "x"}, timeout=30).status_code == 401
    assert httpx.post(f"{root}/tokenize", json={"model": "tiny-sft", "prompt": "x"}, headers=keyed,
                      timeout=30).json()["count"] >= 1
    assert httpx.get(f"{root}/metrics", timeout=30).status_code == 401
    assert "vllm:" in httpx.get(f"{root}/metrics", headers=keyed, timeout=30).text


@pytest.mark.slow
def test_the_engine_listens_only_on_a_private_unix_socket(served) -> None:
    socket_path = served.plan.engine_socket
    assert stat.S_ISSOCK(socket_path.stat().st_mode)
    assert stat.S_IMODE(socket_path.parent.stat().st_mode) == 0o700
    cmdline = Path(f"/proc/{served.pid}/cmdline").read_bytes().split(b"\0")
    assert b"--uds" in cmdline and b"--port" not in cmdline and b"--host" not in cmdline
    environ = Path(f"/proc/{served.pid}/environ").read_bytes().split(b"\0")
    assert f"VLLM_API_KEY={served.api_key}".encode() not in environ  # the engine has its own key
    assert b"VLLM_SERVER_DEV_MODE=0" in environ and b"VLLM_ALLOW_RUNTIME_LORA_UPDATING=0" in environ
