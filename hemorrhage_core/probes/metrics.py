"""Pure metric functions on tensors. Natural logarithms throughout (KL and JS in nats; JS is bounded by ln 2).

Shapes: N = positions, V = vocabulary, K = kept top-K entries of the base distribution.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from ..metric_names import METRICS

LN2 = math.log(2.0)


def kl_full(p_logprobs: torch.Tensor, q_logprobs: torch.Tensor) -> torch.Tensor:
    """Exact KL(P || Q) per row from log-probabilities [N, V] -> [N]."""
    p = p_logprobs.exp()
    return torch.where(p > 0, p * (p_logprobs - q_logprobs), torch.zeros_like(p)).sum(-1)


def kl_logits(p_logits: torch.Tensor, q_logits: torch.Tensor) -> torch.Tensor:
    """Exact KL(P || Q) per row [N] from finite logits [N, V] (float64 result), without log-softmax.

    KL = sum_v p_v (a_v - b_v) - logZ_a + logZ_b for logits a, b: two log-sum-exps, one softmax and one row dot
    product, about a third of the passes over the vocabulary of `kl_full` on two log_softmax outputs. Identical
    rows give exactly 0; rounding can leave a tiny negative for nearly identical rows, clamped to 0 (KL >= 0).
    """
    with torch.inference_mode():
        log_za, log_zb = torch.logsumexp(p_logits, dim=-1), torch.logsumexp(q_logits, dim=-1)
        p = torch.exp(p_logits - log_za[:, None])
        # An elementwise product and sum's cascade reduction: einsum's row reduction loses up to 1e-3 nats over
        # 49k float32 terms (bench/exact_kl.py found it), the cascade ~2e-6.
        cross = (p * (p_logits - q_logits)).sum(-1)
        return (cross.double() - log_za.double() + log_zb.double()).clamp(min=0.0)


def log_tail_mass(logprobs: torch.Tensor, top_ids: torch.Tensor) -> torch.Tensor:
    """log of the probability mass outside `top_ids` [N, K] for each row of `logprobs` [N, V] -> [N].

    Computed as a masked logsumexp, not log(1 - sum(top)), which cancels catastrophically when the top-K holds
    almost all the mass. -inf when K covers the whole vocabulary.
    """
    masked = logprobs.scatter(1, top_ids.long(), float("-inf"))
    return torch.logsumexp(masked, dim=-1)


@dataclass(frozen=True)
class VocabSummary:
    """Everything the metrics read from a chunk of next-token logits [R, V]: R positions, K kept ids, n best."""

    top_ids: torch.Tensor  # [R, K] the ids KL is computed on (the base model's top-K)
    top_lp: torch.Tensor  # [R, K] log-probabilities of those ids
    tail_lp: torch.Tensor  # [R] log of the mass outside them (-inf when they cover the vocabulary)
    target_lp: torch.Tensor  # [R] log-probability of the reference (next) token
    best_lp: torch.Tensor  # [R, n] the n most likely tokens' log-probabilities, descending
    best_ids: torch.Tensor  # [R, n]
    infinite: torch.Tensor  # [R] bool: some token has probability 0 (only a truncating sampler does that)
    log_z: torch.Tensor  # [R] float64: the log-normaliser log sum_v exp(logit_v) (probes/exact_kl.py)


def _finite_cap(name: str) -> float:
    cap = METRICS[name].infinite_at
    if cap is None:
        raise ValueError(f"metric {name!r} has no infinite_at cap in metric_names.METRICS")
    return cap


SQNR_INFINITE_DB = _finite_cap("hidden_sqnr_db")  # the store's ∞ for an unchanged layer


def logsumexp_(x: torch.Tensor, *, double: bool = False) -> torch.Tensor:
    """log-sum-exp over the last dimension of `x` [R, V], computed in place (x is destroyed).

    torch.logsumexp allocates two [R, V] temporaries; on CPU that costs more than the arithmetic (2.5x here on
    1024 x 49k floats). Rows that are all -inf give -inf, as torch.logsumexp does. `double`: the result in
    float64, the log and the shift taken in float64 (the sum itself stays float32: a float64 sum is 10x slower),
    so a log-normaliser near 20 keeps ~1e-7 of its precision instead of float32's 1e-6 spacing there, which the
    exact KL needs (it subtracts two of them).
    """
    m = x.amax(dim=-1, keepdim=True)
    m = torch.where(torch.isfinite(m), m, torch.zeros_like(m))  # an all -inf row: exp(-inf - 0) = 0 -> log 0
    total = x.sub_(m).exp_().sum(dim=-1)
    if double:
        return total.double().log_().add_(m.squeeze(-1).double())
    return total.log_().add_(m.squeeze(-1))


def summarize_logits(
    logits: torch.Tensor,
    targets: torch.Tensor,
    *,
    top_ids: torch.Tensor | None = None,
    k: int = 256,
    n_best: int = 5,
    check_infinite: bool = False,
) -> VocabSummary:
    """Summarise logits [R, V] float32 (overwritten: the caller must not read them afterwards): one top-k, gathers
    of the kept and reference ids, and one in-place masked log-sum-exp over the vocabulary.

    `top_ids` [R, K]: gather on these ids (the modified model, on the base model's top-K); without them the top-`k`
    ids are selected here (the base model). Log-probabilities are never materialised: the normaliser is
    log Z = logaddexp(logsumexp(top logits), logsumexp(logits outside them)), the second term being the tail mass
    that KL needs anyway, so log_softmax's own two passes and its [R, V] output are saved. The tail is a masked
    log-sum-exp, not log(1 - sum(top)), which would cancel catastrophically when the top-K holds almost all the
    mass. The same function summarises the base reference and every profile, so an unmodified model gives
    identical numbers bit for bit.
    """
    vocab = logits.shape[-1]
    if top_ids is None:
        top_logits, top_ids = torch.topk(logits, min(k, vocab), dim=-1)
        best_logits, best_ids = top_logits[:, :n_best], top_ids[:, :n_best]
    else:
        top_ids = top_ids.long()
        top_logits = logits.gather(1, top_ids)
        best_logits, best_ids = torch.topk(logits, min(n_best, vocab), dim=-1)
    target_logit = logits.gather(1, targets.long()[:, None]).squeeze(1)
    infinite = (
        torch.isneginf(logits).any(-1)
        if check_infinite
        else torch.zeros(logits.shape[0], dtype=torch.bool, device=logits.device)
    )
    with torch.inference_mode():  # unembed's logits are inference tensors: only updated in place in this mode
        tail = logsumexp_(logits.scatter_(1, top_ids, float("-inf")), double=True)
    # The normaliser in float64 (the exact KL subtracts two of them); log-probabilities are stored as float32.
    log_z = torch.logaddexp(torch.logsumexp(top_logits.double(), dim=-1), tail)
    z = log_z[:, None]
    return VocabSummary(
        top_ids=top_ids,
        top_lp=(top_logits.double() - z).float(),
        tail_lp=(tail - log_z).float(),
        target_lp=(target_logit.double() - log_z).float(),
        best_lp=(best_logits.double() - z).float(),
        best_ids=best_ids,
        infinite=infinite,
        log_z=log_z,
    )


def kl_topk(
    base_top_lp: torch.Tensor, base_tail_lp: torch.Tensor, top_ids: torch.Tensor, mod_logprobs: torch.Tensor
) -> torch.Tensor:
    """KL(P_base || P_mod) per row [N], with P_base kept as its top-K plus one merged tail bucket.

    The tail bucket is compared with the modified model's mass on the same complement set, so this is the KL of
    the two distributions coarsened to K+1 outcomes: a lower bound of the full KL (log-sum inequality) that is
    exact when the tail is empty and exactly 0 for identical models.
    """
    mod_top = mod_logprobs.gather(1, top_ids.long())
    return kl_topk_parts(base_top_lp, base_tail_lp, mod_top, log_tail_mass(mod_logprobs, top_ids))


def kl_topk_parts(
    base_top_lp: torch.Tensor, base_tail_lp: torch.Tensor, mod_top: torch.Tensor, mod_tail: torch.Tensor
) -> torch.Tensor:
    """`kl_topk` from the modified model's log-probs already gathered on the base top-K ids [N, K] and its log
    tail mass [N] (the profile computes those once per chunk and shares them between metrics)."""
    p_top = base_top_lp.exp()
    head = (p_top * (base_top_lp - mod_top)).sum(-1)
    p_tail = base_tail_lp.exp()
    tail = torch.where(p_tail > 0, p_tail * (base_tail_lp - mod_tail), torch.zeros_like(p_tail))
    # A KL between two distributions over the same K + 1 outcomes is >= 0 (Gibbs); float32 rounding leaves
    # values like -5e-9 for nearly identical rows, which read as impossible numbers. inf and NaN pass unchanged.
    return (head + tail).clamp(min=0.0)


def expected_logit(
    mu: torch.Tensor, hidden: torch.Tensor, scale: float, bias_mean: torch.Tensor
) -> torch.Tensor:
    """E_P[logit] per row [R] (float64) of a linear head, logits = scale * (hidden @ W.T + bias), from
    mu = sum_v p_v W_v [R, d] and bias_mean = sum_v p_v bias_v [R]: the expectation of a linear map is the map of
    the expectation, so no vocabulary-sized pass is needed. float64 products of float32 factors are exact, so
    two calls on the same `mu` differ only by mu . (h1 - h2), and identical `hidden` gives identical results."""
    return scale * (torch.einsum("nd,nd->n", mu.double(), hidden.double()) + bias_mean.double())


def cross_from_logits_(
    p_logits: torch.Tensor, log_z_p: torch.Tensor, q_logits: torch.Tensor, work: torch.Tensor
) -> torch.Tensor:
    """E_P[a - b] per row [R] (float64) for logits a = `p_logits`, b = `q_logits` [R, V] and P's float64
    log-normaliser `log_z_p` [R]: the cross term of `kl_from_cross`. `p_logits` is overwritten (it becomes P);
    `work` [R, V] float32 receives a - b (a buffer reused across chunks: see lens.LENS_CHUNK on fresh pages).
    Where b is -inf and p > 0 the result is inf (an infinite KL)."""
    with torch.inference_mode():
        diff = torch.sub(p_logits, q_logits, out=work)
        shift = log_z_p.float()
        # P up to the per-row factor exp(shift - log_z_p) (float32 rounding of log Z, within 1e-6 of 1), applied
        # below in float64: a P summing to 1 + 2e-6 would move the cross term by as much, relative.
        p = p_logits.sub_(shift[:, None]).exp_()
        if diff.isinf().any():
            diff = torch.where(p > 0, diff, 0.0)  # 0 * inf is NaN; a token P gives probability 0 adds nothing
        # Multiply in place and let sum's cascade reduce it: einsum's row reduction lost up to 1e-3 nats over 49k
        # float32 terms here, the cascade 2e-6.
        cross = p.mul_(diff).sum(-1)
    return cross.double() * torch.exp(shift.double() - log_z_p.double())


def kl_from_cross(cross: torch.Tensor, log_z_p: torch.Tensor, log_z_q: torch.Tensor) -> torch.Tensor:
    """Exact KL(P || Q) per row [R] from the cross term E_P[a - b] and the two log-normalisers (all float64):
    KL = sum_v p_v (log p_v - log q_v) = E_P[a - b] - log Z_a + log Z_b for logits a, b.

    Identical models give cross = 0 and equal normalisers, so exactly 0. Rounding can leave a tiny negative for
    nearly identical rows: clamped to 0 (KL >= 0); inf passes unchanged."""
    return (cross + (log_z_q - log_z_p)).clamp(min=0.0)


def kl_head_tail(
    base_top_lp: torch.Tensor,
    mod_top_lp: torch.Tensor,
    tail_cross: torch.Tensor,
    base_tail_lp: torch.Tensor,
    log_z_p: torch.Tensor,
    log_z_q: torch.Tensor,
) -> torch.Tensor:
    """Exact KL(P || Q) per row [R] (float64) split at P's top-K ids S:

        KL = sum_{v in S} p_v (log p_v - log q_v) + E_P[(a - b) 1_{v not in S}] - p_tail (log Z_a - log Z_b)

    from both log-probabilities on S [R, K], the tail's cross term `tail_cross` (exp_kl.py: from the moments of
    P's tail) and P's log tail mass [R]. The top-K part reads the summaries of the actual float32 logits, so their
    rounding cancels there as it does in a KL of rounded logits; only the tail's share of it is left (p_tail x
    ~1e-6 nats). Identical models give exactly 0; tiny negatives from rounding are clamped to 0; inf passes."""
    lp = base_top_lp.double()
    head = (lp.exp() * (lp - mod_top_lp.double())).sum(-1)
    tail = tail_cross - base_tail_lp.double().exp() * (log_z_p - log_z_q)
    return (head + tail).clamp(min=0.0)


def js_divergence(p: torch.Tensor, q: torch.Tensor, dim: int = -1) -> torch.Tensor:
    """Jensen-Shannon divergence between probability vectors along `dim` (nats, in [0, ln 2]); 0 log 0 = 0."""
    m = 0.5 * (p + q)
    return 0.5 * (torch.xlogy(p, p) - torch.xlogy(p, m)).sum(dim) + 0.5 * (
        torch.xlogy(q, q) - torch.xlogy(q, m)
    ).sum(dim)


def entropy(p: torch.Tensor, dim: int = -1) -> torch.Tensor:
    """Shannon entropy in nats along `dim`; 0 log 0 = 0."""
    return -torch.xlogy(p, p).sum(dim)


def quantile_summary(values: torch.Tensor, prefix: str) -> dict[str, float]:
    """mean, median, p90, p99 and max of a 1-D tensor, keyed '<prefix>_mean', ... (uses kthvalue: no size cap)."""
    v = values.flatten().double()
    n = v.numel()

    def q(frac: float) -> float:
        k = min(n, max(1, math.ceil(frac * n)))
        return float(v.kthvalue(k).values)

    return {
        f"{prefix}_mean": float(v.mean()),
        f"{prefix}_median": q(0.5),
        f"{prefix}_p90": q(0.9),
        f"{prefix}_p99": q(0.99),
        f"{prefix}_max": float(v.max()),
    }


# Fixed log-spaced bins so histograms of different runs line up; the first bin holds everything below 1e-6
# (including the exact zeros of an unmodified model).
KL_BIN_EDGES = torch.cat([torch.tensor([0.0]), torch.logspace(-6, 2, 41, dtype=torch.float64)])


def histogram(values: torch.Tensor, edges: torch.Tensor = KL_BIN_EDGES) -> list[tuple[float, float, int]]:
    """(lo, hi, count) per bin; values above the last edge land in the last bin."""
    v = values.flatten().double().clamp(min=0.0, max=float(edges[-1]))
    idx = torch.bucketize(v, edges[1:-1], right=True)
    counts = torch.bincount(idx, minlength=len(edges) - 1)
    return [(float(edges[i]), float(edges[i + 1]), int(counts[i])) for i in range(len(edges) - 1)]


class LayerAccumulator:
    """Streams per-layer residual-stream error statistics over batches without keeping the states.

    Relative error and SQNR are corpus-level (sums over all tokens); cosine is the mean over tokens.
    """

    def __init__(self, num_layers: int):
        self.sq_diff = torch.zeros(num_layers, dtype=torch.float64)
        self.sq_ref = torch.zeros(num_layers, dtype=torch.float64)
        self.cos_sum = torch.zeros(num_layers, dtype=torch.float64)
        self.count = torch.zeros(num_layers, dtype=torch.float64)

    def add(self, layer: int, ref: torch.Tensor, mod: torch.Tensor) -> None:
        """ref, mod: [..., d] hidden states of the same tokens."""
        ref = ref.float().reshape(-1, ref.shape[-1])
        mod = mod.float().reshape(-1, mod.shape[-1])
        diff = (mod - ref).flatten()
        # Row dot products with einsum: ~4x cheaper on CPU than cosine_similarity's normalised copies (the
        # profile calls this for every layer of every batch). The difference is formed first, never as
        # |m|^2 + |r|^2 - 2 m.r, which would cancel for small errors.
        rr = torch.einsum("nd,nd->n", ref, ref)
        mm = torch.einsum("nd,nd->n", mod, mod)
        rm = torch.einsum("nd,nd->n", ref, mod)
        self.sq_diff[layer] += float(torch.dot(diff, diff))
        self.sq_ref[layer] += float(rr.double().sum())
        self.cos_sum[layer] += float((rm / (rr.sqrt() * mm.sqrt()).clamp(min=1e-12)).double().sum())
        self.count[layer] += ref.shape[0]

    def add_identical(self, layer: int, ref: torch.Tensor) -> None:
        """`add(layer, ref, ref)` without the work: for a model that shares the reference's weights (a
        decoding-only chain), whose states are the reference's. The same expressions on the same values, so the
        sums are those `add` would give (the cosine term is computed, not assumed 1: it rounds)."""
        ref = ref.float().reshape(-1, ref.shape[-1])
        rr = torch.einsum("nd,nd->n", ref, ref)
        self.sq_ref[layer] += float(rr.double().sum())
        self.cos_sum[layer] += float((rr / (rr.sqrt() * rr.sqrt()).clamp(min=1e-12)).double().sum())
        self.count[layer] += ref.shape[0]

    def results(self) -> dict[str, list[float]]:
        rel = (self.sq_diff / self.sq_ref.clamp(min=1e-30)).sqrt()
        # SQNR is infinite for an unmodified layer; store a large finite cap so it survives JSON and SQL.
        sqnr = torch.where(
            self.sq_diff > 0,
            10 * torch.log10(self.sq_ref / self.sq_diff.clamp(min=1e-30)),
            torch.full_like(rel, SQNR_INFINITE_DB),
        )
        cos = self.cos_sum / self.count.clamp(min=1)
        # A layer never added (removed by a depth change: no counterpart) is NaN, not a perfect 0 error.
        rel, cos, sqnr = (
            torch.where(self.count > 0, t, torch.full_like(t, math.nan)) for t in (rel, cos, sqnr)
        )
        return {
            "hidden_rel_error": rel.tolist(),
            "hidden_cosine": cos.tolist(),
            "hidden_sqnr_db": sqnr.tolist(),
        }
