"""`hemlab`: the command line. A public contract: options and `--json` output are stable.

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

Errors go to stderr with exit code 2 and no traceback (pass --debug for one).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import math
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass

from .errors import HemlabError, SpecError
from .specs import (
    MODIFICATIONS,
    Modification,
    ProbeSettings,
    Prune,
    QuantizeRTN,
    RunSpec,
    Temperature,
)

log = logging.getLogger("hemlab")


@dataclass(frozen=True)
class SweepParam:
    """A numeric knob `sweep` can vary: which argparse destination it sets, and how to parse one value."""

    dest: str
    parse: Callable[[str], object]


SWEEP_PARAMS: dict[str, SweepParam] = {
    "quant-bits": SweepParam("quant_bits", int),
    "group-size": SweepParam("group_size", int),
    "prune-sparsity": SweepParam("prune_sparsity", float),
    "temperature": SweepParam("temperature", float),
}


def _add_spec_options(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--model", required=True, help="embedded model name (see `hemlab models`), local folder or hub id"
    )
    p.add_argument(
        "--against",
        metavar="CHECKPOINT",
        help="measure this checkpoint of the model instead of modifying it: a folder, .gguf file or hub id with "
        "the same tokenizer (other modifications then apply to it)",
    )
    q = p.add_argument_group("quantization (round-to-nearest, weight-only)")
    q.add_argument("--quant-bits", type=int, help="bits per weight, 2-8")
    q.add_argument("--quant-granularity", choices=["tensor", "channel", "group"], default="channel")
    q.add_argument(
        "--group-size", type=int, default=128, help="inputs per scale for --quant-granularity group"
    )
    q.add_argument("--quant-scheme", choices=["sym", "asym"], default="sym")
    pr = p.add_argument_group("pruning")
    pr.add_argument("--prune-sparsity", type=float, help="share of weights to zero, in [0, 1)")
    pr.add_argument("--prune-method", default="magnitude")
    pr.add_argument("--prune-scope", choices=["row", "tensor"], default="row")
    d = p.add_argument_group("decoding")
    d.add_argument("--temperature", type=float, help="divide the logits the metrics see by T")
    p.add_argument(
        "--mod",
        action="append",
        default=[],
        metavar="KIND:key=value,...",
        help="any modification of the catalogue (see `hemlab mods`), repeatable, applied in order",
    )
    m = p.add_argument_group("measurement")
    m.add_argument(
        "--corpus", default="news", help="built-in corpus name (news, wiki, ...) or a UTF-8 text file"
    )
    m.add_argument("--tokens", type=int, default=4096, help="token budget (non-overlapping windows)")
    m.add_argument("--window", type=int, default=512)
    m.add_argument("--batch-size", type=int, default=8)
    m.add_argument(
        "--attn-probes",
        type=int,
        default=4,
        help="attention probe set: this many evaluation windows ... (default 4)",
    )
    m.add_argument(
        "--attn-len", type=int, default=128, help="... read over their first N tokens (default 128)"
    )
    m.add_argument(
        "--top-k", type=int, default=256, help="base tokens kept per position for KL (default 256)"
    )
    m.add_argument("--device", help="cpu, cuda, cuda:1 ... (default: cuda if available)")
    m.add_argument(
        "--trust-remote-code",
        action="store_true",
        help="allow a hub model's own code to run (off by default)",
    )
    m.add_argument(
        "--allow-pickle",
        action="store_true",
        help="read pickled weights (pytorch_model.bin) of a folder without safetensors: runs code from the file",
    )
    p.add_argument("--db", help="DuckDB results file (default: data/hemlab.duckdb)")
    p.add_argument("--json", action="store_true", help="print machine-readable JSON to stdout")


class _Parser(argparse.ArgumentParser):
    """argparse with a one-line error (its default prints the whole usage first) and the same exit code 2."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message} (see `{self.prog} --help`)\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="hemlab", description="Measure model hemorrhage against the original model.")
    parser.add_argument("--debug", action="store_true", help="show tracebacks and debug logs")
    sub = parser.add_subparsers(dest="command", required=True)
    _add_spec_options(sub.add_parser("run", help="profile one modified model"))
    sweep = sub.add_parser("sweep", help="profile one knob over several values")
    _add_spec_options(sweep)
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
    gen = sub.add_parser("generate", help="generation divergence: original vs modified continuations")
    _add_spec_options(gen)
    gen.add_argument(
        "--prompt", action="append", default=[], help="a prompt (repeatable; default: built-in set)"
    )
    gen.add_argument("--max-new-tokens", type=int, default=32)
    gen.add_argument("--seeds", default="0,1", help="comma-separated sampling seeds")
    gen.add_argument("--greedy", action="store_true", help="argmax decoding instead of seeded sampling")
    mit = sub.add_parser(
        "mitigate", help="the paper's remedies on a damaged chain: before / after and the recovered fractions"
    )
    _add_spec_options(mit)
    from .mitigation import REMEDIES  # specs and pandas only: no torch at parse time

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
    from .analysis import commands as analysis_commands  # thresholds, claims, memory, modules, flips

    analysis_commands.add_parsers(sub, _add_spec_options)
    return parser


def _parse_value(raw: str, default):
    """Parse one option value using the type of the field's default (bool accepts true/false/1/0)."""
    if isinstance(default, bool):
        if raw.lower() not in ("true", "false", "1", "0", "yes", "no"):
            raise ValueError(f"expected true or false, got {raw!r}")
        return raw.lower() in ("true", "1", "yes")
    if isinstance(default, (int, float, str)):
        return type(default)(raw)
    for cast in (int, float):
        try:
            return cast(raw)
        except ValueError:
            pass
    return None if raw.lower() == "none" else raw


def parse_mod(text: str) -> Modification:
    """'gptq:bits=4,group_size=128' -> the registered dataclass with those options (others at defaults)."""
    kind, _, options = text.partition(":")
    cls = MODIFICATIONS.get(kind.strip())
    if cls is None:
        raise SpecError(
            f"unknown modification {kind!r}; known: {', '.join(sorted(MODIFICATIONS))} (see `hemlab mods`)"
        )
    fields = {f.name: f for f in dataclasses.fields(cls)}
    values = {}
    for item in filter(None, (o.strip() for o in options.split(","))):
        key, eq, raw = item.partition("=")
        if not eq or key not in fields:
            raise SpecError(f"{kind}: bad option {item!r}; options are {', '.join(fields)}")
        default = fields[key].default
        try:
            values[key] = _parse_value(raw, None if default is dataclasses.MISSING else default)
        except ValueError as exc:
            raise SpecError(f"{kind}: cannot parse {key}={raw!r}: {exc}") from exc
    return cls(**values)


def mods_from_args(args: argparse.Namespace) -> tuple[Modification, ...]:
    """Modifications named on the command line, in the fixed order checkpoint -> prune -> quantize -> decode."""
    mods: list[Modification] = []
    if getattr(args, "against", None):
        from .identity import against_spec  # reads the checkpoint's file list for the cache key

        mods.append(against_spec(args.against))
    if args.prune_sparsity is not None:
        mods.append(Prune(sparsity=args.prune_sparsity, method=args.prune_method, scope=args.prune_scope))
    if args.quant_bits is not None:
        mods.append(
            QuantizeRTN(
                bits=args.quant_bits,
                scheme=args.quant_scheme,
                granularity=args.quant_granularity,
                group_size=args.group_size,
            )
        )
    if args.temperature is not None:
        mods.append(Temperature(value=args.temperature))
    mods.extend(parse_mod(text) for text in args.mod)
    return tuple(mods)


def spec_from_args(args: argparse.Namespace) -> RunSpec:
    probe = ProbeSettings(
        corpus=args.corpus,
        tokens=args.tokens,
        window=args.window,
        batch_size=args.batch_size,
        attn_probes=args.attn_probes,
        attn_len=args.attn_len,
        top_k=args.top_k,
    )
    return RunSpec(model=args.model, mods=mods_from_args(args), probe=probe)


def _set_field(spec: RunSpec, kind: str, field_name: str, value) -> RunSpec:
    """Set KIND.FIELD on the spec's modification of that kind (appending one at defaults if absent)."""
    mods = list(spec.mods)
    for i, mod in enumerate(mods):
        if mod.kind == kind:
            mods[i] = dataclasses.replace(mod, **{field_name: value})
            return spec.with_mods(*mods)
    return spec.with_mods(*mods, MODIFICATIONS[kind](**{field_name: value}))


def _unique(items: list[str], flag: str) -> list[str]:
    """`items` without repeats, in order; a repeat is reported (it would be measured once either way)."""
    seen = list(dict.fromkeys(items))
    if len(seen) < len(items):
        repeats = sorted({x for x in items if items.count(x) > 1})
        log.warning("%s repeats %s: each is measured once", flag, ", ".join(repeats))
    return seen


@dataclasses.dataclass(frozen=True)
class SweepPoint:
    """One planned point of a sweep: the model, the --values item as given, and the spec it becomes."""

    model: str
    raw: str
    spec: RunSpec


def sweep_points(args: argparse.Namespace) -> list[SweepPoint]:
    """One point per (model, value), model-major: the shorthand flag or KIND.FIELD set to each value of --values.
    --values is parsed here only; repeated models, values, or values that name the same spec are measured once
    and reported."""
    raw_values = _unique([v.strip() for v in args.values.split(",") if v.strip()], "--values")
    if not raw_values:
        raise SpecError("--values needs at least one value")
    model_names = _unique([m.strip() for m in args.model.split(",") if m.strip()], "--model")
    if not model_names:
        raise SpecError(f"--model {args.model!r} names no model; give one or more, separated by commas")
    points = []
    try:
        if args.param in SWEEP_PARAMS:
            param = SWEEP_PARAMS[args.param]
            for model in model_names:
                for raw in raw_values:
                    ns = argparse.Namespace(**{**vars(args), "model": model, param.dest: param.parse(raw)})
                    points.append(SweepPoint(model, raw, spec_from_args(ns)))
        else:
            kind, _, field_name = args.param.partition(".")
            cls = MODIFICATIONS.get(kind)
            fields = {f.name: f for f in dataclasses.fields(cls)} if cls else {}
            if field_name not in fields:
                raise SpecError(
                    f"unknown sweep parameter {args.param!r}: use one of {', '.join(sorted(SWEEP_PARAMS))} "
                    "or KIND.FIELD (see `hemlab mods`)"
                )
            default = fields[field_name].default
            for model in model_names:
                base = spec_from_args(argparse.Namespace(**{**vars(args), "model": model}))
                for raw in raw_values:
                    spec = _set_field(base, kind, field_name, _parse_value(raw, default))
                    points.append(SweepPoint(model, raw, spec))
    except ValueError as exc:
        raise SpecError(f"cannot parse --values {args.values!r} for --param {args.param}: {exc}") from exc
    unique = list({p.spec: p for p in reversed(points)}.values())[::-1]  # first spelling of each spec wins
    if len(unique) < len(points):
        kept = {id(p) for p in unique}
        log.warning(
            "--values %s name a setting already in the sweep: measured once",
            ", ".join(p.raw for p in points if id(p) not in kept),
        )
    return unique


def sweep_specs(args: argparse.Namespace) -> list[RunSpec]:
    """The specs of `sweep_points`, in order."""
    return [p.spec for p in sweep_points(args)]


def _runner(args):
    from .paths import default_db_path
    from .runner import Runner
    from .store import Store

    return Runner(
        Store(args.db or default_db_path()),
        device=args.device,
        trust_remote_code=args.trust_remote_code,
        allow_pickle=getattr(args, "allow_pickle", False),
    )


def _progress(fraction: float, message: str) -> None:
    log.info("%3.0f%% %s", 100 * fraction, message)


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
    result = _runner(args).run(spec, progress=_progress)
    print(json.dumps(result.to_json_dict()) if args.json else _summary_line(result))
    return 0


def cmd_sweep(args) -> int:
    from .analysis.commands import record_sweep

    points = sweep_points(args)
    runner = _runner(args)
    results = runner.sweep([p.spec for p in points], progress=_progress)
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


def cmd_models(args) -> int:
    from . import models

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


def cmd_archs(args) -> int:
    from . import archs

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


def cmd_generate(args) -> int:
    from .generation import GenerationSettings, generation_divergence

    try:
        seeds = tuple(int(v) for v in args.seeds.split(",") if v.strip())
    except ValueError as exc:
        raise SpecError(f"--seeds must be comma-separated integers, got {args.seeds!r}") from exc
    settings = GenerationSettings(max_new_tokens=args.max_new_tokens, sample=not args.greedy, seeds=seeds)
    result = generation_divergence(_runner(args), spec_from_args(args), args.prompt, settings)
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
    from .mitigation import CalibrationSet, Comparison, applicable, mitigate

    spec = spec_from_args(args)
    if not spec.mods:
        raise SpecError(
            "hemlab mitigate needs the modification to repair: --mod KIND:... or a shorthand flag"
        )
    calib = CalibrationSet(args.calib_corpus or spec.probe.corpus, args.calib_samples, args.calib_len)
    choices = [args.remedy] if args.remedy else [[r.name] for r in applicable(spec.mods)]
    if not choices:
        raise SpecError(f"no remedy applies to {spec.label()} (see `hemlab mitigate --help`)")
    runner = _runner(args)
    before = runner.run(spec, progress=_progress)
    comparisons = []
    for names in choices:
        fixed = dataclasses.replace(spec, mods=mitigate(spec.mods, names, calib))
        comparisons.append((names, Comparison(before, runner.run(fixed, progress=_progress))))
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


COMMANDS = {
    "mitigate": cmd_mitigate,
    "run": cmd_run,
    "sweep": cmd_sweep,
    "models": cmd_models,
    "mods": cmd_mods,
    "archs": cmd_archs,
    "generate": cmd_generate,
}


def _command(name: str):
    """The handler of a subcommand: the core ones above, or one of the analysis package's."""
    if name in COMMANDS:
        return COMMANDS[name]
    from .analysis.commands import COMMANDS as ANALYSIS_COMMANDS

    return ANALYSIS_COMMANDS[name]


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


if __name__ == "__main__":
    entry()
