"""End to end on tiny Llama- and GPT-2-style models built from configs and loaded through the real loader."""

import hashlib
import json
import subprocess
import sys

import pandas as pd
import pytest
import torch
from tiny_runs import tiny_spec

from hemorrhage_core.cli import main
from hemorrhage_core.runner import Runner
from hemorrhage_core.specs import Prune, QuantizeRTN, Temperature
from hemorrhage_core.store import Store


@pytest.fixture(params=["llama", "gpt2"])
def model_dir(request, tiny_llama_dir, tiny_gpt2_dir):
    return str(tiny_llama_dir if request.param == "llama" else tiny_gpt2_dir)


def _state_hash(model) -> str:
    h = hashlib.sha256()
    for name, t in sorted(model.state_dict().items()):
        h.update(name.encode())
        h.update(t.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()


def test_unmodified_model_gives_exactly_zero_divergence(runner, model_dir, text_file):
    r = runner.run(tiny_spec(model_dir, text_file))
    m = r.metrics
    assert m["kl_mean"] == 0.0 and m["kl_max"] == 0.0
    assert m["top1_agreement"] == 1.0 and m["top5_overlap"] == 1.0
    assert m["ppl"] == m["ppl_base"] and m["dp_rms"] == 0.0
    table = r.layer_table()
    assert (table.hidden_rel_error == 0).all() and (table.attn_js_mean == 0).all()
    assert m["evaluated_tokens"] == (256 // 64) * 63


def test_kl_grows_as_bits_fall_and_8_bit_is_small_but_not_zero(runner, model_dir, text_file):
    kls = []
    for bits in (8, 6, 4, 3, 2):
        kls.append(runner.run(tiny_spec(model_dir, text_file, QuantizeRTN(bits=bits))).metrics["kl_mean"])
    assert 0 < kls[0] < 0.01
    assert kls == sorted(kls), kls


def test_base_model_is_never_mutated(runner, model_dir, text_file):
    base = runner.base(model_dir).model
    before = _state_hash(base)
    runner.run(
        tiny_spec(
            model_dir, text_file, Prune(sparsity=0.5), QuantizeRTN(bits=3, granularity="group", group_size=16)
        )
    )
    runner.run(tiny_spec(model_dir, text_file, QuantizeRTN(bits=2, include_lm_head=True)))
    runner.run(tiny_spec(model_dir, text_file, Temperature(2.0)))
    assert _state_hash(base) == before


def test_the_last_modification_is_shared_until_another_spec_is_modified(runner, model_dir, text_file):
    pruned = tiny_spec(model_dir, text_file, Prune(sparsity=0.5))
    first = runner.modify(pruned)
    assert runner.modify(pruned) is first  # a profile, then a generation of the same spec: one modification
    assert (
        runner.modify(tiny_spec(model_dir, text_file, Prune(sparsity=0.5))) is first
    )  # equal specs are one spec
    other = runner.modify(tiny_spec(model_dir, text_file, Prune(sparsity=0.3)))
    assert other is not first and runner.modify(pruned) is not first  # one slot: rebuilt after another spec
    assert runner.modify(pruned).model is not runner.base(model_dir).model


def test_achieved_sparsity_is_reported(runner, model_dir, text_file):
    r = runner.run(tiny_spec(model_dir, text_file, Prune(sparsity=0.3)))
    assert r.metrics["achieved_sparsity"] == pytest.approx(0.3, abs=0.02)
    assert r.metrics["kl_mean"] > 0


def test_temperature_changes_perplexity_but_not_argmax(runner, model_dir, text_file):
    r = runner.run(tiny_spec(model_dir, text_file, Temperature(2.0)))
    assert r.metrics["top1_agreement"] == 1.0 and r.metrics["kl_mean"] > 0
    assert r.metrics["ppl"] != r.metrics["ppl_base"]


def test_a_stored_spec_returns_without_loading_the_model(tmp_path, monkeypatch, tiny_llama_dir, text_file):
    monkeypatch.setenv("HEMLAB_CACHE", str(tmp_path / "cache"))
    spec = tiny_spec(str(tiny_llama_dir), text_file, QuantizeRTN(bits=4))
    first = Runner(Store(tmp_path / "r.duckdb"), device="cpu").run(spec)
    fresh = Runner(Store(tmp_path / "r.duckdb"), device="cpu")
    again = fresh.run(spec)
    assert not first.cached and again.cached
    assert fresh._models == {}, "a cached spec must not load the model"
    assert again.metrics["kl_mean"] == first.metrics["kl_mean"]
    pd.testing.assert_frame_equal(
        again.layer_table(), first.layer_table(), check_dtype=False, check_like=True
    )


def test_including_tied_lm_head_unties_it_and_leaves_the_embedding_alone(tiny_llama_dir):
    from hemorrhage_core.models import load_model
    from hemorrhage_core.modify import apply_modifications

    lm = load_model(str(tiny_llama_dir), device="cpu")
    model = lm.model
    if model.get_output_embeddings().weight.data_ptr() != model.get_input_embeddings().weight.data_ptr():
        pytest.skip("tiny llama fixture does not tie embeddings")
    emb_before = model.get_input_embeddings().weight.clone()
    out = apply_modifications(model, lm.num_layers, (QuantizeRTN(bits=2, include_lm_head=True),))
    assert torch.equal(out.model.get_input_embeddings().weight, emb_before)
    assert not torch.equal(out.model.get_output_embeddings().weight, emb_before)


def test_gpt2_conv1d_weights_are_quantized(tiny_gpt2_dir):
    from hemorrhage_core.models import load_model
    from hemorrhage_core.modify import apply_modifications

    lm = load_model(str(tiny_gpt2_dir), device="cpu")
    out = apply_modifications(lm.model, lm.num_layers, (QuantizeRTN(bits=2),))
    w = out.model.transformer.h[0].attn.c_attn.weight  # Conv1D [in, out]
    assert w.t().unique(dim=1).shape[1] <= w.shape[0]  # sanity: still the same shape
    per_out_levels = [w[:, j].unique().numel() for j in range(w.shape[1])]
    assert max(per_out_levels) <= 4  # 2-bit per output channel: at most 4 levels in every output column


def test_cli_run_and_sweep_json_contract(tmp_path, monkeypatch, capsys, tiny_llama_dir, text_file):
    monkeypatch.setenv("HEMLAB_CACHE", str(tmp_path / "cache"))
    common = ["--model", str(tiny_llama_dir), "--corpus", text_file, "--tokens", "256", "--window", "64",
              "--batch-size", "2", "--db", str(tmp_path / "cli.duckdb"), "--device", "cpu", "--json"]  # fmt: skip
    assert (
        main(["run", "--quant-bits", "4", "--quant-granularity", "group", "--group-size", "16", *common]) == 0
    )
    out = json.loads(capsys.readouterr().out)
    assert set(out) >= {"spec", "cached", "metrics", "layers"} and out["cached"] is False
    assert set(out["metrics"]) >= {"ppl_base", "ppl", "kl_mean", "kl_p99", "top1_agreement"}
    assert set(out["layers"][0]) >= {"layer", "hidden_rel_error", "hidden_cosine", "attn_js_mean"}
    assert out["spec"]["mods"][0]["bits"] == 4
    assert main(["sweep", "--param", "quant-bits", "--values", "8,4", "--quant-granularity", "group",
                 "--group-size", "16", *common]) == 0  # fmt: skip
    rows = json.loads(capsys.readouterr().out)
    assert [r["spec"]["mods"][0]["bits"] for r in rows] == [8, 4]
    assert rows[1]["cached"] is True, "the 4-bit point was stored by the run above"
    assert main(["run", "--quant-bits", "4", "--attn-probes", "2", "--attn-len", "16", *common]) == 0
    out = json.loads(capsys.readouterr().out)
    assert (out["spec"]["probe"]["attn_probes"], out["spec"]["probe"]["attn_len"]) == (2, 16)
    assert out["cached"] is False, "another probe set is another measurement"


@pytest.mark.parametrize(
    "argv, message",
    [
        (["run", "--model", "no-such-model"], "smollm2-135m"),
        (["run", "--model", "smollm2-135m", "--quant-bits", "12"], "between 2 and 8"),
        (["run", "--model", "smollm2-135m", "--prune-sparsity", "1.5"], "sparsity"),
        (["sweep", "--model", "smollm2-135m", "--param", "quant-bits", "--values", "4,x"], "cannot parse"),
        (["run", "--model", "smollm2-135m", "--attn-probes", "8", "--attn-len", "256"], "too large"),
    ],
)
def test_cli_errors_are_messages_not_tracebacks(argv, message, capsys, tmp_path):
    assert main([*argv, "--db", str(tmp_path / "e.duckdb")]) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err


def test_two_processes_writing_one_database_lose_nothing(tmp_path, tiny_llama_dir, text_file):
    db = tmp_path / "shared.duckdb"
    env = {**__import__("os").environ, "HEMLAB_CACHE": str(tmp_path / "cache")}
    common = ["--model", str(tiny_llama_dir), "--corpus", text_file, "--tokens", "256", "--window", "64",
              "--batch-size", "2", "--db", str(db), "--device", "cpu"]  # fmt: skip
    procs = [
        subprocess.Popen(
            [
                sys.executable,
                "-m",
                "hemorrhage_core.cli",
                "sweep",
                "--param",
                "quant-bits",
                "--values",
                values,
                *common,
            ],
            env=env,
            stderr=subprocess.PIPE,
        )  # fmt: skip
        for values in ("8,6,5", "4,3,2")
    ]
    for p in procs:
        _, err = p.communicate(timeout=300)
        assert p.returncode == 0, err.decode()[-2000:]
    runs = Store(db).runs()
    assert len(runs) == 6 and runs.run_key.is_unique
