"""ACORD (lawyers' 1-5 star ratings of contract clauses for drafting queries) -> rankings and pairs.

For each query, groups of N rated clauses become one ``RankingRecord``: prompt = a drafting request built
from the query, responses = clause texts, ranks from stars (more stars = better rank, equal stars tie),
annotator "acord-lawyers". qrels score 0-4 = 1-5 stars. Score 0 (1 star) holds the few clauses lawyers
rated lowest and every clause retrieved for other queries of the same family, so it dominates the qrels;
each group takes ``zero_star_per_group`` of those and fills the rest from clauses rated 2-5 stars, which
keeps the groups informative. Clauses longer than ``max_response_chars`` are left out (the tiny model's
context is small); the corpus's CSV-escaped doubled quotes (""AS IS"") are turned back into single ones
and whitespace is normalized as for CUAD contracts. Sampling is seeded by the query id, and the order of responses inside a group is a
seeded shuffle, so the best clause is not always first.
"""

from __future__ import annotations

import csv
import hashlib
import json
import logging
from dataclasses import dataclass
from pathlib import Path

from lexalign.data import prompts
from lexalign.data.cuad import normalize_contract
from lexalign.data.jsonl import DataError, read_text_lines
from lexalign.data.pairs import dense_ranks, ranking_to_pairs
from lexalign.data.schemas import PreferencePair, RankingRecord
from lexalign.data.splits import hash_order

logger = logging.getLogger(__name__)

ANNOTATOR = "acord-lawyers"


@dataclass(frozen=True)
class Query:
    query_id: str
    text: str
    category: str
    origin: str  # the ACORD split it comes from: train or valid


def _jsonl_objects(path: Path) -> list[tuple[int, dict]]:
    found, problems = [], []
    for number, line in enumerate(read_text_lines(path), start=1):
        if not line.strip():
            continue
        try:
            item = json.loads(line)
            if not isinstance(item, dict) or "_id" not in item or "text" not in item:
                raise ValueError("expected an object with _id and text")
            found.append((number, item))
        except ValueError as err:
            problems.append(f"{path}:{number}: {err}")
    if problems:
        raise DataError("\n".join(problems), problems)
    return found


def load_acord(root: Path) -> tuple[dict[str, Query], dict[str, str], dict[str, list[tuple[str, int]]], list[Path]]:
    """queries, corpus (id -> clause text), qrels (query id -> [(corpus id, score 0-4)]), source files."""
    corpus = {item["_id"]: item["text"] for _, item in _jsonl_objects(root / "corpus.jsonl")}
    meta = {item["_id"]: item for _, item in _jsonl_objects(root / "queries.jsonl")}
    queries: dict[str, Query] = {}
    qrels: dict[str, list[tuple[str, int]]] = {}
    problems: list[str] = []
    sources = [root / "corpus.jsonl", root / "queries.jsonl"]
    for origin in ("train", "valid"):
        path = root / "qrels" / f"{origin}.tsv"
        if not path.is_file():
            raise DataError(f"{path}: file not found; expected ACORD qrels/{origin}.tsv")
        sources.append(path)
        # The qrels use CSV-style quoting (query ids contain quotes), hence the csv module with tabs.
        rows = list(csv.reader(read_text_lines(path), delimiter="\t"))
        for number, row in enumerate(rows, start=1):
            if not row or row == ["query-id", "corpus-id", "score"]:
                continue
            where = f"{path}:{number}"
            if len(row) != 3 or not row[2].strip().isdigit() or not 0 <= int(row[2]) <= 4:
                problems.append(f"{where}: expected query-id<TAB>corpus-id<TAB>score 0-4; got {row}")
                continue
            query_id, corpus_id, score = row[0], row[1], int(row[2])
            if query_id not in meta:
                problems.append(f"{where}: query {query_id!r} is not in queries.jsonl")
                continue
            if corpus_id not in corpus:
                problems.append(f"{where}: clause {corpus_id!r} is not in corpus.jsonl")
                continue
            known = queries.get(query_id)
            if known and known.origin != origin:
                problems.append(f"{where}: query {query_id!r} is also in qrels/{known.origin}.tsv")
                continue
            item = meta[query_id]
            queries[query_id] = Query(query_id, item["text"], (item.get("metadata") or {}).get("category", ""), origin)
            qrels.setdefault(query_id, []).append((corpus_id, score))
    if problems:
        raise DataError(f"{root}: {len(problems)} problem(s):\n" + "\n".join(f"  {p}" for p in problems[:50]), problems)
    logger.info("ACORD: %d queries, %d clauses, %d ratings", len(queries), len(corpus), sum(map(len, qrels.values())))
    return queries, corpus, qrels, sources


def clean_clause(text: str) -> str:
    """ACORD's corpus keeps CSV-escaped quotes (""AS IS"" -> "AS IS"); whitespace normalized as for CUAD."""
    return normalize_contract(text.replace('""', '"'))


def prompt_id(query_id: str, group: int) -> str:
    return f"acord-{hashlib.sha256(query_id.encode('utf-8')).hexdigest()[:10]}-g{group:02d}"


def query_groups(query: Query, ratings: list[tuple[str, int]], corpus: dict[str, str], *, group_size: int,
                 groups_per_query: int, zero_star_per_group: int, max_response_chars: int,
                 seed: int) -> list[RankingRecord]:
    """Ranking groups for one query (see the module docstring)."""
    seen_texts: set[str] = set()
    rated, zeros = [], []
    for corpus_id, score in sorted(ratings):
        text = clean_clause(corpus[corpus_id])
        if not text or len(text) > max_response_chars or text in seen_texts:
            continue
        seen_texts.add(text)
        (rated if score > 0 else zeros).append((corpus_id, score))
    n_rated = group_size - zero_star_per_group
    if len(rated) < n_rated or len(zeros) < zero_star_per_group:
        logger.warning("ACORD query %r: only %d usable rated clauses; no groups", query.query_id, len(rated))
        return []
    # Walk the rated clauses in seeded passes so each is used about equally often.
    stream: list[tuple[str, int]] = []
    passes = 0
    while len(stream) < n_rated * groups_per_query:
        stream += hash_order(rated, seed, "acord-rated", query.query_id, passes, key=lambda t: t[0])
        passes += 1
    zero_stream = hash_order(zeros, seed, "acord-zero", query.query_id, key=lambda t: t[0])
    records = []
    position = 0
    for group in range(groups_per_query):
        members: list[tuple[str, int]] = []
        while len(members) < n_rated and position < len(stream):
            if stream[position][0] not in {m[0] for m in members}:
                members.append(stream[position])
            position += 1
        start = (group * zero_star_per_group) % len(zero_stream) if zero_stream else 0
        members += (zero_stream[start:] + zero_stream[:start])[:zero_star_per_group]
        stars = [score + 1 for _, score in members]
        if len(members) < 2 or len(set(stars)) < 2:
            continue  # all tied: nothing to learn from
        members = hash_order(members, seed, "acord-order", query.query_id, group, key=lambda t: t[0])
        stars = [score + 1 for _, score in members]
        records.append(RankingRecord(
            prompt_id=prompt_id(query.query_id, group),
            prompt=prompts.acord_prompt(query.text),
            responses=[clean_clause(corpus[cid]) for cid, _ in members],
            ranks=dense_ranks(stars),
            annotator=ANNOTATOR,
            meta={
                "source": "acord",
                "query_id": query.query_id,
                "category": query.category,
                "corpus_ids": [cid for cid, _ in members],
                "stars": stars,
                "origin_split": query.origin,
            },
        ))
    return records


def assign_acord_splits(queries: dict[str, Query], seed: int, test_fraction: float) -> dict[str, str]:
    """ACORD's own valid split stays valid; a seeded-hash-ranked share of its train queries becomes test."""
    train_ids = [q for q, query in queries.items() if query.origin == "train"]
    ranked = hash_order(train_ids, seed, "split", "acord")
    n_test = round(len(ranked) * test_fraction)
    split_of = {q: ("valid" if query.origin == "valid" else "train") for q, query in queries.items()}
    for query_id in ranked[:n_test]:
        split_of[query_id] = "test"
    return split_of


def build_acord(queries: dict[str, Query], corpus: dict[str, str], qrels: dict[str, list[tuple[str, int]]],
                split_of: dict[str, str], *, group_size: int, groups_per_query: int, zero_star_per_group: int,
                max_response_chars: int, seed: int) -> tuple[dict[str, list[RankingRecord]], dict[str, list[PreferencePair]]]:
    """split -> ranking records, and split -> preference pairs derived from them (margin = star gap)."""
    rankings: dict[str, list[RankingRecord]] = {}
    pairs: dict[str, list[PreferencePair]] = {}
    for query_id in sorted(queries):
        split = split_of[query_id]
        groups = query_groups(queries[query_id], qrels[query_id], corpus, group_size=group_size,
                              groups_per_query=groups_per_query, zero_star_per_group=zero_star_per_group,
                              max_response_chars=max_response_chars, seed=seed)
        rankings.setdefault(split, []).extend(groups)
        for record in groups:
            for pair in ranking_to_pairs(record, scores=record.meta["stars"]):
                i, j = pair.meta["chosen_index"], pair.meta["rejected_index"]
                pair.meta.update({
                    "query_id": query_id,
                    "chosen_id": record.meta["corpus_ids"][i],
                    "rejected_id": record.meta["corpus_ids"][j],
                    "chosen_stars": record.meta["stars"][i],
                    "rejected_stars": record.meta["stars"][j],
                })
                pairs.setdefault(split, []).append(pair)
    return rankings, pairs
