"""The `gguf` family on the tiny Llama: a real GGUF file written, quantized, read back and profiled.

Tests that need llama.cpp's tools skip, with the message that says how to build them, when they are absent.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest
from dashboard_env import SENTENCE

from hemorrhage_core import llamacpp, models
from hemorrhage_core.analysis.sweeps import summarize
from hemorrhage_core.errors import ModelError, SpecError
from hemorrhage_core.gguf_export import write_gguf
from hemorrhage_core.modify.gguf import file_footprint
from hemorrhage_core.specs import GGUF_TYPES, GGUFQuant, ProbeSettings, RunSpec, parse_mod

PROBE = dict(tokens=256, window=64, batch_size=2, attn_probes=2, attn_len=16, top_k=64)

needs_tools = pytest.mark.skipif(
    not llamacpp.available("llama-quantize", "llama-imatrix"),
    reason=llamacpp.missing_message("llama-quantize", "llama-imatrix"),
)


@pytest.fixture(scope="module")
def text_file(word_text):
    return word_text(SENTENCE.split(), 6000)


def _spec(model, text_file, *mods) -> RunSpec:
    return RunSpec(model=str(model), mods=mods, probe=ProbeSettings(corpus=text_file, **PROBE))


def test_spec_validation_and_labels():
    assert GGUFQuant().label() == "GGUF Q4_K_M"
    assert parse_mod("gguf:qtype=Q8_0,pure=true").label() == "GGUF Q8_0 pure"
    with pytest.raises(SpecError, match="qtype must be one of .*got 'Q3_X'"):
        GGUFQuant(qtype="Q3_X")
    with pytest.raises(SpecError, match="IQ2_XS needs an importance matrix"):
        GGUFQuant(qtype="IQ2_XS")
    assert GGUFQuant(qtype="IQ2_XS", imatrix=True).label() == "GGUF IQ2_XS imatrix cal=news 32x512"
    with pytest.raises(SpecError, match="export must be 'F32' or 'F16'"):
        GGUFQuant(export="Q8_0")
    with pytest.raises(SpecError, match="F16 is not quantized"):
        GGUFQuant(qtype="F16", imatrix=True)
    # Only a pure legacy type (or F16) is the file the gguf Python package writes by itself.
    assert GGUFQuant(qtype="Q4_0", pure=True).python_writes and GGUFQuant(qtype="F16").python_writes
    assert not GGUFQuant(qtype="Q4_0").python_writes and not GGUFQuant(qtype="Q2_K", pure=True).python_writes
    assert list(GGUF_TYPES) == sorted(GGUF_TYPES, key=lambda n: GGUF_TYPES[n].block_bits)


def test_a_pure_q8_0_file_round_trips_at_near_zero_kl(
    runner, tiny_llama_dir, text_file, monkeypatch, tmp_path
):
    # Without any llama.cpp tool: the gguf Python package writes the file.
    monkeypatch.setenv("HEMLAB_LLAMA_BIN", "/nonexistent")
    work = tmp_path / "gguf_tmp"
    work.mkdir()
    monkeypatch.setattr("hemorrhage_core.modify.gguf.workdir_root", lambda: work)
    r = runner.run(_spec(tiny_llama_dir, text_file, GGUFQuant(qtype="Q8_0", pure=True)))
    m = r.metrics
    assert m["gguf_quantizer_python"] == 1.0
    assert 0.0 < m["kl_mean"] < 1e-3 and m["top1_agreement"] > 0.98, m
    # Q8_0: 32 int8 codes + one fp16 scale per block = 8.5 bits, in the blocks and in the embedding alike.
    assert m["bits_per_weight"] == 8.5 and m["gguf_embedding_bits"] == 8.5 and m["gguf_share_Q8_0"] == 1.0
    assert m["gguf_selfcheck_output_rel_diff"] < 1e-4
    assert not any(work.iterdir()), "temporary GGUF files must be removed"


def test_without_the_tools_a_mixed_type_says_how_to_build_them(
    runner, tiny_llama_dir, text_file, monkeypatch
):
    monkeypatch.setenv("HEMLAB_LLAMA_BIN", "/nonexistent")
    with pytest.raises(llamacpp.LlamaToolsMissing, match="make llama-tools") as err:
        runner.run(_spec(tiny_llama_dir, text_file, GGUFQuant(qtype="Q2_K")))
    assert "llama-quantize is not built" in str(err.value)
    with pytest.raises(llamacpp.LlamaToolsMissing, match="pure=true writes every matrix"):
        runner.run(_spec(tiny_llama_dir, text_file, GGUFQuant(qtype="Q4_0")))


def test_an_architecture_without_an_exporter_is_refused_in_one_sentence(runner, tiny_gpt2_dir, text_file):
    with pytest.raises(ModelError, match="exporting 'gpt2' models to GGUF is not supported"):
        runner.run(_spec(tiny_gpt2_dir, text_file, GGUFQuant(qtype="Q8_0", pure=True)))


def _dequantized(path) -> dict[str, np.ndarray]:
    from gguf import GGUFReader, dequantize

    return {t.name: dequantize(t.data, t.tensor_type) for t in GGUFReader(path).tensors}


@needs_tools
def test_llama_quantize_and_the_python_package_write_the_same_q4_0(tiny_llama_dir, tmp_path):
    loaded = models.load_model(str(tiny_llama_dir), device="cpu")
    python = write_gguf(loaded.model, loaded.tokenizer, tmp_path / "py.gguf", "Q4_0")
    base = write_gguf(loaded.model, loaded.tokenizer, tmp_path / "f32.gguf", "F32")
    tool = tmp_path / "tool.gguf"
    llamacpp.run_tool("llama-quantize", ["--pure", str(base), str(tool), "Q4_0"])
    a, b = _dequantized(python), _dequantized(tool)
    assert a.keys() == b.keys()
    worst = max(float(np.abs(a[k] - b[k]).max() / max(np.abs(a[k]).max(), 1e-12)) for k in a)
    assert worst < 1e-3, worst  # the same codes and scales (both are ggml's reference Q4_0 quantizer)
    assert file_footprint(python)["bits_per_weight"] == file_footprint(tool)["bits_per_weight"] == 4.5


@needs_tools
def test_a_llama_quantize_run_with_an_importance_matrix(runner, tiny_llama_dir, text_file):
    plain = runner.run(_spec(tiny_llama_dir, text_file, GGUFQuant(qtype="Q4_0")))
    mod = GGUFQuant(qtype="Q4_0", imatrix=True, calib_corpus=text_file, calib_samples=4, calib_len=64)
    weighted = runner.run(_spec(tiny_llama_dir, text_file, mod))
    for r in (plain, weighted):
        assert r.metrics["gguf_quantizer_python"] == 0.0 and r.metrics["kl_mean"] > 0.0
        assert r.metrics["gguf_share_Q4_0"] == 1.0 and r.metrics["bits_per_weight"] == 4.5
    # The importance matrix changes which codes are chosen, so the damage differs (it is no silent no-op).
    assert weighted.metrics["kl_mean"] != plain.metrics["kl_mean"]
    assert weighted.spec.label().startswith("GGUF Q4_0 imatrix")


def test_gguf_stacks_on_an_earlier_modification(runner, tiny_llama_dir, text_file):
    from hemorrhage_core.specs import Prune

    prune = Prune(method="magnitude", sparsity=0.5)
    alone = runner.run(_spec(tiny_llama_dir, text_file, prune))
    stacked = runner.run(_spec(tiny_llama_dir, text_file, prune, GGUFQuant(qtype="F16")))
    # F16 of the pruned weights: the pruned model again up to half-precision rounding.
    assert math.isclose(stacked.metrics["kl_mean"], alone.metrics["kl_mean"], rel_tol=0.05)
    assert stacked.metrics["bits_per_weight"] == 16.0


def test_a_sweep_over_types_is_ordered_by_measured_bits():
    @dataclasses.dataclass
    class R:
        run_key: str
        metrics: dict
        spec: RunSpec

    spec = RunSpec(model="m")
    results = [R(f"k{i}", {"ppl_ratio": r, "bits_per_weight": b}, spec) for i, (r, b) in
               enumerate([(1.01, 8.5), (1.05, 4.5), (3.0, 2.9)])]  # fmt: skip
    s = summarize("gguf.qtype", "m", ["Q8_0", "Q4_0", "Q2_K"], results)
    assert s.thresholds is not None and s.thresholds.direction == "descending"
    assert s.thresholds.first_over["2"] == 2.9 and "measured bits per weight" in s.note
    assert s.values == ("Q8_0", "Q4_0", "Q2_K")


def _claim10(runner, model):
    from hemorrhage_core.analysis.claims import check_claims

    (result,) = check_claims(runner, model=str(model), tokens=512, only={10})
    return result


@needs_tools
def test_claim_10_measures_q2k_against_2_bit_rtn_and_reports_the_stored_bits(runner, tiny_llama_dir):
    result = _claim10(runner, tiny_llama_dir)
    assert not result.error and result.testable, (result.error, result.note)
    assert [c.statement.split(":")[0] for c in result.checks][:3] == [
        "Q2_K does not collapse",
        "uniform 2-bit RTN (sym, group 128) collapses",
        "the Q2_K file stores about 2.6 bits per block weight (2.4-3.0), the premise of the paper's statement",
    ]
    q2k = result.rows[0]
    assert q2k["label"].startswith("GGUF Q2_K") and q2k["bits_per_weight"] > 2.0
    # The tiny model's 64-wide rows fill no 256-value K-quant block: its "Q2_K" file is no 2.6-bit file, and the
    # check says so instead of passing on the type's name.
    assert q2k["bits_per_weight"] > 3.0 and not result.checks[2].passed
    assert result.verdict in ("partly holds", "does not hold", "holds")


def test_claim_10_is_not_testable_without_the_tools_and_says_why(runner, tiny_llama_dir, monkeypatch):
    monkeypatch.setenv("HEMLAB_LLAMA_BIN", "/nonexistent")
    result = _claim10(runner, tiny_llama_dir)
    assert result.verdict == "not testable" and "make llama-tools" in result.note
