"""Precision and placement: half precision on CPU (every machine runs these), and the same paths on CUDA
(marker `gpu`, skipped without a GPU; `bench/gpu_check.sh` runs them with the GPU benchmark).

What must hold in any precision: an unmodified model and an identity block give exactly zero divergence (the
metrics reduce in float32, so a half-precision model compared with itself is still exactly itself); a run in
another precision is stored under its own key; `--device-map auto` places the weights as planned before loading
and measures the same numbers as a plain load of the same weights.
"""

from __future__ import annotations

import json
import math

import pytest
import torch

from hemorrhage_core import models
from hemorrhage_core.errors import ModelError
from hemorrhage_core.placement import GiB, plan_placement
from hemorrhage_core.runner import Runner
from hemorrhage_core.specs import ProbeSettings, RunSpec, parse_mod
from hemorrhage_core.store import Store

PROBE = dict(tokens=256, window=64, batch_size=2, attn_probes=2, attn_len=16, top_k=64)
WORDS = ["the", "quick", "brown", "fox", "jumps", "over", "lazy", "dog", "while", "seven", "wizards", "judge"]
CUDA = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


@pytest.fixture(scope="module")
def text(word_text):
    return word_text(WORDS, 4000)


def _spec(model, text, *mods: str) -> RunSpec:
    return RunSpec(
        model=str(model), mods=tuple(parse_mod(m) for m in mods), probe=ProbeSettings(corpus=text, **PROBE)
    )


def _runner(tmp_path, monkeypatch, **options) -> Runner:
    monkeypatch.setenv("HEMLAB_CACHE", str(tmp_path / "cache"))
    return Runner(Store(tmp_path / "r.duckdb"), **options)


def _assert_exactly_zero(result) -> None:
    m = result.metrics
    assert m["kl_mean"] == 0.0 and m["kl_max"] == 0.0, m
    assert m["top1_agreement"] == 1.0 and m["ppl"] == m["ppl_base"] and m["dp_rms"] == 0.0
    table = result.layer_table()
    assert (table.hidden_rel_error == 0).all() and (table.attn_js_mean == 0).all()


# -- half precision on CPU ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", ["bfloat16", "float16"])
def test_identity_gives_exactly_zero_divergence_in_half_precision(
    dtype, tiny_llama_dir, text, tmp_path, monkeypatch
):
    runner = _runner(tmp_path, monkeypatch, device="cpu", dtype=dtype)
    assert runner.base(str(tiny_llama_dir)).dtype == getattr(torch, dtype)
    _assert_exactly_zero(runner.run(_spec(tiny_llama_dir, text)))
    # Through the weights: a deep copy in half precision with an identity block inserted.
    _assert_exactly_zero(runner.run(_spec(tiny_llama_dir, text, "insert_identity:after=0")))
    # A real change is seen, and its numbers are float32 reductions: finite, and perplexity not rounded to bf16's
    # 8-bit mantissa (two runs with distinct KL must have distinct ppl, which a half-precision mean would merge).
    rtn = runner.run(_spec(tiny_llama_dir, text, "quant_rtn:bits=3")).metrics
    assert 0 < rtn["kl_mean"] < math.inf and rtn["ppl"] != rtn["ppl_base"]


def test_a_run_in_half_precision_is_stored_apart_from_float32(tiny_llama_dir, text, tmp_path, monkeypatch):
    spec = _spec(tiny_llama_dir, text, "quant_rtn:bits=4")
    fp32 = _runner(tmp_path, monkeypatch, device="cpu")
    bf16 = Runner(fp32.store, device="cpu", dtype="bfloat16")
    assert fp32.precision() is None and bf16.precision() == "torch.bfloat16"
    assert fp32.cache_key(spec)[0] != bf16.cache_key(spec)[0]
    first = bf16.run(spec)
    assert not first.cached and fp32.lookup(spec) is None, "a bf16 result must not answer a float32 request"
    assert not fp32.run(spec).cached and len(fp32.store.runs()) == 2


def test_device_map_auto_places_as_planned_and_measures_what_a_plain_load_measures(
    tiny_llama_dir, text, tmp_path, monkeypatch, caplog
):
    spec = _spec(tiny_llama_dir, text, "quant_rtn:bits=3")
    plain = _runner(tmp_path / "plain", monkeypatch, device="cpu").run(spec)
    with caplog.at_level("INFO", logger="hemorrhage_core.models"):
        mapped_runner = _runner(tmp_path / "mapped", monkeypatch, device="cpu", device_map="auto")
        mapped = mapped_runner.run(spec)
    assert any("placement: weights" in m for m in caplog.messages)
    if not torch.cuda.is_available():
        assert mapped_runner.base(spec.model).device.type == "cpu"
        assert mapped.metrics | {"modify_s": 0, "profile_s": 0} == plain.metrics | {
            "modify_s": 0,
            "profile_s": 0,
        }


def test_device_map_refuses_a_model_larger_than_every_device_before_loading(tiny_llama_dir, monkeypatch):
    from hemorrhage_core import placement

    monkeypatch.setattr(placement, "free_memory", lambda: {"cpu": 1000})
    with pytest.raises(ModelError, match="cannot be placed.*all devices together may take"):
        models.load_model(str(tiny_llama_dir), device="cpu", device_map="auto")


def test_placement_fills_gpus_in_order_then_offloads_to_cpu():
    free = {"cuda:0": 10 * GiB, "cuda:1": 10 * GiB, "cpu": 100 * GiB}
    one = plan_placement(6 * GiB, free)
    assert one.shares == {"cuda:0": 6 * GiB} and one.offloaded == 0
    two = plan_placement(12 * GiB, free)
    assert two.shares == {"cuda:0": 8 * GiB, "cuda:1": 4 * GiB}
    assert two.max_memory() == {0: 8 * GiB, 1: 8 * GiB, "cpu": 80 * GiB}
    spill = plan_placement(20 * GiB, free)
    assert spill.offloaded == 4 * GiB and "offloaded to CPU" in spill.describe()
    with pytest.raises(ModelError, match="need about 100.00 GiB"):
        plan_placement(100 * GiB, free)


# -- the same on CUDA (marker gpu) -------------------------------------------------------------------------------

# Every family that changes weights on the device, in the GPU's own precision (bf16, or fp16 without bf16).
GPU_MODS = [
    "quant_rtn:bits=4",
    "quant_rtn:bits=3,granularity=group,group_size=32",
    "gptq:bits=4",
    "prune:sparsity=0.5,method=wanda",
    "prune:sparsity=0.5,method=sparsegpt",
    "prune:sparsity=0.5,method=gblm",
    "awq:bits=4",
    "smoothquant",
    "act_quant",
    "bnb_int8",
    "bnb_4bit",
    "prune_heads:fraction=0.25",
    "prune_channels:fraction=0.25",
    "prune_blocks:n_blocks=1",
    "temperature:value=1.5",
]


@pytest.fixture(scope="module")
def gpu_runner(tmp_path_factory):
    folder = tmp_path_factory.mktemp("gpu")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("HEMLAB_CACHE", str(folder / "cache"))
        yield Runner(Store(folder / "gpu.duckdb"), device="cuda")


@pytest.mark.gpu
@CUDA
def test_gpu_reference_and_profile_in_half_precision_give_exact_zero_for_identity(
    gpu_runner, tiny_llama_dir, text
):
    loaded = gpu_runner.base(str(tiny_llama_dir))
    assert loaded.device.type == "cuda" and loaded.dtype in (torch.bfloat16, torch.float16)
    _assert_exactly_zero(gpu_runner.run(_spec(tiny_llama_dir, text)))
    _assert_exactly_zero(gpu_runner.run(_spec(tiny_llama_dir, text, "insert_identity:after=0")))


@pytest.mark.gpu
@CUDA
@pytest.mark.parametrize("mod", GPU_MODS)
def test_gpu_modification_runs_on_the_device_with_finite_float32_metrics(
    gpu_runner, tiny_llama_dir, text, mod
):
    result = gpu_runner.run(_spec(tiny_llama_dir, text, mod))
    m = result.metrics
    assert all(math.isfinite(m[k]) for k in ("ppl_base", "ppl", "kl_mean", "top1_agreement")), m
    assert m["kl_mean"] > 0, f"{mod} changed nothing on the GPU"
    base = gpu_runner.base(str(tiny_llama_dir)).model
    assert all(p.device.type == "cuda" for p in base.parameters()), "the base left the GPU"


@pytest.mark.gpu
@CUDA
def test_gpu_bitsandbytes_uses_its_cuda_kernels(gpu_runner, tiny_llama_dir, text):
    import bitsandbytes as bnb

    modified = gpu_runner.modify(_spec(tiny_llama_dir, text, "bnb_4bit"))
    layers = [m for m in modified.model.modules() if isinstance(m, bnb.nn.Linear4bit)]
    assert layers and all(m.weight.device.type == "cuda" for m in layers)


@pytest.mark.gpu
@CUDA
def test_gpu_generation_attention_and_mitigation(gpu_runner, tiny_llama_dir, text):
    from hemorrhage_core.analysis.attention import attention_view
    from hemorrhage_core.generation import GenerationSettings, generation_divergence
    from hemorrhage_core.mitigation import CalibrationSet, mitigate

    spec = _spec(tiny_llama_dir, text, "quant_rtn:bits=3")
    same = generation_divergence(
        gpu_runner, _spec(tiny_llama_dir, text), ["the quick"], GenerationSettings(max_new_tokens=8)
    )
    assert same.summary["gen_identical_share"] == 1.0 and same.summary["gen_traj_kl_mean"] == 0.0
    gen = generation_divergence(gpu_runner, spec, ["the quick"], GenerationSettings(max_new_tokens=8))
    assert math.isfinite(gen.summary["gen_traj_kl_mean"])
    view = attention_view(gpu_runner, spec, "the quick brown fox jumps", layer=0)
    assert view.base.dtype.name == "float32" and view.modified is not None
    for remedy in ("decoding calibration", "KL distillation (norms)"):
        fixed = spec.with_mods(*mitigate(spec.mods, [remedy], CalibrationSet(text, 4, 32)))
        assert math.isfinite(gpu_runner.run(fixed).metrics["kl_mean"])


@pytest.mark.gpu
@CUDA
def test_gpu_device_map_auto_matches_a_single_device_load(tiny_llama_dir, text, tmp_path, monkeypatch):
    spec = _spec(tiny_llama_dir, text, "quant_rtn:bits=3")
    one = _runner(tmp_path / "one", monkeypatch, device="cuda").run(spec).metrics
    mapped = _runner(tmp_path / "auto", monkeypatch, device="cuda", device_map="auto").run(spec).metrics
    for k in ("ppl_base", "ppl", "kl_mean", "top1_agreement"):
        assert mapped[k] == pytest.approx(one[k], rel=1e-3), k


def test_gpu_check_script_parses_and_its_benchmark_runs_on_cpu(tiny_llama_dir, text, tmp_path, capsys):
    """bench/gpu_check.sh cannot run here without a GPU: its shell parses, and its benchmark's code path runs
    on the CPU (the same functions a GPU run calls, with the device and budget changed)."""
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[2]
    assert subprocess.run(["bash", "-n", str(root / "bench" / "gpu_check.sh")]).returncode == 0
    sys.path.insert(0, str(root))
    from bench import gpu_bench

    out = tmp_path / "bench.json"
    argv = ["--device", "cpu", "--models", str(tiny_llama_dir), "--tokens", "256", "--window", "64", "--corpus", text,
            "--methods", "quant_rtn:bits=4;bnb_4bit", "--json-out", str(out)]  # fmt: skip
    assert gpu_bench.main(argv) == 0
    assert "| profile tokens/s |" in capsys.readouterr().out
    rows = json.loads(out.read_text())
    assert [r["what"] for r in rows] == ["base reference (corpus pass)", "quant_rtn:bits=4", "bnb_4bit"]
    assert all(r["tokens_per_s"] > 0 and r["peak_mb"] > 0 for r in rows)
