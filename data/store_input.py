"""What the preference store accepts: usernames and annotator kinds, plain-text fields, rankings, flags, chat
prompts and submission-day filters. Each check raises ``StoreError`` (or ``ValueError`` for free-text fields and
ranks, which the store and the apps turn into ``SubmissionError``) with a message that says what to fix.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterable, Sequence
from datetime import date, datetime, timezone
from typing import Any

from lexalign.data.schemas import ANNOTATOR_KINDS, check_derived_name
from lexalign.errors import LexalignError

ROLES = ("annotator", "admin")
# Flags on one answer (what it says), and flags on the task itself (what the annotator was given to judge).
ANSWER_FLAGS: dict[str, str] = {
    "invented_clause": "invents a clause or quote not in the contract",
    "wrong_law": "wrong law or jurisdiction",
    "risky_advice": "risky or misleading advice",
    "personal_data": "contains personal data",
    "other": "other problem (say which in the rationale)",
}
TASK_FLAGS: dict[str, str] = {
    "bad_task": "task is broken (excerpt missing or unreadable)",
}
FLAGS: dict[str, str] = {**ANSWER_FLAGS, **TASK_FLAGS}
DEFAULT_RATIONALE_MAX = 2000
MIN_PASSWORD_CHARS = 8
ANSWER_FLAG_SEP = "@"   # "wrong_law@2": the flag on the answer at position 2
DAY_FORMAT = "YYYY-MM-DD"  # submission-day filters (UTC)



def split_flags(flags: Sequence[str]) -> tuple[list[str], dict[int, list[str]]]:
    """Stored flags -> (flags on the whole task, {answer position: its flags})."""
    whole: list[str] = []
    per_answer: dict[int, list[str]] = {}
    for flag in flags:
        name, sep, position = flag.partition(ANSWER_FLAG_SEP)
        if sep and position.isdigit():
            per_answer.setdefault(int(position), []).append(name)
        else:
            whole.append(flag)
    return whole, per_answer

USERNAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._@-]{0,63}$")
_DAY = re.compile(r"^[0-9]{4}-[0-9]{2}-[0-9]{2}$")
# Anything that looks like an HTML/XML tag, comment or declaration: "<b>", "</x>", "<!--", "<?xml", "<script".
# "a < b" (a space after "<") is text to an HTML parser too, so it stays allowed.
_MARKUP = re.compile(r"</?[A-Za-z!?][^<>]*>|</?(script|iframe|img|svg|style|object|embed|math)\b", re.IGNORECASE)
_ALLOWED_CONTROLS = {"\n", "\t", "\r"}


class StoreError(LexalignError):
    """The store cannot be opened or used as asked (bad URL, schema version mismatch, unknown user...)."""


class SubmissionError(StoreError):
    """A ranking (or skip) was refused; nothing was stored. The message says what to fix."""


def check_username(name: str, kind: str, where: str) -> None:
    """A human username (letters, digits, ._@-; no ":") or a derived one (``<method>:<name>``)."""
    if kind == "derived":
        try:
            check_derived_name(name)
        except ValueError as err:
            raise StoreError(f"{where}: {err}") from None
    elif kind == "human":
        if not USERNAME_PATTERN.match(name):
            raise StoreError(f"{where}: annotator {name!r} is not a valid username (1-64 letters, digits, '.', '_', "
                             "'@' or '-', starting with a letter or digit)")
    else:
        raise StoreError(f"{where}: annotator kind {kind!r}: expected one of {', '.join(ANNOTATOR_KINDS)}")


def check_kinds(kinds: Iterable[str] | None) -> list[str] | None:
    if kinds is None:
        return None
    kind_list = [kinds] if isinstance(kinds, str) else list(kinds)
    unknown = [k for k in kind_list if k not in ANNOTATOR_KINDS]
    if unknown or not kind_list:
        raise StoreError(f"annotator kinds {kind_list!r}: expected some of {', '.join(ANNOTATOR_KINDS)}")
    return kind_list


def parse_day(value: date | str | None, field_name: str) -> date | None:
    """A calendar day given as ``YYYY-MM-DD`` (a ``date`` is taken as it is); None when empty. A StoreError naming
    the field and the expected format otherwise."""
    if value is None:
        return None
    if isinstance(value, datetime):  # a datetime is a date too, but a time of day is not a day
        raise StoreError(f"the {field_name!r} date must be a day in the format {DAY_FORMAT}, not a time ({value})")
    if isinstance(value, date):
        return value
    if not isinstance(value, str):
        raise StoreError(f"the {field_name!r} date must be text in the format {DAY_FORMAT}; got {type(value).__name__}")
    stripped = value.strip()
    if not stripped:
        return None
    if _DAY.match(stripped):
        try:
            return date.fromisoformat(stripped)
        except ValueError:
            pass
    raise StoreError(f"the {field_name!r} date {stripped[:40]!r} is not a day in the format {DAY_FORMAT} "
                     "(e.g. 2025-03-31)")


def submission_period(submitted_from: date | str | None, submitted_to: date | str | None
                      ) -> tuple[date | None, date | None]:
    """The first and last day (both inclusive, UTC) of a submission-time filter; None: no bound on that side.
    A StoreError for a malformed day or an empty range (``from`` after ``to``)."""
    first = parse_day(submitted_from, "from")
    last = parse_day(submitted_to, "to")
    if first is not None and last is not None and first > last:
        raise StoreError(f"the 'from' date {first.isoformat()} is after the 'to' date {last.isoformat()}, so no day "
                         "is in the range; swap them")
    return first, last


def day_start(day: date) -> datetime:
    """Midnight UTC at the start of ``day``."""
    return datetime(day.year, day.month, day.day, tzinfo=timezone.utc)


def unique_names(names: Iterable[str] | None) -> list[str] | None:
    """Annotator usernames of a filter, each once, in the given order; None: no filter."""
    if names is None:
        return None
    name_list = [names] if isinstance(names, str) else list(names)
    strangers = [name for name in name_list if not isinstance(name, str)]
    if strangers:
        raise StoreError(f"annotator names must be text; got {strangers[0]!r}")
    return list(dict.fromkeys(name_list))


def control_chars(text: str) -> list[str]:
    return sorted({f"U+{ord(c):04X}" for c in text
                   if c not in _ALLOWED_CONTROLS and unicodedata.category(c) in ("Cc", "Cf", "Cs", "Co")
                   and c not in ("\u200d", "\u200c")})  # zero-width (non-)joiners occur in real scripts


def check_plain_text(value: str | None, what: str, max_chars: int) -> str | None:
    """Plain text for free-text fields: stripped, None when empty; a ValueError saying what to fix otherwise."""
    if value is None:
        return None
    if not isinstance(value, str):
        raise ValueError(f"{what} must be text, got {type(value).__name__}")
    stripped = value.strip()
    if not stripped:
        return None
    if len(stripped) > max_chars:
        raise ValueError(f"{what} is {len(stripped)} characters long; the limit is {max_chars}. Shorten it.")
    bad = control_chars(stripped)
    if bad:
        raise ValueError(f"{what} contains control characters ({', '.join(bad[:5])}); remove them (paste as plain text)")
    match = _MARKUP.search(stripped)
    if match:
        raise ValueError(f"{what} must be plain text, without HTML or markup such as {match.group(0)[:40]!r}; "
                         "describe it in words instead")
    return stripped


def check_ranks(ranks: Sequence[int], n: int) -> None:
    """A complete weak ordering of n items: one rank each, 1 = best, ties share a rank, dense (no gaps)."""
    from lexalign.data.schemas import check_ranks as _schema_check_ranks

    for r in ranks:
        if isinstance(r, bool) or not isinstance(r, int):
            raise ValueError(f"every rank must be a whole number (1 = best); got {r!r}")
    _schema_check_ranks(list(ranks), n)


def check_prompt(prompt: Any) -> str | list[dict[str, str]]:
    if isinstance(prompt, str):
        if not prompt.strip():
            raise StoreError("prompt must not be empty")
        return prompt
    if isinstance(prompt, list):
        from lexalign.data.schemas import Message, check_turn_order

        try:
            messages = [m if isinstance(m, Message) else Message.model_validate(m) for m in prompt]
            check_turn_order(messages, must_end_with="user")
        except ValueError as err:
            raise StoreError(f"prompt: not valid chat messages ending with a user turn: {err}") from None
        return [m.model_dump() for m in messages]
    raise StoreError(f"prompt must be a string or a list of chat messages; got {type(prompt).__name__}")
