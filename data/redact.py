"""PII redaction: find personal data in text and replace it with a typed placeholder such as ``[EMAIL]``.

    from lexalign.data.redact import Redactor
    result = Redactor().redact("Call Mr. John Smith at (212) 555-0147 or jsmith@example.com.")
    result.text    # 'Call Mr. [PERSON] at [PHONE] or [EMAIL].'
    result.counts  # {'person': 1, 'phone': 1, 'email': 1}

Used by ``lexalign data build`` (config section ``redact:``, OFF by default for the public corpora, see
below) and by ``lexalign prefs export`` for chat feedback (ON by default: lawyers paste client documents).

## What is found, and how (everything runs offline)

| type      | placeholder | how                                                                                  |
|-----------|-------------|--------------------------------------------------------------------------------------|
| email     | [EMAIL]     | RFC-5322-ish pattern (local@domain.tld)                                              |
| phone     | [PHONE]     | Google's libphonenumber (``phonenumbers.PhoneNumberMatcher``, leniency VALID): only numbers that are valid for their country; US default region, ``+CC`` numbers anywhere |
| ssn       | [SSN]       | US SSN ``ddd-dd-dddd`` (or 9 digits right after "SSN"/"social security"), validated with ``python-stdnum`` (no 000/666/9xx area, no 00 group, no 0000 serial) |
| ein       | [EIN]       | US EIN ``dd-ddddddd`` with a valid IRS campus prefix (``python-stdnum``)             |
| card      | [CARD]      | 13-19 digits (spaces/dashes allowed) with a card-network prefix AND a valid Luhn check |
| iban      | [IBAN]      | country code + check digits + BBAN, validated by ``python-stdnum`` (country length and mod-97) |
| account   | [ACCOUNT]   | 6-20 digits after "account/acct/a/c (no./number/#)" or "routing/ABA" (ABA checksum)   |
| address   | [ADDRESS]   | US-style street addresses: number + capitalized street name + street suffix (Street, Ave., Suite...), optional unit, city, state and ZIP; "P.O. Box N" |
| person    | [PERSON]    | context rules only (see below)                                                       |

**Person names.** No library on the package index here can find person names offline: spaCy's pretrained
pipelines (``en_core_web_*``) are not on it, Presidio's PERSON recognizer is spaCy NER (its pattern
recognizers cover only the structured types above), ``nameparser`` splits a string already known to be a
name, and ``names-dataset`` is a multi-GB first/last-name lookup that would flag ordinary words ("Will",
"Grant", "Bill") in legal text. So names are found by conservative context rules: an honorific
(Mr./Mrs./Ms./Miss/Dr./Prof./Hon./Judge/Justice) followed by 1-3 capitalized name words or initials, a
``/s/`` electronic signature, and signature/notice-block labels with a colon ("By:", "Name:", "Print Name:",
"Attn:"/"Attention:", "Signed:", "Signature:", "Witness:") followed by 2-4 name words; a match that holds or
runs into an organization word (LLC, GP, Company, Services...) is not a person. A full name found this way is
also redacted wherever else it occurs in the same text or record. Other names in running text ("Employee
Maria Garcia agrees...") are NOT found: recall on names is limited, by design, to keep legal text (party
names, defined terms, places) intact. Company names are not personal data and are left alone.

## Replacement styles

``label`` (default): ``[EMAIL]``; ``indexed``: ``[PERSON_1]``, ``[PERSON_2]`` — the same value gets the same
index within one ``Redactor`` (pseudonyms, so "who said what" survives in a conversation); ``mask``: every
character of the value becomes ``*`` (keeps lengths, e.g. for offset-sensitive data). Placeholders are
never detected again: redacting twice gives the same text (idempotent).

## Reports

``RedactionReport`` counts findings per type per file (plus records changed/dropped); it never holds the
redacted values, so the report itself is safe to publish.
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Iterable, Literal

ENTITY_TYPES: tuple[str, ...] = ("email", "phone", "ssn", "ein", "card", "iban", "account", "address", "person")
Style = Literal["label", "indexed", "mask"]
STYLES = ("label", "indexed", "mask")

# When two findings overlap, the type listed first wins (an IBAN holds digit runs a phone matcher could take).
_PRIORITY = {name: i for i, name in enumerate(("email", "iban", "card", "ssn", "ein", "account", "phone",
                                                "address", "person"))}

# Keys of record dicts whose (nested) strings are free text to redact. Ids, labels, offsets and other meta
# values are kept as they are.
TEXT_KEYS = frozenset({"content", "prompt", "chosen", "rejected", "responses", "rationale", "answers", "excerpt",
                       "question", "response", "better_answer", "text", "completion"})


# --------------------------------------------------------------------------- patterns

_EMAIL = re.compile(r"(?<![\w.+-])[A-Za-z0-9][A-Za-z0-9._%+-]{0,63}@(?:[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?\.)+"
                    r"[A-Za-z]{2,24}(?![\w-])")
_SSN = re.compile(r"(?<![\w-])(\d{3})-(\d{2})-(\d{4})(?![\w-])")
_SSN_CONTEXT = re.compile(r"(?:\bSSN|\bsocial\s+security\s+(?:number|no\.?|#))\s*[:#]?\s*(\d{3}[ -]?\d{2}[ -]?\d{4})(?![\w-])",
                          re.IGNORECASE)
_EIN = re.compile(r"(?<![\w-])(\d{2})-(\d{7})(?![\w-])")
_CARD = re.compile(r"(?<![\w-])(?:\d[ -]?){12,18}\d(?![\w-])")
_CARD_PREFIX = re.compile(r"^(?:4|5[1-5]|2[2-7]|3[47]|6(?:011|5|4[4-9])|3(?:0[0-5]|[68]))")
_IBAN = re.compile(r"(?<![A-Za-z0-9])([A-Z]{2}\d{2}(?: ?[A-Z0-9]{1,4}){3,8})(?![A-Za-z0-9])")
_ACCOUNT = re.compile(
    r"\b(?:(?:bank\s+)?account|acct\.?|a/c)\s*(?:no\.?|number|num\.?|#)?\s*[:#]?\s*(\d[\d -]{4,22}\d)(?![\w-])"
    r"|\b(?:routing|ABA)\s*(?:transit\s+)?(?:no\.?|number|#)?\s*[:#]?\s*(\d{9})(?![\w-])",
    re.IGNORECASE)

_NANP = re.compile(r"^(?:\+?1[ .-]?)?(?:\(\d{3}\)[ .-]?|\d{3}[ ./-])\d{3}[ .-]\d{4}\b")
_PHONE_WORDS = re.compile(r"(?:tel(?:ephone)?|phone|fax|facsimile|telecopy|telecopier|mobile|cell|call|dial|"
                          r"hotline|sms|text|whatsapp)\b\.?\s*(?:no\.?|number|#)?\s*[:.]?\s*$", re.IGNORECASE)
_STREET_SUFFIX = (r"(?:Street|St|Avenue|Ave|Road|Rd|Boulevard|Blvd|Drive|Dr|Lane|Ln|Way|Court|Ct|Place|Pl|Parkway|Pkwy|"
                  r"Highway|Hwy|Terrace|Ter|Circle|Cir|Square|Sq|Plaza|Trail|Trl|Turnpike|Tpke|Alley|Row|Pike|Freeway)")
_STREET_WORD = r"(?:[A-Z][A-Za-z'’.-]*|\d{1,3}(?:st|nd|rd|th))"
_UNIT = r"(?:,?\s+(?:Suite|Ste\.?|Unit|Apt\.?|Apartment|Floor|Fl\.?|Room|Rm\.?|#)\s*[A-Z0-9-]{1,6})"
_STATES = ("AL|AK|AZ|AR|CA|CO|CT|DE|DC|FL|GA|HI|ID|IL|IN|IA|KS|KY|LA|ME|MD|MA|MI|MN|MS|MO|MT|NE|NV|NH|NJ|NM|NY|NC|ND|OH|"
           "OK|OR|PA|RI|SC|SD|TN|TX|UT|VT|VA|WA|WV|WI|WY|PR")
_CITY_STATE_ZIP = (rf"(?:,?\s+[A-Z][A-Za-z.'-]*(?:\s+[A-Z][A-Za-z.'-]*){{0,3}},?\s+(?:{_STATES}|[A-Z][a-z]+(?:\s+[A-Z][a-z]+)?)"
                   r"\.?\s+\d{5}(?:-\d{4})?)")
_ADDRESS = re.compile(
    rf"(?<![\w$.,-])\d{{1,6}}[A-Z]?\s+(?:[NSEW]\.?\s+|North\s+|South\s+|East\s+|West\s+)?(?:{_STREET_WORD}\s+){{0,4}}"
    rf"{_STREET_WORD}?\s*\b{_STREET_SUFFIX}\b\.?(?:\s+(?:[NSEW]|N\.?[EW]|S\.?[EW])\.?(?![A-Za-z]))?{_UNIT}?{_CITY_STATE_ZIP}?"
    r"|\bP\.?\s?O\.?\s+Box\s+\d{1,7}\b" + rf"{_CITY_STATE_ZIP}?")

_UP = "A-Z\u00c0-\u00d6\u00d8-\u00de"      # upper-case Latin letters (with accents)
_LO = "a-z\u00df-\u00f6\u00f8-\u00ff"      # lower-case Latin letters (with accents)
_NAME_WORD = (rf"(?:O['\u2019][{_UP}][{_LO}]+|[{_UP}][{_LO}]+(?:['\u2019-]?[{_UP}][{_LO}]+)?(?:-[{_LO}]+)?"
              rf"|[{_UP}]\.|[{_UP}]{{2,}}(?:['\u2019-][{_UP}]+)?)")
_HONORIFIC = re.compile(rf"\b(?:Mr|Mrs|Ms|Mx|Miss|Dr|Prof|Hon|Judge|Justice)\.?[ \t]+((?:{_NAME_WORD}[ \t]+){{0,2}}{_NAME_WORD})")
_SIGNATURE = re.compile(rf"/s/[ \t]*((?:{_NAME_WORD}[ \t]+){{0,3}}{_NAME_WORD})")
# Signature and notice blocks: the label and its colon, then the name ("Name: Jane Q. Doe", "Attn: Robert O'Neil").
_LABELLED = re.compile(
    rf"\b(?:By|Name|Print(?:ed)?\s+Name|Attn|Attention|Signed|Signature|Witness)[ \t]*:[ \t]*(?:\n[ \t]*)?"
    rf"((?:{_NAME_WORD}[ \t]+){{1,3}}{_NAME_WORD})")
# A match holding one of these words is an organization (or a role), not a person: it is not redacted.
_ORG_WORDS = frozenset(w.lower() for w in """
    Inc Incorporated LLC LLP LP Ltd Limited Co Corp Corporation Company Companies Group Holdings Holding Bank Trust
    Fund Funds Partnership Association AG GmbH SA SAS SARL BV NV Pty PLC KK SpA Corporate Services Investment
    Investments Capital Ventures Partners Lawyer Lawyers Law Firm Associates Foundation University Institute
    Franchise Suites Hotels Petroleum Energy Pharmaceuticals Technologies Systems Solutions Software Media Networks
    Industries International Global Enterprises Agency Authority Council Ministry Government GP Management
""".split())
# Capitalized words that follow the labels above but are not names (titles, roles, legal words).
_NOT_NAMES = frozenset(w.lower() for w in """
    Title Its Date Name Address Phone Fax Email Telephone Facsimile Signature Signed Attention Attn By Witness Print
    Printed The This That Such Any Each All Said Both Either Neither A An Of And Or For To In On At With From
    Chief Executive Officer Financial Operating Technology Legal President Vice Senior Executive General Counsel
    Secretary Treasurer Director Directors Manager Managing Member Partner Partners Chairman Chair Assistant Authorized
    Signatory Agent Attorney Trustee Administrator Owner Representative Employee Licensor Licensee Company Corporation
    Inc Incorporated LLC LLP LP Ltd Limited Co Corp Group Holdings Bank Trust Fund Partnership Association Department
    Legal Department Office Division Contracts Notices Notice Counsel Party Parties Buyer Seller Purchaser Vendor
    Supplier Customer Client Contractor Consultant Distributor Franchisee Franchisor Lender Borrower Landlord Tenant
    Lessor Lessee Guarantor Employer Executive Investor Holder Agreement Section Article Exhibit Schedule Mail Certified
    Registered Overnight Courier Hand Delivery Electronic Facsimile Its Their His Her Our Your Street Avenue Suite
    United States America Delaware California Nevada Texas Florida Ohio Illinois Massachusetts Virginia Georgia
    Washington Pennsylvania Jersey York Michigan Minnesota Colorado Maryland Wisconsin Tennessee Oregon Arizona Utah
    January February March April May June July August September October November December
    Human Resources Finance Marketing Sales Operations Procurement Purchasing Accounting Engineering Development
    Business Affairs Compliance Privacy Risk Management Board Committee Team Services Service Support Products
    Tel Tel. Phone Mobile Cell Head Project Program Office Offices Mailstop Desk Center Centre Unit Facility Plant Store
""".split())


# --------------------------------------------------------------------------- checks


def _digits(text: str) -> str:
    return re.sub(r"\D", "", text)


def luhn_ok(number: str) -> bool:
    from stdnum import luhn

    return luhn.is_valid(number)


def _card_grouping(groups: list[int]) -> bool:
    """How card numbers are printed: 4-4-4-4 (and 4-4-4-4-3 for 19 digits, 4-4-4-1 for 13), Amex 4-6-5,
    Diners 4-6-4."""
    return groups in ([4, 4, 4, 4], [4, 4, 4, 4, 3], [4, 4, 4, 1], [4, 4, 5], [4, 6, 5], [4, 6, 4])


def _card_length_ok(digits: str) -> bool:
    """The lengths each network issues: Amex 15, Visa 13/16/19, Mastercard 16, Discover 16-19, Diners 14-19."""
    n = len(digits)
    if digits[:2] in ("34", "37"):
        return n == 15
    if digits[0] == "4":
        return n in (13, 16, 19)
    if digits[0] in "52":
        return n == 16
    return 14 <= n <= 19


def _ssn_ok(digits: str) -> bool:
    from stdnum.us import ssn

    return len(digits) == 9 and ssn.is_valid(digits)


def _ein_ok(digits: str) -> bool:
    from stdnum.us import ein

    return len(digits) == 9 and ein.is_valid(digits)


def _iban_ok(text: str) -> bool:
    from stdnum import iban

    return iban.is_valid(text)


def _aba_ok(digits: str) -> bool:
    if len(digits) != 9:
        return False
    d = [int(c) for c in digits]
    return (3 * (d[0] + d[3] + d[6]) + 7 * (d[1] + d[4] + d[7]) + (d[2] + d[5] + d[8])) % 10 == 0


def _looks_like_name(words: str) -> str | None:
    """The leading name words of a match (cut at the first word that is not a name word); None if none."""
    kept = []
    for word in words.split():
        bare = word.strip(".")
        if bare.lower() in _ORG_WORDS:
            return None
        if len(bare) > 1 and bare.lower() in _NOT_NAMES:
            break
        kept.append(word)
    if not kept:
        return None
    if all(len(w.strip(".")) <= 1 for w in kept):  # initials only ("A. B.") say too little
        return None
    return " ".join(kept)


# --------------------------------------------------------------------------- finding


@dataclass(frozen=True)
class Finding:
    start: int
    end: int
    type: str


def _find_email(text: str) -> Iterable[Finding]:
    for m in _EMAIL.finditer(text):
        yield Finding(m.start(), m.end(), "email")


def _phone_shaped(raw: str, before: str) -> bool:
    """A valid number is taken when it is written like a phone number: international (+CC), North American
    grouping ((212) 555-0147, 212.555.0147, 1-800-...), or right after a phone word (Tel:, Fax, call...).
    Bare digit runs in tables (patent and application numbers, ids) are valid numbers too, but not phones."""
    if raw.lstrip("(").startswith("+") or _NANP.search(raw):
        return True
    return bool(_PHONE_WORDS.search(before[-30:]))


def _find_phone(text: str) -> Iterable[Finding]:
    if not any(c.isdigit() for c in text):
        return
    import phonenumbers
    from phonenumbers import Leniency, PhoneNumberMatcher

    try:
        for match in PhoneNumberMatcher(text, "US", leniency=Leniency.VALID):
            if _phone_shaped(match.raw_string, text[max(0, match.start - 30):match.start]):
                yield Finding(match.start, match.end, "phone")
    except phonenumbers.NumberParseException:  # pragma: no cover - the matcher skips unparsable candidates
        return


def _find_ssn(text: str) -> Iterable[Finding]:
    for m in _SSN.finditer(text):
        if _ssn_ok(m.group(1) + m.group(2) + m.group(3)):
            yield Finding(m.start(), m.end(), "ssn")
    for m in _SSN_CONTEXT.finditer(text):
        if _ssn_ok(_digits(m.group(1))):
            yield Finding(m.start(1), m.end(1), "ssn")


def _find_ein(text: str) -> Iterable[Finding]:
    for m in _EIN.finditer(text):
        if _ein_ok(m.group(1) + m.group(2)):
            yield Finding(m.start(), m.end(), "ein")


def _find_card(text: str) -> Iterable[Finding]:
    for m in _CARD.finditer(text):
        raw = m.group(0)
        digits = _digits(raw)
        if not 13 <= len(digits) <= 19 or not _CARD_PREFIX.match(digits) or not _card_length_ok(digits) \
                or not luhn_ok(digits):
            continue
        separators = set(re.sub(r"\d", "", raw))
        if len(separators) > 1:  # "4111 1111-1111 1111": mixed separators are not how cards are written
            continue
        groups = [len(g) for g in re.split(r"[ -]", raw)]
        if len(groups) > 1 and not _card_grouping(groups):  # "232 416 587 0108" is a phone extension + number
            continue
        yield Finding(m.start(), m.end(), "card")


def _find_iban(text: str) -> Iterable[Finding]:
    for m in _IBAN.finditer(text):
        candidate = m.group(1)
        # The pattern may run into a following word ("... GB82 WEST 1234 5698 7654 32 and"); try shorter.
        parts = candidate.split(" ")
        for n in range(len(parts), 0, -1):
            value = " ".join(parts[:n])
            if len(value.replace(" ", "")) >= 15 and _iban_ok(value):
                yield Finding(m.start(1), m.start(1) + len(value), "iban")
                break


def _find_account(text: str) -> Iterable[Finding]:
    for m in _ACCOUNT.finditer(text):
        if m.group(1) is not None:
            if len(_digits(m.group(1))) >= 6:
                yield Finding(m.start(1), m.end(1), "account")
        elif m.group(2) is not None and _aba_ok(m.group(2)):
            yield Finding(m.start(2), m.end(2), "account")


def _find_address(text: str) -> Iterable[Finding]:
    for m in _ADDRESS.finditer(text):
        value = m.group(0).rstrip()
        end = m.start() + len(value)
        yield Finding(m.start(), end, "address")


def _find_person(text: str) -> Iterable[Finding]:
    for pattern in (_HONORIFIC, _SIGNATURE, _LABELLED):
        for m in pattern.finditer(text):
            name = _looks_like_name(m.group(1))
            if name is None:
                continue
            following = re.split(r"[,;:()\n]", text[m.end(1):m.end(1) + 40], maxsplit=1)[0].split()[:2]
            if any(w.strip(".").lower() in _ORG_WORDS for w in following):
                continue  # "By: MPM Oncology Impact Management GP": the words run on into an organization
            if pattern is _LABELLED and len(name.split()) < 2:
                continue  # "By: Licensor" / "Attn: Legal": a label needs a full name
            yield Finding(m.start(1), m.start(1) + len(name), "person")


_FINDERS = {"email": _find_email, "phone": _find_phone, "ssn": _find_ssn, "ein": _find_ein, "card": _find_card,
            "iban": _find_iban, "account": _find_account, "address": _find_address, "person": _find_person}


# --------------------------------------------------------------------------- redaction


@dataclass
class RedactionResult:
    text: str
    counts: Counter = field(default_factory=Counter)

    @property
    def changed(self) -> bool:
        return bool(self.counts)


class Redactor:
    """Finds and replaces PII of the configured ``entities`` in text (see the module docstring)."""

    def __init__(self, entities: Iterable[str] | None = None, style: Style = "label",
                 placeholder: str = "[{TYPE}]") -> None:
        chosen = list(ENTITY_TYPES if entities is None else entities)
        unknown = sorted(set(chosen) - set(ENTITY_TYPES))
        if unknown:
            raise ValueError(f"unknown PII types {unknown}; expected some of: {', '.join(ENTITY_TYPES)}")
        if style not in STYLES:
            raise ValueError(f"redaction style {style!r}: expected one of {', '.join(STYLES)}")
        if "{TYPE}" not in placeholder and "{type}" not in placeholder and style != "mask":
            raise ValueError(f"placeholder {placeholder!r} must contain {{TYPE}} (or {{type}})")
        self.entities = tuple(t for t in ENTITY_TYPES if t in chosen)
        self.style = style
        self.placeholder = placeholder
        self._pseudonyms: dict[tuple[str, str], int] = {}
        self._next_index: Counter = Counter()

    def names(self, text: str) -> set[str]:
        """Full names (2+ words) the context rules find in ``text``: other mentions of them are redacted too."""
        if "person" not in self.entities:
            return set()
        return {n for n in (text[f.start:f.end] for f in _find_person(text)) if len(n.split()) >= 2}

    def find(self, text: str, known_names: Iterable[str] = ()) -> list[Finding]:
        """Non-overlapping findings in text order (on overlap the higher-priority type, then the longer, wins).

        A full name found by a context rule ("Mr. Jane Roe") is also found wherever else it occurs in the
        text, and so are ``known_names`` (names found elsewhere in the same record or conversation)."""
        candidates = [f for kind in self.entities for f in _FINDERS[kind](text) if f.end > f.start]
        if "person" in self.entities:
            names = set(known_names) | {text[f.start:f.end] for f in candidates if f.type == "person"}
            for name in sorted(n for n in names if len(n.split()) >= 2):
                for m in re.finditer(rf"(?<![\w.-]){re.escape(name)}(?![\w-])", text):
                    candidates.append(Finding(m.start(), m.end(), "person"))
        candidates.sort(key=lambda f: (_PRIORITY[f.type], -(f.end - f.start), f.start))
        taken: list[Finding] = []
        for finding in candidates:
            if all(finding.end <= t.start or finding.start >= t.end for t in taken):
                taken.append(finding)
        return sorted(taken, key=lambda f: f.start)

    def _replacement(self, finding: Finding, value: str) -> str:
        if self.style == "mask":
            return re.sub(r"\S", "*", value)
        label = finding.type.upper()
        if self.style == "indexed":
            key = (finding.type, " ".join(value.split()).lower())
            if key not in self._pseudonyms:
                self._next_index[finding.type] += 1
                self._pseudonyms[key] = self._next_index[finding.type]
            label = f"{label}_{self._pseudonyms[key]}"
        return self.placeholder.replace("{TYPE}", label).replace("{type}", label.lower())

    def redact(self, text: str, known_names: Iterable[str] = ()) -> RedactionResult:
        if not isinstance(text, str):
            raise TypeError(f"redact() takes text, got {type(text).__name__}")
        findings = self.find(text, known_names)
        if not findings:
            return RedactionResult(text)
        parts, last, counts = [], 0, Counter()
        for finding in findings:
            parts.append(text[last:finding.start])
            parts.append(self._replacement(finding, text[finding.start:finding.end]))
            last = finding.end
            counts[finding.type] += 1
        parts.append(text[last:])
        return RedactionResult("".join(parts), counts)

    def redact_value(self, value: Any, counts: Counter, in_text: bool = False, known_names: Iterable[str] = ()) -> Any:
        """Redact the free-text strings of a JSON-like value (record dicts: the keys in ``TEXT_KEYS``)."""
        if isinstance(value, str):
            if not in_text:
                return value
            result = self.redact(value, known_names)
            counts.update(result.counts)
            return result.text
        if isinstance(value, dict):
            return {k: self.redact_value(v, counts, in_text or k in TEXT_KEYS, known_names) for k, v in value.items()}
        if isinstance(value, list):
            return [self.redact_value(v, counts, in_text, known_names) for v in value]
        return value

    def _texts(self, value: Any, in_text: bool = False) -> Iterable[str]:
        if isinstance(value, str):
            if in_text:
                yield value
        elif isinstance(value, dict):
            for k, v in value.items():
                yield from self._texts(v, in_text or k in TEXT_KEYS)
        elif isinstance(value, list):
            for v in value:
                yield from self._texts(v, in_text)

    def redact_record(self, record: dict[str, Any]) -> tuple[dict[str, Any], Counter]:
        """A record dict (chat, preference pair, ranking, feedback) with its free text redacted, and the counts.

        Names found by a context rule anywhere in the record are redacted in all of its texts (the lawyer's
        "Ms. Maria Garcia" in an answer also removes "Employee Maria Garcia" from the prompt)."""
        names: set[str] = set()
        for text in self._texts(record):
            names |= self.names(text)
        counts: Counter = Counter()
        return self.redact_value(record, counts, known_names=names), counts


# --------------------------------------------------------------------------- reports


@dataclass
class RedactionReport:
    """Counts per file and type (never the values themselves): safe to write next to the data."""

    entities: tuple[str, ...] = ENTITY_TYPES
    style: str = "label"
    files: dict[str, dict[str, int]] = field(default_factory=dict)

    def add(self, name: str, counts: Counter | dict[str, int], records: int = 0, changed: int = 0,
            dropped: int = 0) -> None:
        entry = self.files.setdefault(name, {"records": 0, "records_changed": 0, "records_dropped": 0})
        entry["records"] += records
        entry["records_changed"] += changed
        entry["records_dropped"] += dropped
        for kind, n in counts.items():
            entry[kind] = entry.get(kind, 0) + int(n)

    def totals(self) -> dict[str, int]:
        total: Counter = Counter()
        for entry in self.files.values():
            total.update({k: v for k, v in entry.items()})
        return dict(sorted(total.items()))

    def as_dict(self) -> dict[str, Any]:
        return {"entities": list(self.entities), "style": self.style,
                "files": {name: dict(sorted(v.items())) for name, v in sorted(self.files.items())},
                "totals": self.totals()}


def redact_records(records: list[dict[str, Any]], redactor: Redactor, report: RedactionReport | None = None,
                   name: str = "records", validate: Any = None) -> list[dict[str, Any]]:
    """Redact record dicts; ``validate(record) -> bool`` drops records that no longer hold (counted as dropped)."""
    kept: list[dict[str, Any]] = []
    total: Counter = Counter()
    changed = dropped = 0
    for record in records:
        new, counts = redactor.redact_record(record)
        if counts:
            changed += 1
            total.update(counts)
        if validate is not None and counts and not validate(new):
            dropped += 1
            continue
        kept.append(new)
    if report is not None:
        report.add(name, total, records=len(records), changed=changed, dropped=dropped)
    return kept


# --------------------------------------------------------------------------- the data build


def _cuad_answers_hold(record: dict[str, Any]) -> bool:
    """After redaction an extraction answer must still be a verbatim span of its (redacted) excerpt."""
    from lexalign.data.prompts import excerpt_of

    meta = record.get("meta") or {}
    answers = meta.get("answers") or []
    if meta.get("source") != "cuad" or not answers:
        return True
    user = next((m["content"] for m in record["messages"] if m["role"] == "user"), "")
    try:
        excerpt = excerpt_of(user)
    except ValueError:
        return False
    return all(span in excerpt for span in answers)


def redact_build(sft: dict[str, list[Any]], rankings: dict[str, list[Any]], pairs: dict[str, list[Any]],
                 pretrain: str, entities: Iterable[str], style: Style = "label"
                 ) -> tuple[dict[str, list[Any]], dict[str, list[Any]], dict[str, list[Any]], str, RedactionReport]:
    """The data build's records and pretraining text with PII redacted, and the report (counts only).

    Records are re-validated with their schema after redaction; a record that no longer validates (a pair
    whose chosen and rejected became identical) or a CUAD extraction whose answer is no longer verbatim in
    its excerpt (a PII value cut by the answer span) is dropped and counted as ``records_dropped``. The
    ``meta.window`` offsets refer to the original contract; ``style: mask`` keeps lengths and so offsets.
    """
    from pydantic import ValidationError

    from lexalign.data.schemas import ChatRecord, PreferencePair, RankingRecord

    redactor = Redactor(entities, style)
    report = RedactionReport(entities=redactor.entities, style=style)

    def run(groups: dict[str, list[Any]], schema: Any, prefix: str, extra: Any = None) -> dict[str, list[Any]]:
        result = {}
        for split, records in groups.items():
            def valid(record: dict[str, Any]) -> bool:
                try:
                    schema.model_validate(record)
                except ValidationError:
                    return False
                return extra(record) if extra else True

            dicts = [r.model_dump(mode="json", exclude_none=True) for r in records]
            kept = redact_records(dicts, redactor, report, f"{prefix}_{split}.jsonl", validate=valid)
            result[split] = [schema.model_validate(r) for r in kept]
        return result

    sft = run(sft, ChatRecord, "sft", _cuad_answers_hold)
    rankings = run(rankings, RankingRecord, "acord_rankings")
    pairs = run(pairs, PreferencePair, "acord_pairs")
    redacted = redactor.redact(pretrain)
    report.add("pretrain_corpus.txt", redacted.counts, records=1, changed=int(redacted.changed))
    return sft, rankings, pairs, redacted.text, report
