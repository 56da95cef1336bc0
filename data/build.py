"""``lexalign data build``: the raw legal corpora -> the compact datasets every later stage reads.

    lexalign data build [--source DIR] [--out DIR] [--config configs/data.yaml] [key=value ...]

Reads ``<source>/{cuad,claudette,acord}`` (layout of ../shared/data, see its README) and writes to ``<out>``
(default: the package's ``data/shipped``):

    sft_{train,valid,test}.jsonl             ChatRecord: CUAD extract/presence/normalize + CLAUDETTE unfair
    acord_rankings_{train,valid,test}.jsonl  RankingRecord: lawyers' star ratings as ranked groups of N
    acord_pairs_{train,valid,test}.jsonl     PreferencePair (TRL conversational), margin = star gap
    pretrain_corpus.txt                      contract + ToS text of TRAIN documents only
    stats.json  ATTRIBUTION.md  LICENSES/    counts and lengths; credits; the corpora's license texts
    manifest.json                            sha256 of every output and of every source file used

Splits are by document (CUAD contract, CLAUDETTE company, ACORD query), by a seeded hash of its id.
The build is deterministic: the same sources and config give byte-identical files.
"""

from __future__ import annotations

import json
import logging
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel

from lexalign.config import Problem, load_config, problem_if, to_dict
from lexalign.data import acord, attribution, claudette, cuad
from lexalign.data.jsonl import DataError, to_json_line, write_jsonl, write_text_atomic
from lexalign.data.paths import shipped_dir
from lexalign.data.schemas import ChatRecord
from lexalign.data.splits import SPLITS, assign_splits, docs_hash, hash_order
from lexalign.data.stats import compute_stats
from lexalign.runs import file_sha256

logger = logging.getLogger(__name__)

SFT_TASKS = ("cuad_extract", "cuad_presence", "cuad_normalize", "claudette_unfair")
EXTRA_TRAIN = "train_extra"  # sft_train_extra.jsonl: training records beyond the cap (sft.extra_train)
LICENSE_FILES = {  # source file -> name under LICENSES/
    "cuad/CUAD_v1_README.txt": "cuad-CUAD_v1_README.txt",
    "claudette/LICENSE.txt": "claudette-LICENSE.txt",
    "acord/LICENSE": "acord-LICENSE.txt",
}
MANIFEST_FORMAT = 1


# --------------------------------------------------------------------------- config


@dataclass
class SplitSection:
    # Share of documents held out (CUAD contracts, CLAUDETTE companies), by a seeded hash of the id.
    valid_fraction: float = 0.1
    test_fraction: float = 0.1
    # ACORD keeps its own train/valid query split; this share of its train queries becomes test.
    acord_test_fraction: float = 0.15

    def problems(self) -> list[Problem]:
        found = []
        for key in ("valid_fraction", "test_fraction", "acord_test_fraction"):
            value = getattr(self, key)
            found += problem_if(not 0 <= value < 1, key, value, "a fraction in [0, 1)")
        found += problem_if(self.valid_fraction + self.test_fraction >= 1, "valid_fraction", self.valid_fraction,
                            "valid_fraction + test_fraction must leave documents for train (sum < 1)")
        return found


@dataclass
class CuadSection:
    # Window + instruction + answer must fit a 512-token context of the tiny model: with its 4096-token
    # byte-level BPE (3.5 characters per token on this text), 1000 characters give p95 ~480 tokens per record.
    window_chars: int = 1000
    window_overlap: int = 250
    # Positives whose quoted answer would be longer are skipped (the answer must fit the context too).
    max_answer_chars: int = 400
    # Windows per (contract, category) and task where the clause is present.
    positives_per_clause: int = 1
    # Negatives ("Not present." / "No") per positive, per category and split.
    negative_ratio: float = 1.0
    # Categories with a normalized answer worth asking (names, dates, law, periods).
    normalize_categories: list[str] = field(default_factory=lambda: [
        "Document Name", "Parties", "Agreement Date", "Effective Date", "Expiration Date",
        "Renewal Term", "Notice Period to Terminate Renewal", "Governing Law",
    ])

    def problems(self) -> list[Problem]:
        found = problem_if(self.window_chars < 200, "window_chars", self.window_chars, "at least 200 characters")
        found += problem_if(not 0 <= self.window_overlap < self.window_chars, "window_overlap", self.window_overlap,
                            f"0 <= overlap < window_chars ({self.window_chars})")
        found += problem_if(not 0 < self.max_answer_chars <= self.window_chars, "max_answer_chars",
                            self.max_answer_chars, f"between 1 and window_chars ({self.window_chars})")
        found += problem_if(self.positives_per_clause < 1, "positives_per_clause", self.positives_per_clause, "at least 1")
        found += problem_if(self.negative_ratio < 0, "negative_ratio", self.negative_ratio, "0 or more")
        return found


@dataclass
class ClaudetteSection:
    # Tag levels that count as potentially unfair (1 clearly fair, 2 potentially unfair, 3 clearly unfair).
    unfair_levels: list[int] = field(default_factory=lambda: [2, 3])
    # Fair sentences per unfair one (there are ~13x more fair sentences in the corpus).
    fair_ratio: float = 1.0
    # Shorter fair sentences (headings, dates) are not used as examples.
    min_fair_chars: int = 40

    def problems(self) -> list[Problem]:
        found = problem_if(not self.unfair_levels or not set(self.unfair_levels) <= {1, 2, 3}, "unfair_levels",
                           self.unfair_levels, "a non-empty list of levels from 1, 2, 3")
        found += problem_if(self.fair_ratio < 0, "fair_ratio", self.fair_ratio, "0 or more")
        found += problem_if(self.min_fair_chars < 0, "min_fair_chars", self.min_fair_chars, "0 or more")
        return found


@dataclass
class AcordSection:
    group_size: int = 4  # responses per ranking record (N)
    groups_per_query: int = 6
    # 1-star clauses (score 0: mostly clauses retrieved for other queries) per group; the rest are rated 2-5.
    zero_star_per_group: int = 1
    max_response_chars: int = 1200

    def problems(self) -> list[Problem]:
        found = problem_if(self.group_size < 2, "group_size", self.group_size, "at least 2 responses per group")
        found += problem_if(self.groups_per_query < 1, "groups_per_query", self.groups_per_query, "at least 1")
        found += problem_if(not 0 <= self.zero_star_per_group < self.group_size, "zero_star_per_group",
                            self.zero_star_per_group, f"0 <= value < group_size ({self.group_size})")
        found += problem_if(self.max_response_chars < 50, "max_response_chars", self.max_response_chars, "at least 50")
        return found


@dataclass
class SplitCaps:
    # Maximum SFT records per split (0 = keep every candidate).
    train: int = 4000
    valid: int = 500
    test: int = 500

    def problems(self) -> list[Problem]:
        return [p for key in SPLITS for p in problem_if(getattr(self, key) < 0, key, getattr(self, key), "0 (no cap) or more")]


@dataclass
class SftMix:
    # Relative share of each task in every SFT split; a task short of candidates leaves its share to the others.
    cuad_extract: float = 0.4
    cuad_presence: float = 0.15
    cuad_normalize: float = 0.1
    claudette_unfair: float = 0.35

    def problems(self) -> list[Problem]:
        found = [p for key in SFT_TASKS for p in problem_if(getattr(self, key) < 0, key, getattr(self, key), "0 or more")]
        found += problem_if(sum(getattr(self, k) for k in SFT_TASKS) <= 0, "cuad_extract", self.cuad_extract,
                            "at least one task needs a positive share")
        return found


@dataclass
class SftSection:
    max_records: SplitCaps = field(default_factory=SplitCaps)
    mix: SftMix = field(default_factory=SftMix)
    # Records longer than this (all messages, in characters) are dropped so that records fit the tiny
    # model's 512-token context (~3.5 characters per token); 0 = no limit.
    max_chars: int = 1800
    # Training records per task beyond the mix's cap, written to sft_train_extra.jsonl (task -> count): the next
    # ones of the same seeded draw, so sft_train.jsonl is unchanged and the two files share no record. Why: the
    # train split holds many more records of some tasks than the cap keeps, and a recipe that needs them (more
    # clause-presence examples) adds the file instead of changing the one every other recipe trains on.
    extra_train: dict[str, int] = field(default_factory=lambda: {"cuad_presence": 1800})

    def problems(self) -> list[Problem]:
        found = problem_if(self.max_chars < 0, "max_chars", self.max_chars, "0 (no limit) or a positive character count")
        for task, count in (self.extra_train or {}).items():
            found += problem_if(task not in SFT_TASKS, f"extra_train.{task}", task, f"one of {', '.join(SFT_TASKS)}")
            found += problem_if(not isinstance(count, int) or isinstance(count, bool) or count < 0,
                                f"extra_train.{task}", count, "a whole number of records, 0 or more")
        return found


@dataclass
class PretrainSection:
    max_bytes: int = 3_000_000
    # Share of the budget given to Terms-of-Service text; contracts fill the rest.
    claudette_share: float = 0.3

    def problems(self) -> list[Problem]:
        found = problem_if(self.max_bytes < 0, "max_bytes", self.max_bytes, "0 or more bytes")
        found += problem_if(not 0 <= self.claudette_share <= 1, "claudette_share", self.claudette_share, "a fraction in [0, 1]")
        return found


@dataclass
class RedactSection:
    # PII redaction (data/redact.py) of every record and the pretraining text, with a report of counts
    # (redaction_report.json). Off by default: CUAD and CLAUDETTE are public filings and published terms, and
    # their parties, notice addresses and signatories are gold answers of the clause tasks (Parties, Notice...);
    # the shipped files stay byte-identical to this build. Turn it on for private contracts.
    enabled: bool = False
    entities: list[str] = field(default_factory=lambda: ["email", "phone", "ssn", "ein", "card", "iban", "account",
                                                         "address", "person"])
    style: Literal["label", "indexed", "mask"] = "label"  # [EMAIL] | [PERSON_1] | ***** (mask keeps offsets)

    def problems(self) -> list[Problem]:
        from lexalign.data.redact import ENTITY_TYPES

        unknown = sorted(set(self.entities) - set(ENTITY_TYPES))
        found = problem_if(bool(unknown), "entities", unknown, f"unknown PII types; expected some of {', '.join(ENTITY_TYPES)}")
        found += problem_if(self.enabled and not self.entities, "entities", self.entities, "name at least one PII type")
        return found


@dataclass
class DataBuildConfig:
    # Folder with cuad/, claudette/, acord/ (relative paths are from the current directory).
    source: Path = Path("../shared/data")
    # Output folder; null = the package's shipped datasets (data/shipped).
    out: Path | None = None
    seed: int = 1234
    splits: SplitSection = field(default_factory=SplitSection)
    cuad: CuadSection = field(default_factory=CuadSection)
    claudette: ClaudetteSection = field(default_factory=ClaudetteSection)
    acord: AcordSection = field(default_factory=AcordSection)
    sft: SftSection = field(default_factory=SftSection)
    pretrain: PretrainSection = field(default_factory=PretrainSection)
    redact: RedactSection = field(default_factory=RedactSection)


def run_build(config_path: str | Path | None, overrides: list[str] | None = None, *, source: str | Path | None = None,
              out: str | Path | None = None) -> Path:
    """The CLI entry: config (defaults < YAML < key=value), --source/--out beat the config."""
    config = load_config(DataBuildConfig, config_path, overrides)
    if source is not None:
        config.source = Path(source)
    if out is not None:
        config.out = Path(out)
    from lexalign.runs import writes_to

    with writes_to(config.out or shipped_dir(), "dataset folder"):  # disk full / read-only: a clear error
        return build(config)


# --------------------------------------------------------------------------- helpers


def record_key(record: BaseModel) -> str:
    """What makes two records duplicates: their content without meta."""
    return to_json_line(record.model_dump(mode="json", exclude={"meta"}, exclude_none=True))


def allocate(cap: int, weights: dict[str, float], available: dict[str, int]) -> dict[str, int]:
    """Split ``cap`` records over tasks by weight; what a short task cannot use goes to the others."""
    if cap == 0:
        return {t: (available[t] if weights[t] > 0 else 0) for t in weights}
    alloc = {t: 0 for t in weights}
    open_tasks = [t for t in weights if weights[t] > 0 and available[t] > 0]
    remaining = cap
    while remaining > 0 and open_tasks:
        total = sum(weights[t] for t in open_tasks)
        grants = {t: min(available[t] - alloc[t], int(remaining * weights[t] / total)) for t in open_tasks}
        if sum(grants.values()) == 0:  # fewer records left than tasks: one each, in order
            grants = {t: 0 for t in open_tasks}
            for t in open_tasks[:remaining]:
                grants[t] = 1
        for t, n in grants.items():
            alloc[t] += n
            remaining -= n
        open_tasks = [t for t in open_tasks if alloc[t] < available[t]]
    return alloc


def dedupe(records: list[Any], taken: set[str]) -> list[Any]:
    """Drop exact duplicates (and records whose content is already in ``taken``); updates ``taken``."""
    kept = []
    for record in records:
        key = record_key(record)
        if key not in taken:
            taken.add(key)
            kept.append(record)
    return kept


def _take_bytes(text: str, budget: int) -> str:
    """The longest prefix of whole lines that fits ``budget`` UTF-8 bytes."""
    if len(text.encode("utf-8")) <= budget:
        return text
    kept, used = [], 0
    for line in text.split("\n"):
        size = len(line.encode("utf-8")) + 1
        if used + size > budget:
            break
        kept.append(line)
        used += size
    return "\n".join(kept).strip()


def build_pretrain_corpus(cuad_docs: dict[str, str], tos_docs: dict[str, str], max_bytes: int,
                          claudette_share: float, seed: int) -> str:
    """Train-split contract and ToS text (already whitespace-normalized), capped at ``max_bytes`` UTF-8 bytes."""
    separator = "\n\n"
    chosen: list[tuple[str, str]] = []

    def fill(docs: dict[str, str], budget: int, salt: str) -> int:
        used = 0
        for doc_id in hash_order(docs, seed, "pretrain", salt):
            room = budget - used - len(separator)
            if room < 200:
                break
            text = _take_bytes(docs[doc_id], room)
            if text:
                chosen.append((f"{salt}:{doc_id}", text))
                used += len(text.encode("utf-8")) + len(separator)
        return used

    used = fill(tos_docs, int(max_bytes * claudette_share), "claudette")
    fill(cuad_docs, max_bytes - used, "cuad")
    ordered = hash_order(chosen, seed, "pretrain-order", key=lambda item: item[0])
    return "".join(text + separator for _, text in ordered)


# --------------------------------------------------------------------------- build


def check_source(source: Path) -> None:
    missing = [name for name in ("cuad", "claudette", "acord") if not (source / name).is_dir()]
    if missing:
        raise DataError(f"{source}: not a corpora folder (missing {', '.join(m + '/' for m in missing)}); pass --source pointing at a "
                        "folder with cuad/, claudette/ and acord/ (the layout of ../shared/data, see its README)")


def select_sft(candidates: dict[str, dict[str, list[ChatRecord]]], config: DataBuildConfig) -> dict[str, list[ChatRecord]]:
    """Dedupe, keep valid/test free of train content, cap per split by the task mix, shuffle deterministically."""
    weights = {t: getattr(config.sft.mix, t) for t in SFT_TASKS}
    seen: set[str] = set()  # train first, so a valid/test record never repeats train content
    selected: dict[str, list[ChatRecord]] = {}
    limit = config.sft.max_chars

    def fits(record: ChatRecord) -> bool:
        return not limit or sum(len(m.content) for m in record.messages) <= limit

    extra = config.sft.extra_train or {}
    for split in SPLITS:
        tasks = {t: dedupe([r for r in candidates.get(split, {}).get(t, []) if fits(r)], seen) for t in SFT_TASKS}
        alloc = allocate(getattr(config.sft.max_records, split), weights, {t: len(r) for t, r in tasks.items()})
        records, extra_records = [], []
        for task in SFT_TASKS:
            drawn = hash_order(tasks[task], config.seed, "select", split, task, key=record_key)
            records += drawn[:alloc[task]]
            if split == "train":
                extra_records += drawn[alloc[task]:alloc[task] + extra.get(task, 0)]
        selected[split] = hash_order(records, config.seed, "order", split, key=record_key)
        logger.info("SFT %s: %d records (%s)", split, len(records),
                    ", ".join(f"{t} {alloc[t]}/{len(tasks[t])}" for t in SFT_TASKS))
        if split == "train" and extra:
            selected[EXTRA_TRAIN] = hash_order(extra_records, config.seed, "order", EXTRA_TRAIN, key=record_key)
            logger.info("SFT %s: %d records (%s)", EXTRA_TRAIN, len(extra_records),
                        ", ".join(f"{t} {min(n, len(tasks[t]) - alloc[t])}/{n}" for t, n in extra.items()))
    return selected


def build(config: DataBuildConfig) -> Path:
    started = time.time()
    source = Path(config.source)
    out = Path(config.out) if config.out else shipped_dir()
    check_source(source)

    contracts, categories, cuad_sources = cuad.load_cuad(source / "cuad")
    tos_documents, claudette_sources = claudette.load_claudette(source / "claudette")
    queries, corpus, qrels, acord_sources = acord.load_acord(source / "acord")

    cuad_split = assign_splits(contracts, config.seed, config.splits.valid_fraction, config.splits.test_fraction, "cuad")
    tos_split = assign_splits([d.company for d in tos_documents], config.seed, config.splits.valid_fraction,
                              config.splits.test_fraction, "claudette")
    acord_split = acord.assign_acord_splits(queries, config.seed, config.splits.acord_test_fraction)

    c = config.cuad
    cuad_records = cuad.build_cuad_records(
        contracts, categories, cuad_split, window_chars=c.window_chars, window_overlap=c.window_overlap,
        max_answer_chars=c.max_answer_chars, positives_per_clause=c.positives_per_clause,
        negative_ratio=c.negative_ratio, normalize_categories=c.normalize_categories, seed=config.seed)
    tos_records = claudette.build_claudette_records(
        tos_documents, tos_split, unfair_levels=config.claudette.unfair_levels, fair_ratio=config.claudette.fair_ratio,
        min_fair_chars=config.claudette.min_fair_chars, seed=config.seed)
    candidates = {split: {
        "cuad_extract": cuad_records.get(split, {}).get("extract", []),
        "cuad_presence": cuad_records.get(split, {}).get("presence", []),
        "cuad_normalize": cuad_records.get(split, {}).get("normalize", []),
        "claudette_unfair": tos_records.get(split, []),
    } for split in SPLITS}
    sft = select_sft(candidates, config)

    a = config.acord
    rankings, pairs = acord.build_acord(queries, corpus, qrels, acord_split, group_size=a.group_size,
                                        groups_per_query=a.groups_per_query, zero_star_per_group=a.zero_star_per_group,
                                        max_response_chars=a.max_response_chars, seed=config.seed)
    prompt_ids = [r.prompt_id for split in SPLITS for r in rankings.get(split, [])]
    if len(prompt_ids) != len(set(prompt_ids)):
        raise DataError("ACORD: duplicate prompt_id values; this is a bug in the builder")
    seen_pairs: set[str] = set()
    pairs = {split: dedupe(pairs.get(split, []), seen_pairs) for split in SPLITS}

    pretrain = build_pretrain_corpus(
        {d: contracts[d].text for d in contracts if cuad_split[d] == "train"},
        {d.company: "\n".join(s.text for s in d.sentences) for d in tos_documents if tos_split[d.company] == "train"},
        config.pretrain.max_bytes, config.pretrain.claudette_share, config.seed)

    redaction = None
    if config.redact.enabled:
        from lexalign.data.redact import redact_build

        sft, rankings, pairs, pretrain, redaction = redact_build(sft, rankings, pairs, pretrain,
                                                                 config.redact.entities, config.redact.style)
        logger.info("PII redaction: %s", redaction.totals())

    # ------------------------------------------------------------------ write
    out.mkdir(parents=True, exist_ok=True)
    if redaction is not None:
        write_text_atomic(out / "redaction_report.json", json.dumps(redaction.as_dict(), indent=2, sort_keys=True) + "\n")
    else:
        (out / "redaction_report.json").unlink(missing_ok=True)
    if EXTRA_TRAIN in sft:
        write_jsonl(out / f"sft_{EXTRA_TRAIN}.jsonl", sft[EXTRA_TRAIN])
    else:
        (out / f"sft_{EXTRA_TRAIN}.jsonl").unlink(missing_ok=True)
    for split in SPLITS:
        write_jsonl(out / f"sft_{split}.jsonl", sft[split])
        write_jsonl(out / f"acord_rankings_{split}.jsonl", rankings.get(split, []))
        write_jsonl(out / f"acord_pairs_{split}.jsonl", pairs[split])
    write_text_atomic(out / "pretrain_corpus.txt", pretrain)

    split_docs = {
        "cuad": cuad_split,
        "claudette": tos_split,
        "acord": acord_split,
    }
    splits_summary = {name: {split: {"documents": sum(1 for s in mapping.values() if s == split),
                                     "sha256": docs_hash([d for d, s in mapping.items() if s == split])}
                             for split in SPLITS}
                      for name, mapping in split_docs.items()}
    stats = compute_stats(out)
    stats["splits"] = splits_summary
    write_text_atomic(out / "stats.json", json.dumps(stats, indent=2, sort_keys=True, ensure_ascii=False) + "\n")

    licenses = out / "LICENSES"
    licenses.mkdir(exist_ok=True)
    for relative, name in LICENSE_FILES.items():
        if not (source / relative).is_file():
            raise DataError(f"{source / relative}: license file not found; the build must ship it")
        shutil.copyfile(source / relative, licenses / name)
    write_text_atomic(out / "ATTRIBUTION.md", attribution.attribution_markdown(config, stats))

    used_sources = cuad_sources + claudette_sources + acord_sources + [source / r for r in LICENSE_FILES]
    write_manifest(out, config, source, used_sources)
    logger.info("data build done in %.1f s: %s", time.time() - started, out)
    return out


# --------------------------------------------------------------------------- manifest


def output_files(out: Path) -> list[Path]:
    return sorted(p for p in out.rglob("*") if p.is_file() and p.name != "manifest.json" and not p.name.endswith(".tmp"))


def _count_lines(path: Path) -> int | None:
    if path.suffix != ".jsonl":
        return None
    return sum(1 for line in path.read_text(encoding="utf-8").splitlines() if line.strip())


def write_manifest(out: Path, config: DataBuildConfig, source: Path, sources: list[Path]) -> None:
    """sha256 of every output and source file; paths relative, no timestamps (identical rebuilds)."""
    settings = to_dict(config)
    settings.pop("source")
    settings.pop("out")
    outputs = {}
    for path in output_files(out):
        entry: dict[str, Any] = {"sha256": file_sha256(path), "bytes": path.stat().st_size}
        lines = _count_lines(path)
        if lines is not None:
            entry["records"] = lines
        outputs[path.relative_to(out).as_posix()] = entry
    manifest = {
        "format": MANIFEST_FORMAT,
        "builder": "lexalign data build",
        "config": settings,
        "outputs": outputs,
        "sources": {p.relative_to(source).as_posix(): file_sha256(p) for p in sorted(set(sources))},
    }
    write_text_atomic(out / "manifest.json", json.dumps(manifest, indent=2, sort_keys=True, ensure_ascii=False) + "\n")


def verify_against(manifest: str | Path | dict[str, Any], out_dir: str | Path | None = None,
                   source: str | Path | None = None) -> list[str]:
    """Differences between a manifest and a built folder (and, with ``source``, the corpora); [] = identical.

    ``manifest`` is a manifest.json path or its parsed content; ``out_dir`` defaults to the manifest's folder.
    """
    if isinstance(manifest, dict):
        if out_dir is None:
            raise ValueError("out_dir is required when the manifest is given as a dict")
        data = manifest
    else:
        path = Path(manifest)
        if not path.is_file():
            raise DataError(f"{path}: manifest not found; build the data first (lexalign data build)")
        data = json.loads(path.read_text(encoding="utf-8"))
        out_dir = out_dir if out_dir is not None else path.parent
    out_dir = Path(out_dir)
    problems = []
    expected = data.get("outputs", {})
    for name, entry in sorted(expected.items()):
        file = out_dir / name
        if not file.is_file():
            problems.append(f"{name}: missing in {out_dir}")
        elif file_sha256(file) != entry["sha256"]:
            problems.append(f"{name}: sha256 differs from the manifest")
    for file in output_files(out_dir):
        name = file.relative_to(out_dir).as_posix()
        if name not in expected:
            problems.append(f"{name}: not in the manifest")
    if source is not None:
        for name, digest in sorted(data.get("sources", {}).items()):
            file = Path(source) / name
            if not file.is_file():
                problems.append(f"source {name}: missing in {source}")
            elif file_sha256(file) != digest:
                problems.append(f"source {name}: sha256 differs from the manifest")
    return problems
