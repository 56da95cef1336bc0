"""A miniature, synthetic copy of the corpora folder (same layout and quirks as ../shared/data).

Tests (here and in other stages) build datasets from it without the real corpora:

    from lexalign.data.synthetic import write_synthetic_source
    write_synthetic_source(tmp_path / "corpora")
    run_build(None, ["cuad.window_chars=400", ...], source=tmp_path / "corpora", out=tmp_path / "out")

It reproduces the formats the builders must cope with: CUAD's CSV with a BOM, "Category: " prefixes and
non-breaking spaces; SQuAD-style answers with character offsets; CLAUDETTE's parallel sentence/tag files
with levels and the ``countrym`` marker; ACORD's qrels TSV with CSV-quoted query ids and 0-4 scores.
All text is invented; it is deterministic for a given seed.
"""

from __future__ import annotations

import csv
import io
import json
import random
from pathlib import Path

CATEGORIES = [  # name, description, answer format, group
    ("Document Name", "The name of the contract", "Contract Name", "-"),
    ("Parties", "The two or more parties who signed the contract", "Entity or individual names", "-"),
    ("Agreement Date", "The date of the contract", "Date (mm/dd/yyyy)", "1"),
    ("Governing Law", "Which state/country's law governs the interpretation of the contract?",
     "Name of a US State / non-US Province, Country", "-"),
    ("Non-Compete", "Is there a restriction on the ability of a party to compete with the counterparty?\xa0", "Yes/No", "2"),
    ("Audit Rights", "Does a party have the right to\xa0 audit the books, records, or physical locations of the counterparty?",
     "Yes/No", "5"),
    ("Insurance", "Is there a requirement for insurance that must be maintained by one party?", "Yes/No", "-"),
]
STATES = ["New York", "Delaware", "California", "Texas", "Ontario, Canada"]
COMPANIES = ["Acme Corp.", "Beta Holdings LLC", "Cobalt Systems, Inc.", "Delta Foods Ltd.", "Ember Media Group",
             "Falcon Logistics Inc.", "Garnet Pharma AG", "Harbor Energy LP"]
TITLES = ["DISTRIBUTION AGREEMENT", "LICENSE AGREEMENT", "SUPPLY AGREEMENT", "SERVICES AGREEMENT"]
MONTHS = ["January", "February", "March", "April", "May", "June", "July", "August", "September", "October",
          "November", "December"]
FILLER = [
    "Each party shall perform its obligations under this Agreement in a professional and workmanlike manner.",
    "All notices under this Agreement shall be in writing and delivered by hand or by registered mail.",
    "The headings in this Agreement are for convenience only and do not affect its interpretation.",
    "This Agreement may be executed in counterparts, each of which shall be deemed an original.",
    "Prices for the Products are set out in Exhibit A and are exclusive of applicable taxes.",
    "The Distributor shall use commercially reasonable efforts to promote the Products in the Territory.",
    "Payment is due within thirty (30) days of the date of each invoice.",
    "Neither party shall be liable for delays caused by events beyond its reasonable control.",
    "The parties shall meet quarterly to review the forecast and the marketing plan.",
    "Any amendment to this Agreement must be in writing and signed by both parties.",
    "The Supplier shall deliver the Products to the delivery address stated in the purchase order.",
    "Confidential Information shall be used solely for the purposes of this Agreement.",
]
CLAUSES = {
    "Non-Compete": [
        "During the Term, the Distributor shall not manufacture, sell or promote any product that competes with the Products.",
        "For two (2) years after termination, {a} shall not engage in any business competing with {b} in the Territory.",
    ],
    "Audit Rights": [
        "{b} may, upon ten (10) days' notice, audit the books and records of {a} relating to this Agreement.",
        "{a} shall keep accurate records and permit {b} or its auditors to inspect them once per calendar year.",
    ],
    "Insurance": [
        "{a} shall maintain commercial general liability insurance of at least $1,000,000 per occurrence.",
        "Each party shall carry product liability insurance naming the other party as an additional insured.",
    ],
}

TOS_FAIR = [
    "Thanks for using our services.",
    "These terms describe how you may use our website and apps.",
    "You can contact our support team at any time through the help centre.",
    "We provide the services in many languages and regions around the world.",
    "You must keep your password confidential and tell us about any unauthorised use.",
    "Some features may be offered only to users who have verified their email address.",
    "We publish a summary of changes to these terms on our blog.",
    "Your content remains yours and you keep all ownership rights in it.",
    "You may download a copy of your data from your account settings.",
    "Our services include both free and paid features described on the pricing page.",
]
TOS_UNFAIR = [  # sentence, tags
    ("We may terminate your account at any time for any reason without notice.", "ter2"),
    ("We are not liable for any indirect or consequential damages arising from your use of the services.", "ltd2"),
    ("We may change these terms at any time at our sole discretion.", "ch2"),
    ("By using the services you agree to be bound by these terms.", "use2"),
    ("Any dispute shall be resolved by binding arbitration on an individual basis.", "a2"),
    ("These terms are governed by the laws of the State of California.", "law2"),
    ("You agree that the courts of Dublin, Ireland have exclusive jurisdiction.", "j3"),
    ("We may remove any content you post for any reason or no reason.", "cr2"),
    ("Our privacy policy forms part of these terms.", "pinc2"),
    ("Our total liability to you is limited to the amount you paid us in the last twelve months.", "ltd3 countrym"),
]
TOS_LEVEL1 = [
    ("Nothing in these terms limits your rights under mandatory consumer law of your country.", "ltd1"),
    ("If you live in the European Union, you may bring a claim in the courts of your country.", "j1 countrym"),
]
TOS_COMPANIES = ["Alpha_App", "BetaNet", "Cloudly", "Dashy", "Echo", "Fizz", "Gadget", "Hoopla"]

ACORD_QUERIES = [  # id/text, category, split
    ('"as is" clause with carveouts', "Limitation of Liability", "train"),
    ("cap on liability", "Limitation of Liability", "train"),
    ("New York Governing Law", "Governing Law", "train"),
    ("indemnification of third party claims", "Indemnification", "train"),
    ("Non-compete bound by time and territory", "Restrictive Covenants", "valid"),
    ("buyer-favorable cap on liability clauses", "Limitation of Liability", "valid"),
]

LICENSE_STUB = "Synthetic test corpus. The real corpus is licensed under {license}.\n"


def _write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8", newline="")


def _contract(rng: random.Random, index: int) -> tuple[str, dict[str, list[tuple[int, str]]], dict[str, str]]:
    """Contract text, category -> [(answer_start, text)], category -> normalized answer."""
    title = TITLES[index % len(TITLES)]
    a, b = rng.sample(COMPANIES, 2)
    month, day, year = rng.randrange(12), rng.randint(1, 28), rng.randint(2001, 2020)
    state = rng.choice(STATES)
    answers: dict[str, list[tuple[int, str]]] = {}
    normalized: dict[str, str] = {"Document Name": title, "Parties": f"{a}; {b}",
                                  "Agreement Date": f"{month + 1}/{day}/{year}", "Governing Law": state}
    parts: list[str] = []
    length = 0

    def add(text: str, category: str | None = None) -> None:
        nonlocal length
        if category:
            answers.setdefault(category, []).append((length, text))
        parts.append(text)
        length += len(text)

    add(title, "Document Name")
    add("\n\n   ")
    add(f"This {title.title()} is made between ")
    add(a, "Parties")
    add(' ("Company") and ')
    add(b, "Parties")
    add(' ("Partner") ')
    add(f"dated as of {MONTHS[month]} {day}, {year}", "Agreement Date")
    add(".\n\n")
    present = [c for c in CLAUSES if rng.random() < 0.6]
    body: list[tuple[str, str | None]] = [(s, None) for s in rng.sample(FILLER, len(FILLER))] * 3
    for category in present:
        for template in rng.sample(CLAUSES[category], rng.randint(1, 2)):
            body.insert(rng.randrange(len(body) + 1), (template.format(a=a, b=b), category))
    body.insert(rng.randrange(len(body) + 1), (f"This Agreement shall be governed by the laws of {state}.", "Governing Law"))
    for number, (sentence, category) in enumerate(body, start=1):
        add(f"{number}. " if number % 4 == 1 else "")
        add(sentence, category)
        add("\n\n" if number % 4 == 0 else "  ")
    for category in present:
        normalized[category] = "Yes"
    for category, *_ in CATEGORIES:
        if category in CLAUSES and category not in present:
            normalized[category] = "No"
    return "".join(parts), answers, normalized


def write_synthetic_source(root: str | Path, seed: int = 0, n_contracts: int = 12) -> Path:
    """Write cuad/, claudette/ and acord/ under ``root``; returns ``root``."""
    root = Path(root)
    rng = random.Random(seed)

    # CUAD ------------------------------------------------------------------
    csv_text = io.StringIO()
    writer = csv.writer(csv_text, lineterminator="\n")
    writer.writerow(["Category (incl. context and answer)", "Description", "Answer Format", "Group"])
    for name, description, answer_format, group in CATEGORIES:
        writer.writerow([f"Category: {name}", f"Description: {description}", f"Answer Format: {answer_format}",
                         f"Group: {group}"])
    _write(root / "cuad" / "category_descriptions.csv", "\ufeff" + csv_text.getvalue())
    _write(root / "cuad" / "CUAD_v1_README.txt", LICENSE_STUB.format(license="CC BY 4.0"))
    qa_lines = []
    for index in range(n_contracts):
        doc_id = f"SYNTHETIC{index:02d}_{TITLES[index % len(TITLES)].title()}.txt"
        text, answers, normalized = _contract(rng, index)
        _write(root / "cuad" / "contracts" / doc_id, text)
        for name, *_ in CATEGORIES:
            spans = answers.get(name, [])
            qa_lines.append(json.dumps({
                "id": f"{doc_id[:-4]}__{name}",
                "contract_file": doc_id,
                "category": name,
                "question": f'Highlight the parts (if any) of this contract related to "{name}".',
                "answers": [{"text": t, "answer_start": s} for s, t in spans],
                "is_impossible": not spans,
                "normalized_answer": normalized.get(name, ""),
            }))
    _write(root / "cuad" / "cuad_qa_train.jsonl", "\n".join(qa_lines) + "\n")

    # CLAUDETTE -------------------------------------------------------------
    _write(root / "claudette" / "LICENSE.txt", LICENSE_STUB.format(license="CC BY 4.0"))
    _write(root / "claudette" / "list_tags.txt", "a2\na3\nch2\nch3\ncr2\ncr3\nj2\nj3\nlaw2\nlaw3\nltd2\nltd3\n"
           "ter2\nter3\nuse2\nuse3\npinc2\npinc3\n")
    for company in TOS_COMPANIES:
        lines: list[tuple[str, str]] = [(f"{company} Terms of Service", "")]
        lines += [(f"{s} ({company})", "") for s in TOS_FAIR] + [(f"{s} ({company})", t) for s, t in TOS_UNFAIR]
        lines += [(f"{s} ({company})", t) for s, t in TOS_LEVEL1]
        lines = [lines[0]] + rng.sample(lines[1:], len(lines) - 1)
        _write(root / "claudette" / "sentences" / f"{company}.txt", "".join(s + "\n" for s, _ in lines))
        # Tag lines keep a trailing space after the tags, as in the real files.
        _write(root / "claudette" / "tags" / f"{company}.txt", "".join((t + " " if t else "") + "\n" for _, t in lines))

    # ACORD -----------------------------------------------------------------
    _write(root / "acord" / "LICENSE", "MIT License (synthetic test copy)\n")
    corpus = []
    for index in range(90):
        clause = " ".join(rng.sample(FILLER, 3))
        if index % 9 == 0:
            clause = f'THE PRODUCTS ARE PROVIDED ""AS IS"". {clause}'  # ACORD's CSV-escaped quotes
        corpus.append({"_id": f"{rng.getrandbits(40):010x}", "text": clause})
    _write(root / "acord" / "corpus.jsonl", "".join(json.dumps(c) + "\n" for c in corpus))
    _write(root / "acord" / "queries.jsonl", "".join(json.dumps({
        "_id": text, "text": text, "metadata": {"category": category, "parent_query_id": "", "type": "cuad2",
                                                "split": split}}) + "\n" for text, category, split in ACORD_QUERIES))
    for split in ("train", "valid"):
        out = io.StringIO()
        writer = csv.writer(out, delimiter="\t", lineterminator="\n")
        writer.writerow(["query-id", "corpus-id", "score"])
        for text, _, query_split in ACORD_QUERIES:
            if query_split != split:
                continue
            for item in rng.sample(corpus, 40):
                writer.writerow([text, item["_id"], rng.choice([0, 0, 0, 1, 1, 2, 3, 4])])
        _write(root / "acord" / "qrels" / f"{split}.tsv", out.getvalue())
    return root
