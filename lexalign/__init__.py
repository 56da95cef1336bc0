"""lexalign: a contract-review assistant that lawyers keep improving."""
__version__ = "0.1.0"
