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
| email     | [EMAIL]     | RFC-5322-ish pattern (local@domain.tld); disguised forms "jane [at] example [dot] com", "jane(at)example.com", "jane dot doe at example dot com" (known top-level domain) |
| phone     | [PHONE]     | Google's libphonenumber (``phonenumbers.PhoneNumberMatcher``, leniency VALID): only numbers that are valid for their country; US default region, ``+CC`` and ``00CC`` numbers anywhere; national formats of GB/DE/FR/IN/AU after a phone word ("mobile", "reach me on", "my number is") |
| ssn       | [SSN]       | US SSN ``ddd-dd-dddd`` or ``ddd dd dddd`` (or 9 digits right after "SSN"/"social security"), validated with ``python-stdnum`` (no 000/666/9xx area, no 00 group, no 0000 serial) |
| ein       | [EIN]       | US EIN ``dd-ddddddd`` with a valid IRS campus prefix (``python-stdnum``)             |
| card      | [CARD]      | 13-19 digits (spaces/dashes allowed) with a card-network prefix AND a valid Luhn check |
| iban      | [IBAN]      | country code + check digits + BBAN in any letter case, validated by ``python-stdnum`` (country length and mod-97) |
| account   | [ACCOUNT]   | 6-20 digits after "account/acct/a/c/checking/savings (no./number/#)" or "routing/ABA" (ABA checksum) |
| address   | [ADDRESS]   | US-style street addresses: number + capitalized street name + street suffix (Street, Ave., Close, Mews...), optional unit, city, state and ZIP, not after "Section"/"Clause"/"Schedule"...; "P.O. Box N"; "Hauptstraße 12"-style and "12 rue de Rivoli"-style European streets; UK and Canadian postcodes after a town |
| dob       | [DOB]       | a date after "born", "date of birth", "birth date", "DOB", "d.o.b." (other dates are kept) |
| person    | [PERSON]    | context rules only (see below)                                                       |

**Person names.** No library on the package index here can find person names offline: spaCy does not publish
its pretrained pipelines (``en_core_web_*``) there (only third parties' re-uploads of unknown provenance,
not used), Presidio's PERSON recognizer is spaCy NER (run offline on a blank spaCy pipeline it found no name
and no address in the recall sets, and its pattern recognizers cover the structured types above, with dates
of agreements taken as DATE_TIME), ``nameparser`` splits a string already known to be a
name, and ``names-dataset`` is a multi-GB first/last-name lookup that would flag ordinary words ("Will",
"Grant", "Bill") in legal text. So names are found by conservative context rules: an honorific
(Mr./Mrs./Ms./Miss/Dr./Prof./Hon./Judge/Justice) followed by 1-3 capitalized name words or initials, a
``/s/`` electronic signature, and signature/notice-block labels with a colon ("By:", "Name:", "Print Name:",
"Attn:"/"Attention:", "Signed:", "Signature:", "Witness:") followed by 2-4 name words, and 2-3 name words in
places where only a person's name stands: "my name is"/"I am"/"I'm", "Dear", a letter's closing ("Sincerely,"
or "Regards," and a line break), "the Employee, <name>," / "the Executive, <name>,", "in the presence of", and
"<name>, an individual" / "a natural person"; a match that holds or runs into an organization word (LLC, GP,
Company, Services...) is not a person. A full name found this way is also redacted wherever else it occurs in
the same text or record. Other names in running text ("Employee Maria Garcia agrees...", "send it to Priya
Raghunathan") are NOT found: recall on names is limited, by design, to keep legal text (party names, defined
terms, places) intact. Company names are not personal data and are left alone. Measured recall on PII outside
these contexts: ``tests/test_privacy.py::test_recall_on_pii_outside_the_rules_contexts`` and
docs/reliability.md.

``dob`` is not in the data build's default list of types (``redact.entities`` in the data config): add it
there to redact dates of birth in a build; ``Redactor()`` (chat feedback export) uses every type.

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
from typing import Any, Iterable, Iterator, Literal

ENTITY_TYPES: tuple[str, ...] = ("email", "phone", "ssn", "ein", "card", "iban", "account", "address", "dob",
                                  "person")
Style = Literal["label", "indexed", "mask"]
STYLES = ("label", "indexed", "mask")

# When two findings overlap, the type listed first wins (an IBAN holds digit runs a phone matcher could take).
_PRIORITY = {name: i for i, name in enumerate(("email", "iban", "card", "ssn", "ein", "account", "dob", "phone",
                                                "address", "person"))}

# Keys of record dicts whose (nested) strings are free text to redact. Ids, labels, offsets and other meta
# values are kept as they are.
TEXT_KEYS = frozenset({"content", "prompt", "chosen", "rejected", "responses", "rationale", "answers", "excerpt",
                       "question", "response", "better_answer", "text", "completion"})


# --------------------------------------------------------------------------- patterns

_EMAIL = re.compile(r"(?<![\w.+-])[A-Za-z0-9][A-Za-z0-9._%+-]{0,63}@(?:[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?\.)+"
                    r"[A-Za-z]{2,24}(?![\w-])")
# Addresses written so that scrapers miss them are still someone's address: "jane [at] example [dot] com",
# "jane(at)example(dot)com", and spelled out, "jane dot doe at example dot com" (this one only with a known
# top-level domain at the end, so prose with "at" in it is left alone).
_AT, _DOT = r"\s*[\[({<]\s*at\s*[\])}>]\s*", r"\s*[\[({<]\s*dot\s*[\])}>]\s*"
_EMAIL_BRACKETED = re.compile(
    rf"(?<![\w.+-])[A-Za-z0-9][\w.%+-]*(?:{_DOT}[\w%+-]+)*{_AT}[A-Za-z0-9-]+(?:(?:{_DOT}|\.)[A-Za-z0-9-]+)*"
    rf"(?:{_DOT}|\.)[A-Za-z]{{2,24}}(?![\w-])", re.IGNORECASE)
_AT_BRACKETED = re.compile(_AT, re.IGNORECASE)
_TLDS = "com|org|net|edu|gov|io|co|uk|de|fr|es|it|nl|eu|ch|be|se|no|dk|fi|ie|pl|pt|info|biz|me|us|ca|au|in|jp|br|mx"
_EMAIL_SPELLED = re.compile(rf"\b[A-Za-z0-9][\w.+-]*(?:\s+dot\s+[\w+-]+)*\s+at\s+[A-Za-z0-9-]+"
                            rf"(?:\s+dot\s+[A-Za-z0-9-]+)*\s+dot\s+(?:{_TLDS})\b", re.IGNORECASE)
_SSN = re.compile(r"(?<![\w-])(\d{3})-(\d{2})-(\d{4})(?![\w-])")
# Grouped with spaces ("536 22 8154"); not when the groups are part of a longer run of digit groups.
_SSN_SPACED = re.compile(r"(?<![\w.,/-])(?<!\d )(\d{3}) (\d{2}) (\d{4})(?![\w-])(?! \d)")
_SSN_CONTEXT = re.compile(r"(?:\bSSN|\bsocial\s+security\s+(?:number|no\.?|#))\s*[:#]?\s*(\d{3}[ -]?\d{2}[ -]?\d{4})(?![\w-])",
                          re.IGNORECASE)
_EIN = re.compile(r"(?<![\w-])(\d{2})-(\d{7})(?![\w-])")
_CARD = re.compile(r"(?<![\w-])(?:\d[ -]?){12,18}\d(?![\w-])")
_CARD_PREFIX = re.compile(r"^(?:4|5[1-5]|2[2-7]|3[47]|6(?:011|5|4[4-9])|3(?:0[0-5]|[68]))")
# Any letter case ("fr76 3000 6000 ..."): the country length and mod-97 check keep words out.
_IBAN = re.compile(r"(?<![A-Za-z0-9])([A-Za-z]{2}\d{2}(?: ?[A-Za-z0-9]{1,4}){3,8})(?![A-Za-z0-9])")
_ACCOUNT = re.compile(
    r"\b(?:(?:bank\s+|checking\s+|savings\s+)?account|acct\.?|a/c|checking|savings)"
    r"\s*(?:no\.?|number|num\.?|#)?\s*[:#]?\s*(\d[\d -]{4,22}\d)(?![\w-])"
    r"|\b(?:routing|ABA)\s*(?:transit\s+)?(?:no\.?|number|#)?\s*[:#]?\s*(\d{9})(?![\w-])",
    re.IGNORECASE)

_NANP = re.compile(r"^(?:\+?1[ .-]?)?(?:\(\d{3}\)[ .-]?|\d{3}[ ./-])\d{3}[ .-]\d{4}(?!\d)")  # "x204" may follow
_PHONE_WORDS = re.compile(r"(?:tel(?:ephone)?|phone|fax|facsimile|telecopy|telecopier|mobile|cell|call|dial|"
                          r"hotline|sms|text|whatsapp)\b\.?\s*(?:no\.?|number|#)?\s*[:.]?\s*$"
                          r"|\b(?:reach|contact|ring|call|text|phone)\s+(?:me|us|him|her|them)\s+(?:on|at)\s*:?\s*$"
                          r"|\b(?:(?:my|his|her|their|your|our)\s+(?:phone\s+|mobile\s+|cell\s+)?number"
                          r"|phone|mobile|cell)\s+is\s*:?\s*$", re.IGNORECASE)
# "0049 30 901820": 00 is the international prefix dialled in most countries; read as "+49 30 901820".
_IDD_00 = re.compile(r"(?<![\w+.,/-])(?<!\d[ ./-])00(?=[1-9]\d)")  # not inside "+1 617 275 0039"
# A number in national format ("07911 123456", "020 7946 0112") belongs to no region the text names; these are
# tried, after a phone word only, for the countries whose numbers appear most in the contracts and chats seen.
_NATIONAL_REGIONS = ("GB", "DE", "FR", "IN", "AU")
_STREET_SUFFIX = (r"(?:Street|St|Avenue|Ave|Road|Rd|Boulevard|Blvd|Drive|Dr|Lane|Ln|Way|Court|Ct|Place|Pl|Parkway|Pkwy|"
                  r"Highway|Hwy|Terrace|Ter|Circle|Cir|Square|Sq|Plaza|Trail|Trl|Turnpike|Tpke|Alley|Row|Pike|Freeway|"
                  r"Close|Crescent|Mews|Grove|Gardens|Loop)")
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
# "Clause 9 Place of Delivery", "Section 5 Court Approval": a numbered heading, not a house number.
_REFERENCE_BEFORE = re.compile(r"\b(?:Sections?|Clauses?|Articles?|Schedules?|Exhibits?|Annex(?:es)?|Appendix|Parts?|"
                               r"Paragraphs?|Items?|Chapters?|Rules?)\s*$", re.IGNORECASE)
# A UK or Canadian postcode after a town ("London W2 4BH", "Nova Scotia B3J 3R7"); the letters allowed in
# each position keep references like "A1 2BC" rare, and the town in front keeps codes in tables out.
_POSTCODE = re.compile(r"(?<![\w-])(?:[A-Z]{1,2}\d[A-Z\d]?[ \t]\d[ABD-HJLNP-UW-Z]{2}"
                       r"|[ABCEGHJ-NPRSTVXY]\d[ABCEGHJ-NPRSTV-Z][ \t]\d[ABCEGHJ-NPRSTV-Z]\d)(?![\w-])")
_TOWN_BEFORE = re.compile(r"\b[A-Z][a-z]+,?[ \t]+$")

_UP = "A-Z\u00c0-\u00d6\u00d8-\u00de"      # upper-case Latin letters (with accents)
_LO = "a-z\u00df-\u00f6\u00f8-\u00ff"      # lower-case Latin letters (with accents)
# European street addresses, which put the street type where the US suffix rule cannot see it: German-style
# compounds with the number after ("Hauptstraße 12"), and French, Spanish, Italian and Portuguese street types
# with the number before ("12 rue de Rivoli", "61 Calle Mayor"). "via" is left out in lower case (English).
_STREET_DE = re.compile(rf"\b[{_UP}][{_LO}]+(?:straße|strasse|str\.|weg|gasse|allee|platz)[ \t]+\d{{1,4}}[a-z]?\b")
_STREET_DE_WORDS = ("straße", "strasse", "str.", "weg", "gasse", "allee", "platz")  # cheap test before the pattern
_STREET_ROMANCE = re.compile(
    rf"(?<![\w$.,-])\d{{1,4}}(?:[ \t]?(?:bis|ter))?,?[ \t]+(?:rue|Rue|boulevard|chemin|Chemin|quai|Quai|impasse|"
    rf"Impasse|allée|Allée|calle|Calle|avenida|Avenida|paseo|Paseo|Via|Viale|viale|Piazza|piazza|Corso|rua|Rua)[ \t]+"
    rf"(?:(?:de|du|des|del|della|di|da|do|dos|la|le|las|los)[ \t]+|[dl]['\u2019])*"
    rf"[{_UP}][{_LO}]+(?:['\u2019-][{_UP}]?[{_LO}]+)*(?:[ \t]+[{_UP}][{_LO}]+(?:['\u2019-][{_UP}]?[{_LO}]+)*){{0,2}}")

_NAME_WORD = (rf"(?:O['\u2019][{_UP}][{_LO}]+|[{_UP}][{_LO}]+(?:['\u2019-]?[{_UP}][{_LO}]+)?(?:-[{_LO}]+)?"
              rf"|[{_UP}]\.|[{_UP}]{{2,}}(?:['\u2019-][{_UP}]+)?)")
_HONORIFIC = re.compile(rf"\b(?:Mr|Mrs|Ms|Mx|Miss|Dr|Prof|Hon|Judge|Justice)\.?[ \t]+((?:{_NAME_WORD}[ \t]+){{0,2}}{_NAME_WORD})")
_SIGNATURE = re.compile(rf"/s/[ \t]*((?:{_NAME_WORD}[ \t]+){{0,3}}{_NAME_WORD})")
# Signature and notice blocks: the label and its colon, then the name ("Name: Jane Q. Doe", "Attn: Robert O'Neil").
_LABELLED = re.compile(
    rf"\b(?:By|Name|Print(?:ed)?\s+Name|Attn|Attention|Signed|Signature|Witness)[ \t]*:[ \t]*(?:\n[ \t]*)?"
    rf"((?:{_NAME_WORD}[ \t]+){{1,3}}{_NAME_WORD})")
# Contexts where only a person's name stands, so the name needs no title or label: a self-introduction in a
# chat, a letter's salutation and closing, the recital of a contract with an individual, the employee or
# executive named in apposition, an attestation's witnesses. Each takes 2-3 name words.
_NAME = rf"((?:{_NAME_WORD}[ \t]+){{1,2}}{_NAME_WORD})"
_INTRODUCED = re.compile(rf"(?i:\bmy[ \t]+name[ \t]+is|\bI[ \t]+am|\bI['\u2019]m)[ \t]+{_NAME}")
_SALUTATION = re.compile(rf"\bDear[ \t]+{_NAME}")
_CLOSING = re.compile(rf"(?i:\b(?:yours[ \t]+)?(?:sincerely|faithfully|truly)|\b(?:best|kind|warm)[ \t]+regards|"
                      rf"\bregards|\bbest[ \t]+wishes|\bmany[ \t]+thanks|\brespectfully)[ \t]*,?[ \t]*\n[ \t]*{_NAME}")
_APPOSITION = re.compile(rf"\b(?:Employee|Executive|[Dd]ecedent|[Dd]eceased|[Tt]estator)[ \t]*,[ \t]*{_NAME}[ \t]*,")
_WITNESSES = re.compile(rf"(?i:\bin[ \t]+the[ \t]+presence[ \t]+of)[ \t]*:?[ \t]*(?:\n[ \t]*)?{_NAME}"
                        rf"(?:[ \t]*(?:,|and)[ \t]+{_NAME})?")
# Here the context follows the name ("Daniel Okonkwo, an individual residing in Lagos"): the context is found
# first and the name looked for just before it (a name pattern tried at every position is slow).
_INDIVIDUAL = re.compile(r"[ \t]*,?[ \t]+(?:an[ \t]+individual|a[ \t]+natural[ \t]+person)\b")
_NAME_AT_END = re.compile(rf"(?<![\w'\u2019-]){_NAME}$")

# Dates of birth: a date after "born", "date of birth", "DOB"... (a date alone, such as an agreement's, is kept).
_MONTHS = (r"(?:Jan(?:uary)?|Feb(?:ruary)?|Mar(?:ch)?|Apr(?:il)?|May|June?|July?|Aug(?:ust)?|Sep(?:t(?:ember)?)?|"
           r"Oct(?:ober)?|Nov(?:ember)?|Dec(?:ember)?)\.?")
_DATE = (rf"(?:\d{{1,2}}[./-]\d{{1,2}}[./-](?:\d{{4}}|\d{{2}})|\d{{4}}-\d{{2}}-\d{{2}}"
         rf"|\d{{1,2}}(?:st|nd|rd|th)?\s+(?:of\s+)?{_MONTHS},?\s+\d{{4}}|{_MONTHS}\s+\d{{1,2}}(?:st|nd|rd|th)?,?\s+\d{{4}})")
_DOB = re.compile(rf"(?i:\bborn(?:\s+on)?|\bdate\s+of\s+birth|\bbirth\s*date|\bDOB\b|\bd\.o\.b\.?)"
                  rf"(?:\s+(?:is|was))?\s*[:\u2013-]?\s*({_DATE})(?![\w/-])")

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
    Between Hi Hello Dear Thanks Regards Sincerely Notary Public Witnesses Not
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
    lowered = text.lower()
    patterns = [_EMAIL] if "@" in text else []
    if "at" in lowered and "dot" in lowered or _AT_BRACKETED.search(text):
        patterns += [_EMAIL_BRACKETED, _EMAIL_SPELLED]
    for pattern in patterns:
        for m in pattern.finditer(text):
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

    # "00" becomes " +" (same length, so offsets hold); the matcher then reads the number as international.
    idd = {m.start() for m in _IDD_00.finditer(text)}
    scan = _IDD_00.sub(" +", text) if idd else text
    try:
        for match in PhoneNumberMatcher(scan, "US", leniency=Leniency.VALID):
            start = match.start - 1 if match.start - 1 in idd else match.start
            if start < match.start or _phone_shaped(match.raw_string, text[max(0, start - 30):start]):
                yield Finding(start, match.end, "phone")
        if any(_PHONE_WORDS.search(text[max(0, m.start() - 30):m.start()]) for m in re.finditer(r"(?<!\d)0\d", text)):
            for region in _NATIONAL_REGIONS:
                for match in PhoneNumberMatcher(text, region, leniency=Leniency.VALID):
                    before = text[max(0, match.start - 30):match.start]
                    if match.raw_string.startswith("0") and _PHONE_WORDS.search(before):
                        yield Finding(match.start, match.end, "phone")
    except phonenumbers.NumberParseException:  # pragma: no cover - the matcher skips unparsable candidates
        return


def _find_ssn(text: str) -> Iterable[Finding]:
    for m in _SSN.finditer(text):
        if _ssn_ok(m.group(1) + m.group(2) + m.group(3)):
            yield Finding(m.start(), m.end(), "ssn")
    for m in _SSN_SPACED.finditer(text):
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
        if _REFERENCE_BEFORE.search(text[max(0, m.start() - 15):m.start()]):
            continue
        value = m.group(0).rstrip()
        end = m.start() + len(value)
        yield Finding(m.start(), end, "address")
    lowered = text.lower()
    german = any(w in lowered for w in _STREET_DE_WORDS)
    for pattern in (_STREET_DE, _STREET_ROMANCE) if german else (_STREET_ROMANCE,):
        for m in pattern.finditer(text):
            if not _REFERENCE_BEFORE.search(text[max(0, m.start() - 15):m.start()]):
                yield Finding(m.start(), m.end(), "address")
    for m in _POSTCODE.finditer(text):
        if _TOWN_BEFORE.search(text[max(0, m.start() - 40):m.start()]):
            yield Finding(m.start(), m.end(), "address")


def _find_dob(text: str) -> Iterable[Finding]:
    for m in _DOB.finditer(text):
        yield Finding(m.start(1), m.end(1), "dob")


def _name_candidates(text: str, pattern: re.Pattern[str]) -> Iterator[tuple[int, str]]:
    """(offset, words) of each name group the pattern finds; for _INDIVIDUAL the words just before its match.
    The words may run on past the name ("Jane Roe Employee Prudential Bank"): _looks_like_name cuts them."""
    for m in pattern.finditer(text):
        if pattern is _INDIVIDUAL:
            before = _NAME_AT_END.search(text, max(0, m.start() - 80), m.start())
            if before is not None:
                yield before.start(1), before.group(1)
            continue
        for group in range(1, (m.lastindex or 1) + 1):
            if m.group(group) is not None:
                yield m.start(group), m.group(group)


# (pattern, fewest name words, words of which one must be in the lower-cased text): a title says "person" even
# before a surname alone; the other contexts need a full name, so "By: Licensor", "Attn: Legal" or "Dear
# Customer" stay. The words are a cheap test that lets most texts skip a pattern.
_PERSON_RULES: tuple[tuple[re.Pattern[str], int, tuple[str, ...]], ...] = (
    (_HONORIFIC, 1, ()), (_SIGNATURE, 1, ("/s/",)), (_LABELLED, 2, (":",)),
    (_INTRODUCED, 2, ("name is", "i am", "i'm", "i\u2019m")), (_SALUTATION, 2, ("dear",)),
    (_CLOSING, 2, ("sincerely", "faithfully", "truly", "regards", "wishes", "thanks", "respectfully")),
    (_APPOSITION, 2, ("employee", "executive", "decedent", "deceased", "testator")), (_WITNESSES, 2, ("presence of",)),
    (_INDIVIDUAL, 2, ("individual", "natural person")))


def _find_person(text: str) -> Iterable[Finding]:
    lowered = text.lower()
    for pattern, fewest, words_needed in _PERSON_RULES:
        if words_needed and not any(w in lowered for w in words_needed):
            continue
        for start, words in _name_candidates(text, pattern):
            if pattern is _INDIVIDUAL:  # the match may start at a word before the name ("Between John Roe")
                kept = [w for w in re.finditer(r"\S+", words) if w.group().strip(".").lower() not in _NOT_NAMES]
                if not kept:
                    continue
                start, words = start + kept[0].start(), words[kept[0].start():]
            name = _looks_like_name(words)
            if name is None:
                continue
            end, matched_end = start + len(name), start + len(words)
            following = re.split(r"[,;:()\n]", text[matched_end:matched_end + 40], maxsplit=1)[0].split()[:2]
            if any(w.strip(".").lower() in _ORG_WORDS for w in following):
                continue  # "By: MPM Oncology Impact Management GP": the words run on into an organization
            if len(name.split()) < fewest:
                continue
            yield Finding(start, end, "person")


_FINDERS = {"email": _find_email, "phone": _find_phone, "ssn": _find_ssn, "ein": _find_ein, "card": _find_card,
            "iban": _find_iban, "account": _find_account, "address": _find_address, "dob": _find_dob,
            "person": _find_person}


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
