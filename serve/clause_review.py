"""Clause-by-clause review: look for every clause of a firm's playbook in one contract, and write the result as
a table, a Markdown memo and a Word memo.

    lexalign review --contract FILE [--playbook configs/playbooks/standard.yaml] (--endpoint URL [--model NAME] | --run RUN_DIR)
                    --out DIR [--config configs/chat.yaml] [key=value ...]

The playbook is a YAML list of the clauses the firm checks. Each names one of the 41 CUAD categories the chat app
knows (``review.CUAD_CATEGORIES``), optionally with the firm's standard position and how serious it is when the
contract lacks the clause::

    - clause: Governing Law
      position: New York law, courts of New York County.
      risk_if_missing: medium          # low | medium | high
    - Audit Rights                     # a bare name: looked for, no position

Unknown keys, names that are not CUAD categories (with the closest names as suggestions), bad risk levels and
clauses listed twice are all reported at once, each with its file:line, before the contract is read or a model is
asked. Without a playbook every CUAD category is looked for, with no positions.

The prompts are the chat app's. Each clause is its "Find a clause" task (``review.ReviewRequest("clause", name)``)
built by ``review.build_prompt`` with no earlier turns: the same system prompt and training wording, and the chunks
BM25 picks for that category within the same token budget (``budget_for`` is the chat app's budget). An answer here
is the answer a lawyer gets in the chat UI for the same contract and model. Every prompt is built before the first
model call, so a context too small for the contract text fails before anything is spent.

The model is injected as ``ask(messages) -> str`` (the CLI passes the chat app's ``Endpoint``: the official OpenAI
client, greedy by default), so the UI and the command share one way of asking.

The answers are read in the training form (``data.prompts.extract_answer``): "Not present.", or the clause's spans
in double quotes, one per line, parsed by the evaluation's own helpers (``is_not_present``, ``answer_spans``). Each
span is located in the contract, whitespace-insensitively, and cited as the chat UI cites quotes: by the contract's
own section and page ("§14 Governing Law, p. 3") in the table and memos, with chunks and character range kept in
review.json. A row is
  * found: at least one quoted span is in the contract;
  * not found: the model answered "Not present.";
  * unverified: the model quoted text that is not in the contract, or gave no clear answer. A quote that is not
    in the contract is the first thing a reviewer must see, so it is never counted as found.
Its risk note joins the playbook's position with ``risk_if_missing`` when the clause was not found.

The outputs: ``review.json`` (every row with the chunks its prompt carried and the raw answer), ``review.md`` and
``review.docx``: title, date, contract, model, a summary line (found x of n; missing high-risk clauses), the table
(clause, found, quote, location, risk note) and the citations (the location of each quote).
"""

from __future__ import annotations

import dataclasses
import difflib
import html
import json
import logging
import os
import re
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import yaml

from lexalign.config import ConfigError, Problem, load_config
from lexalign.errors import LexalignError
from lexalign.serve.chat import ChatConfig, Endpoint, EndpointError
from lexalign.serve.documents import (
    Citation,
    Document,
    flatten_whitespace,
    load_document,
    locate,
    locate_quotes,
    where_of,
)
from lexalign.serve.launch import ServeConfig
from lexalign.serve.review import CUAD_CATEGORIES, Budget, BuiltPrompt, ReviewRequest, build_prompt

logger = logging.getLogger(__name__)

RISK_LEVELS = ("low", "medium", "high")
PLAYBOOK_KEYS = ("clause", "position", "risk_if_missing")
FOUND, NOT_FOUND, UNVERIFIED = "found", "not found", "unverified"
# A word, not a warning sign: the sign needs a font that many systems lack.
NOT_IN_CONTRACT = "Warning: not found in the contract"
TABLE_QUOTE_CHARS = 300  # the table shows the start of a long quote; the citations hold all of it

Ask = Callable[[list[dict[str, str]]], str]


class ClauseReviewError(LexalignError):
    """The review cannot run (no usable model, context too small, output folder not writable)."""


class PlaybookError(ConfigError):
    """Every problem of a playbook file, on one line (the CLI prints it as it is)."""

    def __init__(self, problems: list[Problem], source: str = "") -> None:
        self.problems, self.source = problems, source
        count = f" ({len(problems)} problems)" if len(problems) > 1 else ""
        # each problem names its file:line already
        LexalignError.__init__(self, f"invalid playbook{count}: " + "; ".join(map(str, problems)))


# =========================================================================== the playbook


@dataclass(frozen=True)
class PlaybookClause:
    clause: str                       # a CUAD category name, exactly as review.CUAD_CATEGORIES spells it
    position: str | None = None       # the firm's standard position
    risk_if_missing: str | None = None  # low | medium | high
    line: int | None = None           # where the playbook file names it


@dataclass(frozen=True)
class Playbook:
    clauses: list[PlaybookClause]
    source: str = "all CUAD categories"


def default_playbook() -> Playbook:
    """Every CUAD category, in CUAD's order, with no positions."""
    return Playbook([PlaybookClause(name) for name in CUAD_CATEGORIES])


def suggest_categories(name: str, n: int = 3) -> list[str]:
    """The CUAD names closest to ``name``: a different capitalisation first, then similar spellings."""
    same_case = [c for c in CUAD_CATEGORIES if c.lower() == name.strip().lower()]
    lowered = {c.lower(): c for c in CUAD_CATEGORIES}
    similar = [lowered[c] for c in difflib.get_close_matches(name.strip().lower(), list(lowered), n=n, cutoff=0.5)]
    return list(dict.fromkeys(same_case + similar))[:n]


def _scalar(node: yaml.Node) -> str | None:
    """A scalar's text as written (a position of ``2020`` stays text); None for YAML null."""
    if node.tag == "tag:yaml.org,2002:null":
        return None
    return str(node.value).strip()


def load_playbook(path: str | Path | None) -> Playbook:
    """The playbook in ``path`` (None: ``default_playbook()``); PlaybookError lists every problem with file:line."""
    if path is None:
        return default_playbook()
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise PlaybookError([Problem("playbook", "file not found; pass a YAML list of clauses", where=str(path))],
                            str(path)) from None
    except UnicodeDecodeError:
        raise PlaybookError([Problem("playbook", "not UTF-8 text; save the file as UTF-8", where=str(path))],
                            str(path)) from None
    except OSError as err:
        raise PlaybookError([Problem("playbook", f"cannot read the file: {err.strerror or err}", where=str(path))],
                            str(path)) from None
    # The node tree, not the loaded data: every item and key keeps its line for the error messages.
    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.MarkedYAMLError as err:
        mark = err.problem_mark
        where = f"{path}:{mark.line + 1}" if mark else str(path)
        raise PlaybookError([Problem("yaml", f"not valid YAML: {err.problem}", where=where)], str(path)) from None
    except yaml.YAMLError as err:
        raise PlaybookError([Problem("yaml", f"not valid YAML: {str(err).splitlines()[0]}", where=str(path))],
                            str(path)) from None
    if not isinstance(root, yaml.SequenceNode) or not root.value:
        line = root.start_mark.line + 1 if root is not None else 1
        raise PlaybookError([Problem("playbook", "expected a YAML list of clauses (- clause: Governing Law ...)",
                                     where=f"{path}:{line}")], str(path))
    problems: list[Problem] = []
    clauses: list[PlaybookClause] = []
    seen: dict[str, int] = {}
    for item in root.value:
        line = item.start_mark.line + 1
        where = f"{path}:{line}"
        if isinstance(item, yaml.ScalarNode):  # a bare name
            fields: dict[str, tuple[str | None, int]] = {"clause": (_scalar(item), line)}
        elif isinstance(item, yaml.MappingNode):
            fields = {}
            for key_node, value_node in item.value:
                key, key_line = str(key_node.value), key_node.start_mark.line + 1
                if key not in PLAYBOOK_KEYS:
                    problems.append(Problem(key, f"unknown key; expected one of: {', '.join(PLAYBOOK_KEYS)}",
                                            where=f"{path}:{key_line}"))
                elif not isinstance(value_node, yaml.ScalarNode):
                    problems.append(Problem(key, "expected text, not a list or mapping", where=f"{path}:{key_line}"))
                else:
                    fields[key] = (_scalar(value_node), key_line)
        else:
            problems.append(Problem("clause", "expected a clause name or a mapping with clause, position, "
                                    "risk_if_missing", where=where))
            continue
        name, name_line = fields.get("clause", (None, line))
        if not name:
            problems.append(Problem("clause", "missing: name a CUAD category, e.g. clause: Governing Law", where=where))
            continue
        if name not in CUAD_CATEGORIES:
            close = suggest_categories(name)
            hint = f"did you mean {' or '.join(repr(c) for c in close)}?" if close else \
                "see serve/review.py CUAD_CATEGORIES for the 41 names"
            problems.append(Problem("clause", f"not a CUAD category; {hint}", name, f"{path}:{name_line}"))
            continue
        if name in seen:
            problems.append(Problem("clause", f"listed twice (first on line {seen[name]})", name, f"{path}:{name_line}"))
            continue
        seen[name] = name_line
        risk, risk_line = fields.get("risk_if_missing", (None, line))
        if risk is not None and risk.lower() not in RISK_LEVELS:
            problems.append(Problem("risk_if_missing", f"expected one of: {', '.join(RISK_LEVELS)}", risk,
                                    f"{path}:{risk_line}"))
            continue
        position = fields.get("position", (None, line))[0]
        clauses.append(PlaybookClause(name, position or None, risk.lower() if risk else None, name_line))
    if problems:
        raise PlaybookError(problems, str(path))
    logger.info("playbook %s: %d clauses", path, len(clauses))
    return Playbook(clauses, str(path))


# =========================================================================== asking, clause by clause


@dataclass
class ClauseRow:
    clause: str
    found: bool                       # a quoted span is in the contract
    status: str                       # found | not found | unverified
    quote: str                        # the quoted spans, one per line ("" when there is none)
    location: str                     # where each span is, as the chat UI shows it (section and page)
    risk_note: str
    answer: str                       # the model's answer as given
    position: str | None = None
    risk_if_missing: str | None = None
    # Citation.as_dict(): quote, found, label (chunks and characters), where, start, end, chunks, page
    citations: list[dict[str, Any]] = field(default_factory=list)
    excerpts: list[str] = field(default_factory=list)  # labels of the chunks the prompt carried


def budget_for(config: ChatConfig, context_tokens: int) -> Budget:
    """The chat app's prompt budget for a model context: the answer gets at most a quarter of a small context."""
    return Budget(context_tokens=context_tokens,
                  max_tokens=min(config.max_tokens, max(16, context_tokens // 4)),
                  chars_per_token=config.chars_per_token, history_share=config.history_share)


def read_answer(answer: str, document: Document, flattened: tuple[str, list[int]] | None = None
                ) -> tuple[str, list[Citation]]:
    """(status, citations) of one clause answer: see the module docstring for found / not found / unverified."""
    from lexalign.evaluation.metrics import answer_spans, is_not_present

    if is_not_present(answer):
        return NOT_FOUND, []
    flattened = flattened or flatten_whitespace(document.text)
    # documents.locate_quotes reads quotation marks inside an answer as quote boundaries, which splits a CUAD span
    # holding a defined term ("the \"Effective Date\""): a span from answer_spans is located whole instead.
    citations = [locate(span, document, flattened) for span in answer_spans(answer)]
    if not any(c.found for c in citations):
        # not in the trained form (an explanation around a quote): the chat UI's reading of quotes
        located = [c for c in locate_quotes(answer, document) if c.found]
        citations = located or citations
    return (FOUND if any(c.found for c in citations) else UNVERIFIED), citations


def risk_note(clause: PlaybookClause, status: str) -> str:
    parts = []
    if status == NOT_FOUND:
        parts.append(f"Missing ({clause.risk_if_missing} risk)." if clause.risk_if_missing else "Missing.")
    elif status == UNVERIFIED:
        parts.append("Check by hand: the answer does not quote the contract.")
    if clause.position:
        parts.append(f"Firm position: {clause.position}")
    return " ".join(parts)


def build_row(clause: PlaybookClause, built: BuiltPrompt, answer: str, document: Document,
              flattened: tuple[str, list[int]] | None = None) -> ClauseRow:
    status, citations = read_answer(answer, document, flattened)
    shown = [c for c in citations if c.found] or citations  # the located spans; else what the model claimed
    return ClauseRow(
        clause=clause.clause, found=status == FOUND, status=status,
        quote="\n".join(c.quote for c in shown), location="; ".join(c.where() for c in shown),
        risk_note=risk_note(clause, status), answer=answer, position=clause.position,
        risk_if_missing=clause.risk_if_missing, citations=[c.as_dict() for c in citations],
        excerpts=built.source_labels())


def run_clause_review(document: Document, playbook: Playbook, ask: Ask, *, budget: Budget | None = None,
                      max_chunks: int = 8, concurrency: int = 1) -> list[ClauseRow]:
    """One row per playbook clause, in playbook order.

    ``ask(messages) -> str`` answers one prompt (thread-safe when ``concurrency`` > 1). ``budget`` defaults to the
    chat config's defaults on a 4096-token context. A failed ``ask`` stops the review: a memo with holes would read
    as "not found" where nothing was looked at.
    """
    from tqdm.auto import tqdm

    budget = budget or budget_for(ChatConfig(), 4096)
    try:
        prompts = [build_prompt(ReviewRequest("clause", c.clause), document, [], budget, max_chunks=max_chunks)
                   for c in playbook.clauses]
    except ValueError as err:
        raise ClauseReviewError(f"{document.name}: {err}") from None
    flattened = flatten_whitespace(document.text)  # once per contract, not once per clause
    logger.info("reviewing %s: %d clauses, %d prompt(s) at a time", document.name, len(prompts), max(1, concurrency))

    def answer(i: int) -> str:
        return ask(prompts[i].messages)

    answers: list[str] = [""] * len(prompts)
    with tqdm(total=len(prompts), desc="clauses", unit="clause", disable=None) as bar, \
            ThreadPoolExecutor(max_workers=max(1, concurrency)) as pool:
        futures = {pool.submit(answer, i): i for i in range(len(prompts))}
        try:
            for future in futures:  # in order; the pool works ahead
                answers[futures[future]] = future.result()
                bar.update(1)
        except BaseException:
            pool.shutdown(wait=False, cancel_futures=True)
            raise
    rows = [build_row(c, built, text, document, flattened)
            for c, built, text in zip(playbook.clauses, prompts, answers)]
    for row in rows:
        logger.debug("%s: %s %s", row.clause, row.status, row.location)
    logger.info("%s", summary_line(rows))
    return rows


# =========================================================================== the memo


def summary_line(rows: list[ClauseRow]) -> str:
    found = sum(r.found for r in rows)
    text = f"Found {found} of {len(rows)} clause{'s' * (len(rows) != 1)}."
    missing = [r.clause for r in rows if r.status == NOT_FOUND and r.risk_if_missing == "high"]
    text += f" Missing high-risk clauses: {', '.join(missing)}." if missing else " No high-risk clause is missing."
    unverified = [r.clause for r in rows if r.status == UNVERIFIED]
    if unverified:
        text += f" To check by hand (the answer does not quote the contract): {', '.join(unverified)}."
    return text


def _found_cell(row: ClauseRow) -> str:
    return {FOUND: "yes", NOT_FOUND: "no"}.get(row.status, "check")


def shorten_quote(text: str, limit: int = TABLE_QUOTE_CHARS) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[:limit].rsplit(" ", 1)[0] + " \u2026"


def citations_of(rows: list[ClauseRow]) -> list[tuple[int, ClauseRow, dict[str, Any]]]:
    """(number, row, citation) for every quote of every row, numbered in table order."""
    out = []
    for row in rows:
        for citation in row.citations:
            if citation["found"] or not row.found:  # a found row cites its located spans only
                out.append((len(out) + 1, row, citation))
    return out


def _md(text: str) -> str:
    """Text for a Markdown table cell: no line breaks or pipes, and no HTML a viewer would render."""
    return html.escape(" ".join(text.split()), quote=False).replace("|", "\\|")


def memo_markdown(rows: list[ClauseRow], contract_name: str, model_name: str, date: str | None = None) -> str:
    date = date or time.strftime("%Y-%m-%d")
    numbers: dict[int, list[int]] = {}
    citations = citations_of(rows)
    for number, row, _ in citations:
        numbers.setdefault(id(row), []).append(number)
    lines = [f"# Clause review: {_md(contract_name)}", "",
             f"- Date: {date}", f"- Contract: {_md(contract_name)}", f"- Model: {_md(model_name)}", "",
             f"**Summary.** {_md(summary_line(rows))}", "",
             "*A draft for a lawyer to check, not legal advice. Every quote is located in the contract; a quote "
             "that is not in it is marked.*", "",
             "| # | Clause | Found | Quote | Location | Risk note |", "|---|---|---|---|---|---|"]
    for i, row in enumerate(rows, start=1):
        refs = " ".join(f"[{n}]" for n in numbers.get(id(row), []))
        quote = f"\u201c{_md(shorten_quote(row.quote))}\u201d {refs}".strip() if row.quote else ""
        lines.append(f"| {i} | {_md(row.clause)} | {_found_cell(row)} | {quote} | {_md(row.location)} | "
                     f"{_md(row.risk_note)} |")
    lines += ["", "## Citations", ""]
    if not citations:
        lines.append("No clause was quoted.")
    for number, row, citation in citations:
        where = where_of(citation) if citation["found"] else NOT_IN_CONTRACT
        lines.append(f"{number}. {_md(row.clause)}, {_md(where)}: \u201c{_md(citation['quote'])}\u201d")
    return "\n".join(lines) + "\n"


_XML_UNSAFE = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\ufffe\uffff]")


def _xml(text: str) -> str:
    # python-docx refuses control characters (they are not allowed in XML); a contract may carry some.
    return _XML_UNSAFE.sub("", text)


def write_memo_docx(rows: list[ClauseRow], path: str | Path, contract_name: str, model_name: str,
                    date: str | None = None) -> Path:
    import docx

    date = date or time.strftime("%Y-%m-%d")
    memo = docx.Document()
    memo.add_heading(_xml(f"Clause review: {contract_name}"), level=0)
    for label, value in (("Date", date), ("Contract", contract_name), ("Model", model_name)):
        paragraph = memo.add_paragraph()
        paragraph.add_run(f"{label}: ").bold = True
        paragraph.add_run(_xml(value))
    summary = memo.add_paragraph()
    summary.add_run("Summary. ").bold = True
    summary.add_run(_xml(summary_line(rows)))
    memo.add_paragraph("A draft for a lawyer to check, not legal advice. Every quote is located in the contract; a "
                       "quote that is not in it is marked.").runs[0].italic = True

    citations = citations_of(rows)
    numbers: dict[int, list[int]] = {}
    for number, row, _ in citations:
        numbers.setdefault(id(row), []).append(number)
    header = ("#", "Clause", "Found", "Quote", "Location", "Risk note")
    table = memo.add_table(rows=1, cols=len(header))
    table.style = "Table Grid"
    for cell, text in zip(table.rows[0].cells, header):
        cell.text = ""
        cell.paragraphs[0].add_run(text).bold = True
    for i, row in enumerate(rows, start=1):
        refs = " ".join(f"[{n}]" for n in numbers.get(id(row), []))
        quote = f"\u201c{shorten_quote(row.quote)}\u201d {refs}".strip() if row.quote else ""
        values = (str(i), row.clause, _found_cell(row), quote, row.location, row.risk_note)
        for cell, text in zip(table.add_row().cells, values):
            cell.text = _xml(text)

    memo.add_heading("Citations", level=1)
    if not citations:
        memo.add_paragraph("No clause was quoted.")
    for number, row, citation in citations:
        where = where_of(citation) if citation["found"] else NOT_IN_CONTRACT
        paragraph = memo.add_paragraph()
        paragraph.add_run(_xml(f"[{number}] {row.clause}, {where}: ")).bold = True
        paragraph.add_run(_xml(f"\u201c{citation['quote']}\u201d"))
    path = Path(path)
    memo.save(str(path))
    return path


def review_json(rows: list[ClauseRow], document: Document, model_name: str, playbook: Playbook,
                **about: Any) -> dict[str, Any]:
    return {"created": time.strftime("%Y-%m-%dT%H:%M:%S"), "contract": document.meta(), "model": model_name,
            "playbook": playbook.source, **about, "summary": summary_line(rows),
            "found": sum(r.found for r in rows), "clauses": len(rows),
            "rows": [dataclasses.asdict(r) for r in rows]}


# =========================================================================== the command


@dataclass
class ReviewConfig(ChatConfig):
    """``lexalign review``: the chat config's generation, budget and chunking keys (the same prompts as the chat
    app), plus the private server started for ``--run``."""

    serve: ServeConfig = field(default_factory=lambda: ServeConfig(port=0, shutdown_timeout_s=10.0))


@dataclass
class ReviewOutputs:
    rows: list[ClauseRow]
    model: str
    files: dict[str, Path]

    def describe(self) -> str:
        return f"{summary_line(self.rows)} Memo: {', '.join(str(p) for p in self.files.values())}"


def ask_through(endpoint: Endpoint, model: str, max_tokens: int) -> Ask:
    def ask(messages: list[dict[str, str]]) -> str:
        try:
            return "".join(endpoint.stream(model, messages, max_tokens))
        except EndpointError as err:
            raise ClauseReviewError(str(err)) from None
    return ask


def ask_every_clause(document: Document, playbook: Playbook, config: ChatConfig, endpoint: Endpoint
                     ) -> tuple[list[ClauseRow], str]:
    """The rows of every playbook clause, asked through ``endpoint`` with the chat app's budget; (rows, model)."""
    try:
        model, context = endpoint.resolve()
    except EndpointError as err:
        raise ClauseReviewError(str(err)) from None
    budget = budget_for(config, context)
    rows = run_clause_review(document, playbook, ask_through(endpoint, model, budget.max_tokens), budget=budget,
                             max_chunks=config.max_chunks, concurrency=config.concurrency_limit)
    return rows, model


def write_memos(rows: list[ClauseRow], document: Document, model: str, playbook: Playbook, out: Path,
                about: dict[str, Any] | None = None) -> dict[str, Path]:
    """review.json, review.md and review.docx in ``out`` (``about``: where the model came from, for review.json)."""
    files = {"json": out / "review.json", "markdown": out / "review.md", "docx": out / "review.docx"}
    payload = review_json(rows, document, model, playbook, **(about or {}))
    files["json"].write_text(json.dumps(payload, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    files["markdown"].write_text(memo_markdown(rows, document.name, model), encoding="utf-8")
    write_memo_docx(rows, files["docx"], document.name, model)
    return files


def review_with_endpoint(document: Document, playbook: Playbook, config: ChatConfig, endpoint: Endpoint,
                         out: Path, about: dict[str, Any] | None = None) -> ReviewOutputs:
    """Ask ``endpoint`` about every clause and write the memos into ``out``."""
    rows, model = ask_every_clause(document, playbook, config, endpoint)
    return ReviewOutputs(rows, model, write_memos(rows, document, model, playbook, out, about))


def run_review(contract: str | Path, out: str | Path, *, playbook: str | Path | None = None,
               endpoint: str | None = None, run: str | None = None, model: str | None = None,
               config_path: str | Path | None = None, overrides: list[str] | None = None) -> ReviewOutputs:
    """``lexalign review``: check the playbook, read the contract, then ask the endpoint (or a server started for
    ``run``, with a random key) and write the memo. Every input is checked before a server starts."""
    from lexalign.serve.launch import start_server

    if bool(endpoint) == bool(run):
        raise ClauseReviewError("give the model as --endpoint URL or --run RUN_DIR (one of them)")
    overrides = list(overrides or []) + [f"{k}={v}" for k, v in (("endpoint", endpoint), ("model", model)) if v]
    config = load_config(ReviewConfig, config_path, overrides)
    book = load_playbook(playbook or config.playbook)   # --playbook, else the config's, else every CUAD category
    document = load_document(contract, config.limits(), chunk_chars=config.chunk_chars,
                             chunk_overlap=config.chunk_overlap)
    out = Path(out)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise ClauseReviewError(f"{out}: cannot create the output folder ({err.strerror or err})") from None
    if endpoint:
        key = os.environ.get(config.api_key_env, "").strip() or None
        if key is None:
            logger.warning("%s is not set: requests go to %s without an API key (a lexalign server refuses them)",
                           config.api_key_env, config.endpoint)
        return review_with_endpoint(document, book, config, Endpoint(config, key), out,
                                    {"endpoint": config.endpoint})
    serve_config = dataclasses.replace(config.serve, run=str(run))
    with start_server(serve_config, ephemeral_key=True) as server:
        local = dataclasses.replace(config, endpoint=server.base_url)
        return review_with_endpoint(document, book, local, Endpoint(local, server.api_key), out,
                                    {"run": str(run)})
