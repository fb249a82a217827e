"""`hemlab`: the command line. A public contract: options and `--json` output are stable.

    hemlab run --model NAME_OR_PATH [modification options] [--corpus NAME_OR_FILE] [--tokens N] [--db PATH] [--json]
    hemlab sweep --model M --param quant-bits --values 8,6,4 [same options] [--json]
    hemlab models

Errors go to stderr with exit code 2 and no traceback (pass --debug for one).
Modifications given together are applied in a fixed order: pruning, then quantization, then decoding.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import sys
from collections.abc import Callable
from dataclasses import dataclass

from .errors import HemlabError, SpecError
from .spec import Modification, ProbeSettings, Prune, QuantizeRTN, RunSpec, Temperature

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
    p.add_argument("--model", required=True, help="embedded model name (see `hemlab models`), local folder or hub id")
    q = p.add_argument_group("quantization (round-to-nearest, weight-only)")
    q.add_argument("--quant-bits", type=int, help="bits per weight, 2-8")
    q.add_argument("--quant-granularity", choices=["tensor", "channel", "group"], default="channel")
    q.add_argument("--group-size", type=int, default=128, help="inputs per scale for --quant-granularity group")
    q.add_argument("--quant-scheme", choices=["sym", "asym"], default="sym")
    pr = p.add_argument_group("pruning")
    pr.add_argument("--prune-sparsity", type=float, help="share of weights to zero, in [0, 1)")
    pr.add_argument("--prune-method", default="magnitude")
    pr.add_argument("--prune-scope", choices=["row", "tensor"], default="row")
    d = p.add_argument_group("decoding")
    d.add_argument("--temperature", type=float, help="divide the logits the metrics see by T")
    m = p.add_argument_group("measurement")
    m.add_argument("--corpus", default="news", help="built-in corpus name (news, wiki, ...) or a UTF-8 text file")
    m.add_argument("--tokens", type=int, default=4096, help="token budget (non-overlapping windows)")
    m.add_argument("--window", type=int, default=512)
    m.add_argument("--batch-size", type=int, default=8)
    m.add_argument("--device", help="cpu, cuda, cuda:1 ... (default: cuda if available)")
    m.add_argument("--trust-remote-code", action="store_true", help="allow a hub model's own code to run (off by default)")
    p.add_argument("--db", help="DuckDB results file (default: data/hemlab.duckdb)")
    p.add_argument("--json", action="store_true", help="print machine-readable JSON to stdout")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="hemlab", description="Measure model hemorrhage against the original model.")
    parser.add_argument("--debug", action="store_true", help="show tracebacks and debug logs")
    sub = parser.add_subparsers(dest="command", required=True)
    _add_spec_options(sub.add_parser("run", help="profile one modified model"))
    sweep = sub.add_parser("sweep", help="profile one knob over several values")
    _add_spec_options(sweep)
    sweep.add_argument("--param", required=True, choices=sorted(SWEEP_PARAMS))
    sweep.add_argument("--values", required=True, help="comma-separated values, e.g. 8,6,4,3,2")
    models_p = sub.add_parser("models", help="list the embedded models and whether each is prepared")
    models_p.add_argument("--json", action="store_true")
    return parser


def mods_from_args(args: argparse.Namespace) -> tuple[Modification, ...]:
    """Modifications named on the command line, in the fixed order prune -> quantize -> decode."""
    mods: list[Modification] = []
    if args.prune_sparsity is not None:
        mods.append(Prune(sparsity=args.prune_sparsity, method=args.prune_method, scope=args.prune_scope))
    if args.quant_bits is not None:
        mods.append(
            QuantizeRTN(
                bits=args.quant_bits, scheme=args.quant_scheme, granularity=args.quant_granularity, group_size=args.group_size
            )
        )
    if args.temperature is not None:
        mods.append(Temperature(value=args.temperature))
    return tuple(mods)


def spec_from_args(args: argparse.Namespace) -> RunSpec:
    probe = ProbeSettings(corpus=args.corpus, tokens=args.tokens, window=args.window, batch_size=args.batch_size)
    return RunSpec(model=args.model, mods=mods_from_args(args), probe=probe)


def sweep_specs(args: argparse.Namespace) -> list[RunSpec]:
    param = SWEEP_PARAMS[args.param]
    try:
        values = [param.parse(v.strip()) for v in args.values.split(",") if v.strip()]
    except ValueError as exc:
        raise SpecError(f"cannot parse --values {args.values!r} for --param {args.param}: {exc}") from exc
    if not values:
        raise SpecError("--values needs at least one value")
    return [spec_from_args(argparse.Namespace(**{**vars(args), param.dest: v})) for v in values]


def _runner(args):
    from .paths import default_db_path
    from .runner import Runner
    from .store import Store

    return Runner(Store(args.db or default_db_path()), device=args.device, trust_remote_code=args.trust_remote_code)


def _progress(fraction: float, message: str) -> None:
    log.info("%3.0f%% %s", 100 * fraction, message)


def _summary_line(result) -> str:
    m = result.metrics
    return (
        f"{result.spec.label():<32} ppl {m['ppl_base']:.3f} -> {m['ppl']:.3f} (x{m['ppl_ratio']:.3f})  "
        f"KL mean {m['kl_mean']:.4f} p99 {m['kl_p99']:.4f}  top-1 {m['top1_agreement']:.3f}"
        f"{'  [cached]' if result.cached else ''}"
    )


def cmd_run(args) -> int:
    spec = spec_from_args(args)
    result = _runner(args).run(spec, progress=_progress)
    print(json.dumps(result.to_json_dict()) if args.json else _summary_line(result))
    return 0


def cmd_sweep(args) -> int:
    specs = sweep_specs(args)
    results = _runner(args).sweep(specs, progress=_progress)
    if args.json:
        print(json.dumps([r.to_json_dict() for r in results]))
    else:
        for r in results:
            print(_summary_line(r))
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


COMMANDS = {"run": cmd_run, "sweep": cmd_sweep, "models": cmd_models}


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.debug else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    try:
        return COMMANDS[args.command](args)
    except HemlabError as exc:
        print(f"hemlab: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("hemlab: interrupted; nothing partial was stored", file=sys.stderr)
        return 130
    except Exception as exc:  # a bug, not bad input: still no traceback unless asked for
        if args.debug:
            raise
        print(f"hemlab: internal error: {type(exc).__name__}: {exc} (rerun with --debug for details)", file=sys.stderr)
        return 1


def entry() -> None:
    sys.exit(main())


if __name__ == "__main__":
    entry()
