"""What the profile's metrics cost above its perplexity floor, next to lm-eval's perplexity (CPU seconds, one run).

    bench/.venv/bin/python bench/metric_costs.py --repeats 5     # smollm2-135m, 4,096 tokens, RTN w4 (~5 min)

Four contenders on one model object, alternated, best of `--repeats`:
  lm-eval         HFLM.loglikelihood_rolling (as bench/lmeval_compare.py runs it)
  floor           our perplexity alone: the profile's corpus pass, chunked unembedding, one log-normaliser
  full            profile_model, every metric
  no lens/attn    profile_model with the logit lens given no positions and the attention probe set switched off
                  (patched for this measurement only): the cost of the per-position KL, top-k, decoding
                  statistics and per-layer residual comparison alone

It answers "which metrics would have to go for the profile to cost no more than lm-eval's perplexity": the goal
of bench row 3 (docs/performance.md). Runs in bench/.venv (bench/setup_lmeval.sh).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
from contextlib import ExitStack
from pathlib import Path
from unittest import mock

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # as bench/probe_engine.py: idle threads sleep
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import torch  # noqa: E402

from bench.lmeval_compare import lmeval_requests, perplexity_floor, prepare  # noqa: E402
from hemorrhage_core.probes import profile as profile_module  # noqa: E402


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="smollm2-135m")
    p.add_argument("--corpus", default="news")
    p.add_argument("--mod", default="quant_rtn:bits=4")
    p.add_argument("--tokens", type=int, default=4096)
    p.add_argument("--window", type=int, default=512)
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--repeats", type=int, default=3)
    a = p.parse_args()
    windows, reference, loaded, modified = prepare(a)
    model, tok = modified.model, loaded.tokenizer
    kernel = model.config._attn_implementation

    lm, requests, _ = lmeval_requests(tok, model, windows, a.batch_size)

    def lmeval():
        model.set_attn_implementation("sdpa")
        lm.loglikelihood_rolling(requests, disable_tqdm=True)
        model.set_attn_implementation(kernel)

    def floor():
        model.set_attn_implementation(kernel)
        perplexity_floor(model, windows, a.batch_size)

    def full():
        profile_module.profile_model(
            modified, reference, windows, batch_size=a.batch_size, base_model=loaded.model
        )

    def without_lens_and_attention():
        # patch.object raises if a name is gone, so a refactor of profile.py breaks this loudly, not silently.
        with ExitStack() as stack:
            stack.enter_context(mock.patch.object(profile_module, "lens_rows", lambda n: torch.arange(0)))
            stack.enter_context(mock.patch.object(profile_module, "_attention_rows", lambda *args: ([], [])))
            probe_maps = profile_module.ProbeMaps
            stack.enter_context(mock.patch.object(probe_maps, "rows_in", lambda self, sl: 0))
            stack.enter_context(mock.patch.object(probe_maps, "result", lambda self, m: []))
            full()

    contenders = {
        "lm-eval": lmeval,
        "floor": floor,
        "full": full,
        "no lens/attn": without_lens_and_attention,
    }
    best = dict.fromkeys(contenders, math.inf)
    for _ in range(a.repeats):
        for name, fn in contenders.items():
            start = time.process_time()
            fn()
            best[name] = min(best[name], time.process_time() - start)
    print(f"{a.model}, {windows.numel()} tokens, {a.mod}, best of {a.repeats}, CPU seconds")
    for name, seconds in best.items():
        print(
            f"{name:14s} {seconds:6.2f} s   x lm-eval {seconds / best['lm-eval']:.3f}   "
            f"x floor {seconds / best['floor']:.3f}"
        )
    print(json.dumps({k: round(v, 3) for k, v in best.items()}))


if __name__ == "__main__":
    main()
