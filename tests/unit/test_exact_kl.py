"""The exact KL estimator (probes/exact_kl.py) against float64 full-vocabulary KL, on synthetic heads."""

import pytest
import torch
from torch import nn

from hemorrhage_core.probes.capture import linear_head
from hemorrhage_core.probes.exact_kl import reference_moments
from hemorrhage_core.probes.metrics import (
    cross_from_logits_,
    expected_logit,
    kl_from_cross,
    kl_full,
    kl_head_tail,
    kl_topk_parts,
    summarize_logits,
)

V, D, R = 3000, 48, 40


def _head(seed: int = 0, bias: bool = False, scale: float = 1.0):
    g = torch.Generator().manual_seed(seed)
    weight = torch.randn(V, D, generator=g) * 0.4
    b = torch.randn(V, generator=g) * 0.3 if bias else None
    return weight, b, scale


def _logits(h, weight, bias, scale):
    out = h @ weight.T
    return scale * (out + bias if bias is not None else out)


def _truth(a, b):
    return kl_full(torch.log_softmax(a.double(), -1), torch.log_softmax(b.double(), -1))


def _moments_kl(a_hidden, b_hidden, weight, bias, scale_a, scale_b, k=16):
    """The profile's MOMENTS path end to end: a reference summary and moments of P, then Q's summary and KL."""
    from hemorrhage_core.probes.capture import LinearHead

    a = _logits(a_hidden, weight, bias, scale_a)
    targets = torch.zeros(R, dtype=torch.long)
    probs = a.clone()
    base = summarize_logits(a.clone(), targets, k=k)
    probs.sub_(base.log_z.float()[:, None]).exp_()
    ref = reference_moments(LinearHead(weight, bias, scale_a), probs, base.top_ids, a_hidden)
    b = _logits(b_hidden, weight, bias, scale_b)
    cross = ref["mean_tail"] - expected_logit(ref["mu_tail"], b_hidden, scale_b, ref["bias_tail"])
    mod = summarize_logits(b.clone(), targets, top_ids=base.top_ids)
    kl = kl_head_tail(base.top_lp, mod.top_lp, cross, base.tail_lp, base.log_z, mod.log_z)
    coarse = kl_topk_parts(base.top_lp, base.tail_lp, mod.top_lp, mod.tail_lp)
    return kl, coarse, _truth(a, b)


def test_moments_kl_is_exact_when_the_tail_is_empty():
    weight, b, scale = _head()
    g = torch.Generator().manual_seed(6)
    h = torch.randn(R, D, generator=g)
    kl, coarse, truth = _moments_kl(h, h + 0.1 * torch.randn(R, D, generator=g), weight, b, scale, scale, k=V)
    assert torch.allclose(kl, truth, rtol=1e-5) and torch.allclose(coarse.double(), truth, rtol=1e-4)


@pytest.mark.parametrize("bias", [False, True])
@pytest.mark.parametrize("noise", [1e-3, 0.05, 0.5])
def test_moments_kl_is_the_full_vocabulary_kl_whatever_the_tail(bias, noise):
    weight, b, scale = _head(bias=bias)
    g = torch.Generator().manual_seed(1)
    h = torch.randn(R, D, generator=g)
    h2 = h + noise * torch.randn(R, D, generator=g)
    kl, coarse, truth = _moments_kl(h, h2, weight, b, scale, scale)
    # Flat distributions over 3,000 tokens: the top-16 leave most of the mass in the tail.
    assert (truth > 0).all()
    # Exact in real arithmetic; against the KL of the float32 logits the tail's moments differ by the logits'
    # rounding as seen by the two normalisers, times the tail mass (~1e-7 nats here), which a KL of two sets of
    # rounded logits does not see to first order: the floor of the smallest KLs (3e-6 nats at noise 1e-3).
    assert torch.allclose(kl, truth, rtol=1e-4, atol=3e-7), (kl - truth).abs().max()
    assert (coarse.double() <= truth + 1e-6).all()  # the old estimate: a lower bound, here far below
    assert float(coarse.double().mean()) < 0.9 * float(truth.mean())


def test_moments_kl_with_a_temperature_scale():
    weight, b, _ = _head()
    h = torch.randn(R, D, generator=torch.Generator().manual_seed(2))
    kl, _, truth = _moments_kl(h, h, weight, b, 1.0, 1 / 1.5)
    assert torch.allclose(kl, truth, rtol=1e-5)
    kl, _, truth = _moments_kl(h, h * 1.1, weight, b, 2.0, 2.0 / 0.7)  # a model-level scale as well
    assert torch.allclose(kl, truth, rtol=1e-5)


def test_identical_models_give_exactly_zero_on_both_paths():
    weight, b, scale = _head(bias=True)
    h = torch.randn(R, D, generator=torch.Generator().manual_seed(3))
    kl, _, _ = _moments_kl(h, h.clone(), weight, b, scale, scale)
    assert torch.equal(kl, torch.zeros(R, dtype=torch.float64))
    a = _logits(h, weight, b, scale)
    log_z = summarize_logits(a.clone(), torch.zeros(R, dtype=torch.long)).log_z
    cross = cross_from_logits_(a.clone(), log_z, a.clone(), torch.empty_like(a))
    assert torch.equal(kl_from_cross(cross, log_z, log_z), torch.zeros(R, dtype=torch.float64))


def test_logits_path_matches_full_kl_and_is_infinite_where_q_cuts_p_support():
    g = torch.Generator().manual_seed(4)
    a, b = torch.randn(R, V, generator=g) * 3, torch.randn(R, V, generator=g) * 3
    t = torch.zeros(R, dtype=torch.long)
    la, lb = summarize_logits(a.clone(), t).log_z, summarize_logits(b.clone(), t).log_z
    kl = kl_from_cross(cross_from_logits_(a.clone(), la, b, torch.empty_like(a)), la, lb)
    assert torch.allclose(kl, _truth(a, b), rtol=1e-5)
    cut = b.clone()
    cut[:, :10] = float("-inf")
    lc = summarize_logits(cut.clone(), t).log_z
    kl = kl_from_cross(cross_from_logits_(a.clone(), la, cut, torch.empty_like(a)), la, lc)
    assert torch.isinf(kl).all()


def test_log_normaliser_is_float64_and_accurate():
    a = torch.randn(R, V, generator=torch.Generator().manual_seed(5)) * 4 + 20
    s = summarize_logits(a.clone(), torch.zeros(R, dtype=torch.long))
    assert s.log_z.dtype == torch.float64
    # within 1e-6 of a float64 log-sum-exp of the same float32 logits (float32 itself spaces 2e-6 apart near 30)
    assert (s.log_z - torch.logsumexp(a.double(), -1)).abs().max() < 1e-6


def test_linear_head_reads_scalings_and_refuses_a_soft_cap():
    class Config:
        def __init__(self, **kw):
            self.__dict__.update(kw)

        def get_text_config(self):
            return self

    class Tiny(nn.Module):
        def __init__(self, **config):
            super().__init__()
            self.config = Config(**config)
            self.head = nn.Linear(D, V, bias=False)

        def get_output_embeddings(self):
            return self.head

    assert linear_head(Tiny()).scale == 1.0
    assert linear_head(Tiny(logits_scaling=4.0)).scale == pytest.approx(0.25)
    assert linear_head(Tiny(final_logit_softcapping=30.0)) is None
    bf16 = Tiny()
    bf16.head.to(torch.bfloat16)
    assert linear_head(bf16) is None
