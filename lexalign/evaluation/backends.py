"""Where answers and log-likelihoods come from: vLLM's OpenAI-compatible server, or transformers in-process.

``open_policy(spec, config)`` gives a backend for what ``--model`` names:
  * ``http(s)://HOST:PORT/v1``: a running OpenAI-compatible endpoint (key from ``$<api_key_env>``);
  * a run directory / merged export / model folder: with ``backend: vllm`` (default) a private vLLM server is
    started for it (``lexalign.serve.launch.start_server``, random API key) and stopped afterwards; with
    ``backend: transformers`` the model (base + LoRA adapter, or a full model) is loaded here.

``shared_server(specs, config)`` starts ONE vLLM server for several local models, so that the stages of a run
chain are evaluated with one engine start; ``open_policy(spec, config, shared=...)`` then talks to it:
  * adapters on one base model (and the base): each under its own name (``--lora-modules``);
  * full models of one network (merged exports of the stages, and the base): served one after the other, each
    model's weights reloaded in place into the running engine (vLLM's ``reload_weights``, then its prefix
    cache reset) when its turn comes. On a CPU this is the fast way: a merged model decodes 4-5x faster there
    than an adapter (vLLM's CPU LoRA path gathers per adapted module at every step), and a reload takes
    seconds where an engine start takes about a minute.

Every backend decodes greedily (temperature 0) and answers ``generate`` (chat messages -> text, finish reason,
token counts) and ``loglikelihood`` (sum of the log-probabilities of a response's tokens after the
chat-formatted prompt). The vLLM backend sends requests concurrently with the official ``openai`` client and
uses vLLM's ``/tokenize`` route to fit ``max_tokens`` into the context and ``prompt_logprobs`` for scoring.
"""

from __future__ import annotations

import contextlib
import json
import logging
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence, TypeVar

from lexalign.errors import LexalignError

logger = logging.getLogger(__name__)

Messages = list[dict[str, str]]
T = TypeVar("T")
R = TypeVar("R")


class EvalError(LexalignError):
    """The evaluation cannot run as configured (endpoint unreachable, model missing, ...)."""


@dataclass
class Generation:
    text: str
    finish_reason: str | None      # "stop" (end-of-turn token), "length" (max tokens), None when skipped
    prompt_tokens: int | None
    completion_tokens: int
    skipped: str | None = None     # why there is no answer (e.g. the prompt does not fit the context)


@dataclass
class LogLikelihood:
    total: float                   # sum of log p(token) over the response tokens
    tokens: int                    # response tokens scored
    truncated: bool = False        # the response was cut to fit the context

    @property
    def mean(self) -> float:
        return self.total / self.tokens if self.tokens else float("-inf")


def is_url(spec: str) -> bool:
    return spec.startswith(("http://", "https://"))


def post_json(url: str, api_key: str | None, payload: dict[str, Any], timeout: float = 120) -> Any:
    headers = {"Content-Type": "application/json"}
    if api_key:
        headers["Authorization"] = f"Bearer {api_key}"
    request = urllib.request.Request(url, data=json.dumps(payload).encode(), headers=headers)
    with urllib.request.urlopen(request, timeout=timeout) as response:  # noqa: S310 - the configured endpoint
        body = response.read()
    return json.loads(body) if body else None


def parallel_map(fn: Callable[[T], R], items: Sequence[T], workers: int, desc: str) -> list[R]:
    """``fn`` over ``items`` with a thread pool, results in input order, with a progress bar."""
    from tqdm.auto import tqdm

    if not items:
        return []
    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool, \
            tqdm(total=len(items), desc=desc, leave=False, disable=None) as bar:
        futures = [pool.submit(fn, item) for item in items]
        results = []
        for future in futures:
            results.append(future.result())
            bar.update(1)
    return results


# =========================================================================== OpenAI-compatible (vLLM)


class OpenAIBackend:
    """Greedy chat completions from an OpenAI-compatible server (vLLM: also /tokenize and prompt_logprobs)."""

    kind = "vllm"

    def __init__(self, base_url: str, api_key: str | None, model: str, *, base_model: str | None = None,
                 concurrency: int = 8, timeout_s: float = 300.0, source: str = "", lora_engine: bool = False) -> None:
        from openai import OpenAI

        self.base_url = base_url.rstrip("/")
        self.root_url = self.base_url.removesuffix("/v1")
        self.api_key = api_key
        self.model = model
        self.base_model = base_model
        # the server has LoRA adapters loaded (this model may be the base beside them): see ``loglikelihood``
        self.lora_engine = lora_engine or base_model is not None
        self.concurrency = concurrency
        self.source = source or base_url
        self.client = OpenAI(base_url=self.base_url, api_key=api_key or "no-key", timeout=timeout_s, max_retries=2)
        self._tokenize_ok: bool | None = None
        self.max_model_len: int | None = None

    # ------------------------------------------------------------------ plumbing

    def _post(self, path: str, payload: dict[str, Any]) -> dict[str, Any]:
        return post_json(self.root_url + path, self.api_key, payload)

    def tokenize_chat(self, messages: Messages, model: str) -> list[int] | None:
        """Token ids of the chat-formatted prompt (with the generation prompt), or None without /tokenize."""
        if self._tokenize_ok is False:
            return None
        try:
            result = self._post("/tokenize", {"model": model, "messages": messages, "add_generation_prompt": True})
        except urllib.error.HTTPError as err:
            if err.code in (404, 405):
                if self._tokenize_ok is None:
                    logger.warning("%s has no /tokenize route (not vLLM?): prompts are not fitted to the context and "
                                   "policy log-likelihoods are unavailable", self.root_url)
                self._tokenize_ok = False
                return None
            raise EvalError(f"{self.root_url}/tokenize answered {err.code}: {err.read()[:300]!r}") from None
        except (urllib.error.URLError, OSError) as err:
            raise EvalError(f"cannot reach {self.root_url}: {err}") from None
        self._tokenize_ok = True
        self.max_model_len = result.get("max_model_len") or self.max_model_len
        return list(result["tokens"])

    def _tokenize_text(self, text: str, model: str) -> list[int]:
        return list(self._post("/tokenize", {"model": model, "prompt": text, "add_special_tokens": False})["tokens"])

    # ------------------------------------------------------------------ generation

    def _api_error(self, err: Exception, model: str) -> EvalError:
        import openai

        if isinstance(err, openai.APIConnectionError):
            return EvalError(f"cannot reach {self.base_url}: {err}")
        if isinstance(err, openai.AuthenticationError):
            return EvalError(f"{self.base_url} refused the API key (401); set the right key in the environment "
                             "variable named by api_key_env")
        if isinstance(err, openai.NotFoundError):
            return EvalError(f"{self.base_url} does not serve a model named {model!r}")
        return EvalError(f"{self.base_url} failed: {err} (see the server's log)")

    def _generate_one(self, messages: Messages, max_new_tokens: int, model: str) -> Generation:
        import openai

        prompt_ids = self.tokenize_chat(messages, model)
        max_tokens = max_new_tokens
        if prompt_ids is not None and self.max_model_len:
            room = self.max_model_len - len(prompt_ids)
            if room < 1:
                return Generation("", None, len(prompt_ids), 0,
                                  skipped=f"prompt of {len(prompt_ids)} tokens does not fit the context of "
                                          f"{self.max_model_len}")
            max_tokens = min(max_new_tokens, room)
        try:
            response = self.client.chat.completions.create(model=model, messages=messages, max_tokens=max_tokens,
                                                           temperature=0.0, top_p=1.0, n=1)
        except openai.BadRequestError as err:  # e.g. the prompt is longer than the context
            return Generation("", None, len(prompt_ids) if prompt_ids else None, 0, skipped=f"rejected: {err}"[:300])
        except openai.OpenAIError as err:
            raise self._api_error(err, model) from None
        choice = response.choices[0]
        usage = response.usage
        return Generation(text=(choice.message.content or ""), finish_reason=choice.finish_reason,
                          prompt_tokens=usage.prompt_tokens if usage else None,
                          completion_tokens=usage.completion_tokens if usage else 0)

    def generate(self, prompts: Sequence[Messages], max_new_tokens: int, model: str | None = None,
                 desc: str = "generating") -> list[Generation]:
        model = model or self.model
        return parallel_map(lambda m: self._generate_one(m, max_new_tokens, model), prompts, self.concurrency, desc)

    # ------------------------------------------------------------------ scoring

    def _loglik_one(self, request: tuple[Messages, str], model: str) -> LogLikelihood:
        messages, response = request
        prompt_ids = self.tokenize_chat(messages, model)
        if prompt_ids is None:
            raise EvalError(f"{self.root_url}: ranking by policy log-likelihood needs vLLM's /tokenize route and "
                            "prompt_logprobs; use a vLLM endpoint, backend: transformers, or ranking.scorers: [reward]")
        answer_ids = self._tokenize_text(response, model)
        truncated = False
        if self.max_model_len and len(prompt_ids) + len(answer_ids) > self.max_model_len - 1:
            keep = max(0, self.max_model_len - 1 - len(prompt_ids))
            answer_ids, truncated = answer_ids[:keep], True
        if not answer_ids:
            return LogLikelihood(0.0, 0, truncated)
        import openai

        ids = prompt_ids + answer_ids
        try:
            result = self.client.completions.create(model=model, prompt=ids, max_tokens=1, temperature=0.0,
                                                    extra_body={"prompt_logprobs": 0})
        except openai.OpenAIError as err:
            raise self._api_error(err, model) from None
        extra = result.choices[0].model_extra or {}
        per_position = extra.get("prompt_logprobs")
        if not per_position or len(per_position) != len(ids):
            raise EvalError(f"{self.root_url} returned no prompt_logprobs for {len(ids)} tokens; it does not look "
                            "like vLLM")
        total = 0.0
        for position in range(len(prompt_ids), len(ids)):
            entry = per_position[position] or {}
            item = entry.get(str(ids[position])) or entry.get(ids[position])
            if item is None:
                raise EvalError(f"{self.root_url}: prompt_logprobs lacks the log-probability of token {ids[position]}")
            total += float(item["logprob"] if isinstance(item, dict) else item)
        return LogLikelihood(total, len(answer_ids), truncated)

    def loglikelihood(self, requests: Sequence[tuple[Messages, str]], model: str | None = None,
                      desc: str = "scoring") -> list[LogLikelihood]:
        """Log-likelihood of each response after its prompt, from vLLM's ``prompt_logprobs``.

        When the server has LoRA adapters the requests go one at a time (for the base beside them too): vLLM (up
        to at least 0.32) maps LoRA weights per sampled sequence, not per prompt token, when it computes prompt
        logprobs, and crashes the engine on a batch of several such requests (vllm-project/vllm#29955, #16668);
        a request alone in the batch is computed correctly (the tests compare it with transformers)."""
        model = model or self.model
        workers = 1 if self.lora_engine else self.concurrency
        return parallel_map(lambda r: self._loglik_one(r, model), requests, workers, desc)

    def describe(self) -> dict[str, Any]:
        return {"backend": self.kind, "endpoint": self.base_url, "model": self.model, "base_model": self.base_model,
                "source": self.source, "max_model_len": self.max_model_len}


def list_models(base_url: str, api_key: str | None) -> list[dict[str, Any]]:
    headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
    request = urllib.request.Request(base_url.rstrip("/") + "/models", headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=30) as response:  # noqa: S310 - the configured endpoint
            return list(json.loads(response.read()).get("data") or [])
    except urllib.error.HTTPError as err:
        hint = " (wrong or missing API key: set the variable named by api_key_env)" if err.code == 401 else ""
        raise EvalError(f"{base_url}/models answered {err.code}{hint}") from None
    except (urllib.error.URLError, OSError) as err:
        raise EvalError(f"cannot reach {base_url}: {err}; is the server running? (URL must end in /v1)") from None


def choose_endpoint_models(models: list[dict[str, Any]], wanted: str | None, url: str) -> tuple[str, str | None]:
    """(model to evaluate, its base model if it is a LoRA adapter on the server)."""
    ids = [m.get("id") for m in models]
    if wanted:
        if wanted not in ids:
            raise EvalError(f"{url} serves {', '.join(map(str, ids)) or 'no models'}; endpoint_model = {wanted!r} is "
                            "not one of them")
        chosen = next(m for m in models if m.get("id") == wanted)
    elif len(models) == 1:
        chosen = models[0]
    else:
        adapters = [m for m in models if m.get("parent")]
        if len(adapters) != 1:
            raise EvalError(f"{url} serves several models ({', '.join(map(str, ids))}); choose one with "
                            "endpoint_model=NAME")
        chosen = adapters[0]
    parent = chosen.get("parent")
    return str(chosen["id"]), (str(parent) if parent and parent in ids else None)


# =========================================================================== transformers (in-process)


class TransformersBackend:
    """The same prompts through ``transformers`` (greedy ``generate``), for machines without vLLM."""

    kind = "transformers"

    def __init__(self, spec: str, device: str = "auto", threads: int = 0) -> None:
        import torch
        from transformers import AutoModelForCausalLM

        from lexalign.modeling import choose_device, configure_threads, load_tokenizer
        from lexalign.serve.targets import resolve_target

        target = resolve_target(spec)
        self.source = str(spec)
        self.model = target.model_name
        self.base_model = target.base_name
        configure_threads(threads)
        self.device = choose_device(device)
        tokenizer_dir = target.adapter if target.adapter and (target.adapter / "tokenizer_config.json").is_file() \
            else target.base_model
        self.tokenizer = load_tokenizer(tokenizer_dir)
        if target.chat_template is not None:
            self.tokenizer.chat_template = Path(target.chat_template).read_text(encoding="utf-8")
        dtype = torch.float32 if self.device.type == "cpu" else "auto"
        model = AutoModelForCausalLM.from_pretrained(str(target.base_model), dtype=dtype)
        if target.adapter is not None:
            from peft import PeftModel

            model = PeftModel.from_pretrained(model, str(target.adapter))
        self.net = model.to(self.device).eval()
        self.has_adapter = target.adapter is not None
        config = getattr(model, "config", None)
        self.max_model_len = int(getattr(config, "max_position_embeddings", 0) or 0) or None
        eos = {self.tokenizer.eos_token_id}
        gen_eos = getattr(getattr(model, "generation_config", None), "eos_token_id", None)
        eos.update(gen_eos if isinstance(gen_eos, list) else [gen_eos])
        self.eos_ids = {e for e in eos if e is not None}
        logger.info("transformers backend: %s on %s (adapter: %s)", target.base_model, self.device,
                    target.adapter or "none")

    def _context(self, model: str | None) -> Any:
        if model and model == self.base_model and self.has_adapter:
            return self.net.disable_adapter()
        if model and model not in (self.model, self.base_model):
            raise EvalError(f"the transformers backend holds {self.model}"
                            f"{f' and {self.base_model}' if self.base_model else ''}, not {model!r}")
        return contextlib.nullcontext()

    def tokenize_chat(self, messages: Messages, model: str | None = None) -> list[int]:
        text = self.tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        return list(self.tokenizer(text, add_special_tokens=False)["input_ids"])

    def generate(self, prompts: Sequence[Messages], max_new_tokens: int, model: str | None = None,
                 desc: str = "generating") -> list[Generation]:
        import torch
        from tqdm.auto import tqdm

        results = []
        with self._context(model), torch.no_grad():
            for messages in tqdm(prompts, desc=desc, leave=False, disable=None):
                ids = self.tokenize_chat(messages)
                room = (self.max_model_len - len(ids)) if self.max_model_len else max_new_tokens
                if room < 1:
                    results.append(Generation("", None, len(ids), 0, skipped=f"prompt of {len(ids)} tokens does not "
                                              f"fit the context of {self.max_model_len}"))
                    continue
                input_ids = torch.tensor([ids], device=self.device)
                output = self.net.generate(input_ids=input_ids, attention_mask=torch.ones_like(input_ids),
                                           max_new_tokens=min(max_new_tokens, room), do_sample=False,
                                           eos_token_id=sorted(self.eos_ids),
                                           pad_token_id=self.tokenizer.pad_token_id)
                new = output[0, len(ids):].tolist()
                stopped = bool(new) and new[-1] in self.eos_ids
                text = self.tokenizer.decode(new, skip_special_tokens=True)
                results.append(Generation(text, "stop" if stopped else "length", len(ids), len(new)))
        return results

    def loglikelihood(self, requests: Sequence[tuple[Messages, str]], model: str | None = None,
                      desc: str = "scoring") -> list[LogLikelihood]:
        import torch
        from tqdm.auto import tqdm

        results = []
        with self._context(model), torch.no_grad():
            for messages, response in tqdm(requests, desc=desc, leave=False, disable=None):
                prompt_ids = self.tokenize_chat(messages)
                answer_ids = list(self.tokenizer(response, add_special_tokens=False)["input_ids"])
                truncated = False
                if self.max_model_len and len(prompt_ids) + len(answer_ids) > self.max_model_len:
                    answer_ids = answer_ids[:max(0, self.max_model_len - len(prompt_ids))]
                    truncated = True
                if not answer_ids:
                    results.append(LogLikelihood(0.0, 0, truncated))
                    continue
                ids = torch.tensor([prompt_ids + answer_ids], device=self.device)
                logits = self.net(input_ids=ids).logits.float()
                logprobs = torch.log_softmax(logits[0, len(prompt_ids) - 1:-1], dim=-1)
                targets = ids[0, len(prompt_ids):]
                total = logprobs.gather(1, targets[:, None]).sum().item()
                results.append(LogLikelihood(float(total), len(answer_ids), truncated))
        return results

    def describe(self) -> dict[str, Any]:
        return {"backend": self.kind, "model": self.model, "base_model": self.base_model, "source": self.source,
                "device": str(self.device), "max_model_len": self.max_model_len}

    def close(self) -> None:
        self.net = None


# =========================================================================== opening


def shared_targets(specs: list[str]) -> tuple[dict[str, Any], bool]:
    """spec -> resolved serve target of local models that one engine can serve, and whether it serves them by
    swapping weights (full models of one network on different folders) rather than by name (adapters on one base
    model, one chat template); a LexalignError naming both models otherwise."""
    from lexalign.serve.targets import check_shared_engine, check_weight_swap, resolve_target

    targets = {spec: resolve_target(spec) for spec in specs}
    values = list(targets.values())
    if all(t.adapter is None for t in values) and len({t.base_model.resolve() for t in values}) > 1:
        check_weight_swap(values)
        return targets, True
    check_shared_engine(values)
    return targets, False


@dataclass
class SharedServer:
    """One vLLM server for several local models: the API name of each model spec; for full models of one network,
    the folder whose weights ``activate`` loads into the engine."""

    server: Any                   # lexalign.serve.launch.ServerHandle
    names: dict[str, str]         # spec -> served model name
    base_name: str                # the base model's name (what an adapter's "base" is)
    adapters: set[str]            # the specs served as LoRA adapters
    weights: dict[str, Path] = field(default_factory=dict)   # spec -> model folder, when served by weight swap
    active: str | None = None     # whose weights the engine holds now
    swaps: list[float] = field(default_factory=list)         # seconds per weight reload

    def activate(self, spec: str) -> None:
        """Make ``spec``'s weights the engine's (a no-op when they already are, or when served by name). The
        prefix cache is reset: its KV blocks were computed with the previous weights."""
        if spec not in self.weights or self.active == spec:
            return
        started = time.monotonic()
        root = self.server.root_url
        try:
            post_json(root + "/collective_rpc", self.server.api_key,
                      {"method": "reload_weights", "kwargs": {"weights_path": str(self.weights[spec].resolve())},
                       "timeout": 900}, timeout=960)
            post_json(root + "/reset_prefix_cache", self.server.api_key, {})
        except (urllib.error.URLError, OSError) as err:
            raise EvalError(f"loading the weights of {spec} into the shared vLLM server failed ({err}); "
                            f"its log: {self.server.log_path}") from None
        self.active = spec
        self.swaps.append(time.monotonic() - started)
        logger.info("the shared server now holds %s (weights reloaded in %.1f s)", spec, self.swaps[-1])


@contextlib.contextmanager
def shared_server(specs: list[str], config: Any, also: str | None = None) -> Iterator[SharedServer | None]:
    """One server for the local ``specs`` (adapters on one base, or full models of one network) and for ``also``
    (the other policy of the win rate) when it can join them; None when there is nothing to share (fewer than two
    local models, or the transformers backend): each model then gets its own backend from ``open_policy``."""
    from dataclasses import replace

    from lexalign.serve.launch import ServeConfig, start_server

    local = [spec for spec in dict.fromkeys(specs) if not is_url(spec)]
    if also and not is_url(also) and Path(also).exists() and local:
        joined = local + [also] if all(Path(also).resolve() != Path(spec).resolve() for spec in local) else local
        try:
            shared_targets(joined)
            local = joined
        except LexalignError as err:
            logger.info("the win rate's other policy gets its own server: %s", err)
    if config.backend != "vllm" or len(local) < 2:
        yield None
        return
    targets, swap = shared_targets(local)
    serve_fields = {f: getattr(config.server, f) for f in ServeConfig.__dataclass_fields__}
    if swap:
        # the weight-reload route is an admin route: on for this private server (its key is random and its own)
        serve_config = replace(ServeConfig(**serve_fields), run=local[0], more_runs=[], admin_routes=True)
        logger.info("one vLLM server for %d models of one network, their weights swapped in turn", len(local))
        with start_server(serve_config, ephemeral_key=True) as server:
            yield SharedServer(server, {spec: server.model for spec in local}, server.model, set(),
                               weights={spec: targets[spec].base_model for spec in local}, active=local[0])
        return
    # an adapter first: the plan serves the base under that adapter's base name
    ordered = sorted(local, key=lambda spec: targets[spec].adapter is None)
    serve_config = replace(ServeConfig(**serve_fields), run=ordered[0], more_runs=ordered[1:])
    logger.info("one vLLM server for %d models on %s", len(ordered), targets[ordered[0]].base_model)
    with start_server(serve_config, ephemeral_key=True) as server:
        plan = server.plan
        names = {spec: plan.served_name(target) for spec, target in zip(ordered, (plan.target, *plan.more_targets))}
        yield SharedServer(server, names, plan.target.base_name or plan.target.model_name,
                           {spec for spec in ordered if targets[spec].adapter is not None})


@contextlib.contextmanager
def open_policy(spec: str, config: Any, shared: SharedServer | None = None) -> Iterator[Any]:
    """A backend for ``spec`` (URL, run directory or model folder) as the eval config says; closed afterwards.
    With ``shared`` (``shared_server``) a model it serves is asked there, by its name."""
    import os

    generation = config.generation
    if shared is not None and spec in shared.names:
        shared.activate(spec)
        server = shared.server
        yield OpenAIBackend(server.base_url, server.api_key, shared.names[spec],
                            base_model=shared.base_name if spec in shared.adapters else None,
                            concurrency=generation.concurrency, timeout_s=generation.request_timeout_s,
                            source=str(spec), lora_engine=bool(shared.adapters))
        return
    if is_url(spec):
        api_key = os.environ.get(config.api_key_env, "").strip() or None
        models = list_models(spec, api_key)
        model, base = choose_endpoint_models(models, config.endpoint_model, spec)
        logger.info("evaluating %s at %s", model, spec)
        yield OpenAIBackend(spec, api_key, model, base_model=base, concurrency=generation.concurrency,
                            timeout_s=generation.request_timeout_s, source=spec)
        return
    if not Path(spec).exists():
        raise EvalError(f"model {spec}: does not exist; pass a run directory (e.g. runs/tiny/sft), a merged export, "
                        "a model folder or an OpenAI-compatible URL ending in /v1")
    if config.backend == "transformers":
        backend = TransformersBackend(spec, device=config.device, threads=config.threads)
        try:
            yield backend
        finally:
            backend.close()
        return
    from dataclasses import replace

    from lexalign.serve.launch import ServeConfig, start_server

    serve_fields = {f: getattr(config.server, f) for f in ServeConfig.__dataclass_fields__}
    serve_config = replace(ServeConfig(**serve_fields), run=str(spec))
    with start_server(serve_config, ephemeral_key=True) as server:
        base = server.model_names[0] if len(server.model_names) > 1 else None
        yield OpenAIBackend(server.base_url, server.api_key, server.model, base_model=base,
                            concurrency=generation.concurrency, timeout_s=generation.request_timeout_s,
                            source=str(spec))
