"""The authenticating front of ``lexalign serve``: every route of the served API needs the key.

Why a front. vLLM's ``--api-key`` only guards the ``/v1``, ``/v2`` and ``/inference`` path prefixes: with it set,
``POST /invocations`` (the same generation as ``/v1/chat/completions``), ``/tokenize``, ``/metrics``,
``/scale_elastic_ep``, ``/ping``, ``/version``, ``/load`` and the docs still answer anyone. So the engine never
listens on a network port: ``lexalign serve`` starts it on a Unix socket in a private directory (mode 0700: only
this user can connect) with its own random key, and this front, listening on the configured host and port, is
the only way in.

What the front does, for every path and method:
  * ``GET /health`` (and ``HEAD``) is the one open route, for load balancers; it answers 503 while the engine
    loads or after it stopped;
  * anything else without ``Authorization: Bearer <key>``, or with a wrong key, gets 401 (compared in constant
    time), whether the engine has such a route or not, so the route table is not probed from outside;
  * admin routes (elastic scaling, runtime adapter loading, sleep/wake, cache resets, profiling, weight updates;
    ``ADMIN_PATHS``) get 404 unless ``admin_routes: true`` (the engine is also started without them);
  * the rest is relayed to the engine with the engine's key in place of the client's (the client's key never
    reaches the engine) and the answer streams back as the engine writes it, so server-sent events (``stream=True``)
    arrive token by token; a client that hangs up closes the engine connection, and vLLM aborts the request.

It is Starlette + httpx served by uvicorn in a thread of the process that started the engine (it ends with it).
"""

from __future__ import annotations

import hmac
import logging
import socket
import threading
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any
from urllib.parse import quote

import anyio
import httpx
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from starlette.types import Receive, Scope, Send

logger = logging.getLogger(__name__)

OPEN_PATHS = frozenset({"/health"})   # answered without a key (GET/HEAD only)
OPEN_METHODS = frozenset({"GET", "HEAD"})
# Routes that change the running server rather than use the model. vLLM 0.32 registers the elastic-scaling pair
# always; the others with VLLM_SERVER_DEV_MODE (dev and RL routes), VLLM_ALLOW_RUNTIME_LORA_UPDATING (adapter
# loading) or a profiler config. The front refuses them too, in case an engine enables them by other means.
ADMIN_PATHS = frozenset({
    "/scale_elastic_ep", "/is_scaling_elastic_ep",
    "/v1/load_lora_adapter", "/v1/unload_lora_adapter",
    "/start_profile", "/stop_profile",
    "/reset_prefix_cache", "/reset_mm_cache", "/reset_encoder_cache", "/collective_rpc", "/server_info",
    "/sleep", "/wake_up", "/is_sleeping", "/release_kv_cache_memory",
    "/pause", "/resume", "/abort_requests", "/is_paused",
    "/init_weight_transfer_engine", "/shutdown_weight_transfer_engine", "/start_weight_update",
    "/start_draft_weight_update", "/update_weights", "/finish_weight_update", "/update_weight_version",
    "/weight_info", "/weight_checker", "/get_world_size",
})
ADMIN_PREFIXES = ("/adapters/",)      # SageMaker-style adapter loading: POST /adapters, DELETE /adapters/{name}
METHODS = ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"]
# Per-connection headers (RFC 9110 section 7.6.1) are not relayed; content-length is recomputed for the body sent.
# vLLM's server closes a kept-alive connection after 5 idle seconds (VLLM_HTTP_TIMEOUT_KEEP_ALIVE), httpx's pool kept
# one for 5 s too: a request sent on a connection the engine was closing failed with "Server disconnected without
# sending a response", and an evaluation under load stopped on a 503 from /tokenize. Idle connections are dropped
# here first.
KEEPALIVE_EXPIRY_S = 2.0
_HOP_BY_HOP = frozenset({"connection", "keep-alive", "proxy-authenticate", "proxy-authorization", "te", "trailer",
                         "transfer-encoding", "upgrade", "proxy-connection"})
_DROP_REQUEST = _HOP_BY_HOP | {"authorization", "content-length"}
_DROP_RESPONSE = _HOP_BY_HOP | {"server", "date"}  # uvicorn writes its own date


def normalize_path(path: str) -> str:
    """The path the engine will route: dot segments resolved and repeated slashes collapsed (RFC 3986 5.2.4),
    trailing slash kept. The front decides on this path and relays this path, so what it checked is what runs."""
    out: list[str] = []
    segments = path.split("/")
    for segment in segments[1:-1]:
        if segment in ("", "."):
            continue
        if segment == "..":
            if out:
                out.pop()
            continue
        out.append(segment)
    last = segments[-1] if len(segments) > 1 else ""
    if last == "..":
        if out:
            out.pop()
        last = ""
    elif last == ".":
        last = ""
    return "/" + "/".join(out + [last]) if out else "/" + last


def is_admin_path(path: str) -> bool:
    bare = path.rstrip("/") or "/"
    return bare in ADMIN_PATHS or bare == "/adapters" or bare.startswith(ADMIN_PREFIXES)


def _error(status: int, message: str, kind: str, headers: dict[str, str] | None = None) -> JSONResponse:
    # The OpenAI error shape, so the official client raises its usual exceptions (AuthenticationError, ...).
    return JSONResponse({"error": {"message": message, "type": kind, "code": status}}, status_code=status,
                        headers=headers)


class _Relay(Response):
    """The engine's answer, streamed as it arrives; stops (and closes the engine connection) if the client leaves."""

    def __init__(self, upstream: httpx.Response) -> None:
        self.upstream = upstream
        self.status_code = upstream.status_code
        self.background = None
        self.raw_headers = [(k.lower(), v) for k, v in upstream.headers.raw if k.lower().decode() not in _DROP_RESPONSE]

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        async def relay(cancel: anyio.CancelScope) -> None:
            await send({"type": "http.response.start", "status": self.status_code, "headers": self.raw_headers})
            if scope["method"] != "HEAD":
                async for chunk in self.upstream.aiter_raw():
                    await send({"type": "http.response.body", "body": chunk, "more_body": True})
            await send({"type": "http.response.body", "body": b"", "more_body": False})
            cancel.cancel()

        async def watch_disconnect(cancel: anyio.CancelScope) -> None:
            while (await receive())["type"] != "http.disconnect":
                pass
            cancel.cancel()

        try:
            async with anyio.create_task_group() as group:
                group.start_soon(relay, group.cancel_scope)
                group.start_soon(watch_disconnect, group.cancel_scope)
        finally:
            await self.upstream.aclose()


class _Front:
    """Every request: the key check, the admin-route check, then the relay (see the module docstring). An ASGI
    app rather than a Starlette endpoint, so that every method, even one no route knows, meets the key check."""

    def __init__(self, api_key: str | None, engine_key: str | None, admin_routes: bool) -> None:
        self.expected = api_key.encode() if api_key else None
        self.engine_key = engine_key
        self.admin_routes = admin_routes
        self.client: httpx.AsyncClient | None = None   # set by the app's lifespan, inside the event loop

    def authorized(self, request: Request) -> bool:
        if self.expected is None:
            return True
        scheme, _, token = request.headers.get("authorization", "").partition(" ")
        return scheme.lower() == "bearer" and hmac.compare_digest(token.strip().encode(), self.expected)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":  # websockets are not relayed (vLLM serves none for text models)
            await send({"type": "websocket.close", "code": 1008})
            return
        request = Request(scope, receive)
        response = await self.respond(request)
        await response(scope, receive, send)

    async def respond(self, request: Request) -> Response:
        path = normalize_path(request.url.path)
        if not (path in OPEN_PATHS and request.method in OPEN_METHODS) and not self.authorized(request):
            return _error(401, "missing or wrong API key: send the header Authorization: Bearer <key>",
                          "authentication_error", {"WWW-Authenticate": "Bearer"})
        if not self.admin_routes and is_admin_path(path):
            return _error(404, f"{path} is an admin route and is off on this server (admin_routes: false)",
                          "not_found_error")
        headers = [(k, v) for k, v in request.headers.raw if k.decode("latin-1").lower() not in _DROP_REQUEST]
        if self.engine_key:
            headers.append((b"authorization", f"Bearer {self.engine_key}".encode()))
        body = await request.body()
        if self.client is None:  # the lifespan has not started yet or has ended
            return _error(503, "the API front is not running", "service_unavailable")
        # The checked path, quoted again: what the engine routes is exactly what was checked.
        query = request.scope.get("query_string", b"").decode("latin-1")
        url = str(self.client.base_url).rstrip("/") + quote(path, safe="/:@!$&'()*+,;=-._~") + (f"?{query}" if query else "")
        for attempt in (1, 2):
            upstream_request = self.client.build_request(request.method, url, headers=headers, content=body)
            try:
                upstream = await self.client.send(upstream_request, stream=True)
            except (httpx.RemoteProtocolError, httpx.ConnectError) as err:
                # No answer came: the engine closed a kept-alive connection as the request went out on it (see
                # KEEPALIVE_EXPIRY_S), or its socket is not accepting. Once more on a fresh connection. A refused
                # connection is the normal answer while the engine loads (health polls): logged, not warned.
                logger.log(logging.DEBUG if isinstance(err, httpx.ConnectError) else logging.WARNING,
                           "engine connection failed for %s %s (attempt %d): %s: %s", request.method, path, attempt,
                           type(err).__name__, err)
            except httpx.TransportError as err:
                logger.warning("engine unreachable for %s %s: %s: %s", request.method, path, type(err).__name__, err)
                break
            else:
                return _Relay(upstream)
        return _error(503, "the model engine is not reachable (it is starting or has stopped)", "service_unavailable")


def build_app(api_key: str | None, engine_key: str | None, *, admin_routes: bool = False,
              engine_socket: str | Path | None = None, engine_url: str = "http://engine",
              transport: httpx.AsyncBaseTransport | None = None) -> Starlette:
    """The front as an ASGI app. ``api_key``: what clients must send (None: no key, ``allow_no_key``);
    ``engine_key``: what the engine requires; the engine is reached over ``engine_socket`` (a Unix socket) or
    ``transport`` (tests)."""
    front = _Front(api_key, engine_key, admin_routes)

    @asynccontextmanager
    async def lifespan(_app: Starlette) -> AsyncIterator[None]:
        # No read timeout: a non-streamed answer on a CPU can take minutes; the client's own timeout governs,
        # and a client that hangs up ends the relay.
        link = transport or httpx.AsyncHTTPTransport(uds=str(engine_socket) if engine_socket else None)
        limits = httpx.Limits(max_connections=1024, max_keepalive_connections=64, keepalive_expiry=KEEPALIVE_EXPIRY_S)
        async with httpx.AsyncClient(transport=link, base_url=engine_url, timeout=httpx.Timeout(None, connect=10.0),
                                     limits=limits) as client:
            front.client = client
            yield
            front.client = None

    return Starlette(routes=[Route("/{path:path}", front)], lifespan=lifespan)


def bind_listener(host: str, port: int) -> socket.socket:
    """The front's listening socket, bound now so that a port in use is a clear error before the engine loads.
    Raises OSError."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
        sock.listen(2048)
        sock.set_inheritable(False)
    except OSError:
        sock.close()
        raise
    return sock


class Gateway:
    """The front served by uvicorn in a daemon thread on an already bound socket."""

    def __init__(self, app: Callable[..., Any], listener: socket.socket, graceful_s: float = 5.0) -> None:
        # log_config=None: uvicorn must not reconfigure the host process's logging; warnings only (no access log:
        # the engine's log has every request).
        config = uvicorn.Config(app, log_config=None, log_level="warning", access_log=False, lifespan="on",
                                server_header=False, timeout_graceful_shutdown=graceful_s, timeout_keep_alive=30)
        self._server = uvicorn.Server(config)
        self._listener = listener
        self._thread = threading.Thread(target=self._server.run, kwargs={"sockets": [listener]},
                                        name="lexalign-api-front", daemon=True)

    @property
    def address(self) -> tuple[str, int]:
        host, port = self._listener.getsockname()[:2]
        return host, port

    @property
    def alive(self) -> bool:
        return self._thread.is_alive()

    def start(self, timeout: float = 30.0) -> None:
        """Returns once the front accepts connections; RuntimeError if it did not start."""
        self._thread.start()
        deadline = time.monotonic() + timeout
        while not self._server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                self.stop(timeout=1)
                raise RuntimeError(f"the API front on {self.address} did not start")
            time.sleep(0.02)

    def begin_stop(self) -> None:
        """Stop accepting connections; requests in flight may finish (up to the graceful timeout)."""
        self._server.should_exit = True

    def stop(self, timeout: float = 10.0) -> None:
        self.begin_stop()
        if self._thread.is_alive():
            self._thread.join(timeout)
        if self._thread.is_alive():
            self._server.force_exit = True
            self._thread.join(5)
        try:
            self._listener.close()
        except OSError:
            pass
