"""Frozen, hashable, JSON-serialisable descriptions of a run and of every modification. No torch here.

A `RunSpec` is data: the model, an ordered tuple of modifications, and the measurement settings. Its content
hash (together with the code version, the corpus content hash and the model's identity) is the cache key used
everywhere: DuckDB primary key, Streamlit cache argument and CLI row.

Each modification family registers its dataclass under a stable `kind` string with `@modification(...)`, so
(de)serialisation and the handler registry in `hemorrhage_core.modify` never need if/elif chains.
"""

from __future__ import annotations

import dataclasses
import hashlib
import importlib
import json
from dataclasses import dataclass, field
from typing import Any, ClassVar

from .errors import SpecError

# Bump when a metric definition or a modification's numerics change: old cached rows then stop matching.
CODE_VERSION = "2"

MODIFICATIONS: dict[str, type[Modification]] = {}


def modification(kind: str):
    """Class decorator: register a modification dataclass under a stable, serialised `kind` name."""

    def register(cls):
        if kind in MODIFICATIONS:
            raise ValueError(f"modification kind {kind!r} registered twice")
        cls.kind = kind
        MODIFICATIONS[kind] = cls
        return cls

    return register


@dataclass(frozen=True)
class Modification:
    """Base of every modification. Subclasses are frozen dataclasses validated in __post_init__."""

    kind: ClassVar[str] = "abstract"
    # Which dashboard page and chart colour the modification belongs to: quant, prune, decode, depth, mitigation.
    family: ClassVar[str] = "other"
    # Whether the handler changes weights (then the runner works on a deep copy of the base model).
    touches_weights: ClassVar[bool] = True

    def to_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, **dataclasses.asdict(self)}

    def label(self) -> str:
        """Short human label for charts and tables, e.g. 'rtn w4 sym g128'."""
        args = " ".join(f"{k}={v}" for k, v in dataclasses.asdict(self).items())
        return f"{self.kind} {args}"


def _check(cond: bool, message: str) -> None:
    if not cond:
        raise SpecError(message)


@modification("quant_rtn")
@dataclass(frozen=True)
class QuantizeRTN(Modification):
    """Weight-only round-to-nearest quantization of every Linear / Conv1D (lm_head and embeddings excluded)."""

    family: ClassVar[str] = "quant"

    bits: int = 8
    scheme: str = "sym"  # "sym": zero-centred grid; "asym": min/max grid with a zero point
    granularity: str = "channel"  # one scale per "tensor", per output "channel", or per "group" of inputs
    group_size: int = 128
    include_lm_head: bool = False

    def __post_init__(self):
        _check(2 <= self.bits <= 8, f"quantization bits must be between 2 and 8, got {self.bits}")
        _check(self.scheme in ("sym", "asym"), f"quantization scheme must be 'sym' or 'asym', got {self.scheme!r}")
        _check(
            self.granularity in ("tensor", "channel", "group"),
            f"quantization granularity must be tensor, channel or group, got {self.granularity!r}",
        )
        _check(self.group_size >= 2, f"group size must be at least 2, got {self.group_size}")

    def label(self) -> str:
        gran = f"g{self.group_size}" if self.granularity == "group" else self.granularity
        return f"RTN w{self.bits} {self.scheme} {gran}"


# Pruning score names; each is implemented in modify/prune.py's score registry (kept here so specs validate
# without importing torch).
PRUNE_METHODS: set[str] = {"magnitude"}


@modification("prune")
@dataclass(frozen=True)
class Prune(Modification):
    """Unstructured pruning: zero the lowest-scoring weights, per output row or per tensor."""

    family: ClassVar[str] = "prune"

    sparsity: float = 0.5
    method: str = "magnitude"
    scope: str = "row"  # "row": the same share in every output row (as Wanda); "tensor": one threshold per matrix
    include_lm_head: bool = False

    def __post_init__(self):
        _check(0.0 <= self.sparsity < 1.0, f"sparsity must be in [0, 1), got {self.sparsity}")
        _check(self.scope in ("row", "tensor"), f"pruning scope must be 'row' or 'tensor', got {self.scope!r}")
        _check(
            self.method in PRUNE_METHODS,
            f"unknown pruning method {self.method!r}; available: {', '.join(sorted(PRUNE_METHODS))}",
        )

    def label(self) -> str:
        return f"{self.method} {self.sparsity:.0%} {self.scope}"


@modification("temperature")
@dataclass(frozen=True)
class Temperature(Modification):
    """Decoding temperature: the logits the metrics see are divided by `value` (reference setting: 1)."""

    family: ClassVar[str] = "decode"
    touches_weights: ClassVar[bool] = False
    value: float = 1.0

    def __post_init__(self):
        _check(0.0 < self.value <= 100.0, f"temperature must be in (0, 100], got {self.value}")

    def label(self) -> str:
        return f"T={self.value:g}"


def load_families() -> None:
    """Import every family's spec module (hemorrhage_core.specs) so all kinds are registered."""
    importlib.import_module("hemorrhage_core.specs")


def mod_from_dict(data: dict[str, Any]) -> Modification:
    load_families()
    data = dict(data)
    kind = data.pop("kind", None)
    cls = MODIFICATIONS.get(kind)
    if cls is None:
        raise SpecError(f"unknown modification kind {kind!r}; known: {', '.join(sorted(MODIFICATIONS))}")
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = set(data) - names
    if unknown:
        raise SpecError(f"unknown option(s) for {kind}: {', '.join(sorted(unknown))}")
    return cls(**data)


@dataclass(frozen=True)
class ProbeSettings:
    """How a profile is measured. Every number reported with a run records these."""

    corpus: str = "news"
    tokens: int = 4096  # token budget: windows = tokens // window, non-overlapping (stride = window)
    window: int = 512
    batch_size: int = 8
    attn_probes: int = 4  # attention probe set: this many sequences ...
    attn_len: int = 128  # ... of this many tokens (attention maps are T x T: keep T small)
    top_k: int = 256  # base reference keeps top-K log-probs + tail mass per position (see reference.py)

    def __post_init__(self):
        _check(self.window >= 8, f"window must be at least 8 tokens, got {self.window}")
        _check(self.tokens >= self.window, f"token budget ({self.tokens}) must be at least one window ({self.window})")
        _check(self.batch_size >= 1, "batch size must be at least 1")
        _check(self.attn_probes >= 1 and self.attn_len >= 4, "the attention probe set needs >= 1 sequence of >= 4 tokens")
        _check(self.top_k >= 1, "top_k must be at least 1")

    @property
    def stride(self) -> int:
        return self.window

    @property
    def n_windows(self) -> int:
        return self.tokens // self.window


@dataclass(frozen=True)
class RunSpec:
    """One profile: `model` with `mods` applied in order, measured against the unmodified model."""

    model: str
    mods: tuple[Modification, ...] = ()
    probe: ProbeSettings = field(default_factory=ProbeSettings)

    def __post_init__(self):
        _check(bool(self.model), "a model name or path is required")
        object.__setattr__(self, "mods", tuple(self.mods))

    @property
    def touches_weights(self) -> bool:
        return any(m.touches_weights for m in self.mods)

    def label(self) -> str:
        return " → ".join(m.label() for m in self.mods) or "original"

    def to_dict(self) -> dict[str, Any]:
        return {
            "model": self.model,
            "mods": [m.to_dict() for m in self.mods],
            "probe": dataclasses.asdict(self.probe),
        }

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True, separators=(",", ":"))

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> RunSpec:
        return cls(
            model=data["model"],
            mods=tuple(mod_from_dict(m) for m in data.get("mods", ())),
            probe=ProbeSettings(**data.get("probe", {})),
        )

    def with_mods(self, *mods: Modification) -> RunSpec:
        return dataclasses.replace(self, mods=tuple(mods))

    def cache_key(self, *, corpus_sha256: str, model_identity: str) -> str:
        """Content hash of everything that determines the numbers: spec, code version, corpus and model."""
        payload = json.dumps(
            {
                # The corpus enters by content, the model by identity: two names for the same thing share rows.
                "model": model_identity,
                "mods": [m.to_dict() for m in self.mods],
                "probe": dataclasses.asdict(self.probe) | {"corpus": corpus_sha256},
                "code": CODE_VERSION,
            },
            sort_keys=True,
        )
        return hashlib.sha256(payload.encode()).hexdigest()[:32]
