"""Reward-model win rate of a policy against another (e.g. DPO or PPO against SFT) on held-out prompts.

    lexalign winrate --reward runs/tiny/reward --policy runs/tiny/dpo [--baseline runs/tiny/sft]

Both policies answer the same prompts with transformers (greedy, so the comparison is deterministic), the
reward model scores every answer in its one format, and a prompt is a win when the policy's answer scores
higher (ties count one half). Reusable pieces: ``load_prompts`` (chat records or preference pairs ->
prompts), ``generate_answers`` (a run's policy -> answers), ``policy_winrate`` (all of it). The DPO and PPO
stages call it at their end (``trained_run_winrate``) when a reward model is configured.
"""

from __future__ import annotations

import argparse
import json
import logging
import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lexalign.config import Problem, problem_if

logger = logging.getLogger(__name__)

Messages = list[dict[str, str]]


@dataclass
class WinRateSection:
    # Reward run that judges; "" = the stage's reward_run (PPO), or no win-rate evaluation (DPO).
    reward_run: str = ""
    # Held-out prompt files: chat records (prompt = all but the last assistant turn) or preference pairs.
    prompts: list[str] = field(default_factory=lambda: ["shipped:acord_pairs_test.jsonl", "shipped:sft_test.jsonl"])
    num_prompts: int = 48  # drawn round-robin from the files; 0 = no win-rate evaluation
    max_new_tokens: int = 64
    max_prompt_tokens: int = 512  # longer prompts are skipped
    batch_size: int = 8
    seed: int = 0

    def problems(self) -> list[Problem]:
        from lexalign.data.paths import resolve_data_path

        found = [Problem(f"prompts[{i}]", "file not found; give a chat-records or preference-pair JSONL file", value)
                 for i, value in enumerate(self.prompts) if not resolve_data_path(value).is_file()]
        found += problem_if(self.num_prompts < 0, "num_prompts", self.num_prompts, "use 0 (skip) or a positive count")
        found += problem_if(self.num_prompts > 0 and not self.prompts, "prompts", self.prompts, "list a prompt file")
        for key in ("max_new_tokens", "max_prompt_tokens", "batch_size"):
            found += problem_if(getattr(self, key) <= 0, key, getattr(self, key), "must be positive")
        return found


# --------------------------------------------------------------------------- prompts


def load_prompts(file: str | Path) -> list[Messages]:
    """Unique prompts of a chat-records file (messages minus the last assistant turn) or a preference-pair file."""
    from lexalign.data.jsonl import DataError, read_jsonl, read_text_lines
    from lexalign.data.paths import resolve_data_path
    from lexalign.data.schemas import ChatRecord, PreferencePair

    path = resolve_data_path(file)
    first = next((line for line in read_text_lines(path) if line.strip()), "")
    try:
        is_chat = "messages" in json.loads(first)
    except (json.JSONDecodeError, TypeError):
        raise DataError(f"{path}:1: not valid JSON; expected chat records or preference pairs") from None
    prompts: list[Messages] = []
    if is_chat:
        prompts = [[m.model_dump() for m in r.messages[:-1]] for r in read_jsonl(path, ChatRecord)]
    else:
        for pair in read_jsonl(path, PreferencePair):
            prompts.append([{"role": "user", "content": pair.prompt}] if isinstance(pair.prompt, str)
                           else [m.model_dump() for m in pair.prompt])
    unique = {json.dumps(p, sort_keys=True): p for p in prompts}
    return list(unique.values())


def sample_prompts(files: list[str], total: int, seed: int, tokenizer: Any = None,
                   max_prompt_tokens: int = 0) -> list[tuple[str, Messages]]:
    """(file, prompt) pairs: ``total`` drawn round-robin from the files (a file with too few prompts leaves its
    share to the others), each file's prompts in a seeded order, only those that fit ``max_prompt_tokens``
    (chat-formatted, with the generation header)."""
    pools = []
    for file in files:
        prompts = load_prompts(file)
        if tokenizer is not None and max_prompt_tokens:
            prompts = [p for p in prompts if len(prompt_ids(tokenizer, p)) <= max_prompt_tokens]
        random.Random(seed).shuffle(prompts)
        pools.append([(file, p) for p in prompts])
    chosen: list[tuple[str, Messages]] = []
    for depth in range(max((len(pool) for pool in pools), default=0)):
        chosen += [pool[depth] for pool in pools if depth < len(pool)]
        if len(chosen) >= total:
            break
    return chosen[:total]


def prompt_ids(tokenizer: Any, messages: Messages) -> list[int]:
    return list(tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=True, return_dict=False))


# --------------------------------------------------------------------------- generation


def load_generator(base: Path, adapter: Path | None, device: Any) -> Any:
    """A policy for generation: the full-precision base (+ its adapter, unmerged), eval mode."""
    import torch
    from transformers import AutoModelForCausalLM

    dtype = torch.float32 if device.type == "cpu" else torch.bfloat16
    model = AutoModelForCausalLM.from_pretrained(str(base), dtype=dtype).to(device)
    if adapter is not None:
        from peft import PeftModel

        model = PeftModel.from_pretrained(model, str(adapter))
    return model.eval()


def generate_answers(model: Any, tokenizer: Any, prompts: list[Messages], max_new_tokens: int,
                     batch_size: int = 8) -> list[dict[str, Any]]:
    """Greedy answers (text, stopped at the end-of-turn token or not, token count), left-padded batches."""
    import torch

    device = next(model.parameters()).device
    answers = []
    for start in range(0, len(prompts), batch_size):
        batch = [prompt_ids(tokenizer, p) for p in prompts[start:start + batch_size]]
        width = max(len(ids) for ids in batch)
        input_ids = torch.tensor([[tokenizer.pad_token_id] * (width - len(ids)) + ids for ids in batch], device=device)
        mask = torch.tensor([[0] * (width - len(ids)) + [1] * len(ids) for ids in batch], device=device)
        with torch.no_grad():
            out = model.generate(input_ids=input_ids, attention_mask=mask, max_new_tokens=max_new_tokens,
                                 do_sample=False, eos_token_id=tokenizer.eos_token_id,
                                 pad_token_id=tokenizer.pad_token_id)
        for row in out[:, width:].tolist():
            stopped = tokenizer.eos_token_id in row
            row = row[: row.index(tokenizer.eos_token_id)] if stopped else row
            row = [t for t in row if t != tokenizer.pad_token_id]
            answers.append({"text": tokenizer.decode(row, skip_special_tokens=True).strip(), "stopped": stopped,
                            "tokens": len(row)})
    return answers


# --------------------------------------------------------------------------- win rate


def win_counts(policy: list[float], baseline: list[float]) -> dict[str, Any]:
    wins = sum(p > b for p, b in zip(policy, baseline))
    ties = sum(p == b for p, b in zip(policy, baseline))
    n = len(policy)
    return {"prompts": n, "wins": wins, "ties": ties, "losses": n - wins - ties,
            "win_rate": (wins + 0.5 * ties) / n if n else None}


def policy_winrate(policy: Any, baseline: Any, reward_dir: Path, section: WinRateSection,
                   device: str = "auto") -> dict[str, Any]:
    """Win rate of ``policy`` over ``baseline`` (each a ``TrainedPolicy``-like object with .base, .adapter,
    .tokenizer_dir) on ``section``'s held-out prompts, judged by the reward model in ``reward_dir``."""
    import gc

    from lexalign.modeling import choose_device, load_reward_model, load_tokenizer, reward_model_info, reward_scores

    target = choose_device(device)
    tokenizer = load_tokenizer(policy.tokenizer_dir)
    items = sample_prompts(section.prompts, section.num_prompts, section.seed, tokenizer, section.max_prompt_tokens)
    prompts = [p for _, p in items]
    logger.info("win rate: %d held-out prompts from %s, greedy, %d new tokens", len(prompts),
                ", ".join(section.prompts), section.max_new_tokens)
    answers = {}
    for label, source in (("policy", policy), ("baseline", baseline)):
        model = load_generator(source.base, source.adapter, target)
        answers[label] = generate_answers(model, load_tokenizer(source.tokenizer_dir), prompts,
                                          section.max_new_tokens, section.batch_size)
        del model
        gc.collect()
    reward, reward_tokenizer = load_reward_model(reward_dir, device)
    max_length = reward_model_info(reward_dir).get("max_length")
    scores = {label: reward_scores(reward, reward_tokenizer, prompts, [a["text"] or " " for a in answers[label]],
                                   max_length) for label in answers}
    del reward
    result = win_counts(scores["policy"], scores["baseline"])
    result.update({
        "mean_score_policy": sum(scores["policy"]) / len(prompts) if prompts else None,
        "mean_score_baseline": sum(scores["baseline"]) / len(prompts) if prompts else None,
        "identical_answers": sum(a["text"] == b["text"] for a, b in zip(answers["policy"], answers["baseline"])),
        "stopped_policy": sum(a["stopped"] for a in answers["policy"]),
        "stopped_baseline": sum(a["stopped"] for a in answers["baseline"]),
        "reward_model": str(reward_dir),
        "max_new_tokens": section.max_new_tokens,
    })
    result["by_file"] = {}
    for file in section.prompts:
        idx = [i for i, (f, _) in enumerate(items) if f == file]
        result["by_file"][file] = win_counts([scores["policy"][i] for i in idx], [scores["baseline"][i] for i in idx])
    result["samples"] = [{"file": f, "prompt": p[-1]["content"][:500], "policy": answers["policy"][i]["text"],
                          "baseline": answers["baseline"][i]["text"], "policy_score": scores["policy"][i],
                          "baseline_score": scores["baseline"][i]} for i, (f, p) in enumerate(items)]
    return result


def write_winrate(result: dict[str, Any], run_path: Path) -> dict[str, Any]:
    """Samples to ``winrate_samples.jsonl`` in the run; returns the summary without them (for the manifest)."""
    with (run_path / "winrate_samples.jsonl").open("w", encoding="utf-8") as handle:
        for sample in result["samples"]:
            handle.write(json.dumps(sample, ensure_ascii=False) + "\n")
    return {k: v for k, v in result.items() if k != "samples"}


def trained_run_winrate(run_path: Path, sft: Any, adapter: Path, reward_dir: Path, section: WinRateSection,
                        device: str) -> dict[str, Any]:
    """The end of a DPO/PPO stage: its freshly saved adapter against its SFT run, judged by the reward model;
    samples written into the run, the summary returned for the manifest."""
    from lexalign.modeling import TrainedPolicy

    policy = TrainedPolicy(run_path, sft.base, adapter)
    return write_winrate(policy_winrate(policy, sft, reward_dir, section, device), run_path)


def run_winrate_command(args: argparse.Namespace) -> None:
    """``lexalign winrate``: a policy run against its parent SFT run (or --baseline), judged by --reward."""
    from lexalign.modeling import trained_policy
    from lexalign.rlhf.policy import check_same_tokenizer, reward_model_dir
    from lexalign.runs import read_manifest

    policy = trained_policy(args.policy, "--policy")
    baseline_run = args.baseline or read_manifest(policy.run).get("parent")
    if not baseline_run:
        from lexalign.errors import LexalignError

        raise LexalignError(f"--policy {args.policy}: its manifest names no parent run; pass --baseline RUN")
    baseline = trained_policy(baseline_run, "--baseline")
    reward_dir = reward_model_dir(args.reward, "--reward")
    check_same_tokenizer(policy.tokenizer_dir, reward_dir, "--reward")
    section = WinRateSection(num_prompts=args.num_prompts, max_new_tokens=args.max_new_tokens,
                             **({"prompts": args.prompts} if args.prompts else {}))
    problems = section.problems()
    if problems:
        from lexalign.config import ConfigError

        raise ConfigError(problems, source="lexalign winrate")
    result = policy_winrate(policy, baseline, reward_dir, section, args.device)
    if args.out:
        Path(args.out).write_text(json.dumps(result, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    print(f"{args.policy} vs {baseline_run}: win rate {result['win_rate']:.3f} over {result['prompts']} prompts "
          f"({result['wins']} wins, {result['ties']} ties, {result['losses']} losses; {result['identical_answers']} "
          f"identical answers); mean reward {result['mean_score_policy']:+.3f} vs {result['mean_score_baseline']:+.3f}")
    for file, counts in result["by_file"].items():
        print(f"  {file}: win rate {counts['win_rate']:.3f} over {counts['prompts']} prompts")
