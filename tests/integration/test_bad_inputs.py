"""Every bad input gets exit code 2 and one clear line, never a traceback, and stores nothing.

The table mixes what a hostile but fair user types: wrong types, out-of-range values, impossible combinations,
values that only the model can refuse (a window longer than its positions, a group wider than its layers), bad
files and bad databases. Each case names a fragment its message must contain."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import duckdb
import pytest

from hemorrhage_core.cli import main
from hemorrhage_core.store import Store

M = "{model}"  # replaced by the tiny Llama's folder (512 positions, vocabulary of 384, widest matrix 128)
C = "{corpus}"  # a small text file
FILES = {  # name -> how the case's file is made in the test's folder
    "binary.txt": lambda p: p.write_bytes(b"words " * 20_000 + b"\x00" + b"more words " * 10),
    "empty.txt": lambda p: p.write_bytes(b""),
    "latin1.txt": lambda p: p.write_bytes("caf\xe9 ".encode("latin-1") * 100),
    "sqlite.db": lambda p: sqlite3.connect(p).execute("CREATE TABLE t (x)").connection.close(),
    "foreign.duckdb": lambda p: duckdb.connect(str(p)).execute("CREATE TABLE customers (id INT)").close(),
    "notdb.duckdb": lambda p: p.write_text("plain text, not a database"),
    "emptydb.duckdb": lambda p: p.write_bytes(b""),
    "afile": lambda p: p.write_text("x"),
}

RUN = ["run", "--model", M, "--corpus", C]
CASES = [
    # -- arguments argparse refuses
    (["run"], "required: --model"),
    (["run", "--model"], "expected one argument"),
    (["frobnicate"], "invalid choice"),
    ([*RUN, "--quant-bits", "four"], "invalid int value"),
    ([*RUN, "--quant-bits", "4.5"], "invalid int value"),
    ([*RUN, "--prune-sparsity", "half"], "invalid float value"),
    ([*RUN, "--temperature", "hot"], "invalid float value"),
    ([*RUN, "--tokens", "lots"], "invalid int value"),
    ([*RUN, "--window", "1e3"], "invalid int value"),
    ([*RUN, "--quant-granularity", "row"], "invalid choice"),
    ([*RUN, "--quant-scheme", "signed"], "invalid choice"),
    ([*RUN, "--prune-scope", "layer"], "invalid choice"),
    ([*RUN, "--batch-size", ""], "invalid int value"),
    ([*RUN, "--top-k", "-"], "invalid int value"),
    (["sweep", "--model", M, "--values", "4"], "required: --param"),
    (["sweep", "--model", M, "--param", "quant-bits"], "required: --values"),
    ([*RUN, "--no-such-flag"], "unrecognized arguments"),
    # -- values a spec refuses
    ([*RUN, "--quant-bits", "1"], "between 2 and 8"),
    ([*RUN, "--quant-bits", "9"], "between 2 and 8"),
    ([*RUN, "--quant-bits", "0"], "between 2 and 8"),
    ([*RUN, "--quant-bits", "-4"], "between 2 and 8"),
    ([*RUN, "--quant-bits", "4", "--quant-granularity", "group", "--group-size", "1"], "group size"),
    ([*RUN, "--quant-bits", "4", "--quant-granularity", "group", "--group-size", "0"], "group size"),
    ([*RUN, "--quant-bits", "4", "--quant-granularity", "group", "--group-size", "-3"], "group size"),
    ([*RUN, "--prune-sparsity", "1.0"], "sparsity"),
    ([*RUN, "--prune-sparsity", "1.5"], "sparsity"),
    ([*RUN, "--prune-sparsity", "-0.1"], "sparsity"),
    ([*RUN, "--prune-sparsity", "0.5", "--prune-method", "random"], "method"),
    ([*RUN, "--temperature", "0"], "temperature"),
    ([*RUN, "--temperature", "-1"], "temperature"),
    ([*RUN, "--temperature", "1e-300"], "temperature"),
    ([*RUN, "--temperature", "1e9"], "temperature"),
    ([*RUN, "--temperature", "nan"], "temperature"),
    ([*RUN, "--tokens", "4"], "at least one window"),
    ([*RUN, "--tokens", "0"], "at least one window"),
    ([*RUN, "--window", "4"], "window must be at least 8"),
    ([*RUN, "--window", "0"], "window must be at least 8"),
    ([*RUN, "--batch-size", "0"], "batch size"),
    ([*RUN, "--batch-size", "-2"], "batch size"),
    ([*RUN, "--top-k", "0"], "top_k"),
    ([*RUN, "--attn-probes", "0"], "probe set"),
    ([*RUN, "--attn-len", "2"], "probe set"),
    ([*RUN, "--attn-probes", "64", "--attn-len", "256"], "too large"),
    # -- --mod strings
    ([*RUN, "--mod", "nonsense"], "unknown modification"),
    ([*RUN, "--mod", "quant_rtn:bits"], "bad option"),
    ([*RUN, "--mod", "quant_rtn:bits=twelve"], "bits"),
    ([*RUN, "--mod", "quant_rtn:bits=12"], "between 2 and 8"),
    ([*RUN, "--mod", "quant_rtn:colour=red"], "colour"),
    ([*RUN, "--mod", "quant_rtn:scheme=odd"], "scheme"),
    ([*RUN, "--mod", "gptq:bits=1"], "between 2 and 8"),
    ([*RUN, "--mod", "gptq:damp=0"], "damp"),
    ([*RUN, "--mod", "gptq:group_size=1"], "group_size"),
    ([*RUN, "--mod", "gptq:calib_samples=0"], "calib_samples"),
    ([*RUN, "--mod", "gptq:calib_len=2"], "calib_len"),
    ([*RUN, "--mod", "awq:grid=0"], "grid"),
    ([*RUN, "--mod", "awq:scheme=x"], "scheme"),
    ([*RUN, "--mod", "smoothquant:alpha=2"], "alpha"),
    ([*RUN, "--mod", "act_quant:a_mode=sometimes"], "a_mode"),
    ([*RUN, "--mod", "act_quant:a_percentile=100"], "a_percentile"),
    ([*RUN, "--mod", "act_quant:outlier_threshold=-1"], "outlier_threshold"),
    ([*RUN, "--mod", "bnb_4bit:quant_type=int4"], "quant_type"),
    ([*RUN, "--mod", "bnb_4bit:blocksize=3"], "blocksize"),
    ([*RUN, "--mod", "prune:pattern=2-4"], "N:M"),
    ([*RUN, "--mod", "prune:pattern=4:2"], "N:M"),
    ([*RUN, "--mod", "prune:pattern=0:4"], "N:M"),
    ([*RUN, "--mod", "prune:sparsity=2"], "sparsity"),
    ([*RUN, "--mod", "prune_heads:fraction=1"], "fraction"),
    ([*RUN, "--mod", "prune_heads:unit=layer"], "unit"),
    ([*RUN, "--mod", "prune_heads:importance=vibes"], "importance"),
    ([*RUN, "--mod", "prune_channels:fraction=-0.5"], "fraction"),
    ([*RUN, "--mod", "prune_blocks:n_blocks=0"], "n_blocks"),
    ([*RUN, "--mod", "remove_layers:layers=x"], "remove_layers"),
    ([*RUN, "--mod", "remove_layers"], "at least one block"),
    ([*RUN, "--mod", "remove_layers:layers=-1"], "block indices"),
    ([*RUN, "--mod", "duplicate_layers:start=3,end=1"], "start < end"),
    ([*RUN, "--mod", "duplicate_layers:times=99"], "times"),
    ([*RUN, "--mod", "depth_upscale:overlap=-1"], "overlap"),
    ([*RUN, "--mod", "top_k:k=0"], "top-k"),
    ([*RUN, "--mod", "top_p:p=0"], "top-p"),
    ([*RUN, "--mod", "top_p:p=1.5"], "top-p"),
    ([*RUN, "--mod", "min_p:p=2"], "min-p"),
    ([*RUN, "--mod", "repetition_penalty:penalty=0"], "penalty"),
    ([*RUN, "--mod", "sampler:top_p=-1"], "top-p"),
    ([*RUN, "--mod", "kl_distill:steps=0"], "steps"),
    ([*RUN, "--mod", "kl_distill:params=everything"], "params"),
    ([*RUN, "--mod", "calibrate_decoding:max_iter=0"], "max_iter"),
    ([*RUN, "--mod", "temperature:value=0"], "temperature"),
    ([*RUN, "--mod", "checkpoint:source=/no/such/folder"], "identity"),
    # -- settings only the model can refuse (checked before any work)
    ([*RUN, "--window", "1024", "--tokens", "2048"], "positions the model has"),
    ([*RUN, "--top-k", "100000"], "vocabulary of 384"),
    (
        [*RUN, "--quant-bits", "4", "--quant-granularity", "group", "--group-size", "1000000000000"],
        "wider than",
    ),
    ([*RUN, "--mod", "gptq:group_size=4096,calib_len=32,calib_samples=2"], "wider than"),
    ([*RUN, "--mod", "gptq:calib_len=1024,calib_samples=2"], "positions the model has"),
    ([*RUN, "--mod", "remove_layers:layers=7"], "do not exist"),
    ([*RUN, "--mod", "duplicate_layers:start=0,end=9"], "past the last block"),
    # -- models, corpora and checkpoints
    (["run", "--model", "no-such-model", "--corpus", C], "smollm2-135m"),
    (["run", "--model", "../nowhere/at/all", "--corpus", C], "Unknown model"),
    (["run", "--model", "{afile}", "--corpus", C], "is a file"),
    (["run", "--model", "{tmp}", "--corpus", C], "no config.json"),
    (["run", "--model", "{pickled}", "--corpus", C], "--allow-pickle"),
    (["run", "--model", "{truncated}", "--corpus", C], "not a readable safetensors file"),
    (["run", "--model", "{emptyweights}", "--corpus", C], "not a readable safetensors file"),
    (["run", "--model", M, "--corpus", "no-such-corpus"], "corpus"),
    (["run", "--model", M, "--corpus", "{binary.txt}"], "binary"),
    (["run", "--model", M, "--corpus", "{empty.txt}"], "empty"),
    (["run", "--model", M, "--corpus", "{latin1.txt}"], "UTF-8"),
    (["run", "--model", M, "--corpus", C, "--tokens", "1000000"], "tokens"),
    ([*RUN, "--against", "/no/such/checkpoint"], "does not exist"),
    ([*RUN, "--against", "{afile}"], "afile"),
    ([*RUN, "--device", "cuda:7"], "no CUDA GPU"),
    # -- sweeps
    (["sweep", "--model", ",", "--param", "quant-bits", "--values", "4", "--corpus", C], "names no model"),
    (["sweep", "--model", M, "--param", "quant-bits", "--values", ",", "--corpus", C], "at least one value"),
    (["sweep", "--model", M, "--param", "quant-bits", "--values", "4,x", "--corpus", C], "cannot parse"),
    (["sweep", "--model", M, "--param", "quant-bits", "--values", "4,1", "--corpus", C], "between 2 and 8"),
    (["sweep", "--model", M, "--param", "colour", "--values", "1", "--corpus", C], "unknown sweep parameter"),
    (["sweep", "--model", M, "--param", "quant_rtn.colour", "--values", "1", "--corpus", C], "unknown sweep"),
    (["sweep", "--model", M, "--param", "nope.bits", "--values", "1", "--corpus", C], "unknown sweep"),
    # -- results databases
    ([*RUN, "--db", "{sqlite.db}"], "SQLite"),
    ([*RUN, "--db", "{foreign.duckdb}"], "another program"),
    ([*RUN, "--db", "{notdb.duckdb}"], "not a DuckDB database"),
    ([*RUN, "--db", "{emptydb.duckdb}"], "empty file"),
    ([*RUN, "--db", "{afile}/x.duckdb"], "is a file, not a folder"),
    ([*RUN, "--db", "{tmp}"], "is a folder"),
]


@pytest.fixture(scope="module")
def paths(tmp_path_factory, tiny_llama_dir):
    tmp = tmp_path_factory.mktemp("bad-inputs")
    made = {"model": str(tiny_llama_dir), "tmp": str(tmp)}
    for name, make in FILES.items():
        make(tmp / name)
        made[name] = str(tmp / name)
    corpus = tmp / "corpus.txt"
    corpus.write_text(" ".join(["river", "sea", "town", "news", "day", "old", "quick", "fox"] * 300))
    made["corpus"] = str(corpus)
    made["afile"] = str(tmp / "afile")
    for name, weights in (("pickled", None), ("truncated", "half"), ("emptyweights", "empty")):
        folder = tmp / name
        folder.mkdir()
        for f in Path(tiny_llama_dir).iterdir():
            if f.suffix != ".safetensors":
                (folder / f.name).write_bytes(f.read_bytes())
        data = (Path(tiny_llama_dir) / "model.safetensors").read_bytes()
        if weights is None:
            (folder / "pytorch_model.bin").write_bytes(b"a pickle the loader must never open")
        else:
            (folder / "model.safetensors").write_bytes(data[: len(data) // 2] if weights == "half" else b"")
        made[name] = str(folder)
    return made


def _fill(arg: str, paths: dict[str, str]) -> str:
    for name, value in paths.items():
        arg = arg.replace("{" + name + "}", value)
    return arg


def test_the_table_is_large_enough():
    assert len(CASES) >= 100


@pytest.mark.parametrize(("argv", "fragment"), CASES, ids=[" ".join(a)[:80] for a, _ in CASES])
def test_bad_input_is_one_clear_line(argv, fragment, paths, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("HEMLAB_CACHE", str(tmp_path / "cache"))
    argv = [_fill(a, paths) for a in argv]
    if "--db" not in argv and argv[0] in ("run", "sweep"):
        argv += ["--db", str(tmp_path / "r.duckdb")]
    if argv[0] in ("run", "sweep") and "--device" not in argv:
        argv += ["--device", "cpu"]
    try:
        code = main(argv)
    except SystemExit as exc:  # argparse's errors
        code = exc.code
    err = capsys.readouterr().err
    errors = [line for line in err.splitlines() if "error:" in line]
    assert code == 2, err
    assert len(errors) == 1, err
    assert fragment in errors[0], err
    assert "Traceback" not in err and "internal error" not in err
    db = tmp_path / "r.duckdb"
    if db.exists():
        assert Store(db).runs().empty, "a refused input stores nothing"
