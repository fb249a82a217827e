"""The catalogue commands: the embedded models and every modification kind with its options."""

from __future__ import annotations

import dataclasses
import json
import logging
import time
from typing import Any

from ..errors import SpecError
from ..specs import MODIFICATIONS, Option, options

log = logging.getLogger("hemlab")


def cmd_models(args) -> int:
    from .. import models

    rows = [
        {**dataclasses.asdict(m), "prepared": models.is_prepared(name)} for name, m in models.EMBEDDED.items()
    ]
    if args.json:
        print(json.dumps(rows))
    else:
        for r in rows:
            print(f"{r['name']:<16} {'prepared' if r['prepared'] else 'not prepared':<13} {r['description']}")
    return 0


# The one syntax of `--mod`, printed by `hemlab mods` and documented in docs/cli.md.
MOD_SYNTAX = (
    "--mod KIND:OPTION=VALUE,OPTION=VALUE  (options not given keep their defaults; booleans true/false; a value "
    "holds no comma, so a list of block indices is joined by +: remove_layers:layers=3+4+5)"
)


def _text(value) -> str:
    """An option's value as `--mod` takes it (a tuple of block indices joined by +)."""
    if isinstance(value, tuple):
        return "+".join(map(str, value))
    return str(value).lower() if isinstance(value, bool) else str(value)


def _field_row(opt: Option) -> dict[str, Any]:
    """What `hemlab mods --json` says about one option: type, default, allowed values and bounds, help."""
    bounds = {b: getattr(opt, b) for b in ("ge", "gt", "le", "lt") if getattr(opt, b) is not None}
    row: dict[str, Any] = {
        "name": opt.name,
        "type": getattr(opt.type, "__name__", str(opt.type)),
        "default": opt.default,
        "allowed": opt.allowed(),
        "help": opt.help,
    }
    if opt.choices:
        row["choices"] = list(opt.choices)
    if bounds:
        row["bounds"] = bounds
    if opt.special:
        row["special"] = {str(k): v for k, v in opt.special.items()}
    if opt.suggest is not None:
        row["suggested"] = list(opt.suggestions())
    return row


def cmd_mods(args) -> int:
    rows: list[dict[str, Any]] = []
    for kind, cls in sorted(MODIFICATIONS.items()):
        opts = options(cls)
        rows.append(
            {
                "kind": kind,
                "doc": (cls.__doc__ or "").strip().splitlines()[0],
                "options": {o.name: o.default for o in opts},
                "fields": [_field_row(o) for o in opts],
            }
        )
    if args.json:
        print(json.dumps(rows, default=str))
        return 0
    print(f"Syntax: {MOD_SYNTAX}\n")
    for r in rows:
        line = ",".join(f"{f['name']}={_text(f['default'])}" for f in r["fields"])
        print(f"{r['kind']:<16} {r['doc']}\n{'':<16} --mod {r['kind']}:{line}")
        for f in r["fields"]:
            allowed = f["allowed"] or ("true or false" if f["type"] == "bool" else "")
            if "suggested" in f:
                allowed = (
                    (allowed + "; " if allowed else "") + "e.g. " + ", ".join(map(_text, f["suggested"]))
                )
            about = " — ".join(filter(None, [allowed, f["help"]]))
            print(f"{'':<18}{f['name']:<20} {about}")
    return 0


def add_parsers(sub) -> None:
    """The catalogue subcommands."""
    models_p = sub.add_parser("models", help="list the embedded models and whether each is prepared")
    models_p.add_argument("--json", action="store_true")
    mods_p = sub.add_parser("mods", help="list every modification kind and its options")
    mods_p.add_argument("--json", action="store_true")
    archs_p = sub.add_parser(
        "archs", help="the architecture matrix: which modifications work on tiny models of each architecture"
    )
    archs_p.add_argument("--json", action="store_true", help="machine-readable rows (or live results)")
    archs_p.add_argument("--markdown", action="store_true", help="the README table")
    archs_p.add_argument(
        "--check", nargs="*", metavar="NAME", help="run the matrix here on these architectures (default: all)"
    )
    archs_p.add_argument("--steps", help="with --check: comma-separated steps (default: all)")
    archs_p.add_argument(
        "--write", action="store_true", help="with --check: record the results in archs_matrix.json"
    )
    archs_p.add_argument(
        "--workdir", help="with --check: keep the tiny models here (default: a temporary folder)"
    )


def cmd_archs(args) -> int:
    from .. import archs

    if args.check is None:
        if args.write or args.steps:
            raise SpecError("--write and --steps go with --check")
        if args.json:
            print(json.dumps(archs.table_rows()))
        else:
            print(archs.markdown_table() if args.markdown else archs.text_table(), end="")
        return 0
    names = args.check or list(archs.ARCHS)
    steps = [s.strip() for s in args.steps.split(",")] if args.steps else list(archs.STEPS)
    unknown = [n for n in names if n not in archs.ARCHS] + [s for s in steps if s not in archs.STEPS]
    if unknown:
        raise SpecError(f"unknown architecture or step {', '.join(unknown)}; see `hemlab archs`")
    started = time.perf_counter()
    results = archs.check_many(names, steps, args.workdir)
    log.info(
        "checked %d architectures x %d steps in %.0f s", len(names), len(steps), time.perf_counter() - started
    )
    for line in archs.differences(results):
        log.info("differs from archs_matrix.json: %s", line)
    if args.write:
        log.info("wrote %s", archs.save_matrix(results))
    if args.json:
        print(json.dumps({n: {s: dataclasses.asdict(r) for s, r in st.items()} for n, st in results.items()}))
    else:
        live = archs.results_as_matrix(results)
        print(archs.markdown_table(live, names) if args.markdown else archs.text_table(live, names), end="")
    return 0


COMMANDS = {"models": cmd_models, "mods": cmd_mods, "archs": cmd_archs}
