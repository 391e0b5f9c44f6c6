"""CLI errors: printed as one line, no traceback. Bad input exits 2, a run that failed exits 1."""


class UsageError(Exception):
    """Bad command-line input (unknown method, missing file, wrong format, ...): exit code 2."""


class RunFailed(Exception):
    """The input was fine but the run produced nothing valid (e.g. a non-finite loss): exit code 1."""


class DataError(ValueError):
    """Bad data input: the message names the file and the problem (exit code 2)."""
