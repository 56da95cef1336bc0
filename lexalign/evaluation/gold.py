"""Gold-derived rankings: the sampled answers of a labelled prompt, ranked by the lawyers' label.

    lexalign prefs rank-gold --store URL [--source NAME ...]
    lexalign candidates ... rank_gold=true          (ranks the tasks it has just added)

Most shipped prompts carry labels written by lawyers (CUAD's clause spans and presence, CUAD's normalised
answers, CLAUDETTE's fair/unfair verdicts and categories), in the chat record's ``meta``, which ``lexalign
candidates`` keeps with every ranking task. The N candidate answers of such a task are ranked by how well each
agrees with the label, with the task's own metric exactly as ``lexalign eval`` computes it per item (the same
parsers and per-item scores of ``evaluation.scoring``; nothing is re-implemented here):

    extract    clause absent: "Not present." 1, any quote 0; clause present: span F1 of the quoted lines
               against the gold spans (0..1; "Not present." scores 0), halved when no line is a verbatim quote
               of the excerpt (a misquote: the clause's words count, as in eval's span F1, but the quote
               cannot be found in the contract, so eval counts its verdict wrong)
    presence   Yes/No right 1, wrong 0
    normalize  token F1 against the normalised answer (an exact match is 1)
    unfair     verdict wrong 0; "Fair" for a fair clause 1; "Potentially unfair" for an unfair one
               0.5 + 0.5 x F1 of the named categories against the gold categories

An answer in none of the task's answer formats (unparseable) ranks below every parsed answer, a wrong one
included: the format is the first thing the model must learn. So does an answer the generator cut at its token
limit (``meta.answer_finish_reasons`` "length", kept by ``lexalign candidates``): the model did not end its turn,
which eval's stop rate counts against it, and a pair preferring such a quote for its overlap teaches longer quotes
that run past the limit (bench/RESULTS.md, 2026-11-29). For extraction the format is "Not present." or
lines in quotation marks: a *misquote* (quoted, but not verbatim in the excerpt) is in the format, and since eval
scores its words against the clause it ranks above "Not present." when it overlaps a present clause (ranking it
below, as unparseable, taught the policy to answer "Not present." to clauses it quotes imperfectly). Higher score = better rank, equal scores share a rank (dense: 1, 2, 2, 3). When no answer earns any credit (all score 0 or are unparseable) the ranking is
marked "none acceptable". The ranking is stored as annotator ``gold:<corpus>`` (the label's ``meta.source``,
e.g. ``gold:cuad``) of kind ``derived``, with every answer's score in its rationale. The tasks stay offered to
lawyers in the ranking app; at export a human ranking of a task replaces the derived one (``reward/prefs.py``).

Which tasks: every task no ``gold:`` annotator has ranked yet. A task whose meta has no label fields (a prompt
of your own, a free question) is left for humans and counted. A task whose labels cannot be read (a wrong type,
an unknown category, no meta.task or meta.source) is an error naming the task, its prompt_id and the prompts
file:line it came from, and nothing is stored. Tasks from documents of the shipped held-out test split are never
ranked by gold (a test label must not become training signal); they are counted as held out.
"""

from __future__ import annotations

import json
import logging
import math
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from typing import TYPE_CHECKING, Any

from lexalign.data.jsonl import DataError
from lexalign.evaluation.tasks import ChatItem, chat_gold

if TYPE_CHECKING:
    from lexalign.data.store import Store, TaskRankings

logger = logging.getLogger(__name__)

GOLD_METHOD = "gold"
GOLD_PREFIX = f"{GOLD_METHOD}:"
# The meta fields that hold a label (chat_gold reads them per task). A task with none of them has no label.
LABEL_KEYS = ("answers", "present", "normalized", "labels", "unfair")
HELD_OUT_FILE = "shipped:sft_test.jsonl"
# The share of its span F1 a misquote of a present clause keeps (no line verbatim in the excerpt): below a verbatim
# quote of the same overlap, above "Not present." (0) when it overlaps the clause at all.
MISQUOTE_CREDIT = 0.5
METRIC_NAMES = {"extract": "span F1 / Not present.", "presence": "Yes/No correct", "normalize": "token F1",
                "unfair": "fair/unfair verdict and categories F1"}

Messages = list[dict[str, str]]


def has_labels(meta: Mapping[str, Any] | None) -> bool:
    """The task's meta holds at least one label field (it may still be unreadable: see ``read_label``)."""
    return isinstance(meta, Mapping) and any(key in meta for key in LABEL_KEYS)


def describe_task(prompt_id: str, meta: Mapping[str, Any] | None, task_id: int | None = None) -> str:
    """'task 7 (prompt_id 'm/abc', prompts.jsonl:12)': what an error names, down to the prompts file line."""
    parts = [f"prompt_id {prompt_id!r}"]
    meta = meta or {}
    if meta.get("prompts_file") and meta.get("prompts_line"):
        parts.append(f"{meta['prompts_file']}:{meta['prompts_line']}")
    return f"{'task ' + str(task_id) + ' ' if task_id is not None else ''}({', '.join(parts)})"


def read_label(meta: Mapping[str, Any]) -> tuple[str, str, dict[str, Any], list[str]]:
    """(task, gold annotator name, gold label, problems) of a labelled task's meta; problems say what to fix."""
    from lexalign.data.schemas import check_derived_name

    task, gold, problems = chat_gold(dict(meta))
    corpus = meta.get("source")
    annotator = f"{GOLD_PREFIX}{corpus}"
    if not isinstance(corpus, str) or not corpus.strip():
        problems.append("meta.source: expected the corpus the label comes from (e.g. cuad); the ranking is stored "
                        "as annotator gold:<corpus>")
    else:
        try:
            check_derived_name(annotator)
        except ValueError as err:
            problems.append(f"meta.source {corpus!r} cannot name the gold annotator: {err}")
    return str(task), annotator, gold, problems


# --------------------------------------------------------------------------- scoring


def is_quoted(answer: str) -> bool:
    """The answer opens with a quotation mark: the extraction answer format (a quoted span may hold line breaks)."""
    return answer.strip()[:1] in ('"', "“")


def answer_scores(task: str, gold: dict[str, Any], messages: Messages, answers: Sequence[str]) -> list[float | None]:
    """Each answer's agreement with the label, 0..1 (None: not in the task's answer format), from the per-item
    scores that ``lexalign eval`` computes for the task (each answer is scored as one item of that task)."""
    from lexalign.data.prompts import UNFAIR_NAMES
    from lexalign.evaluation import scoring
    from lexalign.evaluation.backends import Generation

    items = [ChatItem(f"answer {i + 1}", task, messages, "", gold) for i in range(len(answers))]
    generated = {item.id: Generation(text, "stop", None, 0) for item, text in zip(items, answers)}
    if task == "extract":
        cols = scoring.score_extract(items, generated)["_items"].columns
        # span_f1 is NaN when the clause is absent (no gold spans): then the verdict ("Not present.") is the metric
        scores: list[float | None] = []
        for text, unparsed, f1, correct in zip(answers, cols["unparsed"], cols["span_f1"], cols["correct"]):
            if unparsed and not is_quoted(text):
                scores.append(None)    # neither "Not present." nor quoted lines: no answer format
            elif math.isnan(f1):
                scores.append(float(correct))
            else:
                scores.append(float(f1) * (MISQUOTE_CREDIT if unparsed else 1.0))
        return scores
    if task == "presence":
        cols = scoring.score_presence(items, generated)["_items"].columns
        return [None if u else float(c) for u, c in zip(cols["unparsed"], cols["correct"])]
    if task == "normalize":
        return [float(v) for v in scoring.score_normalize(items, generated)["_items"].columns["token_f1"]]
    if task == "unfair":
        scores, _ = scoring.score_unfair(items, generated)
        cols = scores["_items"].columns
        result: list[float | None] = []
        for i in range(len(items)):
            if cols["unparsed"][i]:
                result.append(None)
            elif not cols["correct"][i]:
                result.append(0.0)
            elif not gold["unfair"]:
                result.append(1.0)
            else:  # right verdict: half the credit, the other half for naming the right categories (item F1)
                tp, fp, fn = (sum(cols[f"{name}|{part}"][i] for name in UNFAIR_NAMES) for part in ("tp", "fp", "fn"))
                f1 = 2 * tp / (2 * tp + fp + fn) if 2 * tp + fp + fn else 1.0
                result.append(0.5 + 0.5 * float(f1))
        return result
    raise ValueError(f"no gold scorer for task {task!r}")


@dataclass(frozen=True)
class GoldRanking:
    annotator: str                      # gold:<corpus>
    task: str
    scores: tuple[float | None, ...]    # None: unparseable, or cut at the token limit
    ranks: tuple[int, ...]              # 1 = best, ties share a rank, dense
    none_acceptable: bool
    cut: tuple[bool, ...] = ()          # per answer: cut at the generator's token limit

    def rationale(self) -> str:
        def shown_score(i: int, score: float | None) -> str:
            if i < len(self.cut) and self.cut[i]:
                return "cut at the token limit"
            return "unparseable" if score is None else f"{score:.2f}"

        shown = "; ".join(f"answer {i + 1}: {shown_score(i, s)}" for i, s in enumerate(self.scores))
        return (f"Derived from the lawyers' label ({self.annotator}, task {self.task}, metric: "
                f"{METRIC_NAMES[self.task]}). {shown}")


def rank_by_label(task: str, annotator: str, gold: dict[str, Any], messages: Messages,
                  answers: Sequence[str], finish_reasons: Sequence[str] | None = None) -> GoldRanking:
    """Rank ``answers`` by their scores against the label (see the module docstring); ``finish_reasons`` (one per
    answer, as the generator reported them) ranks every answer cut at the token limit ("length") as unparseable."""
    from lexalign.data.pairs import dense_ranks

    cut = tuple(reason == "length" for reason in finish_reasons) if finish_reasons is not None else ()
    if cut and len(cut) != len(answers):
        raise ValueError(f"{len(cut)} finish reasons for {len(answers)} answers")
    # Rounded so that two answers the metric cannot tell apart tie instead of differing in the 15th digit.
    scores = [None if s is None or (cut and cut[i]) else round(s, 6)
              for i, s in enumerate(answer_scores(task, gold, messages, answers))]
    ranks = dense_ranks([-1.0 if s is None else s for s in scores])  # unparseable below every parsed answer
    none_acceptable = all(s is None or s <= 0 for s in scores)
    return GoldRanking(annotator, task, tuple(scores), tuple(ranks), none_acceptable, cut)


def task_messages(prompt: str | Messages) -> Messages:
    return [{"role": "user", "content": prompt}] if isinstance(prompt, str) else list(prompt)


# --------------------------------------------------------------------------- held-out documents


@lru_cache(maxsize=1)
def held_out_documents() -> frozenset[tuple[str, str]]:
    """(source, doc_id) of every document in the shipped held-out test split."""
    from lexalign.data.jsonl import read_text_lines
    from lexalign.data.paths import resolve_data_path

    path = resolve_data_path(HELD_OUT_FILE)
    if not path.is_file():
        return frozenset()
    docs = set()
    for line in read_text_lines(path):
        if line.strip():
            meta = json.loads(line).get("meta") or {}
            if meta.get("doc_id") is not None:
                docs.add((str(meta.get("source")), str(meta["doc_id"])))
    return frozenset(docs)


def is_held_out(meta: Mapping[str, Any]) -> bool:
    """The task's label comes from a document of the shipped test split (or from the test prompts file)."""
    from lexalign.data.paths import resolve_data_path

    prompts_file = meta.get("prompts_file")
    if isinstance(prompts_file, str) and prompts_file and (
            resolve_data_path(prompts_file).resolve() == resolve_data_path(HELD_OUT_FILE).resolve()):
        return True
    doc = meta.get("doc_id")
    return doc is not None and (str(meta.get("source")), str(doc)) in held_out_documents()


# --------------------------------------------------------------------------- the store


@dataclass
class GoldSummary:
    considered: int = 0                 # tasks without a gold ranking yet
    ranked: int = 0
    none_acceptable: int = 0
    no_labels: int = 0                  # left for humans
    held_out: int = 0                   # test-split documents: never ranked by gold
    duplicates: int = 0
    by_annotator: dict[str, int] = field(default_factory=dict)
    left_for_humans: list[str] = field(default_factory=list)   # prompt_ids (the first 20)

    def describe(self) -> str:
        who = ", ".join(f"{name} {n}" for name, n in sorted(self.by_annotator.items())) or "none"
        return (f"{self.ranked} tasks ranked by their gold labels ({who}; {self.none_acceptable} with no acceptable "
                f"answer) out of {self.considered} not yet gold-ranked; {self.no_labels} without labels left for "
                f"human annotators, {self.held_out} from held-out test documents not ranked")


def finish_reason_problems(meta: Mapping[str, Any], candidates: int) -> list[str]:
    """What is wrong with a task's ``meta.answer_finish_reasons`` (absent is fine: every answer counts as ended)."""
    reasons = meta.get("answer_finish_reasons")
    if reasons is None or (isinstance(reasons, list) and len(reasons) == candidates
                           and all(isinstance(r, str) for r in reasons)):
        return []
    return [f"meta.answer_finish_reasons: expected one finish reason (a string such as 'stop' or 'length') per "
            f"candidate answer ({candidates}), got {reasons!r}"[:300]]


def gold_rankings(task_list: Iterable[TaskRankings], summary: GoldSummary) -> list[tuple[TaskRankings, GoldRanking]]:
    """The gold ranking of every labelled task; DataError listing every unreadable label (nothing is ranked)."""
    ranked: list[tuple[TaskRankings, GoldRanking]] = []
    problems: list[str] = []
    bad_tasks = 0
    for task in task_list:
        summary.considered += 1
        if not has_labels(task.meta):
            summary.no_labels += 1
            if len(summary.left_for_humans) < 20:
                summary.left_for_humans.append(task.prompt_id)
            continue
        name, annotator, gold, found = read_label(task.meta)
        found += finish_reason_problems(task.meta, len(task.candidates))
        where = describe_task(task.prompt_id, task.meta, task.task_id)
        if found:
            problems.extend(f"{where}: {p}" for p in found)
            bad_tasks += 1
            continue
        if is_held_out(task.meta):
            summary.held_out += 1
            logger.warning("%s: from a held-out test document; not ranked by its gold label", where)
            continue
        # None for tasks added before the reasons were kept, or by hand: every answer counts as ended
        ranked.append((task, rank_by_label(name, annotator, gold, task_messages(task.prompt),
                                           [c.text for c in task.candidates], task.meta.get("answer_finish_reasons"))))
    if problems:
        shown = "\n".join(f"  {p}" for p in problems[:50])
        more = f"\n  ... and {len(problems) - 50} more" if len(problems) > 50 else ""
        raise DataError(f"{len(problems)} problem{'s' * (len(problems) != 1)} in the labels of {bad_tasks} "
                        f"task{'s' * (bad_tasks != 1)} that the gold scorer cannot read; nothing was ranked (fix the "
                        f"prompts file and add the tasks again, or rank them by hand):\n{shown}{more}", problems)
    return ranked


def rank_tasks_by_gold(store: Store, *, sources: Sequence[str] | None = None, task_ids: Iterable[int] | None = None,
                       actor: str = "cli") -> GoldSummary:
    """Rank every task of the store that has labels and no gold ranking yet (optionally only these sources or
    task ids) and store the rankings as derived annotators ``gold:<corpus>``, in one transaction."""
    from lexalign.data.store import DerivedRanking

    summary = GoldSummary()
    ranked = gold_rankings(store.tasks_without_ranking(GOLD_PREFIX, sources=sources, task_ids=task_ids), summary)
    result = store.add_derived_rankings(
        [DerivedRanking(task.task_id, g.annotator, g.ranks, g.none_acceptable, g.rationale()) for task, g in ranked],
        actor=actor) if ranked else None
    summary.ranked = result.rankings_added if result else 0
    summary.duplicates = result.duplicates if result else 0
    summary.none_acceptable = sum(g.none_acceptable for _, g in ranked)
    summary.by_annotator = dict(Counter(g.annotator for _, g in ranked))
    logger.info("%s", summary.describe())
    return summary
