"""bench/probe_engine.py in quick mode on the tiny test model: every section runs and reports a ratio.

The ratios themselves are measured on smollm2-135m (docs/performance.md); on a 2-layer model the unembedding
dominates and the speed goal does not apply. What must hold on any model: a cached spec costs a tiny fraction of
a computed one, memory does not grow with the evaluated tokens, and a sweep shares the model and reference.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # bench/ holds scripts, next to the package
from bench import probe_engine  # noqa: E402


@pytest.fixture(scope="module")
def big_text(word_text):
    words = ["the", "quick", "brown", "fox", "jumps", "over", "a", "lazy", "dog", "while", "seven", "wizards", "quietly", "judge", "boxing", "matches"]  # fmt: skip
    return word_text(words, 30000)


def test_probe_engine_quick_runs_every_section(tiny_llama_dir, big_text, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("HEMLAB_CACHE", str(tmp_path / "cache"))
    out = tmp_path / "bench.json"
    argv = ["--quick", "--model", str(tiny_llama_dir), "--corpus", big_text, "--tokens", "512", "--window", "64",
            "--memory-tokens", "512,4096", "--json-out", str(out)]  # fmt: skip
    assert probe_engine.main(argv) == 0
    table = capsys.readouterr().out
    assert "| # | comparison |" in table
    rows = {r["section"]: r for r in json.loads(out.read_text())}
    assert set(rows) == {"1 speed", "2 cached", "3 lm-eval", "4 memory", "5 sweep"}
    assert rows["1 speed"]["ratio"] > 0
    # a store lookup vs modify + profile; on a tiny model both are fast, so only a clear margin is asserted
    assert rows["2 cached"]["ratio"] < 0.5, rows["2 cached"]
    assert rows["4 memory"]["ratio"] < 1.2, rows["4 memory"]  # 8x the tokens, flat memory
    assert rows["5 sweep"]["ratio"] < 1.0, rows["5 sweep"]  # one process shares model and reference
    lm = rows["3 lm-eval"]
    if probe_engine.BENCH_PYTHON.exists():  # lm-eval is installed only where bench/setup_lmeval.sh was run
        assert lm["ratio"] is not None and lm["ratio"] > 0, lm["note"]
        # the same perplexity three ways: lm-eval differs only by also scoring each window's first token
        assert lm["data"]["ppl_floor"] == pytest.approx(lm["data"]["ppl_ours"], rel=1e-5)
        assert lm["data"]["floor_cpu"] > 0
    else:
        assert "skipped" in lm["note"], lm["note"]
