"""Log-likelihoods of (context, continuation) requests, lm-eval's way, with each shared context encoded once.

Tokenization is lm-evaluation-harness's (`_encode_pair`): trailing spaces of the context move to the
continuation, the whole string and the context are encoded, and the continuation is the whole string's tokens
after the context's count; an empty context becomes the prefix token (BOS, else EOS). A request's log-likelihood
is the sum over its continuation tokens of log p(token | everything before), and it is *greedy* when the argmax at
every continuation position is that token.

Speed, without changing a number beyond float rounding:
- Requests that share a context (the choices of a multiple-choice item) are one *group*, scored in one row: the
  context once, then every continuation but its last token, each continuation attending to the context and to
  itself only (a block mask) at the positions that continue the context's. So the context is encoded once for
  all its choices, in the same pass as the choices, with no cache to copy and no padding between choices; a
  one-token choice costs nothing beyond the context (the context's last position predicts it).
- Rows are batched by length (longest first) under a token budget, and a batch grows only while its padding
  stays small (PADDING_SLACK); rows are right-padded, and padding is masked out.
- Only the positions that predict a continuation token are unembedded (in chunks), so no full-vocabulary logits
  are held beyond those rows. A modified model's logit transforms (decoding changes) apply to these rows as the
  profile applies them.
The block mask is a custom 4D mask, which replaces the model's own: on a model with a sliding attention window a
row longer than the window, and on attention kernels that take no such mask, each request runs alone as
context + continuation with the model's own masks (what lm-eval does for every request).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass

import torch

from ..corpora import sequence_bos
from ..errors import Cancelled
from ..probes.capture import unembed
from ..probes.kernels import fast_attention
from ..structure import decoder

log = logging.getLogger(__name__)

Progress = Callable[[float, str], None]
ROWS_PER_CHUNK = 512  # unembedded positions at a time: 512 x 49k float32 = 100 MB on SmolLM2
# A batch grows while its padded tokens stay within this factor of what its groups would cost in batches of their
# own: padding costs a forward pass as much as a real token, and mixed lengths (PIQA's answers run from 5 to 100
# tokens) would otherwise double the work; one group per batch would pay the per-pass overhead every time.
PADDING_SLACK = 1.25


@dataclass(frozen=True)
class Encoded:
    ctx: tuple[int, ...]
    cont: tuple[int, ...]


@dataclass
class Scored:
    loglik: list[float]  # per request, summed in float64 over the continuation tokens
    greedy: list[bool]
    forward_calls: int = 0  # decoder passes this scoring made (tests and benchmarks read it)


def encode_requests(
    tokenizer, requests: list[tuple[str, str]], max_length: int | None = None
) -> list[Encoded]:
    """Token ids of each (context, continuation), as lm-eval's HFLM encodes them (module docstring)."""
    bos = sequence_bos(tokenizer)
    prefix_token = tokenizer.bos_token_id if tokenizer.bos_token_id is not None else tokenizer.eos_token_id
    pairs = []
    for context, continuation in requests:
        n_spaces = len(context) - len(context.rstrip())
        if n_spaces:
            context, continuation = context[:-n_spaces], context[-n_spaces:] + continuation
        pairs.append((context, continuation))
    texts = sorted({s for c, k in pairs for s in ((c, c + k) if c else (k,))})
    ids = (
        dict(zip(texts, tokenizer(texts, add_special_tokens=False)["input_ids"], strict=True))
        if texts
        else {}
    )

    def enc(s: str) -> list[int]:
        return ([bos] if bos is not None else []) + list(ids[s])

    out = []
    for context, continuation in pairs:
        if not context:
            cont = list(ids[continuation])
            ctx, cont = (
                ([prefix_token], cont) if not cont or cont[0] != prefix_token else (cont[:1], cont[1:])
            )
        else:
            ctx = enc(context)
            cont = enc(context + continuation)[len(ctx) :]
        if not cont:
            raise ValueError(f"the continuation {continuation!r} after {context[-40:]!r} encodes to no token")
        if max_length is not None and len(ctx) + len(cont) - 1 > max_length:
            ctx = ctx[-(max_length - len(cont) + 1) :]  # lm-eval truncates from the left, as here
        out.append(Encoded(tuple(ctx), tuple(cont)))
    return out


class _Scorer:
    def __init__(self, model, transform, needs_context: bool, token_budget: int):
        self.model = model
        self.stack = decoder(model)
        self.transform = transform
        self.needs_context = needs_context
        self.budget = token_budget
        self.device = next(model.parameters()).device
        cfg = model.config.get_text_config()
        self.window = (
            getattr(cfg, "sliding_window", None) if getattr(cfg, "use_sliding_window", True) else None
        )
        self.pad = 0
        self.calls = 0
        # The block mask is an additive 4D mask, which transformers passes as it is to these kernels ("hemlab":
        # sdpa or the model's eager code); any other kernel gets the model's own masks, one request per row.
        self.block_mask_ok = getattr(model.config, "_attn_implementation", None) in (
            "hemlab",
            "sdpa",
            "eager",
        )

    def forward(self, ids, mask, positions=None):
        self.calls += 1
        with torch.inference_mode(), fast_attention():
            out = self.stack(
                input_ids=ids.to(self.device),
                attention_mask=mask.to(self.device),
                position_ids=None if positions is None else positions.to(self.device),
                use_cache=False,
            )
        return out.last_hidden_state, None

    def logprobs(self, hidden: torch.Tensor, targets: list[int], seen: list[list[int]]):
        """(log p(target), is argmax) per row of hidden [N, d]; `seen` are each row's tokens so far (for
        transforms that read the context, e.g. a repetition penalty)."""
        lps, hits = [], []
        target = torch.tensor(targets, device=hidden.device)
        for start in range(0, hidden.shape[0], ROWS_PER_CHUNK):
            rows = slice(start, start + ROWS_PER_CHUNK)
            logits = unembed(self.model, hidden[rows])
            if self.transform is not None:
                if self.needs_context:
                    width = max(len(s) for s in seen[rows])
                    ctx = torch.full((len(seen[rows]), width), -1, dtype=torch.long, device=logits.device)
                    for r, s in enumerate(seen[rows]):
                        ctx[r, width - len(s) :] = torch.tensor(s)
                    logits = self.transform(logits, context=ctx)
                else:
                    logits = self.transform(logits)
            with torch.inference_mode():
                lp = torch.log_softmax(logits.float(), dim=-1)
                t = target[rows, None]
                lps.append(lp.gather(1, t).squeeze(1).double().cpu())
                hits.append((lp.argmax(dim=-1) == t.squeeze(1)).cpu())
        return torch.cat(lps), torch.cat(hits)

    # -- one pass: context + continuation per row ---------------------------------------------------------------
    def flat(self, batch: list[Encoded]):
        seqs = [list(e.ctx) + list(e.cont[:-1]) for e in batch]
        width = max(len(s) for s in seqs)
        ids = torch.full((len(seqs), width), self.pad, dtype=torch.long)
        mask = torch.zeros((len(seqs), width), dtype=torch.long)
        for b, s in enumerate(seqs):
            ids[b, : len(s)] = torch.tensor(s)
            mask[b, : len(s)] = 1
        hidden, _ = self.forward(ids, mask)
        rows, targets, seen = [], [], []
        for b, e in enumerate(batch):
            first = len(e.ctx) - 1
            for j, tok in enumerate(e.cont):
                rows.append((b, first + j))
                targets.append(tok)
                seen.append(seqs[b][: first + j + 1])
        index = torch.tensor(rows)
        lp, hit = self.logprobs(hidden[index[:, 0], index[:, 1]], targets, seen)
        return _per_request([len(e.cont) for e in batch], lp, hit)

    # -- shared context: one row per group, its continuations packed after the context ------------------------------
    def packed(self, groups: list[tuple[tuple[int, ...], list[tuple[int, ...]]]]):
        """One pass for several groups. A group's row is its context followed by every continuation but its last
        token; each continuation attends to the whole context and to itself only (a block mask), and its
        positions continue the context's, so every token sees exactly what it would in context + that
        continuation alone. Returns (log-likelihoods, greedy flags) in the groups' request order."""
        rows = []
        for ctx, conts in groups:
            toks, pos, seg = list(ctx), list(range(len(ctx))), [0] * len(ctx)
            for j, c in enumerate(conts, 1):
                piece = list(c[:-1])
                toks += piece
                pos += range(len(ctx), len(ctx) + len(piece))
                seg += [j] * len(piece)
            rows.append((toks, pos, seg))
        width = max(len(r[0]) for r in rows)
        ids = torch.full((len(rows), width), self.pad, dtype=torch.long)
        positions = torch.zeros((len(rows), width), dtype=torch.long)
        segs = torch.full((len(rows), width), -1, dtype=torch.long)  # -1: padding
        for b, (toks, pos, seg) in enumerate(rows):
            ids[b, : len(toks)] = torch.tensor(toks)
            positions[b, : len(pos)] = torch.tensor(pos)
            segs[b, : len(seg)] = torch.tensor(seg)
        idx = torch.arange(width)
        causal = idx[None, :, None] >= idx[None, None, :]  # [1, query, key]
        sq, sk = segs[:, :, None], segs[:, None, :]
        allowed = causal & (sk != -1) & ((sk == 0) | (sk == sq))  # padding queries still see the context
        dtype = next(self.model.parameters()).dtype
        # Additive float mask: what both the eager kernel and sdpa take (a bool mask would be added by eager).
        mask = torch.zeros(allowed.shape, dtype=dtype).masked_fill_(~allowed, torch.finfo(dtype).min)[:, None]
        hidden, _ = self.forward(ids, mask, positions)
        picks, targets, seen, lengths = [], [], [], []
        for b, (ctx, conts) in enumerate(groups):
            start = len(ctx)
            for c in conts:
                picks.append((b, len(ctx) - 1))
                targets.append(c[0])
                seen.append(list(ctx))
                for t in range(1, len(c)):
                    picks.append((b, start + t - 1))
                    targets.append(c[t])
                    seen.append(list(ctx) + list(c[:t]))
                start += len(c) - 1
                lengths.append(len(c))
        index = torch.tensor(picks)
        lp, hit = self.logprobs(hidden[index[:, 0], index[:, 1]], targets, seen)
        return _per_request(lengths, lp, hit)


def _per_request(lengths: list[int], lp: torch.Tensor, hit: torch.Tensor):
    lls, greedy, pos = [], [], 0
    for m in lengths:
        lls.append(float(lp[pos : pos + m].sum()))
        greedy.append(bool(hit[pos : pos + m].all()))
        pos += m
    return lls, greedy


def score(
    model,
    encoded: list[Encoded],
    *,
    transform=None,
    needs_context: bool = False,
    reuse_prefix: bool = True,
    token_budget: int = 4096,
    progress: Progress | None = None,
    cancelled: Callable[[], bool] | None = None,
) -> Scored:
    """Log-likelihood and greedy flag of every request (module docstring). `transform(logits[, context=])`: a
    modified model's logit transforms; `reuse_prefix=False` scores every request in its own row (the reference
    the prefix reuse is tested against)."""
    s = _Scorer(model, transform, needs_context, token_budget)
    loglik = [0.0] * len(encoded)
    greedy = [False] * len(encoded)
    groups: dict[tuple[int, ...], list[int]] = {}
    for i, e in enumerate(encoded):
        groups.setdefault(e.ctx if reuse_prefix else (i, *e.ctx), []).append(i)
    packable = reuse_prefix and s.block_mask_ok

    def row_length(members):
        return len(encoded[members[0]].ctx) + sum(len(encoded[i].cont) - 1 for i in members)

    work = []  # (kind, request indices of one group), longest first as lm-eval orders its requests
    for members in sorted(groups.values(), key=row_length, reverse=True):
        fits = s.window is None or row_length(members) <= s.window
        if packable and fits:
            work.append(("packed", members))
        else:  # the model's own masks: every request in a row of its own
            work.extend(("flat", [i]) for i in members)

    def cost(batch_):
        return len(batch_) * max(row_length(m) for m in batch_)

    def alone(batch_):
        """What the batch's rows would cost each in a pass of its own."""
        return sum(row_length(m) for m in batch_)

    done, total = 0, len(encoded)
    batch: list[list[int]] = []
    kind = None

    def flush():
        nonlocal done
        if not batch:
            return
        if kind == "flat":
            idx = [m[0] for m in batch]
            lls, gs = s.flat([encoded[i] for i in idx])
        else:
            idx = [i for m in batch for i in m]
            lls, gs = s.packed([(encoded[m[0]].ctx, [encoded[i].cont for i in m]) for m in batch])
        for i, ll, g in zip(idx, lls, gs, strict=True):
            loglik[i], greedy[i] = ll, g
        done += len(idx)
        if progress:
            progress(done / total, f"{done}/{total} requests")

    for k, members in work:
        if cancelled is not None and cancelled():
            raise Cancelled("task scoring cancelled; nothing was stored")
        grown = [*batch, members]
        if batch and (k != kind or cost(grown) > token_budget or cost(grown) > PADDING_SLACK * alone(grown)):
            flush()
            batch = []
        kind = k
        batch.append(members)
    flush()
    return Scored(loglik, greedy, s.calls)
