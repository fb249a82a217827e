"""What widget each field of a modification dataclass gets: pure description, no Streamlit here.

The family pages are generic over the spec registry: every class registered with `@modification` whose `family`
matches a page appears there, and its form is built from its fields as `specs.options` describes them. The spec
says everything: a `Literal[...]` type gives a select of its values, `bool` a checkbox, `int | None` an optional
number, `tuple[int, ...]` a comma-separated list; the field's `option(...)` metadata gives the help, a slider's
range (`slider`, or `layers_top` for block indices), the values a select suggests (`suggest`) and a dependency
(`enabled_when`). Nothing here knows a field by its name, and what the form offers is what the spec's check
accepts (tests/app/test_app.py checks every suggested value and slider end of every kind).
"""

from __future__ import annotations

import dataclasses
import math
import re
from dataclasses import dataclass
from typing import Any

from hemorrhage_core.errors import SpecError
from hemorrhage_core.specs import MODIFICATIONS, Modification, Option, options


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


_OPEN, _CLOSE = "([", ")]"
_MATH = re.compile(r"[=|^_]")  # a formula or a field name: where a long name stops reading as a name


def _top_level(text: str, cut: tuple[str, ...]) -> str:
    """`text` up to the first of the `cut` marks outside parentheses and brackets."""
    depth = 0
    for i, ch in enumerate(text):
        depth += (ch in _OPEN) - (ch in _CLOSE)
        if depth <= 0 and any(text.startswith(mark, i) for mark in cut):
            return text[:i]
    return text


def _without_parentheses(text: str) -> str:
    depth, kept = 0, []
    for ch in text:
        depth += ch in _OPEN
        if depth <= 0:
            kept.append(ch)
        depth = max(0, depth - (ch in _CLOSE))
    return " ".join("".join(kept).split())


def method_title(kind: str, cls: type[Modification], width: int = 54) -> str:
    """A picker's name for a method, read off what its docstring calls it: the first clause (before a colon,
    semicolon, full stop or comma outside parentheses), shortened while it is longer than `width` by dropping
    parenthetical asides, then what follows " of ..." or a formula, and only then cut at a word with "…". The
    snake_case kind is the CLI's name, shown in the caption; the full description is the caption too."""
    text = describe(cls)
    if text == kind:
        return kind.replace("_", " ").capitalize()
    title = _top_level(text + " ", (": ", "; ", ". ", ", ", " — ")).strip()
    # A `field` name inside the name reads as a stray word once its markup is gone ("repeat blocks [start, end)
    # times more times"): the name stops before it.
    title = (title.split(" `", 1)[0] if " `" in title else title).replace("`", "")
    if len(title) > width:
        title = _without_parentheses(title)
    if len(title) > width:
        title = re.split(r" (?:of|on|with|through|whose|minimising) ", title, maxsplit=1)[0]
    if len(title) > width:
        words = title.split(" ")
        title = (
            " ".join(words[: next((i for i, w in enumerate(words) if _MATH.search(w)), len(words))]) or title
        )
    if len(title) > width:
        title = title[:width].rsplit(" ", 1)[0].rstrip(",(/ ") + "…"
    return title


def form_fields(cls: type[Modification], context: dict[str, Any] | None = None) -> list[FieldSpec]:
    """The widgets of a modification class's form, one per dataclass field, in declaration order.

    `context` carries what bounds may depend on, e.g. {"num_layers": 30} for layer indices.
    """
    context = context or {}
    fields = options(cls)
    names = {o.name for o in fields}
    out = []
    for opt in fields:
        spec = _field(opt, context)
        if opt.enabled_when and opt.enabled_when[0] in names:
            spec = dataclasses.replace(spec, enabled_when=opt.enabled_when)
        out.append(spec)
    return out


def _slider(opt: Option, context: dict[str, Any]) -> tuple[float, float, float] | None:
    """The slider's (lo, hi, step): the declared one, or up to the model's block count for block indices."""
    if opt.slider is not None:
        return opt.slider
    if opt.layers_top is not None and "num_layers" in context:
        lo = opt.ge if opt.ge is not None else 0
        return lo, context["num_layers"] + opt.layers_top, 1
    return None


def _field(opt: Option, context: dict[str, Any]) -> FieldSpec:
    name, tp, default, doc = opt.name, opt.type, opt.default, opt.help
    if opt.choices:
        return FieldSpec(name, "select", default, tp, opt.choices, help=doc)
    if tp is bool:
        return FieldSpec(name, "checkbox", bool(default), bool, help=doc)
    if tp is tuple:
        return FieldSpec(name, "int_list", default, tuple, help=doc)
    suggested = opt.suggestions()
    if suggested and default in suggested:
        return FieldSpec(name, "select", default, tp if tp in (int, float, str) else str, suggested, help=doc)
    if tp in (int, float):
        if opt.optional:
            return FieldSpec(name, "optional_number", default, tp, help=doc)
        slider = _slider(opt, context)
        if slider is not None:
            lo, hi, step = slider
            cast = int if tp is int else float
            if tp is int:
                step = max(1, int(step))
            if default is not None and lo <= default <= hi and lo < hi:
                return FieldSpec(name, "slider", default, tp, lo=cast(lo), hi=cast(hi), step=step, help=doc)
        return FieldSpec(name, "number", default, tp, step=1 if tp is int else _float_step(default), help=doc)
    return FieldSpec(name, "text", default, str if tp is str else type(default), help=doc)


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
