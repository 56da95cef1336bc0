"""Is the presence decision in the model's representation? A linear probe on its hidden states.

A model that answers the Yes/No presence questions at chance may still encode the answer: this script fits an
L2-regularized logistic regression on hidden states of the training split's presence prompts and reports the
AUROC of its score on the validation split's prompts, beside the AUROC of the model's own first-token P("No")
on the same items. A probe far above the model's own answer means the information is there and the fine-tuning
does not reach it; a probe at the same level means the representation itself does not separate the classes.

    python bench/presence_probe.py --model runs/smollm2/base/model [--adapter runs/smollm2/sft/adapter]

Features per prompt (each probed separately): the last prompt token's state at the final and the middle layer,
and the mean over the prompt's tokens at the middle layer. Never reads the test split. About 6 minutes for the
600 + 75 prompts on 2 CPU cores.
"""

from __future__ import annotations

import argparse

import torch
from first_token import auroc, load_policy, shipped_records  # bench/, beside this script
from tqdm import tqdm

from lexalign.data.prompts import NO


def features(model, tokenizer, records: list[dict], desc: str) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
    """Hidden-state features and the first-token P('No') of every record's prompt."""
    no_id = tokenizer.encode(NO, add_special_tokens=False)[0]
    middle = model.config.num_hidden_layers // 2
    rows: dict[str, list[torch.Tensor]] = {"last token, final layer": [], "last token, middle layer": [],
                                           "mean of tokens, middle layer": []}
    p_no = []
    for record in tqdm(records, desc=desc):
        prompt = tokenizer.apply_chat_template(record["messages"][:-1], tokenize=False, add_generation_prompt=True)
        ids = tokenizer(prompt, return_tensors="pt", add_special_tokens=False).input_ids
        with torch.no_grad():
            out = model(input_ids=ids, output_hidden_states=True)
        states = out.hidden_states
        rows["last token, final layer"].append(states[-1][0, -1].float())
        rows["last token, middle layer"].append(states[middle][0, -1].float())
        rows["mean of tokens, middle layer"].append(states[middle][0].float().mean(0))
        p_no.append(out.logits[0, -1].float().softmax(-1)[no_id].item())
    return {k: torch.stack(v) for k, v in rows.items()}, torch.tensor(p_no)


def fit_probe(x: torch.Tensor, y: torch.Tensor, weight_decay: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Logistic regression (L-BFGS, L2 penalty) on standardized features; returns (weights, bias)."""
    w = torch.zeros(x.shape[1], requires_grad=True)
    b = torch.zeros(1, requires_grad=True)
    optimizer = torch.optim.LBFGS([w, b], max_iter=500, line_search_fn="strong_wolfe")

    def closure() -> torch.Tensor:
        optimizer.zero_grad()
        loss = torch.nn.functional.binary_cross_entropy_with_logits(x @ w + b, y) + weight_decay * (w @ w)
        loss.backward()
        return loss

    optimizer.step(closure)
    return w.detach(), b.detach()


def absent_auroc(scores: torch.Tensor, labels: torch.Tensor) -> float:
    """AUROC of the scores ranking absent (label 1) above present (label 0) items."""
    return auroc(scores[labels == 1].tolist(), scores[labels == 0].tolist())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", required=True, help="model folder")
    parser.add_argument("--adapter", help="LoRA adapter folder (none: the model itself)")
    parser.add_argument("--weight-decay", type=float, default=1e-2, help="L2 penalty of the probe")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()

    model, tokenizer = load_policy(args.model, args.adapter, args.threads)
    train, valid = shipped_records("train", "presence"), shipped_records("valid", "presence")
    # label 1 = absent ("No"), so every AUROC below ranks absent above present, like first-token P("No")
    y_train = torch.tensor([0.0 if r["meta"]["present"] else 1.0 for r in train])
    y_valid = torch.tensor([0.0 if r["meta"]["present"] else 1.0 for r in valid])
    x_train, _ = features(model, tokenizer, train, "train prompts")
    x_valid, p_no = features(model, tokenizer, valid, "validation prompts")

    print(f"model: {args.model}" + (f" + {args.adapter}" if args.adapter else ""))
    print(f"presence prompts: {len(train)} train ({int(y_train.sum())} absent), {len(valid)} validation "
          f"({int(y_valid.sum())} absent); AUROC of absent above present, 0.5 = no separation")
    print("| score | validation AUROC | train AUROC |")
    print("|---|---:|---:|")
    print(f"| the model's first-token P('No') | {absent_auroc(p_no, y_valid):.3f} | |")
    for name in x_train:
        mean, std = x_train[name].mean(0), x_train[name].std(0) + 1e-6
        xt, xv = (x_train[name] - mean) / std, (x_valid[name] - mean) / std
        w, b = fit_probe(xt, y_train, args.weight_decay)
        print(f"| linear probe: {name} | {absent_auroc(xv @ w + b, y_valid):.3f} | {absent_auroc(xt @ w + b, y_train):.3f} |")


if __name__ == "__main__":
    main()
