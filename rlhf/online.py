"""Online RL stage: the SFT policy generates, the reward model scores, TRL updates: PPO, GRPO or RLOO.

    lexalign ppo --config configs/ppo.yaml [algorithm=grpo|rloo] [key=value ...]

Reads top to bottom: config -> inputs checked (SFT run, reward run, tokenizers agree, prompts) -> tokenizer ->
prompts -> models -> trainer -> train -> save -> evaluate (reward-model win rate vs SFT) -> card.
Output: ``<output_dir>/<name>/<algorithm>/`` (runs/tiny/ppo, runs/tiny/grpo, ...).

* **PPO** (``trl.experimental.ppo``, present up to TRL 1.12.x, pinned): policy = the SFT adapter trained further
  on its base; KL reference = a frozen copy of the SFT adapter (``ref_adapter_name="ref"``, no second base
  model); reward model = the reward run's merged sequence classifier, frozen; value model = a second copy
  of that reward model (same backbone and head: its first value estimates are the reward scale), trained
  in full. Responses stop at the end-of-turn token (``ppo.stop_token: eos``) and are at most
  ``ppo.response_length`` tokens; ``ppo.missing_eos_penalty`` lowers the score of answers that never stop.
  Run length is ``ppo.total_episodes`` (= steps x batch size). TRL's experimental PPOTrainer cannot resume:
  an interrupted PPO run starts over.
* **GRPO / RLOO** (``trl.GRPOTrainer`` / ``trl.RLOOTrainer``, ``use_vllm: false``): the same policy and
  reference (TRL adds the frozen ``ref`` adapter copy itself when ``beta > 0``); the reward function is the
  reward model, wrapped so that it scores exactly the format it was trained on (TRL's own model-as-reward
  path would append the chat template's trailing newline). Resumable like SFT.

* **Reward from the lawyers' labels** (``reward: gold``, GRPO / RLOO): instead of a reward model, each answer is
  scored against the label of its prompt with the task's own metric (``evaluation.gold.answer_scores``: span F1
  or "Not present." for extraction, the right Yes/No, token F1 of the normalised answer, the fair/unfair verdict
  and categories); an answer in no answer format scores -1 (``quote_credit``: a share of a present clause's reward
  for quoting it at all). Only labelled chat records are used (the others are counted and left out) and never a
  document of the held-out test split. ``reward_run`` is then optional: it only judges the win rate against SFT.

Prompts: the user turns of the built datasets (``data.prompts``; chat records lose their last assistant turn,
preference pairs give their prompt), deduplicated, at most ``data.max_prompt_tokens`` long.
"""

from __future__ import annotations

import gc
import json
import logging
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from lexalign.config import Problem, is_share, load_config, problem_if, share_problems, trl_section
from lexalign.modeling import RunModelSection
from lexalign.rlhf.winrate import WinRateSection
from lexalign.runs import RunDir, is_main_process, writes_to

os.environ.setdefault("TRL_EXPERIMENTAL_SILENCE", "1")  # trl.experimental.ppo is used on purpose (see above)

logger = logging.getLogger(__name__)

Algorithm = Literal["ppo", "grpo", "rloo"]
TRL_CLASSES = {"ppo": ("trl.experimental.ppo", "PPOConfig", "PPOTrainer"),
               "grpo": ("trl", "GRPOConfig", "GRPOTrainer"), "rloo": ("trl", "RLOOConfig", "RLOOTrainer")}
# TRL's metric names: (reward-model score, KL to the reference, losses) per algorithm.
METRICS = {"ppo": ("objective/scores", "objective/kl", ("objective/rlhf_reward", "loss/policy_avg", "loss/value_avg")),
           "grpo": ("reward", "kl", ("loss",)), "rloo": ("reward", "kl", ("loss",))}
SET_BY_LEXALIGN = {"ppo": ("model_adapter_name", "ref_adapter_name", "sft_model_path", "reward_model_path"),
                   "grpo": ("use_vllm",), "rloo": ("use_vllm",)}


@dataclass
class PromptSection:
    # Chat records (SFT data: prompt = all but the last assistant turn) or preference pairs (their prompt).
    prompts: list[str] = field(default_factory=lambda: ["shipped:sft_train.jsonl"])
    max_prompts: int = 512  # a seeded sample; 0 = all
    max_prompt_tokens: int = 384  # longer prompts (chat-formatted, with the generation header) are skipped
    # reward: gold only: cap on the share of the drawn extraction prompts whose clause is absent (null = the data's
    # mix). Why: a policy that cannot yet tell where a clause is absent earns more on the absent ones by answering
    # "Not present." everywhere, and the group advantage pushes toward that answer in proportion to their share.
    # Measured on the one-epoch SFT model, a balanced draw (0.5) did not stop GRPO's drift (bench/RESULTS.md).
    max_not_present_share: float | None = None
    # reward: gold only: the tasks whose prompts are drawn ([] = every labelled task). Why: on the one-epoch SFT model
    # the extraction and Yes/No prompts moved the threshold of the clause-presence decision that both tasks share (to
    # "Not present." and "No" with both, to "Yes" with the Yes/No prompts alone); unfair-clause and normalization
    # prompts alone left the presence answers as they were (bench/RESULTS.md, 2026-11-30).
    tasks: list[str] = field(default_factory=list)
    seed: int = 0

    def problems(self) -> list[Problem]:
        from lexalign.data.paths import resolve_data_path
        from lexalign.evaluation.tasks import GENERATION_TASKS

        found = problem_if(not self.prompts, "prompts", self.prompts, "list at least one prompt file")
        found += [Problem(f"prompts[{i}]", "file not found; give a chat-records or preference-pair JSONL file", v)
                  for i, v in enumerate(self.prompts) if not resolve_data_path(v).is_file()]
        found += problem_if(self.max_prompts < 0, "max_prompts", self.max_prompts, "use 0 (all) or a positive count")
        found += problem_if(self.max_prompt_tokens <= 0, "max_prompt_tokens", self.max_prompt_tokens, "must be positive")
        found += share_problems("max_not_present_share", self.max_not_present_share)
        found += [Problem(f"tasks[{i}]", f"unknown task; use some of {', '.join(GENERATION_TASKS)}", task)
                  for i, task in enumerate(self.tasks) if task not in GENERATION_TASKS]
        return found


@dataclass
class OnlineStageConfig:
    name: str = "tiny"
    output_dir: str = "runs"
    resume: bool = True
    algorithm: Algorithm = "ppo"
    sft_run: str = "runs/tiny/sft"  # the policy: its adapter is trained further; the reference: its frozen copy
    reward_run: str = "runs/tiny/reward"  # scores the answers; its tokenizer must be the policy's
    # model: the reward run scores the answers; gold: the prompts' labels do (grpo / rloo; see the module docstring)
    reward: Literal["model", "gold"] = "model"
    # reward: gold only: the share of an extraction reward a quoted answer earns for quoting a present clause at all
    # (the decision, as presence accuracy scores it); the rest is its span F1. With 0 the reward is the span F1
    # alone, so a quote of a present clause earns less than "Not present." of an absent one, and saying "Not
    # present." pays wherever the policy is unsure. 0.5 scores the decision as the unfair-clause reward scores its
    # verdict; measured on the one-epoch SFT model, it did not stop GRPO's drift to "Not present." (bench/RESULTS.md).
    quote_credit: float = 0.0
    # path "" = the SFT run's base model. lora: only used when SFT trained the full model (a new adapter on it).
    model: RunModelSection = field(default_factory=RunModelSection)
    data: PromptSection = field(default_factory=PromptSection)
    # Arguments of the selected algorithm's TRL config; the other two sections are ignored.
    ppo: dict[str, Any] = trl_section("trl.experimental.ppo.PPOConfig")
    grpo: dict[str, Any] = trl_section("trl.GRPOConfig")
    rloo: dict[str, Any] = trl_section("trl.RLOOConfig")
    # Reward-model win rate of the trained policy against the SFT policy (reward_run "" = the stage's reward_run).
    eval: WinRateSection = field(default_factory=WinRateSection)

    @property
    def run_dir(self) -> Path:
        return Path(self.output_dir) / self.name / self.algorithm

    @property
    def training(self) -> dict[str, Any]:
        return getattr(self, self.algorithm)

    def problems(self) -> list[Problem]:
        found = problem_if(not self.sft_run, "sft_run", self.sft_run, "give the SFT run directory (e.g. runs/tiny/sft)")
        found += problem_if(self.reward == "model" and not self.reward_run, "reward_run", self.reward_run,
                            "give the reward run directory (e.g. runs/tiny/reward), or reward: gold")
        found += problem_if(self.reward == "gold" and self.algorithm == "ppo", "reward", self.reward,
                            "PPO needs a reward model; the labels score answers with algorithm: grpo or rloo")
        found += problem_if(self.reward != "gold" and self.data.max_not_present_share is not None,
                            "data.max_not_present_share", self.data.max_not_present_share,
                            "only prompts with labels know whether their clause is absent; use it with reward: gold")
        found += problem_if(self.reward != "gold" and bool(self.data.tasks), "data.tasks", self.data.tasks,
                            "only prompts with labels have a task; use it with reward: gold")
        found += problem_if(not is_share(self.quote_credit, one_included=True),
                            "quote_credit", self.quote_credit, "a share in [0, 1]")
        found += problem_if(self.reward != "gold" and self.quote_credit, "quote_credit", self.quote_credit,
                            "the labels' reward only; use it with reward: gold")
        found += problem_if(self.model.tuning != "lora", "model.tuning", self.model.tuning,
                            "online RL trains a LoRA adapter (the reference shares the base); use lora")
        section, key = self.training, self.algorithm
        for name in SET_BY_LEXALIGN[key]:
            if name in section and not (name == "use_vllm" and section[name] is False):
                found.append(Problem(f"{key}.{name}", "set by lexalign (policy/reference adapters, reward model from "
                                     "reward_run, no vLLM in the training environment); remove it", section[name]))
        if key == "ppo":
            if section.get("stop_token") is None and section.get("stop_token_id") is None:
                found.append(Problem("ppo.stop_token", "answers would never stop; set stop_token: eos (the end-of-"
                                     "turn token)", None))
            if "max_steps" in section:
                found.append(Problem("ppo.max_steps", "TRL's PPO ignores max_steps; set total_episodes "
                                     "(= steps x per_device_train_batch_size x gradient_accumulation_steps)",
                                     section["max_steps"]))
            batch = section.get("per_device_train_batch_size", 8) * section.get("gradient_accumulation_steps", 1)
            minis = section.get("num_mini_batches", 1)
            found += problem_if(minis <= 0 or batch % minis != 0, "ppo.num_mini_batches", minis,
                                f"must divide the batch (per_device_train_batch_size x gradient_accumulation_steps = "
                                f"{batch})")
            found += problem_if(section.get("response_length", 53) <= 0, "ppo.response_length",
                                section.get("response_length"), "must be positive")
            found += problem_if(section.get("kl_coef", 0.05) < 0, "ppo.kl_coef", section.get("kl_coef"), "must be >= 0")
        else:
            generations = section.get("num_generations", 8 if key == "grpo" else 2)
            found += problem_if(generations < 2, f"{key}.num_generations", generations,
                                "group-relative advantages need at least 2 answers per prompt")
            found += problem_if(section.get("beta", 0.0 if key == "grpo" else 0.05) < 0, f"{key}.beta",
                                section.get("beta"), "must be >= 0 (0 = no KL penalty and no reference)")
            found += problem_if(section.get("max_completion_length", 512) <= 0, f"{key}.max_completion_length",
                                section.get("max_completion_length"), "must be positive")
        return found


# --------------------------------------------------------------------------- reward function (GRPO / RLOO)


class RewardModelFunction:
    """The reward run's model as a TRL reward function, scoring in the format it was trained on."""

    __name__ = "reward_model"

    def __init__(self, model: Any, tokenizer: Any, max_length: int | None) -> None:
        self.model, self.tokenizer, self.max_length = model, tokenizer, max_length

    def __call__(self, prompts: list[Any], completions: list[Any], **kwargs: Any) -> list[float]:
        from lexalign.modeling import reward_scores

        responses = [c if isinstance(c, str) else "\n\n".join(m["content"] for m in c) or " " for c in completions]
        return reward_scores(self.model, self.tokenizer, prompts, responses, self.max_length)


class GoldRewardFunction:
    """The lawyers' label of each prompt as a TRL reward function: the task's own metric of each answer (0..1),
    -1 for an answer in none of the task's formats. TRL passes the dataset's ``task`` and ``gold`` columns.
    ``quote_credit``: the part of the reward a quote of a present clause earns for the decision to quote."""

    __name__ = "gold_label"
    UNPARSEABLE = -1.0

    def __init__(self, quote_credit: float = 0.0) -> None:
        self.quote_credit = quote_credit

    def __call__(self, prompts: list[Any], completions: list[Any], task: list[str], gold: list[str],
                 **kwargs: Any) -> list[float]:
        from lexalign.evaluation.gold import answer_scores, is_quoted

        rewards = []
        for messages, completion, name, label in zip(prompts, completions, task, gold):
            text = completion if isinstance(completion, str) else "\n\n".join(m["content"] for m in completion)
            labels = json.loads(label)
            (score,) = answer_scores(name, labels, messages, [text])
            if score is not None and name == "extract" and labels["present"] and is_quoted(text):
                score = self.quote_credit + (1 - self.quote_credit) * score
            rewards.append(self.UNPARSEABLE if score is None else score)
        return rewards


def labelled_prompts(files: list[str], total: int, seed: int, tokenizer: Any = None, max_prompt_tokens: int = 0,
                     max_not_present_share: float | None = None,
                     tasks: Sequence[str] = ()) -> tuple[list[dict[str, Any]], dict[str, int]]:
    """Rows {prompt, task, gold} of the labelled chat records of ``files`` (a seeded draw of ``total`` among those
    that fit ``max_prompt_tokens``; ``too_long`` counts the drawn ones that did not) and the counts of what was
    left out and why. With ``max_not_present_share``, absent-clause extraction prompts make at most that share of
    the draw's extraction prompts (``not_present_cap`` counts those passed over); with ``tasks``, only those tasks'
    prompts are drawn (``other_task`` counts the rest). A label that cannot be read is a DataError naming file:line;
    test-split documents are never used."""
    import random

    from lexalign.data.jsonl import DataError, read_jsonl, read_text_lines
    from lexalign.data.paths import resolve_data_path
    from lexalign.data.schemas import ChatRecord
    from lexalign.evaluation.gold import has_labels, is_held_out, read_label
    from lexalign.rlhf.winrate import prompt_ids

    rows, seen = [], set()
    skipped = {"no_label": 0, "held_out_document": 0, "other_task": 0, "too_long": 0, "duplicate": 0,
               "not_present_cap": 0}
    problems = []
    for file in files:
        path = resolve_data_path(file)
        lines = [n for n, line in enumerate(read_text_lines(path), start=1) if line.strip()]
        for number, record in zip(lines, read_jsonl(path, ChatRecord)):
            meta = record.meta or {}
            if not has_labels(meta):
                skipped["no_label"] += 1
                continue
            if is_held_out({**meta, "prompts_file": file}):
                skipped["held_out_document"] += 1
                continue
            task, _, gold, found = read_label(meta)
            if found:
                problems += [f"{path}:{number}: {p}" for p in found]
                continue
            if tasks and task not in tasks:
                skipped["other_task"] += 1
                continue
            messages = [m.model_dump() for m in record.messages[:-1]]
            key = json.dumps(messages, sort_keys=True)
            if key in seen:
                skipped["duplicate"] += 1
                continue
            seen.add(key)
            rows.append({"prompt": messages, "task": task, "gold": json.dumps(gold)})
    if problems:
        raise DataError("labels the scorer cannot read:\n" + "\n".join(f"  {p}" for p in problems[:50]), problems)
    random.Random(seed).shuffle(rows)

    def is_absent_clause(row: dict[str, Any]) -> bool:
        return row["task"] == "extract" and not json.loads(row["gold"])["present"]

    def absent_quota(present: int) -> float:
        """How many absent-clause extraction prompts the draw may hold beside ``present`` present ones."""
        if max_not_present_share is None:
            return math.inf
        return int(max_not_present_share * present / (1 - max_not_present_share))

    # Tokenise in the drawn order and stop at ``total``: the draw needs the lengths of its own prompts only. The cap
    # holds for the draw itself: an absent-clause prompt beyond the quota waits until enough present ones are drawn.
    chosen: list[dict[str, Any]] = []
    waiting: list[dict[str, Any]] = []
    present = absent = 0
    for row in rows:
        if len(chosen) >= total:
            break
        if tokenizer is not None and len(prompt_ids(tokenizer, row["prompt"])) > max_prompt_tokens:
            skipped["too_long"] += 1
            continue
        if is_absent_clause(row):
            if absent < absent_quota(present):
                chosen.append(row)
                absent += 1
            else:
                waiting.append(row)
            continue
        chosen.append(row)
        present += row["task"] == "extract"
        while waiting and absent < absent_quota(present) and len(chosen) < total:
            chosen.append(waiting.pop(0))
            absent += 1
    skipped["not_present_cap"] = len(waiting)
    return chosen, skipped


# --------------------------------------------------------------------------- stage


def run_online(config_path: str | Path | None, overrides: list[str]) -> Path:
    config = load_config(OnlineStageConfig, config_path, overrides)
    with writes_to(config.run_dir):
        return train_online(config)


def check_inputs(config: OnlineStageConfig) -> tuple[Any, Path | None, Path | None]:
    """Everything that can fail before a model loads: (SFT policy, reward model dir (None without reward_run),
    eval reward model dir (None: no win rate))."""
    from lexalign.modeling import trained_policy
    from lexalign.rlhf.policy import check_same_tokenizer, reward_model_dir
    from lexalign.rlhf.winrate import load_prompts

    sft = trained_policy(config.sft_run, "sft_run", config.model.path)
    reward_dir = reward_model_dir(config.reward_run) if config.reward_run else None  # none: reward: gold
    if reward_dir is not None:
        check_same_tokenizer(sft.tokenizer_dir, reward_dir)
    for file in config.data.prompts:
        load_prompts(file)  # every line valid (file:line errors) before any model loads
    if config.reward == "gold":  # every label readable, too, and a prompt of the tasks asked for
        if not labelled_prompts(config.data.prompts, 1, config.data.seed, tasks=config.data.tasks)[0]:
            from lexalign.errors import LexalignError

            wanted = f"labelled prompt of data.tasks = {config.data.tasks}" if config.data.tasks else "labelled prompt"
            raise LexalignError(f"no {wanted} in data.prompts = {config.data.prompts}; reward: gold needs chat records "
                                f"whose meta holds such a label")
    eval_dir = None
    if config.eval.num_prompts:
        eval_dir = reward_model_dir(config.eval.reward_run, "eval.reward_run") if config.eval.reward_run else reward_dir
        if eval_dir is not None and eval_dir != reward_dir:
            check_same_tokenizer(sft.tokenizer_dir, eval_dir, "eval.reward_run")
    return sft, reward_dir, eval_dir


def train_online(config: OnlineStageConfig) -> Path:
    import importlib

    from datasets import Dataset

    from lexalign.data.paths import resolve_data_path
    from lexalign.modeling import (
        choose_compute_dtype,
        choose_device,
        load_reward_model,
        load_tokenizer,
        reward_model_info,
    )
    from lexalign.rlhf.policy import REF_ADAPTER, load_policy, save_policy_adapter
    from lexalign.rlhf.winrate import prompt_ids, sample_prompts, trained_run_winrate
    from lexalign.training import (
        checkpoint_step,
        find_resume_checkpoint,
        make_trl_args,
        metrics_callback,
        mixed_precision,
        plot_training,
        trim_metrics_after,
    )

    algorithm = config.algorithm
    sft, reward_dir, eval_dir = check_inputs(config)
    inputs = {"base_model": sft.base, **({"sft_adapter": sft.adapter} if sft.adapter else {}),
              **({"reward_model": reward_dir} if reward_dir is not None else {})}
    inputs.update({f"prompts_{i}": resolve_data_path(v) for i, v in enumerate(config.data.prompts)})
    run = RunDir(config.run_dir, algorithm, config, inputs=inputs, parent=sft.run)
    checkpoint = find_resume_checkpoint(run, config.resume)
    if checkpoint and algorithm == "ppo":
        logger.warning("TRL's experimental PPOTrainer cannot resume; %s is ignored and PPO starts over", checkpoint)
        checkpoint = None
    module_name, config_name, trainer_name = TRL_CLASSES[algorithm]
    module = importlib.import_module(module_name)
    device = choose_device(config.model.device)
    forced: dict[str, Any] = mixed_precision(config.training, choose_compute_dtype(
        device, config.model.quantization.compute_dtype))
    if algorithm == "ppo":
        forced.update(model_adapter_name="default", ref_adapter_name=REF_ADAPTER if sft.adapter else None)
        if "num_sample_generations" not in config.training:
            forced["num_sample_generations"] = 0  # TRL's default prints sample tables to the console
    else:
        forced["use_vllm"] = False
    args = make_trl_args(getattr(module, config_name), config.training, run, **forced)
    run.start()
    if is_main_process():  # metrics after the resumed step (or all, when starting over) are logged again
        if checkpoint:
            trim_metrics_after(run, checkpoint_step(checkpoint))
        else:  # else a run started over (always for PPO, resume: false, no whole checkpoint) appends to the old steps
            (run.path / "metrics.jsonl").unlink(missing_ok=True)

    tokenizer = load_tokenizer(sft.tokenizer_dir)
    if algorithm == "ppo":
        tokenizer.padding_side = "left"  # PPO's queries are left-padded batches of prompt ids

    left_out: dict[str, int] = {}
    if config.reward == "gold":
        rows, left_out = labelled_prompts(config.data.prompts, config.data.max_prompts or 10**9, config.data.seed,
                                          tokenizer, config.data.max_prompt_tokens, config.data.max_not_present_share,
                                          config.data.tasks)
        prompts = [row["prompt"] for row in rows]
        logger.info("labelled prompts: %d (left out: %s)", len(rows), left_out)
    else:
        items = sample_prompts(config.data.prompts, config.data.max_prompts or 10**9, config.data.seed, tokenizer,
                               config.data.max_prompt_tokens)
        prompts = [p for _, p in items]
    if not prompts:
        from lexalign.errors import LexalignError

        raise LexalignError(f"no prompt in {config.data.prompts} fits data.max_prompt_tokens = "
                            f"{config.data.max_prompt_tokens}; raise it")
    logger.info("prompts: %d from %s (at most %d tokens)", len(prompts), ", ".join(config.data.prompts),
                config.data.max_prompt_tokens)

    from transformers import set_seed

    # random, numpy and torch: TRL's PPO seeds only torch and draws its mini-batches with numpy's global generator,
    # so without this the same config trained on other mini-batches (tests/test_ppo.py)
    set_seed(args.seed)
    model, device, dtype, peft_config = load_policy(
        config.model, sft, bool(config.training.get("gradient_checkpointing")),
        ref_adapter=algorithm == "ppo" and sft.adapter is not None)
    reward: Any = None
    if config.reward == "model":
        reward, _ = load_reward_model(reward_dir, config.model.device)
        reward_max_length = reward_model_info(reward_dir).get("max_length")
    trainer_class = getattr(module, trainer_name)
    if algorithm == "ppo":
        value, _ = load_reward_model(reward_dir, config.model.device, trainable=True)
        value.train()
        for parameter in value.parameters():
            parameter.requires_grad_(True)
        dataset = Dataset.from_list([{"input_ids": prompt_ids(tokenizer, p)} for p in prompts])
        eval_size = max(args.per_device_eval_batch_size, 1)
        trainer = trainer_class(args=args, processing_class=tokenizer, model=model, ref_model=None,
                                reward_model=reward, value_model=value, train_dataset=dataset,
                                eval_dataset=dataset.select(range(min(eval_size, len(dataset)))),
                                peft_config=peft_config, callbacks=[metrics_callback(run, perplexity=False)])
        trainer.train()
        policy_model = trainer.model.policy
    else:
        if config.reward == "gold":  # the task and label columns reach the reward function with each answer
            dataset, reward_function = Dataset.from_list(rows), GoldRewardFunction(config.quote_credit)
        else:
            dataset = Dataset.from_list([{"prompt": p} for p in prompts])
            reward_function = RewardModelFunction(reward, tokenizer, reward_max_length)
        trainer = trainer_class(model=model, args=args, reward_funcs=reward_function,
                                train_dataset=dataset, processing_class=tokenizer, peft_config=peft_config,
                                callbacks=[metrics_callback(run, perplexity=False)])
        if checkpoint:
            # A GRPO/RLOO checkpoint holds the trained adapter at its top level and TRL's frozen reference copy in
            # ref/ (beta > 0); transformers 5.19 then loads only the sub-folders, so the run went on from the SFT
            # adapter with the checkpoint's step, optimizer and schedule (KL 0 at the first resumed step). Same fix
            # as DPO: load the trained adapter here
            # (tests/test_ppo.py::test_grpo_resumes_from_its_checkpoint_with_the_trained_adapter).
            from lexalign.rlhf.dpo import load_trained_adapter

            load_trained_adapter(trainer.model, checkpoint)
        trainer.train(resume_from_checkpoint=checkpoint)
        policy_model = trainer.model
    adapters = list(policy_model.peft_config)

    out = run.path / "adapter"
    rank = save_policy_adapter(policy_model, tokenizer, out)
    global_step = trainer.state.global_step
    score_key, kl_key, loss_keys = METRICS[algorithm]
    plot_training(run, f"{algorithm.upper()} from {config.sft_run}: reward-model score and KL",
                  keys=(score_key, kl_key))
    plot_training_losses(run, algorithm, loss_keys)
    del trainer, model, reward, policy_model
    gc.collect()

    from lexalign.runs import read_metrics

    metrics = read_metrics(run.path)
    scores = [m[score_key] for m in metrics if score_key in m]
    kls = [m[kl_key] for m in metrics if kl_key in m]
    results: dict[str, Any] = {
        "algorithm": algorithm,
        "reward_first": scores[0] if scores else None,
        "reward_last": scores[-1] if scores else None,
        "reward_mean_last_quarter": _tail_mean(scores),
        "kl_last": kls[-1] if kls else None,
        "kl_max_abs": max((abs(k) for k in kls), default=None),
        "metric_names": {"reward": score_key, "kl": kl_key},
        "reference": ("frozen copy of the SFT adapter ('ref')" if REF_ADAPTER in adapters else "adapter disabled")
        if _uses_reference(algorithm, args) else "none (beta = 0)",
        "value_model": "copy of the reward model (trained in full)" if algorithm == "ppo" else None,
        "global_step": global_step,
        "prompts": len(prompts),
        "reward": "the prompts' gold labels (task metric; -1 unparseable)" if config.reward == "gold"
        else f"reward model {reward_dir}",
        **({"prompts_left_out": left_out} if config.reward == "gold" else {}),
        "mode": config.model.mode,
        "device": str(device),
        "compute_dtype": str(dtype).removeprefix("torch."),
    }
    if eval_dir is not None:
        results["winrate_vs_sft"] = trained_run_winrate(run.path, sft, out, eval_dir, config.eval, config.model.device)
    write_model_card(out, config, results, sft)
    run.complete(outputs={"adapter": "adapter", "base_model": str(sft.base), "lora_rank": rank}, results=results)
    return run.path


def _uses_reference(algorithm: str, args: Any) -> bool:
    return algorithm == "ppo" or getattr(args, "beta", 0.0) != 0.0


def _tail_mean(values: list[float]) -> float | None:
    tail = values[-max(1, len(values) // 4):]
    return sum(tail) / len(tail) if tail else None


def plot_training_losses(run: RunDir, algorithm: str, keys: tuple[str, ...]) -> None:
    from lexalign.plots import plot_curves
    from lexalign.runs import read_metrics

    plot_curves(read_metrics(run.path), list(keys), run.path / "losses.png", f"{algorithm.upper()} losses")


def write_model_card(folder: Path, config: OnlineStageConfig, results: dict[str, Any], sft: Any) -> None:
    def fmt(value: Any) -> str:
        return "n/a" if value is None else f"{value:.4f}"

    win = results.get("winrate_vs_sft")
    lines = [
        f"# lexalign {config.algorithm.upper()} adapter: {config.name}",
        "",
        f"A contract-review assistant trained online against a reward model ({config.algorithm.upper()}, TRL), from",
        f"the SFT run `{config.sft_run}`, scored by `{config.reward_run}`. Load it like the SFT adapter: base + adapter.",
        "",
        f"- base model: `{sft.base}`; KL reference: {results['reference']}",
        f"- value model: {results['value_model']}" if results["value_model"] else "- value model: none (group baseline)",
        f"- prompts: {', '.join(config.data.prompts)} ({results['prompts']})",
        f"- reward-model score ({results['metric_names']['reward']}): first {fmt(results['reward_first'])}, "
        f"last {fmt(results['reward_last'])}; KL ({results['metric_names']['kl']}) last {fmt(results['kl_last'])}",
        f"- reward-model win rate vs SFT: {win['win_rate']:.3f} over {win['prompts']} held-out prompts"
        if win else "- reward-model win rate vs SFT: not evaluated here (`lexalign eval --reward` judges it)",
        f"- steps: {results['global_step']}, device {results['device']}, compute dtype {results['compute_dtype']}",
        "",
        "Not legal advice: answers must be checked by a lawyer.",
        "",
    ]
    (folder / "README.md").write_text("\n".join(lines), encoding="utf-8")
