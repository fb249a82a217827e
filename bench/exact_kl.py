"""The profile's KL against the exact full-vocabulary KL, before (top-K + tail) and now (exact_kl.py), in one run.

    .venv/bin/python bench/exact_kl.py [--model smollm2-135m] [--tokens 4096] [--repeats 2] [--mods "a;b"]

For each modification the same profile (probes/profile.py, every metric) runs twice on the same windows: once as
it is now (reference format 3, `exact_kl.ExactKL`), once with the KL of before (the top-K + tail coarsening,
`metrics.kl_topk_parts`, on a copy of the reference stripped to what the format-2 reference held). Their
per-position KLs are recorded and compared with the exact KL computed here independently, in float64, from both
models' full logits (a second forward pass of each model, `log_softmax` over the whole vocabulary). Printed: the
mean relative error of each, per run and on average; the largest per-position error; each profile's wall time
(best of --repeats, alternated) and their ratio; the build time and disk size of both references.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import torch  # noqa: E402
from safetensors.torch import load_file, save_file  # noqa: E402

from hemorrhage_core import corpora  # noqa: E402
from hemorrhage_core.probes import exact_kl  # noqa: E402
from hemorrhage_core.probes import profile as profile_module  # noqa: E402
from hemorrhage_core.probes import reference as reference_module  # noqa: E402
from hemorrhage_core.probes.capture import forward_sites  # noqa: E402
from hemorrhage_core.probes.kernels import fast_attention  # noqa: E402
from hemorrhage_core.probes.metrics import kl_full  # noqa: E402
from hemorrhage_core.probes.reference import (  # noqa: E402
    MOMENT_PARTS,
    build_reference,
    open_reference,
    position_logits,
)
from hemorrhage_core.runner import Runner  # noqa: E402
from hemorrhage_core.specs import ProbeSettings, RunSpec, parse_mod  # noqa: E402
from hemorrhage_core.store import Store  # noqa: E402

MODS = (
    "quant_rtn:bits=8",
    "quant_rtn:bits=4,granularity=group,group_size=128",
    "quant_rtn:bits=3",
    "quant_rtn:bits=2,granularity=group,group_size=64",
    "prune:sparsity=0.5",
    "remove_layers:layers=20+21+22+23",
    "temperature:value=1.5",
    # Outside the moments path (exact_kl.LOGITS): a quantized lm_head, a repetition penalty.
    "quant_rtn:bits=4,granularity=group,group_size=128,include_lm_head=true",
    "repetition_penalty:penalty=1.3",
)
NEW_ONLY = ("log_z", "final", *MOMENT_PARTS)  # what format 3 added to each batch file


def recording(base: type, force_topk: bool, sink: list, clock: list):
    """An ExactKL that keeps every per-position KL it returns (in position order) and the seconds spent in it
    (`clock[0]`), optionally on the old path."""

    class Recording(base):
        def __init__(self, mod, meta, base_model):
            t0 = time.perf_counter()
            super().__init__(mod, meta, None if force_topk else base_model)
            clock[0] += time.perf_counter() - t0

        def cross(self, *args, **kwargs):
            t0 = time.perf_counter()
            out = super().cross(*args, **kwargs)
            clock[0] += time.perf_counter() - t0
            return out

        def kl(self, *args, **kwargs):
            t0 = time.perf_counter()
            out = super().kl(*args, **kwargs)
            clock[0] += time.perf_counter() - t0
            sink.append(out.double().cpu())
            return out

    return Recording


def read_seconds(ref, repeats: int = 3) -> float:
    """Best wall time to read and check every batch file of a reference, as a profile does."""
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        for i in range(ref.n_batches):
            ref.batch(i)
        best = min(best, time.perf_counter() - t0)
    return best


def strip_reference(ref_path: Path, out: Path) -> Path:
    """A copy of the reference with only what format 2 stored, checksums rewritten (for the old path's I/O)."""
    shutil.copytree(ref_path, out)
    meta = json.loads((out / "meta.json").read_text())
    for name in list(meta["files"]):
        if name.startswith("batch_"):
            tensors = {k: v for k, v in load_file(out / name).items() if k not in NEW_ONLY}
            save_file(tensors, str(out / name))
    meta["files"] = {f.name: reference_module._sha256(f) for f in sorted(out.glob("*.safetensors"))}
    (out / "meta.json").write_text(json.dumps(meta))
    return out


def exact_per_position(base, modified, windows, batch_size) -> torch.Tensor:
    """KL(P_base || P_mod) per position in float64 from both models' full-vocabulary logits."""
    out = []
    for start in range(0, windows.shape[0], batch_size):
        ids = windows[start : start + batch_size]
        with fast_attention():
            base_final, _ = forward_sites(base, ids)
            mod_final, _ = forward_sites(modified.model, ids)
        context = ids if modified.needs_context else None
        pairs = zip(
            position_logits(base, base_final),
            position_logits(modified.model, mod_final, modified.transform_logits, context_ids=context),
            strict=True,
        )
        for (_, a), (_, b) in pairs:
            p = torch.log_softmax(a.double(), dim=-1)
            out.append(kl_full(p, torch.log_softmax(b.double(), dim=-1)))
            del p
    return torch.cat(out)


def folder_mb(path: Path) -> float:
    return sum(f.stat().st_size for f in path.iterdir()) / 2**20


def timed_profile(modified, ref, windows, batch_size, base, cls) -> tuple[float, dict]:
    saved = profile_module.ExactKL
    profile_module.ExactKL = cls
    try:
        t0 = time.perf_counter()
        prof = profile_module.profile_model(modified, ref, windows, batch_size=batch_size, base_model=base)
        return time.perf_counter() - t0, prof.metrics
    finally:
        profile_module.ExactKL = saved


def rel(a: float, e: float) -> float:
    return (a - e) / e if e else float("nan")


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="smollm2-135m")
    p.add_argument("--tokens", type=int, default=4096)
    p.add_argument("--repeats", type=int, default=2, help="timed profiles per path and modification")
    p.add_argument("--mods", default=";".join(MODS), help="';'-separated --mod texts")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(name)s: %(message)s", stream=sys.stderr)
    logging.getLogger(exact_kl.__name__).setLevel(logging.ERROR)  # the old path warns that it is a bound
    runner = Runner(Store(":memory:"), device="cpu")
    probe = ProbeSettings(tokens=args.tokens)
    loaded = runner.base(args.model)
    base = loaded.model
    windows = corpora.token_windows(loaded.tokenizer, runner.corpus(probe.corpus), window=probe.window,
                                    tokens=probe.tokens)  # fmt: skip
    work = Path(tempfile.mkdtemp(prefix="exact_kl_bench-"))
    try:
        # Build times: as now, and without the moments (the format-2 build, give or take two small saves).
        t0 = time.perf_counter()
        ref = build_reference(base, windows, probe=probe, path=work / "new")
        build_new = time.perf_counter() - t0
        saved_head = reference_module.linear_head
        reference_module.linear_head = lambda model: None
        try:
            t0 = time.perf_counter()
            build_reference(base, windows, probe=probe, path=work / "no-moments")
            build_old = time.perf_counter() - t0
        finally:
            reference_module.linear_head = saved_head
        old_ref = open_reference(strip_reference(ref.path, work / "old"))
        read_new, read_old = read_seconds(ref), read_seconds(old_ref)
        read_extra = read_new - read_old
        rows = []
        for text in args.mods.split(";"):
            spec = RunSpec(model=args.model, mods=(parse_mod(text),), probe=probe)
            modified = runner.modify(spec)
            truth = exact_per_position(base, modified, windows, probe.batch_size)
            times = {"new": [], "old": []}
            in_kl = {"new": [], "old": []}
            kls: dict[str, torch.Tensor] = {}
            order = (("new", ref, False), ("old", old_ref, True))
            for repeat in range(args.repeats):
                for name, r, force in (
                    order if repeat % 2 else order[::-1]
                ):  # alternated: neither always first
                    sink: list = []
                    clock = [0.0]
                    cls = recording(exact_kl.ExactKL, force, sink, clock)
                    s, metrics = timed_profile(modified, r, windows, probe.batch_size, base, cls)
                    times[name].append(s)
                    in_kl[name].append(clock[0])
                    kls[name] = torch.cat(sink)
                    if name == "new":
                        path = "exact" if metrics["kl_exact"] == 1.0 else "lower bound"
            probe_path = exact_kl.ExactKL(modified, ref.meta, base).path
            e = truth
            finite = torch.isfinite(e)
            row = {
                "mod": spec.label(),
                "path": probe_path,
                "kl_exact": float(e[finite].mean()),
                "exact?": path,
            }
            for name in ("old", "new"):
                a = kls[name]
                row[f"kl_{name}"] = float(a[finite].mean())
                row[f"err_{name}"] = rel(row[f"kl_{name}"], row["kl_exact"])
                row[f"maxabs_{name}"] = float((a[finite] - e[finite]).abs().max())
                row[f"t_{name}"] = min(times[name])
                row[f"kl_s_{name}"] = min(in_kl[name])
            row["ratio"] = row["t_new"] / row["t_old"]
            # Less noisy on a shared machine: the old wall time plus what the new path adds (its KL seconds and
            # its larger batch files' read and check), over the old wall time.
            row["ratio_parts"] = (row["t_old"] + row["kl_s_new"] - row["kl_s_old"] + read_extra) / row[
                "t_old"
            ]
            rows.append(row)
            print(json.dumps(row), file=sys.stderr, flush=True)
            del modified
        size_new, size_old = folder_mb(ref.path), folder_mb(old_ref.path)
    finally:
        shutil.rmtree(work, ignore_errors=True)

    print(f"model `{args.model}`, corpus {probe.corpus}, {args.tokens} tokens, window {probe.window}; KL in nats; "
          f"profile seconds: best of {args.repeats}\n")  # fmt: skip
    print("| modification | KL path | exact KL (mean) | top-K+tail (before) | error | now | error | max per-position "
          "error before / now | profile s before / now | ratio | KL s before / now | ratio by parts |")  # fmt: skip
    print("|---|---|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(
            f"| {r['mod']} | {r['path']} | {r['kl_exact']:.5f} | {r['kl_old']:.5f} | {r['err_old']:+.2%} | "
            f"{r['kl_new']:.5f} | {r['err_new']:+.1e} | {r['maxabs_old']:.1e} / {r['maxabs_new']:.1e} | "
            f"{r['t_old']:.1f} / {r['t_new']:.1f} | {r['ratio']:.3f} | {r['kl_s_old']:.2f} / {r['kl_s_new']:.2f} | "
            f"{r['ratio_parts']:.3f} |"
        )
    moments = [r for r in rows if r["path"] == exact_kl.MOMENTS]
    for label, group in (("moments path", moments), ("all", rows)):
        if group:
            print(
                f"\nmean |relative error| ({label}, {len(group)} runs): before "
                f"{statistics.mean(abs(r['err_old']) for r in group):.2%}, now "
                f"{statistics.mean(abs(r['err_new']) for r in group):.1e} (relative); profile cost ratio now/before: "
                f"median {statistics.median(r['ratio'] for r in group):.3f}, "
                f"max {max(r['ratio'] for r in group):.3f}; by parts: median "
                f"{statistics.median(r['ratio_parts'] for r in group):.3f}, max "
                f"{max(r['ratio_parts'] for r in group):.3f}"
            )
    print(f"\nreference on disk: before {size_old:.1f} MiB, now {size_new:.1f} MiB ({size_new / size_old:.3f}x); "
          f"build: without the moments {build_old:.1f} s, now {build_new:.1f} s "
          f"({build_new / build_old:.3f}x); reading and checking every batch: before {read_old:.2f} s, "
          f"now {read_new:.2f} s")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
