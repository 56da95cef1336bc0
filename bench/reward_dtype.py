"""A trained reward model scored in fp32 and in bf16: time, held-out pairwise accuracy, decisions that differ.

The reward stage trains under bf16 autocast (configs/smollm2/reward.yaml); its consumers load the saved model in
the dtype it trained in where the CPU has bf16 instructions (``lexalign.modeling.load_reward_model``). This script
measures what that choice costs and gains on held-out pairs, both loads in the same run (fp32 first):

    python bench/reward_dtype.py runs/smollm2/reward \\
        --pairs shipped:acord_pairs_valid.jsonl runs/smollm2/preferences-valid/preferences.jsonl

Prints per load (fp32, then the dtype ``load_reward_model`` picks on this machine) the scoring time and the pairwise accuracy per file (chance 0.5), then the speed-up, the pairs
whose decision (chosen above rejected or not) differs, and the largest score difference. Validation pairs only.
"""

from __future__ import annotations

import argparse
import time

import torch

from common import load_average
from lexalign.modeling import load_reward_model
from lexalign.reward.score import max_length_of, reward_model_dir
from lexalign.reward.train import pairwise_accuracy, score_pairs
from lexalign.training import load_pairs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("reward", help="reward run directory or its model folder")
    parser.add_argument("--pairs", nargs="+", required=True, help="held-out preference-pair files (validation)")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()

    folder = reward_model_dir(args.reward)
    max_length = max_length_of(folder) or 1024
    files = [(name, load_pairs([name])) for name in args.pairs]
    print(f"reward model {folder}, {sum(len(p) for _, p in files)} held-out pairs, max_length {max_length}, "
          f"1-min load before: {load_average()}")
    scores: dict[torch.dtype, list[tuple[list[float], list[float]]]] = {}
    seconds: dict[torch.dtype, float] = {}
    for trainable in (True, False):  # fp32 weights (a trainable copy), then the frozen scorer every consumer loads
        model, tokenizer = load_reward_model(folder, "cpu", args.threads, trainable=trainable)
        dtype = next(model.parameters()).dtype
        start = time.perf_counter()
        scores[dtype] = [score_pairs(model, tokenizer, pairs, max_length) for _, pairs in files]
        seconds[dtype] = time.perf_counter() - start
        accuracies = ", ".join(f"{name} {pairwise_accuracy(*s):.3f} (n {len(s[0])})"
                               for (name, _), s in zip(files, scores[dtype], strict=True))
        print(f"{str(dtype).removeprefix('torch.'):>8}: {seconds[dtype]:6.1f} s; pairwise accuracy {accuracies}; "
              f"chance 0.5; 1-min load after: {load_average()}")
        del model
    if set(scores) != {torch.float32, torch.bfloat16}:
        print("the frozen scorer loads in fp32 here (not a bf16-trained model, or no bf16 instructions): nothing to compare")
        return
    flips, largest, total = 0, 0.0, 0
    for (c32, r32), (c16, r16) in zip(scores[torch.float32], scores[torch.bfloat16], strict=True):
        for a, b, x, y in zip(c32, r32, c16, r16, strict=True):
            flips += (a > b) != (x > y)
            largest = max(largest, abs(a - x), abs(b - y))
            total += 1
    print(f"bf16 speed-up {seconds[torch.float32] / seconds[torch.bfloat16]:.2f}x; decisions that differ: {flips} of "
          f"{total}; largest score difference {largest:.4f}")


if __name__ == "__main__":
    main()
