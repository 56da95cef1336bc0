"""Why a fine-tuned model says "Not present." (or "No"): its first-token distribution on presence decisions.

A greedy decoder commits to the answer's first token. On CUAD extraction items this script prints, for items
where the clause is present and items where it is absent, the probability the model gives to the first token of
"Not present." and to the first token of the gold answer, and how often "Not" is the argmax. A model that
separates present from absent clauses puts clearly less mass on "Not" for present items. The AUROC of P("Not")
says how well that mass ranks absent above present items whatever the threshold (0.5: no separation; the
share of "Not present." in the training data moves the threshold, not the AUROC). ``--task presence`` asks the
same of the Yes/No questions, with "No" as the absent answer.

    python bench/first_token.py --base runs/smollm2/base/model --adapter runs/smollm2/sft/adapter [--task presence]

Runs on CPU in about a minute for 24 + 24 validation items (never the test split).
"""

from __future__ import annotations

import argparse
import json
import statistics

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from lexalign.data.paths import shipped_dir
from lexalign.data.prompts import NO, NOT_PRESENT

ABSENT_ANSWER = {"extract": NOT_PRESENT, "presence": NO}


def load_policy(base: str, adapter: str | None, threads: int):
    """(model, tokenizer): the base model in fp32 on the CPU, with the LoRA adapter on top when given."""
    torch.set_num_threads(threads)
    tokenizer = AutoTokenizer.from_pretrained(base)
    model = AutoModelForCausalLM.from_pretrained(base, dtype=torch.float32)
    if adapter:
        from peft import PeftModel
        model = PeftModel.from_pretrained(model, adapter)
    return model.eval(), tokenizer


def shipped_records(split: str, task: str) -> list[dict]:
    """The shipped chat records of one split (train or valid; never test) asking one task."""
    lines = (shipped_dir() / f"sft_{split}.jsonl").read_text(encoding="utf-8").splitlines()
    return [r for r in (json.loads(line) for line in lines if line.strip()) if r["meta"]["task"] == task]


def first_token_probs(model, tokenizer, records: list[dict], absent_answer: str = NOT_PRESENT,
                      ) -> list[tuple[float, float, bool]]:
    """(P(first token of the absent answer), P(first token of the gold answer), it is the argmax) per record."""
    not_id = tokenizer.encode(absent_answer, add_special_tokens=False)[0]
    rows = []
    for record in records:
        prompt = tokenizer.apply_chat_template(record["messages"][:-1], tokenize=False, add_generation_prompt=True)
        ids = tokenizer(prompt, return_tensors="pt", add_special_tokens=False).input_ids
        gold_id = tokenizer.encode(record["messages"][-1]["content"], add_special_tokens=False)[0]
        with torch.no_grad():
            probs = model(input_ids=ids).logits[0, -1].float().softmax(-1)
        rows.append((probs[not_id].item(), probs[gold_id].item(), int(probs.argmax()) == not_id))
    return rows


def auroc(absent: list[float], present: list[float]) -> float:
    """P(a random absent item gets more 'Not' mass than a random present one); ties count half (Mann-Whitney U)."""
    wins = sum((a > p) + 0.5 * (a == p) for a in absent for p in present)
    return wins / (len(absent) * len(present))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--base", required=True, help="base model folder")
    parser.add_argument("--adapter", help="LoRA adapter folder (none: the base model itself)")
    parser.add_argument("--items", type=int, default=24, help="items per group (present, absent)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--task", choices=sorted(ABSENT_ANSWER), default="extract",
                        help="extraction ('Not present.') or Yes/No presence questions ('No')")
    args = parser.parse_args()

    model, tokenizer = load_policy(args.base, args.adapter, args.threads)
    asked = shipped_records("valid", args.task)
    absent_answer = ABSENT_ANSWER[args.task]
    groups = {"present": [r for r in asked if r["meta"]["present"]][:args.items],
              "absent": [r for r in asked if not r["meta"]["present"]][:args.items]}
    print(f"model: {args.base}" + (f" + {args.adapter}" if args.adapter else ""))
    print(f"task: {args.task}; absent answer {absent_answer!r}")
    print(f"| items | n | mean P(first token of {absent_answer!r}) | mean P(gold first token) | it is the argmax |")
    print("|---|---:|---:|---:|---:|")
    not_mass = {}
    for name, group in groups.items():
        rows = first_token_probs(model, tokenizer, group, absent_answer)
        not_mass[name] = [r[0] for r in rows]
        print(f"| {name} | {len(rows)} | {statistics.mean(r[0] for r in rows):.2f} | "
              f"{statistics.mean(r[1] for r in rows):.2f} | {sum(r[2] for r in rows) / len(rows):.2f} |")
    print(f"AUROC of P({absent_answer!r}) for absent vs present items: {auroc(not_mass['absent'], not_mass['present']):.3f} "
          "(0.5 = no separation)")


if __name__ == "__main__":
    main()
