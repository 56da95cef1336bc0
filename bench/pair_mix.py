"""What a set of preference pairs teaches beyond the prompt: pairs per task and per kind of answer on each side.

    python bench/pair_mix.py runs/smollm2/preferences-own/preferences.jsonl [more files] [--markdown]
                             [--balance-fixed-answers | --drop-fixed-answer-pairs]
                             (what data.balance_fixed_answers or data.drop_fixed_answer_pairs keeps of the whole
                              file, seed 0: DPO's training pairs when its valid files are given and max_train_pairs
                              is 0, as in the pipeline)

An extraction answer is NP ("Not present."), Q (quoted lines) or other; an unfair-clause answer is Fair or Unfair
(by its verdict); a Yes/No answer is itself. ``NP > Q 38, Q > NP 7`` says that 38 pairs prefer "Not present." over
a quote and 7 the reverse: a DPO run on them learns to say "Not present." more often whatever the excerpt (see
bench/RESULTS.md, 2026-11-28). The task comes from the pair's ``meta.task`` (exports since 2026-11-28), else "?".
"""

from __future__ import annotations

import argparse
import sys
from collections import Counter
from pathlib import Path

from lexalign.data.jsonl import DataError, read_jsonl
from lexalign.data.prompts import parse_unfair_answer
from lexalign.data.schemas import PreferencePair
from lexalign.evaluation.gold import is_quoted
from lexalign.evaluation.metrics import is_not_present
from lexalign.training import answer_text, balance_fixed_answers, drop_fixed_answer_pairs


def answer_kind(task: str, text: str) -> str:
    if task == "extract":
        return "NP" if is_not_present(text) else "Q" if is_quoted(text) else "other"
    if task == "unfair":
        verdict, _ = parse_unfair_answer(text)
        return {True: "Unfair", False: "Fair", None: "other"}[verdict]
    if task == "presence":
        word = text.strip().rstrip(".").lower()
        return word.capitalize() if word in ("yes", "no") else "other"
    return "answer"


def pair_mix(path: Path, balance: bool = False, drop_fixed: bool = False, seed: int = 0) -> Counter[tuple[str, str]]:
    pairs = read_jsonl(path, PreferencePair)
    if balance:
        pairs = balance_fixed_answers(pairs, seed)
    if drop_fixed:
        pairs = drop_fixed_answer_pairs(pairs)
    counts: Counter[tuple[str, str]] = Counter()
    for pair in pairs:
        task = str((pair.meta or {}).get("task") or "?")
        chosen, rejected = answer_kind(task, answer_text(pair.chosen)), answer_kind(task, answer_text(pair.rejected))
        counts[(task, f"{chosen} > {rejected}")] += 1
    return counts


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("files", nargs="+", type=Path, help="preferences.jsonl files (lexalign prefs export)")
    parser.add_argument("--markdown", action="store_true", help="one table row per file")
    kept = parser.add_mutually_exclusive_group()
    kept.add_argument("--balance-fixed-answers", action="store_true",
                      help="count what remains after data.balance_fixed_answers (seed 0, as DPO's split_seed)")
    kept.add_argument("--drop-fixed-answer-pairs", action="store_true",
                      help="count what remains after data.drop_fixed_answer_pairs")
    args = parser.parse_args(argv)
    try:
        mixes = {path: pair_mix(path, args.balance_fixed_answers, args.drop_fixed_answer_pairs) for path in args.files}
    except (DataError, OSError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    for path, counts in mixes.items():
        shown = ", ".join(f"{task} {kinds} {n}" for (task, kinds), n in sorted(counts.items()))
        print(f"| {path} | {sum(counts.values())} | {shown} |" if args.markdown
              else f"{path}: {sum(counts.values())} pairs: {shown}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
