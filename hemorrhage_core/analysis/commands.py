"""The analysis subcommands of `hemlab` (registered by cli.build_parser) and the sweep summary the CLI stores.

hemlab thresholds [--model M] [--param P] [--json]     stored sweep summaries: thresholds, knee, robust zone
"""

from __future__ import annotations

import argparse
import json
from datetime import UTC, datetime

from .sweeps import SweepSummary, summarize_sweep


def _value(raw: str):
    """A --values item as the number it names when it is one (thresholds need numbers), else the raw text."""
    try:
        return float(raw)
    except ValueError:
        return raw


def record_sweep(args: argparse.Namespace, store, results) -> list[SweepSummary]:
    """Summaries of a finished `hemlab sweep` (one per model), stored in the `sweeps` table.

    `results` are in the order `cli.sweep_specs` builds specs: model-major, then --values in the order given.
    """
    raw_values = [v.strip() for v in args.values.split(",") if v.strip()]
    models = [m.strip() for m in args.model.split(",") if m.strip()]
    points = [
        (model, _value(raw), result)
        for (model, raw), result in zip(
            ((m, raw) for m in models for raw in raw_values), results, strict=True
        )
    ]
    summaries = summarize_sweep(args.param, points, direction=args.direction)
    now = datetime.now(UTC).replace(tzinfo=None)
    for s in summaries:
        store.save_sweep(s.to_dict(), now)
    return summaries


def _store(args):
    from ..paths import default_db_path
    from ..store import Store

    return Store(args.db or default_db_path())


def cmd_thresholds(args) -> int:
    rows = _store(args).sweeps(model=args.model, param=args.param)
    if args.json:
        print(json.dumps(rows))
        return 0
    if not rows:
        print("no stored sweeps (run `hemlab sweep ...` first)")
    for row in rows:
        print(_describe_stored(row))
    return 0


def _describe_stored(row: dict) -> str:
    points = ", ".join(
        f"{p['value']:g}: x{p['ppl_ratio']:.3f}"
        if isinstance(p["value"], float) and p["ppl_ratio"]
        else f"{p['value']}"
        for p in row["points"]
    )
    head = f"{row['created_at']}  {row['model']}  {row['param']}  [{points}]  id {row['sweep_id']}"
    t = row.get("thresholds")
    if not t:
        return f"{head}\n  {row.get('note', '')}"
    over = ", ".join(
        f">{k}x at {'not reached' if v is None else f'{v:g}'}" for k, v in t["first_over"].items()
    )
    zone = f"{t['robust_zone'][0]:g} .. {t['robust_zone'][-1]:g}" if t["robust_zone"] else "empty"
    knee = "none" if t["knee"] is None else f"{t['knee']:g}"
    return f"{head}\n  {over}; robust zone {zone}; knee {knee}"


def add_parsers(sub, add_spec_options) -> None:
    """Register the analysis subcommands on the `hemlab` subparsers (`add_spec_options`: cli's run options)."""
    th = sub.add_parser(
        "thresholds", help="stored sweep summaries: thresholds 1.1x/2x/10x, knee, robust zone"
    )
    th.add_argument("--model", help="only sweeps of this model")
    th.add_argument("--param", help="only sweeps of this knob (as given to sweep --param)")
    th.add_argument("--db", help="DuckDB results file (default: data/hemlab.duckdb)")
    th.add_argument("--json", action="store_true")


COMMANDS = {"thresholds": cmd_thresholds}
