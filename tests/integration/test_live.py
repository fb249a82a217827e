"""Live measurement on tiny models: running estimates with intervals that end at the stored numbers, progress
per block of a calibrated modification, cancel between blocks, the queue, and decoding-only runs that skip what
cannot change (issue 13)."""

from __future__ import annotations

import copy
import threading
import time

import pandas as pd
import pytest
from tiny_runs import tiny_spec

from hemorrhage_core.compute_queue import ComputeQueue
from hemorrhage_core.errors import Cancelled
from hemorrhage_core.modify.base import ModifiedModel
from hemorrhage_core.probes.partial import HEADLINES, PartialMetrics, position_blocks
from hemorrhage_core.probes.profile import profile_model
from hemorrhage_core.progress import RunSteps, StepUpdate
from hemorrhage_core.runner import Runner
from hemorrhage_core.specs import GPTQ, Prune, QuantizeRTN, Temperature, TopK
from hemorrhage_core.store import Store

# 8 windows of 64 tokens in batches of 2: a first estimate from one window, then four batches.
WIDE = dict(tokens=2048, batch_size=8)  # 32 windows in four batches: enough blocks to see intervals shrink
CALIB = dict(calib_samples=8, calib_len=32)
WORDS = [
    "the",
    "quick",
    "brown",
    "fox",
    "jumps",
    "over",
    "the",
    "lazy",
    "dog",
    "while",
    "seven",
    "wizards",
    "quietly",
    "judge",
    "boxing",
    "matches",
]


@pytest.fixture(scope="module")
def text(word_text):
    return word_text(WORDS, 8000)


def _spec(model, text, *mods, **probe):
    return tiny_spec(model, text, *mods, **{"tokens": 512, **probe})  # 8 windows: progress has steps to show


def _timeless(metrics: dict) -> dict:
    return {k: v for k, v in metrics.items() if not k.endswith("_s")}


def test_running_estimates_end_at_the_stored_numbers_and_their_intervals_shrink(
    runner, tiny_llama_dir, text, tmp_path, monkeypatch
):
    spec = _spec(tiny_llama_dir, text, QuantizeRTN(bits=3), **WIDE)
    seen: list[PartialMetrics] = []
    result = runner.run(spec, partial=seen.append)
    assert [p.source for p in seen] == ["preview"] + ["profile"] * 4
    assert [p.windows for p in seen] == [1, 8, 16, 24, 32] and [p.final for p in seen] == [False] * 4 + [True]
    final = seen[-1]
    for name in HEADLINES:
        assert getattr(final, name).value == result.metrics[name], name  # exactly, not approximately
        assert all(getattr(p, name).covers(getattr(p, name).value) for p in seen)
        assert getattr(seen[1], name).covers(result.metrics[name]), f"the first batch's {name} interval"
        # KL is heavy-tailed: one batch may widen the interval, four batches narrow it.
        assert getattr(final, name).width < min(getattr(seen[0], name).width, getattr(seen[1], name).width)
    assert runner.lookup(spec).metrics["kl_mean"] == final.kl_mean.value, "the stored number"
    # The same spec measured without listeners stores the same numbers and layers (nothing depends on them).
    monkeypatch.setenv("HEMLAB_CACHE", str(tmp_path / "cache-plain"))
    plain = Runner(Store(tmp_path / "plain.duckdb"), device="cpu").run(spec)
    assert _timeless(plain.metrics) == _timeless(result.metrics)
    pd.testing.assert_frame_equal(plain.layers, result.layers)
    pd.testing.assert_frame_equal(plain.heads, result.heads)


def test_an_unmodified_model_has_zero_width_estimates_of_zero_divergence(runner, tiny_gpt2_dir, text):
    seen: list[PartialMetrics] = []
    runner.run(_spec(tiny_gpt2_dir, text), partial=seen.append)
    for p in seen:
        assert (p.kl_mean.lo, p.kl_mean.hi) == (0.0, 0.0) and p.top1_agreement.value == 1.0
        assert p.ppl_ratio.value == 1.0


def test_a_first_estimate_over_a_prefix_of_the_first_window_reads_the_references_own_positions(
    runner, tiny_gpt2_dir, text
):
    """A causal model's first 16 positions do not depend on the rest of the window: the prefix the first estimate
    runs must line up with the reference's first rows, so an unchanged model compares at zero there (a shifted
    row would not), and a changed one gives the numbers of those positions with an interval."""
    from hemorrhage_core.probes.profile import preview

    spec = _spec(tiny_gpt2_dir, text)
    windows, reference = runner._inputs_for(spec, runner.corpus(spec.probe.corpus), None)
    same = preview(runner.modify(spec), reference, windows, positions=16)
    assert (same.positions, same.windows, same.source) == (16, 1, "preview")
    assert same.kl_mean.value < 1e-6 and same.top1_agreement.value == 1.0
    assert same.ppl_ratio.value == pytest.approx(1.0, abs=1e-5)
    changed = preview(
        runner.modify(_spec(tiny_gpt2_dir, text, QuantizeRTN(bits=2))), reference, windows, positions=16
    )
    assert changed.positions == 16 and changed.kl_mean.value > 1e-3 and changed.kl_mean.known
    whole = preview(runner.modify(spec), reference, windows)  # the default: at most the whole window
    assert whole.positions == windows.shape[1] - 1


def test_position_blocks_never_straddle_windows():
    blocks = position_blocks(first_window=2, windows=2, width=511)  # the default window: 8 blocks of <= 64
    assert blocks[:64].unique().tolist() == [16] and blocks[448:511].unique().tolist() == [23]
    assert blocks[511:575].unique().tolist() == [24] and blocks[-1] == 31
    short = position_blocks(first_window=0, windows=1, width=63)  # short windows: 8 blocks of 8
    assert short.unique().numel() == 8 and (short == 0).sum() == 8


def test_a_calibrated_modification_reports_every_block_and_the_fractions_grow(runner, tiny_llama_dir, text):
    heard: list[tuple[float, str]] = []
    for mod in (GPTQ(bits=4, group_size=-1, calib_corpus=text, **CALIB), Prune(method="wanda", sparsity=0.5, calib_corpus=text, **CALIB)):  # fmt: skip
        heard.clear()
        runner.modify(_spec(tiny_llama_dir, text, mod), progress=lambda f, m: heard.append((f, m)))
        fractions = [f for f, _ in heard]
        assert fractions == sorted(fractions) and fractions[-1] == 1.0
        label = "GPTQ" if isinstance(mod, GPTQ) else "wanda"
        blocks = [(f, m) for f, m in heard if f"{label} block" in m]
        assert [m for _, m in blocks] == [f"{label} block 1/2", f"{label} block 2/2"]
        assert blocks[0][0] < blocks[1][0]


def test_rtn_reports_per_layer(runner, tiny_llama_dir, text):
    heard: list[str] = []
    runner.modify(_spec(tiny_llama_dir, text, QuantizeRTN(bits=4)), progress=lambda f, m: heard.append(m))
    assert "RTN layer 1/14" in heard and "RTN layer 14/14" in heard  # 7 Linear layers in each of 2 blocks


def test_cancel_between_blocks_of_a_calibration_stores_nothing(runner, tiny_llama_dir, text):
    spec = _spec(tiny_llama_dir, text, GPTQ(bits=4, group_size=-1, calib_corpus=text, **CALIB))
    messages: list[str] = []
    with pytest.raises(Cancelled):
        runner.run(
            spec,
            progress=lambda f, m: messages.append(m),
            cancelled=lambda: any("GPTQ block 2/2" in m for m in messages),
        )
    assert "GPTQ block 2/2" in messages[-1], "cancelled at the next block, not at the end"
    assert not any("profiling" in m for m in messages)
    assert runner.lookup(spec) is None and runner.store.runs().empty
    assert runner._last_modified is None, "the half-modified copy is dropped"
    assert runner.run(spec).metrics["kl_mean"] > 0, "and the same spec measures afterwards"


def test_run_steps_carry_each_steps_clock_and_a_growing_overall_fraction(runner, tiny_llama_dir, text):
    updates: list[StepUpdate] = []
    overall: list[float] = []
    runner.run(
        _spec(tiny_llama_dir, text, QuantizeRTN(bits=5)),
        steps=updates.append,
        progress=lambda f, m: overall.append(f),
        partial=lambda p: None,
    )
    names = list(dict.fromkeys(u.step for u in updates))
    assert names == ["reference", "modify", "preview", "profile"]
    assert updates[0].steps == ("queue", "reference", "modify", "preview", "profile")
    assert overall == sorted(overall) and overall[-1] == 1.0
    profile = [u for u in updates if u.step == "profile"]
    assert any("block 2/2" in u.message for u in profile), "progress inside a batch, block by block"
    assert profile[-1].elapsed_s >= profile[0].elapsed_s and profile[0].later == ()


def test_the_queue_says_how_many_are_ahead_and_a_waiter_can_cancel():
    queue = ComputeQueue()
    holding, release = threading.Event(), threading.Event()

    def hold():
        with queue.turn():
            holding.set()
            release.wait(10)

    thread = threading.Thread(target=hold)
    thread.start()
    holding.wait(10)
    ahead: list[int] = []
    with pytest.raises(Cancelled), queue.turn(waiting=ahead.append, cancelled=lambda: len(ahead) >= 2):
        pytest.fail("the body must not run while another computation holds the queue")
    assert ahead[:2] == [1, 1]
    release.set()
    thread.join(10)
    started = time.monotonic()
    with queue:  # a plain `with` works as a lock (generations, analyses)
        assert queue.locked()
    assert time.monotonic() - started < 1 and not queue.locked()


def test_runs_of_one_process_share_the_queue_and_report_the_wait(tiny_llama_dir, text, tmp_path, monkeypatch):
    monkeypatch.setenv("HEMLAB_CACHE", str(tmp_path / "cache"))
    queue = ComputeQueue()
    runner = Runner(Store(tmp_path / "q.duckdb"), device="cpu", compute_lock=queue)
    heard: list[str] = []
    with queue:  # another session's computation
        waiter = threading.Thread(
            target=lambda: runner.run(
                _spec(tiny_llama_dir, text, QuantizeRTN(bits=6)), progress=lambda f, m: heard.append(m)
            )
        )
        waiter.start()
        deadline = time.monotonic() + 10
        while not heard and time.monotonic() < deadline:
            time.sleep(0.05)
    waiter.join(60)
    assert heard[0] == "waiting for another computation: 1 ahead" and heard[-1] == "done"


@pytest.mark.parametrize("mods", [(Temperature(1.7),), (TopK(5),)], ids=["temperature", "top_k"])
def test_decoding_only_profiles_skip_the_comparisons_and_give_the_numbers_they_replace(
    runner, tiny_llama_dir, text, mods
):
    """A decoding-only chain shares the base model: its residual and attention comparisons are filled in from the
    reference. The same chain on a copy of the base (nothing shared) computes them all: the numbers agree."""
    spec = _spec(tiny_llama_dir, text, *mods)
    shared = runner.modify(spec)
    base = runner.base(spec.model).model
    assert shared.model is base
    windows, reference = runner._inputs_for(spec, runner.corpus(text), None)
    copied = ModifiedModel(copy.deepcopy(base), list(shared.layer_map), list(shared.logit_transforms))
    fast = profile_model(shared, reference, windows, batch_size=2, base_model=base)
    full = profile_model(copied, reference, windows, batch_size=2, base_model=base)
    assert fast.metrics == full.metrics
    pd.testing.assert_frame_equal(fast.layers, full.layers)
    pd.testing.assert_frame_equal(fast.heads, full.heads)
    assert runner.run(spec).notes and "without being recomputed" in runner.run(spec).notes[0]


def test_run_steps_check_cancel_at_every_report():
    steps = RunSteps(("queue", "profile"), cancelled=lambda: True)
    with pytest.raises(Cancelled):
        steps.step("profile")(0.5, "profiling batch 1/2")
