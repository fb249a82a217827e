"""Shared numerics of the optimal-brain-surgeon family (GPTQ, SparseGPT): the inverse-Hessian factor and the
single-threaded column loop."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager

import torch

log = logging.getLogger(__name__)


def inverse_hessian_factor(hessian: torch.Tensor, damp: float) -> torch.Tensor:
    """Upper Cholesky factor [in, in] of (H + λI)⁻¹ with λ = damp · mean(diag H); more damping if H is singular."""
    h = hessian.double()  # the inverse of a near-singular XXᵀ loses digits in float32
    idx = torch.arange(h.shape[0], device=h.device)
    mean_diag = h.diagonal().mean().clamp(min=1e-12)
    for attempt in range(6):
        damped = h.clone()
        damped[idx, idx] += damp * 10**attempt * mean_diag
        chol, info = torch.linalg.cholesky_ex(damped)
        if info == 0:
            if attempt:
                log.warning("Hessian needed %gx the requested damping", 10**attempt)
            # cholesky_solve, not cholesky_inverse: the same H⁻¹, but torch's CPU cholesky_inverse is ~20x slower
            # (measured here: 2.7 s vs 52 s for 1536 x 1536 in float64).
            eye = torch.eye(h.shape[0], dtype=h.dtype, device=h.device)
            inv = torch.cholesky_solve(eye, chol)
            return torch.linalg.cholesky(inv, upper=True).float()
    raise RuntimeError("the calibration Hessian is not positive definite even with 1e5x damping")


@contextmanager
def single_threaded() -> Iterator[None]:
    """Run the body with one intra-op thread, then restore the previous count.

    The OBS column loop is thousands of tiny ops ([≤blocksize, out] each): splitting them over threads buys nothing
    and costs a fork/join per op, which on shared cores becomes a wait for a descheduled thread (measured here on
    a 576 x 576 layer: 0.98 s with one thread, 11.9 s with two). Process-wide, so only safe where one computation
    runs at a time, as under the Runner's compute lock.
    """
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(previous)
