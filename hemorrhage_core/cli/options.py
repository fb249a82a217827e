"""The options every measuring command shares, and how they become specs: shorthand flags, `--mod` strings
(parsed by specs.parse_mod), sweep points (`--values` parsed once, here)."""

from __future__ import annotations

import argparse
import dataclasses
import logging
from collections.abc import Callable
from dataclasses import dataclass

from ..errors import SpecError
from ..specs import (
    MODIFICATIONS,
    Modification,
    ProbeSettings,
    Prune,
    QuantizeRTN,
    RunSpec,
    Temperature,
    parse_mod,
    parse_value,
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


def add_spec_options(p: argparse.ArgumentParser) -> None:
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
        "--dtype",
        choices=["float32", "bfloat16", "float16"],
        help="precision of the models (default: bfloat16 on a GPU, float16 where it lacks bf16, float32 on CPU); "
        "runs in another precision are stored apart",
    )
    m.add_argument(
        "--device-map",
        choices=["auto"],
        help="auto: a model larger than one GPU spread over every visible GPU, then offloaded to the CPU "
        "(accelerate); the plan is checked against free memory before loading",
    )
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


def mods_from_args(args: argparse.Namespace) -> tuple[Modification, ...]:
    """Modifications named on the command line, in the fixed order checkpoint -> prune -> quantize -> decode."""
    mods: list[Modification] = []
    if getattr(args, "against", None):
        from ..identity import against_spec  # reads the checkpoint's file list for the cache key

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
                    spec = _set_field(base, kind, field_name, parse_value(raw, default))
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


def runner_from_args(args):
    from ..paths import default_db_path
    from ..runner import Runner
    from ..store import Store

    return Runner(
        Store(args.db or default_db_path()),
        device=args.device,
        dtype=getattr(args, "dtype", None),
        device_map=getattr(args, "device_map", None),
        trust_remote_code=args.trust_remote_code,
        allow_pickle=getattr(args, "allow_pickle", False),
    )


def log_progress(fraction: float, message: str) -> None:
    log.info("%3.0f%% %s", 100 * fraction, message)
