"""How much KL the top-K base reference loses, against exact full-vocabulary KL computed in lockstep.

    .venv/bin/python bench/topk_error.py [--model smollm2-135m] [--tokens 2048] [--k 64,256,1024]

Before CODE_VERSION 5 the profile computed KL from the base model's top-K log-probabilities and one merged tail
bucket (`metrics.kl_topk`, K + 1 outcomes), a lower bound of the exact KL; it now computes the exact KL
(probes/exact_kl.py) and the coarsening is only its fallback without a base model. bench/exact_kl.py compares the
two inside the real profile; this script keeps the coarsening's error as a function of K.
The alternative is to recompute the base model in lockstep with every run (exact, full vocabulary, but a second
forward pass per run). This script runs both models over the same windows, computes the exact per-position KL
and the top-K KL for each K from the same log-probabilities, and prints their difference: the error the default
K = 256 accepts, written down in docs/performance.md.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import torch  # noqa: E402

from hemorrhage_core import corpora  # noqa: E402
from hemorrhage_core.probes.capture import forward_sites  # noqa: E402
from hemorrhage_core.probes.kernels import fast_attention  # noqa: E402
from hemorrhage_core.probes.metrics import kl_full, kl_topk, log_tail_mass  # noqa: E402
from hemorrhage_core.probes.reference import position_logprobs  # noqa: E402
from hemorrhage_core.runner import Runner  # noqa: E402
from hemorrhage_core.specs import (  # noqa: E402
    ProbeSettings,
    RunSpec,
    parse_mod,  # noqa: E402
)
from hemorrhage_core.store import Store  # noqa: E402

MODS = ("quant_rtn:bits=8", "quant_rtn:bits=4,granularity=group,group_size=128", "quant_rtn:bits=3",
        "prune:sparsity=0.5", "temperature:value=1.5")  # fmt: skip


def measure(runner, model: str, mod_text: str, tokens: int, ks: list[int], batch_size: int = 8) -> list[dict]:
    spec = RunSpec(model=model, mods=(parse_mod(mod_text),), probe=ProbeSettings(tokens=tokens))
    loaded = runner.base(model)
    windows = corpora.token_windows(loaded.tokenizer, runner.corpus("news"), window=512, tokens=tokens)
    modified = runner.modify(spec)
    exact, approx = [], {k: [] for k in ks}
    for start in range(0, windows.shape[0], batch_size):
        ids = windows[start : start + batch_size]
        with fast_attention():
            base_final, _ = forward_sites(loaded.model, ids)
            mod_final, _ = forward_sites(modified.model, ids)
        pairs = zip(
            position_logprobs(loaded.model, base_final),
            position_logprobs(modified.model, mod_final, modified.transform_logits),
            strict=True,
        )
        for (_, p), (_, q) in pairs:
            exact.append(kl_full(p, q).double())
            for k in ks:
                top_lp, top_ids = torch.topk(p, k, dim=-1)
                approx[k].append(kl_topk(top_lp, log_tail_mass(p, top_ids), top_ids, q).double())
    e = torch.cat(exact)
    rows = []
    for k in ks:
        a = torch.cat(approx[k])
        rel = (e - a) / e.clamp(min=1e-12)
        rows.append(
            {
                "mod": spec.label(),
                "K": k,
                "kl_exact_mean": float(e.mean()),
                "kl_topk_mean": float(a.mean()),
                "mean_rel_error": float(1 - a.mean() / e.mean()),
                "median_pos_rel_error": float(rel.median()),
                "p99_pos_abs_error": float((e - a).kthvalue(max(1, int(0.99 * e.numel()))).values),
                "max_pos_abs_error": float((e - a).max()),
                "lower_bound_violations": int((a > e + 1e-6).sum()),
                "positions": int(e.numel()),
            }
        )
    return rows


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="smollm2-135m")
    p.add_argument("--tokens", type=int, default=2048)
    p.add_argument("--k", default="64,256,1024")
    p.add_argument("--mods", default=";".join(MODS), help="';'-separated --mod texts")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s", stream=sys.stderr)
    runner = Runner(Store(":memory:"), device="cpu")
    ks = [int(k) for k in args.k.split(",")]
    rows = [row for mod in args.mods.split(";") for row in measure(runner, args.model, mod, args.tokens, ks)]
    print(f"model `{args.model}`, corpus news, {args.tokens} tokens, window 512; KL in nats\n")
    print("| modification | K | exact KL (mean) | top-K KL (mean) | mean under-estimate | median per-position "
          "rel. error | p99 abs. error | max abs. error |")  # fmt: skip
    print("|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(
            f"| {r['mod']} | {r['K']} | {r['kl_exact_mean']:.5f} | {r['kl_topk_mean']:.5f} | "
            f"{r['mean_rel_error']:.2%} | {r['median_pos_rel_error']:.2%} | {r['p99_pos_abs_error']:.2e} | "
            f"{r['max_pos_abs_error']:.2e} |"
        )
    violations = sum(r["lower_bound_violations"] for r in rows)
    print(f"\ntop-K KL above exact KL (beyond 1e-6, float rounding): {violations} positions")
    return 0


if __name__ == "__main__":
    sys.exit(main())
