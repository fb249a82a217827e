"""The modification families: what the dashboard, the charts and the CLI need to know about each. No torch.

Each family registers its `Family` entry in its own spec module (`register_family(Family(...))` in
specs/quantize.py, specs/prune.py, ...), next to its kinds, which name it in `Modification.family`. Navigation
builds the Modify section from the registry, family pages take their title and introduction from it, charts
their colour, the sweeps page its list of families, and stacked chains their order (`stack_order`: weights
first, decoding last). A new family is its spec module, its handler module and its page (docs/extending.md).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Family:
    name: str  # what `Modification.family` says
    title: str  # page title and label
    icon: str  # Material icon of its page
    colour: str  # its colour in every chart
    stack_order: (
        int  # position when the family pages' settings are stacked into one chain (-1: never stacked)
    )
    calibrates: bool  # whether its methods may read calibration text (then the page measures on click)
    intro: str  # the page's first paragraph
    page: str | None = None  # its dashboard page, when it has one


# In registration order (the order spec modules are imported: specs/__init__.py), which is the Modify section's.
FAMILIES: dict[str, Family] = {}


def register_family(entry: Family) -> Family:
    """Add a family to the registry (from its spec module, when that is imported); a name may register once."""
    if entry.name in FAMILIES:
        raise ValueError(f"modification family {entry.name!r} registered twice")
    FAMILIES[entry.name] = entry
    return entry


def family(name: str) -> Family:
    """The family of that name; an unknown one gets a neutral entry rather than an error (a plugin's kind)."""
    return FAMILIES.get(name) or Family(name, name.title(), "extension", "#7F7F7F", 99, True, "")


def stack_order() -> tuple[str, ...]:
    """Family names in the order their pages' settings are applied when stacked (weights first, decoding last)."""
    return tuple(f.name for f in sorted(FAMILIES.values(), key=lambda f: f.stack_order) if f.stack_order >= 0)


def with_pages() -> list[Family]:
    """The families that have a page, in the order the Modify section lists them (the registry's order)."""
    return [f for f in FAMILIES.values() if f.page]
