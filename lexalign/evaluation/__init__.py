"""Evaluation of every stage on contract-review tasks: ``lexalign eval`` and ``evaluate(config) -> dict``.

    lexalign eval --model runs/tiny/sft                       # vLLM server for the run, shipped validation data
    lexalign eval --model runs/tiny/dpo --reward runs/tiny/reward --against runs/tiny/sft
    lexalign eval --model http://127.0.0.1:8000/v1 --data my_contracts.jsonl   # key from $LEXALIGN_API_KEY
    lexalign eval --model runs/tiny/sft backend=transformers  # no vLLM: the same prompts through transformers

What ``--model`` can be: a run directory (sft/dpo/ppo with a LoRA adapter: vLLM serves base + adapter; or a
run with a full model), a merged export, a Hugging Face model folder, or the URL of a running OpenAI-compatible
endpoint (ending in ``/v1``). Decoding is greedy; requests go concurrently through the ``openai`` client.
Results go to ``<output_dir>/<name>/eval/<label>/`` (``runs/tiny/eval/sft/`` for ``runs/tiny/sft``):
``results.json``, ``results.md``, ``eval.png``, ``predictions.jsonl`` and the usual ``config.yaml``,
``manifest.json`` (the model and data files with their sha256), ``metrics.jsonl`` and ``COMPLETE``.

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
Default data: the shipped held-out split ``data.split`` (valid or test): ``sft_<split>.jsonl``,
``acord_rankings_<split>.jsonl``, ``acord_pairs_<split>.jsonl``, at most ``data.max_per_task`` items per task
(a seeded draw, kept in file order).

Metrics (``metrics.py``; a metric over zero items is null / "n/a")
------------------------------------------------------------------
Text is compared after SQuAD normalisation (lower case, punctuation and the articles a/an/the removed,
whitespace collapsed). Items whose prompt does not fit the model's context get no answer: they are counted as
``skipped_items`` and left out of their task's metrics.

extract      present = the answer is not "Not present."; ``presence_accuracy``/``precision``/``recall``/``f1``
             of that against ``meta.present`` (precision with nothing predicted present = 0; F1 = 0 when
             P + R = 0). Predicted spans = the answer's non-empty lines (and the whole answer when it has several
             lines: a gold span may hold line breaks). For each item with gold spans, each gold span is
             matched with its best predicted span by SQuAD token F1 (multiset overlap) and by token Jaccard
             (set |A∩B|/|A∪B|), averaged over the gold spans (no predicted span: 0); ``span_f1`` and
             ``span_jaccard`` average that over the items with gold spans. ``not_present_rate``: share of
             answers that are "Not present.".
presence     ``accuracy``: the first word is Yes/No and matches (anything else is wrong); ``f1`` of Yes;
             ``unparsed_rate``.
normalize    ``exact_match`` and ``token_f1`` against ``meta.normalized``.
unfair       answers parsed with ``data.prompts.parse_unfair_answer``. Binary (unfair = "Potentially unfair:"):
             ``unfair_accuracy``/``precision``/``recall``/``f1``. Per category F1 = 2TP / (2TP + FP + FN) over
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
             directory, a model folder or a URL.
behaviour    over every answer: ``stop_rate`` (finish_reason "stop": the model ended its turn with the
             end-of-turn token), ``length_cut_rate`` ("length": cut at ``generation.max_new_tokens``),
             ``length_mean``/``length_median`` (answer tokens), ``refusal_rate`` (answers starting like "I
             cannot", "I'm sorry", "As an AI"), ``not_present_rate``, ``empty_rate``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from lexalign.evaluation.run import EvalConfig


def evaluate(config: "EvalConfig") -> dict[str, Any]:
    """Run the evaluation described by ``config`` (see ``lexalign.evaluation.run.evaluate``)."""
    from lexalign.evaluation.run import evaluate as _evaluate

    return _evaluate(config)


__all__ = ["evaluate"]
