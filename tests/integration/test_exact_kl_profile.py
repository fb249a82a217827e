"""The profile's KL against full-vocabulary KL computed from the two models' own logits (model(ids).logits), on
tiny Llama and GPT-2 models, on both exact paths (probes/exact_kl.py), with a top-K small enough that the
top-K + tail bound of before would be far off."""

from __future__ import annotations

import pytest
import torch

from hemorrhage_core import corpora
from hemorrhage_core.probes.exact_kl import LOGITS, MOMENTS, ExactKL
from hemorrhage_core.probes.metrics import kl_full, quantile_summary
from hemorrhage_core.probes.reference import context_rows
from hemorrhage_core.specs import ProbeSettings, RunSpec, parse_mod

PROBE = dict(tokens=256, window=64, batch_size=2, attn_probes=2, attn_len=16, top_k=4)
CASES = [
    ("quant_rtn:bits=3", MOMENTS),
    ("temperature:value=1.5", MOMENTS),
    ("quant_rtn:bits=3,include_lm_head=true", LOGITS),
    ("repetition_penalty:penalty=1.5", LOGITS),
]


@pytest.fixture(scope="module")
def text_file(word_text):
    words = ["the", "quick", "brown", "fox", "jumps", "over", "lazy", "dog", "calm", "river", "carries", "old", "leaves", "toward", "distant", "sea"]  # fmt: skip
    return word_text(words, 3000, name="exact_kl.txt")


def _truth(runner, spec) -> torch.Tensor:
    """KL(P_base || P_mod) per predicting position, float64, from each model's own forward."""
    loaded = runner.base(spec.model)
    windows = corpora.token_windows(
        loaded.tokenizer, runner.corpus(spec.probe.corpus), window=spec.probe.window, tokens=spec.probe.tokens
    )
    mod = runner.modify(spec)
    with torch.inference_mode():
        a = loaded.model(input_ids=windows).logits[:, :-1].reshape(-1, mod.model.config.vocab_size)
        b = mod.model(input_ids=windows).logits[:, :-1].reshape(-1, mod.model.config.vocab_size)
    b = mod.transform_logits(b.float(), context=context_rows(windows, slice(0, b.shape[0])))
    return kl_full(torch.log_softmax(a.double(), -1), torch.log_softmax(b.double(), -1)), mod, loaded


@pytest.mark.parametrize("text,path", CASES)
def test_profile_kl_is_the_full_vocabulary_kl(runner, tiny_llama_dir, tiny_gpt2_dir, text_file, text, path):
    for model_dir in (tiny_llama_dir, tiny_gpt2_dir):
        spec = RunSpec(
            model=str(model_dir), mods=(parse_mod(text),), probe=ProbeSettings(corpus=text_file, **PROBE)
        )
        metrics = runner.run(spec).metrics
        truth, mod, loaded = _truth(runner, spec)
        windows, reference = runner._inputs_for(spec, runner.corpus(text_file), None)
        assert ExactKL(mod, reference.meta, loaded.model).path == path
        assert metrics["kl_exact"] == 1.0
        expected = quantile_summary(truth, "kl")
        # The two sides differ by the attention kernel (sdpa in the profile, the model's own forward here):
        # measured up to 1.3e-4 relative on a median of 6.5e-4 nats (8e-8 absolute), 5e-5 on a mean of 2.7e-4.
        for key in ("kl_mean", "kl_median", "kl_p90", "kl_max"):
            assert metrics[key] == pytest.approx(expected[key], rel=1e-4, abs=5e-7), (model_dir.name, key)
        # What the top-4 + tail coarsening would have reported: far below (the test would fail on it).
        p = torch.log_softmax(
            loaded.model(input_ids=windows).logits[:, :-1].reshape(truth.shape[0], -1).double(), -1
        )
        assert expected["kl_mean"] > 0 and p.exp().topk(4, -1).values.sum(-1).mean() < 0.9


def test_a_reference_of_the_old_format_is_moved_aside_and_rebuilt(runner, tiny_llama_dir, text_file):
    import json

    from hemorrhage_core.probes.reference import FORMAT, open_reference

    spec = RunSpec(
        model=str(tiny_llama_dir),
        mods=(parse_mod("quant_rtn:bits=3"),),
        probe=ProbeSettings(corpus=text_file, **PROBE),
    )
    _, reference = runner._inputs_for(spec, runner.corpus(text_file), None)
    meta = json.loads((reference.path / "meta.json").read_text())
    assert meta["format"] == FORMAT and meta["moments"]
    meta["format"] = (
        FORMAT - 1
    )  # what a format-2 reference (top-K only) would say: its files pass their checksums
    (reference.path / "meta.json").write_text(json.dumps(meta))
    assert open_reference(reference.path) is None  # refused, not read
    assert not reference.path.exists()
    assert [
        p for p in reference.path.parent.iterdir() if p.name.startswith(reference.path.name + ".damaged-")
    ]
