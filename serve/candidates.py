"""Candidate answers for the ranking app: N sampled answers per prompt, loaded as ranking tasks.

    lexalign candidates --run runs/tiny/sft [--config configs/candidates.yaml] [key=value ...]
    lexalign candidates --endpoint http://host:8000/v1 --prompts my_prompts.jsonl

Where the answers come from: ``--run`` starts a vLLM server for the run (``serve.launch.start_server``,
with the settings of the ``serve`` section and a random key that lives only as long as the command), or
``--endpoint`` uses a running OpenAI-compatible API (key from ``api_key_env``).

Prompts: a JSONL file, validated line by line (errors name file:line): ``shipped:sft_valid.jsonl`` and the
other shipped chat records (the reference answer, the last assistant turn, is dropped and kept in
``meta.reference``), or your own records, one JSON object per line, either
``{"messages": [...], "meta": {...}, "prompt_id": "..."}`` (ending with a user turn or with an assistant
reference) or ``{"prompt": "question text", ...}`` (sent as system prompt + user turn).

Generation: one chat request per prompt with ``n`` samples (``temperature``, ``top_p``, ``max_tokens``; the
request's seed is ``seed + prompt number``, so a rerun gives the same candidates), ``concurrency`` requests
in flight through the ``openai`` client in a thread pool (the server batches them). Empty answers and
duplicates are dropped; a prompt with fewer than 2 distinct answers is skipped (nothing to rank).

Tasks: each prompt becomes a task with ``prompt_id`` ``<model>/<hash of the prompt>`` (adding the same
prompt for the same model again is reported and skipped), the chat messages as prompt, the answers in
generated order, ``k`` annotators wanted, and meta holding the question and contract excerpt (what the
ranking app shows), the source record's meta (with the lawyers' labels of shipped records: task, present,
answers, normalized, labels/unfair, source), where the prompt came from (``prompts_file``, ``prompts_line``),
the model and the sampling settings.

Gold ranking: with ``rank_gold: true`` the tasks just added that carry labels are ranked by them at once, as the
derived annotator ``gold:<corpus>`` (``lexalign.evaluation.gold``; ``lexalign prefs rank-gold`` does the same for
tasks already in the store). Labels are checked before the server starts (errors name file:line); tasks without
labels stay for the lawyers, who are offered every task either way. Prompts of the shipped test split are
refused with ``rank_gold`` (test labels must never become training signal).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import time
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ConfigDict, model_validator

from lexalign.config import Problem, load_config, problem_if
from lexalign.data.schemas import Message, check_turn_order
from lexalign.data.store import DEFAULT_URL
from lexalign.errors import LexalignError
from lexalign.serve.launch import ServeConfig

if TYPE_CHECKING:
    from lexalign.evaluation.gold import GoldSummary

logger = logging.getLogger(__name__)


class CandidatesError(LexalignError):
    """Candidate generation cannot run as configured; the message says what to change."""


@dataclass
class SamplingSection:
    n: int = 4                 # answers per prompt
    temperature: float = 0.9
    top_p: float = 0.95
    max_tokens: int = 256
    seed: int = 0              # request seed = seed + prompt number

    def problems(self) -> list[Problem]:
        return (problem_if(not 2 <= self.n <= 16, "n", self.n, "expected 2-16 answers per prompt (ranking needs 2+)")
                + problem_if(not 0 <= self.temperature <= 2, "temperature", self.temperature,
                             "expected 0-2 (above 0: different answers to rank)")
                + problem_if(not 0 < self.top_p <= 1, "top_p", self.top_p, "expected (0, 1]")
                + problem_if(self.max_tokens < 1, "max_tokens", self.max_tokens, "expected >= 1"))


@dataclass
class CandidatesConfig:
    """``configs/candidates.yaml``."""

    run: str | None = None           # serve this run (set by --run) ...
    endpoint: str | None = None      # ... or use this OpenAI-compatible URL (set by --endpoint)
    api_key_env: str = "LEXALIGN_API_KEY"  # the endpoint's key (a server started for --run gets a random one)
    model: str | None = None         # served model name; null = the tuned model (the adapter)
    prompts: str = "shipped:sft_valid.jsonl"
    max_prompts: int = 32            # 0 = all
    tasks: list[str] = field(default_factory=list)  # only records whose meta.task is one of these (e.g. extract)
    max_prompt_chars: int = 0        # skip prompts longer than this (all messages; for small contexts); 0 = no limit
    sampling: SamplingSection = field(default_factory=SamplingSection)
    concurrency: int = 8             # requests in flight
    request_timeout_s: float = 600.0
    store: str = DEFAULT_URL
    k: int = 3                       # annotators wanted per task
    source: str = "candidates"       # tasks' source name in the store
    out: str | None = None           # also write the tasks as JSONL (prefs add-tasks format)
    rank_gold: bool = False          # rank the new tasks that carry labels by them (annotator gold:<corpus>)
    serve: ServeConfig = field(default_factory=lambda: ServeConfig(port=0))  # the server started for --run

    def problems(self) -> list[Problem]:
        found: list[Problem] = []
        if self.run and self.endpoint:
            found.append(Problem("endpoint", "give either a run to serve or an endpoint, not both", self.endpoint))
        found += problem_if(self.endpoint is not None and not str(self.endpoint).startswith(("http://", "https://")),
                            "endpoint", self.endpoint, "expected an http(s) URL ending in /v1")
        found += problem_if(self.max_prompts < 0, "max_prompts", self.max_prompts, "expected 0 (all) or a count")
        found += problem_if(self.max_prompt_chars < 0, "max_prompt_chars", self.max_prompt_chars,
                            "expected 0 (no limit) or a number of characters")
        found += problem_if(not 1 <= self.concurrency <= 256, "concurrency", self.concurrency, "expected 1-256")
        found += problem_if(self.k < 0, "k", self.k, "expected >= 0 annotators per task (0: not offered)")
        found += problem_if(not self.source, "source", self.source, "expected a source name")
        found += problem_if(self.request_timeout_s <= 0, "request_timeout_s", self.request_timeout_s, "expected > 0")
        found += problem_if(not (self.store.startswith("sqlite") or self.store.startswith("postgresql")),
                            "store", self.store, "expected a sqlite:///FILE or postgresql+DRIVER://... URL")
        from lexalign.data.paths import resolve_data_path

        if self.rank_gold and self.prompts:
            from lexalign.evaluation.gold import HELD_OUT_FILE

            held_out = resolve_data_path(HELD_OUT_FILE).resolve()
            found += problem_if(resolve_data_path(self.prompts).resolve() == held_out, "prompts", self.prompts,
                                "the held-out test split cannot be ranked by its gold labels (they would become "
                                "training signal); use shipped:sft_train.jsonl or shipped:sft_valid.jsonl")
        if not self.prompts:
            found.append(Problem("prompts", "set the prompts file (JSONL)", self.prompts))
        elif not resolve_data_path(self.prompts).is_file():
            found.append(Problem("prompts", "file not found; give a JSONL file of prompts or shipped:<name>", self.prompts))
        return found


# =========================================================================== prompts


class PromptRecord(BaseModel):
    """One line of a prompts file: chat ``messages`` (user last, or an assistant reference last) or a ``prompt``."""

    model_config = ConfigDict(extra="forbid")
    messages: list[Message] | None = None
    prompt: str | None = None
    prompt_id: str | None = None
    meta: dict[str, Any] | None = None

    @model_validator(mode="after")
    def _one_prompt(self) -> "PromptRecord":
        if (self.messages is None) == (self.prompt is None):
            raise ValueError("give either 'messages' (chat turns) or 'prompt' (a question), exactly one")
        if self.prompt is not None and not self.prompt.strip():
            raise ValueError("prompt must not be empty")
        if self.messages is not None:
            last = self.messages[-1].role if self.messages else None
            check_turn_order(self.messages, must_end_with="assistant" if last == "assistant" else "user")
        if self.prompt_id is not None and not (0 < len(self.prompt_id.strip()) <= 200):
            raise ValueError("prompt_id must be 1-200 characters")
        return self


@dataclass
class Prompt:
    number: int                      # 0-based, in file order (after filtering)
    messages: list[dict[str, str]]   # ending with the user turn
    prompt_id: str | None
    meta: dict[str, Any]
    line: int


def load_prompts(path: str, limit: int = 0, tasks: list[str] | None = None, max_chars: int = 0) -> list[Prompt]:
    from lexalign.data.jsonl import read_jsonl
    from lexalign.data.paths import resolve_data_path
    from lexalign.data.prompts import SYSTEM_PROMPT

    file = resolve_data_path(path)
    records = read_jsonl(file, PromptRecord)
    prompts: list[Prompt] = []
    line = 0
    for line, record in enumerate(records, start=1):
        meta = dict(record.meta or {})
        if tasks and meta.get("task") not in tasks:
            continue
        if record.messages is not None:
            messages = [m.model_dump() for m in record.messages]
            if messages[-1]["role"] == "assistant":
                meta["reference"] = messages.pop()["content"]
        else:
            messages = [{"role": "system", "content": SYSTEM_PROMPT}, {"role": "user", "content": record.prompt}]
        if max_chars and sum(len(m["content"]) for m in messages) > max_chars:
            continue
        if "prompts_file" not in meta:  # where the prompt (and its labels) came from: errors name file:line
            meta.update(prompts_file=str(path), prompts_line=line)
        prompts.append(Prompt(len(prompts), messages, record.prompt_id, meta, line))
        if limit and len(prompts) >= limit:
            break
    if not prompts:
        raise CandidatesError(f"{file}: no prompts{' with meta.task in ' + str(tasks) if tasks else ''}"
                              f"{f' of at most {max_chars} characters' if max_chars else ''}; check the file and "
                              "the tasks / max_prompt_chars filters")
    return prompts


def check_gold_labels(prompts: list[Prompt], path: str) -> None:
    """CandidatesError listing every labelled prompt of the file ``path`` whose label the gold scorer cannot read
    (``file:line: problem``)."""
    from lexalign.evaluation.gold import has_labels, read_label

    problems = [f"{path}:{p.line}: {problem}"
                for p in prompts if has_labels(p.meta) for problem in read_label(p.meta)[3]]
    if problems:
        raise CandidatesError("rank_gold: labels the gold scorer cannot read (fix them, or set rank_gold=false):\n"
                              + "\n".join(f"  {p}" for p in problems[:50]))


def question_and_excerpt(messages: list[dict[str, str]]) -> tuple[str, str | None]:
    from lexalign.data.prompts import CLAUSE_MARKER, EXCERPT_MARKER

    user = messages[-1]["content"]
    for marker in (EXCERPT_MARKER, CLAUSE_MARKER):
        if marker in user:
            question, excerpt = user.split(marker, 1)
            return question, excerpt
    return user, None


def prompt_hash(messages: list[dict[str, str]]) -> str:
    return hashlib.sha256(json.dumps(messages, sort_keys=True, ensure_ascii=False).encode()).hexdigest()[:16]


# =========================================================================== generation


@dataclass
class Generated:
    prompt: Prompt
    answers: list[str]
    dropped: int            # empty or duplicate answers
    finish_reasons: list[str]   # of every sampled answer, the dropped ones included
    answer_finish_reasons: list[str]   # of each kept answer, in the order of ``answers``
    usage_tokens: int


def generate_one(client: Any, model: str, prompt: Prompt, sampling: SamplingSection) -> Generated:
    response = client.chat.completions.create(
        model=model, messages=prompt.messages, n=sampling.n, temperature=sampling.temperature, top_p=sampling.top_p,
        max_tokens=sampling.max_tokens, seed=sampling.seed + prompt.number)
    answers: list[str] = []
    dropped = 0
    reasons = []
    kept_reasons = []
    for choice in sorted(response.choices, key=lambda c: c.index):
        text = (choice.message.content or "").strip()
        reasons.append(choice.finish_reason or "")
        if not text or text in answers:
            dropped += 1
            continue
        answers.append(text)
        kept_reasons.append(choice.finish_reason or "")
    tokens = response.usage.completion_tokens if response.usage else 0
    return Generated(prompt, answers, dropped, reasons, kept_reasons, tokens)


@dataclass
class CandidatesSummary:
    model: str
    prompts: int = 0
    tasks_added: int = 0
    already_there: int = 0
    skipped_too_few: int = 0
    failed: int = 0
    answers: int = 0
    dropped_answers: int = 0
    output_tokens: int = 0
    seconds: float = 0.0
    task_ids: list[int] = field(default_factory=list)
    out: str | None = None
    errors: list[str] = field(default_factory=list)
    gold: GoldSummary | None = None  # with rank_gold

    def describe(self) -> str:
        rate = self.output_tokens / self.seconds if self.seconds else 0.0
        text = (f"{self.tasks_added} ranking tasks added from {self.prompts} prompts with {self.model} "
                f"({self.answers} answers, {self.dropped_answers} empty/duplicate dropped; "
                f"{self.already_there} already in the store, {self.skipped_too_few} with < 2 distinct answers, "
                f"{self.failed} failed; {self.output_tokens} tokens in {self.seconds:.1f} s = {rate:.0f} tokens/s)")
        if self.out:
            text += f"; tasks written to {self.out}"
        if self.gold is not None:
            text += f"\n{self.gold.describe()}"
        if self.errors:
            text += "\nfailed requests:\n  " + "\n  ".join(self.errors[:5])
        return text


def choose_model(client: Any, wanted: str | None) -> str:
    try:
        cards = list(client.models.list())
    except Exception as err:  # noqa: BLE001 - connection, auth...: one clear message
        raise CandidatesError(f"cannot list the endpoint's models: {type(err).__name__}: {err}") from None
    names = [c.id for c in cards]
    if wanted:
        if wanted not in names:
            raise CandidatesError(f"the endpoint does not serve {wanted!r}; it serves {', '.join(names)}")
        return wanted
    tuned = [c.id for c in cards if getattr(c, "parent", None)]
    if not names:
        raise CandidatesError("the endpoint serves no model")
    return tuned[-1] if tuned else names[0]


def generate_candidates(config: CandidatesConfig, client: Any, store: Any, model: str | None = None
                        ) -> CandidatesSummary:
    """Generate for every prompt (concurrently) and add the tasks to ``store``; a summary of what happened."""
    from tqdm import tqdm

    from lexalign.data.jsonl import write_jsonl
    from lexalign.data.store import StoreError

    model = model or choose_model(client, config.model)
    prompts = load_prompts(config.prompts, config.max_prompts, config.tasks, config.max_prompt_chars)
    summary = CandidatesSummary(model=model, prompts=len(prompts))
    sampling = {"n": config.sampling.n, "temperature": config.sampling.temperature, "top_p": config.sampling.top_p,
                "max_tokens": config.sampling.max_tokens, "seed": config.sampling.seed}
    started = time.monotonic()
    results: dict[int, Generated] = {}
    with ThreadPoolExecutor(max_workers=config.concurrency) as pool:
        futures = {pool.submit(generate_one, client, model, p, config.sampling): p for p in prompts}
        for future in tqdm(as_completed(futures), total=len(futures), desc=f"candidates ({model})", disable=None):
            prompt = futures[future]
            try:
                results[prompt.number] = future.result()
            except Exception as err:  # noqa: BLE001 - one failed request must not lose the others
                summary.failed += 1
                summary.errors.append(f"prompt {prompt.number + 1} (line {prompt.line}): {type(err).__name__}: {err}")
                logger.warning("prompt %d failed: %s", prompt.number + 1, err)
    summary.seconds = time.monotonic() - started
    rows = []
    for number in sorted(results):
        generated = results[number]
        prompt = generated.prompt
        summary.answers += len(generated.answers)
        summary.dropped_answers += generated.dropped
        summary.output_tokens += generated.usage_tokens
        if len(generated.answers) < 2:
            summary.skipped_too_few += 1
            continue
        question, excerpt = question_and_excerpt(prompt.messages)
        meta = {**prompt.meta, "question": question, "model": model, "sampling": sampling,
                "finish_reasons": generated.finish_reasons, "answer_finish_reasons": generated.answer_finish_reasons,
                "generated_at": time.strftime("%Y-%m-%dT%H:%M:%S")}
        if excerpt is not None:
            meta["excerpt"] = excerpt
        prompt_id = prompt.prompt_id or f"{model}/{prompt_hash(prompt.messages)}"
        candidates = [{"text": a, "model": model} for a in generated.answers]
        rows.append({"prompt_id": prompt_id, "prompt": prompt.messages, "responses": generated.answers, "meta": meta})
        try:
            task_id = store.add_task(prompt_id, prompt.messages, candidates, meta, config.k, source=config.source)
        except StoreError as err:
            if "already exists" in str(err):
                summary.already_there += 1
                continue
            raise
        summary.tasks_added += 1
        summary.task_ids.append(task_id)
    if config.out:
        write_jsonl(config.out, rows)
        summary.out = config.out
    if config.rank_gold:
        from lexalign.evaluation.gold import rank_tasks_by_gold

        summary.gold = rank_tasks_by_gold(store, task_ids=summary.task_ids)
    if summary.failed and not results:
        raise CandidatesError("every request failed: " + "; ".join(summary.errors[:3]))
    logger.info("%s", summary.describe())
    return summary


def run_candidates(config_path: str | Path | None, overrides: list[str], run: str | None = None,
                   endpoint: str | None = None, prompts: str | None = None, store: str | None = None
                   ) -> CandidatesSummary:
    """``lexalign candidates``: serve the run (or use the endpoint), generate, add the tasks."""
    from openai import OpenAI

    from lexalign.data.store import open_store
    from lexalign.serve.launch import start_server

    overrides = list(overrides)
    for key, value in (("run", run), ("endpoint", endpoint), ("prompts", prompts), ("store", store)):
        if value:
            overrides.append(f"{key}={value}")
    config = load_config(CandidatesConfig, config_path, overrides)
    if not config.run and not config.endpoint:
        raise CandidatesError("no model: pass --run RUN_DIR (a vLLM server is started for it) or --endpoint URL")
    # bad prompt files (and, with rank_gold, labels the gold scorer cannot read) fail before a server starts
    loaded = load_prompts(config.prompts, config.max_prompts, config.tasks, config.max_prompt_chars)
    if config.rank_gold:
        check_gold_labels(loaded, config.prompts)
    with open_store(config.store) as db:
        if config.endpoint:
            key = os.environ.get(config.api_key_env, "").strip()
            if not key:
                raise CandidatesError(f"set {config.api_key_env} to the endpoint's API key")
            client = OpenAI(base_url=config.endpoint, api_key=key, timeout=config.request_timeout_s, max_retries=1)
            return generate_candidates(config, client, db)
        serve_config = config.serve
        serve_config.run = config.run
        with start_server(serve_config, ephemeral_key=True) as server:
            client = server.client(timeout=config.request_timeout_s)
            return generate_candidates(config, client, db, model=config.model or server.model)
