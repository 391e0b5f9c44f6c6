"""`adapterkit <command> ...`: the parser, the dispatch, and the one place where errors become one line on stderr:
bad input (UsageError, DataError, the library's AdapterError / ValueError, OSError) exits 2, a failed run 1,
Ctrl-C 130. Imports stay light here: the interrupt handling is in place before a command loads anything heavy."""

from __future__ import annotations

import argparse
import logging
import sys

from . import interrupt
from .errors import RunFailed, UsageError

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
    for name in ("cmd_train", "cmd_eval", "cmd_generate", "cmd_merge", "cmd_convert"):
        try:
            modules.append(__import__(f"{__package__}.{name}", fromlist=[name]))
        except ModuleNotFoundError as exc:  # a command whose module is not part of this build
            if exc.name != f"{__package__}.{name}":
                raise
    return sorted(modules, key=lambda m: m.ORDER)


def one_line(exc: BaseException) -> str:
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    return lines[0] if lines else type(exc).__name__


# libraries that log on import what a command's user cannot act on: bitsandbytes' CPU backend warns that an
# optional kernel package (fetched from the Hub) is missing whenever transformers imports it; on CPUs with
# AVX512-BF16 it asks `kernels` for one, which notes that offline it skips the publisher check
QUIET_LOGGERS = ("bitsandbytes", "kernels", "torchao", "torch.utils._pytree")  # import-time notes


def _quiet_loggers() -> None:
    for name in QUIET_LOGGERS:
        logging.getLogger(name).setLevel(logging.ERROR)


if interrupt.is_command():  # the command only, before the package's imports (transformers -> torchao) run
    _quiet_loggers()


def main(argv=None) -> int:
    _quiet_loggers()
    with interrupt.handled():
        try:
            parser = build_parser()
            args = parser.parse_args(argv)
            if not getattr(args, "command", None):
                parser.print_help()
                return 0
            return int(args.run(args) or 0)
        except KeyboardInterrupt:
            sys.stdout.flush()
            print(interrupt.MESSAGE, file=sys.stderr)
            return interrupt.EXIT_CODE
        except RunFailed as exc:
            print(f"adapterkit: error: {one_line(exc)}", file=sys.stderr)
            return 1
        except (UsageError, ValueError, OSError) as exc:  # DataError, AdapterError & co. are ValueErrors
            print(f"adapterkit: error: {one_line(exc)}", file=sys.stderr)
            return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
