"""CLI usage errors: printed as one line, exit code 2, no traceback."""


class UsageError(Exception):
    """Bad command-line input (unknown method, missing file, wrong format, ...)."""
