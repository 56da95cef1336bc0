"""`lexalign candidates`: prompts files (validated, file:line errors), and N sampled answers per prompt from the
REAL vLLM server stored as ranking tasks in a temporary SQLite preference store."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from lexalign.config import ConfigError, load_config
from lexalign.data.jsonl import DataError
from lexalign.data.store import open_store
from lexalign.serve.candidates import CandidatesConfig, generate_candidates, load_prompts, question_and_excerpt

pytest_plugins = ["test_serve_support"]

REPO = Path(__file__).resolve().parent.parent
CANDIDATES_YAML = REPO / "configs" / "candidates.yaml"
GOOD_LINES = [
    {"prompt": "What does a Most Favored Nation clause do?", "prompt_id": "mfn-question"},
    {"messages": [{"role": "system", "content": "You review contracts."},
                  {"role": "user", "content": "Find the Governing Law clause in this contract excerpt.\n\nExcerpt:\n"
                                              "This Agreement is governed by the laws of Ohio."}],
     "meta": {"task": "extract", "doc_id": "d1"}},
    {"messages": [{"role": "user", "content": "Is this clause unfair?\n\nClause:\nWe may end your account at any time."},
                  {"role": "assistant", "content": "Potentially unfair: unilateral termination."}],
     "meta": {"task": "unfair"}},
]


def stored_tasks(store_url: str) -> dict[str, dict]:
    """Tasks with their candidates, read straight from the SQLite file (tasks nobody has ranked yet included)."""
    import sqlite3

    with sqlite3.connect(store_url.removeprefix("sqlite:///")) as db:
        tasks = {row[0]: {"id": row[0], "prompt_id": row[1], "prompt": json.loads(row[2]), "meta": json.loads(row[3]),
                          "source": row[4], "k": row[5], "candidates": []}
                 for row in db.execute("SELECT id, prompt_id, prompt, meta, source, k FROM tasks")}
        for task_id, text, model in db.execute("SELECT task_id, text, model FROM candidates ORDER BY task_id, position"):
            tasks[task_id]["candidates"].append({"text": text, "model": model})
    return {t["prompt_id"]: t for t in tasks.values()}


def write_jsonl(path: Path, rows: list) -> Path:
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows), encoding="utf-8")
    return path


def test_prompt_files_are_validated_with_file_and_line(tmp_path: Path) -> None:
    bad = write_jsonl(tmp_path / "bad.jsonl", [
        GOOD_LINES[0],
        "{not json",
        {"prompt": "x", "messages": [{"role": "user", "content": "y"}]},
        {"messages": [{"role": "assistant", "content": "hello"}]},
        {"prompt": "ok", "colour": "red"},
    ])
    with pytest.raises(DataError) as info:
        load_prompts(str(bad))
    text = str(info.value)
    assert f"{bad}:2: not valid JSON" in text
    assert f"{bad}:3: " in text and "exactly one" in text
    assert f"{bad}:4: " in text and "'user'" in text
    assert f"{bad}:5: colour" in text


def test_prompts_drop_the_reference_answer_and_filter_by_task(tmp_path: Path) -> None:
    prompts = load_prompts(str(write_jsonl(tmp_path / "p.jsonl", GOOD_LINES)))
    assert [p.messages[-1]["role"] for p in prompts] == ["user"] * 3
    assert prompts[0].messages[0]["role"] == "system" and prompts[0].prompt_id == "mfn-question"
    assert prompts[2].meta["reference"] == "Potentially unfair: unilateral termination."
    assert [p.line for p in prompts] == [1, 2, 3]
    only = load_prompts(str(tmp_path / "p.jsonl"), tasks=["unfair"])
    assert len(only) == 1 and only[0].number == 0
    shipped = load_prompts("shipped:sft_valid.jsonl", limit=5, tasks=["extract"])
    assert len(shipped) == 5 and all(p.meta["task"] == "extract" and p.meta["reference"] for p in shipped)
    question, excerpt = question_and_excerpt(shipped[0].messages)
    assert question.startswith("Find the ") and excerpt and excerpt in shipped[0].messages[-1]["content"]


def test_bad_candidates_configs_list_every_problem() -> None:
    config = load_config(CandidatesConfig, CANDIDATES_YAML)
    assert config.serve.port == 0 and config.sampling.n == 4
    with pytest.raises(ConfigError) as info:
        load_config(CandidatesConfig, CANDIDATES_YAML, ["run=runs/x/sft", "endpoint=ftp://x", "sampling.n=1",
                                                         "prompts=/no/file.jsonl", "serve.port=-1", "concurrency=0"])
    keys = {p.key for p in info.value.problems}
    assert keys == {"endpoint", "sampling.n", "prompts", "serve.port", "concurrency"}


def test_cli_needs_a_run_or_an_endpoint(tmp_path: Path) -> None:
    result = subprocess.run([sys.executable, "-m", "lexalign.cli", "candidates", f"store=sqlite:///{tmp_path}/p.db"],
                            capture_output=True, text=True, cwd=REPO, timeout=120)
    assert result.returncode == 2 and "pass --run RUN_DIR" in result.stderr and "Traceback" not in result.stderr


@pytest.mark.slow
def test_cli_stores_n_candidates_per_prompt_from_the_running_server(served, tmp_path: Path, store_url: str) -> None:
    prompts = write_jsonl(tmp_path / "prompts.jsonl", GOOD_LINES)
    out = tmp_path / "tasks.jsonl"
    command = [sys.executable, "-m", "lexalign.cli", "candidates", "--endpoint", served.base_url,
               "--prompts", str(prompts), "--store", store_url, "tasks=[]", "sampling.n=3", "sampling.temperature=1.0",
               # the base model: the briefly tuned adapter may end its turn at once (an empty answer is dropped)
               "model=tiny-base",
               "sampling.max_tokens=24", "k=2", "concurrency=4", f"out={out}"]
    env = dict(os.environ, LEXALIGN_API_KEY=served.api_key)
    result = subprocess.run(command, capture_output=True, text=True, cwd=REPO, env=env, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "3 ranking tasks added from 3 prompts with tiny-base" in result.stdout
    tasks = stored_tasks(store_url)
    assert len(tasks) == 3 and "mfn-question" in tasks
    for task in tasks.values():
        texts = [c["text"] for c in task["candidates"]]
        assert len(texts) == 3 and len(set(texts)) == 3 and all(t.strip() for t in texts)
        assert all(c["model"] == "tiny-base" for c in task["candidates"])
        assert task["source"] == "candidates" and task["k"] == 2 and task["prompt"][-1]["role"] == "user"
        assert task["meta"]["model"] == "tiny-base" and task["meta"]["sampling"]["n"] == 3
    governing = next(t for t in tasks.values() if t["meta"].get("doc_id") == "d1")
    assert governing["meta"]["excerpt"] == "This Agreement is governed by the laws of Ohio."
    assert governing["meta"]["question"].startswith("Find the Governing Law clause")
    assert governing["prompt_id"].startswith("tiny-base/")
    assert len(out.read_text().splitlines()) == 3
    # the same prompts for the same model again: nothing new, reported
    again = subprocess.run(command, capture_output=True, text=True, cwd=REPO, env=env, timeout=600)
    assert again.returncode == 0 and "0 ranking tasks added" in again.stdout and "3 already in the store" in again.stdout
    # the ranking app serves them: an annotator gets one with its 3 answers
    with open_store(store_url) as store:
        store.add_annotator("lawyer", "lawyer-password")
        view = store.next_task_for("lawyer")
        assert view is not None and len(view.candidates) == 3


@pytest.mark.slow
def test_shipped_prompts_in_process_with_the_python_api(served, store_url: str) -> None:
    config = load_config(CandidatesConfig, CANDIDATES_YAML, [
        f"endpoint={served.base_url}", f"store={store_url}", "max_prompts=4", "tasks=[unfair]", "sampling.n=2",
        "sampling.max_tokens=16", "sampling.temperature=1.0", "max_prompt_chars=700"])  # the test model: 512 tokens
    with open_store(store_url) as store:
        summary = generate_candidates(config, served.client(), store)
    # the default model is the tuned adapter; prompts where it gave < 2 distinct non-empty answers are skipped
    assert summary.model == "tiny-sft" and summary.prompts == 4 and summary.failed == 0, summary.describe()
    assert summary.tasks_added + summary.skipped_too_few == 4 and summary.tasks_added >= 1, summary.describe()
    assert summary.answers + summary.dropped_answers == 4 * 2
    assert summary.output_tokens > 0 and summary.seconds > 0
    for task in stored_tasks(store_url).values():
        assert len(task["candidates"]) == 2 and task["meta"]["reference"] and task["meta"]["task"] == "unfair"
        assert task["meta"]["excerpt"] in task["prompt"][-1]["content"]
