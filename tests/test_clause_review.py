"""Clause-by-clause review: the playbook file (every error with its file:line, before any model call), rows from
fixed answers over a real CUAD contract (found and located at the right characters; not found with the playbook's
risk note; quotes that are not in the contract), the Markdown and Word memos, the command's one-line errors and
(slow) the command end to end against the REAL vLLM server.

The fixed answers stand in for the model only where the model's wording is not what is tested: they quote the
contract exactly when the prompt's excerpts hold the clause, as the tuned model is trained to."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from lexalign.cli import main
from lexalign.data import prompts
from lexalign.data.paths import resolve_data_path
from lexalign.serve import clause_review
from lexalign.serve.chat import Endpoint
from lexalign.serve.clause_review import (
    FOUND,
    NOT_FOUND,
    UNVERIFIED,
    PlaybookError,
    budget_for,
    default_playbook,
    load_playbook,
    memo_markdown,
    read_answer,
    run_clause_review,
    summary_line,
    write_memo_docx,
)
from lexalign.serve.documents import Document, parse_document, quotes_in
from lexalign.serve.review import CUAD_CATEGORIES, ReviewRequest, build_prompt

pytest_plugins = ["test_serve_support"]

REPO = Path(__file__).resolve().parent.parent
PLAYBOOK = REPO / "configs" / "playbooks" / "standard.yaml"
# A CUAD contract (CC BY 4.0) as the shipped SFT data carries it: its 1000-character excerpts.
CUAD_DOC = "InmodeLtd_20190729_F-1A_EX-10.9_11743243_EX-10.9_Manufacturing Agreement.txt"
_INSTRUCTION = re.compile(r"Find the (.+?) clause in this contract excerpt \(")


def cuad_contract() -> tuple[str, dict[str, str]]:
    """The contract's shipped excerpts in document order, and the gold span of each category present in them."""
    windows: dict[tuple[int, int], str] = {}
    gold: dict[str, str] = {}
    with resolve_data_path("shipped:sft_train.jsonl").open(encoding="utf-8") as lines:
        for line in lines:
            record = json.loads(line)
            meta = record["meta"]
            if meta.get("task") != "extract" or meta.get("doc_id") != CUAD_DOC:
                continue
            windows[tuple(meta["window"])] = prompts.excerpt_of(record["messages"][1]["content"])
            if meta["present"]:
                gold.setdefault(meta["category"], meta["answers"][0])
    return "\n\n".join(text for _, text in sorted(windows.items())), gold


@pytest.fixture(scope="module")
def contract() -> tuple[Document, dict[str, str]]:
    text, gold = cuad_contract()
    assert {"Governing Law", "Termination for Convenience"} <= set(gold)
    return parse_document("inmode-manufacturing.txt", text.encode()), gold


def fixed_ask(gold: dict[str, str], calls: list[list[dict[str, str]]]):
    """Answers as the tuned model is trained to: the clause quoted exactly when the excerpts hold it."""
    def ask(messages: list[dict[str, str]]) -> str:
        calls.append(messages)
        user = messages[-1]["content"]
        category = _INSTRUCTION.match(user).group(1)
        span = gold.get(category)
        return prompts.extract_answer([span]) if span and span in prompts.excerpt_of(user) else prompts.NOT_PRESENT
    return ask


def forbidden(*args, **kwargs):
    raise AssertionError("the model was asked although the input was bad")


# --------------------------------------------------------------------------- the playbook


def test_the_shipped_playbook_loads_and_the_default_is_every_category() -> None:
    book = load_playbook(PLAYBOOK)
    names = [c.clause for c in book.clauses]
    assert names == ["Governing Law", "Termination for Convenience", "Cap on Liability", "Uncapped Liability",
                     "Non-Compete", "Exclusivity", "Change of Control", "Anti-Assignment", "IP Ownership Assignment",
                     "Audit Rights"]
    assert all(c.position and c.risk_if_missing in ("low", "medium", "high") for c in book.clauses)
    assert book.clauses[2].risk_if_missing == "high" and book.clauses[0].line == 7
    everything = default_playbook()
    assert [c.clause for c in everything.clauses] == list(CUAD_CATEGORIES) and len(everything.clauses) == 41
    assert not any(c.position or c.risk_if_missing for c in everything.clauses)
    assert load_playbook(None).clauses == everything.clauses


def test_playbook_errors_name_the_file_line_and_close_names(tmp_path: Path) -> None:
    path = tmp_path / "book.yaml"
    path.write_text("- clause: Governing Law\n"          # 1
                    "  colour: blue\n"                   # 2 unknown key
                    "- clause: Cap On Liability\n"       # 3 wrong case
                    "  risk_if_missing: high\n"          # 4
                    "- Audit Rights\n"                   # 5 a bare name is fine
                    "- clause: Governing law\n"          # 6 misspelt
                    "- clause: Insurance\n"              # 7
                    "  risk_if_missing: severe\n"        # 8 not a level
                    "- clause: Audit Rights\n",          # 9 twice
                    encoding="utf-8")
    with pytest.raises(PlaybookError) as info:
        load_playbook(path)
    message = str(info.value)
    assert "\n" not in message and message.startswith(f"invalid playbook (5 problems): {path}:2: ")
    by_line = {p.where: str(p) for p in info.value.problems}
    assert set(by_line) == {f"{path}:{n}" for n in (2, 3, 6, 8, 9)}
    assert "colour: unknown key; expected one of: clause, position, risk_if_missing" in by_line[f"{path}:2"]
    assert "'Cap On Liability': not a CUAD category; did you mean 'Cap on Liability'" in by_line[f"{path}:3"]
    assert "did you mean 'Governing Law'" in by_line[f"{path}:6"]
    assert "'severe': expected one of: low, medium, high" in by_line[f"{path}:8"]
    assert "listed twice (first on line 5)" in by_line[f"{path}:9"]

    for text, expected in (("clause: Governing Law\n", f"{path}:1: playbook: expected a YAML list"),
                           ("- clause: [a, b\n", f"{path}:2: yaml: not valid YAML"),
                           ("- position: firm\n", f"{path}:1: clause: missing")):
        path.write_text(text, encoding="utf-8")
        with pytest.raises(PlaybookError, match=re.escape(expected)):
            load_playbook(path)
    with pytest.raises(PlaybookError, match="file not found"):
        load_playbook(tmp_path / "missing.yaml")


def test_bad_input_fails_in_one_line_before_any_model_call(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                           capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setattr(Endpoint, "resolve", forbidden)
    monkeypatch.setattr(clause_review, "ask_through", forbidden)
    monkeypatch.setattr("lexalign.serve.launch.start_server", forbidden)
    good = tmp_path / "msa.txt"
    good.write_text("This Agreement shall be governed by the laws of the State of New York.\n", encoding="utf-8")
    bad_book = tmp_path / "book.yaml"
    bad_book.write_text("- clause: Governing Law\n- clause: Governing law\n", encoding="utf-8")
    config = ["--config", str(REPO / "configs" / "chat.yaml")]
    for model in (["--endpoint", "http://127.0.0.1:9/v1"], ["--run", str(tmp_path / "no-run")]):
        code = main(["review", "--contract", str(good), "--playbook", str(bad_book), *model,
                     "--out", str(tmp_path / "out"), *config])
        err = capsys.readouterr().err.strip()
        assert code == 2 and "\n" not in err and "Traceback" not in err
        assert err.startswith("lexalign review: error: invalid playbook") and f"{bad_book}:2" in err
        assert "did you mean 'Governing Law'" in err
    code = main(["review", "--contract", str(tmp_path / "nope.txt"), "--endpoint", "http://127.0.0.1:9/v1",
                 "--out", str(tmp_path / "out"), *config])
    err = capsys.readouterr().err.strip()
    assert code == 2 and "\n" not in err and "nope.txt: cannot read" in err
    assert not (tmp_path / "out").exists()  # nothing is written for bad input


def test_an_unreachable_endpoint_is_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    contract = tmp_path / "msa.txt"
    contract.write_text("This Agreement shall be governed by the laws of the State of New York.\n", encoding="utf-8")
    code = main(["review", "--contract", str(contract), "--endpoint", "http://127.0.0.1:9/v1", "--out",
                 str(tmp_path / "out"), "--config", str(REPO / "configs" / "chat.yaml")])
    err = capsys.readouterr().err.strip()
    assert code == 2 and "\n" not in err and "not reachable" in err


# --------------------------------------------------------------------------- rows


def test_rows_are_located_in_the_contract_with_the_chat_prompts(contract: tuple[Document, dict[str, str]]) -> None:
    document, gold = contract
    book = load_playbook(PLAYBOOK)
    calls: list[list[dict[str, str]]] = []
    budget = budget_for(clause_review.ChatConfig(), 4096)
    rows = run_clause_review(document, book, fixed_ask(gold, calls), budget=budget)
    assert [r.clause for r in rows] == [c.clause for c in book.clauses] and len(calls) == len(rows)

    # the prompts are the chat app's, clause by clause
    for clause, messages, row in zip(book.clauses, calls, rows):
        built = build_prompt(ReviewRequest("clause", clause.clause), document, [], budget)
        assert messages == built.messages and row.excerpts == built.source_labels()
        assert messages[0]["content"] == prompts.SYSTEM_PROMPT
        assert messages[-1]["content"].startswith(f"Find the {clause.clause} clause in this contract excerpt (")

    by_name = {r.clause: r for r in rows}
    for name in ("Governing Law", "Termination for Convenience"):
        row, span = by_name[name], gold[name]
        start = document.text.find(span)
        assert row.found and row.status == FOUND and row.quote == span and row.answer == f'"{span}"'
        (citation,) = row.citations
        assert (citation["start"], citation["end"]) == (start, start + len(span))
        assert document.text[citation["start"]:citation["end"]] == span
        sent = {int(re.match(r"\[chunk (\d+)", label).group(1)) for label in row.excerpts}
        assert set(citation["chunks"]) & sent  # located in a chunk the prompt carried
        # the table names the contract's own section; the chunks and characters stay in the citation for tools
        assert row.location == citation["where"] == document.place(start, start + len(span))
        assert row.location.startswith("\u00a7") and f"chars {start}\u2013{start + len(span)}]" in citation["label"]
    governing = by_name["Governing Law"]
    assert governing.risk_note == f"Firm position: {book.clauses[0].position}"

    missing = by_name["Anti-Assignment"]
    assert missing.status == NOT_FOUND and not missing.found and missing.quote == "" and missing.location == ""
    assert missing.risk_note.startswith("Missing (high risk). Firm position: No assignment without")
    line = summary_line(rows)
    found = sum(r.found for r in rows)
    assert line.startswith(f"Found {found} of 10 clauses. Missing high-risk clauses: ")
    assert "Anti-Assignment" in line and "IP Ownership Assignment" in line and "Governing Law" not in line

    # several prompts at a time: the same rows, in playbook order
    assert run_clause_review(document, book, fixed_ask(gold, []), budget=budget, concurrency=4) == rows


def test_quotes_not_in_the_contract_are_never_found(contract: tuple[Document, dict[str, str]]) -> None:
    document, gold = contract
    status, citations = read_answer('"This Agreement shall be governed by the laws of Atlantis."', document)
    assert status == UNVERIFIED and citations[0].label() == "[not found in the contract]"
    assert read_answer("", document) == (UNVERIFIED, [])
    assert read_answer("Not present.", document) == (NOT_FOUND, [])
    # an explanation around the quote still finds it (the chat UI's reading of quotes)
    span = gold["Governing Law"]
    status, citations = read_answer(f"The clause reads: \u201c{span}\u201d (see above).", document)
    assert status == FOUND and document.text[citations[0].start:citations[0].end] == span

    book = clause_review.Playbook([clause_review.PlaybookClause("Governing Law", "New York law", "high")])
    (row,) = run_clause_review(document, book, lambda messages: '"Governed by the laws of Atlantis, forever."')
    assert row.status == UNVERIFIED and not row.found and row.location == "[not found in the contract]"
    assert row.risk_note == "Check by hand: the answer does not quote the contract. Firm position: New York law"
    assert "To check by hand (the answer does not quote the contract): Governing Law." in summary_line([row])


def test_a_span_holding_a_defined_term_is_located_whole() -> None:
    text = ('1. Term. The term of this Agreement shall commence on the date hereof (the "Effective Date") and shall '
            'continue for a minimum period of 12 months (the "Minimum Period").')
    document = parse_document("term.txt", text.encode())
    span = text[9:]
    assert span not in quotes_in(prompts.extract_answer([span]))  # the chat UI's quote reader cuts it at the inner quotes
    status, (citation,) = read_answer(prompts.extract_answer([span]), document)
    assert status == FOUND and (citation.start, citation.end) == (9, len(text))


# --------------------------------------------------------------------------- the memos


def test_markdown_and_word_memos_hold_the_table_and_citations(contract: tuple[Document, dict[str, str]],
                                                               tmp_path: Path) -> None:
    import docx

    document, gold = contract
    book = load_playbook(PLAYBOOK)
    rows = run_clause_review(document, book, fixed_ask(gold, []))
    governing = rows[0]
    # contract text that must stay text: a pipe, HTML and a control character
    rows[5].status, rows[5].quote, rows[5].location = UNVERIFIED, "a | b <b>bold</b> \x07 end of the claimed text", \
        "[not found in the contract]"
    rows[5].citations = [{"quote": rows[5].quote, "found": False, "label": "[not found in the contract]",
                          "start": None, "end": None, "chunks": [], "page": None}]

    markdown = memo_markdown(rows, document.name, "tiny-sft", date="2026-11-27")
    assert markdown.startswith("# Clause review: inmode-manufacturing.txt\n")
    assert "- Date: 2026-11-27" in markdown and "- Model: tiny-sft" in markdown
    assert f"**Summary.** {summary_line(rows)}" in markdown
    assert "| # | Clause | Found | Quote | Location | Risk note |" in markdown
    table = [line for line in markdown.splitlines() if re.match(r"\| \d+ \|", line)]
    assert len(table) == 10 and table[0].startswith("| 1 | Governing Law | yes | \u201cThe construction")
    assert governing.location in table[0] and "[1]" in table[0]
    assert any(line.startswith("| 8 | Anti-Assignment | no |  |  | Missing (high risk).") for line in table)
    assert "a \\| b &lt;b&gt;bold&lt;/b&gt;" in table[5] and "| 6 | Exclusivity | check |" in table[5]
    citations = markdown.split("## Citations\n", 1)[1]
    assert f"1. Governing Law, {governing.location}: \u201c{governing.quote}\u201d" in citations
    assert "Warning: not found in the contract: \u201ca \\| b &lt;b&gt;" in citations

    path = write_memo_docx(rows, tmp_path / "review.docx", document.name, "tiny-sft", date="2026-11-27")
    memo = docx.Document(str(path))
    text = "\n".join(p.text for p in memo.paragraphs)
    assert "Clause review: inmode-manufacturing.txt" in text and "Model: tiny-sft" in text
    assert "Date: 2026-11-27" in text and f"Summary. {summary_line(rows)}" in text
    (table,) = memo.tables
    cells = [[cell.text for cell in row.cells] for row in table.rows]
    assert cells[0] == ["#", "Clause", "Found", "Quote", "Location", "Risk note"] and len(cells) == 11
    assert cells[1][:3] == ["1", "Governing Law", "yes"] and cells[1][4] == governing.location
    assert cells[1][3].startswith("\u201cThe construction") and cells[1][3].endswith("[1]")
    assert cells[8][:3] == ["8", "Anti-Assignment", "no"] and cells[8][5].startswith("Missing (high risk).")
    assert "\x07" not in cells[6][3] and "<b>bold</b>" in cells[6][3]
    assert f"[1] Governing Law, {governing.location}: \u201c{governing.quote}\u201d" in text


# --------------------------------------------------------------------------- the command, end to end


@pytest.mark.slow
def test_the_command_reviews_a_contract_on_the_served_model(served, tmp_path: Path,
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    contract = tmp_path / "msa.txt"
    contract.write_text("MASTER SERVICES AGREEMENT\n1. Fees. Customer shall pay the fees within thirty (30) days.\n"
                        "2. Governing Law. This Agreement shall be governed by the laws of the State of New York.\n"
                        "3. Assignment. Neither party may assign this Agreement without prior written consent.\n",
                        encoding="utf-8")
    book = tmp_path / "book.yaml"
    book.write_text("- clause: Governing Law\n  position: New York law.\n  risk_if_missing: high\n- Anti-Assignment\n",
                    encoding="utf-8")
    out = tmp_path / "memo"
    monkeypatch.setenv("LEXALIGN_API_KEY", served.api_key)
    # the session's model: a 512-token context, about 2 characters per token (see test_chat.py)
    code = main(["review", "--contract", str(contract), "--playbook", str(book), "--endpoint", served.base_url,
                 "--model", "tiny-base", "--out", str(out), "--config", str(REPO / "configs" / "chat.yaml"),
                 "chars_per_token=1.8", "chunk_chars=200", "chunk_overlap=40", "max_tokens=64"])
    assert code == 0
    assert sorted(p.name for p in out.iterdir()) == ["review.docx", "review.json", "review.md"]
    review = json.loads((out / "review.json").read_text())
    assert review["model"] == "tiny-base" and review["endpoint"] == served.base_url
    assert [r["clause"] for r in review["rows"]] == ["Governing Law", "Anti-Assignment"]
    assert all(r["answer"] is not None and r["excerpts"] for r in review["rows"])
    assert review["contract"]["name"] == "msa.txt" and review["summary"].startswith("Found ")
    assert "| 1 | Governing Law |" in (out / "review.md").read_text()
