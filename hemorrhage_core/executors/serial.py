"""The default executor: the points one after another in this process, on the runner's shared base model."""

from __future__ import annotations

import time
from collections.abc import Sequence

from . import PointEvent, PointListener, executor


@executor("serial")
class SerialExecutor:
    def run(
        self, runner, specs: Sequence, *, progress=None, on_point: PointListener | None = None, cancelled=None
    ) -> list:
        results = []
        total = len(specs)
        for i, spec in enumerate(specs):
            sub = (
                (lambda f, msg, i=i: progress((i + f) / total, f"[{i + 1}/{total}] {msg}"))
                if progress
                else None
            )
            t0 = time.perf_counter()
            result = runner.run(spec, progress=sub, cancelled=cancelled)
            if on_point is not None:
                kind, wall = ("cached", None) if result.cached else ("stored", time.perf_counter() - t0)
                on_point(PointEvent(kind, i, total, spec.label(), seconds=wall))
            results.append(result)
        return results
