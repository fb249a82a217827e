"""The attention probe set is read during the corpus pass: its maps must be what a separate eager pass gives."""

import pytest
import torch

from hemorrhage_core.probes.capture import attention_patterns
from hemorrhage_core.probes.kernels import use_fast_attention
from hemorrhage_core.probes.reference import ProbeMaps, attention_probe_shape, corpus_pass
from hemorrhage_core.specs import ProbeSettings


def _llama():
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(
        vocab_size=97, hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=2, max_position_embeddings=128,
    )  # fmt: skip
    return LlamaForCausalLM(config)


def _gpt2():
    from transformers import GPT2Config, GPT2LMHeadModel

    return GPT2LMHeadModel(GPT2Config(vocab_size=97, n_layer=2, n_embd=32, n_head=4, n_positions=128))


def _gemma3_sliding():
    """A sliding window (6) shorter than the probe prefix (12): the prefix mask must keep the window."""
    from transformers import Gemma3ForCausalLM, Gemma3TextConfig

    config = Gemma3TextConfig(
        vocab_size=97, hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
        num_key_value_heads=1, head_dim=16, sliding_window=6, max_position_embeddings=128,
        layer_types=["sliding_attention", "full_attention"],
    )  # fmt: skip
    return Gemma3ForCausalLM(config)


@pytest.mark.parametrize("build", [_llama, _gpt2, _gemma3_sliding], ids=["llama", "gpt2", "gemma3-sliding"])
def test_prefix_maps_from_the_corpus_pass_equal_a_separate_eager_pass(build):
    torch.manual_seed(0)
    model = build().eval()
    model.set_attn_implementation("eager")
    windows = torch.randint(0, 97, (5, 32))
    expected = attention_patterns(model, windows[:3, :12])  # plain eager model, the prefixes alone
    assert use_fast_attention(model)
    _, _, maps = corpus_pass(model, windows[:4], 3, 12)
    assert len(maps) == len(expected) == 2
    for got, want in zip(maps, expected, strict=True):
        assert got.shape == want.shape == (3, want.shape[1], 12, 12)
        torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-4)
    # Causal (and sliding) structure: nothing above the diagonal.
    assert float(maps[0].triu(1).abs().max()) == 0.0


def test_probe_maps_gather_probes_across_batches_and_fall_back_to_an_eager_pass():
    torch.manual_seed(0)
    model = _llama().eval()
    model.set_attn_implementation("eager")
    windows = torch.randint(0, 97, (5, 32))
    expected = attention_patterns(model, windows[:3, :8])
    use_fast_attention(model)
    probes = ProbeMaps(windows, 3, 8)
    for sl in (slice(0, 2), slice(2, 4), slice(4, 5)):  # batch size 2: probes 0-1, then 2, then none
        probes.add(corpus_pass(model, windows[sl], probes.rows_in(sl), probes.length)[2])
    for got, want in zip(probes.result(model), expected, strict=True):
        torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-4)
    # A model on another kernel captures nothing: the probe set gets its own eager pass over the same prefixes.
    model.set_attn_implementation("eager")
    assert corpus_pass(model, windows[:2], 2, 8)[2] == []
    fallback = ProbeMaps(windows, 3, 8).result(model)
    for got, want in zip(fallback, expected, strict=True):
        assert torch.equal(got, want)


def test_probe_set_is_clamped_to_the_windows_the_budget_has():
    windows = torch.zeros(2, 64, dtype=torch.long)
    assert attention_probe_shape(windows, ProbeSettings(tokens=128, window=64)) == (2, 64)
    assert attention_probe_shape(
        windows, ProbeSettings(tokens=128, window=64, attn_probes=1, attn_len=16)
    ) == (1, 16)
