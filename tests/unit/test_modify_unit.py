"""Quantizer and pruner properties on plain tensors and tiny modules."""

import pytest
import torch
from torch import nn
from transformers.pytorch_utils import Conv1D

from hemorrhage_core.errors import SpecError
from hemorrhage_core.modify.prune import prune_mask
from hemorrhage_core.modify.quantize import quantize_rtn, rtn_bits_per_weight
from hemorrhage_core.modify.targets import set_weight, weight_view
from hemorrhage_core.specs import Prune, QuantizeRTN


@pytest.mark.parametrize("bits", [2, 3, 4, 8])
@pytest.mark.parametrize("scheme", ["sym", "asym"])
@pytest.mark.parametrize("granularity", ["tensor", "channel", "group"])
def test_rtn_round_trip_error_is_within_half_a_step(bits, scheme, granularity):
    torch.manual_seed(bits)
    w = torch.randn(16, 100)  # 100 is not a multiple of the group size: exercises the short last group
    deq = quantize_rtn(w, bits=bits, scheme=scheme, granularity=granularity, group_size=32)
    rows = w.reshape(1, -1) if granularity == "tensor" else w
    groups = [w[:, i : i + 32] for i in range(0, 100, 32)] if granularity == "group" else [rows]
    for g_idx, g in enumerate(groups):
        d = deq[:, g_idx * 32 : g_idx * 32 + g.shape[1]] if granularity == "group" else deq.reshape(g.shape)
        if scheme == "sym":
            step = g.abs().amax(dim=1, keepdim=True) / (2 ** (bits - 1) - 1)
        else:
            step = (g.amax(dim=1, keepdim=True).clamp(min=0) - g.amin(dim=1, keepdim=True).clamp(max=0)) / (
                2**bits - 1
            )
        assert ((g - d).abs() <= step / 2 + 1e-6).all()
    if granularity == "channel":
        assert all(deq[i].unique().numel() <= 2**bits for i in range(deq.shape[0]))


def test_rtn_error_falls_as_bits_rise():
    torch.manual_seed(0)
    w = torch.randn(64, 256)
    errors = [
        (quantize_rtn(w, bits=b, scheme="sym", granularity="channel") - w).pow(2).mean().item()
        for b in (2, 3, 4, 6, 8)
    ]
    assert errors == sorted(errors, reverse=True)


def test_group_scales_beat_channel_scales():
    torch.manual_seed(0)
    w = torch.randn(32, 512) * torch.linspace(0.1, 5, 512)  # input channels of very different ranges
    err_channel = (quantize_rtn(w, bits=4, scheme="sym", granularity="channel") - w).pow(2).mean()
    err_group = (quantize_rtn(w, bits=4, scheme="sym", granularity="group", group_size=32) - w).pow(2).mean()
    assert err_group < err_channel


def test_bits_per_weight_counts_scales_and_zeros():
    sym_g = QuantizeRTN(bits=4, granularity="group", group_size=128, scheme="sym")
    asym_g = QuantizeRTN(bits=4, granularity="group", group_size=128, scheme="asym")
    assert rtn_bits_per_weight(sym_g, 1024, 1024) == pytest.approx(4 + 16 / 128)
    assert rtn_bits_per_weight(asym_g, 1024, 1024) == pytest.approx(4 + 20 / 128)


@pytest.mark.parametrize("scope", ["row", "tensor"])
@pytest.mark.parametrize("sparsity", [0.0, 0.1, 0.5, 0.9])
def test_prune_mask_hits_the_requested_sparsity_exactly(scope, sparsity):
    score = torch.rand(10, 40)
    mask = prune_mask(score, sparsity, scope)
    dropped = (~mask).sum().item()
    if scope == "row":
        assert ((~mask).sum(dim=1) == int(sparsity * 40)).all()
    else:
        assert dropped == int(sparsity * 400)
    kept_min = score[mask].min()
    if dropped and scope == "tensor":
        assert score[~mask].max() <= kept_min


def test_weight_view_handles_conv1d_orientation():
    conv = Conv1D(nf=6, nx=4)  # GPT-2 style: weight [in=4, out=6]
    assert weight_view(conv).shape == (6, 4)
    new = torch.arange(24, dtype=torch.float32).reshape(6, 4)
    set_weight(conv, new)
    assert torch.equal(conv.weight.data, new.t())
    lin = nn.Linear(4, 6)
    assert weight_view(lin).shape == (6, 4)


@pytest.mark.parametrize(
    "make",
    [
        lambda: QuantizeRTN(bits=1),
        lambda: QuantizeRTN(bits=9),
        lambda: QuantizeRTN(scheme="weird"),
        lambda: QuantizeRTN(granularity="block"),
        lambda: Prune(sparsity=1.0),
        lambda: Prune(sparsity=-0.1),
        lambda: Prune(method="nonsense"),
    ],
)
def test_impossible_settings_raise_clear_spec_errors(make):
    with pytest.raises(SpecError):
        make()
