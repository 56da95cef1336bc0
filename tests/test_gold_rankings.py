"""Gold-derived rankings (lexalign.evaluation.gold): hand-made candidates ranked by the lawyers' labels, stored as
derived annotators gold:<corpus>; annotator kinds through export/import; a human ranking replaces the derived one;
prompts without labels left for humans; unreadable labels named by task and file:line; the v1 -> v2 migration."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from sqlalchemy import Boolean, CheckConstraint, Column, DateTime, Integer, MetaData, String, Table, create_engine

from lexalign.config import ConfigError, load_config
from lexalign.data.jsonl import DataError, read_jsonl
from lexalign.data.prompts import CLAUSE_MARKER, EXCERPT_MARKER, SYSTEM_PROMPT
from lexalign.data.schemas import PreferencePair, RankingRecord
from lexalign.data.store import DerivedRanking, StoreError, open_store
from lexalign.data.store_schema import SCHEMA_VERSION
from lexalign.evaluation.gold import GOLD_PREFIX, rank_by_label, rank_tasks_by_gold, read_label
from lexalign.reward.prefs import export_preferences, import_ranking_file

REPO = Path(__file__).resolve().parent.parent
GOVERNING = "This Agreement shall be governed by the laws of the State of New York without regard to conflicts."
EXCERPT = f"The parties agree as follows. {GOVERNING} Notices shall be in writing."
EXTRACT_USER = f"Find the Governing Law clause in this contract excerpt. Quote it exactly, or answer 'Not present.'" \
               f"{EXCERPT_MARKER}{EXCERPT}"
PRESENCE_USER = f"Does this excerpt contain a Non-Compete clause? Answer Yes or No.{EXCERPT_MARKER}{EXCERPT}"
NORMALIZE_USER = f"When was the agreement signed? Answer in the format: M/D/YYYY.{EXCERPT_MARKER}{EXCERPT}"
UNFAIR_USER = f"Is this clause of the terms of service potentially unfair?{CLAUSE_MARKER}" \
              "We are not liable for any damages whatsoever, including losses caused by our negligence."

EXTRACT_META = {"task": "extract", "source": "cuad", "category": "Governing Law", "present": True,
                "answers": [GOVERNING], "doc_id": "train-doc-1"}


def chat(user: str) -> list[dict[str, str]]:
    return [{"role": "system", "content": SYSTEM_PROMPT}, {"role": "user", "content": user}]


def ranked(meta: dict[str, Any], user: str, answers: list[str]):
    task, annotator, gold, problems = read_label(meta)
    assert not problems
    return rank_by_label(task, annotator, gold, chat(user), answers)


@pytest.fixture()
def url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'prefs.db'}"


# --------------------------------------------------------------------------- ranking hand-made candidates


def test_extract_candidates_perfect_partial_misquoted_wrong_and_tied() -> None:
    half = " ".join(GOVERNING.split()[:9])  # the first 9 of 18 words: a verbatim quote, half the span
    misquote = GOVERNING.replace("New York", "New Jersey")  # 17 of 18 words right, but not in the excerpt
    answers = [
        "Not present.",                                    # wrong: the clause is there
        half,                                              # partly right
        "The contract picks a law somewhere, I believe.",  # neither a quote nor "Not present.": unparseable
        GOVERNING,                                         # perfect
        f'"{GOVERNING}"',                                  # perfect too, in quotes: ties with it
        f'"{misquote}"',                                   # a misquote: half its span F1, still above "Not present."
    ]
    gold = ranked(EXTRACT_META, EXTRACT_USER, answers)
    assert gold.annotator == "gold:cuad" and gold.task == "extract"
    assert gold.scores[0] == 0.0 and gold.scores[2] is None and gold.scores[3] == gold.scores[4] == 1.0
    assert 0.6 < gold.scores[1] < 0.7  # token F1 of 9 of 18 words: 2 * 1 * 0.5 / 1.5
    assert 0.45 < gold.scores[5] < 0.5  # F1 17/18 ~ 0.94, halved
    assert gold.ranks == (4, 2, 5, 1, 1, 3) and not gold.none_acceptable
    assert "answer 3: unparseable" in gold.rationale()
    assert "answer 6: 0.47" in gold.rationale() and "answer 4: 1.00" in gold.rationale()


def test_an_answer_cut_at_the_token_limit_ranks_as_unparseable() -> None:
    # Two quotes that overlap the clause rank above "Not present." when they ended; cut by the generator (the
    # model never ended its turn, which eval's stop rate counts against it) they rank as unparseable.
    answers = [f'"{GOVERNING}"', f'"{EXCERPT}"', "Not present.", f'"{GOVERNING.split(" without")[0]}']
    ended = ranked(EXTRACT_META, EXTRACT_USER, answers)
    assert ended.ranks == (1, 3, 4, 2) and ended.cut == ()
    task, annotator, gold, _ = read_label(EXTRACT_META)
    cut = rank_by_label(task, annotator, gold, chat(EXTRACT_USER), answers, ["stop", "length", "stop", "length"])
    assert cut.scores[0] == 1.0 and cut.scores[1] is None and cut.scores[3] is None
    assert cut.ranks == (1, 3, 2, 3)  # both cut answers below "Not present."
    assert "answer 2: cut at the token limit" in cut.rationale() and "answer 3: 0.00" in cut.rationale()
    with pytest.raises(ValueError, match="2 finish reasons for 4 answers"):
        rank_by_label(task, annotator, gold, chat(EXTRACT_USER), answers, ["stop", "stop"])


@pytest.mark.parametrize("meta, user, answers, ranks, none_acceptable", [
    # the clause is absent: "Not present." is right, any quote is wrong
    ({**EXTRACT_META, "present": False, "answers": []}, EXTRACT_USER,
     ["Not present.", "Not present. The excerpt has no such clause.", GOVERNING, "Hmm, hard to say."],
     (1, 1, 2, 3), False),
    ({"task": "presence", "source": "cuad", "present": False}, PRESENCE_USER,
     ["No", "No.", "Yes", "Maybe, it depends."], (1, 1, 2, 3), False),
    ({"task": "normalize", "source": "cuad", "normalized": "1/21/2005", "answers": ["January 21, 2005"]},
     NORMALIZE_USER, ["January 21, 2005", "1/21/2005", "12/5/1999"], (2, 1, 3), False),
    ({"task": "unfair", "source": "claudette", "unfair": True, "labels": ["limitation of liability"]}, UNFAIR_USER,
     ["Potentially unfair: arbitration. It sends disputes to arbitration.",              # verdict right, category wrong
      "Fair: no unfair-clause category applies.",                                        # wrong verdict
      "Potentially unfair: limitation of liability; arbitration. It limits liability.",  # one category too many
      "This clause seems harsh to consumers.",                                           # unparseable
      "Potentially unfair: limitation of liability. It excludes liability."],           # perfect
     (3, 4, 2, 5, 1), False),
    ({"task": "unfair", "source": "claudette", "unfair": False, "labels": []}, UNFAIR_USER,
     ["Fair: no unfair-clause category applies.", "Potentially unfair: jurisdiction."], (1, 2), False),
    # every answer wrong or unparseable: "none acceptable", wrong answers still above the unparseable one
    ({"task": "presence", "source": "cuad", "present": True}, PRESENCE_USER,
     ["No", "No, it does not.", "I cannot tell."], (1, 1, 2), True),
])
def test_each_task_ranks_by_its_own_metric(meta: dict, user: str, answers: list[str], ranks: tuple,
                                           none_acceptable: bool) -> None:
    gold = ranked(meta, user, answers)
    assert gold.ranks == ranks, gold.scores
    assert gold.none_acceptable is none_acceptable
    assert gold.annotator == GOLD_PREFIX + meta["source"]


def test_unfair_category_credit_is_half_verdict_half_categories() -> None:
    meta = {"task": "unfair", "source": "claudette", "unfair": True, "labels": ["limitation of liability"]}
    gold = ranked(meta, UNFAIR_USER, ["Potentially unfair: arbitration.",
                                      "Potentially unfair: limitation of liability; arbitration.",
                                      "Potentially unfair: limitation of liability."])
    assert gold.scores == (0.5, round(0.5 + 0.5 * 2 / 3, 6), 1.0)


def test_every_shipped_reference_answer_scores_1_and_ranks_first() -> None:
    """The labels of real shipped records are read, and each record's own answer beats the usual wrong forms."""
    lines = (REPO / "data" / "shipped" / "sft_valid.jsonl").read_text(encoding="utf-8").splitlines()
    seen = set()
    for line in lines:
        record = json.loads(line)
        reference = record["messages"][-1]["content"]
        others = [a for a in ("Not present.", "Yes", "No", "Fair: none applies.", "Potentially unfair: arbitration.",
                              "It depends on the contract.") if a != reference]
        task, annotator, gold, problems = read_label(record["meta"])
        assert not problems, problems
        result = rank_by_label(task, annotator, gold, record["messages"][:-1], [reference, *others])
        assert result.scores[0] == 1.0 and result.ranks[0] == 1, (task, reference[:80], result.scores)
        seen.add((task, annotator))
    assert seen == {("extract", "gold:cuad"), ("presence", "gold:cuad"), ("normalize", "gold:cuad"),
                    ("unfair", "gold:claudette")}


# --------------------------------------------------------------------------- the store


def add_task(store: Any, prompt_id: str, user: str, answers: list[str], meta: dict | None, *,
             source: str = "candidates", k: int = 2) -> int:
    return store.add_task(prompt_id, chat(user), [{"text": a, "model": "m"} for a in answers], meta, k, source=source)


UNFAIR_META = {"task": "unfair", "source": "claudette", "unfair": True, "labels": ["limitation of liability"],
               "doc_id": "SomeCompany"}
UNFAIR_ANSWERS = ["Fair: nothing applies.", "Potentially unfair: limitation of liability. Excludes liability.",
                  "Potentially unfair: arbitration."]


def test_rank_gold_stores_derived_annotators_and_leaves_unlabelled_tasks_to_humans(url: str, capsys) -> None:
    from lexalign.cli import main

    with open_store(url) as store:
        extract_id = add_task(store, "ex-1", EXTRACT_USER, ["Not present.", GOVERNING], EXTRACT_META)
        unfair_id = add_task(store, "un-1", UNFAIR_USER, UNFAIR_ANSWERS, UNFAIR_META)
        # labelled-looking task tag but no label fields, and a free question: both stay for the lawyers
        add_task(store, "free-1", EXTRACT_USER, ["a", "b"], {"task": "extract", "doc_id": "d1"})
        add_task(store, "free-2", "What is an MFN clause?", ["one", "two"], None)
        summary = rank_tasks_by_gold(store)
        assert (summary.considered, summary.ranked, summary.no_labels, summary.held_out) == (4, 2, 2, 0)
        assert summary.by_annotator == {"gold:claudette": 1, "gold:cuad": 1}
        assert summary.left_for_humans == ["free-1", "free-2"]
        derived = {t.prompt_id: t.rankings for t in store.task_rankings(kinds=["derived"])}
        assert set(derived) == {"ex-1", "un-1"}
        assert derived["ex-1"][0].ranks == (2, 1) and derived["ex-1"][0].kind == "derived"
        assert derived["un-1"][0].ranks == (3, 1, 2)  # wrong verdict < right verdict, wrong category and derived["un-1"][0].annotator == "gold:claudette"
        assert "gold:claudette" in derived["un-1"][0].rationale and "answer 2: 1.00" in derived["un-1"][0].rationale
        assert store.task_rankings(kinds=["human"]) == []
        gold = store.get_annotator("gold:cuad")
        assert gold is not None and gold.kind == "derived" and not gold.active
        # a derived annotator never logs in, gets no credentials and is never handed a task
        assert store.verify_login("gold:cuad", "any-password-123") is None
        with pytest.raises(StoreError, match="derived annotator"):
            store.set_password("gold:cuad", "any-password-123")
        with pytest.raises(StoreError, match="no annotator named"):
            store.next_task_for("gold:cuad")
        # no person can register under a derived name
        with pytest.raises(StoreError, match="username"):
            store.add_annotator("gold:cuad2", "a-password-123")
        # the ranking app still offers the gold-ranked tasks to human annotators, oldest first
        store.add_annotator("lawyer", "a-password-123")
        view = store.next_task_for("lawyer")
        assert view is not None and view.task_id == extract_id
        # a rerun ranks nothing new: the gold-ranked tasks are done, the unlabelled ones are counted again
        again = rank_tasks_by_gold(store)
        assert (again.considered, again.ranked, again.no_labels) == (2, 0, 2)
        assert store.counts()["rankings"] == 2 and unfair_id
    assert main(["prefs", "rank-gold", "--store", url]) == 0
    assert "0 tasks ranked by their gold labels" in capsys.readouterr().out
    assert main(["annotators", "list", "--store", url]) == 0
    listing = capsys.readouterr().out
    assert any(line.split()[:2] == ["gold:cuad", "derived"] for line in listing.splitlines())


def test_rank_gold_cli_filters_by_source_and_skips_held_out_test_documents(url: str, capsys) -> None:
    from lexalign.cli import main

    first_test = json.loads((REPO / "data" / "shipped" / "sft_test.jsonl").read_text().splitlines()[0])
    test_meta = first_test["meta"]
    test_user = first_test["messages"][-2]["content"]
    with open_store(url) as store:
        add_task(store, "ex-a", EXTRACT_USER, ["Not present.", GOVERNING], EXTRACT_META, source="a")
        add_task(store, "ex-b", EXTRACT_USER, ["Not present.", GOVERNING], EXTRACT_META, source="b")
        add_task(store, "held-out", test_user, ["answer one", "answer two"], test_meta, source="a")
    assert main(["prefs", "rank-gold", "--store", url, "--source", "a"]) == 0
    out = capsys.readouterr().out
    assert "1 tasks ranked by their gold labels" in out and "1 from held-out test documents not ranked" in out
    with open_store(url) as store:
        assert [t.prompt_id for t in store.task_rankings()] == ["ex-a"]


def test_unreadable_labels_are_named_by_task_prompt_id_and_file_line(url: str) -> None:
    with open_store(url) as store:
        add_task(store, "ok-1", EXTRACT_USER, ["Not present.", GOVERNING], EXTRACT_META)
        add_task(store, "bad-presence", PRESENCE_USER, ["Yes", "No"],
                 {"task": "presence", "source": "cuad", "present": "yes", "prompts_file": "mine.jsonl",
                  "prompts_line": 7})
        add_task(store, "bad-category", UNFAIR_USER, UNFAIR_ANSWERS,
                 {**UNFAIR_META, "labels": ["too harsh"]})
        add_task(store, "no-source", PRESENCE_USER, ["Yes", "No"], {"task": "presence", "present": True})
        add_task(store, "no-task", PRESENCE_USER, ["Yes", "No"], {"present": True, "source": "cuad"})
        add_task(store, "bad-reasons", EXTRACT_USER, ["Not present.", GOVERNING],
                 {**EXTRACT_META, "answer_finish_reasons": ["stop"]})   # one reason for two answers
        with pytest.raises(DataError) as info:
            rank_tasks_by_gold(store)
        message = str(info.value)
        assert "labels of 5 tasks that the gold scorer cannot read; nothing was ranked" in message
        assert ("prompt_id 'bad-reasons'" in message and "meta.answer_finish_reasons: expected one finish reason"
                in message and "per candidate answer (2), got ['stop']" in message)
        assert "(prompt_id 'bad-presence', mine.jsonl:7): meta.present: expected true or false" in message
        assert "prompt_id 'bad-category'" in message and "'too harsh'" in message
        assert "prompt_id 'no-source'" in message and "meta.source" in message
        assert "prompt_id 'no-task'" in message and "meta.task missing" in message
        assert store.counts()["rankings"] == 0  # the readable task was not ranked either: all or nothing


# --------------------------------------------------------------------------- candidates with rank_gold


class FakeClient:
    """The two calls generate_candidates makes of an OpenAI client, answering from a fixed table."""

    def __init__(self, answers: dict[str, list[str]]) -> None:
        self.answers = answers
        self.chat = SimpleNamespace(completions=SimpleNamespace(create=self._create))

    def _create(self, *, messages: list[dict[str, str]], n: int, **_: Any) -> Any:
        texts = next(v for k, v in self.answers.items() if k in messages[-1]["content"])
        # an answer ending in "..." stands for one the server cut at max_tokens
        choices = [SimpleNamespace(index=i, message=SimpleNamespace(content=t),
                                   finish_reason="length" if t.endswith("...") else "stop")
                   for i, t in enumerate(texts[:n])]
        return SimpleNamespace(choices=choices, usage=SimpleNamespace(completion_tokens=3 * n))


def write_prompts(path: Path, lines: list[dict]) -> Path:
    path.write_text("".join(json.dumps(line) + "\n" for line in lines), encoding="utf-8")
    return path


def test_candidates_with_rank_gold_rank_the_new_labelled_tasks(tmp_path: Path, url: str) -> None:
    from lexalign.serve.candidates import CandidatesConfig, generate_candidates

    prompts = write_prompts(tmp_path / "prompts.jsonl", [
        {"messages": chat(EXTRACT_USER) + [{"role": "assistant", "content": GOVERNING}], "meta": EXTRACT_META},
        {"prompt": "What does a Most Favored Nation clause do?", "prompt_id": "mfn"},
    ])
    config = load_config(CandidatesConfig, REPO / "configs" / "candidates.yaml",
                         [f"prompts={prompts}", f"store={url}", "tasks=[]", "sampling.n=5", "rank_gold=true"])
    # a duplicate (dropped) and a quote of the whole excerpt cut at the token limit
    client = FakeClient({"Governing Law": ["Not present.", GOVERNING, "Not present.", f'"{EXCERPT} ...',
                                           "Some law applies."],
                         "Most Favored": ["It gives the best price.", "It equalises terms.", "No idea."]})
    with open_store(url) as store:
        summary = generate_candidates(config, client, store, model="m")
        assert summary.tasks_added == 2 and summary.gold is not None
        assert (summary.gold.ranked, summary.gold.no_labels) == (1, 1)
        assert "1 tasks ranked by their gold labels" in summary.describe()
        (task,) = store.task_rankings()
        assert task.meta["present"] is True and task.meta["answers"] == [GOVERNING]  # the labels travel with the task
        assert task.meta["prompts_file"] == str(prompts) and task.meta["prompts_line"] == 1
        assert task.meta["finish_reasons"] == ["stop", "stop", "stop", "length", "stop"]
        assert task.meta["answer_finish_reasons"] == ["stop", "stop", "length", "stop"]  # one per kept answer
        # the cut quote overlaps the clause, yet ranks with the unparseable answer, below "Not present."
        assert task.rankings[0].annotator == "gold:cuad" and task.rankings[0].ranks == (2, 1, 3, 3)
        assert "answer 3: cut at the token limit" in task.rankings[0].rationale


def test_candidates_check_labels_before_generating_and_refuse_the_test_split(tmp_path: Path) -> None:
    from lexalign.serve.candidates import CandidatesConfig, CandidatesError, check_gold_labels, load_prompts

    prompts = write_prompts(tmp_path / "prompts.jsonl", [
        {"messages": chat(EXTRACT_USER), "meta": EXTRACT_META},
        {"messages": chat(PRESENCE_USER), "meta": {"task": "presence", "source": "cuad", "present": "sometimes"}},
    ])
    with pytest.raises(CandidatesError) as info:
        check_gold_labels(load_prompts(str(prompts)), str(prompts))
    assert f"{prompts}:2: meta.present: expected true or false" in str(info.value)
    assert f"{prompts}:1" not in str(info.value)
    with pytest.raises(ConfigError) as refused:
        load_config(CandidatesConfig, REPO / "configs" / "candidates.yaml",
                    ["prompts=shipped:sft_test.jsonl", "rank_gold=true"])
    assert {p.key for p in refused.value.problems} == {"prompts"} and "held-out" in str(refused.value)
    # without rank_gold the test split may still be sampled (e.g. for human ranking experiments)
    load_config(CandidatesConfig, REPO / "configs" / "candidates.yaml", ["prompts=shipped:sft_test.jsonl"])


# --------------------------------------------------------------------------- export: kinds, override, origin


def rank_by_human(store: Any, who: str, ranks: list[int]) -> None:
    if store.get_annotator(who) is None:
        store.add_annotator(who, f"{who}-password-123")
    view = store.next_task_for(who)
    store.submit_ranking(who, view.task_id, {c.id: r for c, r in zip(view.candidates, ranks)},
                         form_token=view.form_token)


def pairs_of(folder: Path) -> set[tuple[str, str, str, str]]:
    return {(p.meta["prompt_id"], p.chosen[0].content, p.rejected[0].content, p.meta["origin"])
            for p in read_jsonl(folder / "preferences.jsonl", PreferencePair)}


PRESENCE_META = {"task": "presence", "source": "cuad", "present": True, "doc_id": "train-doc-1"}
ANSWERS = ["No", "Yes", "Maybe, it depends."]  # the clause is there; the last gives no verdict: gold 2, 1, 3


def test_a_human_ranking_replaces_the_derived_one_at_export(tmp_path: Path, url: str) -> None:
    with open_store(url) as store:
        add_task(store, "both", PRESENCE_USER, ANSWERS, PRESENCE_META, k=1)
        add_task(store, "gold-only", PRESENCE_USER, ANSWERS, {**PRESENCE_META, "doc_id": "train-doc-2"}, k=0)
        rank_tasks_by_gold(store)
        rank_by_human(store, "lawyer", [1, 3, 2])  # gold: 2, 1, 3; they agree only that "No" > "Maybe"
        summary = export_preferences(store, tmp_path / "default", feedback=False, save_dataset=False)
        assert summary.rankings_replaced == 1 and summary.rankings == 2
        assert summary.pairs_by_origin == {"derived:gold:cuad": 3, "human": 3}
        assert pairs_of(tmp_path / "default") == {
            ("both", "No", "Yes", "human"), ("both", "No", "Maybe, it depends.", "human"),
            ("both", "Maybe, it depends.", "Yes", "human"),
            ("gold-only", "Yes", "No", "derived:gold:cuad"),
            ("gold-only", "Yes", "Maybe, it depends.", "derived:gold:cuad"),
            ("gold-only", "No", "Maybe, it depends.", "derived:gold:cuad")}
        # only the derived kind: the gold ranking of "both" is exported, since no human ranking is selected
        export_preferences(store, tmp_path / "derived", kinds=["derived"], feedback=False, save_dataset=False)
        assert {(c, r) for pid, c, r, o in pairs_of(tmp_path / "derived") if pid == "both"} == {
            ("Yes", "No"), ("Yes", "Maybe, it depends."), ("No", "Maybe, it depends.")}
        export_preferences(store, tmp_path / "human", kinds=["human"], feedback=False, save_dataset=False)
        assert {pid for pid, *_ in pairs_of(tmp_path / "human")} == {"both"}
        # mixed on purpose: gold votes at weight 0.5 lose every disagreement with the lawyer's vote at 1, and a
        # pair both voted for says so in its origin (and its mean weight)
        mixed = export_preferences(store, tmp_path / "mixed", mix_kinds=True, weights={"derived": 0.5},
                                   feedback=False, save_dataset=False)
        assert mixed.rankings_replaced == 0
        rows = [p for p in read_jsonl(tmp_path / "mixed" / "preferences.jsonl", PreferencePair)
                if p.meta["prompt_id"] == "both"]
        assert {(p.chosen[0].content, p.rejected[0].content, p.meta["origin"], p.meta["weight"],
                 p.meta["votes_for"], p.meta["votes_against"]) for p in rows} == {
            ("No", "Yes", "human", 1.0, 1, 1), ("Maybe, it depends.", "Yes", "human", 1.0, 1, 1),
            ("No", "Maybe, it depends.", "human+derived:gold:cuad", 0.75, 2, 0)}
        # equal weights and a 1:1 split: no majority, no pair (the rule is unchanged)
        even = export_preferences(store, tmp_path / "even", mix_kinds=True, feedback=False, save_dataset=False)
        assert even.pairs_dropped_no_majority == 2
        assert {(c, r) for pid, c, r, o in pairs_of(tmp_path / "even") if pid == "both"} == {
            ("No", "Maybe, it depends.")}
        for bad, words in (({"kinds": ["robot"]}, "kind 'robot'"), ({"weights": {"derived": 0}}, "expected a number > 0"),
                           ({"weights": {"people": 1.0}}, "weight for 'people'")):
            with pytest.raises(StoreError, match=words):
                export_preferences(store, tmp_path / "bad", feedback=False, save_dataset=False, **bad)
    report = json.loads((tmp_path / "default" / "export.json").read_text())
    assert report["kinds"] == ["human", "derived"] and "human rankings replace its derived ones" in report["rule"]


def test_export_cli_selects_kinds_and_weights(tmp_path: Path, url: str, capsys) -> None:
    from lexalign.cli import main

    with open_store(url) as store:
        add_task(store, "t", PRESENCE_USER, ANSWERS, PRESENCE_META)
        rank_tasks_by_gold(store)
    assert main(["prefs", "export", "--store", url, "--out", str(tmp_path / "d"), "--kinds", "derived",
                 "--weight", "derived=0.25"]) == 0
    assert "by origin: derived:gold:cuad 3" in capsys.readouterr().out
    exported = read_jsonl(tmp_path / "d" / "preferences.jsonl", PreferencePair)
    assert {p.meta["weight"] for p in exported} == {0.25}
    assert {p.meta["task"] for p in exported} == {"presence"}   # the task's meta.task travels with its pairs
    assert main(["prefs", "export", "--store", url, "--out", str(tmp_path / "h"), "--kinds", "human"]) == 0
    assert "0 preference pairs" in capsys.readouterr().out
    assert main(["prefs", "export", "--store", url, "--out", str(tmp_path / "x"), "--weight", "derived"]) == 2
    assert "expected KIND=NUMBER" in capsys.readouterr().err


def test_kinds_survive_export_and_import_into_another_store(tmp_path: Path, url: str, capsys) -> None:
    from lexalign.cli import main

    with open_store(url) as store:
        add_task(store, "both", PRESENCE_USER, ANSWERS, PRESENCE_META, k=1)
        add_task(store, "app-only", "Which law governs?", ["New York.", "Delaware."], None, source="app", k=1)
        rank_tasks_by_gold(store)
        rank_by_human(store, "lawyer", [1, 3, 2])
        rank_by_human(store, "lawyer", [2, 1])
        export_preferences(store, tmp_path / "a", feedback=False, save_dataset=False)
    records = read_jsonl(tmp_path / "a" / "rankings.jsonl", RankingRecord)
    assert sorted((r.prompt_id, r.annotator, r.annotator_kind) for r in records) == [
        ("app-only", "lawyer", "human"), ("both", "gold:cuad", "derived"), ("both", "lawyer", "human")]
    other = f"sqlite:///{tmp_path / 'other.db'}"
    assert main(["prefs", "import", str(tmp_path / "a" / "rankings.jsonl"), "--store", other]) == 0
    assert "2 tasks created" in capsys.readouterr().out
    with open_store(other) as store:
        kinds = {a.username: a.kind for a in store.list_annotators()}
        assert kinds == {"gold:cuad": "derived", "lawyer": "human"}
        assert {t.prompt_id: t.source for t in store.task_rankings()} == {"both": "candidates", "app-only": "app"}
        assert "store_source" not in store.task_rankings()[0].meta
        export_preferences(store, tmp_path / "b", feedback=False, save_dataset=False)
        assert import_ranking_file(store, tmp_path / "a" / "rankings.jsonl").duplicates == 3  # idempotent
    assert pairs_of(tmp_path / "b") == pairs_of(tmp_path / "a")
    assert (tmp_path / "b" / "rankings.jsonl").read_bytes() == (tmp_path / "a" / "rankings.jsonl").read_bytes()


def test_import_refuses_kind_conflicts_and_bad_derived_names(tmp_path: Path, url: str) -> None:
    base = {"prompt_id": "p", "prompt": "Q?", "responses": ["a", "b"], "ranks": [1, 2]}
    with pytest.raises(ValueError, match="<method>:<name>"):
        RankingRecord(**base, annotator="gold", annotator_kind="derived")
    with open_store(url) as store:
        store.import_rankings([RankingRecord(**base, annotator="gold:cuad", annotator_kind="derived")], source="x")
        with pytest.raises(StoreError, match="of kind 'derived' in the store, not 'human'"):
            store.import_rankings([RankingRecord(**{**base, "prompt_id": "q"}, annotator="gold:cuad")], source="x")
        with pytest.raises(StoreError, match="not a valid username"):
            store.import_rankings([RankingRecord(**{**base, "prompt_id": "q"}, annotator="lawyer:x")], source="x")
        (task,) = store.task_rankings()
        with pytest.raises(StoreError, match="derived annotator 'dana'"):  # a derived ranking needs a derived name
            store.add_derived_rankings([DerivedRanking(task.task_id, "dana", (1, 2), False)])
        with pytest.raises(StoreError, match="no such task"):
            store.add_derived_rankings([DerivedRanking(task.task_id + 99, "gold:x", (1, 2), False)])
        assert store.task_count() == 1 and store.counts()["rankings"] == 1


def test_pair_origin_is_checked_when_present() -> None:
    pair = {"prompt": "Q?", "chosen": "a", "rejected": "b"}
    for origin in ("human", "derived:gold:cuad", "human+derived:gold:cuad"):
        PreferencePair.model_validate({**pair, "meta": {"origin": origin}})
    PreferencePair.model_validate({**pair, "meta": {"source": "acord"}})  # older files without an origin
    for origin in ("robot", "derived:cuad", "", 3):
        with pytest.raises(ValueError, match="meta.origin"):
            PreferencePair.model_validate({**pair, "meta": {"origin": origin}})


# --------------------------------------------------------------------------- schema migration


def version_1_store(url: str) -> None:
    """A store exactly as schema version 1 wrote it (the annotators table without ``kind``, version row 1), with a
    lawyer who ranked one labelled task. SQLAlchemy Core, so the same builder serves SQLite and PostgreSQL."""
    from datetime import datetime, timezone

    from lexalign.data.store_schema import metadata

    v1 = MetaData()
    for table in metadata.sorted_tables:
        if table.name != "annotators":
            table.to_metadata(v1)
    people = Table("annotators", v1,
                   Column("id", Integer, primary_key=True),
                   Column("username", String(64), nullable=False, unique=True),
                   Column("password_hash", String(255), nullable=True),
                   Column("role", String(16), nullable=False, default="annotator"),
                   Column("active", Boolean, nullable=False, default=True),
                   Column("created_at", DateTime(timezone=True), nullable=False),
                   CheckConstraint("role IN ('annotator', 'admin')", name="ck_annotators_role"))
    when = datetime(2025, 1, 1, tzinfo=timezone.utc)
    engine = create_engine(url)
    v1.create_all(engine)
    with engine.begin() as conn:
        conn.execute(v1.tables["schema_version"].insert().values(version=1, applied_at=when))
        # ids from the database (PostgreSQL's sequences must move on, as when version 1 wrote the rows)
        lawyer = conn.execute(people.insert().values(username="lawyer", password_hash=None, role="annotator",
                                                     active=True, created_at=when)).inserted_primary_key[0]
        task = conn.execute(v1.tables["tasks"].insert().values(
            prompt_id="old", prompt=chat(EXTRACT_USER), meta=EXTRACT_META, source="candidates", k=0, assigned=0,
            created_at=when)).inserted_primary_key[0]
        conn.execute(v1.tables["candidates"].insert(), [{"task_id": task, "position": i, "text": t, "model": "m"}
                                                        for i, t in enumerate(ANSWERS)])
        conn.execute(v1.tables["rankings"].insert().values(task_id=task, annotator_id=lawyer, ranks=[1, 3, 2],
                                                           none_acceptable=False, flags=[], submitted_at=when))
    engine.dispose()


def check_migrated(url: str) -> None:
    with open_store(url) as store:
        assert store.schema_version() == SCHEMA_VERSION == 2
        assert store.get_annotator("lawyer").kind == "human"  # everyone in a version-1 store is a person
        (task,) = store.task_rankings(kinds=["human"])
        assert task.rankings[0].ranks == (1, 3, 2)
        assert rank_tasks_by_gold(store).ranked == 1  # derived annotators work in the migrated store
        store.set_password("lawyer", "a-password-123")
        assert store.verify_login("lawyer", "a-password-123") is not None
    with open_store(url) as store:  # reopening a migrated store migrates nothing
        assert store.schema_version() == 2 and len(store.list_annotators()) == 2


def test_a_version_1_store_is_migrated_in_place(tmp_path: Path) -> None:
    path = tmp_path / "v1.db"
    version_1_store(f"sqlite:///{path}")
    check_migrated(f"sqlite:///{path}")
    with sqlite3.connect(path) as raw:
        assert [v for (v,) in raw.execute("SELECT version FROM schema_version ORDER BY version")] == [1, 2]
        with pytest.raises(sqlite3.IntegrityError, match="ck_annotators_kind"):  # checked like a new store's kind
            raw.execute("UPDATE annotators SET kind = 'robot' WHERE username = 'lawyer'")
