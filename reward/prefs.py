"""Preference export (store rankings -> TRL preference pairs) and import (RankingRecords -> store).

    lexalign prefs export --store URL --out DIR [--min-annotators N] [--none-acceptable keep|drop]
                          [--kinds human derived] [--weight derived=0.5] [--mix-kinds]
    lexalign prefs import FILE.jsonl --store URL [--source NAME] [--k N]
    lexalign prefs add-tasks FILE.jsonl --store URL [--k N]
    lexalign prefs rank-gold --store URL [--source NAME ...]     (lexalign.evaluation.gold)

## How rankings become pairs

0. **Kinds.** A ranking is *human* (a lawyer in the app, or imported lawyers such as ACORD's) or *derived*
   (computed from labels, e.g. ``gold:cuad``: ``lexalign.evaluation.gold``). ``--kinds`` selects which kinds
   are exported (default: both). When a task has a human ranking, the human rankings **replace** the derived
   ones of that task (a lawyer who looked at the answers outranks a label-matching score); ``--mix-kinds``
   lets both vote instead, each vote weighted by its kind's ``--weight`` (default 1 each).

For every task with at least ``--min-annotators`` rankings after step 0 (default 1):

1. **Votes.** In one annotator's ranking, every two candidates with *different* ranks give one vote for
   the better-ranked one (smaller rank number; 1 = best), with a *rank gap* = |rank_a - rank_b|.
   Candidates with the same rank (a tie) give no vote.
2. **"None acceptable".** With ``none_acceptable="keep"`` (the default, the same rule as the ACORD
   builder's ``data/pairs.py``) such a ranking votes like any other: the relative order among poor
   answers is still a preference a reward model can learn. Every pair says how many of its majority
   votes came from such rankings (``meta.none_acceptable_votes``), so a DPO run can leave those pairs
   out. With ``"drop"`` these rankings give no votes at all. (A lawyer who ticks "none acceptable" and
   leaves every answer tied gives no pairs either way.)
3. **Aggregation across annotators.** Per task and unordered pair of candidates {a, b}:
   ``net = votes(a better) - votes(b better)``, each vote counting its kind's weight (1 unless set).
   ``net > 0`` gives the pair chosen = a, rejected = b; ``net < 0`` the reverse; ``net == 0`` (no votes,
   all ties, or an even split) gives **no pair**. Annotators who tied a and b do not vote; they are counted
   in ``meta.ties``.
4. **Margin** = the mean rank gap over the votes in the majority direction (>= 1; weighted by kind when
   weights differ). Example: three annotators rank a/b as 1/3, 1/2 and 2/1 -> votes 2:1 for a, gaps 2 and 1
   -> margin 1.5.
5. **Origin and weight.** ``meta.origin`` says whose votes made the pair: ``human``, ``derived:<annotator>``
   (``derived:gold:cuad``), or both joined by ``+`` (only with ``--mix-kinds``); ``meta.weight`` is the mean
   kind weight of those votes, for trainers that weight pairs.

Each line of ``preferences.jsonl`` is TRL's conversational preference format (the same chat format as the
SFT data): ``prompt`` = chat messages ending with the user turn (a string prompt becomes [system, user]
with the SFT system prompt, as in ``data/pairs.py``), ``chosen`` / ``rejected`` = [assistant message],
``margin``, and ``meta`` = {task_id, prompt_id, source, chosen_index, rejected_index, votes_for,
votes_against, ties, rankings, none_acceptable_votes, origin, weight} (+ ``task``, e.g. extract, when the task's
meta names it) — ``prompt_id`` lets a trainer split
by prompt so no prompt lands in both train and eval. The same rows are saved as a Hugging Face ``datasets``
folder (``DIR/dataset``, ``datasets.load_from_disk``), and ``DIR/export.json`` records the counts, the rule and
the scope (``sources``, ``kinds``, ``annotators`` and the submission days ``submitted_from`` / ``submitted_to``,
UTC and inclusive; null: no filter).
``DIR/rankings.jsonl`` holds every exported ranking itself as a RankingRecord (annotator, kind, ranks,
rationale; the task's source in ``meta.store_source``): ``prefs import`` of that file into another store
recreates the tasks, the annotators with their kinds, and the rankings.
"""

from __future__ import annotations

import json
import logging
import math
import time
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from datetime import date
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from lexalign.data import prompts
from lexalign.data.jsonl import DataError, read_jsonl, write_jsonl, write_text_atomic
from lexalign.data.paths import resolve_data_path
from lexalign.data.schemas import ANNOTATOR_KINDS, RankingRecord, Text
from lexalign.data.store import ImportResult, Store, StoredRanking, StoreError, TaskRankings
from lexalign.data.store_input import submission_period

logger = logging.getLogger(__name__)

NoneAcceptable = Literal["keep", "drop"]


@dataclass(frozen=True)
class AggregatedPair:
    chosen: int           # candidate position
    rejected: int
    margin: float
    votes_for: int
    votes_against: int
    ties: int
    none_acceptable_votes: int
    origin: str = "human"  # whose votes made the pair (see the module docstring, step 5)
    weight: float = 1.0    # mean kind weight of those votes


@dataclass
class ExportSummary:
    out_dir: str
    tasks: int = 0
    tasks_with_pairs: int = 0
    rankings: int = 0
    rankings_none_acceptable: int = 0
    pairs: int = 0
    pairs_dropped_no_majority: int = 0
    min_annotators: int = 1
    none_acceptable: str = "keep"
    kinds: list[str] = field(default_factory=lambda: list(ANNOTATOR_KINDS))
    # the scope: task sources, annotators (usernames) and submission days (UTC, inclusive); None: no filter
    sources: list[str] | None = None
    annotators: list[str] | None = None
    submitted_from: str | None = None
    submitted_to: str | None = None
    weights: dict[str, float] = field(default_factory=dict)
    mix_kinds: bool = False
    rankings_replaced: int = 0     # derived rankings left out because a human ranked the same task
    pairs_by_origin: dict[str, int] = field(default_factory=dict)
    feedback_pairs: int = 0
    files: dict[str, str] = field(default_factory=dict)


def ranking_origin(ranking: StoredRanking) -> str:
    """``human`` for a person's ranking, ``derived:<annotator>`` (``derived:gold:cuad``) for a computed one."""
    return "human" if ranking.kind == "human" else f"{ranking.kind}:{ranking.annotator}"


def human_first(task: TaskRankings) -> tuple[TaskRankings, int]:
    """The task with only its human rankings when it has any (they outrank derived ones); and how many derived
    rankings were left out."""
    humans = tuple(r for r in task.rankings if r.kind == "human")
    if not humans or len(humans) == len(task.rankings):
        return task, 0
    return replace(task, rankings=humans), len(task.rankings) - len(humans)


@dataclass
class _Votes:
    """The votes of one direction (a over b) of one candidate pair."""

    gaps: list[int] = field(default_factory=list)
    weights: list[float] = field(default_factory=list)
    origins: set[str] = field(default_factory=set)
    none_acceptable: int = 0

    @property
    def total(self) -> float:
        return sum(self.weights)

    def pair(self, chosen: int, rejected: int, against: "_Votes", ties: int) -> AggregatedPair:
        margin = sum(w * g for w, g in zip(self.weights, self.gaps)) / self.total
        # "human" first, then the derived annotators by name: the same set always gives the same string
        origin = "+".join(sorted(self.origins, key=lambda o: (o != "human", o)))
        return AggregatedPair(chosen, rejected, margin, len(self.gaps), len(against.gaps), ties, self.none_acceptable,
                              origin, self.total / len(self.weights))


def aggregate_pairs(task: TaskRankings, none_acceptable: NoneAcceptable = "keep",
                    weights: Mapping[str, float] | None = None) -> tuple[list[AggregatedPair], int]:
    """The pairs of one task under the rule in the module docstring; also returns how many had no majority.
    ``weights`` = vote weight per annotator kind (default 1 each)."""
    n = len(task.candidates)
    weight_of = {kind: 1.0 for kind in ANNOTATOR_KINDS} | dict(weights or {})
    pairs: list[AggregatedPair] = []
    no_majority = 0
    for a in range(n):
        for b in range(a + 1, n):
            for_a, for_b = _Votes(), _Votes()
            ties = 0
            for ranking in task.rankings:
                if ranking.none_acceptable and none_acceptable == "drop":
                    continue
                ra, rb = ranking.ranks[a], ranking.ranks[b]
                if ra == rb:
                    ties += 1
                    continue
                votes = for_a if ra < rb else for_b
                votes.gaps.append(abs(ra - rb))
                votes.weights.append(weight_of[ranking.kind])
                votes.origins.add(ranking_origin(ranking))
                votes.none_acceptable += ranking.none_acceptable
            net = for_a.total - for_b.total
            if math.isclose(net, 0.0, abs_tol=1e-9):
                if for_a.gaps or for_b.gaps:
                    no_majority += 1
                continue
            pairs.append(for_a.pair(a, b, for_b, ties) if net > 0 else for_b.pair(b, a, for_a, ties))
    return pairs, no_majority


def prompt_messages(prompt: str | list[dict[str, str]], system_prompt: str | None) -> list[dict[str, str]]:
    """The chat messages of a stored prompt; a string becomes [system, user] like the SFT data."""
    if isinstance(prompt, str):
        system = [{"role": "system", "content": system_prompt}] if system_prompt else []
        return system + [{"role": "user", "content": prompt}]
    return [{"role": m["role"], "content": m["content"]} for m in prompt]


def preference_rows(task_rankings: Sequence[TaskRankings], none_acceptable: NoneAcceptable = "keep",
                    system_prompt: str | None = prompts.SYSTEM_PROMPT, weights: Mapping[str, float] | None = None
                    ) -> tuple[list[dict[str, Any]], dict[str, int]]:
    """TRL conversational preference rows for these tasks, plus counts for the summary."""
    from lexalign.data.schemas import PreferencePair

    rows: list[dict[str, Any]] = []
    stats = {"tasks_with_pairs": 0, "no_majority": 0, "identical_texts": 0}
    for task in task_rankings:
        pairs, no_majority = aggregate_pairs(task, none_acceptable, weights)
        stats["no_majority"] += no_majority
        prompt = prompt_messages(task.prompt, system_prompt)
        emitted = 0
        for pair in pairs:
            chosen, rejected = task.candidates[pair.chosen], task.candidates[pair.rejected]
            if chosen.text == rejected.text:
                stats["identical_texts"] += 1  # two candidates with the same text: not a preference
                continue
            row = {
                "prompt": prompt,
                "chosen": [{"role": "assistant", "content": chosen.text}],
                "rejected": [{"role": "assistant", "content": rejected.text}],
                "margin": float(pair.margin),
                "meta": {
                    "task_id": task.task_id,
                    "prompt_id": task.prompt_id,
                    "source": task.source,
                    "chosen_index": pair.chosen,
                    "rejected_index": pair.rejected,
                    "votes_for": pair.votes_for,
                    "votes_against": pair.votes_against,
                    "ties": pair.ties,
                    "rankings": len(task.rankings),
                    "none_acceptable_votes": pair.none_acceptable_votes,
                    "origin": pair.origin,
                    "weight": pair.weight,
                    **({"task": task.meta["task"]} if isinstance((task.meta or {}).get("task"), str) else {}),
                },
            }
            PreferencePair.model_validate(row)  # the shared schema: what the reward/DPO stages will read
            rows.append(row)
            emitted += 1
        stats["tasks_with_pairs"] += emitted > 0
    return rows, stats


def feedback_pairs(store: Store, *, redact: bool = True, system_prompt: str | None = prompts.SYSTEM_PROMPT
                   ) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """Chat feedback with a better answer written by the lawyer -> preference pairs (chosen = the better
    answer, rejected = the model's answer), PII-redacted by default (``data/redact.py``: the prompt holds the
    uploaded contract's excerpts). Returns the rows and a summary whose redaction counts hold no values."""
    from lexalign.data.redact import Redactor, RedactionReport, redact_records
    from lexalign.data.schemas import PreferencePair

    rows = []
    for item in store.list_feedback(limit=2**31 - 1):
        better = (item.get("better_answer") or "").strip()
        if not better or better == item["response"].strip():
            continue
        rows.append({"prompt": prompt_messages(item["prompt"], system_prompt),
                     "chosen": [{"role": "assistant", "content": better}],
                     "rejected": [{"role": "assistant", "content": item["response"]}],
                     "meta": {"feedback_id": int(item["id"]), "source": "chat_feedback", "rating": int(item["rating"]),
                              "model": (item.get("meta") or {}).get("model"),
                              "origin": "human"}})  # the better answer was written by the lawyer
    report = RedactionReport()
    if redact:
        rows = redact_records(rows, Redactor(), report, "feedback_pairs.jsonl")
    valid = []
    for row in rows:
        try:
            PreferencePair.model_validate(row)
        except ValueError:
            continue  # e.g. chosen and rejected became identical after redaction
        valid.append(row)
    return valid, {"pairs": len(valid), "redacted": redact, "redaction": report.as_dict() if redact else None}


def check_kind_weights(kinds: Sequence[str] | None, weights: Mapping[str, float] | None
                       ) -> tuple[list[str], dict[str, float]]:
    """The selected annotator kinds (default: all) and a finite weight > 0 per kind (default 1)."""
    kind_list = list(ANNOTATOR_KINDS) if kinds is None else list(dict.fromkeys(kinds))
    problems = [f"kind {k!r}: expected one of {', '.join(ANNOTATOR_KINDS)}" for k in kind_list if k not in ANNOTATOR_KINDS]
    if not kind_list:
        problems.append(f"no annotator kind selected; choose some of {', '.join(ANNOTATOR_KINDS)}")
    weight_of = {kind: 1.0 for kind in ANNOTATOR_KINDS}
    for kind, weight in (weights or {}).items():
        if kind not in ANNOTATOR_KINDS:
            problems.append(f"weight for {kind!r}: expected a kind ({', '.join(ANNOTATOR_KINDS)})")
        elif isinstance(weight, bool) or not isinstance(weight, (int, float)) or not math.isfinite(weight) or weight <= 0:
            problems.append(f"weight {kind}={weight!r}: expected a number > 0 (leave a kind out with kinds instead)")
        else:
            weight_of[kind] = float(weight)
    if problems:
        raise StoreError("; ".join(problems))
    return kind_list, weight_of


def parse_weights(items: Sequence[str]) -> dict[str, float]:
    """``["derived=0.5", "human=1"]`` (the CLI's ``--weight``) -> {kind: weight}; checked by check_kind_weights."""
    weights: dict[str, float] = {}
    for item in items:
        kind, sep, value = item.partition("=")
        try:
            if not sep:
                raise ValueError
            weights[kind.strip()] = float(value)
        except ValueError:
            raise StoreError(f"--weight {item!r}: expected KIND=NUMBER, e.g. derived=0.5") from None
    return weights


def ranking_records(task_rankings: Sequence[TaskRankings]) -> list[RankingRecord]:
    """Every ranking as a RankingRecord that ``prefs import`` reads back with the annotator's kind and the
    task's source (``meta.store_source``)."""
    records = []
    for task in task_rankings:
        for ranking in task.rankings:
            record = RankingRecord(
                prompt_id=task.prompt_id, prompt=task.prompt, responses=[c.text for c in task.candidates],
                ranks=list(ranking.ranks), annotator=ranking.annotator, annotator_kind=ranking.kind,
                rationale=ranking.rationale, none_acceptable=ranking.none_acceptable, flags=list(ranking.flags),
                meta={**task.meta, "store_source": task.source})
            records.append(record)
    return records


def export_preferences(store: Store, out_dir: str | Path, *, min_annotators: int = 1,
                       none_acceptable: NoneAcceptable = "keep", system_prompt: str | None = prompts.SYSTEM_PROMPT,
                       sources: Sequence[str] | None = None, actor: str = "cli", save_dataset: bool = True,
                       feedback: bool = True, redact_feedback: bool = True, kinds: Sequence[str] | None = None,
                       weights: Mapping[str, float] | None = None, mix_kinds: bool = False,
                       annotator_names: Sequence[str] | None = None, submitted_from: date | str | None = None,
                       submitted_to: date | str | None = None) -> ExportSummary:
    """Write ``preferences.jsonl``, ``rankings.jsonl``, the ``dataset/`` folder and ``export.json`` to ``out_dir``;
    with ``feedback`` also ``feedback_pairs.jsonl`` (chat feedback, PII-redacted unless ``redact_feedback=False``).

    ``kinds``: the annotator kinds exported (default all); ``weights``: vote weight per kind (default 1);
    ``mix_kinds``: derived rankings vote beside human ones on the same task instead of being replaced;
    ``annotator_names``: only these annotators' rankings (default all); ``submitted_from`` / ``submitted_to``:
    only the rankings submitted on or between these days (``YYYY-MM-DD``, UTC, inclusive). Every argument is
    checked before anything is written: a bad one is a StoreError and nothing is exported."""
    if isinstance(min_annotators, bool) or not isinstance(min_annotators, int) or min_annotators < 1:
        raise StoreError(f"min_annotators={min_annotators!r}: expected a whole number >= 1")
    if none_acceptable not in ("keep", "drop"):
        raise StoreError(f"none_acceptable={none_acceptable!r}: expected keep or drop")
    kind_list, weight_of = check_kind_weights(kinds, weights)
    first_day, last_day = submission_period(submitted_from, submitted_to)
    name_list = store.check_annotator_names(annotator_names)
    out = Path(out_dir)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise StoreError(f"cannot create the export folder {out}: {err.strerror or err}") from None
    started = time.time()
    # recorded BEFORE the rankings are read: from this moment no ranking read here can be withdrawn by its
    # annotator (Store.withdraw_ranking locks what an export may hold, even one that fails later)
    store.audit(actor, "export_started", {"out_dir": str(out)})
    selected = store.task_rankings(sources=sources, kinds=kind_list, annotator_names=name_list,
                                   submitted_from=first_day, submitted_to=last_day)
    replaced = 0
    task_rankings: list[TaskRankings] = []
    for task in selected:
        if not mix_kinds:
            task, dropped = human_first(task)
            replaced += dropped
        if len(task.rankings) >= min_annotators:  # counted after a human ranking replaced the derived ones
            task_rankings.append(task)
    rows, stats = preference_rows(task_rankings, none_acceptable, system_prompt, weight_of)
    summary = ExportSummary(
        out_dir=str(out), tasks=len(task_rankings), tasks_with_pairs=stats["tasks_with_pairs"],
        rankings=sum(len(t.rankings) for t in task_rankings),
        rankings_none_acceptable=sum(r.none_acceptable for t in task_rankings for r in t.rankings),
        pairs=len(rows), pairs_dropped_no_majority=stats["no_majority"], min_annotators=min_annotators,
        none_acceptable=none_acceptable, kinds=kind_list, sources=list(sources) if sources else None,
        annotators=name_list, submitted_from=first_day.isoformat() if first_day else None,
        submitted_to=last_day.isoformat() if last_day else None, weights=weight_of, mix_kinds=mix_kinds,
        rankings_replaced=replaced,
        pairs_by_origin=dict(sorted(Counter(row["meta"]["origin"] for row in rows).items())))
    jsonl = out / "preferences.jsonl"
    write_jsonl(jsonl, rows)
    summary.files["preferences"] = str(jsonl)
    write_jsonl(out / "rankings.jsonl", ranking_records(selected))  # every selected ranking, replaced ones too
    summary.files["rankings"] = str(out / "rankings.jsonl")
    if save_dataset:
        summary.files["dataset"] = str(_save_dataset(rows, out / "dataset"))
    feedback_summary = None
    if feedback:
        fb_rows, feedback_summary = feedback_pairs(store, redact=redact_feedback, system_prompt=system_prompt)
        write_jsonl(out / "feedback_pairs.jsonl", fb_rows)
        summary.feedback_pairs = len(fb_rows)
        summary.files["feedback_pairs"] = str(out / "feedback_pairs.jsonl")
    report = {**asdict(summary), "store": store.safe_url, "system_prompt": system_prompt,
              "exported_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
              "wall_time_s": round(time.time() - started, 3), "feedback": feedback_summary,
              "rule": "votes per ranking for the better-ranked candidate (ties: no vote); net votes across "
                      "annotators decide the direction (0: no pair); margin = mean rank gap of the majority votes; "
                      f"none-acceptable rankings: {none_acceptable}; kinds: {', '.join(kind_list)} (weights "
                      f"{', '.join(f'{k}={w:g}' for k, w in weight_of.items())}); "
                      + ("human and derived rankings of a task all vote" if mix_kinds else
                         "a task's human rankings replace its derived ones")}
    write_text_atomic(out / "export.json", json.dumps(report, indent=2, default=str) + "\n")
    summary.files["summary"] = str(out / "export.json")
    store.audit(actor, "export", {"out_dir": str(out), "pairs": len(rows), "tasks": len(task_rankings),
                                  "min_annotators": min_annotators, "none_acceptable": none_acceptable,
                                  "kinds": kind_list, "weights": weight_of, "mix_kinds": mix_kinds,
                                  "sources": summary.sources, "annotators": name_list,
                                  "submitted_from": summary.submitted_from, "submitted_to": summary.submitted_to,
                                  "feedback_pairs": summary.feedback_pairs, "feedback_redacted": bool(redact_feedback)})
    logger.info("exported %d preference pairs from %d tasks to %s", len(rows), len(task_rankings), out)
    return summary


def _save_dataset(rows: list[dict[str, Any]], path: Path) -> Path:
    import shutil

    from datasets import Dataset

    tmp = path.with_name(path.name + ".tmp")
    if tmp.exists():
        shutil.rmtree(tmp)
    if rows:
        dataset = Dataset.from_list(rows)
    else:  # an empty export keeps the columns so a trainer fails with "no rows", not "no column"
        dataset = Dataset.from_dict({"prompt": [], "chosen": [], "rejected": [], "margin": [], "meta": []})
    dataset.save_to_disk(str(tmp))
    if path.exists():
        shutil.rmtree(path)
    tmp.rename(path)
    return path


# --------------------------------------------------------------------------- import


def import_ranking_file(store: Store, path: str | Path, *, source: str | None = None, k: int = 0,
                        actor: str = "cli") -> ImportResult:
    """RankingRecords from a JSONL file (``shipped:acord_rankings_train.jsonl`` works, and the ``rankings.jsonl``
    of an export) into the store; each annotator keeps its kind (``annotator_kind``: human or derived)."""
    file = resolve_data_path(path)
    records = read_jsonl(file, RankingRecord)
    stored_sources = [(r.meta or {}).get("store_source") for r in records]
    if source is None and all(isinstance(s, str) and s for s in stored_sources):
        # An export's rankings.jsonl: every task goes back to the source it had in the store it came from.
        records = [r.model_copy(update={"meta": {k_: v for k_, v in (r.meta or {}).items() if k_ != "store_source"}})
                   for r in records]
        return store.import_rankings(records, source=file.stem, k=k, actor=actor,
                                     record_sources=[str(s) for s in stored_sources])
    if source is None:
        sources = {(r.meta or {}).get("source") for r in records}
        source = sources.pop() if len(sources) == 1 and None not in sources else file.stem
    return store.import_rankings(records, source=str(source), k=k, actor=actor)


class TaskFileRecord(BaseModel):
    """One line of a task file for ``prefs add-tasks``: a prompt and the candidate answers to rank."""

    model_config = ConfigDict(extra="forbid")
    prompt_id: str = Field(min_length=1, max_length=200)
    prompt: Text
    responses: list[str] = Field(min_length=2)
    models: list[str | None] | None = None    # who wrote each response (same length as responses)
    meta: dict[str, Any] | None = None        # excerpt, question, generation settings...
    k: int | None = Field(default=None, ge=0)


def add_tasks_file(store: Store, path: str | Path, *, k: int = 3, source: str = "app") -> tuple[int, int]:
    """Add every task of a JSONL task file (skipping prompt_ids already in the store): (added, skipped)."""
    records = read_jsonl(resolve_data_path(path), TaskFileRecord)
    problems = [f"{path}: record {i}: models has {len(r.models)} entries for {len(r.responses)} responses"
                for i, r in enumerate(records, start=1) if r.models is not None and len(r.models) != len(r.responses)]
    if problems:
        raise DataError("\n".join(problems), problems)
    before = store.task_count()
    for record in records:
        prompt = [m.model_dump() for m in record.prompt] if isinstance(record.prompt, list) else record.prompt
        cands = [{"text": t, "model": (record.models[i] if record.models else None)}
                 for i, t in enumerate(record.responses)]
        store.add_task(record.prompt_id, prompt, cands, record.meta, record.k if record.k is not None else k,
                       source=source, exist_ok=True)
    added = store.task_count() - before
    return added, len(records) - added
