"""Ctrl-C in the `adapterkit` command: one line and exit code 130, never a traceback, from the first second on.

The command's first seconds are the package import (torch, transformers), which runs before `main`. So the
package calls `guard_command_start()` first thing: when this process *is* the command (the console script, or
`python -m adapterkit`), a Ctrl-C during those imports ends it at once (nothing is written yet). `main` then
restores Python's KeyboardInterrupt for its own run and turns it into the same line. Library users never get
a handler: for them nothing here changes anything. Stdlib only.
"""

from __future__ import annotations

import os
import signal
import sys
import threading
from contextlib import contextmanager

MESSAGE = "adapterkit: interrupted"
EXIT_CODE = 130


def _exit_now(signum, frame):
    try:
        sys.stdout.flush()
        sys.stderr.write(MESSAGE + "\n")
        sys.stderr.flush()
    finally:
        os._exit(EXIT_CODE)


def is_command() -> bool:
    """This process runs the `adapterkit` command (console script or `python -m adapterkit`)."""
    argv0 = os.path.basename(sys.argv[0]) if sys.argv else ""
    if argv0.removesuffix(".exe") == "adapterkit":
        return True
    if argv0 != "-m":  # while `python -m X` imports X's package, argv[0] is still "-m"
        return False
    args = list(getattr(sys, "orig_argv", []))[1:]
    for i, arg in enumerate(args):
        if arg == "-m":
            return args[i + 1:i + 2] == ["adapterkit"]
        if arg.startswith("-m"):
            return arg[2:] == "adapterkit"
    return False


def _settable() -> bool:
    return threading.current_thread() is threading.main_thread()


def guard_command_start() -> None:
    """In the command only: a Ctrl-C before `main` runs prints MESSAGE and exits 130."""
    if is_command() and _settable() and signal.getsignal(signal.SIGINT) is signal.default_int_handler:
        signal.signal(signal.SIGINT, _exit_now)


@contextmanager
def handled():
    """Inside `main`: Ctrl-C raises KeyboardInterrupt (main prints MESSAGE); the start guard is back afterwards."""
    previous = signal.getsignal(signal.SIGINT) if _settable() else None
    if previous is _exit_now:
        signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        yield
    finally:
        if previous is _exit_now:
            signal.signal(signal.SIGINT, previous)
