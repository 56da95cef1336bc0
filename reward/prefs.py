"""Preference export (store rankings -> TRL preference pairs) and import (RankingRecords -> store).

    lexalign prefs export --store URL --out DIR [--min-annotators N] [--none-acceptable keep|drop]
    lexalign prefs import FILE.jsonl --store URL [--source NAME] [--k N]
    lexalign prefs add-tasks FILE.jsonl --store URL [--k N]

## How rankings become pairs

For every task with at least ``--min-annotators`` rankings (default 1):

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
   ``net = votes(a better) - votes(b better)``. ``net > 0`` gives the pair chosen = a, rejected = b;
   ``net < 0`` the reverse; ``net == 0`` (no votes, all ties, or an even split) gives **no pair**.
   Annotators who tied a and b do not vote; they are counted in ``meta.ties``.
4. **Margin** = the mean rank gap over the votes in the majority direction (>= 1). Example: three
   annotators rank a/b as 1/3, 1/2 and 2/1 -> votes 2:1 for a, gaps 2 and 1 -> margin 1.5.

Each line of ``preferences.jsonl`` is TRL's conversational preference format (the same chat format as the
SFT data): ``prompt`` = chat messages ending with the user turn (a string prompt becomes [system, user]
with the SFT system prompt, as in ``data/pairs.py``), ``chosen`` / ``rejected`` = [assistant message],
``margin``, and ``meta`` = {task_id, prompt_id, source, chosen_index, rejected_index, votes_for,
votes_against, ties, rankings, none_acceptable_votes} — ``prompt_id`` lets a trainer split by prompt so
no prompt lands in both train and eval. The same rows are saved as a Hugging Face ``datasets`` folder
(``DIR/dataset``, ``datasets.load_from_disk``), and ``DIR/export.json`` records the counts and the rule.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from lexalign.data import prompts
from lexalign.data.jsonl import DataError, read_jsonl, write_jsonl, write_text_atomic
from lexalign.data.paths import resolve_data_path
from lexalign.data.schemas import Text
from lexalign.data.store import ImportResult, Store, StoreError, TaskRankings

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
    feedback_pairs: int = 0
    files: dict[str, str] = field(default_factory=dict)


def aggregate_pairs(task: TaskRankings, none_acceptable: NoneAcceptable = "keep") -> tuple[list[AggregatedPair], int]:
    """The pairs of one task under the rule in the module docstring; also returns how many had no majority."""
    n = len(task.candidates)
    pairs: list[AggregatedPair] = []
    no_majority = 0
    for a in range(n):
        for b in range(a + 1, n):
            gaps_a: list[int] = []   # votes for a over b, with their rank gaps
            gaps_b: list[int] = []
            na_a = na_b = ties = 0
            for ranking in task.rankings:
                if ranking.none_acceptable and none_acceptable == "drop":
                    continue
                ra, rb = ranking.ranks[a], ranking.ranks[b]
                if ra == rb:
                    ties += 1
                elif ra < rb:
                    gaps_a.append(rb - ra)
                    na_a += ranking.none_acceptable
                else:
                    gaps_b.append(ra - rb)
                    na_b += ranking.none_acceptable
            net = len(gaps_a) - len(gaps_b)
            if net == 0:
                if gaps_a or gaps_b:
                    no_majority += 1
                continue
            if net > 0:
                pairs.append(AggregatedPair(a, b, sum(gaps_a) / len(gaps_a), len(gaps_a), len(gaps_b), ties, na_a))
            else:
                pairs.append(AggregatedPair(b, a, sum(gaps_b) / len(gaps_b), len(gaps_b), len(gaps_a), ties, na_b))
    return pairs, no_majority


def prompt_messages(prompt: str | list[dict[str, str]], system_prompt: str | None) -> list[dict[str, str]]:
    """The chat messages of a stored prompt; a string becomes [system, user] like the SFT data."""
    if isinstance(prompt, str):
        system = [{"role": "system", "content": system_prompt}] if system_prompt else []
        return system + [{"role": "user", "content": prompt}]
    return [{"role": m["role"], "content": m["content"]} for m in prompt]


def preference_rows(task_rankings: Sequence[TaskRankings], none_acceptable: NoneAcceptable = "keep",
                    system_prompt: str | None = prompts.SYSTEM_PROMPT) -> tuple[list[dict[str, Any]], dict[str, int]]:
    """TRL conversational preference rows for these tasks, plus counts for the summary."""
    from lexalign.data.schemas import PreferencePair

    rows: list[dict[str, Any]] = []
    stats = {"tasks_with_pairs": 0, "no_majority": 0, "identical_texts": 0}
    for task in task_rankings:
        pairs, no_majority = aggregate_pairs(task, none_acceptable)
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
                              "model": (item.get("meta") or {}).get("model")}})
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


def export_preferences(store: Store, out_dir: str | Path, *, min_annotators: int = 1,
                       none_acceptable: NoneAcceptable = "keep", system_prompt: str | None = prompts.SYSTEM_PROMPT,
                       sources: Sequence[str] | None = None, actor: str = "cli", save_dataset: bool = True,
                       feedback: bool = True, redact_feedback: bool = True) -> ExportSummary:
    """Write ``preferences.jsonl``, the ``dataset/`` folder and ``export.json`` to ``out_dir``; with ``feedback``
    also ``feedback_pairs.jsonl`` (chat feedback, PII-redacted unless ``redact_feedback=False``)."""
    if isinstance(min_annotators, bool) or not isinstance(min_annotators, int) or min_annotators < 1:
        raise StoreError(f"min_annotators={min_annotators!r}: expected a whole number >= 1")
    if none_acceptable not in ("keep", "drop"):
        raise StoreError(f"none_acceptable={none_acceptable!r}: expected keep or drop")
    out = Path(out_dir)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise StoreError(f"cannot create the export folder {out}: {err.strerror or err}") from None
    started = time.time()
    task_rankings = store.task_rankings(min_annotators=min_annotators, sources=sources)
    rows, stats = preference_rows(task_rankings, none_acceptable, system_prompt)
    summary = ExportSummary(
        out_dir=str(out), tasks=len(task_rankings), tasks_with_pairs=stats["tasks_with_pairs"],
        rankings=sum(len(t.rankings) for t in task_rankings),
        rankings_none_acceptable=sum(r.none_acceptable for t in task_rankings for r in t.rankings),
        pairs=len(rows), pairs_dropped_no_majority=stats["no_majority"], min_annotators=min_annotators,
        none_acceptable=none_acceptable)
    jsonl = out / "preferences.jsonl"
    write_jsonl(jsonl, rows)
    summary.files["preferences"] = str(jsonl)
    if save_dataset:
        summary.files["dataset"] = str(_save_dataset(rows, out / "dataset"))
    feedback_summary = None
    if feedback:
        fb_rows, feedback_summary = feedback_pairs(store, redact=redact_feedback, system_prompt=system_prompt)
        write_jsonl(out / "feedback_pairs.jsonl", fb_rows)
        summary.feedback_pairs = len(fb_rows)
        summary.files["feedback_pairs"] = str(out / "feedback_pairs.jsonl")
    report = {**asdict(summary), "store": store.safe_url, "sources": list(sources) if sources else None,
              "system_prompt": system_prompt, "exported_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
              "wall_time_s": round(time.time() - started, 3), "feedback": feedback_summary,
              "rule": "votes per ranking for the better-ranked candidate (ties: no vote); net votes across "
                      "annotators decide the direction (0: no pair); margin = mean rank gap of the majority votes; "
                      f"none-acceptable rankings: {none_acceptable}"}
    write_text_atomic(out / "export.json", json.dumps(report, indent=2, default=str) + "\n")
    summary.files["summary"] = str(out / "export.json")
    store.audit(actor, "export", {"out_dir": str(out), "pairs": len(rows), "tasks": len(task_rankings),
                                  "min_annotators": min_annotators, "none_acceptable": none_acceptable,
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
    """RankingRecords from a JSONL file (``shipped:acord_rankings_train.jsonl`` works) into the store."""
    from lexalign.data.schemas import RankingRecord

    file = resolve_data_path(path)
    records = read_jsonl(file, RankingRecord)
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
