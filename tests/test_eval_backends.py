"""The OpenAI-compatible backend against a small fake vLLM server (in-process HTTP, no model):
model choice, API key, context fitting, concurrency, prompt_logprobs parsing, and ``--model URL`` end to end."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Iterator

import pytest

from lexalign.config import load_config
from lexalign.evaluation.backends import EvalError, OpenAIBackend, choose_endpoint_models, list_models
from lexalign.runs import read_manifest

KEY = "test-key"
MAX_MODEL_LEN = 2000
EVAL_YAML = Path(__file__).resolve().parent.parent / "configs" / "eval.yaml"
SHIPPED = Path(__file__).resolve().parent.parent / "data" / "shipped"


def fake_logprob(token: int) -> float:
    return -0.1 * (token % 7)


class FakeVLLM(BaseHTTPRequestHandler):
    """One token per character; chat prompts add 10 tokens per message. Answers depend on the model name."""

    requests: list[dict[str, Any]] = []

    def log_message(self, *args: Any) -> None:
        pass

    def _send(self, code: int, payload: dict[str, Any]) -> None:
        body = json.dumps(payload).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def _authorized(self) -> bool:
        if self.headers.get("Authorization") != f"Bearer {KEY}":
            self._send(401, {"error": {"message": "Unauthorized", "type": "invalid_request_error"}})
            return False
        return True

    def do_GET(self) -> None:  # noqa: N802 - http.server's naming
        if not self._authorized():
            return
        if self.path == "/v1/models":
            self._send(200, {"object": "list", "data": [{"id": "base", "object": "model"},
                                                        {"id": "tuned", "object": "model", "parent": "base"}]})
        else:
            self._send(404, {"error": "not found"})

    def do_POST(self) -> None:  # noqa: N802
        if not self._authorized():
            return
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        FakeVLLM.requests.append({"path": self.path, **body})
        if self.path == "/tokenize":
            if "messages" in body:
                tokens = [ord(c) for m in body["messages"] for c in m["content"]] + [1] * 10 * len(body["messages"])
            else:
                tokens = [ord(c) for c in body["prompt"]]
            self._send(200, {"count": len(tokens), "max_model_len": MAX_MODEL_LEN, "tokens": tokens})
        elif self.path == "/v1/chat/completions":
            text = "Not present." if body["model"] == "tuned" else "Yes"
            self._send(200, {"id": "c", "object": "chat.completion", "created": 0, "model": body["model"],
                             "choices": [{"index": 0, "finish_reason": "stop",
                                          "message": {"role": "assistant", "content": text}}],
                             "usage": {"prompt_tokens": 5, "completion_tokens": 3, "total_tokens": 8}})
        elif self.path == "/v1/completions":
            ids = body["prompt"]
            logprobs = [None] + [{str(t): {"logprob": fake_logprob(t), "rank": 1}} for t in ids[1:]]
            self._send(200, {"id": "c", "object": "text_completion", "created": 0, "model": body["model"],
                             "choices": [{"index": 0, "text": "x", "finish_reason": "length",
                                          "prompt_logprobs": logprobs}],
                             "usage": {"prompt_tokens": len(ids), "completion_tokens": 1, "total_tokens": len(ids) + 1}})
        else:
            self._send(404, {"error": "not found"})


@pytest.fixture()
def fake_server() -> Iterator[str]:
    FakeVLLM.requests = []
    server = ThreadingHTTPServer(("127.0.0.1", 0), FakeVLLM)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/v1"
    finally:
        server.shutdown()
        server.server_close()


def test_model_choice_and_key(fake_server: str) -> None:
    models = list_models(fake_server, KEY)
    assert choose_endpoint_models(models, None, fake_server) == ("tuned", "base")   # the adapter, and its base
    assert choose_endpoint_models(models, "base", fake_server) == ("base", None)
    with pytest.raises(EvalError, match="not one of them"):
        choose_endpoint_models(models, "other", fake_server)
    with pytest.raises(EvalError, match="401"):
        list_models(fake_server, "wrong-key")
    with pytest.raises(EvalError, match="cannot reach"):
        list_models("http://127.0.0.1:9/v1", KEY)


def test_generate_fits_the_context_and_skips_what_cannot_fit(fake_server: str) -> None:
    backend = OpenAIBackend(fake_server, KEY, "tuned", base_model="base", concurrency=4)
    short = [{"role": "user", "content": "x" * 100}]          # 110 prompt tokens -> room 1890
    long = [{"role": "user", "content": "x" * 1995}]          # 2005 prompt tokens > 2000
    results = backend.generate([short, long, short], max_new_tokens=5000)
    assert [r.text for r in results] == ["Not present.", "", "Not present."]
    assert results[1].skipped and "does not fit" in results[1].skipped and results[1].finish_reason is None
    assert results[0].finish_reason == "stop" and results[0].completion_tokens == 3
    sent = [r["max_tokens"] for r in FakeVLLM.requests if r["path"] == "/v1/chat/completions"]
    assert sent == [1890, 1890]                                 # min(5000, 2000 - 110)
    chat = [r for r in FakeVLLM.requests if r["path"] == "/v1/chat/completions"][0]
    assert chat["temperature"] == 0.0                           # greedy
    assert [r.text for r in backend.generate([short], 8, model="base")] == ["Yes"]


def test_loglikelihood_sums_the_response_tokens(fake_server: str) -> None:
    backend = OpenAIBackend(fake_server, KEY, "tuned", concurrency=4)
    prompt = [{"role": "user", "content": "ab"}]
    [result] = backend.loglikelihood([(prompt, "hello")])
    assert result.tokens == 5 and not result.truncated
    assert result.total == pytest.approx(sum(fake_logprob(ord(c)) for c in "hello"))
    assert result.mean == pytest.approx(result.total / 5)
    completion = [r for r in FakeVLLM.requests if r["path"] == "/v1/completions"][0]
    assert completion["prompt"] == [ord("a"), ord("b")] + [1] * 10 + [ord(c) for c in "hello"]
    assert completion["prompt_logprobs"] == 0
    # too long for the context: the response is cut to fit (prompt 12 tokens + at most 1987)
    [cut] = backend.loglikelihood([(prompt, "z" * 3000)])
    assert cut.truncated and cut.tokens == MAX_MODEL_LEN - 1 - 12


def test_eval_against_an_endpoint_url(fake_server: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """``--model URL``: no server started, key from the environment, results written, tuned vs base win rate
    not possible without a reward model (reported as skipped)."""
    from lexalign.evaluation import evaluate
    from lexalign.evaluation.run import EvalConfig

    monkeypatch.setenv("LEXALIGN_API_KEY", KEY)
    config = load_config(EvalConfig, EVAL_YAML, [
        f"model={fake_server}", f"output_dir={tmp_path}", "data.max_per_task=4",
        "tasks=[extract, presence, ranking, winrate, behaviour]"])
    results = evaluate(config)
    run_dir = Path(results["run_dir"])
    assert run_dir.parent.parent.name == "endpoint" and run_dir.name.startswith("127.0.0.1-")
    metrics = results["metrics"]
    assert metrics["extract/not_present_rate"] == 1.0            # "tuned" always answers Not present.
    assert metrics["extract/presence_recall"] == 0.0
    assert metrics["presence/unparsed_rate"] == 1.0
    assert metrics["behaviour/stop_rate"] == 1.0 and metrics["behaviour/length_mean"] == 3.0
    assert isinstance(metrics["ranking/policy_ndcg@5"], float)
    assert metrics["ranking/reward_ndcg@5"] is None and metrics["winrate/win_rate"] is None
    assert "reward_model" in results["tasks"]["winrate"]["skipped"]
    assert results["model"]["model"] == "tuned" and results["model"]["endpoint"] == fake_server
    manifest = read_manifest(run_dir)
    assert "model" not in manifest["inputs"] and manifest["outputs"]["evaluated"]["model"]["model"] == "tuned"
    assert KEY not in (run_dir / "results.json").read_text() and KEY not in (run_dir / "manifest.json").read_text()
