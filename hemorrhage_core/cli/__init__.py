"""`hemlab`: the command line, one module per group of subcommands (measure, catalogue, analysis; options.py
turns options into specs). A public contract: options and `--json` output are stable.

    hemlab run --model NAME_OR_PATH [modification options] [--corpus NAME_OR_FILE] [--tokens N] [--db PATH] [--json]
    hemlab run --model ORIGINAL --against CHECKPOINT   profile an existing checkpoint (folder, .gguf, hub id)
    hemlab sweep --model M --param quant-bits --values 8,6,4 [same options] [--json]
    hemlab models
    hemlab mods            every modification kind usable with --mod, with its options and defaults
    hemlab archs [--json | --markdown] [--check [NAME ...] [--write]]    the architecture matrix (archs.py)
    hemlab thresholds | claims | memory | modules | flips    analyses (see docs/analysis.md)

Any modification of the catalogue, in any order: `--mod KIND:key=value,key=value` (repeatable; applied in the
order given, after the shorthand flags). The shorthand flags (--quant-bits, --prune-sparsity, --temperature) are
applied in a fixed order: pruning, then quantization, then decoding.
`sweep --param` takes a shorthand name (quant-bits, prune-sparsity, ...) or any numeric field as KIND.FIELD
(e.g. gptq.bits); `--model a,b` sweeps several models.

Errors go to stderr with exit code 2 and no traceback (pass --debug for one)."""

from __future__ import annotations

import argparse
import logging
import sys

from ..errors import HemlabError
from . import analysis, catalogue, measure

log = logging.getLogger("hemlab")
# Each group defines its subcommands (add_parsers) and their handlers (COMMANDS).
GROUPS = (measure, catalogue, analysis)


class _Parser(argparse.ArgumentParser):
    """argparse with a one-line error (its default prints the whole usage first) and the same exit code 2."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message} (see `{self.prog} --help`)\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="hemlab", description="Measure model hemorrhage against the original model.")
    parser.add_argument("--debug", action="store_true", help="show tracebacks and debug logs")
    sub = parser.add_subparsers(dest="command", required=True)
    for group in GROUPS:
        group.add_parsers(sub)
    return parser


def _command(name: str):
    """The handler of a subcommand, from the group that defines it."""
    return next(group.COMMANDS[name] for group in GROUPS if name in group.COMMANDS)


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.debug else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    try:
        return _command(args.command)(args)
    except HemlabError as exc:
        print(f"hemlab: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("hemlab: interrupted; nothing partial was stored", file=sys.stderr)
        return 130
    except Exception as exc:  # a bug, not bad input: still no traceback unless asked for
        if args.debug:
            raise
        print(
            f"hemlab: internal error: {type(exc).__name__}: {exc} (rerun with --debug for details)",
            file=sys.stderr,
        )
        return 1


def entry() -> None:
    sys.exit(main())
