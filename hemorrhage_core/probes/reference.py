"""The base model's reference: computed once per (model, corpus, window, budget, probe set) and reused by every run.

Storing the base model's full next-token distributions is not an option (tokens x vocabulary floats: 805 MB per
4k tokens for SmolLM2's 49k vocabulary). Instead each position keeps the base top-K log-probabilities, their token
ids, the log of the remaining tail mass, the log-normaliser (float64), the log-probability of the reference token,
the final hidden states (model dtype), the moments of the tail that make the profile's KL exact (exact_kl.py:
`mu_tail` [d] float32, `bias_tail`, `mean_tail`, only when the head is linear, meta "moments"), and the residual
stream after every block (fp16, or bf16 for bf16 models). Against the top-K-only format 2 that is 2 d-vectors per
position more (+12 % on disk for SmolLM2-135M's 30 layers; bench/exact_kl.py).

Files live in one folder per key, one safetensors file per batch (streamed: memory does not grow with the corpus),
written to a temporary folder and renamed at the end, so a killed build never leaves a half reference behind (its
temporary folder is removed by the next build once its process is gone).

Integrity: meta.json records the sha256 of every file, checked in full when a reference is opened and again on
every batch as it is read. A reference that fails (a file truncated, missing, replaced or edited; meta.json
missing or unreadable) is moved aside to `<key>.damaged-<time>` (never deleted or overwritten) and rebuilt; a file
that changes while a profile reads it ends that profile with a CacheError, so no number from it is stored.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import tempfile
import time
from collections.abc import Callable
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import psutil
import torch
from safetensors.torch import load, save_file

from ..errors import CacheError
from ..memory import release_freed_memory
from ..specs import CODE_VERSION, ProbeSettings
from ..structure import attention_of, find_blocks
from .capture import attention_patterns, forward_sites, linear_head, unembed
from .exact_kl import reference_moments
from .kernels import capture_prefix, fast_attention
from .metrics import summarize_logits

log = logging.getLogger(__name__)

Progress = Callable[[float, str], None]
DEFAULT_PATHS = "fast/hemlab/lens=1"  # selfcheck.SelfCheck.key() of a model on the profile's fast paths
LOGIT_CHUNK = 1024  # positions unembedded at once: bounds memory at LOGIT_CHUNK x vocabulary floats


def hidden_storage_dtype(model_dtype: torch.dtype) -> torch.dtype:
    # fp16 halves the disk and I/O of fp32 states; bf16 models keep bf16 (fp16 could overflow their range).
    return torch.bfloat16 if model_dtype == torch.bfloat16 else torch.float16


def reference_key(
    model_identity: str,
    corpus_sha256: str,
    probe: ProbeSettings,
    dtype: torch.dtype,
    paths: str = DEFAULT_PATHS,
) -> str:
    """`paths`: the measurement paths the self-check chose (`SelfCheck.key()`); the default is what every model
    that passes the check on the fast paths gets."""
    payload = {
        "model": model_identity,
        "corpus": corpus_sha256,
        "tokens": probe.tokens,
        "window": probe.window,
        "batch_size": probe.batch_size,
        "attn": [probe.attn_probes, probe.attn_len],
        "top_k": probe.top_k,
        "dtype": str(dtype),
        "code": CODE_VERSION,
        # The corpus pass runs the sdpa branch of the "hemlab" kernel (kernels.py) and summarises logits with
        # summarize_logits; profiles must match both bit for bit.
        "kernel": "hemlab-sdpa-causal/window-prefix-probes",
        "summary": "logaddexp-normaliser-f64",  # metrics.summarize_logits
    }
    if paths != DEFAULT_PATHS:  # only then: references of models on the fast paths keep their keys
        payload["paths"] = paths
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:24]


def batch_slices(n: int, batch_size: int) -> list[slice]:
    return [slice(i, min(i + batch_size, n)) for i in range(0, n, batch_size)]


def context_rows(ids: torch.Tensor, rows: slice) -> torch.Tensor:
    """The tokens each flattened predicting position of `ids` [B, T] has seen, itself included: [rows, T-1].

    Row r is position t = r % (T-1) of window b = r // (T-1) (the layout of `position_logprobs`); its tokens
    ids[b, :t+1] are right-aligned and left-padded with -1, so `[:, -n:]` are the last n tokens.
    """
    width = ids.shape[1] - 1
    r = torch.arange(rows.start, rows.stop, device=ids.device)
    b, t = r // width, r % width
    src = t[:, None] - (width - 1) + torch.arange(width, device=ids.device)  # [rows, width] source positions
    return torch.where(src >= 0, ids[b[:, None], src.clamp(min=0)], -1)


def position_logits(
    model, final_hidden: torch.Tensor, transform=None, context_ids: torch.Tensor | None = None
):
    """Yield (row slice, logits [rows, V] float32) over the flattened predicting positions of a batch; each
    chunk's logits live in a buffer that the next chunk overwrites (summarise or copy before asking for more).

    final_hidden: [B, T, d]; only positions 0..T-2 predict a token inside the window. With `context_ids` (the
    window ids [B, T]) the transform is called as transform(logits, context=context_rows(...)) (repetition
    penalties read the preceding tokens).
    """
    flat = final_hidden[:, :-1].reshape(-1, final_hidden.shape[-1])
    vocab = getattr(model.get_output_embeddings(), "out_features", None)
    # One buffer for every chunk: a chunk's logits are only valid until the next one is yielded.
    buffer = torch.empty(min(LOGIT_CHUNK, flat.shape[0]), vocab, device=flat.device) if vocab else None
    for start in range(0, flat.shape[0], LOGIT_CHUNK):
        rows = slice(start, min(start + LOGIT_CHUNK, flat.shape[0]))
        logits = unembed(model, flat[rows], out=None if buffer is None else buffer[: rows.stop - rows.start])
        if transform is not None:
            if context_ids is not None:
                logits = transform(logits, context=context_rows(context_ids, rows))
            else:
                logits = transform(logits)
        yield rows, logits


def position_logprobs(
    model, final_hidden: torch.Tensor, transform=None, context_ids: torch.Tensor | None = None
):
    """`position_logits` as log-probabilities [rows, V] (for exact full-vocabulary comparisons: bench/)."""
    for rows, logits in position_logits(model, final_hidden, transform, context_ids):
        yield rows, torch.log_softmax(logits, dim=-1)


# 3: per-position log-normaliser, final hidden states and the exact-KL moments (exact_kl.py); 2: meta.json with
# per-file sha256. A reference of another format is moved aside and rebuilt, never read.
FORMAT = 3
PREDICTION_PARTS = ("top_ids", "top_lp", "tail_lp", "target_lp", "log_z", "final")
MOMENT_PARTS = ("mu_tail", "bias_tail", "mean_tail")  # only when the base head is linear (meta "moments")


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while block := f.read(1 << 22):
            digest.update(block)
    return digest.hexdigest()


@dataclass
class BaseReference:
    path: Path
    meta: dict
    _first: dict[str, torch.Tensor] | None = field(default=None, repr=False, compare=False)

    @property
    def n_batches(self) -> int:
        return self.meta["n_batches"]

    def _load(self, name: str) -> dict[str, torch.Tensor]:
        """A file's tensors, after checking its bytes against the sha256 recorded at build time."""
        file = self.path / name
        try:
            data = file.read_bytes()
        except OSError as exc:
            raise _damaged(self.path, f"{name} cannot be read ({exc})") from exc
        if hashlib.sha256(data).hexdigest() != self.meta["files"].get(name):
            raise _damaged(self.path, f"{name} changed after the reference was built")
        return load(data)

    def batch(self, i: int) -> dict[str, torch.Tensor]:
        return self._load(f"batch_{i:05d}.safetensors")

    def first_predictions(self) -> dict[str, torch.Tensor]:
        """Batch 0 without its residual streams (top-K ids and log-probs, tail, target log-probs, the exact KL's
        moments and final states: ~27 MB at the default budget for SmolLM2-135M), read and checked once, then kept: every preview of this reference starts from it, and
        reading the 140 MB batch file again would cost the first numbers a second. Only previews read it (nothing
        stored depends on it); profiles read and check every batch file each time."""
        if self._first is None:
            self._first = {k: v.clone() for k, v in self.batch(0).items() if k != "hidden"}
        return self._first

    def attention(self) -> list[torch.Tensor | None]:
        """Base attention probabilities on the probe set per block, [n_probes, H, T, T] float32 each, None for
        blocks without attention."""
        stacked = self._load("attention.safetensors")["attention"]  # [blocks with attention, ...]
        blocks = self.meta.get("attn_blocks", list(range(stacked.shape[0])))
        maps: list[torch.Tensor | None] = [None] * self.meta.get("n_blocks", len(blocks))
        for k, i in enumerate(blocks):
            maps[i] = stacked[k]
        return maps


def _move_aside(path: Path) -> Path:
    aside = path.with_name(f"{path.name}.damaged-{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}")
    path.rename(aside)
    return aside


def _damaged(path: Path, why: str) -> CacheError:
    """Move a reference that failed its check aside and say so (used while a profile reads it)."""
    try:
        aside = _move_aside(path)
        where = f"it was moved aside to {aside}"
    except OSError as exc:
        where = f"moving it aside failed ({exc}); delete the folder"
    return CacheError(
        f"The cached base reference {path} is damaged: {why}. Nothing was stored; {where}. Run the same command "
        "again to rebuild the reference."
    )


def _problem(path: Path) -> tuple[dict | None, str | None]:
    """(meta, None) for a complete reference whose files match their checksums, else (None, what is wrong)."""
    try:
        meta = json.loads((path / "meta.json").read_text())
    except FileNotFoundError:
        return None, "meta.json is missing"
    except (OSError, ValueError) as exc:
        return None, f"meta.json is unreadable ({exc})"
    if not isinstance(meta, dict) or not isinstance(meta.get("files"), dict):
        return None, "it has no checksums (written by an older version)"
    if meta.get("format") != FORMAT:
        return None, f"it is of format {meta.get('format')}, not {FORMAT} (written by another version)"
    expected = {f"batch_{i:05d}.safetensors" for i in range(meta.get("n_batches", -1))} | {
        "attention.safetensors"
    }
    if set(meta["files"]) != expected:
        return None, "meta.json does not list its batch files"
    for name, digest in meta["files"].items():
        file = path / name
        if not file.is_file():
            return None, f"{name} is missing"
        if _sha256(file) != digest:
            return None, f"{name} does not match its checksum"
    return meta, None


def open_reference(path: Path) -> BaseReference | None:
    """The reference at `path` after a full integrity check; None when there is none or it was damaged (a damaged
    one is moved aside, with a warning naming both folders)."""
    if not path.exists():
        return None
    meta, problem = _problem(path)
    if meta is not None:  # `_problem` returns the meta exactly when it found no problem
        return BaseReference(path, meta)
    aside = _move_aside(path)
    log.warning(
        "base reference %s failed its check (%s): moved aside to %s and rebuilt", path, problem, aside
    )
    return None


def remove_stale_builds(folder: Path) -> None:
    """Delete temporary folders of reference builds whose process no longer exists (killed builds)."""
    for stale in folder.glob("*.build-*.tmp"):
        pid = stale.name.rsplit(".build-", 1)[-1].split("-")[0]
        if not (pid.isdigit() and psutil.pid_exists(int(pid))):
            log.info("removing %s left by an interrupted reference build", stale)
            shutil.rmtree(stale, ignore_errors=True)


def attention_probe_shape(windows: torch.Tensor, probe: ProbeSettings) -> tuple[int, int]:
    """(sequences, tokens) of the attention probe set: the first `attn_len` tokens of the first `attn_probes`
    evaluation windows (fewer when the budget has fewer, or shorter, windows)."""
    return min(probe.attn_probes, windows.shape[0]), min(probe.attn_len, windows.shape[1])


@contextmanager
def block_reports(model, on_block: Callable[[int, int], None] | None):
    """Call `on_block(done, total)` after each block's forward (observes only: the numbers are untouched). An
    exception it raises (Cancelled) ends the pass between two blocks."""
    if on_block is None:
        yield
        return
    blocks = find_blocks(model)

    def hook_for(i: int):
        def hook(_module, _inputs, _output) -> None:  # returns None: the block's output is left as it is
            on_block(i + 1, len(blocks))

        return hook

    handles = [block.register_forward_hook(hook_for(i)) for i, block in enumerate(blocks)]
    try:
        yield
    finally:
        for h in handles:
            h.remove()


def corpus_pass(
    model,
    ids: torch.Tensor,
    probe_rows: int,
    probe_len: int,
    on_block: Callable[[int, int], None] | None = None,
):
    """One decoder pass over a batch of windows [B, T] on the fast kernel: (final hidden [B, T, d], residual
    stream per block, attention maps of the probe prefix [probe_rows, H, probe_len, probe_len] per block, or []
    when the model is not on the "hemlab" kernel). The base reference and every profile run exactly this, so an
    unmodified model compares at exactly zero. `on_block(done, total)`: see `block_reports`."""
    with fast_attention(), capture_prefix(probe_rows, probe_len) as probes, block_reports(model, on_block):
        final, resid = forward_sites(model, ids)
    return final, resid, probes.maps


class ProbeMaps:
    """The attention probe set's maps, gathered batch by batch from `corpus_pass` (probe k is window k)."""

    def __init__(self, windows: torch.Tensor, rows: int, length: int):
        self.windows, self.rows, self.length = windows, rows, length
        self._parts: list[list[torch.Tensor]] = []

    def rows_in(self, sl: slice) -> int:
        """How many probe sequences the batch of windows `sl` holds (its first rows)."""
        return max(0, min(self.rows - sl.start, sl.stop - sl.start))

    def add(self, maps: list[torch.Tensor]) -> None:
        if maps:
            self._parts.append([m.cpu() for m in maps])

    def result(self, model) -> list[torch.Tensor | None]:
        """[n, H, t, t] per block, None for blocks without attention. A model the capture could not serve
        (another attention kernel, an attention call per block that is not one) gets a separate eager pass
        over the same prefixes instead."""
        blocks = find_blocks(model)
        with_attention = [i for i, block in enumerate(blocks) if attention_of(block) is not None]
        if with_attention and self._parts and all(len(part) == len(with_attention) for part in self._parts):
            captured = [torch.cat(block) for block in zip(*self._parts, strict=True)]
            if captured[0].shape[0] == self.rows:
                maps: list[torch.Tensor | None] = [None] * len(blocks)
                for i, m in zip(with_attention, captured, strict=True):
                    maps[i] = m
                return maps
        if not with_attention:
            return [None] * len(blocks)
        device = next(model.parameters()).device
        prefixes = self.windows[: self.rows, : self.length].to(device)
        return [None if a is None else a.cpu() for a in attention_patterns(model, prefixes)]


# Where the time of a corpus pass goes, for progress that an ETA can extrapolate (measured on SmolLM2-135M at the
# default budget, one batch of 8 x 512 tokens; only the bar's position depends on them, never a number): per batch,
# reading the reference batch and embedding (LOAD_SHARE), the decoder blocks (FORWARD_SHARE, evenly per block),
# then unembedding, summaries and per-layer comparisons (the rest); after the last batch, TAIL_SHARE of the whole
# step for the attention maps and the final metrics.
LOAD_SHARE = 0.04
FORWARD_SHARE = 0.62
TAIL_SHARE = 0.08


def batch_fraction(i: int, n: int, within: float) -> float:
    """The step's fraction at `within` (0..1) of batch i of n."""
    return (i + within) / n * (1 - TAIL_SHARE)


def batch_block_reporter(
    progress: Progress | None, i: int, n: int, what: str
) -> Callable[[int, int], None] | None:
    """A per-block reporter for batch i of n: honest progress while one large batch (the default budget is one
    batch) runs, and a cancel check between its blocks."""
    if progress is None:
        return None
    return lambda done, total: progress(
        batch_fraction(i, n, LOAD_SHARE + FORWARD_SHARE * done / total),
        f"{what}: batch {i + 1}/{n}, block {done}/{total}",
    )


def build_reference(
    model,
    windows: torch.Tensor,
    *,
    probe: ProbeSettings,
    path: Path,
    progress: Progress | None = None,
) -> BaseReference:
    """Run the base model once over `windows` [n, T] (the attention probe set is a prefix of them, see
    `attention_probe_shape`); write the reference to `path`."""
    existing = open_reference(path)
    if existing is not None:
        return existing
    path.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_builds(path.parent)
    tmp = Path(tempfile.mkdtemp(prefix=f"{path.name}.build-{os.getpid()}-", suffix=".tmp", dir=path.parent))
    try:
        device = next(model.parameters()).device
        store_dtype = hidden_storage_dtype(next(model.parameters()).dtype)
        slices = batch_slices(windows.shape[0], probe.batch_size)
        probe_maps = ProbeMaps(windows, *attention_probe_shape(windows, probe))
        head = linear_head(model)  # None: profiles recompute the base logits for the exact KL (exact_kl.py)
        vocab = model.get_output_embeddings().weight.shape[0]
        buffer = torch.empty(LOGIT_CHUNK, vocab, device=device) if head is not None else None
        for i, sl in enumerate(slices):
            ids = windows[sl].to(device)
            on_block = batch_block_reporter(progress, i, len(slices), "base reference")
            final, resid, maps = corpus_pass(model, ids, probe_maps.rows_in(sl), probe_maps.length, on_block)
            probe_maps.add(maps)
            targets = ids[:, 1:].reshape(-1)
            flat = final[:, :-1].reshape(-1, final.shape[-1])  # the rows `position_logits` unembeds
            parts: dict[str, list[torch.Tensor]] = {
                k: [] for k in PREDICTION_PARTS + (MOMENT_PARTS if head is not None else ())
            }
            for rows, logits in position_logits(model, final):
                # P needs the logits, which the summary overwrites (a buffer exists exactly when a head does)
                probs = buffer[: logits.shape[0]].copy_(logits) if buffer is not None else None
                # The profile summarises the modified model's logits with the same function (exact zero).
                s = summarize_logits(logits, targets[rows], k=probe.top_k)
                parts["top_ids"].append(s.top_ids.to(torch.int32).cpu())
                parts["top_lp"].append(s.top_lp.cpu())
                parts["tail_lp"].append(s.tail_lp.cpu())
                parts["target_lp"].append(s.target_lp.cpu())
                parts["log_z"].append(s.log_z.cpu())
                parts["final"].append(flat[rows].cpu())
                if head is not None and probs is not None:
                    with torch.inference_mode():
                        probs.sub_(s.log_z.float()[:, None]).exp_()
                    for k, v in reference_moments(head, probs, s.top_ids, flat[rows]).items():
                        parts[k].append(v.cpu())
            tensors = {k: torch.cat(v).contiguous() for k, v in parts.items()}
            tensors["hidden"] = torch.stack(resid).to(store_dtype).cpu().contiguous()  # [L, B, T, d]
            save_file(tensors, str(tmp / f"batch_{i:05d}.safetensors"))
            del tensors, parts, final, resid, maps
            release_freed_memory()  # keep the process flat over the corpus (memory.py)
            if progress:
                progress(batch_fraction(i, len(slices), 1.0), f"base reference: batch {i + 1}/{len(slices)}")
        per_block = probe_maps.result(model)
        attn_blocks = [i for i, m in enumerate(per_block) if m is not None]
        maps_found = [m for m in per_block if m is not None]  # the blocks of attn_blocks, in order
        attn = torch.stack(maps_found) if maps_found else torch.zeros(0)
        save_file({"attention": attn.contiguous()}, str(tmp / "attention.safetensors"))
        meta = {
            "n_batches": len(slices),
            "n_windows": int(windows.shape[0]),
            "window": int(windows.shape[1]),
            "hidden_dtype": str(store_dtype),
            "probe": [probe_maps.rows, probe_maps.length],
            "n_blocks": len(per_block),
            "attn_blocks": attn_blocks,
            "moments": head is not None,
            "format": FORMAT,
            "files": {f.name: _sha256(f) for f in sorted(tmp.glob("*.safetensors"))},
        }
        (tmp / "meta.json").write_text(json.dumps(meta))
        if path.exists():  # another process finished the same reference first: theirs is as good as ours
            shutil.rmtree(tmp)
        else:
            tmp.rename(path)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    log.info("base reference written to %s", path)
    reference = open_reference(path)
    if reference is None:  # the other process's reference failed its check: it was moved aside
        raise CacheError(f"The base reference {path} failed its check right after it was written; run again.")
    return reference
