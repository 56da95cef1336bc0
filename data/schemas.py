"""Record schemas shared by every stage (pydantic v2; unknown fields are errors).

    ChatRecord      one SFT example: chat messages (optional system, then user/assistant turns ending
                    with the assistant) + meta (source, task, doc_id and the gold labels evaluation needs)
    PreferencePair  TRL's preference format: prompt + chosen + rejected (all strings, or all chat
                    messages), optional margin (>= 0) for margin-aware reward losses
    RankingRecord   N >= 2 responses to one prompt ranked by one annotator: 1 = best, ties share a rank,
                    ranks are dense (a complete weak ordering), plus "none acceptable", rationale, flags,
                    and the annotator's kind: ``human`` (a person; the default, so older files read as before)
                    or ``derived`` (a ranking computed from labels, by an annotator named ``<method>:<name>``
                    such as ``gold:cuad``)

Exported preference pairs say where their votes came from in ``meta.origin``: ``human``,
``derived:<annotator>`` (e.g. ``derived:gold:cuad``), or several of these joined by ``+`` when kinds were
mixed on purpose. Files without the field stay valid.

Files of these records are read and written with ``lexalign.data.jsonl``.
"""

from __future__ import annotations

import re
from typing import Any, Literal, get_args

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

Role = Literal["system", "user", "assistant"]
AnnotatorKind = Literal["human", "derived"]
ANNOTATOR_KINDS: tuple[str, ...] = get_args(AnnotatorKind)

# A derived annotator is named "<method>:<name>" (gold:cuad). Human usernames never contain ":" (the store's
# username rule), so a derived name can never collide with, or be registered as, a person's login.
DERIVED_NAME = re.compile(r"^[a-z][a-z0-9_-]*:[A-Za-z0-9][A-Za-z0-9._@-]*$")
DERIVED_NAME_MAX = 64
_ORIGIN_PART = re.compile(r"^(human|derived:[a-z][a-z0-9_-]*:[A-Za-z0-9][A-Za-z0-9._@-]*)$")


def check_derived_name(name: str) -> None:
    """A derived annotator's name: ``<method>:<name>`` (lower-case method; letters, digits, ._@- in the name)."""
    if len(name) > DERIVED_NAME_MAX or not DERIVED_NAME.match(name):
        raise ValueError(f"derived annotator {name!r}: expected '<method>:<name>' such as 'gold:cuad' (a lower-case "
                         f"method, then letters, digits, '.', '_', '@' or '-'; at most {DERIVED_NAME_MAX} characters)")


def check_origin(origin: Any) -> None:
    """``meta.origin`` of a preference pair: ``human``, ``derived:<annotator>``, or several joined by ``+``."""
    if not isinstance(origin, str) or not all(_ORIGIN_PART.match(part) for part in origin.split("+")):
        raise ValueError(f"meta.origin {origin!r}: expected 'human', 'derived:<method>:<name>' (e.g. "
                         "'derived:gold:cuad') or several of these joined by '+'")


class _Strict(BaseModel):
    # Unknown keys are mistakes (a typo in "rejected" must not pass silently).
    model_config = ConfigDict(extra="forbid")


def _non_empty(value: str, what: str) -> str:
    if not value.strip():
        raise ValueError(f"{what} must not be empty or only whitespace")
    return value


class Message(_Strict):
    role: Role
    content: str

    @field_validator("content")
    @classmethod
    def _content_not_empty(cls, value: str) -> str:
        return _non_empty(value, "content")


def check_turn_order(messages: list[Message], must_end_with: Role) -> None:
    """Optional system first, then user/assistant alternating from a user turn; fixed last role.

    Chat templates of instruct models (Llama, Qwen, ...) assume exactly this shape.
    """
    if not messages:
        raise ValueError("needs at least one message")
    roles = [m.role for m in messages]
    turns = roles[1:] if roles[0] == "system" else roles
    if "system" in turns:
        raise ValueError(f"a system message may only come first; got roles {roles}")
    if not turns or turns[0] != "user":
        raise ValueError(f"the first turn after the optional system message must be 'user'; got roles {roles}")
    for a, b in zip(turns, turns[1:]):
        if a == b:
            raise ValueError(f"user and assistant turns must alternate; two '{a}' turns in a row in roles {roles}")
    if roles[-1] != must_end_with:
        raise ValueError(f"the last message must be '{must_end_with}'; got roles {roles}")


class ChatRecord(_Strict):
    messages: list[Message]
    meta: dict[str, Any] | None = None

    @model_validator(mode="after")
    def _turns(self) -> "ChatRecord":
        check_turn_order(self.messages, must_end_with="assistant")
        return self


Text = str | list[Message]


class PreferencePair(_Strict):
    prompt: Text
    chosen: Text
    rejected: Text
    margin: float | None = Field(default=None, ge=0)
    meta: dict[str, Any] | None = None

    @model_validator(mode="after")
    def _consistent(self) -> "PreferencePair":
        kinds = {name: isinstance(getattr(self, name), str) for name in ("prompt", "chosen", "rejected")}
        if len(set(kinds.values())) != 1:
            raise ValueError("prompt, chosen and rejected must all be strings or all be lists of chat messages "
                             f"(TRL's standard or conversational format); got {kinds}")
        if kinds["prompt"]:
            for name in ("prompt", "chosen", "rejected"):
                _non_empty(getattr(self, name), name)
        else:
            check_turn_order(self.prompt, must_end_with="user")  # type: ignore[arg-type]
            for name in ("chosen", "rejected"):
                roles = [m.role for m in getattr(self, name)]
                if not roles or set(roles) != {"assistant"}:
                    raise ValueError(f"{name} must be a non-empty list of assistant messages; got roles {roles}")
        if self.chosen == self.rejected:
            raise ValueError("chosen and rejected are identical; a pair must differ")
        if self.meta and "origin" in self.meta:
            check_origin(self.meta["origin"])
        return self


class RankingRecord(_Strict):
    prompt_id: str
    prompt: Text
    responses: list[str] = Field(min_length=2)
    ranks: list[int]
    annotator: str
    annotator_kind: AnnotatorKind = "human"
    rationale: str | None = None
    none_acceptable: bool = False
    flags: list[str] = Field(default_factory=list)
    meta: dict[str, Any] | None = None

    @field_validator("prompt_id", "annotator")
    @classmethod
    def _id_not_empty(cls, value: str, info: Any) -> str:
        return _non_empty(value, info.field_name)

    @field_validator("responses")
    @classmethod
    def _responses_not_empty(cls, value: list[str]) -> list[str]:
        for i, text in enumerate(value):
            _non_empty(text, f"responses[{i}]")
        return value

    @model_validator(mode="after")
    def _weak_ordering(self) -> "RankingRecord":
        if isinstance(self.prompt, str):
            _non_empty(self.prompt, "prompt")
        else:
            check_turn_order(self.prompt, must_end_with="user")
        check_ranks(self.ranks, len(self.responses))
        if self.annotator_kind == "derived":
            check_derived_name(self.annotator)
        return self


def check_ranks(ranks: list[int], n_responses: int) -> None:
    """Ranks must be a complete weak ordering: one per response, 1 = best, ties share a rank, no gaps."""
    if not ranks:
        raise ValueError("no ranks given; give one rank per response (1 = best)")
    if len(ranks) != n_responses:
        raise ValueError(f"ranks has {len(ranks)} values for {n_responses} responses; give exactly one rank per response")
    if any(r < 1 for r in ranks):
        raise ValueError(f"ranks start at 1 (= best); got {ranks}")
    # n values with one above n leave a gap within 1..n, so 1..n is enough to name it; a rank of 10**18 from a
    # form must not become a set of 10**18 numbers.
    missing = sorted(set(range(1, min(max(ranks), n_responses) + 1)) - set(ranks))
    if missing:
        raise ValueError(f"ranks must be dense (1 = best, ties share a rank, no gaps, e.g. [1, 2, 2, 3]); "
                         f"got {ranks}, missing rank {', '.join(map(str, missing))}")
