"""Where the shipped datasets live, and how config values name them."""

from __future__ import annotations

from pathlib import Path

SHIPPED_PREFIX = "shipped:"


def shipped_dir() -> Path:
    """The compact built datasets that ship with lexalign (``data/shipped/``)."""
    return Path(__file__).resolve().parent / "shipped"


def resolve_data_path(value: str | Path) -> Path:
    """``shipped:<file>`` -> the shipped file; anything else is a path as given."""
    text = str(value)
    if text.startswith(SHIPPED_PREFIX):
        return shipped_dir() / text[len(SHIPPED_PREFIX):]
    return Path(text)
