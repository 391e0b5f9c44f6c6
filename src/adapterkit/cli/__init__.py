"""The `adapterkit` command line: train, eval, summary, merge, convert."""

from .main import main

__all__ = ["main"]
