"""The base of every spec: the modification registry, run and probe settings, and the shared checks. No torch.

A `RunSpec` is data: the model, an ordered tuple of modifications, and the measurement settings. Its content
hash (together with the code version, the corpus content hash and the model's identity) is the cache key used
everywhere: DuckDB primary key, Streamlit cache argument and CLI row.

Each family's kinds live in `specs/<family>.py`, next to their handlers in `modify/<family>.py`, and register
under a stable `kind` string with `@modification(...)`, so (de)serialisation and the handler registry never need
if/elif chains. Validation has one path: `check(condition, message)` raises the SpecError the CLI and the
dashboard show; the checks every family shares (bits, group sizes, calibration fields) are defined here once.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass, field
from typing import Any, ClassVar

from ..errors import SpecError

# Bump when a metric definition or a modification's numerics change: old cached rows then stop matching.
CODE_VERSION = "5"  # 5: exact full-vocabulary KL (probes/exact_kl.py); 4: per-position KL clamped at 0; 3: attention probes are window prefixes


MODIFICATIONS: dict[str, type[Modification]] = {}


# Scope options of the weight-touching modifications, added after results were first stored: `to_dict` leaves
# them out at their default, so every spec stored before them keeps its JSON and cache key. `include_router`:
# also modify MoE routers (excluded by default); `partial`: run even when some block weight matrices cannot be
# modified (unhandled layouts), reporting the coverage instead of refusing (see modify/coverage.py).
SCOPE_DEFAULTS: dict[str, Any] = {"include_router": False, "partial": False}


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
    # Whether the handler replaces the whole model by another one (a checkpoint): it must then come first in a
    # chain, and no copy of the base model is made.
    replaces_model: ClassVar[bool] = False

    def to_dict(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        for name, default in SCOPE_DEFAULTS.items():
            if name in data and data[name] == default:
                del data[name]
        return {"kind": self.kind, **data}

    def check_model(self, facts: ModelFacts) -> None:
        """SpecError when this setting cannot apply to the model `facts` describes (checked before any work).

        Every kind that reads calibration sequences longer than the model's positions is refused here; kinds add
        their own checks (group sizes against the layer widths) by extending this method."""
        length = getattr(self, "calib_len", None)
        if isinstance(length, int) and facts.positions is not None and length > facts.positions:
            raise SpecError(
                f"{self.kind}: calib_len={length} is longer than the {facts.positions} positions the model has; "
                f"use calib_len <= {facts.positions}"
            )

    def label(self) -> str:
        """Short human label for charts and tables, e.g. 'rtn w4 sym g128'."""
        args = " ".join(f"{k}={v}" for k, v in dataclasses.asdict(self).items())
        return f"{self.kind} {args}"


def check(cond: bool, message: str) -> None:
    """The one validation path of every spec: a SpecError with `message` unless `cond`."""
    if not cond:
        raise SpecError(message)


@dataclass(frozen=True)
class ModelFacts:
    """What settings are validated against before any work: read from the loaded model (`Runner.facts`)."""

    vocab: int  # rows of the output head
    positions: int | None  # the longest sequence the model takes (None: no limit, e.g. state-space models)
    max_width: int  # the widest dimension of any weight matrix in the blocks (no group can be wider)


def check_group_size(kind: str, group_size: int, facts: ModelFacts) -> None:
    """A group wider than every layer would silently be one scale per channel under a misleading label."""
    if group_size > facts.max_width:
        raise SpecError(
            f"{kind}: group_size={group_size} is wider than every weight matrix of this model (the widest is "
            f"{facts.max_width}); use a group size <= {facts.max_width} or one scale per channel"
        )


def scope_label(mod: Modification) -> str:
    """' +router' / ' partial' for the scope options that are set, '' at their defaults."""
    text = " +router" if getattr(mod, "include_router", False) else ""
    return text + (" partial" if getattr(mod, "partial", False) else "")


def check_bits(bits: int, what: str = "weight bits") -> None:
    check(
        isinstance(bits, int) and 2 <= bits <= 8, f"{what} must be an integer between 2 and 8, got {bits!r}"
    )


def check_group(group_size: int) -> None:
    check(
        isinstance(group_size, int) and (group_size == -1 or group_size >= 2),
        f"group_size must be -1 (one scale per output channel) or at least 2, got {group_size!r}",
    )


class GroupChecked:
    """Mixin: the kind's group size (the field `group_field`; -1 = per channel) is checked against the model's
    layer widths before any work (`Modification.check_model`)."""

    group_field: ClassVar[str] = "group_size"

    def check_model(self, facts: ModelFacts) -> None:
        super().check_model(facts)  # type: ignore[misc]
        size = getattr(self, self.group_field)
        if size != -1:
            check_group_size(self.kind, size, facts)  # type: ignore[attr-defined]


def group_label(group_size: int) -> str:
    return "channel" if group_size == -1 else f"g{group_size}"


DEFAULT_CALIBRATION = (
    "news",
    32,
    256,
)  # corpus, sequences, tokens per sequence (CPU-sized; Wanda used 128 x 2048)


def check_calibration(corpus: str, samples: int, length: int) -> None:
    """Validate the calibration fields every calibrated modification carries."""
    check(bool(corpus), "calibration corpus (calib_corpus) must be a built-in name or a text file path")
    check(1 <= samples <= 4096, f"calib_samples must be in [1, 4096], got {samples}")
    check(8 <= length <= 8192, f"calib_len must be in [8, 8192] tokens, got {length}")


def calibration_label(corpus: str, samples: int, length: int) -> str:
    """'' for the default calibration set, else ' cal=bible 64x256' (so sweeps over it read apart in charts).

    A file is shown by its name, not its path (an upload's path is long and says nothing to the reader); the
    cache key still holds the whole path."""
    if (corpus, samples, length) == DEFAULT_CALIBRATION:
        return ""
    name = corpus.replace("\\", "/").rsplit("/", 1)[-1]
    return f" cal={name} {samples}x{length}"


@dataclass(frozen=True)
class Calibrated(Modification):
    """Base of every modification that reads calibration text (fields shared so every method spells them alike)."""

    calib_corpus: str = "news"  # built-in corpus name or a text file; sequences come from its end
    calib_samples: int = 32  # number of calibration sequences
    calib_len: int = 512  # tokens per sequence

    def __post_init__(self):
        check(bool(self.calib_corpus), "calib_corpus must name a corpus (news, wiki, bible) or a text file")
        check(self.calib_samples >= 1, f"calib_samples must be at least 1, got {self.calib_samples}")
        check(self.calib_len >= 8, f"calib_len must be at least 8 tokens, got {self.calib_len}")


def check_chain(mods: tuple[Modification, ...]) -> None:
    """SpecError unless a modification that replaces the whole model (another checkpoint) comes first."""
    late = [m for m in mods[1:] if m.replaces_model]
    if late:
        raise SpecError(
            f"{late[0].label()} replaces the whole model, so it must come first in the chain "
            "(the modifications before it would be lost)"
        )


def mod_from_dict(data: dict[str, Any]) -> Modification:
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


# Attention maps are kept as layers x heads x probes x tokens^2 floats: at this cap (4 x the default 4 x 128)
# SmolLM2-135M's are 283 MB in memory and on disk.
ATTN_CELLS_MAX = 4 * 4 * 128**2


@dataclass(frozen=True)
class ProbeSettings:
    """How a profile is measured. Every number reported with a run records these."""

    corpus: str = "news"
    tokens: int = 4096  # token budget: windows = tokens // window, non-overlapping (stride = window)
    window: int = 512
    batch_size: int = 8
    # The attention probe set: the first attn_len tokens of the first attn_probes evaluation windows (fewer when
    # the budget has fewer or shorter windows), read during the corpus pass itself (maps are T x T: keep T small).
    attn_probes: int = 4
    attn_len: int = 128
    top_k: int = 256  # base reference keeps top-K log-probs + tail mass per position (see reference.py)

    def __post_init__(self):
        check(self.window >= 8, f"window must be at least 8 tokens, got {self.window}")
        check(
            self.tokens >= self.window,
            f"token budget ({self.tokens}) must be at least one window ({self.window})",
        )
        check(self.batch_size >= 1, "batch size must be at least 1")
        check(
            self.attn_probes >= 1 and self.attn_len >= 4,
            "the attention probe set needs >= 1 sequence of >= 4 tokens",
        )
        check(
            self.attn_probes * self.attn_len**2 <= ATTN_CELLS_MAX,
            f"the attention probe set {self.attn_probes} x {self.attn_len} tokens is too large: maps are stored "
            f"for every layer and head (probes x tokens^2 <= {ATTN_CELLS_MAX:,}, e.g. 4 x 256 or 16 x 128)",
        )
        check(self.top_k >= 1, "top_k must be at least 1")

    def check_model(self, facts: ModelFacts) -> None:
        """SpecError for a window longer than the model's positions or a top-K above its vocabulary."""
        if facts.positions is not None and self.window > facts.positions:
            raise SpecError(
                f"window={self.window} is longer than the {facts.positions} positions the model has; use "
                f"--window {facts.positions} or less"
            )
        if self.top_k > facts.vocab:
            raise SpecError(f"top_k={self.top_k} is above the model's vocabulary of {facts.vocab} tokens")

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
        check(bool(self.model), "a model name or path is required")
        object.__setattr__(self, "mods", tuple(self.mods))
        check_chain(self.mods)

    @property
    def touches_weights(self) -> bool:
        return any(m.touches_weights for m in self.mods)

    def label(self) -> str:
        return " → ".join(m.label() for m in self.mods) or "original"

    def check_model(self, facts: ModelFacts) -> None:
        """Every setting against the model, before the reference or any modification is computed."""
        self.probe.check_model(facts)
        for mod in self.mods:
            mod.check_model(facts)

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

    def cache_key(self, *, corpus_sha256: str, model_identity: str, dtype: str | None = None) -> str:
        """Content hash of everything that determines the numbers: spec, code version, corpus and model, and the
        precision the model runs in when it is not float32 (`dtype`, e.g. "torch.bfloat16": a GPU's half
        precision gives other numbers; float32 runs keep the keys they always had)."""
        payload = {
            # The corpus enters by content, the model by identity: two names for the same thing share rows.
            "model": model_identity,
            "mods": [m.to_dict() for m in self.mods],
            "probe": dataclasses.asdict(self.probe) | {"corpus": corpus_sha256},
            "code": CODE_VERSION,
        }
        if dtype is not None:
            payload["dtype"] = dtype
        payload = json.dumps(payload, sort_keys=True)
        return hashlib.sha256(payload.encode()).hexdigest()[:32]


# -- text forms: `--mod KIND:key=value,...` on the command line, the dashboard's sweep values --------------


def parse_value(raw: str, default):
    """Parse one option value using the type of the field's default (bool accepts true/false/1/0)."""
    if isinstance(default, bool):
        if raw.lower() not in ("true", "false", "1", "0", "yes", "no"):
            raise ValueError(f"expected true or false, got {raw!r}")
        return raw.lower() in ("true", "1", "yes")
    if isinstance(default, (int, float, str)):
        return type(default)(raw)
    for cast in (int, float):
        try:
            return cast(raw)
        except ValueError:
            pass
    return None if raw.lower() == "none" else raw


def parse_mod(text: str) -> Modification:
    """'gptq:bits=4,group_size=128' -> the registered dataclass with those options (others at defaults)."""
    kind, _, options = text.partition(":")
    cls = MODIFICATIONS.get(kind.strip())
    if cls is None:
        raise SpecError(
            f"unknown modification {kind!r}; known: {', '.join(sorted(MODIFICATIONS))} (see `hemlab mods`)"
        )
    fields = {f.name: f for f in dataclasses.fields(cls)}
    values = {}
    for item in filter(None, (o.strip() for o in options.split(","))):
        key, eq, raw = item.partition("=")
        if not eq or key not in fields:
            raise SpecError(f"{kind}: bad option {item!r}; options are {', '.join(fields)}")
        default = fields[key].default
        try:
            values[key] = parse_value(raw, None if default is dataclasses.MISSING else default)
        except ValueError as exc:
            raise SpecError(f"{kind}: cannot parse {key}={raw!r}: {exc}") from exc
    return cls(**values)
