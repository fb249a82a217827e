"""Sweeps on a real local Ray cluster (two CPU slots) started by this module, on the tiny Llama: the same stored
rows as the serial executor, bit for bit; a worker process killed mid-point loses nothing and the sweep
completes; a sweep whose points are all stored returns without starting an actor; the CLI's --executor ray.

Ray's session files go to a short scratch folder (its unix sockets live there, and a socket path has a length
limit of about 107 bytes), and the cluster is shut down at the end of the module.
"""

from __future__ import annotations

import json
import shutil
import tempfile
import threading
import time

import psutil
import pytest

from hemorrhage_core.executors import make_executor
from hemorrhage_core.runner import Runner
from hemorrhage_core.specs import ProbeSettings, Prune, QuantizeRTN, RunSpec
from hemorrhage_core.store import Store

ray = pytest.importorskip("ray")

WORDS = ["the", "quick", "brown", "fox", "jumps", "over", "lazy", "dog", "while", "seven", "wizards", "judge"]
TIMING = ("modify_s", "profile_s")  # wall-clock metrics: the only stored numbers that may differ


@pytest.fixture(scope="module")
def cluster():
    temp = tempfile.mkdtemp(prefix="hr", dir="/tmp")
    ray.init(
        num_cpus=2, include_dashboard=False, _temp_dir=temp, logging_level="WARNING", log_to_driver=False
    )
    try:
        yield
    finally:
        ray.shutdown()
        shutil.rmtree(temp, ignore_errors=True)


@pytest.fixture(scope="module")
def specs(tiny_llama_dir, word_text):
    probe = ProbeSettings(corpus=word_text(WORDS, 4000), tokens=512, window=64, batch_size=4)
    mods = [
        QuantizeRTN(bits=8),
        QuantizeRTN(bits=4),
        QuantizeRTN(bits=3),
        Prune(sparsity=0.5, method="wanda"),
    ]
    return [RunSpec(model=str(tiny_llama_dir), mods=(m,), probe=probe) for m in mods]


def _runner(folder, name: str, monkeypatch) -> Runner:
    """A runner on a fresh results file, with a reference cache of its own (so every executor builds its own
    reference: the ray workers read HEMLAB_CACHE from the driver's environment)."""
    monkeypatch.setenv("HEMLAB_CACHE", str(folder / f"cache-{name}"))
    return Runner(Store(folder / f"{name}.duckdb"), device="cpu")


def _rows(store: Store, keys: list[str]) -> dict[str, dict]:
    """Every stored number of these runs, by run key (timings and clock times left out)."""
    out = {}
    for key in keys:
        run = store.load_run(key)
        assert run is not None, f"{key[:12]} not stored"
        row = {k: v for k, v in run.row.items() if k not in ("created_at", "wall_s")}
        out[key] = {
            "row": row,
            "metrics": {k: v for k, v in run.metrics.items() if k not in TIMING},
            "layers": run.layers.to_dict("records"),
            "heads": run.heads.to_dict("records"),
            "kl_hist": run.kl_hist.to_dict("records"),
        }
    return out


@pytest.fixture(scope="module")
def serial_rows(specs, tmp_path_factory):
    folder = tmp_path_factory.mktemp("serial")
    with pytest.MonkeyPatch.context() as mp:
        runner = _runner(folder, "serial", mp)
        results = make_executor("serial").run(runner, specs)
    assert not any(r.cached for r in results)
    return _rows(runner.store, [r.run_key for r in results])


def test_ray_sweep_stores_the_same_rows_as_serial_and_a_second_run_starts_no_actor(
    cluster, specs, serial_rows, tmp_path, monkeypatch
):
    runner = _runner(tmp_path, "ray", monkeypatch)
    events = []
    executor = make_executor("ray", workers=2)
    results = executor.run(runner, specs, on_point=events.append)
    assert [r.spec for r in results] == specs and not any(r.cached for r in results)
    assert executor.actors_started == 2
    stored = _rows(runner.store, [r.run_key for r in results])
    assert stored.keys() == serial_rows.keys()
    for key, rows in serial_rows.items():  # bit for bit: == on every float, no tolerance
        assert stored[key] == rows, f"{key[:12]}: the ray worker's numbers differ from the serial run's"
    kinds = [e.kind for e in events]
    assert kinds.count("started") == kinds.count("stored") == len(specs)
    assert {e.index for e in events if e.kind == "stored"} == set(range(len(specs)))
    assert len({e.worker for e in events if e.kind == "stored"}) == 2, "both workers measured points"

    # The same sweep again: everything from the store, and no actor started (starting one fails the test).
    again = make_executor("ray")
    monkeypatch.setattr(type(again), "_actor_factory", lambda *a, **k: pytest.fail("an actor was started"))
    seen = []
    results = again.run(runner, specs, on_point=seen.append)
    assert all(r.cached for r in results) and again.actors_started == 0
    assert [e.kind for e in seen] == ["cached"] * len(specs)


def _kill_first_measuring_worker(stop: threading.Event, killed: list[int]) -> None:
    """SIGKILL the first Ray worker process seen inside SweepWorker.measure (Ray names a process after the
    actor method it runs), so the kill lands mid-point."""
    me = psutil.Process()
    while not stop.is_set():
        for proc in me.children(recursive=True):
            try:
                if "SweepWorker.measure" in " ".join(proc.cmdline()):
                    proc.kill()
                    killed.append(proc.pid)
                    return
            except psutil.Error:
                continue
        time.sleep(0.02)


def test_a_worker_killed_mid_point_loses_nothing_and_the_sweep_completes(
    cluster, specs, serial_rows, tmp_path, monkeypatch
):
    runner = _runner(tmp_path, "killed", monkeypatch)
    stop, killed = threading.Event(), []
    watcher = threading.Thread(target=_kill_first_measuring_worker, args=(stop, killed), daemon=True)
    watcher.start()
    events = []
    executor = make_executor("ray", workers=2)
    try:
        results = executor.run(runner, specs, on_point=events.append)
    finally:
        stop.set()
        watcher.join(timeout=5)
    assert killed, "no worker was seen measuring, so none was killed"
    assert executor.retried >= 1 and executor.actors_started >= 3  # the dead one's slot got a fresh actor
    assert any(e.kind == "retried" for e in events)
    assert not any(r.cached for r in results)
    assert set(runner.store.runs().run_key) == set(serial_rows), "exactly the sweep's runs, nothing partial"
    assert _rows(runner.store, [r.run_key for r in results]) == serial_rows


def test_cli_sweep_on_ray_prints_per_point_progress_and_json(
    cluster, specs, tmp_path, monkeypatch, capsys, caplog
):
    from hemorrhage_core.cli import main

    monkeypatch.setenv("HEMLAB_CACHE", str(tmp_path / "cache"))
    db = tmp_path / "cli.duckdb"
    probe = specs[0].probe
    argv = ["sweep", "--model", specs[0].model, "--param", "quant-bits", "--values", "8,4", "--corpus", probe.corpus,
            "--tokens", str(probe.tokens), "--window", str(probe.window), "--batch-size", str(probe.batch_size),
            "--device", "cpu", "--db", str(db), "--executor", "ray", "--workers", "2", "--json"]  # fmt: skip
    with caplog.at_level("INFO"):
        assert main(argv) == 0
    rows = json.loads(capsys.readouterr().out)
    assert [r["spec"]["mods"][0]["bits"] for r in rows] == [8, 4] and not any(r["cached"] for r in rows)
    assert sum("stored on" in m for m in caplog.messages) == 2  # one progress line per stored point
    assert len(Store(db).sweeps()) == 1
    assert main(argv) == 0
    assert all(r["cached"] for r in json.loads(capsys.readouterr().out))


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--workers", "2"], "--workers cannot be used with --executor serial"),
        (["--executor", "ray", "--workers", "0"], "--workers must be at least 1"),
        (["--executor", "gpu-farm"], "invalid choice"),
    ],
)
def test_bad_executor_options_are_one_line_errors(extra, message, capsys):
    from hemorrhage_core.cli import main

    argv = ["sweep", "--model", "smollm2-135m", "--param", "quant-bits", "--values", "4", *extra]
    try:
        code = main(argv)
    except SystemExit as exc:  # argparse's own refusal
        code = exc.code
    assert code == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err and len(err.strip().splitlines()) == 1


def test_sweeps_page_sends_the_sweep_to_the_configured_cluster(
    cluster, tiny_llama_dir, tmp_path, monkeypatch
):
    """HEMLAB_RAY_ADDRESS set: the page's sweep runs on the cluster (here the module's, which this process has
    already joined), one line per point, every point stored by the app's process."""
    from pathlib import Path

    from dashboard_env import applied, make_env
    from streamlit.testing.v1 import AppTest

    env = make_env(tmp_path, tiny_llama_dir)
    with applied({**env, "HEMLAB_RAY_ADDRESS": "auto"}):
        at = AppTest.from_file(str(Path(__file__).resolve().parents[2] / "app.py"), default_timeout=180)
        at.run()
        at.switch_page("pages/sweeps.py").run()
        at.text_input(key="sweep.quant_rtn.bits.values").set_value("8, 5").run()
        at.button(key="sweep.go").click().run()
        assert not at.exception, [e.value for e in at.exception]
        assert not at.error, [e.value for e in at.error]
        lines = " ".join(c.value for c in at.caption)
        assert lines.count(": stored on ") == 2, lines
        bits = sorted(json.loads(s)["mods"][0]["bits"] for s in Store(env["HEMLAB_DB"]).runs().spec_json)
        assert bits == [5, 8]
        assert len(at.get("plotly_chart")) >= 1  # the curve of the stored points, as after a serial sweep


def test_bench_ray_sweep_runs_on_the_tiny_model(cluster, tiny_llama_dir, word_text, tmp_path, capsys):
    """bench/ray_sweep.py end to end on two points (the figures themselves: docs/performance.md)."""
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
    from bench import ray_sweep

    out = tmp_path / "bench.json"
    argv = ["--models", str(tiny_llama_dir), "--points", "2", "--tokens", "256", "--window", "64",
            "--corpus", word_text(WORDS, 4000), "--json-out", str(out)]  # fmt: skip
    assert ray_sweep.main(argv) == 0
    assert "| bit-identical |" in capsys.readouterr().out
    (row,) = json.loads(out.read_text())
    assert row["identical"] and row["points"] == 2 and row["workers_used"] == 2
    assert row["serial_s"] > 0 and row["ray_s"] > 0 and row["first_ray_s"] <= row["ray_s"]


class _FakeCluster:
    """What the executor reads of a cluster before it starts actors: its resources (here 8 GPUs, 64 CPUs)."""

    def cluster_resources(self):
        return {"GPU": 8.0, "CPU": 64.0}


def test_one_worker_per_gpu_and_gpu_workers_need_a_known_precision(tmp_path):
    import torch

    from hemorrhage_core.errors import HemlabError
    from hemorrhage_core.executors.ray_cluster import RayExecutor

    executor = RayExecutor()
    on_gpus = Runner(Store(), device=None)
    assert executor._slots(_FakeCluster(), on_gpus) == (True, 8)
    assert executor._slots(_FakeCluster(), Runner(Store(), device="cpu")) == (False, 64)
    if not torch.cuda.is_available():  # this process cannot tell the GPUs' precision
        with pytest.raises(HemlabError, match="pass --dtype bfloat16"):
            executor._actor_factory(ray, on_gpus, use_gpu=True)
