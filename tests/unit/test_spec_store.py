"""Specs are data with stable hashes; the DuckDB store is atomic and never loses rows."""

import dataclasses

import pandas as pd
import pytest

from hemorrhage_core.errors import StoreError
from hemorrhage_core.specs import ProbeSettings, Prune, QuantizeRTN, RunSpec, Temperature
from hemorrhage_core.store import Store


def _spec(**kw):
    return RunSpec(model="m", mods=(Prune(sparsity=0.5), QuantizeRTN(bits=4, granularity="group")), **kw)


def test_spec_round_trips_through_json_and_hash_is_stable():
    spec = _spec()
    again = RunSpec.from_dict(__import__("json").loads(spec.to_json()))
    assert again == spec
    k1 = spec.cache_key(corpus_sha256="abc", model_identity="embedded:m")
    assert k1 == again.cache_key(corpus_sha256="abc", model_identity="embedded:m")
    assert k1 != spec.cache_key(corpus_sha256="abd", model_identity="embedded:m")
    assert k1 != spec.with_mods(QuantizeRTN(bits=4, granularity="group"), Prune(sparsity=0.5)).cache_key(
        corpus_sha256="abc", model_identity="embedded:m"
    ), "order of modifications matters"
    assert k1 != _spec(probe=ProbeSettings(tokens=8192)).cache_key(
        corpus_sha256="abc", model_identity="embedded:m"
    )


def test_a_calibration_file_is_labelled_by_its_name_but_keyed_by_its_path():
    a = Prune(method="wanda", sparsity=0.5, calib_corpus="/srv/uploads/1234/words.txt")
    b = Prune(method="wanda", sparsity=0.5, calib_corpus="/elsewhere/words.txt")
    assert "cal=words.txt" in a.label() and "/srv" not in a.label()
    assert "cal=words.txt" in Prune(method="wanda", sparsity=0.5, calib_corpus="C:\\data\\words.txt").label()
    assert "cal=bible" in Prune(method="wanda", sparsity=0.5, calib_corpus="bible").label()

    def key(mod):
        return RunSpec(model="m", mods=(mod,)).cache_key(corpus_sha256="c", model_identity="m")

    assert key(a) != key(b)


def test_spec_is_frozen_and_hashable():
    spec = RunSpec(model="m", mods=(Temperature(1.5),))
    with pytest.raises(dataclasses.FrozenInstanceError):
        spec.model = "x"
    assert hash(spec) == hash(RunSpec(model="m", mods=(Temperature(1.5),)))


def _frames():
    layers = pd.DataFrame(
        [(0, "hidden_rel_error", 0.1), (1, "hidden_rel_error", 0.2)], columns=["layer", "metric", "value"]
    )
    heads = pd.DataFrame([(0, 0, "attn_js", 0.01)], columns=["layer", "head", "metric", "value"])
    hist = pd.DataFrame([(0.0, 1e-6, 3), (1e-6, 1e-5, 4)], columns=["bin_lo", "bin_hi", "count"])
    return layers, heads, hist


def _row(model="m"):
    return {
        "model": model, "label": "x", "spec_json": "{}", "corpus": "news", "corpus_sha256": "abc",
        "window_tokens": 512, "stride": 512, "token_budget": 4096, "code_version": "1",
        "created_at": pd.Timestamp("2026-01-01"), "wall_s": 1.0, "report_json": "{}",
    }  # fmt: skip


def test_store_round_trip_and_duplicate_key_is_not_written_twice(tmp_path):
    store = Store(tmp_path / "r.duckdb")
    layers, heads, hist = _frames()
    assert store.save_run(
        run_key="k1", run_row=_row(), metrics={"ppl": 3.0}, layers=layers, heads=heads, kl_hist=hist
    )
    assert not store.save_run(
        run_key="k1", run_row=_row(), metrics={"ppl": 9.0}, layers=layers, heads=heads, kl_hist=hist
    )
    got = store.load_run("k1")
    assert got.metrics == {"ppl": 3.0}
    assert len(got.layers) == 2 and len(got.heads) == 1 and got.kl_hist["count"].sum() == 7
    assert Store(tmp_path / "r.duckdb").runs().loc[0, "ppl"] == 3.0  # a second Store on the same file sees it


def test_a_write_that_fails_half_way_leaves_no_partial_rows(tmp_path):
    store = Store(tmp_path / "r.duckdb")
    layers, heads, hist = _frames()
    bad_heads = pd.DataFrame(
        [(0, 0, "attn_js", "not-a-number")], columns=["layer", "head", "metric", "value"]
    )
    with pytest.raises(ValueError):
        store.save_run(
            run_key="k2", run_row=_row(), metrics={"ppl": 1.0}, layers=layers, heads=bad_heads, kl_hist=hist
        )
    assert store.load_run("k2") is None
    assert store.layer_metrics(["k2"]).empty


def test_delete_runs_removes_every_row_of_a_run(tmp_path):
    store = Store(tmp_path / "r.duckdb")
    layers, heads, hist = _frames()
    store.save_run(
        run_key="k1", run_row=_row(), metrics={"ppl": 3.0}, layers=layers, heads=heads, kl_hist=hist
    )
    assert store.delete_runs(["k1"]) == 1
    assert store.load_run("k1") is None and store.runs().empty
    assert store.delete_runs(["k1", "no-such-key"]) == 0  # only runs that existed are reported as deleted


def test_damaged_database_gives_a_clear_error_and_is_left_untouched(tmp_path):
    path = tmp_path / "broken.duckdb"
    path.write_bytes(b"this is not a duckdb file at all" * 100)
    before = path.read_bytes()
    with pytest.raises(StoreError, match="left untouched"):
        Store(path)
    assert path.read_bytes() == before


def test_locked_database_waits_then_reports(tmp_path):
    import duckdb

    path = tmp_path / "locked.duckdb"
    Store(path)
    # A second process holding the file: emulate with a subprocess keeping a read-write connection open.
    import subprocess
    import sys
    import time

    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            f"import duckdb,time; c=duckdb.connect({str(path)!r}); print('ok', flush=True); time.sleep(30)",
        ],
        stdout=subprocess.PIPE,
    )
    try:
        assert holder.stdout.readline().strip() == b"ok"
        store = Store.__new__(Store)
        store.__init__(":memory:")  # noqa: PLC2801 - build a real instance, then point it at the locked file
        store.path, store._memory, store.lock_timeout_s = str(path), False, 0.5
        t0 = time.monotonic()
        with pytest.raises(StoreError, match="locked"):
            store.runs()
        assert time.monotonic() - t0 >= 0.5
    finally:
        holder.kill()
        holder.wait()  # kill() only sends the signal: the file lock goes when the process is gone
    assert duckdb.connect(str(path)).execute("SELECT count(*) FROM runs").fetchone() == (0,)
