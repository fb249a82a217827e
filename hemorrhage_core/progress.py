"""Progress of one run, step by step: queue, base reference, modification, preview, profile.

Every long step reports `(fraction of this step, message)` through a plain callback, so the library never knows who
listens (the CLI logs, the dashboard draws a bar). `RunSteps` turns those into `StepUpdate`s that carry the step's
own clock, from which a listener can extrapolate the measured throughput of this step on this machine (what the
dashboard's ETA does, dashboard/eta.py), and into one overall fraction for callers that only want a number.
Each report is also where a cancel check runs, so cancelling works between blocks and batches of every step.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

from .errors import Cancelled

Progress = Callable[[float, str], None]
CancelCheck = Callable[[], bool]


@dataclass(frozen=True)
class StepUpdate:
    step: str  # "queue", "reference", "modify", "preview" or "profile"
    steps: tuple[
        str, ...
    ]  # every step of this run, in order (the ETA adds estimates for the ones after `step`)
    fraction: float  # of this step, 0..1
    message: str
    elapsed_s: float  # since this step started

    @property
    def later(self) -> tuple[str, ...]:
        """The steps still to come after this one."""
        return self.steps[self.steps.index(self.step) + 1 :] if self.step in self.steps else ()


StepListener = Callable[[StepUpdate], None]

# Relative weights of the steps in the overall fraction given to plain `progress` callbacks (the CLI's log).
# A rough guide only; an honest time estimate comes from StepUpdate.elapsed_s (dashboard/eta.py).
WEIGHTS = {"queue": 0.0, "reference": 1.0, "modify": 1.0, "preview": 0.1, "profile": 1.0}


def check(cancelled: CancelCheck | None, what: str) -> None:
    if cancelled is not None and cancelled():
        raise Cancelled(f"{what} cancelled")


def scaled(progress: Progress | None, lo: float, hi: float) -> Progress | None:
    """`progress` for a part of a step that covers [lo, hi] of it."""
    if progress is None:
        return None
    return lambda fraction, message: progress(lo + (hi - lo) * min(max(fraction, 0.0), 1.0), message)


class RunSteps:
    """The steps of one run. `step(name)` starts a step's clock and returns its progress callback, which checks
    `cancelled` first and then tells both listeners."""

    def __init__(
        self,
        steps: tuple[str, ...],
        *,
        progress: Progress | None = None,
        listener: StepListener | None = None,
        cancelled: CancelCheck | None = None,
    ):
        self.steps = steps
        self.progress, self.listener, self.cancelled = progress, listener, cancelled
        self._started: dict[str, float] = {}
        self._best = 0.0  # the overall fraction never goes back

    def step(self, name: str) -> Progress:
        self._started.setdefault(name, time.perf_counter())

        def report(fraction: float, message: str) -> None:
            check(self.cancelled, name)
            self._tell(name, fraction, message)

        return report

    def _tell(self, name: str, fraction: float, message: str) -> None:
        fraction = min(max(float(fraction), 0.0), 1.0)
        if self.listener is not None:
            elapsed = time.perf_counter() - self._started.get(name, time.perf_counter())
            self.listener(StepUpdate(name, self.steps, fraction, message, elapsed))
        if self.progress is not None:
            self._best = max(self._best, self.overall(name, fraction))
            self.progress(self._best, message)

    def overall(self, name: str, fraction: float) -> float:
        weights = [WEIGHTS.get(s, 1.0) for s in self.steps]
        total = sum(weights) or 1.0
        i = self.steps.index(name) if name in self.steps else 0
        return (sum(weights[:i]) + weights[i] * fraction) / total

    def done(self) -> None:
        if self.progress is not None:
            self.progress(1.0, "done")
