"""A process-wide memo for the on-demand analyses (generations, attention maps, cloze flips, outliers).

st.cache_data cannot serve them once they draw a progress bar: it records every element a cached function
touches and replays it on a hit, and a bar created outside the function cannot be replayed
(CacheReplayClosureError). This memo only keeps return values (shared by the sessions of the process and treated
as read-only by the pages), so the body may report progress freely. Errors are not kept: the next call retries.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable, Hashable
from typing import TypeVar

import streamlit as st

T = TypeVar("T")
_GUARD = threading.Lock()


@st.cache_resource(show_spinner=False)
def _tables() -> dict[str, OrderedDict]:
    return {}


def memo(name: str, key: Hashable, compute: Callable[[], T], *, max_entries: int = 16) -> T:
    """`compute()` once per process for (name, key); the least recently used entries beyond `max_entries` go."""
    with _GUARD:
        table = _tables().setdefault(name, OrderedDict())
        if key in table:
            table.move_to_end(key)
            return table[key]
    value = compute()  # outside the guard: a long computation (under the compute queue) blocks no other memo
    with _GUARD:
        table[key] = value
        while len(table) > max_entries:
            table.popitem(last=False)
    return value
