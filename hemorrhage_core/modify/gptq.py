"""GPTQ (Frantar et al., 2022): weight-only quantization that compensates each rounding error with the columns not
yet quantized, using the inverse Hessian H⁻¹ of the layer's squared output error, H = 2/n · X Xᵀ.

The quantizer is a pure function on (W, H) (`gptq_quantize`); the handler walks the model block by block
(`sequential.walk_blocks`), so each block's Hessians come from the outputs of the already-quantized blocks before
it, and, with `true_sequential`, each sub-layer group (q/k/v, o, gate/up, down) from the outputs of the groups
quantized before it inside the block.

MoE experts are quantized like Linear layers, one matrix per expert, each with the Hessian of the tokens routed
to it (taps.py); an expert with too few routed calibration tokens takes its layer's pooled Hessian (experts.py).

Optional library backends: auto-gptq 0.7.1 fails to import against transformers 5 and gptqmodel needs a newer
torch than the project's pin (see the environment guide), so no library backend is registered; this module is
the implementation used everywhere.
"""

from __future__ import annotations

import logging
import math
from collections import defaultdict

import torch

from ..footprint import Footprint, grouped_bits_per_weight
from ..specs import GPTQ
from .base import ModContext, ModifiedModel, handles
from .coverage import check_scope, record_coverage
from .experts import ExpertTally, pool_starved_experts
from .obs import inverse_hessian_factor, single_threaded
from .quantize import fake_quant, grid_params
from .sequential import calibration_stages, target_groups, walk_blocks
from .taps import target_inputs
from .targets import WeightTarget, plan_targets

log = logging.getLogger(__name__)


class HessianAccumulator:
    """Running H = 2/n · Σ x xᵀ over the tokens seen so far ([in, in], float32)."""

    def __init__(self, in_features: int, device: torch.device):
        self.H = torch.zeros(in_features, in_features, device=device)
        self.n = 0

    def add(self, x: torch.Tensor) -> None:
        """`x`: [..., in] inputs of one call; every leading position is one sample (none: nothing changes)."""
        x = x.detach().reshape(-1, x.shape[-1]).float()  # [m, in]
        m = x.shape[0]
        if m == 0:  # an expert no token of this batch was routed to
            return
        # Rescale the running mean so the result is exactly 2/n Σ x xᵀ for the n seen so far.
        self.H *= self.n / (self.n + m)
        self.n += m
        x = x * math.sqrt(2 / self.n)
        self.H.addmm_(x.t(), x)

    @classmethod
    def pooled(cls, parts: list[HessianAccumulator]) -> HessianAccumulator:
        """The Hessian of all rows of `parts` together (experts of one layer): see experts.py."""
        pooled = cls(parts[0].H.shape[0], parts[0].H.device)
        pooled.n = sum(p.n for p in parts)
        for p in parts:
            pooled.H.add_(p.H, alpha=p.n / max(pooled.n, 1))
        return pooled


@torch.no_grad()
def gptq_quantize(
    w: torch.Tensor,
    H: torch.Tensor,
    *,
    bits: int,
    scheme: str = "sym",
    group_size: int = -1,
    damp: float = 0.01,
    block_size: int = 128,
    act_order: bool = False,
) -> torch.Tensor:
    """Quantize the weight `w` [out, in] given its input Hessian `H` [in, in]; return the dequantized float32
    weight [out, in] on the same grid as `quantize_rtn` (per output row, or per row and `group_size` columns).

    Columns are quantized left to right (or by decreasing diag(H) with `act_order`); each column's rounding error
    is spread over the remaining columns through the rows of the inverse Hessian's Cholesky factor, in blocks of
    `block_size` columns with a lazy update of the rest (the paper's Algorithm 1). Rows are independent given H,
    so layers sharing an input can be quantized in one call on their stacked weights. Zero weights (pruned by an
    earlier modification) stay exactly zero.
    """
    H = H.float().clone()
    # Work on Wᵀ [in, out]: column j of W is the contiguous row j, which the column loop below reads and updates.
    Wt = w.detach().float().t().contiguous()
    n_cols = Wt.shape[0]
    # Weights that are exactly zero (pruned by an earlier modification) stay zero, as in SparseGPT's joint
    # quantization: their share of the error is compensated by the weights that remain.
    zeros = Wt == 0
    pruned = zeros if bool(zeros.any()) else None
    dead = torch.diag(H) == 0  # inputs that were always zero: their weights cannot matter
    H[dead, dead] = 1
    Wt[dead] = 0

    perm = None
    if act_order:
        perm = torch.argsort(torch.diag(H), descending=True)
        Wt, H = Wt[perm], H[perm][:, perm]
        pruned = pruned[perm] if pruned is not None else None
    U = inverse_hessian_factor(H, damp)  # [in, in], upper triangular: (H + λI)⁻¹ = Uᵀ U

    Qt = torch.empty_like(Wt)
    scale, zero = (t.squeeze(1) for t in grid_params(Wt.t(), bits, scheme))  # per-row grid, [out] each
    # Thousands of tiny ops: one thread avoids a fork/join per op (see obs.single_threaded).
    with single_threaded():
        for i1 in range(0, n_cols, block_size):
            i2 = min(i1 + block_size, n_cols)
            W1 = Wt[i1:i2]  # view: the updates below land in Wt
            E1 = torch.empty_like(W1)  # scaled errors, for the lazy update of the columns after the block
            U1 = U[i1:i2, i1:i2]
            for i in range(i2 - i1):
                col = i1 + i
                if group_size != -1 and col % group_size == 0:
                    # A group's grid is fitted to its weights as updated so far, as in the reference implementation.
                    scale, zero = (
                        t.squeeze(1) for t in grid_params(Wt[col : col + group_size].t(), bits, scheme)
                    )
                w_col = W1[i]  # [out]
                q_col = fake_quant(w_col, scale, zero, bits, scheme)
                if pruned is not None:
                    q_col = q_col.masked_fill_(pruned[col], 0.0)
                Qt[col] = q_col
                err = (w_col - q_col).div_(U1[i, i])
                E1[i] = err
                W1[i + 1 :].addr_(U1[i, i + 1 :], err, alpha=-1)
            Wt[i2:].addmm_(U[i1:i2, i2:].t(), E1, alpha=-1)

    if perm is not None:
        Qt = Qt[torch.argsort(perm)]
    return Qt.t().contiguous()


def _quantize_group(members: list[WeightTarget], H: torch.Tensor, mod: GPTQ, fp: Footprint) -> None:
    """Quantize layers that share an input (and so a Hessian) in one GPTQ call on their stacked weights."""
    weights = [t.view() for t in members]
    stacked = torch.cat([w.float() for w in weights], dim=0)  # [Σ out, in]
    q = gptq_quantize(
        stacked,
        H,
        bits=mod.bits,
        scheme=mod.scheme,
        group_size=mod.group_size,
        damp=mod.damp,
        block_size=mod.block_size,
        act_order=mod.act_order,
    )
    for target, w, q_part in zip(members, weights, q.split([w.shape[0] for w in weights]), strict=True):
        target.write(q_part)
        out_f, in_f = w.shape
        bpw = grouped_bits_per_weight(
            mod.bits, in_f, out_f, mod.group_size, asym=mod.scheme == "asym", act_order=mod.act_order
        )
        fp.add_target(target, bpw)


def _hessian_pass(step, groups: list[list[WeightTarget]], device) -> dict[WeightTarget, HessianAccumulator]:
    """One calibration pass through the block collecting one Hessian per input group (keyed by its first
    member, shared by the others)."""
    accs = {g[0]: HessianAccumulator(g[0].shape[1], device) for g in groups}
    with target_inputs(list(accs), lambda t, x, _sequences: accs[t].add(x)):
        step.forward(stop_after=groups[-1][-1].module)  # nothing after the last group's layers is needed
    return accs


def _in_blocks(target: WeightTarget) -> str | None:
    # GPTQ calibrates block by block; Linear layers outside the blocks were never part of it (RTN covers them).
    return None if target.block is not None else "outside the blocks"


@handles(GPTQ)
def apply_gptq(state: ModifiedModel, mod: GPTQ, ctx: ModContext) -> None:
    model = state.model
    device = next(model.parameters()).device
    plan = plan_targets(model, mod, supports=_in_blocks)
    check_scope(plan, mod)
    per_block: dict[int | None, list[WeightTarget]] = defaultdict(list)
    for t in plan.targets:
        per_block[t.block].append(t)
    windows = ctx.calibration_windows(mod.calib_corpus, mod.calib_samples, mod.calib_len)
    footprint = Footprint()
    experts = ExpertTally()
    done: list[WeightTarget] = []
    for step in walk_blocks(model, windows, batch_size=8, progress=ctx.progress, label="GPTQ"):
        if not per_block.get(step.index):
            continue
        groups = target_groups(step, per_block[step.index])
        # true_sequential: one pass per group, each on the outputs of the groups already quantized before it.
        stages = calibration_stages(groups) if mod.true_sequential else [groups]
        for stage in stages:
            accs = _hessian_pass(step, stage, device)
            unusable = pool_starved_experts(
                accs, rows=lambda a: a.n, pool=HessianAccumulator.pooled, tally=experts
            )
            for members in stage:
                if members[0] in unusable:
                    continue
                _quantize_group(members, accs[members[0]].H, mod, footprint)
                done.extend(members)
        log.info("GPTQ: block %d quantized (%d layers)", step.index, sum(len(g) for g in groups))
    state.report.update(footprint.report(model))
    state.report["calib_tokens"] = float(windows.numel())
    state.report.update(experts.report())
    record_coverage(state, mod, plan, done, missing_reason="never called in the block's calibration forward")
