"""Contracts uploaded to the chat UI: parsing (TXT, PDF, DOCX) within bounds, chunking, and choosing the
chunks a question needs.

Parsing. The type is decided by the file's extension *and* checked against its first bytes (a PDF starts
with ``%PDF-``, a DOCX is a ZIP holding ``word/document.xml``, a TXT is UTF-8 or UTF-16 text without NUL
bytes). Size, page count (PDF), uncompressed size (DOCX: a ZIP bomb is refused before it is opened) and
extracted characters are bounded by ``DocumentLimits``. Anything that cannot be read raises
``DocumentError`` with the file name and what to do; nothing else escapes.

Chunking. The text is whitespace-normalized exactly as the training data was (``normalize_contract``:
a whitespace run becomes one newline if it holds a line break, else one space) and cut into overlapping
windows on word boundaries with the same function the data builder uses (``make_windows``; the shipped
data used 1000-character windows overlapping by 250). A chunk knows its character span in the normalized
text and, for PDFs, its page, so the prompt can label it ``[chunk 3, p. 2, chars 1200-2100]``.

Sections. A lawyer finds a passage by the contract's own structure, not by chunk numbers: the headings are found
once at parse time (``find_sections``, a line-and-sentence regex heuristic explained there) and a chunk or a quote
is shown to the lawyer as ``§14 Governing Law, p. 3`` (``where()``; the page only for PDFs). The character range
stays in ``label()`` and in the start/end fields for tools (exports, the contract view's anchors), and the prompt
keeps the ``[chunk N]`` labels the model is asked to cite by. Text before the first heading, or a contract without
any, falls back to the chunk label.

Choosing chunks. Chunks are ranked with Okapi BM25 (k1 = 1.5, b = 0.75) against a query made of the review
task's words: a CUAD category's name and description, the unfair-clause categories, obligation/date
words, or the lawyer's question. Tokens are lower-cased letter/digit runs without common English stop
words, with a plural "s" stripped. Ties go to the earlier chunk. The best chunks are taken while they fit
the prompt's token budget, then put back in document order; when no chunk matches at all the first chunks
are used (the start of a contract names the parties, dates and definitions). Simple, deterministic and
explainable: the UI shows the lawyer exactly which excerpts the model saw.
"""

from __future__ import annotations

import bisect
import dataclasses
import hashlib
import io
import logging
import math
import re
import zipfile
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lexalign.errors import LexalignError

logger = logging.getLogger(__name__)

SUPPORTED = {".txt": "txt", ".text": "txt", ".md": "txt", ".pdf": "pdf", ".docx": "docx"}


class DocumentError(LexalignError):
    """An uploaded contract cannot be used; the message names the file and says what to do."""


@dataclass(frozen=True)
class DocumentLimits:
    max_bytes: int = 10 * 1024 * 1024
    max_pages: int = 300
    max_chars: int = 1_000_000
    max_unzipped_bytes: int = 100 * 1024 * 1024  # DOCX: total uncompressed size of the ZIP's members


@dataclass(frozen=True)
class Chunk:
    index: int          # 1-based, in document order
    start: int          # character span in Document.text
    end: int
    text: str
    page: int | None = None  # PDF page (1-based) where the chunk starts
    place: str | None = None  # its sections (and page), e.g. "\u00a75 Insurance \u2013 \u00a76 Governing Law, p. 2"

    def label(self) -> str:
        """The exact location, as the prompt labels the excerpt (the model cites it; do not change it)."""
        page = f", p. {self.page}" if self.page else ""
        return f"[chunk {self.index}{page}, chars {self.start}\u2013{self.end}]"

    def where(self) -> str:
        """The location for a lawyer: its sections, else the chunk label."""
        return self.place or self.label()


@dataclass
class Document:
    name: str
    kind: str                     # txt | pdf | docx
    text: str                     # normalized text the chunks index into
    sha256: str                   # of the uploaded bytes
    size_bytes: int
    pages: int | None = None
    page_starts: list[int] = field(default_factory=list)  # PDF: offset of each page in text
    chunks: list[Chunk] = field(default_factory=list)
    sections: list[tuple[int, str]] = field(default_factory=list)  # (offset, label) of each heading, in order

    def summary(self) -> str:
        pages = f"{self.pages} page{'s' * (self.pages != 1)}, " if self.pages else ""
        return (f"{self.name}: {self.kind.upper()}, {pages}{len(self.text):,} characters, "
                f"{len(self.chunks)} chunk{'s' * (len(self.chunks) != 1)}")

    def page_of(self, offset: int) -> int | None:
        if not self.page_starts:
            return None
        page = 1
        for i, start in enumerate(self.page_starts, start=1):
            if start <= offset:
                page = i
        return page

    def section_at(self, offset: int) -> str | None:
        """The label of the last heading at or before ``offset`` (None before the first one)."""
        i = bisect.bisect_right(self.sections, offset, key=lambda section: section[0])
        return self.sections[i - 1][1] if i else None

    def place(self, start: int, end: int) -> str | None:
        """``start:end`` named by the contract's structure: "\u00a714 Governing Law, p. 3", a range of sections when
        the span crosses a heading, None when no heading comes before ``start`` (callers fall back to chunks)."""
        first = self.section_at(start)
        if first is None:
            return None
        last = self.section_at(max(start, end - 1))
        label = first if last == first else f"{first} \u2013 {last}"
        page = self.page_of(start)
        return f"{label}, p. {page}" if page else label

    def meta(self) -> dict[str, object]:
        return {"name": self.name, "kind": self.kind, "sha256": self.sha256, "chars": len(self.text),
                "pages": self.pages, "chunks": len(self.chunks)}


# =========================================================================== parsing


def _kind(name: str) -> str:
    suffix = Path(name).suffix.lower()
    if suffix not in SUPPORTED:
        hint = " (save a .doc file as .docx)" if suffix == ".doc" else ""
        raise DocumentError(f"{name}: unsupported file type {suffix or '(no extension)'}{hint}; upload a contract as "
                            "TXT, PDF or DOCX")
    return SUPPORTED[suffix]


def _decode_text(name: str, data: bytes) -> str:
    if data.startswith((b"\xff\xfe", b"\xfe\xff")):
        try:
            return data.decode("utf-16")
        except UnicodeDecodeError:
            raise DocumentError(f"{name}: starts like UTF-16 text but is not valid UTF-16; save it as UTF-8") from None
    if b"\x00" in data[:8192]:
        raise DocumentError(f"{name}: this is a binary file, not text; upload a TXT, PDF or DOCX contract")
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as err:
        line = data.count(b"\n", 0, err.start) + 1
        raise DocumentError(f"{name}: not UTF-8 text (byte 0x{data[err.start]:02x} on line {line}); save the file as "
                            "UTF-8, or upload the PDF/DOCX") from None


def _pdf_pages(name: str, data: bytes, limits: DocumentLimits) -> list[str]:
    if not data.lstrip()[:5] == b"%PDF-":
        raise DocumentError(f"{name}: not a PDF file (it does not start with %PDF-); upload the real PDF, or a TXT/DOCX")
    from pypdf import PdfReader
    from pypdf.errors import PyPdfError

    # pypdf logs recoverable problems as warnings; they are not the lawyer's business.
    logging.getLogger("pypdf").setLevel(logging.ERROR)
    try:
        reader = PdfReader(io.BytesIO(data), strict=False)
        if reader.is_encrypted:
            try:
                if not reader.decrypt(""):
                    raise DocumentError(f"{name}: the PDF is password-protected; remove the password and upload it again")
            except (PyPdfError, NotImplementedError, ValueError):
                raise DocumentError(f"{name}: the PDF is encrypted; remove the protection and upload it again") from None
        n_pages = len(reader.pages)
        if n_pages > limits.max_pages:
            raise DocumentError(f"{name}: {n_pages} pages; the limit is {limits.max_pages}. Upload the relevant part")
        pages: list[str] = []
        total = 0
        for page in reader.pages:
            text = page.extract_text() or ""
            total += len(text)
            if total > limits.max_chars * 2:  # raw text before normalization; a cap against runaway extraction
                raise DocumentError(f"{name}: more than {limits.max_chars:,} characters of text; upload a shorter document")
            pages.append(text)
    except DocumentError:
        raise
    except Exception as err:  # noqa: BLE001 - pypdf raises many kinds on corrupt files; all mean "cannot read it"
        raise DocumentError(f"{name}: cannot read this PDF ({type(err).__name__}: {str(err)[:200]}); it may be "
                            "damaged. Export it again, or upload a TXT/DOCX") from None
    if not any(p.strip() for p in pages):
        raise DocumentError(f"{name}: the PDF has no text layer (a scanned image?); run OCR on it first, or upload "
                            "a TXT/DOCX")
    return pages


def _docx_text(name: str, data: bytes, limits: DocumentLimits) -> str:
    if not data.startswith(b"PK\x03\x04"):
        raise DocumentError(f"{name}: not a DOCX file (a DOCX is a ZIP archive); save it as .docx from your editor")
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as archive:
            names = set(archive.namelist())
            unzipped = sum(info.file_size for info in archive.infolist())
    except (zipfile.BadZipFile, OSError, ValueError) as err:
        raise DocumentError(f"{name}: the DOCX archive is damaged ({err}); save it again from your editor") from None
    if "word/document.xml" not in names:
        raise DocumentError(f"{name}: a ZIP archive but not a Word document (no word/document.xml)")
    if unzipped > limits.max_unzipped_bytes:
        raise DocumentError(f"{name}: unpacks to {unzipped:,} bytes (limit {limits.max_unzipped_bytes:,}); refused")
    import docx
    from docx.table import Table
    from docx.text.paragraph import Paragraph

    try:
        document = docx.Document(io.BytesIO(data))
        blocks: list[str] = []
        for element in document.element.body.iterchildren():
            tag = element.tag.rsplit("}", 1)[-1]
            if tag == "p":
                blocks.append(Paragraph(element, document).text)
            elif tag == "tbl":
                for row in Table(element, document).rows:
                    cells = []
                    for cell in row.cells:
                        if not cells or cell.text != cells[-1]:  # merged cells repeat their text
                            cells.append(cell.text)
                    blocks.append(" | ".join(cells))
    except Exception as err:  # noqa: BLE001 - python-docx/lxml raise many kinds on damaged files
        raise DocumentError(f"{name}: cannot read this DOCX ({type(err).__name__}: {str(err)[:200]}); save it again "
                            "from your editor, or upload a PDF/TXT") from None
    return "\n".join(blocks)


def parse_document(name: str, data: bytes, limits: DocumentLimits | None = None,
                   chunk_chars: int = 1000, chunk_overlap: int = 250) -> Document:
    """Bytes of an uploaded file -> a normalized, chunked Document (DocumentError when it cannot be used)."""
    from lexalign.data.cuad import normalize_contract

    limits = limits or DocumentLimits()
    name = Path(name).name or "upload"
    kind = _kind(name)
    if len(data) > limits.max_bytes:
        raise DocumentError(f"{name}: {len(data) / 1e6:.1f} MB; the limit is {limits.max_bytes / 1e6:.1f} MB. Upload "
                            "the relevant part of the contract")
    if not data.strip():
        raise DocumentError(f"{name}: the file is empty")
    pages: list[str] | None = None
    if kind == "pdf":
        pages = _pdf_pages(name, data, limits)
    elif kind == "docx":
        raw = _docx_text(name, data, limits)
    else:
        raw = _decode_text(name, data)
    page_starts: list[int] = []
    if pages is not None:
        parts = []
        offset = 0
        for page in pages:
            normalized = normalize_contract(page)
            page_starts.append(offset)
            parts.append(normalized)
            offset += len(normalized) + 1
        text = "\n".join(parts)
    else:
        text = normalize_contract(raw)
    if not text.strip():
        raise DocumentError(f"{name}: no text found in the file")
    if len(text) > limits.max_chars:
        raise DocumentError(f"{name}: {len(text):,} characters; the limit is {limits.max_chars:,}. Upload the "
                            "relevant part of the contract")
    document = build_document(name, kind, text, hashlib.sha256(data).hexdigest(), len(data),
                              len(pages) if pages is not None else None, page_starts, chunk_chars, chunk_overlap)
    logger.info("document %s", document.summary())
    return document


def build_document(name: str, kind: str, text: str, sha256: str, size_bytes: int, pages: int | None,
                   page_starts: list[int], chunk_chars: int = 1000, chunk_overlap: int = 250) -> Document:
    """A Document from its normalized text, with its sections and chunks (an upload, or a saved session's)."""
    document = Document(name, kind, text, sha256, size_bytes, pages=pages, page_starts=list(page_starts),
                        sections=find_sections(text))
    document.chunks = chunk_document(document, chunk_chars, chunk_overlap)
    return document


def load_document(path: str | Path, limits: DocumentLimits | None = None, name: str | None = None,
                  chunk_chars: int = 1000, chunk_overlap: int = 250) -> Document:
    """``parse_document`` for a file on disk (the size is checked before the file is read)."""
    path = Path(path)
    limits = limits or DocumentLimits()
    display = name or path.name
    try:
        size = path.stat().st_size
        if size > limits.max_bytes:
            raise DocumentError(f"{display}: {size / 1e6:.1f} MB; the limit is {limits.max_bytes / 1e6:.1f} MB. Upload "
                                "the relevant part of the contract")
        data = path.read_bytes()
    except OSError as err:
        raise DocumentError(f"{display}: cannot read the upload ({err.strerror or err})") from None
    return parse_document(display, data, limits, chunk_chars, chunk_overlap)


def chunk_document(document: Document, size: int, overlap: int) -> list[Chunk]:
    from lexalign.data.cuad import make_windows

    if size <= 0 or not 0 <= overlap < size:
        raise ValueError(f"chunk size {size} / overlap {overlap}: need size > 0 and 0 <= overlap < size")
    return [Chunk(i, start, end, document.text[start:end], document.page_of(start), document.place(start, end))
            for i, (start, end) in enumerate(make_windows(document.text, size, overlap), start=1)]


# =========================================================================== sections

# Headings, found by regular expressions on the normalized text (explainable, and cheap enough for a 300-page
# contract). A numbered heading starts a line, or a sentence (after ". ", "; ", ": " or a closing quote: contracts
# converted to text often run several clauses together on one line, "... whatsoever. 22.4 Governing Law. The ..."):
#   "14."  "14.2"  "14.2.1"  "Section 14"  "ARTICLE IV"  "Article 4"  "Clause 7"
# (a bare number needs its dot, so "30 days" is no heading). Its title is the run of capitalised words that follows,
# ended by "." or ":" or the end of the line ("14. Governing Law. This Agreement ..." -> "Governing Law"); a
# numbered heading without a title takes its parent's ("14.2" under "14. Governing Law"). To keep list items and
# cross-references out, a heading without a title counts only when it is clearly one: a dotted number ("14.2"), a
# "Section 14." or "ARTICLE IV" ended by a dot, colon or the line's end, or "N." where N is the next top-level
# number ("2." after "1.2"; a "1." inside clause 14 is a list item); in the middle of a line it must also be
# followed by the start of a sentence ("Inc. 12.5 percent" is no heading).
# Unnumbered headings are whole short lines in capitals ("GOVERNING LAW"); one that repeats three times or more is
# a page header or footer ("CONFIDENTIAL") and is ignored. Title-case lines alone are not taken: party names and
# signature blocks look the same. A number alone on its line followed by a line in capitals is one heading
# ("ARTICLE IV" / "REPRESENTATIONS AND WARRANTIES").
_TITLE_WORD = r"[A-Za-z0-9&'\u2019()/,;-]*"  # no markup or Markdown characters: a label is shown in HTML and Markdown
_NUMBERED = re.compile(
    r"(?:^|(?<=[.;:\"\u201d] ))"
    r"(?:(?P<keyword>(?i:section|article|clause)) (?P<knum>\d{1,3}(?:\.\d{1,3})*|[IVXLC]{1,7})"
    r"|(?P<num>\d{1,3}(?:\.\d{1,3})+|\d{1,3}(?=\.)))"
    r"(?P<dot>[.:])?(?=[ \n\u2013\u2014-]|$)", re.MULTILINE)
_TITLE = re.compile(
    r" ?(?:[\u2013\u2014-] )?"
    r"(?P<title>[A-Z]" + _TITLE_WORD
    + r"(?: (?:[A-Z0-9]" + _TITLE_WORD + r"|of|and|or|the|to|for|in|on|a|an|by|with|upon|under|its)){0,7})"
    r"(?:[.:](?=[ \n]|$)|(?=\n|$))")
_CAPS_LINE = re.compile(r"^(?P<title>[A-Z][A-Z0-9&'\u2019()/,;: -]{2,58}?)[.:]?$", re.MULTILINE)
_SENTENCE_START = re.compile(r" [A-Z\"\u201c(]")
MAX_TITLE_CHARS = 60
MAX_TITLE_WORDS = 8
REPEATED_HEADER = 3  # a capitals line seen this often is a running page header or footer


@dataclass(frozen=True)
class _Heading:
    start: int
    end: int                  # end of the matched heading text
    title: str | None
    number: str | None = None
    keyword: str | None = None  # section | article | clause; None: a bare number or no number

    def label(self, title: str | None) -> str:
        if self.number is None:
            return title or ""
        head = f"\u00a7{self.number}" if self.keyword in (None, "section") else f"{self.keyword.capitalize()} {self.number}"
        return f"{head} {title}" if title else head


def _clean_title(title: str) -> str:
    title = " ".join(title.split()).strip(" ,;:-")
    if len(title) > MAX_TITLE_CHARS:
        title = title[:MAX_TITLE_CHARS].rsplit(" ", 1)[0]
    return title


def _numbered_headings(text: str) -> list[_Heading]:
    found = []
    last_top = 0  # the top-level number of the last numbered heading ("7.4" -> 7)
    for match in _NUMBERED.finditer(text):
        title_match = _TITLE.match(text, match.end())
        title = _clean_title(title_match.group("title")) if title_match else None
        keyword = match.group("keyword")
        number = match.group("knum") or match.group("num")
        top = int(number.split(".")[0]) if number[0].isdigit() else None
        if not title:
            line_start = match.start() == 0 or text[match.start() - 1] == "\n"
            line_end = match.end() == len(text) or text[match.end()] == "\n"
            if keyword:
                clear = bool(match.group("dot")) or line_end
            elif "." in number:
                clear = True
            else:
                clear = top == last_top + 1  # "2." after 1.x is the next clause; "1." inside 14 is a list item
            # mid-line, a clause starts a sentence: "15.2 Termination ..." is one, "Inc. 12.5 percent" is not
            if not clear or not (line_start or _SENTENCE_START.match(text, match.end())):
                continue
        if top is not None:
            last_top = top
        end = title_match.end() if title_match and title else match.end()
        found.append(_Heading(match.start(), end, title or None, number, keyword.lower() if keyword else None))
    return found


def _caps_lines(text: str) -> list[_Heading]:
    found = []
    for match in _CAPS_LINE.finditer(text):
        title = _clean_title(match.group("title"))
        if sum(ch.isalpha() for ch in title) >= 4 and len(title.split()) <= MAX_TITLE_WORDS:
            found.append(_Heading(match.start(), match.end(), title))
    counts = Counter(h.title for h in found)
    return [h for h in found if counts[h.title] < REPEATED_HEADER]


def find_sections(text: str) -> list[tuple[int, str]]:
    """(offset, label) of every heading in the normalized ``text``, in document order (see the rules above):
    "\u00a714 Governing Law", "\u00a714.2 Governing Law", "Article IV REPRESENTATIONS", "GOVERNING LAW"."""
    numbered = _numbered_headings(text)
    starts = {h.start for h in numbered}
    headings = sorted(numbered + [h for h in _caps_lines(text) if h.start not in starts], key=lambda h: h.start)
    titles: dict[str, str] = {}  # number -> its own title, for untitled subsections ("14.2" under "14")
    sections: list[tuple[int, str]] = []
    previous: _Heading | None = None
    for heading in headings:
        if (heading.number is None and previous is not None and previous.number is not None
                and previous.title is None and heading.start == previous.end + 1):
            # "ARTICLE IV" alone on its line, its title in capitals on the next: one heading
            merged = dataclasses.replace(previous, end=heading.end, title=heading.title)
            sections[-1] = (previous.start, merged.label(merged.title))
            if merged.number and merged.title:
                titles[merged.number] = merged.title
            previous = merged
            continue
        title = heading.title
        if heading.number is not None:
            if title:
                titles[heading.number] = title
            else:
                parent = heading.number
                while title is None and "." in parent:
                    parent = parent.rsplit(".", 1)[0]
                    title = titles.get(parent)
        sections.append((heading.start, heading.label(title)))
        previous = heading
    return sections


# =========================================================================== choosing chunks

STOP_WORDS = frozenset("""
a about above after again against all am an and any are as at be because been before being below between both but
by can could did do does doing down during each few for from further had has have having he her here hers herself
him himself his how i if in into is it its itself just me more most my myself no nor not of off on once only or
other our ours ourselves out over own same she should so some such than that the their theirs them themselves then
there these they this those through to too under until up very was we were what when where which while who whom why
will with would you your yours yourself yourselves contract clause clauses excerpt excerpts agreement party parties
""".split())
# "agreement"/"party"/"contract"/"clause" occur in nearly every chunk of every contract: no signal.
_TOKEN = re.compile(r"[a-z0-9]+")


def tokenize(text: str) -> list[str]:
    tokens = []
    for token in _TOKEN.findall(text.lower()):
        if token in STOP_WORDS or len(token) < 2:
            continue
        if len(token) > 3 and token.endswith("s") and not token.endswith("ss"):
            token = token[:-1]
        tokens.append(token)
    return tokens


class BM25:
    """Okapi BM25 over a fixed list of texts."""

    def __init__(self, texts: list[str], k1: float = 1.5, b: float = 0.75) -> None:
        self.k1, self.b = k1, b
        self.docs = [Counter(tokenize(t)) for t in texts]
        self.lengths = [sum(d.values()) for d in self.docs]
        self.avg_length = (sum(self.lengths) / len(self.lengths)) if self.lengths else 0.0
        df: Counter[str] = Counter()
        for d in self.docs:
            df.update(d.keys())
        n = len(self.docs)
        self.idf = {t: math.log(1 + (n - f + 0.5) / (f + 0.5)) for t, f in df.items()}

    def scores(self, query: str) -> list[float]:
        terms = set(tokenize(query))
        out = []
        for doc, length in zip(self.docs, self.lengths):
            score = 0.0
            norm = self.k1 * (1 - self.b + self.b * length / (self.avg_length or 1))
            for term in terms:
                tf = doc.get(term, 0)
                if tf:
                    score += self.idf[term] * tf * (self.k1 + 1) / (tf + norm)
            out.append(score)
        return out


@dataclass(frozen=True)
class Selection:
    chunks: list[Chunk]            # in document order
    scores: dict[int, float]       # chunk index -> BM25 score (all chunks)
    truncated: bool = False        # the best chunk alone did not fit and was cut
    matched: bool = True           # False: no chunk shared a word with the query (first chunks used)


def select_chunks(chunks: list[Chunk], query: str, budget_tokens: int, chars_per_token: float,
                  max_chunks: int = 8) -> Selection:
    """The best-matching chunks that fit ``budget_tokens`` (estimated as characters / chars_per_token).

    Each chunk also costs its label line. At least one chunk is always returned (cut to the budget when the
    best one alone is too long) so a question never goes out without contract text.
    """
    if not chunks:
        return Selection([], {})
    raw = BM25([c.text for c in chunks]).scores(query)
    scores = {c.index: s for c, s in zip(chunks, raw)}
    matched = any(s > 0 for s in raw)
    order = sorted(chunks, key=lambda c: (-scores[c.index], c.index)) if matched else list(chunks)
    budget_chars = max(0, int(budget_tokens * chars_per_token))
    chosen: list[Chunk] = []
    used = 0
    for chunk in order:
        if len(chosen) >= max_chunks:
            break
        if matched and scores[chunk.index] <= 0:
            break
        cost = len(chunk.text) + len(chunk.label()) + 2
        if used + cost <= budget_chars:
            chosen.append(chunk)
            used += cost
        elif not matched:
            break  # fill from the start of the document, in order, until the budget is used
    truncated = False
    if not chosen:
        best = order[0]
        keep = max(0, budget_chars - len(best.label()) - 2)
        text = best.text[:keep]
        cut = text.rfind(" ")
        if cut > keep // 2:
            text = text[:cut]
        chosen = [dataclasses.replace(best, end=best.start + len(text), text=text)]
        truncated = True
    chosen.sort(key=lambda c: c.index)
    return Selection(chosen, scores, truncated, matched)


def excerpt_block(chunks: list[Chunk]) -> str:
    """The excerpt text put in the prompt: each chunk under its label, in document order."""
    return "\n\n".join(f"{c.label()}\n{c.text}" for c in chunks)


# =========================================================================== where quotes come from


NOT_FOUND_LABEL = "[not found in the contract]"


@dataclass(frozen=True)
class Citation:
    quote: str
    start: int | None      # span in Document.text; None: not found verbatim
    end: int | None
    chunks: tuple[int, ...] = ()
    page: int | None = None
    place: str | None = None  # its section (and page), e.g. "\u00a714 Governing Law, p. 3"; None: before any heading

    @property
    def found(self) -> bool:
        return self.start is not None

    def label(self) -> str:
        """The exact location: chunks, page and character range (for tools, and the fallback for a lawyer)."""
        if not self.found:
            return NOT_FOUND_LABEL
        chunks = ", ".join(map(str, self.chunks))
        page = f", p. {self.page}" if self.page else ""
        return f"[chunk {chunks}{page}, chars {self.start}\u2013{self.end}]"

    def where(self) -> str:
        """The location for a lawyer: its section and page, else ``label()``."""
        return (self.place or self.label()) if self.found else NOT_FOUND_LABEL

    def as_dict(self) -> dict[str, Any]:
        """The JSON form kept with answers, review rows and exports: both labels and the character range."""
        return {"quote": self.quote, "found": self.found, "label": self.label(), "where": self.where(),
                "start": self.start, "end": self.end, "chunks": list(self.chunks), "page": self.page}


def where_of(item: Mapping[str, Any]) -> str:
    """The lawyer's label of a citation or source dict (records written before sections existed have "label" only)."""
    return str(item.get("where") or item.get("label") or "")


_QUOTED = re.compile(r"[\"\u201c]([^\"\u201c\u201d]{12,})[\"\u201d]")
_LABEL = re.compile(r"\[chunk [^\]]*\]")


def quotes_in(answer: str, min_chars: int = 20) -> list[str]:
    """Text the answer presents as contract language: quoted passages, else its longer lines."""
    text = _LABEL.sub(" ", answer)
    found = [m.group(1).strip() for m in _QUOTED.finditer(text)]
    if not found:
        found = [line.strip().strip("\"\u201c\u201d").strip() for line in text.splitlines()]
    out: list[str] = []
    for quote in found:
        quote = " ".join(quote.split())
        if len(quote) >= min_chars and quote not in out:
            out.append(quote)
    return out


def locate_quotes(answer: str, document: Document, min_chars: int = 20) -> list[Citation]:
    """Where each quoted passage of the answer is in the contract (whitespace-insensitive, exact otherwise)."""
    flattened = flatten_whitespace(document.text)
    return [locate(quote, document, flattened) for quote in quotes_in(answer, min_chars)]


def locate(passage: str, document: Document, flattened: tuple[str, list[int]] | None = None) -> Citation:
    """Where one passage is in the contract, whitespace-insensitively (``flattened``: the document's
    ``flatten_whitespace``, computed once for many passages)."""
    flat, index = flattened or flatten_whitespace(document.text)
    quote = " ".join(passage.split())
    position = flat.find(quote) if quote else -1
    if position < 0:
        return Citation(quote, None, None)
    start, end = index[position], index[position + len(quote) - 1] + 1
    chunks = tuple(c.index for c in document.chunks if c.start < end and c.end > start)
    return Citation(quote, start, end, chunks, document.page_of(start), document.place(start, end))


def flatten_whitespace(text: str) -> tuple[str, list[int]]:
    """Text with every whitespace run as one space, and each character's offset in the original."""
    chars: list[str] = []
    index: list[int] = []
    previous_space = False
    for i, ch in enumerate(text):
        if ch.isspace():
            if previous_space:
                continue
            chars.append(" ")
            previous_space = True
        else:
            chars.append(ch)
            previous_space = False
        index.append(i)
    return "".join(chars), index
