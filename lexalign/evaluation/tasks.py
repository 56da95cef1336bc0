"""Evaluation sets: reading the files, checking their gold labels, sampling, prompts and answer parsing.

A file's kind is told by its first record (``messages`` -> chat records, ``responses`` + ``ranks`` ->
RankingRecords, ``chosen`` + ``rejected`` -> PreferencePairs); every line is then validated against that
schema and its gold fields, and any bad line is reported as ``file:line: problem`` before a model loads.
The formats are documented in ``lexalign.evaluation`` (the package docstring).
"""

from __future__ import annotations

import hashlib
import json
import re
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lexalign.data.jsonl import DataError, read_jsonl, read_text_lines
from lexalign.data.prompts import NO, SYSTEM_PROMPT, UNFAIR_CATEGORIES, UNFAIR_NAMES, YES, excerpt_of

GENERATION_TASKS = ("extract", "presence", "normalize", "unfair")
ALL_TASKS = GENERATION_TASKS + ("ranking", "preferences", "winrate", "behaviour")

Messages = list[dict[str, str]]


@dataclass
class ChatItem:
    """One generation item: the prompt (system + user turns), the task and its gold labels."""

    id: str                       # <file name>#<content hash> (see item_ids); errors name file:line
    task: str                     # extract | presence | normalize | unfair
    messages: Messages            # the conversation up to (not including) the answer
    reference: str                # the record's own assistant answer (for the predictions file)
    gold: dict[str, Any]          # task-specific: answers/present/category, normalized, labels/unfair

    @property
    def question(self) -> str:
        """The last user message (the request and, for the shipped data, the excerpt after it)."""
        return next((m["content"] for m in reversed(self.messages) if m.get("role") == "user"), "")

    @property
    def excerpt(self) -> str:
        """The contract text the answer must quote from: the part after the excerpt marker of the shipped prompts,
        or the whole last user message for prompts written otherwise."""
        try:
            return excerpt_of(self.question)
        except ValueError:
            return self.question


@dataclass
class RankingItem:
    id: str
    messages: Messages
    responses: list[str]
    relevance: list[float]        # higher = better (lawyers' stars, or derived from ranks)
    meta: dict[str, Any] = field(default_factory=dict)


@dataclass
class PreferenceItem:
    id: str
    messages: Messages
    chosen: str
    rejected: str


@dataclass
class EvalData:
    chat: list[ChatItem] = field(default_factory=list)
    rankings: list[RankingItem] = field(default_factory=list)
    preferences: list[PreferenceItem] = field(default_factory=list)
    files: dict[str, str] = field(default_factory=dict)   # path -> kind

    def by_task(self, task: str) -> list[ChatItem]:
        return [item for item in self.chat if item.task == task]

    def counts(self) -> dict[str, int]:
        found = {task: len(self.by_task(task)) for task in GENERATION_TASKS}
        found["ranking"] = len(self.rankings)
        found["preferences"] = len(self.preferences)
        return found


# --------------------------------------------------------------------------- files

KINDS = {"chat": "ChatRecord", "rankings": "RankingRecord", "preferences": "PreferencePair"}


def default_files(split: str) -> list[str]:
    """The shipped held-out data of one split: chat records, lawyers' rankings, preference pairs."""
    return [f"shipped:sft_{split}.jsonl", f"shipped:acord_rankings_{split}.jsonl", f"shipped:acord_pairs_{split}.jsonl"]


def _kind_of(data: dict[str, Any]) -> str | None:
    if "messages" in data:
        return "chat"
    if "responses" in data and "ranks" in data:
        return "rankings"
    if "chosen" in data and "rejected" in data:
        return "preferences"
    return None


def detect_kind(path: Path) -> str:
    """The kind of a JSONL file from its first JSON object line; DataError (file:line) if it cannot be told."""
    for number, line in enumerate(read_text_lines(path), start=1):
        if not line.strip():
            continue
        try:
            data = json.loads(line)
        except json.JSONDecodeError as err:
            raise DataError(f"{path}:{number}: not valid JSON ({err.msg} at column {err.colno}); "
                            "expected one JSON object per line") from None
        kind = _kind_of(data) if isinstance(data, dict) else None
        if kind is None:
            raise DataError(f"{path}:{number}: cannot tell what this file holds: expected chat records "
                            "({\"messages\": [...], \"meta\": {\"task\": ...}}), RankingRecords "
                            "({\"prompt\", \"responses\", \"ranks\", ...}) or PreferencePairs "
                            "({\"prompt\", \"chosen\", \"rejected\"})")
        return kind
    raise DataError(f"{path}: empty file; expected one JSON record per line")


def _record_lines(path: Path) -> list[int]:
    """Line numbers of the non-blank lines (read_jsonl returns one record per non-blank line, in order)."""
    return [n for n, line in enumerate(read_text_lines(path), start=1) if line.strip()]


def _content(text: Any) -> str:
    """A string, or the joined contents of a list of chat messages."""
    if isinstance(text, str):
        return text
    return "\n".join(m.content for m in text)


def _prompt_messages(prompt: Any, system_prompt: str | None) -> Messages:
    """A string prompt becomes [system, user] (as in training); chat messages are used as given."""
    if isinstance(prompt, str):
        messages = [{"role": "system", "content": system_prompt}] if system_prompt else []
        return messages + [{"role": "user", "content": prompt}]
    return [{"role": m.role, "content": m.content} for m in prompt]


_UNFAIR_CODES = {code: name for code, (name, _) in UNFAIR_CATEGORIES.items()}


def _check_strings(value: Any) -> bool:
    return isinstance(value, list) and all(isinstance(v, str) for v in value)


def chat_gold(meta: dict[str, Any] | None) -> tuple[str | None, dict[str, Any], list[str]]:
    """(task, gold, problems) of a chat record's ``meta``."""
    if not isinstance(meta, dict) or "task" not in meta:
        return None, {}, [f"meta.task missing; evaluation needs it: one of {', '.join(GENERATION_TASKS)}"]
    task = meta["task"]
    problems: list[str] = []
    gold: dict[str, Any] = {}
    if task == "extract":
        answers = meta.get("answers")
        if not _check_strings(answers):
            problems.append("meta.answers: expected a list of the gold clause spans (strings; [] when absent)")
            answers = []
        present = meta.get("present", bool(answers))
        if not isinstance(present, bool):
            problems.append("meta.present: expected true or false")
        elif present and not answers:
            problems.append("meta.present is true but meta.answers is empty; give the gold spans")
        gold = {"answers": [a for a in answers if a.strip()], "present": bool(present),
                "category": meta.get("category")}
    elif task == "presence":
        present = meta.get("present")
        if not isinstance(present, bool):
            problems.append("meta.present: expected true or false (is the clause in the excerpt?)")
        gold = {"present": bool(present), "category": meta.get("category")}
    elif task == "normalize":
        normalized = meta.get("normalized")
        if not isinstance(normalized, str) or not normalized.strip():
            problems.append("meta.normalized: expected the gold normalised answer (a non-empty string)")
        gold = {"normalized": normalized or "", "category": meta.get("category")}
    elif task == "unfair":
        labels = meta.get("labels", [])
        if not _check_strings(labels):
            problems.append(f"meta.labels: expected a list of category names ({', '.join(UNFAIR_NAMES)})")
            labels = []
        names = [_UNFAIR_CODES.get(label, label) for label in labels]
        unknown = [label for label in names if label not in UNFAIR_NAMES]
        if unknown:
            problems.append(f"meta.labels: unknown categor{'ies' if len(unknown) > 1 else 'y'} "
                            f"{', '.join(map(repr, unknown))}; expected names from {', '.join(UNFAIR_NAMES)}")
        unfair = meta.get("unfair", bool(names))
        if not isinstance(unfair, bool):
            problems.append("meta.unfair: expected true or false")
        elif names and not unfair:
            problems.append("meta.unfair is false but meta.labels names categories")
        gold = {"labels": sorted(set(names)), "unfair": bool(unfair)}
    else:
        problems.append(f"meta.task = {task!r}: expected one of {', '.join(GENERATION_TASKS)}")
    return task, gold, problems


def _valid_lines(path: Path, schema: Any) -> list[tuple[int, Any]]:
    """(line number, record) of the lines that are valid records (after read_jsonl reported the others)."""
    valid = []
    for number, line in enumerate(read_text_lines(path), start=1):
        if not line.strip():
            continue
        try:
            valid.append((number, schema.model_validate(json.loads(line))))
        except (ValueError, TypeError):  # json.JSONDecodeError and pydantic's ValidationError are ValueErrors
            continue
    return valid


def content_id(*parts: Any) -> str:
    """A short hash of an item's content (its prompt, task and answers): the same item keeps it when a file is
    rebuilt or re-ordered, so two evaluations pair on it (a line number would change with the file's order)."""
    return hashlib.sha256(json.dumps(parts, sort_keys=True, ensure_ascii=False).encode()).hexdigest()[:12]


def item_ids(file_name: str, hashes: list[str]) -> list[str]:
    """``<file name>#<hash>``; the n-th repeat of the same content in one file gets ``~n`` (n >= 2)."""
    seen: Counter[str] = Counter()
    ids = []
    for digest in hashes:
        seen[digest] += 1
        ids.append(f"{file_name}#{digest}" + (f"~{seen[digest]}" if seen[digest] > 1 else ""))
    return ids


def _assign_ids(items: list[Any], file_name: str, key: Any) -> None:
    for item, item_id in zip(items, item_ids(file_name, [key(item) for item in items])):
        item.id = item_id


def load_eval_files(paths: list[Path], system_prompt: str | None = SYSTEM_PROMPT) -> EvalData:
    """Read and check every file; DataError listing every ``file:line: problem`` if any is bad."""
    from lexalign.data.schemas import ChatRecord, PreferencePair, RankingRecord

    data = EvalData()
    problems: list[str] = []
    for path in paths:
        try:
            kind = detect_kind(path)
        except DataError as err:
            problems.extend(err.problems)
            continue
        schema = {"chat": ChatRecord, "rankings": RankingRecord, "preferences": PreferencePair}[kind]
        try:
            numbered = list(zip(_record_lines(path), read_jsonl(path, schema)))
        except DataError as err:
            problems.extend(err.problems)
            numbered = _valid_lines(path, schema)  # still check the gold labels of the lines that are valid
        data.files[str(path)] = kind
        before = {name: len(getattr(data, name)) for name in ("chat", "rankings", "preferences")}
        for number, record in numbered:
            where = f"{path}:{number}"
            if kind == "chat":
                task, gold, found = chat_gold(record.meta)
                problems.extend(f"{where}: {p}" for p in found)
                if not found:
                    data.chat.append(ChatItem(where, task, [m.model_dump() for m in record.messages[:-1]],
                                              record.messages[-1].content, gold))
            elif kind == "rankings":
                stars = (record.meta or {}).get("stars")
                if stars is not None:
                    if (not isinstance(stars, list) or len(stars) != len(record.responses)
                            or not all(isinstance(s, (int, float)) and not isinstance(s, bool) for s in stars)):
                        problems.append(f"{where}: meta.stars: expected one number per response "
                                        f"({len(record.responses)}), higher = better")
                        continue
                    relevance = [float(s) for s in stars]
                else:  # the annotator's ranks: 1 = best -> highest relevance
                    top = max(record.ranks)
                    relevance = [float(top + 1 - r) for r in record.ranks]
                data.rankings.append(RankingItem(where, _prompt_messages(record.prompt, system_prompt),
                                                 list(record.responses), relevance, dict(record.meta or {})))
            else:
                data.preferences.append(PreferenceItem(where, _prompt_messages(record.prompt, system_prompt),
                                                       _content(record.chosen), _content(record.rejected)))
        # Items are told apart by content, not by line (``where`` above only names a problem's line).
        _assign_ids(data.chat[before["chat"]:], path.name,
                    lambda item: content_id(item.task, item.messages, item.reference))
        _assign_ids(data.rankings[before["rankings"]:], path.name,
                    lambda item: content_id(item.messages, item.responses))
        _assign_ids(data.preferences[before["preferences"]:], path.name,
                    lambda item: content_id(item.messages, item.chosen, item.rejected))
    if problems:
        shown = problems[:50]
        more = f"\n  ... and {len(problems) - 50} more" if len(problems) > 50 else ""
        raise DataError(f"evaluation data: {len(problems)} problem{'s' * (len(problems) != 1)}; nothing was "
                        "evaluated:\n" + "\n".join(f"  {p}" for p in shown) + more, problems)
    return data


def sample(items: list[Any], limit: int, seed: int) -> list[Any]:
    """At most ``limit`` items (0 = all), kept in file order: the ``limit`` items whose seeded hash of their id
    is smallest, so the draw depends on the items and the seed, not on the file's order."""
    if not limit or len(items) <= limit:
        return list(items)
    rank = sorted(range(len(items)), key=lambda i: hashlib.sha256(f"{seed}:{items[i].id}".encode()).digest())
    return [items[i] for i in sorted(rank[:limit])]


def select(data: EvalData, limit: int, seed: int) -> EvalData:
    """The same data with at most ``limit`` items per task (seeded draw per task)."""
    order = {id(item): i for i, item in enumerate(data.chat)}
    chat = [item for task in GENERATION_TASKS for item in sample(data.by_task(task), limit, seed)]
    chat.sort(key=lambda item: order[id(item)])
    return EvalData(chat, sample(data.rankings, limit, seed), sample(data.preferences, limit, seed), dict(data.files))


def regroup(items: list[Any], flat: list[Any]) -> list[list[Any]]:
    """Split a flat list of per-response values back into one list per ranking item."""
    groups, start = [], 0
    for item in items:
        groups.append(flat[start:start + len(item.responses)])
        start += len(item.responses)
    return groups


# --------------------------------------------------------------------------- answer parsing
# An answer counts only when it follows the answer format the task asks for; anything else is "unparsed" and
# is scored as wrong (a model that writes fluent text in no format must not score the base rate).

# Leading markup a chat model may put before the answer proper: quotes, markdown emphasis, a bullet, a label.
_LEAD = re.compile(r"^[\s\"'“”‘’*_`>#-]*(?:answer[ \t]*:[\s\"'“”‘’*_`]*)?", re.IGNORECASE)
# The fair form: "Fair" as a word followed by punctuation or the end ("Fairly ..." or "Fairness ..." are not it).
_FAIR = re.compile(r"fair[ \t]*(?:[:.;,!*_\n]|$)", re.IGNORECASE)
_UNFAIR = re.compile(r"potentially[ \t]+unfair[ \t]*[*_]*[ \t]*:[ \t]*([^.\n]*)", re.IGNORECASE)


def _strip_lead(answer: str) -> str:
    return answer[_LEAD.match(answer).end():]


def parse_presence(answer: str) -> bool | None:
    """Yes -> True, No -> False: the first word after leading quotes/markdown and an "Answer:" label, as a whole
    word ("Yesterday", "Note", "Not present." are not Yes/No); None when the answer is neither."""
    words = _strip_lead(answer).split()
    first = re.sub(r"[^a-z]+$", "", words[0].lower()) if words else ""
    if first == YES.lower():
        return True
    if first == NO.lower():
        return False
    return None


def parse_unfair(answer: str) -> tuple[bool | None, list[str]]:
    """(unfair?, category names) of an answer in the trained form: "Fair: ..." -> (False, []); "Potentially unfair:
    <category>[; <category>]. <why>" -> (True, the known category names it lists, ``;`` or ``,`` separated); anything
    else -> (None, []). Leading quotes/markdown and an "Answer:" label are allowed before the form."""
    text = _strip_lead(answer)
    if _FAIR.match(text):
        return False, []
    match = _UNFAIR.match(text)
    if not match:
        return None, []
    said = {part.strip(" \t*_`'\"").lower() for part in re.split(r"[;,]", match.group(1))}
    return True, [name for name in UNFAIR_NAMES if name in said]


def is_quote(line: str, excerpt: str) -> bool:
    """The line (after SQuAD normalisation) occurs word for word in the excerpt (normalised the same way)."""
    from lexalign.evaluation.metrics import normalize_text

    quoted = normalize_text(line)
    return bool(quoted) and f" {quoted} " in f" {normalize_text(excerpt)} "


def parse_extract(answer: str, excerpt: str) -> bool | None:
    """Present?: False for "Not present." (as the answer or its first sentence); True when at least one line of
    the answer is a verbatim quote of the excerpt (``is_quote``); None (unparsed) otherwise: text that neither
    quotes the contract nor says "Not present." gives no verdict on presence."""
    from lexalign.evaluation.metrics import answer_spans, is_not_present

    if is_not_present(answer):
        return False
    return True if any(is_quote(line, excerpt) for line in answer_spans(answer)) else None
