"""The analysis commands over stored runs and on demand: thresholds, memory, modules, flips, claims,
outliers. Argument parsing stops here: the analysis functions below take data."""

from __future__ import annotations

import argparse
import dataclasses
import json

from .options import add_spec_options, runner_from_args, spec_from_args


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


def _runner_and_spec(args):

    return runner_from_args(args), spec_from_args(args)


def cmd_memory(args) -> int:
    from ..analysis.memory import memory_table, pareto_front

    names = [m.strip() for m in args.model.split(",")] if args.model else None
    df = memory_table(_store(args), names)
    if args.pareto:
        df = pareto_front(df)
    if args.json:
        print(df.to_json(orient="records"))
        return 0
    if df.empty:
        print("no stored runs for these models")
        return 0
    cols = [
        "model",
        "label",
        "weight_mib",
        "bytes_source",
        "bits_per_weight",
        "ppl",
        "ppl_ratio",
        "kl_mean",
        "bpb",
    ]
    print(df[cols].to_string(index=False, float_format=lambda v: f"{v:.4g}"))
    return 0


def cmd_modules(args) -> int:
    from ..analysis.modules import rank_modules, to_rows

    runner, spec = _runner_and_spec(args)
    df = rank_modules(runner, spec, corpus=args.calib_corpus, n=args.calib_samples, length=args.calib_len)
    key, _ = runner.cache_key(spec)
    runner.store.save_analysis(key, "module_errors", to_rows(df))
    shown = df.head(args.top)
    if args.json:
        print(
            json.dumps(
                {
                    "run_key": key,
                    "label": spec.label(),
                    "modules": json.loads(shown.to_json(orient="records")),
                }
            )
        )
    else:
        print(
            f"{spec.label()}: {len(df)} modified modules, the {len(shown)} with the largest relative output error"
        )
        print(shown.to_string(index=False, float_format=lambda v: f"{v:.4g}"))
    return 0


def cmd_flips(args) -> int:
    from ..analysis.flips import flip_report

    runner, spec = _runner_and_spec(args)
    report = flip_report(runner, spec, corpus=args.cloze_corpus, n_items=args.items, n_choices=args.choices)
    key, _ = runner.cache_key(spec)
    runner.store.save_analysis(key, "flips", [(report.set_id, k, v) for k, v in report.metrics().items()])
    if args.json:
        print(
            json.dumps({"run_key": key, "label": spec.label(), "set_id": report.set_id, **report.metrics()})
        )
    else:
        print(
            f"{spec.label()} on {report.n_items} cloze items ({report.corpus}, {report.n_choices} choices, "
            f"{report.set_id}): accuracy {report.accuracy_base:.3f} -> {report.accuracy_modified:.3f}; "
            f"flips {report.flips} ({report.flips_right_to_wrong} right->wrong, "
            f"{report.flips_wrong_to_right} wrong->right), {report.changed_choices} answers changed"
        )
    return 0


def cmd_claims(args) -> int:
    from pathlib import Path

    from ..analysis.claims import check_claims, markdown

    runner = runner_from_args(argparse.Namespace(trust_remote_code=False, **vars(args)))
    only = [int(c) for c in args.only.split(",")] if args.only else None
    results = check_claims(runner, model=args.model, tokens=args.tokens, only=only)
    text = markdown(results, model=args.model, tokens=args.tokens)
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(text)
    if args.json:
        print(json.dumps([r.to_dict() for r in results]))
    else:
        print(text)
    return 0


CHART_FORMATS = ("png", "svg", "pdf", "html")


def cmd_outliers(args) -> int:
    from pathlib import Path

    from ..analysis.outliers import measure_outliers, outlier_summary, records, worst, worst_channels
    from ..errors import SpecError
    from ..specs import ProbeSettings

    fmt = Path(args.chart).suffix.lower().lstrip(".") if args.chart else None
    if fmt is not None and fmt not in CHART_FORMATS:
        raise SpecError(f"--chart must end in .{', .'.join(CHART_FORMATS)}, got {args.chart!r}")
    probe = ProbeSettings(corpus=args.corpus, tokens=args.tokens, window=args.window)
    stats = measure_outliers(
        runner_from_args(args),
        args.model,
        probe,
        corpus=args.calib_corpus or args.corpus,
        n=args.calib_samples,
        length=args.calib_len,
        alpha=args.alpha,
    )
    summary = outlier_summary(stats)
    channels = worst_channels(stats, args.top)
    if fmt is not None:
        from .. import charts

        fig = charts.activation_outliers_chart(stats, alpha=args.alpha, top_channels=args.top)
        Path(args.chart).parent.mkdir(parents=True, exist_ok=True)
        Path(args.chart).write_bytes(charts.export_bytes(fig, fmt))
    top = worst(stats)
    if args.json:
        print(
            json.dumps(
                {
                    "model": args.model,
                    "calib_corpus": args.calib_corpus or args.corpus,
                    "calib_samples": args.calib_samples,
                    "calib_len": args.calib_len,
                    "alpha": args.alpha,
                    "worst": None if top is None else dataclasses.asdict(top),
                    "summary": records(summary),
                    "channels": records(channels),
                    "chart": args.chart,
                }
            )
        )
        return 0
    ranked = summary.sort_values("ratio_before", ascending=False).head(args.top)
    print(
        f"{args.model}: max |x| per input channel of {len(summary)} layer inputs, before / after SmoothQuant "
        f"alpha={args.alpha:g} ({args.calib_samples} x {args.calib_len} tokens of {args.calib_corpus or args.corpus})"
    )
    if top is not None:
        print(f"worst channel: {top.text()}")
    print(f"\nthe {len(ranked)} layer inputs whose largest channel stands out most (max / median):")
    print(ranked.to_string(index=False, float_format=lambda v: f"{v:.4g}"))
    print(f"\nthe {len(channels)} largest channels:")
    print(channels.to_string(index=False, float_format=lambda v: f"{v:.4g}"))
    if args.chart:
        print(f"\nchart written to {args.chart}")
    return 0


def add_parsers(sub) -> None:
    """Register the analysis subcommands on the `hemlab` subparsers (`add_spec_options`: cli's run options)."""
    th = sub.add_parser(
        "thresholds", help="stored sweep summaries: thresholds 1.1x/2x/10x, knee, robust zone"
    )
    th.add_argument("--model", help="only sweeps of this model")
    th.add_argument("--param", help="only sweeps of this knob (as given to sweep --param)")
    th.add_argument("--db", help="DuckDB results file (default: data/hemlab.duckdb)")
    th.add_argument("--json", action="store_true")

    mem = sub.add_parser("memory", help="quality vs bytes of weights of every stored run (equal-memory view)")
    mem.add_argument("--model", help="comma-separated models (default: every stored model)")
    mem.add_argument(
        "--pareto", action="store_true", help="only runs no other run beats on both bytes and bpb"
    )
    mem.add_argument("--db", help="DuckDB results file (default: data/hemlab.duckdb)")
    mem.add_argument("--json", action="store_true")

    mods = sub.add_parser("modules", help="per-module output error ||(W'-W)X|| on calibration text, ranked")
    add_spec_options(mods)
    mods.add_argument("--top", type=int, default=20, help="show this many modules (all are stored)")
    mods.add_argument(
        "--calib-corpus", help="calibration text (default: the evaluation corpus, from its end)"
    )
    mods.add_argument("--calib-samples", type=int, default=8)
    mods.add_argument("--calib-len", type=int, default=256)

    flips = sub.add_parser("flips", help="cloze accuracy of the original and modified model and the flips")
    add_spec_options(flips)
    flips.add_argument("--items", type=int, default=64)
    flips.add_argument("--choices", type=int, default=4)
    flips.add_argument(
        "--cloze-corpus", help="corpus the cloze set is made from (default: the evaluation corpus)"
    )

    cl = sub.add_parser(
        "claims", help="check the paper's claims (docs/metrics.md §6) and write the evidence table"
    )
    cl.add_argument("--model", default="smollm2-135m")
    cl.add_argument("--tokens", type=int, default=2048)
    cl.add_argument("--only", help="comma-separated claim numbers (default: all)")
    cl.add_argument("--out", help="write the markdown evidence table here")
    cl.add_argument("--device")
    cl.add_argument("--db", help="DuckDB results file (default: data/hemlab.duckdb); runs are reused")
    cl.add_argument("--json", action="store_true")

    out = sub.add_parser(
        "outliers",
        help="max |activation| per input channel of every layer, before and after SmoothQuant smoothing",
    )
    out.add_argument("--model", required=True, help="embedded model name, local folder or hub id")
    out.add_argument(
        "--corpus",
        default="news",
        help="evaluation corpus: calibration on it leaves its evaluation tokens out",
    )
    out.add_argument("--calib-corpus", help="calibration text, sequences from its end (default: --corpus)")
    out.add_argument("--calib-samples", type=int, default=16)
    out.add_argument("--calib-len", type=int, default=512)
    out.add_argument("--tokens", type=int, default=4096, help="evaluation budget, as in `hemlab run`")
    out.add_argument("--window", type=int, default=512)
    out.add_argument("--alpha", type=float, default=0.5, help="SmoothQuant migration strength in [0, 1]")
    out.add_argument(
        "--top", type=int, default=10, help="layer inputs and channels to list; channels labelled"
    )
    out.add_argument("--chart", help="write the chart here: .png, .svg, .pdf or .html")
    out.add_argument("--device")
    out.add_argument("--trust-remote-code", action="store_true")
    out.add_argument("--db", help="DuckDB results file (default: data/hemlab.duckdb); nothing is stored")
    out.add_argument("--json", action="store_true")


COMMANDS = {
    "thresholds": cmd_thresholds,
    "memory": cmd_memory,
    "modules": cmd_modules,
    "flips": cmd_flips,
    "claims": cmd_claims,
    "outliers": cmd_outliers,
}
