"""Evaluation of every stage on contract-review tasks: ``lexalign eval`` and ``evaluate(config) -> dict``.

    lexalign eval --model runs/tiny/sft                       # vLLM server for the run, shipped test split
    lexalign eval --model runs/tiny/dpo --reward runs/tiny/reward --against runs/tiny/sft
    lexalign eval model=[runs/tiny/base/model,runs/tiny/sft,runs/tiny/dpo,runs/tiny/ppo] --reward runs/tiny/reward
    lexalign eval --model http://127.0.0.1:8000/v1 --data my_contracts.jsonl   # key from $LEXALIGN_API_KEY
    lexalign eval --model runs/tiny/sft backend=transformers  # no vLLM: the same prompts through transformers

What ``--model`` can be: a run directory (sft/dpo/ppo with a LoRA adapter: vLLM serves base + adapter; or a
run with a full model), a merged export, a Hugging Face model folder, or the URL of a running OpenAI-compatible
endpoint (ending in ``/v1``); or a list of them: the local ones must share a base model and are served by ONE
vLLM server (the base and each LoRA adapter under its own name), every model is scored on the same drawn
items, and each gets its own results folder (models on different bases in one call: an error naming both).
Decoding is greedy; requests go concurrently through the ``openai`` client.
Results go to ``<output_dir>/<name>/eval/<label>/`` (``runs/tiny/eval/sft/`` for ``runs/tiny/sft``):
``results.json`` (metrics, their intervals, chance levels, the drawn item ids), ``results.md``, ``eval.png``
(with error bars), ``predictions.jsonl`` (request, answer, gold), ``item_scores.json`` (each task's per-item
rows) and the usual ``config.yaml``, ``manifest.json`` (the model and data files with their sha256),
``metrics.jsonl`` and ``COMPLETE``.

Data for ``--data`` (JSONL, one record per line; a file's kind is told by its first record; any mix of files)
--------------------------------------------------------------------------------------------------------------
1. Chat records (``lexalign.data.schemas.ChatRecord``): ``{"messages": [...], "meta": {...}}``. The messages
   up to the last assistant turn are the prompt (the last assistant message is the reference answer, kept in
   ``predictions.jsonl``); ``meta.task`` chooses the task and ``meta`` holds the gold labels:

   ``extract``   find a clause; the model quotes it verbatim (one span per line) or answers "Not present."
                 ``meta.answers``: list of the gold spans ([] when absent); ``meta.present``: bool (optional,
                 default: answers non-empty); ``meta.category``: the clause category (optional).
   ``presence``  Yes/No: is the clause there? ``meta.present``: bool.
   ``normalize`` a normalised answer (a date, a law, a period); ``meta.normalized``: the gold string.
   ``unfair``    Terms-of-Service clause: "Fair: ..." or "Potentially unfair: <category>[; <category>]. <why>"
                 ``meta.labels``: category names (arbitration, unilateral change, content removal, jurisdiction,
                 choice of law, limitation of liability, unilateral termination, contract by using, privacy
                 included; CLAUDETTE codes a/ch/cr/j/law/ltd/ter/use/pinc also accepted); ``meta.unfair``: bool
                 (optional, default: labels non-empty).

   Example: ``{"messages": [{"role": "system", "content": "..."}, {"role": "user", "content": "Find the
   Governing Law clause ... Excerpt:\\n..."}, {"role": "assistant", "content": "This Agreement shall be governed
   by ..."}], "meta": {"task": "extract", "category": "Governing Law", "answers": ["This Agreement shall be
   governed by ..."], "present": true}}``
2. RankingRecords (``lexalign.data.schemas.RankingRecord``): a prompt (string or chat messages), ``responses``
   (the candidate clauses), ``ranks`` (1 = best, ties share a rank) and optionally ``meta.stars`` (one number
   per response, higher = better: the lawyers' star ratings). Relevance = ``meta.stars`` when given, otherwise
   ``max(ranks) + 1 - rank``. String prompts get the training system prompt first (``data.system_prompt``).
3. PreferencePairs (``lexalign.data.schemas.PreferencePair``): ``prompt``, ``chosen``, ``rejected`` (strings or
   chat messages): the reward model's pairwise accuracy.
A malformed file stops the evaluation before any model loads, naming ``file:line`` and the problem.
Default data: the shipped TEST split (``data.split: test``; ``valid`` is for tuning choices, so that the test
numbers stay a measurement): ``sft_test.jsonl``, ``acord_rankings_test.jsonl``, ``acord_pairs_test.jsonl``, at
most ``data.max_per_task`` (200) items per task, all when a task has fewer: a seeded draw (``data.seed``), kept
in file order, the same for every model; the drawn ids are in ``results.json`` ``data.items``. An item's id is
``<file name>#<hash of its content>`` (prompt, task, reference answer), not its line: a rebuilt or re-ordered
file keeps the ids, so evaluations made before and after still pair item by item (the draw, too, depends on
the ids and the seed, not on the order).

Metrics (``metrics.py``; a metric over zero items is null / "n/a")
------------------------------------------------------------------
Text is compared after SQuAD normalisation (lower case, punctuation and the articles a/an/the removed,
whitespace collapsed). Items whose prompt does not fit the model's context get no answer: they are counted as
``skipped_items`` and left out of their task's metrics.

Parsing (``tasks.py``): an answer gives a verdict only in the format its task asks for, after leading quotes,
markdown (``**``, ``>``, ``-``) and an "Answer:" label; anything else is UNPARSED and counts as the wrong
verdict (a false negative when the gold label is positive, a false positive when it is negative), so a model
that writes fluent text in no format scores 0, not the base rate. Each such task reports ``unparsed_rate``.

extract      verdict: absent = "Not present." (the whole answer, or its first sentence); present = at least one
             line of the answer occurs word for word (after normalisation) in the contract excerpt of the prompt
             (the text after "Excerpt:"; the whole request for other prompts); otherwise unparsed. A near-quote
             is unparsed for presence but still earns span overlap. ``presence_accuracy``/``precision``/
             ``recall``/``f1`` of the verdict against ``meta.present`` (precision with nothing predicted present
             = 0; F1 = 2TP / (2TP + FP + FN), 0 when all are 0). Predicted spans = the answer's non-empty lines
             (and the whole answer when it has several lines: a gold span may hold line breaks). For each item
             with gold spans, each gold span is matched with its best predicted span by SQuAD token F1 (multiset overlap) and by token Jaccard
             (set |A∩B|/|A∪B|), averaged over the gold spans (no predicted span: 0); ``span_f1`` and
             ``span_jaccard`` average that over the items with gold spans. ``not_present_rate``: share of
             answers that say "Not present."; ``unparsed_rate``: share with no verdict.
presence     verdict: the first word is Yes or No as a whole word ("Yesterday", "Not present." are unparsed);
             ``accuracy`` (unparsed = wrong), ``f1`` of Yes, ``unparsed_rate``.
normalize    ``exact_match`` and ``token_f1`` against ``meta.normalized``.
unfair       verdict: "Fair" as a word followed by punctuation or the end ("Fair: ...", "Fair."; not "Fairly")
             = fair; "Potentially unfair: <category>[; <category>]. <why>" = unfair, with the known category
             names listed before the first period (``;`` or ``,`` separated); otherwise unparsed.
             Binary: ``unfair_accuracy``/``precision``/``recall``/``f1``. Per category F1 = 2TP / (2TP + FP + FN) over
             items (categories of an answer count only when it says unfair); ``macro_f1`` = mean over the
             categories that occur in the gold labels or the predictions (one that occurs in neither has no F1
             and is left out); ``micro_f1`` pools the counts; ``unparsed_rate``: answers in neither form.
ranking      per RankingRecord, the responses are ordered by a score: ``policy``: the policy's log-likelihood
             of the clause after the chat-formatted request (mean log-probability per token; the sum with
             ``ranking.length_normalize: false``), from vLLM's ``prompt_logprobs`` or transformers; ``reward``:
             the reward model's score. ``ndcg@k`` (k = ``ranking.k``, gain 2^stars - 1 or stars, discount
             1/log2(1 + position); tied scores share the mean discount of their positions) averaged over
             records; ``pairwise_accuracy`` over all response pairs whose stars differ, pooled over records:
             1 when the score orders them like the stars, 1/2 when the scores tie, 0 otherwise.
preferences  ``rm_pairwise_accuracy``: share of pairs where the reward model scores chosen above rejected
             (ties 1/2).
winrate      both policies answer the same held-out prompts greedily (``winrate.max_prompts`` drawn from the
             chat records); the reward model scores both answers; ``win_rate`` = (wins + ties/2) / n. The
             other policy (``--against``): ``base`` (the base under the evaluated adapter, same server), a run
             directory (on the same server when it shares the base), a model folder or a URL. A model is not
             compared with itself (``--against runs/tiny/sft`` with several models: every stage vs SFT).
behaviour    over every answer: ``stop_rate`` (finish_reason "stop": the model ended its turn with the
             end-of-turn token), ``length_cut_rate`` ("length": cut at ``generation.max_new_tokens``),
             ``length_mean``/``length_median`` (answer tokens), ``refusal_rate`` (answers starting like "I
             cannot", "I'm sorry", "As an AI"), ``not_present_rate``, ``empty_rate``.

Uncertainty (``uncertainty.py``)
--------------------------------
Every metric has a 95 % percentile bootstrap interval (``bootstrap.resamples`` = 2000 draws of the items with
replacement, seeded by ``bootstrap.seed``): ``results.json`` ``intervals[task/metric]`` = ``{value, ci_low,
ci_high, n}`` (n = items, or ranking records, resampled). Each task keeps per-item rows (``item_scores.json``)
and each metric is a formula over them (a ratio of sums for precision/recall/F1 and pooled pairwise accuracy,
a mean for shares, a median for ``length_median``), so ``lexalign report`` computes the PAIRED difference of
two stages on the items both were scored on (the same resampled items on both sides) and marks those whose
interval excludes 0. ``chance[task/metric]`` is what a model without skill scores on the same items: the
majority class (accuracy of presence, Yes/No, unfair), always "present"/"Yes"/"unfair" (their F1), a random
order (NDCG@k with every response tied; pairwise accuracy 0.5), a coin flip (reward-model pairwise accuracy),
0.5 (win rate). With n items a share's interval is about +-1/sqrt(n) wide: 8 items say almost nothing.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from lexalign.evaluation.run import EvalConfig


def evaluate(config: "EvalConfig") -> dict[str, Any]:
    """Run the evaluation of one model described by ``config`` (see ``lexalign.evaluation.run.evaluate``)."""
    from lexalign.evaluation.run import evaluate as _evaluate

    return _evaluate(config)


def evaluate_all(config: "EvalConfig") -> list[dict[str, Any]]:
    """Evaluate one or several models (one vLLM server for those on one base); one results dict per model."""
    from lexalign.evaluation.run import evaluate_all as _evaluate_all

    return _evaluate_all(config)


__all__ = ["evaluate", "evaluate_all"]
