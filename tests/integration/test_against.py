"""Bring your own modified checkpoint: `hemlab run --model ORIGINAL --against MODIFIED` (kind `checkpoint`).

On the tiny Llama: an unmodified copy compares at exactly zero; a copy modified and saved by the project itself
measures exactly like the in-process modification; GGUF files written by `gguf_export` load through transformers
(F32 at exactly zero, Q8_0 near zero); checkpoints that cannot be compared token by token are clear errors; and the
Model page measures a checkpoint typed in.
"""

from __future__ import annotations

import json
import logging
import math
import os
import shutil
from pathlib import Path

import pytest
import torch
from conftest import build_tokenizer
from dashboard_env import applied, make_env
from tiny_runs import tiny_spec

from hemorrhage_core import models
from hemorrhage_core.cli import main
from hemorrhage_core.errors import ModelError, SpecError
from hemorrhage_core.gguf_export import write_gguf
from hemorrhage_core.identity import against_spec
from hemorrhage_core.modify import apply_modifications
from hemorrhage_core.modify.checkpoint import tokenizer_problems
from hemorrhage_core.specs import QuantizeRTN, RunSpec
from hemorrhage_core.specs.checkpoint import Against

PROBE = dict(tokens=256, window=64, batch_size=2, attn_probes=2, attn_len=16, top_k=64)
RTN = QuantizeRTN(bits=4, granularity="group", group_size=32)


def _saved(model, tokenizer, folder: Path) -> Path:
    model.save_pretrained(folder, safe_serialization=True)
    tokenizer.save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def copies(tiny_llama_dir, tmp_path_factory):
    """An unmodified copy of the tiny Llama, and one quantized by the project's RTN and saved (safetensors)."""
    root = tmp_path_factory.mktemp("against")
    same = Path(shutil.copytree(tiny_llama_dir, root / "same"))
    loaded = models.load_model(str(tiny_llama_dir), device="cpu")
    rtn = apply_modifications(loaded.model, loaded.num_layers, (RTN,)).model
    return {"same": same, "rtn": _saved(rtn, loaded.tokenizer, root / "rtn"), "root": root}


def _layer_values(result, metric: str) -> list[float]:
    rows = result.layers[result.layers.metric == metric].sort_values("layer")
    return rows.value.tolist()


def test_an_unmodified_copy_gives_exactly_zero(runner, tiny_llama_dir, copies, text_file):
    r = runner.run(tiny_spec(tiny_llama_dir, text_file, against_spec(str(copies["same"]))))
    m = r.metrics
    assert m["kl_mean"] == 0.0 and m["kl_max"] == 0.0 and m["dp_rms"] == 0.0
    assert m["top1_agreement"] == 1.0 and m["ppl_ratio"] == 1.0
    assert _layer_values(r, "hidden_rel_error") == [0.0, 0.0]
    assert m["attn_js_mean"] == 0.0 and m["layers_compared"] == 2.0
    assert m["tokenizer_same_encoding"] == 1.0
    assert r.spec.label() == "checkpoint same"


def test_a_saved_rtn_copy_measures_like_the_in_process_rtn(runner, tiny_llama_dir, copies, text_file):
    in_process = runner.run(tiny_spec(tiny_llama_dir, text_file, RTN))
    saved = runner.run(tiny_spec(tiny_llama_dir, text_file, against_spec(str(copies["rtn"]))))
    # The checkpoint replaces the model, so what follows modifies it: an unmodified copy + RTN is RTN again.
    chained = runner.run(tiny_spec(tiny_llama_dir, text_file, against_spec(str(copies["same"])), RTN))
    assert in_process.metrics["kl_mean"] > 1e-6, (
        "RTN 4-bit must change something for the test to mean anything"
    )
    # The same floats through the same passes: bit for bit the same numbers, not merely close ones.
    for other in (saved, chained):
        for key in (
            "ppl",
            "ppl_ratio",
            "kl_mean",
            "kl_p99",
            "top1_agreement",
            "top5_overlap",
            "dp_rms",
            "attn_js_mean",
        ):
            assert other.metrics[key] == in_process.metrics[key], key
        for metric in ("hidden_rel_error", "hidden_cosine", "lens_kl", "attn_js_mean"):
            assert _layer_values(other, metric) == _layer_values(in_process, metric), metric
    assert chained.metrics["bits_per_weight"] == in_process.metrics["bits_per_weight"]
    logging.getLogger(__name__).info(
        "RTN w4 g32: in-process KL %.6g, saved copy %.6g",
        in_process.metrics["kl_mean"],
        saved.metrics["kl_mean"],
    )


@pytest.fixture(scope="module")
def ggufs(tiny_llama_dir, copies):
    loaded = models.load_model(str(tiny_llama_dir), device="cpu")
    return {
        q: write_gguf(loaded.model, loaded.tokenizer, copies["root"] / f"tiny-{q}.gguf", q)
        for q in ("F32", "F16", "Q8_0")
    }


def test_load_model_reads_a_gguf_file_as_a_plain_float_model(ggufs):
    loaded = models.load_model(str(ggufs["Q8_0"]), device="cpu", dtype="float32")
    assert loaded.source == str(ggufs["Q8_0"]) and loaded.num_layers == 2
    assert not hasattr(loaded.model.config, "quantization_config") and loaded.model.hf_quantizer is None
    assert loaded.model.dtype == torch.float32
    assert models.load_model(str(ggufs["Q8_0"]), device="cpu").fingerprint == loaded.fingerprint


def test_gguf_checkpoints_compare_at_zero_or_near_it(runner, tiny_llama_dir, ggufs, text_file):
    kl = {}
    for qtype, path in ggufs.items():
        r = runner.run(tiny_spec(tiny_llama_dir, text_file, against_spec(str(path))))
        kl[qtype] = r.metrics["kl_mean"]
        assert r.metrics["layers_compared"] == 2.0 and r.metrics["tokenizer_same_encoding"] == 1.0
        if qtype == "Q8_0":
            # 8-bit codes, one fp16 scale per 32 weights; norms in F32: (34 * 8 / 32) bits for nearly every value
            assert 8.4 < r.metrics["bits_per_weight"] < 8.6
            assert r.metrics["top1_agreement"] > 0.99
    # F32 holds the same floats: names, q/k permutation and tokenizer right means exactly the original.
    assert kl["F32"] == 0.0
    assert 0.0 < kl["F16"] < kl["Q8_0"] < 1e-4, kl
    logging.getLogger(__name__).info("GGUF KL mean: %s", kl)


def test_the_cache_key_follows_the_checkpoints_files(runner, tiny_llama_dir, copies, text_file, tmp_path):
    folder = Path(shutil.copytree(copies["same"], tmp_path / "copy"))
    first = against_spec(str(folder))
    weights = next(folder.glob("*.safetensors"))
    st = weights.stat()
    os.utime(weights, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))  # the weights were rewritten
    second = against_spec(str(folder))
    assert first.identity != second.identity
    keys = {runner.cache_key(tiny_spec(tiny_llama_dir, text_file, m))[0] for m in (first, second)}
    assert len(keys) == 2
    with pytest.raises(ModelError, match="has changed since this run was set up"):
        runner.run(tiny_spec(tiny_llama_dir, text_file, first))


def test_a_checkpoint_must_come_first_and_carry_an_identity(tiny_llama_dir):
    with pytest.raises(SpecError, match="identity"):
        Against(source=str(tiny_llama_dir))
    late = (RTN, Against(source="x", identity="y"))
    with pytest.raises(SpecError, match="checkpoint x replaces the whole model, so it must come first"):
        RunSpec(str(tiny_llama_dir), late)  # refused as the run is specified, before any model is loaded
    with pytest.raises(SpecError, match="must come first"):
        apply_modifications(torch.nn.Linear(1, 1), 0, late)


class _Vocab:
    """A tokenizer as `tokenizer_problems` reads it: a vocabulary and the special token ids."""

    def __init__(self, vocab, bos=0, eos=0, unk=None):
        self.vocab, self.bos_token_id, self.eos_token_id, self.unk_token_id = vocab, bos, eos, unk

    def get_vocab(self):
        return self.vocab


def test_tokenizer_problems_name_ids_and_special_tokens(tiny_tokenizer):
    assert tokenizer_problems(tiny_tokenizer, tiny_tokenizer) == []
    assert (
        "vocabulary has 320 tokens" in tokenizer_problems(tiny_tokenizer, build_tokenizer(vocab_size=320))[0]
    )
    vocab = tiny_tokenizer.get_vocab()
    a, b = sorted(vocab)[40:42]
    swapped = _Vocab({**vocab, a: vocab[b], b: vocab[a]})  # the same tokens, two at each other's ids
    assert "2 of 384 token ids stand for other tokens" in tokenizer_problems(tiny_tokenizer, swapped)[0]
    assert "eos token id 5 differs" in tokenizer_problems(tiny_tokenizer, _Vocab(vocab, eos=5))[0]
    assert tokenizer_problems(tiny_tokenizer, _Vocab(vocab, unk=3)) == [], "an unknown token is optional"


def _cli(args, tmp_path, monkeypatch, capsys) -> tuple[int, str, str]:
    monkeypatch.setenv("HEMLAB_CACHE", str(tmp_path / "cache"))
    rc = main(
        [*args, "--tokens", "128", "--window", "64", "--attn-len", "16", "--db", str(tmp_path / "r.duckdb")]
    )
    captured = capsys.readouterr()
    return rc, captured.out, captured.err


def test_cli_refuses_another_tokenizer_and_a_missing_path_in_one_line(
    tiny_llama_dir, tiny_tokenizer, text_file, tmp_path, monkeypatch, capsys
):
    from transformers import LlamaConfig, LlamaForCausalLM

    other_tok = build_tokenizer(vocab_size=320)
    config = LlamaConfig(vocab_size=len(other_tok), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=512)  # fmt: skip
    foreign = _saved(LlamaForCausalLM(config), other_tok, tmp_path / "foreign")
    base = ["run", "--model", str(tiny_llama_dir), "--corpus", text_file]
    for against, expected in [
        (str(foreign), "its tokenizer differs (its vocabulary has 320 tokens, the original's 384)"),
        (str(tmp_path / "no-such-model"), "does not exist"),
        (str(tmp_path / "missing.gguf"), "does not exist"),
    ]:
        rc, _, err = _cli([*base, "--against", against], tmp_path, monkeypatch, capsys)
        lines = [line for line in err.splitlines() if line.startswith("hemlab: error:")]
        assert rc == 2 and len(lines) == 1 and expected in lines[0], err
        assert "Traceback" not in err


def test_cli_against_prints_the_profile(tiny_llama_dir, copies, text_file, tmp_path, monkeypatch, capsys):
    args = [
        "run",
        "--model",
        str(tiny_llama_dir),
        "--against",
        str(copies["rtn"]),
        "--corpus",
        text_file,
        "--json",
    ]
    rc, out, err = _cli(args, tmp_path, monkeypatch, capsys)
    assert rc == 0, err
    out = json.loads(out)
    assert not out["cached"] and out["spec"]["mods"][0]["kind"] == "checkpoint"
    assert (
        out["spec"]["mods"][0]["source"] == str(copies["rtn"].resolve()) and out["label"] == "checkpoint rtn"
    )
    assert out["metrics"]["kl_mean"] > 0 and len(out["layers"]) == 2


def test_another_output_head_is_refused_and_another_depth_drops_the_layer_rows(
    runner, tiny_llama_dir, tiny_tokenizer, text_file, tmp_path, caplog
):
    from transformers import LlamaConfig, LlamaForCausalLM

    def variant(name, **changes):
        fields = dict(vocab_size=len(tiny_tokenizer), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=512,
                      tie_word_embeddings=True)  # fmt: skip
        torch.manual_seed(0)
        return _saved(LlamaForCausalLM(LlamaConfig(**{**fields, **changes})), tiny_tokenizer, tmp_path / name)

    wide_head = variant("wide-head", vocab_size=len(tiny_tokenizer) + 32)
    with pytest.raises(ModelError, match="output head over 416 token ids, the original over 384"):
        runner.run(tiny_spec(tiny_llama_dir, text_file, against_spec(str(wide_head))))
    deeper = variant("deeper", num_hidden_layers=3)
    with caplog.at_level(logging.WARNING):
        r = runner.run(tiny_spec(tiny_llama_dir, text_file, against_spec(str(deeper))))
    assert "blocks cannot be paired" in caplog.text
    assert r.metrics["layers_compared"] == 0.0 and r.metrics["checkpoint_blocks"] == 3.0
    assert all(math.isnan(v) for v in _layer_values(r, "hidden_rel_error")), "no block is paired with another"
    assert r.heads.empty and math.isfinite(r.metrics["kl_mean"]) and r.metrics["kl_mean"] > 0


def test_the_web_ui_policy_keeps_checkpoints_inside_allowed_folders(
    runner, tiny_llama_dir, copies, text_file
):
    from dashboard.state import model_problem

    allowed = [copies["root"]]
    gguf = copies["root"] / "policy.gguf"
    gguf.write_bytes(b"GGUF")
    assert model_problem(str(gguf), allowed) is None
    assert "outside the folders" in model_problem(str(tiny_llama_dir), allowed)
    runner.allowed_dirs = [*allowed, Path(text_file).parent]  # the runner re-checks, symlinks resolved
    link = copies["root"] / "link"
    link.symlink_to(tiny_llama_dir)
    with pytest.raises(ModelError, match="outside the folders"):
        runner.run(tiny_spec(tiny_llama_dir, text_file, against_spec(str(link))))


def test_model_page_measures_a_checkpoint_typed_in(tiny_llama_dir, tmp_path):
    from streamlit.testing.v1 import AppTest

    from hemorrhage_core.store import Store

    env = make_env(tmp_path, tiny_llama_dir)
    copy = shutil.copytree(env["HEMLAB_DEFAULT_MODEL"], Path(env["HEMLAB_DEFAULT_MODEL"]).with_name("copy"))
    app = str(Path(__file__).resolve().parents[2] / "app.py")
    with applied(env):
        at = AppTest.from_file(app, default_timeout=120)
        at.run()
        at.switch_page("pages/model.py").run()
        at.text_input(key="model.against").set_value(str(tmp_path / "elsewhere")).run()
        assert not at.exception
        assert any("outside the folders" in e.value for e in at.error)
        at.text_input(key="model.against").set_value(str(copy)).run()
        assert not at.exception and not at.error, [e.value for e in at.error]
        assert not any(m.label == "KL mean (nats)" for m in at.metric), "nothing runs before Measure"
        at.button(key="model.against.measure").click().run()
        assert not at.exception and not at.error, [e.value for e in at.error]
        metrics = {m.label: m.value for m in at.metric}
        assert metrics["KL mean (nats)"] == "0.0000" and metrics["Top-1 agreement"] == "100.0%"
        assert len(at.get("plotly_chart")) == 4
        stored = [m for spec in Store(env["HEMLAB_DB"]).runs().spec_json for m in json.loads(spec)["mods"]]
        assert {"kind": "checkpoint", "source": str(Path(copy).resolve())} in [
            {k: m[k] for k in ("kind", "source") if k in m} for m in stored
        ]
        again = AppTest.from_file(app, default_timeout=120)  # stored: shown at once, without the button
        again.run()
        again.switch_page("pages/model.py").run()
        again.text_input(key="model.against").set_value(str(copy)).run()
        assert any(m.label == "KL mean (nats)" for m in again.metric)
        assert not any(b.key == "model.against.measure" for b in again.button)
