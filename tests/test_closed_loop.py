"""The closed loop: a lawyer's thumbs-down with a better answer (chat UI handler) and a ranking (ranking-app
handler) reach DPO through `prefs export`, and DPO raises the policy's log-probability margin on those pairs."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace


from lexalign.config import load_config
from lexalign.data.store import open_store
from lexalign.reward.annotate import AnnotateApp, AnnotateConfig
from lexalign.reward.prefs import export_preferences
from lexalign.rlhf.dpo import train_dpo
from lexalign.runs import read_manifest
from lexalign.serve.chat import ChatApp, ChatConfig, ChatSession, Endpoint, Turn

pytest_plugins = ["test_reward_support"]

from test_dpo import dpo_config  # noqa: E402
from test_reward_support import REPO, clause_of, prompt_messages  # noqa: E402

FEEDBACK_EXCERPT = f"Fees are due monthly. {clause_of('Delaware')}"
RANKED_EXCERPT = f"Notices shall be in writing. {clause_of('Nevada')}"


def req(user: str) -> SimpleNamespace:
    return SimpleNamespace(username=user)


def lawyers_feedback_and_ranking(store_url: str, tmp_path: Path) -> None:
    """What the two apps store when a lawyer uses them (their handlers, the same calls the browser makes)."""
    chat_config = load_config(ChatConfig, REPO / "configs" / "chat.yaml",
                              ["endpoint=http://127.0.0.1:9/v1", f"store={store_url}"])  # no model needed to rate
    with open_store(store_url) as store:
        store.add_annotator("alice", "alice-password")
        store.add_annotator("bob", "bob-password")
        chat = ChatApp(store, chat_config, Endpoint(chat_config, "key"))
        session = ChatSession("alice")
        session.turns.append(Turn({"task": "clause", "category": "Governing Law"}, "Governing Law",
                                  prompt_messages(FEEDBACK_EXCERPT), "Not present.", "tiny-sft"))
        status, *_ = chat.on_feedback(-1, f'"{clause_of("Delaware")}"', session, req("alice"))
        assert "saved" in status.lower(), status

        candidates = [f'"{clause_of("Nevada")}"', "Not present.", '"Notices shall be in writing."']
        store.add_task("ranked-1", prompt_messages(RANKED_EXCERPT), candidates, k=1, source="candidates")
        annotate = AnnotateApp(store, load_config(AnnotateConfig, None, [f"store={store_url}", "max_candidates=4",
                                                                         f"export_dir={tmp_path / 'exports'}"]))
        names = ["message", "task_header", "question", "excerpt", "state", "submit", "skip", "none_acceptable",
                 "rationale", "flags", "progress", "mine", "admin_tab"]
        c: dict = {name: name for name in names} | {g: [f"{g}{i}" for i in range(4)]
                                                   for g in ("columns", "titles", "answers", "ranks", "answer_flags")}
        state = annotate.on_load(c, req("bob"))["state"]
        text_of = {cand.id: cand.text for cand in store.next_task_for("bob").candidates}
        ranks = [candidates.index(text_of[slot]) + 1 for slot in state.slots] + [None]  # quote 1st, "Not present." 2nd
        saved = annotate.on_submit(c, state, ranks, False, "quotes the clause", [], req("bob"))
        assert saved["message"].startswith("Saved"), saved["message"]


def test_feedback_and_a_ranking_train_dpo(align_sft_run: Path, align_pairs, tmp_path: Path) -> None:
    store_url = f"sqlite:///{tmp_path / 'prefs.db'}"
    lawyers_feedback_and_ranking(store_url, tmp_path)

    with open_store(store_url) as store:
        summary = export_preferences(store, tmp_path / "export", save_dataset=False)
    exported = tmp_path / "export"
    ranked = [json.loads(line) for line in (exported / "preferences.jsonl").read_text().splitlines()]
    feedback = [json.loads(line) for line in (exported / "feedback_pairs.jsonl").read_text().splitlines()]
    assert summary.feedback_pairs == 1 and len(ranked) == 3                 # 3 ranks -> 3 ordered pairs
    assert feedback[0]["chosen"][0]["content"] == f'"{clause_of("Delaware")}"'
    assert feedback[0]["rejected"][0]["content"] == "Not present."
    assert {pair["meta"]["origin"] for pair in ranked} == {"human"}

    # DPO on the lawyers' pairs (plus the usual training pairs); the held-out set is exactly the lawyers' pairs
    lawyers = tmp_path / "lawyers.jsonl"
    lawyers.write_text((exported / "preferences.jsonl").read_text() + (exported / "feedback_pairs.jsonl").read_text())
    run = train_dpo(dpo_config(align_sft_run, (align_pairs[0], lawyers, lawyers), tmp_path / "dpo",
                               f"data.train=[{align_pairs[0]},{exported / 'preferences.jsonl'},"
                               f"{exported / 'feedback_pairs.jsonl'}]", "training.max_steps=20"))
    results = read_manifest(run)["results"]
    assert results["train_pairs_by_origin"]["chat_feedback/human"] == 1       # the lawyer's pair is trained on
    assert results["train_pairs_by_origin"]["candidates/human"] == 3
    assert results["valid_pairs"] == 4
    assert results["eval_logp_margin"] > results["initial_eval_logp_margin"] + 1.0, results
    # on a QLoRA SFT adapter (the default path) 3 or 4 of the 4 held-out lawyer pairs end with a positive implicit
    # reward after 20 steps (chance 0.5); the margin above is the claim
    assert results["eval_rewards_accuracies"] >= 0.75, results
