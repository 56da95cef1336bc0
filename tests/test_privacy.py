"""PII redaction (data/redact.py): every type found and replaced, legal text left alone, the rate of findings
on shipped contract text, hypothesis-planted PII, the data-build hook and the chat-feedback export hook, and
recall on hand-written PII placed where the rules do not specifically look (tests/data/pii_recall*.jsonl)."""

from __future__ import annotations

import json
import random
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from lexalign.data.redact import ENTITY_TYPES, Redactor, RedactionReport, redact_records

REPO = Path(__file__).resolve().parent.parent
SHIPPED = REPO / "data" / "shipped"

# (type, planted value, sentence around it): each value must disappear and be counted once as its type.
PLANTED = [
    ("email", "jane.roe@roe-law.example.com", "Send notices by e-mail to {} with a copy to counsel."),
    ("phone", "(212) 555-0147", "The Licensee may be reached at {} during business hours."),
    ("phone", "+44 20 7946 0958", "Our London office answers on {} on weekdays."),
    ("phone", "415.555.0100", "Fax: {}"),
    ("ssn", "536-22-8154", "Employee social security number: {}."),
    ("ssn", "536228154", "SSN: {}"),
    ("ein", "81-4992583", "Supplier, EIN {}, is a Delaware corporation."),
    ("card", "4111 1111 1111 1111", "Charge the fees to the card {} each month."),
    ("card", "5500-0000-0000-0004", "Card on file: {}."),
    ("iban", "DE89 3704 0044 0532 0130 00", "Pay into IBAN {} within thirty (30) days."),
    ("iban", "GB82WEST12345698765432", "Wire to {} (Barclays)."),
    ("account", "000123456789", "Remit to Bank of Delaware, account no. {}."),
    ("account", "021000021", "ABA routing number {} applies."),
    ("address", "1600 Pennsylvania Avenue NW, Washington, DC 20500", "Notices go to {}."),
    ("address", "235 East 42nd Street, Suite 400, New York, NY 10017", "Buyer's office is at {}."),
    ("address", "P.O. Box 1234, Austin, TX 78701", "Mail payments to {}."),
    ("dob", "14 March 1987", "The Employee (born {}) joins the pension plan."),
    ("person", "John Q. Smith", "This letter was signed by Mr. {} on behalf of the Seller."),
    ("person", "Emily Watson-Brown", "Attention: {}\nFacsimile: none"),
    ("person", "Robert O'Neil", "By: /s/ {}\nTitle: Chief Executive Officer"),
    ("person", "Kenneth D. Moelis", "Name: {}\nTitle: President"),
]

# Contract text with numbers, dates, amounts, references and party names, but no personal data.
NO_PII = """\
This Master Services Agreement (the "Agreement") is entered into as of January 1, 2020 by and between Acme
Corporation, a Delaware corporation ("Customer"), and Beta Services LLC ("Provider").
1. Fees. Customer shall pay $1,250,000.00 (one million two hundred fifty thousand dollars) within thirty (30) days.
2. Term. The Term is 36 months from 2020-01-01 to 12/31/2022, renewable for 12-month periods.
3. Shares. Provider receives 1,000,000 shares of Common Stock at $4.25 per share (CUSIP 037833100).
4. See Section 12.3(b)(ii), Exhibit 10.1, Schedule 2.1(a), Rule 10b-5, Form 10-K and 15 U.S.C. § 78j(b).
5. Insurance of not less than $5,000,000 per occurrence; deductible of 2.5% or 250 basis points.
6. Patent Nos. 7,654,321 and 8,123,456; Application No. 14/702,412 filed Aug. 14, 2015 (EP 14702412.9).
7. Dr. Pepper Snapple Group products are excluded. The St. Louis facility ships 4,000 units at 10:30 a.m.
8. Governing Law. The laws of the State of New York govern; venue lies in New York County.
9. Notices shall be sent to the addresses set forth on the signature page, Attn: Legal Department.
10. By: Licensor. Title: Chief Financial Officer. Name of Agreement: Supply Agreement No. 2019-0042.
11. Version 2.4.1 of the Software, ISO 9001:2015 certified, order number 4500012345, invoice 2021-000173.
"""


@pytest.fixture(scope="module")
def redactor() -> Redactor:
    return Redactor()


@pytest.mark.parametrize("kind, value, sentence", PLANTED, ids=[f"{k}-{i}" for i, (k, _, _) in enumerate(PLANTED)])
def test_each_pii_type_is_found_and_replaced(redactor, kind, value, sentence) -> None:
    text = "The parties agree as follows. " + sentence.format(value) + " All other terms remain in force."
    result = redactor.redact(text)
    assert value not in result.text, result.text
    assert f"[{kind.upper()}]" in result.text
    assert result.counts[kind] == 1, result.counts
    assert result.text.startswith("The parties agree as follows. ")
    assert result.text.endswith(" All other terms remain in force.")


def test_legal_text_without_pii_is_untouched(redactor) -> None:
    from conftest import BUILTIN_CORPUS

    for text in (NO_PII, BUILTIN_CORPUS):
        result = redactor.redact(text)
        assert result.counts == Counter() and result.text == text, result.counts


def test_luhn_and_checksums_reject_lookalikes(redactor) -> None:
    lookalikes = [
        "Card 4111 1111 1111 1112 declined.",         # Luhn fails
        "Ref 232 416 587 0108 x 300",                  # Luhn passes by chance, but grouped like a phone
        "IBAN DE89 3704 0044 0532 0130 01",            # mod-97 fails
        "SSN 000-12-3456 and 666-12-3456",             # never-issued areas
        "EIN 00-1234567",                              # no such IRS campus prefix
        "Routing 021000022",                           # ABA checksum fails
        "By: Apollo Life Asset GP, LLC, its general partner",  # an organization, not a person
        "Attn: General Counsel",
    ]
    for text in lookalikes:
        assert redactor.redact(text).counts == Counter(), text


def test_styles_entity_choice_and_idempotence() -> None:
    text = "Mr. John Smith (jsmith@example.com) and Ms. Jane Roe (jroe@example.com); again Mr. John Smith."
    indexed = Redactor(style="indexed").redact(text).text
    assert indexed == ("Mr. [PERSON_1] ([EMAIL_1]) and Ms. [PERSON_2] ([EMAIL_2]); again Mr. [PERSON_1].")
    masked = Redactor(style="mask").redact(text).text
    assert len(masked) == len(text) and "jsmith" not in masked and masked.startswith("Mr. **** *****")
    only_email = Redactor(entities=["email"]).redact(text)
    assert only_email.counts == Counter({"email": 2}) and "John Smith" in only_email.text
    custom = Redactor(placeholder="<{type}>").redact(text).text
    assert "<email>" in custom and "<person>" in custom
    redactor = Redactor()
    once = redactor.redact(text).text
    assert redactor.redact(once).text == once  # placeholders are never found again
    with pytest.raises(ValueError, match="unknown PII types"):
        Redactor(entities=["email", "dna"])
    with pytest.raises(ValueError, match="style"):
        Redactor(style="blur")  # type: ignore[arg-type]


def test_records_report_counts_without_values(redactor) -> None:
    records = [
        {"messages": [{"role": "user", "content": "Call Mr. John Smith at (212) 555-0147."},
                      {"role": "assistant", "content": "Not present."}], "meta": {"doc_id": "jsmith@example.com"}},
        {"prompt": "Q?", "chosen": "Write to jroe@example.com.", "rejected": "No.", "meta": {"prompt_id": "p1"}},
        {"prompt": "Q?", "responses": ["fine", "also fine"], "ranks": [1, 2], "rationale": "SSN 536-22-8154 leaked"},
    ]
    report = RedactionReport()
    out = redact_records(records, redactor, report, "mixed.jsonl")
    assert out[0]["messages"][0]["content"] == "Call Mr. [PERSON] at [PHONE]."
    assert out[0]["meta"]["doc_id"] == "jsmith@example.com"  # ids and labels are not free text: kept
    assert out[1]["chosen"] == "Write to [EMAIL]." and out[2]["rationale"] == "SSN [SSN] leaked"
    data = report.as_dict()
    assert data["files"]["mixed.jsonl"] == {"records": 3, "records_changed": 3, "records_dropped": 0, "person": 1,
                                            "phone": 1, "email": 1, "ssn": 1}
    dumped = json.dumps(data)
    for value in ("John Smith", "555-0147", "jroe@example.com", "536-22-8154"):
        assert value not in dumped


def test_rate_of_findings_on_shipped_contract_text(redactor) -> None:
    """A fixed sample of shipped CUAD/CLAUDETTE prompts: how much text the redactor would change.

    These are public SEC filings and terms of service, so most findings are real contact data (notice
    addresses, signatories, phone numbers); docs/reliability.md reports a hand-labelled audit of the findings
    (false-positive rate). Here the share of characters replaced and of prompts touched is bounded, so a rule
    that starts eating ordinary contract language fails the suite.
    """
    records = [json.loads(line) for line in (SHIPPED / "sft_test.jsonl").read_text(encoding="utf-8").splitlines()]
    texts = [m["content"] for r in random.Random(0).sample(records, 300) for m in r["messages"] if m["role"] == "user"]
    chars = sum(len(t) for t in texts)
    found = [(t, f) for t in texts for f in redactor.find(t)]
    replaced = sum(f.end - f.start for _, f in found)
    touched = sum(1 for t in texts if redactor.find(t))
    kinds = Counter(f.type for _, f in found)
    print(f"\n{len(texts)} shipped prompts, {chars} chars: {len(found)} findings {dict(kinds)}, "
          f"{replaced / chars:.2%} of characters replaced, {touched / len(texts):.1%} of prompts touched")
    assert replaced / chars < 0.02
    assert touched / len(texts) < 0.25
    # No finding is an ordinary legal word or number: each holds a digit, an @, or capitalized name words.
    for text, f in found:
        value = text[f.start:f.end]
        assert any(c.isdigit() for c in value) or "@" in value or (f.type == "person" and value[:1].isupper()), value


# --------------------------------------------------------------------------- property-based: planted PII

AREA_CODES = ["212", "415", "312", "617", "202", "305", "713", "206", "404", "512"]
FIRST = ["John", "Maria", "Wei", "Fatima", "Olivia", "Kwame", "Anne-Marie", "Liam", "Sofia", "Hiroshi"]
LAST = ["Smith", "Garcia", "Chen", "Okafor", "Novak", "McKenzie", "O'Brien", "Lindqvist", "Haddad", "Tanaka"]
STREETS = ["Main", "Oak", "Market", "Lexington", "Von Karman", "Peachtree", "Elm"]
SUFFIXES = ["Street", "Avenue", "Road", "Blvd.", "Drive", "Lane", "Parkway"]
MONTHS = ["January", "February", "March", "April", "May", "June", "July", "August", "September", "October",
          "November", "December"]
FILLER = [
    "The Supplier shall deliver the Products within thirty (30) days of each Purchase Order.",
    "This Agreement is governed by the laws of the State of New York.",
    "Neither party may assign this Agreement without the prior written consent of the other party.",
    "The aggregate liability shall not exceed $1,000,000 in any calendar year.",
    "Section 4.2 survives termination for a period of five (5) years.",
]


def _luhn_complete(body: str) -> str:
    total = 0
    for i, ch in enumerate(reversed(body)):
        d = int(ch)
        if i % 2 == 0:
            d = d * 2 - 9 if d * 2 > 9 else d * 2
        total += d
    return body + str((10 - total % 10) % 10)


def _iban_de(bban: str) -> str:
    numeric = int(bban + "131400")  # "DE" -> 13 14, check digits 00
    return f"DE{98 - numeric % 97:02d}{bban}"


@st.composite
def pii(draw) -> tuple[str, str]:
    kind = draw(st.sampled_from(ENTITY_TYPES))
    if kind == "email":
        local = draw(st.from_regex(r"[a-z][a-z0-9._]{0,10}[a-z0-9]", fullmatch=True))
        value = f"{local}@{draw(st.sampled_from(['example.com', 'law-firm.co.uk', 'mail.example.org']))}"
    elif kind == "phone":
        area, exchange, line = (draw(st.sampled_from(AREA_CODES)), draw(st.integers(200, 999)),
                                draw(st.integers(0, 9999)))
        fmt = draw(st.sampled_from(["({a}) {e}-{l:04d}", "{a}-{e}-{l:04d}", "{a}.{e}.{l:04d}", "+1 {a} {e} {l:04d}"]))
        value = fmt.format(a=area, e=exchange, l=line)
    elif kind == "ssn":
        from stdnum.us import ssn

        value = draw(st.from_regex(r"[1-5][0-9]{2}-[0-9]{2}-[0-9]{4}", fullmatch=True)
                     .filter(lambda v: ssn.is_valid(v.replace("-", ""))))
    elif kind == "ein":
        value = f"{draw(st.sampled_from(['12', '20', '35', '45', '52', '81', '94']))}-{draw(st.integers(0, 9999999)):07d}"
    elif kind == "card":
        digits = _luhn_complete("4" + "".join(str(draw(st.integers(0, 9))) for _ in range(14)))
        sep = draw(st.sampled_from([" ", "-", ""]))
        value = sep.join(digits[i:i + 4] for i in range(0, 16, 4))
    elif kind == "iban":
        compact = _iban_de("".join(str(draw(st.integers(0, 9))) for _ in range(18)))
        value = " ".join(compact[i:i + 4] for i in range(0, len(compact), 4)) if draw(st.booleans()) else compact
    elif kind == "account":
        value = "".join(str(draw(st.integers(0, 9))) for _ in range(draw(st.integers(8, 14))))
    elif kind == "dob":
        day, month, year = draw(st.integers(1, 28)), draw(st.integers(1, 12)), draw(st.integers(1930, 2010))
        value = draw(st.sampled_from([f"{month:02d}/{day:02d}/{year}", f"{year}-{month:02d}-{day:02d}",
                                      f"{day} {MONTHS[month - 1]} {year}", f"{MONTHS[month - 1]} {day}, {year}"]))
    elif kind == "address":
        value = (f"{draw(st.integers(1, 99999))} {draw(st.sampled_from(STREETS))} {draw(st.sampled_from(SUFFIXES))}"
                 + draw(st.sampled_from(["", ", Suite 200", ", Springfield, IL 62701", ", Austin, Texas 78701"])))
    else:
        value = f"{draw(st.sampled_from(FIRST))} {draw(st.sampled_from(LAST))}"
    return kind, value


CONTEXT = {"account": "account no. {}", "person": "Mr. {}", "ssn": "SSN {}", "ein": "EIN {}", "dob": "date of birth: {}"}


@settings(max_examples=150, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])
@given(planted=st.lists(pii(), min_size=1, max_size=4), seed=st.integers(0, 2**16))
def test_planted_pii_never_survives_and_redaction_is_idempotent(planted, seed) -> None:
    rng = random.Random(seed)
    parts = [rng.choice(FILLER)]
    for kind, value in planted:
        parts.append(CONTEXT.get(kind, "{}").format(value) + ".")
        parts.append(rng.choice(FILLER))
    text = " ".join(parts)
    redactor = Redactor()
    result = redactor.redact(text)
    for kind, value in planted:
        assert value not in result.text, (kind, value, result.text)
    assert sum(result.counts.values()) >= len({v for _, v in planted})
    assert redactor.redact(result.text).text == result.text
    for sentence in FILLER:  # the surrounding contract language is kept verbatim
        if sentence in text:
            assert sentence in result.text


@settings(max_examples=200, deadline=None, database=None)
@given(text=st.text(max_size=400))
def test_any_text_is_redacted_without_error(text) -> None:
    result = Redactor(style="indexed").redact(text)
    assert isinstance(result.text, str)
    if not result.counts:
        assert result.text == text


# --------------------------------------------------------------------------- hooks: data build and feedback export

PLANT_ACORD = " Questions: Mr. Pat Q. Sample at pat.sample@example.com or (212) 555-0147."
PLANT_TOS = " Write to Dr. Alex Example at privacy@tos-example.com."
PLANT_CONTRACT = "\nNotices: Ms. Jane Roe, 1600 Pennsylvania Avenue NW, Washington, DC 20500. SSN 536-22-8154.\n"
PLANTED_VALUES = ["Pat Q. Sample", "pat.sample@example.com", "555-0147", "Alex Example", "privacy@tos-example.com",
                  "Jane Roe", "1600 Pennsylvania Avenue", "536-22-8154"]


@pytest.fixture(scope="module")
def pii_source(tmp_path_factory) -> Path:
    from lexalign.data.synthetic import write_synthetic_source

    root = write_synthetic_source(tmp_path_factory.mktemp("pii-corpora"))
    corpus = root / "acord" / "corpus.jsonl"
    items = [json.loads(line) for line in corpus.read_text().splitlines()]
    corpus.write_text("".join(json.dumps({**i, "text": i["text"] + PLANT_ACORD}) + "\n" for i in items))
    for file in (root / "claudette" / "sentences").iterdir():
        lines = file.read_text().splitlines()
        file.write_text("".join(line + (PLANT_TOS if i % 2 else "") + "\n" for i, line in enumerate(lines)))
    for file in (root / "cuad" / "contracts").iterdir():
        file.write_text(file.read_text() + PLANT_CONTRACT)  # appended: CUAD answer offsets stay valid
    return root


def _all_text(folder: Path) -> str:
    return "\n".join(p.read_text(encoding="utf-8") for p in sorted(folder.rglob("*")) if p.is_file())


def test_data_build_redacts_every_output_when_enabled(pii_source: Path, tmp_path: Path) -> None:
    from test_data_build import CONFIG, SMALL

    from lexalign.config import ConfigError
    from lexalign.data.build import run_build, verify_against

    plain = run_build(CONFIG, SMALL, source=pii_source, out=tmp_path / "plain")
    assert all(v in _all_text(plain) for v in PLANTED_VALUES[:6])  # the planted data reaches the outputs
    assert not (plain / "redaction_report.json").exists()
    out = run_build(CONFIG, SMALL + ["redact.enabled=true"], source=pii_source, out=tmp_path / "redacted")
    text = _all_text(out)
    leaked = [v for v in PLANTED_VALUES if v in text]
    assert not leaked, leaked
    report = json.loads((out / "redaction_report.json").read_text())
    totals = report["totals"]
    assert totals["person"] > 0 and totals["email"] > 0 and totals["phone"] > 0 and totals["address"] > 0
    assert report["files"]["pretrain_corpus.txt"]["ssn"] > 0
    assert set(report["files"]) >= {"sft_train.jsonl", "acord_rankings_train.jsonl", "acord_pairs_train.jsonl"}
    assert verify_against(out / "manifest.json") == []  # the report is an output with its hash in the manifest
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["config"]["redact"]["enabled"] is True and "redaction_report.json" in manifest["outputs"]
    with pytest.raises(ConfigError, match="redact.entities"):
        run_build(CONFIG, SMALL + ["redact.entities=[email, dna]"], source=pii_source, out=tmp_path / "bad")


def test_shipped_data_is_built_without_redaction_by_default() -> None:
    from lexalign.data.build import DataBuildConfig

    manifest = json.loads((SHIPPED / "manifest.json").read_text())
    assert DataBuildConfig().redact.enabled is False and manifest["config"]["redact"]["enabled"] is False
    assert not (SHIPPED / "redaction_report.json").exists()


def test_chat_feedback_is_redacted_before_it_becomes_training_data(tmp_path: Path) -> None:
    from lexalign.data.jsonl import read_jsonl
    from lexalign.data.schemas import PreferencePair
    from lexalign.data.store import open_store
    from lexalign.reward.prefs import export_preferences

    secret_prompt = [{"role": "system", "content": "You review contracts."},
                     {"role": "user", "content": "Excerpt: Employee Maria Garcia, SSN 536-22-8154, lives at "
                                                 "42 Elm Street, Springfield, IL 62701. Is there a non-compete?"}]
    with open_store(f"sqlite:///{tmp_path / 'fb.db'}") as store:
        store.add_feedback("lawyer1", secret_prompt, "Yes. Call Ms. Maria Garcia at (312) 555-0188.", -1,
                           better_answer="No non-compete. Contact maria.garcia@client.example.com for the schedule.")
        store.add_feedback("lawyer1", secret_prompt, "No.", 1)  # no better answer: no pair
        summary = export_preferences(store, tmp_path / "out", save_dataset=False, actor="admin1")
        raw_db = json.dumps(store.list_feedback(), default=str)
        audit = store.audit_events("export")[0]
    assert summary.feedback_pairs == 1
    text = (tmp_path / "out" / "feedback_pairs.jsonl").read_text()
    for value in ("Maria Garcia", "536-22-8154", "42 Elm Street", "555-0188", "maria.garcia@client.example.com"):
        assert value not in text and value not in (tmp_path / "out" / "export.json").read_text()
        assert value in raw_db  # the store keeps what the lawyer sent; only training data is redacted
    (pair,) = read_jsonl(tmp_path / "out" / "feedback_pairs.jsonl", PreferencePair)
    assert "[SSN]" in pair.prompt[-1].content and "[EMAIL]" in pair.chosen[0].content
    assert "[PHONE]" in pair.rejected[0].content and pair.meta["feedback_id"] >= 1
    report = json.loads((tmp_path / "out" / "export.json").read_text())["feedback"]
    assert report["pairs"] == 1 and report["redacted"] is True
    assert report["redaction"]["totals"]["ssn"] == 1 and report["redaction"]["totals"]["email"] == 1
    assert audit["actor"] == "admin1" and audit["detail"]["feedback_pairs"] == 1 and audit["detail"]["feedback_redacted"]
    with open_store(f"sqlite:///{tmp_path / 'fb.db'}") as store:  # the knob: redaction can be turned off
        export_preferences(store, tmp_path / "raw", save_dataset=False, redact_feedback=False)
    assert "536-22-8154" in (tmp_path / "raw" / "feedback_pairs.jsonl").read_text()


def test_names_without_context_are_a_documented_limit(redactor) -> None:
    """Person names are found only by context rules (no offline NER model is available): say so, and test it."""
    assert redactor.redact("Employee Maria Garcia agrees to the terms.").counts == Counter()
    record = {"prompt": "Employee Maria Garcia agrees to the terms.", "response": "Ask Ms. Maria Garcia first."}
    redacted, counts = redactor.redact_record(record)
    assert "Maria Garcia" not in json.dumps(redacted) and counts["person"] == 2  # found once, removed everywhere


# --------------------------------------------------------------------------- recall on PII the rules do not look for

# pii_recall.jsonl was written first and the rules of data/redact.py were then extended with it in view, so its
# "after" figures flatter the rules; pii_recall_fresh.jsonl was written after that change and not used to tune
# anything: its figures are the fairer estimate (not an independent one: it was written knowing the rules).
# Both hold negatives (legal text with no personal data).
RECALL_SET = Path(__file__).resolve().parent / "data" / "pii_recall.jsonl"
FRESH_SET = RECALL_SET.with_name("pii_recall_fresh.jsonl")
RECALL_CATEGORIES = ("name", "address", "phone", "email", "number", "dob")


def _covered(text: str, value: str, spans: list[tuple[int, int]]) -> tuple[bool, bool]:
    """(fully, partly) redacted: every / some non-space character of each occurrence of value lies in a finding.

    Counting a value only when all of it is covered keeps a half-redacted address ("[ADDRESS], London W2 4BH")
    from passing as found."""
    fully, partly, start = True, False, text.find(value)
    while start >= 0:
        chars = [i for i in range(start, start + len(value)) if not text[i].isspace()]
        inside = [any(a <= i < b for a, b in spans) for i in chars]
        fully, partly = fully and all(inside), partly or any(inside)
        start = text.find(value, start + 1)
    return fully, partly


def measure_recall(redactor: Redactor, path: Path = RECALL_SET) -> dict[str, Any]:
    """Per category: PII values, fully and partly redacted; on the negatives: findings and lines touched; on all
    lines: the values marked ``keep`` (company names next to PII) that were redacted anyway."""
    rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    stats: dict[str, Counter] = {c: Counter() for c in (*RECALL_CATEGORIES, "negative")}
    missed: list[tuple[str, str]] = []
    wrong: list[str] = []
    for row in rows:
        text, counts = row["text"], stats[row["category"]]
        spans = [(f.start, f.end) for f in redactor.find(text)]
        counts["lines"] += 1
        for value in row["pii"]:
            fully, partly = _covered(text, value, spans)
            counts["values"] += 1
            counts["found"] += fully
            counts["partly"] += partly and not fully
            if not fully:
                missed.append((row["category"], value))
        if row["category"] == "negative":
            counts["findings"] += len(spans)
            counts["touched"] += bool(spans)
            wrong += [text[a:b] for a, b in spans]
        kept_wrongly = [v for v in row.get("keep", []) if _covered(text, v, spans)[1]]
        counts["keep_redacted"] += len(kept_wrongly)
        wrong += kept_wrongly
    total = Counter()
    for c in RECALL_CATEGORIES:
        total.update(stats[c])
    return {"stats": stats, "total": total, "missed": missed, "wrong": wrong}


def recall_table(measured: dict[str, Any]) -> str:
    stats, total = measured["stats"], measured["total"]
    lines = ["| category | lines | PII values | fully redacted | partly | recall |", "|---|---|---|---|---|---|"]
    for name, c in [*((c, stats[c]) for c in RECALL_CATEGORIES), ("all", total)]:
        lines.append(f"| {name} | {c['lines']} | {c['values']} | {c['found']} | {c['partly']} | "
                     f"{c['found'] / c['values']:.0%} |")
    neg = stats["negative"]
    lines.append(f"\nnegatives: {neg['lines']} lines, {neg['findings']} findings (false positives) on "
                 f"{neg['touched']} lines; company names next to PII redacted: "
                 f"{sum(s['keep_redacted'] for s in stats.values())}")
    return "\n".join(lines)


# Floors: the measured recall (docs/reliability.md) rounded down to 0.05, so a rule change that loses PII fails.
RECALL_FLOORS = {
    RECALL_SET: {"name": 0.40, "address": 0.90, "phone": 0.85, "email": 0.85, "number": 0.70, "dob": 0.80, "all": 0.75},
    FRESH_SET: {"name": 0.35, "address": 0.75, "phone": 0.80, "email": 0.65, "number": 0.75, "dob": 0.30, "all": 0.60},
}


@pytest.mark.parametrize("path", [RECALL_SET, FRESH_SET], ids=["tuned-on", "fresh"])
def test_recall_on_pii_outside_the_rules_contexts(redactor, path: Path) -> None:
    """Hand-written contract and chat lines whose PII sits where no rule specifically looks (names without a
    title, addresses in prose, disguised e-mails, unlabelled numbers, dates of birth), and legal text that must
    stay untouched. Prints the recall table; the planted-PII tests above only show the rules find what they
    were written for."""
    measured = measure_recall(redactor, path)
    print(f"\nPII recall on {path.relative_to(REPO)}:\n{recall_table(measured)}")
    print("missed: " + "; ".join(f"{c}: {v!r}" for c, v in measured["missed"]))
    stats, total, floors = measured["stats"], measured["total"], RECALL_FLOORS[path]
    for category in RECALL_CATEGORIES:
        assert stats[category]["found"] / stats[category]["values"] >= floors[category], category
    assert total["found"] / total["values"] >= floors["all"]
    assert not measured["wrong"], f"redacted but not personal data: {measured['wrong']}"
    assert stats["negative"]["findings"] == 0 and sum(s["keep_redacted"] for s in stats.values()) == 0
