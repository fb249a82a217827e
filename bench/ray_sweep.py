"""A sweep serial vs on a local Ray cluster, side by side in one run, as a markdown table.

    .venv/bin/python bench/ray_sweep.py                          # the tiny Llama and smollm2-135m, 8 points each
    .venv/bin/python bench/ray_sweep.py --models tiny --points 4  # seconds to a minute

For each model the same 8 RTN points (bits 8, 6, 4, 3 x per-channel / group 32 scales) are measured twice from
scratch, each contender with a fresh results file and a fresh reference cache (each builds the base reference
and loads the model): once by the serial executor in this process, once by the ray executor with `--workers`
actors on a local cluster started here with that many CPU slots. Reported, per model:

  - total wall time of each and the ratio serial / ray (above 1: ray is faster). On 2 cores two workers share
    the cores a serial sweep had to itself, so expect little gain: the ratio says what the cluster costs there.
  - time to the first stored point (the user's first number): ray pays for starting its workers (a fresh
    process imports torch and loads the model) before its first point.
  - the per-point overhead Ray adds: for every point after a worker's first, the time from sending the spec to
    the stored result on the driver, minus the worker's own measuring time and the driver's store write (which
    a serial sweep pays too); median over points, and as a share of a serial point [goal <= 5 % on
    smollm2-135m].
  - whether the stored metrics of the two contenders are bit-identical (timings left out).

The cluster's own start (`ray.init`) is reported apart: a standing cluster (`ray start --head`) pays it once.
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
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # as bench/probe_engine.py: idle threads sleep, not spin

log = logging.getLogger("bench")
TIMING = ("modify_s", "profile_s")


@dataclass
class Contender:
    """What one executor did on one model's sweep (seconds from the start of its `run`)."""

    total_s: float
    first_stored_s: float
    started: dict[int, float] = field(default_factory=dict)  # point -> when sent (ray) or begun (serial)
    stored: dict[int, float] = field(default_factory=dict)  # point -> when stored on the driver
    worker_s: dict[int, float] = field(default_factory=dict)  # point -> measuring time on its worker
    worker: dict[int, str] = field(default_factory=dict)
    save_s: dict[int, float] = field(default_factory=dict)  # point -> the driver's store write
    last_save_s: float = 0.0
    metrics: dict[str, dict] = field(default_factory=dict)  # run key -> stored metrics without timings


def the_specs(model: str, corpus: str, tokens: int, window: int, points: int):
    from hemorrhage_core.specs import ProbeSettings, QuantizeRTN, RunSpec

    probe = ProbeSettings(corpus=corpus, tokens=tokens, window=window, batch_size=4)
    mods = [
        QuantizeRTN(bits=b, granularity=g, group_size=32) for g in ("channel", "group") for b in (8, 6, 4, 3)
    ]
    return [RunSpec(model=model, mods=(m,), probe=probe) for m in mods[:points]]


def measure(name: str, specs, folder: Path, **options) -> Contender:
    """One executor over `specs` from scratch (fresh store and reference cache under `folder`)."""
    from hemorrhage_core.executors import make_executor
    from hemorrhage_core.runner import Runner
    from hemorrhage_core.store import Store

    os.environ["HEMLAB_CACHE"] = str(folder / f"cache-{name}")  # the ray workers get it from here too
    runner = Runner(Store(folder / f"{name}.duckdb"), device="cpu")
    c = Contender(0.0, 0.0)
    save, t0 = runner.save, time.perf_counter()

    def timed_save(measurement):  # the stored event of this point follows at once, in this thread
        s = time.perf_counter()
        try:
            return save(measurement)
        finally:
            c.last_save_s = time.perf_counter() - s

    runner.save = timed_save

    def on_point(event) -> None:
        now = time.perf_counter() - t0
        if event.kind == "started":
            c.started[event.index] = now
        elif event.kind == "stored":
            c.stored[event.index] = now
            c.worker_s[event.index] = event.seconds
            c.worker[event.index] = event.worker
            c.save_s[event.index] = c.last_save_s

    results = make_executor(name, **options).run(runner, specs, on_point=on_point)
    c.total_s = time.perf_counter() - t0
    c.first_stored_s = min(c.stored.values())
    for r in results:
        c.metrics[r.run_key] = {k: v for k, v in r.metrics.items() if k not in TIMING}
    return c


def steady_points(c: Contender) -> list[int]:
    """The points after each worker's first (a first point also waits for its worker to start)."""
    firsts: dict[str, int] = {}
    for i in sorted(c.started, key=c.started.get):
        firsts.setdefault(c.worker[i], i)
    return [i for i in c.stored if i not in firsts.values()]


def ray_overhead(c: Contender) -> list[float]:
    """Per steady point: sent -> stored on the driver, minus the worker's measuring and the store write."""
    return [c.stored[i] - c.started[i] - c.worker_s[i] - c.save_s[i] for i in steady_points(c)]


def compare(label: str, specs, folder: Path, workers: int, worker_threads: int | None) -> dict:
    serial = measure("serial", specs, folder)
    ray = measure("ray", specs, folder, workers=workers, worker_threads=worker_threads)
    # A serial point after the first (the first also loads the model and builds the reference).
    ordered = sorted(serial.stored)
    serial_points = [serial.stored[b] - serial.stored[a] for a, b in zip(ordered, ordered[1:], strict=False)]
    serial_point = statistics.median(serial_points) if serial_points else serial.total_s
    overhead = ray_overhead(ray)
    over = statistics.median(overhead) if overhead else None
    steady = [ray.worker_s[i] for i in steady_points(ray)]
    return {
        "model": label,
        "points": len(specs),
        "tokens": specs[0].probe.tokens,
        "window": specs[0].probe.window,
        "serial_s": serial.total_s,
        "ray_s": ray.total_s,
        "ratio": serial.total_s / ray.total_s,
        "first_serial_s": serial.first_stored_s,
        "first_ray_s": ray.first_stored_s,
        "serial_point_s": serial_point,
        "ray_worker_point_s": statistics.median(steady) if steady else None,
        "overhead_s": over,
        "overhead_share": over / serial_point if over is not None else None,
        "overhead_points": len(overhead),
        "save_s": statistics.median(ray.save_s.values()) if ray.save_s else None,
        "workers_used": len(set(ray.worker.values())),
        "identical": serial.metrics == ray.metrics,
    }


def table(rows: list[dict], cluster_s: float | None, serial_threads: int, worker_threads: int) -> str:
    out = [
        f"Local Ray cluster started in {cluster_s:.1f} s (once, before both models)"
        if cluster_s is not None
        else "Ray cluster joined as it was (started before this run)",
        f"torch threads: {serial_threads} in the serial run, {worker_threads} in each ray worker "
        f"({os.cpu_count()} cores on this machine)",
        "",
        "| model | points, tokens/window | serial | ray | ratio serial/ray | first stored: serial / ray | "
        "serial point | ray worker point | ray overhead per point | share of a serial point | store write | "
        "bit-identical |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        over = (
            "n/a"
            if r["overhead_s"] is None
            else f"{r['overhead_s'] * 1000:.0f} ms ({r['overhead_points']} pts)"
        )
        share = "n/a" if r["overhead_share"] is None else f"{r['overhead_share']:.1%}"
        worker = "n/a" if r["ray_worker_point_s"] is None else f"{r['ray_worker_point_s']:.2f} s"
        save = "n/a" if r["save_s"] is None else f"{r['save_s'] * 1000:.0f} ms"
        out.append(
            f"| {r['model']} | {r['points']}, {r['tokens']}/{r['window']} | {r['serial_s']:.1f} s | "
            f"{r['ray_s']:.1f} s ({r['workers_used']} workers) | {r['ratio']:.2f} | "
            f"{r['first_serial_s']:.1f} s / {r['first_ray_s']:.1f} s | {r['serial_point_s']:.2f} s | {worker} | "
            f"{over} | {share} | {save} | {'yes' if r['identical'] else 'NO'} |"
        )
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--models", default="tiny,smollm2-135m", help="tiny, smollm2-135m, or a model folder")
    parser.add_argument("--points", type=int, default=8, help="sweep points (at most 8)")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--worker-threads", type=int, help="default: this process's torch threads")
    parser.add_argument(
        "--tokens", type=int, default=1024, help="smollm2-135m's budget (small: 2 shared cores)"
    )
    parser.add_argument("--window", type=int, default=256)
    parser.add_argument("--tiny-tokens", type=int, default=1024)
    parser.add_argument("--corpus", default="news")
    parser.add_argument("--json-out", help="also write the rows as JSON here")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")

    import ray
    import torch

    from bench.probe_engine import tiny_model_dir

    work = Path(tempfile.mkdtemp(prefix="hrb", dir="/tmp"))  # short: Ray's unix sockets live under it
    saved_cache = os.environ.get("HEMLAB_CACHE")
    cluster_s = None
    joined_here = not ray.is_initialized()
    try:
        if joined_here:
            t = time.perf_counter()
            ray.init(
                num_cpus=args.workers,
                include_dashboard=False,
                _temp_dir=str(work / "ray"),
                logging_level="WARNING",
                log_to_driver=False,
            )
            cluster_s = time.perf_counter() - t
        rows = []
        for name in [m.strip() for m in args.models.split(",") if m.strip()]:
            if name == "tiny":
                model, tokens, window = str(tiny_model_dir(work / "tiny-llama")), args.tiny_tokens, 128
            else:
                model, tokens, window = name, args.tokens, args.window
            specs = the_specs(model, args.corpus, tokens, window, args.points)
            log.info("%s: %d points, %d tokens in windows of %d", name, len(specs), tokens, window)
            rows.append(
                compare(name, specs, work / name.replace("/", "_"), args.workers, args.worker_threads)
            )
        threads = torch.get_num_threads()
        print(table(rows, cluster_s, threads, args.worker_threads or threads))
        if args.json_out:
            Path(args.json_out).write_text(json.dumps(rows, indent=2))
    finally:
        if joined_here:
            ray.shutdown()
        if saved_cache is None:
            os.environ.pop("HEMLAB_CACHE", None)
        else:
            os.environ["HEMLAB_CACHE"] = saved_cache
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
