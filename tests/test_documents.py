"""Contracts for the chat UI: parsing TXT/PDF/DOCX within bounds, clear errors for bad files, chunking,
chunk selection (BM25 within a token budget), quote location, and the review prompts built from them."""

from __future__ import annotations

import io
import zipfile
from pathlib import Path

import pytest

from lexalign.serve.documents import (
    BM25,
    DocumentError,
    DocumentLimits,
    find_sections,
    load_document,
    locate_quotes,
    parse_document,
    select_chunks,
    tokenize,
)
from lexalign.serve.review import CUAD_CATEGORIES, TASKS, Budget, ReviewRequest, build_prompt, validate_request

GOVERNING = "This Agreement shall be governed by and construed in accordance with the laws of the State of New York."
CONTRACT = "\n".join([
    "MASTER SERVICES AGREEMENT",
    "This Master Services Agreement is entered into as of January 1, 2020 by and between Acme Corporation and "
    "Beta Services LLC.",
    "1. Services. Provider shall perform the services described in each Statement of Work in a professional and "
    "workmanlike manner, using qualified personnel and industry standard methods.",
    "2. Fees. Customer shall pay Provider the fees set forth in each Statement of Work within thirty (30) days after "
    "receipt of an undisputed invoice. Late payments bear interest at one percent per month.",
    "3. Term. This Agreement shall commence on the Effective Date and continue for a period of three (3) years "
    "unless terminated earlier in accordance with its terms.",
    "4. Confidentiality. Each party shall hold the Confidential Information of the other party in strict confidence "
    "and shall not disclose it to any third party without prior written consent.",
    "5. Insurance. Provider shall maintain commercial general liability insurance with limits of not less than "
    "$1,000,000 per occurrence for the benefit of Customer.",
    f"6. Governing Law. {GOVERNING}",
    "7. Notices. All notices under this Agreement shall be in writing and delivered to the addresses set forth above.",
])
# Headings of several kinds: a title line, an article whose title is on the next line, numbered clauses with and
# without titles, a cross-reference that is no heading, and a heading in capitals.
COURTS = "Each party submits to the exclusive jurisdiction of the courts of New York County."
NOTICES = "All notices shall be in writing and delivered to the addresses set forth above."
SECTIONED = "\n".join([
    "MASTER SERVICES AGREEMENT",
    "This Master Services Agreement is entered into as of January 1, 2020 by and between Acme Corporation and Beta LLC.",
    "ARTICLE I",
    "DEFINITIONS",
    '1.1 "Services" means the services described in each Statement of Work.',
    "13. Fees. Customer shall pay Provider the fees within thirty (30) days after receipt of an undisputed invoice.",
    "14. Governing Law. This Agreement shall be governed by the laws of the State of New York.",
    f"14.2 {COURTS}",
    "Section 15 of this Agreement survives any termination of it for any reason whatsoever.",
    "GENERAL",
    NOTICES,
])


# --------------------------------------------------------------------------- test files


def make_pdf(pages: list[list[str]], encrypt: str | None = None) -> bytes:
    """A minimal valid PDF: one Helvetica text line per string, one page per list (no images)."""
    objects: list[bytes] = []
    n_pages = len(pages)
    page_ids = [4 + 2 * i for i in range(n_pages)]
    objects.append(b"<< /Type /Catalog /Pages 2 0 R >>")
    objects.append(b"<< /Type /Pages /Kids [" + b" ".join(f"{i} 0 R".encode() for i in page_ids)
                   + f"] /Count {n_pages} >>".encode())
    objects.append(b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>")
    for i, lines in enumerate(pages):
        content = b"BT /F1 10 Tf 50 750 Td 14 TL\n"
        for line in lines:
            escaped = line.replace("\\", "\\\\").replace("(", "\\(").replace(")", "\\)")
            content += f"({escaped}) Tj T*\n".encode("latin-1")
        content += b"ET"
        objects.append(f"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Resources << /Font << /F1 3 0 R >> >> "
                       f"/Contents {page_ids[i] + 1} 0 R >>".encode())
        objects.append(f"<< /Length {len(content)} >>\nstream\n".encode() + content + b"\nendstream")
    out = io.BytesIO()
    out.write(b"%PDF-1.4\n")
    offsets = []
    for number, body in enumerate(objects, start=1):
        offsets.append(out.tell())
        out.write(f"{number} 0 obj\n".encode() + body + b"\nendobj\n")
    xref = out.tell()
    out.write(f"xref\n0 {len(objects) + 1}\n0000000000 65535 f \n".encode())
    for offset in offsets:
        out.write(f"{offset:010d} 00000 n \n".encode())
    out.write(f"trailer\n<< /Size {len(objects) + 1} /Root 1 0 R >>\nstartxref\n{xref}\n%%EOF\n".encode())
    data = out.getvalue()
    if encrypt:
        from pypdf import PdfReader, PdfWriter

        writer = PdfWriter(clone_from=PdfReader(io.BytesIO(data)))
        writer.encrypt(encrypt)
        buffer = io.BytesIO()
        writer.write(buffer)
        data = buffer.getvalue()
    return data


def make_docx(paragraphs: list[str], table: list[list[str]] | None = None) -> bytes:
    import docx

    document = docx.Document()
    for text in paragraphs:
        document.add_paragraph(text)
    if table:
        grid = document.add_table(rows=len(table), cols=len(table[0]))
        for r, row in enumerate(table):
            for c, value in enumerate(row):
                grid.cell(r, c).text = value
    buffer = io.BytesIO()
    document.save(buffer)
    return buffer.getvalue()


# --------------------------------------------------------------------------- parsing


def test_txt_is_normalized_like_the_training_data_and_chunked_with_its_windows() -> None:
    from lexalign.data.cuad import make_windows, normalize_contract

    raw = CONTRACT.replace(". ", ".   ").replace("\n", "\n\n  \n")
    doc = parse_document("msa.txt", raw.encode(), chunk_chars=300, chunk_overlap=60)
    assert doc.kind == "txt" and doc.text == normalize_contract(raw) and "   " not in doc.text
    assert [(c.start, c.end) for c in doc.chunks] == make_windows(doc.text, 300, 60)
    assert all(doc.text[c.start:c.end] == c.text for c in doc.chunks)
    assert [c.index for c in doc.chunks] == list(range(1, len(doc.chunks) + 1))
    assert doc.chunks[0].label() == f"[chunk 1, chars 0\u2013{doc.chunks[0].end}]"
    assert "msa.txt: TXT" in doc.summary() and doc.meta()["chunks"] == len(doc.chunks)


def test_txt_encodings_and_binary_files() -> None:
    assert "New York" in parse_document("a.txt", GOVERNING.encode("utf-16")).text
    assert parse_document("a.txt", b"\xef\xbb\xbf" + GOVERNING.encode()).text == GOVERNING  # UTF-8 BOM
    with pytest.raises(DocumentError, match=r"a\.txt: not UTF-8 text \(byte 0xe9 on line 2\)"):
        parse_document("a.txt", b"line one\ncaf\xe9 au lait\n")
    with pytest.raises(DocumentError, match="binary file"):
        parse_document("a.txt", b"\x00\x01\x02binary")
    with pytest.raises(DocumentError, match="empty"):
        parse_document("a.txt", b"   \n ")


def test_type_and_size_bounds() -> None:
    with pytest.raises(DocumentError, match=r"unsupported file type \.doc \(save a \.doc file as \.docx\)"):
        parse_document("old.doc", b"data")
    with pytest.raises(DocumentError, match="unsupported file type .exe"):
        parse_document("x.exe", b"MZ")
    with pytest.raises(DocumentError, match="the limit is"):
        parse_document("big.txt", b"a " * 600, DocumentLimits(max_bytes=1000))
    with pytest.raises(DocumentError, match="characters; the limit is 1,000"):
        parse_document("long.txt", ("word " * 400).encode(), DocumentLimits(max_chars=1000))


def test_load_document_checks_the_size_before_reading(tmp_path: Path) -> None:
    path = tmp_path / "upload-123.txt"
    path.write_bytes(b"x" * 5000)
    with pytest.raises(DocumentError, match="contract.txt: 0.0 MB; the limit"):
        load_document(path, DocumentLimits(max_bytes=100), name="contract.txt")
    with pytest.raises(DocumentError, match="cannot read the upload"):
        load_document(tmp_path / "missing.txt")


def test_pdf_text_pages_and_page_labels(tmp_path: Path) -> None:
    pages = [[f"Page one line {i}: Provider shall perform the services." for i in range(12)],
             [f"Page two line {i}: Customer shall pay the fees." for i in range(8)]
             + ["6. Governing Law. This Agreement shall be governed by the laws of the State of New York."]]
    path = tmp_path / "msa.pdf"
    path.write_bytes(make_pdf(pages))
    doc = load_document(path, chunk_chars=300, chunk_overlap=50)
    assert doc.kind == "pdf" and doc.pages == 2 and len(doc.page_starts) == 2
    assert "governed by the laws of the State of New York" in doc.text
    assert doc.page_of(doc.text.index("Governing Law")) == 2 and doc.page_of(0) == 1
    assert doc.chunks[0].page == 1 and doc.chunks[0].label().startswith("[chunk 1, p. 1, chars 0")
    last = doc.chunks[-1]
    assert last.page == 2 and last.label().startswith(f"[chunk {last.index}, p. 2, chars {last.start}")
    (citation,) = locate_quotes('"This Agreement shall be governed by the laws of the State of New York."', doc)
    assert citation.found and citation.page == 2 and ", p. 2, chars " in citation.label()
    assert "1 page" not in doc.summary() and "2 pages" in doc.summary()


def test_bad_pdfs_are_clear_errors() -> None:
    good = make_pdf([["Some contract text on the only page of this document."]])
    with pytest.raises(DocumentError, match=r"x\.pdf: cannot read this PDF .*damaged"):
        parse_document("x.pdf", good[:60])
    with pytest.raises(DocumentError, match="not a PDF file"):
        parse_document("x.pdf", b"<html>not a pdf</html>")
    with pytest.raises(DocumentError, match="3 pages; the limit is 2"):
        parse_document("x.pdf", make_pdf([["a b c d e f"]] * 3), DocumentLimits(max_pages=2))
    with pytest.raises(DocumentError, match="no text layer"):
        parse_document("scan.pdf", make_pdf([[]]))
    with pytest.raises(DocumentError, match="password-protected|encrypted"):
        parse_document("locked.pdf", make_pdf([["Secret terms of the deal."]], encrypt="s3cret"))


def test_docx_paragraphs_and_tables() -> None:
    data = make_docx(["MASTER SERVICES AGREEMENT", GOVERNING], table=[["Fee", "Due"], ["$1,000", "30 days"]])
    doc = parse_document("msa.docx", data)
    assert doc.kind == "docx" and doc.text.splitlines() == ["MASTER SERVICES AGREEMENT", GOVERNING, "Fee | Due",
                                                             "$1,000 | 30 days"]


def test_bad_docx_files_are_clear_errors() -> None:
    with pytest.raises(DocumentError, match="not a DOCX file"):
        parse_document("x.docx", b"plain text pretending")
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("hello.txt", "not word")
    with pytest.raises(DocumentError, match="not a Word document"):
        parse_document("x.docx", buffer.getvalue())
    with pytest.raises(DocumentError, match="archive is damaged"):
        parse_document("x.docx", make_docx([GOVERNING])[:200])
    # a small file that unpacks to a lot (ZIP bomb) is refused before python-docx opens it
    with pytest.raises(DocumentError, match="unpacks to"):
        parse_document("x.docx", make_docx(["word " * 20000]), DocumentLimits(max_unzipped_bytes=20_000))
    broken = io.BytesIO()
    with zipfile.ZipFile(broken, "w") as archive:
        archive.writestr("word/document.xml", "<not-xml")
        archive.writestr("[Content_Types].xml", "<Types/>")
    with pytest.raises(DocumentError, match="cannot read this DOCX"):
        parse_document("x.docx", broken.getvalue())


# --------------------------------------------------------------------------- chunk selection


def test_tokenize_and_bm25() -> None:
    assert tokenize("The Parties' Governing LAWS of the contract") == ["governing", "law"]
    scores = BM25(["the laws of New York govern", "payment within thirty days", "law law law"]).scores("governing law")
    assert scores[1] == 0 and scores[0] > 0 and scores[2] > scores[0]


def test_selection_finds_the_clause_and_respects_the_budget() -> None:
    doc = parse_document("msa.txt", CONTRACT.encode(), chunk_chars=200, chunk_overlap=40)
    query = ReviewRequest("clause", "Governing Law").query()
    selection = select_chunks(doc.chunks, query, budget_tokens=200, chars_per_token=2.0, max_chunks=8)
    assert selection.matched and not selection.truncated
    assert any(GOVERNING in c.text for c in selection.chunks)
    assert sum(len(c.text) + len(c.label()) + 2 for c in selection.chunks) <= 400
    assert [c.index for c in selection.chunks] == sorted(c.index for c in selection.chunks)
    best = max(selection.scores, key=lambda i: (selection.scores[i], -i))
    assert GOVERNING[:40] in doc.chunks[best - 1].text
    # deterministic
    assert select_chunks(doc.chunks, query, 200, 2.0) == selection
    # a budget for one chunk gives the best one; max_chunks caps the count
    assert [c.index for c in select_chunks(doc.chunks, query, 120, 2.0).chunks] == [best]
    assert len(select_chunks(doc.chunks, "shall", 10_000, 2.0, max_chunks=2).chunks) == 2


def test_selection_without_a_match_uses_the_start_and_cuts_an_oversized_chunk() -> None:
    doc = parse_document("msa.txt", CONTRACT.encode(), chunk_chars=200, chunk_overlap=40)
    fallback = select_chunks(doc.chunks, "zebra xylophone", budget_tokens=230, chars_per_token=2.0)
    assert not fallback.matched and fallback.chunks[0].index == 1
    assert [c.index for c in fallback.chunks] == list(range(1, len(fallback.chunks) + 1))
    cut = select_chunks(doc.chunks, "governing law", budget_tokens=40, chars_per_token=2.0)
    assert cut.truncated and len(cut.chunks) == 1 and len(cut.chunks[0].text) <= 80
    assert doc.text[cut.chunks[0].start:cut.chunks[0].end] == cut.chunks[0].text


def test_quotes_are_located_or_flagged() -> None:
    doc = parse_document("msa.txt", CONTRACT.encode(), chunk_chars=200, chunk_overlap=40)
    answer = (f'The clause: "{GOVERNING}" [chunk 9]\n'
              '"Either party may terminate this Agreement at any time for any reason."')
    found, invented = locate_quotes(answer, doc)
    assert found.found and doc.text[found.start:found.end] == GOVERNING
    assert found.chunks and all(doc.chunks[i - 1].start < found.end for i in found.chunks)
    assert found.label().startswith("[chunk ") and f"chars {found.start}\u2013{found.end}" in found.label()
    assert not invented.found and invented.label() == "[not found in the contract]"
    # unquoted answers: lines are checked; whitespace differences do not matter
    (line,) = locate_quotes(GOVERNING.replace(" shall ", "   shall\t"), doc)
    assert line.found


# --------------------------------------------------------------------------- sections


def test_citations_are_named_by_the_contracts_own_sections() -> None:
    doc = parse_document("msa.txt", SECTIONED.encode(), chunk_chars=200, chunk_overlap=40)
    assert [label for _, label in doc.sections] == [
        "MASTER SERVICES AGREEMENT", "Article I DEFINITIONS", "\u00a71.1", "\u00a713 Fees", "\u00a714 Governing Law",
        "\u00a714.2 Governing Law", "GENERAL"]  # "14.2" takes its parent's title; "Section 15 of ..." is no heading
    starts = [doc.text[offset:offset + 8] for offset, _ in doc.sections]
    assert starts == ["MASTER S", "ARTICLE ", "1.1 \"Ser", "13. Fees", "14. Gove", "14.2 Eac", "GENERAL\n"]
    answer = f'"This Agreement shall be governed by the laws of the State of New York."\n"{COURTS}"\n"{NOTICES}"'
    governing, courts, notices = locate_quotes(answer, doc)
    assert governing.where() == "\u00a714 Governing Law" and courts.where() == "\u00a714.2 Governing Law"
    assert notices.where() == "GENERAL"
    # the exact location stays for tools: chunks and characters in label() and the JSON form
    start = doc.text.index("This Agreement shall be governed")
    assert governing.label().startswith("[chunk ") and f"chars {start}\u2013{governing.end}]" in governing.label()
    record = governing.as_dict()
    assert record["where"] == "\u00a714 Governing Law" and record["label"] == governing.label()
    assert (record["start"], record["end"], record["found"]) == (start, governing.end, True)
    assert locate_quotes('"Either party may terminate this Agreement at any time."', doc)[0].where() == \
        "[not found in the contract]"
    # chunks name the sections they span; the prompt keeps the chunk labels the model cites by
    assert doc.chunks[0].where().startswith("MASTER SERVICES AGREEMENT \u2013 ")
    assert all(c.where() == doc.place(c.start, c.end) for c in doc.chunks)
    assert all(c.label().startswith(f"[chunk {c.index}, chars ") for c in doc.chunks)


def test_a_pdf_citation_names_its_section_and_page() -> None:
    pages = [["SUPPLY AGREEMENT", "1. Supply. Supplier shall deliver the products listed in Schedule A each month."],
             ["2. Governing Law. This Agreement shall be governed by the laws of the State of Delaware."]]
    doc = parse_document("supply.pdf", make_pdf(pages), chunk_chars=300, chunk_overlap=50)
    (citation,) = locate_quotes('"This Agreement shall be governed by the laws of the State of Delaware."', doc)
    assert citation.found and citation.page == 2 and citation.where() == "\u00a72 Governing Law, p. 2"
    assert ", p. 2, chars " in citation.label()
    (supply,) = locate_quotes('"Supplier shall deliver the products listed in Schedule A"', doc)
    assert supply.where() == "\u00a71 Supply, p. 1"


def test_without_headings_citations_fall_back_to_chunks() -> None:
    doc = parse_document("plain.txt", f"the parties agree as follows. {GOVERNING} payment is due monthly.".encode())
    assert doc.sections == []
    (citation,) = locate_quotes(f'"{GOVERNING}"', doc)
    assert citation.where() == citation.label() and citation.where().startswith("[chunk 1, chars ")
    assert doc.chunks[0].where() == doc.chunks[0].label()


def test_heading_rules_keep_headers_and_cross_references_out() -> None:
    text = "\n".join([
        "CONFIDENTIAL",
        "1. Term. The term is one year.",
        "CONFIDENTIAL",
        "Section 9 of this Agreement survives. Payment is due within 30 days. Acme Inc. 12.5 percent applies.",
        "as follows: 1. the first item; 2. the second item.",
        "CONFIDENTIAL",
        "The Supplier disclaims all liability whatsoever. 22.4 Governing Law. Delaware law governs this Agreement.",
        "23. The parties agree to the terms above.",
    ])
    # a page header repeated three times, a cross-reference, an amount, list items (not the next clause number)
    assert [label for _, label in find_sections(text)] == ["\u00a71 Term", "\u00a722.4 Governing Law", "\u00a723"]


# --------------------------------------------------------------------------- review prompts


def test_categories_tasks_and_request_validation() -> None:
    assert len(CUAD_CATEGORIES) == 41 and "Governing Law" in CUAD_CATEGORIES
    assert set(TASKS) == {"clause", "unfair", "obligations", "question"}
    assert validate_request(ReviewRequest("clause", "Nope")) == "Pick a clause category first."
    assert validate_request(ReviewRequest("question", question="  ")) == "Type a question first."
    assert validate_request(ReviewRequest("dance")).startswith("Unknown review task")
    assert validate_request(ReviewRequest("unfair")) is None


def test_shipped_categories_match_the_table() -> None:
    """Every category the SFT data asks about is in the UI's table, with the same description."""
    import json
    import re

    from lexalign.data.paths import shipped_dir

    pattern = re.compile(r"Find the (.*?) clause in this contract excerpt \((.*)\)\. Quote it exactly", re.S)
    seen = {}
    for line in (shipped_dir() / "sft_valid.jsonl").read_text().splitlines():
        record = json.loads(line)
        match = pattern.match(record["messages"][1]["content"])
        if match:
            seen[match.group(1)] = match.group(2)
    assert seen and all(CUAD_CATEGORIES[name].rstrip(".") == description for name, description in seen.items())


def test_clause_prompt_uses_the_training_wording_and_fits_the_context() -> None:
    from lexalign.data import prompts

    doc = parse_document("msa.txt", CONTRACT.encode(), chunk_chars=200, chunk_overlap=40)
    budget = Budget(context_tokens=512, max_tokens=96, chars_per_token=2.0)
    built = build_prompt(ReviewRequest("clause", "Governing Law"), doc, [], budget)
    system, user = built.messages
    assert system == {"role": "system", "content": prompts.SYSTEM_PROMPT}
    expected_head = prompts.extract_prompt("Governing Law", CUAD_CATEGORIES["Governing Law"].rstrip("."), "X")[:-1]
    assert user["content"].startswith(expected_head)
    excerpt = prompts.excerpt_of(user["content"])
    assert any(GOVERNING in c.text for c in built.sources)
    assert all(f"{c.label()}\n{c.text}" in excerpt for c in built.sources)
    assert built.estimated_tokens <= budget.context_tokens - budget.max_tokens


def test_history_is_kept_only_while_it_fits() -> None:
    doc = parse_document("msa.txt", CONTRACT.encode(), chunk_chars=200, chunk_overlap=40)
    budget = Budget(context_tokens=1024, max_tokens=128, chars_per_token=2.0, history_share=0.3)
    history = [(f"question {i}?", "answer " * 20) for i in range(10)]
    built = build_prompt(ReviewRequest("question", question="What are the fees?"), doc, history, budget)
    assert 0 < built.history_turns < 10
    roles = [m["role"] for m in built.messages]
    assert roles[0] == "system" and roles[-1] == "user" and roles.count("assistant") == built.history_turns
    assert built.messages[-2]["content"] == history[-1][1]  # the newest earlier turns are the ones kept
    assert "Quote the contract text you rely on" in built.messages[-1]["content"]
    # without a document a question goes out as typed
    plain = build_prompt(ReviewRequest("question", question="What is a MFN clause?"), None, [], budget)
    assert plain.messages[-1]["content"] == "What is a MFN clause?" and plain.selection is None


def test_a_context_too_small_for_contract_text_is_refused() -> None:
    doc = parse_document("msa.txt", CONTRACT.encode(), chunk_chars=200, chunk_overlap=40)
    with pytest.raises(ValueError, match="leaves only"):
        build_prompt(ReviewRequest("clause", "Governing Law"), doc, [], Budget(360, 96, 2.0))
    with pytest.raises(ValueError, match="too long"):
        build_prompt(ReviewRequest("question", question="why? " * 400), doc, [], Budget(512, 96, 2.0))
