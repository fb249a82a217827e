"""The probe engine, measured: five ratios, side by side in one run, as a markdown table.

    .venv/bin/python bench/probe_engine.py                      # smollm2-135m, 4096 tokens (~30 min on 2 cores)
    .venv/bin/python bench/probe_engine.py --quick              # a tiny 2-layer Llama with SmolLM2's tokenizer
    .venv/bin/python bench/probe_engine.py --only speed,cached  # some sections only

Sections (goal in brackets):
  speed   full profile of a new spec, base reference cached, vs plain forward passes of the same modified model
          over the same windows (model(ids).logits), with the eager kernel the model is loaded with and with
          sdpa; the ratio against the faster one is the headline [<= 1.3x]
  cached  a stored spec (`Runner.run` -> store lookup) vs the same spec computed [<= 1%]
  lmeval  lm-evaluation-harness HFLM.loglikelihood_rolling perplexity vs our full profile, in-process, same model
          object, same text, window and batch (runs in bench/.venv: see bench/setup_lmeval.sh) [<= 1.0x]; also
          our perplexity alone (the same pass, no other metric): what the profile's metrics cost above it
  memory  peak RSS of a fresh process running one spec (reference built and profiled) at 4k vs 32k tokens
          [<= 1.2x]
  sweep   `hemlab sweep` over N values vs N separate `hemlab run` processes, both from a cold reference cache

Timings on shared CPU machines are noisy: every section runs its contenders alternately, keeps the best of
`--repeats`, and reports CPU seconds (all threads of the process, robust to other processes taking cores) next
to wall seconds. Compare ratios, not seconds.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
# Idle OpenMP threads sleep instead of spinning: on a shared machine spinning threads burn CPU time while they
# wait for a descheduled sibling, which inflates CPU-time measurements of small kernels (2-4x seen here). Set
# before torch starts its thread pool; child processes inherit it. Both contenders of every comparison run so.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

log = logging.getLogger("bench")
SECTIONS = ("speed", "cached", "lmeval", "memory", "sweep")
BENCH_PYTHON = ROOT / "bench" / ".venv" / "bin" / "python"


@dataclass
class Row:
    """One line of the results table: what was compared, both measurements, the ratio and the goal."""

    section: str
    what: str
    ours: str
    theirs: str
    ratio: float | None
    goal: str
    note: str = ""
    data: dict = field(default_factory=dict)

    def markdown(self) -> str:
        ratio = "n/a" if self.ratio is None else f"{self.ratio:.3f}"
        return f"| {self.section} | {self.what} | {self.ours} | {self.theirs} | {ratio} | {self.goal} | {self.note} |"


def timed(fn: Callable[[], object]) -> tuple[float, float]:
    """(wall s, CPU s of this process) of one call."""
    w, c = time.perf_counter(), time.process_time()
    fn()
    return time.perf_counter() - w, time.process_time() - c


def best_of(contenders: dict[str, Callable[[], object]], repeats: int) -> dict[str, tuple[float, float]]:
    """Run the contenders alternately `repeats` times; the best (wall, CPU) of each."""
    best: dict[str, tuple[float, float]] = {}
    for r in range(repeats):
        for name, fn in contenders.items():
            wall, cpu = timed(fn)
            log.info("repeat %d %-14s wall %.2f s  cpu %.2f s", r + 1, name, wall, cpu)
            old = best.get(name, (float("inf"), float("inf")))
            best[name] = (min(old[0], wall), min(old[1], cpu))
    return best


def _s(t: tuple[float, float]) -> str:
    return f"{t[1]:.2f} s CPU ({t[0]:.2f} s wall)"


# -- the model and inputs ---------------------------------------------------------------------------------------


def tiny_model_dir(folder: Path) -> Path:
    """A 2-layer Llama (d=128) with SmolLM2's tokenizer, random seeded weights: the quick mode's model."""
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    from hemorrhage_core import models

    tok = AutoTokenizer.from_pretrained(models.prepare_embedded("smollm2-135m"))
    config = LlamaConfig(
        vocab_size=len(tok),
        hidden_size=128,
        intermediate_size=256,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=1024,
        tie_word_embeddings=True,
        bos_token_id=tok.bos_token_id,
        eos_token_id=tok.eos_token_id,
    )
    torch.manual_seed(0)
    LlamaForCausalLM(config).save_pretrained(folder)
    tok.save_pretrained(folder)
    return folder


@dataclass
class Setup:
    model: str
    corpus: str
    tokens: int
    window: int
    batch_size: int
    mod: str  # --mod text of the "new spec" every section measures
    repeats: int
    memory_tokens: tuple[int, int]
    sweep_values: str


def spec_for(setup: Setup, mod_text: str | None = None, tokens: int | None = None):
    from hemorrhage_core.specs import parse_mod
    from hemorrhage_core.specs import ProbeSettings, RunSpec

    probe = ProbeSettings(
        corpus=setup.corpus, tokens=tokens or setup.tokens, window=setup.window, batch_size=setup.batch_size
    )
    return RunSpec(model=setup.model, mods=(parse_mod(mod_text or setup.mod),), probe=probe)


def inputs(runner, spec):
    """(windows [n, T], base reference) exactly as the runner builds them."""
    from hemorrhage_core import corpora

    loaded = runner.base(spec.model)
    corpus = runner.corpus(spec.probe.corpus)
    p = spec.probe
    windows = corpora.token_windows(loaded.tokenizer, corpus, window=p.window, tokens=p.tokens)
    return windows, runner.reference(spec)


# -- sections ---------------------------------------------------------------------------------------------------


def section_speed(setup: Setup, runner) -> list[Row]:
    import torch

    from hemorrhage_core.probes.profile import profile_model

    spec = spec_for(setup)
    windows, reference = inputs(runner, spec)  # builds (or finds) the reference: not timed
    base = runner.base(spec.model).model
    modified = runner.modify(spec)
    model = modified.model
    kernel = model.config._attn_implementation

    def plain(impl: str):
        def go():
            model.set_attn_implementation(impl)
            with torch.inference_mode():
                for i in range(0, windows.shape[0], setup.batch_size):
                    model(input_ids=windows[i : i + setup.batch_size], use_cache=False).logits  # noqa: B018

        return go

    def profile():
        model.set_attn_implementation(kernel)
        profile_model(modified, reference, windows, batch_size=setup.batch_size, base_model=base)

    best = best_of(
        {"plain eager": plain("eager"), "plain sdpa": plain("sdpa"), "profile": profile}, setup.repeats
    )
    model.set_attn_implementation(kernel)
    fastest = min(("plain eager", "plain sdpa"), key=lambda k: best[k][1])
    tokens = windows.numel()
    return [
        Row(
            "1 speed",
            f"full profile vs plain forward ({fastest.split()[1]}), {tokens} tokens, {setup.mod}",
            _s(best["profile"]),
            _s(best[fastest]),
            best["profile"][1] / best[fastest][1],
            "<= 1.3",
            f"vs eager: {best['profile'][1] / best['plain eager'][1]:.3f}; wall ratio "
            f"{best['profile'][0] / best[fastest][0]:.3f}",
            {k: list(v) for k, v in best.items()},
        )
    ]


def section_cached(setup: Setup, runner) -> list[Row]:
    from hemorrhage_core.runner import Runner
    from hemorrhage_core.store import Store

    spec = spec_for(setup)
    inputs(runner, spec)  # reference cached: the "new spec" pays modify + profile only
    fresh = Runner(Store(":memory:"), device="cpu")
    fresh._models = runner._models  # share the loaded base model (and its weights) instead of loading again
    new = timed(lambda: fresh.run(spec))
    cached = best_of({"cached": lambda: fresh.run(spec)}, max(3, setup.repeats))["cached"]
    return [
        Row(
            "2 cached",
            "stored spec (store lookup) vs the same spec computed (modify + profile)",
            f"{cached[0] * 1000:.1f} ms wall",
            f"{new[0]:.2f} s wall",
            cached[0] / new[0],
            "<= 0.01",
            "the lookup never touches a model",
        )
    ]


def section_lmeval(setup: Setup, runner) -> list[Row]:
    if not BENCH_PYTHON.exists():
        return [
            Row(
                "3 lm-eval",
                "HFLM loglikelihood_rolling vs full profile",
                "-",
                "-",
                None,
                "<= 1.0",
                "skipped: bench/.venv missing (run bench/setup_lmeval.sh)",
            )  # fmt: skip
        ]
    runner.reference(spec_for(setup))  # reference cached before the child starts, as for a user's new spec
    cmd = [
        str(BENCH_PYTHON), str(ROOT / "bench" / "lmeval_compare.py"), "--model", setup.model, "--corpus",
        setup.corpus, "--tokens", str(setup.tokens), "--window", str(setup.window), "--batch-size",
        str(setup.batch_size), "--mod", setup.mod, "--repeats", str(setup.repeats),
    ]  # fmt: skip
    out = subprocess.run(cmd, capture_output=True, text=True, env=os.environ.copy())
    if out.returncode != 0:
        return [
            Row(
                "3 lm-eval",
                "HFLM loglikelihood_rolling vs full profile",
                "-",
                "-",
                None,
                "<= 1.0",
                f"failed: {out.stderr.strip().splitlines()[-1] if out.stderr.strip() else out.returncode}",
            )  # fmt: skip
        ]
    r = json.loads(out.stdout.strip().splitlines()[-1])
    ours, theirs = (r["ours_wall"], r["ours_cpu"]), (r["lmeval_wall"], r["lmeval_cpu"])
    return [
        Row(
            "3 lm-eval",
            f"full profile (every metric) vs lm-eval {r['lmeval_version']} perplexity alone, {r['tokens']} tokens",
            _s(ours),
            _s(theirs),
            ours[1] / theirs[1],
            "<= 1.0",
            f"ppl ours {r['ppl_ours']:.3f} vs lm-eval {r['ppl_lmeval']:.3f} ({r['lmeval_tokens']} tokens scored); "
            f"wall ratio {ours[0] / theirs[0]:.3f}; our perplexity alone (the profile's floor): "
            f"{r['floor_cpu']:.2f} s CPU = {r['floor_cpu'] / theirs[1]:.3f}x lm-eval, full profile = "
            f"{ours[1] / r['floor_cpu']:.3f}x it",
            r,
        )
    ]


def child_memory(setup: Setup, tokens: int) -> dict:
    """In a fresh process: one spec end to end (reference built, profile) at `tokens`; peak RSS in MiB."""
    from hemorrhage_core.runner import Runner
    from hemorrhage_core.store import Store

    runner = Runner(Store(":memory:"), device="cpu")
    spec = spec_for(setup, tokens=tokens)
    runner.base(spec.model)
    loaded_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    result = runner.run(spec)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return {
        "tokens": tokens,
        "peak_mib": peak,
        "after_load_mib": loaded_rss,
        "kl_mean": result.metrics["kl_mean"],
    }


def _cold_cache(tmp: Path) -> dict:
    """Environment with an empty reference cache that still finds the prepared models (no re-conversion)."""
    cache = tmp / "cache"
    cache.mkdir(parents=True, exist_ok=True)
    from hemorrhage_core.paths import cache_dir

    models_dir = cache_dir() / "models"
    if models_dir.exists() and not (cache / "models").exists():
        (cache / "models").symlink_to(models_dir)
    return {**os.environ, "HEMLAB_CACHE": str(cache)}


def section_memory(setup: Setup, runner) -> list[Row]:
    results = []
    for tokens in setup.memory_tokens:
        with tempfile.TemporaryDirectory(prefix="hemlab-mem-") as tmp:
            cmd = [sys.executable, __file__, "--child-memory", str(tokens), *setup_args(setup)]
            out = subprocess.run(cmd, capture_output=True, text=True, env=_cold_cache(Path(tmp)))
            if out.returncode != 0:
                raise RuntimeError(out.stderr[-2000:])
            results.append(json.loads(out.stdout.strip().splitlines()[-1]))
    small, large = results
    return [
        Row(
            "4 memory",
            f"peak RSS of one run, {large['tokens']} vs {small['tokens']} evaluated tokens (fresh process each)",
            f"{large['peak_mib']:.0f} MiB",
            f"{small['peak_mib']:.0f} MiB",
            large["peak_mib"] / small["peak_mib"],
            "<= 1.2",
            f"after model load: {small['after_load_mib']:.0f} / {large['after_load_mib']:.0f} MiB",
            {"runs": results},
        )
    ]


def section_sweep(setup: Setup, runner) -> list[Row]:
    values = setup.sweep_values.split(",")
    kind_field = f"{setup.mod.split(':')[0]}.bits"
    common = ["--model", setup.model, "--corpus", setup.corpus, "--tokens", str(setup.tokens), "--window",
              str(setup.window), "--batch-size", str(setup.batch_size), "--device", "cpu"]  # fmt: skip
    cli = [sys.executable, "-m", "hemorrhage_core.cli"]

    def children_time(commands: list[list[str]], env) -> tuple[float, float]:
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        w = time.perf_counter()
        for cmd in commands:
            out = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=ROOT)
            if out.returncode != 0:
                raise RuntimeError(out.stderr[-2000:])
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        cpu = (after.ru_utime + after.ru_stime) - (before.ru_utime + before.ru_stime)
        return time.perf_counter() - w, cpu

    with tempfile.TemporaryDirectory(prefix="hemlab-sweep-") as tmp:
        tmp = Path(tmp)
        sweep_cmd = [*cli, "sweep", "--param", kind_field, "--values", setup.sweep_values,
                     "--mod", setup.mod, "--db", str(tmp / "sweep.duckdb"), *common]  # fmt: skip
        sweep = children_time([sweep_cmd], _cold_cache(tmp / "a"))
        runs = [
            [
                *cli,
                "run",
                "--mod",
                f"{setup.mod.split(':')[0]}:bits={v}",
                "--db",
                str(tmp / "runs.duckdb"),
                *common,
            ]
            for v in values
        ]
        separate = children_time(runs, _cold_cache(tmp / "b"))
    return [
        Row(
            "5 sweep",
            f"`hemlab sweep` of {len(values)} points vs {len(values)} separate `hemlab run` (cold reference cache)",
            _s(sweep),
            _s(separate),
            sweep[1] / separate[1],
            "< 1 (shares model + reference)",
            f"wall ratio {sweep[0] / separate[0]:.3f}",
        )
    ]


RUNNERS = {
    "speed": section_speed,
    "cached": section_cached,
    "lmeval": section_lmeval,
    "memory": section_memory,
    "sweep": section_sweep,
}


def setup_args(setup: Setup) -> list[str]:
    return ["--model", setup.model, "--corpus", setup.corpus, "--tokens", str(setup.tokens), "--window",
            str(setup.window), "--batch-size", str(setup.batch_size), "--mod", setup.mod]  # fmt: skip


def run(setup: Setup, sections: list[str]) -> list[Row]:
    from hemorrhage_core.runner import Runner
    from hemorrhage_core.store import Store

    runner = Runner(Store(":memory:"), device="cpu")
    rows = []
    for name in sections:
        log.info("section %s", name)
        rows.extend(RUNNERS[name](setup, runner))
    return rows


def table(rows: list[Row], setup: Setup) -> str:
    import torch

    head = (
        f"model `{setup.model}`, corpus `{setup.corpus}`, {setup.tokens} tokens, window {setup.window}, "
        f"batch {setup.batch_size}, torch {torch.__version__}, {torch.get_num_threads()} threads, "
        f"load average {os.getloadavg()[0]:.1f}\n\n"
        "| # | comparison | ours | reference | ratio | goal | note |\n|---|---|---|---|---|---|---|"
    )
    return "\n".join([head, *(r.markdown() for r in rows)])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--quick", action="store_true", help="tiny model, small budgets (seconds to a minute)"
    )
    parser.add_argument("--model", help="default: smollm2-135m (quick: a tiny Llama built in a temp folder)")
    parser.add_argument("--corpus", default="news")
    parser.add_argument("--tokens", type=int)
    parser.add_argument("--window", type=int)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument(
        "--mod", default="quant_rtn:bits=4", help="the 'new spec' (a --mod of bits-like knob)"
    )
    parser.add_argument("--repeats", type=int)
    parser.add_argument(
        "--memory-tokens", help="the two token budgets of the memory section (default 4096,32768)"
    )
    parser.add_argument("--only", help=f"comma-separated sections of {', '.join(SECTIONS)}")
    parser.add_argument("--json-out", help="also write the rows as JSON here")
    parser.add_argument("--child-memory", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s", stream=sys.stderr)

    tmp = None
    model = args.model
    if model is None and args.quick and args.child_memory is None:
        tmp = Path(tempfile.mkdtemp(prefix="hemlab-bench-"))
        # A throw-away model gets a throw-away reference cache (the prepared models are linked in).
        os.environ["HEMLAB_CACHE"] = _cold_cache(tmp)["HEMLAB_CACHE"]
        model = str(tiny_model_dir(tmp / "tiny-llama"))
    setup = Setup(
        model=model or "smollm2-135m",
        corpus=args.corpus,
        tokens=args.tokens or (1024 if args.quick else 4096),
        window=args.window or (128 if args.quick else 512),
        batch_size=args.batch_size,
        mod=args.mod,
        repeats=args.repeats or (1 if args.quick else 2),
        memory_tokens=tuple(int(t) for t in args.memory_tokens.split(","))
        if args.memory_tokens
        else ((1024, 8192) if args.quick else (4096, 32768)),
        sweep_values="8,4" if args.quick else "8,4,3",
    )
    if args.child_memory is not None:
        print(json.dumps(child_memory(setup, args.child_memory)))
        return 0
    sections = args.only.split(",") if args.only else list(SECTIONS)
    unknown = set(sections) - set(SECTIONS)
    if unknown:
        parser.error(f"unknown sections {sorted(unknown)}; choose from {', '.join(SECTIONS)}")
    try:
        rows = run(setup, sections)
    finally:
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)
    print(table(rows, setup))
    if args.json_out:
        Path(args.json_out).write_text(json.dumps([r.__dict__ for r in rows], indent=1, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
