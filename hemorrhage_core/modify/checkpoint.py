"""The `checkpoint` handler: replace the model by another checkpoint of it, after checking the two can be compared.

The profile feeds both models the original tokenizer's token ids and compares their next-token distributions id
by id, so the checkpoint must give every id the same token (same vocabulary, same special tokens) and have an
output head over the same ids; anything else is a ModelError before any profiling. Per-layer metrics pair block
i with block i, which is only meaningful when both models have as many blocks of the same width: otherwise every
block maps to none (the per-layer rows are left out, the log and the report say so).

The checkpoint is loaded through `models.load_model` on the original's device and dtype, so the same rules
apply (safetensors, `trust_remote_code` only when the runner allows it, GGUF dequantized to the working dtype),
and under the web UI's `allowed_dirs` a path must resolve inside one of them.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from .. import models
from ..errors import ModelError
from ..identity import model_identity
from ..probes.capture import find_blocks
from ..probes.selfcheck import prepare_measurement
from ..specs.checkpoint import Against
from .base import ModContext, ModifiedModel, handles

log = logging.getLogger(__name__)

# Encoded by both tokenizers: the same vocabulary can still split text differently (another pre-tokenizer or
# normalizer). The profile feeds both models the original's ids, so that is reported, not refused.
_SAMPLE_TEXT = (
    "The quick brown fox jumps over the lazy dog.  Numbers: 1, 42, 1999; code: def f(x): return x**2\n"
    'Quotes "like this", apostrophes don\'t, accents café naïve, and symbols €, →, 東京.'
)


def tokenizer_problems(base: Any, other: Any) -> list[str]:
    """Why `other` cannot stand in for `base` in a comparison by token id (empty: it can)."""
    vb, vo = base.get_vocab(), other.get_vocab()
    if vb != vo:
        if len(vb) != len(vo):
            return [f"its vocabulary has {len(vo):,} tokens, the original's {len(vb):,}"]
        by_id = {i: t for t, i in vo.items()}
        moved = sorted((i, t) for t, i in vb.items() if by_id.get(i) != t)
        i, token = moved[0]
        return [
            f"{len(moved):,} of {len(vb):,} token ids stand for other tokens (id {i}: {token!r} in the original, "
            f"{by_id.get(i)!r} in the checkpoint)"
        ]
    problems = []
    for name in ("bos_token_id", "eos_token_id", "unk_token_id"):
        a, b = getattr(base, name, None), getattr(other, name, None)
        # An unknown token is optional (byte-level vocabularies have none); BOS and EOS must agree.
        if a != b and not (name == "unk_token_id" and None in (a, b)):
            problems.append(
                f"{name.removesuffix('_id').replace('_', ' ')} id {b} differs from the original's {a}"
            )
    return problems


def _head_rows(model: Any) -> int:
    head = model.get_output_embeddings()
    return int(head.weight.shape[0]) if head is not None else int(model.config.get_text_config().vocab_size)


def _width(model: Any) -> int:
    return int(model.config.get_text_config().hidden_size)


def _check_allowed(source: str, allowed_dirs: list[Path] | None) -> None:
    """Under the web UI, a checkpoint path (symlinks resolved) must lie in an allowed folder."""
    path = Path(source).expanduser()
    if allowed_dirs is None or not path.exists():
        return
    resolved = path.resolve()
    roots = [Path(d).expanduser().resolve() for d in allowed_dirs]
    if not any(resolved.is_relative_to(root) for root in roots):
        raise ModelError(
            f"checkpoint {resolved} is outside the folders this app may read models from "
            f"({', '.join(map(str, roots)) or 'none'})"
        )


def _gguf_footprint(path: Path) -> dict[str, float]:
    """weight_bytes and bits_per_weight of a GGUF file's tensors as stored (its own quantization types)."""
    from gguf import GGUFReader

    reader = GGUFReader(path)
    stored = sum(int(t.n_bytes) for t in reader.tensors)
    values = sum(int(t.n_elements) for t in reader.tensors)
    return {"weight_bytes": float(stored), "bits_per_weight": 8.0 * stored / max(values, 1)}


@handles(Against)
def apply_against(state: ModifiedModel, mod: Against, ctx: ModContext) -> None:
    if ctx.base_model is None or ctx.tokenizer is None:
        raise RuntimeError(
            "the checkpoint handler needs the original model and tokenizer: run it through the Runner"
        )
    _check_allowed(mod.source, ctx.allowed_dirs)
    if model_identity(mod.source) != mod.identity:
        raise ModelError(
            f"checkpoint {mod.source} has changed since this run was set up (its files are not the ones the "
            "run's cache key names): set the run up again"
        )
    name = mod.label()
    problems = tokenizer_problems(
        ctx.tokenizer, models.load_tokenizer(mod.source, trust_remote_code=ctx.trust_remote_code)
    )
    if problems:
        raise ModelError(
            f"{name} cannot be compared with the original token by token: its tokenizer differs ("
            + "; ".join(problems)
            + "). Give a checkpoint of the same model with the same tokenizer."
        )
    param = next(ctx.base_model.parameters())
    loaded = models.load_model(
        mod.source,
        device=str(param.device),
        dtype=param.dtype,
        trust_remote_code=ctx.trust_remote_code,
        allow_pickle=ctx.allow_pickle,
    )
    rows, base_rows = _head_rows(loaded.model), _head_rows(ctx.base_model)
    if rows != base_rows:
        raise ModelError(
            f"{name} has an output head over {rows:,} token ids, the original over {base_rows:,}: their "
            "next-token distributions do not cover the same tokens"
        )
    alike = ctx.tokenizer.encode(_SAMPLE_TEXT) == loaded.tokenizer.encode(_SAMPLE_TEXT)
    state.report["tokenizer_same_encoding"] = float(alike)
    if not alike:
        log.warning(
            "%s: same vocabulary, but its tokenizer splits text differently; the profile feeds both models the "
            "original's token ids",
            name,
        )
    # The corpus pass runs the same kernel as the base reference's (an unchanged copy then gives exactly 0), and
    # what the profile computes itself is checked against the checkpoint's own forward, as for every base model.
    check = prepare_measurement(loaded.model)
    state.report.update({f"checkpoint_{k}": v for k, v in check.metrics().items()})
    blocks, base_blocks = len(find_blocks(loaded.model)), len(state.layer_map)
    if blocks != base_blocks or _width(loaded.model) != _width(ctx.base_model):
        state.layer_map = [None] * base_blocks
        log.warning(
            "%s has %d blocks of width %d, the original %d of width %d: blocks cannot be paired, so the per-layer "
            "metrics (residual errors, logit lens, attention) are left out",
            name, blocks, _width(loaded.model), base_blocks, _width(ctx.base_model),
        )  # fmt: skip
    state.model = loaded.model
    state.report.update(
        checkpoint_blocks=float(blocks),
        layers_compared=float(sum(j is not None for j in state.layer_map)),
        param_count=float(loaded.n_params),
    )
    path = Path(mod.source)
    if path.is_file() and path.suffix.lower() == ".gguf":
        state.report.update(_gguf_footprint(path))
