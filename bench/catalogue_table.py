"""Issue #2 figures: RTN bits and magnitude sparsity on a real model, profile time vs plain forwards, peak memory.

    .venv/bin/python bench/catalogue_table.py [--model smollm2-135m] [--tokens 4096]

Prints a markdown table. Runs in a throw-away database so every point is computed (the base reference cache
under data/cache is reused: it is what a user's second run sees too). Timings are side by side in one process:
compare the ratio, not the seconds (these machines are noisy).
"""

from __future__ import annotations

import argparse
import logging
import resource
import tempfile
import time

import torch

from hemorrhage_core.modify import apply_modifications
from hemorrhage_core.runner import Runner
from hemorrhage_core.specs import ProbeSettings, Prune, QuantizeRTN, RunSpec
from hemorrhage_core.store import Store


def plain_forward_seconds(model, windows: torch.Tensor, batch_size: int) -> float:
    """Wall time of the model's own forward (full logits, no probes) over the same windows."""
    t0 = time.perf_counter()
    with torch.inference_mode():
        for i in range(0, windows.shape[0], batch_size):
            model(input_ids=windows[i : i + batch_size], use_cache=False)
    return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="smollm2-135m")
    ap.add_argument("--tokens", type=int, default=4096)
    ap.add_argument("--corpus", default="news")
    args = ap.parse_args()
    logging.basicConfig(level=logging.WARNING)
    probe = ProbeSettings(corpus=args.corpus, tokens=args.tokens)
    runner = Runner(Store(tempfile.mktemp(suffix=".duckdb")))
    specs = [RunSpec(args.model, (QuantizeRTN(bits=b),), probe) for b in (8, 6, 4, 3, 2)]
    specs += [RunSpec(args.model, (Prune(sparsity=s),), probe) for s in (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7)]
    runner.run(RunSpec(args.model, (), probe))  # builds (or reuses) the base reference
    print("| modification | ppl (base → mod) | ratio | KL mean | KL p99 | top-1 | last-layer rel. err |")
    print("|---|---|---|---|---|---|---|")
    ratios = []
    for spec in specs:
        r = runner.run(spec)
        m = r.metrics
        print(
            f"| {spec.label()} | {m['ppl_base']:.2f} → {m['ppl']:.2f} | {m['ppl_ratio']:.3f} | {m['kl_mean']:.4f} "
            f"| {m['kl_p99']:.3f} | {m['top1_agreement']:.3f} | {m['last_layer_rel_error']:.3f} |"
        )
        if spec.mods[0] == QuantizeRTN(bits=4) or spec.mods[0] == Prune(sparsity=0.5):
            base = runner.base(spec.model)
            modified = apply_modifications(base.model, base.num_layers, spec.mods)
            windows = runner._inputs_for(spec, runner.corpus(args.corpus), None)[0]
            plain = plain_forward_seconds(modified.model, windows, probe.batch_size)
            ratios.append((spec.label(), m["profile_s"], plain))
    print()
    print("| spec | profile (s) | plain forwards (s) | ratio |")
    print("|---|---|---|---|")
    for label, prof, plain in ratios:
        print(f"| {label} | {prof:.1f} | {plain:.1f} | {prof / plain:.2f}× |")
    peak_gb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024**2
    print(f"\npeak RSS of this process: {peak_gb:.2f} GB ({args.tokens} tokens, window {probe.window})")


if __name__ == "__main__":
    main()
