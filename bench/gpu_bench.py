"""The GPU benchmark of bench/gpu_check.sh: profile throughput, modification time per method and peak memory.

    .venv/bin/python bench/gpu_bench.py                                   # smollm2-135m and gemma3-270m, bf16
    .venv/bin/python bench/gpu_bench.py --device cpu --models tiny        # the code path on any machine

For each model (in `--dtype`, default the device's own: bf16 on a GPU): the base reference built once (tokens/s
of the corpus pass), then each method of `--methods` measured as a run: its modification time, its profile's
tokens/s, and the peak memory of the device during that run (torch.cuda.max_memory_allocated on a GPU, the
process's peak RSS on the CPU, which only grows). Every figure is read from the run itself; nothing is
extrapolated. Budgets are small on purpose (the whole check is meant to finish in under 8 minutes on one GPU).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import resource
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

log = logging.getLogger("bench")
METHODS = (
    "quant_rtn:bits=4,granularity=group,group_size=128",
    "gptq:bits=4",
    "awq:bits=4",
    "smoothquant",
    "prune:sparsity=0.5,method=wanda",
    "prune:sparsity=0.5,method=sparsegpt",
    "bnb_int8",
    "bnb_4bit",
)


def _peak_reset(device) -> None:
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)


def _peak_mb(device) -> tuple[float, str]:
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize(device)
        return torch.cuda.max_memory_allocated(device) / 2**20, "GPU allocated"
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, "process RSS (never falls)"


def bench_model(name: str, args, folder: Path) -> list[dict]:
    from hemorrhage_core.runner import Runner
    from hemorrhage_core.specs import ProbeSettings, RunSpec, parse_mod
    from hemorrhage_core.store import Store

    os.environ["HEMLAB_CACHE"] = str(folder / "cache")  # a cold reference cache: the corpus pass is measured
    runner = Runner(Store(folder / "bench.duckdb"), device=args.device, dtype=args.dtype)
    probe = ProbeSettings(
        corpus=args.corpus, tokens=args.tokens, window=args.window, batch_size=args.batch_size
    )
    t = time.perf_counter()
    loaded = runner.base(name)
    load_s = time.perf_counter() - t
    base = RunSpec(model=name, probe=probe)
    _peak_reset(loaded.device)
    t = time.perf_counter()
    runner.reference(base)
    ref_s = time.perf_counter() - t
    peak, peak_kind = _peak_mb(loaded.device)
    label = Path(name).name if Path(name).expanduser().is_absolute() else name  # a folder by its last part
    rows = [
        {
            "model": label,
            "what": "base reference (corpus pass)",
            "device": str(loaded.device),
            "dtype": str(loaded.dtype).removeprefix("torch."),
            "load_s": load_s,
            "modify_s": None,
            "tokens_per_s": args.tokens / ref_s,
            "peak_mb": peak,
            "peak_kind": peak_kind,
        }
    ]
    for text in args.methods.split(";"):
        spec = RunSpec(model=name, mods=(parse_mod(text),), probe=probe)
        _peak_reset(loaded.device)
        try:
            m = runner.run(spec).metrics
        except Exception as exc:  # one method failing is a finding of the check, not the end of it
            log.exception("%s on %s failed", text, name)
            rows.append({"model": label, "what": text, "error": f"{type(exc).__name__}: {exc}"[:200]})
            continue
        peak, peak_kind = _peak_mb(loaded.device)
        rows.append(
            {
                "model": label,
                "what": text,
                "device": str(loaded.device),
                "dtype": str(loaded.dtype).removeprefix("torch."),
                "modify_s": m["modify_s"],
                "tokens_per_s": args.tokens / m["profile_s"],
                "kl_mean": m["kl_mean"],
                "ppl_ratio": m["ppl_ratio"],
                "peak_mb": peak,
                "peak_kind": peak_kind,
            }
        )
    return rows


def table(rows: list[dict], args) -> str:
    out = [
        f"Budget: {args.tokens} tokens of `{args.corpus}` in windows of {args.window}, batch {args.batch_size}; "
        "tokens/s of the profile (modified model against the stored reference, every metric), or of the corpus "
        "pass for the reference row.",
        "",
        "| model | method | device, dtype | modify | profile tokens/s | peak memory | KL mean | ppl ratio |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        if "error" in r:
            out.append(f"| {r['model']} | {r['what']} | FAILED: {r['error']} | | | | | |")
            continue
        modify = f"{r['modify_s']:.2f} s" if r.get("modify_s") is not None else f"load {r['load_s']:.1f} s"
        kl = f"{r['kl_mean']:.4g}" if "kl_mean" in r else ""
        ratio = f"{r['ppl_ratio']:.4f}" if "ppl_ratio" in r else ""
        out.append(
            f"| {r['model']} | {r['what']} | {r['device']}, {r['dtype']} | {modify} | {r['tokens_per_s']:,.0f} | "
            f"{r['peak_mb']:,.0f} MB ({r['peak_kind']}) | {kl} | {ratio} |"
        )
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--dtype", help="default: the device's own (bfloat16 on a GPU, float32 on the CPU)")
    parser.add_argument("--models", default="smollm2-135m,gemma3-270m", help="names, folders, or tiny")
    parser.add_argument("--methods", default=";".join(METHODS), help="--mod strings separated by ';'")
    parser.add_argument("--tokens", type=int, default=8192)
    parser.add_argument("--window", type=int, default=512)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--corpus", default="news")
    parser.add_argument("--json-out")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")

    work = Path(tempfile.mkdtemp(prefix="hemlab-gpu-bench-"))
    saved = os.environ.get("HEMLAB_CACHE")
    rows = []
    try:
        for name in [m.strip() for m in args.models.split(",") if m.strip()]:
            if name == "tiny":
                from bench.probe_engine import tiny_model_dir

                name = str(tiny_model_dir(work / "tiny-llama"))
            rows += bench_model(name, args, work / Path(name).name)
    finally:
        if saved is None:
            os.environ.pop("HEMLAB_CACHE", None)
        else:
            os.environ["HEMLAB_CACHE"] = saved
    print(table(rows, args))
    if args.json_out:
        Path(args.json_out).write_text(json.dumps(rows, indent=2))
    return 1 if any("error" in r for r in rows) else 0


if __name__ == "__main__":
    sys.exit(main())
