"""Deterministic hashing, sampling and document-level splits.

Everything random in the builders goes through these helpers: a choice depends only on the seed and the
names of the things involved (never on iteration order, Python's salted ``hash()`` or a global RNG),
so adding a document does not reshuffle the others and two builds give byte-identical files.
"""

from __future__ import annotations

import hashlib
import random
from typing import Iterable, Sequence, TypeVar

T = TypeVar("T")

SPLITS = ("train", "valid", "test")


def stable_hash(*parts: object) -> int:
    """A 64-bit integer from sha256 of the parts (stable across runs, machines and Python versions)."""
    digest = hashlib.sha256("\x1f".join(str(p) for p in parts).encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "big")


def rng_for(*parts: object) -> random.Random:
    """A private RNG for one decision, seeded from the seed and the names involved."""
    return random.Random(stable_hash(*parts))


def hash_order(items: Iterable[T], *parts: object, key=str) -> list[T]:
    """Items sorted by stable_hash(parts, key(item)): a deterministic shuffle independent of input order."""
    return sorted(items, key=lambda item: (stable_hash(*parts, key(item)), key(item)))


def assign_splits(doc_ids: Iterable[str], seed: int, valid_fraction: float, test_fraction: float,
                  salt: str) -> dict[str, str]:
    """doc id -> split. Documents are ranked by a seeded hash of their id; the first round(n * test)
    go to test, the next round(n * valid) to valid, the rest to train (exact sizes even for few docs)."""
    ranked = hash_order(set(doc_ids), seed, "split", salt)
    n = len(ranked)
    n_test = round(n * test_fraction)
    n_valid = round(n * valid_fraction)
    split_of = {}
    for i, doc in enumerate(ranked):
        split_of[doc] = "test" if i < n_test else "valid" if i < n_test + n_valid else "train"
    return split_of


def docs_hash(doc_ids: Sequence[str]) -> str:
    """sha256 of a sorted document list (stats.json records one per split and source)."""
    return hashlib.sha256("\n".join(sorted(doc_ids)).encode("utf-8")).hexdigest()
