"""CLAUDETTE (Terms of Service sentences tagged for unfair-clause categories) -> chat records.

Each ToS sentence becomes "Is this clause potentially unfair? If so, which category and why?". Tags are
``<category><level>``: 1 clearly fair, 2 potentially unfair, 3 clearly unfair. Levels 2 and 3 both count
as potentially unfair (config ``claudette.unfair_levels``): the assistant flags clauses for a lawyer to
review, and a clause the annotators found potentially unfair deserves that review as much as a clearly
unfair one. Level-1 sentences are fair examples of the same topics (hard negatives) and are always kept;
untagged sentences are sampled as further fair examples. The tag ``countrym`` (a country-specific clause
marker, not a category) is ignored.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from pathlib import Path

from lexalign.data import prompts
from lexalign.data.jsonl import DataError, read_text_lines
from lexalign.data.schemas import ChatRecord, Message
from lexalign.data.splits import hash_order

logger = logging.getLogger(__name__)

TAG = re.compile(r"^([a-z]+)([123])$")
IGNORED_TAGS = {"countrym"}


@dataclass(frozen=True)
class Sentence:
    line: int
    text: str
    tags: tuple[str, ...]  # raw tags, e.g. ("ltd2", "countrym")
    levels: tuple[tuple[str, int], ...]  # (category code, level) pairs


@dataclass
class TosDocument:
    company: str  # file stem, e.g. "Electronic_Arts"
    sentences: list[Sentence]


def load_claudette(root: Path) -> tuple[list[TosDocument], list[Path]]:
    sentence_dir, tag_dir = root / "sentences", root / "tags"
    if not sentence_dir.is_dir() or not tag_dir.is_dir():
        raise DataError(f"{root}: expected folders sentences/ and tags/ (CLAUDETTE layout)")
    documents: list[TosDocument] = []
    sources: list[Path] = []
    problems: list[str] = []
    for sentence_path in sorted(sentence_dir.glob("*.txt")):
        tag_path = tag_dir / sentence_path.name
        if not tag_path.is_file():
            problems.append(f"{tag_path}: missing tags file for {sentence_path.name}")
            continue
        texts = read_text_lines(sentence_path)
        tag_lines = read_text_lines(tag_path)
        # Both files end with a newline: drop the empty string after it so line counts compare.
        if texts and texts[-1] == "":
            texts = texts[:-1]
        if tag_lines and tag_lines[-1] == "":
            tag_lines = tag_lines[:-1]
        if len(texts) != len(tag_lines):
            problems.append(f"{tag_path}: {len(tag_lines)} lines but {sentence_path.name} has {len(texts)}; "
                            "expected one tag line per sentence")
            continue
        sentences = []
        for number, (text, tag_line) in enumerate(zip(texts, tag_lines), start=1):
            tags = tuple(tag_line.split())
            levels = []
            for tag in tags:
                match = TAG.match(tag)
                if tag in IGNORED_TAGS:
                    continue
                if not match or match.group(1) not in prompts.UNFAIR_CATEGORIES:
                    problems.append(f"{tag_path}:{number}: unknown tag {tag!r}; expected <category><level> with "
                                    f"category in {sorted(prompts.UNFAIR_CATEGORIES)} and level 1-3")
                    continue
                levels.append((match.group(1), int(match.group(2))))
            if text.strip():
                sentences.append(Sentence(number, " ".join(text.split()), tags, tuple(levels)))
        documents.append(TosDocument(sentence_path.stem, sentences))
        sources += [sentence_path, tag_path]
    if problems:
        raise DataError(f"{root}: {len(problems)} problem(s):\n" + "\n".join(f"  {p}" for p in problems[:50]), problems)
    if not documents:
        raise DataError(f"{sentence_dir}: no Terms-of-Service files (*.txt)")
    logger.info("CLAUDETTE: %d Terms of Service, %d sentences", len(documents), sum(len(d.sentences) for d in documents))
    return documents, sources


def unfair_codes(sentence: Sentence, unfair_levels: list[int]) -> list[str]:
    """Category codes at an unfair level, in the fixed category order of prompts.UNFAIR_CATEGORIES."""
    codes = {code for code, level in sentence.levels if level in unfair_levels}
    return [code for code in prompts.UNFAIR_CATEGORIES if code in codes]


def _record(document: TosDocument, sentence: Sentence, codes: list[str]) -> ChatRecord:
    return ChatRecord(messages=[
        Message(role="system", content=prompts.SYSTEM_PROMPT),
        Message(role="user", content=prompts.unfair_prompt(sentence.text)),
        Message(role="assistant", content=prompts.unfair_answer(codes)),
    ], meta={
        "source": "claudette",
        "task": "unfair",
        "doc_id": document.company,
        "labels": [prompts.UNFAIR_CATEGORIES[c][0] for c in codes],
        "unfair": bool(codes),
        "tags": list(sentence.tags),
        "line": sentence.line,
    })


def build_claudette_records(documents: list[TosDocument], split_of: dict[str, str], *, unfair_levels: list[int],
                            fair_ratio: float, min_fair_chars: int, seed: int) -> dict[str, list[ChatRecord]]:
    """split -> candidate records: every unfair sentence, plus fair_ratio x as many fair ones."""
    out: dict[str, list[ChatRecord]] = {}
    for split in sorted(set(split_of.values())):
        unfair, tagged_fair, untagged = [], [], []
        for document in documents:
            if split_of[document.company] != split:
                continue
            for sentence in document.sentences:
                codes = unfair_codes(sentence, unfair_levels)
                if codes:
                    unfair.append(_record(document, sentence, codes))
                elif len(sentence.text) >= min_fair_chars:
                    (tagged_fair if sentence.levels else untagged).append((document, sentence))
        wanted = round(fair_ratio * len(unfair))
        # Clearly-fair (level 1) sentences first: they are fair clauses about the same topics.
        fair = tagged_fair[:wanted]
        fair += hash_order(untagged, seed, "claudette-fair", key=lambda t: f"{t[0].company}:{t[1].line}")[:wanted - len(fair)]
        out[split] = unfair + [_record(d, s, []) for d, s in fair]
    return out
