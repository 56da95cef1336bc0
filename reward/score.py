"""Score (prompt, response) pairs with a trained reward model from the command line.

    lexalign score --reward runs/tiny/reward --prompt "Find the governing law clause ..." \\
        --response "\\"This Agreement shall be governed by ...\\"" --response "Not present."
    lexalign score --reward runs/tiny/reward --file data/shipped/acord_pairs_test.jsonl

``--reward`` is a reward run directory (its ``model`` output) or the model folder itself. With ``--file``
(preference-pair JSONL) every pair is scored and the pairwise accuracy is printed (ties count one half).
Texts are scored in the reward model's one format (``lexalign.modeling.reward_input_ids``).
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path
from typing import Any

from lexalign.errors import LexalignError

logger = logging.getLogger(__name__)


def reward_model_dir(path: str | Path) -> Path:
    """A reward run directory -> its model folder; a model folder stays as it is."""
    from lexalign.runs import read_manifest, require_complete

    path = Path(path)
    if (path / "manifest.json").is_file():
        require_complete(path, "--reward")
        manifest = read_manifest(path)
        if manifest.get("stage") != "reward" or not manifest.get("outputs", {}).get("model"):
            raise LexalignError(f"--reward {path}: a {manifest.get('stage')} run, not a reward run; "
                                "pass the output directory of `lexalign reward`")
        return path / manifest["outputs"]["model"]
    if (path / "config.json").is_file():
        return path
    raise LexalignError(f"--reward {path}: neither a reward run directory (manifest.json) nor a model folder "
                        "(config.json); train one with `lexalign reward`")


def max_length_of(folder: Path) -> int | None:
    from lexalign.modeling import reward_model_info

    return reward_model_info(folder).get("max_length")


def score_file(model: Any, tokenizer: Any, file: str | Path, max_length: int | None) -> dict[str, Any]:
    from lexalign.reward.train import pairwise_accuracy, score_pairs
    from lexalign.training import load_pairs

    pairs = load_pairs([str(file)])
    chosen, rejected = score_pairs(model, tokenizer, pairs, max_length or 1024)
    return {"file": str(file), "pairs": len(pairs), "pairwise_accuracy": pairwise_accuracy(chosen, rejected),
            "mean_gap": sum(c - r for c, r in zip(chosen, rejected)) / len(pairs),
            "scores": [{"chosen": c, "rejected": r} for c, r in zip(chosen, rejected)]}


def run_score(args: argparse.Namespace) -> None:
    from lexalign.modeling import load_reward_model, reward_scores

    if bool(args.file) == bool(args.prompt):
        raise LexalignError("give either --prompt with one or more --response, or --file PAIRS.jsonl")
    if args.prompt and not args.response:
        raise LexalignError("--prompt needs at least one --response to score")
    folder = reward_model_dir(args.reward)
    model, tokenizer = load_reward_model(folder, args.device)
    max_length = max_length_of(folder)
    if args.file:
        result = score_file(model, tokenizer, args.file, max_length)
        print(f"{result['file']}: {result['pairs']} pairs, pairwise accuracy {result['pairwise_accuracy']:.3f}, "
              f"mean score gap (chosen - rejected) {result['mean_gap']:+.3f}")
        return
    prompt = ([{"role": "system", "content": args.system}] if args.system else []) + \
        [{"role": "user", "content": args.prompt}]
    scores = reward_scores(model, tokenizer, [prompt] * len(args.response), args.response, max_length)
    for score, response in sorted(zip(scores, args.response), key=lambda item: -item[0]):
        shown = response if len(response) <= 70 else response[:67] + "..."
        print(f"{score:+.4f}  {shown}")
