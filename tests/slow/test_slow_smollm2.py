"""End to end on the real embedded smollm2-135m (4-bit GGUF baseline dequantized to fp32). Minutes: `make test-slow`."""

import json

import pytest

from hemorrhage_core.cli import main

pytestmark = pytest.mark.slow


def test_smollm2_rtn_bits_sweep_and_magnitude_pruning_end_to_end(tmp_path, capsys):
    db = str(tmp_path / "slow.duckdb")
    common = ["--model", "smollm2-135m", "--corpus", "news", "--tokens", "2048", "--db", db, "--json"]
    assert main(["sweep", "--param", "quant-bits", "--values", "8,4,2", *common]) == 0
    rows = json.loads(capsys.readouterr().out)
    kl = [r["metrics"]["kl_mean"] for r in rows]
    top1 = [r["metrics"]["top1_agreement"] for r in rows]
    assert kl == sorted(kl) and top1 == sorted(top1, reverse=True)
    assert kl[0] < 0.01, "8-bit per-channel RTN should barely move the distribution"
    ppl_base = rows[0]["metrics"]["ppl_base"]
    assert 15 < ppl_base < 60, "SmolLM2-135M perplexity on the news corpus is ~31-33 at window 512"
    assert rows[2]["metrics"]["ppl_ratio"] > 2, "2-bit RTN collapses the model"
    # The cascade: at 4 bits the residual-stream error at the last layer exceeds the first layer's.
    layers = rows[1]["layers"]
    assert layers[-1]["hidden_rel_error"] > layers[0]["hidden_rel_error"]

    assert main(["run", "--prune-sparsity", "0.5", *common]) == 0
    pruned = json.loads(capsys.readouterr().out)
    assert pruned["metrics"]["achieved_sparsity"] == pytest.approx(0.5, abs=0.01)
    assert pruned["metrics"]["ppl_ratio"] > 1.1

    assert main(["run", "--quant-bits", "4", *common]) == 0
    again = json.loads(capsys.readouterr().out)
    assert again["cached"] is True and again["metrics"]["kl_mean"] == rows[1]["metrics"]["kl_mean"]
