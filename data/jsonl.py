"""JSONL files of validated records: all-or-nothing reading, atomic deterministic writing."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Iterable, TypeVar

from pydantic import BaseModel, ValidationError

from lexalign.errors import LexalignError

M = TypeVar("M", bound=BaseModel)

MAX_LISTED_PROBLEMS = 50


class DataError(LexalignError):
    """A data file (or a raw corpus file) is missing or malformed; ``problems`` holds every finding."""

    def __init__(self, message: str, problems: list[str] | None = None) -> None:
        self.problems = problems or [message]
        super().__init__(message)


def _raise_problems(path: Path, problems: list[str], what: str) -> None:
    shown = problems[:MAX_LISTED_PROBLEMS]
    more = len(problems) - len(shown)
    lines = [f"{path}: {len(problems)} bad line{'s' * (len(problems) != 1)} ({what}); nothing was loaded:"]
    lines += [f"  {p}" for p in shown]
    if more:
        lines.append(f"  ... and {more} more")
    raise DataError("\n".join(lines), problems)


def _pydantic_problems(err: ValidationError) -> list[str]:
    found = []
    for item in err.errors():
        loc = ".".join(f"[{part}]" if isinstance(part, int) else str(part) for part in item["loc"]).replace(".[", "[")
        message = item["msg"].removeprefix("Value error, ")
        found.append(f"{loc}: {message}" if loc else message)
    return found


def read_text_lines(path: Path) -> list[str]:
    """UTF-8 lines of a file; a DataError naming path:line when the bytes are not UTF-8."""
    path = Path(path)
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise DataError(f"{path}: file not found") from None
    except IsADirectoryError:
        raise DataError(f"{path}: is a directory; expected a file") from None
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as err:
        line = raw.count(b"\n", 0, err.start) + 1
        column = err.start - (raw.rfind(b"\n", 0, err.start) + 1) + 1
        raise DataError(f"{path}:{line}: not UTF-8 text (byte 0x{raw[err.start]:02x} at column {column}); "
                        "save the file as UTF-8") from None
    return text.split("\n")


def read_jsonl(path: str | Path, schema: type[M]) -> list[M]:
    """Every line validated against ``schema``; any bad line -> DataError listing ``path:line: problem``.

    Blank lines are skipped. Nothing partial is returned: either every record or an error.
    """
    path = Path(path)
    lines = read_text_lines(path)
    records: list[M] = []
    problems: list[str] = []
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            data = json.loads(line)
        except json.JSONDecodeError as err:
            problems.append(f"{path}:{number}: not valid JSON ({err.msg} at column {err.colno})")
            continue
        except (ValueError, RecursionError) as err:  # a 5000-digit number, arrays nested thousands deep
            problems.append(f"{path}:{number}: not usable JSON ({str(err)[:120] or type(err).__name__})")
            continue
        if not isinstance(data, dict):
            problems.append(f"{path}:{number}: expected a JSON object ({{...}}), got {type(data).__name__}")
            continue
        try:
            records.append(schema.model_validate(data))
        except ValidationError as err:
            problems.extend(f"{path}:{number}: {p}" for p in _pydantic_problems(err))
    if problems:
        _raise_problems(path, problems, f"expected {schema.__name__} records")
    if not records:
        raise DataError(f"{path}: empty file; expected one {schema.__name__} JSON object per line")
    return records


def to_json_line(record: BaseModel | dict[str, Any]) -> str:
    """One compact JSON line with sorted keys (so the same record always gives the same bytes)."""
    data = record.model_dump(mode="json", exclude_none=True) if isinstance(record, BaseModel) else record
    return json.dumps(data, sort_keys=True, ensure_ascii=False, separators=(",", ":"))


def write_text_atomic(path: str | Path, text: str) -> None:
    """Readers see the old file or the new one, never half of one (tmp file + os.replace)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    with tmp.open("w", encoding="utf-8", newline="\n") as handle:
        handle.write(text)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, path)


def write_jsonl(path: str | Path, records: Iterable[BaseModel | dict[str, Any]]) -> int:
    """Write records atomically, one JSON object per line; returns the number written."""
    lines = [to_json_line(r) for r in records]
    write_text_atomic(path, "".join(line + "\n" for line in lines))
    return len(lines)
