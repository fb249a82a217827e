"""Items of a task: each one's scored requests as text, its choices, its gold answer, and the item subset.

An item is what lm-eval calls a doc after doc_to_text / doc_to_choice / doc_to_target: a tuple of
(context, continuation) strings, one per choice, and the choice strings whose length acc_norm divides by. A
subset is deterministic and recorded with every result: the first N items (per group for grouped tasks such as
MMLU, as lm-eval's --limit applies per subject task), or a seeded sample stratified by group (or, for ungrouped
tasks, by gold answer) with proportional allocation.
"""

from __future__ import annotations

import hashlib
import json
import random
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

from ..errors import TaskError
from . import sources
from .entry import GROUP_MAPS, PREPROCESSORS, TaskEntry, field_value, render

ITEMS_VERSION = "1"  # bump when the text of the requests built from the same entry changes


@dataclass(frozen=True)
class Item:
    index: int  # position in the task's full item list (file order)
    requests: tuple[tuple[str, str], ...]  # (context, continuation) per choice
    choices: tuple[str, ...]  # the choice strings (acc_norm divides by their length)
    answer: int  # gold choice (0 for a greedy_continuation task: its single continuation)
    group: str | None = None

    @property
    def context(self) -> str:
        return self.requests[0][0]


@dataclass(frozen=True)
class Subset:
    """Which items: all, the first `limit` (per group when grouped), or a seeded stratified sample of `limit`."""

    limit: int | None = None
    seed: int | None = None

    def __post_init__(self):
        if self.limit is not None and self.limit < 1:
            raise TaskError(f"--task-limit must be at least 1, got {self.limit}")
        if self.seed is not None and self.limit is None:
            raise TaskError("a seeded sample needs a size: give --task-limit N with --task-seed")

    def to_dict(self) -> dict:
        if self.limit is None:
            return {"kind": "all"}
        if self.seed is None:
            return {"kind": "first", "n": self.limit}
        return {"kind": "stratified", "n": self.limit, "seed": self.seed}

    def describe(self) -> str:
        d = self.to_dict()
        return {"all": "all items", "first": f"first {self.limit}", "stratified": f"{self.limit} sampled"}[
            d["kind"]
        ] + (f" (seed {self.seed})" if self.seed is not None else "")


ALL_ITEMS = Subset()


@dataclass(frozen=True)
class TaskSet:
    entry: TaskEntry
    items: tuple[Item, ...]
    total: int  # items in the whole task
    subset: Subset

    @property
    def sha256(self) -> str:
        """Content hash of everything scored: the requests' text, the choices and the gold answers."""
        h = hashlib.sha256(ITEMS_VERSION.encode())
        for it in self.items:
            h.update(json.dumps([it.index, it.requests, it.choices, it.answer, it.group]).encode())
        return h.hexdigest()

    @property
    def key(self) -> str:
        """What identifies this set of scores, apart from the model: task, subset, prompt version and content."""
        payload = [self.entry.name, self.entry.prompt_version, self.subset.to_dict(), self.sha256]
        return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:24]

    def category(self, item: Item) -> str | None:
        mapping = GROUP_MAPS.get(self.entry.group_map or "")
        return mapping.get(item.group) if mapping and item.group is not None else None


def _gold(entry: TaskEntry, row: dict, n_choices: int) -> int:
    if isinstance(entry.answer, int):
        gold = entry.answer
    else:
        value = field_value(row, entry.answer)
        if entry.labels is None:
            gold = int(value)
        else:
            labels = (
                list(field_value(row, entry.labels)) if isinstance(entry.labels, str) else list(entry.labels)
            )
            keys = [str(x).strip() for x in labels]
            if str(value).strip() not in keys:
                raise ValueError(f"answer {value!r} is not one of the labels {keys}")
            gold = keys.index(str(value).strip())
    if not 0 <= gold < n_choices:
        raise ValueError(f"gold answer {gold} is outside the {n_choices} choices")
    return gold


def build_item(entry: TaskEntry, row: dict, index: int) -> Item:
    """One item from one (preprocessed) row; KeyError / ValueError / IndexError for a row that does not fit."""
    prefix = render(entry.description, row) + render(entry.context, row)
    group = str(field_value(row, entry.group)) if entry.group else None
    if entry.kind == "greedy_continuation":
        target = render(entry.target, row)
        return Item(index, ((prefix, entry.delimiter + target),), (target,), 0, group)
    if isinstance(entry.choices, str):
        choices = [str(c) for c in field_value(row, entry.choices)]
    else:
        choices = [render(t, row) for t in entry.choices]
    if len(choices) < 2:
        raise ValueError(f"{len(choices)} choice(s); a multiple-choice item needs at least 2")
    if entry.choices_are_contexts:
        target = entry.delimiter + render(entry.target, row)
        requests = tuple((prefix + c, target) for c in choices)
    else:
        requests = tuple((prefix, entry.delimiter + c) for c in choices)
    return Item(index, requests, tuple(choices), _gold(entry, row, len(choices)), group)


def build_items(entry: TaskEntry, rows: list[dict]) -> list[Item]:
    """Every item of a task; TaskError naming the first row that does not fit the entry."""
    prep = PREPROCESSORS[entry.preprocess] if entry.preprocess else None
    items = []
    for i, row in enumerate(rows):
        try:
            items.append(build_item(entry, prep(row) if prep else row, i))
        except KeyError as exc:
            raise TaskError(
                f"task {entry.name!r}, item {i}: no field {exc.args[0]!r} (fields: {', '.join(map(str, row))})"
            ) from exc
        except (ValueError, IndexError, TypeError, AttributeError) as exc:
            raise TaskError(f"task {entry.name!r}, item {i}: {exc}") from exc
    if not items:
        raise TaskError(f"task {entry.name!r}: its data has no items")
    return items


def select(items: list[Item], subset: Subset, grouped: bool) -> list[Item]:
    """The items of `subset`, in file order (see the module docstring)."""
    if subset.limit is None:
        return list(items)
    if subset.seed is None:
        if not grouped:
            return items[: subset.limit]
        seen: dict[str | None, int] = {}
        out = []
        for it in items:
            if seen.get(it.group, 0) < subset.limit:
                seen[it.group] = seen.get(it.group, 0) + 1
                out.append(it)
        return out
    if subset.limit >= len(items):
        return list(items)
    strata: dict[object, list[Item]] = {}
    for it in items:
        strata.setdefault(it.group if grouped else it.answer, []).append(it)
    # Proportional allocation, largest remainder; ties broken by the stratum's first item (file order).
    exact = {k: subset.limit * len(v) / len(items) for k, v in strata.items()}
    quota = {k: int(x) for k, x in exact.items()}
    order = sorted(strata, key=lambda k: (-(exact[k] - quota[k]), strata[k][0].index))
    for k in order[: subset.limit - sum(quota.values())]:
        quota[k] += 1
    rng = random.Random(subset.seed)
    picked = [
        it for k in sorted(strata, key=lambda k: strata[k][0].index) for it in rng.sample(strata[k], quota[k])
    ]
    return sorted(picked, key=lambda it: it.index)


@lru_cache(maxsize=32)
def _all_items(entry: TaskEntry, base_dir: str | None) -> tuple[Item, ...]:
    files = sources.resolve(entry.source, Path(base_dir) if base_dir else None)
    return tuple(build_items(entry, sources.read_rows(files)))


def task_set(entry: TaskEntry, subset: Subset = ALL_ITEMS) -> TaskSet:
    """The items of `entry` in `subset` (the task's files are read once per process)."""
    items = list(_all_items(entry, entry.base_dir))
    return TaskSet(entry, tuple(select(items, subset, entry.group is not None)), len(items), subset)
