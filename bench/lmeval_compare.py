"""lm-evaluation-harness perplexity vs our full profile, in one process on one model object (bench section 3).

Runs in bench/.venv (bench/setup_lmeval.sh), called by bench/probe_engine.py; prints one JSON line.

Same text and window: each of our evaluation windows (their corpus tokens, decoded) is one document for
`HFLM.loglikelihood_rolling` with max_length = our window and our batch size, so lm-eval scores the same tokens
in windows of the same length. lm-eval gets the sdpa kernel (its fastest here) and scores the perplexity only;
our profile computes every metric (KL, top-k, per-layer errors, logit lens, attention probes) against the cached
base reference.

A third contender, our perplexity alone, is the floor of the profile: the same corpus pass (kernel, hooks,
position-chunked unembedding) reduced to what lm-eval computes, a log-normaliser and the reference token's
log-probability per position. The profile's cost above it is what its other metrics cost; lm-eval's cost above it
is what lm-eval's own log-softmax over whole batches costs.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import lm_eval  # noqa: E402
import torch  # noqa: E402
from lm_eval.api.instance import Instance  # noqa: E402
from lm_eval.models.huggingface import HFLM  # noqa: E402

from bench.probe_engine import Setup, inputs, spec_for  # noqa: E402
from hemorrhage_core.probes.metrics import logsumexp_  # noqa: E402
from hemorrhage_core.probes.profile import profile_model  # noqa: E402
from hemorrhage_core.probes.reference import batch_slices, corpus_pass, position_logits  # noqa: E402
from hemorrhage_core.runner import Runner  # noqa: E402
from hemorrhage_core.store import Store  # noqa: E402


def prepare(a: argparse.Namespace):
    """(windows [n, T], cached base reference, loaded base model, modified model) for the command line's setup."""
    setup = Setup(a.model, a.corpus, a.tokens, a.window, a.batch_size, a.mod, a.repeats, (0, 0), "")
    runner = Runner(Store(":memory:"), device="cpu")
    spec = spec_for(setup)
    windows, reference = inputs(runner, spec)
    return windows, reference, runner.base(spec.model), runner.modify(spec)


def lmeval_requests(tok, model, windows: torch.Tensor, batch_size: int):
    """(HFLM on `model`, one loglikelihood_rolling request per window, the windows' texts): each window decoded
    (without its BOS, which lm-eval adds back as its prefix token) is one document of exactly one rolling window."""
    bos = tok.bos_token_id is not None and windows[0, 0].item() == tok.bos_token_id
    texts = [tok.decode(w[1:] if bos else w) for w in windows]
    lm = HFLM(pretrained=model, tokenizer=tok, batch_size=batch_size, max_length=windows.shape[1])
    requests = [
        Instance(request_type="loglikelihood_rolling", doc={}, arguments=(t,), idx=i)
        for i, t in enumerate(texts)
    ]
    return lm, requests, texts


def perplexity_floor(model, windows: torch.Tensor, batch_size: int) -> float:
    """Our perplexity alone: the profile's corpus pass and position-chunked unembedding, reduced to what lm-eval
    computes (a log-normaliser and the reference token's log-probability per position)."""
    logprob, count = 0.0, 0
    for sl in batch_slices(windows.shape[0], batch_size):
        ids = windows[sl]
        final, _, _ = corpus_pass(model, ids, 0, 0)
        targets = ids[:, 1:].reshape(-1)
        for rows, logits in position_logits(model, final):
            target = logits.gather(1, targets[rows, None]).squeeze(1)
            with torch.inference_mode():
                logprob += float((target - logsumexp_(logits)).double().sum())
            count += rows.stop - rows.start
    return math.exp(-logprob / count)


def main() -> None:
    p = argparse.ArgumentParser()
    for name in ("--model", "--corpus", "--mod"):
        p.add_argument(name, required=True)
    for name in ("--tokens", "--window", "--batch-size", "--repeats"):
        p.add_argument(name, type=int, required=True)
    a = p.parse_args()
    windows, reference, loaded, modified = prepare(a)
    model, tok = modified.model, loaded.tokenizer
    kernel = model.config._attn_implementation

    lm, requests, texts = lmeval_requests(tok, model, windows, a.batch_size)
    lm_tokens = sum(len(lm.tok_encode(t)) for t in texts)

    def run_lmeval():
        model.set_attn_implementation("sdpa")
        return lm.loglikelihood_rolling(requests, disable_tqdm=True)

    def run_ours():
        model.set_attn_implementation(kernel)
        return profile_model(modified, reference, windows, batch_size=a.batch_size, base_model=loaded.model)

    def run_floor():
        model.set_attn_implementation(kernel)
        return perplexity_floor(model, windows, a.batch_size)

    contenders = (("lmeval", run_lmeval), ("ours", run_ours), ("floor", run_floor))
    best = {name: (math.inf, math.inf) for name, _ in contenders}
    results = {}
    for _ in range(a.repeats):
        for name, fn in contenders:
            w, c = time.perf_counter(), time.process_time()
            results[name] = fn()
            w, c = time.perf_counter() - w, time.process_time() - c
            best[name] = (min(best[name][0], w), min(best[name][1], c))
    loglik = sum(results["lmeval"])
    print(
        json.dumps(
            {
                "lmeval_version": lm_eval.__version__,
                "tokens": int(windows.numel()),
                "lmeval_tokens": lm_tokens,
                "ppl_lmeval": math.exp(-loglik / lm_tokens),
                "ppl_ours": results["ours"].metrics["ppl"],
                "ppl_floor": results["floor"],
                "lmeval_wall": best["lmeval"][0],
                "lmeval_cpu": best["lmeval"][1],
                "ours_wall": best["ours"][0],
                "ours_cpu": best["ours"][1],
                "floor_wall": best["floor"][0],
                "floor_cpu": best["floor"][1],
                "threads": torch.get_num_threads(),
            }
        )
    )


if __name__ == "__main__":
    main()
