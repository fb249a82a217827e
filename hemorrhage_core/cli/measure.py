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

log = logging.getLogger("hemlab")


def _summary_line(result) -> str:
    m = result.metrics
    return (
        f"{result.spec.label():<32} ppl {m['ppl_base']:.3f} -> {m['ppl']:.3f} (x{m['ppl_ratio']:.3f})  "
        f"KL mean {m['kl_mean']:.4f} p99 {m['kl_p99']:.4f}  top-1 {m['top1_agreement']:.3f}"
        + (f"  coverage {m['coverage']:.1%}" if m.get("coverage") is not None else "")
        + f"{'  [cached]' if result.cached else ''}"
    )


def cmd_run(args) -> int:
    spec = spec_from_args(args)
    result = runner_from_args(args).run(spec, progress=log_progress)
    print(json.dumps(result.to_json_dict()) if args.json else _summary_line(result))
    return 0


def cmd_sweep(args) -> int:
    from ..analysis.sweeps import record_sweep

    points = sweep_points(args)
    runner = runner_from_args(args)
    results = runner.sweep([p.spec for p in points], progress=log_progress)
    # thresholds, knee, robust zone: stored
    summaries = record_sweep(args.param, args.direction, runner.store, points, results)
    if args.summary_json:
        print(json.dumps([s.to_dict() for s in summaries]))
    elif args.json:
        print(json.dumps([r.to_json_dict() for r in results]))
    else:
        for r in results:
            print(_summary_line(r))
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
    runner = runner_from_args(args)
    before = runner.run(spec, progress=log_progress)
    comparisons = []
    for names in choices:
        fixed = dataclasses.replace(spec, mods=mitigate(spec.mods, names, calib))
        comparisons.append((names, Comparison(before, runner.run(fixed, progress=log_progress))))
    if args.json:
        print(json.dumps({
            "before": before.to_json_dict(),
            "mitigations": [
                {"remedies": names, "after": c.after.to_json_dict(), "recovered_ppl": _finite(c.recovered("ppl_ratio")),
                 "recovered_kl": _finite(c.recovered("kl_mean")), "beyond_repair": c.beyond_repair}
                for names, c in comparisons
            ],
        }))  # fmt: skip
        return 0
    print(f"before: {_summary_line(before)}")
    for names, c in comparisons:
        m = c.after.metrics
        print(
            f"{'+ ' + ' + '.join(names):<48} ppl x{m['ppl_ratio']:.3f}  KL mean {m['kl_mean']:.4f}  "
            f"top-1 {m['top1_agreement']:.3f}  recovered: perplexity {c.recovered('ppl_ratio'):.0%}, "
            f"KL {c.recovered('kl_mean'):.0%}{'  BEYOND REPAIR' if c.beyond_repair else ''}"
        )
    return 0


def _finite(value: float) -> float | None:
    """JSON has no NaN or infinity: such a value (nothing to recover, an infinite KL) becomes null."""
    return value if math.isfinite(value) else None


def add_parsers(sub) -> None:
    """The measuring subcommands and their options."""
    add_spec_options(sub.add_parser("run", help="profile one modified model"))
    sweep = sub.add_parser("sweep", help="profile one knob over several values")
    add_spec_options(sweep)
    sweep.add_argument("--param", required=True, help=f"{', '.join(sorted(SWEEP_PARAMS))} or KIND.FIELD")
    sweep.add_argument("--values", required=True, help="comma-separated values, e.g. 8,6,4,3,2")
    sweep.add_argument(
        "--direction",
        choices=["auto", "ascending", "descending"],
        default="auto",
        help="direction of the knob in which damage grows (auto: where the ppl ratio is higher)",
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


COMMANDS = {"run": cmd_run, "sweep": cmd_sweep, "generate": cmd_generate, "mitigate": cmd_mitigate}
