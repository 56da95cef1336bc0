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
text and, for PDFs, its page, so answers can cite ``[chunk 3, p. 2, chars 1200-2100]``.

Choosing chunks. Chunks are ranked with Okapi BM25 (k1 = 1.5, b = 0.75) against a query made of the review
task's words: a CUAD category's name and description, the unfair-clause categories, obligation/date
words, or the lawyer's question. Tokens are lower-cased letter/digit runs without common English stop
words, with a plural "s" stripped. Ties go to the earlier chunk. The best chunks are taken while they fit
the prompt's token budget, then put back in document order; when no chunk matches at all the first chunks
are used (the start of a contract names the parties, dates and definitions). Simple, deterministic and
explainable: the UI shows the lawyer exactly which excerpts the model saw.
"""

from __future__ import annotations

import hashlib
import io
import logging
import math
import re
import zipfile
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

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

    def label(self) -> str:
        page = f", p. {self.page}" if self.page else ""
        return f"[chunk {self.index}{page}, chars {self.start}\u2013{self.end}]"


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
    document = Document(name, kind, text, hashlib.sha256(data).hexdigest(), len(data),
                        pages=len(pages) if pages is not None else None, page_starts=page_starts)
    document.chunks = chunk_document(document, chunk_chars, chunk_overlap)
    logger.info("document %s", document.summary())
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
    return [Chunk(i, start, end, document.text[start:end], document.page_of(start))
            for i, (start, end) in enumerate(make_windows(document.text, size, overlap), start=1)]


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
        chosen = [Chunk(best.index, best.start, best.start + len(text), text, best.page)]
        truncated = True
    chosen.sort(key=lambda c: c.index)
    return Selection(chosen, scores, truncated, matched)


def excerpt_block(chunks: list[Chunk]) -> str:
    """The excerpt text put in the prompt: each chunk under its label, in document order."""
    return "\n\n".join(f"{c.label()}\n{c.text}" for c in chunks)


# =========================================================================== where quotes come from


@dataclass(frozen=True)
class Citation:
    quote: str
    start: int | None      # span in Document.text; None: not found verbatim
    end: int | None
    chunks: tuple[int, ...] = ()
    page: int | None = None

    @property
    def found(self) -> bool:
        return self.start is not None

    def label(self) -> str:
        if not self.found:
            return "[not found in the contract]"
        chunks = ", ".join(map(str, self.chunks))
        page = f", p. {self.page}" if self.page else ""
        return f"[chunk {chunks}{page}, chars {self.start}\u2013{self.end}]"


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
    flat, index_map = flatten_whitespace(document.text)
    citations = []
    for quote in quotes_in(answer, min_chars):
        position = flat.find(quote)
        if position < 0:
            citations.append(Citation(quote, None, None))
            continue
        start, end = index_map[position], index_map[position + len(quote) - 1] + 1
        chunks = tuple(c.index for c in document.chunks if c.start < end and c.end > start)
        citations.append(Citation(quote, start, end, chunks, document.page_of(start)))
    return citations


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
