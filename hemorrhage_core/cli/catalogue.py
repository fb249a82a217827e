"""The catalogue commands: the embedded models and every modification kind with its options."""

from __future__ import annotations

import dataclasses
import json
import logging

from ..specs import (
    MODIFICATIONS,
)

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


def cmd_mods(args) -> int:
    rows = [
        {
            "kind": kind,
            "doc": (cls.__doc__ or "").strip().splitlines()[0],
            "options": {
                f.name: f.default for f in dataclasses.fields(cls) if f.default is not dataclasses.MISSING
            },
        }
        for kind, cls in sorted(MODIFICATIONS.items())
    ]
    if args.json:
        print(json.dumps(rows, default=str))
    else:
        for r in rows:
            opts = ",".join(f"{k}={v}" for k, v in r["options"].items())
            print(f"{r['kind']:<16} {r['doc']}\n{'':<16} --mod {r['kind']}:{opts}")
    return 0


def add_parsers(sub) -> None:
    """The catalogue subcommands."""
    models_p = sub.add_parser("models", help="list the embedded models and whether each is prepared")
    models_p.add_argument("--json", action="store_true")
    mods_p = sub.add_parser("mods", help="list every modification kind and its options")
    mods_p.add_argument("--json", action="store_true")


COMMANDS = {"models": cmd_models, "mods": cmd_mods}
