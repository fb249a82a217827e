"""The measuring commands: run, sweep, generate, mitigate."""

from __future__ import annotations

import dataclasses
import json
import logging
import math

from ..errors import SpecError
from .options import (
    SWEEP_PARAMS,
    add_spec_options,
    log_progress,
    runner_from_args,
    spec_from_args,
    sweep_points,
)
from .tasks import add_task_options, describe, task_request

log = logging.getLogger("hemlab")


def _summary_line(result) -> str:
    m = result.metrics
    return (
        f"{result.spec.label():<32} ppl {m['ppl_base']:.3f} -> {m['ppl']:.3f} (x{m['ppl_ratio']:.3f})  "
        f"KL mean {m['kl_mean']:.4f} p99 {m['kl_p99']:.4f}  top-1 {m['top1_agreement']:.3f}"
        + (f"  coverage {m['coverage']:.1%}" if m.get("coverage") is not None else "")
        + f"{'  [cached]' if result.cached else ''}"
    )


def _tasks_of(args, runner, spec):
    """The task reports of `spec` when --tasks was given (after its run), else None."""
    request = task_request(args)
    if request is None:
        return None
    from ..tasks.evaluate import evaluate_tasks

    entries, subset = request
    return evaluate_tasks(runner, spec, entries, subset, progress=log_progress)


def _with_tasks(run_json: dict, reports) -> dict:
    """The run's JSON object plus "tasks" (one object per task) when tasks were evaluated: additive."""
    if reports is None:
        return run_json
    return {**run_json, "tasks": {r.entry.name: r.to_json_dict() for r in reports}}


def cmd_run(args) -> int:
    spec = spec_from_args(args)
    task_request(args)  # bad task options fail before any computation
    runner = runner_from_args(args)
    result = runner.run(spec, progress=log_progress)
    reports = _tasks_of(args, runner, spec)
    if args.json:
        print(json.dumps(_with_tasks(result.to_json_dict(), reports)))
    else:
        print(_summary_line(result))
        if reports:
            print(describe(reports, spec.label()))
    return 0


def cmd_sweep(args) -> int:
    from ..analysis.sweeps import record_sweep
    from ..executors import make_executor

    points = sweep_points(args)
    task_request(args)  # bad task options fail before any computation
    executor = make_executor(
        args.executor, address=args.address, workers=args.workers, worker_threads=args.worker_threads
    )
    runner = runner_from_args(args)
    results = executor.run(runner, [p.spec for p in points], progress=log_progress)
    reports = [_tasks_of(args, runner, p.spec) for p in points]
    # thresholds, knee, robust zone (and accuracy-drop thresholds per task): stored
    summaries = record_sweep(args.param, args.direction, runner.store, points, results, reports)
    if args.summary_json:
        print(json.dumps([s.to_dict() for s in summaries]))
    elif args.json:
        print(json.dumps([_with_tasks(r.to_json_dict(), t) for r, t in zip(results, reports, strict=True)]))
    else:
        for r, t in zip(results, reports, strict=True):
            print(_summary_line(r))
            if t:
                print(describe(t, r.spec.label()))
        for s in summaries:
            print(s.describe())
    return 0


def cmd_generate(args) -> int:
    from ..generation import GenerationSettings, generation_divergence

    try:
        seeds = tuple(int(v) for v in args.seeds.split(",") if v.strip())
    except ValueError as exc:
        raise SpecError(f"--seeds must be comma-separated integers, got {args.seeds!r}") from exc
    settings = GenerationSettings(max_new_tokens=args.max_new_tokens, sample=not args.greedy, seeds=seeds)
    result = generation_divergence(runner_from_args(args), spec_from_args(args), args.prompt, settings)
    if args.json:
        print(json.dumps(result.to_json_dict()))
        return 0
    s = result.summary
    print(
        f"{result.settings['label']}: matching prefix {s['gen_matching_prefix_mean']:.1f}/{args.max_new_tokens} "
        f"tokens, identical {s['gen_identical_share']:.0%}, trajectory KL {s['gen_traj_kl_mean']:.4f}"
    )
    for r in result.rollouts.itertuples():
        at = f"diverges at token {r.matching_prefix}" if r.diverged else "identical"
        print(
            f"[prompt {r.prompt_index}, seed {r.seed}] {at}\n  original: {r.base_text!r}\n  modified: {r.mod_text!r}"
        )
    return 0


def cmd_mitigate(args) -> int:
    """Before (the chain as given), then the chain with each remedy (or the --remedy set) on the same tokens."""
    from ..mitigation import CalibrationSet, Comparison, applicable, mitigate

    spec = spec_from_args(args)
    if not spec.mods:
        raise SpecError(
            "hemlab mitigate needs the modification to repair: --mod KIND:... or a shorthand flag"
        )
    calib = CalibrationSet(args.calib_corpus or spec.probe.corpus, args.calib_samples, args.calib_len)
    choices = [args.remedy] if args.remedy else [[r.name] for r in applicable(spec.mods)]
    if not choices:
        raise SpecError(f"no remedy applies to {spec.label()} (see `hemlab mitigate --help`)")
    from ..tasks.evaluate import recovered_accuracy

    task_request(args)  # bad task options fail before any computation
    runner = runner_from_args(args)
    before = runner.run(spec, progress=log_progress)
    before_tasks = _tasks_of(args, runner, spec)
    comparisons = []
    for names in choices:
        fixed = dataclasses.replace(spec, mods=mitigate(spec.mods, names, calib))
        after = runner.run(fixed, progress=log_progress)
        comparisons.append((names, Comparison(before, after), _tasks_of(args, runner, fixed)))
    if args.json:
        print(json.dumps({
            "before": _with_tasks(before.to_json_dict(), before_tasks),
            "mitigations": [
                {"remedies": names, "after": _with_tasks(c.after.to_json_dict(), t),
                 "recovered_ppl": _finite(c.recovered("ppl_ratio")),
                 "recovered_kl": _finite(c.recovered("kl_mean")), "beyond_repair": c.beyond_repair,
                 **({"recovered_accuracy": recovered_accuracy(before_tasks, t)} if t is not None else {})}
                for names, c, t in comparisons
            ],
        }))  # fmt: skip
        return 0
    print(f"before: {_summary_line(before)}")
    if before_tasks:
        print(describe(before_tasks, "before"))
    for names, c, t in comparisons:
        m = c.after.metrics
        print(
            f"{'+ ' + ' + '.join(names):<48} ppl x{m['ppl_ratio']:.3f}  KL mean {m['kl_mean']:.4f}  "
            f"top-1 {m['top1_agreement']:.3f}  recovered: perplexity {c.recovered('ppl_ratio'):.0%}, "
            f"KL {c.recovered('kl_mean'):.0%}{'  BEYOND REPAIR' if c.beyond_repair else ''}"
        )
        if t:
            print(describe(t, "after " + " + ".join(names)))
            for task, rec in recovered_accuracy(before_tasks, t).items():
                share = "n/a (no accuracy lost)" if rec["recovered"] is None else f"{rec['recovered']:.0%}"
                print(
                    f"  {task}: accuracy drop {rec['drop_before']:+.3f} -> {rec['drop_after']:+.3f}, recovered {share}"
                )
    return 0


def _finite(value: float) -> float | None:
    """JSON has no NaN or infinity: such a value (nothing to recover, an infinite KL) becomes null."""
    return value if math.isfinite(value) else None


def add_parsers(sub) -> None:
    """The measuring subcommands and their options."""
    run = sub.add_parser("run", help="profile one modified model")
    add_spec_options(run)
    add_task_options(run)
    sweep = sub.add_parser("sweep", help="profile one knob over several values")
    add_spec_options(sweep)
    add_task_options(sweep)
    sweep.add_argument("--param", required=True, help=f"{', '.join(sorted(SWEEP_PARAMS))} or KIND.FIELD")
    sweep.add_argument("--values", required=True, help="comma-separated values, e.g. 8,6,4,3,2")
    sweep.add_argument(
        "--direction",
        choices=["auto", "ascending", "descending"],
        default="auto",
        help="direction of the knob in which damage grows (auto: where the ppl ratio is higher)",
    )
    from ..executors import EXECUTORS  # no torch and no ray at parse time

    ex = sweep.add_argument_group("where the points are measured")
    ex.add_argument(
        "--executor",
        choices=sorted(EXECUTORS),
        default="serial",
        help="serial: one after another in this process (default); ray: spread over a Ray cluster, one worker "
        "per GPU or CPU slot, stored here as each point arrives (docs/performance.md#sweeps-on-a-ray-cluster)",
    )
    ex.add_argument(
        "--address",
        help="--executor ray: the cluster (auto: the one `ray start --head` runs here; HOST:6379; "
        "ray://HOST:10001); default: auto, or a new local cluster when none runs",
    )
    ex.add_argument(
        "--workers", type=int, help="--executor ray: at most this many workers (default: one per slot)"
    )
    ex.add_argument(
        "--worker-threads",
        type=int,
        help="--executor ray: torch threads of each CPU worker (default: this process's, which keeps CPU numbers "
        "bit-identical to a serial sweep here)",
    )
    sweep.add_argument(
        "--summary-json",
        action="store_true",
        help="print the sweep summaries (thresholds, knee) as JSON instead",
    )
    gen = sub.add_parser("generate", help="generation divergence: original vs modified continuations")
    add_spec_options(gen)
    gen.add_argument(
        "--prompt", action="append", default=[], help="a prompt (repeatable; default: built-in set)"
    )
    gen.add_argument("--max-new-tokens", type=int, default=32)
    gen.add_argument("--seeds", default="0,1", help="comma-separated sampling seeds")
    gen.add_argument("--greedy", action="store_true", help="argmax decoding instead of seeded sampling")
    mit = sub.add_parser(
        "mitigate", help="the paper's remedies on a damaged chain: before / after and the recovered fractions"
    )
    add_spec_options(mit)
    from ..mitigation import REMEDIES  # specs and pandas only: no torch at parse time

    mit.add_argument(
        "--remedy",
        action="append",
        default=[],
        choices=list(REMEDIES),
        help="a remedy (repeatable: combined into one chain); default: each applicable remedy alone",
    )
    mit.add_argument(
        "--calib-corpus", help="calibration text of the remedies (default: the evaluation corpus)"
    )
    mit.add_argument("--calib-samples", type=int, help="calibration sequences (default: each method's own)")
    mit.add_argument(
        "--calib-len", type=int, help="tokens per calibration sequence (default: each method's own)"
    )
    add_task_options(mit)


COMMANDS = {"run": cmd_run, "sweep": cmd_sweep, "generate": cmd_generate, "mitigate": cmd_mitigate}
