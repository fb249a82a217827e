"""Metric functions against analytic values."""

import math

import pytest
import torch

from hemorrhage_core.probes.metrics import (
    LN2,
    LayerAccumulator,
    entropy,
    histogram,
    js_divergence,
    kl_full,
    kl_logits,
    kl_topk,
    kl_topk_parts,
    log_tail_mass,
    logsumexp_,
    quantile_summary,
    summarize_logits,
)


def test_kl_of_two_bernoullis_matches_closed_form():
    p, q = 0.3, 0.6
    expected = p * math.log(p / q) + (1 - p) * math.log((1 - p) / (1 - q))
    lp = torch.tensor([[math.log(p), math.log(1 - p)]])
    lq = torch.tensor([[math.log(q), math.log(1 - q)]])
    assert kl_full(lp, lq).item() == pytest.approx(expected, rel=1e-6)


def test_kl_of_identical_distributions_is_exactly_zero():
    lp = torch.log_softmax(torch.randn(5, 50), -1)
    assert torch.equal(kl_full(lp, lp), torch.zeros(5))
    top_lp, top_ids = torch.topk(lp, 8, dim=-1)
    tail = log_tail_mass(lp, top_ids)
    assert torch.equal(kl_topk(top_lp, tail, top_ids, lp), torch.zeros(5))


def test_kl_topk_is_exact_when_k_covers_vocabulary_and_a_lower_bound_otherwise():
    torch.manual_seed(0)
    lp = torch.log_softmax(torch.randn(64, 40) * 2, -1)
    lq = torch.log_softmax(torch.randn(64, 40) * 2, -1)
    exact = kl_full(lp, lq)
    top_lp, top_ids = torch.topk(lp, 40, dim=-1)
    full_k = kl_topk(top_lp, log_tail_mass(lp, top_ids), top_ids, lq)
    assert torch.allclose(full_k, exact, atol=1e-5)
    top_lp, top_ids = torch.topk(lp, 5, dim=-1)
    partial = kl_topk(top_lp, log_tail_mass(lp, top_ids), top_ids, lq)
    assert (partial <= exact + 1e-5).all()
    assert (partial >= -1e-6).all()


def test_log_tail_mass_matches_direct_sum():
    lp = torch.log_softmax(torch.randn(3, 20), -1)
    top_lp, top_ids = torch.topk(lp, 4, dim=-1)
    direct = torch.log1p(-top_lp.exp().sum(-1))
    assert torch.allclose(log_tail_mass(lp, top_ids), direct, atol=1e-5)


def test_in_place_logsumexp_matches_torch_including_rows_of_minus_infinity():
    x = torch.randn(4, 300) * 30
    x[1, :] = float("-inf")
    x[2, 5:] = float("-inf")
    expected = torch.logsumexp(x, dim=-1)
    got = logsumexp_(x.clone())
    assert torch.isneginf(got[1])
    assert torch.allclose(got[[0, 2, 3]], expected[[0, 2, 3]], rtol=1e-6)


def test_kl_from_logits_matches_kl_of_log_softmax_and_is_zero_for_identical_rows():
    torch.manual_seed(4)
    a, b = torch.randn(8, 500) * 4, torch.randn(8, 500) * 4
    exact = kl_full(torch.log_softmax(a.double(), -1), torch.log_softmax(b.double(), -1))
    assert torch.allclose(kl_logits(a, b), exact, rtol=1e-5)
    # A constant shift of the logits is the same distribution: 0 up to rounding, never negative.
    shifted = kl_logits(a, a + 3.0)
    assert (shifted >= 0).all() and (shifted < 1e-5).all()
    assert torch.equal(kl_logits(a, a), torch.zeros(8, dtype=torch.float64))


def test_logit_summary_matches_log_softmax_and_is_bitwise_repeatable():
    torch.manual_seed(3)
    logits = torch.randn(6, 30) * 3
    targets = torch.randint(0, 30, (6,))
    lp = torch.log_softmax(logits.double(), -1)
    base = summarize_logits(logits.clone(), targets, k=8, n_best=3)
    top_lp, top_ids = torch.topk(lp, 8, dim=-1)
    assert torch.equal(base.top_ids, top_ids)
    assert torch.allclose(base.top_lp.double(), top_lp, atol=1e-5)
    assert torch.allclose(base.tail_lp.double(), log_tail_mass(lp, top_ids), atol=1e-5)
    assert torch.allclose(base.target_lp.double(), lp.gather(1, targets[:, None]).squeeze(1), atol=1e-5)
    assert torch.equal(base.best_ids, top_ids[:, :3])
    assert not base.infinite.any()
    # The same logits summarised on the base ids (the profile's side): identical bits, so KL is exactly 0.
    again = summarize_logits(logits.clone(), targets, top_ids=base.top_ids, n_best=3)
    assert torch.equal(again.top_lp, base.top_lp) and torch.equal(again.tail_lp, base.tail_lp)
    assert torch.equal(kl_topk_parts(base.top_lp, base.tail_lp, again.top_lp, again.tail_lp), torch.zeros(6))
    # A truncated distribution: -inf logits are flagged, and a tail that is entirely cut has log mass -inf.
    cut = torch.full_like(logits, float("-inf")).scatter(1, top_ids, logits.gather(1, top_ids))
    s = summarize_logits(cut, targets, top_ids=top_ids, check_infinite=True)
    assert s.infinite.all() and torch.isneginf(s.tail_lp).all()
    assert torch.allclose(s.top_lp.exp().sum(-1), torch.ones(6), atol=1e-6)


def test_js_is_symmetric_bounded_and_ln2_for_disjoint_support():
    torch.manual_seed(1)
    p = torch.softmax(torch.randn(10, 7), -1)
    q = torch.softmax(torch.randn(10, 7), -1)
    assert torch.allclose(js_divergence(p, q), js_divergence(q, p))
    js = js_divergence(p, q)
    assert (js >= 0).all() and (js <= LN2 + 1e-7).all()
    disjoint = js_divergence(torch.tensor([1.0, 0.0]), torch.tensor([0.0, 1.0]))
    assert disjoint.item() == pytest.approx(LN2)
    assert js_divergence(p, p).abs().max().item() == 0.0


def test_entropy_of_uniform_is_log_n():
    assert entropy(torch.full((8,), 1 / 8)).item() == pytest.approx(math.log(8))
    assert entropy(torch.tensor([1.0, 0.0, 0.0])).item() == 0.0


def test_quantile_summary_on_known_values():
    s = quantile_summary(torch.arange(1, 101, dtype=torch.float32), "x")
    assert s["x_mean"] == pytest.approx(50.5)
    assert s["x_median"] == 50 and s["x_p90"] == 90 and s["x_p99"] == 99 and s["x_max"] == 100


def test_histogram_counts_every_value_and_zero_lands_in_first_bin():
    values = torch.tensor([0.0, 0.0, 1e-3, 5.0, 1e9])
    bins = histogram(values)
    assert sum(c for _, _, c in bins) == 5
    assert bins[0][2] == 2 and bins[-1][2] == 1


def test_layer_accumulator_relative_error_cosine_and_sqnr():
    acc = LayerAccumulator(2)
    ref = torch.tensor([[3.0, 4.0]])
    acc.add(0, ref, ref.clone())
    acc.add(1, ref, ref * 1.1)  # relative error 0.1, cosine 1, SQNR 20 dB
    r = acc.results()
    assert r["hidden_rel_error"][0] == 0.0 and r["hidden_cosine"][0] == pytest.approx(1.0)
    assert r["hidden_rel_error"][1] == pytest.approx(0.1, rel=1e-5)
    assert r["hidden_sqnr_db"][1] == pytest.approx(20.0, rel=1e-4)
    assert r["hidden_cosine"][1] == pytest.approx(1.0)


def test_freed_memory_is_released_on_glibc():
    import platform

    from hemorrhage_core.memory import release_freed_memory

    released = release_freed_memory()
    assert released is (platform.system() == "Linux" and platform.libc_ver()[0] == "glibc")
