"""The exact wording of every prompt and answer the builders write.

Training, serving and evaluation must use the same system prompt and answer conventions, so they live
here once. Evaluation can parse model answers back into labels with the ``parse_*`` helpers.
"""

from __future__ import annotations

import re

SYSTEM_PROMPT = (
    "You are a contract-review assistant for lawyers. Answer only from the text you are given. "
    "When asked to find a clause, quote its text exactly as written; if the text does not contain it, "
    "answer 'Not present.'"
)

NOT_PRESENT = "Not present."
YES, NO = "Yes", "No"

# The user message always ends with this marker followed by the contract excerpt, so the excerpt can be
# recovered from a record (tests check that quoted spans are verbatim substrings of it).
EXCERPT_MARKER = "\n\nExcerpt:\n"
CLAUSE_MARKER = "\n\nClause:\n"


# --------------------------------------------------------------------------- CUAD


def extract_prompt(category: str, description: str, excerpt: str) -> str:
    return (f"Find the {category} clause in this contract excerpt ({description}). "
            f"Quote it exactly, or answer '{NOT_PRESENT}'{EXCERPT_MARKER}{excerpt}")


def _a(word: str) -> str:
    return "an" if word[:1].lower() in "aeiou" else "a"


def presence_prompt(category: str, excerpt: str) -> str:
    return (f"Does this contract excerpt contain {_a(category)} {category} clause? "
            f"Answer {YES} or {NO}.{EXCERPT_MARKER}{excerpt}")


# Questions for CUAD's normalized answers (categories whose answer is a name, a date, a law or a period).
NORMALIZE_QUESTIONS = {
    "Document Name": "What is the name of this contract?",
    "Parties": "Who are the parties to this contract?",
    "Agreement Date": "What is the date of this contract?",
    "Effective Date": "On what date does this contract take effect?",
    "Expiration Date": "On what date does the initial term of this contract expire?",
    "Renewal Term": "What is the renewal term after the initial term expires?",
    "Notice Period to Terminate Renewal": "What notice period is required to terminate renewal?",
    "Governing Law": "Which state's or country's law governs this contract?",
}


def normalize_prompt(category: str, description: str, answer_format: str, excerpt: str) -> str:
    question = NORMALIZE_QUESTIONS.get(category, f"{category}: {description}")
    return f"{question} Answer in the format: {answer_format}.{EXCERPT_MARKER}{excerpt}"


def extract_answer(spans: list[str]) -> str:
    """Verbatim spans in double quotes, one per line, in document order; or exactly 'Not present.'.

    Why the quotes: a greedy decoder picks the first token, and the first words of clauses are spread over
    thousands of tokens while "Not" is one; a model that is unsure then always says "Not present." (measured on
    SmolLM2, bench/RESULTS.md). An opening quote is one token shared by every present answer, so the decision
    "quote or not" is taken on its own and the clause text follows. Scorers strip the quotes."""
    return "\n".join(f'"{span}"' for span in spans) if spans else NOT_PRESENT


def excerpt_of(user_message: str) -> str:
    """The contract excerpt (or ToS clause) at the end of a user message written by these builders."""
    for marker in (EXCERPT_MARKER, CLAUSE_MARKER):
        if marker in user_message:
            return user_message.split(marker, 1)[1]
    raise ValueError("no excerpt marker in this message")


# --------------------------------------------------------------------------- CLAUDETTE

# code -> (name, why a clause of this kind is potentially unfair to consumers). The reasons paraphrase the
# category definitions of Lippi et al. (CLAUDETTE, 2019) and Galassi et al. (2024).
UNFAIR_CATEGORIES: dict[str, tuple[str, str]] = {
    "a": ("arbitration", "It sends disputes to arbitration instead of a court, which can take away the consumer's right to sue."),
    "ch": ("unilateral change", "It lets the provider change the terms on its own, without the consumer's consent."),
    "cr": ("content removal", "It lets the provider delete or modify the user's content at its discretion, without notice or reason."),
    "j": ("jurisdiction", "It makes disputes go to courts away from where the consumer lives."),
    "law": ("choice of law", "It applies a law other than that of the consumer's country of residence."),
    "ltd": ("limitation of liability", "It excludes or limits the provider's liability for losses or damages the consumer may suffer."),
    "ter": ("unilateral termination", "It lets the provider suspend or end the service or account at its discretion."),
    "use": ("contract by using", "It binds the consumer to the terms merely by using the service, without explicit acceptance."),
    "pinc": ("privacy included", "It makes the privacy policy part of the terms, so consent to data processing is bundled with accepting the terms."),
}
UNFAIR_NAMES = [name for name, _ in UNFAIR_CATEGORIES.values()]
FAIR_ANSWER = "Fair: no unfair-clause category applies."


def unfair_prompt(clause: str) -> str:
    return ("Is this Terms-of-Service clause potentially unfair to consumers? "
            f"If so, name the category and say why.{CLAUSE_MARKER}{clause}")


def unfair_answer(codes: list[str]) -> str:
    """'Potentially unfair: <names>. <reasons>' for the given category codes, or the fair answer."""
    if not codes:
        return FAIR_ANSWER
    names = "; ".join(UNFAIR_CATEGORIES[c][0] for c in codes)
    reasons = " ".join(UNFAIR_CATEGORIES[c][1] for c in codes)
    return f"Potentially unfair: {names}. {reasons}"


def parse_unfair_answer(text: str) -> tuple[bool | None, list[str]]:
    """(unfair?, category names) from an answer; (None, []) when it follows neither form."""
    stripped = text.strip()
    if stripped.lower().startswith("fair"):
        return False, []
    match = re.match(r"potentially unfair:\s*([^.]*)", stripped, flags=re.IGNORECASE)
    if not match:
        return None, []
    said = [part.strip().lower() for part in match.group(1).split(";")]
    return True, [name for name in UNFAIR_NAMES if name in said]


# --------------------------------------------------------------------------- ACORD


def acord_prompt(query: str) -> str:
    return f"Find a contract clause that matches this drafting request: {query}"
