"""Quantization catalogue on a real model: the tables of docs/quantization.md, measured in one run.

    .venv/bin/python bench/quant_table.py [--model smollm2-135m] [--tokens 2048] [--db PATH] [--only gptq,act,awq,bnb,grid]

Sections (each a markdown table on stdout):
  gptq  RTN vs GPTQ at 4 and 3 bits, group 128, symmetric: perplexity and KL (GPTQ beats RTN at 4 and 3 bits)
  grid  RTN vs GPTQ at 8/4/3/2 bits, per-channel and group-128 scales
  act   W8A8 / W4A8: static per-tensor vs dynamic per-token vs SmoothQuant + static, with recovered fractions
  awq   weight-only 3/4-bit RTN vs AWQ-style searched scales, with recovered fractions
  bnb   bitsandbytes LLM.int8() and NF4/FP4
  outliers  max |activation| per input channel before/after smoothing, summarised per layer group

Every row gives the footprint (bits per weight, weight MiB) and the runtime on this machine: `modify_s` (quantize
/ calibrate) and `profile_s` (the measurement pass). Results go to `--db` (a throw-away file by default), so a
second run with the same file only prints. The recovered fraction is (damage_before − damage_after) /
damage_before with damage = ppl_ratio − 1 (and = mean KL for the KL column).
"""

from __future__ import annotations

import argparse
import logging
import tempfile

from hemorrhage_core.runner import Runner
from hemorrhage_core.specs import ProbeSettings, RunSpec, parse_mod
from hemorrhage_core.store import Store

# Calibration used by every calibrated method in these tables: 16 sequences of 512 tokens from the end of the news
# corpus (never overlapping the evaluation windows at its start). GPTQ's default is 32 x 512; 16 halves its
# block-by-block calibration time on 2 cores.
CALIB = "calib_corpus=news,calib_samples=16,calib_len=512"

GPTQ_VS_RTN = [
    (f"quant_rtn:bits={b},granularity=group,group_size=128", f"gptq:bits={b},group_size=128,{CALIB}")
    for b in (4, 3)
]
GRID = [
    (f"quant_rtn:bits={b},granularity={'group' if g != -1 else 'channel'},group_size={128 if g == -1 else g}", f"gptq:bits={b},group_size={g},{CALIB}")
    for b in (8, 4, 3, 2)
    for g in (-1, 128)
]  # fmt: skip
ACT = {  # setting -> (unmitigated, [(remedy name, mods)])
    f"W{w}A8": (
        f"act_quant:w_bits={w},a_bits=8,a_mode=static,{CALIB}",
        [
            ("dynamic per-token", f"act_quant:w_bits={w},a_bits=8,a_mode=dynamic"),
            ("dynamic + outliers>6", f"act_quant:w_bits={w},a_bits=8,a_mode=dynamic,outlier_threshold=6"),
            (
                "SmoothQuant α=0.5 + static",
                f"smoothquant:alpha=0.5,{CALIB} act_quant:w_bits={w},a_bits=8,a_mode=static,{CALIB}",
            ),
            (
                "SmoothQuant α=0.5 + dynamic",
                f"smoothquant:alpha=0.5,{CALIB} act_quant:w_bits={w},a_bits=8,a_mode=dynamic",
            ),
        ],
    )
    for w in (8, 4)
}
AWQ_VS_RTN = [
    (
        f"quant_rtn:bits={b},scheme=asym,granularity=group,group_size=128",
        f"awq:bits={b},group_size=128,{CALIB}",
    )
    for b in (4, 3)
]
BNB = [
    "bnb_int8:threshold=6",
    "bnb_int8:threshold=0",
    "bnb_4bit:quant_type=nf4",
    "bnb_4bit:quant_type=fp4",
    "quant_rtn:bits=4,granularity=group,group_size=64",
]


def run(runner: Runner, model: str, probe: ProbeSettings, mods: str):
    spec = RunSpec(model, tuple(parse_mod(t) for t in mods.split()), probe)
    return runner.run(spec)


def recovered(before: float, after: float) -> float:
    """(damage_before − damage_after) / damage_before; damage is already 'ratio − 1' or a KL."""
    return (before - after) / before if before > 0 else float("nan")


def row(r, extra: str = "") -> str:
    m = r.metrics
    return (
        f"| {r.spec.label()} | {m['ppl']:.2f} | {m['ppl_ratio']:.3f} | {m['kl_mean']:.4f} | {m['top1_agreement']:.3f} | "
        f"{m.get('bits_per_weight', float('nan')):.2f} | {m.get('weight_bytes', float('nan')) / 2**20:.1f} | "
        f"{m['modify_s']:.0f} | {m['profile_s']:.0f} |{extra}"
    )


HEADER = "| method | ppl | ppl ratio | KL mean | top-1 | bits/w | weight MiB | modify s | profile s |"


def table_pairs(runner, model, probe, pairs, title):
    print(f"\n### {title}\n\n{HEADER} recovered (ppl) | recovered (KL) |\n|{'---|' * 11}")
    for before_mods, after_mods in pairs:
        before, after = run(runner, model, probe, before_mods), run(runner, model, probe, after_mods)
        db, da = before.metrics["ppl_ratio"] - 1, after.metrics["ppl_ratio"] - 1
        kb, ka = before.metrics["kl_mean"], after.metrics["kl_mean"]
        print(row(before, " | |"))
        print(row(after, f" {recovered(db, da):.2f} | {recovered(kb, ka):.2f} |"), flush=True)


def table_act(runner, model, probe):
    print(
        f"\n### Activation quantization: static vs dynamic vs smoothed\n\n{HEADER} recovered (ppl) | recovered (KL) |\n|{'---|' * 11}"
    )
    for base_mods, remedies in ACT.values():
        before = run(runner, model, probe, base_mods)
        db, kb = before.metrics["ppl_ratio"] - 1, before.metrics["kl_mean"]
        print(row(before, " | |"))
        for _name, mods in remedies:
            r = run(runner, model, probe, mods)
            print(
                row(
                    r,
                    f" {recovered(db, r.metrics['ppl_ratio'] - 1):.2f} | {recovered(kb, r.metrics['kl_mean']):.2f} |",
                ),
                flush=True,
            )


def table_bnb(runner, model, probe):
    print(f"\n### bitsandbytes\n\n{HEADER}\n|{'---|' * 9}")
    for mods in BNB:
        print(row(run(runner, model, probe, mods)), flush=True)


def table_outliers(runner, model, probe):
    from hemorrhage_core.modify.scaling import activation_outlier_stats

    loaded = runner.base(model)
    windows = runner.calibration_windows(RunSpec(model, (), probe), "news", 16, 512)
    stats = activation_outlier_stats(loaded.model, windows, alpha=0.5)
    summary = stats.groupby("module").agg(
        before_max=("max_abs_before", "max"),
        before_median=("max_abs_before", "median"),
        after_max=("max_abs_after", "max"),
        after_median=("max_abs_after", "median"),
    )
    summary["before_max/median"] = summary.before_max / summary.before_median
    summary["after_max/median"] = summary.after_max / summary.after_median
    print("\n### Activation outliers (max |x| per input channel, all layers), SmoothQuant α = 0.5\n")
    print(
        "| input of | max before | median before | max/median before | max after | median after | max/median after |"
    )
    print("|---|---|---|---|---|---|---|")
    for module, r in summary.iterrows():
        print(f"| {module} | {r.before_max:.2f} | {r.before_median:.3f} | {r['before_max/median']:.0f} | "
              f"{r.after_max:.3f} | {r.after_median:.3f} | {r['after_max/median']:.1f} |")  # fmt: skip
    worst = stats.loc[stats.max_abs_before.idxmax()]
    print(f"\nLargest channel: layer {worst.layer} {worst.module} channel {worst.channel}: "
          f"{worst.max_abs_before:.1f} -> {worst.max_abs_after:.2f}")  # fmt: skip


SECTIONS = {
    "gptq": lambda r, m, p: table_pairs(
        r, m, p, GPTQ_VS_RTN, "GPTQ vs RTN (same bits, group 128, symmetric)"
    ),
    "grid": lambda r, m, p: table_pairs(
        r, m, p, GRID, "RTN vs GPTQ: 8/4/3/2 bits, per-channel and group 128"
    ),
    "act": table_act,
    "awq": lambda r, m, p: table_pairs(
        r, m, p, AWQ_VS_RTN, "Weight-only RTN vs AWQ-style scales (asym, group 128)"
    ),
    "bnb": table_bnb,
    "outliers": table_outliers,
}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="smollm2-135m")
    ap.add_argument("--tokens", type=int, default=2048)
    ap.add_argument("--corpus", default="news")
    ap.add_argument("--db", default=None, help="results file (default: a throw-away file)")
    ap.add_argument(
        "--only", default="gptq,act,awq,bnb,outliers", help=f"comma-separated: {','.join(SECTIONS)}"
    )
    args = ap.parse_args()
    logging.basicConfig(level=logging.WARNING)
    runner = Runner(Store(args.db or tempfile.mktemp(suffix=".duckdb")))
    probe = ProbeSettings(corpus=args.corpus, tokens=args.tokens)
    base = runner.run(RunSpec(args.model, (), probe))
    print(
        f"{args.model}, corpus {args.corpus}, {args.tokens} tokens (window {probe.window}); base ppl {base.metrics['ppl_base']:.2f}"
    )
    for name in args.only.split(","):
        SECTIONS[name.strip()](runner, args.model, probe)


if __name__ == "__main__":
    main()
