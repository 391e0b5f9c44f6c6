"""`adapterkit <command> ...`: the parser, the dispatch, and one-line errors (exit code 2) for bad input."""

from __future__ import annotations

import argparse
import sys

from .data import DataError
from .errors import UsageError

DESCRIPTION = """\
Parameter-efficient fine-tuning of transformers models (adapters, LoRA, (IA)^3, prefix tuning, ...).

Start with:   adapterkit train                  (fine-tunes the built-in demo on MiniLM, offline)
Then:         adapterkit summary --adapter lora --adapter pfeiffer
              adapterkit train --task rte --data-dir ../shared/data/glue --method lora --epochs 3
              adapterkit eval --adapter-dir runs/demo/adapter --task rte --data-dir ../shared/data/glue
Each command has --help.
"""


class _Parser(argparse.ArgumentParser):
    def error(self, message):  # one line, exit code 2, no usage dump
        raise UsageError(message)


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="adapterkit", description=DESCRIPTION, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    for module in _command_modules():
        module.register(sub)
    return parser


def _command_modules():
    from . import cmd_summary
    modules = [cmd_summary]
    for name in ("cmd_train", "cmd_eval", "cmd_merge", "cmd_convert"):
        try:
            modules.append(__import__(f"{__package__}.{name}", fromlist=[name]))
        except ModuleNotFoundError as exc:  # a command whose module is not part of this build
            if exc.name != f"{__package__}.{name}":
                raise
    return sorted(modules, key=lambda m: m.ORDER)


def main(argv=None) -> int:
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
        if not getattr(args, "command", None):
            parser.print_help()
            return 0
        return int(args.run(args) or 0)
    except (UsageError, DataError) as exc:
        print(f"adapterkit: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("adapterkit: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
