"""The one base class for mistakes a user can fix; the CLI prints these without a traceback."""


class LexalignError(Exception):
    """Bad input, a missing file, an unusable config: the message says what and how to fix it."""
