"""lexalign.data: record schemas, JSONL validation, builders from the raw legal corpora, shipped datasets.

Kept import-light (no pydantic) so that other stages can ask for ``shipped_dir()`` cheaply.
"""

from lexalign.data.paths import resolve_data_path, shipped_dir

__all__ = ["resolve_data_path", "shipped_dir"]
