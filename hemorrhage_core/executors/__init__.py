"""How the points of a sweep are measured: one after another in this process (`serial`, the default) or spread
over a Ray cluster (`ray`, ray_cluster.py). Every executor returns the same results, in the order of the specs,
and stores each new point through the runner's store as it arrives (the process that calls it is the only
writer of the DuckDB file); points already stored come back from the store without any computation.

The registry `EXECUTORS` is filled by `@executor(name)` where each executor is defined, and read by
`hemlab sweep --executor NAME` and the Sweeps page. Ray itself is imported only when a ray sweep has a point to
compute, so a parse, a `--help` or a fully stored sweep never pays for it.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

from ..errors import SpecError

if TYPE_CHECKING:
    from ..runner import Progress, Runner, RunResult
    from ..specs import RunSpec

# The Ray cluster the Sweeps page sends its sweeps to ("auto": the one `ray start --head` runs on this machine,
# "HOST:6379" or "ray://HOST:10001": a remote one). Unset: the page measures in its own process.
CLUSTER_ENV = "HEMLAB_RAY_ADDRESS"


@dataclass(frozen=True)
class PointEvent:
    """What happened to one point of a sweep: "cached" (found in the store), "started" (sent to a worker),
    "stored" (measured and written), "retried" (its worker died before it finished: sent again, nothing of it
    was stored)."""

    kind: str
    index: int  # of the point in the sweep, from 0
    total: int
    label: str
    worker: str = ""  # host:pid of the worker process ("" for the serial executor)
    seconds: float | None = None  # "stored": the point's wall time on its worker

    def describe(self) -> str:
        where = f" on {self.worker}" if self.worker else ""
        took = f" in {self.seconds:.1f} s" if self.seconds is not None else ""
        verb = {
            "cached": "from the store",
            "started": "started",
            "stored": "stored",
            "retried": "worker died",
        }
        text = f"[{self.index + 1}/{self.total}] {self.label}: {verb.get(self.kind, self.kind)}{where}{took}"
        return text + ("; sent to another worker" if self.kind == "retried" else "")


PointListener = Callable[[PointEvent], None]


class Executor(Protocol):
    def run(
        self,
        runner: Runner,
        specs: Sequence[RunSpec],
        *,
        progress: Progress | None = None,
        on_point: PointListener | None = None,
    ) -> list[RunResult]:
        """The results of `specs`, in their order; each new one stored by `runner.store` as it arrives.
        `progress(fraction, message)`: the sweep's overall fraction; `on_point(PointEvent)`: per point."""
        ...


EXECUTORS: dict[str, Callable[..., Executor]] = {}


def executor(name: str):
    """Register an executor class (its keyword arguments are its options) under `name`."""

    def register(cls):
        EXECUTORS[name] = cls
        return cls

    return register


def make_executor(name: str, **options: Any) -> Executor:
    """The executor `name` with `options` (None values are left at the executor's defaults); SpecError names
    an unknown executor or an option it does not take."""
    if name not in EXECUTORS:
        raise SpecError(f"unknown executor {name!r}: use one of {', '.join(sorted(EXECUTORS))}")
    given = {k: v for k, v in options.items() if v is not None}
    try:
        return EXECUTORS[name](**given)
    except TypeError:
        flags = ", ".join("--" + k.replace("_", "-") for k in sorted(given))
        raise SpecError(f"{flags} cannot be used with --executor {name}") from None


def cluster_address() -> str | None:
    """The Ray cluster an operator configured for the dashboard (HEMLAB_RAY_ADDRESS), or None."""
    return os.environ.get(CLUSTER_ENV) or None


# The executors register themselves on import (ray_cluster imports no ray at module level).
from . import ray_cluster, serial  # noqa: E402, F401
