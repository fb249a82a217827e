"""Log-likelihoods of (context, continuation) requests, lm-eval's way, with each shared context encoded once.

Tokenization is lm-evaluation-harness's (`_encode_pair`): trailing spaces of the context move to the
continuation, the whole string and the context are encoded, and the continuation is the whole string's tokens
after the context's count; an empty context becomes the prefix token (BOS, else EOS). A request's log-likelihood
is the sum over its continuation tokens of log p(token | everything before), and it is *greedy* when the argmax at
every continuation position is that token.

Speed, without changing a number beyond float rounding:
- Requests that share a context (the choices of a multiple-choice item) are one *group*: the context runs once
  with its key/value cache kept, the cache is repeated for the group's continuations, and the continuations run
  as one batch after it (their positions continue the context's). Continuations of one token need no second
  pass at all: the context's last position predicts them.
- Groups are batched by length (longest first) under a token budget; contexts are right-padded, so padding sits
  after each row's real tokens (causal attention never reads it) and the continuation rows mask the padding
  holes of the cached prefix.
- Only the positions that predict a continuation token are unembedded (in chunks), so no full-vocabulary logits
  are held beyond those rows. A modified model's logit transforms (decoding changes) apply to these rows as the
  profile applies them.
A request alone in its group (Winogrande's partial contexts, LAMBADA) runs as context + continuation in one
pass. On a model with a sliding attention window, a group whose padded prefix plus continuation would exceed the
window runs that way too, because the cached prefix's padding would shift the window's index arithmetic.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass

import torch

from ..corpora import sequence_bos
from ..probes.capture import unembed
from ..probes.kernels import fast_attention
from ..probes.profile import Cancelled
from ..structure import decoder

log = logging.getLogger(__name__)

Progress = Callable[[float, str], None]
ROWS_PER_CHUNK = 512  # unembedded positions at a time: 512 x 49k float32 = 100 MB on SmolLM2


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

    def forward(self, ids, mask, positions=None, cache=None, use_cache=False):
        self.calls += 1
        with torch.inference_mode(), fast_attention():
            out = self.stack(
                input_ids=ids.to(self.device),
                attention_mask=mask.to(self.device),
                position_ids=None if positions is None else positions.to(self.device),
                cache=cache,  # transformers 5 names it `cache` (past_key_values is deprecated)
                use_cache=use_cache,
            )
        return out.last_hidden_state, (out.cache if use_cache else None)

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

    # -- shared context: prefix pass with its cache, then the continuations after it -------------------------------
    def shared(self, groups: list[tuple[tuple[int, ...], list[tuple[int, ...]]]]):
        lens = [len(ctx) for ctx, _ in groups]
        width = max(lens)
        ids = torch.full((len(groups), width), self.pad, dtype=torch.long)
        mask = torch.zeros((len(groups), width), dtype=torch.long)
        for b, (ctx, _) in enumerate(groups):
            ids[b, : len(ctx)] = torch.tensor(ctx)
            mask[b, : len(ctx)] = 1
        longer = [(b, k) for b, (_, conts) in enumerate(groups) for k, c in enumerate(conts) if len(c) > 1]
        hidden, cache = self.forward(ids, mask, use_cache=bool(longer))
        last = hidden[torch.arange(len(groups)), torch.tensor(lens) - 1]  # [B, d]: predicts every first token
        # Row per request: its first token from the prefix pass, the others from the continuation pass.
        firsts = [(b, conts[k][0]) for b, (_, conts) in enumerate(groups) for k in range(len(conts))]
        lp0, hit0 = self.logprobs(
            last[torch.tensor([b for b, _ in firsts])],
            [t for _, t in firsts],
            [list(groups[b][0]) for b, _ in firsts],
        )
        out_lp = lp0.clone()
        out_hit = hit0.clone()
        if longer:
            flat_index = {}
            n = 0
            for b, (_, conts) in enumerate(groups):
                for k in range(len(conts)):
                    flat_index[(b, k)] = n
                    n += 1
            cache.batch_select_indices(torch.tensor([b for b, _ in longer], device=self.device))
            steps = max(len(groups[b][1][k]) - 1 for b, k in longer)
            cids = torch.full((len(longer), steps), self.pad, dtype=torch.long)
            cmask = torch.cat(
                [mask[[b for b, _ in longer]], torch.zeros((len(longer), steps), dtype=torch.long)], 1
            )
            positions = torch.zeros((len(longer), steps), dtype=torch.long)
            for r, (b, k) in enumerate(longer):
                c = groups[b][1][k][:-1]
                cids[r, : len(c)] = torch.tensor(c)
                cmask[r, width : width + len(c)] = 1
                positions[r] = lens[b] + torch.arange(steps)  # the continuation's true positions
            chidden, _ = self.forward(cids, cmask, positions, cache=cache, use_cache=True)
            rows, targets, seen = [], [], []
            for r, (b, k) in enumerate(longer):
                ctx, cont = groups[b][0], groups[b][1][k]
                for j in range(1, len(cont)):
                    rows.append((r, j - 1))
                    targets.append(cont[j])
                    seen.append(list(ctx) + list(cont[:j]))
            index = torch.tensor(rows)
            lp, hit = self.logprobs(chidden[index[:, 0], index[:, 1]], targets, seen)
            pos = 0
            for b, k in longer:
                m = len(groups[b][1][k]) - 1
                i = flat_index[(b, k)]
                out_lp[i] += lp[pos : pos + m].sum()
                out_hit[i] &= bool(hit[pos : pos + m].all())
                pos += m
        return out_lp.tolist(), [bool(h) for h in out_hit]


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
    shared, single = [], []
    for members in groups.values():
        ctx = encoded[members[0]].ctx
        longest = max(len(encoded[i].cont) for i in members)
        fits = s.window is None or len(ctx) + longest <= s.window
        (shared if len(members) > 1 and reuse_prefix and fits else single).append(members)
    work = []  # (cost in padded tokens, kind, payload), longest first as lm-eval orders its requests
    for members in sorted(
        shared, key=lambda m: -(len(encoded[m[0]].ctx) + max(len(encoded[i].cont) for i in m))
    ):
        work.append(("shared", members))
    for members in sorted(single, key=lambda m: -(len(encoded[m[0]].ctx) + len(encoded[m[0]].cont))):
        work.append(("flat", members))
    done, total = 0, len(encoded)
    batch: list[list[int]] = []
    kind = None

    def cost(kind_, batch_):
        if kind_ == "flat":
            return len(batch_) * max(len(encoded[m[0]].ctx) + len(encoded[m[0]].cont) for m in batch_)
        width = max(len(encoded[m[0]].ctx) for m in batch_)
        rows = sum(1 for m in batch_ for i in m if len(encoded[i].cont) > 1)
        steps = max((len(encoded[i].cont) for m in batch_ for i in m), default=1)
        longest = width + steps
        if s.window is not None and longest > s.window:
            return float("inf")  # the padded prefix would shift the sliding window (module docstring)
        return len(batch_) * width + rows * longest

    def flush():
        nonlocal done
        if not batch:
            return
        if kind == "flat":
            idx = [m[0] for m in batch]
            lls, gs = s.flat([encoded[i] for i in idx])
        else:
            idx = [i for m in batch for i in m]
            lls, gs = s.shared([(encoded[m[0]].ctx, [encoded[i].cont for i in m]) for m in batch])
        for i, ll, g in zip(idx, lls, gs, strict=True):
            loglik[i], greedy[i] = ll, g
        done += len(idx)
        if progress:
            progress(done / total, f"{done}/{total} requests")

    for k, members in work:
        if cancelled is not None and cancelled():
            raise Cancelled("task scoring cancelled; nothing was stored")
        if batch and (k != kind or cost(k, [*batch, members]) > token_budget):
            flush()
            batch = []
        kind = k
        batch.append(members)
    flush()
    return Scored(loglik, greedy, s.calls)
