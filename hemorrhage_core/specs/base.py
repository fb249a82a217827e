"""The base of every spec: the modification registry, run and probe settings, and the shared checks. No torch.

A `RunSpec` is data: the model, an ordered tuple of modifications, and the measurement settings. Its content
hash (together with the code version, the corpus content hash and the model's identity) is the cache key used
everywhere: DuckDB primary key, Streamlit cache argument and CLI row.

Each family's kinds live in `specs/<family>.py`, next to their handlers in `modify/<family>.py`, and register
under a stable `kind` string with `@modification(...)`, so (de)serialisation and the handler registry never need
if/elif chains. Validation has one path. What a field allows is data on the field: choices are its `Literal`
type, bounds and help its `option(...)` metadata; `check_fields` reads them for every kind (one message format),
and so do the dashboard's forms and `hemlab mods`. What needs code (one field against another) goes in the kind's
`validate`, through `check(condition, message)`. The fields several families share (bits, group sizes,
calibration) are defined here once.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import numbers
import types
import typing
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar, Literal

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


# -- options: what each field allows, as metadata on the field ------------------------------------------------


def option(
    default: Any,
    *,
    help: str = "",
    what: str = "",
    ge: float | None = None,
    gt: float | None = None,
    le: float | None = None,
    lt: float | None = None,
    special: dict[Any, str] | None = None,
    required: bool = False,
    suggest: Sequence[Any] | Callable[[], Sequence[Any]] | None = None,
    slider: tuple[float, float, float] | None = None,
    layers_top: int | None = None,
    enabled_when: tuple[str, Any] | None = None,
) -> Any:
    """A spec field with its rules. Choices are not given here: they are the field's `Literal[...]` type.

    help: one line for the form and `hemlab mods`; what: the quantity's name in messages when the field name
    alone does not say it ("group size", "top-p mass"); ge/gt/le/lt: bounds, checked by `check_fields`; special:
    values allowed outside the bounds, with their meaning ({-1: "one scale per output channel"}); required: a
    string that may not be empty. The rest only steer the dashboard's form: suggest (the values a select offers;
    the spec accepts others), slider (lo, hi, step when the useful range is narrower than the valid one),
    layers_top (a slider up to the model's block count plus this), enabled_when ((other field, value): the
    widget is disabled otherwise). Metadata is not part of a spec's value: adding or changing it changes no hash.
    """
    meta = {
        "help": help,
        "what": what,
        "ge": ge,
        "gt": gt,
        "le": le,
        "lt": lt,
        "special": special,
        "required": required,
        "suggest": suggest,
        "slider": slider,
        "layers_top": layers_top,
        "enabled_when": enabled_when,
    }
    # Only what is given (0 and 0.0 are bounds; None, "" and False say nothing).
    given = {k: v for k, v in meta.items() if v is not None and v is not False and v != ""}
    return field(default=default, metadata=given)


def _number(x: float) -> str:
    return f"{x:g}" if isinstance(x, float) else str(x)


@dataclass(frozen=True)
class Option:
    """One field of a spec as the forms, `hemlab mods` and `check_fields` see it."""

    name: str
    type: Any  # int, float, str, bool, tuple or a Literal's value type (the annotation without `| None`)
    default: Any
    optional: bool = False  # `X | None`
    choices: tuple[Any, ...] = ()  # the Literal's values
    ge: float | None = None
    gt: float | None = None
    le: float | None = None
    lt: float | None = None
    special: dict[Any, str] = field(default_factory=dict)
    required: bool = False
    help: str = ""
    what: str = ""
    suggest: Sequence[Any] | Callable[[], Sequence[Any]] | None = None
    slider: tuple[float, float, float] | None = None
    layers_top: int | None = None
    enabled_when: tuple[str, Any] | None = None

    @property
    def bounded(self) -> bool:
        return any(b is not None for b in (self.ge, self.gt, self.le, self.lt))

    @property
    def title(self) -> str:
        """The field in messages: 'bits', or 'group size (group_size)' when `what` names it better."""
        return f"{self.what} ({self.name})" if self.what else self.name

    def suggestions(self) -> tuple[Any, ...]:
        return tuple(self.suggest() if callable(self.suggest) else self.suggest or ())

    def allowed(self) -> str:
        """What the field allows, in words: "'sym' or 'asym'", 'an integer between 2 and 8', 'in [0, 1)'."""
        if self.choices:
            shown = [repr(c) if isinstance(c, str) else str(c) for c in self.choices]
            return " or ".join(shown) if len(shown) == 2 else "one of " + ", ".join(shown)
        if self.required:
            return "a non-empty string"
        if not self.bounded:
            return ""
        lo, lo_closed = (self.ge, True) if self.ge is not None else (self.gt, False)
        hi, hi_closed = (self.le, True) if self.le is not None else (self.lt, False)
        if lo is not None and hi is not None:
            if self.type is int and lo_closed and hi_closed:
                text = f"an integer between {lo} and {hi}"
            else:
                text = (
                    f"in {'[' if lo_closed else '('}{_number(lo)}, {_number(hi)}{']' if hi_closed else ')'}"
                )
        elif lo is not None:
            text = ("at least " if lo_closed else "above ") + _number(lo)
        elif hi is not None:
            text = ("at most " if hi_closed else "below ") + _number(hi)
        if self.type is int and not text.startswith("an integer"):
            text = "an integer " + ("of " if text.startswith("at ") else "") + text
        specials = [f"{v} ({why})" for v, why in self.special.items()]
        return " or ".join([*specials, text])

    def problem(self, value: Any) -> str | None:
        """Why `value` is refused (a sentence naming the field, what it allows and the value), or None."""
        if value is None and self.optional:
            return None
        if self.choices:
            # The value's type too: 1 is not the choice True, nor "64" the choice 64.
            ok = any(
                value == c and isinstance(value, type(c)) and isinstance(value, bool) == isinstance(c, bool)
                for c in self.choices
            )
        elif self.required:
            ok = isinstance(value, str) and bool(value.strip())
        elif self.bounded:
            ok = value in self.special or self._in_bounds(value)
        else:
            return None
        return None if ok else f"{self.title} must be {self.allowed()}, got {value!r}"

    def _in_bounds(self, value: Any) -> bool:
        if isinstance(value, bool) or not isinstance(value, numbers.Real):
            return False
        if self.type is int and not isinstance(value, numbers.Integral):
            return False
        x = float(value)
        return (
            not math.isnan(x)
            and (self.ge is None or x >= self.ge)
            and (self.gt is None or x > self.gt)
            and (self.le is None or x <= self.le)
            and (self.lt is None or x < self.lt)
        )


def _unwrap_optional(tp: Any) -> tuple[Any, bool]:
    """(inner type, allows None) for `X | None`; (tp, False) otherwise."""
    if typing.get_origin(tp) in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if len(args) == 1 and len(typing.get_args(tp)) == 2:
            return args[0], True
    return tp, False


_OPTIONS: dict[type, tuple[Option, ...]] = {}


def options(cls: type) -> tuple[Option, ...]:
    """Every init field of a spec dataclass with its type, default, choices, bounds and help, in field order."""
    if cls not in _OPTIONS:
        _OPTIONS[cls] = _read_options(cls)
    return _OPTIONS[cls]


def _read_options(cls: type) -> tuple[Option, ...]:
    try:
        hints = typing.get_type_hints(cls)
    except (
        Exception
    ):  # an annotation that cannot be resolved (a class made in a function): the default's type
        hints = {}
    out = []
    for f in dataclasses.fields(cls):
        if not f.init:
            continue
        if f.default is not dataclasses.MISSING:
            default = f.default
        elif f.default_factory is not dataclasses.MISSING:
            default = f.default_factory()
        else:
            default = None
        tp, optional = _unwrap_optional(hints.get(f.name, type(default)))
        choices: tuple[Any, ...] = ()
        if typing.get_origin(tp) is Literal:
            choices = typing.get_args(tp)
            tp = type(choices[0])
        elif typing.get_origin(tp) in (tuple, list):
            tp = tuple
        meta = dict(f.metadata)
        meta["special"] = dict(meta.get("special") or {})
        out.append(Option(f.name, tp, default, optional, choices, **meta))
    return tuple(out)


def check_fields(spec: Any, kind: str | None = None) -> None:
    """The one generic check: every field against its Literal choices and its `option` bounds (SpecError)."""
    for opt in options(type(spec)):
        problem = opt.problem(getattr(spec, opt.name))
        if problem:
            raise SpecError(f"{kind}: {problem}" if kind else problem)


@dataclass(frozen=True)
class Modification:
    """Base of every modification: a frozen dataclass whose fields are checked against their choices and bounds
    (`check_fields`), then by the kind's own `validate` (checks between fields)."""

    kind: ClassVar[str] = "abstract"
    # Which dashboard page and chart colour the modification belongs to: quant, prune, decode, depth, mitigation.
    family: ClassVar[str] = "other"
    # Whether the handler changes weights (then the runner works on a deep copy of the base model).
    touches_weights: ClassVar[bool] = True
    # Whether the handler replaces the whole model by another one (a checkpoint): it must then come first in a
    # chain, and no copy of the base model is made.
    replaces_model: ClassVar[bool] = False

    def __post_init__(self) -> None:
        check_fields(self, self.kind)
        self.validate()

    def validate(self) -> None:
        """Checks that need code (one field against another); `check(condition, message)` for each."""

    @property
    def calibrated(self) -> bool:
        """Whether this setting reads calibration text (minutes, not seconds: the pages wait for Measure). A kind
        whose calibration fields matter only for some settings says so (Prune: the calibrated methods)."""
        return any(o.name == "calib_corpus" for o in options(type(self)))

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


def bits_field(default: int, what: str = "") -> Any:
    """Weight or activation bits: every quantizer's grid has 2 to 8 bits."""
    return option(default, ge=2, le=8, slider=(2, 8, 1), what=what, help="bits per value of the grid")


def router_field() -> Any:
    """Whether MoE routers are changed too: every weight kind excludes them by default (a router decides where
    tokens go, so its damage is of another kind than an expert's)."""
    return option(False, help="MoE routers too (excluded by default)")


def partial_field(verb: str = "quantized") -> Any:
    """Whether a run may cover less than every block weight matrix (the coverage is reported and stored)."""
    return option(False, help=f"run even if some block weight matrices cannot be {verb} (coverage reported)")


def group_field(default: int) -> Any:
    """Inputs per scale for the kinds where -1 means one scale per output channel (GPTQ's convention)."""
    return option(
        default,
        ge=2,
        special={-1: "one scale per output channel"},
        suggest=(-1, 16, 32, 64, 128, 256),
        help="input weights sharing one scale (-1: one per output channel)",
    )


# The mixin is used only beside a Modification base; the checker sees it as one, at runtime it stays a plain
# mixin (no second dataclass in the MRO).
if TYPE_CHECKING:
    _ModificationMixin = Modification
else:
    _ModificationMixin = object


class GroupChecked(_ModificationMixin):
    """Mixin: the kind's group size (the field `group_field`; -1 = per channel) is checked against the model's
    layer widths before any work (`Modification.check_model`)."""

    group_field: ClassVar[str] = "group_size"

    def check_model(self, facts: ModelFacts) -> None:
        super().check_model(facts)
        size = getattr(self, self.group_field)
        if size != -1:
            check_group_size(self.kind, size, facts)


def group_label(group_size: int) -> str:
    return "channel" if group_size == -1 else f"g{group_size}"


DEFAULT_CALIBRATION = (
    "news",
    32,
    256,
)  # corpus, sequences, tokens per sequence (CPU-sized; Wanda used 128 x 2048)


def _builtin_corpora() -> list[str]:
    from ..corpora import CORPORA  # the form asks; importing the corpora here would pull torch into the specs

    return list(CORPORA)


# The three calibration fields every calibrated kind carries, defined once: each kind gives its own defaults.
def calib_corpus_field(default: str = DEFAULT_CALIBRATION[0], **extra: Any) -> Any:
    return option(
        default,
        required=True,
        suggest=_builtin_corpora,
        what="calibration corpus",
        help="a built-in corpus or a text file; calibration sequences come from its end",
        **extra,
    )


def calib_samples_field(default: int = DEFAULT_CALIBRATION[1], **extra: Any) -> Any:
    return option(default, ge=1, le=4096, slider=(1, 256, 1), help="number of calibration sequences", **extra)


def calib_len_field(default: int = DEFAULT_CALIBRATION[2], **extra: Any) -> Any:
    return option(
        default, ge=8, le=8192, slider=(16, 2048, 16), help="tokens per calibration sequence", **extra
    )


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
    """Base of the weight quantizers and remedies that read calibration text (their fields come first)."""

    calib_corpus: str = calib_corpus_field("news")
    calib_samples: int = calib_samples_field(32)
    calib_len: int = calib_len_field(512)


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
        payload: dict[str, Any] = {
            # The corpus enters by content, the model by identity: two names for the same thing share rows.
            "model": model_identity,
            "mods": [m.to_dict() for m in self.mods],
            "probe": dataclasses.asdict(self.probe) | {"corpus": corpus_sha256},
            "code": CODE_VERSION,
        }
        if dtype is not None:
            payload["dtype"] = dtype
        text = json.dumps(payload, sort_keys=True)
        return hashlib.sha256(text.encode()).hexdigest()[:32]


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
