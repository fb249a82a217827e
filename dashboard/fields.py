"""What widget each field of a modification dataclass gets: pure description, no Streamlit here.

The Quantize / Prune / Decode / Depth pages are generic over the spec registry: every class registered with
`@modification` whose `family` matches a page appears there, and its form is built from its dataclass fields.
A spec class may steer its widgets with two optional class variables:

    ui_choices: ClassVar[dict[str, Sequence | Callable[[], Sequence]]]   # field -> allowed values
    ui_bounds:  ClassVar[dict[str, tuple[lo, hi, step]]]                  # numeric field -> slider range
    ui_enabled_when: ClassVar[dict[str, tuple[str, Any]]]                 # field -> (other field, value)

Without them the type annotation decides (`Literal[...]` gives choices, `bool` a checkbox, `int | None` an
optional number, `tuple[int, ...]` a comma-separated list), helped by a small table of well-known field names
(`bits`, `sparsity`, `group_size`, ...). Every choice and bound taken from that table is checked against the
class's own `__post_init__` validation, so a page never offers a value the spec would refuse.
"""

from __future__ import annotations

import dataclasses
import math
import re
import types
import typing
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from hemorrhage_core.errors import SpecError
from hemorrhage_core.specs import MODIFICATIONS, Modification

# Hints by field name, used only when the class declares none. Each is validated against the class.
_NAME_CHOICES: dict[str, Sequence[Any] | Callable[[], Sequence[Any]]] = {
    "scheme": ("sym", "asym"),
    "granularity": ("channel", "group", "tensor"),
    "scope": ("row", "tensor"),
    "group_size": (-1, 16, 32, 64, 128, 256),  # -1: one scale per output channel (GPTQ/AWQ convention)
    "method": lambda: _spec_module_set("PRUNE_METHODS"),
    "calib_corpus": lambda: _builtin_corpora(),
    "pattern": ("unstructured", "2:4", "4:8", "1:4", "8:16"),
    "importance": ("magnitude", "l1", "l2", "taylor", "wanda", "activation", "fluctuation", "random"),
    "unit": ("query", "kv", "head", "group"),
    "quant_type": ("nf4", "fp4"),
    "compute_dtype": ("float32", "bfloat16", "float16"),
    "a_mode": ("dynamic", "static"),
    "a_static_stat": ("max", "percentile", "mse"),
    "params": ("norm", "bias", "lora", "all"),
}
# (lo, hi, step), or a function of the form context (e.g. the model's layer count) giving one (or None).
_Bounds = tuple[float, float, float]
_NAME_BOUNDS: dict[str, _Bounds | Callable[[dict[str, Any]], _Bounds | None]] = {
    "bits": (2, 8, 1),
    "w_bits": (2, 8, 1),
    "a_bits": (2, 16, 1),
    "fraction": (0.0, 0.9, 0.05),
    "n_blocks": lambda ctx: (1, ctx["num_layers"] - 1, 1) if ctx.get("num_layers", 0) > 1 else None,
    "sparsity": (0.0, 0.95, 0.05),
    "value": (0.05, 3.0, 0.05),  # temperature-like knobs
    "temperature": (0.05, 3.0, 0.05),
    "top_p": (0.05, 1.0, 0.05),
    "min_p": (0.0, 0.5, 0.01),
    "p": (0.0, 1.0, 0.01),
    "k": (1, 200, 1),
    "top_k": (0, 200, 1),
    "penalty": (1.0, 2.0, 0.05),
    "repetition_penalty": (1.0, 2.0, 0.05),
    "times": (1, 8, 1),
    "alpha": (0.0, 1.0, 0.05),
    "calib_samples": (1, 256, 1),
    "calib_len": (16, 2048, 16),
    "percdamp": (0.0, 0.5, 0.01),
    "start": lambda ctx: (0, ctx["num_layers"] - 1, 1) if "num_layers" in ctx else None,
    "end": lambda ctx: (1, ctx["num_layers"], 1) if "num_layers" in ctx else None,
    "overlap": lambda ctx: (0, ctx["num_layers"] - 1, 1) if "num_layers" in ctx else None,
}
# A field that only matters for one value of another (group size is ignored unless scales are per group).
_NAME_ENABLED_WHEN: dict[str, tuple[str, Any]] = {"group_size": ("granularity", "group")}


def _spec_module_set(name: str) -> list[str]:
    from hemorrhage_core import specs as spec

    return sorted(getattr(spec, name, ()))


def _builtin_corpora() -> list[str]:
    from hemorrhage_core.corpora import CORPORA

    return list(CORPORA)


@dataclass(frozen=True)
class FieldSpec:
    """One form field. `widget` is one of: checkbox, slider, select, number, optional_number, int_list, text."""

    name: str
    widget: str
    default: Any
    py_type: type
    choices: tuple[Any, ...] = ()
    lo: float | None = None
    hi: float | None = None
    step: float | None = None
    help: str = ""
    enabled_when: tuple[str, Any] | None = None  # (other field, value): widget disabled otherwise

    @property
    def label(self) -> str:
        # A list field says how to write it: the CLI's "3+4" is not what a form expects.
        return self.name.replace("_", " ") + (" (comma-separated)" if self.widget == "int_list" else "")

    @property
    def numeric(self) -> bool:
        return self.py_type in (int, float) and self.widget in ("slider", "number", "select")


def family_kinds(family: str) -> dict[str, type[Modification]]:
    """Every registered modification class of one family, by kind, in registration order."""
    return {kind: cls for kind, cls in MODIFICATIONS.items() if getattr(cls, "family", "other") == family}


def describe(cls: type[Modification]) -> str:
    """The first paragraph of the class docstring (what the method does), on one line, for captions."""
    doc = (cls.__doc__ or "").strip()
    if not doc or doc.startswith(cls.__name__ + "("):  # dataclasses invent "Name(field, ...)" docstrings
        return cls.kind
    return " ".join(doc.split("\n\n")[0].split())


def method_title(kind: str, cls: type[Modification], width: int = 46) -> str:
    """A picker's name for a method: its kind and what it is, the description's first clause (before a colon,
    semicolon or full stop) cut at a word, never in the middle of one. The full description is the caption
    under the picker."""
    text = describe(cls).replace("`", "")  # docstring markup reads as stray marks in a picker
    clause = re.split(r"[:;.]\s", text + " ", maxsplit=1)[0].strip().rstrip(".")
    if len(clause) > width:
        clause = clause[:width].rsplit(" ", 1)[0].rstrip(",(/ ") + "…"
    return kind if clause == kind else f"{kind} — {clause}"


def _hints(cls: type) -> dict[str, Any]:
    try:
        return typing.get_type_hints(cls)
    except Exception:  # an annotation that cannot be resolved: fall back to the default's type
        return {}


def _unwrap_optional(tp: Any) -> tuple[Any, bool]:
    """(inner type, allows None) for `X | None` / Optional[X]; (tp, False) otherwise."""
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if len(args) == 1 and len(typing.get_args(tp)) == 2:
            return args[0], True
    return tp, False


def _valid(cls: type[Modification], name: str, value: Any) -> bool:
    """Whether the class accepts `value` for `name` with every other field at its default."""
    try:
        cls(**{name: value})
        return True
    except (SpecError, ValueError, TypeError):
        return False


def _resolve(choices: Sequence[Any] | Callable[[], Sequence[Any]]) -> tuple[Any, ...]:
    return tuple(choices() if callable(choices) else choices)


def _checked_bounds(cls, name: str, lo: float, hi: float, step: float, py_type: type) -> tuple[float, float]:
    """Shrink a hinted [lo, hi] until both ends validate (walking in `step`s; at most 200 steps per end)."""
    cast = int if py_type is int else float
    for _ in range(200):
        if lo >= hi or _valid(cls, name, cast(lo)):
            break
        lo = round(lo + step, 10)
    for _ in range(200):
        if hi <= lo or _valid(cls, name, cast(hi)):
            break
        hi = round(hi - step, 10)
    return cast(lo), cast(hi)


def form_fields(cls: type[Modification], context: dict[str, Any] | None = None) -> list[FieldSpec]:
    """The widgets of a modification class's form, one per dataclass field, in declaration order.

    `context` carries what bounds may depend on, e.g. {"num_layers": 30} for layer indices.
    """
    context = context or {}
    hints = _hints(cls)
    declared_choices = getattr(cls, "ui_choices", None) or {}
    declared_bounds = getattr(cls, "ui_bounds", None) or {}
    names = {f.name for f in dataclasses.fields(cls)}
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
        doc = f.metadata.get("help", "") if f.metadata else ""
        spec = _field(cls, f.name, tp, optional, default, declared_choices, declared_bounds, doc, context)
        depends = {**_NAME_ENABLED_WHEN, **(getattr(cls, "ui_enabled_when", None) or {})}.get(f.name)
        if depends and depends[0] in names:
            spec = dataclasses.replace(spec, enabled_when=depends)
        out.append(spec)
    return out


def _field(cls, name, tp, optional, default, declared_choices, declared_bounds, doc, context) -> FieldSpec:
    origin = typing.get_origin(tp)
    if name in declared_choices:
        choices = _resolve(declared_choices[name])
        return FieldSpec(
            name, "select", default, type(default) if default is not None else str, choices, help=doc
        )
    if origin is Literal:
        choices = typing.get_args(tp)
        return FieldSpec(name, "select", default, type(choices[0]), choices, help=doc)
    if tp is bool:
        return FieldSpec(name, "checkbox", bool(default), bool, help=doc)
    if origin in (tuple, list) or isinstance(default, tuple):
        args = typing.get_args(tp)
        item = args[0] if args else int
        return FieldSpec(name, "int_list" if item is int else "text", default, tuple, help=doc)
    if tp in (int, float):
        if optional:
            return FieldSpec(name, "optional_number", default, tp, help=doc)
        if name in declared_bounds:
            lo, hi, step = declared_bounds[name]
            return FieldSpec(name, "slider", default, tp, lo=lo, hi=hi, step=step, help=doc)
        if name in _NAME_CHOICES:
            choices = tuple(c for c in _resolve(_NAME_CHOICES[name]) if _valid(cls, name, c))
            if choices and default in choices:
                return FieldSpec(name, "select", default, tp, choices, help=doc)
        hinted = _NAME_BOUNDS.get(name)
        from_context = callable(hinted)
        hinted = hinted(context) if from_context else hinted
        if hinted is not None:
            lo, hi, step = hinted
            if tp is int:
                step = max(1, int(step))
            # Bounds from the model (layer indices) are facts; name hints are guesses to check. Fields tied to
            # each other (start < end) cannot be checked one at a time, which is why context bounds skip it.
            if not from_context:
                lo, hi = _checked_bounds(cls, name, lo, hi, step, tp)
            if default is not None and lo <= default <= hi and lo < hi:
                return FieldSpec(name, "slider", default, tp, lo=lo, hi=hi, step=step, help=doc)
        return FieldSpec(name, "number", default, tp, step=1 if tp is int else _float_step(default), help=doc)
    if tp is str or isinstance(default, str):
        if name in _NAME_CHOICES:
            choices = tuple(c for c in _resolve(_NAME_CHOICES[name]) if _valid(cls, name, c))
            if default in choices:
                return FieldSpec(name, "select", default, str, choices, help=doc)
        return FieldSpec(name, "text", default, str, help=doc)
    return FieldSpec(name, "text", default, type(default), help=doc)


def _float_step(default: Any) -> float:
    """A number-input step one decade below the default's magnitude (0.01 for 0 or unknown)."""
    if not isinstance(default, (int, float)) or default == 0:
        return 0.01
    return 10 ** (math.floor(math.log10(abs(default))) - 1)


def parse_int_list(text: str) -> tuple[int, ...]:
    """'3, 4,7' -> (3, 4, 7); ranges 'a-b' are inclusive. SpecError on anything else."""
    out: list[int] = []
    for part in filter(None, (p.strip() for p in text.replace(";", ",").split(","))):
        lo, dash, hi = part.partition("-")
        try:
            out.extend(range(int(lo), int(hi) + 1) if dash and lo else [int(part)])
        except ValueError:
            raise SpecError(
                f"expected comma-separated integers (ranges like 3-5 allowed), got {part!r}"
            ) from None
    return tuple(out)


def build_mod(cls: type[Modification], values: dict[str, Any]) -> Modification:
    """The modification with these field values; SpecError (with the class's own message) when impossible."""
    try:
        return cls(**values)
    except SpecError:
        raise
    except (TypeError, ValueError) as exc:
        raise SpecError(f"{cls.kind}: {exc}") from exc


def sweepable(cls: type[Modification], context: dict[str, Any] | None = None) -> list[FieldSpec]:
    """The numeric fields a sweep can vary (sliders, numbers and numeric selects)."""
    return [f for f in form_fields(cls, context) if f.numeric]


def default_sweep_values(field: FieldSpec) -> list[Any]:
    """A sensible first sweep for a field: the known grid for bits and sparsity, else 5 points over its range."""
    if field.name == "bits":
        grid = [8, 6, 5, 4, 3, 2]
        lo, hi = field.lo if field.lo is not None else 2, field.hi if field.hi is not None else 8
        return [b for b in grid if lo <= b <= hi]
    if field.name == "sparsity":
        return [0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7]
    if field.choices:
        return list(field.choices)
    if field.lo is not None and field.hi is not None:
        n = 5
        values = [field.lo + (field.hi - field.lo) * i / (n - 1) for i in range(n)]
        return (
            sorted({int(round(v)) for v in values}) if field.py_type is int else [round(v, 4) for v in values]
        )
    return [field.default]
