"""The ``lexalign eval`` stage: one or several models, every contract-review task, one run directory per model.

    lexalign eval --model runs/tiny/sft [--data FILE ...] [--tasks extract unfair ...] [--reward runs/tiny/reward]
                  [--against base|RUN_DIR|URL] [--config configs/eval.yaml] [key=value ...]
    lexalign eval model=[runs/tiny/base/model,runs/tiny/sft,runs/tiny/dpo] --reward runs/tiny/reward ...

Several models on one base model (adapters of the same run chain, and the base itself) are served by ONE vLLM
server, each adapter under its own name, and scored on the same drawn items; each gets its own results folder
(``<output_dir>/<name>/eval/<stage>``). Models on different bases in one call are an error naming both bases.

Reads top to bottom: config -> data (validated, before any model loads; one seeded draw for every model) ->
policy answers and log-likelihoods of each model (one vLLM server, or transformers) -> the other policy's
answers (win rate) -> reward-model scores (loaded once) -> metrics with bootstrap intervals -> per model:
results.json, results.md, eval.png, predictions.jsonl, item_scores.json -> COMPLETE.
Python API: ``evaluate(config) -> dict`` (one model), ``evaluate_all(config) -> list[dict]`` (one or several).
"""

from __future__ import annotations

import json
import logging
import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from lexalign.config import Problem, load_config, problem_if, to_dict
from lexalign.errors import LexalignError
from lexalign.runs import is_complete
from lexalign.serve.launch import ServeConfig

logger = logging.getLogger(__name__)

STAGE = "eval"
TaskName = Literal["extract", "presence", "normalize", "unfair", "ranking", "preferences", "winrate", "behaviour"]
ALL = ["extract", "presence", "normalize", "unfair", "ranking", "preferences", "winrate", "behaviour"]


@dataclass
class EvalDataSection:
    # Which shipped held-out split to use when `files` is empty: sft_<split>, acord_rankings_<split>, acord_pairs_<split>.
    # test measures; valid is for tuning choices (a number tuned on the test split no longer measures anything).
    split: Literal["valid", "test"] = "test"
    # Your own files (`--data`): chat records with gold `meta`, RankingRecords, PreferencePairs (any mix);
    # "shipped:<file>" names a shipped file. Non-empty = replaces the shipped split.
    files: list[str] = field(default_factory=list)
    max_per_task: int = 200      # items per task, drawn with `seed` (0 = all; all when a task has fewer)
    seed: int = 0
    system_prompt: bool = True   # string prompts (rankings, pairs) get the training system prompt first

    def problems(self) -> list[Problem]:
        from lexalign.data.paths import resolve_data_path

        found = problem_if(self.max_per_task < 0, "max_per_task", self.max_per_task, "use 0 (all) or a positive count")
        for i, value in enumerate(self.files):
            if not resolve_data_path(value).is_file():
                found.append(Problem(f"files[{i}]", "file not found; give a JSONL file of chat records, "
                                     "RankingRecords or PreferencePairs (or shipped:<name>)", value))
        return found


@dataclass
class GenerationSection:
    max_new_tokens: int = 128    # per answer (fitted into the context: prompt + answer <= the model's length)
    concurrency: int = 8         # requests in flight at once (vLLM batches them)
    request_timeout_s: float = 300.0

    def problems(self) -> list[Problem]:
        return (problem_if(self.max_new_tokens < 1, "max_new_tokens", self.max_new_tokens, "expected >= 1")
                + problem_if(self.concurrency < 1, "concurrency", self.concurrency, "expected >= 1")
                + problem_if(self.request_timeout_s <= 0, "request_timeout_s", self.request_timeout_s, "expected > 0"))


@dataclass
class RankingSection:
    # How the lawyers' star ratings are predicted: policy = log-likelihood of the clause given the drafting
    # request; reward = the reward model's score (only with reward_model).
    scorers: list[Literal["policy", "reward"]] = field(default_factory=lambda: ["policy", "reward"])
    length_normalize: bool = True    # policy: mean log-probability per token (false: the sum)
    k: int = 5                       # NDCG@k
    gain: Literal["exponential", "linear"] = "exponential"   # 2^stars - 1, or stars

    def problems(self) -> list[Problem]:
        return (problem_if(self.k < 1, "k", self.k, "expected >= 1")
                + problem_if(not self.scorers, "scorers", self.scorers, "name at least one of policy, reward"))


@dataclass
class WinrateSection:
    # The other policy: "base" (the base model under the evaluated adapter, same server), a run directory, a
    # model folder or an OpenAI-compatible URL; null = no win rate.
    against: str | None = "base"
    against_model: str | None = None   # model name at an `against` URL that serves several
    max_prompts: int = 16              # held-out prompts (drawn from the generation tasks' items; 0 = all)

    def problems(self) -> list[Problem]:
        return problem_if(self.max_prompts < 0, "max_prompts", self.max_prompts, "use 0 (all) or a positive count")


@dataclass
class BootstrapSection:
    # Percentile bootstrap over the scored items: every metric's interval, and the paired stage-vs-stage
    # differences of `lexalign report` (the same resampled items on both sides).
    resamples: int = 2000
    seed: int = 0
    level: float = 0.95

    def problems(self) -> list[Problem]:
        return (problem_if(self.resamples < 1000, "resamples", self.resamples, "use >= 1000 resamples (percentile "
                           "intervals need them)")
                + problem_if(not 0.5 <= self.level < 1, "level", self.level, "expected a level in [0.5, 1), e.g. 0.95"))


@dataclass
class EvalServerSection(ServeConfig):
    """The private vLLM server started for a run directory or model folder (ServeConfig's keys; `run` is --model)."""

    port: int = 0
    max_num_seqs: int | None = 32
    shutdown_timeout_s: float = 10.0

    def problems(self) -> list[Problem]:
        found = super().problems()
        found += problem_if(self.run is not None, "run", self.run, "set by --model (or the eval config's model key)")
        found += problem_if(bool(self.more_runs), "more_runs", self.more_runs, "set by --model with several models")
        return found


@dataclass
class EvalConfig:
    # Run directory, merged export, model folder, or http(s)://.../v1; or a list of them (one vLLM server for the
    # local ones, which must share a base model; one results folder each).
    model: str | list[str] | None = None
    reward_model: str | None = None    # reward run directory or sequence-classification model folder
    tasks: list[TaskName] = field(default_factory=lambda: list(ALL))
    backend: Literal["vllm", "transformers"] = "vllm"
    output_dir: str = "runs"
    name: str | None = None            # run name (default: from the model path: runs/<name>/<stage>)
    label: str | None = None           # results go to <output_dir>/<name>/eval/<label> (default: the stage)
    endpoint_model: str | None = None  # model name at a URL that serves several
    api_key_env: str = "LEXALIGN_API_KEY"  # key for URLs (a private server gets a random key)
    device: Literal["auto", "cpu", "cuda"] = "auto"   # transformers backend and reward model
    threads: int = 0                   # torch intra-op threads here (0 = torch's default)
    data: EvalDataSection = field(default_factory=EvalDataSection)
    generation: GenerationSection = field(default_factory=GenerationSection)
    ranking: RankingSection = field(default_factory=RankingSection)
    winrate: WinrateSection = field(default_factory=WinrateSection)
    server: EvalServerSection = field(default_factory=EvalServerSection)
    bootstrap: BootstrapSection = field(default_factory=BootstrapSection)

    def problems(self) -> list[Problem]:
        # Whether model / reward_model / winrate.against exist is checked when the evaluation starts
        # (``preflight``), so that a config file validates before the runs it names are built.
        found: list[Problem] = []
        found += problem_if(not self.tasks, "tasks", self.tasks, f"name at least one of {', '.join(ALL)}")
        found += problem_if(self.threads < 0, "threads", self.threads, "use 0 (torch default) or a positive count")
        if not re.match(r"^[A-Za-z_][A-Za-z0-9_]*$", self.api_key_env or ""):
            found.append(Problem("api_key_env", "expected the name of an environment variable", self.api_key_env))
        for key in ("name", "label"):
            value = getattr(self, key)
            found += problem_if(value is not None and not re.match(r"^[A-Za-z0-9][A-Za-z0-9._-]*$", value), key, value,
                                "use letters, digits and . _ - (it names a folder)")
        specs = self.models()
        found += problem_if(len(specs) > 1 and self.label is not None, "label", self.label,
                            "with several models each label comes from its path (runs/tiny/dpo -> dpo); leave it null")
        found += problem_if(len(set(specs)) != len(specs), "model", self.model, "name each model once")
        return found

    def models(self) -> list[str]:
        """The model specs, in the order given."""
        if isinstance(self.model, list):
            return [str(m) for m in self.model]
        return [self.model] if self.model else []

    def names(self) -> tuple[str, str]:
        """(run name, label) of the eval directory, from the (first) model path unless set."""
        specs = self.models()
        name, label = default_names(specs[0] if specs else "model")
        return self.name or name, self.label or label

    @property
    def run_dir(self) -> Path:
        name, label = self.names()
        return Path(self.output_dir) / name / STAGE / label


def _clean(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "-", text).strip("-.") or "model"


def default_names(spec: str) -> tuple[str, str]:
    """runs/tiny/sft -> (tiny, sft); runs/tiny/sft/merged -> (tiny, sft-merged); runs/tiny/base/model -> (tiny, base);
    a model folder -> (models, <folder>); a URL -> (endpoint, <host-port>)."""
    if spec.startswith(("http://", "https://")):
        from urllib.parse import urlparse

        return "endpoint", _clean(urlparse(spec).netloc)
    path = Path(spec).resolve()
    if (path / "manifest.json").is_file():
        return _clean(path.parent.name), _clean(path.name)
    if (path.parent / "manifest.json").is_file():
        suffix = "" if path.name == "model" else f"-{path.name}"
        return _clean(path.parent.parent.name), _clean(path.parent.name + suffix)
    if not path.exists() and path.parent.name:  # not built yet: <output_dir>/<name>/<stage>[/model]
        if path.name == "model" and path.parent.parent.name:
            return _clean(path.parent.parent.name), _clean(path.parent.name)
        return _clean(path.parent.name), _clean(path.name)
    return "models", _clean(path.name)


# =========================================================================== the stage


def run_eval(config_path: str | Path | None, overrides: list[str], *, model: str | list[str] | None = None,
             data: list[str] | None = None, tasks: list[str] | None = None, reward: str | None = None,
             against: str | None = None) -> Path:
    """``lexalign eval``: command-line flags become overrides (they beat the YAML file). Returns the (first)
    model's eval directory.

    ``--model``/``--data``/``--tasks`` may take several values, so argparse also gives them the ``key=value``
    overrides written after them; those are moved back to the overrides."""
    overrides = list(overrides)
    models = [model] if isinstance(model, str) else list(model or [])
    for values in (models, data, tasks):
        for value in list(values or []):
            if "=" in value and re.match(r"^[A-Za-z_][\w.]*=", value) and not Path(value).exists():
                values.remove(value)
                overrides.append(value)
    extra = []
    if models:
        extra.append(f"model={json.dumps(models[0] if len(models) == 1 else models)}")
    if data:
        extra.append(f"data.files={json.dumps(list(data))}")
    if tasks:
        extra.append(f"tasks={json.dumps(list(tasks))}")
    if reward:
        extra.append(f"reward_model={json.dumps(reward)}")
    if against:
        extra.append(f"winrate.against={json.dumps(against)}")
    config = load_config(EvalConfig, config_path, list(overrides) + extra)
    results = evaluate_all(config)
    for result in results[1:]:
        logger.info("eval results: %s", Path(result["run_dir"]) / "results.md")
    return Path(results[0]["run_dir"])


def _is_url(value: str) -> bool:
    return value.startswith(("http://", "https://"))


def preflight(config: EvalConfig) -> list[Problem]:
    """What must exist before anything loads: the models, the reward model, the other policy; and several
    local models must share one base model (they are served by one engine)."""
    found: list[Problem] = []
    specs = config.models()
    if not specs:
        found.append(Problem("model", "what to evaluate: pass --model RUN_DIR (e.g. runs/tiny/sft), a model "
                             "folder or an OpenAI-compatible URL ending in /v1"))
    for spec in specs:
        if not _is_url(spec) and not Path(spec).exists():
            found.append(Problem("model", "does not exist; pass a run directory (e.g. runs/tiny/sft), a merged "
                                 "export, a model folder or an OpenAI-compatible URL ending in /v1", spec))
    if config.reward_model and not Path(config.reward_model).exists():
        found.append(Problem("reward_model", "does not exist; train one with `lexalign reward` or give a "
                             "sequence-classification model folder (or null)", config.reward_model))
    against = config.winrate.against
    if against and against != "base" and not _is_url(against) and not Path(against).exists():
        found.append(Problem("winrate.against", "does not exist; use base, a run directory, a model folder or an "
                             "OpenAI-compatible URL ending in /v1", against))
    for key, value in [("model", spec) for spec in specs] + [("reward_model", config.reward_model),
                                                              ("winrate.against", against)]:
        if value and (Path(value) / "manifest.json").is_file() and not is_complete(value):
            found.append(Problem(key, "not a completed run (no COMPLETE marker): the stage was interrupted or is "
                                 "still running; finish it first", value))
    local = [spec for spec in specs if not _is_url(spec)]
    if not found and len(local) > 1:
        from lexalign.evaluation.backends import shared_targets

        try:
            shared_targets(local)
        except LexalignError as err:
            found.append(Problem("model", str(err), specs))
    if not found:
        dirs = [_model_config(config, spec).run_dir for spec in specs]
        repeated = sorted({str(d) for d in dirs if dirs.count(d) > 1})
        if repeated:
            found.append(Problem("model", f"two models would write the same results folder ({', '.join(repeated)}); "
                                 "evaluate them in separate calls with name=... or label=...", specs))
    return found


def _data_paths(config: EvalConfig) -> list[Path]:
    from lexalign.data.paths import resolve_data_path
    from lexalign.evaluation.tasks import default_files

    return [resolve_data_path(f) for f in (config.data.files or default_files(config.data.split))]


def _ranking_prompts(items: list[Any]) -> list[tuple[Any, str]]:
    return [(item.messages, response) for item in items for response in item.responses]


def _model_config(config: EvalConfig, spec: str) -> EvalConfig:
    """The config of one model's evaluation (what its run directory records)."""
    from dataclasses import replace

    return replace(config, model=spec)


def _same_path(a: str | None, b: str | None) -> bool:
    if not a or not b or _is_url(a) or _is_url(b):
        return a == b
    return Path(a).resolve() == Path(b).resolve()


@dataclass
class _ModelOutcome:
    """What one evaluated model produced before scoring."""

    config: EvalConfig
    run: Any
    answers: dict[str, Any] = field(default_factory=dict)
    loglik: list[Any] = field(default_factory=list)
    other_answers: dict[str, Any] = field(default_factory=dict)
    info: dict[str, Any] = field(default_factory=dict)
    other_info: dict[str, Any] | None = None
    skipped: dict[str, str] = field(default_factory=dict)
    rm_scores: dict[str, Any] = field(default_factory=dict)
    timing: dict[str, float] = field(default_factory=dict)
    against: str | None = None


class _AnswerCache:
    """Greedy answers by (server, model name, model spec): a model asked twice (the evaluated adapter, then the
    other policy of another model's win rate; the base for several adapters) answers once. The spec is part of the
    key because one served name holds each model in turn on a weight-swapping server."""

    def __init__(self) -> None:
        self.found: dict[tuple[str, str], dict[str, Any]] = {}

    def answers(self, backend: Any, model: str | None, items: list[Any], max_new_tokens: int,
                desc: str) -> dict[str, Any]:
        key = (str(getattr(backend, "base_url", id(backend))), str(model or backend.model),
               "" if model else str(getattr(backend, "source", "")))
        known = self.found.setdefault(key, {})
        missing = [item for item in items if item.id not in known]
        if missing:
            generations = backend.generate([item.messages for item in missing], max_new_tokens, model=model, desc=desc)
            known.update({item.id: gen for item, gen in zip(missing, generations)})
        return {item.id: known[item.id] for item in items}


def evaluate(config: EvalConfig) -> dict[str, Any]:
    """Evaluate the one model of ``config.model``; write its eval run directory; return the results.

    The returned dict is what ``results.json`` holds: ``metrics`` (flat ``task/metric`` -> value), ``intervals``
    (``task/metric`` -> value, ci_low, ci_high, n), ``chance``, ``tasks`` (per-task details and skip reasons),
    ``per_category``, ``model``, ``data`` (with the drawn item ids), ``timing_s`` and ``run_dir``.
    """
    from lexalign.evaluation.backends import EvalError

    if len(config.models()) > 1:
        raise EvalError(f"{len(config.models())} models given; evaluate_all(config) evaluates several")
    return evaluate_all(config)[0]


def evaluate_all(config: EvalConfig) -> list[dict[str, Any]]:
    """Evaluate every model of ``config.model`` on the same drawn items (one vLLM server for the local models);
    one run directory and one results dict (see ``evaluate``) per model, in the order given."""
    from lexalign.config import ConfigError, collect_problems
    from lexalign.evaluation import report
    from lexalign.evaluation.backends import is_url, open_policy, shared_server
    from lexalign.evaluation.tasks import load_eval_files, regroup, sample, select
    from lexalign.runs import RunDir

    problems = collect_problems(config) + preflight(config)
    if problems:
        raise ConfigError(problems)
    started = time.monotonic()
    tasks = list(dict.fromkeys(config.tasks))
    specs = config.models()

    # ------------------------------------------------------------------ data (checked before any model loads)
    paths = _data_paths(config)
    all_data = load_eval_files(paths, None if not config.data.system_prompt else _system_prompt())
    data = select(all_data, config.data.max_per_task, config.data.seed)
    chat_items = [item for item in data.chat if item.task in tasks]
    need_answers = bool(chat_items) or "behaviour" in tasks
    if "behaviour" in tasks and not chat_items:
        chat_items = list(data.chat)  # behaviour alone still needs answers
    rank_items = data.rankings if "ranking" in tasks else []
    pref_items = data.preferences if "preferences" in tasks else []
    skipped: dict[str, str] = {}
    use_reward = bool(config.reward_model)
    if not use_reward:
        for task in ("preferences", "winrate"):
            if task in tasks:
                skipped[task] = "no reward_model given (--reward RUN_DIR)"
    against = config.winrate.against if "winrate" in tasks and use_reward else None
    if "winrate" in tasks and use_reward and not config.winrate.against:
        skipped["winrate"] = "winrate.against is null (no other policy to compare with)"
    winrate_items = sample(data.chat, config.winrate.max_prompts, config.data.seed + 1) if against else []
    if against and not winrate_items:
        skipped["winrate"] = "no chat records with prompts in the evaluation data"
        against = None
    # the policy must answer the win-rate prompts too
    chat_ids = {item.id for item in chat_items}
    answer_items = chat_items + [item for item in winrate_items if item.id not in chat_ids] if need_answers or against \
        else []
    drawn = {task: [item.id for item in chat_items if item.task == task] for task in tasks if task in
             ("extract", "presence", "normalize", "unfair")}
    drawn.update({"ranking": [item.id for item in rank_items], "preferences": [item.id for item in pref_items],
                  "winrate": [item.id for item in winrate_items]})

    # ------------------------------------------------------------------ one run directory per model
    outcomes: list[_ModelOutcome] = []
    for spec in specs:
        model_config = _model_config(config, spec)
        model_path = None if is_url(spec) else Path(spec)
        inputs = {f"data:{Path(p).name}": Path(p) for p in paths}
        if model_path is not None:
            inputs["model"] = model_path
        if config.reward_model:
            inputs["reward_model"] = Path(config.reward_model)
        parent = model_path if model_path is not None and (model_path / "manifest.json").is_file() else None
        run = RunDir(model_config.run_dir, STAGE, model_config, inputs=inputs, parent=parent).start()
        outcome = _ModelOutcome(model_config, run, info={"spec": spec}, skipped=dict(skipped), against=against)
        if against and against != "base" and _same_path(spec, against):
            outcome.skipped["winrate"] = f"the model is the winrate.against policy ({against})"
            outcome.against = None
        outcomes.append(outcome)
    logger.info("evaluating %s on %s", ", ".join(specs), ", ".join(f"{k}: {v}" for k, v in data.counts().items()))

    # ------------------------------------------------------------------ the policies: answers and log-likelihoods
    cache = _AnswerCache()
    other_answers: dict[str, Any] = {}
    other_info: dict[str, Any] | None = None
    t0 = time.monotonic()
    with shared_server(specs, config, also=against if against and against != "base" else None) as shared:
        shared_start = time.monotonic() - t0
        for outcome in outcomes:
            spec = str(outcome.config.model)
            t0 = time.monotonic()
            with open_policy(spec, outcome.config, shared=shared) as policy:
                outcome.timing["policy_start"] = shared_start if shared and spec in shared.names \
                    else time.monotonic() - t0
                t1 = time.monotonic()
                outcome.answers = cache.answers(policy, None, answer_items, config.generation.max_new_tokens,
                                                desc=f"answers: {spec}")
                outcome.timing["generation"] = time.monotonic() - t1
                if rank_items and "policy" in config.ranking.scorers:
                    t1 = time.monotonic()
                    outcome.loglik = policy.loglikelihood(_ranking_prompts(rank_items), desc="clause log-likelihoods")
                    outcome.timing["ranking_loglik"] = time.monotonic() - t1
                if outcome.against == "base":
                    if not policy.base_model:
                        outcome.skipped["winrate"] = (f"winrate.against = base, but {spec} is not an adapter on a base "
                                                      "model; give another run, model folder or URL")
                        outcome.against = None
                    else:
                        t1 = time.monotonic()
                        outcome.other_answers = cache.answers(policy, policy.base_model, winrate_items,
                                                              config.generation.max_new_tokens, desc="base answers")
                        outcome.other_info = {"spec": "base", "model": policy.base_model}
                        outcome.timing["other_generation"] = time.monotonic() - t1
                outcome.info.update(policy.describe())
                if shared and spec in shared.weights:   # one served name held each model in turn
                    outcome.info["shared_server"] = {"weights_swapped_in_place": list(shared.weights),
                                                     "swap_s": round(shared.swaps[-1], 1) if shared.swaps else 0.0}
                elif shared and spec in shared.names:
                    outcome.info["shared_server"] = sorted(shared.names.values())
        if against and against != "base" and shared and against in shared.names:
            with open_policy(against, _other_config(config, against), shared=shared) as other:
                other_answers = cache.answers(other, None, winrate_items, config.generation.max_new_tokens,
                                              desc="other answers")
                other_info = {"spec": against, **other.describe()}

    # ------------------------------------------------------------------ the other policy on its own server (win rate)
    if against and against != "base" and other_info is None and any(o.against for o in outcomes):
        t1 = time.monotonic()
        with open_policy(against, _other_config(config, against)) as other:
            other_answers = cache.answers(other, None, winrate_items, config.generation.max_new_tokens,
                                          desc="other answers")
            other_info = {"spec": against, **other.describe()}
        for outcome in outcomes:
            outcome.timing["other_policy"] = time.monotonic() - t1
    for outcome in outcomes:
        if outcome.against and outcome.against != "base":
            outcome.other_answers, outcome.other_info = other_answers, other_info

    # ------------------------------------------------------------------ reward model (loaded once)
    rm_info = None
    if use_reward and (pref_items or (rank_items and "reward" in config.ranking.scorers)
                       or any(o.other_answers for o in outcomes)):
        from lexalign.evaluation.rewards import load_reward_scorer

        t1 = time.monotonic()
        scorer = load_reward_scorer(config.reward_model, device=config.device, threads=config.threads)
        shared_scores: dict[str, Any] = {}
        if pref_items:  # the reward model alone: the same for every model
            chosen = scorer.score([(p.messages, p.chosen) for p in pref_items], desc="RM: chosen")
            rejected = scorer.score([(p.messages, p.rejected) for p in pref_items], desc="RM: rejected")
            shared_scores["preferences"] = (chosen, rejected, [p.id for p in pref_items])
        if rank_items and "reward" in config.ranking.scorers:
            shared_scores["ranking"] = regroup(rank_items, scorer.score(_ranking_prompts(rank_items),
                                                                        desc="RM: clauses"))
        theirs_by_id: dict[str, float] = {}
        for outcome in outcomes:
            outcome.rm_scores.update(shared_scores)
            if outcome.other_answers:
                pairs = [item for item in winrate_items
                         if not outcome.answers[item.id].skipped and not outcome.other_answers[item.id].skipped]
                mine = scorer.score([(i.messages, outcome.answers[i.id].text) for i in pairs],
                                    desc="RM: policy answers")
                key = str(outcome.other_info)
                need = [i for i in pairs if (key, i.id) not in theirs_by_id]
                scored = scorer.score([(i.messages, outcome.other_answers[i.id].text) for i in need],
                                      desc="RM: other answers")
                theirs_by_id.update({(key, i.id): v for i, v in zip(need, scored)})
                outcome.rm_scores["winrate"] = (pairs, mine, [theirs_by_id[(key, i.id)] for i in pairs])
        rm_info = scorer.describe()
        for outcome in outcomes:
            outcome.timing["reward_model"] = time.monotonic() - t1
    elif use_reward:
        rm_info = {"reward_model": config.reward_model, "note": "loaded for nothing: no task needed it"}

    # ------------------------------------------------------------------ metrics and files, model by model
    from lexalign.evaluation.scoring import score_all

    results_list = []
    for outcome in outcomes:
        model_config, run = outcome.config, outcome.run
        scored = score_all(model_config, tasks, chat_items, outcome.answers, rank_items, outcome.loglik,
                           outcome.rm_scores, outcome.skipped)
        item_scores = scored.pop("item_scores")
        results: dict[str, Any] = {
            "model": outcome.info,
            "against": outcome.other_info if outcome.other_answers else None,
            "reward_model": rm_info,
            "data": {
                "files": {str(p): {"kind": all_data.files.get(str(p)), "sha256": _sha(p)} for p in paths},
                "split": None if config.data.files else config.data.split,
                "available": all_data.counts(),
                "evaluated": {task: n for task, n in data.counts().items()},
                "max_per_task": config.data.max_per_task, "seed": config.data.seed,
                "items": drawn,
            },
            "tasks_requested": tasks,
            **scored,
            "timing_s": {k: round(v, 2) for k, v in {**outcome.timing, "total": time.monotonic() - started}.items()},
            "run_dir": str(run.path),
            "name": model_config.names()[0], "label": model_config.names()[1],
            "config": to_dict(model_config),
        }
        predictions = _predictions(chat_items, outcome.answers, outcome.other_answers, winrate_items,
                                   outcome.rm_scores)
        predictions += _ranking_predictions(rank_items, outcome.loglik, outcome.rm_scores.get("ranking"))
        outputs = report.write_all(run.path, results, predictions, item_scores)
        run.log_metrics({"stage": STAGE, **{k: v for k, v in results["metrics"].items() if v is not None}})
        outputs["evaluated"] = {"model": outcome.info, "against": results["against"], "reward_model": rm_info}
        run.complete(outputs=outputs, results=results["metrics"])
        logger.info("eval results: %s", run.path / "results.md")
        results_list.append(results)
    return results_list


def _system_prompt() -> str:
    from lexalign.data.prompts import SYSTEM_PROMPT

    return SYSTEM_PROMPT


def _sha(path: Path) -> str | None:
    from lexalign.runs import hash_path

    return hash_path(path) if Path(path).exists() else None


def _other_config(config: EvalConfig, against: str) -> EvalConfig:
    from dataclasses import replace

    return replace(config, model=against, endpoint_model=config.winrate.against_model)


def _predictions(chat_items: list[Any], answers: dict[str, Any], other_answers: dict[str, Any],
                 winrate_items: list[Any], rm_scores: dict[str, Any]) -> list[dict[str, Any]]:
    """One line per answered item: the request, what the model said and the gold labels (for lawyers to read)."""
    win = {}
    if "winrate" in rm_scores:
        pairs, mine, theirs = rm_scores["winrate"]
        win = {item.id: (a, b) for item, a, b in zip(pairs, mine, theirs)}
    rows = []
    seen = set()
    for item in chat_items + winrate_items:
        if item.id in seen or item.id not in answers:
            continue
        seen.add(item.id)
        gen = answers[item.id]
        row = {"id": item.id, "task": item.task, "prompt": item.question, "answer": gen.text,
               "finish_reason": gen.finish_reason, "completion_tokens": gen.completion_tokens, "gold": item.gold,
               "reference": item.reference}
        if gen.skipped:
            row["skipped"] = gen.skipped
        if item.id in other_answers:
            row["other_answer"] = other_answers[item.id].text
        if item.id in win:
            row["reward"], row["other_reward"] = win[item.id]
        rows.append(row)
    return rows


def _ranking_predictions(items: list[Any], loglik: list[Any], reward: list[list[float]] | None) -> list[dict[str, Any]]:
    """One line per ranking item: the lawyers' relevance next to each scorer's scores."""
    from lexalign.evaluation.tasks import regroup

    policy = regroup(items, loglik) if loglik else [None] * len(items)
    rows = []
    for i, item in enumerate(items):
        row: dict[str, Any] = {"id": item.id, "task": "ranking", "relevance": item.relevance}
        if policy[i] is not None:
            row["policy_loglik"] = [ll.total for ll in policy[i]]
            row["policy_tokens"] = [ll.tokens for ll in policy[i]]
        if reward is not None:
            row["reward"] = reward[i]
        rows.append(row)
    return rows
