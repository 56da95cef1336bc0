"""CUAD (contracts labelled by lawyers with 41 clause categories) -> contract-review chat records.

Contracts are cut into overlapping character windows (a window + instruction + answer must fit the small
context of the tiny base model). Three tasks per (contract, category):

    extract    "Find the <category> clause ... quote it exactly, or answer 'Not present.'"
               -> the labelled spans that lie wholly inside the window, verbatim, one per line
    presence   "Does this excerpt contain a <category> clause? Answer Yes or No."
    normalize  the structured answer CUAD gives for names, dates, laws and periods (e.g. Governing Law ->
               "New York"), asked only on a window that holds every labelled span of that category

A window is a positive for a category when it holds at least one whole span; a span cut by the window
boundary is never quoted (it is not verbatim-complete), and windows with cut spans are used only when no
clean window exists. A window is a negative when it overlaps no span of the category at all.

Contract text is whitespace-normalized first (``normalize_contract``: a whitespace run becomes one newline
if it holds a line break, else one space). EDGAR filings are full of layout spaces (tables, tables of
contents) that cost a byte-level tokenizer one token per few spaces; normalized, a window fits the tiny
model's context. Spans are mapped onto the normalized text, so quoted answers are verbatim substrings of
the excerpt the model sees, and ``meta.window`` = [start, end] are offsets into
``normalize_contract(raw_text)``: ``normalize_contract(raw)[start:end]`` is exactly the excerpt.
"""

from __future__ import annotations

import csv
import json
import logging
import math
import re
from bisect import bisect_right
from dataclasses import dataclass, field
from pathlib import Path

from tqdm import tqdm

from lexalign.data import prompts
from lexalign.data.jsonl import DataError, read_text_lines
from lexalign.data.schemas import ChatRecord, Message
from lexalign.data.splits import hash_order, rng_for

logger = logging.getLogger(__name__)

Span = tuple[int, int]
WHITESPACE = " \n\t\r\x0b\x0c\xa0"
WHITESPACE_RUN = re.compile(r"\s+")


@dataclass(frozen=True)
class Category:
    name: str
    description: str
    answer_format: str


@dataclass
class Contract:
    doc_id: str  # the contract's file name, as in cuad_qa_train.jsonl
    text: str  # whitespace-normalized (normalize_contract); spans index into it
    spans: dict[str, list[Span]] = field(default_factory=dict)  # category -> sorted, merged spans
    normalized: dict[str, str] = field(default_factory=dict)  # category -> CUAD's normalized answer


# --------------------------------------------------------------------------- loading


def _clean(value: str, prefix: str) -> str:
    """'Description: The date\xa0' -> 'The date' (the CSV repeats its column names in every cell)."""
    value = value.replace("\xa0", " ").strip()
    if value.startswith(prefix):
        value = value[len(prefix):]
    return " ".join(value.split())


def load_categories(path: Path) -> dict[str, Category]:
    if not path.is_file():
        raise DataError(f"{path}: file not found; expected CUAD's category_descriptions.csv")
    categories: dict[str, Category] = {}
    with path.open(encoding="utf-8-sig", newline="") as handle:
        rows = list(csv.reader(handle))
    problems = []
    for number, row in enumerate(rows[1:], start=2):
        if len(row) < 3:
            problems.append(f"{path}:{number}: expected columns Category, Description, Answer Format, Group; got {row}")
            continue
        name = _clean(row[0], "Category:")
        categories[name] = Category(name, _clean(row[1], "Description:").rstrip("."), _clean(row[2], "Answer Format:"))
    if problems:
        raise DataError("\n".join(problems), problems)
    return categories


def normalize_contract(raw: str) -> str:
    """Each whitespace run -> "\n" if it holds a line break, else " "; ends stripped."""
    return WHITESPACE_RUN.sub(lambda m: "\n" if "\n" in m.group() else " ", raw).strip()


class OffsetMap:
    """Raw-text offsets -> offsets in normalize_contract(raw), for positions of non-whitespace characters."""

    def __init__(self, raw: str) -> None:
        self.run_ends: list[int] = []  # raw end of each whitespace run
        self.shifts: list[int] = []  # characters removed up to and including that run
        removed = 0
        lead = WHITESPACE_RUN.match(raw)
        for match in WHITESPACE_RUN.finditer(raw):
            kept = 0 if (lead and match.start() == 0) or match.end() == len(raw) else 1
            removed += len(match.group()) - kept
            self.run_ends.append(match.end())
            self.shifts.append(removed)

    def __call__(self, raw_index: int) -> int:
        i = bisect_right(self.run_ends, raw_index)
        return raw_index - (self.shifts[i - 1] if i else 0)


def _strip_span(text: str, start: int, end: int) -> Span:
    while start < end and text[start].isspace():
        start += 1
    while end > start and text[end - 1].isspace():
        end -= 1
    return start, end


def _merge(spans: list[Span]) -> list[Span]:
    """Sorted, with overlapping spans merged (a merged span is still verbatim text of the contract)."""
    merged: list[Span] = []
    for start, end in sorted(set(spans)):
        if merged and start < merged[-1][1]:
            merged[-1] = (merged[-1][0], max(end, merged[-1][1]))
        else:
            merged.append((start, end))
    return merged


def load_cuad(root: Path) -> tuple[dict[str, Contract], dict[str, Category], list[Path]]:
    """Contracts with their labelled spans; checks every answer offset against the contract text."""
    qa_path = root / "cuad_qa_train.jsonl"
    categories = load_categories(root / "category_descriptions.csv")
    contracts: dict[str, Contract] = {}
    raw_texts: dict[str, str] = {}
    raw_spans: dict[tuple[str, str], list[Span]] = {}  # offsets into the raw text, whitespace-stripped
    problems: list[str] = []
    for number, line in enumerate(read_text_lines(qa_path), start=1):
        if not line.strip():
            continue
        where = f"{qa_path}:{number}"
        try:
            item = json.loads(line)
            doc_id, category = item["contract_file"], item["category"]
            answers, normalized = item["answers"], item.get("normalized_answer") or ""
        except (json.JSONDecodeError, KeyError, TypeError) as err:
            problems.append(f"{where}: expected a CUAD record with contract_file, category, answers ({err})")
            continue
        if category not in categories:
            problems.append(f"{where}: category {category!r} is not in category_descriptions.csv")
            continue
        if doc_id not in contracts:
            contract_path = root / "contracts" / doc_id
            if not contract_path.is_file():
                problems.append(f"{where}: contract file not found: {contract_path}")
                continue
            raw = "\n".join(read_text_lines(contract_path))
            contracts[doc_id] = Contract(doc_id, normalize_contract(raw))
            raw_texts[doc_id] = raw
        raw = raw_texts[doc_id]
        for answer in answers:
            start, answer_text = answer["answer_start"], answer["text"]
            if raw[start:start + len(answer_text)] != answer_text:
                problems.append(f"{where}: answer_start {start} does not point at the answer text in {doc_id}")
                continue
            span = _strip_span(raw, start, start + len(answer_text))
            if span[1] > span[0]:
                raw_spans.setdefault((doc_id, category), []).append(span)
        if normalized.strip():
            contracts[doc_id].normalized[category] = normalized.strip()
    if problems:
        raise DataError(f"{qa_path}: {len(problems)} problem(s):\n" + "\n".join(f"  {p}" for p in problems[:50]), problems)
    current: tuple[str, OffsetMap] | None = None  # one contract's map at a time (they are large)
    for (doc_id, category), spans in sorted(raw_spans.items()):
        if current is None or current[0] != doc_id:
            current = (doc_id, OffsetMap(raw_texts[doc_id]))
        to_normalized = current[1]
        # Span ends are non-whitespace characters, so they map exactly onto the normalized text.
        contracts[doc_id].spans[category] = _merge([(to_normalized(s), to_normalized(e - 1) + 1) for s, e in spans])
    sources = [root / "category_descriptions.csv", qa_path] + sorted(root / "contracts" / d for d in contracts)
    logger.info("CUAD: %d contracts, %d categories, %d labelled spans", len(contracts), len(categories),
                sum(len(s) for c in contracts.values() for s in c.spans.values()))
    return contracts, categories, sources


# --------------------------------------------------------------------------- windows


def _skip_space(text: str, i: int) -> int:
    while i < len(text) and text[i].isspace():
        i += 1
    return i


def _rstrip(text: str, start: int, end: int) -> int:
    while end > start and text[end - 1].isspace():
        end -= 1
    return end


def make_windows(text: str, size: int, overlap: int) -> list[Span]:
    """Overlapping windows of at most ``size`` characters that start and end on word boundaries.

    Each window ends at the last whitespace in its second half (so no word is cut) and the next one starts
    ``overlap`` characters before that end, moved forward to the start of a word. Windows never begin or
    end with whitespace.
    """
    windows: list[Span] = []
    n = len(text)
    start = _skip_space(text, 0)
    while start < n:
        limit = start + size
        if limit >= n:
            end = _rstrip(text, start, n)
        else:
            cut = max(text.rfind(c, start + size // 2, limit + 1) for c in WHITESPACE)
            end = _rstrip(text, start, cut if cut > start else limit)
        if end > start:
            windows.append((start, end))
        if limit >= n:
            break
        nxt = max(end - overlap, start + 1)
        if not text[nxt - 1].isspace():  # mid-word: move to the next word start (within this window)
            found = [i for i in (text.find(c, nxt, end) for c in WHITESPACE) if i != -1]
            if found:
                nxt = min(found)
        start = _skip_space(text, nxt)
    return windows


def _inside(span: Span, window: Span) -> bool:
    return window[0] <= span[0] and span[1] <= window[1]


def _overlaps(span: Span, window: Span) -> bool:
    return span[0] < window[1] and span[1] > window[0]


# --------------------------------------------------------------------------- records


def _record(contract: Contract, task: str, category: str, window: Span, full: list[Span], user: str,
            answer: str, extra: dict | None = None) -> ChatRecord:
    meta = {
        "source": "cuad",
        "task": task,
        "doc_id": contract.doc_id,
        "category": category,
        "answers": [contract.text[s:e] for s, e in full],
        "present": bool(full),
        "window": [window[0], window[1]],
    }
    meta.update(extra or {})
    return ChatRecord(messages=[
        Message(role="system", content=prompts.SYSTEM_PROMPT),
        Message(role="user", content=user),
        Message(role="assistant", content=answer),
    ], meta=meta)


def _make(contract: Contract, task: str, category: Category, window: Span, full: list[Span]) -> ChatRecord:
    excerpt = contract.text[window[0]:window[1]]
    if task == "extract":
        user = prompts.extract_prompt(category.name, category.description, excerpt)
        answer = prompts.extract_answer([contract.text[s:e] for s, e in full])
        return _record(contract, task, category.name, window, full, user, answer)
    if task == "presence":
        user = prompts.presence_prompt(category.name, excerpt)
        return _record(contract, task, category.name, window, full, user, prompts.YES if full else prompts.NO)
    normalized = contract.normalized[category.name]
    user = prompts.normalize_prompt(category.name, category.description, category.answer_format, excerpt)
    return _record(contract, task, category.name, window, full, user, normalized, {"normalized": normalized})


def build_cuad_records(contracts: dict[str, Contract], categories: dict[str, Category], split_of: dict[str, str],
                       *, window_chars: int, window_overlap: int, max_answer_chars: int, positives_per_clause: int,
                       negative_ratio: float, normalize_categories: list[str], seed: int
                       ) -> dict[str, dict[str, list[ChatRecord]]]:
    """split -> task -> candidate records (before the per-split caps)."""
    unknown = sorted(set(normalize_categories) - set(categories))
    if unknown:
        raise DataError(f"cuad.normalize_categories: unknown CUAD categories {unknown}; "
                        f"choose from {sorted(categories)}")
    out: dict[str, dict[str, list[ChatRecord]]] = {}
    # (split, task, category) -> [(doc_id, negative windows)] ; positives counted to size the negatives
    negatives: dict[tuple[str, str, str], list[tuple[str, list[Span]]]] = {}
    positive_counts: dict[tuple[str, str, str], int] = {}
    for doc_id in tqdm(sorted(contracts), desc="CUAD contracts", disable=None):
        contract = contracts[doc_id]
        split = split_of[doc_id]
        tasks = out.setdefault(split, {"extract": [], "presence": [], "normalize": []})
        windows = make_windows(contract.text, window_chars, window_overlap)
        for category in categories.values():
            spans = contract.spans.get(category.name, [])
            clean: list[Span] = []
            any_cut: list[Span] = []
            negative: list[Span] = []
            for window in windows:
                full = [s for s in spans if _inside(s, window)]
                touching = [s for s in spans if _overlaps(s, window)]
                if not touching:
                    negative.append(window)
                elif full and sum(e - s for s, e in full) + len(full) - 1 <= max_answer_chars:
                    (clean if len(full) == len(touching) else any_cut).append(window)
            positives = clean or any_cut  # prefer windows where no span of this category is cut
            for task in ("extract", "presence"):
                chosen = rng_for(seed, task, doc_id, category.name).sample(positives, min(positives_per_clause, len(positives)))
                for window in sorted(chosen):
                    tasks[task].append(_make(contract, task, category, window, [s for s in spans if _inside(s, window)]))
                key = (split, task, category.name)
                positive_counts[key] = positive_counts.get(key, 0) + len(chosen)
                if negative:
                    negatives.setdefault(key, []).append((doc_id, negative))
            if category.name in normalize_categories and spans and category.name in contract.normalized:
                holding_all = [w for w in windows if all(_inside(s, w) for s in spans)]
                if holding_all:
                    window = rng_for(seed, "normalize", doc_id, category.name).choice(holding_all)
                    tasks["normalize"].append(_make(contract, "normalize", category, window, spans))
    # Negatives: per (split, task, category), negative_ratio x the positives, spread over many contracts.
    for (split, task, name), per_doc in sorted(negatives.items()):
        wanted = round(negative_ratio * positive_counts.get((split, task, name), 0))
        if wanted == 0:
            continue
        per_contract = math.ceil(wanted / len(per_doc)) + 1
        pool = []
        for doc_id, windows in per_doc:
            rng = rng_for(seed, "negative", task, doc_id, name)
            pool += [(doc_id, w) for w in rng.sample(windows, min(per_contract, len(windows)))]
        picked = hash_order(pool, seed, "negative-pick", task, name, key=lambda t: f"{t[0]}|{t[1][0]}")[:wanted]
        for doc_id, window in picked:
            out[split][task].append(_make(contracts[doc_id], task, categories[name], window, []))
    return out
