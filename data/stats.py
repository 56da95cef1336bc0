"""Counts, lengths and label balance of a built dataset folder (``lexalign data stats [DIR]``).

``compute_stats`` reads and validates the files themselves, so it describes what is really there;
``lexalign data build`` stores its result (plus the split document lists) as stats.json.
"""

from __future__ import annotations

import json
import math
from collections import Counter
from pathlib import Path
from typing import Any

from lexalign.data.jsonl import DataError, read_jsonl
from lexalign.data.paths import shipped_dir
from lexalign.data.schemas import ChatRecord, PreferencePair, RankingRecord
from lexalign.data.splits import SPLITS

PERCENTILES = (50, 90, 95, 99, 100)


def percentiles(values: list[int]) -> dict[str, int]:
    """Nearest-rank percentiles (integers, so stats.json is identical across machines)."""
    if not values:
        return {}
    ordered = sorted(values)
    return {f"p{p}" if p < 100 else "max": ordered[max(0, math.ceil(p / 100 * len(ordered)) - 1)] for p in PERCENTILES}


def _text(value: Any) -> str:
    return value if isinstance(value, str) else "\n".join(m.content for m in value)


def _sft_stats(records: list[ChatRecord]) -> dict[str, Any]:
    by_task: Counter[str] = Counter()
    labels: dict[str, Counter[str]] = {}
    docs: dict[str, set[str]] = {}
    prompt_chars, answer_chars, total_chars = [], [], []
    for record in records:
        meta = record.meta or {}
        name = f"{meta.get('source', '?')}/{meta.get('task', '?')}"
        by_task[name] += 1
        docs.setdefault(meta.get("source", "?"), set()).add(str(meta.get("doc_id")))
        balance = labels.setdefault(name, Counter())
        if meta.get("task") in ("extract", "presence"):
            balance["present" if meta.get("present") else "absent"] += 1
        elif meta.get("task") == "normalize":
            balance[meta.get("category", "?")] += 1
        elif meta.get("task") == "unfair":
            balance["unfair" if meta.get("unfair") else "fair"] += 1
            for label in meta.get("labels", []):
                balance[f"category: {label}"] += 1
        prompt = sum(len(m.content) for m in record.messages[:-1])
        answer = len(record.messages[-1].content)
        prompt_chars.append(prompt)
        answer_chars.append(answer)
        total_chars.append(prompt + answer)
    return {
        "records": len(records),
        "by_source_task": dict(sorted(by_task.items())),
        "labels": {k: dict(sorted(v.items())) for k, v in sorted(labels.items())},
        "documents": {k: len(v) for k, v in sorted(docs.items())},
        "chars": {"prompt": percentiles(prompt_chars), "answer": percentiles(answer_chars), "total": percentiles(total_chars)},
    }


def _ranking_stats(records: list[RankingRecord]) -> dict[str, Any]:
    stars: Counter[str] = Counter()
    for record in records:
        for value in (record.meta or {}).get("stars", []):
            stars[str(value)] += 1
    return {
        "records": len(records),
        "queries": len({(r.meta or {}).get("query_id", r.prompt_id) for r in records}),
        "responses": sum(len(r.responses) for r in records),
        "stars": dict(sorted(stars.items())),
        "ties": sum(1 for r in records if len(set(r.ranks)) < len(r.ranks)),
        "chars": {"prompt": percentiles([len(_text(r.prompt)) for r in records]),
                  "response": percentiles([len(t) for r in records for t in r.responses])},
    }


def _pair_stats(records: list[PreferencePair]) -> dict[str, Any]:
    margins = Counter(f"{p.margin:g}" for p in records if p.margin is not None)
    return {
        "pairs": len(records),
        "margin": dict(sorted(margins.items())),
        "chars": {"chosen": percentiles([len(_text(p.chosen)) for p in records]),
                  "rejected": percentiles([len(_text(p.rejected)) for p in records])},
    }


def compute_stats(folder: str | Path) -> dict[str, Any]:
    folder = Path(folder)
    stats: dict[str, Any] = {"sft": {}, "acord_rankings": {}, "acord_pairs": {}}
    for split in SPLITS:
        for section, prefix, schema, summarize in (
            ("sft", "sft", ChatRecord, _sft_stats),
            ("acord_rankings", "acord_rankings", RankingRecord, _ranking_stats),
            ("acord_pairs", "acord_pairs", PreferencePair, _pair_stats),
        ):
            path = folder / f"{prefix}_{split}.jsonl"
            if not path.is_file():
                continue
            if path.stat().st_size == 0:  # an empty split (e.g. a tiny corpus) is not an error here
                stats[section][split] = summarize([])
                continue
            stats[section][split] = summarize(read_jsonl(path, schema))
    extra = folder / "sft_train_extra.jsonl"  # more training records, when the build was asked for them
    if extra.is_file():
        stats["sft"]["train_extra"] = _sft_stats(read_jsonl(extra, ChatRecord))
    corpus = folder / "pretrain_corpus.txt"
    if corpus.is_file():
        text = corpus.read_text(encoding="utf-8")
        stats["pretrain"] = {"bytes": len(text.encode("utf-8")), "chars": len(text), "lines": text.count("\n")}
    return stats


# --------------------------------------------------------------------------- printing


def _table(title: str, header: list[str], rows: list[list[Any]]) -> str:
    cells = [header] + [[str(c) for c in row] for row in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(header))]
    lines = [title, "  " + "  ".join(h.ljust(w) for h, w in zip(header, widths)),
             "  " + "  ".join("-" * w for w in widths)]
    lines += ["  " + "  ".join(c.rjust(w) if c.replace(".", "").isdigit() else c.ljust(w) for c, w in zip(row, widths))
              for row in cells[1:]]
    return "\n".join(lines)


def _pct_row(name: str, values: dict[str, int]) -> list[Any]:
    return [name] + [values.get(k, "-") for k in ("p50", "p90", "p95", "p99", "max")]


def format_stats(stats: dict[str, Any], folder: Path) -> str:
    blocks = [f"datasets in {folder}"]
    sft = stats.get("sft", {})
    if sft:
        tasks = sorted({t for s in sft.values() for t in s["by_source_task"]})
        blocks.append(_table("SFT chat records (source/task x split)", ["source/task"] + list(sft),
                             [[t] + [sft[s]["by_source_task"].get(t, 0) for s in sft] for t in tasks]
                             + [["total"] + [sft[s]["records"] for s in sft]]))
        rows = []
        for split, s in sft.items():
            for task, balance in s["labels"].items():
                for label, n in balance.items():
                    rows.append([split, task, label, n])
        blocks.append(_table("SFT label balance", ["split", "source/task", "label", "records"], rows))
        blocks.append(_table("SFT lengths in characters (prompt = system + user)", ["split/part", "p50", "p90", "p95", "p99", "max"],
                             [_pct_row(f"{split} {part}", s["chars"][part]) for split, s in sft.items()
                              for part in ("prompt", "answer", "total")]))
    rankings = stats.get("acord_rankings", {})
    if rankings:
        star_keys = sorted({k for s in rankings.values() for k in s["stars"]})
        blocks.append(_table("ACORD ranking groups (stars: 1-5 from lawyers)",
                             ["split", "groups", "queries", "responses", "with ties"] + [f"{k}*" for k in star_keys],
                             [[split, s["records"], s["queries"], s["responses"], s["ties"]]
                              + [s["stars"].get(k, 0) for k in star_keys] for split, s in rankings.items()]))
        blocks.append(_table("ACORD response lengths in characters", ["split", "p50", "p90", "p95", "p99", "max"],
                             [_pct_row(split, s["chars"]["response"]) for split, s in rankings.items()]))
    pairs = stats.get("acord_pairs", {})
    if pairs:
        margin_keys = sorted({k for s in pairs.values() for k in s["margin"]}, key=float)
        blocks.append(_table("ACORD preference pairs (margin = star gap)", ["split", "pairs"] + [f"m={k}" for k in margin_keys],
                             [[split, s["pairs"]] + [s["margin"].get(k, 0) for k in margin_keys] for split, s in pairs.items()]))
    if "pretrain" in stats:
        p = stats["pretrain"]
        blocks.append(f"pretraining corpus: {p['bytes']:,} bytes, {p['chars']:,} characters, {p['lines']:,} lines")
    if "splits" in stats:
        rows = [[source, split, v["documents"], v["sha256"][:12]] for source, splits in stats["splits"].items()
                for split, v in splits.items()]
        blocks.append(_table("documents per split (split unit: CUAD contract, CLAUDETTE company, ACORD query)",
                             ["source", "split", "documents", "list sha256"], rows))
    return "\n\n".join(blocks)


def load_stats(folder: Path) -> dict[str, Any]:
    if not folder.is_dir():
        raise DataError(f"{folder}: no such folder; build one with `lexalign data build --out {folder}`")
    stats = compute_stats(folder)
    if not any(stats.get(k) for k in ("sft", "acord_rankings", "acord_pairs", "pretrain")):
        raise DataError(f"{folder}: no dataset files (sft_*.jsonl, acord_*.jsonl, pretrain_corpus.txt) found")
    saved = folder / "stats.json"
    if saved.is_file():
        stats["splits"] = json.loads(saved.read_text(encoding="utf-8")).get("splits", {})
    return stats


def data_card(stats: dict[str, Any], folder: Path) -> str:
    """A short markdown card: what the datasets hold, where they come from, and their license."""
    lines = [f"# Data card: `{folder}`", ""]
    sft = stats.get("sft", {})
    if sft:
        lines += ["| SFT chat records | " + " | ".join(sft) + " |", "|---|" + "---|" * len(sft)]
        tasks = sorted({t for s in sft.values() for t in s["by_source_task"]})
        lines += [f"| {t} | " + " | ".join(str(sft[s]["by_source_task"].get(t, 0)) for s in sft) + " |" for t in tasks]
        lines += ["| **total** | " + " | ".join(f"**{sft[s]['records']}**" for s in sft) + " |", ""]
    rankings, pairs = stats.get("acord_rankings", {}), stats.get("acord_pairs", {})
    if rankings or pairs:
        splits = list(rankings or pairs)
        lines += ["| ACORD (lawyers' 1-5 star ratings) | " + " | ".join(splits) + " |", "|---|" + "---|" * len(splits)]
        if rankings:
            lines.append("| ranking groups | " + " | ".join(str(rankings.get(s, {}).get("records", 0)) for s in splits) + " |")
        if pairs:
            lines.append("| preference pairs | " + " | ".join(str(pairs.get(s, {}).get("pairs", 0)) for s in splits) + " |")
        lines.append("")
    if "pretrain" in stats:
        lines += [f"Pretraining corpus: {stats['pretrain']['bytes']:,} bytes of contract text.", ""]
    lines += ["Splits are by document (CUAD contract, CLAUDETTE company, ACORD query), so no document is in two "
              "splits. Sources: CUAD, CLAUDETTE and ACORD, each CC BY 4.0; see `ATTRIBUTION.md` and `LICENSES/` in "
              f"`{folder}`.", ""]
    return "\n".join(lines)


def print_stats(folder: str | Path | None = None, out: str | Path | None = None) -> None:
    """Print the tables for a built folder (default: the shipped datasets); with ``out``, also write
    ``stats.json``, ``stats.txt`` and a data card ``README.md`` there (the pipeline's data step)."""
    folder = Path(folder) if folder is not None else shipped_dir()
    stats = load_stats(folder)
    text = format_stats(stats, folder)
    print(text)
    if out is not None:
        out = Path(out)
        try:
            out.mkdir(parents=True, exist_ok=True)
            (out / "stats.txt").write_text(text + "\n", encoding="utf-8")
            (out / "README.md").write_text(data_card(stats, folder), encoding="utf-8")
            # written last: the pipeline takes stats.json as the sign that the step completed
            (out / "stats.json").write_text(json.dumps(stats, indent=1, sort_keys=True) + "\n", encoding="utf-8")
        except OSError as err:
            raise DataError(f"{out}: cannot write the data statistics ({err.strerror or err})") from None
