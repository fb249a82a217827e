"""Crashes and concurrent writers never lose or half-write results: a sweep killed with SIGKILL at several moments
leaves only complete runs, and a process measuring beside a command-line sweep on the same file loses no row."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time

import duckdb
import pytest

from hemorrhage_core.runner import Runner
from hemorrhage_core.specs import ProbeSettings, QuantizeRTN, RunSpec
from hemorrhage_core.store import CHILD_TABLES, Store

BITS = ["8", "7", "6", "5", "4", "3"]


def _sweep_cmd(model_dir, corpus, db, values=BITS):
    return [sys.executable, "-m", "hemorrhage_core.cli", "sweep", "--model", str(model_dir), "--corpus", corpus,
            "--tokens", "256", "--window", "64", "--batch-size", "2", "--attn-len", "16", "--param", "quant-bits",
            "--values", ",".join(values), "--db", str(db), "--device", "cpu"]  # fmt: skip


def _complete_runs(db) -> int:
    """Stored runs, after checking each has its metric, per-layer and distribution rows (none is partial)."""
    if not db.exists():
        return 0
    con = duckdb.connect(str(db), read_only=True)
    try:
        keys = [k for (k,) in con.execute("SELECT run_key FROM runs").fetchall()]
        for key in keys:
            for table in ("metrics", "layer_metrics", "distributions"):
                (n,) = con.execute(f"SELECT count(*) FROM {table} WHERE run_key = ?", [key]).fetchone()
                assert n > 0, f"run {key} has no {table} rows: a partial run was stored"
        for table in CHILD_TABLES:  # no orphan rows of a run that was never completed
            (orphans,) = con.execute(
                f"SELECT count(*) FROM {table} WHERE run_key NOT IN (SELECT run_key FROM runs)"
            ).fetchone()
            assert orphans == 0, table
        return len(keys)
    finally:
        con.close()


@pytest.fixture
def env(tmp_path):
    return {**os.environ, "HEMLAB_CACHE": str(tmp_path / "cache"), "HEMLAB_DATA": str(tmp_path)}


def _kill_when(cmd, env, marker: str | None, delay: float = 0.0) -> bool:
    """Start `cmd`, SIGKILL it when a stderr line contains `marker` (or after `delay` s); whether it was killed."""
    proc = subprocess.Popen(cmd, env=env, stderr=subprocess.PIPE, text=True)
    if marker is None:
        time.sleep(delay)
    else:
        for line in proc.stderr:
            if marker in line:
                break
    proc.kill()
    proc.wait()
    return proc.returncode == -9


def test_sigkill_at_several_moments_leaves_only_complete_runs(tmp_path, env, tiny_llama_dir, word_text):
    corpus = word_text(["river", "sea", "town", "news", "day", "old"], 800)
    db = tmp_path / "k.duckdb"
    cmd = _sweep_cmd(tiny_llama_dir, corpus, db)
    seen = []
    # While starting up, while building the base reference, inside a profile, right after a run was saved.
    for marker, delay in ((None, 0.3), ("base reference: batch 1/", 0), ("[2/6] profiling batch 1/", 0),
                          ("[4/6] done", 0)):  # fmt: skip
        assert _kill_when(cmd, env, marker, delay)
        seen.append(_complete_runs(db))
    # The interrupted sweeps left complete runs only; the last one finishes the rest and loses nothing.
    done = subprocess.run(cmd, env=env, capture_output=True, timeout=600)
    assert done.returncode == 0, done.stderr.decode()[-2000:]
    assert _complete_runs(db) == len(BITS)
    assert seen == sorted(seen) and seen[-1] >= 1, f"runs stored after each kill: {seen}"


def test_a_measuring_process_beside_a_cli_sweep_loses_no_row(
    tmp_path, env, tiny_llama_dir, word_text, monkeypatch
):
    """The dashboard's situation: its own runner writes while a command-line sweep writes the same file."""
    corpus = word_text(["river", "sea", "town", "news", "day", "old"], 800)
    db = tmp_path / "shared.duckdb"
    monkeypatch.setenv("HEMLAB_CACHE", env["HEMLAB_CACHE"])
    cli = subprocess.Popen(
        _sweep_cmd(tiny_llama_dir, corpus, db, ["8", "6", "4"]), env=env, stderr=subprocess.PIPE
    )
    probe = ProbeSettings(corpus=corpus, tokens=256, window=64, batch_size=2, attn_len=16)
    errors = []

    def dashboard():
        try:
            runner = Runner(Store(db), device="cpu")
            for bits in (7, 5, 3):
                runner.run(RunSpec(model=str(tiny_llama_dir), mods=(QuantizeRTN(bits=bits),), probe=probe))
        except Exception as exc:  # reported below with the test's failure
            errors.append(exc)

    thread = threading.Thread(target=dashboard)
    thread.start()
    _, err = cli.communicate(timeout=600)
    thread.join(timeout=600)
    assert cli.returncode == 0, err.decode()[-2000:]
    assert not errors, errors
    assert _complete_runs(db) == 6
