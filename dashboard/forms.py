"""Render a modification's form from its FieldSpecs (see fields.py) and return the chosen field values."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

import streamlit as st

from hemorrhage_core.errors import SpecError
from hemorrhage_core.specs import Modification

from .fields import FieldSpec, build_mod, form_fields, parse_int_list


def _widget(f: FieldSpec, key: str, disabled: bool) -> Any:
    label, help_ = f.label, f.help or None
    if f.widget == "checkbox":
        return st.checkbox(label, value=f.default, key=key, help=help_, disabled=disabled)
    if f.widget == "select":
        choices = list(f.choices)
        if all(isinstance(c, (int, float)) and not isinstance(c, bool) for c in choices) and len(choices) > 1:
            return st.select_slider(label, choices, value=f.default, key=key, help=help_, disabled=disabled)
        if len(choices) <= 4:
            return st.radio(
                label,
                choices,
                index=choices.index(f.default),
                key=key,
                horizontal=True,
                help=help_,
                disabled=disabled,
            )
        return st.selectbox(
            label, choices, index=choices.index(f.default), key=key, help=help_, disabled=disabled
        )
    if f.widget == "slider":
        cast = int if f.py_type is int else float
        return st.slider(
            label,
            cast(f.lo),
            cast(f.hi),
            cast(f.default),
            cast(f.step),
            key=key,
            help=help_,
            disabled=disabled,
        )
    if f.widget == "number":
        if f.py_type is int:
            return int(
                st.number_input(label, value=int(f.default), step=1, key=key, help=help_, disabled=disabled)
            )
        return float(
            st.number_input(
                label,
                value=float(f.default),
                step=float(f.step or 0.01),
                format="%g",
                key=key,
                help=help_,
                disabled=disabled,
            )
        )
    if f.widget == "optional_number":
        value = st.number_input(
            label,
            value=f.default,
            step=1 if f.py_type is int else 0.01,
            key=key,
            placeholder="none",
            help=help_,
            disabled=disabled,
        )
        return None if value is None else f.py_type(value)
    if f.widget == "int_list":
        text = st.text_input(
            label,
            value=", ".join(map(str, f.default or ())),
            key=key,
            disabled=disabled,
            placeholder="block indices, comma-separated: 3, 4 or 3-5",
            help=(help_ or "") + " Comma-separated block indices; ranges like 3-5 allowed.",
        )
        return parse_int_list(text)
    return st.text_input(
        label, value="" if f.default is None else str(f.default), key=key, help=help_, disabled=disabled
    )


def mod_form(
    cls: type[Modification],
    key: str,
    context: dict[str, Any] | None = None,
    *,
    columns: int = 3,
    starting: Mapping[str, Any] | None = None,
) -> Modification:
    """Draw one widget per field of `cls` (keys `key.field`, laid out over `columns` columns, row by row) and
    return the modification they describe. `starting` gives the widgets other first values than the spec's
    defaults (a page's first setting; the spec and its stored keys are untouched).

    Raises SpecError (the class's own validation message) when the combination is impossible; the caller
    shows it. A field whose `enabled_when` condition is false is drawn disabled and keeps its default.
    """
    values: dict[str, Any] = {}
    errors: list[str] = []
    fields = form_fields(cls, context)
    starting = dict(starting or {})
    if unknown := set(starting) - {f.name for f in fields}:
        raise ValueError(f"{cls.kind} has no field {sorted(unknown)}")  # a page's typo, not a user's input
    fields = [dataclasses.replace(f, default=starting[f.name]) if f.name in starting else f for f in fields]
    grid = st.columns(min(columns, len(fields)) or 1, gap="medium")
    for i, f in enumerate(fields):
        disabled = f.enabled_when is not None and values.get(f.enabled_when[0]) != f.enabled_when[1]
        try:
            with grid[i % len(grid)]:
                value = _widget(f, f"{key}.{f.name}", disabled)
        except SpecError as exc:
            errors.append(f"{f.label}: {exc}")
            continue
        if not disabled:
            values[f.name] = value
    if errors:
        raise SpecError("; ".join(errors))
    return build_mod(cls, values)
