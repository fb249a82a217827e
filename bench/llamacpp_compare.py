"""Our numbers against llama.cpp's own, on the same GGUF files, the same tokens and the same context length.

    .venv/bin/python bench/llamacpp_compare.py [--model smollm2-135m] [--corpus wiki] [--chunks 16] [--ctx 512]
                                               [--types Q4_0,Q2_K]

Needs the llama.cpp tools (`make llama-tools`). Files: the model's own shipped GGUF (SmolLM2's Q4_1) rewritten
as F32 by `llama-quantize --allow-requantize` (the same values, llama.cpp's metadata and pre-tokenizer kept), and
that F32 file quantized by llama-quantize to each type. llama.cpp then runs twice per type, as its users do:
`llama-perplexity -f TEXT --kl-divergence-base BASE.kld` on the base file (its perplexity, and the base logits
file), then `--kl-divergence` on the quantized file.

Conventions, matched rather than explained away:
- llama-perplexity cuts the text into `--chunks` windows of `--ctx` tokens and scores only the second half of each
  (the logits at positions ctx/2 .. ctx-2, predicting tokens ctx/2+1 .. ctx-1: ctx/2 - 1 per window), so every
  prediction has at least ctx/2 tokens of context. "ours (same positions)" reads the token ids from the base
  logits file (exactly llama.cpp's tokenization) and scores the same positions, with the files read through
  transformers' GGUF loader: full-vocabulary KL(base ‖ quantized), top-1 agreement, Δp = p_q(next) − p_base(next).
- llama.cpp stores the base log-probabilities as 16-bit integers (a scale and minimum per position) and computes
  with its own kernels (activations quantized to 8 bits for quantized matrices): small differences remain.
- "ours (profile)" is `hemlab run` on the same text: every position of each window, the profile's exact full-vocabulary
  KL (docs/metrics.md; on other positions than llama.cpp's, so not the row to compare), wall time including the base reference, the GGUF export, quantization,
  read-back and every metric (cascade, attention, lens).
"""

from __future__ import annotations

import argparse
import logging
import math
import os
import re
import struct
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import numpy as np  # noqa: E402
import torch  # noqa: E402

from hemorrhage_core import corpora, llamacpp, models  # noqa: E402
from hemorrhage_core.paths import cache_dir, data_dir  # noqa: E402

log = logging.getLogger("llamacpp_compare")

_NUM = r"([-+]?\d+(?:\.\d+)?(?:[eE][-+]?\d+)?)"
PATTERNS = {
    "ppl": rf"Final estimate: PPL = {_NUM}",
    "ppl_q": rf"Mean PPL\(Q\)\s*:\s*{_NUM}",
    "ppl_base": rf"Mean PPL\(base\)\s*:\s*{_NUM}",
    "kl_mean": rf"Mean\s+KLD:\s*{_NUM}",
    "top1": rf"Same top p:\s*{_NUM}",
    "dp_mean": rf"Mean\s+Δp:\s*{_NUM}",
    "dp_rms": rf"RMS Δp\s*:\s*{_NUM}",
}


def parse(out: str) -> dict[str, float]:
    found = {}
    for key, pattern in PATTERNS.items():
        hit = re.findall(pattern, out)
        if hit:
            found[key] = float(hit[-1])
    return found


def base_logit_tokens(path: Path) -> tuple[int, np.ndarray]:
    """(ctx, token ids [chunks, ctx]) from llama-perplexity's base logits file: '_logits_', n_ctx u32, n_vocab
    i32, n_chunk i32, the tokens (i32), then the log-probabilities."""
    with open(path, "rb") as f:
        assert f.read(8) == b"_logits_", f"{path} is not a llama-perplexity base logits file"
        n_ctx, _n_vocab, n_chunk = struct.unpack("<Iii", f.read(12))
        tokens = np.frombuffer(f.read(4 * n_ctx * n_chunk), dtype=np.int32).reshape(n_chunk, n_ctx)
    return n_ctx, tokens.copy()


def _text(corpus: str, tokenizer, tokens: int) -> str:
    """A prefix of the corpus with a few more than `tokens` tokens (llama.cpp tokenizes it again)."""
    text = corpora.load_corpus(corpus).text
    chars = len(text) * min(1.0, 1.05 * tokens / max(len(tokenizer.encode(text)), 1))
    return text[: int(chars) + 2000]


@torch.inference_mode()
def ours_same_positions(base_path: Path, quantized: dict[str, Path], tokens: np.ndarray) -> dict[str, dict]:
    """Our perplexity, exact KL, top-1 agreement and Δp on llama-perplexity's positions, per type."""
    load = {"device": "cpu", "dtype": torch.float32}
    base = models.load_model(str(base_path), **load).model
    qmodels = {t: models.load_model(str(p), **load).model for t, p in quantized.items()}
    n_ctx = tokens.shape[1]
    first = n_ctx // 2
    acc = {t: {"nll": 0.0, "kl": 0.0, "top1": 0, "dp": 0.0, "dp2": 0.0} for t in ["base", *quantized]}
    count = 0
    for chunk in torch.from_numpy(tokens).long():
        ids = chunk[None]
        targets = chunk[first + 1 :]
        lp_base = torch.log_softmax(base(ids).logits[0, first : n_ctx - 1].float(), -1)
        p_base_t = lp_base.gather(1, targets[:, None]).squeeze(1)
        acc["base"]["nll"] -= float(p_base_t.sum())
        for t, m in qmodels.items():
            lp = torch.log_softmax(m(ids).logits[0, first : n_ctx - 1].float(), -1)
            p_t = lp.gather(1, targets[:, None]).squeeze(1)
            a = acc[t]
            a["nll"] -= float(p_t.sum())
            a["kl"] += float((lp_base.exp() * (lp_base - lp)).sum(-1).clamp_min(0).sum())
            a["top1"] += int((lp_base.argmax(-1) == lp.argmax(-1)).sum())
            dp = p_t.exp() - p_base_t.exp()
            a["dp"] += float(dp.sum())
            a["dp2"] += float((dp * dp).sum())
        count += len(targets)
    out = {"base": {"ppl": math.exp(acc["base"]["nll"] / count), "positions": count}}
    for t in quantized:
        a = acc[t]
        out[t] = {
            "ppl": math.exp(a["nll"] / count),
            "kl_mean": a["kl"] / count,
            "top1": 100.0 * a["top1"] / count,
            "dp_mean": 100.0 * a["dp"] / count,
            "dp_rms": 100.0 * math.sqrt(a["dp2"] / count),
        }
    return out


def _dir_bytes(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


def ours_profile(model: str, text_path: Path, qtypes: list[str], tokens: int, ctx: int) -> dict[str, dict]:
    """`hemlab run` on the same text (fresh database): wall time, metrics, and the disk of its base reference."""
    from hemorrhage_core.runner import Runner
    from hemorrhage_core.specs import GGUFQuant, ProbeSettings, RunSpec
    from hemorrhage_core.store import Store

    refs = cache_dir() / "reference"
    before = set(refs.iterdir()) if refs.exists() else set()
    out = {}
    with tempfile.TemporaryDirectory() as tmp:
        runner = Runner(Store(Path(tmp) / "bench.duckdb"), device="cpu")
        probe = ProbeSettings(corpus=str(text_path), tokens=tokens, window=ctx)
        for t in qtypes:
            t0 = time.perf_counter()
            r = runner.run(RunSpec(model=model, mods=(GGUFQuant(qtype=t),), probe=probe))
            out[t] = {"wall_s": time.perf_counter() - t0, **r.metrics}
    new = [d for d in refs.iterdir() if d not in before] if refs.exists() else []
    out["_reference"] = {
        "bytes": sum(_dir_bytes(d) for d in new),
        "fresh": bool(new),
    }
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default="smollm2-135m")
    ap.add_argument("--corpus", default="wiki")
    ap.add_argument("--chunks", type=int, default=16)
    ap.add_argument("--ctx", type=int, default=512)
    ap.add_argument("--types", default="Q4_0,Q2_K")
    ap.add_argument("--threads", type=int, default=os.cpu_count() or 2)
    ap.add_argument("--skip-profile", action="store_true", help="leave out the full `hemlab run` profiles")
    args = ap.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    if not llamacpp.available():
        print(llamacpp.missing_message(why="this benchmark runs llama.cpp itself"))
        return 2
    qtypes = [t.strip() for t in args.types.split(",") if t.strip()]
    spec = models.EMBEDDED[args.model]
    work = data_dir() / "bench_llamacpp" / args.model
    work.mkdir(parents=True, exist_ok=True)
    shipped = models.embedded._gguf_path(spec, work)
    base = work / "base-F32.gguf"
    if not base.exists():
        llamacpp.run_tool("llama-quantize", ["--allow-requantize", str(shipped), str(base), "F32"])
    files = {}
    for t in qtypes:
        files[t] = work / f"{t}.gguf"
        if not files[t].exists():
            llamacpp.run_tool("llama-quantize", [str(base), str(files[t]), t])
    tokenizer = models.load_tokenizer(args.model)
    n_tokens = args.chunks * args.ctx
    text_path = work / f"{args.corpus}-{n_tokens}.txt"
    text_path.write_text(_text(args.corpus, tokenizer, n_tokens), encoding="utf-8")
    kld = work / "base.kld"
    # --no-repack: ggml's AMX path for quantized matrices crashes (SIGSEGV in ggml_backend_amx_mul_mat) on this
    # machine's CPUs; without repacking llama.cpp uses its ordinary CPU kernels.
    common = ["-c", str(args.ctx), "--chunks", str(args.chunks), "-t", str(args.threads), "--no-repack"]
    base_out, base_s = llamacpp.run_tool(
        "llama-perplexity", ["-m", str(base), "-f", str(text_path), "--kl-divergence-base", str(kld), *common]
    )
    theirs = {"base": {**parse(base_out), "wall_s": base_s}}
    for t in qtypes:
        out, s = llamacpp.run_tool(
            "llama-perplexity",
            ["-m", str(files[t]), "--kl-divergence-base", str(kld), "--kl-divergence", *common],
        )
        theirs[t] = {**parse(out), "wall_s": s}
    ctx, tokens = base_logit_tokens(kld)
    ours_tokens = tokenizer.encode(text_path.read_text(encoding="utf-8"), add_special_tokens=False)
    flat = tokens.reshape(-1)
    same_tokens = (
        float(np.mean(np.asarray(ours_tokens[: flat.size]) == flat)) if len(ours_tokens) >= flat.size else 0.0
    )
    t0 = time.perf_counter()
    ours = ours_same_positions(base, files, tokens)
    ours_s = time.perf_counter() - t0
    profile = {} if args.skip_profile else ours_profile(args.model, text_path, qtypes, n_tokens, args.ctx)

    def rel(a, b):
        return f"{100 * (a - b) / b:+.2f} %"

    print(f"\n{args.model}: {args.chunks} windows x {ctx} tokens of {args.corpus} ({tokens.size:,} tokens, "
          f"{ours['base']['positions']:,} scored: the second half of each window, as llama-perplexity does)")  # fmt: skip
    print(
        f"token ids: llama.cpp's tokenization equals transformers' on {same_tokens:.2%} of them "
        "(ours below uses llama.cpp's ids from its base logits file)"
    )
    print(f"{'':18}{'ours':>12}{'llama.cpp':>12}{'diff':>12}")
    print(f"{'PPL base F32':18}{ours['base']['ppl']:12.4f}{theirs['base'].get('ppl', math.nan):12.4f}"
          f"{rel(ours['base']['ppl'], theirs['base'].get('ppl', math.nan)):>12}")  # fmt: skip
    for t in qtypes:
        o, l = ours[t], theirs[t]  # noqa: E741
        print(f"-- {t} ({files[t].stat().st_size / 2**20:.1f} MiB file)")
        print(
            f"{'  PPL':18}{o['ppl']:12.4f}{l.get('ppl_q', math.nan):12.4f}{rel(o['ppl'], l.get('ppl_q', math.nan)):>12}"
        )
        print(f"{'  mean KL':18}{o['kl_mean']:12.5f}{l.get('kl_mean', math.nan):12.5f}"
              f"{rel(o['kl_mean'], l.get('kl_mean', math.nan)):>12}")  # fmt: skip
        print(f"{'  same top-1 %':18}{o['top1']:12.3f}{l.get('top1', math.nan):12.3f}"
              f"{o['top1'] - l.get('top1', math.nan):+11.3f}p")  # fmt: skip
        print(f"{'  mean Δp %':18}{o['dp_mean']:12.3f}{l.get('dp_mean', math.nan):12.3f}")
        print(f"{'  RMS Δp %':18}{o['dp_rms']:12.3f}{l.get('dp_rms', math.nan):12.3f}")
    print(f"time: ours on the same positions (3 models, full-vocabulary metrics only) {ours_s:.1f} s; llama.cpp "
          f"base run {theirs['base']['wall_s']:.1f} s, KL runs " +
          ", ".join(f"{t} {theirs[t]['wall_s']:.1f} s" for t in qtypes))  # fmt: skip
    if profile:
        ref = profile.pop("_reference")
        for t, m in profile.items():
            print(f"ours (profile, all positions, exact KL) {t}: {m['wall_s']:.1f} s wall "
                  f"({'including the base reference' if ref['fresh'] and t == qtypes[0] else 'reference cached'}"
                  f"), ppl ratio {m['ppl_ratio']:.4f}, KL {m['kl_mean']:.5f}, top-1 {100 * m['top1_agreement']:.2f} %, "
                  f"bits per block weight {m['bits_per_weight']:.3f}")  # fmt: skip
        print(f"disk: our base reference {ref['bytes'] / 2**20:.1f} MiB"
              + ("" if ref["fresh"] else " (already cached: not measured)")
              + f"; llama.cpp's base logits file {kld.stat().st_size / 2**20:.1f} MiB")  # fmt: skip
    else:
        print(f"disk: llama.cpp's base logits file {kld.stat().st_size / 2**20:.1f} MiB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
